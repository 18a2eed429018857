//! Async ZooKeeper-protocol client (work in progress).
