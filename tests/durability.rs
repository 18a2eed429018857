//! Crash durability: the server is SIGKILLed 20 times under concurrent write load (creates,
//! setData, two-node multis) and restarted on the same data dir and port. At the end:
//! * every acknowledged create exists, holding its last acknowledged value or a value written
//!   after it (by an unacknowledged, later request);
//! * nothing was invented: every node under /dur was attempted, with an attempted value;
//! * nothing was half-applied: the two nodes of a multi exist together or not at all.
//!
//! The load and the check live in tests/common/ledger.rs, shared with the ensemble version
//! (tests/ensemble_durability.rs). Written for rookery; it also passes against ZooKeeper
//! (`E2E_TARGET=zk cargo test --test durability`), only slower because of JVM restarts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ledger::{self, Acks, Rng};
use common::*;

const KILLS: usize = 20;
const WRITERS: usize = 4;
const DURABILITY_BOUND_SECS: u64 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    within(
        DURABILITY_BOUND_SECS,
        "acknowledged_writes_survive_sigkill",
        async {
            let server = Arc::new(TestServer::start(ServerOpts::default()));
            let addr = server.addr();
            {
                let c = server.client().await;
                c.create("/dur", b"", &anyone()).await.unwrap();
            }
            let stop = Arc::new(AtomicBool::new(false));
            let acks = Arc::new(Acks::default());
            let writers = ledger::spawn_writers(WRITERS, "/dur", |_| addr.clone(), &stop, &acks);
            let started = Instant::now();
            let mut rng = Rng::seeded(99);
            let per_round = ledger::crash_rounds(KILLS, &acks, &mut rng, |_| {
                let s = server.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        s.kill9();
                        s.start_again();
                    })
                    .await
                    .unwrap()
                }
            })
            .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let ledgers = ledger::finish(&stop, writers).await;
            let load_time = started.elapsed();

            // Verification on a fresh session.
            let c = server.client().await;
            let present = ledger::dump_children(&c, "/dur").await;
            let nodes = present.len();
            let checked = ledger::assert_ledgers_hold(&ledgers, &[(0, present)]);
            let (acked, unknown) = ledger::totals(&ledgers);
            eprintln!(
                "durability: {KILLS} kills in {load_time:?}, {acked} acknowledged / {unknown} \
             failed-or-unknown ops, {nodes} nodes present, {checked} values checked, acks per \
             round {per_round:?}"
            );
            assert!(
                acked >= KILLS as u64,
                "too little load was acknowledged: {acked}"
            );
        },
    )
    .await
}
