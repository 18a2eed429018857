//! ZooKeeper's AdminServer (`org.apache.zookeeper.server.admin`): JSON answers to the
//! four-letter words' long names over HTTP, `GET <admin.commandURL>/<name>` on
//! `admin.serverPort`. `GET <admin.commandURL>` lists the commands as HTML links, as
//! ZooKeeper's `JettyAdminServer` does.
//!
//! Every answer is a JSON object with ZooKeeper's field names and types plus `command` (the
//! primary name) and `error` (null, or why it did not run); an unknown command and a server
//! not serving answer with status 200 and an `error`, as ZooKeeper does.
//!
//! Safety, as in ZooKeeper 3.8: the AdminServer does not consult `4lw.commands.whitelist`
//! (that list gates the four-letter words on the client port only) and asks for no
//! authentication; 3.9 added auth only for `snapshot` and `restore`, which rookery does not
//! offer. So what protects it is who can reach the port: rookery leaves it off unless
//! `admin.enableServer=true` (ZooKeeper's default is on) and only answers GET (and HEAD).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path as UrlPath, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::config::PeerRole;
use crate::raft::{NodeRole, RaftHandle};
use crate::server::admin::{self, server_state, VERSION};
use crate::server::monitor;
use crate::server::registry::ConnRegistry;
use crate::state::Shared;

/// ZooKeeper's answer to a command that needs a running server while there is none.
const NOT_SERVING: &str = "This ZooKeeper instance is not currently serving requests";

/// ZooKeeper's `fsync.warningthresholdms` default: a log commit slower than this counts in
/// `fsync_threshold_exceed_count`.
const FSYNC_WARNING_SECONDS: f64 = 1.0;

/// One command: its names (the first is the primary one) and whether it needs a serving
/// server (ZooKeeper's `serverRequired`).
struct Command {
    /// Primary name, then aliases (the four-letter word among them).
    names: &'static [&'static str],
    /// Answered with [`NOT_SERVING`] while this member serves nobody.
    server_required: bool,
}

/// ZooKeeper 3.8's commands that rookery has the data for. Left out: the trace mask
/// (`get_trace_mask`, `set_trace_mask`), observer connection stats (`observers`,
/// `observer_connection_stat_reset`) and Java's `system_properties`.
const COMMANDS: &[Command] = &[
    Command {
        names: &["configuration", "conf", "config"],
        server_required: true,
    },
    Command {
        names: &["connection_stat_reset", "crst"],
        server_required: true,
    },
    Command {
        names: &["connections", "cons"],
        server_required: true,
    },
    Command {
        names: &["dirs"],
        server_required: true,
    },
    Command {
        names: &["dump"],
        server_required: true,
    },
    Command {
        names: &["environment", "env", "envi"],
        server_required: false,
    },
    Command {
        names: &["hash"],
        server_required: true,
    },
    Command {
        names: &["initial_configuration", "icfg"],
        server_required: true,
    },
    Command {
        names: &["is_read_only", "isro"],
        server_required: true,
    },
    Command {
        names: &["last_snapshot", "lsnp"],
        server_required: true,
    },
    Command {
        names: &["leader", "lead"],
        server_required: true,
    },
    // ZooKeeper 3.8.6 marks monitor as not needing a server, then dereferences it; rookery
    // answers "not serving" instead, as its `mntr` does.
    Command {
        names: &["monitor", "mntr"],
        server_required: true,
    },
    Command {
        names: &["ruok"],
        server_required: true,
    },
    Command {
        names: &["server_stats", "srvr"],
        server_required: true,
    },
    Command {
        names: &["stat_reset", "srst"],
        server_required: true,
    },
    Command {
        names: &["stats", "stat"],
        server_required: true,
    },
    Command {
        names: &["voting_view"],
        server_required: true,
    },
    Command {
        names: &["watch_summary", "wchs"],
        server_required: true,
    },
    Command {
        names: &["watches", "wchc"],
        server_required: true,
    },
    Command {
        names: &["watches_by_path", "wchp"],
        server_required: true,
    },
    Command {
        names: &["zabstate"],
        server_required: false,
    },
];

/// What the command handlers read.
#[derive(Clone)]
pub struct AdminContext {
    /// Tree, sessions, watches, stats, config.
    pub shared: Arc<Shared>,
    /// Live connections.
    pub conns: Arc<ConnRegistry>,
    /// Raft role, leader, indexes.
    pub raft: RaftHandle,
}

/// The primary names, sorted (the `/commands` listing).
pub fn primary_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = COMMANDS
        .iter()
        .filter_map(|c| c.names.first().copied())
        .collect();
    names.sort_unstable();
    names
}

/// Runs the command named `name` (any of its names) and returns ZooKeeper's JSON object.
pub async fn run(ctx: &AdminContext, name: &str) -> Value {
    let Some(command) = COMMANDS.iter().find(|c| c.names.contains(&name)) else {
        return response(name, Some(format!("Unknown command: {name}")), Map::new());
    };
    let primary = command.names.first().copied().unwrap_or(name);
    if command.server_required && !serving(ctx) {
        return response(primary, Some(NOT_SERVING.to_string()), Map::new());
    }
    let mut data = Map::new();
    let mut error = None;
    match primary {
        "configuration" => configuration(ctx, &mut data),
        "connection_stat_reset" | "ruok" => {}
        "connections" => {
            data.insert("connections".into(), Value::Array(connection_infos(ctx)));
            data.insert("secure_connections".into(), json!([]));
        }
        "dirs" => {
            let size = data_dir_size(ctx).await;
            data.insert("datadir_size".into(), json!(size));
            data.insert("logdir_size".into(), json!(size));
        }
        "dump" => dump(ctx, &mut data),
        "environment" => environment(ctx, &mut data),
        "hash" => {
            data.insert("digests".into(), json!([]));
        }
        "initial_configuration" => {
            let source = ctx.shared.config().source.clone();
            let text = tokio::task::spawn_blocking(move || {
                std::fs::read_to_string(&source).unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            data.insert("initial_configuration".into(), json!(text));
        }
        "is_read_only" => {
            data.insert("read_only".into(), json!(read_only(ctx)));
        }
        "last_snapshot" => last_snapshot(ctx, &mut data).await,
        "leader" => leader(ctx, &mut data, &mut error),
        "monitor" => {
            for row in monitor::rows(&ctx.shared, &ctx.conns, &ctx.raft) {
                data.insert(row.name.to_string(), row.json_value());
            }
        }
        "server_stats" => server_stats(ctx, &mut data).await,
        "stat_reset" => ctx.shared.stats().reset(),
        "stats" => {
            server_stats(ctx, &mut data).await;
            data.insert("connections".into(), Value::Array(connection_infos(ctx)));
            data.insert("secure_connections".into(), json!([]));
        }
        "voting_view" => voting_view(ctx, &mut data),
        "watch_summary" => {
            let summary = ctx.shared.watches().lock().summary();
            data.insert("num_connections".into(), json!(summary.connections));
            data.insert("num_paths".into(), json!(summary.paths));
            data.insert("num_total_watches".into(), json!(summary.total_watches));
        }
        "watches" => {
            let by_watcher = ctx.shared.watches().lock().by_watcher();
            let sessions = session_ids(ctx);
            let mut out = Map::new();
            for (watcher, paths) in by_watcher {
                let session = sessions.get(&watcher).copied().unwrap_or(0);
                out.insert(session.to_string(), json!(paths));
            }
            data.insert("session_id_to_watched_paths".into(), Value::Object(out));
        }
        "watches_by_path" => {
            let by_path = ctx.shared.watches().lock().by_path();
            let sessions = session_ids(ctx);
            let mut out = Map::new();
            for (path, watchers) in by_path {
                let ids: Vec<i64> = watchers
                    .iter()
                    .map(|w| sessions.get(w).copied().unwrap_or(0))
                    .collect();
                out.insert(path, json!(ids));
            }
            data.insert("path_to_session_ids".into(), Value::Object(out));
        }
        "zabstate" => zab_state(ctx, &mut data),
        _ => error = Some(format!("Unknown command: {name}")),
    }
    response(primary, error, data)
}

/// ZooKeeper's `CommandResponse.toMap`: `command`, `error`, then the data (whose own `error`,
/// if any, wins).
fn response(command: &str, error: Option<String>, data: Map<String, Value>) -> Value {
    let mut out = Map::new();
    out.insert("command".into(), json!(command));
    out.insert("error".into(), error.map_or(Value::Null, Value::String));
    out.extend(data);
    Value::Object(out)
}

/// Whether this member serves clients (read-only mode counts, as a running
/// `ReadOnlyZooKeeperServer` does in ZooKeeper).
fn serving(ctx: &AdminContext) -> bool {
    !ctx.shared.config().is_ensemble() || ctx.raft.is_fresh() || ctx.conns.is_read_only()
}

fn read_only(ctx: &AdminContext) -> bool {
    ctx.shared.config().is_ensemble() && !ctx.raft.is_fresh() && ctx.conns.is_read_only()
}

/// Connection id → session id, copied out of the registry's lock.
fn session_ids(ctx: &AdminContext) -> BTreeMap<u64, i64> {
    ctx.conns
        .lock()
        .by_id
        .iter()
        .map(|(id, conn)| (*id, conn.session_id))
        .collect()
}

fn configuration(ctx: &AdminContext, data: &mut Map<String, Value>) {
    let config = ctx.shared.config();
    let dir = config.data_dir.display().to_string();
    data.insert("client_port".into(), json!(config.client_port));
    data.insert("data_dir".into(), json!(dir));
    data.insert("data_log_dir".into(), json!(dir));
    data.insert(
        "tick_time".into(),
        json!(config.tick_time.as_millis() as u64),
    );
    data.insert("max_client_cnxns".into(), json!(config.max_client_cnxns));
    data.insert(
        "min_session_timeout".into(),
        json!(config.min_session_timeout.as_millis() as u64),
    );
    data.insert(
        "max_session_timeout".into(),
        json!(config.max_session_timeout.as_millis() as u64),
    );
    // ZooKeeper reports 0 for a standalone server's id.
    let id = if config.is_ensemble() {
        config.server_id
    } else {
        0
    };
    data.insert("server_id".into(), json!(id));
    // The OS default backlog (ZooKeeper's -1: not configured).
    data.insert("client_port_listen_backlog".into(), json!(-1));
}

/// ZooKeeper's `ServerCnxn.getConnectionInfo(false)`, with the fields rookery tracks.
fn connection_infos(ctx: &AdminContext) -> Vec<Value> {
    monitor::connection_rows(&ctx.shared, &ctx.conns)
        .into_iter()
        .map(|row| {
            let mut info = Map::new();
            info.insert("remote_socket_address".into(), json!(row.peer.to_string()));
            info.insert("outstanding_requests".into(), json!(row.queued));
            info.insert("packets_received".into(), json!(row.received));
            info.insert("packets_sent".into(), json!(row.sent));
            info.insert("session_id".into(), json!(row.session_id));
            info.insert("established".into(), json!(row.established_ms));
            if let Some(timeout) = row.timeout_ms {
                info.insert("session_timeout".into(), json!(timeout));
            }
            Value::Object(info)
        })
        .collect()
}

async fn data_dir_size(ctx: &AdminContext) -> u64 {
    let dir = ctx.shared.config().data_dir.clone();
    tokio::task::spawn_blocking(move || admin::dir_size(&dir))
        .await
        .unwrap_or(0)
}

/// Sessions by expiry time (ms since the server started, rounded up to tickTime as
/// ZooKeeper's `ExpiryQueue` rounds) and ephemerals by session.
fn dump(ctx: &AdminContext, data: &mut Map<String, Value>) {
    let now = Instant::now();
    let uptime = ctx.shared.uptime().as_millis() as u64;
    let tick = (ctx.shared.config().tick_time.as_millis() as u64).max(1);
    let mut by_expiry: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for (session, deadline) in ctx.shared.tracker().deadlines() {
        let left = deadline.saturating_duration_since(now).as_millis() as u64;
        let at = (uptime + left).div_ceil(tick) * tick;
        by_expiry.entry(at).or_default().push(session);
    }
    let mut expiry = Map::new();
    for (at, mut sessions) in by_expiry {
        sessions.sort_unstable();
        expiry.insert(at.to_string(), json!(sessions));
    }
    let ephemerals: Vec<(i64, Vec<String>)> = {
        let state = ctx.shared.state().read();
        state
            .tree
            .session_ids_with_ephemerals()
            .into_iter()
            .map(|session| (session, state.tree.ephemerals_of(session)))
            .collect()
    };
    let mut by_session = Map::new();
    for (session, paths) in ephemerals {
        by_session.insert(session.to_string(), json!(paths));
    }
    data.insert("expiry_time_to_session_ids".into(), Value::Object(expiry));
    data.insert(
        "session_id_to_ephemeral_paths".into(),
        Value::Object(by_session),
    );
}

fn environment(ctx: &AdminContext, data: &mut Map<String, Value>) {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let user = std::env::var("USER").unwrap_or_default();
    let home = std::env::var("HOME").unwrap_or_default();
    data.insert("zookeeper.version".into(), json!(VERSION));
    data.insert("host.name".into(), json!(read("/proc/sys/kernel/hostname")));
    data.insert("os.name".into(), json!(std::env::consts::OS));
    data.insert("os.arch".into(), json!(std::env::consts::ARCH));
    data.insert(
        "os.version".into(),
        json!(read("/proc/sys/kernel/osrelease")),
    );
    data.insert("user.name".into(), json!(user));
    data.insert("user.home".into(), json!(home));
    data.insert("user.dir".into(), json!(cwd));
    data.insert(
        "rookery.data.dir".into(),
        json!(ctx.shared.config().data_dir.display().to_string()),
    );
}

/// The newest durable snapshot: its zxid in hex (ZooKeeper's `Long.toHexString`, -1 →
/// `ffffffffffffffff` when there is none) and its file's mtime in seconds.
async fn last_snapshot(ctx: &AdminContext, data: &mut Map<String, Value>) {
    let index = ctx.raft.snapshot_index();
    let dir = ctx.shared.config().data_dir.join("snapshots");
    let newest = tokio::task::spawn_blocking(move || newest_mtime(&dir))
        .await
        .ok()
        .flatten();
    let (zxid, timestamp) = match (index, newest) {
        (0, _) | (_, None) => (format!("{:x}", -1i64), -1i64),
        (index, Some(seconds)) => (format!("{index:x}"), seconds),
    };
    data.insert("zxid".into(), json!(zxid));
    data.insert("timestamp".into(), json!(timestamp));
}

fn newest_mtime(dir: &Path) -> Option<i64> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok())
}

fn leader(ctx: &AdminContext, data: &mut Map<String, Value>, error: &mut Option<String>) {
    let config = ctx.shared.config();
    if !config.is_ensemble() {
        *error = Some("server is not initialized".to_string());
        return;
    }
    let leader_id = ctx.raft.leader_id();
    let ip = config
        .servers
        .iter()
        .find(|s| s.id == leader_id)
        .map(|s| s.host.clone())
        .unwrap_or_default();
    data.insert(
        "is_leader".into(),
        json!(ctx.raft.role() == NodeRole::Leader),
    );
    data.insert("leader_id".into(), json!(leader_id));
    data.insert("leader_ip".into(), json!(ip));
}

/// ZooKeeper's `ServerStats` as JSON, with the fields rookery tracks (not: client response
/// sizes, auth failures).
async fn server_stats(ctx: &AdminContext, data: &mut Map<String, Value>) {
    let (min, avg, max) = monitor::latency(&ctx.shared);
    let stats = ctx.shared.stats();
    let peers: Vec<std::net::IpAddr> = ctx
        .conns
        .lock()
        .by_id
        .values()
        .map(|c| c.peer.ip())
        .collect();
    let local = peers.iter().filter(|ip| ip.is_loopback()).count();
    let commits = ctx.raft.histograms().commit_latency;
    let within = commits
        .buckets
        .iter()
        .find(|(bound, _)| *bound >= FSYNC_WARNING_SECONDS)
        .map_or(commits.count, |(_, n)| *n);
    let dir_size = data_dir_size(ctx).await;
    let node_count = ctx.shared.state().read().tree.node_count();
    let mut s = Map::new();
    s.insert(
        "packets_sent".into(),
        json!(stats.packets_sent.load(Ordering::Relaxed)),
    );
    s.insert(
        "packets_received".into(),
        json!(stats.packets_received.load(Ordering::Relaxed)),
    );
    s.insert(
        "fsync_threshold_exceed_count".into(),
        json!(commits.count.saturating_sub(within)),
    );
    s.insert("data_dir_size".into(), json!(dir_size));
    s.insert("log_dir_size".into(), json!(dir_size));
    s.insert("provider_null".into(), json!(false));
    s.insert(
        "server_state".into(),
        json!(server_state(&ctx.shared, &ctx.conns, &ctx.raft)),
    );
    s.insert("last_processed_zxid".into(), json!(ctx.shared.last_zxid()));
    s.insert(
        "outstanding_requests".into(),
        json!(stats.outstanding.load(Ordering::Relaxed)),
    );
    s.insert("avg_latency".into(), json!(avg));
    s.insert("max_latency".into(), json!(max.round() as i64));
    s.insert("min_latency".into(), json!(min.round() as i64));
    s.insert("num_alive_client_connections".into(), json!(peers.len()));
    // No TLS: every connection is a non-mTLS one.
    s.insert(
        "non_mtlsremote_conn_count".into(),
        json!(peers.len() - local),
    );
    s.insert("non_mtlslocal_conn_count".into(), json!(local));
    s.insert(
        "uptime".into(),
        json!(ctx.shared.uptime().as_millis() as u64),
    );
    data.insert("version".into(), json!(VERSION));
    data.insert("read_only".into(), json!(read_only(ctx)));
    data.insert("server_stats".into(), Value::Object(s));
    data.insert("node_count".into(), json!(node_count));
    if ctx.shared.config().is_ensemble() && ctx.raft.role() == NodeRole::Leader {
        let sizes = ctx.raft.quorum_status().proposals;
        data.insert(
            "proposal_stats".into(),
            json!({
                "last_buffer_size": sizes.last,
                "min_buffer_size": sizes.min,
                "max_buffer_size": sizes.max,
            }),
        );
    }
}

fn voting_view(ctx: &AdminContext, data: &mut Map<String, Value>) {
    let config = ctx.shared.config();
    let mut view = Map::new();
    for server in config
        .servers
        .iter()
        .filter(|s| s.role == PeerRole::Participant)
    {
        let election: Vec<String> = server
            .election_port
            .map(|port| format!("{}:{port}", server.host))
            .into_iter()
            .collect();
        let client = server
            .client_port
            .map(|port| {
                format!(
                    "{}:{port}",
                    server.client_host.as_deref().unwrap_or("0.0.0.0")
                )
            })
            .unwrap_or_default();
        view.insert(
            server.id.to_string(),
            json!({
                "server_addresses": [server.peer_address()],
                "election_addresses": election,
                "client_address": client,
                "learner_type": server.role.as_str(),
            }),
        );
    }
    data.insert("current_config".into(), Value::Object(view));
}

fn zab_state(ctx: &AdminContext, data: &mut Map<String, Value>) {
    let config = ctx.shared.config();
    // Standalone, or (as a ZooKeeper member between leaders, which has no server object) not
    // serving: nothing to tell.
    let me = config
        .servers
        .iter()
        .find(|s| s.id == config.server_id)
        .filter(|_| serving(ctx));
    let Some(me) = me else {
        data.insert("voting".into(), json!(false));
        data.insert("zabstate".into(), json!(""));
        return;
    };
    let zxid = ctx.shared.last_zxid();
    // ZooKeeper's election → discovery → synchronization → broadcast: a member that knows a
    // leader and has caught up with it broadcasts; one serving in read-only mode elects.
    let state = if ctx.raft.is_fresh() {
        "broadcast"
    } else {
        "election"
    };
    data.insert("myid".into(), json!(config.server_id));
    data.insert(
        "is_leader".into(),
        json!(ctx.raft.role() == NodeRole::Leader),
    );
    data.insert(
        "quorum_address".into(),
        multiple_addresses(&me.host, me.peer_port),
    );
    data.insert(
        "election_address".into(),
        me.election_port
            .map_or(Value::Null, |port| multiple_addresses(&me.host, port)),
    );
    data.insert(
        "client_address".into(),
        json!(format!("{}:{}", config.client_address, config.client_port)),
    );
    data.insert("voting".into(), json!(me.role == PeerRole::Participant));
    data.insert("last_zxid".into(), json!(format!("0x{zxid:x}")));
    // rookery's zxid is the Raft index, not epoch << 32 | counter; shown split the same way.
    let zxid = u64::try_from(zxid).unwrap_or(0);
    data.insert("zab_epoch".into(), json!(zxid >> 32));
    data.insert("zab_counter".into(), json!(zxid & 0xffff_ffff));
    data.insert("zabstate".into(), json!(state));
}

/// How ZooKeeper's Jackson writes a `MultipleAddresses` (its bean getters) for one address.
fn multiple_addresses(host: &str, port: u16) -> Value {
    let address = format!("{host}:{port}");
    json!({
        "all_addresses": [address],
        "all_host_strings": [host],
        "all_ports": [port],
        "all_reachable_addresses": [address],
        "all_reachable_addresses_or_all": [address],
        "empty": false,
        "one": address,
        "reachable_address": address,
        "reachable_or_one": address,
        "wildcard_addresses": [format!("0.0.0.0:{port}")],
    })
}

fn json_response(value: &Value) -> Response {
    let body = serde_json::to_string_pretty(value).unwrap_or_else(|_| {
        "{\"error\": \"Exception writing command response to JSON\"}".to_string()
    });
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

/// The `admin.commandURL` listing: one link per primary name.
fn listing(url: &str) -> String {
    primary_names()
        .into_iter()
        .map(|name| format!("<a href=\"{url}/{name}\">{name}</a>\n<br/>\n"))
        .collect()
}

/// Serves the AdminServer on `listener` until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    ctx: AdminContext,
    command_url: String,
    shutdown: watch::Receiver<bool>,
) {
    let list_url = command_url.clone();
    let list = move || {
        let body = listing(&list_url);
        async move { body }
    };
    let app = Router::new()
        .route(&command_url, get(list.clone()))
        .route(&format!("{command_url}/"), get(list))
        .route(
            &format!("{command_url}/{{name}}"),
            get(
                |State(ctx): State<AdminContext>, UrlPath(name): UrlPath<String>| async move {
                    json_response(&run(&ctx, &name).await)
                },
            ),
        )
        .with_state(ctx);
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(super::shutdown_signal(shutdown))
        .await
    {
        warn!(%error, "AdminServer stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_belongs_to_one_command() {
        let mut seen = std::collections::BTreeSet::new();
        for command in COMMANDS {
            for name in command.names {
                assert!(seen.insert(*name), "{name} twice");
            }
        }
        assert!(primary_names().windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn responses_carry_command_and_error() {
        let ok = response("ruok", None, Map::new());
        assert_eq!(ok, json!({"command": "ruok", "error": null}));
        let mut data = Map::new();
        data.insert("read_only".into(), json!(false));
        let v = response("is_read_only", None, data);
        assert_eq!(v["read_only"], json!(false));
        assert!(listing("/commands").contains("<a href=\"/commands/monitor\">monitor</a>"));
    }
}
