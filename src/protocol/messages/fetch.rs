//! Fetch (key 1), v4-12. A response's `records` is a [`RecordSet`](crate::protocol::RecordSet):
//! the cached or DMA-read buffers it is made of go out as shared chunks, not copied together.

crate::message! {
    pub struct FetchRequest [api = Fetch, versions = "4-12", flexible = "12+"] {
        replica_id: i32 = "0-14", default -1;
        max_wait_ms: i32 = "0+";
        min_bytes: i32 = "0+";
        max_bytes: i32 = "3+", default i32::MAX;
        isolation_level: i8 = "4+";
        session_id: i32 = "7+";
        session_epoch: i32 = "7+", default -1;
        topics: Vec<FetchTopic> = "0+";
        forgotten_topics_data: Vec<ForgottenTopic> = "7+";
        rack_id: String = "11+";
        @tagged {
            cluster_id: Option<String> = "12+", tag 0, nullable "12+", default None;
        }
    }

    pub struct FetchTopic {
        topic: String = "0-12";
        partitions: Vec<FetchPartition> = "0+";
    }

    pub struct FetchPartition {
        partition: i32 = "0+";
        current_leader_epoch: i32 = "9+", default -1;
        fetch_offset: i64 = "0+";
        last_fetched_epoch: i32 = "12+", default -1;
        log_start_offset: i64 = "5+", default -1;
        partition_max_bytes: i32 = "0+";
    }

    pub struct ForgottenTopic {
        topic: String = "7-12";
        partitions: Vec<i32> = "7+";
    }

    pub struct FetchResponse [api = Fetch, versions = "4-12", flexible = "12+"] {
        throttle_time_ms: i32 = "1+";
        error_code: i16 = "7+";
        session_id: i32 = "7+";
        responses: Vec<FetchableTopicResponse> = "0+";
    }

    pub struct FetchableTopicResponse {
        topic: String = "0-12";
        partitions: Vec<PartitionData> = "0+";
    }

    pub struct PartitionData {
        partition_index: i32 = "0+";
        error_code: i16 = "0+";
        high_watermark: i64 = "0+";
        last_stable_offset: i64 = "4+", default -1;
        log_start_offset: i64 = "5+", default -1;
        aborted_transactions: Option<Vec<AbortedTransaction>> = "4+", nullable "4+";
        preferred_read_replica: i32 = "11+", default -1;
        records: Option<crate::protocol::RecordSet> = "0+", nullable "0+";
        @tagged {
            diverging_epoch: FetchResponseEpochEndOffset = "12+", tag 0;
            current_leader: FetchResponseLeaderIdAndEpoch = "12+", tag 1;
            snapshot_id: SnapshotId = "12+", tag 2;
        }
    }

    pub struct FetchResponseEpochEndOffset {
        epoch: i32 = "12+", default -1;
        end_offset: i64 = "12+", default -1;
    }

    pub struct FetchResponseLeaderIdAndEpoch {
        leader_id: i32 = "12+", default -1;
        leader_epoch: i32 = "12+", default -1;
    }

    pub struct SnapshotId {
        end_offset: i64 = "0+", default -1;
        epoch: i32 = "0+", default -1;
    }

    pub struct AbortedTransaction {
        producer_id: i64 = "4+";
        first_offset: i64 = "4+";
    }
}

impl PartitionData {
    /// The record data as one buffer (a decoded response has exactly one: no copy).
    pub fn record_bytes(&self) -> Option<bytes::Bytes> {
        self.records
            .as_ref()
            .map(crate::protocol::RecordSet::to_bytes)
    }
}
