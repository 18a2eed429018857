//! The raft thread: owns the `RawNode`, the LMDB log, the snapshot directory and the state
//! machine, and runs the tick / propose / Ready loop.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::{
    ConfChange, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType, SnapshotMetadata,
};
use raft::{Config, RawNode, StateRole, Storage as _};

use super::reconfig::Orchestrator;
use super::{
    barrier, Command, GroupOptions, NodeRole, RaftError, RaftOptions, Shared, StateMachine,
    Transport,
};
use crate::storage::{LmdbStorage, SnapshotDir};

/// Everything the raft thread owns.
pub(super) struct Node {
    /// raft-rs state machine over our LMDB storage.
    raw: RawNode<LmdbStorage>,
    /// The replicated application state (the tree, in the server).
    sm: Box<dyn StateMachine>,
    /// Snapshot files; written here, read back at startup and for lagging followers.
    snaps: SnapshotDir,
    /// Outbound messages to peers (no-op when standalone).
    transport: Box<dyn Transport>,
    /// State published to handles.
    shared: Arc<Shared>,
    /// Raft clock period.
    tick_interval: Duration,
    /// Applied entries between automatic snapshots.
    snapshot_every: u64,
    /// Log bytes appended between automatic snapshots (0: no byte bound).
    snapshot_bytes: u64,
    /// `StorageStats::bytes_appended` when the last snapshot was started.
    bytes_at_snapshot: u64,
    /// Max commands drained per loop turn (bounds one Ready's size).
    max_batch: usize,
    /// Max proposal bytes drained per loop turn (bounds one LMDB transaction's size).
    max_batch_bytes: usize,
    /// The command queue from every [`super::RaftHandle`].
    rx: Receiver<Command>,
    /// Commands that arrived while a write was stalled for lack of space and must not be
    /// lost (snapshot bookkeeping, transport feedback); handled once writes resume.
    deferred: VecDeque<Command>,
    /// Highest index given to the state machine (or restored from a snapshot).
    applied: u64,
    /// Term of the entry at `applied` (0 until an entry or snapshot is applied in this
    /// process): a leader is caught up once it applied an entry of its own term.
    applied_term: u64,
    /// Metadata of the newest durable snapshot; the log is compacted to it when the *next*
    /// snapshot is written, so the previous snapshot + log remain a fallback.
    newest_snapshot: Option<SnapshotMetadata>,
    /// Applied index at which writing a snapshot last failed; avoids retrying (and logging) on
    /// every loop turn while the disk is full, without giving up for good.
    snapshot_failed_at: Option<u64>,
    /// Last leadership state reported to the state machine.
    was_leader: bool,
    /// Lets the background snapshot writer report back to this thread.
    commands: std::sync::mpsc::Sender<Command>,
    /// A snapshot file is being written in the background; at most one at a time.
    snapshot_in_flight: bool,
    /// Readies handed back with `advance_append_async` whose writes are not known durable
    /// yet, oldest first. LMDB runs with `MDB_NOMETASYNC`, so a transaction is durable only
    /// once a later one commits (or after an explicit sync); until then Raft must not count
    /// its entries as persisted (that would let a sole voter commit and acknowledge them) and
    /// its persisted messages (votes, append acks) must not leave this node.
    unpersisted: VecDeque<Unpersisted>,
    /// A command taken off the queue only to learn whether more work is coming (whether the
    /// next turn's commit will flush the current one for free); handled first next turn.
    peeked: Option<Command>,
    /// This node's Raft id.
    id: u64,
    /// (leader id, term) last reported through `StateMachine::on_leader_change`.
    last_leader: (u64, u64),
    /// (leader id, term) whose messages `leader_commit` was learned from; freshness needs it
    /// to be the current leader (a commit index learned from a previous leader says nothing
    /// about what the new one committed).
    contact: (u64, u64),
    /// Highest commit index the current leader told this node (MsgAppend, MsgHeartbeat,
    /// MsgSnapshot) since the last leader change; a follower is fresh once applied reaches it.
    leader_commit: u64,
    /// The index a follower must have applied to count as fresh: the leader's commit index
    /// when the freshness probe was answered (and what earlier messages had told). Fixed per
    /// probe, not raised by every later append: a follower that applies continuously under
    /// load is always a little behind the newest commit it heard of, and must not flap to
    /// "not fresh" (refusing handshakes, closing clients) because of that.
    fresh_at: u64,
    /// The leader or term moved: resend the read barrier's request at once.
    barrier_force: bool,
    /// The freshness probe in flight: a ReadIndex asking the current leader for its commit
    /// index (heartbeats only carry `min(matched, commit)`, so a follower that fell behind
    /// cannot tell it is behind from them): (seq, the (leader, term) it asks, when sent).
    probe: Option<(u64, (u64, u64), Instant)>,
    /// Sequence numbers of freshness probes.
    probe_seq: u64,
    /// The (leader, term) whose commit index a probe answered; freshness requires the current
    /// one. Reset when contact with the leader is lost for an election timeout, or when no
    /// probe was answered for two (see `probe_ok_at`).
    probe_for: (u64, u64),
    /// When a freshness probe was last answered. Probes repeat every half election timeout:
    /// hearing the leader is not enough, the leader must hear us too. A follower whose own
    /// messages do not reach the leader (a one-way cut) still gets heartbeats whose commit
    /// index is capped at what it acknowledged, so it looks up to date while the leader has
    /// moved on, and expired its sessions, without it.
    probe_ok_at: Option<Instant>,
    /// Membership changes this node carries out as leader (reconfig).
    reconfig: Orchestrator,
    /// Set by `Command::Crash`: leave the loop without the orderly shutdown.
    #[cfg(test)]
    crashed: bool,
}

/// First wait before retrying a write that failed for lack of space.
const FULL_RETRY_MIN: Duration = Duration::from_millis(20);
/// Longest wait between retries: once space is freed, writes resume within about this long.
const FULL_RETRY_MAX: Duration = Duration::from_millis(500);

/// How often an unanswered freshness probe is resent.
const PROBE_RESEND: Duration = Duration::from_millis(100);
/// Prefix of freshness-probe ReadIndex contexts (never handed to the state machine).
const PROBE_MAGIC: &[u8; 4] = b"RFSH";

/// A Ready whose LMDB writes may not be durable yet.
struct Unpersisted {
    /// `Ready::number`, for `RawNode::on_persist_ready`.
    number: u64,
    /// LMDB transaction that must be durable first: the one holding this Ready's writes, or the
    /// newest one at the time for a Ready that wrote nothing (Readies persist in order).
    txn: usize,
    /// `Ready::persisted_messages`: may only be sent once this Ready is durable.
    messages: Vec<Message>,
    /// First and last index of the entries this Ready appended, if any: if a later write
    /// stalls on a full disk, their clients are told (they would wait for the stall's end).
    appended: Option<(u64, u64)>,
}

fn meta(index: u64, term: u64, conf_state: ConfState) -> SnapshotMetadata {
    let mut m = SnapshotMetadata {
        index,
        term,
        ..Default::default()
    };
    m.set_conf_state(conf_state);
    m
}

impl Node {
    pub(super) fn init(
        opts: RaftOptions,
        group: GroupOptions,
        mut sm: Box<dyn StateMachine>,
        transport: Box<dyn Transport>,
        shared: Arc<Shared>,
        commands: std::sync::mpsc::Sender<Command>,
        rx: Receiver<Command>,
    ) -> Result<Node, RaftError> {
        let snaps = SnapshotDir::open(opts.data_dir.join("snapshots"))?;
        let mut storage = LmdbStorage::open(&opts.data_dir.join("raft"), Some(snaps.clone()))?;
        storage.use_stats(shared.storage.clone());
        // A streaming transport gets descriptors of snapshot files, never whole images.
        storage.set_snapshot_by_reference(transport.streams_snapshots());

        if storage.is_fresh() {
            let cs = ConfState {
                voters: opts.voters.clone(),
                learners: group.learners.clone(),
                ..Default::default()
            };
            storage.bootstrap(cs)?;
            if opts.voters.is_empty() {
                tracing::info!(
                    node_id = opts.node_id,
                    "joining an existing raft group: no membership of our own, waiting for the leader"
                );
            } else {
                tracing::info!(
                    node_id = opts.node_id,
                    voters = ?opts.voters,
                    learners = ?group.learners,
                    "bootstrapped new raft group"
                );
            }
        } else if !opts.voters.is_empty() && storage.initial_conf_state().voters != opts.voters {
            tracing::warn!(
                configured = ?opts.voters,
                on_disk = ?storage.initial_conf_state().voters,
                "configured voters differ from the bootstrapped group; using membership from disk"
            );
        }

        let compacted_to = storage.snapshot_metadata().index;
        // Verified by streaming, and restored from the file below: never a whole image in RAM.
        let restored = match snaps
            .newest_valid_header()?
            .map(|(h, path)| StartupSnapshot {
                index: h.index,
                term: h.term,
                conf_state: h.conf_state,
                path,
            }) {
            None if compacted_to == 0 => None,
            None => {
                return Err(RaftError::MissingHistory {
                    compacted_to,
                    newest_valid: None,
                })
            }
            Some(s) if s.index < compacted_to => {
                return Err(RaftError::MissingHistory {
                    compacted_to,
                    newest_valid: Some(s.index),
                })
            }
            Some(s) => Some(s),
        };

        let mut newest_snapshot = None;
        let applied = match restored {
            Some(snap) => {
                let m = meta(snap.index, snap.term, snap.conf_state.clone());
                match storage.term(snap.index) {
                    Ok(t) if t == snap.term => {
                        // Raft requires applied <= commit; the on-disk commit can lag (it is
                        // written lazily), but everything in a snapshot was committed.
                        if snap.index > storage.hard_state().commit {
                            storage.ensure_commit(snap.index)?;
                        }
                    }
                    _ => {
                        // The snapshot is beyond or disagrees with our log: a snapshot received
                        // from a leader whose LMDB transaction did not commit before a crash.
                        // The snapshot is authoritative; the log restarts after it.
                        tracing::warn!(
                            index = snap.index,
                            term = snap.term,
                            last_index = storage.last_index_cached(),
                            "snapshot is not covered by the local log; discarding the log"
                        );
                        storage.write_ready(&[], None, Some(&m))?;
                    }
                }
                storage.set_replay_conf_state(snap.conf_state.clone());
                restore_from_file(sm.as_mut(), &snaps, snap.index, &snap.path)?;
                tracing::info!(index = snap.index, term = snap.term, path = %snap.path.display(), "restored snapshot");
                newest_snapshot = Some(m);
                snap.index
            }
            None => {
                let cs = storage.initial_conf_state().clone();
                storage.set_replay_conf_state(cs);
                0
            }
        };
        // Startup writes (bootstrap, a raised commit index, a discarded log) must be durable
        // before Raft treats what it reads from storage as persisted.
        storage.sync()?;
        let start_cs = storage.conf_state().clone();
        tracing::info!(
            index = applied,
            term = storage.hard_state().term,
            commit = storage.hard_state().commit,
            last_index = storage.last_index_cached(),
            "raft log opened; committed entries after the snapshot will be replayed"
        );

        let cfg = Config {
            id: opts.node_id,
            election_tick: group.election_tick,
            heartbeat_tick: group.heartbeat_tick,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            // Bounds what a leader holds appended but uncommitted; a proposal beyond it is
            // refused (ProposalDropped) and its client gets ConnectionLoss.
            max_uncommitted_size: opts.max_uncommitted_bytes,
            pre_vote: true,
            check_quorum: true,
            ..Default::default()
        };
        cfg.validate()?;
        let mut raw = RawNode::new(&cfg, storage, &super::logger::logger(opts.node_id))?;
        // Taken before a sole voter's campaign, so that its leadership is reported too.
        let last_leader = (raw.raft.leader_id, raw.raft.term);
        let sole_voter = start_cs.voters == [opts.node_id]
            && start_cs.voters_outgoing.is_empty()
            && start_cs.learners.is_empty();
        if sole_voter {
            // No peer can outvote us; skip the randomized election timeout.
            raw.campaign()?;
        }

        shared.applied.store(applied, Ordering::Release);
        shared.snapshot_index.store(applied, Ordering::Release);
        publish_members(&shared, raw.store().conf_state());
        Ok(Node {
            id: opts.node_id,
            last_leader,
            contact: (0, 0),
            leader_commit: 0,
            fresh_at: 0,
            barrier_force: false,
            probe: None,
            probe_seq: 0,
            probe_for: (0, 0),
            probe_ok_at: None,
            raw,
            sm,
            snaps,
            transport,
            shared,
            tick_interval: opts.tick_interval,
            snapshot_every: opts.snapshot_every,
            snapshot_bytes: opts.snapshot_bytes,
            bytes_at_snapshot: 0,
            max_batch: opts.max_batch,
            max_batch_bytes: opts.max_batch_bytes,
            rx,
            deferred: VecDeque::new(),
            applied,
            applied_term: 0,
            newest_snapshot,
            snapshot_failed_at: None,
            was_leader: false,
            commands,
            snapshot_in_flight: false,
            unpersisted: VecDeque::new(),
            peeked: None,
            reconfig: Orchestrator::new(
                group.catch_up_timeout,
                opts.tick_interval
                    .saturating_mul(u32::try_from(2 * group.election_tick).unwrap_or(u32::MAX)),
            ),
            #[cfg(test)]
            crashed: false,
        })
    }

    pub(super) fn run(mut self) {
        let mut next_tick = Instant::now() + self.tick_interval;
        let mut stopping = false;
        loop {
            #[cfg(test)]
            if self.crashed {
                return;
            }
            // Failpoint builds only: the raft thread stalls while the named file exists, and
            // the rest of the process goes on serving (the fault suite's finding 5; a test
            // stalls one member with `raft-stall-while-file=return(<path>)`).
            #[cfg(feature = "failpoints")]
            if let Some(Some(path)) = fail::eval("raft-stall-while-file", |arg| arg) {
                if std::path::Path::new(&path).exists() {
                    tracing::warn!(path, "failpoint raft-stall-while-file: raft thread stalled");
                    while std::path::Path::new(&path).exists() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            let mut snapshot_requested = false;
            // Transactions committed from here on make everything written before durable.
            let txn_at_start = self.raw.store().written_txn();
            // Work already pending (e.g. the Ready of the campaign at startup) must not wait
            // for the next tick.
            let timeout = if self.peeked.is_some()
                || !self.deferred.is_empty()
                || !self.unpersisted.is_empty()
                || self.raw.has_ready()
            {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
            let first = match self.peeked.take().or_else(|| self.deferred.pop_front()) {
                Some(cmd) => Ok(cmd),
                None => self.rx.recv_timeout(timeout),
            };
            let turn_started = Instant::now();
            let mut idle = false;
            match first {
                Ok(cmd) => {
                    let mut bytes = proposal_bytes(&cmd);
                    self.handle(cmd, &mut stopping, &mut snapshot_requested);
                    // Drain what queued up meanwhile (e.g. during the last fsync) so it is all
                    // persisted by the next Ready's single write transaction; bounded in count
                    // and in bytes, so one transaction stays a bounded amount of I/O.
                    for _ in 1..self.max_batch {
                        if bytes >= self.max_batch_bytes {
                            break;
                        }
                        match self.rx.try_recv() {
                            Ok(cmd) => {
                                bytes = bytes.saturating_add(proposal_bytes(&cmd));
                                self.handle(cmd, &mut stopping, &mut snapshot_requested);
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                stopping = true;
                                break;
                            }
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => idle = true,
                Err(RecvTimeoutError::Disconnected) => stopping = true,
            }
            // A crash strikes right here, between two commits: nothing more gets written or
            // flushed, so the newest transaction may be one a power failure can take back.
            #[cfg(test)]
            if self.crashed {
                return;
            }
            let handled = turn_started.elapsed();
            let turn = self
                .tick_if_due(&mut next_tick)
                .and_then(|()| self.on_ready())
                .and_then(|()| {
                    let readied = turn_started.elapsed();
                    self.settle(txn_at_start).map(|()| readied)
                })
                .and_then(|readied| {
                    // A log with nothing else to write deletes what a compaction left behind
                    // a chunk per idle turn (busy, every transaction carries a chunk).
                    if idle && !self.raw.has_ready() {
                        self.raw.mut_store().purge_step()?;
                    }
                    Ok(readied)
                });
            let settled = turn_started.elapsed();
            let readied = turn.as_ref().map_or(settled, |readied| *readied);
            let turn = turn.map(|_| ());
            match turn {
                Ok(()) => {
                    let caught_up = self.shared.caught_up.load(Ordering::Acquire);
                    let snapshot_index = self.newest_snapshot.as_ref().map_or(0, |m| m.index);
                    if self.reconfig.drive(
                        &mut self.raw,
                        self.sm.as_mut(),
                        caught_up,
                        snapshot_index,
                    ) || self.snapshot_misses_a_member()
                    {
                        snapshot_requested = true;
                    }
                    // A step without a Ready (rare) can still move freshness.
                    self.publish_status();
                    if std::mem::take(&mut self.barrier_force) {
                        self.drive_barrier(true);
                    }
                }
                // Shutdown (or a test crash) while a write was stalled for lack of space.
                Err(RaftError::Stopped) => break,
                Err(e) => {
                    // Without durable persistence we may not acknowledge anything further:
                    // stop, and let the server exit (fail-stop).
                    tracing::error!(
                        error = %e,
                        index = self.applied,
                        "fatal error; raft thread stopping, server will exit"
                    );
                    let what = if matches!(e, RaftError::Apply { .. }) {
                        "fatal apply error"
                    } else {
                        "fatal storage error"
                    };
                    let reason = format!("{what} at index {}: {e}", self.applied);
                    self.fail_stop(reason);
                    return;
                }
            }
            let driven = turn_started.elapsed();
            if let Err(e) = self.maybe_snapshot(snapshot_requested) {
                tracing::error!(error = %e, index = self.applied, "snapshot failed; will retry later");
                self.snapshot_failed_at = Some(self.applied);
            }
            self.note_slow_turn(TurnTimes {
                handled,
                readied,
                settled,
                driven,
                total: turn_started.elapsed(),
            });
            if stopping {
                break;
            }
        }
        #[cfg(test)]
        if self.crashed {
            return;
        }
        self.stop();
    }

    /// Logs a loop turn long enough to cost heartbeats (half an election timeout), with where
    /// its time went: a stalled raft thread lets followers elect another leader while this
    /// process goes on serving, so each one must be explainable from the log.
    fn note_slow_turn(&self, times: TurnTimes) {
        if times.total < self.shared.election_timeout / 2 {
            return;
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        tracing::warn!(
            total_ms = ms(times.total),
            commands_ms = ms(times.handled),
            ready_ms = ms(times.readied.saturating_sub(times.handled)),
            flush_ms = ms(times.settled.saturating_sub(times.readied)),
            reconfig_ms = ms(times.driven.saturating_sub(times.settled)),
            snapshot_ms = ms(times.total.saturating_sub(times.driven)),
            index = self.applied,
            term = self.raw.raft.term,
            "slow raft loop turn"
        );
    }

    /// On a leader: whether the newest snapshot leaves out a current member (one added since,
    /// e.g. by a reconfig whose leader died before it snapshotted). raft-rs sends that
    /// snapshot to a member that needs one, which refuses it for not listing it, forever; so a
    /// new snapshot is due (with an empty entry when there is nothing new to snapshot).
    fn snapshot_misses_a_member(&mut self) -> bool {
        if self.raw.raft.state != StateRole::Leader {
            return false;
        }
        let Some(newest) = &self.newest_snapshot else {
            return false;
        };
        let listed = newest.get_conf_state();
        let cs = self.raw.store().conf_state();
        let missing = cs.voters.iter().chain(&cs.learners).any(|id| {
            !listed.voters.contains(id)
                && !listed.learners.contains(id)
                && !listed.voters_outgoing.contains(id)
                && !listed.learners_next.contains(id)
        });
        if missing {
            let log = &self.raw.raft.raft_log;
            if log.applied <= newest.index && log.last_index() == log.applied {
                let _ = self.raw.propose(Vec::new(), Vec::new());
            }
        }
        missing
    }

    /// Fails every proposal still queued (peeked, deferred or in the channel) so its client
    /// sees ConnectionLoss at once instead of waiting for a timeout.
    fn fail_queued_proposals(&mut self) {
        let queued: Vec<Command> = self
            .peeked
            .take()
            .into_iter()
            .chain(self.deferred.drain(..))
            .chain(self.rx.try_iter())
            .collect();
        for cmd in queued {
            if let Command::Propose(data) | Command::ProposeAsLeader(_, data) = cmd {
                self.shared.dequeued(data.len());
                self.sm.proposal_dropped(&data);
            }
        }
    }

    /// After a fatal error: publish it, fail queued proposals, and leave without touching the
    /// storage again (after a failed fsync nothing more may be counted durable).
    fn fail_stop(mut self, reason: String) {
        // Also fails the read barrier's waiters.
        self.shared.set_fatal(reason);
        if self.was_leader {
            self.sm.on_role_change(false, self.raw.raft.term);
        }
        self.fail_queued_proposals();
    }

    /// Runs a storage write, retrying it with backoff for as long as it fails for lack of space
    /// (the same write: raft-rs's in-memory state already assumes it will happen). Meanwhile
    /// `storage_full` is published, so new proposals are refused; the condition is logged once
    /// when it starts and once when it ends. Returns [`RaftError::Stopped`] if a shutdown
    /// arrives while waiting, and any other error at once.
    fn retry_while_full<T>(
        &mut self,
        what: &'static str,
        mut write: impl FnMut(&mut Self) -> Result<T, RaftError>,
        on_stall: impl FnOnce(&mut Self),
    ) -> Result<T, RaftError> {
        let mut on_stall = Some(on_stall);
        let mut stalled_since: Option<Instant> = None;
        let mut backoff = FULL_RETRY_MIN;
        let mut attempts: u64 = 0;
        loop {
            match write(self) {
                Ok(v) => {
                    if let Some(since) = stalled_since {
                        self.shared.storage_full.store(false, Ordering::Release);
                        tracing::warn!(
                            what,
                            index = self.applied,
                            attempts,
                            stalled_ms = since.elapsed().as_millis() as u64,
                            "storage has room again; writes resume"
                        );
                    }
                    return Ok(v);
                }
                Err(e) if e.is_storage_full() => {
                    attempts += 1;
                    if stalled_since.is_none() {
                        stalled_since = Some(Instant::now());
                        self.shared.storage_full.store(true, Ordering::Release);
                        if let Some(f) = on_stall.take() {
                            f(self);
                        }
                        tracing::error!(
                            error = %e,
                            what,
                            index = self.applied,
                            "storage full: writes are refused and retried until space is freed; \
                             reads, pings and watches continue"
                        );
                    }
                    self.wait_while_stalled(backoff)?;
                    backoff = (backoff * 2).min(FULL_RETRY_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A write of this leader's new entries stalled: close their clients' connections now
    /// (ConnectionLoss: the outcome is unknown, and the entries may still commit once space is
    /// freed). Otherwise each would wait, with everything it pipelined behind it, for as long as
    /// the disk stays full. Only a leader's new entries are its own proposals.
    ///
    /// The same goes for the entries of earlier Readies that are written but not yet durable:
    /// they would become durable with the stalled commit, so their clients would hang too. They
    /// are read back from LMDB (reads work on a full disk).
    fn drop_own_entries(&mut self, entries: &[Entry]) {
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        let ranges: Vec<(u64, u64)> = self.unpersisted.iter().filter_map(|u| u.appended).collect();
        let mut earlier = Vec::new();
        for (first, last) in ranges {
            match self.raw.store().entries(
                first,
                last + 1,
                None,
                raft::GetEntriesContext::empty(false),
            ) {
                Ok(es) => earlier.extend(es),
                // Their clients then wait for the stall to end, as before: no worse.
                Err(error) => {
                    tracing::warn!(%error, first, last, "cannot read back unpersisted entries");
                }
            }
        }
        let mut dropped = 0usize;
        // Entries already applied (committed by the followers, see `apply_committed_ahead`)
        // were answered: their fate is known.
        for e in earlier
            .iter()
            .chain(entries)
            .filter(|e| e.index > self.applied)
        {
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                self.sm.proposal_dropped(&e.data);
                dropped += 1;
            }
        }
        tracing::debug!(
            dropped,
            "closed the connections of writes caught by the stall"
        );
    }

    /// Waits `wait` between two retries of a stalled write, still taking commands: proposals
    /// are refused at once (their clients get ConnectionLoss instead of hanging), peer messages
    /// and read barriers are dropped (peers retransmit, readers time out), a shutdown ends the
    /// wait, and everything else is kept for later.
    fn wait_while_stalled(&mut self, wait: Duration) -> Result<(), RaftError> {
        let deadline = Instant::now() + wait;
        // Bounded by the deadline; each round handles one command.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match self.rx.recv_timeout(left) {
                Ok(Command::Propose(data) | Command::ProposeAsLeader(_, data)) => {
                    self.shared.dequeued(data.len());
                    self.sm.proposal_dropped(&data);
                }
                Ok(Command::Shutdown) => return Err(RaftError::Stopped),
                Ok(Command::Step(_) | Command::ReadIndex(_)) => {}
                #[cfg(test)]
                Ok(Command::Crash) => {
                    self.handle(Command::Crash, &mut false, &mut false);
                    return Err(RaftError::Stopped);
                }
                Ok(other) => self.deferred.push_back(other),
                Err(RecvTimeoutError::Timeout) => return Ok(()),
                Err(RecvTimeoutError::Disconnected) => return Err(RaftError::Stopped),
            }
        }
    }

    fn tick_if_due(&mut self, next_tick: &mut Instant) -> Result<(), RaftError> {
        if Instant::now() < *next_tick {
            return Ok(());
        }
        if self.raw.raft.state != StateRole::Leader {
            // A tick can start an election, and a sole voter wins it on the spot; raft-rs
            // requires the whole log to be persisted by then (it asserts in become_leader).
            self.persist_all()?;
        }
        self.raw.tick();
        *next_tick = Instant::now() + self.tick_interval;
        self.check_leader_contact();
        self.drive_barrier(false);
        Ok(())
    }

    /// Read barrier upkeep: completes applied waiters and (re)sends its ReadIndex when due
    /// (every tick checks the [`super::READ_RESEND`] timer; `force` after a leader change).
    fn drive_barrier(&mut self, force: bool) {
        let ctx = self
            .shared
            .barrier
            .lock()
            .poll(Instant::now(), self.applied, force);
        if let Some(ctx) = ctx {
            tracing::debug!(
                index = self.applied,
                term = self.raw.raft.term,
                leader = self.raw.raft.leader_id,
                force,
                "read barrier: (re)sending ReadIndex"
            );
            self.raw.read_index(ctx);
        }
    }

    /// Sends a freshness probe to `leader` unless one for it went out recently (a new leader
    /// drops ReadIndex before its first commit in the term, hence the resends).
    fn maybe_probe(&mut self, leader: (u64, u64)) {
        if self
            .probe
            .is_some_and(|(_, to, sent)| to == leader && sent.elapsed() < PROBE_RESEND)
        {
            return;
        }
        self.probe_seq = self.probe_seq.wrapping_add(1);
        self.probe = Some((self.probe_seq, leader, Instant::now()));
        let mut ctx = PROBE_MAGIC.to_vec();
        ctx.extend_from_slice(&self.probe_seq.to_be_bytes());
        tracing::debug!(
            leader_id = leader.0,
            term = leader.1,
            index = self.applied,
            "freshness probe: asking the leader for its commit index"
        );
        self.raw.read_index(ctx);
    }

    /// A ReadIndex answer: the freshness probe's (true) or somebody else's (false).
    fn probe_answered(&mut self, ctx: &[u8], index: u64) -> bool {
        let Some(rest) = ctx.strip_prefix(PROBE_MAGIC.as_slice()) else {
            return false;
        };
        let seq = <[u8; 8]>::try_from(rest).map(u64::from_be_bytes).ok();
        if let Some((want, leader, _)) = self.probe {
            if seq == Some(want) && leader == (self.raw.raft.leader_id, self.raw.raft.term) {
                let renewal = self.probe_for == leader;
                self.probe = None;
                self.probe_for = leader;
                self.probe_ok_at = Some(Instant::now());
                self.leader_commit = self.leader_commit.max(index);
                // A renewal proves the round trip; it does not move the bar (see `fresh_at`).
                if !renewal {
                    self.fresh_at = self.leader_commit;
                }
                tracing::debug!(
                    leader_id = leader.0,
                    term = leader.1,
                    index,
                    applied = self.applied,
                    "freshness probe answered"
                );
            }
        }
        true
    }

    /// Each tick: a follower that has not heard from its leader for an election timeout is
    /// no longer fresh, and must probe the leader's commit index again once contact resumes.
    fn check_leader_contact(&mut self) {
        if self.raw.raft.state == StateRole::Leader || self.probe_for == (0, 0) {
            return;
        }
        let timeout = self.shared.election_timeout;
        let unheard = self
            .probe_ok_at
            .is_none_or(|t| t.elapsed() > timeout.saturating_mul(2));
        if unheard {
            tracing::info!(
                leader_id = self.raw.raft.leader_id,
                term = self.raw.raft.term,
                index = self.applied,
                "no freshness probe answered for two election timeouts (the leader does not \
                 hear us); not fresh"
            );
            self.probe_for = (0, 0);
            return;
        }
        let stale = self
            .shared
            .leader_contact
            .lock()
            .is_none_or(|t| t.elapsed() > timeout);
        if stale {
            tracing::info!(
                leader_id = self.raw.raft.leader_id,
                term = self.raw.raft.term,
                index = self.applied,
                "no message from the leader for an election timeout; not fresh"
            );
            self.probe_for = (0, 0);
        }
    }

    /// `peer` closed its connection to us. If it is our leader, it has most likely died (a
    /// killed process's sockets are closed by its kernel): bring the election forward to a
    /// tick or a few, staggered by this node's rank among the remaining voters so that two
    /// followers do not split the vote. The lease is given up too (elapsed ≥ the election
    /// timeout), so the other followers, which saw the same close, grant the (pre-)vote. If
    /// the leader is alive after all, its next message resets the timer, and pre-vote keeps
    /// the term unchanged until a quorum agrees that it is gone.
    fn leader_may_be_gone(&mut self, peer: u64) {
        {
            let raft = &self.raw.raft;
            if raft.state != StateRole::Follower || peer != raft.leader_id || !raft.promotable() {
                return;
            }
        }
        let cs = self.raw.store().conf_state();
        let mut others: Vec<u64> = cs
            .voters
            .iter()
            .chain(cs.voters_outgoing.iter())
            .copied()
            .filter(|id| *id != peer)
            .collect();
        others.sort_unstable();
        others.dedup();
        let raft = &mut self.raw.raft;
        let Some(rank) = others.iter().position(|id| *id == raft.id) else {
            return;
        };
        let timeout = raft.election_timeout();
        // raft-rs accepts a randomized timeout in [timeout, 2 × timeout).
        let Some(delay) = 1usize
            .checked_add(rank.saturating_mul(2))
            .filter(|d| *d < timeout)
        else {
            return;
        };
        let remaining = raft
            .randomized_election_timeout()
            .saturating_sub(raft.election_elapsed);
        if remaining <= delay {
            return; // the campaign is due this soon anyway
        }
        raft.set_randomized_election_timeout(timeout + delay);
        raft.election_elapsed = timeout;
        tracing::info!(
            leader_id = peer,
            term = raft.term,
            delay_ticks = delay,
            "leader closed its connection; campaigning early unless it speaks again"
        );
    }

    /// Notes a message from the current leader: leader contact time and the commit index it
    /// told us, for freshness.
    fn note_leader_message(&mut self, from: u64, term: u64, commit: u64) {
        let raft = &self.raw.raft;
        if raft.state == StateRole::Leader || from != raft.leader_id || term != raft.term {
            return;
        }
        let current = (raft.leader_id, raft.term);
        if self.contact != current {
            self.contact = current;
            self.leader_commit = commit;
        } else {
            self.leader_commit = self.leader_commit.max(commit);
        }
        *self.shared.leader_contact.lock() = Some(Instant::now());
    }

    /// Publishes role, commit index and freshness, and reports leader/term moves.
    fn publish_status(&mut self) {
        *self.shared.turned_at.lock() = Some(Instant::now());
        let raft = &self.raw.raft;
        let leader = (raft.leader_id, raft.term);
        let role = match raft.state {
            StateRole::Leader => NodeRole::Leader,
            StateRole::Candidate | StateRole::PreCandidate => NodeRole::Candidate,
            StateRole::Follower if self.raw.store().conf_state().learners.contains(&self.id) => {
                NodeRole::Learner
            }
            StateRole::Follower => NodeRole::Follower,
        };
        let committed = raft.raft_log.committed;
        let caught_up = self.shared.caught_up.load(Ordering::Acquire);
        let with_leader = leader.0 != 0
            && match role {
                NodeRole::Leader => caught_up,
                _ => {
                    self.contact == leader
                        && self.probe_for == leader
                        && self.applied >= self.fresh_at
                }
            };
        self.shared.role.store(role.to_u8(), Ordering::Release);
        self.shared.commit.store(committed, Ordering::Release);
        super::quorum::publish(raft, &self.shared, caught_up);
        self.shared
            .caught_up_with_leader
            .store(with_leader, Ordering::Release);
        let renew = self
            .probe_ok_at
            .is_none_or(|t| t.elapsed() > self.shared.election_timeout / 2);
        if leader.0 != 0 && role != NodeRole::Leader && (self.probe_for != leader || renew) {
            self.maybe_probe(leader);
        }
        if leader != self.last_leader {
            self.last_leader = leader;
            self.barrier_force = true;
            tracing::info!(
                leader_id = leader.0,
                term = leader.1,
                index = self.applied,
                commit = committed,
                "raft leader or term changed"
            );
            self.sm.on_leader_change(leader.0, leader.1);
        }
    }

    /// End of a loop turn: makes sure no Ready stays unpersisted while nothing else would
    /// flush it. Under load the next turn's commit does that for free (one fdatasync per
    /// commit, each acknowledging the previous batch); when the queue is empty, or this turn
    /// committed nothing, an explicit sync does (so an idle proposal waits for one commit plus
    /// one sync, as before).
    fn settle(&mut self, txn_at_start: usize) -> Result<(), RaftError> {
        let mut since = txn_at_start;
        // Bounded only as a livelock guard: after a sync, a second round is needed only when
        // applying produced new log writes (e.g. a leave-joint conf change entry).
        for _ in 0..8 {
            if self.unpersisted.is_empty() {
                return Ok(());
            }
            let wrote = self.raw.store().written_txn() != since;
            if wrote && self.more_work_queued() {
                return Ok(());
            }
            self.persist_all()?;
            since = self.raw.store().written_txn();
            self.on_ready()?;
        }
        Ok(())
    }

    /// Whether a command is waiting; keeps it in `peeked` for the next turn.
    fn more_work_queued(&mut self) -> bool {
        if self.peeked.is_some() || !self.deferred.is_empty() {
            return true;
        }
        match self.rx.try_recv() {
            Ok(cmd) => {
                self.peeked = Some(cmd);
                true
            }
            // A disconnect shows up again at the next recv and stops the loop.
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => false,
        }
    }

    /// Flushes the newest LMDB transaction (if needed) and tells Raft every Ready is persisted.
    fn persist_all(&mut self) -> Result<(), RaftError> {
        if self.unpersisted.is_empty() {
            return Ok(());
        }
        if self.raw.mut_store().sync()? {
            tracing::trace!(
                txn = self.raw.store().written_txn(),
                "flushed the newest raft log transaction"
            );
        }
        self.report_durable();
        Ok(())
    }

    /// Reports every Ready whose transaction is now durable to Raft and sends the messages
    /// that waited for it. Never early: see [`Node::unpersisted`].
    fn report_durable(&mut self) {
        let durable = self.raw.store().durable_txn();
        let mut newest = None;
        let mut messages = Vec::new();
        while let Some(u) = self.unpersisted.front() {
            if u.txn > durable {
                break;
            }
            if let Some(u) = self.unpersisted.pop_front() {
                newest = Some(u.number);
                messages.extend(u.messages);
            }
        }
        if let Some(number) = newest {
            self.raw.on_persist_ready(number);
        }
        if !messages.is_empty() {
            self.transport.send(messages);
        }
    }

    /// Handles one command, and logs it if it alone held the raft thread for half an election
    /// timeout (which command stalled a slow turn: see [`Node::note_slow_turn`]).
    fn handle(&mut self, cmd: Command, stopping: &mut bool, snapshot_requested: &mut bool) {
        let kind = command_kind(&cmd);
        let started = Instant::now();
        self.handle_command(cmd, stopping, snapshot_requested);
        let took = started.elapsed();
        if took >= self.shared.election_timeout / 2 {
            tracing::warn!(
                command = %kind,
                took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                index = self.applied,
                term = self.raw.raft.term,
                "slow raft command"
            );
        }
    }

    fn handle_command(&mut self, cmd: Command, stopping: &mut bool, snapshot_requested: &mut bool) {
        match cmd {
            Command::ProposeAsLeader(term, data) => {
                let raft = &self.raw.raft;
                let leads = raft.state == StateRole::Leader
                    && raft.term == term
                    && self.shared.caught_up.load(Ordering::Acquire);
                if leads {
                    self.handle(Command::Propose(data), stopping, snapshot_requested);
                } else {
                    self.shared.dequeued(data.len());
                    tracing::info!(
                        decided_in = term,
                        term = raft.term,
                        is_leader = raft.state == StateRole::Leader,
                        "dropped a leader-only proposal decided under an earlier leadership"
                    );
                }
            }
            Command::Propose(data) => {
                self.shared.dequeued(data.len());
                // raft-rs consumes the data even on failure; the copy lets the state machine
                // identify which waiting request to fail.
                if let Err(e) = self.raw.propose(Vec::new(), data.clone()) {
                    tracing::debug!(error = %e, "proposal dropped");
                    self.sm.proposal_dropped(&data);
                }
            }
            Command::Step(msg) => {
                if msg.get_msg_type() == MessageType::MsgTimeoutNow
                    && self.raw.raft.state != StateRole::Leader
                {
                    // Starts an election; like a tick, it needs the whole log persisted.
                    if let Err(e) = self.persist_all() {
                        tracing::error!(error = %e, "cannot persist before a leader transfer; ignoring it");
                        return;
                    }
                }
                let ty = msg.get_msg_type();
                let (from, term) = (msg.from, msg.term);
                if ty == MessageType::MsgSnapshot && !self.snapshot_message_ready(&msg) {
                    return;
                }
                let commit = match ty {
                    MessageType::MsgAppend | MessageType::MsgHeartbeat => Some(msg.commit),
                    MessageType::MsgSnapshot => {
                        Some(msg.commit.max(msg.get_snapshot().get_metadata().index))
                    }
                    _ => None,
                };
                if let Err(e) = self.raw.step(*msg) {
                    tracing::debug!(error = %e, "ignored raft message");
                } else if let Some(commit) = commit {
                    self.note_leader_message(from, term, commit);
                }
            }
            Command::ReadIndex(ctx) => self.raw.read_index(ctx),
            Command::Snapshot => *snapshot_requested = true,
            Command::SnapshotWritten {
                meta,
                result,
                bytes,
                started,
            } => self.snapshot_written(*meta, result, bytes, started),
            Command::ReportUnreachable(id) => self.raw.report_unreachable(id),
            Command::ReportSnapshot(id, status) => self.raw.report_snapshot(id, status),
            Command::PeerConnectionClosed(id) => self.leader_may_be_gone(id),
            Command::TransferLeader { to, reply } => {
                let _ = reply.send(self.transfer_leader(to));
            }
            Command::Shutdown => *stopping = true,
            #[cfg(test)]
            Command::Crash => {
                self.crashed = true;
                let store = self.raw.store();
                self.shared.unsynced_at_crash.store(
                    store.written_txn() != store.durable_txn(),
                    Ordering::Release,
                );
            }
        }
    }

    /// Starts a leadership transfer to `to`, or (0) to the best voter: see
    /// [`super::RaftHandle::transfer_leader`].
    fn transfer_leader(&mut self, to: u64) -> Result<u64, super::TransferError> {
        use super::TransferError;
        let raft = &self.raw.raft;
        let leader = raft.leader_id;
        if leader == raft::INVALID_ID {
            return Err(TransferError::NoLeader);
        }
        let is_leader = raft.state == StateRole::Leader;
        let target = if to != 0 {
            if leader == to {
                return Err(TransferError::AlreadyLeader(to));
            }
            // Only the leader knows the membership for sure; a follower's copy is as recent as
            // its log, and raft-rs on the leader ignores a non-voter target anyway.
            if is_leader && !raft.prs().conf().voters().contains(to) {
                return Err(TransferError::NotAVoter(to));
            }
            if !is_leader && to != raft.id {
                return Err(TransferError::AskLeaderOrTarget { leader });
            }
            to
        } else if is_leader {
            self.best_transferee().ok_or(TransferError::NoCandidate)?
        } else {
            return Err(TransferError::NotLeader);
        };
        tracing::info!(
            to = target,
            term = raft.term,
            leader,
            "transferring leadership"
        );
        self.raw.transfer_leader(target);
        Ok(target)
    }

    /// The voter other than this leader that is active (answered within an election timeout)
    /// and has the most of the log: it can take over soonest, with no catch-up. Ties go to the
    /// lower id, so the choice is deterministic.
    fn best_transferee(&self) -> Option<u64> {
        let raft = &self.raw.raft;
        let active: Vec<u64> = self
            .shared
            .quorum
            .lock()
            .peers
            .iter()
            .filter(|p| p.voter && p.active)
            .map(|p| p.id)
            .collect();
        raft.prs()
            .iter()
            .filter(|(id, _)| **id != raft.id && active.contains(id))
            .filter(|(id, _)| raft.prs().conf().voters().contains(**id))
            .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    /// Handles Readies until Raft has nothing more to do. Advancing one Ready can make the next
    /// one available at once (e.g. entries that became committable); waiting for the next
    /// command or tick would add up to a tick of latency.
    fn on_ready(&mut self) -> Result<(), RaftError> {
        // Bounded only as a guard against a livelock bug; one or two rounds is the norm.
        for _ in 0..16 {
            if !self.raw.has_ready() {
                break;
            }
            self.handle_ready()?;
        }
        Ok(())
    }

    /// One Ready with asynchronous persistence: its writes go into one LMDB transaction whose
    /// commit makes every *earlier* transaction durable; Raft learns about persistence in
    /// [`Node::report_durable`], which may be now (for earlier Readies) or later.
    fn handle_ready(&mut self) -> Result<(), RaftError> {
        let mut rd = self.raw.ready();
        let number = rd.number();

        // Only a leader gets messages here (a follower's wait for persistence); sending
        // before our own fsync lets followers write in parallel (Raft thesis 10.2.1).
        if !rd.messages().is_empty() {
            self.transport.send(rd.take_messages());
        }
        failpoint!("raft-after-send");
        if let Some(ss) = rd.ss() {
            self.shared.leader_id.store(ss.leader_id, Ordering::Release);
            let is_leader = ss.raft_state == StateRole::Leader;
            if is_leader != self.was_leader {
                self.was_leader = is_leader;
                self.shared.is_leader.store(is_leader, Ordering::Release);
                let term = self.raw.raft.term;
                tracing::info!(term, is_leader, "raft role changed");
                self.sm.on_role_change(is_leader, term);
            }
        }
        if let Some(hs) = rd.hs() {
            self.shared.term.store(hs.term, Ordering::Release);
        }
        // Leader/term moves are reported before this Ready's entries are applied.
        self.publish_status();

        let incoming = if rd.snapshot().is_empty() {
            None
        } else {
            let snap = rd.snapshot();
            let m = snap.get_metadata().clone();
            self.install_snapshot(&m, &snap.data)?;
            publish_members(&self.shared, m.get_conf_state());
            Some(m)
        };

        if rd.must_sync() || incoming.is_some() {
            failpoint!("raft-before-persist");
            // Group commit: the Ready's entries, hard state (and snapshot metadata) in one
            // transaction; durable once the next one commits or `settle` syncs.
            let (entries, hs) = (rd.entries(), rd.hs());
            self.retry_while_full(
                "raft log append",
                |node| {
                    node.raw
                        .mut_store()
                        .write_ready(entries, hs, incoming.as_ref())
                        .map_err(RaftError::from)
                },
                |node| node.drop_own_entries(entries),
            )?;
            failpoint!("raft-after-persist");
        } else if let Some(hs) = rd.hs() {
            // Only the commit index moved (term and vote changes set must_sync): no write
            // needed, it rides along with the next transaction. Saves a follower a write per
            // heartbeat.
            self.raw.mut_store().set_commit(hs.commit);
        }
        // Taken before apply: a conf change writes its own transaction, which is not part of
        // this Ready's persistence.
        let txn = self.raw.store().written_txn();

        if let Some(m) = incoming {
            self.applied = m.index;
            self.applied_term = m.term;
            self.shared.applied.store(m.index, Ordering::Release);
            self.shared.snapshot_index.store(m.index, Ordering::Release);
            // The log now starts after this snapshot: older files can never be replayed, but
            // only once the transaction dropping the log is durable (rare: flush it now). The
            // flush also lets Raft count the snapshot persisted before `advance_apply`.
            self.raw.mut_store().sync()?;
            self.snaps.remove_older_than(m.index)?;
            self.newest_snapshot = Some(m);
        }

        for rs in rd.take_read_states() {
            match barrier::decode_ctx(&rs.request_ctx) {
                Some(seq) => {
                    let next = self.shared.barrier.lock().answered(
                        seq,
                        rs.index,
                        self.applied,
                        Instant::now(),
                    );
                    if let Some(ctx) = next {
                        self.raw.read_index(ctx);
                    }
                }
                None if self.probe_answered(&rs.request_ctx, rs.index) => {}
                None => self.sm.on_read_index(&rs.request_ctx, rs.index),
            }
        }
        let messages = rd.take_persisted_messages();

        // Committed entries are handed out only up to what Raft counts as persisted, i.e. what
        // `report_durable` confirmed.
        let before = self.applied;
        let appended = rd
            .entries()
            .first()
            .zip(rd.entries().last())
            .map(|(first, last)| (first.index, last.index));
        self.apply_entries(rd.take_committed_entries())?;
        self.raw.advance_append_async(rd);
        self.apply_committed_ahead()?;
        self.unpersisted.push_back(Unpersisted {
            number,
            txn,
            messages,
            appended,
        });
        // This commit made earlier transactions durable: their Readies are persisted now. (And
        // an installed snapshot was flushed above: raft-rs needs it persisted before applied
        // may move to its index.)
        self.report_durable();
        self.raw.advance_apply();

        // Applied an entry of its own term (its no-op): everything committed before the term
        // is applied. Latched for the term: a leader whose commit index runs ahead of its own
        // (slower) disk is still caught up, so freshness and promotion do not flap.
        let caught_up =
            self.raw.raft.state == StateRole::Leader && self.applied_term == self.raw.raft.term;
        let was_caught_up = self.shared.caught_up.swap(caught_up, Ordering::AcqRel);
        if caught_up && !was_caught_up {
            tracing::info!(
                term = self.raw.raft.term,
                index = self.applied,
                "leader caught up: everything committed before this term is applied"
            );
            self.sm.on_caught_up(self.raw.raft.term);
        }
        if self.applied > before {
            self.shared.applied.store(self.applied, Ordering::Release);
            self.sm.applied_batch(self.applied);
        }
        // Barrier waiters whose index is now applied (snapshot installs included).
        self.shared.barrier.lock().applied(self.applied);
        self.publish_status();
        Ok(())
    }

    /// Applies a committed conf change (v1 or v2) and persists the resulting membership.
    fn apply_conf_change<C>(&mut self, e: &Entry) -> Result<(), RaftError>
    where
        C: protobuf::Message + raft_proto::ConfChangeI + Default,
    {
        let mut cc = C::default();
        cc.merge_from_bytes(&e.data)
            .map_err(|source| RaftError::BadConfChange {
                index: e.index,
                source,
            })?;
        let cs = self.raw.apply_conf_change(&cc)?;
        tracing::info!(
            index = e.index,
            term = e.term,
            voters = ?cs.voters,
            outgoing = ?cs.voters_outgoing,
            learners = ?cs.learners,
            "applied conf change"
        );
        self.retry_while_full(
            "conf state",
            |node| {
                node.raw
                    .mut_store()
                    .set_conf_state(cs.clone())
                    .map_err(RaftError::from)
            },
            |_| {},
        )?;
        publish_members(&self.shared, &cs);
        let context = cc.as_v2().context.to_vec();
        self.sm.apply_membership(
            e.index,
            e.term,
            &context,
            &cs.voters,
            &cs.learners,
            &cs.voters_outgoing,
        );
        // Test-only (issue 8: "kill the leader between entering and leaving a joint
        // configuration"): with FAILPOINTS=reconfig-leader-in-joint=1*sleep(N) the leader's
        // raft thread stops for N ms right after it applied a joint configuration it proposed
        // itself (not one a predecessor left behind), before
        // raft-rs's "leave joint" entry (appended by `apply_conf_change`) is sent, so a test
        // can SIGKILL it there. Compiled only with the `failpoints` feature.
        #[cfg(feature = "failpoints")]
        if self.raw.raft.state == StateRole::Leader
            && e.term == self.raw.raft.term
            && !context.is_empty()
            && !cs.voters_outgoing.is_empty()
        {
            tracing::warn!(
                index = e.index,
                "failpoint reconfig-leader-in-joint reached"
            );
            failpoint!("reconfig-leader-in-joint");
        }
        self.step_down_if_removed(&cs);
        Ok(())
    }

    /// A leader that just applied a configuration without itself stops leading at once, before
    /// this Ready is advanced: raft-rs cannot lead without its own progress entry (its
    /// `maybe_commit` and `on_persist_entries` unwrap it, and `post_conf_change` leaves this
    /// case as a TODO), so the next append response or persisted entry would panic. It asks
    /// the most caught-up remaining voter to campaign now (MsgTimeoutNow), so no election
    /// timeout is waited out, and stays a follower in the same term (its vote is kept, so no
    /// second leader of the term can come from it). Normally a leader removing itself has
    /// handed over before the change ([`super::reconfig`]); this is the fallback.
    fn step_down_if_removed(&mut self, cs: &raft::eraftpb::ConfState) {
        let me = self.raw.raft.id;
        if self.raw.raft.state != StateRole::Leader
            || cs.voters.contains(&me)
            || cs.voters_outgoing.contains(&me)
        {
            return;
        }
        let to = super::reconfig::handover_target(&self.raw, &cs.voters);
        tracing::warn!(
            term = self.raw.raft.term,
            to = ?to,
            "this leader is no longer a voter; stepping down and asking a remaining voter to campaign"
        );
        if let Some(to) = to {
            self.raw.raft.send_timeout_now(to);
        }
        let term = self.raw.raft.term;
        self.raw.raft.become_follower(term, raft::INVALID_ID);
    }

    /// Applies entries the group committed that this node has not yet made durable itself, as
    /// a ZooKeeper follower applies a COMMIT for a proposal it is still logging. raft-rs hands
    /// out committed entries only up to the local persisted index, so without this a member
    /// whose own fsync is slower than the quorum's lags the others by a flush (and its
    /// clients read older data than the leader's, for longer than they must).
    ///
    /// Safe: a committed entry is durable on a quorum and is in every future leader's log, so
    /// it can never be taken back; the local copy is written already (or will be by this
    /// node's next transaction) and a crash before that only loses what the leader resends.
    /// raft-rs later hands the same entries out again; [`Node::apply_entries`] skips them.
    /// Conf changes stay on raft-rs's path (it must apply them itself).
    fn apply_committed_ahead(&mut self) -> Result<(), RaftError> {
        let raft_log = &self.raw.raft.raft_log;
        let committed = raft_log.committed;
        let from = self.applied.saturating_add(1).max(raft_log.first_index());
        if committed < from {
            return Ok(());
        }
        let entries = match raft_log.slice(
            from,
            committed.saturating_add(1),
            Some(self.max_batch_bytes as u64),
            raft::GetEntriesContext::empty(false),
        ) {
            Ok(entries) => entries,
            // Compacted or unavailable: raft-rs's own path gets there.
            Err(error) => {
                tracing::debug!(%error, from, committed, "cannot read committed entries ahead");
                return Ok(());
            }
        };
        let normal: Vec<Entry> = entries
            .into_iter()
            .take_while(|e| e.get_entry_type() == EntryType::EntryNormal)
            .collect();
        if let Some(last) = normal.last() {
            tracing::trace!(
                from,
                to = last.index,
                durable = self.raw.store().durable_index(),
                "applying committed entries ahead of local durability"
            );
        }
        let before = self.applied;
        self.apply_normal_entries(normal, true)?;
        let ahead = self
            .applied
            .saturating_sub(before.max(self.raw.store().durable_index()));
        if ahead > 0 {
            self.shared
                .applied_ahead
                .fetch_add(ahead, Ordering::Relaxed);
        }
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        self.apply_normal_entries(entries, false)
    }

    /// Applies `entries` in order, skipping any already applied. `committed_ahead`: the
    /// entries are known committed by the group, so they need not be locally durable.
    fn apply_normal_entries(
        &mut self,
        entries: Vec<Entry>,
        committed_ahead: bool,
    ) -> Result<(), RaftError> {
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            let durable = self.raw.store().durable_index();
            if e.index > durable && !committed_ahead {
                // Raft was told about persistence early: applying would acknowledge an entry
                // a power failure can still take back.
                return Err(RaftError::NotDurable {
                    index: e.index,
                    durable,
                });
            }
            match e.get_entry_type() {
                // Empty normal entries are the no-ops new leaders append.
                EntryType::EntryNormal if e.data.is_empty() => {}
                EntryType::EntryNormal => {
                    failpoint!("raft-before-apply");
                    self.sm.apply(e.index, e.term, &e.data);
                    if let Some(reason) = self.sm.take_fatal() {
                        return Err(RaftError::Apply {
                            index: e.index,
                            reason,
                        });
                    }
                    if let Some(change) = self.sm.take_membership_change() {
                        self.reconfig.request(change);
                    }
                    failpoint!("raft-after-apply");
                }
                // Conf changes are checked before any emptiness test: with auto_leave the
                // leader appends an empty-data ConfChangeV2 meaning "leave joint".
                EntryType::EntryConfChange => self.apply_conf_change::<ConfChange>(&e)?,
                EntryType::EntryConfChangeV2 => self.apply_conf_change::<ConfChangeV2>(&e)?,
            }
            self.applied = e.index;
            self.applied_term = e.term;
        }
        Ok(())
    }

    /// Whether an incoming MsgSnapshot may be stepped: one carrying a descriptor only once
    /// its file was received, fsynced and verified (the peer network does that before it
    /// steps the message; this guards against anything else). Raft must never accept a
    /// snapshot this node cannot install.
    fn snapshot_message_ready(&self, msg: &Message) -> bool {
        let data = &msg.get_snapshot().data;
        if !crate::storage::SnapshotRef::is_ref(data) {
            return true;
        }
        let checked = crate::storage::SnapshotRef::decode(data)
            .ok_or_else(|| "damaged snapshot descriptor".to_string())
            .and_then(|r| self.snaps.check_received(&r).map_err(|e| e.to_string()));
        match checked {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(from = msg.from, %error, "ignoring a MsgSnapshot whose file is not here");
                false
            }
        }
    }

    /// Installs the snapshot Raft accepted: its file becomes this node's newest snapshot file
    /// (durably, before LMDB forgets the log: then the file is the only copy of that prefix),
    /// and the state machine is restored from it. A descriptor names a file already received
    /// (`recv-<index>.bin`), renamed into place and streamed into the restore; a whole image
    /// (in-process transports) is written out first.
    fn install_snapshot(&mut self, m: &SnapshotMetadata, data: &[u8]) -> Result<(), RaftError> {
        let started = Instant::now();
        let path = if crate::storage::SnapshotRef::is_ref(data) {
            let r = crate::storage::SnapshotRef::decode(data)
                .filter(|r| r.index == m.index && r.term == m.term)
                .ok_or_else(|| RaftError::Restore {
                    index: m.index,
                    reason: "snapshot descriptor damaged or not for this snapshot".into(),
                })?;
            self.snaps.adopt_received(&r)?
        } else {
            let mut path = std::path::PathBuf::new();
            self.retry_while_full(
                "incoming snapshot file",
                |node| {
                    path = node
                        .snaps
                        .write(m.index, m.term, m.get_conf_state(), data)
                        .map_err(RaftError::from)?;
                    Ok(())
                },
                |_| {},
            )?;
            path
        };
        restore_from_file(self.sm.as_mut(), &self.snaps, m.index, &path)?;
        self.shared
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            index = m.index,
            term = m.term,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "installed snapshot from leader"
        );
        Ok(())
    }

    fn maybe_snapshot(&mut self, requested: bool) -> Result<(), RaftError> {
        if self.snapshot_in_flight {
            return Ok(());
        }
        let last = self.newest_snapshot.as_ref().map_or(0, |m| m.index);
        if self.applied <= last {
            return Ok(());
        }
        let since = self.snapshot_failed_at.unwrap_or(last);
        let appended = self.shared.storage.bytes_appended.load(Ordering::Relaxed);
        let by_bytes = self.snapshot_bytes > 0
            && appended.saturating_sub(self.bytes_at_snapshot) >= self.snapshot_bytes;
        if !requested && !by_bytes && self.applied.saturating_sub(since) < self.snapshot_every {
            return Ok(());
        }
        // Counted from here whether or not this attempt succeeds: a failing disk is retried
        // after another `snapshot_bytes`, not on every turn.
        self.bytes_at_snapshot = appended;
        let index = self.applied;
        // Entries applied ahead of local durability (`apply_committed_ahead`) must be durable
        // here before a snapshot covers them: the log is later compacted up to snapshots, and
        // a restart must find log and snapshot agreeing. Snapshots are rare; one sync is cheap.
        if self.raw.store().durable_index() < index {
            self.persist_all()?;
        }
        let store = self.raw.store();
        let term = store.term(index)?;
        // Conf changes are persisted as they are applied, so this is membership at `index`.
        let cs = store.conf_state().clone();
        let started = Instant::now();
        if self.sm.fork_safe() {
            match self.fork_snapshot(index, term, &cs, started) {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::warn!(%error, index, "cannot fork the snapshot writer; serializing on the raft thread");
                }
            }
        }
        // Serializing needs the state as of `index`, so it happens here; writing and fsyncing
        // the file (the slow part) happens on a helper thread so writes keep flowing.
        let data = self.sm.snapshot();
        self.note_snapshot_pause(index, started.elapsed(), "serialize");
        let snaps = self.snaps.clone();
        let commands = self.commands.clone();
        let new_meta = meta(index, term, cs.clone());
        self.snapshot_in_flight = true;
        let spawned = std::thread::Builder::new()
            .name("snapshot-writer".into())
            .spawn(move || {
                // A panic here would otherwise leave `snapshot_in_flight` set for good (no
                // more snapshots, an ever-growing log): report it as a failed write instead.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    snaps.write(index, term, &cs, &data)
                }))
                .map_err(|payload| {
                    format!(
                        "snapshot writer panicked: {}",
                        super::panic_message(payload.as_ref())
                    )
                })
                .and_then(|written| written.map_err(|e| e.to_string()));
                // The raft thread may have stopped meanwhile; the file is complete either way.
                let _ = commands.send(Command::SnapshotWritten {
                    meta: Box::new(new_meta),
                    result,
                    bytes: data.len(),
                    started,
                });
            });
        if let Err(e) = spawned {
            self.snapshot_in_flight = false;
            self.snapshot_failed_at = Some(index);
            tracing::error!(error = %e, index, "cannot start the snapshot writer");
        }
        Ok(())
    }

    /// Records how long taking a snapshot stopped the raft thread (heartbeats included).
    fn note_snapshot_pause(&self, index: u64, pause: Duration, how: &'static str) {
        let pause_us = u64::try_from(pause.as_micros()).unwrap_or(u64::MAX);
        self.shared
            .snapshot_pause_us
            .store(pause_us, Ordering::Relaxed);
        self.shared.snapshot_pauses.observe(pause_us);
        tracing::info!(index, pause_us, how, "raft thread paused for a snapshot");
    }

    /// Takes the snapshot at `index` in a forked child (Redis-style): the raft thread is
    /// stopped only for the `fork()` itself, under the state's read lock, and the child
    /// serializes from its copy-on-write image of that frozen memory straight into the file
    /// (no image in memory). A reaper thread waits for the child (killing it after
    /// [`SNAPSHOT_CHILD_TIMEOUT`]), renames the file into place and reports back as the
    /// in-process writer does. `Err` only if no child was started (the caller falls back).
    fn fork_snapshot(
        &mut self,
        index: u64,
        term: u64,
        cs: &ConfState,
        started: Instant,
    ) -> Result<(), RaftError> {
        install_snapshot_child_panic_hook();
        let (tmp, file) = self.snaps.create_tmp(index)?;
        let mut forked: Result<libc::pid_t, std::io::Error> = Ok(0);
        let mut pause = Duration::ZERO;
        self.sm.with_frozen(&mut |write| {
            let fork_started = Instant::now();
            // SAFETY: fork() in a multi-threaded process. The child runs only
            // `child_write_snapshot`: it reads the frozen state (no thread can be changing it,
            // the read lock is held across the fork), writes the inherited file, allocates
            // (glibc's malloc is reset for the child by its own fork handlers), takes no other
            // lock, logs nothing and leaves with `_exit`, never returning into Rust code that
            // other (now absent) threads could be needed for.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                child_write_snapshot(&tmp, &file, index, term, cs, write);
            }
            pause = fork_started.elapsed();
            forked = if pid < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(pid)
            };
        });
        let pid = match forked {
            Ok(pid) => pid,
            Err(e) => {
                drop(file);
                let _ = std::fs::remove_file(&tmp);
                return Err(RaftError::from(crate::storage::SnapshotError::Io {
                    path: tmp,
                    source: e,
                }));
            }
        };
        drop(file);
        self.note_snapshot_pause(index, pause, "fork");
        let snaps = self.snaps.clone();
        let commands = self.commands.clone();
        let new_meta = meta(index, term, cs.clone());
        self.snapshot_in_flight = true;
        let reaper = std::thread::Builder::new()
            .name("snapshot-reaper".into())
            .spawn(move || {
                let written = reap_snapshot_child(pid, SNAPSHOT_CHILD_TIMEOUT).map_err(|source| {
                    crate::storage::SnapshotError::Io {
                        path: tmp.clone(),
                        source,
                    }
                });
                let bytes = std::fs::metadata(&tmp).map_or(0, |m| m.len() as usize);
                let result = snaps
                    .finish_tmp(index, &tmp, written)
                    .map_err(|e| e.to_string());
                let _ = commands.send(Command::SnapshotWritten {
                    meta: Box::new(new_meta),
                    result,
                    bytes,
                    started,
                });
            });
        if let Err(e) = reaper {
            // No reaper: reap here, blocking (rare: thread creation failed).
            tracing::error!(error = %e, index, "cannot start the snapshot reaper; waiting for the child here");
            let written = reap_snapshot_child(pid, SNAPSHOT_CHILD_TIMEOUT);
            let tmp = self.snaps.tmp_path(index);
            let written = written.map_err(|source| crate::storage::SnapshotError::Io {
                path: tmp.clone(),
                source,
            });
            let result = self
                .snaps
                .finish_tmp(index, &tmp, written)
                .map_err(|e| e.to_string());
            self.snapshot_written(meta(index, term, cs.clone()), result, 0, started);
        }
        Ok(())
    }

    /// The background writer finished: on success the snapshot becomes the newest, and the log
    /// is compacted to the previous one.
    fn snapshot_written(
        &mut self,
        new_meta: SnapshotMetadata,
        result: Result<std::path::PathBuf, String>,
        bytes: usize,
        started: Instant,
    ) {
        self.snapshot_in_flight = false;
        let index = new_meta.index;
        let term = new_meta.term;
        let path = match result {
            Ok(path) => path,
            Err(error) => {
                tracing::error!(%error, index, "snapshot failed; will retry later");
                self.snapshot_failed_at = Some(index);
                self.shared
                    .snapshot_failures
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if self
            .newest_snapshot
            .as_ref()
            .is_some_and(|m| m.index >= index)
        {
            return;
        }
        if let Some(prev) = self.newest_snapshot.replace(new_meta) {
            // Compact only to the previous snapshot: if the file just written is ever found
            // corrupt, `prev` + the log from there still reproduce the state exactly. Old files
            // go only after the compaction is durable (rare, so an explicit flush is cheap).
            let store = self.raw.mut_store();
            let compacted = store
                .compact(&prev)
                .and_then(|()| store.sync().map(|_| ()))
                .map_err(RaftError::from)
                .and_then(|_| {
                    self.snaps
                        .remove_older_than(prev.index)
                        .map_err(RaftError::from)
                });
            if let Err(error) = compacted {
                tracing::error!(%error, index, "log compaction failed");
            }
        }
        self.snapshot_failed_at = None;
        self.shared.snapshot_index.store(index, Ordering::Release);
        self.shared.snapshots_taken.fetch_add(1, Ordering::Relaxed);
        self.shared
            .snapshot_durations
            .observe_duration(started.elapsed());
        tracing::info!(
            index,
            term,
            bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            path = %path.display(),
            "wrote snapshot"
        );
    }

    fn stop(mut self) {
        if let Err(e) = self.raw.mut_store().flush() {
            tracing::warn!(error = %e, "could not persist final commit index");
        }
        // With MDB_NOMETASYNC the newest transaction is not durable yet; a graceful shutdown
        // must not leave it to chance.
        match self.raw.mut_store().sync() {
            Ok(_) => self.report_durable(),
            Err(e) => tracing::error!(error = %e, "could not flush the raft log at shutdown"),
        }
        self.shared.is_leader.store(false, Ordering::Release);
        self.shared
            .caught_up_with_leader
            .store(false, Ordering::Release);
        self.shared.stop_barrier();
        if self.was_leader {
            self.sm.on_role_change(false, self.raw.raft.term);
        }
        // Fail whatever is still queued so clients do not wait for a timeout. Commands may
        // still arrive from live handles afterwards; those fail at send() once `rx` is dropped.
        self.fail_queued_proposals();
        let stats = &self.shared.storage;
        tracing::info!(
            index = self.applied,
            term = self.raw.raft.term,
            write_txns = stats.write_txns.load(Ordering::Relaxed),
            syncs = stats.syncs.load(Ordering::Relaxed),
            entries = stats.entries_appended.load(Ordering::Relaxed),
            "raft thread stopped"
        );
    }
}

/// What a command is, for the slow-command log (a Step names its message type and sender).
fn command_kind(cmd: &Command) -> String {
    match cmd {
        Command::Propose(_) => "Propose".into(),
        Command::ProposeAsLeader(..) => "ProposeAsLeader".into(),
        Command::Step(m) => format!("Step({:?} from {})", m.get_msg_type(), m.from),
        Command::ReadIndex(_) => "ReadIndex".into(),
        Command::Snapshot => "Snapshot".into(),
        Command::SnapshotWritten { .. } => "SnapshotWritten".into(),
        Command::ReportUnreachable(id) => format!("ReportUnreachable({id})"),
        Command::ReportSnapshot(id, _) => format!("ReportSnapshot({id})"),
        Command::PeerConnectionClosed(id) => format!("PeerConnectionClosed({id})"),
        Command::TransferLeader { to, .. } => format!("TransferLeader({to})"),
        Command::Shutdown => "Shutdown".into(),
        #[cfg(test)]
        Command::Crash => "Crash".into(),
    }
}

/// When each phase of one raft loop turn ended, measured from the turn's start: handling the
/// commands, the tick and Ready (entries written, committed entries applied), the final flush,
/// the reconfig driver and status, and the snapshot check.
struct TurnTimes {
    handled: Duration,
    readied: Duration,
    settled: Duration,
    driven: Duration,
    total: Duration,
}

/// Longest a forked snapshot writer may run before it is killed (and the snapshot retried):
/// a 1M-znode tree takes about a second, so this only catches a wedged child.
const SNAPSHOT_CHILD_TIMEOUT: Duration = Duration::from_secs(600);

/// Set in a forked snapshot child only: see [`install_snapshot_child_panic_hook`].
static IN_SNAPSHOT_CHILD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Wraps the panic hook (once, in the server process) so that a panic in a forked snapshot
/// child exits it at once with status 125: the default hook would print to stderr, whose
/// lock another thread (a logger) may have held at the fork, and the child would hang.
fn install_snapshot_child_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_SNAPSHOT_CHILD.load(Ordering::Relaxed) {
                // SAFETY: ends the forked child without touching anything shared.
                unsafe { libc::_exit(125) }
            }
            previous(info)
        }));
    });
}

/// The forked child: writes the snapshot file and exits, never returning. Exit status 0 once
/// the file is complete and fsynced; otherwise the errno of the failure (ENOSPC stays
/// recognisable as a full disk), or 125 for a failure without one.
fn child_write_snapshot(
    tmp: &std::path::Path,
    file: &std::fs::File,
    index: u64,
    term: u64,
    cs: &ConfState,
    write: super::SnapshotWriter<'_>,
) -> ! {
    IN_SNAPSHOT_CHILD.store(true, Ordering::Relaxed);
    // SAFETY: prctl only sets this process's own parent-death signal. Dying with the server
    // means a child can never outlive it and write after it is gone.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    // Every other descriptor (client and peer sockets, listeners, LMDB) is closed in the
    // child at once: a copy held open here would keep a connection the server closed alive
    // (no FIN) until the child exits. Best effort: on a kernel without close_range they stay
    // open for the child's lifetime.
    close_fds_except(std::os::fd::AsRawFd::as_raw_fd(file));
    let code = match file.try_clone() {
        Ok(file) => {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::storage::write_file(tmp, file, index, term, cs, |w| write(w))
            }));
            match run {
                Ok(Ok(())) => 0,
                Ok(Err(crate::storage::SnapshotError::Io { source, .. })) => source
                    .raw_os_error()
                    .filter(|e| (1..125).contains(e))
                    .unwrap_or(125),
                Ok(Err(_)) | Err(_) => 125,
            }
        }
        Err(e) => e
            .raw_os_error()
            .filter(|e| (1..125).contains(e))
            .unwrap_or(125),
    };
    // SAFETY: _exit ends the child at once: no atexit handlers, no destructors, no flushing
    // of stdio buffers copied from the parent.
    unsafe { libc::_exit(code) }
}

/// Closes every descriptor above stderr but `keep` (in the forked snapshot child).
fn close_fds_except(keep: std::os::fd::RawFd) {
    let close_range = |first: libc::c_uint, last: libc::c_uint| {
        if first <= last {
            // SAFETY: close_range(2) only closes this process's descriptors; the child uses
            // none of those but `keep` and stdio.
            unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
        }
    };
    let keep = libc::c_uint::try_from(keep).unwrap_or(0);
    if keep < 3 {
        close_range(3, libc::c_uint::MAX);
        return;
    }
    close_range(3, keep - 1);
    close_range(keep.saturating_add(1), libc::c_uint::MAX);
}

/// Waits for the snapshot child `pid` (polling, so that it can be killed after `timeout`
/// and reaped either way: never left a zombie). Ok once it exited with status 0.
fn reap_snapshot_child(pid: libc::pid_t, timeout: Duration) -> std::io::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid on our own child, with a valid pointer to `status`.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if Instant::now() > deadline {
            // SAFETY: signals and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "snapshot child timed out and was killed",
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            125 => Err(std::io::Error::other("snapshot child failed")),
            errno => Err(std::io::Error::from_raw_os_error(errno)),
        }
    } else {
        Err(std::io::Error::other(format!(
            "snapshot child died (wait status {status})"
        )))
    }
}

/// The newest valid snapshot found at startup (verified, not loaded).
struct StartupSnapshot {
    /// Its index.
    index: u64,
    /// Term of `index`.
    term: u64,
    /// Membership at `index`.
    conf_state: ConfState,
    /// The file.
    path: std::path::PathBuf,
}

/// Restores `sm` by streaming the payload of the snapshot file at `path`.
fn restore_from_file(
    sm: &mut dyn StateMachine,
    snaps: &SnapshotDir,
    index: u64,
    path: &std::path::Path,
) -> Result<(), RaftError> {
    let (h, mut payload) = snaps.open_payload(path)?;
    sm.restore_from(index, h.payload_len, &mut payload)
        .map_err(|reason| RaftError::Restore { index, reason })
}

/// Payload bytes a command adds to the next Ready (only proposals carry any).
fn proposal_bytes(cmd: &Command) -> usize {
    match cmd {
        Command::Propose(data) | Command::ProposeAsLeader(_, data) => data.len(),
        _ => 0,
    }
}

/// Publishes every member of `cs` ([`super::RaftHandle::members`]).
fn publish_members(shared: &super::Shared, cs: &raft::eraftpb::ConfState) {
    let mut members: Vec<u64> = cs
        .voters
        .iter()
        .chain(&cs.voters_outgoing)
        .chain(&cs.learners)
        .chain(&cs.learners_next)
        .copied()
        .collect();
    members.sort_unstable();
    members.dedup();
    *shared.members.lock() = members;
}
