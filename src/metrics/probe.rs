//! The counters one shard keeps for the metrics endpoint: plain `Cell`s and `RefCell`s, touched
//! only by that shard's thread (no atomics, no locks), read at scrape time by a snapshot job
//! that runs on the same thread (see [`super::snapshot`]).
//!
//! What is counted where:
//! - request latency per API: by the connection that read the request, from the moment its
//!   frame is handed to dispatch until its completion resolves (in the connection's writer, so
//!   it includes waiting behind earlier requests of the same connection, as the client sees it);
//! - produce bytes/records: on the shard owning the partition, per appended batch that was not a
//!   duplicate (records from the batch header: nothing is decompressed);
//! - fetch bytes/records: on the shard answering the Fetch, for the record data it put in the
//!   response (the partition may live on another shard);
//! - fdatasync latency: by the group commit, one sample per partition per round.
//!
//! Per-partition counters are kept per topic (so a lookup needs no allocation) and forgotten
//! when the topic leaves the metadata image; partitions counted on several shards are summed at
//! scrape, so a counter stays continuous whichever shard counted it.
//!
//! With `metrics.collect=false` every request-path method returns at its first branch; the
//! connection and mailbox counts (one add per connection or cross-shard job) stay on.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;

use crate::metadata::TopicId;

/// Upper bounds of every latency histogram's buckets: as rendered (`le`, seconds) and in µs.
pub const LATENCY_BUCKETS: &[(&str, u64)] = &[
    ("0.00005", 50),
    ("0.0001", 100),
    ("0.00025", 250),
    ("0.0005", 500),
    ("0.001", 1_000),
    ("0.0025", 2_500),
    ("0.005", 5_000),
    ("0.01", 10_000),
    ("0.025", 25_000),
    ("0.05", 50_000),
    ("0.1", 100_000),
    ("0.25", 250_000),
    ("0.5", 500_000),
    ("1", 1_000_000),
    ("2.5", 2_500_000),
    ("5", 5_000_000),
    ("10", 10_000_000),
    ("30", 30_000_000),
];

/// Largest latency a histogram tells apart (longer ones are recorded as this): one hour.
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Highest Kafka API key number (histograms are indexed by it).
const API_KEY_MAX: usize = 127;

/// A latency distribution in µs: an HdrHistogram (2 significant digits, enough for the fixed
/// buckets rendered) plus the exact sum, which the histogram does not keep.
pub struct LatencyHistogram {
    hist: Histogram<u64>,
    sum_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            hist: Histogram::new_with_bounds(1, LATENCY_MAX_US, 2)
                .expect("constant histogram bounds are valid"),
            sum_us: 0,
        }
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.clamp(1, LATENCY_MAX_US));
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Cumulative counts per [`LATENCY_BUCKETS`] bound, the total and the sum. A value counts
    /// under a bound when the lowest value of its HdrHistogram bucket is at or below it (within
    /// the histogram's 1% resolution).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut per_bucket = vec![0u64; LATENCY_BUCKETS.len()];
        let mut above = 0u64;
        for v in self.hist.iter_recorded() {
            let low = self.hist.lowest_equivalent(v.value_iterated_to());
            match LATENCY_BUCKETS.iter().position(|(_, le)| low <= *le) {
                Some(i) => per_bucket[i] += v.count_at_value(),
                None => above += v.count_at_value(),
            }
        }
        let mut cumulative = Vec::with_capacity(per_bucket.len());
        let mut running = 0u64;
        for n in per_bucket {
            running += n;
            cumulative.push(running);
        }
        HistogramSnapshot {
            cumulative,
            count: running + above,
            sum_us: self.sum_us,
        }
    }
}

/// A histogram as rendered: cumulative counts per [`LATENCY_BUCKETS`] bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_us: u64,
}

/// Counters of one partition on one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionCounters {
    pub produce_bytes: u64,
    pub produce_records: u64,
    pub fetch_bytes: u64,
    pub fetch_records: u64,
}

#[derive(Default)]
struct TopicCounters {
    id: TopicId,
    partitions: Vec<PartitionCounters>,
}

/// File I/O glommio's reactor counted on this shard (DMA and buffered, every ring).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoTotals {
    pub reads: u64,
    pub read_bytes: u64,
    pub writes: u64,
    pub written_bytes: u64,
}

pub struct ShardProbe {
    collect: bool,
    /// Request latency per API key, created at the first request of that API.
    requests: RefCell<Vec<Option<Box<LatencyHistogram>>>>,
    connections_accepted: Cell<u64>,
    connections_open: Cell<u64>,
    bytes_received: Cell<u64>,
    bytes_sent: Cell<u64>,
    produce_bytes: Cell<u64>,
    produce_records: Cell<u64>,
    fetch_bytes: Cell<u64>,
    fetch_records: Cell<u64>,
    partitions: RefCell<FxHashMap<String, TopicCounters>>,
    fsync: RefCell<LatencyHistogram>,
    fsyncs_in_flight: Cell<u64>,
    commit_rounds: Cell<u64>,
    /// Segment writes of group-commit rounds that were durable themselves (O_DSYNC), with no
    /// fdatasync of their own.
    durable_writes: Cell<u64>,
    /// Each group-commit round, from taking the dirty set to completing.
    commit_round: RefCell<LatencyHistogram>,
    /// Each produce that waits for durability, from its append to the end of the round that
    /// covers it (per request and owning shard).
    durable_wait: RefCell<LatencyHistogram>,
    journal: Cell<JournalTotals>,
    /// glommio's I/O counters reset when read; their running totals.
    io: Cell<IoTotals>,
}

/// Running totals of the shard journal (see `shard::journal`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalTotals {
    /// Entries made durable (one fdatasync each).
    pub entries: u64,
    /// Partition flushes those entries covered.
    pub partitions: u64,
    pub checkpoints: u64,
    /// Segment files the checkpoints fdatasynced.
    pub checkpoint_files: u64,
    pub checkpoint_us: u64,
}

impl ShardProbe {
    /// `collect`: `metrics.collect` (request-path counting on or off).
    pub fn new(collect: bool) -> ShardProbe {
        ShardProbe {
            collect,
            requests: RefCell::new((0..=API_KEY_MAX).map(|_| None).collect()),
            connections_accepted: Cell::new(0),
            connections_open: Cell::new(0),
            bytes_received: Cell::new(0),
            bytes_sent: Cell::new(0),
            produce_bytes: Cell::new(0),
            produce_records: Cell::new(0),
            fetch_bytes: Cell::new(0),
            fetch_records: Cell::new(0),
            partitions: RefCell::new(FxHashMap::default()),
            fsync: RefCell::new(LatencyHistogram::default()),
            fsyncs_in_flight: Cell::new(0),
            commit_rounds: Cell::new(0),
            durable_writes: Cell::new(0),
            commit_round: RefCell::new(LatencyHistogram::default()),
            durable_wait: RefCell::new(LatencyHistogram::default()),
            journal: Cell::new(JournalTotals::default()),
            io: Cell::new(IoTotals::default()),
        }
    }

    pub fn collects(&self) -> bool {
        self.collect
    }

    /// The start of a clock for one of the `*_done` calls that time something (a request, a
    /// commit round, a durable wait); `None` when not collecting.
    pub fn clock(&self) -> Option<Instant> {
        self.collect.then(Instant::now)
    }

    /// A request of API `api_key` completed (its response is ready, or it needed none).
    pub fn request_done(&self, api_key: i16, started: Option<Instant>) {
        let Some(started) = started else {
            return;
        };
        let Ok(i) = usize::try_from(api_key) else {
            return;
        };
        if let Some(slot) = self.requests.borrow_mut().get_mut(i) {
            slot.get_or_insert_with(Default::default)
                .record(started.elapsed());
        }
    }

    pub fn connection_accepted(&self) {
        self.connections_accepted
            .set(self.connections_accepted.get() + 1);
    }

    pub fn connection_opened(&self) {
        self.connections_open.set(self.connections_open.get() + 1);
    }

    pub fn connection_closed(&self) {
        self.connections_open
            .set(self.connections_open.get().saturating_sub(1));
    }

    /// Kafka request bytes read (frames with their size prefix).
    pub fn received(&self, bytes: usize) {
        if self.collect {
            add(&self.bytes_received, bytes as u64);
        }
    }

    /// Kafka response bytes written (frames with their size prefix).
    pub fn sent(&self, bytes: usize) {
        if self.collect {
            add(&self.bytes_sent, bytes as u64);
        }
    }

    /// A batch appended to a partition this shard owns (not a duplicate).
    pub fn produced(&self, topic: &str, id: TopicId, partition: i32, bytes: u64, records: u64) {
        if !self.collect {
            return;
        }
        add(&self.produce_bytes, bytes);
        add(&self.produce_records, records);
        self.with_partition(topic, id, partition, |c| {
            c.produce_bytes += bytes;
            c.produce_records += records;
        });
    }

    /// Record data this shard put in a Fetch response.
    pub fn fetched(&self, topic: &str, id: TopicId, partition: i32, bytes: u64, records: u64) {
        if !self.collect {
            return;
        }
        add(&self.fetch_bytes, bytes);
        add(&self.fetch_records, records);
        self.with_partition(topic, id, partition, |c| {
            c.fetch_bytes += bytes;
            c.fetch_records += records;
        });
    }

    fn with_partition(
        &self,
        topic: &str,
        id: TopicId,
        partition: i32,
        f: impl FnOnce(&mut PartitionCounters),
    ) {
        let Ok(i) = usize::try_from(partition) else {
            return;
        };
        let mut topics = self.partitions.borrow_mut();
        let t = match topics.get_mut(topic) {
            Some(t) if t.id == id => t,
            // New, or re-created under the same name: start from zero.
            _ => {
                topics.insert(
                    topic.to_string(),
                    TopicCounters {
                        id,
                        partitions: Vec::new(),
                    },
                );
                match topics.get_mut(topic) {
                    Some(t) => t,
                    None => return,
                }
            }
        };
        if t.partitions.len() <= i {
            t.partitions.resize(i + 1, PartitionCounters::default());
        }
        f(&mut t.partitions[i]);
    }

    /// Forgets the counters of topics for which `keep(name, id)` is false (deleted topics).
    pub fn retain_topics(&self, mut keep: impl FnMut(&str, &TopicId) -> bool) {
        self.partitions
            .borrow_mut()
            .retain(|name, t| keep(name, &t.id));
    }

    /// An fdatasync of the group commit is about to start; the returned clock goes to
    /// [`ShardProbe::fsync_done`].
    pub fn fsync_started(&self) -> Option<Instant> {
        self.fsyncs_in_flight.set(self.fsyncs_in_flight.get() + 1);
        self.clock()
    }

    pub fn fsync_done(&self, started: Option<Instant>) {
        self.fsyncs_in_flight
            .set(self.fsyncs_in_flight.get().saturating_sub(1));
        record_since(&self.fsync, started);
    }

    /// A round's segment write was a durable one: it needed no fdatasync.
    pub fn durable_write_done(&self) {
        add(&self.durable_writes, 1);
    }

    /// A group-commit round completed (every append it covers is durable); `started` is the
    /// [`ShardProbe::clock`] taken when it took its dirty set.
    pub fn commit_round_done(&self, started: Option<Instant>) {
        add(&self.commit_rounds, 1);
        record_since(&self.commit_round, started);
    }

    /// The round covering a produce completed; `started` is the [`ShardProbe::clock`] taken
    /// at its append.
    pub fn durable_wait_done(&self, started: Option<Instant>) {
        record_since(&self.durable_wait, started);
    }

    /// A journal entry covering `partitions` partitions became durable.
    pub fn journal_entry_done(&self, partitions: usize) {
        let mut j = self.journal.get();
        j.entries += 1;
        j.partitions += partitions as u64;
        self.journal.set(j);
    }

    /// A journal checkpoint fdatasynced `files` segment files in `took`.
    pub fn journal_checkpoint_done(&self, files: usize, took: std::time::Duration) {
        let mut j = self.journal.get();
        j.checkpoints += 1;
        j.checkpoint_files += files as u64;
        j.checkpoint_us += took.as_micros() as u64;
        self.journal.set(j);
    }

    pub fn journal_totals(&self) -> JournalTotals {
        self.journal.get()
    }

    /// Adds what glommio's reactor counted since the last call (its counters reset when read).
    pub fn absorb_io(&self, stats: &glommio::IoStats) {
        let all = stats.all_rings();
        let mut io = self.io.get();
        for (ops, bytes) in [all.file_reads(), all.file_buffered_reads()] {
            io.reads += ops;
            io.read_bytes += bytes;
        }
        for (ops, bytes) in [all.file_writes(), all.file_buffered_writes()] {
            io.writes += ops;
            io.written_bytes += bytes;
        }
        self.io.set(io);
    }

    // Readers for the snapshot.

    pub fn connections(&self) -> (u64, u64) {
        (self.connections_open.get(), self.connections_accepted.get())
    }

    pub fn network_bytes(&self) -> (u64, u64) {
        (self.bytes_received.get(), self.bytes_sent.get())
    }

    /// Produce (bytes, records) and fetch (bytes, records) of this shard.
    pub fn data_totals(&self) -> [u64; 4] {
        [
            self.produce_bytes.get(),
            self.produce_records.get(),
            self.fetch_bytes.get(),
            self.fetch_records.get(),
        ]
    }

    /// Request latency per API key that has seen a request.
    pub fn request_histograms(&self) -> Vec<(i16, HistogramSnapshot)> {
        self.requests
            .borrow()
            .iter()
            .enumerate()
            .filter_map(|(key, h)| Some((key as i16, h.as_ref()?.snapshot())))
            .collect()
    }

    pub fn fsync_histogram(&self) -> HistogramSnapshot {
        self.fsync.borrow().snapshot()
    }

    pub fn commit_round_histogram(&self) -> HistogramSnapshot {
        self.commit_round.borrow().snapshot()
    }

    pub fn durable_wait_histogram(&self) -> HistogramSnapshot {
        self.durable_wait.borrow().snapshot()
    }

    pub fn fsyncs_in_flight(&self) -> u64 {
        self.fsyncs_in_flight.get()
    }

    pub fn commit_rounds(&self) -> u64 {
        self.commit_rounds.get()
    }

    pub fn durable_writes(&self) -> u64 {
        self.durable_writes.get()
    }

    pub fn io_totals(&self) -> IoTotals {
        self.io.get()
    }

    /// Every partition counted here: (topic, partition, counters).
    pub fn partition_counters(&self) -> Vec<(String, i32, PartitionCounters)> {
        let topics = self.partitions.borrow();
        let mut out = Vec::new();
        for (name, t) in topics.iter() {
            for (i, c) in t.partitions.iter().enumerate() {
                if *c != PartitionCounters::default() {
                    out.push((name.clone(), i as i32, *c));
                }
            }
        }
        out
    }
}

/// Records the time since `started` in `histogram`, if a clock was started.
fn record_since(histogram: &RefCell<LatencyHistogram>, started: Option<Instant>) {
    if let Some(started) = started {
        histogram.borrow_mut().record(started.elapsed());
    }
}

fn add(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get().wrapping_add(n));
}

/// Records in the v2 batches of `chunks`, consecutive buffers where a batch may span several
/// (the batch cache keeps a batch's rewritten header apart from the rest of it). Read from each
/// batch header, nothing decompressed; stops at anything that is not a whole v2 batch.
pub fn records_in<B: AsRef<[u8]>>(chunks: &[B]) -> u64 {
    use crate::protocol::record_batch::{
        BATCH_HEADER_LEN, BATCH_LENGTH_AT, LOG_OVERHEAD, MAGIC_AT, MAGIC_V2, RECORDS_COUNT_AT,
    };
    let total: usize = chunks.iter().map(|c| c.as_ref().len()).sum();
    let mut header = [0u8; BATCH_HEADER_LEN];
    let mut reader = ChunkCursor::new(chunks);
    let mut pos = 0usize;
    let mut records = 0u64;
    while pos + BATCH_HEADER_LEN <= total {
        reader.copy_at(pos, &mut header);
        let be_i32 = |at: usize| {
            i32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        if header[MAGIC_AT] as i8 != MAGIC_V2 {
            break;
        }
        let Ok(len) = usize::try_from(be_i32(BATCH_LENGTH_AT)) else {
            break;
        };
        let end = pos + LOG_OVERHEAD + len;
        if end > total || len < BATCH_HEADER_LEN - LOG_OVERHEAD {
            break;
        }
        records += u64::try_from(be_i32(RECORDS_COUNT_AT)).unwrap_or(0);
        pos = end;
    }
    records
}

/// Reads byte ranges of consecutive buffers, front to back.
struct ChunkCursor<'a, B> {
    chunks: &'a [B],
    /// The buffer holding the last position read, and where it starts.
    at: usize,
    start: usize,
}

impl<'a, B: AsRef<[u8]>> ChunkCursor<'a, B> {
    fn new(chunks: &'a [B]) -> Self {
        ChunkCursor {
            chunks,
            at: 0,
            start: 0,
        }
    }

    /// Fills `out` from position `pos` on; `pos` never goes back between calls, and the caller
    /// checked that the range lies within the buffers.
    fn copy_at(&mut self, mut pos: usize, out: &mut [u8]) {
        let mut filled = 0;
        while filled < out.len() && self.at < self.chunks.len() {
            let chunk = self.chunks[self.at].as_ref();
            if pos >= self.start + chunk.len() {
                self.start += chunk.len();
                self.at += 1;
                continue;
            }
            let from = &chunk[pos - self.start..];
            let n = from.len().min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&from[..n]);
            filled += n;
            pos += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_sum_is_exact() {
        let mut h = LatencyHistogram::default();
        h.record(Duration::from_micros(80)); // <= 100 µs
        h.record(Duration::from_micros(100)); // <= 100 µs (on the bound)
        h.record(Duration::from_micros(2_000)); // <= 2.5 ms
        h.record(Duration::from_secs(60)); // above the last bound: only in the count
        let s = h.snapshot();
        let at = |le: &str| s.cumulative[LATENCY_BUCKETS.iter().position(|b| b.0 == le).unwrap()];
        assert_eq!(at("0.00005"), 0);
        assert_eq!(at("0.0001"), 2);
        assert_eq!(at("0.001"), 2);
        assert_eq!(at("0.0025"), 3);
        assert_eq!(at("30"), 3);
        assert_eq!(s.count, 4);
        assert_eq!(s.sum_us, 80 + 100 + 2_000 + 60_000_000);
        assert!(s.cumulative.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn request_and_partition_counters() {
        let p = ShardProbe::new(true);
        let t = p.clock();
        p.request_done(0, t);
        p.request_done(3, p.clock());
        p.request_done(3, p.clock());
        let h = p.request_histograms();
        assert_eq!(
            h.iter().map(|(k, s)| (*k, s.count)).collect::<Vec<_>>(),
            [(0, 1), (3, 2)]
        );
        let id = [7u8; 16];
        p.produced("t", id, 2, 100, 3);
        p.produced("t", id, 2, 50, 1);
        p.fetched("t", id, 0, 10, 1);
        assert_eq!(p.data_totals(), [150, 4, 10, 1]);
        let mut c = p.partition_counters();
        c.sort_by_key(|x| x.1);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].2.produce_records, 4);
        // Re-created under the same name: counters start again.
        p.produced("t", [8u8; 16], 2, 1, 1);
        assert_eq!(p.partition_counters()[0].2.produce_bytes, 1);
        p.retain_topics(|_, id| *id != [8u8; 16]);
        assert!(p.partition_counters().is_empty());
        // Shard totals stay (counters never go down).
        assert_eq!(p.data_totals()[0], 151);
    }

    #[test]
    fn not_collecting_counts_nothing_on_the_request_path() {
        let p = ShardProbe::new(false);
        assert!(p.clock().is_none());
        p.request_done(0, None);
        p.produced("t", [0; 16], 0, 1, 1);
        p.fetched("t", [0; 16], 0, 1, 1);
        p.received(10);
        p.sent(10);
        let f = p.fsync_started();
        assert_eq!(p.fsyncs_in_flight(), 1);
        p.fsync_done(f);
        assert_eq!(p.fsyncs_in_flight(), 0);
        let r = p.clock();
        p.commit_round_done(r);
        assert_eq!(p.commit_rounds(), 1, "rounds are counted either way");
        let w = p.clock();
        p.durable_wait_done(w);
        assert_eq!(p.commit_round_histogram().count, 0);
        assert_eq!(p.durable_wait_histogram().count, 0);
        assert!(p.request_histograms().is_empty());
        assert_eq!(p.data_totals(), [0; 4]);
        assert_eq!(p.network_bytes(), (0, 0));
        assert_eq!(p.fsync_histogram().count, 0);
    }

    /// What collection costs per produce request of 8 batches (W1's shape: 1 MiB requests of
    /// 128 KiB batches) on this machine, with collection on and off. A measurement, not a check:
    /// `cargo test --release --lib probe_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn probe_cost_per_request() {
        let id = [1u8; 16];
        for collect in [true, false] {
            let p = ShardProbe::new(collect);
            let n = 2_000_000u64;
            let started = Instant::now();
            for i in 0..n {
                p.received(1 << 20);
                let clock = p.clock();
                for b in 0..8 {
                    let partition = ((i * 8 + b) % 16) as i32;
                    p.produced("bench-1796296953076", id, partition, 131_072, 128);
                }
                p.request_done(0, clock);
                p.sent(120);
            }
            let ns = started.elapsed().as_nanos() as f64 / n as f64;
            println!("collect={collect}: {ns:.1} ns per request of 8 batches");
            std::hint::black_box(p.data_totals());
        }
    }

    #[test]
    fn records_are_read_from_batch_headers() {
        use crate::protocol::record_batch::{BATCH_HEADER_LEN, RECORDS_COUNT_AT};
        let batch = |records: i32, body: usize| {
            let mut b = vec![0u8; BATCH_HEADER_LEN + body];
            let len = (b.len() - 12) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
            b[16] = 2;
            b[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&records.to_be_bytes());
            b
        };
        let mut data = batch(3, 10);
        data.extend(batch(5, 0));
        assert_eq!(records_in(&[&data]), 8);
        // A torn last batch is not counted.
        let mut torn = data.clone();
        torn.extend(&batch(7, 20)[..40]);
        assert_eq!(records_in(&[&torn]), 8);
        assert_eq!(records_in::<&[u8]>(&[]), 0);
        let mut bad_magic = batch(1, 0);
        bad_magic[16] = 1;
        assert_eq!(records_in(&[&bad_magic]), 0);
        // Split anywhere, headers included (the cache keeps a rewritten header apart), the
        // count is the same; and a torn tail still is not counted.
        for cut in [
            1,
            12,
            BATCH_HEADER_LEN,
            BATCH_HEADER_LEN + 3,
            data.len() - 1,
        ] {
            let (a, b) = data.split_at(cut);
            assert_eq!(records_in(&[a, b]), 8, "cut at {cut}");
            let three = [&data[..1], &data[1..cut.max(2)], &data[cut.max(2)..]];
            assert_eq!(records_in(&three), 8, "cut at 1 and {cut}");
        }
        let (a, b) = torn.split_at(BATCH_HEADER_LEN + 5);
        assert_eq!(records_in(&[a, b, &[][..]]), 8);
    }
}
