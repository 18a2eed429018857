//! One client connection: the handshake, then requests in, replies and events out.
//!
//! Ordering rules (ZooKeeper's CommitProcessor): a session's requests complete in the order
//! sent. Writes go to Raft; a read runs against the local tree only once every earlier write of
//! the session has been applied, and a write is proposed only once every earlier read has run,
//! so no read observes a later write of its own session. Replies and events leave in the order
//! the state machine produced them, so an event always precedes the reply of a later read.
//!
//! Memory and back-pressure (the shape of kezhuw/zookeeper-client-rust `serve_session`): one
//! `select!` polls the close signal, shutdown, the socket write, the outbound channel and the
//! socket read, so a client that stops reading never pins the task in a write.
//! - Output queued for the client (channel + `out`) is counted in an [`OutputBudget`]; past
//!   its cap the connection is closed. Before that, at `Config::output_pause`, the task stops
//!   reading requests, so a client that only reads slowly is slowed down rather than closed.
//! - Requests are read only while this connection has fewer than `globalOutstandingLimit`
//!   pending, and, while the server-wide count is past that limit, only if this connection
//!   has none pending (ZooKeeper's `shouldThrottle` → `disableRecv`). Nothing is dropped: the
//!   kernel's socket buffers and TCP flow control hold the rest.
//! - A close from elsewhere (session expired, moved, raft dropped a proposal, output cap)
//!   fires the connection's close token, polled first: it never waits behind queued output.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures::{FutureExt, StreamExt};
use rand::RngCore;
use rookery_protocol::codec::write_frame;
use rookery_protocol::{
    encode_reply, xids, ConnectRequest, ConnectResponse, DecodeError, ErrorCode, Frame, FrameCodec,
    Id, Reader, Record, ReplyHeader, Request, RequestHeader, Response, WatcherEvent,
};
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::raft::RaftHandle;
use crate::server::registry::{ConnCounters, ConnHandle, ConnRegistry, Outbound, OutputBudget};
use crate::server::{admin, request};
use crate::state::Shared;
pub use crate::txn::now_ms;
use crate::txn::{Origin, Txn, TxnBody};

/// The smallest op deadline in an ensemble (see `Connection::op_timeout`).
const MIN_OP_DEADLINE: Duration = Duration::from_secs(2);
/// How long a connection that must close after its last reply (closeSession, a failed auth)
/// keeps trying to write it to a client that does not read.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// How long a four-letter-word answer may take to write.
const ADMIN_WRITE_LIMIT: Duration = Duration::from_secs(10);

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client sent bytes that do not decode.
    #[error("malformed packet: {0}")]
    Malformed(#[from] DecodeError),
    /// The server refused the client (handshake, protocol misuse, raft down).
    #[error("{0}")]
    Refused(String),
    /// The client did not read its output and the queue passed the cap.
    #[error("output queue over its cap of {cap} bytes (client not reading)")]
    OutputOverCap {
        /// The cap.
        cap: usize,
    },
}

/// A request waiting for its turn to complete.
#[derive(Debug)]
enum Pending {
    /// A write; `proposed` once it has gone to Raft (its reply then comes through the channel).
    Write {
        /// The client's xid, matched against the reply.
        xid: i32,
        /// The request, until it is proposed (then taken, so the body is not kept twice).
        request: Option<Request>,
        /// Whether it went to Raft.
        proposed: bool,
        /// When it went to Raft: the start of its deadline in an ensemble.
        proposed_at: Option<tokio::time::Instant>,
        /// A reconfig: its deadline also covers the joiners' catch-up (initLimit × tickTime).
        reconfig: bool,
        /// For latency stats.
        received: Instant,
    },
    /// An ensemble `sync`: answered once this server applied everything committed before
    /// it reached the head of the queue (a ReadIndex barrier); later requests wait for it.
    Sync {
        /// The request header (xid, opcode).
        header: RequestHeader,
        /// The sync request itself (answered locally once the barrier passed).
        request: Request,
        /// When the barrier was started; `None` until it reached the head of the queue.
        started: Option<tokio::time::Instant>,
        /// For latency stats.
        received: Instant,
    },
    /// A request answered with an error without running it (an undecodable body).
    Failed {
        /// The client's xid.
        xid: i32,
        /// The error to answer.
        code: ErrorCode,
        /// For latency stats.
        received: Instant,
    },
    /// Anything answered locally: reads, pings, auth, watch management.
    Local {
        /// The request header (xid, opcode).
        header: RequestHeader,
        /// The decoded request.
        request: Request,
        /// For latency stats.
        received: Instant,
    },
}

/// What to do after handling a packet.
enum Next {
    /// Keep serving.
    Continue,
    /// Flush what is queued, then close (closeSession, unknown opcode, auth failure).
    CloseAfterFlush,
}

/// The per-connection task's state.
pub struct Connection {
    /// Unique per server boot; also the connection's watcher id.
    conn_id: u64,
    /// The client's address: its `ip` auth id, and named in log lines and `cons`.
    peer: SocketAddr,
    /// The state machine's shared state (reads, watches, stats, config).
    shared: Arc<Shared>,
    /// The live connections: where this one registers so replies and events can reach it.
    conns: Arc<ConnRegistry>,
    /// Where writes are proposed.
    raft: RaftHandle,
    /// Inbound frames.
    reader: FramedRead<Box<dyn AsyncRead + Send + Sync + Unpin>, FrameCodec>,
    /// The socket's write half (plain or TLS); only ever written from the main loop's write arm.
    writer: Box<dyn AsyncWrite + Send + Sync + Unpin>,
    /// Replies and events encoded but not yet written: one syscall for many messages.
    out: BytesMut,
    /// Replies of writes and watch events, in the order the state machine produced them.
    rx: mpsc::UnboundedReceiver<Outbound>,
    /// The sending side of `rx`, cloned into this connection's registry handle.
    tx: mpsc::UnboundedSender<Outbound>,
    /// Bytes queued for the client (in `rx` and `out`), shared with every sender.
    budget: Arc<OutputBudget>,
    /// Fired by anyone who wants this connection gone now (expiry, session moved, cap).
    close: CancellationToken,
    /// Queued output past which no more requests are read (`Config::output_pause`).
    pause_bytes: usize,
    /// Pending requests allowed, and the server-wide count past which busy connections stop
    /// reading (`globalOutstandingLimit`).
    outstanding_limit: usize,
    /// `queue.len()`, published for `cons`.
    outstanding: Arc<AtomicUsize>,
    /// This connection's packet counts, published for `cons`.
    counters: Arc<ConnCounters>,
    /// Writes, syncs and session creations in flight; a leader change closes the connection
    /// while this is non-zero.
    in_doubt: Arc<AtomicUsize>,
    /// Of those, reconfigs ([`ConnHandle::awaiting_log`]): a leader change does not close the
    /// connection for them alone.
    awaiting_log: Arc<AtomicUsize>,
    /// The barrier of the `sync` at the head of the queue, while it runs.
    sync_wait: Option<oneshot::Receiver<u64>>,
    /// Admitted in read-only mode: reads only; writes, sync and reconfig get NotReadOnly.
    read_only: bool,
    /// The session (0 until the handshake ends).
    session_id: i64,
    /// The negotiated session timeout.
    timeout_ms: i32,
    /// Authenticated ids: the client's IP, plus whatever addauth added.
    auth: Vec<Id>,
    /// Where this connection's SASL exchange stands.
    sasl: super::sasl::SaslState,
    /// Requests in arrival order that have not been answered yet.
    queue: VecDeque<Pending>,
    /// Set once the client has asked to close its session.
    closing: bool,
    /// Once set, no more requests are read; the task ends when `out` is written or by then.
    drain_deadline: Option<tokio::time::Instant>,
    /// Flips to true when the server stops.
    shutdown: watch::Receiver<bool>,
}

/// An accepted client socket: plain TCP, or TLS after its handshake.
pub enum ClientSocket {
    /// The plain client port.
    Plain(TcpStream),
    /// The TLS port, handshake done (boxed: the TLS state is large).
    Tls(Box<super::tls::Accepted>),
}

impl Connection {
    /// A connection for an accepted socket; `run` serves it.
    pub fn new(
        socket: ClientSocket,
        peer: SocketAddr,
        shared: Arc<Shared>,
        conns: Arc<ConnRegistry>,
        raft: RaftHandle,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let mut auth = vec![Id {
            scheme: "ip".to_string(),
            id: peer.ip().to_string(),
        }];
        let (read_half, write_half): (
            Box<dyn AsyncRead + Send + Sync + Unpin>,
            Box<dyn AsyncWrite + Send + Sync + Unpin>,
        ) = match socket {
            ClientSocket::Plain(stream) => {
                let _ = stream.set_nodelay(true);
                let (read_half, write_half) = stream.into_split();
                (Box::new(read_half), Box::new(write_half))
            }
            ClientSocket::Tls(accepted) => {
                let super::tls::Accepted { stream, subject } = *accepted;
                let _ = stream.get_ref().0.set_nodelay(true);
                if let Some(subject) = subject {
                    let super_user = shared.config().client_tls.super_user.clone();
                    auth.extend(super::tls::auth_ids(&subject, super_user.as_deref()));
                }
                let (read_half, write_half) = tokio::io::split(stream);
                (Box::new(read_half), Box::new(write_half))
            }
        };
        let config = shared.config();
        let max_frame = config.jute_maxbuffer;
        let close = CancellationToken::new();
        let budget = Arc::new(OutputBudget::new(config.output_cap(), close.clone()));
        let pause_bytes = config.output_pause();
        let outstanding_limit = config.global_outstanding_limit.max(1);
        let (tx, rx) = mpsc::unbounded_channel();
        Connection {
            conn_id: shared.next_conn_id(),
            peer,
            reader: FramedRead::new(read_half, FrameCodec::server(max_frame)),
            writer: write_half,
            out: BytesMut::with_capacity(4096),
            rx,
            tx,
            budget,
            close,
            pause_bytes,
            outstanding_limit,
            outstanding: Arc::default(),
            counters: Arc::default(),
            in_doubt: Arc::default(),
            awaiting_log: Arc::default(),
            sync_wait: None,
            read_only: false,
            session_id: 0,
            timeout_ms: 0,
            auth,
            sasl: super::sasl::SaslState::default(),
            queue: VecDeque::new(),
            closing: false,
            drain_deadline: None,
            shared,
            conns,
            raft,
            shutdown,
        }
    }

    /// Runs the connection to its end. Never panics on client input; errors close only this
    /// connection.
    pub async fn run(mut self) {
        let span = tracing::info_span!("conn", peer = %self.peer, session = tracing::field::Empty);
        // Instrument rather than enter: an entered guard held across awaits would leak the
        // span into other tasks polled on the same worker thread.
        let result = self.serve(&span).instrument(span.clone()).await;
        if let Err(error) = &result {
            info!(
                parent: &span,
                session = format_args!("{:#x}", self.session_id),
                peer = %self.peer,
                %error,
                "connection closed"
            );
        }
        // Bounded: a client that does not read must not hold the task in the FIN either.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.writer.shutdown()).await;
        // Requests still pending will not be answered; nobody counts them any more.
        self.shared
            .stats()
            .outstanding
            .fetch_sub(self.queue.len() as i64, Ordering::Relaxed);
        self.unregister();
    }

    async fn serve(&mut self, span: &tracing::Span) -> Result<(), ConnectionError> {
        let first = match self.next_frame().await? {
            Some(frame) => frame,
            None => return Ok(()),
        };
        let packet = match first {
            Frame::FourLetterWord(word) => {
                let text =
                    admin::four_letter_word(&self.shared, &self.conns, &self.raft, word).await;
                tokio::time::timeout(ADMIN_WRITE_LIMIT, self.writer.write_all(text.as_bytes()))
                    .await
                    .map_err(|_| {
                        ConnectionError::Refused("four-letter-word answer not read".into())
                    })??;
                return Ok(());
            }
            Frame::Packet(packet) => packet,
        };
        if !self.handshake(&packet).await? {
            return Ok(());
        }
        span.record("session", format_args!("{:#x}", self.session_id));
        self.main_loop().await
    }

    async fn next_frame(&mut self) -> Result<Option<Frame>, ConnectionError> {
        match self.reader.next().await {
            None => Ok(None),
            Some(Ok(frame)) => Ok(Some(frame)),
            Some(Err(error)) => Err(ConnectionError::Io(error)),
        }
    }

    /// Establishes or resumes the session. Returns false if the client was refused.
    async fn handshake(&mut self, packet: &[u8]) -> Result<bool, ConnectionError> {
        let request = ConnectRequest::from_bytes(packet)?;
        let ensemble = self.shared.config().is_ensemble();
        if ensemble && !self.raft.is_fresh() {
            if self.conns.is_read_only() {
                return self.read_only_handshake(&request).await;
            }
            // ZooKeeper's learner without a leader accepts no client: close the socket.
            return Err(ConnectionError::Refused(
                "not serving: no fresh leader contact".into(),
            ));
        }
        let timeout_ms = self.shared.config().negotiate_timeout(request.time_out);
        let grace = resume_grace(timeout_ms);
        if ensemble && request.last_zxid_seen > self.shared.last_zxid() {
            // A client a little ahead of this server (it saw another server's later apply):
            // give this server a moment to catch up before refusing.
            let deadline = tokio::time::Instant::now() + grace;
            while request.last_zxid_seen > self.shared.last_zxid()
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let last_zxid = self.shared.last_zxid();
        if request.last_zxid_seen > last_zxid {
            return Err(ConnectionError::Refused(format!(
                "client has seen zxid {:#x}, our last zxid is {:#x}",
                request.last_zxid_seen, last_zxid
            )));
        }
        self.register();
        let (session_id, passwd) = if request.session_id == 0 {
            match self.create_session(timeout_ms).await? {
                Some(created) => created,
                None => return Ok(false),
            }
        } else {
            let mut valid = self.session_valid(&request);
            if !valid && ensemble {
                // Maybe created or renewed elsewhere and not applied here yet: wait until
                // this server applied everything committed now, then look again.
                self.await_barrier(grace).await;
                valid = self.session_valid(&request);
            }
            if !valid {
                info!(
                    session = format_args!("{:#x}", request.session_id),
                    "refusing to resume an unknown or expired session"
                );
                self.send_connect_response(&request, 0, 0, vec![0; 16])
                    .await?;
                return Ok(false);
            }
            self.shared.tracker().set_timeout(
                request.session_id,
                Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0)),
            );
            // Heard from now: on a follower this also tells the leader (touch table).
            self.shared.tracker().touch(request.session_id);
            // Move the session's ownership to this connection through the log (the Reattach
            // fence): requests still arriving through its old connection, here or on another
            // server, then get SessionMoved instead of being applied out of order.
            match self.reattach(request.session_id, timeout_ms).await? {
                Some(true) => {}
                Some(false) => {
                    info!(
                        session = format_args!("{:#x}", request.session_id),
                        "session ended before its resume applied"
                    );
                    self.send_connect_response(&request, 0, 0, vec![0; 16])
                        .await?;
                    return Ok(false);
                }
                None => return Ok(false),
            }
            (request.session_id, request.passwd.clone())
        };
        self.session_id = session_id;
        self.timeout_ms = timeout_ms;
        self.attach_session();
        self.send_connect_response(&request, timeout_ms, session_id, passwd)
            .await?;
        debug!(timeout_ms, "session established");
        Ok(true)
    }

    /// The handshake while this server is in read-only mode (ZooKeeper's
    /// `ReadOnlyZooKeeperServer`): only clients that allow a read-only server are admitted;
    /// a new session is local (never replicated, gone when the server leaves read-only mode);
    /// a resumed session is a local one of this server, or a global one this server knows
    /// (served read-only: it cannot write, so it needs no Reattach through the log).
    async fn read_only_handshake(
        &mut self,
        request: &ConnectRequest,
    ) -> Result<bool, ConnectionError> {
        if request.read_only != Some(true) {
            // ZooKeeper closes the socket too (processConnectRequest, NOT_READ_ONLY_CLIENT).
            return Err(ConnectionError::Refused(
                "refusing a not-read-only client in read-only mode".into(),
            ));
        }
        let last_zxid = self.shared.last_zxid();
        if request.last_zxid_seen > last_zxid {
            // Nobody can bring this server up to date while it is cut off: refuse at once.
            return Err(ConnectionError::Refused(format!(
                "client has seen zxid {:#x}, our last zxid is {:#x}",
                request.last_zxid_seen, last_zxid
            )));
        }
        let timeout_ms = self.shared.config().negotiate_timeout(request.time_out);
        let global_valid = request.session_id != 0 && self.session_valid(request);
        let mut passwd = vec![0u8; 16];
        rand::rng().fill_bytes(&mut passwd);
        let server_id = self.shared.config().server_id;
        // One lock for the mode check, the session and the registration (see ReadOnlyMode).
        let session_id = {
            let mut conns = self.conns.lock();
            if !conns.read_only.active {
                None
            } else {
                let session_id = if request.session_id == 0 {
                    Some(conns.read_only.create_session(
                        server_id,
                        now_ms(),
                        timeout_ms,
                        passwd.clone(),
                    ))
                } else if global_valid
                    || conns.read_only.resume_session(
                        request.session_id,
                        &request.passwd,
                        Instant::now(),
                    )
                {
                    passwd = request.passwd.clone();
                    Some(request.session_id)
                } else {
                    Some(0)
                };
                conns
                    .by_id
                    .insert(self.conn_id, self.handle(session_id.unwrap_or(0), true));
                session_id
            }
        };
        let Some(session_id) = session_id else {
            // Left read-only mode meanwhile: the client retries and gets the normal path.
            return Err(ConnectionError::Refused(
                "left read-only mode during the handshake".into(),
            ));
        };
        self.read_only = true;
        if session_id == 0 {
            info!(
                session = format_args!("{:#x}", request.session_id),
                "read-only mode: refusing to resume an unknown or expired session"
            );
            self.send_connect_response(request, 0, 0, vec![0; 16])
                .await?;
            return Ok(false);
        }
        self.session_id = session_id;
        self.timeout_ms = timeout_ms;
        self.attach_session();
        self.send_connect_response(request, timeout_ms, session_id, passwd)
            .await?;
        info!(
            session = format_args!("{session_id:#x}"),
            "read-only session established"
        );
        Ok(true)
    }

    /// Whether the session a client wants to resume is live here, with that password.
    fn session_valid(&self, request: &ConnectRequest) -> bool {
        let state = self.shared.state().read();
        state
            .sessions
            .get(request.session_id)
            .is_some_and(|info| info.passwd == request.passwd)
    }

    /// Waits, at most `limit`, until this server applied everything committed before the
    /// call (a ReadIndex barrier). Gives up silently: the caller rechecks what it needs.
    async fn await_barrier(&self, limit: Duration) {
        let Ok(rx) = self.raft.read_barrier().wait() else {
            return;
        };
        let _ = tokio::time::timeout(limit, rx).await;
    }

    /// How long a write, sync or session creation may stay unanswered in an ensemble before
    /// the connection is closed (its fate is unknown: ConnectionLoss, never a guess):
    /// min(session timeout, max(2 × election timeout, 2 s)). A leader change closes such
    /// connections at once; the deadline is the backstop for a proposal lost on its way to
    /// the leader. The 2 s floor keeps a healthy but busy ensemble (a slow fsync, a loaded
    /// machine) from failing writes that were merely slow, which ZooKeeper never does.
    /// `None` when standalone.
    fn op_timeout(&self, timeout_ms: i32) -> Option<Duration> {
        if !self.shared.config().is_ensemble() {
            return None;
        }
        let session = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0).max(1));
        let backstop = self
            .raft
            .election_timeout()
            .saturating_mul(2)
            .max(MIN_OP_DEADLINE);
        Some(session.min(backstop))
    }

    async fn create_session(
        &mut self,
        timeout_ms: i32,
    ) -> Result<Option<(i64, Vec<u8>)>, ConnectionError> {
        let mut passwd = vec![0u8; 16];
        rand::rng().fill_bytes(&mut passwd);
        let txn = Txn::new(
            self.origin(0),
            0,
            Vec::new(),
            TxnBody::CreateSession { timeout_ms, passwd },
        );
        if let Err(e) = self.raft.propose(txn.encode()) {
            return Err(ConnectionError::Refused(format!(
                "cannot create a session: {e}"
            )));
        }
        let deadline = self
            .op_timeout(timeout_ms)
            .map(|limit| tokio::time::Instant::now() + limit);
        self.in_doubt.fetch_add(1, Ordering::AcqRel);
        let created = self.wait_session_created(deadline).await;
        self.in_doubt.fetch_sub(1, Ordering::AcqRel);
        created
    }

    /// Proposes `Reattach{session_id, timeout_ms}` from this connection and waits for it to
    /// apply: `Some(true)` once this connection owns the session, `Some(false)` if the session
    /// had ended, `None` if the connection was closed meanwhile.
    async fn reattach(
        &mut self,
        session_id: i64,
        timeout_ms: i32,
    ) -> Result<Option<bool>, ConnectionError> {
        let txn = Txn::new(
            self.origin(0),
            session_id,
            Vec::new(),
            TxnBody::Reattach {
                session_id,
                timeout_ms,
            },
        );
        if let Err(e) = self.raft.propose(txn.encode()) {
            return Err(ConnectionError::Refused(format!(
                "cannot resume the session: {e}"
            )));
        }
        let deadline = self
            .op_timeout(timeout_ms)
            .map(|limit| tokio::time::Instant::now() + limit);
        self.in_doubt.fetch_add(1, Ordering::AcqRel);
        let result = self
            .wait_handshake_answer(deadline, "session resume", |message| match message {
                Outbound::SessionReattached { ok } => Some(ok),
                _ => None,
            })
            .await;
        self.in_doubt.fetch_sub(1, Ordering::AcqRel);
        result
    }

    /// Waits for this connection's CreateSession to apply, until `deadline` if any.
    async fn wait_session_created(
        &mut self,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Option<(i64, Vec<u8>)>, ConnectionError> {
        self.wait_handshake_answer(deadline, "session creation", |message| match message {
            Outbound::SessionCreated { session_id, passwd } => Some((session_id, passwd)),
            _ => None,
        })
        .await
    }

    /// Waits for the outbound message `pick` accepts (the apply of this handshake's entry),
    /// until `deadline` if any; anything else queued meanwhile is released and dropped (no
    /// request runs before the handshake is answered). None: the connection was closed.
    async fn wait_handshake_answer<T>(
        &mut self,
        deadline: Option<tokio::time::Instant>,
        what: &str,
        pick: impl Fn(Outbound) -> Option<T>,
    ) -> Result<Option<T>, ConnectionError> {
        loop {
            let message = tokio::select! {
                biased;
                _ = self.close.cancelled() => return Ok(None),
                _ = sleep_until_opt(deadline), if deadline.is_some() => {
                    return Err(ConnectionError::Refused(format!(
                        "{what} not committed in time"
                    )));
                }
                message = self.rx.recv() => message,
            };
            match message {
                Some(message) => {
                    self.budget.release(message.charge());
                    if let Some(answer) = pick(message) {
                        return Ok(Some(answer));
                    }
                }
                None => return Ok(None),
            }
        }
    }

    /// Writes the handshake answer: the only write outside the main loop, bounded by the
    /// session timeout since the task polls nothing else meanwhile.
    async fn send_connect_response(
        &mut self,
        request: &ConnectRequest,
        timeout_ms: i32,
        session_id: i64,
        passwd: Vec<u8>,
    ) -> Result<(), ConnectionError> {
        let response = ConnectResponse {
            protocol_version: 0,
            time_out: timeout_ms,
            session_id,
            passwd,
            read_only: request.read_only.map(|_| self.read_only),
        };
        let mut frame = BytesMut::new();
        write_frame(&mut frame, |out| response.write(out));
        let limit = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0).max(1000));
        tokio::select! {
            biased;
            _ = self.close.cancelled() => Ok(()),
            written = tokio::time::timeout(limit, self.writer.write_all(&frame)) => match written {
                Ok(result) => Ok(result?),
                Err(_) => Err(ConnectionError::Refused("handshake answer not read".into())),
            },
        }
    }

    fn register(&self) {
        let handle = self.handle(0, false);
        self.conns.lock().by_id.insert(self.conn_id, handle);
    }

    /// This connection's entry in the registry.
    fn handle(&self, session_id: i64, read_only: bool) -> ConnHandle {
        ConnHandle {
            tx: self.tx.clone(),
            budget: Arc::clone(&self.budget),
            session_id,
            peer: self.peer,
            auth: self.auth.clone(),
            outstanding: Arc::clone(&self.outstanding),
            counters: Arc::clone(&self.counters),
            in_doubt: Arc::clone(&self.in_doubt),
            awaiting_log: Arc::clone(&self.awaiting_log),
            read_only,
        }
    }

    /// Binds the session to this connection, closing any older connection that carried it.
    fn attach_session(&self) {
        let mut conns = self.conns.lock();
        if let Some(conn) = conns.by_id.get_mut(&self.conn_id) {
            conn.session_id = self.session_id;
        }
        if let Some(old) = conns.by_session.insert(self.session_id, self.conn_id) {
            if old != self.conn_id {
                conns.close(old);
            }
        }
    }

    fn unregister(&self) {
        {
            let mut conns = self.conns.lock();
            conns.by_id.remove(&self.conn_id);
            if conns.by_session.get(&self.session_id) == Some(&self.conn_id) {
                conns.by_session.remove(&self.session_id);
                if self.read_only {
                    // Resumable within its timeout, as a ZooKeeper session is.
                    conns
                        .read_only
                        .detach_session(self.session_id, Instant::now());
                }
            }
        }
        self.shared.watches().lock().remove_watcher(self.conn_id);
    }

    fn origin(&self, xid: i32) -> Origin {
        Origin {
            server_id: self.shared.config().server_id,
            conn_id: self.conn_id,
            xid,
        }
    }

    /// Whether another request may be read now (see the module docs).
    fn may_read(&self) -> bool {
        if self.drain_deadline.is_some()
            || self.queue.len() >= self.outstanding_limit
            || self.budget.queued() >= self.pause_bytes
        {
            return false;
        }
        let global = self.shared.stats().outstanding.load(Ordering::Relaxed);
        // Past the global limit only idle connections read: the busy ones wait for their own
        // replies, which always come (a pending request is a proposed write or behind one).
        global <= self.outstanding_limit as i64 || self.queue.is_empty()
    }

    fn start_drain(&mut self) {
        if self.drain_deadline.is_none() {
            self.drain_deadline = Some(tokio::time::Instant::now() + DRAIN_LIMIT);
        }
    }

    async fn main_loop(&mut self) -> Result<(), ConnectionError> {
        loop {
            self.outstanding.store(self.queue.len(), Ordering::Relaxed);
            if self.drain_deadline.is_some() && self.out.is_empty() {
                return Ok(());
            }
            let may_read = self.may_read();
            let drain_deadline = self.drain_deadline;
            let op_deadline = self.op_deadline();
            let syncing = self.sync_wait.is_some();
            tokio::select! {
                // Closes first: they must not wait behind output the client does not read.
                biased;
                _ = self.close.cancelled() => {
                    if self.budget.overflowed() {
                        return Err(ConnectionError::OutputOverCap { cap: self.budget.cap() });
                    }
                    debug!("connection closed from elsewhere");
                    return Ok(());
                }
                _ = self.shutdown.changed() => {
                    self.start_drain();
                }
                _ = sleep_until_opt(drain_deadline), if drain_deadline.is_some() => {
                    debug!("closing without writing everything: client not reading");
                    return Ok(());
                }
                _ = sleep_until_opt(op_deadline), if op_deadline.is_some() => {
                    // Its fate is unknown: close (ConnectionLoss), never answer a guess.
                    return Err(ConnectionError::Refused(
                        "a write or sync was not answered in time; closing".into(),
                    ));
                }
                passed = wait_sync(&mut self.sync_wait), if syncing => match passed {
                    Ok(_) => {
                        if let Next::CloseAfterFlush = self.finish_sync() {
                            self.start_drain();
                        }
                    }
                    Err(_) => {
                        return Err(ConnectionError::Refused("raft stopped during a sync".into()));
                    }
                },
                written = self.writer.write(&self.out), if !self.out.is_empty() => {
                    let n = written?;
                    if n == 0 {
                        return Err(ConnectionError::Io(std::io::ErrorKind::WriteZero.into()));
                    }
                    self.out.advance(n);
                    self.budget.release(n);
                }
                message = self.rx.recv() => match message {
                    None => return Ok(()),
                    Some(message) => {
                        if let Next::CloseAfterFlush = self.on_outbound(message) {
                            self.start_drain();
                        }
                        while let Ok(message) = self.rx.try_recv() {
                            if let Next::CloseAfterFlush = self.on_outbound(message) {
                                self.start_drain();
                            }
                        }
                    }
                },
                frame = self.reader.next(), if may_read => match frame {
                    None => return Ok(()),
                    Some(Err(error)) => return Err(ConnectionError::Io(error)),
                    Some(Ok(frame)) => {
                        if let Next::CloseAfterFlush = self.on_frame(frame)? {
                            self.start_drain();
                        }
                        // Drain frames already buffered: pipelined writes share one proposal
                        // batch and one socket write. Admission is checked per frame.
                        while self.may_read() {
                            match self.reader.next().now_or_never() {
                                Some(Some(Ok(frame))) => {
                                    if let Next::CloseAfterFlush = self.on_frame(frame)? {
                                        self.start_drain();
                                    }
                                }
                                Some(Some(Err(error))) => return Err(ConnectionError::Io(error)),
                                Some(None) => self.start_drain(),
                                None => break,
                            }
                        }
                    }
                },
            }
        }
    }

    /// Encodes a frame produced by this task (read replies, SetWatches events) straight into
    /// `out`, charging the budget. Past the cap the frame is taken back and the connection is
    /// closed, as for output from elsewhere.
    fn push_local(&mut self, fill: impl FnOnce(&mut BytesMut)) {
        let start = self.out.len();
        write_frame(&mut self.out, fill);
        let len = self.out.len() - start;
        if !self.budget.charge_or_close(len, self.session_id, self.peer) {
            self.out.truncate(start);
        }
    }

    /// Handles one inbound packet.
    fn on_frame(&mut self, frame: Frame) -> Result<Next, ConnectionError> {
        let packet = match frame {
            Frame::Packet(packet) => packet,
            // Four-letter words are only recognised first; later they are just bad frames.
            Frame::FourLetterWord(word) => {
                return Err(ConnectionError::Refused(format!("unexpected {word}")))
            }
        };
        let stats = self.shared.stats();
        stats.packets_received.fetch_add(1, Ordering::Relaxed);
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        if !self.read_only {
            // A local session is unknown to the tracker and the leader.
            self.shared.tracker().touch(self.session_id);
        }
        let received = Instant::now();
        let mut input = Reader::new(&packet);
        let header = RequestHeader::read(&mut input)?;
        let request = match Request::read_body(header.op_type, &mut input) {
            Ok(request) => request,
            Err(DecodeError::UnknownOpCode(op)) => {
                // ZooKeeper's UnimplementedRequestProcessor: answer, then close.
                warn!(op, "unknown opcode");
                self.queue_local_error(header, ErrorCode::Unimplemented, received);
                return Ok(Next::CloseAfterFlush);
            }
            Err(error) => {
                warn!(%error, op = header.op_type, "undecodable request body");
                self.queue_local_error(header, ErrorCode::MarshallingError, received);
                return Ok(Next::Continue);
            }
        };
        if self.closing {
            return Ok(Next::Continue);
        }
        if self.read_only {
            if let Some(next) = self.read_only_filter(&header, &request, received) {
                return Ok(next);
            }
        }
        let pending = if request::is_write(&request)
            || request::is_replicated_reconfig(&request, self.shared.config())
        {
            if matches!(request, Request::CloseSession) {
                self.closing = true;
            }
            Pending::Write {
                xid: header.xid,
                reconfig: matches!(request, Request::Reconfig(_)),
                request: Some(request),
                proposed: false,
                proposed_at: None,
                received,
            }
        } else if matches!(request, Request::Sync(_)) && self.shared.config().is_ensemble() {
            Pending::Sync {
                header,
                request,
                started: None,
                received,
            }
        } else {
            Pending::Local {
                header,
                request,
                received,
            }
        };
        self.enqueue(pending);
        Ok(self.pump())
    }

    /// ZooKeeper's `ReadOnlyRequestProcessor`: on a read-only connection, state-changing
    /// requests, `sync` and `reconfig` are answered NotReadOnly in their turn; closeSession
    /// ends the local session here and closes. `None` lets the request through (reads,
    /// multiRead, watches, auth, ping).
    fn read_only_filter(
        &mut self,
        header: &RequestHeader,
        request: &Request,
        received: Instant,
    ) -> Option<Next> {
        let header = RequestHeader {
            xid: header.xid,
            op_type: header.op_type,
        };
        match request {
            Request::CloseSession => {
                self.closing = true;
                self.conns.lock().read_only.remove_session(self.session_id);
                self.enqueue(Pending::Local {
                    header,
                    request: Request::Ping,
                    received,
                });
                self.pump();
                Some(Next::CloseAfterFlush)
            }
            Request::Sync(_) | Request::Reconfig(_) => {
                self.queue_local_error(header, ErrorCode::NotReadOnly, received);
                Some(Next::Continue)
            }
            other if request::is_write(other) => {
                self.queue_local_error(header, ErrorCode::NotReadOnly, received);
                Some(Next::Continue)
            }
            _ => None,
        }
    }

    /// Adds a request to the pending queue and to the server-wide outstanding count; every
    /// request leaves both through `dequeue` or, unanswered, when the connection ends.
    fn enqueue(&mut self, pending: Pending) {
        self.shared
            .stats()
            .outstanding
            .fetch_add(1, Ordering::Relaxed);
        self.queue.push_back(pending);
    }

    fn dequeue(&mut self) -> Option<Pending> {
        let pending = self.queue.pop_front()?;
        self.shared
            .stats()
            .outstanding
            .fetch_sub(1, Ordering::Relaxed);
        Some(pending)
    }

    fn queue_local_error(&mut self, header: RequestHeader, code: ErrorCode, received: Instant) {
        self.enqueue(Pending::Failed {
            xid: header.xid,
            code,
            received,
        });
        self.pump();
    }

    /// Completes what can complete, in order: runs reads that are no longer behind a write,
    /// and proposes writes that are no longer behind a read.
    fn pump(&mut self) -> Next {
        let mut next = Next::Continue;
        loop {
            match self.queue.front() {
                None => return next,
                Some(Pending::Write { .. }) => {
                    self.propose_leading_writes();
                    return next;
                }
                Some(Pending::Sync { started: None, .. }) => {
                    self.start_sync();
                    return next;
                }
                Some(Pending::Sync { .. }) => return next,
                Some(Pending::Failed { .. }) => {
                    if let Some(Pending::Failed {
                        xid,
                        code,
                        received,
                    }) = self.dequeue()
                    {
                        let zxid = self.shared.last_zxid();
                        self.write_reply(xid, zxid, &Err(code), received);
                    }
                }
                Some(Pending::Local { .. }) => {
                    let Some(Pending::Local {
                        header,
                        request,
                        received,
                    }) = self.dequeue()
                    else {
                        return next;
                    };
                    if let Next::CloseAfterFlush = self.run_local(header, request, received) {
                        next = Next::CloseAfterFlush;
                    }
                }
            }
        }
    }

    /// Proposes every write at the head of the queue up to the first local request.
    fn propose_leading_writes(&mut self) {
        let origin = self.origin(0);
        let mut raft_down = false;
        for pending in self.queue.iter_mut() {
            match pending {
                Pending::Local { .. } | Pending::Failed { .. } | Pending::Sync { .. } => break,
                Pending::Write {
                    xid,
                    request,
                    proposed,
                    proposed_at,
                    reconfig,
                    ..
                } => {
                    // Taken, not cloned: the entry is the only copy of the body from now on.
                    let Some(request) = request.take() else {
                        continue;
                    };
                    *proposed = true;
                    *proposed_at = Some(tokio::time::Instant::now());
                    self.in_doubt.fetch_add(1, Ordering::AcqRel);
                    if *reconfig {
                        self.awaiting_log.fetch_add(1, Ordering::AcqRel);
                    }
                    let body = match request {
                        Request::CloseSession => TxnBody::CloseSession {
                            session_id: self.session_id,
                        },
                        other => TxnBody::Request(other),
                    };
                    let txn = Txn::new(
                        Origin {
                            xid: *xid,
                            ..origin
                        },
                        self.session_id,
                        self.auth.clone(),
                        body,
                    );
                    if let Err(error) = self.raft.propose(txn.encode()) {
                        // Debug only: the raft thread logs a full disk or a fatal error once.
                        debug!(%error, "write refused; dropping the connection");
                        raft_down = true;
                    }
                }
            }
        }
        if raft_down {
            warn!("raft is not running; dropping the connection");
            self.close.cancel();
        }
    }

    /// Starts the ReadIndex barrier of the `sync` at the head of the queue.
    fn start_sync(&mut self) {
        let Some(Pending::Sync { started, .. }) = self.queue.front_mut() else {
            return;
        };
        *started = Some(tokio::time::Instant::now());
        // Test-only broken build (issue 9: the fault suite's checker must catch it): with
        // `FAILPOINTS=sync-skip-barrier=return` the barrier is skipped and `sync` passes at
        // once at this server's own applied index, so a follower answers sync+read from
        // whatever it has applied: not linearizable. Compiled only with the `failpoints`
        // feature (the macro is empty otherwise).
        crate::failpoint!("sync-skip-barrier", |_| {
            let (tx, rx) = oneshot::channel();
            // The receiver is held just below; a send to it cannot fail.
            let _ = tx.send(self.raft.applied_index());
            self.in_doubt.fetch_add(1, Ordering::AcqRel);
            self.sync_wait = Some(rx);
        });
        match self.raft.read_barrier().wait() {
            Ok(rx) => {
                self.in_doubt.fetch_add(1, Ordering::AcqRel);
                self.sync_wait = Some(rx);
            }
            Err(error) => {
                warn!(%error, "cannot start a sync barrier; dropping the connection");
                self.close.cancel();
            }
        }
    }

    /// The head `sync`'s barrier passed: everything committed before it is applied here, so
    /// the local answer (last applied zxid) is linearizable. Then the queue moves on.
    fn finish_sync(&mut self) -> Next {
        self.sync_wait = None;
        self.in_doubt.fetch_sub(1, Ordering::AcqRel);
        let Some(Pending::Sync {
            header,
            request,
            received,
            ..
        }) = self.dequeue()
        else {
            return Next::Continue;
        };
        let next = self.run_local(header, request, received);
        match self.pump() {
            Next::CloseAfterFlush => Next::CloseAfterFlush,
            Next::Continue => next,
        }
    }

    /// When the oldest write or sync in flight must have been answered (ensemble only).
    fn op_deadline(&self) -> Option<tokio::time::Instant> {
        let mut limit = self.op_timeout(self.timeout_ms)?;
        let since = match self.queue.front()? {
            Pending::Write {
                proposed_at: Some(at),
                reconfig,
                ..
            } => {
                if *reconfig {
                    // The leader answers NewConfigNoQuorum once the catch-up timeout passed.
                    limit = self.shared.config().catch_up_timeout() + limit;
                }
                *at
            }
            Pending::Sync {
                started: Some(at), ..
            } => *at,
            _ => return None,
        };
        Some(since + limit)
    }

    /// Handles a message from the state machine or another connection.
    fn on_outbound(&mut self, message: Outbound) -> Next {
        match message {
            Outbound::Event { frame, .. } => {
                // Already charged by the sender; it moves from the channel to `out`.
                self.out.extend_from_slice(&frame);
                self.count_sent();
                Next::Continue
            }
            Outbound::Reply { xid, frame } => {
                let Some(Pending::Write {
                    xid: expected,
                    received,
                    proposed: true,
                    reconfig,
                    ..
                }) = self.queue.front()
                else {
                    self.budget.release(frame.len());
                    warn!(
                        xid,
                        "reply for a write that is not pending; dropping the connection"
                    );
                    return Next::CloseAfterFlush;
                };
                if *expected != xid {
                    self.budget.release(frame.len());
                    warn!(
                        xid,
                        expected, "write replies out of order; dropping the connection"
                    );
                    return Next::CloseAfterFlush;
                }
                let received = *received;
                if *reconfig {
                    self.awaiting_log.fetch_sub(1, Ordering::AcqRel);
                }
                self.dequeue();
                self.in_doubt.fetch_sub(1, Ordering::AcqRel);
                self.out.extend_from_slice(&frame);
                self.count_sent();
                self.shared.stats().record_latency(received.elapsed());
                let next = self.pump();
                if self.closing && self.queue.is_empty() {
                    return Next::CloseAfterFlush;
                }
                next
            }
            Outbound::SessionCreated { .. } | Outbound::SessionReattached { .. } => {
                self.budget.release(message.charge());
                Next::Continue
            }
        }
    }

    fn run_local(&mut self, header: RequestHeader, request: Request, received: Instant) -> Next {
        let mut ctx = request::LocalContext {
            shared: &self.shared,
            conns: &self.conns,
            conn_id: self.conn_id,
            session_id: self.session_id,
            auth: &mut self.auth,
            events: Vec::new(),
            sasl: &mut self.sasl,
        };
        let outcome = request::execute_local(&mut ctx, &request);
        let events = std::mem::take(&mut ctx.events);
        // The reply must follow exactly the events of changes the read could see (zxid up to
        // the one it read at) and precede the events of later changes: a client registers a
        // watch when the reply arrives, and an event that overtook that reply would be lost.
        let mut later = Vec::new();
        while let Ok(message) = self.rx.try_recv() {
            match message {
                Outbound::Event { zxid, frame } if zxid <= outcome.zxid => {
                    self.out.extend_from_slice(&frame);
                    self.count_sent();
                }
                other => later.push(other),
            }
        }
        // Events SetWatches raised at once, against the state it read.
        for event in events {
            self.write_event(-1, &event);
        }
        // ZooKeeper echoes the request's xid, also for ping (-2), auth (-4) and setWatches (-8).
        let xid = header.xid;
        let zxid = outcome.zxid;
        match (&outcome.result, &outcome.error_body) {
            (Err(code), Some(body)) => self.write_error_with_body(xid, *code, body, received),
            _ => self.write_reply(xid, zxid, &outcome.result, received),
        }
        for message in later {
            match message {
                Outbound::Event { frame, .. } => {
                    self.out.extend_from_slice(&frame);
                    self.count_sent();
                }
                other => {
                    self.budget.release(other.charge());
                    warn!(?other, "unexpected message while no write is pending");
                }
            }
        }
        if outcome.close {
            Next::CloseAfterFlush
        } else {
            Next::Continue
        }
    }

    fn count_sent(&self) {
        self.shared
            .stats()
            .packets_sent
            .fetch_add(1, Ordering::Relaxed);
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
    }

    fn write_event(&mut self, zxid: i64, event: &WatcherEvent) {
        let header = ReplyHeader {
            xid: xids::NOTIFICATION,
            zxid,
            err: 0,
        };
        self.push_local(|out| {
            header.write(out);
            event.write(out);
        });
        self.count_sent();
    }

    /// An error header (zxid 0) followed by a body, as ZooKeeper answers a failed SASL step.
    fn write_error_with_body(
        &mut self,
        xid: i32,
        code: ErrorCode,
        body: &Response,
        received: Instant,
    ) {
        let header = ReplyHeader {
            xid,
            zxid: 0,
            err: code.wire(),
        };
        write_frame(&mut self.out, |out| {
            header.write(out);
            body.write(out);
        });
        self.count_sent();
        self.shared.stats().record_latency(received.elapsed());
    }

    fn write_reply(
        &mut self,
        xid: i32,
        zxid: i64,
        result: &Result<Response, ErrorCode>,
        received: Instant,
    ) {
        let (err, body) = match result {
            Ok(response) => (0, response),
            Err(code) => (code.wire(), &Response::Empty),
        };
        let header = ReplyHeader { xid, zxid, err };
        self.push_local(|out| encode_reply(&header, body, out));
        self.count_sent();
        self.shared.stats().record_latency(received.elapsed());
    }
}

/// Waits for the running sync barrier, or forever without one (the arm is disabled then).
async fn wait_sync(
    wait: &mut Option<oneshot::Receiver<u64>>,
) -> Result<u64, oneshot::error::RecvError> {
    match wait {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

/// How long a handshake may wait for this server to catch up (a resumed session it does not
/// know yet, a client that has seen a later zxid): min(session timeout / 3, 2 s).
fn resume_grace(timeout_ms: i32) -> Duration {
    Duration::from_millis((u64::try_from(timeout_ms).unwrap_or(0) / 3).min(2000))
}

/// Sleeps until `deadline`, or forever without one (the arm is disabled then anyway).
async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
