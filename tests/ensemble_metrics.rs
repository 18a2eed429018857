//! Prometheus `/metrics` on a 3-member rookery ensemble: ZooKeeper's quorum gauges
//! (`quorum_size` everywhere; `learners`, `synced_followers` on the leader only, as
//! ZooKeeper's LeaderZooKeeperServer registers them) and rookery's per-member replication lag
//! on the leader, following a follower's SIGKILL and restart. rookery only (Debian's
//! ZooKeeper jar has no Prometheus provider).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::cluster::{exclusive, Cluster, ClusterOpts};
use common::*;

fn scrape(port: u16) -> BTreeMap<String, f64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap_or(f64::NAN))
        })
        .collect()
}

/// Polls the leader's scrape until `check` holds (bounded).
fn until(port: u16, secs: u64, what: &str, check: impl Fn(&BTreeMap<String, f64>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let m = scrape(port);
        if check(&m) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {secs}s; last scrape: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_gauges_and_replication_lag() {
    if is_zk() {
        eprintln!("SKIPPED: rookery only (ZooKeeper's Debian jar has no Prometheus provider)");
        return;
    }
    let _guard = tokio::task::spawn_blocking(exclusive).await.unwrap();
    let c = Cluster::start_async(ClusterOpts {
        metrics: true,
        ..ClusterOpts::default()
    })
    .await;
    within(150, "ensemble metrics", async {
        let leader = c.blocking(|c| c.wait_ready(30)).await;
        let client = c.client(leader).await;
        for i in 0..20 {
            client
                .create(&format!("/m{i}"), b"v", &anyone())
                .await
                .unwrap();
        }
        let port = c.metrics_port(leader);
        let peers: Vec<u32> = c.others(leader).iter().map(|&i| c.id(i)).collect();
        let lag = |m: &BTreeMap<String, f64>, id: u32| {
            m.get(&format!("rookery_raft_peer_lag_entries{{peer=\"{id}\"}}"))
                .copied()
        };
        c.blocking({
            let peers = peers.clone();
            move |_| {
                until(port, 30, "both followers synced, no lag", |m| {
                    m.get("quorum_size") == Some(&3.0)
                        && m.get("learners") == Some(&2.0)
                        && m.get("synced_followers") == Some(&2.0)
                        && peers.iter().all(|id| lag(m, *id) == Some(0.0))
                })
            }
        })
        .await;
        let m = scrape(port);
        assert_eq!(
            m["rookery_raft_leader_id"],
            f64::from(c.id(leader)),
            "{m:?}"
        );
        assert!(m["rookery_raft_commit_index"] >= 20.0);
        for f in c.others(leader) {
            let fm = scrape(c.metrics_port(f));
            assert_eq!(fm.get("quorum_size"), Some(&3.0), "follower {f}");
            assert!(!fm.contains_key("synced_followers"), "follower {f}: {fm:?}");
            assert!(
                !fm.keys()
                    .any(|k| k.starts_with("rookery_raft_peer_lag_entries")),
                "follower {f}"
            );
            assert_eq!(fm["rookery_raft_term"], m["rookery_raft_term"]);
            assert_eq!(fm["rookery_raft_leader_id"], m["rookery_raft_leader_id"]);
        }

        // A follower dies: the leader counts one synced follower, and the dead one falls
        // behind by the entries written since.
        let victim = c.others(leader)[0];
        let victim_id = c.id(victim);
        c.kill9(victim);
        for i in 0..10 {
            client
                .create(&format!("/after{i}"), b"v", &anyone())
                .await
                .unwrap();
        }
        c.blocking(move |_| {
            until(port, 30, "one synced follower, the dead one lagging", |m| {
                m.get("synced_followers") == Some(&1.0)
                    && lag(m, victim_id).is_some_and(|l| l >= 10.0)
            })
        })
        .await;
        // Back: caught up again.
        c.blocking(move |c| c.start_again(victim, 30)).await;
        c.blocking(move |_| {
            until(port, 60, "the restarted follower caught up", |m| {
                m.get("synced_followers") == Some(&2.0) && lag(m, victim_id) == Some(0.0)
            })
        })
        .await;
    })
    .await;
}
