//! ListOffsets (key 2), v1–7: earliest (-2), latest (-1: the high watermark, or for
//! isolation_level 1 (read_committed, v2+) the last stable offset) and by timestamp (the first
//! batch whose max timestamp is at or after it, via the time index, below the same bound); and
//! OffsetForLeaderEpoch (key 23), v2–4: the end offset of a leader epoch. Answered by the
//! shards that own the partitions.

use std::rc::Rc;

use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse,
    ListOffsetsTopicResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
    OffsetForLeaderEpochResponseEpochEndOffset as EpochEndOffset, OffsetForLeaderTopicResult,
};
use crate::protocol::wire::Reader;
use crate::shard::Shard;

use super::{decode, Dispatch, RequestContext};
use crate::server::connection::Completion;

const EARLIEST: i64 = -2;
const LATEST: i64 = -1;
/// KIP-734: the record with the largest timestamp (the earliest of them if several).
const MAX_TIMESTAMP: i64 = -3;

/// (error, offset, timestamp, leader epoch) for one partition.
type Answer = (ErrorCode, i64, i64, i32);

async fn offset_on_owner(
    s: Rc<Shard>,
    topic: String,
    partition: i32,
    timestamp: i64,
    current_epoch: i32,
    read_committed: bool,
) -> Answer {
    let p = match s.serving(&topic, partition) {
        Ok(p) => p,
        Err(error) => return (error, -1, -1, -1),
    };
    if current_epoch >= 0 && current_epoch != p.leader_epoch {
        let e = if current_epoch > p.leader_epoch {
            ErrorCode::UNKNOWN_LEADER_EPOCH
        } else {
            ErrorCode::FENCED_LEADER_EPOCH
        };
        return (e, -1, -1, -1);
    }
    // What a consumer of this isolation level may read.
    let readable = if read_committed {
        p.log.last_stable_offset()
    } else {
        p.log.high_watermark()
    };
    match timestamp {
        EARLIEST => (
            ErrorCode::NONE,
            p.log.log_start_offset(),
            -1,
            p.leader_epoch,
        ),
        LATEST => (ErrorCode::NONE, readable, -1, p.leader_epoch),
        MAX_TIMESTAMP => match p.log.max_timestamp() {
            None => (ErrorCode::NONE, -1, -1, p.leader_epoch),
            Some(max) => match p.log.offset_for_timestamp(max).await {
                Ok(Some((offset, found_ts))) if offset < readable => {
                    (ErrorCode::NONE, offset, found_ts, p.leader_epoch)
                }
                Ok(_) => (ErrorCode::NONE, -1, -1, p.leader_epoch),
                Err(e) => {
                    log::error!(
                        "shard {}: max timestamp lookup {topic}-{partition}: {e}",
                        s.id
                    );
                    (ErrorCode::KAFKA_STORAGE_ERROR, -1, -1, -1)
                }
            },
        },
        ts if ts >= 0 => match p.log.offset_for_timestamp(ts).await {
            // Only offsets consumers may read (below the high watermark) are answered.
            Ok(Some((offset, found_ts))) if offset < readable => {
                (ErrorCode::NONE, offset, found_ts, p.leader_epoch)
            }
            Ok(_) => (ErrorCode::NONE, -1, -1, -1),
            Err(e) => {
                log::error!("shard {}: time index lookup {topic}-{partition}: {e}", s.id);
                (ErrorCode::KAFKA_STORAGE_ERROR, -1, -1, -1)
            }
        },
        // Other special values (-4 earliest local, -5 tiered storage) do not apply here.
        _ => (ErrorCode::INVALID_REQUEST, -1, -1, -1),
    }
}

pub async fn handle(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: ListOffsetsRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let image = shard.image();
    let read_committed = req.isolation_level == 1;
    // Ask every owner first (in order), then gather.
    let mut asks = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let owner = image.shard_of(&t.name, p.partition_index);
            let (topic, partition, ts) = (t.name.clone(), p.partition_index, p.timestamp);
            let epoch = if ctx.version >= 4 {
                p.current_leader_epoch
            } else {
                -1
            };
            let rx = match owner {
                Some(owner) => Some(
                    shard
                        .mailbox
                        .send(shard, owner, move |s| {
                            offset_on_owner(s.clone(), topic, partition, ts, epoch, read_committed)
                        })
                        .await,
                ),
                None => None,
            };
            asks.push(rx);
        }
    }
    let completion = async move {
        let mut answers = Vec::with_capacity(asks.len());
        for rx in asks {
            let a: Answer = match rx {
                None => (ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, -1, -1, -1),
                Some(Ok(rx)) => rx
                    .await
                    .unwrap_or((ErrorCode::NOT_LEADER_OR_FOLLOWER, -1, -1, -1)),
                Some(Err(_)) => (ErrorCode::NOT_LEADER_OR_FOLLOWER, -1, -1, -1),
            };
            answers.push(a);
        }
        let mut answers = answers.into_iter();
        let topics = req
            .topics
            .iter()
            .map(|t| ListOffsetsTopicResponse {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| {
                        let (e, offset, ts, epoch) =
                            answers
                                .next()
                                .unwrap_or((ErrorCode::UNKNOWN_SERVER_ERROR, -1, -1, -1));
                        ListOffsetsPartitionResponse {
                            partition_index: p.partition_index,
                            error_code: e.0,
                            timestamp: ts,
                            offset,
                            leader_epoch: epoch,
                        }
                    })
                    .collect(),
            })
            .collect();
        Completion::Respond(ctx.respond(&ListOffsetsResponse {
            throttle_time_ms: 0,
            topics,
        }))
    };
    Dispatch::Reply(Box::pin(completion))
}

/// Every partition has had one leader epoch so far (0, this broker), so any epoch up to the
/// current one ends at the log end offset.
pub async fn offset_for_leader_epoch(
    shard: &Rc<Shard>,
    ctx: RequestContext,
    mut r: Reader,
) -> Dispatch {
    let req: OffsetForLeaderEpochRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let image = shard.image();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut out = EpochEndOffset {
                error_code: 0,
                partition: p.partition,
                leader_epoch: -1,
                end_offset: -1,
            };
            match image.shard_of(&t.topic, p.partition) {
                None => out.error_code = ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0,
                Some(owner) => {
                    let (topic, partition) = (t.topic.clone(), p.partition);
                    let answer = shard
                        .mailbox
                        .call(shard, owner, move |s| {
                            let hw = s
                                .partition(&topic, partition)
                                .map(|p| (p.leader_epoch, p.log.high_watermark()));
                            async move { hw }
                        })
                        .await;
                    match answer {
                        Ok(Some((epoch, end))) => {
                            if p.current_leader_epoch >= 0 && p.current_leader_epoch != epoch {
                                out.error_code = if p.current_leader_epoch > epoch {
                                    ErrorCode::UNKNOWN_LEADER_EPOCH.0
                                } else {
                                    ErrorCode::FENCED_LEADER_EPOCH.0
                                };
                            } else if p.leader_epoch <= epoch {
                                out.leader_epoch = epoch;
                                out.end_offset = end;
                            }
                        }
                        _ => out.error_code = ErrorCode::NOT_LEADER_OR_FOLLOWER.0,
                    }
                }
            }
            partitions.push(out);
        }
        topics.push(OffsetForLeaderTopicResult {
            topic: t.topic.clone(),
            partitions,
        });
    }
    ctx.reply(OffsetForLeaderEpochResponse {
        throttle_time_ms: 0,
        topics,
    })
}
