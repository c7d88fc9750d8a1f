//! IncrementalAlterConfigs (key 44), v0-1: SET / DELETE / APPEND / SUBTRACT per config.

crate::message! {
    pub struct IncrementalAlterConfigsRequest [api = IncrementalAlterConfigs, versions = "0-1", flexible = "1+"] {
        resources: Vec<IncrementalAlterConfigsResource> = "0+";
        validate_only: bool = "0+";
    }

    pub struct IncrementalAlterConfigsResource {
        resource_type: i8 = "0+";
        resource_name: String = "0+";
        configs: Vec<IncrementalAlterableConfig> = "0+";
    }

    pub struct IncrementalAlterableConfig {
        name: String = "0+";
        /// 0 = SET, 1 = DELETE, 2 = APPEND, 3 = SUBTRACT.
        config_operation: i8 = "0+";
        value: Option<String> = "0+", nullable "0+";
    }

    pub struct IncrementalAlterConfigsResponse [api = IncrementalAlterConfigs, versions = "0-1", flexible = "1+"] {
        throttle_time_ms: i32 = "0+";
        responses: Vec<IncrementalAlterConfigsResourceResponse> = "0+";
    }

    pub struct IncrementalAlterConfigsResourceResponse {
        error_code: i16 = "0+";
        error_message: Option<String> = "0+", nullable "0+";
        resource_type: i8 = "0+";
        resource_name: String = "0+";
    }
}
