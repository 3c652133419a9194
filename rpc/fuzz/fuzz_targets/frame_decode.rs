//! Fuzz target: the frame decoder and bytecheck on arbitrary bytes.
//!
//! Feeds the input to `FrameDecoder` as a stream (once whole, once split in
//! two reads), validates every frame body as its kind's archive, and checks:
//! nothing panics; the decoder never consumes past the input or claims a
//! frame bigger than the limit; a body that passes bytecheck deserializes,
//! re-encodes and decodes back to the same value.
//!
//! Most mutations of a real frame break its body checksum, so they would
//! never reach bytecheck. The target therefore also reads the bytes after the
//! header (cut to a multiple of 8) as a body of the kind the header names,
//! with no checksum, as a peer that computes valid checksums over hostile
//! archives would send them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quasar_rpc::frame::{
    access_body, encode_frame, Decoded, FrameDecoder, FrameKind, WireMessage, HEADER_LEN,
};
use quasar_rpc::message::*;
use rkyv::rancor;
use rkyv::util::AlignedVec;

const MAX_BODY: u64 = 1 << 20;

fn check<M: WireMessage + PartialEq + std::fmt::Debug>(body: &[u8]) {
    let Ok(archived) = access_body::<M>(body) else {
        return;
    };
    let value: M =
        rkyv::deserialize::<M, rancor::Error>(archived).expect("validated archive deserializes");
    let mut again = AlignedVec::new();
    encode_frame(&value, &mut again).expect("re-encodes");
    let Ok(Decoded::Frame(frame)) = FrameDecoder::new(u64::MAX).decode(&again) else {
        panic!("re-encoded frame does not decode")
    };
    let back =
        quasar_rpc::frame::decode_body::<M>(frame.body(&again)).expect("re-encoded body validates");
    assert_eq!(back, value);
}

fn check_body(kind: FrameKind, body: &[u8]) {
    match kind {
        FrameKind::Handshake => check::<Handshake>(body),
        FrameKind::HandshakeReply => check::<HandshakeReply>(body),
        FrameKind::RaftBatch => check::<RaftBatch>(body),
        FrameKind::ClientRequest => check::<ClientRequest>(body),
        FrameKind::ClientResponse => check::<ClientResponse>(body),
        FrameKind::AdminRequest => check::<AdminRequest>(body),
        FrameKind::AdminResponse => check::<AdminResponse>(body),
    }
}

/// Decodes frames from the start of `buf` until an error or an incomplete
/// frame; returns how many bytes whole frames took.
fn drain(decoder: &mut FrameDecoder, buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match decoder.decode(&buf[at..]) {
            Ok(Decoded::Frame(frame)) => {
                assert!(frame.consumed >= HEADER_LEN && at + frame.consumed <= buf.len());
                assert!(frame.body.len() as u64 <= MAX_BODY);
                check_body(frame.kind, frame.body(&buf[at..]));
                at += frame.consumed;
            }
            Ok(Decoded::Incomplete { needed }) => {
                assert!(needed > 0);
                return at;
            }
            Err(_) => return at,
        }
    }
}

/// The bytes after the header as a body of the header's kind, checksum unchecked.
fn body_past_checksum(data: &[u8]) {
    let Some(kind) = data
        .get(6..8)
        .and_then(|c| FrameKind::from_code(u16::from_le_bytes([c[0], c[1]])))
    else {
        return;
    };
    let rest = &data[HEADER_LEN.min(data.len())..];
    let mut body = AlignedVec::<16>::new();
    body.extend_from_slice(&rest[..rest.len() / 8 * 8]);
    check_body(kind, &body);
}

fuzz_target!(|data: &[u8]| {
    body_past_checksum(data);
    let mut buf = AlignedVec::<16>::new();
    buf.extend_from_slice(data);
    let mut decoder = FrameDecoder::new(MAX_BODY);
    let whole = drain(&mut decoder, &buf);

    // The same stream arriving in two reads must yield the same frames.
    if data.len() > 1 {
        let split = data.len() / 2;
        let first = drain(&mut decoder, &buf[..split]);
        assert!(first <= whole);
        let mut rest = AlignedVec::<16>::new();
        rest.extend_from_slice(&buf[first..]);
        let second = drain(&mut decoder, &rest);
        assert_eq!(first + second, whole);
    }
});
