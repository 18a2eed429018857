//! rookery: a ZooKeeper-compatible coordination service.
//!
//! The modules follow the data path: `server` (accept, frame, session handshake, requests) →
//! `txn` (the log entry) → `raft` + `storage` (the replicated, durable log) → `state` (apply) →
//! `tree` (the znodes) → `watch` (who hears about a change). `peer` carries Raft messages
//! between the servers of an ensemble.

/// A named failpoint (the `fail` crate) where the raft thread persists, sends and applies,
/// and where storage writes and syncs. With the `failpoints` feature the `FAILPOINTS`
/// environment variable configures them (panic, or return an injected error); without it the
/// macro expands to nothing, so the normal build has no failpoint code.
#[cfg(feature = "failpoints")]
#[macro_export]
#[doc(hidden)]
macro_rules! failpoint {
    ($name:literal) => {
        fail::fail_point!($name)
    };
    ($name:literal, $on_return:expr) => {
        fail::fail_point!($name, $on_return)
    };
}

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[macro_export]
#[doc(hidden)]
macro_rules! failpoint {
    ($name:literal) => {};
    ($name:literal, $on_return:expr) => {};
}

pub mod config;
pub mod histogram;
pub mod migrate;
pub mod peer;
pub mod raft;
pub mod reconfig;
pub mod server;
pub mod session;
pub mod state;
pub mod storage;
pub mod tree;
pub mod txn;
pub mod watch;
