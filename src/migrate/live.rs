//! `rookery import zookeeper --from ZK_HOST:PORT --server ROOKERY_HOST:PORT [--once]`: a
//! live copy through the client protocol. It arms a persistent recursive watch on the
//! source's "/" first, then copies every node (parents first: data and ACL), then follows
//! the watch's events (created, deleted, data changed) until SIGINT, or stops after the
//! first pass with `--once`. An event is not replayed but answered by reading the source's
//! node as it is by then (see [`reconcile`]), so a copy that lags a busy writer still
//! converges.
//!
//! What the client protocol cannot carry, and so is not preserved (the summary counts it):
//! zxids, times, versions (czxid, mzxid, pzxid, ctime, mtime, version, cversion, aversion:
//! the target assigns its own), sequence counters (a sequential node is copied under its
//! exact name, so the target's next sequence number follows the target's own count),
//! ephemerals (they belong to sessions on the source: skipped), TTL and container kinds
//! (they read as persistent nodes and are copied as such), null data (copied as empty),
//! and ACL changes made after a node was copied (they fire no watch event). /zookeeper
//! (quota and config nodes) is not copied. For an exact copy, stop ZooKeeper and use the
//! offline import.

use std::collections::VecDeque;

use rookery_client::{Acl, AddWatchMode, Client, CreateOptions, Error, EventType};
use tracing::{info, warn};

use super::{connect_client, MigrateError};

/// How to copy.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// The source ZooKeeper.
    pub from: String,
    /// The target rookery.
    pub server: String,
    /// Credentials both sessions add: (scheme, auth).
    pub auth: Vec<(String, Vec<u8>)>,
    /// Stop after the first full pass.
    pub once: bool,
}

/// What a live copy did.
#[derive(Debug, Default)]
pub struct LiveReport {
    /// Nodes created or updated on the target by the first pass.
    pub copied: u64,
    /// Ephemeral nodes skipped.
    pub ephemerals_skipped: u64,
    /// Nodes whose null data was written as empty.
    pub null_as_empty: u64,
    /// Nodes the source would not let us read (NoAuth): not copied.
    pub unreadable: u64,
    /// Changes applied from the watch after the first pass.
    pub events_applied: u64,
}

impl std::fmt::Display for LiveReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "copied {} znodes; then applied {} changes",
            self.copied, self.events_applied
        )?;
        writeln!(
            f,
            "not preserved: zxids, times, versions and sequence counters (the target's own); \
             {} ephemerals skipped; {} null data written as empty; {} unreadable (NoAuth) \
             nodes skipped; TTL/container kinds and later ACL changes are not visible to a client",
            self.ephemerals_skipped, self.null_as_empty, self.unreadable
        )
    }
}

fn client_err(what: &str) -> impl FnOnce(Error) -> MigrateError + '_ {
    move |e| MigrateError::Client(format!("{what}: {e}"))
}

/// Whether the copy leaves `path` alone.
fn excluded(path: &str) -> bool {
    path == "/zookeeper" || path.starts_with("/zookeeper/")
}

/// What [`copy_node`] found on the source and did on the target.
enum Copied {
    /// Created or updated on the target; the node's children on the source.
    Node(Vec<String>),
    /// The source has no such node (any more).
    Gone,
    /// An ephemeral on the source: not copied.
    Ephemeral,
    /// The source would not let us read it (NoAuth): left alone.
    Unreadable,
    /// The target lacks the parent (its events are still queued, or it was deleted there).
    ParentMissing,
}

/// Copies one node from `source` to `target` (create, or set data and ACL if it exists).
/// With `deferred_acl`, the node is created open and its ACL returned for the caller to set
/// once its children are copied (an ACL without CREATE for us would stop them).
async fn copy_node(
    source: &Client,
    target: &Client,
    path: &str,
    report: &mut LiveReport,
    deferred_acl: Option<&mut Vec<(String, Vec<Acl>)>>,
) -> Result<Copied, MigrateError> {
    let (data, stat) = match source.get_data_opt(path).await {
        Ok(r) => r,
        Err(Error::NoNode) => return Ok(Copied::Gone),
        Err(Error::NoAuth) => {
            report.unreadable += 1;
            return Ok(Copied::Unreadable);
        }
        Err(e) => return Err(client_err(path)(e)),
    };
    if stat.ephemeral_owner != 0 {
        report.ephemerals_skipped += 1;
        return Ok(Copied::Ephemeral);
    }
    let acl = match source.get_acl(path).await {
        Ok((acl, _)) => acl,
        Err(Error::NoNode) => return Ok(Copied::Gone),
        Err(e) => return Err(client_err(path)(e)),
    };
    if data.is_none() {
        report.null_as_empty += 1;
    }
    let data = data.unwrap_or_default();
    if path == "/" {
        target
            .set_data("/", &data, None)
            .await
            .map_err(client_err(path))?;
    } else {
        let options = if deferred_acl.is_some() {
            CreateOptions::persistent()
        } else {
            CreateOptions::persistent().with_acl(acl.clone())
        };
        match target.create(path, &data, &options).await {
            Ok(_) => {}
            Err(Error::NodeExists) => match target.set_data(path, &data, None).await {
                Ok(_) => {}
                // Deleted on the target meanwhile (no other writer there but us: only in a
                // test); the next event for it brings it back.
                Err(Error::NoNode) => return Ok(Copied::ParentMissing),
                Err(e) => return Err(client_err(path)(e)),
            },
            Err(Error::NoNode) => return Ok(Copied::ParentMissing),
            Err(e) => return Err(client_err(path)(e)),
        }
    }
    match deferred_acl {
        Some(later) => later.push((path.to_string(), acl)),
        None => {
            if let Err(e) = target.set_acl(path, &acl, None).await {
                warn!(path, error = %e, "could not copy the ACL");
            }
        }
    }
    let children = match source.get_children(path).await {
        Ok(c) => c,
        Err(Error::NoNode) => Vec::new(),
        Err(e) => return Err(client_err(path)(e)),
    };
    Ok(Copied::Node(children))
}

/// The parent of a path other than "/".
fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Makes the target's `path` what the source's is *now*. Watch events carry no data, and by
/// the time one is handled the source may have moved on (deleted the node, deleted and
/// re-created its parent, ...), so an event is not replayed but answered by reading the
/// source: a node the source has is copied, after its missing ancestors; a node it lacks (or
/// holds as an ephemeral) is removed from the target with everything under it. Every change
/// on the source queues an event, so the last event of each path is handled after its last
/// change and the copy converges.
async fn reconcile(
    source: &Client,
    target: &Client,
    path: &str,
    report: &mut LiveReport,
) -> Result<(), MigrateError> {
    // Paths still to copy, deepest last: `path`, then whichever ancestors the target lacks.
    let mut pending = vec![path.to_string()];
    while let Some(p) = pending.last().cloned() {
        match copy_node(source, target, &p, report, None).await? {
            Copied::Node(_) | Copied::Unreadable => {
                pending.pop();
            }
            Copied::ParentMissing if p != "/" && pending.len() <= MAX_DEPTH => {
                pending.push(parent_of(&p).to_string());
            }
            Copied::ParentMissing => {
                return Err(MigrateError::Client(format!(
                    "{path}: cannot create its ancestors on the target"
                )))
            }
            Copied::Gone | Copied::Ephemeral => {
                // Then the source has nothing below `p` either, `path` included.
                match target.delete_all(&p).await {
                    Ok(()) | Err(Error::NoNode) => {}
                    Err(e) => warn!(path = %p, error = %e, "could not delete"),
                }
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Deeper than any path the client protocol can carry (1 MB requests, 2-byte components).
const MAX_DEPTH: usize = 1 << 19;

/// The first pass: every node below "/", parents first.
async fn copy_tree(
    source: &Client,
    target: &Client,
    report: &mut LiveReport,
) -> Result<(), MigrateError> {
    let mut queue = VecDeque::from(["/".to_string()]);
    let mut acls = Vec::new();
    while let Some(path) = queue.pop_front() {
        if excluded(&path) {
            continue;
        }
        if let Copied::Node(children) =
            copy_node(source, target, &path, report, Some(&mut acls)).await?
        {
            report.copied += 1;
            for c in children {
                queue.push_back(if path == "/" {
                    format!("/{c}")
                } else {
                    format!("{path}/{c}")
                });
            }
        }
    }
    // Deepest first, so no ACL is set before everything under it was created.
    for (path, acl) in acls.iter().rev() {
        if let Err(e) = target.set_acl(path, acl, None).await {
            warn!(path, error = %e, "could not copy the ACL");
        }
    }
    Ok(())
}

/// Runs the copy until `stop` resolves (or after one pass with `once`).
pub async fn live_copy(
    opts: &LiveOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<LiveReport, MigrateError> {
    let source = connect_client(&opts.from, &opts.auth).await?;
    let target = connect_client(&opts.server, &opts.auth).await?;
    let mut report = LiveReport::default();
    // Armed before the first pass, so no change made during it is missed.
    let mut watch = source
        .add_watch("/", AddWatchMode::PersistentRecursive)
        .await
        .map_err(client_err("addWatch /"))?;
    copy_tree(&source, &target, &mut report).await?;
    info!(copied = report.copied, "first pass done");
    if !opts.once {
        tokio::pin!(stop);
        loop {
            let event = tokio::select! {
                _ = &mut stop => break,
                e = watch.next() => e,
            };
            let Some(event) = event else {
                return Err(MigrateError::Client(
                    "the source session ended; the copy stopped".into(),
                ));
            };
            if excluded(&event.path) {
                continue;
            }
            match event.event_type {
                EventType::NodeCreated | EventType::NodeDataChanged | EventType::NodeDeleted => {
                    let mut scratch = LiveReport::default();
                    reconcile(&source, &target, &event.path, &mut scratch).await?;
                    report.events_applied += 1;
                    report.ephemerals_skipped += scratch.ephemerals_skipped;
                    report.null_as_empty += scratch.null_as_empty;
                }
                _ => {}
            }
        }
    }
    source.close().await;
    target.close().await;
    Ok(report)
}
