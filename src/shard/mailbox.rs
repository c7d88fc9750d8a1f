//! The inter-shard mailbox: a full mesh of bounded glommio channels carrying jobs.
//!
//! A job is a `Send` closure that runs on the target shard. Its synchronous body runs inside the
//! target's receive loop, in the order jobs arrived from one sender, so "append these batches"
//! jobs keep the order their connection read them in; the future the body returns (waiting for
//! durability, for data, ...) is spawned and its result travels back on a oneshot. Channels are
//! bounded (`mailbox.capacity`): a full channel makes the sender wait, which is the backpressure.
//!
//! For the metrics, each side counts on its own thread: jobs sent per target (by the sender)
//! and jobs taken per source (by the receiver); a queue's length is the difference, computed
//! at scrape time (no counter is shared between shards).

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;

use futures::channel::oneshot;
use glommio::channels::channel_mesh::{Receivers, Senders};

use super::Shard;

/// A unit of work for another shard.
pub type Job = Box<dyn FnOnce(&Rc<Shard>) + Send + 'static>;

#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not answering (shutting down)")]
pub struct MailboxClosed(pub usize);

pub struct Mailbox {
    senders: Senders<Job>,
    /// Jobs sent to each shard (by index) through its channel.
    sent: Vec<Cell<u64>>,
    /// Jobs this shard's receive loops took from each shard's (by index) channel.
    received: Vec<Cell<u64>>,
}

impl Mailbox {
    pub fn new(senders: Senders<Job>) -> Self {
        let n = senders.nr_consumers();
        Mailbox {
            senders,
            sent: (0..n).map(|_| Cell::new(0)).collect(),
            received: (0..n).map(|_| Cell::new(0)).collect(),
        }
    }

    /// Jobs sent to each shard so far (index = target shard).
    pub fn sent_counts(&self) -> Vec<u64> {
        self.sent.iter().map(Cell::get).collect()
    }

    /// Jobs taken from each shard's channel so far (index = sending shard).
    pub fn received_counts(&self) -> Vec<u64> {
        self.received.iter().map(Cell::get).collect()
    }

    /// Runs `f` on shard `target` and returns what its future yields. `f`'s synchronous body
    /// runs in arrival order on the target; on the calling shard itself it runs immediately.
    pub async fn call<T, F, Fut>(
        &self,
        me: &Rc<Shard>,
        target: usize,
        f: F,
    ) -> Result<T, MailboxClosed>
    where
        T: Send + 'static,
        F: FnOnce(&Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        if target == me.id {
            return Ok(f(me).await);
        }
        let rx = self.send(me, target, f).await?;
        rx.await.map_err(|_| MailboxClosed(target))
    }

    /// Sends `f` to `target` and returns the receiver of its result without waiting for it, so a
    /// caller can fan out to several shards in order and gather afterwards. When `target` is the
    /// calling shard, `f`'s body runs right here, in the same order.
    pub async fn send<T, F, Fut>(
        &self,
        me: &Rc<Shard>,
        target: usize,
        f: F,
    ) -> Result<oneshot::Receiver<T>, MailboxClosed>
    where
        T: Send + 'static,
        F: FnOnce(&Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |shard: &Rc<Shard>| {
            let fut = f(shard);
            glommio::spawn_local(async move {
                // The caller may have gone away (connection closed): nothing to do then.
                let _ = tx.send(fut.await);
            })
            .detach();
        });
        if target == me.id {
            job(me);
        } else {
            self.senders
                .send_to(target, job)
                .await
                .map_err(|_| MailboxClosed(target))?;
            if let Some(n) = self.sent.get(target) {
                n.set(n.get() + 1);
            }
        }
        Ok(rx)
    }

    pub fn close(&self) {
        self.senders.close();
    }
}

/// Runs every job that arrives from any other shard, one receive loop per peer.
pub fn spawn_receivers(shard: &Rc<Shard>, mut receivers: Receivers<Job>) {
    for (peer, receiver) in receivers.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(job) = receiver.recv().await {
                if let Some(n) = shard.mailbox.received.get(peer) {
                    n.set(n.get() + 1);
                }
                job(&shard);
            }
        })
        .detach();
    }
}
