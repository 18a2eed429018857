//! Issue 9: a Jepsen-style fault suite with a linearizability checker (tests/faults/README.md).
//!
//! * Checker validation (fast, always run): hand-made linearizable and non-linearizable
//!   register histories, unknown outcomes included, and a property test that compares the
//!   Wing–Gong/Lowe search with an exhaustive reference on random small histories.
//! * `fault_schedule_ci` (always run, about 40 s): one 30 s schedule (seed 8 unless
//!   `FAULT_SEED`) on 3 rookery servers with kills, pauses, isolation and one-way cuts; every
//!   checker must pass.
//! * `regression_seed_207_*`, `regression_seed_303_*` (`#[ignore]`): the schedules of the two
//!   rookery findings, kept verbatim.
//! * `fault_schedules` (`#[ignore]`, the long run): `FAULT_SCHEDULES` schedules of `FAULT_SECS`
//!   seconds on `FAULT_SERVERS` members of `FAULT_TARGET` (rookery|zk) from `FAULT_SEED`.
//! * `stale_follower_reads_are_flagged` (`#[ignore]`): plain reads on followers must be found
//!   non-linearizable (the checker can fail on a real system).
//! * `broken_sync_is_caught` (only with `--features failpoints`): a broken build (`sync`
//!   without its barrier) must be found non-linearizable (tests/faults/README.md, "Validation
//!   against a broken build").
//! * `membership_changes_during_faults` (`#[ignore]`, rookery only): a fixed schedule of
//!   reconfig removals and re-adds under pauses, isolation, slow links and kills
//!   (`faults/membership.rs`); `removal_must_not_leave_the_new_config_without_a_live_quorum`
//!   and `removed_leader_must_not_crash` (in the CI set): regression probes of findings 3 and
//!   4, both fixed.
//! * `recheck_history` (`#[ignore]`): re-checks a JSON-lines history, `FAULT_RECHECK=<file>`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

#[path = "faults/clock.rs"]
mod clock;
#[path = "faults/disks.rs"]
mod disks;
#[path = "faults/history.rs"]
mod history;
#[path = "faults/invariants.rs"]
mod invariants;
#[path = "faults/linearizability.rs"]
mod linearizability;
#[path = "faults/links.rs"]
mod links;
#[path = "faults/membership.rs"]
mod membership;
#[path = "faults/nemesis.rs"]
mod nemesis;
#[path = "faults/runner.rs"]
mod runner;
#[path = "faults/targeted.rs"]
mod targeted;
#[path = "faults/workload.rs"]
mod workload;

#[path = "faults/checker_tests.rs"]
mod checker_tests;

use common::cluster::exclusive;
use nemesis::FaultMix;
use runner::{RegisterPlan, RunOpts};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        _ => default,
    }
}

/// `FAULT_TARGET` (rookery|zk) selects the servers; it is the harness's `E2E_TARGET` under
/// another name, so it is copied over before any server starts.
fn apply_fault_target() {
    if let Ok(t) = std::env::var("FAULT_TARGET") {
        let v = match t.as_str() {
            "zk" | "zookeeper" => "zk",
            "rookery" | "" => "rookery",
            other => panic!("FAULT_TARGET={other:?}: expected rookery or zk"),
        };
        std::env::set_var("E2E_TARGET", v);
    }
}

fn default_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1)
}

const SESSION_MS: u64 = 6_000;

/// Every fault; disk faults only where tmpfs can be mounted (root) and clock jumps only where
/// libfaketime is installed, said once per run.
fn all_faults() -> FaultMix {
    FaultMix {
        kills: true,
        pauses: true,
        partitions: true,
        slow: true,
        disk: usable("disk-full faults", disks::available()),
        clock: usable("clock jumps", clock::available()),
        membership: usable("membership changes", membership::available()),
    }
}

/// Whether a fault kind that needs something of the machine can be used; says why not.
fn usable(kind: &str, available: Result<(), String>) -> bool {
    match available {
        Ok(()) => true,
        Err(reason) => {
            eprintln!("fault suite: no {kind} here ({reason})");
            false
        }
    }
}

fn lin_opts(seed: u64, secs: u64, servers: usize) -> RunOpts {
    RunOpts {
        seed,
        secs,
        servers,
        session_ms: SESSION_MS,
        keys: 4,
        registers: RegisterPlan::Linearizable {
            per_member: 3,
            roaming: 3,
        },
        seq_clients: true,
        lock_clients: true,
        mix: all_faults(),
        schedule: None,
        server_env: vec![],
    }
}

/// The CI's fixed schedules, as they were drawn before membership changes existed (those have
/// a test of their own, [`membership_changes_during_faults`], and are in the long run's mix).
fn ci_opts(seed: u64, secs: u64, servers: usize) -> RunOpts {
    let mut o = lin_opts(seed, secs, servers);
    o.mix.membership = false;
    o
}

/// Runs every schedule (a failure does not stop the batch: the long run should report all it
/// finds), then fails with the full report of every failing one.
async fn run_and_judge(opts: Vec<RunOpts>, test_name: &str) {
    let mut summaries = vec![];
    let mut failures = vec![];
    for o in opts {
        let r = runner::run(o).await;
        eprintln!("RESULT {}", r.summary());
        summaries.push(r.summary());
        if !r.report.ok() {
            let report =
                invariants::render(&r.history, &r.report, &r.schedule.to_string(), test_name);
            eprintln!("{report}");
            failures.push(report);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} schedules failed:\n{}\nall runs:\n{}",
        failures.len(),
        summaries.len(),
        failures.join("\n"),
        summaries.join("\n")
    );
    eprintln!("ALL PASSED:\n{}", summaries.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_schedule_ci() {
    apply_fault_target();
    let _one = exclusive();
    // A fixed default seed: the CI replays the same schedule every time (the long run explores
    // new seeds).
    let seed = env_u64("FAULT_SEED", 8);
    let secs = env_u64("FAULT_CI_SECS", 30);
    common::within(
        400,
        "fault_schedule_ci",
        run_and_judge(vec![ci_opts(seed, secs, 3)], "fault_schedule_ci"),
    )
    .await;
}

/// The CI's second schedule: 5 servers (majority/minority splits that keep a quorum), also
/// fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_schedule_ci_five_servers() {
    apply_fault_target();
    let _one = exclusive();
    let seed = env_u64("FAULT_SEED", 9);
    let secs = env_u64("FAULT_CI_SECS", 30);
    common::within(
        400,
        "fault_schedule_ci_five_servers",
        run_and_judge(
            vec![ci_opts(seed, secs, 5)],
            "fault_schedule_ci_five_servers",
        ),
    )
    .await;
}

/// Wall-clock jumps of the leader and of a follower, forward and back, from a couple of
/// seconds to a day (libfaketime; `clock.rs`): nothing that decides sessions, leadership or
/// reads may follow the wall clock, so every check must still pass. A fixed schedule, so the
/// CI always runs each kind of jump; the long run draws them at random among the other faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_jumps_change_nothing_but_timestamps() {
    use nemesis::{Fault, Who};
    let Some(_one) = runs_here("clock jumps", clock::available) else {
        return;
    };
    let steps = [
        (2_000, Fault::ClockJump(Who::Leader, 86_400), 4_000),
        (8_000, Fault::ClockJump(Who::Follower(0), -3_600), 4_000),
        (14_000, Fault::ClockJump(Who::Leader, -86_400), 4_000),
        (20_000, Fault::ClockJump(Who::Follower(1), 30), 3_000),
    ];
    let mut opts = ci_opts(10, 28, 3);
    opts.mix.clock = true;
    run_fixed(
        "clock_jumps_change_nothing_but_timestamps",
        opts,
        &steps,
        300,
    )
    .await;
}

/// Whether a fixed-schedule test of a fault kind that needs something of the machine runs
/// (`FAULT_TARGET` applied; the exclusive guard while it does): ZooKeeper, not a target of
/// these tests, skips (said); on rookery a missing prerequisite is a setup failure, never a
/// silent pass.
fn runs_here(
    kind: &str,
    available: impl FnOnce() -> Result<(), String>,
) -> Option<common::cluster::ExclusiveGuard> {
    apply_fault_target();
    match available() {
        Ok(()) => Some(exclusive()),
        Err(reason) => {
            assert!(common::is_zk(), "{kind} unavailable: {reason}");
            eprintln!("skipped for ZooKeeper: {reason}");
            None
        }
    }
}

/// `(at_ms, fault, hold_ms)` as schedule steps.
fn steps_of(steps: &[(u64, nemesis::Fault, u64)]) -> Vec<nemesis::Step> {
    steps
        .iter()
        .map(|&(at_ms, fault, hold_ms)| nemesis::Step {
            at_ms,
            fault,
            hold_ms,
        })
        .collect()
}

/// One run of `opts` on the fixed schedule `steps`, judged as `name`, bounded by `secs`.
async fn run_fixed(name: &str, mut opts: RunOpts, steps: &[(u64, nemesis::Fault, u64)], secs: u64) {
    opts.schedule = Some(nemesis::Schedule {
        seed: opts.seed,
        steps: steps_of(steps),
    });
    common::within(secs, name, run_and_judge(vec![opts], name)).await;
}

/// Membership changes (reconfig) under other faults, a fixed schedule (rookery only;
/// `membership.rs`): a follower removed while the leader is paused, the leader removed while a
/// follower is isolated, a follower removed while its own links are slow, the leader removed
/// after it was killed; each re-added halfway (the fault still on) and the full membership
/// restored after the fault. Every checker must pass, every member must show one
/// `/zookeeper/config` listing every member, and the links self-test is repeated after the
/// reconfigs. `FAULT_SERVERS` (3) members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "membership changes under faults (about 75 s): cargo test --test faults membership_changes_during_faults -- --ignored --exact --nocapture"]
async fn membership_changes_during_faults() {
    use membership::Alongside;
    use nemesis::{Fault, Who};
    let Some(_one) = runs_here("membership changes", membership::available) else {
        return;
    };
    let steps = [
        (
            2_000,
            Fault::Membership(Who::Follower(0), Some(Who::Leader), Alongside::Pause),
            8_000,
        ),
        (
            13_000,
            Fault::Membership(Who::Leader, Some(Who::Follower(0)), Alongside::Isolate),
            6_000,
        ),
        (
            22_000,
            Fault::Membership(Who::Follower(1), None, Alongside::Slow(300)),
            5_000,
        ),
        (
            30_000,
            Fault::Membership(Who::Leader, None, Alongside::Kill),
            5_000,
        ),
    ];
    let mut opts = lin_opts(11, 40, env_u64("FAULT_SERVERS", 3) as usize);
    opts.mix.membership = true;
    run_fixed("membership_changes_during_faults", opts, &steps, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long fault run; FAULT_SCHEDULES/FAULT_SECS/FAULT_SEED/FAULT_SERVERS/FAULT_TARGET, see tests/faults/README.md"]
async fn fault_schedules() {
    apply_fault_target();
    let _one = exclusive();
    let seed = env_u64("FAULT_SEED", default_seed());
    let n = env_u64("FAULT_SCHEDULES", 3);
    let secs = env_u64("FAULT_SECS", 60);
    let servers = env_u64("FAULT_SERVERS", 3) as usize;
    let opts = (0..n).map(|i| lin_opts(seed + i, secs, servers)).collect();
    // Bound: each schedule is secs + start/recovery/final checks (< 4 min over the run time).
    common::within(
        n * (secs + 240),
        "fault_schedules",
        run_and_judge(opts, "fault_schedules"),
    )
    .await;
}

/// Replays a kept schedule (`(at_ms, fault, hold_ms)` steps, verbatim so that changes to the
/// generator do not change it) on `servers` servers, `FAULT_REPEAT` (3) times: the findings
/// are timing-dependent, so one pass proves little.
async fn run_regression(
    name: &str,
    seed: u64,
    servers: usize,
    steps: &[(u64, nemesis::Fault, u64)],
) {
    apply_fault_target();
    let _one = exclusive();
    let steps = steps_of(steps);
    let repeat = env_u64("FAULT_REPEAT", 3);
    let opts = (0..repeat)
        .map(|_| RunOpts {
            schedule: Some(nemesis::Schedule {
                seed,
                steps: steps.clone(),
            }),
            ..lin_opts(seed, 60, servers)
        })
        .collect();
    common::within(repeat * 300, name, run_and_judge(opts, name)).await;
}

/// Regression (finding 1, tests/faults/README.md): seed 207's schedule on 3 rookery servers.
/// In the first run, after the leader (member 1) was paused for 7 s, the sessions of the three
/// register clients on follower member 2, which had acked writes every ~13 ms until then, and
/// of a lock client there, were expired ~100 ms after their last successful request (when the
/// paused leader was resumed), and a second client took the lock 14 ms before the first learned
/// it had lost it. The schedule is kept verbatim so that changes to the generator do not change
/// it; the bug is timing-dependent, so a pass does not prove it fixed: run it a few times
/// (`FAULT_REPEAT`, default 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "regression schedule (about 75 s per repetition): cargo test --test faults regression_seed_207 -- --ignored --nocapture"]
async fn regression_seed_207_follower_sessions_expire_after_leader_pause() {
    use nemesis::{Fault, Who};
    let steps = [
        (2000, Fault::Bridge(Who::Follower(1)), 6177),
        (10112, Fault::Bridge(Who::Leader), 6652),
        (18308, Fault::Isolate(Who::Leader), 5737),
        (27004, Fault::Isolate(Who::Leader), 5399),
        (33587, Fault::KillRestart(Who::Leader), 1464),
        (37029, Fault::OneWay(Who::Leader, Who::Follower(0)), 4454),
        (
            42891,
            Fault::IsolateTwo(Who::Leader, Who::Follower(0)),
            2587,
        ),
        (47790, Fault::Pause(Who::Leader), 6993),
    ];
    run_regression(
        "regression_seed_207_follower_sessions_expire_after_leader_pause",
        207,
        3,
        &steps,
    )
    .await;
}

/// Regression (finding 1, root cause seen in this run's logs, tests/faults/regressions/):
/// seed 700's schedule on 5 rookery servers. The last step pauses the leader (member 0) for
/// 6.8 s; on SIGCONT its housekeeping expired its whole stale tracker (30 sessions) 3 ms
/// before it learned of the new term, the proposals were forwarded to the new leader, which
/// committed them: 15 live sessions, served by other members up to ~100 ms before, closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "regression schedule (5 servers, about 80 s per repetition): cargo test --test faults regression_seed_700 -- --ignored --nocapture"]
async fn regression_seed_700_resumed_leader_expires_live_sessions() {
    use nemesis::{Fault, Who};
    let steps = [
        (2000, Fault::Isolate(Who::Follower(3)), 4341),
        (7906, Fault::OneWay(Who::Follower(0), Who::Leader), 2939),
        (
            13173,
            Fault::IsolateTwo(Who::Follower(3), Who::Follower(1)),
            2233,
        ),
        (18245, Fault::Isolate(Who::Leader), 3784),
        (
            24273,
            Fault::IsolateTwo(Who::Follower(2), Who::Follower(3)),
            4534,
        ),
        (31669, Fault::Pause(Who::Follower(0)), 8360),
        (41117, Fault::KillRestart(Who::Leader), 1123),
        (44759, Fault::Pause(Who::Leader), 7437),
        (54207, Fault::Pause(Who::Leader), 6820),
    ];
    run_regression(
        "regression_seed_700_resumed_leader_expires_live_sessions",
        700,
        5,
        &steps,
    )
    .await;
}

/// Regression (finding 2, tests/faults/README.md): seed 303's schedule on 5 rookery servers.
/// During a one-way cut follower -> leader (the last step: member 4 cannot send to leader 3,
/// the leader still reaches it) the follower kept serving reads to its clients while the
/// leader, hearing none of its touches, expired their sessions: a lock client on the follower
/// took the lock from a stale listing (its own node, already deleted by the expiry, still
/// lowest there) 16 ms after a client elsewhere had taken it, and held it for 78 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "regression schedule (5 servers, about 80 s per repetition): cargo test --test faults regression_seed_303 -- --ignored --nocapture"]
async fn regression_seed_303_one_way_cut_follower_serves_expired_sessions() {
    use nemesis::{Fault, Who};
    let steps = [
        (2000, Fault::Isolate(Who::Leader), 2521),
        (6134, Fault::OneWay(Who::Leader, Who::Follower(3)), 4286),
        (13161, Fault::Isolate(Who::Follower(1)), 5169),
        (20209, Fault::Pause(Who::Leader), 7856),
        (
            29184,
            Fault::IsolateTwo(Who::Leader, Who::Follower(1)),
            1835,
        ),
        (32668, Fault::Isolate(Who::Leader), 6061),
        (40271, Fault::Pause(Who::Leader), 6697),
        (49580, Fault::OneWay(Who::Follower(3), Who::Leader), 7331),
    ];
    run_regression(
        "regression_seed_303_one_way_cut_follower_serves_expired_sessions",
        303,
        5,
        &steps,
    )
    .await;
}

/// One targeted probe on `FAULT_TARGET`, alone on the machine, bounded by 2 min.
async fn probe<T>(what: &str, run: impl std::future::Future<Output = T>) -> T {
    apply_fault_target();
    let _one = exclusive();
    common::within(120, what, run).await
}

/// Finding 2 in isolation (deterministic): a one-way cut follower -> leader longer than the
/// session timeout. The follower's client must not be served after the leader expired its
/// session (ZooKeeper's follower drops its clients within syncLimit × tickTime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "targeted reproduction (3 servers, about 30 s): cargo test --test faults one_way_cut -- --ignored --nocapture"]
async fn one_way_cut_follower_must_not_serve_an_expired_session() {
    let o = probe(
        "one-way probe",
        targeted::one_way_cut_probe(SESSION_MS, 15_000),
    )
    .await;
    eprintln!("one-way probe: {o:?}");
    assert_eq!(
        o.reads_served_after_expiry, 0,
        "the follower kept serving a session the leader had expired: {o:?}"
    );
}

/// Finding 1 in isolation: the leader paused for 7 s (> the 6 s session timeout) while
/// writers on both followers keep going; no writer may be told its session expired right after
/// a successful write. `FAULT_REPEAT` repetitions (default 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "targeted reproduction (3 servers, about 25 s per repetition): cargo test --test faults leader_pause -- --ignored --nocapture"]
async fn leader_pause_must_not_expire_sessions_served_by_followers() {
    apply_fault_target();
    let _one = exclusive();
    let repeat = env_u64("FAULT_REPEAT", 3);
    for r in 0..repeat {
        let problems = common::within(
            180,
            "leader pause probe",
            targeted::leader_pause_probe(SESSION_MS, 7_000, 3),
        )
        .await;
        eprintln!("leader pause probe {r}: {} problems", problems.len());
        assert!(
            problems.is_empty(),
            "repetition {r}:\n{}",
            problems.join("\n")
        );
    }
}

/// Finding 3 in isolation (rookery's reconfig; tests/faults/README.md): removing a follower
/// while the other follower of 3 is paused leaves a new configuration with one live member.
/// Either reconfig refuses it (ZooKeeper: NewConfigNoQuorum) or the ensemble must go on
/// serving writes; an "ok" after which the leader cannot commit is the finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// A regression test of finding 3 (fixed: NewConfigNoQuorum), in the CI set (about 12 s).
async fn removal_must_not_leave_the_new_config_without_a_live_quorum() {
    let o = probe(
        "removal probe",
        targeted::removal_without_a_live_new_quorum_probe(6_000),
    )
    .await;
    eprintln!("removal probe: {o:?}");
    assert!(
        !o.answer.starts_with("ok") || o.writes_ok > 0,
        "reconfig accepted a removal that left the new configuration without a live quorum, \
         and the ensemble stopped serving writes: {o:?}"
    );
}

/// Finding 4 (rookery's reconfig; tests/faults/README.md): a leader that a reconfig removes
/// must hand over and keep running; seen crashing in raft-rs twice in the 5-server batch of
/// seed 7100. The leader of 3 servers removed and re-added `FAULT_REPEAT` (default 10) times
/// under write load; no member may exit on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// A regression test of finding 4 (fixed: handover first, step-down on removal), in the CI
// set (about 2 s per round).
async fn removed_leader_must_not_crash() {
    apply_fault_target();
    let _one = exclusive();
    let rounds = env_u64("FAULT_REPEAT", 10) as usize;
    let (problems, acked) = common::within(
        60 + 30 * rounds as u64,
        "leader removal probe",
        targeted::leader_removal_probe(rounds),
    )
    .await;
    eprintln!("leader removal probe: {rounds} rounds, {acked} creates acknowledged");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Runs `tries` schedules made by `opts(i)` until the checker reports a register anomaly
/// (printing its witness); panics if none ever does. The validation runs: what they run is
/// not linearizable, and the checker must say so.
async fn expect_flagged(tries: u64, test_name: &str, what: &str, opts: impl Fn(u64) -> RunOpts) {
    let mut summaries = vec![];
    for i in 0..tries {
        let r = runner::run(opts(i)).await;
        eprintln!("RESULT {}", r.summary());
        summaries.push(r.summary());
        if !r.report.anomalies.is_empty() {
            eprintln!(
                "flagged as expected in try {} of {tries}:\n{}",
                i + 1,
                invariants::render(&r.history, &r.report, &r.schedule.to_string(), test_name)
            );
            return;
        }
    }
    panic!(
        "{what} were never flagged as non-linearizable in {tries} runs:\n{}",
        summaries.join("\n")
    );
}

/// Writers on the leader, one key, `readers_per_follower` readers per follower in `read_mode`,
/// no sequential or lock clients.
fn follower_reads_opts(
    seed: u64,
    secs: u64,
    read_mode: workload::ReadMode,
    mix: FaultMix,
) -> RunOpts {
    RunOpts {
        keys: 1,
        registers: RegisterPlan::FollowerReads {
            writers: 3,
            readers_per_follower: 3,
            read_mode,
        },
        seq_clients: false,
        lock_clients: false,
        mix,
        ..lin_opts(seed, secs, 3)
    }
}

/// Plain (unsynced) reads on followers while writers hit the leader, with follower partitions:
/// ZooKeeper only promises sequential consistency for them, so stale reads are expected, and
/// the checker must report them. Tries up to `FAULT_STALE_TRIES` schedules (default 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "validation run (3 servers, about a minute per try): cargo test --test faults stale -- --ignored --nocapture"]
async fn stale_follower_reads_are_flagged() {
    apply_fault_target();
    let _one = exclusive();
    let seed = env_u64("FAULT_SEED", default_seed());
    let tries = env_u64("FAULT_STALE_TRIES", 3);
    let secs = env_u64("FAULT_SECS", 30);
    let mix = FaultMix {
        kills: false,
        pauses: true,
        partitions: true,
        slow: false,
        disk: false,
        clock: false,
        membership: false,
    };
    common::within(
        tries * (secs + 240),
        "stale reads",
        expect_flagged(
            tries,
            "stale_follower_reads_are_flagged",
            "plain follower reads",
            |i| follower_reads_opts(seed + i, secs, workload::ReadMode::Plain, mix),
        ),
    )
    .await;
}

/// The default broken switch of [`broken_sync_is_caught`]: `sync` passes at once, without its
/// ReadIndex barrier (src/server/connection.rs, `start_sync`).
#[cfg(feature = "failpoints")]
const BROKEN_SYNC_FAILPOINTS: &str = "sync-skip-barrier=return";

/// Validation against a deliberately broken build (issue 9): rookery built with the
/// `failpoints` feature and started with `FAILPOINTS=sync-skip-barrier=return` answers `sync`
/// without its barrier, so sync+read on a follower is no longer linearizable. Writers on the
/// leader, sync+read clients on the followers, no faults: the checker must report a violation.
/// `FAULT_BROKEN_FAILPOINTS` overrides the switch; set it empty for the control run (the same
/// workload on an intact server, where this test must fail). Up to `FAULT_BROKEN_TRIES` runs
/// (default 3) of `FAULT_BROKEN_SECS` (default 20) seconds.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_sync_is_caught() {
    apply_fault_target();
    if common::target() != common::Target::Rookery {
        // The switch is rookery's; ZooKeeper has no such failpoint, so there is nothing to
        // validate (said loudly: this is not a pass of the validation).
        eprintln!("broken_sync_is_caught: SKIPPED, the target is not rookery");
        return;
    }
    let _one = exclusive();
    let seed = env_u64("FAULT_SEED", default_seed());
    let tries = env_u64("FAULT_BROKEN_TRIES", 3);
    let secs = env_u64("FAULT_BROKEN_SECS", 20);
    let failpoints = std::env::var("FAULT_BROKEN_FAILPOINTS")
        .unwrap_or_else(|_| BROKEN_SYNC_FAILPOINTS.to_string());
    // The fail crate rejects an empty FAILPOINTS: the control run sets none at all.
    let server_env: Vec<(String, String)> = if failpoints.is_empty() {
        vec![]
    } else {
        vec![("FAILPOINTS".to_string(), failpoints.clone())]
    };
    eprintln!("broken build: FAILPOINTS={failpoints:?}");
    let none = FaultMix {
        kills: false,
        pauses: false,
        partitions: false,
        slow: false,
        disk: false,
        clock: false,
        membership: false,
    };
    common::within(
        tries * (secs + 120),
        "broken sync",
        expect_flagged(
            tries,
            "broken_sync_is_caught",
            "sync+read on followers of a server whose sync skips its barrier",
            |i| RunOpts {
                server_env: server_env.clone(),
                ..follower_reads_opts(seed + i, secs, workload::ReadMode::SyncThenRead, none)
            },
        ),
    )
    .await;
}

/// Offline re-check: `FAULT_RECHECK=<history.jsonl> cargo test --test faults recheck_history
/// -- --ignored --nocapture`.
#[test]
#[ignore = "offline re-check of a history file: FAULT_RECHECK=<file>"]
fn recheck_history() {
    let path = std::env::var("FAULT_RECHECK").expect("set FAULT_RECHECK=<history.jsonl>");
    let h = history::History::read_jsonl(std::path::Path::new(&path))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let r = invariants::check(&h);
    eprintln!(
        "{path}: {} register ops over {} keys, {} seq creates, {} lock tenures, {} nemesis events",
        h.regs.len(),
        h.inits.len(),
        h.seqs.len(),
        h.locks.len(),
        h.nemesis.len()
    );
    assert!(
        r.ok(),
        "{}",
        invariants::render(
            &h,
            &r,
            "(see the history's nemesis records)",
            "recheck_history"
        )
    );
    eprintln!("{path}: OK");
}

/// The slow-link fault must really slow links: a round trip through a delayed proxy takes at
/// least twice the delay (one per direction), and `restore` ends the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_delay_slows_both_directions() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let proxy = common::proxy::Proxy::start(echo_addr.to_string()).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    async fn rtt(s: &mut tokio::net::TcpStream) -> std::time::Duration {
        let t = std::time::Instant::now();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        t.elapsed()
    }
    rtt(&mut s).await;
    proxy.delay(150);
    let slow = rtt(&mut s).await;
    assert!(
        slow >= std::time::Duration::from_millis(300),
        "a 150 ms delay each way gave a {slow:?} round trip"
    );
    proxy.restore();
    // Still the same connection, now undelayed (no upper bound asserted: the machine is shared).
    let fast = rtt(&mut s).await;
    eprintln!("round trip delayed {slow:?}, restored {fast:?}");
}
