//! Migration between Apache ZooKeeper 3.8 and rookery.
//!
//! * [`zk_snapshot`]: ZooKeeper's snapshot files (`snapshot.<zxid>`, `FileSnap`): read with
//!   their Adler32 seal checked, and written for `export`.
//! * [`zk_txnlog`]: ZooKeeper's transaction logs (`log.<zxid>`, `FileTxnLog`): per-record
//!   Adler32, the preallocated zero tail and a torn last record, as ZooKeeper reads them.
//! * [`import`]: `rookery import zookeeper`: newest valid snapshot + every later
//!   transaction, replayed as `DataTree.processTxn` does, written as a rookery data dir.
//! * [`export`]: `rookery export zookeeper`: a rookery data dir as a ZooKeeper snapshot.
//! * [`live`]: `rookery import zookeeper --from ... --server ...`: a live copy through the
//!   client protocol, following changes with a persistent recursive watch.
//! * [`verify`]: compares a rookery server's tree with a ZooKeeper server's through the
//!   client protocol, node by node and Stat field by Stat field.
//!
//! ## zxids
//!
//! A rookery zxid is the Raft index of the entry that made the change (see
//! [`crate::tree::OpContext::zxid`]). An import writes the tree as a rookery snapshot at
//! index = ZooKeeper's last zxid (`epoch << 32 | counter`) and an LMDB log compacted through
//! that index, so every stored czxid/mzxid/pzxid keeps ZooKeeper's value and the first write
//! after the switch gets zxid `last + 1`: above everything a ZooKeeper client saw, so a
//! client reconnecting with its `lastZxidSeen` is not refused. The snapshot's Raft term is
//! ZooKeeper's epoch (at least 1).

pub mod export;
pub mod import;
pub mod live;
pub mod verify;
pub mod zk_snapshot;
pub mod zk_txnlog;

use std::path::PathBuf;

use rookery_protocol::{perms, Acl, DecodeError, Id, Reader};

/// Why a migration step failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A ZooKeeper file is not what its name says, or is damaged.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No snapshot in the ZooKeeper data dir passed its checks.
    #[error("no valid ZooKeeper snapshot in {dir} ({tried} tried)")]
    NoSnapshot {
        /// The directory searched.
        dir: PathBuf,
        /// How many candidate files were rejected.
        tried: usize,
    },
    /// The target exists and is not empty.
    #[error("refusing to write into {0}: it exists and is not empty")]
    TargetNotEmpty(PathBuf),
    /// Writing the rookery snapshot or log failed.
    #[error("writing the rookery data dir: {0}")]
    Rookery(String),
    /// A client-protocol step (verify, live copy) failed.
    #[error("{0}")]
    Client(String),
}

impl MigrateError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> MigrateError {
        let path = path.into();
        move |source| MigrateError::Io { path, source }
    }

    /// A damaged or foreign file.
    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        MigrateError::Corrupt {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// A client session to `hosts` with `auth` credentials (scheme, auth), for verify and the
/// live copy.
pub(crate) async fn connect_client(
    hosts: &str,
    auth: &[(String, Vec<u8>)],
) -> Result<rookery_client::Client, MigrateError> {
    let mut builder = rookery_client::Client::builder(hosts)
        .session_timeout(std::time::Duration::from_secs(30))
        .connect_timeout(std::time::Duration::from_secs(10));
    for (scheme, cred) in auth {
        builder = builder.auth(scheme.clone(), cred.clone());
    }
    builder
        .connect()
        .await
        .map_err(|e| MigrateError::Client(format!("connecting to {hosts}: {e}")))
}

/// The files in `dir` named `<prefix>.<hex zxid>`, by zxid, ascending.
pub(crate) fn list_zk_files(
    dir: &std::path::Path,
    prefix: &str,
) -> Result<Vec<(i64, PathBuf)>, MigrateError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(MigrateError::io(dir))? {
        let entry = entry.map_err(MigrateError::io(dir))?;
        let name = entry.file_name();
        if let Some(zxid) = name.to_str().and_then(|n| zxid_from_name(n, prefix)) {
            found.push((zxid, entry.path()));
        }
    }
    found.sort_by_key(|f| f.0);
    Ok(found)
}

/// `java.util.zip.Adler32`, which both ZooKeeper file formats use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Adler32 {
    /// Sum of the bytes plus one, mod 65521.
    a: u32,
    /// Sum of the running `a` values, mod 65521.
    b: u32,
}

impl Adler32 {
    /// The largest prime below 2^16.
    const MOD: u32 = 65521;
    /// Bytes that can be summed before `b` could overflow a u32.
    const NMAX: usize = 5552;

    pub(crate) fn new() -> Self {
        Adler32 { a: 1, b: 0 }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        for chunk in data.chunks(Self::NMAX) {
            for &byte in chunk {
                self.a += u32::from(byte);
                self.b += self.a;
            }
            self.a %= Self::MOD;
            self.b %= Self::MOD;
        }
    }

    /// The checksum as `Checksum.getValue()` returns it (a non-negative long).
    pub(crate) fn value(&self) -> i64 {
        i64::from((self.b << 16) | self.a)
    }

    /// The checksum of `data` alone.
    pub(crate) fn of(data: &[u8]) -> i64 {
        let mut a = Adler32::new();
        a.update(data);
        a.value()
    }
}

/// `ZooKeeperServer.superSecret`.
const SUPER_SECRET: i64 = 0xB341_5C00;

/// The password ZooKeeper gives session `id` (`ZooKeeperServer.generatePasswd`:
/// `new Random(id ^ superSecret).nextBytes(new byte[16])`). ZooKeeper stores no passwords;
/// it derives them, so an imported session keeps the one its client holds.
pub fn zk_session_passwd(id: i64) -> Vec<u8> {
    // java.util.Random: a 48-bit LCG.
    const MULT: i64 = 0x5_DEEC_E66D;
    const MASK: i64 = (1 << 48) - 1;
    let mut seed = ((id ^ SUPER_SECRET) ^ MULT) & MASK;
    let mut next_int = || {
        seed = (seed.wrapping_mul(MULT).wrapping_add(0xB)) & MASK;
        (seed >> 16) as i32
    };
    let mut out = Vec::with_capacity(16);
    while out.len() < 16 {
        let mut rnd = next_int();
        for _ in 0..4.min(16 - out.len()) {
            out.push(rnd as u8);
            rnd >>= 8;
        }
    }
    out
}

/// `ZooDefs.Ids.OPEN_ACL_UNSAFE`: what a null ACL list (or ACL reference -1) stands for.
pub(crate) fn open_acl_unsafe() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

/// A jute `vector<ACL>`; null (-1) is `None`.
pub(crate) fn read_acl_list(r: &mut Reader<'_>) -> Result<Option<Vec<Acl>>, DecodeError> {
    let n = r.read_i32()?;
    if n == -1 {
        return Ok(None);
    }
    if n < 0 || n as usize > r.remaining() / 12 {
        return Err(DecodeError::InvalidLength(n));
    }
    let mut acl = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let perms = r.read_i32()?;
        let scheme = r.read_string()?;
        let id = r.read_string()?;
        acl.push(Acl {
            perms,
            id: Id { scheme, id },
        });
    }
    Ok(Some(acl))
}

/// Parses the hex zxid of a ZooKeeper file name (`snapshot.1a2b`, `log.100000001`);
/// `None` for any other name (ZooKeeper's `Util.getZxidFromName`).
pub(crate) fn zxid_from_name(name: &str, prefix: &str) -> Option<i64> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('.')?;
    // A compressed snapshot has a further extension (`.gz`, `.snappy`).
    let hex = rest.split('.').next()?;
    u64::from_str_radix(hex, 16).ok().map(|z| z as i64)
}

/// ZooKeeper keeps its files in `<dataDir>/version-2`; accept that directory or its parent.
pub(crate) fn version2_dir(dir: &std::path::Path) -> PathBuf {
    let v2 = dir.join("version-2");
    if v2.is_dir() {
        v2
    } else {
        dir.to_path_buf()
    }
}

/// Whether `dir` is missing or empty.
pub(crate) fn is_missing_or_empty(dir: &std::path::Path) -> Result<bool, MigrateError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(MigrateError::io(dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adler32_known_values() {
        // Values from zlib's adler32.
        assert_eq!(Adler32::of(b""), 1);
        assert_eq!(Adler32::of(b"Wikipedia"), 0x11E6_0398);
        let big = vec![0xffu8; 100_000];
        let mut split = Adler32::new();
        split.update(&big[..7]);
        split.update(&big[7..]);
        assert_eq!(split.value(), Adler32::of(&big));
    }

    #[test]
    fn java_random_passwd() {
        // new Random(id ^ 0xB3415C00L).nextBytes(new byte[16]), printed by OpenJDK 17.
        assert_eq!(
            zk_session_passwd(0),
            [242, 42, 205, 74, 151, 230, 157, 109, 32, 164, 155, 182, 56, 234, 219, 56]
        );
        assert_eq!(
            zk_session_passwd(0x10_0000_abcd),
            [6, 48, 158, 210, 218, 110, 158, 196, 106, 49, 141, 135, 77, 93, 40, 221]
        );
    }

    #[test]
    fn file_names() {
        assert_eq!(zxid_from_name("snapshot.1a", "snapshot"), Some(0x1a));
        assert_eq!(zxid_from_name("log.100000001", "log"), Some(0x1_0000_0001));
        assert_eq!(zxid_from_name("snapshot.2.gz", "snapshot"), Some(2));
        assert_eq!(zxid_from_name("snapshot.x", "snapshot"), None);
        assert_eq!(zxid_from_name("logs.1", "log"), None);
    }
}
