//! The group coordinator's shard side: a group lives on the shard that owns its
//! `__consumer_offsets` partition ([`offsets::partition_for`]); requests for it reaching another
//! shard are forwarded there through the mailbox by the handlers.
//!
//! Committed offsets (OffsetCommit / OffsetFetch) and classic group metadata are written to
//! `__consumer_offsets` with the same group commit as any acks=all produce and rebuilt from it
//! when the shard opens the partition. The classic group state machine lives in
//! [`crate::group`]; [`groups`] drives it (JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! DescribeGroups, ListGroups, DeleteGroups) and validates commits against live groups. KIP-848
//! consumer groups ([`crate::consumer_group`]) are driven by [`consumer_groups`]
//! (ConsumerGroupHeartbeat, ConsumerGroupDescribe) and stored in the same partitions.

pub mod consumer_groups;
pub mod groups;
pub mod offsets;
mod timer;
pub mod transactions;

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

use crate::protocol::error::ErrorCode;
use crate::protocol::record_batch::validate;
use crate::protocol::records::{encode_batch_of, for_each_record, EndTxnMarker};
use crate::shard::partition::Partition;
use crate::shard::{now_ms, Shard};

use offsets::{encode_commit, Committed, OffsetKey, OffsetsRecord, OFFSETS_TOPIC};

/// The `__consumer_offsets` partition of `group`. The count is the topic's own (fixed when it was
/// created), so changing `offsets.topic.num.partitions` later cannot move groups.
pub fn group_partition(shard: &Shard, group: &str) -> i32 {
    let count = shard
        .image()
        .topic(OFFSETS_TOPIC)
        .map_or(shard.config.offsets_topic_num_partitions, |t| {
            t.partitions.len() as i32
        });
    offsets::partition_for(group, count)
}

/// The shard that coordinates `group`, if `__consumer_offsets` exists.
pub fn group_shard(shard: &Shard, group: &str) -> Option<usize> {
    shard
        .image()
        .shard_of(OFFSETS_TOPIC, group_partition(shard, group))
}

/// One partition's commit inside an OffsetCommit.
#[derive(Debug, Clone)]
pub struct CommitPart {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// OffsetCommit v2–v4 `retention_time_ms`: -1 for the broker's retention.
    pub retention_ms: i64,
}

/// Who commits: the group-management fields of the request.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub group: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub parts: Vec<CommitPart>,
    /// TxnOffsetCommit: the transaction's (producer id, epoch). The offsets are written inside
    /// it and take effect when it commits (see [`end_txn_offsets`]).
    pub transaction: Option<(i64, i16)>,
}

/// Runs on the coordinating shard: validates, appends one batch with every accepted commit to the
/// group's `__consumer_offsets` partition, waits until it is durable, then applies it to the
/// table. Returns one error code per part, in order.
pub async fn commit_offsets(shard: Rc<Shard>, req: CommitRequest) -> Vec<ErrorCode> {
    let n = req.parts.len();
    let everyone = |code: ErrorCode| vec![code; n];
    if req.group.is_empty() {
        return everyone(ErrorCode::INVALID_GROUP_ID);
    }
    if let Err(code) = coordinating_partition(&shard, &req.group) {
        return everyone(code);
    }
    let identity = crate::group::CommitIdentity {
        member_id: req.member_id.clone(),
        group_instance_id: req.group_instance_id.clone(),
        generation_id: req.generation_id,
    };
    // Old TxnOffsetCommit versions carry no member: nothing to check against a group then.
    let anonymous_txn = req.transaction.is_some() && req.member_id.is_empty();
    let consumer_group_check = shard.consumer_groups.borrow().validate_commit(
        &req.group,
        &req.member_id,
        req.generation_id,
    );
    let validated = match consumer_group_check {
        Some(_) if anonymous_txn => Ok(()),
        Some(result) => result.map_err(|e| ErrorCode(e.code())),
        None if req.transaction.is_some() => {
            groups::validate_txn_commit(&shard, &req.group, &identity)
                .map_err(|e| ErrorCode(e.code()))
        }
        None => {
            groups::validate_commit(&shard, &req.group, &identity).map_err(|e| ErrorCode(e.code()))
        }
    };
    if let Err(code) = validated {
        return everyone(code);
    }
    let image = shard.image();
    let now = now_ms();
    let mut codes = Vec::with_capacity(n);
    let mut accepted: Vec<(OffsetKey, Committed)> = Vec::new();
    for part in req.parts {
        let metadata = part.metadata.unwrap_or_default();
        let code = if image.shard_of(&part.topic, part.partition).is_none() {
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        } else if metadata.len() > shard.config.offset_metadata_max_bytes {
            ErrorCode::OFFSET_METADATA_TOO_LARGE
        } else {
            accepted.push((
                OffsetKey {
                    group: req.group.clone(),
                    topic: part.topic,
                    partition: part.partition,
                },
                Committed {
                    offset: part.offset,
                    leader_epoch: part.leader_epoch,
                    metadata,
                    commit_timestamp_ms: now,
                    expire_timestamp_ms: (part.retention_ms >= 0)
                        .then(|| now.saturating_add(part.retention_ms)),
                },
            ));
            ErrorCode::NONE
        };
        codes.push(code);
    }
    if accepted.is_empty() {
        return codes;
    }
    let records: Vec<_> = accepted
        .iter()
        .map(|(k, c)| encode_commit(k, Some(c)))
        .collect();
    if let Err(code) = write_records_of(&shard, &req.group, &records, req.transaction).await {
        return fail_accepted(codes, code);
    }
    let mut table = shard.offsets.borrow_mut();
    for (k, c) in accepted {
        match req.transaction {
            Some((producer_id, _)) => table.stage_txn(producer_id, k, Some(c)),
            None => table.apply(k, Some(c)),
        }
    }
    codes
}

/// A transaction's marker is durable in one of this shard's `__consumer_offsets` partitions:
/// the offsets its producer committed inside it take effect (commit) or are dropped (abort).
pub fn end_txn_offsets(shard: &Shard, producer_id: i64, commit: bool) {
    shard.offsets.borrow_mut().end_txn(producer_id, commit);
}

/// Per-part codes after the write of the accepted parts failed: those get `code`, refused parts
/// keep their own.
fn fail_accepted(codes: Vec<ErrorCode>, code: ErrorCode) -> Vec<ErrorCode> {
    codes
        .into_iter()
        .map(|c| if c == ErrorCode::NONE { code } else { c })
        .collect()
}

/// Appends `records` as one batch to `group`'s partition and waits until it is durable.
async fn write_records(
    shard: &Rc<Shard>,
    group: &str,
    records: &[crate::protocol::records::KeyValue],
) -> Result<(), ErrorCode> {
    write_records_of(shard, group, records, None).await
}

/// [`write_records`], inside a transaction when `transaction` names one.
async fn write_records_of(
    shard: &Rc<Shard>,
    group: &str,
    records: &[crate::protocol::records::KeyValue],
    transaction: Option<(i64, i16)>,
) -> Result<(), ErrorCode> {
    let p = coordinating_partition(shard, group)?;
    let batch = Bytes::from(encode_batch_of(records, now_ms(), transaction));
    let pending = append_batch(shard, &p, batch)?;
    wait_durable(shard, &p, pending).await
}

/// A broker-built batch appended to a `__consumer_offsets` partition, not yet durable.
struct PendingWrite {
    last_offset: i64,
    round: u64,
}

/// Appends one broker-built batch to `p` right now (so writes keep their call order).
fn append_batch(
    shard: &Rc<Shard>,
    p: &Rc<Partition>,
    batch: Bytes,
) -> Result<PendingWrite, ErrorCode> {
    let header = validate(&batch).map_err(|e| {
        log::error!("shard {}: built an invalid offsets batch: {e}", shard.id);
        ErrorCode::UNKNOWN_SERVER_ERROR
    })?;
    let (appended, round) = shard
        .append_local(p, &[(batch, header)])
        .map_err(|e| match e {
            // A transactional commit (TxnOffsetCommit) from a fenced producer.
            crate::storage::StorageError::InvalidProducerEpoch { .. } => {
                ErrorCode::INVALID_PRODUCER_EPOCH
            }
            e => {
                p.log_error("offsets topic append", &e);
                ErrorCode::COORDINATOR_NOT_AVAILABLE
            }
        })?;
    Ok(PendingWrite {
        last_offset: appended.last_offset,
        round,
    })
}

/// Appends one broker-built record to `p` right now (so records keep the caller's order) and
/// calls `done` once it is durable, or with the error that stopped it. How the group and
/// transaction coordinators persist their state machines' records.
fn persist_record(
    shard: &Rc<Shard>,
    p: Result<Rc<Partition>, ErrorCode>,
    record: Result<crate::protocol::records::KeyValue, ErrorCode>,
    done: impl FnOnce(&Rc<Shard>, Result<(), ErrorCode>) + 'static,
) {
    let appended = p.and_then(|p| {
        let batch = Bytes::from(encode_batch_of(
            std::slice::from_ref(&record?),
            now_ms(),
            None,
        ));
        append_batch(shard, &p, batch).map(|pending| (p, pending))
    });
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let result = match appended {
            Ok((p, pending)) => wait_durable(&shard, &p, pending).await,
            Err(code) => Err(code),
        };
        done(&shard, result);
    })
    .detach();
}

/// Waits for the group commit that makes an appended batch durable.
async fn wait_durable(
    shard: &Shard,
    p: &Partition,
    pending: PendingWrite,
) -> Result<(), ErrorCode> {
    shard.commit.wait_round(pending.round).await;
    crate::crash_points::hit("offset_commit_durable");
    if p.log.high_watermark() <= pending.last_offset {
        // The flush did not cover it: the disk under this partition failed.
        return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
    }
    Ok(())
}

/// What OffsetFetch returns for one partition: offset -1 and empty metadata when nothing is
/// committed (Kafka's answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    /// UNSTABLE_OFFSET_COMMIT when a stable offset was asked for and a transaction has an
    /// offset for this partition pending.
    pub error: ErrorCode,
}

impl FetchedOffset {
    pub fn committed(topic: String, partition: i32, c: &Committed) -> Self {
        FetchedOffset {
            topic,
            partition,
            offset: c.offset,
            leader_epoch: c.leader_epoch,
            metadata: c.metadata.clone(),
            error: ErrorCode::NONE,
        }
    }

    /// A transaction has committed an offset here that is not visible yet (KIP-447: the
    /// client retries until the transaction ends).
    pub fn unstable(topic: String, partition: i32) -> Self {
        FetchedOffset {
            error: ErrorCode::UNSTABLE_OFFSET_COMMIT,
            ..FetchedOffset::none(topic, partition)
        }
    }

    /// Nothing committed (or the group could not be asked).
    pub fn none(topic: String, partition: i32) -> Self {
        FetchedOffset {
            topic,
            partition,
            offset: -1,
            leader_epoch: -1,
            metadata: String::new(),
            error: ErrorCode::NONE,
        }
    }
}

/// The `__consumer_offsets` partition of `group` if this shard coordinates it; otherwise the
/// coordinator error a client retries on (COORDINATOR_NOT_AVAILABLE when its disk failed,
/// NOT_COORDINATOR when another shard owns it).
fn coordinating_partition(shard: &Shard, group: &str) -> Result<Rc<Partition>, ErrorCode> {
    shard
        .serving(OFFSETS_TOPIC, group_partition(shard, group))
        .map_err(|code| match code {
            ErrorCode::KAFKA_STORAGE_ERROR => ErrorCode::COORDINATOR_NOT_AVAILABLE,
            _ => ErrorCode::NOT_COORDINATOR,
        })
}

/// Runs on the coordinating shard: the committed offsets of `group` for `wanted` partitions, or
/// every committed partition when `wanted` is `None`. `Err` is a group-level error. With
/// `require_stable` (OffsetFetch v7+, sent by read_committed consumers) a partition with an
/// offset pending in an open transaction answers UNSTABLE_OFFSET_COMMIT.
pub fn fetch_offsets(
    shard: &Shard,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Vec<FetchedOffset>, ErrorCode> {
    if group.is_empty() {
        return Err(ErrorCode::INVALID_GROUP_ID);
    }
    coordinating_partition(shard, group)?;
    let table = shard.offsets.borrow();
    let answer = |t: String, p: i32, c: Option<&Committed>| {
        if require_stable && table.has_pending(group, &t, p) {
            return FetchedOffset::unstable(t, p);
        }
        match c {
            Some(c) => FetchedOffset::committed(t, p, c),
            None => FetchedOffset::none(t, p),
        }
    };
    Ok(match wanted {
        Some(topics) => topics
            .into_iter()
            .flat_map(|(t, parts)| parts.into_iter().map(move |p| (t.clone(), p)))
            .map(|(t, p)| {
                let c = table.get(group, &t, p).cloned();
                answer(t, p, c.as_ref())
            })
            .collect(),
        None => table
            .group(group)
            .into_iter()
            .map(|(t, p, c)| answer(t, p, Some(&c)))
            .collect(),
    })
}

/// A group id's last metadata record, of either type.
enum StoredGroup {
    Classic(crate::group::GroupSnapshot),
    Consumer(Box<crate::consumer_group::ConsumerGroupSnapshot>),
}

/// Replays a `__consumer_offsets` partition this shard just opened into its offset table.
/// Reads everything below the high watermark (all of it was durable before the restart).
pub async fn rebuild_from(shard: &Rc<Shard>, p: &Rc<Partition>) {
    const READ_BYTES: usize = 1 << 20;
    let upper = p.log.high_watermark();
    let mut offset = p.log.log_start_offset();
    let (mut records, mut unreadable) = (0u64, 0u64);
    // The last metadata record of each group id wins, whatever its type (None: deleted).
    let mut groups_seen: HashMap<String, Option<StoredGroup>> = HashMap::new();
    while offset < upper {
        let slice = match p.log.read(offset, READ_BYTES, upper).await {
            Ok(s) => s,
            Err(e) => {
                p.log_error("offsets rebuild read", &e);
                break;
            }
        };
        let batches = match slice.batches() {
            Ok(b) => b,
            Err(e) => {
                p.log_error("offsets rebuild", &e);
                break;
            }
        };
        if batches.is_empty() {
            break;
        }
        let mut table = shard.offsets.borrow_mut();
        for b in &batches {
            let h = match crate::protocol::record_batch::BatchHeader::parse(b) {
                Ok(h) => h,
                Err(e) => {
                    p.log_error("offsets rebuild batch", &e);
                    offset = upper;
                    break;
                }
            };
            offset = offset.max(h.last_offset() + 1);
            if h.is_control() {
                // A transaction ended: what it committed (TxnOffsetCommit) takes effect or not.
                if let Some(m) = EndTxnMarker::of_batch(b) {
                    table.end_txn(h.producer_id, m.commit);
                }
                continue;
            }
            let transaction = h.is_transactional().then_some(h.producer_id);
            let replayed = for_each_record(b, |r| {
                records += 1;
                match offsets::decode_record(r.key, r.value) {
                    OffsetsRecord::Offset(k, v) => match transaction {
                        Some(producer_id) => table.stage_txn(producer_id, k, v),
                        None => table.apply(k, v),
                    },
                    OffsetsRecord::Group(g, snapshot) => {
                        groups_seen.insert(g, snapshot.map(StoredGroup::Classic));
                    }
                    OffsetsRecord::ConsumerGroup(g, snapshot) => {
                        groups_seen.insert(g, snapshot.map(StoredGroup::Consumer));
                    }
                    OffsetsRecord::Unreadable(_) => unreadable += 1,
                }
            });
            if let Err(e) = replayed {
                p.log_error("offsets rebuild batch", &e);
                unreadable += 1;
            }
        }
    }
    let group_count = groups_seen.values().filter(|s| s.is_some()).count();
    // Each runtime restores its own kind and forgets the ids that ended up as the other kind.
    let (mut classic, mut consumer) = (HashMap::new(), HashMap::new());
    for (g, stored) in groups_seen {
        let (c, k) = match stored {
            None => (None, None),
            Some(StoredGroup::Classic(s)) => (Some(s), None),
            Some(StoredGroup::Consumer(s)) => (None, Some(*s)),
        };
        classic.insert(g.clone(), c);
        consumer.insert(g, k);
    }
    groups::restore(shard, classic);
    consumer_groups::restore(shard, consumer);
    if records > 0 {
        log::info!(
            "shard {}: {}-{}: replayed {records} record(s), {group_count} group(s){}",
            shard.id,
            p.topic,
            p.index,
            if unreadable > 0 {
                format!(", {unreadable} unreadable (skipped)")
            } else {
                String::new()
            }
        );
    }
}
