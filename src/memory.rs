//! The process's memory: what it consists of (read for `/metrics`), and giving free heap back
//! to the system after a burst.
//!
//! The resident set and the allocator's own view together tell a leak from retention. After a
//! burst — requests that piled up behind a stall, then were answered and freed — the heap's
//! allocated bytes come back down, but glibc returns freed memory to the system only from the
//! top of each arena: one live block above the freed ones keeps them resident, possibly for
//! good (the soak saw +40 MiB stay after a 0.9 s stall, perf/2026-12-03-soak.md). A leak shows
//! as allocated bytes that keep growing; retention as resident bytes that grow while allocated
//! bytes do not. [`HeapTrim`] watches the gap between the two and, when it has grown, has the
//! allocator release its free pages (`malloc_trim`, which also frees whole pages in the middle
//! of an arena).
//!
//! `odradek serve` allocates with mimalloc (`crate::allocator`), which keeps what it frees on
//! purpose: there the allocated figure comes from the allocator's own count, mimalloc does not
//! say what it holds free, and a trim asks it to collect (`mi_collect`), which with freed
//! memory kept may release little; [`HeapTrim::trimmed`] then raises the floor, so it does not
//! try again for nothing. Under glibc's malloc (unit tests, embedders) all of the above holds.

use std::time::{Duration, Instant};

/// One reading; `None` where the platform cannot say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Resident set size (`/proc/self/statm`), bytes.
    pub resident_bytes: Option<u64>,
    /// Bytes the allocator has handed out and not had back (arena chunks in use plus mmapped
    /// blocks).
    pub heap_allocated_bytes: Option<u64>,
    /// Free bytes the allocator holds in its arenas (resident or already given back with
    /// [`trim_heap`]: glibc counts both).
    pub heap_free_bytes: Option<u64>,
}

impl MemoryStats {
    /// Reads the current figures. Cheap enough for every scrape (a procfs read of a few bytes
    /// and glibc's `mallinfo2`, which walks each arena's free lists once).
    pub fn read() -> MemoryStats {
        let (heap_allocated_bytes, heap_free_bytes) = match crate::allocator::counted_heap_bytes() {
            // The broker's own allocator (mimalloc) counts what it hands out; what it holds
            // free it does not say.
            Some(allocated) => (Some(allocated), None),
            None => match heap() {
                Some((allocated, free)) => (Some(allocated), Some(free)),
                None => (None, None),
            },
        };
        MemoryStats {
            resident_bytes: resident_bytes(),
            heap_allocated_bytes,
            heap_free_bytes,
        }
    }

    /// Resident bytes that are not allocated heap: code, stacks, I/O buffers outside the heap
    /// — and free heap the allocator keeps resident, the part that can grow.
    fn unallocated_resident(&self) -> Option<u64> {
        Some(
            self.resident_bytes?
                .saturating_sub(self.heap_allocated_bytes?),
        )
    }
}

/// When to give free heap back: the lowest "resident but not allocated" seen so far is the
/// process's floor (code, stacks, buffers outside the heap); once the figure stands more than
/// `slack` above it, free heap is being kept resident and a trim is due — at most once per
/// `min_gap`. The slack is above what a steady load's own peaks keep (they are faulted back in
/// within seconds: trimming them only trades page faults for the trim's pause), so trims follow
/// bursts; the gap bounds their cost when the load itself swings wider.
#[derive(Debug, Clone)]
pub struct HeapTrim {
    slack: u64,
    min_gap: Duration,
    floor: Option<u64>,
    last: Option<Instant>,
}

impl HeapTrim {
    pub fn new(slack: u64, min_gap: Duration) -> HeapTrim {
        HeapTrim {
            slack,
            min_gap,
            floor: None,
            last: None,
        }
    }

    /// Whether `now` (read at `at`) calls for [`trim_heap`]. Without heap figures (not glibc),
    /// never.
    pub fn due(&mut self, now: &MemoryStats, at: Instant) -> bool {
        let Some(unallocated) = now.unallocated_resident() else {
            return false;
        };
        let floor = self.floor.map_or(unallocated, |f| f.min(unallocated));
        self.floor = Some(floor);
        let rested = self
            .last
            .is_none_or(|t| at.saturating_duration_since(t) >= self.min_gap);
        rested && unallocated > floor + self.slack
    }

    /// After a trim at `at`: if it could not bring the figure back near the floor (memory
    /// outside the heap grew, e.g. more connections' buffers), that is the new floor, so the
    /// next checks do not trim again for nothing.
    pub fn trimmed(&mut self, after: &MemoryStats, at: Instant) {
        self.last = Some(at);
        if let (Some(unallocated), Some(floor)) = (after.unallocated_resident(), self.floor) {
            if unallocated > floor + self.slack {
                self.floor = Some(unallocated);
            }
        }
    }
}

/// Blocks up to this size come from the allocator's arenas, whose freed memory the next
/// allocation reuses, instead of each getting its own mapping (glibc's default starts at
/// 128 KiB and only rises as mapped blocks are freed). 32 MiB is the most glibc accepts.
pub const MMAP_THRESHOLD_BYTES: usize = 32 << 20;

/// Free memory at the top of an arena stays with it up to this size instead of going back to
/// the system at every free. Above it, and for free memory elsewhere in an arena, [`HeapTrim`]
/// decides.
pub const TRIM_THRESHOLD_BYTES: usize = 128 << 20;

/// Makes the allocator keep and reuse large blocks. A catch-up fetch reads megabytes per
/// partition into fresh heap buffers; with glibc's defaults each was mapped and unmapped (or its
/// pages given back) per fetch, and the kernel faulted in and cleared every page of the next:
/// page faults and page returns were ~37% of the broker's samples while one consumer caught up
/// at ~1.1 GB/s, and the broker spent 40% less CPU on the same read with this
/// (`perf/2026-12-04-catch-up-reads.md`). Call at startup, before the shards allocate; setting
/// either value also turns off glibc's own adjustment of both. Returns whether both were
/// accepted.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_large_blocks() -> bool {
    // SAFETY: mallopt only sets the allocator's parameters; the values are in range (both fit
    // an int, and the mmap threshold is at glibc's maximum).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES as libc::c_int) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_large_blocks() -> bool {
    false
}

/// Has the allocator return the free pages of every arena to the system. Blocks the calling
/// thread while it walks the arenas, each under its lock (threads allocating from that arena
/// wait meanwhile); [`HeapTrim`] keeps it to after bursts. Returns whether anything was
/// released (under the broker's mimalloc, which does not say: true).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_heap() -> bool {
    if crate::allocator::counted_heap_bytes().is_some() {
        crate::allocator::collect();
        return true;
    }
    // SAFETY: malloc_trim only works on the allocator's own bookkeeping; 0 keeps no padding.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_heap() -> bool {
    false
}

/// Size of the blocks [`pretouch_heap`] allocates: a large request frame's, since the batch
/// cache holds batches inside the request frames they arrived in.
const PRETOUCH_BLOCK_BYTES: usize = 1 << 20;

/// The smallest page size on the platforms the broker runs on: one write this far apart
/// reaches every page, small or huge.
const PAGE_BYTES: usize = 4096;

/// Faults in `bytes` of heap on the calling thread (at least one write to every page), then
/// frees it; returns the bytes touched (whole blocks). Worth it only where the allocator keeps
/// what it frees ([`crate::allocator::keeps_freed_memory`]) and hands it out again before fresh
/// memory (mimalloc 2; version 3 did not, see `crate::allocator`): the pages then stay
/// resident, and later allocations get them without a page fault.
///
/// Why: a shard's batch cache fills with the first `cache.bytes` of produced batches, and every
/// page of that is fresh heap, faulted in and cleared by the kernel on the shard's core while
/// it serves. On a VM that reports free pages to its host, each comes back from the host too:
/// a fresh broker's first second under W4's load (800k records/s) spent 39–62% of the shard's
/// samples in `clear_page`, fell behind (93k–381k records/s acknowledged) and built a backlog
/// with p99 in the hundreds of ms (`perf/2026-12-05-w4-pretouch.md`). Done at start, the same
/// work takes the shard ~6 ms per 128 MiB when the host has the memory at hand.
pub fn pretouch_heap(bytes: usize) -> usize {
    let blocks = bytes.div_ceil(PRETOUCH_BLOCK_BYTES);
    // All held at once, so the allocator hands out distinct memory for each.
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(blocks);
    for _ in 0..blocks {
        let mut block = Vec::<u8>::with_capacity(PRETOUCH_BLOCK_BYTES);
        let base = block.as_mut_ptr();
        for offset in (0..PRETOUCH_BLOCK_BYTES).step_by(PAGE_BYTES) {
            // SAFETY: `offset` is within the block's capacity, and a u8 has no alignment to
            // keep. Volatile: the block is freed unread, and a plain store to memory about to
            // be freed may be left out by the compiler.
            unsafe { base.add(offset).write_volatile(0) };
        }
        held.push(block);
    }
    blocks * PRETOUCH_BLOCK_BYTES
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().map(|page| pages * page)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap() -> Option<(u64, u64)> {
    // SAFETY: mallinfo2 takes no arguments and only reads the allocator's bookkeeping (under
    // each arena's lock).
    let info = unsafe { libc::mallinfo2() };
    let allocated = (info.uordblks as u64).saturating_add(info.hblkhd as u64);
    Some((allocated, info.fordblks as u64))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap() -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// The two tests that move tens of MiB would see each other's blocks: one at a time.
    static HEAP_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn stats(resident_mib: u64, allocated_mib: u64) -> MemoryStats {
        MemoryStats {
            resident_bytes: Some(resident_mib * MIB),
            heap_allocated_bytes: Some(allocated_mib * MIB),
            heap_free_bytes: None,
        }
    }

    const GAP: Duration = Duration::from_secs(60);

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn with_large_blocks_kept_a_megabytes_buffer_comes_from_the_arena() {
        let _one_at_a_time = HEAP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        assert!(keep_large_blocks());
        // SAFETY: mallinfo2 only reads the allocator's bookkeeping.
        let mapped = || unsafe { libc::mallinfo2() }.hblkhd as u64;
        let before = mapped();
        let buffer = vec![1u8; 16 << 20];
        let during = mapped();
        drop(std::hint::black_box(buffer));
        assert!(
            during < before + MIB,
            "a 16 MiB block was mapped on its own: {before} -> {during} mapped bytes"
        );
    }

    #[test]
    fn pretouch_touches_whole_blocks_covering_what_was_asked() {
        assert_eq!(pretouch_heap(0), 0);
        assert_eq!(pretouch_heap(1), PRETOUCH_BLOCK_BYTES);
        assert_eq!(
            pretouch_heap(3 * PRETOUCH_BLOCK_BYTES + 1),
            4 * PRETOUCH_BLOCK_BYTES
        );
    }

    #[test]
    fn a_trim_is_due_when_resident_grows_without_allocated() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut t = HeapTrim::new(32 * MIB, GAP);
        assert!(
            !t.due(&stats(100, 60), at(0)),
            "the first reading sets the floor (40)"
        );
        assert!(
            !t.due(&stats(140, 100), at(10)),
            "allocated grew with resident: in use"
        );
        assert!(
            !t.due(&stats(165, 100), at(20)),
            "25 MiB over the floor is within the slack"
        );
        assert!(
            t.due(&stats(190, 100), at(30)),
            "50 MiB over the floor: free heap kept"
        );
        t.trimmed(&stats(145, 100), at(30));
        assert!(!t.due(&stats(145, 100), at(40)), "the trim brought it back");
        assert!(
            !t.due(&stats(200, 120), at(50)),
            "kept again, but within a minute of the trim"
        );
        assert!(t.due(&stats(200, 120), at(90)));
    }

    #[test]
    fn a_trim_that_cannot_help_raises_the_floor() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut t = HeapTrim::new(32 * MIB, GAP);
        assert!(!t.due(&stats(100, 60), at(0)));
        assert!(t.due(&stats(200, 60), at(10)));
        // Nothing came back: the growth is outside the heap. Do not trim again for it.
        t.trimmed(&stats(200, 60), at(10));
        assert!(!t.due(&stats(200, 60), at(100)));
        assert!(!t.due(&stats(220, 60), at(110)));
        assert!(t.due(&stats(240, 60), at(120)));
    }

    #[test]
    fn without_heap_figures_no_trim_is_due() {
        let mut t = HeapTrim::new(0, Duration::ZERO);
        let unknown = MemoryStats {
            resident_bytes: Some(500 * MIB),
            ..MemoryStats::default()
        };
        assert!(!t.due(&unknown, Instant::now()));
        assert!(!t.due(&unknown, Instant::now()));
    }

    #[test]
    fn a_large_allocation_shows_in_allocated_bytes_and_leaves_when_freed() {
        let _alone = HEAP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let before = MemoryStats::read();
        assert!(before.resident_bytes.unwrap_or(0) > 0, "{before:?}");
        let Some(base) = before.heap_allocated_bytes else {
            return; // not glibc: nothing more to check
        };
        // Other test threads allocate too; 64 MiB stands clear of their noise (16 MiB margin).
        let block = vec![7u8; 64 << 20];
        let during = MemoryStats::read().heap_allocated_bytes.unwrap_or(0);
        assert!(during >= base + 48 * MIB, "{base} -> {during}");
        drop(std::hint::black_box(block));
        let after = MemoryStats::read().heap_allocated_bytes.unwrap_or(u64::MAX);
        assert!(after <= during - 48 * MIB, "{during} -> {after}");
    }

    /// The case the soak hit: many small blocks freed under one that stays. glibc cannot give
    /// them back from the arena's top; `trim_heap` does.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trim_returns_free_heap_kept_under_a_live_block() {
        let _alone = HEAP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        // A thread of its own, so the blocks come from an arena no other test is using.
        std::thread::spawn(|| {
            let blocks: Vec<Vec<u8>> = (0..96 * 1024).map(|_| vec![1u8; 1024]).collect();
            let pin = vec![2u8; 1024];
            drop(std::hint::black_box(blocks));
            let kept = MemoryStats::read();
            assert!(
                kept.heap_free_bytes.unwrap_or(0) >= 64 * MIB,
                "freed blocks stay in the arena: {kept:?}"
            );
            assert!(trim_heap(), "malloc_trim released nothing: {kept:?}");
            let after = MemoryStats::read();
            // Other tests run meanwhile; half of the 96 MiB standing out is the margin.
            let released = kept
                .resident_bytes
                .unwrap_or(0)
                .saturating_sub(after.resident_bytes.unwrap_or(u64::MAX));
            assert!(released >= 48 * MIB, "{kept:?} -> {after:?}");
            drop(std::hint::black_box(pin));
        })
        .join()
        .expect("trim thread");
    }
}
