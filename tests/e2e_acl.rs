//! ACLs and authentication: digest (addAuth), world, ip (address and CIDR), the `auth` scheme,
//! NoAuth on every protected operation, per-permission checks, unknown auth scheme -> AuthFailed,
//! the super digest, whoAmI.
//!
//! Against ZooKeeper: `E2E_TARGET=zk cargo test --test e2e_acl`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::time::Duration;

use common::raw::{self, decode_multi, err, multi_req, op, Enc, MultiResult};
use common::*;
use zookeeper_client::{
    self as zk, Acl, Acls, AuthId, AuthUser, CreateMode, Error, MultiReadResult, MultiWriteError,
    Permission, SessionState,
};

fn alice_acl() -> [Acl; 1] {
    [Acl::new(Permission::ALL, AuthId::new("digest", ALICE_ID))]
}

async fn alice(server: &TestServer) -> zk::Client {
    server
        .client_with(zk::Client::connector().with_auth("digest", ALICE_AUTH))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_acl_enforced_on_every_protected_op() {
    within(
        TEST_BOUND_SECS,
        "digest_acl_enforced_on_every_protected_op",
        async {
            let server = TestServer::shared();
            let a = alice(server).await;
            let anon = server.client().await;
            let bob = server.client().await;
            within(10, "addAuth bob", bob.auth("digest", BOB_AUTH))
                .await
                .unwrap();
            // A wrong password is accepted by addAuth but yields a different identity.
            let wrong = server.client().await;
            within(
                10,
                "addAuth alice:wrong",
                wrong.auth("digest", b"alice:wrong"),
            )
            .await
            .unwrap();

            let base = unique("acl-digest");
            a.create(&base, b"", &anyone()).await.unwrap();
            let n = format!("{base}/n");
            let acl = alice_acl();
            a.create(
                &n,
                b"secret",
                &CreateMode::Persistent.with_acls(Acls::new(&acl)),
            )
            .await
            .unwrap();
            a.create(&format!("{n}/kid"), b"", &anyone()).await.unwrap();

            for (who, c) in [("anonymous", &anon), ("bob", &bob), ("alice:wrong", &wrong)] {
                assert_eq!(
                    c.get_data(&n).await.unwrap_err(),
                    Error::NoAuth,
                    "{who} getData"
                );
                assert_eq!(
                    c.get_and_watch_data(&n).await.unwrap_err(),
                    Error::NoAuth,
                    "{who} getData+watch"
                );
                assert_eq!(
                    c.set_data(&n, b"x", None).await.unwrap_err(),
                    Error::NoAuth,
                    "{who} setData"
                );
                assert_eq!(
                    c.list_children(&n).await.unwrap_err(),
                    Error::NoAuth,
                    "{who} getChildren"
                );
                assert_eq!(
                    c.get_children(&n).await.unwrap_err(),
                    Error::NoAuth,
                    "{who} getChildren2"
                );
                assert_eq!(
                    c.get_acl(&n).await.unwrap_err(),
                    Error::NoAuth,
                    "{who} getACL"
                );
                assert_eq!(
                    c.set_acl(&n, &acl, None).await.unwrap_err(),
                    Error::NoAuth,
                    "{who} setACL"
                );
                assert_eq!(
                    c.create(&format!("{n}/x"), b"", &anyone())
                        .await
                        .unwrap_err(),
                    Error::NoAuth,
                    "{who} create child"
                );
                assert_eq!(
                    c.delete(&format!("{n}/kid"), None).await.unwrap_err(),
                    Error::NoAuth,
                    "{who} delete child"
                );
                assert_eq!(
                    c.count_descendants_number(&n).await.unwrap_err(),
                    Error::NoAuth,
                    "{who} getAllChildrenNumber"
                );
                let mut rd = c.new_multi_reader();
                rd.add_get_data(&n).unwrap();
                rd.add_get_children(&n).unwrap();
                let res = rd.commit().await.unwrap();
                assert!(
                    matches!(res[0], MultiReadResult::Error { err: Error::NoAuth }),
                    "{who} multiRead {res:?}"
                );
                assert!(
                    matches!(res[1], MultiReadResult::Error { err: Error::NoAuth }),
                    "{who} multiRead {res:?}"
                );
                let mut w = c.new_multi_writer();
                w.add_check_version(&n, 0).unwrap();
                assert_eq!(
                    w.commit().await.unwrap_err(),
                    MultiWriteError::OperationFailed {
                        index: 0,
                        source: Error::NoAuth
                    },
                    "{who} check"
                );
                let mut w = c.new_multi_writer();
                w.add_set_data(&n, b"x", None).unwrap();
                assert_eq!(
                    w.commit().await.unwrap_err(),
                    MultiWriteError::OperationFailed {
                        index: 0,
                        source: Error::NoAuth
                    },
                    "{who} multi"
                );
                // Not protected: exists, sync; the world-readable child.
                assert!(c.check_stat(&n).await.unwrap().is_some(), "{who} exists");
                c.sync(&n).await.unwrap();
                c.get_data(&format!("{n}/kid")).await.unwrap();
            }

            // Alice can do everything.
            assert_eq!(a.get_data(&n).await.unwrap().0, b"secret");
            a.set_data(&n, b"s2", None).await.unwrap();
            assert_eq!(
                sorted(a.list_children(&n).await.unwrap()),
                vec!["kid".to_string()]
            );
            assert_eq!(a.get_acl(&n).await.unwrap().0, acl.to_vec());
            a.create(&format!("{n}/x"), b"", &anyone()).await.unwrap();
            a.delete(&format!("{n}/kid"), None).await.unwrap();
            assert_eq!(a.count_descendants_number(&n).await.unwrap(), 1);
            a.set_acl(&n, &acl, Some(0)).await.unwrap();

            // Deleting the protected node itself needs DELETE on the (world) parent only.
            assert_eq!(
                anon.delete(&format!("{n}/x"), None).await.unwrap_err(),
                Error::NoAuth
            );
            a.delete(&format!("{n}/x"), None).await.unwrap();
            anon.delete(&n, None).await.unwrap();
            assert_eq!(a.check_stat(&n).await.unwrap(), None);
        },
    )
    .await
}

/// Each permission bit gates exactly its operations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_bits() {
    within(TEST_BOUND_SECS, "permission_bits", async {
        let server = TestServer::shared();
        let owner = server.client().await;
        let c = server.client().await;
        let base = unique("acl-perms");
        owner.create(&base, b"", &anyone()).await.unwrap();
        // Build each node with ALL, add a child, then restrict with setACL.
        let mk = |name: &str| format!("{base}/{name}");
        for name in ["read", "write", "create", "delete", "admin", "none"] {
            owner.create(&mk(name), b"d", &anyone()).await.unwrap();
            owner
                .create(&format!("{}/kid", mk(name)), b"", &anyone())
                .await
                .unwrap();
        }
        let set = |perm: Permission| [Acl::new(perm, AuthId::anyone())];
        for (name, perm) in [
            ("read", Permission::READ),
            ("write", Permission::WRITE),
            ("create", Permission::CREATE),
            ("delete", Permission::DELETE),
            ("admin", Permission::ADMIN),
            ("none", Permission::NONE),
        ] {
            owner.set_acl(&mk(name), &set(perm), None).await.unwrap();
        }

        // READ: getData, getChildren, getACL.
        c.get_data(&mk("read")).await.unwrap();
        c.list_children(&mk("read")).await.unwrap();
        c.get_acl(&mk("read")).await.unwrap();
        assert_eq!(
            c.set_data(&mk("read"), b"", None).await.unwrap_err(),
            Error::NoAuth
        );
        assert_eq!(
            c.create(&format!("{}/x", mk("read")), b"", &anyone())
                .await
                .unwrap_err(),
            Error::NoAuth
        );
        assert_eq!(
            c.delete(&format!("{}/kid", mk("read")), None)
                .await
                .unwrap_err(),
            Error::NoAuth
        );
        assert_eq!(
            c.set_acl(&mk("read"), &set(Permission::ALL), None)
                .await
                .unwrap_err(),
            Error::NoAuth
        );

        // WRITE: setData only.
        c.set_data(&mk("write"), b"w", None).await.unwrap();
        assert_eq!(c.get_data(&mk("write")).await.unwrap_err(), Error::NoAuth);
        assert_eq!(
            c.list_children(&mk("write")).await.unwrap_err(),
            Error::NoAuth
        );
        assert_eq!(c.get_acl(&mk("write")).await.unwrap_err(), Error::NoAuth);

        // CREATE: create children only.
        c.create(&format!("{}/x", mk("create")), b"", &anyone())
            .await
            .unwrap();
        assert_eq!(c.get_data(&mk("create")).await.unwrap_err(), Error::NoAuth);
        assert_eq!(
            c.delete(&format!("{}/x", mk("create")), None)
                .await
                .unwrap_err(),
            Error::NoAuth
        );

        // DELETE: delete children only.
        c.delete(&format!("{}/kid", mk("delete")), None)
            .await
            .unwrap();
        assert_eq!(c.get_data(&mk("delete")).await.unwrap_err(), Error::NoAuth);
        assert_eq!(
            c.create(&format!("{}/x", mk("delete")), b"", &anyone())
                .await
                .unwrap_err(),
            Error::NoAuth
        );

        // ADMIN: getACL and setACL (getACL needs READ or ADMIN).
        assert_eq!(
            c.get_acl(&mk("admin")).await.unwrap().0,
            set(Permission::ADMIN).to_vec()
        );
        assert_eq!(c.get_data(&mk("admin")).await.unwrap_err(), Error::NoAuth);
        c.set_acl(&mk("admin"), &set(Permission::ALL), None)
            .await
            .unwrap();
        c.get_data(&mk("admin")).await.unwrap();

        // No permission at all.
        assert_eq!(c.get_acl(&mk("none")).await.unwrap_err(), Error::NoAuth);
        assert_eq!(c.get_data(&mk("none")).await.unwrap_err(), Error::NoAuth);
        assert!(c.check_stat(&mk("none")).await.unwrap().is_some());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_acls() {
    within(TEST_BOUND_SECS, "ip_acls", async {
        let server = TestServer::shared();
        let c = server.client().await;
        let base = unique("acl-ip");
        c.create(&base, b"", &anyone()).await.unwrap();
        for (id, allowed) in [
            ("127.0.0.1", true),
            ("127.0.0.0/8", true),
            ("127.0.0.1/32", true),
            ("0.0.0.0/0", true),
            ("10.0.0.0/8", false),
            ("10.1.2.3", false),
            ("127.0.0.2", false),
        ] {
            let p = format!("{base}/{}", id.replace('/', "_"));
            let acl = [Acl::new(Permission::ALL, AuthId::new("ip", id))];
            c.create(&p, b"d", &CreateMode::Persistent.with_acls(Acls::new(&acl)))
                .await
                .unwrap();
            match c.get_data(&p).await {
                Ok((d, _)) => assert!(allowed && d == b"d", "ip:{id} must deny 127.0.0.1"),
                Err(e) => assert!(!allowed && e == Error::NoAuth, "ip:{id}: {e}"),
            }
            match c.set_data(&p, b"e", None).await {
                Ok(_) => assert!(allowed, "ip:{id} must deny setData"),
                Err(e) => assert!(!allowed && e == Error::NoAuth, "ip:{id}: {e}"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_scheme_expands_to_session_identities() {
    within(
        TEST_BOUND_SECS,
        "auth_scheme_expands_to_session_identities",
        async {
            let server = TestServer::shared();
            let a = alice(server).await;
            let anon = server.client().await;
            let base = unique("acl-auth");
            a.create(&base, b"", &anyone()).await.unwrap();
            let n = format!("{base}/n");
            a.create(
                &n,
                b"",
                &CreateMode::Persistent.with_acls(Acls::creator_all()),
            )
            .await
            .unwrap();
            assert_eq!(a.get_acl(&n).await.unwrap().0, alice_acl().to_vec());
            assert_eq!(anon.get_data(&n).await.unwrap_err(), Error::NoAuth);
            // No authenticated identity -> the `auth` scheme is an invalid ACL.
            assert_eq!(
                anon.create(
                    &format!("{base}/m"),
                    b"",
                    &CreateMode::Persistent.with_acls(Acls::creator_all())
                )
                .await
                .unwrap_err(),
                Error::InvalidAcl
            );
            // Two identities -> two ACL entries.
            let ab = server
                .client_with(
                    zk::Client::connector()
                        .with_auth("digest", ALICE_AUTH)
                        .with_auth("digest", BOB_AUTH),
                )
                .await;
            let m = format!("{base}/both");
            ab.create(
                &m,
                b"",
                &CreateMode::Persistent.with_acls(Acls::creator_all()),
            )
            .await
            .unwrap();
            let mut got = ab.get_acl(&m).await.unwrap().0;
            got.sort_by(|x, y| x.id().cmp(y.id()));
            assert_eq!(
                got,
                vec![
                    Acl::new(Permission::ALL, AuthId::new("digest", ALICE_ID)),
                    Acl::new(Permission::ALL, AuthId::new("digest", BOB_ID))
                ]
            );
            // setACL with `auth` works the same way.
            a.set_acl(
                &base.to_string(),
                &[Acl::new(Permission::ALL, AuthId::authed())],
                None,
            )
            .await
            .unwrap();
            assert_eq!(a.get_acl(&base).await.unwrap().0, alice_acl().to_vec());
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_auth_scheme_fails_the_session() {
    within(
        TEST_BOUND_SECS,
        "unknown_auth_scheme_fails_the_session",
        async {
            let server = TestServer::shared();
            // Client view: the auth request fails and the session ends in AuthFailed.
            let c = server.client().await;
            let mut state = c.state_watcher();
            assert_eq!(
                within(10, "auth", c.auth("nosuchscheme", b"whatever"))
                    .await
                    .unwrap_err(),
                Error::AuthFailed
            );
            let st = within(10, "state change", async {
                loop {
                    let s = state.changed().await;
                    if s.is_terminated() {
                        return s;
                    }
                }
            })
            .await;
            assert_eq!(st, SessionState::AuthFailed);
            assert_eq!(c.get_data("/").await.unwrap_err(), Error::AuthFailed);

            // Wire view: reply xid -4 with AuthFailed (-115), then the server closes the connection.
            let mut r = server.raw();
            r.send_xid(
                -4,
                op::AUTH,
                &Enc::new().i32(0).str("nosuchscheme").buf(b"x").bytes(),
            );
            let reply = r.next_reply(Duration::from_secs(10)).expect("auth reply");
            assert_eq!((reply.xid, reply.err), (-4, err::AUTH_FAILED));
            assert!(
                r.wait_closed(Duration::from_secs(10)),
                "connection must be closed after AuthFailed"
            );

            // A good digest auth on the wire: reply xid -4, err 0, connection stays.
            let mut r = server.raw();
            r.send_xid(
                -4,
                op::AUTH,
                &Enc::new().i32(0).str("digest").buf(ALICE_AUTH).bytes(),
            );
            let reply = r.next_reply(Duration::from_secs(10)).expect("auth reply");
            assert_eq!((reply.xid, reply.err), (-4, 0));
            r.ping();
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn super_digest_bypasses_acls() {
    within(TEST_BOUND_SECS, "super_digest_bypasses_acls", async {
        let server = TestServer::shared();
        let a = alice(server).await;
        let su = server
            .client_with(zk::Client::connector().with_auth(
                "digest",
                format!("{SUPER_USER}:{SUPER_PASSWORD}").as_bytes(),
            ))
            .await;
        let base = unique("acl-super");
        a.create(&base, b"", &anyone()).await.unwrap();
        let n = format!("{base}/n");
        let acl = alice_acl();
        a.create(
            &n,
            b"secret",
            &CreateMode::Persistent.with_acls(Acls::new(&acl)),
        )
        .await
        .unwrap();
        let none = format!("{base}/none");
        a.create(&none, b"", &anyone()).await.unwrap();
        a.set_acl(&none, &[Acl::new(Permission::NONE, AuthId::anyone())], None)
            .await
            .unwrap();

        assert_eq!(su.get_data(&n).await.unwrap().0, b"secret");
        su.set_data(&n, b"by-super", None).await.unwrap();
        su.create(&format!("{n}/k"), b"", &anyone()).await.unwrap();
        assert_eq!(su.list_children(&n).await.unwrap(), vec!["k".to_string()]);
        su.delete(&format!("{n}/k"), None).await.unwrap();
        assert_eq!(su.get_acl(&n).await.unwrap().0, acl.to_vec());
        su.get_data(&none).await.unwrap();
        su.set_acl(&none, &[Acl::new(Permission::READ, AuthId::anyone())], None)
            .await
            .unwrap();
        let anon = server.client().await;
        anon.get_data(&none).await.unwrap();

        let mut users = su.list_auth_users().await.unwrap();
        users.sort_by(|x, y| (x.scheme(), x.user()).cmp(&(y.scheme(), y.user())));
        assert!(
            users.contains(&AuthUser::new("digest", "super")),
            "{users:?}"
        );
        // A wrong super password is just another digest identity.
        let wrong = server
            .client_with(zk::Client::connector().with_auth("digest", b"super:nope"))
            .await;
        assert_eq!(wrong.get_data(&n).await.unwrap_err(), Error::NoAuth);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_am_i_lists_identities() {
    within(TEST_BOUND_SECS, "who_am_i_lists_identities", async {
        let server = TestServer::shared();
        let c = server.client().await;
        assert_eq!(
            c.list_auth_users().await.unwrap(),
            vec![AuthUser::new("ip", "127.0.0.1")]
        );
        within(10, "addAuth alice", c.auth("digest", ALICE_AUTH))
            .await
            .unwrap();
        let mut users = c.list_auth_users().await.unwrap();
        users.sort_by(|x, y| (x.scheme(), x.user()).cmp(&(y.scheme(), y.user())));
        assert_eq!(
            users,
            vec![
                AuthUser::new("digest", "alice"),
                AuthUser::new("ip", "127.0.0.1")
            ]
        );
        within(10, "addAuth bob", c.auth("digest", BOB_AUTH))
            .await
            .unwrap();
        let mut users = c.list_auth_users().await.unwrap();
        users.sort_by(|x, y| (x.scheme(), x.user()).cmp(&(y.scheme(), y.user())));
        assert_eq!(
            users,
            vec![
                AuthUser::new("digest", "alice"),
                AuthUser::new("digest", "bob"),
                AuthUser::new("ip", "127.0.0.1")
            ]
        );
    })
    .await
}

/// NoAuth inside multi on the wire: the failing op carries -102 and nothing is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_inside_multi_on_the_wire() {
    within(TEST_BOUND_SECS, "no_auth_inside_multi_on_the_wire", async {
        let server = TestServer::shared();
        let a = alice(server).await;
        let base = unique("acl-multi");
        a.create(&base, b"", &anyone()).await.unwrap();
        let acl = alice_acl();
        let n = format!("{base}/n");
        a.create(&n, b"", &CreateMode::Persistent.with_acls(Acls::new(&acl)))
            .await
            .unwrap();
        let mut r = server.raw();
        let reply = r.call(
            op::MULTI,
            &multi_req(&[
                (op::CREATE, raw::create_req(&format!("{base}/ok"), b"", 0)),
                (op::CREATE, raw::create_req(&format!("{n}/x"), b"", 0)),
            ]),
        );
        assert_eq!(reply.err, 0);
        assert_eq!(
            decode_multi(&reply.body),
            vec![MultiResult::Error(0), MultiResult::Error(err::NO_AUTH)]
        );
        assert_eq!(r.exists(&format!("{base}/ok"), false).0, err::NO_NODE);
    })
    .await
}

/// addAuth on the wire: the reply carries the request's own xid (ZooKeeper echoes it; clients
/// such as zookeeper-client send auth with ordinary xids and match the reply by xid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_reply_echoes_request_xid() {
    within(TEST_BOUND_SECS, "auth_reply_echoes_request_xid", async {
        let server = TestServer::shared();
        let mut r = server.raw();
        for (xid, auth) in [(7, ALICE_AUTH), (-4, BOB_AUTH), (8, ALICE_AUTH)] {
            r.send_xid(
                xid,
                op::AUTH,
                &Enc::new().i32(0).str("digest").buf(auth).bytes(),
            );
            let reply = r.next_reply(Duration::from_secs(10)).expect("auth reply");
            assert_eq!(
                (reply.xid, reply.err),
                (xid, 0),
                "auth reply must echo xid {xid}"
            );
            assert!(reply.body.is_empty());
        }
        r.ping();
    })
    .await
}

/// Digest identities added on the wire (the classic xid -4): whoAmI lists the digest user by
/// name, the identities are in force, and exists is not ACL-checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_am_i_and_digest_identities_on_the_wire() {
    within(
        TEST_BOUND_SECS,
        "who_am_i_and_digest_identities_on_the_wire",
        async {
            let server = TestServer::shared();
            let mut r = server.raw();
            for auth in [ALICE_AUTH, BOB_AUTH] {
                r.send_xid(
                    -4,
                    op::AUTH,
                    &Enc::new().i32(0).str("digest").buf(auth).bytes(),
                );
                let reply = r.next_reply(Duration::from_secs(10)).expect("auth reply");
                assert_eq!((reply.xid, reply.err), (-4, 0));
            }
            let reply = r.call(op::WHO_AM_I, &[]);
            assert_eq!(reply.err, 0);
            let mut d = raw::Dec::new(&reply.body);
            let n = d.i32();
            let mut ids: Vec<(String, String)> = (0..n).map(|_| (d.str(), d.str())).collect();
            ids.sort();
            assert_eq!(
                ids,
                vec![
                    ("digest".to_string(), "alice".to_string()),
                    ("digest".to_string(), "bob".to_string()),
                    ("ip".to_string(), "127.0.0.1".to_string())
                ]
            );
            let base = unique("acl-raw-auth");
            let body = Enc::new()
                .str(&base)
                .buf(b"")
                .acls(&[(31, "digest", ALICE_ID)])
                .i32(0)
                .bytes();
            assert_eq!(r.call(op::CREATE, &body).err, 0);
            assert_eq!(r.get_data(&base, false).0, 0);
            let mut anon = server.raw();
            assert_eq!(anon.get_data(&base, false).0, err::NO_AUTH);
            assert_eq!(anon.exists(&base, false).0, 0, "exists is not ACL-checked");
        },
    )
    .await
}
