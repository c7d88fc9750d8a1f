//! Fetch (key 1), v4–12. Whole batches only — a fetch offset inside a batch returns that whole
//! batch — and at least one batch even when it is larger than the limits, so a consumer always
//! progresses. Reads go to the owning shards (cache for the tail, DMA reads for older data).
//! Long poll: while fewer than `min_bytes` are available and `max_wait_ms` has not passed, the
//! request waits for any of its partitions' high watermark to move (woken by the group commit).
//! Fetch sessions (KIP-227) are not created: we answer session id 0, which tells clients to keep
//! sending full fetch requests.
//!
//! Metrics: the shard answering the request counts the record bytes and records (from batch
//! headers) of every partition's data that made it into the response, after the response-level
//! `max_bytes` and the long poll have had their say.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::metrics::probe::records_in;
use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{
    AbortedTransaction, FetchRequest, FetchResponse, FetchableTopicResponse, PartitionData,
};
use crate::protocol::wire::Reader;
use crate::protocol::RecordSet;
use crate::shard::Shard;

use super::{decode, Dispatch, RequestContext};
use crate::server::connection::Completion;

#[derive(Clone)]
struct FetchWork {
    slot: (usize, usize),
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    /// isolation_level 1: read only below the last stable offset, and report the aborted
    /// transactions in the range read.
    read_committed: bool,
}

struct FetchPartResult {
    slot: (usize, usize),
    error: ErrorCode,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    chunks: Vec<Bytes>,
    /// read_committed only: the aborted transactions with data in the range read.
    aborted: Vec<AbortedTransaction>,
}

impl FetchPartResult {
    fn failed(slot: (usize, usize), error: ErrorCode) -> FetchPartResult {
        FetchPartResult {
            slot,
            error,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            chunks: vec![],
            aborted: vec![],
        }
    }
}

impl FetchPartResult {
    fn bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }
}

pub fn handle(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: FetchRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    if ctx.version >= 7 && (req.session_id != 0 || req.session_epoch > 0) {
        return ctx.reply(FetchResponse {
            error_code: ErrorCode::FETCH_SESSION_ID_NOT_FOUND.0,
            session_id: 0,
            ..Default::default()
        });
    }
    let image = shard.image();
    let read_committed = req.isolation_level == 1;
    // Every partition's read is also capped by the response limit (at least one batch still
    // comes back), so concurrent reads never fetch far more than can be answered; and the
    // response limit by the broker's fetch.max.bytes, which bounds the memory one response
    // pins while a slow client reads it.
    let max_bytes_request = if req.max_bytes <= 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    }
    .min(shard.config.fetch_max_bytes);
    let mut work_by_shard: Vec<Vec<FetchWork>> = (0..shard.nr_shards).map(|_| Vec::new()).collect();
    let mut early: Vec<FetchPartResult> = Vec::new();
    let mut skeleton: Vec<FetchableTopicResponse> = Vec::with_capacity(req.topics.len());
    for (ti, t) in req.topics.iter().enumerate() {
        let mut parts = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            parts.push(PartitionData {
                partition_index: p.partition,
                ..empty_partition()
            });
            match image.shard_of(&t.topic, p.partition) {
                Some(owner) => work_by_shard[owner].push(FetchWork {
                    slot: (ti, pi),
                    topic: t.topic.clone(),
                    partition: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: (p.partition_max_bytes.max(1) as usize).min(max_bytes_request),
                    current_leader_epoch: if ctx.version >= 9 {
                        p.current_leader_epoch
                    } else {
                        -1
                    },
                    read_committed,
                }),
                None => early.push(FetchPartResult::failed(
                    (ti, pi),
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                )),
            }
        }
        skeleton.push(FetchableTopicResponse {
            topic: t.topic.clone(),
            partitions: parts,
        });
    }
    let topic_ids: Vec<Option<crate::metadata::TopicId>> = req
        .topics
        .iter()
        .map(|t| image.topic(&t.topic).map(|m| m.id))
        .collect();
    let shard = shard.clone();
    let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = max_bytes_request;
    let completion = async move {
        let deadline = Instant::now() + max_wait;
        let mut results = loop {
            let results = read_everywhere(&shard, &work_by_shard).await;
            let total: usize = results.iter().map(|r| r.bytes()).sum();
            let any_error = !early.is_empty() || results.iter().any(|r| r.error != ErrorCode::NONE);
            let left = deadline.saturating_duration_since(Instant::now());
            if total >= min_bytes
                || total > 0 && min_bytes == 0
                || any_error
                || left.is_zero()
                || shard.stopping.get()
            {
                break results;
            }
            wait_everywhere(&shard, &work_by_shard, &results, left).await;
        };
        results.append(&mut early);
        // Enforce the response-level max_bytes in request order: the first batch always goes,
        // later partitions that would exceed it are answered empty (their clients fetch again).
        results.sort_by_key(|r| r.slot);
        let mut budget = max_bytes;
        let mut first = true;
        for r in results {
            let size = r.bytes();
            let part = &mut skeleton[r.slot.0].partitions[r.slot.1];
            let part_index = part.partition_index;
            part.error_code = r.error.0;
            part.high_watermark = r.high_watermark;
            part.last_stable_offset = r.last_stable_offset;
            part.log_start_offset = r.log_start_offset;
            part.aborted_transactions = read_committed.then_some(r.aborted);
            if size == 0 {
                continue;
            }
            if !first && size > budget {
                continue;
            }
            first = false;
            budget = budget.saturating_sub(size);
            // Cached batches stay in their own buffers: the response sends them gathered.
            let records = RecordSet::from_chunks(r.chunks);
            if shard.probe.collects() {
                if let Some(id) = topic_ids[r.slot.0] {
                    let count = records_in(records.chunks());
                    shard.probe.fetched(
                        &skeleton[r.slot.0].topic,
                        id,
                        part_index,
                        records.len() as u64,
                        count,
                    );
                }
            }
            skeleton[r.slot.0].partitions[r.slot.1].records = Some(records);
        }
        Completion::Respond(ctx.respond(&FetchResponse {
            throttle_time_ms: 0,
            error_code: 0,
            session_id: 0,
            responses: skeleton,
        }))
    };
    Dispatch::Reply(Box::pin(completion))
}

fn empty_partition() -> PartitionData {
    PartitionData {
        error_code: 0,
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        aborted_transactions: None,
        preferred_read_replica: -1,
        records: Some(RecordSet::default()),
        ..Default::default()
    }
}

/// Reads every owner's partitions concurrently (the local shard's included, through the same
/// path) and gathers the results.
async fn read_everywhere(
    shard: &Rc<Shard>,
    work_by_shard: &[Vec<FetchWork>],
) -> Vec<FetchPartResult> {
    let mut waits = Vec::new();
    for (target, work) in work_by_shard.iter().enumerate() {
        if work.is_empty() {
            continue;
        }
        let work = work.clone();
        let slots: Vec<(usize, usize)> = work.iter().map(|w| w.slot).collect();
        let job = move |s: &Rc<Shard>| read_on_owner(s.clone(), work);
        waits.push((shard.mailbox.send(shard, target, job).await, slots));
    }
    let mut results = Vec::new();
    for (rx, slots) in waits {
        let answer = match rx {
            Ok(rx) => rx.await.ok(),
            Err(_) => None,
        };
        match answer {
            Some(r) => results.extend(r),
            None => results.extend(
                slots
                    .into_iter()
                    .map(|slot| FetchPartResult::failed(slot, ErrorCode::NOT_LEADER_OR_FOLLOWER)),
            ),
        }
    }
    results
}

/// Reads this shard's partitions of one Fetch concurrently (disk reads overlap on io_uring
/// instead of queueing behind each other) and returns their results in request order.
async fn read_on_owner(s: Rc<Shard>, work: Vec<FetchWork>) -> Vec<FetchPartResult> {
    crate::io::join::join_all(work.into_iter().map(|w| read_one(&s, w))).await
}

async fn read_one(s: &Shard, w: FetchWork) -> FetchPartResult {
    let mut r = FetchPartResult::failed(w.slot, ErrorCode::NONE);
    let p = match s.serving(&w.topic, w.partition) {
        Ok(p) => p,
        Err(error) => {
            r.error = error;
            return r;
        }
    };
    let hw = p.log.high_watermark();
    let lso = p.log.last_stable_offset();
    let start = p.log.log_start_offset();
    r.high_watermark = hw;
    r.last_stable_offset = lso;
    r.log_start_offset = start;
    let upper = if w.read_committed { lso } else { hw };
    if w.current_leader_epoch >= 0 && w.current_leader_epoch != p.leader_epoch {
        r.error = if w.current_leader_epoch > p.leader_epoch {
            ErrorCode::UNKNOWN_LEADER_EPOCH
        } else {
            ErrorCode::FENCED_LEADER_EPOCH
        };
    } else if w.offset < start || w.offset > p.log.log_end_offset() {
        r.error = ErrorCode::OFFSET_OUT_OF_RANGE;
    } else if w.offset < upper {
        match p.log.read(w.offset, w.max_bytes, upper).await {
            Ok(slice) => {
                r.chunks = slice.chunks;
                if w.read_committed {
                    r.aborted = p
                        .log
                        .aborted_transactions(w.offset, upper)
                        .into_iter()
                        .map(|t| AbortedTransaction {
                            producer_id: t.producer_id,
                            first_offset: t.first_offset,
                        })
                        .collect();
                }
            }
            Err(e) => {
                p.log_error(&format!("read at offset {}", w.offset), &e);
                r.error = ErrorCode::KAFKA_STORAGE_ERROR;
            }
        }
    }
    r
}

/// Waits until any requested partition's high watermark moves past what the last read saw, or
/// `left` passes.
async fn wait_everywhere(
    shard: &Rc<Shard>,
    work_by_shard: &[Vec<FetchWork>],
    seen: &[FetchPartResult],
    left: Duration,
) {
    let seen_hw = |slot: (usize, usize), offset: i64| {
        seen.iter()
            .find(|r| r.slot == slot)
            .map(|r| r.high_watermark.max(offset))
            .unwrap_or(offset)
    };
    let mut waits: Vec<Pin<Box<dyn Future<Output = ()>>>> = Vec::new();
    for (target, work) in work_by_shard.iter().enumerate() {
        if work.is_empty() {
            continue;
        }
        let parts: Vec<(String, i32, i64)> = work
            .iter()
            .map(|w| (w.topic.clone(), w.partition, seen_hw(w.slot, w.offset)))
            .collect();
        if target == shard.id {
            let s = shard.clone();
            waits.push(Box::pin(async move { s.wait_for_data(parts, left).await }));
        } else {
            let job = move |s: &Rc<Shard>| {
                let s = s.clone();
                async move { s.wait_for_data(parts, left).await }
            };
            if let Ok(rx) = shard.mailbox.send(shard, target, job).await {
                waits.push(Box::pin(async move {
                    let _ = rx.await;
                }));
            }
        }
    }
    waits.push(Box::pin(glommio::timer::sleep(left)));
    futures::future::select_all(waits).await;
}
