//! Request classification and the requests a server answers locally: reads against the tree,
//! pings, authentication and watch management. Writes go through Raft instead.

use rookery_protocol::{
    AddWatchMode, ClientInfo, ErrorCode, Id, Request, Response, SetSaslResponse, SetWatches2,
    SyncResponse, WatcherEvent, WatcherType, WhoAmIResponse,
};

use crate::server::registry::ConnRegistry;
use crate::server::sasl::{new_nonce, SaslState};
use crate::state::Shared;
use crate::tree::{digest_id, validate_path, OpContext};
use crate::watch::WatchKind;

/// Whether a request changes replicated state and so must go through the log.
pub fn is_write(request: &Request) -> bool {
    matches!(
        request,
        Request::Create { .. }
            | Request::CreateTtl(_)
            | Request::Delete(_)
            | Request::DeleteContainer(_)
            | Request::SetData(_)
            | Request::SetAcl(_)
            | Request::Check(_)
            | Request::Multi(_)
            | Request::CloseSession
    )
}

/// Whether `request` is a reconfig that goes through the log: with `reconfigEnabled` on an
/// ensemble (otherwise it is answered locally: ReconfigDisabled, or Unimplemented standalone
/// as ZooKeeper's non-leader `ZooKeeperServer`).
pub fn is_replicated_reconfig(request: &Request, config: &crate::config::Config) -> bool {
    matches!(request, Request::Reconfig(_)) && config.reconfig_enabled && config.is_ensemble()
}

/// What a locally answered request needs from its connection.
pub struct LocalContext<'a> {
    /// The server's shared state (tree, watches, connections).
    pub shared: &'a Shared,
    /// The live connections: addauth updates this connection's ids there, for event ACLs.
    pub conns: &'a ConnRegistry,
    /// Also the watcher id of the connection's watches.
    pub conn_id: u64,
    /// The session the connection carries.
    pub session_id: i64,
    /// The connection's authenticated ids; addauth appends to them.
    pub auth: &'a mut Vec<Id>,
    /// Events to send before the reply (SetWatches may fire some at once).
    pub events: Vec<WatcherEvent>,
    /// The connection's SASL exchange.
    pub sasl: &'a mut SaslState,
}

/// The answer to a local request.
pub struct LocalOutcome {
    /// The reply body or error code.
    pub result: Result<Response, ErrorCode>,
    /// The reply header's zxid: the last applied zxid when the request ran.
    pub zxid: i64,
    /// Close the connection after the reply (ZooKeeper does so after an auth failure).
    pub close: bool,
    /// A body to send after an error header; errors have none, except a failed SASL step
    /// (ZooKeeper sends `SetSASLResponse(null)` with its AuthFailed).
    pub error_body: Option<Response>,
}

impl LocalOutcome {
    fn new(result: Result<Response, ErrorCode>, zxid: i64) -> Self {
        LocalOutcome {
            result,
            zxid,
            close: false,
            error_body: None,
        }
    }
}

/// Runs a request that needs no Raft entry (reads, pings, auth, watch management) against the local tree, in the connection's task.
pub fn execute_local(ctx: &mut LocalContext<'_>, request: &Request) -> LocalOutcome {
    let last_zxid = || ctx.shared.last_zxid();
    match request {
        Request::Ping => LocalOutcome::new(Ok(Response::Empty), last_zxid()),
        Request::Auth(packet) => authenticate(ctx, &packet.scheme, &packet.auth),
        Request::Sync(sync) => LocalOutcome::new(
            Ok(Response::Sync(SyncResponse {
                path: sync.path.clone(),
            })),
            last_zxid(),
        ),
        Request::SetWatches(sw) => {
            let sw2 = SetWatches2 {
                relative_zxid: sw.relative_zxid,
                data_watches: sw.data_watches.clone(),
                exist_watches: sw.exist_watches.clone(),
                child_watches: sw.child_watches.clone(),
                persistent_watches: Vec::new(),
                persistent_recursive_watches: Vec::new(),
            };
            set_watches(ctx, &sw2)
        }
        Request::SetWatches2(sw2) => set_watches(ctx, sw2),
        Request::AddWatch(add) => {
            let kind = match AddWatchMode::from_wire(add.mode) {
                Some(AddWatchMode::Persistent) => WatchKind::Persistent,
                Some(AddWatchMode::PersistentRecursive) => WatchKind::PersistentRecursive,
                None => return LocalOutcome::new(Err(ErrorCode::BadArguments), last_zxid()),
            };
            if let Err(code) = validate_path(&add.path, false) {
                return LocalOutcome::new(Err(code), last_zxid());
            }
            let state = ctx.shared.state().read();
            ctx.shared
                .watches()
                .lock()
                .add(ctx.conn_id, &add.path, kind);
            // ZooKeeper answers addWatch with an ErrorResponse(0) body; Java clients read it.
            LocalOutcome::new(Ok(Response::ADD_WATCH_OK), state.last_zxid)
        }
        Request::CheckWatches(check) => {
            watch_query(ctx, &check.path, check.watcher_type, false, last_zxid())
        }
        Request::RemoveWatches(remove) => {
            watch_query(ctx, &remove.path, remove.watcher_type, true, last_zxid())
        }
        Request::WhoAmI => {
            let client_info = java_set_order(ctx.auth)
                .into_iter()
                .map(|id| ClientInfo {
                    auth_scheme: id.scheme.clone(),
                    user: user_name(id),
                })
                .collect();
            LocalOutcome::new(
                Ok(Response::WhoAmI(WhoAmIResponse { client_info })),
                last_zxid(),
            )
        }
        Request::Sasl(req) => sasl_step(ctx, &req.token, last_zxid()),
        // Disabled (ZooKeeper's default), or enabled on a standalone server, which ZooKeeper
        // answers Unimplemented; on an ensemble an enabled reconfig goes through the log.
        Request::Reconfig(_) => {
            let code = if ctx.shared.config().reconfig_enabled {
                ErrorCode::Unimplemented
            } else {
                ErrorCode::ReconfigDisabled
            };
            LocalOutcome::new(Err(code), last_zxid())
        }
        Request::Exists(_)
        | Request::GetData(_)
        | Request::GetChildren(_)
        | Request::GetChildren2(_)
        | Request::GetAcl(_)
        | Request::MultiRead(_)
        | Request::GetEphemerals(_)
        | Request::GetAllChildrenNumber(_) => read(ctx, request),
        // Writes never reach here; answer defensively rather than panic.
        _ => LocalOutcome::new(Err(ErrorCode::Unimplemented), last_zxid()),
    }
}

fn read(ctx: &mut LocalContext<'_>, request: &Request) -> LocalOutcome {
    let state = ctx.shared.state().read();
    let op_ctx = OpContext {
        zxid: state.last_zxid,
        time_ms: crate::txn::now_ms(),
        session_id: ctx.session_id,
        auth: ctx.auth,
        ttl_enabled: ctx.shared.config().ttl_enabled,
        providers: ctx.shared.config().auth_providers(),
    };
    let result = state.tree.read(&op_ctx, request);
    // Arm the watch while still holding the read lock, so no write slips in between the read
    // and the registration.
    let watch = match (request, &result) {
        (Request::Exists(r), Ok(_)) if r.watch => Some((&r.path, WatchKind::Data)),
        (Request::Exists(r), Err(ErrorCode::NoNode)) if r.watch => {
            Some((&r.path, WatchKind::Exist))
        }
        (Request::GetData(r), Ok(_)) if r.watch => Some((&r.path, WatchKind::Data)),
        (Request::GetChildren(r), Ok(_)) if r.watch => Some((&r.path, WatchKind::Child)),
        (Request::GetChildren2(r), Ok(_)) if r.watch => Some((&r.path, WatchKind::Child)),
        _ => None,
    };
    if let Some((path, kind)) = watch {
        ctx.shared.watches().lock().add(ctx.conn_id, path, kind);
    }
    LocalOutcome::new(result, state.last_zxid)
}

fn set_watches(ctx: &mut LocalContext<'_>, request: &SetWatches2) -> LocalOutcome {
    let state = ctx.shared.state().read();
    let tree = &state.tree;
    let events = ctx.shared.watches().lock().set_watches(
        ctx.conn_id,
        request.relative_zxid,
        request,
        |path: &str| tree.stat(path).map(|stat| (stat.mzxid, stat.pzxid)),
    );
    ctx.events.extend(events);
    LocalOutcome::new(Ok(Response::Empty), state.last_zxid)
}

fn watch_query(
    ctx: &mut LocalContext<'_>,
    path: &str,
    watcher_type: i32,
    remove: bool,
    zxid: i64,
) -> LocalOutcome {
    let Some(wtype) = WatcherType::from_wire(watcher_type) else {
        return LocalOutcome::new(Err(ErrorCode::BadArguments), zxid);
    };
    if let Err(code) = validate_path(path, false) {
        return LocalOutcome::new(Err(code), zxid);
    }
    let mut watches = ctx.shared.watches().lock();
    let found = if remove {
        watches.remove(ctx.conn_id, path, wtype)
    } else {
        watches.has_watch(ctx.conn_id, path, wtype)
    };
    let result = if found {
        Ok(Response::Empty)
    } else {
        Err(ErrorCode::NoWatcher)
    };
    LocalOutcome::new(result, zxid)
}

/// addauth. ZooKeeper answers an unknown scheme or a bad credential with AuthFailed and closes.
fn authenticate(ctx: &mut LocalContext<'_>, scheme: &str, auth: &[u8]) -> LocalOutcome {
    let failed = LocalOutcome {
        result: Err(ErrorCode::AuthFailed),
        zxid: 0,
        close: true,
        error_body: None,
    };
    let mut add = |id: Id| {
        if !ctx.auth.contains(&id) {
            ctx.auth.push(id);
        }
    };
    match scheme {
        "digest" => {
            let Ok(credential) = std::str::from_utf8(auth) else {
                return failed;
            };
            if !credential.contains(':') {
                return failed;
            }
            let digest = digest_id(credential);
            if ctx.shared.config().super_digest.as_deref() == Some(digest.as_str()) {
                add(Id {
                    scheme: "super".to_string(),
                    id: String::new(),
                });
            }
            add(Id {
                scheme: "digest".to_string(),
                id: digest,
            });
        }
        // The client's address is already an id of every connection.
        "ip" => {}
        _ => return failed,
    }
    publish_auth(ctx);
    LocalOutcome::new(Ok(Response::Empty), 0)
}

/// Makes the connection's ids visible to the watch machinery (events are ACL-filtered).
fn publish_auth(ctx: &LocalContext<'_>) {
    if let Some(conn) = ctx.conns.lock().by_id.get_mut(&ctx.conn_id) {
        conn.auth = ctx.auth.clone();
    }
}

/// One SASL (102) step, as `ZooKeeperServer.processSasl`: the reply's zxid is 0; once the
/// DIGEST-MD5 exchange completes the session holds `sasl:USER`; a failed step answers
/// AuthFailed with a null token and closes the connection (zookeeper.allowSaslFailedClients
/// is false by default).
fn sasl_step(ctx: &mut LocalContext<'_>, token: &[u8], last_zxid: i64) -> LocalOutcome {
    let session = format_args!("{:#x}", ctx.session_id);
    let Some(users) = ctx.shared.config().sasl_users.as_ref() else {
        // No JAAS Server section: a clean error instead of a dropped connection.
        return LocalOutcome::new(Err(ErrorCode::AuthFailed), last_zxid);
    };
    match ctx.sasl.evaluate(users, token, new_nonce) {
        Ok(step) => {
            if let Some(user) = step.authorized {
                tracing::info!(session = %session, user = %user, "SASL DIGEST-MD5 authentication succeeded");
                let id = Id {
                    scheme: "sasl".to_string(),
                    id: user,
                };
                let is_super = ctx.shared.config().sasl_super_user.as_deref() == Some(&id.id);
                if !ctx.auth.contains(&id) {
                    ctx.auth.push(id);
                }
                // ZooKeeperServer.isSaslSuperUser: the configured user also gets super.
                let super_id = Id {
                    scheme: "super".to_string(),
                    id: String::new(),
                };
                if is_super && !ctx.auth.contains(&super_id) {
                    ctx.auth.push(super_id);
                }
                publish_auth(ctx);
            }
            LocalOutcome::new(
                Ok(Response::Sasl(SetSaslResponse {
                    token: Some(step.token),
                })),
                0,
            )
        }
        Err(e) => {
            tracing::warn!(session = %session, error = %e, "SASL authentication failed; closing the connection");
            LocalOutcome {
                result: Err(ErrorCode::AuthFailed),
                zxid: 0,
                close: true,
                error_body: Some(Response::Sasl(SetSaslResponse { token: None })),
            }
        }
    }
}

/// The order in which ZooKeeper lists a connection's ids: its `authInfo` is a set backed by a
/// `ConcurrentHashMap` (16 bins while it holds at most 12 entries), so whoAmI walks the bins in
/// index order, entries of one bin in insertion order. The bin comes from the jute-generated
/// `Id.hashCode` (`37 * (37 * 17 + scheme.hashCode()) + id.hashCode()`), spread as
/// `h ^ (h >>> 16)`. Past 12 ids the table would have grown; the larger power of two is used.
fn java_set_order(ids: &[Id]) -> Vec<&Id> {
    fn string_hash(s: &str) -> i32 {
        s.encode_utf16().fold(0i32, |h, unit| {
            h.wrapping_mul(31).wrapping_add(i32::from(unit))
        })
    }
    let mut bins = 16usize;
    while ids.len() > bins / 4 * 3 {
        bins *= 2;
    }
    let bin = |id: &Id| {
        let h = 17i32
            .wrapping_mul(37)
            .wrapping_add(string_hash(&id.scheme))
            .wrapping_mul(37)
            .wrapping_add(string_hash(&id.id)) as u32;
        ((h ^ (h >> 16)) & 0x7fff_ffff) as usize & (bins - 1)
    };
    let mut ordered: Vec<(usize, usize, &Id)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (bin(id), i, id))
        .collect();
    ordered.sort_unstable_by_key(|&(b, i, _)| (b, i));
    ordered.into_iter().map(|(_, _, id)| id).collect()
}

/// The user name whoAmI reports for an id (ZooKeeper's AuthUtil.getUser): the digest
/// provider reports the part before the colon, unknown providers (super) an empty string.
fn user_name(id: &Id) -> String {
    match id.scheme.as_str() {
        "digest" => id.id.split(':').next().unwrap_or_default().to_string(),
        // ZooKeeper 3.8 reports the sasl id itself (whoAmI after DIGEST-MD5: sasl/bob), and
        // the certificate's DN for x509.
        "ip" | "sasl" | "x509" => id.id.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(scheme: &str, id: &str) -> Id {
        Id {
            scheme: scheme.into(),
            id: id.into(),
        }
    }

    /// Orders observed from ZooKeeper 3.8's whoAmI: ip before digest u:p, sasl:bob before ip.
    #[test]
    fn who_am_i_lists_ids_in_zookeeper_hash_set_order() {
        let ip = id("ip", "127.0.0.1");
        let digest = id("digest", &digest_id("u:p"));
        let bob = id("sasl", "bob");
        assert_eq!(
            java_set_order(&[ip.clone(), digest.clone()]),
            vec![&ip, &digest]
        );
        assert_eq!(java_set_order(&[ip.clone(), bob.clone()]), vec![&bob, &ip]);
        // Insertion order does not matter, only the bins do.
        assert_eq!(java_set_order(&[bob.clone(), ip.clone()]), vec![&bob, &ip]);
        let many: Vec<Id> = (0..20).map(|i| id("digest", &format!("u{i}:x"))).collect();
        assert_eq!(java_set_order(&many).len(), 20);
    }
}
