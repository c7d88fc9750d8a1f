//! Metadata (key 3), v0-12.

crate::message! {
    pub struct MetadataRequest [api = Metadata, versions = "0-12", flexible = "9+"] {
        /// Null (v1+) = all topics; in v0 an empty array means all topics.
        topics: Option<Vec<MetadataRequestTopic>> = "0+", nullable "1+";
        allow_auto_topic_creation: bool = "4+", default true;
        include_cluster_authorized_operations: bool = "8-10";
        include_topic_authorized_operations: bool = "8+";
    }

    pub struct MetadataRequestTopic {
        topic_id: [u8; 16] = "10+";
        name: Option<String> = "0+", nullable "10+";
    }

    pub struct MetadataResponse [api = Metadata, versions = "0-12", flexible = "9+"] {
        throttle_time_ms: i32 = "3+";
        brokers: Vec<MetadataResponseBroker> = "0+";
        cluster_id: Option<String> = "2+", nullable "2+", default None;
        controller_id: i32 = "1+", default -1;
        topics: Vec<MetadataResponseTopic> = "0+";
        cluster_authorized_operations: i32 = "8-10", default i32::MIN;
    }

    pub struct MetadataResponseBroker {
        node_id: i32 = "0+";
        host: String = "0+";
        port: i32 = "0+";
        rack: Option<String> = "1+", nullable "1+", default None;
    }

    pub struct MetadataResponseTopic {
        error_code: i16 = "0+";
        name: Option<String> = "0+", nullable "12+";
        topic_id: [u8; 16] = "10+";
        is_internal: bool = "1+";
        partitions: Vec<MetadataResponsePartition> = "0+";
        topic_authorized_operations: i32 = "8+", default i32::MIN;
    }

    pub struct MetadataResponsePartition {
        error_code: i16 = "0+";
        partition_index: i32 = "0+";
        leader_id: i32 = "0+";
        leader_epoch: i32 = "7+", default -1;
        replica_nodes: Vec<i32> = "0+";
        isr_nodes: Vec<i32> = "0+";
        offline_replicas: Vec<i32> = "5+";
    }
}
