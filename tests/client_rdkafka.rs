//! Black-box tests with librdkafka (through the `rdkafka` crate) against a real `odradek serve`.
//!
//! Each test starts its own broker (own port, own temp data dir), stops it itself, and bounds
//! every wait. Topics are auto-created with `--override num.partitions=N` so these tests do not
//! depend on the admin API.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{Producer, PurgeConfig};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const PRODUCE_TIMEOUT: Duration = Duration::from_secs(180);
const CONSUME_TIMEOUT: Duration = Duration::from_secs(180);

fn broker_with_partitions(partitions: i32) -> Broker {
    BrokerOptions::new()
        .cores(test_cores())
        .set("num.partitions", partitions)
        .set("auto.create.topics.enable", "true")
        .start()
}

/// Groups consumed records by partition, keeping consumption (= offset) order.
fn by_partition(records: &[Consumed]) -> BTreeMap<i32, Vec<&Consumed>> {
    let mut map: BTreeMap<i32, Vec<&Consumed>> = BTreeMap::new();
    for r in records {
        map.entry(r.partition).or_default().push(r);
    }
    map
}

/// Asserts offsets in each partition run 0, 1, 2, ... (no gaps, no duplicates).
fn assert_dense_offsets(records: &[Consumed]) {
    for (p, recs) in by_partition(records) {
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(
                r.offset, i as i64,
                "partition {p}: record #{i} has offset {}",
                r.offset
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Volume round trip per compression codec
// ---------------------------------------------------------------------------------------------

const CODEC_RECORDS: usize = 100_000;
const CODEC_PARTITIONS: i32 = 6;

/// 100k records over 6 partitions with `codec`; read back byte-exact, per-partition order equals
/// produce order, consumed offsets equal the delivery-reported offsets.
fn roundtrip_codec(codec: &str) {
    let mut broker = broker_with_partitions(CODEC_PARTITIONS);
    let topic = format!("codec-{codec}");
    let recs: Vec<Rec> = (0..CODEC_RECORDS)
        .map(|i| {
            Rec::keyed(format!("k{i}"), payload(codec, i, 64 + i % 200))
                .in_partition((i % CODEC_PARTITIONS as usize) as i32)
        })
        .collect();

    let p = producer(
        &broker.bootstrap(),
        &[("compression.codec", codec), ("acks", "all")],
    );
    let delivered = produce_all(&p, &topic, &recs, PRODUCE_TIMEOUT);
    drop(p);

    // Delivery reports: right partition, offsets dense and in produce order per partition.
    let mut next: HashMap<i32, i64> = HashMap::new();
    for (i, (part, off)) in delivered.iter().enumerate() {
        assert_eq!(
            *part,
            recs[i].partition.unwrap(),
            "record {i} delivered to wrong partition"
        );
        let want = next.entry(*part).or_insert(0);
        assert_eq!(
            *off, *want,
            "record {i}: delivery offset out of produce order in partition {part}"
        );
        *want += 1;
    }

    // Passthrough: every stored batch carries the producer's codec.
    let partitions: Vec<i32> = (0..CODEC_PARTITIONS).collect();
    let want_codec = match codec {
        "none" => 0,
        "gzip" => 1,
        "snappy" => 2,
        "lz4" => 3,
        "zstd" => 4,
        other => panic!("unknown codec {other}"),
    };
    // librdkafka sends a batch plain when the codec would not shrink it (a record or two), so
    // plain batches may sit beside compressed ones; a broker that refused the codec (librdkafka
    // then sends everything plain) or recompressed would fail this.
    let mut records_by_codec: BTreeMap<u8, i64> = BTreeMap::new();
    for (c, n) in stored_batch_codecs(&broker.data_dir(), &topic, &partitions) {
        *records_by_codec.entry(c).or_default() += n as i64;
    }
    assert!(
        records_by_codec.keys().all(|c| *c == want_codec || *c == 0),
        "{topic}: records per stored codec {records_by_codec:?}"
    );
    assert_eq!(
        records_by_codec.values().sum::<i64>(),
        CODEC_RECORDS as i64,
        "{topic}: records on disk"
    );
    assert!(
        records_by_codec.get(&want_codec).copied().unwrap_or(0) * 10 >= CODEC_RECORDS as i64 * 9,
        "{topic}: records per stored codec {records_by_codec:?}: codec {want_codec} not passed through"
    );

    let got = consume_exact(
        &broker.bootstrap(),
        &topic,
        &partitions,
        Offset::Beginning,
        CODEC_RECORDS,
        CONSUME_TIMEOUT,
    );
    assert_dense_offsets(&got);

    // Per partition, what we read is exactly what we sent to it, in send order.
    let mut sent: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (i, r) in recs.iter().enumerate() {
        sent.entry(r.partition.unwrap()).or_default().push(i);
    }
    let read = by_partition(&got);
    for (part, idxs) in &sent {
        let recs_read = read.get(part).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(recs_read.len(), idxs.len(), "partition {part}: count");
        for (pos, (&i, r)) in idxs.iter().zip(recs_read).enumerate() {
            assert_eq!(
                r.offset, delivered[i].1,
                "partition {part} position {pos}: offset"
            );
            assert!(
                r.key == recs[i].key && r.value == recs[i].value,
                "partition {part} offset {}: bytes differ from record {i} ({codec})",
                r.offset
            );
        }
    }
    broker.stop();
}

#[test]
fn codec_none_100k_records_6_partitions() {
    roundtrip_codec("none");
}

#[test]
fn codec_gzip_100k_records_6_partitions() {
    roundtrip_codec("gzip");
}

#[test]
fn codec_snappy_100k_records_6_partitions() {
    roundtrip_codec("snappy");
}

#[test]
fn codec_lz4_100k_records_6_partitions() {
    roundtrip_codec("lz4");
}

#[test]
fn codec_zstd_100k_records_6_partitions() {
    roundtrip_codec("zstd");
}

// ---------------------------------------------------------------------------------------------
// 2. Keyed partitioning: murmur2, like the Java client's default partitioner
// ---------------------------------------------------------------------------------------------

/// Kafka's murmur2 (the broker's copy, checked against Kafka's reference vectors below).
use odradek::coordinator::offsets::murmur2;

/// The Java default partitioner for a non-null key.
fn murmur2_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[test]
fn murmur2_matches_kafka_reference_vectors() {
    // Values from Kafka's UtilsTest.testMurmur2.
    let cases: &[(&[u8], i32)] = &[
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        (b"abc", 479_470_107),
    ];
    for (key, want) in cases {
        assert_eq!(
            murmur2(key),
            *want,
            "murmur2({:?})",
            String::from_utf8_lossy(key)
        );
    }
}

#[test]
fn keyed_records_land_on_murmur2_partition() {
    const PARTITIONS: i32 = 7;
    let mut broker = broker_with_partitions(PARTITIONS);
    let topic = "keyed";
    // Text keys plus binary keys of every tail length 1..=12.
    let mut keys: Vec<Vec<u8>> = (0..300).map(|k| format!("user-{k}").into_bytes()).collect();
    for len in 1..=12u8 {
        keys.push(
            (0..len)
                .map(|b| b.wrapping_mul(37).wrapping_add(len))
                .collect(),
        );
    }
    let recs: Vec<Rec> = (0..6000)
        .map(|i| Rec::keyed(keys[i % keys.len()].clone(), payload("keyed", i, 40)))
        .collect();

    let p = producer(
        &broker.bootstrap(),
        &[("partitioner", "murmur2_random"), ("acks", "all")],
    );
    let delivered = produce_all(&p, topic, &recs, PRODUCE_TIMEOUT);
    drop(p);
    for (i, (part, _)) in delivered.iter().enumerate() {
        let key = recs[i].key.as_ref().unwrap();
        assert_eq!(
            *part,
            murmur2_partition(key, PARTITIONS),
            "record {i} key {key:?}: delivery partition"
        );
    }

    let partitions: Vec<i32> = (0..PARTITIONS).collect();
    let got = consume_exact(
        &broker.bootstrap(),
        topic,
        &partitions,
        Offset::Beginning,
        recs.len(),
        CONSUME_TIMEOUT,
    );
    let mut key_partitions: HashMap<Vec<u8>, HashSet<i32>> = HashMap::new();
    for r in &got {
        let key = r.key.clone().expect("keyed record read back without key");
        assert_eq!(
            r.partition,
            murmur2_partition(&key, PARTITIONS),
            "key {key:?} read from wrong partition"
        );
        key_partitions.entry(key).or_default().insert(r.partition);
    }
    assert_eq!(key_partitions.len(), keys.len(), "distinct keys read back");
    for (k, parts) in &key_partitions {
        assert_eq!(parts.len(), 1, "key {k:?} spread over partitions {parts:?}");
    }
    // Values in each partition come back in produce order.
    let read = by_partition(&got);
    for (part, rs) in read {
        let sent: Vec<&Option<Vec<u8>>> = recs
            .iter()
            .zip(&delivered)
            .filter(|(_, d)| d.0 == part)
            .map(|(r, _)| &r.value)
            .collect();
        let back: Vec<&Option<Vec<u8>>> = rs.iter().map(|r| &r.value).collect();
        assert!(
            sent == back,
            "partition {part}: values differ from produce order"
        );
    }
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// 3. Headers, null keys, null values, explicit timestamps
// ---------------------------------------------------------------------------------------------

#[test]
fn headers_nulls_and_timestamps_round_trip() {
    let mut broker = broker_with_partitions(1);
    let topic = "shapes";
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let mut recs = vec![
        Rec {
            key: None,
            value: Some(b"null key".to_vec()),
            ..Rec::default()
        },
        Rec {
            key: Some(b"null value".to_vec()),
            value: None,
            ..Rec::default()
        },
        Rec {
            key: None,
            value: None,
            ..Rec::default()
        },
        Rec {
            key: Some(b"headers".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![
                ("a".into(), Some(b"1".to_vec())),
                ("a".into(), Some(b"2".to_vec())), // repeated key, order kept
                ("null-header".into(), None),
                ("empty-header".into(), Some(Vec::new())),
                ("binary".into(), Some(all_bytes.clone())),
                ("ünïcödé-κλειδί".into(), Some("värde".as_bytes().to_vec())),
            ],
            ..Rec::default()
        },
        Rec {
            key: Some(all_bytes.clone()),
            value: Some(all_bytes.clone()),
            ..Rec::default()
        },
        Rec {
            key: Some(b"big".to_vec()),
            value: Some(payload("big", 0, 200_000)),
            ..Rec::default()
        },
        Rec {
            key: None,
            value: None,
            headers: vec![("only-headers".into(), Some(b"x".to_vec()))],
            ..Rec::default()
        },
    ];
    // Timestamps out of order inside one batch (negative deltas), far past and far future.
    let stamps = [
        1_700_000_000_000i64,
        1_600_000_000_000,
        1_700_000_000_001,
        1,
        4_102_444_800_000,
        1_234_567_890_123,
        1_700_000_000_000,
    ];
    for (r, ts) in recs.iter_mut().zip(stamps) {
        r.timestamp_ms = Some(ts);
        r.partition = Some(0);
    }

    let p = producer(&broker.bootstrap(), &[("acks", "all"), ("linger.ms", "50")]);
    let delivered = produce_all(&p, topic, &recs, PRODUCE_TIMEOUT);
    drop(p);
    let got = consume_exact(
        &broker.bootstrap(),
        topic,
        &[0],
        Offset::Beginning,
        recs.len(),
        CONSUME_TIMEOUT,
    );
    assert_dense_offsets(&got);
    for (i, (sent, back)) in recs.iter().zip(&got).enumerate() {
        assert_eq!(back.offset, delivered[i].1, "record {i}: offset");
        assert_eq!(back.key, sent.key, "record {i}: key");
        assert_eq!(back.value, sent.value, "record {i}: value");
        assert_eq!(back.headers, sent.headers, "record {i}: headers");
        assert_eq!(
            back.create_time_ms, sent.timestamp_ms,
            "record {i}: CreateTime"
        );
    }
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// 4. acks=0 / 1 / all
// ---------------------------------------------------------------------------------------------

#[test]
fn acks_0_1_all_produce_and_consume_back() {
    const N: usize = 5000;
    let mut broker = broker_with_partitions(1);
    for acks in ["0", "1", "all"] {
        let topic = format!("acks-{acks}");
        let recs: Vec<Rec> = (0..N)
            .map(|i| Rec::keyed(format!("{i}"), payload(&topic, i, 100)).in_partition(0))
            .collect();
        let p = producer(&broker.bootstrap(), &[("acks", acks)]);
        let reports = try_produce_all(&p, &topic, &recs, PRODUCE_TIMEOUT);
        drop(p);
        for (i, r) in reports.iter().enumerate() {
            match r {
                Ok((part, off)) => {
                    assert_eq!(*part, 0, "acks={acks} record {i}: partition");
                    if acks != "0" {
                        assert_eq!(*off, i as i64, "acks={acks} record {i}: offset");
                    }
                }
                Err(e) => panic!("acks={acks} record {i}: delivery error {e}"),
            }
        }
        // acks=0 records are only "eventually" there: consume_exact waits for all of them.
        let got = consume_exact(
            &broker.bootstrap(),
            &topic,
            &[0],
            Offset::Beginning,
            N,
            CONSUME_TIMEOUT,
        );
        assert_dense_offsets(&got);
        for (i, (sent, back)) in recs.iter().zip(&got).enumerate() {
            assert!(
                back.key == sent.key && back.value == sent.value,
                "acks={acks}: record {i} differs"
            );
        }
    }
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// 5. Idempotent producer, 5 in flight
// ---------------------------------------------------------------------------------------------

#[test]
fn idempotent_producer_no_duplicates_no_gaps() {
    const N: usize = 60_000;
    const PARTITIONS: i32 = 6;
    let mut broker = broker_with_partitions(PARTITIONS);
    let topic = "idempotent";
    let recs: Vec<Rec> = (0..N)
        .map(|i| {
            Rec::keyed(format!("{i}"), payload("idem", i, 80))
                .in_partition((i % PARTITIONS as usize) as i32)
        })
        .collect();
    // Small batches and no linger so five requests per connection really are in flight.
    let p = producer(
        &broker.bootstrap(),
        &[
            ("enable.idempotence", "true"),
            ("max.in.flight.requests.per.connection", "5"),
            ("acks", "all"),
            ("linger.ms", "0"),
            ("batch.num.messages", "200"),
        ],
    );
    let delivered = produce_all(&p, topic, &recs, PRODUCE_TIMEOUT);
    drop(p);

    let mut next: HashMap<i32, i64> = HashMap::new();
    for (i, (part, off)) in delivered.iter().enumerate() {
        let want = next.entry(*part).or_insert(0);
        assert_eq!(
            *off, *want,
            "record {i}: idempotent delivery offset in partition {part} (gap or duplicate)"
        );
        *want += 1;
    }

    let partitions: Vec<i32> = (0..PARTITIONS).collect();
    let got = consume_exact(
        &broker.bootstrap(),
        topic,
        &partitions,
        Offset::Beginning,
        N,
        CONSUME_TIMEOUT,
    );
    assert_dense_offsets(&got);
    let mut seen = HashSet::new();
    for r in &got {
        assert!(
            seen.insert(r.value.clone()),
            "duplicate record at partition {} offset {}",
            r.partition,
            r.offset
        );
    }
    let index: HashMap<(i32, i64), usize> =
        delivered.iter().enumerate().map(|(i, d)| (*d, i)).collect();
    for r in &got {
        let i = index[&(r.partition, r.offset)];
        assert!(
            r.value == recs[i].value,
            "partition {} offset {}: not record {i}",
            r.partition,
            r.offset
        );
    }
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// 6. Graceful restart
// ---------------------------------------------------------------------------------------------

#[test]
fn restart_keeps_records_and_offsets_continue() {
    const N: usize = 9000;
    const PARTITIONS: i32 = 3;
    let mut broker = broker_with_partitions(PARTITIONS);
    let topic = "restart";
    let partitions: Vec<i32> = (0..PARTITIONS).collect();
    let mut recs: Vec<Rec> = (0..N)
        .map(|i| {
            Rec::keyed(format!("{i}"), payload("restart", i, 120)).in_partition((i % 3) as i32)
        })
        .collect();
    let p = producer(
        &broker.bootstrap(),
        &[("acks", "all"), ("compression.codec", "lz4")],
    );
    let mut delivered = produce_all(&p, topic, &recs, PRODUCE_TIMEOUT);
    drop(p);

    broker.restart(); // SIGTERM (asserts exit 0), then start on the same data dir and port

    let check = |bootstrap: &str, delivered: &[(i32, i64)], recs: &[Rec]| {
        let got = consume_exact(
            bootstrap,
            topic,
            &partitions,
            Offset::Beginning,
            recs.len(),
            CONSUME_TIMEOUT,
        );
        assert_dense_offsets(&got);
        let at: HashMap<(i32, i64), &Consumed> =
            got.iter().map(|r| ((r.partition, r.offset), r)).collect();
        for (i, d) in delivered.iter().enumerate() {
            let r = at
                .get(d)
                .unwrap_or_else(|| panic!("record {i} missing at {d:?} after restart"));
            assert!(
                r.key == recs[i].key && r.value == recs[i].value,
                "record {i} at {d:?} differs after restart"
            );
        }
    };
    check(&broker.bootstrap(), &delivered, &recs);

    // Producing continues at the next offset of every partition.
    let more: Vec<Rec> = (N..N + 300)
        .map(|i| {
            Rec::keyed(format!("{i}"), payload("restart", i, 120)).in_partition((i % 3) as i32)
        })
        .collect();
    let p = producer(&broker.bootstrap(), &[("acks", "all")]);
    let more_delivered = produce_all(&p, topic, &more, PRODUCE_TIMEOUT);
    drop(p);
    let per_partition = (N / 3) as i64;
    let mut next: HashMap<i32, i64> = partitions.iter().map(|p| (*p, per_partition)).collect();
    for (i, (part, off)) in more_delivered.iter().enumerate() {
        let want = next.get_mut(part).unwrap();
        assert_eq!(
            *off, *want,
            "post-restart record {i}: offset in partition {part}"
        );
        *want += 1;
    }
    recs.extend(more);
    delivered.extend(more_delivered);

    broker.restart();
    check(&broker.bootstrap(), &delivered, &recs);
    broker.stop();
}

#[test]
fn sigint_stops_cleanly_and_keeps_records() {
    let mut broker = broker_with_partitions(2);
    let topic = "sigint";
    let recs: Vec<Rec> = (0..500)
        .map(|i| Rec::keyed(format!("{i}"), payload("sigint", i, 90)).in_partition((i % 2) as i32))
        .collect();
    let p = producer(&broker.bootstrap(), &[("acks", "all")]);
    let delivered = produce_all(&p, topic, &recs, PRODUCE_TIMEOUT);
    drop(p);
    broker.interrupt(); // SIGINT: flush, exit 0 (asserted)
    broker.start_again();
    let got = consume_exact(
        &broker.bootstrap(),
        topic,
        &[0, 1],
        Offset::Beginning,
        recs.len(),
        CONSUME_TIMEOUT,
    );
    let at: HashMap<(i32, i64), &Consumed> =
        got.iter().map(|r| ((r.partition, r.offset), r)).collect();
    for (i, d) in delivered.iter().enumerate() {
        let r = at
            .get(d)
            .unwrap_or_else(|| panic!("record {i} missing at {d:?} after SIGINT restart"));
        assert!(
            r.value == recs[i].value,
            "record {i} at {d:?} differs after SIGINT restart"
        );
    }
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// 7. kill -9 under acks=all load
// ---------------------------------------------------------------------------------------------

/// Reads every partition from the beginning until each has reached `until[p]` (inclusive) or
/// the timeout passes; returns what was read.
fn consume_until(
    bootstrap: &str,
    topic: &str,
    until: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Vec<Consumed> {
    let consumer: BaseConsumer = consumer(bootstrap, &[]);
    let mut tpl = TopicPartitionList::new();
    for p in until.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut high: HashMap<i32, i64> = HashMap::new();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    while until
        .iter()
        .any(|(p, want)| high.get(p).copied().unwrap_or(-1) < *want)
    {
        if Instant::now() >= deadline {
            // Tell a log that lost records (log end below what was acknowledged) from a read
            // path that stalls (log end beyond the consumer's position).
            let watermarks: BTreeMap<i32, String> = until
                .keys()
                .map(|p| {
                    let w = consumer.fetch_watermarks(topic, *p, Duration::from_secs(5));
                    (*p, format!("{w:?}"))
                })
                .collect();
            panic!(
                "after {timeout:?} read up to {high:?}, needed {until:?}; broker (earliest, \
                 end) now {watermarks:?}; client errors: {:?}",
                &errors[..errors.len().min(5)]
            );
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let r = owned_message(&m);
                high.insert(r.partition, r.offset);
                out.push(r);
            }
            Some(Err(e)) => errors.push(e.to_string()),
            None => {}
        }
    }
    out
}

#[test]
fn kill9_under_acks_all_load_loses_no_acknowledged_record() {
    const PARTITIONS: i32 = 4;
    let mut broker = broker_with_partitions(PARTITIONS);
    let topic = "crash";
    let bootstrap = broker.bootstrap();

    let stop = Arc::new(AtomicBool::new(false));
    let acked_so_far = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, acked_so_far, bootstrap) =
            (stop.clone(), acked_so_far.clone(), bootstrap.clone());
        thread::spawn(move || {
            let p = producer(
                &bootstrap,
                &[
                    ("acks", "all"),
                    ("linger.ms", "2"),
                    ("message.timeout.ms", "15000"),
                    ("retries", "0"),
                ],
            );
            let mut sent = 0usize;
            let hard_stop = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && Instant::now() < hard_stop {
                let rec = Rec::keyed(format!("{sent}"), payload("crash", sent, 150))
                    .in_partition((sent % 4) as i32);
                let id = p.context().reserve(1);
                assert_eq!(id, sent);
                send_one(&p, topic, &rec, id, hard_stop);
                sent += 1;
                if sent % 64 == 0 {
                    p.poll(Duration::ZERO);
                    acked_so_far.store(p.context().ok_total(), Ordering::SeqCst);
                }
                // Keep the queue shallow so the load is steady rather than one burst.
                while p.in_flight_count() > 20_000 && !stop.load(Ordering::SeqCst) {
                    p.poll(Duration::from_millis(10));
                }
            }
            // Drop what cannot be delivered any more and collect every report.
            p.purge(PurgeConfig::default().queue().inflight());
            let drain_until = Instant::now() + Duration::from_secs(20);
            while p.context().count() < sent && Instant::now() < drain_until {
                p.poll(Duration::from_millis(100));
            }
            (sent, p.context().drain())
        })
    };

    // Let the load run ~1.5 s and acknowledge a fair number of records, then crash the broker.
    let started = Instant::now();
    let wait_until = started + Duration::from_secs(60);
    while (started.elapsed() < Duration::from_millis(1500)
        || acked_so_far.load(Ordering::SeqCst) < 1000)
        && Instant::now() < wait_until
    {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        acked_so_far.load(Ordering::SeqCst) > 0,
        "no record acknowledged within 60 s of load\n{}",
        broker.log_tail(40)
    );
    broker.kill9();
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let (sent, reports) = with_timeout(
        Duration::from_secs(60),
        "producer thread shutdown",
        move || load.join().expect("producer thread panicked"),
    );

    // Acknowledged records: id -> (partition, offset).
    let mut acked: BTreeMap<usize, (i32, i64)> = BTreeMap::new();
    for (id, d) in &reports {
        if let Ok(po) = d {
            acked.insert(*id, *po);
        }
    }
    assert!(!acked.is_empty(), "no acknowledged records");
    let mut owners: HashMap<(i32, i64), usize> = HashMap::new();
    for (id, po) in &acked {
        assert_eq!(
            po.0,
            (*id % 4) as i32,
            "record {id} acknowledged on the wrong partition"
        );
        if let Some(other) = owners.insert(*po, *id) {
            panic!("records {other} and {id} both acknowledged at {po:?}");
        }
    }
    let mut until: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, -1)).collect();
    for (p, o) in acked.values() {
        let e = until.get_mut(p).unwrap();
        *e = (*e).max(*o);
    }
    eprintln!(
        "kill -9: {sent} sent, {} acknowledged, highest acknowledged offsets {until:?}",
        acked.len()
    );

    broker.start_again();
    let got = consume_until(&broker.bootstrap(), topic, &until, CONSUME_TIMEOUT);
    // Recovery may drop unacknowledged tail records but never leaves holes.
    assert_dense_offsets(&got);
    let at: HashMap<(i32, i64), &Consumed> =
        got.iter().map(|r| ((r.partition, r.offset), r)).collect();
    for (id, po) in &acked {
        let r = at
            .get(po)
            .unwrap_or_else(|| broker.fail(&format!("acknowledged record {id} missing at {po:?}")));
        let want = payload("crash", *id, 150);
        if r.value.as_deref() != Some(want.as_slice())
            || r.key.as_deref() != Some(format!("{id}").as_bytes())
        {
            broker.fail(&format!(
                "acknowledged record {id} at {po:?} has different bytes after recovery"
            ));
        }
    }

    // New records go after everything acknowledged before the crash.
    let more: Vec<Rec> = (0..PARTITIONS)
        .map(|p| Rec::value(format!("after-crash-{p}")).in_partition(p))
        .collect();
    let p = producer(&broker.bootstrap(), &[("acks", "all")]);
    let after = produce_all(&p, topic, &more, PRODUCE_TIMEOUT);
    drop(p);
    for (part, off) in after {
        assert!(
            off > until[&part],
            "partition {part}: new record at {off}, not after acknowledged {}",
            until[&part]
        );
    }
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// Timestamp lookup inside compressed batches
// ---------------------------------------------------------------------------------------------

/// librdkafka's offsets_for_times (ListOffsets by timestamp) finds the exact record inside lz4
/// batches that hold many records, as Kafka does, not just the batch.
#[test]
fn offsets_for_times_finds_records_inside_compressed_batches() {
    let mut broker = broker_with_partitions(1);
    let topic = "times";
    let t0: i64 = 1_750_000_000_000;
    let recs: Vec<Rec> = (0..200)
        .map(|i| {
            let mut r = Rec::value(payload("times", i, 100)).in_partition(0);
            r.timestamp_ms = Some(t0 + 10 * i as i64);
            r
        })
        .collect();
    let p = producer(
        &broker.bootstrap(),
        &[
            ("compression.codec", "lz4"),
            ("linger.ms", "200"),
            ("acks", "all"),
        ],
    );
    let delivered = produce_all(&p, topic, &recs, PRODUCE_TIMEOUT);
    drop(p);
    assert_eq!(delivered.last().map(|d| d.1), Some(199));
    let batches = stored_batch_codecs(&broker.data_dir(), topic, &[0]);
    assert!(
        batches.iter().any(|(codec, n)| *codec == 3 && *n > 10),
        "expected lz4 batches of many records, stored {batches:?}"
    );

    let consumer = consumer(&broker.bootstrap(), &[]);
    for (ts, want) in [
        (t0 - 1, 0),
        (t0, 0),
        (t0 + 1, 1),
        (t0 + 555, 56),
        (t0 + 1990, 199),
    ] {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(ts))
            .unwrap();
        let found = consumer
            .offsets_for_times(tpl, Duration::from_secs(15))
            .expect("offsets_for_times");
        let offset = found.find_partition(topic, 0).map(|e| e.offset());
        assert_eq!(offset, Some(Offset::Offset(want)), "timestamp {ts}");
    }
    // After the last record's timestamp: no such offset (librdkafka reports the end).
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(t0 + 1991))
        .unwrap();
    let found = consumer
        .offsets_for_times(tpl, Duration::from_secs(15))
        .expect("offsets_for_times");
    assert_eq!(
        found.find_partition(topic, 0).map(|e| e.offset()),
        Some(Offset::End)
    );
    broker.stop();
}

/// With `log.message.timestamp.type=LogAppendTime` the broker stamps each batch with its own
/// clock (maxTimestamp and the timestamp-type bit, CRC recomputed): consumers, which check CRCs,
/// see LogAppendTime timestamps from the broker's clock, not the producer's; records are intact.
#[test]
fn log_append_time_is_stamped_by_the_broker() {
    let mut broker = BrokerOptions::new()
        .cores("2")
        .set("num.partitions", 2)
        .set("log.message.timestamp.type", "LogAppendTime")
        .start();
    let topic = "stamped";
    let old_ts = 1_000_000_000_000; // 2001: far from now
    let recs: Vec<Rec> = (0..50)
        .map(|i| {
            let mut r =
                Rec::keyed(format!("k{i}"), payload("stamped", i, 80)).in_partition((i % 2) as i32);
            r.timestamp_ms = Some(old_ts + i as i64);
            r
        })
        .collect();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let p = producer(
        &broker.bootstrap(),
        &[("compression.codec", "lz4"), ("acks", "all")],
    );
    produce_all(&p, topic, &recs, PRODUCE_TIMEOUT);
    drop(p);
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let got = consume_exact(
        &broker.bootstrap(),
        topic,
        &[0, 1],
        Offset::Beginning,
        recs.len(),
        CONSUME_TIMEOUT,
    );
    for r in &got {
        assert_eq!(
            r.create_time_ms, None,
            "record {}-{} still has CreateTime",
            r.partition, r.offset
        );
        let t = r
            .log_append_time_ms
            .unwrap_or_else(|| panic!("record {}-{} has no LogAppendTime", r.partition, r.offset));
        assert!(
            (before - 1000..=after + 1000).contains(&t),
            "LogAppendTime {t} outside [{before}, {after}]"
        );
    }
    let mut values: Vec<Vec<u8>> = got.iter().filter_map(|r| r.value.clone()).collect();
    let mut sent: Vec<Vec<u8>> = recs.iter().filter_map(|r| r.value.clone()).collect();
    values.sort();
    sent.sort();
    assert_eq!(values, sent, "record values after stamping");
    broker.stop();
}

/// A librdkafka consumer in a group commits what it consumed (commitSync), reads its committed
/// offsets back, and after a broker restart (and a kill -9) a new consumer of the same group
/// resumes exactly there (`Offset::Stored`); another group has nothing committed (pub/sub).
#[test]
fn group_commits_survive_restart_and_resume_from_committed() {
    use rdkafka::consumer::CommitMode;
    use rdkafka::Message;
    const PARTITIONS: i32 = 3;
    const N: usize = 600;
    let mut broker = broker_with_partitions(PARTITIONS);
    let topic = "committed";
    let recs: Vec<Rec> = (0..N)
        .map(|i| Rec::value(format!("v{i}")).in_partition((i % 3) as i32))
        .collect();
    let p = producer(&broker.bootstrap(), &[("acks", "all")]);
    produce_all(&p, topic, &recs, PRODUCE_TIMEOUT);
    drop(p);

    let group_consumer = |bootstrap: &str, group: &str| -> BaseConsumer {
        consumer(
            bootstrap,
            &[("group.id", group), ("auto.offset.reset", "earliest")],
        )
    };
    // Consume 50 records from each partition, committing the next offset to read.
    let c = group_consumer(&broker.bootstrap(), "resumers");
    let mut tpl = TopicPartitionList::new();
    for part in 0..PARTITIONS {
        tpl.add_partition_offset(topic, part, Offset::Beginning)
            .expect("add partition");
    }
    c.assign(&tpl).expect("assign");
    let mut next: HashMap<i32, i64> = HashMap::new();
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    while next.values().filter(|o| **o >= 50).count() < PARTITIONS as usize {
        assert!(Instant::now() < deadline, "consumed only {next:?}");
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let e = next.entry(m.partition()).or_insert(0);
            if *e < 50 {
                assert_eq!(m.offset(), *e, "partition {}", m.partition());
                *e = m.offset() + 1;
            }
        }
    }
    let mut commit = TopicPartitionList::new();
    for part in 0..PARTITIONS {
        commit
            .add_partition_offset(topic, part, Offset::Offset(50))
            .expect("add commit");
    }
    c.commit(&commit, CommitMode::Sync).expect("commitSync");
    let committed = c
        .committed_offsets(tpl.clone(), Duration::from_secs(30))
        .expect("committed offsets");
    for e in committed.elements() {
        assert_eq!(
            e.offset(),
            Offset::Offset(50),
            "partition {}",
            e.partition()
        );
    }
    drop(c);

    let resume = |bootstrap: &str, phase: &str| {
        let c = group_consumer(bootstrap, "resumers");
        let mut stored = TopicPartitionList::new();
        for part in 0..PARTITIONS {
            stored
                .add_partition_offset(topic, part, Offset::Stored)
                .expect("add partition");
        }
        c.assign(&stored).expect("assign");
        let mut first: HashMap<i32, i64> = HashMap::new();
        let deadline = Instant::now() + CONSUME_TIMEOUT;
        while first.len() < PARTITIONS as usize {
            assert!(
                Instant::now() < deadline,
                "{phase}: first offsets {first:?}"
            );
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                first.entry(m.partition()).or_insert(m.offset());
            }
        }
        for part in 0..PARTITIONS {
            assert_eq!(
                first[&part], 50,
                "{phase}: resumed offset of partition {part}"
            );
        }
        // Another group has committed nothing: it starts from auto.offset.reset (earliest).
        let other = group_consumer(bootstrap, "someone-else");
        let none = other
            .committed_offsets(tpl.clone(), Duration::from_secs(30))
            .expect("committed offsets of another group");
        assert!(
            none.elements()
                .iter()
                .all(|e| e.offset() == Offset::Invalid),
            "{phase}: another group sees no commits"
        );
    };
    resume(&broker.bootstrap(), "before restart");
    broker.restart();
    resume(&broker.bootstrap(), "after restart");
    broker.kill9();
    broker.start_again();
    resume(&broker.bootstrap(), "after kill -9");
    broker.stop();
}
