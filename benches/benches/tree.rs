//! Microbenchmarks of the in-memory znode tree: the work the state machine does per applied
//! entry and per read, without I/O.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rookery::tree::{DataTree, OpContext};
use rookery_protocol::{
    perms, Acl, CreateRequest, DeleteRequest, GetChildrenRequest, GetDataRequest, Id, OpCode,
    Request, SetDataRequest,
};

fn open_acl() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

fn ctx(zxid: i64, auth: &[Id]) -> OpContext<'_> {
    OpContext {
        zxid,
        time_ms: 1_700_000_000_000,
        session_id: 1,
        auth,
        ttl_enabled: true,
        providers: rookery::tree::AuthProviders::default(),
    }
}

fn create(path: String) -> Request {
    Request::Create {
        op: OpCode::Create,
        req: CreateRequest {
            path,
            data: Some(vec![b'x'; 100]),
            acl: open_acl(),
            flags: 0,
        },
    }
}

/// A tree with `n` nodes of 100 bytes under /bench, 1000 per directory.
fn populated(n: usize) -> DataTree {
    let auth = [];
    let mut tree = DataTree::new();
    let mut zxid = 1;
    let (result, _) = tree.apply_write(&ctx(zxid, &auth), &create("/bench".into()));
    assert!(result.is_ok());
    for dir in 0..n.div_ceil(1000) {
        zxid += 1;
        let (result, _) = tree.apply_write(&ctx(zxid, &auth), &create(format!("/bench/d{dir}")));
        assert!(result.is_ok());
    }
    for i in 0..n {
        zxid += 1;
        let path = format!("/bench/d{}/n{i}", i / 1000);
        let (result, _) = tree.apply_write(&ctx(zxid, &auth), &create(path));
        assert!(result.is_ok());
    }
    tree
}

fn tree_ops(c: &mut Criterion) {
    let auth: [Id; 0] = [];
    let mut group = c.benchmark_group("tree");
    group.throughput(Throughput::Elements(1));
    let base = populated(100_000);

    group.bench_function("create+delete in a 100k tree", |b| {
        let mut tree = base.clone();
        let mut zxid = 1_000_000;
        b.iter(|| {
            zxid += 1;
            let (r, _) = tree.apply_write(&ctx(zxid, &auth), &create("/bench/d7/new".into()));
            assert!(r.is_ok());
            zxid += 1;
            let delete = Request::Delete(DeleteRequest {
                path: "/bench/d7/new".into(),
                version: -1,
            });
            let (r, _) = tree.apply_write(&ctx(zxid, &auth), &delete);
            assert!(r.is_ok());
        })
    });

    group.bench_function("setData 100 bytes", |b| {
        let mut tree = base.clone();
        let mut zxid = 1_000_000;
        let set = Request::SetData(SetDataRequest {
            path: "/bench/d42/n42123".into(),
            data: Some(vec![b'y'; 100]),
            version: -1,
        });
        b.iter(|| {
            zxid += 1;
            let (r, _) = tree.apply_write(&ctx(zxid, &auth), &set);
            assert!(r.is_ok());
        })
    });

    group.bench_function("getData", |b| {
        let get = Request::GetData(GetDataRequest {
            path: "/bench/d42/n42123".into(),
            watch: false,
        });
        b.iter(|| base.read(&ctx(0, &auth), &get))
    });

    group.bench_function("getChildren of 1000", |b| {
        let get = Request::GetChildren(GetChildrenRequest {
            path: "/bench/d3".into(),
            watch: false,
        });
        b.iter(|| base.read(&ctx(0, &auth), &get))
    });
    group.finish();

    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.bench_function("serialize 100k nodes", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            base.serialize(&mut out);
            out.len()
        })
    });
    let mut bytes = Vec::new();
    base.serialize(&mut bytes);
    group.bench_function("deserialize 100k nodes", |b| {
        b.iter_batched(
            || bytes.clone(),
            |bytes| DataTree::deserialize(&bytes).map(|t| t.znode_count()),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, tree_ops);
criterion_main!(benches);
