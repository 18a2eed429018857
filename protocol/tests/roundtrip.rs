//! encode → decode → equal, for every record, request, response and multi shape.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod common;

use bytes::BytesMut;
use common::*;
use proptest::prelude::*;
use rookery_protocol::*;

/// Encodes, checks MIN_SIZE is a true lower bound (it bounds vector lengths before
/// allocating, so an overestimate would reject valid input), decodes and compares.
fn roundtrip<T: Record + PartialEq + std::fmt::Debug>(value: &T) -> Result<(), TestCaseError> {
    let bytes = value.to_bytes();
    prop_assert!(
        bytes.len() >= T::MIN_SIZE,
        "{} bytes < MIN_SIZE {}",
        bytes.len(),
        T::MIN_SIZE
    );
    let decoded = T::from_bytes(&bytes);
    prop_assert_eq!(decoded.as_ref(), Ok(value));
    // Every proper prefix is an error, never a panic (ConnectRequest/Response are the
    // exception: dropping their optional trailing byte is a valid shorter record).
    for cut in 0..bytes.len() {
        let _ = T::from_bytes(&bytes[..cut]);
    }
    Ok(())
}

/// One proptest per record type, named after its strategy.
macro_rules! record_roundtrip {
    ($strategy:ident, $ty:ident) => {
        proptest! {
            #[test]
            fn $strategy(value in common::$strategy()) {
                let value: $ty = value;
                roundtrip(&value)?;
            }
        }
    };
}

mod records {
    use super::*;
    for_each_record!(record_roundtrip);
}

proptest! {
    #[test]
    fn connect_request_with_and_without_read_only(mut req in connect_request(), ro in any::<bool>()) {
        req.read_only = None;
        let without = req.to_bytes();
        prop_assert_eq!(without.len(), 28 + req.passwd.len());
        prop_assert_eq!(ConnectRequest::from_bytes(&without), Ok(req.clone()));
        req.read_only = Some(ro);
        let with = req.to_bytes();
        prop_assert_eq!(with.len(), without.len() + 1);
        prop_assert_eq!(&with[..without.len()], &without[..]);
        prop_assert_eq!(ConnectRequest::from_bytes(&with), Ok(req));
    }

    #[test]
    fn connect_response_with_and_without_read_only(mut rsp in connect_response(), ro in any::<bool>()) {
        rsp.read_only = None;
        let without = rsp.to_bytes();
        prop_assert_eq!(without.len(), 20 + rsp.passwd.len());
        prop_assert_eq!(ConnectResponse::from_bytes(&without), Ok(rsp.clone()));
        rsp.read_only = Some(ro);
        let with = rsp.to_bytes();
        prop_assert_eq!(with.len(), without.len() + 1);
        prop_assert_eq!(ConnectResponse::from_bytes(&with), Ok(rsp));
    }

    #[test]
    fn request_packets(req in request(), xid in any::<i32>()) {
        let mut out = BytesMut::new();
        req.encode_packet(xid, &mut out);
        let (header, decoded) = Request::decode_packet(&out)?;
        prop_assert_eq!(header, RequestHeader { xid, op_type: req.op_code().wire() });
        prop_assert_eq!(&decoded, &req);
        // The body is consumed exactly.
        let mut input = Reader::new(&out);
        let header = RequestHeader::read(&mut input)?;
        Request::read_body(header.op_type, &mut input)?;
        prop_assert!(input.finish().is_ok());
        // write_body is the packet minus its 8-byte header.
        let mut body = BytesMut::new();
        req.write_body(&mut body);
        prop_assert_eq!(&out[8..], &body[..]);
    }

    #[test]
    fn multi_requests(ops in prop::collection::vec(multi_op(), 0..12), read in any::<bool>()) {
        let req = if read { Request::MultiRead(ops) } else { Request::Multi(ops) };
        let mut out = BytesMut::new();
        req.encode_packet(7, &mut out);
        prop_assert_eq!(Request::decode_packet(&out)?.1, req);
        // Terminated by MultiHeader {-1, true, -1}.
        prop_assert_eq!(&out[out.len() - 9..], &[0xff, 0xff, 0xff, 0xff, 1, 0xff, 0xff, 0xff, 0xff][..]);
    }

    #[test]
    fn responses((op, rsp) in response(), xid in any::<i32>(), zxid in any::<i64>()) {
        let header = ReplyHeader { xid, zxid, err: 0 };
        let mut out = BytesMut::new();
        encode_reply(&header, &rsp, &mut out);
        let mut input = Reader::new(&out);
        prop_assert_eq!(ReplyHeader::read(&mut input)?, header);
        prop_assert_eq!(Response::read(op, &mut input)?, rsp);
        prop_assert!(input.finish().is_ok());
    }

    #[test]
    fn error_replies_have_no_body((_, rsp) in response(), code in error_code()) {
        prop_assume!(code != ErrorCode::Ok);
        let header = ReplyHeader { xid: 3, zxid: 9, err: code.wire() };
        let mut out = BytesMut::new();
        encode_reply(&header, &rsp, &mut out);
        prop_assert_eq!(out.len(), 16);
        prop_assert_eq!(ReplyHeader::from_bytes(&out), Ok(header));
    }

    #[test]
    fn multi_results(results in prop::collection::vec(multi_result(), 0..12)) {
        let rsp = Response::Multi(results);
        for op in [OpCode::Multi, OpCode::MultiRead] {
            let mut input_bytes = BytesMut::new();
            rsp.write(&mut input_bytes);
            let mut input = Reader::new(&input_bytes);
            prop_assert_eq!(Response::read(op, &mut input)?, rsp.clone());
            prop_assert!(input.is_empty());
        }
    }

    #[test]
    fn set_watches_converts_to_set_watches2(w in set_watches()) {
        let w2 = SetWatches2::from(w.clone());
        prop_assert_eq!(w2.relative_zxid, w.relative_zxid);
        prop_assert_eq!(&w2.data_watches, &w.data_watches);
        prop_assert_eq!(&w2.exist_watches, &w.exist_watches);
        prop_assert_eq!(&w2.child_watches, &w.child_watches);
        prop_assert!(w2.persistent_watches.is_empty());
        prop_assert!(w2.persistent_recursive_watches.is_empty());
    }
}

#[test]
fn every_opcode_a_client_sends_has_a_request_variant() {
    // Opcodes only the server produces (notification, createSession, error) are rejected.
    for op in OpCode::ALL {
        let mut packet = BytesMut::new();
        RequestHeader {
            xid: 1,
            op_type: op.wire(),
        }
        .write(&mut packet);
        let decoded = Request::decode_packet(&packet);
        match op {
            OpCode::Notification | OpCode::CreateSession | OpCode::Error => {
                assert_eq!(
                    decoded,
                    Err(DecodeError::UnknownOpCode(op.wire())),
                    "{op:?}"
                );
            }
            OpCode::Ping | OpCode::WhoAmI | OpCode::CloseSession => {
                assert_eq!(decoded.map(|(_, r)| r.op_code()), Ok(*op));
            }
            // Everything else has a body, so a bare header is a short read.
            _ => assert!(
                matches!(decoded, Err(DecodeError::UnexpectedEof { .. })),
                "{op:?}: {decoded:?}"
            ),
        }
    }
}
