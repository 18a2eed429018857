//! A minimal, blocking ZooKeeper wire-protocol client built on `std::net::TcpStream`.
//!
//! The `zookeeper-client` crate validates paths/ACLs/TTLs locally and hides per-op multi results,
//! duplicate notifications and connection handling; these tests need to see the server's exact
//! bytes, so they build requests by hand (jute encoding: big-endian ints, length-prefixed
//! strings/buffers/vectors, 4-byte frame length).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub mod op {
    pub const NOTIFICATION: i32 = 0;
    pub const CREATE: i32 = 1;
    pub const DELETE: i32 = 2;
    pub const EXISTS: i32 = 3;
    pub const GET_DATA: i32 = 4;
    pub const SET_DATA: i32 = 5;
    pub const GET_ACL: i32 = 6;
    pub const SET_ACL: i32 = 7;
    pub const GET_CHILDREN: i32 = 8;
    pub const SYNC: i32 = 9;
    pub const PING: i32 = 11;
    pub const GET_CHILDREN2: i32 = 12;
    pub const CHECK: i32 = 13;
    pub const MULTI: i32 = 14;
    pub const CREATE2: i32 = 15;
    pub const RECONFIG: i32 = 16;
    pub const CHECK_WATCHES: i32 = 17;
    pub const REMOVE_WATCHES: i32 = 18;
    pub const CREATE_CONTAINER: i32 = 19;
    pub const DELETE_CONTAINER: i32 = 20;
    pub const CREATE_TTL: i32 = 21;
    pub const MULTI_READ: i32 = 22;
    pub const AUTH: i32 = 100;
    pub const SET_WATCHES: i32 = 101;
    pub const GET_EPHEMERALS: i32 = 103;
    pub const GET_ALL_CHILDREN_NUMBER: i32 = 104;
    pub const SET_WATCHES2: i32 = 105;
    pub const ADD_WATCH: i32 = 106;
    pub const WHO_AM_I: i32 = 107;
    pub const CLOSE_SESSION: i32 = -11;
    pub const ERROR: i32 = -1;
}

pub mod err {
    pub const OK: i32 = 0;
    pub const RUNTIME_INCONSISTENCY: i32 = -2;
    pub const UNIMPLEMENTED: i32 = -6;
    pub const BAD_ARGUMENTS: i32 = -8;
    pub const NO_NODE: i32 = -101;
    pub const NO_AUTH: i32 = -102;
    pub const BAD_VERSION: i32 = -103;
    pub const NO_CHILDREN_FOR_EPHEMERALS: i32 = -108;
    pub const NODE_EXISTS: i32 = -110;
    pub const NOT_EMPTY: i32 = -111;
    pub const SESSION_EXPIRED: i32 = -112;
    pub const INVALID_ACL: i32 = -114;
    pub const AUTH_FAILED: i32 = -115;
    pub const NO_WATCHER: i32 = -121;
}

/// Event types in WatcherEvent.
pub mod ev {
    pub const NODE_CREATED: i32 = 1;
    pub const NODE_DELETED: i32 = 2;
    pub const NODE_DATA_CHANGED: i32 = 3;
    pub const NODE_CHILDREN_CHANGED: i32 = 4;
}

/// CreateMode flags.
pub mod mode {
    pub const PERSISTENT: i32 = 0;
    pub const EPHEMERAL: i32 = 1;
    pub const PERSISTENT_SEQUENTIAL: i32 = 2;
    pub const EPHEMERAL_SEQUENTIAL: i32 = 3;
    pub const CONTAINER: i32 = 4;
    pub const PERSISTENT_WITH_TTL: i32 = 5;
    pub const PERSISTENT_SEQUENTIAL_WITH_TTL: i32 = 6;
}

/// WatcherType for checkWatches/removeWatches.
pub mod wtype {
    pub const CHILDREN: i32 = 1;
    pub const DATA: i32 = 2;
    pub const ANY: i32 = 3;
}

pub const PERM_ALL: i32 = 31;

#[derive(Default, Clone)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn new() -> Enc {
        Enc(Vec::new())
    }
    pub fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bool(mut self, v: bool) -> Self {
        self.0.push(v as u8);
        self
    }
    pub fn buf(mut self, v: &[u8]) -> Self {
        self = self.i32(v.len() as i32);
        self.0.extend_from_slice(v);
        self
    }
    pub fn null_buf(self) -> Self {
        self.i32(-1)
    }
    pub fn str(self, v: &str) -> Self {
        self.buf(v.as_bytes())
    }
    pub fn strs(mut self, v: &[&str]) -> Self {
        self = self.i32(v.len() as i32);
        for s in v {
            self = self.str(s);
        }
        self
    }
    /// vector<ACL>: (perms, scheme, id)
    pub fn acls(mut self, v: &[(i32, &str, &str)]) -> Self {
        self = self.i32(v.len() as i32);
        for (perms, scheme, id) in v {
            self = self.i32(*perms).str(scheme).str(id);
        }
        self
    }
    pub fn world(self) -> Self {
        self.acls(&[(PERM_ALL, "world", "anyone")])
    }
    pub fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    pub fn bytes(self) -> Vec<u8> {
        self.0
    }
}

pub fn create_req(path: &str, data: &[u8], flags: i32) -> Vec<u8> {
    Enc::new().str(path).buf(data).world().i32(flags).bytes()
}

pub fn create_ttl_req(path: &str, data: &[u8], flags: i32, ttl: i64) -> Vec<u8> {
    Enc::new()
        .str(path)
        .buf(data)
        .world()
        .i32(flags)
        .i64(ttl)
        .bytes()
}

pub fn path_watch_req(path: &str, watch: bool) -> Vec<u8> {
    Enc::new().str(path).bool(watch).bytes()
}

pub fn set_data_req(path: &str, data: &[u8], version: i32) -> Vec<u8> {
    Enc::new().str(path).buf(data).i32(version).bytes()
}

pub fn delete_req(path: &str, version: i32) -> Vec<u8> {
    Enc::new().str(path).i32(version).bytes()
}

pub struct Dec<'a> {
    pub b: &'a [u8],
}

impl<'a> Dec<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Dec { b }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(
            self.b.len() >= n,
            "short record: need {n} bytes, have {}",
            self.b.len()
        );
        let (h, t) = self.b.split_at(n);
        self.b = t;
        h
    }
    pub fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    pub fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    pub fn bool(&mut self) -> bool {
        self.take(1)[0] != 0
    }
    pub fn buf(&mut self) -> Option<Vec<u8>> {
        let n = self.i32();
        if n < 0 {
            None
        } else {
            Some(self.take(n as usize).to_vec())
        }
    }
    pub fn str(&mut self) -> String {
        String::from_utf8(self.buf().unwrap_or_default()).expect("utf8 string")
    }
    pub fn strs(&mut self) -> Vec<String> {
        let n = self.i32();
        (0..n.max(0)).map(|_| self.str()).collect()
    }
    pub fn stat(&mut self) -> RawStat {
        RawStat {
            czxid: self.i64(),
            mzxid: self.i64(),
            ctime: self.i64(),
            mtime: self.i64(),
            version: self.i32(),
            cversion: self.i32(),
            aversion: self.i32(),
            ephemeral_owner: self.i64(),
            data_length: self.i32(),
            num_children: self.i32(),
            pzxid: self.i64(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawStat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub event_type: i32,
    pub state: i32,
    pub path: String,
}

#[derive(Clone, Debug)]
pub struct ConnectResponse {
    pub protocol_version: i32,
    pub timeout: i32,
    pub session_id: i64,
    pub passwd: Vec<u8>,
    pub read_only: Option<bool>,
}

#[derive(Clone, Debug)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout: i32,
    pub session_id: i64,
    pub passwd: Vec<u8>,
    pub read_only: bool,
}

impl ConnectRequest {
    pub fn new(timeout: i32) -> Self {
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout,
            session_id: 0,
            passwd: vec![0; 16],
            read_only: false,
        }
    }
    pub fn encode(&self) -> Vec<u8> {
        Enc::new()
            .i32(self.protocol_version)
            .i64(self.last_zxid_seen)
            .i32(self.timeout)
            .i64(self.session_id)
            .buf(&self.passwd)
            .bool(self.read_only)
            .bytes()
    }
}

pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Outcome of reading from a connection the server may close.
#[derive(Debug)]
pub enum ReadOutcome {
    Frame(Vec<u8>),
    Closed,
    TimedOut,
}

pub struct RawConn {
    pub stream: TcpStream,
    pub session_id: i64,
    pub passwd: Vec<u8>,
    pub timeout: i32,
    pub last_zxid: i64,
    next_xid: i32,
    pub events: VecDeque<Event>,
    rbuf: Vec<u8>,
}

impl RawConn {
    pub fn tcp(addr: &str) -> TcpStream {
        let a = addr.parse().unwrap();
        let s = TcpStream::connect_timeout(&a, Duration::from_secs(5)).expect("tcp connect");
        s.set_nodelay(true).ok();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// New session with the requested timeout.
    pub fn connect(addr: &str, timeout_ms: i32) -> RawConn {
        Self::connect_req(addr, &ConnectRequest::new(timeout_ms))
            .expect("session handshake refused")
            .0
    }

    /// Performs the handshake; `Err(outcome)` if the server closed (or did not answer) instead.
    pub fn connect_req(
        addr: &str,
        req: &ConnectRequest,
    ) -> Result<(RawConn, ConnectResponse), ReadOutcome> {
        let stream = Self::tcp(addr);
        let mut c = RawConn {
            stream,
            session_id: 0,
            passwd: vec![],
            timeout: 0,
            last_zxid: req.last_zxid_seen,
            next_xid: 1,
            events: VecDeque::new(),
            rbuf: Vec::new(),
        };
        c.write_raw(&frame(&req.encode()));
        match c.read_frame(Duration::from_secs(10)) {
            ReadOutcome::Frame(f) => {
                let mut d = Dec::new(&f);
                let resp = ConnectResponse {
                    protocol_version: d.i32(),
                    timeout: d.i32(),
                    session_id: d.i64(),
                    passwd: d.buf().unwrap_or_default(),
                    read_only: if d.is_empty() { None } else { Some(d.bool()) },
                };
                c.session_id = resp.session_id;
                c.passwd = resp.passwd.clone();
                c.timeout = resp.timeout;
                Ok((c, resp))
            }
            other => Err(other),
        }
    }

    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// Writes, returning false if the server already closed/reset the connection.
    pub fn try_write_raw(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Reads one frame (length-prefixed), waiting at most `wait`.
    pub fn read_frame(&mut self, wait: Duration) -> ReadOutcome {
        let deadline = Instant::now() + wait;
        loop {
            if self.rbuf.len() >= 4 {
                let n = i32::from_be_bytes(self.rbuf[..4].try_into().unwrap());
                assert!(
                    (0..64 << 20).contains(&n),
                    "bad frame length from server: {n}"
                );
                let n = n as usize;
                if self.rbuf.len() >= 4 + n {
                    let f = self.rbuf[4..4 + n].to_vec();
                    self.rbuf.drain(..4 + n);
                    return ReadOutcome::Frame(f);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return ReadOutcome::TimedOut;
            }
            self.stream
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .unwrap();
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => self.rbuf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    return ReadOutcome::TimedOut
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // ECONNRESET etc.: the server closed the connection.
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }

    /// Waits until the server closes the connection; ignores frames received meanwhile.
    /// Returns true if closed within `wait`.
    pub fn wait_closed(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            match self.read_frame(deadline - now) {
                ReadOutcome::Closed => return true,
                ReadOutcome::TimedOut => return false,
                ReadOutcome::Frame(_) => {}
            }
        }
    }

    pub fn next_xid(&mut self) -> i32 {
        let x = self.next_xid;
        self.next_xid += 1;
        x
    }

    /// Sends a request with an explicit xid.
    pub fn send_xid(&mut self, xid: i32, opcode: i32, body: &[u8]) {
        let req = Enc::new().i32(xid).i32(opcode).raw(body).bytes();
        self.write_raw(&frame(&req));
    }

    pub fn send(&mut self, opcode: i32, body: &[u8]) -> i32 {
        let xid = self.next_xid();
        self.send_xid(xid, opcode, body);
        xid
    }

    fn parse_reply(f: &[u8]) -> Reply {
        let mut d = Dec::new(f);
        let xid = d.i32();
        let zxid = d.i64();
        let err = d.i32();
        Reply {
            xid,
            zxid,
            err,
            body: d.b.to_vec(),
        }
    }

    fn parse_event(body: &[u8]) -> Event {
        let mut d = Dec::new(body);
        Event {
            event_type: d.i32(),
            state: d.i32(),
            path: d.str(),
        }
    }

    /// Reads the next reply or notification (notifications are returned with xid -1).
    pub fn next_reply(&mut self, wait: Duration) -> Option<Reply> {
        match self.read_frame(wait) {
            ReadOutcome::Frame(f) => {
                let r = Self::parse_reply(&f);
                if r.xid != -1 && r.zxid > self.last_zxid {
                    self.last_zxid = r.zxid;
                }
                Some(r)
            }
            ReadOutcome::Closed => panic!(
                "server closed the connection (session {:#x})",
                self.session_id
            ),
            ReadOutcome::TimedOut => None,
        }
    }

    /// Waits for the reply to `xid`; notifications received meanwhile are queued in `events`.
    pub fn wait_reply(&mut self, xid: i32) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self
                .next_reply(left)
                .unwrap_or_else(|| panic!("no reply to xid {xid} within 10s"));
            if r.xid == -1 {
                self.events.push_back(Self::parse_event(&r.body));
                continue;
            }
            if r.xid == -2 {
                continue; // ping
            }
            assert_eq!(r.xid, xid, "replies must come in request order");
            return r;
        }
    }

    pub fn call(&mut self, opcode: i32, body: &[u8]) -> Reply {
        let xid = self.send(opcode, body);
        self.wait_reply(xid)
    }

    /// Next notification (queued or read within `wait`); replies to pings are skipped,
    /// any other reply is a test failure.
    pub fn next_event(&mut self, wait: Duration) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let r = self.next_reply(left)?;
            match r.xid {
                -1 => return Some(Self::parse_event(&r.body)),
                -2 => continue,
                x => panic!("unexpected reply xid {x} while waiting for a notification: {r:?}"),
            }
        }
    }

    /// Asserts that exactly the given events arrive (in order) and nothing else within `quiet`.
    pub fn expect_events(&mut self, expected: &[(i32, &str)], quiet: Duration) {
        for (t, p) in expected {
            let e = self
                .next_event(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("no event ({t}, {p}) within 10s"));
            assert_eq!(
                (e.event_type, e.path.as_str()),
                (*t, *p),
                "unexpected event {e:?}"
            );
            assert_eq!(e.state, 3, "event state must be SyncConnected");
        }
        if let Some(e) = self.next_event(quiet) {
            panic!("unexpected extra event {e:?} (expected only {expected:?})");
        }
    }

    pub fn ping(&mut self) {
        self.send_xid(-2, op::PING, &[]);
        let r = self
            .next_reply(Duration::from_secs(10))
            .expect("ping reply");
        assert_eq!(r.xid, -2, "expected ping reply, got {r:?}");
    }

    // ---- convenience wrappers (return the error code and the decoded body) ----

    pub fn create(&mut self, path: &str, data: &[u8], flags: i32) -> (i32, String) {
        let r = self.call(op::CREATE, &create_req(path, data, flags));
        let p = if r.err == 0 {
            Dec::new(&r.body).str()
        } else {
            String::new()
        };
        (r.err, p)
    }

    pub fn create_ok(&mut self, path: &str, data: &[u8]) -> String {
        let (e, p) = self.create(path, data, mode::PERSISTENT);
        assert_eq!(e, 0, "create {path}");
        p
    }

    pub fn set_data(&mut self, path: &str, data: &[u8]) -> i32 {
        self.call(op::SET_DATA, &set_data_req(path, data, -1)).err
    }

    pub fn delete(&mut self, path: &str) -> i32 {
        self.call(op::DELETE, &delete_req(path, -1)).err
    }

    pub fn exists(&mut self, path: &str, watch: bool) -> (i32, Option<RawStat>) {
        let r = self.call(op::EXISTS, &path_watch_req(path, watch));
        let s = if r.err == 0 {
            Some(Dec::new(&r.body).stat())
        } else {
            None
        };
        (r.err, s)
    }

    pub fn get_data(&mut self, path: &str, watch: bool) -> (i32, Vec<u8>, Option<RawStat>) {
        let r = self.call(op::GET_DATA, &path_watch_req(path, watch));
        if r.err == 0 {
            let mut d = Dec::new(&r.body);
            let data = d.buf().unwrap_or_default();
            (0, data, Some(d.stat()))
        } else {
            (r.err, vec![], None)
        }
    }

    pub fn get_children(&mut self, path: &str, watch: bool) -> (i32, Vec<String>) {
        let r = self.call(op::GET_CHILDREN, &path_watch_req(path, watch));
        let c = if r.err == 0 {
            Dec::new(&r.body).strs()
        } else {
            vec![]
        };
        (r.err, c)
    }

    pub fn close_session(&mut self) -> Reply {
        self.call(op::CLOSE_SESSION, &[])
    }
}

/// Encodes a multi request: each op is (opcode, body); terminated by {-1, true, -1}.
pub fn multi_req(ops: &[(i32, Vec<u8>)]) -> Vec<u8> {
    let mut e = Enc::new();
    for (opcode, body) in ops {
        e = e.i32(*opcode).bool(false).i32(-1).raw(body);
    }
    e.i32(-1).bool(true).i32(-1).bytes()
}

/// One decoded multi result: (type, err) plus the raw body of a successful op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiResult {
    Create(String),
    Create2(String, RawStat),
    Delete,
    SetData(RawStat),
    Check,
    GetData(Vec<u8>, RawStat),
    GetChildren(Vec<String>),
    Error(i32),
}

pub fn decode_multi(body: &[u8]) -> Vec<MultiResult> {
    let mut d = Dec::new(body);
    let mut out = vec![];
    loop {
        let t = d.i32();
        let done = d.bool();
        let e = d.i32();
        if done {
            assert_eq!(t, -1, "multi terminator type");
            break;
        }
        out.push(match t {
            op::CREATE => MultiResult::Create(d.str()),
            op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
                let p = d.str();
                MultiResult::Create2(p, d.stat())
            }
            op::DELETE => MultiResult::Delete,
            op::SET_DATA => MultiResult::SetData(d.stat()),
            op::CHECK => MultiResult::Check,
            op::GET_DATA => {
                let b = d.buf().unwrap_or_default();
                MultiResult::GetData(b, d.stat())
            }
            op::GET_CHILDREN => MultiResult::GetChildren(d.strs()),
            op::ERROR => {
                let code = d.i32();
                assert_eq!(code, e, "ErrorResult err must equal header err");
                MultiResult::Error(code)
            }
            other => panic!("unknown multi result type {other}"),
        });
    }
    assert!(d.is_empty(), "trailing bytes after multi response");
    out
}
