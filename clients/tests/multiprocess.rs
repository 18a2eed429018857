//! Recipes across OS processes: this test binary re-runs itself as children (the ignored
//! `child_entry` test, selected with ROOKERY_CHILD_ROLE) that take locks, lead or register.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bounded, shared_server, unique};
use rookery_client::recipes::{LeaderLatch, Lock, ServiceInstance, ServiceRegistry};
use rookery_client::{Client, CreateOptions};

/// Lock rounds per child process.
const ROUNDS: usize = 10;
/// Session timeout of the children, so a killed child's session dies fast.
const CHILD_SESSION: Duration = Duration::from_secs(2);

/// A child process running one role; killed (SIGKILL) on drop.
struct ChildProc {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildProc {
    fn spawn(role: &str, args: &[(&str, &str)]) -> ChildProc {
        let exe = std::env::current_exe().expect("test binary path");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--exact",
            "child_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ROOKERY_CHILD_ROLE", role)
        .env("ROOKERY_CHILD_SERVER", shared_server().connect_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in args {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildProc { child, lines: rx }
    }

    /// Waits for a line containing `marker`.
    fn expect_line(&self, marker: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(marker) => return,
                Ok(_) => {}
                Err(_) => panic!("child did not print {marker} within {timeout:?}"),
            }
        }
    }

    fn wait_success(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait child") {
                assert!(status.success(), "child failed: {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "child still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The children's entry point; a no-op unless run by the tests below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: run as a child process by the other tests of this file"]
async fn child_entry() {
    let Ok(role) = std::env::var("ROOKERY_CHILD_ROLE") else {
        return;
    };
    let server = std::env::var("ROOKERY_CHILD_SERVER").expect("server");
    let path = std::env::var("ROOKERY_CHILD_PATH").expect("path");
    let client = Client::builder(server)
        .session_timeout(CHILD_SESSION)
        .connect()
        .await
        .expect("child connect");
    match role.as_str() {
        "lock" => {
            let log = std::env::var("ROOKERY_CHILD_LOG").expect("log file");
            let lock = Lock::new(client.clone(), &format!("{path}/lock"));
            let counter = format!("{path}/counter");
            let me = std::process::id();
            for round in 0..ROUNDS {
                let guard = lock.acquire().await.expect("acquire");
                append(&log, &format!("start {me} {round}\n"));
                // An unprotected read-modify-write: only mutual exclusion keeps it exact.
                let (data, _) = client.get_data(&counter).await.expect("read counter");
                let n: u64 = String::from_utf8_lossy(&data).parse().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(3)).await;
                client
                    .set_data(&counter, (n + 1).to_string().as_bytes(), None)
                    .await
                    .expect("write counter");
                append(&log, &format!("end {me} {round}\n"));
                guard.release().await.expect("release");
            }
            client.close().await;
        }
        "leader" => {
            let latch = LeaderLatch::start(client.clone(), &path, "child")
                .await
                .expect("join election");
            assert!(latch.wait_leader(Duration::from_secs(20)).await);
            println!("LEADER");
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        "register" => {
            let address = std::env::var("ROOKERY_CHILD_ADDRESS").expect("address");
            let registry = ServiceRegistry::new(client.clone(), &path);
            let _reg = registry
                .register(ServiceInstance::new("svc", &address, 9000))
                .await
                .expect("register");
            println!("REGISTERED");
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        other => panic!("unknown role {other}"),
    }
}

fn append(path: &str, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    f.write_all(line.as_bytes()).expect("append log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_excludes_across_processes() {
    let base = unique("mplock");
    let c = bounded(
        "connect",
        30,
        Client::connect(&shared_server().connect_string()),
    )
    .await
    .unwrap();
    c.create_all(
        &format!("{base}/counter"),
        b"0",
        &CreateOptions::persistent(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let log_s = log.to_string_lossy().to_string();
    let children: Vec<ChildProc> = (0..3)
        .map(|_| {
            ChildProc::spawn(
                "lock",
                &[("ROOKERY_CHILD_PATH", &base), ("ROOKERY_CHILD_LOG", &log_s)],
            )
        })
        .collect();
    for mut child in children {
        tokio::task::block_in_place(|| child.wait_success(Duration::from_secs(120)));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3 * ROUNDS * 2, "{text}");
    // Strict alternation: every start is followed by the end of the same holder's round.
    for pair in lines.chunks(2) {
        let start = pair[0].strip_prefix("start ").expect(pair[0]);
        let end = pair[1].strip_prefix("end ").expect(pair[1]);
        assert_eq!(start, end, "overlapping critical sections:\n{text}");
    }
    let (data, _) = c.get_data(&format!("{base}/counter")).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&data), (3 * ROUNDS).to_string());
    c.delete_all(&base).await.unwrap();
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_with_sigkill_is_replaced() {
    let base = unique("mpleader");
    let mut child = ChildProc::spawn("leader", &[("ROOKERY_CHILD_PATH", &base)]);
    tokio::task::block_in_place(|| child.expect_line("LEADER", Duration::from_secs(60)));
    let c = bounded(
        "connect",
        30,
        Client::connect(&shared_server().connect_string()),
    )
    .await
    .unwrap();
    let latch = LeaderLatch::start(c.clone(), &base, "parent")
        .await
        .unwrap();
    assert!(!latch.wait_leader(Duration::from_millis(500)).await);
    assert_eq!(latch.participants().await.unwrap(), vec!["child", "parent"]);

    let killed = Instant::now();
    child.kill();
    assert!(
        latch.wait_leader(CHILD_SESSION * 3).await,
        "no takeover within {:?}",
        CHILD_SESSION * 3
    );
    let took = killed.elapsed();
    // Nobody else may lead before the dead leader's session expired.
    assert!(took >= CHILD_SESSION / 2, "took over after only {took:?}");
    assert_eq!(latch.participants().await.unwrap(), vec!["parent"]);
    latch.close().await.unwrap();
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_drops_killed_members() {
    let base = unique("mpregistry");
    let c = bounded(
        "connect",
        30,
        Client::connect(&shared_server().connect_string()),
    )
    .await
    .unwrap();
    let cache = ServiceRegistry::new(c.clone(), &base)
        .cache("svc")
        .await
        .unwrap();
    let mut one = ChildProc::spawn(
        "register",
        &[
            ("ROOKERY_CHILD_PATH", &base),
            ("ROOKERY_CHILD_ADDRESS", "one"),
        ],
    );
    let two = ChildProc::spawn(
        "register",
        &[
            ("ROOKERY_CHILD_PATH", &base),
            ("ROOKERY_CHILD_ADDRESS", "two"),
        ],
    );
    tokio::task::block_in_place(|| {
        one.expect_line("REGISTERED", Duration::from_secs(60));
        two.expect_line("REGISTERED", Duration::from_secs(60));
    });
    assert!(
        cache
            .wait_for(Duration::from_secs(10), |m| m.len() == 2)
            .await
    );
    one.kill();
    assert!(
        cache
            .wait_for(CHILD_SESSION * 4, |m| m.len() == 1 && m[0].address == "two")
            .await,
        "killed member still listed: {:?}",
        cache.instances()
    );
    drop(two);
    assert!(cache.wait_for(CHILD_SESSION * 4, |m| m.is_empty()).await);
    c.close().await;
}
