//! DescribeTransactions (key 65), v0 (KIP-664): the coordinator's view of transactional ids
//! (state, timeout, start time, producer id/epoch, partitions in the transaction).

crate::message! {
    pub struct DescribeTransactionsRequest [api = DescribeTransactions, versions = "0", flexible = "0+"] {
        /// Empty = no results.
        transactional_ids: Vec<String> = "0+";
    }

    pub struct DescribeTransactionsResponse [api = DescribeTransactions, versions = "0", flexible = "0+"] {
        throttle_time_ms: i32 = "0+";
        transaction_states: Vec<DescribeTransactionsResponseTransactionState> = "0+";
    }

    pub struct DescribeTransactionsResponseTransactionState {
        error_code: i16 = "0+";
        transactional_id: String = "0+";
        /// Kafka's state name: "Empty", "Ongoing", "PrepareCommit", "CompleteAbort", ...
        transaction_state: String = "0+";
        transaction_timeout_ms: i32 = "0+";
        transaction_start_time_ms: i64 = "0+";
        producer_id: i64 = "0+";
        producer_epoch: i16 = "0+";
        /// Partitions in the transaction; while preparing to commit or abort, only those still
        /// without a marker.
        topics: Vec<DescribeTransactionsResponseTopicData> = "0+";
    }

    pub struct DescribeTransactionsResponseTopicData {
        topic: String = "0+";
        partitions: Vec<i32> = "0+";
    }
}
