//! Server configuration: built-in defaults, then a zoo.cfg-compatible file, then command-line
//! flags, each overriding the one before.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key has a value rookery cannot use.
    #[error("{origin}: invalid value {value:?} for {key}: {reason}")]
    InvalidValue {
        /// Where it came from: a file and line, or a flag.
        origin: String,
        /// The key or flag.
        key: String,
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Values that are fine alone but contradict each other (for example min > max session timeout).
    #[error("{0}")]
    Inconsistent(String),
    /// Two `server.N` lines (or `--peers` entries) name the same id; ZooKeeper's Properties would
    /// silently keep the last one, which hides a copy-paste error in the ensemble list.
    #[error("{origin}: server id {id} is listed twice")]
    DuplicateServerId {
        /// The file (or "command line") holding the list.
        origin: String,
        /// The repeated id.
        id: u64,
    },
    /// Two servers share one peer address: one of them could never be reached.
    #[error("{origin}: servers {first} and {second} have the same peer address {address}")]
    DuplicatePeerAddress {
        /// The file (or "command line") holding the list.
        origin: String,
        /// The lower id.
        first: u64,
        /// The higher id.
        second: u64,
        /// The shared `host:port`.
        address: String,
    },
    /// An ensemble is configured but this server does not know who it is.
    #[error(
        "servers are listed but this server's id is unknown: write it to {}/myid \
         (as ZooKeeper does) or pass --id",
        data_dir.display()
    )]
    MissingServerId {
        /// Where `myid` was looked for.
        data_dir: PathBuf,
    },
    /// `dataDir/myid` exists but does not hold a valid server id.
    #[error("{}: invalid server id {content:?}: {reason}", path.display())]
    BadMyId {
        /// The myid file.
        path: PathBuf,
        /// Its first line.
        content: String,
        /// What is wrong with it.
        reason: String,
    },
    /// This server's id is not among the configured servers.
    #[error("this server's id {id} is not among the configured servers {known:?}")]
    UnknownServerId {
        /// This server's id (from myid or --id).
        id: u64,
        /// The ids listed in the configuration.
        known: Vec<u64>,
    },
    /// The data directory was initialized by a different ensemble (another server list), so
    /// joining with it would mix two clusters' logs.
    #[error(
        "{}: this data directory belongs to cluster {stored:016x}, but the configured servers \
         form cluster {configured:016x}; use an empty dataDir for this ensemble, or fix the \
         server list",
        path.display()
    )]
    ClusterMismatch {
        /// The `cluster-id` file.
        path: PathBuf,
        /// The id stored in it.
        stored: u64,
        /// The id computed from the configured servers.
        configured: u64,
    },
    /// The `cluster-id` file could not be read, parsed or written.
    #[error("{}: {reason}", path.display())]
    ClusterIdFile {
        /// The `cluster-id` file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The JAAS file for SASL could not be read or parsed.
    #[error(transparent)]
    Jaas(#[from] crate::server::sasl::JaasError),
}

/// Command-line flags. Every flag is optional: a flag overrides the config file, which
/// overrides the built-in default.
#[derive(Debug, Default, Parser)]
#[command(
    name = "rookery",
    version,
    about = "A ZooKeeper-compatible coordination service"
)]
pub struct Flags {
    /// A zoo.cfg-compatible configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Client port (clientPort).
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on (clientPortAddress).
    #[arg(long)]
    pub address: Option<IpAddr>,
    /// Directory for the Raft log and snapshots (dataDir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Basic time unit in milliseconds (tickTime).
    #[arg(long, value_name = "MS")]
    pub tick_time: Option<u64>,
    /// Smallest session timeout granted, in ms (minSessionTimeout; default 2 x tickTime).
    #[arg(long, value_name = "MS")]
    pub min_session_timeout: Option<u64>,
    /// Largest session timeout granted, in ms (maxSessionTimeout; default 20 x tickTime).
    #[arg(long, value_name = "MS")]
    pub max_session_timeout: Option<u64>,
    /// Connections allowed per client IP; 0 means unlimited (maxClientCnxns).
    #[arg(long)]
    pub max_client_cnxns: Option<usize>,
    /// Connections allowed in total; 0 means unlimited (maxCnxns).
    #[arg(long)]
    pub max_cnxns: Option<usize>,
    /// Requests in flight over all connections before the busiest stop being read
    /// (globalOutstandingLimit).
    #[arg(long, value_name = "N")]
    pub global_outstanding_limit: Option<usize>,
    /// Bytes queued for one client before its connection is closed
    /// (connection.maxOutputBytes; default max(4 MiB, 2 x jute.maxbuffer + 64 KiB)).
    #[arg(long, value_name = "BYTES")]
    pub max_output_bytes: Option<usize>,
    /// Comma-separated four-letter words to allow, or * (4lw.commands.whitelist).
    #[arg(long = "4lw-whitelist", value_name = "LIST")]
    pub four_letter_whitelist: Option<String>,
    /// Largest packet accepted, in bytes (jute.maxbuffer).
    #[arg(long, value_name = "BYTES")]
    pub jute_maxbuffer: Option<usize>,
    /// Disable TTL nodes (extendedTypesEnabled=false).
    #[arg(long)]
    pub no_ttl: bool,
    /// Log entries between snapshots (snapCount).
    #[arg(long, value_name = "N")]
    pub snap_count: Option<u64>,
    /// How often containers and TTL nodes are checked for removal, in ms (znode.container.checkIntervalMs).
    #[arg(long, value_name = "MS")]
    pub container_check_interval_ms: Option<u64>,
    /// Superuser digest `super:BASE64(SHA1(super:password))` (DigestAuthenticationProvider.superDigest).
    #[arg(long, value_name = "USER:DIGEST")]
    pub super_digest: Option<String>,
    /// This server's id in the ensemble (overrides dataDir/myid).
    #[arg(long, value_name = "N")]
    pub id: Option<u64>,
    /// The ensemble, replacing the file's server.N lines: comma-separated
    /// `N=host:peerPort[:electionPort][:participant|observer][;[clientHost:]clientPort]`
    /// (quote it: `;` is special to shells).
    #[arg(long, value_name = "LIST")]
    pub peers: Option<String>,
    /// Ticks a server may take to catch up with the leader (initLimit).
    #[arg(long, value_name = "TICKS")]
    pub init_limit: Option<u32>,
    /// Ticks without leader contact before a server is considered gone (syncLimit).
    #[arg(long, value_name = "TICKS")]
    pub sync_limit: Option<u32>,
    /// JAAS file whose `Server` section lists SASL DIGEST-MD5 users as user_NAME="password"
    /// (ZooKeeper's -Djava.security.auth.login.config; also read from $SERVER_JVMFLAGS or
    /// $JVMFLAGS, and from the zoo.cfg key jaasLoginConfig).
    #[arg(long, value_name = "FILE")]
    pub jaas_config: Option<PathBuf>,
    /// Serve read-only clients while cut off from the quorum (readonlymode.enabled=true,
    /// ZooKeeper's -Dreadonlymode.enabled=true).
    #[arg(long)]
    pub read_only_mode: bool,
    /// Serve Prometheus metrics on this port at /metrics (metricsProvider.httpPort with
    /// metricsProvider.className=...PrometheusMetricsProvider; 0 picks a free port).
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,
    /// Address of the /metrics endpoint (metricsProvider.httpHost; default 0.0.0.0).
    #[arg(long, value_name = "IP")]
    pub metrics_address: Option<IpAddr>,
    /// Serve ZooKeeper's AdminServer (JSON commands under /commands) on this port
    /// (admin.enableServer=true, admin.serverPort; 0 picks a free port).
    #[arg(long, value_name = "PORT")]
    pub admin_port: Option<u16>,
    /// Address of the AdminServer (admin.serverAddress; default 0.0.0.0).
    #[arg(long, value_name = "IP")]
    pub admin_address: Option<IpAddr>,
    /// TLS client port (secureClientPort); needs --ssl-keystore.
    #[arg(long, value_name = "PORT")]
    pub secure_port: Option<u16>,
    /// PEM file with the TLS private key and certificate chain (ssl.keyStore.location).
    #[arg(long, value_name = "FILE")]
    pub ssl_keystore: Option<PathBuf>,
    /// PEM file with the CA certificates client certificates must chain to
    /// (ssl.trustStore.location).
    #[arg(long, value_name = "FILE")]
    pub ssl_truststore: Option<PathBuf>,
    /// Whether TLS clients must present a certificate: need (default), want or none
    /// (ssl.clientAuth).
    #[arg(long, value_name = "MODE")]
    pub ssl_client_auth: Option<String>,
}

/// The effective configuration of a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients connect.
    pub client_address: IpAddr,
    /// Where clients connect; 0 asks the OS for a free port (tests).
    pub client_port: u16,
    /// Root of all durable state: the LMDB Raft log and the snapshots.
    pub data_dir: PathBuf,
    /// The unit of session timeouts and of the Raft tick.
    pub tick_time: Duration,
    /// Session timeouts are clamped into [min, max].
    pub min_session_timeout: Duration,
    /// Largest session timeout granted.
    pub max_session_timeout: Duration,
    /// Per-IP connection limit, 0 = unlimited; protects the server from a runaway client.
    pub max_client_cnxns: usize,
    /// Total connection limit, 0 = unlimited (ZooKeeper's maxCnxns): file descriptors and
    /// per-connection memory are finite however many addresses the clients come from.
    pub max_cnxns: usize,
    /// Requests in flight over all connections past which connections with outstanding
    /// requests stop being read until replies drain (ZooKeeper's globalOutstandingLimit;
    /// also the per-connection bound on pending requests). Nothing is dropped.
    pub global_outstanding_limit: usize,
    /// Bytes queued for one client (encoded, not yet written) past which its connection is
    /// closed; None derives it from jute.maxbuffer (see [`Config::output_cap`]).
    pub max_output_bytes: Option<usize>,
    /// Four-letter words that may run; the rest get ZooKeeper's "not in the whitelist" answer.
    pub four_letter_whitelist: Vec<String>,
    /// Largest frame accepted from a client.
    pub jute_maxbuffer: usize,
    /// Whether TTL nodes may be created (ZooKeeper's extendedTypesEnabled).
    pub ttl_enabled: bool,
    /// Applied entries between snapshots: bounds log size and restart time.
    pub snap_count: u64,
    /// KiB of log since the last snapshot that trigger a snapshot before `snap_count` entries
    /// (snapSizeLimitInKb; 0 = no byte bound).
    pub snap_size_limit_kb: u64,
    /// Period of the container/TTL reaper.
    pub container_check_interval: Duration,
    /// The superuser's digest, whose holder bypasses every ACL.
    pub super_digest: Option<String>,
    /// Whether `authProvider.N=...SASLAuthenticationProvider` registers the `sasl` ACL scheme.
    pub sasl_provider: bool,
    /// The JAAS file SASL users come from, if any.
    pub jaas_config: Option<PathBuf>,
    /// The SASL user who is also superuser (ZooKeeper's zookeeper.superUser property).
    pub sasl_super_user: Option<String>,
    /// DIGEST-MD5 users of the JAAS `Server` section; `None`: no SASL server (a sasl packet
    /// then answers AuthFailed and the connection stays open).
    pub sasl_users: Option<crate::server::sasl::SaslUsers>,
    /// This server's id in the Raft group (1 when standalone).
    pub server_id: u64,
    /// Where the configuration came from, for the `conf` four-letter word.
    pub source: String,
    /// The ensemble from the `server.N` lines (or `--peers`), sorted by id; empty when
    /// standalone. The *initial* membership: it bootstraps a fresh data dir and names the
    /// cluster ([`Config::cluster_id`]); later membership comes from the replicated log.
    pub servers: Vec<ServerSpec>,
    /// initLimit, in ticks: how long a server may take to catch up ([`Config::catch_up_timeout`]).
    pub init_limit: u32,
    /// syncLimit, in ticks: leader silence tolerated before an election ([`raft_timing`]).
    pub sync_limit: u32,
    /// `peerType` as written; the role in the server list wins (as in ZooKeeper), this only
    /// produces a warning when the two disagree.
    pub peer_type: PeerRole,
    /// `reconfigEnabled`: whether the reconfig request may change membership.
    pub reconfig_enabled: bool,
    /// `initialClusterState=existing` (rookery, as etcd): this server joins a running
    /// ensemble, so a fresh data dir bootstraps no membership of its own (it waits for the
    /// leader's snapshot after a reconfig added it) and its `cluster-id` file, copied from a
    /// member, names the ensemble instead of the server list. `new` (the default) bootstraps
    /// the server list.
    pub join_existing: bool,
    /// `standaloneEnabled`: whether one participant runs as a standalone server.
    pub standalone_enabled: bool,
    /// `readonlymode.enabled`: whether a server cut off from the quorum serves reads.
    pub read_only_enabled: bool,
    /// Where `/metrics` is served (Prometheus text format), if anywhere: set by
    /// `metricsProvider.className=org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider`
    /// (address from `metricsProvider.httpHost`/`httpPort`, ZooKeeper's 0.0.0.0:7000) or by
    /// `--metrics-port`. Off by default, as ZooKeeper's NullMetricsProvider.
    pub metrics: Option<SocketAddr>,
    /// Where the AdminServer listens, if anywhere (`admin.enableServer=true`,
    /// `admin.serverAddress`/`admin.serverPort`, ZooKeeper's 0.0.0.0:8080, or `--admin-port`).
    /// Off by default (ZooKeeper's is on): it answers `dump`, `cons` and the like to anyone
    /// who reaches the port, which rookery does not do unasked.
    pub admin_server: Option<SocketAddr>,
    /// `admin.commandURL`: the path the commands live under (ZooKeeper's `/commands`).
    pub admin_command_url: String,
    /// Whether the plain `clientPort` is served. False when zoo.cfg names a
    /// `secureClientPort` and no `clientPort` (TLS only, as ZooKeeper).
    pub plain_port_enabled: bool,
    /// `secureClientPort`: the TLS client port, if any ([`crate::server::tls`]).
    pub secure_client_port: Option<u16>,
    /// `secureClientPortAddress`: where the TLS port listens (default: the client address).
    pub secure_client_address: Option<IpAddr>,
    /// The `ssl.*` settings of the TLS client port.
    pub client_tls: crate::server::tls::TlsSettings,
    /// `sslQuorum`: TLS between ensemble members, with `quorum_tls`.
    pub ssl_quorum: bool,
    /// The `ssl.quorum.*` settings (peers always require each other's certificate).
    pub quorum_tls: crate::server::tls::TlsSettings,
    /// `ssl.quorum.hostnameVerification` (default true): a dialed peer's certificate must
    /// name the host of its `server.N` line.
    pub quorum_hostname_verification: bool,
    /// Whether the `x509` ACL scheme is registered: `authProvider.N=...X509AuthenticationProvider`,
    /// or implied by a `secureClientPort` (ZooKeeper needs the explicit line and closes TLS
    /// connections that present a certificate without it; rookery registers it for them).
    pub x509_provider: bool,
}

impl Default for Config {
    fn default() -> Self {
        let tick = Duration::from_millis(2000);
        Config {
            client_address: IpAddr::from([127, 0, 0, 1]),
            client_port: 2181,
            data_dir: PathBuf::from("./data"),
            tick_time: tick,
            min_session_timeout: tick * 2,
            max_session_timeout: tick * 20,
            max_client_cnxns: 60,
            max_cnxns: 0,
            global_outstanding_limit: 1000,
            max_output_bytes: None,
            four_letter_whitelist: vec!["srvr".to_string()],
            jute_maxbuffer: rookery_protocol::DEFAULT_MAX_FRAME,
            ttl_enabled: true,
            snap_count: 100_000,
            snap_size_limit_kb: crate::raft::DEFAULT_SNAPSHOT_BYTES / 1024,
            container_check_interval: Duration::from_secs(60),
            super_digest: None,
            sasl_provider: false,
            jaas_config: None,
            sasl_super_user: None,
            sasl_users: None,
            server_id: 1,
            source: "defaults".to_string(),
            servers: Vec::new(),
            // zoo_sample.cfg's values (ZooKeeper itself refuses an ensemble without them).
            init_limit: 10,
            sync_limit: 5,
            peer_type: PeerRole::Participant,
            reconfig_enabled: false,
            join_existing: false,
            standalone_enabled: true,
            read_only_enabled: false,
            metrics: None,
            admin_server: None,
            admin_command_url: DEFAULT_ADMIN_COMMAND_URL.to_string(),
            plain_port_enabled: true,
            secure_client_port: None,
            secure_client_address: None,
            client_tls: crate::server::tls::TlsSettings::default(),
            x509_provider: false,
            ssl_quorum: false,
            quorum_tls: crate::server::tls::TlsSettings::default(),
            quorum_hostname_verification: true,
        }
    }
}

/// Room for reply headers and framing beside a jute.maxbuffer-sized payload.
const OUTPUT_SLACK: usize = 64 * 1024;

/// ZooKeeper's Prometheus metrics provider class (`metricsProvider.className`).
pub const PROMETHEUS_PROVIDER_CLASS: &str =
    "org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider";
/// ZooKeeper's default metrics provider: no metrics endpoint.
const NULL_PROVIDER_CLASS: &str = "org.apache.zookeeper.metrics.impl.NullMetricsProvider";
/// `metricsProvider.httpPort` default (ZooKeeper's PrometheusMetricsProvider).
pub const DEFAULT_METRICS_PORT: u16 = 7000;
/// `admin.serverPort` default (ZooKeeper's JettyAdminServer).
pub const DEFAULT_ADMIN_PORT: u16 = 8080;
/// `admin.commandURL` default.
pub const DEFAULT_ADMIN_COMMAND_URL: &str = "/commands";

/// Keys of zoo.cfg that rookery understands.
const KNOWN_KEYS: &[&str] = &[
    "dataDir",
    "dataLogDir",
    "clientPort",
    "clientPortAddress",
    "tickTime",
    "minSessionTimeout",
    "maxSessionTimeout",
    "maxClientCnxns",
    "maxCnxns",
    "globalOutstandingLimit",
    "connection.maxOutputBytes",
    "4lw.commands.whitelist",
    "jute.maxbuffer",
    "extendedTypesEnabled",
    "zookeeper.extendedTypesEnabled",
    "snapCount",
    "snapSizeLimitInKb",
    "znode.container.checkIntervalMs",
    "superDigest",
    "DigestAuthenticationProvider.superDigest",
    "zookeeper.DigestAuthenticationProvider.superDigest",
    "initLimit",
    "syncLimit",
    "admin.enableServer",
    "admin.serverPort",
    "admin.serverAddress",
    "admin.commandURL",
    "admin.idleTimeout",
    "metricsProvider.className",
    "metricsProvider.httpPort",
    "metricsProvider.httpHost",
    "metricsProvider.exportJvmInfo",
    "peerType",
    "reconfigEnabled",
    "initialClusterState",
    "standaloneEnabled",
    "readonlymode.enabled",
    "zookeeper.readonlymode.enabled",
    "jaasLoginConfig",
    "superUser",
    "zookeeper.superUser",
    "serverCnxnFactory",
    "zookeeper.serverCnxnFactory",
];

/// An HTTP endpoint after the flags: a port or an address flag turns it on (the other part
/// coming from the file, else the default port or 0.0.0.0).
fn flag_endpoint(
    from_file: Option<SocketAddr>,
    port: Option<u16>,
    address: Option<IpAddr>,
    default_port: u16,
) -> Option<SocketAddr> {
    if port.is_none() && address.is_none() {
        return from_file;
    }
    let port = port.or(from_file.map(|a| a.port())).unwrap_or(default_port);
    let address = address
        .or(from_file.map(|a| a.ip()))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    Some(SocketAddr::new(address, port))
}

/// The X509AuthenticationProvider class name of `authProvider.N` lines.
pub const X509_PROVIDER_CLASS: &str = "org.apache.zookeeper.server.auth.X509AuthenticationProvider";

/// The JVM system property ZooKeeper reads its JAAS file from.
const JAAS_PROPERTY: &str = "-Djava.security.auth.login.config=";

/// The JAAS file named by `-Djava.security.auth.login.config=FILE` in a JVMFLAGS-style string
/// (the last one wins, as on a java command line).
pub fn jaas_from_jvmflags(flags: &str) -> Option<PathBuf> {
    flags
        .split_whitespace()
        .filter_map(|f| f.strip_prefix(JAAS_PROPERTY))
        .next_back()
        .map(|p| PathBuf::from(p.trim_matches(|c| c == '"' || c == '\'')))
}

impl Config {
    /// Defaults, then the file named by `--config`, then the flags.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(path) = &flags.config {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            config.apply_file(path, &text)?;
        }
        config.apply_flags(flags)?;
        config.resolve_server_id(flags.id)?;
        if config.jaas_config.is_none() {
            // As zkServer.sh passes them to java: SERVER_JVMFLAGS, then JVMFLAGS.
            config.jaas_config = ["SERVER_JVMFLAGS", "JVMFLAGS"]
                .iter()
                .filter_map(|var| std::env::var(var).ok())
                .find_map(|v| jaas_from_jvmflags(&v));
        }
        config.load_jaas()?;
        config.check()?;
        Ok(config)
    }

    /// Reads the SASL users from the JAAS file, if one is configured.
    pub fn load_jaas(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.jaas_config {
            let users =
                crate::server::sasl::SaslUsers::load(path, crate::server::sasl::SERVER_SECTION)?;
            tracing::info!(file = %path.display(), users = ?users.names(), "SASL DIGEST-MD5 users loaded");
            self.sasl_users = Some(users);
        }
        Ok(())
    }

    /// Applies zoo.cfg `key=value` lines. Unknown keys get a warning, bad values an error.
    pub fn apply_file(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let origin = path.display().to_string();
        let mut entries = BTreeMap::new();
        let mut server_lines = Vec::new();
        for (number, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(ConfigError::InvalidValue {
                    origin: format!("{origin}:{}", number + 1),
                    key: line.to_string(),
                    value: String::new(),
                    reason: "expected key=value".to_string(),
                });
            };
            let (key, value) = (key.trim(), value.trim());
            if let Some(id) = key.strip_prefix("server.") {
                // Kept apart (with line numbers) so duplicates are errors, not overwrites.
                server_lines.push((format!("{origin}:{}", number + 1), id, value));
                continue;
            }
            entries.insert(key.to_string(), value.to_string());
        }
        if !server_lines.is_empty() {
            self.servers = parse_servers(&origin, &server_lines)?;
        }
        let mut tick_set_min = false;
        let mut tick_set_max = false;
        for (key, value) in &entries {
            let bad = |reason: &str| ConfigError::InvalidValue {
                origin: origin.clone(),
                key: key.clone(),
                value: value.clone(),
                reason: reason.to_string(),
            };
            match key.as_str() {
                "dataDir" => self.data_dir = PathBuf::from(value),
                "clientPort" => self.client_port = value.parse().map_err(|_| bad("not a port"))?,
                "clientPortAddress" => {
                    self.client_address = value.parse().map_err(|_| bad("not an IP address"))?
                }
                "tickTime" => self.tick_time = parse_ms(value).map_err(|r| bad(&r))?,
                "minSessionTimeout" => {
                    self.min_session_timeout = parse_ms(value).map_err(|r| bad(&r))?;
                    tick_set_min = true;
                }
                "maxSessionTimeout" => {
                    self.max_session_timeout = parse_ms(value).map_err(|r| bad(&r))?;
                    tick_set_max = true;
                }
                "maxClientCnxns" => {
                    self.max_client_cnxns = value.parse().map_err(|_| bad("not a count"))?
                }
                "maxCnxns" => self.max_cnxns = value.parse().map_err(|_| bad("not a count"))?,
                "globalOutstandingLimit" => {
                    self.global_outstanding_limit = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("must be a positive count"))?
                }
                "connection.maxOutputBytes" => {
                    self.max_output_bytes = Some(parse_size(value).map_err(|r| bad(&r))?)
                }
                "4lw.commands.whitelist" => self.four_letter_whitelist = parse_whitelist(value),
                "jute.maxbuffer" => {
                    self.jute_maxbuffer = parse_size(value).map_err(|r| bad(&r))?;
                }
                "extendedTypesEnabled" | "zookeeper.extendedTypesEnabled" => {
                    self.ttl_enabled = parse_bool(value).map_err(|r| bad(&r))?
                }
                "snapCount" => {
                    self.snap_count = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("must be a positive count"))?
                }
                "snapSizeLimitInKb" => {
                    // As in ZooKeeper, zero or a negative value disables the byte bound.
                    let kb: i64 = value
                        .parse()
                        .map_err(|_| bad("must be a whole number of KiB"))?;
                    self.snap_size_limit_kb = u64::try_from(kb).unwrap_or(0);
                }
                "znode.container.checkIntervalMs" => {
                    self.container_check_interval = parse_ms(value).map_err(|r| bad(&r))?
                }
                "superDigest"
                | "DigestAuthenticationProvider.superDigest"
                | "zookeeper.DigestAuthenticationProvider.superDigest" => {
                    self.super_digest = Some(parse_super_digest(value).map_err(|r| bad(&r))?)
                }
                "initLimit" => self.init_limit = parse_ticks(value).map_err(|r| bad(&r))?,
                "syncLimit" => self.sync_limit = parse_ticks(value).map_err(|r| bad(&r))?,
                "peerType" => self.peer_type = PeerRole::parse(value).map_err(|r| bad(&r))?,
                "reconfigEnabled" => {
                    self.reconfig_enabled = parse_bool(value).map_err(|r| bad(&r))?
                }
                "initialClusterState" => {
                    self.join_existing = match value.trim() {
                        "new" => false,
                        "existing" => true,
                        _ => return Err(bad("expected new or existing")),
                    }
                }
                "standaloneEnabled" => {
                    self.standalone_enabled = parse_bool(value).map_err(|r| bad(&r))?
                }
                "readonlymode.enabled" | "zookeeper.readonlymode.enabled" => {
                    self.read_only_enabled = parse_bool(value).map_err(|r| bad(&r))?
                }
                "jaasLoginConfig" => self.jaas_config = Some(PathBuf::from(value)),
                // ZooKeeper needs local sessions for kazoo's read-only clients. Rookery's
                // read-only sessions are always local and its read-write ones always global,
                // so the switches are checked and otherwise have no effect.
                "localSessionsEnabled" | "localSessionsUpgradingEnabled" => {
                    parse_bool(value).map_err(|r| bad(&r))?;
                    tracing::debug!(
                        key = key.as_str(),
                        "accepted: sessions are local only in read-only mode"
                    );
                }
                // ZooKeeper turns unknown zoo.cfg keys into zookeeper.* system properties.
                "superUser" | "zookeeper.superUser" => {
                    self.sasl_super_user = Some(value.clone()).filter(|v| !v.is_empty())
                }
                "sslQuorum" | "zookeeper.sslQuorum" => {
                    self.ssl_quorum = parse_bool(value).map_err(|r| bad(&r))?
                }
                "secureClientPort" => {
                    self.secure_client_port = Some(value.parse().map_err(|_| bad("not a port"))?)
                }
                "secureClientPortAddress" => {
                    self.secure_client_address =
                        Some(value.parse().map_err(|_| bad("not an IP address"))?)
                }
                // ZooKeeper reads these as zookeeper.ssl.* system properties; zoo.cfg may
                // spell them either way.
                other if self.apply_tls_key(other, value).map_err(|r| bad(&r))? => {}
                // ZooKeeper loads authProvider.N (or the zookeeper.authProvider.N property)
                // classes into its ProviderRegistry; SASL and X509 are the ones rookery knows.
                other
                    if other.starts_with("authProvider.")
                        || other.starts_with("zookeeper.authProvider.") =>
                {
                    if value == crate::server::sasl::SASL_PROVIDER_CLASS {
                        self.sasl_provider = true;
                    } else if value == X509_PROVIDER_CLASS {
                        self.x509_provider = true;
                    } else {
                        tracing::warn!(key = other, value = %value, "unsupported authProvider ignored");
                    }
                }
                // Read together below: they only mean something as a group.
                other
                    if (other.starts_with("admin.") || other.starts_with("metricsProvider."))
                        && KNOWN_KEYS.contains(&other) => {}
                other if KNOWN_KEYS.contains(&other) => {
                    tracing::info!(
                        key = other,
                        "config key accepted and ignored in standalone mode"
                    )
                }
                other => tracing::warn!(key = other, file = %origin, "unknown config key ignored"),
            }
        }
        self.apply_http_keys(&origin, &entries)?;
        // secureClientPort without clientPort: TLS only.
        if entries.contains_key("secureClientPort") && !entries.contains_key("clientPort") {
            self.plain_port_enabled = false;
        }
        // ZooKeeper derives the session bounds from tickTime unless they are given.
        if !tick_set_min {
            self.min_session_timeout = self.tick_time * 2;
        }
        if !tick_set_max {
            self.max_session_timeout = self.tick_time * 20;
        }
        self.source = origin;
        Ok(())
    }

    /// The metrics provider's and the AdminServer's keys (ZooKeeper's `metricsProvider.*`
    /// and `admin.*`), which only mean something together.
    fn apply_http_keys(
        &mut self,
        origin: &str,
        entries: &BTreeMap<String, String>,
    ) -> Result<(), ConfigError> {
        let bad = |key: &str, value: &str, reason: &str| ConfigError::InvalidValue {
            origin: origin.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let get = |key: &str| entries.get(key).map(String::as_str);
        let port = |key: &str, default: u16| match get(key) {
            None => Ok(default),
            Some(v) => v.parse::<u16>().map_err(|_| bad(key, v, "not a port")),
        };
        // ZooKeeper resolves the host (an IP address or a name) when it binds.
        let host = |key: &str, port: u16| -> Result<SocketAddr, ConfigError> {
            let host = get(key).unwrap_or("0.0.0.0");
            (host, port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| bad(key, host, "not an address this host can bind"))
        };
        match get("metricsProvider.className") {
            Some(PROMETHEUS_PROVIDER_CLASS) => {
                let port = port("metricsProvider.httpPort", DEFAULT_METRICS_PORT)?;
                self.metrics = Some(host("metricsProvider.httpHost", port)?);
            }
            None | Some(NULL_PROVIDER_CLASS) => {}
            Some(other) => {
                tracing::warn!(
                    class = other,
                    "unsupported metricsProvider.className ignored"
                )
            }
        }
        if let Some(v) = get("metricsProvider.exportJvmInfo") {
            parse_bool(v).map_err(|r| bad("metricsProvider.exportJvmInfo", v, &r))?;
        }
        let enabled = match get("admin.enableServer") {
            Some(v) => parse_bool(v).map_err(|r| bad("admin.enableServer", v, &r))?,
            None => false,
        };
        if enabled {
            let port = port("admin.serverPort", DEFAULT_ADMIN_PORT)?;
            self.admin_server = Some(host("admin.serverAddress", port)?);
        }
        if let Some(url) = get("admin.commandURL") {
            let trimmed = url.trim_end_matches('/');
            if !trimmed.starts_with('/') {
                return Err(bad(
                    "admin.commandURL",
                    url,
                    "must be a path starting with /",
                ));
            }
            self.admin_command_url = trimmed.to_string();
        }
        Ok(())
    }

    /// The optional ACL schemes this configuration registers.
    pub fn auth_providers(&self) -> crate::tree::AuthProviders {
        crate::tree::AuthProviders {
            sasl: self.sasl_provider,
            x509: self.x509_provider,
        }
    }

    /// Applies one `ssl.*` (client port) or `ssl.quorum.*` (peers) key, with or without the
    /// `zookeeper.` prefix. Returns false if `key` is not one of them.
    fn apply_tls_key(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let key = key.strip_prefix("zookeeper.").unwrap_or(key);
        if key == "X509AuthenticationProvider.superUser" {
            self.client_tls.super_user = Some(value.to_string()).filter(|v| !v.is_empty());
            return Ok(true);
        }
        let (tls, name, quorum) = if let Some(name) = key.strip_prefix("ssl.quorum.") {
            (&mut self.quorum_tls, name, true)
        } else if let Some(name) = key.strip_prefix("ssl.") {
            (&mut self.client_tls, name, false)
        } else {
            return Ok(false);
        };
        let text = || Some(value.to_string()).filter(|v| !v.is_empty());
        match name {
            "keyStore.location" => tls.key_store = text().map(PathBuf::from),
            "keyStore.type" => tls.key_store_type = text(),
            "keyStore.password" => tls.key_store_password = text(),
            "trustStore.location" => tls.trust_store = text().map(PathBuf::from),
            "trustStore.type" => tls.trust_store_type = text(),
            "clientAuth" => tls.client_auth = crate::server::tls::ClientAuth::parse(value)?,
            "protocol" => tls.protocol = text(),
            "enabledProtocols" => tls.enabled_protocols = text(),
            "ciphersuites" => tls.cipher_suites = text(),
            "trustStore.password" => {}
            "hostnameVerification" if quorum => {
                self.quorum_hostname_verification = parse_bool(value)?
            }
            // The client side's own check of the server's name: nothing for a server to do.
            "hostnameVerification" => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn apply_flags(&mut self, flags: &Flags) -> Result<(), ConfigError> {
        let flag_error = |key: &str, value: &str, reason: &str| ConfigError::InvalidValue {
            origin: "command line".to_string(),
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if let Some(port) = flags.port {
            self.client_port = port;
            self.plain_port_enabled = true;
        }
        if let Some(port) = flags.secure_port {
            self.secure_client_port = Some(port);
        }
        if let Some(path) = &flags.ssl_keystore {
            self.client_tls.key_store = Some(path.clone());
        }
        if let Some(path) = &flags.ssl_truststore {
            self.client_tls.trust_store = Some(path.clone());
        }
        if let Some(mode) = &flags.ssl_client_auth {
            self.client_tls.client_auth = crate::server::tls::ClientAuth::parse(mode)
                .map_err(|r| flag_error("--ssl-client-auth", mode, &r))?;
        }
        if self.secure_client_port.is_some() {
            // A verified client certificate authenticates as x509:<DN> (see `x509_provider`).
            self.x509_provider = true;
        }
        if let Some(address) = flags.address {
            self.client_address = address;
        }
        if let Some(dir) = &flags.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(ms) = flags.tick_time {
            if ms == 0 {
                return Err(flag_error("--tick-time", "0", "must be positive"));
            }
            self.tick_time = Duration::from_millis(ms);
            if flags.min_session_timeout.is_none() {
                self.min_session_timeout = self.tick_time * 2;
            }
            if flags.max_session_timeout.is_none() {
                self.max_session_timeout = self.tick_time * 20;
            }
        }
        if let Some(ms) = flags.min_session_timeout {
            self.min_session_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = flags.max_session_timeout {
            self.max_session_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = flags.max_client_cnxns {
            self.max_client_cnxns = n;
        }
        if let Some(n) = flags.max_cnxns {
            self.max_cnxns = n;
        }
        if let Some(n) = flags.global_outstanding_limit {
            if n == 0 {
                return Err(flag_error(
                    "--global-outstanding-limit",
                    "0",
                    "must be positive",
                ));
            }
            self.global_outstanding_limit = n;
        }
        if let Some(n) = flags.max_output_bytes {
            self.max_output_bytes = Some(n);
        }
        if let Some(list) = &flags.four_letter_whitelist {
            self.four_letter_whitelist = parse_whitelist(list);
        }
        if let Some(n) = flags.jute_maxbuffer {
            self.jute_maxbuffer = n;
        }
        if flags.no_ttl {
            self.ttl_enabled = false;
        }
        if flags.read_only_mode {
            self.read_only_enabled = true;
        }
        self.metrics = flag_endpoint(
            self.metrics,
            flags.metrics_port,
            flags.metrics_address,
            DEFAULT_METRICS_PORT,
        );
        self.admin_server = flag_endpoint(
            self.admin_server,
            flags.admin_port,
            flags.admin_address,
            DEFAULT_ADMIN_PORT,
        );
        if let Some(n) = flags.snap_count {
            if n == 0 {
                return Err(flag_error("--snap-count", "0", "must be positive"));
            }
            self.snap_count = n;
        }
        if let Some(ms) = flags.container_check_interval_ms {
            self.container_check_interval = Duration::from_millis(ms.max(1));
        }
        if let Some(path) = &flags.jaas_config {
            self.jaas_config = Some(path.clone());
        }
        if let Some(digest) = &flags.super_digest {
            self.super_digest = Some(
                parse_super_digest(digest).map_err(|r| flag_error("--super-digest", digest, &r))?,
            );
        }
        if let Some(list) = &flags.peers {
            let origin = "command line (--peers)";
            let mut lines = Vec::new();
            for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                let Some((id, spec)) = item.split_once('=') else {
                    return Err(flag_error(
                        "--peers",
                        item,
                        "expected N=host:port[:port]...",
                    ));
                };
                lines.push((origin.to_string(), id.trim(), spec.trim()));
            }
            self.servers = parse_servers(origin, &lines)?;
        }
        if let Some(n) = flags.init_limit {
            self.init_limit = n;
        }
        if let Some(n) = flags.sync_limit {
            self.sync_limit = n;
        }
        if flags.config.is_none() {
            self.source = "command line".to_string();
        }
        Ok(())
    }

    /// Settles `server_id` from `--id`, else `dataDir/myid` (ZooKeeper's `setupMyId`), and checks
    /// it against the server list. With servers listed, the id is mandatory, except that a
    /// single listed participant is taken to be this server (ZooKeeper runs that standalone).
    /// This server's own line also supplies the client address, as in ZooKeeper's
    /// `setupClientPort`, unless `--port`/`--address` were given (those are applied before and
    /// win: the line only fills in what the flags left at its file/default value).
    fn resolve_server_id(&mut self, flag_id: Option<u64>) -> Result<(), ConfigError> {
        let myid = match read_myid(&self.data_dir) {
            // --id is authoritative; a broken myid next to it only deserves a warning.
            Err(error) if flag_id.is_some() => {
                tracing::warn!(%error, "ignoring dataDir/myid: --id given");
                None
            }
            other => other?,
        };
        if let (Some(flag), Some(file)) = (flag_id, myid) {
            if flag != file {
                tracing::warn!(flag, myid = file, "--id overrides dataDir/myid");
            }
        }
        if let Some(id) = flag_id {
            check_server_id(id).map_err(|reason| ConfigError::InvalidValue {
                origin: "command line".to_string(),
                key: "--id".to_string(),
                value: id.to_string(),
                reason,
            })?;
        }
        if self.servers.is_empty() {
            // Standalone: like ZooKeeper, ignore myid (a copied ZooKeeper dataDir may hold one,
            // and this data dir was bootstrapped with voters [server_id]; a new id would leave
            // the sole voter unable to elect itself). Only an explicit --id changes it.
            if let Some(id) = flag_id {
                self.server_id = id;
            } else if let Some(id) = myid {
                tracing::info!(myid = id, "no servers configured: standalone, myid ignored");
            }
            return Ok(());
        }
        let id = flag_id.or(myid);
        let participants = self
            .servers
            .iter()
            .filter(|s| s.role == PeerRole::Participant)
            .count();
        if participants == 0 {
            return Err(ConfigError::Inconsistent(
                "observers without participants is an invalid configuration".to_string(),
            ));
        }
        // ZooKeeper's warnings (QuorumPeerConfig.parseDynamicConfig).
        if participants == 2 {
            tracing::warn!("no server failure will be tolerated: you need at least 3 servers");
        } else if participants > 2 && participants % 2 == 0 {
            tracing::warn!(
                participants,
                "non-optimal configuration: consider an odd number of servers"
            );
        }
        let id = match id {
            Some(id) => id,
            None if self.servers.len() == 1 => self.servers[0].id,
            None => {
                return Err(ConfigError::MissingServerId {
                    data_dir: self.data_dir.clone(),
                })
            }
        };
        let Some(me) = self.servers.iter().find(|s| s.id == id).cloned() else {
            return Err(ConfigError::UnknownServerId {
                id,
                known: self.servers.iter().map(|s| s.id).collect(),
            });
        };
        if me.role != self.peer_type {
            tracing::warn!(
                id,
                server_list = ?me.role,
                peer_type = ?self.peer_type,
                "peerType does not match the server list; using the server list"
            );
            self.peer_type = me.role;
        }
        self.server_id = id;
        self.apply_own_client_address(&me)?;
        Ok(())
    }

    /// Takes the client port and address from this server's `;[host:]port` part.
    fn apply_own_client_address(&mut self, me: &ServerSpec) -> Result<(), ConfigError> {
        let Some(port) = me.client_port else {
            return Ok(());
        };
        self.client_port = port;
        if let Some(host) = &me.client_host {
            let address = match host.as_str() {
                "localhost" => IpAddr::from([127, 0, 0, 1]),
                other => other.parse().map_err(|_| ConfigError::InvalidValue {
                    origin: self.source.clone(),
                    key: format!("server.{}", me.id),
                    value: host.clone(),
                    reason: "the client address must be an IP address or localhost".to_string(),
                })?,
            };
            self.client_address = address;
        }
        Ok(())
    }

    /// Whether this configuration describes a replicated ensemble (more than one server).
    pub fn is_ensemble(&self) -> bool {
        self.servers.len() > 1
    }

    /// This server's own entry in the server list, if servers are listed.
    pub fn me(&self) -> Option<&ServerSpec> {
        self.servers.iter().find(|s| s.id == self.server_id)
    }

    /// The cluster id of the configured ensemble: see [`cluster_id`].
    pub fn cluster_id(&self) -> u64 {
        cluster_id(&self.servers)
    }

    /// Raft timing for this configuration: see [`raft_timing`].
    pub fn raft_timing(&self) -> RaftTiming {
        raft_timing(self.tick_time, self.sync_limit, self.min_session_timeout)
    }

    /// initLimit × tickTime: how long a new or restarted server may take to catch up with the
    /// leader (ZooKeeper's initial sync limit), e.g. before a reconfig gives up on a joiner.
    pub fn catch_up_timeout(&self) -> Duration {
        self.tick_time.saturating_mul(self.init_limit)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.tick_time.is_zero() {
            return Err(ConfigError::Inconsistent(
                "tickTime must be positive".into(),
            ));
        }
        if self.min_session_timeout > self.max_session_timeout {
            return Err(ConfigError::Inconsistent(format!(
                "minSessionTimeout ({} ms) is larger than maxSessionTimeout ({} ms)",
                self.min_session_timeout.as_millis(),
                self.max_session_timeout.as_millis()
            )));
        }
        if self.init_limit == 0 || self.sync_limit == 0 {
            return Err(ConfigError::Inconsistent(
                "initLimit and syncLimit must be positive".into(),
            ));
        }
        if self.jute_maxbuffer < 1024 {
            return Err(ConfigError::Inconsistent(
                "jute.maxbuffer must be at least 1024 bytes".into(),
            ));
        }
        if let Some(cap) = self.max_output_bytes {
            if cap < self.jute_maxbuffer + OUTPUT_SLACK {
                return Err(ConfigError::Inconsistent(format!(
                    "connection.maxOutputBytes ({cap}) must exceed jute.maxbuffer ({}) by at \
                     least {OUTPUT_SLACK} bytes: one largest reply must fit",
                    self.jute_maxbuffer
                )));
            }
        }
        Ok(())
    }

    /// The per-connection output cap in bytes: the configured one, else 4 MiB or room for two
    /// largest replies, whichever is more.
    pub fn output_cap(&self) -> usize {
        self.max_output_bytes.unwrap_or_else(|| {
            (4 << 20).max(
                self.jute_maxbuffer
                    .saturating_mul(2)
                    .saturating_add(OUTPUT_SLACK),
            )
        })
    }

    /// Queued output past which a connection stops reading requests: leaves room under the
    /// cap for one largest reply, so a client that reads slowly is slowed down, not closed.
    /// Never below half the cap, so a cap barely above jute.maxbuffer still reads at all.
    pub fn output_pause(&self) -> usize {
        let cap = self.output_cap();
        cap.saturating_sub(self.jute_maxbuffer.saturating_add(OUTPUT_SLACK))
            .max(cap / 2)
    }

    /// Whether a four-letter word may run.
    pub fn four_letter_allowed(&self, word: &str) -> bool {
        self.four_letter_whitelist
            .iter()
            .any(|w| w == "*" || w == word)
    }

    /// The session timeout granted for a requested one, in ms.
    pub fn negotiate_timeout(&self, requested_ms: i32) -> i32 {
        let min = self.min_session_timeout.as_millis() as i64;
        let max = self.max_session_timeout.as_millis() as i64;
        i64::from(requested_ms)
            .clamp(min, max)
            .min(i64::from(i32::MAX)) as i32
    }
}

fn parse_ms(value: &str) -> Result<Duration, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| "expected a positive number of milliseconds".to_string())
}

fn parse_size(value: &str) -> Result<usize, String> {
    let n = if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        usize::from_str_radix(hex, 16).ok()
    } else {
        value.parse().ok()
    };
    n.filter(|n| *n > 0)
        .ok_or_else(|| "expected a positive byte count".to_string())
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err("expected true or false".to_string()),
    }
}

fn parse_super_digest(value: &str) -> Result<String, String> {
    match value.split_once(':') {
        Some((user, digest)) if !user.is_empty() && !digest.is_empty() => Ok(value.to_string()),
        _ => Err("expected user:BASE64(SHA1(user:password))".to_string()),
    }
}

fn parse_whitelist(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

fn parse_ticks(value: &str) -> Result<u32, String> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| "expected a positive number of ticks".to_string())
}

/// Largest server id: ZooKeeper documents ids 1..=255, and raft reserves 0 for "nobody".
pub const MAX_SERVER_ID: u64 = 255;

fn check_server_id(id: u64) -> Result<(), String> {
    if (1..=MAX_SERVER_ID).contains(&id) {
        Ok(())
    } else {
        Err(format!("server ids must be in 1..={MAX_SERVER_ID}"))
    }
}

/// A server's part in the ensemble (ZooKeeper's `LearnerType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerRole {
    /// Votes and can lead (a Raft voter).
    Participant,
    /// Replicates and serves reads but never votes (a Raft learner).
    Observer,
}

impl PeerRole {
    /// Parses `participant` / `observer` as ZooKeeper does (trimmed, case-insensitive).
    pub fn parse(value: &str) -> Result<PeerRole, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "participant" => Ok(PeerRole::Participant),
            "observer" => Ok(PeerRole::Observer),
            _ => Err(format!(
                "unrecognised peer type {value:?} (participant or observer)"
            )),
        }
    }

    /// The spelling ZooKeeper writes in `/zookeeper/config`.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRole::Participant => "participant",
            PeerRole::Observer => "observer",
        }
    }
}

/// One ensemble member, from `server.N=host:peerPort[:electionPort][:role][;[clientHost:]clientPort]`.
///
/// ZooKeeper needs two server ports (quorum and election); rookery needs one peer port, the
/// first. The second is accepted and kept so `/zookeeper/config` can show the line as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// The N of `server.N`: the Raft node id.
    pub id: u64,
    /// Host of the peer address, without IPv6 brackets.
    pub host: String,
    /// The peer port: other servers dial `host:peer_port` to send Raft messages here.
    pub peer_port: u16,
    /// ZooKeeper's election port; unused by rookery, kept for display.
    pub election_port: Option<u16>,
    /// Voter or learner.
    pub role: PeerRole,
    /// Client host of the `;host:port` part; `None` when only a port was given (ZooKeeper then
    /// means 0.0.0.0).
    pub client_host: Option<String>,
    /// Client port of the `;[host:]port` part.
    pub client_port: Option<u16>,
}

/// ZooKeeper's wording of a malformed server line (`QuorumServer.wrongFormat`).
const WRONG_FORMAT: &str = "does not have the form host:port:port or host:port:port:type, \
                            optionally followed by ;port or ;host:port";

impl ServerSpec {
    /// Parses the value of a `server.N` line as ZooKeeper 3.8's `QuorumServer(sid, String)`
    /// does (one address; `|`-separated multi-addresses are refused). Also accepts
    /// `host:peerPort` with no election port, which rookery does not need.
    pub fn parse(id: u64, value: &str) -> Result<ServerSpec, String> {
        check_server_id(id)?;
        let value = value.trim();
        let halves: Vec<&str> = value.split(';').collect();
        if halves.len() > 2 {
            return Err(format!("{value} {WRONG_FORMAT}"));
        }
        let server = halves[0].trim();
        if server.contains('|') {
            return Err("multiple addresses per server (|) are not supported".to_string());
        }
        let parts = host_and_port(server)?;
        if !(2..=4).contains(&parts.len()) {
            return Err(format!("{value} {WRONG_FORMAT}"));
        }
        let host = parts[0].trim().to_string();
        if host.is_empty() {
            return Err(format!("{value}: empty host"));
        }
        let peer_port = parse_port(&parts[1])?;
        let election_port = parts.get(2).map(|p| parse_port(p)).transpose()?;
        if election_port == Some(peer_port) {
            return Err(format!(
                "quorum and election port must be different (server.{id})"
            ));
        }
        let role = parts
            .get(3)
            .map(|t| PeerRole::parse(t))
            .transpose()?
            .unwrap_or(PeerRole::Participant);
        let (client_host, client_port) = match halves.get(1) {
            None => (None, None),
            Some(client) => {
                let parts = host_and_port(client.trim())?;
                match parts.as_slice() {
                    [port] => (None, Some(parse_port(port)?)),
                    [host, port] if !host.is_empty() => {
                        (Some(host.clone()), Some(parse_port(port)?))
                    }
                    _ => return Err(format!("{value} {WRONG_FORMAT}")),
                }
            }
        };
        Ok(ServerSpec {
            id,
            host,
            peer_port,
            election_port,
            role,
            client_host,
            client_port,
        })
    }

    /// `host:peer_port`, with brackets around an IPv6 host: what a peer dials.
    pub fn peer_address(&self) -> String {
        format!("{}:{}", bracketed(&self.host), self.peer_port)
    }

    /// The line as ZooKeeper's `QuorumServer.toString` writes it in `/zookeeper/config`:
    /// `server.N=host:port:port:role[;clientHost:clientPort]`.
    pub fn zk_line(&self) -> String {
        let mut line = format!("server.{}={}", self.id, self.peer_address());
        if let Some(e) = self.election_port {
            line.push_str(&format!(":{e}"));
        }
        line.push(':');
        line.push_str(self.role.as_str());
        if let Some(port) = self.client_port {
            let host = self.client_host.as_deref().unwrap_or("0.0.0.0");
            line.push_str(&format!(";{}:{port}", bracketed(host)));
        }
        line
    }
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn parse_port(value: &str) -> Result<u16, String> {
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{value:?} is not a port"))
}

/// ZooKeeper's `ConfigUtils.getHostAndPort`: splits on `:`, except inside a leading `[ipv6]`.
fn host_and_port(s: &str) -> Result<Vec<String>, String> {
    let Some(rest) = s.strip_prefix('[') else {
        return Ok(s.split(':').map(str::to_string).collect());
    };
    let Some(close) = rest.find(']') else {
        return Err(format!("{s} starts with '[' but has no matching ']'"));
    };
    let host = &rest[..close];
    let after = &rest[close + 1..];
    if after.is_empty() {
        return Ok(vec![host.to_string()]);
    }
    let Some(ports) = after.strip_prefix(':') else {
        return Err(format!("{s}: expected ':' after ']'"));
    };
    if ports.is_empty() {
        return Err(format!("{s} doesn't have a port after colon"));
    }
    let mut parts = vec![host.to_string()];
    parts.extend(ports.split(':').map(str::to_string));
    Ok(parts)
}

/// Parses `(origin, N, value)` server entries into a list sorted by id, refusing duplicate
/// ids and duplicate peer addresses.
fn parse_servers(
    origin: &str,
    lines: &[(String, &str, &str)],
) -> Result<Vec<ServerSpec>, ConfigError> {
    let mut servers: BTreeMap<u64, ServerSpec> = BTreeMap::new();
    for (line_origin, id, value) in lines {
        let bad = |reason: String| ConfigError::InvalidValue {
            origin: line_origin.clone(),
            key: format!("server.{id}"),
            value: value.to_string(),
            reason,
        };
        let n: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad("the server id must be a number".to_string()))?;
        let spec = ServerSpec::parse(n, value).map_err(bad)?;
        if servers.insert(n, spec).is_some() {
            return Err(ConfigError::DuplicateServerId {
                origin: line_origin.clone(),
                id: n,
            });
        }
    }
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for s in servers.values() {
        let address = s.peer_address().to_ascii_lowercase();
        if let Some(first) = seen.insert(address.clone(), s.id) {
            return Err(ConfigError::DuplicatePeerAddress {
                origin: origin.to_string(),
                first,
                second: s.id,
                address,
            });
        }
    }
    Ok(servers.into_values().collect())
}

/// Reads `dataDir/myid` (ZooKeeper's `setupMyId`): `None` when the file does not exist.
pub fn read_myid(data_dir: &Path) -> Result<Option<u64>, ConfigError> {
    let path = data_dir.join("myid");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let first = text.lines().next().unwrap_or("").trim().to_string();
    let bad = |reason: String| ConfigError::BadMyId {
        path: path.clone(),
        content: first.clone(),
        reason,
    };
    let id: u64 = first.parse().map_err(|_| bad("not a number".to_string()))?;
    check_server_id(id).map_err(bad)?;
    Ok(Some(id))
}

/// A stable identity for an ensemble: the first 8 bytes (big-endian) of the SHA-1 of the
/// initial server list, one `id|role` line per server in id order. Addresses are left out on
/// purpose: ZooKeeper lets every member see the others at addresses of its own (`0.0.0.0` for
/// its own line, NAT, DNS aliases, proxies on the peer links), so only the ids and roles are
/// something every member of one ensemble computes identically. A server given a data dir or
/// peers of an ensemble with other members or roles is refused by the peer handshake and by
/// [`check_cluster_id`]. Stable across builds and platforms (no `std::hash`), since it is
/// written to disk.
pub fn cluster_id(servers: &[ServerSpec]) -> u64 {
    use sha1::{Digest, Sha1};
    let mut sorted: Vec<&ServerSpec> = servers.iter().collect();
    sorted.sort_by_key(|s| s.id);
    let mut hasher = Sha1::new();
    for s in sorted {
        hasher.update(format!("{}|{}\n", s.id, s.role.as_str()).as_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The cluster id of the first ensemble builds, which also hashed each server's host and peer
/// port (`id|host|peerPort|role`). Only recognised, never written: see
/// [`check_cluster_id_of`].
fn legacy_cluster_id(servers: &[ServerSpec]) -> u64 {
    use sha1::{Digest, Sha1};
    let mut sorted: Vec<&ServerSpec> = servers.iter().collect();
    sorted.sort_by_key(|s| s.id);
    let mut hasher = Sha1::new();
    for s in sorted {
        hasher.update(
            format!(
                "{}|{}|{}|{}\n",
                s.id,
                s.host.to_ascii_lowercase(),
                s.peer_port,
                s.role.as_str()
            )
            .as_bytes(),
        );
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// [`check_cluster_id`] for `config`'s server list, accepting a `cluster-id` file written by
/// the first ensemble builds (address-based, [`legacy_cluster_id`] of this same server list):
/// that is this ensemble, so the file is rewritten with today's id.
pub fn check_cluster_id_of(config: &Config) -> Result<ClusterIdCheck, ConfigError> {
    match check_cluster_id(&config.data_dir, config.cluster_id()) {
        Err(ConfigError::ClusterMismatch { path, stored, .. })
            if stored == legacy_cluster_id(&config.servers) =>
        {
            std::fs::remove_file(&path).map_err(|e| ConfigError::ClusterIdFile {
                path: path.clone(),
                reason: format!("cannot replace the old-format id: {e}"),
            })?;
            check_cluster_id(&config.data_dir, config.cluster_id())
        }
        other => other,
    }
}

/// The cluster id a server runs with: a joiner's (`initialClusterState=existing`) is the one
/// in its `cluster-id` file, copied from a member of the ensemble it joins (its own server
/// list, which includes itself, names no ensemble); anyone else's is checked by
/// [`check_cluster_id_of`].
pub fn effective_cluster_id(config: &Config) -> Result<u64, ConfigError> {
    if !config.join_existing {
        check_cluster_id_of(config)?;
        return Ok(config.cluster_id());
    }
    let path = config.data_dir.join(CLUSTER_ID_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::ClusterIdFile {
        path: path.clone(),
        reason: format!(
            "initialClusterState=existing needs the cluster-id file of a member of the ensemble \
             to join (copy it from that member's dataDir): {e}"
        ),
    })?;
    u64::from_str_radix(text.trim(), 16).map_err(|_| ConfigError::ClusterIdFile {
        path,
        reason: format!("expected 16 hex digits, found {:?}", text.trim()),
    })
}

/// What [`check_cluster_id`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterIdCheck {
    /// The data dir had no `cluster-id`; it now holds the given one (durably).
    Stored,
    /// The stored id equals the configured one.
    Matched,
}

/// Name of the file in dataDir holding the cluster id (16 hex digits and a newline).
pub const CLUSTER_ID_FILE: &str = "cluster-id";

/// Checks `dataDir/cluster-id` against `id`, or stores `id` there if the file is absent
/// (written to a temp file, fsynced, renamed, and the directory fsynced, so a crash leaves
/// either no file or the whole one). A different stored id is
/// [`ConfigError::ClusterMismatch`]: this data dir holds another ensemble's log. Call it at
/// start-up, before the Raft log is opened.
pub fn check_cluster_id(data_dir: &Path, id: u64) -> Result<ClusterIdCheck, ConfigError> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    let io = |what: &str, e: std::io::Error| ConfigError::ClusterIdFile {
        path: path.clone(),
        reason: format!("{what}: {e}"),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let stored =
                u64::from_str_radix(text.trim(), 16).map_err(|_| ConfigError::ClusterIdFile {
                    path: path.clone(),
                    reason: format!("expected 16 hex digits, found {:?}", text.trim()),
                })?;
            if stored == id {
                Ok(ClusterIdCheck::Matched)
            } else {
                Err(ConfigError::ClusterMismatch {
                    path,
                    stored,
                    configured: id,
                })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            std::fs::create_dir_all(data_dir).map_err(|e| io("cannot create dataDir", e))?;
            let tmp = data_dir.join(format!("{CLUSTER_ID_FILE}.tmp"));
            let mut file = std::fs::File::create(&tmp).map_err(|e| io("cannot create", e))?;
            file.write_all(format!("{id:016x}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| io("cannot write", e))?;
            drop(file);
            std::fs::rename(&tmp, &path).map_err(|e| io("cannot rename", e))?;
            std::fs::File::open(data_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("cannot sync dataDir", e))?;
            Ok(ClusterIdCheck::Stored)
        }
        Err(e) => Err(io("cannot read", e)),
    }
}

/// Raft timing derived from zoo.cfg: what the raft thread's `Config` and tick need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    /// The Raft logical clock period (`RaftOptions::tick_interval`).
    pub tick: Duration,
    /// `raft::Config::election_tick`: ticks of leader silence before a follower campaigns.
    pub election_ticks: usize,
    /// `raft::Config::heartbeat_tick`: ticks between the leader's heartbeats.
    pub heartbeat_ticks: usize,
}

impl RaftTiming {
    /// The configured election timeout (`election_ticks` × `tick`).
    pub fn election_timeout(&self) -> Duration {
        self.tick.saturating_mul(self.election_ticks as u32)
    }

    /// The longest time before a follower campaigns: raft-rs randomizes each timeout in
    /// `[election_ticks, 2 × election_ticks)`.
    pub fn max_election_timeout(&self) -> Duration {
        self.election_timeout().saturating_mul(2)
    }
}

/// Ticks per election timeout; one heartbeat per tick, so a follower campaigns only after
/// missing about ten heartbeats (etcd's ratio).
const ELECTION_TICKS: usize = 10;

/// Maps ZooKeeper's timing onto Raft's.
///
/// In ZooKeeper the leader pings followers every tickTime/2 and gives up on a silent quorum
/// after syncLimit × tickTime. Raft's counterpart of "the leader is gone" is the election
/// timeout, so the target is `E = syncLimit × tickTime`, with one rule on top: **a leader
/// change must fit well inside the smallest session timeout**, or every session could expire
/// during an ordinary failover. raft-rs draws each election timeout from `[E, 2E)`, so we
/// require `2E ≤ ½ · minSessionTimeout`, i.e. `E ≤ minSessionTimeout / 4`. With ZooKeeper's
/// defaults (tickTime 2000, syncLimit 5, minSessionTimeout 4000) that gives E = 1 s, a
/// 100 ms tick, 10 election ticks and 1 heartbeat tick: failover in 1–2 s, sessions ≥ 4 s.
///
/// The tick is `E / 10` (and never more than tickTime/2, ZooKeeper's ping period, nor less
/// than 1 ms); the heartbeat is one tick; election ticks are `E / tick` (≥ 10). initLimit is
/// not part of this: it bounds catch-up, see [`Config::catch_up_timeout`].
pub fn raft_timing(
    tick_time: Duration,
    sync_limit: u32,
    min_session_timeout: Duration,
) -> RaftTiming {
    let by_sync = tick_time.saturating_mul(sync_limit.max(1));
    let by_session = min_session_timeout / 4;
    let target = by_sync.min(by_session);
    let tick = (target / ELECTION_TICKS as u32)
        .min(tick_time / 2)
        .max(Duration::from_millis(1));
    let election_ticks = (target.as_micros() / tick.as_micros().max(1)) as usize;
    RaftTiming {
        tick,
        election_ticks: election_ticks.max(ELECTION_TICKS),
        heartbeat_ticks: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_zookeeper() {
        let config = Config::default();
        assert_eq!(config.client_port, 2181);
        assert_eq!(config.tick_time, Duration::from_millis(2000));
        assert_eq!(config.negotiate_timeout(1), 4000);
        assert_eq!(config.negotiate_timeout(1_000_000), 40000);
        assert_eq!(config.negotiate_timeout(10000), 10000);
        assert_eq!(config.jute_maxbuffer, 1_048_575);
        assert!(config.four_letter_allowed("srvr"));
        assert!(!config.four_letter_allowed("ruok"));
    }

    #[test]
    fn zoo_cfg_is_read_and_bad_values_are_errors() {
        let mut config = Config::default();
        let text = "# comment\ntickTime=500\ndataDir=/tmp/x\nclientPort=2999\n\
                    4lw.commands.whitelist=ruok, srvr\nextendedTypesEnabled=false\nbogusKey=1\n";
        config.apply_file(Path::new("zoo.cfg"), text).unwrap();
        assert_eq!(config.tick_time, Duration::from_millis(500));
        assert_eq!(config.min_session_timeout, Duration::from_millis(1000));
        assert_eq!(config.max_session_timeout, Duration::from_millis(10000));
        assert_eq!(config.client_port, 2999);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert!(config.four_letter_allowed("ruok"));
        assert!(!config.ttl_enabled);

        let mut config = Config::default();
        let err = config
            .apply_file(Path::new("zoo.cfg"), "clientPort=notaport\n")
            .unwrap_err();
        assert!(err.to_string().contains("clientPort"), "{err}");
        let err = config
            .apply_file(Path::new("zoo.cfg"), "tickTime\n")
            .unwrap_err();
        assert!(err.to_string().contains("key=value"), "{err}");
    }

    #[test]
    fn metrics_and_admin_server_keys_follow_zookeeper() {
        let mut config = Config::default();
        assert_eq!(config.metrics, None, "NullMetricsProvider by default");
        assert_eq!(config.admin_server, None, "off unless enabled");
        assert_eq!(config.admin_command_url, "/commands");
        config
            .apply_file(
                Path::new("zoo.cfg"),
                &format!("metricsProvider.className={PROMETHEUS_PROVIDER_CLASS}\nadmin.enableServer=true\n"),
            )
            .unwrap();
        // ZooKeeper's defaults: 0.0.0.0:7000 and 0.0.0.0:8080.
        assert_eq!(config.metrics, Some(SocketAddr::from(([0, 0, 0, 0], 7000))));
        assert_eq!(
            config.admin_server,
            Some(SocketAddr::from(([0, 0, 0, 0], 8080)))
        );

        let mut config = Config::default();
        let text = format!(
            "metricsProvider.className={PROMETHEUS_PROVIDER_CLASS}\nmetricsProvider.httpHost=127.0.0.1\n\
             metricsProvider.httpPort=7001\nmetricsProvider.exportJvmInfo=false\n\
             admin.enableServer=true\nadmin.serverAddress=127.0.0.1\nadmin.serverPort=9090\n\
             admin.commandURL=/zk/\n"
        );
        config.apply_file(Path::new("zoo.cfg"), &text).unwrap();
        assert_eq!(
            config.metrics,
            Some(SocketAddr::from(([127, 0, 0, 1], 7001)))
        );
        assert_eq!(
            config.admin_server,
            Some(SocketAddr::from(([127, 0, 0, 1], 9090)))
        );
        assert_eq!(config.admin_command_url, "/zk");

        // The port alone does nothing without the provider class / enableServer.
        let mut config = Config::default();
        config
            .apply_file(
                Path::new("zoo.cfg"),
                "metricsProvider.httpPort=7001\nadmin.serverPort=9090\nadmin.enableServer=false\n",
            )
            .unwrap();
        assert_eq!((config.metrics, config.admin_server), (None, None));

        for bad in [
            format!("metricsProvider.className={PROMETHEUS_PROVIDER_CLASS}\nmetricsProvider.httpPort=x\n"),
            "admin.enableServer=maybe\n".to_string(),
            "admin.commandURL=commands\n".to_string(),
        ] {
            let err = Config::default()
                .apply_file(Path::new("zoo.cfg"), &bad)
                .unwrap_err();
            assert!(err.to_string().contains("Provider") || err.to_string().contains("admin"), "{err}");
        }

        // Flags: a port or an address turns an endpoint on and overrides the file.
        let flags = Flags {
            metrics_port: Some(0),
            admin_address: Some(IpAddr::from([127, 0, 0, 1])),
            ..Flags::default()
        };
        let mut config = Config::default();
        config.apply_flags(&flags).unwrap();
        assert_eq!(config.metrics, Some(SocketAddr::from(([0, 0, 0, 0], 0))));
        assert_eq!(
            config.admin_server,
            Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
    }

    #[test]
    fn snap_size_limit_bounds_the_log_by_bytes() {
        let mut config = Config::default();
        assert_eq!(
            config.snap_size_limit_kb,
            4 * 1024 * 1024,
            "ZooKeeper's default"
        );
        config
            .apply_file(Path::new("zoo.cfg"), "snapSizeLimitInKb=1024\n")
            .unwrap();
        assert_eq!(config.snap_size_limit_kb, 1024);
        // As in ZooKeeper, zero or negative turns the byte bound off.
        config
            .apply_file(Path::new("zoo.cfg"), "snapSizeLimitInKb=-1\n")
            .unwrap();
        assert_eq!(config.snap_size_limit_kb, 0);
        let err = config
            .apply_file(Path::new("zoo.cfg"), "snapSizeLimitInKb=lots\n")
            .unwrap_err();
        assert!(err.to_string().contains("snapSizeLimitInKb"), "{err}");
    }

    #[test]
    fn sasl_keys() {
        let dir = std::env::temp_dir().join(format!("rookery-sasl-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let jaas = dir.join("jaas.conf");
        std::fs::write(
            &jaas,
            "Server { org.apache.zookeeper.server.auth.DigestLoginModule required user_bob=\"pw\"; };",
        )
        .unwrap();
        let mut config = Config::default();
        let text = format!(
            "authProvider.1=org.apache.zookeeper.server.auth.SASLAuthenticationProvider\n\
             authProvider.2=org.example.Other\njaasLoginConfig={}\n",
            jaas.display()
        );
        config.apply_file(Path::new("zoo.cfg"), &text).unwrap();
        assert!(config.sasl_provider);
        assert_eq!(config.sasl_super_user, None);
        config
            .apply_file(Path::new("zoo.cfg"), "superUser=root\n")
            .unwrap();
        assert_eq!(config.sasl_super_user.as_deref(), Some("root"));
        config.load_jaas().unwrap();
        assert_eq!(config.sasl_users.as_ref().unwrap().names(), vec!["bob"]);
        assert!(!format!("{config:?}").contains("\"pw\""));

        let mut config = Config {
            jaas_config: Some(dir.join("missing.conf")),
            ..Config::default()
        };
        assert!(matches!(config.load_jaas(), Err(ConfigError::Jaas(_))));
        assert!(!Config::default().sasl_provider);

        assert_eq!(
            jaas_from_jvmflags("-Xmx1g -Djava.security.auth.login.config=/a/b.conf -Dx=y"),
            Some(PathBuf::from("/a/b.conf"))
        );
        assert_eq!(jaas_from_jvmflags("-Xmx1g"), None);
    }

    #[test]
    fn admission_keys_are_read_and_checked() {
        let mut config = Config::default();
        assert_eq!(config.global_outstanding_limit, 1000);
        assert_eq!(config.max_cnxns, 0);
        assert_eq!(config.output_cap(), 4 << 20);
        assert!(config.output_pause() < config.output_cap());
        let text = "maxCnxns=7\nglobalOutstandingLimit=5\nconnection.maxOutputBytes=2097152\n";
        config.apply_file(Path::new("zoo.cfg"), text).unwrap();
        assert_eq!(config.max_cnxns, 7);
        assert_eq!(config.global_outstanding_limit, 5);
        assert_eq!(config.output_cap(), 2 << 20);
        assert_eq!(config.output_pause(), 1 << 20);
        config.check().unwrap();
        // A cap that a largest reply cannot fit in is refused.
        config.max_output_bytes = Some(config.jute_maxbuffer);
        assert!(config.check().is_err());
        assert!(config
            .apply_file(Path::new("zoo.cfg"), "globalOutstandingLimit=0\n")
            .is_err());
        // A larger jute.maxbuffer raises the derived cap.
        let config = Config {
            jute_maxbuffer: 8 << 20,
            ..Config::default()
        };
        assert!(config.output_cap() > 16 << 20);
    }

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("rookery-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("zoo.cfg");
        std::fs::write(&file, "clientPort=3000\ntickTime=1000\n").unwrap();
        let flags = Flags {
            config: Some(file),
            port: Some(4000),
            ..Flags::default()
        };
        let config = Config::load(&flags).unwrap();
        assert_eq!(config.client_port, 4000);
        assert_eq!(config.tick_time, Duration::from_millis(1000));
        let flags = Flags {
            min_session_timeout: Some(9000),
            max_session_timeout: Some(1000),
            ..Flags::default()
        };
        assert!(Config::load(&flags).is_err());
    }

    fn spec(id: u64, v: &str) -> ServerSpec {
        ServerSpec::parse(id, v).unwrap()
    }

    #[test]
    fn server_lines_in_every_zookeeper_form() {
        let s = spec(1, "zk1.example.com:2888:3888");
        assert_eq!(
            (s.host.as_str(), s.peer_port, s.election_port, s.role),
            ("zk1.example.com", 2888, Some(3888), PeerRole::Participant)
        );
        assert_eq!((s.client_host.as_deref(), s.client_port), (None, None));
        assert_eq!(s.peer_address(), "zk1.example.com:2888");

        let s = spec(2, "10.0.0.2:2888:3888:observer");
        assert_eq!(s.role, PeerRole::Observer);
        let s = spec(2, "10.0.0.2:2888:3888: Participant ");
        assert_eq!(s.role, PeerRole::Participant);

        // ;port alone means 0.0.0.0:port; ;host:port keeps the host.
        let s = spec(3, "h:2888:3888;2181");
        assert_eq!(
            (s.client_host.as_deref(), s.client_port),
            (None, Some(2181))
        );
        let s = spec(3, "h:2888:3888:participant;127.0.0.1:2182");
        assert_eq!(
            (s.client_host.as_deref(), s.client_port),
            (Some("127.0.0.1"), Some(2182))
        );

        // IPv6 literals in brackets, for the server and for the client part.
        let s = spec(4, "[2001:db8::1]:2888:3888:observer;[::1]:2181");
        assert_eq!(s.host, "2001:db8::1");
        assert_eq!(s.peer_address(), "[2001:db8::1]:2888");
        assert_eq!(s.role, PeerRole::Observer);
        assert_eq!(
            (s.client_host.as_deref(), s.client_port),
            (Some("::1"), Some(2181))
        );
        assert_eq!(
            s.zk_line(),
            "server.4=[2001:db8::1]:2888:3888:observer;[::1]:2181"
        );

        // rookery needs one peer port: host:port alone is accepted.
        let s = spec(5, "h:2888");
        assert_eq!((s.peer_port, s.election_port), (2888, None));
        assert_eq!(
            spec(6, "h:2888:3888;2181").zk_line(),
            "server.6=h:2888:3888:participant;0.0.0.0:2181"
        );
    }

    #[test]
    fn malformed_server_lines_are_refused_with_a_reason() {
        let cases = [
            ("h", "does not have the form"),
            ("h:1:2:observer:extra", "does not have the form"),
            ("h:2888:2888", "must be different"),
            ("h:2888:3888:leader", "unrecognised peer type"),
            ("h:port:3888", "is not a port"),
            ("h:0:3888", "is not a port"),
            ("h:2888:70000", "is not a port"),
            (":2888:3888", "empty host"),
            ("[::1:2888:3888", "no matching"),
            ("[::1]2888:3888", "expected ':'"),
            ("[::1]:", "port after colon"),
            ("::1:2888:3888", "does not have the form"),
            ("h:2888:3888;a:b:c", "does not have the form"),
            ("h:2888:3888;2181;2182", "does not have the form"),
            ("h:2888:3888;x", "is not a port"),
            ("a:1:2|b:1:2", "multiple addresses"),
        ];
        for (value, want) in cases {
            let err = ServerSpec::parse(1, value).unwrap_err();
            assert!(err.contains(want), "{value}: {err}");
        }
        assert!(ServerSpec::parse(0, "h:1:2")
            .unwrap_err()
            .contains("1..=255"));
        assert!(ServerSpec::parse(256, "h:1:2").is_err());
    }

    #[test]
    fn tls_keys_as_zookeeper_spells_them() {
        let tmp = tempfile::tempdir().unwrap();
        let c = load_in(
            tmp.path(),
            "secureClientPort=2281\nssl.keyStore.location=/k.pem\nssl.keyStore.type=PEM\n\
             zookeeper.ssl.trustStore.location=/ca.pem\nssl.clientAuth=want\n\
             ssl.enabledProtocols=TLSv1.3\nX509AuthenticationProvider.superUser=CN=admin\n",
            Flags::default(),
        )
        .unwrap();
        assert_eq!(c.secure_client_port, Some(2281));
        // secureClientPort without clientPort: TLS only, as ZooKeeper.
        assert!(!c.plain_port_enabled);
        assert!(c.x509_provider);
        assert_eq!(c.client_tls.key_store.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(
            c.client_tls.trust_store.as_deref(),
            Some(Path::new("/ca.pem"))
        );
        assert_eq!(
            c.client_tls.client_auth,
            crate::server::tls::ClientAuth::Want
        );
        assert_eq!(c.client_tls.super_user.as_deref(), Some("CN=admin"));
        let both = load_in(
            tmp.path(),
            "clientPort=2181\nsecureClientPort=2281\nssl.keyStore.location=/k.pem\n",
            Flags::default(),
        )
        .unwrap();
        assert!(both.plain_port_enabled);
        let bad = load_in(
            tmp.path(),
            "secureClientPort=2281\nssl.clientAuth=sometimes\n",
            Flags::default(),
        );
        assert!(bad.unwrap_err().to_string().contains("ssl.clientAuth"));
        // Without TLS, x509 is registered only by its authProvider line.
        let plain = load_in(
            tmp.path(),
            "authProvider.2=org.apache.zookeeper.server.auth.X509AuthenticationProvider\n",
            Flags::default(),
        )
        .unwrap();
        assert!(plain.x509_provider && plain.secure_client_port.is_none());
        let quorum = load_in(
            tmp.path(),
            "sslQuorum=true\nssl.quorum.keyStore.location=/n.pem\n\
             zookeeper.ssl.quorum.trustStore.location=/ca.pem\nssl.quorum.hostnameVerification=false\n",
            Flags::default(),
        )
        .unwrap();
        assert!(quorum.ssl_quorum && !quorum.quorum_hostname_verification);
        assert_eq!(
            quorum.quorum_tls.key_store.as_deref(),
            Some(Path::new("/n.pem"))
        );
        assert_eq!(
            quorum.quorum_tls.trust_store.as_deref(),
            Some(Path::new("/ca.pem"))
        );
        // The quorum keys do not touch the client port's.
        assert_eq!(
            quorum.client_tls,
            crate::server::tls::TlsSettings::default()
        );
    }

    fn load_in(dir: &Path, cfg: &str, flags: Flags) -> Result<Config, ConfigError> {
        let file = dir.join("zoo.cfg");
        // Never look for myid in the working directory's ./data.
        let cfg = if cfg.contains("dataDir") {
            cfg.to_string()
        } else {
            format!("dataDir={}\n{cfg}", dir.join("none").display())
        };
        std::fs::write(&file, cfg).unwrap();
        Config::load(&Flags {
            config: Some(file),
            ..flags
        })
    }

    fn ensemble_cfg(dir: &Path) -> String {
        format!(
            "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort=2181\n\
             server.1=127.0.0.1:2888:3888\nserver.2=127.0.0.2:2888:3888;2182\n\
             server.3=127.0.0.3:2888:3888:observer;127.0.0.3:2183\npeerType=observer\n",
            dir.display()
        )
    }

    #[test]
    fn myid_selects_this_server_and_its_client_address() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("myid"), "3\n").unwrap();
        let c = load_in(tmp.path(), &ensemble_cfg(tmp.path()), Flags::default()).unwrap();
        assert_eq!(c.server_id, 3);
        assert!(c.is_ensemble());
        assert_eq!(
            c.servers.iter().map(|s| s.id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(c.me().map(|s| s.role), Some(PeerRole::Observer));
        assert_eq!(c.peer_type, PeerRole::Observer);
        assert_eq!(c.client_port, 2183);
        assert_eq!(c.client_address, IpAddr::from([127, 0, 0, 3]));

        // --id overrides myid; server 2's ";2182" sets only the port.
        let flags = Flags {
            id: Some(2),
            ..Flags::default()
        };
        let c = load_in(tmp.path(), &ensemble_cfg(tmp.path()), flags).unwrap();
        assert_eq!((c.server_id, c.client_port), (2, 2182));
        // peerType=observer disagrees with server 2's line: the line wins.
        assert_eq!(c.peer_type, PeerRole::Participant);
    }

    #[test]
    fn missing_bad_or_unlisted_ids_are_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = ensemble_cfg(tmp.path());
        let err = load_in(tmp.path(), &cfg, Flags::default()).unwrap_err();
        assert!(matches!(err, ConfigError::MissingServerId { .. }), "{err}");
        assert!(err.to_string().contains("myid"), "{err}");

        std::fs::write(tmp.path().join("myid"), "7\n").unwrap();
        let err = load_in(tmp.path(), &cfg, Flags::default()).unwrap_err();
        assert!(
            matches!(&err, ConfigError::UnknownServerId { id: 7, known } if known == &[1, 2, 3]),
            "{err}"
        );

        std::fs::write(tmp.path().join("myid"), "one\n").unwrap();
        let err = load_in(tmp.path(), &cfg, Flags::default()).unwrap_err();
        assert!(matches!(err, ConfigError::BadMyId { .. }), "{err}");
        std::fs::write(tmp.path().join("myid"), "0").unwrap();
        let err = load_in(tmp.path(), &cfg, Flags::default()).unwrap_err();
        assert!(matches!(err, ConfigError::BadMyId { .. }), "{err}");

        let flags = Flags {
            id: Some(0),
            ..Flags::default()
        };
        let err = load_in(tmp.path(), &cfg, flags).unwrap_err();
        assert!(err.to_string().contains("--id"), "{err}");
        let flags = Flags {
            id: Some(1),
            ..Flags::default()
        };
        assert_eq!(load_in(tmp.path(), &cfg, flags).unwrap().server_id, 1);
    }

    #[test]
    fn duplicate_ids_and_addresses_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        // load_in puts a dataDir line first: server.01 is on line 4.
        let dup = "server.1=a:2888:3888\nserver.2=b:2888:3888\nserver.01=c:2888:3888\n";
        let err = load_in(tmp.path(), dup, Flags::default()).unwrap_err();
        assert!(
            matches!(&err, ConfigError::DuplicateServerId { id: 1, origin } if origin.ends_with(":4")),
            "{err}"
        );
        let same = "server.1=a:2888:3888\nserver.2=A:2888:3889\n";
        let err = load_in(tmp.path(), same, Flags::default()).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::DuplicatePeerAddress {
                    first: 1,
                    second: 2,
                    ..
                }
            ),
            "{err}"
        );
        let err = load_in(tmp.path(), "server.x=a:1:2\n", Flags::default()).unwrap_err();
        assert!(err.to_string().contains("server.x"), "{err}");
        let only_observers = "server.1=a:1:2:observer\nserver.2=b:1:2:observer\n";
        std::fs::write(tmp.path().join("myid"), "1").unwrap();
        let err = load_in(tmp.path(), only_observers, Flags::default()).unwrap_err();
        assert!(
            err.to_string().contains("observers without participants"),
            "{err}"
        );
        let err = load_in(tmp.path(), "peerType=leader\n", Flags::default()).unwrap_err();
        assert!(err.to_string().contains("peerType"), "{err}");
        let err = load_in(tmp.path(), "syncLimit=0\n", Flags::default()).unwrap_err();
        assert!(err.to_string().contains("syncLimit"), "{err}");
    }

    #[test]
    fn peers_flag_replaces_the_server_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let flags = Flags {
            id: Some(2),
            peers: Some(
                "1=127.0.0.1:7001, 2=127.0.0.1:7002:8002;127.0.0.1:9002,3=[::1]:7003".into(),
            ),
            init_limit: Some(4),
            sync_limit: Some(2),
            ..Flags::default()
        };
        let c = load_in(tmp.path(), &ensemble_cfg(tmp.path()), flags).unwrap();
        assert_eq!(c.server_id, 2);
        assert_eq!(
            c.servers
                .iter()
                .map(ServerSpec::peer_address)
                .collect::<Vec<_>>(),
            ["127.0.0.1:7001", "127.0.0.1:7002", "[::1]:7003"]
        );
        assert_eq!(c.client_port, 9002);
        assert_eq!((c.init_limit, c.sync_limit), (4, 2));
        assert_eq!(c.catch_up_timeout(), Duration::from_secs(8));

        let flags = Flags {
            id: Some(1),
            peers: Some("1=a:1:2,1=b:1:2".into()),
            ..Flags::default()
        };
        let err = load_in(tmp.path(), "", flags).unwrap_err();
        assert!(
            matches!(err, ConfigError::DuplicateServerId { id: 1, .. }),
            "{err}"
        );
        let flags = Flags {
            peers: Some("a:1:2".into()),
            ..Flags::default()
        };
        assert!(load_in(tmp.path(), "", flags).is_err());
    }

    #[test]
    fn one_listed_server_needs_no_myid_and_no_servers_means_standalone() {
        let tmp = tempfile::tempdir().unwrap();
        let c = load_in(
            tmp.path(),
            "server.4=127.0.0.1:2888:3888\n",
            Flags::default(),
        )
        .unwrap();
        assert_eq!(c.server_id, 4);
        assert!(!c.is_ensemble());
        let c = load_in(tmp.path(), "clientPort=2999\n", Flags::default()).unwrap();
        assert_eq!(c.server_id, 1);
        assert!(c.servers.is_empty());
        // A stray myid does not renumber a standalone server (its group has voters [1]).
        std::fs::write(tmp.path().join("myid"), "3\n").unwrap();
        let cfg = format!("dataDir={}\n", tmp.path().display());
        assert_eq!(
            load_in(tmp.path(), &cfg, Flags::default())
                .unwrap()
                .server_id,
            1
        );
        let c = load_in(
            tmp.path(),
            "reconfigEnabled=true\nstandaloneEnabled=false\nreadonlymode.enabled=true\n",
            Flags::default(),
        )
        .unwrap();
        assert!(c.reconfig_enabled && !c.standalone_enabled && c.read_only_enabled);
    }

    #[test]
    fn cluster_id_depends_on_members_and_roles_not_on_addresses() {
        let a = vec![spec(1, "a:1:2"), spec(2, "b:1:2"), spec(3, "c:1:2")];
        let reordered = vec![spec(3, "C:1:9;2181"), spec(1, "a:1:2"), spec(2, "b:1:2")];
        assert_eq!(cluster_id(&a), cluster_id(&reordered));
        // Each member may see the others at addresses of its own (0.0.0.0 for itself, proxies).
        let other_view = vec![spec(1, "0.0.0.0:1:2"), spec(2, "b:7:2"), spec(3, "d:5:2")];
        assert_eq!(cluster_id(&a), cluster_id(&other_view));
        let observer = vec![
            spec(1, "a:1:2"),
            spec(2, "b:1:2"),
            spec(3, "c:1:2:observer"),
        ];
        let fewer = vec![spec(1, "a:1:2"), spec(2, "b:1:2")];
        let other_ids = vec![spec(1, "a:1:2"), spec(2, "b:1:2"), spec(4, "c:1:2")];
        for other in [observer, fewer, other_ids] {
            assert_ne!(cluster_id(&a), cluster_id(&other));
        }
        // Pinned (SHA-1 of "1|participant\n2|participant\n3|participant\n"): the id is stored
        // on disk and sent by peers, so it must never change between builds.
        assert_eq!(cluster_id(&a), 0x1bb5_958c_00f9_c694);
    }

    #[test]
    fn an_old_address_based_cluster_id_file_is_upgraded() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = Config {
            data_dir: tmp.path().to_path_buf(),
            servers: vec![spec(1, "a:1:2"), spec(2, "b:1:2"), spec(3, "c:1:2")],
            ..Config::default()
        };
        let legacy = legacy_cluster_id(&c.servers);
        std::fs::write(tmp.path().join(CLUSTER_ID_FILE), format!("{legacy:016x}\n")).unwrap();
        assert_eq!(check_cluster_id_of(&c).unwrap(), ClusterIdCheck::Stored);
        assert_eq!(check_cluster_id_of(&c).unwrap(), ClusterIdCheck::Matched);
        // Another ensemble's id is still refused.
        c.servers.pop();
        assert!(matches!(
            check_cluster_id_of(&c),
            Err(ConfigError::ClusterMismatch { .. })
        ));
    }

    #[test]
    fn cluster_id_file_is_stored_then_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        assert_eq!(
            check_cluster_id(&dir, 0xabc).unwrap(),
            ClusterIdCheck::Stored
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(CLUSTER_ID_FILE)).unwrap(),
            "0000000000000abc\n"
        );
        assert!(!dir.join("cluster-id.tmp").exists());
        assert_eq!(
            check_cluster_id(&dir, 0xabc).unwrap(),
            ClusterIdCheck::Matched
        );
        let err = check_cluster_id(&dir, 0xdef).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::ClusterMismatch {
                    stored: 0xabc,
                    configured: 0xdef,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("another") || err.to_string().contains("belongs"));
        std::fs::write(dir.join(CLUSTER_ID_FILE), "garbage").unwrap();
        let err = check_cluster_id(&dir, 0xabc).unwrap_err();
        assert!(matches!(err, ConfigError::ClusterIdFile { .. }), "{err}");
    }

    #[test]
    fn raft_timing_keeps_failover_inside_half_the_minimum_session_timeout() {
        // ZooKeeper defaults: tickTime 2000, syncLimit 5, minSessionTimeout 4000.
        let t = raft_timing(Duration::from_millis(2000), 5, Duration::from_millis(4000));
        assert_eq!(
            t,
            RaftTiming {
                tick: Duration::from_millis(100),
                election_ticks: 10,
                heartbeat_ticks: 1
            }
        );
        assert_eq!(t.max_election_timeout(), Duration::from_millis(2000));

        // syncLimit binds when it is the smaller bound.
        let t = raft_timing(Duration::from_millis(100), 3, Duration::from_secs(60));
        assert_eq!(t.election_timeout(), Duration::from_millis(300));
        assert_eq!(t.tick, Duration::from_millis(30));

        // The e2e tests' tickTime 500 / min session 1 s: elections must finish within 500 ms.
        let t = raft_timing(Duration::from_millis(500), 5, Duration::from_millis(1000));
        assert!(
            t.max_election_timeout() <= Duration::from_millis(500),
            "{t:?}"
        );

        for tick_ms in [1u64, 10, 50, 200, 500, 2000, 10_000] {
            for sync in [1u32, 2, 5, 10, 100] {
                for min_mult in [2u32, 3, 10, 20] {
                    let tick = Duration::from_millis(tick_ms);
                    let min_session = tick * min_mult;
                    let t = raft_timing(tick, sync, min_session);
                    assert!(t.election_ticks > t.heartbeat_ticks && t.heartbeat_ticks >= 1);
                    assert!(t.election_ticks >= 10, "{t:?}");
                    assert!(!t.tick.is_zero());
                    assert!(
                        t.tick <= tick / 2 || t.tick == Duration::from_millis(1),
                        "{t:?}"
                    );
                    if min_session >= Duration::from_millis(40) {
                        assert!(
                            t.max_election_timeout() <= min_session / 2,
                            "{tick_ms} {sync} {min_mult}: {t:?}"
                        );
                    }
                    assert!(
                        t.election_timeout() <= tick * sync.max(1)
                            || t.tick == Duration::from_millis(1),
                        "{t:?}"
                    );
                }
            }
        }
        let c = Config::default();
        assert_eq!(c.raft_timing().election_timeout(), Duration::from_secs(1));
    }
}
