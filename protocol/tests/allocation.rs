//! Decoding hostile input never allocates more than a small multiple of the input: measured
//! with a counting global allocator that only watches the thread being measured.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{BufMut, BytesMut};
use rookery_protocol::*;
use tokio_util::codec::Decoder;

/// Largest single allocation seen on a measuring thread since the last reset.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread is being measured (the test harness allocates on other threads).
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

fn record(size: usize) {
    if MEASURING.with(Cell::get) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

struct Counting;

// SAFETY: forwards to the system allocator; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Serializes the tests of this binary: `LARGEST` is shared.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` and returns the largest single allocation it made. Tests in this binary take
/// `SERIAL` so they do not reset each other's maximum.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.store(0, Ordering::Relaxed);
    MEASURING.with(|m| m.set(true));
    f();
    MEASURING.with(|m| m.set(false));
    LARGEST.load(Ordering::Relaxed)
}

/// Inputs whose length prefixes claim far more than they hold, in every position a length can be.
fn hostile_inputs() -> Vec<Vec<u8>> {
    let huge = [i32::MAX, 0x0fff_ffff, 0x00ff_ffff, 65_536];
    let mut inputs = Vec::new();
    for len in huge {
        for prefix in 0..40usize {
            let mut b = BytesMut::new();
            for i in 0..prefix {
                // Some all-zero words (empty strings, zero counts) then the huge length.
                b.put_u8(if i % 9 == 4 { 1 } else { 0 });
            }
            b.put_i32(len);
            b.put_slice(&[0u8; 24]);
            inputs.push(b.to_vec());
        }
    }
    inputs
}

#[test]
fn hostile_lengths_do_not_allocate_beyond_the_input() {
    let _serial = SERIAL.lock();
    let inputs = hostile_inputs();
    // Generous bound: a decoded element (e.g. a String, 24 bytes) per 4 input bytes.
    let bound = |input: &[u8]| 4096 + input.len() * 16;
    for input in &inputs {
        for op in OpCode::ALL {
            let packet = {
                let mut p = BytesMut::new();
                RequestHeader {
                    xid: 1,
                    op_type: op.wire(),
                }
                .write(&mut p);
                p.put_slice(input);
                p
            };
            let largest = largest_allocation(|| {
                let _ = Request::decode_packet(&packet);
            });
            assert!(
                largest <= bound(&packet),
                "request {op:?}: {largest} bytes, packet {packet:02x?}"
            );
            let largest = largest_allocation(|| {
                let _ = Response::read(*op, &mut Reader::new(input));
            });
            assert!(largest <= bound(input), "response {op:?}: {largest} bytes");
        }
        let largest = largest_allocation(|| {
            let _ = ConnectRequest::from_bytes(input);
            let _ = ConnectResponse::from_bytes(input);
            let _ = SetWatches2::from_bytes(input);
            let _ = GetAclResponse::from_bytes(input);
            let _ = WhoAmIResponse::from_bytes(input);
            let _ = Vec::<Vec<String>>::from_bytes(input);
        });
        assert!(largest <= bound(input), "records: {largest} bytes");
    }
}

#[test]
fn huge_frame_length_does_not_reserve() {
    let _serial = SERIAL.lock();
    for len in [u32::MAX, i32::MAX as u32, 0x0010_0000] {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u32(len);
        buf.put_slice(b"xyz");
        let mut codec = FrameCodec::server(DEFAULT_MAX_FRAME);
        let largest = largest_allocation(|| {
            assert!(codec.decode(&mut buf).is_err());
        });
        assert!(largest < 4096, "{len:#x}: {largest} bytes");
    }
}
