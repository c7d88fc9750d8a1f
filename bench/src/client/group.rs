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
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
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

// ---- consumer protocol (embedded in JoinGroup/SyncGroup bytes) ----

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as i16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// A cursor over embedded protocol bytes; every read is bounds-checked.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], GroupError> {
        if self.b.len() - self.pos < n {
            return Err(GroupError::Malformed {
                what: self.what,
                detail: format!("{n} bytes wanted at {}, {} present", self.pos, self.b.len()),
            });
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn i16(&mut self) -> Result<i16, GroupError> {
        let s = self.take(2)?;
        Ok(i16::from_be_bytes([s[0], s[1]]))
    }
    fn i32(&mut self) -> Result<i32, GroupError> {
        let s = self.take(4)?;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn string(&mut self) -> Result<String, GroupError> {
        let n = self.i16()?;
        if n < 0 {
            return Err(GroupError::Malformed {
                what: self.what,
                detail: "null string".into(),
            });
        }
        let s = self.take(n as usize)?;
        String::from_utf8(s.to_vec()).map_err(|e| GroupError::Malformed {
            what: self.what,
            detail: e.to_string(),
        })
    }
    /// An array count, checked against the bytes left (each element takes at least `min` bytes).
    fn count(&mut self, min: usize) -> Result<usize, GroupError> {
        let n = self.i32()?;
        if n < 0 || (n as usize).saturating_mul(min) > self.b.len() - self.pos {
            return Err(GroupError::Malformed {
                what: self.what,
                detail: format!(
                    "array count {n} with {} bytes left",
                    self.b.len() - self.pos
                ),
            });
        }
        Ok(n as usize)
    }
}

/// ConsumerProtocolSubscription v0 with null user data.
pub fn encode_subscription(topics: &[String]) -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        put_str(&mut b, t);
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

/// The topics of a ConsumerProtocolSubscription (any version: later versions only append
/// fields after the topics).
pub fn decode_subscription(b: &[u8]) -> Result<Vec<String>, GroupError> {
    let mut c = Cursor {
        b,
        pos: 0,
        what: "subscription",
    };
    let _version = c.i16()?;
    let n = c.count(2)?;
    (0..n).map(|_| c.string()).collect()
}

/// ConsumerProtocolAssignment v0 with null user data.
pub fn encode_assignment(a: &BTreeMap<String, Vec<i32>>) -> Bytes {
    let mut b = Vec::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(a.len() as i32).to_be_bytes());
    for (t, parts) in a {
        put_str(&mut b, t);
        b.extend_from_slice(&(parts.len() as i32).to_be_bytes());
        for p in parts {
            b.extend_from_slice(&p.to_be_bytes());
        }
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

/// The (topic, partitions) of a ConsumerProtocolAssignment; empty bytes = nothing assigned.
pub fn decode_assignment(b: &[u8]) -> Result<BTreeMap<String, Vec<i32>>, GroupError> {
    let mut out = BTreeMap::new();
    if b.is_empty() {
        return Ok(out);
    }
    let mut c = Cursor {
        b,
        pos: 0,
        what: "assignment",
    };
    let _version = c.i16()?;
    let n = c.count(6)?;
    for _ in 0..n {
        let t = c.string()?;
        let k = c.count(4)?;
        let parts = (0..k).map(|_| c.i32()).collect::<Result<Vec<_>, _>>()?;
        out.entry(t).or_insert_with(Vec::new).extend(parts);
    }
    Ok(out)
}

/// Kafka's RangeAssignor: per topic, the subscribed members sorted by member id; with n
/// partitions and m members, member i gets n/m consecutive partitions, and the first n%m members
/// one more. `partitions` gives each topic's partition count (topics missing from it are skipped,
/// as the Java client skips topics without metadata). Every member gets an entry.
pub fn range_assign(
    subscriptions: &[(String, Vec<String>)],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<i32>>> = subscriptions
        .iter()
        .map(|(m, _)| (m.clone(), BTreeMap::new()))
        .collect();
    for (topic, &n) in partitions {
        let mut members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() || n <= 0 {
            continue;
        }
        members.sort();
        members.dedup();
        let m = members.len() as i32;
        let (per, extra) = (n / m, n % m);
        let mut next = 0;
        for (i, member) in members.into_iter().enumerate() {
            let k = per + i32::from((i as i32) < extra);
            if k > 0 {
                if let Some(a) = out.get_mut(member) {
                    a.insert(topic.clone(), (next..next + k).collect());
                }
            }
            next += k;
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(members: &[&str], topics: &[&str]) -> Vec<(String, Vec<String>)> {
        members
            .iter()
            .map(|m| {
                (
                    m.to_string(),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn range_assignment_matches_kafka_range_assignor() {
        // Kafka's RangeAssignor: 7 partitions over 3 members sorted by id -> 3, 2, 2.
        let parts: BTreeMap<String, i32> = [("t".to_string(), 7)].into();
        let a = range_assign(&subs(&["c", "a", "b"], &["t"]), &parts);
        assert_eq!(a["a"]["t"], vec![0, 1, 2]);
        assert_eq!(a["b"]["t"], vec![3, 4]);
        assert_eq!(a["c"]["t"], vec![5, 6]);
        // More members than partitions: the last members get nothing, but an entry.
        let parts: BTreeMap<String, i32> = [("t".to_string(), 2)].into();
        let a = range_assign(&subs(&["a", "b", "c"], &["t"]), &parts);
        assert_eq!(a["a"]["t"], vec![0]);
        assert_eq!(a["b"]["t"], vec![1]);
        assert!(a["c"].is_empty());
    }

    #[test]
    fn consumer_protocol_round_trips_and_matches_kafka_bytes() {
        let topics = vec!["ab".to_string()];
        let s = encode_subscription(&topics);
        // version 0 | 1 topic | "ab" | null user data
        assert_eq!(
            &s[..],
            &[0, 0, 0, 0, 0, 1, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(decode_subscription(&s).unwrap(), topics);
        let a: BTreeMap<String, Vec<i32>> = [("ab".to_string(), vec![3, 4])].into();
        let b = encode_assignment(&a);
        assert_eq!(
            &b[..],
            &[
                0, 0, 0, 0, 0, 1, 0, 2, b'a', b'b', 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0xff, 0xff,
                0xff, 0xff
            ]
        );
        assert_eq!(decode_assignment(&b).unwrap(), a);
        assert!(decode_assignment(&[]).unwrap().is_empty());
        // A huge count with no bytes behind it is an error, not an allocation.
        assert!(decode_assignment(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_subscription(&[0, 0, 0, 0, 0, 1, 0, 9, b'x']).is_err());
    }
}
