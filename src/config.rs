//! Server configuration: built-in defaults, then a zoo.cfg-compatible file, then command-line
//! flags, each overriding the one before.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key has a value that does not parse or is out of range.
    #[error("{origin}: invalid value {value:?} for {key}: {reason}")]
    InvalidValue {
        /// File and line, or "command line": where to fix it.
        origin: String,
        /// The key or flag.
        key: String,
        /// The value given.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// Values that parse but contradict each other.
    #[error("{0}")]
    Inconsistent(String),
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
    /// See `min_session_timeout`.
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
    /// Period of the container/TTL reaper.
    pub container_check_interval: Duration,
    /// The superuser's digest, whose holder bypasses every ACL.
    pub super_digest: Option<String>,
    /// This server's id in the Raft group (1 when standalone).
    pub server_id: u64,
    /// Where the configuration came from, for the `conf` four-letter word.
    pub source: String,
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
            container_check_interval: Duration::from_secs(60),
            super_digest: None,
            server_id: 1,
            source: "defaults".to_string(),
        }
    }
}

/// Room for reply headers and framing beside a jute.maxbuffer-sized payload.
const OUTPUT_SLACK: usize = 64 * 1024;

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
    "znode.container.checkIntervalMs",
    "superDigest",
    "DigestAuthenticationProvider.superDigest",
    "zookeeper.DigestAuthenticationProvider.superDigest",
    "initLimit",
    "syncLimit",
    "admin.enableServer",
];

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
        config.check()?;
        Ok(config)
    }

    /// Applies zoo.cfg `key=value` lines. Unknown keys get a warning, bad values an error.
    pub fn apply_file(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let origin = path.display().to_string();
        let mut entries = BTreeMap::new();
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
            entries.insert(key.trim().to_string(), value.trim().to_string());
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
                "znode.container.checkIntervalMs" => {
                    self.container_check_interval = parse_ms(value).map_err(|r| bad(&r))?
                }
                "superDigest"
                | "DigestAuthenticationProvider.superDigest"
                | "zookeeper.DigestAuthenticationProvider.superDigest" => {
                    self.super_digest = Some(parse_super_digest(value).map_err(|r| bad(&r))?)
                }
                other if KNOWN_KEYS.contains(&other) => {
                    tracing::info!(
                        key = other,
                        "config key accepted and ignored in standalone mode"
                    )
                }
                other => tracing::warn!(key = other, file = %origin, "unknown config key ignored"),
            }
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

    fn apply_flags(&mut self, flags: &Flags) -> Result<(), ConfigError> {
        let flag_error = |key: &str, value: &str, reason: &str| ConfigError::InvalidValue {
            origin: "command line".to_string(),
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if let Some(port) = flags.port {
            self.client_port = port;
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
        if let Some(n) = flags.snap_count {
            if n == 0 {
                return Err(flag_error("--snap-count", "0", "must be positive"));
            }
            self.snap_count = n;
        }
        if let Some(ms) = flags.container_check_interval_ms {
            self.container_check_interval = Duration::from_millis(ms.max(1));
        }
        if let Some(digest) = &flags.super_digest {
            self.super_digest = Some(
                parse_super_digest(digest).map_err(|r| flag_error("--super-digest", digest, &r))?,
            );
        }
        if flags.config.is_none() {
            self.source = "command line".to_string();
        }
        Ok(())
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
}
