//! Accepts client connections, enforces the per-IP and global limits, runs the leader's housekeeping and
//! shuts everything down in order on request.
//!
//! Standalone (no or one `server.N`): a sole Raft voter, and the client port is bound only once
//! it leads and has replayed its log. Ensemble: the peer network and a Raft group of the
//! participants (voters) and observers (learners) start, the client port is bound at once, and
//! [`RaftHandle::is_fresh`] gates clients: handshakes are refused while it is false, and every
//! client connection is closed once it has been false for longer than the election timeout.
//! A task forwards local clients' session touches to the leader every tickTime/2.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rookery_protocol::{Request, SyncRequest};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::{effective_cluster_id, Config, PeerRole};
use crate::peer::{PeerConfig, PeerNetwork, RaftInbound};
use crate::raft::{GroupOptions, RaftError, RaftHandle, RaftOptions};
use crate::server::connection::{ClientSocket, Connection};
use crate::server::registry::{ConnRegistry, ServerSink};
use crate::server::tls::{PeerTls, TlsAcceptor, TlsError};
use crate::server::{admin, admin_http, prometheus};
use crate::state::{Applier, ReplySink, Shared};
use crate::txn::{now_ms, Origin, Txn, TxnBody};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The client port could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why (in use, permission).
        source: std::io::Error,
    },
    /// The TLS port's configuration or files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Another process holds the data directory's lock.
    #[error("data directory {path} is in use by another rookery process")]
    DataDirLocked {
        /// The directory.
        path: std::path::PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock data directory {path}: {source}")]
    Lock {
        /// The lock file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Raft failed to start or stopped.
    #[error("raft: {0}")]
    Raft(#[from] RaftError),
    /// The ensemble configuration could not be used (cluster id, peer port).
    #[error("ensemble: {0}")]
    Ensemble(String),
    /// The one-voter group did not become leader in time.
    #[error("raft did not elect this server leader and replay its log within {0:?}")]
    NoLeader(Duration),
    /// The raft thread stopped for good (a storage fault or a panic): the process must exit.
    #[error("{0}")]
    Fatal(String),
}

/// A running server: what `run` needs to stop it.
pub struct Server {
    /// The state machine's shared state.
    pub shared: Arc<Shared>,
    /// This server's live connections, which the reply sink routes to.
    pub conns: Arc<ConnRegistry>,
    /// Where writes and housekeeping entries are proposed.
    pub raft: RaftHandle,
    /// The peer network of an ensemble (None when standalone); shut down on stop.
    peer_net: Option<Arc<PeerNetwork>>,
    /// Joined at shutdown, after Raft is told to stop.
    raft_thread: Option<std::thread::JoinHandle<()>>,
    /// The plain client port (None: TLS only, `secureClientPort` without `clientPort`).
    listener: Option<TcpListener>,
    /// The TLS client port (`secureClientPort`) and its certificates.
    secure: Option<(TcpListener, Arc<TlsAcceptor>)>,
    /// The Prometheus `/metrics` port, when configured.
    metrics_listener: Option<TcpListener>,
    /// The AdminServer's port, when enabled.
    admin_listener: Option<TcpListener>,
    /// Flipped to true to make every task stop.
    shutdown_tx: watch::Sender<bool>,
    /// Held for the life of the server: two processes on one data directory would both act
    /// as the only Raft voter and corrupt each other's log.
    _data_dir_lock: std::fs::File,
}

/// Counts open connections per client IP (maxClientCnxns) and in total (maxCnxns).
#[derive(Debug, Default)]
struct PerIp {
    /// Open connections by client address.
    counts: Mutex<HashMap<IpAddr, usize>>,
    /// Open connections in all.
    total: AtomicUsize,
}

/// Decrements the counts when a connection task ends, however it ends.
struct PerIpGuard {
    /// The counts to decrement.
    per_ip: Arc<PerIp>,
    /// The client's address.
    ip: IpAddr,
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        self.per_ip.total.fetch_sub(1, Ordering::Relaxed);
        let mut counts = self.per_ip.counts.lock();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl Server {
    /// Opens the log, restores state and binds the client port. Blocking work (LMDB, snapshot
    /// restore) runs off the async workers.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        // Durably: on a first start the data directory's own entry must survive a power
        // failure, or every write acknowledged since goes with it.
        crate::storage::create_dir_durable(&config.data_dir).map_err(|source| {
            ServerError::DataDir {
                path: config.data_dir.clone(),
                source,
            }
        })?;
        let lock_path = config.data_dir.join("rookery.lock");
        let data_dir_lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| ServerError::Lock {
                path: lock_path.clone(),
                source,
            })?;
        match data_dir_lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(ServerError::DataDirLocked {
                    path: config.data_dir.clone(),
                })
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(ServerError::Lock {
                    path: lock_path,
                    source,
                })
            }
        }
        // Certificates first: a bad file is a start-up error before any state is opened.
        let tls = match config.secure_client_port {
            Some(_) => {
                let settings = config.client_tls.clone();
                let acceptor = tokio::task::spawn_blocking(move || TlsAcceptor::load(settings))
                    .await
                    .map_err(|e| TlsError::Rustls(format!("loading certificates: {e}")))??;
                Some(Arc::new(acceptor))
            }
            None => None,
        };
        let shared = Shared::new(config.clone());
        let conns = Arc::new(ConnRegistry::default());
        let sink = ServerSink::new(config.server_id, Arc::clone(&conns));
        let (raft, raft_thread, peer_net) = if config.is_ensemble() {
            let (raft, thread, net) =
                start_ensemble(&config, Arc::clone(&shared), Box::new(sink)).await?;
            (raft, thread, Some(net))
        } else {
            let (raft, thread) =
                start_standalone(&config, Arc::clone(&shared), Box::new(sink)).await?;
            (raft, thread, None)
        };
        let mut addresses = Vec::new();
        if config.plain_port_enabled {
            addresses.push(SocketAddr::new(config.client_address, config.client_port));
        }
        if let Some(port) = config.secure_client_port {
            let host = config
                .secure_client_address
                .unwrap_or(config.client_address);
            addresses.push(SocketAddr::new(host, port));
        }
        let mut bound = Vec::new();
        for address in addresses {
            match TcpListener::bind(address).await {
                Ok(listener) => bound.push(listener),
                Err(source) => {
                    raft.shutdown();
                    return Err(ServerError::Bind { address, source });
                }
            }
        }
        let mut bound = bound.into_iter();
        let listener = if config.plain_port_enabled {
            bound.next()
        } else {
            None
        };
        let secure = bound.next().zip(tls);
        // Bound before serving, so a taken port stops start-up as ZooKeeper's provider and
        // AdminServer do, instead of running without the endpoint.
        let mut http = Vec::new();
        for address in [config.metrics, config.admin_server] {
            http.push(match address {
                None => None,
                Some(address) => match TcpListener::bind(address).await {
                    Ok(listener) => Some(listener),
                    Err(source) => {
                        raft.shutdown();
                        return Err(ServerError::Bind { address, source });
                    }
                },
            });
        }
        let admin_listener = http.pop().flatten();
        let metrics_listener = http.pop().flatten();
        let (shutdown_tx, _) = watch::channel(false);
        Ok(Server {
            shared,
            conns,
            raft,
            peer_net,
            raft_thread: Some(raft_thread),
            listener,
            secure,
            metrics_listener,
            admin_listener,
            shutdown_tx,
            _data_dir_lock: data_dir_lock,
        })
    }

    /// The bound plain client address (None when only TLS is served).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref()?.local_addr().ok()
    }

    /// The bound TLS client address, if `secureClientPort` is configured.
    pub fn secure_addr(&self) -> Option<SocketAddr> {
        self.secure.as_ref()?.0.local_addr().ok()
    }

    /// The bound `/metrics` address, if metrics are on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref()?.local_addr().ok()
    }

    /// The bound AdminServer address, if it is enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener.as_ref()?.local_addr().ok()
    }

    /// Starts the HTTP endpoints (Prometheus `/metrics`, the AdminServer) as tokio tasks.
    fn spawn_http(&mut self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some(listener) = self.metrics_listener.take() {
            info!(address = ?listener.local_addr().ok(), "serving Prometheus metrics at /metrics");
            let registry = prometheus::registry(
                Arc::clone(&self.shared),
                Arc::clone(&self.conns),
                self.raft.clone(),
            );
            tasks.push(tokio::spawn(prometheus::serve(
                listener,
                registry,
                self.raft.clone(),
                self.shutdown_tx.subscribe(),
            )));
        }
        if let Some(listener) = self.admin_listener.take() {
            let url = self.shared.config().admin_command_url.clone();
            info!(address = ?listener.local_addr().ok(), command_url = %url, "AdminServer started");
            let ctx = admin_http::AdminContext {
                shared: Arc::clone(&self.shared),
                conns: Arc::clone(&self.conns),
                raft: self.raft.clone(),
            };
            tasks.push(tokio::spawn(admin_http::serve(
                listener,
                ctx,
                url,
                self.shutdown_tx.subscribe(),
            )));
        }
        tasks
    }

    /// Serves until `stop` resolves, then closes connections and stops Raft. If the raft thread
    /// stops for good meanwhile (storage fault, panic), it closes connections the same way and
    /// returns [`ServerError::Fatal`]: the process must then exit non-zero (fail-stop).
    pub async fn run(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let per_ip = Arc::new(PerIp::default());
        let http = self.spawn_http();
        let housekeeping = tokio::spawn(housekeeping(
            Arc::clone(&self.shared),
            self.raft.clone(),
            self.shutdown_tx.subscribe(),
        ));
        let duties = self.peer_net.as_ref().map(|net| {
            tokio::spawn(ensemble_duties(
                Arc::clone(&self.shared),
                Arc::clone(&self.conns),
                self.raft.clone(),
                Arc::clone(net),
                self.shutdown_tx.subscribe(),
            ))
        });
        let control = self.peer_net.as_ref().and_then(|_| {
            let path = self.shared.config().data_dir.join(admin::CONTROL_SOCKET);
            match admin::bind_control(&path) {
                Ok(listener) => Some(tokio::spawn(admin::serve_control(
                    listener,
                    path,
                    self.raft.clone(),
                    self.shutdown_tx.subscribe(),
                ))),
                Err(error) => {
                    // Not fatal: the server serves; only `rookery admin` cannot reach it.
                    warn!(%error, path = %path.display(), "cannot bind the control socket");
                    None
                }
            }
        });
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(stop);
        let raft = self.raft.clone();
        let fatal_error = async move { raft.fatal_error().await };
        tokio::pin!(fatal_error);
        let mut fatal = None;
        let reloader = self.secure.as_ref().map(|(_, tls)| {
            tokio::spawn(Arc::clone(tls).watch_files(self.shutdown_tx.subscribe()))
        });
        info!(address = ?self.local_addr(), secure_address = ?self.secure_addr(), "serving clients");
        loop {
            tokio::select! {
                _ = &mut stop => break,
                reason = &mut fatal_error => {
                    error!(%reason, "raft stopped for good; closing client connections and exiting");
                    fatal = Some(reason);
                    break;
                }
                accepted = accept_on(self.listener.as_ref()) => {
                    let Some((stream, peer, guard)) = self.admit(accepted, &per_ip).await else {
                        continue;
                    };
                    let connection = Connection::new(
                        ClientSocket::Plain(stream),
                        peer,
                        Arc::clone(&self.shared),
                        Arc::clone(&self.conns),
                        self.raft.clone(),
                        self.shutdown_tx.subscribe(),
                    );
                    tasks.spawn(async move {
                        connection.run().await;
                        drop(guard);
                    });
                }
                accepted = accept_on(self.secure.as_ref().map(|(l, _)| l)) => {
                    let Some((stream, peer, guard)) = self.admit(accepted, &per_ip).await else {
                        continue;
                    };
                    let Some(tls) = self.secure.as_ref().map(|(_, tls)| Arc::clone(tls)) else {
                        continue;
                    };
                    let (shared, conns, raft) =
                        (Arc::clone(&self.shared), Arc::clone(&self.conns), self.raft.clone());
                    let shutdown = self.shutdown_tx.subscribe();
                    tasks.spawn(async move {
                        // The handshake runs in the connection's own task: a slow client
                        // never holds up the accept loop.
                        match tls.accept(stream).await {
                            Ok(accepted) => {
                                let connection = Connection::new(
                                    ClientSocket::Tls(Box::new(accepted)),
                                    peer,
                                    shared,
                                    conns,
                                    raft,
                                    shutdown,
                                );
                                connection.run().await;
                            }
                            Err(error) => info!(%peer, %error, "TLS handshake failed; closing"),
                        }
                        drop(guard);
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        info!("shutting down");
        if fatal.is_none() && self.peer_net.is_some() && self.raft.is_leader() {
            self.hand_off_before_exit().await;
        }
        let _ = self.shutdown_tx.send(true);
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("connections did not close in time; aborting them");
            tasks.abort_all();
        }
        housekeeping.abort();
        for task in http {
            // Graceful: requests in flight finish; bounded, a stuck client cannot hold us.
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        if let Some(control) = control {
            let _ = control.await;
        }
        if let Some(duties) = duties {
            duties.abort();
            let _ = duties.await;
        }
        self.raft.shutdown();
        if let Some(thread) = self.raft_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if let Some(net) = self.peer_net.take() {
            match Arc::try_unwrap(net) {
                Ok(net) => net.shutdown().await,
                // Still shared (cannot happen once the duties task ended): dropping cancels it.
                Err(net) => drop(net),
            }
        }
        info!("stopped");
        match fatal {
            Some(reason) => Err(ServerError::Fatal(reason)),
            None => Ok(()),
        }
    }
}

/// Accepts on `listener`, or never if there is none (so a `select!` arm stays idle).
async fn accept_on(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

impl Server {
    /// Applies maxCnxns and maxClientCnxns to an accepted socket: the socket, its address and
    /// the guard that gives the slot back, or None if it was refused (and closed).
    async fn admit(
        &self,
        accepted: std::io::Result<(tokio::net::TcpStream, SocketAddr)>,
        per_ip: &Arc<PerIp>,
    ) -> Option<(tokio::net::TcpStream, SocketAddr, PerIpGuard)> {
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off, don't spin.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                return None;
            }
        };
        let limit = self.shared.config().max_client_cnxns;
        let global_limit = self.shared.config().max_cnxns;
        if global_limit != 0 && per_ip.total.load(Ordering::Relaxed) >= global_limit {
            // ZooKeeper's maxCnxns: refuse at accept, before any per-connection state.
            warn!(%peer, limit = global_limit, "too many connections in total; closing");
            return None;
        }
        {
            let mut counts = per_ip.counts.lock();
            let count = counts.entry(peer.ip()).or_insert(0);
            if limit != 0 && *count >= limit {
                warn!(%peer, limit, "too many connections from this address; closing");
                return None;
            }
            *count += 1;
        }
        per_ip.total.fetch_add(1, Ordering::Relaxed);
        let guard = PerIpGuard {
            per_ip: Arc::clone(per_ip),
            ip: peer.ip(),
        };
        Some((stream, peer, guard))
    }

    /// A leader asked to stop hands leadership to the most caught-up active voter first, so
    /// a planned restart costs the ensemble no election timeout (ZooKeeper has no such step:
    /// its followers wait out syncLimit, then elect). Bounded: raft-rs abandons a transfer
    /// after an election timeout, and this waits at most that plus half of it.
    async fn hand_off_before_exit(&self) {
        let election = self.raft.election_timeout();
        let limit = election + election / 2;
        match admin::hand_off_leadership(&self.raft, None, limit).await {
            Ok(h) => info!(
                to = h.leader,
                term = h.term,
                previous_term = h.old_term,
                elapsed_ms = h.elapsed.as_millis() as u64,
                "leadership handed off before exit"
            ),
            Err(error) => {
                warn!(%error, "could not hand leadership off before exit; exiting anyway")
            }
        }
    }
}

/// The leader's periodic duties: expire silent sessions and reap empty containers and expired
/// TTL nodes, each as a log entry so every replica applies the same deletions.
async fn housekeeping(shared: Arc<Shared>, raft: RaftHandle, mut shutdown: watch::Receiver<bool>) {
    let expiry_period = (shared.config().tick_time / 2).max(Duration::from_millis(10));
    let reap_period = shared.config().container_check_interval;
    let origin = Origin::housekeeping(shared.config().server_id);
    let mut expiry = tokio::time::interval(expiry_period);
    let mut reap = tokio::time::interval(reap_period);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = expiry.tick() => {
                // While the disk is full nothing can be proposed; expiring later is safe.
                // Only a caught-up leader expires: its tracker was rebuilt at promotion.
                if !raft.is_caught_up_leader() || raft.storage_full() {
                    continue;
                }
                // The term this decision is made in: the raft thread drops it if it no longer
                // leads in that term (a paused, deposed leader's expiries must not commit).
                let term = raft.term();
                for session_id in shared.tracker().take_expired(Instant::now()) {
                    info!(session = format_args!("{session_id:#x}"), term, "session expired");
                    let txn = Txn::new(origin, session_id, Vec::new(), TxnBody::CloseSession { session_id });
                    if let Err(err) = raft.propose_as_leader(term, txn.encode()) {
                        error!(%err, "cannot propose session expiry");
                    }
                }
            }
            _ = reap.tick() => {
                if !raft.is_caught_up_leader() || raft.storage_full() {
                    continue;
                }
                let term = raft.term();
                let paths = shared.state().read().tree.reapable_nodes(now_ms());
                for path in paths {
                    let body = TxnBody::Request(Request::DeleteContainer(SyncRequest { path }));
                    let txn = Txn::new(origin, 0, Vec::new(), body);
                    if let Err(err) = raft.propose_as_leader(term, txn.encode()) {
                        error!(%err, "cannot propose container removal");
                    }
                }
            }
        }
    }
}

/// Starts the sole voter of a standalone server and waits until it leads and has replayed its
/// log, so the first client sees the whole acknowledged history.
async fn start_standalone(
    config: &Config,
    shared: Arc<Shared>,
    sink: Box<dyn ReplySink>,
) -> Result<(RaftHandle, std::thread::JoinHandle<()>), ServerError> {
    let options = raft_options(config, vec![config.server_id], Duration::from_millis(100));
    let applier = Applier::new(shared, sink);
    let (raft, raft_thread) =
        tokio::task::spawn_blocking(move || RaftHandle::start(options, Box::new(applier)))
            .await
            .map_err(|_| ServerError::Raft(RaftError::StartupPanicked))??;
    // A one-voter group elects itself at once. Wait for that, and for the replay of the
    // log tail, so the first client sees the whole acknowledged history.
    let wait = Duration::from_secs(120);
    let deadline = Instant::now() + wait;
    while !raft.is_caught_up_leader() {
        if let Some(reason) = raft.fatal_reason() {
            return Err(ServerError::Fatal(reason));
        }
        if Instant::now() > deadline {
            raft.shutdown();
            // Started on a full disk: the first write is still being retried.
            if raft.storage_full() {
                return Err(ServerError::Raft(RaftError::StorageFull));
            }
            return Err(ServerError::NoLeader(wait));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((raft, raft_thread))
}

/// The raft options shared by both modes.
fn raft_options(config: &Config, voters: Vec<u64>, tick: Duration) -> RaftOptions {
    RaftOptions {
        node_id: config.server_id,
        voters,
        data_dir: config.data_dir.clone(),
        tick_interval: tick,
        snapshot_every: config.snap_count,
        snapshot_bytes: config.snap_size_limit_kb.saturating_mul(1024),
        max_batch: 4096,
        max_batch_bytes: crate::raft::DEFAULT_MAX_BATCH_BYTES,
        max_uncommitted_bytes: crate::raft::DEFAULT_MAX_UNCOMMITTED_BYTES,
        max_queued_bytes: crate::raft::DEFAULT_MAX_QUEUED_BYTES,
    }
}

/// Starts a member of an ensemble: checks the cluster id, binds the peer port, starts the
/// peer network and a raft group of the participants (voters) and observers (learners), with
/// timing from zoo.cfg. Does not wait for a leader: the client port is bound at once and the
/// serving gate ([`RaftHandle::is_fresh`]) refuses clients until this server is fresh.
async fn start_ensemble(
    config: &Config,
    shared: Arc<Shared>,
    sink: Box<dyn ReplySink>,
) -> Result<(RaftHandle, std::thread::JoinHandle<()>, Arc<PeerNetwork>), ServerError> {
    let cluster_id =
        effective_cluster_id(config).map_err(|e| ServerError::Ensemble(e.to_string()))?;
    // `/zookeeper/config` of the configured server list until the log or a snapshot says
    // otherwise (both replace it).
    let initial = crate::reconfig::initial_config(config);
    if let Err(code) = shared
        .state()
        .write()
        .tree
        .set_config(initial.as_bytes(), 0, 0)
    {
        return Err(ServerError::Ensemble(format!(
            "cannot set /zookeeper/config: {code}"
        )));
    }
    let mut voters: Vec<u64> = config
        .servers
        .iter()
        .filter(|s| s.role == PeerRole::Participant)
        .map(|s| s.id)
        .collect();
    let mut learners: Vec<u64> = config
        .servers
        .iter()
        .filter(|s| s.role == PeerRole::Observer)
        .map(|s| s.id)
        .collect();
    if config.join_existing {
        // A joiner never bootstraps a membership: the leader's snapshot brings it.
        voters.clear();
        learners.clear();
    }
    let timing = config.raft_timing();
    let mut group = GroupOptions::from_timing(&timing, learners);
    group.catch_up_timeout = config.catch_up_timeout();
    let mut peer_config = PeerConfig::from_config(config)
        .ok_or_else(|| ServerError::Ensemble("no servers configured".into()))?;
    peer_config.cluster_id = cluster_id;
    if config.ssl_quorum {
        let (settings, verify) = (
            config.quorum_tls.clone(),
            config.quorum_hostname_verification,
        );
        let tls = tokio::task::spawn_blocking(move || PeerTls::load(&settings, verify))
            .await
            .map_err(|e| TlsError::Rustls(format!("loading quorum certificates: {e}")))??;
        peer_config.tls = Some(Arc::new(tls));
    }
    let peer_address = PeerConfig::listen_address(config)
        .ok_or_else(|| ServerError::Ensemble("this server is not in the server list".into()))?;
    let peer_listener = TcpListener::bind(peer_address.as_str())
        .await
        .map_err(|e| ServerError::Ensemble(format!("cannot listen on {peer_address}: {e}")))?;
    // Followers and observers forward their clients' touches; the leader applies them.
    let touch_shared = Arc::clone(&shared);
    let shared_for_net = Arc::clone(&shared);
    let inbound = Arc::new(RaftInbound::new(move |_from, touches| {
        touch_shared.tracker().touches_from_peer(&touches);
    }));
    let net = PeerNetwork::start(peer_config, peer_listener, inbound.clone())
        .map_err(|e| ServerError::Ensemble(e.to_string()))?;
    // Snapshots travel as their files, streamed in chunks beside the Raft messages (the raft
    // thread opens and cleans this directory; the network only reads and receives files).
    net.serve_snapshots(crate::storage::SnapshotDir::existing(
        config.data_dir.join("snapshots"),
    ));
    // Not the leader yet: record touches instead of expiring, until promoted.
    shared.tracker().demote();
    let options = raft_options(config, voters, timing.tick);
    let applier =
        Applier::new(shared, sink).with_ensemble(config.server_id, timing.election_timeout());
    let transport = Box::new(net.transport());
    let (raft, raft_thread) = tokio::task::spawn_blocking(move || {
        RaftHandle::start_group(options, group, Box::new(applier), transport)
    })
    .await
    .map_err(|_| ServerError::Raft(RaftError::StartupPanicked))??;
    net.attach(raft.clone());
    inbound.attach(raft.clone());
    info!(
        id = config.server_id,
        peer = %peer_address,
        tick_ms = timing.tick.as_millis() as u64,
        election_ms = timing.election_timeout().as_millis() as u64,
        "ensemble member started"
    );
    let net = Arc::new(net);
    shared_for_net.set_peer_net(&net);
    // The membership replayed from the log or a snapshot may differ from zoo.cfg's; a joint
    // configuration's outgoing voters are not in `/zookeeper/config` but still needed.
    shared_for_net.peers_from_tree(&raft.members());
    Ok((raft, raft_thread, net))
}

/// Ensemble duties of every member: every tickTime/2, send the touches of local clients to
/// the leader; and the serving gate's second half: a server that has not been fresh for
/// longer than the election timeout closes every client connection (ZooKeeper's
/// `Learner.shutdown`), so a partitioned minority never keeps clients the leader expires.
/// With `readonlymode.enabled` it enters read-only mode instead (closing the read-write
/// connections only), and leaves it, closing the read-only ones, once fresh again.
async fn ensemble_duties(
    shared: Arc<Shared>,
    conns: Arc<ConnRegistry>,
    raft: RaftHandle,
    net: Arc<PeerNetwork>,
    mut shutdown: watch::Receiver<bool>,
) {
    let touch_period = (shared.config().tick_time / 2).max(Duration::from_millis(10));
    let gate_period = (raft.election_timeout() / 4).max(Duration::from_millis(10));
    let mut touch = tokio::time::interval(touch_period);
    let mut gate = tokio::time::interval(gate_period);
    touch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    gate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let my_id = shared.config().server_id;
    let read_only_enabled = shared.config().read_only_enabled;
    let mut unfresh_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = touch.tick() => {
                let touches = shared.tracker().drain_touch_frame();
                let leader = raft.leader_id();
                if touches.is_empty() || leader == 0 || leader == my_id {
                    continue;
                }
                if let Err(error) = net.send_touch(leader, touches) {
                    debug!(%error, leader, "cannot send session touches to the leader");
                }
            }
            _ = gate.tick() => {
                if shared.is_removed() {
                    let closed = conns.close_all();
                    if closed > 0 {
                        warn!(closed, "removed from the ensemble by a reconfig; closed every client connection");
                    }
                    continue;
                }
                if raft.is_fresh() {
                    unfresh_since = None;
                    if let Some(closed) = conns.leave_read_only() {
                        info!(closed, "in contact with the quorum again; left read-only mode and closed its connections");
                    }
                    continue;
                }
                let since = *unfresh_since.get_or_insert_with(Instant::now);
                if since.elapsed() <= raft.election_timeout() {
                    continue;
                }
                if read_only_enabled {
                    // ZooKeeper's QuorumPeer starts its ReadOnlyZooKeeperServer once LOOKING
                    // lasted a while: read-only clients are served from the local tree.
                    let (entered, closed) = conns.read_only_tick(Instant::now());
                    if entered {
                        warn!(closed, "not in contact with a leader; entered read-only mode");
                    } else if closed > 0 {
                        warn!(closed, "read-only mode: closed read-write connections");
                    }
                } else {
                    let closed = conns.close_all();
                    if closed > 0 {
                        warn!(closed, "not in contact with a leader; closed every client connection");
                    }
                }
            }
        }
    }
}
