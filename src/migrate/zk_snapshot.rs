//! ZooKeeper 3.8 snapshot files (`FileSnap`, `SnapStream` in CHECKED mode).
//!
//! ```text
//! FileHeader    int magic "ZKSN", int version 2, long dbid (-1)
//! sessions      int count, count × (long id, int timeout)
//! ACL cache     int count, count × (long index, vector<ACL>)   (ReferenceCountedACLCache)
//! nodes         (ustring path, buffer data, long acl, StatPersisted)*, from the root ("")
//!               down, parents first; the ustring "/" ends them
//! seal          long Adler32 of every byte before it, ustring "/"
//! digest (3.6+) long zxid, int digestVersion, long digest, then a second seal
//! ```
//! An ACL reference of -1 is `OPEN_ACL_UNSAFE`. A `.gz` snapshot (compression method gz)
//! is the same stream gzipped; `.snappy` ones are refused.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::{BufMut, BytesMut};
use rookery_protocol::{Acl, Reader, Record};

use super::{list_zk_files, open_acl_unsafe, read_acl_list, zxid_from_name, Adler32, MigrateError};
use crate::tree::{DataTree, PersistedStat};

/// `FileSnap.SNAP_MAGIC`: "ZKSN" as a big-endian int.
pub const SNAP_MAGIC: i32 = i32::from_be_bytes(*b"ZKSN");
/// `FileSnap.VERSION`.
const SNAP_VERSION: i32 = 2;
/// `FileSnap.dbId`.
const DB_ID: i64 = -1;
/// File name prefix.
pub const SNAPSHOT_PREFIX: &str = "snapshot";

/// A ZooKeeper snapshot, loaded.
#[derive(Debug)]
pub struct ZkSnapshot {
    /// The zxid in the file name: the snapshot holds at least every change up to it (it is
    /// fuzzy: later ones may be in it too, which the log replay tolerates).
    pub zxid: i64,
    /// Live sessions: id → timeout in ms.
    pub sessions: BTreeMap<i64, i32>,
    /// The tree (quota stats recomputed, as ZooKeeper's `setupQuota` does on load).
    pub tree: DataTree,
    /// Number of znodes read, the root included.
    pub nodes: usize,
    /// Whether a 3.6+ digest section followed the tree.
    pub had_digest: bool,
    /// That section, if of version 2: (zxid, digest version, the tree's digest at that zxid).
    pub digest: Option<(i64, i32, i64)>,
}

/// The snapshot files in `dir`, newest (highest zxid) first.
pub fn list_snapshots(dir: &Path) -> Result<Vec<(i64, PathBuf)>, MigrateError> {
    let mut found = list_zk_files(dir, SNAPSHOT_PREFIX)?;
    found.reverse();
    Ok(found)
}

fn stat_persisted(r: &mut Reader<'_>) -> Result<PersistedStat, rookery_protocol::DecodeError> {
    Ok(PersistedStat {
        czxid: r.read_i64()?,
        mzxid: r.read_i64()?,
        ctime: r.read_i64()?,
        mtime: r.read_i64()?,
        version: r.read_i32()?,
        cversion: r.read_i32()?,
        aversion: r.read_i32()?,
        ephemeral_owner: r.read_i64()?,
        pzxid: r.read_i64()?,
    })
}

/// Reads and checks one snapshot file.
pub fn read_snapshot(path: &Path) -> Result<ZkSnapshot, MigrateError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let zxid = zxid_from_name(name, SNAPSHOT_PREFIX)
        .ok_or_else(|| MigrateError::corrupt(path, "not a snapshot.<zxid> file name"))?;
    if name.ends_with(".snappy") {
        return Err(MigrateError::corrupt(
            path,
            "snappy-compressed snapshots are not supported (gz and uncompressed are)",
        ));
    }
    let raw = std::fs::read(path).map_err(MigrateError::io(path))?;
    let bytes = if name.ends_with(".gz") {
        // SnapStream GZIP mode: the same stream, gzipped; the seal covers the plain bytes.
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut plain)
            .map_err(|e| MigrateError::corrupt(path, format!("gzip: {e}")))?;
        plain
    } else {
        raw
    };
    // SnapStream.isValidCheckedStream: at least 10 bytes, ending in the ustring "/".
    if bytes.len() < 10 || bytes[bytes.len() - 5..] != [0, 0, 0, 1, b'/'] {
        return Err(MigrateError::corrupt(
            path,
            "incomplete snapshot (no end mark)",
        ));
    }
    parse(path, zxid, &bytes)
}

fn parse(path: &Path, zxid: i64, bytes: &[u8]) -> Result<ZkSnapshot, MigrateError> {
    let bad = |e: rookery_protocol::DecodeError| MigrateError::corrupt(path, e);
    let mut r = Reader::new(bytes);
    let magic = r.read_i32().map_err(bad)?;
    if magic != SNAP_MAGIC {
        return Err(MigrateError::corrupt(path, format!("bad magic {magic:#x}")));
    }
    let _version = r.read_i32().map_err(bad)?;
    let _dbid = r.read_i64().map_err(bad)?;
    let count = r.read_i32().map_err(bad)?;
    if count < 0 || count as usize > r.remaining() / 12 {
        return Err(MigrateError::corrupt(path, "bad session count"));
    }
    let mut sessions = BTreeMap::new();
    for _ in 0..count {
        let id = r.read_i64().map_err(bad)?;
        let timeout = r.read_i32().map_err(bad)?;
        sessions.insert(id, timeout);
    }
    let acl_count = r.read_i32().map_err(bad)?;
    if acl_count < 0 || acl_count as usize > r.remaining() / 12 {
        return Err(MigrateError::corrupt(path, "bad ACL cache size"));
    }
    let mut acls: BTreeMap<i64, Vec<Acl>> = BTreeMap::new();
    for _ in 0..acl_count {
        let index = r.read_i64().map_err(bad)?;
        let list = read_acl_list(&mut r).map_err(bad)?.unwrap_or_default();
        acls.insert(index, list);
    }
    let open = open_acl_unsafe();
    let mut tree: Option<DataTree> = None;
    let mut nodes = 0usize;
    loop {
        let node_path = r.read_string().map_err(bad)?;
        if node_path == "/" {
            break;
        }
        let data = r.read_opt_buffer().map_err(bad)?;
        let acl_ref = r.read_i64().map_err(bad)?;
        let stat = stat_persisted(&mut r).map_err(bad)?;
        let acl = match acl_ref {
            -1 => &open,
            n => acls.get(&n).ok_or_else(|| {
                MigrateError::corrupt(path, format!("{node_path}: unknown ACL reference {n}"))
            })?,
        };
        nodes += 1;
        match &mut tree {
            None if node_path.is_empty() => {
                tree = Some(
                    DataTree::zk_with_root(data.as_deref(), acl, stat)
                        .map_err(|e| MigrateError::corrupt(path, e))?,
                );
            }
            None => {
                return Err(MigrateError::corrupt(
                    path,
                    "the first node is not the root",
                ))
            }
            Some(tree) => tree
                .zk_load_node(&node_path, data.as_deref(), acl, stat)
                .map_err(|e| MigrateError::corrupt(path, format!("{node_path}: {e}")))?,
        }
    }
    let mut tree = tree.ok_or_else(|| MigrateError::corrupt(path, "no root node"))?;
    check_seal(path, bytes, &mut r)?;
    // 3.6+: a digest section with a seal of its own (absent when digests are disabled).
    let mut had_digest = false;
    let mut digest = None;
    if !r.is_empty() {
        let digest_zxid = r.read_i64().map_err(bad)?;
        let digest_version = r.read_i32().map_err(bad)?;
        if digest_version < 2 {
            r.read_string().map_err(bad)?;
        } else {
            let value = r.read_i64().map_err(bad)?;
            digest = Some((digest_zxid, digest_version, value));
        }
        check_seal(path, bytes, &mut r)?;
        had_digest = true;
    }
    tree.zk_setup_quota();
    Ok(ZkSnapshot {
        zxid,
        sessions,
        tree,
        nodes,
        had_digest,
        digest,
    })
}

/// `SnapStream.checkSealIntegrity`: the Adler32 of everything read so far, then "/".
fn check_seal(path: &Path, bytes: &[u8], r: &mut Reader<'_>) -> Result<(), MigrateError> {
    let upto = bytes.len() - r.remaining();
    let expected = Adler32::of(&bytes[..upto]);
    let bad = |e: rookery_protocol::DecodeError| MigrateError::corrupt(path, e);
    let val = r.read_i64().map_err(bad)?;
    let slash = r.read_string().map_err(bad)?;
    if val != expected {
        return Err(MigrateError::corrupt(
            path,
            "CRC corruption (Adler32 mismatch)",
        ));
    }
    if slash != "/" {
        return Err(MigrateError::corrupt(path, "seal not followed by \"/\""));
    }
    Ok(())
}

/// Writes `tree` and `sessions` (id → timeout ms) as `dir/snapshot.<zxid hex>`, the way
/// `FileSnap.serialize` does without a digest section (ZooKeeper reads such a file as one
/// from a server with digests off). Written to a temporary name, fsynced, then renamed.
pub fn write_snapshot(
    dir: &Path,
    zxid: i64,
    sessions: &BTreeMap<i64, i32>,
    tree: &DataTree,
) -> Result<PathBuf, MigrateError> {
    let path = dir.join(format!("{SNAPSHOT_PREFIX}.{:x}", zxid as u64));
    let tmp = dir.join(format!(".{SNAPSHOT_PREFIX}.{:x}.tmp", zxid as u64));
    let file = std::fs::File::create(&tmp).map_err(MigrateError::io(&tmp))?;
    let mut out = SealedWriter {
        w: std::io::BufWriter::with_capacity(1 << 20, file),
        adler: Adler32::new(),
    };
    let io = MigrateError::io(&tmp);
    (|| -> std::io::Result<()> {
        let mut buf = BytesMut::new();
        buf.put_i32(SNAP_MAGIC);
        buf.put_i32(SNAP_VERSION);
        buf.put_i64(DB_ID);
        buf.put_i32(sessions.len() as i32);
        for (id, timeout) in sessions {
            buf.put_i64(*id);
            buf.put_i32(*timeout);
        }
        // The ACL cache: every distinct list, numbered from 1 in order of first use.
        let mut numbering: Vec<(Vec<Acl>, i64)> = Vec::new();
        let mut index_of = std::collections::HashMap::<Vec<u8>, i64>::new();
        tree.visit_persisted(&mut |_, _, acl, _| {
            if let std::collections::hash_map::Entry::Vacant(slot) = index_of.entry(acl_key(acl)) {
                let n = numbering.len() as i64 + 1;
                slot.insert(n);
                numbering.push((acl.to_vec(), n));
            }
            Ok(())
        })?;
        buf.put_i32(numbering.len() as i32);
        for (acl, n) in &numbering {
            buf.put_i64(*n);
            acl.write(&mut buf);
        }
        out.write_all(&buf)?;
        buf.clear();
        tree.visit_persisted(&mut |node_path, data, acl, stat| {
            node_path.to_string().write(&mut buf);
            data.map(<[u8]>::to_vec).write(&mut buf);
            buf.put_i64(index_of.get(&acl_key(acl)).copied().unwrap_or(-1));
            buf.put_i64(stat.czxid);
            buf.put_i64(stat.mzxid);
            buf.put_i64(stat.ctime);
            buf.put_i64(stat.mtime);
            buf.put_i32(stat.version);
            buf.put_i32(stat.cversion);
            buf.put_i32(stat.aversion);
            buf.put_i64(stat.ephemeral_owner);
            buf.put_i64(stat.pzxid);
            if buf.len() >= 1 << 20 {
                out.write_all(&buf)?;
                buf.clear();
            }
            Ok(())
        })?;
        "/".to_string().write(&mut buf);
        out.write_all(&buf)?;
        buf.clear();
        let seal = out.adler.value();
        buf.put_i64(seal);
        "/".to_string().write(&mut buf);
        out.write_all(&buf)?;
        let file = out.w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    })()
    .map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(MigrateError::io(&path))?;
    crate::storage::fsync_dir(dir).map_err(MigrateError::io(dir))?;
    Ok(path)
}

/// Equal exactly when the ACL lists are equal.
fn acl_key(acl: &[Acl]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    acl.to_vec().write(&mut buf);
    buf.to_vec()
}

/// A writer that keeps the Adler32 of what went through it.
struct SealedWriter<W: Write> {
    /// The file.
    w: W,
    /// Checksum of every byte written so far.
    adler: Adler32,
}

impl<W: Write> Write for SealedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.w.write(buf)?;
        self.adler.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = DataTree::new();
        let acl = vec![Acl {
            perms: 1,
            id: rookery_protocol::Id {
                scheme: "digest".into(),
                id: "u:x".into(),
            },
        }];
        tree.zk_create("/a", Some(b"x"), &acl, 0, -1, 5, 100)
            .unwrap();
        tree.zk_create("/a/b", None, &open_acl_unsafe(), 77, -1, 6, 101)
            .unwrap();
        let sessions = BTreeMap::from([(77, 30000)]);
        let path = write_snapshot(dir.path(), 6, &sessions, &tree).unwrap();
        assert!(path.ends_with("snapshot.6"));
        let back = read_snapshot(&path).unwrap();
        assert_eq!(back.zxid, 6);
        assert_eq!(back.sessions, sessions);
        assert!(!back.had_digest);
        assert!(back.tree == tree, "round trip changed the tree");
        assert_eq!(back.tree.ephemerals_of(77), vec!["/a/b".to_string()]);

        // One flipped byte in the body fails the seal.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[30] ^= 1;
        let bad = dir.path().join("snapshot.7");
        std::fs::write(&bad, &bytes).unwrap();
        assert!(read_snapshot(&bad).is_err());
        // A truncated file has no end mark.
        std::fs::write(&bad, &bytes[..bytes.len() - 3]).unwrap();
        assert!(read_snapshot(&bad).is_err());
        // The same stream gzipped (SnapStream GZIP mode) reads the same.
        let gz = dir.path().join("snapshot.6.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&std::fs::read(&path).unwrap()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert!(read_snapshot(&gz).unwrap().tree == tree);
        std::fs::remove_file(&gz).unwrap();
        let listed = list_snapshots(dir.path()).unwrap();
        assert_eq!(listed.iter().map(|s| s.0).collect::<Vec<_>>(), vec![7, 6]);
    }
}
