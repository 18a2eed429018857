//! Async ZooKeeper-protocol client for rookery (and any ZooKeeper 3.5+ server).
//!
//! One session task owns the socket; [`Client`] handles send it requests, matched to replies
//! by xid, so many requests can be in flight. The task reconnects on connection loss,
//! resuming the session on any server of the connection string and re-arming watches with
//! SetWatches2. Watches are values ([`OneshotWatcher`], [`PersistentWatcher`]), not callbacks.
//!
//! ```no_run
//! # async fn demo() -> rookery_client::Result<()> {
//! use rookery_client::{Client, CreateOptions};
//! let client = Client::connect("127.0.0.1:2181/app").await?;
//! client.create("/config", b"v1", &CreateOptions::persistent()).await?;
//! let (data, _stat, watcher) = client.get_data_w("/config").await?;
//! assert_eq!(data, b"v1");
//! client.set_data("/config", b"v2", None).await?;
//! let event = watcher.changed().await;
//! println!("{:?} on {}", event.event_type, event.path);
//! # Ok(()) }
//! ```

pub mod client;
pub mod connect_string;
pub mod error;
pub mod recipes;
mod session;
pub mod types;
pub mod watcher;

pub use client::{Client, ClientBuilder, CONFIG_NODE};
pub use connect_string::ConnectString;
pub use error::{Error, Result};
pub use session::SessionInfo;
pub use types::{
    acls, join_path, parent_path, validate_path, CreateOptions, Op, OpResult, ReadOp, ReadResult,
    SessionState, WatchedEvent,
};
pub use watcher::{OneshotWatcher, PersistentWatcher, StateEvents};

/// Protocol types callers need (Stat, ACL, modes, event types).
pub use rookery_protocol::{
    perms, Acl, AddWatchMode, ClientInfo, CreateMode, ErrorCode, EventType, Id, KeeperState, Stat,
    WatcherType,
};
