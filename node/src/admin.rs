//! The admin HTTP port: `/health`, `/ready`, `/status` (JSON) and `/metrics` (Prometheus /
//! OpenMetrics text), served by hyper on a thread of its own.
//!
//! The shards run on glommio executors pinned to cores; the admin port is low-volume
//! control-plane traffic, so it gets one plain thread with a single-threaded tokio runtime
//! instead of a seat on a shard's event loop: a slow scraper can never delay a Raft turn.
//! What it serves comes from an [`AdminSource`], which the node implements over the state
//! the shards publish.
//!
//! | path | answer |
//! |---|---|
//! | `GET /health` | 200 `{"status":"ok"}`, or 503 `{"status":"unhealthy","reason":...}` |
//! | `GET /ready` | the same shape: ready to serve clients or not, and why |
//! | `GET /status` | 200, the JSON document of [`AdminSource::status`] |
//! | `GET /metrics` | 200, the text exposition of [`AdminSource::encode_metrics`] |
//! | `POST /command` | the one-line key-value API: `{"type":"SET"\|"GET"\|"DELETE","key","value"}` |
//! | `GET\|PUT\|DELETE /v1/kv/{key}` | one key: read, write (`?if-version=N`, `?if-absent`), delete |
//! | `GET /v1/kv?start=&end=&limit=&continue=` | one page of a scan |
//! | `POST /v1/txn` | a transaction: `{"compares","then","else"}` |
//! | `GET /openapi.json` | the OpenAPI 3 document of the key-value routes |
//! | anything else | 404 (unknown path) or 405 (a method the path does not take), JSON with the reason |
//!
//! The key-value routes live in [`crate::http_api`] (status codes, JSON shapes, encodings,
//! read consistency); they reach the cluster through quasar-rpc's client over
//! [`AdminSource::kv_client`], on blocking threads off this loop.
//!
//! Security ([`AdminSecurity`]): with TLS the port speaks HTTPS (rustls, the node's
//! certificate; client certificates verified against the cluster CA when presented). Every
//! route but the probes and `/openapi.json` calls [`authorize`] with the role it needs:
//! `/status`, `/metrics` and key-value reads need `read`; key-value writes, `/v1/txn` and
//! `/command` need `write`. A request authenticates with `Authorization: Bearer <token>` or the client
//! certificate of its connection; 401 says who-are-you, 403 not-allowed, both with a JSON
//! reason. Operations that need `admin` are logged with who asked.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use quasar_rpc::auth::{AccessPolicy, Principal, Role};
use quasar_rpc::tls::PeerCertificate;
use serde_json::json;
use tokio::sync::oneshot;

use crate::http_api::{self, HttpApi};

use crate::auth::{authorize_http, HttpRefusal};

/// TLS and access policy of the admin port; the default is plaintext and open.
#[derive(Clone, Default)]
pub struct AdminSecurity {
    /// The node's TLS server configuration (`quasar_rpc::tls::NodeTls::server_config`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub access: Arc<AccessPolicy>,
}

/// What [`authorize`] knows of the connection a request arrived on; the server puts it in
/// every request's extensions.
#[derive(Clone)]
pub struct ConnAuth {
    access: Arc<AccessPolicy>,
    tls: bool,
    certificate: Option<PeerCertificate>,
}

/// Checks that `request` may do what needs `needed`: `Ok` names who asked, `Err` is the
/// 401/403 answer to send back as is. Use it at the top of every route but the probes:
///
/// ```ignore
/// let who = match authorize(&request, Role::Write) { Ok(p) => p, Err(refusal) => return refusal };
/// ```
///
/// A request that did not come through [`AdminServer`] (built by hand in a test) carries no
/// connection and is judged as plaintext with no policy: allowed.
#[expect(
    clippy::result_large_err,
    reason = "the refusal is the response itself, returned once per request: boxing it would \
              only make every route unbox it"
)]
pub fn authorize<B>(
    request: &Request<B>,
    needed: Role,
) -> Result<Principal, Response<Full<Bytes>>> {
    let open = ConnAuth {
        access: Arc::new(AccessPolicy::default()),
        tls: false,
        certificate: None,
    };
    let conn = request.extensions().get::<ConnAuth>().unwrap_or(&open);
    let header = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("<not text>"));
    match authorize_http(
        &conn.access,
        conn.tls,
        conn.certificate.as_ref(),
        header,
        needed,
    ) {
        Ok(principal) => {
            if needed == Role::Admin {
                tracing::info!(who = %principal, method = %request.method(),
                    path = %request.uri().path(), "admin operation over HTTP");
            }
            Ok(principal)
        }
        Err(HttpRefusal::Unauthenticated(reason)) => {
            tracing::info!(path = %request.uri().path(), %reason, "admin port: unauthenticated");
            let mut response = json_response(StatusCode::UNAUTHORIZED, &json!({"error": reason}));
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
            Err(response)
        }
        Err(HttpRefusal::Forbidden(reason)) => {
            tracing::info!(path = %request.uri().path(), %reason, "admin port: forbidden");
            Err(json_response(
                StatusCode::FORBIDDEN,
                &json!({"error": reason}),
            ))
        }
    }
}

/// The answer of a health or readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Ok,
    /// Not healthy (or not ready), with a reason an operator can act on.
    Failing(String),
}

/// What the admin port serves; implemented by the node.
pub trait AdminSource: Send + Sync + 'static {
    /// Liveness: the process works (no poisoned WAL, every shard's loop turning).
    fn health(&self) -> Probe;
    /// Readiness: the node serves clients (recovered, joined its cluster).
    fn ready(&self) -> Probe;
    /// The `/status` document: node id, shards, and per range its bounds, role, term,
    /// leader, commit and applied index, and a hash of the applied state.
    fn status(&self) -> serde_json::Value;
    /// Appends the metrics in the text exposition format to `out`.
    fn encode_metrics(&self, out: &mut String) -> std::fmt::Result;
    /// How the key-value routes reach the cluster: an rpc client configuration whose first
    /// node is this one. `None` (the default): those routes answer 503.
    fn kv_client(&self) -> Option<quasar_rpc::client::ClientConfig> {
        None
    }
}

/// Content type of `prometheus_client::encoding::text::encode` output.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running admin server; [`AdminServer::stop`] (or drop) shuts it down.
pub struct AdminServer {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `listen` now (so a port in use is reported at start, naming the address) and
    /// serves from a new thread.
    pub fn start(listen: SocketAddr, source: Arc<dyn AdminSource>) -> std::io::Result<AdminServer> {
        AdminServer::start_with(listen, source, AdminSecurity::default())
    }

    /// [`AdminServer::start`] with TLS and an access policy.
    pub fn start_with(
        listen: SocketAddr,
        source: Arc<dyn AdminSource>,
        security: AdminSecurity,
    ) -> std::io::Result<AdminServer> {
        let listener = std::net::TcpListener::bind(listen).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind the admin port {listen}: {e}"),
            )
        })?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let api = match source.kv_client().map(HttpApi::new).transpose() {
            Ok(api) => api.map(Arc::new),
            Err(e) => {
                tracing::error!(error = %e, "admin port: the key-value API is off");
                None
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (shutdown, mut stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("quasar-admin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            tracing::error!(error = %e, "admin port: cannot register the listener");
                            return;
                        }
                    };
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => match accepted {
                                Ok((stream, _peer)) => {
                                    let source = Arc::clone(&source);
                                    let security = security.clone();
                                    let api = api.clone();
                                    tokio::task::spawn(accept_connection(
                                        stream, source, security, api,
                                    ));
                                }
                                Err(e) => tracing::warn!(error = %e, "admin port: accept failed"),
                            },
                        }
                    }
                });
            })?;
        Ok(AdminServer {
            local_addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and joins the thread; open connections are dropped.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            // NOTE: an error means the loop already ended; nothing is left to stop.
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("admin port thread panicked");
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Bound on the TLS handshake of one admin connection.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn accept_connection(
    stream: tokio::net::TcpStream,
    source: Arc<dyn AdminSource>,
    security: AdminSecurity,
    api: Option<Arc<HttpApi>>,
) {
    let Some(tls) = security.tls else {
        let auth = ConnAuth {
            access: security.access,
            tls: false,
            certificate: None,
        };
        return serve_connection(stream, source, auth, api).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "admin port: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(timeout = ?TLS_HANDSHAKE_TIMEOUT, "admin port: no TLS handshake");
            return;
        }
    };
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| PeerCertificate(c.clone().into_owned()));
    let auth = ConnAuth {
        access: security.access,
        tls: true,
        certificate,
    };
    serve_connection(stream, source, auth, api).await
}

async fn serve_connection<S>(
    stream: S,
    source: Arc<dyn AdminSource>,
    auth: ConnAuth,
    api: Option<Arc<HttpApi>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(auth.clone());
        let source = Arc::clone(&source);
        let api = api.clone();
        async move {
            let response = if http_api::serves(request.uri().path()) {
                let refused = match http_api::needed_role(&request) {
                    Some(role) => authorize(&request, role).err(),
                    None => None,
                };
                match refused {
                    Some(refusal) => refusal,
                    None => http_api::handle(api.as_deref(), request).await,
                }
            } else {
                route(&*source, &request)
            };
            Ok::<_, Infallible>(response)
        }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "admin port: connection ended with an error");
    }
}

fn route<B>(source: &dyn AdminSource, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": format!("{} is not supported; the admin port answers GET", request.method())}),
        );
    }
    match request.uri().path() {
        "/health" => probe_response(source.health()),
        "/ready" => probe_response(source.ready()),
        "/status" => match authorize(request, Role::Read) {
            Ok(_) => json_response(StatusCode::OK, &source.status()),
            Err(refusal) => refusal,
        },
        "/metrics" => {
            if let Err(refusal) = authorize(request, Role::Read) {
                return refusal;
            }
            let mut text = String::new();
            match source.encode_metrics(&mut text) {
                Ok(()) => {
                    let mut response = Response::new(Full::new(Bytes::from(text)));
                    response
                        .headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
                    response
                }
                Err(_) => json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"error": "encoding the metrics failed"}),
                ),
            }
        }
        other => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no such path {other}; try /health, /ready, /status or /metrics")}),
        ),
    }
}

fn probe_response(probe: Probe) -> Response<Full<Bytes>> {
    match probe {
        Probe::Ok => json_response(StatusCode::OK, &json!({"status": "ok"})),
        Probe::Failing(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unhealthy", "reason": reason}),
        ),
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::registry::Registry;
    use std::io::{Read, Write};
    use std::sync::Mutex;
    use std::time::Duration;

    struct Fake {
        healthy: Mutex<Probe>,
        registry: Registry,
        proposals: Counter,
    }

    impl AdminSource for Fake {
        fn health(&self) -> Probe {
            self.healthy.lock().unwrap().clone()
        }
        fn ready(&self) -> Probe {
            Probe::Failing("recovering the write-ahead log of shard 1".into())
        }
        fn status(&self) -> serde_json::Value {
            json!({"node_id": 7, "shards": 2})
        }
        fn encode_metrics(&self, out: &mut String) -> std::fmt::Result {
            prometheus_client::encoding::text::encode(out, &self.registry)
        }
    }

    fn fake() -> Arc<Fake> {
        let mut registry = Registry::default();
        let proposals = Counter::default();
        registry.register(
            "quasar_raft_proposals",
            "Proposals accepted",
            proposals.clone(),
        );
        Arc::new(Fake {
            healthy: Mutex::new(Probe::Ok),
            registry,
            proposals,
        })
    }

    /// One HTTP/1.1 request over a plain socket, with timeouts; returns (status, body).
    fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut stream =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let status = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    #[test]
    fn serves_probes_status_and_metrics() {
        let source = fake();
        let server = AdminServer::start("127.0.0.1:0".parse().unwrap(), source.clone()).unwrap();
        let addr = server.local_addr();

        assert_eq!(
            get(addr, "GET", "/health"),
            (200, r#"{"status":"ok"}"#.into())
        );
        *source.healthy.lock().unwrap() = Probe::Failing("WAL of shard 0 is poisoned".into());
        let (status, body) = get(addr, "GET", "/health");
        assert_eq!(status, 503);
        assert!(body.contains("WAL of shard 0 is poisoned"), "{body}");

        let (status, body) = get(addr, "GET", "/ready");
        assert_eq!(status, 503);
        assert!(body.contains("recovering"), "{body}");

        let (status, body) = get(addr, "GET", "/status");
        assert_eq!(status, 200);
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["node_id"], 7);

        source.proposals.inc_by(3);
        let (status, body) = get(addr, "GET", "/metrics");
        assert_eq!(status, 200);
        assert!(body.contains("quasar_raft_proposals_total 3"), "{body}");

        assert_eq!(get(addr, "GET", "/nope").0, 404);
        assert_eq!(get(addr, "POST", "/health").0, 405);
        server.stop();
        assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());
    }

    #[test]
    fn key_value_routes_without_a_cluster_answer_503_and_the_document_is_served() {
        let server = AdminServer::start("127.0.0.1:0".parse().unwrap(), fake()).unwrap();
        let addr = server.local_addr();
        let (status, body) = get(addr, "GET", "/v1/kv/a");
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("no key-value backend"), "{body}");
        let (status, body) = get(addr, "GET", "/openapi.json");
        assert_eq!(status, 200);
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(doc["paths"]["/v1/txn"].is_object());
        assert_eq!(get(addr, "PATCH", "/v1/kv/a").0, 405);
        assert_eq!(get(addr, "GET", "/v1/elsewhere").0, 404);
        assert_eq!(get(addr, "GET", "/health").0, 200);
        server.stop();
    }

    #[test]
    fn a_port_in_use_is_reported_with_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = AdminServer::start(addr, fake()).err().unwrap();
        assert!(
            err.to_string()
                .contains(&format!("cannot bind the admin port {addr}")),
            "{err}"
        );
    }
}
