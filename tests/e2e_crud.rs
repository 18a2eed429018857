//! Basic node operations and their error paths: create/create2 in every CreateMode, sequential
//! naming, delete/exists/getData/setData/getACL/setACL/getChildren(2)/sync, Stat bookkeeping,
//! special /zookeeper nodes, getEphemerals, getAllChildrenNumber, server-side path/ACL/TTL
//! validation (through the raw protocol, since the client library validates locally).
//!
//! Against ZooKeeper: `E2E_TARGET=zk cargo test --test e2e_crud`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::raw::{self, err, mode, op, Dec, Enc};
use common::*;
use zookeeper_client::{self as zk, Acl, Acls, AuthId, CreateMode, Error, Permission};

const SERVER_BAD_ARGS: Error = Error::BadArguments(&"server error");

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_persistent_stat_and_read_back() {
    within(
        TEST_BOUND_SECS,
        "create_persistent_stat_and_read_back",
        async {
            let server = TestServer::shared();
            let c = server.client().await;
            let base = unique("crud-persistent");

            let (stat, seq) = c.create(&base, b"hello", &anyone()).await.unwrap();
            assert_eq!(seq.into_i64(), -1, "non-sequential create has no sequence");
            assert_eq!(stat.version, 0);
            assert_eq!(stat.cversion, 0);
            assert_eq!(stat.aversion, 0);
            assert_eq!(stat.ephemeral_owner, 0);
            assert_eq!(stat.data_length, 5);
            assert_eq!(stat.num_children, 0);
            assert!(stat.czxid > 0, "czxid must be positive: {stat:?}");
            assert_eq!(stat.mzxid, stat.czxid);
            assert_eq!(stat.pzxid, stat.czxid, "a new node's pzxid is its czxid");
            assert_eq!(stat.ctime, stat.mtime);
            assert!(
                (stat.ctime - now_ms()).abs() < 60_000,
                "ctime is wall-clock ms: {}",
                stat.ctime
            );

            let (data, stat2) = c.get_data(&base).await.unwrap();
            assert_eq!(data, b"hello");
            assert_eq!(stat2, stat, "getData stat equals create2 stat");
            assert_eq!(
                c.check_stat(&base).await.unwrap(),
                Some(stat),
                "exists stat equals create2 stat"
            );

            // Empty data round-trips as empty.
            let (s, _) = c
                .create(&format!("{base}/empty"), b"", &anyone())
                .await
                .unwrap();
            assert_eq!(s.data_length, 0);
            assert_eq!(
                c.get_data(&format!("{base}/empty")).await.unwrap().0,
                Vec::<u8>::new()
            );

            // Errors.
            assert_eq!(
                c.create(&base, b"", &anyone()).await.unwrap_err(),
                Error::NodeExists
            );
            assert_eq!(
                c.create(&format!("{base}/missing/child"), b"", &anyone())
                    .await
                    .unwrap_err(),
                Error::NoNode
            );
            assert_eq!(
                c.get_data(&format!("{base}/nope")).await.unwrap_err(),
                Error::NoNode
            );
            assert_eq!(c.check_stat(&format!("{base}/nope")).await.unwrap(), None);
            assert_eq!(
                c.list_children(&format!("{base}/nope")).await.unwrap_err(),
                Error::NoNode
            );
            assert_eq!(
                c.get_children(&format!("{base}/nope")).await.unwrap_err(),
                Error::NoNode
            );
            assert_eq!(
                c.get_acl(&format!("{base}/nope")).await.unwrap_err(),
                Error::NoNode
            );
            assert_eq!(
                c.set_data(&format!("{base}/nope"), b"x", None)
                    .await
                    .unwrap_err(),
                Error::NoNode
            );
            assert_eq!(
                c.delete(&format!("{base}/nope"), None).await.unwrap_err(),
                Error::NoNode
            );
            assert_eq!(
                c.set_acl(
                    &format!("{base}/nope"),
                    &[Acl::new(Permission::ALL, AuthId::anyone())],
                    None
                )
                .await
                .unwrap_err(),
                Error::NoNode
            );
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_value_round_trips() {
    within(TEST_BOUND_SECS, "large_value_round_trips", async {
        let server = TestServer::shared();
        let c = server.client().await;
        let base = unique("crud-large");
        let big: Vec<u8> = (0..512 * 1024).map(|i| (i * 7 % 251) as u8).collect();
        let (stat, _) = c.create(&base, &big, &anyone()).await.unwrap();
        assert_eq!(stat.data_length, big.len() as i32);
        assert_eq!(c.get_data(&base).await.unwrap().0, big);
        let big2: Vec<u8> = big.iter().rev().cloned().collect();
        c.set_data(&base, &big2, Some(0)).await.unwrap();
        assert_eq!(c.get_data(&base).await.unwrap().0, big2);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_modes_ephemeral_container_ttl() {
    within(
        TEST_BOUND_SECS,
        "create_modes_ephemeral_container_ttl",
        async {
            let server = TestServer::shared();
            let c = server.client().await;
            let base = unique("crud-modes");
            c.create(&base, b"", &anyone()).await.unwrap();

            // Ephemeral: owned by the session.
            let eph = format!("{base}/eph");
            let (stat, _) = c
                .create(&eph, b"e", &opts(CreateMode::Ephemeral))
                .await
                .unwrap();
            assert_eq!(stat.ephemeral_owner, c.session_id().0);
            assert_eq!(
                c.check_stat(&eph).await.unwrap().unwrap().ephemeral_owner,
                c.session_id().0
            );
            // Ephemerals cannot have children, of any mode.
            for m in [
                CreateMode::Persistent,
                CreateMode::Ephemeral,
                CreateMode::PersistentSequential,
                CreateMode::EphemeralSequential,
                CreateMode::Container,
            ] {
                assert_eq!(
                    c.create(&format!("{eph}/kid"), b"", &opts(m))
                        .await
                        .unwrap_err(),
                    Error::NoChildrenForEphemerals,
                    "child of ephemeral with {m:?}"
                );
            }

            // Container (createContainer opcode): clients see ephemeralOwner 0 (ZooKeeper hides the
            // internal container marker).
            let cont = format!("{base}/cont");
            let (stat, _) = c
                .create(&cont, b"c", &opts(CreateMode::Container))
                .await
                .unwrap();
            assert_eq!(stat.ephemeral_owner, 0);
            assert_eq!(stat.data_length, 1);
            c.create(&format!("{cont}/kid"), b"", &anyone())
                .await
                .unwrap();

            // TTL (createTTL opcode): also ephemeralOwner 0 to clients.
            let ttl = format!("{base}/ttl");
            let (stat, seq) = c
                .create(&ttl, b"t", &anyone().with_ttl(Duration::from_secs(3600)))
                .await
                .unwrap();
            assert_eq!(seq.into_i64(), -1);
            assert_eq!(stat.ephemeral_owner, 0);
            assert_eq!(c.get_data(&ttl).await.unwrap().0, b"t");
            // A TTL node can have children.
            c.create(&format!("{ttl}/kid"), b"", &anyone())
                .await
                .unwrap();

            // Persistent-sequential with TTL.
            let (_, seq) = c
                .create(
                    &format!("{base}/ttlseq-"),
                    b"",
                    &opts(CreateMode::PersistentSequential).with_ttl(Duration::from_secs(3600)),
                )
                .await
                .unwrap();
            assert!(c
                .check_stat(&format!("{base}/ttlseq-{seq}"))
                .await
                .unwrap()
                .is_some());
        },
    )
    .await
}

/// ZooKeeper keeps one counter per parent: the number of children ever CREATED under it. A
/// sequential child is named prefix + %010d of that counter before the create. The cversion
/// served to clients counts creates AND deletes (2 x creates - current children), so after a
/// delete the suffix is no longer equal to the served cversion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_suffix_counts_child_creates() {
    within(
        TEST_BOUND_SECS,
        "sequential_suffix_counts_child_creates",
        async {
            let server = TestServer::shared();
            let c = server.client().await;
            let base = unique("crud-seq");
            c.create(&base, b"", &anyone()).await.unwrap();

            // No child created yet -> 0000000000.
            let (_, s0) = c
                .create(
                    &format!("{base}/s-"),
                    b"",
                    &opts(CreateMode::PersistentSequential),
                )
                .await
                .unwrap();
            assert_eq!(s0.into_i64(), 0);
            assert_eq!(s0.to_string(), "0000000000");
            assert!(c
                .check_stat(&format!("{base}/s-0000000000"))
                .await
                .unwrap()
                .is_some());
            assert_eq!(c.check_stat(&base).await.unwrap().unwrap().cversion, 1);

            // A plain child: cversion 2; deleting it: cversion 3 (a delete counts in cversion) ...
            c.create(&format!("{base}/a"), b"", &anyone())
                .await
                .unwrap();
            assert_eq!(c.check_stat(&base).await.unwrap().unwrap().cversion, 2);
            c.delete(&format!("{base}/a"), None).await.unwrap();
            assert_eq!(c.check_stat(&base).await.unwrap().unwrap().cversion, 3);
            // setData on the parent or on a child changes neither counter.
            c.set_data(&base, b"x", None).await.unwrap();
            c.set_data(&format!("{base}/s-0000000000"), b"x", None)
                .await
                .unwrap();
            assert_eq!(c.check_stat(&base).await.unwrap().unwrap().cversion, 3);

            // ... but the sequence only counts creates: two creates so far -> 0000000002.
            let (stat, s2) = c
                .create(
                    &format!("{base}/e-"),
                    b"",
                    &opts(CreateMode::EphemeralSequential),
                )
                .await
                .unwrap();
            assert_eq!(s2.into_i64(), 2);
            assert_eq!(stat.ephemeral_owner, c.session_id().0);
            assert!(c
                .check_stat(&format!("{base}/e-0000000002"))
                .await
                .unwrap()
                .is_some());
            assert_eq!(c.check_stat(&base).await.unwrap().unwrap().cversion, 4);

            // Sequential with TTL, and a bare trailing slash (the name is only the counter).
            let (_, s3) = c
                .create(
                    &format!("{base}/t-"),
                    b"",
                    &opts(CreateMode::PersistentSequential).with_ttl(Duration::from_secs(3600)),
                )
                .await
                .unwrap();
            assert_eq!(s3.into_i64(), 3);
            let (_, s4) = c
                .create(
                    &format!("{base}/"),
                    b"",
                    &opts(CreateMode::PersistentSequential),
                )
                .await
                .unwrap();
            assert_eq!(s4.into_i64(), 4);
            assert!(c
                .check_stat(&format!("{base}/0000000004"))
                .await
                .unwrap()
                .is_some());

            // Deleting a sequential child does not free its number.
            c.delete(&format!("{base}/0000000004"), None).await.unwrap();
            // Through the raw protocol: the returned path is exactly prefix + %010d.
            let mut r = server.raw();
            let (e, p) = r.create(&format!("{base}/r-"), b"", mode::PERSISTENT_SEQUENTIAL);
            assert_eq!(e, 0);
            assert_eq!(p, format!("{base}/r-0000000005"));
            let (e, p) = r.create(&format!("{base}/r-"), b"", mode::EPHEMERAL_SEQUENTIAL);
            assert_eq!(e, 0);
            assert_eq!(p, format!("{base}/r-0000000006"));
            // 7 creates, 2 deletes, 5 children.
            let st = c.check_stat(&base).await.unwrap().unwrap();
            assert_eq!((st.cversion, st.num_children), (9, 5));

            let kids = sorted(c.list_children(&base).await.unwrap());
            assert_eq!(
                kids,
                sorted(
                    [
                        "s-0000000000",
                        "e-0000000002",
                        "t-0000000003",
                        "r-0000000005",
                        "r-0000000006"
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
                )
            );
        },
    )
    .await
}

/// The server validates paths itself (the client library would refuse these locally).
/// ZooKeeper looks the parent up first, so a malformed path whose parent does not exist is NoNode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_rejects_bad_paths() {
    within(TEST_BOUND_SECS, "server_rejects_bad_paths", async {
        let server = TestServer::shared();
        let mut r = server.raw();
        let base = unique("crud-badpath");
        r.create_ok(&base, b"");

        let bad_args = [
            "".to_string(),
            "a".to_string(),
            "//".to_string(),
            "/\u{0}".to_string(),
            "/.".to_string(),
            "/..".to_string(),
            format!("{base}/"),
            format!("{base}/."),
            format!("{base}/.."),
            format!("{base}/x\u{0}y"),
        ];
        for p in &bad_args {
            for opcode in [op::CREATE, op::CREATE2] {
                let reply = r.call(opcode, &raw::create_req(p, b"", mode::PERSISTENT));
                assert_eq!(
                    reply.err,
                    err::BAD_ARGUMENTS,
                    "create({p:?}) opcode {opcode}"
                );
            }
        }
        // Parent path itself malformed -> its lookup fails first -> NoNode.
        for p in [
            format!("{base}/./b"),
            format!("{base}/../b"),
            format!("{base}//b"),
            format!("{base}/b/"),
        ] {
            let (e, _) = r.create(&p, b"", mode::PERSISTENT);
            assert_eq!(e, err::NO_NODE, "create({p:?})");
        }
        // A sequential create may end in '/': the counter becomes the name.
        let (e, p) = r.create(&format!("{base}/"), b"", mode::PERSISTENT_SEQUENTIAL);
        assert_eq!(e, 0);
        assert_eq!(p, format!("{base}/0000000000"));
        // Unknown create flags.
        let (e, _) = r.create(&format!("{base}/flags9"), b"", 9);
        assert_eq!(e, err::BAD_ARGUMENTS);
        // Nothing else was created.
        assert_eq!(
            r.get_children(&base, false),
            (0, vec!["0000000000".to_string()])
        );
    })
    .await
}

/// An ACL entry as (perms, scheme, id).
type AclSpec<'a> = (i32, &'a str, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_rejects_invalid_acls() {
    within(TEST_BOUND_SECS, "server_rejects_invalid_acls", async {
        let server = TestServer::shared();
        let mut r = server.raw();
        let base = unique("crud-badacl");
        r.create_ok(&base, b"");
        let cases: [(&str, Vec<AclSpec>); 6] = [
            ("empty", vec![]),
            ("unknown-scheme", vec![(31, "foo", "bar")]),
            ("world-not-anyone", vec![(31, "world", "bob")]),
            ("digest-no-colon", vec![(31, "digest", "nocolon")]),
            ("bad-ip", vec![(31, "ip", "300.1.1.1")]),
            ("auth-without-identity", vec![(31, "auth", "")]),
        ];
        for (name, acl) in &cases {
            let body = Enc::new()
                .str(&format!("{base}/{name}"))
                .buf(b"")
                .acls(acl)
                .i32(0)
                .bytes();
            assert_eq!(
                r.call(op::CREATE, &body).err,
                err::INVALID_ACL,
                "create with {name} ACL"
            );
            assert_eq!(
                r.call(op::CREATE2, &body).err,
                err::INVALID_ACL,
                "create2 with {name} ACL"
            );
            let body = Enc::new().str(&base).acls(acl).i32(-1).bytes();
            assert_eq!(
                r.call(op::SET_ACL, &body).err,
                err::INVALID_ACL,
                "setACL with {name} ACL"
            );
        }
        assert_eq!(r.get_children(&base, false), (0, vec![]));

        // Through the client: the server refuses unknown schemes too.
        let c = server.client().await;
        let bad = [Acl::new(Permission::ALL, AuthId::new("foo", "bar"))];
        assert_eq!(
            c.create(
                &format!("{base}/x"),
                b"",
                &CreateMode::Persistent.with_acls(Acls::new(&bad))
            )
            .await
            .unwrap_err(),
            Error::InvalidAcl
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_argument_validation() {
    within(TEST_BOUND_SECS, "ttl_argument_validation", async {
        let server = TestServer::shared();
        let mut r = server.raw();
        let base = unique("crud-ttlargs");
        r.create_ok(&base, b"");
        let cases: [(i32, i64); 8] = [
            (mode::PERSISTENT_WITH_TTL, 0),
            (mode::PERSISTENT_WITH_TTL, -5),
            (mode::PERSISTENT_SEQUENTIAL_WITH_TTL, 0),
            (mode::PERSISTENT_WITH_TTL, 1 << 41), // above the 40-bit maximum
            (mode::PERSISTENT, 1000),             // createTTL with a non-TTL mode
            (mode::EPHEMERAL, 1000),
            (mode::CONTAINER, 1000),
            (mode::PERSISTENT_SEQUENTIAL, 1000),
        ];
        for (i, (flags, ttl)) in cases.iter().enumerate() {
            let reply = r.call(
                op::CREATE_TTL,
                &raw::create_ttl_req(&format!("{base}/n{i}"), b"", *flags, *ttl),
            );
            assert_eq!(
                reply.err,
                err::BAD_ARGUMENTS,
                "createTTL flags {flags} ttl {ttl}"
            );
        }
        // TTL modes through create / create2 (no ttl field) are bad arguments as well.
        for opcode in [op::CREATE, op::CREATE2] {
            for flags in [
                mode::PERSISTENT_WITH_TTL,
                mode::PERSISTENT_SEQUENTIAL_WITH_TTL,
            ] {
                let reply = r.call(opcode, &raw::create_req(&format!("{base}/m"), b"", flags));
                assert_eq!(
                    reply.err,
                    err::BAD_ARGUMENTS,
                    "opcode {opcode} flags {flags}"
                );
            }
        }
        assert_eq!(r.get_children(&base, false), (0, vec![]));
        // A valid one: createTTL answers like create2 (path + stat).
        let reply = r.call(
            op::CREATE_TTL,
            &raw::create_ttl_req(
                &format!("{base}/ok"),
                b"v",
                mode::PERSISTENT_WITH_TTL,
                600_000,
            ),
        );
        assert_eq!(reply.err, 0);
        let mut d = Dec::new(&reply.body);
        assert_eq!(d.str(), format!("{base}/ok"));
        let st = d.stat();
        assert!(d.is_empty());
        assert_eq!(
            (st.czxid, st.data_length, st.ephemeral_owner, st.version),
            (reply.zxid, 1, 0, 0)
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_versions_and_errors() {
    within(TEST_BOUND_SECS, "delete_versions_and_errors", async {
        let server = TestServer::shared();
        let c = server.client().await;
        let base = unique("crud-delete");
        c.create(&base, b"", &anyone()).await.unwrap();
        let n = format!("{base}/n");
        c.create(&n, b"", &anyone()).await.unwrap();
        c.set_data(&n, b"1", None).await.unwrap();
        c.set_data(&n, b"2", None).await.unwrap(); // version 2

        assert_eq!(c.delete(&base, None).await.unwrap_err(), Error::NotEmpty);
        assert_eq!(c.delete(&n, Some(1)).await.unwrap_err(), Error::BadVersion);
        assert_eq!(c.delete(&n, Some(3)).await.unwrap_err(), Error::BadVersion);
        assert!(c.check_stat(&n).await.unwrap().is_some());
        c.delete(&n, Some(2)).await.unwrap();
        assert_eq!(c.check_stat(&n).await.unwrap(), None);
        assert_eq!(c.get_data(&n).await.unwrap_err(), Error::NoNode);
        assert_eq!(c.delete(&n, None).await.unwrap_err(), Error::NoNode);
        assert_eq!(
            c.delete(&n, Some(0)).await.unwrap_err(),
            Error::NoNode,
            "NoNode wins over BadVersion"
        );
        // Now empty: -1 deletes regardless of version.
        c.delete(&base, None).await.unwrap();
        assert_eq!(c.check_stat(&base).await.unwrap(), None);
        // The name can be reused; the new node starts over.
        let (s, _) = c.create(&base, b"", &anyone()).await.unwrap();
        assert_eq!((s.version, s.cversion), (0, 0));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_data_versions_and_stat() {
    within(TEST_BOUND_SECS, "set_data_versions_and_stat", async {
        let server = TestServer::shared();
        let c = server.client().await;
        let n = unique("crud-setdata");
        let (s0, _) = c.create(&n, b"abc", &anyone()).await.unwrap();

        let s1 = c.set_data(&n, b"hello world", None).await.unwrap();
        assert_eq!(s1.version, 1);
        assert_eq!(s1.data_length, 11);
        assert_eq!(s1.czxid, s0.czxid);
        assert_eq!(s1.ctime, s0.ctime);
        assert!(s1.mzxid > s0.mzxid);
        assert!(s1.mtime >= s0.mtime);
        assert_eq!(
            (s1.cversion, s1.aversion, s1.pzxid, s1.num_children),
            (0, 0, s0.pzxid, 0)
        );

        assert_eq!(
            c.set_data(&n, b"x", Some(0)).await.unwrap_err(),
            Error::BadVersion
        );
        assert_eq!(
            c.set_data(&n, b"x", Some(2)).await.unwrap_err(),
            Error::BadVersion
        );
        let s2 = c.set_data(&n, b"", Some(1)).await.unwrap();
        assert_eq!((s2.version, s2.data_length), (2, 0));
        let (data, st) = c.get_data(&n).await.unwrap();
        assert!(data.is_empty());
        assert_eq!(st, s2);
        // Same data again still bumps the version.
        let s3 = c.set_data(&n, b"", Some(2)).await.unwrap();
        assert_eq!(s3.version, 3);
        assert!(s3.mzxid > s2.mzxid);
    })
    .await
}

/// Creating/deleting a child bumps the parent's cversion and sets its pzxid to that zxid;
/// a child's setData touches neither; the parent's own version/mzxid stay put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_cversion_and_pzxid_bookkeeping() {
    within(
        TEST_BOUND_SECS,
        "parent_cversion_and_pzxid_bookkeeping",
        async {
            let server = TestServer::shared();
            let mut r = server.raw();
            let p = unique("crud-parent");
            r.create_ok(&p, b"");
            let (_, st0) = r.exists(&p, false);
            let st0 = st0.unwrap();

            let reply = r.call(
                op::CREATE,
                &raw::create_req(&format!("{p}/a"), b"", mode::PERSISTENT),
            );
            assert_eq!(reply.err, 0);
            let za = reply.zxid;
            let st1 = r.exists(&p, false).1.unwrap();
            assert_eq!((st1.cversion, st1.num_children, st1.pzxid), (1, 1, za));
            assert_eq!(
                (st1.version, st1.mzxid, st1.czxid),
                (st0.version, st0.mzxid, st0.czxid)
            );
            let sa = r.exists(&format!("{p}/a"), false).1.unwrap();
            assert_eq!(sa.czxid, za, "reply header zxid is the create's zxid");

            // Child setData: parent untouched.
            let reply = r.call(
                op::SET_DATA,
                &raw::set_data_req(&format!("{p}/a"), b"data", -1),
            );
            assert_eq!(reply.err, 0);
            assert_eq!(Dec::new(&reply.body).stat().mzxid, reply.zxid);
            assert_eq!(
                r.exists(&p, false).1.unwrap(),
                st1,
                "child setData must not touch the parent"
            );

            // Ephemeral child counts too.
            let reply = r.call(
                op::CREATE,
                &raw::create_req(&format!("{p}/e"), b"", mode::EPHEMERAL),
            );
            let ze = reply.zxid;
            let st2 = r.exists(&p, false).1.unwrap();
            assert_eq!((st2.cversion, st2.num_children, st2.pzxid), (2, 2, ze));

            // Grandchild: only the direct parent changes.
            let reply = r.call(
                op::CREATE,
                &raw::create_req(&format!("{p}/a/g"), b"", mode::PERSISTENT),
            );
            assert_eq!(reply.err, 0);
            assert_eq!(r.exists(&p, false).1.unwrap(), st2);
            let sa2 = r.exists(&format!("{p}/a"), false).1.unwrap();
            assert_eq!(
                (sa2.cversion, sa2.num_children, sa2.pzxid),
                (1, 1, reply.zxid)
            );

            // Delete a child.
            r.delete(&format!("{p}/a/g"));
            let reply = r.call(op::DELETE, &raw::delete_req(&format!("{p}/a"), -1));
            assert_eq!(reply.err, 0);
            let st3 = r.exists(&p, false).1.unwrap();
            assert_eq!(
                (st3.cversion, st3.num_children, st3.pzxid),
                (3, 1, reply.zxid)
            );
            assert_eq!((st3.version, st3.mzxid), (st0.version, st0.mzxid));

            // Failed operations change nothing.
            assert_eq!(
                r.create(&format!("{p}/e"), b"", mode::PERSISTENT).0,
                err::NODE_EXISTS
            );
            assert_eq!(r.delete(&format!("{p}/zz")), err::NO_NODE);
            assert_eq!(r.exists(&p, false).1.unwrap(), st3);

            // getChildren2 returns the same stat as exists.
            let reply = r.call(op::GET_CHILDREN2, &raw::path_watch_req(&p, false));
            let mut d = Dec::new(&reply.body);
            assert_eq!(d.strs(), vec!["e".to_string()]);
            assert_eq!(d.stat(), st3);
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_children_and_children2() {
    within(TEST_BOUND_SECS, "get_children_and_children2", async {
        let server = TestServer::shared();
        let c = server.client().await;
        let base = unique("crud-children");
        c.create(&base, b"", &anyone()).await.unwrap();
        assert_eq!(c.list_children(&base).await.unwrap(), Vec::<String>::new());
        for k in ["b", "a", "c"] {
            c.create(&format!("{base}/{k}"), b"", &anyone())
                .await
                .unwrap();
        }
        c.create(&format!("{base}/a/deep"), b"", &anyone())
            .await
            .unwrap();
        let expected = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(sorted(c.list_children(&base).await.unwrap()), expected);
        let (kids, stat) = c.get_children(&base).await.unwrap();
        assert_eq!(sorted(kids), expected);
        assert_eq!(stat, c.check_stat(&base).await.unwrap().unwrap());
        assert_eq!((stat.num_children, stat.cversion), (3, 3));
        let root = c.list_children("/").await.unwrap();
        assert!(
            root.contains(&"zookeeper".to_string()),
            "root children: {root:?}"
        );
        assert!(root.contains(&base[1..].to_string()));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_acl_set_acl_versions() {
    within(TEST_BOUND_SECS, "get_acl_set_acl_versions", async {
        let server = TestServer::shared();
        let c = server.client().await;
        let n = unique("crud-acl");
        let (s0, _) = c.create(&n, b"", &anyone()).await.unwrap();
        let (acl, st) = c.get_acl(&n).await.unwrap();
        assert_eq!(acl, vec![Acl::new(Permission::ALL, AuthId::anyone())]);
        assert_eq!(st, s0);

        let new_acl = [
            Acl::new(Permission::READ | Permission::WRITE, AuthId::anyone()),
            Acl::new(Permission::ALL, AuthId::new("ip", "127.0.0.1")),
        ];
        assert_eq!(
            c.set_acl(&n, &new_acl, Some(1)).await.unwrap_err(),
            Error::BadVersion
        );
        let s1 = c.set_acl(&n, &new_acl, Some(0)).await.unwrap();
        assert_eq!(s1.aversion, 1);
        assert_eq!(
            (s1.version, s1.cversion, s1.mzxid),
            (0, 0, s0.mzxid),
            "setACL only bumps aversion"
        );
        let (acl, st) = c.get_acl(&n).await.unwrap();
        assert_eq!(acl, new_acl.to_vec());
        assert_eq!(st.aversion, 1);
        let s2 = c.set_acl(&n, &new_acl, None).await.unwrap();
        assert_eq!(s2.aversion, 2);
        assert_eq!(
            c.set_acl(&n, &new_acl, Some(1)).await.unwrap_err(),
            Error::BadVersion
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_succeeds() {
    within(TEST_BOUND_SECS, "sync_succeeds", async {
        let server = TestServer::shared();
        let c = server.client().await;
        let n = unique("crud-sync");
        c.create(&n, b"", &anyone()).await.unwrap();
        c.sync(&n).await.unwrap();
        c.sync("/").await.unwrap();
        // ZooKeeper does not check that the path exists.
        c.sync(&format!("{n}/missing")).await.unwrap();
        // The reply echoes the path.
        let mut r = server.raw();
        let reply = r.call(op::SYNC, &Enc::new().str(&n).bytes());
        assert_eq!(reply.err, 0);
        assert_eq!(Dec::new(&reply.body).str(), n);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_zookeeper_nodes() {
    within(TEST_BOUND_SECS, "special_zookeeper_nodes", async {
        let server = TestServer::shared();
        let c = server.client().await;
        for p in ["/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
            assert!(c.check_stat(p).await.unwrap().is_some(), "{p} must exist");
        }
        let kids = sorted(c.list_children("/zookeeper").await.unwrap());
        assert!(
            kids.contains(&"quota".to_string()) && kids.contains(&"config".to_string()),
            "{kids:?}"
        );
        c.get_config().await.unwrap();
        // They cannot be deleted: ZooKeeper answers BadArguments.
        for p in ["/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
            assert_eq!(
                c.delete(p, None).await.unwrap_err(),
                SERVER_BAD_ARGS,
                "delete {p}"
            );
            assert!(c.check_stat(p).await.unwrap().is_some(), "{p} must survive");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_ephemerals_by_prefix() {
    within(TEST_BOUND_SECS, "get_ephemerals_by_prefix", async {
        let server = TestServer::shared();
        let a = server.client().await;
        let b = server.client().await;
        let base = unique("crud-ephemerals");
        a.create(&base, b"", &anyone()).await.unwrap();
        a.create(&format!("{base}/sub"), b"", &anyone())
            .await
            .unwrap();
        a.create(&format!("{base}/p"), b"", &anyone())
            .await
            .unwrap();
        for e in ["e1", "e2", "sub/e3"] {
            a.create(&format!("{base}/{e}"), b"", &opts(CreateMode::Ephemeral))
                .await
                .unwrap();
        }
        b.create(&format!("{base}/eb"), b"", &opts(CreateMode::Ephemeral))
            .await
            .unwrap();

        let mine: Vec<String> = ["e1", "e2", "sub/e3"]
            .iter()
            .map(|e| format!("{base}/{e}"))
            .collect();
        assert_eq!(sorted(a.list_ephemerals(&base).await.unwrap()), mine);
        assert_eq!(
            sorted(a.list_ephemerals("/").await.unwrap()),
            mine,
            "only this session's ephemerals"
        );
        // The prefix is a plain string prefix, not a path.
        assert_eq!(
            sorted(a.list_ephemerals(&format!("{base}/e")).await.unwrap()),
            mine[..2].to_vec()
        );
        assert_eq!(
            b.list_ephemerals(&base).await.unwrap(),
            vec![format!("{base}/eb")]
        );
        assert_eq!(
            a.list_ephemerals(&format!("{base}/nothing")).await.unwrap(),
            Vec::<String>::new()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_all_children_number_counts_descendants() {
    within(
        TEST_BOUND_SECS,
        "get_all_children_number_counts_descendants",
        async {
            let server = TestServer::shared();
            let c = server.client().await;
            let base = unique("crud-count");
            c.create(&base, b"", &anyone()).await.unwrap();
            assert_eq!(c.count_descendants_number(&base).await.unwrap(), 0);
            for p in ["a", "a/b", "a/b/c", "d"] {
                c.create(&format!("{base}/{p}"), b"", &anyone())
                    .await
                    .unwrap();
            }
            c.create(&format!("{base}/d/e"), b"", &opts(CreateMode::Ephemeral))
                .await
                .unwrap();
            assert_eq!(c.count_descendants_number(&base).await.unwrap(), 5);
            assert_eq!(
                c.count_descendants_number(&format!("{base}/a"))
                    .await
                    .unwrap(),
                2
            );
            assert_eq!(
                c.count_descendants_number(&format!("{base}/a/b/c"))
                    .await
                    .unwrap(),
                0
            );
            assert_eq!(
                c.count_descendants_number(&format!("{base}/zz"))
                    .await
                    .unwrap_err(),
                Error::NoNode
            );
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_am_i_without_auth_is_ip() {
    within(TEST_BOUND_SECS, "who_am_i_without_auth_is_ip", async {
        let server = TestServer::shared();
        let c = server.client().await;
        assert_eq!(
            c.list_auth_users().await.unwrap(),
            vec![zk::AuthUser::new("ip", "127.0.0.1")]
        );
    })
    .await
}
