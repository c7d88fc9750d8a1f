//! Heartbeat (key 12), v0-4: a classic-protocol member keeps its session alive.

crate::message! {
    pub struct HeartbeatRequest [api = Heartbeat, versions = "0-4", flexible = "4+"] {
        group_id: String = "0+";
        generation_id: i32 = "0+";
        member_id: String = "0+";
        group_instance_id: Option<String> = "3+", nullable "3+", default None;
    }

    pub struct HeartbeatResponse [api = Heartbeat, versions = "0-4", flexible = "4+"] {
        throttle_time_ms: i32 = "1+";
        error_code: i16 = "0+";
    }
}
