//! Replication: every mutation goes through a Raft log (raft-rs) before it reaches the tree.
//!
//! A dedicated OS thread owns the `RawNode`, the LMDB log and the [`StateMachine`]; everything
//! else talks to it through a cloneable [`RaftHandle`] (a channel plus a few atomics). LMDB calls
//! block and fsync, so they must never run on a tokio worker.
//!
//! On disk (`RaftOptions::data_dir`):
//! * `raft/`: LMDB environment with the log, hard state and conf state
//!   ([`crate::storage::raft_log`]).
//! * `snapshots/snap-<index:020>.bin`: state-machine snapshots ([`crate::storage::snapshot`]).
//!
//! Durability: LMDB runs with `MDB_NOMETASYNC`, so a write transaction is durable only once the
//! next one commits (its fdatasync also flushes the earlier meta page) or after an explicit
//! sync. The raft thread uses raft-rs's asynchronous persistence (`advance_append_async`, then
//! `on_persist_ready` once really durable): under load each commit costs one flush and makes
//! the previous batch committable; when nothing else is queued it syncs at once. Persisted
//! messages (votes, append acks) wait for durability too.
//!
//! Storage faults: a write transaction that fails for lack of space (ENOSPC, EDQUOT, or
//! `MDB_MAP_FULL` after the map could not grow) aborts cleanly in LMDB, and raft-rs's in-memory
//! state after `ready()` assumes the Ready will be persisted. So the raft thread keeps
//! retrying that *same* Ready with backoff, publishes [`RaftHandle::storage_full`] meanwhile
//! (proposals are refused with [`RaftError::StorageFull`]; reads are served from the tree
//! without this thread) and resumes by itself once space is freed. Any other storage error,
//! any fsync error (after a failed fsync the kernel may have dropped the dirty pages, so a retry
//! could report unwritten data durable) and any panic on this thread (which also applies
//! entries) is fatal: the thread publishes [`RaftHandle::fatal_error`] and stops, and the server
//! exits non-zero (fail-stop, like etcd and ZooKeeper).
//!
//! Groups ([`RaftHandle::start_group`], [`GroupOptions`]): election/heartbeat ticks from
//! zoo.cfg, bootstrap learners (observers), and joiners with no membership of their own. The
//! raft thread publishes for any role: [`RaftHandle::role`], [`RaftHandle::commit_index`],
//! [`RaftHandle::is_fresh`] (the serving gate: a known leader that this node heard from
//! within the election timeout and whose commit index, asked for by a ReadIndex probe, it has
//! applied) and [`RaftHandle::since_leader_contact`]. It reports every move of the known
//! leader or term with [`StateMachine::on_leader_change`] (so the server can fail in-flight
//! writes with ConnectionLoss) and a leader's catch-up with [`StateMachine::on_caught_up`].
//! [`ReadBarrier`] makes `sync` linearizable on any node.
//!
//! Snapshot/compaction policy: a snapshot is taken every `snapshot_every` applied entries; the
//! log is then compacted only up to the *previous* snapshot, and the two newest snapshot files
//! are kept. So if the newest file turns out corrupt at restart, the older one plus the log
//! still rebuild the exact state. If no usable snapshot covers the compaction point (both files
//! damaged or deleted), [`RaftHandle::start`] fails with [`RaftError::MissingHistory`] rather
//! than start with silently missing data.

mod barrier;
mod logger;
mod node;
mod quorum;
mod reconfig;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use raft::eraftpb::Message;
pub use raft::SnapshotStatus;

pub use barrier::{ReadBarrier, READ_RESEND};
pub use quorum::{PeerProgress, ProposalSizes, QuorumStatus};
pub use reconfig::{MembershipChange, MembershipRefusal};

use crate::histogram::{AtomicHistogram, HistogramSnapshot};
use crate::storage::{LogError, SnapshotError, StorageStats};

/// Default [`RaftOptions::max_batch_bytes`]: big enough that small writes are still batched by
/// count (4,096 × 1 KiB), small enough that one commit stays a few milliseconds of I/O.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 8 << 20;
/// Default [`RaftOptions::max_uncommitted_bytes`]: 64 jute.maxbuffer-sized (1 MiB) writes in
/// flight; beyond that a sole voter is not keeping up with its disk anyway.
pub const DEFAULT_MAX_UNCOMMITTED_BYTES: u64 = 64 << 20;
/// Default [`RaftOptions::max_queued_bytes`]: a few seconds of a fast disk's write bandwidth.
pub const DEFAULT_MAX_QUEUED_BYTES: u64 = 256 << 20;

/// Configuration of the local Raft node.
#[derive(Debug, Clone)]
pub struct RaftOptions {
    /// This node's Raft id (never 0); 1 for a standalone server.
    pub node_id: u64,
    /// Bootstrap membership, used only the first time `data_dir` is initialized; afterwards
    /// membership comes from disk (snapshots and applied conf changes). Empty for a node that
    /// joins an existing group: it bootstraps no membership of its own and waits for the
    /// leader's log or snapshot (learners: [`GroupOptions::learners`]).
    pub voters: Vec<u64>,
    /// Root of this node's durable state (`raft/` LMDB env and `snapshots/`).
    pub data_dir: PathBuf,
    /// Raft logical clock period; elections and heartbeats are multiples of it.
    pub tick_interval: Duration,
    /// Applied entries between automatic snapshots (like ZooKeeper's snapCount); bounds both
    /// log size and restart replay time.
    pub snapshot_every: u64,
    /// Log bytes appended since the last snapshot that make the raft thread take one even
    /// before `snapshot_every` entries (ZooKeeper's snapSizeLimitInKb): bounds the log's size,
    /// hence what compaction leaves, by bytes as well as by count. 0: no byte bound.
    pub snapshot_bytes: u64,
    /// Upper bound on commands drained from the queue per loop turn, i.e. on proposals folded
    /// into one Ready / one LMDB write transaction; keeps latency bounded under heavy load.
    pub max_batch: usize,
    /// Upper bound on proposal bytes drained per loop turn (a turn stops draining once it is
    /// reached), so 4,096 proposals of 1 MiB never become one 4 GiB LMDB transaction.
    pub max_batch_bytes: usize,
    /// raft-rs `max_uncommitted_size`: proposal bytes appended but not yet committed. A
    /// proposal beyond it is refused and comes back through
    /// [`StateMachine::proposal_dropped`] (the client sees ConnectionLoss). raft-rs requires
    /// it to be at least its message size bound (1 MiB).
    pub max_uncommitted_bytes: u64,
    /// Proposal bytes queued for the raft thread but not yet taken by it. Beyond this,
    /// [`RaftHandle::propose`] refuses with [`RaftError::Overloaded`] (the client's connection
    /// closes) instead of letting a slow disk turn into unbounded memory.
    pub max_queued_bytes: u64,
}

impl RaftOptions {
    /// Standalone defaults: node 1, sole voter, 100 ms tick, snapshot every 100 000 entries.
    pub fn standalone(data_dir: impl Into<PathBuf>) -> Self {
        RaftOptions {
            node_id: 1,
            voters: vec![1],
            data_dir: data_dir.into(),
            tick_interval: Duration::from_millis(100),
            snapshot_every: 100_000,
            snapshot_bytes: DEFAULT_SNAPSHOT_BYTES,
            max_batch: 1024,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_uncommitted_bytes: DEFAULT_MAX_UNCOMMITTED_BYTES,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
        }
    }
}

/// Default [`RaftOptions::snapshot_bytes`]: ZooKeeper's snapSizeLimitInKb default, 4 GiB.
pub const DEFAULT_SNAPSHOT_BYTES: u64 = 4 << 30;

/// Default [`GroupOptions::election_tick`]: the standalone value (10 ticks of 100 ms).
pub const DEFAULT_ELECTION_TICK: usize = 10;
/// Default [`GroupOptions::heartbeat_tick`]: the standalone value.
pub const DEFAULT_HEARTBEAT_TICK: usize = 2;

/// Group-shape options for an ensemble: Raft timing and bootstrap learners.
///
/// Kept apart from [`RaftOptions`] so that code building `RaftOptions` with a full struct
/// literal (the standalone listener) keeps compiling; [`RaftHandle::start`] and
/// [`RaftHandle::start_with_transport`] use [`GroupOptions::default`], which is exactly the
/// standalone behaviour (10 / 2 ticks, no learners).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOptions {
    /// `raft::Config::election_tick`: ticks without hearing from a leader before a follower
    /// campaigns (raft-rs randomizes it in `[election_tick, 2 × election_tick)`). Also the
    /// freshness bound: a follower that heard nothing from its leader for this long is not
    /// fresh ([`RaftHandle::is_fresh`]).
    pub election_tick: usize,
    /// `raft::Config::heartbeat_tick`: ticks between a leader's heartbeats; must be smaller
    /// than `election_tick` so that a live leader is never mistaken for a dead one.
    pub heartbeat_tick: usize,
    /// Bootstrap learners (ZooKeeper observers): `ConfState.learners` the first time
    /// `data_dir` is initialized. Learners replicate and apply but never vote or count for a
    /// quorum. Ignored once the data dir holds a membership.
    pub learners: Vec<u64>,
    /// How long new participants of a reconfig may take to catch up as learners before the
    /// change is refused (ZooKeeper: initLimit × tickTime; NewConfigNoQuorum).
    pub catch_up_timeout: Duration,
}

/// Default [`GroupOptions::catch_up_timeout`]: ZooKeeper's default initLimit 10 × tickTime 2 s.
pub const DEFAULT_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            election_tick: DEFAULT_ELECTION_TICK,
            heartbeat_tick: DEFAULT_HEARTBEAT_TICK,
            learners: Vec::new(),
            catch_up_timeout: DEFAULT_CATCH_UP_TIMEOUT,
        }
    }
}

impl GroupOptions {
    /// Timing derived from zoo.cfg ([`crate::config::Config::raft_timing`]); the tick itself
    /// goes into [`RaftOptions::tick_interval`].
    pub fn from_timing(timing: &crate::config::RaftTiming, learners: Vec<u64>) -> Self {
        GroupOptions {
            election_tick: timing.election_ticks,
            heartbeat_tick: timing.heartbeat_ticks,
            learners,
            catch_up_timeout: DEFAULT_CATCH_UP_TIMEOUT,
        }
    }
}

/// What this node currently is in the group, as published by the raft thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// Leads the group (accepts writes; fresh once caught up).
    Leader,
    /// A voter following a leader (or waiting for one; a joiner not yet in the membership
    /// also reports this).
    Follower,
    /// A voter campaigning (pre-vote or vote): there is no known leader.
    Candidate,
    /// A learner (ZooKeeper observer): replicates and applies, never votes.
    Learner,
}

impl NodeRole {
    fn to_u8(self) -> u8 {
        match self {
            NodeRole::Leader => 1,
            NodeRole::Follower => 2,
            NodeRole::Candidate => 3,
            NodeRole::Learner => 4,
        }
    }

    fn from_u8(v: u8) -> NodeRole {
        match v {
            1 => NodeRole::Leader,
            3 => NodeRole::Candidate,
            4 => NodeRole::Learner,
            _ => NodeRole::Follower,
        }
    }
}

/// Streams a snapshot of a frozen state into a writer (see [`StateMachine::with_frozen`]).
pub type SnapshotWriter<'a> = &'a dyn Fn(&mut dyn std::io::Write) -> std::io::Result<()>;

/// The replicated state machine. Lives on the raft thread; all calls come from it.
pub trait StateMachine: Send + 'static {
    /// Apply one committed normal entry with non-empty data, strictly in log order.
    fn apply(&mut self, index: u64, term: u64, data: &[u8]);
    /// Why the state machine cannot go on, if it cannot: for example an entry written by a newer
    /// rookery whose apply rules this build does not know. Checked after every apply; `Some`
    /// stops the raft thread fatally (the server exits, fail-stop) instead of letting this
    /// replica diverge from the ones that applied the entry. Default: never.
    fn take_fatal(&mut self) -> Option<String> {
        None
    }
    /// After a run of apply() calls for one Ready (lets the server batch wakeups). Default no-op.
    fn applied_batch(&mut self, _last_index: u64) {}
    /// Serialize the whole state as of the last applied index.
    fn snapshot(&self) -> Vec<u8>;
    /// Replace the whole state with a snapshot taken at `index`.
    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), String>;
    /// Streams the snapshot of [`StateMachine::snapshot`] into `w` instead of building it in
    /// memory. Default: writes `snapshot()`.
    fn snapshot_into(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        w.write_all(&self.snapshot())
    }
    /// Calls `f` once while the state cannot change, with a function that streams the
    /// snapshot of that frozen state into a writer (without taking the state's lock again).
    /// The raft thread uses it to fork a child that serializes from the frozen memory.
    /// Default: hands `f` [`StateMachine::snapshot_into`].
    fn with_frozen(&self, f: &mut dyn FnMut(SnapshotWriter<'_>)) {
        f(&|w| self.snapshot_into(w));
    }
    /// Whether the writer [`StateMachine::with_frozen`] hands out may run in a forked child
    /// process: it must take no lock, log nothing and touch nothing but the frozen state and
    /// the writer. Default: no (the raft thread then serializes in-process).
    fn fork_safe(&self) -> bool {
        false
    }
    /// Replace the whole state with the snapshot of `len` bytes taken at `index` that `r`
    /// streams, without reading it into memory whole. Default: reads it, then `restore`.
    fn restore_from(
        &mut self,
        index: u64,
        len: u64,
        r: &mut dyn std::io::Read,
    ) -> Result<(), String> {
        let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(1 << 26));
        r.read_to_end(&mut data)
            .map_err(|e| format!("reading snapshot: {e}"))?;
        self.restore(index, &data)
    }
    /// Raft could not accept a proposal (e.g. not leader); the server fails the waiting client
    /// with ConnectionLoss.
    fn proposal_dropped(&mut self, data: &[u8]);
    /// Leadership changed (this node became or stopped being the leader). Default no-op.
    fn on_role_change(&mut self, _is_leader: bool, _term: u64) {}
    /// The known leader id or the term moved (on any node, not only when this node flips);
    /// `leader_id` is 0 while no leader is known. The fate of every write, sync or session
    /// creation in flight is then unknown (a forwarded proposal may be lost, a deposed
    /// leader's tail truncated), so the server closes those connections (ConnectionLoss).
    /// Called before the entries of the same Ready are applied. Default no-op.
    fn on_leader_change(&mut self, _leader_id: u64, _term: u64) {}
    /// This node, as leader of `term`, has applied everything committed before its term
    /// ([`RaftHandle::is_caught_up_leader`] just became true). The place to start acting as
    /// leader: `SessionTracker::promote(now, RaftHandle::election_timeout())` (on losing
    /// leadership, `on_role_change(false, _)`: `demote`). Default no-op.
    fn on_caught_up(&mut self, _term: u64) {}
    /// A [`RaftHandle::read_index`] request with context `ctx` is safe to serve once
    /// `applied_index() >= index`. Default no-op. Requests can be dropped silently (no leader,
    /// or a new leader that has not committed in its term yet), so callers need a timeout.
    /// Answers to [`ReadBarrier`] requests are consumed by the barrier and never come here.
    fn on_read_index(&mut self, _ctx: &[u8], _index: u64) {}
    /// Checked after every applied entry: the membership a reconfig entry asks for (see
    /// `reconfig`). Only the leader of the entry's term carries it out. Default: none.
    fn take_membership_change(&mut self) -> Option<MembershipChange> {
        None
    }
    /// Membership changes whose reconfig entry applied but that neither a conf change nor a
    /// refusal settled yet, oldest first. A new leader, once caught up, carries them out: the
    /// leader that accepted one may have handed leadership over before the joint change (a
    /// leader removing itself) or died. Kept in memory only, so a member that restored a
    /// snapshot knows none from before it (their clients then time out). Default: none.
    fn unsettled_membership_changes(&self) -> Vec<MembershipChange> {
        Vec::new()
    }
    /// The leader did not carry out the change with `context`: the bytes of a normal entry
    /// to propose so that every replica learns it and the origin gets its answer (`None`:
    /// nothing to propose). Default: none.
    fn membership_refused(
        &mut self,
        _context: &[u8],
        _reason: MembershipRefusal,
    ) -> Option<Vec<u8>> {
        None
    }
    /// A conf change entry applied at `index` (on every member, in log order, replays
    /// included): `context` is what [`MembershipChange::context`] carried (empty for the
    /// learner step and for leaving a joint configuration); `voters`/`learners` is the
    /// membership now in force (the incoming half while joint) and `outgoing` the outgoing
    /// voters while joint (empty otherwise). Default no-op.
    fn apply_membership(
        &mut self,
        _index: u64,
        _term: u64,
        _context: &[u8],
        _voters: &[u64],
        _learners: &[u64],
        _outgoing: &[u64],
    ) {
    }
}

/// Outbound Raft messages to peers. Called on the raft thread; must not block for long.
pub trait Transport: Send + 'static {
    /// Delivers `msgs` (best effort: Raft retransmits what is lost).
    fn send(&self, msgs: Vec<Message>);
    /// Whether a MsgSnapshot may carry a snapshot-file descriptor instead of the whole image:
    /// the transport then streams the file itself. Default: no.
    fn streams_snapshots(&self) -> bool {
        false
    }
}

/// Transport for a one-voter group: there is nobody to talk to.
pub struct NoopTransport;

impl Transport for NoopTransport {
    fn send(&self, msgs: Vec<Message>) {
        if !msgs.is_empty() {
            tracing::trace!(count = msgs.len(), "dropping raft messages (no transport)");
        }
    }
}

/// Why a leadership transfer could not be started ([`RaftHandle::transfer_leader`]).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TransferError {
    /// No leader is known, so nobody can hand leadership over.
    #[error("no leader is known")]
    NoLeader,
    /// No target was named and this node does not lead, so it cannot pick one.
    #[error("not the leader: name the target server")]
    NotLeader,
    /// The named server is not a voter (unknown, or an observer/learner).
    #[error("server {0} is not a voting member")]
    NotAVoter(u64),
    /// A follower can forward only a transfer to itself: the peer transport accepts a
    /// message only from the member it names as its sender, so a forwarded request naming
    /// another target would be dropped. Ask the leader, or the target itself.
    #[error("not the leader: send this to the leader (server {leader}) or to the target")]
    AskLeaderOrTarget {
        /// The leader this node knows.
        leader: u64,
    },
    /// The named server leads already.
    #[error("server {0} is already the leader")]
    AlreadyLeader(u64),
    /// No target was named and no other voter is active.
    #[error("no other active voter to hand leadership to")]
    NoCandidate,
    /// The raft thread is gone.
    #[error("raft is not running")]
    Stopped,
}

/// Why the raft thread could not start, or a request to it failed.
#[derive(thiserror::Error, Debug)]
pub enum RaftError {
    /// A [`RaftOptions`] value is out of range.
    #[error("invalid raft options: {0}")]
    InvalidOptions(String),
    /// The LMDB log failed.
    #[error("raft log: {0}")]
    Log(#[from] LogError),
    /// The snapshot directory failed.
    #[error("snapshot store: {0}")]
    Snapshot(#[from] SnapshotError),
    /// raft-rs refused a configuration or an operation.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// [`StateMachine::restore`] refused a snapshot.
    #[error("state machine rejected the snapshot at index {index}: {reason}")]
    Restore {
        /// Index of the snapshot.
        index: u64,
        /// The state machine's reason.
        reason: String,
    },
    #[error(
        "raft log is compacted through index {compacted_to} but no readable snapshot covers it \
         (newest valid snapshot: {newest_valid:?}); refusing to start with missing history. \
         Restore a snapshot file for index >= {compacted_to} into the snapshots directory, or \
         rebuild this node from a peer"
    )]
    /// The log is compacted past every readable snapshot.
    MissingHistory {
        /// The log's compaction point.
        compacted_to: u64,
        /// Index of the newest snapshot that passed its checksums, if any.
        newest_valid: Option<u64>,
    },
    /// A committed conf change entry does not decode.
    #[error("corrupt conf change entry at index {index}: {source}")]
    BadConfChange {
        /// Index of the entry.
        index: u64,
        /// The decoding error.
        #[source]
        source: protobuf::ProtobufError,
    },
    #[error(
        "entry {index} would be applied but the raft log is durable only through {durable}: \
         persistence was reported early"
    )]
    /// An entry was about to be applied before it was durable (a bug; fatal).
    NotDurable {
        /// Index of the entry.
        index: u64,
        /// Highest durable index.
        durable: u64,
    },
    /// The OS refused to start the raft thread.
    #[error("cannot spawn raft thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The raft thread panicked before it finished starting.
    #[error("raft thread died during startup")]
    StartupPanicked,
    /// The raft thread has stopped (shutdown, or a fatal error: see
    /// [`RaftHandle::fatal_reason`]).
    #[error("raft thread has stopped")]
    Stopped,
    /// The state machine cannot apply an entry ([`StateMachine::take_fatal`]).
    #[error("state machine cannot apply entry {index}: {reason}")]
    Apply {
        /// The entry's index.
        index: u64,
        /// The state machine's reason.
        reason: String,
    },
    /// The disk (or LMDB map) is full: the raft thread is retrying the pending write and takes
    /// no new proposals until space is freed.
    #[error("storage is full; writes are refused until space is freed")]
    StorageFull,
    /// More proposal bytes are queued for the raft thread than
    /// [`RaftOptions::max_queued_bytes`]; the write is refused.
    #[error("too many proposal bytes queued for the raft thread")]
    Overloaded,
}

impl RaftError {
    /// Whether this is a lack of space that goes away by itself once space is freed (retried),
    /// as opposed to a fault that makes the node stop.
    pub fn is_storage_full(&self) -> bool {
        match self {
            RaftError::StorageFull => true,
            RaftError::Log(e) => e.is_storage_full(),
            RaftError::Snapshot(e) => e.is_storage_full(),
            _ => false,
        }
    }
}

/// Requests from handles to the raft thread.
enum Command {
    Propose(Vec<u8>),
    /// A proposal only the leader of this term may make (session expiry, container reaping):
    /// dropped unless this node still leads in `term` when the raft thread takes it, so that a
    /// deposed leader's decisions (say, expiries after it was paused) are never forwarded to
    /// the new leader and committed there.
    ProposeAsLeader(u64, Vec<u8>),
    Step(Box<Message>),
    ReadIndex(Vec<u8>),
    Snapshot,
    /// A background snapshot write finished (the file is durable, or it failed).
    SnapshotWritten {
        meta: Box<raft::eraftpb::SnapshotMetadata>,
        result: Result<std::path::PathBuf, String>,
        bytes: usize,
        started: std::time::Instant,
    },
    ReportUnreachable(u64),
    ReportSnapshot(u64, SnapshotStatus),
    /// The connection on which a peer sends to us was closed by its side (EOF or reset).
    PeerConnectionClosed(u64),
    /// Hand leadership to a voter (0: the most caught-up active one); the answer says to whom.
    TransferLeader {
        to: u64,
        reply: tokio::sync::oneshot::Sender<Result<u64, TransferError>>,
    },
    Shutdown,
    /// Exit without the orderly shutdown steps (lazy commit index not flushed), to test
    /// recovery from a crash.
    #[cfg(test)]
    Crash,
}

/// State published by the raft thread for lock-free reads from any thread.
#[derive(Default)]
struct Shared {
    /// Whether this node currently leads (servers only accept writes on the leader).
    is_leader: AtomicBool,
    /// Known leader id, 0 if none; lets a follower redirect or forward.
    leader_id: AtomicU64,
    /// Current term, for diagnostics and for fencing stale leaders.
    term: AtomicU64,
    /// Highest index handed to the state machine; `sync` waits on it.
    applied: AtomicU64,
    /// Index of the newest durable snapshot file (0 if none).
    snapshot_index: AtomicU64,
    /// Set once this node, as leader, has applied an entry of its own term: everything
    /// committed before it is applied too, so reads and handshakes see the whole history.
    caught_up: AtomicBool,
    /// Number of snapshots written by this process.
    snapshots_taken: AtomicU64,
    /// Entries applied as soon as the group committed them, before this node's own copy was
    /// durable (see `Node::apply_committed_ahead`).
    applied_ahead: AtomicU64,
    /// Snapshot writes that failed (retried later); lets tests and `mntr` see an ENOSPC there.
    snapshot_failures: AtomicU64,
    /// Snapshots received from a leader and installed since start.
    snapshots_installed: AtomicU64,
    /// How long the raft thread was stopped by the newest snapshot it took, in µs (the
    /// serialize, or the fork of the child that serializes).
    snapshot_pause_us: AtomicU64,
    /// Raft-thread pauses of every snapshot taken (the `snapshot_pause_us` of each).
    snapshot_pauses: AtomicHistogram,
    /// Time from starting a snapshot to its file being durable, per snapshot written.
    snapshot_durations: AtomicHistogram,
    /// LMDB counters (write transactions, entries) for group-commit metrics.
    storage: Arc<StorageStats>,
    /// Set while a write failed for lack of space and is being retried; proposals are refused
    /// meanwhile so nothing queues behind the stalled write.
    storage_full: AtomicBool,
    /// Proposal bytes sent to the raft thread and not yet taken off its queue.
    queued_bytes: AtomicU64,
    /// Bound on `queued_bytes` ([`RaftOptions::max_queued_bytes`]).
    max_queued_bytes: u64,
    /// Why the raft thread stopped for good (storage fault or panic); set once.
    fatal: OnceLock<String>,
    /// Wakes [`RaftHandle::fatal_error`] waiters once `fatal` is set.
    fatal_tx: tokio::sync::watch::Sender<bool>,
    /// Set by `Command::Crash` when the newest LMDB transaction was not durable yet, i.e. a
    /// power failure at that moment could roll it back (tests then simulate exactly that).
    #[cfg(test)]
    unsynced_at_crash: AtomicBool,
    /// Highest index known committed on this node (a follower learns it from the leader).
    commit: AtomicU64,
    /// [`NodeRole`] as a u8 (`NodeRole::to_u8`).
    role: AtomicU8,
    /// A leader is known and this node has caught up with it: a caught-up leader, or a
    /// follower/learner whose applied index reached the commit index learned from the current
    /// leader since the last leader change or loss of contact. That index comes from a
    /// freshness probe (a ReadIndex answered by the leader: heartbeats only carry
    /// `min(matched, commit)`, which cannot tell a lagging follower it lags) and from the
    /// leader's appends. The time part (recent leader contact) is checked by
    /// [`RaftHandle::is_fresh`] itself, so it is exact between loop turns.
    caught_up_with_leader: AtomicBool,
    /// When the last MsgAppend/MsgHeartbeat/MsgSnapshot from the current leader arrived
    /// (followers and learners); `None` before any.
    leader_contact: parking_lot::Mutex<Option<Instant>>,
    /// When the raft thread last finished a loop turn (it turns at least once a tick). A
    /// leader whose raft thread has not turned for an election timeout is not fresh: the
    /// followers may have elected another leader meanwhile, and it would keep serving reads
    /// and accepting session touches that nobody else sees (fault suite, finding 5).
    turned_at: parking_lot::Mutex<Option<Instant>>,
    /// `election_tick × tick_interval`: longest leader silence a fresh follower tolerates.
    election_timeout: Duration,
    /// Set when the raft thread stops (shutdown or fatal), before pending barrier waiters are
    /// failed, so a waiter queued concurrently is failed too instead of hanging.
    stopped: AtomicBool,
    /// The per-node [`ReadBarrier`] state (one ReadIndex in flight for all queued waiters).
    barrier: parking_lot::Mutex<barrier::BarrierState>,
    /// The leader's view of the other members and of its proposals (empty unless leader);
    /// refreshed with every status update ([`quorum::publish`]).
    quorum: parking_lot::Mutex<QuorumStatus>,
    /// Every member of the applied configuration: voters, outgoing voters while joint, and
    /// learners ([`RaftHandle::members`]).
    members: parking_lot::Mutex<Vec<u64>>,
}

/// The raft thread's histograms as a scrape reads them ([`RaftHandle::histograms`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RaftHistograms {
    /// Log entries per LMDB write transaction (group-commit batch size).
    pub batch_entries: HistogramSnapshot,
    /// LMDB write-transaction commit time (page writes + fdatasync), seconds.
    pub commit_latency: HistogramSnapshot,
    /// Explicit log flush time (one fdatasync), seconds.
    pub flush_latency: HistogramSnapshot,
    /// Raft-thread pause per snapshot taken, seconds.
    pub snapshot_pauses: HistogramSnapshot,
    /// Snapshot start to durable file, seconds.
    pub snapshot_durations: HistogramSnapshot,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RaftStats {
    /// LMDB write transactions committed. Each one fdatasyncs once, which also makes the
    /// previous transaction durable (`MDB_NOMETASYNC`).
    pub write_txns: u64,
    /// Explicit flushes of the newest transaction, done when no later commit was coming to
    /// flush it (idle, or a turn without writes); ≪ `write_txns` under load.
    pub syncs: u64,
    /// Log entries written (proposals, leader no-ops, conf changes).
    pub entries_appended: u64,
    /// Snapshots written since start.
    pub snapshots_taken: u64,
    /// Snapshot writes that failed since start (each is retried later).
    pub snapshot_failures: u64,
    /// Entries applied once the group committed them but before this node's own copy was
    /// durable (a follower, or a leader, whose fsync trails the quorum's).
    pub applied_ahead: u64,
    /// Snapshots received from a leader and installed since start.
    pub snapshots_installed: u64,
    /// Raft-thread pause of the newest snapshot taken, in µs.
    pub snapshot_pause_us: u64,
}

impl Shared {
    /// The raft thread took a proposal of `len` bytes off the queue.
    fn dequeued(&self, len: usize) {
        self.queued_bytes.fetch_sub(len as u64, Ordering::AcqRel);
    }

    /// Records why the raft thread stops for good; the first reason wins.
    fn set_fatal(&self, reason: String) {
        self.is_leader.store(false, Ordering::Release);
        self.caught_up.store(false, Ordering::Release);
        self.caught_up_with_leader.store(false, Ordering::Release);
        if self.fatal.set(reason).is_ok() {
            self.fatal_tx.send_replace(true);
        }
        self.stop_barrier();
    }

    /// The raft thread stops: fail every pending [`ReadBarrier`] waiter (their receivers see
    /// the sender dropped: [`RaftError::Stopped`]), now and for any that races in.
    fn stop_barrier(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.barrier.lock().fail_all();
    }
}

/// Cloneable, thread-safe handle to the raft thread.
#[derive(Clone)]
pub struct RaftHandle {
    /// Command queue into the raft thread; unbounded so `propose` never blocks a tokio task.
    tx: Sender<Command>,
    /// Published state (role, applied index, counters).
    shared: Arc<Shared>,
}

impl RaftHandle {
    /// Opens/creates the LMDB log + snapshot dir, restores the latest valid snapshot into `sm`,
    /// builds the RawNode with `Config.applied` = snapshot index, and spawns the raft thread.
    /// All of that runs on the new thread; this call waits for it to finish starting.
    pub fn start(
        opts: RaftOptions,
        sm: Box<dyn StateMachine>,
    ) -> Result<(RaftHandle, JoinHandle<()>), RaftError> {
        Self::start_with_transport(opts, sm, Box::new(NoopTransport))
    }

    /// Like [`RaftHandle::start`], with a transport for a multi-node group (standalone
    /// timing, no learners: see [`RaftHandle::start_group`]).
    pub fn start_with_transport(
        opts: RaftOptions,
        sm: Box<dyn StateMachine>,
        transport: Box<dyn Transport>,
    ) -> Result<(RaftHandle, JoinHandle<()>), RaftError> {
        Self::start_group(opts, GroupOptions::default(), sm, transport)
    }

    /// Starts a member of a replicated group: [`GroupOptions`] sets the election and
    /// heartbeat ticks and the bootstrap learners. With empty `opts.voters` (and no learners)
    /// a fresh node bootstraps an empty membership and waits for the leader to send it the
    /// log or a snapshot (a joiner; raft-rs five_mem_node). Only a sole voter campaigns at
    /// once; no node waits for leadership here.
    pub fn start_group(
        opts: RaftOptions,
        group: GroupOptions,
        sm: Box<dyn StateMachine>,
        transport: Box<dyn Transport>,
    ) -> Result<(RaftHandle, JoinHandle<()>), RaftError> {
        opts.validate()?;
        group.validate(&opts)?;
        let (tx, rx) = mpsc::channel();
        let election_timeout = opts
            .tick_interval
            .saturating_mul(u32::try_from(group.election_tick).unwrap_or(u32::MAX));
        let shared = Arc::new(Shared {
            max_queued_bytes: opts.max_queued_bytes,
            election_timeout,
            role: AtomicU8::new(NodeRole::Follower.to_u8()),
            ..Shared::default()
        });
        let (init_tx, init_rx) = mpsc::sync_channel(1);
        let self_tx = tx.clone();
        let thread_shared = shared.clone();
        let join = std::thread::Builder::new()
            .name(format!("raft-{}", opts.node_id))
            .spawn(move || {
                let guard_shared = thread_shared.clone();
                match node::Node::init(opts, group, sm, transport, thread_shared, self_tx, rx) {
                    Ok(node) => {
                        let _ = init_tx.send(Ok(()));
                        // The state machine applies entries on this thread: a panic there or in
                        // raft-rs must stop the process (fail-stop), not leave a server that
                        // answers reads from frozen state while every write hangs.
                        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            node.run();
                        }));
                        if let Err(payload) = run {
                            let message = panic_message(payload.as_ref());
                            tracing::error!(panic = %message, "raft thread panicked");
                            guard_shared.set_fatal(format!("raft thread panicked: {message}"));
                        }
                    }
                    Err(e) => {
                        let _ = init_tx.send(Err(e));
                    }
                }
            })
            .map_err(RaftError::Spawn)?;
        match init_rx.recv() {
            Ok(Ok(())) => Ok((RaftHandle { tx, shared }, join)),
            Ok(Err(e)) => {
                let _ = join.join();
                Err(e)
            }
            Err(_) => {
                let _ = join.join();
                Err(RaftError::StartupPanicked)
            }
        }
    }

    fn send(&self, cmd: Command) -> Result<(), RaftError> {
        if self.shared.fatal.get().is_some() {
            return Err(RaftError::Stopped);
        }
        self.tx.send(cmd).map_err(|_| RaftError::Stopped)
    }

    /// Non-blocking enqueue of a proposal (callable from tokio tasks). Err if the raft thread
    /// is gone, or [`RaftError::StorageFull`] while a write is stalled for lack of space. A
    /// proposal Raft refuses comes back via `StateMachine::proposal_dropped`.
    pub fn propose(&self, data: Vec<u8>) -> Result<(), RaftError> {
        self.enqueue_proposal(data.len(), Command::Propose(data))
    }

    /// Like [`RaftHandle::propose`], for what only the leader of `term` decides (session
    /// expiry, container reaping): the raft thread drops it, silently, unless this node still
    /// leads in `term` and has caught up. Without this, a leader that was paused and deposed
    /// meanwhile would have its stale decisions forwarded to the new leader (raft-rs forwards
    /// a follower's proposals) and committed.
    pub fn propose_as_leader(&self, term: u64, data: Vec<u8>) -> Result<(), RaftError> {
        self.enqueue_proposal(data.len(), Command::ProposeAsLeader(term, data))
    }

    /// Queues a proposal of `len` payload bytes, within the queue's byte bound.
    fn enqueue_proposal(&self, len: usize, cmd: Command) -> Result<(), RaftError> {
        if self.storage_full() {
            return Err(RaftError::StorageFull);
        }
        let len = len as u64;
        let before = self.shared.queued_bytes.fetch_add(len, Ordering::AcqRel);
        // One proposal always fits an empty queue, however large (jute.maxbuffer bounds it).
        if before > 0 && before.saturating_add(len) > self.shared.max_queued_bytes {
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(RaftError::Overloaded);
        }
        self.send(cmd).inspect_err(|_| {
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        })
    }

    /// True while a write failed for lack of space and is being retried (writes are refused).
    pub fn storage_full(&self) -> bool {
        self.shared.storage_full.load(Ordering::Acquire)
    }

    /// Why the raft thread stopped for good (a storage fault or a panic), if it did.
    pub fn fatal_reason(&self) -> Option<String> {
        self.shared.fatal.get().cloned()
    }

    /// Resolves once the raft thread has stopped for good, with the reason. The server selects
    /// on it to close connections and exit non-zero.
    pub async fn fatal_error(&self) -> String {
        let mut rx = self.shared.fatal_tx.subscribe();
        // The sender lives in `Shared`, which this handle keeps alive: `wait_for` can only
        // return an error if it were dropped, which cannot happen while `self` exists.
        let _ = rx.wait_for(|set| *set).await;
        self.fatal_reason()
            .unwrap_or_else(|| "raft thread stopped".to_string())
    }

    /// Whether this node currently leads (only a leader accepts writes).
    pub fn is_leader(&self) -> bool {
        self.shared.is_leader.load(Ordering::Acquire)
    }

    /// Current leader's id, 0 if unknown.
    pub fn leader_id(&self) -> u64 {
        self.shared.leader_id.load(Ordering::Acquire)
    }

    /// The current Raft term.
    pub fn term(&self) -> u64 {
        self.shared.term.load(Ordering::Acquire)
    }

    /// True when this node leads and has applied every entry committed before its term.
    pub fn is_caught_up_leader(&self) -> bool {
        self.shared.is_leader.load(Ordering::Acquire)
            && self.shared.caught_up.load(Ordering::Acquire)
    }

    /// Highest index known committed on this node (on a follower: as learned from the
    /// leader's messages). May run ahead of [`RaftHandle::applied_index`].
    pub fn commit_index(&self) -> u64 {
        self.shared.commit.load(Ordering::Acquire)
    }

    /// This node's current role in the group.
    pub fn role(&self) -> NodeRole {
        NodeRole::from_u8(self.shared.role.load(Ordering::Acquire))
    }

    /// Whether this node may serve clients: a leader is known, and either this node is a
    /// caught-up leader (raft-rs `check_quorum` steps a leader down once it loses its
    /// quorum), or it is a follower/learner that heard from that leader within the election
    /// timeout and has applied everything the leader had committed when it answered this
    /// node's freshness probe (a ReadIndex sent after each leader change and after each loss
    /// of contact; resent every 100 ms until answered) and everything its appends reported
    /// since (ClickHouse BecomeFresh; ZooKeeper closes clients in Learner.shutdown).
    /// The server refuses handshakes and closes client connections while this is false, so a
    /// partitioned follower does not keep clients whose sessions the leader expires.
    pub fn is_fresh(&self) -> bool {
        if self.shared.fatal.get().is_some()
            || !self.shared.caught_up_with_leader.load(Ordering::Acquire)
        {
            return false;
        }
        if self.is_leader() {
            return self.shared.caught_up.load(Ordering::Acquire)
                && self
                    .since_leader_contact()
                    .is_some_and(|d| d <= self.shared.election_timeout);
        }
        self.since_leader_contact()
            .is_some_and(|d| d <= self.shared.election_timeout)
    }

    /// Time since the last message (MsgAppend, MsgHeartbeat, MsgSnapshot) from a leader
    /// (right after a leader change, until the new leader's first message, that is the old
    /// leader's); on the leader itself, the time since its raft thread last turned; `None` if
    /// this node never heard from a leader.
    /// The server closes its clients once this exceeds [`RaftHandle::election_timeout`] (which
    /// [`RaftHandle::is_fresh`] already includes).
    pub fn since_leader_contact(&self) -> Option<Duration> {
        if self.is_leader() {
            // The leader is its own contact, as long as its raft thread runs.
            let turned = *self.shared.turned_at.lock();
            return Some(turned.map_or(Duration::ZERO, |t| t.elapsed()));
        }
        let at = *self.shared.leader_contact.lock();
        at.map(|t| t.elapsed())
    }

    /// `election_tick × tick_interval`, the leader silence after which a follower is no
    /// longer fresh (and the session extension a new leader grants in
    /// `SessionTracker::promote`).
    pub fn election_timeout(&self) -> Duration {
        self.shared.election_timeout
    }

    /// This node's linearizable read barrier (for `sync` and resume checks): one per node,
    /// shared by every caller. See [`ReadBarrier`].
    pub fn read_barrier(&self) -> ReadBarrier {
        ReadBarrier::new(self.clone())
    }

    /// The leader's quorum metrics (synced members, pending ReadIndex requests, uptime,
    /// proposal sizes); [`QuorumStatus::default`] unless this node leads.
    pub fn quorum_status(&self) -> QuorumStatus {
        self.shared.quorum.lock().clone()
    }

    /// Highest log index handed to the state machine.
    pub fn applied_index(&self) -> u64 {
        self.shared.applied.load(Ordering::Acquire)
    }

    /// Every member of the applied configuration (voters, outgoing voters while a joint
    /// configuration is in force, learners), as of the last conf change, snapshot or start.
    /// The peer address book must keep them all: `/zookeeper/config` lists only the incoming
    /// configuration, and a joint one still needs its outgoing voters.
    pub fn members(&self) -> Vec<u64> {
        self.shared.members.lock().clone()
    }

    /// Index of the newest durable snapshot (0 if none).
    pub fn snapshot_index(&self) -> u64 {
        self.shared.snapshot_index.load(Ordering::Acquire)
    }

    /// The raft thread's histograms, for `/metrics`.
    pub fn histograms(&self) -> RaftHistograms {
        RaftHistograms {
            batch_entries: self.shared.storage.batch_entries.snapshot(),
            commit_latency: self.shared.storage.commit_latency.snapshot(),
            flush_latency: self.shared.storage.flush_latency.snapshot(),
            snapshot_pauses: self.shared.snapshot_pauses.snapshot(),
            snapshot_durations: self.shared.snapshot_durations.snapshot(),
        }
    }

    /// Counters for metrics (`mntr`) and tests.
    pub fn stats(&self) -> RaftStats {
        RaftStats {
            write_txns: self.shared.storage.write_txns.load(Ordering::Relaxed),
            entries_appended: self.shared.storage.entries_appended.load(Ordering::Relaxed),
            syncs: self.shared.storage.syncs.load(Ordering::Relaxed),
            snapshots_taken: self.shared.snapshots_taken.load(Ordering::Relaxed),
            snapshot_failures: self.shared.snapshot_failures.load(Ordering::Relaxed),
            applied_ahead: self.shared.applied_ahead.load(Ordering::Relaxed),
            snapshots_installed: self.shared.snapshots_installed.load(Ordering::Relaxed),
            snapshot_pause_us: self.shared.snapshot_pause_us.load(Ordering::Relaxed),
        }
    }

    /// Asks the raft thread to take a snapshot now (if anything was applied since the last).
    pub fn request_snapshot(&self) -> Result<(), RaftError> {
        self.send(Command::Snapshot)
    }

    /// Starts handing leadership to voter `to`, or with `None` (on the leader only) to the
    /// most caught-up active voter: raft-rs `transfer_leader` (the leader brings the target's
    /// log up to date, then sends it MsgTimeoutNow; it campaigns at once, in term + 1). A
    /// follower forwards a transfer to itself to its leader, and refuses any other. The answer names the target; the
    /// move itself shows in [`RaftHandle::leader_id`] / [`RaftHandle::term`], and raft-rs
    /// abandons it after an election timeout. Writes proposed meanwhile are dropped (their
    /// clients get ConnectionLoss).
    pub fn transfer_leader(
        &self,
        to: Option<u64>,
    ) -> tokio::sync::oneshot::Receiver<Result<u64, TransferError>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let command = Command::TransferLeader {
            to: to.unwrap_or(0),
            reply,
        };
        if let Err(mpsc::SendError(Command::TransferLeader { reply, .. })) = self.tx.send(command) {
            let _ = reply.send(Err(TransferError::Stopped));
        }
        rx
    }

    /// Stop the thread after finishing the current Ready; join via the JoinHandle.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }

    /// Simulates a crash: the thread exits without flushing anything still held in memory.
    #[cfg(test)]
    fn crash_for_test(&self) {
        let _ = self.tx.send(Command::Crash);
    }

    /// Feeds an inbound message from a peer.
    pub fn step(&self, msg: Message) -> Result<(), RaftError> {
        self.send(Command::Step(Box::new(msg)))
    }

    /// Starts a linearizable read barrier; the answer arrives as
    /// `StateMachine::on_read_index(ctx, index)`. `ctx` must be unique per request. Works on
    /// any node: a follower or learner forwards the request to the leader (raft-rs).
    ///
    /// The request can be **dropped silently**: with no known leader, when the leader that
    /// received it is deposed, or by a new leader that has not yet committed an entry in its
    /// term (raft.rs). Callers must resend and time out; [`ReadBarrier`] does both.
    pub fn read_index(&self, ctx: Vec<u8>) -> Result<(), RaftError> {
        self.send(Command::ReadIndex(ctx))
    }

    /// Transport feedback: a message to `peer` could not be delivered.
    pub fn report_unreachable(&self, peer: u64) -> Result<(), RaftError> {
        self.send(Command::ReportUnreachable(peer))
    }

    /// Transport feedback after sending a snapshot (Raft pauses the peer until this arrives).
    pub fn report_snapshot(&self, peer: u64, status: SnapshotStatus) -> Result<(), RaftError> {
        self.send(Command::ReportSnapshot(peer, status))
    }

    /// Transport news: `peer` closed the connection it sends to us on (EOF or reset), as its
    /// kernel does when the process dies. If `peer` is our leader, this follower campaigns
    /// after a tick or a few instead of waiting out a whole election timeout, as a ZooKeeper
    /// follower goes LOOKING as soon as its leader's socket closes. A live leader's next
    /// message cancels that, and pre-vote keeps a premature campaign from disturbing it.
    pub fn peer_connection_closed(&self, peer: u64) -> Result<(), RaftError> {
        self.send(Command::PeerConnectionClosed(peer))
    }
}

impl GroupOptions {
    fn validate(&self, opts: &RaftOptions) -> Result<(), RaftError> {
        let bad = |m: &str| Err(RaftError::InvalidOptions(m.to_string()));
        if self.heartbeat_tick == 0 {
            return bad("heartbeat_tick must be > 0");
        }
        if self.election_tick <= self.heartbeat_tick {
            return bad("election_tick must be greater than heartbeat_tick");
        }
        if self.learners.contains(&0) {
            return bad("learners must not contain 0");
        }
        if self.learners.iter().any(|l| opts.voters.contains(l)) {
            return bad("a node cannot be both a voter and a learner");
        }
        if opts.voters.is_empty() && !self.learners.is_empty() {
            return bad("learners need at least one voter (a joiner gives neither)");
        }
        if !opts.voters.is_empty()
            && !opts.voters.contains(&opts.node_id)
            && !self.learners.contains(&opts.node_id)
        {
            return bad("node_id must be one of the voters or learners (or give neither, to join)");
        }
        Ok(())
    }
}

impl RaftOptions {
    fn validate(&self) -> Result<(), RaftError> {
        let bad = |m: &str| Err(RaftError::InvalidOptions(m.to_string()));
        if self.node_id == 0 {
            return bad("node_id must not be 0");
        }
        // Empty voters: a joiner that waits for the leader's log or snapshot.
        if self.voters.contains(&0) {
            return bad("voters must not contain 0");
        }
        if self.tick_interval.is_zero() {
            return bad("tick_interval must be > 0");
        }
        if self.snapshot_every == 0 {
            return bad("snapshot_every must be > 0");
        }
        if self.max_batch == 0 {
            return bad("max_batch must be > 0");
        }
        if self.max_batch_bytes == 0
            || self.max_uncommitted_bytes == 0
            || self.max_queued_bytes == 0
        {
            return bad("max_batch_bytes, max_uncommitted_bytes and max_queued_bytes must be > 0");
        }
        Ok(())
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
