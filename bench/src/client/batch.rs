//! RecordBatch v2 on the client side: building batches (records with varints, optional
//! compression of the records section, CRC-32C over attributes..end) and reading them back.
//!
//! Owns the bench payload format too. Every value the harness writes starts with a 24-byte
//! header so a consumer can check accounting and end-to-end latency without any side channel:
//!
//! ```text
//! 0        4             8                    16                   24          record_size
//! | "ODRB" | producer u32 | sequence u64        | send time u64 (µs) | filler ...  |
//! ```
//! `sequence` counts the records of one producer in one partition (0, 1, 2, ...), so a consumer
//! can check contiguity per (producer, partition). The send time is the *intended* send time in
//! microseconds since the UNIX epoch (open-loop runs), so end-to-end latency includes any stall.
//!
//! Runs on whichever bench core owns the producer or consumer; no I/O.

use bytes::{BufMut, Bytes, BytesMut};
use odradek::protocol::record_batch::{
    compute_crc, BatchHeader, ATTR_COMPRESSION_MASK, ATTR_CONTROL, ATTR_TRANSACTIONAL,
    BATCH_HEADER_LEN, CRC_AT, LOG_OVERHEAD,
};
use odradek::protocol::records::EndTxnMarker;

pub const PAYLOAD_MAGIC: [u8; 4] = *b"ODRB";
pub const PAYLOAD_HEADER_LEN: usize = 24;

/// Kafka's codec ids (attributes bits 0..2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batch framing: {0}")]
    Framing(String),
    #[error("batch CRC mismatch at offset {base_offset}")]
    Crc { base_offset: i64 },
    #[error("decompression ({codec}) failed: {detail}")]
    Decompress { codec: i16, detail: String },
    #[error("compression failed: {0}")]
    Compress(String),
    #[error("record truncated or malformed")]
    Record,
}

// ---- varints (zigzag), as Kafka's records use ----

pub fn put_varlong(buf: &mut impl BufMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

pub fn put_varint(buf: &mut impl BufMut, v: i32) {
    put_varlong(buf, v as i64)
}

fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Reads a zigzag varlong; `None` if truncated or longer than 10 bytes.
pub fn get_varlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        z |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some(((z >> 1) as i64) ^ -((z & 1) as i64))
}

/// Payload header fields of one bench record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadHeader {
    pub producer: u32,
    pub sequence: u64,
    pub send_time_us: u64,
}

pub fn write_payload_header(dst: &mut [u8], h: PayloadHeader) {
    let mut hdr = [0u8; PAYLOAD_HEADER_LEN];
    hdr[0..4].copy_from_slice(&PAYLOAD_MAGIC);
    hdr[4..8].copy_from_slice(&h.producer.to_be_bytes());
    hdr[8..16].copy_from_slice(&h.sequence.to_be_bytes());
    hdr[16..24].copy_from_slice(&h.send_time_us.to_be_bytes());
    let n = dst.len().min(PAYLOAD_HEADER_LEN);
    dst[..n].copy_from_slice(&hdr[..n]);
}

pub fn read_payload_header(v: &[u8]) -> Option<PayloadHeader> {
    if v.len() < PAYLOAD_HEADER_LEN || v[0..4] != PAYLOAD_MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_be_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&v[i..i + 8]);
        u64::from_be_bytes(a)
    };
    Some(PayloadHeader {
        producer: u32_at(4),
        sequence: u64_at(8),
        send_time_us: u64_at(16),
    })
}

/// Bytes of a record's body (everything after its length varint) with no headers.
fn record_body_len(
    ts_delta: i64,
    offset_delta: i32,
    key_len: Option<usize>,
    value_len: usize,
) -> usize {
    1 + varint_len(ts_delta)
        + varint_len(offset_delta as i64)
        + varint_len(key_len.map_or(-1, |k| k as i64))
        + key_len.unwrap_or(0)
        + varint_len(value_len as i64)
        + value_len
        + 1
}

/// Bytes [`BatchBuilder::append`] writes for a record with no headers: what a batch of such
/// records will weigh before any of them is written.
pub fn record_len(
    ts_delta: i64,
    offset_delta: i32,
    key_len: Option<usize>,
    value_len: usize,
) -> usize {
    let body_len = record_body_len(ts_delta, offset_delta, key_len, value_len);
    varint_len(body_len as i64) + body_len
}

/// Writes one batch: records are appended uncompressed; [`BatchBuilder::seal`] compresses and
/// frames them. The producer writes a batch in one go when a request takes it (see its
/// `RecordWriter`), so the builder is sized for it up front.
#[derive(Debug)]
pub struct BatchBuilder {
    /// Header space, then the records. Holds no allocation until the first record, unless it
    /// was given one ([`BatchBuilder::in_buffer`]).
    records: BytesMut,
    /// Records bytes to allocate when the batch opens.
    capacity: usize,
    count: i32,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
}

impl BatchBuilder {
    /// `capacity`: records bytes to allocate when the batch opens ([`record_len`] of each
    /// record makes it exact).
    pub fn new(capacity: usize) -> Self {
        BatchBuilder {
            records: BytesMut::new(),
            capacity,
            count: 0,
            base_timestamp_ms: 0,
            max_timestamp_ms: 0,
        }
    }

    /// A builder that writes into the spare capacity of `buf` (which must be empty), growing
    /// it only if the batch does not fit. [`BatchBuilder::into_buffer`] gives back what is
    /// left after sealing: a writer can carve many batches out of one allocation.
    pub fn in_buffer(buf: BytesMut, capacity: usize) -> Self {
        debug_assert!(buf.is_empty());
        BatchBuilder {
            records: buf,
            ..BatchBuilder::new(capacity)
        }
    }

    /// The buffer's unused capacity after [`BatchBuilder::seal`].
    pub fn into_buffer(self) -> BytesMut {
        self.records
    }

    /// Makes room for the header before the first record of a batch.
    fn open(&mut self, first_record_len: usize) {
        if self.records.is_empty() {
            let records_len = self.capacity.max(first_record_len);
            self.records.reserve(BATCH_HEADER_LEN + records_len);
            self.records.resize(BATCH_HEADER_LEN, 0);
        }
    }

    /// Appends one record whose value is `value` with the payload header written over its
    /// first bytes (one copy of the value, no zeroing).
    pub fn append(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        header: Option<PayloadHeader>,
    ) {
        if self.count == 0 {
            self.base_timestamp_ms = timestamp_ms;
            self.max_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let ts_delta = timestamp_ms - self.base_timestamp_ms;
        let key_len: i64 = key.map_or(-1, |k| k.len() as i64);
        let value_len = value.len();
        let body_len = record_body_len(ts_delta, self.count, key.map(|k| k.len()), value_len);
        let record_len = varint_len(body_len as i64) + body_len;
        self.open(record_len);
        let b = &mut self.records;
        b.reserve(record_len);
        put_varint(b, body_len as i32);
        b.put_u8(0); // record attributes
        put_varlong(b, ts_delta);
        put_varint(b, self.count);
        put_varint(b, key_len as i32);
        if let Some(k) = key {
            b.extend_from_slice(k);
        }
        put_varint(b, value_len as i32);
        let at = b.len();
        b.extend_from_slice(value);
        if let Some(h) = header {
            write_payload_header(&mut b[at..], h);
        }
        b.put_u8(0); // headers count
        self.count += 1;
    }

    /// Frames the batch (baseOffset 0; the broker assigns offsets) and resets the builder.
    /// Idempotence fields: `producer_id` -1 for none; `transactional` sets attribute bit 4 (the
    /// batch belongs to the producer's open transaction). Uncompressed batches are framed in
    /// place (the header space is reserved up front), so sealing copies nothing. The builder is
    /// empty afterwards, also when compression fails (those records are dropped).
    pub fn seal(
        &mut self,
        compression: Compression,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
        transactional: bool,
    ) -> Result<Bytes, BatchError> {
        self.open(0);
        let count = std::mem::take(&mut self.count);
        // Uncompressed, the batch is framed in place and split off the buffer, whose spare
        // capacity stays for the next batch; compressed, the body gets a buffer of its own.
        let mut out = if compression == Compression::None {
            self.records.split()
        } else {
            let body =
                compress(compression, &self.records[BATCH_HEADER_LEN..]).map(|b| b.into_owned());
            self.records.clear();
            let body = body?;
            let mut out = BytesMut::with_capacity(BATCH_HEADER_LEN + body.len());
            out.resize(BATCH_HEADER_LEN, 0);
            out.extend_from_slice(&body);
            out
        };
        let batch_length = (out.len() - LOG_OVERHEAD) as i32;
        let mut h = [0u8; BATCH_HEADER_LEN];
        h[0..8].copy_from_slice(&0i64.to_be_bytes()); // base offset
        h[8..12].copy_from_slice(&batch_length.to_be_bytes());
        h[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        h[16] = 2; // magic
                   // 17..21: crc, below
        let attributes = compression.id() | if transactional { ATTR_TRANSACTIONAL } else { 0 };
        h[21..23].copy_from_slice(&attributes.to_be_bytes());
        h[23..27].copy_from_slice(&(count - 1).to_be_bytes()); // last offset delta
        h[27..35].copy_from_slice(&self.base_timestamp_ms.to_be_bytes());
        h[35..43].copy_from_slice(&self.max_timestamp_ms.to_be_bytes());
        h[43..51].copy_from_slice(&producer_id.to_be_bytes());
        h[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
        h[53..57].copy_from_slice(&base_sequence.to_be_bytes());
        h[57..61].copy_from_slice(&count.to_be_bytes());
        out[..BATCH_HEADER_LEN].copy_from_slice(&h);
        let crc = compute_crc(&out);
        out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(out.freeze())
    }
}

fn compress(c: Compression, raw: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, BatchError> {
    use std::io::Write;
    let err = |e: std::io::Error| BatchError::Compress(e.to_string());
    Ok(match c {
        Compression::None => std::borrow::Cow::Borrowed(raw),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(raw.len() / 2),
                flate2::Compression::fast(),
            );
            enc.write_all(raw).map_err(err)?;
            enc.finish().map_err(err)?.into()
        }
        // Raw snappy block: what librdkafka produces and Kafka accepts for magic v2.
        Compression::Snappy => snap::raw::Encoder::new()
            .compress_vec(raw)
            .map_err(|e| BatchError::Compress(e.to_string()))?
            .into(),
        // LZ4 frame format (Kafka's KafkaLZ4BlockOutputStream writes standard frames for v1+).
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(raw.len() / 2));
            enc.write_all(raw).map_err(err)?;
            enc.finish()
                .map_err(|e| BatchError::Compress(e.to_string()))?
                .into()
        }
        Compression::Zstd => zstd::bulk::compress(raw, 1).map_err(err)?.into(),
    })
}

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

fn decompress(codec: i16, data: &[u8]) -> Result<Vec<u8>, BatchError> {
    use std::io::Read;
    let err = |e: String| BatchError::Decompress { codec, detail: e };
    let mut out = Vec::with_capacity(data.len() * 2);
    match codec {
        1 => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .map_err(|e| err(e.to_string()))?;
        }
        2 => {
            if data.len() >= 16 && data[..8] == XERIAL_MAGIC {
                // xerial framing (Java producers): 16-byte header, then (i32 length, block)*.
                let mut pos = 16;
                while pos + 4 <= data.len() {
                    let n = u32::from_be_bytes([
                        data[pos],
                        data[pos + 1],
                        data[pos + 2],
                        data[pos + 3],
                    ]) as usize;
                    pos += 4;
                    let block = data
                        .get(pos..pos + n)
                        .ok_or_else(|| err("xerial block".into()))?;
                    out.extend(
                        snap::raw::Decoder::new()
                            .decompress_vec(block)
                            .map_err(|e| err(e.to_string()))?,
                    );
                    pos += n;
                }
            } else {
                out = snap::raw::Decoder::new()
                    .decompress_vec(data)
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        3 => {
            lz4_flex::frame::FrameDecoder::new(data)
                .read_to_end(&mut out)
                .map_err(|e| err(e.to_string()))?;
        }
        4 => {
            zstd::stream::read::Decoder::new(data)
                .and_then(|mut d| d.read_to_end(&mut out))
                .map_err(|e| err(e.to_string()))?;
        }
        other => return Err(err(format!("unknown codec {other}"))),
    }
    Ok(out)
}

/// One record as the consumer sees it.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub value: Option<&'a [u8]>,
}

/// Read-committed filtering of one partition's fetched records, as Kafka's consumer does it:
/// the aborted transactions a Fetch response lists (producer id, first offset) become active
/// once the walk reaches a batch ending at or after their first offset; a transactional batch
/// of an active producer id is skipped, and that producer's ABORT marker ends it.
#[derive(Debug, Default)]
pub struct AbortedTxns {
    /// Not reached yet: (first offset, producer id), the lowest first offset last.
    upcoming: Vec<(i64, i64)>,
    /// Producer ids whose aborted transaction the walk is inside.
    active: Vec<i64>,
}

impl AbortedTxns {
    /// From a Fetch response's `(producer id, first offset)` list.
    pub fn new(list: impl IntoIterator<Item = (i64, i64)>) -> AbortedTxns {
        let mut upcoming: Vec<(i64, i64)> = list.into_iter().map(|(p, f)| (f, p)).collect();
        upcoming.sort_unstable_by(|a, b| b.cmp(a));
        AbortedTxns {
            upcoming,
            active: Vec::new(),
        }
    }

    fn reach(&mut self, last_offset: i64) {
        while let Some(&(first, pid)) = self.upcoming.last() {
            if first > last_offset {
                break;
            }
            self.upcoming.pop();
            if !self.active.contains(&pid) {
                self.active.push(pid);
            }
        }
    }
}

/// What a walk saw besides data records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalkCounts {
    /// Data records of transactional batches that were passed on.
    pub transactional_records: u64,
    pub commit_markers: u64,
    pub abort_markers: u64,
    /// Records of aborted transactions skipped (read_committed only).
    pub aborted_records: u64,
}

impl WalkCounts {
    pub fn add(&mut self, o: &WalkCounts) {
        self.transactional_records += o.transactional_records;
        self.commit_markers += o.commit_markers;
        self.abort_markers += o.abort_markers;
        self.aborted_records += o.aborted_records;
    }
}

/// The complete batches of a fetched record set with their parsed headers, in order; a trailing
/// partial batch (allowed in Fetch responses) is left out. Framing only: no CRC.
fn complete_batches(
    records: &[u8],
) -> impl Iterator<Item = Result<(&[u8], BatchHeader), BatchError>> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if records.len() - pos < LOG_OVERHEAD {
            return None;
        }
        let len = i32::from_be_bytes([
            records[pos + 8],
            records[pos + 9],
            records[pos + 10],
            records[pos + 11],
        ]);
        if len < 0 {
            pos = records.len();
            return Some(Err(BatchError::Framing(format!(
                "negative batch length {len}"
            ))));
        }
        let total = LOG_OVERHEAD + len as usize;
        if records.len() - pos < total {
            return None; // partial batch at the end of a fetch
        }
        let batch = &records[pos..pos + total];
        pos += total;
        Some(
            BatchHeader::parse(batch)
                .map(|hdr| (batch, hdr))
                .map_err(|e| BatchError::Framing(e.to_string())),
        )
    })
}

/// The offset after the last complete batch of a fetched record set (the next fetch offset),
/// from the batches' framing alone: what [`walk_records`] returns for an intact record set, read
/// first so that a consumer can send its next Fetch before checking the records.
pub fn next_fetch_offset(records: &[u8]) -> Result<Option<i64>, BatchError> {
    let mut next = None;
    for batch in complete_batches(records) {
        next = Some(batch?.1.last_offset() + 1);
    }
    Ok(next)
}

/// Walks the batches of a fetched record set, calling `f` for every data record (control batches
/// skipped). A trailing partial batch (allowed in Fetch responses) is ignored. CRCs are checked.
/// Returns the offset after the last complete batch (the next fetch offset), if any.
pub fn for_each_record(
    records: &[u8],
    f: impl FnMut(RecordView<'_>),
) -> Result<Option<i64>, BatchError> {
    walk_records(records, None, &mut WalkCounts::default(), f)
}

/// [`for_each_record`] that also counts transactional records and end-transaction markers and,
/// given the partition's aborted transactions (read_committed), skips their records.
pub fn walk_records(
    records: &[u8],
    mut aborted: Option<&mut AbortedTxns>,
    counts: &mut WalkCounts,
    mut f: impl FnMut(RecordView<'_>),
) -> Result<Option<i64>, BatchError> {
    let mut next = None;
    for batch in complete_batches(records) {
        let (batch, hdr) = batch?;
        if compute_crc(batch) != hdr.crc {
            return Err(BatchError::Crc {
                base_offset: hdr.base_offset,
            });
        }
        next = Some(hdr.last_offset() + 1);
        if let Some(a) = aborted.as_deref_mut() {
            if hdr.producer_id >= 0 {
                a.reach(hdr.last_offset());
            }
        }
        if hdr.attributes & ATTR_CONTROL != 0 {
            match EndTxnMarker::of_batch(batch) {
                Some(m) if m.commit => counts.commit_markers += 1,
                Some(_) => {
                    counts.abort_markers += 1;
                    if let Some(a) = aborted.as_deref_mut() {
                        a.active.retain(|&p| p != hdr.producer_id);
                    }
                }
                None => {}
            }
            continue;
        }
        let transactional = hdr.attributes & ATTR_TRANSACTIONAL != 0;
        if transactional {
            let n = hdr.records_count.max(0) as u64;
            if aborted
                .as_deref()
                .is_some_and(|a| a.active.contains(&hdr.producer_id))
            {
                counts.aborted_records += n;
                continue;
            }
            counts.transactional_records += n;
        }
        let codec = hdr.attributes & ATTR_COMPRESSION_MASK;
        let body = &batch[BATCH_HEADER_LEN..];
        let owned;
        let body: &[u8] = if codec == 0 {
            body
        } else {
            owned = decompress(codec, body)?;
            &owned
        };
        let mut p = 0;
        for _ in 0..hdr.records_count.max(0) {
            let rec = parse_record(body, &mut p).ok_or(BatchError::Record)?;
            f(RecordView {
                offset: hdr.base_offset + rec.0,
                value: rec.1,
            });
        }
    }
    Ok(next)
}

fn parse_record<'a>(b: &'a [u8], pos: &mut usize) -> Option<(i64, Option<&'a [u8]>)> {
    let len = get_varlong(b, pos)?;
    let end = pos.checked_add(usize::try_from(len).ok()?)?;
    if end > b.len() {
        return None;
    }
    let mut p = *pos + 1; // attributes
    let _ts_delta = get_varlong(b, &mut p)?;
    let offset_delta = get_varlong(b, &mut p)?;
    let key_len = get_varlong(b, &mut p)?;
    if key_len > 0 {
        p += key_len as usize;
    }
    let value_len = get_varlong(b, &mut p)?;
    let value = if value_len >= 0 {
        let v = b.get(p..p + value_len as usize)?;
        Some(v)
    } else {
        None
    };
    *pos = end;
    Some((offset_delta, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use odradek::protocol::record_batch::validate;

    #[test]
    fn every_codec_round_trips_and_validates() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut b = BatchBuilder::new(4096);
            for i in 0..10u64 {
                b.append(
                    1000 + i as i64,
                    Some(b"key"),
                    &[0x61; 100],
                    Some(PayloadHeader {
                        producer: 7,
                        sequence: i,
                        send_time_us: 42,
                    }),
                );
            }
            let sealed = b.seal(c, 5, 0, 0, false).unwrap();
            assert!(b.count == 0 && b.records.is_empty());
            let hdr = validate(&sealed).unwrap();
            assert_eq!(hdr.records_count, 10);
            assert_eq!(hdr.compression() as i16, c.id());
            let mut seen = Vec::new();
            let next = for_each_record(&sealed, |r| {
                let h = read_payload_header(r.value.unwrap()).unwrap();
                seen.push((r.offset, h.sequence));
            })
            .unwrap();
            assert_eq!(next, Some(10));
            assert_eq!(seen, (0..10).map(|i| (i as i64, i)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn record_len_sizes_a_batch_exactly_so_it_is_allocated_once() {
        for (key, ts_step) in [
            (None, 0),
            (Some(&b"12345678"[..]), 1),
            (Some(&b"k"[..]), 700),
        ] {
            let ts = |i: i64| 1_764_870_000_000 + i * ts_step;
            let predicted: usize = (0..300)
                .map(|i| record_len(ts(i) - ts(0), i as i32, key.map(|k| k.len()), 1024))
                .sum();
            let mut b = BatchBuilder::new(predicted);
            assert_eq!(b.records.capacity(), 0, "no buffer before the first record");
            for i in 0..300 {
                b.append(ts(i), key, &[0x61; 1024], None);
            }
            assert_eq!(b.records.len(), BATCH_HEADER_LEN + predicted);
            assert_eq!(
                b.records.capacity(),
                BATCH_HEADER_LEN + predicted,
                "never grew"
            );
            let sealed = b.seal(Compression::None, -1, -1, -1, false).unwrap();
            assert_eq!(sealed.len(), BATCH_HEADER_LEN + predicted);
            assert_eq!(validate(&sealed).unwrap().records_count, 300);
            assert_eq!(b.records.capacity(), 0, "a sealed builder keeps no buffer");
        }
    }

    /// A transactional batch of `n` records of producer `pid` at `base`.
    fn txn_batch(pid: i64, base: i64, n: u64) -> Vec<u8> {
        let mut b = BatchBuilder::new(1024);
        for _ in 0..n {
            b.append(0, None, &[0x61; 30], None);
        }
        let mut v = b.seal(Compression::None, pid, 0, 0, true).unwrap().to_vec();
        v[..8].copy_from_slice(&base.to_be_bytes()); // outside the CRC
        v
    }

    fn marker(pid: i64, at: i64, commit: bool) -> Vec<u8> {
        let mut v = EndTxnMarker {
            commit,
            coordinator_epoch: 0,
        }
        .encode_batch(pid, 0, 0);
        v[..8].copy_from_slice(&at.to_be_bytes());
        v
    }

    #[test]
    fn read_committed_skips_aborted_transactions() {
        // Producer 5 aborts [0, 3) (marker at 5), producer 6 commits [3, 5) (marker at 6),
        // then producer 5's next transaction [7, 8) is open.
        let mut set = Vec::new();
        for part in [
            txn_batch(5, 0, 3),
            txn_batch(6, 3, 2),
            marker(5, 5, false),
            marker(6, 6, true),
            txn_batch(5, 7, 1),
        ] {
            set.extend_from_slice(&part);
        }
        assert_eq!(
            validate(&txn_batch(5, 0, 3)).unwrap().attributes & 0x10,
            0x10
        );

        let mut seen = Vec::new();
        let mut counts = WalkCounts::default();
        let mut aborted = AbortedTxns::new([(5, 0)]);
        let next = walk_records(&set, Some(&mut aborted), &mut counts, |r| {
            seen.push(r.offset)
        });
        assert_eq!(next.unwrap(), Some(8));
        assert_eq!(seen, vec![3, 4, 7]);
        let want = WalkCounts {
            transactional_records: 3,
            commit_markers: 1,
            abort_markers: 1,
            aborted_records: 3,
        };
        assert_eq!(counts, want);

        // read_uncommitted sees every data record.
        let mut seen = Vec::new();
        let mut counts = WalkCounts::default();
        walk_records(&set, None, &mut counts, |r| seen.push(r.offset)).unwrap();
        assert_eq!(seen, vec![0, 1, 2, 3, 4, 7]);
        assert_eq!(counts.transactional_records, 6);
        assert_eq!(counts.aborted_records, 0);
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut b = Vec::new();
            put_varlong(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            let mut p = 0;
            assert_eq!(get_varlong(&b, &mut p), Some(v));
        }
    }

    #[test]
    fn partial_trailing_batch_is_ignored() {
        let mut b = BatchBuilder::new(1024);
        b.append(0, None, &[0; 30], None);
        let one = b.seal(Compression::None, -1, -1, -1, false).unwrap();
        let mut two = one.to_vec();
        two.extend_from_slice(&one[..20]);
        let mut n = 0;
        assert_eq!(for_each_record(&two, |_| n += 1).unwrap(), Some(1));
        assert_eq!(n, 1);
    }

    #[test]
    fn the_next_fetch_offset_comes_from_the_framing_as_the_walk_finds_it() {
        let mut set = txn_batch(7, 0, 3);
        set.extend_from_slice(&txn_batch(7, 3, 5));
        let whole = set.len();
        set.extend_from_slice(&txn_batch(7, 8, 2)[..30]); // a partial batch: not counted
        let walked = for_each_record(&set, |_| {}).unwrap();
        assert_eq!(walked, Some(8));
        assert_eq!(next_fetch_offset(&set).unwrap(), walked);
        assert_eq!(next_fetch_offset(&set[..20]).unwrap(), None);
        assert_eq!(next_fetch_offset(&[]).unwrap(), None);
        // Framing only: a damaged record leaves the offsets readable, and the walk reports it.
        set[whole - 1] ^= 0xff;
        assert_eq!(next_fetch_offset(&set).unwrap(), Some(8));
        assert!(matches!(
            for_each_record(&set, |_| {}),
            Err(BatchError::Crc { base_offset: 3 })
        ));
        // A negative length is an error for both.
        set[8..12].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(next_fetch_offset(&set).is_err());
        assert!(for_each_record(&set, |_| {}).is_err());
    }
}
