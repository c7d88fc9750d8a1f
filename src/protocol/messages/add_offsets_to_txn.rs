//! AddOffsetsToTxn (key 25), v0-4: a transactional producer tells its transaction coordinator that
//! it will commit offsets of `group_id` in the current transaction (the commit itself is a
//! TxnOffsetCommit to the group coordinator). v1-4 change only error handling and flexibility.

crate::message! {
    pub struct AddOffsetsToTxnRequest [api = AddOffsetsToTxn, versions = "0-4", flexible = "3+"] {
        transactional_id: String = "0+";
        producer_id: i64 = "0+";
        producer_epoch: i16 = "0+";
        group_id: String = "0+";
    }

    pub struct AddOffsetsToTxnResponse [api = AddOffsetsToTxn, versions = "0-4", flexible = "3+"] {
        throttle_time_ms: i32 = "0+";
        error_code: i16 = "0+";
    }
}
