//! TLS and authentication, end to end: real `quasar start` processes on loopback
//! (`quasar_node::local_cluster`) with certificates made by `quasar_node::certs` in a
//! temporary directory. Every refusal must come with a clear reason and change nothing.
//!
//! - `tls_cluster_refuses_strangers`: a 3-node mutual-TLS cluster (no auth table) replicates
//!   and serves a client with a CA-signed certificate; refused: a client without a
//!   certificate, a client whose certificate comes from another CA, a plaintext client, a
//!   "peer" whose node certificate names another node id, a "peer" without a certificate,
//!   and the HTTPS admin port without a client certificate.
//! - `tokens_and_roles_are_enforced`: one TLS node with an `[auth]` table: a missing or wrong
//!   token is refused at the handshake; a `read` token or certificate cannot write; a `write`
//!   token cannot split a range; an `admin` identity can, and the node logs who asked.
//!
//! Every wait is bounded: clients make at most 2 attempts of 2 s; the cluster start waits at
//! most 60 s.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use quasar_node::local_cluster::{
    https_get, https_request, LocalCluster, LocalClusterConfig, LOCAL_CLIENT_NAME,
};
use quasar_rpc::auth::{Role, Secret};
use quasar_rpc::client::{BlockingClient, ClientConfig};
use quasar_rpc::error::ClientError;
use quasar_rpc::frame::{decode_body, encode_frame, FrameHeader, FrameKind, HEADER_LEN};
use quasar_rpc::message::{
    AdminOp, AdminReply, ClusterId, Handshake, HandshakeRefusal, HandshakeReply, NodeId, RangeInfo,
    RequestError, ShardId,
};
use quasar_rpc::tls::ClientTls;
use rkyv::util::AlignedVec;

const START_TIMEOUT: Duration = Duration::from_secs(60);
const READER_TOKEN: &str = "reader-token-0123456789";
const WRITER_TOKEN: &str = "writer-token-0123456789";

/// Bound on one HTTPS exchange with the admin port.
const TIMEOUT: Duration = Duration::from_secs(5);

fn start(root: &Path, nodes: u64, extra_args: Vec<String>) -> LocalCluster {
    LocalCluster::start(
        LocalClusterConfig {
            exe: PathBuf::from(env!("CARGO_BIN_EXE_quasar")),
            nodes,
            shards: 1,
            base_port: None,
            root: root.join("cluster"),
            extra_args: ["--election-ticks", "30", "--heartbeat-ticks", "3"]
                .into_iter()
                .map(String::from)
                .chain(extra_args)
                .collect(),
            tls: Some(root.join("certs")),
            peer_routes: Default::default(),
            env: Default::default(),
        },
        START_TIMEOUT,
    )
    .expect("start the TLS cluster")
}

fn certs(cluster: &LocalCluster) -> PathBuf {
    cluster.tls_dir().expect("a TLS cluster").to_path_buf()
}

/// A client of `cluster` with `tls` and `token`: 2 attempts of 2 s at most.
fn client(cluster: &LocalCluster, tls: Option<ClientTls>, token: Option<&str>) -> BlockingClient {
    client_with(cluster, tls, token, 2)
}

fn client_with(
    cluster: &LocalCluster,
    tls: Option<ClientTls>,
    token: Option<&str>,
    attempts: u32,
) -> BlockingClient {
    let nodes = cluster
        .endpoints()
        .into_iter()
        .map(|(id, addr)| (NodeId(id), addr))
        .collect();
    let mut config = ClientConfig::new(ClusterId::from_name("quasar"), nodes, 1);
    config.request_timeout = Duration::from_secs(2);
    config.io_timeout = Duration::from_secs(2);
    config.max_attempts = attempts;
    config.tls = tls;
    config.token = token.map(|t| Secret(t.into()));
    BlockingClient::new(config)
}

/// A client with the cluster's own certificate that waits out an election (20 attempts).
fn trusted_client(cluster: &LocalCluster) -> BlockingClient {
    let tls = tls_of(&certs(cluster), Some(LOCAL_CLIENT_NAME));
    client_with(cluster, Some(tls), None, 20)
}

/// TLS with the CA of `dir` and, optionally, the client certificate `name` from `dir`.
fn tls_of(dir: &Path, name: Option<&str>) -> ClientTls {
    let identity = name.map(|n| quasar_node::certs::cert_paths(dir, n));
    ClientTls::load(
        &dir.join("ca.pem"),
        identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    )
    .expect("load client TLS")
}

fn unavailable_reason(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    match result {
        Err(ClientError::Unavailable { last, .. }) => last,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn denied(result: Result<impl std::fmt::Debug, ClientError>) -> (Role, Role) {
    match result {
        Err(ClientError::Failed(RequestError::PermissionDenied { needed, role })) => (needed, role),
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

/// Opens a TLS connection as a node would (with the given certificate, or none) and sends a
/// node handshake claiming `claimed`; returns the node's reply.
fn peer_handshake(
    addr: SocketAddr,
    tls: &ClientTls,
    claimed: u64,
) -> Result<HandshakeReply, String> {
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let name = quasar_rpc::tls::server_name(NodeId(1), addr);
    let conn = rustls::ClientConnection::new(std::sync::Arc::clone(&tls.config), name)
        .map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let hello = Handshake::from_node(
        ClusterId::from_name("quasar"),
        NodeId(claimed),
        ShardId(0),
        ShardId(0),
    );
    let mut out = AlignedVec::new();
    encode_frame(&hello, &mut out).map_err(|e| e.to_string())?;
    s.write_all(&out)
        .and_then(|()| s.flush())
        .map_err(|e| e.to_string())?;
    let mut header = [0u8; HEADER_LEN];
    s.read_exact(&mut header)
        .map_err(|e| format!("reading the reply: {e}"))?;
    let header = FrameHeader::parse(&header).map_err(|e| e.to_string())?;
    if header.kind_code != FrameKind::HandshakeReply.code() || header.body_len > 1 << 16 {
        return Err(format!("unexpected frame {header:?}"));
    }
    let mut body = vec![0u8; header.body_len as usize];
    s.read_exact(&mut body).map_err(|e| e.to_string())?;
    let mut aligned = AlignedVec::<16>::new();
    aligned.extend_from_slice(&body);
    decode_body::<HandshakeReply>(&aligned).map_err(|e| e.to_string())
}

fn ranges(c: &mut BlockingClient) -> Vec<RangeInfo> {
    match c.admin(
        NodeId(1),
        ShardId(0),
        AdminOp::ListRanges {
            start_key: Vec::new(),
            limit: 100,
        },
    ) {
        Ok(AdminReply::Ranges { ranges, .. }) => ranges,
        other => panic!("list ranges: {other:?}"),
    }
}

fn split_op(r: &RangeInfo, at: &[u8]) -> AdminOp {
    AdminOp::SplitRange {
        range: r.descriptor.id,
        split_key: at.to_vec(),
        expected_epoch: r.descriptor.epoch,
    }
}

fn log_of(cluster: &LocalCluster, id: u64) -> String {
    let node = cluster.nodes.iter().find(|n| n.id == id).expect("node");
    std::fs::read_to_string(node.dir.join("quasar.log")).unwrap_or_default()
}

#[test]
fn tls_cluster_refuses_strangers() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = start(root.path(), 3, Vec::new());
    let dir = certs(&cluster);

    // Peers replicate over mutual TLS, and a client with a CA-signed certificate is served.
    let mut good = trusted_client(&cluster);
    good.put(b"greeting", b"hello").expect("put over TLS");
    let read = good.get(b"greeting").expect("get over TLS");
    assert_eq!(read.map(|v| v.value), Some(b"hello".to_vec()));

    // No client certificate: refused with the reason.
    let mut anon = client(&cluster, Some(tls_of(&dir, None)), None);
    let reason = unavailable_reason(anon.put(b"greeting", b"intruder"));
    assert!(reason.contains("requires a client certificate"), "{reason}");

    // A certificate from another CA: the TLS handshake fails.
    let other = root.path().join("other-ca");
    quasar_node::certs::init(&other, false).expect("second CA");
    quasar_node::certs::client(&other, "mallory").expect("client of the second CA");
    let mut foreign = client(&cluster, Some(tls_of_mixed(&dir, &other, "mallory")), None);
    let reason = unavailable_reason(foreign.put(b"greeting", b"intruder"));
    assert!(
        reason.contains("TLS") || reason.contains("alert"),
        "{reason}"
    );
    // ... and a client trusting only the other CA does not accept the nodes.
    let mut lost = client(&cluster, Some(tls_of(&other, Some("mallory"))), None);
    let reason = unavailable_reason(lost.get(b"greeting"));
    assert!(
        reason.contains("TLS") || reason.contains("certificate"),
        "{reason}"
    );

    // Plaintext to a TLS port.
    let mut plain = client(&cluster, None, None);
    unavailable_reason(plain.put(b"greeting", b"intruder"));

    // A node certificate for node 2 presented by a "peer" claiming to be node 3.
    let node2 = tls_of_node(&dir, 2);
    let addr1 = cluster.endpoints()[0].1;
    match peer_handshake(addr1, &node2, 3) {
        Ok(HandshakeReply::Refused(HandshakeRefusal::NodeCertificateMismatch { node })) => {
            assert_eq!(node, NodeId(3));
        }
        other => panic!("a peer with another node's certificate was not refused: {other:?}"),
    }
    // The same certificate with its own id is accepted (the check is the id, not the CA).
    assert!(matches!(
        peer_handshake(addr1, &node2, 2),
        Ok(HandshakeReply::Accepted { .. })
    ));
    // A "peer" with no certificate at all.
    match peer_handshake(addr1, &tls_of(&dir, None), 2) {
        Ok(HandshakeReply::Refused(HandshakeRefusal::NodeCertificateMismatch { .. })) => {}
        other => panic!("a peer without a certificate was not refused: {other:?}"),
    }

    // The admin port speaks HTTPS and wants a client certificate for /status.
    let admin = cluster.nodes[0].admin;
    let (code, body) = cluster
        .admin_get(admin, "/status", Duration::from_secs(2))
        .expect("status over HTTPS");
    assert_eq!(code, 200, "{body}");
    let (code, body) = https_get(
        admin,
        "/status",
        Duration::from_secs(2),
        &tls_of(&dir, None).config,
    )
    .expect("status without a client certificate");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("client certificate"), "{body}");

    // Nothing changed.
    let read = good.get(b"greeting").expect("get after the refusals");
    assert_eq!(read.map(|v| v.value), Some(b"hello".to_vec()));
    let log = log_of(&cluster, 1);
    assert!(
        log.contains("refusing connection"),
        "node 1 logged no refusal"
    );
}

/// TLS trusting `ca_dir`'s CA with the client certificate `name` of `cert_dir`.
fn tls_of_mixed(ca_dir: &Path, cert_dir: &Path, name: &str) -> ClientTls {
    let (cert, key) = quasar_node::certs::cert_paths(cert_dir, name);
    ClientTls::load(&ca_dir.join("ca.pem"), Some((&cert, &key))).expect("load client TLS")
}

/// TLS as node `id` would dial (its node certificate as client certificate).
fn tls_of_node(dir: &Path, id: u64) -> ClientTls {
    let (cert, key) = quasar_node::certs::cert_paths(dir, &format!("node-{id}"));
    ClientTls::load(&dir.join("ca.pem"), Some((&cert, &key))).expect("load node TLS")
}

#[test]
fn tokens_and_roles_are_enforced() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = root.path().join("auth.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.tokens]]\nname = \"dashboard\"\ntoken = \"{READER_TOKEN}\"\nrole = \"read\"\n\
             [[auth.tokens]]\nname = \"loader\"\ntoken = \"{WRITER_TOKEN}\"\nrole = \"write\"\n\
             [[auth.identities]]\nidentity = \"{LOCAL_CLIENT_NAME}\"\nrole = \"admin\"\n\
             [[auth.identities]]\nidentity = \"auditor\"\nrole = \"read\"\n"
        ),
    )
    .expect("write the config");
    let cluster = start(
        root.path(),
        1,
        vec!["--config".into(), config.display().to_string()],
    );
    let dir = certs(&cluster);
    quasar_node::certs::client(&dir, "auditor").expect("auditor certificate");
    quasar_node::certs::client(&dir, "stranger").expect("unbound certificate");
    let ca_only = || Some(tls_of(&dir, None));

    let mut admin = trusted_client(&cluster);
    admin.put(b"k", b"v1").expect("the admin identity writes");

    // Missing or wrong token.
    let reason = unavailable_reason(client(&cluster, ca_only(), None).get(b"k"));
    assert!(reason.contains("authentication required"), "{reason}");
    let reason = unavailable_reason(client(&cluster, ca_only(), Some("not-the-token")).get(b"k"));
    assert!(reason.contains("token is not valid"), "{reason}");
    let stranger = Some(tls_of(&dir, Some("stranger")));
    let reason = unavailable_reason(client(&cluster, stranger, None).get(b"k"));
    assert!(reason.contains("no identity bound"), "{reason}");

    // A `read` token reads and cannot write.
    let mut reader = client(&cluster, ca_only(), Some(READER_TOKEN));
    let read = reader.get(b"k").expect("a reader reads");
    assert_eq!(read.map(|v| v.value), Some(b"v1".to_vec()));
    assert_eq!(
        denied(reader.put(b"k", b"reader-was-here")),
        (Role::Write, Role::Read)
    );
    // So does a `read` certificate identity.
    let mut auditor = client(&cluster, Some(tls_of(&dir, Some("auditor"))), None);
    assert_eq!(denied(auditor.delete(b"k")), (Role::Write, Role::Read));

    // A `write` token writes and cannot split.
    let mut writer = client(&cluster, ca_only(), Some(WRITER_TOKEN));
    writer.put(b"k", b"v2").expect("a writer writes");
    let before = ranges(&mut writer);
    let user = before.last().expect("a range").clone();
    assert_eq!(
        denied(writer.admin(NodeId(1), ShardId(0), split_op(&user, b"m"))),
        (Role::Admin, Role::Write)
    );
    assert_eq!(
        ranges(&mut writer).len(),
        before.len(),
        "a refused split changed nothing"
    );

    // Nothing the refused clients sent was applied.
    let read = admin.get(b"k").expect("get");
    assert_eq!(read.map(|v| v.value), Some(b"v2".to_vec()));

    // The admin identity splits, and the node logs who asked.
    admin
        .admin(NodeId(1), ShardId(0), split_op(&user, b"m"))
        .expect("the admin splits");
    assert_eq!(ranges(&mut admin).len(), before.len() + 1);
    let log = log_of(&cluster, 1);
    assert!(
        log.lines()
            .any(|l| l.contains("admin operation") && l.contains(LOCAL_CLIENT_NAME)),
        "no admin-operation log line naming who asked"
    );
    assert!(log.contains("permission denied"), "refusals are logged");

    // HTTP: bearer tokens on the admin port.
    let admin_addr = cluster.nodes[0].admin;
    let get = |auth: Option<&str>| {
        https_request(
            admin_addr,
            "GET",
            "/status",
            auth,
            "",
            TIMEOUT,
            &tls_of(&dir, None).config,
        )
        .expect("GET /status")
    };
    assert_eq!(get(Some(READER_TOKEN)).0, 200);
    let (code, body) = get(None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = get(Some("nope-nope-nope-nope"));
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("token is not valid"), "{body}");

    // The HTTP key-value API over HTTPS: the caller's role is checked on the admin port, and
    // the node's gateway reaches the client port with its own certificate.
    let http = |method: &str, path: &str, auth: Option<&str>, body: &str| {
        https_request(
            admin_addr,
            method,
            path,
            auth,
            body,
            TIMEOUT,
            &tls_of(&dir, None).config,
        )
        .expect("HTTPS request")
    };
    let (code, body) = http("GET", "/v1/kv/k", Some(READER_TOKEN), "");
    assert_eq!(code, 200, "a reader reads over HTTP: {body}");
    assert!(body.contains("v2"), "{body}");
    let (code, body) = http("PUT", "/v1/kv/k", Some(READER_TOKEN), r#"{"value":"no"}"#);
    assert_eq!(code, 403, "a reader cannot write over HTTP: {body}");
    let (code, body) = http("PUT", "/v1/kv/k", None, r#"{"value":"no"}"#);
    assert_eq!(code, 401, "{body}");
    let (code, body) = http("PUT", "/v1/kv/k", Some(WRITER_TOKEN), r#"{"value":"v3"}"#);
    assert_eq!(code, 200, "a writer writes over HTTP: {body}");
    let read = admin.get(b"k").expect("get");
    assert_eq!(read.map(|v| v.value), Some(b"v3".to_vec()));
}
