//! DeleteRecords (key 21, v0–2) and DescribeLogDirs (35, v1–4): the admin view of partition
//! logs. Each partition is handled on its owning shard (through the mailbox); answers are
//! gathered in request order.

use std::rc::Rc;

use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{
    DeleteRecordsPartitionResult, DeleteRecordsRequest, DeleteRecordsResponse,
    DeleteRecordsTopicResult, DescribeLogDirsPartition, DescribeLogDirsRequest,
    DescribeLogDirsResponse, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use crate::protocol::wire::Reader;
use crate::shard::{now_ms, Shard};
use crate::storage::StorageError;

use super::{decode, Dispatch, RequestContext};

/// (topic, partition, offset) with its place in the response.
struct DeleteWork {
    slot: (usize, usize),
    topic: String,
    partition: i32,
    offset: i64,
}

/// DeleteRecords on the owner: (slot, low watermark, error).
async fn delete_on_owner(
    s: Rc<Shard>,
    work: Vec<DeleteWork>,
) -> Vec<((usize, usize), i64, ErrorCode)> {
    let mut out = Vec::with_capacity(work.len());
    for w in work {
        let p = match s.serving(&w.topic, w.partition) {
            Ok(p) => p,
            Err(e) => {
                out.push((w.slot, -1, e));
                continue;
            }
        };
        // -1: up to the high watermark (Kafka's "delete everything").
        let offset = if w.offset == -1 {
            p.log.high_watermark()
        } else {
            w.offset
        };
        match p.log.delete_records_before(offset, now_ms()).await {
            Ok(start) => {
                log::info!(
                    "{}-{}: DeleteRecords before {offset}: log start offset {start}",
                    w.topic,
                    w.partition
                );
                out.push((w.slot, start, ErrorCode::NONE))
            }
            Err(StorageError::OffsetOutOfRange { .. }) => {
                out.push((w.slot, -1, ErrorCode::OFFSET_OUT_OF_RANGE))
            }
            Err(e) => {
                p.log_error("DeleteRecords", &e);
                out.push((w.slot, -1, ErrorCode::KAFKA_STORAGE_ERROR))
            }
        }
    }
    out
}

pub async fn delete_records(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: DeleteRecordsRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let image = shard.image();
    let mut topics: Vec<DeleteRecordsTopicResult> = Vec::with_capacity(req.topics.len());
    let mut by_shard: Vec<Vec<DeleteWork>> = (0..shard.nr_shards).map(|_| Vec::new()).collect();
    for (ti, t) in req.topics.iter().enumerate() {
        let mut parts = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut error = ErrorCode::NONE;
            if crate::coordinator::offsets::is_internal_topic(&t.name) {
                // Kafka: "Cannot delete records of internal topics".
                error = ErrorCode::INVALID_TOPIC_EXCEPTION;
            } else if p.offset < -1 {
                error = ErrorCode::OFFSET_OUT_OF_RANGE;
            } else {
                match image.shard_of(&t.name, p.partition_index) {
                    Some(owner) => by_shard[owner].push(DeleteWork {
                        slot: (ti, pi),
                        topic: t.name.clone(),
                        partition: p.partition_index,
                        offset: p.offset,
                    }),
                    None => error = ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                }
            }
            parts.push(DeleteRecordsPartitionResult {
                partition_index: p.partition_index,
                low_watermark: -1,
                error_code: error.0,
            });
        }
        topics.push(DeleteRecordsTopicResult {
            name: t.name.clone(),
            partitions: parts,
        });
    }
    for (target, work) in by_shard.into_iter().enumerate() {
        if work.is_empty() {
            continue;
        }
        let slots: Vec<(usize, usize)> = work.iter().map(|w| w.slot).collect();
        let results = shard
            .mailbox
            .call(shard, target, move |s| delete_on_owner(s.clone(), work))
            .await
            .unwrap_or_else(|_| {
                slots
                    .into_iter()
                    .map(|slot| (slot, -1, ErrorCode::NOT_LEADER_OR_FOLLOWER))
                    .collect()
            });
        for ((ti, pi), low, error) in results {
            let p = &mut topics[ti].partitions[pi];
            p.low_watermark = low;
            p.error_code = error.0;
        }
    }
    ctx.reply(DeleteRecordsResponse {
        throttle_time_ms: 0,
        topics,
    })
}

/// (topic, partition, size) of the partitions a shard owns, filtered by `wanted`.
fn sizes_on_owner(s: &Shard, wanted: &Option<Vec<(String, Vec<i32>)>>) -> Vec<(String, i32, u64)> {
    let mut out: Vec<(String, i32, u64)> = s
        .owned_partitions()
        .into_iter()
        .filter(|p| match wanted {
            None => true,
            Some(list) => list
                .iter()
                .any(|(t, parts)| *t == p.topic && parts.contains(&p.index)),
        })
        .map(|p| (p.topic.clone(), p.index, p.log.size_bytes()))
        .collect();
    out.sort();
    out
}

pub async fn describe_log_dirs(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: DescribeLogDirsRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let wanted: Option<Vec<(String, Vec<i32>)>> = req
        .topics
        .map(|ts| ts.into_iter().map(|t| (t.topic, t.partitions)).collect());
    let mut all: Vec<(String, i32, u64)> = Vec::new();
    for target in 0..shard.nr_shards {
        let wanted = wanted.clone();
        if let Ok(sizes) = shard
            .mailbox
            .call(shard, target, move |s| {
                let s = s.clone();
                async move { sizes_on_owner(&s, &wanted) }
            })
            .await
        {
            all.extend(sizes);
        }
    }
    all.sort();
    let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
    for (topic, index, size) in all {
        if topics.last().map(|t| &t.name) != Some(&topic) {
            topics.push(DescribeLogDirsTopic {
                name: topic.clone(),
                partitions: Vec::new(),
            });
        }
        if let Some(t) = topics.last_mut() {
            t.partitions.push(DescribeLogDirsPartition {
                partition_index: index,
                partition_size: size as i64,
                offset_lag: 0,
                is_future_key: false,
            });
        }
    }
    let dir = &shard.config.data_dir;
    let (total_bytes, usable_bytes) =
        crate::io::filesystem_space(dir).map_or((-1, -1), |(t, a)| (t as i64, a as i64));
    let log_dir = std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.clone())
        .display()
        .to_string();
    ctx.reply(DescribeLogDirsResponse {
        throttle_time_ms: 0,
        error_code: 0,
        results: vec![DescribeLogDirsResult {
            error_code: 0,
            log_dir,
            topics,
            total_bytes,
            usable_bytes,
        }],
    })
}
