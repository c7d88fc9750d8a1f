//! The malformed-request corpus (`tests/corpus/malformed/`) replayed against one live
//! `odradek serve`, several connections at a time, while a well-behaved rdkafka producer and
//! consumer keep working beside it.
//!
//! The corpus is data: one file per case, each the exact bytes a client writes on a fresh
//! connection (size prefixes included) before it half-closes, and `MANIFEST.tsv`, one line per
//! file saying what the case is and what the broker must do:
//!
//! ```text
//! file <TAB> answers <TAB> produce <TAB> what
//!   answers: the correlation ids of the responses, in order, before the broker closes the
//!            connection ("none": it closes without answering)
//!   produce: the error code every partition of the (one) Produce response carries, "-" if
//!            none is checked
//! ```
//!
//! The files are written by [`generate`] (run `cargo test --release --test malformed_corpus --
//! --ignored regenerate_corpus` after a codec change, and commit the result). For every API the
//! broker serves, at its oldest, first flexible and newest versions, it encodes a valid request
//! with the broker's own codec and derives malformed variants: truncations, size prefixes that
//! lie, huge and negative array/string lengths, bad varints (overlong, overflowing, cut),
//! unknown and broken tagged fields, trailing bytes, garbage, pipelined good and bad frames; and
//! for Produce, record sets with bad CRCs, wrong batch lengths, bad magic, lying counts, control
//! batches, undecodable records, bad compressed data and a decompression bomb, sent to a plain,
//! a compacted and a recompressing (gzip) topic. Whether a variant is answered is what the codec
//! says (a request that fails to decode closes the connection); the produce error codes are
//! Kafka's for each kind of damage.
//!
//! What the replay asserts: every case ends as its manifest line says; after every batch of
//! cases the broker process is alive and an rdkafka producer and consumer (connected before the
//! replay started) still produce records and read them back within [`HEALTH_ROUND_MAX`]; at the
//! end the broker stops cleanly and its log holds no panic.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use odradek::protocol::compression::compress;
use odradek::protocol::consumer_protocol::encode_subscription;
use odradek::protocol::messages::*;
use odradek::protocol::record_batch::{
    compute_crc, ATTRIBUTES_AT, ATTR_CONTROL, BATCH_LENGTH_AT, CRC_AT, LAST_OFFSET_DELTA_AT,
    MAGIC_AT, RECORDS_COUNT_AT,
};
use odradek::protocol::records::{assemble_batch, encode_batch, put_record, BatchFields, KeyValue};
use odradek::protocol::{
    decode_request, request_is_flexible, supported_versions, ApiKey, RequestBody, RequestHeader,
    Writer as CodecWriter,
};
use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// Where the corpus lives, relative to the crate root.
const CORPUS_DIR: &str = "tests/corpus/malformed";
const MANIFEST: &str = "MANIFEST.tsv";

/// Topics the produce cases write to: plain (records stay opaque), compacted (the broker reads
/// every record to check for keys) and gzip (the broker recompresses other codecs).
const TOPIC_PLAIN: &str = "corpus-plain";
const TOPIC_COMPACT: &str = "corpus-compact";
const TOPIC_GZIP: &str = "corpus-gzip";
/// The well-behaved client's topic.
const TOPIC_HEALTH: &str = "corpus-health";

/// Kafka error codes the produce cases expect.
const NONE: i16 = 0;
const CORRUPT_MESSAGE: i16 = 2;
const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
const INVALID_RECORD: i16 = 87;

/// Cases replayed between two health checks.
const BATCH: usize = 150;
/// Connections replaying cases at the same time.
const CONNECTIONS: usize = 4;
/// How long one case may take to end (answered and closed).
const CASE_TIMEOUT: Duration = Duration::from_secs(15);
/// Produce + read back of a few records by the well-behaved client. Generous on purpose: CI
/// machines are slow and shared; what it catches is a broker that stopped serving, not jitter.
const HEALTH_ROUND_MAX: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Cases and the manifest
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Case {
    /// Path under the corpus directory.
    file: String,
    bytes: Vec<u8>,
    /// Correlation ids of the responses expected, in order.
    answers: Vec<i32>,
    /// Error code expected on every partition of the Produce response.
    produce: Option<i16>,
    what: String,
}

impl Case {
    fn manifest_line(&self) -> String {
        let answers = if self.answers.is_empty() {
            "none".to_string()
        } else {
            self.answers
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let produce = self.produce.map_or("-".to_string(), |c| c.to_string());
        format!("{}\t{answers}\t{produce}\t{}", self.file, self.what)
    }
}

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(CORPUS_DIR)
}

/// Reads the manifest and every file it names.
fn load_corpus() -> Vec<Case> {
    let root = corpus_root();
    let text = std::fs::read_to_string(root.join(MANIFEST))
        .unwrap_or_else(|e| panic!("read {}/{MANIFEST}: {e}", root.display()));
    let mut cases = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.splitn(4, '\t').collect();
        assert_eq!(fields.len(), 4, "{MANIFEST} line {}: {line:?}", n + 1);
        let answers = match fields[1] {
            "none" => Vec::new(),
            list => list
                .split(',')
                .map(|c| {
                    c.parse()
                        .unwrap_or_else(|_| panic!("line {}: bad id {c:?}", n + 1))
                })
                .collect(),
        };
        let produce = match fields[2] {
            "-" => None,
            code => Some(
                code.parse()
                    .unwrap_or_else(|_| panic!("line {}: {code:?}", n + 1)),
            ),
        };
        let path = root.join(fields[0]);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        cases.push(Case {
            file: fields[0].to_string(),
            bytes,
            answers,
            produce,
            what: fields[3].to_string(),
        });
    }
    cases
}

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

/// A valid request every malformed variant is derived from.
struct Base {
    key: ApiKey,
    version: i16,
    body: RequestBody,
    /// Short name for files: `<api>-v<version>`.
    name: String,
}

/// Builds cases with unique correlation ids.
struct Gen {
    cases: Vec<Case>,
    next_cid: i32,
    /// Deterministic garbage (SplitMix64).
    rng: u64,
}

impl Gen {
    fn cid(&mut self) -> i32 {
        self.next_cid += 1;
        self.next_cid
    }

    fn random(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.rng;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) as u8
            })
            .collect()
    }

    fn push(&mut self, dir: &str, label: &str, bytes: Vec<u8>, answers: Vec<i32>, what: String) {
        self.push_produce(dir, label, bytes, answers, None, what);
    }

    fn push_produce(
        &mut self,
        dir: &str,
        label: &str,
        bytes: Vec<u8>,
        answers: Vec<i32>,
        produce: Option<i16>,
        what: String,
    ) {
        let file = format!("{dir}/{:04}-{label}.bin", self.cases.len());
        self.cases.push(Case {
            file,
            bytes,
            answers,
            produce,
            what,
        });
    }
}

/// Request header (v1 or v2 as the api and version require) with client id "corpus".
fn header(key: ApiKey, version: i16, cid: i32) -> Vec<u8> {
    let mut w = CodecWriter::new();
    RequestHeader {
        request_api_key: key as i16,
        request_api_version: version,
        correlation_id: cid,
        client_id: Some("corpus".into()),
    }
    .encode(&mut w);
    w.into_vec()
}

fn body_bytes(body: &RequestBody, version: i16) -> Vec<u8> {
    let mut w = CodecWriter::new();
    body.encode(&mut w, version);
    w.into_vec()
}

fn prefixed(frame: &[u8]) -> Vec<u8> {
    let mut out = (frame.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(frame);
    out
}

/// Whether the broker answers this frame: the codec decodes its header and body (the broker
/// decodes with the same codec and closes the connection on anything it cannot decode).
fn decodes(frame: &[u8]) -> bool {
    frame.len() >= 8
        && matches!(
            decode_request(Bytes::copy_from_slice(frame)),
            Ok((_, Ok(_)))
        )
}

/// The correlation ids answered for a frame that is written alone.
fn answered_if_decodes(frame: &[u8], cid: i32) -> Vec<i32> {
    if decodes(frame) {
        vec![cid]
    } else {
        Vec::new()
    }
}

/// A batch of `n` keyed records (uncompressed, no producer).
fn good_batch(n: usize) -> Vec<u8> {
    let records: Vec<KeyValue> = (0..n)
        .map(|i| KeyValue {
            key: Some(format!("key-{i}").into_bytes()),
            value: Some(format!("value-{i}").into_bytes()),
        })
        .collect();
    encode_batch(&records, 1_700_000_000_000)
}

fn produce_request(topic: &str, records: Option<Vec<u8>>) -> RequestBody {
    RequestBody::from(ProduceRequest {
        transactional_id: None,
        acks: -1,
        timeout_ms: 10_000,
        topic_data: vec![TopicProduceData {
            name: topic.into(),
            partition_data: vec![PartitionProduceData {
                index: 0,
                records: records.map(Bytes::from),
            }],
        }],
    })
}

/// The valid base request of `key` at `version`; names only corpus topics and groups, and is
/// answered at once (no long poll, no rebalance wait, nothing created).
fn base_body(key: ApiKey, version: i16) -> Option<RequestBody> {
    let plain = || TOPIC_PLAIN.to_string();
    let member = || "corpus-unknown-member".to_string();
    Some(match key {
        ApiKey::Produce => produce_request(TOPIC_PLAIN, Some(good_batch(3))),
        ApiKey::Fetch => RequestBody::from(FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                topic: plain(),
                partitions: vec![FetchPartition {
                    partition: 0,
                    fetch_offset: 0,
                    partition_max_bytes: 1 << 16,
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }),
        ApiKey::ListOffsets => RequestBody::from(ListOffsetsRequest {
            replica_id: -1,
            isolation_level: 0,
            topics: vec![ListOffsetsTopic {
                name: plain(),
                partitions: vec![ListOffsetsPartition {
                    partition_index: 0,
                    timestamp: -1,
                    ..Default::default()
                }],
            }],
        }),
        ApiKey::Metadata => RequestBody::from(MetadataRequest {
            topics: Some(vec![MetadataRequestTopic {
                name: Some(plain()),
                ..Default::default()
            }]),
            allow_auto_topic_creation: false,
            ..Default::default()
        }),
        ApiKey::FindCoordinator => RequestBody::from(FindCoordinatorRequest {
            key: "corpus-group".into(),
            key_type: 0,
            coordinator_keys: vec!["corpus-group".into()],
        }),
        ApiKey::ApiVersions => RequestBody::from(ApiVersionsRequest {
            client_software_name: "corpus".into(),
            client_software_version: "1.0".into(),
        }),
        ApiKey::CreateTopics => RequestBody::from(CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: "corpus-created".into(),
                num_partitions: 1,
                replication_factor: 1,
                ..Default::default()
            }],
            timeout_ms: 10_000,
            validate_only: true,
        }),
        ApiKey::DeleteTopics => RequestBody::from(DeleteTopicsRequest {
            topics: vec![DeleteTopicState {
                name: Some("corpus-absent".into()),
                ..Default::default()
            }],
            topic_names: vec!["corpus-absent".into()],
            timeout_ms: 10_000,
        }),
        ApiKey::InitProducerId => RequestBody::from(InitProducerIdRequest {
            transactional_id: None,
            transaction_timeout_ms: 60_000,
            ..Default::default()
        }),
        ApiKey::AddPartitionsToTxn => RequestBody::from(AddPartitionsToTxnRequest {
            v3_and_below_transactional_id: "corpus-txn".into(),
            v3_and_below_producer_id: 1,
            v3_and_below_producer_epoch: 0,
            ..Default::default()
        }),
        ApiKey::AddOffsetsToTxn => RequestBody::from(AddOffsetsToTxnRequest {
            transactional_id: "corpus-txn".into(),
            producer_id: 1,
            producer_epoch: 0,
            group_id: "corpus-group".into(),
        }),
        ApiKey::EndTxn => RequestBody::from(EndTxnRequest {
            transactional_id: "corpus-txn".into(),
            producer_id: 1,
            producer_epoch: 0,
            committed: false,
        }),
        ApiKey::TxnOffsetCommit => RequestBody::from(TxnOffsetCommitRequest {
            transactional_id: "corpus-txn".into(),
            group_id: "corpus-group".into(),
            producer_id: 1,
            producer_epoch: 0,
            ..Default::default()
        }),
        ApiKey::DescribeTransactions => RequestBody::from(DescribeTransactionsRequest {
            transactional_ids: vec!["corpus-txn".into()],
        }),
        ApiKey::ListTransactions => RequestBody::from(ListTransactionsRequest::default()),
        ApiKey::OffsetForLeaderEpoch => RequestBody::from(OffsetForLeaderEpochRequest {
            replica_id: -1,
            topics: vec![OffsetForLeaderTopic {
                topic: plain(),
                partitions: vec![OffsetForLeaderPartition {
                    partition: 0,
                    current_leader_epoch: -1,
                    leader_epoch: 0,
                }],
            }],
        }),
        ApiKey::CreatePartitions => RequestBody::from(CreatePartitionsRequest {
            topics: Vec::new(),
            timeout_ms: 10_000,
            validate_only: true,
        }),
        ApiKey::DescribeCluster => RequestBody::from(DescribeClusterRequest::default()),
        ApiKey::JoinGroup => RequestBody::from(JoinGroupRequest {
            group_id: "corpus-group-j".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            member_id: member(),
            protocol_type: "consumer".into(),
            protocols: vec![JoinGroupRequestProtocol {
                name: "range".into(),
                metadata: encode_subscription(&[plain()]),
            }],
            ..Default::default()
        }),
        ApiKey::SyncGroup => RequestBody::from(SyncGroupRequest {
            group_id: "corpus-group-j".into(),
            generation_id: 1,
            member_id: member(),
            ..Default::default()
        }),
        ApiKey::Heartbeat => RequestBody::from(HeartbeatRequest {
            group_id: "corpus-group-j".into(),
            generation_id: 1,
            member_id: member(),
            ..Default::default()
        }),
        ApiKey::LeaveGroup => RequestBody::from(LeaveGroupRequest {
            group_id: "corpus-group-j".into(),
            member_id: member(),
            members: vec![MemberIdentity {
                member_id: member(),
                ..Default::default()
            }],
        }),
        ApiKey::OffsetCommit => RequestBody::from(OffsetCommitRequest {
            group_id: "corpus-group".into(),
            generation_id_or_member_epoch: -1,
            member_id: String::new(),
            topics: vec![OffsetCommitRequestTopic {
                name: plain(),
                partitions: vec![OffsetCommitRequestPartition {
                    partition_index: 0,
                    committed_offset: 0,
                    committed_metadata: Some(String::new()),
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }),
        ApiKey::OffsetFetch => RequestBody::from(OffsetFetchRequest {
            group_id: "corpus-group".into(),
            topics: Some(vec![OffsetFetchRequestTopic {
                name: plain(),
                partition_indexes: vec![0],
            }]),
            groups: vec![OffsetFetchRequestGroup {
                group_id: "corpus-group".into(),
                topics: Some(vec![OffsetFetchRequestTopics {
                    name: plain(),
                    partition_indexes: vec![0],
                }]),
                ..Default::default()
            }],
            require_stable: false,
        }),
        ApiKey::OffsetDelete => RequestBody::from(OffsetDeleteRequest {
            group_id: "corpus-group".into(),
            topics: vec![OffsetDeleteRequestTopic {
                name: "corpus-absent".into(),
                partitions: vec![OffsetDeleteRequestPartition { partition_index: 0 }],
            }],
        }),
        ApiKey::ListGroups => RequestBody::from(ListGroupsRequest::default()),
        ApiKey::DescribeGroups => RequestBody::from(DescribeGroupsRequest {
            groups: vec!["corpus-group".into()],
            ..Default::default()
        }),
        ApiKey::DeleteGroups => RequestBody::from(DeleteGroupsRequest {
            groups_names: vec!["corpus-absent-group".into()],
        }),
        ApiKey::ConsumerGroupHeartbeat => RequestBody::from(ConsumerGroupHeartbeatRequest {
            group_id: "corpus-cg".into(),
            member_id: member(),
            member_epoch: 5,
            ..Default::default()
        }),
        ApiKey::ConsumerGroupDescribe => RequestBody::from(ConsumerGroupDescribeRequest {
            group_ids: vec!["corpus-cg".into()],
            include_authorized_operations: false,
        }),
        ApiKey::DescribeConfigs => RequestBody::from(DescribeConfigsRequest {
            resources: vec![DescribeConfigsResource {
                resource_type: 2,
                resource_name: plain(),
                configuration_keys: None,
            }],
            ..Default::default()
        }),
        ApiKey::AlterConfigs => RequestBody::from(AlterConfigsRequest {
            resources: Vec::new(),
            validate_only: true,
        }),
        ApiKey::IncrementalAlterConfigs => RequestBody::from(IncrementalAlterConfigsRequest {
            resources: Vec::new(),
            validate_only: true,
        }),
        ApiKey::DeleteRecords => RequestBody::from(DeleteRecordsRequest {
            topics: vec![DeleteRecordsTopic {
                name: "corpus-absent".into(),
                partitions: vec![DeleteRecordsPartition {
                    partition_index: 0,
                    offset: 0,
                }],
            }],
            timeout_ms: 10_000,
        }),
        ApiKey::DescribeLogDirs => RequestBody::from(DescribeLogDirsRequest { topics: None }),
        ApiKey::DescribeTopicPartitions => RequestBody::from(DescribeTopicPartitionsRequest {
            topics: vec![TopicRequest { name: plain() }],
            ..Default::default()
        }),
        _ => {
            let _ = version;
            return None;
        }
    })
}

/// Every served API at its oldest, first flexible and newest versions that the codec also
/// implements (Produce v0-2 is served only to be refused, and has no body codec).
fn bases() -> Vec<Base> {
    let mut out = Vec::new();
    for &(key, lo, hi) in odradek::server::handlers::API_TABLE {
        let Some((clo, chi)) = supported_versions(key) else {
            continue;
        };
        let (lo, hi) = (lo.max(clo), hi.min(chi));
        let mut versions = vec![lo, key.flexible_min(), hi];
        versions.retain(|v| (lo..=hi).contains(v));
        versions.sort();
        versions.dedup();
        for version in versions {
            if let Some(body) = base_body(key, version) {
                out.push(Base {
                    key,
                    version,
                    body,
                    name: format!("{key:?}-v{version}"),
                });
            }
        }
    }
    out
}

/// Positions in a body that look like a length or count prefix (a heuristic: the variants made
/// from them are kept only when the codec rejects them, so a wrong guess costs nothing):
/// (position, width in bytes, what it seems to be).
fn length_candidates(body: &[u8], flexible: bool) -> Vec<(usize, usize, &'static str)> {
    let printable = |s: &[u8]| s.iter().all(|b| b.is_ascii_graphic());
    let mut out = Vec::new();
    for p in 0..body.len() {
        let rest = &body[p..];
        if flexible {
            let b = rest[0] as usize;
            if (2..=41).contains(&b) && rest.len() > b - 1 && printable(&rest[1..b]) {
                out.push((p, 1, "compact string length"));
            } else if (2..=4).contains(&b) {
                out.push((p, 1, "compact array count"));
            }
        } else {
            if rest.len() >= 2 {
                let n = i16::from_be_bytes([rest[0], rest[1]]) as usize;
                if (1..=40).contains(&n) && rest.len() >= 2 + n && printable(&rest[2..2 + n]) {
                    out.push((p, 2, "string length"));
                    continue;
                }
            }
            if rest.len() >= 4 {
                let n = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                if (1..=3).contains(&n) {
                    out.push((p, 4, "array count or bytes length"));
                }
            }
        }
    }
    out
}

fn generate() -> Vec<Case> {
    let mut g = Gen {
        cases: Vec::new(),
        next_cid: 1000,
        rng: 0x0d7a_d3c0_4b05,
    };
    for base in bases() {
        generic_cases(&mut g, &base);
    }
    produce_cases(&mut g);
    stream_cases(&mut g);
    g.cases
}

/// The variants every base gets.
fn generic_cases(g: &mut Gen, base: &Base) {
    let dir = base.key_dir();
    let (key, version) = (base.key, base.version);
    let flexible = request_is_flexible(key, version);
    let body = body_bytes(&base.body, version);
    let name = &base.name;

    // The base itself: the broker must answer it, or the variants prove nothing.
    let cid = g.cid();
    let frame = [header(key, version, cid), body.clone()].concat();
    assert!(decodes(&frame), "{name}: base request does not decode");
    g.push(
        &dir,
        &format!("{name}-valid"),
        prefixed(&frame),
        vec![cid],
        format!("{name}: valid request (control case)"),
    );

    // Truncated: the size prefix agrees with the shortened frame.
    let full = frame.len();
    let mut cuts: Vec<usize> = vec![2, 7, 9];
    for k in 1..=6 {
        cuts.push(10 + (full.saturating_sub(11)) * k / 6);
    }
    cuts.push(full - 1);
    cuts.sort();
    cuts.dedup();
    for cut in cuts.into_iter().filter(|c| *c < full) {
        let cid = g.cid();
        let frame = [header(key, version, cid), body.clone()].concat();
        let short = &frame[..cut];
        let answers = answered_if_decodes(short, cid);
        g.push(
            &dir,
            &format!("{name}-cut{cut}"),
            prefixed(short),
            answers,
            format!("{name}: frame cut to {cut} of {full} bytes, size prefix says {cut}"),
        );
    }

    // Size prefix lies about the bytes that follow.
    let cid = g.cid();
    let frame = [header(key, version, cid), body.clone()].concat();
    let mut longer = ((frame.len() + 37) as i32).to_be_bytes().to_vec();
    longer.extend_from_slice(&frame);
    g.push(
        &dir,
        &format!("{name}-prefix-long"),
        longer,
        Vec::new(),
        format!("{name}: size prefix 37 bytes more than sent, then EOF"),
    );
    let cid = g.cid();
    let frame = [header(key, version, cid), body.clone()].concat();
    let mut shorter = ((frame.len() - 3) as i32).to_be_bytes().to_vec();
    shorter.extend_from_slice(&frame);
    let answers = answered_if_decodes(&frame[..frame.len() - 3], cid);
    g.push(&dir, &format!("{name}-prefix-short"), shorter, answers, format!("{name}: size prefix 3 bytes less than the frame (the rest reads as the next size prefix)"));

    // Trailing bytes after a complete body: the codec ignores them, as Kafka does.
    let cid = g.cid();
    let frame = [
        header(key, version, cid),
        body.clone(),
        vec![0xde, 0xad, 0xbe],
    ]
    .concat();
    let answers = answered_if_decodes(&frame, cid);
    g.push(
        &dir,
        &format!("{name}-trailing"),
        prefixed(&frame),
        answers,
        format!("{name}: 3 trailing bytes after the body"),
    );

    // Huge and negative lengths/counts where the body seems to have them.
    let candidates = length_candidates(&body, flexible);
    let step = (candidates.len() / 4).max(1);
    for &(pos, width, what) in candidates.iter().step_by(step).take(4) {
        let values: Vec<(&str, Vec<u8>)> = match width {
            4 => vec![
                ("huge", 0x7fff_ffffi32.to_be_bytes().to_vec()),
                ("negative", (-2i32).to_be_bytes().to_vec()),
            ],
            2 => vec![
                ("huge", 0x7fffi16.to_be_bytes().to_vec()),
                ("negative", (-2i16).to_be_bytes().to_vec()),
            ],
            _ => vec![
                ("huge", vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
                ("overlong-varint", [vec![0x80; 10], vec![0x01]].concat()),
                ("overflow-varint", vec![0xff, 0xff, 0xff, 0xff, 0x7f]),
            ],
        };
        for (label, value) in values {
            let cid = g.cid();
            let mut b = body.clone();
            b.splice(pos..pos + width, value.iter().copied());
            let frame = [header(key, version, cid), b].concat();
            if decodes(&frame) {
                continue; // not a length after all: the value still parses
            }
            g.push(
                &dir,
                &format!("{name}-{label}-at{pos}"),
                prefixed(&frame),
                Vec::new(),
                format!("{name}: {what} at body offset {pos} replaced ({label})"),
            );
        }
    }

    if flexible {
        tagged_cases(g, base, &dir, &body);
    }

    // Garbage: a valid header with a random body, and a random frame behind a sane prefix.
    let cid = g.cid();
    let junk = g.random(24 + body.len() % 40);
    let frame = [header(key, version, cid), junk].concat();
    if !decodes(&frame) {
        g.push(
            &dir,
            &format!("{name}-garbage-body"),
            prefixed(&frame),
            Vec::new(),
            format!("{name}: valid header, random body"),
        );
    }

    // Pipelined: a good request, a broken one, a good one: only the first is answered.
    let (c1, c2, c3) = (g.cid(), g.cid(), g.cid());
    let good1 = [header(key, version, c1), body.clone()].concat();
    let bad = [header(key, version, c2), body[..body.len() / 2].to_vec()].concat();
    let good3 = [header(key, version, c3), body.clone()].concat();
    if !decodes(&bad) {
        let stream = [prefixed(&good1), prefixed(&bad), prefixed(&good3)].concat();
        g.push(&dir, &format!("{name}-pipelined"), stream, vec![c1], format!("{name}: good, half-body, good pipelined: the first is answered, then the connection closes"));
    }
}

impl Base {
    fn key_dir(&self) -> String {
        format!("{:?}", self.key)
    }
}

/// Flexible versions: tagged fields in the header and at the end of the body.
fn tagged_cases(g: &mut Gen, base: &Base, dir: &str, body: &[u8]) {
    let (key, version, name) = (base.key, base.version, &base.name);
    // Our bases set no tagged field, so the body ends with an empty tagged section (one 0).
    assert_eq!(
        body.last(),
        Some(&0),
        "{name}: body should end with an empty tagged section"
    );
    let stem = &body[..body.len() - 1];
    let sections: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "unknown-tags",
            vec![2, 90, 4, 0xde, 0xad, 0xbe, 0xef, 91, 0],
            true,
        ),
        ("tag-size-past-end", vec![1, 90, 100, 1], false),
        ("tag-count-huge", vec![0xff, 0xff, 0xff, 0xff, 0x0f], false),
        (
            "tag-count-overlong",
            [vec![0x80; 10], vec![0x01]].concat(),
            false,
        ),
        ("tag-cut-varint", vec![1, 0x80], false),
    ];
    for (label, section, ok) in sections {
        let cid = g.cid();
        let frame = [header(key, version, cid), stem.to_vec(), section].concat();
        assert_eq!(decodes(&frame), ok, "{name}: {label}");
        if ok {
            // Unknown tags are skipped: the request is the base one.
            let (_, b) = decode_request(Bytes::copy_from_slice(&frame)).expect("header");
            let plain = [header(key, version, cid), body.to_vec()].concat();
            let (_, want) = decode_request(Bytes::from(plain)).expect("header");
            assert_eq!(b, want, "{name}: unknown tags changed the body");
        }
        let answers = if ok { vec![cid] } else { Vec::new() };
        g.push(
            dir,
            &format!("{name}-body-{label}"),
            prefixed(&frame),
            answers,
            format!("{name}: body tagged-field section: {label}"),
        );
    }
    // The request header's own tagged section (header v2): unknown tags are skipped too.
    if key != ApiKey::ApiVersions || version >= 3 {
        let cid = g.cid();
        let h = header(key, version, cid);
        let h = [&h[..h.len() - 1], &[1, 77, 2, 0xab, 0xcd][..]].concat();
        let frame = [h, body.to_vec()].concat();
        assert!(decodes(&frame), "{name}: header tags");
        g.push(
            dir,
            &format!("{name}-header-unknown-tag"),
            prefixed(&frame),
            vec![cid],
            format!("{name}: unknown tag in the request header"),
        );
        let cid = g.cid();
        let h = header(key, version, cid);
        let h = [&h[..h.len() - 1], &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80][..]].concat();
        let frame = [h, body.to_vec()].concat();
        assert!(!decodes(&frame), "{name}: header varint");
        g.push(
            dir,
            &format!("{name}-header-bad-varint"),
            prefixed(&frame),
            Vec::new(),
            format!("{name}: request header tagged count is a 6-byte varint"),
        );
    }
}

/// Rewrites the CRC of a whole batch after a change to the bytes it covers.
fn fix_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

fn set_i32(b: &mut [u8], at: usize, v: i32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// A batch of `n` records whose records section is `section` (already compressed with the
/// codec in `attributes`), with a correct CRC.
fn batch_with_section(section: &[u8], n: usize, attributes: i16) -> Vec<u8> {
    assemble_batch(
        section,
        BatchFields {
            attributes,
            records: n,
            base_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_000_000,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        },
    )
}

/// A records section of `n` keyed records.
fn section(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for i in 0..n {
        let key = format!("key-{i}");
        put_record(
            &mut out,
            &mut scratch,
            0,
            i as i64,
            Some(key.as_bytes()),
            Some(b"value"),
            &[],
        );
    }
    out
}

/// Record sets with damage, each sent to the three produce topics, at Produce v3, v8 (last
/// classic), v9 (first flexible) and v11.
fn produce_cases(g: &mut Gen) {
    // (label, records, error on the plain topic, compacted topic, gzip topic, what)
    type Expect = (Option<i16>, Option<i16>, Option<i16>);
    let mut sets: Vec<(&str, Option<Vec<u8>>, Expect, &str)> = Vec::new();
    let good = good_batch(3);
    let c = CORRUPT_MESSAGE;
    let inv = INVALID_RECORD;
    sets.push((
        "good",
        Some(good.clone()),
        (Some(NONE), Some(NONE), Some(NONE)),
        "a valid batch (control case)",
    ));
    let mut b = good.clone();
    let n = b.len();
    b[n - 2] ^= 0x40;
    sets.push((
        "crc-payload",
        Some(b),
        (Some(c), Some(c), Some(c)),
        "a record byte flipped (CRC mismatch)",
    ));
    let mut b = good.clone();
    b[CRC_AT] ^= 0x01;
    sets.push((
        "crc-field",
        Some(b),
        (Some(c), Some(c), Some(c)),
        "the CRC field itself wrong",
    ));
    for (label, delta, what) in [
        (
            "length-plus-1",
            1i64,
            "batchLength one more than the bytes present",
        ),
        (
            "length-minus-1",
            -1,
            "batchLength one less than the bytes present",
        ),
    ] {
        let mut b = good.clone();
        let len = i32::from_be_bytes(b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].try_into().unwrap());
        set_i32(&mut b, BATCH_LENGTH_AT, (i64::from(len) + delta) as i32);
        sets.push((label, Some(b), (Some(c), Some(c), Some(c)), what));
    }
    for (label, v, what) in [
        ("length-huge", i32::MAX, "batchLength 2^31-1"),
        ("length-negative", -5, "batchLength negative"),
        ("length-zero", 0, "batchLength 0"),
    ] {
        let mut b = good.clone();
        set_i32(&mut b, BATCH_LENGTH_AT, v);
        sets.push((label, Some(b), (Some(c), Some(c), Some(c)), what));
    }
    let mut b = good.clone();
    b[MAGIC_AT] = 1;
    let u = UNSUPPORTED_FOR_MESSAGE_FORMAT;
    sets.push((
        "magic-1",
        Some(b),
        (Some(u), Some(u), Some(u)),
        "magic 1 (legacy message set)",
    ));
    let mut b = good.clone();
    set_i32(&mut b, RECORDS_COUNT_AT, 7);
    fix_crc(&mut b);
    sets.push((
        "count-lies",
        Some(b),
        (Some(inv), Some(inv), Some(inv)),
        "recordsCount 7 for 3 records, CRC fixed",
    ));
    let mut b = good.clone();
    set_i32(&mut b, RECORDS_COUNT_AT, 0);
    set_i32(&mut b, LAST_OFFSET_DELTA_AT, -1);
    fix_crc(&mut b);
    sets.push((
        "count-zero",
        Some(b),
        (Some(inv), Some(inv), Some(inv)),
        "recordsCount 0, lastOffsetDelta -1, CRC fixed",
    ));
    let mut b = good.clone();
    let attrs = i16::from_be_bytes([b[ATTRIBUTES_AT], b[ATTRIBUTES_AT + 1]]) | ATTR_CONTROL;
    b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attrs.to_be_bytes());
    fix_crc(&mut b);
    sets.push((
        "control-from-client",
        Some(b),
        (Some(inv), Some(inv), Some(inv)),
        "control attribute set by a client, CRC fixed",
    ));
    sets.push((
        "two-batches",
        Some([good.clone(), good_batch(1)].concat()),
        (Some(inv), Some(inv), Some(inv)),
        "two batches in one partition's record set",
    ));
    sets.push((
        "empty-records",
        Some(Vec::new()),
        (Some(inv), Some(inv), Some(inv)),
        "empty record set",
    ));
    sets.push((
        "null-records",
        None,
        (Some(inv), Some(inv), Some(inv)),
        "null record set",
    ));
    sets.push((
        "short-garbage",
        Some(vec![0xab; 30]),
        (Some(c), Some(c), Some(c)),
        "30 bytes of garbage instead of a batch",
    ));
    // Undecodable records inside an uncompressed batch with a valid CRC. The broker keeps
    // records opaque on the passthrough path (it validates framing and CRC, not each record),
    // so the plain topic stores them (Kafka, which parses every record on produce, would answer
    // CORRUPT_MESSAGE). The topics that read records refuse the batch: the compacted one, which
    // must find every key, and the gzip one, which parses every record before recompressing (a
    // rewritten batch must decode).
    let mut s = section(3);
    s.splice(0..1, [vec![0x80; 10], vec![0x01]].concat());
    sets.push((
        "record-overlong-varint",
        Some(batch_with_section(&s, 3, 0)),
        (Some(NONE), Some(c), Some(c)),
        "first record's length is an 11-byte varint, CRC valid",
    ));
    let mut s = section(3);
    s.splice(
        0..1,
        [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    );
    sets.push((
        "record-length-huge",
        Some(batch_with_section(&s, 3, 0)),
        (Some(NONE), Some(c), Some(c)),
        "first record claims 2^62 bytes, CRC valid",
    ));
    let s = section(3);
    sets.push((
        "records-cut",
        Some(batch_with_section(&s[..s.len() - 4], 3, 0)),
        (Some(NONE), Some(c), Some(c)),
        "last record cut short, counts say 3, CRC valid",
    ));
    let junk = g.random(40);
    sets.push((
        "gzip-garbage",
        Some(batch_with_section(&junk, 3, 1)),
        (Some(NONE), Some(c), Some(NONE)),
        "gzip attribute over garbage, CRC valid (the gzip topic keeps gzip batches as sent)",
    ));
    sets.push((
        "snappy-garbage",
        Some(batch_with_section(&junk, 3, 2)),
        (Some(NONE), Some(c), Some(c)),
        "snappy attribute over garbage, CRC valid",
    ));
    let bomb = compress(4, &vec![0u8; 80 << 20]).expect("zstd");
    sets.push((
        "zstd-bomb",
        Some(batch_with_section(&bomb, 3, 4)),
        (Some(NONE), Some(c), Some(c)),
        "zstd section inflating to 80 MiB (over the 64 MiB decompression bound)",
    ));

    for version in [3i16, 8, 9, 11] {
        for (label, records, (plain, compact, gzip), what) in &sets {
            for (topic, expect) in [
                (TOPIC_PLAIN, plain),
                (TOPIC_COMPACT, compact),
                (TOPIC_GZIP, gzip),
            ] {
                // The plain topic gets every set, the others only what their checks look at.
                let interesting = topic == TOPIC_PLAIN || plain != compact || plain != gzip;
                if !interesting {
                    continue;
                }
                let cid = g.cid();
                let body = body_bytes(&produce_request(topic, records.clone()), version);
                let frame = [header(ApiKey::Produce, version, cid), body].concat();
                assert!(decodes(&frame), "produce {label} v{version}");
                let short = topic.trim_start_matches("corpus-");
                g.push_produce(
                    "Produce-records",
                    &format!("v{version}-{short}-{label}"),
                    prefixed(&frame),
                    vec![cid],
                    *expect,
                    format!("Produce v{version} to {topic}: {what}"),
                );
            }
        }
        // The records field's own length prefix lies (larger than the bytes left).
        let cid = g.cid();
        let mut b = body_bytes(&produce_request(TOPIC_PLAIN, Some(good.clone())), version);
        let batch_at = find_subslice(&b, &good).expect("batch inside the body");
        if version >= 9 {
            // Compact length: uvarint of len + 1, 1 or 2 bytes here.
            let width = if good.len() + 1 < 128 { 1 } else { 2 };
            b.splice(batch_at - width..batch_at, [0xff, 0xff, 0x03]);
        } else {
            b.splice(batch_at - 4..batch_at, 0x00ff_ffffi32.to_be_bytes());
        }
        let frame = [header(ApiKey::Produce, version, cid), b].concat();
        assert!(!decodes(&frame), "records length lie v{version}");
        g.push(
            "Produce-records",
            &format!("v{version}-records-length-lies"),
            prefixed(&frame),
            Vec::new(),
            format!("Produce v{version}: records field claims more bytes than the request holds"),
        );
    }
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Streams that are wrong before any request: size prefixes out of bounds, garbage, unknown
/// api keys, apis the broker does not serve, versions out of range.
fn stream_cases(g: &mut Gen) {
    let dir = "Stream";
    for (label, prefix, what) in [
        ("prefix-negative", -1i32, "size prefix -1"),
        ("prefix-min", i32::MIN, "size prefix i32::MIN"),
        (
            "prefix-over-max",
            0x7fff_ffff,
            "size prefix 2^31-1 (over socket.request.max.bytes)",
        ),
        ("prefix-zero", 0, "size prefix 0"),
        (
            "prefix-7",
            7,
            "size prefix 7 (shorter than a request header)",
        ),
    ] {
        let mut b = prefix.to_be_bytes().to_vec();
        b.extend_from_slice(&[0; 7]);
        g.push(dir, label, b, Vec::new(), what.to_string());
    }
    // A frame claimed large (past the read buffer) that never arrives whole.
    let mut b = (50i32 << 20).to_be_bytes().to_vec();
    b.extend_from_slice(&header(ApiKey::Metadata, 1, 1));
    b.extend(std::iter::repeat_n(0u8, 2_000));
    g.push(
        dir,
        "claims-50MiB",
        b,
        Vec::new(),
        "size prefix 50 MiB (past the read buffer), 2 kB sent, then EOF".into(),
    );
    // Just a partial size prefix.
    g.push(
        dir,
        "prefix-cut",
        vec![0, 0],
        Vec::new(),
        "two bytes of a size prefix, then EOF".into(),
    );
    for i in 0..8 {
        let junk = g.random(16 + i * 29);
        g.push(
            dir,
            &format!("garbage-{i}"),
            junk,
            Vec::new(),
            "random bytes, no framing".into(),
        );
    }
    // Api keys: unknown, defined by Kafka but not served, and a served one out of range.
    for (label, key, version, what) in [
        ("unknown-api-key", 999i16, 0i16, "api key 999"),
        ("negative-api-key", -3, 0, "api key -3"),
        (
            "unserved-sasl-handshake",
            17,
            1,
            "SaslHandshake (not served)",
        ),
        ("unserved-leader-and-isr", 4, 0, "LeaderAndIsr (not served)"),
        ("metadata-v99", 3, 99, "Metadata v99 (out of range: closed)"),
    ] {
        let cid = g.cid();
        let mut w = CodecWriter::new();
        RequestHeader {
            request_api_key: key,
            request_api_version: version,
            correlation_id: cid,
            client_id: Some("corpus".into()),
        }
        .encode(&mut w);
        let mut frame = w.into_vec();
        frame.extend_from_slice(&[0, 0, 0, 0]);
        g.push(dir, label, prefixed(&frame), Vec::new(), what.to_string());
    }
    // ApiVersions past our range is answered (UNSUPPORTED_VERSION in v0), whatever follows.
    let cid = g.cid();
    let mut frame = header(ApiKey::ApiVersions, 99, cid);
    frame.extend_from_slice(&[0x80; 9]);
    g.push(
        dir,
        "api-versions-v99",
        prefixed(&frame),
        vec![cid],
        "ApiVersions v99 with a garbage body: answered in v0 (KIP-511)".into(),
    );
    // Client id lengths that lie.
    for (label, len, what) in [
        (
            "client-id-huge",
            0x7fffi16,
            "client id length 32767 in a short frame",
        ),
        ("client-id-negative", -7, "client id length -7"),
    ] {
        let mut frame = Vec::new();
        frame.extend_from_slice(&3i16.to_be_bytes());
        frame.extend_from_slice(&1i16.to_be_bytes());
        frame.extend_from_slice(&g.cid().to_be_bytes());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(b"abc");
        g.push(dir, label, prefixed(&frame), Vec::new(), what.to_string());
    }
}

// ---------------------------------------------------------------------------------------------
// Writing the corpus
// ---------------------------------------------------------------------------------------------

fn write_corpus(cases: &[Case]) {
    let root = corpus_root();
    if root.exists() {
        std::fs::remove_dir_all(&root).expect("clear the corpus directory");
    }
    let mut manifest = String::from(
        "# Malformed-request corpus: written by tests/malformed_corpus.rs (regenerate_corpus),\n\
         # replayed against a live broker by the same file. One line per case:\n\
         # file <TAB> answers (response correlation ids in order, or none) <TAB> produce error\n\
         # code on every partition (or -) <TAB> what the case is.\n",
    );
    for c in cases {
        let path = root.join(&c.file);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create corpus dir");
        std::fs::write(&path, &c.bytes).expect("write case");
        manifest.push_str(&c.manifest_line());
        manifest.push('\n');
    }
    std::fs::write(root.join(MANIFEST), manifest).expect("write manifest");
}

/// Regenerates the committed corpus from the codec (run after a codec change; commit the
/// result). Ignored by default: the corpus in the repository is what the replay tests.
#[test]
#[ignore]
fn regenerate_corpus() {
    let cases = generate();
    write_corpus(&cases);
    println!("wrote {} cases under {CORPUS_DIR}", cases.len());
}

/// The manifest and the files agree: every listed file exists, every file is listed, ids are
/// unique. (No broker needed.)
#[test]
fn corpus_is_consistent() {
    let cases = load_corpus();
    assert!(cases.len() > 500, "only {} cases", cases.len());
    let mut listed: Vec<String> = cases.iter().map(|c| c.file.clone()).collect();
    listed.sort();
    let mut on_disk = Vec::new();
    let root = corpus_root();
    for dir in std::fs::read_dir(&root).expect("corpus dir") {
        let dir = dir.expect("entry").path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).expect("case dir") {
                let f = f.expect("entry").path();
                let rel = f.strip_prefix(&root).expect("under root");
                on_disk.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    on_disk.sort();
    assert_eq!(listed, on_disk, "manifest and files differ");
    let mut ids: Vec<i32> = cases.iter().flat_map(|c| c.answers.clone()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "correlation ids repeat across cases");
    // Every kind of damage is there.
    for needle in [
        "-cut",
        "-prefix-long",
        "-huge-at",
        "-negative-at",
        "overlong-varint",
        "unknown-tags",
        "crc-payload",
        "length-plus-1",
        "garbage",
        "pipelined",
    ] {
        assert!(
            cases.iter().any(|c| c.file.contains(needle)),
            "no case named *{needle}*"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Replay against a live broker
// ---------------------------------------------------------------------------------------------

/// What the broker did with one case.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    answers: Vec<i32>,
    produce_codes: Vec<i16>,
}

/// Writes a case on a fresh connection, half-closes, reads every response until the broker
/// closes the connection.
fn replay(addr: SocketAddr, case: &Case) -> Result<Outcome, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(CASE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(CASE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    // The broker may close before reading everything (that is the point): ignore write errors.
    let _ = s.write_all(&case.bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut data = Vec::new();
    let deadline = Instant::now() + CASE_TIMEOUT;
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            // A reset after the broker closed on unread input is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => {
                return Err(format!(
                    "no end within {CASE_TIMEOUT:?} ({e}); got {} bytes",
                    data.len()
                ))
            }
        }
        if Instant::now() > deadline {
            return Err(format!("still open after {CASE_TIMEOUT:?}"));
        }
    }
    let mut answers = Vec::new();
    let mut produce_codes = Vec::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        if rest.len() < 8 {
            return Err(format!("{} stray bytes after the responses", rest.len()));
        }
        let len = i32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        if len < 4 || rest.len() < 4 + len {
            return Err(format!(
                "response frame of {len} bytes, {} present",
                rest.len() - 4
            ));
        }
        let frame = &rest[4..4 + len];
        answers.push(i32::from_be_bytes(frame[..4].try_into().unwrap()));
        if case.produce.is_some() {
            produce_codes.extend(produce_error_codes(case, frame)?);
        }
        rest = &rest[4 + len..];
    }
    Ok(Outcome {
        answers,
        produce_codes,
    })
}

/// Partition error codes of a Produce response, decoded with the `kafka-protocol` crate (an
/// independent decoder). The request's version is read back from the case's own header.
fn produce_error_codes(case: &Case, frame: &[u8]) -> Result<Vec<i16>, String> {
    use kafka_protocol::messages::ProduceResponse;
    use kafka_protocol::protocol::Decodable;
    let version = i16::from_be_bytes([case.bytes[6], case.bytes[7]]);
    let mut body = Bytes::copy_from_slice(&frame[4..]);
    if version >= 9 {
        // Response header v1: an (empty) tagged-field section after the correlation id.
        let _ = bytes::Buf::get_u8(&mut body);
    }
    let resp = ProduceResponse::decode(&mut body, version)
        .map_err(|e| format!("Produce v{version} response does not decode: {e}"))?;
    Ok(resp
        .responses
        .iter()
        .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
        .collect())
}

fn check(case: &Case, got: &Outcome) -> Result<(), String> {
    if got.answers != case.answers {
        return Err(format!(
            "answers {:?}, expected {:?}",
            got.answers, case.answers
        ));
    }
    if let Some(code) = case.produce {
        if got.produce_codes.is_empty() || got.produce_codes.iter().any(|c| *c != code) {
            return Err(format!(
                "produce error codes {:?}, expected all {code}",
                got.produce_codes
            ));
        }
    }
    Ok(())
}

/// CreateTopics v5 with configs, through the codec, on a raw connection; asserts success.
fn create_corpus_topic(addr: SocketAddr, name: &str, configs: &[(&str, &str)]) {
    let body = RequestBody::from(CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: name.into(),
            num_partitions: 1,
            replication_factor: 1,
            configs: configs
                .iter()
                .map(|(k, v)| CreatableTopicConfig {
                    name: (*k).into(),
                    value: Some((*v).into()),
                })
                .collect(),
            ..Default::default()
        }],
        timeout_ms: 10_000,
        validate_only: false,
    });
    let mut w = CodecWriter::new();
    odradek::protocol::encode_request(
        &mut w,
        &RequestHeader {
            request_api_key: ApiKey::CreateTopics as i16,
            request_api_version: 5,
            correlation_id: 1,
            client_id: Some("corpus-setup".into()),
        },
        &body,
    );
    let mut s = raw_connect(addr);
    s.write_all(&prefixed(&w.into_vec()))
        .expect("send CreateTopics");
    let resp = read_frame(&mut s).expect("CreateTopics response");
    let (_, body) = odradek::protocol::decode_response(Bytes::from(resp), ApiKey::CreateTopics, 5)
        .expect("decode CreateTopics response");
    let odradek::protocol::ResponseBody::CreateTopics(r) = body else {
        panic!("not a CreateTopics response");
    };
    assert_eq!(r.topics.len(), 1);
    assert_eq!(
        r.topics[0].error_code, 0,
        "create {name}: {:?}",
        r.topics[0]
    );
}

/// The well-behaved client: one producer and one consumer, connected for the whole replay.
struct Health {
    producer: TestProducer,
    consumer: rdkafka::consumer::BaseConsumer,
    sent: usize,
    read: usize,
    rounds: usize,
    slowest: Duration,
}

impl Health {
    fn new(bootstrap: &str) -> Health {
        let producer = producer(bootstrap, &[("linger.ms", "0")]);
        let consumer = consumer(bootstrap, &[("fetch.wait.max.ms", "50")]);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC_HEALTH, 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&tpl).expect("assign");
        Health {
            producer,
            consumer,
            sent: 0,
            read: 0,
            rounds: 0,
            slowest: Duration::ZERO,
        }
    }

    /// Produces 5 records and reads them back; panics if that takes over HEALTH_ROUND_MAX.
    fn round(&mut self, broker: &Broker) {
        let start = Instant::now();
        let recs: Vec<Rec> = (0..5)
            .map(|i| Rec::value(format!("health-{}", self.sent + i)))
            .collect();
        produce_all(&self.producer, TOPIC_HEALTH, &recs, HEALTH_ROUND_MAX);
        self.sent += recs.len();
        while self.read < self.sent {
            if start.elapsed() > HEALTH_ROUND_MAX {
                broker.fail(&format!(
                    "well-behaved consumer read {} of {} records within {HEALTH_ROUND_MAX:?}",
                    self.read, self.sent
                ));
            }
            if let Some(m) = self.consumer.poll(Duration::from_millis(100)) {
                let m = m.unwrap_or_else(|e| broker.fail(&format!("consumer error: {e}")));
                let got = owned_message(&m);
                let want = format!("health-{}", self.read);
                assert_eq!(got.offset, self.read as i64, "health record offset");
                assert_eq!(
                    got.value.as_deref(),
                    Some(want.as_bytes()),
                    "health record value"
                );
                self.read += 1;
            }
        }
        let took = start.elapsed();
        assert!(took <= HEALTH_ROUND_MAX, "health round took {took:?}");
        self.slowest = self.slowest.max(took);
        self.rounds += 1;
    }
}

#[test]
fn malformed_corpus_against_live_broker() {
    let cases = load_corpus();
    let mut broker = BrokerOptions::new()
        .cores(test_cores())
        .set("auto.create.topics.enable", "false")
        .start();
    let addr = broker.addr();
    create_corpus_topic(addr, TOPIC_PLAIN, &[]);
    create_corpus_topic(addr, TOPIC_COMPACT, &[("cleanup.policy", "compact")]);
    create_corpus_topic(addr, TOPIC_GZIP, &[("compression.type", "gzip")]);
    create_corpus_topic(addr, TOPIC_HEALTH, &[]);
    let mut health = Health::new(&broker.bootstrap());
    health.round(&broker);

    let started = Instant::now();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let sent = Arc::new(AtomicUsize::new(0));
    for chunk in cases.chunks(BATCH) {
        // Several connections at once: each thread takes the next case of the chunk.
        let next = Arc::new(AtomicUsize::new(0));
        let chunk = Arc::new(chunk.to_vec());
        let threads: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let (next, chunk, failures, sent) =
                    (next.clone(), chunk.clone(), failures.clone(), sent.clone());
                std::thread::spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = chunk.get(i) else {
                        return;
                    };
                    sent.fetch_add(1, Ordering::SeqCst);
                    let verdict = replay(addr, case).and_then(|got| check(case, &got));
                    if let Err(e) = verdict {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{}: {e} -- {}", case.file, case.what));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("replay thread");
        }
        if !broker.is_running() {
            broker.fail(&format!(
                "broker died during the corpus, {} cases in",
                sent.load(Ordering::SeqCst)
            ));
        }
        health.round(&broker);
    }
    let sent = sent.load(Ordering::SeqCst);
    println!(
        "malformed corpus: {sent} cases sent over {CONNECTIONS} connections in {:?}; \
         {} health rounds, slowest {:?}",
        started.elapsed(),
        health.rounds,
        health.slowest
    );
    assert_eq!(sent, cases.len());
    let failures = failures.lock().unwrap().clone();
    if !failures.is_empty() {
        broker.fail(&format!(
            "{} of {sent} cases did not end as the manifest says; first 30:\n{}",
            failures.len(),
            failures[..failures.len().min(30)].join("\n")
        ));
    }
    drop(health);
    broker.stop();
    let log = std::fs::read_to_string(broker.log_path()).expect("broker log");
    assert!(
        !log.contains("panicked") && !log.contains("panic"),
        "the broker log mentions a panic:\n{}",
        broker.log_tail(60)
    );
}
