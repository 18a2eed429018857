//! A full disk under the real binary: the data directory lives on a small tmpfs this test
//! mounts (root only; skipped with a message where `mount` is refused), writers fill it, and:
//!
//! * nothing acknowledged is lost (checked after growing the tmpfs and after a restart);
//! * reads, pings and watch registration keep working on an existing session, which does not
//!   expire, although the disk stays full for longer than its timeout;
//! * writes are refused (the connection closes: ZooKeeper's ConnectionLoss) and new sessions
//!   fail cleanly, while the process stays up;
//! * the condition is logged once and shown in `mntr`;
//! * after `mount -o remount,size=...` writes resume by themselves, without a restart.
//!
//! tmpfs ignores fsync, so this shows ENOSPC behaviour, not power-loss durability.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod storage_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use storage_support::raw::{op, RawConn};
use storage_support::{
    assert_all_present, call, create, exists, ping, resume, try_session, Launch, Outcome,
};

/// A tmpfs mounted for the test; unmounted on drop, whatever happened.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// None (with the reason) where mounting is not possible here.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let parent = tempfile::Builder::new()
            .prefix("rookery-diskfull-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let dir = parent.path().join("mnt");
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs refused ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir,
            _parent: parent,
        })
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a server being killed): detach it so it goes once unused.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

fn mntr_value(server: &storage_support::Server, key: &str) -> Option<String> {
    server.four_letter("mntr").lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|v| v.strip_prefix('\t'))
            .map(|v| v.trim().to_string())
    })
}

/// getData with a watch: a read that also registers a watch.
fn get_data_watch(conn: &mut RawConn, path: &str) -> Outcome {
    call(
        conn,
        op::GET_DATA,
        &storage_support::raw::path_watch_req(path, true),
        Duration::from_secs(10),
    )
}

#[test]
fn full_disk_refuses_writes_keeps_reads_and_recovers_without_restart() {
    let fs = match Tmpfs::mount("6m") {
        Ok(fs) => fs,
        Err(reason) => {
            eprintln!("SKIP disk_full: {reason} (needs root and tmpfs)");
            return;
        }
    };
    let logdir = tempfile::tempdir().expect("tempdir");
    let log = logdir.path().join("server.log");
    let data = fs.path().join("data");
    let mut server = Launch::new(&data, &log).spawn();
    server
        .wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", server.log()));
    let addr = server.addr();

    // An existing session that only reads, pings and watches; 4 s timeout.
    let mut reader = try_session(&addr, 4_000).expect("reader session");
    assert_eq!(create(&mut reader, "/watched", b"v0"), Outcome::Reply(0));
    // Sessions that will each try one write while the disk is full (10 s timeout; expiry is a
    // log entry too, so none expires while full).
    let mut spares: Vec<_> = (0..6)
        .map(|_| try_session(&addr, 10_000).expect("spare session"))
        .collect();

    // Fill the disk: 32 KiB creates until one is not acknowledged, from this writer and two
    // concurrent ones (so the writes that hit the wall share Readies across sessions).
    let mut acked: Vec<String> = vec!["/watched".to_string()];
    let background: Vec<_> = (0..2)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                let Some(mut c) = try_session(&addr, 10_000) else {
                    return (mine, Outcome::Closed);
                };
                for i in 0..2_000 {
                    let path = format!("/bg{t}-{i}");
                    match create(&mut c, &path, &[0x33; 32 << 10]) {
                        Outcome::Reply(0) => mine.push(path),
                        other => return (mine, other),
                    }
                }
                (mine, Outcome::Reply(0))
            })
        })
        .collect();
    let mut writer = try_session(&addr, 10_000).expect("writer session");
    let fill_started = Instant::now();
    let mut first_failure = None;
    for i in 0..2_000 {
        let path = format!("/fill-{i}");
        match create(&mut writer, &path, &[0x5a; 32 << 10]) {
            Outcome::Reply(0) => acked.push(path),
            other => {
                first_failure = Some(other);
                break;
            }
        }
    }
    let first_failure = first_failure.expect("6 MiB never filled up");
    for handle in background {
        let (mine, how) = handle.join().expect("background writer");
        // Each background writer also stops at the wall, and only by a closed connection.
        assert_eq!(how, Outcome::Closed, "background writer stopped by {how:?}");
        acked.extend(mine);
    }
    eprintln!(
        "disk full after {} acknowledged 32 KiB writes (3 writers) in {:?}; the writer saw \
         {first_failure:?}",
        acked.len() - 1,
        fill_started.elapsed()
    );
    assert!(acked.len() > 10, "filled up too early");
    assert_eq!(
        first_failure,
        Outcome::Closed,
        "a write that cannot be made durable closes its connection (ConnectionLoss)"
    );
    assert!(server.try_exit().is_none(), "the process must stay up");
    assert_eq!(
        mntr_value(&server, "rookery_storage_full").as_deref(),
        Some("1")
    );

    // While full, for longer than the reader's session timeout: reads, pings and watch
    // registration work; writes and new sessions are refused cleanly.
    let full_until = Instant::now() + Duration::from_secs(6);
    let (mut reads, mut pings, mut refused_writes, mut refused_sessions) = (0, 0, 0, 0);
    let mut round = 0;
    while Instant::now() < full_until {
        round += 1;
        assert_eq!(ping(&mut reader), Outcome::Reply(0), "ping while full");
        pings += 1;
        let probe = &acked[round % acked.len()];
        assert_eq!(
            exists(&mut reader, probe),
            Outcome::Reply(0),
            "read {probe} while full"
        );
        reads += 1;
        if round % 4 == 0 {
            assert_eq!(get_data_watch(&mut reader, "/watched"), Outcome::Reply(0));
            // Resuming a session is a log entry (the Reattach fence moves its ownership to
            // the new connection), so like a new session it is refused while full: the
            // connection closes without a zero-timeout ("expired") answer, the session stays
            // live, and the same resume succeeds once space is freed (below).
            assert!(
                resume(&addr, &writer).is_none(),
                "a resume needs a log entry and must be refused while full"
            );
            // A session connected before the disk filled reads, and its write closes its
            // connection (ConnectionLoss); one spare session per round, since none can be
            // resumed while full.
            if let Some(mut w) = spares.pop() {
                assert_eq!(exists(&mut w, "/watched"), Outcome::Reply(0));
                assert_eq!(
                    create(&mut w, &format!("/refused-{round}"), b"x"),
                    Outcome::Closed
                );
            }
            refused_writes += 1;
            assert!(
                try_session(&addr, 4_000).is_none(),
                "a new session while full"
            );
            refused_sessions += 1;
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(server.try_exit().is_none(), "the process must stay up");
    eprintln!(
        "while full: {reads} reads and {pings} pings ok, {refused_writes} writes and \
         {refused_sessions} new sessions refused"
    );
    let log_text = server.log();
    assert_eq!(
        log_text.matches("storage full:").count(),
        1,
        "the condition is logged once:\n{log_text}"
    );

    // Free space: writes resume by themselves.
    fs.resize("64m");
    let resized = Instant::now();
    let resumed_after = loop {
        assert!(
            resized.elapsed() < Duration::from_secs(20),
            "writes did not resume after the remount; log:\n{}",
            server.log()
        );
        if let Some(mut w) = resume(&addr, &writer) {
            if create(&mut w, "/after", b"ok") == Outcome::Reply(0) {
                acked.push("/after".to_string());
                writer = w;
                break resized.elapsed();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("writes resumed {resumed_after:?} after the remount");
    assert_eq!(
        mntr_value(&server, "rookery_storage_full").as_deref(),
        Some("0")
    );
    let log_text = server.log();
    assert!(log_text.contains("writes resume"), "{log_text}");
    for line in log_text
        .lines()
        .filter(|l| l.contains("storage") || l.contains("snapshot"))
    {
        eprintln!("server log: {line}");
    }
    // The watch set while the disk was full fires; the reader's session survived.
    let set = storage_support::raw::set_data_req("/watched", b"v1", -1);
    assert_eq!(
        call(&mut writer, op::SET_DATA, &set, Duration::from_secs(10)),
        Outcome::Reply(0)
    );
    let event = reader
        .next_event(Duration::from_secs(10))
        .expect("watch event after recovery");
    assert_eq!((event.event_type, event.path.as_str()), (3, "/watched"));
    assert!(
        try_session(&addr, 4_000).is_some(),
        "new sessions work again"
    );
    for i in 0..20 {
        let path = format!("/more-{i}");
        assert_eq!(
            create(&mut writer, &path, &[1; 32 << 10]),
            Outcome::Reply(0)
        );
        acked.push(path);
    }

    // Every acknowledged write is there after a restart on the same (still mounted) tmpfs.
    assert_eq!(server.stop().and_then(|s| s.code()), Some(0));
    drop(server);
    let mut again = Launch::new(&data, &log).spawn();
    again
        .wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", again.log()));
    assert_all_present(&again.addr(), &acked);
    assert_eq!(again.stop().and_then(|s| s.code()), Some(0));
}

#[test]
fn shutdown_while_the_disk_is_full_is_clean_and_loses_nothing() {
    let fs = match Tmpfs::mount("4m") {
        Ok(fs) => fs,
        Err(reason) => {
            eprintln!("SKIP disk_full: {reason} (needs root and tmpfs)");
            return;
        }
    };
    let logdir = tempfile::tempdir().expect("tempdir");
    let log = logdir.path().join("server.log");
    let data = fs.path().join("data");
    let mut server = Launch::new(&data, &log).spawn();
    server
        .wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", server.log()));
    let mut acked = Vec::new();
    let mut writer = try_session(&server.addr(), 10_000).expect("writer session");
    let mut hit_the_wall = false;
    for i in 0..2_000 {
        let path = format!("/s-{i}");
        match create(&mut writer, &path, &[0x11; 32 << 10]) {
            Outcome::Reply(0) => acked.push(path),
            _ => {
                hit_the_wall = true;
                break;
            }
        }
    }
    assert!(hit_the_wall, "4 MiB never filled up");
    assert_eq!(
        mntr_value(&server, "rookery_storage_full").as_deref(),
        Some("1")
    );
    // SIGTERM while the raft thread is retrying: an orderly exit, not a hang or a crash.
    let stopped = Instant::now();
    let status = server.stop().expect("exit status");
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        stopped.elapsed()
    );
    drop(server);
    fs.resize("64m");
    let mut again = Launch::new(&data, &log).spawn();
    again
        .wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", again.log()));
    assert_all_present(&again.addr(), &acked);
    let mut c = try_session(&again.addr(), 10_000).expect("session after restart");
    assert_eq!(create(&mut c, "/post", b"ok"), Outcome::Reply(0));
    assert_eq!(again.stop().and_then(|s| s.code()), Some(0));
}
