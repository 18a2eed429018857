//! The network side: accept connections, run one task per connection, answer four-letter words,
//! and the leader's housekeeping (session expiry, container and TTL reaping).

pub mod admin;
pub mod admin_http;
pub mod connection;
pub mod listener;
pub mod monitor;
pub mod prometheus;
pub mod registry;
pub mod request;
pub mod sasl;
pub mod tls;

/// Resolves once `shutdown` flips to true (or its sender is gone): the HTTP endpoints'
/// graceful-shutdown signal.
async fn shutdown_signal(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}
