//! The Raft log entry: everything the state machine needs to apply a change deterministically.
//!
//! The proposer fills in the time, the session's auth ids and any random bytes, so every
//! replica that applies the entry computes the same result. Encoded with jute, reusing the
//! protocol crate's request records.

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
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// Where the reply goes.
    pub origin: Origin,
    /// The session on whose behalf the change is made (owner of ephemerals).
    pub session_id: i64,
    /// Wall-clock ms at proposal: ctime/mtime and TTL checks use this, not the applier's clock.
    pub time_ms: i64,
    /// The session's authenticated ids when it sent the request, for ACL checks at apply.
    pub auth: Vec<Id>,
    /// What the entry does.
    pub body: TxnBody,
}

const KIND_CREATE_SESSION: i32 = 1;
const KIND_CLOSE_SESSION: i32 = 2;
const KIND_REQUEST: i32 = 3;
/// Bumped when the encoding changes incompatibly.
const FORMAT_VERSION: i32 = 1;

impl Txn {
    /// The entry's bytes in the Raft log.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::with_capacity(128);
        out.put_i32(FORMAT_VERSION);
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
        }
        out.to_vec()
    }

    /// Reads an entry written by `encode`.
    pub fn decode(bytes: &[u8]) -> Result<Txn, DecodeError> {
        let mut input = Reader::new(bytes);
        let version = input.read_i32()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::InvalidValue {
                field: "txn format version",
                value: i64::from(version),
            });
        }
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
            other => {
                return Err(DecodeError::InvalidValue {
                    field: "txn kind",
                    value: i64::from(other),
                })
            }
        };
        input.finish()?;
        Ok(Txn {
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
                origin: Origin::default(),
                session_id: 9,
                time_ms: 5,
                auth: vec![],
                body: TxnBody::CloseSession { session_id: 9 },
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
    fn garbage_is_an_error() {
        assert!(Txn::decode(&[]).is_err());
        assert!(Txn::decode(&[0, 0, 0, 1, 2, 3]).is_err());
    }
}
