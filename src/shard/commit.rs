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
//! splitting their appends over more rounds would only add fdatasyncs. The
//! waiter checks its partition's high watermark afterwards, so a failed flush becomes that
//! partition's KAFKA_STORAGE_ERROR and nobody else's.
//!
//! Metrics: every fdatasync of a durable half is timed on its own (the shard's
//! [`ShardProbe`]: count, latency histogram, how many are in flight), and completed rounds are
//! counted.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::future::{select, Either, LocalBoxFuture};

use super::notify::Notify;
use super::partition::Partition;
use crate::metrics::ShardProbe;
use crate::storage::log::FlushTicket;
use crate::storage::pacing::IoPacer;

/// Rounds over at most this many partitions let the next round write during their fdatasyncs
/// (see [`GroupCommit::run`]).
const OVERLAP_MAX_PARTITIONS: usize = 64;

pub struct GroupCommit {
    started: Cell<u64>,
    completed: Cell<u64>,
    dirty: RefCell<Vec<Rc<Partition>>>,
    kick: Notify,
    done: Notify,
    stopping: Cell<bool>,
    /// Told how long every round's fdatasyncs took.
    pacer: Rc<IoPacer>,
    probe: Rc<ShardProbe>,
}

impl GroupCommit {
    pub fn new(pacer: Rc<IoPacer>, probe: Rc<ShardProbe>) -> GroupCommit {
        GroupCommit {
            started: Cell::new(0),
            completed: Cell::new(0),
            dirty: RefCell::new(Vec::new()),
            kick: Notify::new(),
            done: Notify::new(),
            stopping: Cell::new(false),
            pacer,
            probe,
        }
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
            let (round, batch) = self.take_round();
            let (tickets, ()) = futures::join!(self.write_half(&batch), async {
                if let Some((sync, _)) = previous {
                    sync.await;
                }
            });
            let n = batch.len();
            syncing = Some((Box::pin(self.durable_half(round, batch, tickets)), n));
        }
    }

    /// One whole flush round over the current dirty set, not overlapped with anything (the last
    /// one at shutdown, after [`GroupCommit::run`] has returned).
    pub async fn round(&self) {
        if self.dirty.borrow().is_empty() {
            return;
        }
        let (round, batch) = self.take_round();
        let tickets = self.write_half(&batch).await;
        self.durable_half(round, batch, tickets).await;
    }

    /// Starts a round: takes the dirty set and numbers it.
    fn take_round(&self) -> (u64, Vec<Rc<Partition>>) {
        let batch: Vec<Rc<Partition>> = std::mem::take(&mut *self.dirty.borrow_mut());
        self.started.set(self.started.get() + 1);
        for p in &batch {
            p.dirty.set(false);
        }
        (self.started.get(), batch)
    }

    async fn write_half(&self, batch: &[Rc<Partition>]) -> Vec<Option<FlushTicket>> {
        crate::io::join::join_all(batch.iter().map(|p| p.flush_write())).await
    }

    /// fdatasyncs what the round wrote, then completes it.
    async fn durable_half(
        &self,
        round: u64,
        batch: Vec<Rc<Partition>>,
        tickets: Vec<Option<FlushTicket>>,
    ) {
        let syncs = batch.iter().zip(tickets).filter_map(|(p, t)| {
            let t = t?;
            Some(async move {
                let clock = self.probe.fsync_started();
                p.flush_sync(t).await;
                self.probe.fsync_done(clock);
            })
        });
        let started = std::time::Instant::now();
        crate::crash_points::hit("commit_fsync_before");
        crate::io::join::join_all(syncs).await;
        crate::crash_points::hit("commit_fsync_after");
        self.pacer.foreground_sync(started.elapsed());
        self.probe.commit_round_done();
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
