//! Write load with a ledger of what was acknowledged, and the check of a server's (or every
//! member's) tree against it: shared by the standalone crash test (tests/durability.rs) and the
//! ensemble tests (tests/ensemble_*.rs, as `cluster::load`). Each writer creates
//! `<base>/w<k>-c<i>` nodes, sets data on its own acknowledged ones and creates two-node multis,
//! through a client with the given connect string (reconnecting on terminal errors).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use super::{anyone, try_connect, within};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Acked,
    Unknown,
}

#[derive(Default, Debug)]
pub struct Ledger {
    /// path -> every value written to it, in issue order (index 0 = the create).
    pub writes: BTreeMap<String, Vec<(Vec<u8>, Outcome)>>,
    /// Multi-created pairs: (a, b, outcome).
    pub pairs: Vec<(String, String, Outcome)>,
    pub acked: u64,
    pub unknown: u64,
}

/// Acknowledgement times, shared by all writers: (sent, acked).
#[derive(Default)]
pub struct Acks {
    pub times: Mutex<Vec<(Instant, Instant)>>,
    pub count: AtomicU64,
}

impl Acks {
    /// Earliest ack of a write *sent* after `t`, as a delay from `t`.
    pub fn first_ack_sent_after(&self, t: Instant) -> Option<Duration> {
        self.times
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| *s >= t)
            .map(|(_, a)| *a - t)
            .min()
    }
}

/// xorshift64: reproducible op mixes and kill schedules without a dependency.
pub struct Rng(u64);
impl Rng {
    /// A generator for stream `k` (never the all-zero state).
    pub fn seeded(k: u64) -> Rng {
        Rng((k + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform-ish in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const OP_BOUND: Duration = Duration::from_secs(45);

async fn new_client(cs: &str, session_ms: u64) -> zk::Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let connector =
            zk::Client::connector().with_session_timeout(Duration::from_millis(session_ms));
        match try_connect(cs, connector, 20).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("writer: connect to {cs} failed ({e}), retrying");
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("writer: could not connect to {cs} within 60s: {e}"),
        }
    }
}

fn terminal(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::SessionExpired
            | zk::Error::ClientClosed
            | zk::Error::AuthFailed
            | zk::Error::NoHosts
            | zk::Error::Timeout
    )
}

/// Runs until `stop`; every op is bounded by 45 s (a longer wait panics: a hung request).
pub async fn writer(
    k: usize,
    base: String,
    cs: String,
    stop: Arc<AtomicBool>,
    acks: Arc<Acks>,
) -> Ledger {
    let mut ledger = Ledger::default();
    let mut rng = Rng::seeded(k as u64);
    let mut client = new_client(&cs, 10_000).await;
    let mut mine: Vec<String> = vec![];
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let sent = Instant::now();
        let choice = rng.next() % 10;
        let (paths, value, r) = if mine.is_empty() || choice < 4 {
            let path = format!("{base}/w{k}-c{i}");
            let value = format!("w{k}-c{i}-v0").into_bytes();
            let r = tokio::time::timeout(OP_BOUND, client.create(&path, &value, &anyone()))
                .await
                .unwrap_or_else(|_| panic!("writer {k}: create not answered in {OP_BOUND:?}"))
                .map(|_| ());
            if r.is_ok() {
                mine.push(path.clone());
            }
            (vec![path], value, r)
        } else if choice < 8 {
            let path = mine[(rng.next() % mine.len() as u64) as usize].clone();
            let value = format!("w{k}-s{i}").into_bytes();
            let r = tokio::time::timeout(OP_BOUND, client.set_data(&path, &value, None))
                .await
                .unwrap_or_else(|_| panic!("writer {k}: setData not answered in {OP_BOUND:?}"))
                .map(|_| ());
            (vec![path], value, r)
        } else {
            // A two-node multi: all or nothing.
            let a = format!("{base}/w{k}-m{i}-a");
            let b = format!("{base}/w{k}-m{i}-b");
            let value = format!("w{k}-m{i}").into_bytes();
            let mut w = client.new_multi_writer();
            w.add_create(&a, &value, &anyone()).unwrap();
            w.add_create(&b, &value, &anyone()).unwrap();
            let r = tokio::time::timeout(OP_BOUND, w.commit())
                .await
                .unwrap_or_else(|_| panic!("writer {k}: multi not answered in {OP_BOUND:?}"))
                .map(|_| ())
                .map_err(zk::Error::from);
            let outcome = if r.is_ok() {
                Outcome::Acked
            } else {
                Outcome::Unknown
            };
            ledger.pairs.push((a.clone(), b.clone(), outcome));
            (vec![a, b], value, r)
        };
        let outcome = if r.is_ok() {
            Outcome::Acked
        } else {
            Outcome::Unknown
        };
        for path in paths {
            ledger
                .writes
                .entry(path)
                .or_default()
                .push((value.clone(), outcome));
        }
        match r {
            Ok(()) => {
                ledger.acked += 1;
                acks.count.fetch_add(1, Ordering::SeqCst);
                acks.times.lock().unwrap().push((sent, Instant::now()));
            }
            Err(e) => {
                ledger.unknown += 1;
                if terminal(&e) || client.state().is_terminated() {
                    client = new_client(&cs, 10_000).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    ledger
}

/// Checks the ledgers against what members hold: every acknowledged create exists with its
/// last acknowledged value or a later attempted one; nothing unattempted exists; the two
/// nodes of a multi exist together or not at all. Returns the
/// problems (empty = fine) and the number of values checked.
pub fn verify(
    ledgers: &[Ledger],
    per_member: &[(usize, BTreeMap<String, Vec<u8>>)],
) -> (Vec<String>, usize) {
    let mut problems = vec![];
    let mut checked = 0;
    let mut attempted: BTreeMap<&str, &Vec<(Vec<u8>, Outcome)>> = BTreeMap::new();
    for l in ledgers {
        for (p, w) in &l.writes {
            attempted.insert(p, w);
        }
    }
    for (member, present) in per_member {
        for l in ledgers {
            for (a, b, o) in &l.pairs {
                let (ea, eb) = (present.contains_key(a), present.contains_key(b));
                if ea != eb {
                    problems.push(format!(
                        "member {member}: multi half-applied: {a} exists={ea}, {b} exists={eb} ({o:?})"
                    ));
                }
            }
        }
        for p in present.keys() {
            if !attempted.contains_key(p.as_str()) {
                problems.push(format!(
                    "member {member}: {p} exists but was never attempted"
                ));
            }
        }
        for (p, writes) in &attempted {
            let last_ack = writes.iter().rposition(|(_, o)| *o == Outcome::Acked);
            match (last_ack, present.get(*p)) {
                (Some(_), None) => {
                    problems.push(format!("member {member}: acknowledged create {p} lost"))
                }
                (None, None) => {}
                (_, Some(data)) => {
                    checked += 1;
                    let from = last_ack.unwrap_or(0);
                    if !writes[from..].iter().any(|(v, _)| v == data) {
                        let pos = writes.iter().position(|(v, _)| v == data);
                        problems.push(format!(
                            "member {member}: {p} holds {:?} (write #{pos:?}) but the last acknowledged write is #{from} of {}: {:?}",
                            String::from_utf8_lossy(data),
                            writes.len(),
                            writes.iter().map(|(v, o)| (String::from_utf8_lossy(v).into_owned(), *o)).collect::<Vec<_>>()
                        ));
                    }
                }
            }
        }
    }
    (problems, checked)
}

/// Starts `n` writers, writer `k` on connect string `cs(k)`.
pub fn spawn_writers(
    n: usize,
    base: &str,
    cs: impl Fn(usize) -> String,
    stop: &Arc<AtomicBool>,
    acks: &Arc<Acks>,
) -> Vec<tokio::task::JoinHandle<Ledger>> {
    (0..n)
        .map(|k| {
            tokio::spawn(writer(
                k,
                base.to_string(),
                cs(k),
                stop.clone(),
                acks.clone(),
            ))
        })
        .collect()
}

/// Stops the writers and collects their ledgers (90 s bound).
pub async fn finish(
    stop: &Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<Ledger>>,
) -> Vec<Ledger> {
    stop.store(true, Ordering::SeqCst);
    let mut out = vec![];
    for h in handles {
        out.push(
            within(90, "writers to finish", h)
                .await
                .expect("writer panicked"),
        );
    }
    out
}

/// Waits until `acks.count` grows by at least `n` (bounded by `secs`).
pub async fn wait_progress(acks: &Acks, n: u64, secs: u64, what: &str) {
    let start = acks.count.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(secs);
    while acks.count.load(Ordering::SeqCst) < start + n {
        assert!(
            Instant::now() < deadline,
            "{what}: fewer than {n} writes acknowledged in {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `sync("/")` on `client`, then path -> data of every child of `dir` (one level); a missing
/// `dir` is an empty map (the checks then report what is missing).
pub async fn dump_children(client: &zk::Client, dir: &str) -> BTreeMap<String, Vec<u8>> {
    within(30, "sync before dump", client.sync("/"))
        .await
        .unwrap_or_else(|e| panic!("sync before dumping {dir}: {e}"));
    let kids = match within(30, "list", client.list_children(dir)).await {
        Ok(k) => k,
        Err(zk::Error::NoNode) => vec![],
        Err(e) => panic!("list {dir}: {e}"),
    };
    let mut m = BTreeMap::new();
    for chunk in kids.chunks(200) {
        let futs = chunk.iter().map(|k| {
            let p = format!("{dir}/{k}");
            async move {
                match client.get_data(&p).await {
                    Ok((d, _)) => Some((p, d)),
                    Err(zk::Error::NoNode) => None,
                    Err(e) => panic!("getData {p}: {e}"),
                }
            }
        });
        let r = within(60, "reads", futures::future::join_all(futs)).await;
        m.extend(r.into_iter().flatten());
    }
    m
}

/// `rounds` crash rounds under the running load: each lets it run 200-800 ms and until at least
/// one more write is acknowledged (30 s bound), then awaits `crash(round)` (kill something and
/// restart it). Returns the writes acknowledged in each round.
pub async fn crash_rounds<F, Fut>(
    rounds: usize,
    acks: &Acks,
    rng: &mut Rng,
    mut crash: F,
) -> Vec<u64>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut per_round = vec![];
    for round in 0..rounds {
        let before = acks.count.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200 + rng.below(601))).await;
        wait_progress(
            acks,
            1,
            30,
            &format!("round {round}: load since the last restart"),
        )
        .await;
        per_round.push(acks.count.load(Ordering::SeqCst) - before);
        crash(round).await;
    }
    per_round
}

/// Runs [`verify`] and fails with every problem found; returns the number of values checked.
pub fn assert_ledgers_hold(
    ledgers: &[Ledger],
    per_member: &[(usize, BTreeMap<String, Vec<u8>>)],
) -> usize {
    let (problems, checked) = verify(ledgers, per_member);
    assert!(
        problems.is_empty(),
        "{} durability violations:\n{}",
        problems.len(),
        problems.join("\n")
    );
    checked
}

/// (acknowledged, failed-or-unknown) operations over all writers.
pub fn totals(ledgers: &[Ledger]) -> (u64, u64) {
    (
        ledgers.iter().map(|l| l.acked).sum(),
        ledgers.iter().map(|l| l.unknown).sum(),
    )
}
