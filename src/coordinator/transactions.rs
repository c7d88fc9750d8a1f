//! The transaction coordinator's shard side. A transactional id lives on the shard that owns
//! its `__transaction_state` partition ([`partition_for`]); requests for it reaching another
//! shard are forwarded there through the mailbox by the handlers.
//!
//! [`TxnRuntime`] drives the shard's pure [`TxnMachine`] (see [`crate::txn`] for the contract):
//! requests wait on a oneshot under a fresh request id; records are appended to the id's
//! `__transaction_state` partition in the machine's order and reported once durable; producer
//! ids come from the controller on shard 0; one timer follows the machine's next deadline
//! (wall-clock milliseconds, since transaction start times are stored and outlive a restart).
//! The machine is restored from each `__transaction_state` partition as the shard opens it
//! ([`rebuild_from`]).
//!
//! End-transaction markers ([`write_marker`]) run on the shard that owns the partition they are
//! written to: the control batch is appended like any batch and the call returns once it is
//! durable. A marker in a `__consumer_offsets` partition also ends the producer's pending
//! transactional offset commits there.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use glommio::Task;

use crate::protocol::error::ErrorCode;
use crate::protocol::record_batch::validate;
use crate::protocol::records::{for_each_record, EndTxnMarker, KeyValue};
use crate::server::handlers::produce::storage_error_code;
use crate::shard::partition::Partition;
use crate::shard::{now_ms, Shard};
use crate::txn::{
    log_format, AddPartitions, Effect, EndTxn, InitPid, PersistId, RequestId, TopicPartition,
    TxnConfig, TxnError, TxnMachine, TxnMetadata, TxnResponse,
};

use super::offsets::OFFSETS_TOPIC;
use super::persist_record;

/// The internal topic holding transaction metadata.
pub const TRANSACTION_TOPIC: &str = "__transaction_state";

/// The `__transaction_state` partition of `transactional_id`: Kafka's
/// `Utils.abs(transactionalId.hashCode) % partitions`, with Java's `String.hashCode` (over
/// UTF-16 code units) and `abs(i32::MIN) = 0`.
pub fn partition_for(transactional_id: &str, partitions: i32) -> i32 {
    let h = transactional_id
        .encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32));
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// The `__transaction_state` partition of `transactional_id`. The count is the topic's own
/// (fixed when it was created), so changing the key later cannot move transactional ids.
pub fn txn_partition(shard: &Shard, transactional_id: &str) -> i32 {
    let count = shard
        .image()
        .topic(TRANSACTION_TOPIC)
        .map_or(shard.config.transaction_state_num_partitions, |t| {
            t.partitions.len() as i32
        });
    partition_for(transactional_id, count)
}

/// The shard that coordinates `transactional_id`, if `__transaction_state` exists.
pub fn txn_shard(shard: &Shard, transactional_id: &str) -> Option<usize> {
    shard
        .image()
        .shard_of(TRANSACTION_TOPIC, txn_partition(shard, transactional_id))
}

/// The transaction coordinator of one shard.
pub struct TxnRuntime {
    machine: TxnMachine,
    waiters: HashMap<RequestId, oneshot::Sender<TxnResponse>>,
    next_request_id: u64,
    /// The one timer: its deadline and the sleeping task (dropping it cancels the tick).
    timer: Option<(u64, Task<()>)>,
}

impl TxnRuntime {
    pub fn new(config: TxnConfig) -> TxnRuntime {
        TxnRuntime {
            machine: TxnMachine::new(config),
            waiters: HashMap::new(),
            next_request_id: 0,
            timer: None,
        }
    }

    /// The machine, for DescribeTransactions / ListTransactions.
    pub fn machine(&self) -> &TxnMachine {
        &self.machine
    }
}

/// The transaction clock: wall-clock milliseconds.
fn clock() -> u64 {
    now_ms().max(0) as u64
}

/// The `__transaction_state` partition of `id` if this shard coordinates it; otherwise the
/// error a client retries on (NOT_COORDINATOR when another shard owns it).
fn coordinating_partition(shard: &Shard, id: &str) -> Result<Rc<Partition>, TxnError> {
    shard
        .serving(TRANSACTION_TOPIC, txn_partition(shard, id))
        .map_err(|code| match code {
            ErrorCode::KAFKA_STORAGE_ERROR => TxnError::CoordinatorNotAvailable,
            _ => TxnError::NotCoordinator,
        })
}

/// One request to the machine, on the coordinating shard.
pub enum TxnRequest {
    InitProducerId(InitPid),
    AddPartitions(AddPartitions),
    EndTxn(EndTxn),
}

impl TxnRequest {
    fn transactional_id(&self) -> &str {
        match self {
            TxnRequest::InitProducerId(r) => &r.transactional_id,
            TxnRequest::AddPartitions(r) => &r.transactional_id,
            TxnRequest::EndTxn(r) => &r.transactional_id,
        }
    }
}

/// Runs on the coordinating shard: hands `req` to the machine and waits for its answer.
pub async fn handle(shard: Rc<Shard>, req: TxnRequest) -> TxnResponse {
    if let Err(e) = coordinating_partition(&shard, req.transactional_id()) {
        return TxnResponse::error(e);
    }
    let (tx, rx) = oneshot::channel();
    let effects = {
        let mut rt = shard.txn.borrow_mut();
        rt.next_request_id += 1;
        let id = RequestId(rt.next_request_id);
        rt.waiters.insert(id, tx);
        let now = clock();
        match req {
            TxnRequest::InitProducerId(r) => rt.machine.init_producer_id(now, id, r),
            TxnRequest::AddPartitions(r) => rt.machine.add_partitions(now, id, r),
            TxnRequest::EndTxn(r) => rt.machine.end_txn(now, id, r),
        }
    };
    run(&shard, effects);
    rx.await
        .unwrap_or(TxnResponse::error(TxnError::CoordinatorNotAvailable))
}

/// Executes the machine's effects in order (see [`crate::txn`]).
fn run(shard: &Rc<Shard>, effects: Vec<Effect>) {
    for effect in effects {
        match effect {
            Effect::Respond {
                request_id,
                response,
            } => {
                let waiter = shard.txn.borrow_mut().waiters.remove(&request_id);
                if let Some(tx) = waiter {
                    // The connection may be gone: nothing to tell then.
                    let _ = tx.send(response);
                }
            }
            Effect::Persist {
                persist_id,
                transactional_id,
                metadata,
            } => persist(shard, persist_id, &transactional_id, metadata.as_ref()),
            Effect::WriteMarkers {
                transactional_id,
                producer_id,
                producer_epoch,
                commit,
                partitions,
            } => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let result = write_markers(
                        &shard,
                        &transactional_id,
                        producer_id,
                        producer_epoch,
                        commit,
                        partitions,
                    )
                    .await;
                    if result.is_ok() {
                        // Markers durable, the transaction's Complete state not yet written.
                        crate::crash_points::hit("txn_markers_written");
                    }
                    let effects = shard.txn.borrow_mut().machine.markers_written(
                        clock(),
                        &transactional_id,
                        producer_id,
                        producer_epoch,
                        result,
                    );
                    run(&shard, effects);
                })
                .detach();
            }
            Effect::AllocateProducerId { request_id } => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let allocated = allocate_producer_id(&shard).await.map_err(|e| {
                        log::error!("shard {}: producer id allocation: {e}", shard.id);
                    });
                    let effects = shard.txn.borrow_mut().machine.producer_id_allocated(
                        clock(),
                        request_id,
                        allocated,
                    );
                    run(&shard, effects);
                })
                .detach();
            }
            // The timer follows next_deadline_ms, below.
            Effect::ScheduleTimer { .. } => {}
        }
    }
    rearm(shard);
}

/// Appends the record now (keeping the machine's order) and reports it once durable.
fn persist(
    shard: &Rc<Shard>,
    persist_id: PersistId,
    transactional_id: &str,
    metadata: Option<&TxnMetadata>,
) {
    let p = coordinating_partition(shard, transactional_id).map_err(|e| ErrorCode(e.code()));
    let record = log_format::encode_record(transactional_id, metadata)
        .map(|(key, value)| KeyValue {
            key: Some(key),
            value,
        })
        .map_err(|e| {
            log::error!("shard {}: transaction {transactional_id}: {e}", shard.id);
            ErrorCode::UNKNOWN_SERVER_ERROR
        });
    let id = transactional_id.to_string();
    persist_record(shard, p, record, move |shard, result| {
        match result {
            // Durable, not yet acted on (no answer, no markers).
            Ok(_) => crate::crash_points::hit("txn_state_durable"),
            Err(code) => log::warn!(
                "shard {}: transaction {id}: state write failed: {code:?}",
                shard.id
            ),
        }
        let effects =
            shard
                .txn
                .borrow_mut()
                .machine
                .persisted(clock(), persist_id, result.map_err(|_| ()));
        run(shard, effects);
    });
}

/// A fresh producer id from the controller (shard 0); the error says why there is none.
pub async fn allocate_producer_id(shard: &Rc<Shard>) -> Result<i64, String> {
    let allocated = shard
        .mailbox
        .call(shard, 0, |s| {
            let s = s.clone();
            async move {
                match &s.controller {
                    Some(c) => c.allocate_producer_id(&s).await.map_err(|e| e.to_string()),
                    None => Err("no controller on shard 0".to_string()),
                }
            }
        })
        .await;
    allocated.unwrap_or_else(|_| Err("the controller's shard did not answer".to_string()))
}

/// Writes the markers of a transaction to every partition in it, through their owners, all at
/// once; Ok when every partition has it (or no longer exists).
async fn write_markers(
    shard: &Rc<Shard>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    partitions: Vec<TopicPartition>,
) -> Result<(), ()> {
    // The coordinator epoch fences markers of an older coordinator of the same producer; on
    // one node the leader epoch of the transaction's partition plays that part.
    let coordinator_epoch = match coordinating_partition(shard, transactional_id) {
        Ok(p) => p.leader_epoch,
        Err(_) => return Err(()),
    };
    let marker = EndTxnMarker {
        commit,
        coordinator_epoch,
    };
    let image = shard.image();
    let mut waits = Vec::with_capacity(partitions.len());
    for tp in partitions {
        let Some(owner) = image.shard_of(&tp.topic, tp.partition) else {
            // Deleted since it joined the transaction: nothing to mark.
            continue;
        };
        let job = move |s: &Rc<Shard>| {
            write_marker(
                s.clone(),
                tp.topic,
                tp.partition,
                producer_id,
                producer_epoch,
                marker,
            )
        };
        waits.push(shard.mailbox.call(shard, owner, job));
    }
    let mut ok = true;
    for answer in crate::io::join::join_all(waits).await {
        match answer {
            Ok(ErrorCode::NONE) | Ok(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION) => {}
            // The partition has seen a newer epoch of this producer, or a newer coordinator:
            // this marker is stale, writing it again would not help (Kafka drops it too).
            Ok(ErrorCode::INVALID_PRODUCER_EPOCH)
            | Ok(ErrorCode::TRANSACTION_COORDINATOR_FENCED) => {}
            Ok(code) => {
                crate::log_limited!(
                    log::Level::Warn,
                    "shard {}: transaction {transactional_id}: marker write failed: {code:?}; \
                     retrying",
                    shard.id
                );
                ok = false;
            }
            Err(_) => ok = false,
        }
    }
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

/// Arms the one timer for the machine's next deadline unless it is already armed for it.
fn rearm(shard: &Rc<Shard>) {
    let mut rt = shard.txn.borrow_mut();
    let Some(at) = rt.machine.next_deadline_ms() else {
        rt.timer = None;
        return;
    };
    if rt.timer.as_ref().is_some_and(|(armed, _)| *armed == at) {
        return;
    }
    let weak = Rc::downgrade(shard);
    let task = glommio::spawn_local(async move {
        let now = clock();
        if at > now {
            glommio::timer::sleep(Duration::from_millis(at - now)).await;
        }
        if let Some(shard) = weak.upgrade() {
            fire(&shard, at);
        }
    });
    rt.timer = Some((at, task));
}

fn fire(shard: &Rc<Shard>, at: u64) {
    let effects = {
        let mut rt = shard.txn.borrow_mut();
        match rt.timer.take() {
            // The running task itself: let it finish instead of cancelling it.
            Some((armed, task)) if armed == at => {
                task.detach();
            }
            other => {
                rt.timer = other;
                return;
            }
        }
        rt.machine.tick(clock())
    };
    run(shard, effects);
}

/// Replays a `__transaction_state` partition this shard just opened into its machine: the last
/// record of each transactional id wins; transactions caught in PrepareCommit/PrepareAbort get
/// their markers written again.
pub async fn rebuild_from(shard: &Rc<Shard>, p: &Rc<Partition>) {
    const READ_BYTES: usize = 1 << 20;
    let upper = p.log.high_watermark();
    let mut offset = p.log.log_start_offset();
    let mut last: HashMap<String, Option<TxnMetadata>> = HashMap::new();
    let mut unreadable = 0u64;
    while offset < upper {
        let batches = match p.log.read(offset, READ_BYTES, upper).await {
            Ok(slice) => slice.batches(),
            Err(e) => {
                p.log_error("transaction state rebuild read", &e);
                break;
            }
        };
        let batches = match batches {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => break,
            Err(e) => {
                p.log_error("transaction state rebuild", &e);
                break;
            }
        };
        for b in &batches {
            let replayed = for_each_record(b, |r| {
                let Some(key) = r.key else {
                    unreadable += 1;
                    return;
                };
                match log_format::decode_record(key, r.value) {
                    Ok((id, meta)) => {
                        last.insert(id, meta);
                    }
                    Err(_) => unreadable += 1,
                }
            });
            match replayed {
                Ok(h) => offset = offset.max(h.last_offset() + 1),
                Err(e) => {
                    p.log_error("transaction state rebuild batch", &e);
                    offset = upper;
                    break;
                }
            }
        }
    }
    let ids = last.values().filter(|m| m.is_some()).count();
    if ids > 0 || unreadable > 0 {
        log::info!(
            "shard {}: {}-{}: restored {ids} transactional id(s){}",
            shard.id,
            p.topic,
            p.index,
            if unreadable > 0 {
                format!(", {unreadable} unreadable record(s) skipped")
            } else {
                String::new()
            }
        );
    }
    let effects = shard.txn.borrow_mut().machine.restore(clock(), last);
    run(shard, effects);
}

/// Runs on the shard that owns `topic`-`partition`: appends the end-transaction marker of
/// `(producer_id, producer_epoch)` and waits until it is durable. A partition that no longer
/// exists answers UNKNOWN_TOPIC_OR_PARTITION (the coordinator treats it as done, as Kafka does
/// for deleted partitions).
pub async fn write_marker(
    shard: Rc<Shard>,
    topic: String,
    partition: i32,
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
) -> ErrorCode {
    let p = match shard.serving(&topic, partition) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let batch = Bytes::from(marker.encode_batch(producer_id, producer_epoch, now_ms()));
    let header = match validate(&batch) {
        Ok(h) => h,
        Err(e) => {
            log::error!("shard {}: built an invalid marker batch: {e}", shard.id);
            return ErrorCode::UNKNOWN_SERVER_ERROR;
        }
    };
    let (appended, round) = match shard.append_local(&p, &[(batch, header)]) {
        Ok(a) => a,
        Err(e) => {
            if e.is_storage_failure() {
                p.log_error("transaction marker append", &e);
            } else {
                crate::log_limited!(
                    log::Level::Warn,
                    "shard {}: transaction marker for producer {producer_id} refused by \
                     {topic}-{partition}: {e}",
                    shard.id
                );
            }
            return storage_error_code(&e);
        }
    };
    shard.commit.wait_round(round).await;
    if p.log.high_watermark() <= appended.last_offset {
        // The flush did not cover it: the disk under this partition failed.
        return ErrorCode::KAFKA_STORAGE_ERROR;
    }
    if topic == OFFSETS_TOPIC {
        super::end_txn_offsets(&shard, producer_id, marker.commit);
    }
    ErrorCode::NONE
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Java's `String.hashCode` is `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 units, in i32
    /// arithmetic; the expected values below are worked out from that definition.
    #[test]
    fn placement_follows_java_string_hash_code() {
        // "my-txn": -1061187895, abs % 50 = 45.
        assert_eq!(partition_for("my-txn", 50), 45);
        assert_eq!(partition_for("", 50), 0);
        // "a": 97.
        assert_eq!(partition_for("a", 50), 47);
        // Outside the BMP a character is two units: 0xD83D * 31 + 0xDE00 = 1772899.
        assert_eq!(partition_for("\u{1F600}", 1_000_000_007), 1_772_899);
        // i32::MIN has no absolute value: Kafka's Utils.abs makes it 0.
        // ("polygenelubricants".hashCode() == i32::MIN in Java.)
        assert_eq!(partition_for("polygenelubricants", 7), 0);
    }
}
