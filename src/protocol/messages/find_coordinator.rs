//! FindCoordinator (key 10), v0-4. Up to v3 one `key` per request; from v4 a batch of
//! `coordinator_keys` answered by `coordinators`.

crate::message! {
    pub struct FindCoordinatorRequest [api = FindCoordinator, versions = "0-4", flexible = "3+"] {
        key: String = "0-3";
        /// 0 = group, 1 = transaction.
        key_type: i8 = "1+";
        coordinator_keys: Vec<String> = "4+";
    }

    pub struct FindCoordinatorResponse [api = FindCoordinator, versions = "0-4", flexible = "3+"] {
        throttle_time_ms: i32 = "1+";
        error_code: i16 = "0-3";
        error_message: Option<String> = "1-3", nullable "1-3";
        node_id: i32 = "0-3";
        host: String = "0-3";
        port: i32 = "0-3";
        coordinators: Vec<Coordinator> = "4+";
    }

    pub struct Coordinator {
        key: String = "4+";
        node_id: i32 = "4+";
        host: String = "4+";
        port: i32 = "4+";
        error_code: i16 = "4+";
        error_message: Option<String> = "4+", nullable "4+";
    }
}
