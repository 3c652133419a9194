//! The text of a request: query parameters, keys in paths, and keys and values inside JSON
//! (UTF-8 by default, base64 with `?encoding=base64`). Owns parsing and validation of what
//! the caller typed; never talks to the cluster.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use quasar_rpc::message::ReadConsistency;

use super::error::ApiError;

/// How keys and values travel in paths, query strings and JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Text as it is (must be valid UTF-8 both ways).
    Utf8,
    /// Standard base64 (padding optional; the URL-safe alphabet is accepted on input).
    Base64,
}

/// Bound of a `stale` read: a replica whose last word from the leader is at most this old.
pub const STALE_BOUND_MS: u32 = 1000;

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

impl Encoding {
    /// The bytes that `text` stands for; `what` names it in the error ("key", "value").
    pub fn decode(self, what: &str, text: &str) -> Result<Vec<u8>, ApiError> {
        match self {
            Encoding::Utf8 => Ok(text.as_bytes().to_vec()),
            Encoding::Base64 => STANDARD_LENIENT
                .decode(text)
                .or_else(|_| URL_SAFE_LENIENT.decode(text))
                .map_err(|e| ApiError::bad_request(format!("{what} is not valid base64: {e}"))),
        }
    }

    /// `bytes` as JSON text; UTF-8 fails on bytes that are not UTF-8, naming the fix.
    pub fn encode(self, what: &str, bytes: &[u8]) -> Result<String, ApiError> {
        match self {
            Encoding::Utf8 => String::from_utf8(bytes.to_vec()).map_err(|_| {
                ApiError::bad_request(format!(
                    "the {what} is not valid UTF-8: ask again with ?encoding=base64"
                ))
            }),
            Encoding::Base64 => Ok(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }

    /// A key from the path (after `/v1/kv/`), percent-decoded first.
    pub fn path_key(self, raw: &str) -> Result<Vec<u8>, ApiError> {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
        let text = String::from_utf8(bytes).map_err(|_| {
            ApiError::bad_request(
                "the key in the path is not valid UTF-8 once percent-decoded: send it with \
                 ?encoding=base64",
            )
        })?;
        let key = self.decode("key", &text)?;
        if key.is_empty() {
            return Err(ApiError::bad_request(
                "the key is empty: use /v1/kv/{key} with a key of at least one byte",
            ));
        }
        Ok(key)
    }
}

/// An opaque `continue` token for the next page of a scan: the key it starts at.
pub fn continue_token(next: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(next)
}

/// The parsed query string of one request.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses `query`, refusing parameters the route does not take (so that a typo such as
    /// `if_version` is an error, not a silent unconditional write) and repeated ones.
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Query, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                let allowed = if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                };
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {name:?}; this route takes: {allowed}"
                )));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(ApiError::bad_request(format!(
                    "query parameter {name:?} is given twice"
                )));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Query { pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `?encoding=utf8|base64` (default `utf8`).
    pub fn encoding(&self) -> Result<Encoding, ApiError> {
        match self.get("encoding") {
            None | Some("utf8") => Ok(Encoding::Utf8),
            Some("base64") => Ok(Encoding::Base64),
            Some(other) => Err(ApiError::bad_request(format!(
                "encoding {other:?} is not one of utf8, base64"
            ))),
        }
    }

    /// `?consistency=linearizable|follower|stale` (default `linearizable`).
    pub fn consistency(&self) -> Result<ReadConsistency, ApiError> {
        match self.get("consistency") {
            None | Some("linearizable") => Ok(ReadConsistency::Linearizable),
            Some("follower") => Ok(ReadConsistency::Follower),
            Some("stale") => Ok(ReadConsistency::Stale {
                max_staleness_ms: STALE_BOUND_MS,
            }),
            Some(other) => Err(ApiError::bad_request(format!(
                "consistency {other:?} is not one of linearizable, follower, stale"
            ))),
        }
    }

    /// A boolean flag: present with no value, `true` or `false`.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("false") => Ok(false),
            Some("" | "true") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "{name}={other:?}: give it without a value, or as true or false"
            ))),
        }
    }

    /// An unsigned integer parameter.
    pub fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("{name}={v:?} is not a non-negative integer"))
                })
            })
            .transpose()
    }

    /// `?if-version=N` / `?if-absent`: the version the key must be at (0: absent), if any.
    pub fn condition(&self) -> Result<Option<u64>, ApiError> {
        let version = self.number("if-version")?;
        let absent = self.flag("if-absent")?;
        match (version, absent) {
            (Some(0), true) => Ok(Some(0)),
            (Some(_), true) => Err(ApiError::bad_request(
                "if-absent means if-version=0: give one of them, or both agreeing",
            )),
            (Some(v), false) => Ok(Some(v)),
            (None, true) => Ok(Some(0)),
            (None, false) => Ok(None),
        }
    }

    /// `?continue=TOKEN`: the key the next page starts at.
    pub fn continue_from(&self) -> Result<Option<Vec<u8>>, ApiError> {
        self.get("continue")
            .map(|t| {
                URL_SAFE_NO_PAD.decode(t).map_err(|_| {
                    ApiError::bad_request(
                        "the continue token is not one this API gave out: pass the `continue` \
                         of the previous page unchanged",
                    )
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip_in_both_encodings() {
        assert_eq!(
            Encoding::Utf8.decode("key", "héllo").ok(),
            Some("héllo".as_bytes().to_vec())
        );
        assert_eq!(
            Encoding::Base64.decode("key", "AAEC").ok(),
            Some(vec![0, 1, 2])
        );
        assert_eq!(
            Encoding::Base64.decode("key", "_-8").ok(),
            Some(vec![0xff, 0xef])
        );
        assert_eq!(
            Encoding::Base64.encode("key", &[0xff, 0xef]).ok(),
            Some("/+8=".into())
        );
        assert!(Encoding::Base64.decode("key", "!!").is_err());
        assert!(Encoding::Utf8.encode("value", &[0xff]).is_err());
        assert_eq!(
            Encoding::Utf8.path_key("a%2Fb%20c").ok(),
            Some(b"a/b c".to_vec())
        );
        assert_eq!(Encoding::Base64.path_key("AAE%3D").ok(), Some(vec![0, 1]));
        assert!(Encoding::Utf8.path_key("").is_err());
        assert!(Encoding::Utf8.path_key("%ff").is_err());
    }

    #[test]
    fn queries_refuse_unknown_repeated_and_malformed_parameters() {
        let q = Query::parse(
            Some("if-version=3&encoding=base64"),
            &["if-version", "if-absent", "encoding"],
        )
        .expect("valid");
        assert_eq!(q.condition().ok(), Some(Some(3)));
        assert_eq!(q.encoding().ok(), Some(Encoding::Base64));
        let q = Query::parse(Some("if-absent"), &["if-version", "if-absent"]).expect("valid");
        assert_eq!(q.condition().ok(), Some(Some(0)));
        assert!(Query::parse(Some("if_version=3"), &["if-version"]).is_err());
        assert!(Query::parse(Some("limit=1&limit=2"), &["limit"]).is_err());
        let q = Query::parse(Some("if-version=x"), &["if-version"]).expect("parses");
        assert!(q.condition().is_err());
        let q = Query::parse(Some("consistency=eventual"), &["consistency"]).expect("parses");
        assert!(q.consistency().is_err());
        let token = continue_token(b"\x01key");
        let q = Query::parse(Some(&format!("continue={token}")), &["continue"]).expect("parses");
        assert_eq!(q.continue_from().ok(), Some(Some(b"\x01key".to_vec())));
    }
}
