//! The nemesis: a schedule of faults generated from a seed *before* the run and printed, so a
//! failing run can be replayed with the same seed. Steps run one after another; each injects a
//! fault, holds it, and undoes it (restart, SIGCONT, heal), then the ensemble gets a quiet gap.
//! Offsets are "not before": a slow restart pushes the later steps back, it never drops one.
#![allow(dead_code)]

use std::fmt;
use std::time::{Duration, Instant};

use crate::common::cluster::{Cluster, Mode};

use super::history::{now_ns, NemesisRecord};
use super::links::Links;
use super::membership::{self, Alongside};

/// SplitMix64: small, seedable, and the same on every machine (the schedule must replay).
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// Whom a step hits, resolved when the step runs (the leader changes during a run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Leader,
    /// The `k`-th non-leader (mod their count).
    Follower(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, stay down for the hold, start again on the same data dir.
    KillRestart(Who),
    /// SIGSTOP for the hold (longer than the session timeout), then SIGCONT.
    Pause(Who),
    /// Cut every peer link of one member, both directions (through the peer-link proxies).
    Isolate(Who),
    /// Two members cut off (each alone): a 5-member ensemble keeps a 3-member majority, a
    /// 3-member ensemble has no quorum at all for the hold.
    IsolateTwo(Who, Who),
    /// Only the connections the first member dials to the second are cut (for rookery: the
    /// first can no longer send to the second; the reverse direction works).
    OneWay(Who, Who),
    /// The others split into two halves that only the bridge member connects (3 servers: the
    /// two non-bridge members cannot talk to each other; 5: two pairs).
    Bridge(Who),
    /// Every peer link of one member delayed by the given milliseconds, both directions (a
    /// slow network through the userspace proxies: the kernel here has no netem).
    Slow(Who, u64),
    /// One member's data disk (a tmpfs of its own, `disks.rs`) filled to the last byte, then
    /// freed.
    DiskFull(Who),
    /// One member's wall clock stepped by the given seconds (forward or back; `clock.rs`),
    /// then stepped back to real time. Its monotonic clock does not move.
    ClockJump(Who, i64),
    /// A membership change under another fault (`membership.rs`, rookery only): the first
    /// member removed by a reconfig while the second (resolved among the others; `None`: the
    /// removed member itself) suffers the other fault, re-added halfway through the hold (the
    /// fault still on), then the fault ends and the full membership is restored.
    Membership(Who, Option<Who>, Alongside),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub at_ms: u64,
    pub fault: Fault,
    pub hold_ms: u64,
}

#[derive(Clone, Debug)]
pub struct Schedule {
    pub seed: u64,
    pub steps: Vec<Step>,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  seed {} ({} steps)", self.seed, self.steps.len())?;
        for s in &self.steps {
            writeln!(
                f,
                "  at {:>6} ms  {:?} for {} ms",
                s.at_ms, s.fault, s.hold_ms
            )?;
        }
        Ok(())
    }
}

/// Which faults a schedule may use.
#[derive(Clone, Copy, Debug)]
pub struct FaultMix {
    pub kills: bool,
    pub pauses: bool,
    pub partitions: bool,
    /// Slow links (`Fault::Slow`).
    pub slow: bool,
    /// Full disks (`Fault::DiskFull`; needs root for the tmpfs mounts).
    pub disk: bool,
    /// Wall-clock jumps (`Fault::ClockJump`; needs libfaketime, rookery only). Off, the
    /// generator draws exactly what it drew before clock jumps existed, so older seeds replay.
    pub clock: bool,
    /// Membership changes under faults (`Fault::Membership`; rookery, root). Off, as for
    /// `clock`, the generator draws what it drew before.
    pub membership: bool,
}

impl Schedule {
    /// A schedule for a run of `secs` seconds on `servers` members whose clients use
    /// `session_ms` sessions: pauses are longer than the session timeout.
    pub fn generate(
        seed: u64,
        secs: u64,
        servers: usize,
        session_ms: u64,
        mix: FaultMix,
    ) -> Schedule {
        let mut rng = SeededRng::new(seed);
        let mut steps = vec![];
        let total_ms = secs * 1000;
        // Let the workloads warm up; leave a tail for recovery before the run ends.
        let mut t = 2_000;
        let mut kinds = vec![];
        if mix.kills {
            kinds.extend([0u8, 1]);
        }
        if mix.pauses {
            kinds.extend([2u8, 3]);
        }
        if mix.partitions {
            kinds.extend([4u8, 5, 6, 7, 8]);
        }
        if mix.slow {
            kinds.push(9u8);
        }
        if mix.disk {
            kinds.push(10u8);
        }
        if mix.clock {
            kinds.push(11u8);
        }
        if mix.membership {
            // Twice the weight of a single fault: it is two at once (and rare enough still).
            kinds.extend([12u8, 12]);
        }
        if kinds.is_empty() {
            return Schedule { seed, steps };
        }
        while t + 4_000 < total_ms {
            let who = |rng: &mut SeededRng| {
                if rng.next_u64().is_multiple_of(2) {
                    Who::Leader
                } else {
                    Who::Follower(rng.range(0, servers as u64 - 2) as usize)
                }
            };
            let kind = kinds[(rng.next_u64() % kinds.len() as u64) as usize];
            let (fault, hold_ms) = match kind {
                0 => (Fault::KillRestart(Who::Leader), rng.range(500, 3_000)),
                1 => (Fault::KillRestart(who(&mut rng)), rng.range(500, 3_000)),
                2 => (
                    Fault::Pause(Who::Leader),
                    session_ms + rng.range(500, 2_500),
                ),
                3 => (
                    Fault::Pause(who(&mut rng)),
                    session_ms + rng.range(500, 2_500),
                ),
                4 => (Fault::Isolate(Who::Leader), rng.range(2_000, 8_000)),
                5 => (Fault::Isolate(who(&mut rng)), rng.range(2_000, 8_000)),
                7 => {
                    let a = who(&mut rng);
                    let b = if a == Who::Leader {
                        Who::Follower(rng.range(0, servers as u64 - 2) as usize)
                    } else {
                        Who::Leader
                    };
                    (Fault::OneWay(a, b), rng.range(2_000, 8_000))
                }
                8 => (Fault::Bridge(who(&mut rng)), rng.range(2_000, 8_000)),
                // From a little latency to more than a heartbeat interval, under load.
                9 => (
                    Fault::Slow(who(&mut rng), rng.range(20, 700)),
                    rng.range(2_000, 8_000),
                ),
                10 => (Fault::DiskFull(who(&mut rng)), rng.range(2_000, 6_000)),
                // From a small NTP-like step to a day, either way.
                11 => {
                    const STEPS_SECS: [i64; 5] = [2, 30, 600, 3_600, 86_400];
                    let magnitude = STEPS_SECS[rng.range(0, STEPS_SECS.len() as u64 - 1) as usize];
                    let secs = if rng.next_u64().is_multiple_of(2) {
                        magnitude
                    } else {
                        -magnitude
                    };
                    (
                        Fault::ClockJump(who(&mut rng), secs),
                        rng.range(2_000, 8_000),
                    )
                }
                12 => {
                    let removed = who(&mut rng);
                    // A third of the time the other fault hits the removed member itself (an
                    // operator removing a dead or slow server).
                    let other = if rng.range(0, 2) == 0 {
                        None
                    } else {
                        Some(who(&mut rng))
                    };
                    let along = match rng.range(0, 3) {
                        0 => Alongside::Pause,
                        1 => Alongside::Isolate,
                        2 => Alongside::Slow(rng.range(50, 500)),
                        _ => Alongside::Kill,
                    };
                    (
                        Fault::Membership(removed, other, along),
                        rng.range(4_000, 10_000),
                    )
                }
                _ => {
                    let a = who(&mut rng);
                    let mut b = Who::Follower(rng.range(0, servers as u64 - 2) as usize);
                    if a == b {
                        b = Who::Follower(
                            (rng.range(0, servers as u64 - 2) as usize + 1) % (servers - 1),
                        );
                    }
                    (Fault::IsolateTwo(a, b), rng.range(1_500, 5_000))
                }
            };
            steps.push(Step {
                at_ms: t,
                fault,
                hold_ms,
            });
            t += hold_ms + rng.range(1_000, 3_000);
        }
        Schedule { seed, steps }
    }
}

/// Resolves `who` among the members now: the live leader (or member 0 when none is known), or
/// the k-th other member.
fn resolve(c: &Cluster, who: Who, exclude: Option<usize>) -> usize {
    let leader = c.leader();
    match who {
        Who::Leader => leader
            .filter(|l| Some(*l) != exclude)
            .unwrap_or_else(|| (0..c.len()).find(|i| Some(*i) != exclude).unwrap_or(0)),
        Who::Follower(k) => {
            let others: Vec<usize> = (0..c.len())
                .filter(|i| Some(*i) != leader && Some(*i) != exclude)
                .collect();
            others[k % others.len()]
        }
    }
}

fn sleep_until(t: Instant, stop_at: Instant) {
    let until = t.min(stop_at);
    let now = Instant::now();
    if until > now {
        std::thread::sleep(until - now);
    }
}

/// Runs `schedule` against `c` from `start` (blocking; call through `Cluster::blocking`),
/// never past `stop_at`. Returns what was done, with times on the history clock.
pub fn run(
    c: &Cluster,
    links: &Links,
    schedule: &Schedule,
    start: Instant,
    stop_at: Instant,
) -> Vec<NemesisRecord> {
    let mut done = vec![];
    for step in &schedule.steps {
        let at = start + Duration::from_millis(step.at_ms);
        if at >= stop_at {
            break;
        }
        sleep_until(at, stop_at);
        let t0 = now_ns();
        let hold_until = Instant::now() + Duration::from_millis(step.hold_ms);
        // The network and disk faults end alike: hold (never far past the run), then undo all.
        let hold_then_heal = || {
            sleep_until(hold_until, stop_at + Duration::from_secs(5));
            links.heal_all();
        };
        let what = match step.fault {
            Fault::KillRestart(w) => {
                let i = resolve(c, w, None);
                let role = c.mode(i);
                c.kill9(i);
                sleep_until(hold_until, stop_at + Duration::from_secs(5));
                c.start_member(i);
                // Bounded: a member that does not come back fails the run loudly.
                c.wait_member_ready(i, 90);
                format!(
                    "kill -9 member {i} ({role:?}), down {} ms, restarted",
                    step.hold_ms
                )
            }
            Fault::Pause(w) => {
                let i = resolve(c, w, None);
                let role = c.mode(i);
                c.sigstop(i);
                sleep_until(hold_until, stop_at + Duration::from_secs(15));
                c.sigcont(i);
                format!(
                    "SIGSTOP member {i} ({role:?}) for {} ms, SIGCONT",
                    step.hold_ms
                )
            }
            Fault::Isolate(w) => {
                let i = resolve(c, w, None);
                let role = c.mode(i);
                links.isolate(i);
                hold_then_heal();
                format!(
                    "isolate member {i} ({role:?}) for {} ms, heal",
                    step.hold_ms
                )
            }
            Fault::IsolateTwo(a, b) => {
                let i = resolve(c, a, None);
                let j = resolve(c, b, Some(i));
                let (ri, rj) = (c.mode(i), c.mode(j));
                links.isolate(i);
                links.isolate(j);
                hold_then_heal();
                format!(
                    "isolate members {i} ({ri:?}) and {j} ({rj:?}) for {} ms, heal",
                    step.hold_ms
                )
            }
            Fault::OneWay(a, b) => {
                let i = resolve(c, a, None);
                let j = resolve(c, b, Some(i));
                let (ri, rj) = (c.mode(i), c.mode(j));
                links.cut_one_way(i, j);
                hold_then_heal();
                format!(
                    "one-way cut {i} ({ri:?}) -> {j} ({rj:?}) for {} ms, heal",
                    step.hold_ms
                )
            }
            Fault::Slow(w, ms) => {
                let i = resolve(c, w, None);
                let role = c.mode(i);
                links.slow(i, ms);
                hold_then_heal();
                format!(
                    "slow links of member {i} ({role:?}) by {ms} ms for {} ms, heal",
                    step.hold_ms
                )
            }
            Fault::DiskFull(w) => {
                let i = resolve(c, w, None);
                let role = c.mode(i);
                let bytes = links.fill_disk(c, i);
                // Whether the member noticed (rookery's mntr says so once a write failed;
                // ZooKeeper has no such key): evidence that the fault bites.
                sleep_until(Instant::now() + Duration::from_millis(1_000), hold_until);
                let noticed = match c.mntr(i).get("rookery_storage_full") {
                    Some(v) => format!("storage_full={v}"),
                    // A member that stopped serving answers no mntr.
                    None => format!("now {:?}", c.mode(i)),
                };
                hold_then_heal();
                format!(
                    "disk of member {i} ({role:?}) full ({} MiB of ballast; {noticed}) for {} ms, freed",
                    bytes >> 20,
                    step.hold_ms
                )
            }
            Fault::ClockJump(w, secs) => {
                let i = resolve(c, w, None);
                let role = c.mode(i);
                crate::clock::set_offset(c, i, secs);
                sleep_until(hold_until, stop_at + Duration::from_secs(5));
                crate::clock::set_offset(c, i, 0);
                format!(
                    "wall clock of member {i} ({role:?}) {secs:+} s for {} ms, back",
                    step.hold_ms
                )
            }
            Fault::Membership(removed, other, along) => {
                let r = resolve(c, removed, None);
                let k = other.map_or(r, |o| resolve(c, o, Some(r)));
                membership::step(c, links, r, k, along, hold_until)
            }
            Fault::Bridge(w) => {
                let b = resolve(c, w, None);
                let rest: Vec<usize> = (0..c.len()).filter(|&x| x != b).collect();
                let (left, right) = rest.split_at(rest.len() / 2);
                let rb = c.mode(b);
                links.bridge(left, right);
                hold_then_heal();
                format!(
                    "bridge: {left:?} | {right:?} joined only by {b} ({rb:?}) for {} ms, heal",
                    step.hold_ms
                )
            }
        };
        let mut what = what;
        for note in restart_crashed(c) {
            what.push_str("; ");
            what.push_str(&note);
        }
        let rec = NemesisRecord {
            start_ns: t0,
            end_ns: now_ns(),
            what,
        };
        eprintln!(
            "nemesis: [{:.0} ms] {}",
            rec.start_ns as f64 / 1e6,
            rec.what
        );
        done.push(rec);
    }
    done
}

/// Members whose process exited on its own (a crash, not a kill of the nemesis): each is
/// reported (exit status and the log's last fatal or panic line) and started again, so that
/// the run goes on and the report says what happened. Any such note is a violation
/// (`runner.rs`).
pub fn restart_crashed(c: &Cluster) -> Vec<String> {
    let mut notes = vec![];
    for i in 0..c.len() {
        let Some(status) = c.exited(i) else {
            continue;
        };
        let log = std::fs::read_to_string(c.log_path(i)).unwrap_or_default();
        // Where it panicked, if it did, and its last fatal line.
        let last = |pat: &str| {
            log.lines()
                .rev()
                .find(|l| l.contains(pat))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let why = format!("{} {}", last("panicked at"), last("fatal"));
        c.kill9(i);
        c.start_member(i);
        notes.push(format!(
            "{CRASHED} member {i} (id {}) with {status}: {why}; started again",
            c.id(i)
        ));
    }
    notes
}

/// The mark of a crash note in a nemesis record.
pub const CRASHED: &str = "EXITED ON ITS OWN:";

/// Undoes everything (SIGCONT, heal, start dead members) and waits for a serving ensemble.
/// Returns the crash notes of [`restart_crashed`].
pub fn recover(c: &Cluster, links: &Links, secs: u64) -> Vec<String> {
    links.heal_all();
    let crashed = restart_crashed(c);
    crate::clock::reset_all(c);
    for i in 0..c.len() {
        c.sigcont(i);
    }
    for i in 0..c.len() {
        if !c.is_running(i) {
            c.start_member(i);
        }
    }
    if let Some(specs) = links.specs() {
        // A membership step that could not restore every member: try again (a removed member
        // never serves again otherwise).
        if let Err(e) = membership::ensure_all(c, specs, secs / 2) {
            panic!("recovery: {e}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let all_serving = (0..c.len()).all(|i| {
            matches!(
                c.mode(i),
                Some(Mode::Leader | Mode::Follower | Mode::Observer)
            )
        });
        if all_serving && c.leader().is_some() {
            return crashed;
        }
        assert!(
            Instant::now() < deadline,
            "ensemble did not recover within {secs}s after the schedule: modes {:?}",
            (0..c.len()).map(|i| c.mode(i)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
