//! Produce (key 0), v3-11. Versions 0-2 are not decoded (only their header is): the server
//! answers them UNSUPPORTED_VERSION. `records` is a zero-copy slice of the request frame.

crate::message! {
    pub struct ProduceRequest [api = Produce, versions = "3-11", flexible = "9+"] {
        transactional_id: Option<String> = "3+", nullable "3+", default None;
        /// 0: no response at all; 1: leader; -1: all in-sync replicas.
        acks: i16 = "0+";
        timeout_ms: i32 = "0+";
        topic_data: Vec<TopicProduceData> = "0+";
    }

    pub struct TopicProduceData {
        name: String = "0+";
        partition_data: Vec<PartitionProduceData> = "0+";
    }

    pub struct PartitionProduceData {
        index: i32 = "0+";
        /// RecordBatch v2 bytes, exactly as sent.
        records: Option<bytes::Bytes> = "0+", nullable "0+";
    }

    pub struct ProduceResponse [api = Produce, versions = "3-11", flexible = "9+"] {
        responses: Vec<TopicProduceResponse> = "0+";
        throttle_time_ms: i32 = "1+";
        @tagged {
            node_endpoints: Vec<ProduceResponseNodeEndpoint> = "10+", tag 0;
        }
    }

    pub struct TopicProduceResponse {
        name: String = "0+";
        partition_responses: Vec<PartitionProduceResponse> = "0+";
    }

    pub struct PartitionProduceResponse {
        index: i32 = "0+";
        error_code: i16 = "0+";
        base_offset: i64 = "0+";
        log_append_time_ms: i64 = "2+", default -1;
        log_start_offset: i64 = "5+", default -1;
        record_errors: Vec<BatchIndexAndErrorMessage> = "8+";
        error_message: Option<String> = "8+", nullable "8+", default None;
        @tagged {
            current_leader: ProduceResponseLeaderIdAndEpoch = "10+", tag 0;
        }
    }

    pub struct BatchIndexAndErrorMessage {
        batch_index: i32 = "8+";
        batch_index_error_message: Option<String> = "8+", nullable "8+", default None;
    }

    pub struct ProduceResponseLeaderIdAndEpoch {
        leader_id: i32 = "10+", default -1;
        leader_epoch: i32 = "10+", default -1;
    }

    pub struct ProduceResponseNodeEndpoint {
        node_id: i32 = "10+";
        host: String = "10+";
        port: i32 = "10+";
        rack: Option<String> = "10+", nullable "10+", default None;
    }
}
