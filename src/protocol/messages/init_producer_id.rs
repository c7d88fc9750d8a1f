//! InitProducerId (key 22), v0-5.

crate::message! {
    pub struct InitProducerIdRequest [api = InitProducerId, versions = "0-5", flexible = "2+"] {
        transactional_id: Option<String> = "0+", nullable "0+";
        transaction_timeout_ms: i32 = "0+";
        producer_id: i64 = "3+", default -1;
        producer_epoch: i16 = "3+", default -1;
    }

    pub struct InitProducerIdResponse [api = InitProducerId, versions = "0-5", flexible = "2+"] {
        throttle_time_ms: i32 = "0+";
        error_code: i16 = "0+";
        producer_id: i64 = "0+", default -1;
        producer_epoch: i16 = "0+";
    }
}
