//! Read-only mode (issue 8 part 3; ZooKeeper's `readonlymode.enabled`), on a 3-server ensemble
//! with TCP proxies on every peer link (tests/common/cluster.rs):
//! * `partitioned_follower_serves_read_only_clients`: a follower cut off from the quorum goes
//!   read-only (`srvr` Mode, `isro` = `ro`, `mntr` `zk_server_state`); a client whose
//!   ConnectRequest sets `readOnly` is admitted with the read-only flag in the ConnectResponse
//!   and reads what was written before the cut; creates, setData, multi and sync get
//!   NotReadOnly (-119); a client that did not ask for read-only is refused (socket closed);
//!   after healing, the read-only connection is closed and a normal session works there.
//! * `partitioned_leader_goes_read_only`: the same for a leader cut off from both followers
//!   (it steps down first; the majority elects a new leader).
//! * `cut_off_member_without_read_only_mode_answers_isro_null`: with the mode off, a cut-off
//!   member answers `isro` with `null` and admits nobody.
//!
//! The same test runs against a ZooKeeper 3.8 ensemble with `E2E_TARGET=zk` (the harness turns
//! `readonlymode.enabled=true` into ZooKeeper's system property), which checks that what it
//! asserts is ZooKeeper's behaviour. Rookery-only checks (the local session id space) are
//! skipped there.
//!
//! ```text
//! cargo test --test ensemble_readonly -- --test-threads=1 --nocapture
//! E2E_TARGET=zk cargo test --test ensemble_readonly -- --test-threads=1 --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::time::{Duration, Instant};

use common::cluster::{exclusive, Cluster, ClusterOpts, Mode};
use common::is_zk;
use common::raw::{self, ConnectRequest, Dec, Enc, RawConn, ReadOutcome};

const TICK_MS: u64 = 200;
/// NotReadOnly.
const NOT_READ_ONLY: i32 = -119;
const OP_CREATE: i32 = 1;
const OP_GET_DATA: i32 = 4;
const OP_SET_DATA: i32 = 5;
const OP_GET_CHILDREN: i32 = 8;
const OP_SYNC: i32 = 9;
const OP_MULTI: i32 = 14;
const OP_CLOSE: i32 = -11;

fn opts() -> ClusterOpts {
    ClusterOpts {
        proxied: true,
        tick_time_ms: TICK_MS,
        extra_cfg: vec![
            "readonlymode.enabled=true".to_string(),
            "minSessionTimeout=2000".to_string(),
            "maxSessionTimeout=20000".to_string(),
            // ZooKeeper: kazoo's read-only clients need local sessions (running-zookeeper.md);
            // harmless for the raw client here, and accepted by rookery.
            "localSessionsEnabled=true".to_string(),
            "localSessionsUpgradingEnabled=true".to_string(),
        ],
        ..ClusterOpts::default()
    }
}

/// Polls `f` every 100 ms until it holds; panics with `what` after `secs`.
fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {secs}s: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A raw session on `addr`, retrying (bounded) while the member does not serve yet.
fn connect_retrying(addr: &str, read_only: bool, secs: u64) -> (RawConn, raw::ConnectResponse) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut req = ConnectRequest::new(6000);
        req.read_only = read_only;
        match RawConn::connect_req(addr, &req) {
            Ok((conn, resp)) if resp.session_id != 0 => return (conn, resp),
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no session on {addr} within {secs}s: {:?}",
                    other.map(|(_, r)| r)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn get_data(conn: &mut RawConn, path: &str) -> (i32, Option<Vec<u8>>) {
    let reply = conn.call(OP_GET_DATA, &raw::path_watch_req(path, false));
    if reply.err != 0 {
        return (reply.err, None);
    }
    (0, Dec::new(&reply.body).buf())
}

#[test]
fn partitioned_follower_serves_read_only_clients() {
    let _one = exclusive();
    let ens = Cluster::start(opts());
    let leader = ens.wait_ready(60);
    let f = ens.others(leader)[0];

    // Written before the cut, through the leader, and seen on the follower.
    let (mut writer, _) = connect_retrying(&ens.addr(leader), false, 20);
    let created = writer.call(
        OP_CREATE,
        &raw::create_req("/ro-data", b"before the partition", 0),
    );
    assert_eq!(created.err, 0, "create on the leader");
    let (mut on_f, _) = connect_retrying(&ens.addr(f), false, 20);
    wait_for("the follower has /ro-data", 20, || {
        get_data(&mut on_f, "/ro-data").0 == 0
    });

    ens.partition(f);
    wait_for(
        "the partitioned follower reports Mode: read-only",
        60,
        || ens.mode(f) == Some(Mode::ReadOnly),
    );
    assert_eq!(ens.four_letter(f, "isro").unwrap().trim(), "ro");
    assert_eq!(
        ens.mntr(f).get("zk_server_state").map(String::as_str),
        Some("read-only")
    );
    // Its read-write connection was closed when it went read-only (or when it lost contact).
    assert!(
        on_f.wait_closed(Duration::from_secs(10)),
        "the read-write connection on the cut-off follower stays open"
    );

    // A client that did not ask for read-only is refused: the socket closes, no answer.
    let refused = RawConn::connect_req(&ens.addr(f), &ConnectRequest::new(6000));
    assert!(
        matches!(refused, Err(ReadOutcome::Closed)),
        "a not-read-only client was admitted in read-only mode: {:?}",
        refused.map(|(_, r)| r)
    );

    // A read-only client is admitted, told so, and reads the local tree.
    let (mut ro, resp) = connect_retrying(&ens.addr(f), true, 20);
    assert_eq!(resp.read_only, Some(true), "ConnectResponse read-only flag");
    assert!(resp.timeout > 0);
    if !is_zk() {
        assert!(
            resp.session_id < 0,
            "rookery's local session ids have the high bit set: {:#x}",
            resp.session_id
        );
    }
    let (err, data) = get_data(&mut ro, "/ro-data");
    assert_eq!(err, 0);
    assert_eq!(data.as_deref(), Some(&b"before the partition"[..]));
    if !is_zk() {
        assert_eq!(
            ens.mntr(f).get("zk_local_sessions").map(String::as_str),
            Some("1")
        );
    }
    let children = ro.call(OP_GET_CHILDREN, &raw::path_watch_req("/", false));
    assert_eq!(children.err, 0);
    assert!(Dec::new(&children.body)
        .strs()
        .contains(&"ro-data".to_string()));

    // Writes and sync: NotReadOnly, and the connection stays usable.
    let create = ro.call(OP_CREATE, &raw::create_req("/ro-new", b"x", 0));
    assert_eq!(create.err, NOT_READ_ONLY, "create in read-only mode");
    let set = ro.call(OP_SET_DATA, &raw::set_data_req("/ro-data", b"y", -1));
    assert_eq!(set.err, NOT_READ_ONLY, "setData in read-only mode");
    let sync = ro.call(OP_SYNC, &Enc::new().str("/").bytes());
    assert_eq!(sync.err, NOT_READ_ONLY, "sync in read-only mode");
    // multi([create]): type, done, err, then the create body; terminated by (-1, true, -1).
    let multi_body = Enc::new()
        .i32(OP_CREATE)
        .bool(false)
        .i32(-1)
        .raw(&raw::create_req("/ro-multi", b"m", 0))
        .i32(-1)
        .bool(true)
        .i32(-1)
        .bytes();
    let multi = ro.call(OP_MULTI, &multi_body);
    assert_eq!(multi.err, NOT_READ_ONLY, "multi in read-only mode");
    let (err, data) = get_data(&mut ro, "/ro-data");
    assert_eq!(
        (err, data.as_deref()),
        (0, Some(&b"before the partition"[..]))
    );

    // A second read-only session, closed by the client: answered, then the socket closes.
    let (mut ro2, _) = connect_retrying(&ens.addr(f), true, 20);
    let close = ro2.call(OP_CLOSE, &[]);
    assert_eq!(close.err, 0, "closeSession of a read-only session");
    assert!(ro2.wait_closed(Duration::from_secs(5)));

    // Nothing written while cut off reached the majority.
    let (mut check, _) = connect_retrying(&ens.addr(leader), false, 20);
    for path in ["/ro-new", "/ro-multi"] {
        assert_eq!(get_data(&mut check, path).0, -101, "{path} exists");
    }

    // Heal: the follower leaves read-only mode and closes the read-only connection.
    ens.heal(f);
    assert!(
        ro.wait_closed(Duration::from_secs(60)),
        "the read-only connection stays open after the quorum came back"
    );
    wait_for("the healed follower serves as a follower", 60, || {
        ens.mode(f) == Some(Mode::Follower)
    });
    assert_eq!(ens.four_letter(f, "isro").unwrap().trim(), "rw");
    let (mut normal, resp) = connect_retrying(&ens.addr(f), false, 30);
    assert_ne!(resp.read_only, Some(true));
    let created = normal.call(OP_CREATE, &raw::create_req("/after-heal", b"rw", 0));
    assert_eq!(created.err, 0, "a write through the healed follower");
    // A read-only-capable client now gets a normal (read-write) session.
    let (mut rw, resp) = connect_retrying(&ens.addr(f), true, 30);
    assert_eq!(resp.read_only, Some(false), "read-write server once healed");
    let created = rw.call(OP_CREATE, &raw::create_req("/after-heal-2", b"rw", 0));
    assert_eq!(created.err, 0);
}

/// The leader cut off from both followers steps down (Raft check-quorum; ZooKeeper's leader
/// loses its followers), goes read-only and serves read-only clients; the other two elect a
/// leader; after healing the old leader rejoins and closes its read-only connections.
#[test]
fn partitioned_leader_goes_read_only() {
    let _one = exclusive();
    let ens = Cluster::start(opts());
    let leader = ens.wait_ready(60);
    let (mut writer, _) = connect_retrying(&ens.addr(leader), false, 20);
    let created = writer.call(OP_CREATE, &raw::create_req("/from-leader", b"l", 0));
    assert_eq!(created.err, 0);

    ens.partition(leader);
    wait_for("the cut-off leader reports Mode: read-only", 60, || {
        ens.mode(leader) == Some(Mode::ReadOnly)
    });
    let majority = ens.others(leader);
    let new_leader = ens.wait_leader_among(&majority, 60);
    assert_ne!(new_leader, leader);
    let (mut ro, resp) = connect_retrying(&ens.addr(leader), true, 20);
    assert_eq!(resp.read_only, Some(true));
    let (err, data) = get_data(&mut ro, "/from-leader");
    assert_eq!((err, data.as_deref()), (0, Some(&b"l"[..])));
    let create = ro.call(OP_CREATE, &raw::create_req("/from-ro-leader", b"x", 0));
    assert_eq!(create.err, NOT_READ_ONLY);

    ens.heal(leader);
    assert!(
        ro.wait_closed(Duration::from_secs(60)),
        "the read-only connection stays open after healing"
    );
    wait_for("the old leader serves again", 60, || {
        matches!(ens.mode(leader), Some(Mode::Follower | Mode::Leader))
    });
    let (mut normal, _) = connect_retrying(&ens.addr(leader), false, 30);
    let created = normal.call(OP_CREATE, &raw::create_req("/after-heal", b"rw", 0));
    assert_eq!(created.err, 0);
}

/// Without read-only mode, a member cut off from the quorum serves nobody: `isro` answers
/// `null` (ZooKeeper's IsroCommand when no server runs), not `rw`, so a read-only client's
/// search for a read-write server (kazoo polls `isro`) does not pick it; read-only and
/// normal handshakes are both refused. Back to `rw` once healed.
#[test]
fn cut_off_member_without_read_only_mode_answers_isro_null() {
    let _one = exclusive();
    let mut o = opts();
    o.extra_cfg.retain(|l| !l.starts_with("readonlymode"));
    let ens = Cluster::start(o);
    let leader = ens.wait_ready(60);
    let f = ens.others(leader)[0];
    assert_eq!(ens.four_letter(f, "isro").unwrap().trim(), "rw");
    ens.partition(f);
    wait_for("the cut-off follower stops serving", 60, || {
        ens.mode(f) == Some(Mode::NotServing)
    });
    // ZooKeeper goes LOOKING (not serving) a little before it answers null: poll.
    wait_for("isro answers null", 30, || {
        ens.four_letter(f, "isro").unwrap_or_default().trim() == "null"
    });
    let mut req = ConnectRequest::new(6000);
    req.read_only = true;
    assert!(
        RawConn::connect_req(&ens.addr(f), &req).is_err(),
        "a read-only client was admitted without read-only mode"
    );
    ens.heal(f);
    wait_for("isro answers rw again", 60, || {
        ens.four_letter(f, "isro").unwrap_or_default().trim() == "rw"
    });
}
