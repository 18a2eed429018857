//! The operator surface: Prometheus `/metrics` (ZooKeeper's PrometheusMetricsProvider names
//! plus rookery's own), ZooKeeper's AdminServer (JSON commands, compared field by field with
//! Apache ZooKeeper 3.8's on the same workload), and `mntr` in the line format the Prometheus
//! community zookeeper-exporter parses (checked on both servers).
//!
//! `promtool check metrics` runs on the scrape when `promtool` is installed (Debian's
//! `prometheus` package, which tests/run-all.sh installs); `prometheus_server_scrapes_rookery`
//! starts a real Prometheus server when `prometheus` is installed. Without them those two
//! checks print why they were skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use zookeeper_client as zk;

const PROMETHEUS_PROVIDER: &str =
    "org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider";

/// A rookery with `/metrics` and the AdminServer on free loopback ports.
struct Endpoints {
    server: TestServer,
    metrics: u16,
    admin: u16,
}

fn admin_cfg(port: u16) -> Vec<(String, String)> {
    vec![
        ("admin.enableServer".into(), "true".into()),
        ("admin.serverPort".into(), port.to_string()),
        ("admin.serverAddress".into(), "127.0.0.1".into()),
    ]
}

fn start_rookery() -> Endpoints {
    let (metrics, admin) = (free_port(), free_port());
    let mut opts = ServerOpts {
        extra_cfg: admin_cfg(admin),
        ..ServerOpts::default()
    };
    opts.extra_cfg.extend([
        (
            "metricsProvider.className".into(),
            PROMETHEUS_PROVIDER.into(),
        ),
        ("metricsProvider.httpPort".into(), metrics.to_string()),
        ("metricsProvider.httpHost".into(), "127.0.0.1".into()),
    ]);
    let server = TestServer::start_as(Target::Rookery, opts);
    Endpoints {
        server,
        metrics,
        admin,
    }
}

/// Apache ZooKeeper 3.8 with its AdminServer on a free loopback port.
fn start_zookeeper() -> (TestServer, u16) {
    let admin = free_port();
    let opts = ServerOpts {
        extra_cfg: admin_cfg(admin),
        ..ServerOpts::default()
    };
    let server = TestServer::start_as(Target::ZooKeeper, opts);
    // Jetty starts a moment after the client port.
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(admin, "/commands/ruok").is_err() {
        assert!(
            Instant::now() < deadline,
            "ZooKeeper's AdminServer never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (server, admin)
}

fn scrape(port: u16) -> String {
    let (status, content_type, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    body
}

/// The Prometheus text format, parsed strictly enough to fail on malformed lines:
/// `# TYPE` per family, and samples `name{labels} value`.
#[derive(Debug, Default)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut out = Scrape::default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(
                    ["gauge", "counter", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(
                    out.types.insert(name.into(), kind.into()).is_none(),
                    "{name} twice"
                );
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            assert!(!line.starts_with('#'), "stray comment {line:?}");
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad name {name:?}"
            );
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| {
                    out.types
                        .get(*f)
                        .is_some_and(|t| t == "histogram" || t == "summary")
                })
                .unwrap_or(name);
            assert!(out.types.contains_key(family), "{name} has no # TYPE");
            out.samples.insert(series.to_string(), value);
        }
        out
    }

    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no sample {series}"))
    }
}

/// ZooKeeper's PrometheusMetricsProvider gauges (ZooKeeperServer.registerMetrics) that
/// rookery exports under the same names.
const ZK_GAUGES: &[&str] = &[
    "avg_latency",
    "max_latency",
    "min_latency",
    "packets_received",
    "packets_sent",
    "num_alive_connections",
    "outstanding_requests",
    "uptime",
    "znode_count",
    "watch_count",
    "ephemerals_count",
    "approximate_data_size",
    "global_sessions",
    "local_sessions",
    "open_file_descriptor_count",
    "max_file_descriptor_count",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_tree() {
    let ep = start_rookery();
    within(TEST_BOUND_SECS, "metrics", async {
        let before = Scrape::parse(&scrape(ep.metrics));
        for name in ZK_GAUGES {
            assert_eq!(
                before.types.get(*name).map(String::as_str),
                Some("gauge"),
                "{name}"
            );
        }
        for (name, kind) in [
            ("rookery_raft_term", "gauge"),
            ("rookery_raft_commit_index", "gauge"),
            ("rookery_raft_applied_index", "gauge"),
            ("rookery_raft_write_txns_total", "counter"),
            ("rookery_raft_batch_entries", "histogram"),
            ("rookery_raft_log_commit_seconds", "histogram"),
            ("rookery_raft_log_flush_seconds", "histogram"),
            ("rookery_snapshot_duration_seconds", "histogram"),
            ("rookery_snapshot_pause_seconds", "histogram"),
            // ZooKeeper's summaries (ms), as its alerting examples use them.
            ("fsynctime", "summary"),
            ("snapshottime", "summary"),
        ] {
            assert_eq!(
                before.types.get(name).map(String::as_str),
                Some(kind),
                "{name}"
            );
        }
        // Standalone: no quorum, no peers.
        assert!(!before.types.contains_key("quorum_size"));
        assert!(!before.types.contains_key("rookery_raft_peer_lag_entries"));

        let c = ep.server.client().await;
        let base = unique("metrics");
        c.create(&base, b"", &anyone()).await.unwrap();
        for i in 0..10 {
            c.create(&format!("{base}/n{i}"), b"0123456789", &anyone())
                .await
                .unwrap();
        }
        let e = format!("{base}/eph");
        c.create(&e, b"", &opts(zk::CreateMode::Ephemeral))
            .await
            .unwrap();
        let (_, _, _w) = c.get_and_watch_data(&base).await.unwrap();

        let after = Scrape::parse(&scrape(ep.metrics));
        let grew = |name: &str| after.get(name) - before.get(name);
        assert_eq!(grew("znode_count"), 12.0);
        assert_eq!(grew("ephemerals_count"), 1.0);
        assert_eq!(after.get("watch_count"), 1.0);
        assert!(grew("approximate_data_size") >= 100.0);
        assert!(after.get("num_alive_connections") >= 1.0);
        assert!(after.get("global_sessions") >= 1.0);
        assert!(grew("packets_received") >= 13.0);
        assert!(grew("packets_sent") >= 13.0);
        assert!(after.get("open_file_descriptor_count") > 0.0);
        assert!(grew("rookery_raft_applied_index") >= 12.0);
        assert!(after.get("rookery_raft_commit_index") >= after.get("rookery_raft_applied_index"));
        assert!(after.get("rookery_raft_term") >= 1.0);
        assert!(grew("rookery_raft_write_txns_total") >= 1.0);
        // Every write went through a batch: the batch histogram counted its entries.
        assert!(grew("rookery_raft_batch_entries_sum") >= 12.0);
        assert!(grew("rookery_raft_batch_entries_count") >= 1.0);
        assert!(grew("rookery_raft_log_commit_seconds_count") >= 1.0);
        assert!(grew("fsynctime_count") >= 1.0);
        assert!(grew("fsynctime_sum") > 0.0);
        let fsyncs = after.get("rookery_raft_log_commit_seconds_count")
            + after.get("rookery_raft_log_flush_seconds_count");
        assert_eq!(after.get("fsynctime_count"), fsyncs);
        assert_eq!(
            after.get("rookery_raft_batch_entries_count"),
            after.get("rookery_raft_batch_entries_bucket{le=\"+Inf\"}")
        );
        // Buckets are cumulative.
        let buckets: Vec<f64> = after
            .samples
            .iter()
            .filter(|(k, _)| k.starts_with("rookery_raft_log_commit_seconds_bucket"))
            .map(|(_, v)| *v)
            .collect();
        assert!(buckets.len() > 5);
        let inf = after.get("rookery_raft_log_commit_seconds_bucket{le=\"+Inf\"}");
        assert!(buckets.iter().all(|b| *b <= inf));
        // mntr shows the same values under zk_ names.
        let mntr = ep.server.four_letter("mntr");
        let line = format!("zk_znode_count\t{}\n", after.get("znode_count"));
        assert!(mntr.contains(&line), "{line:?} not in\n{mntr}");
    })
    .await;
}

/// promtool's lint allows no `_count` suffix outside summaries and histograms; ZooKeeper's
/// own gauge names (kept for its dashboards) have one. Every other problem fails the test.
const ZK_NAMES_PROMTOOL_DISLIKES: &[&str] = &[
    "znode_count",
    "watch_count",
    "ephemerals_count",
    "open_file_descriptor_count",
    "max_file_descriptor_count",
];

#[test]
fn metrics_pass_promtool() {
    let Some(promtool) = installed("promtool") else {
        return;
    };
    let ep = start_rookery();
    let body = scrape(ep.metrics);
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            !ZK_NAMES_PROMTOOL_DISLIKES.iter().any(|n| {
                *l == format!(
                    "{n} non-histogram and non-summary metrics should not have \"_count\" suffix"
                )
            })
        })
        .collect();
    assert!(
        problems.is_empty(),
        "promtool (exit {:?}) reports:\n{}",
        out.status.code(),
        problems.join("\n")
    );
    // promtool exits 3 for lint findings only and 1 for a parse error.
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "promtool failed: {report}"
    );
}

/// Debian's `prometheus` package's `name` on PATH, or None (and the skip said on stderr).
fn installed(name: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("SKIPPED: {name} not installed (Debian package `prometheus`)");
    }
    found
}

/// A real Prometheus server (Debian's `prometheus`) scrapes rookery once a second and
/// reports the target up, with rookery's values queryable.
#[test]
fn prometheus_server_scrapes_rookery() {
    let Some(prometheus) = installed("prometheus") else {
        return;
    };
    let ep = start_rookery();
    let dir = tempfile::tempdir().unwrap();
    let web = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
             - job_name: rookery\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            ep.metrics
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = std::process::Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let watchdog = spawn_watchdog(child.id(), "");
    struct Kill(std::process::Child, std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = self.1.kill();
            let _ = self.1.wait();
        }
    }
    let _guard = Kill(child, watchdog);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        if let Ok((200, _, body)) = http_get(web, "/api/v1/targets") {
            let v: Value = serde_json::from_str(&body).unwrap();
            let health = v["data"]["activeTargets"][0]["health"]
                .as_str()
                .map(str::to_string);
            if health.as_deref() == Some("up") {
                break;
            }
            last = body;
        }
        assert!(
            Instant::now() < deadline,
            "target never up; last /api/v1/targets: {last}\nprometheus log:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "prometheus reported the target up after {:?}",
        started.elapsed()
    );
    // What ZooKeeper's alerting examples and dashboard query is there (`up` included).
    for query in [
        "up",
        "znode_count",
        "num_alive_connections",
        "approximate_data_size",
        "watch_count",
        "open_file_descriptor_count",
        "avg_latency",
        "rate(fsynctime_sum[1m])",
        "rate(snapshottime_sum[5m])",
    ] {
        let path = format!(
            "/api/v1/query?query={}",
            query.replace('[', "%5B").replace(']', "%5D")
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, _, body) = http_get(web, &path).unwrap();
            assert_eq!(status, 200, "{query}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            if v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                if query == "up" {
                    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{body}");
                }
                break;
            }
            // A rate needs two samples: wait for the next scrape.
            assert!(Instant::now() < deadline, "{query}: no result: {body}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    // The scraped znode_count is the server's.
    let nodes = Scrape::parse(&scrape(ep.metrics)).get("znode_count");
    let (status, _, body) = http_get(web, "/api/v1/query?query=znode_count").unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let value = v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or_else(|| panic!("no znode_count in {body}"));
    assert_eq!(value.parse::<f64>().unwrap(), nodes, "{body}");
}

/// The Prometheus community zookeeper-exporter's reading of `mntr`: one `key<TAB>value` per
/// line, keys `zk_…` (or rookery's `rookery_…`), values numbers except the version and the
/// server state (which the exporter turns into labels).
fn exporter_parse(mntr: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in mntr.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 2, "not key<TAB>value: {line:?}");
        let (key, value) = (fields[0], fields[1]);
        assert!(
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "key {key:?}"
        );
        if !["zk_version", "zk_server_state"].contains(&key) {
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("{key}: {value:?} is not a number"));
        }
        assert!(
            out.insert(key.to_string(), value.to_string()).is_none(),
            "{key} twice"
        );
    }
    out
}

#[test]
fn mntr_parses_like_zookeeper_exporter_on_both() {
    let rookery = start_rookery();
    let (zookeeper, _) = start_zookeeper();
    let r = exporter_parse(&rookery.server.four_letter("mntr"));
    let z = exporter_parse(&zookeeper.four_letter("mntr"));
    // The rows the exporter's dashboards use: ZooKeeper's, under the same keys, on rookery too.
    let core: BTreeSet<&str> = ZK_GAUGES
        .iter()
        .copied()
        .chain(["version", "server_state"])
        .collect();
    for name in core {
        let key = format!("zk_{name}");
        assert!(z.contains_key(&key), "ZooKeeper has no {key}");
        assert!(r.contains_key(&key), "rookery has no {key}");
    }
    assert_eq!(r["zk_server_state"], z["zk_server_state"]);
    assert_eq!(r["zk_znode_count"], z["zk_znode_count"]);
}

/// JSON type names, ints and floats apart (ZooKeeper's Jackson writes 0.0 for a double).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Maps keyed by data (session ids, paths, expiry times) rather than field names.
fn keyed_by_data(key: &str) -> bool {
    key.starts_with('/') || key.parse::<i64>().is_ok()
}

/// Differences between ZooKeeper's answer and rookery's: keys ZooKeeper has and rookery
/// lacks (unless listed in `missing_ok` as `path.key`), and values of different types.
fn shape_diffs(zk: &Value, rk: &Value, path: &str, missing_ok: &[&str], out: &mut Vec<String>) {
    if kind(zk) != kind(rk) {
        // ZooKeeper writes a never-computed double as an int 0 in places; not here.
        out.push(format!(
            "{path}: ZooKeeper {} vs rookery {}",
            kind(zk),
            kind(rk)
        ));
        return;
    }
    match (zk, rk) {
        (Value::Object(z), Value::Object(r)) => {
            if z.keys().chain(r.keys()).any(|k| keyed_by_data(k)) {
                // Compare every entry's shape with ZooKeeper's first one.
                if let Some(sample) = z.values().next() {
                    for (k, v) in r {
                        shape_diffs(sample, v, &format!("{path}[{k}]"), missing_ok, out);
                    }
                }
                return;
            }
            for (k, zv) in z {
                let at = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match r.get(k) {
                    Some(rv) => shape_diffs(zv, rv, &at, missing_ok, out),
                    None if missing_ok.contains(&at.as_str()) => {}
                    None => out.push(format!("{at}: missing in rookery")),
                }
            }
        }
        (Value::Array(z), Value::Array(r)) => {
            if let Some(sample) = z.first() {
                for v in r {
                    shape_diffs(sample, v, &format!("{path}[]"), missing_ok, out);
                }
            }
        }
        _ => {}
    }
}

/// Per-connection counters rookery does not keep.
const CONNECTION_FIELDS_MISSING: &[&str] = &[
    "interest_ops",
    "last_operation",
    "last_cxid",
    "last_zxid",
    "last_response_time",
    "last_latency",
    "min_latency",
    "avg_latency",
    "max_latency",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_server_answers_like_zookeeper() {
    let rookery = start_rookery();
    let (zookeeper, zk_admin) = start_zookeeper();
    within(TEST_BOUND_SECS, "admin server", async {
        // The same workload on both: a node, an ephemeral, two data watches.
        let mut clients = Vec::new();
        for server in [&rookery.server, &zookeeper] {
            let c = server.client().await;
            c.create("/cmp", b"x", &anyone()).await.unwrap();
            c.create("/cmp/e", b"", &opts(zk::CreateMode::Ephemeral))
                .await
                .unwrap();
            let watches = (
                c.get_and_watch_data("/cmp").await.unwrap().2,
                c.check_and_watch_stat("/cmp/e").await.unwrap().1,
            );
            clients.push((c, watches));
        }
        let get = |port: u16, path: &str| {
            let (status, content_type, body) = http_get(port, path).unwrap();
            assert_eq!(status, 200, "{path}: {body}");
            (content_type, body)
        };

        // The listing: rookery's commands are ZooKeeper's (a subset of its names).
        let (_, zk_list) = get(zk_admin, "/commands");
        let (_, rk_list) = get(rookery.admin, "/commands");
        let links = |html: &str| -> BTreeSet<String> {
            html.split("<a href=\"/commands/")
                .skip(1)
                .filter_map(|s| s.split('"').next().map(str::to_string))
                .collect()
        };
        let (zk_names, rk_names) = (links(&zk_list), links(&rk_list));
        assert!(rk_names.len() >= 20, "{rk_list}");
        assert!(rk_names.is_subset(&zk_names), "{rk_names:?} ⊄ {zk_names:?}");

        let mut failures = Vec::new();
        // Commands whose every ZooKeeper key rookery has, then the ones with known gaps.
        let complete = [
            "ruok",
            "configuration",
            "conf",
            "dirs",
            "dump",
            "hash",
            "initial_configuration",
            "is_read_only",
            "isro",
            "last_snapshot",
            "leader",
            "voting_view",
            "watch_summary",
            "watches",
            "watches_by_path",
            "zabstate",
            "nonexistent_command",
        ]
        .map(|c| (c, Vec::new()));
        for (command, missing_ok) in complete.into_iter().chain([
            ("connections", connection_missing("connections")),
            (
                "stats",
                [
                    connection_missing("connections"),
                    vec![
                        "server_stats.client_response_stats".into(),
                        "server_stats.auth_failed_count".into(),
                        "client_response".into(),
                    ],
                ]
                .concat(),
            ),
            (
                "server_stats",
                vec![
                    "server_stats.client_response_stats".into(),
                    "server_stats.auth_failed_count".into(),
                    "client_response".into(),
                ],
            ),
            (
                "environment",
                [
                    "java.version",
                    "java.vendor",
                    "java.home",
                    "java.class.path",
                    "java.library.path",
                    "java.io.tmpdir",
                    "java.compiler",
                    "os.memory.free",
                    "os.memory.max",
                    "os.memory.total",
                ]
                .map(String::from)
                .to_vec(),
            ),
        ]) {
            let (zk_type, zk_body) = get(zk_admin, &format!("/commands/{command}"));
            let (rk_type, rk_body) = get(rookery.admin, &format!("/commands/{command}"));
            assert_eq!(zk_type, "application/json", "{command}");
            assert_eq!(rk_type, "application/json", "{command}");
            let z: Value = serde_json::from_str(&zk_body).unwrap();
            let r: Value = serde_json::from_str(&rk_body).unwrap();
            assert_eq!(r["command"], z["command"], "{command}");
            assert_eq!(r["error"], z["error"], "{command}");
            let missing: Vec<&str> = missing_ok.iter().map(String::as_str).collect();
            let mut diffs = Vec::new();
            shape_diffs(&z, &r, "", &missing, &mut diffs);
            failures.extend(diffs.into_iter().map(|d| format!("{command}: {d}")));
        }

        // Values that must agree on the same workload.
        let json = |port: u16, command: &str| -> Value {
            serde_json::from_str(&get(port, &format!("/commands/{command}")).1).unwrap()
        };
        let (z, r) = (
            json(zk_admin, "watch_summary"),
            json(rookery.admin, "watch_summary"),
        );
        assert_eq!(r, z, "watch_summary");
        let paths = |v: &Value, key: &str| -> BTreeSet<String> {
            v[key]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|p| p.as_array().unwrap().iter().map(|s| s.to_string()))
                .collect()
        };
        let (z, r) = (json(zk_admin, "watches"), json(rookery.admin, "watches"));
        assert_eq!(
            paths(&r, "session_id_to_watched_paths"),
            paths(&z, "session_id_to_watched_paths")
        );
        let (z, r) = (json(zk_admin, "dump"), json(rookery.admin, "dump"));
        assert_eq!(
            paths(&r, "session_id_to_ephemeral_paths"),
            paths(&z, "session_id_to_ephemeral_paths")
        );
        let sessions = |v: &Value| -> usize {
            v["expiry_time_to_session_ids"]
                .as_object()
                .unwrap()
                .values()
                .map(|s| s.as_array().unwrap().len())
                .sum()
        };
        assert_eq!(sessions(&r), sessions(&z), "sessions in dump");
        let (z, r) = (
            json(zk_admin, "watches_by_path"),
            json(rookery.admin, "watches_by_path"),
        );
        let keys = |v: &Value| -> Vec<String> {
            v["path_to_session_ids"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        assert_eq!(keys(&r), keys(&z));
        let (z, r) = (
            json(zk_admin, "is_read_only"),
            json(rookery.admin, "is_read_only"),
        );
        assert_eq!(r, z);
        let (z, r) = (
            json(zk_admin, "configuration"),
            json(rookery.admin, "configuration"),
        );
        for key in [
            "tick_time",
            "min_session_timeout",
            "max_session_timeout",
            "server_id",
            "max_client_cnxns",
        ] {
            assert_eq!(r[key], z[key], "configuration.{key}");
        }
        let (z, r) = (
            json(zk_admin, "connections"),
            json(rookery.admin, "connections"),
        );
        let conns = |v: &Value| v["connections"].as_array().unwrap().len();
        assert_eq!(conns(&r), conns(&z));
        assert_eq!(
            r["connections"][0]["session_timeout"],
            z["connections"][0]["session_timeout"]
        );

        // monitor: ZooKeeper's registered gauges, same names and types; its provider's
        // hundreds of summaries and counters are not rookery's.
        let (z, r) = (json(zk_admin, "monitor"), json(rookery.admin, "monitor"));
        for name in ZK_GAUGES.iter().chain(&["version", "server_state"]) {
            match (z.get(*name), r.get(*name)) {
                (Some(zv), Some(rv)) if kind(zv) == kind(rv) => {}
                (zv, rv) => {
                    failures.push(format!("monitor.{name}: ZooKeeper {zv:?}, rookery {rv:?}"))
                }
            }
        }
        for name in [
            "znode_count",
            "ephemerals_count",
            "watch_count",
            "num_alive_connections",
            "server_state",
        ] {
            assert_eq!(r[name], z[name], "monitor.{name}");
        }
        let zk_only = z
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !r.as_object().unwrap().contains_key(*k))
            .count();
        eprintln!(
            "monitor: rookery {} keys, ZooKeeper {}, {zk_only} of ZooKeeper's not in rookery",
            r.as_object().unwrap().len(),
            z.as_object().unwrap().len()
        );
        assert!(
            failures.is_empty(),
            "differences from ZooKeeper:\n{}",
            failures.join("\n")
        );
        drop(clients);
    })
    .await;
}

fn connection_missing(list: &str) -> Vec<String> {
    CONNECTION_FIELDS_MISSING
        .iter()
        .map(|f| format!("{list}[].{f}"))
        .collect()
}
