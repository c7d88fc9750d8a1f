//! A minimal member of a classic (JoinGroup/SyncGroup) consumer group, as the Java client's
//! `ConsumerCoordinator` behaves with the eager "range" assignor: FindCoordinator, JoinGroup with
//! the member-id round trip (v4+ answers MEMBER_ID_REQUIRED to a first join without an id), the
//! leader's range assignment sent in SyncGroup, Heartbeat, OffsetCommit/OffsetFetch, LeaveGroup.
//!
//! The embedded consumer protocol (Kafka's `ConsumerProtocolSubscription` and
//! `ConsumerProtocolAssignment`, both version 0), big-endian, strings with an i16 length, arrays
//! with an i32 count, bytes with an i32 length (-1 = null):
//!
//! ```text
//! subscription: version i16 | topics [string]                      | user_data bytes
//! assignment:   version i16 | [topic string | partitions [i32]]    | user_data bytes
//! ```
//!
//! Runs on one bench core; the member owns its coordinator connection, so requests on it are
//! strictly one at a time (a JoinGroup parked by the coordinator blocks this member only).

use std::collections::BTreeMap;

use bytes::Bytes;
use odradek::protocol::api::ApiKey;
use odradek::protocol::{
    ErrorCode, FindCoordinatorRequest, HeartbeatRequest, JoinGroupRequest,
    JoinGroupRequestProtocol, LeaveGroupRequest, MemberIdentity, OffsetCommitRequest,
    OffsetCommitRequestPartition, OffsetCommitRequestTopic, OffsetFetchRequest,
    OffsetFetchRequestTopic, ResponseBody, SyncGroupRequest, SyncGroupRequestAssignment,
};

use odradek::protocol::consumer_protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription, range_assign,
    ConsumerProtocolError,
};

use super::connection::{ConnError, Connection};

pub const PROTOCOL_TYPE: &str = "consumer";
pub const ASSIGNOR: &str = "range";

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// A Kafka error code answered by the coordinator for `api`.
    #[error("{api:?}: {code}")]
    Code { api: ApiKey, code: ErrorCode },
    #[error("unexpected response to {0:?}")]
    Unexpected(ApiKey),
    #[error(transparent)]
    Malformed(#[from] ConsumerProtocolError),
}

impl GroupError {
    /// The Kafka error code, if the coordinator answered one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            GroupError::Code { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn check(api: ApiKey, code: i16) -> Result<(), GroupError> {
    if code == 0 {
        Ok(())
    } else {
        Err(GroupError::Code {
            api,
            code: ErrorCode(code),
        })
    }
}

/// What a completed JoinGroup + SyncGroup gave this member.
#[derive(Debug, Clone)]
pub struct Joined {
    pub generation: i32,
    pub leader: bool,
    pub assignment: BTreeMap<String, Vec<i32>>,
}

/// Timeouts a member declares to the coordinator.
#[derive(Debug, Clone, Copy)]
pub struct MemberTimeouts {
    pub session_ms: i32,
    pub rebalance_ms: i32,
}

/// One classic group member's view: its coordinator connection, member id and generation.
pub struct GroupMember {
    pub group_id: String,
    pub member_id: String,
    pub generation: i32,
    conn: Connection,
    timeouts: MemberTimeouts,
}

/// Asks `bootstrap` for the group's coordinator (FindCoordinator, key type 0) and returns its
/// "host:port". COORDINATOR_NOT_AVAILABLE and COORDINATOR_LOAD_IN_PROGRESS are returned as
/// errors; the caller retries.
pub async fn find_coordinator(bootstrap: &str, group_id: &str) -> Result<String, GroupError> {
    let mut conn = Connection::connect(bootstrap).await?;
    let resp = conn
        .call(FindCoordinatorRequest {
            key: group_id.to_string(),
            key_type: 0,
            ..Default::default()
        })
        .await?;
    let ResponseBody::FindCoordinator(r) = resp else {
        return Err(GroupError::Unexpected(ApiKey::FindCoordinator));
    };
    check(ApiKey::FindCoordinator, r.error_code)?;
    Ok(format!("{}:{}", r.host, r.port))
}

impl GroupMember {
    /// Finds the coordinator and connects to it; the member has no id until its first join.
    pub async fn connect(
        bootstrap: &str,
        group_id: &str,
        timeouts: MemberTimeouts,
    ) -> Result<GroupMember, GroupError> {
        let coordinator = find_coordinator(bootstrap, group_id).await?;
        let conn = Connection::connect(&coordinator).await?;
        Ok(GroupMember {
            group_id: group_id.to_string(),
            member_id: String::new(),
            generation: -1,
            conn,
            timeouts,
        })
    }

    async fn join_once(
        &mut self,
        subscription: &Bytes,
    ) -> Result<odradek::protocol::JoinGroupResponse, GroupError> {
        let resp = self
            .conn
            .call(JoinGroupRequest {
                group_id: self.group_id.clone(),
                session_timeout_ms: self.timeouts.session_ms,
                rebalance_timeout_ms: self.timeouts.rebalance_ms,
                member_id: self.member_id.clone(),
                group_instance_id: None,
                protocol_type: PROTOCOL_TYPE.into(),
                protocols: vec![JoinGroupRequestProtocol {
                    name: ASSIGNOR.into(),
                    metadata: subscription.clone(),
                }],
                ..Default::default()
            })
            .await?;
        match resp {
            ResponseBody::JoinGroup(r) => Ok(r),
            _ => Err(GroupError::Unexpected(ApiKey::JoinGroup)),
        }
    }

    /// JoinGroup (with the member-id round trip), then SyncGroup: the leader computes the range
    /// assignment of `partitions` over every member's subscription, followers send none.
    /// `on_join_sent` is called just before each JoinGroup goes out (measurement hook).
    /// On error the member id is kept unless the coordinator said UNKNOWN_MEMBER_ID.
    pub async fn join_and_sync(
        &mut self,
        topics: &[String],
        partitions: &BTreeMap<String, i32>,
        mut on_join_sent: impl FnMut(),
    ) -> Result<Joined, GroupError> {
        let subscription = encode_subscription(topics);
        on_join_sent();
        let mut r = self.join_once(&subscription).await?;
        if ErrorCode(r.error_code) == ErrorCode::MEMBER_ID_REQUIRED {
            // KIP-394: the coordinator assigned our id; join again with it.
            self.member_id = r.member_id.clone();
            on_join_sent();
            r = self.join_once(&subscription).await?;
        }
        if ErrorCode(r.error_code) == ErrorCode::UNKNOWN_MEMBER_ID {
            self.member_id.clear();
        }
        check(ApiKey::JoinGroup, r.error_code)?;
        self.member_id = r.member_id.clone();
        self.generation = r.generation_id;
        let leader = r.leader == r.member_id;
        let mut assignments = Vec::new();
        if leader {
            let subs = r
                .members
                .iter()
                .map(|m| Ok((m.member_id.clone(), decode_subscription(&m.metadata)?)))
                .collect::<Result<Vec<_>, GroupError>>()?;
            for (member, a) in range_assign(&subs, partitions) {
                assignments.push(SyncGroupRequestAssignment {
                    member_id: member,
                    assignment: encode_assignment(&a),
                });
            }
        }
        let resp = self
            .conn
            .call(SyncGroupRequest {
                group_id: self.group_id.clone(),
                generation_id: self.generation,
                member_id: self.member_id.clone(),
                group_instance_id: None,
                protocol_type: Some(PROTOCOL_TYPE.into()),
                protocol_name: r.protocol_name.clone(),
                assignments,
            })
            .await?;
        let ResponseBody::SyncGroup(s) = resp else {
            return Err(GroupError::Unexpected(ApiKey::SyncGroup));
        };
        if ErrorCode(s.error_code) == ErrorCode::UNKNOWN_MEMBER_ID {
            self.member_id.clear();
        }
        check(ApiKey::SyncGroup, s.error_code)?;
        Ok(Joined {
            generation: self.generation,
            leader,
            assignment: decode_assignment(&s.assignment)?,
        })
    }

    /// One heartbeat for the current generation. REBALANCE_IN_PROGRESS comes back as an error
    /// with that code: the caller revokes, commits and rejoins.
    pub async fn heartbeat(&mut self) -> Result<(), GroupError> {
        let resp = self
            .conn
            .call(HeartbeatRequest {
                group_id: self.group_id.clone(),
                generation_id: self.generation,
                member_id: self.member_id.clone(),
                group_instance_id: None,
            })
            .await?;
        let ResponseBody::Heartbeat(r) = resp else {
            return Err(GroupError::Unexpected(ApiKey::Heartbeat));
        };
        check(ApiKey::Heartbeat, r.error_code)
    }

    /// Commits `positions` (partition -> next offset to read) of `topic` for the current
    /// generation; the first partition error is returned.
    pub async fn commit(
        &mut self,
        topic: &str,
        positions: &[(i32, i64)],
    ) -> Result<(), GroupError> {
        if positions.is_empty() {
            return Ok(());
        }
        let resp = self
            .conn
            .call(OffsetCommitRequest {
                group_id: self.group_id.clone(),
                generation_id_or_member_epoch: self.generation,
                member_id: self.member_id.clone(),
                group_instance_id: None,
                topics: vec![OffsetCommitRequestTopic {
                    name: topic.to_string(),
                    partitions: positions
                        .iter()
                        .map(|&(p, o)| OffsetCommitRequestPartition {
                            partition_index: p,
                            committed_offset: o,
                            committed_metadata: None,
                            ..Default::default()
                        })
                        .collect(),
                }],
                ..Default::default()
            })
            .await?;
        let ResponseBody::OffsetCommit(r) = resp else {
            return Err(GroupError::Unexpected(ApiKey::OffsetCommit));
        };
        for t in r.topics {
            for p in t.partitions {
                check(ApiKey::OffsetCommit, p.error_code)?;
            }
        }
        Ok(())
    }

    /// Committed offsets of `partitions` of `topic`; None where nothing is committed (-1).
    pub async fn committed(
        &mut self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, Option<i64>>, GroupError> {
        let mut out: BTreeMap<i32, Option<i64>> = partitions.iter().map(|&p| (p, None)).collect();
        if partitions.is_empty() {
            return Ok(out);
        }
        let resp = self
            .conn
            .call(OffsetFetchRequest {
                group_id: self.group_id.clone(),
                topics: Some(vec![OffsetFetchRequestTopic {
                    name: topic.to_string(),
                    partition_indexes: partitions.to_vec(),
                }]),
                ..Default::default()
            })
            .await?;
        let ResponseBody::OffsetFetch(r) = resp else {
            return Err(GroupError::Unexpected(ApiKey::OffsetFetch));
        };
        check(ApiKey::OffsetFetch, r.error_code)?;
        for t in r.topics {
            for p in t.partitions {
                check(ApiKey::OffsetFetch, p.error_code)?;
                if let Some(slot) = out.get_mut(&p.partition_index) {
                    *slot = (p.committed_offset >= 0).then_some(p.committed_offset);
                }
            }
        }
        Ok(out)
    }

    /// LeaveGroup for this member (v3+ batch form with one member).
    pub async fn leave(&mut self) -> Result<(), GroupError> {
        let resp = self
            .conn
            .call(LeaveGroupRequest {
                group_id: self.group_id.clone(),
                member_id: self.member_id.clone(),
                members: vec![MemberIdentity {
                    member_id: self.member_id.clone(),
                    group_instance_id: None,
                    reason: Some("odradek-bench member done".into()),
                }],
            })
            .await?;
        let ResponseBody::LeaveGroup(r) = resp else {
            return Err(GroupError::Unexpected(ApiKey::LeaveGroup));
        };
        check(ApiKey::LeaveGroup, r.error_code)?;
        for m in r.members {
            check(ApiKey::LeaveGroup, m.error_code)?;
        }
        Ok(())
    }
}
