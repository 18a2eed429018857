//! Coordination recipes built on the client, after ZooKeeper's recipes page and Apache
//! Curator: a lock without herd effect, a read-write lock, leader election, barriers, a FIFO
//! queue, a service registry and a version-checked counter.
//!
//! Sequential nodes are created in "protected" mode: their name starts with `_c_<guid>-`, so
//! after a ConnectionLoss on create the recipe finds its own node instead of leaking it.

mod barrier;
mod counter;
mod leader;
mod lock;
mod queue;
mod registry;

pub use barrier::{Barrier, DoubleBarrier};
pub use counter::Counter;
pub use leader::LeaderLatch;
pub use lock::{Lock, LockGuard, RwLock};
pub use queue::Queue;
pub use registry::{Registration, ServiceCache, ServiceInstance, ServiceRegistry};

use std::time::Duration;

use tokio::time::Instant;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::{join_path, CreateOptions};

/// A random 128-bit id, as 32 hex digits.
pub(crate) fn guid() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The sequence number ZooKeeper appended to a sequential node's name (`%010d` of a signed
/// int, so it may be negative after overflow).
pub(crate) fn sequence_of(name: &str) -> Option<i64> {
    if name.len() < 10 {
        return None;
    }
    name[name.len() - 10..].parse().ok()
}

/// The children whose name contains `marker`, sorted by sequence number.
pub(crate) fn sorted_by_sequence(children: Vec<String>, marker: &str) -> Vec<String> {
    let mut nodes: Vec<(i64, String)> = children
        .into_iter()
        .filter(|c| c.contains(marker))
        .filter_map(|c| sequence_of(&c).map(|s| (s, c)))
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, c)| c).collect()
}

/// Creates a protected sequential node `parent/_c_<guid>-<name>`; on ConnectionLoss or
/// Timeout looks for a node with our guid before trying again. Creates missing parents.
/// Returns the full path.
pub(crate) async fn create_protected(
    client: &Client,
    parent: &str,
    name: &str,
    data: &[u8],
    options: &CreateOptions,
    deadline: Option<Instant>,
) -> Result<String> {
    let id = guid();
    let prefix = format!("_c_{id}-");
    let path = join_path(parent, &format!("{prefix}{name}"));
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match client.create_all(&path, data, options).await {
            Ok((created, _)) => return Ok(created),
            Err(e) if e.is_retryable() => e,
            Err(e) => return Err(e),
        };
        tracing::debug!(%error, %path, "create of protected node interrupted; looking for it");
        wait_connected_until(client, deadline).await?;
        match client.get_children(parent).await {
            Ok(children) => {
                if let Some(found) = children.into_iter().find(|c| c.starts_with(&prefix)) {
                    return Ok(join_path(parent, &found));
                }
            }
            Err(Error::NoNode) => {}
            Err(e) if e.is_retryable() => {}
            Err(e) => return Err(e),
        }
        if attempts >= 10 {
            return Err(error);
        }
    }
}

/// Waits for the client to be connected, until `deadline` (or a generous bound).
pub(crate) async fn wait_connected_until(client: &Client, deadline: Option<Instant>) -> Result<()> {
    let bound = match deadline {
        Some(d) => d.saturating_duration_since(Instant::now()),
        None => Duration::from_secs(60),
    };
    client.wait_connected(bound).await
}

/// Deletes a node, retrying on ConnectionLoss; NoNode counts as done.
pub(crate) async fn delete_retrying(client: &Client, path: &str) -> Result<()> {
    for _ in 0..10 {
        match client.delete(path, None).await {
            Ok(()) | Err(Error::NoNode) => return Ok(()),
            Err(e) if e.is_retryable() => {
                let _ = client.wait_connected(Duration::from_secs(10)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::ConnectionLoss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences() {
        assert_eq!(sequence_of("_c_ab-lock-0000000012"), Some(12));
        assert_eq!(sequence_of("x-2147483647"), Some(2147483647));
        assert_eq!(sequence_of("x--000000001"), Some(-1));
        assert_eq!(sequence_of("short"), None);
        let sorted = sorted_by_sequence(
            vec![
                "_c_b-lock-0000000003".into(),
                "_c_a-lock-0000000001".into(),
                "other".into(),
                "_c_c-read-0000000002".into(),
            ],
            "-lock-",
        );
        assert_eq!(sorted, vec!["_c_a-lock-0000000001", "_c_b-lock-0000000003"]);
        assert_ne!(guid(), guid());
    }
}
