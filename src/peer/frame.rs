//! The peer wire format: `u32 len | u8 kind | payload | u32 crc32`, big-endian.
//!
//! `len` counts the kind byte plus the payload (not itself, not the crc); the crc32
//! (IEEE, `crc32fast`) covers the four `len` bytes, the kind and the payload, so a flipped
//! length is caught as surely as a flipped payload byte. A frame longer than the cap for its
//! kind is refused from its header alone, before anything is buffered: a confused or hostile
//! peer cannot make us allocate more than the cap.
//!
//! Every decoder here checks lengths against the bytes actually present before it allocates
//! or slices, and never panics on any input (a proptest checks it).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use protobuf::Message as _;

use crate::raft::Message;

/// First bytes of every handshake: says "this is a rookery peer", and its generation.
pub const MAGIC: [u8; 8] = *b"RKYPEER1";
/// Version of the peer protocol carried in the handshake; a peer speaking another is refused.
pub const VERSION: u16 = 1;
/// Bytes before the payload: `len` (4) and `kind` (1).
pub const HEADER_LEN: usize = 5;
/// Bytes after the payload: the crc32.
pub const TRAILER_LEN: usize = 4;

/// What a frame carries. The numbers are on the wire: never reuse or renumber one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Dialer → acceptor, first frame: [`Hello`].
    Hello = 1,
    /// Acceptor → dialer, the only frame it ever sends: [`HelloReply`].
    HelloReply = 2,
    /// `u32 count | (u32 len | protobuf eraftpb::Message)*`: Raft messages in send order.
    RaftBatch = 3,
    /// One MsgSnapshot (`protobuf eraftpb::Message`) in a frame of its own, under the snapshot
    /// cap: only when the network streams no snapshot files (see `PeerNetwork::serve_snapshots`),
    /// so the message carries the whole image.
    RaftSnapshot = 4,
    /// `u32 count | (i64 session | u32 timeout_ms)*`: sessions a follower saw alive, for the
    /// leader's expiry tracker (global sessions, design §4.4).
    Touch = 5,
    /// Reserved: an application request to the leader (revalidate, reconfig; design §4.9).
    AppRequest = 6,
    /// Reserved: the answer to an [`FrameKind::AppRequest`].
    AppReply = 7,
    /// First frame of a snapshot connection (instead of [`FrameKind::Hello`]):
    /// [`SnapHeader`], the handshake plus what is coming. The acceptor answers with a
    /// [`HelloReply`], and again after [`FrameKind::SnapDone`].
    SnapHeader = 8,
    /// `u64 offset | bytes`: the next piece of the snapshot file.
    SnapChunk = 9,
    /// `u64 file_len | u32 crc32 of the whole file`: the file is complete.
    SnapDone = 10,
}

impl FrameKind {
    /// The kind for a wire byte, if it is one we know.
    pub fn from_u8(b: u8) -> Option<FrameKind> {
        use FrameKind::*;
        Some(match b {
            1 => Hello,
            2 => HelloReply,
            3 => RaftBatch,
            4 => RaftSnapshot,
            5 => Touch,
            6 => AppRequest,
            7 => AppReply,
            8 => SnapHeader,
            9 => SnapChunk,
            10 => SnapDone,
            _ => return None,
        })
    }
}

/// Why bytes from a peer could not be decoded. Any of these closes the connection: after a
/// framing error nothing later on the stream can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announces more than the cap for that kind.
    #[error("frame of {len} bytes exceeds the {max}-byte cap")]
    Oversized {
        /// Announced length (kind + payload).
        len: usize,
        /// The cap that applied.
        max: usize,
    },
    /// A length of zero: there is not even a kind byte.
    #[error("empty frame")]
    Empty,
    /// The crc32 does not match: corrupted in transit or not our protocol.
    #[error("frame crc mismatch (computed {computed:08x}, received {received:08x})")]
    BadCrc {
        /// Over the bytes received.
        computed: u32,
        /// As sent.
        received: u32,
    },
    /// A kind byte no version of this protocol defines.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The payload does not match its kind's layout.
    #[error("malformed {kind:?} payload: {reason}")]
    Malformed {
        /// The frame's kind.
        kind: FrameKind,
        /// What is wrong.
        reason: String,
    },
}

/// One frame, checked but not yet interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// What the payload holds.
    pub kind: FrameKind,
    /// The payload (without kind and crc).
    pub payload: Bytes,
}

/// Size caps for decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCaps {
    /// Largest `len` for every kind but [`FrameKind::RaftSnapshot`].
    pub max_frame: usize,
    /// Largest `len` for a [`FrameKind::RaftSnapshot`] frame.
    pub max_snapshot_frame: usize,
}

/// Appends one frame to `out`. Fails only if the payload cannot be described by a `u32`.
pub fn encode_frame(kind: FrameKind, payload: &[u8], out: &mut BytesMut) -> Result<(), FrameError> {
    let len = payload.len() + 1;
    let len32 = u32::try_from(len).map_err(|_| FrameError::Oversized {
        len,
        max: u32::MAX as usize,
    })?;
    out.reserve(HEADER_LEN + payload.len() + TRAILER_LEN);
    let start = out.len();
    out.put_u32(len32);
    out.put_u8(kind as u8);
    out.put_slice(payload);
    let crc = crc32fast::hash(&out[start..]);
    out.put_u32(crc);
    Ok(())
}

/// Takes one complete frame off the front of `buf`: `Ok(None)` while more bytes are needed.
/// On error the stream is unusable; the caller closes it.
pub fn decode_frame(buf: &mut BytesMut, caps: FrameCaps) -> Result<Option<RawFrame>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let kind_byte = buf[4];
    let kind = FrameKind::from_u8(kind_byte).ok_or(FrameError::UnknownKind(kind_byte))?;
    let max = if kind == FrameKind::RaftSnapshot {
        caps.max_snapshot_frame
    } else {
        caps.max_frame
    };
    if len > max {
        return Err(FrameError::Oversized { len, max });
    }
    let total = 4 + len + TRAILER_LEN;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let computed = crc32fast::hash(&buf[..4 + len]);
    let t = 4 + len;
    let received = u32::from_be_bytes([buf[t], buf[t + 1], buf[t + 2], buf[t + 3]]);
    if computed != received {
        return Err(FrameError::BadCrc { computed, received });
    }
    let mut frame = buf.split_to(total);
    frame.advance(HEADER_LEN);
    frame.truncate(len - 1);
    Ok(Some(RawFrame {
        kind,
        payload: frame.freeze(),
    }))
}

/// A bounds-checked reader over a payload.
struct Reader<'a> {
    /// What is left to read.
    rest: &'a [u8],
    /// For error messages.
    kind: FrameKind,
}

impl<'a> Reader<'a> {
    fn new(kind: FrameKind, rest: &'a [u8]) -> Self {
        Reader { rest, kind }
    }

    fn err(&self, reason: impl Into<String>) -> FrameError {
        FrameError::Malformed {
            kind: self.kind,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(self.err(format!("needs {n} more bytes, has {}", self.rest.len())));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A count of items of at least `min_item` bytes each, checked against what is left so a
    /// huge count cannot make the caller allocate.
    fn count(&mut self, min_item: usize) -> Result<usize, FrameError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.rest.len() {
            return Err(self.err(format!(
                "count {n} does not fit in {} bytes",
                self.rest.len()
            )));
        }
        Ok(n)
    }

    fn finish(&self) -> Result<(), FrameError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.err(format!("{} trailing bytes", self.rest.len())))
        }
    }
}

/// The dialer's introduction: who it is, whom it wants, and which cluster it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Peer protocol version ([`VERSION`]).
    pub version: u16,
    /// The dialer's [`crate::config::cluster_id`]; must equal the acceptor's.
    pub cluster_id: u64,
    /// The dialer's server id; must be a known member other than the acceptor.
    pub from: u64,
    /// The server id the dialer believes it reached; must be the acceptor's.
    pub to: u64,
}

impl Hello {
    /// `MAGIC | u16 version | u64 cluster_id | u64 from | u64 to`.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(34);
        v.extend_from_slice(&MAGIC);
        v.extend_from_slice(&self.version.to_be_bytes());
        v.extend_from_slice(&self.cluster_id.to_be_bytes());
        v.extend_from_slice(&self.from.to_be_bytes());
        v.extend_from_slice(&self.to.to_be_bytes());
        v
    }

    /// Decodes and checks the magic (the version is checked by the acceptor, which can then
    /// say which one it speaks).
    pub fn decode(payload: &[u8]) -> Result<Hello, FrameError> {
        let mut r = Reader::new(FrameKind::Hello, payload);
        if r.array::<8>()? != MAGIC {
            return Err(r.err("bad magic: not a rookery peer"));
        }
        let hello = Hello {
            version: r.u16()?,
            cluster_id: r.u64()?,
            from: r.u64()?,
            to: r.u64()?,
        };
        r.finish()?;
        Ok(hello)
    }
}

/// The acceptor's verdict on a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloReply {
    /// Go ahead: frames from now on are delivered.
    Accepted,
    /// Refused, with the reason (also logged by the acceptor); the connection closes.
    Refused(String),
}

impl HelloReply {
    /// `u8 accepted | utf-8 reason`.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            HelloReply::Accepted => vec![1],
            HelloReply::Refused(reason) => {
                let mut v = vec![0];
                v.extend_from_slice(reason.as_bytes());
                v
            }
        }
    }

    /// Inverse of [`HelloReply::encode`]; a non-UTF-8 reason is replaced lossily.
    pub fn decode(payload: &[u8]) -> Result<HelloReply, FrameError> {
        let mut r = Reader::new(FrameKind::HelloReply, payload);
        match r.u8()? {
            1 => {
                r.finish()?;
                Ok(HelloReply::Accepted)
            }
            0 => Ok(HelloReply::Refused(
                String::from_utf8_lossy(r.rest).into_owned(),
            )),
            other => Err(r.err(format!("bad verdict {other}"))),
        }
    }
}

/// Encodes Raft messages as a [`FrameKind::RaftBatch`] payload.
pub fn encode_raft_batch(msgs: &[Message]) -> Result<Vec<u8>, protobuf::ProtobufError> {
    let mut v = Vec::new();
    v.extend_from_slice(&(msgs.len() as u32).to_be_bytes());
    for m in msgs {
        let bytes = m.write_to_bytes()?;
        v.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        v.extend_from_slice(&bytes);
    }
    Ok(v)
}

fn parse_message(kind: FrameKind, bytes: &[u8]) -> Result<Message, FrameError> {
    Message::parse_from_bytes(bytes).map_err(|e| FrameError::Malformed {
        kind,
        reason: format!("bad raft message: {e}"),
    })
}

/// Decodes a [`FrameKind::RaftBatch`] payload.
pub fn decode_raft_batch(payload: &[u8]) -> Result<Vec<Message>, FrameError> {
    let kind = FrameKind::RaftBatch;
    let mut r = Reader::new(kind, payload);
    let n = r.count(4)?;
    let mut msgs = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.u32()? as usize;
        msgs.push(parse_message(kind, r.take(len)?)?);
    }
    r.finish()?;
    Ok(msgs)
}

/// Encodes one message (a MsgSnapshot) as a [`FrameKind::RaftSnapshot`] payload.
pub fn encode_raft_snapshot(msg: &Message) -> Result<Vec<u8>, protobuf::ProtobufError> {
    msg.write_to_bytes()
}

/// Decodes a [`FrameKind::RaftSnapshot`] payload.
pub fn decode_raft_snapshot(payload: &[u8]) -> Result<Message, FrameError> {
    parse_message(FrameKind::RaftSnapshot, payload)
}

/// What opens a snapshot connection: the handshake, the file descriptor
/// (`storage::SnapshotRef` bytes) and the MsgSnapshot the follower steps once the file is
/// durable.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapHeader {
    /// The same introduction as on a message connection.
    pub hello: Hello,
    /// The encoded `SnapshotRef` of the file that follows.
    pub snapshot_ref: Vec<u8>,
    /// The MsgSnapshot (its data is `snapshot_ref` too).
    pub msg: Message,
}

impl SnapHeader {
    /// `u32 len | Hello | u32 len | snapshot_ref | protobuf MsgSnapshot`.
    pub fn encode(&self) -> Result<Vec<u8>, protobuf::ProtobufError> {
        let hello = self.hello.encode();
        let msg = self.msg.write_to_bytes()?;
        let mut v = Vec::with_capacity(8 + hello.len() + self.snapshot_ref.len() + msg.len());
        v.extend_from_slice(&(hello.len() as u32).to_be_bytes());
        v.extend_from_slice(&hello);
        v.extend_from_slice(&(self.snapshot_ref.len() as u32).to_be_bytes());
        v.extend_from_slice(&self.snapshot_ref);
        v.extend_from_slice(&msg);
        Ok(v)
    }

    /// Inverse of [`SnapHeader::encode`].
    pub fn decode(payload: &[u8]) -> Result<SnapHeader, FrameError> {
        let kind = FrameKind::SnapHeader;
        let mut r = Reader::new(kind, payload);
        let n = r.u32()? as usize;
        let hello = Hello::decode(r.take(n)?)?;
        let n = r.u32()? as usize;
        let snapshot_ref = r.take(n)?.to_vec();
        let msg = parse_message(kind, r.rest)?;
        Ok(SnapHeader {
            hello,
            snapshot_ref,
            msg,
        })
    }
}

/// A [`FrameKind::SnapChunk`] payload header (the data follows it).
pub fn encode_snap_chunk_header(offset: u64) -> [u8; 8] {
    offset.to_be_bytes()
}

/// Splits a [`FrameKind::SnapChunk`] payload into offset and data.
pub fn decode_snap_chunk(payload: &Bytes) -> Result<(u64, Bytes), FrameError> {
    if payload.len() < 8 {
        return Err(FrameError::Malformed {
            kind: FrameKind::SnapChunk,
            reason: "shorter than its offset".into(),
        });
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&payload[..8]);
    Ok((u64::from_be_bytes(offset), payload.slice(8..)))
}

/// A [`FrameKind::SnapDone`] payload.
pub fn encode_snap_done(file_len: u64, file_crc: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(&file_len.to_be_bytes());
    v.extend_from_slice(&file_crc.to_be_bytes());
    v
}

/// Decodes a [`FrameKind::SnapDone`] payload: (file length, crc32 of the file).
pub fn decode_snap_done(payload: &[u8]) -> Result<(u64, u32), FrameError> {
    let mut r = Reader::new(FrameKind::SnapDone, payload);
    let len = r.u64()?;
    let crc = r.u32()?;
    r.finish()?;
    Ok((len, crc))
}

/// "Session `session_id` was alive here, with this timeout": a follower's report to the
/// leader, which owns expiry (ZooKeeper's touchTable, sent with each ping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionTouch {
    /// The ZooKeeper session id.
    pub session_id: i64,
    /// The session's negotiated timeout in ms, so the leader also learns renegotiations.
    pub timeout_ms: u32,
}

/// Bytes per touch on the wire.
const TOUCH_LEN: usize = 12;

/// Encodes a [`FrameKind::Touch`] payload.
pub fn encode_touch(touches: &[SessionTouch]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + touches.len() * TOUCH_LEN);
    v.extend_from_slice(&(touches.len() as u32).to_be_bytes());
    for t in touches {
        v.extend_from_slice(&t.session_id.to_be_bytes());
        v.extend_from_slice(&t.timeout_ms.to_be_bytes());
    }
    v
}

/// Decodes a [`FrameKind::Touch`] payload.
pub fn decode_touch(payload: &[u8]) -> Result<Vec<SessionTouch>, FrameError> {
    let mut r = Reader::new(FrameKind::Touch, payload);
    let n = r.count(TOUCH_LEN)?;
    let mut touches = Vec::with_capacity(n);
    for _ in 0..n {
        touches.push(SessionTouch {
            session_id: r.u64()? as i64,
            timeout_ms: r.u32()?,
        });
    }
    r.finish()?;
    Ok(touches)
}
