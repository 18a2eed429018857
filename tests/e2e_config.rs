//! The binary's configuration: a zoo.cfg-compatible file, flags overriding it, clear errors for
//! bad values, and graceful shutdown on SIGTERM. Rookery only (it tests rookery's own binary).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;

fn rookery() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rookery"))
}

fn ask(port: u16, word: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(word.as_bytes()).ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

fn wait_for(port: u16, word: &str, expect: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(answer) = ask(port, word) {
            if answer.contains(expect) {
                return answer;
            }
        }
        assert!(
            Instant::now() < deadline,
            "server on {port} never answered {word}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn zoo_cfg_is_read_and_flags_override_it() {
    if common::is_zk() {
        return; // rookery's own command line; nothing to compare against ZooKeeper
    }
    let dir = tempfile::tempdir().unwrap();
    let file_port = free_port();
    let flag_port = free_port();
    let cfg = dir.path().join("zoo.cfg");
    std::fs::write(
        &cfg,
        format!(
            "# a ZooKeeper config\ntickTime=500\ninitLimit=10\nclientPort={file_port}\n\
             clientPortAddress=127.0.0.1\ndataDir={}\n4lw.commands.whitelist=ruok,conf,srvr\n\
             someUnknownKey=1\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = rookery()
        .arg("--config")
        .arg(&cfg)
        .arg("--port")
        .arg(flag_port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let conf = wait_for(flag_port, "conf", "tickTime");
    assert!(conf.contains("tickTime=500"), "{conf}");
    assert!(conf.contains(&format!("clientPort={flag_port}")), "{conf}");
    assert!(conf.contains("minSessionTimeout=1000"), "{conf}");
    assert!(conf.contains("maxSessionTimeout=10000"), "{conf}");
    // The whitelist from the file applies: wchs is not in it.
    let wchs = ask(flag_port, "wchs").unwrap_or_default();
    assert!(wchs.contains("not in the whitelist"), "{wchs}");
    assert!(
        ask(file_port, "ruok").is_none(),
        "the flag must override the file's port"
    );
    assert!(dir.path().join("data").join("raft").exists());

    // SIGTERM: a graceful, successful exit, with the unknown key warned about.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(log.contains("someUnknownKey"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn bad_values_are_clear_errors_at_start_up() {
    if common::is_zk() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("clientPort=notaport\n", "clientPort"),
        ("tickTime=-5\n", "tickTime"),
        (
            "maxSessionTimeout=100\nminSessionTimeout=5000\n",
            "minSessionTimeout",
        ),
        ("extendedTypesEnabled=maybe\n", "extendedTypesEnabled"),
        ("justakey\n", "key=value"),
    ];
    for (text, needle) in cases {
        let cfg = dir.path().join("bad.cfg");
        std::fs::write(&cfg, text).unwrap();
        let out = rookery()
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(stderr.contains(needle), "{text:?}: {stderr}");
    }
    let out = rookery()
        .arg("--config")
        .arg(dir.path().join("missing.cfg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.cfg"));
}

#[test]
fn a_data_dir_serves_one_server_at_a_time() {
    if common::is_zk() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = rookery()
        .args(["--port", &port.to_string(), "--4lw-whitelist", "ruok"])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(port, "ruok", "imok");
    let second = rookery()
        .args(["--port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let _ = first.kill();
    let _ = first.wait();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "second server started: {stderr}");
    assert!(
        stderr.contains("in use by another rookery process"),
        "{stderr}"
    );
}
