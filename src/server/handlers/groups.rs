//! The classic consumer-group APIs: JoinGroup (key 11, v2–9), SyncGroup (14, v0–5), Heartbeat
//! (12, v0–4), LeaveGroup (13, v0–5), DescribeGroups (15, v0–5), ListGroups (16, v0–5),
//! DeleteGroups (42, v0–2) and OffsetDelete (47, v0).
//!
//! Each is decoded here and forwarded to the shard that coordinates the group (the owner of its
//! `__consumer_offsets` partition, [`crate::coordinator::group_shard`]); the group logic is in
//! [`crate::coordinator::groups`] and [`crate::group`]. JoinGroup and SyncGroup may be parked
//! there until the rebalance completes: the job is sent in request order and the wait goes into
//! the returned completion, so the connection's responses stay in order.

use std::future::Future;
use std::rc::Rc;

use crate::coordinator::{self, groups};
use crate::group::{
    error_code, GroupError, HeartbeatRequest, JoinRequest, JoinResponse, LeaveMember,
    MemberAssignment, Protocol, SyncRequest, SyncResponse,
};
use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{
    DeletableGroupResult, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, DescribeGroupsResponseDescribedGroup, DescribedGroupMember,
    HeartbeatRequest as WireHeartbeat, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    JoinGroupResponseMember, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, ListedGroup, MemberResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic, SyncGroupRequest, SyncGroupResponse,
};
use crate::protocol::wire::Reader;
use crate::server::connection::Completion;
use crate::shard::Shard;

use super::{decode, Dispatch, RequestContext};

/// Runs `f` on the shard coordinating `group` and waits for its answer; `unavailable` when the
/// offsets topic is missing or the shard does not answer. (OffsetCommit/OffsetFetch use it too.)
pub(super) async fn on_coordinator<T, F, Fut>(
    shard: &Rc<Shard>,
    group: &str,
    unavailable: T,
    f: F,
) -> T
where
    T: Send + 'static,
    F: FnOnce(&Rc<Shard>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let Some(owner) = coordinator::group_shard(shard, group) else {
        return unavailable;
    };
    match shard.mailbox.call(shard, owner, f).await {
        Ok(t) => t,
        Err(_) => unavailable,
    }
}

/// Sends `f` to the shard coordinating `group` now (keeping request order) and returns the reply
/// to send once it answers, for requests that may be parked there.
pub(super) async fn park_on_coordinator<T, F, Fut>(
    shard: &Rc<Shard>,
    ctx: RequestContext,
    group: &str,
    unavailable: T,
    f: F,
    respond: fn(&RequestContext, T) -> Completion,
) -> Dispatch
where
    T: Send + 'static,
    F: FnOnce(&Rc<Shard>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let Some(owner) = coordinator::group_shard(shard, group) else {
        return Dispatch::Reply(Box::pin(async move { respond(&ctx, unavailable) }));
    };
    let rx = shard.mailbox.send(shard, owner, f).await;
    Dispatch::Reply(Box::pin(async move {
        let answer = match rx {
            Ok(rx) => rx.await.unwrap_or(unavailable),
            Err(_) => unavailable,
        };
        respond(&ctx, answer)
    }))
}

fn respond_join(ctx: &RequestContext, r: JoinResponse) -> Completion {
    // Before v7 the protocol name is not nullable.
    let protocol_name = match r.protocol_name {
        None if ctx.version < 7 => Some(String::new()),
        other => other,
    };
    Completion::Respond(
        ctx.respond(&JoinGroupResponse {
            throttle_time_ms: 0,
            error_code: error_code(r.error),
            generation_id: r.generation_id,
            protocol_type: r.protocol_type,
            protocol_name,
            leader: r.leader_id,
            skip_assignment: r.skip_assignment,
            member_id: r.member_id,
            members: r
                .members
                .into_iter()
                .map(|m| JoinGroupResponseMember {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    metadata: m.metadata,
                })
                .collect(),
        }),
    )
}

pub async fn join_group(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: JoinGroupRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let join = JoinRequest {
        member_id: req.member_id.clone(),
        group_instance_id: req.group_instance_id,
        client_id: ctx.client_id.clone().unwrap_or_default(),
        client_host: ctx.client_host(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if req.rebalance_timeout_ms < 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms
        },
        protocol_type: req.protocol_type,
        protocols: req
            .protocols
            .into_iter()
            .map(|p| Protocol {
                name: p.name,
                metadata: p.metadata,
            })
            .collect(),
        require_known_member_id: ctx.version >= 4,
        supports_skip_assignment: ctx.version >= 9,
    };
    let group = req.group_id;
    let fallback = JoinResponse::error(req.member_id, GroupError::CoordinatorNotAvailable);
    let target = group.clone();
    park_on_coordinator(
        shard,
        ctx,
        &target,
        fallback,
        move |s| groups::join(s.clone(), group, join),
        respond_join,
    )
    .await
}

fn respond_sync(ctx: &RequestContext, r: SyncResponse) -> Completion {
    Completion::Respond(ctx.respond(&SyncGroupResponse {
        throttle_time_ms: 0,
        error_code: error_code(r.error),
        protocol_type: r.protocol_type,
        protocol_name: r.protocol_name,
        assignment: r.assignment,
    }))
}

pub async fn sync_group(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: SyncGroupRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let sync = SyncRequest {
        member_id: req.member_id,
        group_instance_id: req.group_instance_id,
        generation_id: req.generation_id,
        protocol_type: req.protocol_type,
        protocol_name: req.protocol_name,
        assignments: req
            .assignments
            .into_iter()
            .map(|a| MemberAssignment {
                member_id: a.member_id,
                assignment: a.assignment,
            })
            .collect(),
    };
    let group = req.group_id;
    let target = group.clone();
    let fallback = SyncResponse::error(GroupError::CoordinatorNotAvailable);
    park_on_coordinator(
        shard,
        ctx,
        &target,
        fallback,
        move |s| groups::sync(s.clone(), group, sync),
        respond_sync,
    )
    .await
}

pub async fn heartbeat(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: WireHeartbeat = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let beat = HeartbeatRequest {
        member_id: req.member_id,
        group_instance_id: req.group_instance_id,
        generation_id: req.generation_id,
    };
    let group = req.group_id;
    let target = group.clone();
    let result = on_coordinator(
        shard,
        &target,
        Err(GroupError::CoordinatorNotAvailable),
        move |s| {
            let out = groups::heartbeat(s, &group, beat);
            async move { out }
        },
    )
    .await;
    ctx.reply(HeartbeatResponse {
        throttle_time_ms: 0,
        error_code: error_code(result.err()),
    })
}

pub async fn leave_group(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: LeaveGroupRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let members: Vec<LeaveMember> = if ctx.version < 3 {
        vec![LeaveMember {
            member_id: req.member_id,
            group_instance_id: None,
        }]
    } else {
        req.members
            .into_iter()
            .map(|m| LeaveMember {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
            })
            .collect()
    };
    let group = req.group_id;
    let target = group.clone();
    let response = on_coordinator(
        shard,
        &target,
        crate::group::LeaveResponse {
            error: Some(GroupError::CoordinatorNotAvailable),
            members: Vec::new(),
        },
        move |s| {
            let out = groups::leave(s, &group, members);
            async move { out }
        },
    )
    .await;
    // v0–2 carry one member and no per-member results: its error is the answer.
    let error = match (ctx.version, response.error) {
        (0..=2, None) => response.members.first().and_then(|m| m.error),
        (_, e) => e,
    };
    ctx.reply(LeaveGroupResponse {
        throttle_time_ms: 0,
        error_code: error_code(error),
        members: response
            .members
            .into_iter()
            .map(|m| MemberResponse {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                error_code: error_code(m.error),
            })
            .collect(),
    })
}

pub async fn describe_groups(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: DescribeGroupsRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let mut out = Vec::with_capacity(req.groups.len());
    for group_id in req.groups {
        let group = group_id.clone();
        let described = on_coordinator(
            shard,
            &group_id,
            Err(GroupError::CoordinatorNotAvailable),
            move |s| {
                let out = groups::describe(s, &group);
                async move { out }
            },
        )
        .await;
        out.push(match described {
            Ok(d) => DescribeGroupsResponseDescribedGroup {
                error_code: 0,
                group_id,
                group_state: d.state.as_str().to_string(),
                protocol_type: d.protocol_type,
                protocol_data: d.protocol_name,
                members: d
                    .members
                    .into_iter()
                    .map(|m| DescribedGroupMember {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        member_metadata: m.metadata,
                        member_assignment: m.assignment,
                    })
                    .collect(),
                authorized_operations: i32::MIN,
            },
            Err(e) => DescribeGroupsResponseDescribedGroup {
                error_code: e.code(),
                group_id,
                group_state: String::new(),
                protocol_type: String::new(),
                protocol_data: String::new(),
                members: Vec::new(),
                authorized_operations: i32::MIN,
            },
        });
    }
    ctx.reply(DescribeGroupsResponse {
        throttle_time_ms: 0,
        groups: out,
    })
}

pub async fn list_groups(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: ListGroupsRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    // Every shard coordinates some groups: ask each (in order) and merge.
    let mut replies = Vec::with_capacity(shard.nr_shards);
    for target in 0..shard.nr_shards {
        replies.push(
            shard
                .mailbox
                .send(shard, target, |s| {
                    let out = groups::list(s);
                    async move { out }
                })
                .await,
        );
    }
    let mut error = ErrorCode::NONE;
    let mut listed = Vec::new();
    for reply in replies {
        match reply {
            Ok(rx) => match rx.await {
                Ok(groups) => listed.extend(groups),
                Err(_) => error = ErrorCode::COORDINATOR_NOT_AVAILABLE,
            },
            Err(_) => error = ErrorCode::COORDINATOR_NOT_AVAILABLE,
        }
    }
    // Filters match case-insensitively, as Kafka's; empty lists match everything.
    let matches = |filter: &[String], value: &str| {
        filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
    };
    let groups = listed
        .into_iter()
        .filter(|g| matches(&req.states_filter, g.state))
        .filter(|g| matches(&req.types_filter, g.group_type))
        .map(|g| ListedGroup {
            group_id: g.group_id,
            protocol_type: g.protocol_type,
            group_state: g.state.to_string(),
            group_type: g.group_type.to_string(),
        })
        .collect();
    ctx.reply(ListGroupsResponse {
        throttle_time_ms: 0,
        error_code: error.0,
        groups,
    })
}

pub async fn delete_groups(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: DeleteGroupsRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let mut results = Vec::with_capacity(req.groups_names.len());
    for group_id in req.groups_names {
        let group = group_id.clone();
        let result = on_coordinator(
            shard,
            &group_id,
            Err(GroupError::CoordinatorNotAvailable),
            move |s| groups::delete(s.clone(), group),
        )
        .await;
        results.push(DeletableGroupResult {
            group_id,
            error_code: error_code(result.err()),
        });
    }
    ctx.reply(DeleteGroupsResponse {
        throttle_time_ms: 0,
        results,
    })
}

pub async fn offset_delete(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: OffsetDeleteRequest = match decode(&ctx, &mut r) {
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
    let parts: Vec<(String, i32)> = shape
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
        .collect();
    let group = req.group_id.clone();
    let result = on_coordinator(
        shard,
        &req.group_id,
        Err(ErrorCode::COORDINATOR_NOT_AVAILABLE),
        move |s| groups::delete_offsets(s.clone(), group, parts),
    )
    .await;
    let (error, mut codes) = match result {
        Ok(codes) => (ErrorCode::NONE, codes.into_iter()),
        Err(code) => (code, Vec::new().into_iter()),
    };
    let topics = if error == ErrorCode::NONE {
        shape
            .into_iter()
            .map(|(name, parts)| OffsetDeleteResponseTopic {
                name,
                partitions: parts
                    .into_iter()
                    .map(|partition_index| OffsetDeleteResponsePartition {
                        partition_index,
                        error_code: codes.next().unwrap_or(ErrorCode::UNKNOWN_SERVER_ERROR).0,
                    })
                    .collect(),
            })
            .collect()
    } else {
        Vec::new()
    };
    ctx.reply(OffsetDeleteResponse {
        error_code: error.0,
        throttle_time_ms: 0,
        topics,
    })
}
