//! The classic-group runtime of one shard: drives one [`GroupMachine`] per group this shard
//! coordinates and executes what it asks for.
//!
//! - A JoinGroup or SyncGroup registers a oneshot under a fresh [`RequestId`] and awaits it; the
//!   machine answers it through a `Respond*` effect, now or when the rebalance completes.
//! - One timer per group follows [`GroupMachine::next_deadline_ms`]: it is re-armed only when the
//!   deadline moves earlier (moving later leaves a harmless early tick, after which it re-arms), so
//!   a heartbeat costs no timer work.
//! - [`Effect::PersistGroup`] appends a GroupMetadata record to the group's `__consumer_offsets`
//!   partition synchronously (so records keep the order the machine emitted them) and reports
//!   the outcome once the group commit made it durable.
//! - At start, [`restore`] rebuilds each group from its last persisted record.
//!
//! Deadlines use a monotonic clock ([`clock_ms`]): a wall-clock jump must not expire sessions.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::channel::oneshot;

use crate::consumer_group::ConsumerGroupState;
use crate::group::{
    CommitIdentity, Effect, GroupDescription, GroupError, GroupMachine, GroupSnapshot, GroupState,
    HeartbeatRequest, JoinRequest, JoinResponse, LeaveMember, LeaveMemberResult, LeaveResponse,
    MemberIdSource, PersistId, RequestId, SyncRequest, SyncResponse,
};
use crate::protocol::error::ErrorCode;
use crate::shard::{now_ms, Shard};

use super::offsets::{encode_commit, encode_group, encode_group_tombstone, Expiry, OffsetKey};
use super::timer::{note_empty_since, GroupTimer};
use super::{coordinating_partition, fail_accepted, persist_record, write_records};

/// Milliseconds on a monotonic clock shared by every shard of this process.
pub fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

enum Waiter {
    Join(oneshot::Sender<JoinResponse>),
    Sync(oneshot::Sender<SyncResponse>),
}

struct GroupEntry {
    machine: GroupMachine,
    /// Parked JoinGroup/SyncGroup requests of this group.
    waiters: HashMap<RequestId, Waiter>,
    timer: GroupTimer,
    /// Wall-clock time the group last became Empty: offsets retention counts from it.
    empty_since_ms: Option<i64>,
}

impl GroupEntry {
    fn new(machine: GroupMachine) -> Self {
        GroupEntry {
            machine,
            waiters: HashMap::new(),
            timer: GroupTimer::default(),
            empty_since_ms: None,
        }
    }

    /// How this group's committed offsets expire (Kafka's `removeExpiredOffsets` cases).
    fn expiry(&self) -> Expiry {
        let d = self.machine.describe();
        match d.state {
            _ if d.protocol_type.is_empty() => Expiry::SinceCommit,
            GroupState::Empty => Expiry::SinceEmpty(self.empty_since_ms.unwrap_or_else(now_ms)),
            GroupState::Stable if d.protocol_type == "consumer" => {
                group_subscriptions(&d).map_or(Expiry::Never, Expiry::UnsubscribedTopics)
            }
            _ => Expiry::Never,
        }
    }
}

/// Random member ids (`{client_id}-{uuid}` like Kafka's for classic members, a bare uuid for
/// consumer-group members): uniqueness matters, secrecy does not, so std's randomly keyed hasher
/// over a counter is enough.
pub(super) struct RandomIds {
    state: RandomState,
    counter: u64,
}

impl RandomIds {
    pub(super) fn new() -> Self {
        RandomIds {
            state: RandomState::new(),
            counter: 0,
        }
    }

    pub(super) fn uuid(&mut self) -> String {
        self.counter += 1;
        let mut words = [0u64; 2];
        for (i, w) in words.iter_mut().enumerate() {
            let mut h = self.state.build_hasher();
            h.write_u64(self.counter);
            h.write_usize(i);
            *w = h.finish();
        }
        let [a, b] = words;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }
}

impl MemberIdSource for RandomIds {
    fn next_uuid(&mut self) -> String {
        self.uuid()
    }
}

/// Every classic group coordinated by one shard.
pub struct GroupRuntime {
    groups: HashMap<String, GroupEntry>,
    next_request_id: u64,
    ids: RandomIds,
}

impl Default for GroupRuntime {
    fn default() -> Self {
        GroupRuntime {
            groups: HashMap::new(),
            next_request_id: 0,
            ids: RandomIds::new(),
        }
    }
}

impl GroupRuntime {
    /// (group id, protocol type, state) of every group whose machine lives here.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        self.groups
            .values()
            .map(|e| {
                (
                    e.machine.group_id().to_string(),
                    e.machine.protocol_type().unwrap_or("").to_string(),
                    e.machine.state(),
                )
            })
            .collect()
    }

    pub fn state(&self, group: &str) -> Option<GroupState> {
        self.groups.get(group).map(|e| e.machine.state())
    }

    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        self.groups.get(group).map(|e| e.machine.describe())
    }

    /// Forgets `group` if it is an Empty (or Dead) classic group: a consumer group of that id
    /// replaced it.
    pub fn remove_empty(&mut self, group: &str) {
        if matches!(
            self.state(group),
            Some(GroupState::Empty | GroupState::Dead)
        ) {
            self.groups.remove(group);
        }
    }

    /// Forgets the groups `keep` rejects (their `__consumer_offsets` partition closed here).
    pub fn retain_groups(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.groups.retain(|g, _| keep(g));
    }
}

/// Rebuilds groups read back from a `__consumer_offsets` partition: `None` means the group was
/// deleted (its tombstone came last).
pub fn restore(shard: &Rc<Shard>, snapshots: HashMap<String, Option<GroupSnapshot>>) {
    for (group, snapshot) in snapshots {
        let Some(snapshot) = snapshot else {
            shard.groups.borrow_mut().groups.remove(&group);
            continue;
        };
        let (machine, effects) =
            GroupMachine::restore(clock_ms(), snapshot, shard.config.group.clone());
        shard
            .groups
            .borrow_mut()
            .groups
            .insert(group.clone(), GroupEntry::new(machine));
        run(shard, &group, effects);
    }
}

fn coordinator_error(code: ErrorCode) -> GroupError {
    match code {
        ErrorCode::NOT_COORDINATOR => GroupError::NotCoordinator,
        ErrorCode::COORDINATOR_NOT_AVAILABLE => GroupError::CoordinatorNotAvailable,
        _ => GroupError::UnknownServerError,
    }
}

/// Whether this shard coordinates `group` right now.
fn check_coordinator(shard: &Shard, group: &str) -> Result<(), GroupError> {
    if group.is_empty() {
        return Err(GroupError::InvalidGroupId);
    }
    coordinating_partition(shard, group)
        .map(|_| ())
        .map_err(coordinator_error)
}

/// JoinGroup on the coordinating shard. A new member (empty member id) creates the group.
pub async fn join(shard: Rc<Shard>, group: String, req: JoinRequest) -> JoinResponse {
    if let Err(e) = check_coordinator(&shard, &group) {
        return JoinResponse::error(req.member_id, e);
    }
    // A consumer group of that id: a classic member cannot join it (Kafka's answer); an empty
    // one gives way to the classic group.
    let consumer_group_state = shard.consumer_groups.borrow().state(&group);
    match consumer_group_state {
        None => {}
        Some(ConsumerGroupState::Empty) => shard.consumer_groups.borrow_mut().remove(&group),
        Some(_) => {
            return JoinResponse::error(req.member_id, GroupError::InconsistentGroupProtocol)
        }
    }
    let member_id = req.member_id.clone();
    let (rx, effects) = {
        let mut rt = shard.groups.borrow_mut();
        let rt = &mut *rt;
        if !rt.groups.contains_key(&group) && !req.member_id.is_empty() {
            return JoinResponse::error(req.member_id, GroupError::UnknownMemberId);
        }
        rt.next_request_id += 1;
        let request_id = RequestId(rt.next_request_id);
        let entry = rt.groups.entry(group.clone()).or_insert_with(|| {
            GroupEntry::new(GroupMachine::new(group.clone(), shard.config.group.clone()))
        });
        let (tx, rx) = oneshot::channel();
        entry.waiters.insert(request_id, Waiter::Join(tx));
        (
            rx,
            entry.machine.join(clock_ms(), request_id, req, &mut rt.ids),
        )
    };
    run(&shard, &group, effects);
    rx.await
        .unwrap_or_else(|_| JoinResponse::error(member_id, GroupError::CoordinatorNotAvailable))
}

/// SyncGroup on the coordinating shard.
pub async fn sync(shard: Rc<Shard>, group: String, req: SyncRequest) -> SyncResponse {
    if let Err(e) = check_coordinator(&shard, &group) {
        return SyncResponse::error(e);
    }
    let (rx, effects) = {
        let mut rt = shard.groups.borrow_mut();
        let rt = &mut *rt;
        rt.next_request_id += 1;
        let request_id = RequestId(rt.next_request_id);
        let Some(entry) = rt.groups.get_mut(&group) else {
            return SyncResponse::error(GroupError::UnknownMemberId);
        };
        let (tx, rx) = oneshot::channel();
        entry.waiters.insert(request_id, Waiter::Sync(tx));
        (rx, entry.machine.sync(clock_ms(), request_id, req))
    };
    run(&shard, &group, effects);
    rx.await
        .unwrap_or_else(|_| SyncResponse::error(GroupError::CoordinatorNotAvailable))
}

/// Heartbeat on the coordinating shard.
pub fn heartbeat(shard: &Rc<Shard>, group: &str, req: HeartbeatRequest) -> Result<(), GroupError> {
    check_coordinator(shard, group)?;
    let (result, effects) = {
        let mut rt = shard.groups.borrow_mut();
        let Some(entry) = rt.groups.get_mut(group) else {
            return Err(GroupError::UnknownMemberId);
        };
        entry.machine.heartbeat(clock_ms(), &req)
    };
    run(shard, group, effects);
    result
}

/// LeaveGroup on the coordinating shard (one member for v0–2, a batch for v3+).
pub fn leave(shard: &Rc<Shard>, group: &str, members: Vec<LeaveMember>) -> LeaveResponse {
    if let Err(e) = check_coordinator(shard, group) {
        return LeaveResponse {
            error: Some(e),
            members: Vec::new(),
        };
    }
    let (response, effects) = {
        let mut rt = shard.groups.borrow_mut();
        let Some(entry) = rt.groups.get_mut(group) else {
            // Kafka: an unknown group answers every member UNKNOWN_MEMBER_ID.
            return LeaveResponse {
                error: None,
                members: members
                    .into_iter()
                    .map(|m| LeaveMemberResult {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        error: Some(GroupError::UnknownMemberId),
                    })
                    .collect(),
            };
        };
        entry.machine.leave(clock_ms(), &members)
    };
    run(shard, group, effects);
    response
}

/// OffsetCommit validation against the group's live state. A group this shard does not know
/// accepts only simple commits (generation < 0), as Kafka does.
pub fn validate_commit(
    shard: &Rc<Shard>,
    group: &str,
    identity: &CommitIdentity,
) -> Result<(), GroupError> {
    let (result, effects) = {
        let mut rt = shard.groups.borrow_mut();
        match rt.groups.get_mut(group) {
            None => return crate::group::validate_commit_unknown_group(identity.generation_id),
            Some(entry) => entry.machine.validate_commit(clock_ms(), identity),
        }
    };
    run(shard, group, effects);
    result
}

/// TxnOffsetCommit's check against a live classic group (see
/// `GroupMachine::validate_txn_commit`); an unknown group accepts it, as in Kafka.
pub fn validate_txn_commit(
    shard: &Rc<Shard>,
    group: &str,
    identity: &CommitIdentity,
) -> Result<(), GroupError> {
    match shard.groups.borrow().groups.get(group) {
        None => Ok(()),
        Some(entry) => entry.machine.validate_txn_commit(identity),
    }
}

/// DescribeGroups of one group on the coordinating shard. A group known only from its committed
/// offsets is Empty with no protocol; an unknown group, or a consumer group (not a classic one),
/// is Dead (Kafka's answer before v6).
pub fn describe(shard: &Rc<Shard>, group: &str) -> Result<GroupDescription, GroupError> {
    check_coordinator(shard, group)?;
    if let Some(d) = shard.groups.borrow().describe(group) {
        return Ok(d);
    }
    let state = if shard.consumer_groups.borrow().contains(group) {
        GroupState::Dead
    } else if shard.offsets.borrow().has_group(group) {
        GroupState::Empty
    } else {
        GroupState::Dead
    };
    Ok(GroupDescription {
        state,
        protocol_type: String::new(),
        protocol_name: String::new(),
        members: Vec::new(),
    })
}

/// One group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroupRow {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
    /// ListGroups v5's group type: "classic" or "consumer".
    pub group_type: &'static str,
}

/// ListGroups on one shard: every group it coordinates, classic and consumer, including groups
/// that only have committed offsets (classic, Empty, no protocol type). Dead groups are left
/// out. Sorted by group id.
pub fn list(shard: &Shard) -> Vec<ListedGroupRow> {
    let runtime = shard.groups.borrow();
    let consumer_groups = shard.consumer_groups.borrow();
    let classic = |group_id: String, protocol_type: String, state: GroupState| ListedGroupRow {
        group_id,
        protocol_type,
        state: state.as_str(),
        group_type: "classic",
    };
    let mut out: Vec<ListedGroupRow> = runtime
        .list()
        .into_iter()
        .filter(|(_, _, s)| *s != GroupState::Dead)
        .map(|(g, p, s)| classic(g, p, s))
        .collect();
    out.extend(
        consumer_groups
            .list()
            .into_iter()
            .map(|(group_id, state)| ListedGroupRow {
                group_id,
                protocol_type: "consumer".to_string(),
                state: state.as_str(),
                group_type: "consumer",
            }),
    );
    for g in shard.offsets.borrow().group_ids() {
        if !runtime.groups.contains_key(g) && !consumer_groups.contains(g) {
            out.push(classic(g.to_string(), String::new(), GroupState::Empty));
        }
    }
    out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    out
}

/// DeleteGroups of one group on the coordinating shard: only an Empty group (or one with only
/// committed offsets) can go. Writes tombstones for its metadata and every committed offset,
/// waits until they are durable, then forgets it.
pub async fn delete(shard: Rc<Shard>, group: String) -> Result<(), GroupError> {
    check_coordinator(&shard, &group)?;
    let consumer_group_state = shard.consumer_groups.borrow().state(&group);
    let known_consumer_group = match consumer_group_state {
        None => false,
        Some(ConsumerGroupState::Empty) => true,
        Some(_) => return Err(GroupError::NonEmptyGroup),
    };
    let known_machine = {
        let mut rt = shard.groups.borrow_mut();
        match rt.groups.get_mut(&group) {
            Some(entry) => {
                entry.machine.delete()?;
                true
            }
            None => false,
        }
    };
    let offsets = shard.offsets.borrow().group(&group);
    if !known_machine && !known_consumer_group && offsets.is_empty() {
        return Err(GroupError::GroupIdNotFound);
    }
    let mut records: Vec<_> = offsets
        .iter()
        .map(|(topic, partition, _)| {
            encode_commit(
                &OffsetKey {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                },
                None,
            )
        })
        .collect();
    // One tombstone deletes the group id whatever its type (see `offsets`).
    records.push(encode_group_tombstone(&group));
    let written = write_records(&shard, &group, &records).await;
    // The machine is Dead either way: a failed tombstone leaves the group to be restored from
    // its last record at the next start, which is what a client retrying DeleteGroups expects.
    shard.groups.borrow_mut().groups.remove(&group);
    shard.consumer_groups.borrow_mut().remove(&group);
    written.map_err(coordinator_error)?;
    let mut table = shard.offsets.borrow_mut();
    for (topic, partition, _) in offsets {
        table.apply(
            OffsetKey {
                group: group.clone(),
                topic,
                partition,
            },
            None,
        );
    }
    Ok(())
}

/// Executes a machine's effects for `group`, then re-arms its timer.
fn run(shard: &Rc<Shard>, group: &str, effects: Vec<Effect>) {
    for effect in effects {
        match effect {
            Effect::RespondJoin {
                request_id,
                response,
            } => {
                if let Some(Waiter::Join(tx)) = take_waiter(shard, group, request_id) {
                    // The connection may be gone: nothing to tell then.
                    let _ = tx.send(response);
                }
            }
            Effect::RespondSync {
                request_id,
                response,
            } => {
                if let Some(Waiter::Sync(tx)) = take_waiter(shard, group, request_id) {
                    let _ = tx.send(response);
                }
            }
            // The timer follows next_deadline_ms, below.
            Effect::ScheduleTimer { .. } => {}
            Effect::PersistGroup {
                persist_id,
                snapshot,
            } => persist(shard, group, persist_id, &snapshot),
        }
    }
    rearm(shard, group);
}

fn take_waiter(shard: &Shard, group: &str, request_id: RequestId) -> Option<Waiter> {
    shard
        .groups
        .borrow_mut()
        .groups
        .get_mut(group)?
        .waiters
        .remove(&request_id)
}

/// Appends the snapshot now (keeping the machine's order) and reports it once durable.
fn persist(shard: &Rc<Shard>, group: &str, persist_id: PersistId, snapshot: &GroupSnapshot) {
    let record = encode_group(snapshot, now_ms());
    let group = group.to_string();
    let p = coordinating_partition(shard, &group);
    persist_record(shard, p, Ok(record), move |shard, result| {
        if let Err(code) = result {
            log::warn!(
                "shard {}: group {group}: metadata write failed: {code:?}",
                shard.id
            );
        }
        let effects = {
            let mut rt = shard.groups.borrow_mut();
            let Some(entry) = rt.groups.get_mut(&group) else {
                return;
            };
            entry
                .machine
                .persisted(clock_ms(), persist_id, result.map_err(coordinator_error))
        };
        run(shard, &group, effects);
    });
}

/// Arms the group's timer for its next deadline unless an earlier one is already armed; notes
/// when the group became Empty.
fn rearm(shard: &Rc<Shard>, group: &str) {
    let mut rt = shard.groups.borrow_mut();
    let Some(entry) = rt.groups.get_mut(group) else {
        return;
    };
    note_empty_since(
        &mut entry.empty_since_ms,
        entry.machine.state() == GroupState::Empty,
    );
    let Some(at) = entry.machine.next_deadline_ms() else {
        entry.timer.cancel();
        return;
    };
    if entry.timer.armed_at().is_some_and(|armed| armed <= at) {
        return;
    }
    entry.timer.arm(shard, group, at, fire);
}

fn fire(shard: &Rc<Shard>, group: &str, at: u64) {
    let effects = {
        let mut rt = shard.groups.borrow_mut();
        let Some(entry) = rt.groups.get_mut(group) else {
            return;
        };
        if !entry.timer.take_fired(at) {
            return;
        }
        entry.machine.tick(clock_ms())
    };
    run(shard, group, effects);
}

/// Deletes the committed offsets that outlived `offsets.retention.minutes` (or their explicit
/// retention), then removes Empty groups left without offsets, as Kafka's periodic cleanup does.
/// Tombstones are durable before the table forgets anything.
pub async fn expire_offsets(shard: &Rc<Shard>) {
    let now = now_ms();
    let expired = {
        let rt = shard.groups.borrow();
        let consumer_groups = shard.consumer_groups.borrow();
        shard
            .offsets
            .borrow()
            .expired(now, shard.config.offsets_retention_ms, |g| {
                rt.groups
                    .get(g)
                    .map(GroupEntry::expiry)
                    .or_else(|| consumer_groups.expiry(g))
                    .unwrap_or(Expiry::SinceCommit)
            })
    };
    let mut by_group: HashMap<String, Vec<OffsetKey>> = HashMap::new();
    for k in expired {
        by_group.entry(k.group.clone()).or_default().push(k);
    }
    let mut removed = 0usize;
    for (group, keys) in by_group {
        let records: Vec<_> = keys.iter().map(|k| encode_commit(k, None)).collect();
        if let Err(code) = write_records(shard, &group, &records).await {
            log::warn!(
                "shard {}: group {group}: expiring offsets failed: {code:?}",
                shard.id
            );
            continue;
        }
        removed += keys.len();
        let mut table = shard.offsets.borrow_mut();
        for k in keys {
            table.apply(k, None);
        }
    }
    let idle: Vec<String> = {
        let rt = shard.groups.borrow();
        let table = shard.offsets.borrow();
        rt.groups
            .iter()
            .filter(|(_, e)| e.machine.state() == GroupState::Empty)
            .map(|(g, _)| g.clone())
            .chain(shard.consumer_groups.borrow().empty_groups())
            .filter(|g| !table.has_group(g))
            .collect()
    };
    for group in &idle {
        if delete(shard.clone(), group.clone()).await.is_err() {
            log::warn!(
                "shard {}: group {group}: removing the empty group failed",
                shard.id
            );
        }
    }
    if removed > 0 || !idle.is_empty() {
        log::info!(
            "shard {}: expired {removed} committed offset(s), removed {} empty group(s)",
            shard.id,
            idle.len()
        );
    }
}

/// Runs [`expire_offsets`] every `offsets.retention.check.interval.ms` until the shard stops.
pub fn spawn_offsets_expiry(shard: &Rc<Shard>) {
    let weak = Rc::downgrade(shard);
    let interval = Duration::from_millis(shard.config.offsets_retention_check_interval_ms);
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(interval).await;
            let Some(shard) = weak.upgrade() else { return };
            if shard.stopping.get() {
                return;
            }
            expire_offsets(&shard).await;
        }
    })
    .detach();
}

/// The topics a consumer-protocol member subscribes to, from its JoinGroup metadata
/// (ConsumerProtocolSubscription: version i16, topics array of strings, ...). `None` when the
/// metadata cannot be read.
fn subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let take = |b: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head.to_vec())
    };
    let mut b = metadata;
    take(&mut b, 2)?;
    let count = take(&mut b, 4)?;
    let count = i32::from_be_bytes([count[0], count[1], count[2], count[3]]);
    let count = usize::try_from(count).ok()?;
    if count > b.len() / 2 {
        return None;
    }
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let len = take(&mut b, 2)?;
        let len = usize::try_from(i16::from_be_bytes([len[0], len[1]])).ok()?;
        topics.push(String::from_utf8_lossy(&take(&mut b, len)?).into_owned());
    }
    Some(topics)
}

/// Every topic some member of a consumer group subscribes to (from their JoinGroup metadata, which
/// [`GroupDescription`] carries while the group is Stable); `None` if any member's is unreadable.
fn group_subscriptions(d: &GroupDescription) -> Option<Vec<String>> {
    let mut topics = Vec::new();
    for m in &d.members {
        topics.extend(subscribed_topics(&m.metadata)?);
    }
    Some(topics)
}

/// OffsetDelete on the coordinating shard: drops the committed offsets of `parts` unless the
/// group is live and subscribed to the topic (GROUP_SUBSCRIBED_TO_TOPIC per partition, as Kafka).
/// A live group of another protocol type answers NON_EMPTY_GROUP; an unknown group
/// GROUP_ID_NOT_FOUND.
pub async fn delete_offsets(
    shard: Rc<Shard>,
    group: String,
    parts: Vec<(String, i32)>,
) -> Result<Vec<ErrorCode>, ErrorCode> {
    check_coordinator(&shard, &group).map_err(|e| ErrorCode(e.code()))?;
    let description = describe(&shard, &group).map_err(|e| ErrorCode(e.code()))?;
    let consumer_group_topics = shard.consumer_groups.borrow().subscribed_topics(&group);
    // Topics the live group still reads; `None` = every topic (cannot tell).
    let subscribed: Option<Vec<String>> = match description.state {
        _ if consumer_group_topics.is_some() => consumer_group_topics,
        GroupState::Dead => return Err(ErrorCode::GROUP_ID_NOT_FOUND),
        GroupState::Empty => Some(Vec::new()),
        _ if description.protocol_type != "consumer" => return Err(ErrorCode::NON_EMPTY_GROUP),
        GroupState::Stable => group_subscriptions(&description),
        _ => None,
    };
    let image = shard.image();
    let mut codes = Vec::with_capacity(parts.len());
    let mut doomed = Vec::new();
    for (topic, partition) in &parts {
        let code = if image.shard_of(topic, *partition).is_none() {
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        } else if subscribed.as_ref().is_none_or(|s| s.contains(topic)) {
            ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC
        } else {
            if shard
                .offsets
                .borrow()
                .get(&group, topic, *partition)
                .is_some()
            {
                doomed.push(OffsetKey {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                });
            }
            ErrorCode::NONE
        };
        codes.push(code);
    }
    if doomed.is_empty() {
        return Ok(codes);
    }
    let records: Vec<_> = doomed.iter().map(|k| encode_commit(k, None)).collect();
    if let Err(code) = write_records(&shard, &group, &records).await {
        return Ok(fail_accepted(codes, code));
    }
    let mut table = shard.offsets.borrow_mut();
    for k in doomed {
        table.apply(k, None);
    }
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_unique_and_uuid_shaped() {
        let mut ids = RandomIds::new();
        let a = ids.next_uuid();
        let b = ids.next_uuid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn subscriptions_are_read_and_garbage_is_refused() {
        let mut m = vec![0, 1, 0, 0, 0, 2];
        for t in ["orders", "bills"] {
            m.extend_from_slice(&(t.len() as i16).to_be_bytes());
            m.extend_from_slice(t.as_bytes());
        }
        m.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // null user data (ignored)
        assert_eq!(
            subscribed_topics(&m),
            Some(vec!["orders".to_string(), "bills".to_string()])
        );
        for cut in 0..12 {
            assert_eq!(subscribed_topics(&m[..cut]), None, "cut {cut}");
        }
        assert_eq!(subscribed_topics(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), None);
    }
}
