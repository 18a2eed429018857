//! Helpers for the storage-fault tests (`failpoints.rs`, `disk_full.rs`, `dir_fsync.rs`): a
//! rookery process on a data directory the test chooses (a tmpfs, a temp dir), with extra
//! environment (FAILPOINTS), whose exit status and log the test inspects; plus a blocking raw
//! client that reports a closed connection instead of panicking.
#![allow(dead_code)]

#[path = "../common/raw.rs"]
pub mod raw;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use raw::{op, Enc, RawConn, ReadOutcome};

/// ZooKeeper error code NONODE (-101).
pub const NO_NODE: i32 = -101;

pub fn rookery_bin() -> String {
    std::env::var("ROOKERY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_rookery").to_string())
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// One rookery process. Killed (SIGKILL) on drop if still running.
pub struct Server {
    pub port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
}

pub struct Launch<'a> {
    pub data_dir: &'a Path,
    pub log_path: &'a Path,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// Wrap the command (e.g. `strace -f ... --`).
    pub wrapper: Vec<String>,
    pub port: Option<u16>,
}

impl<'a> Launch<'a> {
    pub fn new(data_dir: &'a Path, log_path: &'a Path) -> Self {
        Launch {
            data_dir,
            log_path,
            env: Vec::new(),
            args: Vec::new(),
            wrapper: Vec::new(),
            port: None,
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    /// Spawns the server. Does not wait for it to serve (see [`Server::wait_ready`]).
    pub fn spawn(self) -> Server {
        let port = self.port.unwrap_or_else(free_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path)
            .expect("open server log");
        let bin = rookery_bin();
        let mut argv: Vec<String> = self.wrapper.clone();
        argv.push(bin);
        argv.extend(
            [
                "--port",
                &port.to_string(),
                "--address",
                "127.0.0.1",
                "--data-dir",
                &self.data_dir.display().to_string(),
                "--tick-time",
                "500",
                "--4lw-whitelist",
                "*",
                "--max-client-cnxns",
                "0",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        argv.extend(self.args.iter().cloned());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_remove("FAILPOINTS")
            .env("ROOKERY_LOG", "info,raft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log fd"))
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn rookery");
        Server {
            port,
            data_dir: self.data_dir.to_path_buf(),
            log_path: self.log_path.to_path_buf(),
            child: Some(child),
        }
    }
}

impl Server {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits until `ruok` answers `imok`; Err(status) if the process exited first.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit() {
                return Err(format!("exited during startup with {status}"));
            }
            if four_letter_word(self.port, "ruok").is_ok_and(|s| s == "imok") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("not serving within {limit:?}"))
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM, then waits (SIGKILL after 10 s).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        if let Some(s) = self.wait_exit(Duration::from_secs(10)) {
            return Some(s);
        }
        let child = self.child.as_mut()?;
        let _ = child.kill();
        child.wait().ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn four_letter(&self, word: &str) -> String {
        four_letter_word(self.port, word).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn four_letter_word(port: u16, word: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(word.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Outcome of one request on a connection the server may close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server replied with this error code (0 = ok).
    Reply(i32),
    /// The server closed the connection before replying (ZooKeeper: ConnectionLoss).
    Closed,
    /// No reply within the wait.
    TimedOut,
}

/// Sends a request and waits for its reply, skipping notifications and pings.
pub fn call(conn: &mut RawConn, opcode: i32, body: &[u8], wait: Duration) -> Outcome {
    let xid = conn.next_xid();
    let req = Enc::new().i32(xid).i32(opcode).raw(body).bytes();
    if !conn.try_write_raw(&raw::frame(&req)) {
        return Outcome::Closed;
    }
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome::TimedOut;
        }
        match conn.read_frame(left) {
            ReadOutcome::Frame(f) => {
                let mut d = raw::Dec::new(&f);
                let rxid = d.i32();
                let _zxid = d.i64();
                let err = d.i32();
                if rxid == xid {
                    return Outcome::Reply(err);
                }
            }
            ReadOutcome::Closed => return Outcome::Closed,
            ReadOutcome::TimedOut => return Outcome::TimedOut,
        }
    }
}

/// Opens a new session; None if the server refused or closed.
pub fn try_session(addr: &str, timeout_ms: i32) -> Option<RawConn> {
    let a: std::net::SocketAddr = addr.parse().ok()?;
    TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok()?;
    RawConn::connect_req(addr, &raw::ConnectRequest::new(timeout_ms))
        .ok()
        .map(|(c, _)| c)
}

/// Resumes an existing session on a new connection; None if refused or closed.
pub fn resume(addr: &str, old: &RawConn) -> Option<RawConn> {
    let mut req = raw::ConnectRequest::new(old.timeout);
    req.session_id = old.session_id;
    req.passwd = old.passwd.clone();
    req.last_zxid_seen = old.last_zxid;
    let (c, resp) = RawConn::connect_req(addr, &req).ok()?;
    (resp.session_id == old.session_id && resp.timeout > 0).then_some(c)
}

pub fn create(conn: &mut RawConn, path: &str, data: &[u8]) -> Outcome {
    call(
        conn,
        op::CREATE,
        &raw::create_req(path, data, 0),
        Duration::from_secs(10),
    )
}

pub fn exists(conn: &mut RawConn, path: &str) -> Outcome {
    call(
        conn,
        op::EXISTS,
        &raw::path_watch_req(path, false),
        Duration::from_secs(10),
    )
}

pub fn ping(conn: &mut RawConn) -> Outcome {
    // Pings use xid -2 and an empty body; the reply carries xid -2.
    let req = Enc::new().i32(-2).i32(op::PING).bytes();
    if !conn.try_write_raw(&raw::frame(&req)) {
        return Outcome::Closed;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome::TimedOut;
        }
        match conn.read_frame(left) {
            ReadOutcome::Frame(f) => {
                let mut d = raw::Dec::new(&f);
                if d.i32() == -2 {
                    let _ = d.i64();
                    return Outcome::Reply(d.i32());
                }
            }
            ReadOutcome::Closed => return Outcome::Closed,
            ReadOutcome::TimedOut => return Outcome::TimedOut,
        }
    }
}

/// After a restart: every path in `acked` must exist.
pub fn assert_all_present(addr: &str, acked: &[String]) {
    let mut c = try_session(addr, 10_000).expect("session after restart");
    let mut missing = Vec::new();
    for p in acked {
        match exists(&mut c, p) {
            Outcome::Reply(0) => {}
            other => missing.push((p.clone(), other)),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes missing after restart, e.g. {:?}",
        missing.len(),
        acked.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
}
