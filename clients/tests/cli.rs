//! The `rookery-cli` binary in one-shot mode and as a scripted shell.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{shared_server, unique};

const CLI: &str = env!("CARGO_BIN_EXE_rookery-cli");

/// Runs `rookery-cli -server S args...`.
fn one_shot(args: &[&str]) -> Output {
    Command::new(CLI)
        .arg("-server")
        .arg(shared_server().connect_string())
        .args(args)
        .output()
        .expect("run rookery-cli")
}

/// Feeds a script to the shell on stdin.
fn script(lines: &str) -> Output {
    let mut child = Command::new(CLI)
        .arg("--server")
        .arg(shared_server().connect_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rookery-cli");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.as_bytes())
        .expect("write script");
    child.wait_with_output().expect("wait rookery-cli")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(args: &[&str]) -> String {
    let o = one_shot(args);
    assert!(o.status.success(), "{args:?} failed: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn one_shot_commands() {
    let base = unique("cli");
    assert!(ok(&["ls", "/"]).trim_end().ends_with("zookeeper]"));
    assert_eq!(ok(&["create", &base, "hello"]), format!("Created {base}\n"));
    assert_eq!(ok(&["get", &base]), "hello\n");
    assert_eq!(
        ok(&["create", &format!("{base}/b")]),
        format!("Created {base}/b\n")
    );
    assert_eq!(
        ok(&["create", &format!("{base}/a"), "x"]),
        format!("Created {base}/a\n")
    );
    assert_eq!(ok(&["ls", &base]), "[a, b]\n");

    let stat = ok(&["stat", &base]);
    let fields: Vec<&str> = stat
        .lines()
        .map(|l| l.split(" = ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        fields,
        vec![
            "cZxid",
            "ctime",
            "mZxid",
            "mtime",
            "pZxid",
            "cversion",
            "dataVersion",
            "aclVersion",
            "ephemeralOwner",
            "dataLength",
            "numChildren"
        ]
    );
    assert!(stat.starts_with("cZxid = 0x"), "{stat}");
    assert!(stat.contains("numChildren = 2\n"), "{stat}");
    assert!(stat.contains("dataLength = 5\n"), "{stat}");

    let ls_s = ok(&["ls", "-s", &base]);
    assert!(ls_s.starts_with("[a, b]\ncZxid = 0x"), "{ls_s}");
    let get_s = ok(&["get", "-s", &base]);
    assert!(get_s.starts_with("hello\ncZxid"), "{get_s}");

    ok(&["set", &base, "world"]);
    assert_eq!(ok(&["get", &base]), "world\n");
    let set_s = ok(&["set", "-s", "-v", "1", &base, "again"]);
    assert!(set_s.contains("dataVersion = 2\n"), "{set_s}");

    // Sequential, ephemeral (dies with the one-shot session), container, TTL.
    let seq = ok(&["create", "-s", &format!("{base}/s-"), "d"]);
    assert!(
        seq.starts_with(&format!("Created {base}/s-0000000")),
        "{seq}"
    );
    let eph = ok(&["create", "-e", &format!("{base}/e")]);
    assert_eq!(eph, format!("Created {base}/e\n"));
    ok(&["create", "-c", &format!("{base}/c")]);
    ok(&["create", "-t", "60000", &format!("{base}/ttl")]);
    let o = one_shot(&["create", "-c", "-e", &format!("{base}/bad")]);
    assert!(!o.status.success());

    assert_eq!(
        ok(&["ls", "-R", &base]),
        format!("{base}\n{base}/a\n{base}/b\n{base}/c\n{base}/s-0000000002\n{base}/ttl\n")
    );
    assert_eq!(ok(&["getAllChildrenNumber", &base]), "5\n");
    assert_eq!(ok(&["sync", &base]), "Sync is OK\n");
    assert_eq!(ok(&["getEphemerals", &base]), "[]\n");

    assert_eq!(ok(&["getAcl", &base]), "'world,'anyone\n: cdrwa\n");
    ok(&["setAcl", &format!("{base}/a"), "world:anyone:r"]);
    assert_eq!(
        ok(&["getAcl", &format!("{base}/a")]),
        "'world,'anyone\n: r\n"
    );
    let o = one_shot(&["set", &format!("{base}/a"), "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        format!("Insufficient permission : {base}/a")
    );

    let who = ok(&["whoami"]);
    assert!(who.starts_with("Auth scheme: User\nip: 127.0.0.1"), "{who}");
    ok(&["config"]);

    // Errors: zkCli's messages, exit code 1.
    let missing = format!("{base}/missing");
    for (args, message) in [
        (
            vec!["get", missing.as_str()],
            format!("Node does not exist: {missing}"),
        ),
        (
            vec!["stat", missing.as_str()],
            format!("Node does not exist: {missing}"),
        ),
        (
            vec!["create", base.as_str()],
            format!("Node already exists: {base}"),
        ),
        (
            vec!["delete", base.as_str()],
            format!("Node not empty: {base}"),
        ),
        (
            vec!["set", "-v", "9", base.as_str(), "x"],
            format!("version No is not valid : {base}"),
        ),
        (
            vec!["ls", missing.as_str()],
            format!("Node does not exist: {missing}"),
        ),
    ] {
        let o = one_shot(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&o).trim(), message, "{args:?}");
        assert!(stdout(&o).is_empty());
    }
    let o = one_shot(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Command not found"));
    let o = one_shot(&["get"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("get [-s] [-w] path"), "{}", stderr(&o));

    ok(&["delete", "-v", "0", &format!("{base}/b")]);
    ok(&["deleteall", &base]);
    let o = one_shot(&["stat", &base]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn unreachable_server_exits_non_zero() {
    let port = common::free_port();
    let o = Command::new(CLI)
        .args([
            "-server",
            &format!("127.0.0.1:{port}"),
            "-timeout",
            "2000",
            "ls",
            "/",
        ])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Unable to connect"), "{}", stderr(&o));
}

#[test]
fn scripted_shell() {
    let base = unique("clish");
    let o = script(&format!(
        "create {base} \"two words\"\n\
         get {base}\n\
         create -e {base}/eph\n\
         getEphemerals {base}\n\
         addauth digest u:p\n\
         whoami\n\
         create {base}/secret s digest:u:{}:cdrwa\n\
         get {base}/secret\n\
         addWatch -m PERSISTENT {base}\n\
         removewatches {base} -a\n\
         removewatches {base}\n\
         delete {base}/eph\n\
         deleteall {base}\n\
         ls {base}\n\
         quit\n\
         ls /\n",
        rookery_client::acls::digest_id("u", "p")
            .split_once(':')
            .map(|x| x.1)
            .unwrap_or("")
    ));
    let out = stdout(&o);
    let err = stderr(&o);
    assert_eq!(
        out,
        format!(
            "Created {base}\ntwo words\nCreated {base}/eph\n[{base}/eph]\n\
             Auth scheme: User\nip: 127.0.0.1\ndigest: u\nCreated {base}/secret\ns\n"
        ),
        "stderr: {err}"
    );
    // The second removewatches and the final ls fail; `quit` stops before `ls /`.
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        vec![
            format!("No watcher of the given type on path: {base}"),
            format!("Node does not exist: {base}"),
        ]
    );
    assert_eq!(o.status.code(), Some(1));

    let o = script("ls /\n# a comment\n\nsync /\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).ends_with("zookeeper]\nSync is OK\n"),
        "{}",
        stdout(&o)
    );
}

/// `-h` and `--help` print the usage on stdout and exit 0 without connecting (the server
/// given is one nobody listens on); a bad option still fails with the usage on stderr.
#[test]
fn help_flags_print_usage_and_exit_zero() {
    for flag in ["-h", "--help"] {
        let o = Command::new(CLI)
            .args(["-server", "127.0.0.1:1", flag])
            .output()
            .expect("run rookery-cli");
        assert!(o.status.success(), "{flag}: {o:?}");
        let out = stdout(&o);
        assert!(out.starts_with("usage: rookery-cli"), "{flag}: {out}");
        assert!(out.contains("-server host:port"), "{out}");
        assert!(out.contains("create [-s] [-e]"), "commands listed: {out}");
    }
    let o = Command::new(CLI)
        .arg("-timeout")
        .output()
        .expect("run rookery-cli");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("usage: rookery-cli"), "{}", stderr(&o));
}
