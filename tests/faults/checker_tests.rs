//! Validation of the checkers: known linearizable and non-linearizable histories (unknown
//! outcomes included), a property test against an exhaustive reference, the shrinker, the
//! sequential/lock invariants and the JSON-lines round trip.

use proptest::prelude::*;

use super::history::{History, LockRecord, RegRecord, SeqRecord};
use super::invariants::{check_locks, check_sequential, check_session_liveness};
use super::linearizability::*;

const INIT: RegState = RegState {
    value: 0,
    version: 0,
};

fn st(value: u64, version: i32) -> RegState {
    RegState { value, version }
}

/// Builds ops from (client, call ms, return ms or None, call, outcome).
fn h(ops: &[(u32, u64, Option<u64>, RegCall, RegOutcome)]) -> Vec<RegOp> {
    ops.iter()
        .enumerate()
        .map(|(id, &(client, c, r, call, outcome))| RegOp {
            id,
            client,
            call_ns: c * 1_000_000,
            ret_ns: r.map(|r| r * 1_000_000),
            call,
            outcome,
        })
        .collect()
}

fn lin(ops: &[RegOp]) -> bool {
    let v = check_register(INIT, ops, DEFAULT_STEP_BUDGET);
    assert!(!matches!(v, Verdict::GaveUp { .. }), "gave up on {ops:?}");
    let brute = brute_force(INIT, ops);
    assert_eq!(
        v.is_ok(),
        brute,
        "checker and brute force disagree on {ops:?}: {v:?}"
    );
    v.is_ok()
}

use RegCall::{Cas, Read, Write};
use RegOutcome::{CasBadVersion, ReadOk, Unknown, WriteOk};

#[test]
fn sequential_write_then_read_is_linearizable() {
    assert!(lin(&h(&[
        (
            1,
            0,
            Some(1),
            Write { value: 7 },
            WriteOk { new_version: 1 }
        ),
        (2, 2, Some(3), Read, ReadOk(st(7, 1))),
    ])));
}

#[test]
fn stale_read_after_a_completed_write_is_not_linearizable() {
    // The write finished before the read started, yet the read saw the old value.
    assert!(!lin(&h(&[
        (
            1,
            0,
            Some(1),
            Write { value: 7 },
            WriteOk { new_version: 1 }
        ),
        (2, 2, Some(3), Read, ReadOk(st(0, 0))),
    ])));
}

#[test]
fn concurrent_read_may_see_either_value() {
    for seen in [st(0, 0), st(7, 1)] {
        assert!(lin(&h(&[
            (
                1,
                0,
                Some(10),
                Write { value: 7 },
                WriteOk { new_version: 1 }
            ),
            (2, 2, Some(3), Read, ReadOk(seen)),
        ])));
    }
}

#[test]
fn reads_cannot_go_back_in_time() {
    // Both reads overlap the write, but the second starts after the first saw the new value.
    assert!(!lin(&h(&[
        (
            1,
            0,
            Some(10),
            Write { value: 7 },
            WriteOk { new_version: 1 }
        ),
        (2, 1, Some(2), Read, ReadOk(st(7, 1))),
        (3, 3, Some(4), Read, ReadOk(st(0, 0))),
    ])));
}

#[test]
fn unknown_write_may_take_effect_long_after_its_call() {
    // The unknown write shows up in a read much later, after another write: fine.
    assert!(lin(&h(&[
        (1, 0, None, Write { value: 5 }, Unknown),
        (
            2,
            10,
            Some(11),
            Write { value: 6 },
            WriteOk { new_version: 1 }
        ),
        (3, 20, Some(21), Read, ReadOk(st(5, 2))),
    ])));
}

#[test]
fn unknown_write_may_never_take_effect() {
    assert!(lin(&h(&[
        (1, 0, None, Write { value: 5 }, Unknown),
        (3, 20, Some(21), Read, ReadOk(st(0, 0))),
    ])));
}

#[test]
fn unknown_write_cannot_take_effect_before_its_call() {
    // A read that finished before the unknown write was even invoked cannot see it.
    assert!(!lin(&h(&[
        (3, 0, Some(1), Read, ReadOk(st(5, 1))),
        (1, 2, None, Write { value: 5 }, Unknown),
    ])));
}

#[test]
fn unknown_write_takes_effect_at_most_once() {
    // Seen, then gone again without any other write: impossible.
    assert!(!lin(&h(&[
        (1, 0, None, Write { value: 5 }, Unknown),
        (2, 10, Some(11), Read, ReadOk(st(5, 1))),
        (3, 12, Some(13), Read, ReadOk(st(0, 0))),
    ])));
}

#[test]
fn cas_semantics() {
    // CAS on version 0 succeeds, a second CAS on version 0 must be refused.
    assert!(lin(&h(&[
        (
            1,
            0,
            Some(1),
            Cas {
                expected_version: 0,
                value: 3
            },
            WriteOk { new_version: 1 }
        ),
        (
            2,
            2,
            Some(3),
            Cas {
                expected_version: 0,
                value: 4
            },
            CasBadVersion
        ),
        (3, 4, Some(5), Read, ReadOk(st(3, 1))),
    ])));
    // Two CASes on the same version cannot both succeed.
    assert!(!lin(&h(&[
        (
            1,
            0,
            Some(5),
            Cas {
                expected_version: 0,
                value: 3
            },
            WriteOk { new_version: 1 }
        ),
        (
            2,
            0,
            Some(5),
            Cas {
                expected_version: 0,
                value: 4
            },
            WriteOk { new_version: 1 }
        ),
    ])));
    // A refused CAS when nothing changed the version is impossible.
    assert!(!lin(&h(&[(
        1,
        0,
        Some(1),
        Cas {
            expected_version: 0,
            value: 3
        },
        CasBadVersion
    )])));
    // ... unless a concurrent unknown write may have bumped it.
    assert!(lin(&h(&[
        (2, 0, None, Write { value: 9 }, Unknown),
        (
            1,
            1,
            Some(2),
            Cas {
                expected_version: 0,
                value: 3
            },
            CasBadVersion
        ),
    ])));
}

#[test]
fn write_versions_must_be_consecutive() {
    // Two acknowledged writes cannot both produce version 1.
    assert!(!lin(&h(&[
        (
            1,
            0,
            Some(1),
            Write { value: 1 },
            WriteOk { new_version: 1 }
        ),
        (
            2,
            2,
            Some(3),
            Write { value: 2 },
            WriteOk { new_version: 1 }
        ),
    ])));
}

#[test]
fn unknown_read_is_ignored_and_unknown_cas_only_applies_on_match() {
    assert!(lin(&h(&[
        (1, 0, None, Read, Unknown),
        (
            2,
            1,
            None,
            Cas {
                expected_version: 5,
                value: 9
            },
            Unknown
        ),
        (3, 2, Some(3), Read, ReadOk(st(0, 0))),
    ])));
    // The unknown CAS on version 5 can never apply, so nobody may observe its value.
    assert!(!lin(&h(&[
        (
            2,
            1,
            None,
            Cas {
                expected_version: 5,
                value: 9
            },
            Unknown
        ),
        (3, 2, Some(3), Read, ReadOk(st(9, 1))),
    ])));
}

#[test]
fn shrink_keeps_a_genuine_small_witness() {
    // A long valid history with one stale read in the middle.
    let mut ops = vec![];
    let mut t = 0;
    for v in 1..=40u64 {
        ops.push((
            1,
            t,
            Some(t + 1),
            Write { value: v },
            WriteOk {
                new_version: v as i32,
            },
        ));
        ops.push((2, t + 2, Some(t + 3), Read, ReadOk(st(v, v as i32))));
        t += 4;
    }
    ops[41].4 = ReadOk(st(19, 19)); // read after write 21 sees write 19
    let hist = h(&ops);
    assert!(!check_register(INIT, &hist, DEFAULT_STEP_BUDGET).is_ok());
    let w = shrink(INIT, &hist);
    assert!(
        !check_register(INIT, &w, DEFAULT_STEP_BUDGET).is_ok(),
        "witness must fail"
    );
    assert!(w.len() <= 23, "witness too long: {} ops", w.len());
    assert!(w.iter().any(|o| o.id == 41), "witness lost the stale read");
    // Only the stale read should be left of the reads.
    assert_eq!(w.iter().filter(|o| o.call == Read).count(), 1, "{w:?}");
}

/// Random histories: a sequential register with random overlapping intervals; each op takes
/// effect at a random point in its interval (unknown ops: anywhere after the call, or never).
/// With `corrupt`, one read's result is replaced by a random value/version.
fn gen_history(seed: u64, n: usize, corrupt: bool) -> Vec<RegOp> {
    let mut rng = super::nemesis::SeededRng::new(seed);
    struct Plan {
        call: u64,
        ret: u64,
        point: u64,
        kind: u64,
        unknown: bool,
        applied: bool,
    }
    let plans: Vec<Plan> = (0..n)
        .map(|_| {
            // Spread calls so that about two to three ops overlap at any time.
            let call = rng.range(0, 5 * n as u64);
            let ret = call + rng.range(1, 15);
            let unknown = rng.range(0, 5) == 0;
            let point = if unknown {
                call + rng.range(0, 60)
            } else {
                rng.range(call, ret)
            };
            Plan {
                call,
                ret,
                point,
                kind: rng.range(0, 2),
                unknown,
                applied: rng.range(0, 1) == 0,
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (plans[i].point, i));
    let mut s = INIT;
    let mut ops: Vec<Option<RegOp>> = vec![None; n];
    for (next_value, &i) in (101u64..).zip(order.iter()) {
        let p = &plans[i];
        let call = match p.kind {
            0 => Read,
            1 => Write { value: next_value },
            _ => Cas {
                expected_version: if rng.range(0, 1) == 0 {
                    s.version
                } else {
                    s.version + 1
                },
                value: next_value,
            },
        };
        let outcome = if p.unknown {
            // An unknown op took effect (if the model allows it here) or was lost.
            if p.applied {
                if let Some(ns) = step(s, call, Unknown) {
                    s = ns;
                }
            }
            Unknown
        } else {
            match call {
                Read => ReadOk(s),
                Write { value } => {
                    s = st(value, s.version + 1);
                    WriteOk {
                        new_version: s.version,
                    }
                }
                Cas {
                    expected_version,
                    value,
                } => {
                    if s.version == expected_version {
                        s = st(value, s.version + 1);
                        WriteOk {
                            new_version: s.version,
                        }
                    } else {
                        CasBadVersion
                    }
                }
            }
        };
        ops[i] = Some(RegOp {
            id: i,
            client: i as u32,
            call_ns: p.call,
            ret_ns: (!p.unknown).then_some(p.ret),
            call,
            outcome,
        });
    }
    let mut ops: Vec<RegOp> = ops.into_iter().map(|o| o.unwrap()).collect();
    if corrupt {
        let reads: Vec<usize> = (0..n)
            .filter(|&i| matches!(ops[i].outcome, ReadOk(_)))
            .collect();
        if !reads.is_empty() {
            let i = reads[(rng.next_u64() % reads.len() as u64) as usize];
            ops[i].outcome = ReadOk(st(100 + rng.range(0, n as u64 + 1), rng.range(0, 4) as i32));
        }
    }
    ops
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Histories generated from a real linearization always pass.
    #[test]
    fn generated_linearizable_histories_pass(seed in any::<u64>(), n in 1usize..40) {
        let ops = gen_history(seed, n, false);
        let v = check_register(INIT, &ops, DEFAULT_STEP_BUDGET);
        prop_assert!(v.is_ok(), "{v:?} on {ops:?}");
    }

    /// On small histories (valid or with one corrupted read) the search agrees with the
    /// exhaustive reference, both ways.
    #[test]
    fn search_agrees_with_brute_force(seed in any::<u64>(), n in 1usize..8, corrupt in any::<bool>()) {
        let ops = gen_history(seed, n, corrupt);
        let v = check_register(INIT, &ops, DEFAULT_STEP_BUDGET);
        prop_assert_eq!(v.is_ok(), brute_force(INIT, &ops), "{:?} on {:?}", v, ops);
    }
}

#[test]
fn corrupted_histories_are_sometimes_rejected() {
    // Guards the property test above against a generator that never produces a violation.
    let rejected = (0..300)
        .filter(|&seed| {
            !check_register(INIT, &gen_history(seed, 7, true), DEFAULT_STEP_BUDGET).is_ok()
        })
        .count();
    assert!(
        rejected > 50,
        "only {rejected}/300 corrupted histories rejected"
    );
}

#[test]
fn large_concurrent_history_is_checked_quickly() {
    let ops = gen_history(42, 3000, false);
    let t = std::time::Instant::now();
    let v = check_register(INIT, &ops, DEFAULT_STEP_BUDGET);
    assert!(v.is_ok(), "{v:?}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
}

fn seq(client: u32, c: u64, r: Option<u64>, n: Option<i64>) -> SeqRecord {
    SeqRecord {
        client,
        member: 0,
        call_ns: c,
        ret_ns: r,
        seq: n,
        error: None,
    }
}

#[test]
fn sequential_invariants() {
    let good = vec![
        seq(1, 0, Some(5), Some(1)),
        seq(2, 1, Some(4), Some(0)),
        seq(1, 6, Some(7), Some(2)),
    ];
    assert!(check_sequential(&good, Some(&[0, 1, 2])).is_empty());
    // Duplicate number.
    let dup = vec![seq(1, 0, Some(1), Some(3)), seq(2, 2, Some(3), Some(3))];
    assert!(!check_sequential(&dup, None).is_empty());
    // Backwards in real time.
    let back = vec![seq(1, 0, Some(1), Some(5)), seq(2, 2, Some(3), Some(4))];
    assert!(!check_sequential(&back, None).is_empty());
    // Acknowledged but missing afterwards; more nodes than attempts.
    assert!(!check_sequential(&good, Some(&[0, 2])).is_empty());
    assert!(!check_sequential(&good, Some(&[0, 1, 2, 3])).is_empty());
    // Unknown creates may or may not exist.
    let unk = vec![seq(1, 0, Some(1), Some(0)), seq(2, 2, None, None)];
    assert!(check_sequential(&unk, Some(&[0, 1])).is_empty());
    assert!(check_sequential(&unk, Some(&[0])).is_empty());
}

fn tenure(client: u32, a: u64, r: u64) -> LockRecord {
    LockRecord {
        client,
        member: 0,
        session: client as i64,
        node: format!("l-{client}"),
        acquired_ns: a,
        released_ns: r,
        end: "released".into(),
    }
}

#[test]
fn lock_invariant() {
    assert!(check_locks(&[tenure(1, 0, 10), tenure(2, 11, 20), tenure(3, 20, 30)]).is_empty());
    assert!(!check_locks(&[tenure(1, 0, 10), tenure(2, 9, 20)]).is_empty());
    // A long tenure overlapping a later one, with a short one in between.
    assert!(!check_locks(&[tenure(1, 0, 100), tenure(2, 10, 20), tenure(3, 50, 60)]).is_empty());
}

#[test]
fn history_round_trips_through_json_lines() {
    let ops = gen_history(7, 30, false);
    let mut hist = History {
        seed: 7,
        target: "rookery".into(),
        servers: 3,
        ..History::default()
    };
    hist.inits.insert("k0".into(), INIT);
    hist.regs = ops
        .iter()
        .map(|o| RegRecord {
            key: "k0".into(),
            member: 1,
            synced: true,
            op: o.clone(),
            error: (o.outcome == Unknown).then(|| "connection loss".to_string()),
        })
        .collect();
    hist.seqs = vec![seq(1, 0, Some(1), Some(0)), seq(2, 2, None, None)];
    hist.seq_final = Some(vec![0]);
    hist.locks = vec![tenure(1, 0, 10)];
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("h.jsonl");
    hist.write_jsonl(&p).unwrap();
    let back = History::read_jsonl(&p).unwrap();
    assert_eq!(back.seed, 7);
    assert_eq!(back.reg_ops_per_key(), hist.reg_ops_per_key());
    assert_eq!(back.seqs, hist.seqs);
    assert_eq!(back.locks, hist.locks);
    assert_eq!(back.seq_final, hist.seq_final);
    assert!(super::invariants::check(&back).ok());
}

#[test]
fn schedules_replay_from_their_seed() {
    let mix = super::nemesis::FaultMix {
        kills: true,
        pauses: true,
        partitions: true,
        slow: true,
        disk: true,
        clock: true,
        membership: true,
    };
    let a = super::nemesis::Schedule::generate(99, 60, 5, 6000, mix);
    let b = super::nemesis::Schedule::generate(99, 60, 5, 6000, mix);
    assert_eq!(a.steps, b.steps);
    assert!(!a.steps.is_empty());
    let c = super::nemesis::Schedule::generate(100, 60, 5, 6000, mix);
    assert_ne!(a.steps, c.steps);
    for s in &a.steps {
        if let super::nemesis::Fault::Pause(_) = s.fault {
            assert!(s.hold_ms > 6000, "pauses must outlast the session timeout");
        }
    }
}

fn reg_rec(client: u32, call_ms: u64, ok: bool, error: Option<&str>) -> RegRecord {
    RegRecord {
        key: "k0".into(),
        member: 0,
        synced: true,
        op: RegOp {
            id: call_ms as usize,
            client,
            call_ns: call_ms * 1_000_000,
            ret_ns: ok.then_some(call_ms * 1_000_000 + 1),
            call: Read,
            outcome: if ok { ReadOk(INIT) } else { Unknown },
        },
        error: error.map(str::to_string),
    }
}

#[test]
fn session_liveness_invariant() {
    // Expired 100 ms after a success: violation.
    let bad = vec![
        reg_rec(1, 1000, true, None),
        reg_rec(1, 1100, false, Some("session expired")),
    ];
    assert_eq!(check_session_liveness(&bad, 6000).len(), 1);
    // Expired after a silence longer than timeout - slack: fine.
    let fine = vec![
        reg_rec(1, 1000, true, None),
        reg_rec(1, 2000, false, Some("connection loss")),
        reg_rec(1, 5000, false, Some("session expired")),
    ];
    assert!(check_session_liveness(&fine, 6000).is_empty());
    // Another client's success does not count.
    let other = vec![
        reg_rec(2, 1000, true, None),
        reg_rec(1, 1100, false, Some("session expired")),
    ];
    assert!(check_session_liveness(&other, 6000).is_empty());
}
