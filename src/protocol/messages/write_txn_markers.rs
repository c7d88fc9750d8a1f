//! WriteTxnMarkers (key 27), v0-1: a transaction coordinator asks partition leaders to append
//! COMMIT or ABORT control batches. v1 only makes it flexible; Kafka 4.0 dropped v0 from its specs
//! (and kafka-protocol 0.18 with it), we still decode it. v2 (`transaction_version`) is not
//! implemented.

crate::message! {
    pub struct WriteTxnMarkersRequest [api = WriteTxnMarkers, versions = "0-1", flexible = "1+"] {
        markers: Vec<WritableTxnMarker> = "0+";
    }

    pub struct WritableTxnMarker {
        producer_id: i64 = "0+";
        producer_epoch: i16 = "0+";
        /// true = COMMIT, false = ABORT.
        transaction_result: bool = "0+";
        topics: Vec<WritableTxnMarkerTopic> = "0+";
        /// Epoch of the transaction-state partition the coordinator owns, to fence old coordinators.
        coordinator_epoch: i32 = "0+";
    }

    pub struct WritableTxnMarkerTopic {
        name: String = "0+";
        partition_indexes: Vec<i32> = "0+";
    }

    pub struct WriteTxnMarkersResponse [api = WriteTxnMarkers, versions = "0-1", flexible = "1+"] {
        markers: Vec<WritableTxnMarkerResult> = "0+";
    }

    pub struct WritableTxnMarkerResult {
        producer_id: i64 = "0+";
        topics: Vec<WritableTxnMarkerTopicResult> = "0+";
    }

    pub struct WritableTxnMarkerTopicResult {
        name: String = "0+";
        partitions: Vec<WritableTxnMarkerPartitionResult> = "0+";
    }

    pub struct WritableTxnMarkerPartitionResult {
        partition_index: i32 = "0+";
        error_code: i16 = "0+";
    }
}
