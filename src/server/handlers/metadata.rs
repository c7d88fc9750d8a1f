//! Metadata (key 3), v0–12: brokers (this one), topics with their partitions, leaders (this
//! broker), replicas and ISR. Unknown topics are auto-created when the request allows it (v4+
//! flag; always for older versions) and `auto.create.topics.enable` is on.

use std::rc::Rc;

use crate::metadata::{validate_topic_name, TopicMeta};
use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{
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
    // None (or, before v1, an empty list) means every topic.
    let requested: Option<Vec<String>> = match &req.topics {
        None => None,
        Some(list) if list.is_empty() && ctx.version == 0 => None,
        Some(list) => Some(
            list.iter()
                .map(|t| t.name.clone().unwrap_or_default())
                .collect(),
        ),
    };
    let allow_create = shard.config.auto_create_topics_enable
        && (ctx.version < 4 || req.allow_auto_topic_creation);
    if let (Some(names), true) = (&requested, allow_create) {
        let missing: Vec<String> = names
            .iter()
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
        Some(names) => names
            .into_iter()
            .map(|name| match image.topic(&name) {
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
