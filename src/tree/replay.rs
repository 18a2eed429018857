//! ZooKeeper's own `DataTree` primitives, for importing a ZooKeeper data dir
//! ([`crate::migrate`]): loading a ZooKeeper snapshot node by node (`DataTree.deserialize`,
//! then `setupQuota`) and replaying its transaction log (`DataTree.processTxn`:
//! `createNode`, `deleteNode`, `setData`, `setACL`, `killSession`, `setCversionPzxid`).
//!
//! Unlike [`DataTree::apply_write`] these check nothing that `PrepRequestProcessor` checked
//! when the transaction was first accepted (ACLs, versions, parents' types): a logged
//! transaction carries its outcome (the new version, the parent's cversion) and is applied
//! as ZooKeeper applies it on restart, so the imported tree is the one ZooKeeper would serve.

use rookery_protocol::{Acl, ErrorCode};

use super::node::{NewNode, Node, NodeId, NodeStore, PersistedStat, ROOT};
use super::quota::{QUOTA_ROOT, STAT_NODE};
use super::{DataTree, TreeError};

/// What [`DataTree::visit_persisted`] calls for each node: path, data (`None` if null),
/// ACL list, persisted stat.
pub(crate) type PersistedVisitor<'a> =
    dyn FnMut(&str, Option<&[u8]>, &[Acl], PersistedStat) -> std::io::Result<()> + 'a;

/// Sets a node's (persisted) cversion to `cversion` (-1: its own + 1) and its pzxid to `zxid`,
/// but only if that raises the cversion (`createNode`, `setCversionPzxid`).
fn raise_cversion(node: &mut Node, cversion: i32, zxid: i64) {
    let cversion = if cversion == -1 {
        node.cversion.wrapping_add(1)
    } else {
        cversion
    };
    if cversion > node.cversion {
        node.cversion = cversion;
        node.pzxid = zxid;
    }
}

/// Why a ZooKeeper snapshot's node cannot be loaded.
fn invalid(what: &'static str) -> TreeError {
    TreeError::Invalid(what)
}

impl DataTree {
    /// A tree holding only a root with these fields: the first node of a ZooKeeper snapshot.
    pub(crate) fn zk_with_root(
        data: Option<&[u8]>,
        acl: &[Acl],
        stat: PersistedStat,
    ) -> Result<DataTree, TreeError> {
        let mut acls = super::acl::AclCache::default();
        let acl = acls.intern(acl).ok_or(invalid("too many ACL lists"))?;
        let nodes = NodeStore::new(NewNode {
            name: "",
            data,
            acl,
            stat,
        })
        .ok_or(invalid("root"))?;
        Ok(DataTree::from_root(
            nodes,
            acls,
            data.map_or(0, <[u8]>::len),
        ))
    }

    /// `DataTree.deserialize`'s step for one node: `path`'s parent must already be loaded
    /// (ZooKeeper writes parents first). Quota stats are left alone (see
    /// [`DataTree::zk_setup_quota`]).
    pub(crate) fn zk_load_node(
        &mut self,
        path: &str,
        data: Option<&[u8]>,
        acl: &[Acl],
        stat: PersistedStat,
    ) -> Result<(), TreeError> {
        let slash = path.rfind('/').ok_or(invalid("path without a slash"))?;
        let (parent_path, name) = (&path[..slash], &path[slash + 1..]);
        if name.is_empty() {
            return Err(invalid("empty node name"));
        }
        let parent = self
            .nodes
            .lookup(parent_path)
            .ok_or(invalid("node before its parent"))?;
        if self.nodes.lookup(path).is_some() {
            return Err(invalid("node listed twice"));
        }
        let acl = self.acls.intern(acl).ok_or(invalid("too many ACL lists"))?;
        if self.attach(parent, path, name, data, acl, stat).is_none() {
            self.acls.release(acl);
            return Err(invalid("too many nodes"));
        }
        Ok(())
    }

    /// `DataTree.setupQuota`: every leaf `zookeeper_limits` node under `/zookeeper/quota`
    /// sets its `zookeeper_stats` sibling to the subtree's current count and bytes
    /// (`updateQuotaForPath`). ZooKeeper does this once a snapshot is loaded, before it
    /// replays the log.
    pub(crate) fn zk_setup_quota(&mut self) {
        let Some(start) = self.nodes.lookup(QUOTA_ROOT) else {
            return;
        };
        let mut limits = Vec::new();
        let mut stack = vec![start];
        while let Some(id) = stack.pop() {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            if node.num_children() == 0 {
                let path = self.nodes.path_of(id);
                if path.ends_with("/zookeeper_limits") {
                    limits.push(path);
                }
            } else {
                stack.extend_from_slice(node.children());
            }
        }
        limits.sort_unstable();
        for path in limits {
            // ZooKeeper: realPath = path.substring(quotaZookeeper.length(), indexOf(limits)).
            let Some(cut) = path.find("/zookeeper_limits") else {
                continue;
            };
            let parent = &path[..cut];
            if parent.len() >= QUOTA_ROOT.len() {
                self.quota_init_stats(parent, STAT_NODE);
            }
        }
    }

    /// `DataTree.createNode` (with `processTxn`'s NodeExists fix-up left to the caller).
    /// `parent_cversion` -1 means "the parent's + 1" (a version-0 create).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn zk_create(
        &mut self,
        path: &str,
        data: Option<&[u8]>,
        acl: &[Acl],
        owner: i64,
        parent_cversion: i32,
        zxid: i64,
        time: i64,
    ) -> Result<(), ErrorCode> {
        let slash = path.rfind('/').ok_or(ErrorCode::BadArguments)?;
        let (parent_path, name) = (&path[..slash], &path[slash + 1..]);
        let parent = self.nodes.lookup(parent_path).ok_or(ErrorCode::NoNode)?;
        if name.is_empty() {
            return Err(ErrorCode::BadArguments);
        }
        if self.nodes.lookup(path).is_some() {
            return Err(ErrorCode::NodeExists);
        }
        let acl = self.acls.intern(acl).ok_or(ErrorCode::SystemError)?;
        let stat = PersistedStat::new(zxid, time, owner);
        if self.attach(parent, path, name, data, acl, stat).is_none() {
            self.acls.release(acl);
            return Err(ErrorCode::SystemError);
        }
        // Replaying a create of a node that a fuzzy snapshot already saw deleted must not
        // move the parent's cversion and pzxid back.
        raise_cversion(self.node_mut(parent)?, parent_cversion, zxid);
        self.quota_init_stats(parent_path, name);
        self.quota_adjust(path, data.map_or(0, <[u8]>::len) as i64, 1);
        Ok(())
    }

    /// `DataTree.deleteNode`: the parent's pzxid rises even when the node is already gone.
    pub(crate) fn zk_delete(&mut self, path: &str, zxid: i64) -> Result<(), ErrorCode> {
        let slash = path.rfind('/').ok_or(ErrorCode::BadArguments)?;
        let parent_path = &path[..slash];
        let parent = self.nodes.lookup(parent_path).ok_or(ErrorCode::NoNode)?;
        let id = self.nodes.lookup(path).filter(|&id| id != ROOT);
        if let Some(id) = id {
            // ZooKeeper would unlink a node that still has children and leave them orphaned;
            // that never happens to a logged delete (PrepRequestProcessor refused NotEmpty).
            if self.node(id)?.num_children() > 0 {
                return Err(ErrorCode::NotEmpty);
            }
        }
        let pnode = self.node_mut(parent)?;
        if zxid > pnode.pzxid {
            pnode.pzxid = zxid;
        }
        let id: NodeId = id.ok_or(ErrorCode::NoNode)?;
        let node = self.detach(id, path).ok_or(ErrorCode::SystemError)?;
        self.acls.release(node.acl);
        self.quota_adjust(path, -(node.data().len() as i64), -1);
        Ok(())
    }

    /// `DataTree.setData`: the version is the one the transaction carries.
    pub(crate) fn zk_set_data(
        &mut self,
        path: &str,
        data: Option<&[u8]>,
        version: i32,
        zxid: i64,
        time: i64,
    ) -> Result<(), ErrorCode> {
        let id = self.nodes.lookup(path).ok_or(ErrorCode::NoNode)?;
        let node = self.node_mut(id)?;
        let old = node.replace_data(data);
        node.version = version;
        node.mtime = time;
        node.mzxid = zxid;
        let (new_len, old_len) = (
            data.map_or(0, <[u8]>::len),
            old.as_ref().map_or(0, Vec::len),
        );
        self.data_size = (self.data_size + new_len as u64).saturating_sub(old_len as u64);
        self.quota_adjust(path, new_len as i64 - old_len as i64, 0);
        Ok(())
    }

    /// `DataTree.setACL`: the aversion is the one the transaction carries.
    pub(crate) fn zk_set_acl(
        &mut self,
        path: &str,
        acl: &[Acl],
        version: i32,
    ) -> Result<(), ErrorCode> {
        let id = self.nodes.lookup(path).ok_or(ErrorCode::NoNode)?;
        let new_acl = self.acls.intern(acl).ok_or(ErrorCode::SystemError)?;
        let node = self.node_mut(id)?;
        let old_acl = node.acl;
        node.acl = new_acl;
        node.aversion = version;
        self.acls.release(old_acl);
        Ok(())
    }

    /// `DataTree.setCversionPzxid`: what `processTxn` does when replaying a create finds
    /// the node already there (a fuzzy snapshot).
    pub(crate) fn zk_set_cversion_pzxid(
        &mut self,
        path: &str,
        cversion: i32,
        zxid: i64,
    ) -> Result<(), ErrorCode> {
        let path = path.strip_suffix('/').unwrap_or(path);
        let id = self.nodes.lookup(path).ok_or(ErrorCode::NoNode)?;
        raise_cversion(self.node_mut(id)?, cversion, zxid);
        Ok(())
    }

    /// `DataTree.killSession`: deletes the paths a CloseSession transaction lists, then
    /// whatever else the session still owns. A path already gone is skipped.
    pub(crate) fn zk_kill_session(&mut self, session_id: i64, zxid: i64, listed: &[String]) {
        for path in listed {
            let _ = self.zk_delete(path, zxid);
        }
        for path in self.ephemerals_of(session_id) {
            let _ = self.zk_delete(&path, zxid);
        }
    }

    /// ZooKeeper's tree digest (`DigestCalculator` version 2, summed as `AdHash`): over every
    /// node not under `/zookeeper/`, the CRC32 of its path ("" for the root), its data and
    /// its persisted stat (czxid, mzxid, pzxid, ctime, mtime, version, cversion, aversion,
    /// ephemeralOwner, big-endian). ZooKeeper logs it after each transaction.
    pub(crate) fn zk_digest(&self) -> i64 {
        let mut sum = 0i64;
        let _ = self.visit_persisted(&mut |path, data, _, st| {
            if path.starts_with("/zookeeper/") {
                return Ok(());
            }
            let mut crc = crc32fast::Hasher::new();
            crc.update(path.as_bytes());
            crc.update(data.unwrap_or_default());
            let mut b = [0u8; 60];
            let longs = [st.czxid, st.mzxid, st.pzxid, st.ctime, st.mtime];
            for (i, v) in longs.iter().enumerate() {
                b[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
            }
            for (i, v) in [st.version, st.cversion, st.aversion].iter().enumerate() {
                b[40 + i * 4..44 + i * 4].copy_from_slice(&v.to_be_bytes());
            }
            b[52..60].copy_from_slice(&st.ephemeral_owner.to_be_bytes());
            crc.update(&b);
            sum = sum.wrapping_add(i64::from(crc.finalize()));
            Ok(())
        });
        sum
    }

    /// Every znode in pre-order (parents before children, children sorted by name) with
    /// its data, ACL list and persisted stat: what a ZooKeeper snapshot holds.
    pub(crate) fn visit_persisted(&self, f: &mut PersistedVisitor<'_>) -> std::io::Result<()> {
        let mut stack: Vec<(NodeId, String)> = vec![(ROOT, String::new())];
        while let Some((id, path)) = stack.pop() {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            f(
                &path,
                node.data_opt(),
                self.acls.get(node.acl),
                node.persisted(),
            )?;
            let mut children: Vec<(&str, NodeId)> = node
                .children()
                .iter()
                .filter_map(|&c| self.nodes.get(c).map(|n| (n.name(), c)))
                .collect();
            children.sort_unstable_by(|a, b| b.0.cmp(a.0));
            for (name, child) in children {
                stack.push((child, format!("{path}/{name}")));
            }
        }
        Ok(())
    }
}
