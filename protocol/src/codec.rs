//! Framing: a 4-byte big-endian length, then the packet. On the server side the first four
//! bytes of a connection may instead be a four-letter word such as `ruok`.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::fourlw::FourLetterWord;

/// jute.maxbuffer's default: 0xfffff bytes.
pub const DEFAULT_MAX_FRAME: usize = 0xfffff;

/// What arrives on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A four-letter word, recognised only as the first thing a connection sends.
    FourLetterWord(FourLetterWord),
    /// One length-framed packet, without its length prefix.
    Packet(BytesMut),
}

/// Length-framed packets with a maximum size, like `jute.maxbuffer`.
#[derive(Debug)]
pub struct FrameCodec {
    /// Does the length framing and enforces the maximum frame size.
    inner: LengthDelimitedCodec,
    /// True until the first frame is decoded, while a four-letter word is still possible.
    sniff_four_letter_words: bool,
}

impl FrameCodec {
    /// A server-side codec: recognises four-letter words at the start of the connection.
    pub fn server(max_frame: usize) -> Self {
        FrameCodec {
            inner: Self::length_codec(max_frame),
            sniff_four_letter_words: true,
        }
    }

    /// A client-side codec: every frame is a packet.
    pub fn client(max_frame: usize) -> Self {
        FrameCodec {
            inner: Self::length_codec(max_frame),
            sniff_four_letter_words: false,
        }
    }

    fn length_codec(max_frame: usize) -> LengthDelimitedCodec {
        LengthDelimitedCodec::builder()
            .length_field_length(4)
            .big_endian()
            .max_frame_length(max_frame)
            .new_codec()
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        if self.sniff_four_letter_words {
            if src.len() < 4 {
                return Ok(None);
            }
            self.sniff_four_letter_words = false;
            let word = [src[0], src[1], src[2], src[3]];
            if let Some(word) = FourLetterWord::parse(&word) {
                src.advance(4);
                return Ok(Some(Frame::FourLetterWord(word)));
            }
        }
        Ok(self.inner.decode(src)?.map(Frame::Packet))
    }
}

/// Encodes one packet, given as the bytes after the length prefix.
impl Encoder<&[u8]> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, packet: &[u8], dst: &mut BytesMut) -> Result<(), Self::Error> {
        dst.reserve(4 + packet.len());
        dst.put_u32(packet.len() as u32);
        dst.put_slice(packet);
        Ok(())
    }
}

/// Appends a frame by letting `fill` write the packet in place, then patching the length:
/// saves a copy on the hot path.
pub fn write_frame(dst: &mut BytesMut, fill: impl FnOnce(&mut BytesMut)) {
    let start = dst.len();
    dst.put_u32(0);
    fill(dst);
    let len = (dst.len() - start - 4) as u32;
    dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
}
