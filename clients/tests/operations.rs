//! Every client operation against a real server (ZooKeeper by default).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::time::Duration;

use common::{bounded, shared_server, unique};
use rookery_client::{
    acls, perms, AddWatchMode, Client, CreateMode, CreateOptions, Error, EventType, Op, OpResult,
    ReadOp, ReadResult, WatcherType,
};

async fn client() -> Client {
    let server = shared_server();
    bounded("connect", 30, Client::connect(&server.connect_string()))
        .await
        .expect("connect")
}

async fn chrooted(root: &str) -> Client {
    let server = shared_server();
    bounded(
        "connect",
        30,
        Client::connect(&format!("{}{root}", server.connect_string())),
    )
    .await
    .expect("connect")
}

#[tokio::test]
async fn create_get_set_delete() {
    let c = client().await;
    let base = unique("crud");
    let (path, stat) = c
        .create(&base, b"hello", &CreateOptions::persistent())
        .await
        .unwrap();
    assert_eq!(path, base);
    assert_eq!(stat.version, 0);
    assert_eq!(stat.data_length, 5);
    assert_eq!(stat.ephemeral_owner, 0);
    assert!(stat.czxid > 0);

    let (data, stat2) = c.get_data(&base).await.unwrap();
    assert_eq!(data, b"hello");
    assert_eq!(stat2, stat);

    assert_eq!(
        c.create(&base, b"", &CreateOptions::persistent()).await,
        Err(Error::NodeExists)
    );
    assert_eq!(
        c.create(
            &format!("{base}/missing/child"),
            b"",
            &CreateOptions::persistent()
        )
        .await,
        Err(Error::NoNode)
    );

    let stat3 = c.set_data(&base, b"world", Some(0)).await.unwrap();
    assert_eq!(stat3.version, 1);
    assert_eq!(
        c.set_data(&base, b"x", Some(0)).await,
        Err(Error::BadVersion)
    );
    let stat4 = c.set_data(&base, b"any", None).await.unwrap();
    assert_eq!(stat4.version, 2);

    assert_eq!(c.exists(&base).await.unwrap().map(|s| s.version), Some(2));
    c.create(&format!("{base}/child"), b"", &CreateOptions::persistent())
        .await
        .unwrap();
    assert_eq!(c.delete(&base, None).await, Err(Error::NotEmpty));
    assert_eq!(
        c.delete(&format!("{base}/child"), Some(5)).await,
        Err(Error::BadVersion)
    );
    c.delete(&format!("{base}/child"), Some(0)).await.unwrap();
    c.delete(&base, Some(2)).await.unwrap();
    assert_eq!(c.exists(&base).await.unwrap(), None);
    assert_eq!(c.get_data(&base).await, Err(Error::NoNode));
    assert_eq!(c.delete(&base, None).await, Err(Error::NoNode));

    // Client-side validation: nothing is sent.
    assert!(matches!(
        c.get_data("no-slash").await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.get_data("/a/").await,
        Err(Error::InvalidArgument(_))
    ));
    c.close().await;
}

#[tokio::test]
async fn create_modes() {
    let c = client().await;
    let base = unique("modes");
    c.create(&base, b"", &CreateOptions::persistent())
        .await
        .unwrap();
    let session = c.session().session_id;
    assert_ne!(session, 0);

    let (eph, stat) = c
        .create(&format!("{base}/e"), b"", &CreateOptions::ephemeral())
        .await
        .unwrap();
    assert_eq!(stat.ephemeral_owner, session);
    assert_eq!(
        c.create(&format!("{eph}/x"), b"", &CreateOptions::persistent())
            .await,
        Err(Error::NoChildrenForEphemerals)
    );

    let (s1, _) = c
        .create(
            &format!("{base}/s-"),
            b"",
            &CreateOptions::persistent_sequential(),
        )
        .await
        .unwrap();
    let (s2, stat) = c
        .create(
            &format!("{base}/s-"),
            b"",
            &CreateOptions::ephemeral_sequential(),
        )
        .await
        .unwrap();
    assert_eq!(stat.ephemeral_owner, session);
    // Suffix: the parent's cversion before the create, %010d.
    assert_eq!(s1, format!("{base}/s-0000000001"));
    assert_eq!(s2, format!("{base}/s-0000000002"));

    let (container, stat) = c
        .create(&format!("{base}/c"), b"", &CreateOptions::container())
        .await
        .unwrap();
    // ZooKeeper 3.8 reports ephemeralOwner 0 for container and TTL nodes (the special owner
    // values stay inside the server); what matters is that they are reaped, checked below.
    assert_eq!(stat.ephemeral_owner, 0);

    let (ttl, stat) = c
        .create(
            &format!("{base}/ttl"),
            b"",
            &CreateOptions::ttl(Duration::from_millis(500), false),
        )
        .await
        .unwrap();
    assert_eq!(stat.ephemeral_owner, 0);
    let (ttl_seq, _) = c
        .create(
            &format!("{base}/ttls-"),
            b"",
            &CreateOptions::ttl(Duration::from_secs(60), true),
        )
        .await
        .unwrap();
    assert!(ttl_seq.starts_with(&format!("{base}/ttls-")));
    assert!(matches!(
        c.create(
            &format!("{base}/bad"),
            b"",
            &CreateOptions::new(CreateMode::PersistentWithTtl)
        )
        .await,
        Err(Error::InvalidArgument(_))
    ));

    // A container with a child that goes away is reaped; a TTL node with no children past its TTL too.
    c.create(&format!("{container}/k"), b"", &CreateOptions::persistent())
        .await
        .unwrap();
    c.delete(&format!("{container}/k"), None).await.unwrap();
    bounded("container and TTL reaped", 30, async {
        loop {
            let container_gone = c.exists(&container).await.unwrap().is_none();
            let ttl_gone = c.exists(&ttl).await.unwrap().is_none();
            if container_gone && ttl_gone {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;

    // Ephemerals die with the session.
    let other = client().await;
    assert!(other.exists(&eph).await.unwrap().is_some());
    let mut eph_list = c.get_ephemerals(&base).await.unwrap();
    eph_list.sort();
    assert_eq!(eph_list, vec![eph.clone(), s2.clone()]);
    c.close().await;
    // The close applied on c's member; other's may be a moment behind (sync, as ZooKeeper asks).
    other.sync(&base).await.unwrap();
    assert_eq!(other.exists(&eph).await.unwrap(), None);
    assert_eq!(other.exists(&s2).await.unwrap(), None);
    assert_eq!(c.get_data(&base).await, Err(Error::Closed));
    other.close().await;
}

#[tokio::test]
async fn children_and_counts() {
    let c = client().await;
    let base = unique("children");
    c.create(&base, b"", &CreateOptions::persistent())
        .await
        .unwrap();
    for name in ["a", "b", "c"] {
        c.create(&format!("{base}/{name}"), b"", &CreateOptions::persistent())
            .await
            .unwrap();
    }
    c.create(&format!("{base}/a/x"), b"", &CreateOptions::persistent())
        .await
        .unwrap();
    let mut children = c.get_children(&base).await.unwrap();
    children.sort();
    assert_eq!(children, vec!["a", "b", "c"]);
    let (mut children2, stat) = c.get_children2(&base).await.unwrap();
    children2.sort();
    assert_eq!(children2, children);
    assert_eq!(stat.num_children, 3);
    assert_eq!(stat.cversion, 3);
    assert_eq!(c.get_all_children_number(&base).await.unwrap(), 4);
    assert_eq!(
        c.get_children(&format!("{base}/zz")).await,
        Err(Error::NoNode)
    );

    c.delete_all(&base).await.unwrap();
    assert_eq!(c.exists(&base).await.unwrap(), None);
    c.create_all(
        &format!("{base}/p/q/r"),
        b"deep",
        &CreateOptions::persistent(),
    )
    .await
    .unwrap();
    assert_eq!(
        c.get_data(&format!("{base}/p/q/r")).await.unwrap().0,
        b"deep"
    );
    c.delete_all(&base).await.unwrap();
    c.close().await;
}

#[tokio::test]
async fn multi_and_multi_read() {
    let c = client().await;
    let base = unique("multi");
    let results = c
        .multi(vec![
            Op::create(&base, b"root".to_vec(), CreateOptions::persistent()),
            Op::create(
                format!("{base}/a"),
                b"1".to_vec(),
                CreateOptions::persistent(),
            ),
            Op::create(
                format!("{base}/s-"),
                b"".to_vec(),
                CreateOptions::persistent_sequential(),
            ),
            Op::set_data(format!("{base}/a"), b"2".to_vec(), Some(0)),
            Op::check(format!("{base}/a"), 1),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 5);
    assert!(matches!(&results[0], OpResult::Create { path, .. } if *path == base));
    assert!(
        matches!(&results[2], OpResult::Create { path, .. } if path.starts_with(&format!("{base}/s-")))
    );
    assert!(matches!(&results[3], OpResult::SetData { stat } if stat.version == 1));
    assert_eq!(results[4], OpResult::Check);

    // All or nothing: the failing op's index and error are reported, nothing applies.
    let err = c
        .multi(vec![
            Op::create(
                format!("{base}/b"),
                b"".to_vec(),
                CreateOptions::persistent(),
            ),
            Op::check(format!("{base}/a"), 0),
            Op::delete(format!("{base}/a"), None),
        ])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::MultiFailed {
            index: 1,
            source: Box::new(Error::BadVersion)
        }
    );
    assert_eq!(c.exists(&format!("{base}/b")).await.unwrap(), None);

    c.check(&format!("{base}/a"), 1).await.unwrap();
    assert_eq!(
        c.check(&format!("{base}/a"), 7).await,
        Err(Error::BadVersion)
    );
    assert_eq!(
        c.check(&format!("{base}/nope"), 0).await,
        Err(Error::NoNode)
    );

    let reads = c
        .multi_read(vec![
            ReadOp::GetData(format!("{base}/a")),
            ReadOp::GetChildren(base.clone()),
            ReadOp::GetData(format!("{base}/missing")),
        ])
        .await
        .unwrap();
    assert!(
        matches!(&reads[0], Ok(ReadResult::Data { data, stat }) if data == b"2" && stat.version == 1)
    );
    assert!(matches!(&reads[1], Ok(ReadResult::Children(ch)) if ch.len() == 2));
    assert_eq!(reads[2], Err(Error::NoNode));

    let results = c
        .multi(vec![
            Op::delete(format!("{base}/a"), Some(1)),
            Op::delete(
                match &results[2] {
                    OpResult::Create { path, .. } => path.clone(),
                    other => panic!("{other:?}"),
                },
                None,
            ),
            Op::delete(&base, None),
        ])
        .await
        .unwrap();
    assert_eq!(results, vec![OpResult::Delete; 3]);
    c.close().await;
}

#[tokio::test]
async fn acl_and_auth() {
    let c = client().await;
    let base = unique("acl");
    let (acl, _) = c.get_acl("/").await.unwrap();
    assert_eq!(acl, acls::open_unsafe());

    c.create(&base, b"secret", &CreateOptions::persistent())
        .await
        .unwrap();
    c.add_auth("digest", "alice:pw").await.unwrap();
    let who = c.whoami().await.unwrap();
    assert!(
        who.iter()
            .any(|i| i.auth_scheme == "digest" && i.user == "alice"),
        "{who:?}"
    );

    let digest = acls::digest_id("alice", "pw");
    let new_acl = acls::parse_acl_list(&format!("digest:{digest}:cdrwa,world:anyone:r")).unwrap();
    let stat = c.set_acl(&base, &new_acl, Some(0)).await.unwrap();
    assert_eq!(stat.aversion, 1);
    assert_eq!(
        c.set_acl(&base, &new_acl, Some(0)).await,
        Err(Error::BadVersion)
    );
    let (acl, stat) = c.get_acl(&base).await.unwrap();
    assert_eq!(acl, new_acl);
    assert_eq!(stat.aversion, 1);

    // Another session can read but not write.
    let other = client().await;
    assert_eq!(other.get_data(&base).await.unwrap().0, b"secret");
    assert_eq!(other.set_data(&base, b"x", None).await, Err(Error::NoAuth));
    other.add_auth("digest", "alice:pw").await.unwrap();
    other.set_data(&base, b"x", None).await.unwrap();

    // creator_all ("auth" scheme) needs an authenticated session.
    let child = format!("{base}/mine");
    c.create(
        &child,
        b"",
        &CreateOptions::persistent().with_acl(acls::creator_all()),
    )
    .await
    .unwrap();
    let (acl, _) = c.get_acl(&child).await.unwrap();
    assert_eq!(acl[0].id.scheme, "digest");
    assert_eq!(acl[0].perms, perms::ALL);
    let anon = client().await;
    assert_eq!(anon.get_data(&child).await, Err(Error::NoAuth));
    assert_eq!(
        anon.create(
            &format!("{base}/e"),
            b"",
            &CreateOptions::persistent().with_acl(vec![])
        )
        .await,
        Err(Error::InvalidAcl)
    );

    // Credentials given to the builder are sent before anything else.
    let bob = bounded(
        "connect",
        30,
        Client::builder(shared_server().connect_string())
            .auth("digest", "alice:pw")
            .connect(),
    )
    .await
    .unwrap();
    assert_eq!(bob.get_data(&child).await.unwrap().0, b"");

    c.delete_all(&base).await.unwrap();
    for x in [c, other, anon, bob] {
        x.close().await;
    }
}

#[tokio::test]
async fn oneshot_watches() {
    let c = client().await;
    let writer = client().await;
    let base = unique("watch");
    c.create(&base, b"v0", &CreateOptions::persistent())
        .await
        .unwrap();

    // Data watch fires on change, exactly once.
    let (data, _, w) = c.get_data_w(&base).await.unwrap();
    assert_eq!(data, b"v0");
    writer.set_data(&base, b"v1", None).await.unwrap();
    let ev = bounded("data watch", 10, w.changed()).await;
    assert_eq!(ev.event_type, EventType::NodeDataChanged);
    assert_eq!(ev.path, base);

    // Exists watch on a missing node fires on creation.
    let missing = format!("{base}/later");
    let (stat, w) = c.exists_w(&missing).await.unwrap();
    assert!(stat.is_none());
    writer
        .create(&missing, b"", &CreateOptions::persistent())
        .await
        .unwrap();
    let ev = bounded("exists watch", 10, w.changed()).await;
    assert_eq!(ev.event_type, EventType::NodeCreated);
    assert_eq!(ev.path, missing);

    // Exists watch on an existing node fires on deletion.
    let (stat, w) = c.exists_w(&missing).await.unwrap();
    assert!(stat.is_some());
    // Child watch on the parent fires too.
    let (children, cw) = c.get_children_w(&base).await.unwrap();
    assert_eq!(children, vec!["later"]);
    let (_, _, cw2) = c.get_children2_w(&base).await.unwrap();
    writer.delete(&missing, None).await.unwrap();
    let ev = bounded("exists watch (delete)", 10, w.changed()).await;
    assert_eq!(ev.event_type, EventType::NodeDeleted);
    let ev = bounded("child watch", 10, cw.changed()).await;
    assert_eq!(ev.event_type, EventType::NodeChildrenChanged);
    assert_eq!(ev.path, base);
    assert_eq!(bounded("child watch 2", 10, cw2.changed()).await, ev);

    // Several watchers of the same node all fire; a dropped one is harmless.
    let (_, _, w1) = c.get_data_w(&base).await.unwrap();
    let (_, _, w2) = c.get_data_w(&base).await.unwrap();
    let (_, _, dropped) = c.get_data_w(&base).await.unwrap();
    drop(dropped);
    writer.delete(&base, None).await.unwrap();
    assert_eq!(
        bounded("w1", 10, w1.changed()).await.event_type,
        EventType::NodeDeleted
    );
    assert_eq!(
        bounded("w2", 10, w2.changed()).await.event_type,
        EventType::NodeDeleted
    );

    // A failed read arms nothing.
    assert_eq!(c.get_data_w(&base).await.err(), Some(Error::NoNode));

    // Closing the client resolves outstanding watchers with a session-end event.
    let (_, w) = c.exists_w(&base).await.unwrap();
    c.close().await;
    let ev = bounded("watch on close", 10, w.changed()).await;
    assert_eq!(ev.event_type, EventType::None);
    writer.close().await;
}

#[tokio::test]
async fn persistent_and_recursive_watches() {
    let c = client().await;
    let writer = client().await;
    let base = unique("pwatch");
    c.create(&base, b"", &CreateOptions::persistent())
        .await
        .unwrap();

    // ZooKeeper keeps one watch mode per (session, path), so the two kinds go on different nodes.
    let sub = format!("{base}/a");
    let mut recursive = c
        .add_watch(&base, AddWatchMode::PersistentRecursive)
        .await
        .unwrap();
    writer
        .create(&sub, b"", &CreateOptions::persistent())
        .await
        .unwrap();
    // In ensemble mode `c` may sit on another member than the writer: until that member has
    // applied the create, a watch added there would still see it as a NodeCreated.
    c.sync(&sub).await.unwrap();
    let mut persistent = c.add_watch(&sub, AddWatchMode::Persistent).await.unwrap();
    c.check_watches(&base, WatcherType::Any).await.unwrap();

    writer.set_data(&base, b"1", None).await.unwrap();
    writer.set_data(&sub, b"1", None).await.unwrap();
    writer
        .create(&format!("{sub}/b"), b"", &CreateOptions::persistent())
        .await
        .unwrap();
    writer
        .set_data(&format!("{sub}/b"), b"2", None)
        .await
        .unwrap();
    writer.delete(&format!("{sub}/b"), None).await.unwrap();
    writer.set_data(&sub, b"3", None).await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..4 {
        let ev = bounded("persistent", 10, persistent.next()).await.unwrap();
        seen.push((ev.event_type, ev.path));
    }
    assert_eq!(
        seen,
        vec![
            (EventType::NodeDataChanged, sub.clone()),
            (EventType::NodeChildrenChanged, sub.clone()),
            (EventType::NodeChildrenChanged, sub.clone()),
            (EventType::NodeDataChanged, sub.clone()),
        ]
    );
    let mut seen = Vec::new();
    for _ in 0..7 {
        let ev = bounded("recursive", 10, recursive.next()).await.unwrap();
        seen.push((ev.event_type, ev.path));
    }
    assert_eq!(
        seen,
        vec![
            (EventType::NodeCreated, sub.clone()),
            (EventType::NodeDataChanged, base.clone()),
            (EventType::NodeDataChanged, sub.clone()),
            (EventType::NodeCreated, format!("{sub}/b")),
            (EventType::NodeDataChanged, format!("{sub}/b")),
            (EventType::NodeDeleted, format!("{sub}/b")),
            (EventType::NodeDataChanged, sub.clone()),
        ]
    );

    // Removing watches: the server forgets them and local watchers are told.
    let other = format!("{base}-other");
    c.create(&other, b"", &CreateOptions::persistent())
        .await
        .unwrap();
    let (_, _, data_watch) = c.get_data_w(&other).await.unwrap();
    c.remove_watches(&other, WatcherType::Data).await.unwrap();
    assert_eq!(
        bounded("removed", 10, data_watch.changed())
            .await
            .event_type,
        EventType::DataWatchRemoved
    );
    assert_eq!(
        c.remove_watches(&other, WatcherType::Data).await,
        Err(Error::NoWatcher)
    );
    assert_eq!(
        c.check_watches(&other, WatcherType::Children).await,
        Err(Error::NoWatcher)
    );
    let (_, child_watch) = c.get_children_w(&other).await.unwrap();
    c.check_watches(&other, WatcherType::Children)
        .await
        .unwrap();
    c.remove_watches(&other, WatcherType::Any).await.unwrap();
    assert_eq!(
        bounded("child removed", 10, child_watch.changed())
            .await
            .event_type,
        EventType::ChildWatchRemoved
    );
    c.delete(&other, None).await.unwrap();

    c.remove_watches(&sub, WatcherType::Any).await.unwrap();
    assert_eq!(
        bounded("persistent removed", 10, persistent.next())
            .await
            .map(|e| e.event_type),
        Some(EventType::PersistentWatchRemoved)
    );
    assert_eq!(
        bounded("persistent ends", 10, persistent.next()).await,
        None
    );
    c.remove_watches(&base, WatcherType::Any).await.unwrap();
    assert_eq!(
        bounded("recursive removed", 10, recursive.next())
            .await
            .map(|e| e.event_type),
        Some(EventType::PersistentWatchRemoved)
    );
    assert_eq!(
        c.check_watches(&base, WatcherType::Any).await,
        Err(Error::NoWatcher)
    );

    c.delete_all(&base).await.unwrap();
    c.close().await;
    writer.close().await;
}

#[tokio::test]
async fn chroot_is_applied_and_stripped() {
    let root = unique("chroot");
    let plain = client().await;
    plain
        .create(&root, b"", &CreateOptions::persistent())
        .await
        .unwrap();
    let c = chrooted(&root).await;
    assert_eq!(c.chroot(), Some(root.as_str()));

    let (path, _) = c
        .create("/a", b"x", &CreateOptions::persistent())
        .await
        .unwrap();
    assert_eq!(path, "/a");
    // Another client's write: on an ensemble the two may sit on different members, and
    // ZooKeeper's rule is to sync before reading it.
    plain.sync(&root).await.unwrap();
    assert_eq!(plain.get_data(&format!("{root}/a")).await.unwrap().0, b"x");
    let (seq, _) = c
        .create("/s-", b"", &CreateOptions::ephemeral_sequential())
        .await
        .unwrap();
    assert!(seq.starts_with("/s-"), "{seq}");
    assert_eq!(c.get_ephemerals("/").await.unwrap(), vec![seq.clone()]);
    let mut children = c.get_children("/").await.unwrap();
    children.sort();
    assert_eq!(children.len(), 2);
    assert_eq!(c.sync("/a").await.unwrap(), "/a");

    let (_, _, w) = c.get_data_w("/a").await.unwrap();
    let mut rec = c
        .add_watch("/", AddWatchMode::PersistentRecursive)
        .await
        .unwrap();
    plain
        .set_data(&format!("{root}/a"), b"y", None)
        .await
        .unwrap();
    let ev = bounded("chroot watch", 10, w.changed()).await;
    assert_eq!(ev.path, "/a");
    let ev = bounded("chroot recursive", 10, rec.next()).await.unwrap();
    assert_eq!(ev.path, "/a");

    let results = c
        .multi(vec![Op::create(
            "/m",
            b"".to_vec(),
            CreateOptions::persistent(),
        )])
        .await
        .unwrap();
    assert!(matches!(&results[0], OpResult::Create { path, .. } if path == "/m"));

    // get_config ignores the chroot.
    let (_config, _) = c.get_config().await.unwrap();
    c.close().await;
    plain.delete_all(&root).await.unwrap();
    plain.close().await;
}

#[tokio::test]
async fn pipelining_many_requests_in_flight() {
    let c = client().await;
    let base = unique("pipeline");
    c.create(&base, b"", &CreateOptions::persistent())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let futures: Vec<_> = (0..500)
        .map(|i| {
            let c = c.clone();
            let path = format!("{base}/n{i}");
            async move {
                c.create(
                    &path,
                    format!("{i}").as_bytes(),
                    &CreateOptions::persistent(),
                )
                .await
                .map(|(p, _)| p)
            }
        })
        .collect();
    let created = bounded("500 creates", 60, futures::future::join_all(futures)).await;
    assert!(created.iter().all(|r| r.is_ok()));
    let reads: Vec<_> = (0..500)
        .map(|i| {
            let c = c.clone();
            let path = format!("{base}/n{i}");
            async move { c.get_data(&path).await.map(|(d, _)| (i, d)) }
        })
        .collect();
    for r in bounded("500 reads", 60, futures::future::join_all(reads)).await {
        let (i, d) = r.unwrap();
        assert_eq!(d, format!("{i}").as_bytes());
    }
    tracing::info!(elapsed = ?started.elapsed(), "pipelined");
    assert_eq!(c.get_all_children_number(&base).await.unwrap(), 500);
    c.delete_all(&base).await.unwrap();
    c.close().await;
}

#[tokio::test]
async fn config_whoami_sync_and_states() {
    let c = client().await;
    assert!(c.state().is_connected());
    let info = c.session();
    assert!(info.timeout >= Duration::from_secs(1));
    assert_eq!(info.password.len(), 16);
    let who = c.whoami().await.unwrap();
    assert!(who.iter().any(|i| i.auth_scheme == "ip"), "{who:?}");
    c.sync("/").await.unwrap();
    let (_data, stat) = c.get_config().await.unwrap();
    assert!(stat.czxid >= 0);
    let mut events = c.state_events();
    c.close().await;
    assert_eq!(
        bounded("closed event", 10, events.next()).await,
        Some(rookery_client::SessionState::Closed)
    );
}

#[tokio::test]
async fn unreachable_server_fails_connect_in_time() {
    let port = common::free_port();
    let started = std::time::Instant::now();
    let result = Client::builder(format!("127.0.0.1:{port}"))
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    assert!(matches!(result, Err(Error::Connect(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn request_timeout_while_disconnected() {
    let proxy = common::Proxy::start(shared_server().port).await;
    let c = bounded(
        "connect",
        30,
        Client::builder(proxy.connect_string())
            .request_timeout(Duration::from_millis(800))
            .connect(),
    )
    .await
    .unwrap();
    proxy.block();
    let err = bounded("timeout", 10, c.get_data("/")).await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout | Error::ConnectionLoss),
        "{err:?}"
    );
    let err = bounded("timeout 2", 10, c.get_data("/")).await.unwrap_err();
    assert_eq!(err, Error::Timeout);
    proxy.unblock();
    bounded("reconnect", 30, c.wait_connected(Duration::from_secs(25)))
        .await
        .unwrap();
    c.get_data("/").await.unwrap();
    c.close().await;
}
