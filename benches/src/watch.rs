//! The `watch` workload: N sessions watch one node; a separate session sets it and measures
//! the time from sending setData until the last of the N notifications has arrived. The next
//! round starts once every watcher has re-armed its watch.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rookery_protocol::{
    AddWatchMode, AddWatchRequest, EventType, GetDataRequest, OpCode, Record, Request,
    SetDataRequest, WatcherEvent,
};
use tokio::sync::{mpsc, watch};

use crate::conn::{describe_err, other, Conn};
use crate::driver::{Stats, Window};

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum WatchMode {
    /// getData with watch=true, re-armed after every notification (what most recipes do).
    Oneshot,
    /// One addWatch(PERSISTENT) per watcher (ZooKeeper 3.6+).
    Persistent,
}

/// How long one round may take before the run fails.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);

enum Msg {
    Armed,
    Fired(Instant),
}

async fn watcher(
    mut conn: Conn,
    path: Arc<str>,
    mode: WatchMode,
    tx: mpsc::UnboundedSender<Msg>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let arm = match mode {
        WatchMode::Oneshot => Request::GetData(GetDataRequest {
            path: path.to_string(),
            watch: true,
        }),
        WatchMode::Persistent => Request::AddWatch(AddWatchRequest {
            path: path.to_string(),
            mode: AddWatchMode::Persistent.wire(),
        }),
    };
    let mut armed_xid = Some(conn.queue(&arm));
    conn.flush().await?;
    loop {
        let reply = tokio::select! {
            r = conn.recv() => r?,
            _ = stop.changed() => break,
        };
        let xid = reply.header.xid;
        if xid == -1 {
            let at = Instant::now();
            let event = WatcherEvent::from_bytes(&reply.body).map_err(other)?;
            if event.event_type != EventType::NodeDataChanged.wire() {
                return Err(other(format!("unexpected watch event {event:?}")));
            }
            let _ = tx.send(Msg::Fired(at));
            match mode {
                WatchMode::Oneshot => {
                    armed_xid = Some(conn.queue(&arm));
                    conn.flush().await?;
                }
                WatchMode::Persistent => {
                    let _ = tx.send(Msg::Armed);
                }
            }
        } else if Some(xid) == armed_xid {
            armed_xid = None;
            if reply.header.err != 0 {
                return Err(other(format!(
                    "arming the watch: {}",
                    describe_err(reply.header.err)
                )));
            }
            reply.decode(arm.op_code()).map_err(other)?;
            let _ = tx.send(Msg::Armed);
        }
    }
    conn.close().await;
    Ok(())
}

/// Runs the rounds; returns the stats (one op per round) and the number of notifications.
pub async fn run(
    setter: Conn,
    watchers: Vec<Conn>,
    path: Arc<str>,
    value: Vec<u8>,
    mode: WatchMode,
    w: Window,
) -> io::Result<(Stats, u64)> {
    let n = watchers.len();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for conn in watchers {
        tasks.push(tokio::spawn(watcher(
            conn,
            path.clone(),
            mode,
            tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(tx);
    let result = rounds(setter, &mut rx, n, &path, value, w).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        t.await.map_err(other)??;
    }
    result
}

async fn rounds(
    mut setter: Conn,
    rx: &mut mpsc::UnboundedReceiver<Msg>,
    n: usize,
    path: &str,
    value: Vec<u8>,
    w: Window,
) -> io::Result<(Stats, u64)> {
    let mut stats = Stats::new();
    let mut events = 0u64;
    let mut armed = 0usize;
    loop {
        let deadline = Instant::now() + ROUND_TIMEOUT;
        while armed < n {
            match recv(rx, deadline).await? {
                Msg::Armed => armed += 1,
                Msg::Fired(_) => return Err(other("notification without a setData")),
            }
        }
        let t0 = Instant::now();
        if t0 >= w.end {
            break;
        }
        armed = 0;
        let xid = setter.queue(&Request::SetData(SetDataRequest {
            path: path.to_string(),
            data: Some(value.clone()),
            version: -1,
        }));
        setter.flush().await?;
        let mut fired = 0usize;
        let mut last = t0;
        let deadline = t0 + ROUND_TIMEOUT;
        while fired < n {
            match recv(rx, deadline).await? {
                Msg::Fired(at) => {
                    fired += 1;
                    last = last.max(at);
                }
                Msg::Armed => armed += 1,
            }
        }
        loop {
            let reply = setter.recv_until(deadline).await?;
            if reply.header.xid == xid {
                if reply.header.err != 0 {
                    stats.error(|| format!("SetData: {}", describe_err(reply.header.err)));
                } else if let Err(e) = reply.decode(OpCode::SetData) {
                    stats.error(|| e);
                }
                break;
            }
        }
        if t0 >= w.measure_start && last <= w.end {
            stats.ops += 1;
            events += n as u64;
            let us = last.duration_since(t0).as_micros() as u64;
            stats.hist.saturating_record(us.max(1));
        }
    }
    setter.close().await;
    Ok((stats, events))
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Msg>, deadline: Instant) -> io::Result<Msg> {
    match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(other("a watcher session failed")),
        Err(_) => Err(other("watch round timed out")),
    }
}
