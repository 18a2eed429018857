//! Crash durability of a 3-server rookery ensemble (tests/durability.rs's ledger check, shared
//! through tests/common/ledger.rs): writers spread over all members (writer `k` talks to
//! member `k % 3` only), then SIGKILL of one member per round (the leader every third round,
//! a random member otherwise, which may be the leader too), each restarted on its data dir
//! and waited for until it serves again. At the end every member, after a `sync`, holds every
//! acknowledged write (its last acknowledged value or a later attempted one), nothing that
//! was never attempted, and no half-applied multi; and all members hold the same tree.
//!
//! * `ensemble_acknowledged_writes_survive_20_sigkills` (CI): 20 kills, about 25 s here.
//! * `ensemble_acknowledged_writes_survive_60_sigkills` (`#[ignore]`d, over a minute;
//!   `ENSEMBLE_KILLS` overrides the 60):
//!   `cargo test --test ensemble_durability -- --ignored --test-threads=1 --nocapture`.
//!
//! The kill schedule comes from `ENSEMBLE_SEED` (printed; the time by default), so a failing
//! schedule can be replayed (the timing of the load cannot).
//!
//! `E2E_TARGET=zk` runs it against a ZooKeeper 3.8 ensemble (slower: JVM restarts). Its
//! predecessor (in tests/ensemble_rolling.rs) failed once in about 21 runs against Debian's
//! ZooKeeper 3.8.0 (2026-12-01): after the last restart and a `sync`, one member held an older
//! value of a node than its last acknowledged setData while the other two held the acknowledged
//! one. That matches ZooKeeper's known follower txn-loss bugs around crashes during DIFF sync
//! (ZOOKEEPER-4646, -4643, -4785, fixed after 3.8.0): a rare ZooKeeper failure here is a
//! ZooKeeper finding, not a test bug. A failed run keeps the members' dirs and logs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{exclusive, Cluster, ClusterOpts};
use common::ledger::{self, Acks, Rng};
use common::within;

const WRITERS: usize = 6;
const MEMBERS: usize = 3;

async fn sigkill_rounds(kills: usize, bound_secs: u64) {
    let _guard = tokio::task::spawn_blocking(exclusive).await.unwrap();
    within(bound_secs, "ensemble durability", async {
        let opts = ClusterOpts {
            voters: MEMBERS,
            // A 500 ms election timeout (tickTime 200, minSessionTimeout 2000) keeps a leader
            // kill short; sessions of 10 s (maxSessionTimeout raised) outlive a restart.
            tick_time_ms: 200,
            extra_cfg: vec![
                "minSessionTimeout=2000".to_string(),
                "maxSessionTimeout=20000".to_string(),
            ],
            ..ClusterOpts::default()
        };
        let c = Cluster::start_async(opts).await;
        {
            let setup = c.client(0).await;
            setup.create("/dur", b"", &common::anyone()).await.unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Acks::default());
        let writers = ledger::spawn_writers(WRITERS, "/dur", |k| c.addr(k % MEMBERS), &stop, &acks);
        ledger::wait_progress(&acks, 50, 60, "load before the first kill").await;
        let started = Instant::now();
        let seed = std::env::var("ENSEMBLE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
            });
        let mut rng = Rng::seeded(seed);
        // Per round: (victim, it was the leader, ms from the kill until the whole ensemble
        // served again).
        let log: Arc<Mutex<Vec<(usize, bool, u128)>>> = Arc::default();
        let choice: Vec<u64> = (0..kills).map(|_| rng.below(MEMBERS as u64)).collect();
        let per_round = ledger::crash_rounds(kills, &acks, &mut rng, |round| {
            let random = choice[round] as usize;
            let log = log.clone();
            c.blocking(move |c| {
                let leader = c.wait_ready(60);
                let victim = if round % 3 == 0 { leader } else { random };
                let t = Instant::now();
                c.kill9(victim);
                c.start_again(victim, 60);
                // The next round kills again: the whole ensemble serves first, so one kill
                // never takes away a quorum that another restart has not yet given back.
                c.wait_ready(60);
                log.lock()
                    .unwrap()
                    .push((victim, victim == leader, t.elapsed().as_millis()));
            })
        })
        .await;
        let log = log.lock().unwrap().clone();
        let victims: Vec<usize> = log.iter().map(|r| r.0).collect();
        let leader_kills = log.iter().filter(|r| r.1).count();
        let recoveries: Vec<u128> = log.iter().map(|r| r.2).collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ledgers = ledger::finish(&stop, writers).await;
        let load_time = started.elapsed();

        c.blocking(|c| c.wait_ready(60)).await;
        let dumps = c.dump_children(&[0, 1, 2], "/dur").await;
        let sizes: Vec<usize> = dumps.iter().map(|(_, m)| m.len()).collect();
        let checked = ledger::assert_ledgers_hold(&ledgers, &dumps);
        for (m, d) in &dumps {
            assert_eq!(d, &dumps[0].1, "member {m} differs from member {}", dumps[0].0);
        }
        let (acked, unknown) = ledger::totals(&ledgers);
        eprintln!(
            "ensemble durability ({:?}, ENSEMBLE_SEED={seed}): {kills} SIGKILLs ({leader_kills} of the leader) in \
             {load_time:?}, victims {victims:?}, kill-to-whole-ensemble ms {recoveries:?}; \
             {acked} acknowledged / {unknown} failed-or-unknown ops; nodes per member {sizes:?}; \
             {checked} values checked over all members; acks per round {per_round:?}",
            common::target()
        );
        assert!(
            leader_kills * 3 >= kills,
            "only {leader_kills} of {kills} kills hit the leader"
        );
        assert!(
            acked >= kills as u64,
            "too little load was acknowledged: {acked}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensemble_acknowledged_writes_survive_20_sigkills() {
    sigkill_rounds(20, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "over a minute: run with --ignored"]
async fn ensemble_acknowledged_writes_survive_60_sigkills() {
    let kills = std::env::var("ENSEMBLE_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    sigkill_rounds(kills, 900.max(15 * kills as u64)).await;
}
