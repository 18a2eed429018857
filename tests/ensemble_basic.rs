//! A real 3-server ensemble on loopback (three `rookery` processes): a write made on a
//! follower is readable on every server after sync; kill -9 of the leader under writes from
//! clients on the followers (a new leader takes writes within 10 s, no acknowledged write is
//! lost, no write in flight hangs, the followers' sessions and their ephemerals survive); a
//! session idle on a follower for 5 × its timeout survives, while a dead client's session on a
//! follower still expires; a follower cut off from the other two stops serving; an observer
//! (Raft learner) replicates, forwards writes and reports `Mode: observer`.
//!
//! The launcher is local to this file: zoo.cfg with `server.N=127.0.0.1:P:E;127.0.0.1:C` and
//! `dataDir/myid`; every process is killed (SIGKILL, by its own handle) on drop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zookeeper_client as zk;

/// tickTime of every test ensemble.
const TICK_MS: u64 = 200;
/// minSessionTimeout: keeps the raft election timeout at 500 ms (see `Config::raft_timing`).
const MIN_SESSION_MS: u64 = 2000;
/// Upper bound of any one test.
const TEST_BOUND: Duration = Duration::from_secs(150);

/// One server of the ensemble.
struct Member {
    id: u64,
    client_port: u16,
    child: Option<Child>,
}

/// Three rookery processes on loopback.
struct Ensemble {
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

fn free_ports(n: usize) -> Vec<u16> {
    // Hold all listeners at once so the ports are distinct, then release them.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Ensemble {
    fn start() -> Ensemble {
        Self::start_with_observer(None)
    }

    /// Three servers; `observer` (if any) is listed as `:observer` (a Raft learner).
    fn start_with_observer(observer: Option<u64>) -> Ensemble {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(9);
        let lines: Vec<String> = (0..3)
            .map(|i| {
                let role = if observer == Some(i as u64 + 1) {
                    ":observer"
                } else {
                    ""
                };
                format!(
                    "server.{}=127.0.0.1:{}:{}{role};127.0.0.1:{}",
                    i + 1,
                    ports[3 + i],
                    ports[6 + i],
                    ports[i]
                )
            })
            .collect();
        let mut members = Vec::new();
        for (i, &client_port) in ports.iter().take(3).enumerate() {
            let id = (i + 1) as u64;
            let sdir = dir.path().join(format!("s{id}"));
            let data = sdir.join("data");
            std::fs::create_dir_all(&data).unwrap();
            std::fs::write(data.join("myid"), format!("{id}\n")).unwrap();
            let cfg = format!(
                "tickTime={TICK_MS}\ninitLimit=10\nsyncLimit=5\nminSessionTimeout={MIN_SESSION_MS}\n\
                 maxSessionTimeout=20000\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
                 4lw.commands.whitelist=*\n{}\n",
                data.display(),
                client_port,
                lines.join("\n")
            );
            std::fs::write(sdir.join("zoo.cfg"), cfg).unwrap();
            members.push(Member {
                id,
                client_port,
                child: None,
            });
        }
        let mut ensemble = Ensemble { dir, members };
        for id in 1..=3 {
            ensemble.spawn(id);
        }
        ensemble
    }

    fn spawn(&mut self, id: u64) {
        let sdir = self.dir.path().join(format!("s{id}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(sdir.join("rookery.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rookery"))
            .arg("--config")
            .arg(sdir.join("zoo.cfg"))
            .env("ROOKERY_LOG", "info,raft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.members[(id - 1) as usize].child = Some(child);
    }

    /// kill -9 of one server.
    fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.members[(id - 1) as usize].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.members[(id - 1) as usize].client_port)
    }

    fn alive(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.id)
            .collect()
    }

    /// A four-letter word's answer, or "" if the server does not answer.
    fn four(&self, id: u64, word: &str) -> String {
        let Ok(mut s) =
            TcpStream::connect_timeout(&self.addr(id).parse().unwrap(), Duration::from_millis(500))
        else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(word.as_bytes()).is_err() {
            return String::new();
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    fn mode(&self, id: u64) -> Option<String> {
        self.four(id, "srvr")
            .lines()
            .find_map(|l| l.strip_prefix("Mode: ").map(str::to_string))
    }

    /// Waits (bounded) until exactly one live server says leader and the others follower;
    /// returns the leader's id.
    fn wait_leader(&self, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let alive = self.alive();
            let modes: Vec<(u64, Option<String>)> =
                alive.iter().map(|id| (*id, self.mode(*id))).collect();
            let leaders: Vec<u64> = modes
                .iter()
                .filter(|(_, m)| m.as_deref() == Some("leader"))
                .map(|(id, _)| *id)
                .collect();
            let followers = modes
                .iter()
                .filter(|(_, m)| matches!(m.as_deref(), Some("follower" | "observer")))
                .count();
            if leaders.len() == 1 && followers + 1 == alive.len() {
                return leaders[0];
            }
            assert!(
                Instant::now() < deadline,
                "no stable leader within {limit:?}: {modes:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for id in 1..=3 {
            let path = self.dir.path().join(format!("s{id}/rookery.log"));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- server {id} ---\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for id in 1..=3 {
            self.kill(id);
        }
    }
}

fn anyone() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
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

async fn connect_with(addr: &str, connector: zk::Connector) -> zk::Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt =
            tokio::time::timeout(Duration::from_secs(5), connector.clone().connect(addr)).await;
        match attempt {
            Ok(Ok(client)) => return client,
            other => {
                assert!(Instant::now() < deadline, "connect to {addr}: {other:?}");
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
    let ens = Ensemble::start();
    bounded("write on a follower", async {
        let leader = ens.wait_leader(Duration::from_secs(20));
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        // Admin: roles, quorum size, the server lines.
        let mntr = ens.four(leader, "mntr");
        assert!(mntr.contains("zk_server_state\tleader"), "{mntr}");
        assert!(mntr.contains("zk_quorum_size\t2"), "{mntr}");
        let conf = ens.four(follower, "conf");
        for id in 1..=3 {
            assert!(conf.contains(&format!("server.{id}=127.0.0.1:")), "{conf}");
        }
        let c = connect_detached(&ens.addr(follower), Duration::from_secs(4)).await;
        c.create("/from-follower", b"hello", &anyone())
            .await
            .unwrap();
        for id in 1..=3 {
            let data = read_after_sync(&ens.addr(id), "/from-follower").await;
            assert_eq!(data.as_deref(), Some(&b"hello"[..]), "server {id}");
        }
        // A session created on a follower resumes on another server (unknown there only
        // until applied: the barrier covers that).
        let other = (1..=3).find(|id| *id != leader && *id != follower).unwrap();
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
    let mut ens = Ensemble::start();
    bounded("failover", async {
        let leader = ens.wait_leader(Duration::from_secs(20));
        let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
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
        for f in &followers {
            let c = connect(&ens.addr(*f), Duration::from_secs(6)).await;
            c.create(&format!("/eph-{f}"), b"", &ephemeral())
                .await
                .unwrap();
            sessions.push((c.session_id(), *f));
            let (acked, stop) = (acked.clone(), stop.clone());
            let (killed, first_after) = (killed.clone(), first_after.clone());
            let f = *f;
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
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = acked.lock().unwrap().len();
        assert!(before > 0, "no write acknowledged before the kill");
        ens.kill(leader); // returns once the process is dead
        let killed_at = Instant::now();
        *killed.lock().unwrap() = Some(killed_at);
        // A new leader takes writes: the first acknowledgement of a write issued after the kill.
        let failover = loop {
            if let Some(t) = *first_after.lock().unwrap() {
                break t.duration_since(killed_at);
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(10),
                "no write acknowledged within 10 s of killing the leader\n{}",
                ens.logs()
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
        for id in &followers {
            let c = connect(&ens.addr(*id), Duration::from_secs(4)).await;
            c.sync("/w").await.unwrap();
            let children: std::collections::HashSet<String> =
                c.list_children("/w").await.unwrap().into_iter().collect();
            for path in &acked {
                let name = path.trim_start_matches("/w/");
                assert!(children.contains(name), "{path} lost on server {id}");
            }
        }
        // The killed leader restarts on its data dir, rejoins as a follower and catches up.
        ens.spawn(leader);
        let new_leader = ens.wait_leader(Duration::from_secs(20));
        assert_ne!(
            new_leader, leader,
            "the restarted server has the shorter log"
        );
        let last = acked.last().unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ens.mode(leader).as_deref() == Some("follower") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "restarted server never serves\n{}",
                ens.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            read_after_sync(&ens.addr(leader), &last).await.is_some(),
            "restarted server lacks {last}"
        );
        // The followers' sessions survived with their ephemerals.
        for ((sid, f), (c, failures, hung)) in sessions.iter().zip(&clients) {
            // A write in doubt fails (ConnectionLoss) well within 5 s; it never hangs.
            assert_eq!(*hung, 0, "writes of the client on server {f} hung for 5 s");
            eprintln!("client on server {f}: {failures} writes failed (in doubt), none hung");
            assert_eq!(c.session_id(), *sid);
            assert!(
                c.check_stat(&format!("/eph-{f}")).await.unwrap().is_some(),
                "ephemeral of the session on server {f} (failures {failures})"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_idle_on_a_follower_for_five_timeouts_survives() {
    let ens = Ensemble::start();
    bounded("idle session", async {
        let leader = ens.wait_leader(Duration::from_secs(20));
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        let timeout = Duration::from_secs(2);
        let c = connect(&ens.addr(follower), timeout).await;
        assert_eq!(c.session_timeout(), timeout);
        let sid = c.session_id();
        c.create("/idle-eph", b"", &ephemeral()).await.unwrap();
        let state = c.state_watcher();
        // Only the client library's pings for 5 session timeouts.
        tokio::time::sleep(timeout * 5).await;
        let now = state.peek_state();
        assert_eq!(now, zk::SessionState::SyncConnected, "{}", ens.logs());
        assert_eq!(c.session_id(), sid);
        // Seen from the leader, after a sync: still there.
        let data = read_after_sync(&ens.addr(leader), "/idle-eph").await;
        assert!(data.is_some(), "ephemeral of the idle session is gone");
        let dump = ens.four(leader, "dump");
        assert!(dump.contains(&format!("{:#x}", sid.0)), "{dump}");
    })
    .await;
}

/// A raw handshake for a new session of `timeout_ms`: the socket (after the answer's length)
/// if the server answered, `None` if it closed the socket.
fn raw_session(addr: &str, timeout_ms: i32) -> Option<TcpStream> {
    let mut s =
        TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(500)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let mut body = Vec::new();
    body.extend_from_slice(&0i32.to_be_bytes()); // protocol version
    body.extend_from_slice(&0i64.to_be_bytes()); // lastZxidSeen
    body.extend_from_slice(&timeout_ms.to_be_bytes());
    body.extend_from_slice(&0i64.to_be_bytes()); // session id
    body.extend_from_slice(&16i32.to_be_bytes());
    body.extend_from_slice(&[0u8; 16]);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    s.write_all(&frame).ok()?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut answer = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    s.read_exact(&mut answer).ok()?;
    Some(s)
}

fn handshake_answered(addr: &str) -> bool {
    raw_session(addr, 4000).is_some()
}

/// Sends a create of an ephemeral `path` (world:anyone ALL) on a raw connection and reads
/// the reply's error code.
fn raw_create_ephemeral(s: &mut TcpStream, path: &str) -> i32 {
    try_raw_create_ephemeral(s, path).expect("create reply")
}

/// [`raw_create_ephemeral`], `None` if the server closed the connection instead of replying.
fn try_raw_create_ephemeral(s: &mut TcpStream, path: &str) -> Option<i32> {
    let mut body = Vec::new();
    body.extend_from_slice(&1i32.to_be_bytes()); // xid
    body.extend_from_slice(&1i32.to_be_bytes()); // create
    body.extend_from_slice(&(path.len() as i32).to_be_bytes());
    body.extend_from_slice(path.as_bytes());
    body.extend_from_slice(&0i32.to_be_bytes()); // empty data
    body.extend_from_slice(&1i32.to_be_bytes()); // one ACL
    body.extend_from_slice(&31i32.to_be_bytes()); // ALL
    for part in ["world", "anyone"] {
        body.extend_from_slice(&(part.len() as i32).to_be_bytes());
        body.extend_from_slice(part.as_bytes());
    }
    body.extend_from_slice(&1i32.to_be_bytes()); // ephemeral
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    s.write_all(&frame).ok()?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut reply = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    s.read_exact(&mut reply).ok()?;
    Some(i32::from_be_bytes(reply.get(12..16)?.try_into().ok()?))
}

/// Touch forwarding must not keep a dead client's session alive: a session on a follower
/// whose client vanished expires at the leader, and its ephemeral goes everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_clients_session_on_a_follower_still_expires() {
    let ens = Ensemble::start();
    bounded("expiry of a follower session", async {
        let leader = ens.wait_leader(Duration::from_secs(20));
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        let mut raw = raw_session(&ens.addr(follower), 2000).expect("handshake on the follower");
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
        for id in 1..=3 {
            assert_eq!(read_after_sync(&ens.addr(id), "/dead-eph").await, None);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_from_the_others_stops_serving() {
    let mut ens = Ensemble::start();
    bounded("isolated follower", async {
        let leader = ens.wait_leader(Duration::from_secs(20));
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        assert!(handshake_answered(&ens.addr(follower)));
        let c = connect(&ens.addr(follower), Duration::from_secs(6)).await;
        let mut state = c.state_watcher();
        for id in 1..=3 {
            if id != follower {
                ens.kill(id);
            }
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
        let srvr = ens.four(follower, "srvr");
        assert_eq!(
            srvr.trim_end(),
            "This ZooKeeper instance is not currently serving requests"
        );
        assert!(!handshake_answered(&ens.addr(follower)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_replicates_and_forwards_writes() {
    let ens = Ensemble::start_with_observer(Some(3));
    bounded("observer", async {
        let leader = ens.wait_leader(Duration::from_secs(20));
        assert_ne!(leader, 3, "an observer never leads");
        assert_eq!(ens.mode(3).as_deref(), Some("observer"));
        let mntr = ens.four(leader, "mntr");
        // Two participants: a quorum of 2; the observer is a learner, not a voter.
        assert!(mntr.contains("zk_quorum_size\t2"), "{mntr}");
        assert!(mntr.contains("zk_synced_observers\t1"), "{mntr}");
        assert!(mntr.contains("zk_synced_followers\t1"), "{mntr}");
        let c = connect(&ens.addr(3), Duration::from_secs(4)).await;
        c.create("/from-observer", b"obs", &anyone()).await.unwrap();
        for id in 1..=3 {
            let data = read_after_sync(&ens.addr(id), "/from-observer").await;
            assert_eq!(data.as_deref(), Some(&b"obs"[..]), "server {id}");
        }
    })
    .await;
}

/// A raw handshake resuming (`session_id`, `passwd`), or creating a session when
/// `session_id` is 0: the socket and the answer's session id and password, `None` if the
/// server closed the socket.
fn raw_handshake(
    addr: &str,
    timeout_ms: i32,
    session_id: i64,
    passwd: &[u8],
) -> Option<(TcpStream, i64, Vec<u8>)> {
    let mut s =
        TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(500)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut body = Vec::new();
    body.extend_from_slice(&0i32.to_be_bytes()); // protocol version
    body.extend_from_slice(&0i64.to_be_bytes()); // lastZxidSeen
    body.extend_from_slice(&timeout_ms.to_be_bytes());
    body.extend_from_slice(&session_id.to_be_bytes());
    body.extend_from_slice(&(passwd.len() as i32).to_be_bytes());
    body.extend_from_slice(passwd);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    s.write_all(&frame).ok()?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut answer = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    s.read_exact(&mut answer).ok()?;
    // protocolVersion, timeOut, sessionId, passwd (length-prefixed)[, readOnly]
    let sid = i64::from_be_bytes(answer.get(8..16)?.try_into().ok()?);
    let n = i32::from_be_bytes(answer.get(16..20)?.try_into().ok()?).max(0) as usize;
    let pw = answer.get(20..20 + n)?.to_vec();
    Some((s, sid, pw))
}

/// The Reattach fence (cluster.md §4.4, ZooKeeper's SessionMoved): a session created on one
/// follower and resumed on another server belongs to the new connection; a create-ephemeral
/// still sent on the old connection is not applied (SessionMoved -118, or the old server has
/// already closed that connection), and the node's owner everywhere is the session as resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_moved_sessions_old_connection_is_fenced() {
    let ens = Ensemble::start();
    bounded("session moved", async {
        let leader = ens.wait_leader(Duration::from_secs(20));
        let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
        let (mut old, sid, pw) = raw_handshake(&ens.addr(followers[0]), 4000, 0, &[0; 16])
            .expect("new session on a follower");
        assert_ne!(sid, 0);
        assert_eq!(raw_create_ephemeral(&mut old, "/fence-before"), 0);
        let (mut new, resumed, _) = raw_handshake(&ens.addr(followers[1]), 4000, sid, &pw)
            .expect("resume on the other follower");
        assert_eq!(resumed, sid, "the resume was refused");
        // The old connection: SessionMoved, or already closed by its server.
        match try_raw_create_ephemeral(&mut old, "/fence-old") {
            Some(code) => assert_eq!(code, -118, "old connection's create: expected SessionMoved"),
            None => eprintln!("old connection closed by its server after the move"),
        }
        assert_eq!(raw_create_ephemeral(&mut new, "/fence-new"), 0);
        for id in 1..=3 {
            let c = connect(&ens.addr(id), Duration::from_secs(6)).await;
            c.sync("/").await.unwrap();
            assert!(
                c.check_stat("/fence-old").await.unwrap().is_none(),
                "server {id}: the old connection's ephemeral was applied"
            );
            for p in ["/fence-before", "/fence-new"] {
                let st = c.check_stat(p).await.unwrap();
                assert_eq!(st.map(|s| s.ephemeral_owner), Some(sid), "server {id}: {p}");
            }
        }
    })
    .await;
}
