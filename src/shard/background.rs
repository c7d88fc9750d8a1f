//! Background log work of one shard — retention today, compaction next — in its own glommio task
//! queue with a small CPU share (`background.shares`, against 1000 for the queue that serves
//! requests), so that when both have work the scheduler keeps produce and fetch ahead of it.
//! Each pass is bounded (one partition at a time, yielding between partitions).

use std::rc::Rc;
use std::time::Duration;

use glommio::{Latency, Shares, TaskQueueHandle};

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
    let weak = Rc::downgrade(shard);
    let interval = Duration::from_millis(shard.config.log_retention_check_interval_ms);
    let task = glommio::spawn_local_into(
        async move {
            loop {
                glommio::timer::sleep(interval).await;
                let Some(shard) = weak.upgrade() else { return };
                if shard.stopping.get() {
                    return;
                }
                retention_pass(&shard).await;
            }
        },
        queue,
    );
    match task {
        Ok(t) => {
            t.detach();
        }
        Err(e) => log::error!("shard {}: cannot start retention: {e}", shard.id),
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
