//! The load generator's allocator settings.
//!
//! mimalloc returns memory freed for a second (its `purge_delay`) to the OS. A load generator's
//! memory swings with the broker: a batch of late responses frees a few hundred MB of frames and
//! batches, the next burst asks for them again, and each page comes back from the kernel cleared.
//! In the W4 shape (half of W1, acks=all) those bursts held the bench's core in `clear_page` for
//! 0.3–0.5 s, up to three times a run; the broker sat idle meanwhile, and the stall was the run's
//! p99 (465–841 ms in the runs that had one; profiled in `perf/2026-12-04-w4-stall.md`). The
//! bench keeps what it freed instead, which removes that path: its peak is bounded by its own
//! buffers (`--buffer-bytes` per producer, fetch sizes per consumer), and a run ends with the
//! process. (The machine stopped producing the stall soon after, so no A/B shows the change.)

use libmimalloc_sys::{mi_option_set, mi_option_t};

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3 alike; libmimalloc-sys does not
/// name it): milliseconds before freed memory goes back to the OS, -1 for never.
const MI_OPTION_PURGE_DELAY: mi_option_t = 15;

/// The environment variable mimalloc reads the same option from; a user's setting wins.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Turns off returning freed memory to the OS, unless `MIMALLOC_PURGE_DELAY` says otherwise.
pub fn keep_freed_memory() {
    if std::env::var_os(PURGE_DELAY_ENV).is_none() {
        // SAFETY: sets one integer option; mimalloc allows it at any time, from any thread.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// The purge delay in force (ms; -1 never).
#[cfg(test)]
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads one integer option.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_15_is_the_purge_delay_and_keep_freed_memory_turns_it_off() {
        if std::env::var_os(PURGE_DELAY_ENV).is_some() {
            eprintln!("{PURGE_DELAY_ENV} is set: the default cannot be checked");
            return;
        }
        // Before: mimalloc's documented default purge delay (1000 ms in v3, 10 ms in v2), which
        // no other option in the table has at this index; a wrong index would read something else.
        let before = purge_delay_ms();
        assert!(
            before == 1000 || before == 10,
            "option {MI_OPTION_PURGE_DELAY} reads {before}, not a purge delay default"
        );
        keep_freed_memory();
        assert_eq!(purge_delay_ms(), -1);
    }
}
