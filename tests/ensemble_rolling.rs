//! Ensemble restarts under load (issue 7):
//! * `rolling_restart_expires_nothing_loses_nothing`: every member is restarted in turn
//!   (SIGTERM, start on the same data dir; followers first, the leader last) under write load.
//!   No session expires (each holder keeps its session id and ephemeral) and no acknowledged
//!   write is lost, on any member.
//! * `sigkill_random_members_keeps_acknowledged_writes`: the crash-durability check of
//!   tests/durability.rs against an ensemble: `ENSEMBLE_KILLS` (8) rounds of SIGKILL on random
//!   members (never a majority at once: at most (n-1)/2 down), restarted on the same data dir,
//!   under creates, setData and two-node multis. Every acknowledged write is on every member,
//!   nothing unattempted exists, no multi is half-applied.
//!
//!   Against Debian's ZooKeeper 3.8.0 this failed once in about 21 runs (2026-12-01): after the
//!   last restart and a `sync`, one member held an older value of a node than its last
//!   acknowledged setData, while the other two held the acknowledged one. That matches ZooKeeper's
//!   known follower txn-loss bugs around crashes during DIFF sync (ZOOKEEPER-4646, -4643, -4785,
//!   fixed after 3.8.0), so a rare ZooKeeper failure here is a ZooKeeper finding, not a test bug;
//!   not reproduced in 20 later runs. A failed test now keeps the members' dirs and logs.
//!
//! **Run by hand**, not by the CI (three server processes per test, up to a few minutes;
//! rookery does not serve as an ensemble yet, issue 7, so against rookery they fail with
//! "reports `Mode: standalone`"). The tests are `#[ignore]`d in the normal
//! run (the CI) and run with `--ignored`.
//!
//! ```text
//! E2E_TARGET=zk cargo test --test ensemble_rolling -- --ignored --test-threads=1 --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cluster::{ensemble_tests_enabled, exclusive, Cluster, ClusterOpts};
use common::ledger as load;
use common::*;
use zookeeper_client::{self as zk, CreateMode, SessionState};

const BOUND_SECS: u64 = 600;
const SESSION: Duration = Duration::from_secs(10);

fn connector() -> zk::Connector {
    zk::Client::connector().with_session_timeout(SESSION)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "ensemble suite, run by hand (3+ servers, tens of seconds): cargo test --test <file> -- --ignored --test-threads=1"]
async fn rolling_restart_expires_nothing_loses_nothing() {
    if !ensemble_tests_enabled("rolling_restart_expires_nothing_loses_nothing") {
        return;
    }
    let _one = exclusive();
    within(BOUND_SECS, "rolling_restart_expires_nothing_loses_nothing", async {
        let c = Cluster::start_async(ClusterOpts::default()).await;
        let leader = c.blocking(|c| c.wait_ready(60)).await;
        let base = unique("ens-roll");
        let eph = format!("{base}-eph");
        {
            let a = c.client(leader).await;
            a.create(&base, b"", &anyone()).await.unwrap();
            a.create(&eph, b"", &anyone()).await.unwrap();
        }
        // Two session holders per member (full connect string, placed on that member).
        let mut holders = vec![];
        for m in 0..c.len() {
            for n in 0..2 {
                let h = c.client_placed(m, connector).await;
                let p = format!("{eph}/m{m}-{n}");
                h.create(&p, b"", &opts(CreateMode::Ephemeral)).await.unwrap();
                let sid = h.session_id().0;
                holders.push((h, p, sid));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(load::Acks::default());
        let cs = c.connect_string();
        let writers = load::spawn_writers(4, &base, |_| cs.clone(), &stop, &acks);
        load::wait_progress(&acks, 100, 60, "load before the restarts").await;

        let mut order = c.others(leader);
        order.push(leader);
        let mut timings = vec![];
        for &m in &order {
            let t = Instant::now();
            c.blocking(move |c| {
                c.restart(m, 90);
                c.wait_ready(60)
            })
            .await;
            timings.push((m, t.elapsed()));
            load::wait_progress(&acks, 50, 60, &format!("load after restarting member {m}")).await;
        }
        let ledgers = load::finish(&stop, writers).await;

        let mut problems = vec![];
        for (h, p, sid) in &holders {
            let deadline = Instant::now() + Duration::from_secs(30);
            let st = loop {
                match tokio::time::timeout(Duration::from_secs(5), h.check_stat(p)).await {
                    Ok(Ok(st)) => break st,
                    _ if Instant::now() > deadline || h.state().is_terminated() => break None,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            if h.state() != SessionState::SyncConnected || h.session_id().0 != *sid || st.map(|s| s.ephemeral_owner) != Some(*sid) {
                problems.push(format!("holder {sid:#x}: state {:?}, ephemeral {p} stat {st:?}", h.state()));
            }
        }
        assert!(problems.is_empty(), "sessions lost in the rolling restart:\n{}", problems.join("\n"));
        let all: Vec<usize> = (0..c.len()).collect();
        let dumps = c.dump_children(&all, &base).await;
        let (problems, checked) = load::verify(&ledgers, &dumps);
        assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
        let eph_dumps = c.dump_children(&all, &eph).await;
        for (m, d) in &eph_dumps {
            assert_eq!(d.len(), holders.len(), "member {m}: ephemerals {:?}", d.keys());
        }
        let acked: u64 = ledgers.iter().map(|l| l.acked).sum();
        let unknown: u64 = ledgers.iter().map(|l| l.unknown).sum();
        eprintln!(
            "rolling restart ({:?}), order {order:?} (leader {leader} last), restart+ready per member {timings:?}: \
             {} sessions kept, {acked} acked / {unknown} failed ops, {checked} values checked on {} members",
            common::target(),
            holders.len(),
            c.len()
        );
    })
    .await
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "ensemble suite, run by hand (3+ servers, tens of seconds): cargo test --test <file> -- --ignored --test-threads=1"]
async fn sigkill_random_members_keeps_acknowledged_writes() {
    if !ensemble_tests_enabled("sigkill_random_members_keeps_acknowledged_writes") {
        return;
    }
    let _one = exclusive();
    within(BOUND_SECS, "sigkill_random_members_keeps_acknowledged_writes", async {
        let kills: usize = std::env::var("ENSEMBLE_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
        let c = Cluster::start_async(ClusterOpts::default()).await;
        let leader = c.blocking(|c| c.wait_ready(60)).await;
        let base = unique("ens-dur");
        c.client(leader).await.create(&base, b"", &anyone()).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(load::Acks::default());
        let cs = c.connect_string();
        let writers = load::spawn_writers(4, &base, |_| cs.clone(), &stop, &acks);
        load::wait_progress(&acks, 50, 60, "load before the first kill").await;

        let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
        let mut rng = Rng(seed);
        let max_down = (c.len() - 1) / 2;
        let started = Instant::now();
        let mut log = vec![];
        for round in 0..kills {
            let down_n = 1 + rng.below(max_down as u64) as usize;
            let mut victims = vec![];
            while victims.len() < down_n {
                let v = rng.below(c.len() as u64) as usize;
                if !victims.contains(&v) {
                    victims.push(v);
                }
            }
            let was_leader = c.leader();
            for &v in &victims {
                c.kill9(v);
            }
            tokio::time::sleep(Duration::from_millis(200 + rng.below(600))).await;
            let vs = victims.clone();
            c.blocking(move |c| {
                for &v in &vs {
                    c.start_again(v, 90);
                }
                c.wait_ready(60)
            })
            .await;
            load::wait_progress(&acks, 20, 60, &format!("round {round}: load after restarting {victims:?}")).await;
            log.push((victims, was_leader));
        }
        let ledgers = load::finish(&stop, writers).await;
        let all: Vec<usize> = (0..c.len()).collect();
        let dumps = c.dump_children(&all, &base).await;
        let (problems, checked) = load::verify(&ledgers, &dumps);
        assert!(problems.is_empty(), "{} durability violations:\n{}", problems.len(), problems.join("\n"));
        for (m, d) in &dumps {
            assert_eq!(d, &dumps[0].1, "member {m} differs from member {}", dumps[0].0);
        }
        let acked: u64 = ledgers.iter().map(|l| l.acked).sum();
        let unknown: u64 = ledgers.iter().map(|l| l.unknown).sum();
        let leader_kills = log.iter().filter(|(v, l)| l.is_some_and(|l| v.contains(&l))).count();
        eprintln!(
            "ensemble durability ({:?}, seed {seed}): {kills} rounds in {:?} ({leader_kills} hit the leader), victims {:?}; \
             {acked} acked / {unknown} failed ops; {} nodes, {checked} values checked on {} members",
            common::target(),
            started.elapsed(),
            log.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>(),
            dumps[0].1.len(),
            c.len()
        );
        assert!(acked >= kills as u64, "too little load was acknowledged: {acked}");
    })
    .await
}
