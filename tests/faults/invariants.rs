//! Checks of a whole run: linearizability of the registers plus the invariants of the other
//! workloads, and a failure report with the seed, a small witness and the nemesis events
//! around it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::history::{History, LockRecord, NemesisRecord, RegRecord, SeqRecord};
use super::linearizability::{self, Anomaly, RegOp};

/// Sequential creates: acknowledged sequence numbers are unique; an acknowledged create that
/// finished before another one started got the smaller number; after the run every
/// acknowledged node exists and no more nodes exist than creates were attempted.
pub fn check_sequential(seqs: &[SeqRecord], final_listing: Option<&[i64]>) -> Vec<String> {
    let mut problems = vec![];
    let acked: Vec<&SeqRecord> = seqs.iter().filter(|s| s.seq.is_some()).collect();
    let mut by_seq: BTreeMap<i64, &SeqRecord> = BTreeMap::new();
    for s in &acked {
        let n = s.seq.unwrap_or_default();
        if let Some(other) = by_seq.insert(n, s) {
            problems.push(format!(
                "sequence number {n} acknowledged twice: {other:?} and {s:?}"
            ));
        }
    }
    // Real-time order: sort by return time and keep the running maximum of the seqs of ops that
    // returned before each op's call (a sweep, O(n log n)).
    let mut by_ret: Vec<&SeqRecord> = acked.clone();
    by_ret.sort_by_key(|s| s.ret_ns);
    let mut by_call: Vec<&SeqRecord> = acked.clone();
    by_call.sort_by_key(|s| s.call_ns);
    let mut j = 0;
    let mut max_before: Option<&SeqRecord> = None;
    for s in by_call {
        while j < by_ret.len() && by_ret[j].ret_ns.is_some_and(|r| r < s.call_ns) {
            if max_before.is_none_or(|m| by_ret[j].seq > m.seq) {
                max_before = Some(by_ret[j]);
            }
            j += 1;
        }
        if let Some(m) = max_before {
            if m.seq >= s.seq {
                problems.push(format!(
                    "sequence went backwards in real time: {m:?} finished before {s:?} started but got {:?} >= {:?}",
                    m.seq, s.seq
                ));
                if problems.len() > 20 {
                    break;
                }
            }
        }
    }
    if let Some(listing) = final_listing {
        let present: std::collections::BTreeSet<i64> = listing.iter().copied().collect();
        for s in &acked {
            let n = s.seq.unwrap_or_default();
            if !present.contains(&n) {
                problems.push(format!(
                    "acknowledged sequential node {n} missing after the run: {s:?}"
                ));
            }
        }
        let attempted = seqs.len();
        if present.len() > attempted {
            problems.push(format!(
                "{} sequential nodes exist but only {attempted} creates were attempted",
                present.len()
            ));
        }
    }
    problems
}

/// Locks: no two tenures overlap in time (each tenure is what its holder believed, see
/// [`LockRecord`]).
pub fn check_locks(locks: &[LockRecord]) -> Vec<String> {
    let mut v: Vec<&LockRecord> = locks.iter().collect();
    v.sort_by_key(|l| l.acquired_ns);
    let mut problems = vec![];
    // Sweep: the tenure reaching furthest so far; any tenure starting before it ends overlaps.
    let mut furthest: Option<&LockRecord> = None;
    for l in v {
        if let Some(f) = furthest {
            if l.acquired_ns < f.released_ns {
                problems.push(format!(
                    "two lock holders at once: {f:?} and {l:?} (overlap {} ms)",
                    (f.released_ns.min(l.released_ns) - l.acquired_ns) / 1_000_000
                ));
            }
        }
        if furthest.is_none_or(|f| l.released_ns > f.released_ns) {
            furthest = Some(l);
        }
    }
    problems
}

/// How much earlier than its timeout ZooKeeper itself may expire a session whose client still
/// gets answers: a follower cut off from the leader serves its clients for up to
/// syncLimit × tickTime (2.5 s here) while the leader no longer hears their touches; plus one
/// tickTime of touch and expiry-check periods.
pub const EXPIRY_SLACK_MS: u64 = 3_000;

/// Sessions: a client whose request (invoked at `c`) succeeded had its session alive and
/// touched at or after `c`, so the session may not expire before `c + timeout - slack`; the
/// client learns of an expiry no earlier than it happened. A "session expired" answer to a
/// register client earlier than that is a violation. (Register clients only start a new session
/// after the old one terminated, so their ops before an expiry all belong to that session.)
pub fn check_session_liveness(regs: &[RegRecord], session_ms: u64) -> Vec<String> {
    let mut by_client: BTreeMap<u32, Vec<&RegRecord>> = BTreeMap::new();
    for r in regs {
        by_client.entry(r.op.client).or_default().push(r);
    }
    let mut problems = vec![];
    let window_ns = session_ms.saturating_sub(EXPIRY_SLACK_MS) * 1_000_000;
    for (client, mut ops) in by_client {
        ops.sort_by_key(|r| r.op.call_ns);
        let mut last_ok: Option<&RegRecord> = None;
        for r in ops {
            if r.op.outcome != super::linearizability::RegOutcome::Unknown {
                last_ok = Some(r);
            } else if r.error.as_deref() == Some("session expired") {
                if let Some(ok) = last_ok {
                    // The expiry answer arrived no later than this op's call + its bound; use
                    // the call time (conservative: it is earlier than the answer).
                    if r.op.call_ns < ok.op.call_ns + window_ns {
                        problems.push(format!(
                            "session of client {client} (member {}) expired {} ms after a request it invoked succeeded \
                             (timeout {session_ms} ms, slack {EXPIRY_SLACK_MS} ms): last success {:?}, expiry seen by op #{} invoked at {} ms",
                            r.member,
                            (r.op.call_ns - ok.op.call_ns) / 1_000_000,
                            ok.op,
                            r.op.id,
                            r.op.call_ns / 1_000_000
                        ));
                    }
                }
                last_ok = None;
            }
        }
    }
    problems
}

/// The outcome of checking one run.
#[derive(Debug, Default)]
pub struct Report {
    pub anomalies: Vec<Anomaly>,
    pub seq_problems: Vec<String>,
    pub lock_problems: Vec<String>,
    pub session_problems: Vec<String>,
    pub online: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.anomalies.is_empty()
            && self.seq_problems.is_empty()
            && self.lock_problems.is_empty()
            && self.session_problems.is_empty()
            && self.online.is_empty()
    }
}

pub fn check(h: &History) -> Report {
    Report {
        anomalies: linearizability::check_all(
            &h.inits,
            &h.reg_ops_per_key(),
            linearizability::DEFAULT_STEP_BUDGET,
        ),
        seq_problems: check_sequential(&h.seqs, h.seq_final.as_deref()),
        lock_problems: check_locks(&h.locks),
        session_problems: check_session_liveness(&h.regs, h.session_ms),
        online: h.online_violations.clone(),
    }
}

fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

fn describe_op(o: &RegOp, rec: Option<&RegRecord>) -> String {
    let ret = o.ret_ns.map(ms).unwrap_or_else(|| "?".into());
    let (member, synced, err) = rec
        .map(|r| {
            (
                r.member.to_string(),
                r.synced,
                r.error.clone().unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    format!(
        "  #{:<6} client {:<4} member {member:<2} [{} .. {ret}] ms {:?}{} -> {:?} {err}",
        o.id,
        o.client,
        ms(o.call_ns),
        o.call,
        if synced { " (after sync)" } else { "" },
        o.outcome
    )
}

/// Human-readable failure report: seed, replay command, witness sub-histories with the nemesis
/// events overlapping them.
pub fn render(h: &History, r: &Report, schedule: &str, test_name: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "FAULT RUN FAILED: target={} servers={} seed={}\nreplay: FAULT_TARGET={} FAULT_SERVERS={} FAULT_SEED={} FAULT_SCHEDULES=1 cargo test --test faults {test_name} -- --ignored --exact --nocapture\n(the history alone: FAULT_RECHECK=<history file> cargo test --test faults recheck_history -- --ignored)",
        h.target, h.servers, h.seed, h.target, h.servers, h.seed
    );
    let _ = writeln!(s, "schedule:\n{schedule}");
    let by_id: BTreeMap<usize, &RegRecord> = h.regs.iter().map(|r| (r.op.id, r)).collect();
    for a in &r.anomalies {
        let _ = writeln!(
            s,
            "register {} is not linearizable: {:?}",
            a.key,
            verdict_short(&a.verdict)
        );
        if a.witness.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            " witness ({} ops, itself not linearizable):",
            a.witness.len()
        );
        for o in &a.witness {
            let _ = writeln!(s, "{}", describe_op(o, by_id.get(&o.id).copied()));
        }
        let lo = a.witness.iter().map(|o| o.call_ns).min().unwrap_or(0);
        let hi = a
            .witness
            .iter()
            .map(|o| o.ret_ns.unwrap_or(o.call_ns))
            .max()
            .unwrap_or(0);
        let near: Vec<&NemesisRecord> = h
            .nemesis
            .iter()
            .filter(|n| n.end_ns + 2_000_000_000 >= lo && n.start_ns <= hi + 2_000_000_000)
            .collect();
        let _ = writeln!(s, " nemesis events within 2 s of the witness:");
        for n in near {
            let _ = writeln!(
                s,
                "  [{} .. {}] ms {}",
                ms(n.start_ns),
                ms(n.end_ns),
                n.what
            );
        }
    }
    for p in r
        .seq_problems
        .iter()
        .chain(&r.lock_problems)
        .chain(&r.session_problems)
        .chain(&r.online)
    {
        let _ = writeln!(s, "{p}");
    }
    s
}

fn verdict_short(v: &linearizability::Verdict) -> String {
    match v {
        linearizability::Verdict::Linearizable => "linearizable".into(),
        linearizability::Verdict::NotLinearizable {
            longest_prefix,
            stuck_at,
        } => format!(
            "longest linearizable prefix {} ops, cannot place op #{stuck_at}",
            longest_prefix.len()
        ),
        linearizability::Verdict::GaveUp { steps } => {
            format!("checker gave up after {steps} steps (inconclusive, counted as failure)")
        }
    }
}
