//! Microbenchmarks of the wire format: record encode/decode and frame splitting.
//! Run: `cargo bench -p rookery-bench --bench codec` (add `-- --quick` for a short run).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rookery_protocol::codec::write_frame;
use rookery_protocol::{
    encode_reply, perms, Acl, CheckVersionRequest, CreateRequest, DeleteRequest, Frame, FrameCodec,
    GetDataResponse, Id, MultiOp, OpCode, Reader, Record, ReplyHeader, Request, Response,
    SetDataRequest, Stat, DEFAULT_MAX_FRAME,
};
use tokio_util::codec::Decoder;

fn stat() -> Stat {
    Stat {
        czxid: 0x1_0000_0001,
        mzxid: 0x1_0000_0a2f,
        ctime: 1_700_000_000_000,
        mtime: 1_700_000_123_456,
        version: 7,
        cversion: 3,
        aversion: 0,
        ephemeral_owner: 0,
        data_length: 100,
        num_children: 2,
        pzxid: 0x1_0000_0a30,
    }
}

fn acl() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

fn create_request(i: usize) -> CreateRequest {
    CreateRequest {
        path: format!("/bench-0001/c0-0/n{i}"),
        data: Some(vec![b'x'; 100]),
        acl: acl(),
        flags: 0,
    }
}

fn multi_100() -> Request {
    let ops = (0..100)
        .map(|i| match i % 4 {
            0 => MultiOp::Create {
                op: OpCode::Create,
                req: create_request(i),
            },
            1 => MultiOp::SetData(SetDataRequest {
                path: format!("/bench-0001/k/k{i}"),
                data: Some(vec![b'y'; 100]),
                version: -1,
            }),
            2 => MultiOp::Check(CheckVersionRequest {
                path: format!("/bench-0001/k/k{i}"),
                version: 3,
            }),
            _ => MultiOp::Delete(DeleteRequest {
                path: format!("/bench-0001/e/s{i}"),
                version: -1,
            }),
        })
        .collect();
    Request::Multi(ops)
}

fn records(c: &mut Criterion) {
    let mut g = c.benchmark_group("records");

    let create = Request::Create {
        op: OpCode::Create,
        req: create_request(42),
    };
    let mut buf = BytesMut::with_capacity(4096);
    g.bench_function("create_request/encode", |b| {
        b.iter(|| {
            buf.clear();
            write_frame(&mut buf, |out| black_box(&create).encode_packet(7, out));
            black_box(buf.len())
        })
    });
    let mut packet = BytesMut::new();
    create.encode_packet(7, &mut packet);
    g.bench_function("create_request/decode", |b| {
        b.iter(|| Request::decode_packet(black_box(&packet)).unwrap())
    });

    let header = ReplyHeader {
        xid: 7,
        zxid: 0x1_0000_0a2f,
        err: 0,
    };
    let get = Response::GetData(GetDataResponse {
        data: Some(vec![b'x'; 100]),
        stat: stat(),
    });
    g.bench_function("get_data_response_100b/encode", |b| {
        b.iter(|| {
            buf.clear();
            write_frame(&mut buf, |out| encode_reply(&header, black_box(&get), out));
            black_box(buf.len())
        })
    });
    let mut reply = BytesMut::new();
    encode_reply(&header, &get, &mut reply);
    g.bench_function("get_data_response_100b/decode", |b| {
        b.iter(|| {
            let mut input = Reader::new(black_box(&reply));
            let h = ReplyHeader::read(&mut input).unwrap();
            let r = Response::read(OpCode::GetData, &mut input).unwrap();
            (h, r)
        })
    });

    let s = stat();
    g.bench_function("stat/encode", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&s).write(&mut buf);
            black_box(buf.len())
        })
    });
    let stat_bytes = s.to_bytes();
    g.bench_function("stat/decode", |b| {
        b.iter(|| Stat::from_bytes(black_box(&stat_bytes)).unwrap())
    });

    let multi = multi_100();
    let mut multi_bytes = BytesMut::new();
    multi.encode_packet(9, &mut multi_bytes);
    g.throughput(Throughput::Bytes(multi_bytes.len() as u64));
    g.bench_function("multi_100_ops/encode", |b| {
        b.iter(|| {
            buf.clear();
            write_frame(&mut buf, |out| black_box(&multi).encode_packet(9, out));
            black_box(buf.len())
        })
    });
    g.bench_function("multi_100_ops/decode", |b| {
        b.iter(|| Request::decode_packet(black_box(&multi_bytes)).unwrap())
    });
    g.finish();
}

fn frames(c: &mut Criterion) {
    // 1,000 getData replies back to back, as a client reads them off a pipelined session.
    const N: usize = 1000;
    let header = ReplyHeader {
        xid: 0,
        zxid: 1,
        err: 0,
    };
    let get = Response::GetData(GetDataResponse {
        data: Some(vec![b'x'; 100]),
        stat: stat(),
    });
    let mut stream = BytesMut::new();
    for xid in 0..N as i32 {
        write_frame(&mut stream, |out| {
            encode_reply(
                &ReplyHeader {
                    xid,
                    ..header.clone()
                },
                &get,
                out,
            )
        });
    }
    let mut g = c.benchmark_group("frame_codec");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("split_1000_frames", |b| {
        b.iter_batched_ref(
            || (stream.clone(), FrameCodec::client(DEFAULT_MAX_FRAME)),
            |(buf, codec)| {
                let mut n = 0;
                while let Some(frame) = codec.decode(buf).unwrap() {
                    if let Frame::Packet(p) = frame {
                        n += p.len();
                    }
                }
                black_box(n)
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("split_and_decode_1000_replies", |b| {
        b.iter_batched_ref(
            || (stream.clone(), FrameCodec::client(DEFAULT_MAX_FRAME)),
            |(buf, codec)| {
                let mut n = 0;
                while let Some(Frame::Packet(p)) = codec.decode(buf).unwrap() {
                    let mut input = Reader::new(&p);
                    let h = ReplyHeader::read(&mut input).unwrap();
                    let r = Response::read(OpCode::GetData, &mut input).unwrap();
                    n += h.xid as usize + matches!(r, Response::GetData(_)) as usize;
                }
                black_box(n)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, records, frames);
criterion_main!(benches);
