//! Bad input over raw TCP against a real `odradek serve`.
//!
//! Each test sends hand-encoded Kafka frames (encoders below, checked against the
//! `kafka-protocol` crate by `encoders_agree_with_kafka_protocol_oracle`), asserts how the broker
//! reacts (closed connection, or a per-partition / per-topic Kafka error code), and then asserts
//! the broker still serves a well-behaved client (ApiVersions v0 on a fresh connection and an
//! rdkafka metadata request).
//!
//! Wire versions used: request header v1, Produce v3, CreateTopics v2, Metadata v1 (all
//! non-flexible), RecordBatch v2.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use common::small_disk::{is_root, SmallDisk};
use common::*;
use rdkafka::topic_partition_list::Offset;

const API_PRODUCE: i16 = 0;
const API_METADATA: i16 = 3;
const API_CREATE_TOPICS: i16 = 19;

const NONE: i16 = 0;
const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_PARTITIONS: i16 = 37;

/// How long the broker may take to close a connection after bad input.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Encoders
// ---------------------------------------------------------------------------------------------

/// A RecordBatch v2, uncompressed, non-transactional, no producer id:
///
/// ```text
/// baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 = 2 | crc u32
/// | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64
/// | producerId i64 | producerEpoch i16 | baseSequence i32 | records: count i32, record*
///                                        crc32c covers attributes .. end ^
/// record: length varint | attributes i8 | timestampDelta varlong | offsetDelta varint
///         | keyLength varint, key | valueLength varint, value | headers count varint
/// ```
/// A record's key and value (either may be null).
type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// A produce request's data for one topic: its name, then (partition, record batch) pairs.
type TopicData<'a> = (&'a str, Vec<(i32, Vec<u8>)>);

fn record_batch(records: &[KeyValue], base_timestamp_ms: i64) -> Vec<u8> {
    assert!(!records.is_empty());
    let mut body = Writer::new(); // attributes .. end
    body.i16(0) // attributes: no compression, CreateTime
        .i32(records.len() as i32 - 1)
        .i64(base_timestamp_ms)
        .i64(base_timestamp_ms + records.len() as i64 - 1)
        .i64(-1) // producerId
        .i16(-1) // producerEpoch
        .i32(-1) // baseSequence
        .i32(records.len() as i32);
    for (i, (key, value)) in records.iter().enumerate() {
        let mut r = Writer::new();
        r.i8(0).varlong(i as i64).varint(i as i32);
        match key {
            Some(k) => r.varint(k.len() as i32).raw(k),
            None => r.varint(-1),
        };
        match value {
            Some(v) => r.varint(v.len() as i32).raw(v),
            None => r.varint(-1),
        };
        r.varint(0);
        body.varint(r.len() as i32).raw(&r.buf);
    }
    let crc = crc32c::crc32c(&body.buf);
    let mut batch = Writer::new();
    batch
        .i64(0) // baseOffset
        .i32((4 + 1 + 4 + body.len()) as i32) // batchLength: from partitionLeaderEpoch on
        .i32(-1) // partitionLeaderEpoch
        .i8(2) // magic
        .u32(crc)
        .raw(&body.buf);
    batch.buf
}

/// Byte offset of the CRC field inside a batch, and of the first byte the CRC covers.
const BATCH_CRC_AT: usize = 17;
const BATCH_ATTRIBUTES_AT: usize = 21;

/// Produce v3 body: transactional_id, acks, timeout_ms, [topic [partition, records]].
fn produce_v3_body(acks: i16, topics: &[TopicData]) -> Vec<u8> {
    let mut w = Writer::new();
    w.nullable_string(None)
        .i16(acks)
        .i32(10_000)
        .i32(topics.len() as i32);
    for (name, parts) in topics {
        w.string(name).i32(parts.len() as i32);
        for (p, records) in parts {
            w.i32(*p).bytes(records);
        }
    }
    w.buf
}

/// One partition's Produce v3 result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartitionResult {
    error: i16,
    base_offset: i64,
}

/// Produce v3 response: [topic [partition, error_code, base_offset, log_append_time_ms]],
/// throttle_time_ms. Keyed by (topic, partition).
fn decode_produce_v3(body: &[u8]) -> HashMap<(String, i32), PartitionResult> {
    let mut r = Reader::new(body);
    let mut out = HashMap::new();
    for _ in 0..r.array_len() {
        let name = r.string();
        for _ in 0..r.array_len() {
            let p = r.i32();
            let error = r.i16();
            let base_offset = r.i64();
            let _log_append_time_ms = r.i64();
            out.insert((name.clone(), p), PartitionResult { error, base_offset });
        }
    }
    let _throttle_ms = r.i32();
    assert_eq!(r.remaining(), 0, "trailing bytes in Produce v3 response");
    out
}

fn produce_v3(
    addr: std::net::SocketAddr,
    topics: &[TopicData],
) -> HashMap<(String, i32), PartitionResult> {
    let body = roundtrip(addr, API_PRODUCE, 3, &produce_v3_body(-1, topics));
    decode_produce_v3(&body)
}

/// Metadata v1 body: topics (null = all).
fn metadata_v1_body(topics: Option<&[&str]>) -> Vec<u8> {
    let mut w = Writer::new();
    match topics {
        None => w.i32(-1),
        Some(ts) => {
            w.i32(ts.len() as i32);
            for t in ts {
                w.string(t);
            }
            &mut w
        }
    };
    w.buf
}

/// Metadata v1 response, topic error codes by name.
fn metadata_v1_topic_errors(body: &[u8]) -> HashMap<String, i16> {
    let mut r = Reader::new(body);
    for _ in 0..r.array_len() {
        let (_node, _host, _port, _rack) = (r.i32(), r.string(), r.i32(), r.nullable_string());
    }
    let _controller = r.i32();
    let mut out = HashMap::new();
    for _ in 0..r.array_len() {
        let error = r.i16();
        let name = r.string();
        let _internal = r.i8();
        for _ in 0..r.array_len() {
            let (_e, _p, _leader) = (r.i16(), r.i32(), r.i32());
            for _ in 0..r.array_len() {
                r.i32();
            }
            for _ in 0..r.array_len() {
                r.i32();
            }
        }
        out.insert(name, error);
    }
    assert_eq!(r.remaining(), 0, "trailing bytes in Metadata v1 response");
    out
}

/// Produces one valid batch to `topic`/`partition` until it succeeds (a new topic may need a
/// moment before it takes writes); returns the base offset.
fn produce_until_ok(broker: &Broker, topic: &str, partition: i32, value: &[u8]) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let batch = record_batch(&[(Some(b"k"), Some(value))], 1_700_000_000_000);
        let res = produce_v3(broker.addr(), &[(topic, vec![(partition, batch)])]);
        let r = res
            .get(&(topic.to_string(), partition))
            .unwrap_or_else(|| panic!("produce response lacks {topic}/{partition}: {res:?}"));
        if r.error == NONE {
            return r.base_offset;
        }
        if Instant::now() >= deadline {
            broker.fail(&format!(
                "valid produce to {topic}/{partition} still fails with error {}",
                r.error
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn broker_with(options: BrokerOptions) -> Broker {
    options.cores("1").start()
}

fn assert_closed(broker: &Broker, stream: &mut std::net::TcpStream, what: &str) {
    match await_ending(stream, CLOSE_TIMEOUT) {
        Ending::Closed => {}
        other => broker.fail(&format!(
            "{what}: expected the broker to close the connection, got {other:?}"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Oracle check of the encoders (no broker needed)
// ---------------------------------------------------------------------------------------------

#[test]
fn encoders_agree_with_kafka_protocol_oracle() {
    use bytes::Bytes;
    use kafka_protocol::messages::{
        CreateTopicsRequest, MetadataRequest, ProduceRequest, RequestHeader,
    };
    use kafka_protocol::protocol::Decodable;
    use kafka_protocol::records::RecordBatchDecoder;

    let batch = record_batch(
        &[(Some(b"key"), Some(b"value")), (None, None)],
        1_700_000_000_000,
    );
    let set = RecordBatchDecoder::decode(&mut Bytes::from(batch.clone()))
        .expect("oracle decodes our batch");
    assert_eq!(set.version, 2);
    assert_eq!(set.records.len(), 2);
    assert_eq!(set.records[0].key.as_deref(), Some(&b"key"[..]));
    assert_eq!(set.records[0].value.as_deref(), Some(&b"value"[..]));
    assert_eq!(set.records[1].offset, 1);
    assert_eq!(set.records[1].timestamp, 1_700_000_000_001);
    assert!(set.records[1].key.is_none() && set.records[1].value.is_none());
    let mut corrupt = batch.clone();
    *corrupt.last_mut().unwrap() ^= 0xff;
    assert!(
        RecordBatchDecoder::decode(&mut Bytes::from(corrupt)).is_err(),
        "oracle accepts a bad CRC"
    );
    assert_eq!(
        crc32c::crc32c(&batch[BATCH_ATTRIBUTES_AT..]).to_be_bytes(),
        batch[BATCH_CRC_AT..BATCH_ATTRIBUTES_AT]
    );

    // Produce v3 inside a framed request with header v1.
    let frame = request_frame(
        API_PRODUCE,
        3,
        42,
        &produce_v3_body(-1, &[("t", vec![(5, batch.clone())])]),
    );
    assert_eq!(
        i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
        frame.len() - 4
    );
    let mut buf = Bytes::from(frame[4..].to_vec());
    let header = RequestHeader::decode(&mut buf, 1).unwrap();
    assert_eq!(
        (
            header.request_api_key,
            header.request_api_version,
            header.correlation_id
        ),
        (0, 3, 42)
    );
    let req = ProduceRequest::decode(&mut buf, 3).unwrap();
    assert_eq!(req.acks, -1);
    assert_eq!(req.topic_data[0].name.0.as_str(), "t");
    assert_eq!(req.topic_data[0].partition_data[0].index, 5);
    assert_eq!(
        req.topic_data[0].partition_data[0].records.as_deref(),
        Some(batch.as_slice())
    );
    assert!(buf.is_empty());

    let mut buf = Bytes::from(create_topics_body(&[("a", 3), ("b", 1)], 5000));
    let req = CreateTopicsRequest::decode(&mut buf, 2).unwrap();
    assert_eq!(req.topics.len(), 2);
    assert_eq!(
        (req.topics[0].name.0.as_str(), req.topics[0].num_partitions),
        ("a", 3)
    );
    assert_eq!(req.timeout_ms, 5000);
    assert!(buf.is_empty());

    let mut buf = Bytes::from(metadata_v1_body(Some(&["x", "y"])));
    let req = MetadataRequest::decode(&mut buf, 1).unwrap();
    let names: Vec<String> = req
        .topics
        .unwrap()
        .iter()
        .map(|t| t.name.as_ref().unwrap().0.to_string())
        .collect();
    assert_eq!(names, ["x", "y"]);
    assert!(buf.is_empty());
}

#[test]
fn decoders_agree_with_kafka_protocol_oracle() {
    use bytes::BytesMut;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{
        ApiVersionsResponse, BrokerId, CreateTopicsResponse, MetadataResponse, ProduceResponse,
        TopicName,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn encode<T: Encodable>(msg: &T, version: i16) -> Vec<u8> {
        let mut buf = BytesMut::new();
        msg.encode(&mut buf, version).expect("oracle encodes");
        buf.to_vec()
    }
    let name = |s: &str| TopicName(StrBytes::from_string(s.to_string()));

    let mut p = PartitionProduceResponse::default();
    p.index = 4;
    p.error_code = CORRUPT_MESSAGE;
    p.base_offset = 77;
    let mut t = TopicProduceResponse::default();
    t.name = name("t");
    t.partition_responses = vec![p];
    let mut resp = ProduceResponse::default();
    resp.responses = vec![t];
    resp.throttle_time_ms = 5;
    let got = decode_produce_v3(&encode(&resp, 3));
    assert_eq!(
        got[&("t".to_string(), 4)],
        PartitionResult {
            error: CORRUPT_MESSAGE,
            base_offset: 77
        }
    );

    let mut ok = CreatableTopicResult::default();
    ok.name = name("a");
    ok.error_message = None;
    let mut bad = CreatableTopicResult::default();
    bad.name = name("");
    bad.error_code = INVALID_TOPIC_EXCEPTION;
    bad.error_message = Some(StrBytes::from_string("bad".into()));
    let mut resp = CreateTopicsResponse::default();
    resp.topics = vec![ok, bad];
    let got = decode_create_topics_v2(&encode(&resp, 2));
    assert_eq!(
        got,
        vec![
            ("a".to_string(), NONE, None),
            (
                String::new(),
                INVALID_TOPIC_EXCEPTION,
                Some("bad".to_string())
            )
        ]
    );

    let mut broker = MetadataResponseBroker::default();
    broker.node_id = BrokerId(1);
    broker.host = StrBytes::from_string("127.0.0.1".into());
    broker.port = 9092;
    let mut part = MetadataResponsePartition::default();
    part.replica_nodes = vec![BrokerId(1)];
    part.isr_nodes = vec![BrokerId(1)];
    let mut topic = MetadataResponseTopic::default();
    topic.name = Some(name("m"));
    topic.error_code = UNKNOWN_TOPIC_OR_PARTITION;
    topic.partitions = vec![part.clone(), part];
    let mut resp = MetadataResponse::default();
    resp.brokers = vec![broker];
    resp.topics = vec![topic];
    let got = metadata_v1_topic_errors(&encode(&resp, 1));
    assert_eq!(
        got,
        HashMap::from([("m".to_string(), UNKNOWN_TOPIC_OR_PARTITION)])
    );

    let mut v = ApiVersion::default();
    v.api_key = 18;
    v.max_version = 3;
    let mut resp = ApiVersionsResponse::default();
    resp.api_keys = vec![v];
    assert_eq!(
        decode_api_versions_v0(&encode(&resp, 0)),
        (NONE, vec![(18, 0, 3)])
    );
}

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

#[test]
fn frame_over_socket_request_max_bytes_closes_connection() {
    let mut broker = broker_with(BrokerOptions::new().set("socket.request.max.bytes", 1_048_576));
    let mut s = raw_connect(broker.addr());
    // Claims 2 MiB; the broker must refuse on the length alone, without waiting for the body.
    write_lenient(&mut s, &(2 * 1024 * 1024i32).to_be_bytes());
    write_lenient(&mut s, &[0u8; 1024]);
    assert_closed(
        &broker,
        &mut s,
        "2 MiB frame over socket.request.max.bytes=1 MiB",
    );
    assert_serving(&mut broker);
    broker.stop();
}

#[test]
fn negative_and_zero_frame_lengths_close_connection() {
    let mut broker = broker_with(BrokerOptions::new());
    for (what, len) in [
        ("length -1", -1i32),
        ("length i32::MIN", i32::MIN),
        ("length 0", 0),
    ] {
        let mut s = raw_connect(broker.addr());
        write_lenient(&mut s, &len.to_be_bytes());
        assert_closed(&broker, &mut s, what);
        assert_serving(&mut broker);
    }
    broker.stop();
}

#[test]
fn truncated_request_then_half_close_closes_connection() {
    let mut broker = broker_with(BrokerOptions::new());
    let mut s = raw_connect(broker.addr());
    let full = request_frame(
        API_METADATA,
        1,
        1,
        &metadata_v1_body(Some(&["a-topic-name-long-enough-to-matter"; 3][..])),
    );
    let mut frame = Vec::new();
    frame.extend_from_slice(&100i32.to_be_bytes()); // says 100 bytes follow ...
    frame.extend_from_slice(&full[4..24]); // ... sends 20
    s.write_all(&frame).unwrap();
    half_close(&s);
    assert_closed(&broker, &mut s, "truncated request + half close");
    assert_serving(&mut broker);
    broker.stop();
}

#[test]
fn unknown_api_key_and_garbage_close_connection() {
    let mut broker = broker_with(BrokerOptions::new());

    let mut s = raw_connect(broker.addr());
    write_lenient(&mut s, &request_frame(9999, 0, 1, &[]));
    assert_closed(&broker, &mut s, "api key 9999");
    assert_serving(&mut broker);

    let mut s = raw_connect(broker.addr());
    write_lenient(&mut s, &request_frame(-1, 0, 1, &[1, 2, 3]));
    assert_closed(&broker, &mut s, "api key -1");
    assert_serving(&mut broker);

    // Pseudo-random bytes: api key 0xa5c3 (negative), nonsense everywhere.
    let mut x: u32 = 0xa5c3_1f07;
    let junk: Vec<u8> = (0..61)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    let mut garbage = vec![0xa5, 0xc3];
    garbage.extend_from_slice(&junk);
    let mut s = raw_connect(broker.addr());
    write_lenient(&mut s, &frame(&garbage));
    assert_closed(&broker, &mut s, "garbage frame");
    assert_serving(&mut broker);

    // A valid request after an unknown one on the same connection is never answered: the
    // connection is gone.
    let mut s = raw_connect(broker.addr());
    let mut both = request_frame(9999, 0, 1, &[]);
    both.extend_from_slice(&request_frame(18, 0, 2, &[]));
    write_lenient(&mut s, &both);
    assert_closed(&broker, &mut s, "api key 9999 followed by ApiVersions");
    assert_serving(&mut broker);
    broker.stop();
}

#[test]
fn huge_array_counts_do_not_crash_the_broker() {
    let mut broker = broker_with(BrokerOptions::new());
    // 23 bytes on the wire: size 19 | api 3 | v1 | correlation id | client id "fuzz1" | count.
    let mut tiny = Writer::new();
    tiny.i32(19)
        .i16(API_METADATA)
        .i16(1)
        .i32(1)
        .string("fuzz1")
        .i32(0x7fff_ffff);
    assert_eq!(tiny.len(), 23);
    let mut cases: Vec<(String, Vec<u8>)> =
        vec![("Metadata v1, 23 bytes, count 0x7fffffff".into(), tiny.buf)];

    let mut w = Writer::new();
    w.i32(0x7fff_ffff).bool(true);
    cases.push((
        "Metadata v4, count 0x7fffffff".into(),
        request_frame(API_METADATA, 4, 2, &w.buf),
    ));

    let mut w = Writer::new();
    w.nullable_string(None).i16(1).i32(1000).i32(0x7fff_ffff);
    cases.push((
        "Produce v3, topic count 0x7fffffff".into(),
        request_frame(API_PRODUCE, 3, 3, &w.buf),
    ));

    let mut w = Writer::new();
    w.nullable_string(None)
        .i16(1)
        .i32(1000)
        .i32(1)
        .string("t")
        .i32(1)
        .i32(0)
        .i32(0x7fff_fff0);
    cases.push((
        "Produce v3, records length 0x7ffffff0".into(),
        request_frame(API_PRODUCE, 3, 4, &w.buf),
    ));

    let mut w = Writer::new();
    w.i32(0x7fff_ffff);
    cases.push((
        "CreateTopics v2, topic count 0x7fffffff".into(),
        request_frame(API_CREATE_TOPICS, 2, 5, &w.buf),
    ));

    let mut w = Writer::new();
    w.i32(1).i16(0x7fff); // one topic whose name claims 32767 bytes
    cases.push((
        "CreateTopics v2, name length 0x7fff".into(),
        request_frame(API_CREATE_TOPICS, 2, 6, &w.buf),
    ));

    for (what, bytes) in cases {
        let mut s = raw_connect(broker.addr());
        write_lenient(&mut s, &bytes);
        // Either an error response or a closed connection is fine; hanging on to it silently
        // is not (the frame is complete, so there is nothing more to wait for).
        match await_ending(&mut s, CLOSE_TIMEOUT) {
            Ending::Closed | Ending::Answered(_) => {}
            Ending::StillOpen => {
                broker.fail(&format!("{what}: connection neither answered nor closed"))
            }
        }
        assert_serving(&mut broker);
    }
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// Produce errors, per partition
// ---------------------------------------------------------------------------------------------

#[test]
fn produce_with_corrupted_crc_gets_corrupt_message_per_partition() {
    let mut broker = broker_with(BrokerOptions::new());
    let topic = "crc-check";
    create_topic(broker.addr(), topic, 2);
    assert_eq!(produce_until_ok(&broker, topic, 0, b"first"), 0);

    // Partition 0 valid, partition 1 with one payload byte flipped after the CRC was computed.
    let good = record_batch(&[(Some(b"k"), Some(b"good"))], 1_700_000_000_000);
    let mut bad_payload = record_batch(&[(Some(b"k"), Some(b"bad payload"))], 1_700_000_000_000);
    *bad_payload.last_mut().unwrap() ^= 0x01;
    let res = produce_v3(broker.addr(), &[(topic, vec![(0, good), (1, bad_payload)])]);
    let p0 = res[&(topic.to_string(), 0)];
    let p1 = res[&(topic.to_string(), 1)];
    assert_eq!(
        (p0.error, p0.base_offset),
        (NONE, 1),
        "valid partition next to a corrupt one: {res:?}"
    );
    assert_eq!(p1.error, CORRUPT_MESSAGE, "flipped payload byte: {res:?}");

    // A flipped bit in the CRC field itself.
    let mut bad_crc = record_batch(&[(None, Some(b"x"))], 1_700_000_000_000);
    bad_crc[BATCH_CRC_AT] ^= 0x80;
    let res = produce_v3(broker.addr(), &[(topic, vec![(1, bad_crc)])]);
    assert_eq!(
        res[&(topic.to_string(), 1)].error,
        CORRUPT_MESSAGE,
        "flipped CRC bit: {res:?}"
    );

    // Nothing corrupt was stored; the valid records were.
    let got = consume_exact(
        &broker.bootstrap(),
        topic,
        &[0, 1],
        Offset::Beginning,
        2,
        Duration::from_secs(30),
    );
    let values: Vec<(i32, i64, Option<Vec<u8>>)> = got
        .iter()
        .map(|r| (r.partition, r.offset, r.value.clone()))
        .collect();
    assert_eq!(
        values,
        vec![
            (0, 0, Some(b"first".to_vec())),
            (0, 1, Some(b"good".to_vec()))
        ]
    );
    assert_serving(&mut broker);
    broker.stop();
}

#[test]
fn batch_over_message_max_bytes_gets_message_too_large() {
    let mut broker = broker_with(BrokerOptions::new().set("message.max.bytes", 10_000));
    let topic = "size-check";
    create_topic(broker.addr(), topic, 2);
    produce_until_ok(&broker, topic, 0, b"small");
    let big_value = vec![b'x'; 20_000];
    let big = record_batch(&[(None, Some(&big_value))], 1_700_000_000_000);
    let small = record_batch(&[(None, Some(b"fits"))], 1_700_000_000_000);
    let res = produce_v3(broker.addr(), &[(topic, vec![(0, big), (1, small)])]);
    assert_eq!(
        res[&(topic.to_string(), 0)].error,
        MESSAGE_TOO_LARGE,
        "{res:?}"
    );
    assert_eq!(
        res[&(topic.to_string(), 1)].error,
        NONE,
        "small batch beside a too-large one: {res:?}"
    );
    assert_serving(&mut broker);
    broker.stop();
}

#[test]
fn produce_to_unknown_topic_without_auto_create_fails_per_partition() {
    let mut broker = broker_with(BrokerOptions::new().set("auto.create.topics.enable", "false"));
    let topic = "no-such-topic";
    for attempt in 0..2 {
        let batch = record_batch(&[(None, Some(b"lost"))], 1_700_000_000_000);
        let res = produce_v3(broker.addr(), &[(topic, vec![(0, batch)])]);
        assert_eq!(
            res[&(topic.to_string(), 0)].error,
            UNKNOWN_TOPIC_OR_PARTITION,
            "attempt {attempt}: {res:?}"
        );
    }
    // Metadata does not create it either.
    let body = roundtrip(
        broker.addr(),
        API_METADATA,
        1,
        &metadata_v1_body(Some(&[topic])),
    );
    let errors = metadata_v1_topic_errors(&body);
    assert_eq!(
        errors.get(topic).copied(),
        Some(UNKNOWN_TOPIC_OR_PARTITION),
        "metadata: {errors:?}"
    );

    // An existing topic with a partition that does not exist.
    create_topic(broker.addr(), "two-partitions", 2);
    produce_until_ok(&broker, "two-partitions", 1, b"ok");
    let batch = record_batch(&[(None, Some(b"lost"))], 1_700_000_000_000);
    let res = produce_v3(broker.addr(), &[("two-partitions", vec![(7, batch)])]);
    assert_eq!(
        res[&("two-partitions".to_string(), 7)].error,
        UNKNOWN_TOPIC_OR_PARTITION,
        "{res:?}"
    );
    assert_serving(&mut broker);
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// CreateTopics errors, per topic
// ---------------------------------------------------------------------------------------------

#[test]
fn create_topics_rejects_invalid_names_and_duplicates() {
    let mut broker = broker_with(BrokerOptions::new());
    let long_250 = "a".repeat(250);
    let long_249 = "b".repeat(249);
    let requested: Vec<(&str, i32)> = vec![
        ("", 1),
        (".", 1),
        ("..", 1),
        (&long_250, 1),
        ("bad/name", 1),
        ("bad name", 1),
        ("zero-partitions", 0),
        (&long_249, 1),
        ("good.topic_name-1", 3),
    ];
    let expected: HashMap<&str, i16> = [
        ("", INVALID_TOPIC_EXCEPTION),
        (".", INVALID_TOPIC_EXCEPTION),
        ("..", INVALID_TOPIC_EXCEPTION),
        (long_250.as_str(), INVALID_TOPIC_EXCEPTION),
        ("bad/name", INVALID_TOPIC_EXCEPTION),
        ("bad name", INVALID_TOPIC_EXCEPTION),
        ("zero-partitions", INVALID_PARTITIONS),
        (long_249.as_str(), NONE),
        ("good.topic_name-1", NONE),
    ]
    .into_iter()
    .collect();
    let res = create_topics(broker.addr(), &requested);
    assert_eq!(
        res.len(),
        requested.len(),
        "one result per requested topic: {res:?}"
    );
    for (name, code, msg) in &res {
        let want = expected
            .get(name.as_str())
            .unwrap_or_else(|| panic!("CreateTopics answered for a topic not asked for: {name:?}"));
        assert_eq!(code, want, "CreateTopics {name:?} (message {msg:?})");
    }

    let again = create_topics(broker.addr(), &[("good.topic_name-1", 3)]);
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].1, TOPIC_ALREADY_EXISTS,
        "duplicate create: {again:?}"
    );

    // The topic created above is usable; the rejected ones do not exist.
    produce_until_ok(&broker, "good.topic_name-1", 2, b"v");
    let body = roundtrip(broker.addr(), API_METADATA, 1, &metadata_v1_body(None));
    let topics = metadata_v1_topic_errors(&body);
    assert!(
        topics.contains_key("good.topic_name-1"),
        "metadata lacks created topic: {topics:?}"
    );
    assert!(
        topics.contains_key(long_249.as_str()),
        "metadata lacks 249-char topic"
    );
    for bad in [
        "",
        ".",
        "..",
        "bad/name",
        "bad name",
        "zero-partitions",
        long_250.as_str(),
    ] {
        assert!(
            !topics.contains_key(bad),
            "rejected topic {bad:?} exists: {topics:?}"
        );
    }
    assert_serving(&mut broker);
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// Bad configuration on the command line
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_configuration_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let config_file = dir.path().join("server.properties");
    std::fs::write(&config_file, "num.partitions=2\nnot.a.real.setting=1\n").unwrap();
    let config_file = config_file.to_str().unwrap();

    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "unknown override key",
            vec!["--override", "no.such.key=1"],
            "no.such.key",
        ),
        (
            "invalid number",
            vec!["--override", "num.partitions=abc"],
            "num.partitions",
        ),
        (
            "invalid boolean",
            vec!["--override", "auto.create.topics.enable=maybe"],
            "auto.create.topics.enable",
        ),
        (
            "negative size",
            vec!["--override", "message.max.bytes=-5"],
            "message.max.bytes",
        ),
        (
            "unknown key in --config file",
            vec!["--config", config_file],
            "not.a.real.setting",
        ),
    ];
    // check-config says the same without starting anything; the shipped example is valid.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/server.properties");
    let (status, output) = run_to_exit(&["check-config", example], Duration::from_secs(30));
    assert!(status.success(), "config/server.properties: {output}");
    assert!(output.contains("valid"), "{output}");
    let minimal = concat!(env!("CARGO_MANIFEST_DIR"), "/config/single-node.properties");
    let (status, output) = run_to_exit(&["check-config", minimal], Duration::from_secs(30));
    assert!(status.success(), "config/single-node.properties: {output}");
    let (status, output) = run_to_exit(&["check-config", config_file], Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("not.a.real.setting"), "{output}");
    let (status, output) = run_to_exit(
        &["check-config", example, "--override", "num.partitions=abc"],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("num.partitions"), "{output}");
    for (what, extra, key) in cases {
        let mut args = vec!["serve", "--listen", listen.as_str(), "--data-dir", data];
        args.extend(extra);
        let (status, output) = run_to_exit(&args, Duration::from_secs(30));
        assert!(
            !status.success(),
            "{what}: `odradek {}` exited successfully\n{output}",
            args.join(" ")
        );
        assert!(
            output.contains(key),
            "{what}: output does not name `{key}`:\n{output}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Old produce versions, FindCoordinator before groups exist
// ---------------------------------------------------------------------------------------------

const API_FIND_COORDINATOR: i16 = 10;
const INVALID_REQUEST: i16 = 42;
const UNSUPPORTED_VERSION: i16 = 35;
const KAFKA_STORAGE_ERROR: i16 = 56;

#[test]
fn produce_below_v3_is_advertised_but_answered_unsupported_version() {
    let mut broker = broker_with(BrokerOptions::new());
    let topic = "old-produce";
    create_topic(broker.addr(), topic, 1);
    // Old librdkafka (2.0.x) compresses with gzip/snappy only if Produce v0 is advertised.
    let produce = api_versions(broker.addr())
        .into_iter()
        .find(|(k, _, _)| *k == API_PRODUCE);
    assert_eq!(
        produce,
        Some((API_PRODUCE, 0, 11)),
        "advertised Produce range"
    );

    // A v2 body is the v3 body without the leading transactional id (a null string: 2 bytes);
    // the v2 response has the v3 layout.
    let batch = record_batch(&[(Some(b"k"), Some(b"old"))], 1_700_000_000_000);
    let v3 = produce_v3_body(-1, &[(topic, vec![(0, batch)])]);
    for version in [0i16, 1, 2] {
        let body = roundtrip(broker.addr(), API_PRODUCE, version, &v3[2..]);
        let mut r = Reader::new(&body);
        assert_eq!(r.array_len(), 1);
        assert_eq!(r.string(), topic);
        assert_eq!(r.array_len(), 1);
        assert_eq!(r.i32(), 0, "partition");
        assert_eq!(
            r.i16(),
            UNSUPPORTED_VERSION,
            "Produce v{version} error code"
        );
    }
    // Nothing was stored by the refused requests: the first accepted record gets offset 0.
    assert_eq!(produce_until_ok(&broker, topic, 0, b"new"), 0);
    assert_serving(&mut broker);
    broker.stop();
}

#[test]
fn find_coordinator_for_an_empty_transactional_id_is_invalid_request() {
    let mut broker = broker_with(BrokerOptions::new());
    let mut w = Writer::new();
    w.string("").i8(1);
    let body = roundtrip(broker.addr(), API_FIND_COORDINATOR, 1, &w.buf);
    let mut r = Reader::new(&body);
    let _throttle = r.i32();
    assert_eq!(r.i16(), INVALID_REQUEST);
    assert!(r
        .nullable_string()
        .is_some_and(|m| m.contains("empty transactional id")));
    assert_eq!(r.i32(), -1, "node id");
    assert_serving(&mut broker);
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// Disk failure on one partition
// ---------------------------------------------------------------------------------------------

/// One partition's directory lives on a small filesystem that fills up (the free-space guard
/// watches the data directory, which has room, so the writes really hit ENOSPC): that partition
/// answers KAFKA_STORAGE_ERROR, the broker stays up, and the other partition keeps taking and
/// serving writes. When space returns the partition comes back by itself, without a restart,
/// with every acknowledged record and the next offset after them (the failed write was never
/// acknowledged), and its log reads the same after a restart (no segment corrupted). Needs root
/// (loop mount), as CI runs; elsewhere it says why it did not run.
#[test]
fn full_disk_fails_only_that_partition_until_space_returns() {
    if !is_root() {
        eprintln!(
            "full_disk_fails_only_that_partition_until_space_returns: not run, needs root to loop-mount a filesystem"
        );
        return;
    }
    let disk = SmallDisk::new(64).unwrap_or_else(|e| panic!("cannot set up the small disk: {e}"));
    // The partition reopens once its filesystem has this much free (and 16 MiB) again; the
    // default (64 MiB) is more than the whole small disk.
    let mut broker = broker_with(
        BrokerOptions::new()
            .cores("2")
            .set("log.dir.min.free.bytes", 1 << 20),
    );
    let topic = "full";
    // The topic's partition 1 directory is a link onto the small disk, next to a filler file
    // that leaves it about 3 MiB.
    let target = disk.mount.join(format!("{topic}-1"));
    std::fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&target, broker.data_dir().join(format!("{topic}-1"))).unwrap();
    let filler = disk.mount.join("filler");
    let available = odradek::io::filesystem_space(&disk.mount)
        .expect("statvfs")
        .1;
    std::fs::write(
        &filler,
        vec![1u8; available.saturating_sub(3 << 20) as usize],
    )
    .unwrap();
    create_topic(broker.addr(), topic, 2);

    let big = |i: i64| vec![(i % 251) as u8; 256 * 1024];
    let mut p0_offsets = Vec::new();
    let mut p1_error = None;
    for i in 0..200 {
        let batch = |v: &[u8]| record_batch(&[(Some(b"k"), Some(v))], 1_700_000_000_000 + i);
        let res = produce_v3(
            broker.addr(),
            &[(topic, vec![(0, batch(b"small")), (1, batch(&big(i)))])],
        );
        let p0 = res[&(topic.to_string(), 0)];
        assert_eq!(
            p0.error, NONE,
            "partition 0 (healthy disk) failed at request {i}: {res:?}"
        );
        p0_offsets.push(p0.base_offset);
        let p1 = res[&(topic.to_string(), 1)];
        if p1.error != NONE {
            p1_error = Some((i, p1.error));
            break;
        }
        assert_eq!(p1.base_offset, i, "partition 1 offsets");
    }
    let (at, code) = p1_error.unwrap_or_else(|| {
        broker.fail("partition 1 never failed on a disk with 3 MiB free after 50 MiB")
    });
    assert_eq!(
        code, KAFKA_STORAGE_ERROR,
        "error for the full partition (request {at})"
    );
    assert!(at > 0, "partition 1 failed before the disk was full");
    // Still failing, still only partition 1; partition 0 still takes writes and serves reads.
    std::thread::sleep(Duration::from_millis(1500));
    let res = produce_v3(
        broker.addr(),
        &[(topic, vec![(1, record_batch(&[(None, Some(b"x"))], 0))])],
    );
    assert_eq!(res[&(topic.to_string(), 1)].error, KAFKA_STORAGE_ERROR);
    p0_offsets.push(produce_until_ok(&broker, topic, 0, b"after"));
    let got = consume_exact(
        &broker.bootstrap(),
        topic,
        &[0],
        Offset::Beginning,
        p0_offsets.len(),
        Duration::from_secs(30),
    );
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, p0_offsets);

    // Space returns: partition 1 takes writes again, right after the acknowledged ones.
    std::fs::remove_file(&filler).unwrap();
    let next = produce_until_ok(&broker, topic, 1, b"space is back");
    assert_eq!(next, at, "the next offset follows the acknowledged records");
    assert!(
        broker
            .log_tail(100)
            .contains("reopened after the disk filled"),
        "{}",
        broker.log_tail(100)
    );
    let expect: Vec<(i64, Vec<u8>)> = (0..at)
        .map(|i| (i, big(i)))
        .chain([(at, b"space is back".to_vec())])
        .collect();
    let read_back = |broker: &Broker| -> Vec<(i64, Vec<u8>)> {
        consume_exact(
            &broker.bootstrap(),
            topic,
            &[1],
            Offset::Beginning,
            expect.len(),
            Duration::from_secs(30),
        )
        .into_iter()
        .map(|r| (r.offset, r.value.unwrap_or_default()))
        .collect()
    };
    assert!(read_back(&broker) == expect, "partition 1 after reopening");
    broker.restart();
    assert!(read_back(&broker) == expect, "partition 1 after a restart");
    assert_serving(&mut broker);
    broker.stop();
    drop(disk);
}

/// Directories the metadata does not explain are never served and never deleted: a stray
/// `<topic>-<p>` (e.g. left by a crash between persisting a topic deletion and removing it) is
/// moved aside, so a topic created later under that name starts empty; a leftover
/// `-delete` directory is removed.
#[test]
fn stray_and_deleted_partition_directories_are_handled_at_start() {
    let mut broker = broker_with(BrokerOptions::new());
    create_topic(broker.addr(), "kept", 1);
    assert_eq!(produce_until_ok(&broker, "kept", 0, b"stays"), 0);
    broker.stop();

    let data = broker.data_dir();
    // A stray partition directory holding a plausible segment of 3 old records.
    let stray = data.join("ghost-0");
    std::fs::create_dir(&stray).unwrap();
    let old = record_batch(
        &[
            (None, Some(b"old-1")),
            (None, Some(b"old-2")),
            (None, Some(b"old-3")),
        ],
        1_600_000_000_000,
    );
    std::fs::write(stray.join("00000000000000000000.log"), &old).unwrap();
    // A leftover of an interrupted deletion.
    let doomed = data.join("gone-0.0123456789abcdef0123456789abcdef-delete");
    std::fs::create_dir(&doomed).unwrap();
    std::fs::write(doomed.join("00000000000000000000.log"), &old).unwrap();

    broker.start_again();
    assert!(!stray.exists(), "stray directory still in place");
    let aside: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("ghost-0.") && n.ends_with("-stray"))
        .collect();
    assert_eq!(aside.len(), 1, "stray directory moved aside: {aside:?}");
    assert!(
        data.join(&aside[0])
            .join("00000000000000000000.log")
            .exists(),
        "stray data kept"
    );
    assert!(!doomed.exists(), "-delete directory not removed");

    // The kept topic is intact; a new topic named like the stray one starts empty.
    let got = consume_exact(
        &broker.bootstrap(),
        "kept",
        &[0],
        Offset::Beginning,
        1,
        Duration::from_secs(30),
    );
    assert_eq!(got[0].value.as_deref(), Some(&b"stays"[..]));
    create_topic(broker.addr(), "ghost", 1);
    assert_eq!(
        produce_until_ok(&broker, "ghost", 0, b"new"),
        0,
        "re-created topic must start empty"
    );
    assert_serving(&mut broker);
    broker.stop();
}

/// Below `log.dir.min.free.bytes` free, produce is refused with KAFKA_STORAGE_ERROR before the
/// disk is full (no write ever hits ENOSPC), and accepted again by itself once space returns.
/// The data directory lives on a small loop-mounted filesystem next to a filler file; removing
/// the filler is the space coming back. Needs root, as CI runs.
#[test]
fn low_disk_space_refuses_produce_until_space_returns() {
    if !is_root() {
        eprintln!("low_disk_space_refuses_produce_until_space_returns: not run, needs root");
        return;
    }
    let disk = SmallDisk::new(64).unwrap_or_else(|e| panic!("cannot set up the small disk: {e}"));
    let filler = disk.mount.join("filler");
    let mut broker = broker_with(
        BrokerOptions::new()
            .set("log.dir.min.free.bytes", 24 << 20)
            .set("log.segment.bytes", 1 << 20)
            .set("log.preallocate.bytes", 1 << 20)
            // Each core's journal takes its whole size up front: keep it small on a 64 MiB disk.
            .set("log.journal.bytes", 4 << 20),
    );
    // Move the data directory onto the small disk.
    broker.stop();
    let data = broker.data_dir();
    let moved = disk.mount.join("data");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&data)
        .arg(&moved)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(&data).unwrap();
    std::os::unix::fs::symlink(&moved, &data).unwrap();
    broker.start_again();
    let topic = "guarded";
    create_topic(broker.addr(), topic, 1);
    // Leave about 6 MiB above the 24 MiB threshold.
    let available = odradek::io::filesystem_space(&disk.mount)
        .expect("statvfs")
        .1;
    let fill = available.saturating_sub((24 + 6) << 20);
    assert!(fill > 0, "small disk has only {available} bytes free");
    std::fs::write(&filler, vec![1u8; fill as usize]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));

    let big = vec![0x33u8; 256 * 1024];
    let mut refused_at = None;
    for i in 0..200 {
        let batch = record_batch(&[(Some(b"k"), Some(&big))], 1_700_000_000_000 + i);
        let res = produce_v3(broker.addr(), &[(topic, vec![(0, batch)])]);
        let p = res[&(topic.to_string(), 0)];
        if p.error != NONE {
            assert_eq!(p.error, KAFKA_STORAGE_ERROR, "request {i}: {res:?}");
            refused_at = Some(i);
            break;
        }
        // The guard looks once a second: give it time to notice.
        std::thread::sleep(Duration::from_millis(50));
    }
    let at = refused_at.unwrap_or_else(|| broker.fail("produce never refused on a filling disk"));
    assert!(at > 0, "refused before anything was written");
    let log = broker.log_tail(200);
    assert!(log.contains("below log.dir.min.free.bytes"), "{log}");
    assert!(!log.contains("No space left"), "a write hit ENOSPC:\n{log}");
    // Space returns: produce is accepted again without a restart, at the next offset.
    std::fs::remove_file(&filler).unwrap();
    let offset = produce_until_ok(&broker, topic, 0, b"space is back");
    assert_eq!(offset, at, "offsets continue after the refusals");
    assert!(broker.log_tail(50).contains("bytes free again"));
    assert_serving(&mut broker);
    broker.stop();
    drop(disk);
}
