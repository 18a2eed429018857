//! rookery: a ZooKeeper-compatible coordination service.

pub mod watch;
pub mod raft;
pub mod storage;
