//! multi (14) and multiRead (22): results, atomicity, per-op error results, check (13).
//!
//! Against ZooKeeper: `E2E_TARGET=zk cargo test --test e2e_multi`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::time::Duration;

use common::raw::{self, decode_multi, err, mode, multi_req, op, Enc, MultiResult};
use common::*;
use zookeeper_client::{
    CreateMode, Error, EventType, MultiReadResult, MultiWriteError, MultiWriteResult,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_success_applies_everything_in_one_txn() {
    within(TEST_BOUND_SECS, "multi_success_applies_everything_in_one_txn", async {
        let server = TestServer::shared();
        let c = server.client().await;
        let base = unique("multi-ok");
        c.create(&base, b"", &anyone()).await.unwrap();
        let a = format!("{base}/a");

        let mut w = c.new_multi_writer();
        w.add_create(&a, b"a", &anyone()).unwrap();
        w.add_create(&format!("{a}/b"), b"b", &anyone()).unwrap();
        w.add_set_data(&a, b"x", Some(0)).unwrap();
        w.add_check_version(&a, 1).unwrap();
        w.add_create(&format!("{base}/s-"), b"", &opts(CreateMode::PersistentSequential)).unwrap();
        w.add_create(&format!("{base}/e"), b"", &opts(CreateMode::Ephemeral)).unwrap();
        w.add_delete(&format!("{a}/b"), Some(0)).unwrap();
        let results = within(10, "multi", w.commit()).await.unwrap();
        assert_eq!(results.len(), 7, "{results:?}");
        assert!(matches!(&results[0], MultiWriteResult::Create { path, .. } if *path == a), "{results:?}");
        assert!(matches!(&results[1], MultiWriteResult::Create { path, .. } if *path == format!("{a}/b")));
        let MultiWriteResult::SetData { stat } = &results[2] else { panic!("{results:?}") };
        assert_eq!((stat.version, stat.data_length), (1, 1));
        assert!(matches!(results[3], MultiWriteResult::Check));
        // Two children of base created before it in this multi -> counter 1.
        assert!(
            matches!(&results[4], MultiWriteResult::Create { path, .. } if *path == format!("{base}/s-0000000001")),
            "{results:?}"
        );
        assert!(matches!(&results[5], MultiWriteResult::Create { path, .. } if *path == format!("{base}/e")));
        assert!(matches!(results[6], MultiWriteResult::Delete));

        let (data, st) = c.get_data(&a).await.unwrap();
        assert_eq!((data.as_slice(), st.version, st.num_children), (&b"x"[..], 1, 0));
        assert_eq!(c.check_stat(&format!("{a}/b")).await.unwrap(), None);
        let e = c.check_stat(&format!("{base}/e")).await.unwrap().unwrap();
        assert_eq!(e.ephemeral_owner, c.session_id().0);
        // The whole multi is ONE transaction: one zxid for every change.
        assert_eq!(st.czxid, st.mzxid, "create and setData of the same multi share a zxid");
        assert_eq!(e.czxid, st.czxid);
        let s = c.check_stat(&format!("{base}/s-0000000001")).await.unwrap().unwrap();
        assert_eq!(s.czxid, st.czxid);
        assert_eq!(st.pzxid, st.czxid, "child create+delete in the same txn");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_failure_applies_nothing() {
    within(TEST_BOUND_SECS, "multi_failure_applies_nothing", async {
        let server = TestServer::shared();
        let c = server.client().await;
        let base = unique("multi-fail");
        c.create(&base, b"", &anyone()).await.unwrap();
        let before = c.check_stat(&base).await.unwrap().unwrap();
        let (_, _, watch) = c.get_and_watch_data(&base).await.unwrap();

        let mut w = c.new_multi_writer();
        w.add_create(&format!("{base}/m"), b"", &anyone()).unwrap();
        w.add_set_data(&base, b"changed", None).unwrap();
        w.add_set_data(&format!("{base}/m"), b"x", Some(5)).unwrap(); // BadVersion
        w.add_create(&format!("{base}/n"), b"", &anyone()).unwrap();
        let e = within(10, "multi", w.commit()).await.unwrap_err();
        assert_eq!(
            e,
            MultiWriteError::OperationFailed {
                index: 2,
                source: Error::BadVersion
            }
        );

        assert_eq!(c.check_stat(&format!("{base}/m")).await.unwrap(), None);
        assert_eq!(c.check_stat(&format!("{base}/n")).await.unwrap(), None);
        let (data, after) = c.get_data(&base).await.unwrap();
        assert!(data.is_empty());
        assert_eq!(after, before, "a failed multi leaves no trace");
        assert_pending(500, "watch after failed multi", watch.changed()).await;

        // Failing check on a missing node.
        let mut w = c.new_multi_writer();
        w.add_check_version(&format!("{base}/missing"), 0).unwrap();
        w.add_create(&format!("{base}/m"), b"", &anyone()).unwrap();
        assert_eq!(
            within(10, "multi", w.commit()).await.unwrap_err(),
            MultiWriteError::OperationFailed {
                index: 0,
                source: Error::NoNode
            }
        );
        assert_eq!(c.check_stat(&format!("{base}/m")).await.unwrap(), None);

        // Failing check version.
        let mut w = c.new_multi_writer();
        w.add_create(&format!("{base}/m"), b"", &anyone()).unwrap();
        w.add_check_version(&base, 7).unwrap();
        assert_eq!(
            within(10, "multi", w.commit()).await.unwrap_err(),
            MultiWriteError::OperationFailed {
                index: 1,
                source: Error::BadVersion
            }
        );
        // NodeExists inside the multi.
        let mut w = c.new_multi_writer();
        w.add_create(&format!("{base}/m"), b"", &anyone()).unwrap();
        w.add_create(&format!("{base}/m"), b"", &anyone()).unwrap();
        assert_eq!(
            within(10, "multi", w.commit()).await.unwrap_err(),
            MultiWriteError::OperationFailed {
                index: 1,
                source: Error::NodeExists
            }
        );
        // Delete of a node created earlier in the multi, then a failing op.
        let mut w = c.new_multi_writer();
        w.add_create(&format!("{base}/m"), b"", &anyone()).unwrap();
        w.add_delete(&format!("{base}/m"), None).unwrap();
        w.add_delete(&format!("{base}/m"), None).unwrap();
        assert_eq!(
            within(10, "multi", w.commit()).await.unwrap_err(),
            MultiWriteError::OperationFailed {
                index: 2,
                source: Error::NoNode
            }
        );
        assert_eq!(c.check_stat(&format!("{base}/m")).await.unwrap(), None);
        assert_eq!(c.check_stat(&base).await.unwrap().unwrap(), before);
    })
    .await
}

/// Wire format of a failed multi: header err 0; every op gets an ErrorResult: 0 before the
/// failing op, its code at the failing op, -2 (RuntimeInconsistency) after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_failure_per_op_results_on_the_wire() {
    within(
        TEST_BOUND_SECS,
        "multi_failure_per_op_results_on_the_wire",
        async {
            let server = TestServer::shared();
            let mut r = server.raw();
            let base = unique("multi-raw");
            r.create_ok(&base, b"");
            let m = format!("{base}/m");
            let check = |p: &str, v: i32| Enc::new().str(p).i32(v).bytes();

            let reply = r.call(
                op::MULTI,
                &multi_req(&[
                    (op::CREATE, raw::create_req(&m, b"", mode::PERSISTENT)),
                    (op::SET_DATA, raw::set_data_req(&m, b"x", 5)),
                    (op::DELETE, raw::delete_req(&m, -1)),
                    (op::CHECK, check(&m, 0)),
                ]),
            );
            assert_eq!(reply.err, 0, "multi reply header err is 0 even on failure");
            assert_eq!(
                decode_multi(&reply.body),
                vec![
                    MultiResult::Error(0),
                    MultiResult::Error(err::BAD_VERSION),
                    MultiResult::Error(-2),
                    MultiResult::Error(-2)
                ]
            );
            assert_eq!(r.exists(&m, false).0, err::NO_NODE);

            // First op fails.
            let reply = r.call(
                op::MULTI,
                &multi_req(&[
                    (op::CREATE, raw::create_req(&base, b"", 0)),
                    (op::CREATE, raw::create_req(&m, b"", 0)),
                ]),
            );
            assert_eq!(reply.err, 0);
            assert_eq!(
                decode_multi(&reply.body),
                vec![MultiResult::Error(err::NODE_EXISTS), MultiResult::Error(-2)]
            );

            // Last op fails.
            let reply = r.call(
                op::MULTI,
                &multi_req(&[
                    (op::CREATE, raw::create_req(&m, b"", 0)),
                    (op::CHECK, check(&m, 0)),
                    (op::DELETE, raw::delete_req(&format!("{base}/zz"), -1)),
                ]),
            );
            assert_eq!(
                decode_multi(&reply.body),
                vec![
                    MultiResult::Error(0),
                    MultiResult::Error(0),
                    MultiResult::Error(err::NO_NODE)
                ]
            );
            // A bad path inside a multi.
            let reply = r.call(
                op::MULTI,
                &multi_req(&[(op::CREATE, raw::create_req("bad", b"", 0))]),
            );
            assert_eq!(reply.err, 0);
            assert_eq!(
                decode_multi(&reply.body),
                vec![MultiResult::Error(err::BAD_ARGUMENTS)]
            );
            assert_eq!(r.exists(&m, false).0, err::NO_NODE);

            // Success on the wire: create (opcode 1) -> path; setData -> stat; check; delete.
            let reply = r.call(
                op::MULTI,
                &multi_req(&[
                    (op::CREATE, raw::create_req(&m, b"", 0)),
                    (op::SET_DATA, raw::set_data_req(&m, b"xy", 0)),
                    (op::CHECK, check(&m, 1)),
                    (op::CREATE, raw::create_req(&format!("{m}/k"), b"", 0)),
                    (op::DELETE, raw::delete_req(&format!("{m}/k"), 0)),
                ]),
            );
            assert_eq!(reply.err, 0);
            let res = decode_multi(&reply.body);
            assert_eq!(res.len(), 5, "{res:?}");
            assert_eq!(res[0], MultiResult::Create(m.clone()));
            let MultiResult::SetData(st) = &res[1] else {
                panic!("{res:?}")
            };
            assert_eq!(
                (st.version, st.data_length, st.mzxid, st.czxid),
                (1, 2, reply.zxid, reply.zxid)
            );
            assert_eq!(res[2], MultiResult::Check);
            assert_eq!(res[3], MultiResult::Create(format!("{m}/k")));
            assert_eq!(res[4], MultiResult::Delete);

            // An empty multi is fine and returns no results.
            let reply = r.call(op::MULTI, &multi_req(&[]));
            assert_eq!(reply.err, 0);
            assert_eq!(decode_multi(&reply.body), vec![]);
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_read_returns_per_op_results() {
    within(
        TEST_BOUND_SECS,
        "multi_read_returns_per_op_results",
        async {
            let server = TestServer::shared();
            let c = server.client().await;
            let base = unique("multi-read");
            c.create(&base, b"root", &anyone()).await.unwrap();
            c.create(&format!("{base}/x"), b"xx", &anyone())
                .await
                .unwrap();
            c.create(&format!("{base}/y"), b"", &anyone())
                .await
                .unwrap();

            let mut rd = c.new_multi_reader();
            rd.add_get_data(&format!("{base}/x")).unwrap();
            rd.add_get_children(&base).unwrap();
            rd.add_get_data(&format!("{base}/missing")).unwrap();
            rd.add_get_children(&format!("{base}/missing")).unwrap();
            rd.add_get_data(&base).unwrap();
            let res = within(10, "multiRead", rd.commit()).await.unwrap();
            assert_eq!(res.len(), 5, "{res:?}");
            let MultiReadResult::Data { data, stat } = &res[0] else {
                panic!("{res:?}")
            };
            assert_eq!((data.as_slice(), stat.data_length), (&b"xx"[..], 2));
            let MultiReadResult::Children { children } = &res[1] else {
                panic!("{res:?}")
            };
            assert_eq!(
                sorted(children.clone()),
                vec!["x".to_string(), "y".to_string()]
            );
            assert!(
                matches!(&res[2], MultiReadResult::Error { err: Error::NoNode }),
                "{res:?}"
            );
            assert!(
                matches!(&res[3], MultiReadResult::Error { err: Error::NoNode }),
                "{res:?}"
            );
            let MultiReadResult::Data { data, stat } = &res[4] else {
                panic!("{res:?}")
            };
            assert_eq!((data.as_slice(), stat.num_children), (&b"root"[..], 2));

            // Same on the wire: reply header err 0, error results inline.
            let mut r = server.raw();
            let reply = r.call(
                op::MULTI_READ,
                &multi_req(&[
                    (
                        op::GET_CHILDREN,
                        raw::path_watch_req(&format!("{base}/nope"), false),
                    ),
                    (
                        op::GET_DATA,
                        raw::path_watch_req(&format!("{base}/y"), false),
                    ),
                ]),
            );
            assert_eq!(reply.err, 0);
            let res = decode_multi(&reply.body);
            assert_eq!(res[0], MultiResult::Error(err::NO_NODE));
            assert!(
                matches!(&res[1], MultiResult::GetData(d, _) if d.is_empty()),
                "{res:?}"
            );
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_fires_watches_once_committed() {
    within(
        TEST_BOUND_SECS,
        "multi_fires_watches_once_committed",
        async {
            let server = TestServer::shared();
            let c = server.client().await;
            let other = server.client().await;
            let base = unique("multi-watch");
            c.create(&base, b"", &anyone()).await.unwrap();
            c.create(&format!("{base}/d"), b"", &anyone())
                .await
                .unwrap();
            let (_, _, data_w) = other
                .get_and_watch_data(&format!("{base}/d"))
                .await
                .unwrap();
            let (_, child_w) = other.list_and_watch_children(&base).await.unwrap();
            let (_, exist_w) = other
                .check_and_watch_stat(&format!("{base}/new"))
                .await
                .unwrap();

            let mut w = c.new_multi_writer();
            w.add_set_data(&format!("{base}/d"), b"1", None).unwrap();
            w.add_create(&format!("{base}/new"), b"", &anyone())
                .unwrap();
            within(10, "multi", w.commit()).await.unwrap();

            let e = within(10, "data watch", data_w.changed()).await;
            assert_eq!(
                (e.event_type, e.path),
                (EventType::NodeDataChanged, format!("{base}/d"))
            );
            let e = within(10, "child watch", child_w.changed()).await;
            assert_eq!(
                (e.event_type, e.path),
                (EventType::NodeChildrenChanged, base.clone())
            );
            let e = within(10, "exist watch", exist_w.changed()).await;
            assert_eq!(
                (e.event_type, e.path),
                (EventType::NodeCreated, format!("{base}/new"))
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        },
    )
    .await
}
