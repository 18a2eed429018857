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
//! 4. a leader that removes itself first hands leadership to the most caught-up voter that
//!    stays ([`Stage::HandingOver`]); that voter, once it leads, carries the change out.
//!    Only if the handover does not happen in time does the old leader carry it out itself;
//!    it then steps down as it applies the configuration without itself
//!    (`Node::step_down_if_removed`).
//!
//! Every replica's state machine remembers the changes accepted and not yet settled
//! ([`super::StateMachine::unsettled_membership_changes`]); a new leader, once caught up,
//! carries out those an earlier leader left (after a handover, or a crash), so a committed
//! reconfig always gets its answer from the log.
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
        /// Learners already there that must catch up too ([`Stage::CatchingUp`]).
        promoting: Vec<u64>,
        /// Give up (NoQuorum) after this.
        deadline: Instant,
    },
    /// New participants were proposed as learners; waiting for them to catch up.
    CatchingUp {
        /// The learners this change added, that must catch up (removed again if they fail).
        joining: Vec<u64>,
        /// Learners that were there before (observers to promote, or joiners an earlier
        /// leader added before it handed over or died): they must catch up as well before
        /// they vote, or the joint configuration could lack a quorum.
        promoting: Vec<u64>,
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
    /// This leader is not a voter of the change's configuration: it asked `to` to take over
    /// (raft-rs's leadership transfer), which then carries the change out. Past the deadline,
    /// still leading, it carries it out itself.
    HandingOver {
        /// The voter asked to take over.
        to: u64,
        /// When to stop waiting for the handover.
        deadline: Instant,
    },
    /// A majority of the new configuration's voters was not in touch with this leader when
    /// the joint change was due: it is tried again every turn until the deadline, then
    /// refused ([`MembershipRefusal::NoQuorum`]).
    AwaitingQuorum {
        /// When to refuse.
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
    /// How long a leader removing itself waits for its handover (two election timeouts: raft-rs
    /// gives a transfer up after one).
    handover_timeout: Duration,
    /// Term in which this node, as caught-up leader, last looked for changes an earlier leader
    /// accepted and did not settle (once per term).
    adopted_in: u64,
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
    pub(super) fn new(catch_up_timeout: Duration, handover_timeout: Duration) -> Self {
        Orchestrator {
            catch_up_timeout,
            handover_timeout,
            adopted_in: 0,
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

    /// Acts on `change` as the leader of its term. `may_hand_over`: false for a change taken
    /// over from an earlier leader, and once a handover did not happen (no second one).
    fn requested(
        &mut self,
        raw: &mut RawNode<LmdbStorage>,
        sm: &mut dyn StateMachine,
        change: MembershipChange,
        may_hand_over: bool,
    ) {
        if raw.raft.state != StateRole::Leader || raw.raft.term != change.term {
            // An earlier leader's: the next caught-up leader takes it over (`adopt`).
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
        let me = raw.raft.id;
        if may_hand_over && !change.voters.contains(&me) {
            if let Some(to) = handover_target(raw, &change.voters) {
                tracing::info!(
                    to,
                    term = raw.raft.term,
                    "reconfig removes this leader: handing leadership over before the change"
                );
                raw.transfer_leader(to);
                self.in_flight = Some(InFlight {
                    change,
                    stage: Stage::HandingOver {
                        to,
                        deadline: Instant::now() + self.handover_timeout,
                    },
                });
                return;
            }
        }
        self.carry_out(raw, sm, change);
    }

    /// Carries `change` out as this leader: joiners first, then the joint change.
    fn carry_out(
        &mut self,
        raw: &mut RawNode<LmdbStorage>,
        sm: &mut dyn StateMachine,
        change: MembershipChange,
    ) {
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
        let promoting: Vec<u64> = change
            .voters
            .iter()
            .copied()
            .filter(|id| cs.learners.contains(id))
            .collect();
        let deadline = Instant::now() + self.catch_up_timeout;
        if joining.is_empty() {
            if promoting.is_empty() {
                self.propose_joint(raw, sm, change);
            } else {
                // Already learners, so already past their snapshot: they only need the log
                // up to the commit index of now.
                let target = raw.raft.raft_log.committed;
                tracing::info!(promoting = ?promoting, target, "reconfig: waiting for the learners to promote to catch up");
                self.in_flight = Some(InFlight {
                    change,
                    stage: Stage::CatchingUp {
                        joining,
                        promoting,
                        target,
                        learners_at: raw.raft.raft_log.applied,
                        deadline,
                    },
                });
            }
            return;
        }
        if raw.raft.raft_log.first_index() <= 1 {
            tracing::info!("reconfig: compacting the log first, so that joiners get a snapshot");
            self.in_flight = Some(InFlight {
                change,
                stage: Stage::Compacting {
                    joining,
                    promoting,
                    deadline,
                },
            });
            return;
        }
        self.add_learners(raw, sm, change, joining, promoting, deadline);
    }

    /// Proposes the joiners as learners (the first step of a change that adds servers).
    fn add_learners(
        &mut self,
        raw: &mut RawNode<LmdbStorage>,
        sm: &mut dyn StateMachine,
        change: MembershipChange,
        joining: Vec<u64>,
        promoting: Vec<u64>,
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
                promoting,
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
        // A retry from [`Stage::AwaitingQuorum`] keeps its deadline; nothing else is in flight.
        let waiting_until = match self.in_flight.take() {
            Some(InFlight {
                stage: Stage::AwaitingQuorum { deadline },
                ..
            }) => Some(deadline),
            other => {
                self.in_flight = other;
                None
            }
        };
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
        if !quorum_in_touch(raw, &change.voters) {
            // ZooKeeper's leader refuses a reconfig unless a quorum of the new configuration
            // is connected and synced (`Leader.isQuorumSynced`): entering a joint
            // configuration whose incoming half cannot commit would stop the ensemble until
            // enough of it came back. A leader that just took over has not heard from its
            // peers yet, so wait for them a little before refusing.
            let deadline = waiting_until.unwrap_or_else(|| Instant::now() + self.handover_timeout);
            if Instant::now() >= deadline {
                tracing::warn!(
                    voters = ?change.voters,
                    "reconfig refused: a quorum of the new configuration is not in touch with the leader"
                );
                refuse(raw, sm, &change.context, MembershipRefusal::NoQuorum);
            } else {
                self.in_flight = Some(InFlight {
                    change,
                    stage: Stage::AwaitingQuorum { deadline },
                });
            }
            return;
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
        // Earlier leaders' changes first: they were accepted before this term's.
        if caught_up {
            self.adopt(raw, sm);
        }
        for change in std::mem::take(&mut self.requested) {
            self.requested(raw, sm, change, true);
        }
        self.step(raw, sm, caught_up, snapshot_index) == Some(true)
    }

    /// Once per term, as caught-up leader: takes over the changes earlier leaders accepted
    /// and did not settle. The first is carried out, any later one refused (one at a time).
    fn adopt(&mut self, raw: &mut RawNode<LmdbStorage>, sm: &mut dyn StateMachine) {
        let term = raw.raft.term;
        if raw.raft.state != StateRole::Leader || self.adopted_in == term {
            return;
        }
        if raw.raft.has_pending_conf() || is_joint(raw) {
            // Most likely the earlier leader's own step of the change (its learners, or a
            // joint configuration to leave): let it apply first, then look again.
            return;
        }
        self.adopted_in = term;
        for mut change in sm.unsettled_membership_changes() {
            if change.term >= term {
                // Accepted in this term: `request` brings it.
                continue;
            }
            tracing::info!(
                accepted_in = change.term,
                term,
                voters = ?change.voters,
                learners = ?change.learners,
                "taking over a membership change an earlier leader accepted"
            );
            change.term = term;
            self.requested(raw, sm, change, false);
        }
    }

    fn step(
        &mut self,
        raw: &mut RawNode<LmdbStorage>,
        sm: &mut dyn StateMachine,
        caught_up: bool,
        snapshot_index: u64,
    ) -> Option<bool> {
        if raw.raft.state != StateRole::Leader {
            match self.in_flight.take() {
                Some(InFlight {
                    stage: Stage::Committing,
                    ..
                }) => {
                    // The joint change is in the log: whoever leads now finishes it.
                    tracing::info!(
                        "no longer the leader; the next one leaves the joint configuration"
                    );
                }
                Some(f) => tracing::info!(
                    term = f.change.term,
                    "no longer the leader; the next one takes the membership change over"
                ),
                None => {}
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
            Stage::AwaitingQuorum { .. } => {
                if quorum_in_touch(raw, &f.change.voters) {
                    tracing::info!("reconfig: the new configuration's quorum is in touch now");
                }
                // Tries again, or refuses past the deadline (it keeps the stage meanwhile).
                let change = f.change.clone();
                self.propose_joint(raw, sm, change);
            }
            Stage::HandingOver { to, deadline } => {
                // raft-rs clears the transferee when it gives the transfer up.
                if raw.raft.lead_transferee.is_none() || Instant::now() >= *deadline {
                    let to = *to;
                    let f = self.in_flight.take()?;
                    tracing::warn!(
                        to,
                        "the handover did not happen; this leader carries the change out itself"
                    );
                    raw.raft.abort_leader_transfer();
                    self.requested(raw, sm, f.change, false);
                }
            }
            Stage::Compacting {
                joining,
                promoting,
                deadline,
            } => {
                let (joining, promoting, deadline) =
                    (joining.clone(), promoting.clone(), *deadline);
                if raw.raft.raft_log.first_index() > 1 {
                    let f = self.in_flight.take()?;
                    self.add_learners(raw, sm, f.change, joining, promoting, deadline);
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
                promoting,
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
                        .chain(promoting.iter())
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
                // Done. A leader that left the voters has stepped down as it applied the
                // change (`Node::step_down_if_removed`), so it is not here any more.
                self.in_flight = None;
            }
        }
        Some(false)
    }
}

fn joining_of(f: &InFlight) -> Vec<u64> {
    match &f.stage {
        Stage::Compacting { joining, .. } | Stage::CatchingUp { joining, .. } => joining.clone(),
        Stage::HandingOver { .. } | Stage::AwaitingQuorum { .. } | Stage::Committing => Vec::new(),
    }
}

/// Whether a majority of `voters` (the new configuration's) is in touch with this leader:
/// itself, and the peers it heard from since its last quorum check (raft-rs's `recent_active`,
/// cleared every election timeout) or that hold everything committed.
fn quorum_in_touch(raw: &RawNode<LmdbStorage>, voters: &[u64]) -> bool {
    let me = raw.raft.id;
    let committed = raw.raft.raft_log.committed;
    let prs = raw.raft.prs();
    let in_touch = voters
        .iter()
        .filter(|id| {
            **id == me
                || prs
                    .get(**id)
                    .is_some_and(|p| p.recent_active || p.matched >= committed)
        })
        .count();
    in_touch > voters.len() / 2
}

/// The voter to hand leadership to before a change that removes this leader: among the
/// current voters that stay voters, the one with the most of the log (the lowest id on a tie).
pub(super) fn handover_target(raw: &RawNode<LmdbStorage>, staying: &[u64]) -> Option<u64> {
    let me = raw.raft.id;
    let prs = raw.raft.prs();
    prs.iter()
        .filter(|(id, _)| **id != me && staying.contains(id))
        .filter(|(id, _)| prs.conf().voters().contains(**id))
        .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
        .map(|(id, _)| *id)
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
