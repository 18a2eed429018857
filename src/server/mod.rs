//! The network side: accept connections, run one task per connection, answer four-letter words,
//! and the leader's housekeeping (session expiry, container and TTL reaping).

pub mod admin;
pub mod connection;
pub mod listener;
pub mod registry;
pub mod request;
pub mod sasl;
pub mod tls;
