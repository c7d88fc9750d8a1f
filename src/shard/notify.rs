//! `Notify`: a single-threaded "wake everyone waiting" event for tasks of one shard.
//!
//! Used for "the high watermark moved" (long-poll fetches), "a flush round finished" (acks) and
//! "there is something to flush" (the group-commit task). A waiter registers one waker slot and
//! replaces it on every poll, so repeated polls never grow the list; a dropped waiter frees its
//! slot. The number of slots is bounded by the number of waiting tasks, which the connection
//! in-flight limit bounds.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Notify {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes every task currently waiting in [`Notify::notified`].
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// A future that completes at the next [`Notify::notify_all`] after this call.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            generation: self.generation.get(),
            slot: None,
        }
    }
}

pub struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
    slot: Option<usize>,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut slots = self.notify.slots.borrow_mut();
        match self.slot {
            Some(i) => slots[i] = Some(cx.waker().clone()),
            None => {
                let i = match self.notify.free.borrow_mut().pop() {
                    Some(i) => {
                        slots[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        slots.push(Some(cx.waker().clone()));
                        slots.len() - 1
                    }
                };
                drop(slots);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if let Some(slot) = self.notify.slots.borrow_mut().get_mut(i) {
                *slot = None;
            }
            self.notify.free.borrow_mut().push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn wakes_waiters_and_reuses_slots() {
        glommio::LocalExecutor::default().run(async {
            let n = Rc::new(Notify::new());
            let done = Rc::new(Cell::new(0));
            let mut tasks = Vec::new();
            for _ in 0..3 {
                let (n, done) = (n.clone(), done.clone());
                tasks.push(glommio::spawn_local(async move {
                    n.notified().await;
                    done.set(done.get() + 1);
                }));
            }
            glommio::yield_if_needed().await;
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            assert_eq!(done.get(), 0);
            n.notify_all();
            for t in tasks {
                t.await;
            }
            assert_eq!(done.get(), 3);
            // All slots were released: a new waiter reuses one instead of growing the list.
            let len = n.slots.borrow().len();
            let w = n.notified();
            drop(w);
            assert_eq!(n.slots.borrow().len(), len);
        });
    }
}
