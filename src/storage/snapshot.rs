//! State-machine snapshot files.
//!
//! One file per snapshot, `snap-<index:020>.bin`, so a directory listing sorts by index and the
//! index is known without opening the file. Layout (all integers big-endian):
//!
//! ```text
//! off  len  field
//!   0    8  magic "RKYSNAP\0"
//!   8    4  format version (1)
//!  12    8  applied index the snapshot covers
//!  20    8  term of that index
//!  28    4  n = length of the ConfState (protobuf)
//!  32    n  ConfState (voters, learners, joint-config fields) at that index
//! 32+n   8  payload length
//! 40+n   4  crc32 of payload
//! 44+n   4  crc32 of bytes [0, 44+n) (the header itself)
//! 48+n   -  payload (StateMachine::snapshot bytes)
//! ```
//!
//! Files are written to `<name>.tmp`, fsync'd, renamed and the directory fsync'd, so a crash
//! leaves either no file or a complete one; a file that still fails its checksums (bit rot, a
//! torn copy) is renamed to `<name>.corrupt` on load so it never counts as one of the kept
//! snapshots again.
//!
//! Large snapshots never exist in memory as one image: [`SnapshotDir::write_with`] streams the
//! payload into the file (the header's length and crc are patched in at the end),
//! [`SnapshotDir::open_payload`] hands a restore a reader over the payload, and a follower
//! receives a leader's file chunk by chunk through [`SnapshotReceiver`] into `recv-<index>.bin`
//! (verified and fsynced before Raft hears of it), which [`SnapshotDir::adopt_received`] turns
//! into `snap-<index>.bin` once Raft installs it. Raft itself only carries a small
//! [`SnapshotRef`] descriptor.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::ConfState;

/// Identifies our snapshot files; guards against pointing the loader at some other file.
const MAGIC: &[u8; 8] = b"RKYSNAP\0";
/// Bumped on any incompatible layout change so old binaries refuse new files instead of
/// misreading them.
const FORMAT_VERSION: u32 = 1;
/// A ConfState larger than this is certainly a corrupt length field, not a real cluster.
const MAX_CONF_STATE_LEN: u32 = 1 << 20;
const FILE_PREFIX: &str = "snap-";
const FILE_SUFFIX: &str = ".bin";
const TMP_SUFFIX: &str = ".tmp";
const CORRUPT_SUFFIX: &str = ".corrupt";
/// Files received from a leader and not yet installed: `recv-<index:020>.bin`.
const RECV_PREFIX: &str = "recv-";
/// Bytes read per `read` call when streaming a file (verifying, sending, restoring).
const STREAM_BUF: usize = 1 << 20;
/// Magic of a [`SnapshotRef`] in `raft::Snapshot::data`.
const REF_MAGIC: &[u8; 8] = b"RKYSNREF";
/// Encoded size of a [`SnapshotRef`].
const REF_LEN: usize = 8 + 8 + 8 + 8 + 4 + 4;

/// Errors reading or writing snapshot files.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot i/o on {path}: {source}")]
    /// Reading or writing a file failed (ENOSPC here is retried later).
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    #[error("snapshot {path} is corrupt: {reason}")]
    /// A file failed its checks.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    #[error("conf state too large for a snapshot header ({0} bytes)")]
    /// The membership does not fit the header.
    ConfStateTooLarge(usize),
    #[error("received snapshot {path} refused: {reason}")]
    /// A streamed snapshot did not match what its sender announced (length, offsets, crc).
    Transfer {
        /// The temporary file being received.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    #[error("cannot encode conf state for snapshot: {0}")]
    /// The membership could not be encoded.
    Encode(#[from] protobuf::ProtobufError),
}

impl SnapshotError {
    /// A write that failed for lack of space (retried once space is freed).
    pub fn is_storage_full(&self) -> bool {
        matches!(self, SnapshotError::Io { source, .. } if super::is_no_space(source))
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A snapshot read back from disk, checksums verified.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    /// Last log index folded into `data`; replay resumes at `index + 1`.
    pub index: u64,
    /// Term of `index`, needed by Raft to answer `term(index)` after the log is compacted.
    pub term: u64,
    /// Membership as of `index`; Raft must restore it together with the data.
    pub conf_state: ConfState,
    /// The state machine's own serialization, opaque here.
    pub data: Vec<u8>,
    /// Where it was read from, for log messages and error reports.
    pub path: PathBuf,
}

/// The header of a snapshot file: everything but the payload.
#[derive(Debug, Clone)]
pub struct SnapshotHeader {
    /// Last log index folded into the payload.
    pub index: u64,
    /// Term of `index`.
    pub term: u64,
    /// Membership as of `index`.
    pub conf_state: ConfState,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// crc32 of the payload.
    pub payload_crc: u32,
    /// Where the payload starts in the file (the header's length).
    pub payload_offset: u64,
}

impl SnapshotHeader {
    /// Length of the whole file this header describes.
    pub fn file_len(&self) -> u64 {
        self.payload_offset + self.payload_len
    }
}

/// What a leader puts in `raft::Snapshot::data` instead of the payload: which file the
/// follower must fetch (streamed beside Raft, see `peer::net`) and how to check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRef {
    /// Snapshot index (also in the Raft metadata; repeated so the file is self-checking).
    pub index: u64,
    /// Term of `index`.
    pub term: u64,
    /// Length of the whole snapshot file.
    pub file_len: u64,
    /// crc32 of the payload, from the file header.
    pub payload_crc: u32,
}

impl SnapshotRef {
    /// The descriptor of the file whose header is `h`.
    pub fn of(h: &SnapshotHeader) -> SnapshotRef {
        SnapshotRef {
            index: h.index,
            term: h.term,
            file_len: h.file_len(),
            payload_crc: h.payload_crc,
        }
    }

    /// `magic | index | term | file_len | payload_crc | crc32 of what precedes`, big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REF_LEN);
        out.extend_from_slice(REF_MAGIC);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.term.to_be_bytes());
        out.extend_from_slice(&self.file_len.to_be_bytes());
        out.extend_from_slice(&self.payload_crc.to_be_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Whether `data` is meant to be a descriptor (magic only; [`SnapshotRef::decode`] checks
    /// the rest). Anything else in `Snapshot::data` is a whole snapshot image (the in-process
    /// test transport still sends those).
    pub fn is_ref(data: &[u8]) -> bool {
        data.starts_with(REF_MAGIC)
    }

    /// Parses a descriptor; `None` if it is not one or is damaged.
    pub fn decode(data: &[u8]) -> Option<SnapshotRef> {
        if data.len() != REF_LEN || !Self::is_ref(data) {
            return None;
        }
        let mut r = Reader { buf: data, pos: 8 };
        let index = r.u64()?;
        let term = r.u64()?;
        let file_len = r.u64()?;
        let payload_crc = r.u32()?;
        let body_end = r.pos;
        let crc = r.u32()?;
        (crc32fast::hash(&data[..body_end]) == crc).then_some(SnapshotRef {
            index,
            term,
            file_len,
            payload_crc,
        })
    }
}

/// The header bytes for a payload of `payload_len` bytes with crc `payload_crc`.
fn encode_header(
    index: u64,
    term: u64,
    conf_state: &ConfState,
    payload_len: u64,
    payload_crc: u32,
) -> Result<Vec<u8>, SnapshotError> {
    let cs = conf_state.write_to_bytes()?;
    let cs_len = u32::try_from(cs.len())
        .ok()
        .filter(|l| *l <= MAX_CONF_STATE_LEN)
        .ok_or(SnapshotError::ConfStateTooLarge(cs.len()))?;
    let mut out = Vec::with_capacity(48 + cs.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(&term.to_be_bytes());
    out.extend_from_slice(&cs_len.to_be_bytes());
    out.extend_from_slice(&cs);
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.extend_from_slice(&payload_crc.to_be_bytes());
    let header_crc = crc32fast::hash(&out);
    out.extend_from_slice(&header_crc.to_be_bytes());
    Ok(out)
}

/// Reads and checks the header at the start of `r` (its own crc included, not the payload).
fn read_header(path: &Path, r: &mut impl Read) -> Result<SnapshotHeader, SnapshotError> {
    let corrupt = |reason: &str| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut read = |buf: &mut [u8]| -> Result<(), SnapshotError> {
        r.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                corrupt("truncated header")
            } else {
                SnapshotError::Io {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })
    };
    let mut fixed = [0u8; 32];
    read(&mut fixed)?;
    if &fixed[..8] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let cs_len = u32::from_be_bytes([fixed[28], fixed[29], fixed[30], fixed[31]]);
    if cs_len > MAX_CONF_STATE_LEN {
        return Err(corrupt("conf state length is implausible"));
    }
    let mut head = fixed.to_vec();
    head.resize(32 + cs_len as usize + 16, 0);
    read(&mut head[32..])?;
    // Everything from here on is parsed by the same checked decoder as a whole image.
    let (h, _) = parse_header(path, &head)?;
    Ok(h)
}

/// Parses the header at the start of `bytes`; returns it and the rest of `bytes`.
fn parse_header<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(SnapshotHeader, &'a [u8]), SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut r = Reader { buf: bytes, pos: 0 };
    let magic = r.take(8).ok_or_else(|| corrupt("truncated magic".into()))?;
    if magic != MAGIC {
        return Err(corrupt("bad magic".into()));
    }
    let version = r.u32().ok_or_else(|| corrupt("truncated header".into()))?;
    if version != FORMAT_VERSION {
        return Err(corrupt(format!("unsupported format version {version}")));
    }
    let index = r.u64().ok_or_else(|| corrupt("truncated header".into()))?;
    let term = r.u64().ok_or_else(|| corrupt("truncated header".into()))?;
    let cs_len = r.u32().ok_or_else(|| corrupt("truncated header".into()))?;
    if cs_len > MAX_CONF_STATE_LEN {
        return Err(corrupt(format!(
            "conf state length {cs_len} is implausible"
        )));
    }
    let cs_bytes = r
        .take(cs_len as usize)
        .ok_or_else(|| corrupt("truncated conf state".into()))?;
    let payload_len = r.u64().ok_or_else(|| corrupt("truncated header".into()))?;
    let payload_crc = r.u32().ok_or_else(|| corrupt("truncated header".into()))?;
    let header_end = r.pos;
    let header_crc = r.u32().ok_or_else(|| corrupt("truncated header".into()))?;
    // The header crc is checked before trusting index/term/lengths from it.
    if crc32fast::hash(&bytes[..header_end]) != header_crc {
        return Err(corrupt("header checksum mismatch".into()));
    }
    let mut conf_state = ConfState::default();
    conf_state
        .merge_from_bytes(cs_bytes)
        .map_err(|e| corrupt(format!("conf state: {e}")))?;
    let payload_offset = r.pos as u64;
    Ok((
        SnapshotHeader {
            index,
            term,
            conf_state,
            payload_len,
            payload_crc,
            payload_offset,
        },
        r.rest(),
    ))
}

/// Streams a whole file: checks its header, that the payload has the announced length and
/// crc, and that nothing follows it. Reads in bounded buffers, whatever the file's size.
pub fn verify_file(path: &Path) -> Result<SnapshotHeader, SnapshotError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let h = read_header(path, &mut f)?;
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; STREAM_BUF];
    let mut seen = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        seen += n as u64;
        if seen > h.payload_len {
            return Err(corrupt(format!(
                "payload is longer than the {} bytes the header says",
                h.payload_len
            )));
        }
        hasher.update(&buf[..n]);
    }
    if seen != h.payload_len {
        return Err(corrupt(format!(
            "payload is {seen} bytes, header says {}",
            h.payload_len
        )));
    }
    if hasher.finalize() != h.payload_crc {
        return Err(corrupt("payload checksum mismatch".into()));
    }
    Ok(h)
}

/// A `Write` that counts and checksums what passes through it.
struct HashingWriter<W: Write> {
    /// Where the bytes go.
    inner: W,
    /// crc32 so far.
    hasher: crc32fast::Hasher,
    /// Bytes so far.
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Bytes of snapshot written between two starts of writeback (see [`PacedFile`]).
const WRITEBACK_EVERY: u64 = 8 << 20;

/// A snapshot file that starts the kernel's writeback of what it has been given every
/// [`WRITEBACK_EVERY`] bytes (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: start, not wait, and
/// no durability claim; the final `sync_all` is the flush). Without it a 1M-znode snapshot
/// reached the disk as one ~200 MiB burst at that final fsync, queued ahead of the raft log's
/// commit flushes, whose latency then spiked for every client.
struct PacedFile {
    file: File,
    /// Bytes written since writeback was last started.
    unstarted: u64,
}

impl Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unstarted += n as u64;
        if self.unstarted >= WRITEBACK_EVERY {
            self.unstarted = 0;
            // SAFETY: a valid descriptor we own; the call only schedules writeback. Its
            // result is advisory: an error here shows up again at the final sync_all.
            unsafe {
                libc::sync_file_range(
                    std::os::fd::AsRawFd::as_raw_fd(&self.file),
                    0,
                    0,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Serialize a snapshot into the on-disk format (header + payload).
pub fn encode(
    index: u64,
    term: u64,
    conf_state: &ConfState,
    data: &[u8],
) -> Result<Vec<u8>, SnapshotError> {
    let mut out = encode_header(
        index,
        term,
        conf_state,
        data.len() as u64,
        crc32fast::hash(data),
    )?;
    out.extend_from_slice(data);
    Ok(out)
}

/// Parse and verify a whole snapshot file image. `path` is only used in error messages.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<SnapshotFile, SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let (h, payload) = parse_header(path, bytes)?;
    if payload.len() as u64 != h.payload_len {
        return Err(corrupt(format!(
            "payload is {} bytes, header says {}",
            payload.len(),
            h.payload_len
        )));
    }
    if crc32fast::hash(payload) != h.payload_crc {
        return Err(corrupt("payload checksum mismatch".into()));
    }
    Ok(SnapshotFile {
        index: h.index,
        term: h.term,
        conf_state: h.conf_state,
        data: payload.to_vec(),
        path: path.to_path_buf(),
    })
}

/// Minimal bounds-checked cursor so a truncated file yields an error, never a panic.
struct Reader<'a> {
    /// The whole file image.
    buf: &'a [u8],
    /// Next unread byte.
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_be_bytes)
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos.min(self.buf.len())..];
        self.pos = self.buf.len();
        s
    }
}

/// The snapshot directory (`data_dir/snapshots`).
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    /// Directory holding `snap-*.bin`; also fsync'd after renames so new names are durable.
    dir: PathBuf,
}

impl SnapshotDir {
    /// Creates the directory if needed and removes leftovers of interrupted writes.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, SnapshotError> {
        let dir = dir.into();
        // Durably: a snapshot file later written and fsynced here is only as durable as the
        // directory's own entry.
        super::create_dir_durable(&dir).map_err(io_err(&dir))?;
        let this = SnapshotDir { dir };
        for entry in fs::read_dir(&this.dir).map_err(io_err(&this.dir))? {
            let entry = entry.map_err(io_err(&this.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // A received file not installed before the restart is stale: the leader sends a
            // fresh one if this node still needs it.
            let unfinished = name.starts_with(FILE_PREFIX) && name.ends_with(TMP_SUFFIX);
            if unfinished || name.starts_with(RECV_PREFIX) {
                let p = entry.path();
                tracing::info!(path = %p.display(), "removing unfinished snapshot file");
                fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        Ok(this)
    }

    /// A handle on a directory another component opened (and cleaned) already; for the peer
    /// network, which must not delete the raft thread's files in progress.
    pub fn existing(dir: impl Into<PathBuf>) -> Self {
        SnapshotDir { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// File name for the snapshot at `index`.
    pub fn file_path(&self, index: u64) -> PathBuf {
        self.dir
            .join(format!("{FILE_PREFIX}{index:020}{FILE_SUFFIX}"))
    }

    /// Durably writes a snapshot: temp file, fsync, rename, fsync dir.
    pub fn write(
        &self,
        index: u64,
        term: u64,
        conf_state: &ConfState,
        data: &[u8],
    ) -> Result<PathBuf, SnapshotError> {
        self.write_with(index, term, conf_state, |w| w.write_all(data))
    }

    /// The temporary name [`SnapshotDir::write_with`] writes to before its rename.
    pub fn tmp_path(&self, index: u64) -> PathBuf {
        self.dir
            .join(format!("{FILE_PREFIX}{index:020}{FILE_SUFFIX}{TMP_SUFFIX}"))
    }

    /// Creates the temporary file of the snapshot at `index` (for a writer in a forked child,
    /// which inherits the open file).
    pub fn create_tmp(&self, index: u64) -> Result<(PathBuf, File), SnapshotError> {
        let tmp_path = self.tmp_path(index);
        let file = File::create(&tmp_path).map_err(io_err(&tmp_path))?;
        Ok((tmp_path, file))
    }

    /// Durably writes a snapshot whose payload `payload` streams into the writer it is given
    /// (buffered): no image of the payload is built in memory. The header's length and crc
    /// are patched in once the payload is written; then fsync, rename, fsync dir.
    pub fn write_with(
        &self,
        index: u64,
        term: u64,
        conf_state: &ConfState,
        payload: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<PathBuf, SnapshotError> {
        let tmp_path = self.tmp_path(index);
        let file = File::create(&tmp_path).map_err(io_err(&tmp_path))?;
        let written = write_file(&tmp_path, file, index, term, conf_state, payload);
        self.finish_tmp(index, &tmp_path, written)
    }

    /// After the payload was written to `tmp_path` (by this process or a forked child):
    /// rename it to its final name and make the name durable, or delete it on failure.
    pub fn finish_tmp(
        &self,
        index: u64,
        tmp_path: &Path,
        written: Result<(), SnapshotError>,
    ) -> Result<PathBuf, SnapshotError> {
        if let Err(e) = written {
            // A partial file on a full disk would keep it full; the next attempt rewrites it.
            let _ = fs::remove_file(tmp_path);
            return Err(e);
        }
        let final_path = self.file_path(index);
        fs::rename(tmp_path, &final_path).map_err(io_err(&final_path))?;
        self.sync_dir()?;
        Ok(final_path)
    }

    fn sync_dir(&self) -> Result<(), SnapshotError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))
    }

    /// All complete snapshot files, newest (highest index) first.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
        self.list_prefixed(FILE_PREFIX)
    }

    /// Received files not (yet) installed, newest first.
    fn list_received(&self) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
        self.list_prefixed(RECV_PREFIX)
    }

    fn list_prefixed(&self, prefix: &str) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(idx) = name
                .strip_prefix(prefix)
                .and_then(|s| s.strip_suffix(FILE_SUFFIX))
            else {
                continue;
            };
            if let Ok(index) = idx.parse::<u64>() {
                out.push((index, entry.path()));
            }
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.0));
        Ok(out)
    }

    /// Reads and verifies one file.
    pub fn load(&self, path: &Path) -> Result<SnapshotFile, SnapshotError> {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_err(path))?;
        let snap = decode(path, &bytes)?;
        Ok(snap)
    }

    /// Newest snapshot whose checksums verify. Corrupt files are logged and renamed to
    /// `*.corrupt` so that retention never counts them as a usable fallback.
    pub fn load_newest_valid(&self) -> Result<Option<SnapshotFile>, SnapshotError> {
        Ok(self
            .newest_valid_by(|path| self.load(path), |s| s.index)?
            .map(|(snap, _)| snap))
    }

    /// Newest snapshot whose checksums verify, checked by streaming (never loaded whole);
    /// corrupt files are quarantined as in [`SnapshotDir::load_newest_valid`].
    pub fn newest_valid_header(&self) -> Result<Option<(SnapshotHeader, PathBuf)>, SnapshotError> {
        self.newest_valid_by(verify_file, |h| h.index)
    }

    /// Newest file that `check` accepts and whose header index matches its name; the others
    /// are quarantined, newest first.
    fn newest_valid_by<T>(
        &self,
        check: impl Fn(&Path) -> Result<T, SnapshotError>,
        index_of: impl Fn(&T) -> u64,
    ) -> Result<Option<(T, PathBuf)>, SnapshotError> {
        for (index, path) in self.list()? {
            match check(&path) {
                Ok(found) if index_of(&found) == index => return Ok(Some((found, path))),
                Ok(found) => {
                    tracing::warn!(
                        path = %path.display(),
                        index = index_of(&found),
                        "snapshot header index does not match its file name; skipping"
                    );
                    self.quarantine(&path)?;
                }
                Err(SnapshotError::Corrupt { reason, .. }) => {
                    tracing::warn!(path = %path.display(), index, %reason, "skipping corrupt snapshot");
                    self.quarantine(&path)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Header of the newest snapshot file without reading its payload (checks the header's
    /// own crc only): what a leader announces to a follower. The follower verifies the
    /// payload as it receives it.
    pub fn newest_header(&self) -> Result<Option<(SnapshotHeader, PathBuf)>, SnapshotError> {
        for (index, path) in self.list()? {
            let mut f = match File::open(&path) {
                Ok(f) => f,
                // Removed by compaction between the listing and here: try the next one.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path)(e)),
            };
            match read_header(&path, &mut f) {
                Ok(h) if h.index == index => return Ok(Some((h, path))),
                Ok(_) | Err(SnapshotError::Corrupt { .. }) => {
                    tracing::warn!(path = %path.display(), index, "snapshot header unreadable; not offered to followers");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Opens the snapshot file at `path` for a streaming restore: its header (checked) and a
    /// buffered reader positioned at the payload, limited to the payload's length.
    pub fn open_payload(
        &self,
        path: &Path,
    ) -> Result<(SnapshotHeader, io::Take<io::BufReader<File>>), SnapshotError> {
        let mut r =
            io::BufReader::with_capacity(STREAM_BUF, File::open(path).map_err(io_err(path))?);
        let h = read_header(path, &mut r)?;
        let len = h.payload_len;
        Ok((h, r.take(len)))
    }

    /// Opens the snapshot file at `index` for sending to a follower. An open file stays
    /// readable on Unix even if compaction unlinks it meanwhile: opening it pins it.
    pub fn open_for_send(&self, index: u64) -> Result<File, SnapshotError> {
        let path = self.file_path(index);
        File::open(&path).map_err(io_err(&path))
    }

    /// Where a snapshot received from the leader waits for Raft to install it.
    pub fn received_path(&self, index: u64) -> PathBuf {
        self.dir
            .join(format!("{RECV_PREFIX}{index:020}{FILE_SUFFIX}"))
    }

    /// Starts receiving the snapshot file `r` from server `from` (see [`SnapshotReceiver`]).
    /// The temporary file is per sender: two leaders streaming the same index at once (one
    /// deposed) never write into one file.
    pub fn receive(&self, r: SnapshotRef, from: u64) -> Result<SnapshotReceiver, SnapshotError> {
        let tmp = self.dir.join(format!(
            "{RECV_PREFIX}{:020}{FILE_SUFFIX}.from-{from}{TMP_SUFFIX}",
            r.index
        ));
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        Ok(SnapshotReceiver {
            dir: self.clone(),
            expected: r,
            tmp: Some(tmp),
            file: Some(io::BufWriter::with_capacity(STREAM_BUF, file)),
            written: 0,
            hasher: crc32fast::Hasher::new(),
        })
    }

    /// Checks that a received file matches `r` (header only: the payload was verified when it
    /// arrived). Raft must not accept a descriptor whose file is not there.
    pub fn check_received(&self, r: &SnapshotRef) -> Result<PathBuf, SnapshotError> {
        let path = self.received_path(r.index);
        let mut f = File::open(&path).map_err(io_err(&path))?;
        let h = read_header(&path, &mut f)?;
        if SnapshotRef::of(&h) != *r {
            return Err(SnapshotError::Transfer {
                path,
                reason: format!(
                    "received file is {:?}, raft asks for {r:?}",
                    SnapshotRef::of(&h)
                ),
            });
        }
        Ok(path)
    }

    /// Raft installs the received snapshot `r`: it becomes `snap-<index>.bin` (durably, before
    /// the log is dropped), and its path is returned for the restore.
    pub fn adopt_received(&self, r: &SnapshotRef) -> Result<PathBuf, SnapshotError> {
        let from = self.check_received(r)?;
        let to = self.file_path(r.index);
        fs::rename(&from, &to).map_err(io_err(&to))?;
        self.sync_dir()?;
        Ok(to)
    }

    fn quarantine(&self, path: &Path) -> Result<(), SnapshotError> {
        let mut target = path.as_os_str().to_owned();
        target.push(CORRUPT_SUFFIX);
        fs::rename(path, &target).map_err(io_err(path))?;
        self.sync_dir()
    }

    /// Deletes snapshot files with index < `min_index` (they are older than the log's
    /// compaction point and can no longer be combined with the log).
    pub fn remove_older_than(&self, min_index: u64) -> Result<usize, SnapshotError> {
        let mut removed = 0;
        for (index, path) in self.list()?.into_iter().chain(self.list_received()?) {
            if index < min_index {
                fs::remove_file(&path).map_err(io_err(&path))?;
                tracing::debug!(index, path = %path.display(), "removed old snapshot");
                removed += 1;
            }
        }
        if removed > 0 {
            self.sync_dir()?;
        }
        Ok(removed)
    }
}

/// Writes a snapshot file into the already created `file` (at `path`, normally
/// [`SnapshotDir::tmp_path`]): header placeholder, streamed payload, the real header, fsync.
/// The caller then calls [`SnapshotDir::finish_tmp`]. Takes no lock and logs nothing, so a
/// forked child may run it.
pub fn write_file(
    path: &Path,
    file: File,
    index: u64,
    term: u64,
    conf_state: &ConfState,
    payload: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), SnapshotError> {
    crate::failpoint!("snapshot-file-write", |arg| Err(SnapshotError::Io {
        path: path.to_path_buf(),
        source: super::injected_io_error(arg),
    }));
    // Same length as the final header: only the payload length and crc differ.
    let placeholder = encode_header(index, term, conf_state, 0, 0)?;
    let mut w = HashingWriter {
        inner: io::BufWriter::with_capacity(STREAM_BUF, PacedFile { file, unstarted: 0 }),
        hasher: crc32fast::Hasher::new(),
        len: 0,
    };
    w.inner.write_all(&placeholder).map_err(io_err(path))?;
    payload(&mut w).map_err(io_err(path))?;
    let (len, crc) = (w.len, w.hasher.finalize());
    let mut file = w
        .inner
        .into_inner()
        .map_err(|e| io_err(path)(e.into_error()))?
        .file;
    let header = encode_header(index, term, conf_state, len, crc)?;
    file.seek(io::SeekFrom::Start(0)).map_err(io_err(path))?;
    file.write_all(&header).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))?;
    Ok(())
}

/// Writes a snapshot file arriving from a leader in chunks: each chunk must start where the
/// previous one ended and stay within the announced length. [`SnapshotReceiver::finish`]
/// checks the total length and crc, fsyncs, re-verifies the file from disk, and only then
/// renames it to `recv-<index>.bin`. Dropped unfinished, it deletes its temporary file: a
/// torn transfer never leaves anything that could be installed.
pub struct SnapshotReceiver {
    /// Where the finished file goes.
    dir: SnapshotDir,
    /// What the leader announced.
    expected: SnapshotRef,
    /// The temporary file (None once finished).
    tmp: Option<PathBuf>,
    /// Open handle on `tmp`.
    file: Option<io::BufWriter<File>>,
    /// Bytes written so far.
    written: u64,
    /// crc32 of the whole file so far.
    hasher: crc32fast::Hasher,
}

impl SnapshotReceiver {
    fn refuse(&self, reason: String) -> SnapshotError {
        SnapshotError::Transfer {
            path: self.tmp.clone().unwrap_or_default(),
            reason,
        }
    }

    /// Bytes received so far (the offset the next chunk must have).
    pub fn received(&self) -> u64 {
        self.written
    }

    /// Appends the chunk that starts at `offset`.
    pub fn write_chunk(&mut self, offset: u64, data: &[u8]) -> Result<(), SnapshotError> {
        if offset != self.written {
            return Err(self.refuse(format!(
                "chunk at offset {offset}, expected {}",
                self.written
            )));
        }
        let end = self.written.saturating_add(data.len() as u64);
        if end > self.expected.file_len {
            return Err(self.refuse(format!(
                "chunk ends at {end}, beyond the announced {} bytes",
                self.expected.file_len
            )));
        }
        let (Some(file), Some(tmp)) = (self.file.as_mut(), self.tmp.as_ref()) else {
            return Err(self.refuse("receiver already finished".into()));
        };
        file.write_all(data).map_err(io_err(tmp))?;
        self.hasher.update(data);
        self.written = end;
        Ok(())
    }

    /// The sender says the file is complete and has crc32 `file_crc`: check, fsync, verify
    /// from disk, rename to `recv-<index>.bin`. Returns that path.
    pub fn finish(mut self, file_crc: u32) -> Result<PathBuf, SnapshotError> {
        if self.written != self.expected.file_len {
            return Err(self.refuse(format!(
                "stream ended after {} of {} bytes",
                self.written, self.expected.file_len
            )));
        }
        let crc = self.hasher.clone().finalize();
        if crc != file_crc {
            return Err(self.refuse(format!("file crc {crc:08x}, sender says {file_crc:08x}")));
        }
        let (Some(file), Some(tmp)) = (self.file.take(), self.tmp.clone()) else {
            return Err(self.refuse("receiver already finished".into()));
        };
        let file = file
            .into_inner()
            .map_err(|e| io_err(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        // Bytes can go bad between the socket and the disk, and the leader's own file may be
        // damaged (its payload crc is checked nowhere else): read it all back once.
        let h = verify_file(&tmp)?;
        if SnapshotRef::of(&h) != self.expected {
            return Err(self.refuse(format!(
                "file holds {:?}, the leader announced {:?}",
                SnapshotRef::of(&h),
                self.expected
            )));
        }
        let dest = self.dir.received_path(self.expected.index);
        fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        self.tmp = None;
        self.dir.sync_dir()?;
        Ok(dest)
    }
}

impl Drop for SnapshotReceiver {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            self.file = None;
            let _ = fs::remove_file(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(voters: &[u64]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn roundtrip() {
        let bytes = encode(42, 7, &cs(&[1, 2, 3]), b"hello").unwrap();
        let s = decode(Path::new("x"), &bytes).unwrap();
        assert_eq!((s.index, s.term), (42, 7));
        assert_eq!(s.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(s.data, b"hello");
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let bytes = encode(42, 7, &cs(&[1]), b"payload bytes").unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                decode(Path::new("x"), &b).is_err(),
                "flip at {i} not detected"
            );
        }
        for len in 0..bytes.len() {
            assert!(decode(Path::new("x"), &bytes[..len]).is_err());
        }
    }

    #[test]
    fn dir_write_list_load_and_quarantine() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path().join("snaps")).unwrap();
        dir.write(5, 1, &cs(&[1]), b"five").unwrap();
        let p10 = dir.write(10, 2, &cs(&[1]), b"ten").unwrap();
        std::fs::write(
            dir.path().join("snap-00000000000000000011.bin.tmp"),
            b"junk",
        )
        .unwrap();
        assert_eq!(
            dir.list().unwrap().iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![10, 5]
        );
        assert_eq!(dir.load_newest_valid().unwrap().unwrap().index, 10);

        let mut b = std::fs::read(&p10).unwrap();
        let last = b.len() - 1;
        b[last] ^= 0xff;
        std::fs::write(&p10, b).unwrap();
        let s = dir.load_newest_valid().unwrap().unwrap();
        assert_eq!((s.index, s.data.as_slice()), (5, &b"five"[..]));
        assert_eq!(dir.list().unwrap().len(), 1, "corrupt file quarantined");

        // Reopen cleans the temp file.
        let dir = SnapshotDir::open(tmp.path().join("snaps")).unwrap();
        assert!(!dir
            .path()
            .join("snap-00000000000000000011.bin.tmp")
            .exists());
        assert_eq!(dir.remove_older_than(6).unwrap(), 1);
        assert!(dir.load_newest_valid().unwrap().is_none());
    }

    /// A snapshot file of `payload` at index 7 in a fresh directory.
    fn leader_file(payload: &[u8]) -> (tempfile::TempDir, SnapshotDir, SnapshotRef) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path().join("leader")).unwrap();
        let p = dir.write(7, 3, &cs(&[1, 2, 3]), payload).unwrap();
        let h = verify_file(&p).unwrap();
        (tmp, dir, SnapshotRef::of(&h))
    }

    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_u32;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn streamed_write_gives_the_same_bytes_as_a_whole_image() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path().join("s")).unwrap();
        let payload = pseudo_random(3 * STREAM_BUF + 17);
        let p = dir
            .write_with(9, 2, &cs(&[1]), |w| {
                // Many small writes, as a tree encoder makes them.
                for piece in payload.chunks(1000) {
                    w.write_all(piece)?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(
            fs::read(&p).unwrap(),
            encode(9, 2, &cs(&[1]), &payload).unwrap()
        );
        let h = verify_file(&p).unwrap();
        assert_eq!(
            (h.index, h.term, h.payload_len),
            (9, 2, payload.len() as u64)
        );
        let (_, mut r) = dir.open_payload(&p).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, payload);
        // A writer that fails leaves no file, temporary or final.
        let err = dir.write_with(10, 2, &cs(&[1]), |_| Err(io::Error::other("boom")));
        assert!(err.is_err());
        assert!(!dir.tmp_path(10).exists() && !dir.file_path(10).exists());
    }

    #[test]
    fn snapshot_ref_round_trips_and_refuses_damage() {
        let r = SnapshotRef {
            index: 5,
            term: 2,
            file_len: 1 << 33,
            payload_crc: 0xdead_beef,
        };
        let b = r.encode();
        assert!(SnapshotRef::is_ref(&b));
        assert_eq!(SnapshotRef::decode(&b), Some(r));
        for i in 8..b.len() {
            let mut c = b.clone();
            c[i] ^= 1;
            assert_eq!(SnapshotRef::decode(&c), None, "flip at {i}");
        }
        assert_eq!(SnapshotRef::decode(&b[..b.len() - 1]), None);
        assert!(!SnapshotRef::is_ref(b"RKSTATE3..."));
    }

    /// Streams `file` into a receiver in `chunk`-byte pieces, returning the receiver.
    fn feed(dir: &SnapshotDir, r: SnapshotRef, file: &[u8], chunk: usize) -> SnapshotReceiver {
        let mut rc = dir.receive(r, 1).unwrap();
        for (i, piece) in file.chunks(chunk).enumerate() {
            rc.write_chunk((i * chunk) as u64, piece).unwrap();
        }
        rc
    }

    #[test]
    fn a_chunked_transfer_is_verified_then_installed() {
        let payload = pseudo_random(2 * STREAM_BUF + 5);
        let (tmp, leader, r) = leader_file(&payload);
        let file = fs::read(leader.file_path(7)).unwrap();
        let follower = SnapshotDir::open(tmp.path().join("follower")).unwrap();
        let rc = feed(&follower, r, &file, 1 << 16);
        assert_eq!(rc.received(), file.len() as u64);
        let recv = rc.finish(crc32fast::hash(&file)).unwrap();
        assert_eq!(recv, follower.received_path(7));
        // Received is not installed: not a snapshot of this node until Raft accepts it.
        assert!(follower.list().unwrap().is_empty());
        assert_eq!(follower.check_received(&r).unwrap(), recv);
        let other = SnapshotRef { term: 4, ..r };
        assert!(follower.check_received(&other).is_err());
        let installed = follower.adopt_received(&r).unwrap();
        assert_eq!(installed, follower.file_path(7));
        assert_eq!(fs::read(&installed).unwrap(), file);
        let (h, _) = follower.newest_valid_header().unwrap().unwrap();
        assert_eq!((h.index, h.term), (7, 3));
        assert_eq!(h.conf_state.voters, vec![1, 2, 3]);
    }

    /// No temporary or received file is left: nothing of a refused transfer can be installed.
    fn assert_nothing_received(dir: &SnapshotDir) {
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.is_empty(), "left behind: {names:?}");
    }

    #[test]
    fn a_checksum_mismatch_is_refused() {
        let payload = pseudo_random(100_000);
        let (tmp, leader, r) = leader_file(&payload);
        let file = fs::read(leader.file_path(7)).unwrap();
        let follower = SnapshotDir::open(tmp.path().join("follower")).unwrap();
        // The sender's whole-file crc disagrees with what arrived.
        let rc = feed(&follower, r, &file, 4096);
        let err = rc.finish(crc32fast::hash(&file) ^ 1).unwrap_err();
        assert!(matches!(err, SnapshotError::Transfer { .. }), "{err}");
        assert_nothing_received(&follower);
        // A byte damaged in the leader's own file: the stream's crc matches what was sent,
        // the payload crc in the header does not.
        let mut bad = file.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x10;
        let rc = feed(&follower, r, &bad, 4096);
        let err = rc.finish(crc32fast::hash(&bad)).unwrap_err();
        assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
        assert_nothing_received(&follower);
    }

    #[test]
    fn a_truncated_or_disordered_stream_is_refused() {
        let payload = pseudo_random(50_000);
        let (tmp, leader, r) = leader_file(&payload);
        let file = fs::read(leader.file_path(7)).unwrap();
        let follower = SnapshotDir::open(tmp.path().join("follower")).unwrap();
        // Truncated: the stream ends before the announced length.
        let rc = feed(&follower, r, &file[..file.len() - 1], 4096);
        let err = rc.finish(crc32fast::hash(&file)).unwrap_err();
        assert!(err.to_string().contains("stream ended"), "{err}");
        assert_nothing_received(&follower);
        // A gap, a repeat, and a chunk past the end are refused as they arrive.
        let mut rc = follower.receive(r, 1).unwrap();
        rc.write_chunk(0, &file[..100]).unwrap();
        assert!(rc.write_chunk(200, &file[200..300]).is_err());
        assert!(rc.write_chunk(0, &file[..100]).is_err());
        let mut long = file[100..].to_vec();
        long.push(0);
        assert!(rc.write_chunk(100, &long).is_err());
        // A connection dropped mid-stream: the receiver goes, and so does its file.
        drop(rc);
        assert_nothing_received(&follower);
        // Received files never survive a restart (Raft's state then is new).
        feed(&follower, r, &file, 4096)
            .finish(crc32fast::hash(&file))
            .unwrap();
        let follower = SnapshotDir::open(follower.path()).unwrap();
        assert_nothing_received(&follower);
    }

    #[test]
    fn a_file_being_sent_survives_compaction() {
        let payload = pseudo_random(300_000);
        let (_tmp, leader, r) = leader_file(&payload);
        let mut f = leader.open_for_send(r.index).unwrap();
        leader.write(9, 3, &cs(&[1]), b"newer").unwrap();
        assert_eq!(leader.remove_older_than(9).unwrap(), 1);
        assert!(!leader.file_path(7).exists());
        // The open file still streams completely.
        let mut sent = Vec::new();
        f.read_to_end(&mut sent).unwrap();
        assert_eq!(sent.len() as u64, r.file_len);
        assert_eq!(decode(Path::new("x"), &sent).unwrap().data, payload);
        // And the leader now offers the newer one (header only).
        let (h, _) = leader.newest_header().unwrap().unwrap();
        assert_eq!(h.index, 9);
    }

    #[test]
    fn two_senders_of_one_index_never_share_a_file() {
        let payload = pseudo_random(40_000);
        let (tmp, leader, r) = leader_file(&payload);
        let file = fs::read(leader.file_path(7)).unwrap();
        let follower = SnapshotDir::open(tmp.path().join("follower")).unwrap();
        let mut a = follower.receive(r, 1).unwrap();
        let mut b = follower.receive(r, 2).unwrap();
        let half = file.len() / 2;
        a.write_chunk(0, &file[..half]).unwrap();
        b.write_chunk(0, &file[..half]).unwrap();
        a.write_chunk(half as u64, &file[half..]).unwrap();
        a.finish(crc32fast::hash(&file)).unwrap();
        // The other goes on with different (damaged) bytes, then breaks off: none of that may
        // reach the verified file, and its own file goes.
        let damaged: Vec<u8> = file[half..].iter().map(|b| !b).collect();
        b.write_chunk(half as u64, &damaged).unwrap();
        drop(b);
        assert_eq!(fs::read(follower.received_path(7)).unwrap(), file);
        assert_eq!(
            follower.check_received(&r).unwrap(),
            follower.received_path(7)
        );
    }
}
