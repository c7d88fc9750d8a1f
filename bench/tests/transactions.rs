//! Black-box test of the transactional producer (`produce --transactional-records N`) against a
//! real `odradek serve`: every record is written inside a committed transaction, so a
//! read_committed reader — the bench's own consumer and librdkafka — sees exactly the records
//! acknowledged, all of them from transactional batches, with a COMMIT marker per transaction
//! and partition and no ABORT marker.
//!
//! What breaks it: batches without the transactional bit (no transactional records), no EndTxn
//! or no markers (the last stable offset stays behind: read_committed readers stall and report
//! records lost), partitions written without AddPartitionsToTxn (refused or never committed).

mod common;

use std::time::{Duration, Instant};

use common::{bench, cpus, json, Broker};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const RECORDS: u64 = 6000;
const PER_TXN: u64 = 100;
const PRODUCERS: u64 = 3;

#[test]
fn transactional_produce_is_committed_and_read_committed_sees_every_record() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let cores = cpus().1;
    let tmp = tempfile::tempdir().expect("tmp");
    let acked = tmp.path().join("acked.json");
    let pj = tmp.path().join("produce.json");
    let (rc, out) = bench(&[
        "produce",
        "--bootstrap",
        &bs,
        "--cores",
        &cores,
        "--topic",
        "txn",
        "--partitions",
        "4",
        "--records",
        &RECORDS.to_string(),
        "--record-size",
        "200",
        "--producers-per-core",
        &PRODUCERS.to_string(),
        "--transactional-records",
        &PER_TXN.to_string(),
        "--quiet",
        "--acked-out",
        acked.to_str().unwrap(),
        "--json",
        pj.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{out}\nbroker log:\n{}", broker.log());
    let v = json(&pj);
    assert_eq!(v["produce"]["acknowledged"], RECORDS, "{v}");
    assert_eq!(v["produce"]["errored"], 0, "{v}");
    let t = &v["produce"]["transactions"];
    // Each producer writes RECORDS / PRODUCERS records, PER_TXN per transaction.
    assert_eq!(t["committed"], RECORDS / PER_TXN, "{v}");
    assert_eq!(t["aborted"], 0, "{v}");
    assert!(t["commit_latency_us"]["count"].as_u64().unwrap() > 0, "{v}");

    // The bench's consumer, read_committed, checks every acknowledged offset.
    let cj = tmp.path().join("consume.json");
    let (rc, out) = bench(&[
        "consume",
        "--bootstrap",
        &bs,
        "--cores",
        &cores,
        "--read-committed",
        "--verify",
        acked.to_str().unwrap(),
        "--drain-timeout-s",
        "10",
        "--quiet",
        "--json",
        cj.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{out}\nbroker log:\n{}", broker.log());
    assert!(
        out.contains(&format!(
            "acknowledged {RECORDS}, consumed {RECORDS}, lost 0, duplicated 0"
        )),
        "{out}"
    );
    let c = json(&cj);
    assert_eq!(c["consume"]["read_committed"], true, "{c}");
    assert_eq!(c["consume"]["transactional_records"], RECORDS, "{c}");
    assert!(
        c["consume"]["commit_markers"].as_u64().unwrap() >= RECORDS / PER_TXN,
        "{c}"
    );
    assert_eq!(c["consume"]["abort_markers"], 0, "{c}");
    assert_eq!(c["consume"]["aborted_records"], 0, "{c}");

    // librdkafka, read_committed, sees exactly the records produced.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("group.id", "bench-txn-test")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("rdkafka consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset("txn", p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut n = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Read until the count is reached, then a little longer: nothing more may come.
    let mut quiet_until: Option<Instant> = None;
    while Instant::now() < deadline && quiet_until.is_none_or(|q| Instant::now() < q) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let v = m.payload().expect("value");
                assert_eq!(&v[..4], b"ODRB");
                n += 1;
            }
            Some(Err(e)) => panic!("librdkafka error {e}"),
            None => {}
        }
        if n >= RECORDS && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_secs(1));
        }
    }
    assert_eq!(
        n, RECORDS,
        "librdkafka read_committed read {n} of {RECORDS}"
    );
}
