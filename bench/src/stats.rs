//! Measurement state of one bench core and the record accounting of a run.
//!
//! [`CoreProbe`] is owned by one core (shared by its tasks through `Rc<RefCell>`, borrowed only
//! between awaits): interval counters and latency histograms that a ticker task ships to the
//! main thread once a second as a [`Tick`], plus whole-run totals. [`Ranges`] is the accounting:
//! per partition, sorted half-open offset ranges; a run compares the ranges producers saw
//! acknowledged with the ranges consumers read ([`reconcile`]).
//!
//! Latency is kept in microseconds in HdrHistograms (3 significant digits, auto-resizing).

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The run's clock: one start instant shared by every core, and its UNIX time for payloads.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub start: Instant,
    pub unix_start_us: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let unix_start_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Clock {
            start: Instant::now(),
            unix_start_us,
        }
    }
    /// Microseconds since the run started.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
    pub fn unix_us(&self, run_us: u64) -> u64 {
        self.unix_start_us + run_us
    }
    pub fn unix_now_us(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits (constant, valid bounds); auto-resize keeps outliers.
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid");
    h.auto(true);
    h
}

/// Counters for one interval (one second) or for the whole run.
#[derive(Debug, Clone)]
pub struct Counters {
    pub produced_records: u64,
    pub produced_bytes: u64,
    pub consumed_records: u64,
    pub consumed_bytes: u64,
    pub errors: u64,
    pub produce_latency_us: Histogram<u64>,
    pub e2e_latency_us: Histogram<u64>,
    /// Transactions committed (transactional producers).
    pub txn_committed: u64,
    /// EndTxn(commit) sent to answered, retries included.
    pub commit_latency_us: Histogram<u64>,
    /// AddPartitionsToTxn sent to answered, retries included (the producer waits for it).
    pub add_partitions_latency_us: Histogram<u64>,
}

impl Counters {
    /// Anything acknowledged, consumed, committed or errored in these counts.
    pub fn made_progress(&self) -> bool {
        self.produced_records + self.consumed_records + self.errors + self.txn_committed > 0
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            produced_records: 0,
            produced_bytes: 0,
            consumed_records: 0,
            consumed_bytes: 0,
            errors: 0,
            produce_latency_us: new_histogram(),
            e2e_latency_us: new_histogram(),
            txn_committed: 0,
            commit_latency_us: new_histogram(),
            add_partitions_latency_us: new_histogram(),
        }
    }
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.produced_records += o.produced_records;
        self.produced_bytes += o.produced_bytes;
        self.consumed_records += o.consumed_records;
        self.consumed_bytes += o.consumed_bytes;
        self.errors += o.errors;
        let _ = self.produce_latency_us.add(&o.produce_latency_us);
        let _ = self.e2e_latency_us.add(&o.e2e_latency_us);
        self.txn_committed += o.txn_committed;
        let _ = self.commit_latency_us.add(&o.commit_latency_us);
        let _ = self
            .add_partitions_latency_us
            .add(&o.add_partitions_latency_us);
    }
}

/// What a core ships to the main thread each second.
#[derive(Debug)]
pub enum Tick {
    /// Counters of second `index` of the run clock (the last one may be partial).
    Interval { index: u64, counters: Box<Counters> },
    /// The core finished; nothing follows.
    Done,
}

/// Per-core measurement state, shared by the core's tasks.
#[derive(Debug, Default)]
pub struct CoreProbe {
    /// End of the warm-up: records acknowledged before it are not counted, and records meant
    /// to be sent before it give no latency sample.
    pub warmup_end_us: u64,
    /// End of the measured window, if the run is bounded by time: when load generation stops.
    /// Throughput counts only what happens before it. The drain afterwards (the last answers to
    /// an overloaded run's backlog, a few stragglers seconds later) is another regime, and it
    /// diluted W5's figure by up to a quarter. The CPU figures end there too.
    pub measured_end_us: Option<u64>,
    pub interval: Counters,
    /// Post-warm-up record and byte totals (latency totals are the sum of the intervals,
    /// which only hold post-warm-up samples).
    pub measured: Counters,
    pub first_measured_us: Option<u64>,
    pub last_measured_us: u64,
    /// Record and byte totals after the window's end (the drain), and the last of them: the
    /// figures of a run too short for any answer to arrive inside its window.
    pub drained: Counters,
    pub last_drained_us: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Offsets the broker acknowledged to this core's producers.
    pub acked_offsets: AckedOffsets,
}

impl CoreProbe {
    pub fn error(&mut self, kind: String, records: u64) {
        *self.errors_by_kind.entry(kind).or_default() += records.max(1);
        self.interval.errors += records.max(1);
    }

    /// `now_us` is inside the measured window.
    fn in_window(&self, now_us: u64) -> bool {
        now_us >= self.warmup_end_us && self.measured_end_us.is_none_or(|end| now_us < end)
    }

    /// Where totals at `now_us` go: the window's, the drain's, or none (the warm-up); notes
    /// `now_us` as the window's first or last activity, or the drain's last.
    fn totals_at(&mut self, now_us: u64) -> Option<&mut Counters> {
        if self.in_window(now_us) {
            self.first_measured_us.get_or_insert(now_us);
            self.last_measured_us = self.last_measured_us.max(now_us);
            Some(&mut self.measured)
        } else if now_us >= self.warmup_end_us {
            self.last_drained_us = self.last_drained_us.max(now_us);
            Some(&mut self.drained)
        } else {
            None
        }
    }

    /// An acknowledged batch: `intended_us` are the records' intended send times.
    ///
    /// Throughput counts every record acknowledged in the measured window, like `consumed`: it
    /// is what the broker did then. Latency samples only records meant to be sent
    /// after the warm-up. (Counting throughput by intended time too, as before, dropped the
    /// warm-up's backlog that an overloaded open-loop run works off inside the window: a W5 run
    /// reported 211k rec/s while its intervals acknowledged ~430k/s.)
    pub fn acked(&mut self, now_us: u64, bytes: u64, intended_us: &[u64]) {
        self.interval.produced_records += intended_us.len() as u64;
        self.interval.produced_bytes += bytes;
        for &t in intended_us {
            if t >= self.warmup_end_us {
                let lat = now_us.saturating_sub(t).max(1);
                // Only the interval histogram: the main thread sums intervals into the total.
                let _ = self.interval.produce_latency_us.record(lat);
            }
        }
        if let Some(t) = self.totals_at(now_us) {
            t.produced_records += intended_us.len() as u64;
            t.produced_bytes += bytes;
        }
    }

    /// A transaction committed at `now_us`; its EndTxn took `latency_us`.
    pub fn committed(&mut self, now_us: u64, latency_us: u64) {
        self.interval.txn_committed += 1;
        if let Some(t) = self.totals_at(now_us) {
            t.txn_committed += 1;
        }
        if now_us >= self.warmup_end_us {
            // Only the interval histogram, like produce latency.
            let _ = self.interval.commit_latency_us.record(latency_us.max(1));
        }
    }

    /// An AddPartitionsToTxn answered at `now_us` after `latency_us`.
    pub fn added_partitions(&mut self, now_us: u64, latency_us: u64) {
        if now_us >= self.warmup_end_us {
            let _ = self
                .interval
                .add_partitions_latency_us
                .record(latency_us.max(1));
        }
    }

    pub fn consumed(&mut self, now_us: u64, records: u64, bytes: u64) {
        self.interval.consumed_records += records;
        self.interval.consumed_bytes += bytes;
        if let Some(t) = self.totals_at(now_us) {
            t.consumed_records += records;
            t.consumed_bytes += bytes;
        }
    }

    pub fn e2e(&mut self, send_run_us: u64, latency_us: u64) {
        if send_run_us >= self.warmup_end_us {
            let _ = self.interval.e2e_latency_us.record(latency_us.max(1));
        }
    }
}

/// Acknowledged offsets as the answers arrive, for one core's producers together: per
/// partition (indexed by partition number), half-open ranges in arrival order, a range that
/// continues the last one merged into it. Shared by the core's producers because their batches
/// interleave in each partition: kept per producer, in W5's shape (1,000 producers over 1,000
/// partitions) nearly every batch was a range of its own, a map lookup and a vector push that
/// took ~5% of the load generator's core; shared, a batch usually continues another
/// producer's range.
#[derive(Debug, Default)]
pub struct AckedOffsets(Vec<Vec<(i64, i64)>>);

impl AckedOffsets {
    /// Adds `[start, end)` of `partition`.
    pub fn push(&mut self, partition: i32, start: i64, end: i64) {
        let Ok(i) = usize::try_from(partition) else {
            return;
        };
        if end <= start {
            return;
        }
        if self.0.len() <= i {
            self.0.resize_with(i + 1, Vec::new);
        }
        let v = &mut self.0[i];
        if let Some(last) = v.last_mut() {
            if last.1 == start {
                last.1 = end;
                return;
            }
        }
        v.push((start, end));
    }

    /// Everything added so far, as [`Ranges`] (not normalized); leaves this empty.
    pub fn take_ranges(&mut self) -> Ranges {
        let mut out = Ranges::default();
        for (p, v) in std::mem::take(&mut self.0).into_iter().enumerate() {
            if !v.is_empty() {
                out.0.insert(p as i32, v);
            }
        }
        out
    }
}

/// Per partition, sorted disjoint half-open offset ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranges(pub BTreeMap<i32, Vec<(i64, i64)>>);

impl Ranges {
    /// Adds `[start, end)`; merges with the last range when contiguous (the common case).
    pub fn push(&mut self, partition: i32, start: i64, end: i64) {
        if end <= start {
            return;
        }
        let v = self.0.entry(partition).or_default();
        if let Some(last) = v.last_mut() {
            if last.1 == start {
                last.1 = end;
                return;
            }
        }
        v.push((start, end));
    }

    /// Adds every range of `other` (call [`Ranges::normalize`] before counting).
    pub fn merge(&mut self, other: Ranges) {
        for (p, v) in other.0 {
            self.0.entry(p).or_default().extend(v);
        }
    }

    /// Sorts and merges overlapping/adjacent ranges; returns how many offsets overlapped
    /// (counted twice), i.e. duplicates.
    pub fn normalize(&mut self) -> u64 {
        let mut dup = 0;
        for v in self.0.values_mut() {
            v.sort_unstable();
            let mut out: Vec<(i64, i64)> = Vec::with_capacity(v.len());
            for &(s, e) in v.iter() {
                match out.last_mut() {
                    Some(last) if s <= last.1 => {
                        dup += (last.1.min(e) - s).max(0) as u64;
                        last.1 = last.1.max(e);
                    }
                    _ => out.push((s, e)),
                }
            }
            *v = out;
        }
        dup
    }

    /// Offsets covered; the ranges must be normalized (disjoint).
    pub fn count(&self) -> u64 {
        self.0
            .values()
            .flat_map(|v| v.iter())
            .map(|(s, e)| (e - s) as u64)
            .sum()
    }
}

/// The outcome of comparing acknowledged and consumed offsets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reconciliation {
    pub acknowledged: u64,
    pub consumed: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Consumed offsets no producer of this run saw acknowledged (errored sends that landed,
    /// or records of other writers).
    pub unacknowledged_consumed: u64,
    /// Up to 10 lost ranges, (partition, start, end).
    pub lost_examples: Vec<(i32, i64, i64)>,
}

impl Reconciliation {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0
    }
    pub fn line(&self) -> String {
        let mut s = format!(
            "acknowledged {}, consumed {}, lost {}, duplicated {}",
            self.acknowledged, self.consumed, self.lost, self.duplicated
        );
        if !self.lost_examples.is_empty() {
            s.push_str(" (lost:");
            for (p, a, b) in &self.lost_examples {
                s.push_str(&format!(" p{p}[{a}..{b})"));
            }
            s.push(')');
        }
        s
    }
}

/// Compares acknowledged ranges with consumed ones. `consumer_duplicates` are duplicates the
/// consumers detected themselves (the same producer sequence read twice).
pub fn reconcile(acked: &Ranges, consumed: &Ranges, consumer_duplicates: u64) -> Reconciliation {
    let mut a = acked.clone();
    a.normalize();
    let mut c = consumed.clone();
    let dup_offsets = c.normalize();
    let mut r = Reconciliation {
        acknowledged: a.count(),
        consumed: c.count(),
        duplicated: dup_offsets + consumer_duplicates,
        ..Default::default()
    };
    let mut covered = 0u64;
    for (p, av) in &a.0 {
        let cv = c.0.get(p).map(|v| v.as_slice()).unwrap_or(&[]);
        for &(s, e) in av {
            // Walk the consumed ranges overlapping [s, e).
            let mut cur = s;
            let i = cv.partition_point(|&(_, ce)| ce <= s);
            for &(cs, ce) in &cv[i..] {
                if cs >= e {
                    break;
                }
                if cs > cur {
                    r.lost += (cs - cur) as u64;
                    if r.lost_examples.len() < 10 {
                        r.lost_examples.push((*p, cur, cs));
                    }
                }
                covered += (ce.min(e) - cs.max(s)) as u64;
                cur = cur.max(ce.min(e));
            }
            if cur < e {
                r.lost += (e - cur) as u64;
                if r.lost_examples.len() < 10 {
                    r.lost_examples.push((*p, cur, e));
                }
            }
        }
    }
    r.unacknowledged_consumed = r.consumed.saturating_sub(covered);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backlog from the warm-up that is acknowledged inside the measured window counts as
    /// throughput (the broker did that work then), but gives no latency samples.
    #[test]
    fn throughput_counts_acknowledgements_in_the_window_latency_only_post_warmup_records() {
        let mut p = CoreProbe {
            warmup_end_us: 1_000,
            ..CoreProbe::default()
        };
        p.acked(500, 300, &[100, 200, 300]); // acknowledged during the warm-up
        p.acked(2_000, 400, &[400, 900, 1_500, 1_900]); // half from the warm-up's backlog
        p.acked(3_000, 100, &[2_500]);
        assert_eq!(p.measured.produced_records, 5);
        assert_eq!(p.measured.produced_bytes, 500);
        assert_eq!(p.interval.produced_records, 8);
        assert_eq!(p.interval.produce_latency_us.len(), 3);
        assert_eq!(p.interval.produce_latency_us.max(), 500);
        assert_eq!(
            (p.first_measured_us, p.last_measured_us),
            (Some(2_000), 3_000)
        );
    }

    /// A run bounded by time measures until load generation stops: what is acknowledged while
    /// the backlog drains afterwards is counted in the intervals, and gives latency samples,
    /// but is not throughput of the window.
    #[test]
    fn throughput_ends_when_load_generation_stops() {
        let mut p = CoreProbe {
            warmup_end_us: 1_000,
            measured_end_us: Some(5_000),
            ..CoreProbe::default()
        };
        p.acked(2_000, 100, &[1_500]);
        p.acked(4_999, 100, &[4_000]);
        p.acked(5_000, 200, &[4_500, 4_600]); // the drain
        p.acked(9_000, 100, &[4_900]); // a straggler
        p.consumed(4_000, 3, 30);
        p.consumed(6_000, 7, 70);
        assert_eq!(p.measured.produced_records, 2);
        assert_eq!(p.measured.produced_bytes, 200);
        assert_eq!(p.measured.consumed_records, 3);
        assert_eq!(p.drained.produced_records, 3);
        assert_eq!(p.drained.produced_bytes, 300);
        assert_eq!(p.drained.consumed_records, 7);
        assert_eq!(p.last_drained_us, 9_000);
        assert_eq!(p.interval.produced_records, 5);
        assert_eq!(p.interval.produce_latency_us.len(), 5);
        assert_eq!(
            (p.first_measured_us, p.last_measured_us),
            (Some(2_000), 4_999)
        );
    }

    #[test]
    fn acked_offsets_merge_continuing_ranges_and_keep_the_rest_for_normalize() {
        let mut a = AckedOffsets::default();
        a.push(3, 0, 2); // producer A
        a.push(3, 2, 5); // producer B's batch continues it
        a.push(3, 7, 9); // answered before the batch at 5..7
        a.push(3, 5, 7);
        a.push(0, 10, 11);
        a.push(0, 11, 11); // empty
        a.push(-1, 0, 1); // no such partition: ignored
        let mut r = a.take_ranges();
        assert_eq!(r.0.len(), 2);
        assert_eq!(r.0[&3], vec![(0, 5), (7, 9), (5, 7)]);
        assert_eq!(r.normalize(), 0);
        assert_eq!(r.0[&3], vec![(0, 9)]);
        assert_eq!(r.count(), 10);
        assert!(a.take_ranges().0.is_empty(), "taking leaves it empty");
    }

    #[test]
    fn reconcile_finds_lost_and_duplicates() {
        let mut acked = Ranges::default();
        acked.push(0, 0, 10);
        acked.push(0, 10, 20);
        acked.push(1, 0, 5);
        let mut consumed = Ranges::default();
        consumed.push(0, 0, 7);
        consumed.push(0, 8, 20);
        consumed.push(1, 0, 5);
        consumed.push(1, 4, 6); // offset 4 twice, 5 not acknowledged
        let r = reconcile(&acked, &consumed, 0);
        assert_eq!(r.acknowledged, 25);
        assert_eq!(r.lost, 1);
        assert_eq!(r.lost_examples, vec![(0, 7, 8)]);
        assert_eq!(r.duplicated, 1);
        assert_eq!(r.unacknowledged_consumed, 1);
        assert!(!r.ok());

        let r = reconcile(&acked, &acked, 0);
        assert!(r.ok());
        assert_eq!(
            r.line(),
            "acknowledged 25, consumed 25, lost 0, duplicated 0"
        );
    }
}
