//! The shard journal in the group commit, and its replay when the broker starts.
//!
//! A flush round writes every dirty partition's new batches to its segment file (O_DIRECT).
//! Partitions whose round added at most `log.journal.partition.max.bytes` are then made durable
//! together: their batches go once more into one journal entry (`storage::journal`) and one
//! fdatasync of the journal covers them all; larger ones fdatasync their own file as before
//! (writing them twice would cost more bandwidth than the flush it saves). The segment files
//! the journal covered are remembered and fdatasynced by a checkpoint, which then marks the
//! entries before it dead; a checkpoint starts when half the journal is live.
//!
//! Order that keeps this safe: a partition's segment write completes before its journal entry
//! is written, and its file is remembered before the entry gets its sequence number, so a
//! checkpoint cut at any moment syncs every file an entry before the cut went to.
//!
//! At start (`load`, then `replay_into` as each partition opens, then `start`): every journal
//! file's live records are read, each partition opened on this shard gets its records replayed
//! (`PartitionLog::replay`: what its files lost in a crash comes back, what they hold is
//! skipped) and flushed before anything else reads it (the coordinators rebuild from their
//! partitions right after), and only then does each shard open its journal for a new epoch,
//! which makes every old entry dead. If any record could not be replayed, no journal is opened
//! and the old files stay for the next start to replay again (the partitions concerned stay
//! offline meanwhile: held by the shard, answered KAFKA_STORAGE_ERROR, never opened by a later
//! metadata change). Journal failures at runtime (an I/O error) turn
//! it off: the files it covered are fdatasynced and every round fdatasyncs per partition.
//!
//! Runs on its shard; `!Send`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use glommio::sync::Semaphore;

use super::partition::Partition;
use super::Shard;
use crate::io::disk::{Disk, GlommioDisk};
use crate::io::dma::DirectFile;
use crate::metadata::TopicId;
use crate::metrics::ShardProbe;
use crate::storage::journal::{self, Journal, JournalRecord, RecordParts, Recovered};
use crate::storage::log::FlushTicket;
use crate::storage::StorageError;

/// The journal as a shard's group commit uses it.
pub struct JournalSink {
    journal: Journal<GlommioDisk>,
    partition_max_bytes: u64,
    /// Segment files holding journaled writes no fdatasync has covered yet, by file id.
    unsynced: RefCell<HashMap<u64, Rc<DirectFile>>>,
    /// Held by the running checkpoint.
    checkpoint_lock: Semaphore,
    /// An I/O error stopped the journal (see the module docs).
    failed: Cell<bool>,
    probe: Rc<ShardProbe>,
}

/// A partition a round wrote, with what its write left to make durable.
pub type Written = (Rc<Partition>, FlushTicket);

/// A round's written partitions, by how they become durable.
pub struct RoundPlan {
    /// fdatasync of their own segment file.
    pub per_file: Vec<Written>,
    /// The journal entry written for them, made durable by one fdatasync of the journal.
    pub journaled: Option<(Rc<JournalSink>, Vec<Written>)>,
}

impl RoundPlan {
    pub fn per_file(items: Vec<Written>) -> RoundPlan {
        RoundPlan {
            per_file: items,
            journaled: None,
        }
    }

    /// Drops the tickets' references to the batches written: only their fdatasyncs are left.
    pub fn forget_batches(&mut self) {
        let journaled = self.journaled.iter_mut().flat_map(|(_, items)| items);
        for (_, t) in self.per_file.iter_mut().chain(journaled) {
            t.forget_batches();
        }
    }
}

impl JournalSink {
    pub fn new(
        journal: Journal<GlommioDisk>,
        partition_max_bytes: u64,
        probe: Rc<ShardProbe>,
    ) -> Rc<JournalSink> {
        Rc::new(JournalSink {
            journal,
            partition_max_bytes,
            unsynced: RefCell::new(HashMap::new()),
            checkpoint_lock: Semaphore::new(1),
            failed: Cell::new(false),
            probe,
        })
    }

    /// Whether a round would journal a partition that adds `bytes` (if the entry has room):
    /// such a partition's segment write should not be a durable one.
    pub fn would_take(&self, bytes: u64) -> bool {
        !self.failed.get() && bytes > 0 && bytes <= self.partition_max_bytes
    }

    /// Writes the journal entry of a round whose segment writes completed: the partitions that
    /// added little go into it, the rest (and everyone, when the journal is off or full) are
    /// left to fdatasync their own file.
    pub async fn write_round(self: &Rc<Self>, items: Vec<Written>) -> RoundPlan {
        if self.failed.get() {
            return RoundPlan::per_file(items);
        }
        // An entry holds at most a quarter of the journal, so that one round never waits for
        // a checkpoint to make room for more than its own entry.
        let mut budget = self.journal.capacity_bytes() / 4;
        let (small, big): (Vec<_>, Vec<_>) = items.into_iter().partition(|(_, t)| {
            let added = t.added_bytes();
            let fits = !t.synced() && self.would_take(added) && added < budget;
            if fits {
                budget = budget.saturating_sub(added + journal::RECORD_HEADER_BYTES as u64);
            }
            fits
        });
        if small.is_empty() {
            return RoundPlan::per_file(big);
        }
        let records: Vec<RecordParts<'_>> = small
            .iter()
            .map(|(p, t)| {
                let (base_offset, parts) = t.added_parts();
                RecordParts {
                    topic_id: p.topic_id,
                    partition: p.index,
                    base_offset,
                    parts,
                }
            })
            .collect();
        // Full: wait for the running checkpoint to free space, or run one. Syncing every
        // partition's file in this round instead would cost as much as the checkpoint and
        // compete with it for the disk.
        if !self.journal.fits(&records) {
            self.wait_checkpoint().await;
            if !self.journal.fits(&records) {
                if let Err(e) = self.checkpoint().await {
                    log::error!("journal checkpoint failed (retried later): {e}");
                }
            }
            if self.failed.get() || !self.journal.fits(&records) {
                drop(records);
                return RoundPlan::per_file(big.into_iter().chain(small).collect());
            }
        }
        // Remembered before the entry is numbered (see the module docs).
        {
            let mut unsynced = self.unsynced.borrow_mut();
            for (_, t) in &small {
                unsynced.insert(t.file().id(), t.file().clone());
            }
        }
        let written = self.journal.write_entry(&records).await;
        drop(records);
        match written {
            Ok(Some(_)) => RoundPlan {
                per_file: big,
                journaled: Some((self.clone(), small)),
            },
            Ok(None) => RoundPlan::per_file(big.into_iter().chain(small).collect()),
            Err(e) => {
                self.fail(&e);
                RoundPlan::per_file(big.into_iter().chain(small).collect())
            }
        }
    }

    /// The durable half for the journaled partitions of a round: one fdatasync of the journal,
    /// then their high watermarks move. If it fails, each fdatasyncs its own file instead.
    pub async fn make_durable(&self, items: Vec<Written>) {
        let clock = self.probe.fsync_started();
        let synced = self.journal.sync().await;
        self.probe.fsync_done(clock);
        match synced {
            Ok(()) => {
                self.probe.journal_entry_done(items.len());
                for (p, t) in items {
                    if let Err(e) = p.log.flush_journaled(t) {
                        p.log_error("flush (journaled)", &e);
                    }
                }
            }
            Err(e) => {
                self.fail(&e);
                crate::io::join::join_all(items.into_iter().map(|(p, t)| async move {
                    p.flush_sync(t).await;
                }))
                .await;
            }
        }
    }

    /// Starts a checkpoint in the background if half the journal is live and none is running.
    pub fn maybe_checkpoint(self: &Rc<Self>) {
        if self.journal.live_bytes() * 2 > self.journal.capacity_bytes() {
            self.start_checkpoint();
        }
    }

    fn start_checkpoint(self: &Rc<Self>) {
        if self.checkpoint_lock.available() == 0 {
            return;
        }
        let sink = self.clone();
        glommio::spawn_local(async move {
            // Another one may have started since.
            let Ok(_permit) = sink.checkpoint_lock.try_acquire_permit(1) else {
                return;
            };
            if let Err(e) = sink.checkpoint_locked().await {
                log::error!("journal checkpoint failed (retried later): {e}");
            }
        })
        .detach();
    }

    /// Waits until no checkpoint runs.
    async fn wait_checkpoint(&self) {
        if let Ok(permit) = self.checkpoint_lock.acquire_permit(1).await {
            drop(permit);
        }
    }

    /// Runs a checkpoint now (after the one running, if any): every journaled write made so
    /// far is durable in its segment file when this returns `Ok`, and dead in the journal.
    pub async fn checkpoint(&self) -> Result<(), StorageError> {
        let _permit = self.checkpoint_lock.acquire_permit(1).await.map_err(|_| {
            StorageError::InvariantViolated {
                what: "journal checkpoint lock open",
                expected: 1,
                found: 0,
            }
        })?;
        self.checkpoint_locked().await
    }

    async fn checkpoint_locked(&self) -> Result<(), StorageError> {
        // The cut and the files it needs, taken together (no await in between).
        let cut = self.journal.checkpoint_cut();
        let files: Vec<Rc<DirectFile>> = self.take_unsynced();
        let started = std::time::Instant::now();
        let synced = crate::io::join::join_all(files.iter().map(|f| f.fdatasync())).await;
        if let Some(Err(e)) = synced.into_iter().find(|r| r.is_err()) {
            // Not covered: keep them for the next checkpoint.
            let mut unsynced = self.unsynced.borrow_mut();
            for f in files {
                unsynced.entry(f.id()).or_insert(f);
            }
            return Err(e.into());
        }
        if self.failed.get() {
            return Ok(());
        }
        self.journal.commit_checkpoint(cut).await?;
        self.probe
            .journal_checkpoint_done(files.len(), started.elapsed());
        Ok(())
    }

    /// The segment files waiting for a checkpoint's fdatasync, taken out of the set.
    fn take_unsynced(&self) -> Vec<Rc<DirectFile>> {
        self.unsynced.borrow_mut().drain().map(|(_, f)| f).collect()
    }

    /// Stops using the journal after an I/O error: what it covered is fdatasynced in the
    /// segment files (in the background), and rounds fdatasync per partition from now on.
    fn fail(&self, e: &StorageError) {
        if self.failed.replace(true) {
            return;
        }
        log::error!(
            "journal {}: {e}; flush rounds fdatasync every partition's file from now on",
            self.journal.path().display()
        );
        let files: Vec<Rc<DirectFile>> = self.take_unsynced();
        glommio::spawn_local(async move {
            for f in files {
                if let Err(e) = f.fdatasync().await {
                    log::error!("after the journal failed: {e}");
                }
            }
        })
        .detach();
    }
}

/// What a shard read from the journals at start, until [`start`].
#[derive(Default)]
pub struct ReplayState {
    /// Records not replayed yet, by partition, in the order written.
    records: HashMap<(TopicId, i32), Vec<JournalRecord>>,
    /// This shard's own journal as found (the new epoch continues from it).
    own: Recovered,
    /// Records that could not be replayed into a partition of this shard.
    failures: u64,
    /// A journal file that could not be read: any partition may have records in it, so the
    /// broker does not start (see [`unreadable`]).
    unreadable: Option<String>,
}

/// Reads every shard journal file in the data directory (a shard's partitions may have been
/// another shard's before a restart with another shard count).
pub async fn load(shard: &Shard) {
    let dir = &shard.config.data_dir;
    let names = match GlommioDisk.list_dir(dir) {
        Ok(n) => n,
        Err(e) => {
            shard.journal_replay.borrow_mut().unreadable = Some(format!("listing journals: {e}"));
            return;
        }
    };
    let own = journal::journal_path(dir, shard.id);
    let mut state = ReplayState::default();
    for name in names.iter().filter(|n| journal_file_id(n).is_some()) {
        let path = dir.join(name);
        match journal::recover(&GlommioDisk, &path).await {
            Ok(mut rec) => {
                for r in rec.take_records() {
                    state
                        .records
                        .entry((r.topic_id, r.partition))
                        .or_default()
                        .push(r);
                }
                if path == own {
                    state.own = rec;
                }
            }
            Err(e) => {
                state.unreadable = Some(format!("reading journal {name}: {e}"));
            }
        }
    }
    for list in state.records.values_mut() {
        list.sort_by_key(|r| r.base_offset);
    }
    *shard.journal_replay.borrow_mut() = state;
}

/// `shard-<id>.journal` -> id.
fn journal_file_id(name: &str) -> Option<usize> {
    name.strip_prefix("shard-")?
        .strip_suffix(".journal")?
        .parse()
        .ok()
}

/// Replays the journal records of partition `p`, just opened, and flushes what they brought
/// back, before anything reads it.
pub async fn replay_into(shard: &Shard, p: &Partition) {
    let Some(records) = shard
        .journal_replay
        .borrow_mut()
        .records
        .remove(&(p.topic_id, p.index))
    else {
        return;
    };
    let now = super::now_ms();
    let mut appended = 0u64;
    for r in &records {
        match p.log.replay(r.base_offset, &r.data, now) {
            Ok(n) => appended += n,
            Err(StorageError::InvariantViolated { what, .. })
                if what == crate::storage::log::REPLAY_GAP =>
            {
                // Beyond a hole: never acknowledged (see `REPLAY_GAP`), nor anything after it.
                log::info!(
                    "{}-{}: journal records from offset {} on follow a hole in the log and were never acknowledged; not replayed",
                    p.topic,
                    p.index,
                    r.base_offset
                );
                break;
            }
            Err(e) => {
                // Offline until a start replays it: appends now would take offsets the
                // journal's records hold.
                log::error!(
                    "{}-{}: replaying the journal record at offset {}: {e}; the partition stays offline until the next start",
                    p.topic,
                    p.index,
                    r.base_offset
                );
                shard.journal_replay.borrow_mut().failures += 1;
                shard.hold_for_journal(p.topic_id, p.index);
                p.log.retire().await;
                break;
            }
        }
    }
    if appended == 0 {
        return;
    }
    match p.log.flush().await {
        Ok(()) => log::info!(
            "{}-{}: {appended} batch(es) restored from the journal; log end offset {}",
            p.topic,
            p.index,
            p.log.log_end_offset()
        ),
        Err(e) => {
            log::error!(
                "{}-{}: flushing what the journal restored: {e}; the partition stays offline until the next start",
                p.topic,
                p.index
            );
            shard.journal_replay.borrow_mut().failures += 1;
            // Not reopened when space returns: the records are only in the journal.
            shard.hold_for_journal(p.topic_id, p.index);
            p.log.retire().await;
        }
    }
}

/// Why a journal could not be read at start, if one could not. Every partition may have
/// acknowledged records only in it, so none may serve: the broker stops with this error (a
/// restart reads it again), as Kafka stops when its only log directory fails.
pub fn unreadable(shard: &Shard) -> Option<String> {
    shard.journal_replay.borrow().unreadable.clone()
}

/// Records this shard could not replay: its replay errors, and records left for partitions
/// the image gives this shard (they did not open).
pub fn replay_failures(shard: &Shard) -> u64 {
    let image = shard.image();
    let st = shard.journal_replay.borrow();
    let stranded = st
        .records
        .keys()
        .filter(|(id, index)| {
            image
                .topic_by_id(id)
                .is_some_and(|t| image.shard_of(&t.name, *index) == Some(shard.id))
        })
        .count() as u64;
    st.failures + stranded
}

/// Opens this shard's journal for a new epoch (every old entry dead) and hands it to the group
/// commit. `unreplayed`: some shard could not replay a record (a partition that did not open, a
/// journal that could not be read, a replay or its flush that failed). Then no journal is
/// opened or removed: the old files stay as they are for the next start to replay, and until
/// then rounds fdatasync every partition's file (the partitions concerned are offline, so no
/// offset their records hold is taken again). Shard 0 also removes journals of shards that no
/// longer exist.
pub async fn start(shard: &Shard, unreplayed: bool) {
    let dir = shard.config.data_dir.clone();
    let state = std::mem::take(&mut *shard.journal_replay.borrow_mut());
    if unreplayed {
        // Partitions of this shard that did not open keep their records only in the journals:
        // they must not open before the next start replays them.
        let image = shard.image();
        for (id, index) in state.records.keys() {
            if image
                .topic_by_id(id)
                .is_some_and(|t| image.shard_of(&t.name, *index) == Some(shard.id))
            {
                shard.hold_for_journal(*id, *index);
            }
        }
        log::error!(
            "shard {}: journal records could not all be replayed; the journals are kept for the next start, which replays them again; until then no journal is used",
            shard.id
        );
        return;
    }
    let mut old: Vec<std::path::PathBuf> = Vec::new();
    if shard.id == 0 {
        if let Ok(names) = GlommioDisk.list_dir(&dir) {
            old.extend(
                names
                    .iter()
                    .filter(|n| journal_file_id(n).is_some_and(|id| id >= shard.nr_shards))
                    .map(|n| dir.join(n)),
            );
        }
    }
    let own = journal::journal_path(&dir, shard.id);
    if shard.config.log_journal_bytes == 0 {
        old.push(own.clone());
    }
    for path in old.iter().filter(|p| GlommioDisk.exists(p)) {
        if let Err(e) = GlommioDisk
            .remove_file(path)
            .and_then(|()| GlommioDisk.sync_dir(&dir))
        {
            log::error!("shard {}: {e}", shard.id);
        }
    }
    if shard.config.log_journal_bytes == 0 {
        return;
    }
    match Journal::open(
        &GlommioDisk,
        &own,
        shard.config.log_journal_bytes,
        &state.own,
    )
    .await
    {
        Ok(j) => shard.commit.install_journal(JournalSink::new(
            j,
            shard.config.log_journal_partition_max_bytes,
            shard.probe.clone(),
        )),
        Err(e) => log::error!(
            "shard {}: cannot open journal {}: {e}; every flush round fdatasyncs each partition",
            shard.id,
            own.display()
        ),
    }
}
