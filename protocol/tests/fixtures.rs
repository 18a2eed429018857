//! Byte-exact fixtures: what ZooKeeper's Java client and server put on the wire, derived by hand
//! from zookeeper.jute (BinaryOutputArchive: big-endian ints and longs, a boolean as one byte,
//! buffers and ustrings as an int length then the bytes, vectors as an int count then elements)
//! and ClientCnxn (a 4-byte frame length, then RequestHeader + record).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use bytes::BytesMut;
use rookery_protocol::*;

/// Parses "00 0a ff"-style hex, ignoring whitespace and, on each line, a `| comment`.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .lines()
        .flat_map(|line| line.split('|').next().unwrap_or("").bytes())
        .filter(|b| b.is_ascii_hexdigit())
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd hex digits in fixture");
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).unwrap_or("00");
            u8::from_str_radix(s, 16).unwrap_or(0)
        })
        .collect()
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn passwd() -> Vec<u8> {
    (0x10..0x20).collect()
}

const CONNECT_REQUEST_44: &str = "
    00000000                  | protocolVersion 0
    0000000000000123          | lastZxidSeen 0x123
    00007530                  | timeOut 30000
    0000000000000000          | sessionId 0 (new session)
    00000010                  | passwd length 16
    101112131415161718191a1b1c1d1e1f";

const CONNECT_RESPONSE_36: &str = "
    00000000                  | protocolVersion 0
    00007530                  | timeOut 30000
    0100000012345678          | sessionId
    00000010                  | passwd length 16
    101112131415161718191a1b1c1d1e1f";

#[test]
fn connect_request_45_and_44_bytes() {
    let mut req = ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0x123,
        time_out: 30_000,
        session_id: 0,
        passwd: passwd(),
        read_only: None,
    };
    let without = hex(CONNECT_REQUEST_44);
    assert_eq!(without.len(), 44);
    assert_eq!(&req.to_bytes()[..], &without[..]);
    assert_eq!(ConnectRequest::from_bytes(&without), Ok(req.clone()));

    // Clients since 3.4 append readOnly (ClientCnxnSocket writes it by hand).
    req.read_only = Some(true);
    let mut with = without.clone();
    with.push(1);
    assert_eq!(with.len(), 45);
    assert_eq!(&req.to_bytes()[..], &with[..]);
    assert_eq!(ConnectRequest::from_bytes(&with), Ok(req));
    assert_eq!(&framed(&with)[..4], &[0, 0, 0, 45]);
}

#[test]
fn connect_response_37_and_36_bytes() {
    let mut rsp = ConnectResponse {
        protocol_version: 0,
        time_out: 30_000,
        session_id: 0x0100_0000_1234_5678,
        passwd: passwd(),
        read_only: None,
    };
    let without = hex(CONNECT_RESPONSE_36);
    assert_eq!(without.len(), 36);
    assert_eq!(&rsp.to_bytes()[..], &without[..]);
    assert_eq!(ConnectResponse::from_bytes(&without), Ok(rsp.clone()));

    rsp.read_only = Some(false);
    let mut with = without;
    with.push(0);
    assert_eq!(with.len(), 37);
    assert_eq!(&rsp.to_bytes()[..], &with[..]);
    assert_eq!(ConnectResponse::from_bytes(&with), Ok(rsp));
}

/// `zk.create("/foo", "bar".getBytes(), Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT)` as the first
/// request of a session (xid 1, opcode create = 1).
const CREATE_PACKET: &str = "
    00000036                  | frame length 54
    00000001 00000001         | RequestHeader xid 1, type create (1)
    00000004 2f666f6f         | path \"/foo\"
    00000003 626172           | data \"bar\"
    00000001                  | acl: 1 entry
    0000001f                  |   perms ALL (31)
    00000005 776f726c64       |   scheme \"world\"
    00000006 616e796f6e65     |   id \"anyone\"
    00000000                  | flags PERSISTENT";

/// The server's reply: ReplyHeader{xid 1, zxid 0x100000002, err 0} + CreateResponse{\"/foo\"}.
const CREATE_REPLY: &str = "
    00000018                  | frame length 24
    00000001                  | xid 1
    0000000100000002          | zxid
    00000000                  | err 0
    00000004 2f666f6f         | path \"/foo\"";

fn create_request() -> CreateRequest {
    CreateRequest {
        path: "/foo".into(),
        data: Some(b"bar".to_vec()),
        acl: vec![Acl {
            perms: perms::ALL,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }],
        flags: CreateMode::Persistent.wire(),
    }
}

#[test]
fn create_request_as_the_java_client_sends_it() {
    let wire = hex(CREATE_PACKET);
    let req = Request::Create {
        op: OpCode::Create,
        req: create_request(),
    };
    let mut body = BytesMut::new();
    req.encode_packet(1, &mut body);
    assert_eq!(framed(&body), wire);
    let (header, decoded) = Request::decode_packet(&wire[4..]).unwrap();
    assert_eq!(header, RequestHeader { xid: 1, op_type: 1 });
    assert_eq!(decoded, req);
}

#[test]
fn create_reply_as_zookeeper_sends_it() {
    let wire = hex(CREATE_REPLY);
    let header = ReplyHeader {
        xid: 1,
        zxid: 0x1_0000_0002,
        err: 0,
    };
    let body = Response::Create(CreateResponse {
        path: "/foo".into(),
    });
    let mut out = BytesMut::new();
    encode_reply(&header, &body, &mut out);
    assert_eq!(framed(&out), wire);
    let mut input = Reader::new(&wire[4..]);
    assert_eq!(ReplyHeader::read(&mut input), Ok(header));
    assert_eq!(Response::read(OpCode::Create, &mut input), Ok(body));
    assert!(input.is_empty());
}

#[test]
fn create_error_reply_is_the_header_alone() {
    // NodeExists (-110): a ReplyHeader and no body.
    let header = ReplyHeader {
        xid: 1,
        zxid: 0x1_0000_0002,
        err: ErrorCode::NodeExists.wire(),
    };
    let mut out = BytesMut::new();
    encode_reply(
        &header,
        &Response::Create(CreateResponse {
            path: "/foo".into(),
        }),
        &mut out,
    );
    assert_eq!(
        framed(&out),
        hex("00000010 00000001 0000000100000002 ffffff92")
    );
}

#[test]
fn create2_reply_carries_a_68_byte_stat() {
    let stat = Stat {
        czxid: 0x1_0000_0002,
        mzxid: 0x1_0000_0002,
        ctime: 0x0000_018f_0000_0001,
        mtime: 0x0000_018f_0000_0001,
        version: 0,
        cversion: 0,
        aversion: 0,
        ephemeral_owner: 0,
        data_length: 3,
        num_children: 0,
        pzxid: 0x1_0000_0002,
    };
    let stat_bytes = hex(
        "0000000100000002 0000000100000002 0000018f00000001 0000018f00000001
         00000000 00000000 00000000 0000000000000000 00000003 00000000 0000000100000002",
    );
    assert_eq!(stat_bytes.len(), 68);
    assert_eq!(&stat.to_bytes()[..], &stat_bytes[..]);
    let mut out = BytesMut::new();
    Response::Create2(Create2Response {
        path: "/foo".into(),
        stat,
    })
    .write(&mut out);
    let mut expect = hex("00000004 2f666f6f");
    expect.extend_from_slice(&stat_bytes);
    assert_eq!(&out[..], &expect[..]);
}

#[test]
fn multi_request_as_the_java_client_sends_it() {
    // zk.multi([Op.create("/foo", "bar", OPEN_ACL_UNSAFE, PERSISTENT), Op.delete("/foo", -1)])
    // (MultiOperationRecord.serialize), xid 2.
    let wire = hex("00000002 0000000e
         00000001 00 ffffffff
         00000004 2f666f6f 00000003 626172 00000001 0000001f 00000005 776f726c64
           00000006 616e796f6e65 00000000
         00000002 00 ffffffff
         00000004 2f666f6f ffffffff
         ffffffff 01 ffffffff");
    let req = Request::Multi(vec![
        MultiOp::Create {
            op: OpCode::Create,
            req: create_request(),
        },
        MultiOp::Delete(DeleteRequest {
            path: "/foo".into(),
            version: -1,
        }),
    ]);
    let mut out = BytesMut::new();
    req.encode_packet(2, &mut out);
    assert_eq!(&out[..], &wire[..]);
    assert_eq!(Request::decode_packet(&wire).unwrap().1, req);
}

#[test]
fn failed_multi_reply_as_zookeeper_sends_it() {
    // The first op failed with NodeExists, the second was not applied (-2).
    // MultiResponse.serialize: MultiHeader{-1 (error), false, err} + ErrorResponse{err}.
    let wire = hex("ffffffff 00 ffffff92 ffffff92
         ffffffff 00 fffffffe fffffffe
         ffffffff 01 ffffffff");
    let body = Response::Multi(vec![
        MultiResult::Error(ErrorCode::NodeExists),
        MultiResult::Error(ErrorCode::RuntimeInconsistency),
    ]);
    let mut out = BytesMut::new();
    body.write(&mut out);
    assert_eq!(&out[..], &wire[..]);
    assert_eq!(
        Response::read(OpCode::Multi, &mut Reader::new(&wire)),
        Ok(body)
    );
}

#[test]
fn add_watch_reply_carries_an_error_response() {
    // FinalRequestProcessor: `rsp = new ErrorResponse(0)` for addWatch, and ZooKeeper.addWatch
    // deserializes an ErrorResponse: a bare ReplyHeader would be an EOF for the Java client.
    let header = ReplyHeader {
        xid: 5,
        zxid: 0x1_0000_0002,
        err: 0,
    };
    let mut out = BytesMut::new();
    encode_reply(&header, &Response::ADD_WATCH_OK, &mut out);
    assert_eq!(
        framed(&out),
        hex("00000014 00000005 0000000100000002 00000000 00000000")
    );
    let mut input = Reader::new(&out[16..]);
    assert_eq!(
        Response::read(OpCode::AddWatch, &mut input),
        Ok(Response::ADD_WATCH_OK)
    );
    // A reply without the body still decodes (lenient client side).
    assert_eq!(
        Response::read(OpCode::AddWatch, &mut Reader::new(&[])),
        Ok(Response::Empty)
    );
}

#[test]
fn ping_and_notification_packets() {
    // Ping: RequestHeader{xid -2, type 11}, no body.
    let mut out = BytesMut::new();
    Request::Ping.encode_packet(xids::PING, &mut out);
    assert_eq!(framed(&out), hex("00000008 fffffffe 0000000b"));
    // A NodeDataChanged notification: ReplyHeader{xid -1, ...} + WatcherEvent{3, 3, "/foo"}.
    let event = WatcherEvent {
        event_type: EventType::NodeDataChanged.wire(),
        state: KeeperState::SyncConnected.wire(),
        path: "/foo".into(),
    };
    assert_eq!(
        &event.to_bytes()[..],
        &hex("00000003 00000003 00000004 2f666f6f")[..]
    );
}

#[test]
fn set_watches_request_as_the_java_client_sends_it() {
    // SetWatches (101) with xid -8: relativeZxid, then data/exist/child watch lists.
    let wire = hex("fffffff8 00000065
         0000000100000002
         00000001 00000002 2f61
         00000000
         00000002 00000002 2f62 00000001 2f");
    let (header, req) = Request::decode_packet(&wire).unwrap();
    assert_eq!(header.xid, xids::SET_WATCHES);
    let expect = SetWatches {
        relative_zxid: 0x1_0000_0002,
        data_watches: vec!["/a".into()],
        exist_watches: vec![],
        child_watches: vec!["/b".into(), "/".into()],
    };
    assert_eq!(req, Request::SetWatches(expect.clone()));
    let w2 = SetWatches2::from(expect);
    assert_eq!(w2.child_watches, ["/b", "/"]);
    assert!(w2.persistent_watches.is_empty());
}

/// Null data (BinaryOutputArchive.writeBuffer(null) writes length -1) and empty data (length 0)
/// are different on the wire and must stay different after decoding: ZooKeeper hands null back.
#[test]
fn null_and_empty_data_stay_apart() {
    let null_reply = hex("
        ffffffff                  | data null (-1)
        0000000000000001 0000000000000001 0000000000000000 0000000000000000
        00000000 00000000 00000000 0000000000000000
        00000000                  | dataLength 0
        00000000 0000000000000001");
    let r = Response::read(OpCode::GetData, &mut Reader::new(&null_reply)).unwrap();
    let Response::GetData(r) = r else {
        panic!("not a GetDataResponse: {r:?}");
    };
    assert_eq!(r.data, None);
    let mut out = BytesMut::new();
    Response::GetData(r.clone()).write(&mut out);
    assert_eq!(&out[..], &null_reply[..]);

    let mut empty = null_reply.clone();
    empty[..4].copy_from_slice(&0i32.to_be_bytes());
    let e = Response::read(OpCode::GetData, &mut Reader::new(&empty)).unwrap();
    assert_eq!(
        e,
        Response::GetData(GetDataResponse {
            data: Some(Vec::new()),
            ..r
        })
    );

    for (data, prefix) in [(None, -1i32), (Some(Vec::new()), 0)] {
        let req = SetDataRequest {
            path: "/n".into(),
            data,
            version: -1,
        };
        let bytes = req.to_bytes();
        // After the path: 4-byte length + "/n".
        assert_eq!(&bytes[6..10], &prefix.to_be_bytes());
        assert_eq!(SetDataRequest::from_bytes(&bytes), Ok(req));
    }
}
