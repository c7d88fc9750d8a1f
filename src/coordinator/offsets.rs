//! Committed offsets: where a group lives, how a commit is written to `__consumer_offsets`, and
//! the in-memory table each shard rebuilds from its partitions of that topic.
//!
//! Records use Kafka's own schemas (so Kafka tooling that reads the topic understands them):
//!
//! ```text
//! key   OffsetCommitKey v1:   version i16 = 1 | group string | topic string | partition i32
//! value OffsetCommitValue v3: version i16 = 3 | offset i64 | leader epoch i32 | metadata string
//!                             | commit timestamp i64
//! a null value (tombstone) deletes the committed offset
//! ```
//!
//! Values v0–v2 and key v0 are read too. Group metadata (Kafka's GroupMetadataKey/Value):
//!
//! ```text
//! key   GroupMetadataKey v2:   version i16 = 2 | group string
//! value GroupMetadataValue v3: version i16 = 3 | protocol type string | generation i32
//!                              | protocol nullable string | leader nullable string
//!                              | current state timestamp i64 | members array of:
//!         member id string | group instance id nullable string | client id string
//!         | client host string | rebalance timeout i32 | session timeout i32
//!         | subscription bytes | assignment bytes
//! a null value (tombstone) deletes the group
//! ```
//!
//! Group values v0–v2 are read too (no instance id before v3, no state timestamp before v2, no
//! rebalance timeout before v1).
//!
//! KIP-848 consumer groups are stored in a record of our own, one per change, holding the whole
//! group (Kafka spreads a group over six record types written as deltas; a single snapshot keeps
//! replay trivial, and only the latest one matters after compaction). Its key version is far from
//! Kafka's (0–8 for groups, higher for share and streams groups), so Kafka tooling reads it as an
//! unknown record instead of misreading it:
//!
//! ```text
//! key   version i16 = 0x4F44 ("OD") | group string
//! value version i16 = 0 | rkyv archive of consumer_group::ConsumerGroupSnapshot
//! a null value (tombstone) deletes the group
//! ```
//!
//! A group id names one group of either kind: at replay the last metadata record of a group id,
//! classic or consumer, decides what it is, and a tombstone of either key deletes it.
//!
//! Pure: no I/O. The owning shard appends what [`encode_commit`] returns and applies it with
//! [`OffsetTable::apply`] once durable; at start it replays the partition through
//! [`OffsetTable::replay_record`].

use std::collections::HashMap;

use crate::consumer_group::ConsumerGroupSnapshot;
use crate::group::{GroupSnapshot, MemberSnapshot};
use crate::protocol::records::KeyValue;

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Topics the broker writes itself; clients may read them but not produce to or delete them
/// (Kafka's `Topic.isInternal`).
pub fn is_internal_topic(name: &str) -> bool {
    name == OFFSETS_TOPIC || name == super::transactions::TRANSACTION_TOPIC
}

pub use crate::protocol::murmur2::murmur2;

/// The `__consumer_offsets` partition that holds `group_id`:
/// `abs(murmur2(group_id)) % partitions` (with abs(i32::MIN) = 0, as Kafka's `Utils.abs`).
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let h = murmur2(group_id.as_bytes());
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// One committed offset, as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Set by OffsetCommit v2–v4 with an explicit retention time: expires at this time instead
    /// of `offsets.retention.minutes` after its base time (stored as value v1, as Kafka does).
    pub expire_timestamp_ms: Option<i64>,
}

/// Key of one committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    out.extend_from_slice(&(len as i16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

/// The record that commits `value` for `key` (or deletes it when `value` is `None`).
pub fn encode_commit(key: &OffsetKey, value: Option<&Committed>) -> KeyValue {
    let mut k = Vec::with_capacity(8 + key.group.len() + key.topic.len());
    k.extend_from_slice(&1i16.to_be_bytes());
    put_string(&mut k, &key.group);
    put_string(&mut k, &key.topic);
    k.extend_from_slice(&key.partition.to_be_bytes());
    let v = value.map(|c| {
        let mut v = Vec::with_capacity(34 + c.metadata.len());
        match c.expire_timestamp_ms {
            // v1 is the only value version with an expire timestamp (and without an epoch).
            Some(expire) => {
                v.extend_from_slice(&1i16.to_be_bytes());
                v.extend_from_slice(&c.offset.to_be_bytes());
                put_string(&mut v, &c.metadata);
                v.extend_from_slice(&c.commit_timestamp_ms.to_be_bytes());
                v.extend_from_slice(&expire.to_be_bytes());
            }
            None => {
                v.extend_from_slice(&3i16.to_be_bytes());
                v.extend_from_slice(&c.offset.to_be_bytes());
                v.extend_from_slice(&c.leader_epoch.to_be_bytes());
                put_string(&mut v, &c.metadata);
                v.extend_from_slice(&c.commit_timestamp_ms.to_be_bytes());
            }
        }
        v
    });
    KeyValue {
        key: Some(k),
        value: v,
    }
}

fn put_nullable_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len().min(i32::MAX as usize) as i32).to_be_bytes());
    out.extend_from_slice(b);
}

fn group_key(group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + group.len());
    k.extend_from_slice(&2i16.to_be_bytes());
    put_string(&mut k, group);
    k
}

/// The record that stores `snapshot` as its group's metadata.
pub fn encode_group(snapshot: &GroupSnapshot, now_ms: i64) -> KeyValue {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(&3i16.to_be_bytes());
    put_string(&mut v, snapshot.protocol_type.as_deref().unwrap_or(""));
    v.extend_from_slice(&snapshot.generation_id.to_be_bytes());
    put_nullable_string(&mut v, snapshot.protocol_name.as_deref());
    put_nullable_string(&mut v, snapshot.leader_id.as_deref());
    v.extend_from_slice(&now_ms.to_be_bytes());
    v.extend_from_slice(&(snapshot.members.len() as i32).to_be_bytes());
    for m in &snapshot.members {
        put_string(&mut v, &m.member_id);
        put_nullable_string(&mut v, m.group_instance_id.as_deref());
        put_string(&mut v, &m.client_id);
        put_string(&mut v, &m.client_host);
        v.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
        v.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
        put_bytes(&mut v, &m.subscription);
        put_bytes(&mut v, &m.assignment);
    }
    KeyValue {
        key: Some(group_key(&snapshot.group_id)),
        value: Some(v),
    }
}

/// The tombstone that deletes `group`'s metadata (of either kind: see the module docs).
pub fn encode_group_tombstone(group: &str) -> KeyValue {
    KeyValue {
        key: Some(group_key(group)),
        value: None,
    }
}

/// Key version of the consumer-group snapshot record (not a Kafka schema; see the module docs).
const CONSUMER_GROUP_KEY_VERSION: i16 = 0x4F44;
/// Value version of the same record.
const CONSUMER_GROUP_VALUE_VERSION: i16 = 0;

/// The record that stores a KIP-848 consumer group. `None` if the snapshot cannot be archived
/// (rkyv's serializer only fails on allocation limits it does not have here).
pub fn encode_consumer_group(snapshot: &ConsumerGroupSnapshot) -> Option<KeyValue> {
    let archive = rkyv::to_bytes::<rkyv::rancor::Error>(snapshot).ok()?;
    let mut k = Vec::with_capacity(4 + snapshot.group_id.len());
    k.extend_from_slice(&CONSUMER_GROUP_KEY_VERSION.to_be_bytes());
    put_string(&mut k, &snapshot.group_id);
    let mut v = Vec::with_capacity(2 + archive.len());
    v.extend_from_slice(&CONSUMER_GROUP_VALUE_VERSION.to_be_bytes());
    v.extend_from_slice(&archive);
    Some(KeyValue {
        key: Some(k),
        value: Some(v),
    })
}

/// rkyv validates the archive: damaged bytes are `None`, never a panic.
fn decode_consumer_group_value(value: &[u8]) -> Option<ConsumerGroupSnapshot> {
    let mut v = Cursor(value);
    if v.i16()? != CONSUMER_GROUP_VALUE_VERSION {
        return None;
    }
    let aligned = crate::io::state_file::rkyv_aligned(v.0);
    rkyv::from_bytes::<ConsumerGroupSnapshot, rkyv::rancor::Error>(&aligned).ok()
}

fn decode_group_value(group: String, value: &[u8]) -> Option<GroupSnapshot> {
    let mut v = Cursor(value);
    let version = v.i16()?;
    if !(0..=3).contains(&version) {
        return None;
    }
    let protocol_type = v.string()?;
    let generation_id = v.i32()?;
    let protocol_name = v.nullable_string()?;
    let leader_id = v.nullable_string()?;
    if version >= 2 {
        v.i64()?;
    }
    let count = usize::try_from(v.i32()?).ok()?;
    // Each member takes at least 16 bytes: a count beyond that is corruption, not an allocation.
    if count > v.0.len() / 16 {
        return None;
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = v.string()?;
        let group_instance_id = if version >= 3 {
            v.nullable_string()?
        } else {
            None
        };
        let client_id = v.string()?;
        let client_host = v.string()?;
        let rebalance_timeout_ms = if version >= 1 { Some(v.i32()?) } else { None };
        let session_timeout_ms = v.i32()?;
        members.push(MemberSnapshot {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: rebalance_timeout_ms.unwrap_or(session_timeout_ms),
            session_timeout_ms,
            subscription: v.bytes()?.to_vec(),
            assignment: v.bytes()?.to_vec(),
        });
    }
    Some(GroupSnapshot {
        group_id: group,
        protocol_type: (!protocol_type.is_empty()).then_some(protocol_type),
        generation_id,
        protocol_name,
        leader_id,
        members,
    })
}

/// A cursor over big-endian fields; every read is bounds-checked.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8)
            .map(|b| i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        self.take(len)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
    /// `Some(None)` for a null string (length -1).
    fn nullable_string(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len == -1 {
            return Some(None);
        }
        let len = usize::try_from(len).ok()?;
        self.take(len)
            .map(|b| Some(String::from_utf8_lossy(b).into_owned()))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.i32()?).ok()?;
        self.take(len)
    }
}

/// What one `__consumer_offsets` record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    /// A committed offset (value `None` = deleted).
    Offset(OffsetKey, Option<Committed>),
    /// Group metadata (key version 2) for `group`; `None` is a tombstone (group deleted).
    Group(String, Option<GroupSnapshot>),
    /// A consumer group's snapshot; `None` is a tombstone (group deleted).
    ConsumerGroup(String, Option<Box<ConsumerGroupSnapshot>>),
    /// A key or value this code cannot read (newer version, corruption).
    Unreadable(String),
}

pub fn decode_record(key: Option<&[u8]>, value: Option<&[u8]>) -> OffsetsRecord {
    let Some(key) = key else {
        return OffsetsRecord::Unreadable("record without a key".into());
    };
    let mut k = Cursor(key);
    let parsed_key = match k.i16() {
        Some(0 | 1) => (|| {
            Some(OffsetKey {
                group: k.string()?,
                topic: k.string()?,
                partition: k.i32()?,
            })
        })(),
        Some(2) => {
            let Some(group) = k.string() else {
                return OffsetsRecord::Unreadable("truncated group metadata key".into());
            };
            return match value {
                None => OffsetsRecord::Group(group, None),
                Some(v) => match decode_group_value(group.clone(), v) {
                    Some(snapshot) => OffsetsRecord::Group(group, Some(snapshot)),
                    None => OffsetsRecord::Unreadable(format!("group metadata of {group}")),
                },
            };
        }
        Some(CONSUMER_GROUP_KEY_VERSION) => {
            let Some(group) = k.string() else {
                return OffsetsRecord::Unreadable("truncated consumer group key".into());
            };
            return match value {
                None => OffsetsRecord::ConsumerGroup(group, None),
                Some(v) => match decode_consumer_group_value(v) {
                    Some(snapshot) if snapshot.group_id == group => {
                        OffsetsRecord::ConsumerGroup(group, Some(Box::new(snapshot)))
                    }
                    _ => OffsetsRecord::Unreadable(format!("consumer group {group}")),
                },
            };
        }
        other => return OffsetsRecord::Unreadable(format!("key version {other:?}")),
    };
    let Some(key) = parsed_key else {
        return OffsetsRecord::Unreadable("truncated offset commit key".into());
    };
    let Some(value) = value else {
        return OffsetsRecord::Offset(key, None);
    };
    let mut v = Cursor(value);
    let committed = match v.i16() {
        Some(version @ 0..=3) => (|| {
            let offset = v.i64()?;
            let leader_epoch = if version >= 3 { v.i32()? } else { -1 };
            let metadata = v.string()?;
            let commit_timestamp_ms = v.i64()?;
            let expire_timestamp_ms = if version == 1 { Some(v.i64()?) } else { None };
            Some(Committed {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms,
                expire_timestamp_ms,
            })
        })(),
        other => {
            return OffsetsRecord::Unreadable(format!("offset commit value version {other:?}"))
        }
    };
    match committed {
        Some(c) => OffsetsRecord::Offset(key, Some(c)),
        None => OffsetsRecord::Unreadable("truncated offset commit value".into()),
    }
}

/// How a group's offsets expire ([`OffsetTable::expired`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// A live group of another kind: its offsets stay.
    Never,
    /// No group management (simple commits): retention counts from each commit.
    SinceCommit,
    /// An Empty group: retention counts from when it became empty (this wall-clock time).
    SinceEmpty(i64),
    /// A Stable consumer group: offsets of topics it no longer subscribes to expire, counted
    /// from their commit.
    UnsubscribedTopics(Vec<String>),
}

/// Committed offsets of the groups whose `__consumer_offsets` partitions one shard owns.
#[derive(Debug, Default)]
pub struct OffsetTable {
    groups: HashMap<String, HashMap<(String, i32), Committed>>,
    /// Offsets committed inside a transaction (TxnOffsetCommit), per producer id, in commit
    /// order: written to the log already, applied when the producer's COMMIT marker reaches
    /// the same partition, dropped on ABORT.
    pending_txn: HashMap<i64, Vec<(OffsetKey, Option<Committed>)>>,
}

impl OffsetTable {
    /// Applies one commit (or deletion, `None`).
    pub fn apply(&mut self, key: OffsetKey, value: Option<Committed>) {
        match value {
            Some(c) => {
                self.groups
                    .entry(key.group)
                    .or_default()
                    .insert((key.topic, key.partition), c);
            }
            None => {
                if let Some(g) = self.groups.get_mut(&key.group) {
                    g.remove(&(key.topic, key.partition));
                    if g.is_empty() {
                        self.groups.remove(&key.group);
                    }
                }
            }
        }
    }

    /// Holds an offset committed in `producer_id`'s transaction until it ends (a later commit
    /// of the same partition replaces it, so a transaction holds one per partition).
    pub fn stage_txn(&mut self, producer_id: i64, key: OffsetKey, value: Option<Committed>) {
        let staged = self.pending_txn.entry(producer_id).or_default();
        match staged.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => staged.push((key, value)),
        }
    }

    /// The transaction of `producer_id` ended (its marker is in the log): a commit applies
    /// what it staged, an abort forgets it.
    pub fn end_txn(&mut self, producer_id: i64, commit: bool) {
        let staged = self.pending_txn.remove(&producer_id).unwrap_or_default();
        if commit {
            for (k, v) in staged {
                self.apply(k, v);
            }
        }
    }

    /// An open transaction has committed an offset for this partition (OffsetFetch with
    /// require_stable answers UNSTABLE_OFFSET_COMMIT until it ends).
    pub fn has_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.pending_txn
            .values()
            .flatten()
            .any(|(k, _)| k.group == group && k.topic == topic && k.partition == partition)
    }

    /// Applies a record read back from the log; unreadable records are counted, not fatal.
    pub fn replay_record(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> bool {
        match decode_record(key, value) {
            OffsetsRecord::Offset(k, v) => {
                self.apply(k, v);
                true
            }
            OffsetsRecord::Group(..) | OffsetsRecord::ConsumerGroup(..) => true,
            OffsetsRecord::Unreadable(_) => false,
        }
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&Committed> {
        self.groups.get(group)?.get(&(topic.to_string(), partition))
    }

    /// Every committed offset of `group`, sorted by topic and partition.
    pub fn group(&self, group: &str) -> Vec<(String, i32, Committed)> {
        let mut out: Vec<(String, i32, Committed)> = self
            .groups
            .get(group)
            .map(|g| {
                g.iter()
                    .map(|((t, p), c)| (t.clone(), *p, c.clone()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    /// The offsets that have outlived their retention at `now_ms` (Kafka's
    /// `GroupMetadata.removeExpiredOffsets`): an explicit expire timestamp wins; otherwise an
    /// offset expires `retention_ms` after its base time, which `policy` picks per group.
    pub fn expired(
        &self,
        now_ms: i64,
        retention_ms: i64,
        mut policy: impl FnMut(&str) -> Expiry,
    ) -> Vec<OffsetKey> {
        let mut out = Vec::new();
        for (group, offsets) in &self.groups {
            let policy = policy(group);
            let (base, keep_topics): (Option<i64>, &[String]) = match &policy {
                Expiry::Never => continue,
                Expiry::SinceCommit => (None, &[]),
                Expiry::SinceEmpty(since) => (Some(*since), &[]),
                Expiry::UnsubscribedTopics(topics) => (None, topics.as_slice()),
            };
            for ((topic, partition), c) in offsets {
                if keep_topics.contains(topic) {
                    continue;
                }
                let due = match c.expire_timestamp_ms {
                    Some(expire) => now_ms >= expire,
                    None => {
                        now_ms.saturating_sub(base.unwrap_or(c.commit_timestamp_ms)) >= retention_ms
                    }
                };
                if due {
                    out.push(OffsetKey {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                    });
                }
            }
        }
        out
    }

    /// Ids of every group with at least one committed offset.
    pub fn group_ids(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(String::as_str)
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// Forgets every group stored in the partitions this table no longer owns (partition
    /// closed); callers rebuild from the log when it opens again.
    pub fn retain_groups(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.groups.retain(|g, _| keep(g));
        for staged in self.pending_txn.values_mut() {
            staged.retain(|(k, _)| keep(&k.group));
        }
        self.pending_txn.retain(|_, staged| !staged.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_for_is_in_range_and_stable() {
        for g in ["", "g", "group-1", "a-little-bit-longer-string"] {
            let p = partition_for(g, 50);
            assert!((0..50).contains(&p));
            assert_eq!(p, partition_for(g, 50));
        }
        assert_eq!(partition_for("anything", 1), 0);
    }

    #[test]
    fn commit_records_round_trip_and_tombstones_delete() {
        let key = OffsetKey {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        let c = Committed {
            offset: 42,
            leader_epoch: 7,
            metadata: "meta ✓".into(),
            commit_timestamp_ms: 1_700_000_000_000,
            expire_timestamp_ms: None,
        };
        let rec = encode_commit(&key, Some(&c));
        assert_eq!(
            decode_record(rec.key.as_deref(), rec.value.as_deref()),
            OffsetsRecord::Offset(key.clone(), Some(c.clone()))
        );
        let mut t = OffsetTable::default();
        assert!(t.replay_record(rec.key.as_deref(), rec.value.as_deref()));
        assert_eq!(t.get("g", "t", 3), Some(&c));
        let del = encode_commit(&key, None);
        assert!(t.replay_record(del.key.as_deref(), del.value.as_deref()));
        assert_eq!(t.get("g", "t", 3), None);
        assert!(!t.has_group("g"));
    }

    #[test]
    fn older_value_versions_and_garbage() {
        // OffsetCommitValue v1: offset, metadata, commit ts, expire ts.
        let mut k = vec![0, 1];
        put_string(&mut k, "g");
        put_string(&mut k, "t");
        k.extend_from_slice(&0i32.to_be_bytes());
        let mut v = vec![0, 1];
        v.extend_from_slice(&5i64.to_be_bytes());
        put_string(&mut v, "m");
        v.extend_from_slice(&9i64.to_be_bytes());
        v.extend_from_slice(&10i64.to_be_bytes());
        match decode_record(Some(&k), Some(&v)) {
            OffsetsRecord::Offset(_, Some(c)) => {
                assert_eq!(
                    (c.offset, c.leader_epoch, c.metadata.as_str()),
                    (5, -1, "m")
                );
                assert_eq!(c.commit_timestamp_ms, 9);
                assert_eq!(c.expire_timestamp_ms, Some(10));
            }
            other => panic!("{other:?}"),
        }
        for cut in 0..k.len() {
            assert!(matches!(
                decode_record(Some(&k[..cut]), Some(&v)),
                OffsetsRecord::Unreadable(_)
            ));
        }
        for cut in 0..v.len() - 8 {
            assert!(matches!(
                decode_record(Some(&k), Some(&v[..cut])),
                OffsetsRecord::Unreadable(_)
            ));
        }
        assert!(matches!(
            decode_record(Some(&[0, 9]), None),
            OffsetsRecord::Unreadable(_)
        ));
        assert!(matches!(
            decode_record(Some(&[0, 2, 0, 1, b'g']), Some(b"anything")),
            OffsetsRecord::Unreadable(_)
        ));
        assert_eq!(
            decode_record(Some(&[0, 2, 0, 1, b'g']), None),
            OffsetsRecord::Group("g".into(), None)
        );
    }

    fn sample_group() -> GroupSnapshot {
        GroupSnapshot {
            group_id: "g1".into(),
            protocol_type: Some("consumer".into()),
            generation_id: 7,
            protocol_name: Some("range".into()),
            leader_id: Some("m-1".into()),
            members: vec![
                MemberSnapshot {
                    member_id: "m-1".into(),
                    group_instance_id: Some("static-1".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                    subscription: vec![0, 1, 2],
                    assignment: vec![9; 40],
                },
                MemberSnapshot {
                    member_id: "m-2".into(),
                    group_instance_id: None,
                    client_id: String::new(),
                    client_host: "h".into(),
                    rebalance_timeout_ms: 10,
                    session_timeout_ms: 6_000,
                    subscription: Vec::new(),
                    assignment: Vec::new(),
                },
            ],
        }
    }

    #[test]
    fn group_records_round_trip_and_truncations_are_unreadable() {
        let g = sample_group();
        let rec = encode_group(&g, 123);
        let (k, v) = (rec.key.unwrap(), rec.value.unwrap());
        assert_eq!(
            decode_record(Some(&k), Some(&v)),
            OffsetsRecord::Group("g1".into(), Some(g.clone()))
        );
        for cut in 0..v.len() {
            assert!(
                matches!(
                    decode_record(Some(&k), Some(&v[..cut])),
                    OffsetsRecord::Unreadable(_)
                ),
                "cut at {cut}"
            );
        }
        // An empty group (no protocol) survives too.
        let empty = GroupSnapshot {
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: Vec::new(),
            ..g
        };
        let rec = encode_group(&empty, 0);
        assert_eq!(
            decode_record(rec.key.as_deref(), rec.value.as_deref()),
            OffsetsRecord::Group("g1".into(), Some(empty))
        );
        let tomb = encode_group_tombstone("g1");
        assert_eq!(
            decode_record(tomb.key.as_deref(), tomb.value.as_deref()),
            OffsetsRecord::Group("g1".into(), None)
        );
    }

    #[test]
    fn expiry_follows_the_group_policy() {
        let mut t = OffsetTable::default();
        let mut put = |group: &str, topic: &str, ts: i64, expire: Option<i64>| {
            t.apply(
                OffsetKey {
                    group: group.into(),
                    topic: topic.into(),
                    partition: 0,
                },
                Some(Committed {
                    offset: 1,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_timestamp_ms: ts,
                    expire_timestamp_ms: expire,
                }),
            )
        };
        put("simple", "old", 0, None);
        put("simple", "new", 900, None);
        put("simple", "explicit", 900, Some(950));
        put("empty", "a", 0, None);
        put("live", "a", 0, None);
        put("stable", "subscribed", 0, None);
        put("stable", "dropped", 0, None);
        let policy = |g: &str| match g {
            "simple" => Expiry::SinceCommit,
            "empty" => Expiry::SinceEmpty(800),
            "stable" => Expiry::UnsubscribedTopics(vec!["subscribed".into()]),
            _ => Expiry::Never,
        };
        let mut got: Vec<(String, String)> = t
            .expired(1_000, 500, policy)
            .into_iter()
            .map(|k| (k.group, k.topic))
            .collect();
        got.sort();
        let want: Vec<(String, String)> = [
            ("simple", "explicit"),
            ("simple", "old"),
            ("stable", "dropped"),
        ]
        .iter()
        .map(|(g, t)| (g.to_string(), t.to_string()))
        .collect();
        assert_eq!(
            got, want,
            "empty since 800 is not due at 1000 with 500 ms retention"
        );
        assert!(t
            .expired(1_300, 500, policy)
            .iter()
            .any(|k| k.group == "empty"));
        // v1 values carry the expire timestamp through the log.
        let key = OffsetKey {
            group: "g".into(),
            topic: "t".into(),
            partition: 1,
        };
        let c = Committed {
            offset: 5,
            leader_epoch: -1,
            metadata: "m".into(),
            commit_timestamp_ms: 7,
            expire_timestamp_ms: Some(99),
        };
        let rec = encode_commit(&key, Some(&c));
        assert_eq!(
            decode_record(rec.key.as_deref(), rec.value.as_deref()),
            OffsetsRecord::Offset(key, Some(c))
        );
    }

    #[test]
    fn consumer_group_records_round_trip_and_damage_is_unreadable() {
        use crate::consumer_group::{
            MemberSnapshot as CgMember, MemberState, TopicId, TopicMetadataSnapshot,
            TopicPartitions,
        };
        let snapshot = ConsumerGroupSnapshot {
            group_id: "cg".into(),
            group_epoch: 4,
            assignment_epoch: 4,
            subscription_metadata: vec![TopicMetadataSnapshot {
                name: "t".into(),
                topic_id: TopicId([7; 16]),
                partitions: 3,
            }],
            members: vec![CgMember {
                member_id: "m".into(),
                instance_id: Some("i".into()),
                rack_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                subscribed_topic_names: vec!["t".into()],
                explicit_topic_names: vec![],
                subscribed_topic_regex: Some("t.*".into()),
                server_assignor: None,
                member_epoch: 4,
                previous_member_epoch: 3,
                state: MemberState::Stable,
                assigned: vec![TopicPartitions {
                    topic_id: TopicId([7; 16]),
                    partitions: vec![0, 1, 2],
                }],
                pending_revocation: vec![],
                target: vec![TopicPartitions {
                    topic_id: TopicId([7; 16]),
                    partitions: vec![0, 1, 2],
                }],
            }],
        };
        let rec = encode_consumer_group(&snapshot).expect("archive");
        let (key, value) = (rec.key.expect("key"), rec.value.expect("value"));
        assert_eq!(
            decode_record(Some(&key), Some(&value)),
            OffsetsRecord::ConsumerGroup("cg".into(), Some(Box::new(snapshot.clone())))
        );
        assert_eq!(
            decode_record(Some(&key), None),
            OffsetsRecord::ConsumerGroup("cg".into(), None),
            "tombstone"
        );
        // Truncated or bit-flipped values never panic; what rkyv cannot validate is unreadable.
        for cut in 0..value.len() {
            let r = decode_record(Some(&key), Some(&value[..cut]));
            assert!(
                matches!(r, OffsetsRecord::Unreadable(_)),
                "cut {cut}: {r:?}"
            );
        }
        for i in 0..value.len() {
            let mut bad = value.clone();
            bad[i] ^= 0xff;
            let _ = decode_record(Some(&key), Some(&bad));
        }
        assert!(matches!(
            decode_record(Some(&key[..3]), Some(&value)),
            OffsetsRecord::Unreadable(_)
        ));
    }

    #[test]
    fn group_value_v0_and_huge_member_count() {
        // v0: no state timestamp, no instance id, no rebalance timeout.
        let mut v = vec![0, 0];
        put_string(&mut v, "consumer");
        v.extend_from_slice(&3i32.to_be_bytes());
        put_nullable_string(&mut v, Some("range"));
        put_nullable_string(&mut v, Some("m"));
        v.extend_from_slice(&1i32.to_be_bytes());
        put_string(&mut v, "m");
        put_string(&mut v, "cid");
        put_string(&mut v, "host");
        v.extend_from_slice(&10_000i32.to_be_bytes());
        put_bytes(&mut v, b"sub");
        put_bytes(&mut v, b"asg");
        let k = group_key("old");
        match decode_record(Some(&k), Some(&v)) {
            OffsetsRecord::Group(g, Some(s)) => {
                assert_eq!(g, "old");
                assert_eq!(s.generation_id, 3);
                assert_eq!(s.members.len(), 1);
                assert_eq!(s.members[0].rebalance_timeout_ms, 10_000);
                assert_eq!(s.members[0].group_instance_id, None);
                assert_eq!(s.members[0].assignment, b"asg");
            }
            other => panic!("{other:?}"),
        }
        let mut huge = vec![0, 3];
        put_string(&mut huge, "consumer");
        huge.extend_from_slice(&1i32.to_be_bytes());
        put_nullable_string(&mut huge, None);
        put_nullable_string(&mut huge, None);
        huge.extend_from_slice(&0i64.to_be_bytes());
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            decode_record(Some(&k), Some(&huge)),
            OffsetsRecord::Unreadable(_)
        ));
    }

    #[test]
    fn transactional_commits_apply_on_commit_only_and_stage_once_per_partition() {
        let key = |p: i32| OffsetKey {
            group: "g".into(),
            topic: "t".into(),
            partition: p,
        };
        let at = |offset: i64| Committed {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
            expire_timestamp_ms: None,
        };
        let mut t = OffsetTable::default();
        t.apply(key(0), Some(at(1)));
        t.stage_txn(7, key(0), Some(at(5)));
        t.stage_txn(7, key(0), Some(at(6)));
        t.stage_txn(8, key(1), Some(at(9)));
        assert_eq!(
            t.pending_txn[&7].len(),
            1,
            "one staged offset per partition"
        );
        assert!(t.has_pending("g", "t", 0) && t.has_pending("g", "t", 1));
        assert_eq!(t.get("g", "t", 0).map(|c| c.offset), Some(1));
        t.end_txn(8, false);
        assert_eq!(t.get("g", "t", 1), None, "aborted: never visible");
        t.end_txn(7, true);
        assert_eq!(t.get("g", "t", 0).map(|c| c.offset), Some(6));
        assert!(!t.has_pending("g", "t", 0));
    }
}
