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
pub use snapshot::{
    verify_file, write_file, SnapshotDir, SnapshotError, SnapshotFile, SnapshotHeader,
    SnapshotReceiver, SnapshotRef,
};

pub use dirs::{create_dir_durable, fsync_dir};

/// Directory entries made durable.
mod dirs {
    use std::fs::File;
    use std::io;
    use std::path::{Path, PathBuf};

    /// fsyncs a directory, making the names created, renamed or removed in it durable. Without
    /// it a power failure can lose a file whose own contents were fsynced (e.g. `data.mdb` of a
    /// first start, and with it every write acknowledged since).
    pub fn fsync_dir(dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    /// `create_dir_all`, then fsyncs every directory it created and the parent of each, so the
    /// whole new path survives a power failure.
    pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
        let mut missing: Vec<PathBuf> = Vec::new();
        let mut cur = Some(dir);
        // Bounded by the number of path components.
        while let Some(p) = cur {
            if p.as_os_str().is_empty() || p.is_dir() {
                break;
            }
            missing.push(p.to_path_buf());
            cur = p.parent();
        }
        std::fs::create_dir_all(dir)?;
        // Deepest first: a child's entry lives in its parent.
        for p in &missing {
            fsync_dir(p)?;
            match p.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => fsync_dir(parent)?,
                _ => fsync_dir(Path::new("."))?,
            }
        }
        Ok(())
    }
}

/// Whether an I/O error means "no space left" (a full disk or quota), which goes away once space
/// is freed, as opposed to a fault.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// The error a `return(...)` failpoint injects: `enospc` or `edquot` for a full disk,
/// anything else (or nothing) for EIO.
#[cfg(feature = "failpoints")]
pub(crate) fn injected_io_error(arg: Option<String>) -> std::io::Error {
    let code = match arg.as_deref() {
        Some("enospc") => libc::ENOSPC,
        Some("edquot") => libc::EDQUOT,
        _ => libc::EIO,
    };
    std::io::Error::from_raw_os_error(code)
}
