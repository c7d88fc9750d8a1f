//! AlterConfigs (key 33), v0-2: the given configs replace a resource's whole set of overrides.

crate::message! {
    pub struct AlterConfigsRequest [api = AlterConfigs, versions = "0-2", flexible = "2+"] {
        resources: Vec<AlterConfigsResource> = "0+";
        validate_only: bool = "0+";
    }

    pub struct AlterConfigsResource {
        resource_type: i8 = "0+";
        resource_name: String = "0+";
        configs: Vec<AlterableConfig> = "0+";
    }

    pub struct AlterableConfig {
        name: String = "0+";
        value: Option<String> = "0+", nullable "0+";
    }

    pub struct AlterConfigsResponse [api = AlterConfigs, versions = "0-2", flexible = "2+"] {
        throttle_time_ms: i32 = "0+";
        responses: Vec<AlterConfigsResourceResponse> = "0+";
    }

    pub struct AlterConfigsResourceResponse {
        error_code: i16 = "0+";
        error_message: Option<String> = "0+", nullable "0+";
        resource_type: i8 = "0+";
        resource_name: String = "0+";
    }
}
