//! Log lifecycle through librdkafka against a real `odradek serve`: retention by time and by
//! size advance the log start offset (ListOffsets earliest), a consumer positioned before it gets
//! OFFSET_OUT_OF_RANGE or follows its reset policy, and DeleteRecords (AdminClient) moves the
//! earliest offset durably. DescribeLogDirs is checked over the wire in `broker_semantics.rs`
//! (librdkafka has no DescribeLogDirs admin call).

mod common;

use std::time::{Duration, Instant};

use common::{consumer, produce_all, producer, test_cores, Broker, BrokerOptions, Rec};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "10000")
        .create()
        .expect("admin client")
}

fn opts() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(TIMEOUT))
}

fn create(a: &AdminClient<DefaultClientContext>, name: &str, configs: &[(&str, &str)]) {
    let mut t = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = futures_lite::future::block_on(a.create_topics([&t], &opts())).expect("create");
    res.into_iter().next().unwrap().expect("topic created");
}

/// (earliest, latest) of partition 0.
fn watermarks(bootstrap: &str, topic: &str) -> (i64, i64) {
    consumer(bootstrap, &[])
        .fetch_watermarks(topic, 0, TIMEOUT)
        .expect("watermarks")
}

/// Waits until partition 0's earliest offset satisfies `ok`; returns the watermarks.
fn wait_for_start(
    bootstrap: &str,
    topic: &str,
    ok: impl Fn(i64) -> bool,
    what: &str,
) -> (i64, i64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let w = watermarks(bootstrap, topic);
        if ok(w.0) {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: watermarks stayed at {w:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn records(n: usize, size: usize, timestamp_ms: Option<i64>) -> Vec<Rec> {
    (0..n)
        .map(|i| Rec {
            timestamp_ms,
            ..Rec::value(format!("{i:08}").repeat(size / 8))
        })
        .collect()
}

fn broker() -> Broker {
    BrokerOptions::new()
        .cores(test_cores())
        .set("log.retention.check.interval.ms", 100)
        .start()
}

#[test]
fn retention_by_time_advances_the_log_start_and_consumers_reset() {
    let broker = broker();
    let b = broker.bootstrap();
    let a = admin(&b);
    create(
        &a,
        "old",
        &[("segment.bytes", "16384"), ("retention.ms", "3600000")],
    );
    let p = producer(&b, &[("acks", "all"), ("linger.ms", "0")]);
    // Records stamped two days ago (CreateTime): every closed segment is past retention.ms.
    let two_days_ago = common_now_ms() - 2 * 86_400_000;
    let old = records(200, 400, Some(two_days_ago));
    for chunk in old.chunks(10) {
        produce_all(&p, "old", chunk, TIMEOUT);
    }
    let (start, end) = wait_for_start(&b, "old", |s| s > 0, "time retention");
    assert_eq!(end, 200);
    assert!(start < end, "the active segment is never deleted");

    // A consumer at offset 0 with auto.offset.reset=error sees OFFSET_OUT_OF_RANGE...
    let strict = consumer(&b, &[("auto.offset.reset", "error")]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("old", 0, Offset::Offset(0))
        .unwrap();
    strict.assign(&tpl).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let err = loop {
        assert!(
            Instant::now() < deadline,
            "no error for a fetch below the log start"
        );
        match strict.poll(Duration::from_millis(200)) {
            Some(Err(e)) => break e.to_string(),
            Some(Ok(m)) => panic!(
                "record at offset {} below the log start {start}",
                m.offset()
            ),
            None => {}
        }
    };
    // librdkafka turns the broker's OFFSET_OUT_OF_RANGE into its local AutoOffsetReset error
    // when the reset policy is "error".
    assert!(
        err.contains("AutoOffsetReset") || err.to_lowercase().contains("out of range"),
        "{err}"
    );
    // ...and one with auto.offset.reset=earliest continues at the new start.
    let lenient = consumer(&b, &[("auto.offset.reset", "earliest")]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("old", 0, Offset::Offset(0))
        .unwrap();
    lenient.assign(&tpl).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let first = loop {
        assert!(Instant::now() < deadline, "reset consumer read nothing");
        if let Some(Ok(m)) = lenient.poll(Duration::from_millis(200)) {
            break m.offset();
        }
    };
    assert!(
        first >= start,
        "first record after reset at {first}, log start {start}"
    );

    // Records with current timestamps are kept (retention.ms is an hour).
    let fresh = records(200, 400, None);
    for chunk in fresh.chunks(10) {
        produce_all(&p, "old", chunk, TIMEOUT);
    }
    // Several retention checks later, no fresh record is gone (a segment holding both old and
    // fresh records is as new as its newest record).
    std::thread::sleep(Duration::from_millis(600));
    let (start, end) = watermarks(&b, "old");
    assert_eq!(end, 400);
    assert!(start <= 200, "fresh records deleted: start {start}");
}

#[test]
fn retention_by_size_and_delete_records() {
    let mut broker = broker();
    let b = broker.bootstrap();
    let a = admin(&b);
    create(
        &a,
        "sized",
        &[("segment.bytes", "16384"), ("retention.bytes", "50000")],
    );
    let p = producer(&b, &[("acks", "all"), ("linger.ms", "0")]);
    let recs = records(500, 400, None); // ~220 KB
    for chunk in recs.chunks(10) {
        produce_all(&p, "sized", chunk, TIMEOUT);
    }
    let (start, end) = wait_for_start(&b, "sized", |s| s > 200, "size retention");
    assert_eq!(end, 500);
    // What is left is at least retention.bytes (~ 120 records of ~430 bytes) and not much more
    // (whole segments of 16 KB go).
    let kept = end - start;
    assert!((110..=240).contains(&kept), "{kept} records kept");

    // DeleteRecords moves the start exactly (mid-segment), durably.
    let target = end - 7;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("sized", 0, Offset::Offset(target))
        .unwrap();
    let res =
        futures_lite::future::block_on(a.delete_records(&tpl, &opts())).expect("delete_records");
    let e = res.elements_for_topic("sized");
    assert_eq!(e.len(), 1);
    assert!(e[0].error().is_ok(), "{:?}", e[0].error());
    assert_eq!(e[0].offset(), Offset::Offset(target));
    assert_eq!(watermarks(&b, "sized"), (target, end));

    // Beyond the high watermark: refused, nothing moves.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("sized", 0, Offset::Offset(end + 5))
        .unwrap();
    let res =
        futures_lite::future::block_on(a.delete_records(&tpl, &opts())).expect("delete_records");
    assert!(res.elements_for_topic("sized")[0].error().is_err());
    assert_eq!(watermarks(&b, "sized").0, target);

    // Retention keeps working after a config change: no size limit, nothing more goes.
    let c = AlterConfig::new(ResourceSpecifier::Topic("sized")).set("segment.bytes", "16384");
    futures_lite::future::block_on(a.alter_configs([&c], &opts())).expect("alter");
    drop(a);
    broker.restart();
    let b = broker.bootstrap();
    assert_eq!(watermarks(&b, "sized"), (target, end), "after restart");
    let got = common::consume_exact(&b, "sized", &[0], Offset::Beginning, 7, TIMEOUT);
    assert_eq!(got[0].offset, target);
    broker.stop();
}

fn common_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
