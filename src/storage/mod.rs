//! Storage: per-partition segmented logs on O_DIRECT files, and the per-shard batch cache.
//!
//! - [`log`]: `PartitionLog`, the segment files, append / group-commit flush / read.
//! - [`recovery`]: the pure batch scanner used when a log is opened after a crash.
//! - [`index`]: sparse offset index and time index (Kafka's `.index` / `.timeindex` layouts).
//! - [`producer_state`]: idempotent-producer state machine (pure).
//! - [`cache`]: `BatchCache`, one per shard, memory-bounded, for tail reads.
//! - [`pacing`]: how fast background I/O (compaction) may go without slowing fdatasyncs down.
//! - [`readahead`]: the next chunk of partitions read from disk, read before it is asked for.
//!
//! Everything here runs on the shard that owns the partition (thread-per-core, `!Send` types).
//! Errors are [`StorageError`]; I/O errors carry operation, path and offset, and the server maps
//! them to KAFKA_STORAGE_ERROR for the partition concerned.

pub mod cache;
pub mod compaction;
pub mod index;
pub mod journal;
pub mod log;
pub mod pacing;
pub mod producer_state;
pub mod readahead;
pub mod recovery;
pub mod retention;
pub mod txn_index;

#[cfg(test)]
mod fault_injection;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use bytes::Bytes;

pub use cache::BatchCache;
pub use log::{segment_file_name, PartitionLog};

use crate::io::state_file::StateFileError;
use crate::io::IoFailure;
use crate::protocol::record_batch::BATCH_HEADER_LEN;

/// A batch as the log holds it in memory (pending writes, the cache): the producer's bytes,
/// untouched, behind a rewritten copy of the 61-byte fixed header (baseOffset and leader epoch
/// assigned here). Keeping the body as the `Bytes` the request arrived in saves copying every
/// produced byte once more just to change 12 header bytes; the copy into DMA buffers at flush
/// gathers the two parts.
///
/// The rewritten header lives inline, not in an allocation of its own: with 1,000 partitions
/// and one record per batch (W5) an allocated header cost two allocations per batch (the
/// header, then the shared count when the pending list and the cache each took a handle) and
/// their atomic counts. A read from the cache copies the header into a chunk of its own.
#[derive(Clone)]
pub struct StoredBatch {
    head: [u8; BATCH_HEADER_LEN],
    /// How much of `head` is in use: 0 for a batch stored whole in `body`.
    head_len: u8,
    body: Bytes,
}

impl std::fmt::Debug for StoredBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredBatch")
            .field("head", &self.head())
            .field("body", &self.body)
            .finish()
    }
}

impl StoredBatch {
    /// A batch already in its stored form (one buffer).
    pub fn whole(batch: Bytes) -> StoredBatch {
        StoredBatch {
            head: [0; BATCH_HEADER_LEN],
            head_len: 0,
            body: batch,
        }
    }

    /// `batch` behind a copy of its fixed header (of all of it, if it is shorter) that
    /// `rewrite` edits; `rewrite`'s error, if it fails.
    pub fn with_rewritten_head<E>(
        batch: &Bytes,
        rewrite: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<StoredBatch, E> {
        let len = BATCH_HEADER_LEN.min(batch.len());
        let mut head = [0; BATCH_HEADER_LEN];
        head[..len].copy_from_slice(&batch[..len]);
        rewrite(&mut head[..len])?;
        Ok(StoredBatch {
            head,
            head_len: len as u8,
            body: batch.slice(len..),
        })
    }

    fn head(&self) -> &[u8] {
        &self.head[..self.head_len as usize]
    }

    pub fn len(&self) -> usize {
        self.head_len as usize + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored bytes as slices, in order.
    pub fn parts(&self) -> impl Iterator<Item = &[u8]> {
        [self.head(), &self.body[..]]
            .into_iter()
            .filter(|p| !p.is_empty())
    }

    /// The stored bytes as chunks that own their memory, in order: the body shares the
    /// request's buffer, a rewritten header is copied.
    pub fn chunks(&self) -> impl Iterator<Item = Bytes> + '_ {
        let head = (self.head_len > 0).then(|| Bytes::copy_from_slice(self.head()));
        head.into_iter()
            .chain((!self.body.is_empty()).then(|| self.body.clone()))
    }
}

/// Per-partition log settings (Kafka topic config names in the docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed this (clamped to 4 KiB, one
    /// O_DIRECT page, and 2 GiB, what u32 index positions address).
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first append is this old.
    pub segment_ms: i64,
    /// `index.interval.bytes`: bytes appended between two offset-index entries.
    pub index_interval_bytes: u32,
    /// Disk space reserved ahead of the writes, in steps of this size.
    pub preallocate_bytes: u64,
    /// `message.timestamp.type=LogAppendTime`.
    pub message_timestamp_log_append: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            preallocate_bytes: 16 << 20,
            message_timestamp_log_append: false,
        }
    }
}

impl LogConfig {
    /// Clamps values to what the on-disk format can address (u32 positions in the index).
    pub fn sanitized(mut self) -> Self {
        self.segment_bytes = self.segment_bytes.clamp(4096, (i32::MAX as u64) + 1);
        self.segment_ms = self.segment_ms.max(1);
        self.index_interval_bytes = self.index_interval_bytes.max(1);
        self
    }
}

/// Result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The LogAppendTime stamped into the batch, or -1 (CreateTime topics, duplicates).
    pub log_append_time: i64,
    /// The batch was a retry of one already in the log: nothing was written.
    pub duplicate: bool,
}

/// Whole batches returned by a read, in offset order: the chunks, concatenated, are the batches
/// (a chunk may hold several batches or part of one).
#[derive(Debug, Clone, Default)]
pub struct ReadSlice {
    pub chunks: Vec<Bytes>,
    /// Served from the shard's `BatchCache` (else from disk).
    pub from_cache: bool,
}

impl ReadSlice {
    pub fn bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The batches, one `Bytes` each (joins chunks when a batch spans several).
    pub fn batches(&self) -> Result<Vec<Bytes>, crate::protocol::record_batch::BatchError> {
        let joined: Bytes = match self.chunks.as_slice() {
            [one] => one.clone(),
            many => many
                .iter()
                .flat_map(|c| c.iter().copied())
                .collect::<Vec<u8>>()
                .into(),
        };
        crate::protocol::record_batch::split_batches(&joined).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Io(#[from] IoFailure),
    #[error(transparent)]
    State(#[from] StateFileError),
    #[error("out of order sequence for producer {producer_id}: expected {expected}, got {got}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("invalid producer epoch for producer {producer_id}: current {current}, got {got}")]
    InvalidProducerEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    #[error(
        "transaction marker for producer {producer_id} from coordinator epoch {got}, \
         older than {current}"
    )]
    CoordinatorFenced {
        producer_id: i64,
        current: i32,
        got: i32,
    },
    #[error("offset {offset} out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("batch of {size} bytes is too large for a segment")]
    BatchTooLarge { size: usize },
    #[error("corrupt data in {} at {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: &'static str,
    },
    #[error("storage invariant violated: {what} (expected {expected}, found {found})")]
    InvariantViolated {
        what: &'static str,
        expected: i64,
        found: i64,
    },
    #[error("log {} is offline after an I/O error; reopen it to recover", dir.display())]
    LogFailed { dir: PathBuf },
}

impl StorageError {
    /// The filesystem was full (ENOSPC, or the quota's EDQUOT). glommio keeps only the kind of
    /// the errors it wraps, so the kind counts as much as the errno.
    pub fn is_out_of_space(&self) -> bool {
        use std::io::ErrorKind;
        matches!(self, StorageError::Io(f)
            if matches!(f.source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
                || matches!(f.source.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded))
    }

    /// True for errors the server reports as KAFKA_STORAGE_ERROR.
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            StorageError::Io(_)
                | StorageError::State(_)
                | StorageError::Corrupt { .. }
                | StorageError::InvariantViolated { .. }
                | StorageError::LogFailed { .. }
        )
    }
}
