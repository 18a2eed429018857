//! TLS between ensemble members (`sslQuorum=true` with ZooKeeper's `ssl.quorum.*` keys), on a
//! 3-server rookery ensemble (tests/common/cluster.rs). Certificates are made at run time with
//! Debian's openssl; no key is committed.
//! * `quorum_over_tls_refuses_a_peer_without_a_valid_certificate`: the three members form a
//!   quorum over TLS, a write through one member is read through another; a plaintext
//!   connection to a peer port gets no handshake reply; a member restarted with a certificate
//!   from a CA the others do not trust never joins (it does not serve, and the others log the
//!   failed handshakes) while the other two keep serving; restarted with a good certificate,
//!   it joins again and catches up, by a snapshot stream over TLS (the log was compacted
//!   meanwhile).
//!
//! ```text
//! cargo test --test ensemble_tls -- --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{exclusive, Cluster, ClusterOpts, Mode};
use common::is_zk;
use zookeeper_client as zk;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl) must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `ca`, and `name.pem` (key + certificate signed by it, for 127.0.0.1).
fn make_ca(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/O=rookery/CN={ca}"),
        ],
    );
}

fn make_node_cert(dir: &Path, ca: &str, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/O=rookery/CN={name}"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
    let pem = dir.join(format!("{name}.pem"));
    let key = std::fs::read_to_string(dir.join(format!("{name}.key"))).unwrap();
    let crt = std::fs::read_to_string(dir.join(format!("{name}.crt"))).unwrap();
    std::fs::write(&pem, key + &crt).unwrap();
    pem
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {secs}s: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Member `i`'s peer port, from its zoo.cfg's own server line.
fn peer_port(ens: &Cluster, i: usize) -> u16 {
    let cfg = std::fs::read_to_string(ens.config_path(i)).unwrap();
    let line = cfg
        .lines()
        .find(|l| l.starts_with(&format!("server.{}=", ens.id(i))))
        .expect("own server line");
    let address = line.split_once('=').unwrap().1;
    address.split(':').nth(1).unwrap().parse().unwrap()
}

/// Connects to `members`, retrying (bounded, 30 s) while they are not serving yet.
async fn connect(ens: &Cluster, members: &[usize]) -> zk::Client {
    let addr = ens.connect_string_of(members);
    let connector = zk::Client::connector().with_session_timeout(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match common::try_connect(&addr, connector.clone(), 5).await {
            Ok(client) => return client,
            Err(e) => {
                assert!(Instant::now() < deadline, "connect to {addr}: {e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_over_tls_refuses_a_peer_without_a_valid_certificate() {
    if is_zk() {
        // ZooKeeper's sslQuorum needs its Netty jars and JKS-style setup; this test is
        // about rookery's peer transport.
        eprintln!("skipped: rookery only");
        return;
    }
    let _one = exclusive();
    let certs = tempfile::tempdir().unwrap();
    make_ca(certs.path(), "ca");
    make_ca(certs.path(), "rogue-ca");
    let node = make_node_cert(certs.path(), "ca", "node");
    let rogue = make_node_cert(certs.path(), "rogue-ca", "rogue");
    let ca = certs.path().join("ca.crt");
    let opts = ClusterOpts {
        tick_time_ms: 200,
        extra_cfg: vec![
            "sslQuorum=true".into(),
            format!("ssl.quorum.keyStore.location={}", node.display()),
            "ssl.quorum.keyStore.type=PEM".into(),
            format!("ssl.quorum.trustStore.location={}", ca.display()),
            "ssl.quorum.trustStore.type=PEM".into(),
            // Compaction while member 3 is out: it must catch up by a snapshot stream,
            // which runs over its own TLS connection.
            "snapCount=10".into(),
        ],
        ..ClusterOpts::default()
    };
    let ens = Cluster::start_async(opts).await;

    // Replication works over TLS.
    let a = connect(&ens, &[0]).await;
    let b = connect(&ens, &[1]).await;
    a.create("/tls-quorum", b"over tls", &common::anyone())
        .await
        .unwrap();
    b.sync("/tls-quorum").await.unwrap();
    assert_eq!(b.get_data("/tls-quorum").await.unwrap().0, b"over tls");

    // A plaintext peer: no handshake reply, just a closed connection.
    let port = peer_port(&ens, 0);
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Bytes of a plausible plaintext frame; the TLS acceptor sees garbage.
        let _ = s.write_all(&[0, 0, 0, 8, 1, 0, 0, 0, 0, 0, 0, 1]);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    })
    .await
    .unwrap();
    assert!(
        reply.is_empty() || reply[0] == 0x15,
        "a plaintext peer got a reply that is not a TLS alert: {reply:?}"
    );

    // Member 3 with a certificate from an untrusted CA: it never joins.
    let rogue_member = 2;
    ens.blocking(move |c| c.stop(rogue_member, 5)).await;
    let cfg_path = ens.config_path(rogue_member);
    let good_cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        format!(
            "{good_cfg}ssl.quorum.keyStore.location={}\n",
            rogue.display()
        ),
    )
    .unwrap();
    ens.blocking(move |c| c.start_member(rogue_member)).await;
    // Writes go on through the two trusted members meanwhile.
    for i in 0..60 {
        a.set_data("/tls-quorum", format!("v{i}").as_bytes(), None)
            .await
            .unwrap();
    }
    let e2 = ens.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the trusted members log the refused handshakes", 30, || {
            let log = std::fs::read_to_string(e2.log_path(0)).unwrap_or_default()
                + &std::fs::read_to_string(e2.log_path(1)).unwrap_or_default();
            log.contains("peer TLS handshake failed")
        });
        // Several election timeouts: it must still not serve.
        std::thread::sleep(Duration::from_secs(4));
        assert!(e2.is_running(rogue_member), "the rogue member exited");
        let mode = e2.mode(rogue_member);
        assert!(
            matches!(mode, None | Some(Mode::NotServing)),
            "a member with an untrusted certificate serves: {mode:?}; log:\n{}",
            e2.log_tail(rogue_member, 30)
        );
    })
    .await
    .unwrap();
    assert_eq!(b.get_data("/tls-quorum").await.unwrap().0, b"v59");

    // With a good certificate again it joins and catches up.
    ens.blocking(move |c| c.stop(rogue_member, 5)).await;
    std::fs::write(&cfg_path, good_cfg).unwrap();
    ens.blocking(move |c| {
        c.start_member(rogue_member);
        c.wait_member_ready(rogue_member, 60);
    })
    .await;
    let c = connect(&ens, &[rogue_member]).await;
    c.sync("/tls-quorum").await.unwrap();
    assert_eq!(c.get_data("/tls-quorum").await.unwrap().0, b"v59");
    let log = std::fs::read_to_string(ens.log_path(rogue_member)).unwrap_or_default();
    assert!(
        log.contains("snapshot received from leader"),
        "member 3 caught up without a snapshot stream; log:\n{}",
        ens.log_tail(rogue_member, 40)
    );
    for client in [a, b, c] {
        drop(client);
    }
}
