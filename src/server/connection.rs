//! One client connection: the handshake, then requests in, replies and events out.
//!
//! Ordering rules (ZooKeeper's CommitProcessor): a session's requests complete in the order
//! sent. Writes go to Raft; a read runs against the local tree only once every earlier write of
//! the session has been applied, and a write is proposed only once every earlier read has run,
//! so no read observes a later write of its own session. Replies and events leave in the order
//! the state machine produced them, so an event always precedes the reply of a later read.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::{FutureExt, StreamExt};
use rand::RngCore;
use rookery_protocol::codec::write_frame;
use rookery_protocol::{
    encode_reply, xids, ConnectRequest, ConnectResponse, DecodeError, ErrorCode, Frame, FrameCodec,
    Id, Reader, Record, ReplyHeader, Request, RequestHeader, Response, WatcherEvent,
};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn, Instrument};

use crate::raft::RaftHandle;
use crate::server::{admin, request};
use crate::state::{ConnHandle, Outbound, Shared};
use crate::txn::{Origin, Txn, TxnBody};

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed packet: {0}")]
    Malformed(#[from] DecodeError),
    #[error("{0}")]
    Refused(String),
}

/// A request waiting for its turn to complete.
#[derive(Debug)]
enum Pending {
    /// A write; `proposed` once it has gone to Raft (its reply then comes through the channel).
    Write {
        xid: i32,
        request: Request,
        proposed: bool,
        received: Instant,
    },
    /// A request answered with an error without running it (an undecodable body).
    Failed {
        xid: i32,
        code: ErrorCode,
        received: Instant,
    },
    /// Anything answered locally: reads, pings, auth, watch management.
    Local {
        header: RequestHeader,
        request: Request,
        received: Instant,
    },
}

/// What to do after handling a packet.
enum Next {
    Continue,
    /// Flush what is queued, then close (closeSession, unknown opcode, auth failure).
    CloseAfterFlush,
}

/// The per-connection task's state.
pub struct Connection {
    /// Unique per server boot; also the connection's watcher id.
    conn_id: u64,
    peer: SocketAddr,
    shared: Arc<Shared>,
    raft: RaftHandle,
    /// Inbound frames.
    reader: FramedRead<OwnedReadHalf, FrameCodec>,
    writer: OwnedWriteHalf,
    /// Replies and events encoded but not yet written: one syscall for many messages.
    out: BytesMut,
    /// Replies of writes and watch events, in the order the state machine produced them.
    rx: mpsc::UnboundedReceiver<Outbound>,
    tx: mpsc::UnboundedSender<Outbound>,
    session_id: i64,
    timeout_ms: i32,
    /// Authenticated ids: the client's IP, plus whatever addauth added.
    auth: Vec<Id>,
    /// Where this connection's SASL exchange stands.
    sasl: super::sasl::SaslState,
    /// Requests in arrival order that have not been answered yet.
    queue: VecDeque<Pending>,
    /// Set once the client has asked to close its session.
    closing: bool,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        shared: Arc<Shared>,
        raft: RaftHandle,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = stream.into_split();
        let max_frame = shared.config.jute_maxbuffer;
        let (tx, rx) = mpsc::unbounded_channel();
        Connection {
            conn_id: shared.next_conn_id(),
            peer,
            reader: FramedRead::new(read_half, FrameCodec::server(max_frame)),
            writer: write_half,
            out: BytesMut::with_capacity(4096),
            rx,
            tx,
            session_id: 0,
            timeout_ms: 0,
            auth: vec![Id {
                scheme: "ip".to_string(),
                id: peer.ip().to_string(),
            }],
            sasl: super::sasl::SaslState::default(),
            queue: VecDeque::new(),
            closing: false,
            shared,
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
            info!(%error, "connection closed");
        }
        let _ = self.writer.shutdown().await;
        // Writes still in flight will be applied, but nobody counts their replies any more.
        let in_flight = self
            .queue
            .iter()
            .filter(|p| matches!(p, Pending::Write { proposed: true, .. }))
            .count();
        self.shared
            .stats
            .outstanding
            .fetch_sub(in_flight as i64, Ordering::Relaxed);
        self.unregister();
    }

    async fn serve(&mut self, span: &tracing::Span) -> Result<(), ConnectionError> {
        let first = match self.next_frame().await? {
            Some(frame) => frame,
            None => return Ok(()),
        };
        let packet = match first {
            Frame::FourLetterWord(word) => {
                let text = admin::four_letter_word(&self.shared, &self.raft, word);
                self.writer.write_all(text.as_bytes()).await?;
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
        let last_zxid = self.shared.last_zxid.load(Ordering::Acquire);
        if request.last_zxid_seen > last_zxid {
            return Err(ConnectionError::Refused(format!(
                "client has seen zxid {:#x}, our last zxid is {:#x}",
                request.last_zxid_seen, last_zxid
            )));
        }
        let timeout_ms = self.shared.config.negotiate_timeout(request.time_out);
        self.register();
        let (session_id, passwd) = if request.session_id == 0 {
            match self.create_session(timeout_ms).await? {
                Some(created) => created,
                None => return Ok(false),
            }
        } else {
            let valid = {
                let state = self.shared.state.read();
                state
                    .sessions
                    .get(request.session_id)
                    .is_some_and(|info| info.passwd == request.passwd)
            };
            if !valid {
                info!(
                    session = format_args!("{:#x}", request.session_id),
                    "refusing to resume an unknown or expired session"
                );
                self.send_connect_response(&request, 0, 0, vec![0; 16])
                    .await?;
                return Ok(false);
            }
            self.shared
                .tracker
                .set_timeout(request.session_id, Duration::from_millis(timeout_ms as u64));
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

    async fn create_session(
        &mut self,
        timeout_ms: i32,
    ) -> Result<Option<(i64, Vec<u8>)>, ConnectionError> {
        let mut passwd = vec![0u8; 16];
        rand::rng().fill_bytes(&mut passwd);
        let txn = Txn {
            origin: self.origin(0),
            session_id: 0,
            time_ms: now_ms(),
            auth: Vec::new(),
            body: TxnBody::CreateSession { timeout_ms, passwd },
        };
        if let Err(e) = self.raft.propose(txn.encode()) {
            return Err(ConnectionError::Refused(format!(
                "cannot create a session: {e}"
            )));
        }
        loop {
            match self.rx.recv().await {
                Some(Outbound::SessionCreated {
                    session_id, passwd, ..
                }) => return Ok(Some((session_id, passwd))),
                Some(Outbound::Close) | None => return Ok(None),
                Some(_) => continue,
            }
        }
    }

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
            read_only: request.read_only.map(|_| false),
        };
        write_frame(&mut self.out, |out| response.write(out));
        self.flush().await
    }

    fn register(&self) {
        self.shared.conns.lock().by_id.insert(
            self.conn_id,
            ConnHandle {
                tx: self.tx.clone(),
                session_id: 0,
                peer: self.peer,
                auth: self.auth.clone(),
            },
        );
    }

    /// Binds the session to this connection, closing any older connection that carried it.
    fn attach_session(&self) {
        let mut conns = self.shared.conns.lock();
        if let Some(conn) = conns.by_id.get_mut(&self.conn_id) {
            conn.session_id = self.session_id;
        }
        if let Some(old) = conns.by_session.insert(self.session_id, self.conn_id) {
            if old != self.conn_id {
                conns.send(old, Outbound::Close);
            }
        }
    }

    fn unregister(&self) {
        {
            let mut conns = self.shared.conns.lock();
            conns.by_id.remove(&self.conn_id);
            if conns.by_session.get(&self.session_id) == Some(&self.conn_id) {
                conns.by_session.remove(&self.session_id);
            }
        }
        self.shared.watches.lock().remove_watcher(self.conn_id);
    }

    fn origin(&self, xid: i32) -> Origin {
        Origin {
            server_id: self.shared.config.server_id,
            conn_id: self.conn_id,
            xid,
        }
    }

    async fn main_loop(&mut self) -> Result<(), ConnectionError> {
        loop {
            let mut close = false;
            tokio::select! {
                frame = self.reader.next() => match frame {
                    None => return Ok(()),
                    Some(Err(error)) => return Err(ConnectionError::Io(error)),
                    Some(Ok(frame)) => {
                        if let Next::CloseAfterFlush = self.on_frame(frame)? {
                            close = true;
                        }
                        // Drain frames already buffered: pipelined writes share one proposal
                        // batch and one socket write.
                        while !close {
                            match self.reader.next().now_or_never() {
                                Some(Some(Ok(frame))) => {
                                    if let Next::CloseAfterFlush = self.on_frame(frame)? {
                                        close = true;
                                    }
                                }
                                Some(Some(Err(error))) => return Err(ConnectionError::Io(error)),
                                Some(None) => { close = true; }
                                None => break,
                            }
                        }
                    }
                },
                message = self.rx.recv() => match message {
                    None => return Ok(()),
                    Some(message) => {
                        if let Next::CloseAfterFlush = self.on_outbound(message) {
                            close = true;
                        }
                        while let Ok(message) = self.rx.try_recv() {
                            if let Next::CloseAfterFlush = self.on_outbound(message) {
                                close = true;
                            }
                        }
                    }
                },
                _ = self.shutdown.changed() => {
                    close = true;
                }
            }
            self.flush().await?;
            if close {
                return Ok(());
            }
        }
    }

    async fn flush(&mut self) -> Result<(), ConnectionError> {
        if !self.out.is_empty() {
            self.writer.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
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
        self.shared
            .stats
            .packets_received
            .fetch_add(1, Ordering::Relaxed);
        self.shared.tracker.touch(self.session_id);
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
        if request::is_write(&request) {
            if matches!(request, Request::CloseSession) {
                self.closing = true;
            }
            self.queue.push_back(Pending::Write {
                xid: header.xid,
                request,
                proposed: false,
                received,
            });
        } else {
            self.queue.push_back(Pending::Local {
                header,
                request,
                received,
            });
        }
        Ok(self.pump())
    }

    fn queue_local_error(&mut self, header: RequestHeader, code: ErrorCode, received: Instant) {
        self.queue.push_back(Pending::Failed {
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
            match self.queue.front_mut() {
                None => return next,
                Some(Pending::Write { .. }) => {
                    self.propose_leading_writes();
                    return next;
                }
                Some(Pending::Failed { .. }) => {
                    if let Some(Pending::Failed {
                        xid,
                        code,
                        received,
                    }) = self.queue.pop_front()
                    {
                        let zxid = self.shared.last_zxid.load(Ordering::Acquire);
                        self.write_reply(xid, zxid, &Err(code), received);
                    }
                }
                Some(Pending::Local { .. }) => {
                    let Some(Pending::Local {
                        header,
                        request,
                        received,
                    }) = self.queue.pop_front()
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
        let origin_server = self.shared.config.server_id;
        for pending in self.queue.iter_mut() {
            match pending {
                Pending::Local { .. } | Pending::Failed { .. } => break,
                Pending::Write {
                    xid,
                    request,
                    proposed,
                    ..
                } => {
                    if *proposed {
                        continue;
                    }
                    *proposed = true;
                    let body = match request {
                        Request::CloseSession => TxnBody::CloseSession {
                            session_id: self.session_id,
                        },
                        other => TxnBody::Request(other.clone()),
                    };
                    let txn = Txn {
                        origin: Origin {
                            server_id: origin_server,
                            conn_id: self.conn_id,
                            xid: *xid,
                        },
                        session_id: self.session_id,
                        time_ms: now_ms(),
                        auth: self.auth.clone(),
                        body,
                    };
                    self.shared
                        .stats
                        .outstanding
                        .fetch_add(1, Ordering::Relaxed);
                    if let Err(error) = self.raft.propose(txn.encode()) {
                        // Debug only: the raft thread logs a full disk or a fatal error once.
                        debug!(%error, "write refused; dropping the connection");
                        let _ = self.tx.send(Outbound::Close);
                    }
                }
            }
        }
    }

    /// Handles a message from the state machine or another connection.
    fn on_outbound(&mut self, message: Outbound) -> Next {
        match message {
            Outbound::Event { zxid, event } => {
                self.write_event(zxid, &event);
                Next::Continue
            }
            Outbound::Reply { xid, zxid, result } => {
                let Some(Pending::Write {
                    xid: expected,
                    received,
                    proposed: true,
                    ..
                }) = self.queue.front()
                else {
                    warn!(
                        xid,
                        "reply for a write that is not pending; dropping the connection"
                    );
                    return Next::CloseAfterFlush;
                };
                if *expected != xid {
                    warn!(
                        xid,
                        expected, "write replies out of order; dropping the connection"
                    );
                    return Next::CloseAfterFlush;
                }
                let received = *received;
                self.queue.pop_front();
                self.shared
                    .stats
                    .outstanding
                    .fetch_sub(1, Ordering::Relaxed);
                self.write_reply(xid, zxid, &result, received);
                let next = self.pump();
                if self.closing && self.queue.is_empty() {
                    return Next::CloseAfterFlush;
                }
                next
            }
            Outbound::SessionCreated { .. } => Next::Continue,
            Outbound::Close => Next::CloseAfterFlush,
        }
    }

    fn run_local(&mut self, header: RequestHeader, request: Request, received: Instant) -> Next {
        let mut ctx = request::LocalContext {
            shared: &self.shared,
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
                Outbound::Event { zxid, event } if zxid <= outcome.zxid => {
                    self.write_event(zxid, &event)
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
                Outbound::Event { zxid, event } => self.write_event(zxid, &event),
                // Handled by the main loop, after what is queued now.
                Outbound::Close => {
                    let _ = self.tx.send(Outbound::Close);
                }
                other => warn!(?other, "unexpected message while no write is pending"),
            }
        }
        if outcome.close {
            Next::CloseAfterFlush
        } else {
            Next::Continue
        }
    }

    fn write_event(&mut self, zxid: i64, event: &WatcherEvent) {
        let header = ReplyHeader {
            xid: xids::NOTIFICATION,
            zxid,
            err: 0,
        };
        write_frame(&mut self.out, |out| {
            header.write(out);
            event.write(out);
        });
        self.shared
            .stats
            .packets_sent
            .fetch_add(1, Ordering::Relaxed);
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
        self.shared
            .stats
            .packets_sent
            .fetch_add(1, Ordering::Relaxed);
        self.shared.stats.record_latency(received.elapsed());
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
        write_frame(&mut self.out, |out| encode_reply(&header, body, out));
        self.shared
            .stats
            .packets_sent
            .fetch_add(1, Ordering::Relaxed);
        self.shared.stats.record_latency(received.elapsed());
    }
}

/// Wall-clock ms since the epoch, as entries carry it.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
