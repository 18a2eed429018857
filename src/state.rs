//! The replicated state machine: applies committed log entries to the tree and the session
//! table, fires watches, and hands each result to the connection that asked for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::{Mutex, RwLock};
use rookery_protocol::{
    perms, Acl, ErrorCode, Id, Reader, Record, Request, Response, WatcherEvent,
};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::raft::StateMachine;
use crate::session::{SessionInfo, SessionTable, SessionTracker};
use crate::tree::{check_acl, fixup_acl, DataTree, OpContext};
use crate::txn::{Txn, TxnBody};
use crate::watch::{WatchManager, WatchTrigger, WatcherId};

/// What the state machine and other connections send to a connection.
#[derive(Debug)]
pub enum Outbound {
    /// A watch fired. `zxid` is the change's zxid, or -1 for events raised by SetWatches.
    Event { zxid: i64, event: WatcherEvent },
    /// The result of a write this connection proposed.
    Reply {
        xid: i32,
        zxid: i64,
        result: Result<Response, ErrorCode>,
    },
    /// The CreateSession this connection proposed was applied.
    SessionCreated {
        session_id: i64,
        passwd: Vec<u8>,
        timeout_ms: i32,
    },
    /// Close the connection: its session ended elsewhere, moved, or the server is stopping.
    Close,
}

/// The state covered by the Raft log: everything here changes only by applying entries.
#[derive(Debug, Default)]
pub struct ReplicatedState {
    pub tree: DataTree,
    pub sessions: SessionTable,
    /// The zxid of the last applied entry: reply headers of reads carry it, and a client that
    /// has seen a later one is refused.
    pub last_zxid: i64,
}

/// A connection as the rest of the server reaches it.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// Where replies and events for this connection go.
    pub tx: UnboundedSender<Outbound>,
    /// The session the connection carries (0 until the handshake ends).
    pub session_id: i64,
    /// For the `cons` four-letter word.
    pub peer: std::net::SocketAddr,
    /// The connection's authenticated ids: a watch event goes only to connections that may
    /// READ the node it is about.
    pub auth: Vec<Id>,
}

/// Live connections, by id and by session.
#[derive(Debug, Default)]
pub struct ConnRegistry {
    /// Connection id → handle.
    pub by_id: HashMap<u64, ConnHandle>,
    /// Session id → the connection currently carrying it (a session moves on reconnect).
    pub by_session: HashMap<i64, u64>,
}

impl ConnRegistry {
    pub fn send(&self, conn_id: u64, message: Outbound) {
        if let Some(conn) = self.by_id.get(&conn_id) {
            // A closed receiver means the connection is going away; nothing to do.
            let _ = conn.tx.send(message);
        }
    }
}

/// Counters for the `srvr`/`stat`/`mntr` four-letter words.
#[derive(Debug, Default)]
pub struct Stats {
    pub packets_received: AtomicU64,
    pub packets_sent: AtomicU64,
    /// Request latency in µs: sum, count and max, for avg/max reporting.
    pub latency_sum_us: AtomicU64,
    pub latency_count: AtomicU64,
    pub latency_max_us: AtomicU64,
    pub latency_min_us: AtomicU64,
    pub outstanding: AtomicI64,
    pub connections_total: AtomicU64,
}

impl Stats {
    pub fn record_latency(&self, elapsed: Duration) {
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
        let min = self.latency_min_us.load(Ordering::Relaxed);
        if min == 0 || us < min {
            self.latency_min_us.store(us.max(1), Ordering::Relaxed);
        }
    }

    pub fn reset(&self) {
        self.packets_received.store(0, Ordering::Relaxed);
        self.packets_sent.store(0, Ordering::Relaxed);
        self.latency_sum_us.store(0, Ordering::Relaxed);
        self.latency_count.store(0, Ordering::Relaxed);
        self.latency_max_us.store(0, Ordering::Relaxed);
        self.latency_min_us.store(0, Ordering::Relaxed);
    }
}

/// State shared by the apply thread, the connections and the housekeeping tasks.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    /// The tree and sessions. The apply thread takes it for writing; reads take it for reading,
    /// so a read sees whole entries only, and events sent under the write lock are queued
    /// before any read that could observe their change.
    pub state: RwLock<ReplicatedState>,
    /// Watches are per server and per connection, never replicated.
    pub watches: Mutex<WatchManager>,
    pub conns: Mutex<ConnRegistry>,
    /// Expiry clocks of live sessions.
    pub tracker: SessionTracker,
    pub stats: Stats,
    /// A copy of `state.last_zxid` readable without the lock (four-letter words, handshakes).
    pub last_zxid: AtomicI64,
    pub started: Instant,
    /// Connection ids start from a per-boot base so that entries replayed from an earlier run
    /// never match a connection of this run.
    next_conn_id: AtomicU64,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Shared> {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        Arc::new(Shared {
            config,
            state: RwLock::new(ReplicatedState::default()),
            watches: Mutex::new(WatchManager::default()),
            conns: Mutex::new(ConnRegistry::default()),
            tracker: SessionTracker::default(),
            stats: Stats::default(),
            last_zxid: AtomicI64::new(0),
            started: Instant::now(),
            next_conn_id: AtomicU64::new(boot << 20),
        })
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Routes watch deliveries to their connections, dropping those whose connection may not
    /// READ the node (`acl`; None when the node is unknown, e.g. created and deleted in one
    /// multi). The watch is used up either way, as in ZooKeeper.
    pub fn deliver_events(
        &self,
        zxid: i64,
        acl: Option<&[Acl]>,
        deliveries: Vec<(WatcherId, WatcherEvent)>,
    ) {
        if deliveries.is_empty() {
            return;
        }
        let conns = self.conns.lock();
        for (watcher, event) in deliveries {
            let Some(conn) = conns.by_id.get(&watcher) else {
                continue;
            };
            if let Some(acl) = acl {
                if check_acl(acl, perms::READ, &conn.auth).is_err() {
                    debug!(path = %event.path, "watch event filtered by ACL");
                    continue;
                }
            }
            let _ = conn.tx.send(Outbound::Event { zxid, event });
        }
    }
}

/// Magic and version at the start of a state-machine snapshot.
const SNAPSHOT_MAGIC: &[u8; 8] = b"RKSTATE1";

/// The Raft state machine of one server.
pub struct Applier {
    shared: Arc<Shared>,
}

impl Applier {
    pub fn new(shared: Arc<Shared>) -> Self {
        Applier { shared }
    }

    /// Fires watches after an entry was applied. `deleted_acls` holds the ACLs of nodes the
    /// entry may have deleted, captured before applying it.
    fn fire(
        &self,
        tree: &DataTree,
        zxid: i64,
        triggers: &[WatchTrigger],
        deleted_acls: &[(String, Vec<Acl>)],
    ) {
        for trigger in triggers {
            let deliveries = self.shared.watches.lock().trigger(trigger);
            if deliveries.is_empty() {
                continue;
            }
            // The node's ACL when the change happened: ACLs only change by create and delete
            // inside one entry, so it is the current one, else the one the node had before the
            // entry (deleted by it), else the one a create in this entry gave it.
            let acl = match trigger {
                WatchTrigger::Created(path)
                | WatchTrigger::DataChanged(path)
                | WatchTrigger::ChildrenChanged(path) => tree.acl_of(path),
                WatchTrigger::Deleted(_) => None,
            }
            .or_else(|| {
                deleted_acls
                    .iter()
                    .rev()
                    .find(|(p, _)| p == trigger.path())
                    .map(|(_, acl)| acl.clone())
            });
            self.shared.deliver_events(zxid, acl.as_deref(), deliveries);
        }
    }

    fn reply(&self, txn: &Txn, message: Outbound) {
        if txn.origin.server_id == self.shared.config.server_id && txn.origin.conn_id != 0 {
            self.shared.conns.lock().send(txn.origin.conn_id, message);
        }
    }
}

impl StateMachine for Applier {
    fn apply(&mut self, index: u64, _term: u64, data: &[u8]) {
        let zxid = index as i64;
        let txn = match Txn::decode(data) {
            Ok(txn) => txn,
            Err(error) => {
                // Every replica sees the same bytes, so skipping is deterministic.
                warn!(zxid, %error, "skipping undecodable log entry");
                return;
            }
        };
        let shared = Arc::clone(&self.shared);
        let mut state = shared.state.write();
        state.last_zxid = zxid;
        shared.last_zxid.store(zxid, Ordering::Release);
        match &txn.body {
            TxnBody::CreateSession { timeout_ms, passwd } => {
                let session_id = state.sessions.create(
                    txn.origin.server_id,
                    txn.time_ms,
                    SessionInfo {
                        timeout_ms: *timeout_ms,
                        passwd: passwd.clone(),
                    },
                );
                shared.tracker.add(
                    session_id,
                    Duration::from_millis(u64::try_from(*timeout_ms).unwrap_or(0)),
                );
                debug!(
                    zxid,
                    session_id = format_args!("{session_id:#x}"),
                    "session created"
                );
                self.reply(
                    &txn,
                    Outbound::SessionCreated {
                        session_id,
                        passwd: passwd.clone(),
                        timeout_ms: *timeout_ms,
                    },
                );
            }
            TxnBody::CloseSession { session_id } => {
                let session_id = *session_id;
                let existed = state.sessions.remove(session_id);
                shared.tracker.remove(session_id);
                if existed {
                    let deleted_acls = acls_of(&state.tree, state.tree.ephemerals_of(session_id));
                    let triggers = state.tree.close_session(zxid, txn.time_ms, session_id);
                    self.fire(&state.tree, zxid, &triggers, &deleted_acls);
                    info!(
                        zxid,
                        session_id = format_args!("{session_id:#x}"),
                        "session closed"
                    );
                }
                self.reply(
                    &txn,
                    Outbound::Reply {
                        xid: txn.origin.xid,
                        zxid,
                        result: Ok(Response::Empty),
                    },
                );
                // Expiry (or a close through another connection): drop the session's connection.
                let conns = shared.conns.lock();
                if let Some(conn_id) = conns.by_session.get(&session_id).copied() {
                    if conn_id != txn.origin.conn_id
                        || txn.origin.server_id != shared.config.server_id
                    {
                        conns.send(conn_id, Outbound::Close);
                    }
                }
            }
            TxnBody::Request(request) => {
                // Created-and-deleted nodes first: a node existing before the entry wins.
                let mut deleted_acls = created_acls(request, &txn.auth);
                deleted_acls.extend(acls_of(&state.tree, deletion_targets(request)));
                // Housekeeping entries (session 0) act as the server itself.
                let result = if txn.session_id != 0 && !state.sessions.contains(txn.session_id) {
                    (Err(ErrorCode::SessionExpired), Vec::new())
                } else {
                    let ctx = OpContext {
                        zxid,
                        time_ms: txn.time_ms,
                        session_id: txn.session_id,
                        auth: &txn.auth,
                        ttl_enabled: shared.config.ttl_enabled,
                        sasl_provider: shared.config.sasl_provider,
                    };
                    state.tree.apply_write(&ctx, request)
                };
                let (result, triggers) = result;
                self.fire(&state.tree, zxid, &triggers, &deleted_acls);
                self.reply(
                    &txn,
                    Outbound::Reply {
                        xid: txn.origin.xid,
                        zxid,
                        result,
                    },
                );
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let state = self.shared.state.read();
        let mut out = BytesMut::new();
        out.extend_from_slice(SNAPSHOT_MAGIC);
        state.last_zxid.write(&mut out);
        state.sessions.serialize(&mut out);
        let mut tree = Vec::new();
        state.tree.serialize(&mut tree);
        out.extend_from_slice(&tree);
        out.to_vec()
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), String> {
        let body = data
            .strip_prefix(SNAPSHOT_MAGIC.as_slice())
            .ok_or("state snapshot has a bad magic")?;
        let mut input = Reader::new(body);
        let last_zxid = i64::read(&mut input).map_err(|e| e.to_string())?;
        let sessions = SessionTable::deserialize(&mut input).map_err(|e| e.to_string())?;
        let consumed = body.len() - input.remaining();
        let tree = DataTree::deserialize(&body[consumed..]).map_err(|e| e.to_string())?;
        for (id, info) in sessions.iter() {
            self.shared.tracker.add(
                *id,
                Duration::from_millis(u64::try_from(info.timeout_ms).unwrap_or(0)),
            );
        }
        let mut state = self.shared.state.write();
        state.tree = tree;
        state.sessions = sessions;
        state.last_zxid = last_zxid.max(index as i64);
        self.shared
            .last_zxid
            .store(state.last_zxid, Ordering::Release);
        info!(
            index,
            sessions = state.sessions.len(),
            "state restored from snapshot"
        );
        Ok(())
    }

    fn proposal_dropped(&mut self, data: &[u8]) {
        if let Ok(txn) = Txn::decode(data) {
            warn!(
                conn = txn.origin.conn_id,
                "proposal dropped; closing the connection"
            );
            if txn.origin.conn_id != 0 {
                self.shared
                    .conns
                    .lock()
                    .send(txn.origin.conn_id, Outbound::Close);
            }
        }
    }

    fn on_role_change(&mut self, is_leader: bool, term: u64) {
        info!(is_leader, term, "raft role changed");
        if is_leader {
            self.shared.tracker.reset_closing();
        }
    }
}

/// Paths a write may delete, whose ACLs must be captured before applying it.
fn deletion_targets(request: &Request) -> Vec<String> {
    match request {
        Request::Delete(r) => vec![r.path.clone()],
        Request::DeleteContainer(r) => vec![r.path.clone()],
        Request::Multi(ops) => ops
            .iter()
            .filter_map(|op| match op {
                rookery_protocol::MultiOp::Delete(r) => Some(r.path.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The ACLs that creates inside a multi give their nodes, for nodes a multi creates and
/// deletes again (gone before and after the entry).
fn created_acls(request: &Request, auth: &[Id]) -> Vec<(String, Vec<Acl>)> {
    let Request::Multi(ops) = request else {
        return Vec::new();
    };
    ops.iter()
        .filter_map(|op| {
            let (path, acl) = match op {
                rookery_protocol::MultiOp::Create { req, .. } => (&req.path, &req.acl),
                rookery_protocol::MultiOp::CreateTtl(req) => (&req.path, &req.acl),
                _ => return None,
            };
            fixup_acl(acl, auth).ok().map(|acl| (path.clone(), acl))
        })
        .collect()
}

fn acls_of(tree: &DataTree, paths: Vec<String>) -> Vec<(String, Vec<Acl>)> {
    paths
        .into_iter()
        .filter_map(|path| tree.acl_of(&path).map(|acl| (path, acl)))
        .collect()
}
