//! Watches: one-shot data/exist/child watches (exactly once, on the wire), exists on a missing
//! node, persistent and persistent-recursive watches (addWatch), checkWatches/removeWatches,
//! event ordering (a notification precedes the reply of any later request on that session).
//!
//! Against ZooKeeper: `E2E_TARGET=zk cargo test --test e2e_watches`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::time::Duration;

use common::raw::{self, err, ev, op, wtype, Enc, RawConn};
use common::*;
use zookeeper_client::{AddWatchMode, CreateMode, EventType, SessionState};

const QUIET: Duration = Duration::from_millis(600);

fn raw2(server: &TestServer) -> (RawConn, RawConn) {
    (server.raw(), server.raw())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_oneshot_watches_fire() {
    within(TEST_BOUND_SECS, "client_oneshot_watches_fire", async {
        let server = TestServer::shared();
        let c = server.client().await;
        let other = server.client().await;
        let base = unique("watch-client");
        c.create(&base, b"", &anyone()).await.unwrap();
        let d = format!("{base}/d");
        c.create(&d, b"", &anyone()).await.unwrap();

        // Data watch -> NodeDataChanged.
        let (_, _, w) = c.get_and_watch_data(&d).await.unwrap();
        other.set_data(&d, b"1", None).await.unwrap();
        let e = within(10, "data watch", w.changed()).await;
        assert_eq!(
            (e.event_type, e.session_state, e.path.as_str()),
            (
                EventType::NodeDataChanged,
                SessionState::SyncConnected,
                d.as_str()
            )
        );

        // Exists on a missing node -> NodeCreated.
        let n = format!("{base}/n");
        let (stat, w) = c.check_and_watch_stat(&n).await.unwrap();
        assert_eq!(stat, None);
        other.create(&n, b"", &anyone()).await.unwrap();
        let e = within(10, "exist watch", w.changed()).await;
        assert_eq!(
            (e.event_type, e.path.as_str()),
            (EventType::NodeCreated, n.as_str())
        );

        // Exists on an existing node -> NodeDataChanged / NodeDeleted.
        let (stat, w) = c.check_and_watch_stat(&n).await.unwrap();
        assert!(stat.is_some());
        other.delete(&n, None).await.unwrap();
        let e = within(10, "exist watch (delete)", w.changed()).await;
        assert_eq!(
            (e.event_type, e.path.as_str()),
            (EventType::NodeDeleted, n.as_str())
        );

        // Child watch -> NodeChildrenChanged on the parent path.
        let (_, w) = c.list_and_watch_children(&base).await.unwrap();
        other
            .create(&format!("{base}/k"), b"", &anyone())
            .await
            .unwrap();
        let e = within(10, "child watch", w.changed()).await;
        assert_eq!(
            (e.event_type, e.path.as_str()),
            (EventType::NodeChildrenChanged, base.as_str())
        );
        let (_, _, w) = c.get_and_watch_children(&base).await.unwrap();
        other.delete(&format!("{base}/k"), None).await.unwrap();
        let e = within(10, "child watch (getChildren2)", w.changed()).await;
        assert_eq!(
            (e.event_type, e.path.as_str()),
            (EventType::NodeChildrenChanged, base.as_str())
        );

        // Data watch on a node that gets deleted -> NodeDeleted.
        let (_, _, w) = c.get_and_watch_data(&d).await.unwrap();
        other.delete(&d, None).await.unwrap();
        let e = within(10, "data watch (delete)", w.changed()).await;
        assert_eq!(
            (e.event_type, e.path.as_str()),
            (EventType::NodeDeleted, d.as_str())
        );
    })
    .await
}

/// On the wire, each one-shot watch fires exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneshot_watches_fire_exactly_once() {
    within(
        TEST_BOUND_SECS,
        "oneshot_watches_fire_exactly_once",
        async {
            let server = TestServer::shared();
            let (mut a, mut b) = raw2(server);
            let base = unique("watch-once");
            b.create_ok(&base, b"");
            let d = format!("{base}/d");
            b.create_ok(&d, b"");

            // getData watch: two changes, one event.
            assert_eq!(a.get_data(&d, true).0, 0);
            assert_eq!(b.set_data(&d, b"1"), 0);
            assert_eq!(b.set_data(&d, b"2"), 0);
            a.expect_events(&[(ev::NODE_DATA_CHANGED, &d)], QUIET);

            // exists watch on a missing node: create then setData -> only NodeCreated.
            let n = format!("{base}/n");
            assert_eq!(a.exists(&n, true).0, err::NO_NODE);
            b.create_ok(&n, b"");
            b.set_data(&n, b"x");
            b.delete(&n);
            a.expect_events(&[(ev::NODE_CREATED, &n)], QUIET);

            // getChildren watch: two children created, one event; setData on the parent or a
            // child's setData fire nothing.
            assert_eq!(a.get_children(&base, true).0, 0);
            b.set_data(&base, b"p");
            b.set_data(&d, b"c");
            a.expect_events(&[], QUIET);
            b.create_ok(&format!("{base}/k1"), b"");
            b.create_ok(&format!("{base}/k2"), b"");
            a.expect_events(&[(ev::NODE_CHILDREN_CHANGED, &base)], QUIET);

            // Setting the same watch several times still yields one event per connection;
            // data + exist watches on one path -> one NodeDataChanged.
            a.get_data(&d, true);
            a.get_data(&d, true);
            a.exists(&d, true);
            b.set_data(&d, b"3");
            a.expect_events(&[(ev::NODE_DATA_CHANGED, &d)], QUIET);

            // Child + data watch on a node that is deleted -> a single NodeDeleted; the parent's
            // child watch fires too.
            let k1 = format!("{base}/k1");
            a.get_children(&k1, true);
            a.get_data(&k1, true);
            a.get_children(&base, true);
            b.delete(&k1);
            let mut got = vec![];
            while let Some(e) = a.next_event(QUIET) {
                got.push((e.event_type, e.path));
            }
            got.sort();
            let mut want = vec![
                (ev::NODE_DELETED, k1.clone()),
                (ev::NODE_CHILDREN_CHANGED, base.clone()),
            ];
            want.sort();
            assert_eq!(got, want);

            // Watches are per session: b set none, b gets none.
            b.expect_events(&[], Duration::from_millis(100));
        },
    )
    .await
}

/// A notification is delivered before the reply to any request the session sends after the
/// change was committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_precedes_later_reply() {
    within(TEST_BOUND_SECS, "event_precedes_later_reply", async {
        let server = TestServer::shared();
        let (mut a, mut b) = raw2(server);
        let base = unique("watch-order");
        b.create_ok(&base, b"");
        let x = format!("{base}/x");
        let y = format!("{base}/y");
        b.create_ok(&x, b"");

        for round in 0..20 {
            a.get_data(&x, true);
            assert_eq!(b.set_data(&x, format!("{round}").as_bytes()), 0);
            // The change is committed; now read on `a`: the very first frame must be the event.
            let xid = a.send(op::GET_DATA, &raw::path_watch_req(&x, false));
            let first = a.next_reply(Duration::from_secs(10)).expect("a frame");
            assert_eq!(
                first.xid, -1,
                "round {round}: the notification must come before the reply"
            );
            let second = a.next_reply(Duration::from_secs(10)).expect("reply");
            assert_eq!(second.xid, xid);
        }

        // Several events arrive in commit order.
        a.get_data(&x, true);
        a.exists(&y, true);
        a.get_children(&base, true);
        b.create_ok(&y, b"");
        b.set_data(&x, b"z");
        a.expect_events(
            &[
                (ev::NODE_CREATED, &y),
                (ev::NODE_CHILDREN_CHANGED, &base),
                (ev::NODE_DATA_CHANGED, &x),
            ],
            QUIET,
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_watch_on_the_wire() {
    within(TEST_BOUND_SECS, "persistent_watch_on_the_wire", async {
        let server = TestServer::shared();
        let (mut a, mut b) = raw2(server);
        let base = unique("watch-persistent");
        b.create_ok(&base, b"");
        let p = format!("{base}/p");
        // addWatch on a path that does not exist yet; reply body is empty.
        let reply = a.call(op::ADD_WATCH, &Enc::new().str(&p).i32(0).bytes());
        assert_eq!(reply.err, 0);
        b.create_ok(&p, b"");
        b.set_data(&p, b"1");
        b.set_data(&p, b"2");
        b.create_ok(&format!("{p}/k"), b"");
        b.create_ok(&format!("{p}/k/g"), b""); // grandchild: nothing
        b.set_data(&format!("{p}/k"), b"x"); // child's data: nothing
        b.delete(&format!("{p}/k/g"));
        b.delete(&format!("{p}/k"));
        b.delete(&p);
        b.create_ok(&p, b""); // still armed after the delete
        a.expect_events(
            &[
                (ev::NODE_CREATED, &p),
                (ev::NODE_DATA_CHANGED, &p),
                (ev::NODE_DATA_CHANGED, &p),
                (ev::NODE_CHILDREN_CHANGED, &p),
                (ev::NODE_CHILDREN_CHANGED, &p),
                (ev::NODE_DELETED, &p),
                (ev::NODE_CREATED, &p),
            ],
            QUIET,
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_recursive_watch_on_the_wire() {
    within(
        TEST_BOUND_SECS,
        "persistent_recursive_watch_on_the_wire",
        async {
            let server = TestServer::shared();
            let (mut a, mut b) = raw2(server);
            let base = unique("watch-recursive");
            b.create_ok(&base, b"");
            let p = format!("{base}/p");
            let reply = a.call(op::ADD_WATCH, &Enc::new().str(&p).i32(1).bytes());
            assert_eq!(reply.err, 0);
            b.create_ok(&p, b"");
            b.create_ok(&format!("{p}/a"), b"");
            b.create_ok(&format!("{p}/a/b"), b"");
            b.set_data(&format!("{p}/a/b"), b"1");
            b.set_data(&format!("{p}/a/b"), b"2");
            b.delete(&format!("{p}/a/b"));
            b.set_data(&p, b"x");
            b.create_ok(&format!("{base}/sibling"), b""); // outside the watched subtree
            b.create_ok(&format!("{base}/pp"), b""); // a prefix match that is not a descendant
                                                     // No NodeChildrenChanged for recursive watches.
            let ab = format!("{p}/a/b");
            let pa = format!("{p}/a");
            a.expect_events(
                &[
                    (ev::NODE_CREATED, &p),
                    (ev::NODE_CREATED, &pa),
                    (ev::NODE_CREATED, &ab),
                    (ev::NODE_DATA_CHANGED, &ab),
                    (ev::NODE_DATA_CHANGED, &ab),
                    (ev::NODE_DELETED, &ab),
                    (ev::NODE_DATA_CHANGED, &p),
                ],
                QUIET,
            );
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_persistent_watchers() {
    within(TEST_BOUND_SECS, "client_persistent_watchers", async {
        let server = TestServer::shared();
        let c = server.client().await;
        let other = server.client().await;
        let base = unique("watch-client-persistent");
        other.create(&base, b"", &anyone()).await.unwrap();
        let p = format!("{base}/p");
        let r = format!("{base}/r");
        let mut pw = c.watch(&p, AddWatchMode::Persistent).await.unwrap();
        let mut rw = c
            .watch(&r, AddWatchMode::PersistentRecursive)
            .await
            .unwrap();

        other.create(&p, b"", &anyone()).await.unwrap();
        other.set_data(&p, b"1", None).await.unwrap();
        other
            .create(&format!("{p}/k"), b"", &anyone())
            .await
            .unwrap();
        other.create(&r, b"", &anyone()).await.unwrap();
        other
            .create(&format!("{r}/a"), b"", &opts(CreateMode::Ephemeral))
            .await
            .unwrap();
        other.set_data(&format!("{r}/a"), b"1", None).await.unwrap();
        other.delete(&format!("{r}/a"), None).await.unwrap();

        for (t, path) in [
            (EventType::NodeCreated, p.clone()),
            (EventType::NodeDataChanged, p.clone()),
            (EventType::NodeChildrenChanged, p.clone()),
        ] {
            let e = within(10, "persistent watcher event", pw.changed()).await;
            assert_eq!((e.event_type, e.path), (t, path));
        }
        for (t, path) in [
            (EventType::NodeCreated, r.clone()),
            (EventType::NodeCreated, format!("{r}/a")),
            (EventType::NodeDataChanged, format!("{r}/a")),
            (EventType::NodeDeleted, format!("{r}/a")),
        ] {
            let e = within(10, "recursive watcher event", rw.changed()).await;
            assert_eq!((e.event_type, e.path), (t, path));
        }
    })
    .await
}

/// checkWatches (17) / removeWatches (18): NoWatcher when there is nothing to remove; a removed
/// watch no longer fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_and_check_watches() {
    within(TEST_BOUND_SECS, "remove_and_check_watches", async {
        let server = TestServer::shared();
        let (mut a, mut b) = raw2(server);
        let base = unique("watch-remove");
        b.create_ok(&base, b"");
        let d = format!("{base}/d");
        b.create_ok(&d, b"");
        let req = |p: &str, t: i32| Enc::new().str(p).i32(t).bytes();

        // Nothing registered.
        for t in [wtype::CHILDREN, wtype::DATA, wtype::ANY] {
            assert_eq!(
                a.call(op::CHECK_WATCHES, &req(&d, t)).err,
                err::NO_WATCHER,
                "checkWatches type {t}"
            );
            assert_eq!(
                a.call(op::REMOVE_WATCHES, &req(&d, t)).err,
                err::NO_WATCHER,
                "removeWatches type {t}"
            );
        }
        assert_eq!(
            a.call(
                op::REMOVE_WATCHES,
                &req(&format!("{base}/missing"), wtype::ANY)
            )
            .err,
            err::NO_WATCHER
        );

        // Data watch: check finds it (DATA/ANY, not CHILDREN); remove it; it no longer fires.
        a.get_data(&d, true);
        assert_eq!(a.call(op::CHECK_WATCHES, &req(&d, wtype::DATA)).err, 0);
        assert_eq!(a.call(op::CHECK_WATCHES, &req(&d, wtype::ANY)).err, 0);
        assert_eq!(
            a.call(op::CHECK_WATCHES, &req(&d, wtype::CHILDREN)).err,
            err::NO_WATCHER
        );
        assert_eq!(
            a.call(op::REMOVE_WATCHES, &req(&d, wtype::CHILDREN)).err,
            err::NO_WATCHER
        );
        assert_eq!(a.call(op::REMOVE_WATCHES, &req(&d, wtype::DATA)).err, 0);
        assert_eq!(
            a.call(op::REMOVE_WATCHES, &req(&d, wtype::DATA)).err,
            err::NO_WATCHER
        );
        b.set_data(&d, b"1");
        a.expect_events(&[], QUIET);

        // An exists watch is a data watch too.
        a.exists(&d, true);
        assert_eq!(a.call(op::REMOVE_WATCHES, &req(&d, wtype::DATA)).err, 0);
        b.set_data(&d, b"2");
        a.expect_events(&[], QUIET);

        // Child + data watch, removed by ANY.
        a.get_children(&d, true);
        a.get_data(&d, true);
        assert_eq!(a.call(op::CHECK_WATCHES, &req(&d, wtype::CHILDREN)).err, 0);
        assert_eq!(a.call(op::REMOVE_WATCHES, &req(&d, wtype::ANY)).err, 0);
        assert_eq!(
            a.call(op::CHECK_WATCHES, &req(&d, wtype::ANY)).err,
            err::NO_WATCHER
        );
        b.create_ok(&format!("{d}/k"), b"");
        b.set_data(&d, b"3");
        a.expect_events(&[], QUIET);

        // Removing only the child watch keeps the data watch.
        a.get_children(&d, true);
        a.get_data(&d, true);
        assert_eq!(a.call(op::REMOVE_WATCHES, &req(&d, wtype::CHILDREN)).err, 0);
        b.create_ok(&format!("{d}/k2"), b"");
        b.set_data(&d, b"4");
        a.expect_events(&[(ev::NODE_DATA_CHANGED, &d)], QUIET);

        // Another session's watch is not ours to remove.
        b.get_data(&d, true);
        assert_eq!(
            a.call(op::REMOVE_WATCHES, &req(&d, wtype::DATA)).err,
            err::NO_WATCHER
        );
        a.set_data(&d, b"5");
        b.expect_events(&[(ev::NODE_DATA_CHANGED, &d)], QUIET);

        // A persistent watch is removed with ANY.
        let reply = a.call(op::ADD_WATCH, &Enc::new().str(&d).i32(0).bytes());
        assert_eq!(reply.err, 0);
        assert_eq!(a.call(op::CHECK_WATCHES, &req(&d, wtype::ANY)).err, 0);
        assert_eq!(a.call(op::REMOVE_WATCHES, &req(&d, wtype::ANY)).err, 0);
        b.set_data(&d, b"6");
        b.create_ok(&format!("{d}/k3"), b"");
        a.expect_events(&[], QUIET);
    })
    .await
}
