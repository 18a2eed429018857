//! Membership changes on the leader (ZooKeeper's `reconfig` on Raft joint consensus).
//!
//! The state machine checks a reconfig request when its log entry applies (on every replica,
//! deterministically) and hands the wanted membership to the raft thread
//! ([`super::StateMachine::take_membership_change`]). Only the leader that proposed in the same
//! term acts on it, one change at a time:
//!
//! 1. a change while another one (or a joint configuration) is pending is refused
//!    ([`MembershipRefusal::InProgress`]);
//! 2. new servers (participants and observers) first join as learners (one ConfChangeV2),
//!    from a snapshot that lists them, and must replicate up to the commit index of the
//!    moment they were added before the catch-up timeout ([`MembershipRefusal::NoQuorum`] otherwise, and the learners are removed
//!    again);
//! 3. then one ConfChangeV2 with `ConfChangeTransition::Implicit` (joint consensus, left
//!    automatically by raft-rs) carries the whole change and the state machine's context
//!    (the new `/zookeeper/config`), which every replica gets back in
//!    [`super::StateMachine::apply_membership`] when the entry applies;
//! 4. a leader that is not a voter of the configuration it just left transfers leadership to
//!    the best remaining voter.
//!
//! raft-rs leaves a joint configuration automatically only on the leader that entered it; a
//! new leader that finds one left behind proposes the empty ConfChangeV2 itself
//! ([`Orchestrator::drive`]).

use std::time::{Duration, Instant};

use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
use raft::{RawNode, StateRole};

use super::StateMachine;
use crate::storage::LmdbStorage;

/// A membership the state machine asks for: the whole target, not a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    /// Voters (ZooKeeper participants) of the new configuration.
    pub voters: Vec<u64>,
    /// Learners (ZooKeeper observers) of the new configuration.
    pub learners: Vec<u64>,
    /// Opaque bytes handed back with the applied change (the origin and the config text).
    pub context: Vec<u8>,
    /// Term of the log entry that asked for it: only the leader of that term acts on it (a
    /// later leader's clients were told ConnectionLoss at the leader change).
    pub term: u64,
}

/// Why the leader did not carry out a [`MembershipChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipRefusal {
    /// Another change or a joint configuration is pending (ZooKeeper's ReconfigInProgress).
    InProgress,
    /// The new participants did not catch up in time (ZooKeeper's NewConfigNoQuorum).
    NoQuorum,
}

/// Where the change in progress stands.
#[derive(Debug)]
enum Stage {
    /// The log still starts at index 1, so the leader would send a joiner entries from there
    /// (without the bootstrap membership, which is no entry): compact first (two snapshots),
    /// so that a joiner can only be sent a snapshot.
    Compacting {
        /// The servers to add as learners next.
        joining: Vec<u64>,
        /// Give up (NoQuorum) after this.
        deadline: Instant,
    },
    /// New participants were proposed as learners; waiting for them to catch up.
    CatchingUp {
        /// The learners that must catch up.
        joining: Vec<u64>,
        /// Commit index they must reach; fixed once the learner change applied and a snapshot
        /// that includes them exists (0 before).
        target: u64,
        /// Applied index once the learner change was applied (0 before): the snapshot a
        /// joiner installs must be at least this new, or it would not list the joiner (raft-rs
        /// refuses such a snapshot).
        learners_at: u64,
        /// Give up (NoQuorum) after this.
        deadline: Instant,
    },
    /// The joint change was proposed; waiting until it applied and the joint config was left.
    Committing,
}

/// The change this leader is carrying out.
#[derive(Debug)]
struct InFlight {
    /// What was asked for.
    change: MembershipChange,
    /// Progress.
    stage: Stage,
}

/// Leader-side orchestration state of the raft thread.
#[derive(Debug)]
pub(super) struct Orchestrator {
    /// How long new participants may take to catch up (initLimit × tickTime).
    catch_up_timeout: Duration,
    /// The change in progress, if this node leads one.
    in_flight: Option<InFlight>,
    /// Term in which this node last proposed the empty "leave joint" change, so it proposes
    /// it once per term.
    left_joint_in: u64,
    /// Changes handed over by entries applied this turn, acted on by the next
    /// [`Orchestrator::drive`]: proposing while a Ready is being handled would break raft-rs.
    requested: Vec<MembershipChange>,
}

fn single(node_id: u64, change_type: ConfChangeType) -> ConfChangeSingle {
    ConfChangeSingle {
        change_type,
        node_id,
        ..Default::default()
    }
}

/// Whether the applied membership is a joint one.
fn is_joint(raw: &RawNode<LmdbStorage>) -> bool {
    !raw.store().conf_state().voters_outgoing.is_empty()
}

impl Orchestrator {
    pub(super) fn new(catch_up_timeout: Duration) -> Self {
        Orchestrator {
            catch_up_timeout,
            in_flight: None,
            left_joint_in: 0,
            requested: Vec::new(),
        }
    }

    /// A membership change asked for by an entry just applied (acted on by the next
    /// [`Orchestrator::drive`], once the Ready is done).
    pub(super) fn request(&mut self, change: MembershipChange) {
        self.requested.push(change);
    }

    fn requested(
        &mut self,
        raw: &mut RawNode<LmdbStorage>,
        sm: &mut dyn StateMachine,
        change: MembershipChange,
    ) {
        if raw.raft.state != StateRole::Leader || raw.raft.term != change.term {
            // Not ours to carry out; its client saw the leader change (ConnectionLoss).
            return;
        }
        if self.in_flight.is_some() || raw.raft.has_pending_conf() || is_joint(raw) {
            tracing::info!(
                term = raw.raft.term,
                "reconfig refused: another one is in progress"
            );
            refuse(raw, sm, &change.context, MembershipRefusal::InProgress);
            return;
        }
        let cs = raw.store().conf_state().clone();
        // New servers, participants and observers alike, first join as learners: each must
        // start from a snapshot that lists it.
        let joining: Vec<u64> = change
            .voters
            .iter()
            .chain(&change.learners)
            .copied()
            .filter(|id| !cs.voters.contains(id) && !cs.learners.contains(id))
            .collect();
        if joining.is_empty() {
            self.propose_joint(raw, sm, change);
            return;
        }
        let deadline = Instant::now() + self.catch_up_timeout;
        if raw.raft.raft_log.first_index() <= 1 {
            tracing::info!("reconfig: compacting the log first, so that joiners get a snapshot");
            self.in_flight = Some(InFlight {
                change,
                stage: Stage::Compacting { joining, deadline },
            });
            return;
        }
        self.add_learners(raw, sm, change, joining, deadline);
    }

    /// Proposes the joiners as learners (the first step of a change that adds servers).
    fn add_learners(
        &mut self,
        raw: &mut RawNode<LmdbStorage>,
        sm: &mut dyn StateMachine,
        change: MembershipChange,
        joining: Vec<u64>,
        deadline: Instant,
    ) {
        let mut cc = ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Implicit);
        for id in &joining {
            cc.mut_changes()
                .push(single(*id, ConfChangeType::AddLearnerNode));
        }
        tracing::info!(joining = ?joining, "reconfig: adding new participants as learners first");
        if let Err(error) = raw.propose_conf_change(Vec::new(), cc) {
            tracing::warn!(%error, "cannot propose the learner change");
            refuse(raw, sm, &change.context, MembershipRefusal::InProgress);
            return;
        }
        self.in_flight = Some(InFlight {
            change,
            stage: Stage::CatchingUp {
                joining,
                target: 0,
                learners_at: 0,
                deadline,
            },
        });
    }

    /// Proposes the one joint change from the applied membership to `change`'s.
    fn propose_joint(
        &mut self,
        raw: &mut RawNode<LmdbStorage>,
        sm: &mut dyn StateMachine,
        change: MembershipChange,
    ) {
        let cs = raw.store().conf_state().clone();
        let mut changes = Vec::new();
        for id in cs.voters.iter().chain(cs.learners.iter()) {
            if !change.voters.contains(id) && !change.learners.contains(id) {
                changes.push(single(*id, ConfChangeType::RemoveNode));
            }
        }
        for id in &change.voters {
            if !cs.voters.contains(id) {
                changes.push(single(*id, ConfChangeType::AddNode));
            }
        }
        for id in &change.learners {
            if !cs.learners.contains(id) {
                changes.push(single(*id, ConfChangeType::AddLearnerNode));
            }
        }
        if changes.is_empty() {
            // Only new observers, already added as learners: the entry still has to carry the
            // new configuration, so it re-adds a voter (a no-op for raft-rs).
            if let Some(voter) = change.voters.first() {
                changes.push(single(*voter, ConfChangeType::AddNode));
            }
        }
        let mut cc = ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Implicit);
        cc.set_changes(changes.into());
        cc.context = change.context.clone().into();
        tracing::info!(
            voters = ?change.voters,
            learners = ?change.learners,
            "reconfig: proposing the joint configuration"
        );
        if cc.changes.is_empty() {
            // The state machine answers a change that keeps the membership itself; this one
            // became empty meanwhile, so it cannot be carried out as asked.
            refuse(raw, sm, &change.context, MembershipRefusal::InProgress);
            return;
        }
        match raw.propose_conf_change(change.context.clone(), cc) {
            Ok(()) => {
                self.in_flight = Some(InFlight {
                    change,
                    stage: Stage::Committing,
                });
            }
            Err(error) => {
                tracing::warn!(%error, "cannot propose the joint change");
                refuse(raw, sm, &change.context, MembershipRefusal::InProgress);
            }
        }
    }

    /// Called every loop turn: moves the change in progress on, and leaves a joint
    /// configuration that a previous leader left behind. `snapshot_index`: the newest
    /// snapshot's. True when the raft thread should take a snapshot now: a joiner's log must
    /// start with a snapshot that lists it (its log from index 1 would miss the bootstrap
    /// membership, which is no entry), so the leader snapshots after adding the learners, and
    /// until its log no longer starts at index 1 (compaction keeps the previous snapshot).
    pub(super) fn drive(
        &mut self,
        raw: &mut RawNode<LmdbStorage>,
        sm: &mut dyn StateMachine,
        caught_up: bool,
        snapshot_index: u64,
    ) -> bool {
        for change in std::mem::take(&mut self.requested) {
            self.requested(raw, sm, change);
        }
        self.step(raw, sm, caught_up, snapshot_index) == Some(true)
    }

    fn step(
        &mut self,
        raw: &mut RawNode<LmdbStorage>,
        sm: &mut dyn StateMachine,
        caught_up: bool,
        snapshot_index: u64,
    ) -> Option<bool> {
        if raw.raft.state != StateRole::Leader {
            if let Some(f) = self.in_flight.take() {
                tracing::info!(
                    term = f.change.term,
                    "reconfig abandoned: no longer the leader"
                );
            }
            return None;
        }
        if caught_up
            && self.in_flight.is_none()
            && is_joint(raw)
            && !raw.raft.has_pending_conf()
            && self.left_joint_in != raw.raft.term
        {
            // raft-rs only auto-leaves on the leader that entered the joint config.
            self.left_joint_in = raw.raft.term;
            tracing::info!(
                term = raw.raft.term,
                "found a joint configuration left behind; proposing to leave it"
            );
            if let Err(error) = raw.propose_conf_change(Vec::new(), ConfChangeV2::default()) {
                tracing::warn!(%error, "cannot propose leaving the joint configuration");
            }
        }
        let f = self.in_flight.as_mut()?;
        match &mut f.stage {
            Stage::Compacting { joining, deadline } => {
                let (joining, deadline) = (joining.clone(), *deadline);
                if raw.raft.raft_log.first_index() > 1 {
                    let f = self.in_flight.take()?;
                    self.add_learners(raw, sm, f.change, joining, deadline);
                } else if Instant::now() >= deadline {
                    let f = self.in_flight.take()?;
                    tracing::warn!("reconfig failed: the log could not be compacted in time");
                    refuse(raw, sm, &f.change.context, MembershipRefusal::NoQuorum);
                } else {
                    poke(raw, snapshot_index);
                    return Some(true);
                }
            }
            Stage::CatchingUp {
                joining,
                target,
                learners_at,
                deadline,
            } => {
                let mut want_snapshot = false;
                if *target == 0 {
                    if *learners_at == 0 && !raw.raft.has_pending_conf() && !is_joint(raw) {
                        *learners_at = raw.raft.raft_log.applied;
                        tracing::debug!(learners_at = *learners_at, "reconfig: learners added");
                    }
                    if *learners_at > 0 {
                        if snapshot_index >= *learners_at && raw.raft.raft_log.first_index() > 1 {
                            *target = raw.raft.raft_log.committed;
                            tracing::debug!(
                                target = *target,
                                snapshot_index,
                                "reconfig: a snapshot lists the learners; waiting for them"
                            );
                        } else {
                            want_snapshot = true;
                            poke(raw, snapshot_index);
                        }
                    }
                }
                let prs = raw.raft.prs();
                let ready = *target > 0
                    && joining
                        .iter()
                        .all(|id| prs.get(*id).is_some_and(|p| p.matched >= *target));
                if ready {
                    let f = self.in_flight.take()?;
                    tracing::info!(joining = ?joining_of(&f), "reconfig: new participants caught up");
                    self.propose_joint(raw, sm, f.change);
                } else if Instant::now() >= *deadline {
                    let f = self.in_flight.take()?;
                    let joining = joining_of(&f);
                    tracing::warn!(joining = ?joining, "reconfig failed: new participants did not catch up in time");
                    if !raw.raft.has_pending_conf() && !is_joint(raw) {
                        let mut cc = ConfChangeV2::default();
                        cc.set_transition(ConfChangeTransition::Implicit);
                        for id in &joining {
                            cc.mut_changes()
                                .push(single(*id, ConfChangeType::RemoveNode));
                        }
                        if let Err(error) = raw.propose_conf_change(Vec::new(), cc) {
                            tracing::warn!(%error, "cannot remove the learners again");
                        }
                    }
                    refuse(raw, sm, &f.change.context, MembershipRefusal::NoQuorum);
                    return Some(false);
                }
                return Some(want_snapshot);
            }
            Stage::Committing => {
                if raw.raft.has_pending_conf() || is_joint(raw) {
                    return Some(false);
                }
                self.in_flight = None;
                let me = raw.raft.id;
                if !raw.store().conf_state().voters.contains(&me) {
                    let best = raw
                        .raft
                        .prs()
                        .iter()
                        .filter(|(id, _)| **id != me)
                        .filter(|(id, _)| raw.raft.prs().conf().voters().contains(**id))
                        .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
                        .map(|(id, _)| *id);
                    if let Some(to) = best {
                        tracing::info!(to, "this leader left the voters; transferring leadership");
                        raw.transfer_leader(to);
                    }
                }
            }
        }
        Some(false)
    }
}

fn joining_of(f: &InFlight) -> Vec<u64> {
    match &f.stage {
        Stage::Compacting { joining, .. } | Stage::CatchingUp { joining, .. } => joining.clone(),
        Stage::Committing => Vec::new(),
    }
}

/// Proposes an empty entry when there is nothing new to snapshot (a snapshot needs applied >
/// the newest snapshot's index) and nothing in flight, so that an idle ensemble still gets
/// its next snapshot; one entry per snapshot, not one per loop turn.
fn poke(raw: &mut RawNode<LmdbStorage>, snapshot_index: u64) {
    let log = &raw.raft.raft_log;
    if log.applied <= snapshot_index && log.last_index() == log.applied {
        let _ = raw.propose(Vec::new(), Vec::new());
    }
}

/// Proposes the state machine's refusal entry so that the origin gets its answer.
fn refuse(
    raw: &mut RawNode<LmdbStorage>,
    sm: &mut dyn StateMachine,
    context: &[u8],
    reason: MembershipRefusal,
) {
    if let Some(entry) = sm.membership_refused(context, reason) {
        if let Err(error) = raw.propose(Vec::new(), entry) {
            tracing::warn!(%error, "cannot propose a reconfig refusal");
        }
    }
}
