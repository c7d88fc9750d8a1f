//! The aborted-transaction index of a segment (Kafka's `.txnindex`): one entry per transaction
//! whose ABORT marker lies in the segment, so a read_committed Fetch can tell the client which
//! producers' batches to drop (`aborted_transactions`) without the broker reading the data.
//!
//! ```text
//! entry (34 bytes, big-endian, Kafka's layout):
//! version i16 (0) | producer id i64 | first offset i64 | last offset i64 | last stable offset i64
//! ```
//! `first offset` is the transaction's first batch in this partition, `last offset` its marker,
//! `last stable offset` the partition's first unstable offset once the marker was written (what
//! lets a lookup stop early: every transaction that started before it has ended).
//!
//! Entries are kept in memory per segment (in marker order); a sealed segment's entries are
//! written to `<base>.txnindex` when it is sealed (only if there are any), the tail's when the
//! log is closed, and they are rebuilt by scanning when the tail is recovered. Pure; no I/O.

/// One aborted transaction (see module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

pub const ENTRY_BYTES: usize = 34;
const ENTRY_VERSION: i16 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnIndexError {
    #[error("aborted-transaction index of {len} bytes is not a whole number of entries")]
    Length { len: usize },
    #[error("aborted-transaction index entry {entry} is invalid")]
    Entry { entry: usize },
}

/// The file image of `entries`.
pub fn encode(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for e in entries {
        out.extend_from_slice(&ENTRY_VERSION.to_be_bytes());
        out.extend_from_slice(&e.producer_id.to_be_bytes());
        out.extend_from_slice(&e.first_offset.to_be_bytes());
        out.extend_from_slice(&e.last_offset.to_be_bytes());
        out.extend_from_slice(&e.last_stable_offset.to_be_bytes());
    }
    out
}

/// Reads the index of the segment covering offsets `[base, next_base)`: every marker must lie
/// in it, after its transaction's first offset, in order.
pub fn decode(buf: &[u8], base: i64, next_base: i64) -> Result<Vec<AbortedTxn>, TxnIndexError> {
    if buf.len() % ENTRY_BYTES != 0 {
        return Err(TxnIndexError::Length { len: buf.len() });
    }
    let be64 = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap_or([0xff; 8]));
    let mut out: Vec<AbortedTxn> = Vec::with_capacity(buf.len() / ENTRY_BYTES);
    for (i, e) in buf.chunks_exact(ENTRY_BYTES).enumerate() {
        let entry = AbortedTxn {
            producer_id: be64(&e[2..10]),
            first_offset: be64(&e[10..18]),
            last_offset: be64(&e[18..26]),
            last_stable_offset: be64(&e[26..34]),
        };
        let ordered = out.last().is_none_or(|p| p.last_offset < entry.last_offset);
        let valid = i16::from_be_bytes([e[0], e[1]]) == ENTRY_VERSION
            && entry.producer_id >= 0
            && (0..entry.last_offset).contains(&entry.first_offset)
            && (base..next_base).contains(&entry.last_offset)
            && ordered;
        if !valid {
            return Err(TxnIndexError::Entry { entry: i });
        }
        out.push(entry);
    }
    Ok(out)
}

/// Adds to `out` the entries of one segment that overlap the fetched range `[from, upper)`
/// (the transaction has data at or after `from` and started below `upper`). Returns true
/// when no later segment can hold one: an entry whose last stable offset is at or past
/// `upper` proves that every transaction starting below `upper` had ended by then.
pub fn collect_overlapping(
    entries: &[AbortedTxn],
    from: i64,
    upper: i64,
    out: &mut Vec<AbortedTxn>,
) -> bool {
    for e in entries {
        if e.last_offset >= from && e.first_offset < upper {
            out.push(*e);
        }
        if e.last_stable_offset >= upper {
            return true;
        }
    }
    false
}

/// The aborted transactions of a log as compaction needs them: whose data batches to remove.
#[derive(Debug, Default)]
pub struct AbortedRanges {
    by_producer: std::collections::HashMap<i64, Vec<(i64, i64)>>,
}

impl AbortedRanges {
    pub fn new<'a>(entries: impl IntoIterator<Item = &'a AbortedTxn>) -> AbortedRanges {
        let mut by_producer = std::collections::HashMap::<i64, Vec<(i64, i64)>>::new();
        for e in entries {
            by_producer
                .entry(e.producer_id)
                .or_default()
                .push((e.first_offset, e.last_offset));
        }
        AbortedRanges { by_producer }
    }

    /// A transactional data batch of `producer_id` at `base_offset` belongs to an aborted
    /// transaction (a producer's transactions never overlap, so its range decides).
    pub fn covers(&self, producer_id: i64, base_offset: i64) -> bool {
        self.by_producer.get(&producer_id).is_some_and(|r| {
            r.iter()
                .any(|(first, last)| (*first..*last).contains(&base_offset))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn txn(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn round_trip_and_bad_files() {
        let entries = vec![txn(1, 3, 10, 11), txn(2, 5, 12, 13)];
        let bytes = encode(&entries);
        assert_eq!(bytes.len(), 2 * ENTRY_BYTES);
        assert_eq!(decode(&bytes, 10, 20), Ok(entries.clone()));
        assert_eq!(
            decode(&bytes[..33], 10, 20),
            Err(TxnIndexError::Length { len: 33 })
        );
        // A marker outside the segment, or entries out of order.
        assert_eq!(
            decode(&bytes, 11, 20),
            Err(TxnIndexError::Entry { entry: 0 })
        );
        let swapped = encode(&[entries[1], entries[0]]);
        assert_eq!(
            decode(&swapped, 10, 20),
            Err(TxnIndexError::Entry { entry: 1 })
        );
        let mut bad_version = bytes.clone();
        bad_version[1] = 1;
        assert_eq!(
            decode(&bad_version, 10, 20),
            Err(TxnIndexError::Entry { entry: 0 })
        );
        assert_eq!(decode(&[], 0, 1), Ok(vec![]));
    }

    #[test]
    fn overlap_and_early_stop() {
        // Two transactions of producer 1 and 2; the second's entry proves nothing older is open
        // below offset 40.
        let entries = [txn(1, 0, 10, 5), txn(2, 20, 30, 40)];
        let mut out = Vec::new();
        assert!(!collect_overlapping(&entries, 0, 50, &mut out));
        assert_eq!(out, entries.to_vec());
        out.clear();
        // Fetch from 11: the first ended before it.
        assert!(collect_overlapping(&entries, 11, 35, &mut out));
        assert_eq!(out, vec![entries[1]]);
        out.clear();
        // Fetch [0, 15): the second starts after it, but its LSO is past 15: stop there.
        assert!(collect_overlapping(&entries, 0, 15, &mut out));
        assert_eq!(out, vec![entries[0]]);
    }

    #[test]
    fn aborted_ranges_cover_only_their_producer_and_span() {
        let r = AbortedRanges::new(&[txn(1, 10, 20, 21), txn(2, 15, 30, 31)]);
        assert!(r.covers(1, 10) && r.covers(1, 19) && r.covers(2, 29));
        assert!(!r.covers(1, 9) && !r.covers(1, 20) && !r.covers(3, 15));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes, 0, i64::MAX);
        }
    }
}
