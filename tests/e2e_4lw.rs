//! Four-letter words: ruok, srvr, stat, mntr, conf, cons, envi, wchs, dirs, isro (shape and a few
//! values that must agree with the server's state), and the whitelist refusal message.
//!
//! Against ZooKeeper: `E2E_TARGET=zk cargo test --test e2e_4lw`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::collections::HashMap;

use common::raw::{mode, RawConn};
use common::*;

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no line starting with {key:?} in:\n{text}"))
        .trim()
}

fn num(text: &str, key: &str) -> i64 {
    let v = field(text, key);
    v.parse()
        .unwrap_or_else(|_| panic!("{key} {v:?} is not an integer in:\n{text}"))
}

fn mntr_map(text: &str) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("mntr line without a tab: {line:?}"));
        m.insert(k.to_string(), v.to_string());
    }
    m
}

fn assert_srvr_shape(text: &str) {
    assert!(!field(text, "Zookeeper version:").is_empty());
    let lat = field(text, "Latency min/avg/max:");
    assert_eq!(lat.split('/').count(), 3, "latency triple: {lat:?}");
    for k in [
        "Received:",
        "Sent:",
        "Connections:",
        "Outstanding:",
        "Node count:",
    ] {
        assert!(num(text, k) >= 0, "{k}");
    }
    let zxid = field(text, "Zxid:");
    assert!(
        zxid.starts_with("0x") && i64::from_str_radix(&zxid[2..], 16).is_ok(),
        "Zxid {zxid:?}"
    );
    let mode = field(text, "Mode:");
    assert!(
        ["standalone", "leader", "follower"].contains(&mode),
        "Mode {mode:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_letter_words() {
    within(TEST_BOUND_SECS, "four_letter_words", async {
        // Own server: node counts and zxids below must not be disturbed by other tests.
        let server = TestServer::start(ServerOpts::default());
        assert_eq!(server.four_letter("ruok"), "imok");

        let mut a = server.raw();
        let srvr0 = server.four_letter("srvr");
        assert_srvr_shape(&srvr0);
        let nodes0 = num(&srvr0, "Node count:");
        a.create_ok("/fl", b"");
        a.create_ok("/fl/a", b"");
        let (e, _) = a.create("/fl/e", b"", mode::EPHEMERAL);
        assert_eq!(e, 0);
        let (e, _) = a.create("/fl/e2", b"", mode::EPHEMERAL);
        assert_eq!(e, 0);
        let last = a.last_zxid;
        a.get_data("/fl", true); // a data watch
        a.get_data("/fl/a", true);

        let srvr = server.four_letter("srvr");
        assert_srvr_shape(&srvr);
        assert_eq!(num(&srvr, "Node count:"), nodes0 + 4);
        assert_eq!(
            field(&srvr, "Zxid:"),
            format!("{last:#x}"),
            "srvr Zxid is the last committed zxid"
        );
        assert!(num(&srvr, "Connections:") >= 1);
        assert_eq!(num(&srvr, "Outstanding:"), 0);

        // stat = srvr + a Clients section listing our connection.
        let stat = server.four_letter("stat");
        assert_srvr_shape(&stat);
        assert!(stat.contains("Clients:"), "{stat}");
        let local = a.stream.local_addr().unwrap();
        assert!(
            stat.contains(&format!("/127.0.0.1:{}[", local.port())),
            "stat must list {local}:\n{stat}"
        );

        // cons lists the connection with its session id.
        let cons = server.four_letter("cons");
        let line = cons
            .lines()
            .find(|l| l.contains(&format!("/127.0.0.1:{}[", local.port())))
            .unwrap_or_else(|| panic!("cons must list {local}:\n{cons}"));
        assert!(
            line.contains(&format!("sid={:#x}", a.session_id)),
            "cons line {line:?}"
        );

        // mntr: tab-separated key/value lines.
        let m = mntr_map(&server.four_letter("mntr"));
        for k in [
            "zk_version",
            "zk_server_state",
            "zk_avg_latency",
            "zk_max_latency",
            "zk_min_latency",
            "zk_packets_received",
            "zk_packets_sent",
            "zk_num_alive_connections",
            "zk_outstanding_requests",
            "zk_znode_count",
            "zk_watch_count",
            "zk_ephemerals_count",
            "zk_approximate_data_size",
        ] {
            assert!(m.contains_key(k), "mntr lacks {k}: {m:?}");
        }
        assert!(["standalone", "leader", "follower"].contains(&m["zk_server_state"].as_str()));
        assert_eq!(m["zk_znode_count"].parse::<i64>().unwrap(), nodes0 + 4);
        assert_eq!(m["zk_ephemerals_count"], "2");
        assert!(m["zk_watch_count"].parse::<i64>().unwrap() >= 2);
        assert!(m["zk_num_alive_connections"].parse::<i64>().unwrap() >= 1);
        assert_eq!(m["zk_outstanding_requests"], "0");

        // conf reflects the configuration.
        let conf = server.four_letter("conf");
        assert_eq!(num(&conf, "clientPort="), server.port as i64);
        assert_eq!(num(&conf, "tickTime="), TICK_MS as i64);
        assert_eq!(num(&conf, "minSessionTimeout="), 2 * TICK_MS as i64);
        assert_eq!(num(&conf, "maxSessionTimeout="), 20 * TICK_MS as i64);
        assert!(!field(&conf, "dataDir=").is_empty());

        // envi: "Environment:" then key=value lines.
        let envi = server.four_letter("envi");
        let mut lines = envi.lines().filter(|l| !l.is_empty());
        assert_eq!(lines.next(), Some("Environment:"));
        for l in lines {
            assert!(l.contains('='), "envi line {l:?}");
        }
        assert!(!field(&envi, "zookeeper.version=").is_empty());
        assert!(!field(&envi, "host.name=").is_empty());

        // wchs: "<n> connections watching <m> paths" / "Total watches:<k>".
        let wchs = server.four_letter("wchs");
        let mut it = wchs.lines();
        let first = it.next().unwrap_or_default();
        let w: Vec<&str> = first.split_whitespace().collect();
        assert!(
            w.len() == 5 && w[1] == "connections" && w[2] == "watching" && w[4] == "paths",
            "wchs first line {first:?}"
        );
        assert!(
            w[0].parse::<i64>().unwrap() >= 1 && w[3].parse::<i64>().unwrap() >= 2,
            "{first:?}"
        );
        assert!(num(&wchs, "Total watches:") >= 2, "{wchs}");

        // dirs
        let dirs = server.four_letter("dirs");
        assert!(num(&dirs, "datadir_size:") >= 0);
        assert!(num(&dirs, "logdir_size:") >= 0);

        // isro
        assert_eq!(server.four_letter("isro").trim(), "rw");

        // 4lw connections don't disturb sessions.
        assert_eq!(a.exists("/fl/e", false).0, 0);
        drop(a);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn words_outside_the_whitelist_are_refused() {
    within(
        TEST_BOUND_SECS,
        "words_outside_the_whitelist_are_refused",
        async {
            let server = TestServer::start(ServerOpts {
                four_lw_whitelist: "ruok, srvr".to_string(),
                ..Default::default()
            });
            assert_eq!(server.four_letter("ruok"), "imok");
            assert_srvr_shape(&server.four_letter("srvr"));
            for w in [
                "stat", "mntr", "conf", "cons", "envi", "wchs", "dirs", "isro",
            ] {
                assert_eq!(
                    server.four_letter(w),
                    format!("{w} is not executed because it is not in the whitelist.\n")
                );
            }
            // Sessions are unaffected.
            let mut c = RawConn::connect(&server.addr(), 6000);
            assert_eq!(c.exists("/", false).0, 0);
        },
    )
    .await
}
