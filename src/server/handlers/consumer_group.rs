//! The KIP-848 consumer-group APIs: ConsumerGroupHeartbeat (key 68, v0–1) and
//! ConsumerGroupDescribe (key 69, v0–1), what `group.protocol=consumer` clients speak.
//!
//! Both are forwarded to the shard that coordinates the group; the group logic is in
//! [`crate::coordinator::consumer_groups`] and [`crate::consumer_group`]. A heartbeat is answered
//! once the group change it caused is durable, so the wait goes into the returned completion
//! (the connection keeps reading and its answers stay in order).

use std::rc::Rc;

use crate::consumer_group::{
    ConsumerGroupDescription, DescribedTopicPartitions, HeartbeatRequest, HeartbeatResponse,
    TopicId, TopicPartitions,
};
use crate::coordinator::consumer_groups;
use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    ConsumerGroupDescribeResponseAssignment, ConsumerGroupDescribeResponseDescribedGroup,
    ConsumerGroupDescribeResponseMember, ConsumerGroupDescribeResponseTopicPartitions,
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
    ConsumerGroupHeartbeatResponseAssignment, ConsumerGroupHeartbeatResponseTopicPartitions,
};
use crate::protocol::wire::Reader;
use crate::server::connection::Completion;
use crate::shard::Shard;

use super::groups::{on_coordinator, park_on_coordinator};
use super::{decode, Dispatch, RequestContext};

/// ConsumerGroupDescribe v1's `member_type` for members of the consumer protocol.
const MEMBER_TYPE_CONSUMER: i8 = 1;

pub async fn heartbeat(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: ConsumerGroupHeartbeatRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let group = req.group_id;
    let beat = HeartbeatRequest {
        member_id: req.member_id,
        member_epoch: req.member_epoch,
        instance_id: req.instance_id,
        rack_id: req.rack_id,
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req.subscribed_topic_names,
        subscribed_topic_regex: req.subscribed_topic_regex,
        server_assignor: req.server_assignor,
        topic_partitions: req.topic_partitions.map(|list| {
            list.into_iter()
                .map(|tp| TopicPartitions {
                    topic_id: TopicId(tp.topic_id),
                    partitions: tp.partitions,
                })
                .collect()
        }),
        client_id: ctx.client_id.clone().unwrap_or_default(),
        client_host: ctx.client_host(),
    };
    let target = group.clone();
    park_on_coordinator(
        shard,
        ctx,
        &target,
        Err(ErrorCode::COORDINATOR_NOT_AVAILABLE),
        move |s| consumer_groups::heartbeat(s.clone(), group, beat),
        respond_heartbeat,
    )
    .await
}

fn respond_heartbeat(
    ctx: &RequestContext,
    answer: Result<HeartbeatResponse, ErrorCode>,
) -> Completion {
    let body = match answer {
        Err(code) => ConsumerGroupHeartbeatResponse {
            error_code: code.0,
            ..Default::default()
        },
        Ok(r) => ConsumerGroupHeartbeatResponse {
            throttle_time_ms: 0,
            error_code: r.error.map_or(0, |e| e.code()),
            error_message: r.error.map(|e| e.to_string()),
            member_id: r.member_id,
            member_epoch: r.member_epoch,
            heartbeat_interval_ms: r.heartbeat_interval_ms,
            assignment: r
                .assignment
                .map(|list| ConsumerGroupHeartbeatResponseAssignment {
                    topic_partitions: list
                        .into_iter()
                        .map(|tp| ConsumerGroupHeartbeatResponseTopicPartitions {
                            topic_id: tp.topic_id.0,
                            partitions: tp.partitions,
                        })
                        .collect(),
                }),
        },
    };
    Completion::Respond(ctx.respond(&body))
}

pub async fn describe(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: ConsumerGroupDescribeRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let mut groups = Vec::with_capacity(req.group_ids.len());
    for group_id in req.group_ids {
        let group = group_id.clone();
        let described = on_coordinator(
            shard,
            &group_id,
            Err(ErrorCode::COORDINATOR_NOT_AVAILABLE),
            move |s| {
                let out = consumer_groups::describe(s, &group);
                async move { out }
            },
        )
        .await;
        groups.push(match described {
            Ok(d) => described_group(d),
            Err(code) => ConsumerGroupDescribeResponseDescribedGroup {
                error_code: code.0,
                error_message: (code == ErrorCode::GROUP_ID_NOT_FOUND)
                    .then(|| format!("Group {group_id} is not a consumer group.")),
                group_id,
                ..Default::default()
            },
        });
    }
    ctx.reply(ConsumerGroupDescribeResponse {
        throttle_time_ms: 0,
        groups,
    })
}

fn described_group(d: ConsumerGroupDescription) -> ConsumerGroupDescribeResponseDescribedGroup {
    let assignment =
        |list: Vec<DescribedTopicPartitions>| ConsumerGroupDescribeResponseAssignment {
            topic_partitions: list
                .into_iter()
                .map(|tp| ConsumerGroupDescribeResponseTopicPartitions {
                    topic_id: tp.topic_id.0,
                    topic_name: tp.topic_name,
                    partitions: tp.partitions,
                })
                .collect(),
        };
    ConsumerGroupDescribeResponseDescribedGroup {
        error_code: 0,
        error_message: None,
        group_id: d.group_id,
        group_state: d.state.as_str().to_string(),
        group_epoch: d.group_epoch,
        assignment_epoch: d.assignment_epoch,
        assignor_name: d.assignor_name,
        members: d
            .members
            .into_iter()
            .map(|m| ConsumerGroupDescribeResponseMember {
                member_id: m.member_id,
                instance_id: m.instance_id,
                rack_id: m.rack_id,
                member_epoch: m.member_epoch,
                client_id: m.client_id,
                client_host: m.client_host,
                subscribed_topic_names: m.subscribed_topic_names,
                subscribed_topic_regex: m.subscribed_topic_regex,
                assignment: assignment(m.assignment),
                target_assignment: assignment(m.target_assignment),
                member_type: MEMBER_TYPE_CONSUMER,
            })
            .collect(),
        authorized_operations: i32::MIN,
    }
}
