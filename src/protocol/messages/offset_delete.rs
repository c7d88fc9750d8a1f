//! OffsetDelete (key 47), v0 only, never flexible: drops committed offsets of a group that no
//! longer subscribes to the topics.

crate::message! {
    pub struct OffsetDeleteRequest [api = OffsetDelete, versions = "0", flexible = "none"] {
        group_id: String = "0+";
        topics: Vec<OffsetDeleteRequestTopic> = "0+";
    }

    pub struct OffsetDeleteRequestTopic {
        name: String = "0+";
        partitions: Vec<OffsetDeleteRequestPartition> = "0+";
    }

    pub struct OffsetDeleteRequestPartition {
        partition_index: i32 = "0+";
    }

    pub struct OffsetDeleteResponse [api = OffsetDelete, versions = "0", flexible = "none"] {
        error_code: i16 = "0+";
        throttle_time_ms: i32 = "0+";
        topics: Vec<OffsetDeleteResponseTopic> = "0+";
    }

    pub struct OffsetDeleteResponseTopic {
        name: String = "0+";
        partitions: Vec<OffsetDeleteResponsePartition> = "0+";
    }

    pub struct OffsetDeleteResponsePartition {
        partition_index: i32 = "0+";
        error_code: i16 = "0+";
    }
}
