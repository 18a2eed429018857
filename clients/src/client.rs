//! The client handle: typed operations over the session task.

use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rookery_protocol::{
    Acl, AddWatchMode, AddWatchRequest, CheckVersionRequest, CheckWatchesRequest, ClientInfo,
    CreateMode, CreateRequest, CreateTtlRequest, DeleteRequest, ExistsRequest, GetAclRequest,
    GetAllChildrenNumberRequest, GetChildren2Request, GetChildrenRequest, GetDataRequest,
    GetEphemeralsRequest, MultiOp, MultiResult, OpCode, ReconfigRequest, RemoveWatchesRequest,
    Request, Response, SetAclRequest, SetDataRequest, Stat, SyncRequest, WatcherType,
    DEFAULT_MAX_FRAME,
};
use tokio::sync::{mpsc, oneshot};

use crate::connect_string::ConnectString;
use crate::error::{Error, Result};
use crate::session::{
    strip_chroot, AfterReply, Command, PendingRequest, SessionConfig, SessionInfo, SessionTask,
    Shared,
};
use crate::types::{validate_path, CreateOptions, Op, OpResult, ReadOp, ReadResult, SessionState};
use crate::watcher::{
    OneshotWatcher, PersistentWatcher, StateEvents, WatchKind, WatchRegistration, WatchSink,
};

/// The znode holding the ensemble's dynamic configuration (never chrooted).
pub const CONFIG_NODE: &str = "/zookeeper/config";

/// Options for [`Client`]; start from [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    /// The connection string as given.
    connect_string: String,
    /// Requested session timeout (the server clamps it to [2, 20] x tickTime).
    session_timeout: Duration,
    /// How long one request may wait for its reply (including time spent reconnecting).
    request_timeout: Duration,
    /// How long `connect` waits for the first session before giving up.
    connect_timeout: Duration,
    /// Accept read-only servers.
    read_only: bool,
    /// Largest reply accepted.
    max_frame: usize,
    /// Credentials added before anything else is sent.
    auths: Vec<(String, Vec<u8>)>,
}

impl ClientBuilder {
    /// The session timeout to ask for; the server clamps it into its own bounds.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// How long one request may wait for its reply before it fails with a timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long one connection attempt (TCP plus handshake) may take before the next server is tried.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether a read-only server may be used (the handshake's readOnly flag).
    pub fn read_only(mut self, allowed: bool) -> Self {
        self.read_only = allowed;
        self
    }

    /// The largest reply frame accepted, like the server's `jute.maxbuffer`.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Adds credentials (for example `("digest", b"user:password")`) sent on every connection.
    pub fn auth(mut self, scheme: impl Into<String>, auth: impl Into<Vec<u8>>) -> Self {
        self.auths.push((scheme.into(), auth.into()));
        self
    }

    /// Starts the session task and waits until the session is established.
    pub async fn connect(self) -> Result<Client> {
        let client = self.start()?;
        let mut states = client.shared.state.subscribe();
        let wait = async {
            loop {
                let state = *states.borrow_and_update();
                if state.is_connected() {
                    return Ok(());
                }
                if state.is_terminal() {
                    return Err(client.terminal_error());
                }
                if states.changed().await.is_err() {
                    return Err(Error::Closed);
                }
            }
        };
        match tokio::time::timeout(self.connect_timeout, wait).await {
            Ok(Ok(())) => {
                for (scheme, auth) in &self.auths {
                    client.add_auth(scheme, auth.clone()).await?;
                }
                Ok(client)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                client.close().await;
                Err(Error::Connect(format!(
                    "no session with {} within {:?}",
                    self.connect_string, self.connect_timeout
                )))
            }
        }
    }

    /// Starts the session task without waiting; requests queue until the session exists.
    pub fn start(&self) -> Result<Client> {
        let parsed = ConnectString::parse(&self.connect_string)?;
        let mut hosts = parsed.hosts;
        hosts.shuffle(&mut rand::rng());
        let shared = Shared::new();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let config = SessionConfig {
            hosts,
            chroot: parsed.chroot.clone(),
            session_timeout: self.session_timeout,
            read_only: self.read_only,
            max_frame: self.max_frame,
        };
        tokio::spawn(SessionTask::new(config, shared.clone(), cmd_rx).run());
        Ok(Client {
            inner: Arc::new(Inner {
                cmd_tx,
                chroot: parsed.chroot,
                request_timeout: self.request_timeout,
            }),
            shared,
        })
    }
}

/// What every clone of a client shares.
#[derive(Debug)]
struct Inner {
    /// To the session task.
    cmd_tx: mpsc::UnboundedSender<Command>,
    /// Prefix of every server path.
    chroot: Option<String>,
    /// Bound on each request.
    request_timeout: Duration,
}

/// A ZooKeeper client: a cheap-to-clone handle on one session.
///
/// Paths are relative to the connection string's chroot. Every operation may fail with
/// [`Error::ConnectionLoss`] or [`Error::Timeout`] (outcome unknown, session alive) or with
/// [`Error::SessionExpired`] / [`Error::Closed`] (client dead).
#[derive(Debug, Clone)]
pub struct Client {
    /// Channel to the session task, chroot and timeouts, shared by clones.
    inner: Arc<Inner>,
    /// Session state and identity, updated by the session task.
    shared: Arc<Shared>,
}

impl Client {
    /// A builder with defaults: 10 s session timeout, 10 s request timeout, 10 s connect timeout.
    pub fn builder(connect_string: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            connect_string: connect_string.into(),
            session_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            read_only: false,
            max_frame: DEFAULT_MAX_FRAME,
            auths: Vec::new(),
        }
    }

    /// Connects with default options.
    pub async fn connect(connect_string: &str) -> Result<Client> {
        Self::builder(connect_string).connect().await
    }

    /// The current session state.
    pub fn state(&self) -> SessionState {
        *self.shared.state.borrow()
    }

    /// A stream of state transitions from now on.
    pub fn state_events(&self) -> StateEvents {
        StateEvents::new(self.shared.events.subscribe())
    }

    /// A `watch` receiver of the current state (coalesces transitions).
    pub fn state_watch(&self) -> tokio::sync::watch::Receiver<SessionState> {
        self.shared.state.subscribe()
    }

    /// Session id, password, negotiated timeout and current server.
    pub fn session(&self) -> SessionInfo {
        self.shared
            .session
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The chroot of this client, if any.
    pub fn chroot(&self) -> Option<&str> {
        self.inner.chroot.as_deref()
    }

    /// Waits (bounded) until the client is connected.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let mut rx = self.shared.state.subscribe();
        let wait = async {
            loop {
                let state = *rx.borrow_and_update();
                if state.is_connected() {
                    return Ok(());
                }
                if state.is_terminal() {
                    return Err(self.terminal_error());
                }
                if rx.changed().await.is_err() {
                    return Err(Error::Closed);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(Error::Timeout))
    }

    /// Closes the session (its ephemeral nodes go at once) and stops the session task.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.cmd_tx.send(Command::Close(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }

    fn terminal_error(&self) -> Error {
        match self.state() {
            SessionState::Expired => Error::SessionExpired,
            SessionState::AuthFailed => Error::AuthFailed,
            _ => Error::Closed,
        }
    }

    /// Prefixes the chroot after validating the client path.
    fn server_path(&self, path: &str, sequential: bool) -> Result<String> {
        validate_path(path, sequential)?;
        Ok(match &self.inner.chroot {
            None => path.to_string(),
            Some(root) if path == "/" => root.clone(),
            Some(root) => format!("{root}{path}"),
        })
    }

    fn client_path(&self, server_path: &str) -> String {
        strip_chroot(self.inner.chroot.as_deref(), server_path)
    }

    /// Sends a request and waits (bounded by the request timeout) for its reply.
    async fn call(
        &self,
        request: Request,
        watch: Option<WatchRegistration>,
        after: AfterReply,
    ) -> Result<Response> {
        let (tx, rx) = oneshot::channel();
        let pending = PendingRequest {
            request,
            watch,
            after,
            reply: tx,
        };
        if self.inner.cmd_tx.send(Command::Request(pending)).is_err() {
            return Err(self.terminal_error());
        }
        match tokio::time::timeout(self.inner.request_timeout, rx).await {
            Err(_) => Err(Error::Timeout),
            Ok(Err(_)) => Err(self.terminal_error()),
            Ok(Ok(result)) => result,
        }
    }

    fn oneshot_watch(
        &self,
        server_path: &str,
        kind: WatchKind,
        client_path: &str,
    ) -> (WatchRegistration, OneshotWatcher) {
        let (tx, rx) = oneshot::channel();
        (
            WatchRegistration {
                path: server_path.to_string(),
                kind,
                sink: WatchSink::Oneshot(tx),
            },
            OneshotWatcher::new(rx, client_path.to_string()),
        )
    }

    // ---- writes ----

    /// Creates a node (create2 / createContainer / createTTL) and returns its path (with the
    /// sequence suffix for sequential modes) and Stat.
    pub async fn create(
        &self,
        path: &str,
        data: &[u8],
        options: &CreateOptions,
    ) -> Result<(String, Stat)> {
        options.validate()?;
        let server_path = self.server_path(path, options.mode.is_sequential())?;
        let request = create_request(server_path, data, options);
        match self.call(request, None, AfterReply::Nothing).await? {
            Response::Create2(r) => Ok((self.client_path(&r.path), r.stat)),
            Response::Create(r) => Ok((self.client_path(&r.path), Stat::default())),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a node; `version` None matches any version.
    pub async fn delete(&self, path: &str, version: Option<i32>) -> Result<()> {
        let path = self.server_path(path, false)?;
        self.call(
            Request::Delete(DeleteRequest {
                path,
                version: version.unwrap_or(-1),
            }),
            None,
            AfterReply::Nothing,
        )
        .await
        .map(drop)
    }

    /// Replaces a node's data; `version` None matches any version.
    pub async fn set_data(&self, path: &str, data: &[u8], version: Option<i32>) -> Result<Stat> {
        let path = self.server_path(path, false)?;
        let request = Request::SetData(SetDataRequest {
            path,
            data: Some(data.to_vec()),
            version: version.unwrap_or(-1),
        });
        match self.call(request, None, AfterReply::Nothing).await? {
            Response::Stat(stat) => Ok(stat),
            other => Err(unexpected(other)),
        }
    }

    /// Replaces a node's ACL; `version` (the aversion) None matches any.
    pub async fn set_acl(&self, path: &str, acl: &[Acl], version: Option<i32>) -> Result<Stat> {
        let path = self.server_path(path, false)?;
        let request = Request::SetAcl(SetAclRequest {
            path,
            acl: acl.to_vec(),
            version: version.unwrap_or(-1),
        });
        match self.call(request, None, AfterReply::Nothing).await? {
            Response::Stat(stat) => Ok(stat),
            other => Err(unexpected(other)),
        }
    }

    /// Fails with [`Error::BadVersion`] (or NoNode) unless the node has `version`
    /// (a one-op multi, which every server version answers).
    pub async fn check(&self, path: &str, version: i32) -> Result<()> {
        match self.multi(vec![Op::check(path, version)]).await {
            Ok(_) => Ok(()),
            Err(Error::MultiFailed { source, .. }) => Err(*source),
            Err(e) => Err(e),
        }
    }

    /// Applies all writes atomically. On failure nothing is applied and the error says which
    /// operation failed ([`Error::MultiFailed`]).
    pub async fn multi(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let mut wire = Vec::with_capacity(ops.len());
        for op in &ops {
            wire.push(match op {
                Op::Create {
                    path,
                    data,
                    options,
                } => {
                    options.validate()?;
                    let path = self.server_path(path, options.mode.is_sequential())?;
                    match create_request(path, data, options) {
                        Request::Create { op, req } => MultiOp::Create { op, req },
                        Request::CreateTtl(req) => MultiOp::CreateTtl(req),
                        _ => return Err(Error::Protocol("create_request shape".into())),
                    }
                }
                Op::Delete { path, version } => MultiOp::Delete(DeleteRequest {
                    path: self.server_path(path, false)?,
                    version: *version,
                }),
                Op::SetData {
                    path,
                    data,
                    version,
                } => MultiOp::SetData(SetDataRequest {
                    path: self.server_path(path, false)?,
                    data: Some(data.clone()),
                    version: *version,
                }),
                Op::Check { path, version } => MultiOp::Check(CheckVersionRequest {
                    path: self.server_path(path, false)?,
                    version: *version,
                }),
            });
        }
        if wire.is_empty() {
            return Ok(Vec::new());
        }
        let results = match self
            .call(Request::Multi(wire), None, AfterReply::Nothing)
            .await?
        {
            Response::Multi(results) => results,
            other => return Err(unexpected(other)),
        };
        // On failure every result is an error: 0 before the culprit, -2 after it.
        if let Some(index) = results.iter().position(|r| {
            matches!(r, MultiResult::Error(code) if *code != rookery_protocol::ErrorCode::Ok
                && *code != rookery_protocol::ErrorCode::RuntimeInconsistency)
        }) {
            let MultiResult::Error(code) = results[index] else {
                return Err(Error::Protocol("multi error shape".into()));
            };
            return Err(Error::MultiFailed {
                index,
                source: Box::new(Error::from_code(code)),
            });
        }
        if results.len() != ops.len() {
            return Err(Error::Protocol(format!(
                "multi of {} ops answered with {} results",
                ops.len(),
                results.len()
            )));
        }
        results
            .into_iter()
            .map(|r| match r {
                MultiResult::Create(path) => Ok(OpResult::Create {
                    path: self.client_path(&path),
                    stat: Stat::default(),
                }),
                MultiResult::Create2(path, stat) => Ok(OpResult::Create {
                    path: self.client_path(&path),
                    stat,
                }),
                MultiResult::Delete => Ok(OpResult::Delete),
                MultiResult::SetData(stat) => Ok(OpResult::SetData { stat }),
                MultiResult::Check => Ok(OpResult::Check),
                MultiResult::Error(code) => Err(Error::MultiFailed {
                    index: 0,
                    source: Box::new(Error::from_code(code)),
                }),
                other => Err(Error::Protocol(format!(
                    "unexpected multi result {other:?}"
                ))),
            })
            .collect()
    }

    // ---- reads ----

    /// The node's Stat, or None if it does not exist.
    pub async fn exists(&self, path: &str) -> Result<Option<Stat>> {
        let server_path = self.server_path(path, false)?;
        self.exists_inner(server_path, None).await
    }

    /// Like [`Client::exists`], and watches for the node's creation, change or deletion.
    pub async fn exists_w(&self, path: &str) -> Result<(Option<Stat>, OneshotWatcher)> {
        let server_path = self.server_path(path, false)?;
        let (reg, watcher) = self.oneshot_watch(&server_path, WatchKind::Exists, path);
        let stat = self.exists_inner(server_path, Some(reg)).await?;
        Ok((stat, watcher))
    }

    async fn exists_inner(
        &self,
        path: String,
        watch: Option<WatchRegistration>,
    ) -> Result<Option<Stat>> {
        let request = Request::Exists(ExistsRequest {
            path,
            watch: watch.is_some(),
        });
        match self.call(request, watch, AfterReply::Nothing).await {
            Ok(Response::Stat(stat)) => Ok(Some(stat)),
            Ok(other) => Err(unexpected(other)),
            Err(Error::NoNode) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The node's data and Stat.
    pub async fn get_data(&self, path: &str) -> Result<(Vec<u8>, Stat)> {
        let server_path = self.server_path(path, false)?;
        self.get_data_inner(server_path, None).await
    }

    /// Like [`Client::get_data`], and watches for the node's next change or deletion.
    pub async fn get_data_w(&self, path: &str) -> Result<(Vec<u8>, Stat, OneshotWatcher)> {
        let server_path = self.server_path(path, false)?;
        let (reg, watcher) = self.oneshot_watch(&server_path, WatchKind::Data, path);
        let (data, stat) = self.get_data_inner(server_path, Some(reg)).await?;
        Ok((data, stat, watcher))
    }

    /// Like [`Client::get_data`], but keeps null data (`None`, as ZooKeeper stores data
    /// created or set as null) apart from empty data.
    pub async fn get_data_opt(&self, path: &str) -> Result<(Option<Vec<u8>>, Stat)> {
        let server_path = self.server_path(path, false)?;
        self.get_data_raw(server_path, None).await
    }

    async fn get_data_inner(
        &self,
        path: String,
        watch: Option<WatchRegistration>,
    ) -> Result<(Vec<u8>, Stat)> {
        // This client's API has no null data: null reads as empty.
        let (data, stat) = self.get_data_raw(path, watch).await?;
        Ok((data.unwrap_or_default(), stat))
    }

    async fn get_data_raw(
        &self,
        path: String,
        watch: Option<WatchRegistration>,
    ) -> Result<(Option<Vec<u8>>, Stat)> {
        let request = Request::GetData(GetDataRequest {
            path,
            watch: watch.is_some(),
        });
        match self.call(request, watch, AfterReply::Nothing).await? {
            Response::GetData(r) => Ok((r.data, r.stat)),
            other => Err(unexpected(other)),
        }
    }

    /// The node's ACL and Stat.
    pub async fn get_acl(&self, path: &str) -> Result<(Vec<Acl>, Stat)> {
        let path = self.server_path(path, false)?;
        match self
            .call(
                Request::GetAcl(GetAclRequest { path }),
                None,
                AfterReply::Nothing,
            )
            .await?
        {
            Response::GetAcl(r) => Ok((r.acl, r.stat)),
            other => Err(unexpected(other)),
        }
    }

    /// The names of the node's children (unsorted, as the server returns them).
    pub async fn get_children(&self, path: &str) -> Result<Vec<String>> {
        let server_path = self.server_path(path, false)?;
        self.get_children_inner(server_path, None).await
    }

    /// Like [`Client::get_children`], and watches for a child being added or removed (or the
    /// node being deleted).
    pub async fn get_children_w(&self, path: &str) -> Result<(Vec<String>, OneshotWatcher)> {
        let server_path = self.server_path(path, false)?;
        let (reg, watcher) = self.oneshot_watch(&server_path, WatchKind::Child, path);
        let children = self.get_children_inner(server_path, Some(reg)).await?;
        Ok((children, watcher))
    }

    async fn get_children_inner(
        &self,
        path: String,
        watch: Option<WatchRegistration>,
    ) -> Result<Vec<String>> {
        let request = Request::GetChildren(GetChildrenRequest {
            path,
            watch: watch.is_some(),
        });
        match self.call(request, watch, AfterReply::Nothing).await? {
            Response::GetChildren(r) => Ok(r.children),
            other => Err(unexpected(other)),
        }
    }

    /// Children and the node's Stat (getChildren2).
    pub async fn get_children2(&self, path: &str) -> Result<(Vec<String>, Stat)> {
        let server_path = self.server_path(path, false)?;
        self.get_children2_inner(server_path, None).await
    }

    /// Like [`Client::get_children2`], with a child watch.
    pub async fn get_children2_w(&self, path: &str) -> Result<(Vec<String>, Stat, OneshotWatcher)> {
        let server_path = self.server_path(path, false)?;
        let (reg, watcher) = self.oneshot_watch(&server_path, WatchKind::Child, path);
        let (children, stat) = self.get_children2_inner(server_path, Some(reg)).await?;
        Ok((children, stat, watcher))
    }

    async fn get_children2_inner(
        &self,
        path: String,
        watch: Option<WatchRegistration>,
    ) -> Result<(Vec<String>, Stat)> {
        let request = Request::GetChildren2(GetChildren2Request {
            path,
            watch: watch.is_some(),
        });
        match self.call(request, watch, AfterReply::Nothing).await? {
            Response::GetChildren2(r) => Ok((r.children, r.stat)),
            other => Err(unexpected(other)),
        }
    }

    /// Number of all descendants of the node.
    pub async fn get_all_children_number(&self, path: &str) -> Result<i32> {
        let path = self.server_path(path, false)?;
        match self
            .call(
                Request::GetAllChildrenNumber(GetAllChildrenNumberRequest { path }),
                None,
                AfterReply::Nothing,
            )
            .await?
        {
            Response::GetAllChildrenNumber(r) => Ok(r.total_number),
            other => Err(unexpected(other)),
        }
    }

    /// The paths of this session's ephemeral nodes that start with `prefix` ("/" for all).
    pub async fn get_ephemerals(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix_path = self.server_path(prefix, true)?;
        match self
            .call(
                Request::GetEphemerals(GetEphemeralsRequest { prefix_path }),
                None,
                AfterReply::Nothing,
            )
            .await?
        {
            Response::GetEphemerals(r) => {
                let root = self.inner.chroot.as_deref();
                Ok(r.ephemerals
                    .into_iter()
                    .filter(|p| match root {
                        None => true,
                        Some(root) => p == root || p.starts_with(&format!("{root}/")),
                    })
                    .map(|p| self.client_path(&p))
                    .collect())
            }
            other => Err(unexpected(other)),
        }
    }

    /// Several reads in one round trip; each succeeds or fails on its own.
    pub async fn multi_read(&self, ops: Vec<ReadOp>) -> Result<Vec<Result<ReadResult>>> {
        let mut wire = Vec::with_capacity(ops.len());
        for op in &ops {
            wire.push(match op {
                ReadOp::GetData(path) => MultiOp::GetData(GetDataRequest {
                    path: self.server_path(path, false)?,
                    watch: false,
                }),
                ReadOp::GetChildren(path) => MultiOp::GetChildren(GetChildrenRequest {
                    path: self.server_path(path, false)?,
                    watch: false,
                }),
            });
        }
        if wire.is_empty() {
            return Ok(Vec::new());
        }
        match self
            .call(Request::MultiRead(wire), None, AfterReply::Nothing)
            .await?
        {
            Response::Multi(results) => Ok(results
                .into_iter()
                .map(|r| match r {
                    MultiResult::GetData(data, stat) => Ok(ReadResult::Data {
                        data: data.unwrap_or_default(),
                        stat,
                    }),
                    MultiResult::GetChildren(children) => Ok(ReadResult::Children(children)),
                    MultiResult::Error(code) => Err(Error::from_code(code)),
                    other => Err(Error::Protocol(format!(
                        "unexpected multiRead result {other:?}"
                    ))),
                })
                .collect()),
            other => Err(unexpected(other)),
        }
    }

    /// Makes the connected server catch up with the leader before later reads.
    pub async fn sync(&self, path: &str) -> Result<String> {
        let path = self.server_path(path, false)?;
        match self
            .call(
                Request::Sync(SyncRequest { path }),
                None,
                AfterReply::Nothing,
            )
            .await?
        {
            Response::Sync(r) => Ok(self.client_path(&r.path)),
            other => Err(unexpected(other)),
        }
    }

    /// The ensemble configuration (`/zookeeper/config`, outside any chroot).
    pub async fn get_config(&self) -> Result<(Vec<u8>, Stat)> {
        self.get_data_inner(CONFIG_NODE.to_string(), None).await
    }

    /// ZooKeeper's `ZooKeeperAdmin.reconfigure`: changes the ensemble's membership and answers
    /// the new `/zookeeper/config` and its Stat. Incremental with `joining`
    /// (`server.N=host:quorumPort:electionPort[:participant|observer];[clientHost:]clientPort`,
    /// comma-separated) and/or `leaving` (ids, comma-separated), or non-incremental with
    /// `members` (the whole new list). `from_config`: the config version it must replace
    /// (`None` for any). Needs `reconfigEnabled=true` and the superuser (or WRITE on
    /// `/zookeeper/config`).
    pub async fn reconfig(
        &self,
        joining: Option<&str>,
        leaving: Option<&str>,
        members: Option<&str>,
        from_config: Option<i64>,
    ) -> Result<(Vec<u8>, Stat)> {
        let request = Request::Reconfig(ReconfigRequest {
            joining_servers: joining.map(str::to_string),
            leaving_servers: leaving.map(str::to_string),
            new_members: members.map(str::to_string),
            cur_config_id: from_config.unwrap_or(-1),
        });
        match self.call(request, None, AfterReply::Nothing).await? {
            Response::GetData(r) => Ok((r.data.unwrap_or_default(), r.stat)),
            other => Err(unexpected(other)),
        }
    }

    /// The identities this session is authenticated as.
    pub async fn whoami(&self) -> Result<Vec<ClientInfo>> {
        match self
            .call(Request::WhoAmI, None, AfterReply::Nothing)
            .await?
        {
            Response::WhoAmI(r) => Ok(r.client_info),
            other => Err(unexpected(other)),
        }
    }

    // ---- watches and auth ----

    /// Arms a persistent (or persistent recursive) watch; events arrive on the returned stream
    /// until the watch is removed or the session ends.
    pub async fn add_watch(&self, path: &str, mode: AddWatchMode) -> Result<PersistentWatcher> {
        let server_path = self.server_path(path, false)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let reg = WatchRegistration {
            path: server_path.clone(),
            kind: match mode {
                AddWatchMode::Persistent => WatchKind::Persistent,
                AddWatchMode::PersistentRecursive => WatchKind::PersistentRecursive,
            },
            sink: WatchSink::Stream(tx),
        };
        let request = Request::AddWatch(AddWatchRequest {
            path: server_path,
            mode: mode.wire(),
        });
        match self.call(request, Some(reg), AfterReply::Nothing).await? {
            Response::Error(e) if e.err != 0 => Err(Error::from_wire(e.err)),
            Response::Error(_) | Response::Empty => Ok(PersistentWatcher::new(rx)),
            other => Err(unexpected(other)),
        }
    }

    /// Removes this session's watches of `watcher_type` on the node, on the server and here
    /// (local watchers get a `*WatchRemoved` event). [`Error::NoWatcher`] if there were none.
    pub async fn remove_watches(&self, path: &str, watcher_type: WatcherType) -> Result<()> {
        let server_path = self.server_path(path, false)?;
        let request = Request::RemoveWatches(RemoveWatchesRequest {
            path: server_path.clone(),
            watcher_type: watcher_type.wire(),
        });
        let after = AfterReply::RemoveWatches {
            path: server_path,
            watcher_type: watcher_type.wire(),
        };
        self.call(request, None, after).await.map(drop)
    }

    /// Succeeds if this session has a watch of `watcher_type` on the node, else NoWatcher.
    pub async fn check_watches(&self, path: &str, watcher_type: WatcherType) -> Result<()> {
        let path = self.server_path(path, false)?;
        let request = Request::CheckWatches(CheckWatchesRequest {
            path,
            watcher_type: watcher_type.wire(),
        });
        self.call(request, None, AfterReply::Nothing)
            .await
            .map(drop)
    }

    /// Adds credentials to the session (for example `add_auth("digest", "user:pw")`); they are
    /// replayed on every reconnect.
    pub async fn add_auth(&self, scheme: &str, auth: impl Into<Vec<u8>>) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Auth {
            scheme: scheme.to_string(),
            auth: auth.into(),
            reply: tx,
        };
        if self.inner.cmd_tx.send(cmd).is_err() {
            return Err(self.terminal_error());
        }
        match tokio::time::timeout(self.inner.request_timeout, rx).await {
            Err(_) => Err(Error::Timeout),
            Ok(Err(_)) => Err(self.terminal_error()),
            Ok(Ok(r)) => r,
        }
    }

    /// Creates every missing ancestor of `path` (not `path` itself) as persistent nodes.
    pub async fn create_parents(&self, path: &str) -> Result<()> {
        validate_path(path, true)?;
        let mut prefix = String::new();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            prefix.push('/');
            prefix.push_str(part);
            if self.exists(&prefix).await?.is_some() {
                continue;
            }
            match self
                .create(&prefix, b"", &CreateOptions::persistent())
                .await
            {
                Ok(_) | Err(Error::NodeExists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Creates `path` and any missing ancestors; NodeExists on `path` itself is an error.
    pub async fn create_all(
        &self,
        path: &str,
        data: &[u8],
        options: &CreateOptions,
    ) -> Result<(String, Stat)> {
        match self.create(path, data, options).await {
            Err(Error::NoNode) => {
                self.create_parents(path).await?;
                self.create(path, data, options).await
            }
            other => other,
        }
    }

    /// Deletes a node and everything under it (children first). Not atomic.
    pub async fn delete_all(&self, path: &str) -> Result<()> {
        let mut stack = vec![(path.to_string(), false)];
        while let Some((node, expanded)) = stack.pop() {
            if expanded {
                match self.delete(&node, None).await {
                    Ok(()) | Err(Error::NoNode) => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            let children = match self.get_children(&node).await {
                Ok(c) => c,
                Err(Error::NoNode) => continue,
                Err(e) => return Err(e),
            };
            stack.push((node.clone(), true));
            for child in children {
                stack.push((crate::types::join_path(&node, &child), false));
            }
        }
        Ok(())
    }
}

fn create_request(path: String, data: &[u8], options: &CreateOptions) -> Request {
    if let Some(ttl) = options.ttl {
        return Request::CreateTtl(CreateTtlRequest {
            path,
            data: Some(data.to_vec()),
            acl: options.acl.clone(),
            flags: options.mode.wire(),
            ttl: ttl.as_millis() as i64,
        });
    }
    let op = if options.mode == CreateMode::Container {
        OpCode::CreateContainer
    } else {
        OpCode::Create2
    };
    Request::Create {
        op,
        req: CreateRequest {
            path,
            data: Some(data.to_vec()),
            acl: options.acl.clone(),
            flags: options.mode.wire(),
        },
    }
}

fn unexpected(response: Response) -> Error {
    Error::Protocol(format!("unexpected reply {response:?}"))
}
