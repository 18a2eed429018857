//! Watch registry: which connections watch which paths, and who hears about a change.
//!
//! This is ZooKeeper 3.9's pair of `WatchManager`s (`dataWatches` and `childWatches` in
//! `DataTree`) folded into one table. Every (watcher, path) pair carries a small set of mode
//! bits, which is what ZooKeeper's `WatchStats` (ZOOKEEPER-4466, 3.9.0) records per manager:
//!
//! | bit          | ZooKeeper equivalent                                   | set by                 |
//! |--------------|--------------------------------------------------------|------------------------|
//! | `DATA`       | `STANDARD` in `dataWatches`                            | getData, exists        |
//! | `CHILD`      | `STANDARD` in `childWatches`                           | getChildren(2)         |
//! | `PERSISTENT` | `PERSISTENT` in both `dataWatches` and `childWatches`  | addWatch mode 0        |
//! | `RECURSIVE`  | `PERSISTENT_RECURSIVE` in `dataWatches` only           | addWatch mode 1        |
//!
//! `PERSISTENT` is always added to and removed from both ZooKeeper managers together
//! (`DataTree.addWatch`, `setWatches`, `removeWatch`), and triggers never clear it, so a single
//! bit represents both copies faithfully.
//!
//! ZooKeeper 3.8 differs, and we deliberately follow 3.9: 3.8 keeps one mode per (watcher, path)
//! (a later getData replaces a persistent watch's mode), its removeWatches Data/Children also
//! drop persistent watches on the path, and WatcherType 4/5 (Persistent, PersistentRecursive)
//! do not exist there. Event delivery for the common cases is the same in both.
//!
//! Notifications carry no zxid in the WatcherEvent record; since 3.9 ZooKeeper puts the
//! triggering write's zxid in the notification's ReplyHeader (3.8 sends -1). That is the
//! server's business: it knows which write produced the trigger.
//!
//! Nothing here does I/O: the server holds a `WatchManager` under a mutex, applies a write to
//! the tree, feeds the resulting [`WatchTrigger`]s to [`WatchManager::trigger`] (or
//! [`WatchManager::fire`]) and sends the events to the connections it is told about.

use std::collections::{btree_map, BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rookery_protocol::{EventType, KeeperState, SetWatches2, WatcherEvent, WatcherType};

/// A change to the tree that may fire watches, produced by `tree` when it applies a write.
/// The variants mirror the calls ZooKeeper's DataTree makes into its two WatchManagers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchTrigger {
    /// A node was created: NodeCreated to the data/exist (and persistent) watchers of `path`.
    Created(String),
    /// A node was deleted: NodeDeleted to the data, exist and child watchers of `path`,
    /// each watcher notified once.
    Deleted(String),
    /// A node's data was set: NodeDataChanged to the data watchers of `path`.
    DataChanged(String),
    /// A node's children changed: NodeChildrenChanged to the child watchers of `path`.
    ChildrenChanged(String),
}

impl WatchTrigger {
    /// The path the event is about.
    pub fn path(&self) -> &str {
        match self {
            WatchTrigger::Created(p)
            | WatchTrigger::Deleted(p)
            | WatchTrigger::DataChanged(p)
            | WatchTrigger::ChildrenChanged(p) => p,
        }
    }

    /// The event type clients receive for this trigger.
    pub fn event_type(&self) -> EventType {
        match self {
            WatchTrigger::Created(_) => EventType::NodeCreated,
            WatchTrigger::Deleted(_) => EventType::NodeDeleted,
            WatchTrigger::DataChanged(_) => EventType::NodeDataChanged,
            WatchTrigger::ChildrenChanged(_) => EventType::NodeChildrenChanged,
        }
    }
}

/// Identifies a watcher: one per client connection. Watches belong to a connection in
/// ZooKeeper (the `ServerCnxn` is the `Watcher`); a reconnecting client re-arms them with
/// SetWatches on its new connection.
pub type WatcherId = u64;

/// How a watch was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchKind {
    /// getData with watch=true: one-shot, fires on NodeDataChanged and NodeDeleted
    /// (and NodeCreated, should the node be re-created before the watch fires).
    Data,
    /// exists with watch=true: one-shot. The server stores it exactly like a data watch
    /// (`DataTree.statNode` adds to `dataWatches` even when the node is missing).
    Exist,
    /// getChildren with watch=true: one-shot, fires on NodeChildrenChanged and NodeDeleted.
    Child,
    /// addWatch mode PERSISTENT (0): every event on the path, including NodeChildrenChanged;
    /// never removed by firing.
    Persistent,
    /// addWatch mode PERSISTENT_RECURSIVE (1): NodeCreated, NodeDeleted and NodeDataChanged on
    /// the path and every descendant, never NodeChildrenChanged; never removed by firing.
    PersistentRecursive,
}

impl WatchKind {
    fn bit(self) -> Modes {
        match self {
            WatchKind::Data | WatchKind::Exist => DATA,
            WatchKind::Child => CHILD,
            WatchKind::Persistent => PERSISTENT,
            WatchKind::PersistentRecursive => RECURSIVE,
        }
    }
}

/// Counts for the `wchs` four-letter word (ZooKeeper's `WatchesSummary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WatchSummary {
    /// Watchers (connections) holding at least one reported watch: `num_connections`.
    pub connections: usize,
    /// Paths carrying at least one reported watch: `num_paths`.
    pub paths: usize,
    /// Reported (watcher, path) pairs: `num_total_watches`.
    pub total_watches: usize,
}

impl std::fmt::Display for WatchSummary {
    /// ZooKeeper's `WatchManager.toString()`, which `wchs` prints (followed by a newline).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connections watching {} paths\nTotal watches:{}",
            self.connections, self.paths, self.total_watches
        )
    }
}

/// The outcome of one trigger: a single event and everyone it goes to, so the server can
/// serialize the notification once and write the same bytes to every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The notification (state SyncConnected), identical for every recipient.
    pub event: WatcherEvent,
    /// Recipients in ascending id order, each at most once.
    pub watchers: Vec<WatcherId>,
}

/// Bit set of the watch modes one watcher has on one path.
type Modes = u8;
/// One-shot data or exist watch (ZooKeeper: STANDARD in `dataWatches`).
const DATA: Modes = 1;
/// One-shot child watch (ZooKeeper: STANDARD in `childWatches`).
const CHILD: Modes = 2;
/// Persistent watch (ZooKeeper: PERSISTENT in both managers).
const PERSISTENT: Modes = 4;
/// Persistent recursive watch (ZooKeeper: PERSISTENT_RECURSIVE in `dataWatches`).
const RECURSIVE: Modes = 8;
/// Every mode.
const ALL: Modes = DATA | CHILD | PERSISTENT | RECURSIVE;
/// Modes that live in ZooKeeper's `dataWatches`: what the wchs/wchc/wchp reports list.
const DATA_SIDE: Modes = DATA | PERSISTENT | RECURSIVE;
/// Modes that live in ZooKeeper's `childWatches`.
const CHILD_SIDE: Modes = CHILD | PERSISTENT;
/// Modes a firing removes: the one-shot ones.
const ONE_SHOT: Modes = DATA | CHILD;

/// The watchers of one path.
#[derive(Debug)]
struct PathWatches {
    /// The map key again, so a lookup by `&str` can hand out the shared `Arc` without a
    /// second hash lookup (std's HashMap has no `get_key_value_mut`).
    path: Arc<str>,
    /// watcher → its modes on this path, ordered so deliveries come out sorted.
    watchers: BTreeMap<WatcherId, Modes>,
}

/// All watches of all connections, indexed both ways.
#[derive(Debug, Default)]
pub struct WatchManager {
    /// path → (watcher → modes): finds who to notify when a path changes. A BTreeMap per path
    /// makes delivery order deterministic (ascending watcher id) without sorting. Paths are
    /// `Arc<str>` shared with `by_watcher`, so each watched path is stored once.
    by_path: HashMap<Arc<str>, PathWatches>,
    /// watcher → paths it has any watch on: makes dropping a closed connection's watches
    /// proportional to its own watches rather than to the whole table.
    by_watcher: HashMap<WatcherId, HashSet<Arc<str>>>,
    /// Number of (watcher, path) pairs with a persistent-recursive watch: when zero, a trigger
    /// skips walking the changed path's ancestors (ZooKeeper's `recursiveWatchQty`).
    recursive: usize,
    /// Number of (watcher, path) pairs present in ZooKeeper's `dataWatches`: half of the
    /// `zk_watch_count` that mntr reports, kept incrementally so mntr stays O(1).
    data_side: usize,
    /// Number of (watcher, path) pairs present in ZooKeeper's `childWatches`: the other half of
    /// `zk_watch_count` (a persistent watch is counted in both, as ZooKeeper does).
    child_side: usize,
}

impl WatchManager {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms a watch (`DataTree.getData/statNode/getChildren/addWatch`). Adding a watch that
    /// already exists is a no-op; different kinds on the same path coexist (ZOOKEEPER-4466).
    pub fn add(&mut self, watcher: WatcherId, path: &str, kind: WatchKind) {
        let bit = kind.bit();
        let entry = match self.by_path.get_mut(path) {
            Some(entry) => entry,
            None => {
                let key: Arc<str> = Arc::from(path);
                self.by_path.entry(key.clone()).or_insert(PathWatches {
                    path: key,
                    watchers: BTreeMap::new(),
                })
            }
        };
        let old = match entry.watchers.entry(watcher) {
            btree_map::Entry::Vacant(slot) => {
                slot.insert(bit);
                self.by_watcher
                    .entry(watcher)
                    .or_default()
                    .insert(entry.path.clone());
                0
            }
            btree_map::Entry::Occupied(mut slot) => {
                let old = *slot.get();
                *slot.get_mut() = old | bit;
                old
            }
        };
        Self::account(
            &mut self.recursive,
            &mut self.data_side,
            &mut self.child_side,
            old,
            old | bit,
        );
    }

    /// Fires one trigger and returns each delivery, in ascending watcher id order, a watcher
    /// at most once. One-shot watches that fire are removed; persistent ones stay.
    pub fn trigger(&mut self, trigger: &WatchTrigger) -> Vec<(WatcherId, WatcherEvent)> {
        let fired = self.fire(trigger);
        let event = fired.event;
        fired
            .watchers
            .into_iter()
            .map(|id| (id, event.clone()))
            .collect()
    }

    /// [`trigger`](Self::trigger) without a copy of the event per recipient.
    ///
    /// Rules (ZooKeeper 3.9 `DataTree` + `WatchManager.triggerWatch`):
    /// - Created / DataChanged: `dataWatches.triggerWatch(path)`: data, exist, persistent and
    ///   recursive watches on `path`, plus recursive watches on its ancestors.
    /// - ChildrenChanged: `childWatches.triggerWatch(path)`: child and persistent watches on
    ///   `path` only (recursive watches never live in `childWatches`).
    /// - Deleted: both, with the child trigger suppressing watchers the data trigger already
    ///   notified, so every watch on `path` fires once, plus recursive ancestors.
    pub fn fire(&mut self, trigger: &WatchTrigger) -> Fired {
        let path = trigger.path();
        let (fires, walk_ancestors) = match trigger {
            WatchTrigger::Created(_) | WatchTrigger::DataChanged(_) => (DATA_SIDE, true),
            WatchTrigger::ChildrenChanged(_) => (CHILD_SIDE, false),
            WatchTrigger::Deleted(_) => (ALL, true),
        };
        let mut watchers = Vec::new();
        self.fire_exact(path, fires, &mut watchers);
        if walk_ancestors && self.recursive > 0 {
            let exact = watchers.len();
            for ancestor in ancestors(path) {
                if let Some(entry) = self.by_path.get(ancestor) {
                    watchers.extend(
                        entry
                            .watchers
                            .iter()
                            .filter(|(_, modes)| **modes & RECURSIVE != 0)
                            .map(|(id, _)| *id),
                    );
                }
            }
            if watchers.len() > exact {
                watchers.sort_unstable();
                watchers.dedup();
            }
        }
        Fired {
            event: event(trigger.event_type(), path),
            watchers,
        }
    }

    /// Notifies the watchers on exactly `path` that hold any of `fires`, clearing the
    /// one-shot bits among `fires`.
    fn fire_exact(&mut self, path: &str, fires: Modes, out: &mut Vec<WatcherId>) {
        let Some(PathWatches {
            path: key,
            watchers: entries,
        }) = self.by_path.get_mut(path)
        else {
            return;
        };
        let clears = fires & ONE_SHOT;
        let by_watcher = &mut self.by_watcher;
        let (recursive, data_side, child_side) = (
            &mut self.recursive,
            &mut self.data_side,
            &mut self.child_side,
        );
        entries.retain(|id, modes| {
            if *modes & fires == 0 {
                return true;
            }
            out.push(*id);
            let old = *modes;
            let new = old & !clears;
            Self::account(recursive, data_side, child_side, old, new);
            *modes = new;
            if new == 0 {
                Self::unlink(by_watcher, *id, key);
                false
            } else {
                true
            }
        });
        if entries.is_empty() {
            self.by_path.remove(path);
        }
    }

    /// SetWatches / SetWatches2 on reconnect (`DataTree.setWatches`). `lookup(path)` is
    /// `Some((mzxid, pzxid))` when the node exists. Returns the events to send now, in
    /// request order (data, exist, child); everything else is armed.
    /// - data watch: missing → NodeDeleted; mzxid > relative_zxid → NodeDataChanged; else armed.
    /// - exist watch: exists → NodeCreated; else armed.
    /// - child watch: missing → NodeDeleted; pzxid > relative_zxid → NodeChildrenChanged;
    ///   else armed.
    /// - persistent and persistent-recursive watches: always armed, nothing sent, even if the
    ///   node is missing or changed.
    ///
    /// A watch fired here is not armed: like ZooKeeper, the client has to set it again.
    pub fn set_watches(
        &mut self,
        watcher: WatcherId,
        relative_zxid: i64,
        req: &SetWatches2,
        lookup: impl Fn(&str) -> Option<(i64, i64)>,
    ) -> Vec<WatcherEvent> {
        let mut events = Vec::new();
        for path in &req.data_watches {
            match lookup(path) {
                None => events.push(event(EventType::NodeDeleted, path)),
                Some((mzxid, _)) if mzxid > relative_zxid => {
                    events.push(event(EventType::NodeDataChanged, path))
                }
                Some(_) => self.add(watcher, path, WatchKind::Data),
            }
        }
        for path in &req.exist_watches {
            match lookup(path) {
                Some(_) => events.push(event(EventType::NodeCreated, path)),
                None => self.add(watcher, path, WatchKind::Exist),
            }
        }
        for path in &req.child_watches {
            match lookup(path) {
                None => events.push(event(EventType::NodeDeleted, path)),
                Some((_, pzxid)) if pzxid > relative_zxid => {
                    events.push(event(EventType::NodeChildrenChanged, path))
                }
                Some(_) => self.add(watcher, path, WatchKind::Child),
            }
        }
        for path in &req.persistent_watches {
            self.add(watcher, path, WatchKind::Persistent);
        }
        for path in &req.persistent_recursive_watches {
            self.add(watcher, path, WatchKind::PersistentRecursive);
        }
        events
    }

    /// checkWatches (17): does `watcher` hold a watch of type `wtype` on exactly `path`?
    /// `false` means the server answers NoWatcher (-121). ZooKeeper 3.9 `DataTree.containsWatcher`:
    /// - Children: a one-shot child watch (not a persistent one).
    /// - Data: a one-shot data or exist watch (not a persistent one).
    /// - Persistent / PersistentRecursive: that persistent mode.
    /// - Any: any watch at all on the path, persistent ones included.
    pub fn has_watch(&self, watcher: WatcherId, path: &str, wtype: WatcherType) -> bool {
        self.modes(watcher, path) & type_mask(wtype) != 0
    }

    /// removeWatches (18): removes the watches of type `wtype` (same coverage as
    /// [`has_watch`](Self::has_watch)) that `watcher` holds on exactly `path`, leaving its other
    /// modes there in place. Returns whether anything was removed; `false` means NoWatcher.
    pub fn remove(&mut self, watcher: WatcherId, path: &str, wtype: WatcherType) -> bool {
        let mask = type_mask(wtype);
        let Some(PathWatches {
            path: key,
            watchers: entries,
        }) = self.by_path.get_mut(path)
        else {
            return false;
        };
        let Some(modes) = entries.get_mut(&watcher) else {
            return false;
        };
        let old = *modes;
        if old & mask == 0 {
            return false;
        }
        let new = old & !mask;
        Self::account(
            &mut self.recursive,
            &mut self.data_side,
            &mut self.child_side,
            old,
            new,
        );
        if new != 0 {
            *modes = new;
            return true;
        }
        entries.remove(&watcher);
        Self::unlink(&mut self.by_watcher, watcher, key);
        if entries.is_empty() {
            self.by_path.remove(path);
        }
        true
    }

    /// Connection closed: drops all its watches (`DataTree.removeCnxn`).
    pub fn remove_watcher(&mut self, watcher: WatcherId) {
        let Some(paths) = self.by_watcher.remove(&watcher) else {
            return;
        };
        for path in paths {
            let Some(PathWatches {
                watchers: entries, ..
            }) = self.by_path.get_mut(&*path)
            else {
                continue;
            };
            if let Some(old) = entries.remove(&watcher) {
                Self::account(
                    &mut self.recursive,
                    &mut self.data_side,
                    &mut self.child_side,
                    old,
                    0,
                );
            }
            if entries.is_empty() {
                self.by_path.remove(&*path);
            }
        }
    }

    /// `wchs`: ZooKeeper reports its `dataWatches` table only (`DataTree.getWatchesSummary`),
    /// so one-shot child watches are not counted; data, exist, persistent and recursive are.
    pub fn summary(&self) -> WatchSummary {
        let mut summary = WatchSummary::default();
        for entry in self.by_path.values() {
            let n = entry
                .watchers
                .values()
                .filter(|m| **m & DATA_SIDE != 0)
                .count();
            if n > 0 {
                summary.paths += 1;
                summary.total_watches += n;
            }
        }
        summary.connections = self
            .by_watcher
            .keys()
            .filter(|id| !self.reported_paths(**id).is_empty())
            .count();
        summary
    }

    /// `wchc`: each watcher's watched paths, sorted (`DataTree.getWatches`: `dataWatches` only,
    /// so watchers holding nothing but child watches are absent).
    pub fn by_watcher(&self) -> BTreeMap<WatcherId, Vec<String>> {
        self.by_watcher
            .keys()
            .filter_map(|id| {
                let paths = self.reported_paths(*id);
                (!paths.is_empty()).then_some((*id, paths))
            })
            .collect()
    }

    /// `wchp`: each watched path's watchers, ascending (`DataTree.getWatchesByPath`:
    /// `dataWatches` only).
    pub fn by_path(&self) -> BTreeMap<String, Vec<WatcherId>> {
        self.by_path
            .iter()
            .filter_map(|(path, entry)| {
                let ids: Vec<WatcherId> = entry
                    .watchers
                    .iter()
                    .filter(|(_, m)| **m & DATA_SIDE != 0)
                    .map(|(id, _)| *id)
                    .collect();
                (!ids.is_empty()).then(|| (path.to_string(), ids))
            })
            .collect()
    }

    /// mntr's `zk_watch_count` (`DataTree.getWatchCount`): entries in `dataWatches` plus entries
    /// in `childWatches`; a persistent watch counts twice, as in ZooKeeper.
    pub fn watch_count(&self) -> usize {
        self.data_side + self.child_side
    }

    /// Every (watcher, path) pair with at least one watch, whatever its kind.
    pub fn len(&self) -> usize {
        self.by_path.values().map(|e| e.watchers.len()).sum()
    }

    /// No watches at all.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// Number of watches `watcher` holds, one per path whatever the kinds there.
    pub fn watcher_len(&self, watcher: WatcherId) -> usize {
        self.by_watcher.get(&watcher).map_or(0, HashSet::len)
    }

    /// The modes `watcher` holds on exactly `path` (0 if none).
    fn modes(&self, watcher: WatcherId, path: &str) -> Modes {
        self.by_path
            .get(path)
            .and_then(|entry| entry.watchers.get(&watcher))
            .copied()
            .unwrap_or(0)
    }

    /// `watcher`'s paths that ZooKeeper's `dataWatches` would list, sorted.
    fn reported_paths(&self, watcher: WatcherId) -> Vec<String> {
        let mut paths: Vec<String> = self
            .by_watcher
            .get(&watcher)
            .into_iter()
            .flatten()
            .filter(|p| self.modes(watcher, p) & DATA_SIDE != 0)
            .map(|p| p.to_string())
            .collect();
        paths.sort_unstable();
        paths
    }

    /// Removes `path` from `watcher`'s reverse index, dropping the watcher when it has no
    /// path left.
    fn unlink(
        by_watcher: &mut HashMap<WatcherId, HashSet<Arc<str>>>,
        watcher: WatcherId,
        path: &str,
    ) {
        if let Some(paths) = by_watcher.get_mut(&watcher) {
            paths.remove(path);
            if paths.is_empty() {
                by_watcher.remove(&watcher);
            }
        }
    }

    /// Keeps the counters in step with one pair's modes going from `old` to `new`.
    fn account(
        recursive: &mut usize,
        data_side: &mut usize,
        child_side: &mut usize,
        old: Modes,
        new: Modes,
    ) {
        fn step(counter: &mut usize, had: bool, has: bool) {
            match (had, has) {
                (false, true) => *counter += 1,
                (true, false) => *counter = counter.saturating_sub(1),
                _ => {}
            }
        }
        step(recursive, old & RECURSIVE != 0, new & RECURSIVE != 0);
        step(data_side, old & DATA_SIDE != 0, new & DATA_SIDE != 0);
        step(child_side, old & CHILD_SIDE != 0, new & CHILD_SIDE != 0);
    }
}

/// The modes a checkWatches/removeWatches WatcherType covers (ZooKeeper 3.9 `DataTree`).
fn type_mask(wtype: WatcherType) -> Modes {
    match wtype {
        WatcherType::Children => CHILD,
        WatcherType::Data => DATA,
        WatcherType::Persistent => PERSISTENT,
        WatcherType::PersistentRecursive => RECURSIVE,
        WatcherType::Any => ALL,
    }
}

/// A notification as ZooKeeper's `WatchManager` builds it: state SyncConnected.
fn event(event_type: EventType, path: &str) -> WatcherEvent {
    WatcherEvent {
        event_type: event_type.wire(),
        state: KeeperState::SyncConnected.wire(),
        path: path.to_owned(),
    }
}

/// The proper ancestors of `path`, nearest first, ending with "/" (ZooKeeper's
/// `PathParentIterator` minus its first element). "/" has none.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = path;
    std::iter::from_fn(move || {
        if rest.len() <= 1 {
            return None;
        }
        let cut = rest.rfind('/')?;
        rest = if cut == 0 { "/" } else { &rest[..cut] };
        Some(rest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CREATED: i32 = 1;
    const DELETED: i32 = 2;
    const DATA_CHANGED: i32 = 3;
    const CHILDREN_CHANGED: i32 = 4;

    fn created(p: &str) -> WatchTrigger {
        WatchTrigger::Created(p.to_owned())
    }
    fn deleted(p: &str) -> WatchTrigger {
        WatchTrigger::Deleted(p.to_owned())
    }
    fn changed(p: &str) -> WatchTrigger {
        WatchTrigger::DataChanged(p.to_owned())
    }
    fn children(p: &str) -> WatchTrigger {
        WatchTrigger::ChildrenChanged(p.to_owned())
    }

    fn ev(event_type: i32, path: &str) -> WatcherEvent {
        WatcherEvent {
            event_type,
            state: 3,
            path: path.to_owned(),
        }
    }

    /// Fires `t` and returns the ids, after checking every delivery carries the same event.
    fn ids(m: &mut WatchManager, t: &WatchTrigger) -> Vec<WatcherId> {
        let out = m.trigger(t);
        for (_, e) in &out {
            assert_eq!(e.path, t.path());
            assert_eq!(e.state, 3);
            assert_eq!(e.event_type, t.event_type().wire());
        }
        check_invariants(m);
        out.into_iter().map(|(id, _)| id).collect()
    }

    /// The two indexes agree and the counters match a recount.
    fn check_invariants(m: &WatchManager) {
        let (mut rec, mut data, mut child) = (0, 0, 0);
        for (key, entry) in &m.by_path {
            assert_eq!(key, &entry.path);
            assert!(!entry.watchers.is_empty(), "empty path entry {key}");
            for (id, modes) in &entry.watchers {
                assert_ne!(*modes, 0);
                assert!(m.by_watcher[id].contains(&**key));
                rec += usize::from(modes & RECURSIVE != 0);
                data += usize::from(modes & DATA_SIDE != 0);
                child += usize::from(modes & CHILD_SIDE != 0);
            }
        }
        for (id, paths) in &m.by_watcher {
            assert!(!paths.is_empty());
            for p in paths {
                assert!(m.by_path[&**p].watchers.contains_key(id));
            }
        }
        assert_eq!((m.recursive, m.data_side, m.child_side), (rec, data, child));
    }

    #[test]
    fn event_is_sync_connected_with_wire_type() {
        let mut m = WatchManager::new();
        m.add(1, "/a", WatchKind::Data);
        assert_eq!(m.trigger(&changed("/a")), vec![(1, ev(DATA_CHANGED, "/a"))]);
        m.add(1, "/a", WatchKind::Exist);
        assert_eq!(m.trigger(&created("/a")), vec![(1, ev(CREATED, "/a"))]);
        m.add(1, "/a", WatchKind::Child);
        assert_eq!(
            m.trigger(&children("/a")),
            vec![(1, ev(CHILDREN_CHANGED, "/a"))]
        );
        m.add(1, "/a", WatchKind::Data);
        assert_eq!(m.trigger(&deleted("/a")), vec![(1, ev(DELETED, "/a"))]);
    }

    #[test]
    fn data_watch_is_one_shot() {
        let mut m = WatchManager::new();
        m.add(1, "/a", WatchKind::Data);
        m.add(1, "/a", WatchKind::Data); // idempotent
        assert_eq!(ids(&mut m, &changed("/a")), vec![1]);
        assert!(ids(&mut m, &changed("/a")).is_empty());
        assert!(m.is_empty());
        assert!(m.by_watcher.is_empty());
    }

    #[test]
    fn exist_watch_on_missing_node_fires_node_created_once() {
        let mut m = WatchManager::new();
        m.add(7, "/missing", WatchKind::Exist);
        assert!(m.has_watch(7, "/missing", WatcherType::Data));
        assert_eq!(ids(&mut m, &created("/missing")), vec![7]);
        assert!(ids(&mut m, &created("/missing")).is_empty());
        assert!(m.is_empty());
    }

    #[test]
    fn data_and_exist_watches_are_the_same_server_side() {
        // DataTree.getData and statNode both add STANDARD to dataWatches.
        let mut m = WatchManager::new();
        m.add(1, "/a", WatchKind::Data);
        m.add(1, "/a", WatchKind::Exist);
        assert_eq!(m.len(), 1);
        assert_eq!(ids(&mut m, &created("/a")), vec![1]);
        assert!(m.is_empty());
    }

    #[test]
    fn data_watch_ignores_child_events_and_child_watch_ignores_data_events() {
        let mut m = WatchManager::new();
        m.add(1, "/a", WatchKind::Data);
        m.add(2, "/a", WatchKind::Child);
        assert_eq!(ids(&mut m, &children("/a")), vec![2]);
        m.add(2, "/a", WatchKind::Child);
        assert_eq!(ids(&mut m, &changed("/a")), vec![1]);
        m.add(1, "/a", WatchKind::Data);
        assert_eq!(ids(&mut m, &created("/a")), vec![1]);
        assert!(m.has_watch(2, "/a", WatcherType::Children));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn watches_are_per_path_not_per_subtree() {
        let mut m = WatchManager::new();
        m.add(1, "/a", WatchKind::Data);
        m.add(2, "/a", WatchKind::Child);
        m.add(3, "/a", WatchKind::Persistent);
        assert!(ids(&mut m, &changed("/a/b")).is_empty());
        assert!(ids(&mut m, &created("/a/b")).is_empty());
        assert!(ids(&mut m, &deleted("/a/b")).is_empty());
        assert!(ids(&mut m, &children("/a/b")).is_empty());
        assert!(ids(&mut m, &changed("/ab")).is_empty());
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn delete_fires_data_and_child_watches_once_and_removes_both() {
        let mut m = WatchManager::new();
        m.add(1, "/a", WatchKind::Data);
        m.add(1, "/a", WatchKind::Child);
        m.add(2, "/a", WatchKind::Child);
        m.add(3, "/a", WatchKind::Exist);
        assert_eq!(ids(&mut m, &deleted("/a")), vec![1, 2, 3]);
        assert!(m.is_empty());
        assert!(ids(&mut m, &deleted("/a")).is_empty());
    }

    #[test]
    fn persistent_watch_sees_every_event_type_on_its_path_and_stays() {
        let mut m = WatchManager::new();
        m.add(1, "/a", WatchKind::Persistent);
        for t in [
            created("/a"),
            changed("/a"),
            children("/a"),
            deleted("/a"),
            created("/a"),
        ] {
            assert_eq!(ids(&mut m, &t), vec![1], "{t:?}");
        }
        assert!(m.has_watch(1, "/a", WatcherType::Persistent));
        // Not its descendants.
        assert!(ids(&mut m, &changed("/a/b")).is_empty());
        assert!(ids(&mut m, &created("/a/b")).is_empty());
    }

    #[test]
    fn recursive_watch_sees_subtree_but_never_children_changed() {
        let mut m = WatchManager::new();
        m.add(1, "/a", WatchKind::PersistentRecursive);
        for t in [
            created("/a"),
            changed("/a"),
            deleted("/a"),
            created("/a/b"),
            changed("/a/b/c"),
            deleted("/a/b/c/d"),
        ] {
            assert_eq!(ids(&mut m, &t), vec![1], "{t:?}");
        }
        assert!(ids(&mut m, &children("/a")).is_empty());
        assert!(ids(&mut m, &children("/a/b")).is_empty());
        // Neither siblings with a common prefix nor ancestors.
        assert!(ids(&mut m, &changed("/ab")).is_empty());
        assert!(ids(&mut m, &changed("/")).is_empty());
        assert!(m.has_watch(1, "/a", WatcherType::PersistentRecursive));
    }

    #[test]
    fn recursive_watch_on_root_sees_everything_but_children_changed() {
        let mut m = WatchManager::new();
        m.add(9, "/", WatchKind::PersistentRecursive);
        assert_eq!(ids(&mut m, &changed("/")), vec![9]);
        assert_eq!(ids(&mut m, &created("/x")), vec![9]);
        assert_eq!(ids(&mut m, &deleted("/x/y/z")), vec![9]);
        assert!(ids(&mut m, &children("/")).is_empty());
    }

    #[test]
    fn one_event_per_watcher_per_trigger() {
        let mut m = WatchManager::new();
        m.add(1, "/", WatchKind::PersistentRecursive);
        m.add(1, "/a", WatchKind::PersistentRecursive);
        m.add(1, "/a/b", WatchKind::PersistentRecursive);
        m.add(1, "/a/b", WatchKind::Persistent);
        m.add(1, "/a/b", WatchKind::Data);
        m.add(1, "/a/b", WatchKind::Child);
        assert_eq!(ids(&mut m, &deleted("/a/b")), vec![1]);
        // The one-shot modes went, the persistent ones stayed.
        assert!(!m.has_watch(1, "/a/b", WatcherType::Data));
        assert!(!m.has_watch(1, "/a/b", WatcherType::Children));
        assert!(m.has_watch(1, "/a/b", WatcherType::Persistent));
        assert!(m.has_watch(1, "/a/b", WatcherType::PersistentRecursive));
        assert_eq!(ids(&mut m, &changed("/a/b/c")), vec![1]);
    }

    #[test]
    fn one_shot_and_persistent_on_same_path_coexist() {
        // ZOOKEEPER-4466 (3.9): modes on one path are tracked separately.
        let mut m = WatchManager::new();
        m.add(1, "/a", WatchKind::Persistent);
        m.add(1, "/a", WatchKind::Data);
        assert_eq!(ids(&mut m, &changed("/a")), vec![1]);
        assert!(!m.has_watch(1, "/a", WatcherType::Data));
        assert!(m.has_watch(1, "/a", WatcherType::Persistent));
        assert_eq!(ids(&mut m, &changed("/a")), vec![1]);
    }

    #[test]
    fn delivery_order_is_ascending_watcher_id() {
        let mut m = WatchManager::new();
        for id in [5, 1, 4, 3, 2] {
            m.add(id, "/a/b", WatchKind::Data);
        }
        m.add(0, "/a", WatchKind::PersistentRecursive);
        m.add(6, "/", WatchKind::PersistentRecursive);
        m.add(3, "/", WatchKind::PersistentRecursive);
        assert_eq!(ids(&mut m, &changed("/a/b")), vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(ids(&mut m, &changed("/a/b")), vec![0, 3, 6]);
    }

    #[test]
    fn fire_returns_one_event_for_all() {
        let mut m = WatchManager::new();
        m.add(2, "/a", WatchKind::Data);
        m.add(1, "/a", WatchKind::Data);
        let fired = m.fire(&changed("/a"));
        assert_eq!(fired.event, ev(DATA_CHANGED, "/a"));
        assert_eq!(fired.watchers, vec![1, 2]);
        let fired = m.fire(&changed("/a"));
        assert!(fired.watchers.is_empty());
    }

    fn lookup(path: &str) -> Option<(i64, i64)> {
        match path {
            "/old" => Some((10, 10)),     // unchanged since zxid 10
            "/data" => Some((20, 10)),    // data changed after 10
            "/kids" => Some((10, 20)),    // children changed after 10
            "/exactly" => Some((15, 15)), // changed at exactly the relative zxid
            _ => None,
        }
    }

    fn set_watches2(
        data: &[&str],
        exist: &[&str],
        child: &[&str],
        persistent: &[&str],
        recursive: &[&str],
    ) -> SetWatches2 {
        let v = |s: &[&str]| s.iter().map(|p| p.to_string()).collect();
        SetWatches2 {
            relative_zxid: 15,
            data_watches: v(data),
            exist_watches: v(exist),
            child_watches: v(child),
            persistent_watches: v(persistent),
            persistent_recursive_watches: v(recursive),
        }
    }

    #[test]
    fn set_watches_data_branches() {
        let mut m = WatchManager::new();
        let req = set_watches2(&["/gone", "/data", "/old", "/exactly"], &[], &[], &[], &[]);
        let events = m.set_watches(1, 15, &req, lookup);
        assert_eq!(
            events,
            vec![ev(DELETED, "/gone"), ev(DATA_CHANGED, "/data")]
        );
        assert!(!m.has_watch(1, "/gone", WatcherType::Any));
        assert!(!m.has_watch(1, "/data", WatcherType::Any));
        assert!(m.has_watch(1, "/old", WatcherType::Data));
        assert!(m.has_watch(1, "/exactly", WatcherType::Data));
        assert_eq!(ids(&mut m, &changed("/old")), vec![1]);
        check_invariants(&m);
    }

    #[test]
    fn set_watches_exist_branches() {
        let mut m = WatchManager::new();
        let req = set_watches2(&[], &["/old", "/gone"], &[], &[], &[]);
        let events = m.set_watches(1, 15, &req, lookup);
        assert_eq!(events, vec![ev(CREATED, "/old")]);
        assert!(!m.has_watch(1, "/old", WatcherType::Any));
        assert!(m.has_watch(1, "/gone", WatcherType::Data));
        assert_eq!(ids(&mut m, &created("/gone")), vec![1]);
    }

    #[test]
    fn set_watches_child_branches() {
        let mut m = WatchManager::new();
        // "/data" had its data changed but not its children: a child watch is re-armed.
        let req = set_watches2(&[], &[], &["/gone", "/kids", "/old", "/data"], &[], &[]);
        let events = m.set_watches(1, 15, &req, lookup);
        assert_eq!(
            events,
            vec![ev(DELETED, "/gone"), ev(CHILDREN_CHANGED, "/kids")]
        );
        assert!(m.has_watch(1, "/old", WatcherType::Children));
        assert!(m.has_watch(1, "/data", WatcherType::Children));
        assert!(!m.has_watch(1, "/kids", WatcherType::Any));
        assert_eq!(ids(&mut m, &children("/old")), vec![1]);
    }

    #[test]
    fn set_watches_arms_persistent_watches_without_events() {
        // DataTree.setWatches adds persistent and recursive watches unconditionally.
        let mut m = WatchManager::new();
        let req = set_watches2(&[], &[], &[], &["/gone", "/data"], &["/kids", "/nope"]);
        assert!(m.set_watches(1, 15, &req, lookup).is_empty());
        assert!(m.has_watch(1, "/gone", WatcherType::Persistent));
        assert!(m.has_watch(1, "/data", WatcherType::Persistent));
        assert!(m.has_watch(1, "/kids", WatcherType::PersistentRecursive));
        assert!(m.has_watch(1, "/nope", WatcherType::PersistentRecursive));
        assert_eq!(ids(&mut m, &created("/nope/x")), vec![1]);
        assert_eq!(ids(&mut m, &children("/data")), vec![1]);
    }

    #[test]
    fn set_watches_events_follow_request_order() {
        let mut m = WatchManager::new();
        let req = set_watches2(&["/data"], &["/old"], &["/kids"], &[], &[]);
        assert_eq!(
            m.set_watches(4, 15, &req, lookup),
            vec![
                ev(DATA_CHANGED, "/data"),
                ev(CREATED, "/old"),
                ev(CHILDREN_CHANGED, "/kids")
            ]
        );
        assert!(m.is_empty());
    }

    #[test]
    fn check_watches_type_coverage() {
        let mut m = WatchManager::new();
        m.add(1, "/d", WatchKind::Data);
        m.add(1, "/e", WatchKind::Exist);
        m.add(1, "/c", WatchKind::Child);
        m.add(1, "/p", WatchKind::Persistent);
        m.add(1, "/r", WatchKind::PersistentRecursive);
        use WatcherType::*;
        let table = [
            ("/d", [false, true, true, false, false]),
            ("/e", [false, true, true, false, false]),
            ("/c", [true, false, true, false, false]),
            ("/p", [false, false, true, true, false]),
            ("/r", [false, false, true, false, true]),
            ("/none", [false; 5]),
        ];
        for (path, expect) in table {
            for (wtype, want) in [Children, Data, Any, Persistent, PersistentRecursive]
                .into_iter()
                .zip(expect)
            {
                assert_eq!(m.has_watch(1, path, wtype), want, "{path} {wtype:?}");
                // Other watchers and descendants never match.
                assert!(!m.has_watch(2, path, wtype));
                assert!(!m.has_watch(1, &format!("{path}/x"), wtype));
            }
        }
    }

    #[test]
    fn remove_watches_type_coverage() {
        use WatcherType::*;
        let kinds = [
            WatchKind::Data,
            WatchKind::Exist,
            WatchKind::Child,
            WatchKind::Persistent,
            WatchKind::PersistentRecursive,
        ];
        for kind in kinds {
            for wtype in [Children, Data, Any, Persistent, PersistentRecursive] {
                let mut m = WatchManager::new();
                m.add(1, "/a", kind);
                let covered = m.has_watch(1, "/a", wtype);
                assert!(!m.remove(2, "/a", wtype), "other watcher");
                assert!(!m.remove(1, "/b", wtype), "other path");
                assert_eq!(m.remove(1, "/a", wtype), covered, "{kind:?} {wtype:?}");
                assert_eq!(m.is_empty(), covered);
                assert!(!m.remove(1, "/a", wtype));
                check_invariants(&m);
            }
        }
    }

    #[test]
    fn remove_one_kind_keeps_the_others() {
        // ZOOKEEPER-4472 (3.9): persistent watches are removed individually.
        let mut m = WatchManager::new();
        for kind in [
            WatchKind::Data,
            WatchKind::Child,
            WatchKind::Persistent,
            WatchKind::PersistentRecursive,
        ] {
            m.add(1, "/a", kind);
        }
        assert!(m.remove(1, "/a", WatcherType::Data));
        assert!(!m.has_watch(1, "/a", WatcherType::Data));
        assert!(m.has_watch(1, "/a", WatcherType::Children));
        assert!(m.remove(1, "/a", WatcherType::Persistent));
        assert!(m.has_watch(1, "/a", WatcherType::PersistentRecursive));
        // Only the recursive watch is left: child events no longer reach it.
        assert!(ids(&mut m, &children("/a")).contains(&1)); // the one-shot child watch
        assert!(ids(&mut m, &children("/a")).is_empty());
        assert!(m.remove(1, "/a", WatcherType::Any));
        assert!(m.is_empty());
        assert!(!m.remove(1, "/a", WatcherType::Any));
        check_invariants(&m);
    }

    #[test]
    fn removing_last_recursive_watch_stops_the_ancestor_walk() {
        let mut m = WatchManager::new();
        m.add(1, "/a", WatchKind::PersistentRecursive);
        m.add(2, "/a/b", WatchKind::PersistentRecursive);
        assert_eq!(m.recursive, 2);
        assert!(m.remove(1, "/a", WatcherType::PersistentRecursive));
        assert_eq!(m.recursive, 1);
        assert_eq!(ids(&mut m, &changed("/a/b/c")), vec![2]);
        m.remove_watcher(2);
        assert_eq!(m.recursive, 0);
        assert!(ids(&mut m, &changed("/a/b/c")).is_empty());
    }

    #[test]
    fn remove_watcher_drops_only_that_connection() {
        let mut m = WatchManager::new();
        for id in 1..=3 {
            m.add(id, "/a", WatchKind::Data);
            m.add(id, "/a", WatchKind::Child);
            m.add(id, "/b", WatchKind::PersistentRecursive);
            m.add(id, &format!("/only{id}"), WatchKind::Persistent);
        }
        m.remove_watcher(2);
        m.remove_watcher(2); // idempotent
        m.remove_watcher(42); // unknown
        check_invariants(&m);
        assert_eq!(m.watcher_len(2), 0);
        assert_eq!(m.watcher_len(1), 3);
        assert!(!m.by_path().contains_key("/only2"));
        assert_eq!(ids(&mut m, &changed("/a")), vec![1, 3]);
        assert_eq!(ids(&mut m, &created("/b/c")), vec![1, 3]);
        m.remove_watcher(1);
        m.remove_watcher(3);
        assert!(m.is_empty());
        assert_eq!(m.watch_count(), 0);
        assert_eq!(m.recursive, 0);
    }

    #[test]
    fn reports_list_data_side_watches_like_zookeeper() {
        // DataTree.getWatches/getWatchesByPath/getWatchesSummary read dataWatches only.
        let mut m = WatchManager::new();
        m.add(1, "/a", WatchKind::Data);
        m.add(1, "/b", WatchKind::Child);
        m.add(2, "/a", WatchKind::Exist);
        m.add(2, "/p", WatchKind::Persistent);
        m.add(3, "/c", WatchKind::Child); // child-only connection: not reported
        m.add(4, "/r", WatchKind::PersistentRecursive);
        assert_eq!(
            m.summary(),
            WatchSummary {
                connections: 3,
                paths: 3,
                total_watches: 4
            }
        );
        assert_eq!(
            m.summary().to_string(),
            "3 connections watching 3 paths\nTotal watches:4"
        );
        let by_watcher = m.by_watcher();
        assert_eq!(by_watcher.len(), 3);
        assert_eq!(by_watcher[&1], vec!["/a"]);
        assert_eq!(by_watcher[&2], vec!["/a", "/p"]);
        assert_eq!(by_watcher[&4], vec!["/r"]);
        let by_path = m.by_path();
        assert_eq!(by_path.keys().collect::<Vec<_>>(), ["/a", "/p", "/r"]);
        assert_eq!(by_path["/a"], vec![1, 2]);
        // zk_watch_count: dataWatches.size() + childWatches.size(); persistent counts twice.
        assert_eq!(m.watch_count(), 4 + 3);
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn ancestors_of_paths() {
        let all = |p| ancestors(p).collect::<Vec<_>>();
        assert_eq!(all("/a/b/c"), ["/a/b", "/a", "/"]);
        assert_eq!(all("/a"), ["/"]);
        assert!(all("/").is_empty());
        assert!(all("").is_empty());
    }

    // ---- Model check against a literal port of ZooKeeper 3.9's two WatchManagers. ----

    /// WatcherMode ordinals as WatchStats flags.
    const STANDARD_F: u8 = 1;
    const PERSISTENT_F: u8 = 2;
    const RECURSIVE_F: u8 = 4;

    /// One ZooKeeper WatchManager: path → watcher → WatchStats flags.
    #[derive(Default, Clone)]
    struct ZkManager {
        table: BTreeMap<String, BTreeMap<WatcherId, u8>>,
    }

    impl ZkManager {
        fn add(&mut self, path: &str, w: WatcherId, flag: u8) {
            *self
                .table
                .entry(path.to_owned())
                .or_default()
                .entry(w)
                .or_default() |= flag;
        }
        fn recursive_qty(&self) -> usize {
            self.table
                .values()
                .flat_map(|m| m.values())
                .filter(|f| **f & RECURSIVE_F != 0)
                .count()
        }
        fn trigger(&mut self, path: &str, suppress: &[WatcherId]) -> Vec<WatcherId> {
            let mut out = Vec::new();
            let mut local = vec![path.to_owned()];
            if self.recursive_qty() > 0 {
                local.extend(ancestors(path).map(str::to_owned));
            }
            for (level, lp) in local.iter().enumerate() {
                let Some(ws) = self.table.get_mut(lp) else {
                    continue;
                };
                ws.retain(|w, f| {
                    if level == 0 {
                        out.push(*w);
                        *f &= !STANDARD_F;
                        *f != 0
                    } else {
                        if *f & RECURSIVE_F != 0 {
                            out.push(*w);
                        }
                        true
                    }
                });
                if ws.is_empty() {
                    self.table.remove(lp);
                }
            }
            out.sort_unstable();
            out.dedup();
            out.retain(|w| !suppress.contains(w));
            out
        }
        fn contains(&self, path: &str, w: WatcherId, flag: Option<u8>) -> bool {
            self.table
                .get(path)
                .and_then(|m| m.get(&w))
                .is_some_and(|f| flag.is_none_or(|flag| f & flag != 0))
        }
        fn remove(&mut self, path: &str, w: WatcherId, flag: Option<u8>) -> bool {
            let Some(ws) = self.table.get_mut(path) else {
                return false;
            };
            let Some(f) = ws.get_mut(&w) else {
                return false;
            };
            let old = *f;
            let new = old & !flag.unwrap_or(0xff);
            *f = new;
            if new == 0 {
                ws.remove(&w);
                if ws.is_empty() {
                    self.table.remove(path);
                }
            }
            old != new
        }
        fn remove_watcher(&mut self, w: WatcherId) {
            self.table.retain(|_, ws| {
                ws.remove(&w);
                !ws.is_empty()
            });
        }
    }

    /// DataTree's use of `dataWatches` and `childWatches`.
    #[derive(Default, Clone)]
    struct ZkModel {
        data: ZkManager,
        child: ZkManager,
    }

    impl ZkModel {
        fn add(&mut self, w: WatcherId, path: &str, kind: WatchKind) {
            match kind {
                WatchKind::Data | WatchKind::Exist => self.data.add(path, w, STANDARD_F),
                WatchKind::Child => self.child.add(path, w, STANDARD_F),
                WatchKind::Persistent => {
                    self.data.add(path, w, PERSISTENT_F);
                    self.child.add(path, w, PERSISTENT_F);
                }
                WatchKind::PersistentRecursive => self.data.add(path, w, RECURSIVE_F),
            }
        }
        fn trigger(&mut self, t: &WatchTrigger) -> Vec<WatcherId> {
            match t {
                WatchTrigger::Created(p) | WatchTrigger::DataChanged(p) => {
                    self.data.trigger(p, &[])
                }
                WatchTrigger::ChildrenChanged(p) => self.child.trigger(p, &[]),
                WatchTrigger::Deleted(p) => {
                    let mut out = self.data.trigger(p, &[]);
                    let more = self.child.trigger(p, &out);
                    out.extend(more);
                    out.sort_unstable();
                    out
                }
            }
        }
        fn contains(&self, w: WatcherId, path: &str, t: WatcherType) -> bool {
            match t {
                WatcherType::Children => self.child.contains(path, w, Some(STANDARD_F)),
                WatcherType::Data => self.data.contains(path, w, Some(STANDARD_F)),
                WatcherType::Persistent => self.data.contains(path, w, Some(PERSISTENT_F)),
                WatcherType::PersistentRecursive => self.data.contains(path, w, Some(RECURSIVE_F)),
                WatcherType::Any => {
                    self.child.contains(path, w, None) || self.data.contains(path, w, None)
                }
            }
        }
        fn remove(&mut self, w: WatcherId, path: &str, t: WatcherType) -> bool {
            match t {
                WatcherType::Children => self.child.remove(path, w, Some(STANDARD_F)),
                WatcherType::Data => self.data.remove(path, w, Some(STANDARD_F)),
                WatcherType::Persistent => {
                    let a = self.child.remove(path, w, Some(PERSISTENT_F));
                    let b = self.data.remove(path, w, Some(PERSISTENT_F));
                    a || b
                }
                WatcherType::PersistentRecursive => self.data.remove(path, w, Some(RECURSIVE_F)),
                WatcherType::Any => {
                    let a = self.child.remove(path, w, None);
                    let b = self.data.remove(path, w, None);
                    a || b
                }
            }
        }
        fn by_path(&self) -> BTreeMap<String, Vec<WatcherId>> {
            self.data
                .table
                .iter()
                .map(|(p, ws)| (p.clone(), ws.keys().copied().collect()))
                .collect()
        }
        fn watch_count(&self) -> usize {
            let size = |m: &ZkManager| m.table.values().map(BTreeMap::len).sum::<usize>();
            size(&self.data) + size(&self.child)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(WatcherId, String, WatchKind),
        Trigger(WatchTrigger),
        Check(WatcherId, String, WatcherType),
        Remove(WatcherId, String, WatcherType),
        RemoveWatcher(WatcherId),
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["/", "/a", "/a/b", "/a/b/c", "/a/c", "/b", "/ab"])
            .prop_map(str::to_owned)
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let id = 0u64..4;
        let kind = prop::sample::select(vec![
            WatchKind::Data,
            WatchKind::Exist,
            WatchKind::Child,
            WatchKind::Persistent,
            WatchKind::PersistentRecursive,
        ]);
        let wtype = prop::sample::select(WatcherType::ALL.to_vec());
        let trigger = (0..4, path_strategy()).prop_map(|(k, p)| match k {
            0 => WatchTrigger::Created(p),
            1 => WatchTrigger::Deleted(p),
            2 => WatchTrigger::DataChanged(p),
            _ => WatchTrigger::ChildrenChanged(p),
        });
        prop_oneof![
            4 => (id.clone(), path_strategy(), kind).prop_map(|(w, p, k)| Op::Add(w, p, k)),
            4 => trigger.prop_map(Op::Trigger),
            1 => (id.clone(), path_strategy(), wtype.clone()).prop_map(|(w, p, t)| Op::Check(w, p, t)),
            1 => (id.clone(), path_strategy(), wtype).prop_map(|(w, p, t)| Op::Remove(w, p, t)),
            1 => id.prop_map(Op::RemoveWatcher),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_zookeepers_two_watch_managers(ops in prop::collection::vec(op_strategy(), 1..80)) {
            let mut m = WatchManager::new();
            let mut zk = ZkModel::default();
            for op in ops {
                match op {
                    Op::Add(w, p, k) => {
                        m.add(w, &p, k);
                        zk.add(w, &p, k);
                    }
                    Op::Trigger(t) => {
                        let got: Vec<_> = m.trigger(&t).into_iter().map(|(w, _)| w).collect();
                        prop_assert_eq!(got, zk.trigger(&t), "{:?}", t);
                    }
                    Op::Check(w, p, t) => {
                        prop_assert_eq!(m.has_watch(w, &p, t), zk.contains(w, &p, t));
                    }
                    Op::Remove(w, p, t) => {
                        prop_assert_eq!(m.remove(w, &p, t), zk.remove(w, &p, t));
                    }
                    Op::RemoveWatcher(w) => {
                        m.remove_watcher(w);
                        zk.data.remove_watcher(w);
                        zk.child.remove_watcher(w);
                    }
                }
                check_invariants(&m);
                prop_assert_eq!(m.by_path(), zk.by_path());
                prop_assert_eq!(m.watch_count(), zk.watch_count());
                prop_assert_eq!(m.recursive, zk.data.recursive_qty());
            }
        }
    }
}
