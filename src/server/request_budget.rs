//! `queued.max.request.bytes` (Kafka's name and meaning, counted per shard here): the bytes of
//! requests a shard has read and not yet answered. A connection whose next request does not
//! fit waits before dispatching it, and so stops being read: the client's further requests
//! wait in its socket, not in the broker's memory.
//!
//! Without it, what the shard holds is bounded only by connections x `connection.inflight.max`
//! x request size: W5 at twice the rate one core sustains peaked at 1.75-1.89 GB of RSS, with
//! the default budget at 0.78-1.0 GB for the same throughput
//! (perf/2026-12-04-queued-request-bytes.md).
//!
//! A request is counted from when its whole frame has arrived until its answer is computed,
//! except Produce with acks=all (or durable acks=1), which gives its bytes back once its
//! batches are written to their segment files (`RequestHold`): from then on only the batch
//! cache holds them, within its own budget, and the fdatasync it waits for holds no request
//! memory. Kafka frees a produce request's buffer once appended, too. Counting to the
//! fdatasync held each request ~1.5 group-commit rounds, and with 1,000 partitions a round is
//! ~150-250 ms: W5 was bound by the budget over that time (966k-999k rec/s; released once
//! written 1.07M-1.11M, same session). The encoded response is bounded on its own
//! (`fetch.max.bytes`, one response per connection at a time), and so is the one frame each
//! connection may be receiving (`socket.request.max.bytes`, grown as bytes arrive). A frame
//! larger than the whole budget waits for all of it. No answer waits for a request that has
//! not been read (a rebalance waiting for members that have not rejoined ends at its
//! timeout), so a full budget always drains.
//!
//! What this does not bound: each connection waiting for room holds its one complete frame
//! (up to `socket.request.max.bytes`) outside the budget. W5 at more than the broker takes
//! (1,000 connections, ~1 MiB requests) keeps ~900 connections waiting, ~900 MB of frames: the
//! broker's 1.4-1.7 GB there. Taking the room when the size prefix arrives instead, before the
//! body is read (Kafka's memory pool), cut that to 0.57 GB but collapsed the run: a frame
//! whose bytes were stuck in TCP retransmission (loopback's `tcp_mem` overflows under that
//! backlog) held its room for seconds while everyone waited (perf/2026-12-05-w5-budget-release.md).

use std::cell::Cell;
use std::rc::Rc;

use glommio::sync::{Semaphore, StaticPermit};

use crate::io::semaphore::acquire_passing_wake;

pub struct RequestBudget {
    bytes: u64,
    semaphore: Rc<Semaphore>,
    /// Most bytes held at once since start (a metric).
    peak: std::cell::Cell<u64>,
}

/// Bytes of one request, held until dropped.
pub type RequestPermit = StaticPermit;

/// A request's bytes in the budget, shared by its connection and its handler. The connection
/// gives them back once the request is answered; a handler may give them back earlier, once
/// it no longer holds the request's bytes (Produce with acks=all: once its batches are written
/// to their segment files, long before the fdatasync that lets it answer). Empty when the
/// budget is unbounded.
#[derive(Clone, Default)]
pub struct RequestHold(Option<Rc<Cell<Option<RequestPermit>>>>);

impl std::fmt::Debug for RequestHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestHold")
    }
}

impl RequestHold {
    pub fn new(permit: Option<RequestPermit>) -> RequestHold {
        RequestHold(permit.map(|p| Rc::new(Cell::new(Some(p)))))
    }

    /// The request is counted in a budget (`queued.max.request.bytes` is not unbounded).
    pub fn counted(&self) -> bool {
        self.0.is_some()
    }

    /// Gives the bytes back (again: nothing).
    pub fn release(&self) {
        if let Some(cell) = &self.0 {
            drop(cell.take());
        }
    }
}

impl RequestBudget {
    pub fn new(bytes: u64) -> RequestBudget {
        let bytes = bytes.max(1);
        RequestBudget {
            bytes,
            semaphore: Rc::new(Semaphore::new(bytes)),
            peak: std::cell::Cell::new(0),
        }
    }

    /// Waits until a request of `len` bytes fits (capped at the whole budget); `None` only if
    /// the semaphore was closed, which this module never does.
    pub async fn reserve(&self, len: usize) -> Option<RequestPermit> {
        let units = (len as u64).min(self.bytes);
        // Fast path: no future, no allocation (fails while others wait, keeping their turn).
        let permit = match self.semaphore.try_acquire_static_permit(units) {
            Ok(p) => p,
            // A connection closed while it waits must not take the next one's wake-up with it.
            Err(_) => {
                acquire_passing_wake(&self.semaphore, self.semaphore.acquire_static_permit(units))
                    .await
                    .ok()?
            }
        };
        self.peak.set(self.peak.get().max(self.held()));
        Some(permit)
    }

    /// Bytes not taken right now.
    pub fn available(&self) -> u64 {
        self.semaphore.available()
    }

    /// Bytes of requests held right now.
    pub fn held(&self) -> u64 {
        self.bytes.saturating_sub(self.semaphore.available())
    }

    /// Most bytes held at once since start.
    pub fn peak(&self) -> u64 {
        self.peak.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn requests_wait_for_room_and_a_frame_over_the_budget_takes_all_of_it() {
        crate::io::test_executor::on_executor(|| async {
            let budget = Rc::new(RequestBudget::new(100));
            let a = budget.reserve(60).await.expect("room");
            let b = budget.reserve(40).await.expect("room");
            assert_eq!(budget.available(), 0);

            // A third waits until one of the first two is answered.
            let got = Rc::new(Cell::new(false));
            let waiter = {
                let (budget, got) = (budget.clone(), got.clone());
                glommio::spawn_local(async move {
                    let p = budget.reserve(50).await.expect("room");
                    got.set(true);
                    p
                })
            };
            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
            assert!(!got.get(), "a request got room the budget did not have");
            drop(b);
            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
            assert!(!got.get(), "40 free bytes admitted a 50-byte request");
            drop(a);
            let c = waiter.await;
            assert!(got.get());
            assert_eq!(budget.available(), 50);
            assert_eq!(budget.held(), 50);
            drop(c);
            assert_eq!(budget.peak(), 100);

            // Larger than the whole budget: waits for all of it, then holds all of it.
            let big = budget.reserve(1_000).await.expect("room");
            assert_eq!(budget.available(), 0);
            drop(big);
            assert_eq!(budget.available(), 100);
        });
    }

    #[test]
    fn a_waiter_dropped_after_its_wake_passes_the_room_on() {
        crate::io::test_executor::on_executor(|| async {
            let budget = Rc::new(RequestBudget::new(10));
            let held = budget.reserve(10).await.expect("room");
            // First in line, polled by hand.
            let mut cancelled = Box::pin(budget.reserve(10));
            assert!(futures::poll!(cancelled.as_mut()).is_pending());
            // Second in line, a task of its own: polled again only when woken.
            let got = Rc::new(Cell::new(false));
            let waiting = {
                let (budget, got) = (budget.clone(), got.clone());
                glommio::spawn_local(async move {
                    got.set(budget.reserve(10).await.is_some());
                })
            };
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            assert!(!got.get());
            // Room comes back and wakes the first waiter, which is dropped before it runs:
            // the one behind it must still get the room.
            drop(held);
            drop(cancelled);
            let timeout = glommio::timer::sleep(std::time::Duration::from_secs(5));
            match futures::future::select(waiting, Box::pin(timeout)).await {
                futures::future::Either::Left(_) => assert!(got.get()),
                futures::future::Either::Right(_) => panic!("a request stuck waiting for room"),
            };
        });
    }
}
