//! CreatePartitions (key 37), v0-3.

crate::message! {
    pub struct CreatePartitionsRequest [api = CreatePartitions, versions = "0-3", flexible = "2+"] {
        topics: Vec<CreatePartitionsTopic> = "0+";
        timeout_ms: i32 = "0+";
        validate_only: bool = "0+";
    }

    pub struct CreatePartitionsTopic {
        name: String = "0+";
        /// The new total partition count.
        count: i32 = "0+";
        assignments: Option<Vec<CreatePartitionsAssignment>> = "0+", nullable "0+";
    }

    pub struct CreatePartitionsAssignment {
        broker_ids: Vec<i32> = "0+";
    }

    pub struct CreatePartitionsResponse [api = CreatePartitions, versions = "0-3", flexible = "2+"] {
        throttle_time_ms: i32 = "0+";
        results: Vec<CreatePartitionsTopicResult> = "0+";
    }

    pub struct CreatePartitionsTopicResult {
        name: String = "0+";
        error_code: i16 = "0+";
        error_message: Option<String> = "0+", nullable "0+", default None;
    }
}
