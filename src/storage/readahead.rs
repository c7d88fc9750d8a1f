//! Disk read-ahead for partitions read from disk (catch-up consumers), one shard's worth.
//!
//! Segment files are read with O_DIRECT, so the kernel's read-ahead never helps: a consumer
//! reading old data waits for the disk on every fetch, and the disk idles while the broker sends
//! the chunk and the consumer asks for the next. So after a read from disk the log starts reading
//! the chunks of that segment that follow in the background ([`ReadAhead::put`]); the consumer's
//! next fetch takes the first ([`ReadAhead::take`]) while the ones after it are read.
//!
//! Why more than one chunk ahead: a shard finishes a fetch's reads all at about the same time
//! and then spends milliseconds of its core on them (the copy out of the DMA buffer, the CRC)
//! and on sending the answer. With one chunk ahead, each partition's next read started only
//! once its chunk had been served, so the disk idled while the core worked and the other way
//! round (W3: disk 52-56% busy, the shard 55%; `perf/2026-12-05-w3-read-ahead-depth.md`).
//! With [`READ_AHEAD_DEPTH`] chunks queued, the disk reads the chunk after next meanwhile.
//!
//! Bounds: one slot per partition holding at most [`READ_AHEAD_DEPTH`] chunks, each at most
//! [`READ_AHEAD_MAX_BYTES`], at most `max_chunks` chunks per shard. At the limit, a partition's
//! first chunk takes the place of another's second (or, failing that, of the slot read longest
//! ago; their reads are cancelled), and chunks after the first are only read while there is
//! room: many partitions each get one before any gets two.
//! A slot is only for the exact offset that follows what was served: a fetch elsewhere drops it.
//! Runs on the owning shard; `!Send`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;

use bytes::Bytes;
use futures::channel::oneshot;
use rustc_hash::FxHashMap;

use super::cache::CachePartitionId;
use super::StorageError;

/// Largest chunk read ahead for one partition.
pub const READ_AHEAD_MAX_BYTES: usize = 1 << 20;

/// Chunks a partition has read ahead at most (read or being read).
pub const READ_AHEAD_DEPTH: usize = 2;

/// Whole batches read from one segment, contiguous in the file from `start_pos`.
pub struct Chunk {
    pub batches: Vec<Bytes>,
    pub start_pos: u64,
    /// The read buffers the batches are slices of, in order (batches lying next to each other
    /// in one of them can be served as one slice).
    pub bufs: Vec<Bytes>,
}

pub type Pending = oneshot::Receiver<Result<Chunk, StorageError>>;

/// One chunk read (or being read) ahead: `len` bytes of the segment file from `start_pos`, a
/// batch start.
pub struct Ahead {
    pub start_pos: u64,
    len: u64,
    /// Whether the offset index showed a batch starting at `start_pos + len` (else the chunk
    /// ends inside a batch, which the read leaves out, and nothing can be read after it yet).
    ends_at_batch: bool,
    chunk: Pending,
    /// The read; dropping it cancels it.
    task: glommio::Task<()>,
}

impl Ahead {
    /// Starts `read` (the chunk of `len` bytes from `start_pos`) in the background.
    pub fn start(
        start_pos: u64,
        len: u64,
        ends_at_batch: bool,
        read: impl Future<Output = Result<Chunk, StorageError>> + 'static,
    ) -> Ahead {
        let (tx, rx) = oneshot::channel();
        let task = glommio::spawn_local(async move {
            // Nobody waiting any more (slot dropped): nothing to do with the result.
            let _ = tx.send(read.await);
        });
        Ahead {
            start_pos,
            len,
            ends_at_batch,
            chunk: rx,
            task,
        }
    }

    /// The chunk, once read. A read still in flight finishes for the taker (dropping the task
    /// would cancel it and the fetch would read the same bytes again).
    pub fn into_pending(self) -> Pending {
        drop(self.task.detach());
        self.chunk
    }

    /// Where the chunk after this one starts, if that is known to be a batch start.
    pub fn next_batch_pos(&self) -> Option<u64> {
        self.ends_at_batch.then_some(self.start_pos + self.len)
    }
}

struct Slot {
    segment_base: i64,
    /// Identity of the file the chunks are read from: compaction swaps a segment's file, and a
    /// chunk's positions only mean something in the file it came from.
    file_id: u64,
    /// Where the first chunk starts: the offset the consumer's next fetch asks for.
    offset: i64,
    seq: u64,
    /// Contiguous in the file, the first starting at `offset`.
    chunks: VecDeque<Ahead>,
}

pub struct ReadAhead {
    slots: RefCell<FxHashMap<CachePartitionId, Slot>>,
    next_seq: Cell<u64>,
    /// Chunks in all slots.
    chunks: Cell<usize>,
    max_chunks: usize,
}

impl ReadAhead {
    /// At most `max_chunks` chunks in flight or waiting per shard (0 disables read-ahead).
    pub fn new(max_chunks: usize) -> ReadAhead {
        ReadAhead {
            slots: RefCell::new(FxHashMap::default()),
            next_seq: Cell::new(0),
            chunks: Cell::new(0),
            max_chunks,
        }
    }

    /// The chunks read ahead for `part` if they start exactly at `offset` of segment
    /// `segment_base` read from file `file_id` (the first starts at `offset`, the others follow
    /// it in the file); any other slot of `part` is dropped (the consumer moved, or the segment
    /// was rewritten).
    pub fn take(
        &self,
        part: CachePartitionId,
        segment_base: i64,
        file_id: u64,
        offset: i64,
    ) -> Option<VecDeque<Ahead>> {
        let slot = self.remove(part)?;
        if slot.segment_base != segment_base || slot.offset != offset || slot.file_id != file_id {
            return None; // dropping the slot cancels its reads
        }
        Some(slot.chunks)
    }

    /// How many more chunks may be read ahead before the shard's limit.
    pub fn room(&self) -> usize {
        self.max_chunks.saturating_sub(self.chunks.get())
    }

    /// Whether read-ahead is on (a cache budget large enough for one chunk).
    pub fn enabled(&self) -> bool {
        self.max_chunks > 0
    }

    /// Makes `chunks` `part`'s slot: the first starts at `offset` of segment `segment_base`
    /// read from file `file_id`, the others follow. Replaces the partition's slot; over the
    /// shard's limit, other partitions' chunks give way (see [`ReadAhead::make_room`]).
    pub fn put(
        &self,
        part: CachePartitionId,
        segment_base: i64,
        file_id: u64,
        offset: i64,
        chunks: VecDeque<Ahead>,
    ) {
        self.remove(part);
        if chunks.is_empty() || self.max_chunks == 0 {
            return;
        }
        while self.chunks.get() + chunks.len() > self.max_chunks && self.make_room() {}
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        self.chunks.set(self.chunks.get() + chunks.len());
        self.slots.borrow_mut().insert(
            part,
            Slot {
                segment_base,
                file_id,
                offset,
                seq,
                chunks,
            },
        );
    }

    /// Gives up one chunk read ahead, the least needed: the last of the slot read longest ago
    /// among those holding more than one, else the slot read longest ago. False if none.
    fn make_room(&self) -> bool {
        let mut slots = self.slots.borrow_mut();
        let deep = slots
            .iter_mut()
            .filter(|(_, s)| s.chunks.len() > 1)
            .min_by_key(|(_, s)| s.seq)
            .map(|(_, s)| s);
        if let Some(slot) = deep {
            drop(slot.chunks.pop_back()); // cancels its read
            self.chunks.set(self.chunks.get() - 1);
            return true;
        }
        let oldest = slots.iter().min_by_key(|(_, s)| s.seq).map(|(p, _)| *p);
        drop(slots);
        oldest.is_some_and(|p| self.remove(p).is_some())
    }

    fn remove(&self, part: CachePartitionId) -> Option<Slot> {
        let slot = self.slots.borrow_mut().remove(&part)?;
        self.chunks.set(self.chunks.get() - slot.chunks.len());
        Some(slot)
    }

    /// Forgets `part`'s slot (partition closed or deleted).
    pub fn remove_partition(&self, part: CachePartitionId) {
        self.remove(part);
    }

    /// Partitions with chunks read ahead.
    pub fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Chunks read ahead, over all partitions.
    pub fn chunks(&self) -> usize {
        self.chunks.get()
    }
}
