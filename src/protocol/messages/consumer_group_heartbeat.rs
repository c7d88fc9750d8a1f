//! ConsumerGroupHeartbeat (key 68), v0-1 (KIP-848, flexible from v0): the consumer-protocol
//! member's single request to join, heartbeat, change its subscription and leave
//! (`member_epoch` -1 / -2). Null fields mean "unchanged since the last heartbeat". v1 adds
//! `subscribed_topic_regex`.

crate::message! {
    pub struct ConsumerGroupHeartbeatRequest [api = ConsumerGroupHeartbeat, versions = "0-1", flexible = "0+"] {
        group_id: String = "0+";
        member_id: String = "0+";
        member_epoch: i32 = "0+";
        instance_id: Option<String> = "0+", nullable "0+", default None;
        rack_id: Option<String> = "0+", nullable "0+", default None;
        rebalance_timeout_ms: i32 = "0+", default -1;
        subscribed_topic_names: Option<Vec<String>> = "0+", nullable "0+", default None;
        subscribed_topic_regex: Option<String> = "1+", nullable "1+", default None;
        server_assignor: Option<String> = "0+", nullable "0+", default None;
        topic_partitions: Option<Vec<ConsumerGroupHeartbeatRequestTopicPartitions>> = "0+", nullable "0+", default None;
    }

    pub struct ConsumerGroupHeartbeatRequestTopicPartitions {
        topic_id: [u8; 16] = "0+";
        partitions: Vec<i32> = "0+";
    }

    pub struct ConsumerGroupHeartbeatResponse [api = ConsumerGroupHeartbeat, versions = "0-1", flexible = "0+"] {
        throttle_time_ms: i32 = "0+";
        error_code: i16 = "0+";
        error_message: Option<String> = "0+", nullable "0+", default None;
        member_id: Option<String> = "0+", nullable "0+", default None;
        member_epoch: i32 = "0+";
        heartbeat_interval_ms: i32 = "0+";
        /// Null when the assignment did not change.
        assignment: Option<ConsumerGroupHeartbeatResponseAssignment> = "0+", nullable "0+", default None;
    }

    pub struct ConsumerGroupHeartbeatResponseAssignment {
        topic_partitions: Vec<ConsumerGroupHeartbeatResponseTopicPartitions> = "0+";
    }

    pub struct ConsumerGroupHeartbeatResponseTopicPartitions {
        topic_id: [u8; 16] = "0+";
        partitions: Vec<i32> = "0+";
    }
}
