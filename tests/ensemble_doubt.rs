//! Fail on doubt (cluster.md §4.3): a write whose fate a server cannot know is answered by
//! closing its connection (the client sees ConnectionLoss), never by an error code or a guessed
//! success, and it is applied at most once. Each test puts a sequential create in doubt on a
//! follower of a 3-server ensemble and then counts the children of the parent on every member
//! (after `sync`): a double application would show as two children.
//!
//! * `stopped_leader`: the leader is SIGSTOPped before the create is sent, so nothing can
//!   commit it before the follower's deadline (min(session timeout, max(2 × election timeout, 2 s)));
//!   after SIGCONT the node exists at most once.
//! * `partitioned_follower`: the follower is cut off from both peers (proxies on every peer
//!   link) before the create; after the heal the node exists at most once.
//! * `leader_sigkill_mid_write`: deterministic "committed after all". The other follower is
//!   SIGSTOPped and the leader's link to the client's follower is cut (only that direction),
//!   so the forwarded create reaches the leader, which appends it but cannot commit it. Then
//!   the leader is SIGKILLed: the client sees ConnectionLoss. The leader restarts with the
//!   longest log and must win the election (the other follower is still stopped, the client's
//!   follower lacks the entry), so the entry commits in the new term: exactly one child on
//!   every member, although the client was told nothing.
//!
//! CI: `cargo test --test ensemble_doubt` (a few seconds each). `E2E_TARGET=zk` runs the first
//! two against ZooKeeper 3.8 (both pass; with the leader stopped ZooKeeper's follower also
//! answers ConnectionLoss, after syncLimit × tickTime, and the create then commits once when
//! the leader resumes; in rookery's runs so far it never committed: 0 children).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::time::{Duration, Instant};

use common::cluster::{exclusive, Cluster, ClusterOpts, ExclusiveGuard};
use common::within;
use zookeeper_client as zk;

const PARENT: &str = "/doubt";

/// A proxied 3-server ensemble with a 500 ms election timeout (so a 2 s op deadline), and a
/// client with a 10 s session on a follower; returns (guard, cluster, leader, that follower,
/// the other follower, client).
async fn setup() -> (ExclusiveGuard, Cluster, usize, usize, usize, zk::Client) {
    let guard = tokio::task::spawn_blocking(exclusive).await.unwrap();
    let opts = ClusterOpts {
        tick_time_ms: 200,
        proxied: true,
        extra_cfg: vec![
            "minSessionTimeout=2000".to_string(),
            "maxSessionTimeout=20000".to_string(),
        ],
        ..ClusterOpts::default()
    };
    let c = Cluster::start_async(opts).await;
    let leader = c.blocking(|c| c.wait_ready(60)).await;
    let others = c.others(leader);
    let (follower, other) = (others[0], others[1]);
    let client = c
        .client_with(
            follower,
            zk::Client::connector().with_session_timeout(Duration::from_secs(10)),
        )
        .await;
    client.create(PARENT, b"", &common::anyone()).await.unwrap();
    (guard, c, leader, follower, other, client)
}

/// The create put in doubt: sequential, so each application makes its own child.
async fn sequential_create(client: &zk::Client) -> Result<(), zk::Error> {
    let opts = common::opts(zk::CreateMode::PersistentSequential);
    within(
        15,
        "the create in doubt",
        client.create(&format!("{PARENT}/n-"), b"x", &opts),
    )
    .await
    .map(|_| ())
}

fn assert_connection_loss(result: &Result<(), zk::Error>, took: Duration) {
    assert!(
        matches!(result, Err(zk::Error::ConnectionLoss)),
        "a write in doubt must close its connection (ConnectionLoss), not answer {result:?}"
    );
    // Bounded by the op deadline (2 s here) or the loss of the leader: never a hang.
    assert!(
        took < Duration::from_secs(5),
        "ConnectionLoss only after {took:?}"
    );
}

/// Children of PARENT on every member, each read after a `sync` on that member.
async fn children_everywhere(c: &Cluster) -> Vec<usize> {
    c.blocking(|c| c.wait_ready(60)).await;
    let members: Vec<usize> = (0..c.len()).collect();
    c.dump_children(&members, PARENT)
        .await
        .into_iter()
        .map(|(_, m)| m.len())
        .collect()
}

fn assert_at_most_once(counts: &[usize]) {
    assert!(
        counts.iter().all(|&n| n <= 1),
        "the write in doubt was applied more than once: children per member {counts:?}"
    );
    assert!(
        counts.windows(2).all(|w| w[0] == w[1]),
        "members disagree: children per member {counts:?}"
    );
}

/// Injects `fault`, sends the create in doubt, expects ConnectionLoss, undoes the fault with
/// `heal`, then expects the node at most once on every member.
async fn in_doubt(
    what: &str,
    c: &Cluster,
    client: &zk::Client,
    fault: impl FnOnce(),
    heal: impl FnOnce(),
) {
    within(120, what, async {
        fault();
        let t = Instant::now();
        let result = sequential_create(client).await;
        let took = t.elapsed();
        eprintln!("{what}: the follower answered {result:?} after {took:?}");
        assert_connection_loss(&result, took);
        heal();
        let counts = children_everywhere(c).await;
        eprintln!("{what}: children per member {counts:?}");
        assert_at_most_once(&counts);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_leader() {
    let (_guard, c, leader, _, _, client) = setup().await;
    in_doubt(
        "stopped leader",
        &c,
        &client,
        || c.sigstop(leader),
        || c.sigcont(leader),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_follower() {
    let (_guard, c, _, follower, _, client) = setup().await;
    let fault = || c.partition(follower);
    in_doubt("partitioned follower", &c, &client, fault, || {
        c.heal(follower)
    })
    .await;
}

/// Entries member `i` has written to its log (`rookery_raft_entries`), `None` while it does
/// not serve `mntr`.
fn entries(c: &Cluster, i: usize) -> Option<u64> {
    c.mntr(i).get("rookery_raft_entries")?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_mid_write() {
    if common::is_zk() {
        eprintln!("rookery only: relies on rookery's one-way peer links and mntr counters");
        return;
    }
    let (_guard, c, leader, follower, other, client) = setup().await;
    within(120, "leader SIGKILL mid-write", async {
        let before = entries(&c, leader).expect("the leader serves mntr");
        c.sigstop(other);
        // The leader's messages to the client's follower are dropped; the follower's (its
        // forwarded proposal) still reach the leader.
        c.cut_link(leader, follower);
        let t = Instant::now();
        let pending = {
            let client = client.clone();
            tokio::spawn(async move { sequential_create(&client).await })
        };
        // The leader appended the forwarded create (its LMDB write is done: it survives the
        // SIGKILL), but no other member has it, so it is not committed.
        let deadline = Instant::now() + Duration::from_secs(2);
        while entries(&c, leader).is_none_or(|n| n <= before) {
            assert!(
                Instant::now() < deadline,
                "the leader never appended the forwarded create (entries {before} -> {:?})",
                entries(&c, leader)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c.kill9(leader);
        let result = pending.await.unwrap();
        let took = t.elapsed();
        eprintln!("leader SIGKILL mid-write: the follower answered {result:?} after {took:?}");
        assert_connection_loss(&result, took);
        assert!(!c.is_running(leader));
        c.restore_link(leader, follower);
        c.start_member(leader);
        let new_leader = c.blocking(|c| c.wait_ready(60)).await;
        assert_eq!(
            new_leader, leader,
            "only the restarted leader holds the newest entry, so only it can win"
        );
        c.sigcont(other);
        let counts = children_everywhere(&c).await;
        eprintln!("leader SIGKILL mid-write: children per member {counts:?}");
        assert_eq!(
            counts,
            vec![1; c.len()],
            "the entry the restarted leader held commits exactly once everywhere"
        );
    })
    .await;
}
