//! `rookery import zookeeper --data-dir ZK_DATA_DIR [--log-dir ZK_DATALOG_DIR] --to DIR`:
//! loads a ZooKeeper data dir the way ZooKeeper itself does on start-up
//! (`FileTxnSnapLog.restore` + `ZooKeeperServer.loadData`) and writes the result as a
//! rookery data dir.
//!
//! 1. The newest snapshot whose seal checks out (older ones are tried in turn, as
//!    `FileSnap.deserialize` does), quota stats recomputed (`setupQuota`).
//! 2. Every logged transaction after the snapshot's zxid, in log order, applied as
//!    `DataTree.processTxn` applies it, errors ignored (a fuzzy snapshot may already hold
//!    some of them); a partial last record is dropped.
//! 3. ZooKeeper's tree digest, logged with the last transaction (or stored in the snapshot),
//!    is recomputed over the result and compared (reported, as ZooKeeper reports it).
//! 4. Ephemerals whose session is not live are deleted (`loadData`'s dead-session cleanup).
//! 5. A rookery snapshot at index = the last zxid (see [`super`] for the zxid mapping) with
//!    the tree and the live sessions (ZooKeeper's derived passwords, so their clients can
//!    resume them; their timeouts start afresh when rookery starts), and an LMDB Raft log
//!    compacted through that index, for a standalone server (voters `[1]`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, HardState, SnapshotMetadata};
use rookery_protocol::{ephemeral_owner, ErrorCode};
use tracing::{info, warn};

use super::zk_snapshot::{list_snapshots, read_snapshot};
use super::zk_txnlog::{list_logs, logs_from, op, read_log, CreateTxn, Txn, TxnEntry};
use super::{is_missing_or_empty, open_acl_unsafe, version2_dir, zk_session_passwd, MigrateError};
use crate::session::{SessionInfo, SessionTable};
use crate::state::ReplicatedState;
use crate::storage::{LmdbStorage, SnapshotDir};
use crate::tree::DataTree;

/// A ZooKeeper database as ZooKeeper would serve it after a restart.
#[derive(Debug)]
pub struct ZkDatabase {
    /// The tree.
    pub tree: DataTree,
    /// Live sessions: id → timeout ms.
    pub sessions: BTreeMap<i64, i32>,
    /// The last zxid processed (`lastProcessedZxid`).
    pub last_zxid: i64,
}

/// What an import found and did, for the summary it prints.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// The snapshot used.
    pub snapshot: PathBuf,
    /// Its zxid.
    pub snapshot_zxid: i64,
    /// Newer snapshots that failed their checks, with why.
    pub rejected_snapshots: Vec<(PathBuf, String)>,
    /// Log files read.
    pub logs_read: Vec<PathBuf>,
    /// Log files that ended in a partial record (dropped).
    pub torn_logs: Vec<PathBuf>,
    /// Transactions applied.
    pub txns: u64,
    /// Of those, how many `processTxn` answered with an error (ignored, as ZooKeeper does).
    pub txn_errors: u64,
    /// The last zxid.
    pub last_zxid: i64,
    /// Znodes in the result, the root included.
    pub znodes: usize,
    /// Live sessions carried over.
    pub sessions: usize,
    /// Ephemeral znodes carried over.
    pub ephemerals: usize,
    /// Sessions that owned ephemerals but were no longer live (their ephemerals deleted).
    pub dead_sessions: usize,
    /// The imported tree's digest against the one ZooKeeper recorded.
    pub digest: DigestCheck,
}

/// ZooKeeper records its tree digest (see `DataTree::zk_digest`) after every logged
/// transaction and in each snapshot; the import recomputes it over the tree it built.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum DigestCheck {
    /// Nothing to compare with (digests off, or an older format), with why.
    #[default]
    NotChecked,
    /// The digests agree at this zxid: every node's path, data and stat are ZooKeeper's.
    Matches(i64),
    /// They differ.
    Mismatch {
        /// The zxid the recorded digest is for.
        zxid: i64,
        /// ZooKeeper's digest.
        zookeeper: i64,
        /// The imported tree's.
        imported: i64,
    },
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "snapshot: {} (zxid {:#x})",
            self.snapshot.display(),
            self.snapshot_zxid
        )?;
        for (path, why) in &self.rejected_snapshots {
            writeln!(f, "rejected snapshot: {}: {why}", path.display())?;
        }
        writeln!(
            f,
            "transactions replayed: {} from {} log file(s) ({} answered an error, ignored as ZooKeeper does)",
            self.txns,
            self.logs_read.len(),
            self.txn_errors
        )?;
        for path in &self.torn_logs {
            writeln!(f, "partial last record dropped: {}", path.display())?;
        }
        writeln!(
            f,
            "last zxid: {:#x}; znodes: {}; sessions: {}; ephemerals: {}; dead sessions cleaned: {}",
            self.last_zxid, self.znodes, self.sessions, self.ephemerals, self.dead_sessions
        )?;
        match self.digest {
            DigestCheck::NotChecked => writeln!(f, "digest: not checked (none recorded)"),
            DigestCheck::Matches(zxid) => {
                writeln!(f, "digest: matches ZooKeeper's at zxid {zxid:#x}")
            }
            DigestCheck::Mismatch {
                zxid,
                zookeeper,
                imported,
            } => writeln!(
                f,
                "digest: MISMATCH at zxid {zxid:#x}: ZooKeeper recorded {zookeeper:#x}, the import has {imported:#x}"
            ),
        }
    }
}

/// Loads a ZooKeeper data dir (`dataDir`, or its `version-2`) and, if the logs live
/// elsewhere, its `dataLogDir`.
pub fn load_zookeeper(
    data_dir: &Path,
    log_dir: Option<&Path>,
) -> Result<(ZkDatabase, ImportReport), MigrateError> {
    let snap_dir = version2_dir(data_dir);
    let log_dir = log_dir.map_or_else(|| snap_dir.clone(), version2_dir);
    let mut report = ImportReport::default();
    let candidates = list_snapshots(&snap_dir)?;
    let tried = candidates.len();
    let mut chosen = None;
    // FileSnap.deserialize tries the 100 newest plausible snapshots.
    for (_, path) in candidates.into_iter().take(100) {
        match read_snapshot(&path) {
            Ok(snap) => {
                chosen = Some((path, snap));
                break;
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "snapshot rejected, trying an older one");
                report.rejected_snapshots.push((path, e.to_string()));
            }
        }
    }
    let Some((path, snap)) = chosen else {
        return Err(MigrateError::NoSnapshot {
            dir: snap_dir,
            tried,
        });
    };
    info!(path = %path.display(), zxid = snap.zxid, nodes = snap.nodes, "loaded ZooKeeper snapshot");
    report.snapshot = path;
    report.snapshot_zxid = snap.zxid;
    let snapshot_digest = snap.digest;
    let mut db = ZkDatabase {
        tree: snap.tree,
        sessions: snap.sessions,
        last_zxid: snap.zxid,
    };

    // FileTxnSnapLog.fastForwardFromEdits: txnLog.read(snapshot zxid + 1).
    let start = snap.zxid.wrapping_add(1);
    let logs = logs_from(&list_logs(&log_dir)?, start);
    let mut started = false;
    let mut highest = snap.zxid;
    // The digest logged with the last transaction applied (the tree's after it).
    let mut last_digest = None;
    for (_, path) in logs {
        let log = read_log(&path)?;
        report.logs_read.push(path.clone());
        if log.torn {
            warn!(path = %path.display(), "dropping a partial last transaction");
            report.torn_logs.push(path.clone());
        }
        for entry in &log.entries {
            if !started {
                if entry.hdr.zxid < start {
                    continue;
                }
                started = true;
            }
            if entry.hdr.zxid < highest && highest != 0 {
                warn!(
                    zxid = entry.hdr.zxid,
                    highest, "transaction log goes back in zxid order; applying it anyway, as ZooKeeper does"
                );
            } else {
                highest = entry.hdr.zxid;
            }
            report.txns += 1;
            if process_transaction(&mut db, entry).is_err() {
                report.txn_errors += 1;
            }
            db.last_zxid = db.last_zxid.max(entry.hdr.zxid);
            last_digest = entry
                .digest
                .map(|(version, d)| (entry.hdr.zxid, version, d));
        }
    }
    // DigestCalculator version 2; compared before the dead-session clean-up, which
    // ZooKeeper does after its own check.
    let recorded = match (report.txns, last_digest, snapshot_digest) {
        (1.., Some((zxid, 2, d)), _) => Some((zxid, d)),
        (0, _, Some((zxid, 2, d))) if zxid == report.snapshot_zxid => Some((zxid, d)),
        _ => None,
    };
    if let Some((zxid, zookeeper)) = recorded {
        let imported = db.tree.zk_digest();
        report.digest = if imported == zookeeper {
            DigestCheck::Matches(zxid)
        } else {
            warn!(
                zxid,
                zookeeper, imported, "the imported tree's digest differs from ZooKeeper's"
            );
            DigestCheck::Mismatch {
                zxid,
                zookeeper,
                imported,
            }
        };
    }

    // ZooKeeperServer.loadData: ephemerals of sessions that are not live go.
    let zxid = db.last_zxid;
    for owner in db.tree.session_ids_with_ephemerals() {
        if !db.sessions.contains_key(&owner) {
            db.tree.zk_kill_session(owner, zxid, &[]);
            report.dead_sessions += 1;
        }
    }
    report.last_zxid = db.last_zxid;
    report.znodes = db.tree.znode_count();
    report.sessions = db.sessions.len();
    report.ephemerals = db.tree.ephemerals_count();
    Ok((db, report))
}

/// `FileTxnSnapLog.processTransaction` + `DataTree.processTxn` for one logged transaction.
/// `Err` carries the error `processTxn` would have recorded (and ZooKeeper ignores).
pub fn process_transaction(db: &mut ZkDatabase, entry: &TxnEntry) -> Result<(), ErrorCode> {
    let hdr = &entry.hdr;
    match &entry.txn {
        Txn::CreateSession { timeout } => {
            db.sessions.insert(hdr.client_id, *timeout);
            Ok(())
        }
        Txn::CloseSession { paths } => {
            db.sessions.remove(&hdr.client_id);
            db.tree.zk_kill_session(
                hdr.client_id,
                hdr.zxid,
                paths.as_deref().unwrap_or_default(),
            );
            Ok(())
        }
        txn => apply_txn(&mut db.tree, hdr.op, hdr.client_id, hdr.zxid, hdr.time, txn),
    }
}

/// `DataTree.processTxn(header, txn, isSubTxn)` for the tree-changing types; `op` is the
/// (sub-)header's type, which decides the create fix-up.
fn apply_txn(
    tree: &mut DataTree,
    op: i32,
    client_id: i64,
    zxid: i64,
    time: i64,
    txn: &Txn,
) -> Result<(), ErrorCode> {
    match txn {
        Txn::Create(c) => {
            let result = create(tree, op, client_id, zxid, time, c);
            // processTxn: replaying a plain create (not create2/TTL/container) over a node
            // that is already there raises the parent's cversion/pzxid to the txn's.
            if op == op::CREATE && result == Err(ErrorCode::NodeExists) {
                let parent = &c.path[..c.path.rfind('/').unwrap_or(0)];
                tree.zk_set_cversion_pzxid(parent, c.parent_cversion, zxid)?;
            }
            result
        }
        Txn::Delete { path } => tree.zk_delete(path, zxid),
        Txn::SetData {
            path,
            data,
            version,
        } => tree.zk_set_data(path, data.as_deref(), *version, zxid, time),
        Txn::SetAcl { path, acl, version } => {
            let acl = acl.clone().unwrap_or_else(open_acl_unsafe);
            tree.zk_set_acl(path, &acl, *version)
        }
        Txn::Error { err } => match *err {
            0 => Ok(()),
            e => Err(ErrorCode::from_wire(e).unwrap_or(ErrorCode::SystemError)),
        },
        Txn::Check => Ok(()),
        Txn::Multi(subs) => {
            // One error sub-transaction means the whole multi failed: nothing is applied.
            if subs.iter().any(|(kind, _)| *kind == op::ERROR) {
                return Err(ErrorCode::RuntimeInconsistency);
            }
            let mut first_error = Ok(());
            for (kind, sub) in subs {
                // processTxn throws on a type it does not expect in a multi, which ends the
                // multi's processing there.
                let Some(sub) = sub else {
                    return Err(ErrorCode::MarshallingError);
                };
                let result = apply_txn(tree, *kind, client_id, zxid, time, sub);
                if first_error.is_ok() {
                    first_error = result;
                }
            }
            first_error
        }
        // Handled by process_transaction; never nested in a multi.
        Txn::CreateSession { .. } | Txn::CloseSession { .. } => Ok(()),
    }
}

fn create(
    tree: &mut DataTree,
    op: i32,
    client_id: i64,
    zxid: i64,
    time: i64,
    c: &CreateTxn,
) -> Result<(), ErrorCode> {
    let owner = match op {
        op::CREATE_TTL => ephemeral_owner::ttl(c.ttl.unwrap_or(0)),
        op::CREATE_CONTAINER => ephemeral_owner::CONTAINER,
        _ if c.ephemeral => client_id,
        _ => 0,
    };
    let acl = c.acl.clone().unwrap_or_else(open_acl_unsafe);
    tree.zk_create(
        &c.path,
        c.data.as_deref(),
        &acl,
        owner,
        c.parent_cversion,
        zxid,
        time,
    )
}

/// The Raft index and term an imported snapshot gets: index = the last zxid (at least 1,
/// so it is a real snapshot), term = ZooKeeper's epoch (at least 1).
pub fn raft_position(last_zxid: i64) -> (u64, u64) {
    let index = (last_zxid.max(1)) as u64;
    let term = ((last_zxid as u64) >> 32).max(1);
    (index, term)
}

/// Writes `db` as a new standalone rookery data dir at `to` (which must be missing or empty).
pub fn write_rookery(to: &Path, db: ZkDatabase) -> Result<(), MigrateError> {
    if !is_missing_or_empty(to)? {
        return Err(MigrateError::TargetNotEmpty(to.to_path_buf()));
    }
    crate::storage::create_dir_durable(to).map_err(MigrateError::io(to))?;
    let (index, term) = raft_position(db.last_zxid);
    let conf_state = ConfState {
        voters: vec![1],
        ..Default::default()
    };
    let mut sessions = SessionTable::default();
    for (&id, &timeout_ms) in &db.sessions {
        sessions.insert(
            id,
            SessionInfo {
                timeout_ms,
                passwd: zk_session_passwd(id),
                owner: None,
            },
        );
    }
    let state = ReplicatedState {
        tree: db.tree,
        sessions,
        last_zxid: index as i64,
    };
    let rookery = |e: &dyn std::fmt::Display| MigrateError::Rookery(e.to_string());
    let snaps = SnapshotDir::open(to.join("snapshots")).map_err(|e| rookery(&e))?;
    snaps
        .write_with(index, term, &conf_state, |w| {
            crate::state::write_snapshot(&state, w)
        })
        .map_err(|e| rookery(&e))?;
    let mut log = LmdbStorage::open(&to.join("raft"), Some(snaps)).map_err(|e| rookery(&e))?;
    log.bootstrap(conf_state.clone()).map_err(|e| rookery(&e))?;
    let mut meta = SnapshotMetadata {
        index,
        term,
        ..Default::default()
    };
    meta.set_conf_state(conf_state);
    let hs = HardState {
        term,
        vote: 0,
        commit: index,
        ..Default::default()
    };
    log.write_ready(&[], Some(&hs), Some(&meta))
        .map_err(|e| rookery(&e))?;
    log.sync().map_err(|e| rookery(&e))?;
    // Checked here so a broken result never reaches a server.
    let _ = meta.write_to_bytes().map_err(|e| rookery(&e))?;
    crate::storage::fsync_dir(to).map_err(MigrateError::io(to))?;
    Ok(())
}

/// The whole import: load, then write.
pub fn import(
    data_dir: &Path,
    log_dir: Option<&Path>,
    to: &Path,
) -> Result<ImportReport, MigrateError> {
    // Refuse before the (possibly long) load.
    if !is_missing_or_empty(to)? {
        return Err(MigrateError::TargetNotEmpty(to.to_path_buf()));
    }
    let (db, report) = load_zookeeper(data_dir, log_dir)?;
    write_rookery(to, db)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::super::zk_snapshot::write_snapshot;
    use super::super::zk_txnlog::tests::{create_body, encode, log_file};
    use super::super::zk_txnlog::TxnHeader;
    use super::*;
    use bytes::{BufMut, BytesMut};
    use rookery_protocol::Record;

    fn hdr(client_id: i64, zxid: i64, op: i32) -> TxnHeader {
        TxnHeader {
            client_id,
            cxid: 0,
            zxid,
            time: 5000 + zxid,
            op,
        }
    }

    fn path_body(path: &str) -> Vec<u8> {
        let mut b = BytesMut::new();
        path.to_string().write(&mut b);
        b.to_vec()
    }

    #[test]
    fn snapshot_plus_log_replay() {
        let dir = tempfile::tempdir().unwrap();
        let v2 = dir.path().join("version-2");
        std::fs::create_dir(&v2).unwrap();
        // Snapshot at zxid 3: /app (cversion 0), session 7 live with timeout 4000.
        let mut tree = DataTree::new();
        tree.zk_create("/app", Some(b"v"), &open_acl_unsafe(), 0, -1, 3, 100)
            .unwrap();
        write_snapshot(&v2, 3, &BTreeMap::from([(7, 4000)]), &tree).unwrap();
        // A corrupt newer snapshot is skipped.
        std::fs::write(v2.join("snapshot.9"), b"garbage\0\0\0\x01/").unwrap();
        let mut timeout = BytesMut::new();
        timeout.put_i32(6000);
        let entries = vec![
            // Before the snapshot: skipped.
            encode(&hdr(7, 3, op::CREATE), &create_body("/app", b"v", false, 1)),
            encode(&hdr(8, 4, op::CREATE_SESSION), &timeout),
            encode(&hdr(8, 5, op::CREATE), &create_body("/app/e", b"", true, 1)),
            encode(
                &hdr(7, 6, op::CREATE),
                &create_body("/app/s0000000001", b"", false, 2),
            ),
            encode(&hdr(7, 7, op::DELETE), &path_body("/app/s0000000001")),
            // A replayed create of a node the snapshot already has: the parent fix-up.
            encode(&hdr(7, 8, op::CREATE), &create_body("/app", b"v", false, 4)),
        ];
        let mut torn = BytesMut::new();
        torn.put_i64(1);
        torn.put_i32(100);
        torn.put_u8(1);
        std::fs::write(v2.join("log.1"), log_file(&entries, &torn)).unwrap();

        let (db, report) = load_zookeeper(dir.path(), None).unwrap();
        // The fixture logs no digests.
        assert_eq!(report.digest, DigestCheck::NotChecked);
        assert_eq!(report.snapshot_zxid, 3);
        assert_eq!(report.rejected_snapshots.len(), 1);
        assert_eq!(report.txns, 5);
        assert_eq!(report.txn_errors, 1);
        assert_eq!(report.torn_logs.len(), 1);
        assert_eq!(db.last_zxid, 8);
        // Session 7 is live (snapshot), 8 was created in the log.
        assert_eq!(db.sessions, BTreeMap::from([(7, 4000), (8, 6000)]));
        let app = db.tree.stat("/app").unwrap();
        // Two creates under /app, one deleted; root's fix-up raised its cversion to 4.
        assert_eq!(app.num_children, 1);
        assert_eq!(db.tree.persisted_cversion("/app"), Some(2));
        assert_eq!(app.pzxid, 7);
        assert_eq!(db.tree.persisted_cversion("/"), Some(4));
        assert_eq!(db.tree.stat("/").unwrap().pzxid, 8);
        assert_eq!(db.tree.ephemerals_of(8), vec!["/app/e".to_string()]);

        // Written out, then read back the way the server restores it.
        let (tree, sessions) = (db.tree.clone(), db.sessions.clone());
        let to = dir.path().join("rookery");
        write_rookery(&to, db).unwrap();
        let snaps = SnapshotDir::open(to.join("snapshots")).unwrap();
        let newest = snaps.load_newest_valid().unwrap().unwrap();
        assert_eq!((newest.index, newest.term), (8, 1));
        let log = LmdbStorage::open(&to.join("raft"), Some(snaps)).unwrap();
        assert_eq!(log.first_index_cached(), 9);
        assert_eq!(log.hard_state().commit, 8);
        drop(log);
        // What export reads back is what was imported.
        let back = super::super::export::load_rookery(&to).unwrap();
        assert!(
            back.tree == tree,
            "the tree changed on its way through rookery's files"
        );
        assert_eq!(back.sessions, sessions);
        assert_eq!((back.last_zxid, back.replayed), (8, 0));
        // A held lock (a running server) is refused.
        let lock = std::fs::File::open(to.join("rookery.lock")).unwrap();
        lock.lock().unwrap();
        let err = super::super::export::load_rookery(&to).unwrap_err();
        assert!(err.to_string().contains("running"), "{err}");
        drop(lock);
        // A second import into the same place is refused.
        assert!(matches!(
            import(dir.path(), None, &to),
            Err(MigrateError::TargetNotEmpty(_))
        ));
    }

    #[test]
    fn dead_sessions_lose_their_ephemerals() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = DataTree::new();
        tree.zk_create("/e", None, &open_acl_unsafe(), 42, -1, 2, 100)
            .unwrap();
        write_snapshot(dir.path(), 2, &BTreeMap::new(), &tree).unwrap();
        let (db, report) = load_zookeeper(dir.path(), None).unwrap();
        assert_eq!(report.dead_sessions, 1);
        assert!(db.tree.stat("/e").is_none());
        assert_eq!(db.tree.stat("/").unwrap().pzxid, 2);
    }

    fn acl_bytes() -> Vec<u8> {
        let mut b = BytesMut::new();
        open_acl_unsafe().write(&mut b);
        b.to_vec()
    }

    fn entry(client_id: i64, zxid: i64, op: i32, body: &[u8]) -> TxnEntry {
        super::super::zk_txnlog::decode_entry(&encode(&hdr(client_id, zxid, op), body))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn multi_ttl_container_and_close_session() {
        let mut db = ZkDatabase {
            tree: DataTree::new(),
            sessions: BTreeMap::from([(5, 4000)]),
            last_zxid: 0,
        };
        // createTTL and createContainer bodies: path, data, acl, parentCVersion (, ttl).
        let mut ttl = BytesMut::new();
        "/t".to_string().write(&mut ttl);
        Some(b"d".to_vec()).write(&mut ttl);
        ttl.extend_from_slice(&acl_bytes());
        ttl.put_i32(1);
        ttl.put_i64(60_000);
        process_transaction(&mut db, &entry(5, 1, op::CREATE_TTL, &ttl)).unwrap();
        let mut container = BytesMut::new();
        "/c".to_string().write(&mut container);
        None::<Vec<u8>>.write(&mut container);
        container.extend_from_slice(&acl_bytes());
        container.put_i32(2);
        process_transaction(&mut db, &entry(5, 2, op::CREATE_CONTAINER, &container)).unwrap();
        assert_eq!(db.tree.reapable_nodes(6000), Vec::<String>::new());
        // A child makes the container reapable once it goes; the TTL node is reapable later.
        let sub = |kind: i32, body: Vec<u8>| {
            let mut b = BytesMut::new();
            b.put_i32(kind);
            body.write(&mut b);
            b.to_vec()
        };
        let mut multi = BytesMut::new();
        multi.put_i32(2);
        multi.extend_from_slice(&sub(op::CREATE, create_body("/c/x", b"", true, 1)));
        multi.extend_from_slice(&sub(op::CREATE, create_body("/c/y", b"", false, 2)));
        process_transaction(&mut db, &entry(5, 3, op::MULTI, &multi)).unwrap();
        assert_eq!(db.tree.stat("/c").unwrap().num_children, 2);
        // A failed multi (an ErrorTxn among its subs) applies nothing.
        let mut err = BytesMut::new();
        err.put_i32(-110);
        let mut failed = BytesMut::new();
        failed.put_i32(2);
        failed.extend_from_slice(&sub(op::DELETE, path_body("/c/y")));
        failed.extend_from_slice(&sub(op::ERROR, err.to_vec()));
        assert!(process_transaction(&mut db, &entry(5, 4, op::MULTI, &failed)).is_err());
        assert!(db.tree.stat("/c/y").is_some());
        // CloseSession: its listed paths and its ephemerals go, the session too.
        let mut close = BytesMut::new();
        close.put_i32(1);
        "/c/x".to_string().write(&mut close);
        process_transaction(&mut db, &entry(5, 5, op::CLOSE_SESSION, &close)).unwrap();
        assert!(db.tree.stat("/c/x").is_none());
        assert!(db.sessions.is_empty());
        assert_eq!(db.tree.stat("/c").unwrap().pzxid, 5);
        process_transaction(&mut db, &entry(5, 6, op::DELETE, &path_body("/c/y"))).unwrap();
        assert_eq!(
            db.tree.reapable_nodes(i64::MAX),
            vec!["/c".to_string(), "/t".to_string()]
        );
        // setData and setACL take the versions the transaction carries.
        let mut set = BytesMut::new();
        "/t".to_string().write(&mut set);
        None::<Vec<u8>>.write(&mut set);
        set.put_i32(7);
        process_transaction(&mut db, &entry(5, 7, op::SET_DATA, &set)).unwrap();
        let st = db.tree.stat("/t").unwrap();
        assert_eq!(
            (st.version, st.mzxid, st.mtime, st.data_length),
            (7, 7, 5007, 0)
        );
    }

    #[test]
    fn logs_in_a_separate_data_log_dir() {
        let (data, logs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (d2, l2) = (data.path().join("version-2"), logs.path().join("version-2"));
        std::fs::create_dir(&d2).unwrap();
        std::fs::create_dir(&l2).unwrap();
        write_snapshot(&d2, 0, &BTreeMap::new(), &DataTree::new()).unwrap();
        let e = encode(&hdr(1, 1, op::CREATE), &create_body("/x", b"1", false, 1));
        std::fs::write(l2.join("log.1"), log_file(&[e], &[])).unwrap();
        let (db, report) = load_zookeeper(data.path(), Some(logs.path())).unwrap();
        assert_eq!((report.txns, db.last_zxid), (1, 1));
        assert!(db.tree.stat("/x").is_some());
        // Without --log-dir the log is not found: only the snapshot.
        let (db, _) = load_zookeeper(data.path(), None).unwrap();
        assert!(db.tree.stat("/x").is_none());
    }

    #[test]
    fn digest_covers_stats_but_not_the_zookeeper_subtree() {
        let mut tree = DataTree::new();
        let base = tree.zk_digest();
        tree.zk_create("/zookeeper/x", None, &open_acl_unsafe(), 0, -1, 1, 1)
            .unwrap();
        // /zookeeper itself counts (its cversion and pzxid moved), what is below it does not.
        let after_quota = tree.zk_digest();
        assert_ne!(after_quota, base);
        tree.zk_set_data("/zookeeper/x", Some(b"d"), 1, 2, 2)
            .unwrap();
        assert_eq!(tree.zk_digest(), after_quota);
        tree.zk_create("/a", Some(b"x"), &open_acl_unsafe(), 0, -1, 3, 3)
            .unwrap();
        let with_a = tree.zk_digest();
        tree.zk_set_acl("/a", &[], 1).unwrap();
        assert_ne!(tree.zk_digest(), with_a, "aversion is part of the digest");
    }

    #[test]
    fn zxid_mapping() {
        assert_eq!(raft_position(0), (1, 1));
        assert_eq!(raft_position(0x3_0000_0005), (0x3_0000_0005, 3));
    }
}
