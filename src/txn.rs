//! The Raft log entry: everything the state machine needs to apply a change deterministically.
//!
//! The proposer fills in the time, the session's auth ids and any random bytes, so every
//! replica that applies the entry computes the same result. Encoded with jute, reusing the
//! protocol crate's request records.
//!
//! # Versions
//!
//! Two numbers travel in every entry, for two different reasons:
//!
//! * the **format version** says how the bytes are laid out. Version 1 (the original layout)
//!   carries no semantics number; version 2 adds one right after the format version. Both
//!   decode; entries are always written as version 2.
//! * the **apply-semantics version** ([`APPLY_SEMANTICS`]) says which rules the proposer
//!   expected the entry to be applied with. An entry stores the client's request, not its
//!   outcome, and apply re-runs the checks (ACL, version, TTL...). A later rookery that
//!   changes such a check bumps `APPLY_SEMANTICS` and keeps the old branch in
//!   `Applier::apply_txn`, keyed on the entry's number, so replaying old entries after an
//!   upgrade gives the results their clients already got. Version-1 entries (no number) are
//!   semantics 1. An entry from a newer semantics than this build knows stops the server
//!   (fail-stop) rather than being applied with older rules or skipped.

use bytes::{BufMut, BytesMut};
use rookery_protocol::{DecodeError, Id, Reader, Record, Request, RequestHeader};

/// Identifies the connection waiting for an entry's result, so the server that proposed it can
/// route the reply. Matched by value, never by queue position: proposals can be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Origin {
    /// The server that proposed the entry; only it replies.
    pub server_id: u64,
    /// The connection on that server; 0 for the server's own housekeeping (expiry, reaping).
    pub conn_id: u64,
    /// The client's request xid.
    pub xid: i32,
}

/// What the entry does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnBody {
    /// A new session. The id is assigned at apply time from the replicated counter.
    CreateSession {
        /// Negotiated timeout, in ms.
        timeout_ms: i32,
        /// The random password, chosen by the proposer.
        passwd: Vec<u8>,
    },
    /// closeSession from the client, or expiry decided by the leader.
    CloseSession {
        /// The session to end.
        session_id: i64,
    },
    /// A client write (or the reaper's deleteContainer), checked and applied against the tree.
    Request(Request),
    /// A client resumed `session_id` through the entry's origin connection (apply semantics
    /// 2): every replica makes that connection the session's owner and takes the renegotiated
    /// timeout; requests still arriving through the old connection then get SessionMoved.
    Reattach {
        /// The resumed session.
        session_id: i64,
        /// The timeout negotiated by the resume, in ms.
        timeout_ms: i32,
    },
    /// The leader did not carry out the reconfig proposed through the entry's origin: the
    /// origin answers `code` (ReconfigInProgress, NewConfigNoQuorum).
    ReconfigRefused {
        /// The ZooKeeper error code.
        code: i32,
    },
}

/// The apply-semantics version this build stamps and understands (see the module docs).
/// * 1: the original rules.
/// * 2: sessions have an owner connection (CreateSession, Reattach); a request or client
///   closeSession proposed through another connection gets SessionMoved and is not applied.
pub const APPLY_SEMANTICS: u32 = 2;

impl Origin {
    /// The origin of an entry the server proposes for itself (session expiry, reaping):
    /// no connection waits for it.
    pub fn housekeeping(server_id: u64) -> Origin {
        Origin {
            server_id,
            conn_id: 0,
            xid: 0,
        }
    }
}

/// Wall-clock ms since the epoch, as entries carry it.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// The rules the proposer expects the entry to be applied with ([`APPLY_SEMANTICS`]).
    pub semantics: u32,
    /// Where the reply goes.
    pub origin: Origin,
    /// The session on whose behalf the change is made (owner of ephemerals).
    pub session_id: i64,
    /// Wall-clock ms at proposal: ctime/mtime and TTL checks use this, not the applier's clock.
    pub time_ms: i64,
    /// The session's authenticated ids when it sent the request, for ACL checks at apply.
    pub auth: Vec<Id>,
    /// The change itself.
    pub body: TxnBody,
}

const KIND_CREATE_SESSION: i32 = 1;
const KIND_CLOSE_SESSION: i32 = 2;
const KIND_REQUEST: i32 = 3;
const KIND_REATTACH: i32 = 4;
const KIND_RECONFIG_REFUSED: i32 = 5;
/// The original layout, without a semantics number (decoded as semantics 1).
const FORMAT_V1: i32 = 1;
/// The layout written today: the format version, then the apply-semantics version.
const FORMAT_VERSION: i32 = 2;

impl Txn {
    /// An entry proposed now, stamped with this build's apply semantics. The one place entries
    /// are built, so the stamp and the clock cannot be forgotten at a call site.
    pub fn new(origin: Origin, session_id: i64, auth: Vec<Id>, body: TxnBody) -> Txn {
        Txn {
            semantics: APPLY_SEMANTICS,
            origin,
            session_id,
            time_ms: now_ms(),
            auth,
            body,
        }
    }

    /// The entry's bytes, in the current format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::with_capacity(128);
        out.put_i32(FORMAT_VERSION);
        out.put_u32(self.semantics);
        out.put_u64(self.origin.server_id);
        out.put_u64(self.origin.conn_id);
        out.put_i32(self.origin.xid);
        out.put_i64(self.session_id);
        out.put_i64(self.time_ms);
        self.auth.write(&mut out);
        match &self.body {
            TxnBody::CreateSession { timeout_ms, passwd } => {
                out.put_i32(KIND_CREATE_SESSION);
                out.put_i32(*timeout_ms);
                passwd.write(&mut out);
            }
            TxnBody::CloseSession { session_id } => {
                out.put_i32(KIND_CLOSE_SESSION);
                out.put_i64(*session_id);
            }
            TxnBody::Request(request) => {
                out.put_i32(KIND_REQUEST);
                request.encode_packet(self.origin.xid, &mut out);
            }
            TxnBody::Reattach {
                session_id,
                timeout_ms,
            } => {
                out.put_i32(KIND_REATTACH);
                out.put_i64(*session_id);
                out.put_i32(*timeout_ms);
            }
            TxnBody::ReconfigRefused { code } => {
                out.put_i32(KIND_RECONFIG_REFUSED);
                out.put_i32(*code);
            }
        }
        out.to_vec()
    }

    /// Decodes an entry of either format version.
    pub fn decode(bytes: &[u8]) -> Result<Txn, DecodeError> {
        let mut input = Reader::new(bytes);
        let version = input.read_i32()?;
        let semantics = match version {
            FORMAT_V1 => 1,
            FORMAT_VERSION => input.read_i32()? as u32,
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "txn format version",
                    value: i64::from(version),
                })
            }
        };
        let server_id = input.read_i64()? as u64;
        let conn_id = input.read_i64()? as u64;
        let xid = input.read_i32()?;
        let session_id = input.read_i64()?;
        let time_ms = input.read_i64()?;
        let auth = Vec::<Id>::read(&mut input)?;
        let body = match input.read_i32()? {
            KIND_CREATE_SESSION => TxnBody::CreateSession {
                timeout_ms: input.read_i32()?,
                passwd: input.read_buffer()?,
            },
            KIND_CLOSE_SESSION => TxnBody::CloseSession {
                session_id: input.read_i64()?,
            },
            KIND_REQUEST => {
                let header = RequestHeader::read(&mut input)?;
                TxnBody::Request(Request::read_body(header.op_type, &mut input)?)
            }
            KIND_REATTACH => TxnBody::Reattach {
                session_id: input.read_i64()?,
                timeout_ms: input.read_i32()?,
            },
            KIND_RECONFIG_REFUSED => TxnBody::ReconfigRefused {
                code: input.read_i32()?,
            },
            other => {
                return Err(DecodeError::InvalidValue {
                    field: "txn kind",
                    value: i64::from(other),
                })
            }
        };
        input.finish()?;
        Ok(Txn {
            semantics,
            origin: Origin {
                server_id,
                conn_id,
                xid,
            },
            session_id,
            time_ms,
            auth,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rookery_protocol::{CreateRequest, OpCode};

    #[test]
    fn round_trips() {
        let txns = vec![
            Txn {
                semantics: APPLY_SEMANTICS,
                origin: Origin {
                    server_id: 1,
                    conn_id: 7,
                    xid: 3,
                },
                session_id: 42,
                time_ms: 1_700_000_000_000,
                auth: vec![Id {
                    scheme: "ip".into(),
                    id: "127.0.0.1".into(),
                }],
                body: TxnBody::Request(Request::Create {
                    op: OpCode::Create2,
                    req: CreateRequest {
                        path: "/a".into(),
                        data: Some(b"x".to_vec()),
                        acl: vec![],
                        flags: 0,
                    },
                }),
            },
            Txn {
                semantics: 7,
                origin: Origin::default(),
                session_id: 0,
                time_ms: 5,
                auth: vec![],
                body: TxnBody::CreateSession {
                    timeout_ms: 4000,
                    passwd: vec![1; 16],
                },
            },
            Txn {
                semantics: 7,
                origin: Origin::default(),
                session_id: 9,
                time_ms: 5,
                auth: vec![],
                body: TxnBody::CloseSession { session_id: 9 },
            },
            Txn {
                semantics: 2,
                origin: Origin {
                    server_id: 2,
                    conn_id: 5,
                    xid: 0,
                },
                session_id: 9,
                time_ms: 5,
                auth: vec![],
                body: TxnBody::Reattach {
                    session_id: 9,
                    timeout_ms: 3000,
                },
            },
            Txn {
                semantics: 2,
                origin: Origin {
                    server_id: 3,
                    conn_id: 6,
                    xid: 11,
                },
                session_id: 0,
                time_ms: 5,
                auth: vec![],
                body: TxnBody::ReconfigRefused { code: -14 },
            },
        ];
        for txn in txns {
            assert_eq!(Txn::decode(&txn.encode()).unwrap(), txn);
        }
    }

    /// A setData to null stays null (not empty) through the log entry.
    #[test]
    fn null_data_round_trips() {
        let txn = Txn {
            semantics: APPLY_SEMANTICS,
            origin: Origin::default(),
            session_id: 1,
            time_ms: 5,
            auth: vec![],
            body: TxnBody::Request(Request::SetData(rookery_protocol::SetDataRequest {
                path: "/a".into(),
                data: None,
                version: -1,
            })),
        };
        assert_eq!(Txn::decode(&txn.encode()), Ok(txn));
    }

    #[test]
    fn version_1_entries_decode_as_semantics_1() {
        let txn = Txn::new(
            Origin::housekeeping(3),
            9,
            vec![],
            TxnBody::CloseSession { session_id: 9 },
        );
        let v2 = txn.encode();
        // A version-1 entry is the same bytes without the semantics number.
        let mut v1 = FORMAT_V1.to_be_bytes().to_vec();
        v1.extend_from_slice(&v2[8..]);
        let old = Txn::decode(&v1).unwrap();
        assert_eq!(old.semantics, 1);
        assert_eq!(
            old,
            Txn {
                semantics: 1,
                ..txn.clone()
            }
        );
        assert_eq!(Txn::decode(&v2).unwrap().semantics, APPLY_SEMANTICS);
        let mut v3 = v2.clone();
        v3[..4].copy_from_slice(&3i32.to_be_bytes());
        assert!(Txn::decode(&v3).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Txn::decode(&[]).is_err());
        assert!(Txn::decode(&[0, 0, 0, 1, 2, 3]).is_err());
    }
}
