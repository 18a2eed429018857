//! Recipes against a real server, contention inside one process (several sessions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{bounded, shared_server, unique};
use rookery_client::recipes::{
    Barrier, Counter, DoubleBarrier, LeaderLatch, Lock, Queue, RwLock, ServiceInstance,
    ServiceRegistry,
};
use rookery_client::Client;

async fn client() -> Client {
    bounded(
        "connect",
        30,
        Client::connect(&shared_server().connect_string()),
    )
    .await
    .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_mutual_exclusion_and_no_herd() {
    let base = unique("lock");
    let holders = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let c = client().await;
        let (base, holders, total) = (base.clone(), holders.clone(), total.clone());
        tasks.push(tokio::spawn(async move {
            let lock = Lock::new(c.clone(), &base);
            for _ in 0..5 {
                let guard = lock.acquire().await.unwrap();
                assert_eq!(
                    holders.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
                holders.fetch_sub(1, Ordering::SeqCst);
                total.fetch_add(1, Ordering::SeqCst);
                guard.release().await.unwrap();
            }
            c.close().await;
        }));
    }
    for t in tasks {
        bounded("lock workers", 60, t).await.unwrap();
    }
    assert_eq!(total.load(Ordering::SeqCst), 25);

    // try_acquire / timeout, and waiters watch only their predecessor.
    let a = client().await;
    let b = client().await;
    let lock_a = Lock::new(a.clone(), &base);
    let lock_b = Lock::new(b.clone(), &base);
    let held = lock_a.try_acquire().await.unwrap().expect("free lock");
    assert!(lock_b.try_acquire().await.unwrap().is_none());
    assert!(lock_b
        .acquire_timeout(Duration::from_millis(300))
        .await
        .unwrap()
        .is_none());
    // A failed attempt leaves no node behind. b deleted its node on b's member; a's may be a
    // moment behind (sync, as ZooKeeper asks).
    a.sync(&base).await.unwrap();
    assert_eq!(lock_a.participants().await.unwrap().len(), 1);
    let waiter = tokio::spawn(async move { lock_b.acquire().await });
    bounded("second contender queued", 10, async {
        while lock_a.participants().await.unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(held.is_valid().await);
    held.release().await.unwrap();
    let got = bounded("waiter gets lock", 10, waiter)
        .await
        .unwrap()
        .unwrap();
    // Dropping a guard releases the lock in the background.
    drop(got);
    let again = bounded(
        "dropped guard released",
        10,
        Lock::new(a.clone(), &base).acquire(),
    )
    .await
    .unwrap();
    again.release().await.unwrap();
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_released_when_holder_session_closes() {
    let base = unique("lockexp");
    let a = client().await;
    let b = client().await;
    let guard = Lock::new(a.clone(), &base).acquire().await.unwrap();
    let waiter = {
        let b = b.clone();
        let base = base.clone();
        tokio::spawn(async move { Lock::new(b, &base).acquire().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    a.close().await;
    let got = bounded("lock after holder died", 10, waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(!guard.is_valid().await);
    std::mem::forget(guard);
    got.release().await.unwrap();
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rw_lock() {
    let base = unique("rw");
    let a = client().await;
    let b = client().await;
    let c = client().await;
    let rw_a = RwLock::new(a.clone(), &base);
    let rw_b = RwLock::new(b.clone(), &base);
    let rw_c = RwLock::new(c.clone(), &base);

    // Readers share.
    let r1 = rw_a
        .read(Some(Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
    let r2 = rw_b
        .read(Some(Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
    // A writer waits for both readers.
    assert!(rw_c
        .write(Some(Duration::from_millis(300)))
        .await
        .unwrap()
        .is_none());
    let writer = tokio::spawn(async move { rw_c.write(None).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A reader arriving after a queued writer waits for it.
    let rw_a2 = RwLock::new(a.clone(), &base);
    assert!(rw_a2
        .read(Some(Duration::from_millis(300)))
        .await
        .unwrap()
        .is_none());
    r1.release().await.unwrap();
    assert!(!writer.is_finished());
    r2.release().await.unwrap();
    let w = bounded("writer", 10, writer)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(rw_b
        .read(Some(Duration::from_millis(300)))
        .await
        .unwrap()
        .is_none());
    w.release().await.unwrap();
    let r3 = rw_b
        .read(Some(Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
    r3.release().await.unwrap();
    for x in [a, b, c] {
        x.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_in_process() {
    let base = unique("leader");
    let a = client().await;
    let b = client().await;
    let la = LeaderLatch::start(a.clone(), &base, "a").await.unwrap();
    assert!(la.wait_leader(Duration::from_secs(10)).await);
    let lb = LeaderLatch::start(b.clone(), &base, "b").await.unwrap();
    assert!(!lb.wait_leader(Duration::from_millis(500)).await);
    assert_eq!(lb.participants().await.unwrap(), vec!["a", "b"]);
    assert_eq!(lb.leader_id().await.unwrap().as_deref(), Some("a"));

    let mut leadership = la.leadership();
    la.close().await.unwrap();
    assert!(
        bounded("b takes over", 10, async {
            lb.wait_leader(Duration::from_secs(10)).await
        })
        .await
    );
    bounded("a told", 10, leadership.wait_for(|l| !*l))
        .await
        .unwrap();
    assert_eq!(lb.participants().await.unwrap(), vec!["b"]);
    lb.close().await.unwrap();
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_and_double_barrier() {
    let base = unique("barrier");
    let a = client().await;
    let b = client().await;
    let gate = Barrier::new(a.clone(), &format!("{base}/gate"));
    gate.set().await.unwrap();
    gate.set().await.unwrap();
    let waiter = {
        let gate = Barrier::new(b.clone(), &format!("{base}/gate"));
        tokio::spawn(async move { gate.wait(Duration::from_secs(10)).await })
    };
    assert!(!Barrier::new(b.clone(), &format!("{base}/gate"))
        .wait(Duration::from_millis(300))
        .await
        .unwrap());
    gate.remove().await.unwrap();
    assert!(bounded("gate opens", 10, waiter).await.unwrap().unwrap());

    // Double barrier of 3: nobody passes enter until all three are in; leave waits for all.
    let path = format!("{base}/double");
    let entered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..3 {
        let c = client().await;
        let (path, entered) = (path.clone(), entered.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150 * i)).await;
            let barrier = DoubleBarrier::new(c.clone(), &path, 3);
            assert!(barrier.enter(Duration::from_secs(15)).await.unwrap());
            let seen = entered.fetch_add(1, Ordering::SeqCst);
            // Everyone entered before anyone got past enter? The last to arrive created ready.
            assert!(seen < 3);
            tokio::time::sleep(Duration::from_millis(50 * i)).await;
            assert!(barrier.leave(Duration::from_secs(15)).await.unwrap());
            c.close().await;
        }));
    }
    for t in tasks {
        bounded("double barrier", 40, t).await.unwrap();
    }
    assert_eq!(entered.load(Ordering::SeqCst), 3);
    // Too few members: enter times out and leaves no member node.
    let lonely = DoubleBarrier::new(a.clone(), &path, 2);
    assert!(!lonely.enter(Duration::from_millis(300)).await.unwrap());
    assert!(a.get_children(&path).await.unwrap().is_empty());
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_queue() {
    let base = unique("queue");
    let producer = client().await;
    let q = Queue::new(producer.clone(), &base);
    assert_eq!(q.take(Duration::from_millis(200)).await.unwrap(), None);
    for i in 0..20 {
        q.put(format!("item-{i}").as_bytes()).await.unwrap();
    }
    assert_eq!(q.len().await.unwrap(), 20);
    // Two competing consumers: every item exactly once, each in FIFO order.
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let c = client().await;
        let base = base.clone();
        consumers.push(tokio::spawn(async move {
            let q = Queue::new(c.clone(), &base);
            let mut got = Vec::new();
            while let Some(item) = q.take(Duration::from_millis(500)).await.unwrap() {
                got.push(String::from_utf8(item).unwrap());
            }
            c.close().await;
            got
        }));
    }
    let mut all = Vec::new();
    for t in consumers {
        let got = bounded("consumer", 30, t).await.unwrap();
        let nums: Vec<usize> = got.iter().map(|s| s[5..].parse().unwrap()).collect();
        assert!(
            nums.windows(2).all(|w| w[0] < w[1]),
            "FIFO per consumer: {nums:?}"
        );
        all.extend(nums);
    }
    all.sort();
    assert_eq!(all, (0..20).collect::<Vec<_>>());
    // A blocked take wakes when an item arrives.
    let waiting = {
        let q = q.clone();
        tokio::spawn(async move { q.take(Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.put(b"late").await.unwrap();
    assert_eq!(
        bounded("take wakes", 10, waiting).await.unwrap().unwrap(),
        Some(b"late".to_vec())
    );
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_compare_and_set() {
    let path = unique("counter");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = client().await;
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let counter = Counter::new(c.clone(), &path);
            for _ in 0..25 {
                counter.increment().await.unwrap();
            }
            c.close().await;
        }));
    }
    for t in tasks {
        bounded("counter", 60, t).await.unwrap();
    }
    let c = client().await;
    // The increments applied on their own members; c's may be a moment behind.
    c.sync(&path).await.unwrap();
    let counter = Counter::new(c.clone(), &path);
    assert_eq!(counter.get().await.unwrap(), 100);
    assert_eq!(counter.add(-10).await.unwrap(), (100, 90));
    assert!(!counter.compare_and_set(5, 6).await.unwrap());
    assert!(counter.compare_and_set(90, 7).await.unwrap());
    assert_eq!(counter.get().await.unwrap(), 7);
    assert_eq!(c.get_data(&path).await.unwrap().0, 7i64.to_be_bytes());
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_registry_follows_sessions() {
    let base = unique("registry");
    let watcher_client = client().await;
    let registry = ServiceRegistry::new(watcher_client.clone(), &base);
    let cache = registry.cache("api").await.unwrap();
    assert!(cache.instances().is_empty());

    let a = client().await;
    let b = client().await;
    let reg_a = ServiceRegistry::new(a.clone(), &base)
        .register(ServiceInstance::new("api", "10.0.0.1", 80).with_payload("{\"zone\":\"a\"}"))
        .await
        .unwrap();
    let _reg_b = ServiceRegistry::new(b.clone(), &base)
        .register(ServiceInstance::new("api", "10.0.0.2", 81))
        .await
        .unwrap();
    assert!(
        cache
            .wait_for(Duration::from_secs(10), |m| m.len() == 2)
            .await
    );
    let members = cache.instances();
    assert!(members
        .iter()
        .any(|m| m.address == "10.0.0.1" && m.payload == "{\"zone\":\"a\"}"));
    assert_eq!(registry.instances("api").await.unwrap(), members);
    assert_eq!(registry.services().await.unwrap(), vec!["api"]);

    reg_a.unregister().await.unwrap();
    assert!(
        cache
            .wait_for(Duration::from_secs(10), |m| m.len() == 1)
            .await
    );
    // A session ending takes its instance with it.
    b.close().await;
    assert!(
        cache
            .wait_for(Duration::from_secs(10), |m| m.is_empty())
            .await
    );
    a.close().await;
    watcher_client.close().await;
}
