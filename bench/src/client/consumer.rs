//! A consumer task: fetches a set of partitions led by one broker (assign-style, no group), one
//! Fetch in flight on its own connection, and checks every record it reads: offsets it consumed
//! (for the run's accounting), per (producer, partition) sequence contiguity from the payload
//! header, and end-to-end latency from the payload's intended send time.
//!
//! Stops at fixed end offsets (catch-up), or, following live producers, once every producer of
//! the run has finished and the partitions are drained to their high watermark (bounded by a
//! drain timeout), or at the run's record/time bound.
//!
//! read_committed: fetches with isolation level 1 (the broker returns data up to the last stable
//! offset and the aborted transactions in range), and skips aborted transactions' records
//! ([`AbortedTxns`]). Either way it counts transactional records and end-transaction markers.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use odradek::protocol::{ErrorCode, FetchPartition, FetchRequest, FetchTopic, ResponseBody};

use super::batch::{next_fetch_offset, read_payload_header, walk_records, AbortedTxns, WalkCounts};
use super::connection::{ConnError, Connection, Sent};
use crate::stats::{Clock, CoreProbe, Ranges};

#[derive(Debug, Clone)]
pub enum StopRule {
    /// Catch-up: stop when partition p reaches `end[p]` (exclusive).
    EndOffsets(Vec<i64>),
    /// Follow producers: stop once `producers_remaining` is 0 and everything up to the high
    /// watermark is read, or `drain_timeout_us` after the producers finished.
    FollowProducers {
        producers_remaining: Arc<AtomicUsize>,
        drain_timeout_us: u64,
    },
}

#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub fetch_max_bytes: i32,
    pub fetch_partition_max_bytes: i32,
    pub max_wait_ms: i32,
    /// Record end-to-end latency from the payload timestamps.
    pub e2e: bool,
    pub stop: StopRule,
    /// Global record bound over all consumers, with the shared counter.
    pub records: Option<u64>,
    pub consumed_total: Arc<AtomicU64>,
    pub end_us: Option<u64>,
    /// Catch-up: give up after this long without a record.
    pub stall_timeout_us: u64,
    /// Fetch with isolation level read_committed.
    pub read_committed: bool,
}

#[derive(Debug, Default)]
pub struct ConsumerResult {
    pub consumed: Ranges,
    pub records: u64,
    /// The same (producer, partition, sequence) read twice.
    pub duplicates: u64,
    /// Records read after a later record of the same producer in the same partition.
    pub reordered: u64,
    /// Sequences still missing within one (producer, partition) at the end: records never
    /// written (errored sends) or lost.
    pub sequence_gaps: u64,
    /// Records without a bench payload header.
    pub foreign: u64,
    pub errors: u64,
    /// Transactional records and markers seen; aborted records skipped.
    pub walk: WalkCounts,
}

/// Sequence check for one (producer, partition): the next sequence expected and the gaps seen
/// so far (usually none), so a late record is told apart from a duplicate.
#[derive(Debug, Default)]
struct SeqTrack {
    next: u64,
    missing: Vec<(u64, u64)>,
}

impl SeqTrack {
    /// Fills `seq` if it was missing (a reordering); false if it was already seen (a duplicate).
    fn fill(&mut self, seq: u64) -> bool {
        let Some(i) = self.missing.iter().position(|&(a, b)| a <= seq && seq < b) else {
            return false;
        };
        let (a, b) = self.missing[i];
        self.missing.remove(i);
        if a < seq {
            self.missing.push((a, seq));
        }
        if seq + 1 < b {
            self.missing.push((seq + 1, b));
        }
        true
    }
    fn missing_count(&self) -> u64 {
        self.missing.iter().map(|(a, b)| b - a).sum()
    }
}

pub async fn run_consumer(
    leader: String,
    topic: String,
    start: Vec<(i32, i64)>,
    spec: Rc<ConsumerSpec>,
    probe: Rc<RefCell<CoreProbe>>,
    clock: Clock,
) -> ConsumerResult {
    let mut res = ConsumerResult::default();
    let mut conn = match Connection::connect(&leader).await {
        Ok(c) => c,
        Err(e) => {
            probe.borrow_mut().error(e.to_string(), 1);
            res.errors += 1;
            return res;
        }
    };
    let mut at = Position {
        next: start.iter().copied().collect(),
        hw: BTreeMap::new(),
        producers_done_at: None,
        fetched_after_done: false,
        last_progress_us: clock.now_us(),
    };
    let mut expect: HashMap<(u32, i32), SeqTrack> = HashMap::new();
    // One Fetch ahead, as Kafka's clients keep one: the next Fetch goes out as soon as a
    // response's framing gives the next offsets, and the broker serves it while this task checks
    // the records it just got. Waiting for the check first left the broker idle for it.
    let mut in_flight =
        fetch_next(&mut conn, &topic, &spec, &mut res, &probe, &clock, &mut at).await;
    while let Some(fetch) = in_flight.take() {
        let resp = match conn.reader.response(fetch.sent).await {
            Ok(ResponseBody::Fetch(r)) => r,
            Ok(_) => {
                probe
                    .borrow_mut()
                    .error("fetch: unexpected response".into(), 1);
                res.errors += 1;
                break;
            }
            Err(e) => {
                probe.borrow_mut().error(format!("fetch: {e}"), 1);
                res.errors += 1;
                break;
            }
        };
        if fetch.after_producers_done {
            at.fetched_after_done = true;
        }
        if resp.error_code != 0 {
            probe
                .borrow_mut()
                .error(format!("fetch: {}", ErrorCode(resp.error_code)), 1);
            res.errors += 1;
            glommio::timer::sleep(Duration::from_millis(100)).await;
            in_flight =
                fetch_next(&mut conn, &topic, &spec, &mut res, &probe, &clock, &mut at).await;
            continue;
        }
        // First the framing: partition errors, high watermarks and the next offsets.
        let mut had_error = false;
        let mut unframed: Vec<i32> = Vec::new();
        for pd in resp.responses.iter().flat_map(|t| &t.partitions) {
            let p = pd.partition_index;
            if pd.error_code != 0 {
                probe
                    .borrow_mut()
                    .error(format!("fetch p{p}: {}", ErrorCode(pd.error_code)), 1);
                res.errors += 1;
                had_error = true;
                continue;
            }
            at.hw.insert(p, pd.high_watermark);
            let Some(records) = pd.record_bytes() else {
                continue;
            };
            match next_fetch_offset(&records) {
                Ok(Some(n)) => {
                    if let Some(o) = at.next.get_mut(&p) {
                        *o = (*o).max(n);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    probe.borrow_mut().error(format!("fetch p{p}: {e}"), 1);
                    res.errors += 1;
                    had_error = true;
                    unframed.push(p);
                }
            }
        }
        // Then the next Fetch (unless the run is over; after an error, once it waited below).
        if !had_error {
            in_flight =
                fetch_next(&mut conn, &topic, &spec, &mut res, &probe, &clock, &mut at).await;
        }
        // Then every record of this response. A batch failing its CRC here is an error, and its
        // records (and the rest of that partition's response) are not counted as consumed.
        let now = clock.now_us();
        let unix_now = clock.unix_now_us();
        let mut n_records = 0u64;
        let mut n_bytes = 0u64;
        for pd in resp.responses.iter().flat_map(|t| &t.partitions) {
            let p = pd.partition_index;
            if pd.error_code != 0 || unframed.contains(&p) {
                continue; // counted above
            }
            let Some(records) = pd.record_bytes() else {
                continue;
            };
            let Some(from) = fetch.offsets.get(&p).copied() else {
                continue;
            };
            let mut aborted = spec.read_committed.then(|| {
                AbortedTxns::new(
                    pd.aborted_transactions
                        .iter()
                        .flatten()
                        .map(|a| (a.producer_id, a.first_offset)),
                )
            });
            let mut probe_b = probe.borrow_mut();
            let walked = walk_records(&records, aborted.as_mut(), &mut res.walk, |r| {
                if r.offset < from {
                    return; // a batch may start before the fetch offset
                }
                res.consumed.push(p, r.offset, r.offset + 1);
                res.records += 1;
                n_records += 1;
                let Some(v) = r.value else {
                    res.foreign += 1;
                    return;
                };
                n_bytes += v.len() as u64;
                let Some(h) = read_payload_header(v) else {
                    res.foreign += 1;
                    return;
                };
                let e = expect.entry((h.producer, p)).or_default();
                if h.sequence >= e.next {
                    if h.sequence > e.next {
                        e.missing.push((e.next, h.sequence));
                    }
                    e.next = h.sequence + 1;
                } else if e.fill(h.sequence) {
                    res.reordered += 1;
                } else {
                    res.duplicates += 1;
                }
                if spec.e2e {
                    let send_run_us = h.send_time_us.saturating_sub(clock.unix_start_us);
                    probe_b.e2e(send_run_us, unix_now.saturating_sub(h.send_time_us));
                }
            });
            if let Err(e) = walked {
                probe_b.error(format!("fetch p{p}: {e}"), 1);
                res.errors += 1;
                had_error = true;
            }
        }
        if n_records > 0 {
            at.last_progress_us = now;
        }
        spec.consumed_total.fetch_add(n_records, Ordering::Relaxed);
        probe.borrow_mut().consumed(now, n_records, n_bytes);
        if had_error {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            if in_flight.is_none() {
                in_flight =
                    fetch_next(&mut conn, &topic, &spec, &mut res, &probe, &clock, &mut at).await;
            }
        }
    }
    res.sequence_gaps = expect.values().map(SeqTrack::missing_count).sum();
    res
}

/// A Fetch sent and not yet answered.
struct InFlight {
    sent: Sent,
    /// Each partition's fetch offset: records before it (a batch may start earlier) are skipped.
    offsets: HashMap<i32, i64>,
    /// Sent after every producer had finished: its answer shows what they left.
    after_producers_done: bool,
}

/// Where a consumer is: the offsets it fetches next, the high watermarks last seen, and what
/// tells whether it is done.
struct Position {
    next: BTreeMap<i32, i64>,
    hw: BTreeMap<i32, i64>,
    /// When every producer of the run had finished (following producers).
    producers_done_at: Option<u64>,
    /// A Fetch sent after that was answered: what the producers left is in sight.
    fetched_after_done: bool,
    last_progress_us: u64,
}

/// Sends the next Fetch: `None` when the consumer is done (see [`next_fetch`]) or the send
/// failed (an error, counted).
async fn fetch_next(
    conn: &mut Connection,
    topic: &str,
    spec: &ConsumerSpec,
    res: &mut ConsumerResult,
    probe: &RefCell<CoreProbe>,
    clock: &Clock,
    at: &mut Position,
) -> Option<InFlight> {
    let active = next_fetch(spec, res, probe, clock, at)?;
    match send_fetch(conn, topic, spec, active, at.producers_done_at.is_some()).await {
        Ok(f) => Some(f),
        Err(e) => {
            probe.borrow_mut().error(format!("fetch: {e}"), 1);
            res.errors += 1;
            None
        }
    }
}

/// The partitions (with their offsets) the next Fetch asks for, or `None` when the consumer is
/// done: its partitions read to their end offsets, its producers finished and drained (or the
/// drain timed out), the run's bound reached, a stop signal, or a catch-up read that stopped
/// progressing (counted as an error).
fn next_fetch(
    spec: &ConsumerSpec,
    res: &mut ConsumerResult,
    probe: &RefCell<CoreProbe>,
    clock: &Clock,
    at: &mut Position,
) -> Option<Vec<(i32, i64)>> {
    let now = clock.now_us();
    // Catch-up reads that stop progressing (a broker failing every fetch) end the run after the
    // drain timeout instead of hanging it.
    if matches!(spec.stop, StopRule::EndOffsets(_))
        && now.saturating_sub(at.last_progress_us) > spec.stall_timeout_us
    {
        probe.borrow_mut().error(
            format!(
                "fetch: no progress for {} s",
                spec.stall_timeout_us / 1_000_000
            ),
            1,
        );
        res.errors += 1;
        return None;
    }
    // On a stop signal, catch-up reads end at once; consumers following producers drain what the
    // (stopping) producers had acknowledged.
    let stopped =
        crate::run::STOP.load(Ordering::Relaxed) && matches!(spec.stop, StopRule::EndOffsets(_));
    if stopped
        || spec.end_us.is_some_and(|e| now >= e)
        || spec
            .records
            .is_some_and(|r| spec.consumed_total.load(Ordering::Relaxed) >= r)
    {
        return None;
    }
    let active: Vec<(i32, i64)> = match &spec.stop {
        StopRule::EndOffsets(end) => at
            .next
            .iter()
            .filter(|(p, o)| **o < end.get(**p as usize).copied().unwrap_or(0))
            .map(|(p, o)| (*p, *o))
            .collect(),
        StopRule::FollowProducers {
            producers_remaining,
            drain_timeout_us,
        } => {
            if at.producers_done_at.is_none() && producers_remaining.load(Ordering::Acquire) == 0 {
                at.producers_done_at = Some(now);
                at.fetched_after_done = false;
            } else if let Some(d) = at.producers_done_at {
                let drained = at.fetched_after_done
                    && at
                        .next
                        .iter()
                        .all(|(p, o)| at.hw.get(p).is_some_and(|h| *o >= *h));
                if drained || now > d + drain_timeout_us {
                    return None;
                }
            }
            at.next.iter().map(|(p, o)| (*p, *o)).collect()
        }
    };
    (!active.is_empty()).then_some(active)
}

/// Sends a Fetch for `active` (partition, offset) pairs of `topic`.
async fn send_fetch(
    conn: &mut Connection,
    topic: &str,
    spec: &ConsumerSpec,
    active: Vec<(i32, i64)>,
    after_producers_done: bool,
) -> Result<InFlight, ConnError> {
    let req = FetchRequest {
        replica_id: -1,
        max_wait_ms: spec.max_wait_ms,
        min_bytes: 1,
        max_bytes: spec.fetch_max_bytes,
        isolation_level: i8::from(spec.read_committed),
        session_id: 0,
        session_epoch: -1,
        topics: vec![FetchTopic {
            topic: topic.to_string(),
            partitions: active
                .iter()
                .map(|(p, o)| FetchPartition {
                    partition: *p,
                    fetch_offset: *o,
                    partition_max_bytes: spec.fetch_partition_max_bytes,
                    ..Default::default()
                })
                .collect(),
        }],
        ..Default::default()
    };
    let sent = conn.writer.send(&req.into()).await?;
    Ok(InFlight {
        sent,
        offsets: active.into_iter().collect(),
        after_producers_done,
    })
}

#[cfg(test)]
mod tests {
    use super::SeqTrack;

    #[test]
    fn sequence_track_tells_reordering_from_duplicates() {
        let mut t = SeqTrack::default();
        // 0, 1, then 4 (gap 2..4), then 2 (late), 2 again (duplicate), 3 (late).
        for s in [0u64, 1, 4] {
            assert!(s >= t.next);
            if s > t.next {
                t.missing.push((t.next, s));
            }
            t.next = s + 1;
        }
        assert_eq!(t.missing_count(), 2);
        assert!(t.fill(2));
        assert!(!t.fill(2));
        assert!(!t.fill(1));
        assert!(t.fill(3));
        assert_eq!(t.missing_count(), 0);
    }
}
