//! Idempotent-producer state of one partition: a pure state machine (no I/O, no clock).
//!
//! Owns, per producerId: the current epoch and the last [`BATCH_WINDOW`] appended batches
//! (first/last sequence, base/last offset). Kafka's rules:
//! - producerId -1: not idempotent, nothing checked.
//! - same epoch: a batch with the same first and last sequence as one of the window is a
//!   duplicate (answered with the original offsets, nothing written); first sequence ==
//!   last sequence + 1 (wrapping i32::MAX -> 0) is accepted; anything else is OutOfOrderSequence.
//! - older epoch: InvalidProducerEpoch. Newer epoch: first sequence must be 0.
//! - unknown producer: any sequence is accepted and the state starts from that batch (as
//!   Kafka does since 2.5, KIP-360). A producer whose state expired (below) comes back this
//!   way: an idle producer keeps its sequence numbers, and refusing it would be fatal to its
//!   client.
//! - baseSequence -1 with a producerId (e.g. control batches): epoch checked, sequence not.
//!
//! Transactions (the partition side): a transactional data batch opens its producer's
//! transaction at its base offset if none is open; an end-transaction marker (a control batch
//! the transaction coordinator writes) closes it and is returned as a [`CompletedTxn`]. The
//! smallest first offset of the open transactions is the partition's first unstable offset:
//! read_committed consumers read below it (see `PartitionLog::last_stable_offset`). A marker from
//! an older coordinator epoch than the last one seen for its producer is refused
//! (TRANSACTION_COORDINATOR_FENCED), as is one from an older producer epoch.
//!
//! Expiry (`producer.id.expiration.ms`): each entry remembers the maxTimestamp of its
//! producer's last batch (data or marker) — taken from the batch header, so a live append and
//! a recovery replay agree — and [`ProducerStateMachine::expire`] forgets producers with no
//! open transaction that have been idle longer than the expiration. Without it every producer
//! id ever seen (one per idempotent client instance) would stay in memory and in every
//! snapshot. As in Kafka the time is the producer's own (CreateTime) unless the topic uses
//! LogAppendTime.
//!
//! Rebuilt by storage recovery from batch headers, and snapshotted at segment roll. Runs on the
//! partition's shard.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::protocol::record_batch::increment_sequence;
use crate::protocol::records::EndTxnMarker;

/// How many recent batches per producer are remembered for duplicate detection (Kafka: 5, the
/// maximum in-flight requests of an idempotent producer).
pub const BATCH_WINDOW: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// First offset of this producer's open transaction in this partition.
    pub txn_first_offset: Option<i64>,
    /// Coordinator epoch of the last marker written for this producer (-1: none yet).
    pub coordinator_epoch: i32,
    /// maxTimestamp of this producer's last batch or marker: expiry measures idleness from
    /// it. `None`: unknown, for an entry loaded from a snapshot written before timestamps were
    /// kept (see [`ProducerStateMachine::expire`] for what that means).
    pub last_timestamp_ms: Option<i64>,
}

impl ProducerEntry {
    fn new(epoch: i16) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(BATCH_WINDOW),
            txn_first_offset: None,
            coordinator_epoch: -1,
            last_timestamp_ms: None,
        }
    }
}

/// A transaction a marker closed in this partition: its data lies in `[first_offset,
/// marker_offset)` (interleaved with other producers' batches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub marker_offset: i64,
    pub aborted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerCheck {
    /// producerId < 0: not an idempotent batch.
    NotIdempotent,
    /// Append it, then call [`ProducerStateMachine::record`].
    Accept,
    /// Already in the log: answer with these offsets and write nothing.
    Duplicate { base_offset: i64, last_offset: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
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
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateMachine {
    producers: HashMap<i64, ProducerEntry>,
    /// First offset -> producer id of every open transaction (derived from `producers`).
    open_txns: BTreeMap<i64, i64>,
}

impl ProducerStateMachine {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Decides what to do with a batch; does not change state.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> Result<ProducerCheck, ProducerError> {
        if producer_id < 0 {
            return Ok(ProducerCheck::NotIdempotent);
        }
        let entry = match self.producers.get(&producer_id) {
            // Nothing to compare with: a new producer, or one whose state expired. The state
            // starts from this batch (KIP-360); requiring sequence 0 would kill every producer
            // that was idle longer than `producer.id.expiration.ms`.
            None => return Ok(ProducerCheck::Accept),
            Some(e) => e,
        };
        if epoch < entry.epoch {
            return Err(ProducerError::InvalidProducerEpoch {
                producer_id,
                current: entry.epoch,
                got: epoch,
            });
        }
        if first_seq < 0 {
            return Ok(ProducerCheck::Accept);
        }
        if epoch > entry.epoch {
            if first_seq != 0 {
                return Err(ProducerError::OutOfOrderSequence {
                    producer_id,
                    expected: 0,
                    got: first_seq,
                });
            }
            return Ok(ProducerCheck::Accept);
        }
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(ProducerCheck::Duplicate {
                base_offset: b.base_offset,
                last_offset: b.last_offset,
            });
        }
        match entry.batches.back() {
            // Same epoch but no sequenced batch remembered (only control batches so far).
            None => {
                if first_seq != 0 {
                    return Err(ProducerError::OutOfOrderSequence {
                        producer_id,
                        expected: 0,
                        got: first_seq,
                    });
                }
                Ok(ProducerCheck::Accept)
            }
            Some(last) => {
                let expected = increment_sequence(last.last_seq, 1);
                if first_seq != expected {
                    return Err(ProducerError::OutOfOrderSequence {
                        producer_id,
                        expected,
                        got: first_seq,
                    });
                }
                Ok(ProducerCheck::Accept)
            }
        }
    }

    /// Records an appended non-transactional batch (after `check` said Accept, or during
    /// recovery); `max_timestamp_ms` is the batch's maxTimestamp.
    pub fn record(&mut self, producer_id: i64, epoch: i16, meta: BatchMeta, max_timestamp_ms: i64) {
        self.apply(producer_id, epoch, meta, max_timestamp_ms, false, None);
    }

    /// Checks an end-transaction marker before it is appended: the producer epoch may not go
    /// back, nor the coordinator epoch.
    pub fn check_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        marker: EndTxnMarker,
    ) -> Result<(), ProducerError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if epoch < entry.epoch {
            return Err(ProducerError::InvalidProducerEpoch {
                producer_id,
                current: entry.epoch,
                got: epoch,
            });
        }
        if marker.coordinator_epoch < entry.coordinator_epoch {
            return Err(ProducerError::CoordinatorFenced {
                producer_id,
                current: entry.coordinator_epoch,
                got: marker.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Records an appended batch (after the checks accepted it, or during recovery):
    /// `transactional` data batches open the producer's transaction, a `marker` closes it.
    /// `max_timestamp_ms` (the batch header's maxTimestamp, as stored) becomes the producer's
    /// last activity: the latest batch's, as Kafka does, even if the client clock went back.
    pub fn apply(
        &mut self,
        producer_id: i64,
        epoch: i16,
        meta: BatchMeta,
        max_timestamp_ms: i64,
        transactional: bool,
        marker: Option<EndTxnMarker>,
    ) -> Option<CompletedTxn> {
        if producer_id < 0 {
            return None;
        }
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(epoch));
        entry.last_timestamp_ms = Some(max_timestamp_ms);
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if let Some(marker) = marker {
            entry.coordinator_epoch = entry.coordinator_epoch.max(marker.coordinator_epoch);
            let first_offset = entry.txn_first_offset.take()?;
            self.open_txns.remove(&first_offset);
            return Some(CompletedTxn {
                producer_id,
                first_offset,
                marker_offset: meta.base_offset,
                aborted: !marker.commit,
            });
        }
        if transactional && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(meta.base_offset);
            self.open_txns.insert(meta.base_offset, producer_id);
        }
        if meta.first_seq < 0 {
            return None;
        }
        if entry.batches.len() == BATCH_WINDOW {
            entry.batches.pop_front();
        }
        entry.batches.push_back(meta);
        None
    }

    /// First offset of the oldest open transaction: read_committed reads stop below it.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.open_txns.keys().next().copied()
    }

    /// How many transactions are open in this partition.
    pub fn open_transactions(&self) -> usize {
        self.open_txns.len()
    }

    /// The open transactions as (producer id, first offset), oldest first.
    pub fn open_transaction_starts(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.open_txns.iter().map(|(first, pid)| (*pid, *first))
    }

    /// Forgets the producers with no open transaction whose last batch's timestamp is at or
    /// before `now_ms - expiration_ms` (`producer.id.expiration.ms`); returns how many. A
    /// forgotten producer that comes back is accepted whatever its sequence (see `check`).
    ///
    /// A producer with an open transaction stays: its entry holds the last stable offset
    /// back, and only its marker may end that (the transaction coordinator aborts it at its
    /// timeout). An entry whose time is unknown (loaded from a v1/v2 snapshot) is stamped with
    /// `now_ms` and kept: it then lives one more full period, so an upgrade never forgets a
    /// producer that was active just before the restart; treating unknown as "expired" would,
    /// and "never" would keep upgraded state forever.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let cutoff = now_ms.saturating_sub(expiration_ms);
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            if e.txn_first_offset.is_some() {
                return true;
            }
            match e.last_timestamp_ms {
                Some(ts) => ts > cutoff,
                None => {
                    e.last_timestamp_ms = Some(now_ms);
                    true
                }
            }
        });
        before - self.producers.len()
    }

    /// Snapshot encoding (payload of a state file): [`SNAPSHOT_MAGIC`] (v3), then an rkyv
    /// archive of [`ProducerSnapshot`], producers sorted by id so equal states encode to equal
    /// bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut producers: Vec<ProducerRecord> = self
            .producers
            .iter()
            .map(|(id, e)| ProducerRecord {
                producer_id: *id,
                epoch: e.epoch,
                batches: e.batches.iter().copied().collect(),
                txn_first_offset: e.txn_first_offset.unwrap_or(-1),
                coordinator_epoch: e.coordinator_epoch,
                last_timestamp_ms: e.last_timestamp_ms,
            })
            .collect();
        producers.sort_unstable_by_key(|p| p.producer_id);
        // Serializing plain integers and vectors into memory cannot fail; an empty snapshot
        // would only make recovery rescan the log.
        match rkyv::to_bytes::<rkyv::rancor::Error>(&ProducerSnapshot { producers }) {
            Ok(archive) => [&SNAPSHOT_MAGIC[..], &archive[..]].concat(),
            Err(_) => Vec::new(),
        }
    }

    /// Inverse of [`encode`](Self::encode); `None` if the bytes are not a valid snapshot.
    /// Older formats are read too, their entries with an unknown last timestamp: v2 (magic
    /// [`SNAPSHOT_MAGIC_V2`], before expiry) and v1 (no magic, before transactions: it cannot
    /// hold an open transaction).
    pub fn decode(buf: &[u8]) -> Option<ProducerStateMachine> {
        let records = if let Some(archive) = buf.strip_prefix(&SNAPSHOT_MAGIC[..]) {
            let aligned = crate::io::state_file::rkyv_aligned(archive);
            rkyv::from_bytes::<ProducerSnapshot, rkyv::rancor::Error>(&aligned)
                .ok()?
                .producers
        } else if let Some(archive) = buf.strip_prefix(&SNAPSHOT_MAGIC_V2[..]) {
            let aligned = crate::io::state_file::rkyv_aligned(archive);
            rkyv::from_bytes::<ProducerSnapshotV2, rkyv::rancor::Error>(&aligned)
                .ok()?
                .producers
                .into_iter()
                .map(ProducerRecord::from)
                .collect()
        } else {
            let aligned = crate::io::state_file::rkyv_aligned(buf);
            rkyv::from_bytes::<ProducerSnapshotV1, rkyv::rancor::Error>(&aligned)
                .ok()?
                .producers
                .into_iter()
                .map(|p| ProducerRecord::from(ProducerRecordV2::from(p)))
                .collect()
        };
        let mut m = ProducerStateMachine {
            producers: HashMap::with_capacity(records.len()),
            open_txns: BTreeMap::new(),
        };
        for p in records {
            if p.batches.len() > BATCH_WINDOW {
                return None;
            }
            let txn_first_offset = (p.txn_first_offset >= 0).then_some(p.txn_first_offset);
            if let Some(first) = txn_first_offset {
                if m.open_txns.insert(first, p.producer_id).is_some() {
                    return None;
                }
            }
            // A producer id twice is a damaged snapshot: keeping either entry could leave a
            // stale open transaction holding the last stable offset back (found by fuzzing).
            let replaced = m.producers.insert(
                p.producer_id,
                ProducerEntry {
                    epoch: p.epoch,
                    batches: p.batches.into_iter().collect(),
                    txn_first_offset,
                    coordinator_epoch: p.coordinator_epoch,
                    last_timestamp_ms: p.last_timestamp_ms,
                },
            );
            if replaced.is_some() {
                return None;
            }
        }
        Some(m)
    }
}

/// Starts every snapshot written since producer expiry exists (v3: last timestamps).
const SNAPSHOT_MAGIC: [u8; 8] = *b"ODPS\x03\0\0\0";
/// Starts the snapshots written between transactions and expiry (read only); v1 snapshots,
/// from before transactions, have no prefix.
const SNAPSHOT_MAGIC_V2: [u8; 8] = *b"ODPS\x02\0\0\0";

/// The persisted form of a partition's producer state (rkyv), v3.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProducerSnapshot {
    pub producers: Vec<ProducerRecord>,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProducerRecord {
    pub producer_id: i64,
    pub epoch: i16,
    /// Oldest first, at most [`BATCH_WINDOW`].
    pub batches: Vec<BatchMeta>,
    /// First offset of the open transaction, -1 when none.
    pub txn_first_offset: i64,
    pub coordinator_epoch: i32,
    /// maxTimestamp of the producer's last batch; `None`: unknown (the entry came from an
    /// older snapshot and no `expire` has run since).
    pub last_timestamp_ms: Option<i64>,
}

/// The snapshot format between transactions and expiry (read only).
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProducerSnapshotV2 {
    pub producers: Vec<ProducerRecordV2>,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProducerRecordV2 {
    pub producer_id: i64,
    pub epoch: i16,
    pub batches: Vec<BatchMeta>,
    pub txn_first_offset: i64,
    pub coordinator_epoch: i32,
}

/// The snapshot format before transactions (read only).
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProducerSnapshotV1 {
    pub producers: Vec<ProducerRecordV1>,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProducerRecordV1 {
    pub producer_id: i64,
    pub epoch: i16,
    pub batches: Vec<BatchMeta>,
}

/// Each older format converts to the next one up: one path from any snapshot to today's.
impl From<ProducerRecordV2> for ProducerRecord {
    fn from(p: ProducerRecordV2) -> ProducerRecord {
        ProducerRecord {
            producer_id: p.producer_id,
            epoch: p.epoch,
            batches: p.batches,
            txn_first_offset: p.txn_first_offset,
            coordinator_epoch: p.coordinator_epoch,
            last_timestamp_ms: None,
        }
    }
}

impl From<ProducerRecordV1> for ProducerRecordV2 {
    fn from(p: ProducerRecordV1) -> ProducerRecordV2 {
        ProducerRecordV2 {
            producer_id: p.producer_id,
            epoch: p.epoch,
            batches: p.batches,
            txn_first_offset: -1,
            coordinator_epoch: -1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProducerCheck::*;

    fn meta(first: i32, last: i32, base: i64) -> BatchMeta {
        BatchMeta {
            first_seq: first,
            last_seq: last,
            base_offset: base,
            last_offset: base + (last - first) as i64,
        }
    }

    /// The batch timestamp the tests use when time does not matter.
    const T: i64 = 1_000;

    /// check + record, like the log does.
    fn append(
        m: &mut ProducerStateMachine,
        pid: i64,
        epoch: i16,
        first: i32,
        last: i32,
        base: i64,
    ) -> Result<ProducerCheck, ProducerError> {
        let r = m.check(pid, epoch, first, last)?;
        if r == Accept {
            m.record(pid, epoch, meta(first, last, base), T);
        }
        Ok(r)
    }

    #[test]
    fn a_snapshot_naming_a_producer_twice_is_refused() {
        let record = |txn_first_offset| ProducerRecord {
            producer_id: 9,
            epoch: 0,
            batches: vec![meta(0, 0, 10)],
            txn_first_offset,
            coordinator_epoch: 0,
            last_timestamp_ms: Some(T),
        };
        // The first entry has an open transaction the second would silently replace.
        let producers = vec![record(10), record(-1)];
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&ProducerSnapshot { producers })
            .expect("serialize");
        let bytes = [&SNAPSHOT_MAGIC[..], &archive[..]].concat();
        assert!(ProducerStateMachine::decode(&bytes).is_none());
        let single = vec![record(10)];
        let archive =
            rkyv::to_bytes::<rkyv::rancor::Error>(&ProducerSnapshot { producers: single })
                .expect("serialize");
        let bytes = [&SNAPSHOT_MAGIC[..], &archive[..]].concat();
        let m = ProducerStateMachine::decode(&bytes).expect("a valid snapshot decodes");
        assert_eq!(m.first_unstable_offset(), Some(10));
    }

    #[test]
    fn non_idempotent_is_skipped() {
        let m = ProducerStateMachine::new();
        assert_eq!(m.check(-1, -1, -1, -1), Ok(NotIdempotent));
        assert_eq!(m.check(-1, 0, 17, 20), Ok(NotIdempotent));
    }

    /// Once a producer's last batch is `seqs` at `offsets`: its retry is a duplicate answered
    /// with those offsets, and a batch that skips a sequence is refused.
    fn assert_checked_after(
        m: &ProducerStateMachine,
        producer_id: i64,
        epoch: i16,
        seqs: (i32, i32),
        offsets: (i64, i64),
    ) {
        assert_eq!(
            m.check(producer_id, epoch, seqs.0, seqs.1),
            Ok(Duplicate {
                base_offset: offsets.0,
                last_offset: offsets.1
            })
        );
        let skip = seqs.1 + 2;
        assert!(matches!(
            m.check(producer_id, epoch, skip, skip),
            Err(ProducerError::OutOfOrderSequence { expected, got, .. })
                if expected == seqs.1 + 1 && got == skip
        ));
    }

    #[test]
    fn unknown_producer_starts_from_any_sequence_then_is_checked() {
        let mut m = ProducerStateMachine::new();
        // KIP-360: no state, so whatever sequence comes first starts it.
        assert_eq!(append(&mut m, 7, 0, 3, 4, 100), Ok(Accept));
        assert_checked_after(&m, 7, 0, (3, 4), (100, 101));
        assert_eq!(append(&mut m, 7, 0, 5, 5, 102), Ok(Accept));
        // Sequence 0 is still fine for a new producer, and its epoch is the one it came with.
        assert_eq!(append(&mut m, 8, 2, 0, 0, 103), Ok(Accept));
        assert!(matches!(
            m.check(8, 1, 1, 1),
            Err(ProducerError::InvalidProducerEpoch {
                current: 2,
                got: 1,
                ..
            })
        ));
    }

    #[test]
    fn in_sequence_gap_and_duplicates() {
        let mut m = ProducerStateMachine::new();
        let mut base = 0;
        for i in 0..8 {
            assert_eq!(append(&mut m, 1, 0, i * 10, i * 10 + 9, base), Ok(Accept));
            base += 10;
        }
        // The last 5 batches are duplicates with their original offsets.
        for i in 3..8 {
            assert_eq!(
                m.check(1, 0, i * 10, i * 10 + 9),
                Ok(Duplicate {
                    base_offset: i as i64 * 10,
                    last_offset: i as i64 * 10 + 9
                })
            );
        }
        // Older than the window: out of order.
        assert!(matches!(
            m.check(1, 0, 20, 29),
            Err(ProducerError::OutOfOrderSequence { expected: 80, .. })
        ));
        // Same first seq, different last: not a duplicate, and out of order.
        assert!(m.check(1, 0, 70, 75).is_err());
        // Gap.
        assert!(matches!(
            m.check(1, 0, 81, 81),
            Err(ProducerError::OutOfOrderSequence {
                expected: 80,
                got: 81,
                ..
            })
        ));
        assert_eq!(m.get(1).unwrap().batches.len(), BATCH_WINDOW);
    }

    #[test]
    fn sequence_wraps_to_zero() {
        let mut m = ProducerStateMachine::new();
        m.record(3, 2, meta(i32::MAX - 4, i32::MAX, 0), T);
        assert_eq!(m.check(3, 2, 0, 9), Ok(Accept));
        assert!(m.check(3, 2, 1, 9).is_err());
    }

    #[test]
    fn epochs() {
        let mut m = ProducerStateMachine::new();
        assert_eq!(append(&mut m, 5, 3, 0, 0, 0), Ok(Accept));
        assert!(matches!(
            m.check(5, 2, 1, 1),
            Err(ProducerError::InvalidProducerEpoch {
                current: 3,
                got: 2,
                ..
            })
        ));
        assert!(matches!(
            m.check(5, 4, 1, 1),
            Err(ProducerError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(append(&mut m, 5, 4, 0, 2, 1), Ok(Accept));
        // New epoch forgets the old window.
        assert_eq!(m.get(5).unwrap().batches.len(), 1);
        assert_eq!(
            m.check(5, 4, 0, 2),
            Ok(Duplicate {
                base_offset: 1,
                last_offset: 3
            })
        );
        assert!(matches!(
            m.check(5, 3, 3, 3),
            Err(ProducerError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn snapshot_round_trip() {
        let mut m = ProducerStateMachine::new();
        for pid in 0..4 {
            for i in 0..(pid + 3) as i32 {
                m.record(
                    pid,
                    pid as i16,
                    meta(i * 2, i * 2 + 1, i as i64 * 2),
                    T + pid * 100 + i as i64,
                );
            }
        }
        let bytes = m.encode();
        assert_eq!(ProducerStateMachine::decode(&bytes), Some(m));
        assert_eq!(
            ProducerStateMachine::decode(&bytes[..bytes.len() - 1]),
            None
        );
        assert_eq!(ProducerStateMachine::decode(&[]), None);
    }

    #[test]
    fn transactions_open_and_close_and_survive_snapshots() {
        let mut m = ProducerStateMachine::new();
        let commit = EndTxnMarker {
            commit: true,
            coordinator_epoch: 2,
        };
        assert_eq!(m.apply(9, 0, meta(0, 1, 10), T, true, None), None);
        assert_eq!(m.apply(8, 0, meta(0, 0, 12), T, true, None), None);
        // A second batch of the same transaction does not move its first offset.
        assert_eq!(m.apply(9, 0, meta(2, 2, 13), T, true, None), None);
        assert_eq!(m.first_unstable_offset(), Some(10));
        let snapshot = ProducerStateMachine::decode(&m.encode()).expect("decodes");
        assert_eq!(snapshot, m);
        let ended = m.apply(9, 0, meta(-1, -1, 14), T, false, Some(commit));
        assert_eq!(
            ended,
            Some(CompletedTxn {
                producer_id: 9,
                first_offset: 10,
                marker_offset: 14,
                aborted: false
            })
        );
        assert_eq!(m.first_unstable_offset(), Some(12));
        // A marker from an older coordinator epoch is fenced; a marker with nothing open ends
        // nothing.
        let stale = EndTxnMarker {
            commit: false,
            coordinator_epoch: 1,
        };
        assert!(matches!(
            m.check_marker(9, 0, stale),
            Err(ProducerError::CoordinatorFenced {
                current: 2,
                got: 1,
                ..
            })
        ));
        assert_eq!(
            m.apply(9, 0, meta(-1, -1, 15), T, false, Some(commit)),
            None
        );
        assert_eq!(m.open_transactions(), 1);
    }

    #[test]
    fn snapshots_from_before_transactions_still_load() {
        let old = ProducerSnapshotV1 {
            producers: vec![ProducerRecordV1 {
                producer_id: 4,
                epoch: 1,
                batches: vec![meta(0, 4, 0)],
            }],
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&old)
            .unwrap()
            .to_vec();
        let m = ProducerStateMachine::decode(&bytes).expect("an old snapshot decodes");
        let e = m.get(4).unwrap();
        assert_eq!((e.epoch, e.batches.len(), e.txn_first_offset), (1, 1, None));
        assert_eq!(e.last_timestamp_ms, None);
        assert_eq!(m.first_unstable_offset(), None);
        // Re-encoded, it is a v3 snapshot that still says "unknown".
        let again = m.encode();
        assert!(again.starts_with(&SNAPSHOT_MAGIC));
        assert_eq!(ProducerStateMachine::decode(&again), Some(m));
    }

    #[test]
    fn expiry_forgets_idle_producers_without_open_transactions() {
        let mut m = ProducerStateMachine::new();
        let commit = EndTxnMarker {
            commit: true,
            coordinator_epoch: 0,
        };
        m.record(1, 0, meta(0, 0, 0), 1_000); // idle since long
        m.record(2, 0, meta(0, 0, 1), 4_000); // exactly at the cutoff: expires
        m.record(3, 0, meta(0, 0, 2), 4_001); // just after it: stays
        m.apply(4, 0, meta(0, 0, 3), 1_000, true, None); // open transaction: stays
        m.apply(5, 0, meta(0, 0, 4), 1_000, true, None);
        m.apply(5, 0, meta(-1, -1, 5), 5_000, false, Some(commit)); // marker = activity
        m.apply(6, 0, meta(0, 0, 6), 1_000, true, None);
        m.apply(6, 0, meta(-1, -1, 7), 2_000, false, Some(commit)); // closed, idle
        m.record(7, 0, meta(0, 0, 8), 9_000); // recent
        assert_eq!(m.expire(6_000, 2_000), 3);
        let mut left: Vec<i64> = m.producers.keys().copied().collect();
        left.sort_unstable();
        assert_eq!(left, vec![3, 4, 5, 7]);
        assert_eq!(m.first_unstable_offset(), Some(3));
        // Nothing more to forget at the same time; the open transaction outlives any wait.
        assert_eq!(m.expire(6_000, 2_000), 0);
        assert_eq!(m.expire(i64::MAX, 2_000), 3);
        assert_eq!(m.len(), 1);
        assert_eq!(m.open_transactions(), 1);
        // A huge expiration does not overflow and forgets nothing.
        assert_eq!(m.expire(i64::MIN + 1, i64::MAX), 0);
    }

    #[test]
    fn an_expired_producer_comes_back_with_its_next_sequence() {
        let mut m = ProducerStateMachine::new();
        for i in 0..10 {
            assert_eq!(append(&mut m, 42, 3, i, i, i as i64), Ok(Accept));
        }
        assert_eq!(m.expire(T + 10_000, 10_000), 1);
        assert!(m.get(42).is_none());
        // Back after a long idle: sequence 10, accepted, and the state starts there.
        assert_eq!(m.check(42, 3, 10, 12), Ok(Accept));
        m.record(42, 3, meta(10, 12, 100), T + 20_000);
        assert_eq!(m.get(42).unwrap().last_timestamp_ms, Some(T + 20_000));
        // Checked as any known producer from then on: retries are duplicates, gaps refused,
        // an older epoch fenced.
        assert_checked_after(&m, 42, 3, (10, 12), (100, 102));
        assert!(matches!(
            m.check(42, 2, 13, 13),
            Err(ProducerError::InvalidProducerEpoch { .. })
        ));
        assert_eq!(append(&mut m, 42, 3, 13, 13, 103), Ok(Accept));
    }

    #[test]
    fn snapshots_keep_last_timestamps() {
        let mut m = ProducerStateMachine::new();
        m.record(1, 0, meta(0, 0, 0), 1_000);
        m.record(2, 0, meta(0, 0, 1), -1); // a batch without timestamps
        m.apply(3, 0, meta(0, 0, 2), 7_000, true, None);
        let back = ProducerStateMachine::decode(&m.encode()).expect("decodes");
        assert_eq!(back.get(1).unwrap().last_timestamp_ms, Some(1_000));
        assert_eq!(back.get(2).unwrap().last_timestamp_ms, Some(-1));
        assert_eq!(back.get(3).unwrap().last_timestamp_ms, Some(7_000));
        assert_eq!(back, m);
        // And expiry after the reload sees the real times, not "unknown".
        let mut back = back;
        assert_eq!(back.expire(5_000, 2_000), 2);
    }

    fn v2_bytes(producers: Vec<ProducerRecordV2>) -> Vec<u8> {
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&ProducerSnapshotV2 { producers })
            .expect("serialize");
        [&SNAPSHOT_MAGIC_V2[..], &archive[..]].concat()
    }

    #[test]
    fn snapshots_from_before_expiry_load_with_unknown_times() {
        let record = |producer_id, txn_first_offset| ProducerRecordV2 {
            producer_id,
            epoch: 2,
            batches: vec![meta(0, 1, 10)],
            txn_first_offset,
            coordinator_epoch: 4,
        };
        let bytes = v2_bytes(vec![record(1, -1), record(2, 10)]);
        let mut m = ProducerStateMachine::decode(&bytes).expect("a v2 snapshot decodes");
        assert_eq!(m.len(), 2);
        let e = m.get(2).unwrap();
        assert_eq!(
            (
                e.epoch,
                e.txn_first_offset,
                e.coordinator_epoch,
                e.last_timestamp_ms
            ),
            (2, Some(10), 4, None)
        );
        assert_eq!(m.first_unstable_offset(), Some(10));
        // Unknown time: the first pass stamps it and keeps it, one full period more...
        assert_eq!(m.expire(50_000, 1_000), 0);
        assert_eq!(m.get(1).unwrap().last_timestamp_ms, Some(50_000));
        assert_eq!(m.expire(50_999, 1_000), 0);
        // ...then it expires like any other (the open transaction never does).
        assert_eq!(m.expire(51_000, 1_000), 1);
        assert!(m.get(1).is_none() && m.get(2).is_some());
        // Damaged v2 input is still refused: truncated, or a producer twice.
        assert!(ProducerStateMachine::decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(
            ProducerStateMachine::decode(&v2_bytes(vec![record(1, -1), record(1, -1)])).is_none()
        );
    }
}
