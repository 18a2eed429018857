//! Typed watchers handed to callers, and the session task's registry of armed watches.

use std::collections::HashMap;

use rookery_protocol::{EventType, KeeperState, SetWatches2};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::types::{SessionState, WatchedEvent};

/// A one-shot watch (from `get_data_w`, `exists_w`, `get_children_w`): resolves once, with
/// the first event on its node, or with an [`EventType::None`] event if the session ends.
///
/// Dropping it is fine; the server-side watch then fires into nothing.
#[derive(Debug)]
pub struct OneshotWatcher {
    /// Filled by the session task when the watch fires.
    rx: oneshot::Receiver<WatchedEvent>,
    /// Returned if the session task vanished without sending anything.
    path: String,
}

impl OneshotWatcher {
    pub(crate) fn new(rx: oneshot::Receiver<WatchedEvent>, path: String) -> Self {
        OneshotWatcher { rx, path }
    }

    /// Waits for the event.
    pub async fn changed(self) -> WatchedEvent {
        match self.rx.await {
            Ok(event) => event,
            Err(_) => WatchedEvent::session_end(SessionState::Closed, &self.path),
        }
    }

    /// The path that is watched (relative to the chroot).
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// A persistent (or persistent recursive) watch from `add_watch`: a stream of events that
/// stays armed until removed. Ends (`None`) after an event reporting the end of the session,
/// or after a `PersistentWatchRemoved` event.
#[derive(Debug)]
pub struct PersistentWatcher {
    /// Fed by the session task for every matching event.
    rx: mpsc::UnboundedReceiver<WatchedEvent>,
}

impl PersistentWatcher {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<WatchedEvent>) -> Self {
        PersistentWatcher { rx }
    }

    /// The next event, or `None` once the watch is gone.
    pub async fn next(&mut self) -> Option<WatchedEvent> {
        self.rx.recv().await
    }
}

impl futures::Stream for PersistentWatcher {
    type Item = WatchedEvent;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<WatchedEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// Session state changes, in order (Disconnected, Connected, Expired, ...).
#[derive(Debug)]
pub struct StateEvents {
    /// Broadcast by the session task on every transition.
    rx: broadcast::Receiver<SessionState>,
}

impl StateEvents {
    pub(crate) fn new(rx: broadcast::Receiver<SessionState>) -> Self {
        StateEvents { rx }
    }

    /// The next state change; `None` once the client is gone. A slow reader skips the
    /// oldest transitions rather than blocking the session.
    pub async fn next(&mut self) -> Option<SessionState> {
        loop {
            match self.rx.recv().await {
                Ok(state) => return Some(state),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "state events lagged");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Which kind of watch a request arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchKind {
    /// getData: armed on success.
    Data,
    /// exists: a data watch if the node exists, an exist watch if it does not.
    Exists,
    /// getChildren / getChildren2: armed on success.
    Child,
    Persistent,
    PersistentRecursive,
}

/// Where a fired watch goes.
#[derive(Debug)]
pub(crate) enum WatchSink {
    Oneshot(oneshot::Sender<WatchedEvent>),
    Stream(mpsc::UnboundedSender<WatchedEvent>),
}

/// A watch to arm when the reply to its request comes back.
#[derive(Debug)]
pub(crate) struct WatchRegistration {
    /// Server-side path (chroot included).
    pub path: String,
    /// Which table the watch goes into.
    pub kind: WatchKind,
    /// The caller-side end the event is delivered to.
    pub sink: WatchSink,
}

type Oneshots = HashMap<String, Vec<oneshot::Sender<WatchedEvent>>>;
type Streams = HashMap<String, Vec<mpsc::UnboundedSender<WatchedEvent>>>;

/// The watches this session has armed, keyed by server path. The server holds one watch per
/// (path, kind); several local watchers may share it.
#[derive(Debug, Default)]
pub(crate) struct WatchRegistry {
    /// getData and exists-on-an-existing-node watches.
    data: Oneshots,
    /// exists-on-a-missing-node watches.
    exist: Oneshots,
    /// getChildren watches.
    child: Oneshots,
    /// addWatch PERSISTENT.
    persistent: Streams,
    /// addWatch PERSISTENT_RECURSIVE.
    recursive: Streams,
}

impl WatchRegistry {
    /// Arms a watch after its request succeeded (`node_exists` matters for exists only).
    pub fn register(&mut self, reg: WatchRegistration, node_exists: bool) {
        let WatchRegistration { path, kind, sink } = reg;
        match (kind, sink) {
            (WatchKind::Data, WatchSink::Oneshot(tx)) => {
                self.data.entry(path).or_default().push(tx)
            }
            (WatchKind::Exists, WatchSink::Oneshot(tx)) => {
                let map = if node_exists {
                    &mut self.data
                } else {
                    &mut self.exist
                };
                map.entry(path).or_default().push(tx)
            }
            (WatchKind::Child, WatchSink::Oneshot(tx)) => {
                self.child.entry(path).or_default().push(tx)
            }
            (WatchKind::Persistent, WatchSink::Stream(tx)) => {
                self.persistent.entry(path).or_default().push(tx)
            }
            (WatchKind::PersistentRecursive, WatchSink::Stream(tx)) => {
                self.recursive.entry(path).or_default().push(tx)
            }
            (kind, _) => tracing::error!(?kind, "watch registration with the wrong sink"),
        }
    }

    /// Delivers a notification (`path` is the server path, `client_path` what callers see).
    pub fn dispatch(
        &mut self,
        event_type: EventType,
        state: KeeperState,
        path: &str,
        client_path: &str,
    ) {
        let event = WatchedEvent {
            event_type,
            state,
            path: client_path.to_string(),
        };
        let mut oneshots = Vec::new();
        match event_type {
            EventType::NodeCreated | EventType::NodeDataChanged => {
                oneshots.extend(self.data.remove(path).unwrap_or_default());
                oneshots.extend(self.exist.remove(path).unwrap_or_default());
            }
            EventType::NodeDeleted => {
                oneshots.extend(self.data.remove(path).unwrap_or_default());
                oneshots.extend(self.exist.remove(path).unwrap_or_default());
                oneshots.extend(self.child.remove(path).unwrap_or_default());
            }
            EventType::NodeChildrenChanged => {
                oneshots.extend(self.child.remove(path).unwrap_or_default());
            }
            _ => {}
        }
        for tx in oneshots {
            let _ = tx.send(event.clone());
        }
        if matches!(
            event_type,
            EventType::NodeCreated
                | EventType::NodeDeleted
                | EventType::NodeDataChanged
                | EventType::NodeChildrenChanged
        ) {
            send_all(&mut self.persistent, path, &event);
        }
        if matches!(
            event_type,
            EventType::NodeCreated | EventType::NodeDeleted | EventType::NodeDataChanged
        ) {
            let mut ancestor = Some(path);
            while let Some(p) = ancestor {
                send_all(&mut self.recursive, p, &event);
                ancestor = parent_of(p);
            }
        }
    }

    /// Drops the local watchers removed by a successful removeWatches of `watcher_type`
    /// (WatcherType wire value), telling each of them.
    pub fn remove(&mut self, path: &str, watcher_type: i32, state: KeeperState, client_path: &str) {
        let event = |event_type| WatchedEvent {
            event_type,
            state,
            path: client_path.to_string(),
        };
        let (children, data, persistent) = match watcher_type {
            1 => (true, false, false),
            2 => (false, true, false),
            3 => (true, true, true),
            4 | 5 => (false, false, true),
            _ => (false, false, false),
        };
        if children {
            for tx in self.child.remove(path).unwrap_or_default() {
                let _ = tx.send(event(EventType::ChildWatchRemoved));
            }
        }
        if data {
            for tx in self
                .data
                .remove(path)
                .unwrap_or_default()
                .into_iter()
                .chain(self.exist.remove(path).unwrap_or_default())
            {
                let _ = tx.send(event(EventType::DataWatchRemoved));
            }
        }
        if persistent {
            let lists = match watcher_type {
                4 => vec![self.persistent.remove(path)],
                5 => vec![self.recursive.remove(path)],
                _ => vec![self.persistent.remove(path), self.recursive.remove(path)],
            };
            for tx in lists.into_iter().flatten().flatten() {
                let _ = tx.send(event(EventType::PersistentWatchRemoved));
            }
        }
    }

    /// Forgets watchers whose receivers were dropped; true if anything is left.
    fn prune(&mut self) {
        for map in [&mut self.data, &mut self.exist, &mut self.child] {
            map.retain(|_, v| {
                v.retain(|tx| !tx.is_closed());
                !v.is_empty()
            });
        }
        for map in [&mut self.persistent, &mut self.recursive] {
            map.retain(|_, v| {
                v.retain(|tx| !tx.is_closed());
                !v.is_empty()
            });
        }
    }

    /// The SetWatches2 packets that re-arm everything on a new connection, each under
    /// `max_bytes` of paths (ZooKeeper's client splits at 128 KB too).
    pub fn set_watches(&mut self, relative_zxid: i64, max_bytes: usize) -> Vec<SetWatches2> {
        self.prune();
        let mut packets = Vec::new();
        let mut current = SetWatches2 {
            relative_zxid,
            ..Default::default()
        };
        let mut size = 0;
        let lists: [Vec<String>; 5] = [
            self.data.keys().cloned().collect(),
            self.exist.keys().cloned().collect(),
            self.child.keys().cloned().collect(),
            self.persistent.keys().cloned().collect(),
            self.recursive.keys().cloned().collect(),
        ];
        // Walk the five lists, cutting a new packet whenever the size limit is reached.
        for (which, paths) in lists.into_iter().enumerate() {
            for path in paths {
                if size + path.len() + 4 > max_bytes && size > 0 {
                    packets.push(std::mem::replace(
                        &mut current,
                        SetWatches2 {
                            relative_zxid,
                            ..Default::default()
                        },
                    ));
                    size = 0;
                }
                size += path.len() + 4;
                let target = match which {
                    0 => &mut current.data_watches,
                    1 => &mut current.exist_watches,
                    2 => &mut current.child_watches,
                    3 => &mut current.persistent_watches,
                    _ => &mut current.persistent_recursive_watches,
                };
                target.push(path);
            }
        }
        if size > 0 {
            packets.push(current);
        }
        packets
    }

    /// Ends every watch: the session is over.
    pub fn close_all(&mut self, state: SessionState, client_path: impl Fn(&str) -> String) {
        for map in [&mut self.data, &mut self.exist, &mut self.child] {
            for (path, txs) in map.drain() {
                for tx in txs {
                    let _ = tx.send(WatchedEvent::session_end(state, &client_path(&path)));
                }
            }
        }
        for map in [&mut self.persistent, &mut self.recursive] {
            for (path, txs) in map.drain() {
                for tx in txs {
                    let _ = tx.send(WatchedEvent::session_end(state, &client_path(&path)));
                }
            }
        }
    }
}

fn send_all(map: &mut Streams, path: &str, event: &WatchedEvent) {
    if let Some(txs) = map.get_mut(path) {
        txs.retain(|tx| tx.send(event.clone()).is_ok());
        if txs.is_empty() {
            map.remove(path);
        }
    }
}

fn parent_of(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recursive_watch_sees_descendants() {
        let mut reg = WatchRegistry::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        reg.register(
            WatchRegistration {
                path: "/a".into(),
                kind: WatchKind::PersistentRecursive,
                sink: WatchSink::Stream(tx),
            },
            true,
        );
        reg.dispatch(
            EventType::NodeCreated,
            KeeperState::SyncConnected,
            "/a/b/c",
            "/a/b/c",
        );
        reg.dispatch(
            EventType::NodeChildrenChanged,
            KeeperState::SyncConnected,
            "/a",
            "/a",
        );
        reg.dispatch(
            EventType::NodeDataChanged,
            KeeperState::SyncConnected,
            "/ab",
            "/ab",
        );
        assert_eq!(rx.try_recv().unwrap().path, "/a/b/c");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn set_watches_splits() {
        let mut reg = WatchRegistry::default();
        let mut keep = Vec::new();
        for i in 0..100 {
            let (tx, rx) = oneshot::channel();
            keep.push(rx);
            reg.register(
                WatchRegistration {
                    path: format!("/node-{i:05}"),
                    kind: WatchKind::Data,
                    sink: WatchSink::Oneshot(tx),
                },
                true,
            );
        }
        let packets = reg.set_watches(7, 200);
        assert!(packets.len() > 1);
        let total: usize = packets.iter().map(|p| p.data_watches.len()).sum();
        assert_eq!(total, 100);
        drop(keep);
        assert!(reg.set_watches(7, 200).is_empty());
    }
}
