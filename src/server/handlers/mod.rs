//! One handler per Kafka API, and the table of what we serve, which drives both dispatch and
//! the ApiVersions answer (so the two can never disagree).
//!
//! Every handler has the same shape: decode → validate → split by owning shard → send through
//! the mailbox → gather → encode, with errors reported per partition. Handlers run their ordered
//! effects (appends, metadata changes) before returning and leave only waiting (durability,
//! long polls) to the returned completion.

pub mod admin;
pub mod api_versions;
pub mod configs;
pub mod consumer_group;
pub mod fetch;
pub mod find_coordinator;
pub mod groups;
pub mod list_offsets;
pub mod log_dirs;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producer_id;
pub mod transactions;

use std::net::IpAddr;
use std::rc::Rc;

use crate::protocol::api::ApiKey;
use crate::protocol::codec::Message;
use crate::protocol::wire::Reader;
use crate::shard::Shard;

use super::connection::{encode_response, Completion, Pending, ResponseFrame};
use super::request_budget::RequestHold;

/// Versions served per API.
///
/// Produce is advertised from v0 although only v3+ (RecordBatch v2) is accepted: v0–2 get
/// UNSUPPORTED_VERSION per partition. Old librdkafka (2.0.x, e.g. Debian's kcat) compresses with
/// gzip/snappy only when the broker advertises Produce v0, so a v3 floor would make it send
/// everything uncompressed.
pub const API_TABLE: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 2, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::AddPartitionsToTxn, 0, 4),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
];

pub fn served_versions(key: ApiKey) -> Option<(i16, i16)> {
    API_TABLE
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, lo, hi)| (*lo, *hi))
}

pub enum Dispatch {
    Reply(Pending),
    Close(String),
}

/// What a handler knows about the request besides its body.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// The client's IP (a group member's host in DescribeGroups).
    pub peer_ip: Option<IpAddr>,
    /// The request's bytes in `queued.max.request.bytes`: the connection gives them back once
    /// the request is answered, a handler that lets go of the request earlier may do it then.
    pub budget: RequestHold,
}

impl RequestContext {
    /// The client's address as Kafka reports a group member's host: "/" + the IP.
    pub fn client_host(&self) -> String {
        self.peer_ip
            .map_or_else(|| "/unknown".to_string(), |ip| format!("/{ip}"))
    }

    /// Encodes `body` as this request's response (header v1 in flexible versions, except
    /// ApiVersions whose response header is always v0).
    pub fn respond<M: Message>(&self, body: &M) -> ResponseFrame {
        let header_flexible = self.api_key != ApiKey::ApiVersions && M::is_flexible(self.version);
        encode_response(self.correlation_id, self.version, header_flexible, body)
    }

    pub fn reply<M: Message + 'static>(&self, body: M) -> Dispatch {
        let frame = self.respond(&body);
        Dispatch::Reply(Box::pin(async move { Completion::Respond(frame) }))
    }
}

/// Decodes a request body or closes the connection with a reason.
pub fn decode<M: Message>(ctx: &RequestContext, r: &mut Reader) -> Result<M, Dispatch> {
    M::decode(r, ctx.version).map_err(|e| {
        Dispatch::Close(format!(
            "malformed {:?} v{} request (correlation id {}): {e}",
            ctx.api_key, ctx.version, ctx.correlation_id
        ))
    })
}

pub async fn dispatch(
    shard: &Rc<Shard>,
    peer_ip: Option<IpAddr>,
    budget: RequestHold,
    mut r: Reader,
) -> Dispatch {
    let (key_raw, version, correlation_id) = match (r.read_i16(), r.read_i16(), r.read_i32()) {
        (Ok(k), Ok(v), Ok(c)) => (k, v, c),
        _ => return Dispatch::Close("truncated request header".into()),
    };
    let Some(api_key) = ApiKey::from_i16(key_raw) else {
        return Dispatch::Close(format!("unknown api key {key_raw}"));
    };
    let Some((lo, hi)) = served_versions(api_key) else {
        return Dispatch::Close(format!("api {api_key:?} ({key_raw}) is not served"));
    };
    let in_range = version >= lo && version <= hi;
    // The rest of the header: client id (always a classic nullable string), then tagged fields
    // in flexible versions. Out-of-range ApiVersions requests are answered in v0 without reading
    // further (KIP-511: the client may speak a newer header than we know).
    let client_id = if in_range || api_key != ApiKey::ApiVersions {
        match r.read_nullable_string(false) {
            Ok(c) => c,
            Err(e) => return Dispatch::Close(format!("bad client id in request header: {e}")),
        }
    } else {
        None
    };
    let ctx = RequestContext {
        api_key,
        version,
        correlation_id,
        client_id,
        peer_ip,
        budget,
    };
    if !in_range {
        return match api_key {
            ApiKey::ApiVersions => api_versions::unsupported(&ctx),
            _ => Dispatch::Close(format!(
                "{api_key:?} v{version} is not supported (we serve v{lo}-v{hi})"
            )),
        };
    }
    if crate::protocol::api::request_is_flexible(api_key, version) {
        if let Err(e) = r.read_tagged_fields(|_, _| Ok(false)) {
            return Dispatch::Close(format!("bad tagged fields in request header: {e}"));
        }
    }
    match api_key {
        ApiKey::ApiVersions => api_versions::handle(shard, ctx, r),
        ApiKey::Metadata => metadata::handle(shard, ctx, r).await,
        ApiKey::Produce if version < produce::FIRST_ACCEPTED_VERSION => {
            produce::unsupported_old(&ctx, r)
        }
        ApiKey::Produce => produce::handle(shard, ctx, r).await,
        ApiKey::FindCoordinator => find_coordinator::handle(shard, ctx, r),
        ApiKey::OffsetCommit => offsets::offset_commit(shard, ctx, r).await,
        ApiKey::OffsetFetch => offsets::offset_fetch(shard, ctx, r).await,
        ApiKey::JoinGroup => groups::join_group(shard, ctx, r).await,
        ApiKey::SyncGroup => groups::sync_group(shard, ctx, r).await,
        ApiKey::Heartbeat => groups::heartbeat(shard, ctx, r).await,
        ApiKey::LeaveGroup => groups::leave_group(shard, ctx, r).await,
        ApiKey::DescribeGroups => groups::describe_groups(shard, ctx, r).await,
        ApiKey::ListGroups => groups::list_groups(shard, ctx, r).await,
        ApiKey::DeleteGroups => groups::delete_groups(shard, ctx, r).await,
        ApiKey::OffsetDelete => groups::offset_delete(shard, ctx, r).await,
        ApiKey::ConsumerGroupHeartbeat => consumer_group::heartbeat(shard, ctx, r).await,
        ApiKey::ConsumerGroupDescribe => consumer_group::describe(shard, ctx, r).await,
        ApiKey::Fetch => fetch::handle(shard, ctx, r),
        ApiKey::ListOffsets => list_offsets::handle(shard, ctx, r).await,
        ApiKey::OffsetForLeaderEpoch => list_offsets::offset_for_leader_epoch(shard, ctx, r).await,
        ApiKey::CreateTopics => admin::create_topics(shard, ctx, r).await,
        ApiKey::DeleteTopics => admin::delete_topics(shard, ctx, r).await,
        ApiKey::CreatePartitions => admin::create_partitions(shard, ctx, r).await,
        ApiKey::DescribeCluster => admin::describe_cluster(shard, ctx, r),
        ApiKey::InitProducerId => producer_id::handle(shard, ctx, r).await,
        ApiKey::TxnOffsetCommit => transactions::txn_offset_commit(shard, ctx, r).await,
        ApiKey::AddPartitionsToTxn => transactions::add_partitions_to_txn(shard, ctx, r).await,
        ApiKey::AddOffsetsToTxn => transactions::add_offsets_to_txn(shard, ctx, r).await,
        ApiKey::EndTxn => transactions::end_txn(shard, ctx, r).await,
        ApiKey::DescribeTransactions => transactions::describe_transactions(shard, ctx, r).await,
        ApiKey::ListTransactions => transactions::list_transactions(shard, ctx, r).await,
        ApiKey::DescribeConfigs => configs::describe_configs(shard, ctx, r),
        ApiKey::AlterConfigs => configs::alter_configs(shard, ctx, r).await,
        ApiKey::IncrementalAlterConfigs => configs::incremental_alter_configs(shard, ctx, r).await,
        ApiKey::DeleteRecords => log_dirs::delete_records(shard, ctx, r).await,
        ApiKey::DescribeLogDirs => log_dirs::describe_log_dirs(shard, ctx, r).await,
        ApiKey::DescribeTopicPartitions => metadata::describe_topic_partitions(shard, ctx, r),
        other => Dispatch::Close(format!("api {other:?} is not served")),
    }
}
