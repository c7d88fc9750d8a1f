//! DescribeCluster (key 60), v0-1 (flexible from v0).

crate::message! {
    pub struct DescribeClusterRequest [api = DescribeCluster, versions = "0-1", flexible = "0+"] {
        include_cluster_authorized_operations: bool = "0+";
        endpoint_type: i8 = "1+", default 1;
    }

    pub struct DescribeClusterResponse [api = DescribeCluster, versions = "0-1", flexible = "0+"] {
        throttle_time_ms: i32 = "0+";
        error_code: i16 = "0+";
        error_message: Option<String> = "0+", nullable "0+", default None;
        endpoint_type: i8 = "1+", default 1;
        cluster_id: String = "0+";
        controller_id: i32 = "0+", default -1;
        brokers: Vec<DescribeClusterBroker> = "0+";
        cluster_authorized_operations: i32 = "0+", default i32::MIN;
    }

    pub struct DescribeClusterBroker {
        broker_id: i32 = "0+";
        host: String = "0+";
        port: i32 = "0+";
        rack: Option<String> = "0+", nullable "0+", default None;
    }
}
