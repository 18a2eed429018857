//! Coordination recipes built on the client.
