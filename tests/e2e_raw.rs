//! Hand-built bytes on raw TCP: framing limits, garbage, unknown opcodes, malformed bodies,
//! handshake variants (with/without the readOnly byte, lastZxidSeen ahead of the server),
//! pings and pipelining. A misbehaving connection must never affect the others.
//!
//! Against ZooKeeper: `E2E_TARGET=zk cargo test --test e2e_raw`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::raw::{self, err, frame, op, ConnectRequest, Enc, RawConn, ReadOutcome};
use common::*;

const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Asserts the server still serves an existing session and a brand-new one.
fn still_serving(server: &TestServer, existing: &mut RawConn) {
    assert_eq!(
        existing.exists("/", false).0,
        0,
        "existing session must keep working"
    );
    let mut fresh = server.raw();
    assert_eq!(
        fresh.exists("/zookeeper", false).0,
        0,
        "new sessions must keep working"
    );
    assert_eq!(server.four_letter("ruok"), "imok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_only_that_connection() {
    within(
        TEST_BOUND_SECS,
        "oversized_frame_closes_only_that_connection",
        async {
            let server = TestServer::shared();
            let mut bystander = server.raw();

            // After the handshake: length 1,048,576 (> jute.maxbuffer 1,048,575).
            let mut a = server.raw();
            a.write_raw(&(1_048_576i32).to_be_bytes());
            assert!(
                a.wait_closed(CLOSE_WAIT),
                "frame length 1048576 must close the connection"
            );
            still_serving(server, &mut bystander);

            // A much larger one, with some bytes following.
            let mut a = server.raw();
            let _ = a.try_write_raw(&(64i32 << 20).to_be_bytes());
            let _ = a.try_write_raw(&[0u8; 1024]);
            assert!(a.wait_closed(CLOSE_WAIT));
            // Negative length.
            let mut a = server.raw();
            a.write_raw(&(-1i32).to_be_bytes());
            assert!(
                a.wait_closed(CLOSE_WAIT),
                "negative frame length must close the connection"
            );

            // Before the handshake.
            let mut s = RawConn::tcp(&server.addr());
            s.write_all(&(1_048_576i32).to_be_bytes()).unwrap();
            s.set_read_timeout(Some(CLOSE_WAIT)).unwrap();
            let mut buf = [0u8; 64];
            match s.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("oversized first frame must close the connection, got {other:?}"),
            }
            still_serving(server, &mut bystander);
        },
    )
    .await
}

/// A frame too short to hold a request header is garbage: the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_handshake_closes_the_connection() {
    within(
        TEST_BOUND_SECS,
        "garbage_after_handshake_closes_the_connection",
        async {
            let server = TestServer::shared();
            let mut bystander = server.raw();
            let garbage: [&[u8]; 4] = [
                &[],
                &[1, 2, 3],
                &[0, 0, 0, 1],
                &[0xde, 0xad, 0xbe, 0xef, 0x12, 0x34, 0x56],
            ];
            for g in garbage {
                let mut a = server.raw();
                a.write_raw(&frame(g));
                assert!(
                    a.wait_closed(CLOSE_WAIT),
                    "frame {g:?} must close the connection"
                );
            }
            // Garbage instead of a ConnectRequest: closed without a ConnectResponse.
            let mut s = RawConn::tcp(&server.addr());
            s.write_all(&frame(&[1, 2, 3, 4, 5])).unwrap();
            s.set_read_timeout(Some(CLOSE_WAIT)).unwrap();
            let mut buf = [0u8; 64];
            match s.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("garbage handshake must be closed, got {other:?}"),
            }
            still_serving(server, &mut bystander);
        },
    )
    .await
}

/// A well-formed header with an undecodable body: ZooKeeper answers MarshallingError (-5) for
/// that xid and keeps the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_request_body_is_a_marshalling_error() {
    within(
        TEST_BOUND_SECS,
        "truncated_request_body_is_a_marshalling_error",
        async {
            let server = TestServer::shared();
            let mut a = server.raw();
            // create with a path length of 100 but no bytes.
            a.write_raw(&frame(&Enc::new().i32(1).i32(op::CREATE).i32(100).bytes()));
            let r = a.next_reply(CLOSE_WAIT).expect("a reply");
            assert_eq!((r.xid, r.err), (1, -5));
            // getData with a negative path length.
            a.write_raw(&frame(&Enc::new().i32(2).i32(op::GET_DATA).i32(-5).bytes()));
            let r = a.next_reply(CLOSE_WAIT).expect("a reply");
            assert_eq!((r.xid, r.err), (2, -5));
            // The connection is still usable.
            a.send_xid(3, op::EXISTS, &raw::path_watch_req("/", false));
            let r = a.next_reply(CLOSE_WAIT).expect("a reply");
            assert_eq!((r.xid, r.err), (3, 0));
        },
    )
    .await
}

/// Unknown opcodes get an error reply (ZooKeeper: Unimplemented, -6) with the request's xid;
/// then the server closes that connection. Others are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_opcode_gets_unimplemented_then_close() {
    within(
        TEST_BOUND_SECS,
        "unknown_opcode_gets_unimplemented_then_close",
        async {
            let server = TestServer::shared();
            let mut bystander = server.raw();
            for opcode in [999, 10, 50, -3] {
                let mut a = server.raw();
                a.send_xid(5, opcode, &[]);
                match a.read_frame(CLOSE_WAIT) {
                    ReadOutcome::Frame(f) => {
                        let mut d = raw::Dec::new(&f);
                        let xid = d.i32();
                        let _zxid = d.i64();
                        let e = d.i32();
                        assert_eq!((xid, e), (5, err::UNIMPLEMENTED), "opcode {opcode}");
                        assert!(d.is_empty(), "no body after the error header");
                    }
                    other => {
                        panic!("opcode {opcode}: expected an Unimplemented reply, got {other:?}")
                    }
                }
                assert!(
                    a.wait_closed(CLOSE_WAIT),
                    "opcode {opcode}: connection closed after the error"
                );
            }
            still_serving(server, &mut bystander);
        },
    )
    .await
}

/// A client that has seen a newer zxid than the server must not connect (it would travel back in
/// time): the server closes the connection without a ConnectResponse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_zxid_ahead_is_refused() {
    within(
        TEST_BOUND_SECS,
        "connect_with_zxid_ahead_is_refused",
        async {
            let server = TestServer::shared();
            let mut a = server.raw();
            a.create_ok(&unique("raw-zxid"), b"");
            let current = a.last_zxid;
            assert!(current > 0);

            for ahead in [current + 1_000_000, i64::MAX] {
                let mut req = ConnectRequest::new(6000);
                req.last_zxid_seen = ahead;
                match RawConn::connect_req(&server.addr(), &req) {
                    Err(ReadOutcome::Closed) => {}
                    Err(other) => panic!("lastZxidSeen {ahead:#x}: expected close, got {other:?}"),
                    Ok((_, resp)) => {
                        panic!("lastZxidSeen {ahead:#x} ahead of the server was accepted: {resp:?}")
                    }
                }
            }
            // Equal to the server's zxid: fine.
            let mut req = ConnectRequest::new(6000);
            req.last_zxid_seen = current;
            let (mut c, resp) = RawConn::connect_req(&server.addr(), &req)
                .expect("lastZxidSeen == server zxid is fine");
            assert_ne!(resp.session_id, 0);
            assert_eq!(c.exists("/", false).0, 0);
            still_serving(server, &mut a);
        },
    )
    .await
}

/// The readOnly byte is optional in ConnectRequest; the response carries it only if the request
/// did (ConnectResponse: 36 bytes without, 37 with).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_request_with_and_without_read_only_byte() {
    within(
        TEST_BOUND_SECS,
        "connect_request_with_and_without_read_only_byte",
        async {
            let server = TestServer::shared();
            for with_ro in [false, true] {
                let mut req = ConnectRequest::new(6000).encode();
                assert_eq!(req.len(), 45);
                if !with_ro {
                    req.pop();
                }
                let mut s = RawConn::tcp(&server.addr());
                s.write_all(&frame(&req)).unwrap();
                s.set_read_timeout(Some(CLOSE_WAIT)).unwrap();
                let mut len = [0u8; 4];
                s.read_exact(&mut len).unwrap();
                let n = i32::from_be_bytes(len);
                assert_eq!(
                    n,
                    if with_ro { 37 } else { 36 },
                    "ConnectResponse length (readOnly byte sent: {with_ro})"
                );
                let mut body = vec![0u8; n as usize];
                s.read_exact(&mut body).unwrap();
                let mut d = raw::Dec::new(&body);
                assert_eq!(d.i32(), 0, "protocolVersion");
                assert_eq!(d.i32(), 6000, "timeOut");
                assert_ne!(d.i64(), 0, "sessionId");
                assert_eq!(d.buf().map(|p| p.len()), Some(16), "passwd");
                if with_ro {
                    assert!(!d.bool(), "readOnly");
                }
                // The session works.
                s.write_all(&frame(
                    &Enc::new()
                        .i32(1)
                        .i32(op::EXISTS)
                        .raw(&raw::path_watch_req("/", false))
                        .bytes(),
                ))
                .unwrap();
                s.read_exact(&mut len).unwrap();
                let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
                s.read_exact(&mut body).unwrap();
                let mut d = raw::Dec::new(&body);
                assert_eq!((d.i32(), d.i64() > 0, d.i32()), (1, true, 0));
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_session_id_is_rejected() {
    within(TEST_BOUND_SECS, "unknown_session_id_is_rejected", async {
        let server = TestServer::shared();
        let mut req = ConnectRequest::new(6000);
        req.session_id = 0x0bad_cafe_0000_0001;
        req.passwd = vec![1; 16];
        match RawConn::connect_req(&server.addr(), &req) {
            Ok((_, resp)) => assert_eq!((resp.session_id, resp.timeout), (0, 0)),
            Err(ReadOutcome::Closed) => {}
            Err(other) => panic!("{other:?}"),
        }
    })
    .await
}

/// Pings are answered with xid -2; many pipelined requests are answered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_pipelining() {
    within(TEST_BOUND_SECS, "ping_and_pipelining", async {
        let server = TestServer::shared();
        let mut a = server.raw();
        a.ping();
        let base = unique("raw-pipeline");
        a.create_ok(&base, b"");
        let mut xids = vec![];
        let mut bytes = vec![];
        for i in 0..200 {
            let xid = 1000 + i;
            let body = if i % 2 == 0 {
                raw::create_req(&format!("{base}/n{i}"), b"v", 0)
            } else {
                raw::path_watch_req(&format!("{base}/n{}", i - 1), false)
            };
            let opcode = if i % 2 == 0 { op::CREATE } else { op::GET_DATA };
            bytes.extend(frame(&Enc::new().i32(xid).i32(opcode).raw(&body).bytes()));
            xids.push(xid);
        }
        bytes.extend(frame(&Enc::new().i32(-2).i32(op::PING).bytes()));
        a.write_raw(&bytes);
        let mut last_zxid = 0;
        for (i, xid) in xids.iter().enumerate() {
            let r = a.next_reply(CLOSE_WAIT).expect("reply");
            assert_eq!(r.xid, *xid, "replies in request order");
            assert_eq!(r.err, 0, "request {i}");
            assert!(r.zxid >= last_zxid, "reply zxids never go back");
            last_zxid = r.zxid;
            if i % 2 == 1 {
                let mut d = raw::Dec::new(&r.body);
                assert_eq!(d.buf().unwrap(), b"v");
            }
        }
        let r = a.next_reply(CLOSE_WAIT).expect("ping reply");
        assert_eq!((r.xid, r.err), (-2, 0));
        assert_eq!(a.get_children(&base, false).1.len(), 100);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfig_answers_like_a_standalone_server() {
    within(
        TEST_BOUND_SECS,
        "reconfig_answers_like_a_standalone_server",
        async {
            let server = TestServer::shared();
            let mut c = server.raw();
            // ReconfigRequest {joiningServers, leavingServers, newMembers, curConfigId}
            let body = Enc::new()
                .str("server.2=127.0.0.1:2888:3888;2182")
                .str("")
                .str("")
                .i64(-1)
                .bytes();
            let xid = c.send(op::RECONFIG, &body);
            let reply = c.wait_reply(xid);
            // -123 ReconfigDisabled: reconfigEnabled is off by default in a standalone server.
            assert_eq!(reply.err, -123, "reconfig reply");
            still_serving(server, &mut c);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_gets_a_clean_error_not_a_dropped_connection() {
    if is_zk() {
        // ZooKeeper without SASL configured drops the connection; rookery answers instead.
        return;
    }
    within(
        TEST_BOUND_SECS,
        "sasl_gets_a_clean_error_not_a_dropped_connection",
        async {
            let server = TestServer::shared();
            let mut c = server.raw();
            let xid = c.send(102, &Enc::new().buf(b"token").bytes());
            let reply = c.wait_reply(xid);
            assert_eq!(reply.err, -115, "sasl reply (AuthFailed)");
            still_serving(server, &mut c);
        },
    )
    .await;
}
