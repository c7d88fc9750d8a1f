//! CreateTopics (key 19), v2-7.

crate::message! {
    pub struct CreateTopicsRequest [api = CreateTopics, versions = "2-7", flexible = "5+"] {
        topics: Vec<CreatableTopic> = "0+";
        timeout_ms: i32 = "0+", default 60000;
        validate_only: bool = "1+";
    }

    pub struct CreatableTopic {
        name: String = "0+";
        /// -1 = broker default (v4+).
        num_partitions: i32 = "0+";
        /// -1 = broker default (v4+).
        replication_factor: i16 = "0+";
        assignments: Vec<CreatableReplicaAssignment> = "0+";
        configs: Vec<CreatableTopicConfig> = "0+";
    }

    pub struct CreatableReplicaAssignment {
        partition_index: i32 = "0+";
        broker_ids: Vec<i32> = "0+";
    }

    pub struct CreatableTopicConfig {
        name: String = "0+";
        value: Option<String> = "0+", nullable "0+";
    }

    pub struct CreateTopicsResponse [api = CreateTopics, versions = "2-7", flexible = "5+"] {
        throttle_time_ms: i32 = "2+";
        topics: Vec<CreatableTopicResult> = "0+";
    }

    pub struct CreatableTopicResult {
        name: String = "0+";
        topic_id: [u8; 16] = "7+";
        error_code: i16 = "0+";
        error_message: Option<String> = "1+", nullable "0+";
        num_partitions: i32 = "5+", default -1;
        replication_factor: i16 = "5+", default -1;
        configs: Option<Vec<CreatableTopicConfigs>> = "5+", nullable "5+";
        @tagged {
            topic_config_error_code: i16 = "5+", tag 0;
        }
    }

    pub struct CreatableTopicConfigs {
        name: String = "5+";
        value: Option<String> = "5+", nullable "5+";
        read_only: bool = "5+";
        config_source: i8 = "5+", default -1;
        is_sensitive: bool = "5+";
    }
}
