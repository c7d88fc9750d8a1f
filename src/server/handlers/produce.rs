//! Produce (key 0), v3–11 (v0–2 advertised, answered UNSUPPORTED_VERSION). Batches are validated (framing, magic 2, CRC32C, counts) and stored
//! exactly as sent — compressed batches are never decompressed here — on the shard that owns
//! each partition. The appends happen while this request is dispatched, in arrival order; the
//! returned completion waits for the group commit when acks is 1 or all (acks=0: no response).
//! A request that waits gives back its `queued.max.request.bytes` once every owning shard's
//! round has written its batches, before the fdatasync (see `server::request_budget`).

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::oneshot;

use crate::metadata::validate_topic_name;
use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{
    PartitionProduceResponse, ProduceRequest, ProduceResponse, TopicProduceResponse,
};
use crate::protocol::record_batch::{self, BatchError, BatchHeader};
use crate::protocol::wire::Reader;
use crate::shard::Shard;
use crate::storage::StorageError;

use super::admin::create_via_controller;
use super::{decode, Dispatch, RequestContext};
use crate::server::connection::Completion;

/// Produce v0–2 carry message format v0/v1, which we do not store; they are answered
/// UNSUPPORTED_VERSION per partition.
pub const FIRST_ACCEPTED_VERSION: i16 = 3;

/// Work for the shard owning one partition.
struct PartWork {
    slot: (usize, usize),
    /// Shared by the topic's partitions (the work may cross to another shard's thread).
    topic: Arc<str>,
    partition: i32,
    batches: Vec<(Bytes, BatchHeader)>,
}

/// What the owning shard answers for one partition.
#[derive(Debug, Clone)]
struct PartResult {
    slot: (usize, usize),
    error: ErrorCode,
    base_offset: i64,
    log_append_time: i64,
    log_start_offset: i64,
}

pub async fn handle(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: ProduceRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let acks = req.acks;
    let mut image = shard.image();

    // Auto-create unknown topics first (one controller round trip for all of them).
    if shard.config.auto_create_topics_enable {
        let missing: Vec<String> = req
            .topic_data
            .iter()
            .filter(|t| image.topic(&t.name).is_none() && validate_topic_name(&t.name).is_ok())
            .map(|t| t.name.clone())
            .collect();
        if !missing.is_empty() {
            create_via_controller(shard, missing, shard.config.num_partitions).await;
            image = shard.image();
        }
    }

    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(req.topic_data.len());
    let mut per_shard: Vec<Vec<PartWork>> = (0..shard.nr_shards).map(|_| Vec::new()).collect();
    for (ti, topic) in req.topic_data.into_iter().enumerate() {
        // What holds for every partition of a topic is looked up once per topic: a request in
        // W5's shape names one topic and up to a thousand partitions, one small batch each.
        let writable = validate_topic_name(&topic.name).is_ok()
            // Internal topics are written by the broker only (Kafka: "Cannot append to
            // internal topic").
            && !crate::coordinator::offsets::is_internal_topic(&topic.name);
        let topic_config = shard.topic_config(&topic.name).unwrap_or_default();
        let placement = image.topic(&topic.name);
        let name: Arc<str> = Arc::from(topic.name.as_str());
        let mut parts = Vec::with_capacity(topic.partition_data.len());
        for (pi, part) in topic.partition_data.into_iter().enumerate() {
            let mut error = ErrorCode::NONE;
            if !(-1..=1).contains(&acks) {
                error = ErrorCode::INVALID_REQUIRED_ACKS;
            } else if !writable {
                error = ErrorCode::INVALID_TOPIC_EXCEPTION;
            } else {
                match placement.and_then(|t| t.shard_of(part.index)) {
                    None => error = ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    // One node is the whole in-sync replica set (Kafka answers the same when
                    // the ISR is smaller than min.insync.replicas).
                    Some(_) if acks == -1 && topic_config.min_insync_replicas > 1 => {
                        error = ErrorCode::NOT_ENOUGH_REPLICAS
                    }
                    // Below log.dir.min.free.bytes: refuse rather than fill the disk (the
                    // client retries; writes resume when space returns).
                    Some(_) if shard.disk_low.get() => error = ErrorCode::KAFKA_STORAGE_ERROR,
                    Some(owner) => match validate_records(
                        part.records.as_ref(),
                        topic_config.max_message_bytes,
                    )
                    .and_then(|batches| {
                        if topic_config.cleanup_compact {
                            every_record_keyed(&batches)?;
                        }
                        timestamps_within_bounds(&batches, &topic_config, crate::shard::now_ms())?;
                        recompress_for_topic(batches, &topic_config)
                    }) {
                        Ok(batches) => per_shard[owner].push(PartWork {
                            slot: (ti, pi),
                            topic: name.clone(),
                            partition: part.index,
                            batches,
                        }),
                        Err(code) => {
                            log::debug!(
                                "produce to {}-{} refused: {code:?}",
                                topic.name,
                                part.index
                            );
                            error = code;
                        }
                    },
                }
            }
            parts.push(PartitionProduceResponse {
                index: part.index,
                error_code: error.0,
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: -1,
                ..Default::default()
            });
        }
        responses.push(TopicProduceResponse {
            name: topic.name,
            partition_responses: parts,
        });
    }

    // Appends, in order: local ones now, remote ones queued on their shard's mailbox now.
    let wait = acks == -1 || (acks == 1 && shard.config.acks1_durable);
    // A request that waits for durability gives back its `queued.max.request.bytes` once every
    // owning shard has written its batches: from then on only the batch cache holds them.
    // Watched by a task of its own: the completion is polled only once the answers before it
    // on its connection are sent, and a connection pipelines several produce requests.
    let release_early = wait && ctx.budget.counted();
    let mut local_round = 0;
    let mut remote_written = Vec::new();
    let mut local = None;
    let mut remote = Vec::new();
    for (target, work) in per_shard.into_iter().enumerate() {
        if work.is_empty() {
            continue;
        }
        if target == shard.id {
            let (round, results) = append_on_owner(shard, work, wait);
            local_round = round;
            local = Some(results);
        } else {
            let slots: Vec<(usize, usize)> = work.iter().map(|w| w.slot).collect();
            let signal = release_early.then(|| {
                let (tx, rx) = oneshot::channel();
                remote_written.push(rx);
                tx
            });
            match shard
                .mailbox
                .send(shard, target, move |s| {
                    let (round, results) = append_on_owner(s, work, wait);
                    let s = s.clone();
                    async move {
                        if let Some(tx) = signal {
                            s.commit.wait_written(round).await;
                            let _ = tx.send(());
                        }
                        results.await
                    }
                })
                .await
            {
                Ok(rx) => remote.push((rx, slots)),
                Err(_) => {
                    for (ti, pi) in slots {
                        responses[ti].partition_responses[pi].error_code =
                            ErrorCode::NOT_LEADER_OR_FOLLOWER.0;
                    }
                }
            }
        }
    }

    if release_early {
        let (shard, budget) = (shard.clone(), ctx.budget.clone());
        glommio::spawn_local(async move {
            shard.commit.wait_written(local_round).await;
            // A signal dropped unsent (its shard went away) also means nothing is held there.
            for rx in remote_written {
                let _ = rx.await;
            }
            budget.release();
        })
        .detach();
    }

    let completion = async move {
        let mut results: Vec<PartResult> = Vec::new();
        if let Some(fut) = local {
            results.extend(fut.await);
        }
        for (rx, slots) in remote {
            match rx.await {
                Ok(r) => results.extend(r),
                Err(_) => results.extend(slots.into_iter().map(|slot| PartResult {
                    slot,
                    error: ErrorCode::NOT_LEADER_OR_FOLLOWER,
                    base_offset: -1,
                    log_append_time: -1,
                    log_start_offset: -1,
                })),
            }
        }
        for r in results {
            let p = &mut responses[r.slot.0].partition_responses[r.slot.1];
            p.error_code = r.error.0;
            p.base_offset = r.base_offset;
            p.log_append_time_ms = r.log_append_time;
            p.log_start_offset = r.log_start_offset;
        }
        if acks == 0 {
            let failed = responses.iter().find_map(|t| {
                let p = t.partition_responses.iter().find(|p| p.error_code != 0)?;
                Some(format!(
                    "acks=0 produce to {}-{} failed with error {}",
                    t.name, p.index, p.error_code
                ))
            });
            return match failed {
                Some(why) => Completion::Close(why),
                None => Completion::Silent,
            };
        }
        Completion::Respond(ctx.respond(&ProduceResponse {
            responses,
            throttle_time_ms: 0,
            ..Default::default()
        }))
    };
    Dispatch::Reply(Box::pin(completion))
}

/// Checks a partition's record set: exactly one whole v2 batch (Kafka's rule for Produce v3+),
/// within `message.max.bytes` (the batch with its 12-byte log overhead, as Kafka counts it),
/// CRC intact.
/// A topic whose `compression.type` names a codec stores batches with that codec: a batch
/// written with another is recompressed here (the one case that leaves the passthrough path;
/// `producer`, the default, keeps batches as sent).
fn recompress_for_topic(
    batches: Vec<(Bytes, BatchHeader)>,
    cfg: &crate::topic_config::TopicConfig,
) -> Result<Vec<(Bytes, BatchHeader)>, ErrorCode> {
    let Some(codec) = cfg.compression.codec() else {
        return Ok(batches);
    };
    batches
        .into_iter()
        .map(|(batch, header)| {
            if header.compression() == codec {
                return Ok((batch, header));
            }
            let out = crate::storage::compaction::recompress(&batch, codec)
                .map_err(|e| batch_error(&e))?;
            let out = Bytes::from(out);
            let header = record_batch::validate(&out).map_err(|e| batch_error(&e))?;
            if out.len() > cfg.max_message_bytes {
                return Err(ErrorCode::MESSAGE_TOO_LARGE);
            }
            Ok((out, header))
        })
        .collect()
}

/// `message.timestamp.before.max.ms` / `after.max.ms` for CreateTime topics: a batch whose
/// newest record is too far ahead of the broker's clock, or whose first record is too far
/// behind it, is refused with INVALID_TIMESTAMP. Read from the batch header (the first record's
/// and the newest timestamp), so compressed batches stay compressed.
fn timestamps_within_bounds(
    batches: &[(Bytes, BatchHeader)],
    cfg: &crate::topic_config::TopicConfig,
    now_ms: i64,
) -> Result<(), ErrorCode> {
    if cfg.timestamp_log_append {
        return Ok(());
    }
    for (_, h) in batches {
        let too_new = h.max_timestamp >= 0
            && h.max_timestamp.saturating_sub(now_ms) > cfg.timestamp_after_max_ms;
        let too_old = h.base_timestamp >= 0
            && now_ms.saturating_sub(h.base_timestamp) > cfg.timestamp_before_max_ms;
        if too_new || too_old {
            return Err(ErrorCode::INVALID_TIMESTAMP);
        }
    }
    Ok(())
}

/// Compacted topics keep the latest value per key: a record without a key cannot be kept
/// meaningfully, so Kafka refuses it (INVALID_RECORD). Compressed batches are decompressed to
/// look (the one check that does on the produce path, and only for compacted topics).
fn every_record_keyed(batches: &[(Bytes, BatchHeader)]) -> Result<(), ErrorCode> {
    use crate::storage::compaction::{for_each_record, records_section};
    for (batch, header) in batches {
        let records = records_section(batch, header).map_err(|e| batch_error(&e))?;
        let mut keyless = false;
        for_each_record(&records, header, |r| keyless |= r.key.is_none())
            .map_err(|e| batch_error(&e))?;
        if keyless {
            return Err(ErrorCode::INVALID_RECORD);
        }
    }
    Ok(())
}

fn validate_records(
    records: Option<&Bytes>,
    max_batch_bytes: usize,
) -> Result<Vec<(Bytes, BatchHeader)>, ErrorCode> {
    let records = match records {
        Some(r) if !r.is_empty() => r,
        _ => return Err(ErrorCode::INVALID_RECORD),
    };
    let mut out = Vec::new();
    for batch in record_batch::split_batches(records) {
        let batch = batch.map_err(|e| batch_error(&e))?;
        if batch.len() > max_batch_bytes {
            return Err(ErrorCode::MESSAGE_TOO_LARGE);
        }
        let header = record_batch::validate(&batch).map_err(|e| batch_error(&e))?;
        if header.is_control() {
            // Control batches are written by the broker (transaction markers), never by clients.
            return Err(ErrorCode::INVALID_RECORD);
        }
        out.push((batch, header));
        if out.len() > 1 {
            return Err(ErrorCode::INVALID_RECORD);
        }
    }
    Ok(out)
}

fn batch_error(e: &BatchError) -> ErrorCode {
    match e {
        BatchError::CorruptMessage(_) => ErrorCode::CORRUPT_MESSAGE,
        BatchError::InvalidRecord(_) => ErrorCode::INVALID_RECORD,
        BatchError::UnsupportedMagic(_) => ErrorCode::UNSUPPORTED_FOR_MESSAGE_FORMAT,
    }
}

/// Maps a storage failure of one partition to its Kafka error code.
pub fn storage_error_code(e: &StorageError) -> ErrorCode {
    match e {
        StorageError::OutOfOrderSequence { .. } => ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER,
        StorageError::InvalidProducerEpoch { .. } => ErrorCode::INVALID_PRODUCER_EPOCH,
        StorageError::CoordinatorFenced { .. } => ErrorCode::TRANSACTION_COORDINATOR_FENCED,
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OFFSET_OUT_OF_RANGE,
        StorageError::BatchTooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
        StorageError::Io(_)
        | StorageError::State(_)
        | StorageError::Corrupt { .. }
        | StorageError::InvariantViolated { .. }
        | StorageError::LogFailed { .. } => ErrorCode::KAFKA_STORAGE_ERROR,
    }
}

/// Runs on the owning shard: appends now (synchronously, in arrival order). Returns the flush
/// round that writes them (0 when nothing was appended) and a future of the results, which
/// waits for that round to complete when asked to.
fn append_on_owner(
    s: &Rc<Shard>,
    work: Vec<PartWork>,
    wait: bool,
) -> (
    u64,
    impl std::future::Future<Output = Vec<PartResult>> + 'static,
) {
    let mut results = Vec::with_capacity(work.len());
    let mut pending = Vec::new();
    let mut round = 0;
    for w in work {
        let p = match s.serving(&w.topic, w.partition) {
            Ok(p) => p,
            Err(error) => {
                results.push(PartResult {
                    slot: w.slot,
                    error,
                    base_offset: -1,
                    log_append_time: -1,
                    log_start_offset: -1,
                });
                continue;
            }
        };
        match s.append_local(&p, &w.batches) {
            Ok((appended, r)) => {
                round = round.max(r);
                results.push(PartResult {
                    slot: w.slot,
                    error: ErrorCode::NONE,
                    base_offset: appended.base_offset,
                    log_append_time: appended.log_append_time,
                    log_start_offset: p.log.log_start_offset(),
                });
                pending.push((results.len() - 1, p, appended.last_offset));
            }
            Err(e) => {
                let code = storage_error_code(&e);
                if code == ErrorCode::KAFKA_STORAGE_ERROR {
                    p.log_error("append", &e);
                }
                results.push(PartResult {
                    slot: w.slot,
                    error: code,
                    base_offset: -1,
                    log_append_time: -1,
                    log_start_offset: -1,
                });
            }
        }
    }
    let s = s.clone();
    let waits = wait && !pending.is_empty();
    let clock = waits.then(|| s.probe.clock()).flatten();
    let results = async move {
        if waits {
            s.commit.wait_round(round).await;
            s.probe.durable_wait_done(clock);
            for (i, p, last_offset) in pending {
                if p.log.high_watermark() <= last_offset {
                    // The flush round did not cover it: the disk failed under this partition.
                    results[i].error = ErrorCode::KAFKA_STORAGE_ERROR;
                    results[i].base_offset = -1;
                }
            }
        }
        results
    };
    (round, results)
}

/// Produce v0–2 (message format v0/v1): answer UNSUPPORTED_VERSION for every partition named.
pub fn unsupported_old(ctx: &RequestContext, mut r: Reader) -> Dispatch {
    use crate::protocol::codec::Field;
    // v0–2 bodies have no transactional id; read them with the v3 layout minus that field.
    let acks = r.read_i16();
    let timeout = r.read_i32();
    let topics = <Vec<crate::protocol::messages::TopicProduceData> as Field>::read(
        &mut r,
        ctx.version,
        false,
    );
    let (Ok(_), Ok(_), Ok(topics)) = (acks, timeout, topics) else {
        return Dispatch::Close(format!("malformed Produce v{} request", ctx.version));
    };
    let responses = topics
        .into_iter()
        .map(|t| TopicProduceResponse {
            name: t.name,
            partition_responses: t
                .partition_data
                .iter()
                .map(|p| PartitionProduceResponse {
                    index: p.index,
                    error_code: ErrorCode::UNSUPPORTED_VERSION.0,
                    base_offset: -1,
                    log_append_time_ms: -1,
                    log_start_offset: -1,
                    ..Default::default()
                })
                .collect(),
        })
        .collect();
    ctx.reply(ProduceResponse {
        responses,
        throttle_time_ms: 0,
        ..Default::default()
    })
}
