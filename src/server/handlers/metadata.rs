//! Metadata (key 3), v0–12: brokers (this one), topics with their partitions, leaders (this
//! broker), replicas and ISR; and DescribeTopicPartitions (key 75), the same per partition with
//! a cursor for pagination. Unknown topics are auto-created when the request allows it (v4+
//! flag; always for older versions) and `auto.create.topics.enable` is on. From v10 topics can be
//! asked for by id (UNKNOWN_TOPIC_ID when none has it).

use std::rc::Rc;

use crate::metadata::{validate_topic_name, TopicMeta};
use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{
    DescribeTopicPartitionsCursor, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
    DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
    MetadataRequest, MetadataResponse, MetadataResponseBroker, MetadataResponsePartition,
    MetadataResponseTopic,
};
use crate::protocol::wire::Reader;
use crate::shard::Shard;

use super::admin::create_via_controller;
use super::{decode, Dispatch, RequestContext};

pub async fn handle(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: MetadataRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let mut image = shard.image();
    // None (or, before v1, an empty list) means every topic. From v10 a topic may be asked for
    // by id alone (null name), as KIP-848 consumers do for the topic ids of their assignment.
    let requested: Option<Vec<Requested>> = match &req.topics {
        None => None,
        Some(list) if list.is_empty() && ctx.version == 0 => None,
        Some(list) => Some(
            list.iter()
                .map(|t| match &t.name {
                    None if t.topic_id != [0; 16] => Requested::Id(t.topic_id),
                    name => Requested::Name(name.clone().unwrap_or_default()),
                })
                .collect(),
        ),
    };
    let allow_create = shard.config.auto_create_topics_enable
        && (ctx.version < 4 || req.allow_auto_topic_creation);
    if let (Some(wanted), true) = (&requested, allow_create) {
        let missing: Vec<String> = wanted
            .iter()
            .filter_map(|w| match w {
                Requested::Name(n) => Some(n),
                Requested::Id(_) => None,
            })
            .filter(|n| image.topic(n).is_none() && validate_topic_name(n).is_ok())
            .cloned()
            .collect();
        if !missing.is_empty() {
            create_via_controller(shard, missing, shard.config.num_partitions).await;
            image = shard.image();
        }
    }
    let topics = match requested {
        None => image
            .topics
            .values()
            .map(|t| topic_entry(shard, t))
            .collect(),
        Some(wanted) => wanted
            .into_iter()
            .map(|w| match w {
                Requested::Id(id) => match image.topic_by_id(&id) {
                    Some(t) => topic_entry(shard, t),
                    None => MetadataResponseTopic {
                        error_code: ErrorCode::UNKNOWN_TOPIC_ID.0,
                        name: None,
                        topic_id: id,
                        topic_authorized_operations: i32::MIN,
                        ..Default::default()
                    },
                },
                Requested::Name(name) => match image.topic(&name) {
                    Some(t) => topic_entry(shard, t),
                    None => MetadataResponseTopic {
                        error_code: if validate_topic_name(&name).is_ok() {
                            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0
                        } else {
                            ErrorCode::INVALID_TOPIC_EXCEPTION.0
                        },
                        name: Some(name),
                        topic_authorized_operations: i32::MIN,
                        ..Default::default()
                    },
                },
            })
            .collect(),
    };
    let cfg = &shard.config;
    ctx.reply(MetadataResponse {
        throttle_time_ms: 0,
        brokers: vec![MetadataResponseBroker {
            node_id: cfg.node_id,
            host: cfg.advertised_host.clone(),
            port: cfg.advertised_port as i32,
            rack: None,
        }],
        cluster_id: Some(image.cluster_id.clone()),
        controller_id: cfg.node_id,
        topics,
        cluster_authorized_operations: i32::MIN,
    })
}

/// One topic a Metadata request asks for.
enum Requested {
    Name(String),
    Id([u8; 16]),
}

fn topic_entry(shard: &Shard, t: &TopicMeta) -> MetadataResponseTopic {
    let node = shard.config.node_id;
    MetadataResponseTopic {
        error_code: 0,
        name: Some(t.name.clone()),
        topic_id: t.id,
        is_internal: crate::coordinator::offsets::is_internal_topic(&t.name),
        partitions: t
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| MetadataResponsePartition {
                error_code: 0,
                partition_index: i as i32,
                leader_id: node,
                leader_epoch: p.leader_epoch,
                replica_nodes: vec![node],
                isr_nodes: vec![node],
                offline_replicas: vec![],
            })
            .collect(),
        topic_authorized_operations: i32::MIN,
    }
}

/// DescribeTopicPartitions: the topics asked for (all when none; sorted by name, as Kafka
/// pages them), from the cursor on, at most `response_partition_limit` partitions; when the
/// limit cuts a topic, `next_cursor` says where to go on. Never creates topics.
pub fn describe_topic_partitions(
    shard: &Rc<Shard>,
    ctx: RequestContext,
    mut r: Reader,
) -> Dispatch {
    let req: DescribeTopicPartitionsRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let image = shard.image();
    let node = shard.config.node_id;
    let mut names: Vec<String> = if req.topics.is_empty() {
        image.topics.values().map(|t| t.name.clone()).collect()
    } else {
        req.topics.iter().map(|t| t.name.clone()).collect()
    };
    names.sort();
    names.dedup();
    let (start_topic, start_partition) = match &req.cursor {
        Some(c) => (Some(c.topic_name.clone()), c.partition_index.max(0)),
        None => (None, 0),
    };
    let mut budget = req.response_partition_limit.max(1) as usize;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        if start_topic.as_ref().is_some_and(|s| name < *s) {
            continue;
        }
        let first = if start_topic.as_deref() == Some(name.as_str()) {
            start_partition as usize
        } else {
            0
        };
        let Some(t) = image.topic(&name) else {
            topics.push(DescribeTopicPartitionsResponseTopic {
                error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0,
                name: Some(name),
                ..Default::default()
            });
            continue;
        };
        if budget == 0 {
            next_cursor = Some(DescribeTopicPartitionsCursor {
                topic_name: name,
                partition_index: first as i32,
            });
            break;
        }
        let partitions: Vec<DescribeTopicPartitionsResponsePartition> = t
            .partitions
            .iter()
            .enumerate()
            .skip(first)
            .take(budget)
            .map(|(i, p)| DescribeTopicPartitionsResponsePartition {
                error_code: 0,
                partition_index: i as i32,
                leader_id: node,
                leader_epoch: p.leader_epoch,
                replica_nodes: vec![node],
                isr_nodes: vec![node],
                eligible_leader_replicas: None,
                last_known_elr: None,
                offline_replicas: vec![],
            })
            .collect();
        budget -= partitions.len();
        let next = first + partitions.len();
        topics.push(DescribeTopicPartitionsResponseTopic {
            error_code: 0,
            name: Some(t.name.clone()),
            topic_id: t.id,
            is_internal: crate::coordinator::offsets::is_internal_topic(&t.name),
            partitions,
            topic_authorized_operations: i32::MIN,
        });
        if next < t.partitions.len() {
            next_cursor = Some(DescribeTopicPartitionsCursor {
                topic_name: t.name.clone(),
                partition_index: next as i32,
            });
            break;
        }
    }
    ctx.reply(DescribeTopicPartitionsResponse {
        throttle_time_ms: 0,
        topics,
        next_cursor,
    })
}
