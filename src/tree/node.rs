//! The znode store: a slab of compact nodes plus a path index.
//!
//! Memory is the design constraint (a million znodes must fit in a few hundred MB), so:
//! a node keeps its own name (not its full path) and its data in one allocation, refers to
//! its parent and ACL by `u32`, and lists its children as `u32` ids; the path index maps a
//! 32-bit hash of the full path to node ids and confirms a hit by walking the parents.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use rookery_protocol::ephemeral_owner;

/// Index of a node in the slab. Never observable outside the tree.
pub(crate) type NodeId = u32;

/// The root is always slot 0.
pub(crate) const ROOT: NodeId = 0;

/// One znode. Stat fields follow ZooKeeper's `StatPersisted`: `cversion` is the number of
/// child creations (what sequential names use); clients see `2 * cversion - numChildren`.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// One allocation: a LEB128 header `name_len << 1 | null`, the name (last path
    /// component), the data. The null bit marks data created or set as null (ZooKeeper
    /// returns it as null, not empty); it lives in the header so that Node stays 96 bytes.
    buf: Box<[u8]>,
    /// The parent's id (the root is its own parent).
    pub(crate) parent: NodeId,
    /// Where this node sits in its parent's child list, for O(1) removal.
    pos_in_parent: u32,
    /// Index of the node's ACL list in the tree's `AclCache`.
    pub(crate) acl: u32,
    /// zxid of the create.
    pub(crate) czxid: i64,
    /// zxid of the last setData (or the create).
    pub(crate) mzxid: i64,
    /// Time of the create, ms since the epoch.
    pub(crate) ctime: i64,
    /// Time of the last setData (or the create).
    pub(crate) mtime: i64,
    /// zxid of the last child create or delete (or the node's own create).
    pub(crate) pzxid: i64,
    /// Owning session, or the container/TTL marker (`ephemeral_owner`), or 0.
    pub(crate) ephemeral_owner: i64,
    /// Data version, bumped by setData.
    pub(crate) version: i32,
    /// Child creations so far (ZooKeeper's persisted cversion).
    pub(crate) cversion: i32,
    /// ACL version, bumped by setACL.
    pub(crate) aversion: i32,
    /// Child ids in no particular order; `None` when the node has no children. Boxed so
    /// that the common childless node pays 8 bytes, not a 24-byte empty `Vec`.
    #[allow(clippy::box_collection)]
    children: Option<Box<Vec<NodeId>>>,
}

/// The fields of a new node, before it gets a slot.
pub(crate) struct NewNode<'a> {
    /// Name (last path component).
    pub(crate) name: &'a str,
    /// Initial data; `None` is null data (length -1 on the wire).
    pub(crate) data: Option<&'a [u8]>,
    /// ACL cache index (the caller holds a reference for the node).
    pub(crate) acl: u32,
    /// Stat fields, as persisted.
    pub(crate) stat: PersistedStat,
}

/// The persisted stat of a node (ZooKeeper's `StatPersisted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PersistedStat {
    /// zxid of the create.
    pub(crate) czxid: i64,
    /// zxid of the last data change.
    pub(crate) mzxid: i64,
    /// Creation time.
    pub(crate) ctime: i64,
    /// Last data change time.
    pub(crate) mtime: i64,
    /// zxid of the last child change.
    pub(crate) pzxid: i64,
    /// Owner session or container/TTL marker.
    pub(crate) ephemeral_owner: i64,
    /// Data version.
    pub(crate) version: i32,
    /// Child creations.
    pub(crate) cversion: i32,
    /// ACL version.
    pub(crate) aversion: i32,
}

impl PersistedStat {
    /// `DataTree.createStat`.
    pub(crate) fn new(zxid: i64, time: i64, ephemeral_owner: i64) -> Self {
        PersistedStat {
            czxid: zxid,
            mzxid: zxid,
            ctime: time,
            mtime: time,
            pzxid: zxid,
            ephemeral_owner,
            version: 0,
            cversion: 0,
            aversion: 0,
        }
    }
}

/// Builds a node buffer: LEB128 header (`name_len << 1 | null`), name, data.
fn pack(name: &[u8], data: Option<&[u8]>) -> Option<Box<[u8]>> {
    let name_len = u64::from(u32::try_from(name.len()).ok()?);
    let mut header = (name_len << 1) | u64::from(data.is_none());
    let data = data.unwrap_or_default();
    let mut buf = Vec::with_capacity(5 + name.len() + data.len());
    loop {
        let byte = (header & 0x7f) as u8;
        header >>= 7;
        if header == 0 {
            buf.push(byte);
            break;
        }
        buf.push(byte | 0x80);
    }
    buf.extend_from_slice(name);
    buf.extend_from_slice(data);
    Some(buf.into_boxed_slice())
}

/// Reads the header `pack` wrote: (name length, data is null, bytes it took).
fn read_header(buf: &[u8]) -> (usize, bool, usize) {
    let mut header = 0u64;
    // A u32 length shifted by one needs at most 33 bits: 5 LEB128 bytes.
    for (i, &b) in buf.iter().enumerate().take(5) {
        header |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let len = usize::try_from(header >> 1).unwrap_or(usize::MAX);
            return (len, header & 1 == 1, i + 1);
        }
    }
    (0, false, buf.len())
}

impl Node {
    fn new(new: &NewNode<'_>, parent: NodeId) -> Option<Node> {
        let s = new.stat;
        Some(Node {
            buf: pack(new.name.as_bytes(), new.data)?,
            parent,
            pos_in_parent: 0,
            acl: new.acl,
            czxid: s.czxid,
            mzxid: s.mzxid,
            ctime: s.ctime,
            mtime: s.mtime,
            pzxid: s.pzxid,
            ephemeral_owner: s.ephemeral_owner,
            version: s.version,
            cversion: s.cversion,
            aversion: s.aversion,
            children: None,
        })
    }

    /// Name and data (`None` if null).
    fn parts(&self) -> (&[u8], Option<&[u8]>) {
        let (len, null, skip) = read_header(&self.buf);
        let rest = self.buf.get(skip..).unwrap_or_default();
        let (name, data) = rest.split_at(len.min(rest.len()));
        (name, if null { None } else { Some(data) })
    }

    /// The name as bytes (always UTF-8: it came from a `&str`).
    pub(crate) fn name_bytes(&self) -> &[u8] {
        self.parts().0
    }

    /// The name (last path component); "" for the root.
    pub(crate) fn name(&self) -> &str {
        std::str::from_utf8(self.name_bytes()).unwrap_or_default()
    }

    /// The node's data; null data reads as empty (its length, as ZooKeeper counts it, is 0).
    pub(crate) fn data(&self) -> &[u8] {
        self.parts().1.unwrap_or_default()
    }

    /// The node's data, `None` if it is null.
    pub(crate) fn data_opt(&self) -> Option<&[u8]> {
        self.parts().1
    }

    /// Replaces the data, returning the old one.
    pub(crate) fn replace_data(&mut self, data: Option<&[u8]>) -> Option<Vec<u8>> {
        let (name, old) = self.parts();
        let old = old.map(<[u8]>::to_vec);
        if let Some(buf) = pack(name, data) {
            self.buf = buf;
        }
        old
    }

    /// Child ids, in no particular order.
    pub(crate) fn children(&self) -> &[NodeId] {
        self.children.as_deref().map_or(&[], |c| c.as_slice())
    }

    /// Number of children.
    pub(crate) fn num_children(&self) -> usize {
        self.children().len()
    }

    /// The persisted stat.
    pub(crate) fn persisted(&self) -> PersistedStat {
        PersistedStat {
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime: self.ctime,
            mtime: self.mtime,
            pzxid: self.pzxid,
            ephemeral_owner: self.ephemeral_owner,
            version: self.version,
            cversion: self.cversion,
            aversion: self.aversion,
        }
    }

    /// The Stat clients see (`DataNode.copyStat`): cversion counts creates and deletes,
    /// container and TTL markers read as 0.
    pub(crate) fn stat(&self) -> rookery_protocol::Stat {
        let num_children = i32::try_from(self.num_children()).unwrap_or(i32::MAX);
        rookery_protocol::Stat {
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime: self.ctime,
            mtime: self.mtime,
            version: self.version,
            cversion: self.cversion.wrapping_mul(2).wrapping_sub(num_children),
            aversion: self.aversion,
            ephemeral_owner: if ephemeral_owner::is_session(self.ephemeral_owner) {
                self.ephemeral_owner
            } else {
                0
            },
            data_length: i32::try_from(self.data().len()).unwrap_or(i32::MAX),
            num_children,
            pzxid: self.pzxid,
        }
    }
}

/// An open-addressing table (linear probing, backward-shift deletion) of node ids keyed
/// by a 32-bit hash of their full path: 8 bytes a slot, about half of what a std `HashMap`
/// of (hash, id) pairs costs. Equal hashes are fine: a hit is confirmed by the caller.
#[derive(Debug, Clone)]
struct PathIndex {
    /// (node id, path hash); `EMPTY` ids mark free slots. The length is a power of two.
    slots: Vec<(NodeId, u32)>,
    /// Occupied slots.
    len: usize,
}

/// The id of a free slot (never a real node: the slab cannot grow that far).
const EMPTY: NodeId = NodeId::MAX;

impl PathIndex {
    fn new() -> Self {
        PathIndex {
            slots: vec![(EMPTY, 0); 16],
            len: 0,
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The first id with this hash that `is` accepts.
    fn find(&self, hash: u32, mut is: impl FnMut(NodeId) -> bool) -> Option<NodeId> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let (id, h) = self.slots[i];
            if id == EMPTY {
                return None;
            }
            if h == hash && is(id) {
                return Some(id);
            }
            i = (i + 1) & mask;
        }
    }

    fn insert(&mut self, hash: u32, id: NodeId) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            let bigger = vec![(EMPTY, 0); self.slots.len() * 2];
            let old = std::mem::replace(&mut self.slots, bigger);
            self.len = 0;
            for (id, h) in old {
                if id != EMPTY {
                    self.insert(h, id);
                }
            }
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        while self.slots[i].0 != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = (id, hash);
        self.len += 1;
    }

    fn remove(&mut self, hash: u32, id: NodeId) {
        let mask = self.mask();
        let mut hole = hash as usize & mask;
        loop {
            match self.slots[hole].0 {
                EMPTY => return,
                found if found == id => break,
                _ => hole = (hole + 1) & mask,
            }
        }
        // Backward shift: pull later entries of the run into the hole when that does not
        // move them before their home slot.
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let (other, h) = self.slots[j];
            if other == EMPTY {
                break;
            }
            let home = h as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
        }
        self.slots[hole] = (EMPTY, 0);
        self.len -= 1;
    }
}

/// Slab + path index.
#[derive(Debug, Clone)]
pub(crate) struct NodeStore {
    /// Nodes by id; `None` marks a free slot (listed in `free`).
    slots: Vec<Option<Node>>,
    /// Free slot ids, reused before the slab grows.
    free: Vec<NodeId>,
    /// Full path → id. The root is not indexed ("/" and "" are special-cased).
    index: PathIndex,
    /// Keyed hasher for paths; random per process so that nobody can aim paths at one
    /// bucket. It decides memory layout only, never a result.
    hasher: RandomState,
    /// Number of live nodes, the root included.
    live: usize,
    /// Test switch: every path hashes to 0, to exercise equal hashes in the index.
    #[cfg(test)]
    constant_hash: bool,
}

impl NodeStore {
    /// A store holding only a root with the given fields.
    pub(crate) fn new(root: NewNode<'_>) -> Option<Self> {
        let node = Node::new(&root, ROOT)?;
        Some(NodeStore {
            slots: vec![Some(node)],
            free: Vec::new(),
            index: PathIndex::new(),
            hasher: RandomState::new(),
            live: 1,
            #[cfg(test)]
            constant_hash: false,
        })
    }

    fn hash(&self, path: &str) -> u32 {
        #[cfg(test)]
        if self.constant_hash {
            return 0;
        }
        let h = self.hasher.hash_one(path);
        (h ^ (h >> 32)) as u32
    }

    /// Number of live nodes, the root included.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn get(&self, id: NodeId) -> Option<&Node> {
        self.slots.get(id as usize).and_then(Option::as_ref)
    }

    pub(crate) fn get_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.slots.get_mut(id as usize).and_then(Option::as_mut)
    }

    /// Ids of all live nodes, in slot order (internal use only: never leak this order).
    #[cfg(test)]
    pub(crate) fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| i as NodeId)
    }

    /// Whether node `id` has exactly this full path.
    fn path_is(&self, mut id: NodeId, path: &str) -> bool {
        let mut rest = path.as_bytes();
        loop {
            if id == ROOT {
                return rest.is_empty();
            }
            let Some(node) = self.get(id) else {
                return false;
            };
            let name = node.name_bytes();
            if !rest.ends_with(name) {
                return false;
            }
            let cut = rest.len() - name.len();
            if cut == 0 || rest[cut - 1] != b'/' {
                return false;
            }
            rest = &rest[..cut - 1];
            id = node.parent;
        }
    }

    /// The node at `path`. Like ZooKeeper's node map, "" is an alias of "/".
    pub(crate) fn lookup(&self, path: &str) -> Option<NodeId> {
        if path.is_empty() || path == "/" {
            return Some(ROOT);
        }
        self.index
            .find(self.hash(path), |id| self.path_is(id, path))
    }

    /// The full path of `id`.
    pub(crate) fn path_of(&self, id: NodeId) -> String {
        if id == ROOT {
            return "/".to_string();
        }
        let mut names = Vec::new();
        let mut cur = id;
        while cur != ROOT {
            let Some(node) = self.get(cur) else {
                break;
            };
            names.push(node.name());
            cur = node.parent;
        }
        let mut path = String::with_capacity(names.iter().map(|n| n.len() + 1).sum());
        for name in names.iter().rev() {
            path.push('/');
            path.push_str(name);
        }
        path
    }

    /// Adds a node under `parent` at `path` (whose last component must be `new.name`).
    /// Touches no stat: callers do the parent bookkeeping. `None` if the slab is full.
    pub(crate) fn insert(
        &mut self,
        parent: NodeId,
        path: &str,
        new: NewNode<'_>,
    ) -> Option<NodeId> {
        let mut node = Node::new(&new, parent)?;
        let id = match self.free.last() {
            Some(&id) => id,
            None => NodeId::try_from(self.slots.len()).ok()?,
        };
        let parent_node = self.get_mut(parent)?;
        let children = parent_node.children.get_or_insert_with(Box::default);
        node.pos_in_parent = u32::try_from(children.len()).ok()?;
        children.push(id);
        if self.free.last() == Some(&id) {
            self.free.pop();
            self.slots[id as usize] = Some(node);
        } else {
            self.slots.push(Some(node));
        }
        self.index.insert(self.hash(path), id);
        self.live += 1;
        Some(id)
    }

    /// Removes a childless node (never the root), returning it detached.
    pub(crate) fn remove(&mut self, id: NodeId, path: &str) -> Option<Node> {
        if id == ROOT || self.get(id)?.num_children() > 0 {
            return None;
        }
        let node = self.slots.get_mut(id as usize)?.take()?;
        // Unlink from the parent: swap-remove and fix the moved sibling's position.
        let pos = node.pos_in_parent as usize;
        let mut moved = None;
        if let Some(parent) = self.get_mut(node.parent) {
            if let Some(children) = parent.children.as_mut() {
                if children.get(pos) == Some(&id) {
                    children.swap_remove(pos);
                    moved = children.get(pos).copied();
                }
                if children.is_empty() {
                    parent.children = None;
                }
            }
        }
        if let Some(moved) = moved {
            if let Some(m) = self.get_mut(moved) {
                m.pos_in_parent = pos as u32;
            }
        }
        self.index.remove(self.hash(path), id);
        self.free.push(id);
        self.live -= 1;
        Some(node)
    }

    /// Checks the store's internal links, for tests.
    #[cfg(test)]
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut count = 0;
        for id in self.ids() {
            count += 1;
            let node = self.get(id).ok_or("missing")?;
            for (pos, &child) in node.children().iter().enumerate() {
                let c = self.get(child).ok_or("dangling child")?;
                if c.parent != id || c.pos_in_parent as usize != pos {
                    return Err(format!("bad child link {id} -> {child}"));
                }
            }
            if id != ROOT {
                let path = self.path_of(id);
                if self.lookup(&path) != Some(id) {
                    return Err(format!("{path} not indexed"));
                }
                let parent = self.get(node.parent).ok_or("dangling parent")?;
                if !parent.children().contains(&id) {
                    return Err(format!("{path} not in its parent's children"));
                }
            }
        }
        if count != self.live {
            return Err(format!("live {} != {count}", self.live));
        }
        let indexed = self.index.len;
        if indexed + 1 != self.live {
            return Err(format!("indexed {indexed} + root != live {}", self.live));
        }
        Ok(())
    }

    /// Forces every path into one hash bucket, to test collision handling.
    #[cfg(test)]
    pub(crate) fn force_hash_collisions(&mut self) {
        self.constant_hash = true;
        let ids: Vec<NodeId> = self.ids().filter(|&id| id != ROOT).collect();
        self.index = PathIndex::new();
        for id in ids {
            self.index.insert(0, id);
        }
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The index agrees with a model under inserts and removes, with clustered hashes
        /// (including runs that wrap around the end of the table).
        #[test]
        fn path_index_matches_model(ops in proptest::collection::vec((any::<bool>(), 0u32..40, prop_oneof![0u32..4, 12u32..16, any::<u32>()]), 0..400)) {
            let mut index = PathIndex::new();
            let mut model: std::collections::HashMap<NodeId, u32> = std::collections::HashMap::new();
            for (insert, id, hash) in ops {
                if insert {
                    if let std::collections::hash_map::Entry::Vacant(v) = model.entry(id) {
                        index.insert(hash, id);
                        v.insert(hash);
                    }
                } else if let Some(h) = model.remove(&id) {
                    index.remove(h, id);
                }
                prop_assert_eq!(index.len, model.len());
                for (&id, &h) in &model {
                    prop_assert_eq!(index.find(h, |x| x == id), Some(id));
                }
                prop_assert_eq!(index.find(7, |x| x == 1000), None);
            }
        }
    }

    #[test]
    fn node_buffer_packing() {
        for name_len in [0usize, 1, 127, 128, 300, 20000] {
            let name = "n".repeat(name_len);
            let new = NewNode {
                name: &name,
                data: Some(b"data"),
                acl: 0,
                stat: PersistedStat::default(),
            };
            let mut node = Node::new(&new, ROOT).unwrap();
            assert_eq!(node.name(), name);
            assert_eq!(node.data(), b"data");
            assert_eq!(node.replace_data(Some(b"xyz")), Some(b"data".to_vec()));
            assert_eq!(node.name(), name);
            assert_eq!(node.data(), b"xyz");
            // Null and empty data are told apart, and the null bit leaves the name intact.
            assert_eq!(node.replace_data(None), Some(b"xyz".to_vec()));
            assert_eq!((node.name(), node.data_opt()), (name.as_str(), None));
            assert_eq!(node.stat().data_length, 0);
            assert_eq!(node.replace_data(Some(b"")), None);
            assert_eq!(
                (node.name(), node.data_opt()),
                (name.as_str(), Some(&b""[..]))
            );
            let null = Node::new(&NewNode { data: None, ..new }, ROOT).unwrap();
            assert_eq!((null.name(), null.data_opt()), (name.as_str(), None));
        }
    }

    /// The null-data flag rides in the buffer header, not in a field.
    #[test]
    fn node_stays_96_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 96);
    }
}
