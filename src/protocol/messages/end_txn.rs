//! EndTxn (key 26), v0-5: commit or abort the producer's transaction. From v5 (KIP-890
//! transactions v2) the coordinator bumps the epoch at every transaction end and returns the
//! producer id and epoch to use next.

crate::message! {
    pub struct EndTxnRequest [api = EndTxn, versions = "0-5", flexible = "3+"] {
        transactional_id: String = "0+";
        producer_id: i64 = "0+";
        producer_epoch: i16 = "0+";
        /// true = commit, false = abort.
        committed: bool = "0+";
    }

    pub struct EndTxnResponse [api = EndTxn, versions = "0-5", flexible = "3+"] {
        throttle_time_ms: i32 = "0+";
        error_code: i16 = "0+";
        producer_id: i64 = "5+", default -1;
        producer_epoch: i16 = "5+", default -1;
    }
}
