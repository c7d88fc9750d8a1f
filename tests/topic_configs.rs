//! Topic and broker configs through librdkafka's AdminClient against a real `odradek serve`:
//! CreateTopics with configs, DescribeConfigs (values and sources), AlterConfigs on topics and
//! on the broker, validation (INVALID_CONFIG naming the key), changes that take effect without a
//! restart (max.message.bytes, segment.bytes, min.insync.replicas), and persistence across a
//! restart. IncrementalAlterConfigs is driven through confluent-kafka's AdminClient (librdkafka
//! too) in `tests/python/test_configs.py`, since the rdkafka crate does not wrap it.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{produce_all, producer, test_cores, try_produce_all, Broker, BrokerOptions, Rec};
use rdkafka::admin::{
    AdminClient, AlterConfig, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

const TIMEOUT: Duration = Duration::from_secs(30);

/// name -> (value, source, read-only) of every config of a resource.
fn describe(
    a: &AdminClient<DefaultClientContext>,
    spec: ResourceSpecifier<'_>,
) -> HashMap<String, (Option<String>, Source, bool)> {
    let res = futures_lite::future::block_on(a.describe_configs([&spec], &common::admin_opts()))
        .expect("describe_configs");
    assert_eq!(res.len(), 1);
    let r = res.into_iter().next().unwrap().expect("resource described");
    r.entries
        .into_iter()
        .map(|e| (e.name, (e.value, Source::from(e.source), e.is_read_only)))
        .collect()
}

fn create(
    a: &AdminClient<DefaultClientContext>,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), (String, RDKafkaErrorCode)> {
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = futures_lite::future::block_on(a.create_topics([&t], &common::admin_opts()))
        .expect("create");
    res.into_iter().next().unwrap().map(|_| ())
}

/// AlterConfigs. The rdkafka crate reports every resource as altered whatever the broker
/// answered (it does not read the per-resource error), so refusals are checked by describing
/// the resource afterwards; the error codes themselves are checked in the Python test.
fn alter(
    a: &AdminClient<DefaultClientContext>,
    spec: ResourceSpecifier<'_>,
    configs: &[(&str, &str)],
) {
    let mut c = AlterConfig::new(spec);
    for (k, v) in configs {
        c = c.set(k, v);
    }
    let res = futures_lite::future::block_on(a.alter_configs([&c], &common::admin_opts()))
        .expect("alter");
    assert_eq!(res.len(), 1);
}

/// `ConfigSource` without the move-only restriction (it is not `Copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Topic,
    DynamicBroker,
    DynamicDefault,
    Static,
    Default,
    Unknown,
}

impl From<ConfigSource> for Source {
    fn from(s: ConfigSource) -> Source {
        match s {
            ConfigSource::DynamicTopic => Source::Topic,
            ConfigSource::DynamicBroker => Source::DynamicBroker,
            ConfigSource::DynamicDefaultBroker => Source::DynamicDefault,
            ConfigSource::StaticBroker => Source::Static,
            ConfigSource::Default => Source::Default,
            ConfigSource::Unknown => Source::Unknown,
        }
    }
}

fn value(m: &HashMap<String, (Option<String>, Source, bool)>, k: &str) -> (String, Source) {
    let (v, s, _) = m
        .get(k)
        .unwrap_or_else(|| panic!("config {k} not described"));
    (v.clone().unwrap_or_default(), *s)
}

fn segment_files(broker: &Broker, topic: &str, partition: i32) -> usize {
    std::fs::read_dir(broker.data_dir().join(format!("{topic}-{partition}")))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn topic_configs_are_described_altered_validated_applied_and_persisted() {
    let mut broker = BrokerOptions::new()
        .cores(test_cores())
        .set("log.retention.hours", "48")
        .start();
    let a = common::admin(&broker.bootstrap());

    // Created with overrides: those read back as topic configs, the rest from the broker
    // (static log.retention.hours would apply, but the topic overrides retention.ms) or defaults.
    create(
        &a,
        "cfg",
        1,
        &[
            ("retention.ms", "3600000"),
            ("cleanup.policy", "compact,delete"),
        ],
    )
    .expect("create with configs");
    create(&a, "plain", 1, &[]).expect("create plain");
    let d = describe(&a, ResourceSpecifier::Topic("cfg"));
    assert_eq!(value(&d, "retention.ms"), ("3600000".into(), Source::Topic));
    assert_eq!(
        value(&d, "cleanup.policy"),
        ("compact,delete".into(), Source::Topic)
    );
    assert_eq!(
        value(&d, "segment.bytes"),
        ("1073741824".into(), Source::Default)
    );
    assert_eq!(
        value(&d, "max.message.bytes"),
        ("1048588".into(), Source::Default)
    );
    let p = describe(&a, ResourceSpecifier::Topic("plain"));
    assert_eq!(
        value(&p, "retention.ms"),
        ((48 * 3_600_000i64).to_string(), Source::Static),
        "log.retention.hours=48 from the broker's properties, in ms"
    );

    // Invalid values and unknown keys are refused with INVALID_CONFIG; nothing is created.
    for (k, v) in [
        ("retention.ms", "soon"),
        ("segment.bytes", "10"),
        ("no.such.config", "1"),
    ] {
        let err = create(&a, "refused", 1, &[(k, v)]).expect_err(k);
        assert_eq!(err.1, RDKafkaErrorCode::InvalidConfig, "{k}={v}: {err:?}");
    }
    let md = a.inner().fetch_metadata(None, TIMEOUT).expect("metadata");
    assert!(md.topics().iter().all(|t| t.name() != "refused"));
    // A refused AlterConfigs changes nothing (AlterConfigs replaces the whole set, so an
    // accepted one would have dropped retention.ms).
    alter(
        &a,
        ResourceSpecifier::Topic("cfg"),
        &[("min.cleanable.dirty.ratio", "2")],
    );
    let d = describe(&a, ResourceSpecifier::Topic("cfg"));
    assert_eq!(
        value(&d, "min.cleanable.dirty.ratio"),
        ("0.5".into(), Source::Default)
    );
    assert_eq!(value(&d, "retention.ms"), ("3600000".into(), Source::Topic));

    // max.message.bytes takes effect at once: a 3 KB record is refused, then accepted again.
    alter(
        &a,
        ResourceSpecifier::Topic("plain"),
        &[("max.message.bytes", "2000")],
    );
    let prod = producer(&broker.bootstrap(), &[("acks", "all")]);
    let big = vec![Rec::value(vec![7u8; 3000])];
    let r = try_produce_all(&prod, "plain", &big, TIMEOUT);
    assert!(
        r[0].as_ref()
            .is_err_and(|e| e.contains("too large") || e.contains("TOO_LARGE")),
        "3 KB record with max.message.bytes=2000: {r:?}"
    );
    // AlterConfigs replaces the whole set: without max.message.bytes it falls back.
    alter(
        &a,
        ResourceSpecifier::Topic("plain"),
        &[("segment.bytes", "65536")],
    );
    let d = describe(&a, ResourceSpecifier::Topic("plain"));
    assert_eq!(
        value(&d, "max.message.bytes"),
        ("1048588".into(), Source::Default)
    );
    assert_eq!(value(&d, "segment.bytes"), ("65536".into(), Source::Topic));
    produce_all(&prod, "plain", &big, TIMEOUT);

    // segment.bytes takes effect without a restart: 200 KB in 3 KB records rolls segments.
    let recs: Vec<Rec> = (0..64).map(|i| Rec::value(vec![i as u8; 3000])).collect();
    for chunk in recs.chunks(8) {
        produce_all(&prod, "plain", chunk, TIMEOUT);
    }
    let segments = segment_files(&broker, "plain", 0);
    assert!(
        segments >= 3,
        "{segments} segment file(s) after 195 KB with segment.bytes=65536"
    );

    // Timestamp bounds (CreateTime): two days old or an hour ahead is refused.
    alter(
        &a,
        ResourceSpecifier::Topic("plain"),
        &[
            ("segment.bytes", "65536"),
            ("message.timestamp.before.max.ms", "86400000"),
            ("message.timestamp.after.max.ms", "600000"),
        ],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let strict_ts = producer(&broker.bootstrap(), &[("acks", "all"), ("retries", "0")]);
    for ts in [now - 2 * 86_400_000, now + 3_600_000] {
        let rec = Rec {
            timestamp_ms: Some(ts),
            ..Rec::value("t")
        };
        let r = try_produce_all(&strict_ts, "plain", &[rec], TIMEOUT);
        assert!(
            r[0].as_ref().is_err_and(|e| e.contains("InvalidTimestamp")),
            "timestamp {ts} (now {now}): {r:?}"
        );
    }
    produce_all(&strict_ts, "plain", &[Rec::value("now")], TIMEOUT);

    // min.insync.replicas=2 on a single node: acks=all fails with NOT_ENOUGH_REPLICAS.
    alter(
        &a,
        ResourceSpecifier::Topic("plain"),
        &[("segment.bytes", "65536"), ("min.insync.replicas", "2")],
    );
    let strict = producer(
        &broker.bootstrap(),
        &[
            ("acks", "all"),
            ("message.timeout.ms", "3000"),
            ("retries", "0"),
        ],
    );
    let r = try_produce_all(&strict, "plain", &[Rec::value("x")], TIMEOUT);
    assert!(
        r[0].as_ref()
            .is_err_and(|e| e.contains("replicas") || e.contains("REPLICAS")),
        "acks=all with min.insync.replicas=2: {r:?}"
    );
    let one = producer(&broker.bootstrap(), &[("acks", "1")]);
    produce_all(&one, "plain", &[Rec::value("x")], TIMEOUT);

    // The broker: static keys are read-only, topic-config defaults are dynamic; a dynamic
    // default applies to topics without their own setting.
    let b = describe(&a, ResourceSpecifier::Broker(1));
    assert_eq!(
        b.get("log.retention.hours")
            .map(|(v, s, ro)| (v.clone(), *s, *ro)),
        Some((Some("48".into()), Source::Static, false))
    );
    assert!(
        b.get("cores").is_some_and(|(_, _, ro)| *ro),
        "cores is read-only"
    );
    alter(
        &a,
        ResourceSpecifier::Broker(1),
        &[("log.retention.ms", "-5")],
    );
    alter(
        &a,
        ResourceSpecifier::Broker(1),
        &[("log.retention.ms", "120000"), ("cores", "1")],
    );
    let b = describe(&a, ResourceSpecifier::Broker(1));
    assert_eq!(
        b.get("log.retention.ms").map(|(v, s, _)| (v.clone(), *s)),
        Some((None, Source::Default)),
        "refused: -5 is invalid, and cores cannot change at runtime"
    );
    alter(
        &a,
        ResourceSpecifier::Broker(1),
        &[("log.retention.ms", "120000")],
    );
    let b = describe(&a, ResourceSpecifier::Broker(1));
    assert_eq!(
        b.get("log.retention.ms").map(|(v, s, _)| (v.clone(), *s)),
        Some((Some("120000".into()), Source::DynamicBroker))
    );
    let p = describe(&a, ResourceSpecifier::Topic("plain"));
    assert_eq!(
        value(&p, "retention.ms"),
        ("120000".into(), Source::DynamicBroker)
    );
    let c = describe(&a, ResourceSpecifier::Topic("cfg"));
    assert_eq!(value(&c, "retention.ms"), ("3600000".into(), Source::Topic));
    drop(a);

    // Everything survives a restart.
    broker.restart();
    let a = common::admin(&broker.bootstrap());
    let c = describe(&a, ResourceSpecifier::Topic("cfg"));
    assert_eq!(
        value(&c, "cleanup.policy"),
        ("compact,delete".into(), Source::Topic)
    );
    let p = describe(&a, ResourceSpecifier::Topic("plain"));
    assert_eq!(
        value(&p, "min.insync.replicas"),
        ("2".into(), Source::Topic)
    );
    assert_eq!(
        value(&p, "retention.ms"),
        ("120000".into(), Source::DynamicBroker)
    );
    let o = describe(&a, ResourceSpecifier::Topic("__consumer_offsets"));
    assert_eq!(
        value(&o, "cleanup.policy"),
        ("compact".into(), Source::Topic)
    );
    broker.stop();
}

/// `compression.type` other than `producer`: batches written with another codec are stored
/// recompressed with the topic's (read straight from the segment files), and read back intact.
#[test]
fn topic_compression_type_recompresses_other_codecs() {
    let broker = BrokerOptions::new().cores(test_cores()).start();
    let a = common::admin(&broker.bootstrap());
    create(&a, "as-zstd", 1, &[("compression.type", "zstd")]).unwrap();
    create(&a, "as-plain", 1, &[("compression.type", "uncompressed")]).unwrap();
    create(&a, "as-sent", 1, &[]).unwrap();
    let recs: Vec<Rec> = (0..300)
        .map(|i| Rec::keyed(format!("k{i}"), common::payload("rc", i, 200)))
        .collect();
    for (topic, producer_codec, stored) in [
        ("as-zstd", "lz4", 4u8),
        ("as-zstd", "gzip", 4),
        ("as-plain", "snappy", 0),
        ("as-sent", "lz4", 3),
    ] {
        let p = producer(
            &broker.bootstrap(),
            &[("acks", "all"), ("compression.type", producer_codec)],
        );
        produce_all(&p, topic, &recs, TIMEOUT);
        let codecs = common::stored_batch_codecs(&broker.data_dir(), topic, &[0]);
        assert!(!codecs.is_empty());
        assert!(
            codecs.iter().all(|(c, _)| *c == stored),
            "{topic} written with {producer_codec}: stored codecs {codecs:?}"
        );
        assert_eq!(
            codecs.iter().map(|(_, n)| *n as usize).sum::<usize>() % recs.len(),
            0
        );
    }
    for (topic, copies) in [("as-zstd", 2), ("as-plain", 1), ("as-sent", 1)] {
        let got = common::consume_exact(
            &broker.bootstrap(),
            topic,
            &[0],
            rdkafka::Offset::Beginning,
            recs.len() * copies,
            TIMEOUT,
        );
        for (i, r) in got.iter().enumerate() {
            assert_eq!(
                r.value.as_deref(),
                recs[i % recs.len()].value.as_deref(),
                "{topic} #{i}"
            );
        }
    }
}

const CLEANER_RATE: &str = "log.cleaner.io.max.bytes.per.second";

/// IncrementalAlterConfigs v0 on broker resource `name` ("" = the cluster-wide default),
/// straight on the wire (the rdkafka crate wraps neither it nor per-resource errors): one
/// (key, operation, value) per config. Returns the resource's (error code, error message).
fn incremental_alter_broker(
    broker: &Broker,
    name: &str,
    configs: &[(&str, i8, Option<&str>)],
) -> (i16, Option<String>) {
    let mut w = common::Writer::new();
    w.i32(1).i8(4).string(name).i32(configs.len() as i32);
    for (key, op, value) in configs {
        w.string(key).i8(*op).nullable_string(*value);
    }
    w.bool(false);
    let body = common::roundtrip(broker.addr(), 44, 0, &w.buf);
    let mut r = common::Reader::new(&body);
    let _throttle_ms = r.i32();
    assert_eq!(r.array_len(), 1, "one resource answered");
    let code = r.i16();
    let message = r.nullable_string();
    assert_eq!((r.i8(), r.string()), (4, name.to_string()));
    (code, message)
}

const SET: i8 = 0;
const DELETE: i8 = 1;
const INVALID_CONFIG: i16 = 40;

/// `odradek_compaction_rate_max_bytes_per_second` of every shard, from the metrics endpoint.
fn pacer_maxima(metrics_port: u16) -> Vec<(String, u64)> {
    let text = common::metrics_text(std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port)));
    let mut out: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("odradek_compaction_rate_max_bytes_per_second{shard=\""))
        .filter_map(|l| {
            let (shard, value) = l.split_once("\"} ")?;
            Some((shard.to_string(), value.trim().parse().ok()?))
        })
        .collect();
    out.sort();
    out
}

/// `log.cleaner.io.max.bytes.per.second` is a dynamic broker config, as in Kafka
/// (cluster-wide mode): set on the cluster default and on this broker, described with the
/// right source, applied on every shard's compaction pacer without a restart, validated
/// (INVALID_CONFIG naming the key), persisted.
#[test]
fn compaction_io_rate_is_a_dynamic_broker_config() {
    let metrics_port = common::free_port();
    let mut broker = BrokerOptions::new()
        .cores(test_cores())
        .set(CLEANER_RATE, "20971520")
        .set("metrics.listen", format!("127.0.0.1:{metrics_port}"))
        .start();
    let shards: usize = test_cores().parse().expect("test_cores is a count");
    let everywhere =
        |v: u64| -> Vec<(String, u64)> { (0..shards).map(|s| (s.to_string(), v)).collect() };
    let a = common::admin(&broker.bootstrap());
    let rate = |a: &AdminClient<DefaultClientContext>| {
        let b = describe(a, ResourceSpecifier::Broker(1));
        b.get(CLEANER_RATE)
            .map(|(v, s, ro)| (v.clone().unwrap_or_default(), *s, *ro))
    };
    assert_eq!(
        rate(&a),
        Some(("20971520".into(), Source::Static, false)),
        "static, and changeable"
    );
    assert_eq!(pacer_maxima(metrics_port), everywhere(20971520));

    // The cluster-wide default beats the static value...
    assert_eq!(
        incremental_alter_broker(&broker, "", &[(CLEANER_RATE, SET, Some("1048576"))]),
        (0, None)
    );
    assert_eq!(
        rate(&a),
        Some(("1048576".into(), Source::DynamicDefault, false))
    );
    assert_eq!(pacer_maxima(metrics_port), everywhere(1048576));
    // ...this broker's own value beats the cluster default (AlterConfigs, through librdkafka).
    alter(&a, ResourceSpecifier::Broker(1), &[(CLEANER_RATE, "1")]);
    assert_eq!(rate(&a), Some(("1".into(), Source::DynamicBroker, false)));
    assert_eq!(pacer_maxima(metrics_port), everywhere(1));

    // Refused, naming the key, and nothing changes: negative, not a whole number, a fraction.
    for bad in ["-1", "fast", "1.5"] {
        for resource in ["", "1"] {
            let (code, message) =
                incremental_alter_broker(&broker, resource, &[(CLEANER_RATE, SET, Some(bad))]);
            assert_eq!(code, INVALID_CONFIG, "{bad:?} on broker {resource:?}");
            let message = message.unwrap_or_default();
            assert!(message.contains(CLEANER_RATE), "{bad:?}: {message}");
        }
    }
    assert_eq!(rate(&a), Some(("1".into(), Source::DynamicBroker, false)));
    assert_eq!(pacer_maxima(metrics_port), everywhere(1));
    // A list operation on it is refused too.
    let (code, message) = incremental_alter_broker(&broker, "1", &[(CLEANER_RATE, 2, Some("5"))]);
    assert_eq!(code, INVALID_CONFIG);
    assert!(message.unwrap_or_default().contains(CLEANER_RATE));

    // Survives a restart (the pacer starts from the static value, the stored image wins).
    drop(a);
    broker.restart();
    let a = common::admin(&broker.bootstrap());
    assert_eq!(rate(&a), Some(("1".into(), Source::DynamicBroker, false)));
    assert_eq!(pacer_maxima(metrics_port), everywhere(1));

    // Deleting this broker's value shows the cluster default again, then the static value.
    assert_eq!(
        incremental_alter_broker(&broker, "1", &[(CLEANER_RATE, DELETE, None)]),
        (0, None)
    );
    assert_eq!(
        rate(&a),
        Some(("1048576".into(), Source::DynamicDefault, false))
    );
    assert_eq!(pacer_maxima(metrics_port), everywhere(1048576));
    assert_eq!(
        incremental_alter_broker(&broker, "", &[(CLEANER_RATE, DELETE, None)]),
        (0, None)
    );
    assert_eq!(rate(&a), Some(("20971520".into(), Source::Static, false)));
    assert_eq!(pacer_maxima(metrics_port), everywhere(20971520));
    broker.stop();
}
