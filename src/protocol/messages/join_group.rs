//! JoinGroup (key 11), v2-9: the classic-protocol member joins (or rejoins) a group and the
//! coordinator answers with the generation, the leader and, for the leader, every member's
//! metadata.

crate::message! {
    pub struct JoinGroupRequest [api = JoinGroup, versions = "2-9", flexible = "6+"] {
        group_id: String = "0+";
        session_timeout_ms: i32 = "0+";
        rebalance_timeout_ms: i32 = "1+", default -1;
        member_id: String = "0+";
        group_instance_id: Option<String> = "5+", nullable "5+", default None;
        protocol_type: String = "0+";
        protocols: Vec<JoinGroupRequestProtocol> = "0+";
        reason: Option<String> = "8+", nullable "8+", default None;
    }

    pub struct JoinGroupRequestProtocol {
        name: String = "0+";
        metadata: bytes::Bytes = "0+";
    }

    pub struct JoinGroupResponse [api = JoinGroup, versions = "2-9", flexible = "6+"] {
        throttle_time_ms: i32 = "2+";
        error_code: i16 = "0+";
        generation_id: i32 = "0+", default -1;
        protocol_type: Option<String> = "7+", nullable "7+", default None;
        protocol_name: Option<String> = "0+", nullable "7+";
        leader: String = "0+";
        skip_assignment: bool = "9+";
        member_id: String = "0+";
        members: Vec<JoinGroupResponseMember> = "0+";
    }

    pub struct JoinGroupResponseMember {
        member_id: String = "0+";
        group_instance_id: Option<String> = "5+", nullable "5+", default None;
        metadata: bytes::Bytes = "0+";
    }
}
