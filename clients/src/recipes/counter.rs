//! A shared counter updated by compare-and-set on the node's version (Curator's
//! DistributedAtomicLong: the value is an 8-byte big-endian integer).

use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::CreateOptions;

/// How many lost races an update tolerates before giving up.
const MAX_ATTEMPTS: usize = 10_000;

/// A 64-bit counter stored in one znode.
#[derive(Debug, Clone)]
pub struct Counter {
    /// The session doing the updates.
    client: Client,
    /// The znode holding the value.
    path: String,
}

fn decode(data: &[u8]) -> Result<i64> {
    if data.is_empty() {
        return Ok(0);
    }
    let bytes: [u8; 8] = data.try_into().map_err(|_| {
        Error::InvalidArgument(format!("counter holds {} bytes, not 8", data.len()))
    })?;
    Ok(i64::from_be_bytes(bytes))
}

impl Counter {
    /// A counter stored as the data of the node at `path` (created on first use).
    pub fn new(client: Client, path: &str) -> Self {
        Counter {
            client,
            path: path.to_string(),
        }
    }

    /// The current value (0 if the node does not exist yet).
    pub async fn get(&self) -> Result<i64> {
        match self.client.get_data(&self.path).await {
            Ok((data, _)) => decode(&data),
            Err(Error::NoNode) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Adds `delta`; returns (value before, value after).
    pub async fn add(&self, delta: i64) -> Result<(i64, i64)> {
        self.update(|v| Some(v.wrapping_add(delta)))
            .await
            .map(|r| r.unwrap_or_default())
    }

    /// Adds one and returns the new value.
    pub async fn increment(&self) -> Result<i64> {
        Ok(self.add(1).await?.1)
    }

    /// Subtracts one and returns the new value.
    pub async fn decrement(&self) -> Result<i64> {
        Ok(self.add(-1).await?.1)
    }

    /// Sets the value to `new` if it is `expected`; true if it was.
    pub async fn compare_and_set(&self, expected: i64, new: i64) -> Result<bool> {
        Ok(self
            .update(|v| (v == expected).then_some(new))
            .await?
            .is_some())
    }

    /// Sets the value unconditionally.
    pub async fn set(&self, value: i64) -> Result<()> {
        self.update(|_| Some(value)).await.map(drop)
    }

    /// After losing a race: the write that won may not be visible yet on the server this
    /// client reads from (an ensemble member applies a commit a moment after the one that
    /// answered the winner), and re-reading at once could see the old value again and again.
    /// `sync` makes the next read see at least the winning write.
    async fn catch_up(&self) -> Result<()> {
        self.client.sync(&self.path).await.map(drop)
    }

    /// Applies `f` with optimistic concurrency; None from `f` means "leave it".
    async fn update(&self, f: impl Fn(i64) -> Option<i64>) -> Result<Option<(i64, i64)>> {
        for _ in 0..MAX_ATTEMPTS {
            match self.client.get_data(&self.path).await {
                Ok((data, stat)) => {
                    let current = decode(&data)?;
                    let Some(next) = f(current) else {
                        return Ok(None);
                    };
                    match self
                        .client
                        .set_data(&self.path, &next.to_be_bytes(), Some(stat.version))
                        .await
                    {
                        Ok(_) => return Ok(Some((current, next))),
                        Err(Error::BadVersion) | Err(Error::NoNode) => self.catch_up().await?,
                        Err(e) => return Err(e),
                    }
                }
                Err(Error::NoNode) => {
                    let Some(next) = f(0) else {
                        return Ok(None);
                    };
                    match self
                        .client
                        .create_all(
                            &self.path,
                            &next.to_be_bytes(),
                            &CreateOptions::persistent(),
                        )
                        .await
                    {
                        Ok(_) => return Ok(Some((0, next))),
                        Err(Error::NodeExists) => self.catch_up().await?,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Timeout)
    }
}
