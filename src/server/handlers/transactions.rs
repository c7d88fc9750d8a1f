//! The transaction APIs a transactional producer and admin tools send:
//! - InitProducerId with a transactional id (from `producer_id`), AddPartitionsToTxn (key 24,
//!   v0–4), AddOffsetsToTxn (25, v0–4), EndTxn (26, v0–4): forwarded to the shard that
//!   coordinates the transactional id and answered by its transaction coordinator
//!   ([`crate::coordinator::transactions`], driving [`crate::txn::TxnMachine`]). The highest
//!   versions (KIP-890's epoch bump per transaction) are not served.
//! - TxnOffsetCommit (28, v0–4): forwarded to the group's coordinating shard like
//!   OffsetCommit; the offsets are written inside the producer's transaction and take effect
//!   with its COMMIT marker ([`crate::coordinator::end_txn_offsets`]).
//! - DescribeTransactions (65, v0) and ListTransactions (66, v0–1), asked of every shard.

use std::rc::Rc;

use crate::coordinator::transactions::{self as txn_coordinator, TxnRequest};
use crate::coordinator::{self, CommitPart, CommitRequest};
use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnPartitionResult,
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, AddPartitionsToTxnResult,
    AddPartitionsToTxnTopic, AddPartitionsToTxnTopicResult, DescribeTransactionsRequest,
    DescribeTransactionsResponse, DescribeTransactionsResponseTopicData,
    DescribeTransactionsResponseTransactionState, EndTxnRequest, EndTxnResponse,
    ListTransactionsRequest, ListTransactionsResponse, ListTransactionsResponseTransactionState,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse, TxnOffsetCommitResponsePartition,
    TxnOffsetCommitResponseTopic,
};
use crate::protocol::wire::Reader;
use crate::shard::Shard;
use crate::txn::{AddPartitions, EndTxn, TopicPartition, TxnApi, TxnError, TxnResponse, TxnState};

use super::groups::on_coordinator;
use super::{decode, Dispatch, RequestContext};

pub async fn txn_offset_commit(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: TxnOffsetCommitRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let shape: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            let parts = t.partitions.iter().map(|p| p.partition_index).collect();
            (t.name.clone(), parts)
        })
        .collect();
    let n: usize = shape.iter().map(|(_, p)| p.len()).sum();
    let codes = if req.transactional_id.is_empty() || req.producer_id < 0 {
        vec![ErrorCode::INVALID_REQUEST; n]
    } else {
        let commit = CommitRequest {
            group: req.group_id.clone(),
            generation_id: req.generation_id,
            member_id: req.member_id,
            group_instance_id: req.group_instance_id,
            parts: req
                .topics
                .into_iter()
                .flat_map(|t| {
                    let name = t.name;
                    t.partitions.into_iter().map(move |p| CommitPart {
                        topic: name.clone(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata,
                        retention_ms: -1,
                    })
                })
                .collect(),
            transaction: Some((req.producer_id, req.producer_epoch)),
        };
        on_coordinator(
            shard,
            &req.group_id,
            vec![ErrorCode::COORDINATOR_NOT_AVAILABLE; n],
            move |s| coordinator::commit_offsets(s.clone(), commit),
        )
        .await
    };
    let mut codes = codes.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, parts)| TxnOffsetCommitResponseTopic {
            name,
            partitions: parts
                .into_iter()
                .map(|partition_index| TxnOffsetCommitResponsePartition {
                    partition_index,
                    error_code: codes.next().unwrap_or(ErrorCode::UNKNOWN_SERVER_ERROR).0,
                })
                .collect(),
        })
        .collect();
    ctx.reply(TxnOffsetCommitResponse {
        throttle_time_ms: 0,
        topics,
    })
}

/// Sends `req` to the shard coordinating its transactional id and waits for the answer.
pub async fn on_txn_coordinator(shard: &Rc<Shard>, id: &str, req: TxnRequest) -> TxnResponse {
    if id.is_empty() {
        return TxnResponse::error(TxnError::InvalidRequest);
    }
    let Some(owner) = txn_coordinator::txn_shard(shard, id) else {
        return TxnResponse::error(TxnError::CoordinatorNotAvailable);
    };
    shard
        .mailbox
        .call(shard, owner, move |s| {
            txn_coordinator::handle(s.clone(), req)
        })
        .await
        .unwrap_or(TxnResponse::error(TxnError::CoordinatorNotAvailable))
}

/// The wire code of a machine answer for `api` at `version`.
fn code(response: &TxnResponse, api: TxnApi, version: i16) -> i16 {
    response
        .error
        .map_or(0, |e| e.code_for_version(api, version))
}

fn partitions_of(topics: &[AddPartitionsToTxnTopic]) -> Vec<TopicPartition> {
    topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TopicPartition::new(t.name.clone(), *p))
        })
        .collect()
}

/// Per-partition results of one transaction, each partition's code from `code_of`.
fn topic_results(
    topics: &[AddPartitionsToTxnTopic],
    code_of: impl Fn(&str, i32) -> i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|t| AddPartitionsToTxnTopicResult {
            name: t.name.clone(),
            results_by_partition: t
                .partitions
                .iter()
                .map(|p| AddPartitionsToTxnPartitionResult {
                    partition_index: *p,
                    partition_error_code: code_of(&t.name, *p),
                })
                .collect(),
        })
        .collect()
}

pub async fn add_partitions_to_txn(
    shard: &Rc<Shard>,
    ctx: RequestContext,
    mut r: Reader,
) -> Dispatch {
    let req: AddPartitionsToTxnRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let image = shard.image();
    let unknown = |topics: &[AddPartitionsToTxnTopic]| {
        topics.iter().any(|t| {
            t.partitions
                .iter()
                .any(|p| image.shard_of(&t.name, *p).is_none())
        })
    };
    // One transaction's answer: UNKNOWN_TOPIC_OR_PARTITION for partitions that do not exist
    // and OPERATION_NOT_ATTEMPTED for the rest (Kafka's answer), else the coordinator's.
    let answer = |topics: &[AddPartitionsToTxnTopic], response: Option<TxnResponse>| match response
    {
        Some(resp) => {
            let c = code(&resp, TxnApi::AddPartitionsToTxn, ctx.version);
            topic_results(topics, |_, _| c)
        }
        None => topic_results(topics, |topic, p| {
            if image.shard_of(topic, p).is_none() {
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0
            } else {
                ErrorCode::OPERATION_NOT_ATTEMPTED.0
            }
        }),
    };
    if ctx.version >= 4 {
        let mut results = Vec::with_capacity(req.transactions.len());
        for t in &req.transactions {
            let response = if unknown(&t.topics) {
                None
            } else {
                let add = AddPartitions {
                    transactional_id: t.transactional_id.clone(),
                    producer_id: t.producer_id,
                    producer_epoch: t.producer_epoch,
                    partitions: partitions_of(&t.topics),
                    verify_only: t.verify_only,
                };
                Some(
                    on_txn_coordinator(shard, &t.transactional_id, TxnRequest::AddPartitions(add))
                        .await,
                )
            };
            results.push(AddPartitionsToTxnResult {
                transactional_id: t.transactional_id.clone(),
                topic_results: answer(&t.topics, response),
            });
        }
        return ctx.reply(AddPartitionsToTxnResponse {
            throttle_time_ms: 0,
            error_code: 0,
            results_by_transaction: results,
            ..Default::default()
        });
    }
    let topics = &req.v3_and_below_topics;
    let response = if unknown(topics) {
        None
    } else {
        let add = AddPartitions {
            transactional_id: req.v3_and_below_transactional_id.clone(),
            producer_id: req.v3_and_below_producer_id,
            producer_epoch: req.v3_and_below_producer_epoch,
            partitions: partitions_of(topics),
            verify_only: false,
        };
        Some(
            on_txn_coordinator(
                shard,
                &req.v3_and_below_transactional_id,
                TxnRequest::AddPartitions(add),
            )
            .await,
        )
    };
    let results = answer(topics, response);
    ctx.reply(AddPartitionsToTxnResponse {
        throttle_time_ms: 0,
        results_by_topic_v3_and_below: results,
        ..Default::default()
    })
}

pub async fn add_offsets_to_txn(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: AddOffsetsToTxnRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let error_code = if req.group_id.is_empty() {
        ErrorCode::INVALID_GROUP_ID.0
    } else {
        // The group's offsets partition joins the transaction: its marker makes the
        // TxnOffsetCommit offsets visible.
        let partition = coordinator::group_partition(shard, &req.group_id);
        let add = AddPartitions {
            transactional_id: req.transactional_id.clone(),
            producer_id: req.producer_id,
            producer_epoch: req.producer_epoch,
            partitions: vec![TopicPartition::new(
                crate::coordinator::offsets::OFFSETS_TOPIC,
                partition,
            )],
            verify_only: false,
        };
        let response =
            on_txn_coordinator(shard, &req.transactional_id, TxnRequest::AddPartitions(add)).await;
        code(&response, TxnApi::AddOffsetsToTxn, ctx.version)
    };
    ctx.reply(AddOffsetsToTxnResponse {
        throttle_time_ms: 0,
        error_code,
    })
}

pub async fn end_txn(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: EndTxnRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let end = EndTxn {
        transactional_id: req.transactional_id.clone(),
        producer_id: req.producer_id,
        producer_epoch: req.producer_epoch,
        commit: req.committed,
    };
    let response = on_txn_coordinator(shard, &req.transactional_id, TxnRequest::EndTxn(end)).await;
    ctx.reply(EndTxnResponse {
        throttle_time_ms: 0,
        error_code: code(&response, TxnApi::EndTxn, ctx.version),
        ..Default::default()
    })
}

/// What one shard's machine says about the asked ids it coordinates.
fn describe_here(
    shard: &Shard,
    ids: &[String],
) -> Vec<DescribeTransactionsResponseTransactionState> {
    let rt = shard.txn.borrow();
    ids.iter()
        .filter(|id| txn_coordinator::txn_shard(shard, id) == Some(shard.id))
        .map(|id| match rt.machine().describe(id) {
            Some(m) => {
                let mut topics: Vec<DescribeTransactionsResponseTopicData> = Vec::new();
                for tp in &m.partitions {
                    match topics.last_mut() {
                        Some(t) if t.topic == tp.topic => t.partitions.push(tp.partition),
                        _ => topics.push(DescribeTransactionsResponseTopicData {
                            topic: tp.topic.clone(),
                            partitions: vec![tp.partition],
                        }),
                    }
                }
                DescribeTransactionsResponseTransactionState {
                    error_code: 0,
                    transactional_id: id.clone(),
                    transaction_state: m.state.as_str().to_string(),
                    transaction_timeout_ms: m.timeout_ms,
                    transaction_start_time_ms: if m.txn_start_ms == 0 {
                        -1
                    } else {
                        m.txn_start_ms as i64
                    },
                    producer_id: m.producer_id,
                    producer_epoch: m.producer_epoch,
                    topics,
                }
            }
            None => DescribeTransactionsResponseTransactionState {
                error_code: TxnError::TransactionalIdNotFound.code(),
                transactional_id: id.clone(),
                transaction_state: String::new(),
                transaction_timeout_ms: 0,
                transaction_start_time_ms: -1,
                producer_id: -1,
                producer_epoch: -1,
                topics: Vec::new(),
            },
        })
        .collect()
}

pub async fn describe_transactions(
    shard: &Rc<Shard>,
    ctx: RequestContext,
    mut r: Reader,
) -> Dispatch {
    let req: DescribeTransactionsRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let ids = req.transactional_ids;
    let mut found = Vec::with_capacity(ids.len());
    for target in 0..shard.nr_shards {
        let ids = ids.clone();
        let answer = shard
            .mailbox
            .call(shard, target, move |s| {
                let out = describe_here(s, &ids);
                async move { out }
            })
            .await;
        found.extend(answer.unwrap_or_default());
    }
    // In request order; an id no shard answered for (no coordinator) is not available.
    let states = ids
        .iter()
        .map(|id| {
            found
                .iter()
                .find(|s| &s.transactional_id == id)
                .cloned()
                .unwrap_or_else(|| DescribeTransactionsResponseTransactionState {
                    error_code: if id.is_empty() {
                        TxnError::InvalidRequest.code()
                    } else {
                        TxnError::CoordinatorNotAvailable.code()
                    },
                    transactional_id: id.clone(),
                    transaction_start_time_ms: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    ..Default::default()
                })
        })
        .collect();
    ctx.reply(DescribeTransactionsResponse {
        throttle_time_ms: 0,
        transaction_states: states,
    })
}

pub async fn list_transactions(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: ListTransactionsRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let mut states = Vec::new();
    let mut unknown_state_filters = Vec::new();
    for name in &req.state_filters {
        match TxnState::from_name(name) {
            Some(s) => states.push(s),
            None => unknown_state_filters.push(name.clone()),
        }
    }
    // Every filter named an unknown state: nothing can match (Kafka's answer).
    let nothing = !req.state_filters.is_empty() && states.is_empty();
    let mut listed = Vec::new();
    if !nothing {
        let now = crate::shard::now_ms().max(0) as u64;
        let min_duration_ms = req.duration_filter;
        for target in 0..shard.nr_shards {
            let (states, pids) = (states.clone(), req.producer_id_filters.clone());
            let answer = shard
                .mailbox
                .call(shard, target, move |s| {
                    let rt = s.txn.borrow();
                    let out: Vec<ListTransactionsResponseTransactionState> = rt
                        .machine()
                        .list(&states, &pids)
                        .into_iter()
                        .filter(|l| {
                            // duration_filter (v1): only transactions running at least this long.
                            min_duration_ms < 0
                                || rt.machine().describe(&l.transactional_id).is_some_and(|m| {
                                    m.txn_start_ms > 0
                                        && now.saturating_sub(m.txn_start_ms)
                                            >= min_duration_ms as u64
                                })
                        })
                        .map(|l| ListTransactionsResponseTransactionState {
                            transactional_id: l.transactional_id,
                            producer_id: l.producer_id,
                            transaction_state: l.state.as_str().to_string(),
                        })
                        .collect();
                    async move { out }
                })
                .await;
            listed.extend(answer.unwrap_or_default());
        }
    }
    ctx.reply(ListTransactionsResponse {
        throttle_time_ms: 0,
        error_code: 0,
        unknown_state_filters,
        transaction_states: listed,
    })
}
