//! DescribeConfigs (key 32), v1-4 (v0 left Kafka in 4.0).

crate::message! {
    pub struct DescribeConfigsRequest [api = DescribeConfigs, versions = "1-4", flexible = "4+"] {
        resources: Vec<DescribeConfigsResource> = "0+";
        include_synonyms: bool = "1+";
        include_documentation: bool = "3+";
    }

    pub struct DescribeConfigsResource {
        /// 2 = topic, 4 = broker, 8 = broker logger.
        resource_type: i8 = "0+";
        resource_name: String = "0+";
        /// Null = every config.
        configuration_keys: Option<Vec<String>> = "0+", nullable "0+";
    }

    pub struct DescribeConfigsResponse [api = DescribeConfigs, versions = "1-4", flexible = "4+"] {
        throttle_time_ms: i32 = "0+";
        results: Vec<DescribeConfigsResult> = "0+";
    }

    pub struct DescribeConfigsResult {
        error_code: i16 = "0+";
        error_message: Option<String> = "0+", nullable "0+";
        resource_type: i8 = "0+";
        resource_name: String = "0+";
        configs: Vec<DescribeConfigsResourceResult> = "0+";
    }

    pub struct DescribeConfigsResourceResult {
        name: String = "0+";
        value: Option<String> = "0+", nullable "0+";
        read_only: bool = "0+";
        config_source: i8 = "1+", default -1;
        is_sensitive: bool = "0+";
        synonyms: Vec<DescribeConfigsSynonym> = "1+";
        config_type: i8 = "3+";
        documentation: Option<String> = "3+", nullable "0+";
    }

    pub struct DescribeConfigsSynonym {
        name: String = "1+";
        value: Option<String> = "1+", nullable "1+";
        source: i8 = "1+";
    }
}
