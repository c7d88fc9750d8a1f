//! TxnOffsetCommit (key 28), v0-5: offsets committed as part of a transaction, visible to the
//! group only when the transaction commits. v2 adds the committed leader epoch, v3 (KIP-447) the
//! group membership (generation, member id, instance id) so the coordinator can fence zombies.
//! v5 (KIP-890 transactions v2) also adds the group to the transaction, replacing AddOffsetsToTxn.

crate::message! {
    pub struct TxnOffsetCommitRequest [api = TxnOffsetCommit, versions = "0-5", flexible = "3+"] {
        transactional_id: String = "0+";
        group_id: String = "0+";
        producer_id: i64 = "0+";
        producer_epoch: i16 = "0+";
        generation_id: i32 = "3+", default -1;
        member_id: String = "3+";
        group_instance_id: Option<String> = "3+", nullable "3+", default None;
        topics: Vec<TxnOffsetCommitRequestTopic> = "0+";
    }

    pub struct TxnOffsetCommitRequestTopic {
        name: String = "0+";
        partitions: Vec<TxnOffsetCommitRequestPartition> = "0+";
    }

    pub struct TxnOffsetCommitRequestPartition {
        partition_index: i32 = "0+";
        committed_offset: i64 = "0+";
        committed_leader_epoch: i32 = "2+", default -1;
        committed_metadata: Option<String> = "0+", nullable "0+";
    }

    pub struct TxnOffsetCommitResponse [api = TxnOffsetCommit, versions = "0-5", flexible = "3+"] {
        throttle_time_ms: i32 = "0+";
        topics: Vec<TxnOffsetCommitResponseTopic> = "0+";
    }

    pub struct TxnOffsetCommitResponseTopic {
        name: String = "0+";
        partitions: Vec<TxnOffsetCommitResponsePartition> = "0+";
    }

    pub struct TxnOffsetCommitResponsePartition {
        partition_index: i32 = "0+";
        error_code: i16 = "0+";
    }
}
