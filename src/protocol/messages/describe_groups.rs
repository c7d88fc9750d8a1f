//! DescribeGroups (key 15), v0-5 (classic groups). v6 (per-group error message) is not
//! implemented.

crate::message! {
    pub struct DescribeGroupsRequest [api = DescribeGroups, versions = "0-5", flexible = "5+"] {
        groups: Vec<String> = "0+";
        include_authorized_operations: bool = "3+";
    }

    pub struct DescribeGroupsResponse [api = DescribeGroups, versions = "0-5", flexible = "5+"] {
        throttle_time_ms: i32 = "1+";
        groups: Vec<DescribeGroupsResponseDescribedGroup> = "0+";
    }

    pub struct DescribeGroupsResponseDescribedGroup {
        error_code: i16 = "0+";
        group_id: String = "0+";
        group_state: String = "0+";
        protocol_type: String = "0+";
        protocol_data: String = "0+";
        members: Vec<DescribedGroupMember> = "0+";
        /// Bit set of ACL operations; i32::MIN = not requested.
        authorized_operations: i32 = "3+", default i32::MIN;
    }

    pub struct DescribedGroupMember {
        member_id: String = "0+";
        group_instance_id: Option<String> = "4+", nullable "4+", default None;
        client_id: String = "0+";
        client_host: String = "0+";
        member_metadata: bytes::Bytes = "0+";
        member_assignment: bytes::Bytes = "0+";
    }
}
