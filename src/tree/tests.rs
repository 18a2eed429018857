//! Unit tests: every op and error path, checked against ZooKeeper 3.8/3.9 behaviour (several
//! expectations were observed on a live ZooKeeper 3.8 server, as noted).

use rookery_protocol::*;

use super::*;

pub(super) const SESSION: i64 = 0x0100_0000_0000_0001;

pub(super) fn world(perms: i32) -> Vec<Acl> {
    vec![acl(perms, "world", "anyone")]
}

pub(super) fn acl(perms: i32, scheme: &str, id: &str) -> Acl {
    Acl {
        perms,
        id: Id {
            scheme: scheme.into(),
            id: id.into(),
        },
    }
}

pub(super) fn id(scheme: &str, id: &str) -> Id {
    Id {
        scheme: scheme.into(),
        id: id.into(),
    }
}

pub(super) fn create_req(
    op: OpCode,
    path: &str,
    data: &[u8],
    acl: Vec<Acl>,
    flags: i32,
) -> Request {
    Request::Create {
        op,
        req: CreateRequest {
            path: path.into(),
            data: Some(data.to_vec()),
            acl,
            flags,
        },
    }
}

pub(super) fn ttl_req(path: &str, flags: i32, ttl: i64) -> Request {
    Request::CreateTtl(CreateTtlRequest {
        path: path.into(),
        data: Some(vec![]),
        acl: world(perms::ALL),
        flags,
        ttl,
    })
}

fn mcreate(op: OpCode, path: &str, flags: i32) -> MultiOp {
    MultiOp::Create {
        op,
        req: CreateRequest {
            path: path.into(),
            data: Some(vec![]),
            acl: world(perms::ALL),
            flags,
        },
    }
}

fn mdelete(path: &str, version: i32) -> MultiOp {
    MultiOp::Delete(DeleteRequest {
        path: path.into(),
        version,
    })
}

fn mset(path: &str, data: &[u8], version: i32) -> MultiOp {
    MultiOp::SetData(SetDataRequest {
        path: path.into(),
        data: Some(data.to_vec()),
        version,
    })
}

fn mcheck(path: &str, version: i32) -> MultiOp {
    MultiOp::Check(CheckVersionRequest {
        path: path.into(),
        version,
    })
}

/// A tree plus the context of the next request.
pub(super) struct H {
    /// The tree under test.
    pub(super) t: DataTree,
    /// zxid of the last write (each write takes the next one).
    pub(super) zxid: i64,
    /// Time of the last write (each write advances it by 10 ms).
    pub(super) time: i64,
    /// The session's authenticated ids.
    pub(super) auth: Vec<Id>,
    /// The requesting session.
    pub(super) session: i64,
    /// extendedTypesEnabled.
    pub(super) ttl: bool,
    /// authProvider SASLAuthenticationProvider registered.
    pub(super) sasl: bool,
}

impl H {
    pub(super) fn new() -> H {
        H {
            t: DataTree::new(),
            zxid: 0,
            time: 1_000_000,
            auth: vec![id("ip", "127.0.0.1")],
            session: SESSION,
            ttl: true,
            sasl: false,
        }
    }

    /// Applies a write as the next log entry and checks the tree's invariants.
    pub(super) fn write(
        &mut self,
        req: Request,
    ) -> (Result<Response, ErrorCode>, Vec<WatchTrigger>) {
        self.zxid += 1;
        self.time += 10;
        let ctx = OpContext {
            zxid: self.zxid,
            time_ms: self.time,
            session_id: self.session,
            auth: &self.auth,
            ttl_enabled: self.ttl,
            providers: AuthProviders {
                sasl: self.sasl,
                x509: self.sasl,
            },
        };
        let before = self.t.clone();
        let out = self.t.apply_write(&ctx, &req);
        self.t.check_invariants().unwrap();
        if out.0.is_err()
            || matches!(&out.0, Ok(Response::Multi(r)) if r.iter().any(|r| matches!(r, MultiResult::Error(_))))
        {
            assert!(self.t == before, "a failed write changed the tree");
            assert!(out.1.is_empty(), "a failed write triggered watches");
        }
        out
    }

    pub(super) fn read(&self, req: Request) -> Result<Response, ErrorCode> {
        let ctx = OpContext {
            zxid: self.zxid,
            time_ms: self.time,
            session_id: self.session,
            auth: &self.auth,
            ttl_enabled: self.ttl,
            providers: AuthProviders {
                sasl: self.sasl,
                x509: self.sasl,
            },
        };
        self.t.read(&ctx, &req)
    }

    pub(super) fn create(&mut self, path: &str, flags: i32) -> Result<String, ErrorCode> {
        match self
            .write(create_req(
                OpCode::Create2,
                path,
                b"",
                world(perms::ALL),
                flags,
            ))
            .0
        {
            Ok(Response::Create2(r)) => Ok(r.path),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => Err(e),
        }
    }

    fn create_acl(&mut self, path: &str, acl: Vec<Acl>) -> Result<String, ErrorCode> {
        match self.write(create_req(OpCode::Create, path, b"", acl, 0)).0 {
            Ok(Response::Create(r)) => Ok(r.path),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => Err(e),
        }
    }

    pub(super) fn delete(&mut self, path: &str, version: i32) -> Result<(), ErrorCode> {
        self.write(Request::Delete(DeleteRequest {
            path: path.into(),
            version,
        }))
        .0
        .map(|r| assert_eq!(r, Response::Empty))
    }

    pub(super) fn set(&mut self, path: &str, data: &[u8], version: i32) -> Result<Stat, ErrorCode> {
        match self
            .write(Request::SetData(SetDataRequest {
                path: path.into(),
                data: Some(data.to_vec()),
                version,
            }))
            .0?
        {
            Response::Stat(s) => Ok(s),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn set_acl(&mut self, path: &str, acl: Vec<Acl>, version: i32) -> Result<Stat, ErrorCode> {
        match self
            .write(Request::SetAcl(SetAclRequest {
                path: path.into(),
                acl,
                version,
            }))
            .0?
        {
            Response::Stat(s) => Ok(s),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn get_acl(&self, path: &str) -> Result<Vec<Acl>, ErrorCode> {
        match self.read(Request::GetAcl(GetAclRequest { path: path.into() }))? {
            Response::GetAcl(r) => Ok(r.acl),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn get(&self, path: &str) -> Result<(Vec<u8>, Stat), ErrorCode> {
        match self.read(Request::GetData(GetDataRequest {
            path: path.into(),
            watch: false,
        }))? {
            Response::GetData(r) => Ok((r.data.unwrap_or_default(), r.stat)),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// getData keeping null (`None`) apart from empty.
    pub(super) fn get_opt(&self, path: &str) -> Result<Option<Vec<u8>>, ErrorCode> {
        match self.read(Request::GetData(GetDataRequest {
            path: path.into(),
            watch: false,
        }))? {
            Response::GetData(r) => Ok(r.data),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn children(&self, path: &str) -> Result<Vec<String>, ErrorCode> {
        match self.read(Request::GetChildren(GetChildrenRequest {
            path: path.into(),
            watch: false,
        }))? {
            Response::GetChildren(r) => Ok(r.children),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn exists(&self, path: &str) -> Result<Stat, ErrorCode> {
        match self.read(Request::Exists(ExistsRequest {
            path: path.into(),
            watch: false,
        }))? {
            Response::Stat(s) => Ok(s),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub(super) fn stat(&self, path: &str) -> Stat {
        self.t
            .stat(path)
            .unwrap_or_else(|| panic!("{path} missing"))
    }

    fn multi(&mut self, ops: Vec<MultiOp>) -> (Result<Response, ErrorCode>, Vec<WatchTrigger>) {
        self.write(Request::Multi(ops))
    }

    fn multi_results(&mut self, ops: Vec<MultiOp>) -> Vec<MultiResult> {
        match self.multi(ops).0 {
            Ok(Response::Multi(r)) => r,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn zero_stat(cversion: i32, aversion: i32, num_children: i32) -> Stat {
    Stat {
        cversion,
        aversion,
        num_children,
        ..Stat::default()
    }
}

// ---- fresh tree ----

#[test]
fn fresh_tree_matches_zookeeper() {
    // Observed on ZooKeeper 3.8: "/" cversion -1 (one child, no create counted), "/zookeeper"
    // cversion -2, "/zookeeper/config" aversion -1 and world:anyone READ.
    let h = H::new();
    h.t.check_invariants().unwrap();
    assert_eq!(h.stat("/"), zero_stat(-1, 0, 1));
    assert_eq!(h.stat(""), zero_stat(-1, 0, 1));
    assert_eq!(h.stat("/zookeeper"), zero_stat(-2, 0, 2));
    assert_eq!(h.stat("/zookeeper/quota"), zero_stat(0, 0, 0));
    assert_eq!(h.stat("/zookeeper/config"), zero_stat(0, -1, 0));
    assert_eq!(h.get_acl("/").unwrap(), world(perms::ALL));
    assert_eq!(h.get_acl("/zookeeper").unwrap(), world(perms::ALL));
    assert_eq!(h.get_acl("/zookeeper/quota").unwrap(), world(perms::ALL));
    assert_eq!(h.get_acl("/zookeeper/config").unwrap(), world(perms::READ));
    assert_eq!(h.children("/").unwrap(), vec!["zookeeper"]);
    assert_eq!(h.children("/zookeeper").unwrap(), vec!["config", "quota"]);
    // "Node count: 5" on a fresh ZooKeeper (its map holds the root twice).
    assert_eq!(h.t.node_count(), 5);
    assert_eq!(h.t.znode_count(), 4);
    assert_eq!(h.t.approximate_data_size(), 1 + 10 + 16 + 17);
    assert_eq!(h.t.acl_cache_size(), 2);
}

// ---- create ----

#[test]
fn create_stat_and_parent_bookkeeping() {
    let mut h = H::new();
    let (r, triggers) = h.write(create_req(OpCode::Create2, "/a", b"hello", world(31), 0));
    let Ok(Response::Create2(r)) = r else {
        panic!()
    };
    assert_eq!(r.path, "/a");
    assert_eq!(
        r.stat,
        Stat {
            czxid: 1,
            mzxid: 1,
            ctime: h.time,
            mtime: h.time,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 5,
            num_children: 0,
            pzxid: 1,
        }
    );
    assert_eq!(
        triggers,
        vec![
            WatchTrigger::Created("/a".into()),
            WatchTrigger::ChildrenChanged("/".into())
        ]
    );
    let root = h.stat("/");
    assert_eq!((root.cversion, root.pzxid, root.num_children), (0, 1, 2));
    assert_eq!(h.t.persisted_cversion("/"), Some(1));

    // create (1) answers the path only.
    let (r, triggers) = h.write(create_req(OpCode::Create, "/a/b", b"", world(31), 0));
    assert_eq!(
        r,
        Ok(Response::Create(CreateResponse {
            path: "/a/b".into()
        }))
    );
    assert_eq!(
        triggers,
        vec![
            WatchTrigger::Created("/a/b".into()),
            WatchTrigger::ChildrenChanged("/a".into())
        ]
    );
    let a = h.stat("/a");
    assert_eq!((a.cversion, a.pzxid, a.num_children, a.mzxid), (1, 2, 1, 1));

    // setData on the child touches neither cversion nor pzxid of the parent.
    h.set("/a/b", b"x", -1).unwrap();
    assert_eq!(h.stat("/a"), a);

    // Deleting bumps the visible cversion (creates + deletes) and pzxid, not the persisted one.
    h.delete("/a/b", -1).unwrap();
    let a = h.stat("/a");
    assert_eq!((a.cversion, a.pzxid, a.num_children), (2, 4, 0));
    assert_eq!(h.t.persisted_cversion("/a"), Some(1));
    assert_eq!(h.t.approximate_data_size(), 44 + 2 + 5);
}

#[test]
fn create_errors_in_zookeeper_order() {
    let mut h = H::new();
    // Observed on ZooKeeper 3.8.
    assert_eq!(h.create("/", 0), Err(ErrorCode::NodeExists));
    assert_eq!(
        h.create("/a/", 0),
        Err(ErrorCode::NoNode),
        "parent checked first"
    );
    assert_eq!(h.create("foo", 0), Err(ErrorCode::BadArguments));
    assert_eq!(h.create("", 0), Err(ErrorCode::BadArguments));
    assert_eq!(h.create("/x/y", 0), Err(ErrorCode::NoNode));
    assert_eq!(h.create("/a\0b", 0), Err(ErrorCode::BadArguments));
    h.create("/p", 0).unwrap();
    assert_eq!(h.create("/p/", 0), Err(ErrorCode::BadArguments));
    assert_eq!(h.create("/p/.", 0), Err(ErrorCode::BadArguments));
    assert_eq!(h.create("/p//q", 0), Err(ErrorCode::NoNode));
    assert_eq!(h.create("/p", 0), Err(ErrorCode::NodeExists));
    assert_eq!(h.create("/p/f", 7), Err(ErrorCode::BadArguments));
    assert_eq!(h.create("/p/f", -1), Err(ErrorCode::BadArguments));
    // ACL problems come before the parent lookup.
    assert_eq!(
        h.write(create_req(OpCode::Create, "/nope/x", b"", vec![], 0))
            .0,
        Err(ErrorCode::InvalidAcl)
    );
    assert_eq!(h.create_acl("/p/e", vec![]), Err(ErrorCode::InvalidAcl));
    assert_eq!(
        h.create_acl("/p/e", vec![acl(31, "auth", "")]),
        Err(ErrorCode::InvalidAcl),
        "auth needs an authenticated id (ip is not one)"
    );
    assert_eq!(
        h.create_acl(
            "/p/e",
            world(31)
                .into_iter()
                .chain([acl(31, "world", "foo")])
                .collect()
        ),
        Err(ErrorCode::InvalidAcl)
    );
    assert_eq!(
        h.create_acl("/p/e", vec![acl(31, "digest", "foo")]),
        Err(ErrorCode::InvalidAcl)
    );
    assert_eq!(
        h.create_acl("/p/e", vec![acl(31, "ip", "::1")]),
        Err(ErrorCode::InvalidAcl)
    );
    assert_eq!(
        h.create_acl("/p/e", vec![acl(31, "super", "")]),
        Err(ErrorCode::InvalidAcl)
    );
    assert_eq!(
        h.create_acl("/p/e", vec![acl(31, "digest", "a:b:")]),
        Ok("/p/e".into())
    );
    assert_eq!(
        h.create_acl("/p/f", vec![acl(31, "ip", "127.0.0.0/8")]),
        Ok("/p/f".into())
    );
    // Duplicates are removed.
    h.create_acl(
        "/p/g",
        vec![acl(31, "world", "anyone"), acl(31, "world", "anyone")],
    )
    .unwrap();
    assert_eq!(h.get_acl("/p/g").unwrap(), world(31));
    // Children of ephemerals.
    h.create("/e", CreateMode::Ephemeral.wire()).unwrap();
    assert_eq!(h.create("/e/c", 0), Err(ErrorCode::NoChildrenForEphemerals));
    assert_eq!(
        h.create("/e", 0),
        Err(ErrorCode::NodeExists),
        "exists is checked first"
    );
    // Under /zookeeper a create is allowed (world:anyone ALL), not under /zookeeper/config.
    h.create("/zookeeper/mine", 0).unwrap();
    assert_eq!(h.create("/zookeeper/config/x", 0), Err(ErrorCode::NoAuth));
}

#[test]
fn sequential_names_use_persisted_cversion() {
    let mut h = H::new();
    h.create("/q", 0).unwrap();
    let seq = CreateMode::PersistentSequential.wire();
    assert_eq!(h.create("/q/n-", seq).unwrap(), "/q/n-0000000000");
    assert_eq!(h.create("/q/n-", seq).unwrap(), "/q/n-0000000001");
    h.delete("/q/n-0000000000", -1).unwrap();
    // Deletes do not advance the sequence.
    assert_eq!(h.create("/q/m-", seq).unwrap(), "/q/m-0000000002");
    assert_eq!(h.stat("/q").cversion, 4);
    // "/q/" is a valid sequential prefix: the name is the number alone (as on ZooKeeper 3.8).
    assert_eq!(h.create("/q/", seq).unwrap(), "/q/0000000003");
    // Ephemeral sequential under the root.
    assert_eq!(
        h.create("/es", CreateMode::EphemeralSequential.wire())
            .unwrap(),
        "/es0000000001"
    );
    // A plain create of a name taken by a sequential one.
    assert_eq!(h.create("/q/0000000003", 0), Err(ErrorCode::NodeExists));

    // Overflow: %010d of a signed int.
    h.t.set_persisted_cversion("/q", i32::MAX);
    assert_eq!(h.create("/q/o-", seq).unwrap(), "/q/o-2147483647");
    assert_eq!(h.create("/q/o-", seq).unwrap(), "/q/o--2147483648");
    assert_eq!(h.create("/q/o-", seq).unwrap(), "/q/o--2147483647");
    h.t.set_persisted_cversion("/q", -5);
    assert_eq!(h.create("/q/o-", seq).unwrap(), "/q/o--000000005");
}

#[test]
fn ephemerals_and_close_session() {
    let mut h = H::new();
    h.create("/s", 0).unwrap();
    let eph = CreateMode::Ephemeral.wire();
    for p in ["/s/b", "/s/a", "/z", "/s/c"] {
        h.create(p, eph).unwrap();
    }
    assert_eq!(h.stat("/s/a").ephemeral_owner, SESSION);
    h.session = 7;
    h.create("/other", eph).unwrap();
    h.create("/s/d", 0).unwrap();
    h.session = SESSION;
    assert_eq!(
        h.t.ephemerals_of(SESSION),
        vec!["/s/a", "/s/b", "/s/c", "/z"]
    );
    assert_eq!(h.t.session_ids_with_ephemerals(), vec![7, SESSION]);
    assert_eq!(h.t.ephemerals_count(), 5);

    let ge = |h: &H, prefix: &str| match h.read(Request::GetEphemerals(GetEphemeralsRequest {
        prefix_path: prefix.into(),
    })) {
        Ok(Response::GetEphemerals(r)) => r.ephemerals,
        other => panic!("{other:?}"),
    };
    assert_eq!(ge(&h, "/"), vec!["/s/a", "/s/b", "/s/c", "/z"]);
    assert_eq!(ge(&h, " / "), vec!["/s/a", "/s/b", "/s/c", "/z"]);
    assert_eq!(ge(&h, ""), vec!["/s/a", "/s/b", "/s/c", "/z"]);
    assert_eq!(ge(&h, "/s"), vec!["/s/a", "/s/b", "/s/c"]);
    assert_eq!(ge(&h, "/s/b"), vec!["/s/b"]);
    assert_eq!(
        ge(&h, "/s "),
        Vec::<String>::new(),
        "the filter uses the untrimmed prefix"
    );

    // Deleting an ephemeral by hand unindexes it.
    h.delete("/s/c", -1).unwrap();
    assert_eq!(h.t.ephemerals_of(SESSION), vec!["/s/a", "/s/b", "/z"]);

    h.zxid += 1;
    let triggers = h.t.close_session(h.zxid, h.time, SESSION);
    h.t.check_invariants().unwrap();
    assert_eq!(
        triggers,
        vec![
            WatchTrigger::Deleted("/s/a".into()),
            WatchTrigger::ChildrenChanged("/s".into()),
            WatchTrigger::Deleted("/s/b".into()),
            WatchTrigger::ChildrenChanged("/s".into()),
            WatchTrigger::Deleted("/z".into()),
            WatchTrigger::ChildrenChanged("/".into()),
        ]
    );
    assert_eq!(h.stat("/s").pzxid, h.zxid);
    assert_eq!(h.children("/s").unwrap(), vec!["d"]);
    assert!(h.t.ephemerals_of(SESSION).is_empty());
    assert_eq!(h.t.session_ids_with_ephemerals(), vec![7]);
    assert!(h.t.close_session(h.zxid + 1, h.time, SESSION).is_empty());
}

#[test]
fn containers() {
    let mut h = H::new();
    // Observed on ZooKeeper 3.8: createContainer (19) makes a container whatever the flags;
    // create (1) with the container flag makes a plain persistent node.
    let (r, _) = h.write(create_req(OpCode::CreateContainer, "/c", b"", world(31), 0));
    let Ok(Response::Create2(r)) = r else {
        panic!()
    };
    assert_eq!(r.stat.ephemeral_owner, 0, "containers show owner 0");
    h.write(create_req(
        OpCode::CreateContainer,
        "/ce",
        b"",
        world(31),
        1,
    ))
    .0
    .unwrap();
    let (r, _) = h.write(create_req(
        OpCode::CreateContainer,
        "/cs",
        b"",
        world(31),
        2,
    ));
    assert!(matches!(r, Ok(Response::Create2(ref r)) if r.path == "/cs0000000002"));
    h.write(create_req(OpCode::Create, "/p", b"", world(31), 4))
        .0
        .unwrap();
    assert!(
        h.t.reapable_nodes(i64::MAX).is_empty(),
        "never had children"
    );
    assert_eq!(
        h.t.reapable_nodes_with(h.time + 1000, 500),
        vec!["/c", "/ce", "/cs0000000002"]
    );

    for p in ["/c", "/ce", "/p"] {
        h.create(&format!("{p}/k"), 0).unwrap();
    }
    assert!(h.t.reapable_nodes(h.time).is_empty(), "has children");
    for p in ["/c", "/ce", "/p"] {
        h.delete(&format!("{p}/k"), -1).unwrap();
    }
    assert_eq!(h.t.reapable_nodes(h.time), vec!["/c", "/ce"]);
    // Containers can hold ephemerals.
    h.create("/c/e", CreateMode::Ephemeral.wire()).unwrap();
    assert_eq!(h.t.reapable_nodes(h.time), vec!["/ce"]);
}

#[test]
fn ttl_nodes() {
    let mut h = H::new();
    let ttl = CreateMode::PersistentWithTtl.wire();
    let seq_ttl = CreateMode::PersistentSequentialWithTtl.wire();
    h.ttl = false;
    assert_eq!(
        h.write(ttl_req("/t", ttl, 100)).0,
        Err(ErrorCode::Unimplemented)
    );
    assert_eq!(
        h.write(create_req(OpCode::Create2, "/t", b"", world(31), ttl))
            .0,
        Err(ErrorCode::Unimplemented)
    );
    h.ttl = true;
    // Observed on ZooKeeper 3.8 (extendedTypesEnabled=true).
    assert_eq!(
        h.write(ttl_req("/t", ttl, 0)).0,
        Err(ErrorCode::BadArguments)
    );
    assert_eq!(
        h.write(ttl_req("/t", ttl, -1)).0,
        Err(ErrorCode::BadArguments)
    );
    assert_eq!(
        h.write(ttl_req("/t", ttl, ephemeral_owner::MAX_TTL + 1)).0,
        Err(ErrorCode::BadArguments)
    );
    assert_eq!(h.write(ttl_req("/t", 0, 5)).0, Err(ErrorCode::BadArguments));
    assert_eq!(
        h.write(ttl_req("/t", 0, -1)).0,
        Err(ErrorCode::BadArguments)
    );
    assert_eq!(h.write(ttl_req("/t", 9, 5)).0, Err(ErrorCode::BadArguments));
    assert_eq!(
        h.write(create_req(OpCode::Create2, "/t", b"", world(31), ttl))
            .0,
        Err(ErrorCode::BadArguments)
    );
    let (r, _) = h.write(ttl_req("/t", ttl, 100));
    let Ok(Response::Create2(r)) = r else {
        panic!()
    };
    assert_eq!(r.stat.ephemeral_owner, 0, "TTL nodes show owner 0");
    let created = h.time;
    let (r, _) = h.write(ttl_req("/s", seq_ttl, ephemeral_owner::MAX_TTL));
    assert!(matches!(r, Ok(Response::Create2(ref r)) if r.path == "/s0000000001"));

    assert!(
        h.t.reapable_nodes(created + 100).is_empty(),
        "strictly more than ttl"
    );
    assert_eq!(h.t.reapable_nodes(created + 101), vec!["/t"]);
    h.create("/t/child", 0).unwrap();
    assert!(h.t.reapable_nodes(created + 1000).is_empty());
    h.delete("/t/child", -1).unwrap();
    // setData refreshes mtime.
    h.set("/t", b"x", -1).unwrap();
    let touched = h.time;
    assert!(h.t.reapable_nodes(touched + 100).is_empty());
    assert_eq!(h.t.reapable_nodes(touched + 101), vec!["/t"]);
    // The reaper's delete.
    let (r, triggers) = h.write(Request::DeleteContainer(SyncRequest { path: "/t".into() }));
    assert_eq!(r, Ok(Response::Empty));
    assert_eq!(
        triggers,
        vec![
            WatchTrigger::Deleted("/t".into()),
            WatchTrigger::ChildrenChanged("/".into())
        ]
    );
}

// ---- delete ----

#[test]
fn delete_errors_and_specials() {
    let mut h = H::new();
    // Observed on ZooKeeper 3.8: the special paths (and paths without '/') answer BadArguments.
    for p in [
        "/zookeeper",
        "/zookeeper/quota",
        "/zookeeper/config",
        "/",
        "",
        "x",
    ] {
        assert_eq!(h.delete(p, -1), Err(ErrorCode::BadArguments), "{p}");
    }
    assert_eq!(h.delete("/nope", -1), Err(ErrorCode::NoNode));
    assert_eq!(h.delete("/nope/x", -1), Err(ErrorCode::NoNode));
    h.create("/a", 0).unwrap();
    h.create("/a/b", 0).unwrap();
    assert_eq!(h.delete("/a", -1), Err(ErrorCode::NotEmpty));
    assert_eq!(h.delete("/a/b", 3), Err(ErrorCode::BadVersion));
    assert_eq!(h.delete("/a/b/", -1), Err(ErrorCode::NoNode));
    h.set("/a/b", b"1", 0).unwrap();
    assert_eq!(h.delete("/a/b", 0), Err(ErrorCode::BadVersion));
    let (r, triggers) = h.write(Request::Delete(DeleteRequest {
        path: "/a/b".into(),
        version: 1,
    }));
    assert_eq!(r, Ok(Response::Empty));
    assert_eq!(
        triggers,
        vec![
            WatchTrigger::Deleted("/a/b".into()),
            WatchTrigger::ChildrenChanged("/a".into())
        ]
    );
    assert_eq!(h.stat("/a").pzxid, h.zxid);
    h.delete("/a", -1).unwrap();
    assert!(h.t.stat("/a").is_none());
    // Nodes users created under /zookeeper can be deleted.
    h.create("/zookeeper/mine", 0).unwrap();
    h.delete("/zookeeper/mine", -1).unwrap();
}

#[test]
fn delete_container_checks() {
    let mut h = H::new();
    let dc = |h: &mut H, p: &str| {
        h.write(Request::DeleteContainer(SyncRequest { path: p.into() }))
            .0
    };
    assert_eq!(dc(&mut h, "/zookeeper"), Err(ErrorCode::BadArguments));
    assert_eq!(dc(&mut h, "/nope"), Err(ErrorCode::NoNode));
    h.write(create_req(OpCode::CreateContainer, "/c", b"", world(31), 0))
        .0
        .unwrap();
    h.create("/c/x", 0).unwrap();
    assert_eq!(dc(&mut h, "/c"), Err(ErrorCode::NotEmpty));
    h.create("/e", CreateMode::Ephemeral.wire()).unwrap();
    assert_eq!(dc(&mut h, "/e"), Err(ErrorCode::BadVersion));
    // No ACL check, and a childless persistent node goes too (PrepRequestProcessor only
    // refuses session ephemerals).
    h.auth.clear();
    assert_eq!(dc(&mut h, "/c/x"), Ok(Response::Empty));
    assert_eq!(dc(&mut h, "/c"), Ok(Response::Empty));
}

// ---- setData / setACL / check ----

#[test]
fn set_data() {
    let mut h = H::new();
    assert_eq!(h.set("/nope", b"", -1), Err(ErrorCode::NoNode));
    assert_eq!(h.set("/a/", b"", -1), Err(ErrorCode::BadArguments));
    assert_eq!(h.set("", b"", -1), Err(ErrorCode::BadArguments));
    h.create("/a", 0).unwrap();
    let czxid = h.zxid;
    let s = h.set("/a", b"data", 0).unwrap();
    assert_eq!(
        (s.version, s.mzxid, s.mtime, s.data_length, s.czxid),
        (1, h.zxid, h.time, 4, czxid)
    );
    assert_eq!(h.set("/a", b"", 0), Err(ErrorCode::BadVersion));
    let (r, triggers) = h.write(Request::SetData(SetDataRequest {
        path: "/a".into(),
        data: Some(b"xy".to_vec()),
        version: 1,
    }));
    assert!(matches!(r, Ok(Response::Stat(ref s)) if s.version == 2));
    assert_eq!(triggers, vec![WatchTrigger::DataChanged("/a".into())]);
    assert_eq!(h.get("/a").unwrap().0, b"xy");
    assert_eq!(h.t.approximate_data_size(), 44 + 2 + 2);
    // Observed on ZooKeeper 3.8: /zookeeper accepts setData, /zookeeper/config is read-only.
    assert_eq!(h.set("/zookeeper", b"x", -1).unwrap().version, 1);
    assert_eq!(h.set("/zookeeper/config", b"x", -1), Err(ErrorCode::NoAuth));
    // Root data counts once.
    h.set("/", b"abc", -1).unwrap();
    assert_eq!(h.t.approximate_data_size(), 44 + 2 + 2 + 1 + 3);
    // Version wraps like a Java int.
    h.create("/w", 0).unwrap();
    let id = h.t.nodes.lookup("/w").unwrap();
    h.t.nodes.get_mut(id).unwrap().version = i32::MAX;
    assert_eq!(h.set("/w", b"", i32::MAX).unwrap().version, i32::MIN);
}

#[test]
fn set_acl_and_get_acl() {
    let mut h = H::new();
    let digest = digest_id("bob:pw");
    h.auth.push(id("digest", &digest));
    h.create_acl(
        "/d",
        vec![
            acl(31, "auth", ""),
            acl(1, "world", "anyone"),
            acl(3, "auth", "x"),
        ],
    )
    .unwrap();
    // Observed on ZooKeeper 3.8: auth expands in place, duplicates after expansion stay.
    assert_eq!(
        h.get_acl("/d").unwrap(),
        vec![
            acl(31, "digest", &digest),
            acl(1, "world", "anyone"),
            acl(3, "digest", &digest)
        ]
    );
    let before = h.stat("/d");
    assert_eq!(h.set_acl("/d", world(31), 5), Err(ErrorCode::BadVersion));
    assert_eq!(h.set_acl("/d", vec![], 0), Err(ErrorCode::InvalidAcl));
    assert_eq!(
        h.set_acl("/nope", vec![], 0),
        Err(ErrorCode::InvalidAcl),
        "ACL before lookup"
    );
    assert_eq!(h.set_acl("/nope", world(31), 0), Err(ErrorCode::NoNode));
    assert_eq!(h.set_acl("/d/", world(31), 0), Err(ErrorCode::BadArguments));

    // Another session (ip only) sees hashes masked: it has READ but not ADMIN.
    let mine = std::mem::replace(&mut h.auth, vec![id("ip", "10.0.0.1")]);
    assert_eq!(
        h.get_acl("/d").unwrap(),
        vec![
            acl(31, "digest", "bob:x"),
            acl(1, "world", "anyone"),
            acl(3, "digest", "bob:x")
        ]
    );
    assert_eq!(h.set_acl("/d", world(31), -1), Err(ErrorCode::NoAuth));
    assert_eq!(h.set("/d", b"", -1), Err(ErrorCode::NoAuth));
    assert_eq!(h.create("/d/x", 0), Err(ErrorCode::NoAuth));
    assert_eq!(
        h.delete("/d/x", -1),
        Err(ErrorCode::NoAuth),
        "DELETE on the parent first"
    );
    h.auth = mine;

    let (r, triggers) = h.write(Request::SetAcl(SetAclRequest {
        path: "/d".into(),
        acl: world(31),
        version: 0,
    }));
    let Ok(Response::Stat(s)) = r else { panic!() };
    assert!(triggers.is_empty(), "setACL triggers nothing");
    assert_eq!(
        s,
        Stat {
            aversion: 1,
            ..before
        },
        "only aversion changes"
    );
    assert_eq!(h.get_acl("/d").unwrap(), world(31));
    assert_eq!(h.t.acl_cache_size(), 2, "the digest list was released");

    // ADMIN without READ: the full ACL; neither: NoAuth. Observed on ZooKeeper 3.8.
    h.create_acl(
        "/r",
        vec![
            acl(perms::ADMIN, "world", "anyone"),
            acl(31, "digest", &digest),
        ],
    )
    .unwrap();
    h.create_acl(
        "/w",
        vec![
            acl(perms::WRITE, "world", "anyone"),
            acl(31, "digest", &digest),
        ],
    )
    .unwrap();
    h.auth = vec![id("ip", "10.0.0.1")];
    assert_eq!(
        h.get_acl("/r").unwrap(),
        vec![
            acl(perms::ADMIN, "world", "anyone"),
            acl(31, "digest", &digest)
        ]
    );
    assert_eq!(h.get_acl("/w"), Err(ErrorCode::NoAuth));
    assert_eq!(h.get_acl("/nope"), Err(ErrorCode::NoNode));
}

#[test]
fn check_op() {
    let mut h = H::new();
    let check = |h: &mut H, p: &str, v: i32| {
        h.write(Request::Check(CheckVersionRequest {
            path: p.into(),
            version: v,
        }))
    };
    // Observed on ZooKeeper 3.8 for the errors.
    assert_eq!(check(&mut h, "/zookeeper", 5).0, Err(ErrorCode::BadVersion));
    assert_eq!(check(&mut h, "/nope", 5).0, Err(ErrorCode::NoNode));
    assert_eq!(check(&mut h, "/a/", 5).0, Err(ErrorCode::BadArguments));
    let (r, triggers) = check(&mut h, "/zookeeper", 0);
    assert_eq!(r, Ok(Response::Stat(h.stat("/zookeeper"))));
    assert!(triggers.is_empty());
    h.create_acl("/w", world(perms::WRITE)).unwrap();
    assert_eq!(check(&mut h, "/w", -1).0, Err(ErrorCode::NoAuth));
}

#[test]
fn reconfig_and_non_writes() {
    let mut h = H::new();
    let r = h.write(Request::Reconfig(ReconfigRequest::default()));
    assert_eq!(r, (Err(ErrorCode::ReconfigDisabled), vec![]));
    assert_eq!(h.write(Request::Ping).0, Err(ErrorCode::Unimplemented));
    assert_eq!(h.read(Request::Ping), Err(ErrorCode::Unimplemented));
    assert_eq!(
        h.read(create_req(OpCode::Create, "/a", b"", world(31), 0)),
        Err(ErrorCode::Unimplemented)
    );
}

// ---- ACL enforcement ----

#[test]
fn acl_enforcement_per_op() {
    let mut h = H::new();
    let digest = digest_id("alice:secret");
    h.create_acl("/open", world(31)).unwrap();
    h.create_acl("/ro", world(perms::READ)).unwrap();
    h.create_acl("/wo", world(perms::WRITE)).unwrap();
    h.create_acl("/priv", vec![acl(31, "digest", &digest)])
        .unwrap();
    h.create_acl("/lan", vec![acl(31, "ip", "10.1.0.0/16")])
        .unwrap();
    h.create_acl("/none", vec![acl(0, "world", "anyone")])
        .unwrap();

    h.auth = vec![id("ip", "192.168.0.1")];
    // exists checks no ACL, like the reference server (Debian's 3.8.0, before ZOOKEEPER-2590).
    assert!(h.exists("/wo").is_ok());
    assert!(h.exists("/none").is_ok());
    assert!(h.exists("/ro").is_ok());
    assert_eq!(h.exists("/wo/x"), Err(ErrorCode::NoNode));
    assert_eq!(h.get("/wo"), Err(ErrorCode::NoAuth));
    assert_eq!(h.children("/wo"), Err(ErrorCode::NoAuth));
    assert!(h.set("/wo", b"x", -1).is_ok());
    assert_eq!(h.set("/ro", b"x", -1), Err(ErrorCode::NoAuth));
    assert_eq!(h.create("/ro/x", 0), Err(ErrorCode::NoAuth));
    assert_eq!(h.get("/priv"), Err(ErrorCode::NoAuth));
    assert_eq!(h.get("/lan"), Err(ErrorCode::NoAuth));
    assert_eq!(h.get("/none"), Err(ErrorCode::NoAuth));
    assert_eq!(
        h.read(Request::GetAllChildrenNumber(GetAllChildrenNumberRequest {
            path: "/wo".into()
        })),
        Err(ErrorCode::NoAuth)
    );
    assert_eq!(
        h.read(Request::GetChildren2(GetChildren2Request {
            path: "/wo".into(),
            watch: false
        })),
        Err(ErrorCode::NoAuth)
    );

    h.auth = vec![id("ip", "10.1.200.3")];
    assert!(h.get("/lan").is_ok());
    h.auth = vec![id("ip", "10.2.0.1"), id("digest", &digest)];
    assert!(h.get("/priv").is_ok());
    assert_eq!(h.get("/lan"), Err(ErrorCode::NoAuth));
    h.create("/priv/child", 0).unwrap();
    h.delete("/priv/child", -1).unwrap();
    // The digest of another password does not match.
    h.auth = vec![id("digest", &digest_id("alice:wrong"))];
    assert_eq!(h.get("/priv"), Err(ErrorCode::NoAuth));
    // super bypasses everything.
    h.auth = vec![id("super", "")];
    assert!(h.get("/none").is_ok());
    assert!(h.set("/none", b"x", -1).is_ok());
    h.create("/none/x", 0).unwrap();
    h.delete("/none/x", -1).unwrap();
    assert!(h.set_acl("/none", world(31), -1).is_ok());
}

#[test]
fn reads() {
    let mut h = H::new();
    h.create("/a", 0).unwrap();
    for c in ["z", "b", "m"] {
        h.create(&format!("/a/{c}"), 0).unwrap();
    }
    h.create("/a/b/c", 0).unwrap();
    assert_eq!(h.children("/a").unwrap(), vec!["b", "m", "z"]);
    assert_eq!(h.children("/nope"), Err(ErrorCode::NoNode));
    assert_eq!(
        h.get("/a/"),
        Err(ErrorCode::NoNode),
        "reads do not validate"
    );
    assert_eq!(h.get("a"), Err(ErrorCode::NoNode));
    assert_eq!(h.get("/a\0b"), Err(ErrorCode::NoNode));
    assert_eq!(h.exists("/a\0b"), Err(ErrorCode::BadArguments));
    assert_eq!(
        h.get("").unwrap().1,
        h.stat("/"),
        "\"\" is the root's alias"
    );
    let gc2 = h.read(Request::GetChildren2(GetChildren2Request {
        path: "/a".into(),
        watch: true,
    }));
    assert_eq!(
        gc2,
        Ok(Response::GetChildren2(GetChildren2Response {
            children: vec!["b".into(), "m".into(), "z".into()],
            stat: h.stat("/a"),
        }))
    );
    let acn = |h: &H, p: &str| {
        h.read(Request::GetAllChildrenNumber(GetAllChildrenNumberRequest {
            path: p.into(),
        }))
    };
    let n = |v| {
        Ok(Response::GetAllChildrenNumber(
            GetAllChildrenNumberResponse { total_number: v },
        ))
    };
    assert_eq!(acn(&h, "/a"), n(4));
    assert_eq!(acn(&h, "/a/b"), n(1));
    // Observed on ZooKeeper 3.8: "/" counts all but the root, "" all of them.
    assert_eq!(acn(&h, "/"), n(8));
    assert_eq!(acn(&h, ""), n(9));
    assert_eq!(acn(&h, "/nope"), Err(ErrorCode::NoNode));

    // multiRead: per-op results, errors in place; a write op makes it a MarshallingError.
    let r = h.read(Request::MultiRead(vec![
        MultiOp::GetData(GetDataRequest {
            path: "/a".into(),
            watch: false,
        }),
        MultiOp::GetChildren(GetChildrenRequest {
            path: "/a".into(),
            watch: false,
        }),
        MultiOp::GetData(GetDataRequest {
            path: "/nope".into(),
            watch: false,
        }),
    ]));
    assert_eq!(
        r,
        Ok(Response::Multi(vec![
            MultiResult::GetData(Some(vec![]), h.stat("/a")),
            MultiResult::GetChildren(vec!["b".into(), "m".into(), "z".into()]),
            MultiResult::Error(ErrorCode::NoNode),
        ]))
    );
    h.create_acl("/wo", world(perms::WRITE)).unwrap();
    let r = h.read(Request::MultiRead(vec![MultiOp::GetChildren(
        GetChildrenRequest {
            path: "/wo".into(),
            watch: false,
        },
    )]));
    assert_eq!(
        r,
        Ok(Response::Multi(vec![MultiResult::Error(ErrorCode::NoAuth)]))
    );
    for write in [mcheck("/a", -1), mcreate(OpCode::Create, "/x", 0)] {
        let r = h.read(Request::MultiRead(vec![
            MultiOp::GetData(GetDataRequest {
                path: "/a".into(),
                watch: false,
            }),
            write,
        ]));
        assert_eq!(r, Err(ErrorCode::MarshallingError));
    }
    assert_eq!(
        h.read(Request::MultiRead(vec![])),
        Ok(Response::Multi(vec![]))
    );
}

// ---- multi ----

#[test]
fn multi_success() {
    let mut h = H::new();
    // Observed on ZooKeeper 3.8 (result shapes per ZooKeeper 3.8.4+/3.9, which keep create2).
    let (r, triggers) = h.multi(vec![
        mcreate(OpCode::Create, "/m", 0),
        mcreate(OpCode::Create2, "/m/a", 2),
        mcreate(OpCode::CreateContainer, "/m/a", 2),
        mset("/m", b"hi", -1),
        mcheck("/m", 1),
        mdelete("/m/a0000000000", -1),
        MultiOp::CreateTtl(CreateTtlRequest {
            path: "/m/t".into(),
            data: Some(vec![]),
            acl: world(31),
            flags: CreateMode::PersistentWithTtl.wire(),
            ttl: 1000,
        }),
        mcreate(OpCode::Create, "/m/c", 4),
    ]);
    let Ok(Response::Multi(results)) = r else {
        panic!("{r:?}")
    };
    let zxid = h.zxid;
    let new = |children| Stat {
        czxid: zxid,
        mzxid: zxid,
        ctime: h.time,
        mtime: h.time,
        pzxid: zxid,
        num_children: children,
        ..Stat::default()
    };
    assert_eq!(results[0], MultiResult::Create("/m".into()));
    assert_eq!(
        results[1],
        MultiResult::Create2("/m/a0000000000".into(), new(0))
    );
    assert_eq!(
        results[2],
        MultiResult::Create2("/m/a0000000001".into(), new(0))
    );
    assert_eq!(
        results[3],
        MultiResult::SetData(Stat {
            version: 1,
            cversion: 2,
            num_children: 2,
            data_length: 2,
            ..new(2)
        })
    );
    assert_eq!(results[4], MultiResult::Check);
    assert_eq!(results[5], MultiResult::Delete);
    assert_eq!(results[6], MultiResult::Create2("/m/t".into(), new(0)));
    assert_eq!(results[7], MultiResult::Create2("/m/c".into(), new(0)));
    assert_eq!(results.len(), 8);
    assert_eq!(
        triggers,
        vec![
            WatchTrigger::Created("/m".into()),
            WatchTrigger::ChildrenChanged("/".into()),
            WatchTrigger::Created("/m/a0000000000".into()),
            WatchTrigger::ChildrenChanged("/m".into()),
            WatchTrigger::Created("/m/a0000000001".into()),
            WatchTrigger::ChildrenChanged("/m".into()),
            WatchTrigger::DataChanged("/m".into()),
            WatchTrigger::Deleted("/m/a0000000000".into()),
            WatchTrigger::ChildrenChanged("/m".into()),
            WatchTrigger::Created("/m/t".into()),
            WatchTrigger::ChildrenChanged("/m".into()),
            WatchTrigger::Created("/m/c".into()),
            WatchTrigger::ChildrenChanged("/m".into()),
        ]
    );
    // createContainer in a multi makes a container; create with flag 4 does too in a multi.
    h.create("/m/a0000000001/x", 0).unwrap();
    h.delete("/m/a0000000001/x", -1).unwrap();
    h.create("/m/c/x", 0).unwrap();
    h.delete("/m/c/x", -1).unwrap();
    assert_eq!(h.t.reapable_nodes(h.time), vec!["/m/a0000000001", "/m/c"]);
    // Empty multi.
    assert_eq!(h.multi_results(vec![]), vec![]);
}

#[test]
fn multi_failure_rolls_back() {
    let mut h = H::new();
    h.create("/keep", 0).unwrap();
    h.create("/keep/e", CreateMode::Ephemeral.wire()).unwrap();
    h.set("/keep", b"orig", -1).unwrap();
    let digest = digest_id("u:p");
    h.create_acl("/keep/acl", vec![acl(31, "digest", &digest)])
        .unwrap();
    let before = h.t.clone();
    // Observed on ZooKeeper 3.8: [0, 0, -103, -2, -2].
    let results = h.multi_results(vec![
        mcreate(OpCode::Create, "/m2", 0),
        mset("/m2", b"x", -1),
        mcheck("/m2", 5),
        mdelete("/m2", -1),
        mcreate(OpCode::Create, "/m3", 0),
    ]);
    assert_eq!(
        results,
        vec![
            MultiResult::Error(ErrorCode::Ok),
            MultiResult::Error(ErrorCode::Ok),
            MultiResult::Error(ErrorCode::BadVersion),
            MultiResult::Error(ErrorCode::RuntimeInconsistency),
            MultiResult::Error(ErrorCode::RuntimeInconsistency),
        ]
    );
    // Deletes, setData, sequential creates and ACL-only lists all come back.
    h.auth.push(id("digest", &digest));
    let results = h.multi_results(vec![
        mdelete("/keep/e", -1),
        mdelete("/keep/acl", -1),
        mset("/keep", b"new", -1),
        mcreate(OpCode::Create, "/keep/s", 2),
        mcreate(OpCode::Create, "/keep/s", 2),
        mdelete("/keep", -1),
        mcreate(OpCode::Create, "/x", 0),
    ]);
    assert_eq!(results[5], MultiResult::Error(ErrorCode::NotEmpty));
    assert!(h.t == before);
    assert_eq!(h.t.ephemerals_of(SESSION), vec!["/keep/e"]);
    assert_eq!(h.get("/keep").unwrap().0, b"orig");
    assert_eq!(
        h.get_acl("/keep/acl").unwrap(),
        vec![acl(31, "digest", &digest)]
    );
    assert_eq!(h.create("/keep/s", 2).unwrap(), "/keep/s0000000002");
    // Observed on ZooKeeper 3.8: a later op failing on a node an earlier op created.
    let results = h.multi_results(vec![
        mcreate(OpCode::Create, "/q", 0),
        mcreate(OpCode::Create, "/q/a", 0),
        mcreate(OpCode::Create, "/q/a", 0),
    ]);
    assert_eq!(results[2], MultiResult::Error(ErrorCode::NodeExists));
    assert!(h.t.stat("/q").is_none());
    // Special paths fail inside a multi too.
    assert_eq!(
        h.multi_results(vec![mdelete("/zookeeper", -1)]),
        vec![MultiResult::Error(ErrorCode::BadArguments)]
    );
}

#[test]
fn multi_sees_earlier_ops() {
    let mut h = H::new();
    let results = h.multi_results(vec![
        mcreate(OpCode::Create, "/s", 0),
        mcreate(OpCode::Create, "/s/n", 2),
        mcreate(OpCode::Create, "/s/n", 2),
        mdelete("/s/n0000000000", -1),
        mcreate(OpCode::Create, "/s/n", 2),
        mset("/s/n0000000001", b"a", 0),
        mset("/s/n0000000001", b"b", 1),
        mcreate(OpCode::Create, "/s/e", CreateMode::Ephemeral.wire()),
    ]);
    assert!(
        results.iter().all(|r| !matches!(r, MultiResult::Error(_))),
        "{results:?}"
    );
    assert_eq!(results[4], MultiResult::Create("/s/n0000000002".into()));
    assert_eq!(
        h.children("/s").unwrap(),
        vec!["e", "n0000000001", "n0000000002"]
    );
    assert_eq!(h.stat("/s").cversion, 5);
    // An ephemeral created earlier in the multi refuses children.
    let results = h.multi_results(vec![
        mcreate(OpCode::Create, "/e2", CreateMode::Ephemeral.wire()),
        mcreate(OpCode::Create, "/e2/c", 0),
    ]);
    assert_eq!(
        results[1],
        MultiResult::Error(ErrorCode::NoChildrenForEphemerals)
    );
}

#[test]
fn multi_decode_rules() {
    let mut h = H::new();
    // Observed on ZooKeeper 3.8: read ops in a multi are a MarshallingError.
    for ops in [
        vec![
            mcreate(OpCode::Create, "/m4", 0),
            MultiOp::GetData(GetDataRequest {
                path: "/".into(),
                watch: false,
            }),
        ],
        vec![MultiOp::GetChildren(GetChildrenRequest {
            path: "/".into(),
            watch: false,
        })],
        // ZooKeeper 3.9: invalid or TTL flags under create/create2/createContainer.
        vec![mcreate(OpCode::Create, "/m5", 9)],
        vec![mcreate(
            OpCode::Create,
            "/m5",
            CreateMode::PersistentWithTtl.wire(),
        )],
        vec![mcreate(
            OpCode::Create2,
            "/m5",
            CreateMode::PersistentSequentialWithTtl.wire(),
        )],
    ] {
        assert_eq!(h.multi(ops), (Err(ErrorCode::MarshallingError), vec![]));
    }
    // Observed on ZooKeeper 3.8: createTTL with non-TTL flags becomes a plain create.
    let ttl_op = |path: &str, flags: i32, ttl: i64| {
        MultiOp::CreateTtl(CreateTtlRequest {
            path: path.into(),
            data: Some(vec![]),
            acl: world(31),
            flags,
            ttl,
        })
    };
    assert_eq!(
        h.multi_results(vec![ttl_op("/m7", 0, -1)]),
        vec![MultiResult::Create("/m7".into())]
    );
    assert_eq!(
        h.multi_results(vec![ttl_op("/m8", 0, 5)]),
        vec![MultiResult::Create("/m8".into())]
    );
    assert_eq!(
        h.multi_results(vec![ttl_op("/m9", 9, 5)]),
        vec![MultiResult::Error(ErrorCode::BadArguments)]
    );
    assert_eq!(
        h.multi_results(vec![ttl_op("/m9", CreateMode::PersistentWithTtl.wire(), 0)]),
        vec![MultiResult::Error(ErrorCode::BadArguments)]
    );
    h.ttl = false;
    assert_eq!(
        h.multi_results(vec![ttl_op(
            "/m9",
            CreateMode::PersistentWithTtl.wire(),
            10
        )]),
        vec![MultiResult::Error(ErrorCode::Unimplemented)]
    );
}

// ---- snapshots ----

#[test]
fn snapshot_roundtrip_and_canonical_bytes() {
    let mut h = H::new();
    h.create("/a", 0).unwrap();
    h.set("/a", b"payload", -1).unwrap();
    h.create("/a/e", CreateMode::Ephemeral.wire()).unwrap();
    h.write(create_req(OpCode::CreateContainer, "/c", b"", world(31), 0))
        .0
        .unwrap();
    h.write(ttl_req("/t", CreateMode::PersistentWithTtl.wire(), 50))
        .0
        .unwrap();
    h.auth.push(id("digest", &digest_id("u:p")));
    h.create_acl("/d", vec![acl(31, "auth", "")]).unwrap();
    h.create_acl("/\u{e9}t\u{e9}", world(31)).unwrap();
    let mut bytes = Vec::new();
    h.t.serialize(&mut bytes);
    let back = DataTree::deserialize(&bytes).unwrap();
    back.check_invariants().unwrap();
    let mut again = Vec::new();
    back.serialize(&mut again);
    assert_eq!(bytes, again);
    assert!(back == h.t);
    assert_eq!(back.ephemerals_of(SESSION), vec!["/a/e"]);
    assert_eq!(back.reapable_nodes(i64::MAX), vec!["/t"]);
    assert_eq!(back.approximate_data_size(), h.t.approximate_data_size());
    assert_eq!(back.node_count(), h.t.node_count());
    assert_eq!(back.acl_cache_size(), h.t.acl_cache_size());
    assert_eq!(back.stat("/a"), h.t.stat("/a"));

    // Same znodes reached through different histories (different internal layouts): same bytes.
    let mut x = H::new();
    let mut y = H::new();
    x.multi_results(vec![
        mcreate(OpCode::Create, "/p", 0),
        mcreate(OpCode::Create, "/q", 0),
    ]);
    y.multi_results(vec![
        mcreate(OpCode::Create, "/q", 0),
        mcreate(OpCode::Create, "/p", 0),
    ]);
    let (mut bx, mut by) = (Vec::new(), Vec::new());
    x.t.serialize(&mut bx);
    y.t.serialize(&mut by);
    assert_eq!(bx, by);
}

#[test]
fn snapshot_rejects_corruption() {
    let mut h = H::new();
    h.create("/a", 0).unwrap();
    h.create("/a/b", 0).unwrap();
    let mut bytes = Vec::new();
    h.t.serialize(&mut bytes);
    assert!(DataTree::deserialize(&[]).is_err());
    for cut in 0..bytes.len() {
        assert!(DataTree::deserialize(&bytes[..cut]).is_err(), "cut {cut}");
    }
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x40;
        assert!(DataTree::deserialize(&b).is_err(), "flip {i}");
    }
    let mut b = bytes.clone();
    b.push(0);
    assert!(DataTree::deserialize(&b).is_err());
    let mut b = bytes.clone();
    b[0] = b'X';
    assert_eq!(DataTree::deserialize(&b), Err(TreeError::BadMagic));
}

/// Re-encodes a snapshot body with a fresh checksum, to test the structural checks.
fn reseal(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    body
}

#[test]
fn snapshot_structural_checks() {
    let t = DataTree::new();
    let mut bytes = Vec::new();
    t.serialize(&mut bytes);
    bytes.truncate(bytes.len() - 4);
    // Node count one too high / low.
    let count_at = {
        // magic + version + acl table (2 lists of one entry each).
        let acl_list = |scheme: &str, id: &str| 4 + 4 + 4 + scheme.len() + 4 + id.len();
        8 + 4 + 4 + 2 * acl_list("world", "anyone")
    };
    assert_eq!(&bytes[count_at..count_at + 8], &4u64.to_be_bytes());
    for bad in [3u64, 5] {
        let mut b = bytes.clone();
        b[count_at..count_at + 8].copy_from_slice(&bad.to_be_bytes());
        assert!(DataTree::deserialize(&reseal(b)).is_err());
    }
    assert_eq!(
        DataTree::deserialize(&reseal(bytes.clone())),
        Ok(DataTree::new())
    );
    // Trailing garbage under a valid checksum.
    let mut b = bytes.clone();
    b.extend_from_slice(&[1, 2, 3]);
    assert_eq!(
        DataTree::deserialize(&reseal(b)),
        Err(TreeError::TrailingBytes(3))
    );
    // Unsorted children: swap the names "config" and "quota" (same length? no: rename).
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(text.contains("config") && text.contains("quota"));
    let mut b = bytes.clone();
    let pos = bytes.windows(6).position(|w| w == b"config").unwrap();
    b[pos..pos + 6].copy_from_slice(b"zonfig");
    assert_eq!(
        DataTree::deserialize(&reseal(b)),
        Err(TreeError::Invalid("children not sorted"))
    );
    let mut b = bytes.clone();
    b[pos..pos + 6].copy_from_slice(b"con/ig");
    assert!(DataTree::deserialize(&reseal(b)).is_err());
}

// ---- memory layout and index ----

#[test]
fn node_is_compact() {
    assert!(
        std::mem::size_of::<Option<node::Node>>() <= 96,
        "{}",
        std::mem::size_of::<Option<node::Node>>()
    );
}

#[test]
fn hash_collisions_are_handled() {
    let mut h = H::new();
    h.t.force_hash_collisions();
    h.t.check_invariants().unwrap();
    for i in 0..20 {
        h.create(&format!("/n{i}"), 0).unwrap();
        h.create(&format!("/n{i}/c"), 0).unwrap();
    }
    for i in (0..20).step_by(3) {
        h.delete(&format!("/n{i}/c"), -1).unwrap();
    }
    assert_eq!(h.create("/n4/c", 0), Err(ErrorCode::NodeExists));
    assert_eq!(h.create("/n3/c", 0).unwrap(), "/n3/c");
    assert_eq!(h.children("/n7").unwrap(), vec!["c"]);
    assert!(h.t.stat("/n6/c").is_none());
}

/// Memory check: `cargo test --release --lib tree::tests::million_znodes -- --ignored --nocapture`.
#[test]
#[ignore]
fn million_znodes() {
    fn rss_kb() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
    let base = rss_kb();
    let mut t = DataTree::new();
    let auth = [id("ip", "127.0.0.1")];
    let mut ctx = OpContext {
        zxid: 1,
        time_ms: 1,
        session_id: 1,
        auth: &auth,
        ttl_enabled: false,
        providers: AuthProviders::default(),
    };
    let data = vec![7u8; 100];
    let start = std::time::Instant::now();
    t.apply_write(
        &ctx,
        &create_req(OpCode::Create, "/bench", b"", world(31), 0),
    )
    .0
    .unwrap();
    for i in 0..1_000_000 {
        ctx.zxid += 1;
        let req = create_req(
            OpCode::Create,
            &format!("/bench/node-{i:07}"),
            &data,
            world(31),
            0,
        );
        t.apply_write(&ctx, &req).0.unwrap();
    }
    let elapsed = start.elapsed();
    let rss = rss_kb() - base;
    let mut bytes = Vec::new();
    let s = std::time::Instant::now();
    t.serialize(&mut bytes);
    let ser = s.elapsed();
    let s = std::time::Instant::now();
    let back = DataTree::deserialize(&bytes).unwrap();
    let de = s.elapsed();
    let s = std::time::Instant::now();
    let n = match t.read(
        &ctx,
        &Request::GetChildren(GetChildrenRequest {
            path: "/bench".into(),
            watch: false,
        }),
    ) {
        Ok(Response::GetChildren(r)) => r.children.len(),
        _ => 0,
    };
    let gc = s.elapsed();
    println!(
        "1M creates in {elapsed:?}; tree RSS {} MB; snapshot {} MB, serialize {ser:?}, deserialize {de:?}; getChildren({n}) {gc:?}",
        rss / 1024,
        bytes.len() / (1 << 20)
    );
    assert_eq!(back.znode_count(), t.znode_count());
}

#[test]
fn quota_stats_like_zookeeper() {
    // The same sequence on ZooKeeper 3.8 gave exactly these stats.
    let mut h = H::new();
    let mk = |h: &mut H, p: &str, d: &[u8]| match h
        .write(create_req(OpCode::Create2, p, d, world(31), 0))
        .0
    {
        Ok(Response::Create2(r)) => r.stat,
        other => panic!("{other:?}"),
    };
    let stats = "/zookeeper/quota/qa/zookeeper_stats";
    mk(&mut h, "/qa", b"root");
    mk(&mut h, "/qa/x", b"abc");
    mk(&mut h, "/zookeeper/quota/qa", b"");
    mk(
        &mut h,
        "/zookeeper/quota/qa/zookeeper_limits",
        b"count=10,bytes=100",
    );
    let created = mk(&mut h, stats, b"count=0,bytes=0;zz=1");
    assert_eq!(created.data_length, 20, "the reply shows the data as sent");
    let (data, stat) = h.get(stats).unwrap();
    assert_eq!(data, b"count=2,bytes=7");
    assert_eq!(
        (stat.version, stat.mzxid, stat.data_length),
        (0, created.mzxid, 15)
    );
    mk(&mut h, "/qa/y", b"12345");
    assert_eq!(h.get(stats).unwrap().0, b"count=3,bytes=12");
    h.set("/qa/x", b"abcdef", -1).unwrap();
    assert_eq!(h.get(stats).unwrap().0, b"count=3,bytes=15");
    h.delete("/qa/y", -1).unwrap();
    assert_eq!(h.get(stats).unwrap().0, b"count=2,bytes=10");
    mk(&mut h, "/qa/x/deep", b"1");
    assert_eq!(h.get(stats).unwrap().0, b"count=3,bytes=11");
    h.set(stats, b"count=1,bytes=2=;zhard=7;ahard=3", -1)
        .unwrap();
    mk(&mut h, "/qa/z", b"");
    let (data, stat) = h.get(stats).unwrap();
    assert_eq!(data, b"count=2,bytes=2=;ahard=3;zhard=7");
    assert_eq!((stat.version, stat.data_length), (1, 32));
    // A multi that fails restores the stats too.
    let before = h.t.clone();
    let results = h.multi_results(vec![
        mcreate(OpCode::Create, "/qa/m", 0),
        mdelete("/zookeeper/quota/qa/zookeeper_limits", -1),
        mcreate(OpCode::Create, "/qa/n", 0),
        mcheck("/qa", 99),
    ]);
    assert_eq!(results[3], MultiResult::Error(ErrorCode::BadVersion));
    assert!(h.t == before);
    assert_eq!(h.get(stats).unwrap().0, b"count=2,bytes=2=;ahard=3;zhard=7");
    // Without the limit node, changes below /qa are not counted.
    h.delete("/zookeeper/quota/qa/zookeeper_limits", -1)
        .unwrap();
    mk(&mut h, "/qa/w", b"");
    assert_eq!(h.get(stats).unwrap().0, b"count=2,bytes=2=;ahard=3;zhard=7");
    // Nested quotas: the deepest prefix wins.
    mk(&mut h, "/zookeeper/quota/qa/zookeeper_limits", b"");
    mk(&mut h, "/zookeeper/quota/qa/x", b"");
    mk(&mut h, "/zookeeper/quota/qa/x/zookeeper_limits", b"");
    mk(&mut h, "/zookeeper/quota/qa/x/zookeeper_stats", b"");
    assert_eq!(
        h.get("/zookeeper/quota/qa/x/zookeeper_stats").unwrap().0,
        b"count=2,bytes=7"
    );
    mk(&mut h, "/qa/x/d2", b"zz");
    assert_eq!(
        h.get("/zookeeper/quota/qa/x/zookeeper_stats").unwrap().0,
        b"count=3,bytes=9"
    );
    assert_eq!(h.get(stats).unwrap().0, b"count=2,bytes=2=;ahard=3;zhard=7");
    mk(&mut h, "/qa/v", b"");
    assert_eq!(h.get(stats).unwrap().0, b"count=3,bytes=2=;ahard=3;zhard=7");
    // Snapshots keep the quota bookkeeping.
    let mut bytes = Vec::new();
    h.t.serialize(&mut bytes);
    let mut back = DataTree::deserialize(&bytes).unwrap();
    back.check_invariants().unwrap();
    std::mem::swap(&mut h.t, &mut back);
    mk(&mut h, "/qa/x/d3", b"");
    assert_eq!(
        h.get("/zookeeper/quota/qa/x/zookeeper_stats").unwrap().0,
        b"count=4,bytes=9"
    );
}

// ---- null data ----

fn set_req(path: &str, data: Option<&[u8]>) -> Request {
    Request::SetData(SetDataRequest {
        path: path.into(),
        data: data.map(<[u8]>::to_vec),
        version: -1,
    })
}

fn null_create(path: &str) -> CreateRequest {
    CreateRequest {
        path: path.into(),
        data: None,
        acl: world(perms::ALL),
        flags: 0,
    }
}

/// DataTree keeps `byte[] data == null` as null: getData answers null (length -1 on the
/// wire), dataLength 0; empty data stays empty.
#[test]
fn null_data_reads_back_as_null_and_empty_as_empty() {
    let mut h = H::new();
    let req = Request::Create {
        op: OpCode::Create2,
        req: null_create("/n"),
    };
    let (res, _) = h.write(req);
    let Ok(Response::Create2(r)) = res else {
        panic!("{res:?}");
    };
    assert_eq!(r.stat.data_length, 0);
    assert_eq!(h.get_opt("/n"), Ok(None));
    h.create("/e", 0).unwrap();
    assert_eq!(h.get_opt("/e"), Ok(Some(vec![])));

    // setData to empty, to bytes and back to null.
    h.write(set_req("/n", Some(b""))).0.unwrap();
    assert_eq!(h.get_opt("/n"), Ok(Some(vec![])));
    h.write(set_req("/n", Some(b"abc"))).0.unwrap();
    assert_eq!(h.get_opt("/n"), Ok(Some(b"abc".to_vec())));
    let size = h.t.approximate_data_size();
    h.write(set_req("/n", None)).0.unwrap();
    assert_eq!(h.get_opt("/n"), Ok(None));
    assert_eq!(h.t.approximate_data_size(), size - 3);
    assert_eq!(h.stat("/n").data_length, 0);

    // multiRead's getData keeps null too.
    let res = h.read(Request::MultiRead(vec![
        MultiOp::GetData(GetDataRequest {
            path: "/n".into(),
            watch: false,
        }),
        MultiOp::GetData(GetDataRequest {
            path: "/e".into(),
            watch: false,
        }),
    ]));
    assert_eq!(
        res,
        Ok(Response::Multi(vec![
            MultiResult::GetData(None, h.stat("/n")),
            MultiResult::GetData(Some(vec![]), h.stat("/e")),
        ]))
    );
    h.t.check_invariants().unwrap();
}

/// A multi that creates null data and sets data to null applies it; a failed one restores
/// null data that it overwrote.
#[test]
fn null_data_through_multi_and_its_rollback() {
    let mut h = H::new();
    h.multi_results(vec![
        MultiOp::Create {
            op: OpCode::Create,
            req: null_create("/m"),
        },
        mcreate(OpCode::Create, "/k", 0),
        MultiOp::SetData(SetDataRequest {
            path: "/k".into(),
            data: None,
            version: -1,
        }),
    ]);
    assert_eq!(h.get_opt("/m"), Ok(None));
    assert_eq!(h.get_opt("/k"), Ok(None));
    let before = h.t.clone();
    let results = h.multi_results(vec![mset("/m", b"x", -1), mcheck("/m", 99)]);
    assert_eq!(results[1], MultiResult::Error(ErrorCode::BadVersion));
    assert_eq!(h.get_opt("/m"), Ok(None));
    assert!(h.t == before);
    h.t.check_invariants().unwrap();
}

/// Snapshots keep null apart from empty (format 3), and format 2 snapshots still load.
#[test]
fn snapshot_keeps_null_data_and_loads_format_2() {
    let mut h = H::new();
    h.write(Request::Create {
        op: OpCode::Create,
        req: null_create("/n"),
    })
    .0
    .unwrap();
    h.create("/e", 0).unwrap();
    h.set("/e", b"", -1).unwrap();
    h.create("/d", 0).unwrap();
    h.set("/d", b"data", -1).unwrap();
    let mut bytes = Vec::new();
    h.t.serialize(&mut bytes);
    assert_eq!(&bytes[8..12], &3u32.to_be_bytes());
    let back = DataTree::deserialize(&bytes).unwrap();
    let node = |t: &DataTree, p: &str| {
        let id = t.nodes.lookup(p).unwrap();
        t.nodes.get(id).unwrap().data_opt().map(<[u8]>::to_vec)
    };
    assert_eq!(node(&back, "/n"), None);
    assert_eq!(node(&back, "/e"), Some(vec![]));
    assert_eq!(node(&back, "/d"), Some(b"data".to_vec()));
    assert!(back == h.t);

    // Format 2 had no null: the same tree minus null reads back from it with /n empty.
    let mut v2 = Vec::new();
    h.t.serialize_v2(&mut v2);
    assert_eq!(&v2[8..12], &2u32.to_be_bytes());
    let old = DataTree::deserialize(&v2).unwrap();
    old.check_invariants().unwrap();
    assert_eq!(node(&old, "/n"), Some(vec![]));
    assert_eq!(node(&old, "/d"), Some(b"data".to_vec()));
    assert_eq!(old.stat("/d"), h.t.stat("/d"));
    assert_eq!(old.approximate_data_size(), h.t.approximate_data_size());
    let mut bumped = v2.clone();
    bumped[8..12].copy_from_slice(&4u32.to_be_bytes());
    assert_eq!(
        DataTree::deserialize(&bumped),
        Err(TreeError::UnsupportedVersion(4))
    );
}

/// A format 2 snapshot built by hand from the documented layout (not by our encoder): root
/// with one child "/a" holding "hi". It loads, and its data comes back as non-null.
#[test]
fn hand_made_format_2_snapshot_loads() {
    let mut b = Vec::new();
    b.extend_from_slice(b"RKTREE\0\0");
    b.extend_from_slice(&2u32.to_be_bytes());
    b.extend_from_slice(&1u32.to_be_bytes()); // one ACL list
    b.extend_from_slice(&1u32.to_be_bytes()); // of one entry
    b.extend_from_slice(&31i32.to_be_bytes());
    for s in ["world", "anyone"] {
        b.extend_from_slice(&(s.len() as u32).to_be_bytes());
        b.extend_from_slice(s.as_bytes());
    }
    b.extend_from_slice(&2u64.to_be_bytes()); // two nodes
                                              // root: name "", 1 child, nine zero stats, acl 0, data length 0
    b.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // "/a": name, no children, czxid 5 (zigzag 10), deltas 0, ctime 1000 (zigzag 2000 =
    // 0xd0 0x0f), acl 0, data "hi"
    b.extend_from_slice(&[
        1, b'a', 0, 10, 0, 0, 0xd0, 0x0f, 0, 0, 0, 0, 0, 0, 2, b'h', b'i',
    ]);
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    let t = DataTree::deserialize(&b).unwrap();
    t.check_invariants().unwrap();
    let data = |p: &str| {
        let id = t.nodes.lookup(p).unwrap();
        t.nodes.get(id).unwrap().data_opt().map(<[u8]>::to_vec)
    };
    assert_eq!(data("/a"), Some(b"hi".to_vec()));
    assert_eq!(data("/"), Some(vec![]));
    let stat = t.stat("/a").unwrap();
    assert_eq!((stat.czxid, stat.ctime, stat.data_length), (5, 1000, 2));
    // Written back as format 3.
    let mut again = Vec::new();
    t.serialize(&mut again);
    assert_eq!(&again[8..12], &3u32.to_be_bytes());
    assert!(DataTree::deserialize(&again).unwrap() == t);
}

/// A reader that hands out at most `step` bytes per call (cycling 1..=step), like a socket.
struct Trickle<'a> {
    /// What is left.
    rest: &'a [u8],
    /// Largest piece.
    step: usize,
    /// Calls so far.
    calls: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.calls += 1;
        let n = (self.calls % self.step + 1)
            .min(buf.len())
            .min(self.rest.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

#[test]
fn snapshot_streams_out_and_back_in_pieces() {
    let mut h = H::new();
    h.create("/big", 0).unwrap();
    // Well over the encoder's 256 KiB chunk, so the stream is written in several pieces.
    for i in 0..1500 {
        let data = vec![b'a' + (i % 26) as u8; 400];
        h.write(create_req(
            OpCode::Create,
            &format!("/big/n{i:05}"),
            &data,
            world(perms::ALL),
            0,
        ))
        .0
        .unwrap();
    }
    h.create("/big/n00001/null", 0).unwrap();
    let mut whole = Vec::new();
    h.t.serialize(&mut whole);
    assert!(whole.len() > 2 * 256 * 1024);
    let mut streamed = Vec::new();
    h.t.serialize_into(&mut streamed).unwrap();
    assert_eq!(
        streamed, whole,
        "streamed bytes differ from the whole image"
    );

    let back = DataTree::deserialize_from(
        Trickle {
            rest: &whole,
            step: 7,
            calls: 0,
        },
        whole.len() as u64,
    )
    .unwrap();
    back.check_invariants().unwrap();
    assert!(back == h.t);

    // A stream that ends early, or is damaged, or longer than announced, is refused.
    let cut = &whole[..whole.len() - 10];
    assert_eq!(
        DataTree::deserialize_from(cut, whole.len() as u64),
        Err(TreeError::Truncated)
    );
    let mut flipped = whole.clone();
    flipped[whole.len() / 2] ^= 0x01;
    assert!(DataTree::deserialize_from(&flipped[..], whole.len() as u64).is_err());
    // A byte flipped inside some node's data still parses: only the crc at the end sees it.
    let mut in_data = whole.clone();
    let at = in_data.len() - 300;
    in_data[at] ^= 0x01;
    assert_eq!(
        DataTree::deserialize_from(&in_data[..], whole.len() as u64),
        Err(TreeError::Checksum)
    );
    let mut longer = whole.clone();
    longer.extend_from_slice(&[0; 4]);
    assert!(DataTree::deserialize_from(&longer[..], longer.len() as u64).is_err());
}
