//! Four-letter words: plain-text admin commands, gated by `4lw.commands.whitelist`; and the
//! local control socket (`dataDir/admin.sock`, mode 0600) that `rookery admin` talks to:
//! one line in (`transfer-leader [N]`), one line out (`ok ...` or `error: ...`). It is a Unix
//! socket, not a four-letter word, so that only the server's own user can move leadership.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rookery_protocol::FourLetterWord;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::raft::{NodeRole, RaftHandle, TransferError};
use crate::server::monitor;
use crate::server::registry::ConnRegistry;
use crate::state::Shared;

/// The version string clients and tools parse; ZooKeeper-shaped so they recognise it.
pub const VERSION: &str = concat!("3.8.4-rookery-", env!("CARGO_PKG_VERSION"));

/// ZooKeeper's answer (`ZK_NOT_SERVING`) while a server has no fresh leader contact.
pub const NOT_SERVING: &str = "This ZooKeeper instance is not currently serving requests";

/// `Mode:` / `zk_server_state`: `standalone`, else this member's role in the ensemble
/// (`leader`, `follower`, `observer`; a candidate is not serving and never reaches here).
/// `read-only` while in read-only mode (ZooKeeper's `ReadOnlyZooKeeperServer.getState`).
pub fn server_state(shared: &Shared, conns: &ConnRegistry, raft: &RaftHandle) -> &'static str {
    if !shared.config().is_ensemble() {
        return "standalone";
    }
    if conns.is_read_only() && !raft.is_fresh() {
        return "read-only";
    }
    match raft.role() {
        NodeRole::Leader => "leader",
        NodeRole::Learner => "observer",
        NodeRole::Follower | NodeRole::Candidate => "follower",
    }
}

/// The text a four-letter word answers. Lock discipline: copy what is needed out of a lock,
/// release it, then format, so a big answer never holds up the apply thread; blocking I/O
/// (`dirs`) runs on the blocking pool, not on a tokio worker.
pub async fn four_letter_word(
    shared: &Arc<Shared>,
    conns: &ConnRegistry,
    raft: &RaftHandle,
    word: FourLetterWord,
) -> String {
    if !shared.config().four_letter_allowed(word.as_str()) {
        return format!("{word} is not executed because it is not in the whitelist.\n");
    }
    let fresh = !shared.config().is_ensemble() || raft.is_fresh();
    let read_only = !fresh && conns.is_read_only();
    let serving = fresh || read_only;
    match word {
        FourLetterWord::Ruok => "imok".to_string(),
        FourLetterWord::Srvr | FourLetterWord::Stat | FourLetterWord::Mntr if !serving => {
            format!("{NOT_SERVING}\n")
        }
        FourLetterWord::Srvr => server_summary(shared, conns, raft, false),
        FourLetterWord::Stat => server_summary(shared, conns, raft, true),
        FourLetterWord::Mntr => monitor(shared, conns, raft),
        FourLetterWord::Conf => configuration(shared),
        FourLetterWord::Cons => connections(shared, conns),
        FourLetterWord::Envi => environment(shared),
        FourLetterWord::Wchs => {
            let summary = shared.watches().lock().summary();
            format!(
                "{} connections watching {} paths\nTotal watches:{}\n",
                summary.connections, summary.paths, summary.total_watches
            )
        }
        FourLetterWord::Wchc => {
            // Copied out first: watches → conns would nest two locks for the whole loop.
            let by_watcher = shared.watches().lock().by_watcher();
            let mut out = String::new();
            for (watcher, paths) in by_watcher {
                let session = session_of(conns, watcher);
                let _ = writeln!(out, "{session:#x}");
                for path in paths {
                    let _ = writeln!(out, "\t{path}");
                }
            }
            out
        }
        FourLetterWord::Wchp => {
            let by_path = shared.watches().lock().by_path();
            let mut out = String::new();
            for (path, watchers) in by_path {
                let _ = writeln!(out, "{path}");
                for watcher in watchers {
                    let _ = writeln!(out, "\t{:#x}", session_of(conns, watcher));
                }
            }
            out
        }
        FourLetterWord::Dirs => {
            let dir = shared.config().data_dir.clone();
            let size = tokio::task::spawn_blocking(move || dir_size(&dir))
                .await
                .unwrap_or(0);
            format!("datadir_size: {size}\nlogdir_size: {size}\n")
        }
        // ZooKeeper's IsroCommand: "null" while no server runs (not serving here), "ro" for
        // a ReadOnlyZooKeeperServer. Kazoo's read-only clients poll it to find a rw server.
        FourLetterWord::Isro if read_only => "ro".to_string(),
        FourLetterWord::Isro if !fresh => "null".to_string(),
        FourLetterWord::Isro => "rw".to_string(),
        FourLetterWord::Dump => dump(shared),
        FourLetterWord::Srst => {
            shared.stats().reset();
            "Server stats reset.\n".to_string()
        }
        // ZooKeeper's crst resets per-connection counters. Rookery keeps none (the server-wide
        // ones are srst's), so there is nothing to reset; it must not clear the server's.
        FourLetterWord::Crst => "Connection stats reset.\n".to_string(),
        FourLetterWord::Gtmk | FourLetterWord::Stmk => "0\n".to_string(),
        FourLetterWord::Hash => "No digest history.\n".to_string(),
    }
}

fn session_of(conns: &ConnRegistry, conn_id: u64) -> i64 {
    conns
        .lock()
        .by_id
        .get(&conn_id)
        .map(|c| c.session_id)
        .unwrap_or(0)
}

fn server_summary(
    shared: &Shared,
    conns: &ConnRegistry,
    raft: &RaftHandle,
    with_clients: bool,
) -> String {
    let mut out = format!("Zookeeper version: {VERSION}, built by rookery\n");
    if with_clients {
        out.push_str("Clients:\n");
        out.push_str(&connections(shared, conns));
        out.push('\n');
    }
    let (min, avg, max) = monitor::latency(shared);
    let stats = shared.stats();
    let node_count = shared.state().read().tree.node_count();
    let connections = conns.lock().by_id.len();
    let _ = write!(
        out,
        "Latency min/avg/max: {min:.0}/{avg:.4}/{max:.0}\nReceived: {}\nSent: {}\nConnections: {}\n\
         Outstanding: {}\nZxid: {:#x}\nMode: {}\nNode count: {}\n",
        stats.packets_received.load(Ordering::Relaxed),
        stats.packets_sent.load(Ordering::Relaxed),
        connections,
        // Unclamped: a negative value is an accounting bug and must show.
        stats.outstanding.load(Ordering::Relaxed),
        shared.last_zxid(),
        server_state(shared, conns, raft),
        node_count,
    );
    // ZooKeeper's StatCommand adds this line on the leader only.
    if shared.config().is_ensemble() && raft.role() == NodeRole::Leader {
        let sizes = raft.quorum_status().proposals;
        let _ = writeln!(
            out,
            "Proposal sizes last/min/max: {}/{}/{}",
            sizes.last, sizes.min, sizes.max
        );
    }
    out
}

fn monitor(shared: &Shared, conns: &ConnRegistry, raft: &RaftHandle) -> String {
    monitor::rows(shared, conns, raft)
        .into_iter()
        .map(|row| format!("{}\t{}\n", row.mntr_key(), row.mntr_value()))
        .collect()
}

fn configuration(shared: &Shared) -> String {
    let config = shared.config();
    format!(
        "clientPort={}\nclientPortAddress={}\ndataDir={}\ndataLogDir={}\ntickTime={}\n\
         maxClientCnxns={}\nminSessionTimeout={}\nmaxSessionTimeout={}\nserverId={}\n\
         jute.maxbuffer={}\nextendedTypesEnabled={}\nsnapCount={}\n\
         znode.container.checkIntervalMs={}\n4lw.commands.whitelist={}\n",
        config.client_port,
        config.client_address,
        config.data_dir.display(),
        config.data_dir.display(),
        config.tick_time.as_millis(),
        config.max_client_cnxns,
        config.min_session_timeout.as_millis(),
        config.max_session_timeout.as_millis(),
        config.server_id,
        config.jute_maxbuffer,
        config.ttl_enabled,
        config.snap_count,
        config.container_check_interval.as_millis(),
        config.four_letter_whitelist.join(","),
    ) + &server_lines(shared)
}

/// The `server.N` lines of an ensemble, as ZooKeeper's `conf` shows them: the current
/// membership (`/zookeeper/config`, which a reconfig rewrites) and its `version=` line; zoo.cfg's
/// list when that node is empty.
fn server_lines(shared: &Shared) -> String {
    let current = shared.state().read().tree.config_data();
    if !current.is_empty() {
        let mut text = String::from_utf8_lossy(&current).into_owned();
        text.push('\n');
        return text;
    }
    let mut out = String::new();
    for server in &shared.config().servers {
        out.push_str(&server.zk_line());
        out.push('\n');
    }
    out
}

fn connections(shared: &Shared, conns: &ConnRegistry) -> String {
    // ZooKeeper's field order (`ServerCnxn.dumpConnectionInfo`), with the fields rookery keeps.
    let mut out = String::new();
    for row in monitor::connection_rows(shared, conns) {
        let _ = write!(
            out,
            " /{}[1](queued={},recved={},sent={}",
            row.peer, row.queued, row.received, row.sent
        );
        // As ZooKeeper, the session's fields only once it has one.
        if row.session_id != 0 {
            let _ = write!(out, ",sid={:#x},est={}", row.session_id, row.established_ms);
            if let Some(to) = row.timeout_ms {
                let _ = write!(out, ",to={to}");
            }
        }
        out.push_str(")\n");
    }
    out
}

fn environment(shared: &Shared) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    format!(
        "Environment:\nzookeeper.version={VERSION}\nhost.name={host}\nos.name={}\nos.arch={}\n\
         user.dir={cwd}\nrookery.data.dir={}\n",
        std::env::consts::OS,
        std::env::consts::ARCH,
        shared.config().data_dir.display(),
    )
}

fn dump(shared: &Shared) -> String {
    // Copy out under the read lock, format after: formatting every session under it would
    // hold up the apply thread.
    let (sessions, ephemerals) = {
        let state = shared.state().read();
        let sessions: Vec<(i64, i32)> = state
            .sessions
            .iter()
            .map(|(id, info)| (*id, info.timeout_ms))
            .collect();
        let ephemerals: Vec<(i64, Vec<String>)> = state
            .tree
            .session_ids_with_ephemerals()
            .into_iter()
            .map(|session| (session, state.tree.ephemerals_of(session)))
            .collect();
        (sessions, ephemerals)
    };
    let mut out = format!(
        "SessionTracker dump:\nGlobal Sessions({}):\n",
        sessions.len()
    );
    for (id, timeout_ms) in sessions {
        let _ = writeln!(out, "{id:#x}\t{timeout_ms}ms");
    }
    out.push_str("ephemeral nodes dump:\n");
    for (session, paths) in ephemerals {
        let _ = writeln!(out, "Sessions with Ephemerals ({session:#x}):");
        for path in paths {
            let _ = writeln!(out, "\t{path}");
        }
    }
    out
}

/// Bytes of the files under `dir` (blocking: run it on the blocking pool).
pub(crate) fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// File name of the control socket in the data dir.
pub const CONTROL_SOCKET: &str = "admin.sock";
/// Longest command line accepted on the control socket.
const CONTROL_LINE_MAX: u64 = 256;
/// How long a control client may take to send its line.
const CONTROL_READ_LIMIT: Duration = Duration::from_secs(5);

/// Why leadership did not move ([`hand_off_leadership`]).
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// Raft refused to start the transfer.
    #[error("{0}")]
    Refused(#[from] TransferError),
    /// The raft thread did not take the request in time (it is stalled, e.g. on a full disk).
    #[error("raft did not answer the transfer request in time")]
    Unanswered,
    /// The transfer started but the target did not take over in time (raft-rs abandons it
    /// after an election timeout: the target may be too far behind, or unreachable).
    #[error("server {target} did not take over within {waited_ms} ms")]
    TimedOut {
        /// The server leadership was offered to.
        target: u64,
        /// How long it was waited for.
        waited_ms: u64,
    },
}

/// Where leadership went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handoff {
    /// The new leader.
    pub leader: u64,
    /// Its term.
    pub term: u64,
    /// The term before the transfer.
    pub old_term: u64,
    /// How long the move took.
    pub elapsed: Duration,
}

/// Moves leadership to `to` (or, on the leader, to the most caught-up active voter) and
/// waits, at most `limit`, until this node sees the target lead in a later term.
pub async fn hand_off_leadership(
    raft: &RaftHandle,
    to: Option<u64>,
    limit: Duration,
) -> Result<Handoff, HandoffError> {
    let started = Instant::now();
    let old_term = raft.term();
    // Bounded too: a raft thread stalled on a full disk defers commands until it recovers.
    let target = match tokio::time::timeout(limit, raft.transfer_leader(to)).await {
        Ok(answer) => answer.unwrap_or(Err(TransferError::Stopped))?,
        Err(_) => return Err(HandoffError::Unanswered),
    };
    // Bounded by `limit`; polls the lock-free status the raft thread publishes.
    while started.elapsed() < limit {
        let term = raft.term();
        if raft.leader_id() == target && term > old_term {
            return Ok(Handoff {
                leader: target,
                term,
                old_term,
                elapsed: started.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(HandoffError::TimedOut {
        target,
        waited_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
    })
}

/// Binds the control socket at `path`, replacing a stale one (the data dir is locked by this
/// process, so a socket file left there belongs to a dead predecessor), owner-only.
pub fn bind_control(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the control socket until shutdown, then removes it.
pub async fn serve_control(
    listener: UnixListener,
    path: PathBuf,
    raft: RaftHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let raft = raft.clone();
                    tasks.spawn(async move { control_session(stream, raft).await });
                }
                Err(error) => {
                    warn!(%error, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks.abort_all();
    let _ = std::fs::remove_file(&path);
}

/// One control command: read a line, run it, answer a line.
async fn control_session(stream: UnixStream, raft: RaftHandle) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(CONTROL_LINE_MAX));
    let answer = match tokio::time::timeout(CONTROL_READ_LIMIT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => control_command(line.trim(), &raft).await,
        Ok(Err(error)) => format!("error: {error}"),
        Err(_) => "error: no command within 5 s".to_string(),
    };
    let _ = tokio::time::timeout(
        CONTROL_READ_LIMIT,
        write.write_all(format!("{answer}\n").as_bytes()),
    )
    .await;
}

/// Runs one control command line and returns its answer.
pub async fn control_command(line: &str, raft: &RaftHandle) -> String {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("transfer-leader"), to, None) => {
            let to = match to.map(str::parse::<u64>) {
                None => None,
                Some(Ok(id)) if id > 0 => Some(id),
                Some(_) => return "error: the target must be a server id".to_string(),
            };
            // raft-rs gives up after an election timeout; a little more covers the last
            // messages in flight.
            let limit = raft.election_timeout().saturating_mul(2);
            match hand_off_leadership(raft, to, limit).await {
                Ok(h) => {
                    info!(
                        leader = h.leader,
                        term = h.term,
                        "leadership transferred on request"
                    );
                    format!(
                        "ok leader={} term={} previous_term={} elapsed_ms={}",
                        h.leader,
                        h.term,
                        h.old_term,
                        h.elapsed.as_millis()
                    )
                }
                Err(error) => format!("error: {error}"),
            }
        }
        (Some("leader"), None, None) => {
            format!("ok leader={} term={}", raft.leader_id(), raft.term())
        }
        _ => "error: unknown command (expected `transfer-leader [N]` or `leader`)".to_string(),
    }
}
