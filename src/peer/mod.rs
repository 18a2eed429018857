//! Server-to-server transport for the ensemble: Raft messages (and, next, session touches)
//! over TCP between the servers of `server.N`.
//!
//! * **Framing** ([`frame`]): `u32 len | u8 kind | payload | u32 crc32`, capped per kind.
//! * **Handshake**: the dialer sends [`frame::Hello`] `{magic "RKYPEER1", version, cluster_id,
//!   from, to}`; the acceptor refuses (with a log line on both sides) another cluster, a `to`
//!   that is not itself, or a `from` that is not a member.
//! * **One-way connections**: A dials B to send A→B and B dials A for B→A, so there are no
//!   dial races and each side's writer owns its socket.
//! * **Never blocking Raft**: `PeerTransport::send` (on the raft thread) only appends to a
//!   bounded per-peer queue (count *and* bytes). A full queue, or no connection, drops the
//!   message and calls `report_unreachable`; a dropped MsgSnapshot is reported as
//!   `SnapshotStatus::Failure`. A writer task per peer drains the whole queue into one write
//!   (TCP_NODELAY).
//! * **Snapshots as files** ([`PeerNetwork::serve_snapshots`]): a MsgSnapshot carries only a
//!   descriptor of the leader's snapshot file. The transport streams the file on a connection
//!   and task of its own (at most `snapshot_senders` at once, one per peer): a
//!   [`FrameKind::SnapHeader`] (handshake + descriptor + the MsgSnapshot), 1 MiB
//!   [`FrameKind::SnapChunk`]s (offset-checked, each frame crc'd), a [`FrameKind::SnapDone`]
//!   with the whole-file crc. The follower fsyncs and re-verifies the file before it steps the
//!   MsgSnapshot and answers; the leader reports `Finish` on that answer, `Failure` otherwise.
//! * **At most once**: when a connection dies, what was queued for it is dropped, never
//!   re-sent on the next connection (a replayed MsgPropose is a duplicate client write; Raft
//!   itself retransmits what it still needs). Reconnects back off from 50 ms to 2 s, jittered.
//!
//! Wiring (the server):
//! ```text
//! let inbound = Arc::new(RaftInbound::new(|from, touches| tracker.touched(from, touches)));
//! let net = PeerNetwork::start(peer_config, TcpListener::bind(my_peer_addr).await?, inbound.clone())?;
//! let (raft, join) = RaftHandle::start_with_transport(opts, sm, Box::new(net.transport()))?;
//! net.attach(raft.clone());
//! inbound.attach(raft.clone());
//! ```
#![deny(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod frame;
mod net;

#[cfg(test)]
mod tests;

pub use frame::{FrameError, FrameKind, SessionTouch};
pub use net::{
    Feedback, Inbound, PeerConfig, PeerLimits, PeerNetwork, PeerStats, PeerTransport, RaftInbound,
};

/// Why a peer operation failed. Connection-level errors end that connection (the dialer
/// reconnects); queueing errors mean the item was dropped.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Socket error (connect, read, write).
    #[error("i/o: {0}")]
    Io(#[source] std::io::Error),
    /// The TLS handshake with a peer failed (`sslQuorum`): a bad, untrusted or missing
    /// certificate on either side.
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    /// The byte stream broke the framing rules.
    #[error("framing: {0}")]
    Frame(#[from] FrameError),
    /// The acceptor refused our handshake, saying why.
    #[error("handshake refused: {0}")]
    Refused(String),
    /// Connect or handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// A frame kind that is not allowed at this point of the protocol.
    #[error("unexpected {0:?} frame")]
    Unexpected(FrameKind),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// A newer connection from the same peer replaced this one.
    #[error("replaced by a newer connection from the same peer")]
    Replaced,
    /// A write stalled past `PeerLimits::write_timeout`.
    #[error("write timed out (peer stalled)")]
    WriteTimeout,
    /// No such peer in the address book.
    #[error("unknown peer {0}")]
    UnknownPeer(u64),
    /// No live connection to the peer; the item was dropped.
    #[error("not connected to peer {0}")]
    NotConnected(u64),
    /// The peer's queue is full; the item was dropped.
    #[error("queue to peer {0} is full")]
    QueueFull(u64),
    /// A message could not be serialized.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// A Raft message whose from/to disagree with the handshake.
    #[error("misaddressed raft message (from {from} to {to})")]
    Misaddressed {
        /// The message's `from`.
        from: u64,
        /// The message's `to`.
        to: u64,
    },
    /// [`PeerNetwork::start`] was called outside a tokio runtime.
    #[error("the peer network must be started inside a tokio runtime")]
    NoRuntime,
}
