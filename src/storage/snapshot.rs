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

use std::fs::{self, File};
use std::io::{self, Read, Write};
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

/// Serialize a snapshot into the on-disk format (header + payload).
pub fn encode(
    index: u64,
    term: u64,
    conf_state: &ConfState,
    data: &[u8],
) -> Result<Vec<u8>, SnapshotError> {
    let cs = conf_state.write_to_bytes()?;
    let cs_len = u32::try_from(cs.len())
        .ok()
        .filter(|l| *l <= MAX_CONF_STATE_LEN)
        .ok_or(SnapshotError::ConfStateTooLarge(cs.len()))?;
    let mut out = Vec::with_capacity(48 + cs.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(&term.to_be_bytes());
    out.extend_from_slice(&cs_len.to_be_bytes());
    out.extend_from_slice(&cs);
    out.extend_from_slice(&(data.len() as u64).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(data).to_be_bytes());
    let header_crc = crc32fast::hash(&out);
    out.extend_from_slice(&header_crc.to_be_bytes());
    out.extend_from_slice(data);
    Ok(out)
}

/// Parse and verify a whole snapshot file image. `path` is only used in error messages.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<SnapshotFile, SnapshotError> {
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
    let payload = r.rest();
    if payload.len() as u64 != payload_len {
        return Err(corrupt(format!(
            "payload is {} bytes, header says {payload_len}",
            payload.len()
        )));
    }
    if crc32fast::hash(payload) != payload_crc {
        return Err(corrupt("payload checksum mismatch".into()));
    }
    let mut conf_state = ConfState::default();
    conf_state
        .merge_from_bytes(cs_bytes)
        .map_err(|e| corrupt(format!("conf state: {e}")))?;
    Ok(SnapshotFile {
        index,
        term,
        conf_state,
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
            if name.starts_with(FILE_PREFIX) && name.ends_with(TMP_SUFFIX) {
                let p = entry.path();
                tracing::info!(path = %p.display(), "removing unfinished snapshot file");
                fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        Ok(this)
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
        let bytes = encode(index, term, conf_state, data)?;
        let final_path = self.file_path(index);
        let tmp_path = self
            .dir
            .join(format!("{FILE_PREFIX}{index:020}{FILE_SUFFIX}{TMP_SUFFIX}"));
        let written = (|| {
            crate::failpoint!("snapshot-file-write", |arg| Err(SnapshotError::Io {
                path: tmp_path.clone(),
                source: super::injected_io_error(arg),
            }));
            let mut f = File::create(&tmp_path).map_err(io_err(&tmp_path))?;
            f.write_all(&bytes).map_err(io_err(&tmp_path))?;
            f.sync_all().map_err(io_err(&tmp_path))?;
            Ok(())
        })();
        if let Err(e) = written {
            // A partial file on a full disk would keep it full; the next attempt rewrites it.
            let _ = fs::remove_file(&tmp_path);
            return Err(e);
        }
        fs::rename(&tmp_path, &final_path).map_err(io_err(&final_path))?;
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
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(idx) = name
                .strip_prefix(FILE_PREFIX)
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
        for (index, path) in self.list()? {
            match self.load(&path) {
                Ok(s) if s.index == index => return Ok(Some(s)),
                Ok(s) => {
                    tracing::warn!(
                        path = %path.display(),
                        index = s.index,
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
        for (index, path) in self.list()? {
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
}
