//! Service discovery (after Curator's ServiceDiscovery): each instance is an ephemeral node
//! `<base>/<service>/<id>` holding JSON; a [`ServiceCache`] keeps a watched view of the members,
//! which drops an instance as soon as its session dies.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{delete_retrying, guid};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::{join_path, CreateOptions};

/// One registered instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// The service's name (the registry's child node).
    pub name: String,
    /// Unique per instance (the member node's name).
    pub id: String,
    /// Where to reach it.
    pub address: String,
    /// Port to reach it on.
    pub port: u16,
    /// Free-form metadata (for example a JSON document).
    #[serde(default)]
    pub payload: String,
    /// Registration time, ms since the Unix epoch.
    #[serde(default)]
    pub registered_at_ms: u64,
}

impl ServiceInstance {
    /// An instance with a fresh random id.
    pub fn new(name: &str, address: &str, port: u16) -> Self {
        ServiceInstance {
            name: name.to_string(),
            id: guid(),
            address: address.to_string(),
            port,
            payload: String::new(),
            registered_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    /// Data stored in the registration node (for example an address).
    pub fn with_payload(mut self, payload: impl Into<String>) -> Self {
        self.payload = payload.into();
        self
    }
}

/// A registry rooted at a base path.
#[derive(Debug, Clone)]
pub struct ServiceRegistry {
    /// The session owning the ephemeral nodes.
    client: Client,
    /// Parent of the per-service nodes.
    base: String,
}

/// A live registration; [`Registration::unregister`] removes it (so does session death).
#[derive(Debug)]
pub struct Registration {
    /// The session owning the ephemeral nodes.
    client: Client,
    /// The instance's ephemeral node.
    path: String,
    /// What was registered.
    pub instance: ServiceInstance,
}

impl Registration {
    /// The ephemeral node that represents this registration.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Deletes the registration node (retrying on connection loss).
    pub async fn unregister(self) -> Result<()> {
        delete_retrying(&self.client, &self.path).await
    }
}

impl ServiceRegistry {
    /// A registry whose services live under `base`.
    pub fn new(client: Client, base: &str) -> Self {
        ServiceRegistry {
            client,
            base: base.to_string(),
        }
    }

    fn service_path(&self, name: &str) -> String {
        join_path(&self.base, name)
    }

    /// Registers an instance as an ephemeral node.
    pub async fn register(&self, instance: ServiceInstance) -> Result<Registration> {
        let path = join_path(&self.service_path(&instance.name), &instance.id);
        let data = serde_json::to_vec(&instance)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode instance: {e}")))?;
        match self
            .client
            .create_all(&path, &data, &CreateOptions::ephemeral())
            .await
        {
            Ok(_) => {}
            // A retried create after ConnectionLoss may find our own node.
            Err(Error::NodeExists) => {
                let stat = self.client.exists(&path).await?;
                if stat.map(|s| s.ephemeral_owner) != Some(self.client.session().session_id) {
                    return Err(Error::NodeExists);
                }
            }
            Err(e) => return Err(e),
        }
        Ok(Registration {
            client: self.client.clone(),
            path,
            instance,
        })
    }

    /// The service names known to the registry.
    pub async fn services(&self) -> Result<Vec<String>> {
        match self.client.get_children(&self.base).await {
            Ok(mut c) => {
                c.sort();
                Ok(c)
            }
            Err(Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The instances of a service now (one query, no watch), sorted by id.
    pub async fn instances(&self, name: &str) -> Result<Vec<ServiceInstance>> {
        match self.client.get_children(&self.service_path(name)).await {
            Ok(children) => load(&self.client, &self.service_path(name), children).await,
            Err(Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// A cached, watched view of a service's instances, refreshed in the background.
    pub async fn cache(&self, name: &str) -> Result<ServiceCache> {
        let path = self.service_path(name);
        match self
            .client
            .create_all(&path, b"", &CreateOptions::persistent())
            .await
        {
            Ok(_) | Err(Error::NodeExists) => {}
            Err(e) => return Err(e),
        }
        let (children, watcher) = self.client.get_children_w(&path).await?;
        let initial = load(&self.client, &path, children).await?;
        let (tx, rx) = watch::channel(initial);
        let task = tokio::spawn(follow(self.client.clone(), path, tx, watcher));
        Ok(ServiceCache { rx, task })
    }
}

/// Reads and decodes the instances named by `children` (skipping ones gone or malformed).
async fn load(client: &Client, path: &str, children: Vec<String>) -> Result<Vec<ServiceInstance>> {
    let mut out = Vec::new();
    for child in children {
        match client.get_data(&join_path(path, &child)).await {
            Ok((data, _)) => match serde_json::from_slice::<ServiceInstance>(&data) {
                Ok(instance) => out.push(instance),
                Err(e) => tracing::warn!(%child, error = %e, "skipping malformed instance"),
            },
            Err(Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Keeps the cache current: re-reads the member list after each child event and after each
/// reconnect.
async fn follow(
    client: Client,
    path: String,
    tx: watch::Sender<Vec<ServiceInstance>>,
    first: crate::OneshotWatcher,
) {
    let mut states = client.state_watch();
    let mut watcher = Some(first);
    loop {
        if let Some(w) = watcher.take() {
            tokio::select! {
                _ = w.changed() => {}
                r = states.changed() => {
                    if r.is_err() { return; }
                    if !states.borrow().is_connected() {
                        // Keep the stale view while disconnected; refresh once back.
                        if states.borrow().is_terminal() {
                            tx.send_replace(Vec::new());
                            return;
                        }
                        if client.wait_connected(Duration::from_secs(3600)).await.is_err() {
                            tx.send_replace(Vec::new());
                            return;
                        }
                    }
                }
                _ = tx.closed() => return,
            }
        }
        if client.state().is_terminal() {
            tx.send_replace(Vec::new());
            return;
        }
        let refreshed = async {
            let (children, w) = client.get_children_w(&path).await?;
            let instances = load(&client, &path, children).await?;
            Ok::<_, Error>((instances, w))
        };
        match refreshed.await {
            Ok((instances, w)) => {
                tx.send_if_modified(|cur| {
                    if *cur != instances {
                        *cur = instances;
                        true
                    } else {
                        false
                    }
                });
                watcher = Some(w);
            }
            Err(e) => {
                tracing::debug!(error = %e, %path, "service cache refresh failed");
                if e.is_fatal() {
                    tx.send_replace(Vec::new());
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A watched view of a service's instances.
#[derive(Debug)]
pub struct ServiceCache {
    /// The current members, sorted by id.
    rx: watch::Receiver<Vec<ServiceInstance>>,
    /// The refresh task, aborted when the cache is dropped.
    task: JoinHandle<()>,
}

impl ServiceCache {
    /// The members as last seen.
    pub fn instances(&self) -> Vec<ServiceInstance> {
        self.rx.borrow().clone()
    }

    /// A receiver to await changes on.
    pub fn watch(&self) -> watch::Receiver<Vec<ServiceInstance>> {
        self.rx.clone()
    }

    /// Waits until the members satisfy `pred`; false on timeout.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl FnMut(&Vec<ServiceInstance>) -> bool,
    ) -> bool {
        let mut rx = self.rx.clone();
        tokio::time::timeout(timeout, rx.wait_for(pred))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for ServiceCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}
