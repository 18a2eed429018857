//! The session task: the one owner of the socket. It connects (and reconnects, resuming the
//! session), pipelines requests matched to replies by xid, pings, re-arms watches, and
//! dispatches notifications.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use rand::Rng;
use rookery_protocol::codec::write_frame;
use rookery_protocol::{
    xids, AuthPacket, ConnectRequest, ConnectResponse, ErrorCode, EventType, Frame, FrameCodec,
    KeeperState, OpCode, Reader, Record, ReplyHeader, Request, Response, SetWatches, SetWatches2,
    WatcherEvent,
};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::error::{Error, Result};
use crate::types::SessionState;
use crate::watcher::{WatchRegistration, WatchRegistry};

/// Most bytes of paths in one SetWatches packet (the Java client's limit).
const SET_WATCHES_MAX_BYTES: usize = 128 * 1024;

/// How long `close` waits for the server to acknowledge closeSession.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the session task needs to know, fixed for its life.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    /// Servers in the (shuffled) order they are tried.
    pub hosts: Vec<(String, u16)>,
    /// Path prefix, to strip from notification paths.
    pub chroot: Option<String>,
    /// Requested session timeout; the server negotiates the real one.
    pub session_timeout: Duration,
    /// Whether a read-only server (one without quorum) is acceptable.
    pub read_only: bool,
    /// Largest frame accepted from the server (jute.maxbuffer).
    pub max_frame: usize,
}

/// What a client handle asks of the session task.
#[derive(Debug)]
pub(crate) enum Command {
    Request(PendingRequest),
    /// addAuth: remembered and replayed on every reconnect.
    Auth {
        /// Auth scheme, for example `digest`.
        scheme: String,
        /// Scheme-specific credentials, for example `user:password`.
        auth: Vec<u8>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Close the session and stop.
    Close(oneshot::Sender<()>),
}

/// Work to do when a request succeeds, besides answering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AfterReply {
    Nothing,
    /// removeWatches succeeded: drop the local watchers too (server path, WatcherType).
    RemoveWatches {
        path: String,
        watcher_type: i32,
    },
}

/// A request waiting to be sent or answered.
#[derive(Debug)]
pub(crate) struct PendingRequest {
    /// The request, paths already chrooted.
    pub request: Request,
    /// The watch it arms if it succeeds.
    pub watch: Option<WatchRegistration>,
    /// Local bookkeeping to do once it succeeds.
    pub after: AfterReply,
    /// Where the reply goes.
    pub reply: oneshot::Sender<Result<Response>>,
}

/// A request on the wire.
#[derive(Debug)]
struct InFlight {
    /// Selects how to decode the reply body.
    op: OpCode,
    /// The watch to arm if the reply is a success.
    watch: Option<WatchRegistration>,
    /// Local bookkeeping to do once it succeeds.
    after: AfterReply,
    /// Where the caller waits for the reply.
    reply: oneshot::Sender<Result<Response>>,
}

/// An addAuth to replay on each connection.
#[derive(Debug)]
struct AuthEntry {
    /// Auth scheme, for example `digest`.
    scheme: String,
    /// Scheme-specific credentials, for example `user:password`.
    auth: Vec<u8>,
    /// The caller waiting for the first answer, until it has one.
    waiter: Option<oneshot::Sender<Result<()>>>,
}

/// What the client handles can read about the session.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Current state; also lets handles wait for a state.
    pub state: watch::Sender<SessionState>,
    /// Every transition, for [`crate::StateEvents`].
    pub events: broadcast::Sender<SessionState>,
    /// Session id, password and negotiated timeout once established.
    pub session: Mutex<SessionInfo>,
}

/// The identity of an established session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    /// 0 until the first connection succeeds.
    pub session_id: i64,
    /// Proves ownership of the session when resuming it elsewhere.
    pub password: Vec<u8>,
    /// The timeout the server granted.
    pub timeout: Duration,
    /// The server currently connected to, "host:port".
    pub server: Option<String>,
}

impl Shared {
    pub fn new() -> Arc<Self> {
        let (state, _) = watch::channel(SessionState::Disconnected);
        let (events, _) = broadcast::channel(64);
        Arc::new(Shared {
            state,
            events,
            session: Mutex::new(SessionInfo::default()),
        })
    }

    fn set_state(&self, state: SessionState) {
        let changed = self.state.send_if_modified(|s| {
            if *s != state {
                *s = state;
                true
            } else {
                false
            }
        });
        if changed {
            tracing::debug!(?state, "session state");
            let _ = self.events.send(state);
        }
    }
}

/// Why a connection ended.
enum ConnEnd {
    /// Try another server; the session lives on.
    Lost(String),
    /// The session is over (state already set).
    Terminal,
}

/// A socket with a finished handshake.
struct Connection {
    /// Frames from the server.
    reader: FramedRead<OwnedReadHalf, FrameCodec>,
    /// Where encoded frames go.
    writer: OwnedWriteHalf,
    /// The server's handshake answer (session id, password, timeout).
    response: ConnectResponse,
    /// "host:port" of the server, for logs and SessionInfo.
    server: String,
}

pub(crate) struct SessionTask {
    /// Servers, chroot and timeouts.
    config: SessionConfig,
    /// State published to the client handles.
    shared: Arc<Shared>,
    /// Requests from the client handles; closed when the session ends.
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    /// Index into `config.hosts` of the next server to try.
    next_host: usize,
    /// 0 until the first handshake; then resumed on every reconnect.
    session_id: i64,
    /// Proves the session is ours when resuming it.
    password: Vec<u8>,
    /// Highest zxid seen in a reply: sent on reconnect so no server takes us back in time,
    /// and as SetWatches' relativeZxid.
    last_zxid: i64,
    /// Next xid for an ordinary request (positive, wraps).
    next_xid: i32,
    /// Requests sent on the current connection, by xid.
    in_flight: HashMap<i32, InFlight>,
    /// Requests waiting for a connection.
    queued: VecDeque<PendingRequest>,
    /// Credentials added so far, replayed on each connection.
    auths: Vec<AuthEntry>,
    /// Auth replies expected on this connection, in order (None: a replay nobody waits for).
    pending_auth: VecDeque<Option<oneshot::Sender<Result<()>>>>,
    /// SetWatches packets awaiting their reply, kept to resend as SetWatches (101) if the
    /// server does not know SetWatches2.
    pending_set_watches: VecDeque<SetWatches2>,
    /// False once a server refused SetWatches2.
    use_set_watches2: bool,
    /// Armed watches, re-sent with SetWatches on reconnect.
    watches: WatchRegistry,
    /// Frames encoded and not yet written.
    out: BytesMut,
    /// When the last frame was queued: pings go out after timeout/3 of silence.
    last_send: Instant,
}

impl SessionTask {
    pub fn new(
        config: SessionConfig,
        shared: Arc<Shared>,
        cmd_rx: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        SessionTask {
            config,
            shared,
            cmd_rx,
            next_host: 0,
            session_id: 0,
            password: vec![0; 16],
            last_zxid: 0,
            next_xid: 1,
            in_flight: HashMap::new(),
            queued: VecDeque::new(),
            auths: Vec::new(),
            pending_auth: VecDeque::new(),
            pending_set_watches: VecDeque::new(),
            use_set_watches2: true,
            watches: WatchRegistry::default(),
            out: BytesMut::new(),
            last_send: Instant::now(),
        }
    }

    pub async fn run(mut self) {
        loop {
            let Some(conn) = self.connect().await else {
                return;
            };
            match self.serve(conn).await {
                ConnEnd::Terminal => return,
                ConnEnd::Lost(why) => {
                    tracing::info!(session = format_args!("{:#x}", self.session_id), %why, "connection lost");
                    self.connection_lost();
                }
            }
        }
    }

    fn chroot_strip(chroot: &Option<String>, path: &str) -> String {
        strip_chroot(chroot.as_deref(), path)
    }

    /// Tries servers round-robin until one establishes or resumes the session. Returns None if
    /// the session ended meanwhile (expired, closed).
    async fn connect(&mut self) -> Option<Connection> {
        let hosts = self.config.hosts.len().max(1);
        let per_host = (self.config.session_timeout / hosts as u32).max(Duration::from_millis(500));
        let mut attempt_in_round = 0usize;
        loop {
            let (host, port) = self.config.hosts[self.next_host % hosts].clone();
            self.next_host = self.next_host.wrapping_add(1);
            let backoff = if attempt_in_round >= hosts {
                attempt_in_round = 0;
                Some(Duration::from_millis(rand::rng().random_range(100..600)))
            } else {
                None
            };
            attempt_in_round += 1;
            let request = ConnectRequest {
                protocol_version: 0,
                last_zxid_seen: self.last_zxid,
                time_out: self
                    .config
                    .session_timeout
                    .as_millis()
                    .min(i32::MAX as u128) as i32,
                session_id: self.session_id,
                passwd: self.password.clone(),
                read_only: Some(self.config.read_only),
            };
            let max_frame = self.config.max_frame;
            let attempt = async move {
                if let Some(d) = backoff {
                    tokio::time::sleep(d).await;
                }
                handshake(host, port, request, per_host, max_frame).await
            };
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    r = &mut attempt => break r,
                    cmd = self.cmd_rx.recv() => match cmd {
                        None => {
                            self.finish(SessionState::Closed);
                            return None;
                        }
                        Some(Command::Close(done)) => {
                            self.finish(SessionState::Closed);
                            let _ = done.send(());
                            return None;
                        }
                        Some(Command::Request(p)) => self.queued.push_back(p),
                        Some(Command::Auth { scheme, auth, reply }) => self.auths.push(AuthEntry {
                            scheme,
                            auth,
                            waiter: Some(reply),
                        }),
                    }
                }
            };
            match result {
                Ok(conn) if conn.response.time_out <= 0 => {
                    tracing::warn!(
                        session = format_args!("{:#x}", self.session_id),
                        "session expired"
                    );
                    self.finish(SessionState::Expired);
                    return None;
                }
                Ok(conn) => return Some(conn),
                Err(why) => tracing::debug!(%why, "connect attempt failed"),
            }
        }
    }

    /// Runs one established connection until it breaks or the session ends.
    async fn serve(&mut self, conn: Connection) -> ConnEnd {
        let Connection {
            mut reader,
            mut writer,
            response,
            server,
        } = conn;
        let timeout = Duration::from_millis(response.time_out.max(1) as u64);
        let resumed = self.session_id == response.session_id;
        self.session_id = response.session_id;
        self.password = response.passwd.clone();
        if let Ok(mut info) = self.shared.session.lock() {
            *info = SessionInfo {
                session_id: response.session_id,
                password: response.passwd.clone(),
                timeout,
                server: Some(server.clone()),
            };
        }
        tracing::info!(
            session = format_args!("{:#x}", self.session_id),
            %server,
            resumed,
            timeout_ms = timeout.as_millis() as u64,
            "session established"
        );
        self.out.clear();
        // Replay authentication first, then re-arm watches, then what waited for us.
        for i in 0..self.auths.len() {
            let packet = AuthPacket {
                auth_type: 0,
                scheme: self.auths[i].scheme.clone(),
                auth: self.auths[i].auth.clone(),
            };
            let waiter = self.auths[i].waiter.take();
            self.encode(xids::AUTH, &Request::Auth(packet));
            self.pending_auth.push_back(waiter);
        }
        for packet in self
            .watches
            .set_watches(self.last_zxid, SET_WATCHES_MAX_BYTES)
        {
            self.send_set_watches(packet);
        }
        while let Some(p) = self.queued.pop_front() {
            self.send_request(p);
        }
        self.shared.set_state(if response.read_only == Some(true) {
            SessionState::ConnectedReadOnly
        } else {
            SessionState::Connected
        });

        let ping_every = timeout / 3;
        let read_timeout = timeout * 2 / 3;
        let mut last_recv = Instant::now();
        loop {
            let ping_at = self.last_send + ping_every;
            let dead_at = last_recv + read_timeout;
            tokio::select! {
                frame = reader.next() => match frame {
                    Some(Ok(Frame::Packet(buf))) => {
                        last_recv = Instant::now();
                        if let Err(end) = self.handle_packet(&buf) {
                            return end;
                        }
                    }
                    Some(Ok(Frame::FourLetterWord(_))) => {
                        return ConnEnd::Lost("unexpected four-letter word".into())
                    }
                    Some(Err(e)) => return ConnEnd::Lost(format!("read: {e}")),
                    None => return ConnEnd::Lost("server closed the connection".into()),
                },
                written = writer.write_buf(&mut self.out), if !self.out.is_empty() => match written {
                    Ok(0) => return ConnEnd::Lost("write: connection closed".into()),
                    Ok(_) => {}
                    Err(e) => return ConnEnd::Lost(format!("write: {e}")),
                },
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(Command::Request(p)) => self.send_request(p),
                    Some(Command::Auth { scheme, auth, reply }) => {
                        let packet = AuthPacket { auth_type: 0, scheme: scheme.clone(), auth: auth.clone() };
                        self.encode(xids::AUTH, &Request::Auth(packet));
                        self.pending_auth.push_back(Some(reply));
                        self.auths.push(AuthEntry { scheme, auth, waiter: None });
                    }
                    Some(Command::Close(done)) => {
                        self.close_session(&mut reader, &mut writer).await;
                        let _ = done.send(());
                        return ConnEnd::Terminal;
                    }
                    None => {
                        self.close_session(&mut reader, &mut writer).await;
                        return ConnEnd::Terminal;
                    }
                },
                _ = tokio::time::sleep_until(ping_at) => {
                    self.encode(xids::PING, &Request::Ping);
                }
                _ = tokio::time::sleep_until(dead_at) => {
                    return ConnEnd::Lost(format!("nothing heard for {read_timeout:?}"));
                }
            }
        }
    }

    /// Sends closeSession and waits (bounded) for its reply, answering other replies meanwhile.
    async fn close_session(
        &mut self,
        reader: &mut FramedRead<OwnedReadHalf, FrameCodec>,
        writer: &mut OwnedWriteHalf,
    ) {
        let xid = self.alloc_xid();
        self.encode(xid, &Request::CloseSession);
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        let out = std::mem::take(&mut self.out);
        let done = async {
            writer.write_all(&out).await.ok()?;
            while let Some(Ok(Frame::Packet(buf))) = reader.next().await {
                let header = ReplyHeader::read(&mut Reader::new(&buf)).ok()?;
                if header.xid == xid {
                    return Some(());
                }
                // Answer what was in flight; a failure here just ends the wait.
                self.handle_packet(&buf).ok()?;
            }
            None
        };
        if tokio::time::timeout_at(deadline, done).await.is_err() {
            tracing::debug!("closeSession not acknowledged in time");
        }
        self.finish(SessionState::Closed);
    }

    fn alloc_xid(&mut self) -> i32 {
        let xid = self.next_xid;
        self.next_xid = if self.next_xid >= i32::MAX - 1 {
            1
        } else {
            self.next_xid + 1
        };
        xid
    }

    fn encode(&mut self, xid: i32, request: &Request) {
        write_frame(&mut self.out, |out| request.encode_packet(xid, out));
        self.last_send = Instant::now();
    }

    fn send_request(&mut self, p: PendingRequest) {
        if p.reply.is_closed() {
            return; // the caller gave up before we could send it
        }
        let xid = self.alloc_xid();
        self.encode(xid, &p.request);
        self.in_flight.insert(
            xid,
            InFlight {
                op: p.request.op_code(),
                watch: p.watch,
                after: p.after,
                reply: p.reply,
            },
        );
    }

    fn send_set_watches(&mut self, packet: SetWatches2) {
        if self.use_set_watches2 {
            self.encode(xids::SET_WATCHES, &Request::SetWatches2(packet.clone()));
        } else {
            self.encode(xids::SET_WATCHES, &Request::SetWatches(downgrade(&packet)));
        }
        self.pending_set_watches.push_back(packet);
    }

    /// Handles one frame from the server.
    fn handle_packet(&mut self, buf: &[u8]) -> std::result::Result<(), ConnEnd> {
        let mut input = Reader::new(buf);
        let header = ReplyHeader::read(&mut input)
            .map_err(|e| ConnEnd::Lost(format!("bad reply header: {e}")))?;
        match header.xid {
            xids::PING => Ok(()),
            xids::NOTIFICATION => {
                let event = WatcherEvent::read(&mut input)
                    .map_err(|e| ConnEnd::Lost(format!("bad notification: {e}")))?;
                let Some(event_type) = EventType::from_wire(event.event_type) else {
                    tracing::warn!(event.event_type, "unknown event type");
                    return Ok(());
                };
                let state =
                    KeeperState::from_wire(event.state).unwrap_or(KeeperState::SyncConnected);
                let client_path = Self::chroot_strip(&self.config.chroot, &event.path);
                tracing::trace!(?event_type, path = %event.path, "notification");
                self.watches
                    .dispatch(event_type, state, &event.path, &client_path);
                Ok(())
            }
            xids::AUTH => {
                let waiter = self.pending_auth.pop_front().flatten();
                if header.err == ErrorCode::AuthFailed.wire() {
                    if let Some(w) = waiter {
                        let _ = w.send(Err(Error::AuthFailed));
                    }
                    tracing::warn!("authentication failed");
                    self.finish(SessionState::AuthFailed);
                    return Err(ConnEnd::Terminal);
                }
                if let Some(w) = waiter {
                    let _ = w.send(if header.err == 0 {
                        Ok(())
                    } else {
                        Err(Error::from_wire(header.err))
                    });
                }
                Ok(())
            }
            xids::SET_WATCHES => {
                let packet = self.pending_set_watches.pop_front();
                if header.err != 0 {
                    if self.use_set_watches2 {
                        tracing::info!(
                            err = header.err,
                            "SetWatches2 refused; falling back to SetWatches"
                        );
                        self.use_set_watches2 = false;
                        if let Some(p) = packet {
                            self.send_set_watches(p);
                        }
                    } else {
                        tracing::warn!(err = header.err, "SetWatches refused");
                    }
                }
                if header.zxid > 0 {
                    self.last_zxid = self.last_zxid.max(header.zxid);
                }
                Ok(())
            }
            xid => {
                if header.zxid > 0 {
                    self.last_zxid = self.last_zxid.max(header.zxid);
                }
                let Some(p) = self.in_flight.remove(&xid) else {
                    tracing::warn!(xid, "reply for an unknown xid");
                    return Ok(());
                };
                self.complete(p, &header, &mut input);
                Ok(())
            }
        }
    }

    fn complete(&mut self, p: InFlight, header: &ReplyHeader, input: &mut Reader<'_>) {
        if header.err != 0 {
            let err = Error::from_wire(header.err);
            if p.op == OpCode::Exists && err == Error::NoNode {
                if let Some(w) = p.watch {
                    self.watches.register(w, false);
                }
            }
            let _ = p.reply.send(Err(err));
            return;
        }
        let response = match Response::read(p.op, input) {
            Ok(r) => r,
            Err(e) => {
                let _ = p.reply.send(Err(Error::Protocol(format!(
                    "cannot decode reply to {:?}: {e}",
                    p.op
                ))));
                return;
            }
        };
        if let Some(w) = p.watch {
            self.watches.register(w, true);
        }
        if let AfterReply::RemoveWatches { path, watcher_type } = &p.after {
            let client_path = Self::chroot_strip(&self.config.chroot, path);
            self.watches.remove(
                path,
                *watcher_type,
                KeeperState::SyncConnected,
                &client_path,
            );
        }
        let _ = p.reply.send(Ok(response));
    }

    /// The connection broke: what was in flight has an unknown outcome.
    fn connection_lost(&mut self) {
        self.shared.set_state(SessionState::Disconnected);
        for (_, p) in self.in_flight.drain() {
            let _ = p.reply.send(Err(Error::ConnectionLoss));
        }
        for w in self.pending_auth.drain(..).flatten() {
            let _ = w.send(Err(Error::ConnectionLoss));
        }
        self.pending_set_watches.clear();
        self.out.clear();
    }

    /// The session is over: fail everything and stop.
    fn finish(&mut self, state: SessionState) {
        let err = match state {
            SessionState::Expired => Error::SessionExpired,
            SessionState::AuthFailed => Error::AuthFailed,
            _ => Error::Closed,
        };
        for (_, p) in self.in_flight.drain() {
            let _ = p.reply.send(Err(err.clone()));
        }
        for p in self.queued.drain(..) {
            let _ = p.reply.send(Err(err.clone()));
        }
        for w in self.pending_auth.drain(..).flatten() {
            let _ = w.send(Err(err.clone()));
        }
        for a in &mut self.auths {
            if let Some(w) = a.waiter.take() {
                let _ = w.send(Err(err.clone()));
            }
        }
        self.cmd_rx.close();
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            match cmd {
                Command::Request(p) => {
                    let _ = p.reply.send(Err(err.clone()));
                }
                Command::Auth { reply, .. } => {
                    let _ = reply.send(Err(err.clone()));
                }
                Command::Close(done) => {
                    let _ = done.send(());
                }
            }
        }
        let chroot = self.config.chroot.clone();
        self.watches
            .close_all(state, |p| Self::chroot_strip(&chroot, p));
        if let Ok(mut info) = self.shared.session.lock() {
            info.server = None;
        }
        self.shared.set_state(state);
    }
}

/// SetWatches2 without the persistent lists, for servers older than 3.6.
fn downgrade(p: &SetWatches2) -> SetWatches {
    SetWatches {
        relative_zxid: p.relative_zxid,
        data_watches: p.data_watches.clone(),
        exist_watches: p.exist_watches.clone(),
        child_watches: p.child_watches.clone(),
    }
}

/// Strips the chroot from a server path (a path outside the chroot is returned as is).
pub(crate) fn strip_chroot(chroot: Option<&str>, path: &str) -> String {
    match chroot {
        None => path.to_string(),
        Some(root) => match path.strip_prefix(root) {
            Some("") => "/".to_string(),
            Some(rest) if rest.starts_with('/') => rest.to_string(),
            _ => path.to_string(),
        },
    }
}

/// Connects and exchanges ConnectRequest/ConnectResponse, all within `timeout`.
async fn handshake(
    host: String,
    port: u16,
    request: ConnectRequest,
    timeout: Duration,
    max_frame: usize,
) -> std::result::Result<Connection, String> {
    let server = format!("{host}:{port}");
    let work = async {
        let stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect {server}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (read, mut write) = stream.into_split();
        let mut buf = BytesMut::new();
        write_frame(&mut buf, |out| request.write(out));
        write
            .write_all(&buf)
            .await
            .map_err(|e| format!("send handshake to {server}: {e}"))?;
        let mut reader = FramedRead::new(read, FrameCodec::client(max_frame));
        let frame = match reader.next().await {
            Some(Ok(Frame::Packet(f))) => f,
            Some(Ok(Frame::FourLetterWord(_))) => return Err("unexpected frame".to_string()),
            Some(Err(e)) => return Err(format!("handshake with {server}: {e}")),
            None => {
                return Err(format!(
                    "{server} closed the connection during the handshake"
                ))
            }
        };
        let response = ConnectResponse::from_bytes(&frame)
            .map_err(|e| format!("bad ConnectResponse from {server}: {e}"))?;
        Ok(Connection {
            reader,
            writer: write,
            response,
            server: server.clone(),
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("handshake with {server} timed out")),
    }
}

#[cfg(test)]
mod tests {
    use super::strip_chroot;

    #[test]
    fn chroot_stripping() {
        assert_eq!(strip_chroot(None, "/a"), "/a");
        assert_eq!(strip_chroot(Some("/app"), "/app"), "/");
        assert_eq!(strip_chroot(Some("/app"), "/app/x"), "/x");
        assert_eq!(strip_chroot(Some("/app"), "/apple"), "/apple");
    }
}
