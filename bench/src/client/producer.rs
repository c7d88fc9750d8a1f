//! A producer: generates bench records, batches them per partition (linger, batch size),
//! compresses on this core, and pipelines Produce requests, one connection per partition
//! leader. Like Kafka's accumulator and sender: sealed batches wait in a bounded per-leader
//! ready queue; a sender task per connection takes an in-flight permit and then drains every
//! ready batch (at most one per partition, up to `max_request_bytes`) into one request, so
//! batches pile up into bigger requests exactly when the broker is slow. A reader task per
//! connection matches responses to requests in order and does the accounting.
//!
//! Uncompressed batches are held as their records' descriptions (intended time, key) until a
//! request takes them; only then are their bytes written, checksummed, copied and sent, in one
//! pass while they are in cache. What the broker receives is the same as if they had been
//! written at generation: every field derives from the description.
//!
//! Open loop (`rate` set): record k of this producer is *intended* at `k / rate`; it is generated
//! then, or up to a wake quantum later (`wake_quantum_us`), or at once if the producer is behind
//! (e.g. blocked on max in flight). Its latency is measured from the intended time, so a stall
//! is charged to every record it delayed (no coordinated omission). Closed loop: intended = when
//! the record was generated.
//!
//! Bounds: at most one open batch per partition (`batch_bytes`), `ready_batches_max` sealed
//! batches per connection, `max_in_flight` requests per connection (semaphores).
//!
//! Transactional (`transaction` set): the producer owns a transactional id and a session with its
//! coordinator ([`super::txn`]); its batches are idempotent and carry the transactional bit. A
//! batch's partition is added to the open transaction (AddPartitionsToTxn) before the batch is
//! queued, and every `records` records the transaction ends: the open batches are sealed, every
//! batch is acknowledged (ready queues empty, all in-flight permits back), then EndTxn commits
//! it, or aborts it if one of its records errored. Generation waits meanwhile; in open loop the
//! records that fall due then are charged from their due time like any other stall.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use glommio::sync::Semaphore;
use odradek::protocol::api::ApiKey;
use odradek::protocol::record_batch::BATCH_HEADER_LEN;
use odradek::protocol::{
    ErrorCode, InitProducerIdRequest, PartitionProduceData, PartitionProduceResponse,
    ProduceRequest, RequestBody, ResponseBody, TopicProduceData,
};

use super::batch::{record_len, BatchBuilder, BatchError, Compression, PayloadHeader};
use super::connection::{ConnReader, ConnWriter, Connection, Sent};
use super::txn::TxnSession;
use super::TopicLayout;
use crate::stats::{Clock, CoreProbe};

/// What every producer of a run is told.
#[derive(Debug, Clone)]
pub struct ProducerSpec {
    pub record_size: usize,
    pub keys: u64,
    pub acks: i16,
    pub compression: Compression,
    pub linger_us: u64,
    pub batch_bytes: usize,
    pub max_in_flight: usize,
    pub max_request_bytes: usize,
    pub ready_batches_max: usize,
    pub idempotent: bool,
    /// Transactional producers: one transaction per `records` records.
    pub transaction: Option<TxnSpec>,
    /// Records/s for this producer (open loop), or closed loop.
    pub rate: Option<f64>,
    /// Records this producer sends, if bounded by count.
    pub records: Option<u64>,
    /// Run-clock time at which it stops generating, if bounded by time.
    pub end_us: Option<u64>,
    /// Run-clock time at which generation starts.
    pub start_us: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct TxnSpec {
    /// Records per transaction (the last one of a run may have fewer).
    pub records: u64,
    pub timeout_ms: i32,
}

/// A producer's share of the run's results.
#[derive(Debug, Default)]
pub struct ProducerResult {
    pub sent: u64,
    pub acked: u64,
    /// Bytes of the acknowledged batches as sent (after compression).
    pub acked_wire_bytes: u64,
    /// Produce requests answered, and the batches acknowledged in them: records per request
    /// is what the broker's per-request costs are spread over.
    pub requests: u64,
    pub acked_batches: u64,
    pub errored: u64,
    pub txn: TxnCounts,
}

/// What a transactional producer's transactions came to.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct TxnCounts {
    pub committed: u64,
    /// Ended with EndTxn(abort) because one of their records errored.
    pub aborted: u64,
    /// Coordinator answers retried (CONCURRENT_TRANSACTIONS, coordinator loading or moved).
    pub retried_answers: u64,
}

impl TxnCounts {
    pub fn add(&mut self, o: &TxnCounts) {
        self.committed += o.committed;
        self.aborted += o.aborted;
        self.retried_answers += o.retried_answers;
    }
}

/// The open transaction of a transactional producer.
struct OpenTxn {
    session: TxnSession,
    /// Partition p is in the open transaction.
    added: Vec<bool>,
    /// Records generated into it.
    records: u64,
    /// Records errored before it began: any later error aborts it.
    errored_before: u64,
    /// A coordinator call failed: no more transactions, open batches are dropped.
    dead: bool,
}

/// Filler bytes for values: blocks of 128 bytes whose first `random_fraction` part is random and
/// the rest a constant, so compressors see the intended entropy (OMB-style 50%-random payloads).
pub struct PayloadPool {
    bytes: Vec<u8>,
}

const POOL_LEN: usize = 1 << 20;

/// Longest an open-loop producer waits past a record's intended time before generating it.
const WAKE_QUANTUM_MAX_US: u64 = 100;

/// How long an open-loop producer sleeps at least when its next record is not yet due: a
/// tenth of the linger, at most [`WAKE_QUANTUM_MAX_US`].
///
/// Sleeping until each record's own time cost the bench's core more than the records did. W4
/// at 632k rec/s has a record due every 6 µs per producer, and every sleep is a glommio timer
/// (an io_uring timeout armed, and cancelled when the executor wakes for something else). That
/// held the bench's thread at 0.97 busy. With sleeps of at least 50 µs it was 0.75, and at
/// least 200 µs 0.59–0.65 (`perf/2026-12-05-w5-warm-up.md`).
///
/// What it does to the figures:
/// - a record is generated at most a quantum after its intended time;
/// - its latency is still measured from the intended time, so the wait is charged, not hidden;
/// - the linger starts when the record is generated, so its batch can go out up to a quantum
///   later: at most a tenth of the linger;
/// - with a zero linger the quantum is zero too, and each record gets its own sleep as before.
fn wake_quantum_us(linger_us: u64) -> u64 {
    (linger_us / 10).min(WAKE_QUANTUM_MAX_US)
}

impl PayloadPool {
    pub fn new(random_fraction: f64, record_size: usize, seed: u64) -> PayloadPool {
        let mut rng = Rng(seed | 1);
        let random_per_block = ((random_fraction.clamp(0.0, 1.0)) * 128.0).round() as usize;
        let mut bytes = vec![b'a'; POOL_LEN + record_size];
        for block in bytes.chunks_mut(128) {
            for b in block.iter_mut().take(random_per_block) {
                *b = rng.next() as u8;
            }
        }
        PayloadPool { bytes }
    }

    /// The next `len` bytes from `cursor`, walking the pool sequentially (so the prefetcher
    /// streams it; random offsets cost a cache miss per record) and wrapping at 1 MiB, so a
    /// compressor's window never sees the same filler twice within a batch.
    fn next(&self, cursor: &mut usize, len: usize) -> &[u8] {
        if *cursor >= POOL_LEN {
            *cursor = 0;
        }
        let start = *cursor;
        *cursor += len;
        &self.bytes[start..start + len]
    }
}

/// xorshift64*: fast, good enough for keys and payload offsets.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One request waiting for its response.
struct InFlight {
    sent: Sent,
    batches: Vec<SentBatch>,
}

/// A batch in a request in flight, for the accounting when its response arrives.
struct SentBatch {
    partition: i32,
    count: i32,
    /// Value bytes (record_size x count): what MB/s figures count.
    value_bytes: u64,
    /// The batch as sent (compressed, with framing): what the broker stores.
    wire_bytes: u64,
    intended: Vec<u64>,
}

/// A partition's open batch, held as what generates its records rather than their bytes: the
/// bytes are written when a request takes the batch ([`RecordWriter`]), so they go out while
/// still in cache. W5 keeps ~1M open batches (1,000 producers x 1,000 partitions) and hundreds
/// of thousands sealed ones; written at generation, their bytes were cold by the time they were
/// checksummed, copied into a request and sent, and every stage paid for it.
#[derive(Debug, Default)]
struct OpenBatch {
    /// Intended send time of each record (µs on the run clock); the record's timestamp, its
    /// payload header's send time and its latency all derive from it.
    intended: Vec<u64>,
    /// Each record's key (keyed runs only).
    keys: Vec<u64>,
    /// Bench payload sequence of the first record; the others follow it.
    first_seq: u64,
    /// Timestamp (ms) of the first record: the batch's base timestamp.
    base_ts_ms: i64,
    /// Bytes the records will take in the batch (`record_len` of each).
    bytes: usize,
}

impl OpenBatch {
    fn count(&self) -> i32 {
        self.intended.len() as i32
    }
    fn is_empty(&self) -> bool {
        self.intended.is_empty()
    }
}

/// A sealed batch waiting to be sent.
struct Sealed {
    partition: i32,
    count: i32,
    value_bytes: u64,
    /// Its exact size on the wire, also before it is written.
    wire_len: usize,
    intended: Vec<u64>,
    body: SealedBody,
}

enum SealedBody {
    /// Written and compressed when sealed: compression needs the bytes anyway.
    Written(Bytes),
    /// Written when a request takes it (uncompressed batches).
    Deferred {
        keys: Vec<u64>,
        first_seq: u64,
        ids: BatchIds,
    },
}

/// Idempotence and transaction fields of a batch's header.
#[derive(Debug, Clone, Copy)]
struct BatchIds {
    /// -1 when not idempotent.
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
}

/// Bytes of each buffer a [`RecordWriter`] carves uncompressed batches out of.
const ARENA_BYTES: usize = 1 << 20;

/// Writes batches from their records' descriptions: the values are filler from the run's pool,
/// read sequentially from this writer's own cursor, each with the bench's payload header.
///
/// Uncompressed batches are carved one after another out of 1 MiB buffers (a batch that does
/// not fit in what is left starts a new one; a bigger batch gets its own), and a buffer is
/// freed when the last batch in it is. Allocated one per batch, a connection's request of a
/// few hundred batches of every size left mimalloc's freed memory fragmented: W5's bench
/// kept 3.4-3.6 GB resident for ~1.3-2 GB in use, and took ~60 s to get there, faulting in
/// fresh pages on its core (`perf/2026-12-05-w5-deferred-batches.md`).
struct RecordWriter {
    producer: u32,
    pool: Rc<PayloadPool>,
    cursor: usize,
    clock: Clock,
    arena: BytesMut,
}

impl RecordWriter {
    fn new(producer: u32, pool: Rc<PayloadPool>, clock: Clock, seed: u64) -> RecordWriter {
        RecordWriter {
            producer,
            pool,
            cursor: (mix(seed) as usize % POOL_LEN) & !127,
            clock,
            arena: BytesMut::new(),
        }
    }

    /// The batch of `intended.len()` records whose keys are `keys` (none if empty) and whose
    /// payload sequences start at `first_seq`, framed with `ids` and `compression`.
    /// `records_bytes`: what the records take (`record_len` of each), so that the batch is
    /// carved out of a buffer, or allocated, once.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        record_size: usize,
        intended: &[u64],
        keys: &[u64],
        first_seq: u64,
        records_bytes: usize,
        ids: BatchIds,
        compression: Compression,
    ) -> Result<Bytes, BatchError> {
        let len = record_size;
        let mut b = if compression == Compression::None {
            let need = BATCH_HEADER_LEN + records_bytes;
            let mut arena = std::mem::take(&mut self.arena);
            if arena.capacity() < need {
                arena = BytesMut::with_capacity(need.max(ARENA_BYTES));
            }
            BatchBuilder::in_buffer(arena, records_bytes)
        } else {
            BatchBuilder::new(records_bytes)
        };
        for (i, &due) in intended.iter().enumerate() {
            let unix_us = self.clock.unix_us(due);
            let header = PayloadHeader {
                producer: self.producer,
                sequence: first_seq + i as u64,
                send_time_us: unix_us,
            };
            let key = keys.get(i).map(|k| k.to_be_bytes());
            let filler = self.pool.next(&mut self.cursor, len);
            b.append(
                (unix_us / 1000) as i64,
                key.as_ref().map(|k| &k[..]),
                filler,
                Some(header),
            );
        }
        let sealed = b.seal(
            compression,
            ids.producer_id,
            ids.producer_epoch,
            ids.base_sequence,
            ids.transactional,
        );
        if compression == Compression::None {
            self.arena = b.into_buffer();
        }
        sealed
    }
}

/// Shared between the producer, a connection's sender task and its reader task.
struct LinkState {
    ready: RefCell<VecDeque<Sealed>>,
    /// Counts batches in `ready` (the sender waits on it).
    ready_items: Semaphore,
    /// Free slots in `ready` (the producer waits on it).
    ready_space: Semaphore,
    closed: Cell<bool>,
    in_flight: RefCell<VecDeque<InFlight>>,
    permits: Semaphore,
    broken: Cell<bool>,
    /// The reader task has returned: nobody reads responses any more, so a request sent after
    /// that is settled (as errored) by its sender.
    reader_gone: Cell<bool>,
    result: RefCell<ProducerResult>,
}

impl LinkState {
    /// Counts every request in flight as errored with `msg` and gives back its permit.
    fn fail_in_flight(&self, probe: &RefCell<CoreProbe>, msg: &str) {
        let failed: Vec<InFlight> = self.in_flight.borrow_mut().drain(..).collect();
        let mut probe = probe.borrow_mut();
        let mut res = self.result.borrow_mut();
        for f in &failed {
            let n: u64 = f.batches.iter().map(|b| b.count as u64).sum();
            res.errored += n;
            probe.error(msg.to_string(), n);
        }
        self.permits.signal(failed.len() as u64);
    }
}

struct Link {
    state: Rc<LinkState>,
    sender: glommio::task::JoinHandle<()>,
    _reader: Option<glommio::task::JoinHandle<()>>,
}

pub struct Producer {
    id: u32,
    spec: Rc<ProducerSpec>,
    layout: Rc<TopicLayout>,
    probe: Rc<RefCell<CoreProbe>>,
    clock: Clock,
    /// Connection per leader, indexed like `layout.leader_addrs`.
    links: Vec<Option<Link>>,
    /// Partitions with a non-empty open batch, in the order they opened.
    open_parts: Vec<usize>,
    open: Vec<OpenBatch>,
    /// Run-clock time of the first record of each open batch.
    open_since_us: Vec<Option<u64>>,
    /// Bench payload sequence per partition.
    payload_seq: Vec<u64>,
    /// Kafka idempotence sequence per partition.
    kafka_seq: Vec<i32>,
    producer_id: i64,
    producer_epoch: i16,
    txn: Option<OpenTxn>,
    sticky: usize,
    rng: Rng,
    /// Writes the batches this producer compresses (the sender tasks write the others).
    writer: RecordWriter,
    local: ProducerResult,
}

impl Producer {
    pub fn new(
        id: u32,
        spec: Rc<ProducerSpec>,
        layout: Rc<TopicLayout>,
        probe: Rc<RefCell<CoreProbe>>,
        pool: Rc<PayloadPool>,
        clock: Clock,
    ) -> Producer {
        let n = layout.partitions();
        let links = (0..layout.leader_addrs.len()).map(|_| None).collect();
        Producer {
            id,
            open: (0..n).map(|_| OpenBatch::default()).collect(),
            open_since_us: vec![None; n],
            payload_seq: vec![0; n],
            kafka_seq: vec![0; n],
            producer_id: -1,
            producer_epoch: -1,
            txn: None,
            sticky: id as usize % n.max(1),
            rng: Rng(mix(id as u64 + 1) | 1),
            writer: RecordWriter::new(id, pool, clock, id as u64),
            spec,
            layout,
            probe,
            clock,
            links,
            open_parts: Vec::new(),
            local: ProducerResult::default(),
        }
    }

    async fn ensure_link(&mut self, leader: usize) -> Result<(), String> {
        if self.links.get(leader).is_some_and(|l| l.is_none()) {
            let addr = self.layout.leader_addrs[leader].clone();
            let conn = Connection::connect(&addr)
                .await
                .map_err(|e| e.to_string())?;
            let Connection { writer, reader } = conn;
            let state = Rc::new(LinkState {
                ready: RefCell::new(VecDeque::new()),
                ready_items: Semaphore::new(0),
                ready_space: Semaphore::new(self.spec.ready_batches_max.max(1) as u64),
                closed: Cell::new(false),
                in_flight: RefCell::new(VecDeque::new()),
                permits: Semaphore::new(self.spec.max_in_flight.max(1) as u64),
                broken: Cell::new(false),
                reader_gone: Cell::new(false),
                result: RefCell::new(ProducerResult::default()),
            });
            let reader_task = if self.spec.acks != 0 {
                let st = state.clone();
                let probe = self.probe.clone();
                let clock = self.clock;
                Some(glommio::spawn_local(read_responses(reader, st, probe, clock)).detach())
            } else {
                None
            };
            let records = RecordWriter::new(
                self.id,
                self.writer.pool.clone(),
                self.clock,
                ((leader as u64 + 1) << 32) | self.id as u64,
            );
            let sender = glommio::spawn_local(send_requests(
                writer,
                records,
                state.clone(),
                self.spec.clone(),
                self.layout.topic.clone(),
                self.txn
                    .as_ref()
                    .map(|t| t.session.transactional_id.clone()),
                self.probe.clone(),
            ))
            .detach();
            self.links[leader] = Some(Link {
                state,
                sender,
                _reader: reader_task,
            });
        }
        Ok(())
    }

    async fn init_producer_id(&mut self) -> Result<(), String> {
        let addr = self.layout.leaders.first().cloned().unwrap_or_default();
        let mut conn = Connection::connect(&addr)
            .await
            .map_err(|e| e.to_string())?;
        let resp = conn
            .call(InitProducerIdRequest {
                transactional_id: None,
                transaction_timeout_ms: 60_000,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        match resp {
            ResponseBody::InitProducerId(r) if r.error_code == 0 => {
                self.producer_id = r.producer_id;
                self.producer_epoch = r.producer_epoch;
                Ok(())
            }
            ResponseBody::InitProducerId(r) => {
                Err(format!("InitProducerId: {}", ErrorCode(r.error_code)))
            }
            _ => Err("InitProducerId: unexpected response".into()),
        }
    }

    /// Starts the transactional id's session: a transactional id unique to the run and the
    /// producer, its coordinator, its producer id and epoch.
    async fn init_transactions(&mut self, ts: TxnSpec) -> Result<(), String> {
        let addr = self.layout.leaders.first().cloned().unwrap_or_default();
        let id = format!("odradek-bench-{}-{}", self.clock.unix_start_us, self.id);
        let session = TxnSession::start(&addr, id, ts.timeout_ms)
            .await
            .map_err(|e| format!("transaction: {e}"))?;
        self.producer_id = session.producer_id;
        self.producer_epoch = session.producer_epoch;
        self.txn = Some(OpenTxn {
            session,
            added: vec![false; self.layout.partitions()],
            records: 0,
            errored_before: 0,
            dead: false,
        });
        Ok(())
    }

    /// Runs to completion (count or time bound), then waits for every response.
    pub async fn run(mut self) -> ProducerResult {
        let init = match self.spec.transaction {
            Some(ts) => self.init_transactions(ts).await,
            None if self.spec.idempotent => self.init_producer_id().await,
            None => Ok(()),
        };
        if let Err(e) = init {
            self.probe.borrow_mut().error(e, 1);
            return self.local;
        }
        let txn_records = self.spec.transaction.map_or(u64::MAX, |t| t.records.max(1));
        let n = self.layout.partitions();
        let interval_us = self.spec.rate.map(|r| 1e6 / r.max(1e-9));
        let wake_quantum = wake_quantum_us(self.spec.linger_us);
        let mut k: u64 = 0;
        let mut oldest_us: Option<u64> = None;
        let mut failed = false;
        // Closed loop reads the clock every 16 records (a few µs apart) and after every await.
        let mut now = self.clock.now_us();
        let mut fresh_for = 0u32;
        loop {
            if interval_us.is_some() || fresh_for == 0 {
                now = self.clock.now_us();
                fresh_for = 16;
            }
            fresh_for -= 1;
            let done = self.spec.records.is_some_and(|r| k >= r)
                || self.spec.end_us.is_some_and(|e| now >= e)
                || failed
                || crate::run::STOP.load(std::sync::atomic::Ordering::Relaxed)
                || self.links.iter().flatten().any(|l| l.state.broken.get());
            if done {
                break;
            }
            let due = match interval_us {
                Some(iv) => self.spec.start_us + (k as f64 * iv) as u64,
                None => now,
            };
            if let Some(o) = oldest_us {
                if o + self.spec.linger_us <= now {
                    failed |= self.flush(None).await.is_err();
                    oldest_us = None;
                    fresh_for = 0;
                    continue;
                }
            }
            if due > now {
                // Not before a quantum from now: records due meanwhile are generated together
                // on waking (see `wake_quantum_us`). Linger and the run's end stay punctual.
                let mut wake = due.max(now + wake_quantum);
                if let Some(o) = oldest_us {
                    wake = wake.min(o + self.spec.linger_us);
                }
                if let Some(e) = self.spec.end_us {
                    wake = wake.min(e);
                }
                glommio::timer::sleep(Duration::from_micros(wake.saturating_sub(now).max(1))).await;
                fresh_for = 0;
                continue;
            }
            // Generate record k.
            let (p, key) = if self.spec.keys > 0 {
                let key = self.rng.next() % self.spec.keys;
                ((mix(key) % n as u64) as usize, Some(key))
            } else {
                (self.sticky, None)
            };
            let seq = self.payload_seq[p];
            self.payload_seq[p] += 1;
            let ts_ms = (self.clock.unix_us(due) / 1000) as i64;
            let b = &mut self.open[p];
            if b.is_empty() {
                b.first_seq = seq;
                b.base_ts_ms = ts_ms;
            }
            b.bytes += record_len(
                ts_ms - b.base_ts_ms,
                b.count(),
                key.map(|_| 8),
                self.spec.record_size,
            );
            b.intended.push(due);
            if let Some(k) = key {
                b.keys.push(k);
            }
            if self.open_since_us[p].is_none() {
                self.open_since_us[p] = Some(due.min(now));
                self.open_parts.push(p);
            }
            oldest_us = Some(oldest_us.map_or(now, |o| o.min(now)));
            k += 1;
            if self.open[p].bytes >= self.spec.batch_bytes {
                failed |= self.flush(Some(p)).await.is_err();
                fresh_for = 0;
                if self.spec.keys == 0 {
                    self.sticky = (self.sticky + 1) % n;
                }
                oldest_us = self
                    .open_parts
                    .iter()
                    .filter_map(|&q| self.open_since_us[q])
                    .min();
            }
            if let Some(t) = self.txn.as_mut() {
                t.records += 1;
                if t.records >= txn_records {
                    failed |= self.end_txn().await.is_err();
                    oldest_us = None;
                    fresh_for = 0;
                }
            }
            // Let the reader tasks and the ticker run now and then in closed loop.
            if k.is_multiple_of(64) {
                glommio::yield_if_needed().await;
                fresh_for = 0;
            }
        }
        if self.txn.is_some() {
            let _ = self.end_txn().await;
        } else {
            let _ = self.flush(None).await;
        }
        if self.spec.keys == 0 {
            self.sticky = (self.sticky + 1) % n.max(1);
        }
        // Let the senders drain, then wait for every response: take all permits back.
        let links: Vec<Link> = std::mem::take(&mut self.links)
            .into_iter()
            .flatten()
            .collect();
        for link in &links {
            link.state.closed.set(true);
            link.state.ready_items.signal(1);
        }
        let mut states = Vec::new();
        for link in links {
            let _ = link.sender.await;
            let _ = link
                .state
                .permits
                .acquire(self.spec.max_in_flight.max(1) as u64)
                .await;
            states.push(link.state);
        }
        let mut out = std::mem::take(&mut self.local);
        for st in states {
            let r = std::mem::take(&mut *st.result.borrow_mut());
            out.acked += r.acked;
            out.acked_wire_bytes += r.acked_wire_bytes;
            out.requests += r.requests;
            out.acked_batches += r.acked_batches;
            out.errored += r.errored;
        }
        if let Some(t) = &self.txn {
            out.txn.retried_answers += t.session.retries;
        }
        out
    }

    /// Records errored so far, here and on every connection.
    fn errored_total(&self) -> u64 {
        self.local.errored
            + self
                .links
                .iter()
                .flatten()
                .map(|l| l.state.result.borrow().errored)
                .sum::<u64>()
    }

    /// Waits until every batch handed to a connection is settled: its ready queue is empty
    /// (every slot free; the sender frees a batch's slot only once it holds an in-flight permit
    /// for it) and every in-flight permit is back (its response read).
    async fn drain(&self) {
        let slots = self.spec.ready_batches_max.max(1) as u64;
        let permits = self.spec.max_in_flight.max(1) as u64;
        for link in self.links.iter().flatten() {
            let st = &link.state;
            if st.ready_space.acquire(slots).await.is_ok() {
                st.ready_space.signal(slots);
            }
            if st.permits.acquire(permits).await.is_ok() {
                st.permits.signal(permits);
            }
        }
    }

    /// Ends the open transaction: seals its open batches, waits until every batch is
    /// acknowledged, then commits it, or aborts it if any record errored since it began.
    /// Err when the producer cannot go on (a coordinator call failed).
    async fn end_txn(&mut self) -> Result<(), ()> {
        let flushed = self.flush(None).await;
        // Like the sticky partitioner after a batch is sent: the next transaction writes
        // elsewhere.
        if self.spec.keys == 0 {
            self.sticky = (self.sticky + 1) % self.layout.partitions().max(1);
        }
        self.drain().await;
        let errored = self.errored_total();
        let Some(t) = self.txn.as_mut() else {
            return flushed;
        };
        if t.dead {
            return Err(());
        }
        t.records = 0;
        let commit = flushed.is_ok() && errored == t.errored_before;
        t.errored_before = errored;
        if !t.added.iter().any(|a| *a) {
            return flushed; // nothing was written in it
        }
        t.added.iter_mut().for_each(|a| *a = false);
        let started = self.clock.now_us();
        let ended = t.session.end(commit).await;
        let now = self.clock.now_us();
        match ended {
            Ok(()) if commit => {
                self.local.txn.committed += 1;
                self.probe
                    .borrow_mut()
                    .committed(now, now.saturating_sub(started));
                Ok(())
            }
            Ok(()) => {
                self.local.txn.aborted += 1;
                Ok(())
            }
            Err(e) => {
                t.dead = true;
                self.probe
                    .borrow_mut()
                    .error(format!("transaction: {e}"), 1);
                Err(())
            }
        }
    }

    /// Adds the partitions of `parts` with open batches that the open transaction lacks.
    async fn add_to_txn(&mut self, parts: &[usize]) -> Result<(), ()> {
        let Some(t) = self.txn.as_mut() else {
            return Ok(());
        };
        if t.dead {
            return Err(());
        }
        let new: Vec<i32> = parts
            .iter()
            .filter(|&&p| !self.open[p].is_empty() && !t.added[p])
            .map(|&p| p as i32)
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let started = self.clock.now_us();
        let added = t.session.add_partitions(&self.layout.topic, &new).await;
        let now = self.clock.now_us();
        match added {
            Ok(()) => {
                self.probe
                    .borrow_mut()
                    .added_partitions(now, now.saturating_sub(started));
                for p in new {
                    t.added[p as usize] = true;
                }
                Ok(())
            }
            Err(e) => {
                t.dead = true;
                self.probe
                    .borrow_mut()
                    .error(format!("transaction: {e}"), 1);
                Err(())
            }
        }
    }

    /// Seals and sends the open batch of `only`, or every open batch; one request per leader.
    async fn flush(&mut self, only: Option<usize>) -> Result<(), ()> {
        let parts: Vec<usize> = match only {
            Some(p) => {
                if let Some(i) = self.open_parts.iter().position(|&q| q == p) {
                    self.open_parts.remove(i);
                }
                vec![p]
            }
            None => std::mem::take(&mut self.open_parts),
        };
        if self.add_to_txn(&parts).await.is_err() {
            // The transaction cannot take them: these records are never sent.
            for p in parts {
                let count = self.open[p].count() as u64;
                if count > 0 {
                    self.open[p] = OpenBatch::default();
                    self.open_since_us[p] = None;
                    self.local.errored += count;
                    self.probe
                        .borrow_mut()
                        .error("produce: dropped, transaction failed".into(), count);
                }
            }
            return Err(());
        }
        let mut result = Ok(());
        for p in parts {
            if self.open[p].is_empty() {
                continue;
            }
            self.open_since_us[p] = None;
            let b = std::mem::take(&mut self.open[p]);
            let count = b.count();
            let value_bytes = count as u64 * self.spec.record_size as u64;
            let (pid, epoch, seq) = if self.producer_id >= 0 {
                (self.producer_id, self.producer_epoch, self.kafka_seq[p])
            } else {
                (-1, -1, -1)
            };
            let ids = BatchIds {
                producer_id: pid,
                producer_epoch: epoch,
                base_sequence: seq,
                transactional: self.txn.is_some(),
            };
            let (body, wire_len) = if self.spec.compression == Compression::None {
                let wire_len = BATCH_HEADER_LEN + b.bytes;
                let (keys, first_seq) = (b.keys, b.first_seq);
                (
                    SealedBody::Deferred {
                        keys,
                        first_seq,
                        ids,
                    },
                    wire_len,
                )
            } else {
                let written = self.writer.write(
                    self.spec.record_size,
                    &b.intended,
                    &b.keys,
                    b.first_seq,
                    b.bytes,
                    ids,
                    self.spec.compression,
                );
                match written {
                    Ok(bytes) => {
                        let wire_len = bytes.len();
                        (SealedBody::Written(bytes), wire_len)
                    }
                    Err(e) => {
                        self.probe.borrow_mut().error(e.to_string(), count as u64);
                        self.local.errored += count as u64;
                        continue;
                    }
                }
            };
            let intended = b.intended;
            if self.producer_id >= 0 {
                self.kafka_seq[p] = odradek::protocol::record_batch::increment_sequence(seq, count);
            }
            let leader = self.layout.leader_index[p];
            if let Err(e) = self.ensure_link(leader).await {
                self.probe.borrow_mut().error(e, count as u64);
                self.local.errored += count as u64;
                result = Err(());
                continue;
            }
            let Some(Some(link)) = self.links.get(leader) else {
                continue;
            };
            let st = link.state.clone();
            // Back-pressure: the ready queue is bounded.
            if st.ready_space.acquire(1).await.is_err() || st.broken.get() {
                self.local.errored += count as u64;
                self.probe
                    .borrow_mut()
                    .error("connection broken".into(), count as u64);
                result = Err(());
                continue;
            }
            self.local.sent += count as u64;
            st.ready.borrow_mut().push_back(Sealed {
                partition: p as i32,
                count,
                value_bytes,
                wire_len,
                intended,
                body,
            });
            st.ready_items.signal(1);
        }
        result
    }
}

/// Drains a connection's ready queue: waits for a batch, then for an in-flight permit, then
/// takes every ready batch it can (one per partition, up to `max_request_bytes`) into one
/// Produce request. Ends when the producer closes the queue and it is empty.
async fn send_requests(
    mut writer: ConnWriter,
    mut records_writer: RecordWriter,
    st: Rc<LinkState>,
    spec: Rc<ProducerSpec>,
    topic: String,
    transactional_id: Option<String>,
    probe: Rc<RefCell<CoreProbe>>,
) {
    let acks = spec.acks;
    let version = match writer.versions.get(ApiKey::Produce) {
        Ok(v) => v,
        Err(e) => {
            probe.borrow_mut().error(e.to_string(), 1);
            st.broken.set(true);
            -1
        }
    };
    loop {
        if st.ready_items.acquire(1).await.is_err() {
            return;
        }
        if st.ready.borrow().is_empty() {
            if st.closed.get() {
                return;
            }
            continue;
        }
        if st.permits.acquire(1).await.is_err() {
            return;
        }
        // Take the first ready batch (its item unit is already taken), then whatever else is ready.
        let mut taken: Vec<Sealed> = Vec::new();
        let mut bytes = 0usize;
        {
            let mut ready = st.ready.borrow_mut();
            // A partition whose oldest ready batch stays behind is closed for this request:
            // taking a later batch of it would reorder the partition.
            let mut closed: Vec<i32> = Vec::new();
            let mut i = 0;
            while i < ready.len() {
                let b = &ready[i];
                let blocked = closed.contains(&b.partition)
                    || taken.iter().any(|t| t.partition == b.partition);
                if !taken.is_empty() && (blocked || bytes + b.wire_len > spec.max_request_bytes) {
                    closed.push(b.partition);
                    i += 1;
                    if bytes >= spec.max_request_bytes {
                        break;
                    }
                    continue;
                }
                if !taken.is_empty() && !st.ready_items.try_acquire(1).unwrap_or(false) {
                    break;
                }
                if let Some(b) = ready.remove(i) {
                    bytes += b.wire_len;
                    taken.push(b);
                }
            }
        }
        st.ready_space.signal(taken.len() as u64);
        let records: u64 = taken.iter().map(|b| b.count as u64).sum();
        if st.broken.get() || version < 0 {
            let mut res = st.result.borrow_mut();
            res.errored += records;
            probe
                .borrow_mut()
                .error("connection broken".into(), records);
            st.permits.signal(1);
            continue;
        }
        // The deferred batches are written here, just before the request copies and sends them.
        let mut partition_data = Vec::with_capacity(taken.len());
        let mut meta = Vec::with_capacity(taken.len());
        for b in taken {
            let written = match b.body {
                SealedBody::Written(bytes) => Ok(bytes),
                SealedBody::Deferred {
                    keys,
                    first_seq,
                    ids,
                } => records_writer.write(
                    spec.record_size,
                    &b.intended,
                    &keys,
                    first_seq,
                    b.wire_len - BATCH_HEADER_LEN,
                    ids,
                    Compression::None,
                ),
            };
            match written {
                Ok(bytes) => {
                    partition_data.push(PartitionProduceData {
                        index: b.partition,
                        records: Some(bytes),
                    });
                    meta.push(SentBatch {
                        partition: b.partition,
                        count: b.count,
                        value_bytes: b.value_bytes,
                        wire_bytes: b.wire_len as u64,
                        intended: b.intended,
                    });
                }
                Err(e) => {
                    probe.borrow_mut().error(e.to_string(), b.count as u64);
                    st.result.borrow_mut().errored += b.count as u64;
                }
            }
        }
        if partition_data.is_empty() {
            st.permits.signal(1);
            continue;
        }
        let body = RequestBody::from(ProduceRequest {
            transactional_id: transactional_id.clone(),
            acks,
            timeout_ms: 30_000,
            topic_data: vec![TopicProduceData {
                name: topic.clone(),
                partition_data,
            }],
        });
        // Queue the entry before writing, so the reader always finds it.
        st.in_flight.borrow_mut().push_back(InFlight {
            sent: Sent {
                correlation_id: writer.next_correlation_id(),
                api: ApiKey::Produce,
                version,
            },
            batches: if acks == 0 { Vec::new() } else { meta },
        });
        match writer.send_owned_at(body, version).await {
            Ok(_) if acks == 0 => {
                st.in_flight.borrow_mut().pop_back();
                st.permits.signal(1);
            }
            // The socket took the request, but its reader has already failed and returned
            // (a dead broker's socket accepts one more write before its reset arrives): no
            // response will be read for it.
            Ok(_) if st.reader_gone.get() => {
                st.broken.set(true);
                st.fail_in_flight(&probe, "connection broken before the response");
            }
            Ok(_) => {}
            Err(e) => {
                st.broken.set(true);
                // The entry queued above is still the last one, unless a failing reader has
                // already settled it.
                if st.in_flight.borrow_mut().pop_back().is_some() {
                    probe.borrow_mut().error(e.to_string(), records);
                    st.result.borrow_mut().errored += records;
                    st.permits.signal(1);
                }
            }
        }
    }
}

/// Reads Produce responses in order and settles each request: acknowledged ranges and latency,
/// or errors per partition. On a connection failure every request in flight is counted errored.
async fn read_responses(
    mut reader: ConnReader,
    st: Rc<LinkState>,
    probe: Rc<RefCell<CoreProbe>>,
    clock: Clock,
) {
    loop {
        // Entries are queued before their request is written, so a frame always has one.
        let frame = reader.frame().await;
        let now = clock.now_us();
        let Some(entry) = st.in_flight.borrow_mut().pop_front() else {
            st.broken.set(true);
            st.reader_gone.set(true);
            if let Err(e) = frame {
                probe.borrow_mut().error(e.to_string(), 0);
            }
            return;
        };
        let resp = frame.and_then(|f| ConnReader::decode(f, entry.sent));
        match resp {
            Ok(ResponseBody::Produce(r)) => {
                let mut probe = probe.borrow_mut();
                let mut res = st.result.borrow_mut();
                res.requests += 1;
                // Brokers answer the partitions in the order they were sent, so the i-th answer
                // is the i-th batch's; a search covers any other order (W5 sends ~200 batches a
                // request, and searching for each was quadratic).
                let answers: Vec<&PartitionProduceResponse> = r
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter())
                    .collect();
                for (i, b) in entry.batches.into_iter().enumerate() {
                    let (p, count) = (b.partition, b.count);
                    let pr = match answers.get(i) {
                        Some(x) if x.index == p => Some(*x),
                        _ => answers.iter().copied().find(|x| x.index == p),
                    };
                    match pr {
                        Some(x) if x.error_code == 0 => {
                            res.acked += count as u64;
                            res.acked_wire_bytes += b.wire_bytes;
                            res.acked_batches += 1;
                            probe.acked_offsets.push(
                                p,
                                x.base_offset,
                                x.base_offset + count as i64,
                            );
                            probe.acked(now, b.value_bytes, &b.intended);
                        }
                        Some(x) => {
                            res.errored += count as u64;
                            probe.error(
                                format!("produce: {}", ErrorCode(x.error_code)),
                                count as u64,
                            );
                        }
                        None => {
                            res.errored += count as u64;
                            probe.error(
                                "produce: partition missing in response".into(),
                                count as u64,
                            );
                        }
                    }
                }
                st.permits.signal(1);
            }
            Ok(_) | Err(_) => {
                let msg = match resp {
                    Err(e) => e.to_string(),
                    Ok(_) => "unexpected response".to_string(),
                };
                st.broken.set(true);
                st.reader_gone.set(true);
                st.in_flight.borrow_mut().push_front(entry);
                st.fail_in_flight(&probe, &msg);
                return;
            }
        }
    }
}

/// Produce version the exchange sizes below are computed at (the broker's newest is 11; the
/// frames of 9–11 differ by a few bytes).
const EXCHANGE_VERSION: i16 = 9;

/// Frame sizes, length prefix included, of a Produce request carrying one uncompressed record of
/// `record_size` bytes (with an 8-byte key if `keyed`, as the bench's keys are) to a topic named
/// `topic`, and of its successful answer: what a producer sends and reads per record when each
/// record goes out on its own (the request/reply ceiling's shape).
pub fn one_record_exchange_bytes(record_size: usize, keyed: bool, topic: &str) -> (usize, usize) {
    use odradek::protocol::{
        encode_request, encode_response, PartitionProduceResponse, ProduceResponse, RequestHeader,
        TopicProduceResponse, Writer,
    };
    let mut b = BatchBuilder::new(record_size);
    let key = 0u64.to_be_bytes();
    b.append(0, keyed.then_some(&key[..]), &vec![0u8; record_size], None);
    let records = b
        .seal(Compression::None, -1, -1, -1, false)
        .unwrap_or_default();
    let request = RequestBody::from(ProduceRequest {
        transactional_id: None,
        acks: -1,
        timeout_ms: 30_000,
        topic_data: vec![TopicProduceData {
            name: topic.to_string(),
            partition_data: vec![PartitionProduceData {
                index: 0,
                records: Some(records),
            }],
        }],
    });
    let header = RequestHeader {
        request_api_key: ApiKey::Produce as i16,
        request_api_version: EXCHANGE_VERSION,
        correlation_id: 1,
        client_id: Some("odradek-bench".into()),
    };
    let mut w = Writer::new();
    encode_request(&mut w, &header, &request);
    let request_len = w.len();
    let response = ResponseBody::Produce(ProduceResponse {
        responses: vec![TopicProduceResponse {
            name: topic.to_string(),
            partition_responses: vec![PartitionProduceResponse {
                base_offset: 1 << 30,
                ..Default::default()
            }],
        }],
        ..Default::default()
    });
    let mut w = Writer::new();
    encode_response(&mut w, 1, EXCHANGE_VERSION, &response);
    (4 + request_len, 4 + w.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wake_quantum_is_a_tenth_of_the_linger_up_to_its_cap() {
        assert_eq!(wake_quantum_us(1_000), WAKE_QUANTUM_MAX_US);
        assert_eq!(wake_quantum_us(200), 20);
        assert_eq!(wake_quantum_us(60_000), WAKE_QUANTUM_MAX_US);
        // No linger, no quantum: each record sleeps until its own time.
        assert_eq!(wake_quantum_us(0), 0);
    }

    /// What the producer knows of a batch before writing it (its records' intended times and
    /// keys, its first payload sequence, its size from `record_len`) is what the written batch
    /// holds: the request budget and the MB/s figures count `wire_len` before the bytes exist.
    #[test]
    fn a_deferred_batch_is_written_as_described_and_weighs_what_was_counted() {
        use odradek::protocol::record_batch::{validate, ATTR_TRANSACTIONAL};
        use odradek::protocol::records::for_each_record;
        let clock = Clock::new();
        let pool = Rc::new(PayloadPool::new(0.5, 1024, 3));
        let mut writer = RecordWriter::new(7, pool, clock, 11);
        // Records 400 µs apart: the timestamp deltas cross millisecond boundaries.
        let intended: Vec<u64> = (0..9).map(|i| 5_000_000 + i * 400).collect();
        let keys: Vec<u64> = (0..9).map(|i| 1_000 + i).collect();
        let base_ts_ms = (clock.unix_us(intended[0]) / 1000) as i64;
        for keyed in [true, false] {
            let keys = if keyed { &keys[..] } else { &[][..] };
            let counted: usize = intended
                .iter()
                .enumerate()
                .map(|(i, &due)| {
                    let ts_ms = (clock.unix_us(due) / 1000) as i64;
                    record_len(ts_ms - base_ts_ms, i as i32, keyed.then_some(8), 1024)
                })
                .sum();
            let ids = BatchIds {
                producer_id: 42,
                producer_epoch: 3,
                base_sequence: 100,
                transactional: true,
            };
            let batch = writer
                .write(1024, &intended, keys, 77, counted, ids, Compression::None)
                .unwrap();
            assert_eq!(batch.len(), BATCH_HEADER_LEN + counted);
            let hdr = validate(&batch).unwrap();
            assert_eq!(hdr.records_count, 9);
            assert_eq!(hdr.base_timestamp, base_ts_ms);
            assert_eq!((hdr.producer_id, hdr.producer_epoch), (42, 3));
            assert_eq!(hdr.base_sequence, 100);
            assert_ne!(hdr.attributes & ATTR_TRANSACTIONAL, 0);
            let mut seen = Vec::new();
            for_each_record(&batch, |r| {
                let h = super::super::batch::read_payload_header(r.value.unwrap()).unwrap();
                seen.push((
                    r.key.map(|k| k.to_vec()),
                    h.producer,
                    h.sequence,
                    h.send_time_us,
                ));
            })
            .unwrap();
            let expected: Vec<_> = (0..9)
                .map(|i| {
                    let key = keyed.then(|| keys[i].to_be_bytes().to_vec());
                    (key, 7, 77 + i as u64, clock.unix_us(intended[i]))
                })
                .collect();
            assert_eq!(seen, expected);
        }
    }

    /// Uncompressed batches come out of shared 1 MiB buffers, back to back; one that does not
    /// fit in what is left starts a new buffer, one bigger than a buffer gets its own; every
    /// batch stays intact while the writer moves on.
    #[test]
    fn uncompressed_batches_are_carved_out_of_shared_buffers() {
        use odradek::protocol::record_batch::validate;
        let clock = Clock::new();
        let pool = Rc::new(PayloadPool::new(1.0, 1024, 5));
        let mut writer = RecordWriter::new(1, pool, clock, 2);
        let ids = BatchIds {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
        };
        let mut write = |n: u64| {
            let intended: Vec<u64> = (0..n).map(|i| 1_000 + i).collect();
            let base_ts_ms = (clock.unix_us(intended[0]) / 1000) as i64;
            let bytes: usize = intended
                .iter()
                .enumerate()
                .map(|(i, &due)| {
                    let ts_ms = (clock.unix_us(due) / 1000) as i64;
                    record_len(ts_ms - base_ts_ms, i as i32, None, 1024)
                })
                .sum();
            let seq = 0;
            writer
                .write(1024, &intended, &[], seq, bytes, ids, Compression::None)
                .unwrap()
        };
        // ~6.3 KiB batches: 200 of them span one buffer and part of the next.
        let batches: Vec<Bytes> = (0..200).map(|_| write(6)).collect();
        let starts_new = |i: usize| {
            batches[i].as_ptr() != batches[i - 1].as_ptr().wrapping_add(batches[i - 1].len())
        };
        let new_buffers: Vec<usize> = (1..batches.len()).filter(|&i| starts_new(i)).collect();
        assert_eq!(new_buffers.len(), 1, "new buffers at {new_buffers:?}");
        let in_first: usize = batches[..new_buffers[0]].iter().map(|b| b.len()).sum();
        assert!(in_first <= ARENA_BYTES && in_first + batches[0].len() > ARENA_BYTES);
        // Bigger than a buffer: a buffer of its own, and the next batch starts another.
        let big = write(1100);
        assert!(big.len() > ARENA_BYTES);
        let after = write(6);
        assert_ne!(after.as_ptr(), big.as_ptr().wrapping_add(big.len()));
        for b in batches.iter().chain([&big, &after]) {
            validate(b).unwrap();
        }
    }

    #[test]
    fn a_one_record_exchange_is_the_record_plus_its_framing() {
        let (req, reply) = one_record_exchange_bytes(1024, true, "bench-1764870000");
        // A 61-byte batch header, the record's own framing, the request's fields: ~130 bytes
        // over the value; an answer of a few dozen bytes.
        assert!((1024 + 61 + 8..1024 + 200).contains(&req), "request {req}");
        assert!((30..120).contains(&reply), "reply {reply}");
        let (unkeyed, _) = one_record_exchange_bytes(1024, false, "bench-1764870000");
        assert_eq!(req - unkeyed, 8, "the key's bytes");
        let (small, _) = one_record_exchange_bytes(100, true, "bench-1764870000");
        assert_eq!(req - small, 924);
    }
}
