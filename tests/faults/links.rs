//! Per-link control of the peer network, owned by the fault suite (so that
//! `tests/common/cluster.rs` stays untouched): every member's `server.N` lines for the *other*
//! members are rewritten to name proxies of this module, one per (dialler, target, port), and
//! each member is restarted once on its rewritten config before the workloads start.
//!
//! A cut of link `i -> j` aborts the connections `i` dialled to `j` and refuses new ones. For
//! rookery, whose peers dial one-way connections (A dials B to send A -> B), that is a one-way
//! partition: `i` cannot send to `j`, `j` still reaches `i`. For ZooKeeper, whose connections
//! carry both directions, it drops the connections `i` opened (the lower id's election
//! connection is dialled back by the higher id, so the effect is close to a full cut of the
//! pair).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::cluster::Cluster;
use crate::common::proxy::Proxy;

use super::disks::Disks;
use std::sync::{Arc, Mutex};

struct Link {
    from: usize,
    to: usize,
    proxy: Proxy,
}

pub struct Links {
    links: Vec<Link>,
    /// Every member's tmpfs data disk, for `Fault::DiskFull` (None: no disk faults).
    disks: Option<Arc<Mutex<Disks>>>,
    /// The named layout ([`Links::install_named`]): every member's `reconfig` spec, by member.
    specs: Option<Vec<String>>,
}

/// The command prefix of every member in the named layout (`ClusterOpts::wrap`): a mount
/// namespace of its own (`unshare -m`, root only) in which its directory's `hosts` file, once
/// [`Links::install_named`] wrote it, is bind-mounted over `/etc/hosts`; then `exec` of the
/// server, so the pid the harness signals stays the server's.
pub fn named_wrap() -> Vec<String> {
    [
        "unshare",
        "-m",
        "sh",
        "-c",
        "if [ -f '{dir}/hosts' ]; then mount --bind '{dir}/hosts' /etc/hosts || exit 97; fi; \
         exec \"$0\" \"$@\"",
    ]
    .map(String::from)
    .to_vec()
}

/// The peer host name of member `j` in the named layout.
pub fn host_name(c: &Cluster, j: usize) -> String {
    format!("rk-{}", c.id(j))
}

/// The loopback address at which dialler `d` reaches member `j` in the named layout: one of
/// its own per (dialler, target) (all of 127.0.0.0/8 reaches `lo`), where the proxies of that
/// link listen on `j`'s real peer and election ports.
fn proxy_ip(d: usize, j: usize) -> String {
    format!("127.{}.{}.1", 10 + d, 10 + j)
}

/// The `server.N` line of member `j` from its own config (its real ports).
fn own_line(c: &Cluster, j: usize) -> (String, String) {
    let cfg = std::fs::read_to_string(c.config_path(j)).expect("member config");
    let key = format!("server.{}", c.id(j));
    let line = cfg
        .lines()
        .find(|l| l.starts_with(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} line in member {j}'s config"));
    (key, line.to_string())
}

/// `server.N=host:peer:election[:observer];client` -> (peer, election, rest after the ports).
fn split_ports(line: &str) -> (u16, u16, String) {
    let value = line.split_once('=').expect("server line").1;
    let (quorum, client) = value.split_once(';').unwrap_or((value, ""));
    let parts: Vec<&str> = quorum.split(':').collect();
    let peer = parts[1].parse().expect("peer port");
    let election = parts[2].parse().expect("election port");
    let role = if parts.len() > 3 {
        format!(":{}", parts[3..].join(":"))
    } else {
        String::new()
    };
    (peer, election, format!("{role};{client}"))
}

impl Links {
    /// Creates the proxies, rewrites every member's config and restarts the members one by one
    /// (each waits until it serves again). Runs on the current tokio runtime (the proxies'
    /// tasks); the restarts run on a blocking thread. With `disks`, each member's data moves
    /// onto a tmpfs of its own during its restart ([`Disks`]); the caller checked
    /// [`super::disks::available`].
    pub async fn install(c: &Cluster, disks: bool) -> Links {
        let n = c.len();
        let real: Vec<(String, u16, u16, String)> = (0..n)
            .map(|j| {
                let (key, line) = own_line(c, j);
                let (p, e, rest) = split_ports(&line);
                (key, p, e, rest)
            })
            .collect();
        let mut links = vec![];
        // member i's view of member j: (peer proxy port, election proxy port)
        let mut view: BTreeMap<(usize, usize), (u16, u16)> = BTreeMap::new();
        let member_ports: Vec<u16> = real.iter().flat_map(|r| [r.1, r.2]).collect();
        for i in 0..n {
            for (j, r) in real.iter().enumerate() {
                if i == j {
                    continue;
                }
                let mut ports = vec![];
                for upstream in [r.1, r.2] {
                    // A proxy must not take a member's port (they are bound only while the
                    // member runs): retry until it gets one of its own.
                    let mut got = None;
                    for _ in 0..50 {
                        let p = Proxy::start(format!("127.0.0.1:{upstream}")).await;
                        if !member_ports.contains(&p.port) {
                            got = Some(p);
                            break;
                        }
                    }
                    let p = got.expect("a free proxy port");
                    ports.push(p.port);
                    links.push(Link {
                        from: i,
                        to: j,
                        proxy: p,
                    });
                }
                view.insert((i, j), (ports[0], ports[1]));
            }
        }
        for i in 0..n {
            let cfg = std::fs::read_to_string(c.config_path(i)).expect("config");
            let mut out = String::new();
            for line in cfg.lines() {
                let j = real
                    .iter()
                    .position(|r| line.starts_with(&format!("{}=", r.0)));
                match j {
                    Some(j) if j != i => {
                        let (pp, ep) = view[&(i, j)];
                        out.push_str(&format!("{}=127.0.0.1:{pp}:{ep}{}\n", real[j].0, real[j].3));
                    }
                    _ => {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
            }
            std::fs::write(c.config_path(i), out).expect("rewrite config");
        }
        let disks = disks.then(|| Arc::new(Mutex::new(Disks::new())));
        let d = disks.clone();
        c.blocking(move |c| {
            for i in 0..c.len() {
                c.stop(i, 10);
                if let Some(d) = &d {
                    d.lock()
                        .unwrap()
                        .mount_member(c, i)
                        .unwrap_or_else(|e| panic!("tmpfs for member {i}: {e}"));
                }
                c.start_again(i, 90);
                c.wait_ready(90);
            }
        })
        .await;
        Links {
            links,
            disks,
            specs: None,
        }
    }

    /// The named layout, for membership changes (rookery only; the members must run under
    /// [`named_wrap`]). A reconfig writes one address per server into `/zookeeper/config`,
    /// and rookery's peer address book follows that node, so per-dialler ports (what
    /// [`Links::install`] writes) would be replaced by the real ones after the first reconfig
    /// and every partition would silently stop working. Here every `server.N` line, in every
    /// config and in every reconfig, names the host `rk-N` with member N's real ports: the
    /// same text for everyone. Each member resolves the names through its own `hosts` file
    /// (bind-mounted in its own mount namespace): `rk-j` is `127.0.0.1` for `j` itself and,
    /// for any other dialler `d`, an address of the link `d -> j` alone ([`proxy_ip`]), where
    /// that link's proxies listen on `j`'s peer and election ports. Every member is stopped,
    /// its config rewritten, and the ensemble started again (all at once, so that no member
    /// learns another's old `127.0.0.1` lines from a snapshot).
    pub async fn install_named(c: &Cluster, disks: bool) -> Links {
        let n = c.len();
        let real: Vec<(u16, u16)> = (0..n)
            .map(|j| {
                let (_, line) = own_line(c, j);
                let (p, e, _) = split_ports(&line);
                (p, e)
            })
            .collect();
        let mut links = vec![];
        for d in 0..n {
            for (j, &(pp, ep)) in real.iter().enumerate() {
                if d == j {
                    continue;
                }
                for port in [pp, ep] {
                    let bind = format!("{}:{port}", proxy_ip(d, j));
                    let proxy = Proxy::start_on(&bind, format!("127.0.0.1:{port}"))
                        .await
                        .unwrap_or_else(|e| panic!("proxy for link {d} -> {j} on {bind}: {e}"));
                    links.push(Link {
                        from: d,
                        to: j,
                        proxy,
                    });
                }
            }
        }
        let etc_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        for d in 0..n {
            let mut hosts = format!("{etc_hosts}\n# fault suite: member {d}'s view of its peers\n");
            for j in 0..n {
                let ip = if d == j {
                    "127.0.0.1".to_string()
                } else {
                    proxy_ip(d, j)
                };
                hosts.push_str(&format!("{ip} {}\n", host_name(c, j)));
            }
            std::fs::write(c.member_dir(d).join("hosts"), hosts).expect("write hosts");
            let cfg = std::fs::read_to_string(c.config_path(d)).expect("config");
            let mut out = String::new();
            for line in cfg.lines() {
                let named = (0..n).find_map(|j| {
                    line.strip_prefix(&format!("server.{}=127.0.0.1:", c.id(j)))
                        .map(|rest| format!("server.{}={}:{rest}", c.id(j), host_name(c, j)))
                });
                out.push_str(named.as_deref().unwrap_or(line));
                out.push('\n');
            }
            std::fs::write(c.config_path(d), out).expect("rewrite config");
        }
        let specs = (0..n)
            .map(|j| {
                c.server_spec(j)
                    .replacen("=127.0.0.1:", &format!("={}:", host_name(c, j)), 1)
            })
            .collect();
        let disks = disks.then(|| Arc::new(Mutex::new(Disks::new())));
        let d = disks.clone();
        c.blocking(move |c| {
            for i in 0..c.len() {
                c.stop(i, 10);
            }
            for i in 0..c.len() {
                if let Some(d) = &d {
                    d.lock()
                        .unwrap()
                        .mount_member(c, i)
                        .unwrap_or_else(|e| panic!("tmpfs for member {i}: {e}"));
                }
                c.start_member(i);
            }
            c.wait_ready(90);
        })
        .await;
        Links {
            links,
            disks,
            specs: Some(specs),
        }
    }

    /// Member `j`'s `server.N` spec as a reconfig names it (the named layout only).
    pub fn spec(&self, j: usize) -> Option<&str> {
        self.specs.as_ref().map(|s| s[j].as_str())
    }

    /// Every member's spec (the full membership) in the named layout.
    pub fn specs(&self) -> Option<&[String]> {
        self.specs.as_deref()
    }

    fn each(&self, mut f: impl FnMut(&Link) -> bool, cut: bool) {
        for l in &self.links {
            if f(l) {
                if cut {
                    l.proxy.cut()
                } else {
                    l.proxy.restore()
                }
            }
        }
    }

    /// Member `i` cut off both ways.
    pub fn isolate(&self, i: usize) {
        self.each(|l| l.from == i || l.to == i, true);
    }

    /// Only the connections `from` dials to `to` (rookery: `from` can no longer send to `to`).
    pub fn cut_one_way(&self, from: usize, to: usize) {
        self.each(|l| l.from == from && l.to == to, true);
    }

    /// Two sides that only `bridge` connects: every link between `a` and `b` cut.
    pub fn bridge(&self, a: &[usize], b: &[usize]) {
        self.each(
            |l| {
                (a.contains(&l.from) && b.contains(&l.to))
                    || (b.contains(&l.from) && a.contains(&l.to))
            },
            true,
        );
    }

    /// Every link of member `i`, both directions, delays what it forwards by `ms`.
    pub fn slow(&self, i: usize, ms: u64) {
        for l in &self.links {
            if l.from == i || l.to == i {
                l.proxy.delay(ms);
            }
        }
    }

    /// Fills member `i`'s disk; returns the bytes it took (0 without disks).
    pub fn fill_disk(&self, c: &Cluster, i: usize) -> u64 {
        self.disks
            .as_ref()
            .map_or(0, |d| d.lock().unwrap().fill(c, i))
    }

    /// Whether members have tmpfs disks (disk faults possible).
    pub fn has_disks(&self) -> bool {
        self.disks.is_some()
    }

    /// Ends every cut and every delay, and frees every filled disk.
    pub fn heal_all(&self) {
        if let Some(d) = &self.disks {
            d.lock().unwrap().free_all();
        }
        self.each(|_| true, false);
    }

    /// Self-test: isolating the leader must make the others elect another one (otherwise the
    /// members do not use the rewritten addresses and every partition would be a no-op).
    pub fn self_test(&self, c: &Cluster) -> String {
        let leader = c.wait_ready(60);
        self.isolate(leader);
        let others = c.others(leader);
        let t = Instant::now();
        let new = c.wait_leader_among(&others, 60);
        self.heal_all();
        assert_ne!(new, leader);
        let what = format!(
            "isolating leader {leader} made {new} leader in {} ms",
            t.elapsed().as_millis()
        );
        eprintln!("links: {what}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.leader().is_none() {
            assert!(
                Instant::now() < deadline,
                "no leader after the links self-test"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c.wait_ready(60);
        what
    }
}
