//! One partition as its owning shard sees it: the log plus the shard-local bookkeeping around it
//! (group-commit membership, long-poll wakeups). Never leaves its shard.

use std::cell::Cell;

use crate::storage::PartitionLog;
use crate::metadata::TopicId;

use super::notify::Notify;

pub struct Partition {
    pub topic: String,
    pub topic_id: TopicId,
    pub index: i32,
    pub leader_epoch: i32,
    pub log: PartitionLog,
    /// In the group commit's dirty set (see `commit.rs`).
    pub dirty: Cell<bool>,
    /// Notified after every flush round that covered this partition: the high watermark may
    /// have moved, so long-polling fetches re-check.
    pub data_arrived: Notify,
    /// Flush failures, to rate-limit the log line.
    pub flush_errors: Cell<u64>,
}

impl Partition {
    pub fn new(topic: String, topic_id: TopicId, index: i32, leader_epoch: i32, log: PartitionLog) -> Self {
        Partition {
            topic,
            topic_id,
            index,
            leader_epoch,
            log,
            dirty: Cell::new(false),
            data_arrived: Notify::new(),
            flush_errors: Cell::new(0),
        }
    }

    /// Writes and fdatasyncs what is buffered. A failure is logged (the first and then every
    /// 1000th) and surfaces to producers as KAFKA_STORAGE_ERROR because the high watermark did
    /// not move past their records.
    pub async fn flush(&self) {
        if let Err(e) = self.log.flush().await {
            let n = self.flush_errors.get();
            self.flush_errors.set(n + 1);
            if n % 1000 == 0 {
                log::error!("{}-{}: flush failed ({} so far): {e}", self.topic, self.index, n + 1);
            }
        }
    }
}
