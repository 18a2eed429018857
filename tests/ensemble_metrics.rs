//! Monitoring on a 3-member ensemble.
//!
//! - Prometheus `/metrics` (rookery only: Debian's ZooKeeper jar has no Prometheus provider):
//!   ZooKeeper's quorum gauges (`quorum_size` everywhere; `learners`, `synced_followers` on the
//!   leader only, as ZooKeeper's LeaderZooKeeperServer registers them) and rookery's
//!   per-member replication lag on the leader, through a follower's SIGKILL and restart.
//! - The AdminServer's ensemble answers (`leader`, `voting_view`, `zabstate`, the leader-only
//!   `monitor` and `server_stats` fields) on every member. The assertions hold for Apache
//!   ZooKeeper 3.8 too: `E2E_TARGET=zk cargo test --test ensemble_metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{exclusive, Cluster, ClusterOpts};
use common::*;

fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (status, _, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
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

fn command(port: u16, name: &str) -> serde_json::Value {
    let (status, content_type, body) = http_get(port, &format!("/commands/{name}")).unwrap();
    assert_eq!(status, 200, "{name}: {body}");
    assert_eq!(content_type, "application/json", "{name}");
    serde_json::from_str(&body).unwrap()
}

/// Three members with the AdminServer, each answering (Jetty may come up a moment after
/// ZooKeeper's client port).
async fn admin_ensemble() -> (common::cluster::ExclusiveGuard, Cluster) {
    let guard = tokio::task::spawn_blocking(exclusive).await.unwrap();
    let c = Cluster::start_async(ClusterOpts {
        admin: true,
        ..ClusterOpts::default()
    })
    .await;
    c.blocking(|c| {
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..c.len() {
            while http_get(c.admin_port(i), "/commands/ruok").is_err() {
                assert!(Instant::now() < deadline, "no AdminServer on member {i}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })
    .await;
    (guard, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_server_on_an_ensemble() {
    let (_guard, c) = admin_ensemble().await;
    within(150, "ensemble AdminServer", async {
        let leader = c.blocking(|c| c.wait_ready(60)).await;
        let leader_id = c.id(leader);
        c.blocking(move |c| {
            for i in 0..c.len() {
                let port = c.admin_port(i);
                let is_leader = i == leader;
                let lead = command(port, "leader");
                assert_eq!(lead["error"], serde_json::Value::Null, "{lead}");
                assert_eq!(lead["is_leader"], is_leader, "member {i}: {lead}");
                assert_eq!(lead["leader_id"], leader_id, "member {i}: {lead}");
                assert_eq!(lead["leader_ip"], "127.0.0.1", "member {i}: {lead}");

                let view = command(port, "voting_view");
                let config = view["current_config"].as_object().unwrap();
                assert_eq!(config.len(), 3, "{view}");
                for j in 0..c.len() {
                    let member = &config[&c.id(j).to_string()];
                    assert_eq!(member["learner_type"], "participant", "{view}");
                    assert_eq!(
                        member["server_addresses"].as_array().unwrap().len(),
                        1,
                        "{view}"
                    );
                    assert!(member["election_addresses"].is_array(), "{view}");
                    assert!(member["client_address"].is_string(), "{view}");
                }

                let zab = command(port, "zabstate");
                assert_eq!(zab["zabstate"], "broadcast", "member {i}: {zab}");
                assert_eq!(zab["voting"], true, "{zab}");
                assert_eq!(zab["myid"], c.id(i), "{zab}");
                assert_eq!(zab["is_leader"], is_leader, "{zab}");
                assert!(
                    zab["last_zxid"].as_str().unwrap().starts_with("0x"),
                    "{zab}"
                );
                // ZooKeeper's MultipleAddresses, as Jackson writes it.
                let quorum = &zab["quorum_address"];
                assert_eq!(quorum["empty"], false, "{zab}");
                assert_eq!(quorum["all_host_strings"][0], "127.0.0.1", "{zab}");
                let one = quorum["one"].as_str().unwrap();
                assert_eq!(quorum["all_addresses"][0], one, "{zab}");
                assert_eq!(
                    format!("127.0.0.1:{}", quorum["all_ports"][0]),
                    one,
                    "{zab}"
                );
                assert!(zab["election_address"]["one"].is_string(), "{zab}");

                let conf = command(port, "configuration");
                assert_eq!(conf["server_id"], c.id(i), "{conf}");
                assert_eq!(conf["client_port"], c.client_port(i), "{conf}");

                let stats = command(port, "server_stats");
                let state = if is_leader { "leader" } else { "follower" };
                assert_eq!(stats["server_stats"]["server_state"], state, "{stats}");
                assert_eq!(
                    stats.get("proposal_stats").is_some(),
                    is_leader,
                    "member {i}: {stats}"
                );
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let monitor = command(port, "monitor");
                    assert_eq!(monitor["server_state"], state);
                    assert_eq!(monitor["quorum_size"], 3, "{monitor}");
                    if !is_leader {
                        assert!(monitor.get("synced_followers").is_none(), "{monitor}");
                        break;
                    }
                    if monitor["synced_followers"] == 2 && monitor["learners"] == 2 {
                        break;
                    }
                    assert!(Instant::now() < deadline, "leader's monitor: {monitor}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .await;
    })
    .await;
}

/// A member cut off from its quorum (the other two killed) serves nobody: the commands that
/// need a running server answer ZooKeeper's "not currently serving" error, the rest still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_server_without_a_quorum() {
    let (_guard, c) = admin_ensemble().await;
    within(150, "AdminServer without a quorum", async {
        let leader = c.blocking(|c| c.wait_ready(60)).await;
        let alone = c.others(leader)[0];
        for i in c.others(alone) {
            c.kill9(i);
        }
        let port = c.admin_port(alone);
        c.blocking(move |_| {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let (status, _, _) = http_get(port, "/commands/ruok").unwrap_or_default();
                if status == 200 && command(port, "ruok")["error"] != serde_json::Value::Null {
                    break;
                }
                assert!(Instant::now() < deadline, "member never stopped serving");
                std::thread::sleep(Duration::from_millis(100));
            }
            for name in [
                "ruok",
                "srvr",
                "stats",
                "connections",
                "dump",
                "leader",
                "is_read_only",
            ] {
                let v = command(port, name);
                assert_eq!(
                    v["error"], "This ZooKeeper instance is not currently serving requests",
                    "{name}: {v}"
                );
            }
            // ZooKeeper 3.8 runs monitor without a server and fails (HTTP 500, a
            // NullPointerException); rookery answers the not-serving error instead.
            let (status, _, body) = http_get(port, "/commands/monitor").unwrap();
            if is_zk() {
                assert_eq!(status, 500, "{body}");
            } else {
                assert_eq!(status, 200, "{body}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(
                    v["error"], "This ZooKeeper instance is not currently serving requests",
                    "{v}"
                );
            }
            let zab = command(port, "zabstate");
            eprintln!("zabstate without a quorum: {zab}");
            assert_eq!(zab["error"], serde_json::Value::Null, "{zab}");
            assert_eq!(zab["zabstate"], "", "{zab}");
            assert_eq!(zab["voting"], false, "{zab}");
            let env = command(port, "environment");
            assert_eq!(env["error"], serde_json::Value::Null, "{env}");
            assert!(env["zookeeper.version"].is_string(), "{env}");
        })
        .await;
    })
    .await;
}
