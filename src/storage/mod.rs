//! Durable storage owned by the raft thread.
//!
//! * [`raft_log`]: the Raft log, hard state and conf state in LMDB (implements `raft::Storage`).
//! * [`snapshot`]: state-machine snapshot files with a checksummed header.
//!
//! Nothing here is thread-safe on purpose: both are used only from the dedicated raft thread,
//! which is what lets one LMDB write transaction cover one whole `Ready` (group commit).

pub mod raft_log;
pub mod snapshot;

pub use raft_log::{LmdbStorage, LogError, StorageStats};
pub use snapshot::{SnapshotDir, SnapshotError, SnapshotFile};
