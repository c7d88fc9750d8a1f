//! `producer.id.expiration.ms` against a real `odradek serve` and real librdkafka idempotent
//! producers: the partition forgets idle producers (its state shrinks, seen through the
//! `odradek_producer_ids` gauge), and a
//! producer idle past the expiration comes back with its next sequence and is accepted, with
//! no error and no duplicate (KIP-360).

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::topic_partition_list::Offset;

const TOPIC: &str = "expiry";
const EXPIRATION_MS: u64 = 3_000;
const SHORT_LIVED: usize = 12;

/// The `odradek_producer_ids` sample of partition 0 of [`TOPIC`], if the gauge has one.
fn producer_ids(metrics: SocketAddr) -> Option<u64> {
    let text = try_metrics_text(metrics).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("odradek_producer_ids{")?;
        let (labels, value) = rest.split_once("} ")?;
        (labels.contains(&format!("topic=\"{TOPIC}\"")) && labels.contains("partition=\"0\""))
            .then(|| value.trim().parse().ok())?
    })
}

/// Waits (bounded) until the gauge satisfies `ok`; returns its last value.
fn wait_for_ids(broker: &Broker, metrics: SocketAddr, what: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = producer_ids(metrics);
        if let Some(v) = v.filter(|v| ok(*v)) {
            return v;
        }
        if Instant::now() > deadline {
            broker.fail(&format!(
                "odradek_producer_ids never became {what} (last {v:?})"
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// One record per batch: produced and flushed one at a time.
fn send_each(p: &TestProducer, values: &[String]) -> Vec<i64> {
    values
        .iter()
        .map(|v| {
            let rec = Rec::value(v.clone().into_bytes()).in_partition(0);
            let out = produce_all(p, TOPIC, &[rec], Duration::from_secs(30));
            assert_eq!(out[0].0, 0);
            out[0].1
        })
        .collect()
}

#[test]
fn idle_producers_are_forgotten_and_one_that_comes_back_is_accepted() {
    let metrics_port = free_port();
    let broker = BrokerOptions::new()
        .cores(test_cores())
        .set("metrics.listen", format!("127.0.0.1:{metrics_port}"))
        .set("producer.id.expiration.ms", EXPIRATION_MS)
        .set("producer.id.expiration.check.interval.ms", 200)
        .start();
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    create_topic(broker.addr(), TOPIC, 1);
    let idempotent = [("enable.idempotence", "true"), ("acks", "all")];

    // The producer that will go idle: five records, then nothing for a while.
    let keeper = producer(&broker.bootstrap(), &idempotent);
    let first: Vec<String> = (0..5).map(|i| format!("keeper-{i}")).collect();
    let mut offsets = send_each(&keeper, &first);
    let keeper_done = Instant::now();

    // Short-lived idempotent producers, one record each: a new producer id every time.
    let bootstrap = broker.bootstrap();
    let threads: Vec<_> = (0..SHORT_LIVED)
        .map(|i| {
            let bootstrap = bootstrap.clone();
            thread::spawn(move || {
                let p = producer(
                    &bootstrap,
                    &[("enable.idempotence", "true"), ("acks", "all")],
                );
                send_each(&p, &[format!("short-{i}")])
            })
        })
        .collect();
    for t in threads {
        offsets.extend(t.join().expect("short-lived producer"));
    }
    // All of them are known to the partition, unless the machine was so slow that the
    // keeper already expired (then only the drop to 0 below is checked).
    let peak = producer_ids(metrics).expect("the gauge has the partition");
    if keeper_done.elapsed() < Duration::from_millis(EXPIRATION_MS * 2 / 3) {
        assert_eq!(peak, SHORT_LIVED as u64 + 1, "every producer id has state");
    }

    // Everyone idle past the expiration: the partition forgets them all.
    wait_for_ids(&broker, metrics, "0", |v| v == 0);

    // The keeper comes back with its next sequence (5): accepted, no error, no duplicate.
    let second: Vec<String> = (5..10).map(|i| format!("keeper-{i}")).collect();
    offsets.extend(send_each(&keeper, &second));
    assert_eq!(
        wait_for_ids(&broker, metrics, "1", |v| v == 1),
        1,
        "only the keeper has state now"
    );
    let mut sorted = offsets.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        offsets.len(),
        "an offset was given twice: {offsets:?}"
    );

    // Exactly what was acknowledged is in the log, each once, the keeper's in order.
    let total = 10 + SHORT_LIVED;
    let got = consume_exact(
        &broker.bootstrap(),
        TOPIC,
        &[0],
        Offset::Beginning,
        total,
        Duration::from_secs(30),
    );
    let values: Vec<String> = got
        .iter()
        .map(|c| String::from_utf8(c.value.clone().unwrap_or_default()).expect("utf-8"))
        .collect();
    let keeper_values: Vec<&String> = values.iter().filter(|v| v.starts_with("keeper-")).collect();
    let expected: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(keeper_values, expected.iter().collect::<Vec<_>>());
    for i in 0..SHORT_LIVED {
        let v = format!("short-{i}");
        assert_eq!(values.iter().filter(|x| **x == v).count(), 1, "{v}");
    }
    let mut read_offsets: Vec<i64> = got.iter().map(|c| c.offset).collect();
    read_offsets.sort_unstable();
    assert_eq!(read_offsets, sorted);
}
