//! `rookery export zookeeper --data-dir ROOKERY_DATA_DIR --to ZK_DATA_DIR`: the state of a
//! (stopped) rookery data dir, its newest snapshot plus every committed log entry after it
//! applied exactly as the server applies them at start-up, written as a ZooKeeper 3.8
//! snapshot `ZK_DATA_DIR/version-2/snapshot.<last zxid>` that Apache ZooKeeper loads.
//!
//! Sessions are written with their timeouts, so ZooKeeper keeps their ephemerals until
//! they expire. A rookery session's password is not ZooKeeper's derived one, so clients
//! cannot resume those sessions on ZooKeeper: they get a new session (and their old
//! ephemerals expire after the timeout).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use raft::eraftpb::EntryType;
use raft::{GetEntriesContext, Storage as _};
use rookery_protocol::{Acl, ErrorCode, Response};

use super::zk_snapshot::write_snapshot;
use super::{is_missing_or_empty, MigrateError};
use crate::raft::StateMachine;
use crate::state::{Applier, ReplySink, Shared};
use crate::storage::{LmdbStorage, SnapshotDir};
use crate::tree::DataTree;
use crate::txn::Origin;
use crate::watch::Fired;

/// A sink for replaying a log offline: nobody is connected, so everything is dropped.
struct Discard;

impl ReplySink for Discard {
    fn session_created(&mut self, _origin: Origin, _session_id: i64, _passwd: &[u8]) {}
    fn write_applied(
        &mut self,
        _origin: Origin,
        _zxid: i64,
        _result: &Result<Response, ErrorCode>,
    ) {
    }
    fn watches_fired(&mut self, _zxid: i64, _acl: Option<&[Acl]>, _fired: Fired) {}
    fn session_closed(&mut self, _session_id: i64, _origin: Origin) {}
    fn proposal_dropped(&mut self, _origin: Origin) {}
}

/// A rookery data dir's state as the server would restore it.
#[derive(Debug)]
pub struct RookeryState {
    /// The tree.
    pub tree: DataTree,
    /// Live sessions: id → timeout ms.
    pub sessions: BTreeMap<i64, i32>,
    /// The last applied zxid (Raft index).
    pub last_zxid: i64,
    /// Log entries applied on top of the snapshot.
    pub replayed: u64,
}

/// Loads the newest valid snapshot of a rookery data dir and applies the committed log
/// entries after it. The server must not be running (LMDB allows one writer process).
pub fn load_rookery(data_dir: &Path) -> Result<RookeryState, MigrateError> {
    let rookery = |e: &dyn std::fmt::Display| MigrateError::Rookery(e.to_string());
    if !data_dir.join("raft").is_dir() {
        return Err(MigrateError::Rookery(format!(
            "{} is not a rookery data dir (no raft/)",
            data_dir.display()
        )));
    }
    // The lock the server holds while it runs: never read a data dir under a live server.
    let lock_path = data_dir.join("rookery.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(MigrateError::io(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(MigrateError::Rookery(format!(
                "a rookery server is running on {}: stop it first",
                data_dir.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(MigrateError::io(&lock_path)(e)),
    }
    let snaps = SnapshotDir::open(data_dir.join("snapshots")).map_err(|e| rookery(&e))?;
    let log =
        LmdbStorage::open(&data_dir.join("raft"), Some(snaps.clone())).map_err(|e| rookery(&e))?;
    let shared = Shared::new(crate::config::Config::default());
    let mut applier = Applier::new(shared.clone(), Box::new(Discard));
    let mut applied = 0u64;
    if let Some((_, path)) = snaps.newest_valid_header().map_err(|e| rookery(&e))? {
        let (header, mut payload) = snaps.open_payload(&path).map_err(|e| rookery(&e))?;
        applier
            .restore_from(header.index, header.payload_len, &mut payload)
            .map_err(|e| rookery(&e))?;
        applied = header.index;
    }
    let commit = log.hard_state().commit;
    let mut replayed = 0;
    let mut next = applied.max(log.first_index_cached().saturating_sub(1)) + 1;
    while next <= commit {
        let high = (next + 1024).min(commit + 1);
        let entries = log
            .entries(next, high, None, GetEntriesContext::empty(false))
            .map_err(|e| rookery(&e))?;
        if entries.is_empty() {
            break;
        }
        for e in &entries {
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                applier.apply(e.index, e.term, &e.data);
                if let Some(reason) = applier.take_fatal() {
                    return Err(MigrateError::Rookery(reason));
                }
                replayed += 1;
            }
            next = e.index + 1;
        }
    }
    drop(applier);
    let (tree, table, last_zxid) = {
        let mut s = shared.state().write();
        (
            std::mem::take(&mut s.tree),
            std::mem::take(&mut s.sessions),
            s.last_zxid,
        )
    };
    let sessions = table
        .iter()
        .map(|(&id, info)| (id, info.timeout_ms))
        .collect();
    Ok(RookeryState {
        tree,
        sessions,
        last_zxid,
        replayed,
    })
}

/// The whole export; returns the snapshot file written and the state it holds.
pub fn export(data_dir: &Path, to: &Path) -> Result<(PathBuf, RookeryState), MigrateError> {
    let v2 = to.join("version-2");
    if !is_missing_or_empty(&v2)? {
        return Err(MigrateError::TargetNotEmpty(v2));
    }
    let state = load_rookery(data_dir)?;
    crate::storage::create_dir_durable(&v2).map_err(MigrateError::io(&v2))?;
    let path = write_snapshot(&v2, state.last_zxid, &state.sessions, &state.tree)?;
    Ok((path, state))
}
