//! Container and TTL node reaping (the shared server checks every CONTAINER_CHECK_MS = 500 ms),
//! and TTL creation on a server with TTL nodes disabled.
//!
//! Against ZooKeeper: `E2E_TARGET=zk cargo test --test e2e_reaper`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::time::Duration;

use common::*;
use zookeeper_client::{CreateMode, Error, EventType};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_removed_after_last_child_deleted() {
    within(
        TEST_BOUND_SECS,
        "container_removed_after_last_child_deleted",
        async {
            let server = TestServer::shared();
            let c = server.client().await;
            let base = unique("reap-container");
            c.create(&base, b"", &anyone()).await.unwrap();
            let cont = format!("{base}/c");
            c.create(&cont, b"", &opts(CreateMode::Container))
                .await
                .unwrap();
            c.create(&format!("{cont}/a"), b"", &anyone())
                .await
                .unwrap();
            c.create(&format!("{cont}/b"), b"", &opts(CreateMode::Ephemeral))
                .await
                .unwrap();

            // With children it stays.
            tokio::time::sleep(Duration::from_millis(4 * CONTAINER_CHECK_MS)).await;
            assert!(
                c.check_stat(&cont).await.unwrap().is_some(),
                "container with children must stay"
            );

            // One child left: still there.
            c.delete(&format!("{cont}/a"), None).await.unwrap();
            tokio::time::sleep(Duration::from_millis(4 * CONTAINER_CHECK_MS)).await;
            assert!(
                c.check_stat(&cont).await.unwrap().is_some(),
                "container with one child must stay"
            );

            // Last child goes -> the container is deleted, and watchers hear about it.
            let (_, _, data_watch) = c.get_and_watch_data(&cont).await.unwrap();
            let (_, child_watch) = c.list_and_watch_children(&base).await.unwrap();
            c.delete(&format!("{cont}/b"), None).await.unwrap();
            let ev = within(15, "container deletion event", data_watch.changed()).await;
            assert_eq!(
                (ev.event_type, ev.path.as_str()),
                (EventType::NodeDeleted, cont.as_str())
            );
            let ev = within(15, "parent child event", child_watch.changed()).await;
            assert_eq!(
                (ev.event_type, ev.path.as_str()),
                (EventType::NodeChildrenChanged, base.as_str())
            );
            assert_eq!(c.check_stat(&cont).await.unwrap(), None);
            // The parent itself (a persistent node) is not touched.
            assert!(c.check_stat(&base).await.unwrap().is_some());
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_that_never_had_children_is_kept() {
    within(
        TEST_BOUND_SECS,
        "container_that_never_had_children_is_kept",
        async {
            let server = TestServer::shared();
            let c = server.client().await;
            let cont = unique("reap-empty-container");
            c.create(&cont, b"x", &opts(CreateMode::Container))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(6 * CONTAINER_CHECK_MS)).await;
            assert!(
                c.check_stat(&cont).await.unwrap().is_some(),
                "a never-used container must not be reaped"
            );
            // setData does not count as a child.
            c.set_data(&cont, b"y", None).await.unwrap();
            tokio::time::sleep(Duration::from_millis(4 * CONTAINER_CHECK_MS)).await;
            assert!(c.check_stat(&cont).await.unwrap().is_some());
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_containers_cascade() {
    within(TEST_BOUND_SECS, "nested_containers_cascade", async {
        let server = TestServer::shared();
        let c = server.client().await;
        let outer = unique("reap-nested");
        let inner = format!("{outer}/inner");
        c.create(&outer, b"", &opts(CreateMode::Container))
            .await
            .unwrap();
        c.create(&inner, b"", &opts(CreateMode::Container))
            .await
            .unwrap();
        c.create(&format!("{inner}/leaf"), b"", &anyone())
            .await
            .unwrap();
        c.delete(&format!("{inner}/leaf"), None).await.unwrap();
        // inner goes first, which empties outer, which goes next.
        eventually(20, "inner container reaped", || async {
            c.check_stat(&inner).await.unwrap().is_none()
        })
        .await;
        eventually(20, "outer container reaped", || async {
            c.check_stat(&outer).await.unwrap().is_none()
        })
        .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_node_expires() {
    within(TEST_BOUND_SECS, "ttl_node_expires", async {
        let server = TestServer::shared();
        let c = server.client().await;
        let base = unique("reap-ttl");
        c.create(&base, b"", &anyone()).await.unwrap();
        let n = format!("{base}/n");
        c.create(&n, b"v", &anyone().with_ttl(Duration::from_millis(800)))
            .await
            .unwrap();
        let (_, seq) = c
            .create(
                &format!("{base}/s-"),
                b"",
                &opts(CreateMode::PersistentSequential).with_ttl(Duration::from_millis(800)),
            )
            .await
            .unwrap();
        let s = format!("{base}/s-{seq}");
        // A long TTL survives.
        let long = format!("{base}/long");
        c.create(&long, b"", &anyone().with_ttl(Duration::from_secs(3600)))
            .await
            .unwrap();

        let (_, watch) = c.check_and_watch_stat(&n).await.unwrap();
        let ev = within(20, "TTL node deletion event", watch.changed()).await;
        assert_eq!(
            (ev.event_type, ev.path.as_str()),
            (EventType::NodeDeleted, n.as_str())
        );
        assert_eq!(c.check_stat(&n).await.unwrap(), None);
        eventually(20, "sequential TTL node expired", || async {
            c.check_stat(&s).await.unwrap().is_none()
        })
        .await;
        assert!(
            c.check_stat(&long).await.unwrap().is_some(),
            "TTL of an hour must not expire"
        );
        assert!(c.check_stat(&base).await.unwrap().is_some());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_node_with_children_is_kept_until_empty() {
    within(
        TEST_BOUND_SECS,
        "ttl_node_with_children_is_kept_until_empty",
        async {
            let server = TestServer::shared();
            let c = server.client().await;
            let n = unique("reap-ttl-parent");
            c.create(&n, b"", &anyone().with_ttl(Duration::from_millis(500)))
                .await
                .unwrap();
            c.create(&format!("{n}/kid"), b"", &anyone()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(500 + 6 * CONTAINER_CHECK_MS)).await;
            assert!(
                c.check_stat(&n).await.unwrap().is_some(),
                "TTL node with a child must stay"
            );
            c.delete(&format!("{n}/kid"), None).await.unwrap();
            eventually(20, "TTL node expired after its child went", || async {
                c.check_stat(&n).await.unwrap().is_none()
            })
            .await;
        },
    )
    .await
}

/// Without TTL support (`--no-ttl`; ZooKeeper: extendedTypesEnabled=false) createTTL is
/// Unimplemented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_disabled_is_unimplemented() {
    within(TEST_BOUND_SECS, "ttl_disabled_is_unimplemented", async {
        let server = TestServer::start(ServerOpts {
            ttl_enabled: false,
            ..Default::default()
        });
        let c = server.client().await;
        assert_eq!(
            c.create("/ttl", b"", &anyone().with_ttl(Duration::from_secs(10)))
                .await
                .unwrap_err(),
            Error::Unimplemented
        );
        assert_eq!(c.check_stat("/ttl").await.unwrap(), None);
        // Everything else still works, containers included.
        c.create("/plain", b"", &anyone()).await.unwrap();
        c.create("/cont", b"", &opts(CreateMode::Container))
            .await
            .unwrap();
    })
    .await
}
