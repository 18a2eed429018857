//! The reconfig request (op 16) against the replicated configuration: ZooKeeper's
//! `PrepRequestProcessor` checks and the `/zookeeper/config` text (`QuorumMaj.toString`).
//!
//! Deterministic and socket-free: the state machine runs it when a reconfig entry applies, on
//! every replica. The membership itself is changed by the raft thread (`raft::reconfig`), which
//! hands the [`Context`] back when the joint conf change applies.

use rookery_protocol::{ErrorCode, GetDataResponse, ReconfigRequest, Response};

use crate::config::{Config, PeerRole, ServerSpec};
use crate::raft::MembershipChange;
use crate::state::ReplicatedState;
use crate::txn::{Origin, Txn};
use crate::watch::WatchTrigger;

/// What a reconfig entry does when it applies.
#[derive(Debug)]
pub enum Outcome {
    /// Answered now: an error, or a change that keeps the membership (only addresses or
    /// client ports move), applied to `/zookeeper/config` at once.
    Reply(Result<Response, ErrorCode>, Vec<WatchTrigger>),
    /// A membership change for the leader to carry out; the new servers' addresses must be
    /// known to the peer network first.
    Change(MembershipChange, Vec<ServerSpec>),
}

/// Applies a reconfig entry at `zxid` (of `term`) with ZooKeeper's checks, in its order:
/// ReconfigDisabled, BadVersion (`curConfigId` ≠ the current version, -1 = no check),
/// BadArguments, NoAuth (WRITE on `/zookeeper/config`, i.e. super). ReconfigInProgress and
/// NewConfigNoQuorum are the leader's to decide.
pub fn on_request(
    state: &mut ReplicatedState,
    config: &Config,
    txn: &Txn,
    req: &ReconfigRequest,
    zxid: i64,
    term: u64,
) -> Outcome {
    let refuse = |code| Outcome::Reply(Err(code), Vec::new());
    if !config.reconfig_enabled {
        return refuse(ErrorCode::ReconfigDisabled);
    }
    let text = String::from_utf8_lossy(&state.tree.config_data()).into_owned();
    let (current, version) = parse_config(&text);
    if req.cur_config_id != -1 && u64::try_from(req.cur_config_id).ok() != Some(version) {
        return refuse(ErrorCode::BadVersion);
    }
    let next = match plan(&current, req, config.standalone_enabled) {
        Ok(next) => next,
        Err(code) => return refuse(code),
    };
    if let Err(code) = state.tree.may_reconfig(&txn.auth) {
        return refuse(code);
    }
    let context = Context {
        origin: txn.origin,
        time_ms: txn.time_ms,
        servers: next.clone(),
    };
    if membership(&next) == membership(&current) {
        return match config_applied(state, &context, zxid) {
            Ok((response, triggers)) => Outcome::Reply(Ok(response), triggers),
            Err(code) => refuse(code),
        };
    }
    let (voters, learners) = membership(&next);
    let joining = next
        .iter()
        .filter(|s| !current.iter().any(|c| c.id == s.id))
        .cloned()
        .collect();
    Outcome::Change(
        MembershipChange {
            voters,
            learners,
            context: context.encode(),
            term,
        },
        joining,
    )
}

/// Writes the configuration of `context` into `/zookeeper/config` as of `zxid` (its
/// version), returning the reconfig reply (the new data and Stat) and the watch trigger.
pub fn config_applied(
    state: &mut ReplicatedState,
    context: &Context,
    zxid: i64,
) -> Result<(Response, Vec<WatchTrigger>), ErrorCode> {
    let text = config_text(&context.servers, u64::try_from(zxid).unwrap_or(0));
    let (stat, triggers) = state
        .tree
        .set_config(text.as_bytes(), zxid, context.time_ms)?;
    Ok((
        Response::GetData(GetDataResponse {
            data: Some(text.into_bytes()),
            stat,
        }),
        triggers,
    ))
}

/// The configured server list as ZooKeeper writes it in `/zookeeper/config`: the
/// `server.N=...` lines sorted by id, then `version=<hex>`.
pub fn config_text(servers: &[ServerSpec], version: u64) -> String {
    let mut sorted: Vec<&ServerSpec> = servers.iter().collect();
    sorted.sort_by_key(|s| s.id);
    let mut out = String::new();
    for s in sorted {
        out.push_str(&s.zk_line());
        out.push('\n');
    }
    out.push_str(&format!("version={version:x}"));
    out
}

/// `/zookeeper/config` of a fresh ensemble: zoo.cfg's servers, version 0 (ZooKeeper's static
/// configuration version). Empty for a standalone server, as in ZooKeeper.
pub fn initial_config(config: &Config) -> String {
    if !config.is_ensemble() {
        return String::new();
    }
    config_text(&config.servers, 0)
}

/// The servers and the version of a `/zookeeper/config` text. Unparsable lines are skipped
/// (the text is always written by [`config_text`]).
pub fn parse_config(text: &str) -> (Vec<ServerSpec>, u64) {
    let mut servers = Vec::new();
    let mut version = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key == "version" {
            version = u64::from_str_radix(value.trim(), 16).unwrap_or(0);
        } else if let Some(id) = key.strip_prefix("server.") {
            if let Some(spec) = id
                .parse::<u64>()
                .ok()
                .and_then(|id| ServerSpec::parse(id, value).ok())
            {
                servers.push(spec);
            }
        }
    }
    servers.sort_by_key(|s| s.id);
    (servers, version)
}

/// Voters (participants) and learners (observers) of a server list.
pub fn membership(servers: &[ServerSpec]) -> (Vec<u64>, Vec<u64>) {
    let ids = |role: PeerRole| -> Vec<u64> {
        let mut v: Vec<u64> = servers
            .iter()
            .filter(|s| s.role == role)
            .map(|s| s.id)
            .collect();
        v.sort_unstable();
        v
    };
    (ids(PeerRole::Participant), ids(PeerRole::Observer))
}

/// One `server.N=...` line of a reconfig request.
fn parse_server_line(line: &str) -> Result<ServerSpec, ErrorCode> {
    let (key, value) = line.split_once('=').ok_or(ErrorCode::BadArguments)?;
    let id = key
        .trim()
        .rsplit('.')
        .next()
        .and_then(|id| id.parse::<u64>().ok())
        .ok_or(ErrorCode::BadArguments)?;
    let spec = ServerSpec::parse(id, value).map_err(|_| ErrorCode::BadArguments)?;
    // ZooKeeper: "each server should have 3 ports specified".
    if spec.election_port.is_none() || spec.client_port.is_none() {
        return Err(ErrorCode::BadArguments);
    }
    Ok(spec)
}

/// The server list a reconfig asks for, from the `current` one: `newMembers` replaces it
/// (non-incremental), else `leavingServers` are removed and `joiningServers` added or
/// replaced (incremental). BadArguments for malformed lines, duplicate addresses or too few
/// participants (2 with `standaloneEnabled`, else 1), as ZooKeeper.
pub fn plan(
    current: &[ServerSpec],
    req: &ReconfigRequest,
    standalone_enabled: bool,
) -> Result<Vec<ServerSpec>, ErrorCode> {
    // ZooKeeper: a null list is absent; "" joins or removes nothing (and as `newMembers` it
    // is an empty, hence invalid, member list).
    let given = |s: &Option<String>| s.clone();
    let mut next: Vec<ServerSpec> = match given(&req.new_members) {
        Some(members) => {
            let mut out: Vec<ServerSpec> = Vec::new();
            for line in members.split([',', '\n']).map(str::trim) {
                if line.is_empty() || line.starts_with("version=") {
                    continue;
                }
                let spec = parse_server_line(line)?;
                out.retain(|s| s.id != spec.id);
                out.push(spec);
            }
            out
        }
        None => {
            let mut out = current.to_vec();
            if let Some(leaving) = given(&req.leaving_servers) {
                for id in leaving.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let id: u64 = id.parse().map_err(|_| ErrorCode::BadArguments)?;
                    out.retain(|s| s.id != id);
                }
            }
            if let Some(joining) = given(&req.joining_servers) {
                for line in joining.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let spec = parse_server_line(line)?;
                    out.retain(|s| s.id != spec.id);
                    out.push(spec);
                }
            }
            out
        }
    };
    next.sort_by_key(|s| s.id);
    for (i, a) in next.iter().enumerate() {
        for b in &next[i + 1..] {
            if a.peer_address().eq_ignore_ascii_case(&b.peer_address()) {
                return Err(ErrorCode::BadArguments);
            }
        }
    }
    let voters = next
        .iter()
        .filter(|s| s.role == PeerRole::Participant)
        .count();
    if voters < if standalone_enabled { 2 } else { 1 } {
        return Err(ErrorCode::BadArguments);
    }
    Ok(next)
}

/// What travels with the membership change through the raft thread and back: who to answer
/// and the new configuration (its version is the index the change applies at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The reconfig request's origin.
    pub origin: Origin,
    /// The reconfig entry's timestamp: `/zookeeper/config`'s mtime (conf change entries carry
    /// no time of their own, and every replica must write the same one).
    pub time_ms: i64,
    /// The new server list.
    pub servers: Vec<ServerSpec>,
}

/// Leading bytes of an encoded [`Context`].
const CONTEXT_MAGIC: &[u8; 4] = b"RKRC";

impl Context {
    /// `magic | server u64 | conn u64 | xid i32 | time i64 | config text`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = CONTEXT_MAGIC.to_vec();
        out.extend_from_slice(&self.origin.server_id.to_be_bytes());
        out.extend_from_slice(&self.origin.conn_id.to_be_bytes());
        out.extend_from_slice(&self.origin.xid.to_be_bytes());
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out.extend_from_slice(config_text(&self.servers, 0).as_bytes());
        out
    }

    /// The inverse of [`Context::encode`]; `None` for anything else (e.g. empty contexts).
    pub fn decode(bytes: &[u8]) -> Option<Context> {
        let rest = bytes.strip_prefix(CONTEXT_MAGIC.as_slice())?;
        if rest.len() < 28 {
            return None;
        }
        let u64_at = |i: usize| rest.get(i..i + 8).and_then(|b| b.try_into().ok());
        let server_id = u64::from_be_bytes(u64_at(0)?);
        let conn_id = u64::from_be_bytes(u64_at(8)?);
        let xid = i32::from_be_bytes(rest.get(16..20)?.try_into().ok()?);
        let time_ms = i64::from_be_bytes(u64_at(20)?);
        let text = std::str::from_utf8(rest.get(28..)?).ok()?;
        Some(Context {
            origin: Origin {
                server_id,
                conn_id,
                xid,
            },
            time_ms,
            servers: parse_config(text).0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(line: &str) -> ServerSpec {
        parse_server_line(line).unwrap()
    }

    fn three() -> Vec<ServerSpec> {
        (1..=3)
            .map(|i| {
                spec(&format!(
                    "server.{i}=127.0.0.1:{}:{}:participant;127.0.0.1:{}",
                    2000 + i,
                    3000 + i,
                    4000 + i
                ))
            })
            .collect()
    }

    fn req(joining: Option<&str>, leaving: Option<&str>, members: Option<&str>) -> ReconfigRequest {
        ReconfigRequest {
            joining_servers: joining.map(str::to_string),
            leaving_servers: leaving.map(str::to_string),
            new_members: members.map(str::to_string),
            cur_config_id: -1,
        }
    }

    #[test]
    fn config_text_is_zookeepers_format() {
        let text = config_text(&three(), 0x1_0000_0003);
        assert_eq!(
            text,
            "server.1=127.0.0.1:2001:3001:participant;127.0.0.1:4001\n\
             server.2=127.0.0.1:2002:3002:participant;127.0.0.1:4002\n\
             server.3=127.0.0.1:2003:3003:participant;127.0.0.1:4003\n\
             version=100000003"
        );
        let (servers, version) = parse_config(&text);
        assert_eq!(servers, three());
        assert_eq!(version, 0x1_0000_0003);
    }

    #[test]
    fn incremental_and_non_incremental_plans() {
        let add = req(
            Some("server.4=127.0.0.1:2004:3004:observer;127.0.0.1:4004"),
            Some("2"),
            None,
        );
        let next = plan(&three(), &add, false).unwrap();
        assert_eq!(membership(&next), (vec![1, 3], vec![4]));
        let members = req(
            None,
            None,
            Some("server.1=127.0.0.1:2001:3001:participant;127.0.0.1:4001,server.5=127.0.0.1:2005:3005:participant;127.0.0.1:4005"),
        );
        assert_eq!(
            membership(&plan(&three(), &members, false).unwrap()).0,
            vec![1, 5]
        );
        // Two ports only, a bad id, a duplicate address, no participant left.
        for bad in [
            req(Some("server.4=127.0.0.1:2004"), None, None),
            req(None, Some("x"), None),
            req(Some("server.4=127.0.0.1:2001:3004;4004"), None, None),
            req(None, Some("1,2,3"), None),
        ] {
            assert_eq!(
                plan(&three(), &bad, false),
                Err(ErrorCode::BadArguments),
                "{bad:?}"
            );
        }
        // standaloneEnabled needs two participants.
        assert_eq!(
            plan(&three(), &req(None, Some("1,2"), None), true),
            Err(ErrorCode::BadArguments)
        );
        assert!(plan(&three(), &req(None, Some("1,2"), None), false).is_ok());
    }

    #[test]
    fn context_round_trips() {
        let c = Context {
            origin: Origin {
                server_id: 2,
                conn_id: 77,
                xid: -5,
            },
            time_ms: 1_700_000_000_123,
            servers: three(),
        };
        assert_eq!(Context::decode(&c.encode()), Some(c));
        assert_eq!(Context::decode(&[]), None);
        assert_eq!(Context::decode(b"RKRCshort"), None);
    }
}
