//! Oracle tests: our codec must agree byte for byte with the `kafka-protocol` crate (generated
//! from Kafka's own message specs) for every API and every version we serve.
//!
//! For each (message, version) and each proptest case:
//! 1. ours -> kafka-protocol: sample a random value of our type (only fields present in that
//!    version, nulls only where nullable, tagged fields default half of the time), encode it with
//!    our codec, decode it with kafka-protocol (must consume every byte), re-encode with
//!    kafka-protocol: the bytes must be identical.
//! 2. kafka-protocol -> ours: take a kafka-protocol value (the one decoded above, plus values built
//!    field by field with kafka-protocol's own builders, see `kp_built`), encode it with
//!    kafka-protocol, decode with ours (must consume every byte), re-encode with ours: identical.
//! 3. Robustness: random bytes and every truncation of a valid encoding go through our decoder;
//!    it may fail but must never panic.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages as kp;
use kafka_protocol::protocol::{Decodable, Encodable, Message as KpMessage};
use odradek::protocol::sample::Gen;
use odradek::protocol::{self as ours, Message, Reader, Writer};
use proptest::prelude::*;

const CASES: u32 = 64;

fn our_encode<O: Message>(v: &O, version: i16) -> Vec<u8> {
    let mut w = Writer::new();
    v.encode(&mut w, version);
    let len = w.len();
    let flat = w.clone().into_vec();
    assert_eq!(
        flat.len(),
        len,
        "Writer::len disagrees with the bytes written"
    );
    // The chunked form must be the same bytes as the flat form.
    let chunked: Vec<u8> = w.finish().iter().flat_map(|c| c.iter().copied()).collect();
    assert_eq!(chunked, flat);
    flat
}

fn our_decode<O: Message>(b: &[u8], version: i16) -> O {
    let mut r = Reader::new(Bytes::copy_from_slice(b));
    let v = O::decode(&mut r, version)
        .unwrap_or_else(|e| panic!("our decode failed at v{version}: {e}\n{b:?}"));
    assert_eq!(r.remaining(), 0, "our decode left bytes at v{version}");
    v
}

fn kp_encode<K: Encodable>(k: &K, version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    k.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("kafka-protocol encode failed at v{version}: {e}"));
    assert_eq!(k.compute_size(version).ok(), Some(buf.len()));
    buf.to_vec()
}

fn kp_decode<K: Decodable>(b: &[u8], version: i16) -> K {
    let mut buf = Bytes::copy_from_slice(b);
    let k = K::decode(&mut buf, version)
        .unwrap_or_else(|e| panic!("kafka-protocol decode failed at v{version}: {e}\n{b:?}"));
    assert!(
        buf.is_empty(),
        "kafka-protocol left {} bytes at v{version}",
        buf.len()
    );
    k
}

/// kafka-protocol value -> kafka-protocol bytes -> ours -> our bytes: identical.
fn check_kp_to_ours<O: Message, K: Encodable>(k: &K, version: i16) -> O {
    let kp_bytes = kp_encode(k, version);
    let o: O = our_decode(&kp_bytes, version);
    assert_eq!(
        our_encode(&o, version),
        kp_bytes,
        "kp -> ours -> bytes differ at v{version}"
    );
    o
}

/// Both directions for one sampled value.
fn check_pair<O: Message, K: Encodable + Decodable>(seed: u64, version: i16) {
    let mut g = Gen::new(seed);
    let o = O::sample(&mut g, version, false);
    let our_bytes = our_encode(&o, version);
    let k: K = kp_decode(&our_bytes, version);
    let kp_bytes = kp_encode(&k, version);
    assert_eq!(
        kp_bytes, our_bytes,
        "ours -> kp -> bytes differ at v{version}\n{o:?}"
    );
    let back: O = check_kp_to_ours::<O, K>(&k, version);
    assert_eq!(back, o, "value changed through the wire at v{version}");
    check_no_panic::<O>(&our_bytes, version, &mut g);
}

/// Random frames, truncations and byte corruptions of a valid encoding must not panic.
fn check_no_panic<O: Message>(valid: &[u8], version: i16, g: &mut Gen) {
    for _ in 0..4 {
        let n = g.below(64) as usize;
        let junk: Vec<u8> = (0..n).map(|_| g.next_u64() as u8).collect();
        let _ = O::decode(&mut Reader::new(Bytes::from(junk)), version);
    }
    let frame = Bytes::copy_from_slice(valid);
    for n in 0..valid.len().min(512) {
        let _ = O::decode(&mut Reader::new(frame.slice(..n)), version);
    }
    if !valid.is_empty() {
        let mut bad = valid.to_vec();
        for _ in 0..8 {
            let i = g.below(bad.len() as u64) as usize;
            bad[i] = g.next_u64() as u8;
            let _ = O::decode(&mut Reader::new(Bytes::from(bad.clone())), version);
        }
    }
}

/// Versions we implement that kafka-protocol 0.18 does not: Kafka 4.0 removed them from its specs.
/// They are checked against hand-written bytes instead (`write_txn_markers_v0_bytes`).
const KP_UNKNOWN: &[(ours::ApiKey, i16, i16)] = &[(ours::ApiKey::WriteTxnMarkers, 0, 0)];

/// The versions of `O` checked against kafka-protocol's `K`: ours, minus exactly the versions
/// listed in [`KP_UNKNOWN`] (so a kafka-protocol upgrade cannot silently shrink the coverage).
fn kp_versions<O: Message, K: KpMessage>() -> std::ops::RangeInclusive<i16> {
    let (lo, hi) = O::VERSIONS;
    let common = lo.max(K::VERSIONS.min)..=hi.min(K::VERSIONS.max);
    for v in lo..=hi {
        let unknown = KP_UNKNOWN
            .iter()
            .any(|&(k, a, b)| k == O::API_KEY && (a..=b).contains(&v));
        assert_ne!(
            common.contains(&v),
            unknown,
            "{:?} v{v}: KP_UNKNOWN disagrees with kafka-protocol's versions",
            O::API_KEY
        );
    }
    common
}

macro_rules! oracle {
    ($($test:ident: $ours:ty, $kp:ty;)*) => {$(
        proptest! {
            #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]
            #[test]
            fn $test(seed in any::<u64>()) {
                for version in kp_versions::<$ours, $kp>() {
                    check_pair::<$ours, $kp>(seed ^ (version as u64).wrapping_mul(0x9e37_79b9), version);
                }
            }
        }
    )*};
}

oracle! {
    api_versions_request: ours::ApiVersionsRequest, kp::ApiVersionsRequest;
    api_versions_response: ours::ApiVersionsResponse, kp::ApiVersionsResponse;
    metadata_request: ours::MetadataRequest, kp::MetadataRequest;
    metadata_response: ours::MetadataResponse, kp::MetadataResponse;
    produce_request: ours::ProduceRequest, kp::ProduceRequest;
    produce_response: ours::ProduceResponse, kp::ProduceResponse;
    fetch_request: ours::FetchRequest, kp::FetchRequest;
    fetch_response: ours::FetchResponse, kp::FetchResponse;
    list_offsets_request: ours::ListOffsetsRequest, kp::ListOffsetsRequest;
    list_offsets_response: ours::ListOffsetsResponse, kp::ListOffsetsResponse;
    create_topics_request: ours::CreateTopicsRequest, kp::CreateTopicsRequest;
    create_topics_response: ours::CreateTopicsResponse, kp::CreateTopicsResponse;
    delete_topics_request: ours::DeleteTopicsRequest, kp::DeleteTopicsRequest;
    delete_topics_response: ours::DeleteTopicsResponse, kp::DeleteTopicsResponse;
    init_producer_id_request: ours::InitProducerIdRequest, kp::InitProducerIdRequest;
    init_producer_id_response: ours::InitProducerIdResponse, kp::InitProducerIdResponse;
    add_partitions_to_txn_request: ours::AddPartitionsToTxnRequest, kp::AddPartitionsToTxnRequest;
    add_partitions_to_txn_response: ours::AddPartitionsToTxnResponse, kp::AddPartitionsToTxnResponse;
    add_offsets_to_txn_request: ours::AddOffsetsToTxnRequest, kp::AddOffsetsToTxnRequest;
    add_offsets_to_txn_response: ours::AddOffsetsToTxnResponse, kp::AddOffsetsToTxnResponse;
    end_txn_request: ours::EndTxnRequest, kp::EndTxnRequest;
    end_txn_response: ours::EndTxnResponse, kp::EndTxnResponse;
    write_txn_markers_request: ours::WriteTxnMarkersRequest, kp::WriteTxnMarkersRequest;
    write_txn_markers_response: ours::WriteTxnMarkersResponse, kp::WriteTxnMarkersResponse;
    txn_offset_commit_request: ours::TxnOffsetCommitRequest, kp::TxnOffsetCommitRequest;
    txn_offset_commit_response: ours::TxnOffsetCommitResponse, kp::TxnOffsetCommitResponse;
    describe_transactions_request: ours::DescribeTransactionsRequest, kp::DescribeTransactionsRequest;
    describe_transactions_response: ours::DescribeTransactionsResponse, kp::DescribeTransactionsResponse;
    list_transactions_request: ours::ListTransactionsRequest, kp::ListTransactionsRequest;
    list_transactions_response: ours::ListTransactionsResponse, kp::ListTransactionsResponse;
    describe_cluster_request: ours::DescribeClusterRequest, kp::DescribeClusterRequest;
    describe_cluster_response: ours::DescribeClusterResponse, kp::DescribeClusterResponse;
    create_partitions_request: ours::CreatePartitionsRequest, kp::CreatePartitionsRequest;
    create_partitions_response: ours::CreatePartitionsResponse, kp::CreatePartitionsResponse;
    offset_for_leader_epoch_request: ours::OffsetForLeaderEpochRequest, kp::OffsetForLeaderEpochRequest;
    offset_for_leader_epoch_response: ours::OffsetForLeaderEpochResponse, kp::OffsetForLeaderEpochResponse;
    find_coordinator_request: ours::FindCoordinatorRequest, kp::FindCoordinatorRequest;
    find_coordinator_response: ours::FindCoordinatorResponse, kp::FindCoordinatorResponse;
    join_group_request: ours::JoinGroupRequest, kp::JoinGroupRequest;
    join_group_response: ours::JoinGroupResponse, kp::JoinGroupResponse;
    sync_group_request: ours::SyncGroupRequest, kp::SyncGroupRequest;
    sync_group_response: ours::SyncGroupResponse, kp::SyncGroupResponse;
    heartbeat_request: ours::HeartbeatRequest, kp::HeartbeatRequest;
    heartbeat_response: ours::HeartbeatResponse, kp::HeartbeatResponse;
    leave_group_request: ours::LeaveGroupRequest, kp::LeaveGroupRequest;
    leave_group_response: ours::LeaveGroupResponse, kp::LeaveGroupResponse;
    offset_commit_request: ours::OffsetCommitRequest, kp::OffsetCommitRequest;
    offset_commit_response: ours::OffsetCommitResponse, kp::OffsetCommitResponse;
    offset_fetch_request: ours::OffsetFetchRequest, kp::OffsetFetchRequest;
    offset_fetch_response: ours::OffsetFetchResponse, kp::OffsetFetchResponse;
    offset_delete_request: ours::OffsetDeleteRequest, kp::OffsetDeleteRequest;
    offset_delete_response: ours::OffsetDeleteResponse, kp::OffsetDeleteResponse;
    list_groups_request: ours::ListGroupsRequest, kp::ListGroupsRequest;
    list_groups_response: ours::ListGroupsResponse, kp::ListGroupsResponse;
    describe_groups_request: ours::DescribeGroupsRequest, kp::DescribeGroupsRequest;
    describe_groups_response: ours::DescribeGroupsResponse, kp::DescribeGroupsResponse;
    delete_groups_request: ours::DeleteGroupsRequest, kp::DeleteGroupsRequest;
    delete_groups_response: ours::DeleteGroupsResponse, kp::DeleteGroupsResponse;
    consumer_group_heartbeat_request: ours::ConsumerGroupHeartbeatRequest, kp::ConsumerGroupHeartbeatRequest;
    consumer_group_heartbeat_response: ours::ConsumerGroupHeartbeatResponse, kp::ConsumerGroupHeartbeatResponse;
    consumer_group_describe_request: ours::ConsumerGroupDescribeRequest, kp::ConsumerGroupDescribeRequest;
    consumer_group_describe_response: ours::ConsumerGroupDescribeResponse, kp::ConsumerGroupDescribeResponse;
    describe_configs_request: ours::DescribeConfigsRequest, kp::DescribeConfigsRequest;
    describe_configs_response: ours::DescribeConfigsResponse, kp::DescribeConfigsResponse;
    alter_configs_request: ours::AlterConfigsRequest, kp::AlterConfigsRequest;
    alter_configs_response: ours::AlterConfigsResponse, kp::AlterConfigsResponse;
    incremental_alter_configs_request: ours::IncrementalAlterConfigsRequest, kp::IncrementalAlterConfigsRequest;
    incremental_alter_configs_response: ours::IncrementalAlterConfigsResponse, kp::IncrementalAlterConfigsResponse;
    delete_records_request: ours::DeleteRecordsRequest, kp::DeleteRecordsRequest;
    delete_records_response: ours::DeleteRecordsResponse, kp::DeleteRecordsResponse;
    describe_log_dirs_request: ours::DescribeLogDirsRequest, kp::DescribeLogDirsRequest;
    describe_log_dirs_response: ours::DescribeLogDirsResponse, kp::DescribeLogDirsResponse;
    describe_topic_partitions_request: ours::DescribeTopicPartitionsRequest, kp::DescribeTopicPartitionsRequest;
    describe_topic_partitions_response: ours::DescribeTopicPartitionsResponse, kp::DescribeTopicPartitionsResponse;
}

// ---------------------------------------------------------------------------------------------
// kafka-protocol values built field by field with kafka-protocol's own types (independent of our
// sampler): direction kp -> ours, plus ours -> kp must give back the same kp value.
// ---------------------------------------------------------------------------------------------

use kafka_protocol::protocol::StrBytes;

/// Random source plus the version being built; `has("3+")` gates fields by version.
struct B {
    g: Gen,
    v: i16,
}

fn parse_range(s: &str) -> (i16, i16) {
    if let Some(lo) = s.strip_suffix('+') {
        (lo.parse().unwrap(), i16::MAX)
    } else if let Some((lo, hi)) = s.split_once('-') {
        (lo.parse().unwrap(), hi.parse().unwrap())
    } else {
        let v = s.parse().unwrap();
        (v, v)
    }
}

impl B {
    fn has(&self, r: &str) -> bool {
        let (lo, hi) = parse_range(r);
        self.v >= lo && self.v <= hi
    }
    /// Tagged fields are set only half of the time (otherwise they stay at their default).
    fn tagged(&mut self, r: &str) -> bool {
        self.has(r) && self.g.coin()
    }
    fn int(&mut self) -> i64 {
        match self.g.below(4) {
            0 => 0,
            1 => -1,
            2 => self.g.below(1000) as i64,
            _ => self.g.next_u64() as i64,
        }
    }
    fn i8(&mut self) -> i8 {
        self.int() as i8
    }
    fn i16(&mut self) -> i16 {
        self.int() as i16
    }
    fn i32(&mut self) -> i32 {
        self.int() as i32
    }
    fn i64(&mut self) -> i64 {
        self.int()
    }
    fn bool(&mut self) -> bool {
        self.g.coin()
    }
    fn uuid_bytes(&mut self) -> [u8; 16] {
        let mut a = [0u8; 16];
        if self.g.coin() {
            a[..8].copy_from_slice(&self.g.next_u64().to_le_bytes());
            a[8..].copy_from_slice(&self.g.next_u64().to_le_bytes());
        }
        a
    }
    fn str(&mut self) -> StrBytes {
        let n = self.g.below(6) as usize;
        let s: String = (0..n)
            .map(|_| (b'A' + self.g.below(26) as u8) as char)
            .collect();
        StrBytes::from_string(s)
    }
    /// `None` a quarter of the time when nullable in this version.
    fn ostr(&mut self, nullable: &str) -> Option<StrBytes> {
        if self.has(nullable) && self.g.below(4) == 0 {
            None
        } else {
            Some(self.str())
        }
    }
    /// Non-nullable bytes (group metadata, assignments): usually small, sometimes past the
    /// shared-chunk threshold.
    fn bytes(&mut self) -> Bytes {
        self.records().unwrap_or_default()
    }
    fn records(&mut self) -> Option<Bytes> {
        match self.g.below(5) {
            0 => None,
            1 => Some(Bytes::from(vec![self.g.next_u64() as u8; 5000])),
            _ => Some(Bytes::from(
                (0..self.g.below(20)).map(|i| i as u8).collect::<Vec<u8>>(),
            )),
        }
    }
    fn vec<T>(&mut self, mut f: impl FnMut(&mut B) -> T) -> Vec<T> {
        let n = self.g.below(4);
        (0..n).map(|_| f(self)).collect()
    }
    fn ovec<T>(&mut self, nullable: &str, f: impl FnMut(&mut B) -> T) -> Option<Vec<T>> {
        if self.has(nullable) && self.g.below(4) == 0 {
            None
        } else {
            Some(self.vec(f))
        }
    }
}

/// kafka-protocol's Uuid type is not re-exported and `uuid` is not our dependency: obtain one by
/// decoding a v6 DeleteTopicState (null compact name, uuid, no tagged fields).
macro_rules! kp_uuid {
    ($b:expr) => {{
        let mut buf = vec![0u8];
        buf.extend_from_slice(&$b.uuid_bytes());
        buf.push(0);
        kp::delete_topics_request::DeleteTopicState::decode(&mut Bytes::from(buf), 6)
            .unwrap()
            .topic_id
    }};
}

fn tn(s: StrBytes) -> kp::TopicName {
    kp::TopicName(s)
}
fn bid(n: i32) -> kp::BrokerId {
    kp::BrokerId(n)
}

fn kp_api_versions_request(b: &mut B) -> kp::ApiVersionsRequest {
    let mut m = kp::ApiVersionsRequest::default();
    if b.has("3+") {
        m.client_software_name = b.str();
        m.client_software_version = b.str();
    }
    m
}

fn kp_api_versions_response(b: &mut B) -> kp::ApiVersionsResponse {
    use kp::api_versions_response::*;
    let mut m = ApiVersionsResponse::default();
    m.error_code = b.i16();
    m.api_keys = b.vec(|b| {
        let mut a = ApiVersion::default();
        a.api_key = b.i16();
        a.min_version = b.i16();
        a.max_version = b.i16();
        a
    });
    if b.has("1+") {
        m.throttle_time_ms = b.i32();
    }
    if b.tagged("3+") {
        m.supported_features = b.vec(|b| {
            let mut f = SupportedFeatureKey::default();
            f.name = b.str();
            f.min_version = b.i16();
            f.max_version = b.i16();
            f
        });
    }
    if b.tagged("3+") {
        m.finalized_features_epoch = b.i64();
    }
    if b.tagged("3+") {
        m.finalized_features = b.vec(|b| {
            let mut f = FinalizedFeatureKey::default();
            f.name = b.str();
            f.max_version_level = b.i16();
            f.min_version_level = b.i16();
            f
        });
    }
    if b.tagged("3+") {
        m.zk_migration_ready = b.bool();
    }
    m
}

fn kp_metadata_request(b: &mut B) -> kp::MetadataRequest {
    use kp::metadata_request::*;
    let mut m = MetadataRequest::default();
    m.topics = b.ovec("1+", |b| {
        let mut t = MetadataRequestTopic::default();
        if b.has("10+") {
            t.topic_id = kp_uuid!(b);
        }
        t.name = b.ostr("10+").map(tn);
        t
    });
    if b.has("4+") {
        m.allow_auto_topic_creation = b.bool();
    }
    if b.has("8-10") {
        m.include_cluster_authorized_operations = b.bool();
    }
    if b.has("8+") {
        m.include_topic_authorized_operations = b.bool();
    }
    m
}

fn kp_metadata_response(b: &mut B) -> kp::MetadataResponse {
    use kp::metadata_response::*;
    let mut m = MetadataResponse::default();
    if b.has("3+") {
        m.throttle_time_ms = b.i32();
    }
    m.brokers = b.vec(|b| {
        let mut x = MetadataResponseBroker::default();
        x.node_id = bid(b.i32());
        x.host = b.str();
        x.port = b.i32();
        if b.has("1+") {
            x.rack = b.ostr("1+");
        }
        x
    });
    if b.has("2+") {
        m.cluster_id = b.ostr("2+");
    }
    if b.has("1+") {
        m.controller_id = bid(b.i32());
    }
    m.topics = b.vec(|b| {
        let mut t = MetadataResponseTopic::default();
        t.error_code = b.i16();
        t.name = b.ostr("12+").map(tn);
        if b.has("10+") {
            t.topic_id = kp_uuid!(b);
        }
        if b.has("1+") {
            t.is_internal = b.bool();
        }
        t.partitions = b.vec(|b| {
            let mut p = MetadataResponsePartition::default();
            p.error_code = b.i16();
            p.partition_index = b.i32();
            p.leader_id = bid(b.i32());
            if b.has("7+") {
                p.leader_epoch = b.i32();
            }
            p.replica_nodes = b.vec(|b| bid(b.i32()));
            p.isr_nodes = b.vec(|b| bid(b.i32()));
            if b.has("5+") {
                p.offline_replicas = b.vec(|b| bid(b.i32()));
            }
            p
        });
        if b.has("8+") {
            t.topic_authorized_operations = b.i32();
        }
        t
    });
    if b.has("8-10") {
        m.cluster_authorized_operations = b.i32();
    }
    m
}

fn kp_produce_request(b: &mut B) -> kp::ProduceRequest {
    use kp::produce_request::*;
    let mut m = ProduceRequest::default();
    m.transactional_id = b.ostr("3+").map(kp::TransactionalId);
    m.acks = b.i16();
    m.timeout_ms = b.i32();
    m.topic_data = b.vec(|b| {
        let mut t = TopicProduceData::default();
        t.name = tn(b.str());
        t.partition_data = b.vec(|b| {
            let mut p = PartitionProduceData::default();
            p.index = b.i32();
            p.records = b.records();
            p
        });
        t
    });
    m
}

fn kp_produce_response(b: &mut B) -> kp::ProduceResponse {
    use kp::produce_response::*;
    let mut m = ProduceResponse::default();
    m.responses = b.vec(|b| {
        let mut t = TopicProduceResponse::default();
        t.name = tn(b.str());
        t.partition_responses = b.vec(|b| {
            let mut p = PartitionProduceResponse::default();
            p.index = b.i32();
            p.error_code = b.i16();
            p.base_offset = b.i64();
            if b.has("2+") {
                p.log_append_time_ms = b.i64();
            }
            if b.has("5+") {
                p.log_start_offset = b.i64();
            }
            if b.has("8+") {
                p.record_errors = b.vec(|b| {
                    let mut e = BatchIndexAndErrorMessage::default();
                    e.batch_index = b.i32();
                    e.batch_index_error_message = b.ostr("8+");
                    e
                });
                p.error_message = b.ostr("8+");
            }
            if b.tagged("10+") {
                p.current_leader.leader_id = bid(b.i32());
                p.current_leader.leader_epoch = b.i32();
            }
            p
        });
        t
    });
    if b.has("1+") {
        m.throttle_time_ms = b.i32();
    }
    if b.tagged("10+") {
        m.node_endpoints = b.vec(|b| {
            let mut n = NodeEndpoint::default();
            n.node_id = bid(b.i32());
            n.host = b.str();
            n.port = b.i32();
            n.rack = b.ostr("10+");
            n
        });
    }
    m
}

fn kp_fetch_request(b: &mut B) -> kp::FetchRequest {
    use kp::fetch_request::*;
    let mut m = FetchRequest::default();
    if b.tagged("12+") {
        m.cluster_id = b.ostr("12+");
    }
    m.replica_id = bid(b.i32());
    m.max_wait_ms = b.i32();
    m.min_bytes = b.i32();
    m.max_bytes = b.i32();
    m.isolation_level = b.i8();
    if b.has("7+") {
        m.session_id = b.i32();
        m.session_epoch = b.i32();
    }
    m.topics = b.vec(|b| {
        let mut t = FetchTopic::default();
        t.topic = tn(b.str());
        t.partitions = b.vec(|b| {
            let mut p = FetchPartition::default();
            p.partition = b.i32();
            if b.has("9+") {
                p.current_leader_epoch = b.i32();
            }
            p.fetch_offset = b.i64();
            if b.has("12+") {
                p.last_fetched_epoch = b.i32();
            }
            if b.has("5+") {
                p.log_start_offset = b.i64();
            }
            p.partition_max_bytes = b.i32();
            p
        });
        t
    });
    if b.has("7+") {
        m.forgotten_topics_data = b.vec(|b| {
            let mut f = ForgottenTopic::default();
            f.topic = tn(b.str());
            f.partitions = b.vec(|b| b.i32());
            f
        });
    }
    if b.has("11+") {
        m.rack_id = b.str();
    }
    m
}

fn kp_fetch_response(b: &mut B) -> kp::FetchResponse {
    use kp::fetch_response::*;
    let mut m = FetchResponse::default();
    m.throttle_time_ms = b.i32();
    if b.has("7+") {
        m.error_code = b.i16();
        m.session_id = b.i32();
    }
    m.responses = b.vec(|b| {
        let mut t = FetchableTopicResponse::default();
        t.topic = tn(b.str());
        t.partitions = b.vec(|b| {
            let mut p = PartitionData::default();
            p.partition_index = b.i32();
            p.error_code = b.i16();
            p.high_watermark = b.i64();
            p.last_stable_offset = b.i64();
            if b.has("5+") {
                p.log_start_offset = b.i64();
            }
            if b.tagged("12+") {
                p.diverging_epoch.epoch = b.i32();
                p.diverging_epoch.end_offset = b.i64();
            }
            if b.tagged("12+") {
                p.current_leader.leader_id = bid(b.i32());
                p.current_leader.leader_epoch = b.i32();
            }
            if b.tagged("12+") {
                p.snapshot_id.end_offset = b.i64();
                p.snapshot_id.epoch = b.i32();
            }
            p.aborted_transactions = b.ovec("4+", |b| {
                let mut a = AbortedTransaction::default();
                a.producer_id = kp::ProducerId(b.i64());
                a.first_offset = b.i64();
                a
            });
            if b.has("11+") {
                p.preferred_read_replica = bid(b.i32());
            }
            p.records = b.records();
            p
        });
        t
    });
    m
}

fn kp_list_offsets_request(b: &mut B) -> kp::ListOffsetsRequest {
    use kp::list_offsets_request::*;
    let mut m = ListOffsetsRequest::default();
    m.replica_id = bid(b.i32());
    if b.has("2+") {
        m.isolation_level = b.i8();
    }
    m.topics = b.vec(|b| {
        let mut t = ListOffsetsTopic::default();
        t.name = tn(b.str());
        t.partitions = b.vec(|b| {
            let mut p = ListOffsetsPartition::default();
            p.partition_index = b.i32();
            if b.has("4+") {
                p.current_leader_epoch = b.i32();
            }
            p.timestamp = b.i64();
            p
        });
        t
    });
    m
}

fn kp_list_offsets_response(b: &mut B) -> kp::ListOffsetsResponse {
    use kp::list_offsets_response::*;
    let mut m = ListOffsetsResponse::default();
    if b.has("2+") {
        m.throttle_time_ms = b.i32();
    }
    m.topics = b.vec(|b| {
        let mut t = ListOffsetsTopicResponse::default();
        t.name = tn(b.str());
        t.partitions = b.vec(|b| {
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = b.i32();
            p.error_code = b.i16();
            p.timestamp = b.i64();
            p.offset = b.i64();
            if b.has("4+") {
                p.leader_epoch = b.i32();
            }
            p
        });
        t
    });
    m
}

fn kp_create_topics_request(b: &mut B) -> kp::CreateTopicsRequest {
    use kp::create_topics_request::*;
    let mut m = CreateTopicsRequest::default();
    m.topics = b.vec(|b| {
        let mut t = CreatableTopic::default();
        t.name = tn(b.str());
        t.num_partitions = b.i32();
        t.replication_factor = b.i16();
        t.assignments = b.vec(|b| {
            let mut a = CreatableReplicaAssignment::default();
            a.partition_index = b.i32();
            a.broker_ids = b.vec(|b| bid(b.i32()));
            a
        });
        t.configs = b.vec(|b| {
            let mut c = CreatableTopicConfig::default();
            c.name = b.str();
            c.value = b.ostr("0+");
            c
        });
        t
    });
    m.timeout_ms = b.i32();
    m.validate_only = b.bool();
    m
}

fn kp_create_topics_response(b: &mut B) -> kp::CreateTopicsResponse {
    use kp::create_topics_response::*;
    let mut m = CreateTopicsResponse::default();
    m.throttle_time_ms = b.i32();
    m.topics = b.vec(|b| {
        let mut t = CreatableTopicResult::default();
        t.name = tn(b.str());
        if b.has("7+") {
            t.topic_id = kp_uuid!(b);
        }
        t.error_code = b.i16();
        t.error_message = b.ostr("0+");
        if b.tagged("5+") {
            t.topic_config_error_code = b.i16();
        }
        if b.has("5+") {
            t.num_partitions = b.i32();
            t.replication_factor = b.i16();
            t.configs = b.ovec("5+", |b| {
                let mut c = CreatableTopicConfigs::default();
                c.name = b.str();
                c.value = b.ostr("5+");
                c.read_only = b.bool();
                c.config_source = b.i8();
                c.is_sensitive = b.bool();
                c
            });
        }
        t
    });
    m
}

fn kp_delete_topics_request(b: &mut B) -> kp::DeleteTopicsRequest {
    use kp::delete_topics_request::*;
    let mut m = DeleteTopicsRequest::default();
    if b.has("6+") {
        m.topics = b.vec(|b| {
            let mut t = DeleteTopicState::default();
            t.name = b.ostr("6+").map(tn);
            t.topic_id = kp_uuid!(b);
            t
        });
    } else {
        m.topic_names = b.vec(|b| tn(b.str()));
    }
    m.timeout_ms = b.i32();
    m
}

fn kp_delete_topics_response(b: &mut B) -> kp::DeleteTopicsResponse {
    use kp::delete_topics_response::*;
    let mut m = DeleteTopicsResponse::default();
    m.throttle_time_ms = b.i32();
    m.responses = b.vec(|b| {
        let mut r = DeletableTopicResult::default();
        r.name = b.ostr("6+").map(tn);
        if b.has("6+") {
            r.topic_id = kp_uuid!(b);
        }
        r.error_code = b.i16();
        if b.has("5+") {
            r.error_message = b.ostr("5+");
        }
        r
    });
    m
}

fn kp_init_producer_id_request(b: &mut B) -> kp::InitProducerIdRequest {
    let mut m = kp::InitProducerIdRequest::default();
    m.transactional_id = b.ostr("0+").map(kp::TransactionalId);
    m.transaction_timeout_ms = b.i32();
    if b.has("3+") {
        m.producer_id = kp::ProducerId(b.i64());
        m.producer_epoch = b.i16();
    }
    m
}

fn kp_init_producer_id_response(b: &mut B) -> kp::InitProducerIdResponse {
    let mut m = kp::InitProducerIdResponse::default();
    m.throttle_time_ms = b.i32();
    m.error_code = b.i16();
    m.producer_id = kp::ProducerId(b.i64());
    m.producer_epoch = b.i16();
    m
}

fn kp_describe_cluster_request(b: &mut B) -> kp::DescribeClusterRequest {
    let mut m = kp::DescribeClusterRequest::default();
    m.include_cluster_authorized_operations = b.bool();
    if b.has("1+") {
        m.endpoint_type = b.i8();
    }
    m
}

fn kp_describe_cluster_response(b: &mut B) -> kp::DescribeClusterResponse {
    use kp::describe_cluster_response::*;
    let mut m = DescribeClusterResponse::default();
    m.throttle_time_ms = b.i32();
    m.error_code = b.i16();
    m.error_message = b.ostr("0+");
    if b.has("1+") {
        m.endpoint_type = b.i8();
    }
    m.cluster_id = b.str();
    m.controller_id = bid(b.i32());
    m.brokers = b.vec(|b| {
        let mut x = DescribeClusterBroker::default();
        x.broker_id = bid(b.i32());
        x.host = b.str();
        x.port = b.i32();
        x.rack = b.ostr("0+");
        x
    });
    m.cluster_authorized_operations = b.i32();
    m
}

fn kp_create_partitions_request(b: &mut B) -> kp::CreatePartitionsRequest {
    use kp::create_partitions_request::*;
    let mut m = CreatePartitionsRequest::default();
    m.topics = b.vec(|b| {
        let mut t = CreatePartitionsTopic::default();
        t.name = tn(b.str());
        t.count = b.i32();
        t.assignments = b.ovec("0+", |b| {
            let mut a = CreatePartitionsAssignment::default();
            a.broker_ids = b.vec(|b| bid(b.i32()));
            a
        });
        t
    });
    m.timeout_ms = b.i32();
    m.validate_only = b.bool();
    m
}

fn kp_create_partitions_response(b: &mut B) -> kp::CreatePartitionsResponse {
    use kp::create_partitions_response::*;
    let mut m = CreatePartitionsResponse::default();
    m.throttle_time_ms = b.i32();
    m.results = b.vec(|b| {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = tn(b.str());
        r.error_code = b.i16();
        r.error_message = b.ostr("0+");
        r
    });
    m
}

fn kp_offset_for_leader_epoch_request(b: &mut B) -> kp::OffsetForLeaderEpochRequest {
    use kp::offset_for_leader_epoch_request::*;
    let mut m = OffsetForLeaderEpochRequest::default();
    if b.has("3+") {
        m.replica_id = bid(b.i32());
    }
    m.topics = b.vec(|b| {
        let mut t = OffsetForLeaderTopic::default();
        t.topic = tn(b.str());
        t.partitions = b.vec(|b| {
            let mut p = OffsetForLeaderPartition::default();
            p.partition = b.i32();
            p.current_leader_epoch = b.i32();
            p.leader_epoch = b.i32();
            p
        });
        t
    });
    m
}

fn kp_offset_for_leader_epoch_response(b: &mut B) -> kp::OffsetForLeaderEpochResponse {
    use kp::offset_for_leader_epoch_response::*;
    let mut m = OffsetForLeaderEpochResponse::default();
    m.throttle_time_ms = b.i32();
    m.topics = b.vec(|b| {
        let mut t = OffsetForLeaderTopicResult::default();
        t.topic = tn(b.str());
        t.partitions = b.vec(|b| {
            let mut p = EpochEndOffset::default();
            p.error_code = b.i16();
            p.partition = b.i32();
            p.leader_epoch = b.i32();
            p.end_offset = b.i64();
            p
        });
        t
    });
    m
}

fn kp_find_coordinator_request(b: &mut B) -> kp::FindCoordinatorRequest {
    let mut m = kp::FindCoordinatorRequest::default();
    if b.has("0-3") {
        m.key = b.str();
    }
    if b.has("1+") {
        m.key_type = b.i8();
    }
    if b.has("4+") {
        m.coordinator_keys = b.vec(|b| b.str());
    }
    m
}

fn kp_find_coordinator_response(b: &mut B) -> kp::FindCoordinatorResponse {
    use kp::find_coordinator_response::*;
    let mut m = FindCoordinatorResponse::default();
    if b.has("1+") {
        m.throttle_time_ms = b.i32();
    }
    if b.has("0-3") {
        m.error_code = b.i16();
        if b.has("1-3") {
            m.error_message = b.ostr("1-3");
        }
        m.node_id = bid(b.i32());
        m.host = b.str();
        m.port = b.i32();
    } else {
        m.coordinators = b.vec(|b| {
            let mut c = Coordinator::default();
            c.key = b.str();
            c.node_id = bid(b.i32());
            c.host = b.str();
            c.port = b.i32();
            c.error_code = b.i16();
            c.error_message = b.ostr("4+");
            c
        });
    }
    m
}

fn gid(s: StrBytes) -> kp::GroupId {
    kp::GroupId(s)
}

fn txn_id(s: StrBytes) -> kp::TransactionalId {
    kp::TransactionalId(s)
}
fn pid(n: i64) -> kp::ProducerId {
    kp::ProducerId(n)
}

fn kp_add_partitions_to_txn_request(b: &mut B) -> kp::AddPartitionsToTxnRequest {
    use kp::add_partitions_to_txn_request::*;
    fn topic(b: &mut B) -> AddPartitionsToTxnTopic {
        let mut t = AddPartitionsToTxnTopic::default();
        t.name = tn(b.str());
        t.partitions = b.vec(|b| b.i32());
        t
    }
    let mut m = AddPartitionsToTxnRequest::default();
    if b.has("4+") {
        m.transactions = b.vec(|b| {
            let mut x = AddPartitionsToTxnTransaction::default();
            x.transactional_id = txn_id(b.str());
            x.producer_id = pid(b.i64());
            x.producer_epoch = b.i16();
            x.verify_only = b.bool();
            x.topics = b.vec(topic);
            x
        });
    }
    if b.has("0-3") {
        m.v3_and_below_transactional_id = txn_id(b.str());
        m.v3_and_below_producer_id = pid(b.i64());
        m.v3_and_below_producer_epoch = b.i16();
        m.v3_and_below_topics = b.vec(topic);
    }
    m
}

fn kp_add_partitions_to_txn_response(b: &mut B) -> kp::AddPartitionsToTxnResponse {
    use kp::add_partitions_to_txn_response::*;
    fn topic_result(b: &mut B) -> AddPartitionsToTxnTopicResult {
        let mut t = AddPartitionsToTxnTopicResult::default();
        t.name = tn(b.str());
        t.results_by_partition = b.vec(|b| {
            let mut p = AddPartitionsToTxnPartitionResult::default();
            p.partition_index = b.i32();
            p.partition_error_code = b.i16();
            p
        });
        t
    }
    let mut m = AddPartitionsToTxnResponse::default();
    m.throttle_time_ms = b.i32();
    if b.has("4+") {
        m.error_code = b.i16();
        m.results_by_transaction = b.vec(|b| {
            let mut r = AddPartitionsToTxnResult::default();
            r.transactional_id = txn_id(b.str());
            r.topic_results = b.vec(topic_result);
            r
        });
    }
    if b.has("0-3") {
        m.results_by_topic_v3_and_below = b.vec(topic_result);
    }
    m
}

fn kp_add_offsets_to_txn_request(b: &mut B) -> kp::AddOffsetsToTxnRequest {
    let mut m = kp::AddOffsetsToTxnRequest::default();
    m.transactional_id = txn_id(b.str());
    m.producer_id = pid(b.i64());
    m.producer_epoch = b.i16();
    m.group_id = gid(b.str());
    m
}

fn kp_add_offsets_to_txn_response(b: &mut B) -> kp::AddOffsetsToTxnResponse {
    let mut m = kp::AddOffsetsToTxnResponse::default();
    m.throttle_time_ms = b.i32();
    m.error_code = b.i16();
    m
}

fn kp_end_txn_request(b: &mut B) -> kp::EndTxnRequest {
    let mut m = kp::EndTxnRequest::default();
    m.transactional_id = txn_id(b.str());
    m.producer_id = pid(b.i64());
    m.producer_epoch = b.i16();
    m.committed = b.bool();
    m
}

fn kp_end_txn_response(b: &mut B) -> kp::EndTxnResponse {
    let mut m = kp::EndTxnResponse::default();
    m.throttle_time_ms = b.i32();
    m.error_code = b.i16();
    if b.has("5+") {
        m.producer_id = pid(b.i64());
        m.producer_epoch = b.i16();
    }
    m
}

fn kp_write_txn_markers_request(b: &mut B) -> kp::WriteTxnMarkersRequest {
    use kp::write_txn_markers_request::*;
    let mut m = WriteTxnMarkersRequest::default();
    m.markers = b.vec(|b| {
        let mut x = WritableTxnMarker::default();
        x.producer_id = pid(b.i64());
        x.producer_epoch = b.i16();
        x.transaction_result = b.bool();
        x.topics = b.vec(|b| {
            let mut t = WritableTxnMarkerTopic::default();
            t.name = tn(b.str());
            t.partition_indexes = b.vec(|b| b.i32());
            t
        });
        x.coordinator_epoch = b.i32();
        x
    });
    m
}

fn kp_write_txn_markers_response(b: &mut B) -> kp::WriteTxnMarkersResponse {
    use kp::write_txn_markers_response::*;
    let mut m = WriteTxnMarkersResponse::default();
    m.markers = b.vec(|b| {
        let mut x = WritableTxnMarkerResult::default();
        x.producer_id = pid(b.i64());
        x.topics = b.vec(|b| {
            let mut t = WritableTxnMarkerTopicResult::default();
            t.name = tn(b.str());
            t.partitions = b.vec(|b| {
                let mut p = WritableTxnMarkerPartitionResult::default();
                p.partition_index = b.i32();
                p.error_code = b.i16();
                p
            });
            t
        });
        x
    });
    m
}

fn kp_txn_offset_commit_request(b: &mut B) -> kp::TxnOffsetCommitRequest {
    use kp::txn_offset_commit_request::*;
    let mut m = TxnOffsetCommitRequest::default();
    m.transactional_id = txn_id(b.str());
    m.group_id = gid(b.str());
    m.producer_id = pid(b.i64());
    m.producer_epoch = b.i16();
    if b.has("3+") {
        m.generation_id = b.i32();
        m.member_id = b.str();
        m.group_instance_id = b.ostr("3+");
    }
    m.topics = b.vec(|b| {
        let mut t = TxnOffsetCommitRequestTopic::default();
        t.name = tn(b.str());
        t.partitions = b.vec(|b| {
            let mut p = TxnOffsetCommitRequestPartition::default();
            p.partition_index = b.i32();
            p.committed_offset = b.i64();
            if b.has("2+") {
                p.committed_leader_epoch = b.i32();
            }
            p.committed_metadata = b.ostr("0+");
            p
        });
        t
    });
    m
}

fn kp_txn_offset_commit_response(b: &mut B) -> kp::TxnOffsetCommitResponse {
    use kp::txn_offset_commit_response::*;
    let mut m = TxnOffsetCommitResponse::default();
    m.throttle_time_ms = b.i32();
    m.topics = b.vec(|b| {
        let mut t = TxnOffsetCommitResponseTopic::default();
        t.name = tn(b.str());
        t.partitions = b.vec(|b| {
            let mut p = TxnOffsetCommitResponsePartition::default();
            p.partition_index = b.i32();
            p.error_code = b.i16();
            p
        });
        t
    });
    m
}

fn kp_describe_transactions_request(b: &mut B) -> kp::DescribeTransactionsRequest {
    let mut m = kp::DescribeTransactionsRequest::default();
    m.transactional_ids = b.vec(|b| txn_id(b.str()));
    m
}

fn kp_describe_transactions_response(b: &mut B) -> kp::DescribeTransactionsResponse {
    use kp::describe_transactions_response::*;
    let mut m = DescribeTransactionsResponse::default();
    m.throttle_time_ms = b.i32();
    m.transaction_states = b.vec(|b| {
        let mut x = TransactionState::default();
        x.error_code = b.i16();
        x.transactional_id = txn_id(b.str());
        x.transaction_state = b.str();
        x.transaction_timeout_ms = b.i32();
        x.transaction_start_time_ms = b.i64();
        x.producer_id = pid(b.i64());
        x.producer_epoch = b.i16();
        x.topics = b.vec(|b| {
            let mut t = TopicData::default();
            t.topic = tn(b.str());
            t.partitions = b.vec(|b| b.i32());
            t
        });
        x
    });
    m
}

fn kp_list_transactions_request(b: &mut B) -> kp::ListTransactionsRequest {
    let mut m = kp::ListTransactionsRequest::default();
    m.state_filters = b.vec(|b| b.str());
    m.producer_id_filters = b.vec(|b| pid(b.i64()));
    if b.has("1+") {
        m.duration_filter = b.i64();
    }
    m
}

fn kp_list_transactions_response(b: &mut B) -> kp::ListTransactionsResponse {
    use kp::list_transactions_response::*;
    let mut m = ListTransactionsResponse::default();
    m.throttle_time_ms = b.i32();
    m.error_code = b.i16();
    m.unknown_state_filters = b.vec(|b| b.str());
    m.transaction_states = b.vec(|b| {
        let mut x = TransactionState::default();
        x.transactional_id = txn_id(b.str());
        x.producer_id = pid(b.i64());
        x.transaction_state = b.str();
        x
    });
    m
}

fn kp_join_group_request(b: &mut B) -> kp::JoinGroupRequest {
    use kp::join_group_request::*;
    let mut m = JoinGroupRequest::default();
    m.group_id = gid(b.str());
    m.session_timeout_ms = b.i32();
    m.rebalance_timeout_ms = b.i32();
    m.member_id = b.str();
    if b.has("5+") {
        m.group_instance_id = b.ostr("5+");
    }
    m.protocol_type = b.str();
    m.protocols = b.vec(|b| {
        let mut p = JoinGroupRequestProtocol::default();
        p.name = b.str();
        p.metadata = b.bytes();
        p
    });
    if b.has("8+") {
        m.reason = b.ostr("8+");
    }
    m
}

fn kp_join_group_response(b: &mut B) -> kp::JoinGroupResponse {
    use kp::join_group_response::*;
    let mut m = JoinGroupResponse::default();
    m.throttle_time_ms = b.i32();
    m.error_code = b.i16();
    m.generation_id = b.i32();
    if b.has("7+") {
        m.protocol_type = b.ostr("7+");
    }
    m.protocol_name = b.ostr("7+");
    m.leader = b.str();
    if b.has("9+") {
        m.skip_assignment = b.bool();
    }
    m.member_id = b.str();
    m.members = b.vec(|b| {
        let mut p = JoinGroupResponseMember::default();
        p.member_id = b.str();
        if b.has("5+") {
            p.group_instance_id = b.ostr("5+");
        }
        p.metadata = b.bytes();
        p
    });
    m
}

fn kp_sync_group_request(b: &mut B) -> kp::SyncGroupRequest {
    use kp::sync_group_request::*;
    let mut m = SyncGroupRequest::default();
    m.group_id = gid(b.str());
    m.generation_id = b.i32();
    m.member_id = b.str();
    if b.has("3+") {
        m.group_instance_id = b.ostr("3+");
    }
    if b.has("5+") {
        m.protocol_type = b.ostr("5+");
        m.protocol_name = b.ostr("5+");
    }
    m.assignments = b.vec(|b| {
        let mut a = SyncGroupRequestAssignment::default();
        a.member_id = b.str();
        a.assignment = b.bytes();
        a
    });
    m
}

fn kp_sync_group_response(b: &mut B) -> kp::SyncGroupResponse {
    let mut m = kp::SyncGroupResponse::default();
    if b.has("1+") {
        m.throttle_time_ms = b.i32();
    }
    m.error_code = b.i16();
    if b.has("5+") {
        m.protocol_type = b.ostr("5+");
        m.protocol_name = b.ostr("5+");
    }
    m.assignment = b.bytes();
    m
}

fn kp_heartbeat_request(b: &mut B) -> kp::HeartbeatRequest {
    let mut m = kp::HeartbeatRequest::default();
    m.group_id = gid(b.str());
    m.generation_id = b.i32();
    m.member_id = b.str();
    if b.has("3+") {
        m.group_instance_id = b.ostr("3+");
    }
    m
}

fn kp_heartbeat_response(b: &mut B) -> kp::HeartbeatResponse {
    let mut m = kp::HeartbeatResponse::default();
    if b.has("1+") {
        m.throttle_time_ms = b.i32();
    }
    m.error_code = b.i16();
    m
}

fn kp_leave_group_request(b: &mut B) -> kp::LeaveGroupRequest {
    use kp::leave_group_request::*;
    let mut m = LeaveGroupRequest::default();
    m.group_id = gid(b.str());
    if !b.has("3+") {
        m.member_id = b.str();
        return m;
    }
    m.members = b.vec(|b| {
        let mut p = MemberIdentity::default();
        p.member_id = b.str();
        p.group_instance_id = b.ostr("3+");
        if b.has("5+") {
            p.reason = b.ostr("5+");
        }
        p
    });
    m
}

fn kp_leave_group_response(b: &mut B) -> kp::LeaveGroupResponse {
    use kp::leave_group_response::*;
    let mut m = LeaveGroupResponse::default();
    if b.has("1+") {
        m.throttle_time_ms = b.i32();
    }
    m.error_code = b.i16();
    if !b.has("3+") {
        return m;
    }
    m.members = b.vec(|b| {
        let mut p = MemberResponse::default();
        p.member_id = b.str();
        p.group_instance_id = b.ostr("3+");
        p.error_code = b.i16();
        p
    });
    m
}

fn kp_offset_commit_request(b: &mut B) -> kp::OffsetCommitRequest {
    use kp::offset_commit_request::*;
    let mut m = OffsetCommitRequest::default();
    m.group_id = gid(b.str());
    m.generation_id_or_member_epoch = b.i32();
    m.member_id = b.str();
    if b.has("7+") {
        m.group_instance_id = b.ostr("7+");
    }
    if b.has("2-4") {
        m.retention_time_ms = b.i64();
    }
    m.topics = b.vec(|b| {
        let mut t = OffsetCommitRequestTopic::default();
        t.name = tn(b.str());
        t.partitions = b.vec(|b| {
            let mut p = OffsetCommitRequestPartition::default();
            p.partition_index = b.i32();
            p.committed_offset = b.i64();
            if b.has("6+") {
                p.committed_leader_epoch = b.i32();
            }
            p.committed_metadata = b.ostr("0+");
            p
        });
        t
    });
    m
}

fn kp_offset_commit_response(b: &mut B) -> kp::OffsetCommitResponse {
    use kp::offset_commit_response::*;
    let mut m = OffsetCommitResponse::default();
    if b.has("3+") {
        m.throttle_time_ms = b.i32();
    }
    m.topics = b.vec(|b| {
        let mut t = OffsetCommitResponseTopic::default();
        t.name = tn(b.str());
        t.partitions = b.vec(|b| {
            let mut p = OffsetCommitResponsePartition::default();
            p.partition_index = b.i32();
            p.error_code = b.i16();
            p
        });
        t
    });
    m
}

fn kp_offset_fetch_request(b: &mut B) -> kp::OffsetFetchRequest {
    use kp::offset_fetch_request::*;
    let mut m = OffsetFetchRequest::default();
    if b.has("0-7") {
        m.group_id = gid(b.str());
        m.topics = b.ovec("2-7", |b| {
            let mut t = OffsetFetchRequestTopic::default();
            t.name = tn(b.str());
            t.partition_indexes = b.vec(|b| b.i32());
            t
        });
    } else {
        m.groups = b.vec(|b| {
            let mut g = OffsetFetchRequestGroup::default();
            g.group_id = gid(b.str());
            if b.has("9+") {
                g.member_id = b.ostr("9+");
                g.member_epoch = b.i32();
            }
            g.topics = b.ovec("8+", |b| {
                let mut t = OffsetFetchRequestTopics::default();
                t.name = tn(b.str());
                t.partition_indexes = b.vec(|b| b.i32());
                t
            });
            g
        });
    }
    if b.has("7+") {
        m.require_stable = b.bool();
    }
    m
}

fn kp_offset_fetch_response(b: &mut B) -> kp::OffsetFetchResponse {
    use kp::offset_fetch_response::*;
    let mut m = OffsetFetchResponse::default();
    if b.has("3+") {
        m.throttle_time_ms = b.i32();
    }
    if b.has("0-7") {
        m.topics = b.vec(|b| {
            let mut t = OffsetFetchResponseTopic::default();
            t.name = tn(b.str());
            t.partitions = b.vec(|b| {
                let mut p = OffsetFetchResponsePartition::default();
                p.partition_index = b.i32();
                p.committed_offset = b.i64();
                if b.has("5+") {
                    p.committed_leader_epoch = b.i32();
                }
                p.metadata = b.ostr("0+");
                p.error_code = b.i16();
                p
            });
            t
        });
        if b.has("2+") {
            m.error_code = b.i16();
        }
    } else {
        m.groups = b.vec(|b| {
            let mut g = OffsetFetchResponseGroup::default();
            g.group_id = gid(b.str());
            g.topics = b.vec(|b| {
                let mut t = OffsetFetchResponseTopics::default();
                t.name = tn(b.str());
                t.partitions = b.vec(|b| {
                    let mut p = OffsetFetchResponsePartitions::default();
                    p.partition_index = b.i32();
                    p.committed_offset = b.i64();
                    p.committed_leader_epoch = b.i32();
                    p.metadata = b.ostr("8+");
                    p.error_code = b.i16();
                    p
                });
                t
            });
            g.error_code = b.i16();
            g
        });
    }
    m
}

fn kp_offset_delete_request(b: &mut B) -> kp::OffsetDeleteRequest {
    use kp::offset_delete_request::*;
    let mut m = OffsetDeleteRequest::default();
    m.group_id = gid(b.str());
    m.topics = b.vec(|b| {
        let mut t = OffsetDeleteRequestTopic::default();
        t.name = tn(b.str());
        t.partitions = b.vec(|b| {
            let mut p = OffsetDeleteRequestPartition::default();
            p.partition_index = b.i32();
            p
        });
        t
    });
    m
}

fn kp_offset_delete_response(b: &mut B) -> kp::OffsetDeleteResponse {
    use kp::offset_delete_response::*;
    let mut m = OffsetDeleteResponse::default();
    m.error_code = b.i16();
    m.throttle_time_ms = b.i32();
    m.topics = b.vec(|b| {
        let mut t = OffsetDeleteResponseTopic::default();
        t.name = tn(b.str());
        t.partitions = b.vec(|b| {
            let mut p = OffsetDeleteResponsePartition::default();
            p.partition_index = b.i32();
            p.error_code = b.i16();
            p
        });
        t
    });
    m
}

fn kp_list_groups_request(b: &mut B) -> kp::ListGroupsRequest {
    let mut m = kp::ListGroupsRequest::default();
    if b.has("4+") {
        m.states_filter = b.vec(|b| b.str());
    }
    if b.has("5+") {
        m.types_filter = b.vec(|b| b.str());
    }
    m
}

fn kp_list_groups_response(b: &mut B) -> kp::ListGroupsResponse {
    use kp::list_groups_response::*;
    let mut m = ListGroupsResponse::default();
    if b.has("1+") {
        m.throttle_time_ms = b.i32();
    }
    m.error_code = b.i16();
    m.groups = b.vec(|b| {
        let mut g = ListedGroup::default();
        g.group_id = gid(b.str());
        g.protocol_type = b.str();
        if b.has("4+") {
            g.group_state = b.str();
        }
        if b.has("5+") {
            g.group_type = b.str();
        }
        g
    });
    m
}

fn kp_describe_groups_request(b: &mut B) -> kp::DescribeGroupsRequest {
    let mut m = kp::DescribeGroupsRequest::default();
    m.groups = b.vec(|b| gid(b.str()));
    if b.has("3+") {
        m.include_authorized_operations = b.bool();
    }
    m
}

fn kp_describe_groups_response(b: &mut B) -> kp::DescribeGroupsResponse {
    use kp::describe_groups_response::*;
    let mut m = DescribeGroupsResponse::default();
    if b.has("1+") {
        m.throttle_time_ms = b.i32();
    }
    m.groups = b.vec(|b| {
        let mut g = DescribedGroup::default();
        g.error_code = b.i16();
        g.group_id = gid(b.str());
        g.group_state = b.str();
        g.protocol_type = b.str();
        g.protocol_data = b.str();
        g.members = b.vec(|b| {
            let mut p = DescribedGroupMember::default();
            p.member_id = b.str();
            if b.has("4+") {
                p.group_instance_id = b.ostr("4+");
            }
            p.client_id = b.str();
            p.client_host = b.str();
            p.member_metadata = b.bytes();
            p.member_assignment = b.bytes();
            p
        });
        if b.has("3+") {
            g.authorized_operations = b.i32();
        }
        g
    });
    m
}

fn kp_delete_groups_request(b: &mut B) -> kp::DeleteGroupsRequest {
    let mut m = kp::DeleteGroupsRequest::default();
    m.groups_names = b.vec(|b| gid(b.str()));
    m
}

fn kp_delete_groups_response(b: &mut B) -> kp::DeleteGroupsResponse {
    use kp::delete_groups_response::*;
    let mut m = DeleteGroupsResponse::default();
    m.throttle_time_ms = b.i32();
    m.results = b.vec(|b| {
        let mut r = DeletableGroupResult::default();
        r.group_id = gid(b.str());
        r.error_code = b.i16();
        r
    });
    m
}

fn kp_consumer_group_heartbeat_request(b: &mut B) -> kp::ConsumerGroupHeartbeatRequest {
    use kp::consumer_group_heartbeat_request::*;
    let mut m = ConsumerGroupHeartbeatRequest::default();
    m.group_id = gid(b.str());
    m.member_id = b.str();
    m.member_epoch = b.i32();
    m.instance_id = b.ostr("0+");
    m.rack_id = b.ostr("0+");
    m.rebalance_timeout_ms = b.i32();
    m.subscribed_topic_names = b.ovec("0+", |b| tn(b.str()));
    if b.has("1+") {
        m.subscribed_topic_regex = b.ostr("1+");
    }
    m.server_assignor = b.ostr("0+");
    m.topic_partitions = b.ovec("0+", |b| {
        let mut t = TopicPartitions::default();
        t.topic_id = kp_uuid!(b);
        t.partitions = b.vec(|b| b.i32());
        t
    });
    m
}

fn kp_consumer_group_heartbeat_response(b: &mut B) -> kp::ConsumerGroupHeartbeatResponse {
    use kp::consumer_group_heartbeat_response::*;
    let mut m = ConsumerGroupHeartbeatResponse::default();
    m.throttle_time_ms = b.i32();
    m.error_code = b.i16();
    m.error_message = b.ostr("0+");
    m.member_id = b.ostr("0+");
    m.member_epoch = b.i32();
    m.heartbeat_interval_ms = b.i32();
    if b.g.below(4) != 0 {
        let mut a = Assignment::default();
        a.topic_partitions = b.vec(|b| {
            let mut t = TopicPartitions::default();
            t.topic_id = kp_uuid!(b);
            t.partitions = b.vec(|b| b.i32());
            t
        });
        m.assignment = Some(a);
    }
    m
}

fn kp_consumer_group_describe_request(b: &mut B) -> kp::ConsumerGroupDescribeRequest {
    let mut m = kp::ConsumerGroupDescribeRequest::default();
    m.group_ids = b.vec(|b| gid(b.str()));
    m.include_authorized_operations = b.bool();
    m
}

fn kp_consumer_group_describe_response(b: &mut B) -> kp::ConsumerGroupDescribeResponse {
    use kp::consumer_group_describe_response::*;
    fn assignment(b: &mut B) -> Assignment {
        let mut a = Assignment::default();
        a.topic_partitions = b.vec(|b| {
            let mut t = TopicPartitions::default();
            t.topic_id = kp_uuid!(b);
            t.topic_name = tn(b.str());
            t.partitions = b.vec(|b| b.i32());
            t
        });
        a
    }
    let mut m = ConsumerGroupDescribeResponse::default();
    m.throttle_time_ms = b.i32();
    m.groups = b.vec(|b| {
        let mut g = DescribedGroup::default();
        g.error_code = b.i16();
        g.error_message = b.ostr("0+");
        g.group_id = gid(b.str());
        g.group_state = b.str();
        g.group_epoch = b.i32();
        g.assignment_epoch = b.i32();
        g.assignor_name = b.str();
        g.members = b.vec(|b| {
            let mut p = Member::default();
            p.member_id = b.str();
            p.instance_id = b.ostr("0+");
            p.rack_id = b.ostr("0+");
            p.member_epoch = b.i32();
            p.client_id = b.str();
            p.client_host = b.str();
            p.subscribed_topic_names = b.vec(|b| tn(b.str()));
            p.subscribed_topic_regex = b.ostr("0+");
            p.assignment = assignment(b);
            p.target_assignment = assignment(b);
            if b.has("1+") {
                p.member_type = b.i8();
            }
            p
        });
        g.authorized_operations = b.i32();
        g
    });
    m
}

/// kp value -> kp bytes -> ours -> our bytes identical, and our bytes -> kp gives the same value.
fn check_kp_built<
    O: Message,
    K: Encodable + Decodable + KpMessage + PartialEq + std::fmt::Debug,
>(
    seed: u64,
    build: fn(&mut B) -> K,
) {
    for v in kp_versions::<O, K>() {
        let mut b = B {
            g: Gen::new(seed ^ (v as u64) << 48),
            v,
        };
        let k = build(&mut b);
        let o: O = check_kp_to_ours::<O, K>(&k, v);
        let back: K = kp_decode(&our_encode(&o, v), v);
        assert_eq!(back, k, "kp value changed through our codec at v{v}");
    }
}

macro_rules! oracle_kp_built {
    ($($test:ident: $ours:ty, $build:ident;)*) => {$(
        proptest! {
            #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]
            #[test]
            fn $test(seed in any::<u64>()) {
                check_kp_built::<$ours, _>(seed, $build);
            }
        }
    )*};
}

oracle_kp_built! {
    kp_built_api_versions_request: ours::ApiVersionsRequest, kp_api_versions_request;
    kp_built_api_versions_response: ours::ApiVersionsResponse, kp_api_versions_response;
    kp_built_metadata_request: ours::MetadataRequest, kp_metadata_request;
    kp_built_metadata_response: ours::MetadataResponse, kp_metadata_response;
    kp_built_produce_request: ours::ProduceRequest, kp_produce_request;
    kp_built_produce_response: ours::ProduceResponse, kp_produce_response;
    kp_built_fetch_request: ours::FetchRequest, kp_fetch_request;
    kp_built_fetch_response: ours::FetchResponse, kp_fetch_response;
    kp_built_list_offsets_request: ours::ListOffsetsRequest, kp_list_offsets_request;
    kp_built_list_offsets_response: ours::ListOffsetsResponse, kp_list_offsets_response;
    kp_built_create_topics_request: ours::CreateTopicsRequest, kp_create_topics_request;
    kp_built_create_topics_response: ours::CreateTopicsResponse, kp_create_topics_response;
    kp_built_delete_topics_request: ours::DeleteTopicsRequest, kp_delete_topics_request;
    kp_built_delete_topics_response: ours::DeleteTopicsResponse, kp_delete_topics_response;
    kp_built_init_producer_id_request: ours::InitProducerIdRequest, kp_init_producer_id_request;
    kp_built_init_producer_id_response: ours::InitProducerIdResponse, kp_init_producer_id_response;
    kp_built_add_partitions_to_txn_request: ours::AddPartitionsToTxnRequest, kp_add_partitions_to_txn_request;
    kp_built_add_partitions_to_txn_response: ours::AddPartitionsToTxnResponse, kp_add_partitions_to_txn_response;
    kp_built_add_offsets_to_txn_request: ours::AddOffsetsToTxnRequest, kp_add_offsets_to_txn_request;
    kp_built_add_offsets_to_txn_response: ours::AddOffsetsToTxnResponse, kp_add_offsets_to_txn_response;
    kp_built_end_txn_request: ours::EndTxnRequest, kp_end_txn_request;
    kp_built_end_txn_response: ours::EndTxnResponse, kp_end_txn_response;
    kp_built_write_txn_markers_request: ours::WriteTxnMarkersRequest, kp_write_txn_markers_request;
    kp_built_write_txn_markers_response: ours::WriteTxnMarkersResponse, kp_write_txn_markers_response;
    kp_built_txn_offset_commit_request: ours::TxnOffsetCommitRequest, kp_txn_offset_commit_request;
    kp_built_txn_offset_commit_response: ours::TxnOffsetCommitResponse, kp_txn_offset_commit_response;
    kp_built_describe_transactions_request: ours::DescribeTransactionsRequest, kp_describe_transactions_request;
    kp_built_describe_transactions_response: ours::DescribeTransactionsResponse, kp_describe_transactions_response;
    kp_built_list_transactions_request: ours::ListTransactionsRequest, kp_list_transactions_request;
    kp_built_list_transactions_response: ours::ListTransactionsResponse, kp_list_transactions_response;
    kp_built_describe_cluster_request: ours::DescribeClusterRequest, kp_describe_cluster_request;
    kp_built_describe_cluster_response: ours::DescribeClusterResponse, kp_describe_cluster_response;
    kp_built_create_partitions_request: ours::CreatePartitionsRequest, kp_create_partitions_request;
    kp_built_create_partitions_response: ours::CreatePartitionsResponse, kp_create_partitions_response;
    kp_built_offset_for_leader_epoch_request: ours::OffsetForLeaderEpochRequest, kp_offset_for_leader_epoch_request;
    kp_built_offset_for_leader_epoch_response: ours::OffsetForLeaderEpochResponse, kp_offset_for_leader_epoch_response;
    kp_built_find_coordinator_request: ours::FindCoordinatorRequest, kp_find_coordinator_request;
    kp_built_find_coordinator_response: ours::FindCoordinatorResponse, kp_find_coordinator_response;
    kp_built_join_group_request: ours::JoinGroupRequest, kp_join_group_request;
    kp_built_join_group_response: ours::JoinGroupResponse, kp_join_group_response;
    kp_built_sync_group_request: ours::SyncGroupRequest, kp_sync_group_request;
    kp_built_sync_group_response: ours::SyncGroupResponse, kp_sync_group_response;
    kp_built_heartbeat_request: ours::HeartbeatRequest, kp_heartbeat_request;
    kp_built_heartbeat_response: ours::HeartbeatResponse, kp_heartbeat_response;
    kp_built_leave_group_request: ours::LeaveGroupRequest, kp_leave_group_request;
    kp_built_leave_group_response: ours::LeaveGroupResponse, kp_leave_group_response;
    kp_built_offset_commit_request: ours::OffsetCommitRequest, kp_offset_commit_request;
    kp_built_offset_commit_response: ours::OffsetCommitResponse, kp_offset_commit_response;
    kp_built_offset_fetch_request: ours::OffsetFetchRequest, kp_offset_fetch_request;
    kp_built_offset_fetch_response: ours::OffsetFetchResponse, kp_offset_fetch_response;
    kp_built_offset_delete_request: ours::OffsetDeleteRequest, kp_offset_delete_request;
    kp_built_offset_delete_response: ours::OffsetDeleteResponse, kp_offset_delete_response;
    kp_built_list_groups_request: ours::ListGroupsRequest, kp_list_groups_request;
    kp_built_list_groups_response: ours::ListGroupsResponse, kp_list_groups_response;
    kp_built_describe_groups_request: ours::DescribeGroupsRequest, kp_describe_groups_request;
    kp_built_describe_groups_response: ours::DescribeGroupsResponse, kp_describe_groups_response;
    kp_built_delete_groups_request: ours::DeleteGroupsRequest, kp_delete_groups_request;
    kp_built_delete_groups_response: ours::DeleteGroupsResponse, kp_delete_groups_response;
    kp_built_consumer_group_heartbeat_request: ours::ConsumerGroupHeartbeatRequest, kp_consumer_group_heartbeat_request;
    kp_built_consumer_group_heartbeat_response: ours::ConsumerGroupHeartbeatResponse, kp_consumer_group_heartbeat_response;
    kp_built_consumer_group_describe_request: ours::ConsumerGroupDescribeRequest, kp_consumer_group_describe_request;
    kp_built_consumer_group_describe_response: ours::ConsumerGroupDescribeResponse, kp_consumer_group_describe_response;
}

// ---------------------------------------------------------------------------------------------
// Headers.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn request_header_matches_kp(key_ix in 0usize..ours::SUPPORTED.len(), version in 0i16..14, corr in any::<i32>(),
                                 client in proptest::option::of("[a-z0-9-]{0,12}")) {
        let key = ours::SUPPORTED[key_ix].0 as i16;
        let hv = ours::request_header_version(key, version);
        let mut k = kp::RequestHeader::default();
        k.request_api_key = key;
        k.request_api_version = version;
        k.correlation_id = corr;
        k.client_id = client.clone().map(StrBytes::from_string);
        let kp_bytes = kp_encode(&k, hv);
        let mut r = Reader::new(Bytes::from(kp_bytes.clone()));
        let h = ours::RequestHeader::decode(&mut r).unwrap();
        prop_assert_eq!(r.remaining(), 0);
        prop_assert_eq!(&h, &ours::RequestHeader { request_api_key: key, request_api_version: version,
                                                     correlation_id: corr, client_id: client });
        let mut w = Writer::new();
        h.encode(&mut w);
        prop_assert_eq!(w.into_vec(), kp_bytes);
    }

    #[test]
    fn response_header_matches_kp(key_ix in 0usize..ours::SUPPORTED.len(), version in 0i16..14, corr in any::<i32>()) {
        let key = ours::SUPPORTED[key_ix].0;
        let hv = ours::response_header_version(key, version);
        let mut k = kp::ResponseHeader::default();
        k.correlation_id = corr;
        let kp_bytes = kp_encode(&k, hv);
        let mut w = Writer::new();
        ours::ResponseHeader { correlation_id: corr }.encode(&mut w, hv);
        prop_assert_eq!(w.into_vec(), kp_bytes.clone());
        let mut r = Reader::new(Bytes::from(kp_bytes));
        prop_assert_eq!(ours::ResponseHeader::decode(&mut r, hv).unwrap().correlation_id, corr);
        prop_assert_eq!(r.remaining(), 0);
    }
}

#[test]
fn header_versions_agree_with_kp() {
    use kafka_protocol::protocol::HeaderVersion;
    fn check<Req: HeaderVersion + KpMessage, Resp: HeaderVersion, O: Message>() {
        for v in kp_versions::<O, Req>() {
            let key = O::API_KEY;
            assert_eq!(
                ours::request_header_version(key as i16, v),
                Req::header_version(v),
                "{key:?} v{v}"
            );
            assert_eq!(
                ours::response_header_version(key, v),
                Resp::header_version(v),
                "{key:?} v{v}"
            );
        }
    }
    check::<kp::ApiVersionsRequest, kp::ApiVersionsResponse, ours::ApiVersionsRequest>();
    check::<kp::MetadataRequest, kp::MetadataResponse, ours::MetadataRequest>();
    check::<kp::ProduceRequest, kp::ProduceResponse, ours::ProduceRequest>();
    check::<kp::FetchRequest, kp::FetchResponse, ours::FetchRequest>();
    check::<kp::ListOffsetsRequest, kp::ListOffsetsResponse, ours::ListOffsetsRequest>();
    check::<kp::CreateTopicsRequest, kp::CreateTopicsResponse, ours::CreateTopicsRequest>();
    check::<kp::DeleteTopicsRequest, kp::DeleteTopicsResponse, ours::DeleteTopicsRequest>();
    check::<kp::InitProducerIdRequest, kp::InitProducerIdResponse, ours::InitProducerIdRequest>();
    check::<
        kp::AddPartitionsToTxnRequest,
        kp::AddPartitionsToTxnResponse,
        ours::AddPartitionsToTxnRequest,
    >();
    check::<kp::AddOffsetsToTxnRequest, kp::AddOffsetsToTxnResponse, ours::AddOffsetsToTxnRequest>(
    );
    check::<kp::EndTxnRequest, kp::EndTxnResponse, ours::EndTxnRequest>();
    check::<kp::WriteTxnMarkersRequest, kp::WriteTxnMarkersResponse, ours::WriteTxnMarkersRequest>(
    );
    check::<kp::TxnOffsetCommitRequest, kp::TxnOffsetCommitResponse, ours::TxnOffsetCommitRequest>(
    );
    check::<
        kp::DescribeTransactionsRequest,
        kp::DescribeTransactionsResponse,
        ours::DescribeTransactionsRequest,
    >();
    check::<kp::ListTransactionsRequest, kp::ListTransactionsResponse, ours::ListTransactionsRequest>(
    );
    check::<kp::DescribeClusterRequest, kp::DescribeClusterResponse, ours::DescribeClusterRequest>(
    );
    check::<kp::CreatePartitionsRequest, kp::CreatePartitionsResponse, ours::CreatePartitionsRequest>(
    );
    check::<
        kp::OffsetForLeaderEpochRequest,
        kp::OffsetForLeaderEpochResponse,
        ours::OffsetForLeaderEpochRequest,
    >();
    check::<kp::FindCoordinatorRequest, kp::FindCoordinatorResponse, ours::FindCoordinatorRequest>(
    );
    check::<kp::JoinGroupRequest, kp::JoinGroupResponse, ours::JoinGroupRequest>();
    check::<kp::SyncGroupRequest, kp::SyncGroupResponse, ours::SyncGroupRequest>();
    check::<kp::HeartbeatRequest, kp::HeartbeatResponse, ours::HeartbeatRequest>();
    check::<kp::LeaveGroupRequest, kp::LeaveGroupResponse, ours::LeaveGroupRequest>();
    check::<kp::OffsetCommitRequest, kp::OffsetCommitResponse, ours::OffsetCommitRequest>();
    check::<kp::OffsetFetchRequest, kp::OffsetFetchResponse, ours::OffsetFetchRequest>();
    check::<kp::OffsetDeleteRequest, kp::OffsetDeleteResponse, ours::OffsetDeleteRequest>();
    check::<kp::ListGroupsRequest, kp::ListGroupsResponse, ours::ListGroupsRequest>();
    check::<kp::DescribeGroupsRequest, kp::DescribeGroupsResponse, ours::DescribeGroupsRequest>();
    check::<kp::DeleteGroupsRequest, kp::DeleteGroupsResponse, ours::DeleteGroupsRequest>();
    check::<
        kp::ConsumerGroupHeartbeatRequest,
        kp::ConsumerGroupHeartbeatResponse,
        ours::ConsumerGroupHeartbeatRequest,
    >();
    check::<
        kp::ConsumerGroupDescribeRequest,
        kp::ConsumerGroupDescribeResponse,
        ours::ConsumerGroupDescribeRequest,
    >();
}

/// The 23-byte request that makes a naive decoder reserve gigabytes: a Metadata v1 header and a
/// topic array claiming i32::MAX elements. Must fail fast with a length error.
#[test]
fn huge_array_count_fails_fast() {
    let mut w = Writer::new();
    ours::RequestHeader {
        request_api_key: 3,
        request_api_version: 1,
        correlation_id: 1,
        client_id: Some("x".into()),
    }
    .encode(&mut w);
    w.put_i32(i32::MAX);
    w.put_raw(&[0; 4]);
    let frame = Bytes::from(w.into_vec());
    let mut r = Reader::new(frame);
    let h = ours::RequestHeader::decode(&mut r).unwrap();
    let start = std::time::Instant::now();
    let err = ours::MetadataRequest::decode(&mut r, h.request_api_version).unwrap_err();
    assert!(
        matches!(err, ours::DecodeError::LengthTooLarge { .. }),
        "{err:?}"
    );
    assert!(start.elapsed() < std::time::Duration::from_millis(100));
    // Same for a compact count in a flexible version (Fetch v12 topics).
    let mut w = Writer::new();
    w.put_i32(-1); // replica_id
    w.put_i32(0);
    w.put_i32(0);
    w.put_i32(0);
    w.put_i8(0);
    w.put_i32(0);
    w.put_i32(0);
    w.put_uvarint(u32::MAX);
    let mut r = Reader::new(Bytes::from(w.into_vec()));
    assert!(matches!(
        ours::FetchRequest::decode(&mut r, 12),
        Err(ours::DecodeError::LengthTooLarge { .. })
    ));
}

#[test]
fn unsupported_versions_are_rejected_not_misparsed() {
    let mut r = Reader::new(Bytes::from_static(&[0; 64]));
    assert!(matches!(
        ours::ProduceRequest::decode(&mut r, 2),
        Err(ours::DecodeError::UnsupportedVersion {
            api_key: 0,
            version: 2
        })
    ));
    assert!(matches!(
        ours::ApiVersionsRequest::decode(&mut r, 4),
        Err(ours::DecodeError::UnsupportedVersion { .. })
    ));
}

/// WriteTxnMarkers v0, which kafka-protocol 0.18 does not know (`KP_UNKNOWN`), is v1 without the
/// flexible encoding: checked against bytes written by hand from Kafka 3.x's spec.
#[test]
fn write_txn_markers_v0_bytes() {
    let req = ours::WriteTxnMarkersRequest {
        markers: vec![ours::WritableTxnMarker {
            producer_id: 7,
            producer_epoch: 2,
            transaction_result: true,
            topics: vec![ours::WritableTxnMarkerTopic {
                name: "t".into(),
                partition_indexes: vec![0, 3],
            }],
            coordinator_epoch: 5,
        }],
    };
    #[rustfmt::skip]
    let req_bytes: &[u8] = &[
        0, 0, 0, 1, // markers: 1
        0, 0, 0, 0, 0, 0, 0, 7, // producer_id
        0, 2, // producer_epoch
        1, // transaction_result: commit
        0, 0, 0, 1, // topics: 1
        0, 1, b't', // name
        0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, // partition_indexes: [0, 3]
        0, 0, 0, 5, // coordinator_epoch
    ];
    assert_eq!(our_encode(&req, 0), req_bytes);
    assert_eq!(
        our_decode::<ours::WriteTxnMarkersRequest>(req_bytes, 0),
        req
    );

    let resp = ours::WriteTxnMarkersResponse {
        markers: vec![ours::WritableTxnMarkerResult {
            producer_id: -1,
            topics: vec![ours::WritableTxnMarkerTopicResult {
                name: "ab".into(),
                partitions: vec![ours::WritableTxnMarkerPartitionResult {
                    partition_index: 1,
                    error_code: 47,
                }],
            }],
        }],
    };
    #[rustfmt::skip]
    let resp_bytes: &[u8] = &[
        0, 0, 0, 1, // markers: 1
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producer_id: -1
        0, 0, 0, 1, // topics: 1
        0, 2, b'a', b'b', // name
        0, 0, 0, 1, // partitions: 1
        0, 0, 0, 1, // partition_index
        0, 47, // error_code: INVALID_PRODUCER_EPOCH
    ];
    assert_eq!(our_encode(&resp, 0), resp_bytes);
    assert_eq!(
        our_decode::<ours::WriteTxnMarkersResponse>(resp_bytes, 0),
        resp
    );
    // Non-flexible v0: request header v1, response header v0.
    assert_eq!(
        ours::request_header_version(ours::ApiKey::WriteTxnMarkers as i16, 0),
        1
    );
    assert_eq!(
        ours::response_header_version(ours::ApiKey::WriteTxnMarkers, 0),
        0
    );
}

/// Records are zero-copy on decode and go out as a shared chunk on encode.
#[test]
fn records_zero_copy_both_ways() {
    let records = Bytes::from(vec![0xabu8; 10_000]);
    let req = ours::ProduceRequest {
        acks: -1,
        timeout_ms: 1000,
        topic_data: vec![ours::TopicProduceData {
            name: "t".into(),
            partition_data: vec![ours::PartitionProduceData {
                index: 0,
                records: Some(records.clone()),
            }],
        }],
        ..Default::default()
    };
    let mut w = Writer::new();
    req.encode(&mut w, 9);
    let chunks = w.finish();
    assert!(
        chunks.iter().any(|c| c.as_ptr() == records.as_ptr()),
        "records were copied on encode"
    );
    let frame: Bytes = chunks
        .iter()
        .flat_map(|c| c.iter().copied())
        .collect::<Vec<u8>>()
        .into();
    let got = ours::ProduceRequest::decode(&mut Reader::new(frame.clone()), 9).unwrap();
    let rec = got.topic_data[0].partition_data[0].records.clone().unwrap();
    let off = rec.as_ptr() as usize - frame.as_ptr() as usize;
    assert!(off < frame.len(), "records were copied on decode");
    assert_eq!(got, req);
}

/// Our `Default` values are the spec defaults: the default message encodes exactly like
/// kafka-protocol's default message in every version.
#[test]
fn defaults_match_kp() {
    fn check<O: Message, K: Encodable + KpMessage + Default>() {
        for v in kp_versions::<O, K>() {
            assert_eq!(
                our_encode(&O::default(), v),
                kp_encode(&K::default(), v),
                "{:?} v{v}",
                O::API_KEY
            );
        }
    }
    check::<ours::ApiVersionsRequest, kp::ApiVersionsRequest>();
    check::<ours::ApiVersionsResponse, kp::ApiVersionsResponse>();
    check::<ours::MetadataRequest, kp::MetadataRequest>();
    check::<ours::MetadataResponse, kp::MetadataResponse>();
    check::<ours::ProduceRequest, kp::ProduceRequest>();
    check::<ours::ProduceResponse, kp::ProduceResponse>();
    check::<ours::FetchRequest, kp::FetchRequest>();
    check::<ours::FetchResponse, kp::FetchResponse>();
    check::<ours::ListOffsetsRequest, kp::ListOffsetsRequest>();
    check::<ours::ListOffsetsResponse, kp::ListOffsetsResponse>();
    check::<ours::CreateTopicsRequest, kp::CreateTopicsRequest>();
    check::<ours::CreateTopicsResponse, kp::CreateTopicsResponse>();
    check::<ours::DeleteTopicsRequest, kp::DeleteTopicsRequest>();
    check::<ours::DeleteTopicsResponse, kp::DeleteTopicsResponse>();
    check::<ours::InitProducerIdRequest, kp::InitProducerIdRequest>();
    check::<ours::InitProducerIdResponse, kp::InitProducerIdResponse>();
    check::<ours::AddPartitionsToTxnRequest, kp::AddPartitionsToTxnRequest>();
    check::<ours::AddPartitionsToTxnResponse, kp::AddPartitionsToTxnResponse>();
    check::<ours::AddOffsetsToTxnRequest, kp::AddOffsetsToTxnRequest>();
    check::<ours::AddOffsetsToTxnResponse, kp::AddOffsetsToTxnResponse>();
    check::<ours::EndTxnRequest, kp::EndTxnRequest>();
    check::<ours::EndTxnResponse, kp::EndTxnResponse>();
    check::<ours::WriteTxnMarkersRequest, kp::WriteTxnMarkersRequest>();
    check::<ours::WriteTxnMarkersResponse, kp::WriteTxnMarkersResponse>();
    check::<ours::TxnOffsetCommitRequest, kp::TxnOffsetCommitRequest>();
    check::<ours::TxnOffsetCommitResponse, kp::TxnOffsetCommitResponse>();
    check::<ours::DescribeTransactionsRequest, kp::DescribeTransactionsRequest>();
    check::<ours::DescribeTransactionsResponse, kp::DescribeTransactionsResponse>();
    check::<ours::ListTransactionsRequest, kp::ListTransactionsRequest>();
    check::<ours::ListTransactionsResponse, kp::ListTransactionsResponse>();
    check::<ours::DescribeClusterRequest, kp::DescribeClusterRequest>();
    check::<ours::DescribeClusterResponse, kp::DescribeClusterResponse>();
    check::<ours::CreatePartitionsRequest, kp::CreatePartitionsRequest>();
    check::<ours::CreatePartitionsResponse, kp::CreatePartitionsResponse>();
    check::<ours::OffsetForLeaderEpochRequest, kp::OffsetForLeaderEpochRequest>();
    check::<ours::OffsetForLeaderEpochResponse, kp::OffsetForLeaderEpochResponse>();
    check::<ours::FindCoordinatorRequest, kp::FindCoordinatorRequest>();
    check::<ours::FindCoordinatorResponse, kp::FindCoordinatorResponse>();
    check::<ours::JoinGroupRequest, kp::JoinGroupRequest>();
    check::<ours::JoinGroupResponse, kp::JoinGroupResponse>();
    check::<ours::SyncGroupRequest, kp::SyncGroupRequest>();
    check::<ours::SyncGroupResponse, kp::SyncGroupResponse>();
    check::<ours::HeartbeatRequest, kp::HeartbeatRequest>();
    check::<ours::HeartbeatResponse, kp::HeartbeatResponse>();
    check::<ours::LeaveGroupRequest, kp::LeaveGroupRequest>();
    check::<ours::LeaveGroupResponse, kp::LeaveGroupResponse>();
    check::<ours::OffsetCommitRequest, kp::OffsetCommitRequest>();
    check::<ours::OffsetCommitResponse, kp::OffsetCommitResponse>();
    check::<ours::OffsetFetchRequest, kp::OffsetFetchRequest>();
    check::<ours::OffsetFetchResponse, kp::OffsetFetchResponse>();
    check::<ours::OffsetDeleteRequest, kp::OffsetDeleteRequest>();
    check::<ours::OffsetDeleteResponse, kp::OffsetDeleteResponse>();
    check::<ours::ListGroupsRequest, kp::ListGroupsRequest>();
    check::<ours::ListGroupsResponse, kp::ListGroupsResponse>();
    check::<ours::DescribeGroupsRequest, kp::DescribeGroupsRequest>();
    check::<ours::DescribeGroupsResponse, kp::DescribeGroupsResponse>();
    check::<ours::DeleteGroupsRequest, kp::DeleteGroupsRequest>();
    check::<ours::DeleteGroupsResponse, kp::DeleteGroupsResponse>();
    check::<ours::ConsumerGroupHeartbeatRequest, kp::ConsumerGroupHeartbeatRequest>();
    check::<ours::ConsumerGroupHeartbeatResponse, kp::ConsumerGroupHeartbeatResponse>();
    check::<ours::ConsumerGroupDescribeRequest, kp::ConsumerGroupDescribeRequest>();
    check::<ours::ConsumerGroupDescribeResponse, kp::ConsumerGroupDescribeResponse>();
}

/// Nested structs' `Default` values are the spec defaults too. A default of a non-tagged field is
/// invisible on the wire in the message tests (every present field is sampled), but the server
/// builds responses from `..Default::default()`, so each default nested struct must encode like
/// kafka-protocol's in every version of its message.
#[test]
fn nested_defaults_match_kp() {
    use odradek::protocol::Field;
    fn check<P: Message, O: Field, K: Encodable + KpMessage + Default>() {
        for v in kp_versions::<P, K>() {
            let mut w = Writer::new();
            O::spec_default().write(&mut w, v, P::is_flexible(v));
            assert_eq!(
                w.into_vec(),
                kp_encode(&K::default(), v),
                "{} v{v}",
                std::any::type_name::<O>()
            );
        }
    }
    check::<
        ours::JoinGroupRequest,
        ours::JoinGroupRequestProtocol,
        kp::join_group_request::JoinGroupRequestProtocol,
    >();
    check::<
        ours::JoinGroupResponse,
        ours::JoinGroupResponseMember,
        kp::join_group_response::JoinGroupResponseMember,
    >();
    check::<
        ours::SyncGroupRequest,
        ours::SyncGroupRequestAssignment,
        kp::sync_group_request::SyncGroupRequestAssignment,
    >();
    check::<ours::LeaveGroupRequest, ours::MemberIdentity, kp::leave_group_request::MemberIdentity>(
    );
    check::<ours::LeaveGroupResponse, ours::MemberResponse, kp::leave_group_response::MemberResponse>(
    );
    check::<
        ours::OffsetCommitRequest,
        ours::OffsetCommitRequestTopic,
        kp::offset_commit_request::OffsetCommitRequestTopic,
    >();
    check::<
        ours::OffsetCommitRequest,
        ours::OffsetCommitRequestPartition,
        kp::offset_commit_request::OffsetCommitRequestPartition,
    >();
    check::<
        ours::OffsetCommitResponse,
        ours::OffsetCommitResponseTopic,
        kp::offset_commit_response::OffsetCommitResponseTopic,
    >();
    check::<
        ours::OffsetCommitResponse,
        ours::OffsetCommitResponsePartition,
        kp::offset_commit_response::OffsetCommitResponsePartition,
    >();
    check::<
        ours::OffsetFetchRequest,
        ours::OffsetFetchRequestTopic,
        kp::offset_fetch_request::OffsetFetchRequestTopic,
    >();
    check::<
        ours::OffsetFetchRequest,
        ours::OffsetFetchRequestGroup,
        kp::offset_fetch_request::OffsetFetchRequestGroup,
    >();
    check::<
        ours::OffsetFetchRequest,
        ours::OffsetFetchRequestTopics,
        kp::offset_fetch_request::OffsetFetchRequestTopics,
    >();
    check::<
        ours::OffsetFetchResponse,
        ours::OffsetFetchResponseTopic,
        kp::offset_fetch_response::OffsetFetchResponseTopic,
    >();
    check::<
        ours::OffsetFetchResponse,
        ours::OffsetFetchResponsePartition,
        kp::offset_fetch_response::OffsetFetchResponsePartition,
    >();
    check::<
        ours::OffsetFetchResponse,
        ours::OffsetFetchResponseGroup,
        kp::offset_fetch_response::OffsetFetchResponseGroup,
    >();
    check::<
        ours::OffsetFetchResponse,
        ours::OffsetFetchResponseTopics,
        kp::offset_fetch_response::OffsetFetchResponseTopics,
    >();
    check::<
        ours::OffsetFetchResponse,
        ours::OffsetFetchResponsePartitions,
        kp::offset_fetch_response::OffsetFetchResponsePartitions,
    >();
    check::<
        ours::OffsetDeleteRequest,
        ours::OffsetDeleteRequestTopic,
        kp::offset_delete_request::OffsetDeleteRequestTopic,
    >();
    check::<
        ours::OffsetDeleteRequest,
        ours::OffsetDeleteRequestPartition,
        kp::offset_delete_request::OffsetDeleteRequestPartition,
    >();
    check::<
        ours::OffsetDeleteResponse,
        ours::OffsetDeleteResponseTopic,
        kp::offset_delete_response::OffsetDeleteResponseTopic,
    >();
    check::<
        ours::OffsetDeleteResponse,
        ours::OffsetDeleteResponsePartition,
        kp::offset_delete_response::OffsetDeleteResponsePartition,
    >();
    check::<ours::ListGroupsResponse, ours::ListedGroup, kp::list_groups_response::ListedGroup>();
    check::<
        ours::DescribeGroupsResponse,
        ours::DescribeGroupsResponseDescribedGroup,
        kp::describe_groups_response::DescribedGroup,
    >();
    check::<
        ours::DescribeGroupsResponse,
        ours::DescribedGroupMember,
        kp::describe_groups_response::DescribedGroupMember,
    >();
    check::<
        ours::DeleteGroupsResponse,
        ours::DeletableGroupResult,
        kp::delete_groups_response::DeletableGroupResult,
    >();
    check::<
        ours::ConsumerGroupHeartbeatRequest,
        ours::ConsumerGroupHeartbeatRequestTopicPartitions,
        kp::consumer_group_heartbeat_request::TopicPartitions,
    >();
    check::<
        ours::ConsumerGroupHeartbeatResponse,
        ours::ConsumerGroupHeartbeatResponseAssignment,
        kp::consumer_group_heartbeat_response::Assignment,
    >();
    check::<
        ours::ConsumerGroupHeartbeatResponse,
        ours::ConsumerGroupHeartbeatResponseTopicPartitions,
        kp::consumer_group_heartbeat_response::TopicPartitions,
    >();
    check::<
        ours::ConsumerGroupDescribeResponse,
        ours::ConsumerGroupDescribeResponseDescribedGroup,
        kp::consumer_group_describe_response::DescribedGroup,
    >();
    check::<
        ours::ConsumerGroupDescribeResponse,
        ours::ConsumerGroupDescribeResponseMember,
        kp::consumer_group_describe_response::Member,
    >();
    check::<
        ours::ConsumerGroupDescribeResponse,
        ours::ConsumerGroupDescribeResponseAssignment,
        kp::consumer_group_describe_response::Assignment,
    >();
    check::<
        ours::ConsumerGroupDescribeResponse,
        ours::ConsumerGroupDescribeResponseTopicPartitions,
        kp::consumer_group_describe_response::TopicPartitions,
    >();
    check::<
        ours::AddPartitionsToTxnRequest,
        ours::AddPartitionsToTxnTransaction,
        kp::add_partitions_to_txn_request::AddPartitionsToTxnTransaction,
    >();
    check::<
        ours::AddPartitionsToTxnRequest,
        ours::AddPartitionsToTxnTopic,
        kp::add_partitions_to_txn_request::AddPartitionsToTxnTopic,
    >();
    check::<
        ours::AddPartitionsToTxnResponse,
        ours::AddPartitionsToTxnResult,
        kp::add_partitions_to_txn_response::AddPartitionsToTxnResult,
    >();
    check::<
        ours::AddPartitionsToTxnResponse,
        ours::AddPartitionsToTxnTopicResult,
        kp::add_partitions_to_txn_response::AddPartitionsToTxnTopicResult,
    >();
    check::<
        ours::AddPartitionsToTxnResponse,
        ours::AddPartitionsToTxnPartitionResult,
        kp::add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult,
    >();
    check::<
        ours::WriteTxnMarkersRequest,
        ours::WritableTxnMarker,
        kp::write_txn_markers_request::WritableTxnMarker,
    >();
    check::<
        ours::WriteTxnMarkersRequest,
        ours::WritableTxnMarkerTopic,
        kp::write_txn_markers_request::WritableTxnMarkerTopic,
    >();
    check::<
        ours::WriteTxnMarkersResponse,
        ours::WritableTxnMarkerResult,
        kp::write_txn_markers_response::WritableTxnMarkerResult,
    >();
    check::<
        ours::WriteTxnMarkersResponse,
        ours::WritableTxnMarkerTopicResult,
        kp::write_txn_markers_response::WritableTxnMarkerTopicResult,
    >();
    check::<
        ours::WriteTxnMarkersResponse,
        ours::WritableTxnMarkerPartitionResult,
        kp::write_txn_markers_response::WritableTxnMarkerPartitionResult,
    >();
    check::<
        ours::TxnOffsetCommitRequest,
        ours::TxnOffsetCommitRequestTopic,
        kp::txn_offset_commit_request::TxnOffsetCommitRequestTopic,
    >();
    check::<
        ours::TxnOffsetCommitRequest,
        ours::TxnOffsetCommitRequestPartition,
        kp::txn_offset_commit_request::TxnOffsetCommitRequestPartition,
    >();
    check::<
        ours::TxnOffsetCommitResponse,
        ours::TxnOffsetCommitResponseTopic,
        kp::txn_offset_commit_response::TxnOffsetCommitResponseTopic,
    >();
    check::<
        ours::TxnOffsetCommitResponse,
        ours::TxnOffsetCommitResponsePartition,
        kp::txn_offset_commit_response::TxnOffsetCommitResponsePartition,
    >();
    check::<
        ours::DescribeTransactionsResponse,
        ours::DescribeTransactionsResponseTransactionState,
        kp::describe_transactions_response::TransactionState,
    >();
    check::<
        ours::DescribeTransactionsResponse,
        ours::DescribeTransactionsResponseTopicData,
        kp::describe_transactions_response::TopicData,
    >();
    check::<
        ours::ListTransactionsResponse,
        ours::ListTransactionsResponseTransactionState,
        kp::list_transactions_response::TransactionState,
    >();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
    /// Whole request frames: a plausible header followed by random bytes never panics.
    #[test]
    fn random_request_frames_never_panic(key_ix in 0usize..ours::SUPPORTED.len(), version in -1i16..20,
                                         junk in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut w = Writer::new();
        ours::RequestHeader {
            request_api_key: ours::SUPPORTED[key_ix].0 as i16,
            request_api_version: version,
            correlation_id: 1,
            client_id: None,
        }
        .encode(&mut w);
        w.put_raw(&junk);
        let _ = ours::decode_request(Bytes::from(w.into_vec()));
        let _ = ours::decode_request(Bytes::from(junk));
    }
}

// ---------------------------------------------------------------------------------------------
// Interop with a real client: librdkafka (through rdkafka) produces to and consumes from a tiny
// in-test broker built on our codec only. Every request librdkafka sends must decode, every
// response we encode must be accepted.
// ---------------------------------------------------------------------------------------------

mod interop {
    use super::*;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message as _;
    use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
    use rdkafka::{ClientContext, Offset, TopicPartitionList};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    #[derive(Default)]
    struct State {
        /// (api key, version) of every request seen.
        seen: Vec<(i16, i16)>,
        /// The one stored batch (partition 0 of topic "t").
        batch: Option<Bytes>,
        /// Decode failures: must stay empty.
        errors: Vec<String>,
    }

    fn read_frame(s: &mut TcpStream) -> Option<Bytes> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).ok()?;
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).ok()?;
        Some(Bytes::from(buf))
    }

    fn serve_conn(mut s: TcpStream, port: i32, state: Arc<Mutex<State>>) {
        while let Some(frame) = read_frame(&mut s) {
            let (h, body) = match ours::decode_request(frame) {
                Ok(x) => x,
                Err(e) => {
                    state.lock().unwrap().errors.push(format!("header: {e}"));
                    return;
                }
            };
            let v = h.request_api_version;
            state.lock().unwrap().seen.push((h.request_api_key, v));
            let api_keys: Vec<ours::ApiVersion> = ours::SUPPORTED
                .iter()
                .map(|&(k, min_version, max_version)| ours::ApiVersion {
                    api_key: k as i16,
                    min_version,
                    max_version,
                })
                .collect();
            let (resp, v): (ours::ResponseBody, i16) = match body {
                Err(ours::DecodeError::UnsupportedVersion { api_key: 18, .. }) => {
                    // KIP-511: answer ApiVersions in v0 with the versions we do serve.
                    let r = ours::ApiVersionsResponse {
                        error_code: ours::ErrorCode::UNSUPPORTED_VERSION.code(),
                        api_keys,
                        ..Default::default()
                    };
                    (r.into(), 0)
                }
                Err(e) => {
                    state
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("key {} v{v}: {e}", h.request_api_key));
                    return;
                }
                Ok(ours::RequestBody::ApiVersions(_)) => (
                    ours::ApiVersionsResponse {
                        api_keys,
                        ..Default::default()
                    }
                    .into(),
                    v,
                ),
                Ok(ours::RequestBody::Metadata(_)) => {
                    let r = ours::MetadataResponse {
                        brokers: vec![ours::MetadataResponseBroker {
                            node_id: 1,
                            host: "127.0.0.1".into(),
                            port,
                            rack: None,
                        }],
                        cluster_id: Some("oracle".into()),
                        controller_id: 1,
                        topics: vec![ours::MetadataResponseTopic {
                            name: Some("t".into()),
                            topic_id: [7; 16],
                            partitions: vec![ours::MetadataResponsePartition {
                                leader_id: 1,
                                leader_epoch: 0,
                                replica_nodes: vec![1],
                                isr_nodes: vec![1],
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                        ..Default::default()
                    };
                    (r.into(), v)
                }
                Ok(ours::RequestBody::Produce(req)) => {
                    let mut st = state.lock().unwrap();
                    let mut r = ours::ProduceResponse::default();
                    for t in &req.topic_data {
                        let mut tr = ours::TopicProduceResponse {
                            name: t.name.clone(),
                            ..Default::default()
                        };
                        for p in &t.partition_data {
                            st.batch = p.records.clone();
                            tr.partition_responses.push(ours::PartitionProduceResponse {
                                index: p.index,
                                base_offset: 0,
                                log_start_offset: 0,
                                ..Default::default()
                            });
                        }
                        r.responses.push(tr);
                    }
                    if req.acks == 0 {
                        continue;
                    }
                    (r.into(), v)
                }
                Ok(ours::RequestBody::ListOffsets(req)) => {
                    let mut r = ours::ListOffsetsResponse::default();
                    for t in &req.topics {
                        let mut tr = ours::ListOffsetsTopicResponse {
                            name: t.name.clone(),
                            ..Default::default()
                        };
                        for p in &t.partitions {
                            tr.partitions.push(ours::ListOffsetsPartitionResponse {
                                partition_index: p.partition_index,
                                offset: if p.timestamp == -2 { 0 } else { 1 },
                                leader_epoch: 0,
                                ..Default::default()
                            });
                        }
                        r.topics.push(tr);
                    }
                    (r.into(), v)
                }
                Ok(ours::RequestBody::OffsetForLeaderEpoch(req)) => {
                    let mut r = ours::OffsetForLeaderEpochResponse::default();
                    for t in &req.topics {
                        let mut tr = ours::OffsetForLeaderTopicResult {
                            topic: t.topic.clone(),
                            ..Default::default()
                        };
                        for p in &t.partitions {
                            tr.partitions
                                .push(ours::OffsetForLeaderEpochResponseEpochEndOffset {
                                    partition: p.partition,
                                    leader_epoch: 0,
                                    end_offset: 1,
                                    ..Default::default()
                                });
                        }
                        r.topics.push(tr);
                    }
                    (r.into(), v)
                }
                Ok(ours::RequestBody::Fetch(req)) => {
                    let batch = state.lock().unwrap().batch.clone();
                    let mut r = ours::FetchResponse::default();
                    for t in &req.topics {
                        let mut tr = ours::FetchableTopicResponse {
                            topic: t.topic.clone(),
                            ..Default::default()
                        };
                        for p in &t.partitions {
                            let records = if p.fetch_offset == 0 {
                                batch.clone()
                            } else {
                                None
                            };
                            tr.partitions.push(ours::PartitionData {
                                partition_index: p.partition,
                                high_watermark: 1,
                                last_stable_offset: 1,
                                log_start_offset: 0,
                                records: Some(records.unwrap_or_default().into()),
                                ..Default::default()
                            });
                        }
                        r.responses.push(tr);
                    }
                    if batch.is_none()
                        || req
                            .topics
                            .iter()
                            .all(|t| t.partitions.iter().all(|p| p.fetch_offset > 0))
                    {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    (r.into(), v)
                }
                Ok(ours::RequestBody::FindCoordinator(req)) => {
                    let r = ours::FindCoordinatorResponse {
                        node_id: 1,
                        host: "127.0.0.1".into(),
                        port,
                        coordinators: req
                            .coordinator_keys
                            .iter()
                            .map(|k| ours::Coordinator {
                                key: k.clone(),
                                node_id: 1,
                                host: "127.0.0.1".into(),
                                port,
                                error_message: None,
                                ..Default::default()
                            })
                            .collect(),
                        error_message: None,
                        ..Default::default()
                    };
                    (r.into(), v)
                }
                Ok(other) => {
                    state
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("unexpected request {:?}", other.api_key()));
                    return;
                }
            };
            let mut w = Writer::new();
            ours::encode_response(&mut w, h.correlation_id, v, &resp);
            let mut out = (w.len() as i32).to_be_bytes().to_vec();
            out.extend_from_slice(&w.into_vec());
            if s.write_all(&out).is_err() {
                return;
            }
        }
    }

    struct Ctx(Arc<Mutex<Vec<Result<i64, String>>>>);
    impl ClientContext for Ctx {}
    impl ProducerContext for Ctx {
        type DeliveryOpaque = ();
        fn delivery(&self, r: &rdkafka::message::DeliveryResult<'_>, _: ()) {
            self.0.lock().unwrap().push(match r {
                Ok(m) => Ok(m.offset()),
                Err((e, _)) => Err(e.to_string()),
            });
        }
    }

    #[test]
    fn librdkafka_produces_and_consumes_through_our_codec() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        {
            let state = state.clone();
            std::thread::spawn(move || {
                for s in listener.incoming().flatten() {
                    let state = state.clone();
                    std::thread::spawn(move || serve_conn(s, port as i32, state));
                }
            });
        }
        let bootstrap = format!("127.0.0.1:{port}");

        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let producer: ThreadedProducer<Ctx> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("message.timeout.ms", "10000")
            .set("linger.ms", "0")
            .create_with_context(Ctx(deliveries.clone()))
            .unwrap();
        producer
            .send(
                BaseRecord::<str, str, ()>::to("t")
                    .partition(0)
                    .key("k")
                    .payload("hello odradek"),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
        assert_eq!(
            *deliveries.lock().unwrap(),
            vec![Ok(0)],
            "errors: {:?}",
            state.lock().unwrap().errors
        );

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "oracle")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = None;
        while got.is_none() && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.unwrap();
                got = Some((
                    m.offset(),
                    m.key().map(<[u8]>::to_vec),
                    m.payload().map(<[u8]>::to_vec),
                ));
            }
        }
        let st = state.lock().unwrap();
        assert!(st.errors.is_empty(), "{:?}", st.errors);
        assert_eq!(
            got,
            Some((0, Some(b"k".to_vec()), Some(b"hello odradek".to_vec()))),
            "seen {:?}",
            st.seen
        );
        // Show which versions librdkafka negotiated (visible with --nocapture).
        let mut seen = st.seen.clone();
        seen.sort();
        seen.dedup();
        println!(
            "librdkafka {} requests (key, version): {seen:?}",
            rdkafka::util::get_rdkafka_version().1
        );
    }
}
