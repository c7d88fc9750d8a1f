//! The KIP-848 consumer-group protocol over raw TCP against a real `odradek serve`:
//! ConsumerGroupHeartbeat (join, converge with revoke-before-assign, leave), ConsumerGroupDescribe,
//! offset commits checked against member epochs, groups of both types side by side, a group
//! surviving `kill -9`, and the errors Kafka answers for bad requests.
//!
//! librdkafka with `group.protocol=consumer` is driven in `client_groups.rs`; this file pins
//! down the wire behaviour.

mod common;
mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Broker, BrokerOptions};
use odradek::protocol::messages::*;
use wire::{create_topic_ok, Conn};

const NONE: i16 = 0;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const INVALID_GROUP_ID: i16 = 24;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_REQUEST: i16 = 42;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const UNKNOWN_TOPIC_ID: i16 = 100;
const FENCED_MEMBER_EPOCH: i16 = 110;
const UNSUPPORTED_ASSIGNOR: i16 = 112;
const STALE_MEMBER_EPOCH: i16 = 113;
const INVALID_REGULAR_EXPRESSION: i16 = 128;

const TOPIC: &str = "t";
const PARTITIONS: i32 = 4;

/// A broker on two shards with short consumer-group sessions, so expiry is testable.
fn broker() -> Broker {
    BrokerOptions::new()
        .cores("2")
        .set("group.initial.rebalance.delay.ms", 0)
        .set("group.consumer.session.timeout.ms", 1500)
        .set("group.consumer.heartbeat.interval.ms", 200)
        .start()
}

/// A well-behaved member: it owns exactly what the last assignment said, at once.
#[derive(Debug, Clone)]
struct Member {
    id: String,
    epoch: i32,
    owned: BTreeSet<i32>,
}

impl Member {
    fn new(id: &str) -> Self {
        Member {
            id: id.into(),
            epoch: 0,
            owned: BTreeSet::new(),
        }
    }
}

fn owned_list(
    topic_id: [u8; 16],
    owned: &BTreeSet<i32>,
) -> Vec<ConsumerGroupHeartbeatRequestTopicPartitions> {
    if owned.is_empty() {
        return Vec::new();
    }
    vec![ConsumerGroupHeartbeatRequestTopicPartitions {
        topic_id,
        partitions: owned.iter().copied().collect(),
    }]
}

/// The join heartbeat (epoch 0) of `m` subscribing to [`TOPIC`], v1 (member id chosen by the
/// client, KIP-1082).
fn join_request(group: &str, m: &Member) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest {
        group_id: group.into(),
        member_id: m.id.clone(),
        member_epoch: 0,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(vec![TOPIC.into()]),
        topic_partitions: Some(Vec::new()),
        ..Default::default()
    }
}

/// Sends `req` for `m` and applies a successful answer to the model.
fn send(
    conn: &mut Conn,
    m: &mut Member,
    req: &ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let resp = conn.call(req, 1);
    if resp.error_code == NONE {
        if let Some(id) = &resp.member_id {
            m.id.clone_from(id);
        }
        m.epoch = resp.member_epoch;
        if let Some(a) = &resp.assignment {
            m.owned = a
                .topic_partitions
                .iter()
                .flat_map(|tp| tp.partitions.iter().copied())
                .collect();
        }
    }
    resp
}

fn join(conn: &mut Conn, group: &str, m: &mut Member) -> ConsumerGroupHeartbeatResponse {
    let req = join_request(group, m);
    send(conn, m, &req)
}

/// A regular heartbeat: the member's epoch and what it owns.
fn beat(
    conn: &mut Conn,
    group: &str,
    topic_id: [u8; 16],
    m: &mut Member,
) -> ConsumerGroupHeartbeatResponse {
    let req = ConsumerGroupHeartbeatRequest {
        group_id: group.into(),
        member_id: m.id.clone(),
        member_epoch: m.epoch,
        topic_partitions: Some(owned_list(topic_id, &m.owned)),
        ..Default::default()
    };
    send(conn, m, &req)
}

fn describe(conn: &mut Conn, group: &str) -> ConsumerGroupDescribeResponseDescribedGroup {
    let mut resp = conn.call(
        &ConsumerGroupDescribeRequest {
            group_ids: vec![group.into()],
            include_authorized_operations: false,
        },
        1,
    );
    assert_eq!(resp.groups.len(), 1);
    resp.groups.remove(0)
}

/// Heartbeats every member until the group is Stable and their owned sets cover every partition
/// once.
fn settle(conn: &mut Conn, group: &str, topic_id: [u8; 16], members: &mut [Member]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for m in members.iter_mut() {
            let r = beat(conn, group, topic_id, m);
            assert_eq!(r.error_code, NONE, "heartbeat of {}: {r:?}", m.id);
        }
        let union: Vec<i32> = members
            .iter()
            .flat_map(|m| m.owned.iter().copied())
            .collect();
        let distinct: BTreeSet<i32> = union.iter().copied().collect();
        if describe(conn, group).group_state == "Stable"
            && union.len() == PARTITIONS as usize
            && distinct.len() == PARTITIONS as usize
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group did not settle: {members:?}"
        );
    }
}

fn commit(conn: &mut Conn, group: &str, member_id: &str, epoch: i32, offset: i64) -> i16 {
    let resp = conn.call(
        &OffsetCommitRequest {
            group_id: group.into(),
            generation_id_or_member_epoch: epoch,
            member_id: member_id.into(),
            topics: vec![OffsetCommitRequestTopic {
                name: TOPIC.into(),
                partitions: vec![OffsetCommitRequestPartition {
                    partition_index: 0,
                    committed_offset: offset,
                    committed_metadata: Some("m".into()),
                    ..Default::default()
                }],
            }],
            ..Default::default()
        },
        9,
    );
    resp.topics[0].partitions[0].error_code
}

fn list(conn: &mut Conn, types: &[&str]) -> BTreeMap<String, (String, String)> {
    let resp = conn.call(
        &ListGroupsRequest {
            states_filter: Vec::new(),
            types_filter: types.iter().map(|t| t.to_string()).collect(),
        },
        5,
    );
    assert_eq!(resp.error_code, NONE);
    resp.groups
        .into_iter()
        .map(|g| (g.group_id, (g.group_type, g.group_state)))
        .collect()
}

/// Two members converge with revoke-before-assign; ConsumerGroupDescribe, commits checked
/// against member epochs, a leave, DeleteGroups only once the group is empty.
#[test]
fn members_converge_describe_commit_leave_and_delete() {
    let mut broker = broker();
    let mut conn = Conn::open(broker.addr());
    let topic_id = create_topic_ok(&mut conn, TOPIC, PARTITIONS);
    let g = "cg";

    // v0 join with an empty member id: the coordinator names the member.
    let mut a = Member::new("");
    let first = conn.call(
        &ConsumerGroupHeartbeatRequest {
            member_id: String::new(),
            ..join_request(g, &a)
        },
        0,
    );
    assert_eq!(first.error_code, NONE, "{first:?}");
    let generated = first.member_id.clone().expect("a generated member id");
    assert!(!generated.is_empty());
    a.id = generated;
    a.epoch = first.member_epoch;
    a.owned = first
        .assignment
        .expect("the first member gets an assignment")
        .topic_partitions
        .iter()
        .flat_map(|tp| {
            assert_eq!(tp.topic_id, topic_id);
            tp.partitions.clone()
        })
        .collect();
    assert_eq!(a.epoch, 1);
    assert_eq!(
        a.owned,
        (0..PARTITIONS).collect(),
        "alone, it owns everything"
    );
    assert!(first.heartbeat_interval_ms > 0);

    // A second member (v1, its own id): it gets nothing until `a` has revoked.
    let mut b = Member::new("member-b");
    let jb = join(&mut conn, g, &mut b);
    assert_eq!(
        (jb.error_code, jb.member_id.as_deref()),
        (NONE, Some("member-b")),
        "{jb:?}"
    );
    assert_eq!(b.epoch, 2, "the join bumped the group epoch");
    assert!(b.owned.is_empty(), "partitions still owned by a: {jb:?}");
    let d = describe(&mut conn, g);
    assert_eq!(d.group_state, "Reconciling", "{d:?}");

    // `a` is asked to revoke (epoch unchanged until it reports the partitions gone).
    let ra = beat(&mut conn, g, topic_id, &mut a);
    assert_eq!(ra.error_code, NONE);
    assert_eq!(a.epoch, 1, "still revoking");
    assert_eq!(a.owned.len(), 2, "keeps half: {ra:?}");
    let mut both = [a, b];
    settle(&mut conn, g, topic_id, &mut both);
    let [a, b] = both;
    assert_eq!((a.epoch, b.epoch), (2, 2));
    assert_eq!(a.owned.len() + b.owned.len(), PARTITIONS as usize);
    assert!(a.owned.is_disjoint(&b.owned));

    let d = describe(&mut conn, g);
    assert_eq!(d.error_code, NONE);
    assert_eq!(d.group_state, "Stable");
    assert_eq!((d.group_epoch, d.assignment_epoch), (2, 2));
    assert_eq!(d.assignor_name, "uniform");
    assert_eq!(d.members.len(), 2);
    for m in &d.members {
        let model = if m.member_id == a.id { &a } else { &b };
        let assigned: BTreeSet<i32> = m
            .assignment
            .topic_partitions
            .iter()
            .flat_map(|tp| {
                assert_eq!((tp.topic_id, tp.topic_name.as_str()), (topic_id, TOPIC));
                tp.partitions.clone()
            })
            .collect();
        assert_eq!(assigned, model.owned, "{m:?}");
        assert_eq!(m.member_epoch, 2);
        assert_eq!(m.subscribed_topic_names, vec![TOPIC.to_string()]);
        assert_eq!(m.client_id, "broker-semantics");
        assert_eq!(m.client_host, "/127.0.0.1");
        assert_eq!(m.member_type, 1);
    }

    // Commits: at the member's epoch only.
    assert_eq!(commit(&mut conn, g, &a.id, 2, 10), NONE);
    assert_eq!(commit(&mut conn, g, &a.id, 1, 10), STALE_MEMBER_EPOCH);
    assert_eq!(commit(&mut conn, g, &a.id, 3, 10), FENCED_MEMBER_EPOCH);
    assert_eq!(commit(&mut conn, g, "nobody", 2, 10), UNKNOWN_MEMBER_ID);
    assert_eq!(
        commit(&mut conn, g, "", -1, 10),
        UNKNOWN_MEMBER_ID,
        "not while it has members"
    );

    // The group is listed as a consumer group, and DeleteGroups refuses it while it has members.
    let listed = list(&mut conn, &[]);
    assert_eq!(listed[g], ("consumer".to_string(), "Stable".to_string()));
    assert!(!list(&mut conn, &["classic"]).contains_key(g));
    assert!(
        list(&mut conn, &["Consumer"]).contains_key(g),
        "types match case-insensitively"
    );
    let del = conn.call(
        &DeleteGroupsRequest {
            groups_names: vec![g.into()],
        },
        2,
    );
    assert_eq!(del.results[0].error_code, NON_EMPTY_GROUP);

    // Both leave (epoch -1): Empty; a simple commit is accepted now; then the group can go.
    for m in [&a, &b] {
        let r = conn.call(
            &ConsumerGroupHeartbeatRequest {
                group_id: g.into(),
                member_id: m.id.clone(),
                member_epoch: -1,
                ..Default::default()
            },
            1,
        );
        assert_eq!((r.error_code, r.member_epoch), (NONE, -1), "{r:?}");
    }
    assert_eq!(describe(&mut conn, g).group_state, "Empty");
    assert_eq!(commit(&mut conn, g, "", -1, 20), NONE);
    let del = conn.call(
        &DeleteGroupsRequest {
            groups_names: vec![g.into()],
        },
        2,
    );
    assert_eq!(del.results[0].error_code, NONE);
    assert_eq!(describe(&mut conn, g).error_code, GROUP_ID_NOT_FOUND);
    assert!(!list(&mut conn, &[]).contains_key(g));
    broker.stop();
}

/// A group's members, epochs and assignments are durable before they are answered: after
/// `kill -9` the group is back as it was and its members carry on at their epochs; committed
/// offsets too.
#[test]
fn consumer_group_survives_kill9() {
    let mut broker = BrokerOptions::new()
        .cores("2")
        .set("group.consumer.heartbeat.interval.ms", 200)
        .start();
    let mut conn = Conn::open(broker.addr());
    let topic_id = create_topic_ok(&mut conn, TOPIC, PARTITIONS);
    let g = "durable-cg";
    let (mut a, mut b) = (Member::new("a"), Member::new("b"));
    assert_eq!(join(&mut conn, g, &mut a).error_code, NONE);
    assert_eq!(join(&mut conn, g, &mut b).error_code, NONE);
    let mut members = [a, b];
    settle(&mut conn, g, topic_id, &mut members);
    for m in members.iter_mut() {
        beat(&mut conn, g, topic_id, m);
    }
    assert_eq!(
        commit(&mut conn, g, &members[0].id, members[0].epoch, 42),
        NONE
    );
    let before = describe(&mut conn, g);

    broker.kill9();
    broker.start_again();
    let mut conn = Conn::open(broker.addr());
    let after = describe(&mut conn, g);
    assert_eq!(after, before, "the group as it was before kill -9");
    for m in members.iter_mut() {
        let owned = m.owned.clone();
        let r = beat(&mut conn, g, topic_id, m);
        assert_eq!(
            r.error_code, NONE,
            "{} carries on after the restart: {r:?}",
            m.id
        );
        assert_eq!(m.owned, owned, "{} keeps its partitions", m.id);
    }
    let fetched = conn.call(
        &OffsetFetchRequest {
            groups: vec![OffsetFetchRequestGroup {
                group_id: g.into(),
                topics: None,
                ..Default::default()
            }],
            ..Default::default()
        },
        9,
    );
    let p = &fetched.groups[0].topics[0].partitions[0];
    assert_eq!((p.partition_index, p.committed_offset), (0, 42));
    broker.stop();
}

/// Classic and consumer groups side by side: one group id is one group, refused to members of
/// the other protocol; each kind described by its own API.
#[test]
fn classic_and_consumer_groups_coexist() {
    let mut broker = broker();
    let mut conn = Conn::open(broker.addr());
    let topic_id = create_topic_ok(&mut conn, TOPIC, PARTITIONS);
    let mut m = Member::new("m");
    assert_eq!(join(&mut conn, "new-style", &mut m).error_code, NONE);

    // A classic member cannot join the consumer group.
    let classic_join = JoinGroupRequest {
        group_id: "new-style".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 5_000,
        member_id: "x".into(),
        protocol_type: "consumer".into(),
        protocols: vec![JoinGroupRequestProtocol {
            name: "range".into(),
            metadata: bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 0, 255, 255, 255, 255]),
        }],
        ..Default::default()
    };
    assert_eq!(
        conn.call(&classic_join, 5).error_code,
        INCONSISTENT_GROUP_PROTOCOL
    );
    // DescribeGroups (classic) says Dead, as Kafka does for a group of the other type.
    let dg = conn.call(
        &DescribeGroupsRequest {
            groups: vec!["new-style".into()],
            ..Default::default()
        },
        5,
    );
    assert_eq!(dg.groups[0].group_state, "Dead");

    // A live classic group: ConsumerGroupDescribe and a consumer join are refused.
    let classic = JoinGroupRequest {
        group_id: "old-style".into(),
        member_id: String::new(),
        ..classic_join.clone()
    };
    let first = conn.call(&classic, 5);
    let joined = conn.call(
        &JoinGroupRequest {
            member_id: first.member_id.clone(),
            ..classic.clone()
        },
        5,
    );
    assert_eq!(joined.error_code, NONE, "{joined:?}");
    let d = describe(&mut conn, "old-style");
    assert_eq!(d.error_code, GROUP_ID_NOT_FOUND);
    assert!(d
        .error_message
        .is_some_and(|m| m.contains("not a consumer group")));
    let mut intruder = Member::new("intruder");
    assert_eq!(
        join(&mut conn, "old-style", &mut intruder).error_code,
        GROUP_ID_NOT_FOUND
    );

    let listed = list(&mut conn, &[]);
    assert_eq!(listed["new-style"].0, "consumer");
    assert_eq!(listed["old-style"].0, "classic");
    assert_eq!(list(&mut conn, &["consumer"]).len(), 1);

    // Metadata by topic id (what KIP-848 clients ask for their assignment's topics).
    let md = conn.call(
        &MetadataRequest {
            topics: Some(vec![
                MetadataRequestTopic {
                    topic_id,
                    name: None,
                },
                MetadataRequestTopic {
                    topic_id: [9; 16],
                    name: None,
                },
            ]),
            allow_auto_topic_creation: false,
            ..Default::default()
        },
        12,
    );
    assert_eq!(md.topics[0].error_code, NONE);
    assert_eq!(md.topics[0].name.as_deref(), Some(TOPIC));
    assert_eq!(md.topics[0].partitions.len(), PARTITIONS as usize);
    assert_eq!(
        (md.topics[1].error_code, md.topics[1].topic_id),
        (UNKNOWN_TOPIC_ID, [9; 16])
    );
    broker.stop();
}

/// Requests a coordinator refuses, with Kafka's errors; a silent member is removed when its
/// session times out and its partitions go to the others.
#[test]
fn bad_heartbeats_get_kafka_errors_and_silent_members_expire() {
    let mut broker = broker();
    let mut conn = Conn::open(broker.addr());
    let topic_id = create_topic_ok(&mut conn, TOPIC, PARTITIONS);
    let g = "strict";
    let mut m = Member::new("m");

    let mut bad = join_request("", &m);
    assert_eq!(
        conn.call(&bad, 1).error_code,
        INVALID_GROUP_ID,
        "empty group id"
    );
    bad = ConsumerGroupHeartbeatRequest {
        subscribed_topic_names: None,
        ..join_request(g, &m)
    };
    assert_eq!(
        conn.call(&bad, 1).error_code,
        INVALID_REQUEST,
        "join without a subscription"
    );
    bad = ConsumerGroupHeartbeatRequest {
        subscribed_topic_regex: Some("t(".into()),
        ..join_request(g, &m)
    };
    assert_eq!(conn.call(&bad, 1).error_code, INVALID_REGULAR_EXPRESSION);
    bad = ConsumerGroupHeartbeatRequest {
        server_assignor: Some("sticky".into()),
        ..join_request(g, &m)
    };
    assert_eq!(conn.call(&bad, 1).error_code, UNSUPPORTED_ASSIGNOR);
    bad = ConsumerGroupHeartbeatRequest {
        member_epoch: 5,
        ..join_request(g, &m)
    };
    assert_eq!(
        conn.call(&bad, 1).error_code,
        GROUP_ID_NOT_FOUND,
        "no such group yet"
    );
    assert_eq!(
        describe(&mut conn, g).error_code,
        GROUP_ID_NOT_FOUND,
        "failed joins create nothing"
    );

    // A real group; then bad epochs and unknown members.
    assert_eq!(join(&mut conn, g, &mut m).error_code, NONE);
    let mut ghost = Member {
        id: "ghost".into(),
        epoch: 1,
        owned: BTreeSet::new(),
    };
    assert_eq!(
        beat(&mut conn, g, topic_id, &mut ghost).error_code,
        UNKNOWN_MEMBER_ID
    );
    let mut ahead = Member {
        epoch: m.epoch + 5,
        ..m.clone()
    };
    assert_eq!(
        beat(&mut conn, g, topic_id, &mut ahead).error_code,
        FENCED_MEMBER_EPOCH
    );

    // `m` keeps heartbeating; `silent` joins, gets partitions, then goes quiet.
    let mut silent = Member::new("silent");
    assert_eq!(join(&mut conn, g, &mut silent).error_code, NONE);
    let mut both = [m, silent];
    settle(&mut conn, g, topic_id, &mut both);
    let [mut m, mut silent] = both;
    beat(&mut conn, g, topic_id, &mut silent);
    assert!(!silent.owned.is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.owned.len() < PARTITIONS as usize {
        std::thread::sleep(Duration::from_millis(100));
        let r = beat(&mut conn, g, topic_id, &mut m);
        assert_eq!(r.error_code, NONE, "{r:?}");
        assert!(
            Instant::now() < deadline,
            "silent member never expired: {:?}",
            describe(&mut conn, g)
        );
    }
    let d = describe(&mut conn, g);
    assert_eq!(d.members.len(), 1, "{d:?}");
    assert_eq!(
        beat(&mut conn, g, topic_id, &mut silent).error_code,
        UNKNOWN_MEMBER_ID
    );
    broker.stop();
}

/// A regex subscription (what librdkafka sends for `^pattern` topics): the member gets the
/// partitions of every topic whose whole name matches, internal topics left out, and a matching
/// topic created later at its next heartbeat; ConsumerGroupDescribe shows the regex.
#[test]
fn regex_subscription_follows_matching_topics() {
    let mut broker = broker();
    let mut conn = Conn::open(broker.addr());
    let a = create_topic_ok(&mut conn, "orders-eu", 2);
    create_topic_ok(&mut conn, "payments", 3);
    let g = "regex-group";
    let mut m = Member::new("m");
    let join = ConsumerGroupHeartbeatRequest {
        subscribed_topic_names: Some(Vec::new()),
        subscribed_topic_regex: Some("orders-.*|__.*".into()),
        ..join_request(g, &m)
    };
    let r = send(&mut conn, &mut m, &join);
    assert_eq!(r.error_code, NONE, "{r:?}");
    let topics: Vec<[u8; 16]> = r
        .assignment
        .expect("an assignment")
        .topic_partitions
        .iter()
        .map(|tp| tp.topic_id)
        .collect();
    assert_eq!(
        topics,
        vec![a],
        "orders-eu only: not payments, not __consumer_offsets"
    );
    assert_eq!(m.owned.len(), 2);

    let b = create_topic_ok(&mut conn, "orders-us", 4);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let req = ConsumerGroupHeartbeatRequest {
            group_id: g.into(),
            member_id: m.id.clone(),
            member_epoch: m.epoch,
            topic_partitions: Some(owned_list(a, &m.owned)),
            ..Default::default()
        };
        let r = conn.call(&req, 1);
        assert_eq!(r.error_code, NONE, "{r:?}");
        m.epoch = r.member_epoch;
        if let Some(asg) = r.assignment {
            let ids: BTreeSet<[u8; 16]> =
                asg.topic_partitions.iter().map(|tp| tp.topic_id).collect();
            let n: usize = asg
                .topic_partitions
                .iter()
                .map(|tp| tp.partitions.len())
                .sum();
            if ids == BTreeSet::from([a, b]) && n == 6 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "orders-us never joined the subscription"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let d = describe(&mut conn, g);
    assert_eq!(
        d.members[0].subscribed_topic_regex.as_deref(),
        Some("orders-.*|__.*")
    );
    assert!(d.members[0].subscribed_topic_names.is_empty());
    broker.stop();
}
