//! Sessions: negotiated timeout clamping, expiry (ephemerals deleted, watchers notified, the
//! session cannot be resumed), close, resuming a session on a new connection, resuming after a
//! server restart/crash (ephemerals kept, watches re-armed through SetWatches), and SetWatches'
//! relativeZxid (changes made while a client was disconnected fire on reconnect).
//!
//! Against ZooKeeper: `E2E_TARGET=zk cargo test --test e2e_sessions`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::raw::{err, ev, mode, op, ConnectRequest, Enc, RawConn, ReadOutcome};
use common::*;
use zookeeper_client::{self as zk, CreateMode, Error, EventType, SessionState};

/// tick 500 ms -> [1000, 10000].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiated_timeout_is_clamped() {
    within(TEST_BOUND_SECS, "negotiated_timeout_is_clamped", async {
        let server = TestServer::shared();
        let min = 2 * TICK_MS as i32;
        let max = 20 * TICK_MS as i32;
        for (asked, expected) in [
            (1, min),
            (0, min),
            (-5, min),
            (min - 1, min),
            (min, min),
            (4000, 4000),
            (max, max),
            (max + 1, max),
            (600_000, max),
        ] {
            let (c, resp) = RawConn::connect_req(&server.addr(), &ConnectRequest::new(asked))
                .expect("handshake");
            assert_eq!(resp.timeout, expected, "asked {asked}");
            assert_ne!(resp.session_id, 0);
            assert_eq!(resp.passwd.len(), 16, "session password is 16 bytes");
            drop(c);
        }
        let c = server
            .client_with(zk::Client::connector().with_session_timeout(Duration::from_secs(3)))
            .await;
        assert_eq!(c.session_timeout(), Duration::from_secs(3));
        let c = server
            .client_with(zk::Client::connector().with_session_timeout(Duration::from_secs(100)))
            .await;
        assert_eq!(c.session_timeout(), Duration::from_millis(max as u64));
    })
    .await
}

/// A silent session expires: its ephemerals are deleted, other sessions' watches fire, the server
/// closes its connection, and the session cannot be resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_deletes_ephemerals_and_notifies_watchers() {
    within(
        TEST_BOUND_SECS,
        "expiry_deletes_ephemerals_and_notifies_watchers",
        async {
            let server = TestServer::shared();
            let observer = server.client().await;
            let base = unique("sess-expiry");
            observer.create(&base, b"", &anyone()).await.unwrap();

            let mut a = RawConn::connect(&server.addr(), 1000);
            assert_eq!(a.timeout, 1000);
            let e1 = format!("{base}/e1");
            let (code, _) = a.create(&e1, b"", mode::EPHEMERAL);
            assert_eq!(code, 0);
            let (code, e2) = a.create(&format!("{base}/e2-"), b"", mode::EPHEMERAL_SEQUENTIAL);
            assert_eq!(code, 0);
            let st = observer.check_stat(&e1).await.unwrap().unwrap();
            assert_eq!(st.ephemeral_owner, a.session_id);

            let (_, w1) = observer.check_and_watch_stat(&e1).await.unwrap();
            let (_, _, w2) = observer.get_and_watch_data(&e2).await.unwrap();
            let (_, wc) = observer.list_and_watch_children(&base).await.unwrap();
            let started = Instant::now();
            // `a` goes silent (no pings). Expiry: ~timeout rounded up to the tick.
            let e = within(15, "NodeDeleted for e1", w1.changed()).await;
            assert_eq!(
                (e.event_type, e.path.as_str()),
                (EventType::NodeDeleted, e1.as_str())
            );
            assert!(
                started.elapsed() >= Duration::from_millis(500),
                "expired too early: {:?}",
                started.elapsed()
            );
            let e = within(5, "NodeDeleted for e2", w2.changed()).await;
            assert_eq!(
                (e.event_type, e.path.as_str()),
                (EventType::NodeDeleted, e2.as_str())
            );
            let e = within(5, "NodeChildrenChanged for base", wc.changed()).await;
            assert_eq!(
                (e.event_type, e.path.as_str()),
                (EventType::NodeChildrenChanged, base.as_str())
            );
            assert_eq!(
                observer.list_children(&base).await.unwrap(),
                Vec::<String>::new()
            );
            assert!(
                a.wait_closed(Duration::from_secs(10)),
                "server must close an expired session's connection"
            );

            // Resuming the expired session: ConnectResponse with sessionId 0 / timeout 0.
            let mut req = ConnectRequest::new(1000);
            req.session_id = a.session_id;
            req.passwd = a.passwd.clone();
            match RawConn::connect_req(&server.addr(), &req) {
                Ok((_, resp)) => assert_eq!(
                    (resp.session_id, resp.timeout),
                    (0, 0),
                    "expired session must not resume"
                ),
                Err(ReadOutcome::Closed) => {}
                Err(other) => panic!("expected an expired-session answer, got {other:?}"),
            }
        },
    )
    .await
}

/// Through the client library: a detached session that is not resumed in time is expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cannot_resume_expired_session() {
    within(
        TEST_BOUND_SECS,
        "client_cannot_resume_expired_session",
        async {
            let server = TestServer::shared();
            let observer = server.client().await;
            let e = unique("sess-expired-client");
            let c = server
                .client_with(
                    zk::Client::connector()
                        .with_session_timeout(Duration::from_millis(1000))
                        .with_detached(),
                )
                .await;
            c.create(&e, b"", &opts(CreateMode::Ephemeral))
                .await
                .unwrap();
            let session = c.into_session(); // dropped without closing (detached)
            eventually(15, "ephemeral of the abandoned session removed", || async {
                observer.check_stat(&e).await.unwrap().is_none()
            })
            .await;
            let r = tokio::time::timeout(
                Duration::from_secs(15),
                zk::Client::connector()
                    .with_session(session)
                    .with_fail_eagerly()
                    .connect(&server.addr()),
            )
            .await
            .expect("bounded");
            assert_eq!(r.unwrap_err(), Error::SessionExpired);
        },
    )
    .await
}

/// Pings keep a short session alive well past its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_session_keeps_ephemerals() {
    within(TEST_BOUND_SECS, "live_session_keeps_ephemerals", async {
        let server = TestServer::shared();
        let observer = server.client().await;
        let e = unique("sess-alive");
        let c = server
            .client_with(zk::Client::connector().with_session_timeout(Duration::from_millis(2000)))
            .await;
        c.create(&e, b"", &opts(CreateMode::Ephemeral))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5000)).await;
        assert_eq!(
            observer
                .check_stat(&e)
                .await
                .unwrap()
                .unwrap()
                .ephemeral_owner,
            c.session_id().0
        );
        // Raw: pings alone keep it alive too.
        let mut a = RawConn::connect(&server.addr(), 1000);
        let e2 = unique("sess-alive-raw");
        assert_eq!(a.create(&e2, b"", mode::EPHEMERAL).0, 0);
        for _ in 0..12 {
            std::thread::sleep(Duration::from_millis(250));
            a.ping();
        }
        assert!(observer.check_stat(&e2).await.unwrap().is_some());
        assert_eq!(a.exists(&e2, false).0, 0);
    })
    .await
}

/// closeSession deletes the session's ephemerals before it is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_session_deletes_ephemerals() {
    within(TEST_BOUND_SECS, "close_session_deletes_ephemerals", async {
        let server = TestServer::shared();
        let mut b = server.raw();
        let base = unique("sess-close");
        b.create_ok(&base, b"");
        let mut a = RawConn::connect(&server.addr(), 10_000);
        let e = format!("{base}/e");
        assert_eq!(a.create(&e, b"", mode::EPHEMERAL).0, 0);
        assert_eq!(
            a.create(&format!("{base}/s-"), b"", mode::EPHEMERAL_SEQUENTIAL)
                .0,
            0
        );
        assert_eq!(b.exists(&e, true).0, 0);
        let reply = a.close_session();
        assert_eq!(reply.err, 0);
        // Already gone for everybody else.
        assert_eq!(b.get_children(&base, false), (0, vec![]));
        b.expect_events(&[(ev::NODE_DELETED, &e)], Duration::from_millis(300));
        assert!(
            a.wait_closed(Duration::from_secs(10)),
            "server closes the connection after closeSession"
        );
        let mut req = ConnectRequest::new(10_000);
        req.session_id = a.session_id;
        req.passwd = a.passwd.clone();
        match RawConn::connect_req(&server.addr(), &req) {
            Ok((_, resp)) => assert_eq!(resp.session_id, 0, "closed session must not resume"),
            Err(ReadOutcome::Closed) => {}
            Err(other) => panic!("{other:?}"),
        }

        // Client library: dropping the last handle closes the session (well before its 10 s timeout).
        let observer = server.client().await;
        let c = server
            .client_with(zk::Client::connector().with_session_timeout(Duration::from_secs(10)))
            .await;
        let e2 = format!("{base}/client-e");
        c.create(&e2, b"", &opts(CreateMode::Ephemeral))
            .await
            .unwrap();
        let t = Instant::now();
        drop(c);
        eventually(4, "ephemeral deleted by close", || async {
            observer.check_stat(&e2).await.unwrap().is_none()
        })
        .await;
        assert!(t.elapsed() < Duration::from_secs(4));
    })
    .await
}

/// A session survives its connection: reconnecting with (sessionId, passwd) within the timeout
/// resumes it; a wrong password is refused without harming the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_resumes_on_new_connection() {
    within(
        TEST_BOUND_SECS,
        "session_resumes_on_new_connection",
        async {
            let server = TestServer::shared();
            let mut obs = server.raw();
            let mut a1 = RawConn::connect(&server.addr(), 10_000);
            let (sid, passwd) = (a1.session_id, a1.passwd.clone());
            let e = unique("sess-resume");
            assert_eq!(a1.create(&e, b"", mode::EPHEMERAL).0, 0);
            let last_zxid = a1.last_zxid;
            drop(a1); // TCP close, no closeSession

            let mut bad = ConnectRequest::new(10_000);
            bad.session_id = sid;
            bad.passwd = vec![7; 16];
            match RawConn::connect_req(&server.addr(), &bad) {
                Ok((_, resp)) => assert_eq!(resp.session_id, 0, "wrong password must be refused"),
                Err(ReadOutcome::Closed) => {}
                Err(other) => panic!("{other:?}"),
            }
            assert_eq!(obs.exists(&e, false).1.unwrap().ephemeral_owner, sid);

            let mut good = ConnectRequest::new(10_000);
            good.session_id = sid;
            good.passwd = passwd;
            good.last_zxid_seen = last_zxid;
            let (mut a2, resp) = RawConn::connect_req(&server.addr(), &good).expect("resume");
            assert_eq!((resp.session_id, resp.timeout), (sid, 10_000));
            assert_eq!(a2.exists(&e, false).1.unwrap().ephemeral_owner, sid);
            assert_eq!(obs.exists(&e, false).1.unwrap().ephemeral_owner, sid);
            // Still the same session: its ephemeral dies with it.
            assert_eq!(a2.close_session().err, 0);
            assert_eq!(obs.exists(&e, false).0, err::NO_NODE);
        },
    )
    .await
}

async fn wait_connected(c: &zk::Client, secs: u64) {
    let mut w = c.state_watcher();
    within(secs, "client reconnected", async {
        loop {
            let s = w.peek_state();
            if s == SessionState::SyncConnected {
                return;
            }
            assert!(!s.is_terminated(), "session terminated: {s:?}");
            w.changed().await;
        }
    })
    .await;
}

async fn resume_after(how: &str) {
    let server = TestServer::start(ServerOpts::default());
    let c = server
        .client_with(zk::Client::connector().with_session_timeout(Duration::from_secs(10)))
        .await;
    let sid = c.session_id();
    c.create("/base", b"", &anyone()).await.unwrap();
    c.create("/base/e", b"", &opts(CreateMode::Ephemeral))
        .await
        .unwrap();
    c.create("/base/w", b"", &anyone()).await.unwrap();
    let (_, _, wdata) = c.get_and_watch_data("/base/w").await.unwrap();
    let (_, wexist) = c.check_and_watch_stat("/base/m").await.unwrap();
    let (_, wchild) = c.list_and_watch_children("/base").await.unwrap();
    let mut states = c.state_watcher();

    tokio::task::block_in_place(|| match how {
        "restart" => server.restart(),
        "crash" => {
            server.kill9();
            server.start_again();
        }
        _ => unreachable!(),
    });
    // The client notices the outage and comes back on the SAME session.
    // (The watch channel keeps only the latest state: by now it may already read SyncConnected
    // again, but it must have changed.)
    within(20, "client notices the outage", states.changed()).await;
    wait_connected(&c, 20).await;
    assert_eq!(c.get_data("/base/w").await.unwrap().0, b"");

    let o = server.client().await;
    let st = o
        .check_stat("/base/e")
        .await
        .unwrap()
        .expect("ephemeral must survive the restart");
    assert_eq!(st.ephemeral_owner, sid.0);
    // Changes after the restart fire the watches set before it (re-armed via SetWatches).
    o.set_data("/base/w", b"after", None).await.unwrap();
    o.create("/base/m", b"", &anyone()).await.unwrap();
    let e = within(10, "data watch after restart", wdata.changed()).await;
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (EventType::NodeDataChanged, "/base/w")
    );
    let e = within(10, "exist watch after restart", wexist.changed()).await;
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (EventType::NodeCreated, "/base/m")
    );
    let e = within(10, "child watch after restart", wchild.changed()).await;
    assert_eq!(
        (e.event_type, e.path.as_str()),
        (EventType::NodeChildrenChanged, "/base")
    );
    assert_eq!(c.state(), SessionState::SyncConnected);
    // Data written before the outage is intact.
    assert_eq!(
        sorted(o.list_children("/base").await.unwrap()),
        vec!["e", "m", "w"]
    );
    // And the session still owns its ephemeral: closing it deletes it.
    drop(c);
    eventually(5, "ephemeral deleted by close", || async {
        o.check_stat("/base/e").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_resumes_after_server_restart() {
    within(
        TEST_BOUND_SECS,
        "session_resumes_after_server_restart",
        async {
            resume_after("restart").await;
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_resumes_after_server_crash() {
    within(
        TEST_BOUND_SECS,
        "session_resumes_after_server_crash",
        async {
            resume_after("crash").await;
        },
    )
    .await
}

/// The client is cut off (server still up); changes made meanwhile fire its watches as soon as it
/// reconnects, because SetWatches carries relativeZxid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_while_disconnected_fire_on_reconnect() {
    within(
        TEST_BOUND_SECS,
        "changes_while_disconnected_fire_on_reconnect",
        async {
            let server = TestServer::shared();
            let proxy = Proxy::start(server.addr()).await;
            let o = server.client().await;
            let base = unique("sess-missed");
            o.create(&base, b"", &anyone()).await.unwrap();
            let (d, x, n, p) = (
                format!("{base}/d"),
                format!("{base}/x"),
                format!("{base}/n"),
                format!("{base}/p"),
            );
            for path in [&d, &x, &p] {
                o.create(path, b"", &anyone()).await.unwrap();
            }
            let quiet = format!("{base}/quiet");
            o.create(&quiet, b"", &anyone()).await.unwrap();

            let c = connect(
                &proxy.addr(),
                zk::Client::connector().with_session_timeout(Duration::from_secs(10)),
            )
            .await;
            let (_, _, wd) = c.get_and_watch_data(&d).await.unwrap();
            let (_, _, wx) = c.get_and_watch_data(&x).await.unwrap();
            let (_, wn) = c.check_and_watch_stat(&n).await.unwrap();
            let (_, wp) = c.list_and_watch_children(&p).await.unwrap();
            let (_, _, wq) = c.get_and_watch_data(&quiet).await.unwrap();
            let mut states = c.state_watcher();

            proxy.cut();
            let s = within(10, "client sees the cut", states.changed()).await;
            assert_eq!(s, SessionState::Disconnected);
            o.set_data(&d, b"1", None).await.unwrap();
            o.delete(&x, None).await.unwrap();
            o.create(&n, b"", &anyone()).await.unwrap();
            o.create(&format!("{p}/k"), b"", &anyone()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            proxy.restore();

            let e = within(20, "missed data change", wd.changed()).await;
            assert_eq!(
                (e.event_type, e.path.as_str()),
                (EventType::NodeDataChanged, d.as_str())
            );
            let e = within(10, "missed delete", wx.changed()).await;
            assert_eq!(
                (e.event_type, e.path.as_str()),
                (EventType::NodeDeleted, x.as_str())
            );
            let e = within(10, "missed create", wn.changed()).await;
            assert_eq!(
                (e.event_type, e.path.as_str()),
                (EventType::NodeCreated, n.as_str())
            );
            let e = within(10, "missed child", wp.changed()).await;
            assert_eq!(
                (e.event_type, e.path.as_str()),
                (EventType::NodeChildrenChanged, p.as_str())
            );
            assert_eq!(c.state(), SessionState::SyncConnected);
            // The untouched node's watch is re-armed, not fired.
            assert_pending(500, "watch on an unchanged node", wq.changed()).await;
        },
    )
    .await
}

/// SetWatches (101) and SetWatches2 (105) on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_watches_relative_zxid_on_the_wire() {
    within(
        TEST_BOUND_SECS,
        "set_watches_relative_zxid_on_the_wire",
        async {
            let server = TestServer::shared();
            let mut b = server.raw();
            let base = unique("sess-setwatches");
            b.create_ok(&base, b"");
            let names = ["d", "x", "p", "q", "p2", "pers", "rec"];
            for k in names {
                b.create_ok(&format!("{base}/{k}"), b"");
            }
            let path = |k: &str| format!("{base}/{k}");
            let zxid0 = b.exists(&base, false).1.map(|_| b.last_zxid).unwrap();

            b.set_data(&path("d"), b"1"); // data watch, changed -> NodeDataChanged
            b.delete(&path("x")); // data watch, deleted -> NodeDeleted
            b.create_ok(&path("n"), b""); // exist watch, created -> NodeCreated
            b.create_ok(&format!("{}/k", path("p")), b""); // child watch, child added -> NodeChildrenChanged

            let mut a = server.raw();
            let body = Enc::new()
                .i64(zxid0)
                .strs(&[&path("d"), &path("x"), &path("q")])
                .strs(&[&path("n"), &path("missing")])
                .strs(&[&path("p"), &path("p2")])
                .bytes();
            a.send_xid(-8, op::SET_WATCHES, &body);
            let reply = a.wait_reply(-8);
            assert_eq!(reply.err, 0);
            let mut got = vec![];
            while let Some(e) = a.next_event(Duration::from_millis(600)) {
                got.push((e.event_type, e.path));
            }
            got.sort();
            let mut want = vec![
                (ev::NODE_DATA_CHANGED, path("d")),
                (ev::NODE_DELETED, path("x")),
                (ev::NODE_CREATED, path("n")),
                (ev::NODE_CHILDREN_CHANGED, path("p")),
            ];
            want.sort();
            assert_eq!(
                got, want,
                "exactly the watches whose node changed after relativeZxid fire"
            );

            // The others are armed now.
            b.set_data(&path("q"), b"1");
            b.create_ok(&path("missing"), b"");
            b.create_ok(&format!("{}/k", path("p2")), b"");
            a.expect_events(
                &[
                    (ev::NODE_DATA_CHANGED, &path("q")),
                    (ev::NODE_CREATED, &path("missing")),
                    (ev::NODE_CHILDREN_CHANGED, &path("p2")),
                ],
                Duration::from_millis(600),
            );

            // relativeZxid = now: nothing fires immediately.
            let mut a2 = server.raw();
            let now = b.exists(&base, false).1.map(|_| b.last_zxid).unwrap();
            let body = Enc::new()
                .i64(now)
                .strs(&[&path("d")])
                .strs(&[])
                .strs(&[])
                .bytes();
            a2.send_xid(-8, op::SET_WATCHES, &body);
            assert_eq!(a2.wait_reply(-8).err, 0);
            a2.expect_events(&[], Duration::from_millis(400));
            b.set_data(&path("d"), b"2");
            a2.expect_events(
                &[(ev::NODE_DATA_CHANGED, &path("d"))],
                Duration::from_millis(400),
            );

            // SetWatches2 re-registers persistent and persistent-recursive watches.
            let mut a3 = server.raw();
            let now = b.exists(&base, false).1.map(|_| b.last_zxid).unwrap();
            let body = Enc::new()
                .i64(now)
                .strs(&[])
                .strs(&[])
                .strs(&[])
                .strs(&[&path("pers")])
                .strs(&[&path("rec")])
                .bytes();
            a3.send_xid(-8, op::SET_WATCHES2, &body);
            assert_eq!(a3.wait_reply(-8).err, 0);
            b.set_data(&path("pers"), b"1");
            b.set_data(&path("pers"), b"2");
            b.create_ok(&format!("{}/deep", path("rec")), b"");
            a3.expect_events(
                &[
                    (ev::NODE_DATA_CHANGED, &path("pers")),
                    (ev::NODE_DATA_CHANGED, &path("pers")),
                    (ev::NODE_CREATED, &format!("{}/deep", path("rec"))),
                ],
                Duration::from_millis(600),
            );
        },
    )
    .await
}
