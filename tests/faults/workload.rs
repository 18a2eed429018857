//! The workloads: many concurrent sessions, spread over the members (client `k` talks to
//! member `k mod n` only, so every member serves clients and a fault on one member hits its
//! clients), each op bounded in time and recorded with call/return times.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zookeeper_client::{self as zk, CreateMode};

use super::history::{now_ns, LockRecord, RegRecord, SeqRecord};
use super::linearizability::{RegCall, RegOp, RegOutcome, RegState};
use super::nemesis::SeededRng;

/// How register reads are issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// `sync(path)` then `getData`: expected linearizable.
    SyncThenRead,
    /// Plain `getData`: ZooKeeper promises only sequential consistency, so on a follower a read
    /// may miss a write another client already saw acknowledged (stale read).
    Plain,
}

/// Shared by the workloads of one run.
pub struct Ctx {
    pub stop: AtomicBool,
    pub session_ms: u64,
    /// Client-side bound of one request: past it the outcome is unknown.
    pub op_timeout: Duration,
    pub root: String,
    pub regs: Mutex<Vec<RegRecord>>,
    pub seqs: Mutex<Vec<SeqRecord>>,
    pub locks: Mutex<Vec<LockRecord>>,
    pub violations: Mutex<Vec<String>>,
    next_id: std::sync::atomic::AtomicUsize,
}

impl Ctx {
    pub fn new(root: String, session_ms: u64) -> Arc<Ctx> {
        Arc::new(Ctx {
            stop: AtomicBool::new(false),
            session_ms,
            op_timeout: Duration::from_millis(session_ms / 3),
            root,
            regs: Mutex::default(),
            seqs: Mutex::default(),
            locks: Mutex::default(),
            violations: Mutex::default(),
            next_id: Default::default(),
        })
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    pub fn reg_path(&self, key: &str) -> String {
        format!("{}/reg/{key}", self.root)
    }
    pub fn seq_parent(&self) -> String {
        format!("{}/seq", self.root)
    }
    pub fn lock_parent(&self) -> String {
        format!("{}/lock", self.root)
    }
    pub fn record_reg(
        &self,
        key: &str,
        member: usize,
        synced: bool,
        mut op: RegOp,
        error: Option<String>,
    ) {
        op.id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.regs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(RegRecord {
                key: key.to_string(),
                member,
                synced,
                op,
                error,
            });
    }
}

/// A client session to one member that is replaced when it terminates (expired, closed).
pub struct Session {
    pub addr: String,
    pub member: usize,
    session_ms: u64,
    client: Option<zk::Client>,
}

impl Session {
    pub fn new(addr: String, member: usize, session_ms: u64) -> Session {
        Session {
            addr,
            member,
            session_ms,
            client: None,
        }
    }

    /// The current client, connecting (one bounded attempt) if there is none or it terminated.
    pub async fn get(&mut self) -> Option<&zk::Client> {
        if self
            .client
            .as_ref()
            .is_some_and(|c| c.state().is_terminated())
        {
            self.client = None;
        }
        if self.client.is_none() {
            let connector = zk::Client::connector()
                .with_session_timeout(Duration::from_millis(self.session_ms))
                .with_connection_timeout(Duration::from_millis(self.session_ms / 3));
            match tokio::time::timeout(
                Duration::from_millis(self.session_ms),
                connector.connect(&self.addr),
            )
            .await
            {
                Ok(Ok(c)) => self.client = Some(c),
                _ => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return None;
                }
            }
        }
        self.client.as_ref()
    }

    /// Drops the client (a new session next time).
    pub fn reset(&mut self) {
        self.client = None;
    }
}

/// Errors after which the request may or may not have been applied.
fn outcome_unknown(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::ConnectionLoss
            | zk::Error::SessionExpired
            | zk::Error::ClientClosed
            | zk::Error::Timeout
            | zk::Error::NoHosts
            | zk::Error::SessionMoved
            // The client library's own connection failures ("no response from connection in
            // 2000ms"): the request may have reached the server.
            | zk::Error::Custom(_)
    )
}

fn parse_value(data: &[u8]) -> Option<u64> {
    std::str::from_utf8(data).ok()?.trim().parse().ok()
}

/// Register client `client` on member `member`: reads (per `read_mode`), blind writes, and CAS
/// on the version it last saw, over `keys`.
pub async fn register_client(
    ctx: Arc<Ctx>,
    client: u32,
    mut session: Session,
    keys: Vec<String>,
    read_mode: ReadMode,
    // Share of reads in percent (the rest is split between writes and CAS).
    read_pct: u64,
    seed: u64,
) {
    let mut rng = SeededRng::new(seed);
    let mut last_version: std::collections::BTreeMap<String, i32> = Default::default();
    let mut counter: u64 = 0;
    while !ctx.stopped() {
        let Some(c) = session.get().await else {
            continue;
        };
        let c = c.clone();
        let key = keys[(rng.next_u64() % keys.len() as u64) as usize].clone();
        let path = ctx.reg_path(&key);
        let roll = rng.next_u64() % 100;
        counter += 1;
        // Unique across clients and runs of one history: client in the high bits.
        let value = ((client as u64 + 1) << 32) | counter;
        let call_ns = now_ns();
        let (call, res) = if roll < read_pct {
            let fut = async {
                if read_mode == ReadMode::SyncThenRead {
                    c.sync(&path).await?;
                }
                c.get_data(&path).await
            };
            let r = tokio::time::timeout(ctx.op_timeout, fut).await;
            (RegCall::Read, r.map(|r| r.map(|(d, s)| (Some(d), s))))
        } else if roll < read_pct + (100 - read_pct) / 2 {
            let data = value.to_string();
            let r = tokio::time::timeout(ctx.op_timeout, c.set_data(&path, data.as_bytes(), None))
                .await;
            (RegCall::Write { value }, r.map(|r| r.map(|s| (None, s))))
        } else {
            let expected_version = last_version.get(&key).copied().unwrap_or(0);
            let data = value.to_string();
            let r = tokio::time::timeout(
                ctx.op_timeout,
                c.set_data(&path, data.as_bytes(), Some(expected_version)),
            )
            .await;
            (
                RegCall::Cas {
                    expected_version,
                    value,
                },
                r.map(|r| r.map(|s| (None, s))),
            )
        };
        let ret_ns = now_ns();
        let (outcome, ret, error) = match res {
            Ok(Ok((Some(data), stat))) => match parse_value(&data) {
                Some(v) => {
                    last_version.insert(key.clone(), stat.version);
                    (
                        RegOutcome::ReadOk(RegState {
                            value: v,
                            version: stat.version,
                        }),
                        Some(ret_ns),
                        None,
                    )
                }
                None => {
                    ctx.violations
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!(
                            "client {client}: {path} holds {:?}, which no client wrote",
                            String::from_utf8_lossy(&data)
                        ));
                    (RegOutcome::Unknown, None, Some("unparsable".into()))
                }
            },
            Ok(Ok((None, stat))) => {
                last_version.insert(key.clone(), stat.version);
                (
                    RegOutcome::WriteOk {
                        new_version: stat.version,
                    },
                    Some(ret_ns),
                    None,
                )
            }
            Ok(Err(zk::Error::BadVersion)) if matches!(call, RegCall::Cas { .. }) => {
                // Learn the current version for the next CAS without a read (a later read
                // does it); guess one higher so CASes keep succeeding now and then.
                if let RegCall::Cas {
                    expected_version, ..
                } = call
                {
                    last_version.insert(key.clone(), expected_version + 1);
                }
                (RegOutcome::CasBadVersion, Some(ret_ns), None)
            }
            Ok(Err(e)) if outcome_unknown(&e) => {
                if c.state().is_terminated() {
                    session.reset();
                }
                (RegOutcome::Unknown, None, Some(e.to_string()))
            }
            Ok(Err(e)) => {
                ctx.violations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!(
                        "client {client}: unexpected error {e:?} for {call:?} on {path}"
                    ));
                (RegOutcome::Unknown, None, Some(e.to_string()))
            }
            Err(_elapsed) => (RegOutcome::Unknown, None, Some("client timeout".into())),
        };
        ctx.record_reg(
            &key,
            session.member,
            read_mode == ReadMode::SyncThenRead && call == RegCall::Read,
            RegOp {
                id: 0,
                client,
                call_ns,
                ret_ns: ret,
                call,
                outcome,
            },
            error,
        );
        if outcome == RegOutcome::Unknown {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Sequential creates under one parent.
pub async fn sequential_client(ctx: Arc<Ctx>, client: u32, mut session: Session) {
    let parent = ctx.seq_parent();
    let prefix = format!("{parent}/s-");
    let opts = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
    while !ctx.stopped() {
        let Some(c) = session.get().await else {
            continue;
        };
        let c = c.clone();
        let call_ns = now_ns();
        let r = tokio::time::timeout(ctx.op_timeout, c.create(&prefix, b"", &opts)).await;
        let ret_ns = now_ns();
        let (ret, seq, error) = match r {
            Ok(Ok((_, seq))) => (Some(ret_ns), Some(seq.into_i64()), None),
            Ok(Err(e)) => {
                if !outcome_unknown(&e) {
                    ctx.violations
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("seq client {client}: unexpected error {e:?}"));
                }
                if c.state().is_terminated() {
                    session.reset();
                }
                (None, None, Some(e.to_string()))
            }
            Err(_) => (None, None, Some("client timeout".into())),
        };
        ctx.seqs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(SeqRecord {
                client,
                member: session.member,
                call_ns,
                ret_ns: ret,
                seq,
                error,
            });
        if ret.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Sequential creates are cheap; leave room for the register clients.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The session-liveness rule of `invariants::check_session_liveness`, applied online to the
/// lock clients' reads (their sessions change too often to be matched up afterwards): a
/// "session expired" answer to a request invoked less than timeout - slack after a successful
/// request of the same session is a violation.
#[derive(Default)]
struct Liveness {
    session: i64,
    last_ok_call_ns: Option<u64>,
}

impl Liveness {
    fn observe<T>(
        &mut self,
        ctx: &Ctx,
        client: u32,
        member: usize,
        session: i64,
        call_ns: u64,
        r: &Result<Result<T, zk::Error>, tokio::time::error::Elapsed>,
    ) {
        if self.session != session {
            self.session = session;
            self.last_ok_call_ns = None;
        }
        match r {
            Ok(Ok(_)) => self.last_ok_call_ns = Some(call_ns),
            Ok(Err(zk::Error::SessionExpired)) => {
                let window = ctx
                    .session_ms
                    .saturating_sub(super::invariants::EXPIRY_SLACK_MS)
                    * 1_000_000;
                if let Some(ok) = self.last_ok_call_ns.filter(|ok| call_ns < ok + window) {
                    ctx.violations.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                        "lock client {client} (member {member}): session {session:#x} expired {} ms after a request it invoked succeeded (request at {} ms, timeout {} ms)",
                        (call_ns - ok) / 1_000_000,
                        call_ns / 1_000_000,
                        ctx.session_ms
                    ));
                }
                self.last_ok_call_ns = None;
            }
            _ => {}
        }
    }
}

fn seq_of(name: &str) -> Option<i64> {
    name.rsplit('-').next()?.parse().ok()
}

/// The lock recipe (kazoo/Curator style, polling instead of watching the predecessor):
/// create an ephemeral sequential node, hold the lock when it is the lowest child, hold for a
/// while checking the own node (and its ephemeralOwner) every 50 ms, then delete it. The tenure
/// ends at the delete's invocation or as soon as the holder sees any error, a client timeout
/// (session/3) or its node missing: what a careful client treats as "lock maybe lost".
pub async fn lock_client(ctx: Arc<Ctx>, client: u32, mut session: Session, seed: u64) {
    let mut rng = SeededRng::new(seed);
    let parent = ctx.lock_parent();
    let prefix = format!("{parent}/l-");
    let opts = CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
    let mut liveness = Liveness::default();
    'outer: while !ctx.stopped() {
        let Some(c) = session.get().await else {
            continue;
        };
        let c = c.clone();
        let sid = c.session_id().0;
        let me = match tokio::time::timeout(ctx.op_timeout, c.create(&prefix, b"", &opts)).await {
            Ok(Ok((stat, seq))) => {
                if stat.ephemeral_owner != sid {
                    ctx.violations.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                        "lock client {client}: created ephemeral with owner {:#x}, session is {sid:#x}",
                        stat.ephemeral_owner
                    ));
                }
                seq.into_i64()
            }
            _ => {
                // Unknown: an orphan node may exist; a fresh session makes it go away with the
                // old one (it is never released by hand, so it only delays others).
                session.reset();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let my_path = format!("{prefix}{me:010}");
        // Wait to be lowest (bounded).
        let wait_deadline = Instant::now() + Duration::from_secs(30);
        let acquired_ns = loop {
            if ctx.stopped() || Instant::now() > wait_deadline {
                let _ = tokio::time::timeout(ctx.op_timeout, c.delete(&my_path, None)).await;
                continue 'outer;
            }
            let call_ns = now_ns();
            let r = tokio::time::timeout(ctx.op_timeout, c.list_children(&parent)).await;
            liveness.observe(&ctx, client, session.member, sid, call_ns, &r);
            match r {
                Ok(Ok(kids)) => {
                    let lowest = kids.iter().filter_map(|k| seq_of(k)).min();
                    if lowest == Some(me) {
                        break now_ns();
                    }
                    if !kids.iter().any(|k| seq_of(k) == Some(me)) {
                        // Own node gone: the session expired.
                        session.reset();
                        continue 'outer;
                    }
                }
                _ => {
                    session.reset();
                    continue 'outer;
                }
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        };
        // Hold.
        let hold = Duration::from_millis(rng.range(50, 300));
        let hold_until = Instant::now() + hold;
        let mut end = "released".to_string();
        let mut released_ns = None;
        while Instant::now() < hold_until {
            let call_ns = now_ns();
            let r = tokio::time::timeout(ctx.op_timeout, c.check_stat(&my_path)).await;
            liveness.observe(&ctx, client, session.member, sid, call_ns, &r);
            match r {
                Ok(Ok(Some(stat))) => {
                    if stat.ephemeral_owner != sid {
                        ctx.violations
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!(
                            "lock client {client}: {my_path} owned by {:#x}, session is {sid:#x}",
                            stat.ephemeral_owner
                        ));
                    }
                }
                Ok(Ok(None)) => {
                    end = "lost: node gone".into();
                    released_ns = Some(now_ns());
                    // Nobody deletes another client's node, so it went with the session. A
                    // session that still answers on the same connection afterwards means the
                    // ephemeral vanished under a live session (an expired session's connection
                    // is closed when the expiry is applied, before any later read is served).
                    if let Ok(Ok(_)) =
                        tokio::time::timeout(ctx.op_timeout, c.check_stat(&parent)).await
                    {
                        if !c.state().is_terminated() {
                            ctx.violations.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                                "lock client {client}: ephemeral {my_path} of session {sid:#x} vanished while the session still answered"
                            ));
                        }
                    }
                    break;
                }
                Ok(Err(e)) => {
                    end = format!("lost: {e}");
                    released_ns = Some(now_ns());
                    break;
                }
                Err(_) => {
                    end = "lost: client timeout".into();
                    released_ns = Some(now_ns());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let released_ns = match released_ns {
            Some(t) => {
                session.reset();
                t
            }
            None => {
                let t = now_ns();
                match tokio::time::timeout(ctx.op_timeout, c.delete(&my_path, None)).await {
                    Ok(Ok(())) => {}
                    _ => session.reset(),
                }
                t
            }
        };
        ctx.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(LockRecord {
                client,
                member: session.member,
                session: sid,
                node: my_path,
                acquired_ns,
                released_ns,
                end,
            });
        tokio::time::sleep(Duration::from_millis(rng.range(0, 50))).await;
    }
}
