//! rookery: a ZooKeeper-compatible coordination service.
//!
//! The modules follow the data path: `server` (accept, frame, session handshake, requests) →
//! `txn` (the log entry) → `raft` + `storage` (the replicated, durable log) → `state` (apply) →
//! `tree` (the znodes) → `watch` (who hears about a change). `peer` carries Raft messages
//! between the servers of an ensemble.

pub mod config;
pub mod peer;
pub mod raft;
pub mod server;
pub mod session;
pub mod state;
pub mod storage;
pub mod tree;
pub mod txn;
pub mod watch;
