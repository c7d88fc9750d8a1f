//! ConsumerGroupDescribe (key 69), v0-1 (KIP-848, flexible from v0): consumer-protocol groups
//! with each member's current and target assignment. v1 adds `member_type`.

crate::message! {
    pub struct ConsumerGroupDescribeRequest [api = ConsumerGroupDescribe, versions = "0-1", flexible = "0+"] {
        group_ids: Vec<String> = "0+";
        include_authorized_operations: bool = "0+";
    }

    pub struct ConsumerGroupDescribeResponse [api = ConsumerGroupDescribe, versions = "0-1", flexible = "0+"] {
        throttle_time_ms: i32 = "0+";
        groups: Vec<ConsumerGroupDescribeResponseDescribedGroup> = "0+";
    }

    pub struct ConsumerGroupDescribeResponseDescribedGroup {
        error_code: i16 = "0+";
        error_message: Option<String> = "0+", nullable "0+", default None;
        group_id: String = "0+";
        group_state: String = "0+";
        group_epoch: i32 = "0+";
        assignment_epoch: i32 = "0+";
        assignor_name: String = "0+";
        members: Vec<ConsumerGroupDescribeResponseMember> = "0+";
        /// Bit set of ACL operations; i32::MIN = not requested.
        authorized_operations: i32 = "0+", default i32::MIN;
    }

    pub struct ConsumerGroupDescribeResponseMember {
        member_id: String = "0+";
        instance_id: Option<String> = "0+", nullable "0+", default None;
        rack_id: Option<String> = "0+", nullable "0+", default None;
        member_epoch: i32 = "0+";
        client_id: String = "0+";
        client_host: String = "0+";
        subscribed_topic_names: Vec<String> = "0+";
        subscribed_topic_regex: Option<String> = "0+", nullable "0+", default None;
        assignment: ConsumerGroupDescribeResponseAssignment = "0+";
        target_assignment: ConsumerGroupDescribeResponseAssignment = "0+";
        /// 0 = classic, 1 = consumer; -1 = unknown (v0).
        member_type: i8 = "1+", default -1;
    }

    pub struct ConsumerGroupDescribeResponseAssignment {
        topic_partitions: Vec<ConsumerGroupDescribeResponseTopicPartitions> = "0+";
    }

    pub struct ConsumerGroupDescribeResponseTopicPartitions {
        topic_id: [u8; 16] = "0+";
        topic_name: String = "0+";
        partitions: Vec<i32> = "0+";
    }
}
