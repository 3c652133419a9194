//! The connection's receive buffer: frames arriving in arbitrary pieces come out whole,
//! aligned and in order, the buffer grows for a frame larger than itself (never past the
//! limit, and only as its bytes arrive), an oversized frame is refused before any growth,
//! a listener's small handshake limit is lifted without losing received bytes, and a buffer
//! grown by a burst shrinks back once frames are small again.

use quasar_rpc::conn::{AlignedVec, ConnConfig, RecvBuffer};
use quasar_rpc::frame::{access_body, decode_body, encode_frame, FrameError, BODY_ALIGN};
use quasar_rpc::message::{
    ClusterId, Entry, EntryKind, GroupId, Handshake, LogId, LogIndex, NodeId, RaftBatch, RaftBody,
    RaftMessage, ShardId, Term,
};

fn big_batch(payload_bytes: usize) -> RaftBatch {
    RaftBatch {
        from: NodeId(1),
        to: NodeId(2),
        to_shard: ShardId(0),
        messages: vec![RaftMessage {
            group: GroupId(4),
            term: Term(2),
            body: RaftBody::Append(quasar_rpc::message::Append {
                prev: LogId::default(),
                entries: vec![Entry {
                    term: Term(2),
                    kind: EntryKind::Normal,
                    payload: (0..payload_bytes).map(|i| i as u8).collect(),
                }],
                commit: LogIndex(0),
            }),
        }],
        heartbeats: vec![],
        heartbeat_responses: vec![],
        commits: vec![],
    }
}

fn config(recv_buf_bytes: usize, max_frame_len_bytes: usize) -> ConnConfig {
    ConnConfig {
        recv_buf_bytes,
        max_frame_len_bytes,
        ..ConnConfig::default()
    }
}

/// Feeds `wire` in pieces of `chunk` bytes; returns the decoded frames in order.
fn feed(buf: &mut RecvBuffer, wire: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut bodies = Vec::new();
    let mut at = 0;
    loop {
        while let Some(frame) = buf.next_frame()? {
            assert_eq!(frame.body.as_ptr() as usize % BODY_ALIGN, 0, "body aligned");
            bodies.push(frame.body.to_vec());
        }
        if at == wire.len() {
            return Ok(bodies);
        }
        let spare = buf.spare_mut();
        let n = chunk.min(spare.len()).min(wire.len() - at);
        spare[..n].copy_from_slice(&wire[at..at + n]);
        buf.filled(n);
        at += n;
    }
}

#[test]
fn frames_cut_anywhere_come_out_whole_and_the_buffer_grows_for_a_big_one() {
    let hello = Handshake::from_node(ClusterId(1), NodeId(2), ShardId(0), ShardId(0));
    let big = big_batch(300 << 10);
    let mut wire: AlignedVec = AlignedVec::new();
    encode_frame(&hello, &mut wire).unwrap();
    encode_frame(&big, &mut wire).unwrap();
    encode_frame(&hello, &mut wire).unwrap();
    for chunk in [1, 7, 4096, 1 << 20] {
        let mut buf = RecvBuffer::new(&config(4096, 1 << 20));
        let bodies = feed(&mut buf, &wire, chunk).unwrap();
        assert_eq!(bodies.len(), 3, "chunk {chunk}");
        let mut aligned: AlignedVec = AlignedVec::new();
        aligned.extend_from_slice(&bodies[1]);
        assert_eq!(decode_body::<RaftBatch>(&aligned).unwrap(), big);
        aligned.clear();
        aligned.extend_from_slice(&bodies[2]);
        assert!(access_body::<Handshake>(&aligned).is_ok());
        assert!(!buf.has_partial());
    }
}

#[test]
fn an_oversized_frame_is_refused_from_its_header() {
    let mut wire: AlignedVec = AlignedVec::new();
    encode_frame(&big_batch(64 << 10), &mut wire).unwrap();
    let mut buf = RecvBuffer::new(&config(4096, 16 << 10));
    match feed(&mut buf, &wire[..64], 64) {
        Err(FrameError::TooLarge { max, .. }) => assert_eq!(max, 16 << 10),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(
        buf.spare_mut().len() <= 4096,
        "no growth for a refused frame"
    );
}

#[test]
fn the_buffer_grows_with_what_arrives_not_with_what_a_header_announces() {
    let mut wire: AlignedVec = AlignedVec::new();
    encode_frame(&big_batch(900 << 10), &mut wire).unwrap();
    let mut buf = RecvBuffer::new(&config(4096, 1 << 20));
    // The header and 1000 bytes of a 900 KiB frame: the buffer stays at its first size.
    assert!(feed(&mut buf, &wire[..1024], 7).unwrap().is_empty());
    assert_eq!(buf.spare_mut().len() + 1024, 4096);
    // 40 KiB: at most twice that.
    assert!(feed(&mut buf, &wire[1024..40 << 10], 4096)
        .unwrap()
        .is_empty());
    assert!(buf.spare_mut().len() + (40 << 10) <= 80 << 10);
    // The rest: the frame comes out whole.
    let bodies = feed(&mut buf, &wire[40 << 10..], 1 << 20).unwrap();
    assert_eq!(bodies.len(), 1);
    let mut aligned: AlignedVec = AlignedVec::new();
    aligned.extend_from_slice(&bodies[0]);
    assert_eq!(
        decode_body::<RaftBatch>(&aligned).unwrap(),
        big_batch(900 << 10)
    );
}

#[test]
fn set_limits_lifts_the_handshake_limit_and_keeps_received_bytes() {
    let hello = Handshake::from_node(ClusterId(1), NodeId(2), ShardId(0), ShardId(0));
    let big = big_batch(64 << 10);
    let mut wire: AlignedVec = AlignedVec::new();
    encode_frame(&hello, &mut wire).unwrap();
    let hello_len = wire.len();
    encode_frame(&big, &mut wire).unwrap();
    // The handshake and the start of the next frame's header arrive together.
    let mut buf = RecvBuffer::new(&config(0, 1024));
    assert_eq!(
        feed(&mut buf, &wire[..hello_len + 20], 4096).unwrap().len(),
        1
    );
    buf.set_limits(&config(256 << 10, 1 << 20));
    assert!(buf.spare_mut().len() >= 128 << 10);
    let bodies = feed(&mut buf, &wire[hello_len + 20..], 4096).unwrap();
    assert_eq!(bodies.len(), 1);
    let mut aligned: AlignedVec = AlignedVec::new();
    aligned.extend_from_slice(&bodies[0]);
    assert_eq!(decode_body::<RaftBatch>(&aligned).unwrap(), big);
}

#[test]
fn a_buffer_grown_by_a_burst_shrinks_back_by_halves_once_frames_are_small() {
    let base = 4096;
    let mut buf = RecvBuffer::new(&config(base, 1 << 20));
    let mut big: AlignedVec = AlignedVec::new();
    encode_frame(&big_batch(500 << 10), &mut big).unwrap();
    assert_eq!(feed(&mut buf, &big, 1 << 20).unwrap().len(), 1);
    let grown = buf.spare_mut().len();
    assert!(grown >= 500 << 10, "grown to {grown}");

    let hello = Handshake::from_node(ClusterId(1), NodeId(2), ShardId(0), ShardId(0));
    let mut small: AlignedVec = AlignedVec::new();
    encode_frame(&hello, &mut small).unwrap();
    // Small frames, each received alone: the size holds for a run of them, then halves.
    let mut sizes = vec![grown];
    for _ in 0..64 * quasar_rpc::conn::SHRINK_AFTER {
        assert_eq!(feed(&mut buf, &small, 1 << 20).unwrap().len(), 1);
        let len = buf.spare_mut().len();
        if len != *sizes.last().unwrap() {
            sizes.push(len);
        }
    }
    assert_eq!(
        *sizes.last().unwrap(),
        base,
        "back to its first size: {sizes:?}"
    );
    for w in sizes.windows(2) {
        assert_eq!(w[1], (w[0] / 2).max(base), "halved each time: {sizes:?}");
    }
    // A big frame still comes out whole after the shrinking, and one in the middle of a
    // run of small ones resets the run.
    assert_eq!(feed(&mut buf, &big, 4096).unwrap().len(), 1);
    let regrown = buf.spare_mut().len();
    for _ in 0..quasar_rpc::conn::SHRINK_AFTER - 1 {
        assert_eq!(feed(&mut buf, &small, 1 << 20).unwrap().len(), 1);
    }
    assert_eq!(
        buf.spare_mut().len(),
        regrown,
        "held until the run is complete"
    );
}
