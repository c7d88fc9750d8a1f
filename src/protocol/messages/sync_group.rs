//! SyncGroup (key 14), v0-5: the leader hands out assignments; every member receives its own.

crate::message! {
    pub struct SyncGroupRequest [api = SyncGroup, versions = "0-5", flexible = "4+"] {
        group_id: String = "0+";
        generation_id: i32 = "0+";
        member_id: String = "0+";
        group_instance_id: Option<String> = "3+", nullable "3+", default None;
        protocol_type: Option<String> = "5+", nullable "5+", default None;
        protocol_name: Option<String> = "5+", nullable "5+", default None;
        assignments: Vec<SyncGroupRequestAssignment> = "0+";
    }

    pub struct SyncGroupRequestAssignment {
        member_id: String = "0+";
        assignment: bytes::Bytes = "0+";
    }

    pub struct SyncGroupResponse [api = SyncGroup, versions = "0-5", flexible = "4+"] {
        throttle_time_ms: i32 = "1+";
        error_code: i16 = "0+";
        protocol_type: Option<String> = "5+", nullable "5+", default None;
        protocol_name: Option<String> = "5+", nullable "5+", default None;
        assignment: bytes::Bytes = "0+";
    }
}
