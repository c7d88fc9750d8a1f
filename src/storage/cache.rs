//! Per-shard cache of recent record batches, so tail reads (consumers keeping up) never touch the
//! disk even though segment files bypass the page cache (O_DIRECT).
//!
//! Owns: a byte budget fixed at construction, and for every registered partition the batches
//! appended recently (already carrying their assigned offsets), keyed by base offset. Eviction is
//! FIFO across all partitions of the shard (oldest appended first): tail reads want the newest
//! data, and FIFO costs O(1) per insert. Invariant: `used_bytes() <= budget_bytes()` after every
//! call. Batches larger than the whole budget are not cached.
//!
//! One instance per shard, shared by that shard's partitions through `Rc` (`!Send`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};

use super::StoredBatch;

/// Identifies a partition inside one shard's cache.
pub type CachePartitionId = u64;

struct Cached {
    last_offset: i64,
    data: StoredBatch,
    /// Insertion sequence, to tell a stale FIFO entry from a re-inserted batch.
    seq: u64,
}

#[derive(Default)]
struct Inner {
    partitions: HashMap<CachePartitionId, BTreeMap<i64, Cached>>,
    fifo: VecDeque<(CachePartitionId, i64, u64)>,
    used_bytes: usize,
    next_seq: u64,
}

impl Inner {
    /// Drops stale FIFO entries once they dominate, so the queue stays bounded by the number of
    /// live batches (amortised O(1)).
    fn compact_fifo(&mut self) {
        let live: usize = self.partitions.values().map(|m| m.len()).sum();
        if self.fifo.len() > 64 && self.fifo.len() > 2 * live {
            let parts = &self.partitions;
            self.fifo.retain(|(p, base, s)| {
                parts
                    .get(p)
                    .and_then(|m| m.get(base))
                    .is_some_and(|c| c.seq == *s)
            });
        }
    }
}

pub struct BatchCache {
    budget_bytes: usize,
    inner: RefCell<Inner>,
    next_partition: Cell<u64>,
    hits: Cell<u64>,
    misses: Cell<u64>,
}

impl BatchCache {
    pub fn new(budget_bytes: usize) -> BatchCache {
        BatchCache {
            budget_bytes,
            inner: RefCell::new(Inner::default()),
            next_partition: Cell::new(0),
            hits: Cell::new(0),
            misses: Cell::new(0),
        }
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }
    pub fn used_bytes(&self) -> usize {
        self.inner.borrow().used_bytes
    }
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }
    pub fn misses(&self) -> u64 {
        self.misses.get()
    }

    /// A fresh id for a partition opened on this shard.
    pub fn register(&self) -> CachePartitionId {
        let id = self.next_partition.get();
        self.next_partition.set(id + 1);
        id
    }

    /// Caches a batch whose offsets are `base_offset..=last_offset`.
    pub fn insert(
        &self,
        part: CachePartitionId,
        base_offset: i64,
        last_offset: i64,
        data: StoredBatch,
    ) {
        let len = data.len();
        if len > self.budget_bytes {
            return;
        }
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let map = inner.partitions.entry(part).or_default();
        if let Some(old) = map.insert(
            base_offset,
            Cached {
                last_offset,
                data,
                seq,
            },
        ) {
            inner.used_bytes -= old.data.len();
        }
        inner.used_bytes += len;
        inner.fifo.push_back((part, base_offset, seq));
        while inner.used_bytes > self.budget_bytes {
            let Some((p, base, s)) = inner.fifo.pop_front() else {
                break;
            };
            if let Some(m) = inner.partitions.get_mut(&p) {
                if m.get(&base).is_some_and(|c| c.seq == s) {
                    if let Some(c) = m.remove(&base) {
                        inner.used_bytes -= c.data.len();
                    }
                }
            }
        }
    }

    /// Whole batches starting with the one containing `offset`, contiguous, with base offsets
    /// below `upper`, at most `max_bytes` (but at least one batch). `None` (a miss) when the
    /// batch containing `offset` is not cached.
    pub fn read(
        &self,
        part: CachePartitionId,
        offset: i64,
        max_bytes: usize,
        upper: i64,
    ) -> Option<Vec<StoredBatch>> {
        let inner = self.inner.borrow();
        let found = inner.partitions.get(&part).and_then(|m| {
            let (_, first) = m.range(..=offset).next_back()?;
            if first.last_offset < offset {
                return None;
            }
            Some(m)
        });
        let Some(map) = found else {
            self.misses.set(self.misses.get() + 1);
            return None;
        };
        self.hits.set(self.hits.get() + 1);
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut expect: Option<i64> = None;
        let start = map
            .range(..=offset)
            .next_back()
            .map(|(b, _)| *b)
            .unwrap_or(offset);
        for (&base, c) in map.range(start..) {
            if base >= upper || expect.is_some_and(|e| e != base) {
                break;
            }
            if !out.is_empty() && total + c.data.len() > max_bytes {
                break;
            }
            total += c.data.len();
            out.push(c.data.clone());
            expect = Some(c.last_offset + 1);
        }
        Some(out)
    }

    /// Drops everything cached for `part` at or after `from_offset` (log truncation).
    pub fn truncate(&self, part: CachePartitionId, from_offset: i64) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        if let Some(m) = inner.partitions.get_mut(&part) {
            let removed = m.split_off(&from_offset);
            inner.used_bytes -= removed.values().map(|c| c.data.len()).sum::<usize>();
        }
        inner.compact_fifo();
    }

    /// Forgets a partition (closed or deleted). Its FIFO entries become stale and are skipped.
    pub fn remove_partition(&self, part: CachePartitionId) {
        let mut inner = self.inner.borrow_mut();
        if let Some(m) = inner.partitions.remove(&part) {
            inner.used_bytes -= m.values().map(|c| c.data.len()).sum::<usize>();
        }
        inner.compact_fifo();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn batch(n: usize, tag: u8) -> StoredBatch {
        StoredBatch::with_head(
            Bytes::from(vec![tag; n.min(61)]),
            &Bytes::from(vec![tag; n]),
        )
    }

    #[test]
    fn hit_miss_and_contiguity() {
        let c = BatchCache::new(1 << 20);
        let p = c.register();
        c.insert(p, 0, 4, batch(100, 1));
        c.insert(p, 5, 5, batch(100, 2));
        c.insert(p, 10, 12, batch(100, 3)); // gap after 5
        let r = c.read(p, 3, 1 << 20, i64::MAX).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].chunks().next().unwrap()[0], 1);
        assert!(c.read(p, 7, 100, i64::MAX).is_none());
        assert_eq!(c.read(p, 11, 100, i64::MAX).unwrap().len(), 1);
        // upper excludes batches starting at or beyond it
        assert_eq!(c.read(p, 0, 1 << 20, 5).unwrap().len(), 1);
        // max_bytes smaller than one batch still returns one
        assert_eq!(c.read(p, 0, 1, i64::MAX).unwrap().len(), 1);
        assert_eq!((c.hits(), c.misses()), (4, 1));
    }

    #[test]
    fn eviction_respects_budget_fifo_across_partitions() {
        let c = BatchCache::new(1000);
        let a = c.register();
        let b = c.register();
        for i in 0..30i64 {
            let p = if i % 2 == 0 { a } else { b };
            c.insert(p, i, i, batch(90, i as u8));
            assert!(c.used_bytes() <= 1000);
        }
        // 11 batches of 90 fit in 1000: the newest 11 (19..=29) survive.
        assert_eq!(c.used_bytes(), 990);
        assert!(c.read(a, 18, 10, i64::MAX).is_none());
        assert!(c.read(b, 19, 10, i64::MAX).is_some());
        assert!(c.read(a, 28, 10, i64::MAX).is_some());
        c.insert(a, 100, 100, batch(2000, 0)); // larger than the budget: ignored
        assert_eq!(c.used_bytes(), 990);
        c.remove_partition(a);
        assert_eq!(c.used_bytes(), 540);
        c.truncate(b, 25);
        assert_eq!(c.used_bytes(), 270);
    }
}
