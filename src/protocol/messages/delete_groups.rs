//! DeleteGroups (key 42), v0-2.

crate::message! {
    pub struct DeleteGroupsRequest [api = DeleteGroups, versions = "0-2", flexible = "2+"] {
        groups_names: Vec<String> = "0+";
    }

    pub struct DeleteGroupsResponse [api = DeleteGroups, versions = "0-2", flexible = "2+"] {
        throttle_time_ms: i32 = "0+";
        results: Vec<DeletableGroupResult> = "0+";
    }

    pub struct DeletableGroupResult {
        group_id: String = "0+";
        error_code: i16 = "0+";
    }
}
