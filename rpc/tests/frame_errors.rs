//! Negative tests of the frame decoder: every `FrameError` variant, flipped
//! bits anywhere in a frame, truncation, oversize lengths refused from the
//! header alone, and archives that pass the checksum but fail bytecheck.

use quasar_rpc::frame::{
    access_body, decode_body, encode_frame, encode_frame_limited, Decoded, EncodeError,
    FrameDecoder, FrameError, FrameHeader, FrameKind, WireMessage, BODY_ALIGN, HEADER_LEN, MAGIC,
    PROTOCOL_VERSION,
};
use quasar_rpc::message::*;
use rkyv::util::AlignedVec;

const MAX: u64 = 1 << 20;

fn sample_request() -> ClientRequest {
    ClientRequest {
        request_id: RequestId(9),
        session: SessionId(77),
        sequence: Sequence(3),
        consistency: ReadConsistency::Linearizable,
        route: Some(Route {
            range: RangeId(4),
            epoch: RangeEpoch(2),
        }),
        op: Operation::Put {
            key: b"dir/a".to_vec(),
            value: b"inode 12".to_vec(),
        },
    }
}

fn encoded<M: WireMessage>(msg: &M) -> AlignedVec {
    let mut buf = AlignedVec::new();
    encode_frame(msg, &mut buf).expect("encodes");
    buf
}

/// A frame with a hand-made header over `body` (checksums computed unless overridden).
fn raw_frame(kind_code: u16, version: u16, flags: u32, body: &[u8]) -> AlignedVec {
    let header = FrameHeader {
        version,
        kind_code,
        body_len: u32::try_from(body.len()).expect("test body under 4 GiB"),
        body_crc: crc32c::crc32c(body),
        flags,
    };
    let mut bytes = [0u8; HEADER_LEN];
    header.write(&mut bytes);
    let mut buf = AlignedVec::new();
    buf.extend_from_slice(&bytes);
    buf.extend_from_slice(body);
    buf
}

fn decode(buf: &[u8]) -> Result<Decoded, FrameError> {
    FrameDecoder::new(MAX).decode(buf)
}

#[test]
fn whole_frame_decodes_and_validates() {
    let request = sample_request();
    let buf = encoded(&request);
    let Decoded::Frame(frame) = decode(&buf).unwrap() else {
        panic!("incomplete")
    };
    assert_eq!(frame.kind, FrameKind::ClientRequest);
    assert_eq!(frame.body, HEADER_LEN..buf.len());
    assert_eq!(
        decode_body::<ClientRequest>(frame.body(&buf)).unwrap(),
        request
    );
}

#[test]
fn incomplete_reports_exact_remainder_byte_by_byte() {
    let buf = encoded(&sample_request());
    for len in 0..buf.len() {
        let needed = match decode(&buf[..len]) {
            Ok(Decoded::Incomplete { needed }) => needed,
            other => panic!("prefix of {len} bytes gave {other:?}"),
        };
        if len < HEADER_LEN {
            assert_eq!(needed, HEADER_LEN - len);
        } else {
            assert_eq!(needed, buf.len() - len);
        }
    }
}

#[test]
fn trailing_bytes_of_the_next_frame_are_left_alone() {
    let mut buf = encoded(&sample_request());
    let first_len = buf.len();
    buf.extend_from_slice(&MAGIC.to_le_bytes());
    let Decoded::Frame(frame) = decode(&buf).unwrap() else {
        panic!("incomplete")
    };
    assert_eq!(frame.consumed, first_len);
    assert_eq!(
        decode(&buf[first_len..]).unwrap(),
        Decoded::Incomplete {
            needed: HEADER_LEN - 4
        }
    );
}

#[test]
fn bad_magic_is_refused_even_before_a_whole_header() {
    let mut buf = encoded(&sample_request());
    buf[0] ^= 0xff;
    assert!(matches!(decode(&buf), Err(FrameError::BadMagic { .. })));
    assert!(matches!(
        decode(&buf[..2]),
        Err(FrameError::BadMagic { .. })
    ));
    // An HTTP client connecting to a shard port.
    assert!(matches!(
        decode(b"GET / HTTP/1.1\r\n"),
        Err(FrameError::BadMagic { .. })
    ));
}

#[test]
fn every_flipped_header_bit_is_caught() {
    let clean = encoded(&sample_request());
    for bit in 0..HEADER_LEN * 8 {
        let mut buf = clean.clone();
        buf[bit / 8] ^= 1 << (bit % 8);
        match decode(&buf) {
            Err(FrameError::BadMagic { .. }) => assert!(bit < 32, "bit {bit}: magic error"),
            Err(FrameError::HeaderChecksum { expected, actual }) => {
                assert!(bit >= 32, "bit {bit}: magic bits must fail as BadMagic");
                assert_ne!(expected, actual);
            }
            other => panic!("flipped header bit {bit} gave {other:?}"),
        }
    }
}

#[test]
fn every_flipped_body_bit_is_caught_by_the_checksum() {
    let clean = encoded(&sample_request());
    for bit in HEADER_LEN * 8..clean.len() * 8 {
        let mut buf = clean.clone();
        buf[bit / 8] ^= 1 << (bit % 8);
        match decode(&buf) {
            Err(FrameError::Checksum { expected, actual }) => assert_ne!(expected, actual),
            other => panic!("flipped body bit {bit} gave {other:?}"),
        }
    }
}

#[test]
fn unsupported_version_and_flags_are_refused() {
    let body = encoded(&sample_request())[HEADER_LEN..].to_vec();
    let code = FrameKind::ClientRequest.code();
    let buf = raw_frame(code, PROTOCOL_VERSION + 1, 0, &body);
    assert_eq!(
        decode(&buf),
        Err(FrameError::UnsupportedVersion {
            got: PROTOCOL_VERSION + 1
        })
    );
    let buf = raw_frame(code, PROTOCOL_VERSION, 0b100, &body);
    assert_eq!(
        decode(&buf),
        Err(FrameError::UnsupportedFlags { flags: 0b100 })
    );
}

#[test]
fn oversize_length_is_refused_from_the_header_alone() {
    // Only the 24 header bytes exist: the decoder must refuse the frame
    // without asking for (or the caller reserving) the announced 4 GiB.
    let header = FrameHeader {
        version: PROTOCOL_VERSION,
        kind_code: FrameKind::RaftBatch.code(),
        body_len: u32::MAX - 7,
        body_crc: 0,
        flags: 0,
    };
    let mut bytes = [0u8; HEADER_LEN];
    header.write(&mut bytes);
    assert_eq!(
        decode(&bytes),
        Err(FrameError::TooLarge {
            len: u64::from(u32::MAX - 7),
            max: MAX
        })
    );
    // Exactly at the limit is fine (and then needs the body).
    let buf = encoded(&sample_request());
    let body_len = (buf.len() - HEADER_LEN) as u64;
    let mut at_limit = FrameDecoder::new(body_len);
    assert!(matches!(at_limit.decode(&buf), Ok(Decoded::Frame(_))));
    let mut below = FrameDecoder::new(body_len - 1);
    assert_eq!(
        below.decode(&buf),
        Err(FrameError::TooLarge {
            len: body_len,
            max: body_len - 1
        })
    );
}

#[test]
fn unaligned_body_length_is_refused() {
    let buf = raw_frame(
        FrameKind::ClientRequest.code(),
        PROTOCOL_VERSION,
        0,
        &[0u8; 12],
    );
    assert_eq!(decode(&buf), Err(FrameError::UnalignedLength { len: 12 }));
}

#[test]
fn unknown_kind_is_refused() {
    let body = encoded(&sample_request())[HEADER_LEN..].to_vec();
    for code in [0u16, 8, 0x7fff, u16::MAX] {
        let buf = raw_frame(code, PROTOCOL_VERSION, 0, &body);
        assert_eq!(decode(&buf), Err(FrameError::UnknownKind { code }));
    }
    for kind in FrameKind::ALL {
        assert_eq!(FrameKind::from_code(kind.code()), Some(kind));
    }
}

#[test]
fn garbage_with_a_valid_checksum_fails_bytecheck() {
    // Random bytes, a body of the right shape (aligned length) and checksum.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut garbage = vec![0u8; 256];
    for b in garbage.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state as u8;
    }
    for kind in FrameKind::ALL {
        let buf = raw_frame(kind.code(), PROTOCOL_VERSION, 0, &garbage);
        let Decoded::Frame(frame) = decode(&buf).unwrap() else {
            panic!("incomplete")
        };
        let refused = match kind {
            FrameKind::Handshake => frame.access::<Handshake>(&buf).map(drop),
            FrameKind::HandshakeReply => frame.access::<HandshakeReply>(&buf).map(drop),
            FrameKind::RaftBatch => frame.access::<RaftBatch>(&buf).map(drop),
            FrameKind::ClientRequest => frame.access::<ClientRequest>(&buf).map(drop),
            FrameKind::ClientResponse => frame.access::<ClientResponse>(&buf).map(drop),
            FrameKind::AdminRequest => frame.access::<AdminRequest>(&buf).map(drop),
            FrameKind::AdminResponse => frame.access::<AdminResponse>(&buf).map(drop),
        };
        assert!(
            matches!(refused, Err(FrameError::InvalidArchive { kind: k, .. }) if k == kind),
            "{kind:?}: {refused:?}"
        );
    }
}

#[test]
fn out_of_range_relative_pointer_fails_bytecheck() {
    // A real RaftBatch whose `messages` vector pointer is bent to point outside
    // the body; the checksum is recomputed so only bytecheck stands guard.
    let batch = RaftBatch {
        from: NodeId(1),
        to: NodeId(2),
        to_shard: ShardId(0),
        messages: vec![RaftMessage {
            group: GroupId(5),
            term: Term(1),
            body: RaftBody::TimeoutNow,
        }],
        heartbeats: vec![],
        heartbeat_responses: vec![],
        commits: vec![],
    };
    let clean = encoded(&batch);
    let body = &clean[HEADER_LEN..];
    let mut rejected = 0;
    // Corrupt each 4-byte word in turn; every variant must either still be
    // valid or be refused by bytecheck, never panic or read out of bounds.
    for word in 0..body.len() / 4 {
        let mut bad = body.to_vec();
        bad[word * 4..word * 4 + 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        let buf = raw_frame(FrameKind::RaftBatch.code(), PROTOCOL_VERSION, 0, &bad);
        let Decoded::Frame(frame) = decode(&buf).unwrap() else {
            panic!("incomplete")
        };
        if let Err(e) = frame.access::<RaftBatch>(&buf) {
            assert!(matches!(
                e,
                FrameError::InvalidArchive {
                    kind: FrameKind::RaftBatch,
                    ..
                }
            ));
            rejected += 1;
        }
    }
    assert!(rejected > 0, "no corrupted word was refused by bytecheck");
}

#[test]
fn access_as_the_wrong_type_is_a_kind_mismatch() {
    let buf = encoded(&sample_request());
    let Decoded::Frame(frame) = decode(&buf).unwrap() else {
        panic!("incomplete")
    };
    assert_eq!(
        frame.access::<RaftBatch>(&buf).map(drop),
        Err(FrameError::KindMismatch {
            expected: FrameKind::RaftBatch,
            got: FrameKind::ClientRequest
        })
    );
}

#[test]
fn misaligned_body_is_refused_not_misread() {
    let buf = encoded(&sample_request());
    let mut shifted: AlignedVec = AlignedVec::new();
    shifted.push(0);
    shifted.extend_from_slice(&buf[HEADER_LEN..]);
    let result = access_body::<ClientRequest>(&shifted[1..]).map(drop);
    assert!(
        matches!(result, Err(FrameError::InvalidArchive { .. })),
        "{result:?}"
    );
}

#[test]
fn encoder_limit_refuses_and_leaves_the_buffer_unchanged() {
    let mut buf = encoded(&sample_request());
    let before = buf.to_vec();
    let big = ClientRequest {
        op: Operation::Put {
            key: b"k".to_vec(),
            value: vec![7; 4096],
        },
        ..sample_request()
    };
    let err = encode_frame_limited(&big, 1024, &mut buf).unwrap_err();
    assert!(
        matches!(err, EncodeError::TooLarge { max: 1024, len } if len > 4096),
        "{err:?}"
    );
    assert_eq!(buf.as_slice(), before.as_slice());
    // The buffer still holds exactly one valid frame.
    let Decoded::Frame(frame) = decode(&buf).unwrap() else {
        panic!("incomplete")
    };
    assert_eq!(frame.consumed, buf.len());
}

#[test]
fn frames_are_multiples_of_the_body_alignment() {
    let mut buf = AlignedVec::new();
    encode_frame(&sample_request(), &mut buf).unwrap();
    encode_frame(
        &Handshake::from_node(ClusterId(3), NodeId(1), ShardId(0), ShardId(2)),
        &mut buf,
    )
    .unwrap();
    encode_frame(
        &HandshakeReply::Refused(HandshakeRefusal::ShuttingDown),
        &mut buf,
    )
    .unwrap();
    let mut decoder = FrameDecoder::new(MAX);
    let mut at = 0;
    let mut kinds = vec![];
    while at < buf.len() {
        assert_eq!(at % BODY_ALIGN, 0);
        let Decoded::Frame(frame) = decoder.decode(&buf[at..]).unwrap() else {
            panic!()
        };
        kinds.push(frame.kind);
        at += frame.consumed;
    }
    assert_eq!(
        kinds,
        [
            FrameKind::ClientRequest,
            FrameKind::Handshake,
            FrameKind::HandshakeReply
        ]
    );
}

#[test]
fn errors_tell_the_operator_what_to_do() {
    let text = FrameError::TooLarge { len: 10, max: 5 }.to_string();
    assert!(text.contains("10") && text.contains('5') && text.contains("max_frame_bytes"));
    let text = FrameError::UnsupportedVersion { got: 9 }.to_string();
    assert!(text.contains('9') && text.contains("upgrade"));
}
