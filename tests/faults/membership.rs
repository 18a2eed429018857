//! Membership changes (ZooKeeper's `reconfig`) while another fault holds (`Fault::Membership`;
//! rookery only). The members run in the named layout of `links.rs` (`Links::install_named`):
//! every `server.N` line names `rk-N` with the member's real ports, and each member resolves
//! the names to proxies of its own, so partitions keep working after a reconfig rewrote
//! `/zookeeper/config` (which rookery's peer address book follows).
//!
//! A step: member `r` is removed by a reconfig while member `k` is paused, isolated, slowed or
//! killed; halfway through the hold (the fault still on) `r` is added back (same id, same data
//! dir, same process); the fault ends; then the full membership is restored (re-added until
//! `/zookeeper/config` lists every member again, bounded) and `r` must serve again. Every
//! answer of every reconfig (success, ReconfigInProgress, NewConfigNoQuorum, ConnectionLoss,
//! no answer within the bound...) goes into the step's record. After recovery the runner
//! checks that every member shows the same `/zookeeper/config` listing every member
//! ([`agreement`]), and repeats the links self-test (isolating the leader must still make the
//! others elect another one: the reconfigs did not bypass the proxies).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use crate::common::cluster::{Cluster, Mode};
use crate::common::{target, Target};

use super::links::Links;

/// `super:test`, as `DigestAuthenticationProvider.superDigest` wants it.
const SUPER_DIGEST: &str = "super:D/InIHSb7yEEbrWz8b9l71RjZJU=";

/// The other fault a membership change runs under (on another member than the removed one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alongside {
    /// SIGSTOP for the hold.
    Pause,
    /// Every peer link cut, both ways, for the hold.
    Isolate,
    /// Every peer link delayed by the given ms, both ways, for the hold.
    Slow(u64),
    /// SIGKILL, down for the hold, started again.
    Kill,
}

/// Whether membership changes can be injected: rookery (its reconfig; the named layout needs
/// nothing of ZooKeeper, but the suite does not run ZooKeeper's JVM in namespaces) and root
/// (`unshare -m` and the bind mount of each member's `hosts` file).
pub fn available() -> Result<(), String> {
    if target() != Target::Rookery {
        return Err("membership changes are injected into rookery only".to_string());
    }
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", "mount --bind /etc/hosts /etc/hosts"])
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "unshare -m with a bind mount refused: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// zoo.cfg lines every member needs for reconfig.
pub fn extra_cfg() -> Vec<String> {
    vec![
        "reconfigEnabled=true".to_string(),
        format!("DigestAuthenticationProvider.superDigest={SUPER_DIGEST}"),
    ]
}

/// The `server.N=` lines of a `/zookeeper/config` text, and its version (hex).
pub fn parse(data: &[u8]) -> (BTreeSet<String>, Option<i64>) {
    let text = String::from_utf8_lossy(data);
    let mut servers = BTreeSet::new();
    let mut version = None;
    for line in text.lines() {
        if line.starts_with("server.") {
            servers.insert(line.trim().to_string());
        } else if let Some(v) = line.strip_prefix("version=") {
            version = i64::from_str_radix(v.trim(), 16).ok();
        }
    }
    (servers, version)
}

/// A superuser client on `cs`, or why not (bounded: 10 s).
async fn admin(cs: &str) -> Result<zk::Client, String> {
    admin_within(cs, Duration::from_secs(10)).await
}

async fn admin_within(cs: &str, bound: Duration) -> Result<zk::Client, String> {
    let conn = zk::Client::connector()
        .with_auth("digest", b"super:test")
        .with_session_timeout(Duration::from_secs(15))
        // Longer than a reconfig may wait for a joiner (initLimit × tickTime = 5 s here):
        // the client's idle timeout must not turn that wait into a ConnectionLoss.
        .with_connection_timeout(Duration::from_secs(7));
    match tokio::time::timeout(bound, conn.connect(cs)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err(format!(
            "connect: no session within {} ms",
            bound.as_millis()
        )),
    }
}

fn error_name(e: &zk::Error) -> String {
    match e {
        zk::Error::UnexpectedErrorCode(-13) => "NewConfigNoQuorum".to_string(),
        zk::Error::UnexpectedErrorCode(-14) => "ReconfigInProgress".to_string(),
        other => format!("{other:?}"),
    }
}

/// A change to ask for.
#[derive(Clone, Debug)]
pub enum Change {
    /// Remove these server ids.
    Remove(Vec<String>),
    /// Add these specs.
    Add(Vec<String>),
}

/// Asks for `change` through a member of `cs` (blocking; on a thread of the tokio runtime's
/// blocking pool), bounded by `bound` in all (session and request). Returns what reconfig
/// answered and after how long.
pub fn reconfig(cs: &str, change: &Change, bound: Duration) -> String {
    let t = Instant::now();
    let answer = ask(cs, change, bound);
    format!("{answer} after {} ms", t.elapsed().as_millis())
}

fn ask(cs: &str, change: &Change, bound: Duration) -> String {
    let handle = tokio::runtime::Handle::current();
    let deadline = Instant::now() + bound;
    handle.block_on(async {
        let su = match admin_within(cs, bound).await {
            Ok(su) => su,
            Err(e) => return e,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let strs: Vec<&str>;
        let update = match change {
            Change::Remove(ids) => {
                strs = ids.iter().map(String::as_str).collect();
                zk::EnsembleUpdate::Incremental {
                    joinings: Vec::new().into_iter(),
                    leavings: strs.clone().into_iter(),
                }
            }
            Change::Add(specs) => {
                strs = specs.iter().map(String::as_str).collect();
                zk::EnsembleUpdate::Incremental {
                    joinings: strs.clone().into_iter(),
                    leavings: Vec::new().into_iter(),
                }
            }
        };
        match tokio::time::timeout(left, su.update_ensemble(update, None)).await {
            Ok(Ok((data, _))) => {
                let (servers, version) = parse(&data);
                format!(
                    "ok ({} servers, version {:#x})",
                    servers.len(),
                    version.unwrap_or(-1)
                )
            }
            Ok(Err(e)) => error_name(&e),
            Err(_) => format!("no answer within {} ms", bound.as_millis()),
        }
    })
}

/// `/zookeeper/config` as member(s) `cs` show it after a sync, bounded (blocking).
fn read_config(cs: &str) -> Result<(BTreeSet<String>, Option<i64>), String> {
    tokio::runtime::Handle::current().block_on(async {
        let cl = admin(cs).await?;
        let read = async {
            cl.sync("/zookeeper/config")
                .await
                .map_err(|e| format!("sync: {e}"))?;
            cl.get_config()
                .await
                .map_err(|e| format!("get_config: {e}"))
        };
        match tokio::time::timeout(Duration::from_secs(10), read).await {
            Ok(Ok((data, _))) => Ok(parse(&data)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("no answer within 10 s".to_string()),
        }
    })
}

/// Re-adds every server of `specs` that `/zookeeper/config` lacks until it lists all of them
/// (and no other), within `secs`. Returns what it did; `Err` if the membership is still not
/// the full one.
pub fn ensure_all(c: &Cluster, specs: &[String], secs: u64) -> Result<String, String> {
    let want: BTreeSet<String> = specs.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut log = vec![];
    loop {
        match read_config(&c.connect_string()) {
            Ok((have, version)) if have == want => {
                log.push(format!(
                    "config lists all {} (version {:#x})",
                    want.len(),
                    version.unwrap_or(-1)
                ));
                return Ok(log.join("; "));
            }
            Ok((have, _)) => {
                let missing: Vec<String> = want.difference(&have).cloned().collect();
                let extra: Vec<&String> = have.difference(&want).collect();
                if !extra.is_empty() {
                    // Nothing here adds other servers: a line we never asked for.
                    return Err(format!("config lists servers never added: {extra:?}"));
                }
                let ids: Vec<&str> = missing
                    .iter()
                    .filter_map(|s| s.split('=').next()?.strip_prefix("server."))
                    .collect();
                let outcome = reconfig(
                    &c.connect_string(),
                    &Change::Add(missing.clone()),
                    Duration::from_secs(12),
                );
                log.push(format!("re-add {ids:?} -> {outcome}"));
            }
            Err(e) => log.push(format!("read config: {e}")),
        }
        if Instant::now() > deadline {
            return Err(format!(
                "membership not restored within {secs} s: {}",
                log.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits up to `secs` for member `i` to serve; how long it took, or that it did not.
fn serving_again(c: &Cluster, i: usize, secs: u64) -> String {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if matches!(
            c.mode(i),
            Some(Mode::Leader | Mode::Follower | Mode::Observer)
        ) {
            return format!(
                "member {i} serving again after {} ms",
                t.elapsed().as_millis()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("member {i} NOT serving {secs} s after the membership was restored")
}

/// One membership step (blocking, on the nemesis thread): remove member `r` while `along` hits
/// member `k` (which may be `r` itself), re-add `r` halfway (the fault still on), end the
/// fault at `hold_until`, restore the full membership. Returns the record.
pub fn step(
    c: &Cluster,
    links: &Links,
    r: usize,
    k: usize,
    along: Alongside,
    hold_until: Instant,
) -> String {
    let t0 = Instant::now();
    let (role_r, role_k) = (c.mode(r), c.mode(k));
    match along {
        Alongside::Pause => c.sigstop(k),
        Alongside::Isolate => links.isolate(k),
        Alongside::Slow(ms) => links.slow(k, ms),
        Alongside::Kill => c.kill9(k),
    }
    // Through every other member: the client picks one (a paused or isolated one may not
    // answer; the bound covers that).
    let others: Vec<usize> = (0..c.len()).filter(|&x| x != r).collect();
    let cs = c.connect_string_of(&others);
    let removed = reconfig(
        &cs,
        &Change::Remove(vec![c.id(r).to_string()]),
        Duration::from_secs(12),
    );
    let half = t0 + (hold_until.saturating_duration_since(t0)) / 2;
    let now = Instant::now();
    if half > now {
        std::thread::sleep(half - now);
    }
    // What the removed member did meanwhile (rookery: a removed member stops serving).
    let mode_before_readd = if !c.is_running(r) {
        "down".to_string()
    } else if !c.live().contains(&r) {
        "paused".to_string()
    } else {
        format!("{:?}", c.mode(r))
    };
    let spec = links.spec(r).expect("named layout").to_string();
    // Under the fault, bounded by what is left of the hold (at least 2 s).
    let bound = hold_until
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(2));
    let readd = reconfig(&cs, &Change::Add(vec![spec]), bound);
    let now = Instant::now();
    if hold_until > now {
        std::thread::sleep(hold_until - now);
    }
    let fault_ms = t0.elapsed().as_millis();
    match along {
        Alongside::Pause => c.sigcont(k),
        Alongside::Isolate | Alongside::Slow(_) => links.heal_all(),
        Alongside::Kill => {
            c.start_member(k);
            // A killed member that was removed may not serve until it is added back.
            if k != r {
                c.wait_member_ready(k, 90);
            }
        }
    }
    // A member that crashed meanwhile can never catch up: start it again first (reported).
    let mut crashed = super::nemesis::restart_crashed(c);
    let specs = links.specs().expect("named layout");
    let restored = match ensure_all(c, specs, 60) {
        Ok(s) => s,
        Err(e) => format!("NOT RESTORED: {e}"),
    };
    crashed.extend(super::nemesis::restart_crashed(c));
    let serving = serving_again(c, r, 30);
    let on = if k == r {
        "itself".to_string()
    } else {
        format!("member {k} ({role_k:?})")
    };
    format!(
        "membership: remove member {r} (id {}, {role_r:?}) while {along:?} on {on} -> \
         {removed}; removed member {mode_before_readd} at half-time; re-add under the fault \
         -> {readd}; fault ended after {fault_ms} ms; {crashes}after it: {restored}; {serving}",
        c.id(r),
        crashes = crashed.iter().map(|n| format!("{n}; ")).collect::<String>(),
    )
}

/// After recovery: every member shows (after a sync) the same `/zookeeper/config`, listing
/// every member. Returns the problems (empty: agreement).
pub async fn agreement(c: &Cluster, links: &Links) -> Vec<String> {
    let want: BTreeSet<String> = links
        .specs()
        .expect("named layout")
        .iter()
        .cloned()
        .collect();
    let mut seen = vec![];
    let mut problems = vec![];
    for m in 0..c.len() {
        let cl = match admin(&c.addr(m)).await {
            Ok(cl) => cl,
            Err(e) => {
                problems.push(format!("membership: member {m}: {e}"));
                continue;
            }
        };
        let read = async {
            cl.sync("/zookeeper/config").await?;
            cl.get_config().await
        };
        match tokio::time::timeout(Duration::from_secs(30), read).await {
            Ok(Ok((data, _))) => {
                let (servers, version) = parse(&data);
                if servers != want {
                    problems.push(format!(
                        "membership: member {m} shows {servers:?} (version {version:?}), \
                         expected every member {want:?}"
                    ));
                }
                seen.push((m, servers, version));
            }
            Ok(Err(e)) => problems.push(format!("membership: member {m}: read config: {e}")),
            Err(_) => problems.push(format!("membership: member {m}: no config in 30 s")),
        }
    }
    if let Some((m0, s0, v0)) = seen.first() {
        for (m, s, v) in &seen[1..] {
            if (s, v) != (s0, v0) {
                problems.push(format!(
                    "membership: members {m0} and {m} disagree on /zookeeper/config: \
                     version {v0:?} vs {v:?}"
                ));
            }
        }
    }
    problems
}
