//! A multi-process ensemble on loopback: N real server processes (rookery, or Apache ZooKeeper 3.8
//! with `E2E_TARGET=zk`, the same switch as the standalone harness), each with its own data dir,
//! zoo.cfg and `myid`, optionally with TCP proxies on every peer link so that a test can partition
//! a member away and heal it.
//!
//! # Configuration
//! Every member gets a zoo.cfg in ZooKeeper's own syntax; rookery reads the same file
//! (`rookery --config zoo.cfg`):
//!
//! ```text
//! tickTime=500
//! initLimit=10
//! syncLimit=5
//! dataDir=<member dir>/data          # holds `myid`
//! clientPort=<port>
//! clientPortAddress=127.0.0.1
//! 4lw.commands.whitelist=*
//! maxClientCnxns=0
//! admin.enableServer=false
//! standaloneEnabled=false
//! server.1=127.0.0.1:<peer>:<election>;127.0.0.1:<client>
//! server.2=127.0.0.1:<peer>:<election>;127.0.0.1:<client>
//! server.3=127.0.0.1:<peer>:<election>:observer;127.0.0.1:<client>   # observers only
//! ```
//!
//! ZooKeeper also gets `-Dzookeeper.admin.enableServer=false` (else every member binds 8080).
//!
//! # Peer-link proxies (`ClusterOpts::proxied`)
//! Without proxies every member's `server.N` lines carry the real ports. With proxies, member
//! `i`'s own line keeps its real ports (a server binds what its own line says), but its line for
//! every other member `j` names two loopback proxies owned by the link `i -> j`, which forward to
//! `j`'s real peer and election ports. Every TCP connection *dialled by* `i` towards `j` thus goes
//! through a proxy of the link `i -> j`, whichever way the bytes then flow, so cutting every link
//! that starts or ends at `i` isolates `i` in both directions ([`Cluster::partition`]); restoring
//! them heals it ([`Cluster::heal`]).
//!
//! * **ZooKeeper** uses both ports: followers dial the leader's quorum (first) port, and every
//!   member dials the others' election (second) port (the lower id's connection is dropped and
//!   dialled back by the higher id, through *its* config, i.e. through its own proxy). Both are
//!   proxied.
//! * **rookery** (cluster.md §4.2, §4.1) uses only the first port: one-way connections, A dials B
//!   for A -> B. The second port is still written (ZooKeeper syntax, shown in
//!   `/zookeeper/config`) and its proxy exists, but nothing listens behind it, so it stays idle.
//!
//! A cut aborts the proxied connections (both ends see a reset) and accepts-then-closes new ones:
//! a "loud" partition. Silent packet loss needs network namespaces (see faults-here.md).
//!
//! # Safety
//! Every process is SIGKILLed when the last clone of the [`Cluster`] is dropped, and is guarded
//! by an `sh` watchdog that SIGKILLs it once the test process is gone. Every wait is bounded.
//! The methods are blocking (they spawn processes and poll four-letter words); from async test
//! code call the quick ones inline and wrap the slow ones in [`Cluster::blocking`].
//!
//! # Ensemble or not
//! [`Cluster::wait_ready`] requires every member to report `Mode: leader|follower|observer`. A
//! member reporting `Mode: standalone` fails at once with a clear message: today's rookery
//! ignores `server.N` lines (issue 7 is not wired into the server yet) and serves standalone.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use super::proxy::Proxy;
use super::{four_letter_word, free_port, is_zk, target, try_connect, Target};

/// The ensemble tests start 3+ JVMs or servers each and take tens of seconds, so they are
/// `#[ignore]`d in the normal run (the CI) and run by hand with `--ignored` (see the test
/// files' doc comments). Kept as a hook so a test can still opt out at run time.
pub fn ensemble_tests_enabled(_test: &str) -> bool {
    true
}

/// One ensemble at a time per test process (each is 3+ server processes on a 2-core machine):
/// hold the returned guard for the whole test. Bounded wait (20 min).
pub fn exclusive() -> ExclusiveGuard {
    static BUSY: Mutex<bool> = Mutex::new(false);
    static CV: Condvar = Condvar::new();
    let deadline = Instant::now() + Duration::from_secs(1200);
    let mut busy = BUSY.lock().unwrap_or_else(|e| e.into_inner());
    while *busy {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "waited 20 min for another ensemble test");
        busy = CV
            .wait_timeout(busy, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    *busy = true;
    ExclusiveGuard {
        release: Box::new(|| {
            *BUSY.lock().unwrap_or_else(|e| e.into_inner()) = false;
            CV.notify_all();
        }),
    }
}

pub struct ExclusiveGuard {
    release: Box<dyn Fn() + Send + Sync>,
}

impl Drop for ExclusiveGuard {
    fn drop(&mut self) {
        (self.release)()
    }
}

#[derive(Clone, Debug)]
pub struct ClusterOpts {
    /// Voting members.
    pub voters: usize,
    /// Observers (ZooKeeper observers, rookery learners), numbered after the voters.
    pub observers: usize,
    /// Participants that are not members yet, numbered last: not listed in the others'
    /// configs and not started by [`Cluster::start`]; each one's own config lists the whole
    /// ensemble plus itself (ZooKeeper's dynamic-config style; for rookery also
    /// `initialClusterState=existing`). Start one with [`Cluster::start_joiner`], then add it
    /// with a reconfig.
    pub joiners: usize,
    pub tick_time_ms: u64,
    pub init_limit: u32,
    pub sync_limit: u32,
    /// TCP proxies on every peer link (needed for `partition`/`heal`).
    pub proxied: bool,
    /// Extra zoo.cfg lines, appended verbatim.
    pub extra_cfg: Vec<String>,
    /// ZooKeeper heap per member.
    pub zk_heap: String,
    /// rookery only: each member serves Prometheus `/metrics` on a port of its own
    /// ([`Cluster::metrics_port`]; ZooKeeper's Debian jar has no Prometheus provider).
    pub metrics: bool,
    /// Each member runs the AdminServer on a port of its own ([`Cluster::admin_port`]).
    pub admin: bool,
    /// Extra environment of every member's process (e.g. `FAILPOINTS` for a rookery built
    /// with the `failpoints` feature), on every start and restart. `{dir}` in a value becomes
    /// the member's own directory ([`Cluster::member_dir`]), so that one setting can name a
    /// file per member (the fault suite's per-member fake clock).
    pub env: Vec<(String, String)>,
    /// A command prefix for every member's process (empty: none): the member runs as
    /// `wrap[0] wrap[1..] <program> <args>`, `{dir}` replaced as in [`ClusterOpts::env`]. The
    /// prefix must end in an `exec` of the program, so that the member's pid stays the one the
    /// harness signals (the fault suite's per-member mount namespace, `unshare -m`).
    pub wrap: Vec<String>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            voters: 3,
            observers: 0,
            joiners: 0,
            tick_time_ms: 500,
            init_limit: 10,
            sync_limit: 5,
            proxied: false,
            extra_cfg: vec![],
            zk_heap: "256m".to_string(),
            metrics: false,
            admin: false,
            env: vec![],
            wrap: vec![],
        }
    }
}

/// What `srvr` says about a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Leader,
    Follower,
    Observer,
    Standalone,
    ReadOnly,
    /// Answers, but "not currently serving requests" (electing, syncing).
    NotServing,
}

pub fn parse_mode(srvr: &str) -> Option<Mode> {
    if srvr.contains("not currently serving") {
        return Some(Mode::NotServing);
    }
    let line = srvr.lines().find_map(|l| l.strip_prefix("Mode:"))?;
    Some(match line.trim() {
        "leader" => Mode::Leader,
        "follower" => Mode::Follower,
        "observer" => Mode::Observer,
        "standalone" => Mode::Standalone,
        "read-only" => Mode::ReadOnly,
        _ => return None,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkPort {
    Peer,
    Election,
}

struct Link {
    from: usize,
    to: usize,
    port: LinkPort,
    proxy: Proxy,
}

struct Member {
    id: u32,
    observer: bool,
    /// See [`ClusterOpts::joiners`].
    joiner: bool,
    client_port: u16,
    peer_port: u16,
    election_port: u16,
    /// `/metrics` port when `ClusterOpts::metrics`.
    metrics_port: u16,
    /// AdminServer port when `ClusterOpts::admin`.
    admin_port: u16,
    dir: PathBuf,
    child: Mutex<Option<(Child, Child)>>,
    stopped: AtomicBool,
    starts: AtomicU32,
}

struct Inner {
    opts: ClusterOpts,
    members: Vec<Member>,
    links: Vec<Link>,
    partitioned: Mutex<BTreeSet<usize>>,
    rt: Mutex<Option<tokio::runtime::Runtime>>,
    tmp: Mutex<Option<tempfile::TempDir>>,
}

/// A running ensemble; cheap to clone (shared). Members are indexed from 0; member `i` has
/// `myid` `i + 1`.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

fn rookery_bin() -> String {
    std::env::var("ROOKERY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_rookery").to_string())
}

/// `n` distinct free loopback ports.
fn free_ports(n: usize) -> Vec<u16> {
    let mut set = BTreeSet::new();
    let mut out = vec![];
    for _ in 0..n * 20 {
        if out.len() == n {
            break;
        }
        let p = free_port();
        if set.insert(p) {
            out.push(p);
        }
    }
    assert_eq!(out.len(), n, "could not find {n} distinct free ports");
    out
}

impl Cluster {
    /// Writes the configs, starts every member and waits until the ensemble serves
    /// ([`Cluster::wait_ready`], 120 s).
    pub fn start(opts: ClusterOpts) -> Cluster {
        let c = Cluster::create(opts);
        for i in 0..c.len() {
            if !c.m(i).joiner {
                c.spawn(i);
            }
        }
        c.wait_ready(120);
        c
    }

    /// Async convenience: [`Cluster::start`] on a blocking thread.
    pub async fn start_async(opts: ClusterOpts) -> Cluster {
        tokio::task::spawn_blocking(move || Cluster::start(opts))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Runs a blocking cluster operation (restart, wait_ready, ...) off the async workers.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Cluster) -> T + Send + 'static,
    ) -> T {
        let c = self.clone();
        match tokio::task::spawn_blocking(move || f(&c)).await {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("blocking cluster op failed: {e}"),
        }
    }

    /// Configs and proxies only; no process is started.
    fn create(opts: ClusterOpts) -> Cluster {
        let n = opts.voters + opts.observers + opts.joiners;
        assert!(n >= 1 && opts.voters >= 1, "an ensemble needs voters");
        let tmp = tempfile::Builder::new()
            .prefix("rookery-ens-")
            .tempdir()
            .expect("tempdir");
        let ports = free_ports(5 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let dir = tmp.path().join(format!("m{}", i + 1));
                std::fs::create_dir_all(dir.join("data")).unwrap();
                std::fs::write(dir.join("data").join("myid"), format!("{}\n", i + 1)).unwrap();
                Member {
                    id: (i + 1) as u32,
                    observer: i >= opts.voters && i < opts.voters + opts.observers,
                    joiner: i >= opts.voters + opts.observers,
                    client_port: ports[3 * i],
                    peer_port: ports[3 * i + 1],
                    election_port: ports[3 * i + 2],
                    metrics_port: ports[3 * n + i],
                    admin_port: ports[4 * n + i],
                    dir,
                    child: Mutex::new(None),
                    stopped: AtomicBool::new(false),
                    starts: AtomicU32::new(0),
                }
            })
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ens-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        let mut links = vec![];
        if opts.proxied {
            for from in 0..n {
                for (to, target_member) in members.iter().enumerate() {
                    if from == to {
                        continue;
                    }
                    for port in [LinkPort::Peer, LinkPort::Election] {
                        let real = match port {
                            LinkPort::Peer => target_member.peer_port,
                            LinkPort::Election => target_member.election_port,
                        };
                        // A proxy binds port 0 while the members' ports are still unbound, so
                        // the kernel may hand it one of them (the member then fails to bind):
                        // retry until it gets a port of its own.
                        let mut proxy = None;
                        for _ in 0..50 {
                            let h = rt.handle().clone();
                            // Proxy::start spawns on the current runtime: enter ours from a fresh
                            // thread (the caller may itself be inside a runtime).
                            let p = std::thread::spawn(move || {
                                h.block_on(Proxy::start(format!("127.0.0.1:{real}")))
                            })
                            .join()
                            .expect("proxy start");
                            if !ports.contains(&p.port) {
                                proxy = Some(p);
                                break;
                            }
                        }
                        let proxy = proxy.expect("a proxy port distinct from the members' ports");
                        links.push(Link {
                            from,
                            to,
                            port,
                            proxy,
                        });
                    }
                }
            }
        }
        let c = Cluster {
            inner: Arc::new(Inner {
                opts,
                members,
                links,
                partitioned: Mutex::new(BTreeSet::new()),
                rt: Mutex::new(Some(rt)),
                tmp: Mutex::new(Some(tmp)),
            }),
        };
        for i in 0..n {
            c.write_config(i);
        }
        c
    }

    pub fn len(&self) -> usize {
        self.inner.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.members.is_empty()
    }

    pub fn opts(&self) -> &ClusterOpts {
        &self.inner.opts
    }

    fn m(&self, i: usize) -> &Member {
        &self.inner.members[i]
    }

    /// `myid` of member `i` (= i + 1).
    pub fn id(&self, i: usize) -> u32 {
        self.m(i).id
    }

    pub fn client_port(&self, i: usize) -> u16 {
        self.m(i).client_port
    }

    /// Member `i`'s AdminServer port (with `ClusterOpts::admin`).
    pub fn admin_port(&self, i: usize) -> u16 {
        self.m(i).admin_port
    }

    /// Member `i`'s Prometheus `/metrics` port (with `ClusterOpts::metrics`).
    pub fn metrics_port(&self, i: usize) -> u16 {
        self.m(i).metrics_port
    }

    /// Client address of member `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.m(i).client_port)
    }

    /// All members' client addresses, comma-separated (a ZooKeeper connect string).
    pub fn connect_string(&self) -> String {
        (0..self.len())
            .map(|i| self.addr(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Connect string of the given members only.
    pub fn connect_string_of(&self, members: &[usize]) -> String {
        members
            .iter()
            .map(|&i| self.addr(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn config_path(&self, i: usize) -> PathBuf {
        self.m(i).dir.join("zoo.cfg")
    }

    /// Member `i`'s own directory (config, log, data dir).
    pub fn member_dir(&self, i: usize) -> PathBuf {
        self.m(i).dir.clone()
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.m(i).dir.join("data")
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.m(i).dir.join("server.log")
    }

    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let s = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let v: Vec<&str> = s.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    fn link_port(&self, from: usize, to: usize, port: LinkPort) -> u16 {
        self.inner
            .links
            .iter()
            .find(|l| l.from == from && l.to == to && l.port == port)
            .map(|l| l.proxy.port)
            .expect("link proxy")
    }

    /// The `server.N` line for member `j` as seen by member `i`.
    fn server_line(&self, i: usize, j: usize) -> String {
        let m = self.m(j);
        let (pp, ep) = if self.inner.opts.proxied && i != j {
            (
                self.link_port(i, j, LinkPort::Peer),
                self.link_port(i, j, LinkPort::Election),
            )
        } else {
            (m.peer_port, m.election_port)
        };
        format!(
            "server.{}=127.0.0.1:{pp}:{ep}{};127.0.0.1:{}",
            m.id,
            if m.observer { ":observer" } else { "" },
            m.client_port
        )
    }

    fn write_config(&self, i: usize) {
        let o = &self.inner.opts;
        let m = self.m(i);
        let mut cfg = format!(
            "tickTime={}\ninitLimit={}\nsyncLimit={}\ndataDir={}\nclientPort={}\n\
             clientPortAddress=127.0.0.1\n4lw.commands.whitelist=*\nmaxClientCnxns=0\n\
             admin.enableServer=false\nstandaloneEnabled=false\n",
            o.tick_time_ms,
            o.init_limit,
            o.sync_limit,
            self.data_dir(i).display(),
            m.client_port
        );
        if m.observer {
            cfg.push_str("peerType=observer\n");
        }
        if m.joiner && !is_zk() {
            cfg.push_str("initialClusterState=existing\n");
        }
        for j in 0..self.len() {
            if self.m(j).joiner && !m.joiner {
                continue;
            }
            cfg.push_str(&self.server_line(i, j));
            cfg.push('\n');
        }
        for l in &o.extra_cfg {
            cfg.push_str(l);
            cfg.push('\n');
        }
        if o.admin {
            // After the admin.enableServer=false above: the last one wins, for ZooKeeper too
            // (it turns the key into the zookeeper.admin.enableServer property).
            cfg.push_str(&format!(
                "admin.enableServer=true\nadmin.serverAddress=127.0.0.1\nadmin.serverPort={}\n",
                m.admin_port
            ));
        }
        if o.metrics {
            cfg.push_str(&format!(
                "metricsProvider.className=org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider\n\
                 metricsProvider.httpHost=127.0.0.1\nmetricsProvider.httpPort={}\n",
                m.metrics_port
            ));
        }
        std::fs::write(self.config_path(i), cfg).unwrap();
        if is_zk() {
            std::fs::write(
                m.dir.join("log4j.properties"),
                "log4j.rootLogger=INFO, CONSOLE\n\
                 log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n\
                 log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n\
                 log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] - %m%n\n",
            )
            .unwrap();
        }
    }

    fn command(&self, i: usize) -> Command {
        let mut c = self.target_command(i);
        let dir = self.member_dir(i).display().to_string();
        if let Some((first, rest)) = self.inner.opts.wrap.split_first() {
            let mut w = Command::new(first.replace("{dir}", &dir));
            w.args(rest.iter().map(|a| a.replace("{dir}", &dir)))
                .arg(c.get_program())
                .args(c.get_args());
            c = w;
        }
        c.envs(
            self.inner
                .opts
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.replace("{dir}", &dir))),
        );
        c
    }

    fn target_command(&self, i: usize) -> Command {
        let m = self.m(i);
        match target() {
            Target::Rookery => {
                let mut c = Command::new(rookery_bin());
                c.arg("--config").arg(self.config_path(i));
                c
            }
            Target::ZooKeeper => {
                let mut c = Command::new("java");
                c.arg(format!("-Xmx{}", self.inner.opts.zk_heap))
                    .arg("-XX:+UseSerialGC")
                    .arg("-XX:TieredStopAtLevel=1")
                    .arg("-Xshare:auto")
                    .arg("-Dzookeeper.admin.enableServer=false")
                    // ZooKeeper reads its read-only switch only as a system property.
                    .args(
                        self.inner
                            .opts
                            .extra_cfg
                            .iter()
                            .filter(|l| l.starts_with("readonlymode.enabled="))
                            .map(|l| format!("-D{l}")),
                    )
                    .arg(format!(
                        "-Dlog4j.configuration=file:{}",
                        m.dir.join("log4j.properties").display()
                    ))
                    .arg("-cp")
                    .arg(
                        // servlet-api: the AdminServer's Jetty, with ClusterOpts::admin.
                        "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:\
                         /usr/share/java/log4j-1.2.jar:/usr/share/java/servlet-api.jar",
                    )
                    .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                    .arg(self.config_path(i));
                c
            }
        }
    }

    /// Starts member `i`'s process (no wait) with its watchdog.
    fn spawn(&self, i: usize) {
        let m = self.m(i);
        let mut guard = m.child.lock().unwrap();
        assert!(guard.is_none(), "member {i} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("open log");
        let n = m.starts.fetch_add(1, Ordering::SeqCst);
        writeln!(&log, "===== start #{n} =====").ok();
        let child = self
            .command(i)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn member {i} ({:?}): {e}", target()));
        let watchdog = super::spawn_watchdog(child.id(), "");
        m.stopped.store(false, Ordering::SeqCst);
        *guard = Some((child, watchdog));
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.m(i)
            .child
            .lock()
            .unwrap()
            .as_ref()
            .map(|(c, _)| c.id())
    }

    /// Process exists (possibly SIGSTOPped).
    pub fn is_running(&self, i: usize) -> bool {
        match self.m(i).child.lock().unwrap().as_mut() {
            Some((c, _)) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// How member `i`'s process ended, if it exited on its own (not killed or stopped by
    /// [`Cluster::kill9`] or [`Cluster::stop`], which forget the process).
    pub fn exited(&self, i: usize) -> Option<std::process::ExitStatus> {
        match self.m(i).child.lock().unwrap().as_mut() {
            Some((c, _)) => c.try_wait().ok().flatten(),
            None => None,
        }
    }

    /// Running and not SIGSTOPped: the members whose four-letter words can be asked.
    pub fn live(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.is_running(i) && !self.m(i).stopped.load(Ordering::SeqCst))
            .collect()
    }

    /// SIGKILL member `i`.
    pub fn kill9(&self, i: usize) {
        if let Some((child, watchdog)) = self.m(i).child.lock().unwrap().take() {
            let _ = kill_child(child);
            let _ = kill_child(watchdog);
        }
        self.m(i).stopped.store(false, Ordering::SeqCst);
    }

    /// Graceful stop: SIGTERM, SIGKILL after `grace_secs`.
    pub fn stop(&self, i: usize, grace_secs: u64) {
        self.sigcont(i);
        if let Some((mut child, watchdog)) = self.m(i).child.lock().unwrap().take() {
            signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(grace_secs);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = kill_child(child);
            let _ = kill_child(watchdog);
        }
    }

    /// Starts joiner `i` ([`ClusterOpts::joiners`]) without waiting: a rookery joiner gets the
    /// ensemble's `cluster-id` file from member 0, as an operator copies it.
    pub fn start_joiner(&self, i: usize) {
        assert!(self.m(i).joiner, "member {i} is not a joiner");
        if !is_zk() {
            std::fs::copy(
                self.data_dir(0).join("cluster-id"),
                self.data_dir(i).join("cluster-id"),
            )
            .expect("copy cluster-id");
        }
        self.spawn(i);
    }

    /// The `server.N=host:quorumPort:electionPort:participant|observer;host:clientPort`
    /// spec of member `i`, as a reconfig names it (unproxied ports).
    pub fn server_spec(&self, i: usize) -> String {
        let m = self.m(i);
        format!(
            "server.{}=127.0.0.1:{}:{}:{};127.0.0.1:{}",
            m.id,
            m.peer_port,
            m.election_port,
            if m.observer {
                "observer"
            } else {
                "participant"
            },
            m.client_port
        )
    }

    /// Starts a stopped or killed member's process again (same data dir and ports) without
    /// waiting: for restarting several members at once (one alone cannot serve without a
    /// quorum). Follow with [`Cluster::wait_ready`].
    pub fn start_member(&self, i: usize) {
        self.spawn(i);
    }

    /// Starts a stopped or killed member again on the same data dir and ports, and waits until
    /// it serves (`wait_member_ready`, `secs`).
    pub fn start_again(&self, i: usize, secs: u64) {
        self.spawn(i);
        self.wait_member_ready(i, secs);
    }

    /// SIGTERM + start on the same data dir + wait until it serves again.
    pub fn restart(&self, i: usize, secs: u64) {
        self.stop(i, 10);
        self.start_again(i, secs);
    }

    /// Pauses member `i` (SIGSTOP).
    pub fn sigstop(&self, i: usize) {
        if let Some(pid) = self.pid(i) {
            signal(pid, "STOP");
            self.m(i).stopped.store(true, Ordering::SeqCst);
        }
    }

    pub fn sigcont(&self, i: usize) {
        if let Some(pid) = self.pid(i) {
            if self.m(i).stopped.swap(false, Ordering::SeqCst) {
                signal(pid, "CONT");
            }
        }
    }

    /// Cuts every peer link from or to member `i` (both directions). Requires `proxied`.
    pub fn partition(&self, i: usize) {
        assert!(
            self.inner.opts.proxied,
            "partition needs ClusterOpts::proxied"
        );
        self.inner.partitioned.lock().unwrap().insert(i);
        for l in &self.inner.links {
            if l.from == i || l.to == i {
                l.proxy.cut();
            }
        }
    }

    /// Restores member `i`'s peer links (those whose other end is not partitioned itself).
    pub fn heal(&self, i: usize) {
        let mut p = self.inner.partitioned.lock().unwrap();
        p.remove(&i);
        for l in &self.inner.links {
            if (l.from == i || l.to == i) && !p.contains(&l.from) && !p.contains(&l.to) {
                l.proxy.restore();
            }
        }
    }

    /// Cuts only the link dialled by `from` towards `to` (both its ports). For rookery, whose
    /// peer connections are one-way, that stops `from`'s messages to `to` while `to`'s messages
    /// to `from` still flow. Requires `proxied`; undo with [`Cluster::restore_link`].
    pub fn cut_link(&self, from: usize, to: usize) {
        assert!(
            self.inner.opts.proxied,
            "cut_link needs ClusterOpts::proxied"
        );
        for l in &self.inner.links {
            if l.from == from && l.to == to {
                l.proxy.cut();
            }
        }
    }

    /// Restores the link dialled by `from` towards `to`.
    pub fn restore_link(&self, from: usize, to: usize) {
        for l in &self.inner.links {
            if l.from == from && l.to == to {
                l.proxy.restore();
            }
        }
    }

    /// Four-letter word to member `i`; `Err` if it does not answer.
    pub fn four_letter(&self, i: usize, word: &str) -> std::io::Result<String> {
        four_letter_word(self.m(i).client_port, word)
    }

    pub fn srvr(&self, i: usize) -> Option<String> {
        self.four_letter(i, "srvr").ok()
    }

    pub fn mode(&self, i: usize) -> Option<Mode> {
        self.srvr(i).as_deref().and_then(parse_mode)
    }

    /// `mntr` of member `i` as key -> value.
    pub fn mntr(&self, i: usize) -> BTreeMap<String, String> {
        let s = self
            .four_letter(i, "mntr")
            .unwrap_or_else(|e| panic!("mntr of member {i}: {e}"));
        s.lines()
            .filter_map(|l| {
                let mut it = l.splitn(2, '\t');
                Some((it.next()?.to_string(), it.next()?.trim().to_string()))
            })
            .collect()
    }

    /// Session ids that member `i` lists in `cons`.
    pub fn sessions_on(&self, i: usize) -> BTreeSet<i64> {
        let s = self.four_letter(i, "cons").unwrap_or_default();
        s.split("sid=")
            .skip(1)
            .filter_map(|t| {
                let hex: String = t
                    .trim_start_matches("0x")
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit())
                    .collect();
                u64::from_str_radix(&hex, 16).ok().map(|v| v as i64)
            })
            .collect()
    }

    /// The live member whose `cons` lists `session`.
    pub fn member_of_session(&self, session: i64) -> Option<usize> {
        self.live()
            .into_iter()
            .find(|&i| self.sessions_on(i).contains(&session))
    }

    fn standalone_panic(&self, i: usize) -> ! {
        panic!(
            "member {i} (myid {}) reports `Mode: standalone`: {:?} does not serve as an ensemble. \
             For rookery this is expected until issue 7 is wired into the server (server.N lines \
             are ignored); the ensemble tests cannot pass before that.\nlog tail:\n{}",
            self.id(i),
            target(),
            self.log_tail(i, 20)
        )
    }

    /// Member `i` answers `srvr` with leader/follower/observer. Panics on `standalone` or if the
    /// process exits.
    pub fn wait_member_ready(&self, i: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            self.check_alive(i);
            match self.mode(i) {
                Some(Mode::Leader | Mode::Follower | Mode::Observer) => return,
                Some(Mode::Standalone) => self.standalone_panic(i),
                _ => {}
            }
            if Instant::now() > deadline {
                panic!(
                    "member {i} not serving within {secs}s (srvr: {:?}); log tail:\n{}",
                    self.srvr(i),
                    self.log_tail(i, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_alive(&self, i: usize) {
        let mut g = self.m(i).child.lock().unwrap();
        if let Some((c, _)) = g.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                drop(g);
                panic!(
                    "member {i} exited with {status}; log tail:\n{}",
                    self.log_tail(i, 60)
                );
            }
        }
    }

    /// Every running, unpaused member serves as leader/follower/observer, and exactly one of them
    /// is the leader. Returns the leader's index.
    pub fn wait_ready(&self, secs: u64) -> usize {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            // A member that exited on its own (not killed by the test) fails loudly instead of
            // leaving the others to form a smaller ensemble.
            for i in 0..self.len() {
                self.check_alive(i);
            }
            let live = self.live();
            let mut leaders = vec![];
            let mut all = true;
            for &i in &live {
                match self.mode(i) {
                    Some(Mode::Leader) => leaders.push(i),
                    Some(Mode::Follower | Mode::Observer) => {}
                    Some(Mode::Standalone) => self.standalone_panic(i),
                    _ => all = false,
                }
            }
            if all && leaders.len() == 1 && !live.is_empty() {
                return leaders[0];
            }
            if Instant::now() > deadline {
                let modes: Vec<_> = (0..self.len()).map(|i| (i, self.mode(i))).collect();
                panic!("ensemble not ready within {secs}s: modes {modes:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The live member reporting `Mode: leader`, if exactly one does.
    pub fn leader(&self) -> Option<usize> {
        let l: Vec<usize> = self
            .live()
            .into_iter()
            .filter(|&i| self.mode(i) == Some(Mode::Leader))
            .collect();
        (l.len() == 1).then(|| l[0])
    }

    /// Waits until exactly one of `among` reports `Mode: leader`.
    pub fn wait_leader_among(&self, among: &[usize], secs: u64) -> usize {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let l: Vec<usize> = among
                .iter()
                .copied()
                .filter(|&i| self.mode(i) == Some(Mode::Leader))
                .collect();
            if l.len() == 1 {
                return l[0];
            }
            for &i in among {
                if self.mode(i) == Some(Mode::Standalone) {
                    self.standalone_panic(i);
                }
            }
            if Instant::now() > deadline {
                let modes: Vec<_> = among.iter().map(|&i| (i, self.mode(i))).collect();
                panic!("no single leader among {among:?} within {secs}s: {modes:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Members other than `i`.
    pub fn others(&self, i: usize) -> Vec<usize> {
        (0..self.len()).filter(|&j| j != i).collect()
    }

    // ------------------------------------------------------------------ clients

    /// A client connected to member `i` only (its connect string names only `i`), 15 s bound.
    pub async fn client(&self, i: usize) -> zk::Client {
        self.client_with(i, zk::Client::connector()).await
    }

    pub async fn client_with(&self, i: usize, connector: zk::Connector) -> zk::Client {
        super::connect(&self.addr(i), connector).await
    }

    /// A client with the full connect string whose session landed on member `i` (the client
    /// library shuffles the hosts, so it retries up to 40 connects, checking `cons`). On a
    /// connection loss it may move to any member.
    pub async fn client_placed(&self, i: usize, make: impl Fn() -> zk::Connector) -> zk::Client {
        let cs = self.connect_string();
        for _ in 0..40 {
            let c = match try_connect(&cs, make(), 15).await {
                Ok(c) => c,
                Err(e) => panic!("connect to {cs}: {e}"),
            };
            let sid = c.session_id().0;
            let me = self.clone();
            let on = tokio::task::spawn_blocking(move || me.sessions_on(i).contains(&sid))
                .await
                .unwrap();
            if on {
                return c;
            }
            drop(c); // closes the session
        }
        panic!("no session landed on member {i} in 40 connects to {cs}");
    }

    /// On each given member (a client connected to it alone): `sync("/")`, then reads `paths`.
    /// Returns, per member, path -> data (None = no node).
    pub async fn read_on_each(
        &self,
        members: &[usize],
        paths: &[String],
    ) -> Vec<(usize, BTreeMap<String, Option<Vec<u8>>>)> {
        let mut out = vec![];
        for &i in members {
            let c = self.client(i).await;
            super::within(30, "sync before reading", c.sync("/"))
                .await
                .unwrap_or_else(|e| panic!("sync on member {i}: {e}"));
            let mut m = BTreeMap::new();
            for chunk in paths.chunks(200) {
                let futs = chunk.iter().map(|p| {
                    let c = &c;
                    async move {
                        match c.get_data(p).await {
                            Ok((d, _)) => (p.clone(), Some(d)),
                            Err(zk::Error::NoNode) => (p.clone(), None),
                            Err(e) => panic!("getData {p} on member {i}: {e}"),
                        }
                    }
                });
                let r = super::within(60, "reads", futures::future::join_all(futs)).await;
                m.extend(r);
            }
            out.push((i, m));
        }
        out
    }

    /// On each given member: sync, then path -> data of every child of `dir` (one level).
    /// [`Cluster::dump_children`] of `members`, retried for up to `secs` until every member
    /// holds the same children (a member that just rejoined may still be catching up); the
    /// last dump is returned either way, for the caller to assert on.
    pub async fn converged_children(
        &self,
        members: &[usize],
        dir: &str,
        secs: u64,
    ) -> Vec<(usize, BTreeMap<String, Vec<u8>>)> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let d = self.dump_children(members, dir).await;
            if d.iter().all(|(_, m)| *m == d[0].1) || Instant::now() > deadline {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn dump_children(
        &self,
        members: &[usize],
        dir: &str,
    ) -> Vec<(usize, BTreeMap<String, Vec<u8>>)> {
        let mut out = vec![];
        for &i in members {
            let c = self.client(i).await;
            out.push((i, super::ledger::dump_children(&c, dir).await));
        }
        out
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, m) in self.members.iter().enumerate() {
                let s = std::fs::read_to_string(m.dir.join("server.log")).unwrap_or_default();
                let v: Vec<&str> = s.lines().collect();
                eprintln!(
                    "---- member {i} (myid {}) log tail ({:?}) ----\n{}\n----",
                    m.id,
                    target(),
                    v[v.len().saturating_sub(25)..].join("\n")
                );
            }
        }
        for m in &self.members {
            if let Ok(mut g) = m.child.lock() {
                if let Some((child, watchdog)) = g.take() {
                    let _ = kill_child(child);
                    let _ = kill_child(watchdog);
                }
            }
        }
        self.links.clear();
        // Keep the members' dirs (configs, logs, data) of a failed test, or with ENSEMBLE_KEEP=1.
        if std::thread::panicking() || std::env::var("ENSEMBLE_KEEP").as_deref() == Ok("1") {
            if let Some(t) = self.tmp.lock().ok().and_then(|mut t| t.take()) {
                eprintln!("ensemble dirs kept: {}", t.keep().display());
            }
        }
        if let Ok(mut rt) = self.rt.lock() {
            if let Some(rt) = rt.take() {
                rt.shutdown_background();
            }
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

fn kill_child(mut c: Child) -> std::io::Result<()> {
    let _ = c.kill();
    c.wait().map(|_| ())
}
