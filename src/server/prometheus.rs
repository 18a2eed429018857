//! Prometheus metrics at `/metrics` (text format 0.0.4), ZooKeeper's
//! `PrometheusMetricsProvider` endpoint (`metricsProvider.httpPort`, default 7000).
//!
//! Every scrape reads the values afresh: the `mntr` rows ([`super::monitor`]) under
//! ZooKeeper's gauge names (`znode_count`, `num_alive_connections`, `quorum_size`, …), and
//! rookery's own under `rookery_`: the raft thread's lock-free histograms (group-commit batch
//! sizes, fsync latency, snapshot durations and pauses) and, on the leader, each member's
//! replication lag. The HTTP server is a task on the tokio runtime; the raft thread only
//! bumps atomics and never waits for a scrape.

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::histogram::HistogramSnapshot;
use crate::raft::{PeerProgress, RaftHandle};
use crate::server::monitor::{self, Kind, Value};
use crate::server::registry::ConnRegistry;
use crate::state::Shared;

/// Reads the server's values on each scrape.
struct ServerCollector {
    /// Tree, watches, sessions, request stats.
    shared: Arc<Shared>,
    /// Live connections.
    conns: Arc<ConnRegistry>,
    /// Raft state, counters and histograms.
    raft: RaftHandle,
}

impl std::fmt::Debug for ServerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCollector").finish_non_exhaustive()
    }
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    // The encoder accumulates itself: it wants each bucket's own count.
    let mut below = 0;
    let own: Vec<(f64, u64)> = h
        .buckets
        .iter()
        .map(|&(bound, cumulative)| {
            let n = cumulative.saturating_sub(below);
            below = cumulative;
            (bound, n)
        })
        .collect();
    metric.encode_histogram::<NoLabelSet>(h.sum, h.count, &own, None)
}

/// A gauge with one `peer="N"` series per member.
fn per_peer(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    peers: &[PeerProgress],
    value: impl Fn(&PeerProgress) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for peer in peers {
        let labels = [("peer".to_string(), peer.id.to_string())];
        metric
            .encode_family(&labels)?
            .encode_gauge(&i64::try_from(value(peer)).unwrap_or(i64::MAX))?;
    }
    Ok(())
}

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for row in monitor::rows(&self.shared, &self.conns, &self.raft) {
            let metric_type = match row.kind {
                Kind::Gauge => MetricType::Gauge,
                Kind::Counter => MetricType::Counter,
                Kind::MntrOnly => continue,
            };
            let mut metric = encoder.encode_descriptor(row.name, row.help, None, metric_type)?;
            match (row.kind, row.value) {
                (Kind::Counter, Value::Int(v)) => {
                    metric.encode_counter::<NoLabelSet, _, u64>(
                        &u64::try_from(v).unwrap_or(0),
                        None,
                    )?;
                }
                (_, Value::Int(v)) => metric.encode_gauge(&v)?,
                (_, Value::Float(v)) => metric.encode_gauge(&v)?,
                (_, Value::Text(_)) => {}
            }
        }
        let h = self.raft.histograms();
        histogram(
            &mut encoder,
            "rookery_raft_batch_entries",
            "log entries per LMDB write transaction (group-commit batch size)",
            &h.batch_entries,
        )?;
        histogram(
            &mut encoder,
            "rookery_raft_log_commit_seconds",
            "LMDB write transaction commit time (page writes and fdatasync)",
            &h.commit_latency,
        )?;
        histogram(
            &mut encoder,
            "rookery_raft_log_flush_seconds",
            "explicit log flush time (one fdatasync)",
            &h.flush_latency,
        )?;
        histogram(
            &mut encoder,
            "rookery_snapshot_duration_seconds",
            "time from starting a snapshot to its file being durable",
            &h.snapshot_durations,
        )?;
        histogram(
            &mut encoder,
            "rookery_snapshot_pause_seconds",
            "raft-thread pause per snapshot taken",
            &h.snapshot_pauses,
        )?;
        let quorum = self.raft.quorum_status();
        if !quorum.peers.is_empty() {
            per_peer(
                &mut encoder,
                "rookery_raft_peer_lag_entries",
                "leader's last log index minus what the member is known to hold (leader only)",
                &quorum.peers,
                |peer| quorum.last_index.saturating_sub(peer.matched),
            )?;
            per_peer(
                &mut encoder,
                "rookery_raft_peer_matched_index",
                "highest log index the leader knows the member holds (leader only)",
                &quorum.peers,
                |peer| peer.matched,
            )?;
        }
        Ok(())
    }
}

/// The registry a scrape encodes: one collector reading the live server.
pub fn registry(shared: Arc<Shared>, conns: Arc<ConnRegistry>, raft: RaftHandle) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ServerCollector {
        shared,
        conns,
        raft,
    }));
    registry
}

/// The scrape's body, in the Prometheus text format: the registry, then ZooKeeper's two
/// summaries rookery has the data for ([`zookeeper_summaries`]).
pub fn render(registry: &Registry, raft: &RaftHandle) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    zookeeper_summaries(&mut out, raft)?;
    Ok(out)
}

/// ZooKeeper's `fsynctime` and `snapshottime` summaries (ms; ZooKeeper's alerting examples
/// use `rate(fsynctime_sum[1m])` and `rate(snapshottime_sum[5m])`), written by hand because
/// prometheus-client has no summary type. Only `_sum` and `_count`: the raft thread keeps
/// buckets, not a quantile sketch, so a `quantile="0.5"` line would be a guess (the same
/// observations, bucketed, are the `rookery_raft_log_*_seconds` histograms).
fn zookeeper_summaries(out: &mut String, raft: &RaftHandle) -> Result<(), std::fmt::Error> {
    use std::fmt::Write as _;
    let h = raft.histograms();
    // ZooKeeper's fsync of its transaction log: rookery's log commits (each fdatasyncs)
    // plus its explicit flushes.
    let fsync_ms = (h.commit_latency.sum + h.flush_latency.sum) * 1000.0;
    let fsyncs = h.commit_latency.count + h.flush_latency.count;
    let snapshot_ms = h.snapshot_durations.sum * 1000.0;
    for (name, help, sum, count) in [
        (
            "fsynctime",
            "time to fsync the transaction log, in ms",
            fsync_ms,
            fsyncs,
        ),
        (
            "snapshottime",
            "time to write a snapshot, in ms",
            snapshot_ms,
            h.snapshot_durations.count,
        ),
    ] {
        writeln!(out, "# HELP {name} {help}.")?;
        writeln!(out, "# TYPE {name} summary")?;
        writeln!(out, "{name}_sum {sum:?}")?;
        writeln!(out, "{name}_count {count}")?;
    }
    Ok(())
}

/// Serves `/metrics` on `listener` until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    raft: RaftHandle,
    shutdown: watch::Receiver<bool>,
) {
    let registry = Arc::new(registry);
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = Arc::clone(&registry);
            let raft = raft.clone();
            async move {
                match render(&registry, &raft) {
                    Ok(body) => (
                        [(
                            CONTENT_TYPE,
                            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                        )],
                        body,
                    )
                        .into_response(),
                    Err(error) => {
                        warn!(%error, "cannot encode metrics");
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                }
            }
        }),
    );
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(super::shutdown_signal(shutdown))
        .await
    {
        warn!(%error, "metrics endpoint stopped");
    }
}
