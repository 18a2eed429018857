//! FrameCodec: length framing, maximum frame size, four-letter-word sniffing, write_frame.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use bytes::{BufMut, BytesMut};
use rookery_protocol::*;
use tokio_util::codec::{Decoder, Encoder};

fn framed(packets: &[&[u8]]) -> BytesMut {
    let mut out = BytesMut::new();
    for p in packets {
        out.put_u32(p.len() as u32);
        out.put_slice(p);
    }
    out
}

fn packet(bytes: &[u8]) -> Frame {
    Frame::Packet(BytesMut::from(bytes))
}

/// Decodes everything `buf` holds.
fn drain(codec: &mut FrameCodec, buf: &mut BytesMut) -> std::io::Result<Vec<Frame>> {
    let mut frames = Vec::new();
    while let Some(frame) = codec.decode(buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

#[test]
fn frame_split_across_reads() {
    let stream = framed(&[b"hello world", b"second"]);
    for split in 0..=stream.len() {
        let mut codec = FrameCodec::server(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::from(&stream[..split]);
        let mut frames = drain(&mut codec, &mut buf).unwrap();
        buf.extend_from_slice(&stream[split..]);
        frames.extend(drain(&mut codec, &mut buf).unwrap());
        assert_eq!(
            frames,
            vec![packet(b"hello world"), packet(b"second")],
            "split {split}"
        );
        assert!(buf.is_empty());
    }
}

#[test]
fn frame_fed_one_byte_at_a_time() {
    let stream = framed(&[b"abc", b"", b"defgh"]);
    let mut codec = FrameCodec::server(DEFAULT_MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for b in stream.iter() {
        buf.put_u8(*b);
        frames.extend(drain(&mut codec, &mut buf).unwrap());
    }
    assert_eq!(frames, vec![packet(b"abc"), packet(b""), packet(b"defgh")]);
}

#[test]
fn several_frames_in_one_read() {
    let mut buf = framed(&[b"one", b"two", b"three", b"four"]);
    let frames = drain(&mut FrameCodec::client(DEFAULT_MAX_FRAME), &mut buf).unwrap();
    assert_eq!(
        frames,
        vec![
            packet(b"one"),
            packet(b"two"),
            packet(b"three"),
            packet(b"four")
        ]
    );
    assert!(buf.is_empty());
}

#[test]
fn partial_frame_waits_then_errors_at_eof() {
    let mut buf = BytesMut::from(&framed(&[b"abcdef"])[..7]);
    let mut codec = FrameCodec::client(DEFAULT_MAX_FRAME);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(codec.decode_eof(&mut buf).is_err());
}

#[test]
fn frame_longer_than_max_is_an_error() {
    let max = 16;
    // Exactly max is fine.
    let mut buf = framed(&[&[7u8; 16]]);
    assert_eq!(
        FrameCodec::server(max).decode(&mut buf).unwrap(),
        Some(packet(&[7u8; 16]))
    );
    // One more is an error, as soon as the length prefix is in.
    let mut buf = BytesMut::new();
    buf.put_u32(17);
    assert!(FrameCodec::server(max).decode(&mut buf).is_err());
    let mut buf = BytesMut::new();
    buf.put_u32(17);
    assert!(FrameCodec::client(max).decode(&mut buf).is_err());
    // jute.maxbuffer default; a negative Java int is a huge u32.
    assert_eq!(DEFAULT_MAX_FRAME, 0xfffff);
    let mut buf = BytesMut::new();
    buf.put_i32(-1);
    assert!(FrameCodec::server(DEFAULT_MAX_FRAME)
        .decode(&mut buf)
        .is_err());
}

#[test]
fn every_four_letter_word_is_recognised_first() {
    assert_eq!(FourLetterWord::ALL.len(), 18);
    for word in FourLetterWord::ALL {
        let text = word.as_str();
        assert_eq!(FourLetterWord::parse(text.as_bytes()), Some(*word));
        assert_eq!(word.to_string(), text);
        let mut codec = FrameCodec::server(DEFAULT_MAX_FRAME);
        // Even when the word arrives in pieces.
        let mut buf = BytesMut::from(&text.as_bytes()[..2]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&text.as_bytes()[2..]);
        buf.extend_from_slice(b"\n");
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Frame::FourLetterWord(*word))
        );
        // Only the four bytes are consumed.
        assert_eq!(&buf[..], b"\n");
    }
}

#[test]
fn four_letter_words_only_as_the_first_four_bytes() {
    for word in FourLetterWord::ALL {
        // After a packet, the same bytes are a length prefix (0x72756f6b for "ruok"): too big.
        let mut codec = FrameCodec::server(DEFAULT_MAX_FRAME);
        let mut buf = framed(&[b"hi"]);
        buf.extend_from_slice(word.as_str().as_bytes());
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(packet(b"hi")));
        assert!(codec.decode(&mut buf).is_err(), "{word}");
        // After a four-letter word too.
        let mut codec = FrameCodec::server(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::from(&b"ruok"[..]);
        buf.extend_from_slice(word.as_str().as_bytes());
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Frame::FourLetterWord(FourLetterWord::Ruok))
        );
        assert!(codec.decode(&mut buf).is_err(), "{word}");
        // A client codec never sniffs.
        let mut buf = BytesMut::from(word.as_str().as_bytes());
        assert!(FrameCodec::client(DEFAULT_MAX_FRAME)
            .decode(&mut buf)
            .is_err());
    }
}

#[test]
fn unknown_or_uppercase_words_are_not_four_letter_words() {
    for text in [&b"RUOK"[..], b"ruoK", b"kill", b"abcd", b"lsnp"] {
        assert_eq!(FourLetterWord::parse(text), None);
        let mut buf = BytesMut::from(text);
        // Taken as a length prefix instead: far beyond jute.maxbuffer.
        assert!(FrameCodec::server(DEFAULT_MAX_FRAME)
            .decode(&mut buf)
            .is_err());
    }
    assert_eq!(FourLetterWord::parse(b"ruo"), None);
    assert_eq!(FourLetterWord::parse(b"ruokk"), None);
}

#[test]
fn handshake_is_not_mistaken_for_a_four_letter_word() {
    let connect = ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0,
        time_out: 30_000,
        session_id: 0,
        passwd: vec![0; 16],
        read_only: Some(false),
    };
    let body = connect.to_bytes();
    let mut buf = framed(&[&body]);
    assert_eq!(&buf[..4], &[0, 0, 0, 45]);
    let mut codec = FrameCodec::server(DEFAULT_MAX_FRAME);
    let frames = drain(&mut codec, &mut buf).unwrap();
    assert_eq!(frames, vec![packet(&body)]);
    // Even arriving one byte at a time (the sniffer waits for 4 bytes).
    let stream = framed(&[&body]);
    let mut codec = FrameCodec::server(DEFAULT_MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for b in stream.iter() {
        buf.put_u8(*b);
        frames.extend(drain(&mut codec, &mut buf).unwrap());
    }
    assert_eq!(frames, vec![packet(&body)]);
}

#[test]
fn write_frame_patches_the_length_in_place() {
    let mut out = BytesMut::from(&b"prefix"[..]);
    write_frame(&mut out, |buf| {
        RequestHeader {
            xid: 1,
            op_type: 11,
        }
        .write(buf);
    });
    write_frame(&mut out, |_| {});
    assert_eq!(
        &out[..],
        &[
            b'p', b'r', b'e', b'f', b'i', b'x', //
            0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 11, //
            0, 0, 0, 0,
        ][..]
    );
    let mut rest = BytesMut::from(&out[6..]);
    let frames = drain(&mut FrameCodec::client(DEFAULT_MAX_FRAME), &mut rest).unwrap();
    assert_eq!(
        frames,
        vec![packet(&[0, 0, 0, 1, 0, 0, 0, 11]), packet(b"")]
    );
}

#[test]
fn encoder_prefixes_the_length() {
    let mut codec = FrameCodec::client(DEFAULT_MAX_FRAME);
    let mut out = BytesMut::new();
    codec.encode(&b"abc"[..], &mut out).unwrap();
    codec.encode(&b""[..], &mut out).unwrap();
    assert_eq!(&out[..], &[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0][..]);
    let mut encoded_by_write_frame = BytesMut::new();
    write_frame(&mut encoded_by_write_frame, |b| b.put_slice(b"abc"));
    assert_eq!(&out[..7], &encoded_by_write_frame[..]);
}
