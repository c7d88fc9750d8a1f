//! DeleteRecords (key 21), v0-2: moves a partition's log start offset forward.

crate::message! {
    pub struct DeleteRecordsRequest [api = DeleteRecords, versions = "0-2", flexible = "2+"] {
        topics: Vec<DeleteRecordsTopic> = "0+";
        timeout_ms: i32 = "0+";
    }

    pub struct DeleteRecordsTopic {
        name: String = "0+";
        partitions: Vec<DeleteRecordsPartition> = "0+";
    }

    pub struct DeleteRecordsPartition {
        partition_index: i32 = "0+";
        /// Delete everything before this offset; -1 = up to the high watermark.
        offset: i64 = "0+";
    }

    pub struct DeleteRecordsResponse [api = DeleteRecords, versions = "0-2", flexible = "2+"] {
        throttle_time_ms: i32 = "0+";
        topics: Vec<DeleteRecordsTopicResult> = "0+";
    }

    pub struct DeleteRecordsTopicResult {
        name: String = "0+";
        partitions: Vec<DeleteRecordsPartitionResult> = "0+";
    }

    pub struct DeleteRecordsPartitionResult {
        partition_index: i32 = "0+";
        low_watermark: i64 = "0+";
        error_code: i16 = "0+";
    }
}
