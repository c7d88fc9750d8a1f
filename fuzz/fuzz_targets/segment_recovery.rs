//! Fuzz target `segment_recovery`: what the broker reads back from its data directory after a
//! crash, when the files may hold anything: a torn or corrupted `.log` segment, and the
//! `.index`, `.timeindex`, `.txnindex`, producer-snapshot and state files beside it.
//!
//! The first input byte picks what the rest is:
//! - 0-3 (half of all inputs): a segment image for the recovery scan. Byte 1 chooses the
//!   expected first offset and minimum leader epoch and whether to repair the image first (set
//!   each batch's base offset to where the previous one ended and recompute its CRC, so that
//!   long valid prefixes are common and the scan's later checks are reached).
//! - 4: an offset index and a time index; 5: a producer snapshot, also inside a state file;
//!   6: an aborted-transaction index; 7: a state file.
//!
//! Properties checked beyond "no panic":
//! - the scan's valid prefix is a sequence of whole batches that `validate_stored` accepts,
//!   contiguous in position and in offsets from the expected offset, with leader epochs that never
//!   go back; its stop reason agrees with the bytes that follow; rescanning the prefix alone gives
//!   the same batches and a clean end, and rescanning a shorter prefix gives a prefix of them;
//! - recovery's rebuild from those batches (indexes, producer state, aborted transactions)
//!   encodes to files that decode to the same thing under the checks recovery applies;
//! - any index, snapshot or state file that decodes re-encodes to the same bytes (or, for the
//!   producer snapshot, to a snapshot of the same state).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use odradek::io::state_file::{decode_state, encode_state};
use odradek::protocol::record_batch::{
    compute_crc, validate_stored, BASE_OFFSET_AT, BATCH_HEADER_LEN, BATCH_LENGTH_AT, CRC_AT,
    LAST_OFFSET_DELTA_AT, LEADER_EPOCH_AT, LOG_OVERHEAD, MIN_BATCH_LENGTH,
};
use odradek::protocol::records::EndTxnMarker;
use odradek::storage::index::{OffsetIndex, SegmentIndexes, TimeIndex};
use odradek::storage::producer_state::{BatchMeta, ProducerStateMachine};
use odradek::storage::recovery::{scan, InvalidBatch, ScanStop, ScannedBatch};
use odradek::storage::txn_index::{self, AbortedTxn};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0..=3 => segment(rest),
        4 => indexes(rest),
        5 => producer_snapshot(rest),
        6 => aborted_index(rest),
        _ => state_file(rest),
    }
});

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Makes each whole batch of the image start where the previous one ended (offsets, epochs)
/// and carry a correct CRC; stops at the first header whose length does not fit.
fn repair(image: &mut [u8], mut next: i64, epoch: i32) {
    let mut pos = 0usize;
    while image.len() - pos >= BATCH_HEADER_LEN {
        let len = be_i32(image, pos + BATCH_LENGTH_AT);
        if len < MIN_BATCH_LENGTH || (len as usize) > image.len() - pos - LOG_OVERHEAD {
            return;
        }
        let total = LOG_OVERHEAD + len as usize;
        let b = &mut image[pos..pos + total];
        b[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&next.to_be_bytes());
        b[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
        let crc = compute_crc(b);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let delta = be_i32(b, LAST_OFFSET_DELTA_AT).max(0);
        next = next.saturating_add(i64::from(delta) + 1);
        pos += total;
    }
}

fn segment(rest: &[u8]) {
    let Some((&mode, image)) = rest.split_first() else {
        return;
    };
    // Expected offsets stay far from i64::MAX: a segment's base offset comes from its file name,
    // which the broker itself chose by counting records.
    let expected: i64 = match mode & 0x03 {
        0 => 0,
        1 => 1_000,
        2 => 1 << 40,
        _ => 7,
    };
    let min_epoch: i32 = match (mode >> 2) & 0x03 {
        0 => i32::MIN,
        1 => -1,
        2 => 0,
        _ => 5,
    };
    let mut image = image.to_vec();
    if mode & 0x10 != 0 {
        let epoch = if mode & 0x20 != 0 {
            min_epoch.max(0)
        } else {
            9
        };
        repair(&mut image, expected, epoch);
    }
    let (outcome, batches) = scan(&image, expected, min_epoch);

    // The valid prefix: whole, valid, contiguous batches.
    assert!(outcome.valid_len <= image.len());
    let mut pos = 0u64;
    let mut next = expected;
    let mut epoch = min_epoch;
    for b in &batches {
        assert_eq!(b.position, pos);
        let bytes = &image[pos as usize..(pos + b.len()) as usize];
        let h = validate_stored(bytes).expect("a scanned batch validates");
        assert_eq!(h, b.header);
        assert_eq!(
            h.base_offset, next,
            "offsets contiguous from the expected one"
        );
        assert!(h.partition_leader_epoch >= epoch, "leader epoch went back");
        let marker = if h.is_control() {
            EndTxnMarker::of_batch(bytes)
        } else {
            None
        };
        assert_eq!(b.marker, marker);
        next = h.last_offset() + 1;
        epoch = h.partition_leader_epoch;
        pos += b.len();
    }
    assert_eq!(pos as usize, outcome.valid_len);
    assert_eq!(outcome.next_offset, next);
    assert_eq!(outcome.leader_epoch, epoch);

    // The stop reason agrees with what follows the prefix.
    let tail = &image[outcome.valid_len..];
    match &outcome.stop {
        ScanStop::End => assert!(tail.is_empty()),
        ScanStop::Incomplete { needed } => assert!(*needed > tail.len()),
        ScanStop::Invalid(InvalidBatch::Zeros) => {
            assert!(tail.len() >= LOG_OVERHEAD && tail[..LOG_OVERHEAD].iter().all(|b| *b == 0))
        }
        ScanStop::Invalid(_) => {
            let (again, found) = scan(tail, next, epoch);
            assert!(found.is_empty() && again.valid_len == 0);
        }
    }

    // Rescanning the valid prefix alone ends cleanly with the same batches; a shorter prefix
    // gives the batches wholly inside it.
    let (whole, same) = scan(&image[..outcome.valid_len], expected, min_epoch);
    assert_eq!(whole.stop, ScanStop::End);
    assert_eq!(same, batches);
    if outcome.valid_len > 0 {
        let cut = outcome.valid_len - 1 - (mode as usize >> 6) % outcome.valid_len;
        let (_, fewer) = scan(&image[..cut], expected, min_epoch);
        let inside = batches
            .iter()
            .take_while(|b| b.position + b.len() <= cut as u64)
            .count();
        assert_eq!(fewer, batches[..inside]);
    }

    rebuild(&batches, expected, next, outcome.valid_len as u64);
}

/// What recovery builds from the scanned batches, written out and read back as recovery reads
/// its files.
fn rebuild(batches: &[ScannedBatch], base: i64, next: i64, size: u64) {
    // Indexes, with the relative offsets recovery computes (a segment spans < 2^32 offsets).
    if next - base - 1 <= i64::from(u32::MAX) {
        let mut ix = SegmentIndexes::new();
        for b in batches {
            let rel_last = (b.header.last_offset() - base) as u32;
            ix.on_batch(64, rel_last, b.position, b.len(), b.header.max_timestamp);
        }
        ix.seal_time_entry();
        let offsets = ix.offsets.encode();
        let decoded = OffsetIndex::decode(&offsets, size.max(1)).expect("our offset index");
        assert_eq!(decoded, ix.offsets);
        let max_rel = (next - base - 1).clamp(0, i64::from(u32::MAX)) as u32;
        let times = ix.times.encode();
        let decoded = TimeIndex::decode(&times, max_rel).expect("our time index");
        assert_eq!(decoded, ix.times);
    }

    // Producer state and aborted transactions, replayed as recovery does.
    let mut producers = ProducerStateMachine::new();
    let mut aborted: Vec<AbortedTxn> = Vec::new();
    for b in batches {
        let h = &b.header;
        let ended = producers.apply(
            h.producer_id,
            h.producer_epoch,
            BatchMeta {
                first_seq: h.base_sequence,
                last_seq: h.last_sequence(),
                base_offset: h.base_offset,
                last_offset: h.last_offset(),
            },
            h.max_timestamp,
            h.is_transactional() && !h.is_control(),
            b.marker,
        );
        if let Some(t) = ended.filter(|t| t.aborted) {
            aborted.push(AbortedTxn {
                producer_id: t.producer_id,
                first_offset: t.first_offset,
                last_offset: t.marker_offset,
                last_stable_offset: producers
                    .first_unstable_offset()
                    .unwrap_or(t.marker_offset + 1),
            });
        }
    }
    let snapshot = producers.encode();
    let back = ProducerStateMachine::decode(&snapshot).expect("our producer snapshot decodes");
    assert_eq!(back, producers);
    let file = encode_state(&snapshot);
    assert_eq!(
        decode_state(Path::new("fuzz"), &file).expect("our state file"),
        snapshot
    );
    if base >= 0 {
        let index = txn_index::encode(&aborted);
        let back = txn_index::decode(&index, base, next).expect("our aborted-transaction index");
        assert_eq!(back, aborted);
    }
}

fn indexes(rest: &[u8]) {
    let Some((&sel, buf)) = rest.split_first() else {
        return;
    };
    let segment_bytes = 1u64 << (sel % 40);
    if let Ok(ix) = OffsetIndex::decode(buf, segment_bytes) {
        assert_eq!(ix.encode(), buf);
        let entries = ix.entries();
        for (i, &(r, p)) in entries.iter().enumerate() {
            assert!(u64::from(p) < segment_bytes);
            if i > 0 {
                assert!(r > entries[i - 1].0 && p > entries[i - 1].1);
            }
            // A lookup at an entry's offset starts at that entry's batch (or later).
            assert_eq!(ix.lookup(r), p);
        }
        assert_eq!(
            ix.lookup(entries.first().map_or(u32::MAX, |e| e.0).saturating_sub(1)),
            if entries.first().is_some_and(|e| e.0 == 0) {
                entries[0].1
            } else {
                0
            }
        );
    }
    let max_rel = u32::from_be_bytes([sel, sel, 0xff, sel]);
    if let Ok(ix) = TimeIndex::decode(buf, max_rel) {
        assert_eq!(ix.encode(), buf);
        let entries = ix.entries();
        for (i, &(t, r)) in entries.iter().enumerate() {
            assert!(r <= max_rel);
            if i > 0 {
                assert!(t > entries[i - 1].0 && r > entries[i - 1].1);
                // Scanning for t starts right after the previous entry's last offset.
                assert_eq!(ix.scan_start(t), entries[i - 1].1.saturating_add(1));
            } else {
                assert_eq!(ix.scan_start(t), 0);
            }
        }
    }
}

fn producer_snapshot(buf: &[u8]) {
    if let Some(m) = ProducerStateMachine::decode(buf) {
        let snapshot = m.encode();
        let again = ProducerStateMachine::decode(&snapshot).expect("re-encoded snapshot");
        // Compared through their encodings (the producers), not as values: a snapshot that
        // repeats a producer id decodes with a stale open-transaction entry that the encoding
        // drops (reported; the decoder should refuse such a snapshot).
        assert_eq!(again.encode(), snapshot);
        assert_eq!(again.len(), m.len());
    }
    // The same bytes as the payload of a state file, as the broker stores snapshots.
    let file = encode_state(buf);
    let payload = decode_state(Path::new("fuzz"), &file).expect("our own state file");
    assert_eq!(payload, buf);
}

fn aborted_index(rest: &[u8]) {
    if rest.len() < 2 {
        return;
    }
    let base = i64::from(rest[0]) * 100;
    let next_base = base + 1 + i64::from(rest[1]) * 1_000;
    let buf = &rest[2..];
    if let Ok(entries) = txn_index::decode(buf, base, next_base) {
        assert_eq!(txn_index::encode(&entries), buf);
        for (i, e) in entries.iter().enumerate() {
            assert!(e.producer_id >= 0);
            assert!(0 <= e.first_offset && e.first_offset < e.last_offset);
            assert!(base <= e.last_offset && e.last_offset < next_base);
            if i > 0 {
                assert!(entries[i - 1].last_offset < e.last_offset);
            }
        }
    }
}

fn state_file(buf: &[u8]) {
    if let Ok(payload) = decode_state(Path::new("fuzz"), buf) {
        // Equal but for the two reserved header bytes, which the reader does not check.
        let again = encode_state(&payload);
        assert_eq!(again.len(), buf.len());
        assert_eq!((&again[..6], &again[8..]), (&buf[..6], &buf[8..]));
    }
    // A one-bit flip anywhere in a valid file is caught.
    let file = encode_state(buf);
    if !file.is_empty() {
        let mut bad = file.clone();
        let at = usize::from(buf.first().copied().unwrap_or(0)) % bad.len();
        if (6..8).contains(&at) {
            return; // the reserved header bytes are not checked (nothing reads them)
        }
        bad[at] ^= 0x10;
        assert!(
            decode_state(Path::new("fuzz"), &bad).is_err(),
            "flip at {at} undetected"
        );
    }
}
