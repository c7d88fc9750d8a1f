//! Black-box tests of Kafka transactions (KIP-98) with librdkafka's transactional producer,
//! through the `rdkafka` crate, against a real `odradek serve`: the transaction coordinator
//! (InitProducerId with a transactional id, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn,
//! TxnOffsetCommit), transaction markers, the last stable offset (LSO) and `read_committed`
//! fetches, fencing of zombie producers, the transaction timeout, and an exactly-once
//! consume-transform-produce loop that survives kill -9 of the broker.
//!
//! The expected values are Apache Kafka's documented behaviour:
//! - a `read_committed` consumer sees records of committed transactions and non-transactional
//!   records, never records of aborted transactions, and nothing at or past the first offset of
//!   a still-open transaction (the LSO), non-transactional records included;
//! - a `read_uncommitted` consumer sees every data record; neither sees control records
//!   (markers), which still take an offset each (one per partition per transaction);
//! - ListOffsets(latest) answers the LSO to a `read_committed` client, the high watermark to a
//!   `read_uncommitted` one (librdkafka's `query_watermark_offsets` uses the client's isolation
//!   level);
//! - `init_transactions` of a new instance with the same transactional id aborts the previous
//!   instance's open transaction and fences it (its next request fails with a fatal fenced error);
//! - offsets sent with `send_offsets_to_transaction` become the group's committed offsets when,
//!   and only when, the transaction commits;
//! - the coordinator aborts a transaction that stays open longer than its `transaction.timeout.ms`.
//!
//! Each test starts its own broker (two shards when the machine has them, so partitions and
//! coordinators sit on different shards), bounds every wait, and fails with the broker's log tail.

mod common;
mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use odradek::protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, AddPartitionsToTxnTopic, EndTxnRequest,
    EndTxnResponse, FindCoordinatorRequest, InitProducerIdRequest,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use wire::Conn;

/// Bound of one transactional API call (init, send offsets, commit, abort).
const API_TIMEOUT: Duration = Duration::from_secs(30);
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(60);
const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);
/// After the expected records arrived, consumers are polled this long more so that a record
/// that must not be visible has the chance to show up.
const GRACE: Duration = Duration::from_millis(1500);

const READ_COMMITTED: &str = "read_committed";
const READ_UNCOMMITTED: &str = "read_uncommitted";

/// A broker with two shards (when the machine has them) whose groups rebalance without delay.
fn txn_broker() -> Broker {
    BrokerOptions::new()
        .cores(test_cores())
        .set("group.initial.rebalance.delay.ms", 0)
        .start()
}

// ---------------------------------------------------------------------------------------------
// Producers and errors
// ---------------------------------------------------------------------------------------------

/// A transactional producer (the harness's producer with its delivery log) with
/// `transactional.id = txn_id`; `extra` adds or overrides properties.
fn txn_producer(broker: &Broker, txn_id: &str, extra: &[(&str, &str)]) -> TestProducer {
    let mut props: Vec<(&str, &str)> = vec![("transactional.id", txn_id)];
    props.extend_from_slice(extra);
    producer(&broker.bootstrap(), &props)
}

/// A plain (non-transactional) producer with acks=all.
fn plain_producer(broker: &Broker) -> TestProducer {
    producer(&broker.bootstrap(), &[("acks", "all")])
}

/// An error with everything librdkafka says about it (code, fatal, retriable, abortable).
fn describe(e: &KafkaError) -> String {
    match e {
        KafkaError::Transaction(r) => format!(
            "{} (code {:?}, fatal {}, retriable {}, txn_requires_abort {})",
            r.string(),
            r.code(),
            r.is_fatal(),
            r.is_retriable(),
            r.txn_requires_abort()
        ),
        other => format!("{other} (code {:?})", other.rdkafka_error_code()),
    }
}

/// Unwraps `r` or fails with `what`, the error and the broker log.
fn must<T>(broker: &Broker, what: &str, r: KafkaResult<T>) -> T {
    r.unwrap_or_else(|e| broker.fail(&format!("{what} failed: {}", describe(&e))))
}

fn init_txn(broker: &Broker, p: &TestProducer, who: &str) {
    must(
        broker,
        &format!("{who}: init_transactions (FindCoordinator key_type 1 + InitProducerId with a transactional id)"),
        p.init_transactions(API_TIMEOUT),
    );
}

/// Produces `recs` to `topic` and waits for every delivery report; fails with the broker log if
/// any record was not delivered. Returns (partition, offset) per record.
fn deliver(
    broker: &Broker,
    p: &TestProducer,
    topic: &str,
    recs: &[Rec],
    what: &str,
) -> Vec<(i32, i64)> {
    let reports = try_produce_all(p, topic, recs, PRODUCE_TIMEOUT);
    let failed: Vec<(usize, &String)> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.as_ref().err().map(|e| (i, e)))
        .collect();
    if !failed.is_empty() {
        broker.fail(&format!(
            "{what}: {} of {} records to {topic} failed delivery; first: {:?}",
            failed.len(),
            recs.len(),
            &failed[..failed.len().min(5)]
        ));
    }
    reports.into_iter().map(Result::unwrap).collect()
}

/// `count` records per partition with values `"{tag}-{p}-{i}"`, partition-major order.
fn recs_per_partition(tag: &str, partitions: i32, count: usize) -> Vec<Rec> {
    let mut out = Vec::new();
    for i in 0..count {
        for p in 0..partitions {
            out.push(Rec::keyed(format!("k-{p}-{i}"), format!("{tag}-{p}-{i}")).in_partition(p));
        }
    }
    out
}

/// Queues one record without panicking on a local error (a fenced producer refuses).
fn try_send(
    p: &TestProducer,
    topic: &str,
    partition: i32,
    value: &str,
    id: usize,
) -> KafkaResult<()> {
    let deadline = Instant::now() + PRODUCE_TIMEOUT;
    loop {
        let rec: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, id)
            .payload(value.as_bytes())
            .partition(partition);
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                if Instant::now() < deadline =>
            {
                p.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// True if the error (or the client) is fatal and says the producer was fenced.
fn fenced_and_fatal(p: &TestProducer, e: &KafkaError) -> (bool, String) {
    let fenced_codes = [
        RDKafkaErrorCode::Fenced,
        RDKafkaErrorCode::ProducerFenced,
        RDKafkaErrorCode::InvalidProducerEpoch,
    ];
    let client_fatal = p.client().fatal_error();
    let (err_fatal, err_code) = match e {
        KafkaError::Transaction(r) => (r.is_fatal(), Some(r.code())),
        other => (false, other.rdkafka_error_code()),
    };
    let fatal = err_fatal || client_fatal.is_some();
    let fenced = err_code.is_some_and(|c| fenced_codes.contains(&c))
        || client_fatal
            .as_ref()
            .is_some_and(|(c, _)| fenced_codes.contains(c));
    (
        fatal && fenced,
        format!(
            "error: {}; client fatal error: {client_fatal:?}",
            describe(e)
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Consumers
// ---------------------------------------------------------------------------------------------

/// A record read back: where it is and its value (all values in these tests are UTF-8).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Got {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: String,
}

/// (topic, partition) -> [(offset, value)] in the order read (= offset order).
type View = BTreeMap<(String, i32), Vec<(i64, String)>>;

fn view(got: &[Got]) -> View {
    let mut v = View::new();
    for g in got {
        v.entry((g.topic.clone(), g.partition))
            .or_default()
            .push((g.offset, g.value.clone()));
    }
    v
}

/// The expected view of records produced to `topic` (`recs[i]` delivered at `at[i]`).
fn add_expected(v: &mut View, topic: &str, recs: &[Rec], at: &[(i32, i64)]) {
    for (rec, (p, off)) in recs.iter().zip(at) {
        let value = String::from_utf8(rec.value.clone().unwrap_or_default()).unwrap();
        v.entry((topic.to_string(), *p))
            .or_default()
            .push((*off, value));
    }
    for recs in v.values_mut() {
        recs.sort();
    }
}

/// A short, readable rendering of a view (first records of each partition).
fn show(v: &View) -> String {
    let mut out = String::new();
    for ((t, p), recs) in v {
        let shown: Vec<String> = recs
            .iter()
            .take(24)
            .map(|(o, val)| format!("{o}:{val}"))
            .collect();
        let more = if recs.len() > 24 {
            format!(" ... ({} in all)", recs.len())
        } else {
            String::new()
        };
        out.push_str(&format!("\n  {t}[{p}]: {}{more}", shown.join(" ")));
    }
    if out.is_empty() {
        out.push_str(" (nothing)");
    }
    out
}

/// A consumer assigned to some partitions from the beginning, with everything it has read.
struct Tail {
    isolation: String,
    consumer: BaseConsumer,
    got: Vec<Got>,
    errors: Vec<String>,
}

impl Tail {
    fn open(broker: &Broker, isolation: &str, parts: &[(&str, i32)]) -> Tail {
        let consumer = consumer(&broker.bootstrap(), &[("isolation.level", isolation)]);
        let mut tpl = TopicPartitionList::new();
        for (t, p) in parts {
            tpl.add_partition_offset(t, *p, Offset::Beginning)
                .expect("add partition");
        }
        if let Err(e) = consumer.assign(&tpl) {
            broker.fail(&format!("{isolation} consumer: assign {parts:?}: {e}"));
        }
        Tail {
            isolation: isolation.to_string(),
            consumer,
            got: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn poll(&mut self, wait: Duration) {
        match self.consumer.poll(wait) {
            Some(Ok(m)) => self.got.push(Got {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            }),
            Some(Err(e)) if self.errors.len() < 20 => self.errors.push(e.to_string()),
            _ => {}
        }
    }

    /// Polls until `done` holds for what was read, or fails after `timeout`.
    fn read_until(
        &mut self,
        broker: &Broker,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Got]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !done(&self.got) {
            if Instant::now() >= deadline {
                broker.fail(&format!(
                    "{what}: the {} consumer did not get there within {timeout:?}; it read {} \
                     record(s):{}\nclient errors: {:?}",
                    self.isolation,
                    self.got.len(),
                    show(&view(&self.got)),
                    self.errors
                ));
            }
            self.poll(Duration::from_millis(100));
        }
    }

    /// Polls until at least `n` records were read (or fails), then `GRACE` more.
    fn read_count(&mut self, broker: &Broker, what: &str, n: usize, timeout: Duration) {
        self.read_until(broker, what, timeout, |g| g.len() >= n);
        self.settle(GRACE);
    }

    /// Polls for `d`, keeping whatever arrives.
    fn settle(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.poll(Duration::from_millis(50));
        }
    }

    /// ListOffsets earliest and latest with this consumer's isolation level: (log start, LSO)
    /// for read_committed, (log start, high watermark) for read_uncommitted.
    fn watermarks(&self, broker: &Broker, topic: &str, partition: i32) -> (i64, i64) {
        must(
            broker,
            &format!("{} fetch_watermarks {topic}[{partition}]", self.isolation),
            self.consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10)),
        )
    }

    /// Asserts that what was read is exactly `expected`.
    fn assert_exactly(&self, broker: &Broker, what: &str, expected: &View) {
        let got = view(&self.got);
        if &got != expected {
            broker.fail(&format!(
                "{what}: the {} consumer read{}\nexpected{}\nclient errors: {:?}",
                self.isolation,
                show(&got),
                show(expected),
                self.errors
            ));
        }
    }
}

/// Committed offset per partition.
type Committed = BTreeMap<i32, Offset>;

/// The group's committed offsets of `topic`'s `partitions` as `c` sees them (OffsetFetch;
/// `require_stable` when `c` is read_committed).
fn committed_of(
    c: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
) -> KafkaResult<BTreeMap<i32, Offset>> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(got
        .elements_for_topic(topic)
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect())
}

fn offsets_map(partitions: &[i32], offset: i64) -> BTreeMap<i32, Offset> {
    partitions
        .iter()
        .map(|p| (*p, Offset::Offset(offset)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Commit
// ---------------------------------------------------------------------------------------------

/// One transaction writes 60 records over 3 partitions of one topic and 40 over 2 partitions of
/// another, then commits. A read_committed consumer reads exactly those records, in produce order
/// per partition at the offsets the delivery reports gave; a read_uncommitted one reads the same.
/// Afterwards the LSO equals the high watermark, one past the single COMMIT marker of each
/// partition.
#[test]
fn committed_transaction_is_visible_to_read_committed() {
    let broker = txn_broker();
    let (ta, tb) = ("txn-orders", "txn-audit");
    create_topic(broker.addr(), ta, 3);
    create_topic(broker.addr(), tb, 2);

    let p = txn_producer(&broker, "committer", &[]);
    init_txn(&broker, &p, "producer");
    must(&broker, "begin_transaction", p.begin_transaction());
    let recs_a = recs_per_partition("a", 3, 20);
    let recs_b = recs_per_partition("b", 2, 20);
    let at_a = deliver(&broker, &p, ta, &recs_a, "transactional produce");
    let at_b = deliver(&broker, &p, tb, &recs_b, "transactional produce");
    must(
        &broker,
        "commit_transaction",
        p.commit_transaction(API_TIMEOUT),
    );

    let mut expected = View::new();
    add_expected(&mut expected, ta, &recs_a, &at_a);
    add_expected(&mut expected, tb, &recs_b, &at_b);
    let parts = [(ta, 0), (ta, 1), (ta, 2), (tb, 0), (tb, 1)];

    let mut rc = Tail::open(&broker, READ_COMMITTED, &parts);
    rc.read_count(&broker, "committed transaction", 100, CONSUME_TIMEOUT);
    rc.assert_exactly(&broker, "after commit", &expected);

    let mut ru = Tail::open(&broker, READ_UNCOMMITTED, &parts);
    ru.read_count(&broker, "committed transaction", 100, CONSUME_TIMEOUT);
    ru.assert_exactly(&broker, "after commit", &expected);

    for (t, part) in parts {
        let last = expected[&(t.to_string(), part)].last().unwrap().0;
        let (_, lso) = rc.watermarks(&broker, t, part);
        let (_, hw) = ru.watermarks(&broker, t, part);
        if lso != hw || hw != last + 2 {
            broker.fail(&format!(
                "{t}[{part}]: last record at {last}, so after one COMMIT marker the high \
                 watermark should be {} and the LSO (read_committed ListOffsets latest) equal to \
                 it; got high watermark {hw}, LSO {lso}",
                last + 2
            ));
        }
    }
    drop(p);
}

// ---------------------------------------------------------------------------------------------
// 2. Abort, interleaved with commits and plain records
// ---------------------------------------------------------------------------------------------

/// In the same 3 partitions: plain records, a committed transaction (A), plain records, an
/// aborted transaction (B) with plain records written between its records, a committed
/// transaction (C) with plain records between its records, plain records. read_committed reads
/// A, C and every plain record in offset order and nothing of B; read_uncommitted reads all of
/// them. Both views are the same after kill -9 and restart (markers and the aborted-transaction
/// index are durable).
#[test]
fn aborted_transaction_is_invisible_to_read_committed_and_visible_to_read_uncommitted() {
    const PARTS: i32 = 3;
    let mut broker = txn_broker();
    let topic = "txn-mixed";
    create_topic(broker.addr(), topic, PARTS);

    let plain = plain_producer(&broker);
    let tp = txn_producer(&broker, "mixer", &[]);
    init_txn(&broker, &tp, "transactional producer");

    // Every delivered record with whether read_committed must see it.
    let mut all = View::new();
    let mut visible = View::new();
    let mut put = |recs: &[Rec], at: &[(i32, i64)], committed: bool| {
        add_expected(&mut all, topic, recs, at);
        if committed {
            add_expected(&mut visible, topic, recs, at);
        }
    };

    let r = recs_per_partition("plain1", PARTS, 2);
    put(
        &r,
        &deliver(&broker, &plain, topic, &r, "plain produce"),
        true,
    );

    must(&broker, "begin_transaction (A)", tp.begin_transaction());
    let r = recs_per_partition("A", PARTS, 4);
    put(&r, &deliver(&broker, &tp, topic, &r, "transaction A"), true);
    must(
        &broker,
        "commit_transaction (A)",
        tp.commit_transaction(API_TIMEOUT),
    );

    let r = recs_per_partition("plain2", PARTS, 2);
    put(
        &r,
        &deliver(&broker, &plain, topic, &r, "plain produce"),
        true,
    );

    must(&broker, "begin_transaction (B)", tp.begin_transaction());
    let r = recs_per_partition("B1", PARTS, 3);
    put(
        &r,
        &deliver(&broker, &tp, topic, &r, "transaction B"),
        false,
    );
    let r = recs_per_partition("plainB", PARTS, 2);
    put(
        &r,
        &deliver(&broker, &plain, topic, &r, "plain produce inside B"),
        true,
    );
    let r = recs_per_partition("B2", PARTS, 3);
    put(
        &r,
        &deliver(&broker, &tp, topic, &r, "transaction B"),
        false,
    );
    must(
        &broker,
        "abort_transaction (B)",
        tp.abort_transaction(API_TIMEOUT),
    );

    must(&broker, "begin_transaction (C)", tp.begin_transaction());
    let r = recs_per_partition("C1", PARTS, 3);
    put(&r, &deliver(&broker, &tp, topic, &r, "transaction C"), true);
    let r = recs_per_partition("plainC", PARTS, 2);
    put(
        &r,
        &deliver(&broker, &plain, topic, &r, "plain produce inside C"),
        true,
    );
    let r = recs_per_partition("C2", PARTS, 3);
    put(&r, &deliver(&broker, &tp, topic, &r, "transaction C"), true);
    must(
        &broker,
        "commit_transaction (C)",
        tp.commit_transaction(API_TIMEOUT),
    );

    let r = recs_per_partition("plain3", PARTS, 2);
    put(
        &r,
        &deliver(&broker, &plain, topic, &r, "plain produce"),
        true,
    );
    drop(tp);
    drop(plain);

    let n_all: usize = all.values().map(Vec::len).sum();
    let n_visible: usize = visible.values().map(Vec::len).sum();
    let parts: Vec<(&str, i32)> = (0..PARTS).map(|p| (topic, p)).collect();
    let check = |broker: &Broker, phase: &str| {
        let mut rc = Tail::open(broker, READ_COMMITTED, &parts);
        rc.read_count(broker, phase, n_visible, CONSUME_TIMEOUT);
        rc.assert_exactly(
            broker,
            &format!("{phase}: committed and plain records only"),
            &visible,
        );
        let mut ru = Tail::open(broker, READ_UNCOMMITTED, &parts);
        ru.read_count(broker, phase, n_all, CONSUME_TIMEOUT);
        ru.assert_exactly(broker, &format!("{phase}: every data record"), &all);
    };
    check(&broker, "before restart");
    broker.kill9();
    broker.start_again();
    check(&broker, "after kill -9 and restart");
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// 3. Last stable offset
// ---------------------------------------------------------------------------------------------

/// In 2 partitions: plain records, then an open transaction's records (delivered, not committed),
/// then plain records of another producer. read_committed reads the first plain records only,
/// and its ListOffsets(latest) answers the LSO = the offset of the transaction's first record;
/// read_uncommitted reads everything and its ListOffsets(latest) is the high watermark. After the
/// commit read_committed reads the rest, in offset order, and the LSO catches up with the high
/// watermark (one past the COMMIT marker).
#[test]
fn open_transaction_holds_back_read_committed_consumers() {
    const PARTS: i32 = 2;
    let broker = txn_broker();
    let topic = "txn-lso";
    create_topic(broker.addr(), topic, PARTS);
    let parts: Vec<(&str, i32)> = (0..PARTS).map(|p| (topic, p)).collect();

    let plain = plain_producer(&broker);
    let tp = txn_producer(&broker, "holder", &[]);
    init_txn(&broker, &tp, "transactional producer");

    let mut before = View::new();
    let r = recs_per_partition("before", PARTS, 3);
    add_expected(
        &mut before,
        topic,
        &r,
        &deliver(&broker, &plain, topic, &r, "plain produce"),
    );

    must(&broker, "begin_transaction", tp.begin_transaction());
    let mut open = View::new();
    let r = recs_per_partition("open", PARTS, 3);
    add_expected(
        &mut open,
        topic,
        &r,
        &deliver(&broker, &tp, topic, &r, "transactional produce"),
    );
    let mut after = View::new();
    let r = recs_per_partition("after", PARTS, 2);
    add_expected(
        &mut after,
        topic,
        &r,
        &deliver(&broker, &plain, topic, &r, "plain produce after"),
    );

    let mut everything = before.clone();
    for v in [&open, &after] {
        for (k, recs) in v {
            everything
                .entry(k.clone())
                .or_default()
                .extend(recs.iter().cloned());
        }
    }
    for recs in everything.values_mut() {
        recs.sort();
    }
    let key = |p: i32| (topic.to_string(), p);

    // While the transaction is open.
    let mut rc = Tail::open(&broker, READ_COMMITTED, &parts);
    rc.read_count(
        &broker,
        "records before the open transaction",
        6,
        CONSUME_TIMEOUT,
    );
    rc.settle(Duration::from_millis(1500));
    rc.assert_exactly(
        &broker,
        "while a transaction is open (nothing at or past the LSO)",
        &before,
    );
    let mut ru = Tail::open(&broker, READ_UNCOMMITTED, &parts);
    ru.read_count(
        &broker,
        "every record while a transaction is open",
        16,
        CONSUME_TIMEOUT,
    );
    ru.assert_exactly(&broker, "while a transaction is open", &everything);
    for p in 0..PARTS {
        let first_open = open[&key(p)][0].0;
        let last = after[&key(p)].last().unwrap().0;
        let (_, lso) = rc.watermarks(&broker, topic, p);
        let (_, hw) = ru.watermarks(&broker, topic, p);
        if lso != first_open || hw != last + 1 {
            broker.fail(&format!(
                "{topic}[{p}] with an open transaction from offset {first_open}: expected LSO \
                 (read_committed ListOffsets latest) {first_open} and high watermark {}; got LSO \
                 {lso}, high watermark {hw}",
                last + 1
            ));
        }
    }

    // After the commit.
    must(
        &broker,
        "commit_transaction",
        tp.commit_transaction(API_TIMEOUT),
    );
    rc.read_count(&broker, "records after the commit", 16, CONSUME_TIMEOUT);
    rc.assert_exactly(&broker, "after the commit", &everything);
    for p in 0..PARTS {
        let last = after[&key(p)].last().unwrap().0;
        let (_, lso) = rc.watermarks(&broker, topic, p);
        let (_, hw) = ru.watermarks(&broker, topic, p);
        if lso != hw || hw != last + 2 {
            broker.fail(&format!(
                "{topic}[{p}] after the commit: expected high watermark {} (one COMMIT marker \
                 after offset {last}) and the LSO equal to it; got LSO {lso}, high watermark {hw}",
                last + 2
            ));
        }
    }
    drop(tp);
}

// ---------------------------------------------------------------------------------------------
// 4. Fencing
// ---------------------------------------------------------------------------------------------

/// P1 opens a transaction and writes to 2 partitions. P2 with the same transactional id calls
/// init_transactions: it succeeds, P1's transaction is aborted (the LSO catches up with the high
/// watermark, read_committed sees nothing). P1's next record is not delivered and its commit
/// fails with a fatal fenced error. P2 commits its own transaction, which read_committed reads,
/// without any record of P1.
#[test]
fn second_producer_with_same_transactional_id_fences_the_first() {
    const PARTS: i32 = 2;
    let broker = txn_broker();
    let topic = "txn-fence";
    create_topic(broker.addr(), topic, PARTS);
    let parts: Vec<(&str, i32)> = (0..PARTS).map(|p| (topic, p)).collect();

    let p1 = txn_producer(&broker, "shared-id", &[]);
    init_txn(&broker, &p1, "P1");
    must(&broker, "P1 begin_transaction", p1.begin_transaction());
    let r = recs_per_partition("p1", PARTS, 3);
    deliver(&broker, &p1, topic, &r, "P1 transactional produce");

    let p2 = txn_producer(&broker, "shared-id", &[]);
    init_txn(
        &broker,
        &p2,
        "P2 (same transactional.id, P1's transaction open)",
    );

    // P2's init_transactions completed P1's transaction as aborted: no open transaction left.
    let mut rc = Tail::open(&broker, READ_COMMITTED, &parts);
    let ru = Tail::open(&broker, READ_UNCOMMITTED, &parts);
    for p in 0..PARTS {
        let (_, lso) = rc.watermarks(&broker, topic, p);
        let (_, hw) = ru.watermarks(&broker, topic, p);
        if lso != hw {
            broker.fail(&format!(
                "{topic}[{p}]: after P2's init_transactions P1's transaction must be aborted, so \
                 the LSO must equal the high watermark; got LSO {lso}, high watermark {hw}"
            ));
        }
    }
    rc.settle(GRACE);
    rc.assert_exactly(&broker, "after P2's init_transactions", &View::new());

    // P1 is a zombie: its next record and its commit fail, fatally.
    let id = p1.context().reserve(1);
    let send = try_send(&p1, topic, 0, "p1-late", id);
    let commit = p1.commit_transaction(API_TIMEOUT);
    let end = Instant::now() + Duration::from_secs(10);
    while p1.context().count() == 0 && send.is_ok() && Instant::now() < end {
        p1.poll(Duration::from_millis(100));
    }
    let report = p1.context().take(id);
    if let Some(Ok(at)) = &report {
        broker.fail(&format!(
            "the fenced producer P1's record was acknowledged at {at:?} (Produce with the old \
             epoch must fail with INVALID_PRODUCER_EPOCH)"
        ));
    }
    match commit {
        Ok(()) => broker.fail(&format!(
            "the fenced producer P1 committed its transaction (send: {send:?}, delivery: \
             {report:?})"
        )),
        Err(e) => {
            let (ok, what) = fenced_and_fatal(&p1, &e);
            if !ok {
                broker.fail(&format!(
                    "P1's commit after being fenced must fail with a fatal fenced error \
                     (Fenced / PRODUCER_FENCED / INVALID_PRODUCER_EPOCH); {what}"
                ));
            }
        }
    }
    if p1.begin_transaction().is_ok() {
        broker.fail("the fenced producer P1 could begin another transaction");
    }
    drop(p1);

    // P2 works.
    must(&broker, "P2 begin_transaction", p2.begin_transaction());
    let r = recs_per_partition("p2", PARTS, 3);
    let at = deliver(&broker, &p2, topic, &r, "P2 transactional produce");
    must(
        &broker,
        "P2 commit_transaction",
        p2.commit_transaction(API_TIMEOUT),
    );
    let mut expected = View::new();
    add_expected(&mut expected, topic, &r, &at);
    rc.read_count(&broker, "P2's committed records", 6, CONSUME_TIMEOUT);
    rc.assert_exactly(&broker, "P2's transaction only, nothing of P1", &expected);
    drop(p2);
}

// ---------------------------------------------------------------------------------------------
// 5. Offsets in a transaction
// ---------------------------------------------------------------------------------------------

/// A subscribed member of group `txn-offsets-group` reads 20 input records and commits offset 3
/// per partition (a plain commit). A transaction produces outputs and sends the member's
/// positions (10 per partition) with its group metadata, then aborts: the committed offsets stay
/// 3 (for the member, a read_committed and a read_uncommitted probe of the group). A second
/// transaction does the same and commits: the committed offsets become 10. read_committed reads
/// only the committed transaction's outputs.
#[test]
fn send_offsets_to_transaction_commits_only_with_the_transaction() {
    const PARTS: i32 = 2;
    let partitions: Vec<i32> = (0..PARTS).collect();
    let broker = txn_broker();
    let (input, output, group) = ("txn-offsets-in", "txn-offsets-out", "txn-offsets-group");
    create_topic(broker.addr(), input, PARTS);
    create_topic(broker.addr(), output, PARTS);

    let plain = plain_producer(&broker);
    let inputs = recs_per_partition("in", PARTS, 10);
    deliver(&broker, &plain, input, &inputs, "input produce");
    drop(plain);

    let member = consumer(
        &broker.bootstrap(),
        &[
            ("group.id", group),
            ("isolation.level", READ_COMMITTED),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "500"),
        ],
    );
    must(&broker, "subscribe", member.subscribe(&[input]));
    let mut read: Vec<(i32, i64, String)> = Vec::new();
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    while read.len() < inputs.len() {
        if Instant::now() >= deadline {
            broker.fail(&format!(
                "the group member read {} of {} input records within {CONSUME_TIMEOUT:?}: {read:?}",
                read.len(),
                inputs.len()
            ));
        }
        if let Some(Ok(m)) = member.poll(Duration::from_millis(100)) {
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            read.push((m.partition(), m.offset(), v));
        }
    }
    let mut base = TopicPartitionList::new();
    for p in &partitions {
        base.add_partition_offset(input, *p, Offset::Offset(3))
            .unwrap();
    }
    must(
        &broker,
        "baseline commit (offset 3)",
        member.commit(&base, CommitMode::Sync),
    );
    let three = offsets_map(&partitions, 3);
    let ten = offsets_map(&partitions, 10);
    let positions = must(&broker, "position", member.position());
    let mut sent = TopicPartitionList::new();
    for p in &partitions {
        let at = positions
            .find_partition(input, *p)
            .map(|e| e.offset())
            .unwrap_or(Offset::Invalid);
        if at != Offset::Offset(10) {
            broker.fail(&format!(
                "member position of {input}[{p}] is {at:?}, expected 10"
            ));
        }
        sent.add_partition_offset(input, *p, at).unwrap();
    }
    let cgm = member
        .group_metadata()
        .unwrap_or_else(|| broker.fail("the group member has no group metadata"));

    let probe_rc = consumer(
        &broker.bootstrap(),
        &[("group.id", group), ("isolation.level", READ_COMMITTED)],
    );
    let probe_ru = consumer(
        &broker.bootstrap(),
        &[("group.id", group), ("isolation.level", READ_UNCOMMITTED)],
    );
    let committed_views = || -> Vec<(&str, KafkaResult<BTreeMap<i32, Offset>>)> {
        vec![
            ("member", committed_of(&member, input, &partitions)),
            (
                "read_committed probe",
                committed_of(&probe_rc, input, &partitions),
            ),
            (
                "read_uncommitted probe",
                committed_of(&probe_ru, input, &partitions),
            ),
        ]
    };

    let tp = txn_producer(&broker, "offsets-txn", &[]);
    init_txn(&broker, &tp, "transactional producer");
    let outputs = |tag: &str| -> Vec<Rec> {
        read.iter()
            .map(|(p, _, v)| Rec::value(format!("{tag}-{v}")).in_partition(*p))
            .collect()
    };

    // Aborted: the group's offsets do not move.
    must(
        &broker,
        "begin_transaction (to abort)",
        tp.begin_transaction(),
    );
    deliver(
        &broker,
        &tp,
        output,
        &outputs("aborted"),
        "transactional produce",
    );
    must(
        &broker,
        "send_offsets_to_transaction (to abort)",
        tp.send_offsets_to_transaction(&sent, &cgm, API_TIMEOUT),
    );
    must(
        &broker,
        "abort_transaction",
        tp.abort_transaction(API_TIMEOUT),
    );
    for round in ["right after the abort", "1 s after the abort"] {
        for (who, got) in committed_views() {
            let got = must(&broker, &format!("{who}: committed offsets"), got);
            if got != three {
                broker.fail(&format!(
                    "{round}: the {who} sees committed offsets {got:?}; the aborted transaction's \
                     offsets must not count, expected {three:?}"
                ));
            }
        }
        thread::sleep(Duration::from_secs(1));
    }

    // Committed: they become the sent offsets.
    must(
        &broker,
        "begin_transaction (to commit)",
        tp.begin_transaction(),
    );
    let committed_outputs = outputs("out");
    let at = deliver(
        &broker,
        &tp,
        output,
        &committed_outputs,
        "transactional produce",
    );
    must(
        &broker,
        "send_offsets_to_transaction (to commit)",
        tp.send_offsets_to_transaction(&sent, &cgm, API_TIMEOUT),
    );
    must(
        &broker,
        "commit_transaction",
        tp.commit_transaction(API_TIMEOUT),
    );
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    loop {
        let views: Vec<(&str, Result<Committed, String>)> = committed_views()
            .into_iter()
            .map(|(w, r)| (w, r.map_err(|e| describe(&e))))
            .collect();
        if views.iter().all(|(_, r)| r.as_ref() == Ok(&ten)) {
            break;
        }
        if Instant::now() >= deadline {
            broker.fail(&format!(
                "{CONSUME_TIMEOUT:?} after the commit the group's committed offsets are not the \
                 sent ones ({ten:?}): {views:?}"
            ));
        }
        thread::sleep(Duration::from_millis(200));
    }

    let mut expected = View::new();
    add_expected(&mut expected, output, &committed_outputs, &at);
    let parts: Vec<(&str, i32)> = partitions.iter().map(|p| (output, *p)).collect();
    let mut rc = Tail::open(&broker, READ_COMMITTED, &parts);
    rc.read_count(
        &broker,
        "committed outputs",
        committed_outputs.len(),
        CONSUME_TIMEOUT,
    );
    rc.assert_exactly(
        &broker,
        "outputs of the committed transaction only",
        &expected,
    );
    drop(tp);
}

// ---------------------------------------------------------------------------------------------
// 6. Transaction timeout
// ---------------------------------------------------------------------------------------------

/// A producer with `transaction.timeout.ms=2000` writes 5 records in a transaction and then
/// stalls; a plain record follows. Within a minute (Kafka checks every 10 s by default) the
/// coordinator aborts the transaction: read_committed gets past it to the plain record and never
/// sees the 5 records (read_uncommitted does). The stalled producer's commit then fails, and a new
/// producer with the same transactional id commits normally.
#[test]
fn transaction_timeout_aborts_a_stale_transaction() {
    let broker = txn_broker();
    let topic = "txn-stale";
    create_topic(broker.addr(), topic, 1);
    let parts = [(topic, 0)];

    // librdkafka requires message.timeout.ms <= transaction.timeout.ms and socket.timeout.ms <=
    // transaction.timeout.ms + 100.
    let stale = txn_producer(
        &broker,
        "stale-id",
        &[
            ("transaction.timeout.ms", "2000"),
            ("message.timeout.ms", "2000"),
            ("socket.timeout.ms", "1900"),
        ],
    );
    init_txn(&broker, &stale, "producer with transaction.timeout.ms=2000");
    must(&broker, "begin_transaction", stale.begin_transaction());
    let r: Vec<Rec> = (0..5)
        .map(|i| Rec::value(format!("stale-{i}")).in_partition(0))
        .collect();
    let stale_at = deliver(&broker, &stale, topic, &r, "transactional produce");
    let plain = plain_producer(&broker);
    let after = vec![Rec::value("after-stale").in_partition(0)];
    let after_at = deliver(&broker, &plain, topic, &after, "plain produce after");
    let stalled_at = Instant::now();

    let mut rc = Tail::open(&broker, READ_COMMITTED, &parts);
    rc.read_until(
        &broker,
        "the broker aborting the stale transaction (transaction.timeout.ms=2000)",
        Duration::from_secs(60),
        |g| g.iter().any(|r| r.value == "after-stale"),
    );
    eprintln!(
        "read_committed got past the stale transaction {:?} after it stalled",
        stalled_at.elapsed()
    );
    rc.settle(Duration::from_millis(500));
    let mut only_after = View::new();
    add_expected(&mut only_after, topic, &after, &after_at);
    rc.assert_exactly(&broker, "after the transaction timed out", &only_after);

    let mut everything = View::new();
    add_expected(&mut everything, topic, &r, &stale_at);
    add_expected(&mut everything, topic, &after, &after_at);
    let mut ru = Tail::open(&broker, READ_UNCOMMITTED, &parts);
    ru.read_count(&broker, "every data record", 6, CONSUME_TIMEOUT);
    ru.assert_exactly(&broker, "the stale records are in the log", &everything);

    if let Ok(()) = stale.commit_transaction(API_TIMEOUT) {
        broker.fail(
            "the stalled producer committed a transaction the broker aborted after its \
             transaction.timeout.ms",
        );
    }
    drop(stale);

    let fresh = txn_producer(&broker, "stale-id", &[]);
    init_txn(
        &broker,
        &fresh,
        "new producer with the timed-out transactional id",
    );
    must(&broker, "begin_transaction", fresh.begin_transaction());
    let r2 = vec![Rec::value("fresh").in_partition(0)];
    let fresh_at = deliver(&broker, &fresh, topic, &r2, "transactional produce");
    must(
        &broker,
        "commit_transaction",
        fresh.commit_transaction(API_TIMEOUT),
    );
    add_expected(&mut only_after, topic, &r2, &fresh_at);
    rc.read_count(&broker, "the new producer's record", 2, CONSUME_TIMEOUT);
    rc.assert_exactly(&broker, "after the new producer's commit", &only_after);
    drop(fresh);
}

// ---------------------------------------------------------------------------------------------
// 7. Exactly-once consume-transform-produce across kill -9
// ---------------------------------------------------------------------------------------------

const EOS_RECORDS: usize = 100_000;
const EOS_PARTITIONS: i32 = 4;
const EOS_BATCH: usize = 500;
const EOS_IN: &str = "eos-in";
const EOS_OUT: &str = "eos-out";
const EOS_GROUP: &str = "eos-group";
const EOS_TXN_ID: &str = "eos-worker";
/// The whole loop, crash included, must finish within this.
const EOS_LOOP_TIMEOUT: Duration = Duration::from_secs(150);

/// What the exactly-once worker went through.
#[derive(Debug, Default)]
struct EosStats {
    commits: usize,
    aborts: usize,
    /// Transactions aborted on purpose after their records were written.
    deliberate: usize,
    /// Producer and consumer recreated after a fatal error.
    recreated: usize,
    /// Consumer recreated (rewound to the committed offsets) after an abort.
    rewound: usize,
    /// First errors seen, with the time since the worker started.
    errors: Vec<String>,
}

/// The worker's clock and what it went through.
struct Run {
    started: Instant,
    deadline: Instant,
    stats: EosStats,
}

impl Run {
    fn note(&mut self, what: String) {
        if self.stats.errors.len() < 40 {
            let at = self.started.elapsed().as_secs_f64();
            self.stats.errors.push(format!("{at:.1}s {what}"));
        }
    }

    fn out_of_time(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// What `eos_transaction` says when it aborts on purpose (its records are in the log).
const DELIBERATE_ABORT: &str = "deliberate abort (application error)";

/// How a failed transactional call is handled (librdkafka's documented error classes).
#[derive(Debug)]
enum Failure {
    /// The producer is unusable: recreate it (and the consumer, from the committed offsets).
    Fatal(String),
    /// abort_transaction, then rewind the consumer to the committed offsets.
    Abort(String),
    /// Call again.
    Retry(String),
}

fn classify(p: &BaseProducer, op: &str, e: &KafkaError) -> Failure {
    let what = format!("{op}: {}", describe(e));
    if p.client().fatal_error().is_some() {
        return Failure::Fatal(what);
    }
    match e {
        KafkaError::Transaction(r) if r.is_fatal() => Failure::Fatal(what),
        KafkaError::Transaction(r) if r.txn_requires_abort() => Failure::Abort(what),
        KafkaError::Transaction(r) if r.is_retriable() => Failure::Retry(what),
        // rdkafka's commit_transaction flushes first; a flush that timed out is retried.
        KafkaError::Flush(_) => Failure::Retry(what),
        _ => Failure::Abort(what),
    }
}

/// Calls `f` until it succeeds, retrying what librdkafka calls retriable (bounded by `deadline`
/// and 30 attempts, then it counts as needing an abort).
fn with_retries(
    p: &BaseProducer,
    op: &str,
    run: &mut Run,
    f: impl Fn() -> KafkaResult<()>,
) -> Result<(), Failure> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match f() {
            Ok(()) => return Ok(()),
            Err(e) => match classify(p, op, &e) {
                Failure::Retry(what) if attempts < 30 && !run.out_of_time() => {
                    run.note(format!("retry {what}"));
                    thread::sleep(Duration::from_millis(100));
                }
                Failure::Retry(what) => return Err(Failure::Abort(what)),
                other => return Err(other),
            },
        }
    }
}

fn eos_producer(bootstrap: &str) -> KafkaResult<BaseProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", EOS_TXN_ID)
        .set("linger.ms", "10")
        .set("message.timeout.ms", "30000")
        .set("socket.timeout.ms", "10000")
        .set("queue.buffering.max.kbytes", "262144")
        .create()
}

/// A read_committed consumer of the input assigned at the group's committed offsets (the
/// beginning where nothing is committed), and those offsets.
fn eos_consumer(bootstrap: &str) -> KafkaResult<(BaseConsumer, BTreeMap<i32, i64>)> {
    let c = consumer(
        bootstrap,
        &[
            ("group.id", EOS_GROUP),
            ("isolation.level", READ_COMMITTED),
            ("auto.offset.reset", "earliest"),
        ],
    );
    let partitions: Vec<i32> = (0..EOS_PARTITIONS).collect();
    let committed = committed_of(&c, EOS_IN, &partitions)?;
    let mut tpl = TopicPartitionList::new();
    let mut at = BTreeMap::new();
    for p in &partitions {
        let off = match committed.get(p) {
            Some(Offset::Offset(o)) => *o,
            _ => 0,
        };
        tpl.add_partition_offset(EOS_IN, *p, Offset::Offset(off))?;
        at.insert(*p, off);
    }
    c.assign(&tpl)?;
    Ok((c, at))
}

/// Up to `EOS_BATCH` input records: (partition, offset, key, value).
fn poll_batch(c: &BaseConsumer) -> Vec<(i32, i64, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while out.len() < EOS_BATCH {
        match c.poll(Duration::from_millis(if out.is_empty() { 200 } else { 20 })) {
            Some(Ok(m)) => out.push((
                m.partition(),
                m.offset(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(_)) => break,
            None => break,
        }
    }
    out
}

/// One transaction: the transformed batch, the consumer's next offsets, commit. Returns the
/// committed next offsets.
fn eos_transaction(
    p: &BaseProducer,
    c: &BaseConsumer,
    batch: &[(i32, i64, Vec<u8>, Vec<u8>)],
    abort_on_purpose: bool,
    crash: &CrashPoint,
    run: &mut Run,
) -> Result<BTreeMap<i32, i64>, Failure> {
    p.begin_transaction()
        .map_err(|e| classify(p, "begin_transaction", &e))?;
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for (part, off, key, value) in batch {
        let mut out = b"out-".to_vec();
        out.extend_from_slice(value);
        loop {
            let rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(EOS_OUT)
                .key(key.as_slice())
                .payload(out.as_slice())
                .partition(*part);
            match p.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if !run.out_of_time() =>
                {
                    p.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(classify(p, "produce", &e)),
            }
        }
        next.insert(*part, off + 1);
    }
    let crash_here = crash.requested(AT_RECORDS_WRITTEN);
    if crash_here || abort_on_purpose {
        // The records go to the log, then the transaction is aborted (after the crash, for the
        // crash point: the restarted coordinator must still know the transaction's partitions).
        if let Err(e) = p.flush(Duration::from_secs(15)) {
            return Err(classify(p, "flush", &e));
        }
        if crash_here {
            crash.reach(AT_RECORDS_WRITTEN);
        }
        return Err(Failure::Abort(DELIBERATE_ABORT.into()));
    }
    let mut offsets = TopicPartitionList::new();
    for (part, off) in &next {
        offsets
            .add_partition_offset(EOS_IN, *part, Offset::Offset(*off))
            .expect("add offset");
    }
    let cgm = c
        .group_metadata()
        .ok_or_else(|| Failure::Abort("the consumer has no group metadata".into()))?;
    with_retries(p, "send_offsets_to_transaction", run, || {
        p.send_offsets_to_transaction(&offsets, &cgm, Duration::from_secs(15))
    })?;
    crash.reach(AT_OFFSETS_SENT);
    with_retries(p, "commit_transaction", run, || {
        p.commit_transaction(Duration::from_secs(15))
    })?;
    crash.reach(AT_COMMITTED);
    Ok(next)
}

/// Crash points of the exactly-once loop: where the worker parks, when the test asks, until the
/// test has killed the broker (then it carries on against a dead broker, then a restarted one).
const AT_NOWHERE: u8 = 0;
/// A transaction's records are written (flushed), its offsets not sent yet.
const AT_RECORDS_WRITTEN: u8 = 1;
/// send_offsets_to_transaction returned, commit not asked yet.
const AT_OFFSETS_SENT: u8 = 2;
/// commit_transaction returned (Kafka answers EndTxn before the markers are all written).
const AT_COMMITTED: u8 = 3;

#[derive(Default)]
struct CrashPoint {
    request: AtomicU8,
    parked: AtomicBool,
    release: AtomicBool,
}

impl CrashPoint {
    fn requested(&self, point: u8) -> bool {
        self.request.load(Ordering::SeqCst) == point
    }

    /// Worker side: if the test asked for `point`, parks until it has killed the broker (at most
    /// 60 s).
    fn reach(&self, point: u8) {
        if !self.requested(point) {
            return;
        }
        self.release.store(false, Ordering::SeqCst);
        self.parked.store(true, Ordering::SeqCst);
        let until = Instant::now() + Duration::from_secs(60);
        while !self.release.load(Ordering::SeqCst) && Instant::now() < until {
            thread::sleep(Duration::from_millis(1));
        }
        self.request.store(AT_NOWHERE, Ordering::SeqCst);
        self.parked.store(false, Ordering::SeqCst);
    }
}

/// The exactly-once loop: runs until the group's committed offsets reach `end` for every input
/// partition. `progress` is the number of input records committed so far.
fn eos_worker(
    bootstrap: String,
    end: BTreeMap<i32, i64>,
    progress: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    crash: Arc<CrashPoint>,
) -> Result<EosStats, (String, EosStats)> {
    let started = Instant::now();
    let mut run = Run {
        started,
        deadline: started + EOS_LOOP_TIMEOUT,
        stats: EosStats::default(),
    };
    let mut txns = 0usize;
    let give_up = |why: String, stats: EosStats| Err((why, stats));
    'producer: loop {
        if stop.load(Ordering::SeqCst) || run.out_of_time() {
            return give_up("stopped or out of time".into(), run.stats);
        }
        let p = match eos_producer(&bootstrap) {
            Ok(p) => p,
            Err(e) => return give_up(format!("create producer: {e}"), run.stats),
        };
        // init_transactions: retriable failures (broker restarting) are retried for up to 60 s.
        let init_until = Instant::now() + Duration::from_secs(60);
        loop {
            match p.init_transactions(Duration::from_secs(15)) {
                Ok(()) => break,
                Err(e) => {
                    let f = classify(&p, "init_transactions", &e);
                    run.note(format!("{f:?}"));
                    if Instant::now() >= init_until.min(run.deadline) {
                        return give_up(
                            format!("init_transactions did not succeed within 60 s: {f:?}"),
                            run.stats,
                        );
                    }
                    if let Failure::Fatal(_) = f {
                        run.stats.recreated += 1;
                        thread::sleep(Duration::from_millis(200));
                        continue 'producer;
                    }
                    thread::sleep(Duration::from_millis(200));
                }
            }
        }
        'consumer: loop {
            let (c, mut committed) = match eos_consumer(&bootstrap) {
                Ok(x) => x,
                Err(e) => {
                    run.note(format!("open consumer: {}", describe(&e)));
                    if run.out_of_time() {
                        return give_up("out of time opening the consumer".into(), run.stats);
                    }
                    thread::sleep(Duration::from_millis(200));
                    continue 'consumer;
                }
            };
            loop {
                progress.store(committed.values().sum::<i64>() as usize, Ordering::SeqCst);
                if committed == end {
                    return Ok(run.stats);
                }
                if stop.load(Ordering::SeqCst) || run.out_of_time() {
                    return give_up(
                        format!("stopped or out of time at committed offsets {committed:?}"),
                        run.stats,
                    );
                }
                let batch = poll_batch(&c);
                if batch.is_empty() {
                    continue;
                }
                txns += 1;
                let abort_on_purpose = txns % 17 == 8;
                match eos_transaction(&p, &c, &batch, abort_on_purpose, &crash, &mut run) {
                    Ok(next) => {
                        run.stats.commits += 1;
                        committed.extend(next);
                    }
                    Err(Failure::Fatal(what)) => {
                        run.note(format!("fatal, recreating everything: {what}"));
                        run.stats.recreated += 1;
                        drop(c);
                        drop(p);
                        continue 'producer;
                    }
                    Err(Failure::Abort(what)) | Err(Failure::Retry(what)) => {
                        if what == DELIBERATE_ABORT {
                            run.stats.deliberate += 1;
                        } else {
                            run.note(format!("aborting: {what}"));
                        }
                        let aborted = with_retries(&p, "abort_transaction", &mut run, || {
                            p.abort_transaction(Duration::from_secs(15))
                        });
                        drop(c);
                        match aborted {
                            Ok(()) => {
                                run.stats.aborts += 1;
                                run.stats.rewound += 1;
                                continue 'consumer;
                            }
                            Err(f) => {
                                run.note(format!("abort failed, recreating everything: {f:?}"));
                                run.stats.recreated += 1;
                                drop(p);
                                continue 'producer;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// 100,000 input records in 4 partitions are turned into "out-" + value (same key, same
/// partition) by a read_committed consumer and a transactional producer committing the consumer's
/// offsets with each batch of up to 500 records. Every 17th transaction is aborted on purpose
/// after its records are written (an application error: abort, rewind to the committed offsets).
/// The broker is killed with SIGKILL and restarted three times, at 25 %, 50 % and 75 % of the
/// input, each time with the loop parked at another step of a transaction and carrying on against
/// the dead broker: records written (that transaction is then aborted on purpose, by the restarted
/// coordinator) / offsets sent / commit acknowledged. The loop recovers the way Kafka documents
/// (retriable: retry; abortable: abort and rewind to the committed offsets; fatal: recreate
/// producer and consumer). Finally a read_committed consumer of the output finds, in every
/// partition, exactly the transformed input of that partition in input order: each record once,
/// none missing, nothing of the aborted transactions.
#[test]
fn consume_transform_produce_survives_kill9_exactly_once() {
    let mut broker = txn_broker();
    create_topic(broker.addr(), EOS_IN, EOS_PARTITIONS);
    create_topic(broker.addr(), EOS_OUT, EOS_PARTITIONS);

    // The input, non-transactional, acks=all.
    let inputs: Vec<Rec> = (0..EOS_RECORDS)
        .map(|i| {
            Rec::keyed(format!("key-{i}"), format!("value-{i:06}"))
                .in_partition((i % EOS_PARTITIONS as usize) as i32)
        })
        .collect();
    let p = plain_producer(&broker);
    let at = deliver(&broker, &p, EOS_IN, &inputs, "input produce");
    drop(p);
    let mut expected: BTreeMap<i32, Vec<(String, String)>> = BTreeMap::new();
    let mut end: BTreeMap<i32, i64> = BTreeMap::new();
    for (rec, (part, off)) in inputs.iter().zip(&at) {
        let key = String::from_utf8(rec.key.clone().unwrap()).unwrap();
        let value = String::from_utf8(rec.value.clone().unwrap()).unwrap();
        expected
            .entry(*part)
            .or_default()
            .push((key, format!("out-{value}")));
        let e = end.entry(*part).or_insert(0);
        *e = (*e).max(off + 1);
    }
    drop(inputs);

    let progress = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let crash = Arc::new(CrashPoint::default());
    let worker = {
        let (bootstrap, end, progress, stop, crash) = (
            broker.bootstrap(),
            end.clone(),
            progress.clone(),
            stop.clone(),
            crash.clone(),
        );
        thread::spawn(move || eos_worker(bootstrap, end, progress, stop, crash))
    };

    // Crash the broker three times, each at a different step of a transaction.
    let started = Instant::now();
    let plan = [
        (
            EOS_RECORDS / 4,
            AT_RECORDS_WRITTEN,
            "a transaction's records written (it is aborted after the restart)",
        ),
        (
            EOS_RECORDS / 2,
            AT_OFFSETS_SENT,
            "offsets sent to the transaction, commit not asked",
        ),
        (
            EOS_RECORDS * 3 / 4,
            AT_COMMITTED,
            "commit acknowledged, markers possibly still being written",
        ),
    ];
    let mut kills = Vec::new();
    for (n, (at, point, what)) in plan.into_iter().enumerate() {
        let mut asked = false;
        while !crash.parked.load(Ordering::SeqCst) {
            if !asked && progress.load(Ordering::SeqCst) >= at {
                crash.request.store(point, Ordering::SeqCst);
                asked = true;
            }
            if worker.is_finished() || started.elapsed() > EOS_LOOP_TIMEOUT {
                stop.store(true, Ordering::SeqCst);
                crash.release.store(true, Ordering::SeqCst);
                let outcome = worker.join();
                broker.fail(&format!(
                    "the exactly-once loop committed {} of {EOS_RECORDS} input records and did \
                     not reach crash point #{} ({what}); worker: {outcome:?}",
                    progress.load(Ordering::SeqCst),
                    n + 1
                ));
            }
            thread::sleep(Duration::from_millis(1));
        }
        let committed = progress.load(Ordering::SeqCst);
        broker.kill9();
        crash.release.store(true, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(300));
        broker.start_again();
        eprintln!(
            "kill -9 #{} after {:?} ({what}) with {committed} of {EOS_RECORDS} input records \
             committed",
            n + 1,
            started.elapsed()
        );
        kills.push((committed, what));
    }

    let outcome = {
        let deadline = started + EOS_LOOP_TIMEOUT + Duration::from_secs(30);
        while !worker.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        if !worker.is_finished() {
            stop.store(true, Ordering::SeqCst);
            thread::sleep(Duration::from_secs(20));
        }
        if !worker.is_finished() {
            broker.fail(&format!(
                "the exactly-once loop is stuck at {} of {EOS_RECORDS} committed input records",
                progress.load(Ordering::SeqCst)
            ));
        }
        worker.join().expect("exactly-once worker panicked")
    };
    let stats = match outcome {
        Ok(stats) => stats,
        Err((why, stats)) => broker.fail(&format!(
            "the exactly-once loop did not finish ({} of {EOS_RECORDS} input records committed): \
             {why}\n{stats:#?}",
            progress.load(Ordering::SeqCst)
        )),
    };
    eprintln!(
        "exactly-once loop done in {:?}: {} commits, {} aborts ({} on purpose), {} consumer \
         rewinds, {} recreations; errors: {:#?}",
        started.elapsed(),
        stats.commits,
        stats.aborts,
        stats.deliberate,
        stats.rewound,
        stats.recreated,
        stats.errors
    );
    // Aborted records are in the output log (one of them written just before crash #1), so the
    // read below also checks that read_committed skips them.
    if stats.deliberate < 3 {
        broker.fail(&format!(
            "the loop aborted only {} transactions on purpose, expected at least 3: {stats:#?}",
            stats.deliberate
        ));
    }

    // The output, read_committed: per partition exactly the transformed input, in order.
    let parts: Vec<(&str, i32)> = (0..EOS_PARTITIONS).map(|p| (EOS_OUT, p)).collect();
    let mut rc = Tail::open(&broker, READ_COMMITTED, &parts);
    let deadline = Instant::now() + Duration::from_secs(120);
    while rc.got.len() < EOS_RECORDS && Instant::now() < deadline {
        rc.poll(Duration::from_millis(100));
    }
    rc.settle(Duration::from_secs(3));
    let mut problems = Vec::new();
    for (part, want) in &expected {
        let got: Vec<(String, String)> = rc
            .got
            .iter()
            .filter(|g| g.partition == *part)
            .map(|g| (g.key.clone().unwrap_or_default(), g.value.clone()))
            .collect();
        if &got == want {
            continue;
        }
        let want_set: BTreeSet<&(String, String)> = want.iter().collect();
        let mut seen: BTreeMap<&(String, String), usize> = BTreeMap::new();
        for g in &got {
            *seen.entry(g).or_default() += 1;
        }
        let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
        let n_dups = seen.values().filter(|n| **n > 1).count();
        let missing: Vec<_> = want.iter().filter(|w| !seen.contains_key(w)).collect();
        let foreign: Vec<_> = seen
            .keys()
            .filter(|g| !want_set.contains(*g))
            .take(5)
            .collect();
        let first_diff = got.iter().zip(want).position(|(g, w)| g != w);
        problems.push(format!(
            "{EOS_OUT}[{part}]: read {} records, expected {}; {n_dups} duplicated (e.g. {dups:?}), \
             {} missing (e.g. {:?}), unexpected {foreign:?}; first difference at position \
             {first_diff:?}",
            got.len(),
            want.len(),
            missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    if !problems.is_empty() {
        broker.fail(&format!(
            "exactly-once violated (kill -9 at (committed input records, step) {kills:?}; \
             worker {stats:#?}):\n{}\nclient errors: {:?}",
            problems.join("\n"),
            rc.errors
        ));
    }
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// 8. Bad input at the wire level
// ---------------------------------------------------------------------------------------------

const NONE: i16 = 0;
const INVALID_REQUEST: i16 = 42;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;

const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;

/// Calls `f` again while it answers COORDINATOR_LOAD_IN_PROGRESS or COORDINATOR_NOT_AVAILABLE (what
/// a client retries), for up to 10 s; returns the last answer.
fn until_settled<T>(mut f: impl FnMut() -> T, code: impl Fn(&T) -> i16) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = f();
        let c = code(&answer);
        if (c != COORDINATOR_LOAD_IN_PROGRESS && c != COORDINATOR_NOT_AVAILABLE)
            || Instant::now() >= deadline
        {
            return answer;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// EndTxn at `version` (v1 is what librdkafka sends, v3 the first flexible one): its error code.
fn end_txn(
    conn: &mut Conn,
    version: i16,
    txn_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    committed: bool,
) -> i16 {
    let req = EndTxnRequest {
        transactional_id: txn_id.into(),
        producer_id,
        producer_epoch,
        committed,
    };
    let cid = conn.send(&req, version);
    let resp: EndTxnResponse = conn.recv(version, cid);
    resp.error_code
}

/// AddPartitionsToTxn at `version` <= 3 (v0 is what librdkafka sends): (topic, partition, error)
/// per partition.
fn add_partitions(
    conn: &mut Conn,
    version: i16,
    txn_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    topic: &str,
    partitions: &[i32],
) -> Vec<(String, i32, i16)> {
    let req = AddPartitionsToTxnRequest {
        v3_and_below_transactional_id: txn_id.into(),
        v3_and_below_producer_id: producer_id,
        v3_and_below_producer_epoch: producer_epoch,
        v3_and_below_topics: vec![AddPartitionsToTxnTopic {
            name: topic.into(),
            partitions: partitions.to_vec(),
        }],
        ..Default::default()
    };
    let cid = conn.send(&req, version);
    let resp: AddPartitionsToTxnResponse = conn.recv(version, cid);
    let mut out = Vec::new();
    for t in resp.results_by_topic_v3_and_below {
        for p in t.results_by_partition {
            out.push((t.name.clone(), p.partition_index, p.partition_error_code));
        }
    }
    out
}

/// Kafka's answers to transactional requests that cannot succeed, on one connection that stays
/// usable: FindCoordinator(key_type 1) names this broker (v1 as librdkafka asks, v4 batched);
/// InitProducerId with a transaction timeout above `transaction.max.timeout.ms` (default 900000)
/// or of 0 gets INVALID_TRANSACTION_TIMEOUT, with an empty transactional id INVALID_REQUEST;
/// EndTxn with an empty transactional id gets INVALID_REQUEST; EndTxn (v1, v3) and
/// AddPartitionsToTxn (v0, v3) for a transactional id the coordinator never saw get
/// INVALID_PRODUCER_ID_MAPPING, EndTxn for a known id with another producer id too, and EndTxn
/// commit with no transaction open INVALID_TXN_STATE (Kafka's `TransactionCoordinator`).
#[test]
fn transactional_requests_with_bad_input_get_kafka_error_codes() {
    let mut broker = txn_broker();
    create_topic(broker.addr(), "txn-wire", 1);
    let mut conn = Conn::open(broker.addr());

    // Kafka answers COORDINATOR_NOT_AVAILABLE while it creates `__transaction_state` on the first
    // lookup, and COORDINATOR_LOAD_IN_PROGRESS while it loads it: clients retry those.
    let fc = until_settled(
        || {
            conn.call(
                &FindCoordinatorRequest {
                    key: "wire-txn".into(),
                    key_type: 1,
                    ..Default::default()
                },
                1,
            )
        },
        |r| r.error_code,
    );
    if fc.error_code != NONE || fc.port != broker.port() as i32 || fc.node_id != 1 {
        broker.fail(&format!(
            "FindCoordinator v1 key_type 1 (transaction) must name this broker (node 1, port \
             {}): {fc:?}",
            broker.port()
        ));
    }
    let fc4 = conn.call(
        &FindCoordinatorRequest {
            key_type: 1,
            coordinator_keys: vec!["wire-txn".into(), "other-txn".into()],
            ..Default::default()
        },
        4,
    );
    let ok4 = fc4.coordinators.len() == 2
        && fc4
            .coordinators
            .iter()
            .all(|c| c.error_code == NONE && c.port == broker.port() as i32 && c.node_id == 1);
    if !ok4 {
        broker.fail(&format!(
            "FindCoordinator v4 key_type 1 with 2 keys must name this broker for both: {fc4:?}"
        ));
    }

    let init = |conn: &mut Conn, txn_id: &str, timeout_ms: i32, version: i16| {
        conn.call(
            &InitProducerIdRequest {
                transactional_id: Some(txn_id.into()),
                transaction_timeout_ms: timeout_ms,
                producer_id: -1,
                producer_epoch: -1,
            },
            version,
        )
    };
    for (txn_id, timeout_ms, version, want, why) in [
        (
            "wire-txn",
            900_001,
            4,
            INVALID_TRANSACTION_TIMEOUT,
            "timeout above transaction.max.timeout.ms",
        ),
        (
            "wire-txn",
            900_001,
            1,
            INVALID_TRANSACTION_TIMEOUT,
            "timeout above transaction.max.timeout.ms (v1)",
        ),
        ("wire-txn", 0, 4, INVALID_TRANSACTION_TIMEOUT, "timeout 0"),
        ("", 60_000, 4, INVALID_REQUEST, "empty transactional id"),
    ] {
        let resp = init(&mut conn, txn_id, timeout_ms, version);
        if resp.error_code != want || resp.producer_id != -1 {
            broker.fail(&format!(
                "InitProducerId v{version} with {why}: expected error {want} and producer id -1, \
                 got {resp:?}"
            ));
        }
    }

    let err = end_txn(&mut conn, 1, "", 4242, 0, true);
    if err != INVALID_REQUEST {
        broker.fail(&format!(
            "EndTxn v1 with an empty transactional id: expected INVALID_REQUEST \
             ({INVALID_REQUEST}), got {err}"
        ));
    }
    for version in [1, 3] {
        let err = until_settled(
            || end_txn(&mut conn, version, "never-initialised", 4242, 0, true),
            |e| *e,
        );
        if err != INVALID_PRODUCER_ID_MAPPING {
            broker.fail(&format!(
                "EndTxn v{version} for an unknown transactional id: expected \
                 INVALID_PRODUCER_ID_MAPPING ({INVALID_PRODUCER_ID_MAPPING}), got {err}"
            ));
        }
    }
    for version in [0, 3] {
        let res = add_partitions(
            &mut conn,
            version,
            "never-initialised",
            4242,
            0,
            "txn-wire",
            &[0],
        );
        if res != vec![("txn-wire".to_string(), 0, INVALID_PRODUCER_ID_MAPPING)] {
            broker.fail(&format!(
                "AddPartitionsToTxn v{version} for an unknown transactional id: expected \
                 INVALID_PRODUCER_ID_MAPPING ({INVALID_PRODUCER_ID_MAPPING}) for txn-wire[0], got \
                 {res:?}"
            ));
        }
    }

    // A known transactional id with no transaction open.
    let ok = until_settled(|| init(&mut conn, "wire-txn", 60_000, 4), |r| r.error_code);
    if ok.error_code != NONE || ok.producer_id < 0 || ok.producer_epoch < 0 {
        broker.fail(&format!("InitProducerId v4 for wire-txn: {ok:?}"));
    }
    // A partition that does not exist: UNKNOWN_TOPIC_OR_PARTITION for it, and nothing of the
    // request is done (OPERATION_NOT_ATTEMPTED for the partition that exists), as Kafka answers.
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    const OPERATION_NOT_ATTEMPTED: i16 = 55;
    let res = add_partitions(
        &mut conn,
        0,
        "wire-txn",
        ok.producer_id,
        ok.producer_epoch,
        "txn-wire",
        &[0, 7],
    );
    let want = vec![
        ("txn-wire".to_string(), 0, OPERATION_NOT_ATTEMPTED),
        ("txn-wire".to_string(), 7, UNKNOWN_TOPIC_OR_PARTITION),
    ];
    if res != want {
        broker.fail(&format!(
            "AddPartitionsToTxn with txn-wire[7] (no such partition): expected {want:?}, got \
             {res:?}"
        ));
    }
    for version in [1, 3] {
        let err = end_txn(
            &mut conn,
            version,
            "wire-txn",
            ok.producer_id,
            ok.producer_epoch,
            true,
        );
        if err != INVALID_TXN_STATE {
            broker.fail(&format!(
                "EndTxn v{version} (commit) with no transaction open: expected INVALID_TXN_STATE \
                 ({INVALID_TXN_STATE}), got {err}"
            ));
        }
        let other_id = ok.producer_id + 1000;
        let err = end_txn(
            &mut conn,
            version,
            "wire-txn",
            other_id,
            ok.producer_epoch,
            false,
        );
        if err != INVALID_PRODUCER_ID_MAPPING {
            broker.fail(&format!(
                "EndTxn v{version} with a producer id that is not the transactional id's: \
                 expected INVALID_PRODUCER_ID_MAPPING ({INVALID_PRODUCER_ID_MAPPING}), got {err}"
            ));
        }
    }

    // The connection is still usable and the broker serves clients.
    let again = init(&mut conn, "wire-txn", 900_001, 4);
    assert_eq!(again.error_code, INVALID_TRANSACTION_TIMEOUT, "{again:?}");
    assert_serving(&mut broker);
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// 9. Admin view: DescribeTransactions and ListTransactions
// ---------------------------------------------------------------------------------------------

/// What `kafka-transactions.sh describe/list` ask: an open transaction is Ongoing with its
/// partitions, producer id and epoch; after the commit it is CompleteCommit with none; state
/// filters select, an unknown filter is echoed back; an unknown id is TRANSACTIONAL_ID_NOT_FOUND.
#[test]
fn describe_and_list_transactions_show_the_coordinators_view() {
    use odradek::protocol::messages::{
        DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest,
        ListTransactionsResponse,
    };
    const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
    let broker = txn_broker();
    let topic = "txn-admin";
    create_topic(broker.addr(), topic, 2);
    let p = txn_producer(&broker, "admin-view", &[]);
    init_txn(&broker, &p, "producer");
    must(&broker, "begin_transaction", p.begin_transaction());
    deliver(
        &broker,
        &p,
        topic,
        &recs_per_partition("v", 2, 3),
        "transactional produce",
    );

    let mut conn = Conn::open(broker.addr());
    let describe = |conn: &mut Conn, ids: &[&str]| -> DescribeTransactionsResponse {
        let req = DescribeTransactionsRequest {
            transactional_ids: ids.iter().map(|s| s.to_string()).collect(),
        };
        let cid = conn.send(&req, 0);
        conn.recv(0, cid)
    };
    let list = |conn: &mut Conn, states: &[&str]| -> ListTransactionsResponse {
        let req = ListTransactionsRequest {
            state_filters: states.iter().map(|s| s.to_string()).collect(),
            duration_filter: -1,
            ..Default::default()
        };
        let cid = conn.send(&req, 1);
        conn.recv(1, cid)
    };

    let d = describe(&mut conn, &["admin-view", "never-seen"]);
    let [open, unknown] = &d.transaction_states[..] else {
        broker.fail(&format!("two answers expected: {d:?}"));
    };
    let partitions: Vec<(String, Vec<i32>)> = open
        .topics
        .iter()
        .map(|t| {
            let mut ps = t.partitions.clone();
            ps.sort();
            (t.topic.clone(), ps)
        })
        .collect();
    if open.error_code != NONE
        || open.transaction_state != "Ongoing"
        || partitions != vec![(topic.to_string(), vec![0, 1])]
        || open.producer_id < 0
        || open.transaction_start_time_ms <= 0
    {
        broker.fail(&format!(
            "an open transaction over {topic}[0,1] should describe as Ongoing: {open:?}"
        ));
    }
    if unknown.error_code != TRANSACTIONAL_ID_NOT_FOUND {
        broker.fail(&format!("unknown id: {unknown:?}"));
    }
    let ongoing = list(&mut conn, &["Ongoing", "Sleeping"]);
    let ids: Vec<&str> = ongoing
        .transaction_states
        .iter()
        .map(|t| t.transactional_id.as_str())
        .collect();
    if ids != ["admin-view"] || ongoing.unknown_state_filters != ["Sleeping"] {
        broker.fail(&format!("ListTransactions Ongoing: {ongoing:?}"));
    }

    must(
        &broker,
        "commit_transaction",
        p.commit_transaction(API_TIMEOUT),
    );
    // The markers are written after EndTxn is answered: the state settles within moments.
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = loop {
        let d = describe(&mut conn, &["admin-view"]);
        let s = d.transaction_states[0].clone();
        if s.transaction_state == "CompleteCommit" || Instant::now() >= deadline {
            break s;
        }
        thread::sleep(Duration::from_millis(50));
    };
    if done.transaction_state != "CompleteCommit" || !done.topics.is_empty() {
        broker.fail(&format!("after the commit: {done:?}"));
    }
    if !list(&mut conn, &["Ongoing"]).transaction_states.is_empty() {
        broker.fail("nothing is Ongoing after the commit");
    }
    let all = list(&mut conn, &[]);
    if all.transaction_states.len() != 1
        || all.transaction_states[0].producer_id != done.producer_id
    {
        broker.fail(&format!("ListTransactions without filters: {all:?}"));
    }
    drop(p);
}
