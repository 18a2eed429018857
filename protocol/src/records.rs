//! The client-protocol records of zookeeper.jute, field for field.

use bytes::{BufMut, BytesMut};

use crate::jute::{DecodeError, Reader, Record};
use crate::jute_record;

jute_record! {
    /// An identity: a scheme (world, auth, digest, ip, ...) and an id within it.
    Id { scheme: String, id: String }
}

jute_record! {
    /// One ACL entry: permission bits granted to an identity.
    Acl { perms: i32, id: Id }
}

jute_record! {
    /// A znode's metadata as clients see it.
    Stat {
        czxid: i64,
        mzxid: i64,
        ctime: i64,
        mtime: i64,
        version: i32,
        cversion: i32,
        aversion: i32,
        ephemeral_owner: i64,
        data_length: i32,
        num_children: i32,
        pzxid: i64,
    }
}

jute_record! {
    /// One authenticated identity of a session, as whoAmI reports it.
    ClientInfo { auth_scheme: String, user: String }
}

jute_record! {
    /// Re-arms a reconnecting client's watches; `relative_zxid` is the last zxid it saw.
    SetWatches {
        relative_zxid: i64,
        data_watches: Vec<String>,
        exist_watches: Vec<String>,
        child_watches: Vec<String>,
    }
}

jute_record! {
    /// SetWatches plus persistent and persistent-recursive watches (3.6+).
    SetWatches2 {
        relative_zxid: i64,
        data_watches: Vec<String>,
        exist_watches: Vec<String>,
        child_watches: Vec<String>,
        persistent_watches: Vec<String>,
        persistent_recursive_watches: Vec<String>,
    }
}

impl From<SetWatches> for SetWatches2 {
    /// ZooKeeper handles SetWatches (101) as SetWatches2 (105) without persistent watches
    /// (FinalRequestProcessor).
    fn from(w: SetWatches) -> Self {
        SetWatches2 {
            relative_zxid: w.relative_zxid,
            data_watches: w.data_watches,
            exist_watches: w.exist_watches,
            child_watches: w.child_watches,
            persistent_watches: Vec::new(),
            persistent_recursive_watches: Vec::new(),
        }
    }
}

jute_record! {
    /// Precedes every request after the handshake.
    RequestHeader { xid: i32, op_type: i32 }
}

jute_record! {
    /// Precedes every operation and result inside a multi.
    MultiHeader { op_type: i32, done: bool, err: i32 }
}

jute_record! {
    /// addAuth: `auth` is scheme-specific (for digest, `user:password`).
    AuthPacket { auth_type: i32, scheme: String, auth: Vec<u8> }
}

jute_record! {
    /// Precedes every reply and notification.
    ReplyHeader { xid: i32, zxid: i64, err: i32 }
}

jute_record! { GetDataRequest { path: String, watch: bool } }
jute_record! {
    /// `data` is `None` for a null buffer (length -1), which ZooKeeper keeps apart from empty.
    SetDataRequest { path: String, data: Option<Vec<u8>>, version: i32 }
}
jute_record! {
    /// The server lists are nullable: `None` (Java `null`) is not "" for `new_members`.
    ReconfigRequest {
        joining_servers: Option<String>,
        leaving_servers: Option<String>,
        new_members: Option<String>,
        cur_config_id: i64,
    }
}
jute_record! { SetDataResponse { stat: Stat } }
jute_record! { GetSaslRequest { token: Vec<u8> } }
jute_record! { SetSaslRequest { token: Vec<u8> } }
jute_record! {
    /// `token` is `None` (a -1 buffer) in ZooKeeper's reply to a failed SASL step.
    SetSaslResponse { token: Option<Vec<u8>> }
}
jute_record! {
    /// `data` is `None` for a null buffer (length -1): the znode then reads back as null.
    CreateRequest { path: String, data: Option<Vec<u8>>, acl: Vec<Acl>, flags: i32 }
}
jute_record! {
    /// `data` as in [`CreateRequest`].
    CreateTtlRequest { path: String, data: Option<Vec<u8>>, acl: Vec<Acl>, flags: i32, ttl: i64 }
}
jute_record! { DeleteRequest { path: String, version: i32 } }
jute_record! { GetChildrenRequest { path: String, watch: bool } }
jute_record! { GetAllChildrenNumberRequest { path: String } }
jute_record! { GetChildren2Request { path: String, watch: bool } }
jute_record! { CheckVersionRequest { path: String, version: i32 } }
jute_record! { SyncRequest { path: String } }
jute_record! { SyncResponse { path: String } }
jute_record! { GetAclRequest { path: String } }
jute_record! { SetAclRequest { path: String, acl: Vec<Acl>, version: i32 } }
jute_record! { SetAclResponse { stat: Stat } }
jute_record! { AddWatchRequest { path: String, mode: i32 } }
jute_record! {
    /// A watch notification, sent with xid -1.
    WatcherEvent { event_type: i32, state: i32, path: String }
}
jute_record! { ErrorResponse { err: i32 } }
jute_record! { CreateResponse { path: String } }
jute_record! { Create2Response { path: String, stat: Stat } }
jute_record! { ExistsRequest { path: String, watch: bool } }
jute_record! { ExistsResponse { stat: Stat } }
jute_record! {
    /// `data` is `None` for a znode holding null data (written as length -1).
    GetDataResponse { data: Option<Vec<u8>>, stat: Stat }
}
jute_record! { GetChildrenResponse { children: Vec<String> } }
jute_record! { GetAllChildrenNumberResponse { total_number: i32 } }
jute_record! { GetChildren2Response { children: Vec<String>, stat: Stat } }
jute_record! { GetAclResponse { acl: Vec<Acl>, stat: Stat } }
jute_record! { CheckWatchesRequest { path: String, watcher_type: i32 } }
jute_record! { RemoveWatchesRequest { path: String, watcher_type: i32 } }
jute_record! { GetEphemeralsRequest { prefix_path: String } }
jute_record! { GetEphemeralsResponse { ephemerals: Vec<String> } }
jute_record! { WhoAmIResponse { client_info: Vec<ClientInfo> } }

/// The first packet a client sends; it has no RequestHeader.
///
/// `read_only` is a trailing byte that clients since 3.4 send, but older ones do not:
/// `None` records that it was absent, so the response can mirror the request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectRequest {
    /// Always 0.
    pub protocol_version: i32,
    /// The newest zxid the client has seen; a server behind it must not serve the client.
    pub last_zxid_seen: i64,
    /// The session timeout the client asks for, in ms.
    pub time_out: i32,
    /// 0 for a new session, else the session to resume.
    pub session_id: i64,
    /// The session's password when resuming (16 zero bytes for a new one).
    pub passwd: Vec<u8>,
    /// Whether the client accepts a read-only server; `None` when the byte was absent.
    pub read_only: Option<bool>,
}

impl Record for ConnectRequest {
    const MIN_SIZE: usize = 4 + 8 + 4 + 8 + 4;

    fn write(&self, out: &mut BytesMut) {
        out.put_i32(self.protocol_version);
        out.put_i64(self.last_zxid_seen);
        out.put_i32(self.time_out);
        out.put_i64(self.session_id);
        self.passwd.write(out);
        if let Some(read_only) = self.read_only {
            read_only.write(out);
        }
    }

    fn read(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ConnectRequest {
            protocol_version: input.read_i32()?,
            last_zxid_seen: input.read_i64()?,
            time_out: input.read_i32()?,
            session_id: input.read_i64()?,
            passwd: input.read_buffer()?,
            read_only: if input.is_empty() {
                None
            } else {
                Some(input.read_bool()?)
            },
        })
    }
}

/// The server's answer to a ConnectRequest; `read_only` is written only if the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectResponse {
    /// Always 0.
    pub protocol_version: i32,
    /// The negotiated session timeout in ms (0 with session id 0: the session is gone).
    pub time_out: i32,
    /// The session's id.
    pub session_id: i64,
    /// The session's password, for resuming it elsewhere.
    pub passwd: Vec<u8>,
    /// Whether this server is read-only; written only if the request had the byte.
    pub read_only: Option<bool>,
}

impl Record for ConnectResponse {
    const MIN_SIZE: usize = 4 + 4 + 8 + 4;

    fn write(&self, out: &mut BytesMut) {
        out.put_i32(self.protocol_version);
        out.put_i32(self.time_out);
        out.put_i64(self.session_id);
        self.passwd.write(out);
        if let Some(read_only) = self.read_only {
            read_only.write(out);
        }
    }

    fn read(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ConnectResponse {
            protocol_version: input.read_i32()?,
            time_out: input.read_i32()?,
            session_id: input.read_i64()?,
            passwd: input.read_buffer()?,
            read_only: if input.is_empty() {
                None
            } else {
                Some(input.read_bool()?)
            },
        })
    }
}
