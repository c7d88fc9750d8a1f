//! DescribeTopicPartitions (key 75), v0 (KIP-966): topics and their partitions, paginated by a
//! cursor; what Kafka 3.7+ admin clients use to describe topics.

crate::message! {
    pub struct DescribeTopicPartitionsRequest [api = DescribeTopicPartitions, versions = "0", flexible = "0+"] {
        /// Topics to describe; empty = all.
        topics: Vec<TopicRequest> = "0+";
        /// At most this many partitions in the response (the rest via `next_cursor`).
        response_partition_limit: i32 = "0+", default 2000;
        /// Where to start: a topic and partition (null = the first).
        cursor: Option<DescribeTopicPartitionsCursor> = "0+", nullable "0+", default None;
    }

    pub struct TopicRequest {
        name: String = "0+";
    }

    pub struct DescribeTopicPartitionsCursor {
        topic_name: String = "0+";
        partition_index: i32 = "0+";
    }

    pub struct DescribeTopicPartitionsResponse [api = DescribeTopicPartitions, versions = "0", flexible = "0+"] {
        throttle_time_ms: i32 = "0+";
        topics: Vec<DescribeTopicPartitionsResponseTopic> = "0+";
        /// Where the next request should start (null: nothing left).
        next_cursor: Option<DescribeTopicPartitionsCursor> = "0+", nullable "0+", default None;
    }

    pub struct DescribeTopicPartitionsResponseTopic {
        error_code: i16 = "0+";
        name: Option<String> = "0+", nullable "0+";
        topic_id: [u8; 16] = "0+";
        is_internal: bool = "0+";
        partitions: Vec<DescribeTopicPartitionsResponsePartition> = "0+";
        topic_authorized_operations: i32 = "0+", default i32::MIN;
    }

    pub struct DescribeTopicPartitionsResponsePartition {
        error_code: i16 = "0+";
        partition_index: i32 = "0+";
        leader_id: i32 = "0+";
        leader_epoch: i32 = "0+", default -1;
        replica_nodes: Vec<i32> = "0+";
        isr_nodes: Vec<i32> = "0+";
        eligible_leader_replicas: Option<Vec<i32>> = "0+", nullable "0+", default None;
        last_known_elr: Option<Vec<i32>> = "0+", nullable "0+", default None;
        offline_replicas: Vec<i32> = "0+";
    }
}
