//! The JSON bodies of the HTTP API: what `POST /command`, `PUT /v1/kv/{key}` and
//! `POST /v1/txn` accept, turned into the rpc message types (`Txn`, `Compare`, `TxnOp`),
//! and the transaction's answer turned back into JSON. Keys and values are strings in the
//! request's [`Encoding`]. Owns the shapes only; never talks to the cluster.

use quasar_rpc::message::{
    Compare, CompareOp, CompareTarget, KeyVersion, Txn, TxnBranch, TxnOp, TxnOpResult, TxnReply,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::params::Encoding;

/// `POST /command`: `{"type": "SET"|"GET"|"DELETE", "key": ..., "value": ...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    #[serde(rename = "type")]
    pub kind: CommandKind,
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum CommandKind {
    #[serde(rename = "SET")]
    Set,
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "DELETE")]
    Delete,
}

/// `PUT /v1/kv/{key}`: `{"value": ...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    pub value: String,
}

/// `POST /v1/txn`: if every compare holds, run `then`, else run `else`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnBody {
    #[serde(default)]
    pub compares: Vec<CompareBody>,
    #[serde(default, rename = "then")]
    pub then_ops: Vec<OpBody>,
    #[serde(default, rename = "else")]
    pub else_ops: Vec<OpBody>,
}

/// One condition: the key's `version` or `value` compared with `op` (default `equal`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareBody {
    pub key: String,
    #[serde(default)]
    pub op: CompareOpBody,
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareOpBody {
    #[default]
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// One operation of a branch.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpBody {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    DeleteRange {
        start: String,
        #[serde(default)]
        end: String,
    },
}

/// Parses a JSON body, answering 400 with serde's reason.
pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the JSON body does not parse: {e}")))
}

impl TxnBody {
    pub fn to_txn(&self, enc: Encoding) -> Result<Txn, ApiError> {
        let compares = self
            .compares
            .iter()
            .map(|c| {
                let target = match (&c.version, &c.value) {
                    (Some(v), None) => CompareTarget::Version(KeyVersion(*v)),
                    (None, Some(value)) => CompareTarget::Value(enc.decode("value", value)?),
                    _ => {
                        return Err(ApiError::bad_request(
                            "a compare names exactly one of version, value",
                        ))
                    }
                };
                Ok(Compare {
                    key: enc.decode("key", &c.key)?,
                    op: match c.op {
                        CompareOpBody::Equal => CompareOp::Equal,
                        CompareOpBody::NotEqual => CompareOp::NotEqual,
                        CompareOpBody::Less => CompareOp::Less,
                        CompareOpBody::Greater => CompareOp::Greater,
                    },
                    target,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let ops = |ops: &[OpBody]| -> Result<Vec<TxnOp>, ApiError> {
            ops.iter()
                .map(|op| {
                    Ok(match op {
                        OpBody::Get { key } => TxnOp::Get {
                            key: enc.decode("key", key)?,
                        },
                        OpBody::Put { key, value } => TxnOp::Put {
                            key: enc.decode("key", key)?,
                            value: enc.decode("value", value)?,
                        },
                        OpBody::Delete { key } => TxnOp::Delete {
                            key: enc.decode("key", key)?,
                        },
                        OpBody::DeleteRange { start, end } => TxnOp::DeleteRange {
                            start: enc.decode("start", start)?,
                            end: enc.decode("end", end)?,
                        },
                    })
                })
                .collect()
        };
        Ok(Txn {
            compares,
            success: ops(&self.then_ops)?,
            failure: ops(&self.else_ops)?,
        })
    }

    /// The answer: which branch ran, the version it wrote, one result per operation.
    pub fn answer(&self, reply: &TxnReply, enc: Encoding) -> Result<Value, ApiError> {
        let succeeded = reply.branch == TxnBranch::Success;
        let ops = if succeeded {
            &self.then_ops
        } else {
            &self.else_ops
        };
        if ops.len() != reply.results.len() {
            return Err(ApiError::internal(format!(
                "the transaction answered {} results for {} operations",
                reply.results.len(),
                ops.len()
            )));
        }
        let results = ops
            .iter()
            .zip(&reply.results)
            .map(|(op, result)| {
                Ok(match (op, result) {
                    (OpBody::Get { key }, TxnOpResult::Get(found)) => match found {
                        Some(v) => json!({"op": "get", "key": key, "found": true,
                            "value": enc.encode("value", &v.value)?, "version": v.version.get()}),
                        None => json!({"op": "get", "key": key, "found": false}),
                    },
                    (OpBody::Put { key, .. }, TxnOpResult::Put) => {
                        json!({"op": "put", "key": key, "version": reply.version.get()})
                    }
                    (OpBody::Delete { key }, TxnOpResult::Delete { found }) => {
                        json!({"op": "delete", "key": key, "found": found})
                    }
                    (OpBody::DeleteRange { .. }, TxnOpResult::DeleteRange { deleted_count }) => {
                        json!({"op": "delete_range", "deleted": deleted_count})
                    }
                    (op, result) => {
                        return Err(ApiError::internal(format!(
                            "the transaction answered {result:?} for {op:?}"
                        )))
                    }
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(json!({
            "succeeded": succeeded,
            "version": reply.version.get(),
            "results": results,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_body_maps_onto_the_rpc_transaction() {
        let body: TxnBody = parse(
            br#"{"compares":[{"key":"a","version":0},{"key":"b","op":"greater","value":"x"}],
                 "then":[{"op":"put","key":"a","value":"1"},{"op":"delete_range","start":"c","end":"d"}],
                 "else":[{"op":"get","key":"a"}]}"#,
        )
        .expect("parses");
        let txn = body.to_txn(Encoding::Utf8).expect("valid");
        assert_eq!(
            txn.compares[0].target,
            CompareTarget::Version(KeyVersion(0))
        );
        assert_eq!(txn.compares[1].op, CompareOp::Greater);
        assert_eq!(txn.compares[1].target, CompareTarget::Value(b"x".to_vec()));
        assert_eq!(txn.success.len(), 2);
        assert_eq!(txn.failure, vec![TxnOp::Get { key: b"a".to_vec() }]);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert!(parse::<TxnBody>(br#"{"then":[{"op":"put","key":"a"}]}"#).is_err());
        assert!(parse::<TxnBody>(br#"{"when":[]}"#).is_err());
        assert!(parse::<Command>(br#"{"type":"INCR","key":"a"}"#).is_err());
        let both: TxnBody =
            parse(br#"{"compares":[{"key":"a","version":1,"value":"v"}]}"#).expect("parses");
        assert!(both.to_txn(Encoding::Utf8).is_err());
    }
}
