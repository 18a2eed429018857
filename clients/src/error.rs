//! The client's error type: one variant per ZooKeeper error code, plus the failures that only
//! a client can see (a lost connection, a timeout, a closed client).

use rookery_protocol::ErrorCode;

/// Result of a client operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an operation failed.
///
/// The first group mirrors `KeeperException.Code`; [`Error::code`] maps back to the wire value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// ZooKeeper's `SystemError`: system error.
    #[error("system error")]
    SystemError,
    /// ZooKeeper's `RuntimeInconsistency`: runtime inconsistency.
    #[error("runtime inconsistency")]
    RuntimeInconsistency,
    /// ZooKeeper's `DataInconsistency`: data inconsistency.
    #[error("data inconsistency")]
    DataInconsistency,
    /// The connection to the server broke while the request was in flight: it may or may not
    /// have been applied.
    #[error("connection loss")]
    ConnectionLoss,
    /// ZooKeeper's `MarshallingError`: marshalling error.
    #[error("marshalling error")]
    MarshallingError,
    /// ZooKeeper's `Unimplemented`: unimplemented.
    #[error("unimplemented")]
    Unimplemented,
    /// ZooKeeper's `OperationTimeout`: operation timeout.
    #[error("operation timeout")]
    OperationTimeout,
    /// ZooKeeper's `BadArguments`: bad arguments.
    #[error("bad arguments")]
    BadArguments,
    /// ZooKeeper's `UnknownSession`: unknown session.
    #[error("unknown session")]
    UnknownSession,
    /// ZooKeeper's `NewConfigNoQuorum`: new config has no quorum.
    #[error("new config has no quorum")]
    NewConfigNoQuorum,
    /// ZooKeeper's `ReconfigInProgress`: reconfig in progress.
    #[error("reconfig in progress")]
    ReconfigInProgress,
    /// ZooKeeper's `ApiError`: API error.
    #[error("API error")]
    ApiError,
    /// ZooKeeper's `NoNode`: node does not exist.
    #[error("node does not exist")]
    NoNode,
    /// ZooKeeper's `NoAuth`: not authorized.
    #[error("not authorized")]
    NoAuth,
    /// ZooKeeper's `BadVersion`: bad version.
    #[error("bad version")]
    BadVersion,
    /// ZooKeeper's `NoChildrenForEphemerals`: ephemeral nodes may not have children.
    #[error("ephemeral nodes may not have children")]
    NoChildrenForEphemerals,
    /// ZooKeeper's `NodeExists`: node already exists.
    #[error("node already exists")]
    NodeExists,
    /// ZooKeeper's `NotEmpty`: node has children.
    #[error("node has children")]
    NotEmpty,
    /// The session expired: its ephemeral nodes and watches are gone, and this client is dead.
    #[error("session expired")]
    SessionExpired,
    /// ZooKeeper's `InvalidCallback`: invalid callback.
    #[error("invalid callback")]
    InvalidCallback,
    /// ZooKeeper's `InvalidAcl`: invalid ACL.
    #[error("invalid ACL")]
    InvalidAcl,
    /// ZooKeeper's `AuthFailed`: authentication failed.
    #[error("authentication failed")]
    AuthFailed,
    /// ZooKeeper's `SessionMoved`: session moved.
    #[error("session moved")]
    SessionMoved,
    /// ZooKeeper's `NotReadOnly`: not a read-only call.
    #[error("not a read-only call")]
    NotReadOnly,
    /// ZooKeeper's `EphemeralOnLocalSession`: ephemeral on local session.
    #[error("ephemeral on local session")]
    EphemeralOnLocalSession,
    /// ZooKeeper's `NoWatcher`: no watcher.
    #[error("no watcher")]
    NoWatcher,
    /// ZooKeeper's `RequestTimeout`: request timeout.
    #[error("request timeout")]
    RequestTimeout,
    /// ZooKeeper's `ReconfigDisabled`: reconfig disabled.
    #[error("reconfig disabled")]
    ReconfigDisabled,
    /// ZooKeeper's `SessionClosedRequireSaslAuth`: session closed, SASL authentication required.
    #[error("session closed, SASL authentication required")]
    SessionClosedRequireSaslAuth,
    /// ZooKeeper's `QuotaExceeded`: quota exceeded.
    #[error("quota exceeded")]
    QuotaExceeded,
    /// ZooKeeper's `ThrottledOp`: throttled.
    #[error("throttled")]
    ThrottledOp,

    /// No reply within the client's request timeout. Like ConnectionLoss, the request may
    /// still be applied.
    #[error("request timed out")]
    Timeout,
    /// The client was closed (or its session task is gone).
    #[error("client closed")]
    Closed,
    /// An argument was rejected before anything was sent (for example a malformed path).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The server sent something this client cannot decode.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No server in the connection string could be reached or parsed.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// One operation of a multi failed; the transaction was not applied.
    #[error("multi operation {index} failed: {source}")]
    MultiFailed {
        /// Position of the failing operation in the request.
        index: usize,
        /// What went wrong with it.
        source: Box<Error>,
    },
}

impl Error {
    /// The error for a non-zero `err` of a reply.
    pub fn from_code(code: ErrorCode) -> Error {
        match code {
            ErrorCode::Ok => Error::Protocol("error code 0 treated as an error".into()),
            ErrorCode::SystemError => Error::SystemError,
            ErrorCode::RuntimeInconsistency => Error::RuntimeInconsistency,
            ErrorCode::DataInconsistency => Error::DataInconsistency,
            ErrorCode::ConnectionLoss => Error::ConnectionLoss,
            ErrorCode::MarshallingError => Error::MarshallingError,
            ErrorCode::Unimplemented => Error::Unimplemented,
            ErrorCode::OperationTimeout => Error::OperationTimeout,
            ErrorCode::BadArguments => Error::BadArguments,
            ErrorCode::UnknownSession => Error::UnknownSession,
            ErrorCode::NewConfigNoQuorum => Error::NewConfigNoQuorum,
            ErrorCode::ReconfigInProgress => Error::ReconfigInProgress,
            ErrorCode::ApiError => Error::ApiError,
            ErrorCode::NoNode => Error::NoNode,
            ErrorCode::NoAuth => Error::NoAuth,
            ErrorCode::BadVersion => Error::BadVersion,
            ErrorCode::NoChildrenForEphemerals => Error::NoChildrenForEphemerals,
            ErrorCode::NodeExists => Error::NodeExists,
            ErrorCode::NotEmpty => Error::NotEmpty,
            ErrorCode::SessionExpired => Error::SessionExpired,
            ErrorCode::InvalidCallback => Error::InvalidCallback,
            ErrorCode::InvalidAcl => Error::InvalidAcl,
            ErrorCode::AuthFailed => Error::AuthFailed,
            ErrorCode::SessionMoved => Error::SessionMoved,
            ErrorCode::NotReadOnly => Error::NotReadOnly,
            ErrorCode::EphemeralOnLocalSession => Error::EphemeralOnLocalSession,
            ErrorCode::NoWatcher => Error::NoWatcher,
            ErrorCode::RequestTimeout => Error::RequestTimeout,
            ErrorCode::ReconfigDisabled => Error::ReconfigDisabled,
            ErrorCode::SessionClosedRequireSaslAuth => Error::SessionClosedRequireSaslAuth,
            ErrorCode::QuotaExceeded => Error::QuotaExceeded,
            ErrorCode::ThrottledOp => Error::ThrottledOp,
        }
    }

    /// The error for a raw `err` value; unknown codes become [`Error::Protocol`].
    pub fn from_wire(code: i32) -> Error {
        match ErrorCode::from_wire(code) {
            Some(code) => Error::from_code(code),
            None => Error::Protocol(format!("unknown error code {code}")),
        }
    }

    /// The ZooKeeper error code this error stands for, if it has one.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            Error::SystemError => ErrorCode::SystemError,
            Error::RuntimeInconsistency => ErrorCode::RuntimeInconsistency,
            Error::DataInconsistency => ErrorCode::DataInconsistency,
            Error::ConnectionLoss => ErrorCode::ConnectionLoss,
            Error::MarshallingError => ErrorCode::MarshallingError,
            Error::Unimplemented => ErrorCode::Unimplemented,
            Error::OperationTimeout => ErrorCode::OperationTimeout,
            Error::BadArguments => ErrorCode::BadArguments,
            Error::UnknownSession => ErrorCode::UnknownSession,
            Error::NewConfigNoQuorum => ErrorCode::NewConfigNoQuorum,
            Error::ReconfigInProgress => ErrorCode::ReconfigInProgress,
            Error::ApiError => ErrorCode::ApiError,
            Error::NoNode => ErrorCode::NoNode,
            Error::NoAuth => ErrorCode::NoAuth,
            Error::BadVersion => ErrorCode::BadVersion,
            Error::NoChildrenForEphemerals => ErrorCode::NoChildrenForEphemerals,
            Error::NodeExists => ErrorCode::NodeExists,
            Error::NotEmpty => ErrorCode::NotEmpty,
            Error::SessionExpired => ErrorCode::SessionExpired,
            Error::InvalidCallback => ErrorCode::InvalidCallback,
            Error::InvalidAcl => ErrorCode::InvalidAcl,
            Error::AuthFailed => ErrorCode::AuthFailed,
            Error::SessionMoved => ErrorCode::SessionMoved,
            Error::NotReadOnly => ErrorCode::NotReadOnly,
            Error::EphemeralOnLocalSession => ErrorCode::EphemeralOnLocalSession,
            Error::NoWatcher => ErrorCode::NoWatcher,
            Error::RequestTimeout => ErrorCode::RequestTimeout,
            Error::ReconfigDisabled => ErrorCode::ReconfigDisabled,
            Error::SessionClosedRequireSaslAuth => ErrorCode::SessionClosedRequireSaslAuth,
            Error::QuotaExceeded => ErrorCode::QuotaExceeded,
            Error::ThrottledOp => ErrorCode::ThrottledOp,
            Error::MultiFailed { source, .. } => return source.code(),
            Error::Timeout
            | Error::Closed
            | Error::InvalidArgument(_)
            | Error::Protocol(_)
            | Error::Connect(_) => return None,
        })
    }

    /// True when the outcome of the request is unknown and a retry may be worth it
    /// (ConnectionLoss, Timeout): the session is still alive.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::ConnectionLoss | Error::Timeout)
    }

    /// True when the client can no longer be used (session expired, client closed, auth failed).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::SessionExpired | Error::Closed | Error::AuthFailed
        )
    }
}

impl From<rookery_protocol::DecodeError> for Error {
    fn from(err: rookery_protocol::DecodeError) -> Self {
        Error::Protocol(err.to_string())
    }
}
