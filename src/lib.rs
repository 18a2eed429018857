//! rookery: a ZooKeeper-compatible coordination service.

pub mod watch;
