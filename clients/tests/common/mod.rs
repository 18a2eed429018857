//! Test harness: starts a real server on a free loopback port with a temp data dir.
//!
//! `CLIENT_TEST_TARGET=zk` (default) runs Apache ZooKeeper from the Debian package;
//! `CLIENT_TEST_TARGET=rookery` runs `$ROOKERY_BIN`. With `CLIENT_TEST_ENSEMBLE=1` the server
//! every test of a binary shares ([`shared_server`]) is a 3-member ensemble of that kind
//! (server.N lines, myid), and its connect string lists all three, so the client spreads its
//! sessions over them; tests that restart their own server keep a standalone one. The server runs under a `sh` guard that
//! kills it when our end of its stdin pipe closes, so it dies with the test process even when
//! it is held in a static (statics are never dropped).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Which server the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Zk,
    Rookery,
}

pub fn target() -> Target {
    match std::env::var("CLIENT_TEST_TARGET").as_deref() {
        Ok("rookery") => Target::Rookery,
        Ok("zk") | Ok("") | Err(_) => Target::Zk,
        Ok(other) => panic!("CLIENT_TEST_TARGET must be zk or rookery, not {other}"),
    }
}

/// A server process on 127.0.0.1.
pub struct TestServer {
    /// The `sh` guard; the server dies when `guard_stdin` is dropped.
    guard: Option<Child>,
    /// Our end of the guard's stdin: closing it kills the server.
    guard_stdin: Option<ChildStdin>,
    pub port: u16,
    /// Data directory, kept across restarts.
    dir: tempfile::TempDir,
    target: Target,
    /// The other two members of a shared ensemble (`CLIENT_TEST_ENSEMBLE=1`): their guards
    /// (stdin closes kill them) and client ports. Empty for a standalone server.
    others: Vec<(Child, ChildStdin, u16)>,
}

/// Whether the shared server is a 3-member ensemble.
pub fn ensemble_mode() -> bool {
    std::env::var("CLIENT_TEST_ENSEMBLE").is_ok_and(|v| v == "1")
}

/// Runs `command` under a `sh` guard that kills it when our end of its stdin closes.
fn guarded(command: &str, log: &std::path::Path) -> (Child, ChildStdin) {
    let script = format!(
        "{command} >>'{}' 2>&1 </dev/null & pid=$!; cat >/dev/null; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null; exit 0",
        log.display()
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server guard");
    let stdin = child.stdin.take().expect("guard stdin");
    (child, stdin)
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

impl TestServer {
    pub fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = TestServer {
            guard: None,
            guard_stdin: None,
            port: free_port(),
            dir,
            target: target(),
            others: Vec::new(),
        };
        server.spawn();
        server
    }

    /// A 3-member ensemble of [`target`] on loopback; `port` is member 1's client port.
    pub fn start_ensemble() -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = target();
        let client: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let peer: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let election: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let servers: String = (0..3)
            .map(|j| {
                format!(
                    "server.{}=127.0.0.1:{}:{};127.0.0.1:{}\n",
                    j + 1,
                    peer[j],
                    election[j],
                    client[j]
                )
            })
            .collect();
        let mut guards = Vec::new();
        for (i, client_port) in client.iter().enumerate() {
            let member = dir.path().join(format!("m{}", i + 1));
            let data = member.join("data");
            std::fs::create_dir_all(&data).expect("member data dir");
            std::fs::write(data.join("myid"), format!("{}\n", i + 1)).expect("myid");
            let cfg = member.join("zoo.cfg");
            std::fs::write(
                &cfg,
                format!(
                    "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\n\
                     clientPortAddress=127.0.0.1\n4lw.commands.whitelist=*\nmaxClientCnxns=0\n\
                     admin.enableServer=false\nznode.container.checkIntervalMs=1000\n{servers}",
                    data.display(),
                    client_port
                ),
            )
            .expect("write zoo.cfg");
            let command = match target {
                Target::Zk => zk_command_for(&cfg),
                Target::Rookery => format!(
                    "exec '{}' --config '{}' --container-check-interval-ms 1000",
                    rookery_bin(),
                    cfg.display()
                ),
            };
            guards.push(guarded(&command, &member.join("server.log")));
        }
        let mut guards = guards.into_iter();
        let (first, first_stdin) = guards.next().expect("member 1");
        let mut server = TestServer {
            guard: Some(first),
            guard_stdin: Some(first_stdin),
            port: client[0],
            dir,
            target,
            others: guards
                .zip(client[1..].iter())
                .map(|((child, stdin), port)| (child, stdin, *port))
                .collect(),
        };
        server.wait_ready(Duration::from_secs(90));
        server
    }

    pub fn target(&self) -> Target {
        self.target
    }

    /// Starts the process (again, on the same port and data).
    pub fn spawn(&mut self) {
        let command = match self.target {
            Target::Zk => self.zk_command(),
            Target::Rookery => self.rookery_command(),
        };
        let log = self.dir.path().join("server.log");
        // The guard runs the server in the background, waits for stdin to close, then kills it.
        let (child, stdin) = guarded(&command, &log);
        self.guard_stdin = Some(stdin);
        self.guard = Some(child);
        self.wait_ready(Duration::from_secs(60));
    }

    fn zk_command(&self) -> String {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let cfg = self.dir.path().join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\n\
                 clientPortAddress=127.0.0.1\n4lw.commands.whitelist=*\nmaxClientCnxns=0\n\
                 admin.enableServer=false\nznode.container.checkIntervalMs=1000\n",
                data.display(),
                self.port
            ),
        )
        .expect("write zoo.cfg");
        zk_command_for(&cfg)
    }

    fn rookery_command(&self) -> String {
        let bin = rookery_bin();
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        format!(
            "exec '{bin}' --port {} --address 127.0.0.1 --data-dir '{}' --4lw-whitelist '*' --tick-time 500 --container-check-interval-ms 1000",
            self.port,
            data.display()
        )
    }

    /// Client ports of every member (one for a standalone server).
    pub fn ports(&self) -> Vec<u16> {
        std::iter::once(self.port)
            .chain(self.others.iter().map(|(_, _, port)| *port))
            .collect()
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let serving = |port: u16| {
                four_letter(port, "ruok").as_deref() == Some("imok")
                    && !four_letter(port, "srvr")
                        .unwrap_or_default()
                        .contains("not currently serving")
            };
            if self.ports().into_iter().all(serving) {
                return;
            }
            if let Some(guard) = self.guard.as_mut() {
                if let Ok(Some(status)) = guard.try_wait() {
                    panic!("server exited early ({status}); log:\n{}", self.log());
                }
            }
            for (guard, _, port) in &mut self.others {
                if let Ok(Some(status)) = guard.try_wait() {
                    panic!("ensemble member on port {port} exited early ({status})");
                }
            }
            if Instant::now() > deadline {
                panic!("server not ready after {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        if !self.others.is_empty() {
            return (1..=3)
                .map(|i| {
                    let log = self.dir.path().join(format!("m{i}/server.log"));
                    format!(
                        "--- member {i} ---\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    )
                })
                .collect();
        }
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn stop(&mut self) {
        drop(self.guard_stdin.take());
        if let Some(mut guard) = self.guard.take() {
            let _ = guard.wait();
        }
        for (mut guard, stdin, _) in self.others.drain(..) {
            drop(stdin);
            let _ = guard.wait();
        }
        // Wait until the port is free.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn connect_string(&self) -> String {
        self.ports()
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends a four-letter word; None if nothing answered.
pub fn four_letter(port: u16, word: &str) -> Option<String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(word.as_bytes()).ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

/// One server shared by all tests of a test binary (an ensemble with
/// `CLIENT_TEST_ENSEMBLE=1`).
pub fn shared_server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        if ensemble_mode() {
            TestServer::start_ensemble()
        } else {
            TestServer::start()
        }
    })
}

fn rookery_bin() -> String {
    std::env::var("ROOKERY_BIN")
        .expect("CLIENT_TEST_TARGET=rookery needs ROOKERY_BIN=path/to/rookery")
}

/// The command line of ZooKeeper 3.8 (Debian) serving `cfg`.
fn zk_command_for(cfg: &std::path::Path) -> String {
    // slf4j-nop silences ZooKeeper's logging; without it slf4j only prints a warning.
    let mut classpath = "/usr/share/java/zookeeper.jar".to_string();
    if std::path::Path::new("/usr/share/java/slf4j-nop.jar").exists() {
        classpath.push_str(":/usr/share/java/slf4j-nop.jar");
    }
    format!(
        "exec java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
         -Dzookeeper.admin.enableServer=false -Dzookeeper.extendedTypesEnabled=true -Dznode.container.checkIntervalMs=1000 \
         -cp {classpath} org.apache.zookeeper.server.quorum.QuorumPeerMain '{}'",
        cfg.display()
    )
}

/// A unique path prefix per test, so tests sharing a server do not collide.
pub fn unique(name: &str) -> String {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "/t-{}-{}-{}",
        name,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a future with a bound, failing the test if it takes longer.
pub async fn bounded<T>(what: &str, secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {secs} s"),
    }
}

/// A TCP proxy in front of a server that can cut all connections and refuse new ones, to
/// disconnect a client while the server keeps running.
pub struct Proxy {
    pub port: u16,
    /// While true, connections are dropped and new ones closed at once.
    blocked: Arc<AtomicBool>,
    /// Bumped to make live connections end.
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let blocked = Arc::new(AtomicBool::new(false));
        let (gen_tx, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(gen_tx);
        let (b, g) = (blocked.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if b.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            blocked,
            generation,
        }
    }

    /// Cuts every connection and refuses new ones until [`Proxy::unblock`].
    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }

    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
