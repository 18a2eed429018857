//! A slog drain that forwards raft-rs log records to `tracing`, so Raft's own messages
//! (elections, conf changes, rejections) land in the same log stream as ours.

use std::fmt::{self, Write as _};

use slog::{Drain, Level, OwnedKVList, Record, KV};

/// Forwards each record as one `tracing` event with target `raft`.
pub struct TracingDrain;

/// Collects slog key-values as `key=value` pairs in a string.
struct KvString(String);

impl slog::Serializer for KvString {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments<'_>) -> slog::Result {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        // Writing to a String cannot fail.
        let _ = write!(self.0, "{key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut kv = KvString(String::new());
        // Serialization into a String only fails if a value's Display impl fails; then the
        // message is still worth logging without its fields.
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let msg = record.msg();
        let kv = kv.0;
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{msg} {kv}"),
            Level::Warning => tracing::warn!(target: "raft", "{msg} {kv}"),
            Level::Info => tracing::info!(target: "raft", "{msg} {kv}"),
            Level::Debug => tracing::debug!(target: "raft", "{msg} {kv}"),
            Level::Trace => tracing::trace!(target: "raft", "{msg} {kv}"),
        }
        Ok(())
    }
}

/// Root logger handed to `RawNode::new`.
pub fn logger(node_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("raft_id" => node_id))
}
