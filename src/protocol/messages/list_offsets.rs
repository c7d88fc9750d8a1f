//! ListOffsets (key 2), v1-7.

crate::message! {
    pub struct ListOffsetsRequest [api = ListOffsets, versions = "1-7", flexible = "6+"] {
        replica_id: i32 = "0+";
        isolation_level: i8 = "2+";
        topics: Vec<ListOffsetsTopic> = "0+";
    }

    pub struct ListOffsetsTopic {
        name: String = "0+";
        partitions: Vec<ListOffsetsPartition> = "0+";
    }

    pub struct ListOffsetsPartition {
        partition_index: i32 = "0+";
        current_leader_epoch: i32 = "4+", default -1;
        /// -1 = latest, -2 = earliest, -3 = max timestamp (v7+), else a timestamp in ms.
        timestamp: i64 = "0+";
    }

    pub struct ListOffsetsResponse [api = ListOffsets, versions = "1-7", flexible = "6+"] {
        throttle_time_ms: i32 = "2+";
        topics: Vec<ListOffsetsTopicResponse> = "0+";
    }

    pub struct ListOffsetsTopicResponse {
        name: String = "0+";
        partitions: Vec<ListOffsetsPartitionResponse> = "0+";
    }

    pub struct ListOffsetsPartitionResponse {
        partition_index: i32 = "0+";
        error_code: i16 = "0+";
        timestamp: i64 = "1+", default -1;
        offset: i64 = "1+", default -1;
        leader_epoch: i32 = "4+", default -1;
    }
}
