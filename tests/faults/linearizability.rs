//! Linearizability checker for ZooKeeper registers (one znode = one register).
//!
//! The model is a znode's `(value, version)` pair: `setData` without a version is a write,
//! `setData` with an expected version is a compare-and-set on the *version* (ZooKeeper's CAS),
//! `getData` (optionally after `sync`) is a read. Histories are checked per key
//! (P-compositionality: a history of independent registers is linearizable iff each key's
//! sub-history is), each with a Wing–Gong search in Lowe's "just-in-time" form: walk the
//! time-ordered call/return events, try to linearize any pending call at the current point, and
//! backtrack when a return is reached whose operation has not been linearized yet. A memo of
//! (set of linearized operations, register state) pairs already explored keeps the search from
//! revisiting the same configuration, which is what makes it practical on thousands of ops.
//!
//! **Unknown outcomes** (ConnectionLoss, a client-side timeout, the session expiring with the
//! request in flight): the operation may have taken effect at any time after its invocation, or
//! never. It gets no return event, so it never forces a backtrack, and the search succeeds once
//! every *known* operation is linearized; unknown ones may be linearized (with any outcome the
//! model allows) or left out. Unknown reads carry no information and are dropped up front.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};

/// The state of one register: the znode's data (a u64, written as decimal text) and its
/// `dataVersion`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegState {
    pub value: u64,
    pub version: i32,
}

/// What a client asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegCall {
    /// `getData` (with or without a preceding `sync`: the checker judges both the same way; the
    /// workload decides which one it issues).
    Read,
    /// `setData(value, version = -1)`.
    Write { value: u64 },
    /// `setData(value, version = expected_version)`.
    Cas { expected_version: i32, value: u64 },
}

/// What the client learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegOutcome {
    /// A read's data and version.
    ReadOk(RegState),
    /// A write or CAS succeeded; the Stat gave the new version.
    WriteOk { new_version: i32 },
    /// A CAS was refused with BadVersion: definitely not applied.
    CasBadVersion,
    /// No answer, or an answer that does not say whether it was applied.
    Unknown,
}

/// One operation of one register's history. Times are nanoseconds on one monotonic clock (the
/// test process's); `ret` is `None` for unknown outcomes (the effect may land any time after
/// `call`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegOp {
    /// Index in the full history (for reports).
    pub id: usize,
    pub client: u32,
    pub call_ns: u64,
    pub ret_ns: Option<u64>,
    pub call: RegCall,
    pub outcome: RegOutcome,
}

impl RegOp {
    fn known(&self) -> bool {
        self.outcome != RegOutcome::Unknown
    }
}

/// Applies `op` to `s` as the model says; `None` if the outcome is impossible in state `s`.
/// For an unknown outcome this is "the op took effect here".
pub fn step(s: RegState, call: RegCall, outcome: RegOutcome) -> Option<RegState> {
    match (call, outcome) {
        (RegCall::Read, RegOutcome::ReadOk(seen)) => (seen == s).then_some(s),
        (RegCall::Read, _) => None,
        (RegCall::Write { value }, RegOutcome::WriteOk { new_version }) => {
            (new_version == s.version + 1).then_some(RegState {
                value,
                version: new_version,
            })
        }
        (RegCall::Write { value }, RegOutcome::Unknown) => Some(RegState {
            value,
            version: s.version + 1,
        }),
        (RegCall::Write { .. }, _) => None,
        (
            RegCall::Cas {
                expected_version,
                value,
            },
            RegOutcome::WriteOk { new_version },
        ) => (s.version == expected_version && new_version == expected_version + 1).then_some(
            RegState {
                value,
                version: new_version,
            },
        ),
        (
            RegCall::Cas {
                expected_version, ..
            },
            RegOutcome::CasBadVersion,
        ) => (s.version != expected_version).then_some(s),
        // An unknown CAS that did not match had no effect: the same as leaving it out, which
        // the search also tries, so only the matching case is a step.
        (
            RegCall::Cas {
                expected_version,
                value,
            },
            RegOutcome::Unknown,
        ) => (s.version == expected_version).then_some(RegState {
            value,
            version: s.version + 1,
        }),
        (RegCall::Cas { .. }, RegOutcome::ReadOk(_)) => None,
    }
}

/// Result of checking one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists. `longest_prefix` is the longest sequence of op ids the search
    /// managed to linearize; `stuck_at` the op whose return could not be reached.
    NotLinearizable {
        longest_prefix: Vec<usize>,
        stuck_at: usize,
    },
    /// The search hit its step budget without an answer (treated as a failure by the suite).
    GaveUp {
        steps: u64,
    },
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        *self == Verdict::Linearizable
    }
}

/// The value given to unknown writes that no read observed (see `check_register`).
const UNOBSERVED: u64 = u64::MAX;

/// SplitMix64, for the Zobrist keys (deterministic: a verdict never depends on the run).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Shape of an interchangeable unknown op: (is a CAS, its expected version).
type Shape = (bool, i32);

/// One level of the search: the op linearized there, the state before it, and the shapes
/// already tried at that level before it.
type Choice = (usize, RegState, Vec<Shape>);

/// Default step budget per key.
pub const DEFAULT_STEP_BUDGET: u64 = 20_000_000;

#[derive(Clone, Copy)]
enum EventKind {
    Call,
    Return,
}

/// Checks one register's history from `init`.
pub fn check_register(init: RegState, ops: &[RegOp], step_budget: u64) -> Verdict {
    // Unknown reads say nothing.
    let ops: Vec<&RegOp> = ops
        .iter()
        .filter(|o| !(o.call == RegCall::Read && o.outcome == RegOutcome::Unknown))
        .collect();
    let n = ops.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Unknown writes whose value no read ever returned are told apart only by their call time:
    // (a) their value is replaced by one sentinel, so the states after any of them are equal
    // for the memo; (b) among such ops of the same shape that are all pending at one point of
    // the search, only the first is tried there (the futures after choosing either are the
    // same), which keeps a history with many ConnectionLoss writes from exploding.
    let observed: HashSet<u64> = ops
        .iter()
        .filter_map(|o| match o.outcome {
            RegOutcome::ReadOk(s) => Some(s.value),
            _ => None,
        })
        .collect();
    let mut calls: Vec<RegCall> = ops.iter().map(|o| o.call).collect();
    // Shape of an interchangeable unknown op: None for every other op.
    let mut shape: Vec<Option<Shape>> = vec![None; n];
    for (i, o) in ops.iter().enumerate() {
        if o.outcome != RegOutcome::Unknown {
            continue;
        }
        match o.call {
            RegCall::Write { value } if !observed.contains(&value) => {
                calls[i] = RegCall::Write { value: UNOBSERVED };
                shape[i] = Some((false, 0));
            }
            RegCall::Cas {
                expected_version,
                value,
            } if !observed.contains(&value) => {
                calls[i] = RegCall::Cas {
                    expected_version,
                    value: UNOBSERVED,
                };
                shape[i] = Some((true, expected_version));
            }
            _ => {}
        }
    }
    // Versions some acknowledged write produced or some read returned: the write producing
    // each of them is pinned (by its Stat, or by the value the read returned). An unknown
    // write can only have produced a version that is either free or at which its own value
    // was read: producing a pinned version would make the pinned op impossible afterwards
    // (versions only grow), so that branch is cut at once instead of after a long search.
    let mut pinned: HashSet<i32> = HashSet::new();
    let mut seen_at: HashSet<(u64, i32)> = HashSet::new();
    for o in &ops {
        match o.outcome {
            RegOutcome::ReadOk(s) if s.version > init.version => {
                pinned.insert(s.version);
                seen_at.insert((s.value, s.version));
            }
            RegOutcome::WriteOk { new_version } => {
                pinned.insert(new_version);
            }
            _ => {}
        }
    }
    let unknown_may_produce = |o: &RegOp, s: RegState| -> bool {
        if o.outcome != RegOutcome::Unknown {
            return true;
        }
        let v = s.version + 1;
        match o.call {
            RegCall::Read => true,
            RegCall::Write { value } | RegCall::Cas { value, .. } => {
                !pinned.contains(&v) || seen_at.contains(&(value, v))
            }
        }
    };
    // Zobrist keys: the memo stores a 128-bit hash of the set of linearized ops instead of the
    // set itself (memory); a collision has probability ~2^-128 per pair.
    let mut zr = SplitMix(0x5EED_0FC4_EC4E_55AA);
    let zobrist: Vec<u128> = (0..n)
        .map(|_| ((zr.next() as u128) << 64) | zr.next() as u128)
        .collect();
    // Events sorted by time; at equal times calls come first (treat touching intervals as
    // concurrent: never a false alarm from clock granularity).
    let mut events: Vec<(u64, u8, usize, EventKind)> = Vec::with_capacity(2 * n);
    for (i, o) in ops.iter().enumerate() {
        events.push((o.call_ns, 0, i, EventKind::Call));
        if let Some(r) = o.ret_ns {
            if o.known() {
                events.push((r.max(o.call_ns), 1, i, EventKind::Return));
            }
        }
    }
    events.sort_by_key(|e| (e.0, e.1, e.2));
    // Doubly linked list over events; node 0 is the head sentinel, event k is node k + 1.
    let len = events.len() + 1;
    let mut next: Vec<usize> = (1..=len).collect(); // next[last] = len = end
    let mut prev: Vec<usize> = (0..len).map(|i| i.wrapping_sub(1)).collect();
    let end = len;
    let mut call_node = vec![0usize; n];
    let mut ret_node: Vec<Option<usize>> = vec![None; n];
    for (k, e) in events.iter().enumerate() {
        match e.3 {
            EventKind::Call => call_node[e.2] = k + 1,
            EventKind::Return => ret_node[e.2] = Some(k + 1),
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = nx;
        if nx != end {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = x;
        if nx != end {
            prev[nx] = x;
        }
    };

    let mut linearized: u128 = 0;
    let mut memo: HashSet<(u128, RegState)> = HashSet::new();
    let mut state = init;
    // (op, state before it, shapes tried at its level before it)
    let mut stack: Vec<Choice> = vec![];
    // Shapes of interchangeable unknown ops already tried at the current level of the search.
    let mut tried_shapes: Vec<Shape> = vec![];
    let mut remaining_known = ops.iter().filter(|o| o.known()).count();
    let mut best: Vec<usize> = vec![];
    let mut stuck_at = 0;
    let mut steps = 0u64;
    let mut cur = next[0];
    loop {
        if remaining_known == 0 {
            return Verdict::Linearizable;
        }
        steps += 1;
        if steps > step_budget {
            return Verdict::GaveUp { steps };
        }
        // Reaching the end with known ops left cannot happen (each has a return event), but be
        // defensive: it is a failure to linearize.
        if cur == end {
            return Verdict::NotLinearizable {
                longest_prefix: best.iter().map(|&i| ops[i].id).collect(),
                stuck_at: ops[stuck_at].id,
            };
        }
        let (_, _, op, kind) = events[cur - 1];
        match kind {
            EventKind::Call => {
                let o = ops[op];
                let mut advanced = false;
                let skip = shape[op].is_some_and(|sh| tried_shapes.contains(&sh))
                    || !unknown_may_produce(o, state);
                if let Some(new_state) =
                    (!skip).then(|| step(state, calls[op], o.outcome)).flatten()
                {
                    linearized ^= zobrist[op];
                    if memo.insert((linearized, new_state)) {
                        stack.push((op, state, std::mem::take(&mut tried_shapes)));
                        state = new_state;
                        unlink(&mut next, &mut prev, call_node[op]);
                        if let Some(r) = ret_node[op] {
                            unlink(&mut next, &mut prev, r);
                        }
                        if o.known() {
                            remaining_known -= 1;
                        }
                        if stack.len() > best.len() {
                            best = stack.iter().map(|(i, _, _)| *i).collect();
                        }
                        cur = next[0];
                        advanced = true;
                    } else {
                        linearized ^= zobrist[op];
                    }
                }
                if !advanced {
                    cur = next[cur];
                }
            }
            EventKind::Return => {
                // `op` must be linearized before this point and is not: undo the latest choice.
                if stack.len() >= best.len() {
                    stuck_at = op;
                }
                let Some((last, before, tried_before)) = stack.pop() else {
                    return Verdict::NotLinearizable {
                        longest_prefix: best.iter().map(|&i| ops[i].id).collect(),
                        stuck_at: ops[stuck_at].id,
                    };
                };
                state = before;
                linearized ^= zobrist[last];
                // Back at the level where `last` was chosen; the scan goes on after it, and an op
                // interchangeable with `last` need not be tried there any more.
                tried_shapes = tried_before;
                if let Some(sh) = shape[last] {
                    tried_shapes.push(sh);
                }
                if let Some(r) = ret_node[last] {
                    relink(&mut next, &mut prev, r);
                }
                relink(&mut next, &mut prev, call_node[last]);
                if ops[last].known() {
                    remaining_known += 1;
                }
                cur = next[call_node[last]];
            }
        }
    }
}

/// Exhaustive reference checker for small histories (tests only): tries every order that
/// respects real time, and every subset of unknown ops.
pub fn brute_force(init: RegState, ops: &[RegOp]) -> bool {
    fn go(state: RegState, left: &mut Vec<RegOp>) -> bool {
        if left.iter().all(|o| o.outcome == RegOutcome::Unknown) {
            return true;
        }
        // Earliest return among remaining known ops: nothing invoked after it may go first.
        let min_ret = left
            .iter()
            .filter(|o| o.outcome != RegOutcome::Unknown)
            .filter_map(|o| o.ret_ns)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..left.len() {
            if left[i].call_ns > min_ret {
                continue;
            }
            if let Some(s) = step(state, left[i].call, left[i].outcome) {
                let o = left.remove(i);
                let ok = go(s, left);
                left.insert(i, o);
                if ok {
                    return true;
                }
            }
        }
        false
    }
    let mut v: Vec<RegOp> = ops
        .iter()
        .filter(|o| !(o.call == RegCall::Read && o.outcome == RegOutcome::Unknown))
        .cloned()
        .collect();
    go(init, &mut v)
}

/// A failing key with a small witness.
#[derive(Clone, Debug)]
pub struct Anomaly {
    pub key: String,
    pub verdict: Verdict,
    /// A sub-history that is itself not linearizable: the shortest non-linearizable prefix
    /// (ops invoked before a cut; ops still running at the cut count as unknown), with reads
    /// and refused CASes removed greedily while it stays non-linearizable. Removing those only
    /// removes constraints, so the witness is a genuine violation of the full history.
    pub witness: Vec<RegOp>,
}

/// Shrinks a failing history into a small witness (bounded number of re-checks).
pub fn shrink(init: RegState, ops: &[RegOp]) -> Vec<RegOp> {
    let budget = 2_000_000;
    let fails = |h: &[RegOp]| {
        matches!(
            check_register(init, h, budget),
            Verdict::NotLinearizable { .. }
        )
    };
    let mut sorted: Vec<RegOp> = ops.to_vec();
    sorted.sort_by_key(|o| o.call_ns);
    // Prefix cut at the call time of op k: ops called before it; those returning after the cut
    // become unknown (they may or may not have happened by then).
    let prefix = |k: usize| -> Vec<RegOp> {
        let cut = sorted.get(k).map(|o| o.call_ns).unwrap_or(u64::MAX);
        sorted[..k]
            .iter()
            .map(|o| {
                let mut o = o.clone();
                // Still running at the cut: it may or may not have taken effect by then (an
                // unfinished read says nothing and is dropped by the checker).
                if o.ret_ns.is_none_or(|r| r >= cut) && cut != u64::MAX {
                    o.outcome = RegOutcome::Unknown;
                    o.ret_ns = None;
                }
                o
            })
            .collect()
    };
    if !fails(&sorted) {
        return sorted;
    }
    // Smallest k with a failing prefix (monotone: a failing prefix makes every longer one fail).
    let (mut lo, mut hi) = (1usize, sorted.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(&prefix(mid)) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut w = if hi == sorted.len() {
        sorted.clone()
    } else {
        prefix(hi)
    };
    // Greedy removal of constraint-only ops (reads, refused CASes), newest last-read kept.
    let mut i = 0;
    let mut checks = 0;
    while i < w.len() && checks < 400 {
        let removable = w[i].call == RegCall::Read || w[i].outcome == RegOutcome::CasBadVersion;
        if removable {
            let mut t = w.clone();
            t.remove(i);
            checks += 1;
            if fails(&t) {
                w = t;
                continue;
            }
        }
        i += 1;
    }
    w
}

/// Checks every key; returns the anomalies (empty = linearizable).
pub fn check_all(
    inits: &BTreeMap<String, RegState>,
    per_key: &BTreeMap<String, Vec<RegOp>>,
    step_budget: u64,
) -> Vec<Anomaly> {
    let mut out = vec![];
    for (key, ops) in per_key {
        let init = inits.get(key).copied().unwrap_or(RegState {
            value: 0,
            version: 0,
        });
        let verdict = check_register(init, ops, step_budget);
        if !verdict.is_ok() {
            let witness = match verdict {
                Verdict::NotLinearizable { .. } => shrink(init, ops),
                _ => vec![],
            };
            out.push(Anomaly {
                key: key.clone(),
                verdict,
                witness,
            });
        }
    }
    out
}
