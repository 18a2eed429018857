//! The replicated state machine: applies committed log entries to the tree and the session
//! table, fires watches, and hands each result to a [`ReplySink`]. It knows no sockets: the
//! server implements the sink (`server::registry::ServerSink`) and routes results to its own
//! connections, so every replica can apply every entry and still answer only its own clients.

use std::io::Read as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::{Mutex, RwLock};
use rookery_protocol::{Acl, ErrorCode, Id, Reader, Record, Request, Response};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::raft::StateMachine;
use crate::session::{SessionInfo, SessionTable, SessionTracker};
use crate::tree::{fixup_acl, DataTree, OpContext};
use crate::txn::{Origin, Txn, TxnBody, APPLY_SEMANTICS};
use crate::watch::{Fired, WatchManager, WatchTrigger};

/// Where the state machine's output goes: the replies, watch events and session ends an entry
/// produces. The state machine knows no connections; the server implements this to route each
/// item to its own clients (in an ensemble every server applies every entry and answers only
/// the entries it proposed).
///
/// Called on the apply thread with the state write lock (and, for `watches_fired`, nothing
/// else) held: an implementation must never block; it drops or closes instead.
pub trait ReplySink: Send {
    /// A CreateSession entry was applied and assigned `session_id`.
    fn session_created(&mut self, origin: Origin, session_id: i64, passwd: &[u8]);
    /// A client write (or closeSession) was applied with `result`.
    fn write_applied(&mut self, origin: Origin, zxid: i64, result: &Result<Response, ErrorCode>);
    /// A watch trigger fired. `acl` is the node's ACL when the change happened (None when
    /// unknown): recipients that may not READ it must not get the event.
    fn watches_fired(&mut self, zxid: i64, acl: Option<&[Acl]>, fired: Fired);
    /// `session_id` ended by an entry from `origin` (expiry, or a close through some
    /// connection): any other connection carrying it must close.
    fn session_closed(&mut self, session_id: i64, origin: Origin);
    /// A Reattach entry from `origin` was applied: `ok` if the session was live (it is now
    /// owned by `origin`'s connection, and every other connection carrying it must close),
    /// false if it had ended meanwhile. Default no-op.
    fn session_reattached(&mut self, _origin: Origin, _session_id: i64, _ok: bool) {}
    /// Raft dropped the proposal from `origin`: its waiter will never get a reply.
    fn proposal_dropped(&mut self, origin: Origin);
    /// The known leader or the term moved (ensemble only): every write, sync or session
    /// creation in flight may be lost or may still commit, so the connections waiting on one
    /// must close (ConnectionLoss). Default no-op.
    fn leader_changed(&mut self, _leader_id: u64, _term: u64) {}
    /// The whole state was replaced by a snapshot at `index` (at start-up, or a member too far
    /// behind installed the leader's). The changes folded into it fired no watches here, so
    /// the clients connected now must reconnect and re-register theirs: SetWatches then
    /// delivers what they missed, as after a ZooKeeper learner's resync. Default no-op.
    fn state_replaced(&mut self, _index: u64) {}
}

/// The state covered by the Raft log: everything here changes only by applying entries.
#[derive(Debug, Default)]
pub struct ReplicatedState {
    /// The znodes.
    pub tree: DataTree,
    /// Live sessions (id, timeout, password) and the replicated id counter.
    pub sessions: SessionTable,
    /// The zxid of the last applied entry: reply headers of reads carry it, and a client that
    /// has seen a later one is refused.
    pub last_zxid: i64,
}

/// Counters for the `srvr`/`stat`/`mntr` four-letter words.
#[derive(Debug, Default)]
pub struct Stats {
    /// Client packets read (requests, pings).
    pub packets_received: AtomicU64,
    /// Replies and notifications queued to clients.
    pub packets_sent: AtomicU64,
    /// Request latency in µs: sum, count, max and min, for min/avg/max reporting.
    pub latency_sum_us: AtomicU64,
    /// See `latency_sum_us`.
    pub latency_count: AtomicU64,
    /// See `latency_sum_us`.
    pub latency_max_us: AtomicU64,
    /// See `latency_sum_us`; 0 means "no sample yet".
    pub latency_min_us: AtomicU64,
    /// Requests received from clients and not answered yet, over all connections: the
    /// `globalOutstandingLimit` admission check and `zk_outstanding_requests` read it. Signed so
    /// an accounting bug shows as a negative number instead of wrapping.
    pub outstanding: AtomicI64,
}

impl Stats {
    /// Records one request's latency, from receipt to its reply being queued.
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

    /// `srst`: zeroes the packet and latency counters (not the gauges).
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
///
/// **Lock order** (outermost first): `state` → `watches` → the server's connection registry
/// (`server::registry`). The apply thread holds `state` for writing while it fires watches and
/// routes replies; a read takes `state` then `watches` to arm a watch at the state it read.
/// Never take an outer lock while holding an inner one, and never hold any of them across an
/// `.await` or blocking I/O (they are `parking_lot` guards, which are `!Send`, so a tokio task
/// cannot hold one across an await). Format text for admin commands after copying the data out.
#[derive(Debug)]
pub struct Shared {
    /// The effective configuration; never changes after start.
    config: Config,
    /// The tree and sessions. The apply thread takes it for writing; reads take it for reading,
    /// so a read sees whole entries only, and events sent under the write lock are queued
    /// before any read that could observe their change.
    state: RwLock<ReplicatedState>,
    /// Watches are per server and per connection, never replicated.
    watches: Mutex<WatchManager>,
    /// Expiry clocks of live sessions.
    tracker: SessionTracker,
    /// Counters for the four-letter words.
    stats: Stats,
    /// A copy of `state.last_zxid` readable without the lock (four-letter words, handshakes).
    last_zxid: AtomicI64,
    /// When the server started, for `zk_uptime`.
    started: Instant,
    /// Connection ids start from a per-boot base so that entries replayed from an earlier run
    /// never match a connection of this run.
    next_conn_id: AtomicU64,
    /// The ensemble's peer network, once started (for `mntr`'s learner counts, and to keep
    /// its address book in step with `/zookeeper/config`).
    peer_net: std::sync::OnceLock<PeerLink>,
    /// A reconfig removed this server from the ensemble: it serves no clients any more.
    removed: std::sync::atomic::AtomicBool,
}

/// Peer id → peer address of `servers`.
fn book_of(servers: &[crate::config::ServerSpec]) -> std::collections::BTreeMap<u64, String> {
    servers.iter().map(|s| (s.id, s.peer_address())).collect()
}

/// A weak link to the peer network: the listener owns it and shuts it down.
struct PeerLink(std::sync::Weak<crate::peer::PeerNetwork>);

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerLink")
    }
}

impl Shared {
    /// Empty state for a server with `config`.
    pub fn new(config: Config) -> Arc<Shared> {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        Arc::new(Shared {
            config,
            state: RwLock::new(ReplicatedState::default()),
            watches: Mutex::new(WatchManager::default()),
            tracker: SessionTracker::default(),
            stats: Stats::default(),
            last_zxid: AtomicI64::new(0),
            started: Instant::now(),
            next_conn_id: AtomicU64::new(boot << 20),
            peer_net: std::sync::OnceLock::new(),
            removed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The effective configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The replicated state; first in the lock order.
    pub fn state(&self) -> &RwLock<ReplicatedState> {
        &self.state
    }

    /// This server's watches; second in the lock order (after `state`).
    pub fn watches(&self) -> &Mutex<WatchManager> {
        &self.watches
    }

    /// Session expiry clocks (internally locked; take no other lock inside its calls).
    pub fn tracker(&self) -> &SessionTracker {
        &self.tracker
    }

    /// The four-letter-word counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The zxid of the last applied entry, without taking the state lock.
    pub fn last_zxid(&self) -> i64 {
        self.last_zxid.load(Ordering::Acquire)
    }

    /// Time since the server started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records the ensemble's peer network (once; later calls are ignored).
    pub fn set_peer_net(&self, net: &Arc<crate::peer::PeerNetwork>) {
        let _ = self.peer_net.set(PeerLink(Arc::downgrade(net)));
    }

    /// Whether this server's outbound connection to peer `id` is up (false when standalone).
    pub fn peer_connected(&self, id: u64) -> bool {
        self.peer_net
            .get()
            .and_then(|link| link.0.upgrade())
            .is_some_and(|net| net.is_connected(id))
    }

    /// Whether a reconfig removed this server from the ensemble.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Adds (or updates) `servers` in the peer network's address book (a reconfig's
    /// joiners, before the leader adds them as learners). No-op before the network is
    /// started or when standalone.
    pub fn add_peers(&self, servers: &[crate::config::ServerSpec]) {
        if let Some(net) = self.peer_net.get().and_then(|link| link.0.upgrade()) {
            net.add_peers(book_of(servers));
        }
    }

    /// Points the address book at the servers of `/zookeeper/config` (after start-up replay,
    /// a snapshot install or a conf change), keeping the peers of `keep` too: the Raft
    /// members (the outgoing half of a joint configuration, learners being added) must stay
    /// reachable until the membership drops them. zoo.cfg's stays when the node is empty.
    pub fn peers_from_tree(&self, keep: &[u64]) {
        let Some(net) = self.peer_net.get().and_then(|link| link.0.upgrade()) else {
            return;
        };
        let text = self.state.read().tree.config_data();
        let (servers, _) = crate::reconfig::parse_config(&String::from_utf8_lossy(&text));
        if !servers.is_empty() {
            net.set_peers_keeping(book_of(&servers), keep);
        }
    }

    /// A fresh connection id (also the connection's watcher id).
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Magic and version at the start of a state-machine snapshot. `RKSTATE3` is
/// `magic | last_zxid i64 | sessions_len u64 | sessions | tree`: the length prefix lets a
/// restore stream the tree from a file. `RKSTATE2` (no length; records session owners) and
/// `RKSTATE1` (no owners) are still read, from memory.
const SNAPSHOT_MAGIC_V3: &[u8; 8] = b"RKSTATE3";
/// The layout with session owners and no sessions length.
const SNAPSHOT_MAGIC: &[u8; 8] = b"RKSTATE2";
/// The layout before session owners were recorded.
const SNAPSHOT_MAGIC_V1: &[u8; 8] = b"RKSTATE1";

/// Writes an `RKSTATE3` snapshot of `state` to `w`, the tree streamed in bounded pieces.
/// Only reads `state`: no lock, no logging (it may run in a forked child).
pub(crate) fn write_snapshot(
    state: &ReplicatedState,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut head = BytesMut::new();
    head.extend_from_slice(SNAPSHOT_MAGIC_V3);
    state.last_zxid.write(&mut head);
    let mut sessions = BytesMut::new();
    state.sessions.serialize(&mut sessions);
    head.extend_from_slice(&(sessions.len() as u64).to_be_bytes());
    w.write_all(&head)?;
    w.write_all(&sessions)?;
    state.tree.serialize_into(w)
}

/// The Raft state machine of one server: applies entries to the shared state and hands what
/// they produce to a [`ReplySink`].
pub struct Applier {
    /// The state it changes.
    shared: Arc<Shared>,
    /// Where replies, events and session ends go.
    sink: Box<dyn ReplySink>,
    /// Set when an entry cannot be applied by this build (see `take_fatal`).
    fatal: Option<String>,
    /// In an ensemble: this server's id and the election timeout (the session extension a
    /// new leader grants). `None` when standalone: the tracker expires from the start.
    ensemble: Option<(u64, Duration)>,
    /// The membership the last applied reconfig entry asks for, until the raft thread takes
    /// it ([`StateMachine::take_membership_change`]).
    membership_change: Option<crate::raft::MembershipChange>,
    /// Membership changes accepted by an applied reconfig entry and not yet settled by their
    /// conf change or refusal, oldest first, with their origins
    /// ([`StateMachine::unsettled_membership_changes`]). Deterministic from the log since the
    /// last snapshot restore (which clears it).
    unsettled: Vec<(Origin, crate::raft::MembershipChange)>,
}

impl Applier {
    /// An applier over `shared` that reports to `sink`.
    pub fn new(shared: Arc<Shared>, sink: Box<dyn ReplySink>) -> Self {
        Applier {
            shared,
            sink,
            fatal: None,
            ensemble: None,
            membership_change: None,
            unsettled: Vec::new(),
        }
    }

    /// Makes this the applier of ensemble member `server_id`: the session tracker expires
    /// only while this server is a caught-up leader (promoted with `election_timeout` as the
    /// extension), and a leader change closes the connections with requests in doubt.
    pub fn with_ensemble(mut self, server_id: u64, election_timeout: Duration) -> Self {
        self.ensemble = Some((server_id, election_timeout));
        self
    }

    /// Fires watches after an entry was applied. `deleted_acls` holds the ACLs of nodes the
    /// entry may have deleted, captured before applying it.
    fn fire(
        shared: &Shared,
        sink: &mut dyn ReplySink,
        tree: &DataTree,
        zxid: i64,
        triggers: &[WatchTrigger],
        deleted_acls: &[(String, Vec<Acl>)],
    ) {
        for trigger in triggers {
            // Watches lock released before the sink takes the registry lock: the registry is
            // innermost, but holding two locks at once is not needed here.
            let fired = shared.watches.lock().fire(trigger);
            if fired.watchers.is_empty() {
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
            sink.watches_fired(zxid, acl.as_deref(), fired);
        }
    }

    /// Applies one decoded entry at `zxid` under the apply semantics `txn.semantics`.
    fn apply_txn(&mut self, zxid: i64, term: u64, txn: &Txn) {
        let shared = Arc::clone(&self.shared);
        let sink = self.sink.as_mut();
        let mut state = shared.state.write();
        state.last_zxid = zxid;
        shared.last_zxid.store(zxid, Ordering::Release);
        // Every semantics version up to CURRENT applies the same way today; when a check
        // changes, branch on `txn.semantics` here and keep the old branch for replay.
        match &txn.body {
            TxnBody::CreateSession { timeout_ms, passwd } => {
                let session_id = state.sessions.create(
                    txn.origin.server_id,
                    txn.time_ms,
                    SessionInfo {
                        timeout_ms: *timeout_ms,
                        passwd: passwd.clone(),
                        owner: Some((txn.origin.server_id, txn.origin.conn_id)),
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
                sink.session_created(txn.origin, session_id, passwd);
            }
            TxnBody::CloseSession { session_id } => {
                let session_id = *session_id;
                if Self::moved(&state, txn, session_id) {
                    sink.write_applied(txn.origin, zxid, &Err(ErrorCode::SessionMoved));
                    return;
                }
                let existed = state.sessions.remove(session_id);
                shared.tracker.remove(session_id);
                if existed {
                    let deleted_acls = acls_of(&state.tree, state.tree.ephemerals_of(session_id));
                    let triggers = state.tree.close_session(zxid, txn.time_ms, session_id);
                    Self::fire(&shared, sink, &state.tree, zxid, &triggers, &deleted_acls);
                    info!(
                        zxid,
                        session_id = format_args!("{session_id:#x}"),
                        "session closed"
                    );
                }
                sink.write_applied(txn.origin, zxid, &Ok(Response::Empty));
                sink.session_closed(session_id, txn.origin);
            }
            TxnBody::Request(Request::Reconfig(req)) => {
                let outcome = if txn.session_id != 0 && !state.sessions.contains(txn.session_id) {
                    crate::reconfig::Outcome::Reply(Err(ErrorCode::SessionExpired), Vec::new())
                } else if Self::moved(&state, txn, txn.session_id) {
                    crate::reconfig::Outcome::Reply(Err(ErrorCode::SessionMoved), Vec::new())
                } else {
                    crate::reconfig::on_request(&mut state, &shared.config, txn, req, zxid, term)
                };
                match outcome {
                    crate::reconfig::Outcome::Reply(result, triggers) => {
                        Self::fire(&shared, sink, &state.tree, zxid, &triggers, &[]);
                        if result.is_ok() {
                            // Only addresses moved (the membership is the same).
                            drop(state);
                            let ids: Vec<u64> = crate::reconfig::parse_config(
                                &String::from_utf8_lossy(&shared.state.read().tree.config_data()),
                            )
                            .0
                            .iter()
                            .map(|s| s.id)
                            .collect();
                            shared.peers_from_tree(&ids);
                        }
                        sink.write_applied(txn.origin, zxid, &result);
                    }
                    crate::reconfig::Outcome::Change(change, joining) => {
                        info!(zxid, voters = ?change.voters, learners = ?change.learners, "reconfig accepted; membership change handed to the leader");
                        drop(state);
                        shared.add_peers(&joining);
                        self.unsettled.push((txn.origin, change.clone()));
                        self.membership_change = Some(change);
                    }
                }
            }
            TxnBody::ReconfigRefused { code } => {
                let code = ErrorCode::from_wire(*code).unwrap_or(ErrorCode::SystemError);
                info!(zxid, %code, "reconfig refused by the leader");
                self.unsettled.retain(|(origin, _)| *origin != txn.origin);
                sink.write_applied(txn.origin, zxid, &Err(code));
            }
            TxnBody::Request(request) => {
                // Created-and-deleted nodes first: a node existing before the entry wins.
                let mut deleted_acls = created_acls(request, &txn.auth);
                deleted_acls.extend(acls_of(&state.tree, deletion_targets(request)));
                // Housekeeping entries (session 0) act as the server itself.
                let (result, triggers) =
                    if txn.session_id != 0 && !state.sessions.contains(txn.session_id) {
                        (Err(ErrorCode::SessionExpired), Vec::new())
                    } else if Self::moved(&state, txn, txn.session_id) {
                        (Err(ErrorCode::SessionMoved), Vec::new())
                    } else {
                        let ctx = OpContext {
                            zxid,
                            time_ms: txn.time_ms,
                            session_id: txn.session_id,
                            auth: &txn.auth,
                            ttl_enabled: shared.config.ttl_enabled,
                            providers: shared.config.auth_providers(),
                        };
                        state.tree.apply_write(&ctx, request)
                    };
                Self::fire(&shared, sink, &state.tree, zxid, &triggers, &deleted_acls);
                sink.write_applied(txn.origin, zxid, &result);
            }
            TxnBody::Reattach {
                session_id,
                timeout_ms,
            } => {
                let session_id = *session_id;
                let ok = match state.sessions.get_mut(session_id) {
                    Some(info) => {
                        info.owner = Some((txn.origin.server_id, txn.origin.conn_id));
                        info.timeout_ms = *timeout_ms;
                        true
                    }
                    None => false,
                };
                if ok {
                    shared.tracker.set_timeout(
                        session_id,
                        Duration::from_millis(u64::try_from(*timeout_ms).unwrap_or(0)),
                    );
                    shared.tracker.touch(session_id);
                    debug!(
                        zxid,
                        session_id = format_args!("{session_id:#x}"),
                        server = txn.origin.server_id,
                        conn = txn.origin.conn_id,
                        "session reattached"
                    );
                }
                sink.session_reattached(txn.origin, session_id, ok);
            }
        }
    }

    /// Whether `txn`, on behalf of `session_id`, comes from a client connection other than the
    /// session's owner (apply semantics 2 on; housekeeping, conn 0, is exempt): ZooKeeper's
    /// `checkSession(owner)`, answered with SessionMoved and not applied.
    fn moved(state: &ReplicatedState, txn: &Txn, session_id: i64) -> bool {
        if txn.semantics < 2 || txn.origin.conn_id == 0 || session_id == 0 {
            return false;
        }
        state
            .sessions
            .get(session_id)
            .and_then(|info| info.owner)
            .is_some_and(|owner| owner != (txn.origin.server_id, txn.origin.conn_id))
    }
}

impl StateMachine for Applier {
    fn apply(&mut self, index: u64, term: u64, data: &[u8]) {
        let zxid = index as i64;
        let txn = match Txn::decode(data) {
            Ok(txn) => txn,
            Err(error) => {
                // Every replica sees the same bytes, so skipping is deterministic.
                warn!(zxid, %error, "skipping undecodable log entry");
                return;
            }
        };
        if txn.semantics > APPLY_SEMANTICS {
            // Written by a newer rookery: applying it with older rules could give a different
            // result than its proposer's, and skipping it would diverge from the replicas that
            // applied it. Stop instead (fail-stop): the operator upgrades this server.
            error!(
                zxid,
                semantics = txn.semantics,
                supported = APPLY_SEMANTICS,
                "log entry from a newer apply-semantics version; upgrade this server"
            );
            self.fatal = Some(format!(
                "entry {zxid} needs apply semantics {}, this build knows up to {APPLY_SEMANTICS}",
                txn.semantics
            ));
            return;
        }
        self.apply_txn(zxid, term, &txn);
    }

    fn take_membership_change(&mut self) -> Option<crate::raft::MembershipChange> {
        self.membership_change.take()
    }

    fn unsettled_membership_changes(&self) -> Vec<crate::raft::MembershipChange> {
        self.unsettled.iter().map(|(_, c)| c.clone()).collect()
    }

    fn membership_refused(
        &mut self,
        context: &[u8],
        reason: crate::raft::MembershipRefusal,
    ) -> Option<Vec<u8>> {
        let ctx = crate::reconfig::Context::decode(context)?;
        let code = match reason {
            crate::raft::MembershipRefusal::InProgress => ErrorCode::ReconfigInProgress,
            crate::raft::MembershipRefusal::NoQuorum => ErrorCode::NewConfigNoQuorum,
        };
        let txn = Txn::new(
            ctx.origin,
            0,
            Vec::new(),
            TxnBody::ReconfigRefused { code: code.wire() },
        );
        Some(txn.encode())
    }

    fn apply_membership(
        &mut self,
        index: u64,
        _term: u64,
        context: &[u8],
        voters: &[u64],
        learners: &[u64],
        outgoing: &[u64],
    ) {
        let zxid = index as i64;
        let shared = Arc::clone(&self.shared);
        let mut state = shared.state.write();
        state.last_zxid = state.last_zxid.max(zxid);
        shared.last_zxid.store(state.last_zxid, Ordering::Release);
        if let Some(ctx) = crate::reconfig::Context::decode(context) {
            self.unsettled.retain(|(origin, _)| *origin != ctx.origin);
            let result = crate::reconfig::config_applied(&mut state, &ctx, zxid);
            let result = match result {
                Ok((response, triggers)) => {
                    Self::fire(
                        &shared,
                        self.sink.as_mut(),
                        &state.tree,
                        zxid,
                        &triggers,
                        &[],
                    );
                    Ok(response)
                }
                Err(code) => Err(code),
            };
            info!(zxid, voters = ?voters, learners = ?learners, "reconfig applied; /zookeeper/config rewritten");
            self.sink.write_applied(ctx.origin, zxid, &result);
        }
        drop(state);
        let members: Vec<u64> = voters
            .iter()
            .chain(learners)
            .chain(outgoing)
            .copied()
            .collect();
        shared.peers_from_tree(&members);
        if let Some((me, _)) = self.ensemble {
            let member = voters.contains(&me) || learners.contains(&me);
            // A joiner not yet added sees conf changes before its own: only a member that
            // leaves counts as removed.
            let was = !shared.removed.load(Ordering::Acquire);
            if !member && was && context_names_removal(context, me) {
                warn!(zxid, server_id = me, "this server was removed from the ensemble by a reconfig; it stops serving clients");
                shared.removed.store(true, Ordering::Release);
            } else if member && !was {
                info!(
                    zxid,
                    server_id = me,
                    "this server is a member of the ensemble again"
                );
                shared.removed.store(false, Ordering::Release);
            }
        }
    }

    fn take_fatal(&mut self) -> Option<String> {
        self.fatal.take()
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = write_snapshot(&self.shared.state.read(), &mut out);
        out
    }

    fn snapshot_into(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        write_snapshot(&self.shared.state.read(), w)
    }

    fn with_frozen(&self, f: &mut dyn FnMut(crate::raft::SnapshotWriter<'_>)) {
        // Held across `f`: no writer can change the state (nor be half-way through a change)
        // while `f` runs, e.g. while it forks a child that serializes this very memory.
        let state = self.shared.state.read();
        f(&|w| write_snapshot(&state, w));
    }

    fn fork_safe(&self) -> bool {
        // write_snapshot only reads the state it is handed (no locks, no logging, no I/O
        // besides the writer), so a forked child may run it. ROOKERY_SNAPSHOT_FORK=0 turns
        // that off (the raft thread then serializes in-process, pausing for it): for
        // measuring, or a platform where fork misbehaves.
        static FORK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *FORK.get_or_init(|| std::env::var("ROOKERY_SNAPSHOT_FORK").map_or(true, |v| v != "0"))
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), String> {
        self.restore_from(index, data.len() as u64, &mut &data[..])
    }

    fn restore_from(
        &mut self,
        index: u64,
        len: u64,
        r: &mut dyn std::io::Read,
    ) -> Result<(), String> {
        let io = |e: std::io::Error| format!("reading state snapshot: {e}");
        // What was unsettled before the snapshot is unknown now (it is not in the snapshot).
        self.unsettled.clear();
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).map_err(io)?;
        let (last_zxid, sessions, tree) = if &magic == SNAPSHOT_MAGIC_V3 {
            let mut head = [0u8; 16];
            r.read_exact(&mut head).map_err(io)?;
            let (zxid, sessions_len) = head.split_at(8);
            let last_zxid = i64::from_be_bytes(zxid.try_into().map_err(|_| "short header")?);
            let sessions_len =
                u64::from_be_bytes(sessions_len.try_into().map_err(|_| "short header")?);
            let rest = len
                .checked_sub(24)
                .and_then(|l| l.checked_sub(sessions_len))
                .ok_or("state snapshot sessions length exceeds the snapshot")?;
            let mut table = Vec::new();
            r.take(sessions_len).read_to_end(&mut table).map_err(io)?;
            let mut input = Reader::new(&table);
            let sessions =
                SessionTable::deserialize(&mut input, true).map_err(|e| e.to_string())?;
            if input.remaining() != 0 {
                return Err("state snapshot sessions length is wrong".into());
            }
            let tree = DataTree::deserialize_from(r, rest).map_err(|e| e.to_string())?;
            (last_zxid, sessions, tree)
        } else {
            // Older layouts have no sessions length: read them whole (only ever once, when a
            // data dir written by an older build is loaded; the next snapshot is RKSTATE3).
            let with_owners = match &magic {
                m if m == SNAPSHOT_MAGIC => true,
                m if m == SNAPSHOT_MAGIC_V1 => false,
                _ => return Err("state snapshot has a bad magic".into()),
            };
            let mut body = Vec::new();
            r.read_to_end(&mut body).map_err(io)?;
            let mut input = Reader::new(&body);
            let last_zxid = i64::read(&mut input).map_err(|e| e.to_string())?;
            let sessions =
                SessionTable::deserialize(&mut input, with_owners).map_err(|e| e.to_string())?;
            let consumed = body.len() - input.remaining();
            let tree = DataTree::deserialize(&body[consumed..]).map_err(|e| e.to_string())?;
            (last_zxid, sessions, tree)
        };
        // Sessions this server tracked that the snapshot no longer has ended while it was
        // behind: stop tracking them and close their local connections (a follower that
        // installs a snapshot must not keep serving a session the ensemble closed).
        let vanished = self.shared.tracker.retain(|id| sessions.contains(id));
        for id in &vanished {
            self.sink
                .session_closed(*id, Origin::housekeeping(self.shared.config.server_id));
        }
        if !vanished.is_empty() {
            info!(
                index,
                vanished = vanished.len(),
                "sessions ended while behind; their connections are closed"
            );
        }
        for (id, info) in sessions.iter() {
            self.shared.tracker.add(
                *id,
                Duration::from_millis(u64::try_from(info.timeout_ms).unwrap_or(0)),
            );
        }
        let mut state = self.shared.state.write();
        state.tree = tree;
        if self.ensemble.is_some() && state.tree.config_data().is_empty() {
            // A snapshot from before `/zookeeper/config` was kept: zoo.cfg's servers.
            let initial = crate::reconfig::initial_config(&self.shared.config);
            if let Err(code) = state.tree.set_config(initial.as_bytes(), 0, 0) {
                warn!(%code, "cannot set /zookeeper/config after a restore");
            }
        }
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
        // Add the snapshot's servers and drop nobody: this state machine does not know the
        // snapshot's Raft configuration, and a joint one still needs outgoing voters that
        // `/zookeeper/config` no longer lists (the next conf change prunes the book).
        let servers =
            crate::reconfig::parse_config(&String::from_utf8_lossy(&state.tree.config_data())).0;
        drop(state);
        self.shared.add_peers(&servers);
        self.sink.state_replaced(index);
        Ok(())
    }

    fn proposal_dropped(&mut self, data: &[u8]) {
        if let Ok(txn) = Txn::decode(data) {
            self.sink.proposal_dropped(txn.origin);
        }
    }

    fn on_role_change(&mut self, is_leader: bool, term: u64) {
        info!(is_leader, term, "raft role changed");
        if is_leader {
            self.shared.tracker.reset_closing();
        }
        if !is_leader && self.ensemble.is_some() {
            self.shared.tracker.demote();
        }
    }

    fn on_leader_change(&mut self, leader_id: u64, term: u64) {
        let Some((server_id, _)) = self.ensemble else {
            return;
        };
        info!(leader_id, term, "known leader changed");
        if leader_id != server_id {
            self.shared.tracker.demote();
        }
        self.sink.leader_changed(leader_id, term);
    }

    fn on_caught_up(&mut self, term: u64) {
        if let Some((_, extension)) = self.ensemble {
            info!(term, "caught up as leader; expiring sessions from now on");
            self.shared.tracker.promote(Instant::now(), extension);
        }
    }
}

/// Whether the reconfig `context` leaves server `me` out (a conf change without context, such
/// as a joiner's learner step, never removes it).
fn context_names_removal(context: &[u8], me: u64) -> bool {
    crate::reconfig::Context::decode(context).is_some_and(|c| !c.servers.iter().any(|s| s.id == me))
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

#[cfg(test)]
mod tests {
    //! The state machine on its own: entries applied through a recording sink, no runtime, no
    //! sockets.
    use super::*;
    use crate::watch::WatchKind;
    use rookery_protocol::{perms, CreateMode, CreateRequest, OpCode, SetDataRequest};

    /// One thing the applier handed to the sink.
    #[derive(Debug, Clone, PartialEq)]
    enum Item {
        Created(Origin, i64),
        Applied(Origin, i64, Result<Response, ErrorCode>),
        Fired(i64, Vec<u64>, i32, String),
        Closed(i64, Origin),
        Dropped(Origin),
        Reattached(Origin, i64, bool),
        Replaced(u64),
    }

    /// Records everything; the test keeps a second handle on the log.
    #[derive(Default, Clone)]
    struct Recorder(Arc<Mutex<Vec<Item>>>);

    impl ReplySink for Recorder {
        fn session_created(&mut self, origin: Origin, session_id: i64, _passwd: &[u8]) {
            self.0.lock().push(Item::Created(origin, session_id));
        }
        fn write_applied(
            &mut self,
            origin: Origin,
            zxid: i64,
            result: &Result<Response, ErrorCode>,
        ) {
            self.0
                .lock()
                .push(Item::Applied(origin, zxid, result.clone()));
        }
        fn watches_fired(&mut self, zxid: i64, _acl: Option<&[Acl]>, fired: Fired) {
            self.0.lock().push(Item::Fired(
                zxid,
                fired.watchers,
                fired.event.event_type,
                fired.event.path,
            ));
        }
        fn session_closed(&mut self, session_id: i64, origin: Origin) {
            self.0.lock().push(Item::Closed(session_id, origin));
        }
        fn proposal_dropped(&mut self, origin: Origin) {
            self.0.lock().push(Item::Dropped(origin));
        }
        fn session_reattached(&mut self, origin: Origin, session_id: i64, ok: bool) {
            self.0.lock().push(Item::Reattached(origin, session_id, ok));
        }
        fn state_replaced(&mut self, index: u64) {
            self.0.lock().push(Item::Replaced(index));
        }
    }

    fn origin(conn_id: u64, xid: i32) -> Origin {
        Origin {
            server_id: 1,
            conn_id,
            xid,
        }
    }

    fn create(path: &str, flags: i32) -> TxnBody {
        TxnBody::Request(Request::Create {
            op: OpCode::Create2,
            req: CreateRequest {
                path: path.into(),
                data: Some(b"v".to_vec()),
                acl: vec![Acl {
                    perms: perms::ALL,
                    id: Id {
                        scheme: "world".into(),
                        id: "anyone".into(),
                    },
                }],
                flags,
            },
        })
    }

    fn setup() -> (Arc<Shared>, Applier, Recorder) {
        let shared = Shared::new(Config::default());
        let recorder = Recorder::default();
        let applier = Applier::new(Arc::clone(&shared), Box::new(recorder.clone()));
        (shared, applier, recorder)
    }

    fn take(recorder: &Recorder) -> Vec<Item> {
        std::mem::take(&mut *recorder.0.lock())
    }

    /// Creates a session at `index` and returns its id.
    fn new_session(applier: &mut Applier, recorder: &Recorder, index: u64) -> i64 {
        let body = TxnBody::CreateSession {
            timeout_ms: 4000,
            passwd: vec![7; 16],
        };
        applier.apply(index, 1, &Txn::new(origin(9, 0), 0, vec![], body).encode());
        match take(recorder).as_slice() {
            [Item::Created(o, id)] if *o == origin(9, 0) => *id,
            other => panic!("expected one session_created, got {other:?}"),
        }
    }

    #[test]
    fn writes_reply_to_their_origin_and_fire_watches() {
        let (shared, mut applier, recorder) = setup();
        let session = new_session(&mut applier, &recorder, 1);
        let txn = Txn::new(origin(9, 5), session, vec![], create("/a", 0));
        applier.apply(2, 1, &txn.encode());
        match take(&recorder).as_slice() {
            [Item::Applied(o, 2, Ok(_))] if *o == origin(9, 5) => {}
            other => panic!("expected the create's reply, got {other:?}"),
        }
        assert_eq!(shared.last_zxid(), 2);
        // Two connections watch /a; one setData fires one event for both.
        shared.watches().lock().add(11, "/a", WatchKind::Data);
        shared.watches().lock().add(12, "/a", WatchKind::Data);
        let set = TxnBody::Request(Request::SetData(SetDataRequest {
            path: "/a".into(),
            data: Some(b"w".to_vec()),
            version: -1,
        }));
        applier.apply(3, 1, &Txn::new(origin(9, 6), session, vec![], set).encode());
        let items = take(&recorder);
        assert_eq!(
            items.first(),
            Some(&Item::Fired(3, vec![11, 12], 3, "/a".into())),
            "{items:?}"
        );
        assert!(matches!(items.get(1), Some(Item::Applied(o, 3, Ok(_))) if *o == origin(9, 6)));
        assert_eq!(items.len(), 2);
        // One-shot watches are used up.
        let set = TxnBody::Request(Request::SetData(SetDataRequest {
            path: "/a".into(),
            data: Some(b"x".to_vec()),
            version: -1,
        }));
        applier.apply(4, 1, &Txn::new(origin(9, 7), session, vec![], set).encode());
        assert_eq!(take(&recorder).len(), 1);
    }

    #[test]
    fn unknown_sessions_get_session_expired() {
        let (_shared, mut applier, recorder) = setup();
        let txn = Txn::new(origin(9, 1), 0x77, vec![], create("/b", 0));
        applier.apply(1, 1, &txn.encode());
        assert_eq!(
            take(&recorder),
            vec![Item::Applied(
                origin(9, 1),
                1,
                Err(ErrorCode::SessionExpired)
            )]
        );
    }

    /// The Reattach fence (cluster.md §4.4): once a session resumed through another
    /// connection, requests and closeSession still proposed through the old one get
    /// SessionMoved and change nothing; the new owner's go through; expiry is exempt; entries
    /// of apply semantics 1 (replayed from an old log) are not fenced.
    #[test]
    fn requests_from_a_moved_sessions_old_connection_get_session_moved() {
        let (shared, mut applier, recorder) = setup();
        let session = new_session(&mut applier, &recorder, 1);
        let old = origin(9, 3);
        let new = Origin {
            server_id: 2,
            conn_id: 4,
            xid: 0,
        };
        let reattach = TxnBody::Reattach {
            session_id: session,
            timeout_ms: 6000,
        };
        applier.apply(2, 1, &Txn::new(new, session, vec![], reattach).encode());
        assert_eq!(take(&recorder), vec![Item::Reattached(new, session, true)]);
        {
            let state = shared.state().read();
            let info = state.sessions.get(session).unwrap();
            assert_eq!((info.owner, info.timeout_ms), (Some((2, 4)), 6000));
        }
        let eph = create("/moved", CreateMode::Ephemeral.wire());
        applier.apply(3, 1, &Txn::new(old, session, vec![], eph.clone()).encode());
        assert_eq!(
            take(&recorder),
            vec![Item::Applied(old, 3, Err(ErrorCode::SessionMoved))]
        );
        assert!(shared.state().read().tree.acl_of("/moved").is_none());
        let close = TxnBody::CloseSession {
            session_id: session,
        };
        applier.apply(
            4,
            1,
            &Txn::new(old, session, vec![], close.clone()).encode(),
        );
        assert_eq!(
            take(&recorder),
            vec![Item::Applied(old, 4, Err(ErrorCode::SessionMoved))]
        );
        assert!(shared.state().read().sessions.contains(session));
        // A replayed semantics-1 entry from the old connection applies as it did then.
        let mut legacy = Txn::new(old, session, vec![], create("/legacy", 0));
        legacy.semantics = 1;
        applier.apply(5, 1, &legacy.encode());
        assert!(matches!(take(&recorder).as_slice(), [Item::Applied(o, 5, Ok(_))] if *o == old));
        // The new owner's requests go through.
        let new_eph = Origin { xid: 1, ..new };
        applier.apply(6, 1, &Txn::new(new_eph, session, vec![], eph).encode());
        assert!(
            matches!(take(&recorder).as_slice(), [Item::Applied(o, 6, Ok(_))] if *o == new_eph)
        );
        assert_eq!(
            shared.state().read().tree.ephemerals_of(session).len(),
            1,
            "only the new owner's ephemeral"
        );
        // Expiry (housekeeping) is exempt; a Reattach of an ended session reports false.
        let housekeeping = Origin::housekeeping(2);
        applier.apply(
            7,
            1,
            &Txn::new(housekeeping, session, vec![], close).encode(),
        );
        assert!(!shared.state().read().sessions.contains(session));
        take(&recorder);
        let again = TxnBody::Reattach {
            session_id: session,
            timeout_ms: 6000,
        };
        applier.apply(8, 1, &Txn::new(new, session, vec![], again).encode());
        assert_eq!(take(&recorder), vec![Item::Reattached(new, session, false)]);
    }

    /// A snapshot install that no longer has a session this server tracked (it ended while
    /// the server was behind) stops tracking it and closes its local connection; sessions the
    /// snapshot has, with their owners, stay.
    /// The raft-thread pause of taking a snapshot at 1M znodes of ~100 bytes: serializing
    /// in-process (what the raft thread did before snapshots were forked) against forking a
    /// child under the read lock (what it does now). By hand, in release:
    /// `cargo test --release --lib snapshot_pause_at_a_million_znodes -- --ignored --nocapture`
    #[test]
    #[ignore = "1M znodes, by hand in release"]
    fn snapshot_pause_at_a_million_znodes() {
        let (shared, mut applier, _recorder) = setup();
        let data = vec![b'x'; 100];
        let mut index = 1;
        for p in 0..1000 {
            for i in 0..=1000 {
                let path = if i == 0 {
                    format!("/p{p:04}")
                } else {
                    format!("/p{p:04}/n{i:04}")
                };
                let body = TxnBody::Request(Request::Create {
                    op: OpCode::Create,
                    req: CreateRequest {
                        path,
                        data: Some(data.clone()),
                        acl: vec![Acl {
                            perms: perms::ALL,
                            id: Id {
                                scheme: "world".into(),
                                id: "anyone".into(),
                            },
                        }],
                        flags: 0,
                    },
                });
                index += 1;
                applier.apply(index, 1, &Txn::new(origin(9, 0), 0, vec![], body).encode());
            }
        }
        let nodes = shared.state().read().tree.node_count();
        assert!(nodes > 1_000_000);
        let started = Instant::now();
        let image = applier.snapshot();
        let in_process = started.elapsed();
        let mut fork_pause = Duration::ZERO;
        let mut pid = 0;
        applier.with_frozen(&mut |write| {
            let t = Instant::now();
            // SAFETY: as in the raft thread's fork_snapshot: the child only runs the writer
            // (into /dev/null here) and leaves with _exit.
            pid = unsafe { libc::fork() };
            if pid == 0 {
                let code = std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/null")
                    .and_then(|f| write(&mut std::io::BufWriter::new(f)))
                    .map_or(1, |()| 0);
                // SAFETY: ends the child without running anything of the parent's.
                unsafe { libc::_exit(code) }
            }
            fork_pause = t.elapsed();
        });
        assert!(pid > 0, "fork failed");
        let mut status = 0;
        let child_started = Instant::now();
        // SAFETY: reaps our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        eprintln!(
            "{nodes} znodes, image {} bytes: in-process serialize {:.1} ms (the old raft-thread \
             pause); fork {:.2} ms (the new one); the child serialized in {:.0} ms",
            image.len(),
            in_process.as_secs_f64() * 1e3,
            fork_pause.as_secs_f64() * 1e3,
            child_started.elapsed().as_secs_f64() * 1e3
        );
        assert!(
            fork_pause < Duration::from_millis(100),
            "fork pause {fork_pause:?}"
        );
    }

    #[test]
    fn snapshot_streams_into_a_restore_and_old_layouts_still_load() {
        let (shared, mut applier, recorder) = setup();
        let kept = new_session(&mut applier, &recorder, 1);
        let eph = Txn::new(
            origin(9, 2),
            kept,
            vec![],
            create("/e", CreateMode::Ephemeral.wire()),
        );
        applier.apply(2, 1, &eph.encode());
        let mut streamed = Vec::new();
        applier.snapshot_into(&mut streamed).unwrap();
        assert_eq!(streamed, applier.snapshot());
        assert_eq!(&streamed[..8], SNAPSHOT_MAGIC_V3);
        let before_nodes = shared.state().read().tree.node_count();

        // Restored from a reader (what the raft thread hands over from the file).
        let (shared2, mut applier2, _rec2) = setup();
        applier2
            .restore_from(2, streamed.len() as u64, &mut &streamed[..])
            .unwrap();
        {
            let st = shared2.state().read();
            assert_eq!(st.tree.node_count(), before_nodes);
            assert!(st.sessions.contains(kept));
            assert_eq!(st.tree.ephemerals_of(kept), vec!["/e"]);
        }
        // A wrong sessions length is refused, not misread.
        let mut bad = streamed.clone();
        bad[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
        let (_s3, mut applier3, _r3) = setup();
        assert!(applier3
            .restore_from(2, bad.len() as u64, &mut &bad[..])
            .is_err());

        // RKSTATE2 (no sessions length), as written by older builds, still restores.
        let state = shared.state().read();
        let mut old = BytesMut::new();
        old.extend_from_slice(SNAPSHOT_MAGIC);
        state.last_zxid.write(&mut old);
        state.sessions.serialize(&mut old);
        let mut tree = Vec::new();
        state.tree.serialize(&mut tree);
        old.extend_from_slice(&tree);
        drop(state);
        let (shared4, mut applier4, _r4) = setup();
        applier4.restore(2, &old).unwrap();
        let st = shared4.state().read();
        assert_eq!(st.tree.node_count(), before_nodes);
        assert_eq!(st.sessions.get(kept).and_then(|i| i.owner), Some((1, 9)));
    }

    #[test]
    fn snapshot_install_drops_vanished_sessions() {
        let (shared, mut applier, recorder) = setup();
        let kept = new_session(&mut applier, &recorder, 1);
        let snapshot = applier.snapshot();
        let gone = new_session(&mut applier, &recorder, 2);
        assert_eq!(shared.tracker().len(), 2);
        applier.restore(5, &snapshot).unwrap();
        let server_id = shared.config().server_id;
        // The vanished session's connection closes, and then every connection (their watches
        // missed whatever the snapshot folded in).
        assert_eq!(
            take(&recorder),
            vec![
                Item::Closed(gone, Origin::housekeeping(server_id)),
                Item::Replaced(5)
            ]
        );
        assert_eq!(shared.tracker().len(), 1);
        let state = shared.state().read();
        assert!(!state.sessions.contains(gone));
        assert_eq!(
            state.sessions.get(kept).and_then(|i| i.owner),
            Some((1, 9)),
            "owners survive the snapshot"
        );
    }

    #[test]
    fn expiry_deletes_ephemerals_fires_and_reports_the_session_closed() {
        let (shared, mut applier, recorder) = setup();
        let session = new_session(&mut applier, &recorder, 1);
        let eph = Txn::new(
            origin(9, 2),
            session,
            vec![],
            create("/e", CreateMode::Ephemeral.wire()),
        );
        applier.apply(2, 1, &eph.encode());
        take(&recorder);
        shared.watches().lock().add(30, "/e", WatchKind::Data);
        let housekeeping = Origin::housekeeping(1);
        let close = Txn::new(
            housekeeping,
            session,
            vec![],
            TxnBody::CloseSession {
                session_id: session,
            },
        );
        applier.apply(3, 1, &close.encode());
        assert_eq!(
            take(&recorder),
            vec![
                Item::Fired(3, vec![30], 2, "/e".into()),
                Item::Applied(housekeeping, 3, Ok(Response::Empty)),
                Item::Closed(session, housekeeping),
            ]
        );
        assert!(!shared.state().read().sessions.contains(session));
        assert!(shared.state().read().tree.acl_of("/e").is_none());
    }

    #[test]
    fn entries_from_a_newer_semantics_are_fatal_and_drops_are_reported() {
        let (shared, mut applier, recorder) = setup();
        let mut txn = Txn::new(origin(9, 1), 0, vec![], create("/c", 0));
        txn.semantics = APPLY_SEMANTICS + 1;
        applier.apply(1, 1, &txn.encode());
        assert!(take(&recorder).is_empty());
        assert!(applier
            .take_fatal()
            .is_some_and(|r| r.contains("apply semantics")));
        assert_eq!(applier.take_fatal(), None);
        assert!(shared.state().read().tree.acl_of("/c").is_none());
        applier.proposal_dropped(&txn.encode());
        assert_eq!(take(&recorder), vec![Item::Dropped(origin(9, 1))]);
    }

    #[test]
    fn ensemble_hooks_promote_and_demote_the_tracker_standalone_ignores_them() {
        let (shared, mut applier, _recorder) = setup();
        // Standalone: expiring from the start; leader moves change nothing.
        applier.on_leader_change(0, 2);
        applier.on_role_change(false, 2);
        assert!(shared.tracker().is_expiring());
        let (shared, applier, _recorder) = setup();
        let mut applier = applier.with_ensemble(1, Duration::from_millis(500));
        shared.tracker().demote();
        applier.on_leader_change(1, 3);
        assert!(!shared.tracker().is_expiring(), "leader, not caught up yet");
        applier.on_caught_up(3);
        assert!(shared.tracker().is_expiring());
        applier.on_leader_change(2, 4);
        assert!(!shared.tracker().is_expiring(), "another server leads");
        applier.on_caught_up(5);
        applier.on_role_change(false, 5);
        assert!(!shared.tracker().is_expiring(), "lost leadership");
    }
}
