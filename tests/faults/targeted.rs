//! Targeted reproductions of the suite's findings: one fault, one observation, deterministic
//! enough to fail every time while the bug is there.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use zookeeper_client::{self as zk, CreateMode};

use crate::common::anyone;
use crate::common::cluster::{Cluster, ClusterOpts};

use super::links::Links;

/// What the one-way-cut probe saw.
#[derive(Debug)]
pub struct OneWayOutcome {
    /// When the cut started (since the probe's start).
    pub cut_at: Duration,
    /// When a client on the leader saw the follower client's ephemeral gone (the session
    /// expired and the expiry was applied on the leader), if within the bound.
    pub ephemeral_gone_at: Option<Duration>,
    /// Successful plain reads of the follower client invoked after that point.
    pub reads_served_after_expiry: usize,
    /// The last one, for the report.
    pub last_served_read_at: Option<Duration>,
}

/// Finding 2 in isolation: cut the connections a follower dials to the leader (for rookery:
/// the follower can no longer send to the leader; the leader still reaches it), keep a client
/// on the follower reading, and watch its ephemeral from a client on the leader. A correct
/// server stops serving that client before its session can expire (ZooKeeper: the leader
/// drops a silent follower after syncLimit × tickTime, the follower closes its clients).
pub async fn one_way_cut_probe(session_ms: u64, cut_ms: u64) -> OneWayOutcome {
    let c = Cluster::start_async(ClusterOpts {
        voters: 3,
        proxied: false,
        ..ClusterOpts::default()
    })
    .await;
    let links = Links::install(&c, false).await;
    let leader = c.blocking(|c| c.wait_ready(60)).await;
    let follower = c.others(leader)[0];
    let connector =
        || zk::Client::connector().with_session_timeout(Duration::from_millis(session_ms));
    let on_follower = c.client_with(follower, connector()).await;
    let on_leader = c.client_with(leader, connector()).await;
    let base = crate::common::unique("oneway");
    on_leader
        .create(&base, b"", &anyone())
        .await
        .expect("create base");
    let eph = format!("{base}/eph");
    on_follower
        .create(
            &eph,
            b"",
            &CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all()),
        )
        .await
        .expect("create ephemeral");
    on_leader.sync(&eph).await.expect("sync");
    assert!(on_leader.check_stat(&eph).await.expect("stat").is_some());

    // Write load through the leader during the cut: with the follower's acks lost, the
    // leader's window of unacknowledged appends to it fills up and replication to it pauses,
    // as it would under any real load (with an idle ensemble the few entries still arrive).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = vec![];
    for w in 0..2 {
        let cl = c.client_with(leader, connector()).await;
        let (stop, base) = (stop.clone(), base.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            // Bounded by `stop` and by a count.
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 200_000 {
                i += 1;
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    cl.set_data(&base, format!("{w}-{i}").as_bytes(), None),
                )
                .await;
            }
        }));
    }
    let start = Instant::now();
    links.cut_one_way(follower, leader);
    let cut_at = start.elapsed();
    let mut gone_at = None;
    let mut served_after = 0;
    let mut last_served = None;
    let bound = Duration::from_millis(cut_ms);
    while start.elapsed() < bound {
        let call = start.elapsed();
        let read = tokio::time::timeout(Duration::from_secs(2), on_follower.get_data(&base)).await;
        if matches!(read, Ok(Ok(_))) {
            if let Some(g) = gone_at {
                if call > g {
                    served_after += 1;
                    last_served = Some(call);
                }
            }
        }
        if gone_at.is_none() {
            if let Ok(Ok(None)) =
                tokio::time::timeout(Duration::from_secs(2), on_leader.check_stat(&eph)).await
            {
                gone_at = Some(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        let _ = crate::common::within(30, "probe writers", w).await;
    }
    links.heal_all();
    drop(on_follower);
    drop(on_leader);
    OneWayOutcome {
        cut_at,
        ephemeral_gone_at: gone_at,
        reads_served_after_expiry: served_after,
        last_served_read_at: last_served,
    }
}

/// Finding 1 in isolation: writers on both followers (one session each), the leader paused for
/// longer than the session timeout, then resumed. Returns the session-liveness violations: a
/// writer told "session expired" less than timeout - slack after a request it invoked
/// succeeded.
pub async fn leader_pause_probe(
    session_ms: u64,
    pause_ms: u64,
    writers_per_follower: usize,
) -> Vec<String> {
    let c = Cluster::start_async(ClusterOpts {
        voters: 3,
        proxied: false,
        ..ClusterOpts::default()
    })
    .await;
    let leader = c.blocking(|c| c.wait_ready(60)).await;
    let base = crate::common::unique("pause");
    let setup = c.client(leader).await;
    setup
        .create(&base, b"", &anyone())
        .await
        .expect("create base");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = vec![];
    for f in c.others(leader) {
        for w in 0..writers_per_follower {
            let cl = c
                .client_with(
                    f,
                    zk::Client::connector().with_session_timeout(Duration::from_millis(session_ms)),
                )
                .await;
            let (stop, path) = (stop.clone(), format!("{base}/f{f}-w{w}"));
            cl.create(&path, b"", &anyone()).await.expect("create");
            writers.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let mut last_ok: Option<Duration> = None;
                let mut problems = vec![];
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 1_000_000 {
                    i += 1;
                    let call = t0.elapsed();
                    let r = tokio::time::timeout(
                        Duration::from_millis(session_ms / 3),
                        cl.set_data(&path, &i.to_be_bytes(), None),
                    )
                    .await;
                    match r {
                        Ok(Ok(_)) => last_ok = Some(call),
                        Ok(Err(zk::Error::SessionExpired)) => {
                            let window = Duration::from_millis(
                                session_ms.saturating_sub(super::invariants::EXPIRY_SLACK_MS),
                            );
                            if let Some(ok) = last_ok.filter(|ok| call < *ok + window) {
                                problems.push(format!(
                                    "{path}: session expired {:?} after a successful write (at {ok:?} / {call:?})",
                                    call - ok
                                ));
                            }
                            break;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                problems
            }));
        }
    }
    // Idle sessions on the followers (kept alive by the client library's pings): the resumed
    // leader's stale tracker holds more sessions to expire, so its burst of proposals is longer
    // and more likely to straddle its step-down (as with the 30 sessions of seed 700).
    let mut idle = vec![];
    for k in 0..24 {
        let f = c.others(leader)[k % 2];
        idle.push(
            c.client_with(
                f,
                zk::Client::connector().with_session_timeout(Duration::from_millis(session_ms)),
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.sigstop(leader);
    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
    c.sigcont(leader);
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut problems = vec![];
    let idle_expired = idle
        .iter()
        .filter(|c| c.state() == zk::SessionState::Expired)
        .count();
    if idle_expired > 0 {
        problems.push(format!(
            "{idle_expired} of {} idle sessions on the followers expired (their clients were connected throughout)",
            idle.len()
        ));
    }
    drop(idle);
    for w in writers {
        problems.extend(
            crate::common::within(30, "pause writers", w)
                .await
                .expect("writer"),
        );
    }
    if !problems.is_empty() {
        std::env::set_var("ENSEMBLE_KEEP", "1");
    }
    problems
}

/// Removes member `i` by a reconfig through `cs` (bounded: 15 s); what reconfig answered.
async fn remove_through(c: &Cluster, i: usize, cs: String) -> String {
    let id = c.id(i).to_string();
    c.blocking(move |_| {
        super::membership::reconfig(
            &cs,
            &super::membership::Change::Remove(vec![id]),
            Duration::from_secs(15),
        )
    })
    .await
}

/// What the removal probe saw.
#[derive(Debug)]
pub struct RemovalOutcome {
    /// What reconfig answered to removing a follower while the other follower was paused.
    pub answer: String,
    /// Creates through the leader that succeeded in the window after the answer (the paused
    /// follower still paused), and how many were tried.
    pub writes_ok: usize,
    pub writes_tried: usize,
    /// The leader's mode at the end of the window.
    pub leader_mode_after: Option<crate::common::cluster::Mode>,
}

/// A membership change that leaves the new configuration without a live quorum: on 3 servers,
/// follower `k` is paused (for longer than syncLimit × tickTime, so a ZooKeeper leader no
/// longer counts it as synced), then the other follower is removed through the leader. The
/// new configuration {leader, k} has one live member. ZooKeeper's leader refuses such a change
/// (NewConfigNoQuorum: `PrepRequestProcessor` asks `Leader.isQuorumSynced` of the new
/// configuration) and keeps serving; the probe then writes through the leader for
/// `window_ms` while `k` stays paused.
pub async fn removal_without_a_live_new_quorum_probe(window_ms: u64) -> RemovalOutcome {
    let c = Cluster::start_async(ClusterOpts {
        voters: 3,
        extra_cfg: super::membership::extra_cfg(),
        ..ClusterOpts::default()
    })
    .await;
    let leader = c.blocking(|c| c.wait_ready(60)).await;
    let others = c.others(leader);
    let (removed, paused) = (others[0], others[1]);
    let writer = c
        .client_with(
            leader,
            zk::Client::connector().with_session_timeout(Duration::from_secs(10)),
        )
        .await;
    let base = crate::common::unique("removal");
    writer
        .create(&base, b"", &anyone())
        .await
        .expect("create base");
    c.blocking(move |c| c.sigstop(paused)).await;
    // Longer than syncLimit × tickTime (2.5 s): the paused follower is no longer synced.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let answer = remove_through(&c, removed, c.addr(leader)).await;
    let (mut writes_ok, mut writes_tried) = (0, 0);
    let until = Instant::now() + Duration::from_millis(window_ms);
    while Instant::now() < until {
        writes_tried += 1;
        let path = format!("{base}/w-{writes_tried}");
        let create = writer.create(&path, b"", &anyone());
        match tokio::time::timeout(Duration::from_secs(2), create).await {
            Ok(Ok(_)) => writes_ok += 1,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let leader_mode_after = c.blocking(move |c| c.mode(leader)).await;
    c.blocking(move |c| c.sigcont(paused)).await;
    RemovalOutcome {
        answer,
        writes_ok,
        writes_tried,
        leader_mode_after,
    }
}

/// Removes the leader of 3 servers by a reconfig under write load and adds it back, `rounds`
/// times; after each removal and each re-add, every member's process must still run (a
/// leader that removed itself must hand over, not crash). Returns the problems (empty: none)
/// and how many creates were acknowledged.
pub async fn leader_removal_probe(rounds: usize) -> (Vec<String>, u64) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let c = Cluster::start_async(ClusterOpts {
        voters: 3,
        extra_cfg: super::membership::extra_cfg(),
        ..ClusterOpts::default()
    })
    .await;
    let specs: Vec<String> = (0..c.len()).map(|i| c.server_spec(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let base = crate::common::unique("leader-removal");
    let setup = c.client(0).await;
    setup
        .create(&base, b"", &anyone())
        .await
        .expect("create base");
    let mut writers = vec![];
    for w in 0..2 {
        let (stop, acked, cs, base) = (
            stop.clone(),
            acked.clone(),
            c.connect_string(),
            base.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let conn = zk::Client::connector().with_session_timeout(Duration::from_secs(6));
                let Ok(Ok(cl)) =
                    tokio::time::timeout(Duration::from_secs(5), conn.connect(&cs)).await
                else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let path = format!("{base}/w{w}-{n}");
                    let create = cl.create(&path, b"", &anyone());
                    match tokio::time::timeout(Duration::from_secs(2), create).await {
                        Ok(Ok(_)) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
            }
        }));
    }
    let mut problems = vec![];
    for round in 0..rounds {
        let leader = c.blocking(|c| c.wait_ready(60)).await;
        let others = c.others(leader);
        let answer = remove_through(&c, leader, c.connect_string_of(&others)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let crashed = c.blocking(super::nemesis::restart_crashed).await;
        eprintln!("round {round}: removing leader {leader} -> {answer}; crashes: {crashed:?}");
        problems.extend(
            crashed
                .into_iter()
                .map(|n| format!("round {round}, after removing leader {leader}: {n}")),
        );
        let specs = specs.clone();
        let restored = c
            .blocking(move |c| super::membership::ensure_all(c, &specs, 60))
            .await;
        let crashed = c.blocking(super::nemesis::restart_crashed).await;
        problems.extend(
            crashed
                .into_iter()
                .map(|n| format!("round {round}, after re-adding {leader}: {n}")),
        );
        if let Err(e) = restored {
            problems.push(format!("round {round}: {e}"));
        }
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    (problems, acked.load(Ordering::Relaxed))
}
