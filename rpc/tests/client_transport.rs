//! The async client against a real shard transport on loopback: the client's handshake is
//! accepted by the transport's accept loop, a `FrameHandler` answers from the receive loop,
//! and hundreds of pipelined requests share one connection.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use quasar_rpc::client::{AsyncClient, ClientConfig};
use quasar_rpc::conn::{Conn, Delivery, InFrame};
use quasar_rpc::frame::{decode_body, FrameError, FrameKind};
use quasar_rpc::message::{
    ClientRequest, ClientResponse, ClusterId, KeyVersion, NodeId, Origin, Reply, ShardId,
};
use quasar_rpc::transport::{FrameHandler, PeerInfo, Transport, TransportConfig};

/// Answers every put with its session sequence as the version.
#[derive(Default)]
struct Echo {
    clients_seen: Cell<u32>,
}

impl FrameHandler for Echo {
    fn on_frame(
        &self,
        peer: &PeerInfo,
        frame: InFrame<'_>,
        conn: &Rc<Conn>,
    ) -> Result<(), FrameError> {
        assert!(matches!(peer.origin, Origin::Client { .. }));
        if frame.kind != FrameKind::ClientRequest {
            return Err(FrameError::KindMismatch {
                expected: FrameKind::ClientRequest,
                got: frame.kind,
            });
        }
        let req = decode_body::<ClientRequest>(frame.body)?;
        self.clients_seen.set(self.clients_seen.get() + 1);
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

#[test]
fn pipelined_async_client_against_the_transport() {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .preempt_timer(Duration::from_millis(2))
        .make()
        .expect("executor")
        .run(async {
            let echo = Rc::new(Echo::default());
            let cfg = TransportConfig::new(ClusterId(3), NodeId(1), ShardId(0));
            let server = Transport::new(cfg, echo.clone());
            let addr = server
                .listen("127.0.0.1:0".parse().expect("address"))
                .expect("listen");
            let client =
                AsyncClient::new(ClientConfig::new(ClusterId(3), vec![(NodeId(1), addr)], 1));
            let tasks: Vec<_> = (0..300u32)
                .map(|i| {
                    let client = client.clone();
                    glommio::spawn_local(async move { client.put(&i.to_be_bytes(), b"v").await })
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
            let expected: Vec<u64> = (1..=300).collect();
            assert_eq!(versions, expected, "one distinct session sequence per put");
            assert_eq!(echo.clients_seen.get(), 300);
            assert_eq!(server.stats().accepted, 1, "all requests on one connection");
            server.stop();
        });
}
