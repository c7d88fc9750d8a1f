//! The KIP-848 consumer-group runtime of one shard: drives one [`ConsumerGroupMachine`] per
//! `consumer`-type group this shard coordinates (ConsumerGroupHeartbeat, ConsumerGroupDescribe)
//! and executes what it asks for.
//!
//! - A heartbeat runs the machine at once. If it asks to persist, the group's snapshot is
//!   appended to the group's `__consumer_offsets` partition right away (so snapshots keep the
//!   machine's order) and the answer waits until that append is durable, as Kafka answers only
//!   after its records are committed. If the write fails, the in-memory group is dropped and the
//!   member told COORDINATOR_NOT_AVAILABLE: the group comes back from its last durable snapshot
//!   when the partition is opened again.
//! - One timer per group, replaced by every [`Effect::ScheduleTimer`]; when it fires the machine
//!   expires sessions and rebalance timeouts ([`ConsumerGroupMachine::tick`]).
//! - At start, [`restore`] rebuilds each group from its last snapshot record.
//!
//! A group id names one group: a heartbeat for the id of a live classic group is refused
//! (GROUP_ID_NOT_FOUND, Kafka's answer when the group is of the other type), an empty classic
//! group is replaced (Kafka converts it), and [`super::groups`] refuses a JoinGroup for a live
//! consumer group the same way. Committed offsets belong to the group id whatever its type.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use crate::consumer_group::{
    validate_unknown_group, ConsumerGroupDescription, ConsumerGroupError, ConsumerGroupMachine,
    ConsumerGroupSnapshot, ConsumerGroupState, Effect, HeartbeatRequest, HeartbeatResponse,
    MemberIdSource, TopicId, TopicView,
};
use crate::group::GroupState;
use crate::metadata::MetadataImage;
use crate::protocol::error::ErrorCode;
use crate::protocol::records::encode_batch;
use crate::shard::{now_ms, Shard};

use super::groups::{clock_ms, RandomIds};
use super::offsets::{encode_consumer_group, Expiry};
use super::timer::{note_empty_since, GroupTimer};
use super::{append_batch, coordinating_partition, wait_durable, PendingWrite};

impl MemberIdSource for RandomIds {
    fn new_member_id(&mut self) -> String {
        self.uuid()
    }
}

/// Topics as the machine sees them: the shard's current metadata image.
pub struct ImageTopics(pub Arc<MetadataImage>);

impl TopicView for ImageTopics {
    fn topic(&self, name: &str) -> Option<(TopicId, u32)> {
        self.0
            .topic(name)
            .map(|t| (TopicId(t.id), t.partitions.len() as u32))
    }

    fn topic_name(&self, id: TopicId) -> Option<&str> {
        self.0.topic_by_id(&id.0).map(|t| t.name.as_str())
    }

    fn topic_names(&self) -> Vec<&str> {
        self.0
            .topics
            .keys()
            .map(String::as_str)
            .filter(|t| !super::offsets::is_internal_topic(t))
            .collect()
    }
}

struct GroupEntry {
    machine: ConsumerGroupMachine,
    timer: GroupTimer,
    /// Wall-clock time the group last became Empty: offsets retention counts from it.
    empty_since_ms: Option<i64>,
}

impl GroupEntry {
    fn new(machine: ConsumerGroupMachine) -> Self {
        GroupEntry {
            machine,
            timer: GroupTimer::default(),
            empty_since_ms: None,
        }
    }
}

/// Every consumer group coordinated by one shard.
pub struct ConsumerGroupRuntime {
    groups: HashMap<String, GroupEntry>,
    ids: RandomIds,
}

impl Default for ConsumerGroupRuntime {
    fn default() -> Self {
        ConsumerGroupRuntime {
            groups: HashMap::new(),
            ids: RandomIds::new(),
        }
    }
}

impl ConsumerGroupRuntime {
    pub fn contains(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    pub fn state(&self, group: &str) -> Option<ConsumerGroupState> {
        self.groups.get(group).map(|e| e.machine.state())
    }

    /// (group id, state) of every group.
    pub fn list(&self) -> Vec<(String, ConsumerGroupState)> {
        self.groups
            .iter()
            .map(|(g, e)| (g.clone(), e.machine.state()))
            .collect()
    }

    /// Forgets `group` (deleted, or replaced by a classic group).
    pub fn remove(&mut self, group: &str) {
        self.groups.remove(group);
    }

    /// How `group`'s committed offsets expire, if it is a consumer group (Kafka's cases: an
    /// empty group's from when it became empty; a live group's for topics no member subscribes
    /// to).
    pub fn expiry(&self, group: &str) -> Option<Expiry> {
        let e = self.groups.get(group)?;
        Some(match e.machine.state() {
            ConsumerGroupState::Empty => {
                Expiry::SinceEmpty(e.empty_since_ms.unwrap_or_else(now_ms))
            }
            _ => Expiry::UnsubscribedTopics(self.subscribed_topics(group).unwrap_or_default()),
        })
    }

    /// Every topic some member of `group` subscribes to (none when it is Empty), if it is a
    /// consumer group.
    pub fn subscribed_topics(&self, group: &str) -> Option<Vec<String>> {
        self.groups
            .get(group)
            .map(|e| e.machine.subscribed_topics().map(str::to_owned).collect())
    }

    /// Empty groups, for the periodic cleanup.
    pub fn empty_groups(&self) -> Vec<String> {
        self.groups
            .iter()
            .filter(|(_, e)| e.machine.state() == ConsumerGroupState::Empty)
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// OffsetCommit check for a consumer group: `None` if `group` is not one.
    pub fn validate_commit(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
    ) -> Option<Result<(), ConsumerGroupError>> {
        self.groups
            .get(group)
            .map(|e| e.machine.validate_commit(member_id, member_epoch))
    }
}

/// Rebuilds groups read back from a `__consumer_offsets` partition: `None` means the group id's
/// last record deleted it or made it a classic group.
pub fn restore(shard: &Rc<Shard>, snapshots: HashMap<String, Option<ConsumerGroupSnapshot>>) {
    for (group, snapshot) in snapshots {
        let Some(snapshot) = snapshot else {
            shard.consumer_groups.borrow_mut().remove(&group);
            continue;
        };
        let (machine, effects) = ConsumerGroupMachine::restore(
            clock_ms(),
            snapshot,
            shard.config.consumer_group.clone(),
        );
        shard
            .consumer_groups
            .borrow_mut()
            .groups
            .insert(group.clone(), GroupEntry::new(machine));
        run_in_background(shard, &group, effects);
    }
}

/// ConsumerGroupHeartbeat on the coordinating shard. `Err` is a coordinator-level error
/// (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE) the client retries after finding the
/// coordinator again.
pub async fn heartbeat(
    shard: Rc<Shard>,
    group: String,
    req: HeartbeatRequest,
) -> Result<HeartbeatResponse, ErrorCode> {
    if group.is_empty() {
        return Ok(HeartbeatResponse::error(ConsumerGroupError::InvalidGroupId));
    }
    let partition = coordinating_partition(&shard, &group)?;
    // A live classic group of that id: not a consumer group. An empty one gives way.
    let classic_state = shard.groups.borrow().state(&group);
    match classic_state {
        None | Some(GroupState::Empty | GroupState::Dead) => {}
        Some(_) => {
            return Ok(HeartbeatResponse::error(
                ConsumerGroupError::GroupIdNotFound,
            ))
        }
    }
    let topics = ImageTopics(shard.image());
    let (response, effects) = {
        let mut rt = shard.consumer_groups.borrow_mut();
        let rt = &mut *rt;
        if !rt.groups.contains_key(&group) {
            if let Err(e) = validate_unknown_group(&group, &req) {
                return Ok(HeartbeatResponse::error(e));
            }
        }
        let entry = rt.groups.entry(group.clone()).or_insert_with(|| {
            GroupEntry::new(ConsumerGroupMachine::new(
                group.clone(),
                shard.config.consumer_group.clone(),
            ))
        });
        let (response, effects) = entry
            .machine
            .heartbeat(clock_ms(), req, &topics, &mut rt.ids);
        // A join that failed leaves no trace of a group that never existed.
        if entry.machine.member_count() == 0 && entry.machine.group_epoch() == 0 {
            rt.groups.remove(&group);
        }
        (response, effects)
    };
    if shard.consumer_groups.borrow().contains(&group) {
        shard.groups.borrow_mut().remove_empty(&group);
    }
    let written = run(&shard, &group, effects);
    if let Some(write) = written {
        let durable = match write {
            Ok(pending) => wait_durable(&shard, &partition, pending).await,
            Err(code) => Err(code),
        };
        if let Err(code) = durable {
            forget_after_failed_write(&shard, &group, code);
            return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
        }
    }
    Ok(response)
}

/// ConsumerGroupDescribe of one group on the coordinating shard. A classic group, or a group
/// known only from committed offsets, is GROUP_ID_NOT_FOUND (admin clients then fall back to
/// DescribeGroups, as they do with Kafka).
pub fn describe(shard: &Rc<Shard>, group: &str) -> Result<ConsumerGroupDescription, ErrorCode> {
    if group.is_empty() {
        return Err(ErrorCode::INVALID_GROUP_ID);
    }
    coordinating_partition(shard, group)?;
    let topics = ImageTopics(shard.image());
    shard
        .consumer_groups
        .borrow()
        .groups
        .get(group)
        .map(|e| e.machine.describe(&topics))
        .ok_or(ErrorCode::GROUP_ID_NOT_FOUND)
}

/// Executes a machine's effects for `group`: appends the last snapshot it asks to persist (each
/// one holds the whole group, so one append covers every earlier one of the same input) and arms
/// the timer. Returns the pending write, if there was one.
fn run(
    shard: &Rc<Shard>,
    group: &str,
    effects: Vec<Effect>,
) -> Option<Result<PendingWrite, ErrorCode>> {
    let mut snapshot = None;
    for effect in effects {
        match effect {
            Effect::Persist { snapshot: s } => snapshot = Some(s),
            Effect::ScheduleTimer { at_ms } => arm(shard, group, at_ms),
        }
    }
    note_empty(shard, group);
    let snapshot = snapshot?;
    Some(coordinating_partition(shard, group).and_then(|p| {
        let record = encode_consumer_group(&snapshot).ok_or_else(|| {
            log::error!(
                "shard {}: consumer group {group}: snapshot cannot be archived",
                shard.id
            );
            ErrorCode::UNKNOWN_SERVER_ERROR
        })?;
        let batch = Bytes::from(encode_batch(std::slice::from_ref(&record), now_ms()));
        append_batch(shard, &p, batch)
    }))
}

/// [`run`] for inputs nobody waits on (timer ticks, restores): a failed write is handled in the
/// background.
fn run_in_background(shard: &Rc<Shard>, group: &str, effects: Vec<Effect>) {
    let Some(write) = run(shard, group, effects) else {
        return;
    };
    let shard = shard.clone();
    let group = group.to_string();
    glommio::spawn_local(async move {
        let durable = match (write, coordinating_partition(&shard, &group)) {
            (Ok(pending), Ok(p)) => wait_durable(&shard, &p, pending).await,
            (Err(code), _) | (_, Err(code)) => Err(code),
        };
        if let Err(code) = durable {
            forget_after_failed_write(&shard, &group, code);
        }
    })
    .detach();
}

/// After a failed snapshot write the in-memory group is ahead of what is durable: drop it, so
/// the group is rebuilt from its last durable snapshot when the partition opens again.
fn forget_after_failed_write(shard: &Shard, group: &str, code: ErrorCode) {
    log::warn!(
        "shard {}: consumer group {group}: metadata write failed ({code:?}); dropped from memory",
        shard.id
    );
    shard.consumer_groups.borrow_mut().remove(group);
}

fn note_empty(shard: &Shard, group: &str) {
    let mut rt = shard.consumer_groups.borrow_mut();
    if let Some(entry) = rt.groups.get_mut(group) {
        note_empty_since(
            &mut entry.empty_since_ms,
            entry.machine.state() == ConsumerGroupState::Empty,
        );
    }
}

/// Replaces the group's timer with one that ticks the machine at `at` (monotonic ms).
fn arm(shard: &Rc<Shard>, group: &str, at: u64) {
    if let Some(entry) = shard.consumer_groups.borrow_mut().groups.get_mut(group) {
        entry.timer.arm(shard, group, at, fire);
    }
}

fn fire(shard: &Rc<Shard>, group: &str, at: u64) {
    let effects = {
        let mut rt = shard.consumer_groups.borrow_mut();
        let Some(entry) = rt.groups.get_mut(group) else {
            return;
        };
        if !entry.timer.take_fired(at) {
            return;
        }
        entry.machine.tick(clock_ms())
    };
    run_in_background(shard, group, effects);
}
