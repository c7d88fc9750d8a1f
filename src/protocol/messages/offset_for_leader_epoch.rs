//! OffsetForLeaderEpoch (key 23), v2-4.

crate::message! {
    pub struct OffsetForLeaderEpochRequest [api = OffsetForLeaderEpoch, versions = "2-4", flexible = "4+"] {
        /// -1 for a normal consumer, -2 for a debugging one.
        replica_id: i32 = "3+", default -2;
        topics: Vec<OffsetForLeaderTopic> = "0+";
    }

    pub struct OffsetForLeaderTopic {
        topic: String = "0+";
        partitions: Vec<OffsetForLeaderPartition> = "0+";
    }

    pub struct OffsetForLeaderPartition {
        partition: i32 = "0+";
        current_leader_epoch: i32 = "2+", default -1;
        leader_epoch: i32 = "0+";
    }

    pub struct OffsetForLeaderEpochResponse [api = OffsetForLeaderEpoch, versions = "2-4", flexible = "4+"] {
        throttle_time_ms: i32 = "2+";
        topics: Vec<OffsetForLeaderTopicResult> = "0+";
    }

    pub struct OffsetForLeaderTopicResult {
        topic: String = "0+";
        partitions: Vec<OffsetForLeaderEpochResponseEpochEndOffset> = "0+";
    }

    /// `EpochEndOffset` in the spec (prefixed: FetchResponse has one too).
    pub struct OffsetForLeaderEpochResponseEpochEndOffset {
        error_code: i16 = "0+";
        partition: i32 = "0+";
        leader_epoch: i32 = "1+", default -1;
        end_offset: i64 = "0+", default -1;
    }
}
