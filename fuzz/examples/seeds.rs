//! Writes the committed seed corpora under `fuzz/corpus/<target>/`: a few well-formed inputs per
//! target so libFuzzer starts from valid frames, batches and files instead of rediscovering
//! their layout (CRCs, length prefixes) from nothing. Deterministic: the same code writes the
//! same files, named by their content.
//!
//! Run from `fuzz/`: `cargo run --example seeds` (stable toolchain, no fuzzing flags). It clears
//! the three seed directories first, so files libFuzzer once added there do not linger.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use odradek::io::state_file::encode_state;
use odradek::protocol::api::SUPPORTED;
use odradek::protocol::compression::compress;
use odradek::protocol::consumer_protocol::{encode_assignment, encode_subscription};
use odradek::protocol::messages::*;
use odradek::protocol::record_batch::{empty_batch, set_base_offset, set_partition_leader_epoch};
use odradek::protocol::records::{
    assemble_batch, encode_batch, encode_batch_of, put_record, BatchFields, EndTxnMarker, KeyValue,
};
use odradek::protocol::sample::{Gen, Sample};
use odradek::protocol::{encode_request, ApiKey, RequestBody, RequestHeader, Writer};
use odradek::storage::index::SegmentIndexes;
use odradek::storage::producer_state::{BatchMeta, ProducerStateMachine};
use odradek::storage::txn_index::{self, AbortedTxn};

/// (request, response) body encoders by api key, for sampled values of every message type.
macro_rules! sampled {
    ($($variant:ident($req:ty, $resp:ty)),* $(,)?) => {
        /// A sampled request and response body of `key` at `version`, encoded.
        fn sample_bodies(key: ApiKey, version: i16, g: &mut Gen) -> Option<(RequestBody, Vec<u8>)> {
            use odradek::protocol::codec::Message;
            match key {
                $(ApiKey::$variant => {
                    let req = <$req as Sample>::sample(g, version, false);
                    let resp = <$resp as Sample>::sample(g, version, false);
                    let mut w = Writer::new();
                    resp.encode(&mut w, version);
                    Some((RequestBody::from(req), w.into_vec()))
                })*
                _ => None,
            }
        }
    };
}

sampled! {
    Produce(ProduceRequest, ProduceResponse),
    Fetch(FetchRequest, FetchResponse),
    ListOffsets(ListOffsetsRequest, ListOffsetsResponse),
    Metadata(MetadataRequest, MetadataResponse),
    FindCoordinator(FindCoordinatorRequest, FindCoordinatorResponse),
    ApiVersions(ApiVersionsRequest, ApiVersionsResponse),
    CreateTopics(CreateTopicsRequest, CreateTopicsResponse),
    DeleteTopics(DeleteTopicsRequest, DeleteTopicsResponse),
    InitProducerId(InitProducerIdRequest, InitProducerIdResponse),
    AddPartitionsToTxn(AddPartitionsToTxnRequest, AddPartitionsToTxnResponse),
    AddOffsetsToTxn(AddOffsetsToTxnRequest, AddOffsetsToTxnResponse),
    EndTxn(EndTxnRequest, EndTxnResponse),
    WriteTxnMarkers(WriteTxnMarkersRequest, WriteTxnMarkersResponse),
    TxnOffsetCommit(TxnOffsetCommitRequest, TxnOffsetCommitResponse),
    DescribeTransactions(DescribeTransactionsRequest, DescribeTransactionsResponse),
    ListTransactions(ListTransactionsRequest, ListTransactionsResponse),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse),
    CreatePartitions(CreatePartitionsRequest, CreatePartitionsResponse),
    DescribeCluster(DescribeClusterRequest, DescribeClusterResponse),
    JoinGroup(JoinGroupRequest, JoinGroupResponse),
    SyncGroup(SyncGroupRequest, SyncGroupResponse),
    Heartbeat(HeartbeatRequest, HeartbeatResponse),
    LeaveGroup(LeaveGroupRequest, LeaveGroupResponse),
    OffsetCommit(OffsetCommitRequest, OffsetCommitResponse),
    OffsetFetch(OffsetFetchRequest, OffsetFetchResponse),
    OffsetDelete(OffsetDeleteRequest, OffsetDeleteResponse),
    ListGroups(ListGroupsRequest, ListGroupsResponse),
    DescribeGroups(DescribeGroupsRequest, DescribeGroupsResponse),
    DeleteGroups(DeleteGroupsRequest, DeleteGroupsResponse),
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse),
    ConsumerGroupDescribe(ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse),
    DescribeConfigs(DescribeConfigsRequest, DescribeConfigsResponse),
    AlterConfigs(AlterConfigsRequest, AlterConfigsResponse),
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse),
    DeleteRecords(DeleteRecordsRequest, DeleteRecordsResponse),
    DescribeLogDirs(DescribeLogDirsRequest, DescribeLogDirsResponse),
    DescribeTopicPartitions(DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse),
}

/// Largest request or response body kept as a seed.
const SEED_BYTES_MAX: usize = 1024;

struct Out {
    dir: PathBuf,
    count: usize,
}

impl Out {
    fn new(root: &Path, target: &str) -> std::io::Result<Out> {
        let dir = root.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Out { dir, count: 0 })
    }

    /// Writes `bytes` under a name derived from `label` and a hash of the content.
    fn put(&mut self, label: &str, bytes: &[u8]) -> std::io::Result<()> {
        let h = xxhash(bytes);
        std::fs::write(self.dir.join(format!("{label}-{h:016x}")), bytes)?;
        self.count += 1;
        Ok(())
    }
}

/// FNV-1a: only names the files, so equal seeds collapse into one.
fn xxhash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut request = Out::new(&root, "request")?;
    let mut record = Out::new(&root, "record_batch")?;
    let mut segment = Out::new(&root, "segment_recovery")?;
    request_seeds(&mut request)?;
    batch_seeds(&mut record)?;
    segment_seeds(&mut segment)?;
    for o in [&request, &record, &segment] {
        println!("{}: {} seeds", o.dir.display(), o.count);
    }
    Ok(())
}

/// Per api: its oldest, first flexible and newest versions, in each of the target's modes.
fn request_seeds(out: &mut Out) -> std::io::Result<()> {
    let mut g = Gen::new(0x0dad_beef);
    for (idx, &(key, lo, hi)) in SUPPORTED.iter().enumerate() {
        let mut versions = vec![lo, key.flexible_min(), hi];
        versions.retain(|v| (lo..=hi).contains(v));
        versions.dedup();
        for version in versions {
            // Small seeds: resample a few times rather than keep the (rare) multi-KiB bytes
            // fields the sampler makes; libFuzzer grows inputs by itself.
            let mut picked = None;
            for _ in 0..16 {
                let Some((body, response)) = sample_bodies(key, version, &mut g) else {
                    break;
                };
                let mut w = Writer::new();
                body.encode(&mut w, version);
                let body_bytes = w.into_vec();
                let small = body_bytes.len() <= SEED_BYTES_MAX && response.len() <= SEED_BYTES_MAX;
                if small || picked.is_none() {
                    picked = Some((body, body_bytes, response));
                }
                if small {
                    break;
                }
            }
            let Some((body, body_bytes, response)) = picked else {
                continue;
            };
            let header = RequestHeader {
                request_api_key: key as i16,
                request_api_version: version,
                correlation_id: 1,
                client_id: Some("seed".into()),
            };
            let mut w = Writer::new();
            encode_request(&mut w, &header, &body);
            let frame = w.into_vec();
            let sel = [idx as u8, (version - lo) as u8];
            let name = format!("{key:?}-v{version}");
            out.put(&format!("frame-{name}"), &[&[0u8][..], &frame].concat())?;
            out.put(
                &format!("body-{name}"),
                &[&[1u8][..], &sel, &body_bytes].concat(),
            )?;
            out.put(
                &format!("resp-{name}"),
                &[&[2u8][..], &sel, &response].concat(),
            )?;
            // Two pipelined frames, delivered 5, 36 and 332 bytes at a time, 1 MiB limit.
            let mut stream = vec![3u8, 4, 5, 1, 17];
            for _ in 0..2 {
                stream.extend_from_slice(&(frame.len() as i32).to_be_bytes());
                stream.extend_from_slice(&frame);
            }
            out.put(&format!("stream-{name}"), &stream)?;
        }
    }
    // Consumer-protocol payloads inside JoinGroup / SyncGroup.
    let join = JoinGroupRequest {
        group_id: "g".into(),
        session_timeout_ms: 10_000,
        member_id: String::new(),
        protocol_type: "consumer".into(),
        protocols: vec![JoinGroupRequestProtocol {
            name: "range".into(),
            metadata: encode_subscription(&["a".into(), "b".into()]),
        }],
        ..Default::default()
    };
    let mut assignment = BTreeMap::new();
    assignment.insert("a".to_string(), vec![0, 2]);
    let sync = SyncGroupRequest {
        group_id: "g".into(),
        member_id: "m".into(),
        assignments: vec![SyncGroupRequestAssignment {
            member_id: "m".into(),
            assignment: encode_assignment(&assignment),
        }],
        ..Default::default()
    };
    for (body, key, version) in [
        (RequestBody::from(join), ApiKey::JoinGroup, 5),
        (RequestBody::from(sync), ApiKey::SyncGroup, 3),
    ] {
        let header = RequestHeader {
            request_api_key: key as i16,
            request_api_version: version,
            correlation_id: 2,
            client_id: None,
        };
        let mut w = Writer::new();
        encode_request(&mut w, &header, &body);
        out.put(
            &format!("frame-{key:?}-consumer-protocol"),
            &[&[0u8][..], &w.into_vec()].concat(),
        )?;
    }
    Ok(())
}

fn records(n: usize, keyed: bool) -> Vec<KeyValue> {
    (0..n)
        .map(|i| KeyValue {
            key: (keyed || i % 2 == 0).then(|| format!("key-{}", i % 3).into_bytes()),
            value: (i % 4 != 3).then(|| format!("value-{i}").into_bytes()),
        })
        .collect()
}

/// A batch of `n` records whose section is compressed with `codec`.
fn compressed_batch(n: usize, codec: u8) -> Vec<u8> {
    let mut section = Vec::new();
    let mut scratch = Vec::new();
    for (i, r) in records(n, true).iter().enumerate() {
        put_record(
            &mut section,
            &mut scratch,
            i as i64,
            i as i64,
            r.key.as_deref(),
            r.value.as_deref(),
            &[("h", Some(b"x"))],
        );
    }
    let body = compress(codec, &section).expect("in-memory compression");
    assemble_batch(
        &body,
        BatchFields {
            attributes: i16::from(codec),
            records: n,
            base_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_000_000 + n as i64 - 1,
            producer_id: 42,
            producer_epoch: 1,
            base_sequence: 0,
        },
    )
}

fn batch_seeds(out: &mut Out) -> std::io::Result<()> {
    for codec in 0..=4u8 {
        let b = compressed_batch(6, codec);
        out.put(&format!("codec{codec}"), &[&[0u8][..], &b].concat())?;
        // The same with the repair flags set (length, codec bits, CRC), and as a raw codec input.
        let flags = 0x01 | 0x02 | (codec << 2) | 0x20;
        out.put(
            &format!("codec{codec}-repair"),
            &[&[flags][..], &b].concat(),
        )?;
        let section = compress(codec, b"compressed records section").expect("compression");
        out.put(
            &format!("raw-codec{codec}"),
            &[&[codec][..], &section].concat(),
        )?;
    }
    out.put(
        "plain",
        &[
            &[0x40u8][..],
            &encode_batch(&records(3, false), 1_700_000_000_000),
        ]
        .concat(),
    )?;
    out.put(
        "transactional",
        &[
            &[0x80u8][..],
            &encode_batch_of(&records(2, true), 5, Some((7, 0))),
        ]
        .concat(),
    )?;
    let marker = EndTxnMarker {
        commit: false,
        coordinator_epoch: 3,
    }
    .encode_batch(7, 0, 9);
    out.put("abort-marker", &[&[0u8][..], &marker].concat())?;
    out.put("empty", &[&[0u8][..], &empty_batch(10, 4, 2)].concat())?;
    // Two batches as one record set (the produce path refuses it, the splitter must not).
    let two = [
        encode_batch(&records(1, true), 0),
        encode_batch(&records(2, true), 0),
    ]
    .concat();
    out.put("two-batches", &[&[0u8][..], &two].concat())?;
    // Xerial-framed snappy, as the Java client writes it.
    let mut xerial = vec![
        0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
    ];
    let block = compress(2, b"xerial block").expect("snappy");
    xerial.extend_from_slice(&(block.len() as u32).to_be_bytes());
    xerial.extend_from_slice(&block);
    out.put("raw-xerial", &[&[2u8][..], &xerial].concat())?;
    Ok(())
}

/// A segment image: batches at contiguous offsets from `base`, leader epochs not decreasing.
fn segment_image(base: i64) -> (Vec<u8>, Vec<(i64, i32)>) {
    let mut batches = vec![
        encode_batch(&records(3, true), 1_700_000_000_000),
        encode_batch_of(&records(2, true), 1_700_000_000_100, Some((7, 0))),
        compressed_batch(4, 1),
        EndTxnMarker {
            commit: false,
            coordinator_epoch: 1,
        }
        .encode_batch(7, 0, 1_700_000_000_200),
        encode_batch_of(&records(1, true), 1_700_000_000_300, Some((8, 2))),
        EndTxnMarker {
            commit: true,
            coordinator_epoch: 1,
        }
        .encode_batch(8, 2, 1_700_000_000_400),
        compressed_batch(2, 4),
    ];
    let mut image = Vec::new();
    let mut next = base;
    let mut spans = Vec::new();
    for (i, b) in batches.iter_mut().enumerate() {
        set_base_offset(b, next).expect("header");
        let epoch = (i / 3) as i32;
        set_partition_leader_epoch(b, epoch).expect("header");
        let lod = i32::from_be_bytes(b[23..27].try_into().expect("4 bytes"));
        spans.push((next, lod));
        next += i64::from(lod) + 1;
        image.extend_from_slice(b);
    }
    (image, spans)
}

fn segment_seeds(out: &mut Out) -> std::io::Result<()> {
    // which = 0 (scan); mode 0: expected offset 0, any epoch, no repair; mode 0x30: repaired.
    let (image, _) = segment_image(0);
    out.put("scan", &[&[0u8, 0x00][..], &image].concat())?;
    out.put("scan-repair", &[&[0u8, 0x30][..], &image].concat())?;
    let mut torn = image.clone();
    torn.truncate(image.len() - 20);
    out.put("scan-torn", &[&[1u8, 0x00][..], &torn].concat())?;
    let mut padded = image.clone();
    padded.resize(image.len().div_ceil(4096) * 4096, 0);
    out.put("scan-padded", &[&[2u8, 0x00][..], &padded].concat())?;
    let mut flipped = image.clone();
    flipped[200] ^= 0x01;
    out.put("scan-crc", &[&[3u8, 0x00][..], &flipped].concat())?;
    let (at_1000, _) = segment_image(1_000);
    out.put("scan-1000", &[&[0u8, 0x01][..], &at_1000].concat())?;

    // Indexes built the way recovery builds them.
    let mut ix = SegmentIndexes::new();
    let mut pos = 0u64;
    for i in 0..40u32 {
        ix.on_batch(64, i * 3 + 2, pos, 100, 1_700_000_000_000 + i64::from(i));
        pos += 100;
    }
    ix.seal_time_entry();
    out.put(
        "offset-index",
        &[&[4u8, 20][..], &ix.offsets.encode()].concat(),
    )?;
    out.put("time-index", &[&[4u8, 0][..], &ix.times.encode()].concat())?;

    // A producer snapshot with an open transaction, bare and in a state file.
    let mut p = ProducerStateMachine::new();
    for (i, (pid, txn)) in [(7i64, false), (8, true), (7, false)].iter().enumerate() {
        let off = i as i64 * 10;
        p.apply(
            *pid,
            0,
            BatchMeta {
                first_seq: i as i32,
                last_seq: i as i32,
                base_offset: off,
                last_offset: off,
            },
            1_700_000_000_000 + off,
            *txn,
            None,
        );
    }
    let snapshot = p.encode();
    out.put("producer-snapshot", &[&[5u8][..], &snapshot].concat())?;
    out.put(
        "state-file",
        &[&[7u8][..], &encode_state(&snapshot)].concat(),
    )?;

    // An aborted-transaction index for a segment at 100..(100 + 1 + 2 * 1000).
    let entries = [
        AbortedTxn {
            producer_id: 7,
            first_offset: 90,
            last_offset: 120,
            last_stable_offset: 121,
        },
        AbortedTxn {
            producer_id: 9,
            first_offset: 100,
            last_offset: 150,
            last_stable_offset: 140,
        },
    ];
    out.put(
        "txn-index",
        &[&[6u8, 1, 2][..], &txn_index::encode(&entries)].concat(),
    )?;
    Ok(())
}
