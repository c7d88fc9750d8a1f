//! The classic consumer-group protocol over raw TCP against a real `odradek serve`: JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, DescribeGroups, ListGroups, DeleteGroups, OffsetDelete and
//! OffsetCommit checked against live groups — the exact error codes Kafka answers, parked
//! requests released by a rebalance, session expiry, and group state surviving a restart.
//!
//! Real clients (librdkafka, confluent-kafka) are driven in `client_groups.rs` and
//! `python/test_groups.py`; this file pins down the wire behaviour they rely on.

mod common;
mod wire;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Broker, BrokerOptions};
use odradek::protocol::messages::*;
use wire::{create_topic_ok, Conn};

const NONE: i16 = 0;
const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const INVALID_GROUP_ID: i16 = 24;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const REBALANCE_IN_PROGRESS: i16 = 27;
const INVALID_REQUEST: i16 = 42;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;
const GROUP_MAX_SIZE_REACHED: i16 = 81;
const FENCED_INSTANCE_ID: i16 = 82;
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

/// A broker on two shards whose groups rebalance at once and allow short sessions, so session
/// expiry is testable in about a second.
fn broker_with(extra: &[(&str, &str)]) -> Broker {
    let mut options = BrokerOptions::new()
        .cores("2")
        .set("group.initial.rebalance.delay.ms", 0)
        .set("group.min.session.timeout.ms", 100);
    for (k, v) in extra {
        options = options.set(*k, *v);
    }
    options.start()
}

/// ConsumerProtocolSubscription v0 for `topics` (what a Java or librdkafka consumer sends).
fn subscription(topics: &[&str]) -> Bytes {
    let mut b = vec![0, 0];
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        b.extend_from_slice(&(t.len() as i16).to_be_bytes());
        b.extend_from_slice(t.as_bytes());
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

struct Join<'a> {
    group: &'a str,
    member_id: &'a str,
    instance_id: Option<&'a str>,
    session_ms: i32,
    protocol_type: &'a str,
    protocols: Vec<(&'a str, Bytes)>,
}

impl<'a> Join<'a> {
    fn new(group: &'a str, member_id: &'a str) -> Self {
        Join {
            group,
            member_id,
            instance_id: None,
            session_ms: 10_000,
            protocol_type: "consumer",
            protocols: vec![("range", subscription(&["t"]))],
        }
    }

    fn request(&self) -> JoinGroupRequest {
        JoinGroupRequest {
            group_id: self.group.into(),
            session_timeout_ms: self.session_ms,
            rebalance_timeout_ms: 5_000,
            member_id: self.member_id.into(),
            group_instance_id: self.instance_id.map(String::from),
            protocol_type: self.protocol_type.into(),
            protocols: self
                .protocols
                .iter()
                .map(|(name, metadata)| JoinGroupRequestProtocol {
                    name: name.to_string(),
                    metadata: metadata.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// JoinGroup v5 (member id required round trip included): the final response.
fn join(conn: &mut Conn, j: Join) -> JoinGroupResponse {
    let first = conn.call(&j.request(), 5);
    if first.error_code != MEMBER_ID_REQUIRED {
        return first;
    }
    assert!(
        !first.member_id.is_empty(),
        "MEMBER_ID_REQUIRED hands out an id"
    );
    let member_id = first.member_id.clone();
    conn.call(
        &Join {
            member_id: &member_id,
            ..j
        }
        .request(),
        5,
    )
}

fn sync(
    conn: &mut Conn,
    group: &str,
    generation: i32,
    member_id: &str,
    assignments: &[(&str, &[u8])],
) -> SyncGroupResponse {
    conn.call(
        &SyncGroupRequest {
            group_id: group.into(),
            generation_id: generation,
            member_id: member_id.into(),
            assignments: assignments
                .iter()
                .map(|(m, a)| SyncGroupRequestAssignment {
                    member_id: m.to_string(),
                    assignment: Bytes::copy_from_slice(a),
                })
                .collect(),
            ..Default::default()
        },
        3,
    )
}

fn heartbeat(conn: &mut Conn, group: &str, generation: i32, member_id: &str) -> i16 {
    conn.call(
        &HeartbeatRequest {
            group_id: group.into(),
            generation_id: generation,
            member_id: member_id.into(),
            ..Default::default()
        },
        3,
    )
    .error_code
}

/// LeaveGroup v1 (what librdkafka sends): the single member's error.
fn leave_v1(conn: &mut Conn, group: &str, member_id: &str) -> i16 {
    conn.call(
        &LeaveGroupRequest {
            group_id: group.into(),
            member_id: member_id.into(),
            ..Default::default()
        },
        1,
    )
    .error_code
}

fn describe(conn: &mut Conn, group: &str) -> DescribeGroupsResponseDescribedGroup {
    let mut resp = conn.call(
        &DescribeGroupsRequest {
            groups: vec![group.into()],
            ..Default::default()
        },
        5,
    );
    assert_eq!(resp.groups.len(), 1);
    resp.groups.remove(0)
}

fn list(conn: &mut Conn, states: &[&str]) -> Vec<ListedGroup> {
    let resp = conn.call(
        &ListGroupsRequest {
            states_filter: states.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        4,
    );
    assert_eq!(resp.error_code, NONE);
    resp.groups
}

fn delete_group(conn: &mut Conn, group: &str) -> i16 {
    let resp = conn.call(
        &DeleteGroupsRequest {
            groups_names: vec![group.into()],
        },
        2,
    );
    resp.results[0].error_code
}

/// OffsetCommit v7 for one partition of topic "t".
fn commit(conn: &mut Conn, group: &str, generation: i32, member_id: &str, offset: i64) -> i16 {
    let resp = conn.call(
        &OffsetCommitRequest {
            group_id: group.into(),
            generation_id_or_member_epoch: generation,
            member_id: member_id.into(),
            topics: vec![OffsetCommitRequestTopic {
                name: "t".into(),
                partitions: vec![OffsetCommitRequestPartition {
                    partition_index: 0,
                    committed_offset: offset,
                    committed_leader_epoch: -1,
                    committed_metadata: Some("m".into()),
                }],
            }],
            ..Default::default()
        },
        7,
    );
    resp.topics[0].partitions[0].error_code
}

fn committed(conn: &mut Conn, group: &str) -> i64 {
    let resp = conn.call(
        &OffsetFetchRequest {
            group_id: group.into(),
            topics: Some(vec![OffsetFetchRequestTopic {
                name: "t".into(),
                partition_indexes: vec![0],
            }]),
            ..Default::default()
        },
        7,
    );
    assert_eq!(resp.error_code, NONE);
    resp.topics[0].partitions[0].committed_offset
}

/// One member's whole life: join (with the member-id round trip), sync, heartbeat, commit,
/// describe, list, survive a restart, leave, delete offsets, delete the group.
#[test]
fn single_member_lifecycle_and_restart() {
    let mut broker = broker_with(&[]);
    let mut conn = Conn::open(broker.addr());
    create_topic_ok(&mut conn, "t", 2);
    let g = "solo";

    let first = conn.call(&Join::new(g, "").request(), 5);
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    assert!(
        first.member_id.starts_with("broker-semantics-"),
        "{first:?}"
    );
    let joined = join(&mut conn, Join::new(g, ""));
    assert_eq!(joined.error_code, NONE, "{joined:?}");
    let me = joined.member_id.clone();
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader, me);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(joined.members.len(), 1, "the leader sees every member");
    assert_eq!(joined.members[0].metadata, subscription(&["t"]));

    let synced = sync(&mut conn, g, 1, &me, &[(&me, b"assignment-1")]);
    assert_eq!(synced.error_code, NONE);
    assert_eq!(&synced.assignment[..], b"assignment-1");

    assert_eq!(heartbeat(&mut conn, g, 1, &me), NONE);
    assert_eq!(heartbeat(&mut conn, g, 7, &me), ILLEGAL_GENERATION);
    assert_eq!(heartbeat(&mut conn, g, 1, "stranger"), UNKNOWN_MEMBER_ID);
    assert_eq!(
        heartbeat(&mut conn, "no-such-group", 1, &me),
        UNKNOWN_MEMBER_ID
    );

    assert_eq!(commit(&mut conn, g, 1, &me, 10), NONE);
    assert_eq!(commit(&mut conn, g, 0, &me, 11), ILLEGAL_GENERATION);
    assert_eq!(commit(&mut conn, g, 1, "stranger", 11), UNKNOWN_MEMBER_ID);
    assert_ne!(
        commit(&mut conn, g, -1, "", 11),
        NONE,
        "a simple commit to a group with members is refused"
    );
    assert_eq!(committed(&mut conn, g), 10);

    let d = describe(&mut conn, g);
    assert_eq!(d.error_code, NONE);
    assert_eq!(
        (
            d.group_state.as_str(),
            d.protocol_type.as_str(),
            d.protocol_data.as_str()
        ),
        ("Stable", "consumer", "range")
    );
    assert_eq!(d.members.len(), 1);
    let m = &d.members[0];
    assert_eq!(m.member_id, me);
    assert_eq!(m.client_id, "broker-semantics");
    assert_eq!(m.client_host, "/127.0.0.1");
    assert_eq!(m.member_metadata, subscription(&["t"]));
    assert_eq!(&m.member_assignment[..], b"assignment-1");

    assert!(list(&mut conn, &[]).iter().any(|l| l.group_id == g));
    let stable = list(&mut conn, &["stable"]);
    assert!(stable
        .iter()
        .any(|l| l.group_id == g && l.group_state == "Stable"));
    assert!(!list(&mut conn, &["Empty"]).iter().any(|l| l.group_id == g));
    assert_eq!(delete_group(&mut conn, g), NON_EMPTY_GROUP);

    // A restart keeps the member, its generation and its assignment.
    broker.restart();
    let mut conn = Conn::open(broker.addr());
    let d = describe(&mut conn, g);
    assert_eq!(d.group_state, "Stable", "{d:?}");
    assert_eq!(d.members[0].member_id, me);
    assert_eq!(&d.members[0].member_assignment[..], b"assignment-1");
    assert_eq!(heartbeat(&mut conn, g, 1, &me), NONE);
    assert_eq!(committed(&mut conn, g), 10);

    // OffsetDelete refuses a topic the live group subscribes to.
    let od = conn.call(
        &OffsetDeleteRequest {
            group_id: g.into(),
            topics: vec![OffsetDeleteRequestTopic {
                name: "t".into(),
                partitions: vec![OffsetDeleteRequestPartition { partition_index: 0 }],
            }],
        },
        0,
    );
    assert_eq!(od.error_code, NONE);
    assert_eq!(
        od.topics[0].partitions[0].error_code,
        GROUP_SUBSCRIBED_TO_TOPIC
    );

    assert_eq!(leave_v1(&mut conn, g, &me), NONE);
    assert_eq!(leave_v1(&mut conn, g, &me), UNKNOWN_MEMBER_ID);
    assert_eq!(describe(&mut conn, g).group_state, "Empty");

    // Empty now: the offsets can go.
    let od = conn.call(
        &OffsetDeleteRequest {
            group_id: g.into(),
            topics: vec![OffsetDeleteRequestTopic {
                name: "t".into(),
                partitions: vec![OffsetDeleteRequestPartition { partition_index: 0 }],
            }],
        },
        0,
    );
    assert_eq!(
        (od.error_code, od.topics[0].partitions[0].error_code),
        (NONE, NONE)
    );
    assert_eq!(committed(&mut conn, g), -1);
    assert_eq!(
        commit(&mut conn, g, -1, "", 5),
        NONE,
        "simple commit to an Empty group"
    );

    assert_eq!(delete_group(&mut conn, g), NONE);
    assert_eq!(describe(&mut conn, g).group_state, "Dead");
    assert_eq!(
        committed(&mut conn, g),
        -1,
        "deleting a group deletes its offsets"
    );
    assert_eq!(delete_group(&mut conn, g), GROUP_ID_NOT_FOUND);
    broker.restart();
    let mut conn = Conn::open(broker.addr());
    assert_eq!(
        describe(&mut conn, g).group_state,
        "Dead",
        "the deletion is durable"
    );
    assert_eq!(committed(&mut conn, g), -1);
    assert!(!list(&mut conn, &[]).iter().any(|l| l.group_id == g));
    broker.stop();
}

/// A second member's JoinGroup is parked until the first rejoins; the leader's SyncGroup
/// releases the follower's parked SyncGroup; a member that stops heartbeating is expired.
#[test]
fn rebalance_parks_joins_and_sessions_expire() {
    let mut broker = broker_with(&[]);
    let mut a = Conn::open(broker.addr());
    let mut b = Conn::open(broker.addr());
    create_topic_ok(&mut a, "t", 4);
    let g = "pair";

    let ja = join(
        &mut a,
        Join {
            session_ms: 1_000,
            ..Join::new(g, "")
        },
    );
    let id_a = ja.member_id.clone();
    assert_eq!(
        sync(&mut a, g, 1, &id_a, &[(&id_a, b"all")]).error_code,
        NONE
    );

    // B joins with JoinGroup v3 (no member-id round trip): parked until A rejoins.
    let b_join = b.send(
        &Join {
            session_ms: 1_000,
            ..Join::new(g, "")
        }
        .request(),
        3,
    );
    // B's join may reach the coordinating shard after A's next request: wait until it did.
    let mut admin = Conn::open(broker.addr());
    let deadline = Instant::now() + Duration::from_secs(10);
    while describe(&mut admin, g).group_state != "PreparingRebalance" {
        assert!(
            Instant::now() < deadline,
            "B's JoinGroup never started a rebalance"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(heartbeat(&mut a, g, 1, &id_a), REBALANCE_IN_PROGRESS);
    let ja2 = join(&mut a, Join::new(g, &id_a));
    let jb: JoinGroupResponse = b.recv(3, b_join);
    assert_eq!((ja2.error_code, jb.error_code), (NONE, NONE));
    assert_eq!(ja2.generation_id, 2);
    assert_eq!(jb.generation_id, 2);
    assert_eq!(ja2.leader, id_a, "the longest member stays leader");
    assert_eq!(ja2.members.len(), 2);
    assert!(jb.members.is_empty(), "followers do not see the members");
    let id_b = jb.member_id.clone();

    // B's SyncGroup waits for the leader's.
    let b_sync = b.send(
        &SyncGroupRequest {
            group_id: g.into(),
            generation_id: 2,
            member_id: id_b.clone(),
            ..Default::default()
        },
        3,
    );
    let sa = sync(&mut a, g, 2, &id_a, &[(&id_a, b"p0p1"), (&id_b, b"p2p3")]);
    let sb: SyncGroupResponse = b.recv(3, b_sync);
    assert_eq!((sa.error_code, sb.error_code), (NONE, NONE));
    assert_eq!(
        (&sa.assignment[..], &sb.assignment[..]),
        (&b"p0p1"[..], &b"p2p3"[..])
    );
    assert_eq!(commit(&mut b, g, 1, &id_b, 3), ILLEGAL_GENERATION);
    assert_eq!(commit(&mut b, g, 2, &id_b, 3), NONE);

    // B goes silent; A keeps heartbeating and is told to rejoin once B's session expired.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let code = heartbeat(&mut a, g, 2, &id_a);
        if code == REBALANCE_IN_PROGRESS {
            break;
        }
        assert_eq!(code, NONE);
        assert!(Instant::now() < deadline, "B's session never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    let ja3 = join(&mut a, Join::new(g, &id_a));
    assert_eq!((ja3.error_code, ja3.generation_id), (NONE, 3));
    assert_eq!(ja3.members.len(), 1, "B was removed: {ja3:?}");
    assert_eq!(heartbeat(&mut b, g, 2, &id_b), UNKNOWN_MEMBER_ID);
    broker.stop();
}

/// Static membership: a new instance with the same `group.instance.id` takes the old member's
/// place without a rebalance, and the old member id is fenced.
#[test]
fn static_member_replacement_fences_the_old_instance() {
    let mut broker = broker_with(&[]);
    let mut conn = Conn::open(broker.addr());
    create_topic_ok(&mut conn, "t", 2);
    let g = "static";
    let j = join(
        &mut conn,
        Join {
            instance_id: Some("host-1"),
            ..Join::new(g, "")
        },
    );
    assert_eq!(j.error_code, NONE, "{j:?}");
    let old = j.member_id.clone();
    assert!(
        old.starts_with("host-1-"),
        "static member ids start with the instance id: {old}"
    );
    assert_eq!(
        sync(&mut conn, g, 1, &old, &[(&old, b"mine")]).error_code,
        NONE
    );

    let mut again = Conn::open(broker.addr());
    let j2 = again.call(
        &Join {
            instance_id: Some("host-1"),
            ..Join::new(g, "")
        }
        .request(),
        5,
    );
    assert_eq!(j2.error_code, NONE, "{j2:?}");
    assert_eq!(j2.generation_id, 1, "no rebalance");
    assert_ne!(j2.member_id, old);
    let s2 = sync(&mut again, g, 1, &j2.member_id, &[]);
    assert_eq!(
        &s2.assignment[..],
        b"mine",
        "the replacement keeps the assignment"
    );
    let fenced = conn.call(
        &HeartbeatRequest {
            group_id: g.into(),
            generation_id: 1,
            member_id: old,
            group_instance_id: Some("host-1".into()),
        },
        3,
    );
    assert_eq!(fenced.error_code, FENCED_INSTANCE_ID);
    assert_eq!(describe(&mut conn, g).group_state, "Stable");

    // The replacement was durable before it was answered: it survives kill -9.
    broker.kill9();
    broker.start_again();
    let mut conn = Conn::open(broker.addr());
    let d = describe(&mut conn, g);
    assert_eq!(d.group_state, "Stable");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id, j2.member_id);
    assert_eq!(d.members[0].group_instance_id.as_deref(), Some("host-1"));
    assert_eq!(&d.members[0].member_assignment[..], b"mine");
    broker.stop();
}

/// Requests a coordinator refuses, with the error Kafka gives.
#[test]
fn bad_group_requests_get_kafka_errors() {
    let mut broker = broker_with(&[("group.max.size", "1")]);
    let mut conn = Conn::open(broker.addr());
    create_topic_ok(&mut conn, "t", 1);

    assert_eq!(
        join(&mut conn, Join::new("", "")).error_code,
        INVALID_GROUP_ID
    );
    let too_short = Join {
        session_ms: 10,
        ..Join::new("g", "")
    };
    assert_eq!(
        join(&mut conn, too_short).error_code,
        INVALID_SESSION_TIMEOUT
    );
    let too_long = Join {
        session_ms: i32::MAX,
        ..Join::new("g", "")
    };
    assert_eq!(
        join(&mut conn, too_long).error_code,
        INVALID_SESSION_TIMEOUT
    );
    let no_protocols = Join {
        protocols: Vec::new(),
        ..Join::new("g", "")
    };
    assert_eq!(
        join(&mut conn, no_protocols).error_code,
        INCONSISTENT_GROUP_PROTOCOL
    );
    let huge = Join {
        protocols: vec![("range", Bytes::from(vec![7u8; 512 * 1024]))],
        ..Join::new("g", "")
    };
    assert_eq!(
        join(&mut conn, huge).error_code,
        INVALID_REQUEST,
        "metadata is bounded"
    );
    assert_eq!(
        join(&mut conn, Join::new("g", "made-up-id")).error_code,
        UNKNOWN_MEMBER_ID
    );

    let first = join(&mut conn, Join::new("g", ""));
    assert_eq!(first.error_code, NONE);
    let mut other = Conn::open(broker.addr());
    assert_eq!(
        join(&mut other, Join::new("g", "")).error_code,
        GROUP_MAX_SIZE_REACHED,
        "group.max.size=1"
    );
    assert_eq!(
        sync(&mut other, "g", 1, "nobody", &[]).error_code,
        UNKNOWN_MEMBER_ID
    );
    // The broker is still serving the member that behaved.
    assert_eq!(heartbeat(&mut conn, "g", 1, &first.member_id), NONE);
    assert!(broker.is_running());
    broker.stop();

    // Protocol mismatches, on a broker without the size limit (it is checked first, as in Kafka).
    let mut broker = broker_with(&[]);
    let mut conn = Conn::open(broker.addr());
    create_topic_ok(&mut conn, "t", 1);
    assert_eq!(join(&mut conn, Join::new("g", "")).error_code, NONE);
    let mut other = Conn::open(broker.addr());
    let other_type = Join {
        protocol_type: "connect",
        ..Join::new("g", "")
    };
    assert_eq!(
        join(&mut other, other_type).error_code,
        INCONSISTENT_GROUP_PROTOCOL
    );
    let no_common = Join {
        protocols: vec![("roundrobin", subscription(&["t"]))],
        ..Join::new("g", "")
    };
    assert_eq!(
        join(&mut other, no_common).error_code,
        INCONSISTENT_GROUP_PROTOCOL
    );
    assert_eq!(describe(&mut conn, "g").members.len(), 1);
    broker.stop();
}

/// OffsetCommit v2 with a retention time: the offset expires then (v1 record, as Kafka); offsets
/// without one follow `offsets.retention.minutes`; an empty group without offsets is removed by
/// the periodic cleanup. Expiry is durable.
#[test]
fn committed_offsets_expire_and_empty_groups_are_removed() {
    let mut broker = broker_with(&[("offsets.retention.check.interval.ms", "200")]);
    let mut conn = Conn::open(broker.addr());
    create_topic_ok(&mut conn, "t", 1);
    let commit_v2 = |conn: &mut Conn, group: &str, retention_ms: i64| {
        let resp = conn.call(
            &OffsetCommitRequest {
                group_id: group.into(),
                generation_id_or_member_epoch: -1,
                retention_time_ms: retention_ms,
                topics: vec![OffsetCommitRequestTopic {
                    name: "t".into(),
                    partitions: vec![OffsetCommitRequestPartition {
                        partition_index: 0,
                        committed_offset: 42,
                        committed_leader_epoch: -1,
                        committed_metadata: Some(String::new()),
                    }],
                }],
                ..Default::default()
            },
            2,
        );
        resp.topics[0].partitions[0].error_code
    };
    assert_eq!(commit_v2(&mut conn, "short", 300), NONE);
    assert_eq!(commit_v2(&mut conn, "default", -1), NONE);
    assert_eq!(committed(&mut conn, "short"), 42);

    // A group that had a member and no offsets.
    let j = join(&mut conn, Join::new("idle", ""));
    assert_eq!(j.error_code, NONE);
    assert_eq!(leave_v1(&mut conn, "idle", &j.member_id), NONE);

    let deadline = Instant::now() + Duration::from_secs(10);
    while committed(&mut conn, "short") != -1 || describe(&mut conn, "idle").group_state != "Dead" {
        assert!(
            Instant::now() < deadline,
            "offset with 300 ms retention or the empty group still there after 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        committed(&mut conn, "default"),
        42,
        "default retention is 7 days"
    );
    broker.restart();
    let mut conn = Conn::open(broker.addr());
    assert_eq!(committed(&mut conn, "short"), -1, "the expiry is durable");
    assert_eq!(committed(&mut conn, "default"), 42);
    assert_eq!(describe(&mut conn, "idle").group_state, "Dead");
    broker.stop();
}
