//! ListGroups (key 16), v0-5. v4 filters by group state, v5 by group type ("classic",
//! "consumer", ...); empty filters list everything.

crate::message! {
    pub struct ListGroupsRequest [api = ListGroups, versions = "0-5", flexible = "3+"] {
        states_filter: Vec<String> = "4+";
        types_filter: Vec<String> = "5+";
    }

    pub struct ListGroupsResponse [api = ListGroups, versions = "0-5", flexible = "3+"] {
        throttle_time_ms: i32 = "1+";
        error_code: i16 = "0+";
        groups: Vec<ListedGroup> = "0+";
    }

    pub struct ListedGroup {
        group_id: String = "0+";
        protocol_type: String = "0+";
        group_state: String = "4+";
        group_type: String = "5+";
    }
}
