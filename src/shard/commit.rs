//! Group commit: one flush round per shard covers every append that arrived meanwhile.
//!
//! Appends mark their partition dirty and get the number of the round that will cover them
//! (`started + 1`). The committer task runs rounds while anything is dirty. A round takes the
//! dirty set and writes every partition in it concurrently (the write half of a flush), then
//! fdatasyncs them all concurrently (the durable half), then completes and wakes everyone waiting
//! for it. Rounds overlap by one: while round N's fdatasyncs run, round N+1 already writes what
//! arrived meanwhile (the disk is never idle waiting for a flush to return), and round N+1
//! starts its fdatasyncs only once round N has completed, so rounds complete in order. Rounds
//! over many partitions do not overlap: they are bound by one fdatasync per partition, and
//! splitting their appends over more rounds would only add fdatasyncs. An append that arrives
//! after a round started but before that round wrote its partition is written (and made
//! durable) by that round; the next round, which the append waits for, finds nothing new there
//! and skips the partition (`PartitionLog::flush_write_round`): in-order completion covers it.
//! The waiter checks its partition's high watermark afterwards, so a failed flush becomes that
//! partition's KAFKA_STORAGE_ERROR and nobody else's.
//!
//! In a round over few partitions (those that overlap), a partition's write is a durable one
//! (`PartitionLog::flush_write_round_durable`, an O_DSYNC write): it returns once the bytes are
//! durable, so the durable half has no fdatasync left for that file. On ext4 that is one
//! hand-off to an io_uring kernel worker per file instead of two, and the workers share the
//! shard's core: W4's rounds were 0.43–0.73x as long in four alternating pairs, W1 did not
//! change (`perf/2026-12-06-w4-shared-core.md`). Partitions the journal takes keep plain
//! writes (one journal fdatasync covers them), and so do rounds over many partitions, which
//! let their requests' budget go once written, before their fdatasyncs.
//!
//! Once a round's write half is done its batches are in their files (or the journal): the
//! round lets go of them (the batch cache keeps its own reference) and says so
//! ([`GroupCommit::wait_written`]), so the produce requests it covers give back their
//! `queued.max.request.bytes` without waiting for the fdatasyncs.
//!
//! With the shard journal (`journal.rs`), a round's write half also writes one journal entry
//! holding the new batches of the partitions that added little, and its durable half
//! fdatasyncs the journal once for all of them instead of each of their files.
//!
//! The committer runs in a task queue of its own ([`task_queue`]). Every acks=all produce waits
//! for its rounds, and a round has several steps (copy, submit, reap the writes, then the
//! fdatasyncs). In the queue that serves requests, each step waited behind every request task
//! ready at the time; in its own latency-sensitive queue the scheduler comes back to it within
//! [`COMMIT_QUEUE_LATENCY`]. W4 at 674k records/s: e2e p50 and p99 lower in all three
//! alternating suite pairs, for 2–6% more CPU (`perf/2026-12-05-w4-rounds.md`).
//!
//! Metrics: every fdatasync of a durable half is timed on its own (the shard's
//! [`ShardProbe`]: count, latency histogram, how many are in flight), and completed rounds are
//! counted.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::future::{select, Either, LocalBoxFuture};
use glommio::{Latency, Shares, TaskQueueHandle};

use super::journal::{JournalSink, RoundPlan};
use super::notify::Notify;
use super::partition::Partition;
use crate::metrics::ShardProbe;
use crate::storage::pacing::IoPacer;

/// Rounds over at most this many partitions let the next round write during their fdatasyncs
/// (see [`GroupCommit::run`]).
const OVERLAP_MAX_PARTITIONS: usize = 64;

/// How soon the scheduler turns to a woken committer while request tasks are ready (glommio
/// preempts the running queue after at most this long).
pub const COMMIT_QUEUE_LATENCY: std::time::Duration = std::time::Duration::from_micros(500);
/// The committer queue's CPU share, against 1,000 for the queue that serves requests. A round
/// uses little CPU of its own (it mostly waits on the disk); the share only decides who goes
/// first when both have work.
const COMMIT_QUEUE_SHARES: usize = 4000;

/// Creates the shard's committer task queue (see the module docs).
pub fn task_queue() -> TaskQueueHandle {
    glommio::executor().create_task_queue(
        Shares::Static(COMMIT_QUEUE_SHARES),
        Latency::Matters(COMMIT_QUEUE_LATENCY),
        "commit",
    )
}

pub struct GroupCommit {
    started: Cell<u64>,
    /// The last round whose write half is done: its batches are in their segment files (or
    /// the journal) and no longer held in memory for it.
    written: Cell<u64>,
    completed: Cell<u64>,
    dirty: RefCell<Vec<Rc<Partition>>>,
    kick: Notify,
    wrote: Notify,
    done: Notify,
    stopping: Cell<bool>,
    /// Told how long every round's fdatasyncs took.
    pacer: Rc<IoPacer>,
    probe: Rc<ShardProbe>,
    /// The shard journal, once started (see `journal.rs`); until then, and without one, every
    /// partition fdatasyncs its own file.
    journal: RefCell<Option<Rc<JournalSink>>>,
}

impl GroupCommit {
    pub fn new(pacer: Rc<IoPacer>, probe: Rc<ShardProbe>) -> GroupCommit {
        GroupCommit {
            started: Cell::new(0),
            written: Cell::new(0),
            completed: Cell::new(0),
            dirty: RefCell::new(Vec::new()),
            kick: Notify::new(),
            wrote: Notify::new(),
            done: Notify::new(),
            stopping: Cell::new(false),
            pacer,
            probe,
            journal: RefCell::new(None),
        }
    }

    /// From now on, rounds make small appends durable through `journal`.
    pub fn install_journal(&self, journal: Rc<JournalSink>) {
        *self.journal.borrow_mut() = Some(journal);
    }

    /// The shard journal, if started.
    pub fn journal(&self) -> Option<Rc<JournalSink>> {
        self.journal.borrow().clone()
    }

    /// Registers `p` as having unflushed appends; returns the round that will make them durable.
    pub fn mark_dirty(&self, p: &Rc<Partition>) -> u64 {
        if !p.dirty.replace(true) {
            self.dirty.borrow_mut().push(p.clone());
        }
        self.kick.notify_all();
        self.started.get() + 1
    }

    /// The round that makes durable everything already appended to a partition whose dirty flag
    /// is `dirty`: the next round if it is queued, else the one running (or already done).
    pub fn covering_round(&self, dirty: bool) -> u64 {
        if dirty {
            self.started.get() + 1
        } else {
            self.started.get()
        }
    }

    /// Waits until round `round` has written what it covers (not yet durable).
    pub async fn wait_written(&self, round: u64) {
        while self.written.get() < round {
            self.wrote.notified().await;
        }
    }

    /// Waits until round `round` has completed.
    pub async fn wait_round(&self, round: u64) {
        while self.completed.get() < round {
            self.done.notified().await;
        }
    }

    /// The committer loop; returns after [`GroupCommit::stop`] once nothing is dirty and the
    /// last round has completed.
    pub async fn run(&self) {
        // The durable half of the last round written, running while the next one writes, and
        // how many partitions it covers.
        let mut syncing: Option<(LocalBoxFuture<'_, ()>, usize)> = None;
        loop {
            if self.dirty.borrow().is_empty() {
                match syncing.take() {
                    // Until it completes or something new is appended.
                    Some((mut sync, n)) => {
                        let kicked = Box::pin(self.kick.notified());
                        if let Either::Right(_) = select(sync.as_mut(), kicked).await {
                            syncing = Some((sync, n));
                        }
                    }
                    None if self.stopping.get() => return,
                    None => self.kick.notified().await,
                }
                continue;
            }
            // A round over many files is bound by their fdatasyncs, one per dirty partition:
            // starting the next round early would only split the appends over more rounds, and
            // so more fdatasyncs (measured: -10% with 1,000 partitions). Let it finish first.
            let previous = match syncing.take() {
                Some((sync, n)) if n > OVERLAP_MAX_PARTITIONS => {
                    sync.await;
                    None
                }
                other => other,
            };
            let (round, batch, clock) = self.take_round();
            let (plan, ()) = futures::join!(self.write_half(round, &batch), async {
                if let Some((sync, _)) = previous {
                    sync.await;
                }
            });
            // Journaled partitions share one fdatasync: only the others count here.
            let n = plan.per_file.len();
            syncing = Some((Box::pin(self.durable_half(round, batch, plan, clock)), n));
        }
    }

    /// One whole flush round over the current dirty set, not overlapped with anything (the last
    /// one at shutdown, after [`GroupCommit::run`] has returned).
    pub async fn round(&self) {
        if self.dirty.borrow().is_empty() {
            return;
        }
        let (round, batch, clock) = self.take_round();
        let plan = self.write_half(round, &batch).await;
        self.durable_half(round, batch, plan, clock).await;
    }

    /// Starts a round: takes the dirty set and numbers it, and starts the clock of its length
    /// (for [`ShardProbe::commit_round_done`]). Every earlier round's writes have completed
    /// here, which makes it the place to start a journal checkpoint.
    fn take_round(&self) -> (u64, Vec<Rc<Partition>>, Option<std::time::Instant>) {
        let clock = self.probe.clock();
        if let Some(j) = self.journal() {
            j.maybe_checkpoint();
        }
        let batch: Vec<Rc<Partition>> = std::mem::take(&mut *self.dirty.borrow_mut());
        self.started.set(self.started.get() + 1);
        for p in &batch {
            p.dirty.set(false);
        }
        (self.started.get(), batch, clock)
    }

    /// Writes every partition of the round, then the journal entry of those that go through
    /// the journal; then the round's batches are let go of (the cache keeps its own reference)
    /// and the requests that brought them may give back their `queued.max.request.bytes`.
    async fn write_half(&self, round: u64, batch: &[Rc<Partition>]) -> RoundPlan {
        // A round over few partitions fdatasyncs each file right after writing it: its writes
        // may as well be durable ones, one operation per file instead of two (see the module
        // docs). Not the partitions the journal takes, and not a round over many partitions:
        // that one lets its requests' budget go once written, before its fdatasyncs.
        let durable_writes = batch.len() <= OVERLAP_MAX_PARTITIONS;
        let journal = self.journal();
        let tickets = crate::io::join::join_all(batch.iter().map(|p| {
            let durable = durable_writes
                && !journal
                    .as_ref()
                    .is_some_and(|j| j.would_take(p.log.unwritten_bytes()));
            p.flush_write_round(durable)
        }))
        .await;
        let written: Vec<_> = batch
            .iter()
            .zip(tickets)
            .filter_map(|(p, t)| Some((p.clone(), t?)))
            .collect();
        let mut plan = match self.journal() {
            Some(j) => j.write_round(written).await,
            None => RoundPlan::per_file(written),
        };
        plan.forget_batches();
        self.written.set(round);
        self.wrote.notify_all();
        plan
    }

    /// Makes what the round wrote durable (fdatasyncs), then completes it. `clock`: when the
    /// round took its dirty set (for the round-length histogram).
    async fn durable_half(
        &self,
        round: u64,
        batch: Vec<Rc<Partition>>,
        plan: RoundPlan,
        clock: Option<std::time::Instant>,
    ) {
        let syncs = plan.per_file.into_iter().map(|(p, t)| async move {
            // A durable write left nothing to fdatasync: counted apart.
            let clock = if t.synced() {
                self.probe.durable_write_done();
                None
            } else {
                Some(self.probe.fsync_started())
            };
            p.flush_sync(t).await;
            if let Some(clock) = clock {
                self.probe.fsync_done(clock);
            }
        });
        let journaled = async {
            if let Some((journal, items)) = plan.journaled {
                journal.make_durable(items).await;
            }
        };
        crate::crash_points::pause("commit_fsync_before").await;
        let started = std::time::Instant::now();
        crate::crash_points::hit("commit_fsync_before");
        futures::join!(crate::io::join::join_all(syncs), journaled);
        crate::crash_points::hit("commit_fsync_after");
        self.pacer.foreground_sync(started.elapsed());
        self.probe.commit_round_done(clock);
        self.completed.set(round);
        self.done.notify_all();
        for p in &batch {
            p.data_arrived.notify_all();
        }
    }

    /// Makes [`GroupCommit::run`] return once the dirty set is empty.
    pub fn stop(&self) {
        self.stopping.set(true);
        self.kick.notify_all();
    }
}
