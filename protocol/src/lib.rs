//! ZooKeeper's client wire protocol: jute records, opcodes, error codes and the frame codec.
//!
//! Nothing here does I/O beyond the tokio-util codec, so the crate is easy to fuzz and to
//! share between the server, the client library and the benchmarks.

pub mod codec;
pub mod consts;
pub mod fourlw;
pub mod jute;
pub mod message;
pub mod records;

pub use codec::{write_frame, Frame, FrameCodec, DEFAULT_MAX_FRAME};
pub use consts::*;
pub use fourlw::FourLetterWord;
pub use jute::{DecodeError, Reader, Record};
pub use message::{encode_reply, MultiOp, MultiResult, Request, Response};
pub use records::*;
