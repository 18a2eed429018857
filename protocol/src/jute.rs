//! Jute, ZooKeeper's binary serialization: big-endian integers, length-prefixed buffers,
//! strings and vectors, where a length of -1 means null.

use bytes::{BufMut, BytesMut};

/// Why a byte sequence is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before the record did.
    #[error("unexpected end of input: needed {needed} more bytes")]
    UnexpectedEof {
        /// How many more bytes the record needed.
        needed: usize,
    },
    /// A length prefix is negative (other than -1) or larger than what is left.
    #[error("invalid length {0}")]
    InvalidLength(i32),
    /// A ustring holds bytes that are not UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// The opcode is not one this protocol knows.
    #[error("unknown opcode {0}")]
    UnknownOpCode(i32),
    /// A field holds a value outside its domain (for example an unknown CreateMode).
    #[error("invalid value {value} for {field}")]
    InvalidValue {
        /// The field's name.
        field: &'static str,
        /// The value found.
        value: i64,
    },
    /// The record was decoded but bytes are left over.
    #[error("{0} trailing bytes after record")]
    TrailingBytes(usize),
}

/// A cursor over a received frame.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    /// The bytes not consumed yet.
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not consumed yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Whether everything was consumed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails if anything is left: a record followed by garbage is malformed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }

    /// The next `n` bytes, or UnexpectedEof.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::UnexpectedEof {
                needed: n - self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A big-endian int.
    pub fn read_i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    /// A big-endian long.
    pub fn read_i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A one-byte boolean.
    pub fn read_bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.take(1)?[0] != 0)
    }

    /// A length prefix: -1 is null (`None`); anything else must fit in what is left,
    /// so a hostile length never makes us allocate.
    fn read_len(&mut self, min_elem_size: usize) -> Result<Option<usize>, DecodeError> {
        let len = self.read_i32()?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return Err(DecodeError::InvalidLength(len));
        }
        let n = len as usize;
        if n.saturating_mul(min_elem_size) > self.buf.len() {
            return Err(DecodeError::InvalidLength(len));
        }
        Ok(Some(n))
    }

    /// A jute buffer; null decodes as empty. For znode data, where null and empty differ,
    /// use [`Reader::read_opt_buffer`].
    pub fn read_buffer(&mut self) -> Result<Vec<u8>, DecodeError> {
        Ok(self.read_opt_buffer()?.unwrap_or_default())
    }

    /// A jute buffer that keeps null (-1) apart from empty (0): ZooKeeper stores and returns
    /// a znode's data as null if it was created or set with null.
    pub fn read_opt_buffer(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        match self.read_len(1)? {
            None => Ok(None),
            Some(n) => Ok(Some(self.take(n)?.to_vec())),
        }
    }

    /// A jute ustring; null decodes as empty.
    pub fn read_string(&mut self) -> Result<String, DecodeError> {
        match self.read_len(1)? {
            None => Ok(String::new()),
            Some(n) => {
                let bytes = self.take(n)?;
                std::str::from_utf8(bytes)
                    .map(str::to_owned)
                    .map_err(|_| DecodeError::InvalidUtf8)
            }
        }
    }

    /// A jute vector's element count; null decodes as zero elements.
    pub fn read_vec_len(&mut self, min_elem_size: usize) -> Result<usize, DecodeError> {
        Ok(self.read_len(min_elem_size.max(1))?.unwrap_or(0))
    }
}

/// A value with a jute encoding.
pub trait Record: Sized {
    /// Smallest encoded size; bounds vector lengths before allocating.
    const MIN_SIZE: usize;
    /// Appends the jute encoding.
    fn write(&self, out: &mut BytesMut);
    /// Decodes one value, checking every length against what is left.
    fn read(input: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Encodes into a fresh buffer.
    fn to_bytes(&self) -> BytesMut {
        let mut out = BytesMut::new();
        self.write(&mut out);
        out
    }

    /// Decodes a whole buffer, rejecting trailing bytes.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = Reader::new(bytes);
        let value = Self::read(&mut input)?;
        input.finish()?;
        Ok(value)
    }
}

impl Record for i32 {
    const MIN_SIZE: usize = 4;
    fn write(&self, out: &mut BytesMut) {
        out.put_i32(*self);
    }
    fn read(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        input.read_i32()
    }
}

impl Record for i64 {
    const MIN_SIZE: usize = 8;
    fn write(&self, out: &mut BytesMut) {
        out.put_i64(*self);
    }
    fn read(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        input.read_i64()
    }
}

impl Record for bool {
    const MIN_SIZE: usize = 1;
    fn write(&self, out: &mut BytesMut) {
        out.put_u8(u8::from(*self));
    }
    fn read(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        input.read_bool()
    }
}

impl Record for String {
    const MIN_SIZE: usize = 4;
    fn write(&self, out: &mut BytesMut) {
        out.put_i32(self.len() as i32);
        out.put_slice(self.as_bytes());
    }
    fn read(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        input.read_string()
    }
}

/// A nullable length-prefixed value: the value, or length -1 (Java's `null`).
fn write_nullable<T: Record>(value: &Option<T>, out: &mut BytesMut) {
    match value {
        Some(v) => v.write(out),
        None => out.put_i32(-1),
    }
}

/// A nullable jute `ustring`: `None` is written as length -1 (Java's `null`), which
/// ZooKeeper keeps apart from "" where it matters (a reconfig's `newMembers`: null means an
/// incremental change, "" an empty member list).
impl Record for Option<String> {
    const MIN_SIZE: usize = 4;
    fn write(&self, out: &mut BytesMut) {
        write_nullable(self, out);
    }
    fn read(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match input.read_len(1)? {
            None => Ok(None),
            Some(n) => {
                let bytes = input.take(n)?;
                std::str::from_utf8(bytes)
                    .map(|s| Some(s.to_owned()))
                    .map_err(|_| DecodeError::InvalidUtf8)
            }
        }
    }
}

/// `Vec<u8>` is a jute `buffer`, not a vector of bytes.
impl Record for Vec<u8> {
    const MIN_SIZE: usize = 4;
    fn write(&self, out: &mut BytesMut) {
        out.put_i32(self.len() as i32);
        out.put_slice(self);
    }
    fn read(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        input.read_buffer()
    }
}

/// A nullable jute `buffer`: `None` is written as length -1 (Java's `null`), as ZooKeeper
/// does for znode data created or set with null.
impl Record for Option<Vec<u8>> {
    const MIN_SIZE: usize = 4;
    fn write(&self, out: &mut BytesMut) {
        write_nullable(self, out);
    }
    fn read(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        input.read_opt_buffer()
    }
}

impl<T: Record> Record for Vec<T> {
    const MIN_SIZE: usize = 4;
    fn write(&self, out: &mut BytesMut) {
        out.put_i32(self.len() as i32);
        for item in self {
            item.write(out);
        }
    }
    fn read(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = input.read_vec_len(T::MIN_SIZE)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(T::read(input)?);
        }
        Ok(items)
    }
}

/// Declares a jute record: a struct whose fields are encoded in declaration order.
#[macro_export]
macro_rules! jute_record {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[doc = concat!("\n\nThe `", stringify!($name), "` record of zookeeper.jute.")]
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name { $($(#[$fmeta])* #[doc = concat!("The `", stringify!($field), "` field, as zookeeper.jute orders it.")] pub $field: $ty),* }

        impl $crate::jute::Record for $name {
            const MIN_SIZE: usize = 0 $(+ <$ty as $crate::jute::Record>::MIN_SIZE)*;
            #[allow(unused_variables)]
            fn write(&self, out: &mut ::bytes::BytesMut) {
                $($crate::jute::Record::write(&self.$field, out);)*
            }
            #[allow(unused_variables)]
            fn read(input: &mut $crate::jute::Reader<'_>) -> Result<Self, $crate::jute::DecodeError> {
                Ok($name { $($field: $crate::jute::Record::read(input)?),* })
            }
        }
    };
}
