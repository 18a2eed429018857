//! `rookery-load`: a ZooKeeper-protocol load generator. It speaks the wire protocol itself
//! (rookery-protocol + tokio), so the same binary measures rookery and Apache ZooKeeper.

mod conn;
mod driver;
mod procfs;
mod watch;

use std::io;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rand::SeedableRng;
use rookery_protocol::{CreateMode, ErrorCode, GetDataRequest, Request, SyncRequest};
use serde_json::Value;

use conn::{other, Conn};
use driver::{create, Gen, Kind, Stats, Window, BUCKET};
use watch::WatchMode;

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Workload {
    /// Persistent creates of value-size bytes, 10,000 per directory.
    Create,
    /// setData on random keys among --keys nodes.
    Set,
    /// getData on random keys among --keys nodes.
    Get,
    /// exists on random keys among --keys nodes.
    Exists,
    /// getData (--read-ratio) or setData on random keys.
    Mixed,
    /// getChildren of a node with --width children.
    Children,
    /// Ephemeral create then delete, pipelined; both count as ops.
    Churn,
    /// N sessions watch one node; latency from setData to the last notification; op = round.
    Watch,
    /// Create --count nodes as fast as possible; reports elapsed time and server RSS.
    Populate,
    /// Retry connect + getData --path until it succeeds (restart timing); reports elapsed ms.
    Probe,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Create => "create",
            Workload::Set => "set",
            Workload::Get => "get",
            Workload::Exists => "exists",
            Workload::Mixed => "mixed",
            Workload::Children => "children",
            Workload::Churn => "churn",
            Workload::Watch => "watch",
            Workload::Populate => "populate",
            Workload::Probe => "probe",
        }
    }
}

/// A ZooKeeper-protocol load generator for rookery and Apache ZooKeeper (loopback only).
#[derive(Parser, Debug)]
#[command(name = "rookery-load", version)]
struct Args {
    /// Servers, host:port, comma-separated; sessions are spread over them round-robin.
    #[arg(long, default_value = "127.0.0.1:2181", value_delimiter = ',')]
    servers: Vec<String>,
    #[arg(long, value_enum, default_value = "mixed")]
    workload: Workload,
    /// Client sessions (TCP connections). For `watch`: the number of watchers.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Requests in flight per session (pipelined).
    #[arg(long, default_value_t = 1)]
    inflight: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Bytes of data in created and set nodes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Fraction of reads in `mixed`.
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Nodes that set/get/exists/mixed pick from.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Children of the node that `children` lists (keep under ~50,000: jute.maxbuffer).
    #[arg(long, default_value_t = 1000)]
    width: u64,
    /// Nodes that `populate` creates.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// `watch`: one-shot getData watches (re-armed) or persistent addWatch.
    #[arg(long, value_enum, default_value = "oneshot")]
    watch_mode: WatchMode,
    /// Server pid for RSS; found from the first server's port through /proc if absent.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Root of this run's nodes; /bench-<random> if absent.
    #[arg(long)]
    prefix: Option<String>,
    /// Delete the prefix and everything under it afterwards.
    #[arg(long)]
    cleanup: bool,
    /// `probe`: the node to getData.
    #[arg(long)]
    path: Option<String>,
    /// Hard limit on the whole run in seconds (default: warmup + duration + 120; 600 for
    /// populate and probe). Exceeding it fails with exit code 3.
    #[arg(long)]
    timeout: Option<f64>,
    /// Runtime worker threads (1 = a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Requested session timeout.
    #[arg(long, default_value_t = 30_000)]
    session_timeout_ms: i32,
    /// Free-form label copied into the JSON line (e.g. the server's name).
    #[arg(long)]
    label: Option<String>,
    /// Seed for key choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print only the JSON line.
    #[arg(long, short)]
    quiet: bool,
}

struct Outcome {
    stats: Stats,
    /// Seconds the ops were counted over.
    seconds: f64,
    extra: Vec<(&'static str, Value)>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.sessions == 0 || args.inflight == 0 || args.servers.is_empty() {
        eprintln!("rookery-load: --sessions, --inflight and --servers must be non-empty");
        return ExitCode::from(2);
    }
    if !(args.duration > 0.0 && args.warmup >= 0.0) {
        eprintln!("rookery-load: --duration must be > 0 and --warmup >= 0");
        return ExitCode::from(2);
    }
    let limit = args.timeout.unwrap_or(match args.workload {
        Workload::Populate | Workload::Probe => 600.0,
        _ => args.warmup + args.duration + 120.0,
    });
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("rookery-load: cannot start the tokio runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs_f64(limit), run(&args)).await });
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Err(_) => {
            eprintln!("rookery-load: run exceeded its {limit} s limit");
            ExitCode::from(3)
        }
        Ok(Err(e)) => {
            eprintln!("rookery-load: {e}");
            ExitCode::from(2)
        }
        Ok(Ok(code)) => code,
    }
}

async fn run(args: &Args) -> io::Result<ExitCode> {
    if args.workload == Workload::Probe {
        return probe(args).await;
    }
    let prefix: Arc<str> = match &args.prefix {
        Some(p) => p.trim_end_matches('/').into(),
        None => format!("/bench-{:08x}", rand::random::<u32>()).into(),
    };
    let value = vec![b'x'; args.value_size];
    let first = args.servers[0].as_str();

    // Setup on its own session, closed before the run so it cannot expire meanwhile.
    let mut setup = Conn::connect(first, args.session_timeout_ms).await?;
    let exists = &[ErrorCode::NodeExists];
    setup
        .batch(
            [create(
                prefix.to_string(),
                Vec::new(),
                CreateMode::Persistent,
            )],
            1,
            exists,
        )
        .await?;
    let persistent =
        |path: String, data: &[u8]| create(path, data.to_vec(), CreateMode::Persistent);
    match args.workload {
        Workload::Set | Workload::Get | Workload::Exists | Workload::Mixed => {
            let dir = format!("{prefix}/k");
            let keys = (0..args.keys).map(|k| persistent(format!("{dir}/k{k}"), &value));
            setup
                .batch([persistent(dir.clone(), &[])], 1, exists)
                .await?;
            setup.batch(keys, 256, exists).await?;
        }
        Workload::Children => {
            let dir = format!("{prefix}/w");
            setup
                .batch([persistent(dir.clone(), &[])], 1, exists)
                .await?;
            let kids = (0..args.width).map(|k| persistent(format!("{dir}/w{k}"), &[]));
            setup.batch(kids, 256, exists).await?;
        }
        Workload::Churn => {
            setup
                .batch([persistent(format!("{prefix}/e"), &[])], 1, exists)
                .await?;
        }
        Workload::Watch => {
            setup
                .batch([persistent(format!("{prefix}/watch"), &value)], 1, exists)
                .await?;
        }
        Workload::Populate => {
            let dirs = args.count.div_ceil(BUCKET);
            let reqs = (0..dirs).map(|d| persistent(format!("{prefix}/d{d}"), &[]));
            setup.batch(reqs, 256, exists).await?;
        }
        Workload::Create | Workload::Probe => {}
    }
    setup.close().await;

    let outcome = match args.workload {
        Workload::Watch => run_watch(args, &prefix, value).await?,
        _ => run_load(args, &prefix, value).await?,
    };
    let code = report(args, &prefix, outcome);

    if args.cleanup {
        let mut conn = Conn::connect(first, args.session_timeout_ms).await?;
        let t = Instant::now();
        let deleted = driver::delete_tree(&mut conn, prefix.to_string()).await?;
        conn.close().await;
        if !args.quiet {
            println!(
                "cleanup: deleted {deleted} nodes in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
    }
    Ok(code)
}

/// Connects `n` sessions in parallel, round-robin over the servers; with several servers,
/// each syncs first so that it sees the setup's nodes.
async fn connect_all(args: &Args, n: usize, prefix: &str) -> io::Result<Vec<Conn>> {
    let conns = futures::future::try_join_all((0..n).map(|i| {
        let addr = args.servers[i % args.servers.len()].clone();
        let timeout = args.session_timeout_ms;
        let sync = args.servers.len() > 1;
        let prefix = prefix.to_string();
        async move {
            let mut conn = Conn::connect(&addr, timeout).await?;
            if sync {
                conn.call(&Request::Sync(SyncRequest { path: prefix }))
                    .await?;
            }
            Ok::<_, io::Error>(conn)
        }
    }))
    .await?;
    Ok(conns)
}

async fn run_load(args: &Args, prefix: &Arc<str>, value: Vec<u8>) -> io::Result<Outcome> {
    let kind = match args.workload {
        Workload::Create => Kind::Create,
        Workload::Set => Kind::Set,
        Workload::Get => Kind::Get,
        Workload::Exists => Kind::Exists,
        Workload::Mixed => Kind::Mixed,
        Workload::Children => Kind::Children,
        Workload::Churn => Kind::Churn,
        Workload::Populate => Kind::Populate,
        Workload::Watch | Workload::Probe => unreachable!(),
    };
    let conns = connect_all(args, args.sessions, prefix).await?;
    let populate = kind == Kind::Populate;
    let counter = populate.then(|| Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let window = if populate {
        let far = start + Duration::from_secs(365 * 86_400);
        Window {
            measure_start: start,
            end: far,
            hard: far,
        }
    } else {
        let measure_start = start + Duration::from_secs_f64(args.warmup);
        let end = measure_start + Duration::from_secs_f64(args.duration);
        Window {
            measure_start,
            end,
            hard: end + Duration::from_secs(30),
        }
    };
    let mut tasks = Vec::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let rng = rand::rngs::StdRng::seed_from_u64(
            args.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
        );
        let gen = Gen::new(
            kind,
            i,
            rng,
            prefix.clone(),
            value.clone(),
            args.keys.max(1),
            args.read_ratio,
            counter.clone(),
            args.count,
        );
        tasks.push(tokio::spawn(driver::drive(
            conn,
            gen,
            args.inflight,
            window,
        )));
    }
    let mut stats = Stats::new();
    let mut failure = None;
    for t in tasks {
        match t.await.map_err(other)? {
            Ok(s) => stats.merge(s),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let mut extra = Vec::new();
    let seconds = if populate {
        let elapsed = start.elapsed().as_secs_f64();
        extra.push(("count", Value::from(args.count)));
        extra.push(("elapsed_s", Value::from(round3(elapsed))));
        if args.count > 0 {
            let last = driver::populate_path(prefix, args.count - 1);
            extra.push(("last_path", Value::from(last)));
        }
        elapsed
    } else {
        args.duration
    };
    Ok(Outcome {
        stats,
        seconds,
        extra,
    })
}

async fn run_watch(args: &Args, prefix: &Arc<str>, value: Vec<u8>) -> io::Result<Outcome> {
    let path: Arc<str> = format!("{prefix}/watch").into();
    let mut conns = connect_all(args, args.sessions + 1, prefix).await?;
    let setter = conns.remove(0);
    let start = Instant::now();
    let measure_start = start + Duration::from_secs_f64(args.warmup);
    let end = measure_start + Duration::from_secs_f64(args.duration);
    let window = Window {
        measure_start,
        end,
        hard: end + Duration::from_secs(30),
    };
    let (stats, events) = watch::run(setter, conns, path, value, args.watch_mode, window).await?;
    let extra = vec![
        (
            "watch_mode",
            Value::from(format!("{:?}", args.watch_mode).to_lowercase()),
        ),
        (
            "events_per_sec",
            Value::from(round1(events as f64 / args.duration)),
        ),
    ];
    Ok(Outcome {
        stats,
        seconds: args.duration,
        extra,
    })
}

/// Restart timing: starts a fresh connect + getData attempt every 20 ms (at most 64 pending,
/// each given 10 s), so a server that accepts connections before it can answer does not hide
/// the moment it starts answering behind one attempt's timeout.
async fn probe(args: &Args) -> io::Result<ExitCode> {
    let Some(path) = args.path.clone() else {
        return Err(other("probe needs --path"));
    };
    let start = Instant::now();
    let limit = Duration::from_secs_f64(args.timeout.unwrap_or(600.0));
    let attempt = |addr: String, path: String, session_timeout: i32| async move {
        let run = async {
            let mut conn = Conn::connect(&addr, session_timeout).await?;
            let (err, _) = conn
                .call(&Request::GetData(GetDataRequest { path, watch: false }))
                .await?;
            conn.close().await;
            if err != 0 {
                return Err(other(conn::describe_err(err)));
            }
            Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(10), run).await {
            Ok(r) => r,
            Err(_) => Err(other("attempt timed out")),
        }
    };
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut attempts = 0u64;
    let mut last_error = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if start.elapsed() >= limit {
            return Err(other(format!(
                "probe: no successful getData {path} within {limit:?}: {last_error}"
            )));
        }
        tokio::select! {
            _ = tick.tick(), if pending.len() < 64 => {
                attempts += 1;
                pending.push(attempt(args.servers[0].clone(), path.clone(), args.session_timeout_ms));
            }
            Some(result) = futures::StreamExt::next(&mut pending) => match result {
                Ok(()) => break,
                Err(e) => {
                    if !args.quiet && e.to_string() != last_error {
                        eprintln!("probe: at {} ms: {e}", start.elapsed().as_millis());
                    }
                    last_error = e.to_string();
                }
            },
        }
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if !args.quiet {
        println!("probe: getData {path} succeeded after {ms:.0} ms ({attempts} attempts)");
    }
    println!(
        "{}",
        json_line(&[
            ("workload", Value::from("probe")),
            (
                "label",
                args.label.clone().map(Value::from).unwrap_or(Value::Null)
            ),
            ("path", Value::from(path)),
            ("elapsed_ms", Value::from(round1(ms))),
            ("attempts", Value::from(attempts)),
        ])
    );
    Ok(ExitCode::SUCCESS)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A JSON object with keys in the given order.
fn json_line(fields: &[(&str, Value)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::from(*k), v))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn report(args: &Args, prefix: &str, o: Outcome) -> ExitCode {
    let h = &o.stats.hist;
    let ops_per_sec = o.stats.ops as f64 / o.seconds;
    let port = args.servers[0]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok());
    let pid = args
        .server_pid
        .or_else(|| port.and_then(procfs::pid_listening_on));
    let rss = pid.and_then(procfs::rss_kib);
    let q = |p: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(p)
        }
    };
    let (p50, p90, p99, p999, max) = (
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        if h.is_empty() { 0 } else { h.max() },
    );
    let mean = if h.is_empty() { 0.0 } else { h.mean() };

    if !args.quiet {
        println!(
            "{} sessions={} inflight={} value={}B servers={} prefix={}",
            args.workload.name(),
            args.sessions,
            args.inflight,
            args.value_size,
            args.servers.join(","),
            prefix
        );
        println!(
            "  {} ops in {:.2} s: {:.0} ops/s, {} errors",
            o.stats.ops, o.seconds, ops_per_sec, o.stats.errors
        );
        println!(
            "  latency us: p50 {p50}  p90 {p90}  p99 {p99}  p99.9 {p999}  max {max}  mean {mean:.0}"
        );
        for (k, v) in &o.extra {
            println!("  {k}: {v}");
        }
        match (pid, rss) {
            (Some(pid), Some((rss, hwm))) => println!(
                "  server pid {pid}: RSS {:.1} MiB (peak {:.1} MiB)",
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0
            ),
            _ => println!(
                "  server RSS: unknown (no --server-pid, and no process found on the port)"
            ),
        }
        if let Some(e) = &o.stats.first_error {
            println!("  first error: {e}");
        }
    }
    let mut fields: Vec<(&str, Value)> = vec![
        ("workload", Value::from(args.workload.name())),
        (
            "label",
            args.label.clone().map(Value::from).unwrap_or(Value::Null),
        ),
        ("servers", Value::from(args.servers.join(","))),
        ("sessions", Value::from(args.sessions)),
        ("inflight", Value::from(args.inflight)),
        ("value_size", Value::from(args.value_size)),
        ("duration_s", Value::from(round3(o.seconds))),
        ("ops", Value::from(o.stats.ops)),
        ("ops_per_sec", Value::from(round1(ops_per_sec))),
        ("errors", Value::from(o.stats.errors)),
        ("p50_us", Value::from(p50)),
        ("p90_us", Value::from(p90)),
        ("p99_us", Value::from(p99)),
        ("p999_us", Value::from(p999)),
        ("max_us", Value::from(max)),
        ("mean_us", Value::from(round1(mean))),
        ("server_pid", pid.map(Value::from).unwrap_or(Value::Null)),
        (
            "server_rss_kb",
            rss.map(|r| Value::from(r.0)).unwrap_or(Value::Null),
        ),
        (
            "server_hwm_kb",
            rss.map(|r| Value::from(r.1)).unwrap_or(Value::Null),
        ),
        ("prefix", Value::from(prefix)),
    ];
    if let Some(e) = &o.stats.first_error {
        fields.push(("first_error", Value::from(e.clone())));
    }
    fields.extend(o.extra);
    println!("{}", json_line(&fields));
    if o.stats.errors > 0 || o.stats.ops == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
