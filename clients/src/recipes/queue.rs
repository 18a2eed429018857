//! A FIFO queue: items are persistent sequential nodes; a consumer takes the lowest one by
//! deleting it (only the consumer whose delete succeeds gets the item).

use std::time::Duration;

use tokio::time::Instant;

use super::{sorted_by_sequence, wait_connected_until};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::{join_path, CreateOptions};

const ITEM: &str = "qn-";

/// A distributed FIFO queue at a path.
#[derive(Debug, Clone)]
pub struct Queue {
    /// The session used for puts and takes.
    client: Client,
    /// Parent of the item nodes.
    path: String,
}

impl Queue {
    /// A FIFO queue whose items are sequential children of `path`.
    pub fn new(client: Client, path: &str) -> Self {
        Queue {
            client,
            path: path.to_string(),
        }
    }

    /// Appends an item; returns its node's path.
    pub async fn put(&self, data: &[u8]) -> Result<String> {
        let path = join_path(&self.path, ITEM);
        let (created, _) = self
            .client
            .create_all(&path, data, &CreateOptions::persistent_sequential())
            .await?;
        Ok(created)
    }

    /// Number of items waiting.
    pub async fn len(&self) -> Result<usize> {
        match self.client.get_children(&self.path).await {
            Ok(c) => Ok(sorted_by_sequence(c, ITEM).len()),
            Err(Error::NoNode) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Whether the queue holds no items.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// Removes and returns the oldest item, waiting up to `timeout` for one to arrive.
    pub async fn take(&self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        loop {
            let (children, watcher) = match self.client.get_children_w(&self.path).await {
                Ok(r) => r,
                Err(Error::NoNode) => {
                    match self
                        .client
                        .create_all(&self.path, b"", &CreateOptions::persistent())
                        .await
                    {
                        Ok(_) | Err(Error::NodeExists) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if e.is_retryable() => {
                    wait_connected_until(&self.client, Some(deadline)).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for item in sorted_by_sequence(children, ITEM) {
                let path = join_path(&self.path, &item);
                let data = match self.client.get_data(&path).await {
                    Ok((data, _)) => data,
                    Err(Error::NoNode) => continue,
                    Err(e) => return Err(e),
                };
                match self.client.delete(&path, None).await {
                    Ok(()) => return Ok(Some(data)),
                    Err(Error::NoNode) => continue, // another consumer got it
                    Err(e) => return Err(e),
                }
            }
            if tokio::time::timeout_at(deadline, watcher.changed())
                .await
                .is_err()
            {
                return Ok(None);
            }
        }
    }
}
