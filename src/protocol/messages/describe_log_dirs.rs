//! DescribeLogDirs (key 35), v1-4.

crate::message! {
    pub struct DescribeLogDirsRequest [api = DescribeLogDirs, versions = "1-4", flexible = "2+"] {
        /// Null = every partition.
        topics: Option<Vec<DescribableLogDirTopic>> = "0+", nullable "0+";
    }

    pub struct DescribableLogDirTopic {
        topic: String = "0+";
        partitions: Vec<i32> = "0+";
    }

    pub struct DescribeLogDirsResponse [api = DescribeLogDirs, versions = "1-4", flexible = "2+"] {
        throttle_time_ms: i32 = "0+";
        error_code: i16 = "3+";
        results: Vec<DescribeLogDirsResult> = "0+";
    }

    pub struct DescribeLogDirsResult {
        error_code: i16 = "0+";
        log_dir: String = "0+";
        topics: Vec<DescribeLogDirsTopic> = "0+";
        total_bytes: i64 = "4+", default -1;
        usable_bytes: i64 = "4+", default -1;
    }

    pub struct DescribeLogDirsTopic {
        name: String = "0+";
        partitions: Vec<DescribeLogDirsPartition> = "0+";
    }

    pub struct DescribeLogDirsPartition {
        partition_index: i32 = "0+";
        partition_size: i64 = "0+";
        offset_lag: i64 = "0+";
        is_future_key: bool = "0+";
    }
}
