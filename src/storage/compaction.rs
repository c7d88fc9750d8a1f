//! Log compaction, the pure part: the key → latest offset map, and rewriting one stored batch
//! to keep only the records compaction keeps. The log drives it over whole closed segments
//! (see `PartitionLog::compact`).
//!
//! What stays, as Kafka's log cleaner keeps it:
//! - a record whose key's latest offset (in the map) is its own offset, or whose key the map does
//!   not know (newer than what was mapped), or that has no key;
//! - a tombstone (null value) likewise, until it is older than `delete.retention.ms`;
//! - offsets never change and order is kept. A batch keeps its base offset, `lastOffsetDelta`,
//!   producer fields and codec; only the records it drops are gone (compressed batches are
//!   decompressed and recompressed with the same codec). A batch left with no record is dropped
//!   and the caller covers the offsets it spanned with an empty batch, so batches stay contiguous.

use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

use crate::protocol::compression::{compress, decompress, CODEC_NONE};
use crate::protocol::record_batch::{
    compute_crc, read_zigzag, BatchError, BatchHeader, Corruption, BATCH_HEADER_LEN,
    BATCH_LENGTH_AT, CRC_AT, LOG_OVERHEAD, RECORDS_COUNT_AT,
};
use crate::protocol::records::record_end;

/// A closed segment as [`merge_runs`] sees it: offsets `[base, next)`, `size` bytes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSpan {
    pub base: i64,
    pub next: i64,
    pub size: u64,
}

/// Groups consecutive closed segments into runs that compaction writes out as one segment each
/// (Kafka's cleaner groups them the same way). Without it a topic that rolls by `segment.ms`
/// keeps one file (and one open descriptor) per roll forever, however little compaction
/// leaves in each. A run's summed current size — what its cleaned copy can be at most — stays
/// within `max_bytes` (the topic's `segment.bytes`), its offsets fit the indexes' relative
/// offsets (`last - base <= i32::MAX`), and it never spans two segments that are not adjacent.
/// A segment alone over `max_bytes` is a run of one. Returns index ranges covering `segs` in
/// order. Sizes before cleaning are the bound, so segments that only shrink in this pass merge
/// in a later one.
pub fn merge_runs(segs: &[SegmentSpan], max_bytes: u64) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0usize;
    let mut bytes = 0u64;
    for (i, s) in segs.iter().enumerate() {
        if i > start {
            let first = segs[start];
            let joins = bytes.saturating_add(s.size) <= max_bytes
                && s.next.saturating_sub(1).saturating_sub(first.base) <= i32::MAX as i64
                && segs[i - 1].next == s.base;
            if !joins {
                runs.push(start..i);
                start = i;
                bytes = 0;
            }
        }
        bytes = bytes.saturating_add(s.size);
    }
    if start < segs.len() {
        runs.push(start..segs.len());
    }
    runs
}

/// Most bytes one batch may inflate to when decompressed for compaction.
pub const DECOMPRESS_LIMIT: usize = 64 << 20;

fn key_hash(key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key)
}

/// Latest offset per key (by a 128-bit hash of the key, as Kafka maps by a hash: 24 bytes per
/// key whatever its length), bounded to `capacity` keys.
pub struct OffsetMap {
    latest: FxHashMap<u128, i64>,
    capacity: usize,
}

impl OffsetMap {
    pub fn new(capacity: usize) -> OffsetMap {
        OffsetMap {
            latest: FxHashMap::default(),
            capacity: capacity.max(1),
        }
    }

    /// Records `offset` as the latest of `key`; returns the offset this makes obsolete (the
    /// older of the two when the key was already mapped).
    pub fn put(&mut self, key: &[u8], offset: i64) -> Option<i64> {
        match self.latest.entry(key_hash(key)) {
            Entry::Vacant(v) => {
                v.insert(offset);
                None
            }
            Entry::Occupied(mut o) => {
                let old = *o.get();
                if old == offset {
                    return None;
                }
                o.insert(old.max(offset));
                Some(old.min(offset))
            }
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(&key_hash(key)).copied()
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// True when no more keys should be added (the caller stops mapping at a segment boundary).
    pub fn is_full(&self) -> bool {
        self.latest.len() >= self.capacity
    }
}

/// One record of a batch, as stored.
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub is_tombstone: bool,
    /// The record's bytes from its length prefix on (re-used as is when it is kept).
    pub raw: &'a [u8],
}

/// The records section of `batch`, decompressed if needed.
pub fn records_section(batch: &[u8], h: &BatchHeader) -> Result<Vec<u8>, BatchError> {
    let body = batch
        .get(BATCH_HEADER_LEN..h.total_len())
        .ok_or(BatchError::CorruptMessage(Corruption::Truncated {
            needed: h.total_len(),
            available: batch.len(),
        }))?;
    if h.compression() == CODEC_NONE {
        return Ok(body.to_vec());
    }
    decompress(h.compression(), body, DECOMPRESS_LIMIT)
        .map_err(|e| BatchError::CorruptMessage(Corruption::Records(e.to_string())))
}

/// Calls `f` for each record of a decompressed records section of a batch with header `h`.
pub fn for_each_record<'a>(
    records: &'a [u8],
    h: &BatchHeader,
    mut f: impl FnMut(RecordView<'a>),
) -> Result<(), BatchError> {
    let bad = |why: String| BatchError::CorruptMessage(Corruption::Records(why));
    let mut pos = 0usize;
    for _ in 0..h.records_count {
        let start = pos;
        let end = record_end(records, &mut pos).map_err(bad)?;
        let rec = &records[..end];
        let mut p = pos + 1; // attributes
        let ts_delta = read_zigzag(rec, &mut p).map_err(bad)?;
        let offset_delta = read_zigzag(rec, &mut p).map_err(bad)?;
        let key_len = read_zigzag(rec, &mut p).map_err(bad)?;
        let key = if key_len < 0 {
            None
        } else {
            let k_end = p
                .checked_add(key_len as usize)
                .filter(|e| *e <= end)
                .ok_or_else(|| bad(format!("key of {key_len} bytes overruns the record")))?;
            let k = &rec[p..k_end];
            p = k_end;
            Some(k)
        };
        let value_len = read_zigzag(rec, &mut p).map_err(bad)?;
        // A stored batch was validated, but recovery and compaction read untrusted bytes too:
        // an offset delta that overflows is a corrupt record, not a wrap (found by fuzzing).
        let offset = h
            .base_offset
            .checked_add(offset_delta)
            .ok_or_else(|| bad(format!("offset delta {offset_delta} overflows")))?;
        f(RecordView {
            offset,
            timestamp: if h.is_log_append_time() {
                h.max_timestamp
            } else {
                h.base_timestamp.saturating_add(ts_delta)
            },
            key,
            is_tombstone: value_len < 0,
            raw: &records[start..end],
        });
        pos = end;
    }
    Ok(())
}

/// Parses every record of a decompressed records section in full, as Kafka does before it
/// rewrites a batch: each record's fields (headers included) end exactly at its declared
/// length, its offset delta is its position in the batch, and nothing follows the last record.
/// Recompression needs this: passthrough stores a producer's bytes as sent, but a batch
/// rewritten with another codec must still decode, so damage is refused (CORRUPT_MESSAGE).
pub fn check_records(records: &[u8], h: &BatchHeader) -> Result<(), BatchError> {
    use crate::protocol::records::read_bytes;
    let bad = |why: String| BatchError::CorruptMessage(Corruption::Records(why));
    let mut pos = 0usize;
    for i in 0..i64::from(h.records_count) {
        let end = record_end(records, &mut pos).map_err(bad)?;
        if end == pos {
            return Err(bad(format!("record {i} is empty")));
        }
        let rec = &records[..end];
        let mut p = pos + 1; // attributes
        read_zigzag(rec, &mut p).map_err(bad)?; // timestamp delta
        let offset_delta = read_zigzag(rec, &mut p).map_err(bad)?;
        if offset_delta != i {
            return Err(bad(format!("record {i} has offset delta {offset_delta}")));
        }
        read_bytes(rec, &mut p).map_err(bad)?; // key
        read_bytes(rec, &mut p).map_err(bad)?; // value
        let headers = read_zigzag(rec, &mut p).map_err(bad)?;
        if headers < 0 {
            return Err(bad(format!("record {i} has {headers} headers")));
        }
        for _ in 0..headers {
            // Each header takes at least two bytes, so a huge count fails at the record's end.
            if read_bytes(rec, &mut p).map_err(bad)?.is_none() {
                return Err(bad(format!("record {i} has a header without a key")));
            }
            read_bytes(rec, &mut p).map_err(bad)?;
        }
        if p != end {
            return Err(bad(format!(
                "record {i} declares {} bytes but its fields take {}",
                end - pos,
                p - pos
            )));
        }
        pos = end;
    }
    if pos != records.len() {
        return Err(bad(format!(
            "{} bytes after the last record",
            records.len() - pos
        )));
    }
    Ok(())
}

/// Adds every keyed record of `batch` to `map`, calling `superseded` with each offset that a
/// later record of the same key makes obsolete.
pub fn map_batch(
    batch: &[u8],
    map: &mut OffsetMap,
    mut superseded: impl FnMut(i64),
) -> Result<(), BatchError> {
    let h = BatchHeader::parse(batch)?;
    if h.is_control() || h.records_count == 0 {
        return Ok(());
    }
    let records = records_section(batch, &h)?;
    for_each_record(&records, &h, |r| {
        if let Some(old) = r.key.and_then(|k| map.put(k, r.offset)) {
            superseded(old);
        }
    })
}

/// What compaction does with one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Every record stays: the batch is kept byte for byte.
    Unchanged,
    /// Some records stay: the rebuilt batch (same base offset and span).
    Rebuilt(Vec<u8>),
    /// No record stays.
    Empty,
}

/// Applies compaction to one stored batch: keeps the records described in the module docs;
/// tombstones with a timestamp before `tombstones_before` go. `oldest_tombstone` is lowered to
/// the timestamp of every tombstone kept (so the log knows when another pass will remove it).
pub fn filter_batch(
    batch: &[u8],
    map: &OffsetMap,
    tombstones_before: i64,
    oldest_tombstone: &mut Option<i64>,
) -> Result<Filtered, BatchError> {
    let h = BatchHeader::parse(batch)?;
    // Control batches (transaction markers) are not compacted here.
    if h.is_control() || h.records_count == 0 {
        return Ok(Filtered::Unchanged);
    }
    let records = records_section(batch, &h)?;
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut total = 0usize;
    for_each_record(&records, &h, |r| {
        let superseded = r
            .key
            .and_then(|k| map.get(k))
            .is_some_and(|latest| latest > r.offset);
        let expired_tombstone = r.is_tombstone && r.timestamp < tombstones_before;
        if !superseded && !expired_tombstone {
            kept.push(r.raw);
            if r.is_tombstone {
                *oldest_tombstone =
                    Some(oldest_tombstone.map_or(r.timestamp, |t| t.min(r.timestamp)));
            }
        }
        total += 1;
    })?;
    if kept.len() == total {
        return Ok(Filtered::Unchanged);
    }
    if kept.is_empty() {
        return Ok(Filtered::Empty);
    }
    let mut section = Vec::with_capacity(kept.iter().map(|r| r.len()).sum());
    for r in &kept {
        section.extend_from_slice(r);
    }
    let body = if h.compression() == CODEC_NONE {
        section
    } else {
        compress(h.compression(), &section)
            .map_err(|e| BatchError::CorruptMessage(Corruption::Records(e.to_string())))?
    };
    Ok(Filtered::Rebuilt(with_body(
        batch,
        &body,
        kept.len() as i32,
        h.attributes,
    )))
}

/// `batch`'s header over a new records section `body` of `records_count` records, with
/// `attributes`; length and CRC recomputed (base offset, span, timestamps and producer fields
/// stay).
fn with_body(batch: &[u8], body: &[u8], records_count: i32, attributes: i16) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    out.extend_from_slice(body);
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    out[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    out[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&records_count.to_be_bytes());
    let at = crate::protocol::record_batch::ATTRIBUTES_AT;
    out[at..at + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(&out);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The same batch with its records section written with `codec` instead (broker-side
/// recompression for a topic whose `compression.type` names a codec): attributes, length and
/// CRC follow; offsets, timestamps, producer fields and records are unchanged. Records that do
/// not parse ([`check_records`]) are CORRUPT_MESSAGE.
pub fn recompress(batch: &[u8], codec: u8) -> Result<Vec<u8>, BatchError> {
    let h = BatchHeader::parse(batch)?;
    let records = records_section(batch, &h)?;
    check_records(&records, &h)?;
    let body = if codec == CODEC_NONE {
        records
    } else {
        compress(codec, &records)
            .map_err(|e| BatchError::CorruptMessage(Corruption::Records(e.to_string())))?
    };
    let attrs =
        (h.attributes & !crate::protocol::record_batch::ATTR_COMPRESSION_MASK) | i16::from(codec);
    Ok(with_body(batch, &body, h.records_count, attrs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::{set_base_offset, validate, validate_stored};
    use crate::protocol::records::{encode_batch, for_each_record as read_records, KeyValue};

    fn kv(k: &str, v: Option<&str>) -> KeyValue {
        KeyValue {
            key: Some(k.as_bytes().to_vec()),
            value: v.map(|v| v.as_bytes().to_vec()),
        }
    }

    fn batch_at(base: i64, recs: &[KeyValue], ts: i64) -> Vec<u8> {
        let mut b = encode_batch(recs, ts);
        set_base_offset(&mut b, base).unwrap();
        b
    }

    fn keys_and_values(batch: &[u8]) -> Vec<(i64, String, Option<String>)> {
        let mut out = Vec::new();
        read_records(batch, |r| {
            out.push((
                r.offset,
                String::from_utf8_lossy(r.key.unwrap_or_default()).into_owned(),
                r.value.map(|v| String::from_utf8_lossy(v).into_owned()),
            ))
        })
        .unwrap();
        out
    }

    #[test]
    fn keeps_latest_per_key_and_offsets() {
        let old = batch_at(
            10,
            &[kv("a", Some("1")), kv("b", Some("1")), kv("a", Some("2"))],
            1000,
        );
        let new = batch_at(13, &[kv("b", Some("2")), kv("c", Some("1"))], 2000);
        let mut map = OffsetMap::new(100);
        let mut superseded = Vec::new();
        map_batch(&old, &mut map, |o| superseded.push(o)).unwrap();
        map_batch(&new, &mut map, |o| superseded.push(o)).unwrap();
        assert_eq!(
            (map.get(b"a"), map.get(b"b"), map.get(b"c")),
            (Some(12), Some(13), Some(14))
        );
        assert_eq!(superseded, vec![10, 11], "a@10 and b@11 are obsolete");

        let Filtered::Rebuilt(b) = filter_batch(&old, &map, 0, &mut None).unwrap() else {
            panic!("old batch must be rebuilt")
        };
        let h = validate_stored(&b).unwrap();
        assert!(
            validate(&b).is_err(),
            "fewer records than its span: not a producer batch"
        );
        assert_eq!(
            (h.base_offset, h.last_offset_delta, h.records_count),
            (10, 2, 1)
        );
        assert_eq!(
            keys_and_values(&b),
            vec![(12, "a".into(), Some("2".into()))]
        );
        assert_eq!(
            filter_batch(&new, &map, 0, &mut None).unwrap(),
            Filtered::Unchanged
        );
        // Everything superseded: empty.
        let gone = batch_at(20, &[kv("a", Some("0"))], 500);
        let mut map2 = OffsetMap::new(100);
        map_batch(&batch_at(21, &[kv("a", Some("x"))], 600), &mut map2, |_| {}).unwrap();
        assert_eq!(
            filter_batch(&gone, &map2, 0, &mut None).unwrap(),
            Filtered::Empty
        );
    }

    #[test]
    fn tombstones_go_after_the_horizon_only() {
        let b = batch_at(0, &[kv("a", Some("1")), kv("a", None)], 1000);
        let mut map = OffsetMap::new(10);
        map_batch(&b, &mut map, |_| {}).unwrap();
        let mut oldest = None;
        let Filtered::Rebuilt(kept) = filter_batch(&b, &map, 500, &mut oldest).unwrap() else {
            panic!("value superseded by its tombstone")
        };
        assert_eq!(keys_and_values(&kept), vec![(1, "a".into(), None)]);
        assert_eq!(oldest, Some(1000), "the kept tombstone's timestamp");
        let mut oldest = None;
        assert_eq!(
            filter_batch(&b, &map, 1001, &mut oldest).unwrap(),
            Filtered::Empty
        );
        assert_eq!(oldest, None);
    }

    #[test]
    fn compressed_batches_are_recompressed_with_their_codec() {
        use crate::protocol::compression::{CODEC_GZIP, CODEC_LZ4, CODEC_SNAPPY, CODEC_ZSTD};
        use crate::protocol::record_batch::ATTRIBUTES_AT;
        for codec in [CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD] {
            let plain = batch_at(
                5,
                &[
                    kv("k", Some("old")),
                    kv("j", Some("x")),
                    kv("k", Some("new")),
                ],
                7,
            );
            let h = BatchHeader::parse(&plain).unwrap();
            let body = compress(codec, &plain[BATCH_HEADER_LEN..]).unwrap();
            let mut b = plain[..BATCH_HEADER_LEN].to_vec();
            b.extend_from_slice(&body);
            let len = (b.len() - LOG_OVERHEAD) as i32;
            b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes());
            let attrs = (h.attributes | codec as i16).to_be_bytes();
            b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs);
            let crc = compute_crc(&b);
            b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
            validate(&b).unwrap();

            let mut map = OffsetMap::new(10);
            map_batch(&b, &mut map, |_| {}).unwrap();
            let Filtered::Rebuilt(out) = filter_batch(&b, &map, 0, &mut None).unwrap() else {
                panic!("codec {codec}: one record superseded")
            };
            let h2 = validate_stored(&out).unwrap();
            assert_eq!(h2.compression(), codec);
            assert_eq!(h2.records_count, 2);
            let section = records_section(&out, &h2).unwrap();
            let mut seen = Vec::new();
            for_each_record(&section, &h2, |r| {
                seen.push((r.offset, r.key.unwrap().to_vec()))
            })
            .unwrap();
            assert_eq!(seen, vec![(6, b"j".to_vec()), (7, b"k".to_vec())]);
        }
    }

    #[test]
    fn an_offset_delta_past_the_largest_offset_is_corrupt_not_a_wrap() {
        let b = batch_at(i64::MAX, &[kv("a", Some("1")), kv("b", Some("2"))], 1_000);
        let mut map = OffsetMap::new(10);
        let got = map_batch(&b, &mut map, |_| {});
        assert!(
            matches!(got, Err(BatchError::CorruptMessage(_))),
            "got {got:?}"
        );
    }

    #[test]
    fn recompression_between_every_pair_of_codecs_keeps_the_records() {
        use crate::protocol::compression::{CODEC_GZIP, CODEC_LZ4, CODEC_SNAPPY, CODEC_ZSTD};
        let plain = batch_at(
            0,
            &[
                kv("a", Some(&"x".repeat(500))),
                kv("b", None),
                kv("c", Some("3")),
            ],
            42,
        );
        let codecs = [CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD];
        let want = keys_and_values(&plain);
        for from in codecs {
            let src = recompress(&plain, from).unwrap();
            assert_eq!(validate(&src).unwrap().compression(), from);
            for to in codecs {
                let out = recompress(&src, to).unwrap();
                let h = validate(&out).unwrap();
                assert_eq!(h.compression(), to, "{from} -> {to}");
                assert_eq!((h.records_count, h.base_timestamp), (3, 42));
                let back = recompress(&out, CODEC_NONE).unwrap();
                assert_eq!(keys_and_values(&back), want, "{from} -> {to}");
            }
        }
    }

    /// One record by hand: length, attributes, deltas, key, value, `headers` as given, then
    /// `extra` bytes inside the declared length.
    fn raw_record(offset_delta: i64, headers: &[(&[u8], &[u8])], extra: &[u8]) -> Vec<u8> {
        use crate::protocol::records::put_varint as write_zigzag;
        let mut body = vec![0u8]; // attributes
        write_zigzag(&mut body, 0); // timestamp delta
        write_zigzag(&mut body, offset_delta);
        for field in [&b"k"[..], &b"v"[..]] {
            write_zigzag(&mut body, field.len() as i64);
            body.extend_from_slice(field);
        }
        write_zigzag(&mut body, headers.len() as i64);
        for (k, v) in headers {
            write_zigzag(&mut body, k.len() as i64);
            body.extend_from_slice(k);
            write_zigzag(&mut body, v.len() as i64);
            body.extend_from_slice(v);
        }
        body.extend_from_slice(extra);
        let mut out = Vec::new();
        write_zigzag(&mut out, body.len() as i64);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn recompression_refuses_records_that_do_not_parse() {
        use crate::protocol::compression::CODEC_GZIP;
        let template = batch_at(0, &[kv("a", Some("1")), kv("b", Some("2"))], 42);
        let with = |records: Vec<u8>, count: i32| {
            with_body(&template, &records, count, 0) // uncompressed, CRC recomputed
        };
        let good = [
            raw_record(0, &[(b"h", b"1"), (b"", b"")], b""),
            raw_record(1, &[], b""),
        ]
        .concat();
        let out = recompress(&with(good.clone(), 2), CODEC_GZIP).expect("a well-formed batch");
        let back = recompress(&out, CODEC_NONE).unwrap();
        assert_eq!(
            records_section(&back, &validate(&back).unwrap()).unwrap(),
            good
        );

        let corrupt = |records: Vec<u8>, count: i32, what: &str| {
            let batch = with(records, count);
            validate(&batch).expect("the header and CRC are fine: only the records are bad");
            match recompress(&batch, CODEC_GZIP) {
                Err(BatchError::CorruptMessage(_)) => {}
                other => panic!("{what}: {other:?}"),
            }
        };
        let first = raw_record(0, &[], b"");
        corrupt(
            [first.clone(), raw_record(1, &[], b"zz")].concat(),
            2,
            "bytes inside a record after its fields",
        );
        corrupt(
            [first.clone(), raw_record(1, &[], b""), vec![7]].concat(),
            2,
            "a byte after the last record",
        );
        corrupt(
            [first.clone(), raw_record(5, &[], b"")].concat(),
            2,
            "an offset delta out of place",
        );
        let mut headless = raw_record(1, &[(b"h", b"1")], b"");
        let key_len_at = headless.len() - 4; // header key length, key, value length, value
        headless[key_len_at] = 1; // zigzag -1: a null header key
        corrupt(
            [first.clone(), headless].concat(),
            2,
            "a header without a key",
        );
        let mut many = raw_record(1, &[], b"");
        let last = many.len() - 1;
        many[last] = 0x7e; // 63 headers in a record with no room for them
        corrupt([first.clone(), many].concat(), 2, "more headers than bytes");
        corrupt(first.clone(), 2, "fewer records than the count");
        corrupt(vec![0], 2, "an empty record");
    }

    fn spans(v: &[(i64, i64, u64)]) -> Vec<SegmentSpan> {
        v.iter()
            .map(|&(base, next, size)| SegmentSpan { base, next, size })
            .collect()
    }

    #[test]
    fn merge_runs_stay_within_the_size_and_offset_bounds() {
        // Five small neighbours of 300 bytes under a 1000-byte limit: 3 + 2.
        let s = spans(&[
            (0, 10, 300),
            (10, 20, 300),
            (20, 30, 300),
            (30, 40, 300),
            (40, 50, 300),
        ]);
        assert_eq!(merge_runs(&s, 1000), vec![0..3, 3..5]);
        // Exactly at the limit joins; one byte over does not.
        assert_eq!(merge_runs(&s, 600), vec![0..2, 2..4, 4..5]);
        assert_eq!(merge_runs(&s, 599), vec![0..1, 1..2, 2..3, 3..4, 4..5]);
        // A segment larger than the limit stays alone; its neighbours still merge.
        let s = spans(&[(0, 5, 100), (5, 9, 5000), (9, 12, 100), (12, 20, 100)]);
        assert_eq!(merge_runs(&s, 1000), vec![0..1, 1..2, 2..4]);
        // Not adjacent (a gap between two segments): never one run.
        let s = spans(&[(0, 5, 10), (7, 9, 10)]);
        assert_eq!(merge_runs(&s, 1000), vec![0..1, 1..2]);
        // The offset span must fit i32 relative offsets.
        let max = i32::MAX as i64;
        let s = spans(&[(0, 10, 1), (10, max + 1, 1), (max + 1, max + 2, 1)]);
        assert_eq!(merge_runs(&s, 1000), vec![0..2, 2..3]);
        assert_eq!(merge_runs(&[], 1000), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(merge_runs(&spans(&[(3, 4, 9)]), 1), vec![0..1]);
    }

    #[test]
    fn map_capacity_is_reported() {
        let mut m = OffsetMap::new(2);
        assert_eq!(m.put(b"a", 1), None);
        assert!(!m.is_full());
        assert_eq!(m.put(b"b", 2), None);
        assert!(m.is_full());
        // Mapping out of order still keeps the latest and reports the older one.
        assert_eq!(m.put(b"a", 5), Some(1));
        assert_eq!(m.put(b"a", 3), Some(3));
        assert_eq!(m.put(b"a", 5), None);
        assert_eq!(m.get(b"a"), Some(5));
        assert_eq!(m.len(), 2);
    }
}
