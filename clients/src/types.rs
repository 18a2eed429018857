//! Values of the public API: session states, watch events, create options, ACLs and the
//! operations of a multi.

use std::time::Duration;

use rookery_protocol::{perms, Acl, CreateMode, EventType, Id, KeeperState, Stat};

use crate::error::{Error, Result};

/// The state of a client's session, as reported on the state channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Not connected yet, or between two connections.
    Disconnected,
    /// Connected to a server that serves reads and writes.
    Connected,
    /// Connected to a read-only server (one that lost its quorum).
    ConnectedReadOnly,
    /// The server refused our credentials; the client is dead.
    AuthFailed,
    /// The session expired; the client is dead.
    Expired,
    /// The client was closed by its owner.
    Closed,
}

impl SessionState {
    /// True for the states in which requests are answered.
    pub fn is_connected(self) -> bool {
        matches!(
            self,
            SessionState::Connected | SessionState::ConnectedReadOnly
        )
    }

    /// True for the states a client never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SessionState::AuthFailed | SessionState::Expired | SessionState::Closed
        )
    }

    /// The KeeperState a Java client would report.
    pub fn keeper_state(self) -> KeeperState {
        match self {
            SessionState::Disconnected => KeeperState::Disconnected,
            SessionState::Connected => KeeperState::SyncConnected,
            SessionState::ConnectedReadOnly => KeeperState::ConnectedReadOnly,
            SessionState::AuthFailed => KeeperState::AuthFailed,
            SessionState::Expired => KeeperState::Expired,
            SessionState::Closed => KeeperState::Closed,
        }
    }
}

/// A watch notification, with the path relative to the client's chroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedEvent {
    /// What happened; [`EventType::None`] when the event reports the end of the session.
    pub event_type: EventType,
    /// The session's state when the event was produced.
    pub state: KeeperState,
    /// The znode the event is about (chroot stripped).
    pub path: String,
}

impl WatchedEvent {
    /// The event delivered to outstanding watchers when the session ends.
    pub(crate) fn session_end(state: SessionState, path: &str) -> Self {
        WatchedEvent {
            event_type: EventType::None,
            state: state.keeper_state(),
            path: path.to_string(),
        }
    }
}

/// ACL lists used often.
pub mod acls {
    use super::*;

    /// `world:anyone:cdrwa`: anyone may do anything.
    pub fn open_unsafe() -> Vec<Acl> {
        vec![Acl {
            perms: perms::ALL,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }]
    }

    /// `world:anyone:r`: anyone may read.
    pub fn read_unsafe() -> Vec<Acl> {
        vec![Acl {
            perms: perms::READ,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }]
    }

    /// `auth::cdrwa`: every identity the session authenticated with gets all permissions.
    pub fn creator_all() -> Vec<Acl> {
        vec![Acl {
            perms: perms::ALL,
            id: Id {
                scheme: "auth".into(),
                id: String::new(),
            },
        }]
    }

    /// The id of the `digest` scheme for `user:password`: `user:base64(sha1(user:password))`.
    pub fn digest_id(user: &str, password: &str) -> String {
        use base64::Engine;
        use sha1::Digest;
        let hash = sha1::Sha1::digest(format!("{user}:{password}").as_bytes());
        format!(
            "{user}:{}",
            base64::engine::general_purpose::STANDARD.encode(hash)
        )
    }

    /// Permission bits as zkCli prints them (`cdrwa` order).
    pub fn perms_to_string(bits: i32) -> String {
        let mut s = String::new();
        for (bit, c) in [
            (perms::CREATE, 'c'),
            (perms::DELETE, 'd'),
            (perms::READ, 'r'),
            (perms::WRITE, 'w'),
            (perms::ADMIN, 'a'),
        ] {
            if bits & bit != 0 {
                s.push(c);
            }
        }
        s
    }

    /// Parses `cdrwa`-style permissions.
    pub fn parse_perms(s: &str) -> Result<i32> {
        let mut bits = 0;
        for c in s.chars() {
            bits |= match c.to_ascii_lowercase() {
                'c' => perms::CREATE,
                'd' => perms::DELETE,
                'r' => perms::READ,
                'w' => perms::WRITE,
                'a' => perms::ADMIN,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown permission '{c}' in '{s}'"
                    )))
                }
            };
        }
        Ok(bits)
    }

    /// Parses zkCli's ACL syntax: `scheme:id:perms[,scheme:id:perms...]`, where the id may
    /// itself contain colons (`digest:user:hash:r`).
    pub fn parse_acl_list(s: &str) -> Result<Vec<Acl>> {
        let mut out = Vec::new();
        for entry in s.split(',').filter(|e| !e.is_empty()) {
            let first = entry.find(':');
            let last = entry.rfind(':');
            let (Some(first), Some(last)) = (first, last) else {
                return Err(Error::InvalidArgument(format!(
                    "ACL entry '{entry}' is not scheme:id:perm"
                )));
            };
            if first == last {
                return Err(Error::InvalidArgument(format!(
                    "ACL entry '{entry}' is not scheme:id:perm"
                )));
            }
            out.push(Acl {
                perms: parse_perms(&entry[last + 1..])?,
                id: Id {
                    scheme: entry[..first].to_string(),
                    id: entry[first + 1..last].to_string(),
                },
            });
        }
        if out.is_empty() {
            return Err(Error::InvalidArgument("empty ACL".into()));
        }
        Ok(out)
    }
}

/// How to create a znode: mode, ACL and, for TTL modes, the TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    /// Persistent, ephemeral, sequential, container or TTL.
    pub mode: CreateMode,
    /// Who may do what with the new node; must not be empty.
    pub acl: Vec<Acl>,
    /// Time to live of a TTL node (only with the `*WithTtl` modes).
    pub ttl: Option<Duration>,
}

impl CreateOptions {
    /// A node of the given mode, open to everyone.
    pub fn new(mode: CreateMode) -> Self {
        CreateOptions {
            mode,
            acl: acls::open_unsafe(),
            ttl: None,
        }
    }

    /// A persistent node with an open ACL.
    pub fn persistent() -> Self {
        Self::new(CreateMode::Persistent)
    }

    /// An ephemeral node: deleted when the creating session ends.
    pub fn ephemeral() -> Self {
        Self::new(CreateMode::Ephemeral)
    }

    /// A persistent node whose name gets the parent's next 10-digit sequence number.
    pub fn persistent_sequential() -> Self {
        Self::new(CreateMode::PersistentSequential)
    }

    /// An ephemeral node with a sequence suffix (locks, elections, queues).
    pub fn ephemeral_sequential() -> Self {
        Self::new(CreateMode::EphemeralSequential)
    }

    /// A container node: the server deletes it once its last child is gone.
    pub fn container() -> Self {
        Self::new(CreateMode::Container)
    }

    /// A persistent node deleted by the server once it has had no children for `ttl`
    /// and was not modified for `ttl` (needs `extendedTypesEnabled` on the server).
    pub fn ttl(ttl: Duration, sequential: bool) -> Self {
        let mode = if sequential {
            CreateMode::PersistentSequentialWithTtl
        } else {
            CreateMode::PersistentWithTtl
        };
        CreateOptions {
            mode,
            acl: acls::open_unsafe(),
            ttl: Some(ttl),
        }
    }

    /// Replaces the ACL.
    pub fn with_acl(mut self, acl: Vec<Acl>) -> Self {
        self.acl = acl;
        self
    }

    /// Checks that mode and TTL agree, as the Java client does before sending.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.acl.is_empty() {
            return Err(Error::InvalidAcl);
        }
        match (self.mode.is_ttl(), self.ttl) {
            (true, None) => Err(Error::InvalidArgument("TTL mode needs a ttl".into())),
            (true, Some(ttl)) if ttl.is_zero() || ttl.as_millis() > 0xFF_FFFF_FFFF => {
                Err(Error::InvalidArgument(format!("ttl {ttl:?} out of range")))
            }
            (false, Some(_)) => Err(Error::InvalidArgument(
                "ttl given for a mode without TTL".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// One write of a [`crate::Client::multi`] transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a node.
    Create {
        /// Where (chroot-relative).
        path: String,
        /// Its initial data.
        data: Vec<u8>,
        /// Mode, ACL and TTL.
        options: CreateOptions,
    },
    /// Delete a node.
    Delete {
        /// Which node.
        path: String,
        /// -1 matches any version.
        version: i32,
    },
    /// Replace a node's data.
    SetData {
        /// Which node.
        path: String,
        /// The new data.
        data: Vec<u8>,
        /// -1 matches any version.
        version: i32,
    },
    /// Fail the whole multi unless the node has this version.
    Check {
        /// Which node.
        path: String,
        /// -1 matches any version.
        version: i32,
    },
}

impl Op {
    /// [`Op::Create`] from anything path- and data-like.
    pub fn create(path: impl Into<String>, data: impl Into<Vec<u8>>, options: CreateOptions) -> Op {
        Op::Create {
            path: path.into(),
            data: data.into(),
            options,
        }
    }

    /// [`Op::Delete`]; `None` matches any version.
    pub fn delete(path: impl Into<String>, version: Option<i32>) -> Op {
        Op::Delete {
            path: path.into(),
            version: version.unwrap_or(-1),
        }
    }

    /// [`Op::SetData`]; `None` matches any version.
    pub fn set_data(path: impl Into<String>, data: impl Into<Vec<u8>>, version: Option<i32>) -> Op {
        Op::SetData {
            path: path.into(),
            data: data.into(),
            version: version.unwrap_or(-1),
        }
    }

    /// [`Op::Check`] against an exact version.
    pub fn check(path: impl Into<String>, version: i32) -> Op {
        Op::Check {
            path: path.into(),
            version,
        }
    }
}

/// The result of one operation of a successful multi, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The created path (chroot stripped) and the new node's Stat.
    Create {
        /// The path as created (with any sequence suffix).
        path: String,
        /// The new node's Stat.
        stat: Stat,
    },
    /// The node was deleted.
    Delete,
    /// The data was set.
    SetData {
        /// The node's Stat after the change.
        stat: Stat,
    },
    /// The version matched.
    Check,
}

/// One read of a [`crate::Client::multi_read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOp {
    /// getData of this path.
    GetData(String),
    /// getChildren of this path.
    GetChildren(String),
}

/// The result of one read of a multi_read; each read succeeds or fails on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    /// A node's data and Stat.
    Data {
        /// The data.
        data: Vec<u8>,
        /// The node's Stat.
        stat: Stat,
    },
    /// A node's child names.
    Children(Vec<String>),
}

/// Validates a client path as ZooKeeper's PathUtils does (sequential names may end in '/').
pub fn validate_path(path: &str, sequential: bool) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "invalid path '{path}': {why}"
        )))
    };
    if path.is_empty() {
        return bad("empty");
    }
    if !path.starts_with('/') {
        return bad("must start with /");
    }
    if path.len() == 1 {
        return Ok(());
    }
    if path.ends_with('/') && !sequential {
        return bad("must not end with /");
    }
    for (i, segment) in path[1..].split('/').enumerate() {
        let last = i == path[1..].split('/').count() - 1;
        if segment.is_empty() && !(last && sequential) {
            return bad("empty node name");
        }
        if segment == "." || segment == ".." {
            return bad("relative paths not allowed");
        }
    }
    if path.chars().any(|c| {
        c == '\0'
            || ('\u{1}'..='\u{1f}').contains(&c)
            || ('\u{7f}'..='\u{9f}').contains(&c)
            || ('\u{e000}'..='\u{f8ff}').contains(&c)
            || ('\u{fff0}'..='\u{ffff}').contains(&c)
    }) {
        return bad("invalid character");
    }
    Ok(())
}

/// The parent of a path ("/" for top-level nodes and for "/").
pub fn parent_path(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Joins a parent and a child name.
pub fn join_path(parent: &str, child: &str) -> String {
    if parent.ends_with('/') {
        format!("{parent}{child}")
    } else {
        format!("{parent}/{child}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(validate_path("/", false).is_ok());
        assert!(validate_path("/a/b", false).is_ok());
        assert!(validate_path("a", false).is_err());
        assert!(validate_path("/a/", false).is_err());
        assert!(validate_path("/a/", true).is_ok());
        assert!(validate_path("/a//b", false).is_err());
        assert!(validate_path("/a/./b", false).is_err());
        assert_eq!(parent_path("/a/b"), "/a");
        assert_eq!(parent_path("/a"), "/");
        assert_eq!(join_path("/", "a"), "/a");
        assert_eq!(join_path("/a", "b"), "/a/b");
    }

    #[test]
    fn acl_syntax() {
        let acl = acls::parse_acl_list("world:anyone:cdrwa,digest:u:abc=:r").unwrap();
        assert_eq!(acl.len(), 2);
        assert_eq!(acl[0].perms, perms::ALL);
        assert_eq!(acl[1].id.id, "u:abc=");
        assert_eq!(acl[1].perms, perms::READ);
        assert_eq!(acls::perms_to_string(perms::ALL), "cdrwa");
        assert!(acls::parse_acl_list("world:anyone").is_err());
        assert!(acls::parse_acl_list("world:anyone:x").is_err());
        // The digest of super:test as ZooKeeper's DigestAuthenticationProvider computes it.
        assert_eq!(
            acls::digest_id("super", "test"),
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
        );
    }
}
