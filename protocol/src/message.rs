//! Typed requests and responses: a RequestHeader's opcode selects the body record.

use bytes::BytesMut;

use crate::consts::{ErrorCode, OpCode};
use crate::jute::{DecodeError, Reader, Record};
use crate::records::*;

/// One operation inside a multi (14) or multiRead (22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiOp {
    /// create (1), create2 (15) or createContainer (19); `op` says which result shape to return.
    Create {
        /// Which of the three create opcodes it was.
        op: OpCode,
        /// The create itself.
        req: CreateRequest,
    },
    /// A create ttl inside a multi or multiRead.
    CreateTtl(CreateTtlRequest),
    /// A delete inside a multi or multiRead.
    Delete(DeleteRequest),
    /// A set data inside a multi or multiRead.
    SetData(SetDataRequest),
    /// A check inside a multi or multiRead.
    Check(CheckVersionRequest),
    /// A get children inside a multi or multiRead.
    GetChildren(GetChildrenRequest),
    /// A get data inside a multi or multiRead.
    GetData(GetDataRequest),
}

impl MultiOp {
    /// The opcode this operation has on the wire.
    pub fn op_code(&self) -> OpCode {
        match self {
            MultiOp::Create { op, .. } => *op,
            MultiOp::CreateTtl(_) => OpCode::CreateTtl,
            MultiOp::Delete(_) => OpCode::Delete,
            MultiOp::SetData(_) => OpCode::SetData,
            MultiOp::Check(_) => OpCode::Check,
            MultiOp::GetChildren(_) => OpCode::GetChildren,
            MultiOp::GetData(_) => OpCode::GetData,
        }
    }

    /// The path the operation acts on.
    pub fn path(&self) -> &str {
        match self {
            MultiOp::Create { req, .. } => &req.path,
            MultiOp::CreateTtl(req) => &req.path,
            MultiOp::Delete(req) => &req.path,
            MultiOp::SetData(req) => &req.path,
            MultiOp::Check(req) => &req.path,
            MultiOp::GetChildren(req) => &req.path,
            MultiOp::GetData(req) => &req.path,
        }
    }

    fn write_body(&self, out: &mut BytesMut) {
        match self {
            MultiOp::Create { req, .. } => req.write(out),
            MultiOp::CreateTtl(req) => req.write(out),
            MultiOp::Delete(req) => req.write(out),
            MultiOp::SetData(req) => req.write(out),
            MultiOp::Check(req) => req.write(out),
            MultiOp::GetChildren(req) => req.write(out),
            MultiOp::GetData(req) => req.write(out),
        }
    }

    fn read_body(op_type: i32, input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let op = OpCode::from_wire(op_type).ok_or(DecodeError::UnknownOpCode(op_type))?;
        Ok(match op {
            OpCode::Create | OpCode::Create2 | OpCode::CreateContainer => MultiOp::Create {
                op,
                req: CreateRequest::read(input)?,
            },
            OpCode::CreateTtl => MultiOp::CreateTtl(CreateTtlRequest::read(input)?),
            OpCode::Delete => MultiOp::Delete(DeleteRequest::read(input)?),
            OpCode::SetData => MultiOp::SetData(SetDataRequest::read(input)?),
            OpCode::Check => MultiOp::Check(CheckVersionRequest::read(input)?),
            OpCode::GetChildren => MultiOp::GetChildren(GetChildrenRequest::read(input)?),
            OpCode::GetData => MultiOp::GetData(GetDataRequest::read(input)?),
            _ => return Err(DecodeError::UnknownOpCode(op_type)),
        })
    }
}

fn write_multi_ops(ops: &[MultiOp], out: &mut BytesMut) {
    for op in ops {
        MultiHeader {
            op_type: op.op_code().wire(),
            done: false,
            err: -1,
        }
        .write(out);
        op.write_body(out);
    }
    MULTI_END.write(out);
}

/// Terminates the list of operations or results of a multi.
const MULTI_END: MultiHeader = MultiHeader {
    op_type: -1,
    done: true,
    err: -1,
};

fn read_multi_ops(input: &mut Reader<'_>) -> Result<Vec<MultiOp>, DecodeError> {
    let mut ops = Vec::new();
    loop {
        let header = MultiHeader::read(input)?;
        if header.done {
            return Ok(ops);
        }
        ops.push(MultiOp::read_body(header.op_type, input)?);
    }
}

/// A request body, selected by the RequestHeader's opcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// create (1), create2 (15) or createContainer (19).
    Create {
        /// Which of the three create opcodes it was.
        op: OpCode,
        /// The create itself.
        req: CreateRequest,
    },
    /// The createTtl request.
    CreateTtl(CreateTtlRequest),
    /// The delete request.
    Delete(DeleteRequest),
    /// deleteContainer (20): the server's own request; clients get it answered as ZooKeeper does.
    DeleteContainer(SyncRequest),
    /// The exists request.
    Exists(ExistsRequest),
    /// The getData request.
    GetData(GetDataRequest),
    /// The setData request.
    SetData(SetDataRequest),
    /// The getAcl request.
    GetAcl(GetAclRequest),
    /// The setAcl request.
    SetAcl(SetAclRequest),
    /// The getChildren request.
    GetChildren(GetChildrenRequest),
    /// The getChildren2 request.
    GetChildren2(GetChildren2Request),
    /// The sync request.
    Sync(SyncRequest),
    /// A heartbeat; keeps the session alive.
    Ping,
    /// The check request.
    Check(CheckVersionRequest),
    /// multi: writes applied atomically.
    Multi(Vec<MultiOp>),
    /// multiRead: reads answered together.
    MultiRead(Vec<MultiOp>),
    /// The reconfig request.
    Reconfig(ReconfigRequest),
    /// The checkWatches request.
    CheckWatches(CheckWatchesRequest),
    /// The removeWatches request.
    RemoveWatches(RemoveWatchesRequest),
    /// addAuth: adds credentials to the connection.
    Auth(AuthPacket),
    /// The setWatches request.
    SetWatches(SetWatches),
    /// The setWatches2 request.
    SetWatches2(SetWatches2),
    /// A SASL token exchange.
    Sasl(GetSaslRequest),
    /// The getEphemerals request.
    GetEphemerals(GetEphemeralsRequest),
    /// The getAllChildrenNumber request.
    GetAllChildrenNumber(GetAllChildrenNumberRequest),
    /// The addWatch request.
    AddWatch(AddWatchRequest),
    /// whoAmI: the identities the session has authenticated.
    WhoAmI,
    /// closeSession: ends the session and deletes its ephemerals.
    CloseSession,
}

impl Request {
    /// The opcode this operation has on the wire.
    pub fn op_code(&self) -> OpCode {
        match self {
            Request::Create { op, .. } => *op,
            Request::CreateTtl(_) => OpCode::CreateTtl,
            Request::Delete(_) => OpCode::Delete,
            Request::DeleteContainer(_) => OpCode::DeleteContainer,
            Request::Exists(_) => OpCode::Exists,
            Request::GetData(_) => OpCode::GetData,
            Request::SetData(_) => OpCode::SetData,
            Request::GetAcl(_) => OpCode::GetAcl,
            Request::SetAcl(_) => OpCode::SetAcl,
            Request::GetChildren(_) => OpCode::GetChildren,
            Request::GetChildren2(_) => OpCode::GetChildren2,
            Request::Sync(_) => OpCode::Sync,
            Request::Ping => OpCode::Ping,
            Request::Check(_) => OpCode::Check,
            Request::Multi(_) => OpCode::Multi,
            Request::MultiRead(_) => OpCode::MultiRead,
            Request::Reconfig(_) => OpCode::Reconfig,
            Request::CheckWatches(_) => OpCode::CheckWatches,
            Request::RemoveWatches(_) => OpCode::RemoveWatches,
            Request::Auth(_) => OpCode::Auth,
            Request::SetWatches(_) => OpCode::SetWatches,
            Request::SetWatches2(_) => OpCode::SetWatches2,
            Request::Sasl(_) => OpCode::Sasl,
            Request::GetEphemerals(_) => OpCode::GetEphemerals,
            Request::GetAllChildrenNumber(_) => OpCode::GetAllChildrenNumber,
            Request::AddWatch(_) => OpCode::AddWatch,
            Request::WhoAmI => OpCode::WhoAmI,
            Request::CloseSession => OpCode::CloseSession,
        }
    }

    /// Decodes the body that follows a RequestHeader of type `op_type`.
    pub fn read_body(op_type: i32, input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let op = OpCode::from_wire(op_type).ok_or(DecodeError::UnknownOpCode(op_type))?;
        Ok(match op {
            OpCode::Create | OpCode::Create2 | OpCode::CreateContainer => Request::Create {
                op,
                req: CreateRequest::read(input)?,
            },
            OpCode::CreateTtl => Request::CreateTtl(CreateTtlRequest::read(input)?),
            OpCode::Delete => Request::Delete(DeleteRequest::read(input)?),
            OpCode::DeleteContainer => Request::DeleteContainer(SyncRequest::read(input)?),
            OpCode::Exists => Request::Exists(ExistsRequest::read(input)?),
            OpCode::GetData => Request::GetData(GetDataRequest::read(input)?),
            OpCode::SetData => Request::SetData(SetDataRequest::read(input)?),
            OpCode::GetAcl => Request::GetAcl(GetAclRequest::read(input)?),
            OpCode::SetAcl => Request::SetAcl(SetAclRequest::read(input)?),
            OpCode::GetChildren => Request::GetChildren(GetChildrenRequest::read(input)?),
            OpCode::GetChildren2 => Request::GetChildren2(GetChildren2Request::read(input)?),
            OpCode::Sync => Request::Sync(SyncRequest::read(input)?),
            OpCode::Ping => Request::Ping,
            OpCode::Check => Request::Check(CheckVersionRequest::read(input)?),
            OpCode::Multi => Request::Multi(read_multi_ops(input)?),
            OpCode::MultiRead => Request::MultiRead(read_multi_ops(input)?),
            OpCode::Reconfig => Request::Reconfig(ReconfigRequest::read(input)?),
            OpCode::CheckWatches => Request::CheckWatches(CheckWatchesRequest::read(input)?),
            OpCode::RemoveWatches => Request::RemoveWatches(RemoveWatchesRequest::read(input)?),
            OpCode::Auth => Request::Auth(AuthPacket::read(input)?),
            OpCode::SetWatches => Request::SetWatches(SetWatches::read(input)?),
            OpCode::SetWatches2 => Request::SetWatches2(SetWatches2::read(input)?),
            OpCode::Sasl => Request::Sasl(GetSaslRequest::read(input)?),
            OpCode::GetEphemerals => Request::GetEphemerals(GetEphemeralsRequest::read(input)?),
            OpCode::GetAllChildrenNumber => {
                Request::GetAllChildrenNumber(GetAllChildrenNumberRequest::read(input)?)
            }
            OpCode::AddWatch => Request::AddWatch(AddWatchRequest::read(input)?),
            OpCode::WhoAmI => Request::WhoAmI,
            OpCode::CloseSession => Request::CloseSession,
            OpCode::Notification | OpCode::CreateSession | OpCode::Error => {
                return Err(DecodeError::UnknownOpCode(op_type))
            }
        })
    }

    /// Appends the body (no RequestHeader) in jute encoding.
    pub fn write_body(&self, out: &mut BytesMut) {
        match self {
            Request::Create { req, .. } => req.write(out),
            Request::CreateTtl(req) => req.write(out),
            Request::Delete(req) => req.write(out),
            Request::DeleteContainer(req) => req.write(out),
            Request::Exists(req) => req.write(out),
            Request::GetData(req) => req.write(out),
            Request::SetData(req) => req.write(out),
            Request::GetAcl(req) => req.write(out),
            Request::SetAcl(req) => req.write(out),
            Request::GetChildren(req) => req.write(out),
            Request::GetChildren2(req) => req.write(out),
            Request::Sync(req) => req.write(out),
            Request::Check(req) => req.write(out),
            Request::Multi(ops) | Request::MultiRead(ops) => write_multi_ops(ops, out),
            Request::Reconfig(req) => req.write(out),
            Request::CheckWatches(req) => req.write(out),
            Request::RemoveWatches(req) => req.write(out),
            Request::Auth(req) => req.write(out),
            Request::SetWatches(req) => req.write(out),
            Request::SetWatches2(req) => req.write(out),
            Request::Sasl(req) => req.write(out),
            Request::GetEphemerals(req) => req.write(out),
            Request::GetAllChildrenNumber(req) => req.write(out),
            Request::AddWatch(req) => req.write(out),
            Request::Ping | Request::WhoAmI | Request::CloseSession => {}
        }
    }

    /// Decodes a whole request packet: RequestHeader, then the body.
    pub fn decode_packet(packet: &[u8]) -> Result<(RequestHeader, Request), DecodeError> {
        let mut input = Reader::new(packet);
        let header = RequestHeader::read(&mut input)?;
        let request = Request::read_body(header.op_type, &mut input)?;
        Ok((header, request))
    }

    /// Encodes a whole request packet (without the frame length).
    pub fn encode_packet(&self, xid: i32, out: &mut BytesMut) {
        RequestHeader {
            xid,
            op_type: self.op_code().wire(),
        }
        .write(out);
        self.write_body(out);
    }

    /// The path a request names, for logs and ACL checks.
    pub fn path(&self) -> Option<&str> {
        Some(match self {
            Request::Create { req, .. } => &req.path,
            Request::CreateTtl(req) => &req.path,
            Request::Delete(req) => &req.path,
            Request::DeleteContainer(req) => &req.path,
            Request::Exists(req) => &req.path,
            Request::GetData(req) => &req.path,
            Request::SetData(req) => &req.path,
            Request::GetAcl(req) => &req.path,
            Request::SetAcl(req) => &req.path,
            Request::GetChildren(req) => &req.path,
            Request::GetChildren2(req) => &req.path,
            Request::Sync(req) => &req.path,
            Request::Check(req) => &req.path,
            Request::CheckWatches(req) => &req.path,
            Request::RemoveWatches(req) => &req.path,
            Request::GetEphemerals(req) => &req.prefix_path,
            Request::GetAllChildrenNumber(req) => &req.path,
            Request::AddWatch(req) => &req.path,
            _ => return None,
        })
    }
}

/// One result inside a multi or multiRead reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiResult {
    /// Result of create (1): the created path.
    Create(String),
    /// Result of create2, createContainer and createTTL inside a multi: path and Stat.
    Create2(String, Stat),
    /// delete succeeded.
    Delete,
    /// setData succeeded: the new Stat.
    SetData(Stat),
    /// check succeeded.
    Check,
    /// getChildren inside multiRead: child names.
    GetChildren(Vec<String>),
    /// Data (`None` when the znode holds null) and Stat of a getData inside multiRead.
    GetData(Option<Vec<u8>>, Stat),
    /// The operation failed with this code (the whole multi did, for writes).
    Error(ErrorCode),
}

impl MultiResult {
    fn op_type(&self) -> i32 {
        match self {
            MultiResult::Create(_) => OpCode::Create.wire(),
            MultiResult::Create2(..) => OpCode::Create2.wire(),
            MultiResult::Delete => OpCode::Delete.wire(),
            MultiResult::SetData(_) => OpCode::SetData.wire(),
            MultiResult::Check => OpCode::Check.wire(),
            MultiResult::GetChildren(_) => OpCode::GetChildren.wire(),
            MultiResult::GetData(..) => OpCode::GetData.wire(),
            MultiResult::Error(_) => OpCode::Error.wire(),
        }
    }

    fn write(&self, out: &mut BytesMut) {
        let err = match self {
            MultiResult::Error(code) => code.wire(),
            _ => 0,
        };
        MultiHeader {
            op_type: self.op_type(),
            done: false,
            err,
        }
        .write(out);
        match self {
            MultiResult::Create(path) => path.write(out),
            MultiResult::Create2(path, stat) => {
                path.write(out);
                stat.write(out);
            }
            MultiResult::Delete | MultiResult::Check => {}
            MultiResult::SetData(stat) => stat.write(out),
            MultiResult::GetChildren(children) => children.write(out),
            MultiResult::GetData(data, stat) => {
                data.write(out);
                stat.write(out);
            }
            MultiResult::Error(code) => code.wire().write(out),
        }
    }

    fn read(header: &MultiHeader, input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let op =
            OpCode::from_wire(header.op_type).ok_or(DecodeError::UnknownOpCode(header.op_type))?;
        Ok(match op {
            OpCode::Create => MultiResult::Create(String::read(input)?),
            OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => {
                MultiResult::Create2(String::read(input)?, Stat::read(input)?)
            }
            OpCode::Delete => MultiResult::Delete,
            OpCode::SetData => MultiResult::SetData(Stat::read(input)?),
            OpCode::Check => MultiResult::Check,
            OpCode::GetChildren => MultiResult::GetChildren(Vec::<String>::read(input)?),
            OpCode::GetData => {
                MultiResult::GetData(Option::<Vec<u8>>::read(input)?, Stat::read(input)?)
            }
            OpCode::Error => {
                let code = i32::read(input)?;
                MultiResult::Error(ErrorCode::from_wire(code).ok_or(DecodeError::InvalidValue {
                    field: "multi error",
                    value: i64::from(code),
                })?)
            }
            _ => return Err(DecodeError::UnknownOpCode(header.op_type)),
        })
    }
}

/// A reply body; its shape depends on the request's opcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// delete, ping, check, auth, setWatches, checkWatches, removeWatches, closeSession:
    /// a ReplyHeader alone.
    Empty,
    /// A bare ErrorResponse body. ZooKeeper answers addWatch with `ErrorResponse{err: 0}`
    /// (FinalRequestProcessor), and the Java client deserializes it: a ReplyHeader alone makes
    /// it hit EOF and drop the connection. See [`Response::ADD_WATCH_OK`].
    Error(ErrorResponse),
    /// The create reply body.
    Create(CreateResponse),
    /// The create2 reply body.
    Create2(Create2Response),
    /// exists, setData, setACL: a Stat alone.
    Stat(Stat),
    /// The getData reply body.
    GetData(GetDataResponse),
    /// The getAcl reply body.
    GetAcl(GetAclResponse),
    /// The getChildren reply body.
    GetChildren(GetChildrenResponse),
    /// The getChildren2 reply body.
    GetChildren2(GetChildren2Response),
    /// The sync reply body.
    Sync(SyncResponse),
    /// The multi reply body.
    Multi(Vec<MultiResult>),
    /// The getEphemerals reply body.
    GetEphemerals(GetEphemeralsResponse),
    /// The getAllChildrenNumber reply body.
    GetAllChildrenNumber(GetAllChildrenNumberResponse),
    /// The whoAmI reply body.
    WhoAmI(WhoAmIResponse),
    /// The sasl reply body.
    Sasl(SetSaslResponse),
}

impl Response {
    /// The body of a successful addWatch reply: `ErrorResponse{err: 0}`.
    pub const ADD_WATCH_OK: Response = Response::Error(ErrorResponse { err: 0 });

    /// Appends the reply body in jute encoding.
    pub fn write(&self, out: &mut BytesMut) {
        match self {
            Response::Empty => {}
            Response::Error(r) => r.write(out),
            Response::Create(r) => r.write(out),
            Response::Create2(r) => r.write(out),
            Response::Stat(r) => r.write(out),
            Response::GetData(r) => r.write(out),
            Response::GetAcl(r) => r.write(out),
            Response::GetChildren(r) => r.write(out),
            Response::GetChildren2(r) => r.write(out),
            Response::Sync(r) => r.write(out),
            Response::Multi(results) => {
                for result in results {
                    result.write(out);
                }
                MULTI_END.write(out);
            }
            Response::GetEphemerals(r) => r.write(out),
            Response::GetAllChildrenNumber(r) => r.write(out),
            Response::WhoAmI(r) => r.write(out),
            Response::Sasl(r) => r.write(out),
        }
    }

    /// Decodes the body of a successful reply to a request of opcode `op`.
    pub fn read(op: OpCode, input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match op {
            OpCode::Create => Response::Create(CreateResponse::read(input)?),
            OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => {
                Response::Create2(Create2Response::read(input)?)
            }
            OpCode::Exists | OpCode::SetData | OpCode::SetAcl => Response::Stat(Stat::read(input)?),
            OpCode::GetData | OpCode::Reconfig => Response::GetData(GetDataResponse::read(input)?),
            OpCode::GetAcl => Response::GetAcl(GetAclResponse::read(input)?),
            OpCode::GetChildren => Response::GetChildren(GetChildrenResponse::read(input)?),
            OpCode::GetChildren2 => Response::GetChildren2(GetChildren2Response::read(input)?),
            OpCode::Sync => Response::Sync(SyncResponse::read(input)?),
            OpCode::Multi | OpCode::MultiRead => {
                let mut results = Vec::new();
                loop {
                    let header = MultiHeader::read(input)?;
                    if header.done {
                        break;
                    }
                    results.push(MultiResult::read(&header, input)?);
                }
                Response::Multi(results)
            }
            OpCode::GetEphemerals => Response::GetEphemerals(GetEphemeralsResponse::read(input)?),
            OpCode::GetAllChildrenNumber => {
                Response::GetAllChildrenNumber(GetAllChildrenNumberResponse::read(input)?)
            }
            OpCode::WhoAmI => Response::WhoAmI(WhoAmIResponse::read(input)?),
            OpCode::Sasl => Response::Sasl(SetSaslResponse::read(input)?),
            // Tolerates a server that sends a ReplyHeader alone.
            OpCode::AddWatch if input.is_empty() => Response::Empty,
            OpCode::AddWatch => Response::Error(ErrorResponse::read(input)?),
            _ => Response::Empty,
        })
    }
}

/// Encodes a reply packet (without the frame length): header, then the body when `err` is 0.
pub fn encode_reply(header: &ReplyHeader, body: &Response, out: &mut BytesMut) {
    header.write(out);
    if header.err == 0 {
        body.write(out);
    }
}
