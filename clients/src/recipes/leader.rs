//! Leader election (Curator's LeaderLatch): the participant with the lowest sequence number
//! leads; each other one watches only its predecessor.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use super::{create_protected, delete_retrying, sorted_by_sequence};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::{join_path, CreateOptions, SessionState};

const LATCH: &str = "latch-";

/// A participant in an election. Leadership is a `watch` of `bool`: true while this
/// participant leads. It turns false as soon as the connection is lost (another participant
/// may take over once our session expires), and true again if we still lead after
/// reconnecting.
#[derive(Debug)]
pub struct LeaderLatch {
    /// The session whose ephemeral node takes part.
    client: Client,
    /// Parent of the participants' nodes.
    path: String,
    /// This participant's id, stored as its node's data.
    id: String,
    /// Our current node, shared with the election task.
    node: Arc<Mutex<Option<String>>>,
    /// Current leadership, published by the election task.
    leader: watch::Receiver<bool>,
    /// Tells the election task to stop.
    stop: watch::Sender<bool>,
    /// The election task; taken by close, aborted on drop.
    task: Option<JoinHandle<()>>,
}

impl LeaderLatch {
    /// Joins the election at `path` with `id` and starts following it in the background.
    pub async fn start(client: Client, path: &str, id: &str) -> Result<LeaderLatch> {
        let (leader_tx, leader_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let node = Arc::new(Mutex::new(None));
        let first = create_protected(
            &client,
            path,
            LATCH,
            id.as_bytes(),
            &CreateOptions::ephemeral_sequential(),
            None,
        )
        .await?;
        *node.lock().await = Some(first);
        let (task_client, task_path, task_id, task_node) = (
            client.clone(),
            path.to_string(),
            id.to_string(),
            node.clone(),
        );
        let task = tokio::spawn(async move {
            run(
                task_client,
                task_path,
                task_id,
                task_node,
                &leader_tx,
                stop_rx,
            )
            .await;
            // Whatever ended the election (close, session end), we no longer lead.
            leader_tx.send_replace(false);
        });
        Ok(LeaderLatch {
            client,
            path: path.to_string(),
            id: id.to_string(),
            node,
            leader: leader_rx,
            stop: stop_tx,
            task: Some(task),
        })
    }

    /// This candidate's id (its sequential node's name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this candidate currently leads.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Leadership changes: `changed().await`, then `borrow()`.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Waits until we lead (true) or `timeout` passes (false).
    pub async fn wait_leader(&self, timeout: Duration) -> bool {
        let mut rx = self.leader.clone();
        tokio::time::timeout(timeout, rx.wait_for(|l| *l))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The participants' ids in election order (the first leads).
    pub async fn participants(&self) -> Result<Vec<String>> {
        let children = match self.client.get_children(&self.path).await {
            Ok(c) => c,
            Err(Error::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut ids = Vec::new();
        for child in sorted_by_sequence(children, LATCH) {
            match self.client.get_data(&join_path(&self.path, &child)).await {
                Ok((data, _)) => ids.push(String::from_utf8_lossy(&data).into_owned()),
                Err(Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ids)
    }

    /// The current leader's id, if any.
    pub async fn leader_id(&self) -> Result<Option<String>> {
        Ok(self.participants().await?.into_iter().next())
    }

    /// Leaves the election: stops the task and deletes our node.
    pub async fn close(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let node = self.node.lock().await.take();
        if let Some(node) = node {
            delete_retrying(&self.client, &node).await?;
        }
        Ok(())
    }
}

impl Drop for LeaderLatch {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The election task: recomputes leadership whenever the predecessor goes, our node goes, or
/// the connection state changes.
async fn run(
    client: Client,
    path: String,
    id: String,
    node: Arc<Mutex<Option<String>>>,
    leader: &watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut states = client.state_watch();
    loop {
        if *stop.borrow() {
            return;
        }
        let state = *states.borrow_and_update();
        if state.is_terminal() {
            leader.send_replace(false);
            return;
        }
        if !state.is_connected() {
            leader.send_replace(false);
            tokio::select! {
                _ = states.changed() => continue,
                _ = stop.changed() => return,
            }
        }
        match step(&client, &path, &id, &node, leader).await {
            Ok(watcher) => {
                tokio::select! {
                    _ = watcher.changed() => {}
                    r = states.changed() => {
                        if r.is_err() {
                            leader.send_replace(false);
                            return;
                        }
                        let s = *states.borrow();
                        if s != SessionState::Connected && s != SessionState::ConnectedReadOnly {
                            leader.send_replace(false);
                        }
                    }
                    _ = stop.changed() => return,
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "leader election step failed");
                if e.is_fatal() {
                    leader.send_replace(false);
                    return;
                }
                leader.send_replace(false);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// One look at the election: publishes leadership and returns the watch to wait on.
async fn step(
    client: &Client,
    path: &str,
    id: &str,
    node: &Mutex<Option<String>>,
    leader: &watch::Sender<bool>,
) -> Result<crate::OneshotWatcher> {
    let ours = node.lock().await.clone();
    let ours = match ours {
        Some(n) => n,
        None => {
            let created = create_protected(
                client,
                path,
                LATCH,
                id.as_bytes(),
                &CreateOptions::ephemeral_sequential(),
                None,
            )
            .await?;
            *node.lock().await = Some(created.clone());
            created
        }
    };
    let name = ours.rsplit('/').next().unwrap_or_default().to_string();
    let children = sorted_by_sequence(client.get_children(path).await?, LATCH);
    let Some(index) = children.iter().position(|c| *c == name) else {
        // Our node vanished (deleted by someone): join again.
        *node.lock().await = None;
        leader.send_replace(false);
        return Err(Error::NoNode);
    };
    let watched = if index == 0 {
        ours.clone()
    } else {
        join_path(path, &children[index - 1])
    };
    let (stat, watcher) = client.exists_w(&watched).await?;
    if stat.is_none() {
        // Gone between the listing and the watch: the watcher fires on re-creation only, so
        // look again at once.
        return Err(Error::NoNode);
    }
    let is_leader = index == 0;
    if *leader.borrow() != is_leader {
        tracing::info!(%id, is_leader, "leadership changed");
    }
    leader.send_replace(is_leader);
    Ok(watcher)
}
