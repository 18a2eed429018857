//! A small tmpfs under every member's data directory, so that the nemesis can fill one
//! member's disk (`Fault::DiskFull`) and free it again. Root only: where `mount` is refused the
//! suite runs without disk faults and says so. tmpfs ignores fsync, so this exercises ENOSPC
//! handling, not power-loss durability (SIGKILL keeps the page cache, so kill faults are
//! unaffected).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::cluster::Cluster;

/// Size of each member's tmpfs: room for the suite's small trees, logs and two snapshots.
pub const SIZE: &str = "256m";

/// The name of the file that fills a disk.
const BALLAST: &str = "ballast.fault";

pub struct Disks {
    /// Member i's data directory, a tmpfs mount point.
    mounts: Vec<PathBuf>,
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether tmpfs mounts work here (root, and a kernel that allows it).
pub fn available() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let p = dir.path().to_string_lossy().to_string();
    run("mount", &["-t", "tmpfs", "-o", "size=1m", "tmpfs", &p])?;
    run("umount", &[&p])
}

impl Disks {
    /// Moves member `i`'s data onto a fresh tmpfs mounted at its data directory. The member
    /// must be stopped.
    pub fn mount_member(&mut self, c: &Cluster, i: usize) -> Result<(), String> {
        let data = c.data_dir(i);
        let aside = data.with_extension("disk-move");
        std::fs::rename(&data, &aside).map_err(|e| format!("move {}: {e}", data.display()))?;
        std::fs::create_dir(&data).map_err(|e| e.to_string())?;
        let d = data.to_string_lossy().to_string();
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={SIZE}"), "tmpfs", &d],
        )?;
        self.mounts.push(data.clone());
        let from = format!("{}/.", aside.display());
        run("cp", &["-a", &from, &d])?;
        std::fs::remove_dir_all(&aside).map_err(|e| e.to_string())?;
        Ok(())
    }

    pub fn new() -> Disks {
        Disks { mounts: vec![] }
    }

    fn mount_of(&self, c: &Cluster, i: usize) -> Option<PathBuf> {
        let data = c.data_dir(i);
        self.mounts.iter().find(|m| **m == data).cloned()
    }

    /// Fills member `i`'s disk: a ballast file grows until the tmpfs is full. Returns the bytes
    /// written (0 if the member has no tmpfs).
    pub fn fill(&self, c: &Cluster, i: usize) -> u64 {
        let Some(mount) = self.mount_of(c, i) else {
            return 0;
        };
        fill_dir(&mount)
    }

    /// Frees member `i`'s disk again.
    pub fn free(&self, c: &Cluster, i: usize) {
        if let Some(mount) = self.mount_of(c, i) {
            let _ = std::fs::remove_file(mount.join(BALLAST));
        }
    }

    /// Frees every disk.
    pub fn free_all(&self) {
        for m in &self.mounts {
            let _ = std::fs::remove_file(m.join(BALLAST));
        }
    }
}

fn fill_dir(dir: &Path) -> u64 {
    let Ok(mut f) = std::fs::File::create(dir.join(BALLAST)) else {
        return 0;
    };
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    // Bounded by the tmpfs size; a write error (ENOSPC) ends it.
    while written < (1u64 << 30) {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    written
}

impl Drop for Disks {
    fn drop(&mut self) {
        // Lazily: a member may still have files open; the memory goes when it exits.
        for m in &self.mounts {
            let _ = run("umount", &["-l", &m.to_string_lossy()]);
        }
    }
}
