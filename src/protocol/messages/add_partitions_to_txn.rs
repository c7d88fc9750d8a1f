//! AddPartitionsToTxn (key 24), v0-5. Up to v3 a producer adds partitions to its own transaction
//! (the `v3_and_below_*` fields); from v4 (KIP-890) only brokers send it, batching several
//! transactions, each possibly `verify_only`, and the response gains a top-level error code.
//! v1-2 and v5 change only error handling (PRODUCER_FENCED, TRANSACTION_ABORTABLE).

crate::message! {
    pub struct AddPartitionsToTxnRequest [api = AddPartitionsToTxn, versions = "0-5", flexible = "3+"] {
        transactions: Vec<AddPartitionsToTxnTransaction> = "4+";
        v3_and_below_transactional_id: String = "0-3";
        v3_and_below_producer_id: i64 = "0-3";
        v3_and_below_producer_epoch: i16 = "0-3";
        v3_and_below_topics: Vec<AddPartitionsToTxnTopic> = "0-3";
    }

    pub struct AddPartitionsToTxnTransaction {
        transactional_id: String = "4+";
        producer_id: i64 = "4+";
        producer_epoch: i16 = "4+";
        /// Only check that the partitions are already in the transaction; add nothing.
        verify_only: bool = "4+";
        topics: Vec<AddPartitionsToTxnTopic> = "4+";
    }

    pub struct AddPartitionsToTxnTopic {
        name: String = "0+";
        partitions: Vec<i32> = "0+";
    }

    pub struct AddPartitionsToTxnResponse [api = AddPartitionsToTxn, versions = "0-5", flexible = "3+"] {
        throttle_time_ms: i32 = "0+";
        error_code: i16 = "4+";
        results_by_transaction: Vec<AddPartitionsToTxnResult> = "4+";
        results_by_topic_v3_and_below: Vec<AddPartitionsToTxnTopicResult> = "0-3";
    }

    pub struct AddPartitionsToTxnResult {
        transactional_id: String = "4+";
        topic_results: Vec<AddPartitionsToTxnTopicResult> = "4+";
    }

    pub struct AddPartitionsToTxnTopicResult {
        name: String = "0+";
        results_by_partition: Vec<AddPartitionsToTxnPartitionResult> = "0+";
    }

    pub struct AddPartitionsToTxnPartitionResult {
        partition_index: i32 = "0+";
        partition_error_code: i16 = "0+";
    }
}
