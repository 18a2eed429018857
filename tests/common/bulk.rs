//! Bulk trees for the snapshot and catch-up tests: `populate` creates znodes `from..to` under
//! a base with pipelined multis (1000 children per parent, ~100-byte values that differ per
//! node, so a wrong node or a torn copy shows in a spot read).

use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use zookeeper_client as zk;

use super::anyone;

/// Children per parent node (so no single node has a huge child list).
pub const FANOUT: usize = 1000;
/// Creates per multi.
pub const PER_MULTI: usize = 100;
/// Multis in flight at once.
pub const IN_FLIGHT: usize = 64;

pub fn path_of(base: &str, i: usize) -> String {
    format!("{base}/p{:04}/n{:07}", i / FANOUT, i)
}

/// ~100 bytes, different per node, so a wrong node or a torn copy shows in a spot read.
pub fn data_of(i: usize) -> Vec<u8> {
    let mut v = format!("value-{i:09}-").into_bytes();
    v.resize(100, b'a' + (i % 26) as u8);
    v
}

/// Creates znodes `from..to` under `base` (parents included) with pipelined multis.
pub async fn populate(client: &zk::Client, base: &str, from: usize, to: usize) {
    for p in (from / FANOUT)..to.div_ceil(FANOUT) {
        match client
            .create(&format!("{base}/p{p:04}"), b"", &anyone())
            .await
        {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => panic!("create parent {p}: {e}"),
        }
    }
    let mut pending = FuturesUnordered::new();
    let mut next = from;
    while next < to || !pending.is_empty() {
        while next < to && pending.len() < IN_FLIGHT {
            let end = (next + PER_MULTI).min(to);
            let mut w = client.new_multi_writer();
            for i in next..end {
                w.add_create(&path_of(base, i), &data_of(i), &anyone())
                    .unwrap();
            }
            let commit = w.commit();
            pending.push(async move { (next, commit.await) });
            next = end;
        }
        if let Some((first, Err(e))) = pending.next().await {
            // A write whose answer was lost (ConnectionLoss: on a loaded 2-core machine a
            // write can exceed the ensemble's answer deadline): redo it; NodeExists then
            // means the first attempt was applied (a multi is all or nothing).
            retry_multi(client, base, first, (first + PER_MULTI).min(to), e).await;
        }
    }
}

/// Redoes the multi creating `from..to` after `first_error` (a lost answer), a few times at
/// most; any other error fails the test.
async fn retry_multi(
    client: &zk::Client,
    base: &str,
    from: usize,
    to: usize,
    first_error: zk::MultiWriteError,
) {
    let lost = |e: &zk::MultiWriteError| {
        matches!(
            e,
            zk::MultiWriteError::RequestFailed {
                source: zk::Error::ConnectionLoss
            }
        )
    };
    let mut last = first_error;
    for _ in 0..10 {
        assert!(lost(&last), "creating nodes {from}..{to}: {last}");
        eprintln!("multi {from}..{to} lost its answer ({last}); redoing it");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut w = client.new_multi_writer();
        for i in from..to {
            w.add_create(&path_of(base, i), &data_of(i), &anyone())
                .unwrap();
        }
        match w.commit().await {
            Ok(_) => return,
            Err(zk::MultiWriteError::OperationFailed {
                source: zk::Error::NodeExists,
                ..
            }) => {
                let (data, _) = client.get_data(&path_of(base, to - 1)).await.unwrap();
                assert_eq!(data, data_of(to - 1));
                return;
            }
            Err(e) => last = e,
        }
    }
    panic!("creating nodes {from}..{to} kept failing: {last}");
}
