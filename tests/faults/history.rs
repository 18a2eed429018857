//! What the workloads observed, as typed records, and their JSON-lines form (one object per
//! line, `"t"` = record type) so that a run can be re-checked offline.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{json, Value};

use super::linearizability::{RegCall, RegOp, RegOutcome, RegState};

/// Nanoseconds since the first call in this process: the one clock every record uses.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A register operation plus where it ran and how it was issued.
#[derive(Clone, Debug)]
pub struct RegRecord {
    pub key: String,
    pub member: usize,
    /// A `sync` preceded the read.
    pub synced: bool,
    pub op: RegOp,
    /// The client error behind an unknown outcome.
    pub error: Option<String>,
}

/// A sequential create under one parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqRecord {
    pub client: u32,
    pub member: usize,
    pub call_ns: u64,
    /// `None`: unknown outcome.
    pub ret_ns: Option<u64>,
    /// The sequence number the server assigned (acknowledged creates only).
    pub seq: Option<i64>,
    pub error: Option<String>,
}

/// One lock tenure as the holder saw it: from the listing that showed its node lowest until
/// it released (invocation of the delete) or learned it might have lost the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRecord {
    pub client: u32,
    pub member: usize,
    pub session: i64,
    pub node: String,
    pub acquired_ns: u64,
    pub released_ns: u64,
    /// How the tenure ended: "released", "lost: <error>", "lost: node gone".
    pub end: String,
}

/// A nemesis event actually executed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NemesisRecord {
    pub start_ns: u64,
    pub end_ns: u64,
    pub what: String,
}

/// Everything one run produced.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub seed: u64,
    pub target: String,
    pub servers: usize,
    /// The clients' session timeout.
    pub session_ms: u64,
    pub inits: BTreeMap<String, RegState>,
    pub regs: Vec<RegRecord>,
    pub seqs: Vec<SeqRecord>,
    pub locks: Vec<LockRecord>,
    /// Names (sequence numbers) under the sequential parent after the run, from one member
    /// after `sync`.
    pub seq_final: Option<Vec<i64>>,
    pub nemesis: Vec<NemesisRecord>,
    /// Free-form invariant violations observed online (e.g. a wrong ephemeralOwner).
    pub online_violations: Vec<String>,
}

fn call_json(c: RegCall) -> Value {
    match c {
        RegCall::Read => json!({"call": "read"}),
        RegCall::Write { value } => json!({"call": "write", "value": value}),
        RegCall::Cas {
            expected_version,
            value,
        } => json!({"call": "cas", "value": value, "expected_version": expected_version}),
    }
}

fn outcome_json(o: RegOutcome) -> Value {
    match o {
        RegOutcome::ReadOk(s) => {
            json!({"outcome": "read_ok", "read_value": s.value, "version": s.version})
        }
        RegOutcome::WriteOk { new_version } => {
            json!({"outcome": "write_ok", "version": new_version})
        }
        RegOutcome::CasBadVersion => json!({"outcome": "bad_version"}),
        RegOutcome::Unknown => json!({"outcome": "unknown"}),
    }
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// Why a history file could not be read.
#[derive(Debug)]
pub enum HistoryFileError {
    Io(std::io::Error),
    Json { line: usize, err: serde_json::Error },
    Field { line: usize, field: &'static str },
}

impl std::fmt::Display for HistoryFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HistoryFileError::Io(e) => write!(f, "io: {e}"),
            HistoryFileError::Json { line, err } => write!(f, "line {line}: bad json: {err}"),
            HistoryFileError::Field { line, field } => {
                write!(f, "line {line}: missing or bad field {field:?}")
            }
        }
    }
}

impl History {
    pub fn write_jsonl(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        let head = json!({"t": "run", "seed": self.seed, "target": self.target, "servers": self.servers, "session_ms": self.session_ms});
        writeln!(f, "{head}")?;
        for (k, s) in &self.inits {
            writeln!(
                f,
                "{}",
                json!({"t": "init", "key": k, "value": s.value, "version": s.version})
            )?;
        }
        for r in &self.regs {
            let base = json!({
                "t": "reg", "id": r.op.id, "key": r.key, "client": r.op.client, "member": r.member,
                "synced": r.synced, "call_ns": r.op.call_ns, "ret_ns": r.op.ret_ns, "error": r.error,
            });
            let v = merge(
                merge(base, call_json(r.op.call)),
                outcome_json(r.op.outcome),
            );
            writeln!(f, "{v}")?;
        }
        for s in &self.seqs {
            writeln!(
                f,
                "{}",
                json!({"t": "seq", "client": s.client, "member": s.member, "call_ns": s.call_ns,
                "ret_ns": s.ret_ns, "seq": s.seq, "error": s.error})
            )?;
        }
        if let Some(fin) = &self.seq_final {
            writeln!(f, "{}", json!({"t": "seq_final", "seqs": fin}))?;
        }
        for l in &self.locks {
            writeln!(
                f,
                "{}",
                json!({"t": "lock", "client": l.client, "member": l.member, "session": l.session,
                "node": l.node, "acquired_ns": l.acquired_ns, "released_ns": l.released_ns, "end": l.end})
            )?;
        }
        for n in &self.nemesis {
            writeln!(
                f,
                "{}",
                json!({"t": "nemesis", "start_ns": n.start_ns, "end_ns": n.end_ns, "what": n.what})
            )?;
        }
        for v in &self.online_violations {
            writeln!(f, "{}", json!({"t": "violation", "what": v}))?;
        }
        f.flush()
    }

    pub fn read_jsonl(path: &Path) -> Result<History, HistoryFileError> {
        let f = std::fs::File::open(path).map_err(HistoryFileError::Io)?;
        let mut h = History::default();
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(HistoryFileError::Io)?;
            if line.trim().is_empty() {
                continue;
            }
            let n = i + 1;
            let v: Value = serde_json::from_str(&line)
                .map_err(|err| HistoryFileError::Json { line: n, err })?;
            let bad = |field: &'static str| HistoryFileError::Field { line: n, field };
            let u = |field: &'static str| v[field].as_u64().ok_or(bad(field));
            let i32f = |field: &'static str| {
                v[field]
                    .as_i64()
                    .and_then(|x| i32::try_from(x).ok())
                    .ok_or(bad(field))
            };
            let s = |field: &'static str| v[field].as_str().map(str::to_string).ok_or(bad(field));
            let opt_s = |field: &'static str| v[field].as_str().map(str::to_string);
            match v["t"].as_str().ok_or(bad("t"))? {
                "run" => {
                    h.seed = u("seed")?;
                    h.target = s("target")?;
                    h.servers = u("servers")? as usize;
                    // Files written before the field existed used the suite's 6 s sessions.
                    h.session_ms = v["session_ms"].as_u64().unwrap_or(6_000);
                }
                "init" => {
                    h.inits.insert(
                        s("key")?,
                        RegState {
                            value: u("value")?,
                            version: i32f("version")?,
                        },
                    );
                }
                "reg" => {
                    let call = match s("call")?.as_str() {
                        "read" => RegCall::Read,
                        "write" => RegCall::Write { value: u("value")? },
                        "cas" => RegCall::Cas {
                            expected_version: i32f("expected_version")?,
                            value: u("value")?,
                        },
                        _ => return Err(bad("call")),
                    };
                    let outcome = match s("outcome")?.as_str() {
                        "read_ok" => RegOutcome::ReadOk(RegState {
                            value: u("read_value")?,
                            version: i32f("version")?,
                        }),
                        "write_ok" => RegOutcome::WriteOk {
                            new_version: i32f("version")?,
                        },
                        "bad_version" => RegOutcome::CasBadVersion,
                        "unknown" => RegOutcome::Unknown,
                        _ => return Err(bad("outcome")),
                    };
                    h.regs.push(RegRecord {
                        key: s("key")?,
                        member: u("member")? as usize,
                        synced: v["synced"].as_bool().ok_or(bad("synced"))?,
                        op: RegOp {
                            id: u("id")? as usize,
                            client: u("client")? as u32,
                            call_ns: u("call_ns")?,
                            ret_ns: v["ret_ns"].as_u64(),
                            call,
                            outcome,
                        },
                        error: opt_s("error"),
                    });
                }
                "seq" => h.seqs.push(SeqRecord {
                    client: u("client")? as u32,
                    member: u("member")? as usize,
                    call_ns: u("call_ns")?,
                    ret_ns: v["ret_ns"].as_u64(),
                    seq: v["seq"].as_i64(),
                    error: opt_s("error"),
                }),
                "seq_final" => {
                    let arr = v["seqs"].as_array().ok_or(bad("seqs"))?;
                    h.seq_final = Some(arr.iter().filter_map(Value::as_i64).collect());
                }
                "lock" => h.locks.push(LockRecord {
                    client: u("client")? as u32,
                    member: u("member")? as usize,
                    session: v["session"].as_i64().ok_or(bad("session"))?,
                    node: s("node")?,
                    acquired_ns: u("acquired_ns")?,
                    released_ns: u("released_ns")?,
                    end: s("end")?,
                }),
                "nemesis" => h.nemesis.push(NemesisRecord {
                    start_ns: u("start_ns")?,
                    end_ns: u("end_ns")?,
                    what: s("what")?,
                }),
                "violation" => h.online_violations.push(s("what")?),
                _ => return Err(bad("t")),
            }
        }
        Ok(h)
    }

    /// Register ops grouped per key, for the checker.
    pub fn reg_ops_per_key(&self) -> BTreeMap<String, Vec<RegOp>> {
        let mut m: BTreeMap<String, Vec<RegOp>> = BTreeMap::new();
        for r in &self.regs {
            m.entry(r.key.clone()).or_default().push(r.op.clone());
        }
        m
    }
}
