//! Waiting on a glommio semaphore without losing wake-ups.
//!
//! glommio's semaphore hands released units to the first waiters by waking them and taking
//! them off its queue. A waiter dropped after that wake-up but before it ran (a write chunk
//! cancelled because another chunk of its flush failed; a connection closed while it waited
//! for room) neither takes the units nor passes the wake on, and the waiters behind it would
//! sleep until some other permit drops, which may never happen. [`acquire_passing_wake`]
//! wraps an acquire future so that, dropped while still waiting, it wakes the queue again.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use glommio::sync::Semaphore;

/// `acquire` (a permit future of `semaphore`), made safe to drop while waiting (see the module
/// doc).
pub fn acquire_passing_wake<'a, T: 'a>(
    semaphore: &'a Semaphore,
    acquire: impl Future<Output = T> + 'a,
) -> impl Future<Output = T> + 'a {
    PassWakeOnDrop {
        semaphore,
        acquire: Some(Box::pin(acquire)),
    }
}

struct PassWakeOnDrop<'a, T> {
    semaphore: &'a Semaphore,
    /// `None` once the permit is taken.
    acquire: Option<Pin<Box<dyn Future<Output = T> + 'a>>>,
}

impl<T> Future for PassWakeOnDrop<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        let Some(acquire) = this.acquire.as_mut() else {
            // Polled again after it was ready: nothing more will come.
            return Poll::Pending;
        };
        let taken = std::task::ready!(acquire.as_mut().poll(cx));
        this.acquire = None;
        Poll::Ready(taken)
    }
}

impl<T> Drop for PassWakeOnDrop<'_, T> {
    fn drop(&mut self) {
        if let Some(acquire) = self.acquire.take() {
            drop(acquire);
            // Adds no units; runs the semaphore's wake-ups with the units that are free now.
            self.semaphore.signal(0);
        }
    }
}
