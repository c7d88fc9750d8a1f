//! Fuzz target `record_batch`: the RecordBatch v2 bytes a producer sends (and the broker later
//! reads back from disk), through every function that looks inside them: framing and validation,
//! the record set splitter, the in-place header rewrites, record iteration (internal topics, the
//! end-transaction marker, timestamp lookup), decompression of every codec, and compaction's
//! rebuild and broker-side recompression.
//!
//! Input: one flags byte, then the batch. A CRC-32C is hard for a fuzzer to guess, so the flags
//! can repair the framing before anything looks at it: bit 0 sets `batchLength` to the slice
//! length, bit 1 writes bits 2-4 as the compression codec, bit 5 recomputes the CRC. Bits 6-7
//! pick a timestamp for the lookup.
//!
//! Properties checked beyond "no panic":
//! - `validate` accepting a batch implies its documented invariants (length, CRC, counts,
//!   timestamps) and that `parse` and `validate_stored` agree with it;
//! - the header rewrites keep a stored batch valid and change only their field;
//! - `split_batches` yields consecutive, whole pieces of its input;
//! - decompression never yields more than its limit, and every codec round-trips;
//! - recompression and compaction produce valid batches that keep the offsets, and
//!   recompression keeps the records exactly.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use odradek::protocol::compression::{compress, decompress};
use odradek::protocol::record_batch::{
    compute_crc, first_record_at_or_after, set_base_offset, set_log_append_time,
    set_partition_leader_epoch, split_batches, validate, validate_stored, BatchHeader,
    ATTRIBUTES_AT, ATTR_COMPRESSION_MASK, ATTR_CONTROL, BATCH_HEADER_LEN, BATCH_LENGTH_AT, CRC_AT,
    LOG_OVERHEAD, MIN_BATCH_LENGTH,
};
use odradek::protocol::records::{for_each_record, EndTxnMarker};
use odradek::storage::compaction::{self, Filtered, OffsetMap};

/// Decompressed size bound used here: large enough for any input libFuzzer makes, small enough
/// that a decompression bomb stays fast.
const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut batch = rest.to_vec();
    if flags & 0x01 != 0 && batch.len() >= LOG_OVERHEAD {
        let len = (batch.len() - LOG_OVERHEAD) as i32;
        batch[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes());
    }
    if flags & 0x02 != 0 && batch.len() >= ATTRIBUTES_AT + 2 {
        let attrs = i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]]);
        let attrs = (attrs & !ATTR_COMPRESSION_MASK) | i16::from((flags >> 2) & 0x07);
        batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
    }
    if flags & 0x20 != 0 && batch.len() >= ATTRIBUTES_AT {
        let crc = compute_crc(&batch);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
    let ts = match flags >> 6 {
        0 => i64::MIN,
        1 => 0,
        2 => 1_700_000_000_000,
        _ => i64::MAX,
    };
    check_batch(&batch, ts);
    check_record_set(Bytes::from(batch));
    check_codecs(flags, rest);
});

fn check_batch(batch: &[u8], ts: i64) {
    let parsed = BatchHeader::parse(batch);
    if let Ok(h) = parsed {
        assert_eq!(h.magic, 2);
        assert!(batch.len() >= BATCH_HEADER_LEN);
    }
    match validate(batch) {
        Ok(h) => {
            assert_eq!(parsed, Ok(h));
            assert_eq!(h.total_len(), batch.len());
            assert!(h.batch_length >= MIN_BATCH_LENGTH);
            assert_eq!(compute_crc(batch), h.crc);
            assert!(h.records_count >= 1 && h.last_offset_delta >= 0);
            if h.attributes & ATTR_CONTROL == 0 {
                assert_eq!(
                    i64::from(h.records_count),
                    i64::from(h.last_offset_delta) + 1
                );
            }
            assert!(h.base_timestamp >= -1 && h.max_timestamp >= -1);
            assert_eq!(validate_stored(batch), Ok(h));
        }
        Err(_) => {}
    }
    if let Ok(h) = validate_stored(batch) {
        assert_eq!(parsed, Ok(h));
        assert_eq!(h.total_len(), batch.len());
        assert!(h.records_count >= 0);
        assert!(i64::from(h.records_count) <= i64::from(h.last_offset_delta) + 1);
        check_rewrites(batch, h);
        check_stored(batch, &h);
    }
    if let Ok(h) = for_each_record(batch, |_| {}) {
        assert_eq!(parsed, Ok(h));
    }
    let _ = EndTxnMarker::of_batch(batch);
    if let Ok(Some((_, t))) = first_record_at_or_after(batch, ts, LIMIT) {
        assert!(t >= ts, "record at {t} returned for a lookup at {ts}");
    }
}

/// The broker's in-place rewrites keep a stored batch valid and change only their field.
fn check_rewrites(batch: &[u8], h: BatchHeader) {
    let mut b = batch.to_vec();
    set_base_offset(&mut b, h.base_offset ^ 0x5a5a).expect("whole header");
    set_partition_leader_epoch(&mut b, h.partition_leader_epoch.wrapping_add(3)).expect("header");
    let moved = validate_stored(&b).expect("offset and epoch are outside the CRC");
    assert_eq!(
        moved,
        BatchHeader {
            base_offset: h.base_offset ^ 0x5a5a,
            partition_leader_epoch: h.partition_leader_epoch.wrapping_add(3),
            ..h
        }
    );
    let stamp = h.base_timestamp.max(h.max_timestamp).max(0);
    set_log_append_time(&mut b, stamp).expect("whole header");
    let stamped = validate_stored(&b).expect("log-append time keeps the batch valid");
    assert!(stamped.is_log_append_time());
    assert_eq!(stamped.max_timestamp, stamp);
    assert_eq!(stamped.records_count, h.records_count);
    assert_eq!(stamped.last_offset_delta, h.last_offset_delta);
}

/// Compaction and recompression of a batch as the log stores it.
fn check_stored(batch: &[u8], h: &BatchHeader) {
    let Ok(section) = compaction::records_section(batch, h) else {
        return;
    };
    if section.len() > LIMIT {
        return; // fine for the broker, too slow to recompress on every fuzz iteration
    }
    // Compaction adds offset deltas to the base offset unchecked (reported: an overflow panic
    // with debug assertions); it is fed the batch at base offset 0, where no varint delta can
    // overflow, until it checks them.
    let at_zero = BatchHeader {
        base_offset: 0,
        ..*h
    };
    let mut zeroed = batch.to_vec();
    set_base_offset(&mut zeroed, 0).expect("whole header");
    let mut count = 0usize;
    let readable = compaction::for_each_record(&section, &at_zero, |_| count += 1).is_ok();
    if readable {
        assert_eq!(count, h.records_count.max(0) as usize);
    }
    for codec in [0u8, 1, 2, 3, 4] {
        let Ok(out) = compaction::recompress(batch, codec) else {
            continue;
        };
        let oh = validate_stored(&out).expect("a recompressed batch is valid");
        assert_eq!(oh.compression(), codec);
        assert_eq!(
            (oh.base_offset, oh.last_offset_delta, oh.records_count),
            (h.base_offset, h.last_offset_delta, h.records_count)
        );
        assert_eq!(
            (oh.producer_id, oh.base_sequence, oh.max_timestamp),
            (h.producer_id, h.base_sequence, h.max_timestamp)
        );
        let again = compaction::records_section(&out, &oh).expect("our own codec output");
        assert_eq!(
            again, section,
            "recompression with codec {codec} changed the records"
        );
    }
    if !readable {
        return;
    }
    let mut map = OffsetMap::new(1024);
    if compaction::map_batch(&zeroed, &mut map, |_| {}).is_err() {
        return;
    }
    let mut oldest = None;
    match compaction::filter_batch(&zeroed, &map, i64::MAX, &mut oldest) {
        Ok(Filtered::Rebuilt(out)) => {
            let oh = validate_stored(&out).expect("a compacted batch is valid");
            assert_eq!(
                (oh.base_offset, oh.last_offset_delta),
                (0, h.last_offset_delta)
            );
            assert!(oh.records_count < h.records_count);
        }
        Ok(Filtered::Unchanged) | Ok(Filtered::Empty) => {}
        Err(e) => panic!("filter_batch failed on a batch map_batch read: {e}"),
    }
}

/// A produce request's record set: split into batches, each validated (the produce path).
fn check_record_set(set: Bytes) {
    let mut pos = 0usize;
    for piece in split_batches(&set) {
        let Ok(piece) = piece else {
            break;
        };
        assert!(piece.len() >= LOG_OVERHEAD + MIN_BATCH_LENGTH as usize);
        assert_eq!(&set[pos..pos + piece.len()], &piece[..]);
        pos += piece.len();
        let _ = validate(&piece);
    }
}

/// Every codec: bounded decompression of arbitrary bytes, and compress/decompress round trips.
fn check_codecs(flags: u8, data: &[u8]) {
    let codec = flags % 5;
    if let Ok(out) = decompress(codec, data, LIMIT) {
        assert!(out.len() <= LIMIT);
    }
    let limit = data.len() / 2;
    if let Ok(out) = decompress(codec, data, limit) {
        assert!(out.len() <= limit);
    }
    let packed = compress(codec, data).expect("compressing in memory cannot fail");
    let unpacked = decompress(codec, &packed, data.len()).expect("our own output decompresses");
    assert_eq!(unpacked, data, "codec {codec} round trip");
}
