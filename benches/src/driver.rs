//! The closed-loop driver: each session keeps `inflight` requests pipelined, replacing each
//! one as its reply arrives, and records latencies that fall inside the measurement window.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::Rng;
use rookery_protocol::{
    perms, Acl, CreateMode, CreateRequest, DeleteRequest, ErrorCode, ExistsRequest,
    GetChildrenRequest, GetDataRequest, Id, OpCode, Request, Response, SetDataRequest,
};

use crate::conn::{describe_err, Conn};

/// Nodes per directory for `create` and `populate`, so that no getChildren reply (cleanup)
/// comes near jute.maxbuffer.
pub const BUCKET: u64 = 10_000;

pub fn open_acl() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

pub fn create(path: String, data: Vec<u8>, mode: CreateMode) -> Request {
    Request::Create {
        op: OpCode::Create,
        req: CreateRequest {
            path,
            data: Some(data),
            acl: open_acl(),
            flags: mode.wire(),
        },
    }
}

pub fn delete(path: String) -> Request {
    Request::Delete(DeleteRequest { path, version: -1 })
}

pub fn new_hist() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts (1 µs .. 1 h, 3 digits): cannot fail.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds")
}

pub struct Stats {
    /// Latencies in microseconds.
    pub hist: Histogram<u64>,
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Stats {
    pub fn new() -> Self {
        Stats {
            hist: new_hist(),
            ops: 0,
            errors: 0,
            first_error: None,
        }
    }

    pub fn error(&mut self, msg: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(msg());
        }
    }

    pub fn merge(&mut self, other: Stats) {
        // Every histogram comes from new_hist(), so the bounds always match.
        #[allow(clippy::expect_used)]
        self.hist.add(&other.hist).expect("same histogram bounds");
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

#[derive(Clone, Copy)]
pub struct Window {
    /// Replies to requests sent before this are warm-up and not recorded.
    pub measure_start: Instant,
    /// No request is sent after this; replies after it are not recorded.
    pub end: Instant,
    /// The session fails if its in-flight requests are not all answered by then.
    pub hard: Instant,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Create,
    Set,
    Get,
    Exists,
    Mixed,
    Children,
    Churn,
    Populate,
}

/// What one session asks for next.
pub struct Gen {
    pub kind: Kind,
    pub session: usize,
    pub seq: u64,
    pub rng: StdRng,
    pub prefix: Arc<str>,
    pub value: Vec<u8>,
    pub keys: u64,
    pub read_ratio: f64,
    /// Shared by all sessions of a populate run: the next node index to create.
    pub counter: Option<Arc<AtomicU64>>,
    pub count: u64,
    pending: Option<Request>,
}

impl Gen {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: Kind,
        session: usize,
        rng: StdRng,
        prefix: Arc<str>,
        value: Vec<u8>,
        keys: u64,
        read_ratio: f64,
        counter: Option<Arc<AtomicU64>>,
        count: u64,
    ) -> Self {
        Gen {
            kind,
            session,
            seq: 0,
            rng,
            prefix,
            value,
            keys,
            read_ratio,
            counter,
            count,
            pending: None,
        }
    }

    fn key(&mut self) -> String {
        let k = self.rng.random_range(0..self.keys);
        format!("{}/k/k{k}", self.prefix)
    }

    pub fn next(&mut self) -> Option<Request> {
        if let Some(req) = self.pending.take() {
            return Some(req);
        }
        let seq = self.seq;
        self.seq += 1;
        Some(match self.kind {
            Kind::Create => {
                let dir = format!("{}/c{}-{}", self.prefix, self.session, seq / BUCKET);
                let node = create(
                    format!("{dir}/n{seq}"),
                    self.value.clone(),
                    CreateMode::Persistent,
                );
                if seq.is_multiple_of(BUCKET) {
                    // Pipelined in order behind the directory's create: FIFO per session.
                    self.pending = Some(node);
                    create(dir, Vec::new(), CreateMode::Persistent)
                } else {
                    node
                }
            }
            Kind::Set => Request::SetData(SetDataRequest {
                path: self.key(),
                data: Some(self.value.clone()),
                version: -1,
            }),
            Kind::Get => Request::GetData(GetDataRequest {
                path: self.key(),
                watch: false,
            }),
            Kind::Exists => Request::Exists(ExistsRequest {
                path: self.key(),
                watch: false,
            }),
            Kind::Mixed => {
                if self.rng.random_bool(self.read_ratio.clamp(0.0, 1.0)) {
                    Request::GetData(GetDataRequest {
                        path: self.key(),
                        watch: false,
                    })
                } else {
                    Request::SetData(SetDataRequest {
                        path: self.key(),
                        data: Some(self.value.clone()),
                        version: -1,
                    })
                }
            }
            Kind::Children => Request::GetChildren(GetChildrenRequest {
                path: format!("{}/w", self.prefix),
                watch: false,
            }),
            Kind::Churn => {
                let path = format!("{}/e/s{}-{}", self.prefix, self.session, seq / 2);
                if seq.is_multiple_of(2) {
                    create(path, self.value.clone(), CreateMode::Ephemeral)
                } else {
                    delete(path)
                }
            }
            Kind::Populate => {
                let i = self.counter.as_ref()?.fetch_add(1, Ordering::Relaxed);
                if i >= self.count {
                    return None;
                }
                create(
                    populate_path(&self.prefix, i),
                    self.value.clone(),
                    CreateMode::Persistent,
                )
            }
        })
    }
}

pub fn populate_dir(prefix: &str, i: u64) -> String {
    format!("{prefix}/d{}", i / BUCKET)
}

pub fn populate_path(prefix: &str, i: u64) -> String {
    format!("{}/n{i}", populate_dir(prefix, i))
}

/// Runs one session until the window ends (or its generator runs dry), then closes it.
pub async fn drive(mut conn: Conn, mut gen: Gen, inflight: usize, w: Window) -> io::Result<Stats> {
    let mut stats = Stats::new();
    let mut pending: VecDeque<(i32, OpCode, Instant)> = VecDeque::with_capacity(inflight);
    let mut exhausted = false;
    loop {
        let now = Instant::now();
        if now < w.end && !exhausted {
            while pending.len() < inflight.max(1) {
                match gen.next() {
                    Some(req) => {
                        let xid = conn.queue(&req);
                        pending.push_back((xid, req.op_code(), now));
                    }
                    None => {
                        exhausted = true;
                        break;
                    }
                }
            }
        }
        conn.flush().await?;
        if pending.is_empty() {
            break;
        }
        let reply = conn.recv_until(w.hard).await?;
        handle(reply, &mut pending, &mut stats, &w)?;
        while let Some(reply) = conn.try_recv() {
            handle(reply?, &mut pending, &mut stats, &w)?;
        }
    }
    conn.close().await;
    Ok(stats)
}

fn handle(
    reply: crate::conn::Reply,
    pending: &mut VecDeque<(i32, OpCode, Instant)>,
    stats: &mut Stats,
    w: &Window,
) -> io::Result<()> {
    let xid = reply.header.xid;
    if xid < 0 {
        return Ok(()); // a notification or a ping reply
    }
    let now = Instant::now();
    let Some((want, op, sent)) = pending.pop_front() else {
        return Err(crate::conn::other(format!("unexpected reply xid {xid}")));
    };
    if xid != want {
        return Err(crate::conn::other(format!(
            "reply xid {xid} while waiting for {want}: replies out of order"
        )));
    }
    let err = reply.header.err;
    if err != 0 {
        stats.error(|| format!("{op:?}: {}", describe_err(err)));
    } else {
        match reply.decode(op) {
            Ok(Response::Empty) if op != OpCode::Delete => {
                stats.error(|| format!("{op:?}: empty reply body"))
            }
            Ok(_) => {}
            Err(e) => stats.error(|| e),
        }
    }
    if sent >= w.measure_start && now <= w.end {
        stats.ops += 1;
        let us = now.duration_since(sent).as_micros() as u64;
        stats.hist.saturating_record(us.max(1));
    }
    Ok(())
}

/// Deletes `path` and everything below it, pipelining the deletes of each level.
pub fn delete_tree<'a>(
    conn: &'a mut Conn,
    path: String,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<u64>> + 'a>> {
    Box::pin(async move {
        let (err, resp) = conn
            .call(&Request::GetChildren(GetChildrenRequest {
                path: path.clone(),
                watch: false,
            }))
            .await?;
        if err == ErrorCode::NoNode.wire() {
            return Ok(0);
        }
        let children = match resp {
            Some(Response::GetChildren(r)) => r.children,
            _ => {
                return Err(crate::conn::other(format!(
                    "getChildren {path}: {}",
                    describe_err(err)
                )))
            }
        };
        let mut deleted = 0;
        let reqs = children.iter().map(|c| delete(format!("{path}/{c}")));
        let results = conn
            .batch(reqs, 256, &[ErrorCode::NoNode, ErrorCode::NotEmpty])
            .await?;
        for (req, err) in results {
            if err == ErrorCode::NotEmpty.wire() {
                let Some(child) = req.path() else { continue };
                deleted += delete_tree(conn, child.to_string()).await?;
            } else if err == 0 {
                deleted += 1;
            }
        }
        let (err, _) = conn.call(&delete(path.clone())).await?;
        if err == 0 {
            deleted += 1;
        } else if err != ErrorCode::NoNode.wire() {
            return Err(crate::conn::other(format!(
                "delete {path}: {}",
                describe_err(err)
            )));
        }
        Ok(deleted)
    })
}
