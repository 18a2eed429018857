//! The server's monitoring values, read once and shown three ways: the `mntr` four-letter
//! word (`zk_<name>\tvalue` lines), the AdminServer's `monitor` command (JSON) and the
//! Prometheus `/metrics` endpoint. Names follow ZooKeeper's `ZooKeeperServer.registerMetrics`
//! gauges (`znode_count`, `watch_count`, …) wherever rookery has the same quantity, so tools
//! built for ZooKeeper (zookeeper-exporter, ZooKeeper's Grafana dashboard) read them
//! unchanged; rookery's own carry a `rookery_` prefix.
//!
//! Lock discipline: each lock is taken once, values are copied out, and it is released before
//! anything is formatted.

use std::sync::atomic::Ordering;

use crate::config::PeerRole;
use crate::raft::{NodeRole, QuorumStatus, RaftHandle};
use crate::server::admin::{server_state, VERSION};
use crate::server::registry::ConnRegistry;
use crate::state::Shared;

/// A value of one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A whole number.
    Int(i64),
    /// A fraction (average latency).
    Float(f64),
    /// Text (version, server state): shown by `mntr` and `monitor`, not exported to Prometheus.
    Text(String),
}

/// How Prometheus sees a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Goes up and down (ZooKeeper registers all its `mntr` values as gauges).
    Gauge,
    /// Only goes up (exported with the `_total` suffix).
    Counter,
    /// Not exported: text, or a number `/metrics` has in a better form.
    MntrOnly,
}

/// One monitoring value.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The name without `zk_`: ZooKeeper's metric name (`znode_count`), or `rookery_…`.
    pub name: &'static str,
    /// One line of help for Prometheus.
    pub help: &'static str,
    /// Gauge, counter or text.
    pub kind: Kind,
    /// The value.
    pub value: Value,
}

impl Row {
    fn gauge(name: &'static str, help: &'static str, value: impl TryInto<i64>) -> Row {
        Row {
            name,
            help,
            kind: Kind::Gauge,
            value: Value::Int(value.try_into().unwrap_or(i64::MAX)),
        }
    }

    fn counter(name: &'static str, help: &'static str, value: u64) -> Row {
        Row {
            name,
            help,
            kind: Kind::Counter,
            value: Value::Int(i64::try_from(value).unwrap_or(i64::MAX)),
        }
    }

    /// The `mntr` key: ZooKeeper's names get `zk_`, rookery's keep their prefix.
    pub fn mntr_key(&self) -> String {
        if self.name.starts_with("rookery_") {
            self.name.to_string()
        } else {
            format!("zk_{}", self.name)
        }
    }

    /// The value as `mntr` prints it (ZooKeeper prints avg_latency with 4 decimals).
    pub fn mntr_value(&self) -> String {
        match &self.value {
            Value::Int(v) => v.to_string(),
            Value::Float(v) => format!("{v:.4}"),
            Value::Text(v) => v.clone(),
        }
    }

    /// The value as JSON (the AdminServer's `monitor`).
    pub fn json_value(&self) -> serde_json::Value {
        match &self.value {
            Value::Int(v) => serde_json::Value::from(*v),
            Value::Float(v) => serde_json::Value::from(*v),
            Value::Text(v) => serde_json::Value::from(v.clone()),
        }
    }
}

/// Request latency in ms: (min, avg, max), as ZooKeeper's `ServerStats` reports it.
pub fn latency(shared: &Shared) -> (f64, f64, f64) {
    let stats = shared.stats();
    let count = stats.latency_count.load(Ordering::Relaxed);
    let sum = stats.latency_sum_us.load(Ordering::Relaxed);
    let avg = if count == 0 {
        0.0
    } else {
        sum as f64 / count as f64 / 1000.0
    };
    (
        stats.latency_min_us.load(Ordering::Relaxed) as f64 / 1000.0,
        avg,
        stats.latency_max_us.load(Ordering::Relaxed) as f64 / 1000.0,
    )
}

/// Open file descriptors of this process and its limit (ZooKeeper's
/// `open_file_descriptor_count` / `max_file_descriptor_count`, Unix only there too); -1
/// where it cannot be read.
pub fn file_descriptors() -> (i64, i64) {
    let open = std::fs::read_dir("/proc/self/fd")
        .map(|dir| i64::try_from(dir.count()).unwrap_or(i64::MAX))
        .unwrap_or(-1);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and nothing else.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        i64::try_from(limit.rlim_cur).unwrap_or(i64::MAX)
    } else {
        -1
    };
    (open, max)
}

/// One client connection as `cons` and the AdminServer's `connections` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRow {
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// Requests received and not answered yet.
    pub queued: usize,
    /// Packets read from the client.
    pub received: u64,
    /// Packets written to the client.
    pub sent: u64,
    /// Its session, 0 before the handshake.
    pub session_id: i64,
    /// When it was accepted, ms since the epoch.
    pub established_ms: i64,
    /// The session's negotiated timeout, if the session is known.
    pub timeout_ms: Option<i32>,
}

/// Every connection, sorted by address: copied out of the registry's lock, then the session
/// timeouts out of the state's read lock (never both at once).
pub fn connection_rows(shared: &Shared, conns: &ConnRegistry) -> Vec<ConnRow> {
    let mut rows: Vec<ConnRow> = conns
        .lock()
        .by_id
        .values()
        .map(|conn| ConnRow {
            peer: conn.peer,
            queued: conn.outstanding.load(Ordering::Relaxed),
            received: conn.counters.received.load(Ordering::Relaxed),
            sent: conn.counters.sent.load(Ordering::Relaxed),
            session_id: conn.session_id,
            established_ms: conn.counters.established_ms,
            timeout_ms: None,
        })
        .collect();
    {
        let state = shared.state().read();
        for row in &mut rows {
            row.timeout_ms = state.sessions.get(row.session_id).map(|s| s.timeout_ms);
        }
    }
    rows.sort_by_key(|r| r.peer.to_string());
    rows
}

/// Every monitoring value, in `mntr` order.
pub fn rows(shared: &Shared, conns: &ConnRegistry, raft: &RaftHandle) -> Vec<Row> {
    let raft_stats = raft.stats();
    let (min, avg, max) = latency(shared);
    let stats = shared.stats();
    let (node_count, data_size, ephemerals) = {
        let state = shared.state().read();
        let ephemerals: usize = state
            .tree
            .session_ids_with_ephemerals()
            .into_iter()
            .map(|id| state.tree.ephemerals_of(id).len())
            .sum();
        (
            state.tree.node_count(),
            state.tree.approximate_data_size(),
            ephemerals,
        )
    };
    let watch_count = shared.watches().lock().summary().total_watches;
    let connections = conns.lock().by_id.len();
    let (open_fds, max_fds) = file_descriptors();
    let mut rows = vec![
        Row {
            name: "version",
            help: "server version",
            kind: Kind::MntrOnly,
            value: Value::Text(VERSION.to_string()),
        },
        Row {
            name: "server_state",
            help: "standalone, leader, follower, observer or read-only",
            kind: Kind::MntrOnly,
            value: Value::Text(server_state(shared, conns, raft).to_string()),
        },
        Row {
            name: "avg_latency",
            help: "average request latency in ms",
            kind: Kind::Gauge,
            value: Value::Float(avg),
        },
        Row::gauge(
            "max_latency",
            "largest request latency in ms",
            max.round() as i64,
        ),
        Row::gauge(
            "min_latency",
            "smallest request latency in ms",
            min.round() as i64,
        ),
        Row::gauge(
            "packets_received",
            "client packets received",
            stats.packets_received.load(Ordering::Relaxed),
        ),
        Row::gauge(
            "packets_sent",
            "client packets sent",
            stats.packets_sent.load(Ordering::Relaxed),
        ),
        Row::gauge(
            "num_alive_connections",
            "open client connections",
            connections,
        ),
        Row::gauge(
            "outstanding_requests",
            "client requests received and not yet answered",
            stats.outstanding.load(Ordering::Relaxed),
        ),
        Row::gauge("znode_count", "znodes in the tree", node_count),
        Row::gauge("watch_count", "data watches set", watch_count),
        Row::gauge("ephemerals_count", "ephemeral znodes", ephemerals),
        Row::gauge(
            "approximate_data_size",
            "bytes of znode data and paths",
            data_size,
        ),
        Row::gauge(
            "open_file_descriptor_count",
            "open file descriptors",
            open_fds,
        ),
        Row::gauge(
            "max_file_descriptor_count",
            "file descriptor limit",
            max_fds,
        ),
        Row::gauge(
            "global_sessions",
            "sessions known to the ensemble",
            shared.tracker().len(),
        ),
        // Local sessions exist only in read-only mode (ZooKeeper's local session tracker).
        Row::gauge(
            "local_sessions",
            "read-only mode's local sessions",
            conns.local_session_count(),
        ),
        Row::gauge(
            "last_zxid",
            "zxid of the newest applied transaction",
            shared.last_zxid(),
        ),
        Row::gauge(
            "uptime",
            "ms since the server started",
            shared.uptime().as_millis(),
        ),
        Row::counter(
            "rookery_raft_write_txns",
            "LMDB write transactions committed (one fdatasync each)",
            raft_stats.write_txns,
        ),
        Row::counter(
            "rookery_raft_syncs",
            "explicit log flushes",
            raft_stats.syncs,
        ),
        Row::counter(
            "rookery_raft_entries",
            "Raft log entries written",
            raft_stats.entries_appended,
        ),
        Row::counter(
            "rookery_raft_snapshots",
            "snapshots written",
            raft_stats.snapshots_taken,
        ),
        Row::counter(
            "rookery_raft_applied_ahead",
            "entries applied before this member's own copy was durable",
            raft_stats.applied_ahead,
        ),
        Row::gauge(
            "rookery_raft_applied_index",
            "highest log index applied",
            raft.applied_index(),
        ),
        // 1 while writes are refused for lack of disk space (retried until space is freed).
        Row::gauge(
            "rookery_storage_full",
            "1 while writes are refused for lack of disk space",
            u8::from(raft.storage_full()),
        ),
        Row::counter(
            "rookery_snapshot_failures",
            "snapshot writes that failed",
            raft_stats.snapshot_failures,
        ),
        Row::counter(
            "rookery_snapshots_installed",
            "snapshots received from a leader and installed",
            raft_stats.snapshots_installed,
        ),
        // `/metrics` has every pause, as the rookery_snapshot_pause_seconds histogram.
        Row {
            kind: Kind::MntrOnly,
            ..Row::gauge(
                "rookery_snapshot_pause_us",
                "raft-thread pause of the newest snapshot, in microseconds",
                raft_stats.snapshot_pause_us,
            )
        },
    ];
    if shared.config().is_ensemble() {
        ensemble_rows(shared, raft, &mut rows);
    }
    rows.extend([
        Row::gauge("rookery_raft_term", "current Raft term", raft.term()),
        Row::gauge(
            "rookery_raft_leader_id",
            "server id of the known leader (0: none)",
            raft.leader_id(),
        ),
        Row::gauge(
            "rookery_raft_commit_index",
            "highest log index known committed",
            raft.commit_index(),
        ),
    ]);
    rows
}

/// The ensemble rows: `quorum_size` (the number of voting members) everywhere; on the leader
/// only (as ZooKeeper, whose `LeaderZooKeeperServer` alone registers them) the learner counts
/// from Raft progress, pending syncs, leader uptime and proposal sizes. "Synced" is defined in
/// [`crate::raft::QuorumStatus`] (Replicate state and heard from within an election timeout).
fn ensemble_rows(shared: &Shared, raft: &RaftHandle, rows: &mut Vec<Row>) {
    let config = shared.config();
    let participants = config
        .servers
        .iter()
        .filter(|s| s.role == PeerRole::Participant)
        .count();
    // ZooKeeper's `QuorumPeer.getQuorumSize()` is the size of the voting view (3 for three
    // participants, observers not counted), not the majority needed.
    rows.push(Row::gauge(
        "quorum_size",
        "voting members of the ensemble",
        participants,
    ));
    if raft.role() == NodeRole::Leader {
        let quorum = raft.quorum_status();
        let counts = LeaderCounts::of(&quorum, |id| {
            config
                .servers
                .iter()
                .any(|s| s.id == id && s.role == PeerRole::Observer)
        });
        rows.extend([
            Row::gauge(
                "learners",
                "members connected to the leader",
                counts.learners,
            ),
            Row::gauge(
                "synced_followers",
                "voting members in sync with the leader",
                counts.followers,
            ),
            Row::gauge(
                "synced_non_voting_followers",
                "non-voting participants in sync",
                counts.non_voting,
            ),
            Row::gauge(
                "synced_observers",
                "observers in sync with the leader",
                counts.observers,
            ),
            Row::gauge(
                "pending_syncs",
                "ReadIndex requests not yet confirmed",
                quorum.pending_reads,
            ),
            Row::gauge(
                "leader_uptime",
                "ms since this leader started serving",
                leader_uptime_ms(&quorum),
            ),
            Row::gauge(
                "last_proposal_size",
                "bytes of the newest proposal",
                quorum.proposals.last,
            ),
            Row::gauge(
                "max_proposal_size",
                "bytes of the largest proposal",
                quorum.proposals.max,
            ),
            Row::gauge(
                "min_proposal_size",
                "bytes of the smallest proposal",
                quorum.proposals.min,
            ),
        ]);
    }
}

/// ms since this leader started serving, 0 before (ZooKeeper's `Leader.getUptime`).
pub fn leader_uptime_ms(quorum: &QuorumStatus) -> u128 {
    quorum
        .serving_since
        .map(|since| since.elapsed().as_millis())
        .unwrap_or(0)
}

/// The leader's learner counts, ZooKeeper's way: `learners` = members connected to the leader
/// (its LearnerHandlers, synced or not), then the synced ones split into voting followers,
/// non-voting followers (Raft learners that zoo.cfg lists as participants: being caught up
/// before a promotion) and observers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LeaderCounts {
    /// Members heard from (synced or not).
    pub learners: usize,
    /// Synced voters.
    pub followers: usize,
    /// Synced Raft learners that zoo.cfg lists as participants.
    pub non_voting: usize,
    /// Synced observers.
    pub observers: usize,
}

impl LeaderCounts {
    /// Counts `quorum`'s members; `is_observer` says which ids zoo.cfg lists as observers.
    pub fn of(quorum: &QuorumStatus, is_observer: impl Fn(u64) -> bool) -> LeaderCounts {
        let mut counts = LeaderCounts::default();
        for peer in &quorum.peers {
            counts.learners += usize::from(peer.active);
            if !peer.synced {
                continue;
            }
            if peer.voter {
                counts.followers += 1;
            } else if is_observer(peer.id) {
                counts.observers += 1;
            } else {
                counts.non_voting += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::PeerProgress;

    fn peer(id: u64, voter: bool, active: bool, synced: bool) -> PeerProgress {
        PeerProgress {
            id,
            voter,
            active,
            synced,
            matched: 0,
        }
    }

    #[test]
    fn leader_counts_split_synced_members_by_role() {
        let mut quorum = QuorumStatus::default();
        quorum.peers = vec![
            peer(2, true, true, true),
            peer(3, true, true, false), // connected, still probing: a learner, not synced
            peer(4, true, false, false), // gone
            peer(5, false, true, true), // observer
            peer(6, false, true, true), // participant being caught up as a Raft learner
        ];
        let counts = LeaderCounts::of(&quorum, |id| id == 5);
        assert_eq!(
            counts,
            LeaderCounts {
                learners: 4,
                followers: 1,
                non_voting: 1,
                observers: 1,
            }
        );
        assert_eq!(leader_uptime_ms(&quorum), 0);
    }

    #[test]
    fn mntr_keys_and_values_follow_zookeeper() {
        let zk = Row::gauge("znode_count", "", 5u64);
        assert_eq!(zk.mntr_key(), "zk_znode_count");
        assert_eq!(zk.mntr_value(), "5");
        let own = Row::counter("rookery_raft_syncs", "", 7);
        assert_eq!(own.mntr_key(), "rookery_raft_syncs");
        let avg = Row {
            name: "avg_latency",
            help: "",
            kind: Kind::Gauge,
            value: Value::Float(0.5),
        };
        assert_eq!(avg.mntr_value(), "0.5000");
        assert_eq!(avg.json_value(), serde_json::json!(0.5));
    }

    #[test]
    fn file_descriptors_are_counted() {
        let (open, max) = file_descriptors();
        assert!(open > 0, "{open}");
        assert!(max >= open, "{max} < {open}");
    }
}
