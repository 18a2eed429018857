//! The Raft log in LMDB (via heed), implementing [`raft::Storage`].
//!
//! Layout of the environment (`data_dir/raft/`), all in LMDB's unnamed main database, whose
//! root lives in the meta page (a named database's root is a record in the main database, so
//! every commit to it dirtied one more page: the main database's leaf):
//!
//! * log entries: key = log index (>= 1) as big-endian u64 (so LMDB's byte order is log order
//!   and appends can use `MDB_APPEND`), value = protobuf `eraftpb::Entry`.
//! * four small records under all-zero keys of 1 to 4 bytes, which sort before every 8-byte
//!   entry key (so appends stay appends), protobuf values:
//!   * `[0]` hard state: term, vote, commit.
//!   * `[0, 0]` conf state: membership as of the last applied conf change.
//!   * `[0, 0, 0]` initial conf state: membership the group was bootstrapped with; the
//!     starting point for a replay from index 1 when no snapshot exists.
//!   * `[0, 0, 0, 0]` snapshot metadata: the compaction point (index, term, conf state):
//!     every entry `<= index` is gone, and `term(index)` is answered from here.
//!
//! Layout 1 (before 2026-12) kept the entries in a named database `entries` and the records
//! in a named database `state` under the names `hard_state`, `conf_state`,
//! `initial_conf_state` and `snapshot_meta`. [`LmdbStorage::open`] converts such an
//! environment in one write transaction (all or nothing) and logs that it did.
//!
//! All mutations for one `Ready` go through one write transaction ([`LmdbStorage::write_ready`])
//! (group commit). The environment is opened with `MDB_NOMETASYNC`: a commit fdatasyncs the data
//! pages and then writes the meta page through the ordinary (non-`O_DSYNC`) fd without syncing
//! it, so each commit costs one flush instead of two. The price: after a power failure the
//! newest transaction may be rolled back (never torn: LMDB is copy-on-write and keeps the
//! previous meta and its pages intact). A transaction is therefore durable only once a *later*
//! write transaction has committed (its fdatasync covers the earlier meta page) or after
//! [`LmdbStorage::sync`]. [`LmdbStorage::durable_txn`] and [`LmdbStorage::written_txn`] let the
//! raft thread tell Raft about persistence only when it is real.
//!
//! Everything read from disk is decoded fallibly; a damaged record becomes a [`LogError`], never
//! a panic. (raft-rs itself may still panic on a Storage error: that is its documented contract,
//! "the raft instance will become inoperable".)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U64};
use heed::{Database, Env, EnvFlags, EnvOpenOptions, MdbError, PutFlags, RwTxn, WithoutTls};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use super::snapshot::SnapshotDir;
use crate::histogram::AtomicHistogram;

/// Virtual address space reserved for the map; LMDB only uses disk for pages actually written.
const INITIAL_MAP_SIZE: usize = 64 << 30;
/// The map is doubled on `MDB_MAP_FULL` up to this; beyond it the log counts as full (retried
/// until space is freed by compaction) rather than reserving ever more address space.
const MAX_MAP_SIZE: usize = 1 << 40;

/// Entries below the compaction point deleted per write transaction. Compaction only moves
/// the point; deleting a whole snapshot interval at once (100k entries by default) held the
/// raft thread for 18-32 ms per compaction (measured at 1M znodes), a latency spike for
/// every client and a missed heartbeat in an ensemble. A chunk this size costs well under a
/// millisecond and rides along with the next transactions, which write anyway.
const PURGE_CHUNK: u64 = 2048;
const KEY_HARD_STATE: &[u8] = &[0];
const KEY_CONF_STATE: &[u8] = &[0, 0];
const KEY_INITIAL_CONF_STATE: &[u8] = &[0, 0, 0];
const KEY_SNAPSHOT_META: &[u8] = &[0, 0, 0, 0];
/// Every state record, for counting entries without a scan.
const STATE_KEYS: [&[u8]; 4] = [
    KEY_HARD_STATE,
    KEY_CONF_STATE,
    KEY_INITIAL_CONF_STATE,
    KEY_SNAPSHOT_META,
];
/// The smallest entry key: Raft logs start at index 1, and the range `FIRST_ENTRY..` never
/// touches the state records.
const FIRST_ENTRY: u64 = 1;
/// Layout 1's named databases and record names, for the conversion in [`LmdbStorage::open`].
const V1_ENTRIES_DB: &str = "entries";
const V1_STATE_DB: &str = "state";
const V1_STATE_KEYS: [(&str, &[u8]); 4] = [
    ("hard_state", KEY_HARD_STATE),
    ("conf_state", KEY_CONF_STATE),
    ("initial_conf_state", KEY_INITIAL_CONF_STATE),
    ("snapshot_meta", KEY_SNAPSHOT_META),
];

/// Errors from the LMDB-backed log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An LMDB call failed (a write transaction that fails aborts cleanly).
    #[error("lmdb: {0}")]
    Lmdb(#[from] heed::Error),
    /// An explicit flush failed. Never retried: after a failed fsync the kernel may have
    /// dropped the dirty pages, so a later "successful" fsync proves nothing about them.
    #[error("fsync of the raft log failed: {0}")]
    Sync(#[source] heed::Error),
    /// The log directory could not be created or fsynced.
    #[error("cannot create raft log directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A stored record does not decode.
    #[error("corrupt {what} in raft log (index {index}): {source}")]
    Decode {
        /// Which record.
        what: &'static str,
        /// Its log index (0 for state records).
        index: u64,
        /// The decoding error.
        #[source]
        source: protobuf::ProtobufError,
    },
    /// A record could not be encoded.
    #[error("cannot encode raft record: {0}")]
    Encode(#[from] protobuf::ProtobufError),
    #[error(
        "append at index {first} would overwrite the compacted log (compacted through {compacted})"
    )]
    /// An append would rewrite compacted history.
    OverwriteCompacted {
        /// First index of the append.
        first: u64,
        /// The compaction point.
        compacted: u64,
    },
    #[error("append at index {first} leaves a gap after last index {last}")]
    /// An append does not follow the log.
    Gap {
        /// First index of the append.
        first: u64,
        /// Last index in the log.
        last: u64,
    },
    #[error("cannot compact through {index}: log only reaches {last}")]
    /// Compaction past the end of the log.
    CompactBeyondLog {
        /// Requested compaction point.
        index: u64,
        /// Last index in the log.
        last: u64,
    },
    /// The stored log contradicts itself.
    #[error("raft log is inconsistent: {0}")]
    Inconsistent(String),
}

impl LogError {
    fn is_map_full(&self) -> bool {
        matches!(self, LogError::Lmdb(heed::Error::Mdb(MdbError::MapFull)))
    }

    /// A write transaction that failed for lack of space: it aborted cleanly and can be retried
    /// once space is freed. (A failed [`LmdbStorage::sync`] is never this.)
    pub fn is_storage_full(&self) -> bool {
        match self {
            LogError::Lmdb(heed::Error::Mdb(MdbError::MapFull)) => true,
            LogError::Lmdb(heed::Error::Io(e)) => super::is_no_space(e),
            _ => false,
        }
    }
}

/// Converts a layout-1 environment (named databases `entries` and `state`) to layout 2 inside
/// `wtxn`: entries and records are copied into the main database and the named databases are
/// dropped. Returns the number of entries moved, or None if there was nothing to convert. One
/// transaction, so a crash leaves either layout, never a mix.
fn convert_layout_1(
    env: &Env<WithoutTls>,
    wtxn: &mut RwTxn,
    dbs: Dbs,
) -> Result<Option<u64>, LogError> {
    let old_entries: Option<Database<U64<BigEndian>, Bytes>> =
        env.open_database(wtxn, Some(V1_ENTRIES_DB))?;
    let old_state: Option<Database<Str, Bytes>> = env.open_database(wtxn, Some(V1_STATE_DB))?;
    if old_entries.is_none() && old_state.is_none() {
        return Ok(None);
    }
    let mut moved = 0u64;
    if let Some(old) = old_entries {
        let copied: Vec<(u64, Vec<u8>)> = old
            .iter(wtxn)?
            .map(|item| item.map(|(k, v)| (k, v.to_vec())))
            .collect::<Result<_, _>>()?;
        for (index, bytes) in &copied {
            if *index < FIRST_ENTRY {
                return Err(LogError::Inconsistent(format!(
                    "layout-1 log holds an entry under index {index}"
                )));
            }
            // Not MDB_APPEND: the named databases' own records ("entries", "state") still
            // sort after these keys until they are dropped below.
            dbs.entries.put(wtxn, index, bytes)?;
        }
        moved = copied.len() as u64;
        // SAFETY: the handle is not used after this, and no other transaction or thread uses
        // this environment yet (`open` has not returned).
        unsafe { old.remove(wtxn)? };
    }
    if let Some(old) = old_state {
        for (name, key) in V1_STATE_KEYS {
            if let Some(value) = old.get(wtxn, name)?.map(<[u8]>::to_vec) {
                dbs.state.put(wtxn, key, &value)?;
            }
        }
        // SAFETY: as above.
        unsafe { old.remove(wtxn)? };
    }
    Ok(Some(moved))
}

impl From<LogError> for raft::Error {
    fn from(e: LogError) -> Self {
        raft::Error::Store(StorageError::Other(Box::new(e)))
    }
}

/// Counters shared with [`crate::raft::RaftHandle`] for tests and metrics.
#[derive(Debug)]
pub struct StorageStats {
    /// Committed LMDB write transactions (each one fdatasyncs once, and makes the previous
    /// transaction durable); compared with `entries_appended` it shows how well proposals are
    /// group-committed.
    pub write_txns: AtomicU64,
    /// Log entries written, including ones later truncated by a new leader.
    pub entries_appended: AtomicU64,
    /// Encoded bytes of the log entries written (what the log grew by); the raft thread
    /// takes a snapshot once this grew by `RaftOptions::snapshot_bytes` since the last one.
    pub bytes_appended: AtomicU64,
    /// Explicit flushes ([`LmdbStorage::sync`]) that made the newest transaction durable
    /// because no later transaction was coming soon; ≪ `write_txns` under load.
    pub syncs: AtomicU64,
    /// Log entries per write transaction that carried any (the group-commit batch size).
    pub batch_entries: AtomicHistogram,
    /// How long each write transaction's commit took: page writes plus its fdatasync.
    pub commit_latency: AtomicHistogram,
    /// How long each explicit flush ([`LmdbStorage::sync`], one fdatasync) took.
    pub flush_latency: AtomicHistogram,
}

impl Default for StorageStats {
    fn default() -> Self {
        StorageStats {
            write_txns: AtomicU64::new(0),
            entries_appended: AtomicU64::new(0),
            bytes_appended: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            batch_entries: AtomicHistogram::counts(),
            commit_latency: AtomicHistogram::durations(),
            flush_latency: AtomicHistogram::durations(),
        }
    }
}

/// Two typed views of LMDB's main database; `Copy` so a write closure can take them without
/// borrowing `self`.
#[derive(Clone, Copy)]
struct Dbs {
    /// Log entries keyed by big-endian index (only ever used with ranges from
    /// [`FIRST_ENTRY`], which exclude the state records).
    entries: Database<U64<BigEndian>, Bytes>,
    /// Small fixed-key records (hard state, conf states, compaction point).
    state: Database<Bytes, Bytes>,
}

/// LMDB-backed `raft::Storage`. Owned by the raft thread (inside the `RawNode`).
pub struct LmdbStorage {
    /// The environment's directory, to tell a full disk from a fault (see [`LmdbStorage::write`]).
    dir: PathBuf,
    /// The environment; read transactions are opened per call and dropped at once, because a
    /// long-lived reader pins pages and makes the file grow.
    env: Env<WithoutTls>,
    /// Handles of the `entries` and `state` databases.
    dbs: Dbs,
    /// Cached copy of what is on disk, plus a commit index that may be ahead of disk
    /// (see `hard_state_dirty`). Raft reads it through `initial_state` only at startup.
    hard_state: HardState,
    /// The commit index advanced in memory but was not written. It is written only when the
    /// term or vote changes anyway, at snapshots/compaction, on a membership change and at
    /// shutdown ([`LmdbStorage::flush`]): rewriting the `state` record for a commit-only move
    /// would dirty one more scattered page in almost every transaction (a slower fdatasync).
    /// Losing it in a crash is safe: a lower commit index on disk only means Raft re-learns
    /// the commit point (every entry up to the real one is durable), and start-up raises it to
    /// the newest snapshot's index (`ensure_commit`).
    hard_state_dirty: bool,
    /// Membership Raft starts from (`initial_state`) and the one a new snapshot records.
    conf_state: ConfState,
    /// Membership at bootstrap, for replaying the log from index 1 when no snapshot exists.
    initial_conf_state: ConfState,
    /// The compaction point; `term(snapshot.index)` must keep answering after compaction.
    snapshot_meta: SnapshotMetadata,
    /// Cached highest index on disk (or the compaction point when the log is empty); saves a
    /// read transaction on each of Raft's frequent `last_index` calls.
    last_index: u64,
    /// Cached term of `last_index`, the most frequently requested term.
    last_term: u64,
    /// Where snapshot files live, so `Storage::snapshot` can hand the newest to a lagging
    /// follower. `None` in unit tests that exercise only the log.
    snapshot_dir: Option<SnapshotDir>,
    /// `Storage::snapshot` hands out a [`super::SnapshotRef`] (the transport streams the file)
    /// instead of reading the whole file into the message.
    snapshot_by_reference: bool,
    /// Shared counters (write transactions, entries).
    stats: Arc<StorageStats>,
    /// LMDB id of the newest committed write transaction. With `MDB_NOMETASYNC` its meta page
    /// may still be only in the page cache, so it is not necessarily durable.
    written_txn: usize,
    /// Every write transaction with an id `<=` this is durable: a later commit's fdatasync (or
    /// an explicit [`LmdbStorage::sync`]) has flushed its meta page.
    durable_txn: usize,
    /// Log entries `<= durable_index` (after the compaction point) are on disk with the content
    /// the log has now. Lets the raft thread check it never applies a non-durable entry.
    durable_index: u64,
    /// What `durable_index` becomes once `written_txn` is durable: the last index as of that
    /// transaction (later rewrites of the tail lower it, see [`LmdbStorage::write`]).
    written_index: u64,
    /// Lowest index that may still be stored at or below the compaction point
    /// (`snapshot_meta.index`); entries from here to the point are deleted a chunk per write
    /// transaction ([`PURGE_CHUNK`]). Readers never see them: every read checks the point.
    purge_from: u64,
}

/// Free space below which an EIO from a commit counts as a short write on a full disk.
const SHORT_WRITE_SLACK: u64 = 1 << 20;

/// Bytes an unprivileged writer may still allocate on the filesystem holding `dir`.
fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` points to writable memory of
    // the right type; statvfs only writes into it, and we read it only when it succeeded.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialized `st`.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

fn decode<M: protobuf::Message + Default>(
    what: &'static str,
    index: u64,
    bytes: &[u8],
) -> Result<M, LogError> {
    let mut m = M::default();
    m.merge_from_bytes(bytes)
        .map_err(|source| LogError::Decode {
            what,
            index,
            source,
        })?;
    Ok(m)
}

impl LmdbStorage {
    /// Opens (creating if needed) the LMDB environment in `dir`.
    pub fn open(dir: &Path, snapshot_dir: Option<SnapshotDir>) -> Result<Self, LogError> {
        Self::open_with_map_size(dir, snapshot_dir, INITIAL_MAP_SIZE)
    }

    /// [`LmdbStorage::open`] with a given initial map size (tests use a tiny one to exercise
    /// growing it on `MDB_MAP_FULL`).
    fn open_with_map_size(
        dir: &Path,
        snapshot_dir: Option<SnapshotDir>,
        map_size: usize,
    ) -> Result<Self, LogError> {
        super::create_dir_durable(dir).map_err(|source| LogError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut opts = EnvOpenOptions::new().read_txn_without_tls();
        opts.map_size(map_size).max_dbs(4);
        // SAFETY: NO_META_SYNC keeps LMDB's atomicity and consistency; it only lets the newest
        // transaction be lost on a power failure. This type accounts for that (`durable_txn`):
        // nothing is reported persisted until a later commit or `sync` has flushed it.
        unsafe { opts.flags(EnvFlags::NO_META_SYNC) };
        // SAFETY: the environment is opened once per process per directory (heed refuses a
        // second open with EnvAlreadyOpened), only this process writes it, and the files are
        // not modified behind LMDB's back.
        let env = unsafe { opts.open(dir)? };
        // Without WRITEMAP, pages reach the file through pwrite, so a full disk is an ENOSPC
        // error that aborts the transaction; with it, a full tmpfs or a sparse file that cannot
        // be filled kills the process with SIGBUS. Never open it that way.
        if env.get_flags()? & EnvFlags::WRITE_MAP.bits() != 0 {
            return Err(LogError::Inconsistent(
                "LMDB environment opened with WRITEMAP".into(),
            ));
        }
        // `data.mdb` and `lock.mdb` may have just been created: their names must be durable
        // before anything written into them is acknowledged.
        super::fsync_dir(dir).map_err(|source| LogError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut wtxn = env.write_txn()?;
        let main: Database<Bytes, Bytes> = env.create_database(&mut wtxn, None)?;
        let dbs = Dbs {
            entries: main.remap_key_type::<U64<BigEndian>>(),
            state: main,
        };
        let converted = convert_layout_1(&env, &mut wtxn, dbs)?;
        wtxn.commit()?;
        if let Some(entries) = converted {
            tracing::info!(
                dir = %dir.display(),
                entries,
                "converted the raft log to layout 2 (everything in LMDB's main database)"
            );
        }

        let rtxn = env.read_txn()?;
        let get_state = |key: &'static [u8]| -> Result<Option<Vec<u8>>, LogError> {
            Ok(dbs.state.get(&rtxn, key)?.map(<[u8]>::to_vec))
        };
        let hard_state: HardState = match get_state(KEY_HARD_STATE)? {
            Some(b) => decode("hard state", 0, &b)?,
            None => HardState::default(),
        };
        let conf_state: ConfState = match get_state(KEY_CONF_STATE)? {
            Some(b) => decode("conf state", 0, &b)?,
            None => ConfState::default(),
        };
        let initial_conf_state: ConfState = match get_state(KEY_INITIAL_CONF_STATE)? {
            Some(b) => decode("initial conf state", 0, &b)?,
            None => ConfState::default(),
        };
        let snapshot_meta: SnapshotMetadata = match get_state(KEY_SNAPSHOT_META)? {
            Some(b) => decode("snapshot metadata", 0, &b)?,
            None => SnapshotMetadata::default(),
        };
        let first = match dbs.entries.range(&rtxn, &(FIRST_ENTRY..))?.next() {
            Some(item) => Some(item?.0),
            None => None,
        };
        let last = match dbs.entries.rev_range(&rtxn, &(FIRST_ENTRY..))?.next() {
            Some(item) => {
                let (k, v) = item?;
                Some((k, decode::<Entry>("entry", k, v)?))
            }
            None => None,
        };
        drop(rtxn);
        // A previous process may have died with its last transaction's meta page unflushed.
        // Raft treats everything it reads at startup as persisted, so make that true first.
        env.force_sync().map_err(LogError::Sync)?;
        let written_txn = env.info().last_txn_id;

        // Entries at or below the compaction point may remain, still to be purged; above it
        // the log must start right after the point.
        let (last_index, last_term) = match (&first, last) {
            (Some(_), Some((k, _))) if k <= snapshot_meta.index => {
                (snapshot_meta.index, snapshot_meta.term)
            }
            (Some(first), Some((k, e))) => {
                if *first > snapshot_meta.index + 1 {
                    return Err(LogError::Inconsistent(format!(
                        "first entry is {first} but the log was compacted through {}",
                        snapshot_meta.index
                    )));
                }
                let rtxn = env.read_txn()?;
                if dbs
                    .entries
                    .get(&rtxn, &(snapshot_meta.index + 1))?
                    .is_none()
                {
                    return Err(LogError::Inconsistent(format!(
                        "entry {} (right after the compaction point) is missing",
                        snapshot_meta.index + 1
                    )));
                }
                drop(rtxn);
                if e.index != k {
                    return Err(LogError::Inconsistent(format!(
                        "entry stored under key {k} claims index {}",
                        e.index
                    )));
                }
                (k, e.term)
            }
            _ => (snapshot_meta.index, snapshot_meta.term),
        };
        let purge_from = first.map_or(snapshot_meta.index + 1, |f| f.min(snapshot_meta.index + 1));
        tracing::debug!(
            dir = %dir.display(),
            first_index = snapshot_meta.index + 1,
            last_index,
            commit = hard_state.commit,
            term = hard_state.term,
            "opened raft log"
        );
        Ok(LmdbStorage {
            dir: dir.to_path_buf(),
            env,
            dbs,
            hard_state,
            hard_state_dirty: false,
            conf_state,
            initial_conf_state,
            snapshot_meta,
            last_index,
            last_term,
            snapshot_dir,
            snapshot_by_reference: false,
            stats: Arc::new(StorageStats::default()),
            written_txn,
            durable_txn: written_txn,
            durable_index: last_index,
            written_index: last_index,
            purge_from,
        })
    }

    /// The shared counters.
    pub fn stats(&self) -> Arc<StorageStats> {
        self.stats.clone()
    }

    /// Counts into `stats` from now on (lets a handle created before the log was opened see
    /// the counters).
    pub fn use_stats(&mut self, stats: Arc<StorageStats>) {
        self.stats = stats;
    }

    /// Simulates a power failure that lost the newest transaction (its meta page was never
    /// flushed, which `MDB_NOMETASYNC` allows until the next commit or sync): reopens `dir` on
    /// the previous meta page and makes that permanent with one more commit.
    #[cfg(test)]
    pub(crate) fn roll_back_newest_txn(dir: &Path) -> Result<(), LogError> {
        let mut opts = EnvOpenOptions::new().read_txn_without_tls();
        opts.map_size(INITIAL_MAP_SIZE).max_dbs(4);
        // SAFETY: test only; no other environment on `dir` is open.
        unsafe { opts.flags(EnvFlags::PREV_SNAPSHOT) };
        // SAFETY: as in `open`.
        let env = unsafe { opts.open(dir)? };
        let mut wtxn = env.write_txn()?;
        let state: Database<Bytes, Bytes> = env
            .open_database(&wtxn, None)?
            .ok_or_else(|| LogError::Inconsistent("no main database".into()))?;
        // Rewriting a record commits a new transaction into the newest one's meta slot.
        let hs = state.get(&wtxn, KEY_HARD_STATE)?.map(<[u8]>::to_vec);
        state.put(&mut wtxn, KEY_HARD_STATE, &hs.unwrap_or_default())?;
        wtxn.commit()?;
        env.force_sync()?;
        Ok(())
    }

    /// Whether the environment maps the file writable (`MDB_WRITEMAP`); never, see `open`.
    pub fn uses_write_map(&self) -> Result<bool, LogError> {
        Ok(self.env.get_flags()? & EnvFlags::WRITE_MAP.bits() != 0)
    }

    /// True when nothing was ever written: no membership, no entries, no compaction.
    pub fn is_fresh(&self) -> bool {
        self.initial_conf_state == ConfState::default()
            && self.conf_state == ConfState::default()
            && self.last_index == 0
            && self.snapshot_meta.index == 0
    }

    /// Records the bootstrap membership of a brand-new group.
    pub fn bootstrap(&mut self, conf_state: ConfState) -> Result<(), LogError> {
        let bytes = conf_state.write_to_bytes()?;
        self.write(None, |txn, dbs| {
            dbs.state.put(txn, KEY_INITIAL_CONF_STATE, &bytes)?;
            dbs.state.put(txn, KEY_CONF_STATE, &bytes)?;
            Ok(())
        })?;
        self.initial_conf_state = conf_state.clone();
        self.conf_state = conf_state;
        Ok(())
    }

    /// Bootstrap membership (what a replay from index 1 starts with).
    pub fn initial_conf_state(&self) -> &ConfState {
        &self.initial_conf_state
    }

    /// Membership as of the last applied conf change.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Sets the membership Raft starts from, in memory only. On restart the state machine is
    /// rebuilt from a snapshot (or from nothing) and conf changes after that point are replayed,
    /// so Raft must start from the membership *at the restore point*, not the latest one.
    pub fn set_replay_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Term, vote and commit index (the commit index may be ahead of disk).
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The compaction point (index 0 if never compacted).
    pub fn snapshot_metadata(&self) -> &SnapshotMetadata {
        &self.snapshot_meta
    }

    /// First index still in the log.
    pub fn first_index_cached(&self) -> u64 {
        self.snapshot_meta.index + 1
    }

    /// Last index in the log (the compaction point if it is empty).
    pub fn last_index_cached(&self) -> u64 {
        self.last_index
    }

    /// Runs `f` in one write transaction and commits it. If the map is full it is doubled
    /// and `f` re-run (LMDB cannot resize with a txn open) until it fits or the map reaches
    /// [`MAX_MAP_SIZE`].
    ///
    /// The commit fdatasyncs the data pages (which also flushes the previous transaction's
    /// meta page: same file) and then writes its own meta page unsynced. So a successful commit
    /// makes the *previous* transaction durable, not this one. `rewrite_from` is the first log
    /// index whose content this transaction changes (appended, overwritten or discarded by a
    /// snapshot), `None` if it leaves the log alone.
    fn write<F>(&mut self, rewrite_from: Option<u64>, mut f: F) -> Result<(), LogError>
    where
        F: FnMut(&mut RwTxn<'_>, Dbs) -> Result<(), LogError>,
    {
        let dbs = self.dbs;
        let env = &self.env;
        let stats = &self.stats;
        let attempt = |f: &mut F| -> Result<(), LogError> {
            crate::failpoint!("raft-log-write", |arg| Err(LogError::Lmdb(
                heed::Error::Io(super::injected_io_error(arg))
            )));
            let mut txn = env.write_txn()?;
            f(&mut txn, dbs)?;
            let committing = std::time::Instant::now();
            txn.commit()?;
            stats.commit_latency.observe_duration(committing.elapsed());
            Ok(())
        };
        let mut result = attempt(&mut f);
        // Bounded: the map doubles each round, and stops at MAX_MAP_SIZE (40 rounds from 1 B).
        for _ in 0..40 {
            match &result {
                Err(e) if e.is_map_full() && env.info().map_size < MAX_MAP_SIZE => {}
                _ => break,
            }
            // Without WRITEMAP a larger map costs address space, not disk: whether the disk
            // has room shows in the retried commit (ENOSPC then stalls the raft thread).
            let new_size = env.info().map_size.saturating_mul(2).min(MAX_MAP_SIZE);
            tracing::warn!(new_size, "LMDB map full; growing");
            // SAFETY: no transaction is open on this environment: the failed one was dropped
            // (aborted) above and all access happens on this thread.
            unsafe { env.resize(new_size)? };
            result = attempt(&mut f);
        }
        result.map_err(|e| self.classify_write_error(e))?;
        self.stats.write_txns.fetch_add(1, Ordering::Relaxed);
        // LMDB skips an unchanged transaction entirely (no sync, no new id): only a new id
        // proves the fdatasync that made the previous transaction durable happened.
        let txn = self.env.info().last_txn_id;
        if txn != self.written_txn {
            self.durable_txn = self.written_txn;
            self.durable_index = match rewrite_from {
                Some(from) => self.written_index.min(from.saturating_sub(1)),
                None => self.written_index,
            };
            self.written_txn = txn;
        }
        Ok(())
    }

    /// LMDB reports a *short* write (the filesystem filled up part-way through a `pwrite`) as
    /// EIO, not ENOSPC (`mdb_page_flush`: "short write, filesystem full?"). An EIO from a write
    /// transaction while the filesystem has less than [`SHORT_WRITE_SLACK`] left is taken to be
    /// that, and reported as ENOSPC so it is retried rather than fatal.
    fn classify_write_error(&self, e: LogError) -> LogError {
        let LogError::Lmdb(heed::Error::Io(io)) = &e else {
            return e;
        };
        if io.raw_os_error() != Some(libc::EIO) {
            return e;
        }
        match available_bytes(&self.dir) {
            Some(free) if free < SHORT_WRITE_SLACK => {
                tracing::debug!(
                    free,
                    "EIO from an LMDB commit on a full filesystem: a short write"
                );
                LogError::Lmdb(heed::Error::Io(std::io::Error::from_raw_os_error(
                    libc::ENOSPC,
                )))
            }
            _ => e,
        }
    }

    /// Flushes the newest transaction if it is not durable yet (`mdb_env_sync(force)`: one
    /// fdatasync). Returns whether a flush was needed.
    pub fn sync(&mut self) -> Result<bool, LogError> {
        if self.durable_txn == self.written_txn {
            return Ok(false);
        }
        crate::failpoint!("raft-log-fsync", |arg| Err(LogError::Sync(
            heed::Error::Io(super::injected_io_error(arg))
        )));
        let flushing = std::time::Instant::now();
        self.env.force_sync().map_err(LogError::Sync)?;
        self.stats
            .flush_latency
            .observe_duration(flushing.elapsed());
        self.durable_txn = self.written_txn;
        self.durable_index = self.written_index;
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// LMDB id of the newest committed write transaction (not necessarily durable).
    pub fn written_txn(&self) -> usize {
        self.written_txn
    }

    /// Every write transaction with an id `<=` this one is durable.
    pub fn durable_txn(&self) -> usize {
        self.durable_txn
    }

    /// Log entries up to this index are durable with their current content.
    pub fn durable_index(&self) -> u64 {
        self.durable_index
    }

    /// Persists one Ready in a single transaction: an incoming snapshot's metadata (which
    /// discards the whole log), new entries (truncating any conflicting tail first), and the
    /// hard state. Caches are updated only after the commit succeeded.
    pub fn write_ready(
        &mut self,
        entries: &[Entry],
        hs: Option<&HardState>,
        snapshot: Option<&SnapshotMetadata>,
    ) -> Result<(), LogError> {
        self.write_ready_with(entries, hs, snapshot, false)
    }

    /// [`LmdbStorage::write_ready`]; `write_commit`: also write a commit index that moved
    /// only in memory.
    fn write_ready_with(
        &mut self,
        entries: &[Entry],
        hs: Option<&HardState>,
        snapshot: Option<&SnapshotMetadata>,
        write_commit: bool,
    ) -> Result<(), LogError> {
        let mut new_hs = self.hard_state.clone();
        let mut new_snap = None;
        let mut new_cs = None;
        let (mut last_index, mut last_term) = (self.last_index, self.last_term);
        let mut compacted = self.snapshot_meta.index;
        if let Some(meta) = snapshot {
            if meta.index < self.snapshot_meta.index {
                return Err(LogError::Inconsistent(format!(
                    "incoming snapshot at {} is older than the compaction point {}",
                    meta.index, self.snapshot_meta.index
                )));
            }
            new_hs.commit = new_hs.commit.max(meta.index);
            new_hs.term = new_hs.term.max(meta.term);
            (last_index, last_term) = (meta.index, meta.term);
            compacted = meta.index;
            new_cs = Some(meta.get_conf_state().clone());
            new_snap = Some(meta.clone());
        }
        if let Some(h) = hs {
            let commit = new_hs.commit.max(h.commit);
            new_hs = h.clone();
            new_hs.commit = commit;
        }
        let truncate_from = match entries.first() {
            Some(e) if e.index <= compacted => {
                return Err(LogError::OverwriteCompacted {
                    first: e.index,
                    compacted,
                })
            }
            Some(e) if e.index > last_index + 1 => {
                return Err(LogError::Gap {
                    first: e.index,
                    last: last_index,
                })
            }
            Some(e) if e.index <= last_index => Some(e.index),
            _ => None,
        };
        let encoded = entries
            .iter()
            .map(|e| Ok((e.index, e.write_to_bytes()?)))
            .collect::<Result<Vec<_>, LogError>>()?;
        if let Some(e) = entries.last() {
            (last_index, last_term) = (e.index, e.term);
        }
        // Term and vote are on disk before anything depends on them (this transaction); the
        // commit index alone stays in memory (see `hard_state_dirty`).
        let term_or_vote_moved =
            hs.is_some_and(|h| h.term != self.hard_state.term || h.vote != self.hard_state.vote);
        let commit_moved = new_hs.commit != self.hard_state.commit;
        let hs_changed = term_or_vote_moved
            || snapshot.is_some()
            || (write_commit && (self.hard_state_dirty || commit_moved));
        let hs_bytes = hs_changed.then(|| new_hs.write_to_bytes()).transpose()?;
        let snap_bytes = new_snap.as_ref().map(|m| m.write_to_bytes()).transpose()?;
        let cs_bytes = new_cs.as_ref().map(|c| c.write_to_bytes()).transpose()?;
        if encoded.is_empty() && hs_bytes.is_none() && snap_bytes.is_none() {
            if commit_moved {
                self.hard_state = new_hs;
                self.hard_state_dirty = true;
            }
            return Ok(());
        }

        let rewrite_from = match (snapshot, entries.first()) {
            (Some(m), _) => Some(m.index + 1),
            (None, Some(e)) => Some(e.index),
            (None, None) => None,
        };
        // An installed snapshot deletes the whole log anyway.
        let purge = if snap_bytes.is_none() {
            self.purge_range()
        } else {
            None
        };
        self.write(rewrite_from, |txn, dbs| {
            if let Some(b) = &snap_bytes {
                dbs.entries.delete_range(txn, &(FIRST_ENTRY..))?;
                dbs.state.put(txn, KEY_SNAPSHOT_META, b)?;
            }
            if let Some(range) = &purge {
                dbs.entries.delete_range(txn, range)?;
            }
            if let Some(b) = &cs_bytes {
                dbs.state.put(txn, KEY_CONF_STATE, b)?;
            }
            if let (Some(from), None) = (truncate_from, &snap_bytes) {
                dbs.entries.delete_range(txn, &(from..))?;
            }
            for (index, bytes) in &encoded {
                dbs.entries
                    .put_with_flags(txn, PutFlags::APPEND, index, bytes)?;
            }
            if let Some(b) = &hs_bytes {
                dbs.state.put(txn, KEY_HARD_STATE, b)?;
            }
            Ok(())
        })?;

        if let Some(from) = truncate_from {
            tracing::debug!(index = from, "truncated conflicting log tail");
        }
        self.stats
            .entries_appended
            .fetch_add(encoded.len() as u64, Ordering::Relaxed);
        if !encoded.is_empty() {
            self.stats.batch_entries.observe(encoded.len() as u64);
        }
        self.hard_state_dirty = if hs_bytes.is_some() {
            false
        } else {
            self.hard_state_dirty || commit_moved
        };
        self.stats.bytes_appended.fetch_add(
            encoded.iter().map(|e| e.1.len() as u64).sum(),
            Ordering::Relaxed,
        );
        self.hard_state = new_hs;
        if let Some(range) = purge {
            self.purge_from = range.end() + 1;
        }
        if let Some(m) = new_snap {
            self.purge_from = m.index + 1;
            self.snapshot_meta = m;
        }
        if let Some(c) = new_cs {
            self.conf_state = c;
        }
        (self.last_index, self.last_term) = (last_index, last_term);
        if rewrite_from.is_some() {
            self.written_index = last_index;
        }
        Ok(())
    }

    /// Raises the commit index in memory; written with the next transaction (see
    /// `hard_state_dirty`).
    pub fn set_commit(&mut self, commit: u64) {
        if commit > self.hard_state.commit {
            self.hard_state.commit = commit;
            self.hard_state_dirty = true;
        }
    }

    /// Raises the commit index and writes it now. Used at startup when a snapshot file is
    /// newer than the commit index on disk (crash between snapshot write and the next txn):
    /// Raft requires `applied <= commit`.
    pub fn ensure_commit(&mut self, commit: u64) -> Result<(), LogError> {
        self.set_commit(commit);
        self.flush()
    }

    /// Writes a pending commit-index update, if any.
    pub fn flush(&mut self) -> Result<(), LogError> {
        if !self.hard_state_dirty {
            return Ok(());
        }
        self.write_ready_with(&[], None, None, true)
    }

    /// Whether `Storage::snapshot` hands out descriptors of snapshot files (the transport
    /// streams them) rather than whole images.
    pub fn set_snapshot_by_reference(&mut self, by_reference: bool) {
        self.snapshot_by_reference = by_reference;
    }

    /// Persists the membership after a conf change was applied.
    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<(), LogError> {
        let bytes = cs.write_to_bytes()?;
        let hs_bytes = self
            .hard_state_dirty
            .then(|| self.hard_state.write_to_bytes())
            .transpose()?;
        self.write(None, |txn, dbs| {
            dbs.state.put(txn, KEY_CONF_STATE, &bytes)?;
            if let Some(b) = &hs_bytes {
                dbs.state.put(txn, KEY_HARD_STATE, b)?;
            }
            Ok(())
        })?;
        self.hard_state_dirty = false;
        self.conf_state = cs;
        Ok(())
    }

    /// Records `meta` as the compaction point: entries `<= meta.index` are gone for every
    /// reader at once, and deleted from the file a chunk per later write transaction
    /// ([`PURGE_CHUNK`]). The caller guarantees a durable snapshot covering `meta.index` exists.
    pub fn compact(&mut self, meta: &SnapshotMetadata) -> Result<(), LogError> {
        let index = meta.index;
        if index <= self.snapshot_meta.index {
            return Ok(());
        }
        if index > self.last_index {
            return Err(LogError::CompactBeyondLog {
                index,
                last: self.last_index,
            });
        }
        let stored_term = self.term_of(index)?;
        if stored_term != meta.term {
            return Err(LogError::Inconsistent(format!(
                "compaction point {index} has term {stored_term} in the log but {} in the snapshot",
                meta.term
            )));
        }
        let mut new_hs = self.hard_state.clone();
        new_hs.commit = new_hs.commit.max(index);
        let hs_bytes = new_hs.write_to_bytes()?;
        let meta_bytes = meta.write_to_bytes()?;
        self.write(None, |txn, dbs| {
            dbs.state.put(txn, KEY_SNAPSHOT_META, &meta_bytes)?;
            dbs.state.put(txn, KEY_HARD_STATE, &hs_bytes)?;
            Ok(())
        })?;
        self.hard_state = new_hs;
        self.hard_state_dirty = false;
        self.snapshot_meta = meta.clone();
        tracing::info!(
            index,
            term = meta.term,
            purge_from = self.purge_from,
            "compacted raft log (older entries are deleted a chunk per transaction)"
        );
        Ok(())
    }

    /// The next chunk of entries below the compaction point to delete, if any are left.
    fn purge_range(&self) -> Option<std::ops::RangeInclusive<u64>> {
        let to = self
            .snapshot_meta
            .index
            .min(self.purge_from.saturating_add(PURGE_CHUNK - 1));
        (self.purge_from <= to).then_some(self.purge_from..=to)
    }

    /// Deletes the next chunk below the compaction point in a transaction of its own; `false`
    /// once nothing is left. For an idle log, which has no other transactions to ride on.
    pub fn purge_step(&mut self) -> Result<bool, LogError> {
        let Some(range) = self.purge_range() else {
            return Ok(false);
        };
        self.write(None, |txn, dbs| {
            dbs.entries.delete_range(txn, &range)?;
            Ok(())
        })?;
        self.purge_from = range.end() + 1;
        Ok(true)
    }

    /// Number of entries physically present, including any still to be purged below the
    /// compaction point (test/diagnostics; scans nothing, uses LMDB stats).
    pub fn stored_entry_count(&self) -> Result<u64, LogError> {
        let rtxn = self.env.read_txn()?;
        let mut records = 0;
        for key in STATE_KEYS {
            if self.dbs.state.get(&rtxn, key)?.is_some() {
                records += 1;
            }
        }
        Ok(self.dbs.state.len(&rtxn)?.saturating_sub(records))
    }

    fn term_of(&self, idx: u64) -> Result<u64, LogError> {
        let rtxn = self.env.read_txn()?;
        match self.dbs.entries.get(&rtxn, &idx)? {
            Some(bytes) => Ok(decode::<Entry>("entry", idx, bytes)?.term),
            None => Err(LogError::Inconsistent(format!(
                "entry {idx} missing inside the log range"
            ))),
        }
    }
}

impl Storage for LmdbStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snapshot_meta.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let rtxn = self.env.read_txn().map_err(LogError::from)?;
        let iter = self
            .dbs
            .entries
            .range(&rtxn, &(low..high))
            .map_err(LogError::from)?;
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        for (expected, item) in (low..).zip(iter) {
            let (idx, bytes) = item.map_err(LogError::from)?;
            if idx != expected {
                return Err(LogError::Inconsistent(format!(
                    "hole in log: expected entry {expected}, found {idx}"
                ))
                .into());
            }
            size += bytes.len() as u64;
            // Like raft::util::limit_size: always return at least one entry.
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(decode::<Entry>("entry", idx, bytes)?);
        }
        if out.is_empty() {
            return Err(LogError::Inconsistent(format!("entries [{low}, {high}) missing")).into());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snapshot_meta.index {
            return Ok(self.snapshot_meta.term);
        }
        if idx < self.snapshot_meta.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if idx == self.last_index {
            return Ok(self.last_term);
        }
        Ok(self.term_of(idx)?)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot_meta.index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    /// The newest snapshot file, for a follower that needs entries we compacted away. By
    /// reference (the transport streams files): only the header is read, and the data is a
    /// descriptor. Otherwise the whole file is read and checked (in-process transports).
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let unavailable = || raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable);
        let Some(dir) = &self.snapshot_dir else {
            return Err(unavailable());
        };
        if self.snapshot_by_reference {
            let newest = dir.newest_header().map_err(|e| {
                tracing::warn!(error = %e, to, "cannot read snapshot header for follower");
                unavailable()
            })?;
            return match newest {
                Some((h, _)) if h.index >= request_index => {
                    let mut s = Snapshot {
                        data: super::SnapshotRef::of(&h).encode().into(),
                        ..Default::default()
                    };
                    let meta = s.mut_metadata();
                    meta.index = h.index;
                    meta.term = h.term;
                    meta.set_conf_state(h.conf_state.clone());
                    tracing::info!(
                        index = h.index,
                        term = h.term,
                        to,
                        bytes = h.file_len(),
                        "sending snapshot (streamed)"
                    );
                    Ok(s)
                }
                _ => Err(unavailable()),
            };
        }
        let newest = dir.load_newest_valid().map_err(|e| {
            tracing::warn!(error = %e, to, "cannot read snapshot for follower");
            unavailable()
        })?;
        match newest {
            Some(f) if f.index >= request_index => {
                let mut s = Snapshot {
                    data: f.data.into(),
                    ..Default::default()
                };
                let meta = s.mut_metadata();
                meta.index = f.index;
                meta.term = f.term;
                meta.set_conf_state(f.conf_state);
                tracing::info!(index = f.index, term = f.term, to, "sending snapshot");
                Ok(s)
            }
            _ => Err(unavailable()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("e{index}").into_bytes().into(),
            ..Default::default()
        }
    }

    fn hs(term: u64, commit: u64) -> HardState {
        HardState {
            term,
            commit,
            ..Default::default()
        }
    }

    fn ctx() -> GetEntriesContext {
        GetEntriesContext::empty(false)
    }

    #[test]
    fn a_full_map_grows_and_the_write_goes_through() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("raft");
        let mut s = LmdbStorage::open_with_map_size(&dir, None, 1 << 20).unwrap();
        let before = s.env.info().map_size;
        // 4 MiB of entries in one transaction: does not fit a 1 MiB map.
        let ents: Vec<Entry> = (1..=64)
            .map(|index| Entry {
                index,
                term: 1,
                data: vec![7u8; 64 << 10].into(),
                ..Default::default()
            })
            .collect();
        s.write_ready(&ents, Some(&hs(1, 0)), None).unwrap();
        assert!(s.env.info().map_size > before);
        assert_eq!(s.last_index_cached(), 64);
        assert_eq!(
            s.entries(64, 65, None, ctx()).unwrap()[0].data.len(),
            64 << 10
        );
    }

    /// A compaction moves the point at once and deletes the entries below it a chunk per
    /// later transaction: reads never see them, a reopen in the middle of the purge accepts
    /// the leftovers (and goes on purging), and in the end nothing below the point is stored.
    #[test]
    fn compaction_purges_old_entries_a_chunk_per_transaction() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("raft");
        let total = 3 * PURGE_CHUNK + 10;
        let point = 2 * PURGE_CHUNK + 5;
        let meta = |index| SnapshotMetadata {
            index,
            term: 1,
            ..Default::default()
        };
        {
            let mut s = LmdbStorage::open(&dir, None).unwrap();
            let ents: Vec<_> = (1..=total).map(|i| ent(i, 1)).collect();
            s.write_ready(&ents, Some(&hs(1, total)), None).unwrap();
            s.compact(&meta(point)).unwrap();
            // The point moved for every reader, but the entries are still in the file.
            assert_eq!(s.first_index().unwrap(), point + 1);
            assert_eq!(
                s.entries(point, point + 1, None, ctx()),
                Err(::raft::Error::Store(StorageError::Compacted))
            );
            assert_eq!(s.stored_entry_count().unwrap(), total);
            // One more ordinary transaction carries one chunk.
            s.write_ready(&[ent(total + 1, 1)], None, None).unwrap();
            assert_eq!(s.stored_entry_count().unwrap(), total + 1 - PURGE_CHUNK);
            s.sync().unwrap();
        }
        {
            // Reopened mid-purge (as after a crash): the leftovers below the point are fine.
            let mut s = LmdbStorage::open(&dir, None).unwrap();
            assert_eq!(
                (s.first_index().unwrap(), s.last_index().unwrap()),
                (point + 1, total + 1)
            );
            assert_eq!(
                s.entries(point + 1, total + 2, None, ctx()).unwrap().len() as u64,
                total + 1 - point
            );
            let mut steps = 0;
            while s.purge_step().unwrap() {
                steps += 1;
            }
            assert_eq!(
                steps, 2,
                "the rest of the {point} entries in chunks of {PURGE_CHUNK}"
            );
            assert_eq!(s.stored_entry_count().unwrap(), total + 1 - point);
            assert!(!s.purge_step().unwrap());
            s.sync().unwrap();
        }
        // Everything the log holds above the point survived the purge and the reopen.
        let s = LmdbStorage::open(&dir, None).unwrap();
        let kept = s.entries(point + 1, total + 2, None, ctx()).unwrap();
        assert_eq!(kept.first().map(|e| e.index), Some(point + 1));
        assert_eq!(kept.last().map(|e| e.index), Some(total + 1));
        assert_eq!(s.stored_entry_count().unwrap(), total + 1 - point);
    }

    /// A log whose every stored entry is at or below the compaction point (compacted, then
    /// the process died before anything was purged or appended) opens with the point as its
    /// last index.
    #[test]
    fn a_log_holding_only_entries_to_purge_opens() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("raft");
        {
            let mut s = LmdbStorage::open(&dir, None).unwrap();
            let ents: Vec<_> = (1..=20).map(|i| ent(i, 1)).collect();
            s.write_ready(&ents, Some(&hs(1, 20)), None).unwrap();
            s.compact(&SnapshotMetadata {
                index: 20,
                term: 1,
                ..Default::default()
            })
            .unwrap();
            s.sync().unwrap();
        }
        let mut s = LmdbStorage::open(&dir, None).unwrap();
        assert_eq!(
            (s.first_index().unwrap(), s.last_index().unwrap()),
            (21, 20)
        );
        assert_eq!(s.term(20).unwrap(), 1);
        assert!(s.purge_step().unwrap());
        assert_eq!(s.stored_entry_count().unwrap(), 0);
        s.write_ready(&[ent(21, 1)], None, None).unwrap();
        assert_eq!(s.last_index().unwrap(), 21);
    }

    #[test]
    fn append_truncate_compact_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("raft");
        {
            let mut s = LmdbStorage::open(&dir, None).unwrap();
            assert!(s.is_fresh());
            s.bootstrap(ConfState {
                voters: vec![1],
                ..Default::default()
            })
            .unwrap();
            let ents: Vec<_> = (1..=10).map(|i| ent(i, 1)).collect();
            s.write_ready(&ents, Some(&hs(1, 0)), None).unwrap();
            assert_eq!(s.stats().write_txns.load(Ordering::Relaxed), 2);
            assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 10));
            // A new leader overwrites 8..: the old tail must disappear.
            s.write_ready(&[ent(8, 2), ent(9, 2)], Some(&hs(2, 7)), None)
                .unwrap();
            assert_eq!(s.last_index().unwrap(), 9);
            assert_eq!(s.term(9).unwrap(), 2);
            assert_eq!(s.term(7).unwrap(), 1);
            assert_eq!(s.entries(1, 10, None, ctx()).unwrap().len(), 9);
            // Size limit returns at least one entry.
            assert_eq!(s.entries(1, 10, 0, ctx()).unwrap().len(), 1);
            assert!(s.entries(1, 11, None, ctx()).is_err());
            // Gap and overwrite-compacted are errors, not panics.
            assert!(matches!(
                s.write_ready(&[ent(11, 2)], None, None),
                Err(LogError::Gap { .. })
            ));

            s.set_commit(9);
            let meta = SnapshotMetadata {
                index: 5,
                term: 1,
                ..Default::default()
            };
            s.compact(&meta).unwrap();
            assert_eq!(s.first_index().unwrap(), 6);
            assert_eq!(s.term(5).unwrap(), 1, "term(first-1) after compaction");
            assert_eq!(s.term(4), Err(raft::Error::Store(StorageError::Compacted)));
            assert_eq!(
                s.entries(5, 7, None, ctx()),
                Err(raft::Error::Store(StorageError::Compacted))
            );
            // Entries 1..=5 are deleted by the next transaction (here one of its own).
            assert_eq!(s.stored_entry_count().unwrap(), 9);
            assert!(s.purge_step().unwrap());
            assert_eq!(s.stored_entry_count().unwrap(), 4);
            assert!(matches!(
                s.write_ready(&[ent(5, 3)], None, None),
                Err(LogError::OverwriteCompacted { .. })
            ));
        }
        let s = LmdbStorage::open(&dir, None).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (6, 9));
        assert_eq!(s.term(5).unwrap(), 1);
        assert_eq!(s.term(9).unwrap(), 2);
        assert_eq!(s.hard_state().commit, 9);
        assert_eq!(s.initial_conf_state().voters, vec![1]);
        let e = s.entries(6, 10, None, ctx()).unwrap();
        assert_eq!(
            e.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            vec![(6, 1), (7, 1), (8, 2), (9, 2)]
        );
    }

    #[test]
    fn incoming_snapshot_replaces_log() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("raft");
        let mut s = LmdbStorage::open(&dir, None).unwrap();
        let ents: Vec<_> = (1..=3).map(|i| ent(i, 1)).collect();
        s.write_ready(&ents, Some(&hs(1, 3)), None).unwrap();
        let mut meta = SnapshotMetadata {
            index: 20,
            term: 4,
            ..Default::default()
        };
        meta.mut_conf_state().voters = vec![1, 2, 3];
        s.write_ready(&[], Some(&hs(4, 20)), Some(&meta)).unwrap();
        assert_eq!(
            (s.first_index().unwrap(), s.last_index().unwrap()),
            (21, 20)
        );
        assert_eq!(s.term(20).unwrap(), 4);
        assert_eq!(s.stored_entry_count().unwrap(), 0);
        s.write_ready(&[ent(21, 4)], None, None).unwrap();
        drop(s);
        let s = LmdbStorage::open(&dir, None).unwrap();
        assert_eq!(
            (s.first_index().unwrap(), s.last_index().unwrap()),
            (21, 21)
        );
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1, 2, 3]);
        assert_eq!(s.hard_state().commit, 20);
    }

    #[test]
    fn a_commit_makes_the_previous_one_durable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("raft");
        let mut s = LmdbStorage::open(&dir, None).unwrap();
        // Whatever was on disk at open is flushed.
        assert_eq!(s.durable_txn(), s.written_txn());
        s.bootstrap(ConfState {
            voters: vec![1],
            ..Default::default()
        })
        .unwrap();
        let bootstrapped = s.written_txn();
        assert_eq!(
            s.durable_txn(),
            bootstrapped - 1,
            "NO_META_SYNC: newest not durable"
        );
        let ents: Vec<_> = (1..=5).map(|i| ent(i, 1)).collect();
        s.write_ready(&ents, Some(&hs(1, 0)), None).unwrap();
        assert_eq!(s.durable_txn(), bootstrapped);
        assert_eq!(
            s.durable_index(),
            0,
            "entries 1..=5 are in the unflushed txn"
        );
        assert!(s.sync().unwrap());
        assert_eq!((s.durable_txn(), s.durable_index()), (s.written_txn(), 5));
        assert!(!s.sync().unwrap(), "nothing left to flush");
        s.write_ready(&[ent(6, 1), ent(7, 1)], None, None).unwrap();
        assert_eq!(s.durable_index(), 5);
        // A new leader rewrites 4..: what is durable for the *current* content ends at 3.
        s.write_ready(&[ent(4, 2), ent(5, 2)], Some(&hs(2, 3)), None)
            .unwrap();
        assert_eq!(s.durable_index(), 3);
        // A commit without log changes still flushes the previous transaction.
        s.set_conf_state(ConfState {
            voters: vec![1],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.durable_index(), 5);
        assert_eq!(s.stats().syncs.load(Ordering::Relaxed), 1);

        // Unflushed tail, then a power failure that loses exactly that transaction.
        s.write_ready(&[ent(6, 2)], None, None).unwrap();
        assert_eq!(s.durable_index(), 5);
        drop(s);
        LmdbStorage::roll_back_newest_txn(&dir).unwrap();
        let s = LmdbStorage::open(&dir, None).unwrap();
        assert_eq!(s.last_index().unwrap(), 5);
        assert_eq!(s.term(5).unwrap(), 2);
        assert_eq!(s.hard_state().term, 2);
    }

    /// Reads the hard state as stored on disk (not the cache).
    fn stored_hard_state(dir: &Path) -> HardState {
        let s = LmdbStorage::open(dir, None).unwrap();
        s.hard_state().clone()
    }

    #[test]
    fn a_commit_only_move_is_not_written_until_needed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("raft");
        {
            let mut s = LmdbStorage::open(&dir, None).unwrap();
            s.bootstrap(ConfState {
                voters: vec![1],
                ..Default::default()
            })
            .unwrap();
            // Term 1 is new: written with the entries.
            s.write_ready(&[ent(1, 1), ent(2, 1)], Some(&hs(1, 0)), None)
                .unwrap();
            // Later Readies move only the commit index: entries are written, the state
            // record is not (one scattered page less per transaction).
            s.write_ready(&[ent(3, 1)], Some(&hs(1, 2)), None).unwrap();
            s.write_ready(&[ent(4, 1)], Some(&hs(1, 3)), None).unwrap();
            assert_eq!(s.hard_state().commit, 3, "the cache has the newest commit");
            // A crash here (no flush) keeps the entries and an older commit index.
            drop(s);
        }
        assert_eq!(stored_hard_state(&dir).commit, 0);
        {
            let s = LmdbStorage::open(&dir, None).unwrap();
            assert_eq!(s.last_index().unwrap(), 4);
        }
        {
            let mut s = LmdbStorage::open(&dir, None).unwrap();
            s.write_ready(&[ent(5, 1)], Some(&hs(1, 4)), None).unwrap();
            // A new term is written at once, with the newest commit.
            s.write_ready(&[ent(6, 2)], Some(&hs(2, 5)), None).unwrap();
            assert_eq!(stored_hard_state_of(&s), (2, 5));
            // Commit-only again, then an orderly shutdown writes it.
            s.write_ready(&[], Some(&hs(2, 6)), None).unwrap();
            assert_eq!(stored_hard_state_of(&s), (2, 5));
            s.flush().unwrap();
            assert_eq!(stored_hard_state_of(&s), (2, 6));
        }
        let stored = stored_hard_state(&dir);
        assert_eq!((stored.term, stored.commit), (2, 6));
    }

    /// (term, commit) of the hard state record in LMDB, read through a fresh transaction.
    fn stored_hard_state_of(s: &LmdbStorage) -> (u64, u64) {
        let rtxn = s.env.read_txn().unwrap();
        let bytes = s.dbs.state.get(&rtxn, KEY_HARD_STATE).unwrap().unwrap();
        let mut hs = HardState::default();
        protobuf::Message::merge_from_bytes(&mut hs, bytes).unwrap();
        (hs.term, hs.commit)
    }

    /// Writes a layout-1 environment by hand: entries 6..=9 (terms 1, 1, 2, 2) in a named
    /// database, the four records in another, compacted through 5.
    fn write_layout_1(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let mut opts = EnvOpenOptions::new().read_txn_without_tls();
        opts.map_size(INITIAL_MAP_SIZE).max_dbs(4);
        // SAFETY: test only; nothing else has this directory open.
        let env = unsafe { opts.open(dir).unwrap() };
        let mut wtxn = env.write_txn().unwrap();
        let entries: Database<U64<BigEndian>, Bytes> =
            env.create_database(&mut wtxn, Some("entries")).unwrap();
        let state: Database<Str, Bytes> = env.create_database(&mut wtxn, Some("state")).unwrap();
        for (index, term) in [(6, 1), (7, 1), (8, 2), (9, 2)] {
            let e = ent(index, term);
            entries
                .put(&mut wtxn, &index, &e.write_to_bytes().unwrap())
                .unwrap();
        }
        let cs = ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        };
        let mut meta = SnapshotMetadata {
            index: 5,
            term: 1,
            ..Default::default()
        };
        meta.set_conf_state(cs.clone());
        let records: [(&str, Vec<u8>); 4] = [
            ("hard_state", hs(2, 8).write_to_bytes().unwrap()),
            ("conf_state", cs.write_to_bytes().unwrap()),
            ("initial_conf_state", cs.write_to_bytes().unwrap()),
            ("snapshot_meta", meta.write_to_bytes().unwrap()),
        ];
        for (name, bytes) in &records {
            state.put(&mut wtxn, name, bytes).unwrap();
        }
        wtxn.commit().unwrap();
        env.force_sync().unwrap();
        env.prepare_for_closing().wait();
    }

    #[test]
    fn a_layout_1_log_is_converted_losslessly_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("raft");
        write_layout_1(&dir);
        {
            let mut s = LmdbStorage::open(&dir, None).unwrap();
            assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (6, 9));
            assert_eq!(s.term(5).unwrap(), 1);
            assert_eq!(s.term(8).unwrap(), 2);
            assert_eq!((s.hard_state().term, s.hard_state().commit), (2, 8));
            assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
            assert_eq!(s.initial_conf_state().voters, vec![1, 2, 3]);
            assert_eq!(s.stored_entry_count().unwrap(), 4);
            let got: Vec<(u64, u64)> = s
                .entries(6, 10, None, ctx())
                .unwrap()
                .iter()
                .map(|e| (e.index, e.term))
                .collect();
            assert_eq!(got, [(6, 1), (7, 1), (8, 2), (9, 2)]);
            // The converted log takes appends (MDB_APPEND: entries are the largest keys),
            // truncation and compaction as before.
            s.write_ready(&[ent(10, 3), ent(11, 3)], Some(&hs(3, 9)), None)
                .unwrap();
            s.write_ready(&[ent(11, 4)], Some(&hs(4, 9)), None).unwrap();
            s.set_commit(10);
            s.compact(&SnapshotMetadata {
                index: 7,
                term: 1,
                ..Default::default()
            })
            .unwrap();
            assert!(s.purge_step().unwrap());
            s.flush().unwrap();
            s.sync().unwrap();
        }
        let s = LmdbStorage::open(&dir, None).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (8, 11));
        assert_eq!(s.term(11).unwrap(), 4);
        assert_eq!(s.stored_entry_count().unwrap(), 4);
        assert_eq!(s.hard_state().term, 4);
        assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
        // The named databases are gone: nothing is left to convert a second time.
        let rtxn = s.env.read_txn().unwrap();
        let old: Option<Database<Str, Bytes>> = s.env.open_database(&rtxn, Some("state")).unwrap();
        assert!(old.is_none());
    }

    #[test]
    fn state_records_sort_before_every_entry_key() {
        // The layout's premise: appends stay appends.
        let smallest_entry = FIRST_ENTRY.to_be_bytes();
        for key in STATE_KEYS {
            assert!(key < &smallest_entry[..], "{key:?}");
        }
    }
}
