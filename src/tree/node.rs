//! The znode store: a slab of compact nodes plus a path index.
//!
//! Memory is the design constraint (a million znodes must fit in a few hundred MB), so:
//! a node keeps its own name (not its full path) and its data in one allocation, refers to
//! its parent and ACL by `u32`, and lists its children as `u32` ids; the path index maps a
//! 64-bit hash of the full path to the node id and confirms a hit by walking the parents.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use rookery_protocol::ephemeral_owner;

/// Index of a node in the slab. Never observable outside the tree.
pub(crate) type NodeId = u32;

/// The root is always slot 0.
pub(crate) const ROOT: NodeId = 0;

/// One znode. Stat fields follow ZooKeeper's `StatPersisted`: `cversion` is the number of
/// child creations (what sequential names use); clients see `2 * cversion - numChildren`.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The node's name (last path component) followed by its data, in one allocation.
    buf: Box<[u8]>,
    /// Length of the name prefix of `buf`.
    name_len: u32,
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
    /// Initial data.
    pub(crate) data: &'a [u8],
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

impl Node {
    fn new(new: &NewNode<'_>, parent: NodeId) -> Option<Node> {
        let mut buf = Vec::with_capacity(new.name.len() + new.data.len());
        buf.extend_from_slice(new.name.as_bytes());
        buf.extend_from_slice(new.data);
        let s = new.stat;
        Some(Node {
            buf: buf.into_boxed_slice(),
            name_len: u32::try_from(new.name.len()).ok()?,
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

    /// The name as bytes (always UTF-8: it came from a `&str`).
    pub(crate) fn name_bytes(&self) -> &[u8] {
        &self.buf[..self.name_len as usize]
    }

    /// The name (last path component); "" for the root.
    pub(crate) fn name(&self) -> &str {
        std::str::from_utf8(self.name_bytes()).unwrap_or_default()
    }

    /// The node's data.
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.name_len as usize..]
    }

    /// Replaces the data, returning the old one.
    pub(crate) fn replace_data(&mut self, data: &[u8]) -> Vec<u8> {
        let old = self.data().to_vec();
        let mut buf = Vec::with_capacity(self.name_len as usize + data.len());
        buf.extend_from_slice(self.name_bytes());
        buf.extend_from_slice(data);
        self.buf = buf.into_boxed_slice();
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

/// A `Hasher` for keys that are already hashes.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Slab + path index.
#[derive(Debug, Clone)]
pub(crate) struct NodeStore {
    /// Nodes by id; `None` marks a free slot (listed in `free`).
    slots: Vec<Option<Node>>,
    /// Free slot ids, reused before the slab grows.
    free: Vec<NodeId>,
    /// Hash of the full path → id. Root is not indexed ("/" and "" are special-cased).
    index: HashMap<u64, NodeId, BuildHasherDefault<IdentityHasher>>,
    /// Further ids whose path hash equals an `index` key (64-bit collisions: rare, but
    /// handled so that correctness never depends on the hash).
    collisions: HashMap<u64, Vec<NodeId>>,
    /// Keyed hasher for paths; random per process so that nobody can aim paths at one
    /// bucket. It decides memory layout only, never a result.
    hasher: RandomState,
    /// Number of live nodes, the root included.
    live: usize,
    /// Test switch: every path hashes to 0, to exercise `collisions`.
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
            index: HashMap::default(),
            collisions: HashMap::new(),
            hasher: RandomState::new(),
            live: 1,
            #[cfg(test)]
            constant_hash: false,
        })
    }

    fn hash(&self, path: &str) -> u64 {
        #[cfg(test)]
        if self.constant_hash {
            return 0;
        }
        self.hasher.hash_one(path)
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
        let hash = self.hash(path);
        let id = *self.index.get(&hash)?;
        if self.path_is(id, path) {
            return Some(id);
        }
        self.collisions
            .get(&hash)?
            .iter()
            .copied()
            .find(|&id| self.path_is(id, path))
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
        let hash = self.hash(path);
        match self.index.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(id);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collisions.entry(hash).or_default().push(id);
            }
        }
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
        // Unindex.
        let hash = self.hash(path);
        if self.index.get(&hash) == Some(&id) {
            let replacement = self.collisions.get_mut(&hash).and_then(|v| v.pop());
            if self.collisions.get(&hash).is_some_and(Vec::is_empty) {
                self.collisions.remove(&hash);
            }
            match replacement {
                Some(other) => {
                    self.index.insert(hash, other);
                }
                None => {
                    self.index.remove(&hash);
                }
            }
        } else if let Some(v) = self.collisions.get_mut(&hash) {
            v.retain(|&other| other != id);
            if v.is_empty() {
                self.collisions.remove(&hash);
            }
        }
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
        let indexed = self.index.len() + self.collisions.values().map(Vec::len).sum::<usize>();
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
        self.index.clear();
        self.collisions.clear();
        for id in ids {
            if let std::collections::hash_map::Entry::Vacant(v) = self.index.entry(0) {
                v.insert(id);
            } else {
                self.collisions.entry(0).or_default().push(id);
            }
        }
    }
}
