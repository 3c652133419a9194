//! The transport and the async client over TLS on loopback, with certificates made on the
//! fly (rcgen): pipelined requests (one of them larger than a TLS record) on one mutual-TLS
//! connection; a client without a certificate refused with its reason; peers connecting
//! over mutual TLS, and a peer whose certificate names another node refused.

use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use quasar_rpc::client::{AsyncClient, ClientConfig};
use quasar_rpc::conn::{Conn, Delivery, InFrame};
use quasar_rpc::error::ClientError;
use quasar_rpc::frame::{decode_body, FrameError, FrameKind};
use quasar_rpc::message::{
    ClientRequest, ClientResponse, ClusterId, KeyVersion, NodeId, Origin, Reply, ShardId,
};
use quasar_rpc::tls::{ClientTls, NodeTls, TlsFiles};
use quasar_rpc::transport::{Destination, FrameHandler, PeerInfo, Transport, TransportConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Answers every client put with its session sequence as the version; ignores Raft.
struct Echo;

impl FrameHandler for Echo {
    fn on_frame(
        &self,
        peer: &PeerInfo,
        frame: InFrame<'_>,
        conn: &Rc<Conn>,
    ) -> Result<(), FrameError> {
        if frame.kind != FrameKind::ClientRequest {
            return Ok(());
        }
        assert!(matches!(peer.origin, Origin::Client { .. }));
        let req = decode_body::<ClientRequest>(frame.body)?;
        let response = ClientResponse {
            request_id: req.request_id,
            result: Ok(Reply::Written {
                version: KeyVersion(req.sequence.0),
            }),
        };
        conn.push(Delivery::Reliable, &response)
            .expect("reply queued");
        Ok(())
    }
}

/// A CA and certificates `node-1`, `node-2` and the client `alice` in `dir`.
fn make_certs(dir: &Path) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca.self_signed(&ca_key).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    for (name, usages) in [
        (
            "node-1",
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        ),
        (
            "node-2",
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        ),
        ("alice", vec![ExtendedKeyUsagePurpose::ClientAuth]),
    ] {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec![name.to_string(), "127.0.0.1".into()]).expect("params");
        params.extended_key_usages = usages;
        let cert = params.signed_by(&key, &ca, &ca_key).expect("sign");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
    }
}

fn node_tls(dir: &Path, name: &str) -> NodeTls {
    NodeTls::load(&TlsFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join("ca.pem"),
    })
    .expect("node TLS")
}

fn run(f: impl std::future::Future<Output = ()> + 'static) {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .preempt_timer(Duration::from_millis(2))
        .make()
        .expect("executor")
        .run(f);
}

fn server(dir: &Path, node: u64) -> (Rc<Transport>, std::net::SocketAddr) {
    let mut cfg = TransportConfig::new(ClusterId(3), NodeId(node), ShardId(0));
    cfg.tls = Some(node_tls(dir, &format!("node-{node}")));
    let t = Transport::new(cfg, Rc::new(Echo));
    let addr = t
        .listen("127.0.0.1:0".parse().expect("address"))
        .expect("listen");
    (t, addr)
}

#[test]
fn async_client_pipelines_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    let path = dir.path().to_path_buf();
    run(async move {
        let (server, addr) = server(&path, 1);
        let mut config = ClientConfig::new(ClusterId(3), vec![(NodeId(1), addr)], 1);
        config.tls = Some(
            ClientTls::load(
                &path.join("ca.pem"),
                Some((&path.join("alice.pem"), &path.join("alice.key"))),
            )
            .expect("client TLS"),
        );
        let client = AsyncClient::new(config);
        let big = vec![7u8; 200 << 10];
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let client = client.clone();
                let value = if i == 100 { big.clone() } else { b"v".to_vec() };
                glommio::spawn_local(async move { client.put(&i.to_be_bytes(), &value).await })
            })
            .collect();
        let mut versions = Vec::new();
        for t in tasks {
            let v = glommio::timer::timeout(Duration::from_secs(20), async { Ok(t.await) })
                .await
                .expect("answer in time")
                .expect("put");
            versions.push(v.0);
        }
        versions.sort_unstable();
        assert_eq!(versions, (1..=200).collect::<Vec<u64>>());
        assert_eq!(
            server.stats().accepted,
            1,
            "all requests on one TLS connection"
        );

        // Without a client certificate: refused, with the reason.
        let mut anon = ClientConfig::new(ClusterId(3), vec![(NodeId(1), addr)], 1);
        anon.tls = Some(ClientTls::load(&path.join("ca.pem"), None).expect("client TLS"));
        anon.max_attempts = 2;
        anon.io_timeout = Duration::from_secs(2);
        match AsyncClient::new(anon).put(b"k", b"v").await {
            Err(ClientError::Unavailable { last, .. }) => {
                assert!(last.contains("requires a client certificate"), "{last}")
            }
            other => panic!("a client without a certificate was served: {other:?}"),
        }
        server.stop();
    });
}

#[test]
fn peers_must_present_their_own_node_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    let path = dir.path().to_path_buf();
    run(async move {
        let (one, addr) = server(&path, 1);
        let dest = Destination {
            node: NodeId(1),
            shard: ShardId(0),
        };
        // Node 2 with its own certificate connects.
        let mut cfg = TransportConfig::new(ClusterId(3), NodeId(2), ShardId(0));
        cfg.tls = Some(node_tls(&path, "node-2"));
        let two = Transport::new(cfg, Rc::new(Echo));
        two.add_peer(dest, addr);
        // "Node 3" holding node 2's certificate is refused.
        let mut cfg = TransportConfig::new(ClusterId(3), NodeId(3), ShardId(0));
        cfg.tls = Some(node_tls(&path, "node-2"));
        let three = Transport::new(cfg, Rc::new(Echo));
        three.add_peer(dest, addr);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(two.is_connected(dest) && three.stats().handshakes_refused_out > 0) {
            assert!(
                Instant::now() < deadline,
                "node 2 connected: {}, node 3 refused {} times",
                two.is_connected(dest),
                three.stats().handshakes_refused_out
            );
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        assert!(!three.is_connected(dest));
        assert!(one.stats().handshakes_refused_in > 0);
        two.stop();
        three.stop();
        one.stop();
    });
}
