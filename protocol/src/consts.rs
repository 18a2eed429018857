//! Numeric constants of the protocol: opcodes, error codes, event types, states, create modes,
//! permissions and reserved xids (ZooDefs.java, KeeperException.java, Watcher.java, CreateMode.java).

/// Declares a fieldless enum with explicit wire values and a checked conversion from the wire.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident : $repr:ty { $($(#[$vmeta:meta])* $variant:ident = $value:expr),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr($repr)]
        pub enum $name { $($(#[$vmeta])* #[doc = concat!("`", stringify!($variant), "`: ", stringify!($value), " on the wire, as in ZooKeeper.")] $variant = $value),* }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The value with this wire encoding; `None` for a value ZooKeeper does not define.
            pub fn from_wire(value: $repr) -> Option<Self> {
                match value {
                    $(v if v == $value => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// The wire encoding.
            pub fn wire(self) -> $repr {
                self as $repr
            }
        }
    };
}

wire_enum! {
    /// A request's type, carried in the RequestHeader.
    OpCode: i32 {
        Notification = 0,
        Create = 1,
        Delete = 2,
        Exists = 3,
        GetData = 4,
        SetData = 5,
        GetAcl = 6,
        SetAcl = 7,
        GetChildren = 8,
        Sync = 9,
        Ping = 11,
        GetChildren2 = 12,
        Check = 13,
        Multi = 14,
        Create2 = 15,
        Reconfig = 16,
        CheckWatches = 17,
        RemoveWatches = 18,
        CreateContainer = 19,
        DeleteContainer = 20,
        CreateTtl = 21,
        MultiRead = 22,
        Auth = 100,
        SetWatches = 101,
        Sasl = 102,
        GetEphemerals = 103,
        GetAllChildrenNumber = 104,
        SetWatches2 = 105,
        AddWatch = 106,
        WhoAmI = 107,
        CreateSession = -10,
        CloseSession = -11,
        Error = -1,
    }
}

wire_enum! {
    /// KeeperException.Code: the `err` of a ReplyHeader or a multi ErrorResult.
    ErrorCode: i32 {
        Ok = 0,
        SystemError = -1,
        RuntimeInconsistency = -2,
        DataInconsistency = -3,
        ConnectionLoss = -4,
        MarshallingError = -5,
        Unimplemented = -6,
        OperationTimeout = -7,
        BadArguments = -8,
        UnknownSession = -12,
        NewConfigNoQuorum = -13,
        ReconfigInProgress = -14,
        ApiError = -100,
        NoNode = -101,
        NoAuth = -102,
        BadVersion = -103,
        NoChildrenForEphemerals = -108,
        NodeExists = -110,
        NotEmpty = -111,
        SessionExpired = -112,
        InvalidCallback = -113,
        InvalidAcl = -114,
        AuthFailed = -115,
        SessionMoved = -118,
        NotReadOnly = -119,
        EphemeralOnLocalSession = -120,
        NoWatcher = -121,
        RequestTimeout = -122,
        ReconfigDisabled = -123,
        SessionClosedRequireSaslAuth = -124,
        QuotaExceeded = -125,
        ThrottledOp = -127,
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({})", self, self.wire())
    }
}

wire_enum! {
    /// Watcher.Event.EventType.
    EventType: i32 {
        None = -1,
        NodeCreated = 1,
        NodeDeleted = 2,
        NodeDataChanged = 3,
        NodeChildrenChanged = 4,
        DataWatchRemoved = 5,
        ChildWatchRemoved = 6,
        PersistentWatchRemoved = 7,
    }
}

wire_enum! {
    /// Watcher.Event.KeeperState.
    KeeperState: i32 {
        Unknown = -1,
        Disconnected = 0,
        NoSyncConnected = 1,
        SyncConnected = 3,
        AuthFailed = 4,
        ConnectedReadOnly = 5,
        SaslAuthenticated = 6,
        Closed = 7,
        Expired = -112,
    }
}

wire_enum! {
    /// CreateMode, the `flags` of a create request.
    CreateMode: i32 {
        Persistent = 0,
        Ephemeral = 1,
        PersistentSequential = 2,
        EphemeralSequential = 3,
        Container = 4,
        PersistentWithTtl = 5,
        PersistentSequentialWithTtl = 6,
    }
}

impl CreateMode {
    /// Deleted when its session ends.
    pub fn is_ephemeral(self) -> bool {
        matches!(
            self,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential
        )
    }

    /// The name gets the parent's sequence number appended.
    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::PersistentSequentialWithTtl
        )
    }

    /// Deleted by the server once its last child goes.
    pub fn is_container(self) -> bool {
        self == CreateMode::Container
    }

    /// Deleted by the server after its TTL without changes or children.
    pub fn is_ttl(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl
        )
    }
}

wire_enum! {
    /// Watcher.WatcherType, for checkWatches and removeWatches.
    WatcherType: i32 {
        Children = 1,
        Data = 2,
        Any = 3,
        Persistent = 4,
        PersistentRecursive = 5,
    }
}

wire_enum! {
    /// AddWatchMode, for addWatch.
    AddWatchMode: i32 {
        Persistent = 0,
        PersistentRecursive = 1,
    }
}

/// ZooDefs.Perms: the bits of an ACL entry.
pub mod perms {
    /// getData, getChildren (and exists from 3.8.4/3.9.2).
    pub const READ: i32 = 1;
    /// setData.
    pub const WRITE: i32 = 1 << 1;
    /// Create children.
    pub const CREATE: i32 = 1 << 2;
    /// Delete children.
    pub const DELETE: i32 = 1 << 3;
    /// setAcl.
    pub const ADMIN: i32 = 1 << 4;
    /// Every permission.
    pub const ALL: i32 = READ | WRITE | CREATE | DELETE | ADMIN;
}

/// Reserved xids (ClientCnxn.java).
pub mod xids {
    /// A watch notification pushed by the server.
    pub const NOTIFICATION: i32 = -1;
    /// A client's ping.
    pub const PING: i32 = -2;
    /// An addAuth packet.
    pub const AUTH: i32 = -4;
    /// setWatches after a reconnect.
    pub const SET_WATCHES: i32 = -8;
}

/// ephemeralOwner values that mark container and TTL nodes (EphemeralType.java).
pub mod ephemeral_owner {
    /// A container node's ephemeralOwner.
    pub const CONTAINER: i64 = i64::MIN;
    /// High byte 0xff marks an "extended" owner; the next 16 bits (0 for TTL) say which kind.
    const EXTENDED_KIND_MASK: i64 = 0xFFFF_FF00_0000_0000_u64 as i64;
    const EXTENDED_TTL: i64 = 0xFF00_0000_0000_0000_u64 as i64;
    /// The largest TTL in ms: the low 40 bits.
    pub const MAX_TTL: i64 = 0x0000_00FF_FFFF_FFFF;

    /// The ephemeralOwner of a TTL node with this TTL.
    pub fn ttl(ttl_ms: i64) -> i64 {
        EXTENDED_TTL | (ttl_ms & MAX_TTL)
    }

    /// Whether an ephemeralOwner marks a container node.
    pub fn is_container(owner: i64) -> bool {
        owner == CONTAINER
    }

    /// The TTL of a TTL node, or None for any other node.
    pub fn ttl_of(owner: i64) -> Option<i64> {
        if owner & EXTENDED_KIND_MASK == EXTENDED_TTL {
            Some(owner & MAX_TTL)
        } else {
            None
        }
    }

    /// A real session owns the node (neither container nor TTL nor persistent).
    pub fn is_session(owner: i64) -> bool {
        owner != 0 && !is_container(owner) && ttl_of(owner).is_none()
    }
}
