//! Live connections as the rest of the server reaches them, and the [`ReplySink`] that routes
//! what the state machine produces (replies, watch events, session ends) to them.
//!
//! Memory bound: every connection has an [`OutputBudget`] that counts the bytes queued for it
//! and not yet written to its socket, both the frames waiting in its channel and the ones in
//! its own `out` buffer. The apply thread never waits for a connection: when a message would
//! take the budget past its cap, the connection is closed (its close signal fires) and the
//! message is dropped, as ZooKeeper closes a client that cannot keep up rather than stalling
//! the pipeline.
//!
//! Lock order: this registry's mutex is the innermost lock of the server. It is taken under
//! `Shared::state` and `Shared::watches` (by the apply thread), never the other way round.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, MutexGuard};
use rookery_protocol::codec::write_frame;
use rookery_protocol::{
    encode_reply, perms, xids, Acl, ErrorCode, Id, Record, ReplyHeader, Response, WatcherEvent,
};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::state::ReplySink;
use crate::tree::check_acl;
use crate::txn::Origin;
use crate::watch::Fired;

/// What the state machine and other connections send to a connection. Frames are encoded by
/// the sender, so their size is known when the budget is charged.
#[derive(Debug)]
pub enum Outbound {
    /// A watch fired. The frame is encoded once per event and shared by every recipient.
    /// `zxid` is the change's zxid, or -1 for events raised by SetWatches.
    Event {
        /// Orders the event against read replies (see `Connection::run_local`).
        zxid: i64,
        /// The whole notification frame, length prefix included.
        frame: Bytes,
    },
    /// The result of a write this connection proposed.
    Reply {
        /// Matched against the head of the connection's pending queue.
        xid: i32,
        /// The whole reply frame, length prefix included.
        frame: Bytes,
    },
    /// The Reattach this connection proposed was applied; `ok` if the session was live.
    SessionReattached {
        /// False if the session had ended before the entry applied.
        ok: bool,
    },
    /// The CreateSession this connection proposed was applied.
    SessionCreated {
        /// The id the log assigned.
        session_id: i64,
        /// The password the proposer chose.
        passwd: Vec<u8>,
    },
}

impl Outbound {
    /// The bytes this message will occupy in the connection's output.
    pub fn charge(&self) -> usize {
        match self {
            Outbound::Event { frame, .. } | Outbound::Reply { frame, .. } => frame.len(),
            Outbound::SessionCreated { passwd, .. } => passwd.len() + 64,
            Outbound::SessionReattached { .. } => 64,
        }
    }
}

/// Encodes a reply frame (length prefix, header, body unless it is an error).
pub fn reply_frame(xid: i32, zxid: i64, result: &Result<Response, ErrorCode>) -> Bytes {
    let (err, body) = match result {
        Ok(response) => (0, response),
        Err(code) => (code.wire(), &Response::Empty),
    };
    let header = ReplyHeader { xid, zxid, err };
    let mut out = BytesMut::new();
    write_frame(&mut out, |out| encode_reply(&header, body, out));
    out.freeze()
}

/// Encodes a watch notification frame (xid -1).
pub fn event_frame(zxid: i64, event: &WatcherEvent) -> Bytes {
    let header = ReplyHeader {
        xid: xids::NOTIFICATION,
        zxid,
        err: 0,
    };
    let mut out = BytesMut::new();
    write_frame(&mut out, |out| {
        header.write(out);
        event.write(out);
    });
    out.freeze()
}

/// Bytes queued for one connection and not yet written to its socket, with the cap past which
/// the connection is closed. Shared by the senders (apply thread, other connections) and the
/// connection task, which releases what it writes.
#[derive(Debug)]
pub struct OutputBudget {
    /// Bytes in the channel plus bytes in the connection's `out` buffer.
    queued: AtomicUsize,
    /// The cap (`connection.maxOutputBytes`).
    cap: usize,
    /// Set when a charge passed the cap: tells the connection why it was closed.
    overflowed: AtomicBool,
    /// Fired to close the connection at once, whatever it is doing (a stalled write included).
    close: CancellationToken,
}

impl OutputBudget {
    /// A budget of `cap` bytes, with its connection's close signal.
    pub fn new(cap: usize, close: CancellationToken) -> Self {
        OutputBudget {
            queued: AtomicUsize::new(0),
            cap,
            overflowed: AtomicBool::new(false),
            close,
        }
    }

    /// [`OutputBudget::charge`], logging (once, when the connection is first closed for it)
    /// which session and client went over the cap. Both senders of a connection, the apply
    /// side and the connection task itself, charge through here.
    pub fn charge_or_close(&self, bytes: usize, session_id: i64, peer: SocketAddr) -> bool {
        let was_closed = self.is_closed();
        if self.charge(bytes) {
            return true;
        }
        if !was_closed {
            warn!(
                session = format_args!("{session_id:#x}"),
                peer = %peer,
                queued = self.queued(),
                cap = self.cap(),
                "connection output over its cap; closing it"
            );
        }
        false
    }

    /// Charges `bytes`. Past the cap the charge is undone, the close signal fires and false is
    /// returned: the caller drops the message, the connection is going away.
    pub fn charge(&self, bytes: usize) -> bool {
        if self.close.is_cancelled() {
            return false;
        }
        let before = self.queued.fetch_add(bytes, Ordering::AcqRel);
        if before.saturating_add(bytes) > self.cap {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            self.overflowed.store(true, Ordering::Release);
            self.close.cancel();
            return false;
        }
        true
    }

    /// Releases `bytes` that were written to the socket (or dropped with the connection).
    pub fn release(&self, bytes: usize) {
        // Saturating: releasing more than was charged is a bug, but must not wrap to "full".
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(bytes))
            });
    }

    /// Bytes currently queued.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Whether a charge ever passed the cap (so the close was for a slow consumer).
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Whether the connection has been told to close.
    pub fn is_closed(&self) -> bool {
        self.close.is_cancelled()
    }

    /// Tells the connection to close at once (not an overflow: `overflowed` stays false).
    pub fn close(&self) {
        self.close.cancel();
    }
}

/// A connection as the rest of the server reaches it.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// Where replies and events for this connection go; unbounded because the budget, not the
    /// channel, bounds it (a bounded channel would make the apply thread wait).
    pub tx: UnboundedSender<Outbound>,
    /// Bytes queued for it and its close signal.
    pub budget: Arc<OutputBudget>,
    /// The session the connection carries (0 until the handshake ends).
    pub session_id: i64,
    /// For the `cons` four-letter word and for log lines about this connection.
    pub peer: SocketAddr,
    /// The connection's authenticated ids: a watch event goes only to connections that may
    /// READ the node it is about.
    pub auth: Vec<Id>,
    /// Requests received and not answered yet, for `cons` (`queued=`).
    pub outstanding: Arc<AtomicUsize>,
    /// Packets in and out and when the connection was accepted, for `cons` and the
    /// AdminServer's `connections`.
    pub counters: Arc<ConnCounters>,
    /// Writes, syncs and session creations this connection has in flight (proposed, not yet
    /// answered): their fate is unknown after a leader change, so the connection is closed
    /// then ([`ReplySink::leader_changed`]).
    pub in_doubt: Arc<AtomicUsize>,
    /// Of those, reconfigs: once committed, a reconfig's answer comes from the log whichever
    /// leader carries it out (any new leader takes over an accepted change), so reconfigs
    /// alone do not make the connection close at a leader change. The request may also reach
    /// the origin's log only after the leader change (the leader hands over as soon as it
    /// applies a change that removes it); if it is lost instead, the connection's own op
    /// deadline closes the connection (ConnectionLoss).
    pub awaiting_log: Arc<AtomicUsize>,
    /// Admitted while this server was in read-only mode: closed when the server leaves it,
    /// so its client looks for a read-write server ([`ConnRegistry::leave_read_only`]).
    pub read_only: bool,
}

/// One connection's traffic, as ZooKeeper's per-connection `ServerCnxn` stats count it:
/// bumped by the connection's own task only, read by admin commands.
#[derive(Debug)]
pub struct ConnCounters {
    /// Packets read from the client (requests and pings): `recved=`, `packets_received`.
    pub received: AtomicU64,
    /// Replies and notifications written: `sent=`, `packets_sent`.
    pub sent: AtomicU64,
    /// When the connection was accepted, in ms since the epoch: `est=`, `established`.
    pub established_ms: i64,
}

impl Default for ConnCounters {
    fn default() -> Self {
        ConnCounters {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            established_ms: crate::txn::now_ms(),
        }
    }
}

impl ConnHandle {
    /// Queues a message, closing the connection instead if it would pass its output cap.
    /// Never blocks.
    pub fn send(&self, message: Outbound) {
        let bytes = message.charge();
        if !self
            .budget
            .charge_or_close(bytes, self.session_id, self.peer)
        {
            return;
        }
        if self.tx.send(message).is_err() {
            // The receiver is gone: the connection is ending and nobody will release this.
            self.budget.release(bytes);
        }
    }
}

/// The connection tables, behind their own mutex.
#[derive(Debug, Default)]
pub struct ConnTables {
    /// Connection id → handle.
    pub by_id: HashMap<u64, ConnHandle>,
    /// Session id → the connection currently carrying it (a session moves on reconnect).
    pub by_session: HashMap<i64, u64>,
    /// Read-only mode (ZooKeeper's `ReadOnlyZooKeeperServer`). Kept under the same lock as
    /// the tables, so a read-only handshake registering and the server leaving read-only
    /// mode are ordered: no read-only connection can slip in after the exit closed them.
    pub read_only: ReadOnlyMode,
}

/// A session created while in read-only mode: local to this server, never replicated, and
/// gone when the server leaves read-only mode (ZooKeeper's read-only sessions are never
/// logged either).
#[derive(Debug, Clone)]
pub struct LocalSession {
    /// The password handed to the client; a resume must present it.
    pub passwd: Vec<u8>,
    /// The negotiated timeout: how long a disconnected local session may still be resumed.
    pub timeout_ms: i32,
    /// When its last connection went away; `None` while a connection carries it.
    pub detached_at: Option<Instant>,
}

/// The read-only state of this server.
#[derive(Debug, Default)]
pub struct ReadOnlyMode {
    /// In read-only mode: only `readOnly` handshakes are admitted, and they are read-only.
    pub active: bool,
    /// The next local session id (0 until the first one of this read-only period).
    next_local_id: i64,
    /// Local sessions by id.
    sessions: HashMap<i64, LocalSession>,
}

/// High bit of every local (read-only) session id. Global ids never have it: they are
/// `(time << 24 >> 8) | ((server_id & 0x7f) << 56)` ([`crate::session::SessionTable`]), so a
/// local id can never name a global session, here or on another server. ZooKeeper keeps
/// the two apart by the same server-id prefix scheme; one more bit makes the split explicit.
pub const LOCAL_SESSION_BIT: i64 = i64::MIN;

impl ReadOnlyMode {
    /// Creates a local session; its id has [`LOCAL_SESSION_BIT`] set.
    pub fn create_session(
        &mut self,
        server_id: u64,
        now_ms: i64,
        timeout_ms: i32,
        passwd: Vec<u8>,
    ) -> i64 {
        if self.next_local_id == 0 {
            // The same layout as global ids (time, then the server id in the top byte), so
            // ids differ across read-only periods and servers.
            let base = ((now_ms as u64) << 24) >> 8;
            self.next_local_id = (base | ((server_id & 0x7f) << 56)) as i64 | LOCAL_SESSION_BIT;
        }
        // Bounded: skips at most the ids in use.
        while self.sessions.contains_key(&self.next_local_id) {
            self.next_local_id = self.next_local_id.wrapping_add(1) | LOCAL_SESSION_BIT;
        }
        let id = self.next_local_id;
        self.next_local_id = self.next_local_id.wrapping_add(1) | LOCAL_SESSION_BIT;
        self.sessions.insert(
            id,
            LocalSession {
                passwd,
                timeout_ms,
                detached_at: None,
            },
        );
        id
    }

    /// Resumes a local session if it exists, the password matches and it has not timed out
    /// since its last connection went away.
    pub fn resume_session(&mut self, session_id: i64, passwd: &[u8], now: Instant) -> bool {
        match self.sessions.get_mut(&session_id) {
            Some(session) if session.passwd == passwd && !session.expired(now) => {
                session.detached_at = None;
                true
            }
            _ => false,
        }
    }

    /// Its connection went away: the session may be resumed within its timeout.
    pub fn detach_session(&mut self, session_id: i64, now: Instant) {
        if let Some(session) = self.sessions.get_mut(&session_id) {
            session.detached_at = Some(now);
        }
    }

    /// Ends a local session (closeSession).
    pub fn remove_session(&mut self, session_id: i64) {
        self.sessions.remove(&session_id);
    }

    /// Drops local sessions that timed out while detached; returns how many.
    pub fn prune(&mut self, now: Instant) -> usize {
        let before = self.sessions.len();
        self.sessions.retain(|_, session| !session.expired(now));
        before - self.sessions.len()
    }

    /// Local sessions alive (for `mntr`).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

impl LocalSession {
    fn expired(&self, now: Instant) -> bool {
        let timeout = Duration::from_millis(u64::try_from(self.timeout_ms).unwrap_or(0));
        self.detached_at
            .is_some_and(|at| now.saturating_duration_since(at) > timeout)
    }
}

impl ConnTables {
    /// Sends to one connection, if it is still there.
    pub fn send(&self, conn_id: u64, message: Outbound) {
        if let Some(conn) = self.by_id.get(&conn_id) {
            conn.send(message);
        }
    }

    /// Closes one connection at once, if it is still there.
    pub fn close(&self, conn_id: u64) {
        if let Some(conn) = self.by_id.get(&conn_id) {
            conn.budget.close();
        }
    }

    /// Closes every connection that has a write, sync or session creation in flight (other
    /// than accepted reconfigs, see [`ConnHandle::awaiting_log`]); returns how many.
    pub fn close_in_doubt(&self) -> usize {
        let mut closed = 0;
        for conn in self.by_id.values() {
            let in_doubt = conn.in_doubt.load(Ordering::Acquire);
            if in_doubt > conn.awaiting_log.load(Ordering::Acquire) && !conn.budget.is_closed() {
                conn.budget.close();
                closed += 1;
            }
        }
        closed
    }
}

/// Live connections of this server.
#[derive(Debug, Default)]
pub struct ConnRegistry {
    /// The tables; innermost lock (see the module docs).
    tables: Mutex<ConnTables>,
}

impl ConnRegistry {
    /// Locks the tables. Innermost lock: take nothing else while holding it.
    pub fn lock(&self) -> MutexGuard<'_, ConnTables> {
        self.tables.lock()
    }

    /// Closes every registered client connection (a server that lost its leader); returns
    /// how many were open.
    pub fn close_all(&self) -> usize {
        let tables = self.lock();
        close_where(&tables, |_| true)
    }

    /// Live local (read-only) sessions, for `mntr`.
    pub fn local_session_count(&self) -> usize {
        self.lock().read_only.session_count()
    }

    /// Whether this server is in read-only mode.
    pub fn is_read_only(&self) -> bool {
        self.lock().read_only.active
    }

    /// One gate tick while cut off from the quorum with read-only mode enabled: enters
    /// read-only mode if not in it yet, closes every read-write connection (they would keep
    /// sessions the leader expires), and drops local sessions that timed out. Returns
    /// whether it entered read-only mode now, and how many connections it closed.
    pub fn read_only_tick(&self, now: Instant) -> (bool, usize) {
        let mut tables = self.lock();
        let entered = !tables.read_only.active;
        tables.read_only.active = true;
        tables.read_only.prune(now);
        let closed = close_where(&tables, |conn| !conn.read_only);
        (entered, closed)
    }

    /// Leaves read-only mode (the server is fresh again): forgets the local sessions and
    /// closes every read-only connection, so their clients find a read-write server (as
    /// ZooKeeper's `ReadOnlyZooKeeperServer.shutdown` closes all its connections). Returns
    /// how many it closed, or `None` if the server was not in read-only mode.
    pub fn leave_read_only(&self) -> Option<usize> {
        let mut tables = self.lock();
        if !tables.read_only.active {
            return None;
        }
        tables.read_only = ReadOnlyMode::default();
        Some(close_where(&tables, |conn| conn.read_only))
    }
}

/// Closes the open connections that `which` selects; returns how many.
fn close_where(tables: &ConnTables, which: impl Fn(&ConnHandle) -> bool) -> usize {
    let mut closed = 0;
    for conn in tables.by_id.values() {
        if which(conn) && !conn.budget.is_closed() {
            conn.budget.close();
            closed += 1;
        }
    }
    closed
}

/// Routes the state machine's output to this server's connections.
#[derive(Debug)]
pub struct ServerSink {
    /// This server's id: only entries it proposed are answered here.
    server_id: u64,
    /// Where the connections are.
    conns: Arc<ConnRegistry>,
}

impl ServerSink {
    /// A sink for the server `server_id`.
    pub fn new(server_id: u64, conns: Arc<ConnRegistry>) -> Self {
        ServerSink { server_id, conns }
    }

    /// The connection waiting on `origin`, if it is one of ours.
    fn ours(&self, origin: &Origin) -> Option<u64> {
        (origin.server_id == self.server_id && origin.conn_id != 0).then_some(origin.conn_id)
    }
}

impl ReplySink for ServerSink {
    fn session_created(&mut self, origin: Origin, session_id: i64, passwd: &[u8]) {
        if let Some(conn_id) = self.ours(&origin) {
            self.conns.lock().send(
                conn_id,
                Outbound::SessionCreated {
                    session_id,
                    passwd: passwd.to_vec(),
                },
            );
        }
    }

    fn write_applied(&mut self, origin: Origin, zxid: i64, result: &Result<Response, ErrorCode>) {
        if let Some(conn_id) = self.ours(&origin) {
            let frame = reply_frame(origin.xid, zxid, result);
            self.conns.lock().send(
                conn_id,
                Outbound::Reply {
                    xid: origin.xid,
                    frame,
                },
            );
        }
    }

    fn watches_fired(&mut self, zxid: i64, acl: Option<&[Acl]>, fired: Fired) {
        if fired.watchers.is_empty() {
            return;
        }
        // One encoding for every recipient; each connection only bumps a refcount.
        let frame = event_frame(zxid, &fired.event);
        let conns = self.conns.lock();
        for watcher in fired.watchers {
            let Some(conn) = conns.by_id.get(&watcher) else {
                continue;
            };
            if let Some(acl) = acl {
                if check_acl(acl, perms::READ, &conn.auth).is_err() {
                    debug!(path = %fired.event.path, "watch event filtered by ACL");
                    continue;
                }
            }
            conn.send(Outbound::Event {
                zxid,
                frame: frame.clone(),
            });
        }
    }

    fn session_closed(&mut self, session_id: i64, origin: Origin) {
        // Expiry, or a close through another connection: drop the session's connection now,
        // without queueing behind whatever it has not written yet.
        let conns = self.conns.lock();
        if let Some(conn_id) = conns.by_session.get(&session_id).copied() {
            if self.ours(&origin) != Some(conn_id) {
                conns.close(conn_id);
            }
        }
    }

    fn session_reattached(&mut self, origin: Origin, session_id: i64, ok: bool) {
        let conns = self.conns.lock();
        if ok {
            // The session moved to `origin`'s connection: a connection of ours still carrying
            // it is stale (its later requests would get SessionMoved); drop it now.
            if let Some(conn_id) = conns.by_session.get(&session_id).copied() {
                if self.ours(&origin) != Some(conn_id) {
                    conns.close(conn_id);
                }
            }
        }
        if let Some(conn_id) = self.ours(&origin) {
            conns.send(conn_id, Outbound::SessionReattached { ok });
        }
    }

    fn proposal_dropped(&mut self, origin: Origin) {
        if let Some(conn_id) = self.ours(&origin) {
            warn!(conn = conn_id, "proposal dropped; closing the connection");
            self.conns.lock().close(conn_id);
        }
    }

    fn state_replaced(&mut self, index: u64) {
        let closed = self.conns.close_all();
        if closed > 0 {
            warn!(
                index,
                closed,
                "installed a snapshot from the leader; closed every client connection so that \
                 clients re-register their watches against the new state"
            );
        }
    }

    fn leader_changed(&mut self, leader_id: u64, term: u64) {
        let closed = self.conns.lock().close_in_doubt();
        if closed > 0 {
            warn!(
                leader_id,
                term, closed, "leader changed; closed the connections with requests in doubt"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rookery_protocol::{EventType, KeeperState};
    use tokio::sync::mpsc;

    fn handle(cap: usize, session_id: i64) -> (ConnHandle, mpsc::UnboundedReceiver<Outbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = ConnHandle {
            tx,
            budget: Arc::new(OutputBudget::new(cap, CancellationToken::new())),
            session_id,
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            auth: vec![],
            outstanding: Arc::default(),
            counters: Arc::default(),
            in_doubt: Arc::default(),
            awaiting_log: Arc::default(),
            read_only: false,
        };
        (handle, rx)
    }

    #[test]
    fn budget_charges_releases_and_closes_past_the_cap() {
        let budget = OutputBudget::new(100, CancellationToken::new());
        assert!(budget.charge(60));
        assert!(budget.charge(40));
        assert_eq!(budget.queued(), 100);
        assert!(!budget.is_closed());
        // One byte over: refused, undone, and the connection is told to close.
        assert!(!budget.charge(1));
        assert_eq!(budget.queued(), 100);
        assert!(budget.is_closed());
        assert!(budget.overflowed());
        // Once closed, nothing more is accepted even after space is released.
        budget.release(100);
        assert_eq!(budget.queued(), 0);
        assert!(!budget.charge(1));
        // Over-release saturates at zero.
        budget.release(5);
        assert_eq!(budget.queued(), 0);
    }

    #[test]
    fn send_charges_the_frame_and_drops_past_the_cap() {
        let (conn, mut rx) = handle(64, 7);
        let frame = reply_frame(1, 5, &Ok(Response::Empty));
        let len = frame.len();
        conn.send(Outbound::Reply { xid: 1, frame });
        assert_eq!(conn.budget.queued(), len);
        assert!(matches!(rx.try_recv(), Ok(Outbound::Reply { xid: 1, .. })));
        // A frame bigger than what is left closes the connection and is not queued.
        let big = Bytes::from(vec![0u8; 64]);
        conn.send(Outbound::Event {
            zxid: 1,
            frame: big,
        });
        assert!(conn.budget.is_closed());
        assert!(rx.try_recv().is_err());
        assert_eq!(conn.budget.queued(), len);
    }

    #[test]
    fn send_to_a_gone_receiver_releases_its_charge() {
        let (conn, rx) = handle(1000, 7);
        drop(rx);
        conn.send(Outbound::Reply {
            xid: 1,
            frame: reply_frame(1, 5, &Ok(Response::Empty)),
        });
        assert_eq!(conn.budget.queued(), 0);
    }

    #[test]
    fn sink_shares_one_event_frame_and_routes_only_own_origins() {
        let conns = Arc::new(ConnRegistry::default());
        let (a, mut rx_a) = handle(1 << 20, 10);
        let (b, mut rx_b) = handle(1 << 20, 11);
        {
            let mut tables = conns.lock();
            tables.by_id.insert(1, a.clone());
            tables.by_id.insert(2, b.clone());
            tables.by_session.insert(10, 1);
            tables.by_session.insert(11, 2);
        }
        let mut sink = ServerSink::new(5, Arc::clone(&conns));
        let event = WatcherEvent {
            event_type: EventType::NodeDataChanged.wire(),
            state: KeeperState::SyncConnected.wire(),
            path: "/a".into(),
        };
        sink.watches_fired(
            9,
            None,
            Fired {
                event,
                watchers: vec![1, 2, 3],
            },
        );
        let (Ok(Outbound::Event { frame: fa, .. }), Ok(Outbound::Event { frame: fb, .. })) =
            (rx_a.try_recv(), rx_b.try_recv())
        else {
            panic!("both watchers get the event");
        };
        // The same allocation: serialized once.
        assert_eq!(fa.as_ptr(), fb.as_ptr());
        // Another server's entry is not answered here; ours is.
        let theirs = Origin {
            server_id: 6,
            conn_id: 1,
            xid: 3,
        };
        sink.write_applied(theirs, 9, &Ok(Response::Empty));
        assert!(rx_a.try_recv().is_err());
        let mine = Origin {
            server_id: 5,
            ..theirs
        };
        sink.write_applied(mine, 9, &Ok(Response::Empty));
        assert!(matches!(
            rx_a.try_recv(),
            Ok(Outbound::Reply { xid: 3, .. })
        ));
        // A session closed by expiry (origin conn 0) closes its connection at once; a session
        // closed through its own connection does not.
        sink.session_closed(
            11,
            Origin {
                server_id: 5,
                conn_id: 2,
                xid: 1,
            },
        );
        assert!(!b.budget.is_closed());
        sink.session_closed(
            11,
            Origin {
                server_id: 5,
                conn_id: 0,
                xid: 0,
            },
        );
        assert!(b.budget.is_closed());
        assert!(!a.budget.is_closed());
    }

    #[test]
    fn a_leader_change_closes_only_connections_with_requests_in_doubt() {
        let conns = Arc::new(ConnRegistry::default());
        let (busy, _rx_busy) = handle(1 << 20, 10);
        let (idle, _rx_idle) = handle(1 << 20, 11);
        busy.in_doubt.store(1, Ordering::Release);
        {
            let mut tables = conns.lock();
            tables.by_id.insert(1, busy.clone());
            tables.by_id.insert(2, idle.clone());
        }
        let mut sink = ServerSink::new(5, Arc::clone(&conns));
        sink.leader_changed(2, 7);
        assert!(busy.budget.is_closed(), "a write in flight: closed");
        assert!(!idle.budget.is_closed(), "nothing in flight: kept");
        assert!(!busy.budget.overflowed());
        assert_eq!(conns.close_all(), 1);
        assert!(idle.budget.is_closed());
    }

    #[test]
    fn a_reconfig_alone_does_not_close_its_connection_at_a_leader_change() {
        let conns = Arc::new(ConnRegistry::default());
        let (waiting, _rx_waiting) = handle(1 << 20, 10);
        let (also_writing, _rx_also) = handle(1 << 20, 11);
        conns.lock().by_id.insert(1, waiting.clone());
        conns.lock().by_id.insert(2, also_writing.clone());
        let mut sink = ServerSink::new(5, Arc::clone(&conns));
        // Both have a reconfig in flight (the connection counts it in `awaiting_log`); the
        // second also has a write in flight.
        waiting.in_doubt.store(1, Ordering::Release);
        waiting.awaiting_log.store(1, Ordering::Release);
        also_writing.in_doubt.store(2, Ordering::Release);
        also_writing.awaiting_log.store(1, Ordering::Release);
        sink.leader_changed(3, 8);
        assert!(
            !waiting.budget.is_closed(),
            "its answer comes from the log: kept"
        );
        assert!(
            also_writing.budget.is_closed(),
            "a write in doubt as well: closed"
        );
        // Answered: a new write in doubt closes it again.
        waiting.awaiting_log.store(0, Ordering::Release);
        sink.leader_changed(1, 9);
        assert!(waiting.budget.is_closed());
    }

    #[test]
    fn read_only_mode_closes_rw_on_entry_and_ro_on_exit() {
        let conns = Arc::new(ConnRegistry::default());
        let (rw, _rx_rw) = handle(1 << 20, 10);
        let (mut ro, _rx_ro) = handle(1 << 20, 11);
        ro.read_only = true;
        conns.lock().by_id.insert(1, rw.clone());
        assert_eq!(conns.leave_read_only(), None, "not read-only yet");
        let now = Instant::now();
        assert_eq!(conns.read_only_tick(now), (true, 1));
        assert!(rw.budget.is_closed());
        conns.lock().by_id.insert(2, ro.clone());
        assert_eq!(
            conns.read_only_tick(now),
            (false, 0),
            "read-only connections stay"
        );
        assert!(conns.is_read_only());
        assert_eq!(conns.leave_read_only(), Some(1));
        assert!(ro.budget.is_closed());
        assert!(!conns.is_read_only());
    }

    #[test]
    fn local_sessions_are_in_their_own_id_space_and_time_out_when_detached() {
        let mut mode = ReadOnlyMode::default();
        let a = mode.create_session(3, 1_700_000_000_000, 1000, vec![1; 16]);
        let b = mode.create_session(3, 1_700_000_000_000, 1000, vec![2; 16]);
        assert_ne!(a, b);
        assert!(a & LOCAL_SESSION_BIT != 0 && b & LOCAL_SESSION_BIT != 0);
        let mut table = crate::session::SessionTable::default();
        let global = table.create(
            127,
            1_700_000_000_000,
            crate::session::SessionInfo {
                timeout_ms: 1000,
                passwd: vec![0; 16],
                owner: None,
            },
        );
        assert_eq!(
            global & LOCAL_SESSION_BIT,
            0,
            "global ids never have the bit"
        );
        let now = Instant::now();
        assert!(!mode.resume_session(a, &[9; 16], now), "wrong password");
        assert!(mode.resume_session(a, &[1; 16], now));
        mode.detach_session(a, now);
        assert!(mode.resume_session(a, &[1; 16], now + Duration::from_millis(500)));
        mode.detach_session(a, now);
        assert_eq!(mode.prune(now + Duration::from_millis(1500)), 1);
        assert!(!mode.resume_session(a, &[1; 16], now + Duration::from_millis(1500)));
        assert_eq!(mode.session_count(), 1);
    }
}
