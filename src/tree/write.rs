//! Writes: ZooKeeper's `PrepRequestProcessor` checks in its order, then `DataTree`'s change.
//! Every op checks everything before it mutates anything, so a failed op changes nothing;
//! a multi records undo entries and rolls back when a later op fails.

use std::fmt::Write as _;

use rookery_protocol::{
    ephemeral_owner, perms, Acl, Create2Response, CreateMode, CreateResponse, ErrorCode, Id,
    MultiOp, MultiResult, OpCode, Request, Response, Stat,
};

use super::acl::{check_acl, fixup_acl_with, AuthProviders};
use super::node::{Node, NodeId, PersistedStat};
use super::path::{display_parent, is_valid_path, parent_for_create, parent_for_delete};
use super::quota::QuotaChange;
use super::{check_version, DataTree, OpContext};

/// ZooKeeper's `ZooDefs.CONFIG_NODE`.
pub const CONFIG_NODE: &str = "/zookeeper/config";
use crate::watch::WatchTrigger;

/// How to undo one applied step of a multi.
#[derive(Debug)]
enum Undo {
    /// Quota accounting rewrote a stats node's data.
    Quota(QuotaChange),
    /// A node was created: remove it, restore the parent's cversion and pzxid.
    Created {
        /// The created node.
        path: String,
        /// Its parent ("" for the root).
        parent: String,
        /// The parent's persisted cversion before.
        parent_cversion: i32,
        /// The parent's pzxid before.
        parent_pzxid: i64,
    },
    /// A node was deleted: put it back (it still holds its ACL reference), restore the
    /// parent's pzxid.
    Deleted {
        /// The deleted node.
        path: String,
        /// Its parent ("" for the root).
        parent: String,
        /// The detached node.
        node: Node,
        /// The parent's pzxid before.
        parent_pzxid: i64,
    },
    /// A node's data was set: restore data, version, mtime, mzxid.
    DataSet {
        /// The node.
        path: String,
        /// Previous data (`None` if null).
        data: Option<Vec<u8>>,
        /// Previous version.
        version: i32,
        /// Previous mtime.
        mtime: i64,
        /// Previous mzxid.
        mzxid: i64,
    },
}

/// What a successful op produced.
#[derive(Debug)]
enum Done {
    /// A create; `op` (after ZooKeeper's opcode rewriting) decides the result shape.
    Create {
        op: OpCode,
        path: String,
        stat: Stat,
    },
    /// A delete or deleteContainer.
    Delete,
    /// A setData, with the node's new Stat.
    SetData(Stat),
    /// A setACL, with the node's new Stat.
    SetAcl(Stat),
    /// A check, with the node's Stat.
    Check(Stat),
}

impl Done {
    fn into_response(self) -> Response {
        match self {
            Done::Create {
                op: OpCode::Create,
                path,
                ..
            } => Response::Create(CreateResponse { path }),
            Done::Create { path, stat, .. } => Response::Create2(Create2Response { path, stat }),
            Done::Delete => Response::Empty,
            Done::SetData(stat) | Done::SetAcl(stat) | Done::Check(stat) => Response::Stat(stat),
        }
    }

    /// `FinalRequestProcessor`'s multi results: CreateResult(path) for create,
    /// CreateResult(path, stat) for create2/createContainer/createTTL.
    fn into_multi_result(self) -> MultiResult {
        match self {
            Done::Create {
                op: OpCode::Create,
                path,
                ..
            } => MultiResult::Create(path),
            Done::Create { path, stat, .. } => MultiResult::Create2(path, stat),
            Done::Delete => MultiResult::Delete,
            Done::SetData(stat) => MultiResult::SetData(stat),
            Done::SetAcl(_) | Done::Check(_) => MultiResult::Check,
        }
    }
}

/// A create, after ZooKeeper decided which opcode it really is.
#[derive(Debug, Clone, Copy)]
struct CreateSpec<'r> {
    /// create (1), create2 (15), createContainer (19) or createTTL (21).
    op: OpCode,
    /// The requested path (sequential creates append the suffix).
    path: &'r str,
    /// Initial data (`None` if null).
    data: Option<&'r [u8]>,
    /// The requested ACL, before fixupACL.
    acl: &'r [Acl],
    /// The CreateMode flags as sent.
    flags: i32,
    /// -1 unless createTTL.
    ttl: i64,
}

/// One step of a multi, after `MultiOperationRecord` deserialization rewrote creates.
#[derive(Debug)]
enum Step<'r> {
    /// A create of any kind.
    Create(CreateSpec<'r>),
    /// delete(path, version).
    Delete(&'r str, i32),
    /// setData(path, data, version).
    SetData(&'r str, Option<&'r [u8]>, i32),
    /// check(path, version).
    Check(&'r str, i32),
}

/// `EphemeralType.validateTTL`.
fn validate_ttl(mode: CreateMode, ttl: i64) -> Result<(), ErrorCode> {
    let ok = if mode.is_ttl() {
        ttl > 0 && ttl <= ephemeral_owner::MAX_TTL
    } else {
        ttl < 0
    };
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::BadArguments)
    }
}

/// ZooKeeper 3.9 `MultiOperationRecord.deserialize` + `Op.create`: the header opcode of a
/// create is kept unless the flags say container (then createContainer) or TTL; invalid or
/// TTL flags under create/create2/createContainer fail the whole request (MarshallingError);
/// createTTL with non-TTL flags becomes a plain create (or createContainer), its ttl dropped;
/// read ops make the whole multi a MarshallingError.
fn plan(ops: &[MultiOp]) -> Result<Vec<Step<'_>>, ErrorCode> {
    let mut steps = Vec::with_capacity(ops.len());
    for op in ops {
        steps.push(match op {
            MultiOp::Create { op, req } => {
                let mode = CreateMode::from_wire(req.flags).ok_or(ErrorCode::MarshallingError)?;
                if mode.is_ttl() {
                    // CreateOptions validates ttl -1 for a TTL mode: IllegalArgumentException.
                    return Err(ErrorCode::MarshallingError);
                }
                let op = match op {
                    _ if mode.is_container() => OpCode::CreateContainer,
                    OpCode::Create | OpCode::Create2 | OpCode::CreateContainer => *op,
                    _ => return Err(ErrorCode::MarshallingError),
                };
                Step::Create(CreateSpec {
                    op,
                    path: &req.path,
                    data: req.data.as_deref(),
                    acl: &req.acl,
                    flags: req.flags,
                    ttl: -1,
                })
            }
            MultiOp::CreateTtl(req) => {
                let mode = CreateMode::from_wire(req.flags).unwrap_or(CreateMode::Persistent);
                let (op, ttl) = if mode.is_ttl() {
                    (OpCode::CreateTtl, req.ttl)
                } else if mode.is_container() {
                    (OpCode::CreateContainer, -1)
                } else {
                    (OpCode::Create, -1)
                };
                Step::Create(CreateSpec {
                    op,
                    path: &req.path,
                    data: req.data.as_deref(),
                    acl: &req.acl,
                    flags: req.flags,
                    ttl,
                })
            }
            MultiOp::Delete(r) => Step::Delete(&r.path, r.version),
            MultiOp::SetData(r) => Step::SetData(&r.path, r.data.as_deref(), r.version),
            MultiOp::Check(r) => Step::Check(&r.path, r.version),
            MultiOp::GetChildren(_) | MultiOp::GetData(_) => {
                return Err(ErrorCode::MarshallingError)
            }
        });
    }
    Ok(steps)
}

impl DataTree {
    /// Applies a write: create/create2/createContainer, createTTL, delete, setData, setACL,
    /// check, multi, deleteContainer, reconfig. Returns the reply and the watch triggers in
    /// ZooKeeper's order; a failed op changes nothing and triggers nothing. A multi answers
    /// `Ok(Response::Multi)` whether or not it applied (ZooKeeper's ReplyHeader err is 0);
    /// it is `Err(MarshallingError)` only when ZooKeeper cannot even decode it.
    /// Anything that is not a write answers Unimplemented.
    pub fn apply_write(
        &mut self,
        ctx: &OpContext<'_>,
        req: &Request,
    ) -> (Result<Response, ErrorCode>, Vec<WatchTrigger>) {
        let mut triggers = Vec::new();
        let mut undo = Vec::new();
        let result = match req {
            Request::Multi(ops) => return self.multi(ctx, ops),
            Request::Create { op, req } => {
                let spec = CreateSpec {
                    op: *op,
                    path: &req.path,
                    data: req.data.as_deref(),
                    acl: &req.acl,
                    flags: req.flags,
                    ttl: -1,
                };
                self.create(ctx, spec, &mut undo, &mut triggers)
            }
            Request::CreateTtl(req) => {
                let spec = CreateSpec {
                    op: OpCode::CreateTtl,
                    path: &req.path,
                    data: req.data.as_deref(),
                    acl: &req.acl,
                    flags: req.flags,
                    ttl: req.ttl,
                };
                self.create(ctx, spec, &mut undo, &mut triggers)
            }
            Request::Delete(r) => self.delete(ctx, &r.path, r.version, &mut undo, &mut triggers),
            Request::DeleteContainer(r) => {
                self.delete_container(ctx, &r.path, &mut undo, &mut triggers)
            }
            Request::SetData(r) => self.set_data(
                ctx,
                &r.path,
                r.data.as_deref(),
                r.version,
                &mut undo,
                &mut triggers,
            ),
            Request::SetAcl(r) => self.set_acl(ctx, &r.path, &r.acl, r.version),
            Request::Check(r) => self.check(ctx, &r.path, r.version),
            // Standalone with reconfigEnabled=false (ZooKeeper's default).
            Request::Reconfig(_) => Err(ErrorCode::ReconfigDisabled),
            _ => Err(ErrorCode::Unimplemented),
        };
        match result {
            Ok(done) => {
                self.commit(undo);
                (Ok(done.into_response()), triggers)
            }
            Err(code) => {
                // Single ops check before mutating; this only guards against a bug.
                self.rollback(undo);
                (Err(code), Vec::new())
            }
        }
    }

    /// The data of `/zookeeper/config` (the ensemble's dynamic configuration text).
    pub fn config_data(&self) -> Vec<u8> {
        self.nodes
            .lookup(CONFIG_NODE)
            .and_then(|id| self.nodes.get(id))
            .map(|n| n.data().to_vec())
            .unwrap_or_default()
    }

    /// Whether `auth` may reconfig: ZooKeeper checks WRITE on `/zookeeper/config`'s ACL
    /// (world:anyone READ), so only the superuser may, unless the ACL was changed.
    pub fn may_reconfig(&self, auth: &[Id]) -> Result<(), ErrorCode> {
        let id = self.nodes.lookup(CONFIG_NODE).ok_or(ErrorCode::NoNode)?;
        let node = self.node(id)?;
        check_acl(self.acls.get(node.acl), perms::WRITE, auth)
    }

    /// Replaces `/zookeeper/config`'s data as ZooKeeper's reconfig SetDataTxn does (version
    /// +1, mzxid, mtime; no ACL check: the reconfig checked it), returning the new Stat and
    /// the NodeDataChanged trigger. `zxid` 0 only sets the data (the start-up config).
    pub fn set_config(
        &mut self,
        data: &[u8],
        zxid: i64,
        time_ms: i64,
    ) -> Result<(Stat, Vec<WatchTrigger>), ErrorCode> {
        if zxid == 0 {
            let id = self.nodes.lookup(CONFIG_NODE).ok_or(ErrorCode::NoNode)?;
            let old = self.node_mut(id)?.replace_data(Some(data));
            let old_len = old.as_ref().map_or(0, Vec::len) as u64;
            self.data_size = (self.data_size + data.len() as u64).saturating_sub(old_len);
            return Ok((self.node(id)?.stat(), Vec::new()));
        }
        let auth = [Id {
            scheme: "super".to_string(),
            id: String::new(),
        }];
        let ctx = OpContext {
            zxid,
            time_ms,
            session_id: 0,
            auth: &auth,
            ttl_enabled: false,
            providers: AuthProviders::default(),
        };
        let mut undo = Vec::new();
        let mut triggers = Vec::new();
        match self.set_data(&ctx, CONFIG_NODE, Some(data), -1, &mut undo, &mut triggers)? {
            Done::SetData(stat) => {
                self.commit(undo);
                Ok((stat, triggers))
            }
            _ => {
                self.rollback(undo);
                Err(ErrorCode::SystemError)
            }
        }
    }

    /// multi (14): all or nothing. Each op sees the tree as changed by the earlier ones; on
    /// a failure the results are Error(Ok) before the failing op, its code, then
    /// Error(RuntimeInconsistency) (`PrepRequestProcessor` + `DataTree.processTxn`).
    fn multi(
        &mut self,
        ctx: &OpContext<'_>,
        ops: &[MultiOp],
    ) -> (Result<Response, ErrorCode>, Vec<WatchTrigger>) {
        let steps = match plan(ops) {
            Ok(steps) => steps,
            Err(code) => return (Err(code), Vec::new()),
        };
        let mut undo = Vec::new();
        let mut triggers = Vec::new();
        let mut results = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            let done = match *step {
                Step::Create(spec) => self.create(ctx, spec, &mut undo, &mut triggers),
                Step::Delete(path, version) => {
                    self.delete(ctx, path, version, &mut undo, &mut triggers)
                }
                Step::SetData(path, data, version) => {
                    self.set_data(ctx, path, data, version, &mut undo, &mut triggers)
                }
                Step::Check(path, version) => self.check(ctx, path, version),
            };
            match done {
                Ok(done) => results.push(done.into_multi_result()),
                Err(code) => {
                    self.rollback(undo);
                    let results = (0..steps.len())
                        .map(|j| {
                            MultiResult::Error(match j.cmp(&i) {
                                std::cmp::Ordering::Less => ErrorCode::Ok,
                                std::cmp::Ordering::Equal => code,
                                std::cmp::Ordering::Greater => ErrorCode::RuntimeInconsistency,
                            })
                        })
                        .collect();
                    return (Ok(Response::Multi(results)), Vec::new());
                }
            }
        }
        self.commit(undo);
        (Ok(Response::Multi(results)), triggers)
    }

    /// `pRequest2TxnCreate` + `DataTree.createNode`.
    fn create(
        &mut self,
        ctx: &OpContext<'_>,
        spec: CreateSpec<'_>,
        undo: &mut Vec<Undo>,
        triggers: &mut Vec<WatchTrigger>,
    ) -> Result<Done, ErrorCode> {
        let mode = CreateMode::from_wire(spec.flags).ok_or(ErrorCode::BadArguments)?;
        // validateCreateRequest.
        if mode.is_ttl() && !ctx.ttl_enabled {
            return Err(ErrorCode::Unimplemented);
        }
        validate_ttl(mode, spec.ttl)?;
        if spec.op == OpCode::CreateTtl && !mode.is_ttl() {
            // ZooKeeper accepts createTTL with a non-TTL mode and ttl < 0 here, then throws
            // in DataTree (TTL.toEphemeralOwner(-1)) and never answers; refuse it instead.
            return Err(ErrorCode::BadArguments);
        }
        let parent_path = parent_for_create(spec.path)?;
        let acl = fixup_acl_with(spec.acl, ctx.auth, ctx.providers)?;
        let parent = self.nodes.lookup(parent_path).ok_or(ErrorCode::NoNode)?;
        let pnode = self.node(parent)?;
        check_acl(self.acls.get(pnode.acl), perms::CREATE, ctx.auth)?;
        let mut path = spec.path.to_string();
        if mode.is_sequential() {
            // The parent's persisted cversion before the create, %010d of a signed int.
            let _ = write!(path, "{:010}", pnode.cversion);
        }
        if !is_valid_path(&path) {
            return Err(ErrorCode::BadArguments);
        }
        if self.nodes.lookup(&path).is_some() {
            return Err(ErrorCode::NodeExists);
        }
        if ephemeral_owner::is_session(pnode.ephemeral_owner) {
            return Err(ErrorCode::NoChildrenForEphemerals);
        }
        let owner = match spec.op {
            OpCode::CreateContainer => ephemeral_owner::CONTAINER,
            OpCode::CreateTtl => ephemeral_owner::ttl(spec.ttl),
            _ if mode.is_ephemeral() => ctx.session_id,
            _ => 0,
        };
        let (parent_cversion, parent_pzxid) = (pnode.cversion, pnode.pzxid);

        // Checks done: mutate.
        let acl = self.acls.intern(&acl).ok_or(ErrorCode::SystemError)?;
        let name = &path[parent_path.len() + 1..];
        let stat = PersistedStat::new(ctx.zxid, ctx.time_ms, owner);
        let Some(id) = self.attach(parent, &path, name, spec.data, acl, stat) else {
            self.acls.release(acl);
            return Err(ErrorCode::SystemError);
        };
        let pnode = self.node_mut(parent)?;
        pnode.cversion = parent_cversion.wrapping_add(1);
        pnode.pzxid = ctx.zxid;
        let stat = self.node(id)?.stat();
        undo.push(Undo::Created {
            path: path.clone(),
            parent: parent_path.to_string(),
            parent_cversion,
            parent_pzxid,
        });
        // Quota accounting comes after the reply's stat was taken (DataTree.createNode).
        if let Some(change) = self.quota_init_stats(parent_path, name) {
            undo.push(Undo::Quota(change));
        }
        if let Some(change) = self.quota_adjust(&path, spec.data.map_or(0, <[u8]>::len) as i64, 1) {
            undo.push(Undo::Quota(change));
        }
        triggers.push(WatchTrigger::Created(path.clone()));
        triggers.push(WatchTrigger::ChildrenChanged(
            display_parent(parent_path).to_string(),
        ));
        Ok(Done::Create {
            op: spec.op,
            path,
            stat,
        })
    }

    /// delete: NoNode/NoAuth on the parent, then the node's NoNode, BadVersion, NotEmpty.
    fn delete(
        &mut self,
        ctx: &OpContext<'_>,
        path: &str,
        version: i32,
        undo: &mut Vec<Undo>,
        triggers: &mut Vec<WatchTrigger>,
    ) -> Result<Done, ErrorCode> {
        let parent_path = parent_for_delete(path)?;
        let parent = self.nodes.lookup(parent_path).ok_or(ErrorCode::NoNode)?;
        check_acl(
            self.acls.get(self.node(parent)?.acl),
            perms::DELETE,
            ctx.auth,
        )?;
        let id = self.nodes.lookup(path).ok_or(ErrorCode::NoNode)?;
        let node = self.node(id)?;
        check_version(node.version, version)?;
        if node.num_children() > 0 {
            return Err(ErrorCode::NotEmpty);
        }
        self.delete_checked(ctx.zxid, parent, parent_path, id, path, undo, triggers)
    }

    /// deleteContainer (the reaper's request): no ACL or version check; refuses nodes with
    /// children (NotEmpty) and session ephemerals (BadVersion). Like ZooKeeper, it deletes a
    /// childless persistent node too.
    fn delete_container(
        &mut self,
        ctx: &OpContext<'_>,
        path: &str,
        undo: &mut Vec<Undo>,
        triggers: &mut Vec<WatchTrigger>,
    ) -> Result<Done, ErrorCode> {
        let parent_path = parent_for_delete(path)?;
        let id = self.nodes.lookup(path).ok_or(ErrorCode::NoNode)?;
        let node = self.node(id)?;
        if node.num_children() > 0 {
            return Err(ErrorCode::NotEmpty);
        }
        if ephemeral_owner::is_session(node.ephemeral_owner) {
            return Err(ErrorCode::BadVersion);
        }
        let parent = self.nodes.lookup(parent_path).ok_or(ErrorCode::NoNode)?;
        self.delete_checked(ctx.zxid, parent, parent_path, id, path, undo, triggers)
    }

    #[allow(clippy::too_many_arguments)]
    fn delete_checked(
        &mut self,
        zxid: i64,
        parent: NodeId,
        parent_path: &str,
        id: NodeId,
        path: &str,
        undo: &mut Vec<Undo>,
        triggers: &mut Vec<WatchTrigger>,
    ) -> Result<Done, ErrorCode> {
        let parent_pzxid = self.node(parent)?.pzxid;
        let (node, quota) = self.remove_child(zxid, parent, parent_path, id, path, triggers)?;
        undo.push(Undo::Deleted {
            path: path.to_string(),
            parent: parent_path.to_string(),
            node,
            parent_pzxid,
        });
        if let Some(change) = quota {
            undo.push(Undo::Quota(change));
        }
        Ok(Done::Delete)
    }

    /// `DataTree.deleteNode`: unlinks a childless node, raises the parent's pzxid, updates
    /// quota stats, triggers NodeDeleted and the parent's NodeChildrenChanged. The caller
    /// owns the returned node's ACL reference.
    pub(super) fn remove_child(
        &mut self,
        zxid: i64,
        parent: NodeId,
        parent_path: &str,
        id: NodeId,
        path: &str,
        triggers: &mut Vec<WatchTrigger>,
    ) -> Result<(Node, Option<QuotaChange>), ErrorCode> {
        let node = self.detach(id, path).ok_or(ErrorCode::SystemError)?;
        let pnode = self.node_mut(parent)?;
        if zxid > pnode.pzxid {
            pnode.pzxid = zxid;
        }
        let quota = self.quota_adjust(path, -(node.data().len() as i64), -1);
        triggers.push(WatchTrigger::Deleted(path.to_string()));
        triggers.push(WatchTrigger::ChildrenChanged(
            display_parent(parent_path).to_string(),
        ));
        Ok((node, quota))
    }

    /// setData: BadArguments, NoNode, NoAuth (WRITE), BadVersion.
    fn set_data(
        &mut self,
        ctx: &OpContext<'_>,
        path: &str,
        data: Option<&[u8]>,
        version: i32,
        undo: &mut Vec<Undo>,
        triggers: &mut Vec<WatchTrigger>,
    ) -> Result<Done, ErrorCode> {
        if !is_valid_path(path) {
            return Err(ErrorCode::BadArguments);
        }
        let id = self.nodes.lookup(path).ok_or(ErrorCode::NoNode)?;
        let node = self.node(id)?;
        check_acl(self.acls.get(node.acl), perms::WRITE, ctx.auth)?;
        let new_version = check_version(node.version, version)?;
        let node = self.node_mut(id)?;
        let old = node.replace_data(data);
        let (old_version, old_mtime, old_mzxid) = (node.version, node.mtime, node.mzxid);
        node.version = new_version;
        node.mtime = ctx.time_ms;
        node.mzxid = ctx.zxid;
        let stat = node.stat();
        // Null data counts as 0 bytes, as ZooKeeper's `data == null ? 0 : data.length`.
        let (new_len, old_len) = (
            data.map_or(0, <[u8]>::len),
            old.as_ref().map_or(0, Vec::len),
        );
        self.data_size = (self.data_size + new_len as u64).saturating_sub(old_len as u64);
        let bytes_diff = new_len as i64 - old_len as i64;
        undo.push(Undo::DataSet {
            path: path.to_string(),
            data: old,
            version: old_version,
            mtime: old_mtime,
            mzxid: old_mzxid,
        });
        if let Some(change) = self.quota_adjust(path, bytes_diff, 0) {
            undo.push(Undo::Quota(change));
        }
        triggers.push(WatchTrigger::DataChanged(path.to_string()));
        Ok(Done::SetData(stat))
    }

    /// setACL: BadArguments, InvalidACL, NoNode, NoAuth (ADMIN), BadVersion (aversion).
    /// Changes neither mzxid nor mtime and triggers nothing. Not allowed inside a multi.
    fn set_acl(
        &mut self,
        ctx: &OpContext<'_>,
        path: &str,
        acl: &[Acl],
        version: i32,
    ) -> Result<Done, ErrorCode> {
        if !is_valid_path(path) {
            return Err(ErrorCode::BadArguments);
        }
        let acl = fixup_acl_with(acl, ctx.auth, ctx.providers)?;
        let id = self.nodes.lookup(path).ok_or(ErrorCode::NoNode)?;
        let node = self.node(id)?;
        check_acl(self.acls.get(node.acl), perms::ADMIN, ctx.auth)?;
        let new_aversion = check_version(node.aversion, version)?;
        let old_acl = node.acl;
        let new_acl = self.acls.intern(&acl).ok_or(ErrorCode::SystemError)?;
        self.acls.release(old_acl);
        let node = self.node_mut(id)?;
        node.acl = new_acl;
        node.aversion = new_aversion;
        Ok(Done::SetAcl(node.stat()))
    }

    /// check (13): BadArguments, NoNode, NoAuth (READ), BadVersion. Standalone, ZooKeeper
    /// answers a success with a SetDataResponse whose stat is null, which fails to serialize
    /// so the client never hears back; we answer the node's Stat.
    fn check(&mut self, ctx: &OpContext<'_>, path: &str, version: i32) -> Result<Done, ErrorCode> {
        if !is_valid_path(path) {
            return Err(ErrorCode::BadArguments);
        }
        let id = self.nodes.lookup(path).ok_or(ErrorCode::NoNode)?;
        let node = self.node(id)?;
        check_acl(self.acls.get(node.acl), perms::READ, ctx.auth)?;
        check_version(node.version, version)?;
        Ok(Done::Check(node.stat()))
    }

    /// Makes a multi's changes final: deleted nodes give up their ACL references.
    fn commit(&mut self, undo: Vec<Undo>) {
        for step in undo {
            if let Undo::Deleted { node, .. } = step {
                self.acls.release(node.acl);
            }
        }
    }

    /// Reverts applied steps, newest first, restoring exactly the previous tree.
    fn rollback(&mut self, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            match step {
                Undo::Quota(change) => self.quota_undo(change),
                Undo::Created {
                    path,
                    parent,
                    parent_cversion,
                    parent_pzxid,
                } => {
                    if let Some(id) = self.nodes.lookup(&path) {
                        if let Some(node) = self.detach(id, &path) {
                            self.acls.release(node.acl);
                        }
                    }
                    if let Some(p) = self.nodes.lookup(&parent) {
                        if let Some(p) = self.nodes.get_mut(p) {
                            p.cversion = parent_cversion;
                            p.pzxid = parent_pzxid;
                        }
                    }
                }
                Undo::Deleted {
                    path,
                    parent,
                    node,
                    parent_pzxid,
                } => {
                    let Some(pid) = self.nodes.lookup(&parent) else {
                        continue;
                    };
                    if self
                        .attach(
                            pid,
                            &path,
                            node.name(),
                            node.data_opt(),
                            node.acl,
                            node.persisted(),
                        )
                        .is_none()
                    {
                        self.acls.release(node.acl);
                    }
                    if let Some(p) = self.nodes.get_mut(pid) {
                        p.pzxid = parent_pzxid;
                    }
                }
                Undo::DataSet {
                    path,
                    data,
                    version,
                    mtime,
                    mzxid,
                } => {
                    let Some(id) = self.nodes.lookup(&path) else {
                        continue;
                    };
                    let Some(node) = self.nodes.get_mut(id) else {
                        continue;
                    };
                    let new = node.replace_data(data.as_deref());
                    node.version = version;
                    node.mtime = mtime;
                    node.mzxid = mzxid;
                    let (old_len, new_len) =
                        (data.map_or(0, |d| d.len()), new.map_or(0, |d| d.len()));
                    self.data_size =
                        (self.data_size + old_len as u64).saturating_sub(new_len as u64);
                }
            }
        }
    }
}
