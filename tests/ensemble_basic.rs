//! A real 3-server ensemble on loopback (three `rookery` processes, launched by
//! `tests/common/cluster.rs`): a write made on a follower is readable on every server after
//! sync; kill -9 of the leader under writes from clients on the followers (a new leader takes
//! writes within 10 s, no acknowledged write is lost, no write in flight hangs, the followers'
//! sessions and their ephemerals survive); a session idle on a follower for 5 × its timeout
//! survives, while a dead client's session on a follower still expires; a follower cut off
//! from the other two stops serving; an observer (Raft learner) replicates, forwards writes and
//! reports `Mode: observer`; the leader's `mntr` quorum metrics follow Raft progress (a killed
//! follower stops counting as synced within a few seconds and counts again once restarted).
//!
//! In the CI (`cargo test --test ensemble_basic`): one ensemble at a time
//! ([`common::cluster::exclusive`]), each test well under a minute. The same tests run against
//! a ZooKeeper 3.8 ensemble with `E2E_TARGET=zk` (all of them passed against Debian's 3.8.0 on
//! 2026-12-02), which checks that what they assert is ZooKeeper's behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{exclusive, Cluster, ClusterOpts, ExclusiveGuard, Mode};
use common::raw::{self, ConnectRequest, RawConn, ReadOutcome};
use zookeeper_client as zk;

/// tickTime of every test ensemble.
const TICK_MS: u64 = 200;
/// minSessionTimeout: keeps the raft election timeout at 500 ms (see `Config::raft_timing`).
const MIN_SESSION_MS: u64 = 2000;
/// Upper bound of any one test.
const TEST_BOUND: Duration = Duration::from_secs(150);

/// Three servers, the last `observers` of them observers (Raft learners); the guard keeps other
/// ensemble tests of this process from running at the same time (2 cores).
async fn ensemble(observers: usize) -> (ExclusiveGuard, Cluster) {
    let guard = tokio::task::spawn_blocking(exclusive).await.unwrap();
    let opts = ClusterOpts {
        voters: 3 - observers,
        observers,
        tick_time_ms: TICK_MS,
        extra_cfg: vec![
            format!("minSessionTimeout={MIN_SESSION_MS}"),
            "maxSessionTimeout=20000".to_string(),
        ],
        ..ClusterOpts::default()
    };
    (guard, Cluster::start_async(opts).await)
}

/// The leader, once every running member serves (bounded).
async fn wait_leader(ens: &Cluster) -> usize {
    ens.blocking(|c| c.wait_ready(20)).await
}

/// A four-letter word's answer, or "" if the member does not answer.
fn four(ens: &Cluster, i: usize, word: &str) -> String {
    ens.four_letter(i, word).unwrap_or_default()
}

fn anyone() -> zk::CreateOptions<'static> {
    common::anyone()
}

fn ephemeral() -> zk::CreateOptions<'static> {
    common::opts(zk::CreateMode::Ephemeral)
}

async fn connect(addr: &str, session: Duration) -> zk::Client {
    connect_with(addr, zk::Client::connector().with_session_timeout(session)).await
}

/// A client whose drop (or `into_session`) does not close its session, so that another
/// connection can resume it.
async fn connect_detached(addr: &str, session: Duration) -> zk::Client {
    connect_with(
        addr,
        zk::Client::connector()
            .with_session_timeout(session)
            .with_detached(),
    )
    .await
}

/// Connects, retrying (bounded, 20 s) while the member is not serving yet.
async fn connect_with(addr: &str, connector: zk::Connector) -> zk::Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match common::try_connect(addr, connector.clone(), 5).await {
            Ok(client) => return client,
            Err(e) => {
                assert!(Instant::now() < deadline, "connect to {addr}: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(TEST_BOUND, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {TEST_BOUND:?}: {what}"),
    }
}

/// sync + get on one server, with a fresh client (retrying while it is not serving).
async fn read_after_sync(addr: &str, path: &str) -> Option<Vec<u8>> {
    let c = connect(addr, Duration::from_secs(4)).await;
    c.sync(path).await.unwrap();
    match c.get_data(path).await {
        Ok((data, _)) => Some(data),
        Err(zk::Error::NoNode) => None,
        Err(e) => panic!("get {path} on {addr}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_on_a_follower_is_readable_on_all_three() {
    let (_guard, ens) = ensemble(0).await;
    bounded("write on a follower", async {
        let leader = wait_leader(&ens).await;
        let follower = ens.others(leader)[0];
        // Admin: roles, quorum size, the server lines.
        let mntr = four(&ens, leader, "mntr");
        assert!(mntr.contains("zk_server_state\tleader"), "{mntr}");
        // ZooKeeper's quorum size is the number of voters (its voting view), not the majority.
        assert!(mntr.contains("zk_quorum_size\t3"), "{mntr}");
        let conf = four(&ens, follower, "conf");
        for id in 1..=3 {
            assert!(conf.contains(&format!("server.{id}=127.0.0.1:")), "{conf}");
        }
        let c = connect_detached(&ens.addr(follower), Duration::from_secs(4)).await;
        c.create("/from-follower", b"hello", &anyone())
            .await
            .unwrap();
        for i in 0..3 {
            let data = read_after_sync(&ens.addr(i), "/from-follower").await;
            assert_eq!(data.as_deref(), Some(&b"hello"[..]), "member {i}");
        }
        // A session created on a follower resumes on another server (unknown there only
        // until applied: the barrier covers that).
        let other = ens.others(leader)[1];
        c.create("/eph-moving", b"", &ephemeral()).await.unwrap();
        let sid = c.session_id();
        // Detach without closing the session.
        let session = c.into_session();
        let moved = zk::Client::connector()
            .with_session_timeout(Duration::from_secs(4))
            .with_session(session)
            .connect(&ens.addr(other))
            .await
            .unwrap();
        assert_eq!(moved.session_id(), sid);
        // The moved session carries no lastZxidSeen (zookeeper-client's SessionInfo starts it
        // at 0), so the new server may not have applied the create yet: sync first (a ReadIndex
        // barrier in an ensemble), then the ephemeral must be there, still owned by the session.
        moved.sync("/").await.unwrap();
        let stat = moved.check_stat("/eph-moving").await.unwrap();
        assert_eq!(stat.map(|s| s.ephemeral_owner), Some(sid.0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_under_follower_writes_loses_nothing() {
    let (_guard, ens) = ensemble(0).await;
    bounded("failover", async {
        let leader = wait_leader(&ens).await;
        let followers = ens.others(leader);
        let setup = connect(&ens.addr(followers[0]), Duration::from_secs(4)).await;
        setup.create("/w", b"", &anyone()).await.unwrap();
        // A session on the leader, with an ephemeral; resumed on a follower after the kill.
        let on_leader = connect_detached(&ens.addr(leader), Duration::from_secs(8)).await;
        on_leader
            .create("/eph-leader", b"", &ephemeral())
            .await
            .unwrap();
        let leader_sid = on_leader.session_id();
        let leader_session = on_leader.into_session();
        // One writer per follower, each with its own session and an ephemeral.
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        // When the leader was dead, and when a write *issued* after that was first acknowledged
        // (it can only have been committed by a new leader).
        let killed: Arc<Mutex<Option<Instant>>> = Arc::default();
        let first_after: Arc<Mutex<Option<Instant>>> = Arc::default();
        let mut writers = Vec::new();
        let mut sessions = Vec::new();
        for &f in &followers {
            let c = connect(&ens.addr(f), Duration::from_secs(6)).await;
            c.create(&format!("/eph-{f}"), b"", &ephemeral())
                .await
                .unwrap();
            sessions.push((c.session_id(), f));
            let (acked, stop) = (acked.clone(), stop.clone());
            let (killed, first_after) = (killed.clone(), first_after.clone());
            writers.push(tokio::spawn(async move {
                let mut failures = 0u32;
                let mut hung = 0u32;
                for i in 0..100_000u32 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let path = format!("/w/{f}-{i}");
                    let issued = Instant::now();
                    match tokio::time::timeout(
                        Duration::from_secs(5),
                        c.create(&path, b"x", &anyone()),
                    )
                    .await
                    {
                        Ok(Ok(_)) => {
                            acked.lock().unwrap().push(path);
                            let now = Instant::now();
                            if killed.lock().unwrap().is_some_and(|k| issued > k) {
                                first_after.lock().unwrap().get_or_insert(now);
                            }
                        }
                        Ok(Err(zk::Error::SessionExpired)) => {
                            panic!("session of writer {f} expired")
                        }
                        Ok(Err(_)) => {
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(_) => hung += 1,
                    }
                }
                (c, failures, hung)
            }));
        }
        common::eventually(10, "a write acknowledged before the kill", || {
            let n = acked.lock().unwrap().len();
            async move { n > 0 }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = acked.lock().unwrap().len();
        ens.kill9(leader); // returns once the process is dead
        let killed_at = Instant::now();
        *killed.lock().unwrap() = Some(killed_at);
        // A new leader takes writes: the first acknowledgement of a write issued after the kill.
        let failover = loop {
            if let Some(t) = *first_after.lock().unwrap() {
                break t.duration_since(killed_at);
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(10),
                "no write acknowledged within 10 s of killing the leader"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        eprintln!("failover: first write acknowledged {failover:?} after kill -9 of the leader");
        let resumed = zk::Client::connector()
            .with_session_timeout(Duration::from_secs(8))
            .with_session(leader_session)
            .connect(&ens.addr(followers[1]))
            .await
            .expect("the dead leader's client resumes its session on a follower");
        assert_eq!(resumed.session_id(), leader_sid);
        assert!(resumed.check_stat("/eph-leader").await.unwrap().is_some());
        assert!(failover < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::Relaxed);
        let mut clients = Vec::new();
        for w in writers {
            clients.push(w.await.unwrap());
        }
        let acked = acked.lock().unwrap().clone();
        assert!(acked.len() > before, "writes resumed after the failover");
        // Every acknowledged write is on both survivors.
        for &i in &followers {
            let c = connect(&ens.addr(i), Duration::from_secs(4)).await;
            c.sync("/w").await.unwrap();
            let children: std::collections::HashSet<String> =
                c.list_children("/w").await.unwrap().into_iter().collect();
            for path in &acked {
                let name = path.trim_start_matches("/w/");
                assert!(children.contains(name), "{path} lost on member {i}");
            }
        }
        // The killed leader restarts on its data dir, rejoins as a follower and catches up.
        ens.start_member(leader);
        let new_leader = wait_leader(&ens).await;
        assert_ne!(
            new_leader, leader,
            "the restarted server has the shorter log"
        );
        assert_eq!(ens.mode(leader), Some(Mode::Follower));
        let last = acked.last().unwrap().clone();
        assert!(
            read_after_sync(&ens.addr(leader), &last).await.is_some(),
            "restarted server lacks {last}"
        );
        // The followers' sessions survived with their ephemerals.
        for ((sid, f), (c, failures, hung)) in sessions.iter().zip(&clients) {
            // A write in doubt fails (ConnectionLoss) well within 5 s; it never hangs.
            assert_eq!(*hung, 0, "writes of the client on member {f} hung for 5 s");
            eprintln!("client on member {f}: {failures} writes failed (in doubt), none hung");
            assert_eq!(c.session_id(), *sid);
            assert!(
                c.check_stat(&format!("/eph-{f}")).await.unwrap().is_some(),
                "ephemeral of the session on member {f} (failures {failures})"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_idle_on_a_follower_for_five_timeouts_survives() {
    let (_guard, ens) = ensemble(0).await;
    bounded("idle session", async {
        let leader = wait_leader(&ens).await;
        let follower = ens.others(leader)[0];
        let timeout = Duration::from_secs(2);
        let c = connect(&ens.addr(follower), timeout).await;
        assert_eq!(c.session_timeout(), timeout);
        let sid = c.session_id();
        c.create("/idle-eph", b"", &ephemeral()).await.unwrap();
        let state = c.state_watcher();
        // Only the client library's pings for 5 session timeouts.
        tokio::time::sleep(timeout * 5).await;
        let now = state.peek_state();
        assert_eq!(now, zk::SessionState::SyncConnected);
        assert_eq!(c.session_id(), sid);
        // Seen from the leader, after a sync: still there.
        let data = read_after_sync(&ens.addr(leader), "/idle-eph").await;
        assert!(data.is_some(), "ephemeral of the idle session is gone");
        let dump = four(&ens, leader, "dump");
        assert!(dump.contains(&format!("{:#x}", sid.0)), "{dump}");
    })
    .await;
}

/// A raw handshake resuming (`session_id`, `passwd`), or creating a session when
/// `session_id` is 0; `None` if the server closed the socket instead of answering.
fn raw_handshake(addr: &str, timeout_ms: i32, session_id: i64, passwd: &[u8]) -> Option<RawConn> {
    let req = ConnectRequest {
        session_id,
        passwd: passwd.to_vec(),
        ..ConnectRequest::new(timeout_ms)
    };
    RawConn::connect_req(addr, &req).ok().map(|(conn, _)| conn)
}

fn handshake_answered(addr: &str) -> bool {
    raw_handshake(addr, 4000, 0, &[0; 16]).is_some()
}

/// Sends a create of an ephemeral `path` (world:anyone ALL) on a raw connection and reads
/// the reply's error code.
fn raw_create_ephemeral(conn: &mut RawConn, path: &str) -> i32 {
    try_raw_create_ephemeral(conn, path).expect("create reply")
}

/// [`raw_create_ephemeral`], `None` if the server closed the connection instead of replying.
fn try_raw_create_ephemeral(conn: &mut RawConn, path: &str) -> Option<i32> {
    let xid = conn.next_xid();
    let body = raw::create_req(path, b"", raw::mode::EPHEMERAL);
    let request = raw::Enc::new()
        .i32(xid)
        .i32(raw::op::CREATE)
        .raw(&body)
        .bytes();
    if !conn.try_write_raw(&raw::frame(&request)) {
        return None;
    }
    match conn.read_frame(Duration::from_secs(10)) {
        ReadOutcome::Frame(reply) => Some(i32::from_be_bytes(reply.get(12..16)?.try_into().ok()?)),
        ReadOutcome::Closed | ReadOutcome::TimedOut => None,
    }
}

/// Touch forwarding must not keep a dead client's session alive: a session on a follower
/// whose client vanished expires at the leader, and its ephemeral goes everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_clients_session_on_a_follower_still_expires() {
    let (_guard, ens) = ensemble(0).await;
    bounded("expiry of a follower session", async {
        let leader = wait_leader(&ens).await;
        let follower = ens.others(leader)[0];
        let mut raw = raw_handshake(&ens.addr(follower), 2000, 0, &[0; 16])
            .expect("handshake on the follower");
        assert_eq!(raw_create_ephemeral(&mut raw, "/dead-eph"), 0);
        let created = Instant::now();
        drop(raw); // the client vanishes without closing its session
        let observer = connect(&ens.addr(leader), Duration::from_secs(10)).await;
        let gone = loop {
            observer.sync("/").await.unwrap();
            if observer.check_stat("/dead-eph").await.unwrap().is_none() {
                break created.elapsed();
            }
            assert!(
                created.elapsed() < Duration::from_secs(15),
                "the dead client's ephemeral is still there after 15 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        eprintln!("dead follower session expired {gone:?} after its last message");
        assert!(
            gone >= Duration::from_millis(1500),
            "expired early: {gone:?}"
        );
        for i in 0..3 {
            assert_eq!(read_after_sync(&ens.addr(i), "/dead-eph").await, None);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_from_the_others_stops_serving() {
    let (_guard, ens) = ensemble(0).await;
    bounded("isolated follower", async {
        let leader = wait_leader(&ens).await;
        let follower = ens.others(leader)[0];
        assert!(handshake_answered(&ens.addr(follower)));
        let c = connect(&ens.addr(follower), Duration::from_secs(6)).await;
        let mut state = c.state_watcher();
        for other in ens.others(follower) {
            ens.kill9(other);
        }
        let killed = Instant::now();
        // A sync there goes through a ReadIndex barrier that no leader answers: it fails
        // (ConnectionLoss) instead of answering from the follower's possibly stale state.
        let sync = tokio::time::timeout(Duration::from_secs(5), c.sync("/")).await;
        assert!(
            matches!(sync, Ok(Err(_))),
            "sync on a cut-off follower must fail, got {sync:?}"
        );
        // Its client is disconnected, srvr says it is not serving, handshakes are refused.
        let disconnected = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if state.peek_state() != zk::SessionState::SyncConnected {
                    return;
                }
                state.changed().await;
            }
        })
        .await;
        assert!(
            disconnected.is_ok(),
            "client still connected 5 s after the cut"
        );
        eprintln!(
            "isolated follower dropped its client {:?} after the cut",
            killed.elapsed()
        );
        let srvr = four(&ens, follower, "srvr");
        assert_eq!(
            srvr.trim_end(),
            "This ZooKeeper instance is not currently serving requests"
        );
        assert!(!handshake_answered(&ens.addr(follower)));
    })
    .await;
}

/// Polls member `i`'s `mntr` until `key` has the value `want` (bounded by `secs`); returns how
/// long that took.
async fn wait_mntr(ens: &Cluster, i: usize, key: &str, want: &str, secs: u64) -> Duration {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    loop {
        let mntr = ens.mntr(i);
        if mntr.get(key).map(String::as_str) == Some(want) {
            return start.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "member {i}: {key} never became {want} within {secs}s: {mntr:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keys ZooKeeper's `LeaderZooKeeperServer` registers: printed by the leader only.
const LEADER_ONLY: [&str; 9] = [
    "zk_learners",
    "zk_synced_followers",
    "zk_synced_non_voting_followers",
    "zk_synced_observers",
    "zk_pending_syncs",
    "zk_leader_uptime",
    "zk_last_proposal_size",
    "zk_min_proposal_size",
    "zk_max_proposal_size",
];

/// The leader's quorum metrics come from Raft progress: a SIGKILLed follower stops counting
/// as synced within a few seconds (two to three election timeouts of 500 ms at most), and
/// counts again once restarted; followers print none of the leader-only keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_quorum_metrics_follow_raft_progress() {
    let (_guard, ens) = ensemble(0).await;
    bounded("quorum metrics", async {
        let leader = wait_leader(&ens).await;
        let follower = ens.others(leader)[0];
        wait_mntr(&ens, leader, "zk_synced_followers", "2", 10).await;
        let c = connect(&ens.addr(leader), Duration::from_secs(4)).await;
        c.create("/big", &[7u8; 1000], &anyone()).await.unwrap();
        let m = ens.mntr(leader);
        for key in LEADER_ONLY {
            assert!(m.contains_key(key), "leader lacks {key}: {m:?}");
        }
        assert_eq!(m["zk_learners"], "2", "{m:?}");
        assert_eq!(m["zk_synced_observers"], "0", "{m:?}");
        assert_eq!(m["zk_synced_non_voting_followers"], "0", "{m:?}");
        assert!(m["zk_pending_syncs"].parse::<u64>().is_ok(), "{m:?}");
        let uptime: u64 = m["zk_leader_uptime"].parse().unwrap();
        assert!(uptime > 0 && uptime < 600_000, "{m:?}");
        let size = |k: &str| m[k].parse::<i64>().unwrap();
        // The create's transaction carries its 1000 data bytes.
        assert!(size("zk_max_proposal_size") > 1000, "{m:?}");
        assert!(size("zk_min_proposal_size") > 0, "{m:?}");
        assert!(
            size("zk_min_proposal_size") <= size("zk_last_proposal_size"),
            "{m:?}"
        );
        let srvr = four(&ens, leader, "srvr");
        assert!(srvr.contains("Proposal sizes last/min/max: "), "{srvr}");
        let on_follower = ens.mntr(follower);
        for key in LEADER_ONLY {
            assert!(!on_follower.contains_key(key), "follower prints {key}");
        }
        assert!(!four(&ens, follower, "srvr").contains("Proposal sizes"));

        ens.kill9(follower);
        let dropped = wait_mntr(&ens, leader, "zk_synced_followers", "1", 5).await;
        eprintln!("zk_synced_followers dropped to 1 {dropped:?} after SIGKILL of a follower");
        wait_mntr(&ens, leader, "zk_learners", "1", 5).await;
        assert_eq!(
            ens.leader(),
            Some(leader),
            "a follower kill moved the leader"
        );

        ens.start_member(follower);
        let back = wait_mntr(&ens, leader, "zk_synced_followers", "2", 20).await;
        eprintln!("zk_synced_followers back to 2 {back:?} after the restart");
        assert_eq!(ens.mntr(leader)["zk_learners"], "2");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_replicates_and_forwards_writes() {
    let (_guard, ens) = ensemble(1).await;
    bounded("observer", async {
        let leader = wait_leader(&ens).await;
        let observer = 2;
        assert_ne!(leader, observer, "an observer never leads");
        assert_eq!(ens.mode(observer), Some(Mode::Observer));
        let mntr = four(&ens, leader, "mntr");
        // Two participants (the voting view); the observer is a learner, not a voter.
        assert!(mntr.contains("zk_quorum_size\t2"), "{mntr}");
        wait_mntr(&ens, leader, "zk_synced_observers", "1", 10).await;
        wait_mntr(&ens, leader, "zk_synced_followers", "1", 10).await;
        let c = connect(&ens.addr(observer), Duration::from_secs(4)).await;
        c.create("/from-observer", b"obs", &anyone()).await.unwrap();
        for i in 0..3 {
            let data = read_after_sync(&ens.addr(i), "/from-observer").await;
            assert_eq!(data.as_deref(), Some(&b"obs"[..]), "member {i}");
        }
    })
    .await;
}

/// The Reattach fence (cluster.md §4.4, ZooKeeper's SessionMoved): a session created on one
/// follower and resumed on another server belongs to the new connection; a create-ephemeral
/// still sent on the old connection is not applied (SessionMoved -118, or the old server has
/// already closed that connection), and the node's owner everywhere is the session as resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_moved_sessions_old_connection_is_fenced() {
    let (_guard, ens) = ensemble(0).await;
    bounded("session moved", async {
        let leader = wait_leader(&ens).await;
        let followers = ens.others(leader);
        let mut old = raw_handshake(&ens.addr(followers[0]), 4000, 0, &[0; 16])
            .expect("new session on a follower");
        let (sid, pw) = (old.session_id, old.passwd.clone());
        assert_ne!(sid, 0);
        assert_eq!(raw_create_ephemeral(&mut old, "/fence-before"), 0);
        let mut new = raw_handshake(&ens.addr(followers[1]), 4000, sid, &pw)
            .expect("resume on the other follower");
        assert_eq!(new.session_id, sid, "the resume was refused");
        // The old connection: SessionMoved, or already closed by its server.
        match try_raw_create_ephemeral(&mut old, "/fence-old") {
            Some(code) => assert_eq!(code, -118, "old connection's create: expected SessionMoved"),
            None => eprintln!("old connection closed by its server after the move"),
        }
        assert_eq!(raw_create_ephemeral(&mut new, "/fence-new"), 0);
        for i in 0..3 {
            let c = connect(&ens.addr(i), Duration::from_secs(6)).await;
            c.sync("/").await.unwrap();
            assert!(
                c.check_stat("/fence-old").await.unwrap().is_none(),
                "member {i}: the old connection's ephemeral was applied"
            );
            for p in ["/fence-before", "/fence-new"] {
                let st = c.check_stat(p).await.unwrap();
                assert_eq!(st.map(|s| s.ephemeral_owner), Some(sid), "member {i}: {p}");
            }
        }
    })
    .await;
}
