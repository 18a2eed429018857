//! Shared harness for the end-to-end tests.
//!
//! Every test talks to a REAL server process on a free loopback port:
//!
//! * default: the `rookery` binary built by cargo (`CARGO_BIN_EXE_rookery`; the environment
//!   variable `ROOKERY_BIN` overrides it);
//! * `E2E_TARGET=zk`: Apache ZooKeeper 3.8 from the Debian `zookeeper` package
//!   (`/usr/share/java/zookeeper.jar`, OpenJDK), started standalone with an equivalent
//!   configuration. Use it to re-verify that the assertions encode true ZooKeeper behaviour:
//!
//!   ```text
//!   E2E_TARGET=zk cargo test --test 'e2e_*' -- --test-threads=2
//!   ```
//!
//! Servers are killed by PID on `Drop` (SIGTERM, then SIGKILL). Each server is also guarded by a
//! tiny `sh` watchdog that SIGKILLs it once the test process is gone, so that servers shared
//! through a `static` (never dropped) or left behind by an aborted test do not leak.
#![allow(dead_code)]

pub mod bulk;
pub mod cluster;
pub mod ledger;
pub mod proxy;
pub mod raw;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use zookeeper_client as zk;

/// `super:superpw`; digest = base64(sha1("super:superpw")).
pub const SUPER_USER: &str = "super";
pub const SUPER_PASSWORD: &str = "superpw";
pub const SUPER_DIGEST: &str = "super:g9oN2HttPfn8MMWJZ2r45Np/LIA=";
/// `alice:alicepw` -> digest id used in digest ACLs.
pub const ALICE_AUTH: &[u8] = b"alice:alicepw";
pub const ALICE_ID: &str = "alice:mmRnm3Q742LDeHiWvW5mAKUPIhY=";
/// `bob:bobpw`
pub const BOB_AUTH: &[u8] = b"bob:bobpw";
pub const BOB_ID: &str = "bob:0ezhUayTjEymfNB3K9C0+wkMLMo=";

/// Tick time of the servers shared by the test files. Session timeouts are negotiated into
/// [2 x tick, 20 x tick] = [1000 ms, 10000 ms].
pub const TICK_MS: u64 = 500;
/// Upper bound for a whole test (each test body runs inside `within(TEST_BOUND_SECS, ..)`).
pub const TEST_BOUND_SECS: u64 = 120;
/// Container / TTL reaper interval of the shared servers.
pub const CONTAINER_CHECK_MS: u64 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Rookery,
    ZooKeeper,
}

pub fn target() -> Target {
    match std::env::var("E2E_TARGET").as_deref() {
        Ok("zk") | Ok("zookeeper") => Target::ZooKeeper,
        Ok("") | Ok("rookery") | Err(_) => Target::Rookery,
        Ok(other) => panic!("unknown E2E_TARGET={other:?} (expected `zk` or `rookery`)"),
    }
}

pub fn is_zk() -> bool {
    target() == Target::ZooKeeper
}

#[derive(Clone, Debug)]
pub struct ServerOpts {
    pub tick_time_ms: u64,
    pub container_check_interval_ms: u64,
    pub four_lw_whitelist: String,
    pub ttl_enabled: bool,
    pub super_digest: Option<String>,
    /// Extra zoo.cfg `key=value` lines, given to both targets (rookery reads them from a
    /// zoo.cfg passed with `--config`; ZooKeeper from its zoo.cfg, and `jute.maxbuffer`, a
    /// Java system property there, also as `-Djute.maxbuffer`).
    pub extra_cfg: Vec<(String, String)>,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            tick_time_ms: TICK_MS,
            container_check_interval_ms: CONTAINER_CHECK_MS,
            four_lw_whitelist: "*".to_string(),
            ttl_enabled: true,
            super_digest: Some(SUPER_DIGEST.to_string()),
            extra_cfg: Vec::new(),
        }
    }
}

/// Picks a currently free loopback port (racy by nature, good enough for tests).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

pub struct TestServer {
    pub opts: ServerOpts,
    /// Which server this is (E2E_TARGET's, unless started with `start_as`).
    pub target: Target,
    pub port: u16,
    data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    child: std::sync::Mutex<Option<(Child, Child)>>,
    starts: std::sync::atomic::AtomicU32,
}

fn rookery_bin() -> String {
    // ROOKERY_BIN overrides the binary cargo built for this test run (e.g. a release build).
    std::env::var("ROOKERY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_rookery").to_string())
}

impl TestServer {
    /// Starts a fresh server (own data dir, free port) and waits until it serves.
    pub fn start(opts: ServerOpts) -> TestServer {
        TestServer::start_as(target(), opts)
    }

    /// [`TestServer::start`] of a given target, whatever E2E_TARGET says (side-by-side tests).
    pub fn start_as(target: Target, opts: ServerOpts) -> TestServer {
        let tmp = tempfile::Builder::new()
            .prefix("rookery-e2e-")
            .tempdir()
            .expect("tempdir");
        let data_dir = tmp.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let server = TestServer {
            opts,
            target,
            port: free_port(),
            data_dir,
            _tmp: Some(tmp),
            child: std::sync::Mutex::new(None),
            starts: Default::default(),
        };
        server.spawn_and_wait(false);
        server
    }

    /// Server shared by all tests of one test binary: started once, never dropped; its
    /// watchdog kills it (and removes its data dir) when the test process exits.
    pub fn shared() -> &'static TestServer {
        static SHARED: OnceLock<TestServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            let tmp = tempfile::Builder::new()
                .prefix("rookery-e2e-shared-")
                .tempdir()
                .expect("tempdir");
            let dir = tmp.keep();
            let data_dir = dir.join("data");
            std::fs::create_dir_all(&data_dir).unwrap();
            let server = TestServer {
                opts: ServerOpts::default(),
                target: target(),
                port: free_port(),
                data_dir,
                _tmp: None,
                child: std::sync::Mutex::new(None),
                starts: Default::default(),
            };
            server.spawn_and_wait(true);
            server
        })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn base_dir(&self) -> PathBuf {
        self.data_dir.parent().unwrap().to_path_buf()
    }

    pub fn log_path(&self) -> PathBuf {
        self.base_dir().join("server.log")
    }

    fn command(&self) -> Command {
        let o = &self.opts;
        match self.target {
            Target::Rookery => {
                let mut c = Command::new(rookery_bin());
                c.arg("--port")
                    .arg(self.port.to_string())
                    .arg("--address")
                    .arg("127.0.0.1")
                    .arg("--data-dir")
                    .arg(&self.data_dir)
                    .arg("--tick-time")
                    .arg(o.tick_time_ms.to_string())
                    .arg("--4lw-whitelist")
                    .arg(&o.four_lw_whitelist)
                    .arg("--container-check-interval-ms")
                    .arg(o.container_check_interval_ms.to_string())
                    .arg("--max-client-cnxns")
                    .arg("0");
                if let Some(d) = &o.super_digest {
                    c.arg("--super-digest").arg(d);
                }
                if !o.ttl_enabled {
                    c.arg("--no-ttl");
                }
                if !o.extra_cfg.is_empty() {
                    let cfg = self.base_dir().join("rookery.cfg");
                    let text: String = o
                        .extra_cfg
                        .iter()
                        .map(|(k, v)| format!("{k}={v}\n"))
                        .collect();
                    std::fs::write(&cfg, text).unwrap();
                    c.arg("--config").arg(cfg);
                }
                c
            }
            Target::ZooKeeper => {
                let base = self.base_dir();
                let cfg = base.join("zoo.cfg");
                let log4j = base.join("log4j.properties");
                std::fs::write(
                    &cfg,
                    format!(
                        "tickTime={}\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\n\
                         clientPortAddress=127.0.0.1\n4lw.commands.whitelist={}\nmaxClientCnxns=0\n\
                         admin.enableServer=false\nextendedTypesEnabled={}\n",
                        o.tick_time_ms,
                        self.data_dir.display(),
                        self.port,
                        o.four_lw_whitelist,
                        o.ttl_enabled
                    ) + &o
                        .extra_cfg
                        .iter()
                        .map(|(k, v)| format!("{k}={v}\n"))
                        .collect::<String>(),
                )
                .unwrap();
                std::fs::write(
                    &log4j,
                    "log4j.rootLogger=INFO, CONSOLE\n\
                     log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n\
                     log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n\
                     log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] - %m%n\n",
                )
                .unwrap();
                let mut c = Command::new("java");
                c.arg("-Xmx256m")
                    .arg("-XX:+UseSerialGC")
                    .arg("-XX:TieredStopAtLevel=1")
                    .arg("-Xshare:auto")
                    .arg("-Dzookeeper.admin.enableServer=false")
                    .arg(format!("-Dlog4j.configuration=file:{}", log4j.display()))
                    .arg(format!(
                        "-Dzookeeper.extendedTypesEnabled={}",
                        o.ttl_enabled
                    ))
                    .arg(format!(
                        "-Dznode.container.checkIntervalMs={}",
                        o.container_check_interval_ms
                    ))
                    .arg("-Dznode.container.maxPerMinute=100000");
                for (k, v) in &o.extra_cfg {
                    if k == "jute.maxbuffer" {
                        c.arg(format!("-Djute.maxbuffer={v}"));
                    }
                }
                if let Some(d) = &o.super_digest {
                    c.arg(format!(
                        "-Dzookeeper.DigestAuthenticationProvider.superDigest={d}"
                    ));
                }
                c.arg("-cp")
                    .arg(
                        // servlet-api: the AdminServer's Jetty needs it when a test enables
                        // it (admin.enableServer=true in extra_cfg).
                        "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:\
                         /usr/share/java/log4j-1.2.jar:/usr/share/java/servlet-api.jar",
                    )
                    .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                    .arg(&cfg);
                c
            }
        }
    }

    fn spawn_and_wait(&self, remove_dir_on_exit: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open log");
        let n = self
            .starts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        writeln!(&log, "===== start #{n} =====").ok();
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn server ({:?}): {e}", self.target));
        let rm = if remove_dir_on_exit {
            format!("rm -rf '{}'", self.base_dir().display())
        } else {
            String::new()
        };
        let watchdog = spawn_watchdog(child.id(), &rm);
        // Wait until it serves: `ruok` -> `imok` (plus `srvr` shows a Mode for ZooKeeper, whose
        // `ruok` answers before the database is loaded).
        let zk = self.target == Target::ZooKeeper;
        let limit = if zk {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(30)
        };
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let _ = kill_child(watchdog);
                panic!(
                    "server exited during startup with {status}; log:\n{}",
                    self.log_tail(60)
                );
            }
            let ready = match four_letter_word(self.port, "ruok") {
                Ok(s) if s == "imok" => {
                    !zk || four_letter_word(self.port, "srvr")
                        .map(|s| s.contains("Mode:"))
                        .unwrap_or(false)
                }
                _ => false,
            };
            if ready {
                break;
            }
            if Instant::now() > deadline {
                let _ = kill_child(child);
                let _ = kill_child(watchdog);
                panic!(
                    "server not ready on port {} within {limit:?}; log:\n{}",
                    self.port,
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        *self.child.lock().unwrap() = Some((child, watchdog));
    }

    /// The server process's pid (for /proc), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap()
            .as_ref()
            .map(|(child, _)| child.id())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let s = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let v: Vec<&str> = s.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// Graceful stop: SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&self) {
        if let Some((child, watchdog)) = self.child.lock().unwrap().take() {
            terminate(child, watchdog, Duration::from_secs(10));
        }
    }

    /// Crash: SIGKILL.
    pub fn kill9(&self) {
        if let Some((child, watchdog)) = self.child.lock().unwrap().take() {
            let _ = kill_child(child);
            let _ = kill_child(watchdog);
        }
    }

    /// Starts the server again on the same port and data dir (after `stop` or `kill9`).
    pub fn start_again(&self) {
        assert!(self.child.lock().unwrap().is_none(), "server still running");
        self.spawn_and_wait(false);
    }

    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    pub fn is_running(&self) -> bool {
        match self.child.lock().unwrap().as_mut() {
            Some((c, _)) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn four_letter(&self, word: &str) -> String {
        four_letter_word(self.port, word).unwrap_or_else(|e| panic!("4lw {word}: {e}"))
    }

    /// A connected client (default session timeout 6 s), bounded to 15 s.
    pub async fn client(&self) -> zk::Client {
        connect(&self.addr(), zk::Client::connector()).await
    }

    pub async fn client_with(&self, connector: zk::Connector) -> zk::Client {
        connect(&self.addr(), connector).await
    }

    pub fn raw(&self) -> raw::RawConn {
        raw::RawConn::connect(&self.addr(), 6000)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- server log tail ({:?}, port {}) ----\n{}\n----",
                self.target,
                self.port,
                self.log_tail(40)
            );
        }
        if let Ok(mut g) = self.child.lock() {
            if let Some((child, watchdog)) = g.take() {
                terminate(child, watchdog, Duration::from_secs(5));
            }
        }
    }
}

/// SIGTERM, up to `grace` for the server to exit, then SIGKILL it and its watchdog.
fn terminate(mut child: Child, watchdog: Child, grace: Duration) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill_child(child);
    let _ = kill_child(watchdog);
}

fn kill_child(mut c: Child) -> std::io::Result<()> {
    let _ = c.kill();
    c.wait().map(|_| ())
}

/// Sends a four-letter word and reads the whole answer (the server closes the connection).
pub fn four_letter_word(port: u16, word: &str) -> std::io::Result<String> {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(word.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Connects, bounded by `secs`; `Err` for connection errors (including the timeout, reported as
/// `Error::Timeout`).
pub async fn try_connect(
    addr: &str,
    connector: zk::Connector,
    secs: u64,
) -> Result<zk::Client, zk::Error> {
    let a = addr.to_string();
    // Run it as a task so that a panic inside the client library can be explained.
    let task = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(secs), connector.connect(&a)).await
    });
    match task.await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(zk::Error::Timeout),
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if msg.contains("no spawner") {
                panic!(
                    "zookeeper-client cannot spawn its session task: the root Cargo.toml must enable \
                     its tokio runtime, i.e. [dev-dependencies] \
                     zookeeper-client = {{ version = \"0.11\", features = [\"tokio\"] }}"
                );
            }
            std::panic::resume_unwind(p)
        }
        Err(e) => panic!("connect task failed: {e}"),
    }
}

/// Connects with a 15 s bound, panicking on failure.
pub async fn connect(addr: &str, connector: zk::Connector) -> zk::Client {
    match try_connect(addr, connector, 15).await {
        Ok(c) => c,
        Err(zk::Error::Timeout) => panic!("connect to {addr} timed out"),
        Err(e) => panic!("connect to {addr}: {e}"),
    }
}

/// Awaits `fut` for at most `secs` seconds, panicking with `what` otherwise.
pub async fn within<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}

/// Asserts that `fut` does NOT complete within `ms` milliseconds.
pub async fn assert_pending<T: std::fmt::Debug>(
    ms: u64,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) {
    if let Ok(v) = tokio::time::timeout(Duration::from_millis(ms), fut).await {
        panic!("{what}: expected nothing within {ms}ms, got {v:?}");
    }
}

/// Polls `f` until it returns true, for at most `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("condition not reached within {secs}s: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A unique (per process and call) node name prefix, e.g. `/t-<pid>-<n>-<name>`.
pub fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "/{}-{}-{}",
        name,
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn anyone() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

pub fn opts(mode: zk::CreateMode) -> zk::CreateOptions<'static> {
    mode.with_acls(zk::Acls::anyone_all())
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A `sh` loop that SIGKILLs server `pid` once this test process is gone (then runs `then`),
/// so a server never outlives a test that panicked or was killed.
pub fn spawn_watchdog(pid: u32, then: &str) -> std::process::Child {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             kill -9 {pid} 2>/dev/null; {then}",
            me = std::process::id(),
        ))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn watchdog")
}

/// GET over HTTP/1.0 (no chunking, the server closes): (status, content type, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {raw:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok((status, content_type, body.to_string()))
}
