//! OffsetCommit (key 8), v2-9. From v9 (KIP-848) `generation_id_or_member_epoch` carries the
//! member epoch for consumer-protocol groups. v10 (topic ids) is not implemented.

crate::message! {
    pub struct OffsetCommitRequest [api = OffsetCommit, versions = "2-9", flexible = "8+"] {
        group_id: String = "0+";
        generation_id_or_member_epoch: i32 = "1+", default -1;
        member_id: String = "1+";
        group_instance_id: Option<String> = "7+", nullable "7+", default None;
        /// -1 = broker default retention; removed in v5.
        retention_time_ms: i64 = "2-4", default -1;
        topics: Vec<OffsetCommitRequestTopic> = "0+";
    }

    pub struct OffsetCommitRequestTopic {
        name: String = "0-9";
        partitions: Vec<OffsetCommitRequestPartition> = "0+";
    }

    pub struct OffsetCommitRequestPartition {
        partition_index: i32 = "0+";
        committed_offset: i64 = "0+";
        committed_leader_epoch: i32 = "6+", default -1;
        committed_metadata: Option<String> = "0+", nullable "0+";
    }

    pub struct OffsetCommitResponse [api = OffsetCommit, versions = "2-9", flexible = "8+"] {
        throttle_time_ms: i32 = "3+";
        topics: Vec<OffsetCommitResponseTopic> = "0+";
    }

    pub struct OffsetCommitResponseTopic {
        name: String = "0-9";
        partitions: Vec<OffsetCommitResponsePartition> = "0+";
    }

    pub struct OffsetCommitResponsePartition {
        partition_index: i32 = "0+";
        error_code: i16 = "0+";
    }
}
