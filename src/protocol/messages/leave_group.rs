//! LeaveGroup (key 13), v0-5: one member (v0-2) or a batch of members (v3+) leaves a classic group.

crate::message! {
    pub struct LeaveGroupRequest [api = LeaveGroup, versions = "0-5", flexible = "4+"] {
        group_id: String = "0+";
        member_id: String = "0-2";
        members: Vec<MemberIdentity> = "3+";
    }

    pub struct MemberIdentity {
        member_id: String = "3+";
        group_instance_id: Option<String> = "3+", nullable "3+", default None;
        reason: Option<String> = "5+", nullable "5+", default None;
    }

    pub struct LeaveGroupResponse [api = LeaveGroup, versions = "0-5", flexible = "4+"] {
        throttle_time_ms: i32 = "1+";
        error_code: i16 = "0+";
        members: Vec<MemberResponse> = "3+";
    }

    pub struct MemberResponse {
        member_id: String = "3+";
        group_instance_id: Option<String> = "3+", nullable "3+";
        error_code: i16 = "3+";
    }
}
