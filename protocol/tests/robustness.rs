//! Decoding hostile bytes: always Ok or Err, never a panic, never an absurd allocation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use rookery_protocol::*;
use tokio_util::codec::Decoder;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// Bytes biased towards what trips decoders: lengths of -1, 0, huge and negative, booleans.
fn nasty_bytes() -> impl Strategy<Value = Vec<u8>> {
    let word = prop_oneof![
        Just(vec![0xff, 0xff, 0xff, 0xff]),
        Just(vec![0x7f, 0xff, 0xff, 0xff]),
        Just(vec![0x80, 0, 0, 0]),
        Just(vec![0, 0, 0, 0]),
        Just(vec![0, 0, 0, 1]),
        Just(vec![0, 0, 0, 4]),
        Just(vec![0xff, 0xff, 0xff, 0xfe]),
        Just(vec![1]),
        Just(vec![0]),
        bytes(6),
    ];
    prop::collection::vec(word, 0..24).prop_map(|ws| ws.concat())
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![bytes(96), nasty_bytes()]
}

/// A request packet with a valid header for `op`, followed by `body`.
fn with_header(op: i32, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    RequestHeader {
        xid: 1,
        op_type: op,
    }
    .write(&mut out);
    out.put_slice(body);
    out.to_vec()
}

macro_rules! record_from_garbage {
    ($strategy:ident, $ty:ident) => {
        proptest! {
            #[test]
            fn $strategy(input in any_input()) {
                let _ = <$ty as Record>::from_bytes(&input);
            }
        }
    };
}

mod records {
    use super::*;
    for_each_record!(record_from_garbage);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn request_packets_from_garbage(input in any_input()) {
        let _ = Request::decode_packet(&input);
    }

    #[test]
    fn request_bodies_from_garbage(op in prop::sample::select(OpCode::ALL.to_vec()), body in any_input()) {
        let _ = Request::decode_packet(&with_header(op.wire(), &body));
    }

    /// Multi bodies made of valid-looking MultiHeaders with garbage between them.
    #[test]
    fn multi_bodies_from_garbage(
        parts in prop::collection::vec((prop::sample::select(OpCode::ALL.to_vec()), any::<bool>(), bytes(24)), 0..8),
        read in any::<bool>(),
    ) {
        let mut body = BytesMut::new();
        for (op, done, tail) in &parts {
            MultiHeader { op_type: op.wire(), done: *done, err: -1 }.write(&mut body);
            body.put_slice(tail);
        }
        let op = if read { OpCode::MultiRead } else { OpCode::Multi };
        let _ = Request::decode_packet(&with_header(op.wire(), &body));
        let _ = Response::read(op, &mut Reader::new(&body));
    }

    #[test]
    fn responses_from_garbage(op in prop::sample::select(OpCode::ALL.to_vec()), input in any_input()) {
        let mut reader = Reader::new(&input);
        let _ = Response::read(op, &mut reader);
    }

    /// Truncating or flipping a byte of a valid request gives Ok or Err, never a panic.
    #[test]
    fn mutated_valid_requests(req in common::request(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
        let mut out = BytesMut::new();
        req.encode_packet(5, &mut out);
        let _ = Request::decode_packet(&out[..cut.index(out.len() + 1)]);
        let i = flip.0.index(out.len());
        out[i] ^= flip.1;
        let _ = Request::decode_packet(&out);
    }

    /// Any chunking of any byte stream: the server codec returns frames or an error.
    #[test]
    fn server_codec_from_garbage(input in any_input(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        for mut codec in [FrameCodec::server(DEFAULT_MAX_FRAME), FrameCodec::server(16), FrameCodec::client(64)] {
            let _ = feed(&mut codec, &input, &cuts);
        }
    }

    /// A stream of valid frames decodes to the same packets however it is split.
    #[test]
    fn server_codec_any_chunking(
        packets in prop::collection::vec(bytes(40), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut stream = BytesMut::new();
        for p in &packets {
            write_frame(&mut stream, |out| out.put_slice(p));
        }
        let frames = feed(&mut FrameCodec::server(DEFAULT_MAX_FRAME), &stream, &cuts)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let expect: Vec<Frame> = packets.iter().map(|p| Frame::Packet(BytesMut::from(&p[..]))).collect();
        prop_assert_eq!(frames, expect);
    }
}

/// Feeds `input` to `codec` in chunks split at `cuts`, decoding after every chunk and at EOF.
fn feed(
    codec: &mut FrameCodec,
    input: &[u8],
    cuts: &[prop::sample::Index],
) -> std::io::Result<Vec<Frame>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut start = 0;
    for end in points {
        buf.extend_from_slice(&input[start..end]);
        start = end;
        while let Some(frame) = codec.decode(&mut buf)? {
            frames.push(frame);
        }
    }
    while let Some(frame) = codec.decode_eof(&mut buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

/// A length prefix of 2^31-1 (and other huge ones) with a few bytes behind it is a prompt error,
/// for every length-prefixed shape.
#[test]
fn huge_length_prefixes_are_quick_errors() {
    let started = std::time::Instant::now();
    for len in [i32::MAX, i32::MAX - 1, 1 << 30, 0x00ff_ffff, 1000] {
        let mut input = BytesMut::new();
        input.put_i32(len);
        input.put_slice(b"abc");
        let input = &input[..];
        assert!(String::from_bytes(input).is_err());
        assert!(Vec::<u8>::from_bytes(input).is_err());
        assert!(Vec::<String>::from_bytes(input).is_err());
        assert!(Vec::<Acl>::from_bytes(input).is_err());
        assert!(Vec::<Vec<u8>>::from_bytes(input).is_err());
        assert!(GetChildrenResponse::from_bytes(input).is_err());
        assert!(WhoAmIResponse::from_bytes(input).is_err());
        assert_eq!(
            Vec::<i64>::from_bytes(input),
            Err(DecodeError::InvalidLength(len))
        );
        // Inside a request: SetWatches2 with a huge first vector.
        let mut packet = BytesMut::new();
        RequestHeader {
            xid: -8,
            op_type: OpCode::SetWatches2.wire(),
        }
        .write(&mut packet);
        packet.put_i64(0);
        packet.put_i32(len);
        packet.put_slice(b"/x");
        assert!(Request::decode_packet(&packet).is_err());
        // A frame length: rejected from the 4-byte header alone.
        let mut frame = BytesMut::new();
        frame.put_i32(len);
        frame.put_slice(b"abc");
        let mut codec = FrameCodec::client(DEFAULT_MAX_FRAME);
        let result = codec.decode(&mut frame);
        if len as usize > DEFAULT_MAX_FRAME {
            assert!(result.is_err(), "{len}");
        } else {
            assert!(matches!(result, Ok(None)), "{len}");
        }
    }
    // Negative lengths other than -1 (null) are errors; -1 is an empty value.
    for len in [-2, i32::MIN] {
        let input = len.to_be_bytes();
        assert_eq!(
            String::from_bytes(&input),
            Err(DecodeError::InvalidLength(len))
        );
        assert_eq!(
            Vec::<String>::from_bytes(&input),
            Err(DecodeError::InvalidLength(len))
        );
    }
    let null = (-1i32).to_be_bytes();
    assert_eq!(String::from_bytes(&null), Ok(String::new()));
    assert_eq!(Vec::<u8>::from_bytes(&null), Ok(Vec::new()));
    assert_eq!(Vec::<String>::from_bytes(&null), Ok(Vec::new()));
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn invalid_utf8_and_trailing_bytes_are_errors() {
    assert_eq!(
        String::from_bytes(&[0, 0, 0, 2, 0xc3, 0x28]),
        Err(DecodeError::InvalidUtf8)
    );
    assert_eq!(
        SyncRequest::from_bytes(&[0, 0, 0, 1, b'/', 9]),
        Err(DecodeError::TrailingBytes(1))
    );
    assert_eq!(
        ConnectRequest::from_bytes(&[0; 30]),
        Err(DecodeError::TrailingBytes(1)),
        "44-byte layout with an empty passwd plus readOnly plus one stray byte"
    );
}
