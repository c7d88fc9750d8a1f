//! Log lifecycle through librdkafka against a real `odradek serve`: retention by time and by
//! size advance the log start offset (ListOffsets earliest), a consumer positioned before it gets
//! OFFSET_OUT_OF_RANGE or follows its reset policy, and DeleteRecords (AdminClient) moves the
//! earliest offset durably. DescribeLogDirs is checked over the wire in `broker_semantics.rs`
//! (librdkafka has no DescribeLogDirs admin call).

mod common;

use std::time::{Duration, Instant};

use common::{consumer, produce_all, producer, test_cores, Broker, BrokerOptions, Rec};
use rdkafka::admin::{AdminClient, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

fn create(a: &AdminClient<DefaultClientContext>, name: &str, configs: &[(&str, &str)]) {
    let mut t = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let res = futures_lite::future::block_on(a.create_topics([&t], &common::admin_opts()))
        .expect("create");
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
    let a = common::admin(&b);
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
    let a = common::admin(&b);
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
    let res = futures_lite::future::block_on(a.delete_records(&tpl, &common::admin_opts()))
        .expect("delete_records");
    let e = res.elements_for_topic("sized");
    assert_eq!(e.len(), 1);
    assert!(e[0].error().is_ok(), "{:?}", e[0].error());
    assert_eq!(e[0].offset(), Offset::Offset(target));
    assert_eq!(watermarks(&b, "sized"), (target, end));

    // Beyond the high watermark: refused, nothing moves.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("sized", 0, Offset::Offset(end + 5))
        .unwrap();
    let res = futures_lite::future::block_on(a.delete_records(&tpl, &common::admin_opts()))
        .expect("delete_records");
    assert!(res.elements_for_topic("sized")[0].error().is_err());
    assert_eq!(watermarks(&b, "sized").0, target);

    // Retention keeps working after a config change: no size limit, nothing more goes.
    let c = AlterConfig::new(ResourceSpecifier::Topic("sized")).set("segment.bytes", "16384");
    futures_lite::future::block_on(a.alter_configs([&c], &common::admin_opts())).expect("alter");
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

/// Reads partition 0 of `topic` from the beginning to its end: (offset, key, value).
fn read_all(bootstrap: &str, topic: &str) -> Vec<(i64, String, Option<Vec<u8>>)> {
    let c = consumer(bootstrap, &[("auto.offset.reset", "earliest")]);
    let (_, end) = c.fetch_watermarks(topic, 0, TIMEOUT).expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut out = Vec::new();
    let mut at = -1;
    while at + 1 < end {
        assert!(
            Instant::now() < deadline,
            "read {topic} up to {at} of {end}"
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                at = m.offset();
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                out.push((m.offset(), key, m.payload().map(<[u8]>::to_vec)));
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {
                // A compacted tail may end in removed offsets: stop when the position passed it.
                let pos = c.position().ok().and_then(|p| {
                    p.find_partition(topic, 0).and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                });
                if pos.is_some_and(|p| p >= end) {
                    break;
                }
            }
        }
    }
    out
}

/// The last value of each key in `records`.
fn latest(
    records: &[(i64, String, Option<Vec<u8>>)],
) -> std::collections::BTreeMap<String, Option<Vec<u8>>> {
    records
        .iter()
        .map(|(_, k, v)| (k.clone(), v.clone()))
        .collect()
}

fn keyed(key: &str, value: Option<String>) -> Rec {
    Rec {
        key: Some(key.as_bytes().to_vec()),
        value: value.map(String::into_bytes),
        ..Rec::default()
    }
}

#[test]
fn compaction_converges_to_the_latest_values_and_drops_tombstones() {
    let broker = BrokerOptions::new()
        .cores(test_cores())
        .set("log.cleaner.backoff.ms", 200)
        .start();
    let b = broker.bootstrap();
    let a = common::admin(&b);
    create(
        &a,
        "compacted",
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "16384"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "1000"),
        ],
    );
    let p = producer(
        &b,
        &[
            ("acks", "all"),
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
        ],
    );
    // 10k updates over 100 keys, then tombstones for k0..k9, then 2k more updates of the others
    // (so the tombstones end up in closed segments).
    let mut sent: Vec<Rec> = (0..10_000)
        .map(|i| {
            keyed(
                &format!("k{}", i % 100),
                Some(format!("v{i}-{}", "x".repeat(60))),
            )
        })
        .collect();
    sent.extend((0..10).map(|k| keyed(&format!("k{k}"), None)));
    sent.extend((0..2_000).map(|i| keyed(&format!("k{}", 10 + i % 90), Some(format!("w{i}")))));
    for chunk in sent.chunks(500) {
        produce_all(&p, "compacted", chunk, TIMEOUT);
    }
    let mut want: std::collections::BTreeMap<String, Option<Vec<u8>>> = Default::default();
    for r in &sent {
        want.insert(
            String::from_utf8(r.key.clone().unwrap()).unwrap(),
            r.value.clone(),
        );
    }
    want.retain(|_, v| v.is_some());
    assert_eq!(want.len(), 90);

    // A record without a key is refused on a compacted topic.
    let r = common::try_produce_all(&p, "compacted", &[Rec::value("no key")], TIMEOUT);
    assert!(
        r[0].as_ref().is_err_and(|e| e.contains("InvalidRecord")),
        "{r:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    loop {
        let got = read_all(&b, "compacted");
        // Offsets only ever increase; every key read back has its latest value last.
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        let tombstoned_gone = got.iter().all(|(_, k, _)| {
            k.strip_prefix('k')
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n >= 10)
        });
        let mut l = latest(&got);
        l.retain(|_, v| v.is_some());
        // The active segment is never compacted; before it, one record per key.
        let active = active_segment_base(&broker, "compacted");
        let mut compacted_keys: Vec<&String> =
            got.iter().filter(|r| r.0 < active).map(|r| &r.1).collect();
        let n = compacted_keys.len();
        compacted_keys.sort();
        compacted_keys.dedup();
        if l == want && tombstoned_gone && compacted_keys.len() == n && active > 10_010 {
            break;
        }
        last = got;
        assert!(
            Instant::now() < deadline,
            "not converged after 60 s: {} records, {} keys; tombstoned keys gone: {tombstoned_gone}",
            last.len(),
            latest(&last).len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(last);
    assert_eq!(
        watermarks(&b, "compacted"),
        (0, 12_010),
        "offsets never change"
    );
}

/// Base offset of the newest segment file of partition 0 of `topic`.
fn active_segment_base(broker: &Broker, topic: &str) -> i64 {
    std::fs::read_dir(broker.data_dir().join(format!("{topic}-0")))
        .expect("partition directory")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log")?.parse::<i64>().ok()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn kill9_during_compaction_keeps_every_latest_value() {
    let mut broker = BrokerOptions::new()
        .cores(test_cores())
        .set("log.cleaner.backoff.ms", 100)
        // Slow compaction down so the kills land in the middle of it.
        .set("log.cleaner.io.max.bytes.per.second", 3_000_000)
        .start();
    let b = broker.bootstrap();
    let a = common::admin(&b);
    create(
        &a,
        "crashy",
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "262144"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    );
    drop(a);
    let p = producer(&b, &[("acks", "all"), ("linger.ms", "5")]);
    let sent: Vec<Rec> = (0..20_000)
        .map(|i| {
            keyed(
                &format!("key-{}", i % 500),
                Some(format!("{i}:{}", "y".repeat(300))),
            )
        })
        .collect();
    for chunk in sent.chunks(1000) {
        produce_all(&p, "crashy", chunk, TIMEOUT);
    }
    drop(p);
    let want: std::collections::BTreeMap<String, Option<Vec<u8>>> = sent
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                r.value.clone(),
            )
        })
        .collect();
    let mut compacted = false;
    let mut killed_mid_pass = 0;
    // Each round waits for a compaction pass of this start to be under way, then kills after
    // a delay that varies the point inside the pass. Polling the log, not sleeping a fixed
    // time, is what lands the kills inside passes: the passes after the first rounds take
    // ~60 ms, and when they start depends on the machine's speed.
    // Compaction passes this start of the broker has begun and finished.
    let passes = |broker: &Broker| {
        let this_start = broker.log_of_last_start();
        (
            this_start.matches("crashy-0: compacting").count(),
            this_start.matches("crashy-0: compacted").count(),
        )
    };
    for (round, delay_ms) in [0u64, 100, 25, 0].into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let (started, finished) = passes(&broker);
            if started > finished {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        let (started, finished) = passes(&broker);
        compacted |= finished > 0;
        if started > finished {
            killed_mid_pass += 1;
        }
        broker.kill9();
        broker.start_again();
        let b = broker.bootstrap();
        let got = read_all(&b, "crashy");
        assert!(
            got.windows(2).all(|w| w[0].0 < w[1].0),
            "round {round}: offsets out of order"
        );
        assert_eq!(
            latest(&got),
            want,
            "round {round}: latest values after kill -9"
        );
        assert_eq!(watermarks(&b, "crashy").1, 20_000);
    }
    let log = broker.log_tail(400);
    assert!(
        !log.contains("truncating") && !log.contains("cannot"),
        "{log}"
    );
    assert!(
        compacted || log.contains("crashy-0: compacted"),
        "compaction never ran:\n{log}"
    );
    assert!(
        killed_mid_pass >= 3,
        "only {killed_mid_pass} kill(s) landed inside a compaction pass"
    );
    broker.stop();
}
