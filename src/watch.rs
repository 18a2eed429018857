//! Watch registry: which connections watch which paths, and who hears about a change.

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
