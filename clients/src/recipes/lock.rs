//! Locks without herd effect: each contender creates an ephemeral sequential node under the
//! lock path and watches only the node it has to wait for.

use std::time::Duration;

use tokio::time::Instant;

use super::{create_protected, delete_retrying, sequence_of, wait_connected_until};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::{join_path, CreateOptions};

/// Node name markers of the three kinds of contenders.
const LOCK: &str = "lock-";
const READ: &str = "read-";
const WRITE: &str = "write-";

/// An exclusive lock (Curator's InterProcessMutex, not reentrant).
#[derive(Debug, Clone)]
pub struct Lock {
    /// The session whose ephemeral nodes take part.
    client: Client,
    /// Parent of the contenders' nodes.
    path: String,
}

/// A held lock (exclusive, read or write). Release it with [`LockGuard::release`]; dropping it
/// releases in the background (if a tokio runtime is running). The lock is also lost if the
/// session expires: check [`LockGuard::is_valid`] before acting on it after a long pause.
#[derive(Debug)]
pub struct LockGuard {
    /// The session whose ephemeral nodes take part.
    client: Client,
    /// Our contender node; None once released.
    node: Option<String>,
}

impl LockGuard {
    /// The contender node that holds the lock.
    pub fn node(&self) -> &str {
        self.node.as_deref().unwrap_or("")
    }

    /// Whether our node still exists (false after session expiry).
    pub async fn is_valid(&self) -> bool {
        match &self.node {
            Some(node) => matches!(self.client.exists(node).await, Ok(Some(_))),
            None => false,
        }
    }

    /// Releases the lock: deletes our node, retrying on connection loss.
    pub async fn release(mut self) -> Result<()> {
        match self.node.take() {
            Some(node) => delete_retrying(&self.client, &node).await,
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            let client = self.client.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(async move {
                        if let Err(e) = delete_retrying(&client, &node).await {
                            tracing::warn!(%node, error = %e, "releasing a dropped lock failed");
                        }
                    });
                }
                Err(_) => {
                    tracing::warn!(%node, "lock guard dropped outside a runtime; node stays until the session ends")
                }
            }
        }
    }
}

impl Lock {
    /// An exclusive lock whose contenders queue under `path`.
    pub fn new(client: Client, path: &str) -> Self {
        Lock {
            client,
            path: path.to_string(),
        }
    }

    /// Waits as long as it takes.
    pub async fn acquire(&self) -> Result<LockGuard> {
        acquire(&self.client, &self.path, LOCK, None)
            .await?
            .ok_or(Error::Timeout)
    }

    /// Waits at most `timeout`; `Ok(None)` if the lock was not obtained in time.
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Option<LockGuard>> {
        acquire(
            &self.client,
            &self.path,
            LOCK,
            Some(Instant::now() + timeout),
        )
        .await
    }

    /// Takes the lock only if it is free now.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>> {
        self.acquire_timeout(Duration::ZERO).await
    }

    /// The contender nodes, in lock order (the first holds the lock).
    pub async fn participants(&self) -> Result<Vec<String>> {
        match self.client.get_children(&self.path).await {
            Ok(children) => Ok(super::sorted_by_sequence(children, LOCK)),
            Err(Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// A read-write lock: readers share, writers exclude everyone; first come, first served.
#[derive(Debug, Clone)]
pub struct RwLock {
    /// The session whose ephemeral nodes take part.
    client: Client,
    /// Parent of the contenders' nodes.
    path: String,
}

impl RwLock {
    /// A readers-writer lock whose contenders queue under `path`.
    pub fn new(client: Client, path: &str) -> Self {
        RwLock {
            client,
            path: path.to_string(),
        }
    }

    /// A shared lock; waits for the writers queued before us. `None` timeout waits forever.
    pub async fn read(&self, timeout: Option<Duration>) -> Result<Option<LockGuard>> {
        acquire(
            &self.client,
            &self.path,
            READ,
            timeout.map(|t| Instant::now() + t),
        )
        .await
    }

    /// An exclusive lock; waits for everyone queued before us. `None` timeout waits forever.
    pub async fn write(&self, timeout: Option<Duration>) -> Result<Option<LockGuard>> {
        acquire(
            &self.client,
            &self.path,
            WRITE,
            timeout.map(|t| Instant::now() + t),
        )
        .await
    }
}

/// The node a contender of `kind` at `index` must wait for, if any.
fn blocker(nodes: &[(i64, String)], index: usize, kind: &str) -> Option<String> {
    if kind == READ {
        // Readers wait only for the closest writer ahead of them.
        nodes[..index]
            .iter()
            .rev()
            .find(|(_, n)| n.contains(WRITE))
            .map(|(_, n)| n.clone())
    } else if index == 0 {
        None
    } else {
        Some(nodes[index - 1].1.clone())
    }
}

async fn acquire(
    client: &Client,
    parent: &str,
    kind: &str,
    deadline: Option<Instant>,
) -> Result<Option<LockGuard>> {
    let node = create_protected(
        client,
        parent,
        kind,
        b"",
        &CreateOptions::ephemeral_sequential(),
        deadline,
    )
    .await?;
    let name = node.rsplit('/').next().unwrap_or_default().to_string();
    match wait_turn(client, parent, &name, kind, deadline).await {
        Ok(true) => Ok(Some(LockGuard {
            client: client.clone(),
            node: Some(node),
        })),
        Ok(false) => {
            delete_retrying(client, &node).await?;
            Ok(None)
        }
        Err(e) => {
            let _ = delete_retrying(client, &node).await;
            Err(e)
        }
    }
}

/// Loops until our node is first among those it must wait for (true), or the deadline
/// passes (false).
async fn wait_turn(
    client: &Client,
    parent: &str,
    name: &str,
    kind: &str,
    deadline: Option<Instant>,
) -> Result<bool> {
    loop {
        let children = match client.get_children(parent).await {
            Ok(c) => c,
            Err(e) if e.is_retryable() => {
                wait_connected_until(client, deadline).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut nodes: Vec<(i64, String)> = children
            .into_iter()
            .filter(|c| c.contains(LOCK) || c.contains(READ) || c.contains(WRITE))
            .filter_map(|c| sequence_of(&c).map(|s| (s, c)))
            .collect();
        nodes.sort();
        let Some(index) = nodes.iter().position(|(_, n)| n == name) else {
            // Our ephemeral node is gone: the session expired or someone deleted it.
            return Err(Error::NoNode);
        };
        let Some(blocking) = blocker(&nodes, index, kind) else {
            return Ok(true);
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
        let watcher = match client.exists_w(&join_path(parent, &blocking)).await {
            Ok((None, _)) => continue, // gone already: look again
            Ok((Some(_), w)) => w,
            Err(e) if e.is_retryable() => {
                wait_connected_until(client, deadline).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        tracing::trace!(%name, %blocking, "waiting for predecessor");
        match deadline {
            None => {
                watcher.changed().await;
            }
            Some(d) => {
                if tokio::time::timeout_at(d, watcher.changed()).await.is_err() {
                    return Ok(false);
                }
            }
        }
        if client.state().is_terminal() {
            return Err(Error::SessionExpired);
        }
    }
}
