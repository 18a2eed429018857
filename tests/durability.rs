//! Crash durability: the server is SIGKILLed 20 times under concurrent write load (creates,
//! setData, two-node multis) and restarted on the same data dir and port. At the end:
//! * every acknowledged create exists, holding its last acknowledged value or a value written
//!   after it (by an unacknowledged, later request);
//! * nothing was invented: every node under /dur was attempted, with an attempted value;
//! * nothing was half-applied: the two nodes of a multi exist together or not at all.
//!
//! Written for rookery; it also passes against ZooKeeper (`E2E_TARGET=zk cargo test --test
//! durability`), only slower because of JVM restarts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use zookeeper_client::{self as zk, Error};

const KILLS: usize = 20;
const WRITERS: usize = 4;
const DURABILITY_BOUND_SECS: u64 = 600;
const OP_BOUND: Duration = Duration::from_secs(45);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Acked,
    Unknown,
}

#[derive(Default, Debug)]
struct Ledger {
    /// path -> every value written to it, in issue order (index 0 = the create), with outcome.
    writes: BTreeMap<String, Vec<(Vec<u8>, Outcome)>>,
    /// Multi-created pairs: (a, b, outcome).
    pairs: Vec<(String, String, Outcome)>,
    acked: u64,
    unknown: u64,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed(k: u64) -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    (t ^ (k.wrapping_mul(0x9E37_79B9_7F4A_7C15))) | 1
}

async fn new_client(addr: &str) -> zk::Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let connector = zk::Client::connector().with_session_timeout(Duration::from_secs(10));
        match try_connect(addr, connector, 30).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("durability: reconnect to {addr} failed ({e}), retrying");
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("could not connect to {addr} within 60s: {e}"),
        }
    }
}

fn terminal(e: &Error) -> bool {
    matches!(
        e,
        Error::SessionExpired
            | Error::ClientClosed
            | Error::AuthFailed
            | Error::NoHosts
            | Error::Timeout
    )
}

async fn writer(k: usize, addr: String, stop: Arc<AtomicBool>, progress: Arc<AtomicU64>) -> Ledger {
    let mut ledger = Ledger::default();
    let mut rng = Rng(seed(k as u64));
    let mut client = new_client(&addr).await;
    let mut acked_paths: Vec<String> = vec![];
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let choice = rng.below(10);
        let result: Result<(), Error>;
        if choice < 4 || acked_paths.is_empty() {
            let path = format!("/dur/w{k}-c{i}");
            let value = format!("w{k}-c{i}-v0").into_bytes();
            let r = tokio::time::timeout(OP_BOUND, client.create(&path, &value, &anyone())).await;
            let r =
                r.unwrap_or_else(|_| panic!("writer {k}: create not answered within {OP_BOUND:?}"));
            let outcome = if r.is_ok() {
                Outcome::Acked
            } else {
                Outcome::Unknown
            };
            ledger
                .writes
                .entry(path.clone())
                .or_default()
                .push((value, outcome));
            if r.is_ok() {
                acked_paths.push(path);
            }
            result = r.map(|_| ());
        } else if choice < 8 {
            let path = acked_paths[rng.below(acked_paths.len() as u64) as usize].clone();
            let value = format!("w{k}-s{i}").into_bytes();
            let r = tokio::time::timeout(OP_BOUND, client.set_data(&path, &value, None)).await;
            let r = r
                .unwrap_or_else(|_| panic!("writer {k}: setData not answered within {OP_BOUND:?}"));
            let outcome = if r.is_ok() {
                Outcome::Acked
            } else {
                Outcome::Unknown
            };
            ledger.writes.get_mut(&path).unwrap().push((value, outcome));
            result = r.map(|_| ());
        } else {
            let a = format!("/dur/w{k}-m{i}-a");
            let b = format!("/dur/w{k}-m{i}-b");
            let value = format!("w{k}-m{i}").into_bytes();
            let mut w = client.new_multi_writer();
            w.add_create(&a, &value, &anyone()).unwrap();
            w.add_create(&b, &value, &anyone()).unwrap();
            let r = tokio::time::timeout(OP_BOUND, w.commit()).await;
            let r =
                r.unwrap_or_else(|_| panic!("writer {k}: multi not answered within {OP_BOUND:?}"));
            let outcome = if r.is_ok() {
                Outcome::Acked
            } else {
                Outcome::Unknown
            };
            ledger
                .writes
                .entry(a.clone())
                .or_default()
                .push((value.clone(), outcome));
            ledger
                .writes
                .entry(b.clone())
                .or_default()
                .push((value, outcome));
            ledger.pairs.push((a, b, outcome));
            result = r.map(|_| ()).map_err(Error::from);
        }
        match result {
            Ok(()) => {
                ledger.acked += 1;
                progress.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                ledger.unknown += 1;
                if terminal(&e) || client.state().is_terminated() {
                    client = new_client(&addr).await;
                }
            }
        }
    }
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    within(DURABILITY_BOUND_SECS, "acknowledged_writes_survive_sigkill", async {
        let server = Arc::new(TestServer::start(ServerOpts::default()));
        let addr = server.addr();
        {
            let c = server.client().await;
            c.create("/dur", b"", &anyone()).await.unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let mut handles = vec![];
        for k in 0..WRITERS {
            handles.push(tokio::spawn(writer(k, addr.clone(), stop.clone(), progress.clone())));
        }

        let started = Instant::now();
        let mut rng = Rng(seed(99));
        let mut acked_between_kills = vec![];
        for round in 0..KILLS {
            let before = progress.load(Ordering::SeqCst);
            // Let load run; make sure at least something got acknowledged since the restart.
            let pause = 200 + rng.below(601);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let t = Instant::now();
            while progress.load(Ordering::SeqCst) == before {
                assert!(t.elapsed() < Duration::from_secs(30), "round {round}: no write acknowledged within 30s of a restart");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked_between_kills.push(progress.load(Ordering::SeqCst) - before);
            let s = server.clone();
            tokio::task::spawn_blocking(move || {
                s.kill9();
                s.start_again();
            })
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::SeqCst);
        let mut ledgers = vec![];
        for h in handles {
            ledgers.push(within(90, "writers to finish", h).await.expect("writer task panicked"));
        }
        let load_time = started.elapsed();

        // ---- verification on a fresh session ----
        let c = server.client().await;
        let present: BTreeSet<String> =
            c.list_children("/dur").await.unwrap().into_iter().map(|n| format!("/dur/{n}")).collect();
        let mut attempted: BTreeMap<&str, &Vec<(Vec<u8>, Outcome)>> = BTreeMap::new();
        for l in &ledgers {
            for (p, w) in &l.writes {
                attempted.insert(p, w);
            }
        }
        let mut problems = vec![];
        // Nothing invented.
        for p in &present {
            if !attempted.contains_key(p.as_str()) {
                problems.push(format!("{p} exists but was never attempted"));
            }
        }
        // Acknowledged writes are durable; values are attempted ones, not older than the last ack.
        let mut checked = 0;
        for (p, writes) in &attempted {
            let last_ack = writes.iter().rposition(|(_, o)| *o == Outcome::Acked);
            let exists = present.contains(*p);
            match (last_ack, exists) {
                (Some(_), false) => problems.push(format!("{p}: acknowledged create lost")),
                (None, false) => {},
                (_, true) => {
                    let (data, _) = c.get_data(p).await.unwrap();
                    checked += 1;
                    let from = last_ack.unwrap_or(0);
                    if !writes[from..].iter().any(|(v, _)| *v == data) {
                        let pos = writes.iter().position(|(v, _)| *v == data);
                        problems.push(format!(
                            "{p}: value {:?} (write #{pos:?}) but the last acknowledged write is #{from} of {}",
                            String::from_utf8_lossy(&data),
                            writes.len()
                        ));
                    }
                },
            }
        }
        // Multis are all-or-nothing.
        for l in &ledgers {
            for (a, b, o) in &l.pairs {
                let (ea, eb) = (present.contains(a), present.contains(b));
                if ea != eb {
                    problems.push(format!("multi half-applied: {a} exists={ea}, {b} exists={eb} ({o:?})"));
                }
            }
        }
        let acked: u64 = ledgers.iter().map(|l| l.acked).sum();
        let unknown: u64 = ledgers.iter().map(|l| l.unknown).sum();
        eprintln!(
            "durability: {KILLS} kills in {load_time:?}, {acked} acknowledged / {unknown} failed-or-unknown ops, \
             {} nodes present, {checked} values checked, acks per round {acked_between_kills:?}",
            present.len()
        );
        assert!(problems.is_empty(), "{} durability violations:\n{}", problems.len(), problems.join("\n"));
        assert!(acked >= KILLS as u64, "too little load was acknowledged: {acked}");
    })
    .await
}
