//! Sparse offset index and time index of one segment, kept in memory and written to
//! `<base>.index` / `<base>.timeindex` when the segment is sealed or the log closed (Kafka's file
//! names and entry layouts, so operators and tools recognise them).
//!
//! ```text
//! .index      entries of 8 bytes:  relativeOffset u32 BE | position u32 BE
//! .timeindex  entries of 12 bytes: timestamp i64 BE      | relativeOffset u32 BE
//! ```
//!
//! Offset index: entry (r, p) says the batch whose last offset is `segment_base + r` starts at
//! byte `p` of the `.log` file (Kafka's convention), so the batch containing any offset `>= r` is
//! at `p` or after it. One entry each time `index_interval_bytes` have been appended since the
//! previous one. Invariant: r and p strictly increasing, p < segment size.
//!
//! Time index: entry (t, r) says every batch whose last offset is `<= segment_base + r` has
//! `maxTimestamp <= t`. Invariant: both strictly increasing. A lookup for `ts` can therefore start
//! scanning right after the last entry with `t < ts`.
//!
//! Pure; used by the partition's shard.

use crate::io::dma::PAGE_BYTES;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("index length {len} is not a multiple of {entry}")]
    BadLength { len: usize, entry: usize },
    #[error("index entry {at} is not increasing")]
    NotMonotonic { at: usize },
    #[error("index entry {at} points past the segment end")]
    PastEnd { at: usize },
}

pub const OFFSET_ENTRY_BYTES: usize = 8;
pub const TIME_ENTRY_BYTES: usize = 12;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub fn entries(&self) -> &[(u32, u32)] {
        &self.entries
    }

    /// Appends an entry; ignored unless strictly after the last one (keeps the invariant).
    pub fn push(&mut self, rel: u32, pos: u32) {
        if self.entries.last().is_none_or(|&(r, p)| rel > r && pos > p) {
            self.entries.push((rel, pos));
        }
    }

    /// Position of a batch start from which scanning forward reaches the batch containing
    /// relative offset `rel` (0 if no entry is at or below `rel`).
    pub fn lookup(&self, rel: u32) -> u32 {
        let i = self.entries.partition_point(|&(r, _)| r <= rel);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for &(r, p) in &self.entries {
            out.extend_from_slice(&r.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Decodes and checks an index file against the segment's size.
    pub fn decode(buf: &[u8], segment_bytes: u64) -> Result<OffsetIndex, IndexError> {
        if buf.len() % OFFSET_ENTRY_BYTES != 0 {
            return Err(IndexError::BadLength {
                len: buf.len(),
                entry: OFFSET_ENTRY_BYTES,
            });
        }
        let mut entries: Vec<(u32, u32)> = Vec::with_capacity(buf.len() / OFFSET_ENTRY_BYTES);
        for (at, e) in buf.chunks_exact(OFFSET_ENTRY_BYTES).enumerate() {
            let r = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            let p = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
            if entries.last().is_some_and(|&(lr, lp)| r <= lr || p <= lp) {
                return Err(IndexError::NotMonotonic { at });
            }
            if p as u64 >= segment_bytes {
                return Err(IndexError::PastEnd { at });
            }
            entries.push((r, p));
        }
        Ok(OffsetIndex { entries })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub fn entries(&self) -> &[(i64, u32)] {
        &self.entries
    }

    /// Appends (t, r) if both are beyond the last entry.
    pub fn push(&mut self, ts: i64, rel: u32) {
        if self.entries.last().is_none_or(|&(t, r)| ts > t && rel > r) {
            self.entries.push((ts, rel));
        }
    }

    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    /// Relative offset to start scanning from to find the first batch with maxTimestamp >= ts.
    pub fn scan_start(&self, ts: i64) -> u32 {
        let i = self.entries.partition_point(|&(t, _)| t < ts);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1.saturating_add(1)
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for &(t, r) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&r.to_be_bytes());
        }
        out
    }

    /// Decodes and checks a time index; `max_rel` is the segment's last relative offset.
    pub fn decode(buf: &[u8], max_rel: u32) -> Result<TimeIndex, IndexError> {
        if buf.len() % TIME_ENTRY_BYTES != 0 {
            return Err(IndexError::BadLength {
                len: buf.len(),
                entry: TIME_ENTRY_BYTES,
            });
        }
        let mut entries: Vec<(i64, u32)> = Vec::with_capacity(buf.len() / TIME_ENTRY_BYTES);
        for (at, e) in buf.chunks_exact(TIME_ENTRY_BYTES).enumerate() {
            let mut t = [0u8; 8];
            t.copy_from_slice(&e[..8]);
            let t = i64::from_be_bytes(t);
            let r = u32::from_be_bytes([e[8], e[9], e[10], e[11]]);
            if entries.last().is_some_and(|&(lt, lr)| t <= lt || r <= lr) {
                return Err(IndexError::NotMonotonic { at });
            }
            if r > max_rel {
                return Err(IndexError::PastEnd { at });
            }
            entries.push((t, r));
        }
        Ok(TimeIndex { entries })
    }
}

/// Incremental index maintenance shared by the append path and recovery, so both produce the
/// same entries for the same bytes.
#[derive(Debug, Clone, Default)]
pub struct SegmentIndexes {
    pub offsets: OffsetIndex,
    pub times: TimeIndex,
    bytes_since_entry: u64,
    /// Max timestamp over all batches so far (-1 if none).
    pub max_timestamp: i64,
    /// Relative last offset of the latest batch (None if empty).
    pub last_rel: Option<u32>,
}

impl SegmentIndexes {
    pub fn new() -> Self {
        SegmentIndexes {
            max_timestamp: -1,
            ..Default::default()
        }
    }

    /// Restores from index files of a sealed segment.
    pub fn from_parts(
        offsets: OffsetIndex,
        times: TimeIndex,
        max_timestamp: i64,
        last_rel: Option<u32>,
    ) -> Self {
        SegmentIndexes {
            offsets,
            times,
            bytes_since_entry: 0,
            max_timestamp,
            last_rel,
        }
    }

    /// Accounts for a batch appended at `pos` whose last relative offset is `rel_last`.
    pub fn on_batch(
        &mut self,
        interval_bytes: u32,
        rel_last: u32,
        pos: u64,
        len: u64,
        max_ts: i64,
    ) {
        if self.bytes_since_entry >= interval_bytes as u64 && pos > 0 {
            // Kafka's convention: the entry names the batch's last offset.
            self.offsets.push(rel_last, pos as u32);
            self.bytes_since_entry = 0;
            self.seal_time_entry();
        }
        self.bytes_since_entry += len;
        self.max_timestamp = self.max_timestamp.max(max_ts);
        self.last_rel = Some(rel_last);
    }

    /// Records the current max timestamp in the time index (at index points and when sealing).
    pub fn seal_time_entry(&mut self) {
        if let Some(r) = self.last_rel {
            if self.max_timestamp >= 0 {
                self.times.push(self.max_timestamp, r);
            }
        }
    }
}

/// Rounds a size up to the page (what the `.log` file occupies on disk).
pub fn page_aligned(size: u64) -> u64 {
    size.div_ceil(PAGE_BYTES) * PAGE_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn offset_index_lookup_is_floor(deltas in prop::collection::vec((1u32..100, 1u32..5000), 0..200), q in 0u32..30000) {
            let mut idx = OffsetIndex::default();
            let (mut r, mut p) = (0u32, 0u32);
            for (dr, dp) in &deltas { r += dr; p += dp; idx.push(r, p); }
            let expect = idx.entries().iter().rfind(|e| e.0 <= q).map(|e| e.1).unwrap_or(0);
            prop_assert_eq!(idx.lookup(q), expect);
            let enc = idx.encode();
            prop_assert_eq!(OffsetIndex::decode(&enc, p as u64 + 1).unwrap(), idx.clone());
            if !enc.is_empty() {
                prop_assert!(OffsetIndex::decode(&enc[..enc.len() - 1], u64::MAX).is_err());
                prop_assert!(OffsetIndex::decode(&enc, p as u64).is_err());
            }
        }

        #[test]
        fn time_index_scan_start_is_safe(ts in prop::collection::vec(0i64..1000, 1..100), q in 0i64..1100) {
            // batch i has relative offset i and max timestamp ts[i]
            let mut ix = SegmentIndexes::new();
            for (i, t) in ts.iter().enumerate() {
                ix.on_batch(1, i as u32, i as u64 * 10, 10, *t);
            }
            ix.seal_time_entry();
            let start = ix.times.scan_start(q) as usize;
            // No batch before `start` qualifies, so scanning from it finds the earliest one.
            prop_assert!(ts[..start.min(ts.len())].iter().all(|t| *t < q));
            let enc = ix.times.encode();
            prop_assert_eq!(TimeIndex::decode(&enc, ts.len() as u32).unwrap(), ix.times.clone());
        }
    }
}
