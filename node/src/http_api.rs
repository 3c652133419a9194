//! The HTTP key-value API on the admin port: the routes, their JSON answers and their status
//! codes. Every operation runs through quasar-rpc's `BlockingClient` against this node's own
//! client port ([`backend`]), on tokio's blocking threads: the admin port's event loop never
//! waits on the cluster, and no shard ever waits on HTTP. A node that does not lead the key's
//! range forwards through the client's redirects, so any node answers any request.
//!
//! | route | what |
//! |---|---|
//! | `POST /command` | `{"type":"SET"\|"GET"\|"DELETE","key","value"}` -> `{"success","result","version","error"}` |
//! | `GET /v1/kv/{key}` | `{"key","value","version"}`; 404 if absent |
//! | `PUT /v1/kv/{key}` | body `{"value"}`; `?if-version=N` / `?if-absent`: compare-and-set (409) |
//! | `DELETE /v1/kv/{key}` | `{"key","version","deleted"}`; 404 if absent; `?if-version` / `?if-absent` |
//! | `GET /v1/kv?start=&end=&limit=&continue=` | `{"entries","count","continue"}`, one page |
//! | `POST /v1/txn` | `{"compares","then","else"}` -> `{"succeeded","version","results"}` |
//! | `GET /openapi.json` | the OpenAPI 3 document of these routes (`node/openapi.json`) |
//!
//! Reads take `?consistency=linearizable|follower|stale` (stale: at most
//! [`params::STALE_BOUND_MS`] old); every route takes `?encoding=utf8|base64` for its keys and
//! values. Errors: see [`error`] for the status codes and the JSON body.

mod backend;
mod error;
mod json;
mod params;

use std::sync::Arc;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use quasar_rpc::client::ClientConfig;
use quasar_rpc::message::{ReadConsistency, SizeLimits};
use serde_json::{json, Value};

pub use backend::{MAX_ATTEMPTS, MAX_IN_FLIGHT};
pub use error::{ApiError, RETRY_AFTER_SECS};

use backend::{Backend, FIRST_USER_KEY};
use json::{Command, CommandKind, PutBody, TxnBody};
use params::{continue_token, Encoding, Query};

/// The OpenAPI 3 document of the routes above.
pub const OPENAPI: &str = include_str!("../openapi.json");
/// Longest request body: one frame's worth (a transaction of several maximal values).
pub const MAX_BODY_BYTES: usize = SizeLimits::DEFAULT_MAX_FRAME_BYTES as usize;
/// Pairs per scan page when `limit` is not given, and the most a page may ask for.
pub const DEFAULT_SCAN_LIMIT: u64 = 100;
pub const MAX_SCAN_LIMIT: u64 = 1000;

type HttpResponse = Response<Full<Bytes>>;

/// The key-value API of one node.
pub struct HttpApi {
    backend: Arc<Backend>,
}

impl HttpApi {
    /// An API over the cluster `config` describes; `config.nodes[0]` must be this node.
    pub fn new(config: ClientConfig) -> Result<HttpApi, String> {
        Ok(HttpApi {
            backend: Arc::new(Backend::new(config)?),
        })
    }
}

/// Whether `path` belongs to this API (the admin port routes it here).
pub fn serves(path: &str) -> bool {
    path == "/command" || path == "/openapi.json" || path == "/v1" || path.starts_with("/v1/")
}

/// The role a key-value request needs (checked by `admin::authorize` before [`handle`]):
/// `GET` reads need `read`; writes, transactions and `/command` need `write`; the OpenAPI
/// document is open.
pub fn needed_role<B>(request: &Request<B>) -> Option<quasar_rpc::auth::Role> {
    use quasar_rpc::auth::Role;
    if request.uri().path() == "/openapi.json" {
        return None;
    }
    Some(match *request.method() {
        Method::GET | Method::HEAD => Role::Read,
        _ => Role::Write,
    })
}

/// Answers one request to a path for which [`serves`] is true. `api` is `None` on a server
/// with no cluster behind it: the key-value routes then answer 503.
pub async fn handle(api: Option<&HttpApi>, request: Request<Incoming>) -> HttpResponse {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let method = parts.method.clone();
    if path == "/openapi.json" {
        if method != Method::GET {
            return error_response(&not_allowed(&method, &path, "GET"), "GET");
        }
        let mut response = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return response;
    }
    let allow = allowed_methods(&path);
    if allow.is_empty() {
        return error_response(
            &ApiError::not_found(format!(
                "no such path {path}; the API serves /command, /v1/kv, /v1/kv/{{key}}, /v1/txn \
                 and /openapi.json"
            )),
            "",
        );
    }
    if !allow.split(", ").any(|m| m == method.as_str()) {
        return error_response(&not_allowed(&method, &path, allow), allow);
    }
    let is_command = path == "/command";
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match declared {
        Some(len) if len > MAX_BODY_BYTES as u64 => Err(body_too_large(len)),
        _ => read_body(body).await,
    };
    let result = match (api, body) {
        (_, Err(e)) => Err(e),
        (None, Ok(_)) => Err(ApiError::unavailable(
            "this server has no key-value backend (not a running node)",
        )),
        (Some(api), Ok(body)) => route(api, &method, &path, query.as_deref(), &body).await,
    };
    match result {
        Ok((status, value)) => json_response(status, &value, None),
        Err(e) if is_command => {
            let mut body = json!({"success": false, "result": null, "version": null,
                "error": e.message, "code": e.code});
            for (k, v) in &e.extra {
                body[k] = v.clone();
            }
            json_response(e.status, &body, e.retry_after)
        }
        Err(e) => error_response(&e, allow),
    }
}

/// The methods a path takes, `Allow`-header style; empty for an unknown path.
fn allowed_methods(path: &str) -> &'static str {
    match path {
        "/command" | "/v1/txn" => "POST",
        "/v1/kv" => "GET",
        p if p.starts_with("/v1/kv/") => "GET, PUT, DELETE",
        _ => "",
    }
}

fn not_allowed(method: &Method, path: &str, allow: &str) -> ApiError {
    ApiError::method_not_allowed(format!("{path} does not take {method}; it takes {allow}"))
}

fn body_too_large(len: u64) -> ApiError {
    ApiError::too_large("request body", len, MAX_BODY_BYTES as u64)
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(body_too_large(MAX_BODY_BYTES as u64 + 1))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body failed: {e}"
        ))),
    }
}

async fn route(
    api: &HttpApi,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<(StatusCode, Value), ApiError> {
    if path == "/command" {
        return command(api, query, body).await;
    }
    if path == "/v1/txn" {
        return txn(api, query, body).await;
    }
    if path == "/v1/kv" {
        return scan(api, query).await;
    }
    let raw_key = path.strip_prefix("/v1/kv/").unwrap_or_default();
    match *method {
        Method::GET => get(api, raw_key, query).await,
        Method::PUT => put(api, raw_key, query, body).await,
        _ => delete(api, raw_key, query).await,
    }
}

async fn get(
    api: &HttpApi,
    raw_key: &str,
    query: Option<&str>,
) -> Result<(StatusCode, Value), ApiError> {
    let query = Query::parse(query, &["consistency", "encoding"])?;
    let enc = query.encoding()?;
    let key = enc.path_key(raw_key)?;
    let consistency = query.consistency()?;
    let found = api
        .backend
        .run(consistency, {
            let key = key.clone();
            move |s| s.get(&key)
        })
        .await?;
    let Some(v) = found else {
        return Err(key_not_found(enc, &key, None));
    };
    Ok((
        StatusCode::OK,
        json!({"key": enc.encode("key", &key)?, "value": enc.encode("value", &v.value)?,
               "version": v.version.get()}),
    ))
}

fn key_not_found(enc: Encoding, key: &[u8], version: Option<u64>) -> ApiError {
    let mut e = ApiError::not_found("key not found");
    if let Ok(k) = enc.encode("key", key) {
        e = e.with("key", json!(k));
    }
    if let Some(v) = version {
        e = e.with("version", json!(v));
    }
    e
}

async fn put(
    api: &HttpApi,
    raw_key: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<(StatusCode, Value), ApiError> {
    let query = Query::parse(query, &["if-version", "if-absent", "encoding"])?;
    let enc = query.encoding()?;
    let key = enc.path_key(raw_key)?;
    let condition = query.condition()?;
    let PutBody { value } = json::parse(body)?;
    let value = enc.decode("value", &value)?;
    let version = api
        .backend
        .run(ReadConsistency::Linearizable, {
            let key = key.clone();
            move |s| s.put(&key, &value, condition)
        })
        .await?;
    Ok((
        StatusCode::OK,
        json!({"key": enc.encode("key", &key)?, "version": version.get()}),
    ))
}

async fn delete(
    api: &HttpApi,
    raw_key: &str,
    query: Option<&str>,
) -> Result<(StatusCode, Value), ApiError> {
    let query = Query::parse(query, &["if-version", "if-absent", "encoding"])?;
    let enc = query.encoding()?;
    let key = enc.path_key(raw_key)?;
    let condition = query.condition()?;
    let (version, found) = api
        .backend
        .run(ReadConsistency::Linearizable, {
            let key = key.clone();
            move |s| s.delete(&key, condition)
        })
        .await?;
    if !found {
        return Err(key_not_found(enc, &key, Some(version.get())));
    }
    Ok((
        StatusCode::OK,
        json!({"key": enc.encode("key", &key)?, "version": version.get(), "deleted": true}),
    ))
}

async fn scan(api: &HttpApi, query: Option<&str>) -> Result<(StatusCode, Value), ApiError> {
    let query = Query::parse(
        query,
        &[
            "start",
            "end",
            "limit",
            "continue",
            "consistency",
            "encoding",
        ],
    )?;
    let enc = query.encoding()?;
    let consistency = query.consistency()?;
    let limit = query.number("limit")?.unwrap_or(DEFAULT_SCAN_LIMIT);
    if limit == 0 || limit > MAX_SCAN_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit={limit}: give 1 to {MAX_SCAN_LIMIT} pairs per page"
        )));
    }
    let end = match query.get("end") {
        Some(e) => enc.decode("end", e)?,
        None => Vec::new(),
    };
    let start = match (query.continue_from()?, query.get("start")) {
        (Some(next), _) => next,
        (None, Some(s)) if !s.is_empty() => enc.decode("start", s)?,
        // By default a scan lists the user's keys, not the node's system key space.
        (None, _) => FIRST_USER_KEY.to_vec(),
    };
    if !end.is_empty() && end <= start {
        return Err(ApiError::bad_request(
            "end must come after start (or after the continue token's key); leave end out to \
             scan to the last key",
        ));
    }
    let page = api
        .backend
        .run(consistency, move |s| s.scan(&start, &end, limit as usize))
        .await?;
    let entries = page
        .entries
        .iter()
        .map(|e| {
            Ok(
                json!({"key": enc.encode("key", &e.key)?, "value": enc.encode("value", &e.value)?,
                      "version": e.version.get()}),
            )
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok((
        StatusCode::OK,
        json!({"entries": entries, "count": entries.len(),
               "continue": page.next.as_deref().map(continue_token)}),
    ))
}

async fn txn(
    api: &HttpApi,
    query: Option<&str>,
    body: &[u8],
) -> Result<(StatusCode, Value), ApiError> {
    let query = Query::parse(query, &["consistency", "encoding"])?;
    let enc = query.encoding()?;
    let consistency = query.consistency()?;
    let body: TxnBody = json::parse(body)?;
    let txn = body.to_txn(enc)?;
    let reply = api.backend.run(consistency, move |s| s.txn(txn)).await?;
    Ok((StatusCode::OK, body.answer(&reply, enc)?))
}

async fn command(
    api: &HttpApi,
    query: Option<&str>,
    body: &[u8],
) -> Result<(StatusCode, Value), ApiError> {
    let query = Query::parse(query, &["consistency", "encoding"])?;
    let enc = query.encoding()?;
    let consistency = query.consistency()?;
    let Command { kind, key, value } = json::parse(body)?;
    let key = enc.decode("key", &key)?;
    let ok = |result: Value, version: u64| {
        (
            StatusCode::OK,
            json!({"success": true, "result": result, "version": version, "error": null}),
        )
    };
    match kind {
        CommandKind::Set => {
            let Some(value) = value else {
                return Err(ApiError::bad_request("SET needs a value"));
            };
            let value = enc.decode("value", &value)?;
            let version = api
                .backend
                .run(ReadConsistency::Linearizable, move |s| {
                    s.put(&key, &value, None)
                })
                .await?;
            Ok(ok(json!("OK"), version.get()))
        }
        CommandKind::Get | CommandKind::Delete if value.is_some() => {
            Err(ApiError::bad_request("GET and DELETE take no value"))
        }
        CommandKind::Get => {
            let found = api
                .backend
                .run(consistency, {
                    let key = key.clone();
                    move |s| s.get(&key)
                })
                .await?;
            match found {
                Some(v) => Ok(ok(json!(enc.encode("value", &v.value)?), v.version.get())),
                None => Err(key_not_found(enc, &key, None)),
            }
        }
        CommandKind::Delete => {
            let (version, found) = api
                .backend
                .run(ReadConsistency::Linearizable, {
                    let key = key.clone();
                    move |s| s.delete(&key, None)
                })
                .await?;
            if found {
                Ok(ok(json!("OK"), version.get()))
            } else {
                Err(key_not_found(enc, &key, Some(version.get())))
            }
        }
    }
}

fn error_response(e: &ApiError, allow: &str) -> HttpResponse {
    let mut response = json_response(e.status, &e.body(), e.retry_after);
    if e.status == StatusCode::METHOD_NOT_ALLOWED {
        if let Ok(v) = HeaderValue::from_str(allow) {
            response.headers_mut().insert(ALLOW, v);
        }
    }
    response
}

fn json_response(status: StatusCode, body: &Value, retry_after: Option<u32>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(secs) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_parses_and_names_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("node/openapi.json is JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        for path in [
            "/command",
            "/v1/kv/{key}",
            "/v1/kv",
            "/v1/txn",
            "/openapi.json",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is missing");
        }
    }

    #[test]
    fn routes_and_methods() {
        assert!(serves("/v1/kv/a") && serves("/command") && serves("/openapi.json"));
        assert!(!serves("/status") && !serves("/v1x"));
        assert_eq!(allowed_methods("/v1/kv/a/b"), "GET, PUT, DELETE");
        assert_eq!(allowed_methods("/v1/kv"), "GET");
        assert_eq!(allowed_methods("/v1/other"), "");
    }
}
