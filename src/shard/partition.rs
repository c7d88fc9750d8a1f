//! One partition as its owning shard sees it: the log plus the shard-local bookkeeping around it
//! (group-commit membership, long-poll wakeups). Never leaves its shard.

use std::cell::Cell;

use crate::metadata::TopicId;
use crate::storage::PartitionLog;

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
    /// Storage errors seen, to rate-limit their log lines.
    pub storage_errors: Cell<u64>,
}

impl Partition {
    pub fn new(
        topic: String,
        topic_id: TopicId,
        index: i32,
        leader_epoch: i32,
        log: PartitionLog,
    ) -> Self {
        Partition {
            topic,
            topic_id,
            index,
            leader_epoch,
            log,
            dirty: Cell::new(false),
            data_arrived: Notify::new(),
            storage_errors: Cell::new(0),
        }
    }

    /// Writes and fdatasyncs what is buffered. A failure surfaces to producers as
    /// KAFKA_STORAGE_ERROR because the high watermark did not move past their records.
    pub async fn flush(&self) {
        if let Err(e) = self.log.flush().await {
            self.log_error("flush", &e);
        }
    }

    /// The write half of a group-commit round for this partition (see
    /// `PartitionLog::flush_write_round`); `None` when nothing is left to fdatasync (also when
    /// the previous round already took every batch), or on failure (logged; the high watermark
    /// stays put). With `durable`, the writes return once durable and the durable half has no
    /// fdatasync left to do (`PartitionLog::flush_write_round_durable`).
    pub async fn flush_write_round(
        &self,
        durable: bool,
    ) -> Option<crate::storage::log::FlushTicket> {
        let written = if durable {
            self.log.flush_write_round_durable().await
        } else {
            self.log.flush_write_round().await
        };
        match written {
            Ok(ticket) => ticket,
            Err(e) => {
                self.log_error("flush (write)", &e);
                None
            }
        }
    }

    /// The durable half of [`Partition::flush`].
    pub async fn flush_sync(&self, ticket: crate::storage::log::FlushTicket) {
        if let Err(e) = self.log.flush_sync(ticket).await {
            self.log_error("flush (fdatasync)", &e);
        }
    }

    /// Logs a storage error of this partition: the first and then every 1000th, so a failed
    /// disk under load does not flood the log.
    pub fn log_error(&self, what: &str, e: &dyn std::fmt::Display) {
        let n = self.storage_errors.get();
        self.storage_errors.set(n + 1);
        if n % 1000 == 0 {
            log::error!(
                "{}-{}: {what} failed ({} error(s) so far): {e}",
                self.topic,
                self.index,
                n + 1
            );
        }
    }
}
