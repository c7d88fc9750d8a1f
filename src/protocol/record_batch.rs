//! Kafka RecordBatch v2 (magic 2): header parsing, validation and the few in-place rewrites the
//! broker performs. Pure functions over byte slices; no I/O, no allocation on the validate path.
//!
//! Owns: the byte layout of a batch header and the rules a batch must satisfy before it is
//! appended. Records stay opaque (possibly compressed): the broker never decodes them here.
//! Runs on whichever shard handles the produce request (and in storage recovery).
//!
//! ```text
//! offset size field                  covered by CRC
//!      0    8 baseOffset  i64 BE      no   (rewritten by the broker: offset assignment)
//!      8    4 batchLength i32 BE      no   (bytes after this field: total = 12 + batchLength)
//!     12    4 partitionLeaderEpoch    no   (rewritten by the broker)
//!     16    1 magic i8 (= 2)          no
//!     17    4 crc u32 BE (CRC-32C)    -
//!     21    2 attributes i16          yes  bits 0-2 compression, 3 timestampType (1 = LogAppendTime),
//!                                          4 isTransactional, 5 isControl, 6 hasDeleteHorizonMs
//!     23    4 lastOffsetDelta i32     yes
//!     27    8 baseTimestamp i64       yes
//!     35    8 maxTimestamp i64        yes
//!     43    8 producerId i64          yes
//!     51    2 producerEpoch i16       yes
//!     53    4 baseSequence i32        yes
//!     57    4 recordsCount i32        yes
//!     61    . records                 yes
//! ```
//!
//! Invariants guaranteed by [`validate`]: magic is 2, `12 + batchLength` equals the slice length,
//! the CRC-32C of bytes `21..` matches, `recordsCount >= 1`, for non-control batches
//! `recordsCount == lastOffsetDelta + 1` and for control batches `recordsCount <=
//! lastOffsetDelta + 1`. Note that baseOffset, batchLength and the leader epoch
//! are outside the CRC (Kafka's format); storage recovery checks offset contiguity to cover them.

use bytes::Bytes;

/// Size of the fixed batch header (everything before the first record).
pub const BATCH_HEADER_LEN: usize = 61;
/// baseOffset + batchLength: the bytes not counted by `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batchLength` (a header with zero records bytes).
pub const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;
/// The only magic value Odradek stores.
pub const MAGIC_V2: i8 = 2;

pub const BASE_OFFSET_AT: usize = 0;
pub const BATCH_LENGTH_AT: usize = 8;
pub const LEADER_EPOCH_AT: usize = 12;
pub const MAGIC_AT: usize = 16;
pub const CRC_AT: usize = 17;
pub const ATTRIBUTES_AT: usize = 21;
pub const LAST_OFFSET_DELTA_AT: usize = 23;
pub const BASE_TIMESTAMP_AT: usize = 27;
pub const MAX_TIMESTAMP_AT: usize = 35;
pub const PRODUCER_ID_AT: usize = 43;
pub const PRODUCER_EPOCH_AT: usize = 51;
pub const BASE_SEQUENCE_AT: usize = 53;
pub const RECORDS_COUNT_AT: usize = 57;

pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub const ATTR_TIMESTAMP_LOG_APPEND: i16 = 0x08;
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
pub const ATTR_CONTROL: i16 = 0x20;
pub const ATTR_DELETE_HORIZON: i16 = 0x40;

/// Why a batch was refused. The server maps the three classes to Kafka error codes
/// (CORRUPT_MESSAGE, INVALID_RECORD, UNSUPPORTED_FOR_MESSAGE_FORMAT / INVALID_RECORD).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Framing or checksum is wrong: the bytes are damaged.
    #[error("corrupt record batch: {0}")]
    CorruptMessage(Corruption),
    /// Framing and checksum are fine but the header violates Kafka's rules.
    #[error("invalid record batch: {0}")]
    InvalidRecord(Invalidity),
    /// Magic other than 2 (legacy message sets are not stored).
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("batchLength {length} out of range")]
    LengthOutOfRange { length: i32 },
    #[error("batchLength {length} disagrees with {available} bytes present")]
    LengthMismatch { length: i32, available: usize },
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    /// The records section cannot be decoded (bad varints, bad compressed data).
    #[error("undecodable records: {0}")]
    Records(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalidity {
    #[error("recordsCount {records_count} < 1")]
    NoRecords { records_count: i32 },
    #[error("lastOffsetDelta {last_offset_delta} < 0")]
    NegativeLastOffsetDelta { last_offset_delta: i32 },
    #[error("recordsCount {records_count} != lastOffsetDelta {last_offset_delta} + 1")]
    CountMismatch {
        records_count: i32,
        last_offset_delta: i32,
    },
    #[error("timestamps not sane: base {base_timestamp}, max {max_timestamp}")]
    BadTimestamps {
        base_timestamp: i64,
        max_timestamp: i64,
    },
}

/// The decoded fixed header of a v2 batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

#[inline]
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
#[inline]
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
#[inline]
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Decodes the 61-byte header at the start of `buf`. Checks only that the bytes are present and
    /// the magic is 2; use [`validate`] for the full rules.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() <= MAGIC_AT {
            return Err(BatchError::CorruptMessage(Corruption::Truncated {
                needed: BATCH_HEADER_LEN,
                available: buf.len(),
            }));
        }
        let magic = buf[MAGIC_AT] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::CorruptMessage(Corruption::Truncated {
                needed: BATCH_HEADER_LEN,
                available: buf.len(),
            }));
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET_AT),
            batch_length: be_i32(buf, BATCH_LENGTH_AT),
            partition_leader_epoch: be_i32(buf, LEADER_EPOCH_AT),
            magic,
            crc: be_i32(buf, CRC_AT) as u32,
            attributes: be_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: be_i64(buf, PRODUCER_ID_AT),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(buf, BASE_SEQUENCE_AT),
            records_count: be_i32(buf, RECORDS_COUNT_AT),
        })
    }

    /// Total size on disk / on the wire: `12 + batchLength`.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
    }
    pub fn compression(&self) -> u8 {
        (self.attributes & ATTR_COMPRESSION_MASK) as u8
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_LOG_APPEND != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
    /// producerId >= 0: the batch carries idempotence fields.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }
    /// Sequence of the last record, wrapping past i32::MAX to 0 as Kafka does; -1 if none.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// Kafka's sequence arithmetic: sequences wrap from i32::MAX to 0.
pub fn increment_sequence(seq: i32, delta: i32) -> i32 {
    let s = seq as i64 + delta as i64;
    (s % (i32::MAX as i64 + 1)) as i32
}

/// CRC-32C (Castagnoli) over attributes..end, the range Kafka's v2 checksum covers.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(ATTRIBUTES_AT..).unwrap_or(&[]))
}

/// Checks one complete batch (exactly one: `batch.len()` must equal `12 + batchLength`).
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let hdr = BatchHeader::parse(batch)?;
    if hdr.batch_length < MIN_BATCH_LENGTH {
        return Err(BatchError::CorruptMessage(Corruption::LengthOutOfRange {
            length: hdr.batch_length,
        }));
    }
    if hdr.total_len() != batch.len() {
        return Err(BatchError::CorruptMessage(Corruption::LengthMismatch {
            length: hdr.batch_length,
            available: batch.len(),
        }));
    }
    let computed = compute_crc(batch);
    if computed != hdr.crc {
        return Err(BatchError::CorruptMessage(Corruption::CrcMismatch {
            stored: hdr.crc,
            computed,
        }));
    }
    if hdr.last_offset_delta < 0 {
        return Err(BatchError::InvalidRecord(
            Invalidity::NegativeLastOffsetDelta {
                last_offset_delta: hdr.last_offset_delta,
            },
        ));
    }
    if hdr.records_count < 1 {
        return Err(BatchError::InvalidRecord(Invalidity::NoRecords {
            records_count: hdr.records_count,
        }));
    }
    // A control batch may span more offsets than it has records, never fewer: a record past
    // lastOffsetDelta would take an offset of the next batch.
    let count = hdr.records_count as i64;
    let span = hdr.last_offset_delta as i64 + 1;
    if (!hdr.is_control() && count != span) || count > span {
        return Err(BatchError::InvalidRecord(Invalidity::CountMismatch {
            records_count: hdr.records_count,
            last_offset_delta: hdr.last_offset_delta,
        }));
    }
    // -1 means "no timestamp"; anything below is garbage. The max of all records cannot be below
    // the first record's timestamp.
    let ts_bad = hdr.base_timestamp < -1
        || hdr.max_timestamp < -1
        || (hdr.base_timestamp >= 0
            && hdr.max_timestamp >= 0
            && hdr.max_timestamp < hdr.base_timestamp);
    if ts_bad {
        return Err(BatchError::InvalidRecord(Invalidity::BadTimestamps {
            base_timestamp: hdr.base_timestamp,
            max_timestamp: hdr.max_timestamp,
        }));
    }
    Ok(hdr)
}

/// [`validate`] for batches read back from the log: compaction leaves batches with fewer
/// records than their offset span (records removed, `lastOffsetDelta` kept) and empty batches
/// that only cover a run of removed offsets, as Kafka's log cleaner does. Everything else —
/// framing, magic, CRC, offsets, timestamps — is checked the same way.
pub fn validate_stored(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    match validate(batch) {
        Err(BatchError::InvalidRecord(Invalidity::NoRecords { .. }))
        | Err(BatchError::InvalidRecord(Invalidity::CountMismatch { .. })) => {
            let hdr = BatchHeader::parse(batch)?;
            if hdr.records_count < 0 || hdr.records_count as i64 > hdr.last_offset_delta as i64 + 1
            {
                return Err(BatchError::InvalidRecord(Invalidity::CountMismatch {
                    records_count: hdr.records_count,
                    last_offset_delta: hdr.last_offset_delta,
                }));
            }
            Ok(hdr)
        }
        other => other,
    }
}

/// An empty batch (no records) covering offsets `base_offset ..= base_offset + last_offset_delta`:
/// what compaction leaves where every record of a run of offsets was removed, so offsets stay
/// contiguous batch to batch (readers skip it, as Kafka clients skip the cleaner's empty batches).
pub fn empty_batch(base_offset: i64, last_offset_delta: i32, leader_epoch: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN);
    out.extend_from_slice(&base_offset.to_be_bytes());
    out.extend_from_slice(&(MIN_BATCH_LENGTH).to_be_bytes());
    out.extend_from_slice(&leader_epoch.to_be_bytes());
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    out.extend_from_slice(&0i16.to_be_bytes()); // attributes
    out.extend_from_slice(&last_offset_delta.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes()); // base timestamp
    out.extend_from_slice(&(-1i64).to_be_bytes()); // max timestamp
    out.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    out.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    out.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    out.extend_from_slice(&0i32.to_be_bytes()); // records count
    let crc = compute_crc(&out);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The first record of `batch` (one whole, validated batch) whose timestamp is at or after `ts`,
/// as (offset, timestamp); `None` if no record qualifies. Kafka answers ListOffsets by timestamp
/// this way. LogAppendTime batches stamp every record with maxTimestamp. Compressed records are
/// decompressed, producing at most `limit` bytes (see [`super::compression`]).
pub fn first_record_at_or_after(
    batch: &[u8],
    ts: i64,
    limit: usize,
) -> Result<Option<(i64, i64)>, BatchError> {
    let h = BatchHeader::parse(batch)?;
    // A batchLength below the fixed header would put the records before their own header.
    if h.batch_length < MIN_BATCH_LENGTH {
        return Err(BatchError::CorruptMessage(Corruption::LengthOutOfRange {
            length: h.batch_length,
        }));
    }
    let batch = batch
        .get(..h.total_len())
        .ok_or(BatchError::CorruptMessage(Corruption::Truncated {
            needed: h.total_len(),
            available: batch.len(),
        }))?;
    if h.is_log_append_time() {
        return Ok((h.max_timestamp >= ts).then_some((h.base_offset, h.max_timestamp)));
    }
    let body = &batch[BATCH_HEADER_LEN..];
    let undecodable = |why: String| BatchError::CorruptMessage(Corruption::Records(why));
    let records: std::borrow::Cow<[u8]> = match h.compression() {
        super::compression::CODEC_NONE => std::borrow::Cow::Borrowed(body),
        codec => std::borrow::Cow::Owned(
            super::compression::decompress(codec, body, limit)
                .map_err(|e| undecodable(e.to_string()))?,
        ),
    };
    let mut pos = 0usize;
    for _ in 0..h.records_count {
        let len = read_zigzag(&records, &mut pos).map_err(undecodable)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| pos.checked_add(len))
            .filter(|end| *end <= records.len())
            .ok_or_else(|| undecodable(format!("record length {len} at {pos}")))?;
        let mut p = pos + 1; // record attributes (unused)
        let timestamp_delta = read_zigzag(&records[..end], &mut p).map_err(undecodable)?;
        let offset_delta = read_zigzag(&records[..end], &mut p).map_err(undecodable)?;
        let timestamp = h.base_timestamp.saturating_add(timestamp_delta);
        if timestamp >= ts {
            let offset = h
                .base_offset
                .checked_add(offset_delta)
                .ok_or_else(|| undecodable(format!("offset delta {offset_delta} overflows")))?;
            return Ok(Some((offset, timestamp)));
        }
        pos = end;
    }
    Ok(None)
}

/// Reads a zigzag varint/varlong (up to 10 bytes) at `*pos`.
pub fn read_zigzag(buf: &[u8], pos: &mut usize) -> Result<i64, String> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let byte = *buf
            .get(*pos)
            .ok_or_else(|| format!("truncated varint at {}", *pos))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(format!("varint longer than 10 bytes before {}", *pos))
}

/// Iterator over the batches of a record set (a produce request may carry several). Yields
/// zero-copy slices of the input; checks framing only (call [`validate`] on each). Stops after the
/// first error.
pub struct SplitBatches {
    records: Bytes,
    pos: usize,
    done: bool,
}

/// Splits a record set into its batches. A trailing partial batch is an error (CorruptMessage).
pub fn split_batches(records: &Bytes) -> SplitBatches {
    SplitBatches {
        records: records.clone(),
        pos: 0,
        done: false,
    }
}

impl Iterator for SplitBatches {
    type Item = Result<Bytes, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.records.len() {
            return None;
        }
        let rest = &self.records[self.pos..];
        let fail = |this: &mut Self, e: Corruption| {
            this.done = true;
            Some(Err(BatchError::CorruptMessage(e)))
        };
        if rest.len() < LOG_OVERHEAD {
            return fail(
                self,
                Corruption::Truncated {
                    needed: LOG_OVERHEAD,
                    available: rest.len(),
                },
            );
        }
        let length = be_i32(rest, BATCH_LENGTH_AT);
        if length < MIN_BATCH_LENGTH {
            return fail(self, Corruption::LengthOutOfRange { length });
        }
        let total = LOG_OVERHEAD + length as usize;
        if rest.len() < total {
            return fail(
                self,
                Corruption::Truncated {
                    needed: total,
                    available: rest.len(),
                },
            );
        }
        let out = self.records.slice(self.pos..self.pos + total);
        self.pos += total;
        Some(Ok(out))
    }
}

fn require_header(batch: &[u8]) -> Result<(), BatchError> {
    if batch.len() < BATCH_HEADER_LEN {
        return Err(BatchError::CorruptMessage(Corruption::Truncated {
            needed: BATCH_HEADER_LEN,
            available: batch.len(),
        }));
    }
    Ok(())
}

/// Rewrites baseOffset in place (outside the CRC: no recomputation needed).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) -> Result<(), BatchError> {
    require_header(batch)?;
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    Ok(())
}

/// Rewrites partitionLeaderEpoch in place (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<(), BatchError> {
    require_header(batch)?;
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
    Ok(())
}

/// Stamps LogAppendTime: sets maxTimestamp, the timestampType attribute bit, and recomputes the
/// CRC over the whole slice (which must be exactly one batch).
pub fn set_log_append_time(batch: &mut [u8], timestamp_ms: i64) -> Result<(), BatchError> {
    require_header(batch)?;
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&timestamp_ms.to_be_bytes());
    let attrs = be_i16(batch, ATTRIBUTES_AT) | ATTR_TIMESTAMP_LOG_APPEND;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Test support: builds valid v2 batches with real (uncompressed) records.
#[cfg(test)]
pub mod testing {
    use super::*;

    use crate::protocol::records::{put_bytes, put_varint};

    #[derive(Clone, Debug)]
    pub struct TestRecord {
        pub timestamp_delta: i64,
        pub key: Option<Vec<u8>>,
        pub value: Option<Vec<u8>>,
        pub headers: Vec<(String, Option<Vec<u8>>)>,
    }

    impl TestRecord {
        pub fn value(v: &[u8]) -> TestRecord {
            TestRecord {
                timestamp_delta: 0,
                key: None,
                value: Some(v.to_vec()),
                headers: vec![],
            }
        }
    }

    #[derive(Clone, Debug)]
    pub struct BatchBuilder {
        pub base_offset: i64,
        pub leader_epoch: i32,
        pub attributes: i16,
        pub base_timestamp: i64,
        pub producer_id: i64,
        pub producer_epoch: i16,
        pub base_sequence: i32,
        pub records: Vec<TestRecord>,
    }

    impl Default for BatchBuilder {
        fn default() -> Self {
            BatchBuilder {
                base_offset: 0,
                leader_epoch: -1,
                attributes: 0,
                base_timestamp: 1_700_000_000_000,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                records: vec![],
            }
        }
    }

    impl BatchBuilder {
        /// A batch of `n` small records with values derived from `seed`.
        pub fn simple(n: usize, seed: u64) -> BatchBuilder {
            let records = (0..n)
                .map(|i| TestRecord {
                    timestamp_delta: i as i64,
                    key: if i % 2 == 0 {
                        Some(format!("k{seed}-{i}").into_bytes())
                    } else {
                        None
                    },
                    value: Some(format!("value-{seed}-{i}").into_bytes()),
                    headers: if i % 3 == 0 {
                        vec![("h".into(), Some(b"x".to_vec()))]
                    } else {
                        vec![]
                    },
                })
                .collect();
            BatchBuilder {
                records,
                ..Default::default()
            }
        }

        pub fn build(&self) -> Vec<u8> {
            let mut recs = Vec::new();
            let mut max_ts = self.base_timestamp;
            for (i, r) in self.records.iter().enumerate() {
                let mut body = Vec::new();
                body.push(0u8); // record attributes
                put_varint(&mut body, r.timestamp_delta);
                put_varint(&mut body, i as i64);
                put_bytes(&mut body, r.key.as_deref());
                put_bytes(&mut body, r.value.as_deref());
                put_varint(&mut body, r.headers.len() as i64);
                for (k, v) in &r.headers {
                    put_bytes(&mut body, Some(k.as_bytes()));
                    put_bytes(&mut body, v.as_deref());
                }
                put_varint(&mut recs, body.len() as i64);
                recs.extend_from_slice(&body);
                max_ts = max_ts.max(self.base_timestamp + r.timestamp_delta);
            }
            let codec = (self.attributes & ATTR_COMPRESSION_MASK) as u8;
            if codec != 0 {
                recs =
                    crate::protocol::compression::compress(codec, &recs).expect("test compression");
            }
            let n = self.records.len() as i32;
            let mut b = Vec::with_capacity(BATCH_HEADER_LEN + recs.len());
            b.extend_from_slice(&self.base_offset.to_be_bytes());
            b.extend_from_slice(
                &((BATCH_HEADER_LEN - LOG_OVERHEAD + recs.len()) as i32).to_be_bytes(),
            );
            b.extend_from_slice(&self.leader_epoch.to_be_bytes());
            b.push(MAGIC_V2 as u8);
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&self.attributes.to_be_bytes());
            b.extend_from_slice(&(n - 1).to_be_bytes());
            b.extend_from_slice(&self.base_timestamp.to_be_bytes());
            b.extend_from_slice(&max_ts.to_be_bytes());
            b.extend_from_slice(&self.producer_id.to_be_bytes());
            b.extend_from_slice(&self.producer_epoch.to_be_bytes());
            b.extend_from_slice(&self.base_sequence.to_be_bytes());
            b.extend_from_slice(&n.to_be_bytes());
            b.extend_from_slice(&recs);
            let crc = compute_crc(&b);
            b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
            b
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_record_at_or_after_scans_records_in_every_codec() {
        for codec in 0..=4i16 {
            let mut b = BatchBuilder::simple(5, 7);
            b.base_offset = 100;
            b.attributes = codec;
            // Record i at base + 10 * i.
            for (i, r) in b.records.iter_mut().enumerate() {
                r.timestamp_delta = 10 * i as i64;
            }
            let batch = b.build();
            validate(&batch).unwrap();
            let t0 = b.base_timestamp;
            let at = |ts| first_record_at_or_after(&batch, ts, 1 << 20).unwrap();
            assert_eq!(at(t0 - 5), Some((100, t0)), "codec {codec}");
            assert_eq!(at(t0), Some((100, t0)));
            assert_eq!(at(t0 + 11), Some((102, t0 + 20)));
            assert_eq!(at(t0 + 40), Some((104, t0 + 40)));
            assert_eq!(at(t0 + 41), None);
        }
    }

    #[test]
    fn first_record_at_or_after_log_append_time_and_damage() {
        let mut b = BatchBuilder::simple(3, 1);
        b.attributes = ATTR_TIMESTAMP_LOG_APPEND;
        let mut batch = b.build();
        set_log_append_time(&mut batch, 5_000).unwrap();
        assert_eq!(
            first_record_at_or_after(&batch, 4_000, 1 << 20).unwrap(),
            Some((0, 5_000))
        );
        assert_eq!(
            first_record_at_or_after(&batch, 5_001, 1 << 20).unwrap(),
            None
        );
        // A compressed body that is not what it claims is an error, never a panic.
        let mut lz4 = BatchBuilder::simple(3, 1);
        lz4.attributes = 3;
        let mut bad = lz4.build();
        let n = bad.len();
        bad[n - 5..].copy_from_slice(&[0xff; 5]);
        assert!(first_record_at_or_after(&bad, 0, 1 << 20).is_err());
        assert!(first_record_at_or_after(&bad[..40], 0, 1 << 20).is_err());
    }

    /// Found by the `record_batch` fuzz target: a batchLength below the fixed header made the
    /// timestamp lookup slice past its input (a panic) instead of failing; an offset delta that
    /// overflows i64 wrapped (or panicked with overflow checks) instead of failing.
    #[test]
    fn first_record_lookup_refuses_lying_lengths_and_offset_overflow() {
        let mut b = BatchBuilder::simple(2, 1).build();
        b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            first_record_at_or_after(&b, 0, 1 << 20),
            Err(BatchError::CorruptMessage(Corruption::LengthOutOfRange {
                length: 0
            }))
        );
        let mut b = BatchBuilder::simple(2, 1);
        b.base_offset = i64::MAX;
        let bytes = b.build();
        validate(&bytes).expect("valid: the base offset is outside every check");
        // Record 0 (delta 0) is at i64::MAX; record 1 would be past it.
        assert_eq!(
            first_record_at_or_after(&bytes, b.base_timestamp, 1 << 20),
            Ok(Some((i64::MAX, b.base_timestamp)))
        );
        assert!(matches!(
            first_record_at_or_after(&bytes, b.base_timestamp + 1, 1 << 20),
            Err(BatchError::CorruptMessage(Corruption::Records(_)))
        ));
    }

    /// Found by the `record_batch` fuzz target: a control batch claiming more records than
    /// offsets passed `validate` (and so storage recovery).
    #[test]
    fn control_batch_with_more_records_than_offsets_is_invalid() {
        let mut b = BatchBuilder::simple(3, 1);
        b.attributes = ATTR_CONTROL | ATTR_TRANSACTIONAL;
        let mut bytes = b.build();
        assert!(validate(&bytes).is_ok(), "3 records over 3 offsets");
        bytes[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&0i32.to_be_bytes());
        let crc = compute_crc(&bytes);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let refused = Err(BatchError::InvalidRecord(Invalidity::CountMismatch {
            records_count: 3,
            last_offset_delta: 0,
        }));
        assert_eq!(validate(&bytes), refused);
        assert_eq!(validate_stored(&bytes), refused);
    }

    fn arb_builder() -> impl Strategy<Value = BatchBuilder> {
        (
            1usize..20,
            any::<u64>(),
            0i64..2_000_000_000_000,
            prop::option::of((0i64..1000, 0i16..5, 0i32..1000)),
        )
            .prop_map(|(n, seed, ts, prod)| {
                let mut b = BatchBuilder::simple(n, seed);
                b.base_timestamp = ts;
                if let Some((pid, epoch, seq)) = prod {
                    b.producer_id = pid;
                    b.producer_epoch = epoch;
                    b.base_sequence = seq;
                }
                b
            })
    }

    #[test]
    fn valid_batch_round_trips() {
        let mut b = BatchBuilder::simple(3, 7);
        b.producer_id = 42;
        b.producer_epoch = 1;
        b.base_sequence = 10;
        let bytes = b.build();
        let h = validate(&bytes).unwrap();
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.producer_id, 42);
        assert_eq!(h.last_sequence(), 12);
        assert_eq!(h.total_len(), bytes.len());
        assert_eq!(h.max_timestamp, b.base_timestamp + 2);
    }

    #[test]
    fn sequence_wraps() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(5, 0), 5);
    }

    #[test]
    fn error_classes() {
        let mut bytes = BatchBuilder::simple(2, 1).build();
        bytes[MAGIC_AT] = 1;
        assert_eq!(validate(&bytes), Err(BatchError::UnsupportedMagic(1)));

        // recordsCount disagrees with lastOffsetDelta (CRC recomputed so framing is fine).
        let mut bytes = BatchBuilder::simple(2, 1).build();
        bytes[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&5i32.to_be_bytes());
        let crc = compute_crc(&bytes);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&bytes),
            Err(BatchError::InvalidRecord(Invalidity::CountMismatch { .. }))
        ));

        let mut bytes = BatchBuilder::simple(2, 1).build();
        bytes[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&0i32.to_be_bytes());
        bytes[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&(-1i32).to_be_bytes());
        let crc = compute_crc(&bytes);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate(&bytes),
            Err(BatchError::InvalidRecord(_))
        ));

        let mut bytes = BatchBuilder::simple(2, 1).build();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        assert!(matches!(
            validate(&bytes),
            Err(BatchError::CorruptMessage(Corruption::CrcMismatch { .. }))
        ));
    }

    #[test]
    fn rewrites_keep_crc_valid() {
        let mut bytes = BatchBuilder::simple(4, 9).build();
        set_base_offset(&mut bytes, 123_456).unwrap();
        set_partition_leader_epoch(&mut bytes, 7).unwrap();
        assert!(set_base_offset(&mut [0u8; 60], 1).is_err());
        let h = validate(&bytes).unwrap();
        assert_eq!(h.base_offset, 123_456);
        assert_eq!(h.partition_leader_epoch, 7);
        set_log_append_time(&mut bytes, 1_800_000_000_000).unwrap();
        let h = validate(&bytes).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 1_800_000_000_000);
    }

    #[test]
    fn split_several_batches_zero_copy() {
        let a = BatchBuilder::simple(1, 1).build();
        let b = BatchBuilder::simple(5, 2).build();
        let mut all = a.clone();
        all.extend_from_slice(&b);
        let all = Bytes::from(all);
        let parts: Vec<_> = split_batches(&all).collect::<Result<_, _>>().unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(&parts[0][..], &a[..]);
        assert_eq!(&parts[1][..], &b[..]);
        assert_eq!(parts[1].as_ptr(), all[a.len()..].as_ptr());
        // trailing garbage is an error, and iteration stops
        let mut bad = all.to_vec();
        bad.extend_from_slice(&[0, 0, 0]);
        let bad = Bytes::from(bad);
        let r: Vec<_> = split_batches(&bad).collect();
        assert_eq!(r.len(), 3);
        assert!(r[2].is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn generated_batches_validate(b in arb_builder()) {
            let bytes = b.build();
            let h = validate(&bytes).unwrap();
            prop_assert_eq!(h.records_count as usize, b.records.len());
        }

        #[test]
        fn any_flip_in_crc_range_is_detected(b in arb_builder(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = b.build();
            let at = CRC_AT + pos.index(bytes.len() - CRC_AT);
            bytes[at] ^= 1 << bit;
            prop_assert!(validate(&bytes).is_err());
        }

        #[test]
        fn truncation_is_an_error_never_a_panic(b in arb_builder(), cut in any::<prop::sample::Index>()) {
            let bytes = b.build();
            let n = cut.index(bytes.len());
            prop_assert!(validate(&bytes[..n]).is_err());
            let _ = BatchHeader::parse(&bytes[..n]);
            let set = Bytes::copy_from_slice(&bytes[..n]);
            let r: Vec<_> = split_batches(&set).collect();
            prop_assert!(r.iter().any(|x| x.is_err()) || n == 0);
        }

        #[test]
        fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = validate(&data);
            let set = Bytes::from(data);
            for b in split_batches(&set).flatten() { let _ = validate(&b); }
        }
    }
}
