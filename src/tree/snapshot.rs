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

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rookery_protocol::{ephemeral_owner, Acl, Id};

use super::acl::AclCache;
use super::node::{NewNode, NodeId, NodeStore, PersistedStat, ROOT};
use super::path::is_valid_path;
use super::{java_len, DataTree};

const MAGIC: &[u8; 8] = b"RKTREE\0\0";
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

/// A bounds-checked reader.
struct Cursor<'a> {
    /// Unread input.
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TreeError> {
        if self.buf.len() < n {
            return Err(TreeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TreeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
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

    fn bytes(&mut self) -> Result<&'a [u8], TreeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<&'a str, TreeError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| TreeError::Invalid("string is not UTF-8"))
    }

    /// A minimal LEB128 varint (anything else is refused, to keep the encoding canonical).
    fn var(&mut self) -> Result<u64, TreeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.take(1)?[0];
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

    fn var_bytes(&mut self) -> Result<&'a [u8], TreeError> {
        let n = self.var()?;
        self.take(usize::try_from(n).map_err(|_| TreeError::Truncated)?)
    }
}

/// One decoded node: name, child count, stat, ACL cache index, data (`None` if null).
type NodeRecord<'a> = (&'a str, u32, PersistedStat, u32, Option<&'a [u8]>);

/// Reads one node; `next_acl` enforces first-use numbering of the ACL table. `nullable`:
/// the data length is stored + 1, with 0 for null (version 3), else as is (version 2).
fn read_node<'a>(
    c: &mut Cursor<'a>,
    table: &[u32],
    next_acl: &mut usize,
    nullable: bool,
) -> Result<NodeRecord<'a>, TreeError> {
    let name =
        std::str::from_utf8(c.var_bytes()?).map_err(|_| TreeError::Invalid("name is not UTF-8"))?;
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
    let data = if nullable {
        match c.var()? {
            0 => None,
            n => Some(c.take(usize::try_from(n - 1).map_err(|_| TreeError::Truncated)?)?),
        }
    } else {
        Some(c.var_bytes()?)
    };
    Ok((name, num_children, stat, table[acl], data))
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
        self.encode(out, VERSION);
    }

    /// The version 2 encoding (null data written as empty), to test that old snapshots load.
    #[cfg(test)]
    pub(crate) fn serialize_v2(&self, out: &mut Vec<u8>) {
        self.encode(out, VERSION_NO_NULL);
    }

    fn encode(&self, out: &mut Vec<u8>, version: u32) {
        let start = out.len();
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
        let crc = crc32fast::hash(&out[start..]);
        put_u32(out, crc);
    }

    /// Decodes a snapshot made by [`DataTree::serialize`]. Rejects damaged or non-canonical
    /// input with an error; never panics.
    pub fn deserialize(bytes: &[u8]) -> Result<Self, TreeError> {
        if bytes.len() < MAGIC.len() + 4 + 4 {
            return Err(TreeError::Truncated);
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let mut c = Cursor { buf: body };
        if c.take(MAGIC.len())? != MAGIC {
            return Err(TreeError::BadMagic);
        }
        let version = c.u32()?;
        if version != VERSION && version != VERSION_NO_NULL {
            return Err(TreeError::UnsupportedVersion(version));
        }
        let nullable = version == VERSION;
        let mut crc_bytes = [0u8; 4];
        crc_bytes.copy_from_slice(crc);
        if crc32fast::hash(body) != u32::from_be_bytes(crc_bytes) {
            return Err(TreeError::Checksum);
        }

        // ACL table.
        let acl_count = c.u32()? as usize;
        if acl_count > c.buf.len() / 4 {
            return Err(TreeError::Truncated);
        }
        let mut acls = AclCache::default();
        let mut table: Vec<u32> = Vec::with_capacity(acl_count);
        for _ in 0..acl_count {
            let n = c.u32()? as usize;
            if n > c.buf.len() / MIN_ACL_BYTES {
                return Err(TreeError::Truncated);
            }
            let mut list = Vec::with_capacity(n);
            for _ in 0..n {
                let perms = c.i32()?;
                let scheme = c.string()?.to_string();
                let id = c.string()?.to_string();
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
        if count > (c.buf.len() / MIN_NODE_BYTES) as u64 {
            return Err(TreeError::Truncated);
        }
        let mut next_acl = 0usize;

        let (name, root_children, root_stat, root_acl, root_data) =
            read_node(&mut c, &table, &mut next_acl, nullable)?;
        if !name.is_empty() {
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
        let mut tree = DataTree {
            nodes,
            acls,
            ephemerals: HashMap::new(),
            containers: BTreeSet::new(),
            ttls: BTreeSet::new(),
            quotas: BTreeMap::new(),
            data_size: java_len("/") + root_data.map_or(0, <[u8]>::len) as u64,
        };

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
            let (name, num_children, stat, acl, data) =
                read_node(&mut c, &table, &mut next_acl, nullable)?;
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
        if !c.buf.is_empty() {
            return Err(TreeError::TrailingBytes(c.buf.len()));
        }
        // Drop the table's own references: the nodes now hold theirs.
        for index in table {
            tree.acls.release(index);
        }
        Ok(tree)
    }
}
