//! Barriers: a single gate that holds waiters while its node exists, and the double barrier
//! that lets N members start together and leave together.

use std::time::Duration;

use tokio::time::Instant;

use super::{delete_retrying, guid, wait_connected_until};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::{join_path, CreateOptions};

/// Curator's DistributedBarrier: waiters block while the barrier node exists.
#[derive(Debug, Clone)]
pub struct Barrier {
    /// The session used to wait and to set the barrier.
    client: Client,
    /// The barrier node; its existence closes the gate.
    path: String,
}

impl Barrier {
    /// A barrier that stands while the node at `path` exists.
    pub fn new(client: Client, path: &str) -> Self {
        Barrier {
            client,
            path: path.to_string(),
        }
    }

    /// Closes the gate (creates the node; fine if it is already there).
    pub async fn set(&self) -> Result<()> {
        match self
            .client
            .create_all(&self.path, b"", &CreateOptions::persistent())
            .await
        {
            Ok(_) | Err(Error::NodeExists) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Opens the gate (deletes the node).
    pub async fn remove(&self) -> Result<()> {
        delete_retrying(&self.client, &self.path).await
    }

    /// Waits until the gate is open: true if it opened within `timeout`.
    pub async fn wait(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let watcher = match self.client.exists_w(&self.path).await {
                Ok((None, _)) => return Ok(true),
                Ok((Some(_), w)) => w,
                Err(e) if e.is_retryable() => {
                    wait_connected_until(&self.client, Some(deadline)).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if tokio::time::timeout_at(deadline, watcher.changed())
                .await
                .is_err()
            {
                return Ok(false);
            }
        }
    }
}

/// Name of the node that tells members the barrier is full.
const READY: &str = "ready";

/// The double barrier of ZooKeeper's recipes (Curator's DistributedDoubleBarrier): `enter`
/// returns once `count` members have entered; `leave` returns once all have left.
#[derive(Debug, Clone)]
pub struct DoubleBarrier {
    /// The session used to wait and to set the barrier.
    client: Client,
    /// Parent of the members' nodes and of `ready`.
    path: String,
    /// How many members make the barrier full.
    count: usize,
    /// Our member node's name (ephemeral, so a dead member leaves by itself).
    id: String,
}

impl DoubleBarrier {
    /// A barrier for `count` participants, whose members register under `path`.
    pub fn new(client: Client, path: &str, count: usize) -> Self {
        DoubleBarrier {
            client,
            path: path.to_string(),
            count,
            id: guid(),
        }
    }

    fn ready_path(&self) -> String {
        join_path(&self.path, READY)
    }

    fn our_path(&self) -> String {
        join_path(&self.path, &self.id)
    }

    fn members(children: Vec<String>) -> Vec<String> {
        let mut m: Vec<String> = children.into_iter().filter(|c| c != READY).collect();
        m.sort();
        m
    }

    /// Joins and waits until `count` members are in: true if that happened within `timeout`
    /// (on false our member node is removed again).
    pub async fn enter(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        // Watch for "ready" before joining, so its creation cannot be missed.
        let (ready, mut watcher) = self.client.exists_w(&self.ready_path()).await?;
        match self
            .client
            .create_all(&self.our_path(), b"", &CreateOptions::ephemeral())
            .await
        {
            Ok(_) | Err(Error::NodeExists) => {}
            Err(e) => return Err(e),
        }
        if ready.is_some() {
            return Ok(true);
        }
        loop {
            let members = Self::members(self.client.get_children(&self.path).await?);
            if members.len() >= self.count {
                match self
                    .client
                    .create(&self.ready_path(), b"", &CreateOptions::persistent())
                    .await
                {
                    Ok(_) | Err(Error::NodeExists) => return Ok(true),
                    Err(e) => return Err(e),
                }
            }
            if tokio::time::timeout_at(deadline, watcher.changed())
                .await
                .is_err()
            {
                delete_retrying(&self.client, &self.our_path()).await?;
                return Ok(false);
            }
            let (ready, w) = self.client.exists_w(&self.ready_path()).await?;
            if ready.is_some() {
                return Ok(true);
            }
            watcher = w;
        }
    }

    /// Leaves and waits until every member has left: true if that happened within `timeout`.
    pub async fn leave(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let members = match self.client.get_children(&self.path).await {
                Ok(c) => Self::members(c),
                Err(Error::NoNode) => Vec::new(),
                Err(e) => return Err(e),
            };
            let ours = members.contains(&self.id);
            if members.is_empty() || (members.len() == 1 && ours) {
                if ours {
                    delete_retrying(&self.client, &self.our_path()).await?;
                }
                // The last one out resets the barrier for the next round.
                match self.client.delete(&self.ready_path(), None).await {
                    Ok(()) | Err(Error::NoNode) => {}
                    Err(e) => return Err(e),
                }
                return Ok(true);
            }
            // The lowest member waits for the highest; everyone else leaves and waits for
            // the lowest. So each member watches one node, and no one waits in a cycle.
            let lowest = &members[0];
            let highest = &members[members.len() - 1];
            let watched = if ours && *lowest == self.id {
                highest.clone()
            } else {
                if ours {
                    delete_retrying(&self.client, &self.our_path()).await?;
                }
                lowest.clone()
            };
            let watcher = match self
                .client
                .exists_w(&join_path(&self.path, &watched))
                .await?
            {
                (None, _) => continue,
                (Some(_), w) => w,
            };
            if tokio::time::timeout_at(deadline, watcher.changed())
                .await
                .is_err()
            {
                return Ok(false);
            }
        }
    }
}
