//! [`GroupMachine`]: one classic consumer group. See the module docs in `group/mod.rs` for the
//! driver contract; behaviour follows Kafka's `GroupCoordinator` (3.x, classic protocol).

use bytes::Bytes;

use super::{
    CommitIdentity, DescribedMember, Effect, GroupConfig, GroupDescription, GroupError,
    GroupSnapshot, GroupState, HeartbeatRequest, JoinMember, JoinRequest, JoinResponse,
    LeaveMember, LeaveMemberResult, LeaveResponse, MemberIdSource, MemberSnapshot, PersistId,
    Protocol, RequestId, SyncRequest, SyncResponse, MAX_PROTOCOLS_PER_MEMBER,
    NEW_MEMBER_JOIN_TIMEOUT_MS,
};

/// Rounds of timer processing per input. Each round fires everything already due; a round can
/// only create a due deadline through a zero delay, which settles within two rounds. The cap
/// turns a pathological configuration into a later tick instead of a loop.
const MAX_TIMER_ROUNDS: usize = 8;

/// Fixed per-protocol charge in the metadata bound, so many empty protocols still cost memory.
const PROTOCOL_OVERHEAD_BYTES: usize = 16;

/// OffsetCommit from a client that does not use group management, for a group id the
/// coordinator does not know: allowed (the driver then creates the group with
/// [`GroupMachine::new`]) only with a negative generation; otherwise ILLEGAL_GENERATION (it can
/// only come from an older generation of a group that is gone), as Kafka answers.
pub fn validate_commit_unknown_group(generation_id: i32) -> Result<(), GroupError> {
    if generation_id < 0 {
        Ok(())
    } else {
        Err(GroupError::IllegalGeneration)
    }
}

#[derive(Debug, Clone)]
struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocols: Vec<Protocol>,
    assignment: Bytes,
    /// Parked JoinGroup, answered when the rebalance completes.
    join_request: Option<RequestId>,
    /// Parked SyncGroup, answered when the leader's assignment is persisted.
    sync_request: Option<RequestId>,
    /// Has not yet completed a join: expires after NEW_MEMBER_JOIN_TIMEOUT_MS even while parked.
    is_new: bool,
    /// Joined this generation but has not sent SyncGroup yet (Kafka's pendingSyncMembers).
    pending_sync: bool,
    /// Session expiry; `None` once it passed while the member was parked (a parked member
    /// satisfies its heartbeat; a fresh deadline is set when it is answered).
    session_deadline_ms: Option<u64>,
}

impl Member {
    fn supports(&self, name: &str) -> bool {
        self.protocols.iter().any(|p| p.name == name)
    }

    fn metadata(&self, name: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    fn is_awaiting(&self) -> bool {
        self.join_request.is_some() || self.sync_request.is_some()
    }

    fn touch(&mut self, now_ms: u64) {
        self.session_deadline_ms = Some(now_ms.saturating_add(self.session_timeout_ms));
    }
}

#[derive(Debug, Clone)]
struct PendingMember {
    member_id: String,
    deadline_ms: u64,
}

/// The delayed completion of PreparingRebalance (Kafka's InitialDelayedJoin / DelayedJoin).
#[derive(Debug, Clone, Copy)]
enum Rebalance {
    /// From Empty: completes only at the deadline, re-armed while new members keep arriving.
    Initial {
        deadline_ms: u64,
        remaining_ms: u64,
        new_member_added: bool,
    },
    /// Completes as soon as every member rejoined, or at the deadline.
    Delayed { deadline_ms: u64 },
}

impl Rebalance {
    fn deadline_ms(self) -> u64 {
        match self {
            Rebalance::Initial { deadline_ms, .. } | Rebalance::Delayed { deadline_ms } => {
                deadline_ms
            }
        }
    }
}

#[derive(Debug, Clone)]
enum PersistKind {
    /// The leader's assignment: members get it once it is durable.
    Assignment {
        generation_id: i32,
        assignments: Vec<(String, Bytes)>,
    },
    /// A static member replaced in a Stable group: it is answered once the new id is durable.
    StaticReplace(Box<StaticReplace>),
}

/// What a Stable static-member replacement needs to answer or undo it.
#[derive(Debug, Clone)]
struct StaticReplace {
    member_id: String,
    old_member_id: String,
    request_id: RequestId,
    /// Leader before the replacement.
    leader_id: String,
    supports_skip_assignment: bool,
    old_protocols: Vec<Protocol>,
    old_session_timeout_ms: u64,
    old_rebalance_timeout_ms: u64,
}

#[derive(Debug, Clone)]
struct PendingPersist {
    id: PersistId,
    kind: PersistKind,
}

/// One classic consumer group. Pure: every method takes `now_ms` and returns effects.
#[derive(Debug, Clone)]
pub struct GroupMachine {
    group_id: String,
    config: GroupConfig,
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader_id: Option<String>,
    /// In join order: the leader is re-elected as the earliest remaining member.
    members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet rejoined.
    pending_members: Vec<PendingMember>,
    /// Set only in PreparingRebalance.
    rebalance: Option<Rebalance>,
    /// Members still `pending_sync` at this time are removed (Kafka's DelayedSync).
    sync_deadline_ms: Option<u64>,
    persists: Vec<PendingPersist>,
    next_persist_id: u64,
    /// Last ScheduleTimer emitted, so the driver only hears about changes.
    timer_at_ms: Option<u64>,
}

impl GroupMachine {
    /// A new Empty group at generation 0 (Kafka creates it on the first JoinGroup with an empty
    /// member id, or on a simple OffsetCommit).
    pub fn new(group_id: impl Into<String>, config: GroupConfig) -> Self {
        GroupMachine {
            group_id: group_id.into(),
            config,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: Vec::new(),
            pending_members: Vec::new(),
            rebalance: None,
            sync_deadline_ms: None,
            persists: Vec::new(),
            next_persist_id: 0,
            timer_at_ms: None,
        }
    }

    /// Rebuilds a group from its last persisted snapshot: Stable if it has members (each with a
    /// fresh session deadline, as Kafka schedules heartbeats on load), else Empty. A group loaded
    /// above `max_size` (the limit was lowered) rebalances, as in Kafka.
    pub fn restore(
        now_ms: u64,
        snapshot: GroupSnapshot,
        config: GroupConfig,
    ) -> (Self, Vec<Effect>) {
        let mut machine = GroupMachine::new(snapshot.group_id, config);
        machine.generation_id = snapshot.generation_id;
        machine.protocol_type = snapshot.protocol_type;
        machine.protocol_name = snapshot.protocol_name;
        for m in snapshot.members {
            let protocols = match &machine.protocol_name {
                Some(name) => vec![Protocol {
                    name: name.clone(),
                    metadata: Bytes::from(m.subscription),
                }],
                None => Vec::new(),
            };
            let mut member = Member {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: non_negative(m.session_timeout_ms),
                rebalance_timeout_ms: non_negative(m.rebalance_timeout_ms),
                protocols,
                assignment: Bytes::from(m.assignment),
                join_request: None,
                sync_request: None,
                is_new: false,
                pending_sync: false,
                session_deadline_ms: None,
            };
            member.touch(now_ms);
            machine.members.push(member);
        }
        if machine.members.is_empty() {
            machine.protocol_name = None;
        } else {
            machine.state = GroupState::Stable;
            let leader_ok = snapshot
                .leader_id
                .as_deref()
                .is_some_and(|l| machine.members.iter().any(|m| m.member_id == l));
            machine.leader_id = if leader_ok {
                snapshot.leader_id
            } else {
                machine.members.first().map(|m| m.member_id.clone())
            };
        }
        let mut out = Vec::new();
        if machine.members.len() > machine.config.max_size {
            machine.prepare_rebalance(now_ms, &mut out);
        }
        let effects = machine.finish(now_ms, out);
        (machine, effects)
    }

    /// The persisted part of the group as it is now.
    pub fn snapshot(&self) -> GroupSnapshot {
        self.snapshot_with(None)
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }
    pub fn state(&self) -> GroupState {
        self.state
    }
    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }
    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }
    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }
    pub fn leader_id(&self) -> Option<&str> {
        self.leader_id.as_deref()
    }
    /// Member ids in join order.
    pub fn member_ids(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.member_id.as_str())
    }
    /// The group as DescribeGroups shows it (Kafka's `GroupMetadata.summary`).
    pub fn describe(&self) -> GroupDescription {
        let stable = self.state == GroupState::Stable;
        let protocol_name = match (&self.protocol_name, stable) {
            (Some(p), true) => p.clone(),
            _ => String::new(),
        };
        let members = self
            .members
            .iter()
            .map(|m| DescribedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.metadata(&protocol_name)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        GroupDescription {
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name,
            members,
        }
    }

    /// The earliest pending deadline, if any (the driver's timer).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let pending = self.pending_members.iter().map(|p| p.deadline_ms);
        let sessions = self.members.iter().filter_map(|m| m.session_deadline_ms);
        let rebalance = self
            .rebalance
            .filter(|_| self.state == GroupState::PreparingRebalance)
            .map(Rebalance::deadline_ms);
        let sync = self.sync_deadline_ms.filter(|_| {
            matches!(
                self.state,
                GroupState::CompletingRebalance | GroupState::Stable
            ) && self.members.iter().any(|m| m.pending_sync)
        });
        pending.chain(sessions).chain(rebalance).chain(sync).min()
    }

    /// Fires every deadline that has passed.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        self.fire_expired(now_ms, &mut out);
        self.finish(now_ms, out)
    }

    /// JoinGroup. The answer comes as an [`Effect::RespondJoin`] for `request_id`, now or when
    /// the rebalance completes.
    pub fn join(
        &mut self,
        now_ms: u64,
        request_id: RequestId,
        req: JoinRequest,
        ids: &mut dyn MemberIdSource,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.fire_expired(now_ms, &mut out);
        let requested_id = req.member_id.clone();
        if let Err(error) = self.join_inner(now_ms, request_id, req, ids, &mut out) {
            let member_id = match error {
                // Kafka answers this one with the unknown member id: the member is not in.
                GroupError::GroupMaxSizeReached => String::new(),
                _ => requested_id,
            };
            out.push(join_error(request_id, member_id, error));
        }
        self.finish(now_ms, out)
    }

    /// SyncGroup. The answer comes as an [`Effect::RespondSync`] for `request_id`, now or once
    /// the leader's assignment is persisted.
    pub fn sync(&mut self, now_ms: u64, request_id: RequestId, req: SyncRequest) -> Vec<Effect> {
        let mut out = Vec::new();
        self.fire_expired(now_ms, &mut out);
        if let Err(error) = self.sync_inner(now_ms, request_id, req, &mut out) {
            out.push(sync_error(request_id, error));
        }
        self.finish(now_ms, out)
    }

    /// Heartbeat; answered immediately.
    pub fn heartbeat(
        &mut self,
        now_ms: u64,
        req: &HeartbeatRequest,
    ) -> (Result<(), GroupError>, Vec<Effect>) {
        let mut out = Vec::new();
        self.fire_expired(now_ms, &mut out);
        let result = self.heartbeat_inner(now_ms, req);
        (result, self.finish(now_ms, out))
    }

    /// LeaveGroup (one member for v0–2, a batch for v3+); answered immediately. The generation
    /// is not checked, as in Kafka.
    pub fn leave(&mut self, now_ms: u64, members: &[LeaveMember]) -> (LeaveResponse, Vec<Effect>) {
        let mut out = Vec::new();
        self.fire_expired(now_ms, &mut out);
        let response = if self.group_id.is_empty() {
            LeaveResponse {
                error: Some(GroupError::InvalidGroupId),
                members: Vec::new(),
            }
        } else if self.state == GroupState::Dead {
            LeaveResponse {
                error: Some(GroupError::CoordinatorNotAvailable),
                members: Vec::new(),
            }
        } else {
            let results = members
                .iter()
                .map(|lm| LeaveMemberResult {
                    member_id: lm.member_id.clone(),
                    group_instance_id: lm.group_instance_id.clone(),
                    error: self.leave_one(now_ms, lm, &mut out).err(),
                })
                .collect();
            LeaveResponse {
                error: None,
                members: results,
            }
        };
        (response, self.finish(now_ms, out))
    }

    /// OffsetCommit validation (the offsets are stored by the driver when this is `Ok`). A valid
    /// commit from a member also counts as its heartbeat. Kafka's rules: a "simple" commit
    /// (generation < 0, no member id, no instance id) is allowed only while the group is Empty;
    /// otherwise the member must be current (FENCED_INSTANCE_ID / UNKNOWN_MEMBER_ID) and the
    /// generation must match (ILLEGAL_GENERATION); during CompletingRebalance a valid commit gets
    /// REBALANCE_IN_PROGRESS. Empty group ids are allowed here (legacy clients), as in Kafka.
    pub fn validate_commit(
        &mut self,
        now_ms: u64,
        req: &CommitIdentity,
    ) -> (Result<(), GroupError>, Vec<Effect>) {
        let mut out = Vec::new();
        self.fire_expired(now_ms, &mut out);
        let result = self
            .validate_offset_commit(req, false)
            .and_then(|()| match self.state {
                GroupState::Empty => Ok(()),
                GroupState::Stable | GroupState::PreparingRebalance => {
                    // Allowed while preparing: the heartbeat response tells the consumer to rejoin.
                    if let Some(m) = self.member_mut(&req.member_id) {
                        m.touch(now_ms);
                    }
                    Ok(())
                }
                GroupState::CompletingRebalance => Err(GroupError::RebalanceInProgress),
                GroupState::Dead => Err(GroupError::CoordinatorNotAvailable),
            });
        (result, self.finish(now_ms, out))
    }

    /// TxnOffsetCommit validation: as [`Self::validate_commit`] but a commit without member id
    /// and generation is accepted in any state (old TxnOffsetCommit versions carry neither),
    /// and the state is not otherwise checked, as in Kafka.
    pub fn validate_txn_commit(&self, req: &CommitIdentity) -> Result<(), GroupError> {
        self.validate_offset_commit(req, true)
    }

    /// DeleteGroups: only an Empty group can be deleted; it becomes Dead and answers
    /// COORDINATOR_NOT_AVAILABLE to everything afterwards (the driver drops it once its
    /// tombstone is written).
    pub fn delete(&mut self) -> Result<(), GroupError> {
        match self.state {
            GroupState::Dead => Err(GroupError::GroupIdNotFound),
            GroupState::Empty => {
                self.state = GroupState::Dead;
                self.pending_members.clear();
                self.persists.clear();
                Ok(())
            }
            _ => Err(GroupError::NonEmptyGroup),
        }
    }

    /// Outcome of an [`Effect::PersistGroup`]. `Err` carries the error to hand to the members
    /// waiting on it (Kafka maps log append failures to COORDINATOR_NOT_AVAILABLE,
    /// NOT_COORDINATOR or UNKNOWN_SERVER_ERROR; the driver does that mapping).
    pub fn persisted(
        &mut self,
        now_ms: u64,
        persist_id: PersistId,
        result: Result<(), GroupError>,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.fire_expired(now_ms, &mut out);
        if let Some(pos) = self.persists.iter().position(|p| p.id == persist_id) {
            let persist = self.persists.remove(pos);
            self.on_persisted(now_ms, persist.kind, result, &mut out);
        }
        self.finish(now_ms, out)
    }

    // ---------------------------------------------------------------------------------------
    // JoinGroup

    fn join_inner(
        &mut self,
        now_ms: u64,
        request_id: RequestId,
        req: JoinRequest,
        ids: &mut dyn MemberIdSource,
        out: &mut Vec<Effect>,
    ) -> Result<(), GroupError> {
        if self.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let session_ms =
            u64::try_from(req.session_timeout_ms).map_err(|_| GroupError::InvalidSessionTimeout)?;
        if session_ms < self.config.session_timeout_min_ms
            || session_ms > self.config.session_timeout_max_ms
        {
            return Err(GroupError::InvalidSessionTimeout);
        }
        // Kafka bounds this only by the request size; we refuse it before it enters the group,
        // because it could never be persisted anyway.
        if req.protocols.len() > MAX_PROTOCOLS_PER_MEMBER
            || join_bytes(&req) > self.config.max_metadata_bytes
        {
            return Err(GroupError::InvalidRequest);
        }
        if self.state == GroupState::Dead {
            // Being deleted or moved: the client rediscovers the coordinator and rejoins.
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if !self.accept_joining_member(&req.member_id) {
            // Kafka also drops a known member that is refused (the group is over capacity).
            if self.member(&req.member_id).is_some() {
                self.remove_member_and_update(now_ms, &req.member_id, out);
            }
            return Err(GroupError::GroupMaxSizeReached);
        }
        if req.member_id.is_empty() {
            self.new_member_join(now_ms, request_id, req, ids, out)
        } else {
            self.current_member_join(now_ms, request_id, req, out)
        }
    }

    fn accept_joining_member(&self, member_id: &str) -> bool {
        let max = self.config.max_size;
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            // Kafka counts only the members that already rejoined, so the old generation's
            // members can all come back; we also cap the total at 2 × max, or static members
            // that heartbeat but never rejoin (they are kept) could pile up over rebalances.
            GroupState::PreparingRebalance => {
                let known = self.member(member_id);
                let rejoined = self
                    .members
                    .iter()
                    .filter(|m| m.join_request.is_some())
                    .count();
                known.is_some_and(|m| m.join_request.is_some())
                    || (rejoined < max
                        && (known.is_some() || self.members.len() < max.saturating_mul(2)))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.member(member_id).is_some() || self.members.len() < max
            }
        }
    }

    fn new_member_join(
        &mut self,
        now_ms: u64,
        request_id: RequestId,
        req: JoinRequest,
        ids: &mut dyn MemberIdSource,
        out: &mut Vec<Effect>,
    ) -> Result<(), GroupError> {
        let old_static = req
            .group_instance_id
            .as_deref()
            .and_then(|i| self.static_member_id(i))
            .map(str::to_owned);
        if !self.supports_protocols(&req.protocol_type, &req.protocols, old_static.as_deref()) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let prefix = req.group_instance_id.as_deref().unwrap_or(&req.client_id);
        let new_id = format!("{prefix}-{}", ids.next_uuid());
        if let Some(old_id) = old_static {
            self.update_static_member_and_rebalance(now_ms, request_id, &old_id, new_id, req, out);
        } else if req.require_known_member_id && req.group_instance_id.is_none() {
            // Pending members cost memory but count toward no limit in Kafka; bound them too.
            if self.pending_members.len() >= self.config.max_size {
                return Err(GroupError::GroupMaxSizeReached);
            }
            let deadline_ms = now_ms.saturating_add(non_negative(req.session_timeout_ms));
            self.pending_members.push(PendingMember {
                member_id: new_id.clone(),
                deadline_ms,
            });
            out.push(join_error(request_id, new_id, GroupError::MemberIdRequired));
        } else {
            self.add_member_and_rebalance(now_ms, request_id, new_id, req, out);
        }
        Ok(())
    }

    fn current_member_join(
        &mut self,
        now_ms: u64,
        request_id: RequestId,
        req: JoinRequest,
        out: &mut Vec<Effect>,
    ) -> Result<(), GroupError> {
        if !self.supports_protocols(&req.protocol_type, &req.protocols, Some(&req.member_id)) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        if let Some(pos) = self
            .pending_members
            .iter()
            .position(|p| p.member_id == req.member_id)
        {
            // Pending ids are only handed to dynamic members; a static one claiming it is lying.
            if req.group_instance_id.is_some() {
                return Err(GroupError::UnknownMemberId);
            }
            self.pending_members.remove(pos);
            let member_id = req.member_id.clone();
            self.add_member_and_rebalance(now_ms, request_id, member_id, req, out);
            return Ok(());
        }
        self.check_static(&req.member_id, req.group_instance_id.as_deref())?;
        let is_leader = self.leader_id.as_deref() == Some(req.member_id.as_str());
        let Some(member) = self.member(&req.member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        let matches = member.protocols == req.protocols;
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(now_ms, request_id, req, out)
            }
            // Same metadata: it probably lost our response; hand it the current generation again.
            GroupState::CompletingRebalance if matches => {
                let members = if is_leader {
                    self.join_members()
                } else {
                    Vec::new()
                };
                out.push(self.join_ok(request_id, req.member_id, members));
            }
            // A follower with unchanged metadata just gets the current generation. The leader
            // always forces a rebalance: that is how it reacts to changes (topic metadata) that
            // do not change member metadata.
            GroupState::Stable if matches && !is_leader => {
                out.push(self.join_ok(request_id, req.member_id, Vec::new()));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(now_ms, request_id, req, out)
            }
            GroupState::Empty | GroupState::Dead => return Err(GroupError::UnknownMemberId),
        }
        Ok(())
    }

    fn add_member_and_rebalance(
        &mut self,
        now_ms: u64,
        request_id: RequestId,
        member_id: String,
        req: JoinRequest,
        out: &mut Vec<Effect>,
    ) {
        // KIP-134: only members that arrive while the very first rebalance is delayed extend it.
        if self.state == GroupState::PreparingRebalance && self.generation_id == 0 {
            if let Some(Rebalance::Initial {
                new_member_added, ..
            }) = &mut self.rebalance
            {
                *new_member_added = true;
            }
        }
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member_id.clone());
        }
        self.members.push(Member {
            member_id,
            group_instance_id: req.group_instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout_ms: non_negative(req.session_timeout_ms),
            rebalance_timeout_ms: non_negative(req.rebalance_timeout_ms),
            protocols: req.protocols,
            assignment: Bytes::new(),
            join_request: Some(request_id),
            sync_request: None,
            is_new: true,
            pending_sync: false,
            // A new member cannot heartbeat before its first join completes.
            session_deadline_ms: Some(now_ms.saturating_add(NEW_MEMBER_JOIN_TIMEOUT_MS)),
        });
        self.maybe_prepare_rebalance(now_ms, out);
        self.try_complete_join(now_ms, out);
    }

    fn update_member_and_rebalance(
        &mut self,
        now_ms: u64,
        request_id: RequestId,
        req: JoinRequest,
        out: &mut Vec<Effect>,
    ) {
        self.update_member(&req.member_id, request_id, &req, out);
        self.maybe_prepare_rebalance(now_ms, out);
        self.try_complete_join(now_ms, out);
    }

    /// New protocols and timeouts; parks the JoinGroup (answering a superseded one).
    fn update_member(
        &mut self,
        member_id: &str,
        request_id: RequestId,
        req: &JoinRequest,
        out: &mut Vec<Effect>,
    ) {
        let Some(m) = self.member_mut(member_id) else {
            return;
        };
        m.protocols = req.protocols.clone();
        m.session_timeout_ms = non_negative(req.session_timeout_ms);
        m.rebalance_timeout_ms = non_negative(req.rebalance_timeout_ms);
        let member_id = m.member_id.clone();
        if let Some(old) = m.join_request.replace(request_id) {
            // Kafka silently drops the old callback; we answer it so the driver can release it.
            out.push(join_error(old, member_id, GroupError::RebalanceInProgress));
        }
    }

    /// KIP-345: a known group.instance.id joined with an empty member id (a restarted static
    /// member). It takes over the old member's place under a new member id; the old id is fenced.
    fn update_static_member_and_rebalance(
        &mut self,
        now_ms: u64,
        request_id: RequestId,
        old_id: &str,
        new_id: String,
        req: JoinRequest,
        out: &mut Vec<Effect>,
    ) {
        let current_leader = self.leader_id.clone().unwrap_or_default();
        let old_selected = self.protocol_name.clone();
        let Some(m) = self.member_mut(old_id) else {
            return;
        };
        // Whoever still waits under the old id is a zombie of the same instance: fence it now.
        if let Some(r) = m.join_request.take() {
            out.push(join_error(
                r,
                old_id.to_owned(),
                GroupError::FencedInstanceId,
            ));
        }
        if let Some(r) = m.sync_request.take() {
            out.push(sync_error(r, GroupError::FencedInstanceId));
        }
        let (old_protocols, old_session_timeout_ms, old_rebalance_timeout_ms) = (
            m.protocols.clone(),
            m.session_timeout_ms,
            m.rebalance_timeout_ms,
        );
        m.member_id = new_id.clone();
        m.touch(now_ms);
        if self.leader_id.as_deref() == Some(old_id) {
            self.leader_id = Some(new_id.clone());
        }
        let mut req = req;
        req.member_id = new_id.clone();
        self.update_member(&new_id, request_id, &req, out);
        match self.state {
            GroupState::Stable => {
                // Kafka rebalances only if the protocol selected for the next generation would
                // change; changed metadata alone does not trigger one (a restarted cooperative
                // consumer's metadata always differs: it owns no partitions yet).
                if old_selected.is_some() && self.select_protocol() == old_selected {
                    let persist_id = self.next_persist_id();
                    out.push(Effect::PersistGroup {
                        persist_id,
                        snapshot: self.snapshot(),
                    });
                    self.push_persist(PendingPersist {
                        id: persist_id,
                        kind: PersistKind::StaticReplace(Box::new(StaticReplace {
                            member_id: new_id,
                            old_member_id: old_id.to_owned(),
                            request_id,
                            leader_id: current_leader,
                            supports_skip_assignment: req.supports_skip_assignment,
                            old_protocols,
                            old_session_timeout_ms,
                            old_rebalance_timeout_ms,
                        })),
                    });
                } else {
                    self.prepare_rebalance(now_ms, out);
                }
            }
            // The leader may already be assigning to the old id: redo the rebalance.
            GroupState::CompletingRebalance => self.prepare_rebalance(now_ms, out),
            GroupState::PreparingRebalance => self.try_complete_join(now_ms, out),
            GroupState::Empty | GroupState::Dead => {
                // Unreachable (such groups have no members); answer rather than leak the request.
                debug_assert!(false, "static member in {:?} group", self.state);
                if let Some(m) = self.member_mut(&req.member_id) {
                    if let Some(r) = m.join_request.take() {
                        out.push(join_error(r, req.member_id, GroupError::UnknownMemberId));
                    }
                }
            }
        }
    }

    /// Kafka's `supportsProtocols`: an empty group takes any non-empty type and protocol list;
    /// otherwise the type must match and one protocol must be supported by every other member.
    fn supports_protocols(
        &self,
        protocol_type: &str,
        protocols: &[Protocol],
        except: Option<&str>,
    ) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|p| {
                self.members
                    .iter()
                    .filter(|m| Some(m.member_id.as_str()) != except)
                    .all(|m| m.supports(&p.name))
            })
    }

    /// The protocol supported by all members that most members prefer (each votes for its
    /// first supported candidate). Ties go to the protocol that got its first vote from the
    /// earliest member (Kafka leaves ties to hash-map order).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| self.members.iter().all(|m| m.supports(name)))
            .collect();
        let mut votes: Vec<(&str, usize)> = Vec::new();
        for m in &self.members {
            let Some(vote) = m
                .protocols
                .iter()
                .map(|p| p.name.as_str())
                .find(|n| candidates.contains(n))
            else {
                continue;
            };
            match votes.iter_mut().find(|(n, _)| *n == vote) {
                Some((_, count)) => *count += 1,
                None => votes.push((vote, 1)),
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for (name, count) in votes {
            if best.is_none_or(|(_, c)| count > c) {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name.to_owned())
    }

    fn join_members(&self) -> Vec<JoinMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        self.members
            .iter()
            .map(|m| JoinMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(protocol),
            })
            .collect()
    }

    fn join_ok(
        &self,
        request_id: RequestId,
        member_id: String,
        members: Vec<JoinMember>,
    ) -> Effect {
        self.join_ok_with_leader(
            request_id,
            member_id,
            members,
            self.leader_id.clone().unwrap_or_default(),
        )
    }

    fn join_ok_with_leader(
        &self,
        request_id: RequestId,
        member_id: String,
        members: Vec<JoinMember>,
        leader_id: String,
    ) -> Effect {
        Effect::RespondJoin {
            request_id,
            response: JoinResponse {
                error: None,
                generation_id: self.generation_id,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol_name.clone(),
                leader_id,
                member_id,
                members,
                skip_assignment: false,
            },
        }
    }

    // ---------------------------------------------------------------------------------------
    // Rebalance

    fn maybe_prepare_rebalance(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(now_ms, out);
        }
    }

    fn prepare_rebalance(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        if self.state == GroupState::CompletingRebalance {
            // Members waiting in SyncGroup must rejoin instead.
            self.reset_and_propagate_assignment_error(now_ms, GroupError::RebalanceInProgress, out);
        }
        self.sync_deadline_ms = None;
        for m in &mut self.members {
            m.pending_sync = false;
        }
        self.persists
            .retain(|p| !matches!(p.kind, PersistKind::Assignment { .. }));
        let timeout_ms = self.rebalance_timeout_ms();
        self.rebalance = Some(if self.state == GroupState::Empty {
            let delay_ms = self.config.initial_rebalance_delay_ms;
            Rebalance::Initial {
                deadline_ms: now_ms.saturating_add(delay_ms),
                remaining_ms: timeout_ms.saturating_sub(delay_ms),
                new_member_added: false,
            }
        } else {
            Rebalance::Delayed {
                deadline_ms: now_ms.saturating_add(timeout_ms),
            }
        });
        self.state = GroupState::PreparingRebalance;
        self.try_complete_join(now_ms, out);
    }

    /// The group's rebalance timeout is the largest of its members'.
    fn rebalance_timeout_ms(&self) -> u64 {
        self.members
            .iter()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    /// Completes PreparingRebalance early once every member rejoined and no MEMBER_ID_REQUIRED
    /// round trip is outstanding (never during the initial delay).
    fn try_complete_join(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        if self.state == GroupState::PreparingRebalance
            && matches!(self.rebalance, Some(Rebalance::Delayed { .. }))
            && self.pending_members.is_empty()
            && self.members.iter().all(|m| m.join_request.is_some())
        {
            self.complete_join(now_ms, out);
        }
    }

    fn on_rebalance_deadline(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        match self.rebalance {
            Some(Rebalance::Initial {
                deadline_ms,
                remaining_ms,
                new_member_added: true,
            }) if remaining_ms > 0 => {
                let delay_ms = self.config.initial_rebalance_delay_ms.min(remaining_ms);
                self.rebalance = Some(Rebalance::Initial {
                    // From the old deadline, not from `now`: a late tick must not stretch the
                    // delay (if the new deadline has passed too, the next timer round fires it).
                    deadline_ms: deadline_ms.saturating_add(delay_ms),
                    remaining_ms: remaining_ms - delay_ms,
                    new_member_added: false,
                });
            }
            _ => self.complete_join(now_ms, out),
        }
    }

    /// End of PreparingRebalance: drop dynamic members that did not rejoin (static ones keep
    /// their place until their session expires), start the next generation, answer the joins.
    fn complete_join(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.join_request.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in &gone {
            self.remove_member(id, out);
        }
        if !self.members.is_empty() {
            let leader_joined = self
                .leader_id
                .as_deref()
                .and_then(|l| self.member(l))
                .is_some_and(|m| m.join_request.is_some());
            if !leader_joined {
                match self.members.iter().find(|m| m.join_request.is_some()) {
                    Some(m) => self.leader_id = Some(m.member_id.clone()),
                    None => {
                        // Only static members that did not rejoin are left: wait for them to
                        // come back or for their sessions to expire.
                        let timeout_ms = self.rebalance_timeout_ms().max(1);
                        self.rebalance = Some(Rebalance::Delayed {
                            deadline_ms: now_ms.saturating_add(timeout_ms),
                        });
                        return;
                    }
                }
            }
        }
        self.rebalance = None;
        // Generations only grow; wrap to 1 rather than overflow (never reached in practice).
        self.generation_id = self.generation_id.checked_add(1).unwrap_or(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader_id = None;
            self.state = GroupState::Empty;
            let persist_id = self.next_persist_id();
            out.push(Effect::PersistGroup {
                persist_id,
                snapshot: self.snapshot(),
            });
            return;
        }
        self.protocol_name = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        let leader_members = self.join_members();
        let leader_id = self.leader_id.clone().unwrap_or_default();
        let responses: Vec<(RequestId, String)> = self
            .members
            .iter_mut()
            .filter_map(|m| m.join_request.take().map(|r| (r, m.member_id.clone())))
            .collect();
        for (request_id, member_id) in responses {
            let members = if member_id == leader_id {
                leader_members.clone()
            } else {
                Vec::new()
            };
            out.push(self.join_ok(request_id, member_id, members));
        }
        for m in &mut self.members {
            m.touch(now_ms);
            m.is_new = false;
            m.pending_sync = true;
        }
        self.sync_deadline_ms = Some(now_ms.saturating_add(self.rebalance_timeout_ms()));
    }

    fn reset_and_propagate_assignment_error(
        &mut self,
        now_ms: u64,
        error: GroupError,
        out: &mut Vec<Effect>,
    ) {
        for m in &mut self.members {
            m.assignment = Bytes::new();
            if let Some(r) = m.sync_request.take() {
                out.push(sync_error(r, error));
            }
            // A session may have lapsed while parked; expect heartbeats from now on.
            m.touch(now_ms);
        }
    }

    fn set_and_propagate_assignment(
        &mut self,
        now_ms: u64,
        assignments: &[(String, Bytes)],
        out: &mut Vec<Effect>,
    ) {
        let protocol_type = self.protocol_type.clone();
        let protocol_name = self.protocol_name.clone();
        for m in &mut self.members {
            m.assignment = assignments
                .iter()
                .find(|(id, _)| *id == m.member_id)
                .map(|(_, a)| a.clone())
                .unwrap_or_default();
            if let Some(request_id) = m.sync_request.take() {
                out.push(Effect::RespondSync {
                    request_id,
                    response: SyncResponse {
                        error: None,
                        protocol_type: protocol_type.clone(),
                        protocol_name: protocol_name.clone(),
                        assignment: m.assignment.clone(),
                    },
                });
            }
            m.touch(now_ms);
        }
    }

    // ---------------------------------------------------------------------------------------
    // SyncGroup, Heartbeat, LeaveGroup, commits

    fn sync_inner(
        &mut self,
        now_ms: u64,
        request_id: RequestId,
        req: SyncRequest,
        out: &mut Vec<Effect>,
    ) -> Result<(), GroupError> {
        self.check_member(
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        )?;
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| self.protocol_type.as_ref() != Some(t))
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|n| self.protocol_name.as_ref() != Some(n))
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Dead => Err(GroupError::CoordinatorNotAvailable),
            GroupState::Stable => {
                let (protocol_type, protocol_name) =
                    (self.protocol_type.clone(), self.protocol_name.clone());
                let m = self
                    .member_mut(&req.member_id)
                    .ok_or(GroupError::UnknownMemberId)?;
                m.pending_sync = false;
                m.touch(now_ms);
                out.push(Effect::RespondSync {
                    request_id,
                    response: SyncResponse {
                        error: None,
                        protocol_type,
                        protocol_name,
                        assignment: m.assignment.clone(),
                    },
                });
                Ok(())
            }
            GroupState::CompletingRebalance => {
                let m = self
                    .member_mut(&req.member_id)
                    .ok_or(GroupError::UnknownMemberId)?;
                m.pending_sync = false;
                if let Some(old) = m.sync_request.replace(request_id) {
                    out.push(sync_error(old, GroupError::RebalanceInProgress));
                }
                let is_leader = self.leader_id.as_deref() == Some(req.member_id.as_str());
                let already = self
                    .persists
                    .iter()
                    .any(|p| matches!(p.kind, PersistKind::Assignment { .. }));
                if is_leader && !already {
                    self.on_leader_assignment(now_ms, req.assignments, out);
                }
                Ok(())
            }
        }
    }

    fn on_leader_assignment(
        &mut self,
        now_ms: u64,
        given: Vec<super::MemberAssignment>,
        out: &mut Vec<Effect>,
    ) {
        // The list is only bounded by the request size; more entries than twice the cap is
        // not a real assignment, and matching it against the members costs
        // O(members × entries).
        if given.len() > self.config.max_size.saturating_mul(2)
            || given
                .iter()
                .any(|a| a.assignment.len() > self.config.max_metadata_bytes)
        {
            // Kafka fails the same way when the group record is too large for the log.
            self.reset_and_propagate_assignment_error(now_ms, GroupError::UnknownServerError, out);
            self.maybe_prepare_rebalance(now_ms, out);
            return;
        }
        // Members the leader forgot get an empty assignment; ids not in the group are ignored;
        // a repeated id keeps its last assignment.
        let assignments: Vec<(String, Bytes)> = self
            .members
            .iter()
            .map(|m| {
                let a = given
                    .iter()
                    .rev()
                    .find(|a| a.member_id == m.member_id)
                    .map(|a| a.assignment.clone());
                (m.member_id.clone(), a.unwrap_or_default())
            })
            .collect();
        let persist_id = self.next_persist_id();
        out.push(Effect::PersistGroup {
            persist_id,
            snapshot: self.snapshot_with(Some(&assignments)),
        });
        self.push_persist(PendingPersist {
            id: persist_id,
            kind: PersistKind::Assignment {
                generation_id: self.generation_id,
                assignments,
            },
        });
    }

    fn on_persisted(
        &mut self,
        now_ms: u64,
        kind: PersistKind,
        result: Result<(), GroupError>,
        out: &mut Vec<Effect>,
    ) {
        match kind {
            PersistKind::Assignment {
                generation_id,
                assignments,
            } => {
                // A rebalance since the leader's SyncGroup makes this assignment moot.
                if self.state != GroupState::CompletingRebalance
                    || self.generation_id != generation_id
                {
                    return;
                }
                match result {
                    Ok(()) => {
                        self.set_and_propagate_assignment(now_ms, &assignments, out);
                        self.state = GroupState::Stable;
                    }
                    Err(error) => {
                        self.reset_and_propagate_assignment_error(now_ms, error, out);
                        self.maybe_prepare_rebalance(now_ms, out);
                    }
                }
            }
            PersistKind::StaticReplace(r) => {
                if self.state != GroupState::Stable {
                    return; // a rebalance started: the parked join is answered when it completes
                }
                let Some(m) = self.member_mut(&r.member_id) else {
                    return;
                };
                if m.join_request != Some(r.request_id) {
                    return;
                }
                m.join_request = None;
                if let Err(error) = result {
                    // The new id is not durable: undo, so the old instance (if alive) carries on.
                    m.member_id = r.old_member_id.clone();
                    m.protocols = r.old_protocols;
                    m.session_timeout_ms = r.old_session_timeout_ms;
                    m.rebalance_timeout_ms = r.old_rebalance_timeout_ms;
                    m.touch(now_ms);
                    if self.leader_id.as_deref() == Some(r.member_id.as_str()) {
                        self.leader_id = Some(r.old_member_id);
                    }
                    let mut response = self.join_ok_with_leader(
                        r.request_id,
                        String::new(),
                        Vec::new(),
                        r.leader_id,
                    );
                    if let Effect::RespondJoin { response, .. } = &mut response {
                        response.error = Some(error);
                    }
                    out.push(response);
                } else if r.supports_skip_assignment {
                    // v9+: tell a returning static leader it leads, but must not assign.
                    let is_leader = self.leader_id.as_deref() == Some(r.member_id.as_str());
                    let members = if is_leader {
                        self.join_members()
                    } else {
                        Vec::new()
                    };
                    let mut response = self.join_ok(r.request_id, r.member_id, members);
                    if let Effect::RespondJoin { response, .. } = &mut response {
                        response.skip_assignment = is_leader;
                    }
                    out.push(response);
                } else {
                    // Before v9 the old leader id is returned, so a static leader coming back
                    // does not run its assignor: a Stable group would not relay the result.
                    out.push(self.join_ok_with_leader(
                        r.request_id,
                        r.member_id,
                        Vec::new(),
                        r.leader_id,
                    ));
                }
            }
        }
    }

    fn heartbeat_inner(&mut self, now_ms: u64, req: &HeartbeatRequest) -> Result<(), GroupError> {
        self.check_member(
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        )?;
        let state = self.state;
        let m = self
            .member_mut(&req.member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        match state {
            GroupState::Empty => Err(GroupError::UnknownMemberId),
            GroupState::Dead => Err(GroupError::CoordinatorNotAvailable),
            // Consumers may heartbeat between their JoinGroup response and SyncGroup.
            GroupState::CompletingRebalance | GroupState::Stable => {
                m.touch(now_ms);
                Ok(())
            }
            GroupState::PreparingRebalance => {
                m.touch(now_ms);
                Err(GroupError::RebalanceInProgress)
            }
        }
    }

    /// Shared SyncGroup/Heartbeat checks, in Kafka's order.
    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        if self.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if self.is_static_member_fenced(instance_id, member_id) {
            return Err(GroupError::FencedInstanceId);
        }
        if self.member(member_id).is_none() {
            return Err(GroupError::UnknownMemberId);
        }
        if generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    /// JoinGroup's static checks for a known member id.
    fn check_static(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), GroupError> {
        if self.is_static_member_fenced(instance_id, member_id) {
            return Err(GroupError::FencedInstanceId);
        }
        if instance_id.is_some_and(|i| self.static_member_id(i).is_none()) {
            return Err(GroupError::UnknownMemberId);
        }
        Ok(())
    }

    fn leave_one(
        &mut self,
        now_ms: u64,
        lm: &LeaveMember,
        out: &mut Vec<Effect>,
    ) -> Result<(), GroupError> {
        if lm.member_id.is_empty() {
            // Administrative removal by group.instance.id.
            let current = lm
                .group_instance_id
                .as_deref()
                .and_then(|i| self.static_member_id(i))
                .map(str::to_owned);
            let id = current.ok_or(GroupError::UnknownMemberId)?;
            self.remove_member_and_update(now_ms, &id, out);
            return Ok(());
        }
        if let Some(pos) = self
            .pending_members
            .iter()
            .position(|p| p.member_id == lm.member_id)
        {
            self.pending_members.remove(pos);
            self.try_complete_join(now_ms, out);
            return Ok(());
        }
        if self.is_static_member_fenced(lm.group_instance_id.as_deref(), &lm.member_id) {
            return Err(GroupError::FencedInstanceId);
        }
        if self.member(&lm.member_id).is_none() {
            return Err(GroupError::UnknownMemberId);
        }
        self.remove_member_and_update(now_ms, &lm.member_id, out);
        Ok(())
    }

    fn validate_offset_commit(
        &self,
        req: &CommitIdentity,
        transactional: bool,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if req.generation_id >= 0 || !req.member_id.is_empty() || req.group_instance_id.is_some() {
            match req.group_instance_id.as_deref() {
                Some(instance) => match self.static_member_id(instance) {
                    Some(current) if current != req.member_id => {
                        return Err(GroupError::FencedInstanceId)
                    }
                    Some(_) => {}
                    None => return Err(GroupError::UnknownMemberId),
                },
                None if self.member(&req.member_id).is_none() => {
                    return Err(GroupError::UnknownMemberId)
                }
                None => {}
            }
            if req.generation_id != self.generation_id {
                return Err(GroupError::IllegalGeneration);
            }
            Ok(())
        } else if !transactional && self.state != GroupState::Empty {
            // Once the group has members, only members may commit.
            Err(GroupError::UnknownMemberId)
        } else {
            Ok(())
        }
    }

    // ---------------------------------------------------------------------------------------
    // Members and timers

    fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.member_id == member_id)
    }

    fn member_mut(&mut self, member_id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.member_id == member_id)
    }

    fn static_member_id(&self, instance_id: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.group_instance_id.as_deref() == Some(instance_id))
            .map(|m| m.member_id.as_str())
    }

    /// The instance id is known and mapped to a different member id.
    fn is_static_member_fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id
            .and_then(|i| self.static_member_id(i))
            .is_some_and(|current| current != member_id)
    }

    /// Removes a member, answering whatever it has parked, and re-elects the leader.
    fn remove_member(&mut self, member_id: &str, out: &mut Vec<Effect>) {
        let Some(pos) = self.members.iter().position(|m| m.member_id == member_id) else {
            return;
        };
        let m = self.members.remove(pos);
        // UNKNOWN_MEMBER_ID with an empty id: if the client is alive it simply joins again.
        if let Some(r) = m.join_request {
            out.push(join_error(r, String::new(), GroupError::UnknownMemberId));
        }
        if let Some(r) = m.sync_request {
            out.push(sync_error(r, GroupError::UnknownMemberId));
        }
        if self.leader_id.as_deref() == Some(member_id) {
            self.leader_id = self.members.first().map(|m| m.member_id.clone());
        }
    }

    fn remove_member_and_update(&mut self, now_ms: u64, member_id: &str, out: &mut Vec<Effect>) {
        self.remove_member(member_id, out);
        match self.state {
            GroupState::Dead | GroupState::Empty => {}
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(now_ms, out)
            }
            GroupState::PreparingRebalance => self.try_complete_join(now_ms, out),
        }
    }

    fn fire_expired(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        for _ in 0..MAX_TIMER_ROUNDS {
            if self.next_deadline_ms().is_none_or(|at| at > now_ms) {
                return;
            }
            self.fire_round(now_ms, out);
        }
    }

    fn fire_round(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        // MEMBER_ID_REQUIRED round trips never completed.
        let before = self.pending_members.len();
        self.pending_members.retain(|p| p.deadline_ms > now_ms);
        if self.pending_members.len() != before {
            self.try_complete_join(now_ms, out);
        }
        // Session expiry.
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.session_deadline_ms.is_some_and(|d| d <= now_ms))
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            let Some(m) = self.member_mut(&id) else {
                continue;
            };
            if m.is_new || !m.is_awaiting() {
                self.remove_member_and_update(now_ms, &id, out);
            } else {
                m.session_deadline_ms = None;
            }
        }
        // Rebalance timeout or initial delay.
        if self.state == GroupState::PreparingRebalance
            && self.rebalance.is_some_and(|r| r.deadline_ms() <= now_ms)
        {
            self.on_rebalance_deadline(now_ms, out);
        }
        // Members that joined but never synced.
        if matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) && self.sync_deadline_ms.is_some_and(|d| d <= now_ms)
        {
            self.sync_deadline_ms = None;
            let laggards: Vec<String> = self
                .members
                .iter()
                .filter(|m| m.pending_sync)
                .map(|m| m.member_id.clone())
                .collect();
            for id in laggards {
                self.remove_member_and_update(now_ms, &id, out);
            }
        }
    }

    /// Fires what the input made due and tells the driver about a changed timer.
    fn finish(&mut self, now_ms: u64, mut out: Vec<Effect>) -> Vec<Effect> {
        self.fire_expired(now_ms, &mut out);
        let next = self.next_deadline_ms();
        if next.is_some() && next != self.timer_at_ms {
            if let Some(at_ms) = next {
                out.push(Effect::ScheduleTimer { at_ms });
            }
        }
        self.timer_at_ms = next;
        self.debug_check_invariants();
        out
    }

    /// The module's invariants, checked after every input in debug builds (tests). A violation
    /// is a bug here, but in production it must not take the shard down with it.
    fn debug_check_invariants(&self) {
        if cfg!(debug_assertions) {
            let leader = self.leader_id.as_deref();
            if self.members.is_empty() {
                debug_assert!(leader.is_none(), "leader {leader:?} without members");
            } else {
                debug_assert!(
                    leader.is_some_and(|l| self.member(l).is_some()),
                    "leader {leader:?} is not a member"
                );
            }
            if matches!(self.state, GroupState::Empty | GroupState::Dead) {
                debug_assert!(
                    self.members.is_empty(),
                    "{:?} group with members",
                    self.state
                );
            }
            for m in &self.members {
                debug_assert!(
                    !(m.join_request.is_some() && m.sync_request.is_some()),
                    "{} parked twice",
                    m.member_id
                );
            }
            for (i, m) in self.members.iter().enumerate() {
                debug_assert!(
                    self.members[..i].iter().all(|o| o.member_id != m.member_id),
                    "duplicate {}",
                    m.member_id
                );
            }
        }
    }

    fn next_persist_id(&mut self) -> PersistId {
        self.next_persist_id += 1;
        PersistId(self.next_persist_id)
    }

    /// Keeps only persists someone still waits for, so the list stays ≤ 1 + members.
    fn push_persist(&mut self, persist: PendingPersist) {
        let state = self.state;
        let generation = self.generation_id;
        let members = &self.members;
        self.persists.retain(|p| match &p.kind {
            PersistKind::Assignment { generation_id, .. } => {
                state == GroupState::CompletingRebalance && *generation_id == generation
            }
            PersistKind::StaticReplace(r) => members
                .iter()
                .any(|m| m.member_id == r.member_id && m.join_request == Some(r.request_id)),
        });
        self.persists.push(persist);
    }

    fn snapshot_with(&self, assignments: Option<&[(String, Bytes)]>) -> GroupSnapshot {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        GroupSnapshot {
            group_id: self.group_id.clone(),
            protocol_type: self.protocol_type.clone(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone(),
            members: self
                .members
                .iter()
                .map(|m| {
                    let assignment = match assignments {
                        Some(list) => list
                            .iter()
                            .find(|(id, _)| *id == m.member_id)
                            .map(|(_, a)| a.clone())
                            .unwrap_or_default(),
                        None => m.assignment.clone(),
                    };
                    MemberSnapshot {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        rebalance_timeout_ms: clamp_i32(m.rebalance_timeout_ms),
                        session_timeout_ms: clamp_i32(m.session_timeout_ms),
                        subscription: m.metadata(protocol).to_vec(),
                        assignment: assignment.to_vec(),
                    }
                })
                .collect(),
        }
    }
}

fn join_error(request_id: RequestId, member_id: String, error: GroupError) -> Effect {
    Effect::RespondJoin {
        request_id,
        response: JoinResponse::error(member_id, error),
    }
}

fn sync_error(request_id: RequestId, error: GroupError) -> Effect {
    Effect::RespondSync {
        request_id,
        response: SyncResponse::error(error),
    }
}

/// Bytes a member's JoinGroup would keep in memory.
fn join_bytes(req: &JoinRequest) -> usize {
    let strings = req.client_id.len()
        + req.client_host.len()
        + req.protocol_type.len()
        + req.member_id.len()
        + req.group_instance_id.as_ref().map_or(0, String::len);
    let protocols: usize = req
        .protocols
        .iter()
        .map(|p| p.name.len() + p.metadata.len() + PROTOCOL_OVERHEAD_BYTES)
        .sum();
    strings + protocols
}

/// Negative timeouts from the wire act as zero (Kafka would expire them at once, too).
fn non_negative(ms: i32) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

fn clamp_i32(ms: u64) -> i32 {
    i32::try_from(ms).unwrap_or(i32::MAX)
}
