//! Scenario tests for [`GroupMachine`] with a fake clock: every transition of the classic
//! protocol, driven the way the network handlers will drive it.

use std::collections::HashSet;

use bytes::Bytes;

use super::*;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;
const DELAY_MS: u64 = 3_000;
/// Members joining together during the initial delay extend it once more (KIP-134): the first
/// rebalance of a group whose members all join at once takes two delays.
const FIRST_REBALANCE_MS: u64 = 2 * DELAY_MS;

struct Counter(u64);

impl MemberIdSource for Counter {
    fn next_uuid(&mut self) -> String {
        self.0 += 1;
        format!("u{}", self.0)
    }
}

fn config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: DELAY_MS,
        max_size: 10,
        max_metadata_bytes: 1024,
        ..GroupConfig::default()
    }
}

fn proto(name: &str, metadata: &'static str) -> Protocol {
    Protocol {
        name: name.to_owned(),
        metadata: Bytes::from_static(metadata.as_bytes()),
    }
}

fn range() -> Vec<Protocol> {
    vec![proto("range", "sub")]
}

/// A JoinGroup from client `client` (generated ids are `{client}-u{n}`).
fn join_req(client: &str, member_id: &str, protocols: Vec<Protocol>) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_owned(),
        group_instance_id: None,
        client_id: client.to_owned(),
        client_host: "/10.0.0.1".to_owned(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".to_owned(),
        protocols,
        require_known_member_id: false,
        supports_skip_assignment: false,
    }
}

fn static_req(instance: &str, member_id: &str, protocols: Vec<Protocol>) -> JoinRequest {
    JoinRequest {
        group_instance_id: Some(instance.to_owned()),
        ..join_req("c", member_id, protocols)
    }
}

fn assign(member_id: &str, data: &'static str) -> MemberAssignment {
    MemberAssignment {
        member_id: member_id.to_owned(),
        assignment: Bytes::from_static(data.as_bytes()),
    }
}

/// Drives one machine with a fake clock and checks that no request is answered twice.
struct Harness {
    group: GroupMachine,
    now_ms: u64,
    ids: Counter,
    next_request: u64,
    log: Vec<Effect>,
    answered: HashSet<RequestId>,
}

impl Harness {
    fn new() -> Self {
        Harness::with(config())
    }

    fn with(config: GroupConfig) -> Self {
        Harness {
            group: GroupMachine::new("g", config),
            now_ms: 1_000,
            ids: Counter(0),
            next_request: 0,
            log: Vec::new(),
            answered: HashSet::new(),
        }
    }

    fn record(&mut self, effects: Vec<Effect>) {
        for e in effects {
            if let Effect::RespondJoin { request_id, .. } | Effect::RespondSync { request_id, .. } =
                &e
            {
                assert!(
                    self.answered.insert(*request_id),
                    "request {request_id:?} answered twice"
                );
            }
            self.log.push(e);
        }
    }

    fn request_id(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    fn join(&mut self, req: JoinRequest) -> RequestId {
        let id = self.request_id();
        let effects = self.group.join(self.now_ms, id, req, &mut self.ids);
        self.record(effects);
        id
    }

    /// Joins and expects an immediate answer.
    fn join_now(&mut self, req: JoinRequest) -> JoinResponse {
        let id = self.join(req);
        self.join_response(id).expect("immediate join response")
    }

    fn sync(
        &mut self,
        member_id: &str,
        generation_id: i32,
        assignments: Vec<MemberAssignment>,
    ) -> RequestId {
        let id = self.request_id();
        let req = SyncRequest {
            member_id: member_id.to_owned(),
            group_instance_id: None,
            generation_id,
            protocol_type: None,
            protocol_name: None,
            assignments,
        };
        let effects = self.group.sync(self.now_ms, id, req);
        self.record(effects);
        id
    }

    fn heartbeat(&mut self, member_id: &str, generation_id: i32) -> Result<(), GroupError> {
        self.heartbeat_static(member_id, None, generation_id)
    }

    fn heartbeat_static(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        let req = HeartbeatRequest {
            member_id: member_id.to_owned(),
            group_instance_id: instance.map(str::to_owned),
            generation_id,
        };
        let (result, effects) = self.group.heartbeat(self.now_ms, &req);
        self.record(effects);
        result
    }

    fn leave(&mut self, members: &[(&str, Option<&str>)]) -> LeaveResponse {
        let members: Vec<LeaveMember> = members
            .iter()
            .map(|(m, i)| LeaveMember {
                member_id: (*m).to_owned(),
                group_instance_id: i.map(str::to_owned),
            })
            .collect();
        let (response, effects) = self.group.leave(self.now_ms, &members);
        self.record(effects);
        response
    }

    fn commit(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        let req = CommitIdentity {
            member_id: member_id.to_owned(),
            group_instance_id: instance.map(str::to_owned),
            generation_id,
        };
        let (result, effects) = self.group.validate_commit(self.now_ms, &req);
        self.record(effects);
        result
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        let effects = self.group.tick(self.now_ms);
        self.record(effects);
    }

    fn join_response(&self, id: RequestId) -> Option<JoinResponse> {
        self.log.iter().find_map(|e| match e {
            Effect::RespondJoin {
                request_id,
                response,
            } if *request_id == id => Some(response.clone()),
            _ => None,
        })
    }

    fn sync_response(&self, id: RequestId) -> Option<SyncResponse> {
        self.log.iter().find_map(|e| match e {
            Effect::RespondSync {
                request_id,
                response,
            } if *request_id == id => Some(response.clone()),
            _ => None,
        })
    }

    fn last_persist(&self) -> (PersistId, GroupSnapshot) {
        self.log
            .iter()
            .rev()
            .find_map(|e| match e {
                Effect::PersistGroup {
                    persist_id,
                    snapshot,
                } => Some((*persist_id, snapshot.clone())),
                _ => None,
            })
            .expect("a PersistGroup effect")
    }

    fn persist_count(&self) -> usize {
        self.log
            .iter()
            .filter(|e| matches!(e, Effect::PersistGroup { .. }))
            .count()
    }

    fn persisted(&mut self, result: Result<(), GroupError>) {
        let (id, _) = self.last_persist();
        let effects = self.group.persisted(self.now_ms, id, result);
        self.record(effects);
    }

    fn state(&self) -> GroupState {
        self.group.state()
    }

    fn generation(&self) -> i32 {
        self.group.generation_id()
    }

    /// Dynamic members `clients` join an Empty group, the initial delay passes, the leader
    /// assigns `a-{member}` to everyone, the assignment is persisted: a Stable group.
    fn stable(&mut self, clients: &[&str]) -> Vec<String> {
        let requests: Vec<RequestId> = clients
            .iter()
            .map(|c| self.join(join_req(c, "", range())))
            .collect();
        self.advance(FIRST_REBALANCE_MS);
        let responses: Vec<JoinResponse> = requests
            .iter()
            .map(|r| self.join_response(*r).expect("joined"))
            .collect();
        let ids: Vec<String> = responses.iter().map(|r| r.member_id.clone()).collect();
        self.complete_sync(&ids, &responses[0].leader_id);
        ids
    }

    /// Everyone syncs (leader first) and the leader's assignment is persisted.
    fn complete_sync(&mut self, ids: &[String], leader: &str) {
        assert_eq!(self.state(), GroupState::CompletingRebalance);
        let generation = self.generation();
        let assignments: Vec<MemberAssignment> = ids
            .iter()
            .map(|id| MemberAssignment {
                member_id: id.clone(),
                assignment: Bytes::from(format!("a-{id}")),
            })
            .collect();
        self.sync(leader, generation, assignments);
        for id in ids.iter().filter(|id| *id != leader) {
            self.sync(id, generation, Vec::new());
        }
        self.persisted(Ok(()));
        assert_eq!(self.state(), GroupState::Stable);
    }

    /// All `ids` rejoin with unchanged metadata; returns their join request ids.
    fn rejoin_all(&mut self, ids: &[String]) -> Vec<RequestId> {
        ids.iter()
            .map(|id| self.join(join_req("c", id, range())))
            .collect()
    }
}

// ----------------------------------------------------------------------------------------------
// JoinGroup validation

#[test]
fn empty_group_id_is_invalid_group_id() {
    let mut h = Harness::with(config());
    h.group = GroupMachine::new("", config());
    assert_eq!(
        h.join_now(join_req("c", "", range())).error,
        Some(GroupError::InvalidGroupId)
    );
    assert_eq!(h.heartbeat("m", 0), Err(GroupError::InvalidGroupId));
    let id = h.sync("m", 0, Vec::new());
    assert_eq!(
        h.sync_response(id).and_then(|r| r.error),
        Some(GroupError::InvalidGroupId)
    );
    assert_eq!(
        h.leave(&[("m", None)]).error,
        Some(GroupError::InvalidGroupId)
    );
    // OffsetCommit accepts the empty group id (legacy clients), as Kafka does.
    assert_eq!(h.commit("", None, -1), Ok(()));
}

#[test]
fn session_timeout_outside_bounds_is_rejected() {
    let mut h = Harness::new();
    for timeout_ms in [-1, 5_999, 1_800_001] {
        let req = JoinRequest {
            session_timeout_ms: timeout_ms,
            ..join_req("c", "", range())
        };
        assert_eq!(
            h.join_now(req).error,
            Some(GroupError::InvalidSessionTimeout)
        );
    }
    assert_eq!(h.state(), GroupState::Empty);
}

#[test]
fn unknown_member_id_on_a_fresh_group() {
    let mut h = Harness::new();
    let response = h.join_now(join_req("c", "c-stale", range()));
    assert_eq!(response.error, Some(GroupError::UnknownMemberId));
    assert_eq!(response.member_id, "c-stale");
    assert_eq!(h.state(), GroupState::Empty);
}

#[test]
fn inconsistent_protocols_are_rejected() {
    let mut h = Harness::new();
    // An empty group needs a protocol type and at least one protocol.
    assert_eq!(
        h.join_now(JoinRequest {
            protocol_type: String::new(),
            ..join_req("c", "", range())
        })
        .error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    assert_eq!(
        h.join_now(join_req("c", "", Vec::new())).error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    let ids = h.stable(&["a"]);
    // Different protocol type.
    let connect = JoinRequest {
        protocol_type: "connect".to_owned(),
        ..join_req("b", "", range())
    };
    assert_eq!(
        h.join_now(connect).error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    // No protocol in common with the members.
    assert_eq!(
        h.join_now(join_req("b", "", vec![proto("roundrobin", "")]))
            .error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    assert_eq!(h.state(), GroupState::Stable);
    assert_eq!(
        h.group.member_ids().collect::<Vec<_>>(),
        vec![ids[0].as_str()]
    );
}

#[test]
fn oversized_metadata_is_rejected_before_it_enters_the_group() {
    let mut h = Harness::new();
    let big = vec![Protocol {
        name: "range".to_owned(),
        metadata: Bytes::from(vec![0u8; 2048]),
    }];
    assert_eq!(
        h.join_now(join_req("c", "", big)).error,
        Some(GroupError::InvalidRequest)
    );
    let many: Vec<Protocol> = (0..=MAX_PROTOCOLS_PER_MEMBER)
        .map(|i| proto(&format!("p{i}"), ""))
        .collect();
    assert_eq!(
        h.join_now(join_req("c", "", many)).error,
        Some(GroupError::InvalidRequest)
    );
    assert_eq!(h.group.member_ids().count(), 0);
}

// ----------------------------------------------------------------------------------------------
// Empty -> PreparingRebalance -> CompletingRebalance -> Stable

#[test]
fn member_id_required_round_trip() {
    let mut h = Harness::new();
    let first = h.join_now(JoinRequest {
        require_known_member_id: true,
        ..join_req("c", "", range())
    });
    assert_eq!(first.error, Some(GroupError::MemberIdRequired));
    assert_eq!(first.error.map(GroupError::code), Some(79));
    assert_eq!(first.member_id, "c-u1");
    assert_eq!(
        h.state(),
        GroupState::Empty,
        "a pending member does not start a rebalance"
    );
    // Heartbeats from a pending member are not accepted: it is not a member yet.
    assert_eq!(h.heartbeat("c-u1", 0), Err(GroupError::UnknownMemberId));

    let rejoin = h.join(JoinRequest {
        require_known_member_id: true,
        ..join_req("c", "c-u1", range())
    });
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert!(
        h.join_response(rejoin).is_none(),
        "parked for the initial delay"
    );
    h.advance(FIRST_REBALANCE_MS);
    let response = h.join_response(rejoin).expect("answered after the delay");
    assert_eq!(response.error, None);
    assert_eq!(
        (response.generation_id, response.member_id.as_str()),
        (1, "c-u1")
    );
    assert_eq!(response.leader_id, "c-u1");
    assert_eq!(response.protocol_name.as_deref(), Some("range"));
    assert_eq!(response.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(h.state(), GroupState::CompletingRebalance);
}

#[test]
fn pending_member_expires_after_its_session_timeout() {
    let mut h = Harness::new();
    let ids = h.stable(&["a"]);
    let pending = h.join_now(JoinRequest {
        require_known_member_id: true,
        ..join_req("p", "", range())
    });
    assert_eq!(pending.error, Some(GroupError::MemberIdRequired));
    // The leader forces a rebalance; the pending member holds it open until it expires.
    let rejoin = h.join(join_req("c", &ids[0], range()));
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert!(h.join_response(rejoin).is_none());
    h.advance(SESSION_MS as u64);
    assert_eq!(h.join_response(rejoin).map(|r| r.generation_id), Some(2));
    // Too late now.
    let late = h.join_now(join_req("p", &pending.member_id, range()));
    assert_eq!(late.error, Some(GroupError::UnknownMemberId));
}

#[test]
fn initial_delay_waits_and_is_extended_by_new_members() {
    let mut h = Harness::new();
    let a = h.join(join_req("a", "", range()));
    h.advance(2_000);
    let b = h.join(join_req("b", "", range()));
    h.advance(1_000); // the first delay ends; b arrived during it: wait another delay
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert!(h.join_response(a).is_none());
    h.advance(DELAY_MS - 1);
    assert!(h.join_response(a).is_none());
    h.advance(1);
    let (ra, rb) = (
        h.join_response(a).expect("a"),
        h.join_response(b).expect("b"),
    );
    assert_eq!((ra.generation_id, rb.generation_id), (1, 1));
    assert_eq!(ra.leader_id, "a-u1", "the first member to join leads");
    assert_eq!(ra.members.len(), 2, "the leader gets the member list");
    assert!(rb.members.is_empty(), "followers do not");
}

#[test]
fn initial_delay_is_bounded_by_the_rebalance_timeout() {
    let mut h = Harness::new();
    let slow = JoinRequest {
        rebalance_timeout_ms: 4_000,
        ..join_req("a", "", range())
    };
    let a = h.join(slow);
    h.advance(1_000);
    h.join(join_req("b", "", range())); // group rebalance timeout is now 30 s, but the delay was
                                        // armed with a's 4 s: 3 s + at most 1 s more
    h.advance(2_000);
    assert!(h.join_response(a).is_none());
    h.join(join_req("c", "", range()));
    h.advance(1_000);
    assert_eq!(h.join_response(a).map(|r| r.generation_id), Some(1));
    assert_eq!(h.group.member_ids().count(), 3);
}

#[test]
fn zero_initial_delay_completes_the_first_join_at_once() {
    let mut h = Harness::with(GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..config()
    });
    let response = h.join_now(join_req("a", "", range()));
    assert_eq!((response.error, response.generation_id), (None, 1));
    assert_eq!(h.state(), GroupState::CompletingRebalance);
}

#[test]
fn protocol_is_chosen_by_votes_among_common_protocols() {
    let mut h = Harness::new();
    let rr = || proto("roundrobin", "rr-meta");
    let rg = || proto("range", "range-meta");
    let sticky = || proto("sticky", "st");
    let a = h.join(join_req("a", "", vec![sticky(), rg(), rr()]));
    h.join(join_req("b", "", vec![rr(), rg()]));
    h.join(join_req("c", "", vec![rr(), rg()]));
    h.advance(FIRST_REBALANCE_MS);
    let leader = h.join_response(a).expect("joined");
    // sticky is not common; a votes range, b and c vote roundrobin.
    assert_eq!(leader.protocol_name.as_deref(), Some("roundrobin"));
    assert!(leader
        .members
        .iter()
        .all(|m| m.metadata == Bytes::from_static(b"rr-meta")));
}

#[test]
fn protocol_vote_tie_goes_to_the_earliest_member() {
    let mut h = Harness::new();
    let a = h.join(join_req(
        "a",
        "",
        vec![proto("range", ""), proto("roundrobin", "")],
    ));
    h.join(join_req(
        "b",
        "",
        vec![proto("roundrobin", ""), proto("range", "")],
    ));
    h.advance(FIRST_REBALANCE_MS);
    assert_eq!(
        h.join_response(a).and_then(|r| r.protocol_name).as_deref(),
        Some("range")
    );
}

#[test]
fn sync_hands_the_leaders_assignment_out_intact() {
    let mut h = Harness::new();
    let reqs: Vec<RequestId> = ["a", "b", "c"]
        .iter()
        .map(|c| h.join(join_req(c, "", range())))
        .collect();
    h.advance(FIRST_REBALANCE_MS);
    let ids: Vec<String> = reqs
        .iter()
        .map(|r| h.join_response(*r).expect("joined").member_id)
        .collect();
    let generation = h.generation();
    // A follower syncing first waits for the leader.
    let b_sync = h.sync(&ids[1], generation, Vec::new());
    assert!(h.sync_response(b_sync).is_none());
    // The leader forgets c and names a stranger: c gets empty, the stranger is ignored.
    let a_sync = h.sync(
        &ids[0],
        generation,
        vec![
            assign(&ids[0], "p0,p1"),
            assign(&ids[1], "p2"),
            assign("x", "p9"),
        ],
    );
    assert!(
        h.sync_response(a_sync).is_none(),
        "answered only once persisted"
    );
    let (_, snapshot) = h.last_persist();
    assert_eq!(snapshot.generation_id, 1);
    assert_eq!(
        snapshot
            .members
            .iter()
            .map(|m| m.assignment.as_slice())
            .collect::<Vec<_>>(),
        vec![&b"p0,p1"[..], b"p2", b""]
    );
    h.persisted(Ok(()));
    assert_eq!(h.state(), GroupState::Stable);
    assert_eq!(
        h.sync_response(a_sync).map(|r| r.assignment),
        Some(Bytes::from_static(b"p0,p1"))
    );
    let b = h.sync_response(b_sync).expect("b answered");
    assert_eq!((b.error, b.assignment), (None, Bytes::from_static(b"p2")));
    assert_eq!(b.protocol_name.as_deref(), Some("range"));
    // A late follower gets its assignment straight from the Stable group.
    let c_sync = h.sync(&ids[2], generation, Vec::new());
    assert_eq!(
        h.sync_response(c_sync).map(|r| (r.error, r.assignment)),
        Some((None, Bytes::new()))
    );
}

#[test]
fn sync_errors() {
    let mut h = Harness::new();
    let ids = h.stable(&["a", "b"]);
    let cases = [
        (h.sync("nobody", 1, Vec::new()), GroupError::UnknownMemberId),
        (
            h.sync(&ids[1], 0, Vec::new()),
            GroupError::IllegalGeneration,
        ),
    ];
    for (request, error) in cases {
        assert_eq!(h.sync_response(request).and_then(|r| r.error), Some(error));
    }
    let id = h.request_id();
    let wrong_name = SyncRequest {
        member_id: ids[1].clone(),
        group_instance_id: None,
        generation_id: 1,
        protocol_type: Some("consumer".to_owned()),
        protocol_name: Some("roundrobin".to_owned()),
        assignments: Vec::new(),
    };
    let effects = h.group.sync(h.now_ms, id, wrong_name);
    h.record(effects);
    assert_eq!(
        h.sync_response(id).and_then(|r| r.error),
        Some(GroupError::InconsistentGroupProtocol)
    );
    // During PreparingRebalance.
    h.join(join_req("c", &ids[0], range()));
    let during = h.sync(&ids[1], 1, Vec::new());
    assert_eq!(
        h.sync_response(during).and_then(|r| r.error),
        Some(GroupError::RebalanceInProgress)
    );
}

#[test]
fn assignment_persist_failure_fails_the_sync_and_rebalances() {
    let mut h = Harness::new();
    let reqs: Vec<RequestId> = ["a", "b"]
        .iter()
        .map(|c| h.join(join_req(c, "", range())))
        .collect();
    h.advance(FIRST_REBALANCE_MS);
    let ids: Vec<String> = reqs
        .iter()
        .map(|r| h.join_response(*r).expect("joined").member_id)
        .collect();
    let a = h.sync(&ids[0], 1, vec![assign(&ids[0], "x")]);
    let b = h.sync(&ids[1], 1, Vec::new());
    h.persisted(Err(GroupError::CoordinatorNotAvailable));
    assert_eq!(
        h.sync_response(a).and_then(|r| r.error),
        Some(GroupError::CoordinatorNotAvailable)
    );
    assert_eq!(
        h.sync_response(b).and_then(|r| r.error),
        Some(GroupError::CoordinatorNotAvailable)
    );
    assert_eq!(h.state(), GroupState::PreparingRebalance);
}

#[test]
fn oversized_assignment_fails_the_sync_and_rebalances() {
    let mut h = Harness::new();
    let a = h.join(join_req("a", "", range()));
    h.advance(FIRST_REBALANCE_MS);
    let id = h.join_response(a).expect("joined").member_id;
    let huge = MemberAssignment {
        member_id: id.clone(),
        assignment: Bytes::from(vec![1u8; 4096]),
    };
    let persists = h.persist_count();
    let sync = h.sync(&id, 1, vec![huge]);
    assert_eq!(
        h.sync_response(sync).and_then(|r| r.error),
        Some(GroupError::UnknownServerError)
    );
    assert_eq!(h.persist_count(), persists, "nothing persisted");
    assert_eq!(h.state(), GroupState::PreparingRebalance);
}

#[test]
fn group_max_size_is_enforced() {
    let mut h = Harness::with(GroupConfig {
        max_size: 2,
        ..config()
    });
    h.stable(&["a", "b"]);
    let refused = h.join_now(join_req("c", "", range()));
    assert_eq!(refused.error, Some(GroupError::GroupMaxSizeReached));
    assert_eq!(refused.member_id, "");
    assert_eq!(refused.error.map(GroupError::code), Some(81));
    assert_eq!(h.state(), GroupState::Stable);
    // During a rebalance only members that already rejoined count (Kafka), so c gets in while
    // a and b have not rejoined yet; d would be the third to rejoin.
    let ids: Vec<String> = h.group.member_ids().map(str::to_owned).collect();
    h.join(join_req("a", &ids[0], range()));
    h.join(join_req("c", "", range()));
    assert_eq!(
        h.join_now(join_req("d", "", range())).error,
        Some(GroupError::GroupMaxSizeReached)
    );
    assert_eq!(h.group.member_ids().count(), 3);
    // A member of the old generation coming back now is refused and dropped.
    let b = h.join_now(join_req("b", &ids[1], range()));
    assert_eq!(b.error, Some(GroupError::GroupMaxSizeReached));
    assert_eq!(h.group.member_ids().count(), 2);
    assert_eq!(
        h.state(),
        GroupState::CompletingRebalance,
        "everyone left has rejoined"
    );
    // Pending members are bounded as well.
    let mut h = Harness::with(GroupConfig {
        max_size: 1,
        ..config()
    });
    let pending = JoinRequest {
        require_known_member_id: true,
        ..join_req("c", "", range())
    };
    assert_eq!(
        h.join_now(pending.clone()).error,
        Some(GroupError::MemberIdRequired)
    );
    assert_eq!(
        h.join_now(pending).error,
        Some(GroupError::GroupMaxSizeReached)
    );
}

// ----------------------------------------------------------------------------------------------
// Stable -> PreparingRebalance and back

#[test]
fn heartbeat_answers_by_state() {
    let mut h = Harness::new();
    let a = h.join(join_req("a", "", range()));
    h.advance(FIRST_REBALANCE_MS);
    let id = h.join_response(a).expect("joined").member_id;
    assert_eq!(
        h.heartbeat(&id, 1),
        Ok(()),
        "CompletingRebalance accepts heartbeats"
    );
    h.complete_sync(std::slice::from_ref(&id), &id);
    assert_eq!(h.heartbeat(&id, 1), Ok(()));
    assert_eq!(h.heartbeat(&id, 0), Err(GroupError::IllegalGeneration));
    assert_eq!(h.heartbeat(&id, 2), Err(GroupError::IllegalGeneration));
    assert_eq!(h.heartbeat("ghost", 1), Err(GroupError::UnknownMemberId));
    h.join(join_req("b", "", range()));
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat(&id, 1), Err(GroupError::RebalanceInProgress));
}

#[test]
fn new_member_triggers_rebalance_that_completes_when_all_rejoin() {
    let mut h = Harness::new();
    let ids = h.stable(&["a", "b"]);
    let c = h.join(join_req("c", "", range()));
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(
        h.heartbeat(&ids[1], 1),
        Err(GroupError::RebalanceInProgress)
    );
    let rejoins = h.rejoin_all(&ids);
    // Everyone is in: no need to wait for the rebalance timeout.
    assert_eq!(h.state(), GroupState::CompletingRebalance);
    let leader = h.join_response(rejoins[0]).expect("a");
    assert_eq!(
        (leader.generation_id, leader.leader_id.as_str()),
        (2, ids[0].as_str())
    );
    assert_eq!(leader.members.len(), 3);
    assert_eq!(h.join_response(c).map(|r| r.generation_id), Some(2));
}

#[test]
fn rebalance_timeout_removes_members_that_did_not_rejoin() {
    let mut h = Harness::new();
    let ids = h.stable(&["a", "b"]);
    let c = h.join(join_req("c", "", range()));
    let a = h.join(join_req("c", &ids[0], range()));
    // b keeps heartbeating (so its session does not expire) but never rejoins.
    for _ in 0..5 {
        h.advance(5_000);
        assert_eq!(
            h.heartbeat(&ids[1], 1),
            Err(GroupError::RebalanceInProgress)
        );
    }
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    h.advance(5_000); // 30 s rebalance timeout
    assert_eq!(h.state(), GroupState::CompletingRebalance);
    assert_eq!(h.join_response(a).map(|r| r.generation_id), Some(2));
    assert!(h.join_response(c).is_some());
    assert_eq!(h.heartbeat(&ids[1], 2), Err(GroupError::UnknownMemberId));
    assert_eq!(h.group.member_ids().count(), 2);
}

#[test]
fn session_expiry_in_stable_removes_the_member_and_rebalances() {
    let mut h = Harness::new();
    let ids = h.stable(&["a", "b"]);
    h.advance(SESSION_MS as u64 - 1);
    assert_eq!(h.heartbeat(&ids[0], 1), Ok(()));
    h.advance(1); // b's session ends
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat(&ids[1], 1), Err(GroupError::UnknownMemberId));
    let a = h.join(join_req("a", &ids[0], range()));
    assert_eq!(
        h.join_response(a)
            .map(|r| (r.generation_id, r.members.len())),
        Some((2, 1))
    );
}

#[test]
fn session_expiry_during_a_rebalance_completes_it() {
    let mut h = Harness::new();
    let ids = h.stable(&["a", "b"]);
    h.advance(5_000);
    assert_eq!(h.heartbeat(&ids[0], 1), Ok(()));
    let c = h.join(join_req("c", "", range()));
    let a = h.join(join_req("a", &ids[0], range()));
    // a and c are parked: their own session deadlines pass without removing them.
    h.advance(4_999);
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    h.advance(1); // b's session (last touched at sync) ends long before the 30 s rebalance timeout
    assert_eq!(h.state(), GroupState::CompletingRebalance);
    assert_eq!(h.join_response(a).map(|r| r.members.len()), Some(2));
    assert_eq!(h.join_response(c).map(|r| r.generation_id), Some(2));
    h.advance(SESSION_MS as u64 - 1);
    assert_eq!(
        h.heartbeat(&ids[0], 2),
        Ok(()),
        "parked members were given a fresh session"
    );
}

#[test]
fn follower_rejoining_with_same_metadata_gets_current_generation() {
    let mut h = Harness::new();
    let ids = h.stable(&["a", "b"]);
    let response = h.join_now(join_req("b", &ids[1], range()));
    assert_eq!((response.error, response.generation_id), (None, 1));
    assert!(response.members.is_empty());
    assert_eq!(h.state(), GroupState::Stable);
    // Changed metadata forces a rebalance.
    h.join(join_req("b", &ids[1], vec![proto("range", "new-topics")]));
    assert_eq!(h.state(), GroupState::PreparingRebalance);
}

#[test]
fn leader_rejoining_stable_group_forces_a_rebalance() {
    let mut h = Harness::new();
    let ids = h.stable(&["a", "b"]);
    let a = h.join(join_req("a", &ids[0], range()));
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert!(h.join_response(a).is_none());
}

#[test]
fn rejoin_during_completing_rebalance_with_same_metadata_repeats_the_answer() {
    let mut h = Harness::new();
    let reqs: Vec<RequestId> = ["a", "b"]
        .iter()
        .map(|c| h.join(join_req(c, "", range())))
        .collect();
    h.advance(FIRST_REBALANCE_MS);
    let leader = h.join_response(reqs[0]).expect("a").member_id;
    let again = h.join_now(join_req("a", &leader, range()));
    assert_eq!(
        (again.generation_id, again.members.len()),
        (1, 2),
        "the lost leader response again"
    );
    assert_eq!(h.state(), GroupState::CompletingRebalance);
}

#[test]
fn duplicate_join_answers_the_superseded_request() {
    let mut h = Harness::new();
    let ids = h.stable(&["a", "b"]);
    let first = h.join(join_req("a", &ids[0], range()));
    let second = h.join(join_req("a", &ids[0], range()));
    assert_eq!(
        h.join_response(first).and_then(|r| r.error),
        Some(GroupError::RebalanceInProgress)
    );
    assert!(h.join_response(second).is_none());
}

#[test]
fn leader_leaving_mid_sync() {
    let mut h = Harness::new();
    let reqs: Vec<RequestId> = ["a", "b", "c"]
        .iter()
        .map(|c| h.join(join_req(c, "", range())))
        .collect();
    h.advance(FIRST_REBALANCE_MS);
    let ids: Vec<String> = reqs
        .iter()
        .map(|r| h.join_response(*r).expect("joined").member_id)
        .collect();
    let b = h.sync(&ids[1], 1, Vec::new());
    let c = h.sync(&ids[2], 1, Vec::new());
    let left = h.leave(&[(&ids[0], None)]);
    assert_eq!(left.error, None);
    assert_eq!(left.members[0].error, None);
    // Followers waiting in SyncGroup are told to rejoin.
    assert_eq!(
        h.sync_response(b).and_then(|r| r.error),
        Some(GroupError::RebalanceInProgress)
    );
    assert_eq!(
        h.sync_response(c).and_then(|r| r.error),
        Some(GroupError::RebalanceInProgress)
    );
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(
        h.group.leader_id(),
        Some(ids[1].as_str()),
        "leadership passes to the earliest member"
    );
    let rejoins = h.rejoin_all(&ids[1..]);
    let response = h.join_response(rejoins[0]).expect("b");
    assert_eq!(
        (response.generation_id, response.leader_id.as_str()),
        (2, ids[1].as_str())
    );
    assert_eq!(response.members.len(), 2);
}

#[test]
fn leader_that_never_syncs_is_removed_by_the_pending_sync_timeout() {
    let mut h = Harness::new();
    // Session longer than the rebalance timeout, so the sync deadline fires first.
    let long = |c: &str| JoinRequest {
        session_timeout_ms: 60_000,
        rebalance_timeout_ms: 20_000,
        ..join_req(c, "", range())
    };
    let a = h.join(long("a"));
    let b = h.join(long("b"));
    h.advance(FIRST_REBALANCE_MS);
    let (ida, idb) = (
        h.join_response(a).expect("a").member_id,
        h.join_response(b).expect("b").member_id,
    );
    let sync = h.sync(&idb, 1, Vec::new());
    h.advance(20_000);
    assert_eq!(
        h.sync_response(sync).and_then(|r| r.error),
        Some(GroupError::RebalanceInProgress)
    );
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(h.heartbeat(&ida, 1), Err(GroupError::UnknownMemberId));
    assert_eq!(h.group.leader_id(), Some(idb.as_str()));
}

#[test]
fn leader_forced_out_by_rebalance_timeout_gets_a_successor() {
    let mut h = Harness::new();
    let ids = h.stable(&["a", "b"]);
    // b forces a rebalance with new metadata; the leader a never rejoins but keeps heartbeating.
    let b = h.join(join_req("b", &ids[1], vec![proto("range", "v2")]));
    for _ in 0..6 {
        h.advance(5_000);
        let _ = h.heartbeat(&ids[0], 1);
    }
    let response = h.join_response(b).expect("b joined");
    assert_eq!(
        (response.leader_id.as_str(), response.members.len()),
        (ids[1].as_str(), 1)
    );
}

// ----------------------------------------------------------------------------------------------
// LeaveGroup, Empty, Dead

#[test]
fn batch_leave_removes_members_and_reports_each() {
    let mut h = Harness::new();
    let s = h.join(static_req("inst-s", "", range()));
    let reqs: Vec<RequestId> = ["a", "b"]
        .iter()
        .map(|c| h.join(join_req(c, "", range())))
        .collect();
    h.advance(FIRST_REBALANCE_MS);
    let sid = h.join_response(s).expect("s").member_id;
    assert_eq!(
        sid, "inst-s-u1",
        "static member ids start with the instance id"
    );
    let ids: Vec<String> = reqs
        .iter()
        .map(|r| h.join_response(*r).expect("joined").member_id)
        .collect();
    h.complete_sync(&[sid.clone(), ids[0].clone(), ids[1].clone()], &sid);
    let response = h.leave(&[
        ("", Some("inst-s")),         // administrative removal by instance id
        (&ids[0], None),              // plain leave
        ("ghost", None),              // unknown
        ("c-other", Some("inst-zz")), // unknown instance, unknown member
    ]);
    let errors: Vec<Option<GroupError>> = response.members.iter().map(|m| m.error).collect();
    assert_eq!(
        errors,
        vec![
            None,
            None,
            Some(GroupError::UnknownMemberId),
            Some(GroupError::UnknownMemberId)
        ]
    );
    assert_eq!(
        h.group.member_ids().collect::<Vec<_>>(),
        vec![ids[1].as_str()]
    );
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(h.group.leader_id(), Some(ids[1].as_str()));
}

#[test]
fn leave_with_a_fenced_instance_is_refused() {
    let mut h = Harness::new();
    let s = h.join(static_req("inst", "", range()));
    h.advance(FIRST_REBALANCE_MS);
    let sid = h.join_response(s).expect("s").member_id;
    let response = h.leave(&[("inst-old", Some("inst"))]);
    assert_eq!(
        response.members[0].error,
        Some(GroupError::FencedInstanceId)
    );
    assert_eq!(h.group.member_ids().collect::<Vec<_>>(), vec![sid.as_str()]);
}

#[test]
fn last_member_leaving_empties_the_group() {
    let mut h = Harness::new();
    let ids = h.stable(&["a", "b"]);
    h.leave(&[(&ids[0], None), (&ids[1], None)]);
    assert_eq!(h.state(), GroupState::Empty);
    assert_eq!(
        h.generation(),
        2,
        "going Empty completes a (memberless) generation"
    );
    let (_, snapshot) = h.last_persist();
    assert!(snapshot.members.is_empty());
    assert_eq!((snapshot.generation_id, snapshot.protocol_name), (2, None));
    assert_eq!(snapshot.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(h.group.leader_id(), None);
    // An Empty group rebalances again with the initial delay.
    let a = h.join(join_req("a", "", range()));
    assert!(h.join_response(a).is_none());
    h.advance(FIRST_REBALANCE_MS);
    assert_eq!(h.join_response(a).map(|r| r.generation_id), Some(3));
}

#[test]
fn all_members_expiring_empties_the_group() {
    let mut h = Harness::new();
    h.stable(&["a", "b"]);
    h.advance(SESSION_MS as u64);
    assert_eq!(h.state(), GroupState::Empty);
    assert_eq!(h.generation(), 2);
}

#[test]
fn delete_only_an_empty_group_then_dead() {
    let mut h = Harness::new();
    let ids = h.stable(&["a"]);
    assert_eq!(h.group.delete(), Err(GroupError::NonEmptyGroup));
    h.leave(&[(&ids[0], None)]);
    assert_eq!(h.group.delete(), Ok(()));
    assert_eq!(h.state(), GroupState::Dead);
    assert_eq!(h.group.delete(), Err(GroupError::GroupIdNotFound));
    assert_eq!(
        h.join_now(join_req("a", "", range())).error,
        Some(GroupError::CoordinatorNotAvailable)
    );
    assert_eq!(
        h.heartbeat(&ids[0], 2),
        Err(GroupError::CoordinatorNotAvailable)
    );
    assert_eq!(
        h.leave(&[(&ids[0], None)]).error,
        Some(GroupError::CoordinatorNotAvailable)
    );
    assert_eq!(
        h.commit("", None, -1),
        Err(GroupError::CoordinatorNotAvailable)
    );
}

// ----------------------------------------------------------------------------------------------
// Static membership (KIP-345)

/// A Stable group of static members `s1`, `s2` plus dynamic `d`; returns their member ids.
fn static_group(h: &mut Harness) -> Vec<String> {
    let reqs = [
        h.join(static_req("s1", "", range())),
        h.join(static_req("s2", "", range())),
        h.join(join_req("d", "", range())),
    ];
    h.advance(FIRST_REBALANCE_MS);
    let ids: Vec<String> = reqs
        .iter()
        .map(|r| h.join_response(*r).expect("joined").member_id)
        .collect();
    h.complete_sync(&ids, &ids[0].clone());
    ids
}

#[test]
fn static_member_replaced_by_new_instance_without_rebalance() {
    let mut h = Harness::new();
    let ids = static_group(&mut h);
    let persists = h.persist_count();
    let join = h.join(static_req("s2", "", range()));
    assert_eq!(h.state(), GroupState::Stable, "no rebalance");
    assert_eq!(
        h.persist_count(),
        persists + 1,
        "the new member id is persisted first"
    );
    let (_, snapshot) = h.last_persist();
    assert!(snapshot
        .members
        .iter()
        .any(|m| m.member_id == "s2-u4" && m.assignment == format!("a-{}", ids[1]).into_bytes()));
    assert!(h.join_response(join).is_none());
    h.persisted(Ok(()));
    let response = h.join_response(join).expect("answered after persist");
    assert_eq!(
        (
            response.error,
            response.generation_id,
            response.member_id.as_str()
        ),
        (None, 1, "s2-u4")
    );
    assert_eq!(response.leader_id, ids[0]);
    // The new instance gets the old instance's assignment; the old id is fenced everywhere.
    let sync = h.sync("s2-u4", 1, Vec::new());
    assert_eq!(
        h.sync_response(sync).map(|r| r.assignment),
        Some(Bytes::from(format!("a-{}", ids[1])))
    );
    assert_eq!(
        h.heartbeat_static(&ids[1], Some("s2"), 1),
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(h.heartbeat_static("s2-u4", Some("s2"), 1), Ok(()));
    assert_eq!(
        h.commit(&ids[1], Some("s2"), 1),
        Err(GroupError::FencedInstanceId)
    );
    let stale = h.join_now(static_req("s2", &ids[1], range()));
    assert_eq!(stale.error, Some(GroupError::FencedInstanceId));
    assert_eq!(h.generation(), 1);
}

#[test]
fn static_leader_replaced_is_not_told_it_leads() {
    let mut h = Harness::new();
    let ids = static_group(&mut h);
    let join = h.join(static_req("s1", "", range()));
    h.persisted(Ok(()));
    let response = h.join_response(join).expect("answered");
    assert_eq!(
        response.leader_id, ids[0],
        "old leader id: the new one must not assign"
    );
    assert_eq!(
        h.group.leader_id(),
        Some(response.member_id.as_str()),
        "but it does lead"
    );
    // v9+ clients are told they lead and must skip the assignment.
    let v9 = h.join(JoinRequest {
        supports_skip_assignment: true,
        ..static_req("s1", "", range())
    });
    h.persisted(Ok(()));
    let response = h.join_response(v9).expect("answered");
    assert!(response.skip_assignment);
    assert_eq!(response.leader_id, response.member_id);
    assert_eq!(response.members.len(), 3);
}

#[test]
fn static_replacement_persist_failure_reverts_to_the_old_member() {
    let mut h = Harness::new();
    let ids = static_group(&mut h);
    let join = h.join(static_req("s2", "", range()));
    h.persisted(Err(GroupError::NotCoordinator));
    let response = h.join_response(join).expect("answered");
    assert_eq!(response.error, Some(GroupError::NotCoordinator));
    assert_eq!(
        h.heartbeat_static(&ids[1], Some("s2"), 1),
        Ok(()),
        "the old instance carries on"
    );
    assert_eq!(h.state(), GroupState::Stable);
}

#[test]
fn static_member_replaced_with_a_protocol_change_rebalances() {
    let mut h = Harness::new();
    let s = h.join(static_req(
        "s",
        "",
        vec![proto("range", ""), proto("roundrobin", "")],
    ));
    h.advance(FIRST_REBALANCE_MS);
    let id = h.join_response(s).expect("s").member_id;
    h.complete_sync(std::slice::from_ref(&id), &id);
    let join = h.join(static_req(
        "s",
        "",
        vec![proto("roundrobin", ""), proto("range", "")],
    ));
    // The only member now prefers roundrobin: the selected protocol changes.
    assert_eq!(
        h.state(),
        GroupState::CompletingRebalance,
        "rebalanced at once (all members joined)"
    );
    let response = h.join_response(join).expect("joined");
    assert_eq!(
        (response.generation_id, response.protocol_name.as_deref()),
        (2, Some("roundrobin"))
    );
}

#[test]
fn static_member_replaced_during_completing_rebalance_rebalances() {
    let mut h = Harness::new();
    let reqs = [
        h.join(static_req("s1", "", range())),
        h.join(join_req("d", "", range())),
    ];
    h.advance(FIRST_REBALANCE_MS);
    let ids: Vec<String> = reqs
        .iter()
        .map(|r| h.join_response(*r).expect("joined").member_id)
        .collect();
    // The old s1 instance is waiting in SyncGroup when its replacement arrives.
    let old_sync = h.sync(&ids[0], 1, vec![assign(&ids[0], "x")]);
    let d_sync = h.sync(&ids[1], 1, Vec::new());
    let new = h.join(static_req("s1", "", range()));
    assert_eq!(
        h.sync_response(old_sync).and_then(|r| r.error),
        Some(GroupError::FencedInstanceId)
    );
    assert_eq!(
        h.sync_response(d_sync).and_then(|r| r.error),
        Some(GroupError::RebalanceInProgress)
    );
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    // The pending assignment persist is moot now.
    h.persisted(Ok(()));
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    h.join(join_req("d", &ids[1], range()));
    assert_eq!(h.join_response(new).map(|r| r.generation_id), Some(2));
}

#[test]
fn static_member_replaced_during_preparing_rebalance_joins_it() {
    let mut h = Harness::new();
    let ids = static_group(&mut h);
    let d = h.join(join_req("d", &ids[2], vec![proto("range", "v2")]));
    let old = h.join(static_req("s2", &ids[1], range()));
    let new = h.join(static_req("s2", "", range()));
    assert_eq!(
        h.join_response(old).and_then(|r| r.error),
        Some(GroupError::FencedInstanceId)
    );
    h.join(static_req("s1", &ids[0], range()));
    assert_eq!(h.state(), GroupState::CompletingRebalance);
    assert_eq!(
        h.join_response(new).map(|r| (r.generation_id, r.member_id)),
        Some((2, "s2-u4".to_owned()))
    );
    assert!(h.join_response(d).is_some());
}

#[test]
fn static_member_that_does_not_rejoin_keeps_its_place_until_its_session_expires() {
    let mut h = Harness::new();
    let long = |i: &str| JoinRequest {
        session_timeout_ms: 60_000,
        rebalance_timeout_ms: 10_000,
        ..static_req(i, "", range())
    };
    let reqs = [h.join(long("s1")), h.join(long("s2"))];
    h.advance(FIRST_REBALANCE_MS);
    let ids: Vec<String> = reqs
        .iter()
        .map(|r| h.join_response(*r).expect("joined").member_id)
        .collect();
    h.complete_sync(&ids, &ids[0].clone());
    // s1 rejoins with new metadata: a rebalance that s2 ignores.
    let s1 = h.join(JoinRequest {
        member_id: ids[0].clone(),
        protocols: vec![proto("range", "v2")],
        ..long("s1")
    });
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    h.advance(10_000); // rebalance timeout: s2 did not rejoin but is static, so it stays
    let response = h.join_response(s1).expect("s1 joined");
    assert_eq!(response.members.len(), 2);
    assert_eq!(h.group.member_ids().count(), 2);
}

#[test]
fn static_member_with_unknown_instance_and_known_id_is_unknown() {
    let mut h = Harness::new();
    let ids = h.stable(&["a"]);
    let response = h.join_now(static_req("never-seen", &ids[0], range()));
    assert_eq!(response.error, Some(GroupError::UnknownMemberId));
}

// ----------------------------------------------------------------------------------------------
// OffsetCommit validation

#[test]
fn commit_validation_follows_kafka() {
    let mut h = Harness::new();
    // Simple commits (no group management) are fine on an Empty group...
    assert_eq!(h.commit("", None, -1), Ok(()));
    assert_eq!(validate_commit_unknown_group(-1), Ok(()));
    assert_eq!(
        validate_commit_unknown_group(3),
        Err(GroupError::IllegalGeneration)
    );
    // ...but a generation on an Empty group names a member that is not there.
    assert_eq!(h.commit("", None, 0), Err(GroupError::UnknownMemberId));
    let a = h.join(join_req("a", "", range()));
    h.advance(FIRST_REBALANCE_MS);
    let id = h.join_response(a).expect("a").member_id;
    assert_eq!(
        h.commit(&id, None, 1),
        Err(GroupError::RebalanceInProgress),
        "CompletingRebalance"
    );
    h.complete_sync(std::slice::from_ref(&id), &id);
    assert_eq!(h.commit(&id, None, 1), Ok(()));
    assert_eq!(
        h.commit(&id, None, 0),
        Err(GroupError::IllegalGeneration),
        "stale generation"
    );
    assert_eq!(h.commit("ghost", None, 1), Err(GroupError::UnknownMemberId));
    assert_eq!(
        h.commit("", None, -1),
        Err(GroupError::UnknownMemberId),
        "members only once non-empty"
    );
    assert_eq!(
        h.commit(&id, Some("inst"), 1),
        Err(GroupError::UnknownMemberId),
        "unknown instance"
    );
    // Transactional commits without member and generation are allowed in any state.
    let txn = CommitIdentity {
        member_id: String::new(),
        group_instance_id: None,
        generation_id: -1,
    };
    assert_eq!(h.group.validate_txn_commit(&txn), Ok(()));
    // During PreparingRebalance commits are still accepted (and count as heartbeats).
    h.join(join_req("b", "", range()));
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    h.advance(SESSION_MS as u64 - 1);
    assert_eq!(h.commit(&id, None, 1), Ok(()));
    h.advance(2);
    assert_eq!(
        h.heartbeat(&id, 1),
        Err(GroupError::RebalanceInProgress),
        "still a member"
    );
}

// ----------------------------------------------------------------------------------------------
// Timers and persistence

#[test]
fn schedule_timer_tracks_the_earliest_deadline() {
    let mut h = Harness::new();
    let id = h.request_id();
    let effects = h
        .group
        .join(1_000, id, join_req("a", "", range()), &mut h.ids);
    assert!(effects.contains(&Effect::ScheduleTimer {
        at_ms: 1_000 + DELAY_MS
    }));
    assert_eq!(h.group.next_deadline_ms(), Some(1_000 + DELAY_MS));
    // Nothing changed: no new timer.
    let effects = h.group.tick(1_500);
    assert!(effects.is_empty());
}

#[test]
fn snapshot_restores_a_stable_group() {
    let mut h = Harness::new();
    let ids = static_group(&mut h);
    let snapshot = h.group.snapshot();
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&snapshot).expect("serialize");
    let decoded =
        rkyv::from_bytes::<GroupSnapshot, rkyv::rancor::Error>(&bytes).expect("deserialize");
    assert_eq!(decoded, snapshot);
    let (restored, effects) = GroupMachine::restore(50_000, decoded, config());
    assert!(effects.contains(&Effect::ScheduleTimer {
        at_ms: 50_000 + SESSION_MS as u64
    }));
    let mut r = Harness::new();
    r.group = restored;
    r.now_ms = 50_000;
    assert_eq!(r.state(), GroupState::Stable);
    assert_eq!(r.generation(), 1);
    assert_eq!(r.group.leader_id(), Some(ids[0].as_str()));
    assert_eq!(r.group.snapshot(), snapshot);
    assert_eq!(r.heartbeat(&ids[2], 1), Ok(()));
    let sync = r.sync(&ids[1], 1, Vec::new());
    assert_eq!(
        r.sync_response(sync).map(|s| s.assignment),
        Some(Bytes::from(format!("a-{}", ids[1])))
    );
    // Static membership survives the restart.
    assert_eq!(
        r.join_now(static_req("s1", "old", range())).error,
        Some(GroupError::FencedInstanceId)
    );
    // A member rejoining with the same subscription does not rebalance.
    assert_eq!(r.join_now(join_req("d", &ids[2], range())).generation_id, 1);
    // Sessions run from the restore: s1 and s2 (last seen at the restore) expire, d heartbeats.
    r.advance(5_000);
    assert_eq!(r.heartbeat(&ids[2], 1), Ok(()));
    r.advance(5_000);
    assert_eq!(r.state(), GroupState::PreparingRebalance);
    assert_eq!(
        r.group.member_ids().collect::<Vec<_>>(),
        vec![ids[2].as_str()]
    );
}

#[test]
fn restore_of_an_empty_group() {
    let mut h = Harness::new();
    let ids = h.stable(&["a"]);
    h.leave(&[(&ids[0], None)]);
    let (_, snapshot) = h.last_persist();
    let (restored, effects) = GroupMachine::restore(0, snapshot, config());
    assert!(effects.is_empty());
    assert_eq!(
        (restored.state(), restored.generation_id()),
        (GroupState::Empty, 2)
    );
}

#[test]
fn rebalance_timeout_completes_with_only_the_new_member() {
    let mut h = Harness::new();
    let ids = h.stable(&["a"]);
    // b joins; a never rejoins but keeps heartbeating, so only the rebalance timeout ends it.
    let b = h.join(join_req("b", "", vec![proto("range", "")]));
    for _ in 0..5 {
        h.advance(5_000);
        assert_eq!(
            h.heartbeat(&ids[0], 1),
            Err(GroupError::RebalanceInProgress)
        );
    }
    h.advance(REBALANCE_MS as u64 - 25_000 - 1);
    assert!(h.join_response(b).is_none());
    // Rebalance timeout 30 s: a is dropped, b completes the generation.
    h.advance(1);
    assert_eq!(h.join_response(b).map(|r| r.generation_id), Some(2));
    assert_eq!(h.group.member_ids().count(), 1);
    assert_ne!(h.group.member_ids().next(), Some(ids[0].as_str()));
}

#[test]
fn error_codes_match_kafka() {
    let codes = [
        (GroupError::UnknownServerError, -1),
        (GroupError::CoordinatorNotAvailable, 15),
        (GroupError::NotCoordinator, 16),
        (GroupError::IllegalGeneration, 22),
        (GroupError::InconsistentGroupProtocol, 23),
        (GroupError::InvalidGroupId, 24),
        (GroupError::UnknownMemberId, 25),
        (GroupError::InvalidSessionTimeout, 26),
        (GroupError::RebalanceInProgress, 27),
        (GroupError::InvalidRequest, 42),
        (GroupError::NonEmptyGroup, 68),
        (GroupError::GroupIdNotFound, 69),
        (GroupError::MemberIdRequired, 79),
        (GroupError::GroupMaxSizeReached, 81),
        (GroupError::FencedInstanceId, 82),
    ];
    for (error, code) in codes {
        assert_eq!(error.code(), code, "{error}");
    }
    assert_eq!(error_code(None), 0);
}

#[test]
fn member_leaving_during_the_initial_delay_leaves_an_empty_group() {
    let mut h = Harness::new();
    let a = h.join(join_req("a", "", range()));
    let left = h.leave(&[("a-u1", None)]);
    assert_eq!(left.members[0].error, None);
    assert_eq!(
        h.join_response(a).and_then(|r| r.error),
        Some(GroupError::UnknownMemberId),
        "its parked join is answered"
    );
    // The initial delay still runs its course (Kafka's InitialDelayedJoin only expires).
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    h.advance(DELAY_MS);
    assert_eq!((h.state(), h.generation()), (GroupState::Empty, 1));
    assert!(h.last_persist().1.members.is_empty());
}

#[test]
fn static_members_that_never_rejoin_hold_the_rebalance_until_their_sessions_expire() {
    let mut h = Harness::new();
    let long = |i: &str| JoinRequest {
        session_timeout_ms: 60_000,
        rebalance_timeout_ms: 10_000,
        ..static_req(i, "", range())
    };
    let reqs = [h.join(long("s1")), h.join(long("s2"))];
    h.advance(FIRST_REBALANCE_MS);
    let ids: Vec<String> = reqs
        .iter()
        .map(|r| h.join_response(*r).expect("joined").member_id)
        .collect();
    h.complete_sync(&ids, &ids[0].clone());
    let synced_at = h.now_ms;
    // A dynamic member starts a rebalance and leaves again; neither static member rejoins.
    let d = h.join(join_req("d", "", range()));
    h.leave(&[("d-u3", None)]);
    assert!(h.join_response(d).is_some());
    h.advance(10_000);
    // Nobody rejoined, but static members are kept: the rebalance waits another timeout.
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(h.group.member_ids().count(), 2);
    h.advance(synced_at + 60_000 - h.now_ms);
    // Their sessions expired: the group empties and the rebalance completes.
    assert_eq!((h.state(), h.generation()), (GroupState::Empty, 2));
}

#[test]
fn describe_shows_metadata_and_assignments_only_when_stable() {
    let mut h = Harness::new();
    assert_eq!(h.group.describe().state, GroupState::Empty);
    assert!(h.group.describe().members.is_empty());
    let ids = h.stable(&["a", "b"]);
    let d = h.group.describe();
    assert_eq!(
        (d.state, d.protocol_type.as_str(), d.protocol_name.as_str()),
        (GroupState::Stable, "consumer", "range")
    );
    assert_eq!(d.members.len(), 2);
    for (m, id) in d.members.iter().zip(&ids) {
        assert_eq!(&m.member_id, id);
        assert_eq!(m.client_host, "/10.0.0.1");
        assert_eq!(&m.metadata[..], b"sub");
        assert_eq!(m.assignment, Bytes::from(format!("a-{id}")));
    }
    assert_eq!(d.members[0].client_id, "a");
    // A rebalance hides the protocol, metadata and assignments (Kafka's summaryNoMetadata).
    h.join(join_req("c", "", range()));
    let d = h.group.describe();
    assert_eq!(d.state, GroupState::PreparingRebalance);
    assert_eq!(d.protocol_name, "");
    assert!(d
        .members
        .iter()
        .all(|m| m.metadata.is_empty() && m.assignment.is_empty()));
    assert_eq!(d.protocol_type, "consumer");
}
