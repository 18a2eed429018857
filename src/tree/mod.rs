//! The znode tree and the semantics of every operation, applied deterministically.
//!
//! Every write is a Raft log entry; [`DataTree::apply_write`] runs all of ZooKeeper's
//! `PrepRequestProcessor` checks (path, ACL, versions, parent, ephemeral parent, sequence
//! numbers, TTL) against the current tree and then applies the change like `DataTree`
//! does, returning the reply and the watch triggers. The zxid and the time come from the
//! entry; nothing here reads a clock, draws a random number or does I/O, and no hash-map
//! order reaches a result.
//!
//! Reads ([`DataTree::read`]) do `FinalRequestProcessor`'s ACL checks; the caller arms
//! watches.

mod acl;
mod node;
mod path;
mod quota;
mod replay;
mod snapshot;
mod write;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rookery_protocol::{
    ephemeral_owner, perms, Acl, ErrorCode, GetAclResponse, GetAllChildrenNumberResponse,
    GetChildren2Response, GetChildrenResponse, GetDataResponse, GetEphemeralsResponse, Id, MultiOp,
    MultiResult, Request, Response, Stat,
};

use crate::watch::WatchTrigger;

pub use acl::digest_id;
pub use acl::AuthProviders;
pub(crate) use acl::{check_acl, fixup_acl};
pub use path::{validate_path, SPECIAL_PATHS};
pub use snapshot::TreeError;

use acl::{mask_digest, AclCache};
pub(crate) use node::PersistedStat;
use node::{NewNode, Node, NodeId, NodeStore, ROOT};

/// What an operation needs to know about the request besides its body.
#[derive(Debug, Clone, Copy)]
pub struct OpContext<'a> {
    /// The entry's zxid (its log index): czxid/mzxid/pzxid of what it changes. Unused by reads.
    pub zxid: i64,
    /// The entry's timestamp, ms since the epoch: ctime/mtime of what it changes.
    pub time_ms: i64,
    /// The requesting session: owner of the ephemerals it creates; getEphemerals' subject.
    pub session_id: i64,
    /// The session's authenticated ids, for ACL checks and the `auth` ACL scheme.
    /// `("super", "")` bypasses every ACL check.
    pub auth: &'a [Id],
    /// ZooKeeper's `extendedTypesEnabled`: without it, TTL creates answer Unimplemented.
    pub ttl_enabled: bool,
    /// The optional authentication providers registered (authProvider.N): without one, its
    /// scheme's ACLs are InvalidACL. Every replica must agree, like `ttl_enabled`.
    pub providers: AuthProviders,
}

/// The whole znode tree.
#[derive(Debug, Clone)]
pub struct DataTree {
    /// The znodes and the path index.
    nodes: NodeStore,
    /// Distinct ACL lists, shared by reference count.
    acls: AclCache,
    /// Session id → its ephemeral znodes (`DataTree.ephemerals`).
    ephemerals: HashMap<i64, BTreeSet<NodeId>>,
    /// Container znodes (`DataTree.containers`), for the reaper.
    containers: BTreeSet<NodeId>,
    /// TTL znodes (`DataTree.ttls`), for the reaper.
    ttls: BTreeSet<NodeId>,
    /// Quota'd paths (normalized) → number of `zookeeper_limits` nodes naming them
    /// (ZooKeeper's `PathTrie`), derived from the nodes.
    quotas: BTreeMap<String, u32>,
    /// Sum over znodes of path length (UTF-16 units, as Java counts) plus data length:
    /// ZooKeeper's `approximateDataSize`, kept up to date on every change.
    data_size: u64,
}

impl Default for DataTree {
    fn default() -> Self {
        Self::new()
    }
}

/// The parent part of a path ("" for children of the root).
fn parent_of(path: &str) -> &str {
    &path[..path.rfind('/').unwrap_or(0)]
}

/// Java's `String.length()`: UTF-16 code units.
fn java_len(s: &str) -> u64 {
    s.encode_utf16().count() as u64
}

/// `ZooDefs.Ids.OPEN_ACL_UNSAFE`.
fn open_acl() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

/// `ZooDefs.Ids.READ_ACL_UNSAFE`.
fn read_acl() -> Vec<Acl> {
    vec![Acl {
        perms: perms::READ,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

/// `checkAndIncVersion`: -1 matches any version.
fn check_version(current: i32, expected: i32) -> Result<i32, ErrorCode> {
    if expected != -1 && expected != current {
        Err(ErrorCode::BadVersion)
    } else {
        Ok(current.wrapping_add(1))
    }
}

impl DataTree {
    /// A fresh tree as a ZooKeeper 3.8 standalone server starts: "/", "/zookeeper",
    /// "/zookeeper/quota" (all-zero stats, world:anyone ALL) and "/zookeeper/config"
    /// (world:anyone READ, aversion -1 from `addConfigNode`'s `setACL(.., -1)`).
    pub fn new() -> Self {
        let mut acls = AclCache::default();
        let open = acls.intern(&open_acl()).unwrap_or_default();
        // A store holding only the root always fits: the input is constant.
        #[allow(clippy::expect_used)]
        let nodes = NodeStore::new(NewNode {
            name: "",
            data: Some(&[]),
            acl: open,
            stat: PersistedStat::default(),
        })
        .expect("a one-node store always fits");
        let mut tree = DataTree::from_root(nodes, acls, 0);
        let zk = tree.attach_special(ROOT, "/zookeeper", open_acl(), 0);
        tree.attach_special(zk, "/zookeeper/quota", open_acl(), 0);
        tree.attach_special(zk, "/zookeeper/config", read_acl(), -1);
        tree
    }

    /// A tree of `nodes` (holding only its root, whose data is `root_data_len` bytes) and
    /// `acls`, with empty indexes.
    fn from_root(nodes: NodeStore, acls: AclCache, root_data_len: usize) -> DataTree {
        DataTree {
            nodes,
            acls,
            ephemerals: HashMap::new(),
            containers: BTreeSet::new(),
            ttls: BTreeSet::new(),
            quotas: BTreeMap::new(),
            data_size: java_len("/") + root_data_len as u64,
        }
    }

    fn attach_special(
        &mut self,
        parent: NodeId,
        path: &str,
        acl: Vec<Acl>,
        aversion: i32,
    ) -> NodeId {
        let acl = self.acls.intern(&acl).unwrap_or_default();
        let name = &path[path.rfind('/').map_or(0, |i| i + 1)..];
        let stat = PersistedStat {
            aversion,
            ..PersistedStat::default()
        };
        // The three special nodes, with constant names and empty data, always fit.
        #[allow(clippy::expect_used)]
        self.attach(parent, path, name, Some(&[]), acl, stat)
            .expect("the special nodes always fit")
    }

    // ---- primitives: every structural change goes through attach/detach ----

    fn node(&self, id: NodeId) -> Result<&Node, ErrorCode> {
        self.nodes.get(id).ok_or(ErrorCode::SystemError)
    }

    fn node_mut(&mut self, id: NodeId) -> Result<&mut Node, ErrorCode> {
        self.nodes.get_mut(id).ok_or(ErrorCode::SystemError)
    }

    /// Adds a node and indexes it (ephemerals, containers, TTLs, data size). The caller
    /// holds one ACL reference for it and does the parent's stat bookkeeping.
    fn attach(
        &mut self,
        parent: NodeId,
        path: &str,
        name: &str,
        data: Option<&[u8]>,
        acl: u32,
        stat: PersistedStat,
    ) -> Option<NodeId> {
        let id = self.nodes.insert(
            parent,
            path,
            NewNode {
                name,
                data,
                acl,
                stat,
            },
        )?;
        let owner = stat.ephemeral_owner;
        if ephemeral_owner::is_container(owner) {
            self.containers.insert(id);
        } else if ephemeral_owner::ttl_of(owner).is_some() {
            self.ttls.insert(id);
        } else if owner != 0 {
            self.ephemerals.entry(owner).or_default().insert(id);
        }
        if let Some(target) = quota::limit_target(parent_of(path), name) {
            *self.quotas.entry(target).or_default() += 1;
        }
        self.data_size += java_len(path) + data.map_or(0, <[u8]>::len) as u64;
        Some(id)
    }

    /// Removes a childless node and unindexes it. Its ACL reference passes to the caller.
    fn detach(&mut self, id: NodeId, path: &str) -> Option<Node> {
        let node = self.nodes.remove(id, path)?;
        let owner = node.ephemeral_owner;
        if ephemeral_owner::is_container(owner) {
            self.containers.remove(&id);
        } else if ephemeral_owner::ttl_of(owner).is_some() {
            self.ttls.remove(&id);
        } else if owner != 0 {
            if let Some(set) = self.ephemerals.get_mut(&owner) {
                set.remove(&id);
                if set.is_empty() {
                    self.ephemerals.remove(&owner);
                }
            }
        }
        if let Some(target) = quota::limit_target(parent_of(path), node.name()) {
            if let Some(n) = self.quotas.get_mut(&target) {
                *n -= 1;
                if *n == 0 {
                    self.quotas.remove(&target);
                }
            }
        }
        self.data_size = self
            .data_size
            .saturating_sub(java_len(path) + node.data().len() as u64);
        Some(node)
    }

    /// Sorted full paths of a set of ids.
    fn sorted_paths<'a>(&self, ids: impl IntoIterator<Item = &'a NodeId>) -> Vec<String> {
        let mut paths: Vec<String> = ids.into_iter().map(|&id| self.nodes.path_of(id)).collect();
        paths.sort_unstable();
        paths
    }

    /// Children names, sorted (ZooKeeper returns them in hash-set order; clients sort).
    fn child_names(&self, node: &Node) -> Vec<String> {
        let mut names: Vec<String> = node
            .children()
            .iter()
            .filter_map(|&c| self.nodes.get(c))
            .map(|c| c.name().to_string())
            .collect();
        names.sort_unstable();
        names
    }

    /// Looks `path` up and checks `perm` on it, in FinalRequestProcessor's order
    /// (NoNode before NoAuth).
    fn readable(&self, ctx: &OpContext<'_>, path: &str, perm: i32) -> Result<&Node, ErrorCode> {
        let id = self.nodes.lookup(path).ok_or(ErrorCode::NoNode)?;
        let node = self.node(id)?;
        check_acl(self.acls.get(node.acl), perm, ctx.auth)?;
        Ok(node)
    }

    // ---- reads ----

    /// Serves a read: exists, getData, getChildren, getChildren2, getACL, multiRead,
    /// getEphemerals, getAllChildrenNumber, with ZooKeeper 3.9's ACL checks. Paths are not
    /// validated (ZooKeeper only looks them up), except that exists refuses a NUL.
    /// Any other request answers Unimplemented.
    pub fn read(&self, ctx: &OpContext<'_>, req: &Request) -> Result<Response, ErrorCode> {
        match req {
            Request::Exists(r) => {
                if r.path.contains('\0') {
                    return Err(ErrorCode::BadArguments);
                }
                // Like the reference server CI compares against (Debian's 3.8.0), exists checks
                // no ACL. ZOOKEEPER-2590 (3.8.4, 3.9.2) adds a READ check; see the README.
                let id = self.nodes.lookup(&r.path).ok_or(ErrorCode::NoNode)?;
                let node = self.node(id)?;
                Ok(Response::Stat(node.stat()))
            }
            Request::GetData(r) => {
                let node = self.readable(ctx, &r.path, perms::READ)?;
                Ok(Response::GetData(GetDataResponse {
                    data: node.data_opt().map(<[u8]>::to_vec),
                    stat: node.stat(),
                }))
            }
            Request::GetChildren(r) => {
                let node = self.readable(ctx, &r.path, perms::READ)?;
                Ok(Response::GetChildren(GetChildrenResponse {
                    children: self.child_names(node),
                }))
            }
            Request::GetChildren2(r) => {
                let node = self.readable(ctx, &r.path, perms::READ)?;
                Ok(Response::GetChildren2(GetChildren2Response {
                    children: self.child_names(node),
                    stat: node.stat(),
                }))
            }
            Request::GetAcl(r) => {
                let node = self.readable(ctx, &r.path, perms::READ | perms::ADMIN)?;
                let acl = self.acls.get(node.acl);
                let acl = if check_acl(acl, perms::ADMIN, ctx.auth).is_ok() {
                    acl.to_vec()
                } else {
                    // Without ADMIN, digest hashes are hidden (ZOOKEEPER-1392).
                    acl.iter()
                        .map(|a| {
                            let mut a = a.clone();
                            if a.id.scheme == "digest" {
                                a.id.id = mask_digest(&a.id.id);
                            }
                            a
                        })
                        .collect()
                };
                Ok(Response::GetAcl(GetAclResponse {
                    acl,
                    stat: node.stat(),
                }))
            }
            Request::GetAllChildrenNumber(r) => {
                self.readable(ctx, &r.path, perms::READ)?;
                let total = self.all_children_number(&r.path);
                Ok(Response::GetAllChildrenNumber(
                    GetAllChildrenNumberResponse {
                        total_number: i32::try_from(total).unwrap_or(i32::MAX),
                    },
                ))
            }
            Request::GetEphemerals(r) => {
                let trimmed = r.prefix_path.trim_matches(|c: char| c <= ' ');
                let mut ephemerals = self.ephemerals_of(ctx.session_id);
                if !(trimmed.is_empty() || trimmed == "/") {
                    ephemerals.retain(|p| p.starts_with(r.prefix_path.as_str()));
                }
                Ok(Response::GetEphemerals(GetEphemeralsResponse {
                    ephemerals,
                }))
            }
            Request::MultiRead(ops) => {
                let mut results = Vec::with_capacity(ops.len());
                for op in ops {
                    let result = match op {
                        MultiOp::GetChildren(r) => self
                            .readable(ctx, &r.path, perms::READ)
                            .map(|n| MultiResult::GetChildren(self.child_names(n))),
                        MultiOp::GetData(r) => self.readable(ctx, &r.path, perms::READ).map(|n| {
                            MultiResult::GetData(n.data_opt().map(<[u8]>::to_vec), n.stat())
                        }),
                        // FinalRequestProcessor: "Invalid type of readOp" -> MarshallingError.
                        _ => return Err(ErrorCode::MarshallingError),
                    };
                    results.push(result.unwrap_or_else(MultiResult::Error));
                }
                Ok(Response::Multi(results))
            }
            _ => Err(ErrorCode::Unimplemented),
        }
    }

    /// `DataTree.getAllChildrenNumber`: every descendant. ZooKeeper counts map keys with the
    /// prefix `path + "/"`, so "/" gives all znodes but the root and "" gives all of them.
    fn all_children_number(&self, path: &str) -> usize {
        match path {
            "" => self.nodes.len(),
            "/" => self.nodes.len() - 1,
            _ => {
                let Some(start) = self.nodes.lookup(path) else {
                    return 0;
                };
                let mut count = 0;
                let mut stack = vec![start];
                while let Some(id) = stack.pop() {
                    if let Some(node) = self.nodes.get(id) {
                        count += node.num_children();
                        stack.extend_from_slice(node.children());
                    }
                }
                count
            }
        }
    }

    // ---- sessions, reaper, introspection ----

    /// Session end (close or expiry): deletes the session's ephemerals in sorted path order,
    /// each like a delete (parent pzxid, NodeDeleted + NodeChildrenChanged triggers).
    pub fn close_session(
        &mut self,
        zxid: i64,
        _time_ms: i64,
        session_id: i64,
    ) -> Vec<WatchTrigger> {
        let mut triggers = Vec::new();
        let Some(ids) = self.ephemerals.remove(&session_id) else {
            return triggers;
        };
        for path in self.sorted_paths(&ids) {
            let Some(id) = self.nodes.lookup(&path) else {
                continue;
            };
            let Some(parent) = self.nodes.get(id).map(|n| n.parent) else {
                continue;
            };
            let parent_path = &path[..path.rfind('/').unwrap_or(0)];
            if let Ok((node, _)) =
                self.remove_child(zxid, parent, parent_path, id, &path, &mut triggers)
            {
                self.acls.release(node.acl);
            }
        }
        triggers
    }

    /// What the reaper should delete (`ContainerManager.getCandidates`), sorted: containers
    /// without children that have had one (persisted cversion > 0), and TTL nodes without
    /// children whose mtime is more than their TTL before `now_ms`.
    pub fn reapable_nodes(&self, now_ms: i64) -> Vec<String> {
        self.reapable_nodes_with(now_ms, 0)
    }

    /// Like [`Self::reapable_nodes`], plus containers that never had a child and were last
    /// modified more than `max_never_used_ms` ago (`znode.container.maxNeverUsedIntervalMs`;
    /// 0 disables this, the default).
    pub fn reapable_nodes_with(&self, now_ms: i64, max_never_used_ms: i64) -> Vec<String> {
        let mut ids = Vec::new();
        for &id in &self.containers {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            if node.num_children() == 0
                && (node.cversion > 0
                    || (max_never_used_ms != 0
                        && now_ms.saturating_sub(node.mtime) > max_never_used_ms))
            {
                ids.push(id);
            }
        }
        for &id in &self.ttls {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            let ttl = ephemeral_owner::ttl_of(node.ephemeral_owner).unwrap_or(0);
            if node.num_children() == 0 && ttl != 0 && now_ms.saturating_sub(node.mtime) > ttl {
                ids.push(id);
            }
        }
        self.sorted_paths(&ids)
    }

    /// The Stat clients would see for `path`, if it exists (no ACL check).
    /// The ACL of a node: watch notifications are only delivered to sessions allowed to READ
    /// it (ZooKeeper's CVE-2024-23944 fix).
    pub fn acl_of(&self, path: &str) -> Option<Vec<rookery_protocol::Acl>> {
        let id = self.nodes.lookup(path)?;
        let node = self.node(id).ok()?;
        Some(self.acls.get(node.acl).to_vec())
    }

    /// A node's Stat, or None if it does not exist.
    pub fn stat(&self, path: &str) -> Option<Stat> {
        self.nodes
            .lookup(path)
            .and_then(|id| self.nodes.get(id))
            .map(Node::stat)
    }

    /// ZooKeeper's `getNodeCount` ("Node count" in srvr/stat, `zk_znode_count` in mntr):
    /// its node map holds the root twice ("" and "/"), so this is [`Self::znode_count`] + 1,
    /// e.g. 5 on a fresh server.
    pub fn node_count(&self) -> usize {
        self.nodes.len() + 1
    }

    /// The number of znodes, the root included.
    pub fn znode_count(&self) -> usize {
        self.nodes.len()
    }

    /// `approximateDataSize` (`zk_approximate_data_size`): sum of path lengths and data sizes.
    pub fn approximate_data_size(&self) -> u64 {
        self.data_size
    }

    /// Number of distinct ACL lists in use (`aclCacheSize`).
    pub fn acl_cache_size(&self) -> usize {
        self.acls.len()
    }

    /// The session's ephemeral znodes, sorted.
    pub fn ephemerals_of(&self, session_id: i64) -> Vec<String> {
        self.ephemerals
            .get(&session_id)
            .map(|ids| self.sorted_paths(ids))
            .unwrap_or_default()
    }

    /// Sessions owning at least one ephemeral, ascending.
    pub fn session_ids_with_ephemerals(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.ephemerals.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Number of ephemeral znodes (`zk_ephemerals_count`).
    pub fn ephemerals_count(&self) -> usize {
        self.ephemerals.values().map(BTreeSet::len).sum()
    }
}

/// Trees are equal when they hold the same znodes (paths, stats, data, ACLs): internal ids,
/// slot layout and ACL numbering do not count. Compares the canonical snapshot encodings.
impl PartialEq for DataTree {
    fn eq(&self, other: &Self) -> bool {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        self.serialize(&mut a);
        other.serialize(&mut b);
        a == b
    }
}

impl Eq for DataTree {}

#[cfg(test)]
impl DataTree {
    /// Checks every internal invariant; used by the unit and property tests.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        self.nodes.check()?;
        let mut acl_uses: HashMap<u32, u64> = HashMap::new();
        let mut size = 0u64;
        let mut ephemeral_total = 0;
        for id in self.nodes.ids() {
            let node = self.nodes.get(id).ok_or("missing node")?;
            let path = self.nodes.path_of(id);
            size += java_len(&path) + node.data().len() as u64;
            *acl_uses.entry(node.acl).or_default() += 1;
            let owner = node.ephemeral_owner;
            let stat = node.stat();
            if stat.num_children as usize != node.num_children() {
                return Err(format!("{path}: numChildren"));
            }
            if stat.data_length as usize != node.data().len() {
                return Err(format!("{path}: dataLength"));
            }
            if self.containers.contains(&id) != ephemeral_owner::is_container(owner) {
                return Err(format!("{path}: containers index"));
            }
            if self.ttls.contains(&id) != ephemeral_owner::ttl_of(owner).is_some() {
                return Err(format!("{path}: ttls index"));
            }
            if ephemeral_owner::is_session(owner) {
                ephemeral_total += 1;
                if !self.ephemerals.get(&owner).is_some_and(|s| s.contains(&id)) {
                    return Err(format!("{path}: not indexed under its owner"));
                }
                if node.num_children() > 0 {
                    return Err(format!("{path}: ephemeral with children"));
                }
            }
        }
        if ephemeral_total != self.ephemerals_count() {
            return Err("ephemerals index has extra entries".into());
        }
        if self.ephemerals.values().any(BTreeSet::is_empty) {
            return Err("empty ephemerals set".into());
        }
        let mut quotas: BTreeMap<String, u32> = BTreeMap::new();
        for id in self.nodes.ids() {
            let path = self.nodes.path_of(id);
            let name = self
                .nodes
                .get(id)
                .map(|n| n.name().to_string())
                .unwrap_or_default();
            if let Some(target) = quota::limit_target(parent_of(&path), &name) {
                *quotas.entry(target).or_default() += 1;
            }
        }
        if quotas != self.quotas {
            return Err(format!("quotas {:?} != {quotas:?}", self.quotas));
        }
        if size != self.data_size {
            return Err(format!("data size {} != {size}", self.data_size));
        }
        for index in self.acls.indexes() {
            let uses = acl_uses.get(&index).copied().unwrap_or(0);
            if uses != self.acls.refs(index) {
                return Err(format!(
                    "acl {index}: {uses} uses, {} refs",
                    self.acls.refs(index)
                ));
            }
        }
        if acl_uses.len() != self.acls.len() {
            return Err("node with an unknown ACL index".into());
        }
        Ok(())
    }

    /// Test access to the persisted (create-counting) cversion.
    pub(crate) fn persisted_cversion(&self, path: &str) -> Option<i32> {
        self.nodes
            .lookup(path)
            .and_then(|id| self.nodes.get(id))
            .map(|n| n.cversion)
    }

    /// Test access: overwrite the persisted cversion (to test sequence overflow).
    pub(crate) fn set_persisted_cversion(&mut self, path: &str, cversion: i32) {
        if let Some(node) = self
            .nodes
            .lookup(path)
            .and_then(|id| self.nodes.get_mut(id))
        {
            node.cversion = cversion;
        }
    }

    /// Test access: make every path collide in the index.
    pub(crate) fn force_hash_collisions(&mut self) {
        self.nodes.force_hash_collisions();
    }
}
