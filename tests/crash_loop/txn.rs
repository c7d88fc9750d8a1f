//! The crash loop's transactional part: one transactional producer writes transactions of 1–12
//! records over the two partitions of `crash-txn`, commits 4 in 5 and aborts the rest, and starts
//! again with a new producer (same `transactional.id`, so the coordinator fences the old one and
//! finishes what it left) whenever a call fails because the broker died. After every restart a
//! `read_committed` consumer reads the topic from the start up to each partition's last stable
//! offset (where librdkafka reports the partition's end in that mode), and checks:
//!
//! - a committed transaction (commit acknowledged) is there whole, each record once, at the
//!   offset its delivery report gave, as far as the partitions are stable;
//! - an aborted transaction (abort acknowledged, or never asked to commit) never shows a record;
//! - a transaction whose commit was cut off by the kill is all or nothing;
//! - nothing else is there, and nothing twice.
//!
//! At the end, once every partition is stable to its high watermark, the same checks hold for
//! every transaction whole. Records carry `txn` and `index` headers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::{Check, Rng, Shared, TIMEOUT};

pub const TOPIC: &str = "crash-txn";
pub const PARTITIONS: i32 = 2;
const TXN_ID: &str = "crash-loop-txn";
/// Most records in one transaction (the delivery opaque packs the index below this).
const MAX_RECORDS: u64 = 12;
/// Generous bound on every transactional call: a call cut off by a kill fails within it.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Being written.
    Open,
    /// The broker acknowledged the commit.
    Committed,
    /// Never asked to commit (aborted, or given up before the commit).
    Aborted,
    /// The commit was asked for and did not come back: either outcome, but all or nothing.
    Uncertain,
}

#[derive(Clone, Debug)]
struct TxnRec {
    partition: i32,
    /// The offset the delivery report gave.
    ack: Option<i64>,
}

#[derive(Clone, Debug)]
struct Txn {
    fate: Fate,
    recs: Vec<TxnRec>,
}

/// Every transaction sent, in order (its index is its id).
#[derive(Default)]
pub struct TxnLedger {
    txns: Vec<Txn>,
    /// Producers created (one per `init_transactions` that succeeded).
    pub producers: u64,
    /// First errors of transactional calls, for the summary.
    pub errors: Vec<String>,
    pub violations: Vec<String>,
}

impl TxnLedger {
    fn note_error(&mut self, what: String) {
        if self.errors.len() < 10 {
            self.errors.push(what);
        }
    }

    /// (committed, aborted, uncertain) transactions so far.
    pub fn fates(&self) -> (usize, usize, usize) {
        let count = |f| self.txns.iter().filter(|t| t.fate == f).count();
        (
            count(Fate::Committed),
            count(Fate::Aborted),
            count(Fate::Uncertain),
        )
    }
}

struct TxnContext {
    shared: Arc<Shared>,
}

impl ClientContext for TxnContext {}

impl ProducerContext for TxnContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (t, i) = (opaque / MAX_RECORDS as usize, opaque % MAX_RECORDS as usize);
        let mut l = self.shared.txns.lock().unwrap();
        let Some(rec) = l.txns.get_mut(t).and_then(|x| x.recs.get_mut(i)) else {
            l.violations
                .push(format!("delivery report for unknown record {t}:{i}"));
            return;
        };
        if let Ok(m) = result {
            if m.partition() != rec.partition || rec.ack.is_some() {
                let what = format!(
                    "record {t}:{i} for partition {} acknowledged at {}-{} (earlier ack {:?})",
                    rec.partition,
                    m.partition(),
                    m.offset(),
                    rec.ack
                );
                l.violations.push(what);
                return;
            }
            rec.ack = Some(m.offset());
        }
    }
}

fn create_producer(shared: &Arc<Shared>) -> BaseProducer<TxnContext> {
    ClientConfig::new()
        .set("bootstrap.servers", &shared.bootstrap)
        .set("transactional.id", TXN_ID)
        .set("transaction.timeout.ms", "10000")
        .set("message.timeout.ms", "10000")
        .set("socket.timeout.ms", "10000")
        .set("linger.ms", "2")
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "300")
        .create_with_context(TxnContext {
            shared: shared.clone(),
        })
        .expect("create transactional producer")
}

/// Writes transactions (one after another, a few ms apart, while not paused) until told to stop; the last one
/// is ended before it returns.
pub fn txn_loop(shared: Arc<Shared>, seed: u64) {
    let mut rng = Rng(seed);
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.paused.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        let producer = create_producer(&shared);
        if let Err(e) = producer.init_transactions(CALL_TIMEOUT) {
            shared
                .txns
                .lock()
                .unwrap()
                .note_error(format!("init_transactions: {e}"));
            thread::sleep(Duration::from_millis(200));
            continue;
        }
        shared.txns.lock().unwrap().producers += 1;
        // One producer until a call fails (then the next one fences it and finishes its work).
        while !shared.stop.load(Ordering::SeqCst) {
            if shared.paused.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            if !one_transaction(&shared, &producer, &mut rng) {
                break;
            }
            thread::sleep(Duration::from_millis(rng.below(30)));
        }
    }
}

/// Writes one transaction and ends it; false if the producer must be replaced.
fn one_transaction(shared: &Shared, producer: &BaseProducer<TxnContext>, rng: &mut Rng) -> bool {
    let n = 1 + rng.below(MAX_RECORDS) as usize;
    let recs: Vec<TxnRec> = (0..n)
        .map(|_| TxnRec {
            partition: rng.below(PARTITIONS as u64) as i32,
            ack: None,
        })
        .collect();
    let t = {
        let mut l = shared.txns.lock().unwrap();
        l.txns.push(Txn {
            fate: Fate::Open,
            recs: recs.clone(),
        });
        l.txns.len() - 1
    };
    let set_fate = |fate: Fate, error: Option<String>| {
        let mut l = shared.txns.lock().unwrap();
        l.txns[t].fate = fate;
        if let Some(e) = error {
            l.note_error(format!("transaction {t}: {e}"));
        }
    };
    if let Err(e) = producer.begin_transaction() {
        set_fate(Fate::Aborted, Some(format!("begin: {e}")));
        return false;
    }
    for (i, r) in recs.iter().enumerate() {
        if let Err(e) = send(producer, t, i, r.partition) {
            // Never asked to commit: whatever was written is aborted, by us or by the fencing.
            let _ = abort(producer);
            set_fate(Fate::Aborted, Some(format!("send: {e}")));
            return false;
        }
    }
    let commit = rng.below(5) != 0;
    let (ended, done, cut_off, what) = if commit {
        // Deliver first (BaseProducer serves its reports in poll), so the offsets are known.
        if let Err(e) = producer.flush(CALL_TIMEOUT) {
            let _ = abort(producer);
            set_fate(Fate::Aborted, Some(format!("flush before commit: {e}")));
            return false;
        }
        let ended = producer.commit_transaction(CALL_TIMEOUT);
        (ended, Fate::Committed, Fate::Uncertain, "commit")
    } else {
        (abort(producer), Fate::Aborted, Fate::Aborted, "abort")
    };
    match ended {
        Ok(()) => {
            set_fate(done, None);
            true
        }
        Err(e) => {
            set_fate(cut_off, Some(format!("{what}: {e}")));
            false
        }
    }
}

/// Aborts the open transaction. librdkafka's abort waits for the outstanding delivery reports,
/// which a `BaseProducer` only serves in `poll`: flush (which polls) first.
fn abort(producer: &BaseProducer<TxnContext>) -> Result<(), KafkaError> {
    let _ = producer.flush(CALL_TIMEOUT);
    producer.abort_transaction(CALL_TIMEOUT)
}

fn send(
    producer: &BaseProducer<TxnContext>,
    t: usize,
    i: usize,
    partition: i32,
) -> Result<(), KafkaError> {
    let (txn, index) = (t.to_string(), i.to_string());
    let key = format!("t{t}-{i}");
    let value = value_of(t, i);
    let deadline = Instant::now() + CALL_TIMEOUT;
    loop {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "txn",
                value: Some(txn.as_bytes()),
            })
            .insert(Header {
                key: "index",
                value: Some(index.as_bytes()),
            });
        let record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(TOPIC, t * MAX_RECORDS as usize + i)
                .partition(partition)
                .key(key.as_bytes())
                .payload(&value[..])
                .headers(headers);
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                if Instant::now() < deadline =>
            {
                producer.poll(Duration::from_millis(20));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

fn value_of(t: usize, i: usize) -> Vec<u8> {
    common_payload(t * MAX_RECORDS as usize + i)
}

fn common_payload(n: usize) -> Vec<u8> {
    super::common::payload("t", n, 60)
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// What a read_committed read found: per partition the records (offset, txn, index) and where
/// the stable part ended.
struct Committed {
    records: BTreeMap<i32, Vec<(i64, usize, usize)>>,
    stable_end: BTreeMap<i32, i64>,
}

fn header_number(m: &rdkafka::message::BorrowedMessage<'_>, name: &str) -> Option<usize> {
    let h = m.headers()?;
    (0..h.count()).find_map(|i| {
        let hd = h.get(i);
        (hd.key == name)
            .then(|| hd.value.and_then(|v| std::str::from_utf8(v).ok()))
            .flatten()
            .and_then(|s| s.parse().ok())
    })
}

/// Reads every partition from the start with `isolation.level=read_committed` until librdkafka
/// reports its end. The stable end is each partition's last stable offset, asked first
/// (librdkafka's ListOffsets carries the consumer's isolation level): the read goes at least
/// that far, so every record below it was decided and read if visible.
fn read_committed(bootstrap: &str) -> Result<Committed, String> {
    let c: BaseConsumer = super::common::consumer(
        bootstrap,
        &[
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "true"),
            ("fetch.wait.max.ms", "50"),
            ("reconnect.backoff.ms", "20"),
            ("reconnect.backoff.max.ms", "300"),
        ],
    );
    let mut out = Committed {
        records: BTreeMap::new(),
        stable_end: BTreeMap::new(),
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        out.stable_end.insert(p, super::watermarks(&c, TOPIC, p)?.1);
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    c.assign(&tpl).map_err(|e| format!("assign {TOPIC}: {e}"))?;
    let mut ended = BTreeSet::new();
    let deadline = Instant::now() + TIMEOUT;
    while ended.len() < PARTITIONS as usize {
        if Instant::now() >= deadline {
            return Err(format!(
                "read_committed of {TOPIC}: partitions {ended:?} of {PARTITIONS} reported their \
                 end in {TIMEOUT:?} (last stable offsets {:?})",
                out.stable_end
            ));
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let (Some(t), Some(i)) = (header_number(&m, "txn"), header_number(&m, "index"))
                else {
                    return Err(format!(
                        "{TOPIC}-{} offset {}: a record without txn/index headers",
                        m.partition(),
                        m.offset()
                    ));
                };
                if !ended.contains(&m.partition()) {
                    out.records
                        .entry(m.partition())
                        .or_default()
                        .push((m.offset(), t, i));
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => return Err(format!("read_committed of {TOPIC}: {e}")),
            None => {}
        }
    }
    Ok(out)
}

/// Counters for the summary.
#[derive(Default)]
pub struct TxnVerifier {
    pub reads: u64,
    pub records_read: u64,
    /// Transactions checked whole at the end, by fate.
    pub final_committed: usize,
    pub final_aborted: usize,
    pub final_uncertain_committed: usize,
    pub final_uncertain_aborted: usize,
}

impl TxnVerifier {
    /// The checks of the module docs over what is stable now; with `whole`, first waits until
    /// every partition is stable up to its high watermark and checks every transaction whole.
    pub fn verify(&mut self, shared: &Shared, whole: bool) -> Check {
        if let Some(v) = shared.txns.lock().unwrap().violations.first() {
            return Err(format!("transactional producer: {v}"));
        }
        let read = if whole {
            self.read_until_stable(&shared.bootstrap)?
        } else {
            read_committed(&shared.bootstrap)?
        };
        self.reads += 1;
        if whole {
            // Counted afresh by each whole check (the last one is the summary's).
            self.final_committed = 0;
            self.final_aborted = 0;
            self.final_uncertain_committed = 0;
            self.final_uncertain_aborted = 0;
        }
        let l = shared.txns.lock().unwrap();
        let mut visible: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        for (&p, recs) in &read.records {
            let mut last = -1;
            for &(offset, t, i) in recs {
                self.records_read += 1;
                if offset <= last {
                    return Err(format!("{TOPIC}-{p}: offset {offset} after {last}"));
                }
                last = offset;
                let Some(rec) = l.txns.get(t).and_then(|x| x.recs.get(i)) else {
                    return Err(format!(
                        "{TOPIC}-{p}@{offset}: record {t}:{i} was never sent"
                    ));
                };
                if rec.partition != p || rec.ack.is_some_and(|a| a != offset) {
                    return Err(format!(
                        "record {t}:{i} read at {p}@{offset}, sent to partition {} and \
                         acknowledged at {:?}",
                        rec.partition, rec.ack
                    ));
                }
                if !visible.entry(t).or_default().insert(i) {
                    return Err(format!("record {t}:{i} read twice"));
                }
            }
        }
        let stable = |r: &TxnRec| {
            r.ack
                .is_some_and(|a| a < read.stable_end.get(&r.partition).copied().unwrap_or(0))
        };
        for (t, txn) in l.txns.iter().enumerate() {
            let seen = visible.get(&t);
            let seen_count = seen.map_or(0, BTreeSet::len);
            let stable_missing = txn
                .recs
                .iter()
                .enumerate()
                .filter(|(i, r)| stable(r) && !seen.is_some_and(|s| s.contains(i)))
                .count();
            let bad = match txn.fate {
                Fate::Open => None,
                Fate::Aborted if seen_count > 0 => Some("aborted, yet visible"),
                Fate::Aborted => None,
                Fate::Committed if txn.recs.iter().any(|r| r.ack.is_none()) => {
                    Some("committed with a record never acknowledged")
                }
                Fate::Committed if stable_missing > 0 => Some("committed, records missing"),
                Fate::Committed if whole && seen_count != txn.recs.len() => {
                    Some("committed, not all visible at the end")
                }
                Fate::Committed => None,
                Fate::Uncertain if seen_count > 0 && stable_missing > 0 => Some("partly visible"),
                Fate::Uncertain if whole && seen_count != 0 && seen_count != txn.recs.len() => {
                    Some("partly visible at the end")
                }
                Fate::Uncertain => None,
            };
            if let Some(why) = bad {
                return Err(format!(
                    "transaction {t} ({:?}): {why}: {seen_count} of {} records visible, {} \
                     stable ones missing; records {:?}; stable ends {:?}",
                    txn.fate,
                    txn.recs.len(),
                    stable_missing,
                    txn.recs,
                    read.stable_end
                ));
            }
            if whole {
                match (txn.fate, seen_count > 0) {
                    (Fate::Committed, _) => self.final_committed += 1,
                    (Fate::Aborted, _) => self.final_aborted += 1,
                    (Fate::Uncertain, true) => self.final_uncertain_committed += 1,
                    (Fate::Uncertain, false) => self.final_uncertain_aborted += 1,
                    (Fate::Open, _) => {
                        return Err(format!("transaction {t} still open at the end"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads until each partition's stable end reached its high watermark (the coordinator
    /// finishes or times out every transaction within `transaction.timeout.ms`).
    fn read_until_stable(&mut self, bootstrap: &str) -> Result<Committed, String> {
        let c = super::common::consumer(bootstrap, &[("isolation.level", "read_uncommitted")]);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let read = read_committed(bootstrap)?;
            let mut behind = Vec::new();
            for p in 0..PARTITIONS {
                let hw = super::watermarks(&c, TOPIC, p)?.1;
                if read.stable_end.get(&p).copied().unwrap_or(0) < hw {
                    behind.push((p, read.stable_end.get(&p).copied(), hw));
                }
            }
            if behind.is_empty() {
                return Ok(read);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{TOPIC}: not stable up to the high watermark after {TIMEOUT:?}: \
                     (partition, stable end, high watermark) {behind:?}"
                ));
            }
            thread::sleep(Duration::from_millis(500));
        }
    }
}
