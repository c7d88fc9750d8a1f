//! Disk read-ahead for partitions read from disk (catch-up consumers), one shard's worth.
//!
//! Segment files are read with O_DIRECT, so the kernel's read-ahead never helps: a consumer
//! reading old data waits for the disk on every fetch, and the disk idles while the broker sends
//! the chunk and the consumer asks for the next. So after a read from disk the log starts reading
//! the next chunk of that segment in the background ([`ReadAhead::start`]); the consumer's next
//! fetch takes it ([`ReadAhead::take`]) while the chunk after it is read.
//!
//! Bounds: one slot per partition, at most `max_slots` per shard, each at most
//! [`READ_AHEAD_MAX_BYTES`]; a new slot beyond the limit drops the oldest (its read is cancelled).
//! A slot is only for the exact offset that follows what was served: a fetch elsewhere drops it.
//! Runs on the owning shard; `!Send`.

use std::cell::{Cell, RefCell};
use std::future::Future;

use bytes::Bytes;
use futures::channel::oneshot;
use rustc_hash::FxHashMap;

use super::cache::CachePartitionId;
use super::StorageError;

/// Largest chunk read ahead for one partition.
pub const READ_AHEAD_MAX_BYTES: usize = 1 << 20;

/// Whole batches read from one segment, contiguous in the file from `start_pos`.
pub struct Chunk {
    pub batches: Vec<Bytes>,
    pub start_pos: u64,
    /// The read buffers the batches are slices of, in order (batches lying next to each other
    /// in one of them can be served as one slice).
    pub bufs: Vec<Bytes>,
}

pub type Pending = oneshot::Receiver<Result<Chunk, StorageError>>;

struct Slot {
    segment_base: i64,
    /// Identity of the file the chunk is read from: compaction swaps a segment's file, and a
    /// chunk's positions only mean something in the file it came from.
    file_id: u64,
    offset: i64,
    seq: u64,
    chunk: Pending,
    /// The read; dropping it cancels it.
    task: glommio::Task<()>,
}

pub struct ReadAhead {
    slots: RefCell<FxHashMap<CachePartitionId, Slot>>,
    next_seq: Cell<u64>,
    max_slots: usize,
}

impl ReadAhead {
    /// At most `max_slots` chunks in flight or waiting per shard (0 disables read-ahead).
    pub fn new(max_slots: usize) -> ReadAhead {
        ReadAhead {
            slots: RefCell::new(FxHashMap::default()),
            next_seq: Cell::new(0),
            max_slots,
        }
    }

    /// The chunk read ahead for `part` if it starts exactly at `offset` of segment
    /// `segment_base` read from file `file_id`; any other slot of `part` is dropped (the
    /// consumer moved, or the segment was rewritten).
    pub fn take(
        &self,
        part: CachePartitionId,
        segment_base: i64,
        file_id: u64,
        offset: i64,
    ) -> Option<Pending> {
        let slot = self.slots.borrow_mut().remove(&part)?;
        if slot.segment_base != segment_base || slot.offset != offset || slot.file_id != file_id {
            return None; // dropping the slot cancels its read
        }
        // A read still in flight finishes for the taker (dropping the task would cancel it
        // and the fetch would read the same bytes again).
        drop(slot.task.detach());
        Some(slot.chunk)
    }

    /// Starts `read` (the chunk of segment `segment_base` from `offset`) in the background,
    /// replacing `part`'s slot; drops the oldest slot if the shard is at its limit.
    pub fn start(
        &self,
        part: CachePartitionId,
        segment_base: i64,
        file_id: u64,
        offset: i64,
        read: impl Future<Output = Result<Chunk, StorageError>> + 'static,
    ) {
        if self.max_slots == 0 {
            return;
        }
        let mut slots = self.slots.borrow_mut();
        slots.remove(&part);
        if slots.len() >= self.max_slots {
            if let Some(oldest) = slots.iter().min_by_key(|(_, s)| s.seq).map(|(p, _)| *p) {
                slots.remove(&oldest);
            }
        }
        let (tx, rx) = oneshot::channel();
        let task = glommio::spawn_local(async move {
            // Nobody waiting any more (slot dropped): nothing to do with the result.
            let _ = tx.send(read.await);
        });
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        slots.insert(
            part,
            Slot {
                segment_base,
                file_id,
                offset,
                seq,
                chunk: rx,
                task,
            },
        );
    }

    /// Forgets `part`'s slot (partition closed or deleted).
    pub fn remove_partition(&self, part: CachePartitionId) {
        self.slots.borrow_mut().remove(&part);
    }

    pub fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
