//! Connection loss: the session resumes (same id, ephemerals kept) and watches are re-armed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::time::Duration;

use common::{bounded, Proxy, TestServer};
use rookery_client::{AddWatchMode, Client, CreateOptions, EventType, SessionState};

#[tokio::test]
async fn session_resumes_after_server_restart() {
    let mut server = TestServer::start();
    let c = bounded(
        "connect",
        30,
        Client::builder(server.connect_string())
            .session_timeout(Duration::from_secs(10))
            .request_timeout(Duration::from_secs(20))
            .connect(),
    )
    .await
    .unwrap();
    let session = c.session().session_id;
    c.create("/eph", b"", &CreateOptions::ephemeral())
        .await
        .unwrap();
    c.create("/data", b"0", &CreateOptions::persistent())
        .await
        .unwrap();
    let (_, _, data_watch) = c.get_data_w("/data").await.unwrap();
    let (missing, exist_watch) = c.exists_w("/later").await.unwrap();
    assert!(missing.is_none());
    let mut persistent = c
        .add_watch("/data", AddWatchMode::Persistent)
        .await
        .unwrap();
    let mut states = c.state_events();

    server.stop();
    assert_eq!(
        bounded("disconnected", 20, states.next()).await,
        Some(SessionState::Disconnected)
    );
    // A request made while disconnected waits for the reconnect.
    let c2 = c.clone();
    let queued = tokio::spawn(async move { c2.get_data("/data").await });
    server.spawn();
    assert_eq!(
        bounded("reconnected", 30, states.next()).await,
        Some(SessionState::Connected)
    );
    assert_eq!(c.session().session_id, session, "the same session resumed");
    assert_eq!(
        bounded("queued request", 30, queued)
            .await
            .unwrap()
            .unwrap()
            .0,
        b"0"
    );
    assert!(c.exists("/eph").await.unwrap().is_some(), "ephemeral kept");

    // Watches were re-armed on the new connection.
    let writer = bounded(
        "connect writer",
        30,
        Client::connect(&server.connect_string()),
    )
    .await
    .unwrap();
    writer.set_data("/data", b"1", None).await.unwrap();
    writer
        .create("/later", b"", &CreateOptions::persistent())
        .await
        .unwrap();
    let ev = bounded("data watch after restart", 10, data_watch.changed()).await;
    assert_eq!(ev.event_type, EventType::NodeDataChanged);
    let ev = bounded("exist watch after restart", 10, exist_watch.changed()).await;
    assert_eq!(ev.event_type, EventType::NodeCreated);
    let ev = bounded("persistent after restart", 10, persistent.next())
        .await
        .unwrap();
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeDataChanged, "/data")
    );
    c.close().await;
    writer.close().await;
}

#[tokio::test]
async fn watch_fires_for_change_missed_while_disconnected() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.port).await;
    let c = bounded(
        "connect",
        30,
        Client::builder(proxy.connect_string())
            .session_timeout(Duration::from_secs(10))
            .connect(),
    )
    .await
    .unwrap();
    let writer = bounded(
        "connect writer",
        30,
        Client::connect(&server.connect_string()),
    )
    .await
    .unwrap();
    writer
        .create("/n", b"0", &CreateOptions::persistent())
        .await
        .unwrap();
    writer
        .create("/p", b"", &CreateOptions::persistent())
        .await
        .unwrap();
    let (_, _, data_watch) = c.get_data_w("/n").await.unwrap();
    let (_, child_watch) = c.get_children_w("/p").await.unwrap();
    let (_, _, untouched) = c.get_data_w("/p").await.unwrap();
    let session = c.session().session_id;
    let mut states = c.state_events();

    proxy.block();
    assert_eq!(
        bounded("disconnected", 20, states.next()).await,
        Some(SessionState::Disconnected)
    );
    // Changes made while the client cannot hear about them.
    writer.set_data("/n", b"1", None).await.unwrap();
    writer
        .create("/p/c", b"", &CreateOptions::persistent())
        .await
        .unwrap();
    proxy.unblock();
    assert_eq!(
        bounded("reconnected", 30, states.next()).await,
        Some(SessionState::Connected)
    );
    assert_eq!(c.session().session_id, session);
    // SetWatches carried our last zxid, so the server fires what changed since.
    assert_eq!(
        bounded("missed data change", 10, data_watch.changed())
            .await
            .event_type,
        EventType::NodeDataChanged
    );
    assert_eq!(
        bounded("missed child change", 10, child_watch.changed())
            .await
            .event_type,
        EventType::NodeChildrenChanged
    );
    // A watch whose node did not change stays armed, and still works.
    writer.set_data("/p", b"x", None).await.unwrap();
    assert_eq!(
        bounded("untouched watch", 10, untouched.changed())
            .await
            .event_type,
        EventType::NodeDataChanged
    );
    c.close().await;
    writer.close().await;
}

#[tokio::test]
async fn session_expires_when_away_too_long() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.port).await;
    let c = bounded(
        "connect",
        30,
        Client::builder(proxy.connect_string())
            .session_timeout(Duration::from_secs(2))
            .connect(),
    )
    .await
    .unwrap();
    c.create("/eph", b"", &CreateOptions::ephemeral())
        .await
        .unwrap();
    let (_, watch) = c.exists_w("/eph").await.unwrap();
    let mut states = c.state_events();
    proxy.block();
    assert_eq!(
        bounded("disconnected", 20, states.next()).await,
        Some(SessionState::Disconnected)
    );
    let observer = bounded("observer", 30, Client::connect(&server.connect_string()))
        .await
        .unwrap();
    bounded("ephemeral gone", 30, async {
        while observer.exists("/eph").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    proxy.unblock();
    assert_eq!(
        bounded("expired", 30, states.next()).await,
        Some(SessionState::Expired)
    );
    assert_eq!(
        c.get_data("/").await,
        Err(rookery_client::Error::SessionExpired)
    );
    let ev = bounded("watch ends", 10, watch.changed()).await;
    assert_eq!(ev.event_type, EventType::None);
    assert_eq!(ev.state, rookery_client::KeeperState::Expired);
    observer.close().await;
}

#[tokio::test]
async fn session_moves_to_another_server_of_the_connect_string() {
    let server = TestServer::start();
    // Two "servers" (proxies to the same one) and a dead address in the connection string.
    let a = Proxy::start(server.port).await;
    let b = Proxy::start(server.port).await;
    let dead = common::free_port();
    let c = bounded(
        "connect",
        30,
        Client::builder(format!(
            "127.0.0.1:{dead},{},{}",
            a.connect_string(),
            b.connect_string()
        ))
        .session_timeout(Duration::from_secs(10))
        .connect(),
    )
    .await
    .unwrap();
    let session = c.session().session_id;
    let first = c.session().server.unwrap();
    let (blocked, other) = if first.ends_with(&a.port.to_string()) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    c.create("/e", b"", &CreateOptions::ephemeral())
        .await
        .unwrap();
    let (_, _, watch) = c.get_data_w("/e").await.unwrap();
    let mut states = c.state_events();
    blocked.block();
    assert_eq!(
        bounded("disconnected", 20, states.next()).await,
        Some(SessionState::Disconnected)
    );
    assert_eq!(
        bounded("reconnected", 30, states.next()).await,
        Some(SessionState::Connected)
    );
    let now = c.session();
    assert_eq!(now.session_id, session);
    assert_eq!(now.server.unwrap(), other.connect_string());
    c.set_data("/e", b"x", None).await.unwrap();
    assert_eq!(
        bounded("watch on the new server", 10, watch.changed())
            .await
            .event_type,
        EventType::NodeDataChanged
    );
    c.close().await;
}

#[tokio::test]
async fn unknown_auth_scheme_fails_the_session() {
    let server = TestServer::start();
    let c = bounded("connect", 30, Client::connect(&server.connect_string()))
        .await
        .unwrap();
    let mut states = c.state_events();
    assert_eq!(
        c.add_auth("no-such-scheme", "x").await,
        Err(rookery_client::Error::AuthFailed)
    );
    assert_eq!(
        bounded("auth failed state", 10, states.next()).await,
        Some(SessionState::AuthFailed)
    );
    assert_eq!(
        c.get_data("/").await,
        Err(rookery_client::Error::AuthFailed)
    );
}
