//! Snapshot encoding of the tree: compact, canonical (the same tree always gives the same
//! bytes, whatever its history or memory layout) and checked on decode.
//!
//! ```text
//! magic "RKTREE\0\0" | version u32 | acl_count u32 | acl lists | node_count u64 | nodes | crc32 u32
//! acl list: n u32, then n × (perms i32, scheme, id), strings as u32 length + bytes
//! node (pre-order, children sorted by name), every number a minimal LEB128 varint:
//!      name_len, name, num_children, czxid, mzxid-czxid, pzxid-czxid, ctime,
//!      mtime-ctime, ephemeral_owner, version, cversion, aversion (signed ones zigzagged;
//!      differences wrap), acl, data_len, data
//! data_len is the length + 1, 0 meaning null data (version 3); version 2 snapshots, which
//! had no null data, stored the plain length and still load.
//! fixed-size integers big-endian; crc32 covers everything before it.
//! ```
//! ACL lists are numbered in order of first use by the nodes, and every list is used once
//! at least, so that decoding then encoding reproduces the input byte for byte.

use std::collections::HashMap;
use std::io::{Read, Write};

use rookery_protocol::{ephemeral_owner, Acl, Id};

use super::acl::AclCache;
use super::node::{NewNode, NodeId, NodeStore, PersistedStat, ROOT};
use super::path::is_valid_path;
use super::DataTree;

const MAGIC: &[u8; 8] = b"RKTREE\0\0";
/// Encoded bytes buffered before they go to the writer.
const ENCODE_CHUNK: usize = 256 * 1024;
const VERSION: u32 = 3;
/// The format before null data; decoded, never written.
const VERSION_NO_NULL: u32 = 2;
/// Smallest encoded node: 13 one-byte varints (empty name and data).
const MIN_NODE_BYTES: usize = 13;
/// Smallest encoded ACL entry.
const MIN_ACL_BYTES: usize = 4 + 4 + 4;
/// Longest path accepted on decode (far beyond what a client request can carry).
const MAX_PATH: usize = 1 << 24;

/// Why bytes are not a tree snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// The input ends early.
    #[error("tree snapshot truncated")]
    Truncated,
    /// The input does not start with the tree magic.
    #[error("not a tree snapshot (bad magic)")]
    BadMagic,
    /// Written by a newer format.
    #[error("unsupported tree snapshot version {0}")]
    UnsupportedVersion(u32),
    /// The checksum does not match: the bytes were damaged.
    #[error("tree snapshot checksum mismatch")]
    Checksum,
    /// Well-formed bytes that do not describe a valid tree.
    #[error("invalid tree snapshot: {0}")]
    Invalid(&'static str),
    /// Bytes left after the last node.
    #[error("{0} trailing bytes in tree snapshot")]
    TrailingBytes(usize),
    /// Reading the snapshot failed (a streamed restore).
    #[error("reading tree snapshot: {0}")]
    Io(String),
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_var(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_var_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_var(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths come from in-memory strings and buffers, far below 4 GiB.
    put_u32(out, u32::try_from(b.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(b);
}

/// A bounds-checked, buffered reader over the body of a tree snapshot (everything before the
/// trailing crc), computing the crc as it goes: a snapshot streams from a file or a socket
/// without ever being held whole in memory.
struct Cursor<R: Read> {
    /// The input.
    r: R,
    /// Bytes pulled from `r`, `buf[pos..end]` not consumed yet.
    buf: Box<[u8]>,
    /// Next unconsumed byte of `buf`.
    pos: usize,
    /// End of the valid bytes in `buf`.
    end: usize,
    /// Body bytes not pulled from `r` yet.
    unread: u64,
    /// crc32 of every body byte pulled so far.
    hasher: crc32fast::Hasher,
}

/// Read buffer of a [`Cursor`].
const CURSOR_BUF: usize = 256 * 1024;

impl<R: Read> Cursor<R> {
    fn new(r: R, body_len: u64) -> Self {
        Cursor {
            r,
            buf: vec![0u8; CURSOR_BUF].into_boxed_slice(),
            pos: 0,
            end: 0,
            unread: body_len,
            hasher: crc32fast::Hasher::new(),
        }
    }

    /// Body bytes left (buffered or not).
    fn remaining(&self) -> u64 {
        self.unread + (self.end - self.pos) as u64
    }

    fn refill(&mut self) -> Result<(), TreeError> {
        if self.unread == 0 {
            return Err(TreeError::Truncated);
        }
        let want = self
            .buf
            .len()
            .min(usize::try_from(self.unread).unwrap_or(usize::MAX));
        let n = loop {
            match self.r.read(&mut self.buf[..want]) {
                Ok(0) => return Err(TreeError::Truncated),
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TreeError::Io(e.to_string())),
            }
        };
        self.hasher.update(&self.buf[..n]);
        self.unread -= n as u64;
        self.pos = 0;
        self.end = n;
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, TreeError> {
        if self.pos == self.end {
            self.refill()?;
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    fn fill(&mut self, out: &mut [u8]) -> Result<(), TreeError> {
        if out.len() as u64 > self.remaining() {
            return Err(TreeError::Truncated);
        }
        let mut done = 0;
        while done < out.len() {
            if self.pos == self.end {
                self.refill()?;
            }
            let n = (self.end - self.pos).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
        }
        Ok(())
    }

    /// Reads `n` bytes into `out` (replacing its contents). The length was checked against
    /// the input left, so a damaged length cannot make this allocate more than the input.
    fn take_into(&mut self, n: u64, out: &mut Vec<u8>) -> Result<(), TreeError> {
        if n > self.remaining() {
            return Err(TreeError::Truncated);
        }
        let n = usize::try_from(n).map_err(|_| TreeError::Truncated)?;
        out.clear();
        out.resize(n, 0);
        self.fill(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TreeError> {
        let mut a = [0u8; N];
        self.fill(&mut a)?;
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, TreeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, TreeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, TreeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, TreeError> {
        let n = self.u32()?;
        let mut v = Vec::new();
        self.take_into(u64::from(n), &mut v)?;
        String::from_utf8(v).map_err(|_| TreeError::Invalid("string is not UTF-8"))
    }

    /// A minimal LEB128 varint (anything else is refused, to keep the encoding canonical).
    fn var(&mut self) -> Result<u64, TreeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            if i == 9 && b > 1 {
                return Err(TreeError::Invalid("varint overflow"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(TreeError::Invalid("non-minimal varint"));
                }
                return Ok(v);
            }
        }
        Err(TreeError::Invalid("varint too long"))
    }

    fn var_i64(&mut self) -> Result<i64, TreeError> {
        Ok(unzigzag(self.var()?))
    }

    fn var_i32(&mut self) -> Result<i32, TreeError> {
        i32::try_from(self.var_i64()?).map_err(|_| TreeError::Invalid("int out of range"))
    }

    fn var_u32(&mut self) -> Result<u32, TreeError> {
        u32::try_from(self.var()?).map_err(|_| TreeError::Invalid("length out of range"))
    }

    /// After the last node: no body bytes may be left, and the trailing crc must match.
    fn finish(mut self) -> Result<(), TreeError> {
        let left = self.remaining();
        if left != 0 {
            return Err(TreeError::TrailingBytes(
                usize::try_from(left).unwrap_or(usize::MAX),
            ));
        }
        let mut crc = [0u8; 4];
        self.r.read_exact(&mut crc).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                TreeError::Truncated
            } else {
                TreeError::Io(e.to_string())
            }
        })?;
        if self.hasher.finalize() != u32::from_be_bytes(crc) {
            return Err(TreeError::Checksum);
        }
        Ok(())
    }
}

/// Reusable buffers for one decoded node's name and data (no allocation per node).
#[derive(Default)]
struct NodeBufs {
    /// The node's name, UTF-8 checked.
    name: Vec<u8>,
    /// The node's data.
    data: Vec<u8>,
}

/// One decoded node: child count, stat, ACL cache index, whether data is null; name and
/// data are in the [`NodeBufs`].
type NodeRecord = (u32, PersistedStat, u32, bool);

/// Reads one node; `next_acl` enforces first-use numbering of the ACL table. `nullable`:
/// the data length is stored + 1, with 0 for null (version 3), else as is (version 2).
fn read_node<R: Read>(
    c: &mut Cursor<R>,
    bufs: &mut NodeBufs,
    table: &[u32],
    next_acl: &mut usize,
    nullable: bool,
) -> Result<NodeRecord, TreeError> {
    let name_len = c.var()?;
    c.take_into(name_len, &mut bufs.name)?;
    if std::str::from_utf8(&bufs.name).is_err() {
        return Err(TreeError::Invalid("name is not UTF-8"));
    }
    let num_children = c.var_u32()?;
    let czxid = c.var_i64()?;
    let mzxid = czxid.wrapping_add(c.var_i64()?);
    let pzxid = czxid.wrapping_add(c.var_i64()?);
    let ctime = c.var_i64()?;
    let mtime = ctime.wrapping_add(c.var_i64()?);
    let stat = PersistedStat {
        czxid,
        mzxid,
        ctime,
        mtime,
        pzxid,
        ephemeral_owner: c.var_i64()?,
        version: c.var_i32()?,
        cversion: c.var_i32()?,
        aversion: c.var_i32()?,
    };
    let acl = usize::try_from(c.var()?).unwrap_or(usize::MAX);
    if acl > *next_acl || acl >= table.len() {
        return Err(TreeError::Invalid("ACL index out of order or range"));
    }
    if acl == *next_acl {
        *next_acl += 1;
    }
    let null = if nullable {
        match c.var()? {
            0 => {
                bufs.data.clear();
                true
            }
            n => {
                c.take_into(n - 1, &mut bufs.data)?;
                false
            }
        }
    } else {
        let n = c.var()?;
        c.take_into(n, &mut bufs.data)?;
        false
    };
    Ok((num_children, stat, table[acl], null))
}

impl DataTree {
    /// Node ids in canonical order: pre-order, children sorted by name.
    fn canonical_order(&self) -> Vec<NodeId> {
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![ROOT];
        while let Some(id) = stack.pop() {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            order.push(id);
            let mut children: Vec<(&[u8], NodeId)> = node
                .children()
                .iter()
                .map(|&c| (self.nodes.get(c).map_or(&[][..], |n| n.name_bytes()), c))
                .collect();
            children.sort_unstable_by(|a, b| b.0.cmp(a.0));
            stack.extend(children.into_iter().map(|(_, id)| id));
        }
        order
    }

    /// Appends the snapshot encoding of the whole tree to `out`.
    pub fn serialize(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail.
        let _ = self.encode(out, VERSION);
    }

    /// Streams the snapshot encoding of the whole tree into `w` in bounded pieces (no
    /// image of the whole encoding is built). The bytes are those of [`DataTree::serialize`].
    pub fn serialize_into(&self, w: &mut dyn Write) -> std::io::Result<()> {
        self.encode(w, VERSION)
    }

    /// The version 2 encoding (null data written as empty), to test that old snapshots load.
    #[cfg(test)]
    pub(crate) fn serialize_v2(&self, out: &mut Vec<u8>) {
        let _ = self.encode(out, VERSION_NO_NULL);
    }

    fn encode(&self, w: &mut dyn Write, version: u32) -> std::io::Result<()> {
        let mut hasher = crc32fast::Hasher::new();
        let mut chunk = Vec::with_capacity(ENCODE_CHUNK + 64 * 1024);
        let out = &mut chunk;
        out.extend_from_slice(MAGIC);
        put_u32(out, version);
        let order = self.canonical_order();
        let mut numbering: HashMap<u32, u32> = HashMap::new();
        let mut table = Vec::new();
        for &id in &order {
            if let Some(node) = self.nodes.get(id) {
                numbering.entry(node.acl).or_insert_with(|| {
                    table.push(node.acl);
                    (table.len() - 1) as u32
                });
            }
        }
        put_u32(out, table.len() as u32);
        for &index in &table {
            let acl = self.acls.get(index);
            put_u32(out, acl.len() as u32);
            for entry in acl {
                out.extend_from_slice(&entry.perms.to_be_bytes());
                put_bytes(out, entry.id.scheme.as_bytes());
                put_bytes(out, entry.id.id.as_bytes());
            }
        }
        out.extend_from_slice(&(order.len() as u64).to_be_bytes());
        for &id in &order {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            if out.len() >= ENCODE_CHUNK {
                hasher.update(out);
                w.write_all(out)?;
                out.clear();
            }
            put_var_bytes(out, node.name_bytes());
            put_var(out, node.num_children() as u64);
            for v in [
                node.czxid,
                node.mzxid.wrapping_sub(node.czxid),
                node.pzxid.wrapping_sub(node.czxid),
                node.ctime,
                node.mtime.wrapping_sub(node.ctime),
                node.ephemeral_owner,
                i64::from(node.version),
                i64::from(node.cversion),
                i64::from(node.aversion),
            ] {
                put_var(out, zigzag(v));
            }
            put_var(
                out,
                u64::from(numbering.get(&node.acl).copied().unwrap_or(0)),
            );
            match node.data_opt() {
                _ if version == VERSION_NO_NULL => put_var_bytes(out, node.data()),
                None => put_var(out, 0),
                Some(data) => {
                    put_var(out, data.len() as u64 + 1);
                    out.extend_from_slice(data);
                }
            }
        }
        hasher.update(out);
        let crc = hasher.finalize();
        put_u32(out, crc);
        w.write_all(out)
    }

    /// Decodes a snapshot made by [`DataTree::serialize`]. Rejects damaged or non-canonical
    /// input with an error; never panics.
    pub fn deserialize(bytes: &[u8]) -> Result<Self, TreeError> {
        if bytes.len() < MAGIC.len() + 4 + 4 {
            return Err(TreeError::Truncated);
        }
        // Whole in memory: check the crc before parsing anything (the stream decoder can only
        // check it at the end), so damage is reported as such.
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let mut crc_bytes = [0u8; 4];
        crc_bytes.copy_from_slice(crc);
        if body[..MAGIC.len()] != MAGIC[..] {
            return Err(TreeError::BadMagic);
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&body[MAGIC.len()..MAGIC.len() + 4]);
        let version = u32::from_be_bytes(version);
        if version != VERSION && version != VERSION_NO_NULL {
            return Err(TreeError::UnsupportedVersion(version));
        }
        if crc32fast::hash(body) != u32::from_be_bytes(crc_bytes) {
            return Err(TreeError::Checksum);
        }
        Self::deserialize_from(bytes, bytes.len() as u64)
    }

    /// Decodes a snapshot of exactly `len` bytes (crc included) streamed from `r`, holding
    /// nothing but the tree being built and a small read buffer. The crc is checked at the
    /// end; the tree is only returned if everything checks out.
    pub fn deserialize_from(r: impl Read, len: u64) -> Result<Self, TreeError> {
        if len < (MAGIC.len() + 4 + 4) as u64 {
            return Err(TreeError::Truncated);
        }
        let mut c = Cursor::new(r, len - 4);
        if c.array::<8>()? != *MAGIC {
            return Err(TreeError::BadMagic);
        }
        let version = c.u32()?;
        if version != VERSION && version != VERSION_NO_NULL {
            return Err(TreeError::UnsupportedVersion(version));
        }
        let nullable = version == VERSION;

        // ACL table.
        let acl_count = c.u32()? as usize;
        if acl_count as u64 > c.remaining() / 4 {
            return Err(TreeError::Truncated);
        }
        let mut acls = AclCache::default();
        let mut table: Vec<u32> = Vec::with_capacity(acl_count);
        for _ in 0..acl_count {
            let n = c.u32()? as usize;
            if n as u64 > c.remaining() / MIN_ACL_BYTES as u64 {
                return Err(TreeError::Truncated);
            }
            let mut list = Vec::with_capacity(n);
            for _ in 0..n {
                let perms = c.i32()?;
                let scheme = c.string()?;
                let id = c.string()?;
                list.push(Acl {
                    perms,
                    id: Id { scheme, id },
                });
            }
            let index = acls
                .intern(&list)
                .ok_or(TreeError::Invalid("too many ACL lists"))?;
            if table.contains(&index) {
                return Err(TreeError::Invalid("duplicate ACL list"));
            }
            table.push(index);
        }

        // Nodes.
        let count = c.u64()?;
        if count == 0 {
            return Err(TreeError::Invalid("no root"));
        }
        if count > c.remaining() / MIN_NODE_BYTES as u64 {
            return Err(TreeError::Truncated);
        }
        let mut next_acl = 0usize;
        let mut bufs = NodeBufs::default();

        let (root_children, root_stat, root_acl, root_null) =
            read_node(&mut c, &mut bufs, &table, &mut next_acl, nullable)?;
        let root_data = (!root_null).then_some(bufs.data.as_slice());
        if !bufs.name.is_empty() {
            return Err(TreeError::Invalid("root has a name"));
        }
        if root_stat.ephemeral_owner != 0 {
            return Err(TreeError::Invalid("root is not persistent"));
        }
        acls.retain(root_acl);
        let nodes = NodeStore::new(NewNode {
            name: "",
            data: root_data,
            acl: root_acl,
            stat: root_stat,
        })
        .ok_or(TreeError::Invalid("root"))?;
        let mut tree = DataTree::from_root(nodes, acls, root_data.map_or(0, <[u8]>::len));

        /// A node whose children are still being read.
        struct Frame {
            /// The node.
            id: NodeId,
            /// Children not read yet.
            remaining: u32,
            /// Length of `path` up to this node (the root's is 0).
            path_len: usize,
            /// The last child read, to check the sort order.
            last_child: Option<NodeId>,
        }
        let mut path = String::new();
        let mut stack = Vec::new();
        if root_children > 0 {
            stack.push(Frame {
                id: ROOT,
                remaining: root_children,
                path_len: 0,
                last_child: None,
            });
        }
        for _ in 1..count {
            let (num_children, stat, acl, null) =
                read_node(&mut c, &mut bufs, &table, &mut next_acl, nullable)?;
            // read_node checked it is UTF-8.
            let name = std::str::from_utf8(&bufs.name)
                .map_err(|_| TreeError::Invalid("name is not UTF-8"))?;
            let data = (!null).then_some(bufs.data.as_slice());
            while stack.last().is_some_and(|f| f.remaining == 0) {
                stack.pop();
            }
            let Some(frame) = stack.last_mut() else {
                return Err(TreeError::Invalid("more nodes than the tree holds"));
            };
            frame.remaining -= 1;
            let parent = frame.id;
            if let Some(last) = frame.last_child {
                let last = tree
                    .nodes
                    .get(last)
                    .map(|n| n.name_bytes())
                    .unwrap_or_default();
                if last >= name.as_bytes() {
                    return Err(TreeError::Invalid("children not sorted"));
                }
            }
            path.truncate(frame.path_len);
            path.push('/');
            path.push_str(name);
            if name.is_empty() || name.contains('/') || path.len() > MAX_PATH {
                return Err(TreeError::Invalid("bad node name"));
            }
            if !is_valid_path(&path) {
                return Err(TreeError::Invalid("invalid path"));
            }
            let parent_owner = tree.nodes.get(parent).map_or(0, |n| n.ephemeral_owner);
            if ephemeral_owner::is_session(parent_owner) {
                return Err(TreeError::Invalid("ephemeral node with children"));
            }
            tree.acls.retain(acl);
            let id = tree
                .attach(parent, &path, name, data, acl, stat)
                .ok_or(TreeError::Invalid("too many nodes"))?;
            if let Some(frame) = stack.last_mut() {
                frame.last_child = Some(id);
            }
            if num_children > 0 {
                stack.push(Frame {
                    id,
                    remaining: num_children,
                    path_len: path.len(),
                    last_child: None,
                });
            }
        }
        if stack.iter().any(|f| f.remaining > 0) {
            return Err(TreeError::Invalid("fewer nodes than the tree holds"));
        }
        if next_acl != table.len() {
            return Err(TreeError::Invalid("unused ACL list"));
        }
        c.finish()?;
        // Drop the table's own references: the nodes now hold theirs.
        for index in table {
            tree.acls.release(index);
        }
        Ok(tree)
    }
}
