//! One fault run: start an ensemble, set up the znodes, run the workloads and the nemesis
//! schedule, recover, take the final reads, check, write the history.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use crate::common::cluster::{Cluster, ClusterOpts};
use crate::common::{anyone, target, Target};

use super::history::{now_ns, History};
use super::invariants::{self, Report};
use super::linearizability::{RegCall, RegOp, RegOutcome, RegState};
use super::links::Links;
use super::nemesis::{self, FaultMix, Schedule};
use super::workload::{self, Ctx, ReadMode, Session};

/// Where register clients sit and how they read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterPlan {
    /// Every member serves `per_member` mixed clients (reads after sync, writes, CAS), plus
    /// `roaming` clients with the whole connect string, whose sessions move to another member
    /// on a connection loss (recorded with member = number of servers, "any").
    Linearizable { per_member: usize, roaming: usize },
    /// Writers on the leader, readers on the followers. With plain reads: the stale-read
    /// probe that the checker must flag. With sync+read: the validation against a broken
    /// build (`sync` without its barrier), which it must flag too.
    FollowerReads {
        writers: usize,
        readers_per_follower: usize,
        read_mode: ReadMode,
    },
}

#[derive(Clone, Debug)]
pub struct RunOpts {
    pub seed: u64,
    pub secs: u64,
    pub servers: usize,
    pub session_ms: u64,
    pub keys: usize,
    pub registers: RegisterPlan,
    pub seq_clients: bool,
    pub lock_clients: bool,
    pub mix: FaultMix,
    /// A fixed schedule (a kept regression) instead of one generated from the seed.
    pub schedule: Option<Schedule>,
    /// Extra environment of the server processes ([`ClusterOpts::env`]).
    pub server_env: Vec<(String, String)>,
}

/// What a run produced.
pub struct RunResult {
    pub history: History,
    pub report: Report,
    pub schedule: Schedule,
    pub history_path: PathBuf,
    pub reg_ops: usize,
    pub ops_total: usize,
    pub elapsed: Duration,
}

impl RunResult {
    pub fn summary(&self) -> String {
        let unknown = self
            .history
            .regs
            .iter()
            .filter(|r| r.op.outcome == RegOutcome::Unknown)
            .count();
        format!(
            "seed {} target {} servers {}: {} ops in {:.0?} ({:.0} ops/s; {} register ops, {} unknown; {} seq creates; {} lock tenures), {} nemesis events; anomalies: {} registers, {} seq, {} lock, {} session, {} online; history {}",
            self.history.seed,
            self.history.target,
            self.history.servers,
            self.ops_total,
            self.elapsed,
            self.ops_total as f64 / self.elapsed.as_secs_f64(),
            self.reg_ops,
            unknown,
            self.history.seqs.len(),
            self.history.locks.len(),
            self.history.nemesis.len(),
            self.report.anomalies.len(),
            self.report.seq_problems.len(),
            self.report.lock_problems.len(),
            self.report.session_problems.len(),
            self.report.online.len(),
            self.history_path.display()
        )
    }
}

fn target_name() -> &'static str {
    match target() {
        Target::Rookery => "rookery",
        Target::ZooKeeper => "zk",
    }
}

async fn setup(c: &Cluster, ctx: &Ctx, keys: &[String]) {
    let cl = connect_bounded(&c.connect_string(), ctx.session_ms).await;
    let mk = |p: String, data: &'static [u8]| {
        let cl = &cl;
        async move {
            match cl.create(&p, data, &anyone()).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => panic!("setup create {p}: {e}"),
            }
        }
    };
    mk(ctx.root.clone(), b"").await;
    mk(format!("{}/reg", ctx.root), b"").await;
    for k in keys {
        mk(ctx.reg_path(k), b"0").await;
    }
    mk(ctx.seq_parent(), b"").await;
    mk(ctx.lock_parent(), b"").await;
}

/// Proves that a clock jump bites (so clock faults are never silently no-ops): with member 0's
/// wall clock a day ahead, a node created through it has a ctime a day ahead (the member that
/// takes a write stamps its time).
async fn clock_self_test(c: &Cluster, ctx: &Ctx) {
    const DAY_MS: i64 = 86_400_000;
    c.blocking(|c| crate::clock::set_offset(c, 0, DAY_MS / 1000))
        .await;
    let cl = connect_bounded(&c.addr(0), ctx.session_ms).await;
    let path = format!("{}/clock-probe", ctx.root);
    let (stat, _) = cl
        .create(&path, b"", &anyone())
        .await
        .unwrap_or_else(|e| panic!("clock self-test create {path}: {e}"));
    let real_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    c.blocking(|c| crate::clock::set_offset(c, 0, 0)).await;
    let ahead_ms = stat.ctime - real_ms;
    assert!(
        (DAY_MS - 60_000..DAY_MS + 60_000).contains(&ahead_ms),
        "clock self-test: member 0 was set a day ahead, but a node created through it has \
         ctime {} ms from real time (is libfaketime preloaded?)",
        ahead_ms
    );
    cl.delete(&path, None)
        .await
        .unwrap_or_else(|e| panic!("clock self-test delete {path}: {e}"));
    eprintln!("clock self-test: member 0 a day ahead stamped ctime {ahead_ms} ms ahead");
}

async fn connect_bounded(cs: &str, session_ms: u64) -> zk::Client {
    for _ in 0..60 {
        let conn = zk::Client::connector().with_session_timeout(Duration::from_millis(session_ms));
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(10), conn.connect(cs)).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("could not connect to {cs} in 60 attempts");
}

/// Runs one schedule. Panics only on harness failures (an ensemble that does not come back);
/// consistency findings are in the returned report.
pub async fn run(opts: RunOpts) -> RunResult {
    let t_start = Instant::now();
    let schedule = opts.schedule.clone().unwrap_or_else(|| {
        Schedule::generate(
            opts.seed,
            opts.secs,
            opts.servers,
            opts.session_ms,
            opts.mix,
        )
    });
    eprintln!(
        "fault run: target {} servers {} secs {} seed {}\nschedule:\n{schedule}",
        target_name(),
        opts.servers,
        opts.secs,
        opts.seed
    );
    // The suite's own per-link proxies (links.rs) replace the harness's peer proxies.
    let cluster = Cluster::start_async(ClusterOpts {
        voters: opts.servers,
        proxied: false,
        env: {
            let mut env = opts.server_env.clone();
            if opts.mix.clock {
                env.extend(crate::clock::env());
            }
            env
        },
        // Membership changes: reconfig enabled, and every member in a mount namespace of its
        // own that resolves the peers' names to its own proxies (links.rs, the named layout).
        extra_cfg: if opts.mix.membership {
            super::membership::extra_cfg()
        } else {
            vec![]
        },
        wrap: if opts.mix.membership {
            super::links::named_wrap()
        } else {
            vec![]
        },
        ..ClusterOpts::default()
    })
    .await;
    let links = Arc::new(if opts.mix.membership {
        Links::install_named(&cluster, opts.mix.disk).await
    } else {
        Links::install(&cluster, opts.mix.disk).await
    });
    if opts.mix.partitions || opts.mix.membership {
        let l = links.clone();
        cluster.blocking(move |c| l.self_test(c)).await;
    }
    let root = format!("/faults-{}", opts.seed);
    let ctx = Ctx::new(root, opts.session_ms);
    let keys: Vec<String> = (0..opts.keys).map(|k| format!("k{k}")).collect();
    setup(&cluster, &ctx, &keys).await;
    if opts.mix.clock {
        clock_self_test(&cluster, &ctx).await;
    }
    let leader = cluster.blocking(|c| c.wait_ready(60)).await;

    let mut tasks = vec![];
    let mut client_no = 0u32;
    let mut next_client = || {
        client_no += 1;
        client_no
    };
    match opts.registers {
        RegisterPlan::Linearizable {
            per_member,
            roaming,
        } => {
            let placements = (0..opts.servers)
                .flat_map(|m| std::iter::repeat_n((cluster.addr(m), m), per_member))
                .chain(std::iter::repeat_n(
                    (cluster.connect_string(), opts.servers),
                    roaming,
                ));
            for (addr, m) in placements.collect::<Vec<_>>() {
                let id = next_client();
                tasks.push(tokio::spawn(workload::register_client(
                    ctx.clone(),
                    id,
                    Session::new(addr, m, opts.session_ms),
                    keys.clone(),
                    ReadMode::SyncThenRead,
                    40,
                    opts.seed ^ (id as u64) << 20,
                )));
            }
        }
        RegisterPlan::FollowerReads {
            writers,
            readers_per_follower,
            read_mode,
        } => {
            for _ in 0..writers {
                let id = next_client();
                tasks.push(tokio::spawn(workload::register_client(
                    ctx.clone(),
                    id,
                    Session::new(cluster.addr(leader), leader, opts.session_ms),
                    keys.clone(),
                    ReadMode::Plain,
                    0,
                    opts.seed ^ (id as u64) << 20,
                )));
            }
            for m in cluster.others(leader) {
                for _ in 0..readers_per_follower {
                    let id = next_client();
                    tasks.push(tokio::spawn(workload::register_client(
                        ctx.clone(),
                        id,
                        Session::new(cluster.addr(m), m, opts.session_ms),
                        keys.clone(),
                        read_mode,
                        100,
                        opts.seed ^ (id as u64) << 20,
                    )));
                }
            }
        }
    }
    for m in 0..opts.servers {
        if opts.seq_clients {
            let id = next_client();
            tasks.push(tokio::spawn(workload::sequential_client(
                ctx.clone(),
                id,
                Session::new(cluster.addr(m), m, opts.session_ms),
            )));
        }
        if opts.lock_clients {
            let id = next_client();
            tasks.push(tokio::spawn(workload::lock_client(
                ctx.clone(),
                id,
                Session::new(cluster.addr(m), m, opts.session_ms),
                opts.seed ^ (id as u64) << 24,
            )));
        }
    }

    // One roaming lock client and one roaming sequential client: sessions that move between
    // members (Reattach / SessionMoved paths) while holding ephemerals.
    if let RegisterPlan::Linearizable { roaming, .. } = opts.registers {
        if roaming > 0 {
            if opts.seq_clients {
                let id = next_client();
                tasks.push(tokio::spawn(workload::sequential_client(
                    ctx.clone(),
                    id,
                    Session::new(cluster.connect_string(), opts.servers, opts.session_ms),
                )));
            }
            if opts.lock_clients {
                let id = next_client();
                tasks.push(tokio::spawn(workload::lock_client(
                    ctx.clone(),
                    id,
                    Session::new(cluster.connect_string(), opts.servers, opts.session_ms),
                    opts.seed ^ (id as u64) << 24,
                )));
            }
        }
    }

    // Nemesis on a blocking thread; bounded by the run length (plus the undo of the last step).
    let run_start = Instant::now();
    let stop_at = run_start + Duration::from_secs(opts.secs);
    let sched = schedule.clone();
    let l = links.clone();
    let nemesis_events = cluster
        .blocking(move |c| {
            let mut ev = nemesis::run(c, &l, &sched, run_start, stop_at);
            let crashed = nemesis::recover(c, &l, 120);
            if !crashed.is_empty() {
                ev.push(super::history::NemesisRecord {
                    start_ns: now_ns(),
                    end_ns: now_ns(),
                    what: format!("recovery: {}", crashed.join("; ")),
                });
            }
            if ev.iter().any(|e| e.what.starts_with("membership:")) {
                // The proof that the reconfigs (which rewrote every member's address book
                // from /zookeeper/config) left the proxies in the path: isolating the leader
                // must still make the others elect another one (panics otherwise).
                let start_ns = now_ns();
                let what = l.self_test(c);
                ev.push(super::history::NemesisRecord {
                    start_ns,
                    end_ns: now_ns(),
                    what: format!("links self-test after the membership changes: {what}"),
                });
            }
            ev
        })
        .await;
    // Load on the healed ensemble until the end of the run (at least 2 s).
    let tail = stop_at
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(2));
    tokio::time::sleep(tail).await;
    ctx.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        // Each op is bounded by op_timeout and each lock wait by 30 s.
        crate::common::within(90, "workload clients to stop", t)
            .await
            .expect("workload task panicked");
    }

    // Final reads: sync + read of every key on every member (linearizable reads: part of the
    // history), the sequential listing, and the lock parent must empty once the sessions are
    // gone.
    let mut online = ctx
        .violations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // A server that exited on its own during the run (restarted by the nemesis) is a failure.
    online.extend(
        nemesis_events
            .iter()
            .filter(|e| e.what.contains(nemesis::CRASHED))
            .map(|e| format!("server crash: {}", e.what)),
    );
    if links.specs().is_some() {
        // After every membership change: one membership, shown alike by every member.
        online.extend(super::membership::agreement(&cluster, &links).await);
    }
    for m in 0..opts.servers {
        let cl = connect_bounded(&cluster.addr(m), opts.session_ms).await;
        for k in &keys {
            let path = ctx.reg_path(k);
            let call_ns = now_ns();
            let r = crate::common::within(30, "final sync", cl.sync(&path)).await;
            r.unwrap_or_else(|e| panic!("final sync on member {m}: {e}"));
            let (data, stat) = crate::common::within(30, "final read", cl.get_data(&path))
                .await
                .unwrap_or_else(|e| panic!("final read on member {m}: {e}"));
            let ret_ns = now_ns();
            let value = std::str::from_utf8(&data).ok().and_then(|s| s.parse().ok());
            match value {
                Some(value) => ctx.record_reg(
                    k,
                    m,
                    true,
                    RegOp {
                        id: 0,
                        client: 100_000 + m as u32,
                        call_ns,
                        ret_ns: Some(ret_ns),
                        call: RegCall::Read,
                        outcome: RegOutcome::ReadOk(RegState {
                            value,
                            version: stat.version,
                        }),
                    },
                    None,
                ),
                None => online.push(format!(
                    "final read of {path} on member {m}: unparsable {data:?}"
                )),
            }
        }
    }
    let cl = connect_bounded(&cluster.addr(leader), opts.session_ms).await;
    crate::common::within(30, "sync", cl.sync(&ctx.seq_parent()))
        .await
        .unwrap_or_else(|e| panic!("final sync: {e}"));
    let seq_final: Vec<i64> =
        crate::common::within(30, "list", cl.list_children(&ctx.seq_parent()))
            .await
            .unwrap_or_else(|e| panic!("final list: {e}"))
            .iter()
            .filter_map(|n| n.rsplit('-').next()?.parse().ok())
            .collect();
    if opts.lock_clients {
        // Every lock session is closed (the clients were dropped) or will expire: the ephemerals
        // must go within two session timeouts plus an election.
        let deadline = Instant::now() + Duration::from_millis(opts.session_ms * 2 + 10_000);
        loop {
            let _ = crate::common::within(30, "sync", cl.sync(&ctx.lock_parent())).await;
            let kids = crate::common::within(30, "list", cl.list_children(&ctx.lock_parent()))
                .await
                .unwrap_or_default();
            if kids.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                online.push(format!(
                    "ephemeral lock nodes outlived their sessions by > 2 session timeouts: {kids:?}"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    let regs = std::mem::take(&mut *ctx.regs.lock().unwrap_or_else(|e| e.into_inner()));
    let mut inits = BTreeMap::new();
    for k in &keys {
        inits.insert(
            k.clone(),
            RegState {
                value: 0,
                version: 0,
            },
        );
    }
    let history = History {
        seed: opts.seed,
        target: target_name().to_string(),
        servers: opts.servers,
        session_ms: opts.session_ms,
        inits,
        regs,
        seqs: std::mem::take(&mut *ctx.seqs.lock().unwrap_or_else(|e| e.into_inner())),
        locks: std::mem::take(&mut *ctx.locks.lock().unwrap_or_else(|e| e.into_inner())),
        seq_final: Some(seq_final),
        nemesis: nemesis_events,
        online_violations: online,
    };
    let dir = std::env::var("FAULT_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("faults"));
    // The wall-clock suffix keeps a replay of the same seed from overwriting a failing history.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let history_path = dir.join(format!(
        "{}-n{}-seed{}-{}-{stamp}.jsonl",
        target_name(),
        opts.servers,
        opts.seed,
        match opts.registers {
            RegisterPlan::Linearizable { .. } => "lin",
            RegisterPlan::FollowerReads {
                read_mode: ReadMode::Plain,
                ..
            } => "stale",
            RegisterPlan::FollowerReads {
                read_mode: ReadMode::SyncThenRead,
                ..
            } => "followers",
        }
    ));
    history
        .write_jsonl(&history_path)
        .unwrap_or_else(|e| panic!("write {}: {e}", history_path.display()));
    let report = invariants::check(&history);
    let reg_ops = history.regs.len();
    let ops_total = reg_ops + history.seqs.len() + history.locks.len();
    drop(cl);
    if !report.ok() {
        // Keep the members' dirs (configs, server logs, data) for the diagnosis: the harness
        // keeps them when ENSEMBLE_KEEP=1 at drop and prints where.
        std::env::set_var("ENSEMBLE_KEEP", "1");
    }
    drop(cluster);
    drop(links);
    RunResult {
        history,
        report,
        schedule,
        history_path,
        reg_ops,
        ops_total,
        elapsed: t_start.elapsed(),
    }
}
