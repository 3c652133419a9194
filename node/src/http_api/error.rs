//! What the HTTP API answers when an operation fails: one [`ApiError`] per failure, carrying
//! the status code, a one-line message for people, a stable `code` for programs, and the
//! facts a caller acts on (the current version after a failed condition, the limit after a
//! refused size). Owns the mapping from the rpc client's errors to status codes; never
//! decides whether to retry (the rpc client already did).
//!
//! | status | `code` | when |
//! |---|---|---|
//! | 400 | `bad_request` | malformed JSON, query or key; a reserved key; a span that is empty |
//! | 404 | `not_found` | no such key (or no such route) |
//! | 405 | `method_not_allowed` | a route without that method (`Allow` lists the others) |
//! | 409 | `condition_failed` | `if-version`/`if-absent` did not hold; `current_version` says why |
//! | 413 | `too_large` | key, value, frame or body over its limit; `limit` gives it in bytes |
//! | 502 | `protocol_error` | the node answered something this client cannot read (a bug) |
//! | 503 | `unavailable` | no leader, no quorum, shutting down: nothing applied; `Retry-After` |
//! | 504 | `outcome_unknown` | a write was sent and no answer came: it may have been applied |

use hyper::StatusCode;
use quasar_rpc::error::ClientError;
use quasar_rpc::frame::EncodeError;
use quasar_rpc::message::{LimitKind, RequestError};
use serde_json::{json, Map, Value};

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

/// A failed request, as the HTTP API answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable: see the table in the module header.
    pub code: &'static str,
    /// One line for people: what went wrong and what to do.
    pub message: String,
    /// Further fields of the JSON body (`current_version`, `limit`, `key` ...).
    pub extra: Map<String, Value>,
    /// The `Retry-After` header, in seconds (503 only).
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    /// Adds a field to the JSON body.
    #[must_use]
    pub fn with(mut self, name: &str, value: Value) -> ApiError {
        self.extra.insert(name.to_owned(), value);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// A compare-and-set whose condition did not hold; `current_version` is 0 when the key
    /// does not exist.
    pub fn condition_failed(current_version: u64) -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "condition_failed",
            format!(
                "condition failed: the key is at version {current_version} (0: absent); \
                 re-read it and decide"
            ),
        )
        .with("current_version", json!(current_version))
    }

    /// Something of `len` bytes over a limit of `limit` bytes.
    pub fn too_large(what: &str, len: u64, limit: u64) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("{what} of {len} bytes exceeds the limit of {limit} bytes: make it smaller"),
        )
        .with("what", json!(what))
        .with("len", json!(len))
        .with("limit", json!(limit))
    }

    /// Nothing was applied; retry after [`RETRY_AFTER_SECS`].
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.retry_after = Some(RETRY_AFTER_SECS);
        e
    }

    /// A write may or may not have been applied.
    pub fn outcome_unknown(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "outcome_unknown", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The JSON body of the REST routes: `{"error", "code", ...extra}`.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.message));
        body.insert("code".into(), json!(self.code));
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

fn limit_name(what: LimitKind) -> &'static str {
    match what {
        LimitKind::Key => "key",
        LimitKind::Value => "value",
        LimitKind::Frame => "request frame",
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        match e {
            RequestError::ConditionFailed { current_version } => {
                ApiError::condition_failed(current_version.get())
            }
            RequestError::TooLarge { what, len, max } => {
                ApiError::too_large(limit_name(what), len, max)
            }
            RequestError::InvalidRequest { .. }
            | RequestError::UnknownNode { .. }
            | RequestError::Refused { .. } => ApiError::bad_request(e.to_string()),
            // The HTTP layer checked the caller's role; the gateway's own connection lacking
            // one is the node's configuration, not the caller's fault.
            RequestError::PermissionDenied { .. } => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("the node's HTTP gateway was refused: {e}"),
            ),
            RequestError::Ambiguous { .. } | RequestError::SessionExpired { .. } => {
                ApiError::outcome_unknown(e.to_string())
            }
            RequestError::NotLeader { .. }
            | RequestError::RangeMoved { .. }
            | RequestError::KeyNotInRange { .. }
            | RequestError::UnknownRange { .. }
            | RequestError::ChangeInProgress { .. }
            | RequestError::Unavailable { .. } => ApiError::unavailable(e.to_string()),
        }
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> ApiError {
        match e {
            ClientError::Failed(e) => ApiError::from(e),
            ClientError::Ambiguous { .. } => ApiError::outcome_unknown(e.to_string()),
            ClientError::Unavailable { .. } | ClientError::NoNodes => {
                ApiError::unavailable(e.to_string())
            }
            ClientError::Encode(EncodeError::TooLarge { len, max }) => {
                ApiError::too_large("request frame", len, max)
            }
            ClientError::Encode(_) => ApiError::internal(e.to_string()),
            ClientError::Protocol { .. } => ApiError {
                status: StatusCode::BAD_GATEWAY,
                code: "protocol_error",
                message: e.to_string(),
                extra: Map::new(),
                retry_after: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quasar_rpc::message::{InvalidReason, KeyVersion, UnavailableReason};

    #[test]
    fn request_errors_map_to_status_codes_with_their_facts() {
        let e = ApiError::from(RequestError::ConditionFailed {
            current_version: KeyVersion(7),
        });
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert_eq!(e.body()["current_version"], 7);

        let e = ApiError::from(RequestError::TooLarge {
            what: LimitKind::Value,
            len: 2 << 20,
            max: 1 << 20,
        });
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.body()["limit"], 1 << 20);

        let e = ApiError::from(RequestError::InvalidRequest {
            reason: InvalidReason::EmptyKey,
        });
        assert_eq!(e.status, StatusCode::BAD_REQUEST);

        let e = ApiError::from(ClientError::Failed(RequestError::Unavailable {
            reason: UnavailableReason::NoQuorum,
        }));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.retry_after, Some(RETRY_AFTER_SECS));

        let e = ApiError::from(ClientError::Ambiguous {
            attempts: 3,
            last: "timeout".into(),
        });
        assert_eq!(e.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(e.body()["code"], "outcome_unknown");
    }
}
