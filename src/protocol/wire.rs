//! Kafka wire primitives: a bounds-checked, zero-copy [`Reader`] over one request/response frame
//! and a [`Writer`] that can hand large byte fields (record sets) out as shared chunks.
//!
//! Invariants:
//! - Every length or count read from the wire is checked against the bytes remaining in the frame
//!   *before* anything is allocated or sliced. A count can never exceed the remaining bytes
//!   (each element takes at least one byte), so a 23-byte frame claiming 2^31 elements fails with
//!   [`DecodeError::LengthTooLarge`] at once instead of reserving gigabytes.
//! - Nothing here panics on any input; every failure is a [`DecodeError`].
//! - `read_bytes` returns a `Bytes` slice of the frame: record payloads are never copied.
//! - The `Writer` never fails: encoding a value we built ourselves cannot be "invalid". Lengths that
//!   do not fit the wire type (over 2 GiB) are a programming error and are saturated, not panicked.

use bytes::{BufMut, Bytes, BytesMut};

use super::record_set::RecordSet;

/// Why a frame could not be decoded. Mapped to a closed connection or INVALID_REQUEST by the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: needed {needed} bytes, {remaining} remaining")]
    Truncated { needed: usize, remaining: usize },
    #[error("negative length {0}")]
    NegativeLength(i64),
    #[error("length or count {len} exceeds the {remaining} bytes remaining")]
    LengthTooLarge { len: u64, remaining: usize },
    #[error("invalid UTF-8 in string")]
    InvalidUtf8,
    #[error("invalid varint (more than {0} bytes)")]
    InvalidVarint(usize),
    #[error("unsupported version {version} for api key {api_key}")]
    UnsupportedVersion { api_key: i16, version: i16 },
    /// Kafka defines no such api key (the server closes the connection).
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    /// A Kafka api key this codec does not implement.
    #[error("api key {0} not implemented")]
    UnsupportedApiKey(i16),
    #[error("{0} trailing bytes after message")]
    TrailingBytes(usize),
}

/// Cursor over one frame. Cloning a `Reader` is cheap (the frame is reference counted).
#[derive(Debug, Clone)]
pub struct Reader {
    frame: Bytes,
    pos: usize,
}

/// `Bytes` fields at least this large are emitted as separate shared chunks by the [`Writer`];
/// smaller ones are copied (a chunk costs more than copying a few KiB).
pub const SHARED_CHUNK_MIN: usize = 4096;

macro_rules! read_be {
    ($name:ident, $t:ty) => {
        #[inline]
        pub fn $name(&mut self) -> Result<$t, DecodeError> {
            const N: usize = std::mem::size_of::<$t>();
            let s = self.take(N)?;
            let mut a = [0u8; N];
            a.copy_from_slice(s);
            Ok(<$t>::from_be_bytes(a))
        }
    };
}

impl Reader {
    pub fn new(frame: Bytes) -> Self {
        Reader { frame, pos: 0 }
    }

    /// Bytes not yet consumed.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.frame.len() - self.pos
    }

    /// Position from the start of the frame (for error reports).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Everything not yet consumed, without consuming it (zero-copy).
    pub fn rest(&self) -> Bytes {
        self.frame.slice(self.pos..)
    }

    /// Fails with `TrailingBytes` unless the frame is fully consumed.
    pub fn expect_end(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(DecodeError::Truncated {
                needed: n,
                remaining,
            });
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.frame[start..start + n])
    }

    read_be!(read_i8, i8);
    read_be!(read_i16, i16);
    read_be!(read_i32, i32);
    read_be!(read_i64, i64);
    read_be!(read_u16, u16);
    read_be!(read_u32, u32);
    read_be!(read_f64, f64);

    pub fn read_bool(&mut self) -> Result<bool, DecodeError> {
        // Kafka treats any non-zero byte as true.
        Ok(self.read_i8()? != 0)
    }

    pub fn read_uuid(&mut self) -> Result<[u8; 16], DecodeError> {
        let s = self.take(16)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Unsigned LEB128 varint, at most 5 bytes (32 bits).
    pub fn read_uvarint(&mut self) -> Result<u32, DecodeError> {
        let v = self.read_uvarlong_max(5)?;
        u32::try_from(v).map_err(|_| DecodeError::InvalidVarint(5))
    }

    /// Unsigned LEB128 varlong, at most 10 bytes (64 bits).
    pub fn read_uvarlong(&mut self) -> Result<u64, DecodeError> {
        self.read_uvarlong_max(10)
    }

    fn read_uvarlong_max(&mut self, max_bytes: usize) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let b = self.read_i8()? as u8;
            let shift = 7 * i as u32;
            let bits = u64::from(b & 0x7f);
            // The last allowed byte may only carry the bits that still fit.
            if shift == 63 && bits > 1 {
                return Err(DecodeError::InvalidVarint(max_bytes));
            }
            value |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::InvalidVarint(max_bytes))
    }

    /// Signed zigzag varint (32 bits), as used inside record batches.
    pub fn read_varint(&mut self) -> Result<i32, DecodeError> {
        let u = self.read_uvarint()?;
        Ok(((u >> 1) as i32) ^ -((u & 1) as i32))
    }

    /// Signed zigzag varlong (64 bits).
    pub fn read_varlong(&mut self) -> Result<i64, DecodeError> {
        let u = self.read_uvarlong()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// Checks that `len` bytes (or elements of at least one byte) can still follow.
    #[inline]
    fn check_len(&self, len: u64) -> Result<usize, DecodeError> {
        let remaining = self.remaining();
        if len > remaining as u64 {
            return Err(DecodeError::LengthTooLarge { len, remaining });
        }
        Ok(len as usize)
    }

    /// `n` bytes as a zero-copy slice of the frame.
    pub fn read_bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let n = self.check_len(n as u64)?;
        let start = self.pos;
        self.pos += n;
        Ok(self.frame.slice(start..start + n))
    }

    /// A sub-reader over the next `n` bytes (used for tagged field values); consumes them here.
    pub fn sub_reader(&mut self, n: usize) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.read_bytes(n)?))
    }

    /// Length prefix: i16/i32 classic (`-1` = null) or compact uvarint (`0` = null, else len+1).
    /// Returns `None` for null; the length is checked against the remaining bytes.
    fn read_len(&mut self, flexible: bool, wide: bool) -> Result<Option<usize>, DecodeError> {
        let len: i64 = if flexible {
            i64::from(self.read_uvarint()?) - 1
        } else if wide {
            i64::from(self.read_i32()?)
        } else {
            i64::from(self.read_i16()?)
        };
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return Err(DecodeError::NegativeLength(len));
        }
        Ok(Some(self.check_len(len as u64)?))
    }

    fn utf8(b: Bytes) -> Result<String, DecodeError> {
        match std::str::from_utf8(&b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(DecodeError::InvalidUtf8),
        }
    }

    /// Nullable string: i16 length (`flexible = false`) or compact uvarint length+1.
    pub fn read_nullable_string(&mut self, flexible: bool) -> Result<Option<String>, DecodeError> {
        match self.read_len(flexible, false)? {
            None => Ok(None),
            Some(n) => Ok(Some(Self::utf8(self.read_bytes(n)?)?)),
        }
    }

    /// Non-nullable string; a null on the wire is rejected as a negative length.
    pub fn read_string(&mut self, flexible: bool) -> Result<String, DecodeError> {
        self.read_nullable_string(flexible)?
            .ok_or(DecodeError::NegativeLength(-1))
    }

    /// Nullable bytes (also `records`): i32 length or compact uvarint length+1. Zero-copy.
    pub fn read_nullable_bytes(&mut self, flexible: bool) -> Result<Option<Bytes>, DecodeError> {
        match self.read_len(flexible, true)? {
            None => Ok(None),
            Some(n) => Ok(Some(self.read_bytes(n)?)),
        }
    }

    /// Non-nullable bytes; a null on the wire is rejected as a negative length.
    pub fn read_bytes_field(&mut self, flexible: bool) -> Result<Bytes, DecodeError> {
        self.read_nullable_bytes(flexible)?
            .ok_or(DecodeError::NegativeLength(-1))
    }

    /// Array element count (i32, or compact uvarint count+1); `None` = null array.
    /// The count is checked against the remaining bytes: every element takes at least one byte.
    pub fn read_array_len(&mut self, flexible: bool) -> Result<Option<usize>, DecodeError> {
        self.read_len(flexible, true)
    }

    /// Nullable array whose elements are read by `f`. Pre-allocation is capped so a hostile
    /// count costs at most a bounded reservation before the elements actually arrive.
    pub fn read_nullable_array<T>(
        &mut self,
        flexible: bool,
        mut f: impl FnMut(&mut Reader) -> Result<T, DecodeError>,
    ) -> Result<Option<Vec<T>>, DecodeError> {
        let Some(n) = self.read_array_len(flexible)? else {
            return Ok(None);
        };
        let mut v = Vec::with_capacity(n.min(PREALLOC_ELEMENTS_MAX));
        for _ in 0..n {
            v.push(f(self)?);
        }
        Ok(Some(v))
    }

    /// Non-nullable array; a null on the wire is rejected as a negative length.
    pub fn read_array<T>(
        &mut self,
        flexible: bool,
        f: impl FnMut(&mut Reader) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        self.read_nullable_array(flexible, f)?
            .ok_or(DecodeError::NegativeLength(-1))
    }

    /// Tagged-field section: count, then (tag, size, value) each. `f(tag, value_reader)` returns
    /// `Ok(true)` when it consumed a known tag; unknown tags are skipped (their bytes ignored).
    pub fn read_tagged_fields(
        &mut self,
        mut f: impl FnMut(u32, &mut Reader) -> Result<bool, DecodeError>,
    ) -> Result<(), DecodeError> {
        let n = self.read_uvarint()?;
        self.check_len(u64::from(n))?;
        for _ in 0..n {
            let tag = self.read_uvarint()?;
            let size = self.read_uvarint()?;
            let size = self.check_len(u64::from(size))?;
            let mut sub = self.sub_reader(size)?;
            f(tag, &mut sub)?;
        }
        Ok(())
    }
}

/// Upper bound on elements reserved up front for one array; beyond it the `Vec` grows as real
/// elements are decoded. Keeps a hostile count from turning a small frame into a large allocation
/// (count <= remaining bytes, but element structs are much larger than one byte).
const PREALLOC_ELEMENTS_MAX: usize = 1024;

/// Appends an encoding to a buffer; large shared `Bytes` fields become separate chunks so a
/// Fetch response can point at cached buffers instead of copying them. The pieces written
/// between shared chunks are split off one allocation (sized by `with_capacity`), not one each.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: BytesMut,
    /// Completed chunks, in order, before `buf`.
    chunks: Vec<Bytes>,
    /// Total length of `chunks`.
    chunks_len: usize,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: BytesMut::with_capacity(n),
            chunks: Vec::new(),
            chunks_len: 0,
        }
    }

    /// Total bytes written so far (chunks included): the frame size prefix.
    pub fn len(&self) -> usize {
        self.chunks_len + self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoding as a list of chunks to be written in order (e.g. with writev).
    pub fn finish(mut self) -> Vec<Bytes> {
        self.flush_buf();
        self.chunks
    }

    /// The encoding as one contiguous buffer (copies shared chunks, if any).
    pub fn into_vec(self) -> Vec<u8> {
        if self.chunks.is_empty() {
            return self.buf.into();
        }
        let mut out = Vec::with_capacity(self.len());
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        out.extend_from_slice(&self.buf);
        out
    }

    fn flush_buf(&mut self) {
        if !self.buf.is_empty() {
            // The rest of the allocation stays with `buf` for the next piece.
            let b = self.buf.split().freeze();
            self.chunks_len += b.len();
            self.chunks.push(b);
        }
    }

    /// Appends everything `other` wrote, keeping its shared chunks shared.
    pub fn append(&mut self, other: Writer) {
        if other.chunks.is_empty() {
            self.buf.extend_from_slice(&other.buf);
            return;
        }
        for c in other.finish() {
            self.put_bytes_shared(c);
        }
    }

    pub fn put_raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// Appends `b` without copying when it is large (>= [`SHARED_CHUNK_MIN`]); small slices are
    /// copied since a separate chunk would cost more than the copy.
    pub fn put_bytes_shared(&mut self, b: Bytes) {
        if b.len() < SHARED_CHUNK_MIN {
            self.buf.extend_from_slice(&b);
        } else {
            self.flush_buf();
            self.chunks_len += b.len();
            self.chunks.push(b);
        }
    }

    pub fn put_i8(&mut self, v: i8) {
        self.buf.put_u8(v as u8);
    }
    pub fn put_i16(&mut self, v: i16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn put_i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn put_i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn put_u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn put_f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn put_bool(&mut self, v: bool) {
        self.buf.put_u8(u8::from(v));
    }
    pub fn put_uuid(&mut self, v: &[u8; 16]) {
        self.buf.extend_from_slice(v);
    }

    pub fn put_uvarint(&mut self, v: u32) {
        self.put_uvarlong(u64::from(v));
    }

    pub fn put_uvarlong(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.put_u8(v as u8);
    }

    pub fn put_varint(&mut self, v: i32) {
        self.put_uvarint(((v << 1) ^ (v >> 31)) as u32);
    }

    pub fn put_varlong(&mut self, v: i64) {
        self.put_uvarlong(((v << 1) ^ (v >> 63)) as u64);
    }

    /// Length prefix for a present value (see `Reader::read_len`). Lengths over the wire type's
    /// range cannot be produced by the broker (frames are far smaller); they saturate.
    fn put_len(&mut self, len: usize, flexible: bool, wide: bool) {
        if flexible {
            self.put_uvarint(u32::try_from(len).unwrap_or(u32::MAX - 1) + 1);
        } else if wide {
            self.put_i32(i32::try_from(len).unwrap_or(i32::MAX));
        } else {
            self.put_i16(i16::try_from(len).unwrap_or(i16::MAX));
        }
    }

    fn put_null(&mut self, flexible: bool, wide: bool) {
        if flexible {
            self.put_uvarint(0);
        } else if wide {
            self.put_i32(-1);
        } else {
            self.put_i16(-1);
        }
    }

    /// A classic (i16-length) string longer than `i16::MAX` bytes cannot be represented; rather
    /// than emit a corrupt frame it is cut at the last char boundary that fits.
    pub fn put_string(&mut self, s: &str, flexible: bool) {
        let mut end = s.len();
        if !flexible && end > i16::MAX as usize {
            end = i16::MAX as usize;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
        }
        self.put_len(end, flexible, false);
        self.buf.extend_from_slice(&s.as_bytes()[..end]);
    }

    pub fn put_nullable_string(&mut self, s: Option<&str>, flexible: bool) {
        match s {
            Some(s) => self.put_string(s, flexible),
            None => self.put_null(flexible, false),
        }
    }

    /// Bytes field; large values go out as a shared chunk.
    pub fn put_bytes_field(&mut self, b: &Bytes, flexible: bool) {
        self.put_len(b.len(), flexible, true);
        self.put_bytes_shared(b.clone());
    }

    pub fn put_nullable_bytes(&mut self, b: Option<&Bytes>, flexible: bool) {
        match b {
            Some(b) => self.put_bytes_field(b, flexible),
            None => self.put_null(flexible, true),
        }
    }

    /// A nullable bytes field given as consecutive buffers: one length, then each buffer
    /// (large ones shared).
    pub fn put_nullable_record_set(&mut self, set: Option<&RecordSet>, flexible: bool) {
        match set {
            Some(set) => {
                self.put_len(set.len(), flexible, true);
                for chunk in set.chunks() {
                    self.put_bytes_shared(chunk.clone());
                }
            }
            None => self.put_null(flexible, true),
        }
    }

    /// Array header: element count (i32, or compact uvarint count+1).
    pub fn put_array_len(&mut self, n: usize, flexible: bool) {
        self.put_len(n, flexible, true);
    }

    pub fn put_null_array(&mut self, flexible: bool) {
        self.put_null(flexible, true);
    }

    /// One tagged field: tag, size, then the value written by `f`.
    pub fn put_tagged_field(&mut self, tag: u32, f: impl FnOnce(&mut Writer)) {
        let mut sub = Writer::new();
        f(&mut sub);
        self.put_uvarint(tag);
        self.put_uvarint(u32::try_from(sub.len()).unwrap_or(u32::MAX));
        self.append(sub);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(b: &[u8]) -> Reader {
        Reader::new(Bytes::copy_from_slice(b))
    }

    #[test]
    fn fixed_width_round_trip() {
        let mut w = Writer::new();
        w.put_i8(-2);
        w.put_i16(-300);
        w.put_i32(-70000);
        w.put_i64(i64::MIN);
        w.put_u16(65000);
        w.put_u32(4_000_000_000);
        w.put_f64(1.5);
        w.put_bool(true);
        w.put_uuid(&[7; 16]);
        let mut rd = Reader::new(Bytes::from(w.into_vec()));
        assert_eq!(rd.read_i8().unwrap(), -2);
        assert_eq!(rd.read_i16().unwrap(), -300);
        assert_eq!(rd.read_i32().unwrap(), -70000);
        assert_eq!(rd.read_i64().unwrap(), i64::MIN);
        assert_eq!(rd.read_u16().unwrap(), 65000);
        assert_eq!(rd.read_u32().unwrap(), 4_000_000_000);
        assert_eq!(rd.read_f64().unwrap(), 1.5);
        assert!(rd.read_bool().unwrap());
        assert_eq!(rd.read_uuid().unwrap(), [7; 16]);
        assert_eq!(rd.remaining(), 0);
        assert!(matches!(
            rd.read_i32(),
            Err(DecodeError::Truncated {
                needed: 4,
                remaining: 0
            })
        ));
    }

    #[test]
    fn big_endian_layout() {
        let mut w = Writer::new();
        w.put_i32(0x01020304);
        assert_eq!(w.into_vec(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn varints_round_trip() {
        for v in [0u32, 1, 127, 128, 300, 16383, 16384, u32::MAX] {
            let mut w = Writer::new();
            w.put_uvarint(v);
            assert_eq!(r(&w.into_vec()).read_uvarint().unwrap(), v);
        }
        for v in [0i32, -1, 1, 63, -64, 64, i32::MIN, i32::MAX] {
            let mut w = Writer::new();
            w.put_varint(v);
            assert_eq!(r(&w.into_vec()).read_varint().unwrap(), v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, 1 << 40] {
            let mut w = Writer::new();
            w.put_varlong(v);
            let b = w.into_vec();
            assert!(b.len() <= 10);
            assert_eq!(r(&b).read_varlong().unwrap(), v);
        }
        // Zigzag: -1 encodes as 1, 1 as 2.
        let mut w = Writer::new();
        w.put_varint(-1);
        w.put_varint(1);
        assert_eq!(w.into_vec(), vec![1, 2]);
        let mut w = Writer::new();
        w.put_uvarint(300);
        assert_eq!(w.into_vec(), vec![0xac, 0x02]);
    }

    #[test]
    fn hostile_varints() {
        // Truncated: continuation bit set on the last byte of the frame.
        assert!(matches!(
            r(&[0x80]).read_uvarint(),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            r(&[0xff, 0xff]).read_varlong(),
            Err(DecodeError::Truncated { .. })
        ));
        // 6-byte varint where 5 is the maximum.
        assert!(matches!(
            r(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).read_uvarint(),
            Err(DecodeError::InvalidVarint(5))
        ));
        // 5-byte varint whose value exceeds u32.
        assert!(matches!(
            r(&[0xff, 0xff, 0xff, 0xff, 0x7f]).read_uvarint(),
            Err(DecodeError::InvalidVarint(5))
        ));
        // 10-byte varlong: u64::MAX is valid, one more bit is not, an 11th byte is not.
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(r(&max).read_uvarlong().unwrap(), u64::MAX);
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(matches!(
            r(&over).read_uvarlong(),
            Err(DecodeError::InvalidVarint(10))
        ));
        let eleven = [
            0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
        ];
        assert!(matches!(
            r(&eleven).read_uvarlong(),
            Err(DecodeError::InvalidVarint(10))
        ));
    }

    #[test]
    fn strings_both_forms() {
        for flexible in [false, true] {
            let mut w = Writer::new();
            w.put_string("héllo", flexible);
            w.put_nullable_string(None, flexible);
            w.put_nullable_string(Some(""), flexible);
            let mut rd = Reader::new(Bytes::from(w.into_vec()));
            assert_eq!(rd.read_string(flexible).unwrap(), "héllo");
            assert_eq!(rd.read_nullable_string(flexible).unwrap(), None);
            assert_eq!(
                rd.read_nullable_string(flexible).unwrap(),
                Some(String::new())
            );
            assert_eq!(rd.remaining(), 0);
        }
        // Classic null string is 0xffff, compact null is 0.
        let mut w = Writer::new();
        w.put_nullable_string(None, false);
        w.put_nullable_string(None, true);
        assert_eq!(w.into_vec(), vec![0xff, 0xff, 0]);
        // A non-nullable string that arrives as null is an error.
        assert!(r(&[0xff, 0xff]).read_string(false).is_err());
    }

    #[test]
    fn hostile_strings_and_bytes() {
        assert_eq!(
            r(&[0xff, 0xfe]).read_nullable_string(false),
            Err(DecodeError::NegativeLength(-2))
        );
        assert_eq!(
            r(&[0x80, 0, 0, 0]).read_nullable_bytes(false),
            Err(DecodeError::NegativeLength(i32::MIN as i64))
        );
        assert!(matches!(
            r(&[0, 10, b'a']).read_string(false),
            Err(DecodeError::LengthTooLarge {
                len: 10,
                remaining: 1
            })
        ));
        assert!(matches!(
            r(&[0x7f, 0xff, 0xff, 0xff]).read_nullable_bytes(false),
            Err(DecodeError::LengthTooLarge { .. })
        ));
        assert_eq!(
            r(&[0, 2, 0xc3, 0x28]).read_string(false),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            r(&[3, 0xff, 0xfe]).read_string(true),
            Err(DecodeError::InvalidUtf8)
        );
        // Compact length of u32::MAX claims 4 GiB.
        assert!(matches!(
            r(&[0xff, 0xff, 0xff, 0xff, 0x0f]).read_nullable_bytes(true),
            Err(DecodeError::LengthTooLarge { .. })
        ));
    }

    #[test]
    fn overlong_classic_string_stays_well_formed() {
        let long = "é".repeat(20_000); // 40 000 bytes
        let mut w = Writer::new();
        w.put_string(&long, false);
        w.put_i8(9);
        let mut rd = Reader::new(Bytes::from(w.into_vec()));
        let got = rd.read_string(false).unwrap();
        assert!(got.len() <= i16::MAX as usize && long.starts_with(&got));
        assert_eq!(rd.read_i8().unwrap(), 9);
    }

    #[test]
    fn bytes_are_zero_copy() {
        let frame = Bytes::from(vec![0, 0, 0, 3, 9, 8, 7, 1]);
        let mut rd = Reader::new(frame.clone());
        let b = rd.read_bytes_field(false).unwrap();
        assert_eq!(&b[..], &[9, 8, 7]);
        // Same allocation: the slice points into the frame.
        assert_eq!(b.as_ptr(), frame[4..].as_ptr());
        assert_eq!(rd.remaining(), 1);
    }

    #[test]
    fn arrays_both_forms_and_null() {
        for flexible in [false, true] {
            let mut w = Writer::new();
            w.put_array_len(3, flexible);
            for i in 0..3 {
                w.put_i32(i);
            }
            w.put_null_array(flexible);
            let mut rd = Reader::new(Bytes::from(w.into_vec()));
            assert_eq!(
                rd.read_array(flexible, |r| r.read_i32()).unwrap(),
                vec![0, 1, 2]
            );
            assert_eq!(
                rd.read_nullable_array(flexible, |r| r.read_i32()).unwrap(),
                None
            );
        }
    }

    #[test]
    fn hostile_array_counts_fail_fast() {
        // i32::MAX elements claimed by a 4-byte frame: rejected before any allocation.
        let rd_err = r(&[0x7f, 0xff, 0xff, 0xff]).read_array(false, |r| r.read_i64());
        assert!(matches!(rd_err, Err(DecodeError::LengthTooLarge { .. })));
        // Compact count of 2^32-2 elements.
        let rd_err = r(&[0xff, 0xff, 0xff, 0xff, 0x0f]).read_array(true, |r| r.read_i8());
        assert!(matches!(rd_err, Err(DecodeError::LengthTooLarge { .. })));
        // Negative count other than -1.
        assert!(matches!(
            r(&[0xff, 0xff, 0xff, 0xfe]).read_array(false, |r| r.read_i8()),
            Err(DecodeError::NegativeLength(-2))
        ));
        // A count that fits the remaining bytes but the elements are truncated.
        assert!(matches!(
            r(&[0, 0, 0, 2, 0, 0, 0, 1, 0]).read_array(false, |r| r.read_i32()),
            Err(DecodeError::Truncated { .. })
        ));
        // Tagged-field count larger than the frame.
        assert!(matches!(
            r(&[0xff, 0x7f]).read_tagged_fields(|_, _| Ok(false)),
            Err(DecodeError::LengthTooLarge { .. })
        ));
        // Tagged-field size larger than the frame.
        assert!(matches!(
            r(&[1, 0, 100, 1]).read_tagged_fields(|_, _| Ok(false)),
            Err(DecodeError::LengthTooLarge { .. })
        ));
    }

    #[test]
    fn tagged_fields_skip_unknown() {
        let mut w = Writer::new();
        w.put_uvarint(2);
        w.put_tagged_field(5, |w| w.put_i32(77));
        w.put_tagged_field(9, |w| w.put_string("x", true));
        w.put_i8(42);
        let mut rd = Reader::new(Bytes::from(w.into_vec()));
        let mut seen = None;
        rd.read_tagged_fields(|tag, sub| {
            if tag == 5 {
                seen = Some(sub.read_i32()?);
                return Ok(true);
            }
            Ok(false)
        })
        .unwrap();
        assert_eq!(seen, Some(77));
        assert_eq!(rd.read_i8().unwrap(), 42);
    }

    #[test]
    fn writer_shares_large_chunks() {
        let big = Bytes::from(vec![1u8; SHARED_CHUNK_MIN]);
        let mut w = Writer::new();
        w.put_i16(1);
        w.put_bytes_field(&big, false);
        w.put_i16(2);
        assert_eq!(w.len(), 2 + 4 + SHARED_CHUNK_MIN + 2);
        let chunks = w.clone().finish();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].as_ptr(), big.as_ptr());
        let flat = w.into_vec();
        assert_eq!(flat.len(), 2 + 4 + SHARED_CHUNK_MIN + 2);
        let mut rd = Reader::new(Bytes::from(flat));
        assert_eq!(rd.read_i16().unwrap(), 1);
        assert_eq!(rd.read_bytes_field(false).unwrap(), big);
        assert_eq!(rd.read_i16().unwrap(), 2);
        // A nested writer with a shared chunk keeps it shared when appended.
        let mut outer = Writer::new();
        outer.put_tagged_field(0, |w| w.put_bytes_shared(big.clone()));
        assert_eq!(outer.len(), 1 + 2 + SHARED_CHUNK_MIN);
        assert_eq!(outer.finish().len(), 2);
    }
}
