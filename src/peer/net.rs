//! The TCP peer network: one dialer task per peer (our outbound half), one accept loop (the
//! peers' outbound halves), and the [`PeerTransport`] the raft thread sends through.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::{Mutex, RwLock};
use protobuf::Message as _;
use raft::eraftpb::MessageType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::frame::{
    self, decode_frame, encode_frame, FrameCaps, FrameError, FrameKind, Hello, HelloReply,
    RawFrame, SessionTouch, SnapHeader,
};
use super::PeerError;
use crate::config::Config;
use crate::raft::{Message, RaftHandle, SnapshotStatus, Transport};
use crate::storage::{SnapshotDir, SnapshotReceiver, SnapshotRef};

/// Bounds and timings of the peer network. The defaults suit production; tests shrink them.
#[derive(Debug, Clone)]
pub struct PeerLimits {
    /// Largest frame (kind + payload) sent or accepted, snapshots aside. Default ≈ 2 ×
    /// jute.maxbuffer + 64 KiB: one Raft message carries up to 1 MiB of entries (raft
    /// `max_size_per_msg`), plus one oversized entry.
    pub max_frame: usize,
    /// Largest [`FrameKind::RaftSnapshot`] frame. A server streams snapshot files in
    /// [`FrameKind::SnapChunk`]s of at most [`SNAPSHOT_CHUNK`] (within `max_frame`) on a
    /// connection of their own ([`PeerNetwork::serve_snapshots`]); its MsgSnapshot carries only
    /// a descriptor. Only a network without a snapshot directory (tests) sends whole images in
    /// one frame, and those are bounded by this.
    pub max_snapshot_frame: usize,
    /// Snapshot files streamed to followers at once (each on its own connection and task).
    pub snapshot_senders: usize,
    /// How long a snapshot stream may wait for the follower's verdict after the last chunk
    /// (it fsyncs and re-reads the file first), and for each frame while receiving.
    pub snapshot_timeout: Duration,
    /// Messages queued per peer before new ones are dropped (and Raft told the peer is
    /// unreachable). Bounded so a dead or slow peer cannot grow memory without limit.
    pub queue_messages: usize,
    /// Bytes queued per peer, likewise: 256 in-flight appends × 1 MiB would otherwise pile up.
    /// A single message larger than this is still accepted into an empty queue.
    pub queue_bytes: usize,
    /// First reconnect delay; doubles per failed attempt up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Connect + handshake deadline, on both sides.
    pub handshake_timeout: Duration,
    /// A write that takes longer than this means a stalled peer: the connection is dropped.
    pub write_timeout: Duration,
    /// Inbound connections served at once; more are closed at accept (a peer has one
    /// connection, two while it reconnects).
    pub max_inbound: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            max_frame: 2 * rookery_protocol::DEFAULT_MAX_FRAME + 64 * 1024,
            max_snapshot_frame: 4 * rookery_protocol::DEFAULT_MAX_FRAME,
            snapshot_senders: 2,
            snapshot_timeout: Duration::from_secs(60),
            queue_messages: 4096,
            queue_bytes: 64 << 20,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            max_inbound: 64,
        }
    }
}

/// Who we are and whom we talk to.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// This server's id: the handshake's `from` when dialing, its required `to` when accepting.
    pub my_id: u64,
    /// [`crate::config::cluster_id`]: peers of another ensemble are refused.
    pub cluster_id: u64,
    /// Every other member and its peer address (`host:port`). A dialer runs for each; only
    /// these ids may connect to us. An entry for `my_id` is ignored.
    pub peers: BTreeMap<u64, String>,
    /// Bounds and timings.
    pub limits: PeerLimits,
    /// `sslQuorum`: every peer connection (Raft traffic and snapshot streams, both ways)
    /// runs over TLS with mutual certificate checks. None: plain TCP.
    pub tls: Option<Arc<crate::server::tls::PeerTls>>,
}

/// A peer connection's read half: plain TCP or TLS.
type PeerRead = Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>;
/// A peer connection's write half: plain TCP or TLS.
type PeerWrite = Box<dyn tokio::io::AsyncWrite + Send + Sync + Unpin>;

/// Splits a peer socket: a plain one lock-free (`into_split`), a TLS one with `io::split`.
fn split_plain(stream: TcpStream) -> (PeerRead, PeerWrite) {
    let (rd, wr) = stream.into_split();
    (Box::new(rd), Box::new(wr))
}

/// Opens a connection to `addr`: TCP (no Nagle), then the TLS handshake under `sslQuorum`.
async fn open_peer_stream(inner: &Inner, addr: &str) -> Result<(PeerRead, PeerWrite), PeerError> {
    let stream = TcpStream::connect(addr).await.map_err(PeerError::Io)?;
    stream.set_nodelay(true).map_err(PeerError::Io)?;
    match &inner.tls {
        None => Ok(split_plain(stream)),
        Some(tls) => {
            let stream = tls
                .connect(addr, stream, inner.limits.handshake_timeout)
                .await
                .map_err(PeerError::Tls)?;
            let (rd, wr) = tokio::io::split(stream);
            Ok((Box::new(rd), Box::new(wr)))
        }
    }
}

impl PeerConfig {
    /// The peer network of `config`'s ensemble: every other listed server (observers too: as
    /// Raft learners they receive appends) at its peer address, the cluster id of the server
    /// list, and a frame cap of 2 × jute.maxbuffer + 64 KiB. `None` when no servers are listed.
    pub fn from_config(config: &Config) -> Option<PeerConfig> {
        if config.servers.is_empty() {
            return None;
        }
        let peers = config
            .servers
            .iter()
            .filter(|s| s.id != config.server_id)
            .map(|s| (s.id, s.peer_address()))
            .collect();
        Some(PeerConfig {
            my_id: config.server_id,
            cluster_id: config.cluster_id(),
            peers,
            limits: PeerLimits {
                max_frame: config.jute_maxbuffer.saturating_mul(2) + 64 * 1024,
                max_snapshot_frame: config.jute_maxbuffer.saturating_mul(4),
                ..PeerLimits::default()
            },
            tls: None,
        })
    }

    /// Where this server accepts peers: its own line's `host:peerPort` (bind it, then pass
    /// the listener to [`PeerNetwork::start`]). `None` when this server is not listed.
    pub fn listen_address(config: &Config) -> Option<String> {
        config.me().map(|s| s.peer_address())
    }
}

/// Where inbound traffic goes. Called on tokio tasks, so it must not block.
pub trait Inbound: Send + Sync + 'static {
    /// Raft messages from peer `from`, in the order it sent them (all addressed to us).
    fn raft(&self, from: u64, msgs: Vec<Message>);
    /// Session touches from peer `from` (a follower telling the leader its sessions live).
    fn touch(&self, from: u64, touches: Vec<SessionTouch>);
    /// Peer `from` closed the connection it sends to us on (EOF or reset), which its kernel
    /// does at once when the process dies. Not called for a connection it replaced.
    fn closed(&self, _from: u64) {}
}

/// Where transport feedback goes: Raft must hear about undeliverable messages, or it keeps
/// pipelining to a dead peer (unreachable) or pauses it forever (a snapshot never reported).
pub trait Feedback: Send + Sync + 'static {
    /// A message to `peer` was dropped, or its connection died.
    fn unreachable(&self, peer: u64);
    /// A MsgSnapshot to `peer` was written (`Finish`) or dropped (`Failure`).
    fn snapshot(&self, peer: u64, status: SnapshotStatus);
}

impl Feedback for RaftHandle {
    fn unreachable(&self, peer: u64) {
        // Err only once the raft thread is gone, when nobody needs the feedback.
        let _ = self.report_unreachable(peer);
    }

    fn snapshot(&self, peer: u64, status: SnapshotStatus) {
        let _ = self.report_snapshot(peer, status);
    }
}

/// The [`Inbound`] a server uses: Raft messages are stepped into the raft thread, touches go
/// to a callback (the leader's session tracker). Messages arriving before [`attach`] are
/// dropped; Raft resends what matters.
///
/// [`attach`]: RaftInbound::attach
pub struct RaftInbound {
    /// The local raft thread, set once it started.
    handle: OnceLock<RaftHandle>,
    /// Receives touches.
    on_touch: Box<dyn Fn(u64, Vec<SessionTouch>) + Send + Sync>,
}

impl RaftInbound {
    /// An inbound that hands touches to `on_touch`.
    pub fn new(on_touch: impl Fn(u64, Vec<SessionTouch>) + Send + Sync + 'static) -> Self {
        RaftInbound {
            handle: OnceLock::new(),
            on_touch: Box::new(on_touch),
        }
    }

    /// Starts stepping Raft messages into `handle`. Later calls are ignored.
    pub fn attach(&self, handle: RaftHandle) {
        let _ = self.handle.set(handle);
    }
}

impl Inbound for RaftInbound {
    fn raft(&self, from: u64, msgs: Vec<Message>) {
        let Some(h) = self.handle.get() else {
            tracing::trace!(
                peer = from,
                count = msgs.len(),
                "raft not started; dropping"
            );
            return;
        };
        for m in msgs {
            if h.step(m).is_err() {
                return;
            }
        }
    }

    fn touch(&self, from: u64, touches: Vec<SessionTouch>) {
        (self.on_touch)(from, touches);
    }

    fn closed(&self, from: u64) {
        if let Some(h) = self.handle.get() {
            // Err only once the raft thread is gone, when nobody needs the news.
            let _ = h.peer_connection_closed(from);
        }
    }
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerStats {
    /// Outbound connections established (handshake accepted).
    pub connects: u64,
    /// Messages dropped because the peer's queue was full.
    pub dropped_full: u64,
    /// Messages dropped because there was no connection to the peer.
    pub dropped_disconnected: u64,
    /// Messages dropped because their connection died (queued or in the failed write).
    pub dropped_dead: u64,
    /// Messages dropped because they could not be encoded within the frame cap.
    pub dropped_oversized: u64,
    /// Messages written to a socket.
    pub sent: u64,
    /// Socket writes (each carries everything that was queued: batching).
    pub writes: u64,
    /// Inbound handshakes refused.
    pub refused: u64,
    /// Snapshot files streamed to a follower that accepted them.
    pub snapshots_sent: u64,
    /// Snapshot streams that failed (either side; Raft was told `Failure`).
    pub snapshot_send_failures: u64,
    /// Snapshot files received, verified and handed to Raft.
    pub snapshots_received: u64,
    /// Snapshot streams refused or broken on the receiving side.
    pub snapshot_receive_failures: u64,
}

/// Atomic form of [`PeerStats`].
#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    dropped_full: AtomicU64,
    dropped_disconnected: AtomicU64,
    dropped_dead: AtomicU64,
    dropped_oversized: AtomicU64,
    sent: AtomicU64,
    writes: AtomicU64,
    refused: AtomicU64,
    snapshots_sent: AtomicU64,
    snapshot_send_failures: AtomicU64,
    snapshots_received: AtomicU64,
    snapshot_receive_failures: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Something queued for a peer.
enum Outgoing {
    /// A Raft message and its encoded size.
    Raft(Message, usize),
    /// A batch of session touches.
    Touch(Vec<SessionTouch>),
}

impl Outgoing {
    fn size(&self) -> usize {
        match self {
            Outgoing::Raft(_, size) => *size,
            Outgoing::Touch(t) => 4 + 12 * t.len(),
        }
    }

    fn is_snapshot(&self) -> bool {
        matches!(self, Outgoing::Raft(m, _) if m.get_msg_type() == MessageType::MsgSnapshot)
    }
}

/// Why an item was not queued.
enum Refusal {
    /// No live connection: queuing would deliver it on a later one (a replay).
    Disconnected,
    /// The bounded queue is full.
    Full,
}

/// The queue state, under one lock so "connected" and "queued" change together: an item
/// queued while connection N is live is written on connection N or dropped, never on N+1.
#[derive(Default)]
struct QueueState {
    /// A handshaken connection exists and its writer drains this queue.
    connected: bool,
    /// Items in send order.
    items: VecDeque<Outgoing>,
    /// Sum of `items` sizes.
    bytes: usize,
}

/// One peer's outbound side.
struct PeerQueue {
    /// The peer's server id.
    id: u64,
    /// Where to dial it.
    addr: String,
    /// Queue and connection flag.
    state: Mutex<QueueState>,
    /// Wakes the writer when something was queued.
    wake: Notify,
    /// Stops this peer's dialer: the network's shutdown, or the peer left the address book.
    stop: CancellationToken,
}

impl PeerQueue {
    /// The queue of peer `id` at `addr`, stopped with `parent`.
    fn new(id: u64, addr: &str, parent: &CancellationToken) -> Arc<PeerQueue> {
        Arc::new(PeerQueue {
            id,
            addr: addr.to_string(),
            state: Mutex::new(QueueState::default()),
            wake: Notify::new(),
            stop: parent.child_token(),
        })
    }

    /// Never blocks beyond a short lock: called on the raft thread.
    fn push(&self, item: Outgoing, limits: &PeerLimits) -> Result<(), Refusal> {
        let size = item.size();
        {
            let mut st = self.state.lock();
            if !st.connected {
                return Err(Refusal::Disconnected);
            }
            let over_bytes = st.bytes.saturating_add(size) > limits.queue_bytes;
            if st.items.len() >= limits.queue_messages || (over_bytes && !st.items.is_empty()) {
                return Err(Refusal::Full);
            }
            st.items.push_back(item);
            st.bytes += size;
        }
        self.wake.notify_one();
        Ok(())
    }

    fn take_all(&self) -> VecDeque<Outgoing> {
        let mut st = self.state.lock();
        st.bytes = 0;
        std::mem::take(&mut st.items)
    }

    fn set_connected(&self) {
        self.state.lock().connected = true;
    }

    /// Marks the connection gone and returns what was queued for it (to be dropped).
    fn disconnect(&self) -> VecDeque<Outgoing> {
        let mut st = self.state.lock();
        st.connected = false;
        st.bytes = 0;
        std::mem::take(&mut st.items)
    }
}

/// State shared by the network's tasks and its transports.
struct Inner {
    /// `sslQuorum`'s certificates; None: plain TCP.
    tls: Option<Arc<crate::server::tls::PeerTls>>,
    /// This server's id.
    my_id: u64,
    /// Our cluster id, for handshakes.
    cluster_id: u64,
    /// Bounds and timings.
    limits: PeerLimits,
    /// Outbound queues by peer id: zoo.cfg's at start, then kept in step with the replicated
    /// `/zookeeper/config` ([`PeerNetwork::set_peers`]).
    peers: RwLock<HashMap<u64, Arc<PeerQueue>>>,
    /// Raft feedback, set by [`PeerNetwork::attach`].
    feedback: OnceLock<Arc<dyn Feedback>>,
    /// Inbound delivery.
    inbound: Arc<dyn Inbound>,
    /// Stops every task.
    cancel: CancellationToken,
    /// Counters.
    counters: Counters,
    /// Where snapshot files are read from (sending) and received into; unset, snapshots
    /// travel as one [`FrameKind::RaftSnapshot`] frame.
    snapshots: OnceLock<SnapshotDir>,
    /// Runs the snapshot streams (spawned from the raft thread, which is not a tokio thread).
    runtime: tokio::runtime::Handle,
    /// Peers a snapshot is being streamed to: one stream per peer at a time.
    sending: Mutex<HashSet<u64>>,
    /// Peers a snapshot is being received from: one stream per peer at a time.
    receiving: Mutex<HashSet<u64>>,
    /// Bounds the snapshot streams running at once ([`PeerLimits::snapshot_senders`]).
    send_slots: Semaphore,
    /// Consecutive failed snapshot streams per peer: the Failure report is delayed by a
    /// backoff, so a follower that keeps refusing (full disk, a damaged file) is not sent the
    /// whole file again on every heartbeat.
    stream_failures: Mutex<HashMap<u64, u32>>,
}

impl Inner {
    fn caps(&self) -> FrameCaps {
        FrameCaps {
            max_frame: self.limits.max_frame,
            max_snapshot_frame: self.limits.max_snapshot_frame,
        }
    }

    fn unreachable(&self, peer: u64) {
        if let Some(f) = self.feedback.get() {
            f.unreachable(peer);
        }
    }

    fn snapshot(&self, peer: u64, status: SnapshotStatus) {
        if let Some(f) = self.feedback.get() {
            f.snapshot(peer, status);
        }
    }

    /// Drops items that will never be written: Raft hears the peer is unreachable, and each
    /// dropped MsgSnapshot is reported failed (else raft-rs pauses the peer forever).
    fn dropped(&self, peer: u64, items: impl IntoIterator<Item = Outgoing>) -> u64 {
        let mut n = 0;
        for item in items {
            n += 1;
            if item.is_snapshot() {
                self.snapshot(peer, SnapshotStatus::Failure);
            }
        }
        n
    }

    fn peer(&self, id: u64) -> Option<Arc<PeerQueue>> {
        self.peers.read().get(&id).cloned()
    }

    fn enqueue(&self, to: u64, item: Outgoing) -> Result<(), PeerError> {
        let Some(peer) = self.peer(to) else {
            if item.is_snapshot() {
                self.snapshot(to, SnapshotStatus::Failure);
            }
            return Err(PeerError::UnknownPeer(to));
        };
        let snapshot = item.is_snapshot();
        match peer.push(item, &self.limits) {
            Ok(()) => Ok(()),
            Err(why) => {
                if snapshot {
                    self.snapshot(to, SnapshotStatus::Failure);
                }
                Err(match why {
                    Refusal::Disconnected => {
                        bump(&self.counters.dropped_disconnected, 1);
                        PeerError::NotConnected(to)
                    }
                    Refusal::Full => {
                        bump(&self.counters.dropped_full, 1);
                        PeerError::QueueFull(to)
                    }
                })
            }
        }
    }
}

/// The raft thread's side of the network: [`Transport::send`] only queues (a short lock, no
/// I/O), so it never blocks Raft. Cheap to clone.
#[derive(Clone)]
pub struct PeerTransport {
    /// The network.
    inner: Arc<Inner>,
}

impl Transport for PeerTransport {
    fn streams_snapshots(&self) -> bool {
        PeerTransport::streams_snapshots(self)
    }

    fn send(&self, msgs: Vec<Message>) {
        let mut unreachable: Vec<u64> = Vec::new();
        for msg in msgs {
            let to = msg.to;
            // A MsgSnapshot carrying a descriptor goes on a stream of its own.
            let Some(msg) = start_snapshot_stream(&self.inner, msg) else {
                continue;
            };
            let size = msg.compute_size() as usize;
            if let Err(error) = self.inner.enqueue(to, Outgoing::Raft(msg, size)) {
                tracing::trace!(peer = to, %error, "raft message dropped");
                if !unreachable.contains(&to) {
                    unreachable.push(to);
                }
            }
        }
        for peer in unreachable {
            self.inner.unreachable(peer);
        }
    }
}

/// A running peer network: dialers for every peer plus the accept loop on our peer port.
///
/// Connections are one-way: we dial B to send to B, and B dials us to send to us, so two
/// servers never race to set up "the" connection between them. A message is written at most
/// once: whatever was queued for a connection that died is dropped (Raft retransmits what it
/// still needs), never replayed on the next one, since a replayed MsgPropose would commit a
/// client's write twice.
pub struct PeerNetwork {
    /// Shared state.
    inner: Arc<Inner>,
    /// Dialers and the accept loop.
    tasks: JoinSet<()>,
    /// The bound peer port (useful when it was 0).
    local_addr: SocketAddr,
}

impl PeerNetwork {
    /// Starts dialing every peer and serving `listener` (our bound peer port). Must be called
    /// inside a tokio runtime; the tasks run on it.
    pub fn start(
        config: PeerConfig,
        listener: TcpListener,
        inbound: Arc<dyn Inbound>,
    ) -> Result<PeerNetwork, PeerError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| PeerError::NoRuntime)?;
        let local_addr = listener.local_addr().map_err(PeerError::Io)?;
        let cancel = CancellationToken::new();
        let peers = config
            .peers
            .iter()
            .filter(|(id, _)| **id != config.my_id)
            .map(|(id, addr)| (*id, PeerQueue::new(*id, addr, &cancel)))
            .collect::<HashMap<_, _>>();
        let senders = config.limits.snapshot_senders.max(1);
        let inner = Arc::new(Inner {
            snapshots: OnceLock::new(),
            runtime: runtime.clone(),
            sending: Mutex::new(HashSet::new()),
            receiving: Mutex::new(HashSet::new()),
            send_slots: Semaphore::new(senders),
            stream_failures: Mutex::new(HashMap::new()),
            my_id: config.my_id,
            cluster_id: config.cluster_id,
            limits: config.limits,
            peers: RwLock::new(peers),
            feedback: OnceLock::new(),
            inbound,
            cancel,
            counters: Counters::default(),
            tls: config.tls,
        });
        let mut tasks = JoinSet::new();
        for peer in inner.peers.read().values() {
            tasks.spawn_on(dial_loop(inner.clone(), peer.clone()), &runtime);
        }
        tasks.spawn_on(accept_loop(inner.clone(), listener), &runtime);
        tracing::info!(
            my_id = inner.my_id,
            cluster_id = format_args!("{:016x}", inner.cluster_id),
            %local_addr,
            peers = ?config.peers,
            "peer network started"
        );
        Ok(PeerNetwork {
            inner,
            tasks,
            local_addr,
        })
    }

    /// The [`Transport`] for [`RaftHandle::start_with_transport`].
    pub fn transport(&self) -> PeerTransport {
        PeerTransport {
            inner: self.inner.clone(),
        }
    }

    /// Sends transport feedback to the raft thread (report_unreachable, report_snapshot).
    /// Call right after the raft thread started; before that, feedback is discarded.
    pub fn attach(&self, handle: RaftHandle) {
        self.attach_feedback(Arc::new(handle));
    }

    /// Like [`PeerNetwork::attach`] with any [`Feedback`] (tests observe it). Later calls are
    /// ignored.
    pub fn attach_feedback(&self, feedback: Arc<dyn Feedback>) {
        let _ = self.inner.feedback.set(feedback);
    }

    /// Streams snapshot files from and into `dir` (the raft thread's `data_dir/snapshots`):
    /// a MsgSnapshot whose data is a `SnapshotRef` is sent as that file, in checksummed chunks
    /// on a connection and task of its own (never delaying the message connection, so
    /// heartbeats keep flowing), and one received is written to `recv-<index>.bin`, fsynced
    /// and verified before its MsgSnapshot is stepped. Call before the raft thread starts
    /// (see [`PeerTransport::streams_snapshots`]). Later calls are ignored.
    pub fn serve_snapshots(&self, dir: SnapshotDir) {
        let _ = self.inner.snapshots.set(dir);
    }

    /// Queues session touches for peer `to` (normally the leader). Dropped, with an error,
    /// when there is no connection or the queue is full: the next touch round makes up for it.
    pub fn send_touch(&self, to: u64, touches: Vec<SessionTouch>) -> Result<(), PeerError> {
        if touches.is_empty() {
            return Ok(());
        }
        self.inner.enqueue(to, Outgoing::Touch(touches))
    }

    /// Whether an outbound connection to `peer` is up (handshake accepted).
    pub fn is_connected(&self, peer: u64) -> bool {
        self.inner
            .peer(peer)
            .is_some_and(|q| q.state.lock().connected)
    }

    /// Replaces the address book (reconfig applied, snapshot installed, start-up replay):
    /// dialers start for new peers and for peers whose address changed, and stop for peers
    /// no longer listed (which may then no longer connect to us). Any thread.
    pub fn set_peers(&self, book: BTreeMap<u64, String>) {
        self.update_peers(book, Some(&[]));
    }

    /// Like [`PeerNetwork::set_peers`], but peers in `keep` stay even when `book` does not
    /// list them (the outgoing half of a joint configuration, learners being added).
    pub fn set_peers_keeping(&self, book: BTreeMap<u64, String>, keep: &[u64]) {
        self.update_peers(book, Some(keep));
    }

    /// Adds or updates the peers of `book`, keeping the others (the joiners of a reconfig
    /// that is not committed yet: the leader must reach them to add them as learners).
    pub fn add_peers(&self, book: BTreeMap<u64, String>) {
        self.update_peers(book, None);
    }

    /// Adds or updates `book`'s peers; with `replace_keeping`, also drops every other peer
    /// not in that list.
    fn update_peers(&self, book: BTreeMap<u64, String>, replace_keeping: Option<&[u64]>) {
        let inner = &self.inner;
        let mut peers = inner.peers.write();
        if let Some(also) = replace_keeping {
            peers.retain(|id, q| {
                let keep = book.contains_key(id) || also.contains(id);
                if !keep {
                    tracing::info!(
                        my_id = inner.my_id,
                        peer = *id,
                        "peer left the address book"
                    );
                    q.stop.cancel();
                }
                keep
            });
        }
        for (id, addr) in book {
            if id == inner.my_id || peers.get(&id).is_some_and(|q| q.addr == addr) {
                continue;
            }
            let q = PeerQueue::new(id, &addr, &inner.cancel);
            if let Some(old) = peers.insert(id, q.clone()) {
                old.stop.cancel();
            }
            tracing::info!(my_id = inner.my_id, peer = id, %addr, "peer added to the address book");
            inner.runtime.spawn(dial_loop(inner.clone(), q));
        }
    }

    /// The address book: peer id → address (tests, `conf`).
    pub fn peers(&self) -> BTreeMap<u64, String> {
        self.inner
            .peers
            .read()
            .iter()
            .map(|(id, q)| (*id, q.addr.clone()))
            .collect()
    }

    /// The address the accept loop listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters since start.
    pub fn stats(&self) -> PeerStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PeerStats {
            connects: get(&c.connects),
            dropped_full: get(&c.dropped_full),
            dropped_disconnected: get(&c.dropped_disconnected),
            dropped_dead: get(&c.dropped_dead),
            dropped_oversized: get(&c.dropped_oversized),
            sent: get(&c.sent),
            writes: get(&c.writes),
            refused: get(&c.refused),
            snapshots_sent: get(&c.snapshots_sent),
            snapshot_send_failures: get(&c.snapshot_send_failures),
            snapshots_received: get(&c.snapshots_received),
            snapshot_receive_failures: get(&c.snapshot_receive_failures),
        }
    }

    /// Stops every task, closes every connection and the listener, and waits for that.
    pub async fn shutdown(mut self) {
        self.inner.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
        tracing::info!(my_id = self.inner.my_id, "peer network stopped");
    }
}

impl Drop for PeerNetwork {
    fn drop(&mut self) {
        // The JoinSet aborts its tasks on drop too; cancelling lets them close cleanly.
        self.inner.cancel.cancel();
    }
}

/// Reads one frame, buffering in `buf` (which may hold the start of the next one).
async fn read_frame<R: AsyncReadExt + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    caps: FrameCaps,
) -> Result<RawFrame, PeerError> {
    loop {
        if let Some(frame) = decode_frame(buf, caps)? {
            return Ok(frame);
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        if rd.read_buf(buf).await.map_err(PeerError::Io)? == 0 {
            return Err(PeerError::Closed);
        }
    }
}

/// Caps during the handshake: nobody gets to make us buffer megabytes before saying who
/// they are.
const HANDSHAKE_CAPS: FrameCaps = FrameCaps {
    max_frame: 4096,
    max_snapshot_frame: 0,
};

fn frame_bytes(kind: FrameKind, payload: &[u8]) -> Result<BytesMut, PeerError> {
    let mut out = BytesMut::new();
    encode_frame(kind, payload, &mut out)?;
    Ok(out)
}

/// Connects to `peer` and runs the handshake.
async fn dial(inner: &Inner, peer: &PeerQueue) -> Result<(PeerRead, PeerWrite), PeerError> {
    let work = async {
        let (mut rd, mut wr) = open_peer_stream(inner, &peer.addr).await?;
        let hello = Hello {
            version: frame::VERSION,
            cluster_id: inner.cluster_id,
            from: inner.my_id,
            to: peer.id,
        };
        wr.write_all(&frame_bytes(FrameKind::Hello, &hello.encode())?)
            .await
            .map_err(PeerError::Io)?;
        let mut buf = BytesMut::new();
        let reply = read_frame(&mut rd, &mut buf, HANDSHAKE_CAPS).await?;
        if reply.kind != FrameKind::HelloReply {
            return Err(PeerError::Unexpected(reply.kind));
        }
        match HelloReply::decode(&reply.payload)? {
            HelloReply::Accepted => Ok((rd, wr)),
            HelloReply::Refused(reason) => Err(PeerError::Refused(reason)),
        }
    };
    tokio::time::timeout(inner.limits.handshake_timeout, work)
        .await
        .map_err(|_| PeerError::HandshakeTimeout)?
}

/// A delay in `[d/2, d]`: reconnecting peers spread out instead of retrying in lockstep.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    let extra = rand::random_range(0..=half.as_micros().max(1) as u64);
    half + Duration::from_micros(extra)
}

/// Keeps one outbound connection to `peer` alive, reconnecting with backoff.
async fn dial_loop(inner: Arc<Inner>, peer: Arc<PeerQueue>) {
    let limits = inner.limits.clone();
    let mut backoff = limits.backoff_min;
    let mut last_error = String::new();
    loop {
        let attempt = tokio::select! {
            _ = peer.stop.cancelled() => return,
            r = dial(&inner, &peer) => r,
        };
        match attempt {
            Ok(stream) => {
                backoff = limits.backoff_min;
                last_error.clear();
                peer.set_connected();
                bump(&inner.counters.connects, 1);
                tracing::info!(my_id = inner.my_id, peer = peer.id, addr = %peer.addr, "connected to peer");
                let error = tokio::select! {
                    _ = peer.stop.cancelled() => {
                        peer.disconnect();
                        return;
                    }
                    e = run_connection(&inner, &peer, stream) => e,
                };
                let dropped = inner.dropped(peer.id, peer.disconnect());
                bump(&inner.counters.dropped_dead, dropped);
                inner.unreachable(peer.id);
                tracing::warn!(my_id = inner.my_id, peer = peer.id, %error, dropped, "peer connection lost; its queued messages are dropped");
            }
            Err(error) => {
                // A refusal is a misconfiguration the operator must see; a peer that is simply
                // down is logged once per outage, not every backoff round.
                let text = error.to_string();
                if text != last_error {
                    if matches!(error, PeerError::Refused(_)) {
                        tracing::error!(my_id = inner.my_id, peer = peer.id, addr = %peer.addr, %error, "peer refused our handshake");
                    } else {
                        tracing::warn!(my_id = inner.my_id, peer = peer.id, addr = %peer.addr, %error, "cannot connect to peer; retrying");
                    }
                    last_error = text;
                } else {
                    tracing::debug!(my_id = inner.my_id, peer = peer.id, %error, "still cannot connect to peer");
                }
            }
        }
        tokio::select! {
            _ = peer.stop.cancelled() => return,
            _ = tokio::time::sleep(jitter(backoff)) => {}
        }
        backoff = (backoff * 2).min(limits.backoff_max);
    }
}

/// Drains the queue into the connection until it fails; returns why. Everything queued at one
/// moment goes out in one write.
async fn run_connection(
    inner: &Inner,
    peer: &PeerQueue,
    (mut rd, mut wr): (PeerRead, PeerWrite),
) -> PeerError {
    let mut out = BytesMut::new();
    let mut probe = [0u8; 16];
    loop {
        let items = peer.take_all();
        if items.is_empty() {
            tokio::select! {
                _ = peer.wake.notified() => continue,
                // The acceptor never writes after its reply: any read result means the
                // connection is finished (EOF when the peer closed it).
                r = rd.read(&mut probe) => return match r {
                    Ok(0) => PeerError::Closed,
                    Ok(_) => PeerError::Unexpected(FrameKind::HelloReply),
                    Err(e) => PeerError::Io(e),
                },
            }
        }
        out.clear();
        let encoded = encode_items(inner, peer.id, items, &mut out);
        let result = tokio::time::timeout(inner.limits.write_timeout, wr.write_all(&out)).await;
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(PeerError::Io(e)),
            Err(_) => Some(PeerError::WriteTimeout),
        };
        if let Some(error) = failure {
            // Possibly partly delivered; either way never re-sent.
            bump(&inner.counters.dropped_dead, encoded.messages);
            for _ in 0..encoded.snapshots {
                inner.snapshot(peer.id, SnapshotStatus::Failure);
            }
            return error;
        }
        bump(&inner.counters.sent, encoded.messages);
        bump(&inner.counters.writes, 1);
        for _ in 0..encoded.snapshots {
            inner.snapshot(peer.id, SnapshotStatus::Finish);
        }
    }
}

/// What one write carries.
struct Encoded {
    /// Items encoded into frames.
    messages: u64,
    /// MsgSnapshots among them.
    snapshots: u64,
}

/// Encodes items in order: Raft messages into RaftBatch frames of at most `max_frame`, a
/// MsgSnapshot into a frame of its own, touches into Touch frames. An item that cannot be
/// encoded within its cap is dropped (and reported).
fn encode_items(
    inner: &Inner,
    peer: u64,
    items: VecDeque<Outgoing>,
    out: &mut BytesMut,
) -> Encoded {
    // Room for the count, the frame header and the crc.
    let budget = inner.limits.max_frame.saturating_sub(16);
    let mut enc = Encoded {
        messages: 0,
        snapshots: 0,
    };
    let mut batch: Vec<Message> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut oversized = 0u64;
    let flush = |batch: &mut Vec<Message>, out: &mut BytesMut, enc: &mut Encoded| {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        match frame::encode_raft_batch(batch)
            .map_err(|e| PeerError::Encode(e.to_string()))
            .and_then(|payload| Ok(encode_frame(FrameKind::RaftBatch, &payload, out)?))
        {
            Ok(()) => enc.messages += n,
            Err(error) => tracing::error!(peer, %error, "cannot encode raft messages; dropped"),
        }
        batch.clear();
    };
    for item in items {
        match item {
            Outgoing::Raft(msg, _) if msg.get_msg_type() == MessageType::MsgSnapshot => {
                flush(&mut batch, out, &mut enc);
                batch_bytes = 0;
                let ok = frame::encode_raft_snapshot(&msg)
                    .map_err(|e| PeerError::Encode(e.to_string()))
                    .and_then(|p| {
                        if p.len() + 1 > inner.limits.max_snapshot_frame {
                            Err(PeerError::Frame(FrameError::Oversized {
                                len: p.len() + 1,
                                max: inner.limits.max_snapshot_frame,
                            }))
                        } else {
                            Ok(encode_frame(FrameKind::RaftSnapshot, &p, out)?)
                        }
                    });
                match ok {
                    Ok(()) => {
                        enc.messages += 1;
                        enc.snapshots += 1;
                    }
                    Err(error) => {
                        tracing::error!(peer, %error, "cannot send snapshot; dropped");
                        oversized += 1;
                        inner.snapshot(peer, SnapshotStatus::Failure);
                    }
                }
            }
            Outgoing::Raft(msg, size) => {
                if size + 4 > budget {
                    tracing::error!(
                        peer,
                        size,
                        max = budget,
                        "raft message exceeds the peer frame cap; dropped"
                    );
                    oversized += 1;
                    continue;
                }
                if batch_bytes + size + 4 > budget {
                    flush(&mut batch, out, &mut enc);
                    batch_bytes = 0;
                }
                batch_bytes += size + 4;
                batch.push(msg);
            }
            Outgoing::Touch(touches) => {
                flush(&mut batch, out, &mut enc);
                batch_bytes = 0;
                let per_frame = (budget / 12).max(1);
                for chunk in touches.chunks(per_frame) {
                    if let Err(error) =
                        encode_frame(FrameKind::Touch, &frame::encode_touch(chunk), out)
                    {
                        tracing::error!(peer, %error, "cannot encode touches; dropped");
                    }
                }
                enc.messages += 1;
            }
        }
    }
    flush(&mut batch, out, &mut enc);
    if oversized > 0 {
        bump(&inner.counters.dropped_oversized, oversized);
        inner.unreachable(peer);
    }
    enc
}

/// The newest inbound connection per peer, so a reconnect closes the connection it replaces
/// (nothing late arrives from the old one once the new one is serving).
#[derive(Default)]
struct Registry {
    /// Peer id → (connection sequence number, its stop token, its remote address).
    newest: Mutex<HashMap<u64, (u64, CancellationToken, SocketAddr)>>,
    /// Source of sequence numbers.
    seq: AtomicU64,
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let registry = Arc::new(Registry::default());
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = inner.cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        while conns.try_join_next().is_some() {}
        match accepted {
            Ok((stream, addr)) => {
                if conns.len() >= inner.limits.max_inbound {
                    tracing::warn!(my_id = inner.my_id, %addr, "too many peer connections; closing a new one");
                    continue;
                }
                let (inner, registry) = (inner.clone(), registry.clone());
                conns.spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let halves = match &inner.tls {
                        None => split_plain(stream),
                        Some(tls) => match tls.accept(stream, inner.limits.handshake_timeout).await {
                            Ok(stream) => {
                                let (rd, wr) = tokio::io::split(stream);
                                (Box::new(rd) as PeerRead, Box::new(wr) as PeerWrite)
                            }
                            Err(error) => {
                                bump(&inner.counters.refused, 1);
                                tracing::warn!(my_id = inner.my_id, %addr, %error, "peer TLS handshake failed (sslQuorum); closing");
                                return;
                            }
                        },
                    };
                    serve_inbound(inner, registry, halves, addr).await
                });
            }
            Err(error) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(my_id = inner.my_id, %error, "peer accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    conns.shutdown().await;
}

/// Checks a handshake: `Err(reason)` to refuse.
fn check_hello(inner: &Inner, hello: &Hello) -> Result<(), String> {
    if hello.version != frame::VERSION {
        return Err(format!(
            "peer protocol version {} is not supported (this server speaks {})",
            hello.version,
            frame::VERSION
        ));
    }
    if hello.cluster_id != inner.cluster_id {
        return Err(format!(
            "cluster id {:016x} is not this cluster's {:016x} (different server lists?)",
            hello.cluster_id, inner.cluster_id
        ));
    }
    if hello.to != inner.my_id {
        return Err(format!(
            "this is server {}, not server {} (peer address book wrong?)",
            inner.my_id, hello.to
        ));
    }
    if hello.from == inner.my_id || !inner.peers.read().contains_key(&hello.from) {
        return Err(format!(
            "server {} is not a member of this ensemble",
            hello.from
        ));
    }
    Ok(())
}

/// Serves one inbound connection: handshake, then frames until it ends.
async fn serve_inbound(
    inner: Arc<Inner>,
    registry: Arc<Registry>,
    (mut rd, mut wr): (PeerRead, PeerWrite),
    addr: SocketAddr,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let first = tokio::time::timeout(
        inner.limits.handshake_timeout,
        read_frame(&mut rd, &mut buf, HANDSHAKE_CAPS),
    )
    .await;
    if let Ok(Ok(f)) = &first {
        if f.kind == FrameKind::SnapHeader {
            let payload = f.payload.clone();
            receive_snapshot(&inner, rd, wr, buf, &payload, addr).await;
            return;
        }
    }
    let hello = match first {
        Ok(Ok(f)) if f.kind == FrameKind::Hello => {
            Hello::decode(&f.payload).map_err(PeerError::from)
        }
        Ok(Ok(f)) => Err(PeerError::Unexpected(f.kind)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(PeerError::HandshakeTimeout),
    };
    let hello = match hello {
        Ok(h) => h,
        Err(error) => {
            bump(&inner.counters.refused, 1);
            tracing::warn!(my_id = inner.my_id, %addr, %error, "bad peer handshake; closing");
            return;
        }
    };
    let from = hello.from;
    if let Err(reason) = check_hello(&inner, &hello) {
        bump(&inner.counters.refused, 1);
        tracing::warn!(my_id = inner.my_id, peer = from, to = hello.to, %addr, %reason, "refused peer connection");
        if let Ok(reply) = frame_bytes(FrameKind::HelloReply, &HelloReply::Refused(reason).encode())
        {
            let _ =
                tokio::time::timeout(inner.limits.handshake_timeout, wr.write_all(&reply)).await;
        }
        let _ = wr.shutdown().await;
        return;
    }
    let accepted = match frame_bytes(FrameKind::HelloReply, &HelloReply::Accepted.encode()) {
        Ok(reply) => {
            tokio::time::timeout(inner.limits.handshake_timeout, wr.write_all(&reply)).await
        }
        Err(_) => return,
    };
    if !matches!(accepted, Ok(Ok(()))) {
        return;
    }
    let seq = registry.seq.fetch_add(1, Ordering::Relaxed);
    let stop = inner.cancel.child_token();
    if let Some((_, old, old_addr)) = registry
        .newest
        .lock()
        .insert(from, (seq, stop.clone(), addr))
    {
        // Normal after a reconnect. If it keeps happening, two servers share one id.
        tracing::info!(my_id = inner.my_id, peer = from, %addr, %old_addr, "peer reconnected; closing its previous connection");
        old.cancel();
    }
    tracing::info!(my_id = inner.my_id, peer = from, %addr, "accepted peer connection");
    let caps = inner.caps();
    let error = loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => break PeerError::Replaced,
            f = read_frame(&mut rd, &mut buf, caps) => f,
        };
        match frame.and_then(|f| deliver(&inner, from, f)) {
            Ok(()) => {}
            Err(e) => break e,
        }
    };
    {
        let mut newest = registry.newest.lock();
        if newest.get(&from).is_some_and(|(s, _, _)| *s == seq) {
            newest.remove(&from);
        }
    }
    match error {
        PeerError::Closed | PeerError::Replaced => {
            tracing::debug!(my_id = inner.my_id, peer = from, %error, "peer connection ended")
        }
        _ => tracing::warn!(my_id = inner.my_id, peer = from, %error, "closing peer connection"),
    }
    // The peer's side went away (not our decision, not a newer connection of its own): it
    // may have died, which the raft thread wants to know before a timeout tells it.
    if matches!(error, PeerError::Closed | PeerError::Io(_)) {
        inner.inbound.closed(from);
    }
}

/// Checks that a message really is from the handshaken peer and for us.
fn check_message(inner: &Inner, from: u64, m: &Message) -> Result<(), PeerError> {
    if m.from != from || m.to != inner.my_id {
        return Err(PeerError::Misaddressed {
            from: m.from,
            to: m.to,
        });
    }
    Ok(())
}

fn deliver(inner: &Inner, from: u64, f: RawFrame) -> Result<(), PeerError> {
    match f.kind {
        FrameKind::RaftBatch => {
            let msgs = frame::decode_raft_batch(&f.payload)?;
            for m in &msgs {
                check_message(inner, from, m)?;
            }
            inner.inbound.raft(from, msgs);
        }
        FrameKind::RaftSnapshot => {
            let m = frame::decode_raft_snapshot(&f.payload)?;
            check_message(inner, from, &m)?;
            inner.inbound.raft(from, vec![m]);
        }
        FrameKind::Touch => inner.inbound.touch(from, frame::decode_touch(&f.payload)?),
        FrameKind::Hello | FrameKind::HelloReply => return Err(PeerError::Unexpected(f.kind)),
        FrameKind::AppRequest
        | FrameKind::AppReply
        | FrameKind::SnapHeader
        | FrameKind::SnapChunk
        | FrameKind::SnapDone => {
            tracing::debug!(peer = from, kind = ?f.kind, "ignoring a reserved frame kind");
        }
    }
    Ok(())
}

impl PeerTransport {
    /// Whether snapshot files are streamed ([`PeerNetwork::serve_snapshots`] was called): the
    /// raft thread then hands out descriptors, not images, in MsgSnapshot.
    pub fn streams_snapshots(&self) -> bool {
        self.inner.snapshots.get().is_some()
    }
}

/// Bytes of file per [`FrameKind::SnapChunk`] (the frame cap permitting).
pub const SNAPSHOT_CHUNK: usize = 1 << 20;

fn snapshot_chunk(limits: &PeerLimits) -> usize {
    SNAPSHOT_CHUNK
        .min(limits.max_frame.saturating_sub(64))
        .max(1)
}

/// Delay before the `n`th consecutive failed snapshot stream to a peer is reported: 50 ms,
/// doubling, at most 5 s.
fn snapshot_retry_backoff(n: u32) -> Duration {
    let base = Duration::from_millis(50);
    base.saturating_mul(1u32 << n.saturating_sub(1).min(7))
        .min(Duration::from_secs(5))
}

/// A refusal reason that fits a handshake-sized frame.
fn short_reason(reason: String) -> String {
    if reason.len() <= 1024 {
        return reason;
    }
    let mut cut = 1024;
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    reason[..cut].to_string()
}

/// If `msg` is a MsgSnapshot carrying a descriptor and this network streams snapshots, starts
/// streaming its file and returns `None`; otherwise hands `msg` back for the message queue.
/// Called on the raft thread: opens the file (which pins it against compaction) and spawns.
fn start_snapshot_stream(inner: &Arc<Inner>, msg: Message) -> Option<Message> {
    if msg.get_msg_type() != MessageType::MsgSnapshot {
        return Some(msg);
    }
    let Some(dir) = inner.snapshots.get() else {
        return Some(msg);
    };
    if !SnapshotRef::is_ref(&msg.get_snapshot().data) {
        return Some(msg);
    }
    let to = msg.to;
    let fail = |error: String| {
        tracing::warn!(peer = to, %error, "cannot stream snapshot");
        bump(&inner.counters.snapshot_send_failures, 1);
        inner.snapshot(to, SnapshotStatus::Failure);
        None
    };
    let Some(r) = SnapshotRef::decode(&msg.get_snapshot().data) else {
        return fail("damaged snapshot descriptor".into());
    };
    let Some(peer) = inner.peer(to) else {
        return fail(format!("unknown peer {to}"));
    };
    if !inner.sending.lock().insert(to) {
        // raft-rs sends one snapshot per peer until it hears Finish or Failure; the stream in
        // flight will report, for this one too.
        tracing::debug!(
            peer = to,
            index = r.index,
            "snapshot stream to peer already running"
        );
        return None;
    }
    let file = match dir.open_for_send(r.index) {
        Ok(f) => f,
        Err(e) => {
            inner.sending.lock().remove(&to);
            return fail(e.to_string());
        }
    };
    let task_inner = inner.clone();
    inner.runtime.spawn(async move {
        let inner = task_inner;
        let started = Instant::now();
        let result = tokio::select! {
            _ = inner.cancel.cancelled() => Err(PeerError::Closed),
            r = async {
                // Closed only if the network is gone; then the stream is moot.
                let _slot = inner.send_slots.acquire().await.map_err(|_| PeerError::Closed)?;
                stream_snapshot(&inner, &peer, msg, r, file).await
            } => r,
        };
        match result {
            Ok(bytes) => {
                inner.stream_failures.lock().remove(&to);
                inner.sending.lock().remove(&to);
                bump(&inner.counters.snapshots_sent, 1);
                tracing::info!(
                    my_id = inner.my_id,
                    peer = to,
                    index = r.index,
                    bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "snapshot streamed to follower"
                );
                inner.snapshot(to, SnapshotStatus::Finish);
            }
            Err(error) => {
                bump(&inner.counters.snapshot_send_failures, 1);
                let failures = {
                    let mut f = inner.stream_failures.lock();
                    let n = f.entry(to).or_insert(0);
                    *n = n.saturating_add(1);
                    *n
                };
                let backoff = snapshot_retry_backoff(failures);
                tracing::warn!(my_id = inner.my_id, peer = to, index = r.index, %error, failures, backoff_ms = backoff.as_millis() as u64, "snapshot stream failed; raft retries after a backoff");
                // Raft keeps the peer paused (heartbeats still flow) until it hears Failure.
                tokio::select! {
                    _ = inner.cancel.cancelled() => {}
                    _ = tokio::time::sleep(backoff) => {}
                }
                inner.sending.lock().remove(&to);
                inner.snapshot(to, SnapshotStatus::Failure);
            }
        }
    });
    None
}

async fn write_timed(
    limits: &PeerLimits,
    wr: &mut (impl AsyncWriteExt + Unpin),
    bytes: &[u8],
) -> Result<(), PeerError> {
    match tokio::time::timeout(limits.write_timeout, wr.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(PeerError::Io(e)),
        Err(_) => Err(PeerError::WriteTimeout),
    }
}

/// Reads the acceptor's [`HelloReply`] within `wait`.
async fn read_verdict(
    rd: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    wait: Duration,
) -> Result<(), PeerError> {
    let reply = tokio::time::timeout(wait, read_frame(rd, buf, HANDSHAKE_CAPS))
        .await
        .map_err(|_| PeerError::HandshakeTimeout)??;
    if reply.kind != FrameKind::HelloReply {
        return Err(PeerError::Unexpected(reply.kind));
    }
    match HelloReply::decode(&reply.payload)? {
        HelloReply::Accepted => Ok(()),
        HelloReply::Refused(reason) => Err(PeerError::Refused(reason)),
    }
}

/// Streams snapshot file `file` (described by `r`) to `peer` on a new connection: header,
/// verdict, chunks, done, verdict. Returns the bytes sent.
async fn stream_snapshot(
    inner: &Inner,
    peer: &PeerQueue,
    msg: Message,
    r: SnapshotRef,
    file: std::fs::File,
) -> Result<u64, PeerError> {
    let limits = &inner.limits;
    let (mut rd, mut wr) = tokio::time::timeout(
        limits.handshake_timeout,
        open_peer_stream(inner, &peer.addr),
    )
    .await
    .map_err(|_| PeerError::HandshakeTimeout)??;
    let header = SnapHeader {
        hello: Hello {
            version: frame::VERSION,
            cluster_id: inner.cluster_id,
            from: inner.my_id,
            to: peer.id,
        },
        snapshot_ref: r.encode(),
        msg,
    }
    .encode()
    .map_err(|e| PeerError::Encode(e.to_string()))?;
    write_timed(
        limits,
        &mut wr,
        &frame_bytes(FrameKind::SnapHeader, &header)?,
    )
    .await?;
    let mut buf = BytesMut::new();
    read_verdict(&mut rd, &mut buf, limits.handshake_timeout).await?;

    let chunk = snapshot_chunk(limits);
    // One chunk in memory at a time: the payload under construction and its frame, both
    // reused. The file is read on the blocking pool into that same buffer (moved there and
    // back), so no per-read buffers pile up in the pool threads' allocator arenas.
    let mut payload = vec![0u8; 8 + chunk];
    let mut out = BytesMut::with_capacity(chunk + 64);
    let mut hasher = crc32fast::Hasher::new();
    let mut offset = 0u64;
    let mut file = file;
    loop {
        let (f, p, n) = tokio::task::spawn_blocking(move || {
            let mut n = 0;
            let read = loop {
                if n == chunk {
                    break Ok(n);
                }
                match std::io::Read::read(&mut file, &mut payload[8 + n..8 + chunk]) {
                    Ok(0) => break Ok(n),
                    Ok(got) => n += got,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            (file, payload, read)
        })
        .await
        .map_err(|e| PeerError::Io(std::io::Error::other(e.to_string())))?;
        (file, payload) = (f, p);
        let n = n.map_err(PeerError::Io)?;
        if n == 0 {
            break;
        }
        hasher.update(&payload[8..8 + n]);
        payload[..8].copy_from_slice(&frame::encode_snap_chunk_header(offset));
        out.clear();
        encode_frame(FrameKind::SnapChunk, &payload[..8 + n], &mut out)?;
        write_timed(limits, &mut wr, &out).await?;
        offset += n as u64;
        if offset > r.file_len {
            return Err(PeerError::Encode(format!(
                "snapshot file {} is longer than its descriptor says ({})",
                r.index, r.file_len
            )));
        }
    }
    if offset != r.file_len {
        return Err(PeerError::Encode(format!(
            "snapshot file {} is {offset} bytes, its descriptor says {}",
            r.index, r.file_len
        )));
    }
    let done = frame::encode_snap_done(offset, hasher.finalize());
    write_timed(limits, &mut wr, &frame_bytes(FrameKind::SnapDone, &done)?).await?;
    read_verdict(&mut rd, &mut buf, limits.snapshot_timeout).await?;
    Ok(offset)
}

/// Removes a peer from [`Inner::receiving`] however the receive ends.
struct ReceivingGuard<'a> {
    /// The network.
    inner: &'a Inner,
    /// The sending peer.
    from: u64,
}

impl Drop for ReceivingGuard<'_> {
    fn drop(&mut self) {
        self.inner.receiving.lock().remove(&self.from);
    }
}

/// Serves a snapshot connection whose first frame was `payload` (a [`SnapHeader`]); every
/// refusal is logged and answered, and leaves no file behind.
async fn receive_snapshot(
    inner: &Inner,
    mut rd: PeerRead,
    mut wr: PeerWrite,
    mut buf: BytesMut,
    payload: &[u8],
    addr: SocketAddr,
) {
    let reply = |verdict: HelloReply| frame_bytes(FrameKind::HelloReply, &verdict.encode());
    let outcome = tokio::select! {
        _ = inner.cancel.cancelled() => Err("server shutting down".to_string()),
        r = receive_snapshot_inner(inner, &mut rd, &mut wr, &mut buf, payload) => r,
    };
    match outcome {
        Ok((from, index, bytes)) => {
            bump(&inner.counters.snapshots_received, 1);
            tracing::info!(
                my_id = inner.my_id,
                peer = from,
                index,
                bytes,
                "snapshot received from leader; handed to raft"
            );
            if let Ok(b) = reply(HelloReply::Accepted) {
                let _ = write_timed(&inner.limits, &mut wr, &b).await;
            }
        }
        Err(reason) => {
            bump(&inner.counters.snapshot_receive_failures, 1);
            tracing::warn!(my_id = inner.my_id, %addr, %reason, "snapshot stream refused");
            if let Ok(b) = reply(HelloReply::Refused(short_reason(reason))) {
                let _ = write_timed(&inner.limits, &mut wr, &b).await;
            }
        }
    }
    let _ = wr.shutdown().await;
}

/// The receive itself: Ok((from, index, bytes)) once the file is durable and verified and
/// its MsgSnapshot was stepped; Err(reason) otherwise.
async fn receive_snapshot_inner(
    inner: &Inner,
    rd: &mut PeerRead,
    wr: &mut PeerWrite,
    buf: &mut BytesMut,
    payload: &[u8],
) -> Result<(u64, u64, u64), String> {
    let header = SnapHeader::decode(payload).map_err(|e| e.to_string())?;
    check_hello(inner, &header.hello)?;
    let from = header.hello.from;
    let Some(dir) = inner.snapshots.get() else {
        return Err("this server does not receive snapshot files".into());
    };
    let r = SnapshotRef::decode(&header.snapshot_ref).ok_or("damaged snapshot descriptor")?;
    let msg = header.msg;
    check_message(inner, from, &msg).map_err(|e| e.to_string())?;
    let meta = msg.get_snapshot().get_metadata();
    if msg.get_msg_type() != MessageType::MsgSnapshot
        || meta.index != r.index
        || meta.term != r.term
        || msg.get_snapshot().data != header.snapshot_ref
    {
        return Err("the MsgSnapshot does not match the announced file".into());
    }
    if !inner.receiving.lock().insert(from) {
        return Err(format!("already receiving a snapshot from server {from}"));
    }
    let _guard = ReceivingGuard { inner, from };
    let mut receiver = {
        let dir = dir.clone();
        run_blocking(move || dir.receive(r, from)).await?
    };
    let accepted = frame_bytes(FrameKind::HelloReply, &HelloReply::Accepted.encode())
        .map_err(|e| e.to_string())?;
    write_timed(&inner.limits, wr, &accepted)
        .await
        .map_err(|e| e.to_string())?;
    let caps = inner.caps();
    loop {
        let f = tokio::time::timeout(inner.limits.snapshot_timeout, read_frame(rd, buf, caps))
            .await
            .map_err(|_| "the leader stalled mid-snapshot".to_string())?
            .map_err(|e| e.to_string())?;
        match f.kind {
            FrameKind::SnapChunk => {
                let (offset, data) =
                    frame::decode_snap_chunk(&f.payload).map_err(|e| e.to_string())?;
                receiver = run_blocking_with(receiver, move |rc: &mut SnapshotReceiver| {
                    rc.write_chunk(offset, &data)
                })
                .await?;
            }
            FrameKind::SnapDone => {
                let (len, crc) = frame::decode_snap_done(&f.payload).map_err(|e| e.to_string())?;
                if len != receiver.received() {
                    return Err(format!(
                        "leader says {len} bytes, {} arrived",
                        receiver.received()
                    ));
                }
                run_blocking(move || receiver.finish(crc)).await?;
                // Durable and verified: now Raft may learn of it.
                inner.inbound.raft(from, vec![msg]);
                return Ok((from, r.index, len));
            }
            other => return Err(format!("unexpected {other:?} frame in a snapshot stream")),
        }
    }
}

/// Runs blocking file work off the async threads.
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::storage::SnapshotError> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("snapshot file task failed: {e}"))?
        .map_err(|e| e.to_string())
}

/// Like [`run_blocking`] on a receiver that is handed back afterwards.
async fn run_blocking_with(
    mut rc: SnapshotReceiver,
    f: impl FnOnce(&mut SnapshotReceiver) -> Result<(), crate::storage::SnapshotError> + Send + 'static,
) -> Result<SnapshotReceiver, String> {
    tokio::task::spawn_blocking(move || f(&mut rc).map(|()| rc))
        .await
        .map_err(|e| format!("snapshot file task failed: {e}"))?
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn snapshot_retries_back_off_exponentially_to_a_cap() {
        assert_eq!(snapshot_retry_backoff(1), Duration::from_millis(50));
        assert_eq!(snapshot_retry_backoff(2), Duration::from_millis(100));
        assert_eq!(snapshot_retry_backoff(5), Duration::from_millis(800));
        assert_eq!(snapshot_retry_backoff(8), Duration::from_secs(5));
        assert_eq!(snapshot_retry_backoff(u32::MAX), Duration::from_secs(5));
    }
}
