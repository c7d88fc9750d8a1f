//! OffsetCommit (key 8, v2–9) and OffsetFetch (key 9, v1–9): decoded here, forwarded to the
//! shard that coordinates the group (the owner of its `__consumer_offsets` partition), answered
//! in request order. The coordinator side is [`crate::coordinator`].

use std::rc::Rc;

use crate::coordinator::{self, CommitPart, CommitRequest, FetchedOffset};
use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetCommitResponsePartition,
    OffsetCommitResponseTopic, OffsetFetchRequest, OffsetFetchResponse, OffsetFetchResponseGroup,
    OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use crate::protocol::wire::Reader;
use crate::shard::Shard;

use super::groups::on_coordinator;
use super::{decode, Dispatch, RequestContext};

pub async fn offset_commit(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: OffsetCommitRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let shape: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let retention_ms = req.retention_time_ms;
    let commit = CommitRequest {
        group: req.group_id.clone(),
        generation_id: req.generation_id_or_member_epoch,
        member_id: req.member_id,
        group_instance_id: req.group_instance_id,
        parts: req
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                t.partitions.into_iter().map(move |p| CommitPart {
                    topic: name.clone(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata,
                    retention_ms,
                })
            })
            .collect(),
        transaction: None,
    };
    let n = commit.parts.len();
    let codes = on_coordinator(
        shard,
        &req.group_id,
        vec![ErrorCode::COORDINATOR_NOT_AVAILABLE; n],
        move |s| coordinator::commit_offsets(s.clone(), commit),
    )
    .await;
    let mut codes = codes.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, parts)| OffsetCommitResponseTopic {
            name,
            partitions: parts
                .into_iter()
                .map(|partition_index| OffsetCommitResponsePartition {
                    partition_index,
                    error_code: codes.next().unwrap_or(ErrorCode::UNKNOWN_SERVER_ERROR).0,
                })
                .collect(),
        })
        .collect();
    ctx.reply(OffsetCommitResponse {
        throttle_time_ms: 0,
        topics,
    })
}

/// The offsets of one group, fetched on its coordinating shard.
async fn fetch_group(
    shard: &Rc<Shard>,
    group: String,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Vec<FetchedOffset>, ErrorCode> {
    let target = group.clone();
    on_coordinator(
        shard,
        &target,
        Err(ErrorCode::COORDINATOR_NOT_AVAILABLE),
        move |s| {
            let out = coordinator::fetch_offsets(s, &group, wanted, require_stable);
            async move { out }
        },
    )
    .await
}

/// Groups fetched offsets by topic, keeping first-seen topic order.
fn by_topic(offsets: Vec<FetchedOffset>) -> Vec<(String, Vec<FetchedOffset>)> {
    let mut out: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for o in offsets {
        match out.iter_mut().find(|(t, _)| *t == o.topic) {
            Some((_, list)) => list.push(o),
            None => out.push((o.topic.clone(), vec![o])),
        }
    }
    out
}

pub async fn offset_fetch(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: OffsetFetchRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    if ctx.version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in req.groups {
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect()
            });
            let fetched = fetch_group(shard, g.group_id.clone(), wanted, req.require_stable).await;
            let (error_code, topics) = match fetched {
                Ok(offsets) => (0, by_topic(offsets)),
                Err(code) => (code.0, Vec::new()),
            };
            groups.push(OffsetFetchResponseGroup {
                group_id: g.group_id,
                error_code,
                topics: topics
                    .into_iter()
                    .map(|(name, parts)| OffsetFetchResponseTopics {
                        name,
                        partitions: parts
                            .into_iter()
                            .map(|o| OffsetFetchResponsePartitions {
                                partition_index: o.partition,
                                committed_offset: o.offset,
                                committed_leader_epoch: o.leader_epoch,
                                metadata: Some(o.metadata),
                                error_code: o.error.0,
                            })
                            .collect(),
                    })
                    .collect(),
            });
        }
        return ctx.reply(OffsetFetchResponse {
            throttle_time_ms: 0,
            topics: Vec::new(),
            error_code: 0,
            groups,
        });
    }

    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let fetched = fetch_group(shard, req.group_id, wanted.clone(), req.require_stable).await;
    let (error_code, topics) = match fetched {
        Ok(offsets) => (ErrorCode::NONE, by_topic(offsets)),
        // v1 has no top-level error: the group error goes on every partition asked for.
        Err(code) => (
            code,
            wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(t, parts)| {
                    let list = parts
                        .into_iter()
                        .map(|p| FetchedOffset::none(t.clone(), p))
                        .collect();
                    (t, list)
                })
                .collect(),
        ),
    };
    let partition_error = if ctx.version < 2 { error_code.0 } else { 0 };
    ctx.reply(OffsetFetchResponse {
        throttle_time_ms: 0,
        topics: topics
            .into_iter()
            .map(|(name, parts)| OffsetFetchResponseTopic {
                name,
                partitions: parts
                    .into_iter()
                    .map(|o| OffsetFetchResponsePartition {
                        partition_index: o.partition,
                        committed_offset: o.offset,
                        committed_leader_epoch: o.leader_epoch,
                        metadata: Some(o.metadata),
                        error_code: if o.error != ErrorCode::NONE {
                            o.error.0
                        } else {
                            partition_error
                        },
                    })
                    .collect(),
            })
            .collect(),
        error_code: error_code.0,
        groups: Vec::new(),
    })
}
