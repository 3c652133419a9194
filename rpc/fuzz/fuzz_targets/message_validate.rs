//! Fuzz target: the checks a node runs on messages read in place.
//!
//! For every frame of the input that passes the decoder and bytecheck, runs
//! the validation on the archive and on the deserialized value and requires
//! the same verdict: request size limits and well-formedness, transaction
//! compares, the handshake decision, range descriptor queries. Nothing may
//! panic on any input.
//!
//! As in `frame_decode`, the bytes after the header are also checked as a
//! body of the header's kind without the checksum, so that mutations reach
//! bytecheck and the validators instead of dying at the CRC.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quasar_rpc::frame::{access_body, Decoded, FrameDecoder, FrameKind, HEADER_LEN};
use quasar_rpc::message::*;
use rkyv::rancor;
use rkyv::util::AlignedVec;

const LIMITS: SizeLimits = SizeLimits {
    max_key_bytes: 64,
    max_value_bytes: 256,
    max_frame_bytes: 1 << 20,
};

fn client_request(body: &[u8]) {
    let Ok(archived) = access_body::<ClientRequest>(body) else {
        return;
    };
    let owned: ClientRequest =
        rkyv::deserialize::<_, rancor::Error>(archived).expect("deserializes");
    assert_eq!(
        LIMITS.validate_archived_request(archived),
        LIMITS.validate_request(&owned)
    );
    let _ = owned.op.is_write();
    if let (ArchivedOperation::Txn(txn), Operation::Txn(owned_txn)) = (&archived.op, &owned.op) {
        let states = [
            None,
            Some((b"".as_slice(), KeyVersion(0))),
            Some((b"m".as_slice(), KeyVersion(7))),
        ];
        for (a, o) in txn.compares.iter().zip(&owned_txn.compares) {
            for state in states {
                assert_eq!(a.holds(state), o.holds(state));
            }
        }
    }
}

fn admin_request(body: &[u8]) {
    let Ok(archived) = access_body::<AdminRequest>(body) else {
        return;
    };
    let owned: AdminRequest =
        rkyv::deserialize::<_, rancor::Error>(archived).expect("deserializes");
    assert_eq!(
        LIMITS.validate_archived_admin_request(archived),
        LIMITS.validate_admin_request(&owned)
    );
}

fn handshake(body: &[u8]) {
    let Ok(archived) = access_body::<Handshake>(body) else {
        return;
    };
    let owned: Handshake = rkyv::deserialize::<_, rancor::Error>(archived).expect("deserializes");
    let local = LocalIdentity {
        cluster: ClusterId(7),
        node: NodeId(1),
        shard: ShardId(1),
    };
    match owned.evaluate(&local) {
        HandshakeReply::Accepted { cluster, .. } => assert_eq!(cluster, owned.cluster),
        HandshakeReply::Refused(reason) => {
            let _ = reason.to_string();
        }
    }
}

fn descriptor_queries(d: &RangeDescriptor) {
    let _ = d.validate();
    for key in [d.start.as_slice(), d.end.as_slice(), b"m".as_slice()] {
        let inside = d.contains(key);
        if inside {
            assert!(key >= d.start.as_slice());
        }
        let _ = d.contains_span(key, &d.end);
    }
}

fn client_response(body: &[u8]) {
    let Ok(archived) = access_body::<ClientResponse>(body) else {
        return;
    };
    let owned: ClientResponse =
        rkyv::deserialize::<_, rancor::Error>(archived).expect("deserializes");
    if let Err(e) = &owned.result {
        // An error is definite (nothing applied), retryable, or `SessionExpired`: the
        // outcome is forgotten, so it is unknown and a retry cannot learn it.
        assert!(
            e.is_definite()
                || e.is_retryable()
                || matches!(e, RequestError::SessionExpired { .. }),
            "an ambiguous outcome must be retryable"
        );
        let _ = e.to_string();
        if let RequestError::RangeMoved { descriptor }
        | RequestError::KeyNotInRange { descriptor } = e
        {
            descriptor_queries(descriptor);
        }
    }
}

fn raft_batch(body: &[u8]) {
    let Ok(archived) = access_body::<RaftBatch>(body) else {
        return;
    };
    let owned: RaftBatch = rkyv::deserialize::<_, rancor::Error>(archived).expect("deserializes");
    assert_eq!(archived.message_count(), owned.message_count());
    for (a, o) in archived.messages.iter().zip(&owned.messages) {
        match (&a.body, &o.body) {
            (ArchivedRaftBody::Append(a), RaftBody::Append(o)) => {
                for (i, (x, y)) in a.entries.iter().zip(&o.entries).enumerate() {
                    assert_eq!(x.payload.as_slice(), y.payload.as_slice());
                    assert_eq!(a.entry_index(i), o.entry_index(i));
                }
            }
            (_, RaftBody::Snapshot(chunk)) => {
                let _ = chunk.is_last();
                descriptor_queries(&chunk.descriptor);
            }
            _ => {}
        }
    }
}

fn check_body(kind: FrameKind, body: &[u8]) {
    match kind {
        FrameKind::ClientRequest => client_request(body),
        FrameKind::AdminRequest => admin_request(body),
        FrameKind::Handshake => handshake(body),
        FrameKind::ClientResponse => client_response(body),
        FrameKind::RaftBatch => raft_batch(body),
        FrameKind::HandshakeReply | FrameKind::AdminResponse => {}
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(kind) = data
        .get(6..8)
        .and_then(|c| FrameKind::from_code(u16::from_le_bytes([c[0], c[1]])))
    {
        let rest = &data[HEADER_LEN.min(data.len())..];
        let mut body = AlignedVec::<16>::new();
        body.extend_from_slice(&rest[..rest.len() / 8 * 8]);
        check_body(kind, &body);
    }
    let mut buf = AlignedVec::<16>::new();
    buf.extend_from_slice(data);
    let mut decoder = FrameDecoder::new(u64::from(LIMITS.max_frame_bytes));
    let mut at = 0;
    while let Ok(Decoded::Frame(frame)) = decoder.decode(&buf[at..]) {
        check_body(frame.kind, frame.body(&buf[at..]));
        at += frame.consumed;
    }
});
