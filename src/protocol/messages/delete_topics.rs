//! DeleteTopics (key 20), v1-6. Topics are named by `topic_names` up to v5 and by `topics`
//! (name or id) from v6.

crate::message! {
    pub struct DeleteTopicsRequest [api = DeleteTopics, versions = "1-6", flexible = "4+"] {
        topics: Vec<DeleteTopicState> = "6+";
        topic_names: Vec<String> = "0-5";
        timeout_ms: i32 = "0+";
    }

    pub struct DeleteTopicState {
        name: Option<String> = "6+", nullable "6+", default None;
        topic_id: [u8; 16] = "6+";
    }

    pub struct DeleteTopicsResponse [api = DeleteTopics, versions = "1-6", flexible = "4+"] {
        throttle_time_ms: i32 = "1+";
        responses: Vec<DeletableTopicResult> = "0+";
    }

    pub struct DeletableTopicResult {
        name: Option<String> = "0+", nullable "6+";
        topic_id: [u8; 16] = "6+";
        error_code: i16 = "0+";
        error_message: Option<String> = "5+", nullable "5+", default None;
    }
}
