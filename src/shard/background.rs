//! Background work of one shard — retention, compaction, producer-state expiry and (shard 0)
//! giving free heap back — in its own glommio task queue with a small CPU share
//! (`background.shares`, against 1000 for the queue that serves requests), so that when both
//! have work the scheduler keeps produce and fetch ahead of it.
//! Each pass is bounded (one partition at a time, yielding between partitions).

use std::rc::Rc;
use std::time::Duration;

use glommio::{Latency, Shares, TaskQueueHandle};

use crate::memory::MemoryStats;

use super::{now_ms, Shard};

/// Creates the shard's background task queue.
pub fn task_queue(shares: usize) -> TaskQueueHandle {
    glommio::executor().create_task_queue(
        Shares::Static(shares.max(1)),
        Latency::NotImportant,
        "background",
    )
}

/// Runs [`retention_pass`] every `log.retention.check.interval.ms` until the shard stops.
pub fn spawn_retention(shard: &Rc<Shard>, queue: TaskQueueHandle) {
    let interval = Duration::from_millis(shard.config.log_retention_check_interval_ms);
    spawn_periodic(shard, queue, interval, "retention", |s| async move {
        retention_pass(&s).await
    });
}

/// Runs [`producer_expiry_pass`] every `producer.id.expiration.check.interval.ms` until the
/// shard stops. Its own loop rather than a step of the retention pass: Kafka sets the two
/// intervals separately, and this pass is memory-only and cheap (no file is touched; the
/// smaller state reaches disk with the next snapshot), so it need not wait for retention's
/// deletes, nor they for it.
pub fn spawn_producer_expiry(shard: &Rc<Shard>, queue: TaskQueueHandle) {
    let interval = Duration::from_millis(shard.config.producer_id_expiration_check_interval_ms);
    spawn_periodic(shard, queue, interval, "producer expiry", |s| async move {
        producer_expiry_pass(&s, now_ms()).await;
    });
}

/// Forgets, in every partition this shard owns, the producers idle for
/// `producer.id.expiration.ms` (see `PartitionLog::expire_producers`); returns how many. Only
/// partitions' idempotence state: the transaction coordinator's transactional ids expire on
/// their own (`transactional.id.expiration.ms`). Memory only, but it yields between
/// partitions like the other passes: a shard may own many partitions with many producers.
pub async fn producer_expiry_pass(shard: &Rc<Shard>, now_ms: i64) -> usize {
    let expiration_ms = shard.config.producer_id_expiration_ms;
    let mut total = 0;
    for p in shard.owned_partitions() {
        let n = p.log.expire_producers(now_ms, expiration_ms);
        if n > 0 {
            log::debug!(
                "{}-{}: forgot {n} producer(s) idle for producer.id.expiration.ms={expiration_ms}, {} left",
                p.topic,
                p.index,
                p.log.producer_count()
            );
        }
        total += n;
        glommio::yield_if_needed().await;
    }
    if total > 0 {
        log::info!(
            "shard {}: forgot {total} idle producer(s) (producer.id.expiration.ms={expiration_ms})",
            shard.id
        );
    }
    total
}

/// How often shard 0 compares the resident set with the allocated heap.
const HEAP_TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Free heap kept resident beyond this (over the lowest seen) is given back. Above what a
/// steady load's own swings keep (the soak's: up to ~25 MiB, faulted back within seconds).
const HEAP_TRIM_SLACK_BYTES: u64 = 32 << 20;

/// At most one trim per this long, whatever the load does.
const HEAP_TRIM_MIN_GAP: Duration = Duration::from_secs(60);

/// Every [`HEAP_TRIM_INTERVAL`], gives free heap back to the system once a burst has left more
/// than [`HEAP_TRIM_SLACK_BYTES`] of it resident (see [`crate::memory`]). Without it the
/// resident set keeps the high-water mark of the worst stall. The trim walks every arena
/// (1.5–8 ms in the soak); it runs on glommio's blocking thread so the shard keeps serving
/// meanwhile (each shard waits only while its own arena is locked for the trim). Logged with
/// its duration.
pub fn spawn_heap_trim(shard: &Rc<Shard>, queue: TaskQueueHandle) {
    let trim = Rc::new(std::cell::RefCell::new(crate::memory::HeapTrim::new(
        HEAP_TRIM_SLACK_BYTES,
        HEAP_TRIM_MIN_GAP,
    )));
    spawn_periodic(shard, queue, HEAP_TRIM_INTERVAL, "heap trim", move |_| {
        let trim = trim.clone();
        async move {
            let before = MemoryStats::read();
            let started = std::time::Instant::now();
            if !trim.borrow_mut().due(&before, started) {
                return;
            }
            glommio::executor()
                .spawn_blocking(crate::memory::trim_heap)
                .await;
            let took = started.elapsed();
            let after = MemoryStats::read();
            trim.borrow_mut().trimmed(&after, started);
            let mib = |m: &MemoryStats| m.resident_bytes.unwrap_or(0) as f64 / (1 << 20) as f64;
            log::info!(
                "memory: gave free heap back to the system after a burst: resident {:.1} -> {:.1} MiB in {:.1} ms",
                mib(&before),
                mib(&after),
                took.as_secs_f64() * 1e3
            );
        }
    });
}

/// Runs `pass` every `interval` in `queue` until the shard stops.
fn spawn_periodic<F, Fut>(
    shard: &Rc<Shard>,
    queue: TaskQueueHandle,
    interval: Duration,
    what: &str,
    pass: F,
) where
    F: Fn(Rc<Shard>) -> Fut + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let weak = Rc::downgrade(shard);
    let task = glommio::spawn_local_into(
        async move {
            loop {
                glommio::timer::sleep(interval).await;
                let Some(shard) = weak.upgrade() else { return };
                if shard.stopping.get() {
                    return;
                }
                pass(shard).await;
            }
        },
        queue,
    );
    match task {
        Ok(t) => {
            t.detach();
        }
        Err(e) => log::error!("shard {}: cannot start {what}: {e}", shard.id),
    }
}

/// How often each shard looks at the data directory's free space.
const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A partition a full disk took offline is reopened once its filesystem has at least this much
/// free (and `log.dir.min.free.bytes`), so it does not fail again at its next write.
const REOPEN_MIN_FREE_BYTES: u64 = 16 << 20;

/// Keeps `shard.disk_low` up to date: true while the data directory's filesystem has less than
/// `log.dir.min.free.bytes` available (never, when that is 0). Runs in the shard's default
/// queue (a statvfs a second), so a busy background queue never delays it. Transitions are
/// logged. With enough space, reopens partitions a full disk took offline (a write that hit
/// ENOSPC: with the guard off, or a burst faster than it looks).
pub fn spawn_disk_guard(shard: &Rc<Shard>) {
    let min_free = shard.config.log_dir_min_free_bytes;
    let weak = Rc::downgrade(shard);
    glommio::spawn_local(async move {
        loop {
            let Some(shard) = weak.upgrade() else { return };
            if shard.stopping.get() {
                return;
            }
            if let Some((_, available)) = crate::io::filesystem_space(&shard.config.data_dir) {
                let low = available < min_free;
                if low != shard.disk_low.replace(low) && shard.id == 0 {
                    if low {
                        log::warn!(
                            "data directory {} has {available} bytes free, below log.dir.min.free.bytes={min_free}: refusing produce (KAFKA_STORAGE_ERROR) until space returns",
                            shard.config.data_dir.display()
                        );
                    } else {
                        log::info!(
                            "data directory {} has {available} bytes free again: accepting produce",
                            shard.config.data_dir.display()
                        );
                    }
                }
            }
            shard
                .reopen_out_of_space(min_free.max(REOPEN_MIN_FREE_BYTES))
                .await;
            drop(shard);
            glommio::timer::sleep(DISK_CHECK_INTERVAL).await;
        }
    })
    .detach();
}

/// Bytes of offset map per key (a 128-bit key hash and an offset, plus the table's overhead).
const MAP_BYTES_PER_KEY: u64 = 32;

/// Runs [`compaction_pass`] every `log.cleaner.backoff.ms` until the shard stops (if
/// `log.cleaner.enable`).
pub fn spawn_compaction(shard: &Rc<Shard>, queue: TaskQueueHandle) {
    if !shard.config.log_cleaner_enable {
        return;
    }
    let interval = Duration::from_millis(shard.config.log_cleaner_backoff_ms);
    spawn_periodic(shard, queue, interval, "compaction", |s| async move {
        compaction_pass(&s).await
    });
}

/// Compacts every partition of a compacted topic this shard owns, one at a time.
pub async fn compaction_pass(shard: &Rc<Shard>) {
    for p in shard.owned_partitions() {
        if shard.stopping.get() {
            return;
        }
        let Some(cfg) = shard.topic_config(&p.topic) else {
            continue;
        };
        if !cfg.cleanup_compact {
            continue;
        }
        let settings = crate::storage::log::CompactionSettings {
            min_cleanable_ratio: cfg.min_cleanable_dirty_ratio,
            min_lag_ms: cfg.min_compaction_lag_ms,
            max_lag_ms: cfg.max_compaction_lag_ms,
            delete_retention_ms: cfg.delete_retention_ms,
            map_capacity: (shard.config.log_cleaner_dedupe_buffer_size / MAP_BYTES_PER_KEY)
                as usize,
            pacer: shard.pacer.clone(),
        };
        let started = std::time::Instant::now();
        match p.log.compact(&settings, now_ms()).await {
            Ok(None) => {}
            Ok(Some(o)) => log::info!(
                "{}-{}: compacted {} segment(s), {} -> {} bytes, {} key(s), clean up to offset {} in {} ms",
                p.topic,
                p.index,
                o.segments_rewritten,
                o.bytes_before,
                o.bytes_after,
                o.keys,
                o.first_dirty,
                started.elapsed().as_millis()
            ),
            Err(e) => p.log_error("compaction", &e),
        }
        glommio::yield_if_needed().await;
    }
}

/// Applies retention to every partition this shard owns: by time and size where the topic's
/// `cleanup.policy` includes `delete`, and below the log start offset (DeleteRecords) always.
pub async fn retention_pass(shard: &Rc<Shard>) {
    for p in shard.owned_partitions() {
        let Some(cfg) = shard.topic_config(&p.topic) else {
            continue;
        };
        let (ms, bytes) = if cfg.cleanup_delete {
            (cfg.retention_ms, cfg.retention_bytes)
        } else {
            (-1, -1)
        };
        let before = p.log.log_start_offset();
        match p.log.apply_retention(now_ms(), ms, bytes).await {
            Ok(0) => {}
            Ok(n) => log::info!(
                "{}-{}: retention deleted {n} segment(s), log start offset {before} -> {}",
                p.topic,
                p.index,
                p.log.log_start_offset()
            ),
            Err(e) => p.log_error("retention", &e),
        }
        glommio::yield_if_needed().await;
    }
}
