//! OffsetFetch (key 9), v1-9. Up to v7 one group per request (`group_id`, `topics`, null topics
//! = every committed partition from v2); from v8 a batch of `groups`, answered per group. v9
//! (KIP-848) adds the member id and epoch. v10 (topic ids) is not implemented.

crate::message! {
    pub struct OffsetFetchRequest [api = OffsetFetch, versions = "1-9", flexible = "6+"] {
        group_id: String = "0-7";
        topics: Option<Vec<OffsetFetchRequestTopic>> = "0-7", nullable "2-7";
        groups: Vec<OffsetFetchRequestGroup> = "8+";
        require_stable: bool = "7+";
    }

    pub struct OffsetFetchRequestTopic {
        name: String = "0-7";
        partition_indexes: Vec<i32> = "0-7";
    }

    pub struct OffsetFetchRequestGroup {
        group_id: String = "8+";
        member_id: Option<String> = "9+", nullable "9+", default None;
        member_epoch: i32 = "9+", default -1;
        topics: Option<Vec<OffsetFetchRequestTopics>> = "8+", nullable "8+";
    }

    pub struct OffsetFetchRequestTopics {
        name: String = "8-9";
        partition_indexes: Vec<i32> = "8+";
    }

    pub struct OffsetFetchResponse [api = OffsetFetch, versions = "1-9", flexible = "6+"] {
        throttle_time_ms: i32 = "3+";
        topics: Vec<OffsetFetchResponseTopic> = "0-7";
        error_code: i16 = "2-7";
        groups: Vec<OffsetFetchResponseGroup> = "8+";
    }

    pub struct OffsetFetchResponseTopic {
        name: String = "0-7";
        partitions: Vec<OffsetFetchResponsePartition> = "0-7";
    }

    pub struct OffsetFetchResponsePartition {
        partition_index: i32 = "0-7";
        committed_offset: i64 = "0-7";
        committed_leader_epoch: i32 = "5-7", default -1;
        metadata: Option<String> = "0-7", nullable "0-7";
        error_code: i16 = "0-7";
    }

    pub struct OffsetFetchResponseGroup {
        group_id: String = "8+";
        topics: Vec<OffsetFetchResponseTopics> = "8+";
        error_code: i16 = "8+";
    }

    pub struct OffsetFetchResponseTopics {
        name: String = "8-9";
        partitions: Vec<OffsetFetchResponsePartitions> = "8+";
    }

    pub struct OffsetFetchResponsePartitions {
        partition_index: i32 = "8+";
        committed_offset: i64 = "8+";
        committed_leader_epoch: i32 = "8+", default -1;
        metadata: Option<String> = "8+", nullable "8+";
        error_code: i16 = "8+";
    }
}
