//! Peer transport tests: codec (unit + proptest), handshakes, queues and reconnects over real
//! loopback TCP, and a 3-node Raft group on it. Every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use proptest::prelude::*;
use raft::eraftpb::{Entry, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use super::frame::*;
use super::*;
use crate::config::Config;
use crate::raft::{Message, RaftHandle, RaftOptions, SnapshotStatus, StateMachine, Transport};

const CLUSTER: u64 = 0x00c0_ffee_0000_0001;

fn rt() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn caps() -> FrameCaps {
    FrameCaps {
        max_frame: 4096,
        max_snapshot_frame: 1 << 20,
    }
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn msg(kind: MessageType, from: u64, to: u64, data: &[u8]) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = to;
    m.term = 7;
    let e = Entry {
        data: data.to_vec().into(),
        index: 3,
        term: 7,
        ..Default::default()
    };
    m.set_entries(vec![e].into());
    m
}

fn propose(from: u64, to: u64, data: &str) -> Message {
    msg(MessageType::MsgPropose, from, to, data.as_bytes())
}

fn data_of(m: &Message) -> String {
    m.get_entries()
        .first()
        .map(|e| String::from_utf8_lossy(&e.data).into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- codec

#[test]
fn frames_of_every_kind_round_trip_even_byte_by_byte() {
    let hello = Hello {
        version: VERSION,
        cluster_id: CLUSTER,
        from: 1,
        to: 2,
    };
    let msgs = vec![
        propose(1, 2, "a"),
        msg(MessageType::MsgAppend, 1, 2, &[0u8; 300]),
        msg(MessageType::MsgHeartbeat, 1, 2, b""),
    ];
    let touches = vec![
        SessionTouch {
            session_id: -5,
            timeout_ms: 4000,
        },
        SessionTouch {
            session_id: i64::MAX,
            timeout_ms: u32::MAX,
        },
    ];
    let snap = msg(MessageType::MsgSnapshot, 1, 2, &[9u8; 2000]);
    let mut out = BytesMut::new();
    encode_frame(FrameKind::Hello, &hello.encode(), &mut out).unwrap();
    encode_frame(
        FrameKind::HelloReply,
        &HelloReply::Accepted.encode(),
        &mut out,
    )
    .unwrap();
    let refused = HelloReply::Refused("wrong cluster".into());
    encode_frame(FrameKind::HelloReply, &refused.encode(), &mut out).unwrap();
    encode_frame(
        FrameKind::RaftBatch,
        &encode_raft_batch(&msgs).unwrap(),
        &mut out,
    )
    .unwrap();
    encode_frame(FrameKind::Touch, &encode_touch(&touches), &mut out).unwrap();
    encode_frame(
        FrameKind::RaftSnapshot,
        &encode_raft_snapshot(&snap).unwrap(),
        &mut out,
    )
    .unwrap();
    encode_frame(FrameKind::AppRequest, b"reserved", &mut out).unwrap();

    // Feed one byte at a time: a frame is returned only once complete.
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for b in out.iter() {
        buf.extend_from_slice(&[*b]);
        while let Some(f) = decode_frame(&mut buf, caps()).unwrap() {
            frames.push(f);
        }
    }
    assert!(buf.is_empty());
    let kinds: Vec<_> = frames.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [
            FrameKind::Hello,
            FrameKind::HelloReply,
            FrameKind::HelloReply,
            FrameKind::RaftBatch,
            FrameKind::Touch,
            FrameKind::RaftSnapshot,
            FrameKind::AppRequest
        ]
    );
    assert_eq!(
        super::frame::Hello::decode(&frames[0].payload).unwrap(),
        hello
    );
    assert_eq!(
        super::frame::HelloReply::decode(&frames[1].payload).unwrap(),
        super::frame::HelloReply::Accepted
    );
    assert_eq!(
        super::frame::HelloReply::decode(&frames[2].payload).unwrap(),
        refused
    );
    assert_eq!(decode_raft_batch(&frames[3].payload).unwrap(), msgs);
    assert_eq!(decode_touch(&frames[4].payload).unwrap(), touches);
    assert_eq!(decode_raft_snapshot(&frames[5].payload).unwrap(), snap);
    assert_eq!(&frames[6].payload[..], b"reserved");
}

#[test]
fn any_corrupted_byte_is_detected() {
    let mut out = BytesMut::new();
    let payload = encode_raft_batch(&[propose(1, 2, "corrupt me")]).unwrap();
    encode_frame(FrameKind::RaftBatch, &payload, &mut out).unwrap();
    for i in 0..out.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = out.clone();
            bad[i] ^= flip;
            let r = decode_frame(&mut bad, caps());
            // Either an error, or (a length byte grew) still waiting for bytes: never a frame.
            assert!(
                !matches!(r, Ok(Some(_))),
                "byte {i} ^ {flip:#x} went unnoticed: {r:?}"
            );
        }
    }
    let mut bad = out.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        decode_frame(&mut bad, caps()),
        Err(FrameError::BadCrc { .. })
    ));
}

#[test]
fn oversized_frames_are_refused_from_the_header_alone() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&4097u32.to_be_bytes());
    buf.extend_from_slice(&[FrameKind::RaftBatch as u8]);
    assert_eq!(
        decode_frame(&mut buf, caps()),
        Err(FrameError::Oversized {
            len: 4097,
            max: 4096
        })
    );
    // Snapshots have their own, larger cap.
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&4097u32.to_be_bytes());
    buf.extend_from_slice(&[FrameKind::RaftSnapshot as u8]);
    assert_eq!(decode_frame(&mut buf, caps()), Ok(None));
    let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 3][..]);
    assert_eq!(decode_frame(&mut buf, caps()), Err(FrameError::Empty));
    let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 99][..]);
    assert_eq!(
        decode_frame(&mut buf, caps()),
        Err(FrameError::UnknownKind(99))
    );
    // Payload decoders refuse counts that cannot fit rather than allocating for them.
    let huge = u32::MAX.to_be_bytes();
    assert!(decode_touch(&huge).is_err());
    assert!(decode_raft_batch(&huge).is_err());
    let mut bad_magic = Hello {
        version: 1,
        cluster_id: 1,
        from: 1,
        to: 2,
    }
    .encode();
    bad_magic[0] = b'X';
    assert!(super::frame::Hello::decode(&bad_magic).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let mut buf = BytesMut::from(&bytes[..]);
        for _ in 0..64 {
            match decode_frame(&mut buf, caps()) {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
        let _ = super::frame::Hello::decode(&bytes);
        let _ = super::frame::HelloReply::decode(&bytes);
        let _ = decode_raft_batch(&bytes);
        let _ = decode_raft_snapshot(&bytes);
        let _ = decode_touch(&bytes);
    }

    #[test]
    fn framed_garbage_payloads_never_panic(
        kind in 1u8..=10,
        payload in proptest::collection::vec(any::<u8>(), 0..1500),
        split in 0usize..1600,
    ) {
        let kind = FrameKind::from_u8(kind).unwrap();
        let mut out = BytesMut::new();
        encode_frame(kind, &payload, &mut out).unwrap();
        let mut buf = BytesMut::from(&out[..split.min(out.len())]);
        let partial = decode_frame(&mut buf, caps());
        buf.extend_from_slice(&out[split.min(out.len())..]);
        let frame = match partial {
            Ok(Some(f)) => Ok(Some(f)),
            Ok(None) => decode_frame(&mut buf, caps()),
            Err(e) => Err(e),
        };
        if payload.len() < 4096 {
            let f = frame.unwrap().unwrap();
            prop_assert_eq!(f.kind, kind);
            prop_assert_eq!(&f.payload[..], &payload[..]);
            let _ = decode_raft_batch(&f.payload);
            let _ = decode_touch(&f.payload);
        }
    }
}

// ---------------------------------------------------------------- network helpers

/// Records inbound traffic and Raft feedback.
#[derive(Default)]
struct Recorder {
    /// Raft messages received, with the peer they came from.
    raft: Mutex<Vec<(u64, Message)>>,
    /// Touch batches received.
    touches: Mutex<Vec<(u64, Vec<SessionTouch>)>>,
    /// report_unreachable calls.
    unreachable: Mutex<Vec<u64>>,
    /// report_snapshot calls.
    snapshots: Mutex<Vec<(u64, SnapshotStatus)>>,
    /// Peers whose connection to us was closed by their side.
    closed: Mutex<Vec<u64>>,
}

impl Inbound for Recorder {
    fn raft(&self, from: u64, msgs: Vec<Message>) {
        self.raft
            .lock()
            .unwrap()
            .extend(msgs.into_iter().map(|m| (from, m)));
    }
    fn touch(&self, from: u64, touches: Vec<SessionTouch>) {
        self.touches.lock().unwrap().push((from, touches));
    }
    fn closed(&self, from: u64) {
        self.closed.lock().unwrap().push(from);
    }
}

impl Feedback for Recorder {
    fn unreachable(&self, peer: u64) {
        self.unreachable.lock().unwrap().push(peer);
    }
    fn snapshot(&self, peer: u64, status: SnapshotStatus) {
        self.snapshots.lock().unwrap().push((peer, status));
    }
}

impl Recorder {
    fn datas(&self) -> Vec<String> {
        self.raft
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| data_of(m))
            .collect()
    }
}

fn test_limits() -> PeerLimits {
    PeerLimits {
        max_frame: 256 * 1024,
        max_snapshot_frame: 4 << 20,
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        handshake_timeout: Duration::from_secs(2),
        ..PeerLimits::default()
    }
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Starts a network for `my_id` whose inbound and feedback both go to a new recorder.
fn start_net(
    my_id: u64,
    cluster_id: u64,
    peers: &[(u64, String)],
    listener: TcpListener,
    limits: PeerLimits,
) -> (PeerNetwork, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let cfg = PeerConfig {
        my_id,
        cluster_id,
        peers: peers.iter().cloned().collect::<BTreeMap<_, _>>(),
        limits,
        tls: None,
    };
    let net = PeerNetwork::start(cfg, listener, rec.clone()).unwrap();
    net.attach_feedback(rec.clone());
    (net, rec)
}

/// A loopback proxy that can drop every connection and refuse new ones (a network cut).
struct Proxy {
    /// Where peers dial.
    addr: SocketAddr,
    /// While set, new connections are closed at once.
    blocked: Arc<AtomicBool>,
    /// The proxied connections, aborted by `cut`.
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// The accept loop.
    acceptor: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = bind().await;
        let addr = listener.local_addr().unwrap();
        let blocked = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Default::default();
        let (b, c) = (blocked.clone(), conns.clone());
        let acceptor = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if b.load(Ordering::SeqCst) {
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                c.lock().unwrap().push(h);
            }
        });
        Proxy {
            addr,
            blocked,
            conns,
            acceptor,
        }
    }

    fn cut(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

/// Sends a raw handshake to `addr` and returns the reply (None if the connection just closed).
async fn raw_handshake(addr: SocketAddr, hello: &[u8]) -> Option<super::frame::HelloReply> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut out = BytesMut::new();
    encode_frame(FrameKind::Hello, hello, &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let read = async {
        loop {
            if let Some(f) = decode_frame(&mut buf, caps()).unwrap() {
                return Some(super::frame::HelloReply::decode(&f.payload).unwrap());
            }
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap()
}

// ---------------------------------------------------------------- handshake

#[test]
fn misconfigured_peers_are_refused_with_a_reason() {
    let rt = rt();
    let _g = rt.enter();
    let l2 = rt.block_on(bind());
    let addr2 = l2.local_addr().unwrap();
    let (n2, rec2) = start_net(
        2,
        CLUSTER,
        &[(1, "127.0.0.1:1".into()), (3, "127.0.0.1:1".into())],
        l2,
        test_limits(),
    );
    let hello = |version, cluster_id, from, to| {
        Hello {
            version,
            cluster_id,
            from,
            to,
        }
        .encode()
    };
    let refused = |reply: Option<super::frame::HelloReply>| match reply {
        Some(super::frame::HelloReply::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let r = refused(rt.block_on(raw_handshake(addr2, &hello(VERSION, CLUSTER + 1, 1, 2))));
    assert!(r.contains("cluster id"), "{r}");
    let r = refused(rt.block_on(raw_handshake(addr2, &hello(VERSION, CLUSTER, 1, 3))));
    assert!(r.contains("this is server 2, not server 3"), "{r}");
    let r = refused(rt.block_on(raw_handshake(addr2, &hello(VERSION, CLUSTER, 9, 2))));
    assert!(r.contains("server 9 is not a member"), "{r}");
    let r = refused(rt.block_on(raw_handshake(addr2, &hello(VERSION, CLUSTER, 2, 2))));
    assert!(r.contains("not a member"), "{r}");
    let r = refused(rt.block_on(raw_handshake(addr2, &hello(VERSION + 1, CLUSTER, 1, 2))));
    assert!(r.contains("version"), "{r}");
    // Not our protocol at all: closed without a reply.
    let mut garbage = hello(VERSION, CLUSTER, 1, 2);
    garbage[..8].copy_from_slice(b"GET / HT");
    assert_eq!(rt.block_on(raw_handshake(addr2, &garbage)), None);
    // The correct handshake is accepted.
    assert_eq!(
        rt.block_on(raw_handshake(addr2, &hello(VERSION, CLUSTER, 1, 2))),
        Some(super::frame::HelloReply::Accepted)
    );
    assert_eq!(n2.stats().refused, 6);

    // A real dialer from another cluster never gets connected, and nothing it sends arrives.
    let l1 = rt.block_on(bind());
    let (n1, rec1) = start_net(1, CLUSTER + 1, &[(2, addr2.to_string())], l1, test_limits());
    wait_until("refusals", Duration::from_secs(10), || {
        n2.stats().refused >= 8
    });
    assert!(!n1.is_connected(2));
    n1.transport().send(vec![propose(1, 2, "x")]);
    assert_eq!(rec1.unreachable.lock().unwrap().as_slice(), &[2]);
    std::thread::sleep(Duration::from_millis(50));
    assert!(rec2.raft.lock().unwrap().is_empty());
    rt.block_on(n1.shutdown());
    rt.block_on(n2.shutdown());
}

// ---------------------------------------------------------------- delivery and queues

#[test]
fn messages_and_touches_arrive_in_order_in_batched_writes() {
    let rt = rt();
    let _g = rt.enter();
    let (l1, l2) = rt.block_on(async { (bind().await, bind().await) });
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let (n1, _rec1) = start_net(1, CLUSTER, &[(2, a2.to_string())], l1, test_limits());
    let (n2, rec2) = start_net(2, CLUSTER, &[(1, a1.to_string())], l2, test_limits());
    wait_until("connected", Duration::from_secs(10), || {
        n1.is_connected(2) && n2.is_connected(1)
    });
    let t = n1.transport();
    // 2000 messages in 20 sends of 100: far fewer socket writes than messages.
    for round in 0..20 {
        let batch = (0..100)
            .map(|i| propose(1, 2, &format!("m{}", round * 100 + i)))
            .collect();
        t.send(batch);
    }
    n1.send_touch(
        2,
        vec![SessionTouch {
            session_id: 42,
            timeout_ms: 5000,
        }],
    )
    .unwrap();
    wait_until("delivery", Duration::from_secs(10), || {
        rec2.raft.lock().unwrap().len() == 2000 && !rec2.touches.lock().unwrap().is_empty()
    });
    let expect: Vec<String> = (0..2000).map(|i| format!("m{i}")).collect();
    assert_eq!(rec2.datas(), expect);
    assert!(rec2
        .raft
        .lock()
        .unwrap()
        .iter()
        .all(|(from, m)| *from == 1 && m.to == 2));
    assert_eq!(
        rec2.touches.lock().unwrap().as_slice(),
        &[(
            1,
            vec![SessionTouch {
                session_id: 42,
                timeout_ms: 5000
            }]
        )]
    );
    let s = n1.stats();
    assert_eq!(s.sent, 2001);
    assert!(s.writes < 200, "{s:?}: writes are not batched");
    // And the other direction works on its own connection.
    n2.transport().send(vec![propose(2, 1, "back")]);
    wait_until("reverse", Duration::from_secs(10), || {
        _rec1.raft.lock().unwrap().len() == 1
    });
    rt.block_on(n1.shutdown());
    rt.block_on(n2.shutdown());
}

#[test]
fn without_a_connection_messages_are_dropped_and_reported() {
    let rt = rt();
    let _g = rt.enter();
    // Nothing listens at peer 2's address.
    let dead = rt.block_on(bind());
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let (n1, rec1) = start_net(
        1,
        CLUSTER,
        &[(2, dead_addr.to_string())],
        rt.block_on(bind()),
        test_limits(),
    );
    let t = n1.transport();
    t.send(vec![
        propose(1, 2, "a"),
        propose(1, 2, "b"),
        msg(MessageType::MsgSnapshot, 1, 2, b"snap"),
        propose(1, 7, "to nobody"),
    ]);
    // One unreachable per peer per send, and the snapshot failed.
    assert_eq!(rec1.unreachable.lock().unwrap().as_slice(), &[2, 7]);
    assert_eq!(
        rec1.snapshots.lock().unwrap().as_slice(),
        &[(2, SnapshotStatus::Failure)]
    );
    assert_eq!(n1.stats().dropped_disconnected, 3);
    assert!(matches!(
        n1.send_touch(
            2,
            vec![SessionTouch {
                session_id: 1,
                timeout_ms: 1
            }]
        ),
        Err(PeerError::NotConnected(2))
    ));
    rt.block_on(n1.shutdown());
}

#[test]
fn a_stalled_peer_fills_the_bounded_queue_without_blocking_raft() {
    let rt = rt();
    let _g = rt.enter();
    // A fake peer 2: accepts the handshake, then never reads again.
    let fake = rt.block_on(bind());
    let fake_addr = fake.local_addr().unwrap();
    let held: Arc<Mutex<Vec<TcpStream>>> = Default::default();
    let h = held.clone();
    rt.spawn(async move {
        while let Ok((mut s, _)) = fake.accept().await {
            let mut buf = BytesMut::new();
            loop {
                if decode_frame(&mut buf, caps()).ok().flatten().is_some() {
                    break;
                }
                if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    break;
                }
            }
            let mut out = BytesMut::new();
            encode_frame(
                FrameKind::HelloReply,
                &super::frame::HelloReply::Accepted.encode(),
                &mut out,
            )
            .unwrap();
            let _ = s.write_all(&out).await;
            h.lock().unwrap().push(s);
        }
    });
    let limits = PeerLimits {
        queue_messages: 32,
        queue_bytes: 1 << 20,
        write_timeout: Duration::from_secs(30),
        ..test_limits()
    };
    let (n1, rec1) = start_net(
        1,
        CLUSTER,
        &[(2, fake_addr.to_string())],
        rt.block_on(bind()),
        limits,
    );
    wait_until("connected", Duration::from_secs(10), || n1.is_connected(2));
    let t = n1.transport();
    let big = vec![7u8; 64 * 1024];
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    // 64 MiB in total: far more than socket buffers plus the 1 MiB queue can take.
    for _ in 0..1024 {
        let s = Instant::now();
        t.send(vec![msg(MessageType::MsgAppend, 1, 2, &big)]);
        slowest = slowest.max(s.elapsed());
        if n1.stats().dropped_full > 0 && rec1.unreachable.lock().unwrap().contains(&2) {
            break;
        }
    }
    let s = n1.stats();
    assert!(s.dropped_full > 0, "{s:?}");
    assert!(rec1.unreachable.lock().unwrap().contains(&2));
    // A blocking send would wait for the stalled peer until write_timeout (30 s); the bound is
    // loose so a preempted thread on a busy 2-core machine does not count as blocking.
    assert!(
        slowest < Duration::from_secs(2),
        "send blocked for {slowest:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The count bound holds too: tiny messages stop at queue_messages (the writer is stuck).
    let before = n1.stats().dropped_full;
    for _ in 0..40 {
        t.send(vec![propose(1, 2, "tiny")]);
    }
    assert!(n1.stats().dropped_full > before, "{:?}", n1.stats());
    // A MsgSnapshot dropped on a full queue is reported as failed. The stuck writer can
    // still hand a little to the kernel now and then, so the queue may have room again by
    // the time the snapshot is sent; refill it (until a tiny message is dropped) and retry,
    // a bounded number of times.
    let mut reported = false;
    for _ in 0..50 {
        let before = n1.stats().dropped_full;
        for _ in 0..100 {
            t.send(vec![propose(1, 2, "tiny")]);
            if n1.stats().dropped_full > before {
                break;
            }
        }
        t.send(vec![msg(MessageType::MsgSnapshot, 1, 2, b"snap")]);
        if rec1
            .snapshots
            .lock()
            .unwrap()
            .contains(&(2, SnapshotStatus::Failure))
        {
            reported = true;
            break;
        }
    }
    assert!(
        reported,
        "a snapshot dropped on a full queue was never reported as failed"
    );
    rt.block_on(n1.shutdown());
}

#[test]
fn nothing_is_replayed_after_a_reconnect() {
    let rt = rt();
    let _g = rt.enter();
    let (l1, l2) = rt.block_on(async { (bind().await, bind().await) });
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let proxy = rt.block_on(Proxy::start(a2));
    let (n1, rec1) = start_net(
        1,
        CLUSTER,
        &[(2, proxy.addr.to_string())],
        l1,
        test_limits(),
    );
    let (n2, rec2) = start_net(2, CLUSTER, &[(1, a1.to_string())], l2, test_limits());
    wait_until("connected", Duration::from_secs(10), || n1.is_connected(2));
    let t = n1.transport();

    // A: delivered before the cut.
    for i in 0..200 {
        t.send(vec![propose(1, 2, &format!("a{i}"))]);
    }
    wait_until("A delivered", Duration::from_secs(10), || {
        rec2.raft.lock().unwrap().len() == 200
    });
    // B: sent while the connection is cut under it (some queued, some in flight).
    let sender = {
        let t = t.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                t.send(vec![propose(1, 2, &format!("b{i}"))]);
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    proxy.cut();
    sender.join().unwrap();
    wait_until("disconnect noticed", Duration::from_secs(10), || {
        !n1.is_connected(2)
    });

    // C: sent while disconnected: dropped at once, never delivered later.
    for i in 0..50 {
        t.send(vec![propose(1, 2, &format!("c{i}"))]);
    }
    proxy.restore();
    wait_until("reconnected", Duration::from_secs(10), || {
        n1.is_connected(2)
    });
    // D: after the reconnect.
    for i in 0..100 {
        t.send(vec![propose(1, 2, &format!("d{i}"))]);
    }
    wait_until("D delivered", Duration::from_secs(10), || {
        rec2.datas().iter().filter(|d| d.starts_with('d')).count() == 100
    });
    std::thread::sleep(Duration::from_millis(200));
    let got = rec2.datas();
    let mut seen = std::collections::HashSet::new();
    for d in &got {
        assert!(seen.insert(d.clone()), "{d} delivered twice");
    }
    assert!(
        !got.iter().any(|d| d.starts_with('c')),
        "a message sent while disconnected arrived"
    );
    let expect_a: Vec<String> = (0..200).map(|i| format!("a{i}")).collect();
    let expect_d: Vec<String> = (0..100).map(|i| format!("d{i}")).collect();
    assert_eq!(&got[..200], &expect_a[..]);
    assert_eq!(&got[got.len() - 100..], &expect_d[..]);
    // B arrives in order, possibly with gaps, and everything lost was counted as dropped.
    let b: Vec<usize> = got
        .iter()
        .filter_map(|d| d.strip_prefix('b').map(|n| n.parse().unwrap()))
        .collect();
    assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
    let s = n1.stats();
    assert!(s.connects >= 2, "{s:?}");
    assert!(s.dropped_disconnected >= 50, "{s:?}");
    // A connection dying while idle is reported to Raft by itself (nothing is being sent).
    rec1.unreachable.lock().unwrap().clear();
    proxy.cut();
    wait_until("idle death reported", Duration::from_secs(10), || {
        rec1.unreachable.lock().unwrap().contains(&2)
    });
    rt.block_on(n1.shutdown());
    rt.block_on(n2.shutdown());
}

// ---------------------------------------------------------------- a raft group over TCP

/// (index, data) of applied entries, in apply order.
type Applied = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// Records applied entries; snapshots encode them (not exercised: snapshot_every is huge).
struct AppliedLog {
    /// (index, data) in apply order.
    entries: Applied,
}

impl StateMachine for AppliedLog {
    fn apply(&mut self, index: u64, _term: u64, data: &[u8]) {
        self.entries.lock().unwrap().push((index, data.to_vec()));
    }
    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, d) in self.entries.lock().unwrap().iter() {
            out.extend_from_slice(&i.to_be_bytes());
            out.extend_from_slice(&(d.len() as u32).to_be_bytes());
            out.extend_from_slice(d);
        }
        out
    }
    fn restore(&mut self, _index: u64, mut data: &[u8]) -> Result<(), String> {
        let mut entries = Vec::new();
        while data.len() >= 12 {
            let i = u64::from_be_bytes(data[..8].try_into().unwrap());
            let n = u32::from_be_bytes(data[8..12].try_into().unwrap()) as usize;
            entries.push((i, data[12..12 + n].to_vec()));
            data = &data[12 + n..];
        }
        *self.entries.lock().unwrap() = entries;
        Ok(())
    }
    fn proposal_dropped(&mut self, _data: &[u8]) {}
}

/// One server: raft thread + peer network.
struct TestNode {
    id: u64,
    raft: RaftHandle,
    join: std::thread::JoinHandle<()>,
    net: PeerNetwork,
    applied: Applied,
}

/// Every other node at its listener's address.
fn direct_peers(id: u64, addrs: &BTreeMap<u64, SocketAddr>) -> BTreeMap<u64, String> {
    addrs
        .iter()
        .filter(|(p, _)| **p != id)
        .map(|(p, a)| (*p, a.to_string()))
        .collect()
}

fn start_node(
    rt: &Runtime,
    id: u64,
    dir: &std::path::Path,
    peers: BTreeMap<u64, String>,
    listener: TcpListener,
) -> TestNode {
    start_node_with(rt, id, dir, peers, listener, 1_000_000, false)
}

/// Like [`start_node`], with a snapshot every `snapshot_every` entries and, if `stream`,
/// snapshot files streamed by the network (as a server does).
fn start_node_with(
    rt: &Runtime,
    id: u64,
    dir: &std::path::Path,
    peers: BTreeMap<u64, String>,
    listener: TcpListener,
    snapshot_every: u64,
    stream: bool,
) -> TestNode {
    let _g = rt.enter();
    let inbound = Arc::new(RaftInbound::new(|_, _| {}));
    let cfg = PeerConfig {
        my_id: id,
        cluster_id: CLUSTER,
        peers,
        limits: test_limits(),
        tls: None,
    };
    let net = PeerNetwork::start(cfg, listener, inbound.clone()).unwrap();
    if stream {
        net.serve_snapshots(crate::storage::SnapshotDir::existing(
            dir.join(format!("n{id}")).join("snapshots"),
        ));
    }
    let applied: Applied = Arc::default();
    let opts = RaftOptions {
        node_id: id,
        voters: vec![1, 2, 3],
        tick_interval: Duration::from_millis(20),
        snapshot_every,
        max_batch: 256,
        ..RaftOptions::standalone(dir.join(format!("n{id}")))
    };
    let sm = Box::new(AppliedLog {
        entries: applied.clone(),
    });
    let (raft, join) =
        RaftHandle::start_with_transport(opts, sm, Box::new(net.transport())).unwrap();
    net.attach(raft.clone());
    inbound.attach(raft.clone());
    TestNode {
        id,
        raft,
        join,
        net,
        applied,
    }
}

fn stop_node(rt: &Runtime, n: TestNode) {
    n.raft.shutdown();
    n.join.join().unwrap();
    rt.block_on(n.net.shutdown());
}

fn leader(nodes: &[TestNode]) -> Option<usize> {
    nodes.iter().position(|n| n.raft.is_caught_up_leader())
}

/// Three loopback listeners for servers 1..=3, and their address book.
fn bind_three(rt: &Runtime) -> (Vec<TcpListener>, BTreeMap<u64, SocketAddr>) {
    let listeners: Vec<TcpListener> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(bind().await);
        }
        v
    });
    let addrs = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().unwrap()))
        .collect();
    (listeners, addrs)
}

fn datas(n: &TestNode) -> Vec<(u64, Vec<u8>)> {
    n.applied.lock().unwrap().clone()
}

#[test]
fn three_node_raft_group_replicates_fails_over_and_catches_up_over_tcp() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let (listeners, addrs) = bind_three(&rt);
    let mut nodes: Vec<TestNode> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let id = i as u64 + 1;
            start_node(&rt, id, tmp.path(), direct_peers(id, &addrs), l)
        })
        .collect();
    let limit = Duration::from_secs(20);

    wait_until("a leader", limit, || leader(&nodes).is_some());
    let l = leader(&nodes).unwrap();
    for i in 0..50 {
        nodes[l]
            .raft
            .propose(format!("first-{i}").into_bytes())
            .unwrap();
    }
    for n in &nodes {
        wait_until("replication", limit, || datas(n).len() == 50);
    }
    let expect = datas(&nodes[0]);
    for n in &nodes {
        assert_eq!(datas(n), expect, "node {} diverged", n.id);
    }
    let firsts: Vec<Vec<u8>> = (0..50).map(|i| format!("first-{i}").into_bytes()).collect();
    assert_eq!(
        expect.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
        firsts
    );

    // Kill the leader: raft thread and transport.
    let old = nodes.remove(l);
    let old_id = old.id;
    let old_addr = addrs[&old_id];
    stop_node(&rt, old);
    wait_until("a new leader", limit, || leader(&nodes).is_some());
    let l = leader(&nodes).unwrap();
    assert_ne!(nodes[l].id, old_id);
    for i in 0..50 {
        nodes[l]
            .raft
            .propose(format!("second-{i}").into_bytes())
            .unwrap();
    }
    for n in &nodes {
        wait_until("replication after failover", limit, || {
            datas(n).len() == 100
        });
    }
    assert_eq!(datas(&nodes[0]), datas(&nodes[1]));

    // Restart the old leader on its data dir and port: it catches up.
    let listener = rt.block_on(async {
        let mut tries = 0;
        loop {
            match TcpListener::bind(old_addr).await {
                Ok(l) => break l,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 100, "cannot rebind {old_addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    let back = start_node(
        &rt,
        old_id,
        tmp.path(),
        direct_peers(old_id, &addrs),
        listener,
    );
    nodes.push(back);
    let restarted = nodes.len() - 1;
    wait_until("catch-up", limit, || datas(&nodes[restarted]).len() == 100);
    wait_until("a leader", limit, || leader(&nodes).is_some());
    let l = leader(&nodes).unwrap();
    for i in 0..10 {
        nodes[l]
            .raft
            .propose(format!("third-{i}").into_bytes())
            .unwrap();
    }
    for n in &nodes {
        wait_until("all three apply", limit, || datas(n).len() == 110);
    }
    let expect = datas(&nodes[0]);
    for n in &nodes {
        assert_eq!(datas(n), expect, "node {} diverged", n.id);
    }
    for n in nodes {
        stop_node(&rt, n);
    }
}

#[test]
fn forwarded_proposals_are_applied_at_most_once_across_a_reconnect() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let (listeners, addrs) = bind_three(&rt);
    // Every link goes through its own proxy, so one direction of one link can be cut.
    let mut proxies = BTreeMap::new();
    for from in 1..=3u64 {
        for to in 1..=3u64 {
            if from != to {
                let _g = rt.enter();
                proxies.insert((from, to), rt.block_on(Proxy::start(addrs[&to])));
            }
        }
    }
    let nodes: Vec<TestNode> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let id = i as u64 + 1;
            let peers = (1..=3u64)
                .filter(|to| *to != id)
                .map(|to| (to, proxies[&(id, to)].addr.to_string()))
                .collect();
            start_node(&rt, id, tmp.path(), peers, l)
        })
        .collect();
    let limit = Duration::from_secs(20);
    wait_until("a leader", limit, || leader(&nodes).is_some());
    let l = leader(&nodes).unwrap();
    let leader_id = nodes[l].id;
    let f = (l + 1) % 3;
    let follower = &nodes[f];
    wait_until("follower knows the leader", limit, || {
        follower.raft.leader_id() == leader_id && follower.net.is_connected(leader_id)
    });
    let count = |n: &TestNode, prefix: &str| {
        datas(n)
            .iter()
            .filter(|(_, d)| d.starts_with(prefix.as_bytes()))
            .count()
    };

    // Proposals on a follower travel to the leader as MsgPropose.
    for i in 0..100 {
        follower
            .raft
            .propose(format!("f-{i}").into_bytes())
            .unwrap();
    }
    for n in &nodes {
        wait_until("f applied", limit, || count(n, "f-") == 100);
    }
    // Cut follower → leader: forwarded proposals are dropped, and stay dropped.
    proxies[&(follower.id, leader_id)].cut();
    wait_until("cut noticed", limit, || {
        !follower.net.is_connected(leader_id)
    });
    for i in 0..20 {
        follower
            .raft
            .propose(format!("g-{i}").into_bytes())
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    proxies[&(follower.id, leader_id)].restore();
    wait_until("reconnected", limit, || {
        follower.net.is_connected(leader_id)
    });
    for i in 0..50 {
        follower
            .raft
            .propose(format!("h-{i}").into_bytes())
            .unwrap();
    }
    for n in &nodes {
        wait_until("h applied", limit, || count(n, "h-") == 50);
    }
    std::thread::sleep(Duration::from_millis(300));
    let expect = datas(&nodes[l]);
    for n in &nodes {
        let got = datas(n);
        assert_eq!(got, expect, "node {} diverged", n.id);
        let mut seen = std::collections::HashSet::new();
        for (_, d) in &got {
            assert!(
                seen.insert(d.clone()),
                "{} applied twice",
                String::from_utf8_lossy(d)
            );
        }
        assert_eq!(
            count(n, "g-"),
            0,
            "a proposal dropped during the cut was replayed"
        );
        assert_eq!((count(n, "f-"), count(n, "h-")), (100, 50));
    }
    for n in nodes {
        stop_node(&rt, n);
    }
}

#[test]
fn peer_config_comes_from_the_server_list() {
    let mut c = Config::default();
    let text = "jute.maxbuffer=100000\nserver.1=10.0.0.1:2888:3888\n\
                server.2=[::1]:2889:3889;2181\nserver.3=10.0.0.3:2890:3890:observer\n";
    c.apply_file(std::path::Path::new("zoo.cfg"), text).unwrap();
    c.server_id = 2;
    let p = PeerConfig::from_config(&c).unwrap();
    assert_eq!(p.my_id, 2);
    assert_eq!(p.cluster_id, c.cluster_id());
    assert_eq!(
        p.peers.into_iter().collect::<Vec<_>>(),
        [
            (1, "10.0.0.1:2888".to_string()),
            (3, "10.0.0.3:2890".to_string())
        ]
    );
    assert_eq!(p.limits.max_frame, 200_000 + 64 * 1024);
    assert_eq!(
        PeerConfig::listen_address(&c).as_deref(),
        Some("[::1]:2889")
    );
    assert!(PeerConfig::from_config(&Config::default()).is_none());
}

#[test]
fn raft_inbound_hands_touches_to_its_callback_and_drops_raft_before_attach() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let inbound = RaftInbound::new(move |from, t| g.lock().unwrap().push((from, t)));
    let t = vec![SessionTouch {
        session_id: 9,
        timeout_ms: 30_000,
    }];
    inbound.touch(3, t.clone());
    // Not attached yet: dropped without panicking.
    inbound.raft(3, vec![propose(3, 1, "early")]);
    assert_eq!(got.lock().unwrap().as_slice(), &[(3, t)]);
}

#[test]
fn a_message_not_matching_the_handshake_closes_the_connection() {
    let rt = rt();
    let _g = rt.enter();
    let l2 = rt.block_on(bind());
    let addr2 = l2.local_addr().unwrap();
    let (n2, rec2) = start_net(
        2,
        CLUSTER,
        &[(1, "127.0.0.1:1".into()), (3, "127.0.0.1:1".into())],
        l2,
        test_limits(),
    );
    // Handshake as 1, then send a message claiming to come from 3 (or a corrupt frame).
    let session = |m: Message, corrupt: bool| {
        rt.block_on(async move {
            let mut s = TcpStream::connect(addr2).await.unwrap();
            let mut out = BytesMut::new();
            let hello = Hello {
                version: VERSION,
                cluster_id: CLUSTER,
                from: 1,
                to: 2,
            };
            encode_frame(FrameKind::Hello, &hello.encode(), &mut out).unwrap();
            s.write_all(&out).await.unwrap();
            let mut buf = BytesMut::new();
            while decode_frame(&mut buf, caps()).unwrap().is_none() {
                assert!(s.read_buf(&mut buf).await.unwrap() > 0);
            }
            let mut out = BytesMut::new();
            encode_frame(
                FrameKind::RaftBatch,
                &encode_raft_batch(&[m]).unwrap(),
                &mut out,
            )
            .unwrap();
            if corrupt {
                let last = out.len() - 1;
                out[last] ^= 0x55;
            }
            s.write_all(&out).await.unwrap();
            // A closed connection reads EOF; an open one times out.
            let mut b = [0u8; 1];
            tokio::time::timeout(Duration::from_millis(500), s.read(&mut b))
                .await
                .map(|r| r.map(|n| n == 0).unwrap_or(true))
                .unwrap_or(false)
        })
    };
    assert!(
        session(propose(3, 2, "spoofed"), false),
        "spoofed from kept open"
    );
    assert!(
        session(propose(1, 5, "wrong to"), false),
        "wrong to kept open"
    );
    assert!(
        session(propose(1, 2, "corrupt"), true),
        "corrupt frame kept open"
    );
    assert!(rec2.raft.lock().unwrap().is_empty());
    assert!(
        !session(propose(1, 2, "fine"), false),
        "a good connection was closed"
    );
    wait_until("delivery", Duration::from_secs(5), || {
        rec2.datas() == ["fine".to_string()]
    });
    rt.block_on(n2.shutdown());
}

#[test]
fn a_peer_that_goes_away_is_reported_closed() {
    let rt = rt();
    let _g = rt.enter();
    let (l1, l2) = rt.block_on(async { (bind().await, bind().await) });
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let (n1, _rec1) = start_net(1, CLUSTER, &[(2, a2.to_string())], l1, test_limits());
    let (n2, rec2) = start_net(2, CLUSTER, &[(1, a1.to_string())], l2, test_limits());
    wait_until("connected", Duration::from_secs(10), || {
        n1.is_connected(2) && n2.is_connected(1)
    });
    n1.transport().send(vec![propose(1, 2, "hello")]);
    wait_until("delivery", Duration::from_secs(10), || {
        rec2.raft.lock().unwrap().len() == 1
    });
    assert!(rec2.closed.lock().unwrap().is_empty());
    // Server 1 goes away: its sockets close, and 2 hears of it without waiting for a timeout.
    rt.block_on(n1.shutdown());
    wait_until("close reported", Duration::from_secs(5), || {
        rec2.closed.lock().unwrap().as_slice() == [1]
    });
    rt.block_on(n2.shutdown());
}
/// A MsgSnapshot from 1 to 2 carrying the descriptor of `dir`'s snapshot file at `index`.
fn snapshot_msg(dir: &crate::storage::SnapshotDir, index: u64) -> Message {
    let h = crate::storage::verify_file(&dir.file_path(index))
        .or_else(|_| {
            // A damaged file still has a readable header; the receiver must catch the rest.
            dir.newest_header().map(|h| h.map(|(h, _)| h).unwrap())
        })
        .unwrap();
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.from = 1;
    m.to = 2;
    m.term = h.term;
    let snap = m.mut_snapshot();
    snap.data = crate::storage::SnapshotRef::of(&h).encode().into();
    snap.mut_metadata().index = h.index;
    snap.mut_metadata().term = h.term;
    m
}

#[test]
fn snapshot_files_stream_in_checked_chunks_and_bad_ones_are_refused() {
    let rt = rt();
    let _g = rt.enter();
    let tmp = tempfile::tempdir().unwrap();
    let leader_dir = crate::storage::SnapshotDir::open(tmp.path().join("n1")).unwrap();
    let follower_dir = crate::storage::SnapshotDir::open(tmp.path().join("n2")).unwrap();
    // ~1.2 MB of payload: several 256 KiB chunks under test_limits' frame cap.
    let payload: Vec<u8> = (0..1_200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let cs = raft::eraftpb::ConfState {
        voters: vec![1, 2],
        ..Default::default()
    };
    leader_dir.write(7, 3, &cs, &payload).unwrap();

    let (l1, l2) = rt.block_on(async { (bind().await, bind().await) });
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let (n1, rec1) = start_net(1, CLUSTER, &[(2, a2.to_string())], l1, test_limits());
    let (n2, rec2) = start_net(2, CLUSTER, &[(1, a1.to_string())], l2, test_limits());
    n1.serve_snapshots(leader_dir.clone());
    n2.serve_snapshots(follower_dir.clone());
    assert!(n1.transport().streams_snapshots());

    n1.transport().send(vec![snapshot_msg(&leader_dir, 7)]);
    wait_until("snapshot delivered", Duration::from_secs(20), || {
        !rec1.snapshots.lock().unwrap().is_empty()
    });
    assert_eq!(
        rec1.snapshots.lock().unwrap().as_slice(),
        &[(2, SnapshotStatus::Finish)]
    );
    {
        let got = rec2.raft.lock().unwrap();
        assert_eq!(
            got.len(),
            1,
            "the MsgSnapshot is stepped once its file is here"
        );
        assert_eq!(got[0].1.get_msg_type(), MessageType::MsgSnapshot);
    }
    let recv = follower_dir.received_path(7);
    assert_eq!(
        std::fs::read(&recv).unwrap(),
        std::fs::read(leader_dir.file_path(7)).unwrap()
    );
    assert_eq!(
        (n1.stats().snapshots_sent, n2.stats().snapshots_received),
        (1, 1)
    );
    std::fs::remove_file(&recv).unwrap();

    // The leader's file is damaged (same length, one payload byte): the follower refuses it,
    // Raft hears Failure (so it retries), and nothing is stepped or left on the follower.
    let path = leader_dir.file_path(7);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    n1.transport().send(vec![snapshot_msg(&leader_dir, 7)]);
    wait_until("failure reported", Duration::from_secs(20), || {
        rec1.snapshots.lock().unwrap().len() == 2
    });
    assert_eq!(
        rec1.snapshots.lock().unwrap()[1],
        (2, SnapshotStatus::Failure)
    );
    assert_eq!(rec2.raft.lock().unwrap().len(), 1);
    assert_eq!(n2.stats().snapshot_receive_failures, 1);
    let left: Vec<_> = std::fs::read_dir(follower_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // A descriptor whose file is gone (compacted away): Failure at once, nothing sent.
    std::fs::remove_file(&path).unwrap();
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.from = 1;
    m.to = 2;
    m.mut_snapshot().data = crate::storage::SnapshotRef {
        index: 7,
        term: 3,
        file_len: 10,
        payload_crc: 0,
    }
    .encode()
    .into();
    n1.transport().send(vec![m]);
    wait_until("missing file reported", Duration::from_secs(10), || {
        rec1.snapshots.lock().unwrap().len() == 3
    });
    assert_eq!(
        rec1.snapshots.lock().unwrap()[2],
        (2, SnapshotStatus::Failure)
    );
    rt.block_on(n1.shutdown());
    rt.block_on(n2.shutdown());
}

/// Nodes 1 and 2 (streaming snapshots, one every 40 entries) with 200 entries of ~8 KiB
/// applied in waves and at least two snapshots taken (so the log is compacted past index 1),
/// plus node 3's listener and the address book. Returns (nodes, leader index, node 3's
/// listener, addresses).
fn compacted_pair(
    rt: &Runtime,
    dir: &std::path::Path,
) -> (Vec<TestNode>, usize, TcpListener, BTreeMap<u64, SocketAddr>) {
    let (listeners, addrs) = bind_three(rt);
    let mut listeners = listeners.into_iter();
    let nodes: Vec<TestNode> = (1..=2u64)
        .map(|id| {
            let l = listeners.next().unwrap();
            start_node_with(rt, id, dir, direct_peers(id, &addrs), l, 40, true)
        })
        .collect();
    let late = listeners.next().unwrap();
    let limit = Duration::from_secs(20);
    wait_until("a leader", limit, || leader(&nodes).is_some());
    let l = leader(&nodes).unwrap();
    // Enough bytes that the snapshot spans several 256 KiB chunks; in waves, since a
    // snapshot covers what is applied when it is taken.
    let big = vec![b'z'; 8 * 1024];
    for wave in 0..5 {
        for i in 0..40 {
            let mut data = format!("e{wave}-{i:03}-").into_bytes();
            data.extend_from_slice(&big);
            nodes[l].raft.propose(data).unwrap();
        }
        for n in &nodes {
            wait_until("replication", limit, || datas(n).len() == 40 * (wave + 1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + limit;
    while nodes[l].raft.stats().snapshots_taken < 2 {
        assert!(
            Instant::now() < deadline,
            "no two snapshots: {:?}, applied {}",
            nodes[l].raft.stats(),
            nodes[l].raft.applied_index()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    (nodes, l, late, addrs)
}

/// Node 3 applies a write made after it joined, and then holds exactly the leader's entries;
/// its snapshot directory has its installed snapshot and no received file left over.
fn assert_caught_up(nodes: &[TestNode], l: usize, dir: &std::path::Path) {
    let limit = Duration::from_secs(20);
    nodes[l].raft.propose(b"after".to_vec()).unwrap();
    for n in nodes {
        wait_until("all apply the write after the install", limit, || {
            datas(n).last().is_some_and(|(_, d)| d == b"after")
        });
    }
    assert_eq!(datas(&nodes[2]), datas(&nodes[l]), "node 3 diverged");
    let names: Vec<String> = std::fs::read_dir(dir.join("n3").join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("snap-")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("recv-")), "{names:?}");
}

#[test]
fn a_lagging_node_catches_up_through_a_streamed_snapshot_over_tcp() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, l, late, addrs) = compacted_pair(&rt, tmp.path());
    let n3 = start_node_with(&rt, 3, tmp.path(), direct_peers(3, &addrs), late, 40, true);
    nodes.push(n3);
    wait_until(
        "node 3 installed a snapshot",
        Duration::from_secs(20),
        || nodes[2].raft.stats().snapshots_installed >= 1,
    );
    assert_caught_up(&nodes, l, tmp.path());
    assert!(nodes[l].net.stats().snapshots_sent >= 1);
    assert!(nodes[2].net.stats().snapshots_received >= 1);
    for n in nodes {
        stop_node(&rt, n);
    }
}

#[test]
fn a_refused_snapshot_is_retried_by_raft_until_a_good_one_lands() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, l, late, addrs) = compacted_pair(&rt, tmp.path());
    // Damage one payload byte of the leader's newest file (its header stays valid): every
    // stream of it is refused by the follower's verification.
    let leader_dir = tmp
        .path()
        .join(format!("n{}", nodes[l].id))
        .join("snapshots");
    let snaps = crate::storage::SnapshotDir::existing(&leader_dir);
    let (newest, _) = snaps.list().unwrap()[0].clone();
    let path = snaps.file_path(newest);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let n3 = start_node_with(&rt, 3, tmp.path(), direct_peers(3, &addrs), late, 40, true);
    nodes.push(n3);
    // Generous: a loaded 2-core machine (parallel tests) slows the streams and elections.
    let limit = Duration::from_secs(60);
    wait_until("a refused stream, retried", limit, || {
        nodes[l].net.stats().snapshot_send_failures >= 2
    });
    assert_eq!(nodes[2].raft.stats().snapshots_installed, 0);
    assert_eq!(
        nodes[2].raft.applied_index(),
        0,
        "nothing of the bad file was applied"
    );
    // New writes make the leader take a newer (good) snapshot; raft's next retry sends it.
    for i in 0..45 {
        nodes[l]
            .raft
            .propose(format!("more-{i}").into_bytes())
            .unwrap();
    }
    wait_until("node 3 installed a good snapshot", limit, || {
        nodes[2].raft.stats().snapshots_installed >= 1
    });
    assert_caught_up(&nodes, l, tmp.path());
    for n in nodes {
        stop_node(&rt, n);
    }
}
