//! ApiVersions (key 18), v0-3. The response always goes out with response header v0; when the
//! request version is too new the server answers v0 with UNSUPPORTED_VERSION (KIP-511).

crate::message! {
    pub struct ApiVersionsRequest [api = ApiVersions, versions = "0-3", flexible = "3+"] {
        client_software_name: String = "3+";
        client_software_version: String = "3+";
    }

    pub struct ApiVersionsResponse [api = ApiVersions, versions = "0-3", flexible = "3+"] {
        error_code: i16 = "0+";
        api_keys: Vec<ApiVersion> = "0+";
        throttle_time_ms: i32 = "1+";
        @tagged {
            supported_features: Vec<SupportedFeatureKey> = "3+", tag 0;
            finalized_features_epoch: i64 = "3+", tag 1, default -1;
            finalized_features: Vec<FinalizedFeatureKey> = "3+", tag 2;
            zk_migration_ready: bool = "3+", tag 3, default false;
        }
    }

    pub struct ApiVersion {
        api_key: i16 = "0+";
        min_version: i16 = "0+";
        max_version: i16 = "0+";
    }

    pub struct SupportedFeatureKey {
        name: String = "3+";
        min_version: i16 = "3+";
        max_version: i16 = "3+";
    }

    pub struct FinalizedFeatureKey {
        name: String = "3+";
        max_version_level: i16 = "3+";
        min_version_level: i16 = "3+";
    }
}
