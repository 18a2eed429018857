//! Property tests: random op sequences keep every invariant, failed ops change nothing,
//! parent bookkeeping follows ZooKeeper, snapshots round-trip byte for byte, and decoding
//! arbitrary bytes never panics.

use proptest::prelude::*;
use rookery_protocol::*;

use super::path::display_parent;
use super::tests::{acl, id, world, H};
use super::*;

const NAMES: [&str; 3] = ["a", "b", "c"];

fn path_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => proptest::collection::vec(0..NAMES.len(), 1..4)
            .prop_map(|v| v.iter().map(|&i| format!("/{}", NAMES[i])).collect::<String>()),
        1 => Just("/zookeeper".to_string()),
        1 => Just("/zookeeper/quota/a".to_string()),
        1 => Just("/zookeeper/quota/a/zookeeper_limits".to_string()),
        1 => Just("/zookeeper/quota/a/zookeeper_stats".to_string()),
        1 => Just("/zookeeper/quota/a/b".to_string()),
        1 => Just("/zookeeper/quota/a/b/zookeeper_limits".to_string()),
        1 => Just("/zookeeper/quota/a/b/zookeeper_stats".to_string()),
        1 => Just("/".to_string()),
        1 => Just("/a/".to_string()),
    ]
}

fn acl_strategy() -> impl Strategy<Value = Vec<Acl>> {
    prop_oneof![
        6 => Just(world(perms::ALL)),
        1 => Just(world(perms::READ | perms::CREATE)),
        1 => Just(vec![acl(perms::ALL, "auth", "")]),
        1 => Just(vec![acl(perms::ALL, "ip", "127.0.0.0/8"), acl(perms::READ, "world", "anyone")]),
        1 => Just(vec![]),
    ]
}

fn version_strategy() -> impl Strategy<Value = i32> {
    prop_oneof![4 => Just(-1), 1 => 0..3]
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        op: OpCode,
        path: String,
        data: Option<Vec<u8>>,
        acl: Vec<Acl>,
        flags: i32,
        ttl: i64,
    },
    Delete(String, i32),
    DeleteContainer(String),
    SetData(String, Option<Vec<u8>>, i32),
    SetAcl(String, Vec<Acl>, i32),
    Check(String, i32),
    Multi(Vec<MultiOp>),
    CloseSession(i64),
    Session(i64),
    Auth(bool),
}

/// Znode data: null (`None`) as well as empty and non-empty.
fn data_strategy() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::weighted(0.8, proptest::collection::vec(any::<u8>(), 0..8))
}

fn create_strategy() -> impl Strategy<Value = Op> {
    (
        prop_oneof![
            Just(OpCode::Create),
            Just(OpCode::Create2),
            Just(OpCode::CreateContainer),
            Just(OpCode::CreateTtl)
        ],
        path_strategy(),
        data_strategy(),
        acl_strategy(),
        prop_oneof![8 => 0..7i32, 1 => Just(9)],
        prop_oneof![Just(-1i64), Just(0), Just(50), Just(1000)],
    )
        .prop_map(|(op, path, data, acl, flags, ttl)| Op::Create {
            op,
            path,
            data,
            acl,
            flags,
            ttl,
        })
}

fn multi_op_strategy() -> impl Strategy<Value = MultiOp> {
    prop_oneof![
        3 => (path_strategy(), 0..4i32, prop_oneof![Just(OpCode::Create), Just(OpCode::Create2)])
            .prop_map(|(path, flags, op)| MultiOp::Create {
                op,
                req: CreateRequest { path, data: None, acl: world(perms::ALL), flags },
            }),
        2 => (path_strategy(), version_strategy())
            .prop_map(|(path, version)| MultiOp::Delete(DeleteRequest { path, version })),
        2 => (path_strategy(), version_strategy()).prop_map(|(path, version)| {
            MultiOp::SetData(SetDataRequest { path, data: Some(b"m".to_vec()), version })
        }),
        1 => (path_strategy(), version_strategy())
            .prop_map(|(path, version)| MultiOp::Check(CheckVersionRequest { path, version })),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => create_strategy(),
        4 => (path_strategy(), version_strategy()).prop_map(|(p, v)| Op::Delete(p, v)),
        1 => path_strategy().prop_map(Op::DeleteContainer),
        3 => (path_strategy(), data_strategy(), version_strategy())
            .prop_map(|(p, d, v)| Op::SetData(p, d, v)),
        1 => (path_strategy(), acl_strategy(), version_strategy())
            .prop_map(|(p, a, v)| Op::SetAcl(p, a, v)),
        1 => (path_strategy(), version_strategy()).prop_map(|(p, v)| Op::Check(p, v)),
        3 => proptest::collection::vec(multi_op_strategy(), 0..5).prop_map(Op::Multi),
        1 => prop_oneof![Just(1i64), Just(2)].prop_map(Op::CloseSession),
        1 => prop_oneof![Just(1i64), Just(2)].prop_map(Op::Session),
        1 => any::<bool>().prop_map(Op::Auth),
    ]
}

fn parent_of(path: &str) -> &str {
    &path[..path.rfind('/').unwrap_or(0)]
}

/// Runs one op and checks what ZooKeeper guarantees about it.
fn run(h: &mut H, op: Op) {
    let before = h.t.clone();
    let req = match op {
        Op::Session(s) => {
            h.session = s;
            return;
        }
        Op::Auth(digest) => {
            h.auth = vec![id("ip", "127.0.0.1")];
            if digest {
                h.auth.push(id("digest", &digest_id("u:p")));
            }
            return;
        }
        Op::CloseSession(s) => {
            h.zxid += 1;
            let expected = h.t.ephemerals_of(s);
            let triggers = h.t.close_session(h.zxid, h.time, s);
            h.t.check_invariants().unwrap();
            assert_eq!(triggers.len(), 2 * expected.len());
            for path in &expected {
                assert!(h.t.stat(path).is_none());
                assert_eq!(h.stat(display_parent(parent_of(path))).pzxid, h.zxid);
            }
            assert!(h.t.ephemerals_of(s).is_empty());
            return;
        }
        Op::Create {
            op: OpCode::CreateTtl,
            path,
            data,
            acl,
            flags,
            ttl,
        } => Request::CreateTtl(CreateTtlRequest {
            path,
            data,
            acl,
            flags,
            ttl,
        }),
        Op::Create {
            op,
            path,
            data,
            acl,
            flags,
            ..
        } => Request::Create {
            op,
            req: CreateRequest {
                path,
                data,
                acl,
                flags,
            },
        },
        Op::Delete(path, version) => Request::Delete(DeleteRequest { path, version }),
        Op::DeleteContainer(path) => Request::DeleteContainer(SyncRequest { path }),
        Op::SetData(path, data, version) => Request::SetData(SetDataRequest {
            path,
            data,
            version,
        }),
        Op::SetAcl(path, acl, version) => Request::SetAcl(SetAclRequest { path, acl, version }),
        Op::Check(path, version) => Request::Check(CheckVersionRequest { path, version }),
        Op::Multi(ops) => Request::Multi(ops),
    };
    // `H::write` checks the invariants, and that failures change nothing and trigger nothing.
    let (result, triggers) = h.write(req.clone());
    let zxid = h.zxid;
    match (&req, &result) {
        (Request::Create { .. } | Request::CreateTtl(_), Ok(r)) => {
            let path = match r {
                Response::Create(r) => r.path.clone(),
                Response::Create2(r) => r.path.clone(),
                other => panic!("{other:?}"),
            };
            let parent = parent_of(&path);
            let p = display_parent(parent);
            assert_eq!(
                h.t.persisted_cversion(p),
                before.persisted_cversion(p).map(|c| c.wrapping_add(1))
            );
            let ps = h.stat(p);
            assert_eq!(ps.pzxid, zxid);
            assert_eq!(ps.num_children, before.stat(p).unwrap().num_children + 1);
            assert_eq!(h.stat(&path).czxid, zxid);
            assert_eq!(
                triggers,
                vec![
                    WatchTrigger::Created(path.clone()),
                    WatchTrigger::ChildrenChanged(p.to_string())
                ]
            );
        }
        (Request::Delete(DeleteRequest { path, .. }), Ok(_))
        | (Request::DeleteContainer(SyncRequest { path }), Ok(_)) => {
            let p = display_parent(parent_of(path));
            assert!(h.t.stat(path).is_none());
            assert_eq!(h.t.persisted_cversion(p), before.persisted_cversion(p));
            let ps = h.stat(p);
            assert_eq!(ps.pzxid, zxid);
            assert_eq!(
                ps.cversion,
                before.stat(p).unwrap().cversion.wrapping_add(1)
            );
        }
        (Request::SetData(r), Ok(Response::Stat(s))) => {
            assert_eq!((s.mzxid, s.mtime), (zxid, h.time));
            // Null stays null and empty stays empty; null's dataLength is 0.
            assert_eq!(super_get(h, &r.path), r.data);
            assert_eq!(s.data_length as usize, r.data.as_ref().map_or(0, Vec::len));
            assert_eq!(
                s.version,
                before.stat(&r.path).unwrap().version.wrapping_add(1)
            );
            if r.path != "/" {
                let p = display_parent(parent_of(&r.path));
                assert_eq!(
                    h.t.stat(p),
                    before.stat(p),
                    "setData leaves the parent alone"
                );
            }
        }
        (Request::Check(_) | Request::SetAcl(_), Ok(_)) => {
            assert!(triggers.is_empty());
        }
        (Request::Multi(ops), Ok(Response::Multi(results))) => {
            assert_eq!(ops.len(), results.len());
        }
        (Request::Multi(_), Err(e)) => assert_eq!(*e, ErrorCode::MarshallingError),
        (_, Err(_)) => {}
        (req, Ok(r)) => panic!("{req:?} answered {r:?}"),
    }
}

/// getData as super (no ACL in the way): the data, `None` if null.
fn super_get(h: &H, path: &str) -> Option<Vec<u8>> {
    let ctx = OpContext {
        zxid: 0,
        time_ms: 0,
        session_id: 0,
        auth: &[id("super", "")],
        ttl_enabled: true,
        providers: AuthProviders::default(),
    };
    let req = Request::GetData(GetDataRequest {
        path: path.into(),
        watch: false,
    });
    match h.t.read(&ctx, &req) {
        Ok(Response::GetData(r)) => r.data,
        other => panic!("{other:?}"),
    }
}

/// Every node's Stat agrees with its children list, and the snapshot round-trips.
fn check_global(h: &H) {
    let mut stack = vec!["/".to_string()];
    while let Some(path) = stack.pop() {
        let stat = h.stat(&path);
        let children = match h.t.read(
            &OpContext {
                zxid: 0,
                time_ms: 0,
                session_id: 0,
                auth: &[id("super", "")],
                ttl_enabled: true,
                providers: AuthProviders::default(),
            },
            &Request::GetChildren(GetChildrenRequest {
                path: path.clone(),
                watch: false,
            }),
        ) {
            Ok(Response::GetChildren(r)) => r.children,
            other => panic!("{other:?}"),
        };
        assert_eq!(stat.num_children as usize, children.len());
        let persisted = h.t.persisted_cversion(&path).unwrap();
        assert_eq!(
            stat.cversion,
            persisted.wrapping_mul(2).wrapping_sub(stat.num_children)
        );
        for c in children {
            stack.push(if path == "/" {
                format!("/{c}")
            } else {
                format!("{path}/{c}")
            });
        }
    }
    let mut bytes = Vec::new();
    h.t.serialize(&mut bytes);
    let back = DataTree::deserialize(&bytes).unwrap();
    back.check_invariants().unwrap();
    let mut again = Vec::new();
    back.serialize(&mut again);
    assert_eq!(bytes, again);
    assert!(back == h.t);
    assert_eq!(back.approximate_data_size(), h.t.approximate_data_size());
    assert_eq!(back.ephemerals_of(1), h.t.ephemerals_of(1));
    assert_eq!(
        back.session_ids_with_ephemerals(),
        h.t.session_ids_with_ephemerals()
    );
    assert_eq!(
        back.reapable_nodes(h.time + 100),
        h.t.reapable_nodes(h.time + 100)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_ops_keep_invariants(ops in proptest::collection::vec(op_strategy(), 1..60), collide in any::<bool>()) {
        let mut h = H::new();
        h.session = 1;
        if collide {
            h.t.force_hash_collisions();
        }
        for (i, op) in ops.into_iter().enumerate() {
            run(&mut h, op);
            if i % 10 == 9 {
                check_global(&h);
            }
        }
        check_global(&h);
    }

    #[test]
    fn deserialize_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = DataTree::deserialize(&bytes);
        // Also behind a valid magic, version and checksum, to reach the structural checks.
        let mut body = b"RKTREE\0\0\0\0\0\x01".to_vec();
        body.extend_from_slice(&bytes);
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        let _ = DataTree::deserialize(&body);
    }

    #[test]
    fn deserialize_mutated_snapshots_never_panics(
        ops in proptest::collection::vec(op_strategy(), 1..20),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut h = H::new();
        for op in ops {
            run(&mut h, op);
        }
        let mut bytes = Vec::new();
        h.t.serialize(&mut bytes);
        bytes.truncate(bytes.len() - 4);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        if let Ok(tree) = DataTree::deserialize(&bytes) {
            tree.check_invariants().unwrap();
            let mut again = Vec::new();
            tree.serialize(&mut again);
            prop_assert_eq!(again, bytes);
        }
    }
}
