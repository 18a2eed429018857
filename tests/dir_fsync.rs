//! Directory fsyncs, checked on the real binary under `strace`: when rookery creates its data
//! directory, `raft/` (with `data.mdb`) and `snapshots/`, it fsyncs each containing directory
//! before it listens for clients (so before any write can be acknowledged), and after renaming
//! a snapshot file into place it fsyncs `snapshots/`. Without this a power loss shortly after a
//! first start can lose `data.mdb`'s directory entry and with it every acknowledged write.
//!
//! Skipped, with a message, where `strace` is missing or ptrace is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod storage_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use storage_support::{create, try_session, Launch, Outcome};

/// One traced event, in trace order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    /// `openat` returned an fd for this path.
    Open(String),
    /// `fsync`/`fdatasync` of the file or directory this path was opened as.
    Fsync(String),
    /// A rename to this path.
    Rename { from: String, to: String },
    /// The server started listening for clients.
    Listen,
}

/// Parses `strace -f` output into events; resolves fds through the latest `openat` returning
/// them (threads share one fd table). Handles `<unfinished ...>` / `<... resumed>` pairs.
fn parse(trace: &str) -> Vec<Event> {
    let mut events = Vec::new();
    let mut fds: HashMap<i64, String> = HashMap::new();
    let mut pending: HashMap<String, String> = HashMap::new();
    for raw_line in trace.lines() {
        let (pid, rest) = match raw_line.split_once(' ') {
            Some((pid, rest)) if pid.chars().all(|c| c.is_ascii_digit()) => (pid, rest.trim()),
            _ => ("0", raw_line.trim()),
        };
        let line: String = if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid.to_string(), head.to_string());
            continue;
        } else if rest.starts_with("<...") {
            let Some(head) = pending.remove(pid) else {
                continue;
            };
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            format!("{head}{tail}")
        } else {
            rest.to_string()
        };
        let result = line.rsplit_once(" = ").map(|(_, r)| r.trim().to_string());
        let ok_fd = result
            .as_deref()
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.parse::<i64>().ok())
            .filter(|fd| *fd >= 0);
        let quoted: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        if line.starts_with("openat(") {
            if let (Some(fd), Some(path)) = (ok_fd, quoted.first()) {
                fds.insert(fd, path.to_string());
                events.push(Event::Open(path.to_string()));
            }
        } else if line.starts_with("fsync(") || line.starts_with("fdatasync(") {
            let arg = line
                .split_once('(')
                .and_then(|(_, a)| a.split(')').next())
                .and_then(|a| a.trim().parse::<i64>().ok());
            if let (Some(fd), Some(0)) = (arg, ok_fd) {
                if let Some(path) = fds.get(&fd) {
                    events.push(Event::Fsync(path.clone()));
                }
            }
        } else if line.starts_with("rename") {
            if let (Some(from), Some(to), Some(0)) = (quoted.first(), quoted.get(1), ok_fd) {
                events.push(Event::Rename {
                    from: from.to_string(),
                    to: to.to_string(),
                });
            }
        } else if line.starts_with("listen(") && ok_fd == Some(0) {
            events.push(Event::Listen);
        }
    }
    events
}

fn position(events: &[Event], what: impl Fn(&Event) -> bool) -> Option<usize> {
    events.iter().position(what)
}

fn strace_usable() -> Result<(), String> {
    let out = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", "trace=none", "true"])
        .output()
        .map_err(|e| format!("strace is missing ({e}); install the strace package"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "strace cannot trace here (ptrace refused?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The events under the test's directory (not the loader's and /proc opens), for messages.
fn relevant(events: &[Event], root: &Path) -> Vec<Event> {
    let root = s(root);
    events
        .iter()
        .filter(|e| match e {
            Event::Open(p) | Event::Fsync(p) => p.starts_with(&root),
            Event::Rename { to, .. } => to.starts_with(&root),
            Event::Listen => true,
        })
        .cloned()
        .collect()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn new_directories_and_renamed_files_are_fsynced_before_anything_is_acknowledged() {
    if let Err(reason) = strace_usable() {
        eprintln!("SKIP dir_fsync: {reason}");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("rookery-dirfsync-")
        .tempdir()
        .expect("tempdir");
    // Two levels that do not exist yet: rookery creates both.
    let base = tmp.path().join("new");
    let data: PathBuf = base.join("data");
    let log = tmp.path().join("server.log");
    let trace_path = tmp.path().join("trace");
    let mut launch = Launch::new(&data, &log).arg("--snap-count").arg("10");
    launch.wrapper = [
        "strace",
        "-f",
        "-o",
        &s(&trace_path),
        "-e",
        "trace=openat,fsync,fdatasync,rename,renameat,renameat2,listen",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut server = launch.spawn();
    server
        .wait_ready(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", server.log()));

    // Enough writes for a snapshot (snapCount 10), then wait for its file.
    let mut c = try_session(&server.addr(), 10_000).expect("session");
    for i in 0..30 {
        assert_eq!(create(&mut c, &format!("/n-{i}"), b"x"), Outcome::Reply(0));
    }
    let snapshots = data.join("snapshots");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_dir(&snapshots)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".bin"))
        })
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "no snapshot file written");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(c);

    // Stop the traced server itself (SIGTERM to strace would only detach it).
    let trace = std::fs::read_to_string(&trace_path).expect("read trace");
    let server_pid = trace
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().next())
        .expect("trace has a first line")
        .to_string();
    let _ = Command::new("kill").args(["-TERM", &server_pid]).status();
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(status.is_some(), "traced server did not stop");
    let trace = std::fs::read_to_string(&trace_path).expect("read trace");
    let events = parse(&trace);
    let shown = relevant(&events, tmp.path());

    let raft = data.join("raft");
    let listen = position(&events, |e| *e == Event::Listen).expect("listen() in the trace");
    let fsync_of = |p: &Path| {
        let p = s(p);
        move |e: &Event| *e == Event::Fsync(p.clone())
    };
    let created_mdb = position(&events, |e| *e == Event::Open(s(&raft.join("data.mdb"))))
        .expect("data.mdb opened");
    for (dir, why) in [
        (
            &tmp.path().to_path_buf(),
            "parent of the new base directory",
        ),
        (&base, "parent of the data directory"),
        (&data, "data directory (holds raft/ and snapshots/)"),
        (&snapshots, "snapshots/"),
    ] {
        let at = position(&events, fsync_of(dir))
            .unwrap_or_else(|| panic!("no fsync of {} ({why}); events: {shown:?}", dir.display()));
        assert!(
            at < listen,
            "fsync of {} ({why}) only after listen()",
            dir.display()
        );
    }
    // raft/ must be fsynced after data.mdb was created in it, and before listening.
    let raft_sync = events
        .iter()
        .enumerate()
        .skip(created_mdb)
        .find(|(_, e)| fsync_of(&raft)(e))
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("raft/ not fsynced after data.mdb was created: {shown:?}"));
    assert!(raft_sync < listen, "raft/ fsynced only after listen()");
    // The data directory must be fsynced after raft/ and snapshots/ were created in it: the
    // last such fsync comes after the first open of either.
    let first_sub = position(&events, |e| {
        matches!(e, Event::Open(p) if p.starts_with(&s(&raft)) || p.starts_with(&s(&snapshots)))
    })
    .expect("raft/ or snapshots/ opened");
    let data_sync_after = events
        .iter()
        .enumerate()
        .skip(first_sub)
        .any(|(i, e)| i < listen && fsync_of(&data)(e));
    assert!(
        data_sync_after,
        "data dir not fsynced after creating its subdirectories"
    );

    // A snapshot renamed into place is followed by an fsync of snapshots/.
    let rename = position(&events, |e| {
        matches!(e, Event::Rename { to, .. } if to.starts_with(&s(&snapshots)) && to.ends_with(".bin"))
    })
    .unwrap_or_else(|| panic!("no snapshot rename in the trace: {shown:?}"));
    assert!(
        events.iter().skip(rename).any(|e| fsync_of(&snapshots)(e)),
        "snapshots/ not fsynced after the rename"
    );
    eprintln!(
        "dir_fsync: {} traced events; listen at #{listen}; raft/ fsynced at #{raft_sync}, snapshot \
         rename at #{rename}",
        events.len()
    );
}

/// The normal build has no failpoint code: the binary cargo built for this (feature-less) test
/// run does not contain the failpoint names.
#[cfg(not(feature = "failpoints"))]
#[test]
fn normal_build_has_no_failpoints() {
    let bin = std::fs::read(storage_support::rookery_bin()).expect("read the rookery binary");
    for name in [
        "raft-log-write",
        "raft-log-fsync",
        "raft-before-apply",
        "snapshot-file-write",
        "sync-skip-barrier",
    ] {
        assert!(
            !bin.windows(name.len()).any(|w| w == name.as_bytes()),
            "failpoint {name} compiled into the normal build"
        );
    }
}
