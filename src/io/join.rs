//! Waiting on many io_uring operations from one task.
//!
//! glommio keeps one more clone of the polling task's waker every time a pending file read or
//! write is polled, until the operation completes, and a task's waker count is an `i16`. The
//! `futures` crate's `join_all`/`try_join_all` poll every pending child again whenever any one
//! of them wakes the task (for up to 30 children, and so at every level of a nested join): a
//! group-commit round writing many 1 MiB chunks to 16 partitions re-polled each pending write
//! once per completion, passed 32,767 clones and the shard panicked in glommio (seen in a
//! CPU-bound produce benchmark, 3 runs of 10). The joins here give every child its own waker
//! (`FuturesOrdered`) and poll a child only when its own operation woke it, so a pending
//! operation holds one clone of the task's waker however many others complete around it.

use std::future::Future;

use futures::stream::{FuturesOrdered, StreamExt, TryStreamExt};

/// Every future's output, in the order given.
pub async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    futures
        .into_iter()
        .collect::<FuturesOrdered<F>>()
        .collect()
        .await
}

/// Every future's value in the order given, or the first error (the others are dropped then).
pub async fn try_join_all<F, T, E>(futures: impl IntoIterator<Item = F>) -> Result<Vec<T>, E>
where
    F: Future<Output = Result<T, E>>,
{
    futures
        .into_iter()
        .collect::<FuturesOrdered<F>>()
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::pin::{pin, Pin};
    use std::rc::Rc;
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// Pending until released; counts its polls and keeps the waker it was last polled with.
    struct Gate {
        polls: Rc<Cell<u32>>,
        open: Rc<Cell<bool>>,
        waker: Rc<RefCell<Option<Waker>>>,
    }

    impl Future for Gate {
        type Output = Result<u32, ()>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            self.polls.set(self.polls.get() + 1);
            if self.open.get() {
                return Poll::Ready(Ok(self.polls.get()));
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    type Handles = [(Rc<Cell<u32>>, Rc<Cell<bool>>, Rc<RefCell<Option<Waker>>>)];

    /// Polls a join of gates once, then opens and wakes them one at a time from the last (so
    /// the join must keep finished children in order), polling after each; returns its output.
    fn release_in_reverse<T>(
        handles: &Handles,
        mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> T {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(poll(&mut cx).is_pending());
        for (i, (_, open, waker)) in handles.iter().enumerate().rev() {
            open.set(true);
            waker.borrow_mut().take().expect("polled once").wake();
            match poll(&mut cx) {
                Poll::Ready(out) if i == 0 => return out,
                Poll::Ready(_) => panic!("done before gate {i} opened"),
                Poll::Pending => {}
            }
        }
        panic!("still pending with every gate open")
    }

    /// What glommio needs: releasing children one at a time, each pending child is polled
    /// once to start and once when its own release wakes it, never once per other release
    /// (the plain `futures` joins poll the last child 1 + N times). Also the results' order.
    #[test]
    fn a_pending_child_is_polled_only_when_it_is_woken() {
        const N: usize = 25; // under 31: the plain joins' poll-everything case
        for use_try in [false, true] {
            let gates: Vec<Gate> = (0..N)
                .map(|_| Gate {
                    polls: Rc::new(Cell::new(0)),
                    open: Rc::new(Cell::new(false)),
                    waker: Rc::new(RefCell::new(None)),
                })
                .collect();
            let handles: Vec<_> = gates
                .iter()
                .map(|g| (g.polls.clone(), g.open.clone(), g.waker.clone()))
                .collect();
            let results = if use_try {
                let mut all = pin!(try_join_all(gates));
                release_in_reverse(&handles, |cx| all.as_mut().poll(cx)).expect("no child failed")
            } else {
                let mut all = pin!(join_all(gates));
                release_in_reverse(&handles, |cx| all.as_mut().poll(cx))
                    .into_iter()
                    .map(|r| r.unwrap_or(0))
                    .collect()
            };
            assert_eq!(
                results,
                vec![2; N],
                "each child polled exactly twice, in order"
            );
            for (polls, _, _) in &handles {
                assert_eq!(polls.get(), 2);
            }
        }
    }

    /// Runs a future that needs no waking (its children are ready when first polled).
    fn ready<F: Future>(f: F) -> F::Output {
        match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("pending"),
        }
    }

    #[test]
    fn try_join_all_stops_at_the_first_error() {
        type Boxed = Pin<Box<dyn Future<Output = Result<i32, &'static str>>>>;
        let all: [Boxed; 3] = [
            Box::pin(async { Ok(1) }),
            Box::pin(async { Err("bad") }),
            Box::pin(async { Ok(3) }),
        ];
        assert_eq!(ready(try_join_all(all)), Err("bad"));
        assert_eq!(
            ready(join_all((1..=2).map(|i| async move { i }))),
            vec![1, 2]
        );
    }
}
