//! One ZooKeeper client session over TCP, driven by hand: the handshake, pipelined requests
//! (replies come back in request order, as ZooKeeper guarantees per session), notifications.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::{FutureExt, StreamExt};
use rookery_protocol::codec::write_frame;
use rookery_protocol::{
    ConnectRequest, ConnectResponse, ErrorCode, Frame, FrameCodec, OpCode, Reader, Record,
    ReplyHeader, Request, Response,
};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant as TokioInstant;
use tokio_util::codec::FramedRead;

/// Frames larger than jute.maxbuffer are accepted on the client side: a benchmark should
/// report a wide getChildren, not die on it.
const MAX_FRAME: usize = 64 << 20;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// ReplyHeader: xid (4), zxid (8), err (4).
const REPLY_HEADER_LEN: usize = 16;

pub fn other<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

/// A reply or notification: its header and the undecoded body.
pub struct Reply {
    pub header: ReplyHeader,
    pub body: BytesMut,
}

impl Reply {
    /// Decodes the body of a successful reply to a request of opcode `op`, rejecting leftovers.
    pub fn decode(&self, op: OpCode) -> Result<Response, String> {
        let mut input = Reader::new(&self.body);
        let resp = Response::read(op, &mut input).map_err(|e| format!("{op:?} reply: {e}"))?;
        input.finish().map_err(|e| format!("{op:?} reply: {e}"))?;
        Ok(resp)
    }
}

pub struct Conn {
    rd: FramedRead<OwnedReadHalf, FrameCodec>,
    wr: OwnedWriteHalf,
    wbuf: BytesMut,
    next_xid: i32,
}

impl Conn {
    pub async fn connect(addr: &str, session_timeout_ms: i32) -> io::Result<Conn> {
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            Self::connect_inner(addr, session_timeout_ms),
        )
        .await
        .map_err(|_| other(format!("connect to {addr}: timed out")))?
        .map_err(|e| io::Error::new(e.kind(), format!("connect to {addr}: {e}")))
    }

    async fn connect_inner(addr: &str, session_timeout_ms: i32) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, mut wr) = stream.into_split();
        let mut buf = BytesMut::with_capacity(64);
        write_frame(&mut buf, |out| {
            ConnectRequest {
                protocol_version: 0,
                last_zxid_seen: 0,
                time_out: session_timeout_ms,
                session_id: 0,
                passwd: vec![0; 16],
                read_only: Some(false),
            }
            .write(out)
        });
        wr.write_all(&buf).await?;
        let mut rd = FramedRead::new(r, FrameCodec::client(MAX_FRAME));
        let packet = match rd.next().await {
            Some(Ok(Frame::Packet(p))) => p,
            Some(Ok(Frame::FourLetterWord(_))) => return Err(other("unexpected four-letter word")),
            Some(Err(e)) => return Err(e),
            None => return Err(other("server closed the connection during the handshake")),
        };
        let resp = ConnectResponse::from_bytes(&packet).map_err(other)?;
        if resp.session_id == 0 || resp.time_out <= 0 {
            return Err(other("server refused the session"));
        }
        buf.clear();
        Ok(Conn {
            rd,
            wr,
            wbuf: buf,
            next_xid: 1,
        })
    }

    /// Encodes a request into the write buffer; returns its xid. Nothing is sent before `flush`.
    pub fn queue(&mut self, req: &Request) -> i32 {
        let xid = self.next_xid;
        self.next_xid = self.next_xid.wrapping_add(1).max(1);
        write_frame(&mut self.wbuf, |out| req.encode_packet(xid, out));
        xid
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.wr.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    fn parse(frame: Option<io::Result<Frame>>) -> io::Result<Reply> {
        match frame {
            Some(Ok(Frame::Packet(mut p))) => {
                if p.len() < REPLY_HEADER_LEN {
                    return Err(other(format!("short reply of {} bytes", p.len())));
                }
                let header = ReplyHeader::read(&mut Reader::new(&p)).map_err(other)?;
                p.advance(REPLY_HEADER_LEN);
                Ok(Reply { header, body: p })
            }
            Some(Ok(Frame::FourLetterWord(_))) => Err(other("unexpected four-letter word")),
            Some(Err(e)) => Err(e),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            )),
        }
    }

    /// The next reply or notification, failing once `deadline` passes.
    pub async fn recv_until(&mut self, deadline: std::time::Instant) -> io::Result<Reply> {
        match tokio::time::timeout_at(TokioInstant::from_std(deadline), self.rd.next()).await {
            Ok(frame) => Self::parse(frame),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "timed out waiting for a reply",
            )),
        }
    }

    pub async fn recv(&mut self) -> io::Result<Reply> {
        Self::parse(self.rd.next().await)
    }

    /// A reply that is already buffered or readable without waiting.
    pub fn try_recv(&mut self) -> Option<io::Result<Reply>> {
        self.rd.next().now_or_never().map(Self::parse)
    }

    /// Sends one request and waits for its reply (skipping notifications). Returns the error
    /// code and, on success, the decoded body.
    pub async fn call(&mut self, req: &Request) -> io::Result<(i32, Option<Response>)> {
        let xid = self.queue(req);
        self.flush().await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let reply = self.recv_until(deadline).await?;
            if reply.header.xid < 0 {
                continue;
            }
            if reply.header.xid != xid {
                return Err(other(format!(
                    "reply xid {} while waiting for {xid}",
                    reply.header.xid
                )));
            }
            if reply.header.err != 0 {
                return Ok((reply.header.err, None));
            }
            return Ok((0, Some(reply.decode(req.op_code()).map_err(other)?)));
        }
    }

    /// Sends requests with up to `window` in flight; any error code outside `tolerated` fails.
    pub async fn batch(
        &mut self,
        reqs: impl IntoIterator<Item = Request>,
        window: usize,
        tolerated: &[ErrorCode],
    ) -> io::Result<Vec<(Request, i32)>> {
        let mut reqs = reqs.into_iter();
        let mut inflight = std::collections::VecDeque::new();
        let mut results = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            while inflight.len() < window.max(1) {
                match reqs.next() {
                    Some(req) => {
                        let xid = self.queue(&req);
                        inflight.push_back((xid, req));
                    }
                    None => break,
                }
            }
            self.flush().await?;
            let Some((xid, _)) = inflight.front() else {
                return Ok(results);
            };
            let xid = *xid;
            let reply = self.recv_until(deadline).await?;
            if reply.header.xid < 0 {
                continue;
            }
            if reply.header.xid != xid {
                return Err(other(format!(
                    "reply xid {} while waiting for {xid}",
                    reply.header.xid
                )));
            }
            let Some((_, req)) = inflight.pop_front() else {
                return Err(other(format!("reply xid {xid} with nothing in flight")));
            };
            let err = reply.header.err;
            if err != 0 && !tolerated.iter().any(|t| t.wire() == err) {
                return Err(other(format!(
                    "{:?} {}: {}",
                    req.op_code(),
                    req.path().unwrap_or(""),
                    describe_err(err)
                )));
            }
            results.push((req, err));
        }
    }

    /// Closes the session politely (closeSession), waiting briefly for the reply.
    pub async fn close(mut self) {
        let xid = self.queue(&Request::CloseSession);
        if self.flush().await.is_err() {
            return;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while let Ok(reply) = self.recv_until(deadline).await {
            if reply.header.xid == xid {
                break;
            }
        }
    }
}

pub fn describe_err(err: i32) -> String {
    match ErrorCode::from_wire(err) {
        Some(code) => code.to_string(),
        None => format!("error {err}"),
    }
}
