//! ZooKeeper 3.8 transaction logs (`FileTxnLog`, `log.<first zxid hex>`).
//!
//! ```text
//! FileHeader  int magic "ZKLG", int version 2, long dbid
//! record*     long Adler32 of the entry, buffer entry, byte 'B'
//! entry       TxnHeader (long clientId, int cxid, long zxid, long time, int type), the
//!             type's Txn record, then (3.6+, digests on) a TxnDigest we ignore
//! tail        zeros (the file is preallocated in 64 MiB steps)
//! ```
//! As `FileTxnIterator` reads it: a zero length, a missing 'B' or the end of the file ends
//! that file (a partial last record from a crash is dropped); a record whose checksum does
//! not match is an error, as it stops ZooKeeper from starting.

use std::path::{Path, PathBuf};

use rookery_protocol::{Acl, DecodeError, Reader};

use super::{list_zk_files, read_acl_list, Adler32, MigrateError};

/// `FileTxnLog.TXNLOG_MAGIC`: "ZKLG".
pub const TXNLOG_MAGIC: i32 = i32::from_be_bytes(*b"ZKLG");
/// File name prefix.
pub const LOG_PREFIX: &str = "log";

/// `ZooDefs.OpCode` values that appear in the log.
pub mod op {
    /// `create`.
    pub const CREATE: i32 = 1;
    /// `delete`.
    pub const DELETE: i32 = 2;
    /// `setData`.
    pub const SET_DATA: i32 = 5;
    /// `setACL`.
    pub const SET_ACL: i32 = 7;
    /// `check` (in a multi).
    pub const CHECK: i32 = 13;
    /// `multi`.
    pub const MULTI: i32 = 14;
    /// `create2`.
    pub const CREATE2: i32 = 15;
    /// `reconfig` (logged as a setData of /zookeeper/config).
    pub const RECONFIG: i32 = 16;
    /// `createContainer`.
    pub const CREATE_CONTAINER: i32 = 19;
    /// `deleteContainer`.
    pub const DELETE_CONTAINER: i32 = 20;
    /// `createTTL`.
    pub const CREATE_TTL: i32 = 21;
    /// `createSession`.
    pub const CREATE_SESSION: i32 = -10;
    /// `closeSession`.
    pub const CLOSE_SESSION: i32 = -11;
    /// `error`.
    pub const ERROR: i32 = -1;
}

/// `TxnHeader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnHeader {
    /// The session that issued it.
    pub client_id: i64,
    /// The client's request id.
    pub cxid: i32,
    /// Its zxid.
    pub zxid: i64,
    /// The leader's clock when it was accepted, ms.
    pub time: i64,
    /// The opcode.
    pub op: i32,
}

/// A create of any kind (`CreateTxn`, `CreateTTLTxn`, `CreateContainerTxn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTxn {
    /// The full path (sequence suffix included).
    pub path: String,
    /// The data; `None` is null.
    pub data: Option<Vec<u8>>,
    /// The ACL list; `None` (null) means OPEN_ACL_UNSAFE.
    pub acl: Option<Vec<Acl>>,
    /// Whether the client's session owns it (CreateTxn only).
    pub ephemeral: bool,
    /// The parent's cversion after the create; -1 for a version-0 record.
    pub parent_cversion: i32,
    /// The TTL in ms (CreateTTLTxn only).
    pub ttl: Option<i64>,
}

/// The body of a logged transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txn {
    /// `CreateSessionTxn`.
    CreateSession {
        /// The negotiated timeout, ms.
        timeout: i32,
    },
    /// `CloseSessionTxn` (None: a log written without it, or with it disabled).
    CloseSession {
        /// The ephemerals the leader deleted.
        paths: Option<Vec<String>>,
    },
    /// create / create2 / createTTL / createContainer.
    Create(CreateTxn),
    /// `DeleteTxn` (delete, deleteContainer).
    Delete {
        /// The path.
        path: String,
    },
    /// `SetDataTxn` (setData, reconfig).
    SetData {
        /// The path.
        path: String,
        /// The new data; `None` is null.
        data: Option<Vec<u8>>,
        /// The node's version after the change.
        version: i32,
    },
    /// `SetACLTxn`.
    SetAcl {
        /// The path.
        path: String,
        /// The new list; `None` means OPEN_ACL_UNSAFE.
        acl: Option<Vec<Acl>>,
        /// The aversion after the change.
        version: i32,
    },
    /// `CheckVersionTxn` (no effect on the tree).
    Check,
    /// `ErrorTxn`.
    Error {
        /// The error code.
        err: i32,
    },
    /// `MultiTxn`: (opcode, body) of each sub-transaction; `None` for an opcode
    /// `processTxn` refuses inside a multi (it stops applying the multi there).
    Multi(Vec<(i32, Option<Txn>)>),
}

/// One logged transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnEntry {
    /// Its header.
    pub hdr: TxnHeader,
    /// Its body.
    pub txn: Txn,
    /// The `TxnDigest` logged after it (3.6+ with digests on): (digest version, the tree's
    /// digest once this transaction is applied).
    pub digest: Option<(i32, i64)>,
}

fn create(r: &mut Reader<'_>, kind: i32) -> Result<CreateTxn, DecodeError> {
    let path = r.read_string()?;
    let data = r.read_opt_buffer()?;
    let acl = read_acl_list(r)?;
    let mut txn = CreateTxn {
        path,
        data,
        acl,
        ephemeral: false,
        parent_cversion: -1,
        ttl: None,
    };
    match kind {
        op::CREATE_TTL => {
            txn.parent_cversion = r.read_i32()?;
            txn.ttl = Some(r.read_i64()?);
        }
        op::CREATE_CONTAINER => txn.parent_cversion = r.read_i32()?,
        _ => {
            txn.ephemeral = r.read_bool()?;
            // CreateTxnV0 (before 3.3) has no parentCVersion: -1 triggers the fix-up.
            if r.remaining() >= 4 {
                txn.parent_cversion = r.read_i32()?;
            }
        }
    }
    Ok(txn)
}

/// Decodes a txn body of type `kind` (`SerializeUtils.deserializeTxn`).
fn body(r: &mut Reader<'_>, kind: i32) -> Result<Option<Txn>, DecodeError> {
    Ok(Some(match kind {
        op::CREATE_SESSION => Txn::CreateSession {
            timeout: r.read_i32()?,
        },
        op::CLOSE_SESSION => {
            // Absent in logs written before CloseSessionTxn existed (or with it disabled).
            // If what follows does not parse as one, it is a digest (a log with
            // closeSessionTxn disabled): ZooKeeper then kills the session's ephemerals alone.
            let mut probe = r.clone();
            let paths = (|| -> Result<Vec<String>, DecodeError> {
                let n = probe.read_vec_len(4)?;
                let mut paths = Vec::with_capacity(n);
                for _ in 0..n {
                    paths.push(probe.read_string()?);
                }
                Ok(paths)
            })()
            .ok();
            if paths.is_some() {
                *r = probe;
            }
            Txn::CloseSession { paths }
        }
        op::CREATE | op::CREATE2 | op::CREATE_TTL | op::CREATE_CONTAINER => {
            Txn::Create(create(r, kind)?)
        }
        op::DELETE | op::DELETE_CONTAINER => Txn::Delete {
            path: r.read_string()?,
        },
        op::SET_DATA | op::RECONFIG => Txn::SetData {
            path: r.read_string()?,
            data: r.read_opt_buffer()?,
            version: r.read_i32()?,
        },
        op::SET_ACL => Txn::SetAcl {
            path: r.read_string()?,
            acl: read_acl_list(r)?,
            version: r.read_i32()?,
        },
        op::CHECK => {
            r.read_string()?;
            r.read_i32()?;
            Txn::Check
        }
        op::ERROR => Txn::Error { err: r.read_i32()? },
        op::MULTI => {
            let n = r.read_vec_len(8)?;
            let mut subs = Vec::with_capacity(n);
            for _ in 0..n {
                let kind = r.read_i32()?;
                let data = r.read_buffer()?;
                let mut sub = Reader::new(&data);
                let txn = match kind {
                    op::CREATE
                    | op::CREATE_TTL
                    | op::CREATE_CONTAINER
                    | op::DELETE
                    | op::DELETE_CONTAINER
                    | op::SET_DATA
                    | op::ERROR
                    | op::CHECK => body(&mut sub, kind)?,
                    _ => None,
                };
                subs.push((kind, txn));
            }
            Txn::Multi(subs)
        }
        _ => return Ok(None),
    }))
}

/// Decodes one log entry (header + body; a trailing digest is ignored).
pub fn decode_entry(bytes: &[u8]) -> Result<Option<TxnEntry>, DecodeError> {
    let mut r = Reader::new(bytes);
    let hdr = TxnHeader {
        client_id: r.read_i64()?,
        cxid: r.read_i32()?,
        zxid: r.read_i64()?,
        time: r.read_i64()?,
        op: r.read_i32()?,
    };
    let Some(txn) = body(&mut r, hdr.op)? else {
        return Ok(None);
    };
    let digest = if r.remaining() >= 12 {
        Some((r.read_i32()?, r.read_i64()?))
    } else {
        None
    };
    Ok(Some(TxnEntry { hdr, txn, digest }))
}

/// What reading one log file found.
#[derive(Debug, Default)]
pub struct LogFile {
    /// The transactions, in file order.
    pub entries: Vec<TxnEntry>,
    /// Whether it ended in a partial record (dropped, as ZooKeeper drops it).
    pub torn: bool,
}

/// The log files in `dir`, by first zxid, ascending.
pub fn list_logs(dir: &Path) -> Result<Vec<(i64, PathBuf)>, MigrateError> {
    list_zk_files(dir, LOG_PREFIX)
}

/// The files `FileTxnIterator(dir, start)` reads: every file whose first zxid is >= `start`,
/// plus the newest one before it (it may hold `start`).
pub fn logs_from(all: &[(i64, PathBuf)], start: i64) -> Vec<(i64, PathBuf)> {
    let first = all.iter().rposition(|(z, _)| *z < start);
    let from = first.unwrap_or(0);
    all[from..].to_vec()
}

/// Reads one log file.
pub fn read_log(path: &Path) -> Result<LogFile, MigrateError> {
    let bytes = std::fs::read(path).map_err(MigrateError::io(path))?;
    let mut r = Reader::new(&bytes);
    let bad = |e: DecodeError| MigrateError::corrupt(path, e);
    // An empty or headerless file: ZooKeeper's header read hits EOF and it moves on.
    if bytes.len() < 16 {
        return Ok(LogFile {
            entries: Vec::new(),
            torn: !bytes.is_empty(),
        });
    }
    let magic = r.read_i32().map_err(bad)?;
    if magic != TXNLOG_MAGIC {
        return Err(MigrateError::corrupt(path, format!("bad magic {magic:#x}")));
    }
    r.read_i32().map_err(bad)?;
    r.read_i64().map_err(bad)?;
    let mut out = LogFile::default();
    loop {
        let offset = bytes.len() - r.remaining();
        let Ok(crc) = r.read_i64() else {
            out.torn = r.remaining() > 0;
            break;
        };
        let Ok(len) = r.read_i32() else {
            out.torn = true;
            break;
        };
        if len == 0 {
            // Preallocated zeros: the end of the file's transactions.
            out.torn = crc != 0;
            break;
        }
        let Ok(len) = usize::try_from(len) else {
            out.torn = true;
            break;
        };
        let Ok(entry) = r.take(len) else {
            out.torn = true;
            break;
        };
        match r.take(1) {
            Ok([b'B']) => {}
            _ => {
                // "Last transaction was partial."
                out.torn = true;
                break;
            }
        }
        if Adler32::of(entry) != crc {
            return Err(MigrateError::corrupt(
                path,
                format!("CRC check failed for the record at offset {offset}"),
            ));
        }
        match decode_entry(entry) {
            Ok(Some(e)) => out.entries.push(e),
            Ok(None) => {
                return Err(MigrateError::corrupt(
                    path,
                    format!("unsupported transaction type at offset {offset}"),
                ))
            }
            Err(e) => {
                return Err(MigrateError::corrupt(
                    path,
                    format!("record at offset {offset}: {e}"),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use rookery_protocol::Record;

    /// Encodes an entry the way `Util.marshallTxnEntry` does (test fixture).
    pub(crate) fn encode(hdr: &TxnHeader, body: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i64(hdr.client_id);
        b.put_i32(hdr.cxid);
        b.put_i64(hdr.zxid);
        b.put_i64(hdr.time);
        b.put_i32(hdr.op);
        b.extend_from_slice(body);
        b.to_vec()
    }

    /// A log file holding `entries`, then `tail` bytes, then zero padding.
    pub(crate) fn log_file(entries: &[Vec<u8>], tail: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i32(TXNLOG_MAGIC);
        b.put_i32(2);
        b.put_i64(0);
        for e in entries {
            b.put_i64(Adler32::of(e));
            b.put_i32(e.len() as i32);
            b.extend_from_slice(e);
            b.put_u8(b'B');
        }
        b.extend_from_slice(tail);
        b.extend_from_slice(&[0u8; 64]);
        b.to_vec()
    }

    pub(crate) fn create_body(path: &str, data: &[u8], ephemeral: bool, pcv: i32) -> Vec<u8> {
        let mut b = BytesMut::new();
        path.to_string().write(&mut b);
        Some(data.to_vec()).write(&mut b);
        super::super::open_acl_unsafe().write(&mut b);
        b.put_u8(u8::from(ephemeral));
        b.put_i32(pcv);
        b.to_vec()
    }

    fn hdr(zxid: i64, op: i32) -> TxnHeader {
        TxnHeader {
            client_id: 9,
            cxid: 1,
            zxid,
            time: 1000 + zxid,
            op,
        }
    }

    #[test]
    fn reads_records_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let e1 = encode(&hdr(1, op::CREATE), &create_body("/a", b"x", false, 1));
        let e2 = encode(&hdr(2, op::DELETE), &{
            let mut b = BytesMut::new();
            "/a".to_string().write(&mut b);
            b.to_vec()
        });
        // A record cut short: its length says more than was written before the zeros.
        let mut torn = BytesMut::new();
        torn.put_i64(12345);
        torn.put_i32(40);
        torn.extend_from_slice(&e1[..10]);
        let path = dir.path().join("log.1");
        std::fs::write(&path, log_file(&[e1, e2], &torn)).unwrap();
        let log = read_log(&path).unwrap();
        assert!(log.torn);
        assert_eq!(log.entries.len(), 2);
        assert_eq!(log.entries[0].hdr.zxid, 1);
        match &log.entries[0].txn {
            Txn::Create(c) => {
                assert_eq!(c.path, "/a");
                assert_eq!(c.parent_cversion, 1);
                assert_eq!(c.data.as_deref(), Some(&b"x"[..]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            log.entries[1].txn,
            Txn::Delete {
                path: "/a".to_string()
            }
        );

        // A clean file is not torn.
        std::fs::write(&path, log_file(&[], &[])).unwrap();
        let log = read_log(&path).unwrap();
        assert!(!log.torn && log.entries.is_empty());

        // A damaged complete record is an error, as in ZooKeeper.
        let e1 = encode(&hdr(1, op::CREATE), &create_body("/a", b"x", false, 1));
        let mut bytes = log_file(&[e1], &[]);
        bytes[16 + 8 + 4 + 3] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        assert!(read_log(&path).is_err());
    }

    #[test]
    fn file_selection_like_file_txn_iterator() {
        let all: Vec<(i64, PathBuf)> = [1, 10, 20]
            .iter()
            .map(|&z| (z, PathBuf::from(format!("log.{z:x}"))))
            .collect();
        let z = |v: Vec<(i64, PathBuf)>| v.into_iter().map(|f| f.0).collect::<Vec<_>>();
        assert_eq!(z(logs_from(&all, 15)), vec![10, 20]);
        assert_eq!(z(logs_from(&all, 10)), vec![1, 10, 20]);
        assert_eq!(z(logs_from(&all, 0)), vec![1, 10, 20]);
        assert_eq!(z(logs_from(&all, 30)), vec![20]);
    }
}
