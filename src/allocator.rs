//! mimalloc's settings for the broker and the load generator, both of which use it as their
//! global allocator.
//!
//! mimalloc returns memory freed for a while (its `purge_delay`) to the OS. Memory under load
//! swings: a burst of answers frees a few hundred MB of frames and batches, the next burst asks
//! for them again, and each page comes back from the kernel cleared. In the bench, in the W4
//! shape (half of W1, acks=all), those bursts held its core in `clear_page` for 0.3–0.5 s, up to
//! three times a run, and the stall was the run's p99 (465–841 ms in the runs that had one;
//! `perf/2026-12-04-w4-stall.md`). In the broker, W4's shape at 794k rec/s, each alternated
//! with glibc's malloc: with mimalloc's default purging, e2e p99 34.2 / 22.9 ms against glibc's
//! 14.1 / 14.9; with purging off, 16.9 / 11.6 ms against glibc's 103.7 / 40.6
//! (`perf/2026-12-05-w5-cpu-bound.md`). Both keep what they freed instead, for good: their
//! peaks are bounded by their own budgets (the broker's cache, request budget and I/O memory;
//! the bench's `--buffer-bytes` per producer, fetch sizes per consumer), as a JVM broker's heap
//! is by -Xmx, and the broker's resident set stays at its high-water mark after a burst. Even
//! a 10 s delay cost the broker W5 throughput (1,106k / 1,110k against 1,173k / 1,173k rec/s).
//! `MIMALLOC_PURGE_DELAY` (milliseconds) overrides it.
//!
//! mimalloc also walks every page of the thread's heap once per 10,000 allocations that miss
//! its fast path (its `generic_collect`). An overloaded open-loop run holds gigabytes of queued
//! batches (W5 at W1's rate: ~2.8 GB of one-record batches), so each walk is long, and it took
//! 15–16% of the bench's core there, under `BatchBuilder::append`'s and the request frame's
//! reallocations (`perf/2026-12-04-request-ceiling.md`). Both collect a hundred times less
//! often: W5 at 600k rec/s offered went from 408k/434k to 464k/480k rec/s acknowledged.
//!
//! The build uses mimalloc 2 (libmimalloc-sys's `v2` feature). Version 3 places a new page in
//! the untouched space of chunks already in use before it reuses a chunk that was freed whole,
//! so memory faulted in at start (`cache.pretouch`, `crate::memory::pretouch_heap`) was not
//! what the cache then filled: a 3 s run in W4's shape still grew the resident set by
//! 176–207 MB after a 128 MiB pretouch, against 68–76 MB with version 2
//! (`perf/2026-12-05-w4-pretouch.md`). The option indexes below are version 2's.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use libmimalloc_sys::{mi_option_set, mi_option_t};

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3 alike; libmimalloc-sys does not
/// name it): milliseconds before freed memory goes back to the OS, -1 for never.
const MI_OPTION_PURGE_DELAY: mi_option_t = 15;

/// The environment variable mimalloc reads the same option from; a user's setting wins.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// `mi_option_generic_collect` in v2's `mi_option_e` (34 in v3's): collect the heap every N
/// allocations that take the slow path (default 10,000; mimalloc clamps it to 1..=1,000,000).
const MI_OPTION_GENERIC_COLLECT: mi_option_t = 36;
const GENERIC_COLLECT_ENV: &str = "MIMALLOC_GENERIC_COLLECT";
/// The largest value mimalloc accepts.
const GENERIC_COLLECT_RARELY: std::os::raw::c_long = 1_000_000;

/// Turns off returning freed memory to the OS and makes heap collection rare (see the module
/// doc), unless the matching `MIMALLOC_*` variable says otherwise.
pub fn keep_freed_memory() {
    if std::env::var_os(PURGE_DELAY_ENV).is_none() {
        // SAFETY: sets one integer option; mimalloc allows it at any time, from any thread.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
    if std::env::var_os(GENERIC_COLLECT_ENV).is_none() {
        // SAFETY: as above.
        unsafe { mi_option_set(MI_OPTION_GENERIC_COLLECT, GENERIC_COLLECT_RARELY) };
    }
}

/// The purge delay in force (ms; -1 never).
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads one integer option.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
}

/// Slow-path allocations between heap collections, in force.
#[cfg(test)]
pub fn generic_collect() -> i64 {
    // SAFETY: reads one integer option.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_GENERIC_COLLECT) as i64 }
}

/// The broker's global allocator: mimalloc, counting the bytes it has handed out and not had
/// back, for `odradek_heap_allocated_bytes` (glibc's `mallinfo2` gave that figure before, and
/// mimalloc keeps no such count in its release builds). Each thread adds to a counter of its
/// own (a slot, on its own cache line; threads past [`SLOTS`] share them), so counting costs
/// one uncontended atomic add per allocation and per free; a block freed by another thread is
/// taken off that thread's counter, and only the sum means anything.
pub struct CountingMiMalloc;

/// Counter slots; the broker has a thread per core plus a few helpers.
const SLOTS: usize = 64;

#[repr(align(64))]
struct Slot(AtomicI64);

static COUNTS: [Slot; SLOTS] = [const { Slot(AtomicI64::new(0)) }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
/// Set by the first allocation through [`CountingMiMalloc`]: it is the global allocator.
static COUNTING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread's slot, taken on its first allocation (a const initialiser: no allocation).
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Records that this allocator is the global one; reads first, so that shards do not all write
/// one cache line on every allocation.
fn mark_counting() {
    if !COUNTING.load(Ordering::Relaxed) {
        COUNTING.store(true, Ordering::Relaxed);
    }
}

fn count(delta: i64) {
    let slot = SLOT
        .try_with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS);
            }
            s.get()
        })
        // While this thread's locals are torn down: any slot keeps the sum right.
        .unwrap_or(0);
    COUNTS[slot].0.fetch_add(delta, Ordering::Relaxed);
}

// SAFETY: every method forwards to mimalloc's, which upholds GlobalAlloc's contract; the
// counting touches only atomics and a const thread-local, and never allocates.
unsafe impl GlobalAlloc for CountingMiMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            mark_counting();
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            mark_counting();
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        count(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

/// Bytes handed out and not yet freed, when [`CountingMiMalloc`] is the global allocator.
pub fn counted_heap_bytes() -> Option<u64> {
    if !COUNTING.load(Ordering::Relaxed) {
        return None;
    }
    let sum: i64 = COUNTS.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
    Some(sum.max(0) as u64)
}

/// Whether the global allocator keeps memory it frees (mimalloc through [`CountingMiMalloc`],
/// its purge delay "never"), so that pages touched once stay resident for later allocations.
pub fn keeps_freed_memory() -> bool {
    COUNTING.load(Ordering::Relaxed) && purge_delay_ms() < 0
}

/// Has mimalloc give memory it holds free back to the OS now (after a burst; see
/// `crate::memory::trim_heap`).
pub fn collect() {
    // SAFETY: mi_collect only works on mimalloc's own bookkeeping.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test for both options: `keep_freed_memory` sets both, and tests share the process.
    #[test]
    fn the_options_are_at_their_indexes_and_keep_freed_memory_sets_them() {
        let purge_default = std::env::var_os(PURGE_DELAY_ENV).is_none();
        let collect_default = std::env::var_os(GENERIC_COLLECT_ENV).is_none();
        // Before: mimalloc's documented defaults (purge delay 1000 ms in v3, 10 ms in v2;
        // generic_collect 10,000), which no other option in the table has at these indexes; a
        // wrong index would read something else.
        let (purge, collect) = (purge_delay_ms(), generic_collect());
        if purge_default {
            assert!(
                purge == 1000 || purge == 10,
                "option {MI_OPTION_PURGE_DELAY} reads {purge}, not a purge delay default"
            );
        }
        if collect_default {
            assert_eq!(
                collect, 10_000,
                "option {MI_OPTION_GENERIC_COLLECT} reads {collect}, not generic_collect's default"
            );
        }
        keep_freed_memory();
        if purge_default {
            assert_eq!(purge_delay_ms(), -1);
        }
        if collect_default {
            assert_eq!(generic_collect(), GENERIC_COLLECT_RARELY);
        }
    }
}
