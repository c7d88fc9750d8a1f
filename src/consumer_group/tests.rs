//! Scenario tests for [`ConsumerGroupMachine`] with a fake clock and a model of well-behaved
//! clients: every transition of the KIP-848 protocol, driven the way the heartbeat handler will
//! drive it.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

const SESSION_MS: u64 = 45_000;
const INTERVAL_MS: u64 = 5_000;
const REBALANCE_MS: i32 = 10_000;

const FOO: TopicId = TopicId([1; 16]);
const BAR: TopicId = TopicId([2; 16]);

struct Topics(BTreeMap<String, (TopicId, u32)>);

impl TopicView for Topics {
    fn topic(&self, name: &str) -> Option<(TopicId, u32)> {
        self.0.get(name).copied()
    }
    fn topic_name(&self, id: TopicId) -> Option<&str> {
        self.0
            .iter()
            .find(|(_, (i, _))| *i == id)
            .map(|(n, _)| n.as_str())
    }
    fn topic_names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct Counter(u64);

impl MemberIdSource for Counter {
    fn new_member_id(&mut self) -> String {
        self.0 += 1;
        format!("generated-{}", self.0)
    }
}

/// What a well-behaved client knows: its epoch and the partitions it owns (it takes every
/// assignment it receives at once, revoking included).
#[derive(Debug, Clone, Default)]
struct Client {
    epoch: i32,
    owned: Assignment,
    instance_id: Option<String>,
}

struct Harness {
    group: ConsumerGroupMachine,
    now_ms: u64,
    topics: Topics,
    ids: Counter,
    clients: BTreeMap<String, Client>,
    /// Every Persist effect, in order.
    persisted: Vec<ConsumerGroupSnapshot>,
    /// The driver's one timer.
    timer_at_ms: Option<u64>,
}

fn config() -> ConsumerGroupConfig {
    ConsumerGroupConfig {
        session_timeout_ms: SESSION_MS,
        heartbeat_interval_ms: INTERVAL_MS,
        max_size: 10,
        ..ConsumerGroupConfig::default()
    }
}

fn parts(list: &[(TopicId, &[i32])]) -> Assignment {
    let mut a = Assignment::new();
    for (t, ps) in list {
        if !ps.is_empty() {
            a.entry(*t).or_default().extend(ps.iter().copied());
        }
    }
    a
}

fn count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

fn join_req(member_id: &str, topics: &[&str]) -> HeartbeatRequest {
    HeartbeatRequest {
        member_id: member_id.to_owned(),
        member_epoch: 0,
        rebalance_timeout_ms: REBALANCE_MS,
        subscribed_topic_names: Some(topics.iter().map(|t| (*t).to_owned()).collect()),
        topic_partitions: Some(Vec::new()),
        client_id: "client".to_owned(),
        client_host: "/10.0.0.1".to_owned(),
        ..HeartbeatRequest::default()
    }
}

fn err(r: &HeartbeatResponse) -> Option<i16> {
    r.error.map(ConsumerGroupError::code)
}

impl Harness {
    fn new() -> Self {
        Harness::with(config())
    }

    fn with(config: ConsumerGroupConfig) -> Self {
        Harness {
            group: ConsumerGroupMachine::new("g", config),
            now_ms: 1_000,
            topics: Topics(BTreeMap::from([
                ("foo".to_owned(), (FOO, 6)),
                ("bar".to_owned(), (BAR, 3)),
            ])),
            ids: Counter(0),
            clients: BTreeMap::new(),
            persisted: Vec::new(),
            timer_at_ms: None,
        }
    }

    fn record(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Persist { snapshot } => self.persisted.push(snapshot),
                Effect::ScheduleTimer { at_ms } => self.timer_at_ms = Some(at_ms),
            }
        }
    }

    /// Sends a raw request; updates the client model from a successful answer.
    fn send(&mut self, req: HeartbeatRequest) -> HeartbeatResponse {
        let (resp, effects) =
            self.group
                .heartbeat(self.now_ms, req.clone(), &self.topics, &mut self.ids);
        self.record(effects);
        if resp.error.is_none() {
            let id = resp.member_id.clone().unwrap_or_default();
            if req.member_epoch < 0 {
                self.clients.remove(&id);
            } else {
                let client = self.clients.entry(id).or_default();
                client.epoch = resp.member_epoch;
                if req.instance_id.is_some() {
                    client.instance_id.clone_from(&req.instance_id);
                }
                if let Some(a) = &resp.assignment {
                    client.owned = from_topic_partitions(a);
                }
            }
        }
        resp
    }

    fn join(&mut self, member_id: &str, topics: &[&str]) -> HeartbeatResponse {
        let resp = self.send(join_req(member_id, topics));
        assert_eq!(resp.error, None, "join of {member_id}");
        resp
    }

    fn join_static(
        &mut self,
        member_id: &str,
        instance: &str,
        topics: &[&str],
    ) -> HeartbeatResponse {
        self.send(HeartbeatRequest {
            instance_id: Some(instance.to_owned()),
            ..join_req(member_id, topics)
        })
    }

    /// A regular heartbeat from the modelled client: its epoch and what it owns.
    fn beat(&mut self, member_id: &str) -> HeartbeatResponse {
        let client = self.clients[member_id].clone();
        self.send(HeartbeatRequest {
            member_id: member_id.to_owned(),
            member_epoch: client.epoch,
            instance_id: client.instance_id.clone(),
            topic_partitions: Some(to_topic_partitions(&client.owned)),
            client_id: "client".to_owned(),
            client_host: "/10.0.0.1".to_owned(),
            ..HeartbeatRequest::default()
        })
    }

    /// A heartbeat with explicit epoch and owned partitions.
    fn beat_with(
        &mut self,
        member_id: &str,
        epoch: i32,
        owned: Option<Assignment>,
    ) -> HeartbeatResponse {
        let instance_id = self
            .clients
            .get(member_id)
            .and_then(|c| c.instance_id.clone());
        self.send(HeartbeatRequest {
            member_id: member_id.to_owned(),
            member_epoch: epoch,
            instance_id,
            topic_partitions: owned.as_ref().map(to_topic_partitions),
            client_id: "client".to_owned(),
            client_host: "/10.0.0.1".to_owned(),
            ..HeartbeatRequest::default()
        })
    }

    fn leave(&mut self, member_id: &str, epoch: i32) -> HeartbeatResponse {
        let instance_id = self
            .clients
            .get(member_id)
            .and_then(|c| c.instance_id.clone());
        self.send(HeartbeatRequest {
            member_id: member_id.to_owned(),
            member_epoch: epoch,
            instance_id,
            ..HeartbeatRequest::default()
        })
    }

    /// Every modelled client heartbeats until the group is Stable; panics if it does not settle.
    fn settle(&mut self) {
        for _ in 0..10 {
            if self.group.state() == ConsumerGroupState::Stable {
                return;
            }
            let ids: Vec<String> = self.clients.keys().cloned().collect();
            for id in ids {
                let resp = self.beat(&id);
                assert_eq!(resp.error, None, "{id}");
            }
        }
        panic!("group did not settle: {:?}", self.group.snapshot());
    }

    /// Moves the clock, firing the driver's timer if it is due.
    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        if self.timer_at_ms.is_some_and(|t| t <= self.now_ms) {
            self.timer_at_ms = None;
            let effects = self.group.tick(self.now_ms);
            self.record(effects);
        }
    }

    fn member(&self, member_id: &str) -> MemberSnapshot {
        self.group
            .snapshot()
            .members
            .into_iter()
            .find(|m| m.member_id == member_id)
            .unwrap_or_else(|| panic!("no member {member_id}"))
    }

    fn assigned(&self, member_id: &str) -> Assignment {
        from_topic_partitions(&self.member(member_id).assigned)
    }

    /// No partition is owned by two clients, and the machine agrees with the clients.
    fn check_clients(&self) {
        let mut seen = BTreeSet::new();
        for (id, c) in &self.clients {
            for (t, ps) in &c.owned {
                for p in ps {
                    assert!(seen.insert((*t, *p)), "{t:?}-{p} owned twice ({id})");
                }
            }
        }
    }
}

// -------------------------------------------------------------------------------------------
// Joining and reconciliation

#[test]
fn first_member_gets_all_partitions_at_epoch_one() {
    let mut h = Harness::new();
    assert_eq!(h.group.state(), ConsumerGroupState::Empty);
    let resp = h.join("m1", &["foo"]);
    assert_eq!(resp.member_id.as_deref(), Some("m1"));
    assert_eq!(resp.member_epoch, 1);
    assert_eq!(resp.heartbeat_interval_ms, INTERVAL_MS as i32);
    assert_eq!(
        resp.assignment,
        Some(vec![TopicPartitions {
            topic_id: FOO,
            partitions: vec![0, 1, 2, 3, 4, 5]
        }])
    );
    assert_eq!(h.group.group_epoch(), 1);
    assert_eq!(h.group.assignment_epoch(), 1);
    assert_eq!(h.group.state(), ConsumerGroupState::Stable);
    assert_eq!(h.persisted.len(), 1, "the join is persisted");
    assert_eq!(h.timer_at_ms, Some(h.now_ms + SESSION_MS));
}

#[test]
fn v0_member_gets_a_generated_id_and_v1_keeps_its_own() {
    let mut h = Harness::new();
    let resp = h.join("", &["foo"]);
    assert_eq!(resp.member_id.as_deref(), Some("generated-1"));
    let resp = h.join("3f0c1a52-client-made", &["foo"]);
    assert_eq!(resp.member_id.as_deref(), Some("3f0c1a52-client-made"));
    let ids: Vec<&str> = h.group.member_ids().collect();
    assert_eq!(ids, vec!["3f0c1a52-client-made", "generated-1"]);
}

#[test]
fn second_member_waits_until_the_first_revokes() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    let resp = h.join("m2", &["foo"]);
    // Target at epoch 2: m1 keeps 0-2, m2 gets 3-5, all still owned by m1.
    assert_eq!(resp.member_epoch, 2);
    assert_eq!(resp.assignment, Some(Vec::new()));
    assert_eq!(h.member("m2").state, MemberState::UnreleasedPartitions);
    assert_eq!(h.group.state(), ConsumerGroupState::Reconciling);

    // m1 is asked to revoke 3-5 and stays at epoch 1.
    let resp = h.beat("m1");
    assert_eq!(resp.member_epoch, 1);
    assert_eq!(h.assigned("m1"), parts(&[(FOO, &[0, 1, 2])]));
    assert_eq!(h.member("m1").state, MemberState::UnrevokedPartitions);
    assert_eq!(
        from_topic_partitions(&h.member("m1").pending_revocation),
        parts(&[(FOO, &[3, 4, 5])])
    );

    // Until m1 confirms, m2 gets nothing.
    let resp = h.beat_with("m2", 2, Some(Assignment::new()));
    assert_eq!(resp.assignment, None);
    assert!(h.assigned("m2").is_empty());

    // m1 still reporting 3 owned: no progress.
    let resp = h.beat_with("m1", 1, Some(parts(&[(FOO, &[0, 1, 2, 3])])));
    assert_eq!((resp.member_epoch, resp.assignment), (1, None));

    // m1 confirms: it moves to epoch 2; its assignment did not change, so none is sent.
    let resp = h.beat("m1");
    assert_eq!((resp.member_epoch, resp.assignment), (2, None));
    assert_eq!(h.member("m1").state, MemberState::Stable);

    // Now m2 gets the released partitions.
    let resp = h.beat("m2");
    assert_eq!(resp.member_epoch, 2);
    assert_eq!(
        resp.assignment.map(|a| from_topic_partitions(&a)),
        Some(parts(&[(FOO, &[3, 4, 5])]))
    );
    assert_eq!(h.group.state(), ConsumerGroupState::Stable);
    h.check_clients();
}

#[test]
fn rejoin_with_epoch_zero_while_revoking_counts_as_revoked() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    h.join("m2", &["foo"]);
    h.beat("m1");
    assert_eq!(h.member("m1").state, MemberState::UnrevokedPartitions);
    // The client lost track, dropped everything and rejoins with its id and epoch 0.
    let resp = h.send(join_req("m1", &["foo"]));
    assert_eq!(resp.error, None);
    assert_eq!(resp.member_epoch, 2);
    assert_eq!(
        resp.assignment.map(|a| from_topic_partitions(&a)),
        Some(parts(&[(FOO, &[0, 1, 2])]))
    );
    h.settle();
}

#[test]
fn assignment_is_sent_only_when_it_changed_or_on_a_full_request() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    let resp = h.beat("m1");
    assert_eq!(
        (resp.error, resp.member_epoch, resp.assignment),
        (None, 1, None)
    );
    // All of rebalance timeout, subscription and owned partitions: a full request.
    let resp = h.send(HeartbeatRequest {
        member_epoch: 1,
        ..join_req("m1", &["foo"])
    });
    assert_eq!(
        resp.assignment.map(|a| from_topic_partitions(&a)),
        Some(parts(&[(FOO, &[0, 1, 2, 3, 4, 5])]))
    );
}

#[test]
fn heartbeat_that_changes_nothing_persists_nothing() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    let before = h.persisted.len();
    h.advance(INTERVAL_MS);
    h.beat("m1");
    assert_eq!(h.persisted.len(), before);
    // A changed client host is member metadata: persisted, but no new epoch.
    let resp = h.send(HeartbeatRequest {
        member_id: "m1".to_owned(),
        member_epoch: 1,
        client_id: "client".to_owned(),
        client_host: "/10.0.0.2".to_owned(),
        ..HeartbeatRequest::default()
    });
    assert_eq!(resp.member_epoch, 1);
    assert_eq!(h.persisted.len(), before + 1);
    assert_eq!(
        h.persisted.last().unwrap().members[0].client_host,
        "/10.0.0.2"
    );
    assert_eq!(h.group.group_epoch(), 1);
}

// -------------------------------------------------------------------------------------------
// Leaving, expiry, fencing

#[test]
fn leaving_member_gives_its_partitions_to_the_others() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    h.join("m2", &["foo"]);
    h.settle();
    let epoch = h.group.group_epoch();
    let resp = h.leave("m2", LEAVE_GROUP_MEMBER_EPOCH);
    assert_eq!(resp.error, None);
    assert_eq!(resp.member_id.as_deref(), Some("m2"));
    assert_eq!(resp.member_epoch, -1);
    assert_eq!(resp.assignment, None);
    assert_eq!(h.group.group_epoch(), epoch + 1);
    assert_eq!(h.group.state(), ConsumerGroupState::Assigning);
    let resp = h.beat("m1");
    assert_eq!(resp.member_epoch, epoch + 1);
    assert_eq!(
        resp.assignment.map(|a| from_topic_partitions(&a)),
        Some(parts(&[(FOO, &[0, 1, 2, 3, 4, 5])]))
    );
    assert_eq!(h.group.state(), ConsumerGroupState::Stable);
    // It is gone.
    let resp = h.beat_with("m2", epoch, None);
    assert_eq!(err(&resp), Some(25));
}

#[test]
fn last_member_leaving_empties_the_group() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    h.leave("m1", LEAVE_GROUP_MEMBER_EPOCH);
    assert_eq!(h.group.state(), ConsumerGroupState::Empty);
    assert_eq!(h.group.group_epoch(), h.group.assignment_epoch());
    assert_eq!(h.group.next_deadline_ms(), None);
    let snap = h.persisted.last().unwrap();
    assert!(snap.members.is_empty() && snap.subscription_metadata.is_empty());
}

#[test]
fn silent_member_expires_after_the_session_timeout() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    h.join("m2", &["foo"]);
    h.settle();
    let epoch = h.group.group_epoch();
    // m1 keeps heartbeating, m2 goes silent.
    for _ in 0..8 {
        h.advance(INTERVAL_MS);
        h.beat("m1");
        assert_eq!(h.group.member_count(), 2);
    }
    h.advance(INTERVAL_MS + 1);
    assert_eq!(
        h.group.member_count(),
        1,
        "m2 expired 45 s after its last heartbeat"
    );
    assert_eq!(h.group.group_epoch(), epoch + 1);
    let resp = h.beat("m1");
    assert_eq!(
        resp.assignment.map(|a| count(&from_topic_partitions(&a))),
        Some(6)
    );
}

#[test]
fn member_that_does_not_revoke_is_fenced_after_its_rebalance_timeout() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    h.join("m2", &["foo"]);
    let stubborn = parts(&[(FOO, &[0, 1, 2, 3, 4, 5])]);
    h.beat_with("m1", 1, Some(stubborn.clone()));
    assert_eq!(h.member("m1").state, MemberState::UnrevokedPartitions);
    assert_eq!(
        h.group.next_deadline_ms(),
        Some(h.now_ms + REBALANCE_MS as u64)
    );
    // It keeps heartbeating (so its session is fine) but never lets go.
    h.advance(5_000);
    let resp = h.beat_with("m1", 1, Some(stubborn.clone()));
    assert_eq!(resp.error, None);
    h.advance(5_000);
    assert_eq!(h.group.member_ids().collect::<Vec<_>>(), vec!["m2"]);
    // m2 gets everything at the next epoch.
    let resp = h.beat("m2");
    assert_eq!(resp.member_epoch, 3);
    assert_eq!(
        resp.assignment.map(|a| count(&from_topic_partitions(&a))),
        Some(6)
    );
    // m1 is unknown now and must rejoin.
    let resp = h.beat_with("m1", 1, Some(stubborn));
    assert_eq!(err(&resp), Some(25));
}

#[test]
fn stale_or_future_member_epochs_are_fenced() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    h.join("m2", &["foo"]);
    h.settle();
    // m1 went from epoch 1 to 2.
    assert_eq!(h.member("m1").member_epoch, 2);
    assert_eq!(h.member("m1").previous_member_epoch, 1);
    let owned = h.assigned("m1");

    let resp = h.beat_with("m1", 3, Some(owned.clone()));
    assert_eq!(err(&resp), Some(110), "ahead of the coordinator");
    assert_eq!(resp.member_id, None);
    let resp = h.beat_with("m1", 1, None);
    assert_eq!(
        err(&resp),
        Some(110),
        "previous epoch without owned partitions"
    );
    let resp = h.beat_with("m1", 1, Some(parts(&[(FOO, &[0, 5])])));
    assert_eq!(
        err(&resp),
        Some(110),
        "previous epoch owning what it no longer has"
    );
    // The response moving it to epoch 2 was lost: previous epoch and a subset is accepted.
    let resp = h.beat_with("m1", 1, Some(parts(&[(FOO, &[0])])));
    assert_eq!((resp.error, resp.member_epoch), (None, 2));
}

#[test]
fn offset_commits_are_checked_against_the_member_epoch() {
    let mut h = Harness::new();
    assert_eq!(
        h.group.validate_commit("", -1),
        Ok(()),
        "empty group: simple commit"
    );
    h.join("m1", &["foo"]);
    h.join("m2", &["foo"]);
    h.settle();
    let epoch = h.member("m1").member_epoch;
    assert_eq!(h.group.validate_commit("m1", epoch), Ok(()));
    assert_eq!(
        h.group.validate_commit("m1", epoch - 1),
        Err(ConsumerGroupError::StaleMemberEpoch)
    );
    assert_eq!(
        h.group.validate_commit("m1", epoch + 1),
        Err(ConsumerGroupError::FencedMemberEpoch)
    );
    assert_eq!(
        h.group.validate_commit("nobody", epoch),
        Err(ConsumerGroupError::UnknownMemberId)
    );
    assert_eq!(
        h.group.validate_commit("", -1),
        Err(ConsumerGroupError::UnknownMemberId),
        "a group with members takes no simple commits"
    );
    assert_eq!(ConsumerGroupError::StaleMemberEpoch.code(), 113);
    assert_eq!(h.group.subscribed_topics().collect::<Vec<_>>(), ["foo"]);
}

#[test]
fn fenced_member_rejoins_with_its_id_and_epoch_zero() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    h.join("m2", &["foo"]);
    h.settle();
    // Epoch 2, previous 1: epoch 0 is neither, yet a rejoin is accepted (KAFKA-19233).
    assert_eq!(h.member("m1").member_epoch, 2);
    assert_eq!(h.member("m1").previous_member_epoch, 1);
    let resp = h.beat_with("m1", 7, None);
    assert_eq!(err(&resp), Some(110));
    let epoch = h.group.group_epoch();
    let resp = h.send(join_req("m1", &["foo"]));
    assert_eq!((resp.error, resp.member_epoch), (None, 2));
    assert_eq!(
        resp.assignment.map(|a| count(&from_topic_partitions(&a))),
        Some(3)
    );
    assert_eq!(
        h.group.group_epoch(),
        epoch,
        "same member, same subscription: no new epoch"
    );
}

#[test]
fn unknown_members_are_told_so() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    assert_eq!(err(&h.beat_with("ghost", 1, None)), Some(25));
    assert_eq!(err(&h.leave("ghost", LEAVE_GROUP_MEMBER_EPOCH)), Some(25));
    let resp = h.send(HeartbeatRequest {
        member_id: "ghost".to_owned(),
        member_epoch: LEAVE_GROUP_STATIC_MEMBER_EPOCH,
        instance_id: Some("nobody".to_owned()),
        ..HeartbeatRequest::default()
    });
    assert_eq!(err(&resp), Some(25));
}

// -------------------------------------------------------------------------------------------
// Static membership

#[test]
fn static_member_returning_within_the_session_gets_its_partitions_back() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    assert_eq!(h.join_static("s1", "i1", &["foo"]).error, None);
    h.settle();
    let epoch = h.group.group_epoch();
    let m1_before = h.assigned("m1");
    let s1_before = h.assigned("s1");
    assert_eq!(count(&s1_before), 3);
    let persisted = h.persisted.len();

    let resp = h.leave("s1", LEAVE_GROUP_STATIC_MEMBER_EPOCH);
    assert_eq!((resp.error, resp.member_epoch), (None, -2));
    assert_eq!(
        h.group.group_epoch(),
        epoch,
        "a temporary leave is no rebalance"
    );
    assert_eq!(h.member("s1").member_epoch, -2);
    assert_eq!(h.assigned("s1"), s1_before, "it keeps its partitions");
    assert_eq!(h.persisted.len(), persisted + 1);

    // The others see nothing.
    h.advance(20_000);
    let resp = h.beat("m1");
    assert_eq!((resp.member_epoch, resp.assignment), (epoch, None));

    // Restarted with a new member id, same instance id.
    let resp = h.join_static("s1-restarted", "i1", &["foo"]);
    assert_eq!(resp.error, None);
    assert_eq!(resp.member_epoch, epoch);
    assert_eq!(
        resp.assignment.map(|a| from_topic_partitions(&a)),
        Some(s1_before)
    );
    assert_eq!(h.group.group_epoch(), epoch);
    assert_eq!(
        h.group.member_ids().collect::<Vec<_>>(),
        vec!["m1", "s1-restarted"]
    );
    assert_eq!(h.assigned("m1"), m1_before);
    assert_eq!(h.group.state(), ConsumerGroupState::Stable);
    // The old incarnation is fenced out.
    h.clients.remove("s1");
    let resp = h.send(HeartbeatRequest {
        member_id: "s1".to_owned(),
        member_epoch: epoch,
        instance_id: Some("i1".to_owned()),
        ..HeartbeatRequest::default()
    });
    assert_eq!(err(&resp), Some(82));
}

#[test]
fn departed_static_member_is_removed_when_its_session_expires() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    h.join_static("s1", "i1", &["foo"]);
    h.settle();
    let epoch = h.group.group_epoch();
    h.leave("s1", LEAVE_GROUP_STATIC_MEMBER_EPOCH);
    assert_eq!(h.group.state(), ConsumerGroupState::Reconciling);
    for _ in 0..8 {
        h.advance(INTERVAL_MS);
        let resp = h.beat("m1");
        assert_eq!(resp.assignment, None);
        assert_eq!(h.group.member_count(), 2);
    }
    h.advance(INTERVAL_MS);
    assert_eq!(h.group.member_ids().collect::<Vec<_>>(), vec!["m1"]);
    assert_eq!(h.group.group_epoch(), epoch + 1);
    let resp = h.beat("m1");
    assert_eq!(
        resp.assignment.map(|a| count(&from_topic_partitions(&a))),
        Some(6)
    );
    // Coming back now is a plain new static member.
    assert_eq!(h.join_static("s1-late", "i1", &["foo"]).error, None);
    assert_eq!(h.group.group_epoch(), epoch + 2);
}

#[test]
fn instance_id_held_by_a_live_member_is_not_released() {
    let mut h = Harness::new();
    h.join_static("s1", "i1", &["foo"]);
    let resp = h.join_static("s2", "i1", &["foo"]);
    assert_eq!(err(&resp), Some(111));
    assert_eq!(h.group.member_count(), 1);
    // The holder itself may rejoin with epoch 0.
    let resp = h.join_static("s1", "i1", &["foo"]);
    assert_eq!(resp.error, None);
}

#[test]
fn static_member_with_the_wrong_member_id_is_fenced() {
    let mut h = Harness::new();
    h.join_static("s1", "i1", &["foo"]);
    let imposter = HeartbeatRequest {
        member_id: "s2".to_owned(),
        member_epoch: 1,
        instance_id: Some("i1".to_owned()),
        ..HeartbeatRequest::default()
    };
    assert_eq!(err(&h.send(imposter.clone())), Some(82));
    let leave = HeartbeatRequest {
        member_epoch: LEAVE_GROUP_STATIC_MEMBER_EPOCH,
        ..imposter
    };
    assert_eq!(err(&h.send(leave)), Some(82));
    assert_eq!(h.member("s1").member_epoch, 1);
}

#[test]
fn static_member_leaving_for_good_rebalances() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    h.join_static("s1", "i1", &["foo"]);
    h.settle();
    let epoch = h.group.group_epoch();
    let resp = h.leave("s1", LEAVE_GROUP_MEMBER_EPOCH);
    assert_eq!((resp.error, resp.member_epoch), (None, -1));
    assert_eq!(h.group.group_epoch(), epoch + 1);
    // The instance id is free again.
    assert_eq!(h.join_static("s9", "i1", &["foo"]).error, None);
}

// -------------------------------------------------------------------------------------------
// Metadata and subscriptions

#[test]
fn partition_growth_bumps_the_epoch_and_hands_out_the_new_partitions() {
    let mut h = Harness::new();
    h.topics.0.insert("foo".to_owned(), (FOO, 2));
    h.join("m1", &["foo"]);
    h.join("m2", &["foo"]);
    h.settle();
    let epoch = h.group.group_epoch();
    let (a1, a2) = (h.assigned("m1"), h.assigned("m2"));
    assert_eq!((count(&a1), count(&a2)), (1, 1));

    h.topics.0.insert("foo".to_owned(), (FOO, 4));
    let resp = h.beat("m1");
    assert_eq!(h.group.group_epoch(), epoch + 1);
    // Nothing to revoke: straight to the new epoch with one more partition.
    assert_eq!(resp.member_epoch, epoch + 1);
    let got = from_topic_partitions(&resp.assignment.unwrap());
    assert_eq!(count(&got), 2);
    assert!(a1[&FOO].is_subset(&got[&FOO]), "sticky");
    h.settle();
    assert_eq!(count(&h.assigned("m2")), 2);
    assert!(a2[&FOO].is_subset(&h.assigned("m2")[&FOO]));
    h.check_clients();
}

#[test]
fn topic_created_after_the_subscription_is_assigned() {
    let mut h = Harness::new();
    let resp = h.join("m1", &["foo", "later"]);
    assert_eq!(
        resp.assignment.map(|a| count(&from_topic_partitions(&a))),
        Some(6)
    );
    let epoch = h.group.group_epoch();
    let later = TopicId([9; 16]);
    h.topics.0.insert("later".to_owned(), (later, 2));
    let resp = h.beat("m1");
    assert_eq!(resp.member_epoch, epoch + 1);
    assert_eq!(
        from_topic_partitions(&resp.assignment.unwrap()).get(&later),
        Some(&BTreeSet::from([0, 1]))
    );
    // Deleting it takes it away again: revoked first, then the new epoch.
    h.topics.0.remove("later");
    let resp = h.beat("m1");
    assert_eq!(h.group.group_epoch(), epoch + 2);
    assert_eq!(resp.member_epoch, epoch + 1);
    assert_eq!(h.assigned("m1").get(&later), None);
    assert_eq!(h.member("m1").state, MemberState::UnrevokedPartitions);
    let resp = h.beat("m1");
    assert_eq!((resp.member_epoch, resp.assignment), (epoch + 2, None));
}

#[test]
fn subscription_change_bumps_the_epoch() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    let epoch = h.group.group_epoch();
    // Same set in another order with a duplicate: no change.
    h.send(HeartbeatRequest {
        member_id: "m1".to_owned(),
        member_epoch: 1,
        subscribed_topic_names: Some(vec!["foo".to_owned(), "foo".to_owned()]),
        client_id: "client".to_owned(),
        client_host: "/10.0.0.1".to_owned(),
        ..HeartbeatRequest::default()
    });
    assert_eq!(h.group.group_epoch(), epoch);
    let resp = h.send(HeartbeatRequest {
        member_id: "m1".to_owned(),
        member_epoch: 1,
        subscribed_topic_names: Some(vec!["bar".to_owned(), "foo".to_owned()]),
        topic_partitions: Some(to_topic_partitions(&parts(&[(FOO, &[0, 1, 2, 3, 4, 5])]))),
        client_id: "client".to_owned(),
        client_host: "/10.0.0.1".to_owned(),
        ..HeartbeatRequest::default()
    });
    assert_eq!(h.group.group_epoch(), epoch + 1);
    assert_eq!(resp.member_epoch, epoch + 1);
    assert_eq!(
        from_topic_partitions(&resp.assignment.unwrap()),
        parts(&[(FOO, &[0, 1, 2, 3, 4, 5]), (BAR, &[0, 1, 2])])
    );
}

#[test]
fn range_assignor_is_used_when_members_ask_for_it() {
    let mut h = Harness::new();
    h.topics.0.insert("bar".to_owned(), (BAR, 6));
    for id in ["m1", "m2"] {
        let resp = h.send(HeartbeatRequest {
            server_assignor: Some("range".to_owned()),
            ..join_req(id, &["foo", "bar"])
        });
        assert_eq!(resp.error, None);
    }
    h.settle();
    // Co-partitioned: m1 gets 0-2 of both topics, m2 3-5 of both.
    assert_eq!(
        h.assigned("m1"),
        parts(&[(FOO, &[0, 1, 2]), (BAR, &[0, 1, 2])])
    );
    assert_eq!(
        h.assigned("m2"),
        parts(&[(FOO, &[3, 4, 5]), (BAR, &[3, 4, 5])])
    );
    assert_eq!(h.group.describe(&h.topics).assignor_name, "range");
}

// -------------------------------------------------------------------------------------------
// Errors and bounds

#[test]
fn unsupported_assignor_is_refused() {
    let mut h = Harness::new();
    let resp = h.send(HeartbeatRequest {
        server_assignor: Some("sticky".to_owned()),
        ..join_req("m1", &["foo"])
    });
    assert_eq!(err(&resp), Some(112));
    assert_eq!(h.group.member_count(), 0);
    assert!(h.persisted.is_empty());
}

#[test]
fn malformed_requests_are_invalid() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    let ok = join_req("m2", &["foo"]);
    let cases: Vec<(&str, HeartbeatRequest)> = vec![
        (
            "join without subscription",
            HeartbeatRequest {
                subscribed_topic_names: None,
                ..ok.clone()
            },
        ),
        (
            "join with an empty subscription",
            HeartbeatRequest {
                subscribed_topic_names: Some(Vec::new()),
                ..ok.clone()
            },
        ),
        (
            "join without rebalance timeout",
            HeartbeatRequest {
                rebalance_timeout_ms: -1,
                ..ok.clone()
            },
        ),
        (
            "join without owned partitions",
            HeartbeatRequest {
                topic_partitions: None,
                ..ok.clone()
            },
        ),
        (
            "join owning partitions",
            HeartbeatRequest {
                topic_partitions: Some(to_topic_partitions(&parts(&[(FOO, &[0])]))),
                ..ok.clone()
            },
        ),
        (
            "negative rebalance timeout",
            HeartbeatRequest {
                rebalance_timeout_ms: -5,
                ..ok.clone()
            },
        ),
        (
            "epoch below -2",
            HeartbeatRequest {
                member_epoch: -3,
                ..ok.clone()
            },
        ),
        (
            "heartbeat without member id",
            HeartbeatRequest {
                member_id: String::new(),
                member_epoch: 1,
                ..ok.clone()
            },
        ),
        (
            "leave without member id",
            HeartbeatRequest {
                member_id: " ".to_owned(),
                member_epoch: -1,
                ..ok.clone()
            },
        ),
        (
            "static leave without instance id",
            HeartbeatRequest {
                member_id: "m1".to_owned(),
                member_epoch: -2,
                ..ok.clone()
            },
        ),
        (
            "blank instance id",
            HeartbeatRequest {
                instance_id: Some("  ".to_owned()),
                ..ok.clone()
            },
        ),
        (
            "blank rack id",
            HeartbeatRequest {
                rack_id: Some(String::new()),
                ..ok.clone()
            },
        ),
    ];
    for (what, req) in cases {
        assert_eq!(err(&h.send(req)), Some(42), "{what}");
    }
    assert_eq!(h.group.member_ids().collect::<Vec<_>>(), vec!["m1"]);
    assert_eq!(h.group.group_epoch(), 1);
    // An empty regex is no regex: librdkafka sends one with every plain-name subscription.
    let empty_regex = h.send(HeartbeatRequest {
        subscribed_topic_regex: Some(String::new()),
        ..ok.clone()
    });
    assert_eq!(err(&empty_regex), None);
    assert_eq!(h.group.member_ids().collect::<Vec<_>>(), vec!["m1", "m2"]);
}

#[test]
fn regex_subscriptions_match_whole_names_and_follow_new_topics() {
    let mut h = Harness::new();
    let bad = h.send(HeartbeatRequest {
        subscribed_topic_names: Some(Vec::new()),
        subscribed_topic_regex: Some("fo(".to_owned()),
        ..join_req("m1", &[])
    });
    assert_eq!(err(&bad), Some(128), "invalid regex");
    assert_eq!(h.group.member_count(), 0);

    // Regex only (as librdkafka sends it: an empty name list and the regex).
    let joined = h.send(HeartbeatRequest {
        subscribed_topic_names: Some(Vec::new()),
        subscribed_topic_regex: Some("f.o|ba".to_owned()),
        ..join_req("m1", &[])
    });
    assert_eq!(err(&joined), None);
    assert_eq!(
        h.member("m1").subscribed_topic_names,
        vec!["foo".to_owned()],
        "whole names only: \"ba\" does not match \"bar\""
    );
    assert_eq!(count(&h.assigned("m1")), 6);
    let epoch = h.group.group_epoch();

    // A topic created later joins the subscription at the member's next heartbeat.
    h.topics.0.insert("fxo".to_owned(), (TopicId([3; 16]), 2));
    h.beat("m1");
    assert_eq!(
        h.member("m1").subscribed_topic_names,
        vec!["foo".to_owned(), "fxo".to_owned()]
    );
    assert!(h.group.group_epoch() > epoch, "the subscription grew");
    h.settle();
    assert_eq!(count(&h.assigned("m1")), 8);

    let d = h.group.describe(&h.topics);
    assert_eq!(
        d.members[0].subscribed_topic_regex.as_deref(),
        Some("f.o|ba")
    );
    assert!(
        d.members[0].subscribed_topic_names.is_empty(),
        "explicit names only"
    );
    // Restored from a snapshot, the member keeps its regex.
    let snapshot = h.group.snapshot();
    let (restored, _) = ConsumerGroupMachine::restore(h.now_ms, snapshot.clone(), config());
    assert_eq!(restored.snapshot(), snapshot);
    assert_eq!(
        snapshot.members[0].subscribed_topic_regex.as_deref(),
        Some("f.o|ba")
    );

    // An empty regex clears it: back to the explicit names only.
    let cleared = h.send(HeartbeatRequest {
        member_id: "m1".to_owned(),
        member_epoch: h.clients["m1"].epoch,
        subscribed_topic_names: Some(vec!["bar".to_owned()]),
        subscribed_topic_regex: Some(String::new()),
        ..HeartbeatRequest::default()
    });
    assert_eq!(err(&cleared), None);
    assert_eq!(
        h.member("m1").subscribed_topic_names,
        vec!["bar".to_owned()]
    );
}

#[test]
fn requests_for_a_group_that_does_not_exist() {
    let join = join_req("m1", &["foo"]);
    assert_eq!(validate_unknown_group("g", &join), Ok(()));
    let cases = [
        (1, Some(ConsumerGroupError::GroupIdNotFound)),
        (
            LEAVE_GROUP_MEMBER_EPOCH,
            Some(ConsumerGroupError::GroupIdNotFound),
        ),
        (-3, Some(ConsumerGroupError::InvalidRequest)),
    ];
    for (epoch, expected) in cases {
        let req = HeartbeatRequest {
            member_epoch: epoch,
            ..join.clone()
        };
        assert_eq!(
            validate_unknown_group("g", &req).err(),
            expected,
            "epoch {epoch}"
        );
    }
    let bad_join = HeartbeatRequest {
        subscribed_topic_names: None,
        ..join.clone()
    };
    assert_eq!(
        validate_unknown_group("g", &bad_join),
        Err(ConsumerGroupError::InvalidRequest)
    );
    assert_eq!(
        validate_unknown_group("", &join),
        Err(ConsumerGroupError::InvalidGroupId)
    );
}

#[test]
fn empty_group_id_is_invalid() {
    let mut h = Harness::new();
    h.group = ConsumerGroupMachine::new("", config());
    assert_eq!(err(&h.send(join_req("m1", &["foo"]))), Some(24));
}

#[test]
fn full_group_refuses_new_members_but_serves_its_own() {
    let mut h = Harness::with(ConsumerGroupConfig {
        max_size: 2,
        ..config()
    });
    h.join("m1", &["foo"]);
    h.join_static("s1", "i1", &["foo"]);
    let resp = h.send(join_req("m3", &["foo"]));
    assert_eq!(err(&resp), Some(81));
    assert_eq!(err(&h.send(join_req("", &["foo"]))), Some(81));
    assert_eq!(h.group.member_count(), 2);
    h.settle();
    // A static member replacing its departed self does not grow the group.
    h.leave("s1", LEAVE_GROUP_STATIC_MEMBER_EPOCH);
    assert_eq!(h.join_static("s1-restarted", "i1", &["foo"]).error, None);
    assert_eq!(h.group.member_count(), 2);
}

#[test]
fn member_metadata_is_bounded() {
    let mut h = Harness::with(ConsumerGroupConfig {
        max_member_metadata_bytes: 1_000,
        ..config()
    });
    let long_name = "t".repeat(MAX_TOPIC_NAME_BYTES + 1);
    assert_eq!(err(&h.send(join_req("m1", &[&long_name]))), Some(42));
    let many: Vec<String> = (0..40).map(|i| format!("topic-{i:03}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(err(&h.send(join_req("m1", &many))), Some(42));
    assert_eq!(h.group.member_count(), 0);
    // Fits: then growing it past the bound later is refused and leaves the member as it was.
    h.join("m1", &many[..10]);
    let resp = h.send(HeartbeatRequest {
        member_id: "m1".to_owned(),
        member_epoch: 1,
        subscribed_topic_names: Some(many.iter().map(|s| (*s).to_owned()).collect()),
        ..HeartbeatRequest::default()
    });
    assert_eq!(err(&resp), Some(42));
    assert_eq!(h.member("m1").subscribed_topic_names.len(), 10);
}

// -------------------------------------------------------------------------------------------
// Describe, timers, persistence

#[test]
fn describe_shows_states_members_and_assignments() {
    let mut h = Harness::new();
    let d = h.group.describe(&h.topics);
    assert_eq!(
        (d.state, d.group_epoch, d.members.len()),
        (ConsumerGroupState::Empty, 0, 0)
    );
    assert_eq!(d.assignor_name, "uniform");

    h.send(HeartbeatRequest {
        rack_id: Some("rack-a".to_owned()),
        instance_id: Some("i1".to_owned()),
        ..join_req("m1", &["foo", "bar"])
    });
    h.clients.get_mut("m1").unwrap().instance_id = Some("i1".to_owned());
    let d = h.group.describe(&h.topics);
    assert_eq!(d.state, ConsumerGroupState::Stable);
    assert_eq!((d.group_epoch, d.assignment_epoch), (1, 1));
    let m = &d.members[0];
    assert_eq!(m.member_id, "m1");
    assert_eq!(m.instance_id.as_deref(), Some("i1"));
    assert_eq!(m.rack_id.as_deref(), Some("rack-a"));
    assert_eq!(
        (m.client_id.as_str(), m.client_host.as_str()),
        ("client", "/10.0.0.1")
    );
    assert_eq!(m.subscribed_topic_names, vec!["bar", "foo"]);
    assert_eq!(m.member_epoch, 1);
    assert_eq!(
        m.assignment,
        vec![
            DescribedTopicPartitions {
                topic_id: FOO,
                topic_name: "foo".to_owned(),
                partitions: vec![0, 1, 2, 3, 4, 5]
            },
            DescribedTopicPartitions {
                topic_id: BAR,
                topic_name: "bar".to_owned(),
                partitions: vec![0, 1, 2]
            },
        ]
    );
    assert_eq!(m.target_assignment, m.assignment);

    // Reconciling: m2 joined, m1 not yet revoked; current and target differ.
    h.join("m2", &["foo", "bar"]);
    let d = h.group.describe(&h.topics);
    assert_eq!(d.state, ConsumerGroupState::Reconciling);
    let m1 = &d.members[0];
    assert_ne!(m1.assignment, m1.target_assignment);
    let total =
        |a: &[DescribedTopicPartitions]| a.iter().map(|t| t.partitions.len()).sum::<usize>();
    assert_eq!(
        (total(&m1.assignment), total(&m1.target_assignment)),
        (9, 5)
    );
    assert_eq!(total(&d.members[1].target_assignment), 4);
    h.settle();
    assert_eq!(
        h.group.describe(&h.topics).state,
        ConsumerGroupState::Stable
    );

    // Assigning: a member left, no heartbeat since.
    h.leave("m2", LEAVE_GROUP_MEMBER_EPOCH);
    let d = h.group.describe(&h.topics);
    assert_eq!(d.state, ConsumerGroupState::Assigning);
    assert_eq!(d.assignment_epoch + 1, d.group_epoch);
}

#[test]
fn timer_is_rearmed_only_when_a_deadline_comes_earlier() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    assert_eq!(h.timer_at_ms, Some(h.now_ms + SESSION_MS));
    // A later heartbeat moves the session deadline later: no new timer.
    h.timer_at_ms = None;
    h.advance(INTERVAL_MS);
    h.beat("m1");
    assert_eq!(h.timer_at_ms, None);
    assert_eq!(h.group.next_deadline_ms(), Some(h.now_ms + SESSION_MS));
    // A revocation deadline is earlier than every session: armed at once.
    h.join("m2", &["foo"]);
    assert_eq!(h.timer_at_ms, None);
    h.beat("m1");
    let revocation_at = h.now_ms + REBALANCE_MS as u64;
    assert_eq!(h.timer_at_ms, Some(revocation_at));
    // A spurious tick before anything is due does nothing.
    assert_eq!(h.group.tick(h.now_ms + 1), Vec::new());
    // m1 revokes: its deadline is gone, but the armed timer still fires; that early tick
    // removes nobody and arms the next real deadline (the oldest session).
    h.beat("m1");
    assert_eq!(h.member("m1").state, MemberState::Stable);
    let effects = h.group.tick(revocation_at);
    assert_eq!(
        effects,
        vec![Effect::ScheduleTimer {
            at_ms: h.group.next_deadline_ms().unwrap()
        }]
    );
    assert_eq!(h.group.member_count(), 2);
}

#[test]
fn restore_rebuilds_the_group_mid_reconciliation() {
    let mut h = Harness::new();
    h.join("m1", &["foo", "bar"]);
    h.join_static("s1", "i1", &["foo"]);
    h.join("m3", &["bar"]);
    h.beat("m1");
    let snapshot = h.persisted.last().unwrap().clone();
    assert_eq!(
        snapshot,
        h.group.snapshot(),
        "the last persist is the current state"
    );
    assert_eq!(h.group.state(), ConsumerGroupState::Reconciling);

    h.now_ms += 60_000;
    let (restored, effects) = ConsumerGroupMachine::restore(h.now_ms, snapshot.clone(), config());
    assert_eq!(restored.snapshot(), snapshot);
    assert_eq!(restored.state(), ConsumerGroupState::Reconciling);
    // Fresh deadlines: m1 is revoking, so its rebalance timeout is the earliest.
    assert_eq!(
        effects,
        vec![Effect::ScheduleTimer {
            at_ms: h.now_ms + REBALANCE_MS as u64
        }]
    );
    h.group = restored;
    h.timer_at_ms = None;
    h.record(effects);
    h.settle();
    h.check_clients();
    let total: usize = ["m1", "s1", "m3"]
        .iter()
        .map(|m| count(&h.assigned(m)))
        .sum();
    assert_eq!(total, 9);
    // Round trip through the persisted encoding.
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&snapshot).unwrap();
    let back: ConsumerGroupSnapshot =
        rkyv::from_bytes::<ConsumerGroupSnapshot, rkyv::rancor::Error>(&bytes).unwrap();
    assert_eq!(back, snapshot);
}

#[test]
fn restore_keeps_a_partition_claimed_twice_with_the_first_member() {
    let mut h = Harness::new();
    h.join("m1", &["foo"]);
    h.join("m2", &["foo"]);
    h.settle();
    let mut snapshot = h.group.snapshot();
    let stolen = snapshot.members[0].assigned[0].partitions[0];
    snapshot.members[1].assigned[0].partitions.push(stolen);
    let (restored, _) = ConsumerGroupMachine::restore(h.now_ms, snapshot, config());
    let snap = restored.snapshot();
    assert!(snap.members[0].assigned[0].partitions.contains(&stolen));
    assert!(!snap.members[1].assigned[0].partitions.contains(&stolen));
}

#[test]
fn many_members_churning_never_share_a_partition() {
    let mut h = Harness::new();
    h.topics.0.insert("foo".to_owned(), (FOO, 24));
    for i in 0..6 {
        h.join(&format!("m{i}"), &["foo", "bar"]);
        h.beat("m0");
        h.check_clients();
    }
    h.settle();
    for i in 0..3 {
        h.leave(&format!("m{i}"), LEAVE_GROUP_MEMBER_EPOCH);
        let ids: Vec<String> = h.clients.keys().cloned().collect();
        for id in ids {
            h.beat(&id);
            h.check_clients();
        }
    }
    h.settle();
    let sizes: Vec<usize> = ["m3", "m4", "m5"]
        .iter()
        .map(|m| count(&h.assigned(m)))
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 27);
    assert!(
        sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
        "{sizes:?}"
    );
}
