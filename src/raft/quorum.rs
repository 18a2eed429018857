//! The leader's view of its quorum, published for `mntr`/`srvr` (ZooKeeper's
//! `zk_synced_followers`, `zk_learners`, `zk_pending_syncs`, `zk_leader_uptime`, proposal sizes).
//!
//! The raft thread calls [`publish`] at the end of every status update; it only reads raft-rs
//! state (progress tracker, read-only queue, unstable log tail) and never blocks.
//!
//! **Synced** (ZooKeeper: a learner handler past its DIFF/SNAP, in the forwarding set): a member
//! other than the leader whose Raft progress is in `Replicate` state (the leader streams
//! appends to it instead of probing or sending a snapshot) *and* that is active: raft-rs saw a
//! message from it (`recent_active`) within the last election timeout. `check_quorum` clears
//! `recent_active` every election timeout, so a live member would read inactive until its next
//! heartbeat response; the time it was last seen active is therefore kept here, and it stays
//! active for one election timeout after that. A killed or cut-off member stops counting
//! within two to three election timeouts (sooner under writes: the transport reports it
//! unreachable, which drops it back to `Probe`, and the next entry leaves it behind). A member
//! in `Probe` whose acknowledged index is the leader's last index also counts: raft-rs only
//! moves a probed peer back to `Replicate` when it sends it an append, so in an idle ensemble a
//! restarted follower that has every entry would otherwise never count again. A member still
//! catching up by appends counts once it is in `Replicate`, as a ZooKeeper follower counts once
//! its DIFF is sent.

use std::collections::BTreeMap;
use std::time::Instant;

use raft::{ProgressState, Raft, Storage};

use super::Shared;

/// One other member, as the leader's progress tracker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerProgress {
    /// Raft id (= ZooKeeper server id).
    pub id: u64,
    /// Counted in the voting configuration (either half of a joint one); `false` for a Raft
    /// learner (an observer, or a participant being caught up before it is promoted).
    pub voter: bool,
    /// Answered the leader within the last election timeout (raft-rs `recent_active`).
    pub active: bool,
    /// Synced, in the sense of the module docs: active, and `Replicate` (or probed but
    /// holding every entry).
    pub synced: bool,
    /// Highest log index the leader knows this member holds (raft-rs `matched`); the
    /// member's replication lag is [`QuorumStatus::last_index`] minus this.
    pub matched: u64,
}

/// ZooKeeper's `BufferStats` over the leader's proposals: -1 until the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProposalSizes {
    /// Size in bytes of the newest proposal, or -1.
    pub last: i64,
    /// Smallest proposal so far in this leadership, or -1.
    pub min: i64,
    /// Largest proposal so far in this leadership, or -1.
    pub max: i64,
}

impl Default for ProposalSizes {
    fn default() -> Self {
        ProposalSizes {
            last: -1,
            min: -1,
            max: -1,
        }
    }
}

impl ProposalSizes {
    /// Counts one proposal of `size` bytes.
    pub fn record(&mut self, size: usize) {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        self.last = size;
        if self.min < 0 || size < self.min {
            self.min = size;
        }
        if size > self.max {
            self.max = size;
        }
    }
}

/// What [`super::RaftHandle::quorum_status`] returns. Everything is empty / `None` / -1 unless
/// this node leads: like ZooKeeper's `Leader` object, it starts afresh with each leadership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumStatus {
    /// Every member other than this leader that its progress tracker knows (voters and
    /// learners), by id.
    pub peers: Vec<PeerProgress>,
    /// When this node started serving as leader: its first entry of the term was applied
    /// (ZooKeeper starts `leaderStartTime` once a quorum acked NEWLEADER, i.e. when it serves).
    pub serving_since: Option<Instant>,
    /// ReadIndex requests (syncs, freshness probes, from every member) the leader has not yet
    /// confirmed with a heartbeat quorum. One request stands for every sync queued on its
    /// origin server when it was sent ([`super::ReadBarrier`]).
    pub pending_reads: usize,
    /// Sizes of the entries proposed in this leadership (the encoded transactions, as
    /// ZooKeeper counts its serialized proposal packets); the leader's empty no-op is not one.
    pub proposals: ProposalSizes,
    /// The leader's last log index when this was published (0 unless leader).
    pub last_index: u64,
    /// Highest log index already counted in `proposals`.
    sized_up_to: u64,
    /// When each member was last seen `recent_active`.
    last_active: BTreeMap<u64, Instant>,
}

impl QuorumStatus {
    /// Members other than the leader counted as synced: (voters, learners).
    pub fn synced(&self) -> (usize, usize) {
        let voters = self.peers.iter().filter(|p| p.synced && p.voter).count();
        let learners = self.peers.iter().filter(|p| p.synced && !p.voter).count();
        (voters, learners)
    }
}

/// Refreshes `shared.quorum` from the raft state. `caught_up` says whether this leader has
/// applied an entry of its own term (it serves from then on).
pub(super) fn publish<T: Storage>(raft: &Raft<T>, shared: &Shared, caught_up: bool) {
    let mut status = shared.quorum.lock();
    if raft.state != raft::StateRole::Leader {
        if *status != QuorumStatus::default() {
            *status = QuorumStatus::default();
        }
        return;
    }
    let now = Instant::now();
    let last_index = raft.raft_log.last_index();
    let conf = raft.prs().conf();
    let status = &mut *status;
    status.peers.clear();
    for (&id, pr) in raft.prs().iter() {
        if id == raft.id {
            continue;
        }
        if pr.recent_active {
            status.last_active.insert(id, now);
        }
        let active = pr.recent_active
            || status
                .last_active
                .get(&id)
                .is_some_and(|seen| now.duration_since(*seen) < shared.election_timeout);
        status.peers.push(PeerProgress {
            id,
            voter: conf.voters().contains(id),
            active,
            synced: active
                && match pr.state {
                    ProgressState::Replicate => true,
                    ProgressState::Probe => pr.matched >= last_index,
                    ProgressState::Snapshot => false,
                },
            matched: pr.matched,
        });
    }
    status.peers.sort_by_key(|p| p.id);
    status.last_index = last_index;
    // Members removed from the configuration are forgotten.
    let peers = &status.peers;
    status
        .last_active
        .retain(|id, _| peers.iter().any(|p| p.id == *id));
    if caught_up && status.serving_since.is_none() {
        status.serving_since = Some(Instant::now());
    }
    status.pending_reads = raft.read_only.pending_read_count();
    // New entries of this term sit in the unstable tail until they are persisted, and this
    // runs before each Ready is persisted, so none is missed in practice; an entry that did
    // slip past is simply not counted (a metric, not an invariant).
    let unstable = &raft.raft_log.unstable;
    let skip = status
        .sized_up_to
        .saturating_sub(unstable.offset.saturating_sub(1));
    let fresh = unstable
        .entries
        .iter()
        .skip(usize::try_from(skip).unwrap_or(usize::MAX));
    let mut newest = status.sized_up_to;
    let mut sizes = status.proposals;
    for entry in fresh {
        newest = newest.max(entry.index);
        if entry.term == raft.term && !entry.data.is_empty() {
            sizes.record(entry.data.len());
        }
    }
    status.proposals = sizes;
    status.sized_up_to = newest;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use raft::eraftpb::{Entry, Message, MessageType};
    use raft::storage::MemStorage;
    use raft::Config;

    fn leader_of(voters: Vec<u64>, learners: Vec<u64>) -> Raft<MemStorage> {
        let storage = MemStorage::new_with_conf_state((voters, learners));
        let config = Config {
            id: 1,
            election_tick: 10,
            heartbeat_tick: 2,
            check_quorum: true,
            ..Config::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut raft = Raft::new(&config, storage, &logger).unwrap();
        raft.become_candidate();
        raft.become_leader();
        raft
    }

    fn ack(raft: &mut Raft<MemStorage>, from: u64) {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppendResponse);
        m.from = from;
        m.to = 1;
        m.term = raft.term;
        m.index = raft.raft_log.last_index();
        raft.step(m).unwrap();
    }

    /// Leader 1 of {1, 2, 3} whose followers both acknowledged its log.
    fn replicating_leader() -> Raft<MemStorage> {
        let mut raft = leader_of(vec![1, 2, 3], vec![]);
        ack(&mut raft, 2);
        ack(&mut raft, 3);
        raft
    }

    fn status(raft: &Raft<MemStorage>, shared: &Shared) -> QuorumStatus {
        publish(raft, shared, true);
        shared.quorum.lock().clone()
    }

    #[test]
    fn followers_count_as_synced_once_they_ack_and_stop_when_silent() {
        let shared = Shared::default();
        let mut raft = leader_of(vec![1, 2, 3], vec![4]);
        let s = status(&raft, &shared);
        assert_eq!(s.peers.len(), 3);
        assert_eq!(
            s.synced(),
            (0, 0),
            "nobody answered the new leader yet: {s:?}"
        );
        assert!(s.serving_since.is_some());
        for id in [2, 3, 4] {
            ack(&mut raft, id);
        }
        let s = status(&raft, &shared);
        assert_eq!(s.synced(), (2, 1), "{s:?}");
        assert!(s.peers.iter().all(|p| p.active));
        assert!(!s.peers.iter().find(|p| p.id == 4).unwrap().voter);
        // One election timeout of silence from 3 (check_quorum clears recent_active; 2 and 4
        // answer again): 3 is no longer synced (this Shared's election timeout is 0, so no
        // grace period applies).
        for _ in 0..raft.election_timeout() {
            raft.tick();
        }
        ack(&mut raft, 2);
        ack(&mut raft, 4);
        assert_eq!(raft.state, raft::StateRole::Leader);
        let s = status(&raft, &shared);
        let three = s.peers.iter().find(|p| p.id == 3).unwrap();
        assert!(!three.synced && !three.active, "{s:?}");
        assert_eq!(s.synced().0, 1, "{s:?}");
        // 3 comes back.
        ack(&mut raft, 3);
        assert_eq!(status(&raft, &shared).synced(), (2, 1));
    }

    #[test]
    fn a_live_follower_stays_synced_between_check_quorum_resets() {
        let shared = Shared {
            election_timeout: std::time::Duration::from_secs(60),
            ..Shared::default()
        };
        let mut raft = replicating_leader();
        assert_eq!(status(&raft, &shared).synced(), (2, 0));
        // check_quorum just cleared recent_active; no heartbeat response yet.
        for _ in 0..raft.election_timeout() {
            raft.tick();
        }
        assert!(raft
            .prs()
            .iter()
            .all(|(id, pr)| *id == 1 || !pr.recent_active));
        assert_eq!(status(&raft, &shared).synced(), (2, 0));
    }

    fn propose(raft: &mut Raft<MemStorage>, len: usize) {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = 1;
        m.to = 1;
        let e = Entry {
            data: vec![7u8; len].into(),
            ..Entry::default()
        };
        m.entries = vec![e].into();
        raft.step(m).unwrap();
    }

    #[test]
    fn an_unreachable_follower_stops_counting_once_it_misses_an_entry() {
        let shared = Shared::default();
        let mut raft = replicating_leader();
        assert_eq!(status(&raft, &shared).synced(), (2, 0));
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgUnreachable);
        m.from = 3;
        m.to = 1;
        raft.step(m).unwrap();
        // Probed, but it holds every entry: still synced (an idle restarted follower).
        assert_eq!(status(&raft, &shared).synced(), (2, 0));
        propose(&mut raft, 5);
        ack(&mut raft, 2);
        let s = status(&raft, &shared);
        assert_eq!(s.synced(), (1, 0), "{s:?}");
        // It answers the probe: back in Replicate.
        ack(&mut raft, 3);
        assert_eq!(status(&raft, &shared).synced(), (2, 0));
    }

    #[test]
    fn proposal_sizes_cover_this_terms_entries_and_reset_on_demotion() {
        let shared = Shared::default();
        let mut raft = leader_of(vec![1, 2, 3], vec![]);
        let s = status(&raft, &shared);
        assert_eq!(
            s.proposals,
            ProposalSizes::default(),
            "the no-op is not a proposal"
        );
        for len in [10usize, 3, 40] {
            propose(&mut raft, len);
            // Published after each proposal, and once more with nothing new: no double count.
            publish(&raft, &shared, true);
        }
        let s = status(&raft, &shared);
        assert_eq!(
            s.proposals,
            ProposalSizes {
                last: 40,
                min: 3,
                max: 40
            }
        );
        raft.become_follower(raft.term + 1, 2);
        assert_eq!(status(&raft, &shared), QuorumStatus::default());
    }

    #[test]
    fn pending_reads_count_unconfirmed_read_index_requests() {
        let shared = Shared::default();
        let mut raft = replicating_leader();
        // The acks committed the no-op of the term (raft-rs postpones reads until then).
        assert_eq!(raft.raft_log.committed, raft.raft_log.last_index());
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgReadIndex);
        m.from = 2;
        m.to = 1;
        let e = Entry {
            data: b"ctx".to_vec().into(),
            ..Entry::default()
        };
        m.entries = vec![e].into();
        raft.step(m).unwrap();
        assert_eq!(status(&raft, &shared).pending_reads, 1);
    }
}
