//! [`ConsumerGroupMachine`]: one KIP-848 consumer group. See the module docs in
//! `consumer_group/mod.rs` for the driver contract; behaviour follows Kafka's
//! `GroupMetadataManager` for the `consumer` group type.

use std::collections::{btree_map, BTreeMap};

use rustc_hash::FxHashMap;

use super::assignor::{assign, AssignorMember};
use super::reconcile::{reconcile, CurrentAssignment};
use super::{
    from_topic_partitions, to_topic_partitions, Assignment, ConsumerGroupConfig,
    ConsumerGroupDescription, ConsumerGroupError, ConsumerGroupSnapshot, ConsumerGroupState,
    DescribedMember, DescribedTopicPartitions, Effect, HeartbeatRequest, HeartbeatResponse,
    MemberIdSource, MemberSnapshot, MemberState, ServerAssignor, TopicId, TopicMetadataSnapshot,
    TopicPartitions, TopicView, JOIN_GROUP_MEMBER_EPOCH, LEAVE_GROUP_MEMBER_EPOCH,
    LEAVE_GROUP_STATIC_MEMBER_EPOCH, MAX_TOPIC_NAME_BYTES, TOPIC_NAME_OVERHEAD_BYTES,
};

type Result<T> = std::result::Result<T, ConsumerGroupError>;

#[derive(Debug, Clone)]
struct Member {
    member_id: String,
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    /// The subscription the assignment uses: `explicit_topic_names` and the topics
    /// `subscribed_topic_regex` matched at the member's last heartbeat. Sorted, no duplicates.
    subscribed_topic_names: Vec<String>,
    /// Sorted, without duplicates.
    explicit_topic_names: Vec<String>,
    subscribed_topic_regex: Option<String>,
    server_assignor: Option<ServerAssignor>,
    current: CurrentAssignment,
    /// Valid at the group's assignment epoch.
    target: Assignment,
    session_deadline_ms: u64,
    /// Set while the member must revoke partitions (Kafka's rebalance timeout).
    revocation_deadline_ms: Option<u64>,
}

impl Member {
    fn is_reconciled_to(&self, epoch: i32) -> bool {
        self.current.state == MemberState::Stable && self.current.member_epoch == epoch
    }

    fn owned_partitions(&self) -> impl Iterator<Item = (TopicId, i32)> + '_ {
        self.current
            .assigned
            .iter()
            .chain(&self.current.pending_revocation)
            .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
    }
}

/// How a joining or heartbeating request maps onto the group's members.
enum Resolved {
    /// A member with this id exists and the request may speak for it.
    Existing,
    /// A static member that left temporarily (epoch -2) is replaced by this new member id.
    ReplaceStatic {
        old_member_id: String,
    },
    New,
}

/// One KIP-848 consumer group. Pure: every method takes `now_ms` and returns effects.
#[derive(Debug, Clone)]
pub struct ConsumerGroupMachine {
    group_id: String,
    config: ConsumerGroupConfig,
    group_epoch: i32,
    /// Epoch the members' targets were computed at; `<= group_epoch`.
    assignment_epoch: i32,
    /// Subscribed topics that exist: name → (id, partition count).
    subscription_metadata: BTreeMap<String, (TopicId, u32)>,
    members: BTreeMap<String, Member>,
    /// Instance id → member id of static members.
    static_members: BTreeMap<String, String>,
    /// Subscribed topic name → number of members subscribed to it.
    subscribed_topics: BTreeMap<String, usize>,
    /// Partition → the member holding it (assigned or pending revocation).
    owners: FxHashMap<(TopicId, i32), String>,
    /// Last ScheduleTimer emitted (None when none is outstanding).
    timer_at_ms: Option<u64>,
    /// Persisted state changed during the current input.
    dirty: bool,
}

impl ConsumerGroupMachine {
    /// A new Empty group at epoch 0 (Kafka creates it on the first heartbeat with epoch 0).
    pub fn new(group_id: impl Into<String>, config: ConsumerGroupConfig) -> Self {
        ConsumerGroupMachine {
            group_id: group_id.into(),
            config,
            group_epoch: 0,
            assignment_epoch: 0,
            subscription_metadata: BTreeMap::new(),
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            subscribed_topics: BTreeMap::new(),
            owners: FxHashMap::default(),
            timer_at_ms: None,
            dirty: false,
        }
    }

    /// Rebuilds a group from its last persisted snapshot. Every member gets a fresh session
    /// timeout, and those still revoking a fresh rebalance timeout, as Kafka does on load. A
    /// partition claimed by two members (a corrupt snapshot) stays with the first.
    pub fn restore(
        now_ms: u64,
        snapshot: ConsumerGroupSnapshot,
        config: ConsumerGroupConfig,
    ) -> (Self, Vec<Effect>) {
        let mut g = ConsumerGroupMachine::new(snapshot.group_id, config);
        g.group_epoch = snapshot.group_epoch;
        g.assignment_epoch = snapshot.assignment_epoch.min(snapshot.group_epoch);
        g.subscription_metadata = snapshot
            .subscription_metadata
            .into_iter()
            .map(|t| (t.name, (t.topic_id, t.partitions)))
            .collect();
        for ms in snapshot.members {
            if g.members.contains_key(&ms.member_id) {
                continue;
            }
            let mut current = CurrentAssignment {
                member_epoch: ms.member_epoch,
                previous_member_epoch: ms.previous_member_epoch,
                state: ms.state,
                assigned: from_topic_partitions(&ms.assigned),
                pending_revocation: from_topic_partitions(&ms.pending_revocation),
            };
            for set in [&mut current.assigned, &mut current.pending_revocation] {
                for (t, ps) in set.iter_mut() {
                    ps.retain(|p| match g.owners.entry((*t, *p)) {
                        std::collections::hash_map::Entry::Occupied(_) => false,
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(ms.member_id.clone());
                            true
                        }
                    });
                }
                set.retain(|_, ps| !ps.is_empty());
            }
            if let Some(instance) = &ms.instance_id {
                g.static_members
                    .insert(instance.clone(), ms.member_id.clone());
            }
            for name in &ms.subscribed_topic_names {
                *g.subscribed_topics.entry(name.clone()).or_default() += 1;
            }
            let revoking = current.state == MemberState::UnrevokedPartitions
                && current.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH;
            let member = Member {
                member_id: ms.member_id.clone(),
                instance_id: ms.instance_id,
                rack_id: ms.rack_id,
                client_id: ms.client_id,
                client_host: ms.client_host,
                rebalance_timeout_ms: ms.rebalance_timeout_ms,
                subscribed_topic_names: ms.subscribed_topic_names,
                explicit_topic_names: ms.explicit_topic_names,
                subscribed_topic_regex: ms.subscribed_topic_regex,
                server_assignor: ms.server_assignor,
                current,
                target: from_topic_partitions(&ms.target),
                session_deadline_ms: now_ms.saturating_add(g.config.session_timeout_ms),
                revocation_deadline_ms: revoking
                    .then(|| now_ms.saturating_add(non_negative(ms.rebalance_timeout_ms))),
            };
            g.members.insert(ms.member_id, member);
        }
        let subscribed = &g.subscribed_topics;
        g.subscription_metadata
            .retain(|name, _| subscribed.contains_key(name));
        let effects = g.finish(now_ms);
        (g, effects)
    }

    /// The persisted part of the group as it is now.
    pub fn snapshot(&self) -> ConsumerGroupSnapshot {
        ConsumerGroupSnapshot {
            group_id: self.group_id.clone(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            subscription_metadata: self
                .subscription_metadata
                .iter()
                .map(|(name, (topic_id, partitions))| TopicMetadataSnapshot {
                    name: name.clone(),
                    topic_id: *topic_id,
                    partitions: *partitions,
                })
                .collect(),
            members: self
                .members
                .values()
                .map(|m| MemberSnapshot {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscribed_topic_names: m.subscribed_topic_names.clone(),
                    explicit_topic_names: m.explicit_topic_names.clone(),
                    subscribed_topic_regex: m.subscribed_topic_regex.clone(),
                    server_assignor: m.server_assignor,
                    member_epoch: m.current.member_epoch,
                    previous_member_epoch: m.current.previous_member_epoch,
                    state: m.current.state,
                    assigned: to_topic_partitions(&m.current.assigned),
                    pending_revocation: to_topic_partitions(&m.current.pending_revocation),
                    target: to_topic_partitions(&m.target),
                })
                .collect(),
        }
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }
    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }
    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }
    pub fn member_count(&self) -> usize {
        self.members.len()
    }
    /// Member ids in ascending order.
    pub fn member_ids(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(String::as_str)
    }

    /// Kafka's `ConsumerGroup` state: Empty without members; Assigning while the target lags
    /// the group epoch; Reconciling while some member is not Stable at the assignment epoch
    /// (a static member away with epoch -2 counts as not reconciled); else Stable.
    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self
            .members
            .values()
            .all(|m| m.is_reconciled_to(self.assignment_epoch))
        {
            ConsumerGroupState::Stable
        } else {
            ConsumerGroupState::Reconciling
        }
    }

    /// The group as ConsumerGroupDescribe shows it.
    pub fn describe(&self, topics: &dyn TopicView) -> ConsumerGroupDescription {
        ConsumerGroupDescription {
            group_id: self.group_id.clone(),
            state: self.state(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor_name: self.preferred_assignor().name().to_owned(),
            members: self
                .members
                .values()
                .map(|m| DescribedMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.current.member_epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.explicit_topic_names.clone(),
                    subscribed_topic_regex: m.subscribed_topic_regex.clone(),
                    assignment: describe_partitions(&m.current.assigned, topics),
                    target_assignment: describe_partitions(&m.target, topics),
                })
                .collect(),
        }
    }

    /// Whether an OffsetCommit by `member_id` at `member_epoch` (its generation id field) may
    /// write, as Kafka's `ConsumerGroup.validateOffsetCommit` decides: a commit without a member
    /// epoch (an admin tool, a consumer without group management) only while the group has no
    /// members; otherwise the member must exist and commit at its current epoch — an older one
    /// is STALE_MEMBER_EPOCH (the member is still catching up), a newer one FENCED_MEMBER_EPOCH.
    pub fn validate_commit(&self, member_id: &str, member_epoch: i32) -> Result<()> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let member = self
            .members
            .get(member_id)
            .ok_or(ConsumerGroupError::UnknownMemberId)?;
        match member_epoch.cmp(&member.current.member_epoch) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Less => Err(ConsumerGroupError::StaleMemberEpoch),
            std::cmp::Ordering::Greater => Err(ConsumerGroupError::FencedMemberEpoch),
        }
    }

    /// Every topic some member subscribes to, sorted, without duplicates.
    pub fn subscribed_topics(&self) -> impl Iterator<Item = &str> {
        self.subscribed_topics.keys().map(String::as_str)
    }

    /// The earliest pending deadline, if any (the driver's timer).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.members
            .values()
            .flat_map(|m| [Some(m.session_deadline_ms), m.revocation_deadline_ms])
            .flatten()
            .min()
    }

    /// Fires every deadline that has passed: members whose session expired, or that did not
    /// revoke within their rebalance timeout, are removed (fenced) and the group epoch bumped.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Effect> {
        self.fire_expired(now_ms);
        self.finish(now_ms)
    }

    /// ConsumerGroupHeartbeat: join, heartbeat, change subscription, leave. Answered at once;
    /// the driver sends the answer after appending any [`Effect::Persist`] it returns.
    pub fn heartbeat(
        &mut self,
        now_ms: u64,
        req: HeartbeatRequest,
        topics: &dyn TopicView,
        ids: &mut dyn MemberIdSource,
    ) -> (HeartbeatResponse, Vec<Effect>) {
        self.fire_expired(now_ms);
        let result = validate_request(&self.group_id, &req).and_then(|()| {
            if req.member_epoch == LEAVE_GROUP_MEMBER_EPOCH
                || req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH
            {
                self.leave(now_ms, &req)
            } else {
                self.join_or_heartbeat(now_ms, &req, topics, ids)
            }
        });
        let response = result.unwrap_or_else(HeartbeatResponse::error);
        (response, self.finish(now_ms))
    }

    // ---------------------------------------------------------------------------------------
    // Heartbeat

    fn leave(&mut self, now_ms: u64, req: &HeartbeatRequest) -> Result<HeartbeatResponse> {
        match &req.instance_id {
            None => {
                if !self.members.contains_key(&req.member_id) {
                    return Err(ConsumerGroupError::UnknownMemberId);
                }
                self.remove_member(&req.member_id);
            }
            Some(instance) => {
                let Some(holder) = self.static_members.get(instance) else {
                    return Err(ConsumerGroupError::UnknownMemberId);
                };
                if *holder != req.member_id {
                    return Err(ConsumerGroupError::FencedInstanceId);
                }
                if req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                    self.leave_temporarily(now_ms, &req.member_id);
                } else {
                    self.remove_member(&req.member_id);
                }
            }
        }
        Ok(HeartbeatResponse {
            error: None,
            member_id: Some(req.member_id.clone()),
            member_epoch: req.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    /// A static member leaving with epoch -2: it keeps its assigned partitions (and its place
    /// in the target) until its session expires; what it was revoking is released now.
    fn leave_temporarily(&mut self, now_ms: u64, member_id: &str) {
        let Some(m) = self.members.get(member_id) else {
            return;
        };
        let next = CurrentAssignment {
            member_epoch: LEAVE_GROUP_STATIC_MEMBER_EPOCH,
            previous_member_epoch: m.current.previous_member_epoch,
            state: m.current.state,
            assigned: m.current.assigned.clone(),
            pending_revocation: Assignment::new(),
        };
        if next != m.current {
            self.set_current(now_ms, member_id, next);
        }
    }

    fn join_or_heartbeat(
        &mut self,
        now_ms: u64,
        req: &HeartbeatRequest,
        topics: &dyn TopicView,
        ids: &mut dyn MemberIdSource,
    ) -> Result<HeartbeatResponse> {
        let member_id = if req.member_id.is_empty() {
            ids.new_member_id()
        } else {
            req.member_id.clone()
        };
        let resolved = self.resolve(&member_id, req)?;
        let base = match &resolved {
            Resolved::Existing => self.members.get(&member_id),
            Resolved::ReplaceStatic { old_member_id } => self.members.get(old_member_id),
            Resolved::New => None,
        };
        if member_bytes(base, &member_id, req) > self.config.max_member_metadata_bytes {
            return Err(ConsumerGroupError::InvalidRequest);
        }

        // From here on nothing fails: the request is applied.
        match resolved {
            Resolved::Existing => {}
            Resolved::ReplaceStatic { old_member_id } => {
                self.replace_static_member(&old_member_id, &member_id);
            }
            Resolved::New => {
                self.members.insert(
                    member_id.clone(),
                    Member {
                        member_id: member_id.clone(),
                        instance_id: None,
                        rack_id: None,
                        client_id: String::new(),
                        client_host: String::new(),
                        rebalance_timeout_ms: req.rebalance_timeout_ms,
                        subscribed_topic_names: Vec::new(),
                        explicit_topic_names: Vec::new(),
                        subscribed_topic_regex: None,
                        server_assignor: None,
                        current: CurrentAssignment {
                            member_epoch: JOIN_GROUP_MEMBER_EPOCH,
                            previous_member_epoch: JOIN_GROUP_MEMBER_EPOCH,
                            state: MemberState::Stable,
                            assigned: Assignment::new(),
                            pending_revocation: Assignment::new(),
                        },
                        target: Assignment::new(),
                        session_deadline_ms: 0,
                        revocation_deadline_ms: None,
                    },
                );
                self.dirty = true;
            }
        }

        // 1. Member metadata; the group epoch moves on subscription or metadata changes.
        let mut bump = self.update_member(&member_id, req, topics);
        bump |= self.refresh_subscription_metadata(topics);
        if bump {
            self.group_epoch = self.group_epoch.saturating_add(1);
            self.dirty = true;
        }
        // 2. A target for the new group epoch.
        if self.group_epoch > self.assignment_epoch {
            self.compute_target_assignment();
        }
        // 3. The member's step towards its target.
        let owned = req.topic_partitions.as_deref().map(from_topic_partitions);
        let assignment_changed = self.reconcile_member(now_ms, &member_id, owned.as_ref());

        let session_ms = self.config.session_timeout_ms;
        let Some(m) = self.members.get_mut(&member_id) else {
            // Unreachable: the member was resolved or inserted above.
            return Err(ConsumerGroupError::UnknownMemberId);
        };
        m.session_deadline_ms = now_ms.saturating_add(session_ms);
        let full_request = req.member_epoch == JOIN_GROUP_MEMBER_EPOCH
            || (req.rebalance_timeout_ms != -1
                && req.subscribed_topic_names.is_some()
                && req.topic_partitions.is_some());
        Ok(HeartbeatResponse {
            error: None,
            member_id: Some(member_id),
            member_epoch: m.current.member_epoch,
            heartbeat_interval_ms: clamp_i32(self.config.heartbeat_interval_ms),
            assignment: (full_request || assignment_changed)
                .then(|| to_topic_partitions(&m.current.assigned)),
        })
    }

    /// Who the request speaks for, with Kafka's checks: group size, unknown members, static
    /// membership (UNRELEASED_INSTANCE_ID, FENCED_INSTANCE_ID) and the member epoch.
    fn resolve(&self, member_id: &str, req: &HeartbeatRequest) -> Result<Resolved> {
        let joining = req.member_epoch == JOIN_GROUP_MEMBER_EPOCH;
        let holder = req
            .instance_id
            .as_ref()
            .and_then(|i| self.static_members.get(i))
            .and_then(|id| self.members.get(id));
        // Kafka refuses any member id it does not know once the group is full. A static member
        // coming back to replace its departed self does not grow the group, so we let it in.
        let replaces_departed = joining
            && holder.is_some_and(|h| h.current.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH);
        if self.members.len() >= self.config.max_size
            && !self.members.contains_key(member_id)
            && !replaces_departed
        {
            return Err(ConsumerGroupError::GroupMaxSizeReached);
        }
        let existing = |m: &Member| check_member_epoch(m, req).map(|()| Resolved::Existing);
        match (&req.instance_id, holder) {
            (None, _) | (Some(_), None) if joining => match self.members.get(member_id) {
                Some(m) => existing(m),
                None => Ok(Resolved::New),
            },
            (None, _) => match self.members.get(member_id) {
                Some(m) => existing(m),
                None => Err(ConsumerGroupError::UnknownMemberId),
            },
            (Some(_), None) => Err(ConsumerGroupError::UnknownMemberId),
            (Some(_), Some(h)) if h.member_id == member_id => existing(h),
            (Some(_), Some(_)) if !joining => Err(ConsumerGroupError::FencedInstanceId),
            (Some(_), Some(h)) if h.current.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH => {
                Err(ConsumerGroupError::UnreleasedInstanceId)
            }
            // The new id must not belong to someone else (client-generated ids are UUIDs).
            (Some(_), Some(_)) if self.members.contains_key(member_id) => {
                Err(ConsumerGroupError::InvalidRequest)
            }
            (Some(_), Some(h)) => Ok(Resolved::ReplaceStatic {
                old_member_id: h.member_id.clone(),
            }),
        }
    }

    /// The static member's new incarnation takes over its place: partitions, target and
    /// metadata; it reconciles from epoch 0 (Kafka's static member replacement). The group
    /// epoch does not move unless the subscription changes.
    fn replace_static_member(&mut self, old_member_id: &str, new_member_id: &str) {
        let Some(mut m) = self.members.remove(old_member_id) else {
            return;
        };
        m.member_id = new_member_id.to_owned();
        m.current.member_epoch = JOIN_GROUP_MEMBER_EPOCH;
        m.current.previous_member_epoch = JOIN_GROUP_MEMBER_EPOCH;
        m.revocation_deadline_ms = None;
        for tp in m.owned_partitions() {
            self.owners.insert(tp, new_member_id.to_owned());
        }
        if let Some(instance) = &m.instance_id {
            self.static_members
                .insert(instance.clone(), new_member_id.to_owned());
        }
        self.members.insert(new_member_id.to_owned(), m);
        self.dirty = true;
    }

    /// Applies the request's fields ("None" = unchanged). Returns whether the subscription
    /// changed (which bumps the group epoch; other fields only need persisting).
    fn update_member(
        &mut self,
        member_id: &str,
        req: &HeartbeatRequest,
        topics: &dyn TopicView,
    ) -> bool {
        let Self {
            members,
            static_members,
            subscribed_topics,
            subscription_metadata,
            dirty,
            ..
        } = self;
        let Some(m) = members.get_mut(member_id) else {
            return false;
        };
        let mut changed = false;
        if let Some(instance) = &req.instance_id {
            if m.instance_id.as_ref() != Some(instance) {
                if let Some(old) = &m.instance_id {
                    if static_members.get(old).map(String::as_str) == Some(member_id) {
                        static_members.remove(old);
                    }
                }
                static_members.insert(instance.clone(), member_id.to_owned());
                m.instance_id = Some(instance.clone());
                changed = true;
            }
        }
        if let Some(rack) = &req.rack_id {
            if m.rack_id.as_ref() != Some(rack) {
                m.rack_id = Some(rack.clone());
                changed = true;
            }
        }
        if req.rebalance_timeout_ms != -1 && req.rebalance_timeout_ms != m.rebalance_timeout_ms {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            changed = true;
        }
        if let Some(assignor) = req
            .server_assignor
            .as_deref()
            .and_then(ServerAssignor::from_name)
        {
            if m.server_assignor != Some(assignor) {
                m.server_assignor = Some(assignor);
                changed = true;
            }
        }
        if m.client_id != req.client_id {
            m.client_id.clone_from(&req.client_id);
            changed = true;
        }
        if m.client_host != req.client_host {
            m.client_host.clone_from(&req.client_host);
            changed = true;
        }
        if let Some(names) = &req.subscribed_topic_names {
            let mut names = names.clone();
            names.sort_unstable();
            names.dedup();
            if names != m.explicit_topic_names {
                m.explicit_topic_names = names;
                changed = true;
            }
        }
        if let Some(regex) = &req.subscribed_topic_regex {
            let regex = (!regex.is_empty()).then(|| regex.clone());
            if regex != m.subscribed_topic_regex {
                m.subscribed_topic_regex = regex;
                changed = true;
            }
        }
        // The regex is resolved again on every heartbeat: topics created since join.
        let mut names = m.explicit_topic_names.clone();
        if let Some(regex) = m
            .subscribed_topic_regex
            .as_deref()
            .and_then(compile_topic_regex)
        {
            names.extend(
                topics
                    .topic_names()
                    .into_iter()
                    .filter(|t| regex.is_match(t))
                    .map(str::to_owned),
            );
            names.sort_unstable();
            names.dedup();
        }
        let mut subscription_changed = false;
        if names != m.subscribed_topic_names {
            for old in &m.subscribed_topic_names {
                unsubscribe(subscribed_topics, subscription_metadata, old);
            }
            for new in &names {
                *subscribed_topics.entry(new.clone()).or_default() += 1;
            }
            m.subscribed_topic_names = names;
            subscription_changed = true;
        }
        *dirty |= changed || subscription_changed;
        subscription_changed
    }

    /// Re-reads the subscribed topics from the metadata. Returns whether anything changed (a
    /// topic appeared, disappeared, was recreated or grew partitions).
    fn refresh_subscription_metadata(&mut self, topics: &dyn TopicView) -> bool {
        let mut existing = 0usize;
        let mut same = true;
        for name in self.subscribed_topics.keys() {
            let now = topics.topic(name).filter(|(_, n)| *n > 0);
            existing += usize::from(now.is_some());
            same &= self.subscription_metadata.get(name) == now.as_ref();
        }
        if same && existing == self.subscription_metadata.len() {
            return false;
        }
        self.subscription_metadata = self
            .subscribed_topics
            .keys()
            .filter_map(|name| {
                let found = topics.topic(name).filter(|(_, n)| *n > 0)?;
                Some((name.clone(), found))
            })
            .collect();
        self.dirty = true;
        true
    }

    /// The assignor most members ask for; ties and no preference go to the default, then to
    /// the first in [`ServerAssignor::ALL`].
    fn preferred_assignor(&self) -> ServerAssignor {
        let count = |a: ServerAssignor| {
            self.members
                .values()
                .filter(|m| m.server_assignor == Some(a))
                .count()
        };
        let mut best = (
            count(self.config.default_assignor),
            self.config.default_assignor,
        );
        for a in ServerAssignor::ALL {
            let c = count(a);
            if c > best.0 {
                best = (c, a);
            }
        }
        best.1
    }

    /// A new target for every member at the group epoch (Kafka's `TargetAssignmentBuilder`):
    /// previous targets are the assignor's starting point, so sticky assignors keep them.
    fn compute_target_assignment(&mut self) {
        let assignor = self.preferred_assignor();
        let partitions: BTreeMap<TopicId, u32> =
            self.subscription_metadata.values().copied().collect();
        let metadata = &self.subscription_metadata;
        let inputs: Vec<AssignorMember<'_>> = self
            .members
            .values()
            .map(|m| AssignorMember {
                member_id: &m.member_id,
                instance_id: m.instance_id.as_deref(),
                topics: m
                    .subscribed_topic_names
                    .iter()
                    .filter_map(|name| metadata.get(name).map(|(id, _)| *id))
                    .collect(),
                current: &m.target,
            })
            .collect();
        let targets = assign(assignor, &inputs, &partitions);
        drop(inputs);
        for (m, target) in self.members.values_mut().zip(targets) {
            m.target = target;
        }
        self.assignment_epoch = self.group_epoch;
        self.dirty = true;
    }

    /// Moves the member one step towards its target. Returns whether its assigned partitions
    /// changed (so the response must carry them).
    fn reconcile_member(
        &mut self,
        now_ms: u64,
        member_id: &str,
        owned: Option<&Assignment>,
    ) -> bool {
        let Some(m) = self.members.get(member_id) else {
            return false;
        };
        let owners = &self.owners;
        let next = reconcile(
            &m.current,
            self.assignment_epoch,
            &m.target,
            owned,
            |t, p| owners.get(&(t, p)).is_some_and(|o| o != member_id),
        );
        let Some(next) = next else {
            return false;
        };
        let changed = next.assigned != m.current.assigned;
        self.set_current(now_ms, member_id, next);
        changed
    }

    /// Installs a member's new current assignment: moves partition ownership and (re)arms or
    /// clears its rebalance timeout.
    fn set_current(&mut self, now_ms: u64, member_id: &str, next: CurrentAssignment) {
        let Self {
            members, owners, ..
        } = self;
        let Some(m) = members.get_mut(member_id) else {
            return;
        };
        for tp in m.owned_partitions() {
            if owners.get(&tp).is_some_and(|o| o == member_id) {
                owners.remove(&tp);
            }
        }
        m.current = next;
        for tp in m.owned_partitions() {
            let holder = owners.entry(tp).or_insert_with(|| member_id.to_owned());
            // Reconciliation only grants free partitions; anything else is a bug here.
            debug_assert_eq!(holder.as_str(), member_id, "{tp:?} owned twice");
        }
        m.revocation_deadline_ms = (m.current.state == MemberState::UnrevokedPartitions
            && m.current.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH)
            .then(|| now_ms.saturating_add(non_negative(m.rebalance_timeout_ms)));
        self.dirty = true;
    }

    /// Removes (fences) a member: its partitions are released and the group epoch bumped, so
    /// the next heartbeat computes a target without it.
    fn remove_member(&mut self, member_id: &str) {
        let Some(m) = self.members.remove(member_id) else {
            return;
        };
        for tp in m.owned_partitions() {
            if self.owners.get(&tp).is_some_and(|o| *o == m.member_id) {
                self.owners.remove(&tp);
            }
        }
        if let Some(instance) = &m.instance_id {
            if self.static_members.get(instance) == Some(&m.member_id) {
                self.static_members.remove(instance);
            }
        }
        for name in &m.subscribed_topic_names {
            unsubscribe(
                &mut self.subscribed_topics,
                &mut self.subscription_metadata,
                name,
            );
        }
        self.group_epoch = self.group_epoch.saturating_add(1);
        if self.members.is_empty() {
            // Nothing left to assign (KAFKA-20442): an empty group's epochs agree.
            self.assignment_epoch = self.group_epoch;
        }
        self.dirty = true;
    }

    // ---------------------------------------------------------------------------------------
    // Time and effects

    fn fire_expired(&mut self, now_ms: u64) {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.session_deadline_ms <= now_ms
                    || m.revocation_deadline_ms.is_some_and(|d| d <= now_ms)
            })
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            self.remove_member(&id);
        }
    }

    /// Persists what changed and tells the driver about an earlier deadline. The timer is only
    /// re-armed when the next deadline is earlier than the armed one (or that one has passed):
    /// session deadlines move later on every heartbeat, and a timer that fires early costs one
    /// no-op tick.
    fn finish(&mut self, now_ms: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.dirty {
            self.dirty = false;
            out.push(Effect::Persist {
                snapshot: self.snapshot(),
            });
        }
        match self.next_deadline_ms() {
            None => self.timer_at_ms = None,
            Some(at_ms) => {
                if self.timer_at_ms.is_none_or(|t| at_ms < t || t <= now_ms) {
                    self.timer_at_ms = Some(at_ms);
                    out.push(Effect::ScheduleTimer { at_ms });
                }
            }
        }
        self.debug_check_invariants();
        out
    }

    /// The module's invariants, checked after every input in debug builds (tests). A violation
    /// is a bug here, but in production it must not take the shard down with it.
    fn debug_check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        debug_assert!(self.assignment_epoch <= self.group_epoch);
        let mut owned = 0usize;
        let mut subscribed: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, m) in &self.members {
            debug_assert_eq!(id, &m.member_id);
            let epoch = m.current.member_epoch;
            debug_assert!(
                epoch <= self.assignment_epoch || epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH,
                "{id} at epoch {epoch} past the assignment epoch {}",
                self.assignment_epoch
            );
            for (t, ps) in &m.current.pending_revocation {
                let assigned = m.current.assigned.get(t);
                debug_assert!(
                    ps.iter().all(|p| !assigned.is_some_and(|a| a.contains(p))),
                    "{id}: assigned and revoking at once"
                );
            }
            for tp in m.owned_partitions() {
                owned += 1;
                debug_assert_eq!(self.owners.get(&tp), Some(id), "{tp:?} owner");
            }
            if let Some(instance) = &m.instance_id {
                debug_assert_eq!(self.static_members.get(instance), Some(id));
            }
            for name in &m.subscribed_topic_names {
                *subscribed.entry(name).or_default() += 1;
            }
        }
        debug_assert_eq!(owned, self.owners.len(), "stale owners");
        debug_assert_eq!(
            self.static_members.len(),
            self.members
                .values()
                .filter(|m| m.instance_id.is_some())
                .count()
        );
        debug_assert!(self
            .subscribed_topics
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .eq(subscribed));
        debug_assert!(self
            .subscription_metadata
            .keys()
            .all(|k| self.subscribed_topics.contains_key(k)));
    }
}

/// ConsumerGroupHeartbeat for a group id the coordinator has no group for. `Ok(())`: a valid
/// join, so the driver creates the group with [`ConsumerGroupMachine::new`] and hands it the
/// request. Otherwise the error to answer without creating anything: the request's own
/// validation error first, then GROUP_ID_NOT_FOUND for any other epoch (a leave included), as
/// Kafka answers.
pub fn validate_unknown_group(group_id: &str, req: &HeartbeatRequest) -> Result<()> {
    validate_request(group_id, req)?;
    if req.member_epoch == JOIN_GROUP_MEMBER_EPOCH {
        Ok(())
    } else {
        Err(ConsumerGroupError::GroupIdNotFound)
    }
}

/// Largest compiled regex program accepted (a hostile pattern must not cost memory).
const TOPIC_REGEX_SIZE_LIMIT_BYTES: usize = 1 << 20;

/// A subscription regex matched against whole topic names (Java's `Matcher.matches`, which
/// Kafka uses); `None` if it is not a valid regular expression or too large.
fn compile_topic_regex(pattern: &str) -> Option<regex::Regex> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(TOPIC_REGEX_SIZE_LIMIT_BYTES)
        .build()
        .ok()
}

/// The request's own consistency, in Kafka's order of checks.
fn validate_request(group_id: &str, req: &HeartbeatRequest) -> Result<()> {
    use ConsumerGroupError::InvalidRequest;
    if group_id.is_empty() {
        return Err(ConsumerGroupError::InvalidGroupId);
    }
    if is_blank(req.instance_id.as_deref()) || is_blank(req.rack_id.as_deref()) {
        return Err(InvalidRequest);
    }
    // An empty regex means none (librdkafka sends "" with every plain-name subscription).
    let regex = req
        .subscribed_topic_regex
        .as_deref()
        .filter(|r| !r.is_empty());
    if regex.is_some_and(|r| compile_topic_regex(r).is_none()) {
        return Err(ConsumerGroupError::InvalidRegularExpression);
    }
    match req.member_epoch {
        e if e > 0 || e == LEAVE_GROUP_MEMBER_EPOCH => {
            if req.member_id.trim().is_empty() {
                return Err(InvalidRequest);
            }
        }
        JOIN_GROUP_MEMBER_EPOCH => {
            let owned_empty = req.topic_partitions.as_ref().is_some_and(Vec::is_empty);
            let subscribed = req
                .subscribed_topic_names
                .as_ref()
                .is_some_and(|s| !s.is_empty())
                || regex.is_some();
            if req.rebalance_timeout_ms == -1 || !owned_empty || !subscribed {
                return Err(InvalidRequest);
            }
        }
        LEAVE_GROUP_STATIC_MEMBER_EPOCH => {
            if req.member_id.trim().is_empty() || req.instance_id.is_none() {
                return Err(InvalidRequest);
            }
        }
        _ => return Err(InvalidRequest),
    }
    if req
        .server_assignor
        .as_deref()
        .is_some_and(|a| ServerAssignor::from_name(a).is_none())
    {
        return Err(ConsumerGroupError::UnsupportedAssignor);
    }
    // Ours: Kafka would store a negative timeout and fence the member at once; and names no
    // topic can have would only cost memory.
    if req.rebalance_timeout_ms < -1 {
        return Err(InvalidRequest);
    }
    if req
        .subscribed_topic_names
        .iter()
        .flatten()
        .any(|n| n.len() > MAX_TOPIC_NAME_BYTES)
    {
        return Err(InvalidRequest);
    }
    Ok(())
}

/// Kafka's epoch check: a greater epoch than the member's is fenced; a smaller one too, except
/// the member's previous epoch with owned partitions all still assigned (the response that
/// moved it on may have been lost). Epoch 0 always passes: a fenced member rejoins with its
/// id and epoch 0 (KIP-848; Kafka's KAFKA-19233).
fn check_member_epoch(m: &Member, req: &HeartbeatRequest) -> Result<()> {
    let received = req.member_epoch;
    let known = m.current.member_epoch;
    if received == JOIN_GROUP_MEMBER_EPOCH || received == known {
        return Ok(());
    }
    let lost_response = received < known
        && received == m.current.previous_member_epoch
        && req.topic_partitions.as_ref().is_some_and(|owned| {
            owned.iter().all(|tp| {
                let assigned = m.current.assigned.get(&tp.topic_id);
                tp.partitions
                    .iter()
                    .all(|p| assigned.is_some_and(|a| a.contains(p)))
            })
        });
    if lost_response {
        Ok(())
    } else {
        Err(ConsumerGroupError::FencedMemberEpoch)
    }
}

/// Bytes the member would keep after this request (fields not sent keep their value).
fn member_bytes(base: Option<&Member>, member_id: &str, req: &HeartbeatRequest) -> usize {
    let opt = |sent: &Option<String>, kept: Option<&Option<String>>| {
        sent.as_ref()
            .or_else(|| kept.and_then(Option::as_ref))
            .map_or(0, String::len)
    };
    let topics = |names: &[String]| {
        names
            .iter()
            .map(|n| n.len() + TOPIC_NAME_OVERHEAD_BYTES)
            .sum::<usize>()
    };
    let subscription = match (&req.subscribed_topic_names, base) {
        (Some(names), _) => topics(names),
        (None, Some(m)) => topics(&m.subscribed_topic_names),
        (None, None) => 0,
    };
    member_id.len()
        + opt(
            &req.subscribed_topic_regex,
            base.map(|m| &m.subscribed_topic_regex),
        )
        + opt(&req.instance_id, base.map(|m| &m.instance_id))
        + opt(&req.rack_id, base.map(|m| &m.rack_id))
        + req.client_id.len()
        + req.client_host.len()
        + subscription
}

fn unsubscribe(
    subscribed: &mut BTreeMap<String, usize>,
    metadata: &mut BTreeMap<String, (TopicId, u32)>,
    name: &str,
) {
    if let btree_map::Entry::Occupied(mut e) = subscribed.entry(name.to_owned()) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
            metadata.remove(name);
        }
    }
}

fn describe_partitions(
    assignment: &Assignment,
    topics: &dyn TopicView,
) -> Vec<DescribedTopicPartitions> {
    to_topic_partitions(assignment)
        .into_iter()
        .filter_map(
            |TopicPartitions {
                 topic_id,
                 partitions,
             }| {
                let topic_name = topics.topic_name(topic_id)?.to_owned();
                Some(DescribedTopicPartitions {
                    topic_id,
                    topic_name,
                    partitions,
                })
            },
        )
        .collect()
}

fn is_blank(s: Option<&str>) -> bool {
    s.is_some_and(|s| s.trim().is_empty())
}

fn non_negative(ms: i32) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

fn clamp_i32(ms: u64) -> i32 {
    i32::try_from(ms).unwrap_or(i32::MAX)
}
