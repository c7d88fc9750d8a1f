//! Group commit: one flush round per shard covers every append that arrived meanwhile.
//!
//! Appends mark their partition dirty and get the number of the round that will cover them
//! (`started + 1`). The committer task runs rounds back to back while anything is dirty: it
//! takes the dirty set, flushes every partition in it concurrently (write + fdatasync, issued
//! together on io_uring), then completes the round and wakes everyone waiting for it. While one
//! round's fdatasyncs run, new appends gather for the next: that is the batching. The waiter
//! checks its partition's high watermark afterwards, so a failed flush becomes that partition's
//! KAFKA_STORAGE_ERROR and nobody else's.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::notify::Notify;
use super::partition::Partition;

#[derive(Default)]
pub struct GroupCommit {
    started: Cell<u64>,
    completed: Cell<u64>,
    dirty: RefCell<Vec<Rc<Partition>>>,
    kick: Notify,
    done: Notify,
    stopping: Cell<bool>,
}

impl GroupCommit {
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

    /// The committer loop; returns after [`GroupCommit::stop`] once nothing is dirty.
    pub async fn run(&self) {
        loop {
            if self.dirty.borrow().is_empty() {
                if self.stopping.get() {
                    return;
                }
                self.kick.notified().await;
                continue;
            }
            self.round().await;
        }
    }

    /// One flush round over the current dirty set.
    pub async fn round(&self) {
        let batch: Vec<Rc<Partition>> = std::mem::take(&mut *self.dirty.borrow_mut());
        if batch.is_empty() {
            return;
        }
        self.started.set(self.started.get() + 1);
        let round = self.started.get();
        for p in &batch {
            p.dirty.set(false);
        }
        let flushes = batch.iter().map(|p| p.flush());
        futures::future::join_all(flushes).await;
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
