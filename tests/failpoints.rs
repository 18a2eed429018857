//! Storage faults injected with failpoints into the real binary (the `fail` crate, configured
//! through the `FAILPOINTS` environment variable). Built only with the `failpoints` feature:
//!
//! ```text
//! cargo test --features failpoints --test failpoints
//! ```
//!
//! Each test runs a writer that records every acknowledged create, injects one fault (an LMDB
//! write error, an fsync error, a panic at a point between persisting, sending and applying, a
//! snapshot write error), checks that the process exits non-zero with a log line naming the
//! fault or recovers by itself, and then restarts on the same data directory and checks that
//! every acknowledged write is there.
#![cfg(feature = "failpoints")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod storage_support;

use std::time::{Duration, Instant};

use storage_support::{assert_all_present, create, try_session, Launch, Outcome, Server};

/// Exit code of `main` after a fatal error (see `src/main.rs`).
const FATAL_EXIT: i32 = 3;

struct Run {
    _tmp: tempfile::TempDir,
    data: std::path::PathBuf,
    log: std::path::PathBuf,
}

fn run_dir(name: &str) -> Run {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("rookery-fp-{name}-"))
        .tempdir()
        .expect("tempdir");
    let data = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    Run {
        _tmp: tmp,
        data,
        log,
    }
}

/// Writes `/w-<i>` one after another (each is acknowledged before the next is sent) until a
/// write is not acknowledged, the connection closes, or `limit` writes or `time` have passed.
/// Returns the acknowledged paths and how the writer stopped.
fn write_until_failure(server: &Server, limit: usize, time: Duration) -> (Vec<String>, Outcome) {
    let mut acked = Vec::new();
    let Some(mut c) = try_session(&server.addr(), 10_000) else {
        return (acked, Outcome::Closed);
    };
    let deadline = Instant::now() + time;
    for i in 0..limit {
        if Instant::now() > deadline {
            return (acked, Outcome::TimedOut);
        }
        let path = format!("/w-{i}");
        match create(&mut c, &path, &[7u8; 512]) {
            Outcome::Reply(0) => acked.push(path),
            other => return (acked, other),
        }
    }
    (acked, Outcome::Reply(0))
}

/// Starts with `failpoints`, writes until the fault hits, expects a non-zero exit with
/// `log_line`, then restarts cleanly and checks every acknowledged write.
fn expect_fail_stop(name: &str, failpoints: &str, log_line: &str) {
    let run = run_dir(name);
    let mut server = Launch::new(&run.data, &run.log)
        .env("FAILPOINTS", failpoints)
        .spawn();
    server
        .wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{name}: {e}; log:\n{}", server.log()));
    let (acked, how) = write_until_failure(&server, 2_000, Duration::from_secs(60));
    assert_ne!(
        how,
        Outcome::Reply(0),
        "{name}: the fault never struck; log:\n{}",
        server.log()
    );
    assert!(
        !acked.is_empty(),
        "{name}: fault before the first write; raise the skip count"
    );
    let status = server
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| {
            panic!(
                "{name}: process still up after the fault; log:\n{}",
                server.log()
            )
        });
    assert_eq!(
        status.code(),
        Some(FATAL_EXIT),
        "{name}: exit status {status}; log:\n{}",
        server.log()
    );
    let log = server.log();
    assert!(
        log.contains(log_line),
        "{name}: no {log_line:?} in the log:\n{log}"
    );
    assert!(
        log.contains("rookery is exiting after a fatal error"),
        "{name}: no exit line in the log:\n{log}"
    );
    drop(server);

    let mut again = Launch::new(&run.data, &run.log).spawn();
    again
        .wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{name} restart: {e}; log:\n{}", again.log()));
    assert_all_present(&again.addr(), &acked);
    eprintln!(
        "{name}: {} acknowledged writes before the fault, all present after restart",
        acked.len()
    );
    assert_eq!(again.stop().and_then(|s| s.code()), Some(0));
}

#[test]
fn lmdb_write_error_is_fatal() {
    expect_fail_stop(
        "write-eio",
        "raft-log-write=40*off->return(eio)",
        "fatal storage error",
    );
}

#[test]
fn fsync_error_is_fatal() {
    expect_fail_stop(
        "fsync-eio",
        "raft-log-fsync=40*off->return(eio)",
        "fsync of the raft log failed",
    );
}

#[test]
fn fsync_enospc_is_fatal_too() {
    // A failed fsync is never retried, whatever errno it reports.
    expect_fail_stop(
        "fsync-enospc",
        "raft-log-fsync=40*off->return(enospc)",
        "fsync of the raft log failed",
    );
}

#[test]
fn panic_before_persisting_is_fatal() {
    expect_fail_stop(
        "panic-before-persist",
        "raft-before-persist=40*off->panic",
        "raft thread panicked",
    );
}

#[test]
fn panic_after_persisting_is_fatal() {
    expect_fail_stop(
        "panic-after-persist",
        "raft-after-persist=40*off->panic",
        "raft thread panicked",
    );
}

#[test]
fn panic_after_sending_is_fatal() {
    expect_fail_stop(
        "panic-after-send",
        "raft-after-send=40*off->panic",
        "raft thread panicked",
    );
}

#[test]
fn panic_before_applying_is_fatal() {
    expect_fail_stop(
        "panic-before-apply",
        "raft-before-apply=40*off->panic",
        "raft thread panicked",
    );
}

#[test]
fn panic_after_applying_is_fatal() {
    expect_fail_stop(
        "panic-after-apply",
        "raft-after-apply=40*off->panic",
        "raft thread panicked",
    );
}

#[test]
fn lmdb_enospc_is_retried_and_writes_resume() {
    let run = run_dir("write-enospc");
    // 40 writes pass, then 6 fail for lack of space (retried with backoff), then room again.
    let mut server = Launch::new(&run.data, &run.log)
        .env("FAILPOINTS", "raft-log-write=40*off->6*return(enospc)->off")
        .spawn();
    server
        .wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", server.log()));
    let mut acked = Vec::new();
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    // Keep writing (reconnecting when a write is refused) until 100 writes were acknowledged.
    while acked.len() < 100 {
        assert!(
            Instant::now() < deadline,
            "writes did not resume; log:\n{}",
            server.log()
        );
        let Some(mut c) = try_session(&server.addr(), 10_000) else {
            refused += 1;
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        while acked.len() < 100 {
            let path = format!("/r-{i}");
            i += 1;
            match create(&mut c, &path, b"x") {
                Outcome::Reply(0) => acked.push(path),
                _ => {
                    refused += 1;
                    break;
                }
            }
        }
    }
    assert!(
        server.try_exit().is_none(),
        "the process must survive a full disk"
    );
    assert!(refused >= 1, "the injected ENOSPC never reached a writer");
    let log = server.log();
    assert_eq!(
        log.matches("storage full").count(),
        1,
        "logged once per episode:\n{log}"
    );
    assert!(log.contains("writes resume"), "{log}");
    assert_eq!(server.stop().and_then(|s| s.code()), Some(0));
    drop(server);
    let mut again = Launch::new(&run.data, &run.log).spawn();
    again.wait_ready(Duration::from_secs(30)).expect("restart");
    assert_all_present(&again.addr(), &acked);
}

#[test]
fn snapshot_write_errors_are_survived() {
    snapshot_fault_is_survived("snapshot-enospc", "snapshot-file-write=return(enospc)");
}

#[test]
fn a_panic_in_the_snapshot_writer_is_survived() {
    // The writer thread's panic becomes a failed (retried) snapshot, not a wedged
    // "snapshot in flight" state or a dead process.
    snapshot_fault_is_survived("snapshot-panic", "snapshot-file-write=panic");
}

/// Every snapshot write fails: the server keeps taking writes, counts the failures in `mntr`,
/// and a restart (replaying the uncompacted log) has every acknowledged write.
fn snapshot_fault_is_survived(name: &str, failpoints: &str) {
    let run = run_dir(name);
    let mut server = Launch::new(&run.data, &run.log)
        .env("FAILPOINTS", failpoints)
        .arg("--snap-count")
        .arg("20")
        .spawn();
    server
        .wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", server.log()));
    let (acked, how) = write_until_failure(&server, 200, Duration::from_secs(60));
    assert_eq!(how, Outcome::Reply(0), "log:\n{}", server.log());
    assert_eq!(acked.len(), 200);
    let mntr = server.four_letter("mntr");
    let failures: u64 = mntr
        .lines()
        .find_map(|l| l.strip_prefix("rookery_snapshot_failures\t"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no snapshot failures in mntr:\n{mntr}"));
    assert!(failures >= 1, "mntr:\n{mntr}");
    assert!(server.try_exit().is_none());
    assert_eq!(server.stop().and_then(|s| s.code()), Some(0));
    drop(server);
    let mut again = Launch::new(&run.data, &run.log).spawn();
    again.wait_ready(Duration::from_secs(30)).expect("restart");
    assert_all_present(&again.addr(), &acked);
}
