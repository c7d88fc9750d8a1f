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
use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::StoredBatch;

/// Identifies a partition inside one shard's cache.
pub type CachePartitionId = u64;

/// Memory a cached batch costs beyond its bytes (its slot, which holds the rewritten header
/// inline, and its FIFO entry), charged against the budget so many tiny batches cannot exceed
/// it.
pub const ENTRY_OVERHEAD_BYTES: usize = 128;

struct Cached {
    base_offset: i64,
    last_offset: i64,
    data: StoredBatch,
    /// Insertion sequence: identifies this entry in the FIFO.
    seq: u64,
}

impl Cached {
    fn cost(&self) -> usize {
        self.data.len() + ENTRY_OVERHEAD_BYTES
    }
}

/// Per partition, batches in offset order (appends only ever add at the back). Globally, a FIFO
/// of (partition, seq) in insertion order. Within one partition insertion order is offset order,
/// so the partition's oldest live batch is always the front of its queue: a FIFO entry whose seq
/// is not at that front was already dropped (truncation, replacement) and is skipped. Seqs are
/// increasing within a partition's queue too.
#[derive(Default)]
struct Inner {
    partitions: FxHashMap<CachePartitionId, VecDeque<Cached>>,
    fifo: VecDeque<(CachePartitionId, u64)>,
    used_bytes: usize,
    live: usize,
    next_seq: u64,
}

/// Drops a partition's batches from `from_offset` on (they are always at the back).
fn drop_back(q: &mut VecDeque<Cached>, from_offset: i64, used_bytes: &mut usize, live: &mut usize) {
    while q.back().is_some_and(|c| c.base_offset >= from_offset) {
        if let Some(c) = q.pop_back() {
            *used_bytes -= c.cost();
            *live -= 1;
        }
    }
}

impl Inner {
    fn drop_back_from(&mut self, part: CachePartitionId, from_offset: i64) {
        if let Some(q) = self.partitions.get_mut(&part) {
            drop_back(q, from_offset, &mut self.used_bytes, &mut self.live);
        }
    }

    /// Drops stale FIFO entries once they dominate, so the queue stays bounded by the number of
    /// live batches (amortised O(1)).
    fn compact_fifo(&mut self) {
        if self.fifo.len() > 64 && self.fifo.len() > 2 * self.live {
            let parts = &self.partitions;
            self.fifo.retain(|(p, s)| {
                parts
                    .get(p)
                    .is_some_and(|q| q.binary_search_by_key(s, |c| c.seq).is_ok())
            });
        }
    }
}

pub struct BatchCache {
    /// Chunks of this shard's partitions read from disk ahead of their consumers: as many
    /// chunks of at most `READ_AHEAD_MAX_BYTES` as fit in a quarter of `budget_bytes`.
    pub readahead: super::readahead::ReadAhead,
    budget_bytes: usize,
    inner: RefCell<Inner>,
    next_partition: Cell<u64>,
    hits: Cell<u64>,
    misses: Cell<u64>,
}

impl BatchCache {
    pub fn new(budget_bytes: usize) -> BatchCache {
        BatchCache {
            readahead: super::readahead::ReadAhead::new(
                budget_bytes / 4 / super::readahead::READ_AHEAD_MAX_BYTES,
            ),
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
    /// Bytes charged against the budget: batch bytes plus [`ENTRY_OVERHEAD_BYTES`] per batch.
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

    /// Caches a batch whose offsets are `base_offset..=last_offset`, replacing anything cached
    /// for the partition at or after `base_offset`.
    pub fn insert(
        &self,
        part: CachePartitionId,
        base_offset: i64,
        last_offset: i64,
        data: StoredBatch,
    ) {
        if data.len() + ENTRY_OVERHEAD_BYTES > self.budget_bytes {
            return;
        }
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let entry = Cached {
            base_offset,
            last_offset,
            data,
            seq,
        };
        // One lookup of the partition's queue for both the replacement and the insert.
        let q = inner.partitions.entry(part).or_default();
        drop_back(q, base_offset, &mut inner.used_bytes, &mut inner.live);
        inner.used_bytes += entry.cost();
        inner.live += 1;
        q.push_back(entry);
        inner.fifo.push_back((part, seq));
        while inner.used_bytes > self.budget_bytes {
            let Some((p, s)) = inner.fifo.pop_front() else {
                break;
            };
            if let Some(q) = inner.partitions.get_mut(&p) {
                if q.front().is_some_and(|c| c.seq == s) {
                    if let Some(c) = q.pop_front() {
                        inner.used_bytes -= c.cost();
                        inner.live -= 1;
                    }
                }
            }
        }
        inner.compact_fifo();
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
        let found = inner.partitions.get(&part).and_then(|q| {
            let i = q
                .partition_point(|c| c.base_offset <= offset)
                .checked_sub(1)?;
            (q[i].last_offset >= offset).then_some((q, i))
        });
        let Some((q, first)) = found else {
            self.misses.set(self.misses.get() + 1);
            return None;
        };
        self.hits.set(self.hits.get() + 1);
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut expect: Option<i64> = None;
        for c in q.range(first..) {
            if c.base_offset >= upper || expect.is_some_and(|e| e != c.base_offset) {
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
        inner.drop_back_from(part, from_offset);
        inner.compact_fifo();
    }

    /// Drops everything cached for `part` that ends before `offset` (those offsets were
    /// rewritten on disk by compaction, or left the log).
    pub fn forget_below(&self, part: CachePartitionId, offset: i64) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        if let Some(q) = inner.partitions.get_mut(&part) {
            while q.front().is_some_and(|c| c.last_offset < offset) {
                if let Some(c) = q.pop_front() {
                    inner.used_bytes -= c.cost();
                    inner.live -= 1;
                }
            }
        }
        inner.compact_fifo();
    }

    /// Forgets a partition (closed or deleted). Its FIFO entries become stale and are skipped.
    pub fn remove_partition(&self, part: CachePartitionId) {
        self.readahead.remove_partition(part);
        let mut inner = self.inner.borrow_mut();
        if let Some(q) = inner.partitions.remove(&part) {
            inner.used_bytes -= q.iter().map(Cached::cost).sum::<usize>();
            inner.live -= q.len();
        }
        inner.compact_fifo();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn batch(n: usize, tag: u8) -> StoredBatch {
        StoredBatch::with_rewritten_head(&Bytes::from(vec![tag; n]), |_| Ok::<(), ()>(()))
            .expect("nothing to rewrite")
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
        const E: usize = ENTRY_OVERHEAD_BYTES;
        let c = BatchCache::new(11 * (90 + E) + 10);
        let a = c.register();
        let b = c.register();
        for i in 0..30i64 {
            let p = if i % 2 == 0 { a } else { b };
            c.insert(p, i, i, batch(90, i as u8));
            assert!(c.used_bytes() <= c.budget_bytes());
        }
        // 11 batches of 90 (plus overhead) fit: the newest 11 (19..=29) survive.
        assert_eq!(c.used_bytes(), 11 * (90 + E));
        assert!(c.read(a, 18, 10, i64::MAX).is_none());
        assert!(c.read(b, 19, 10, i64::MAX).is_some());
        assert!(c.read(a, 28, 10, i64::MAX).is_some());
        c.insert(a, 100, 100, batch(3000, 0)); // larger than the budget: ignored
        assert_eq!(c.used_bytes(), 11 * (90 + E));
        c.remove_partition(a);
        assert_eq!(c.used_bytes(), 6 * (90 + E)); // b keeps 19, 21, ..., 29
        c.truncate(b, 25);
        assert_eq!(c.used_bytes(), 3 * (90 + E));
        assert!(c.read(b, 25, 10, i64::MAX).is_none());
        assert!(c.read(b, 23, 10, i64::MAX).is_some());
    }

    /// The model: every partition's batches as (base, last, len, seq); eviction drops the lowest
    /// seq overall.
    #[derive(Default)]
    struct Model {
        parts: std::collections::BTreeMap<u64, Vec<(i64, i64, usize, u64)>>,
        seq: u64,
    }

    impl Model {
        fn used(&self) -> usize {
            self.parts
                .values()
                .flatten()
                .map(|e| e.2 + ENTRY_OVERHEAD_BYTES)
                .sum()
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Append `count` offsets of `len` bytes to a partition (after its end, or from one of its
        /// earlier batch starts, picked by `rewind`, as after a log truncation).
        Append {
            part: u64,
            count: i64,
            len: usize,
            rewind: Option<i64>,
        },
        Truncate {
            part: u64,
            from: i64,
        },
        Remove {
            part: u64,
        },
        Read {
            part: u64,
            offset: i64,
            max: usize,
            upper: i64,
        },
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0..3u64, 1..5i64, 1..400usize, proptest::option::weighted(0.1, 0..40i64))
                .prop_map(|(part, count, len, rewind)| Op::Append { part, count, len, rewind }),
            1 => (0..3u64, 0..60i64).prop_map(|(part, from)| Op::Truncate { part, from }),
            1 => (0..3u64).prop_map(|part| Op::Remove { part }),
            4 => (0..3u64, 0..60i64, 1..1500usize, 0..70i64)
                .prop_map(|(part, offset, max, upper)| Op::Read { part, offset, max, upper }),
        ]
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_a_simple_model(ops in proptest::collection::vec(op(), 1..200)) {
            let budget = 6 * (200 + ENTRY_OVERHEAD_BYTES);
            let c = BatchCache::new(budget);
            let ids: Vec<u64> = (0..3).map(|_| c.register()).collect();
            let mut m = Model::default();
            let mut ends = [0i64; 3];
            let mut bases: [Vec<i64>; 3] = Default::default();
            for op in ops {
                match op {
                    Op::Append { part, count, len, rewind } => {
                        // A log only ever truncates at a batch boundary.
                        let starts = &mut bases[part as usize];
                        let base = match rewind {
                            Some(r) if !starts.is_empty() => {
                                let i = r as usize % starts.len();
                                let b = starts[i];
                                starts.truncate(i);
                                b
                            }
                            _ => ends[part as usize],
                        };
                        starts.push(base);
                        let last = base + count - 1;
                        ends[part as usize] = last + 1;
                        c.insert(ids[part as usize], base, last, batch(len, base as u8));
                        if len + ENTRY_OVERHEAD_BYTES <= budget {
                            let q = m.parts.entry(part).or_default();
                            q.retain(|e| e.0 < base);
                            q.push((base, last, len, m.seq));
                            m.seq += 1;
                            while m.used() > budget {
                                let oldest = m.parts.iter()
                                    .filter_map(|(p, q)| q.first().map(|e| (e.3, *p)))
                                    .min();
                                if let Some((_, p)) = oldest {
                                    m.parts.get_mut(&p).map(|q| q.remove(0));
                                }
                            }
                        }
                    }
                    Op::Truncate { part, from } => {
                        c.truncate(ids[part as usize], from);
                        if let Some(q) = m.parts.get_mut(&part) {
                            q.retain(|e| e.0 < from);
                        }
                    }
                    Op::Remove { part } => {
                        c.remove_partition(ids[part as usize]);
                        m.parts.remove(&part);
                    }
                    Op::Read { part, offset, max, upper } => {
                        let got = c.read(ids[part as usize], offset, max, upper)
                            .map(|v| v.iter().map(|b| b.len()).collect::<Vec<_>>());
                        let q = m.parts.get(&part).cloned().unwrap_or_default();
                        let want = q.iter().position(|e| e.0 <= offset && offset <= e.1).map(|i| {
                            let mut out = Vec::new();
                            let mut total = 0;
                            let mut expect = None;
                            for e in &q[i..] {
                                if e.0 >= upper || expect.is_some_and(|x| x != e.0) { break; }
                                let len = batch(e.2, 0).len();
                                if !out.is_empty() && total + len > max { break; }
                                total += len;
                                out.push(len);
                                expect = Some(e.1 + 1);
                            }
                            out
                        });
                        proptest::prop_assert_eq!(got, want);
                    }
                }
                proptest::prop_assert_eq!(c.used_bytes(), m.used());
                proptest::prop_assert!(c.used_bytes() <= budget);
            }
        }
    }
}
