//! What one shard reports at a scrape: a plain-data copy of its probe, its partitions' offsets,
//! its cache, mailbox and I/O counters and its groups' committed offsets. Taken by a job that runs
//! on the shard itself (sent through the mailbox by the shard serving the scrape), so nothing is
//! shared; the copy is `Send` and travels back to be merged and rendered.

use crate::protocol::api::ApiKey;
use crate::shard::Shard;

use super::probe::{HistogramSnapshot, IoTotals, PartitionCounters};

/// Most committed offsets one shard reports (consumer-group lag series), so a broker with very
/// many groups cannot make a scrape unbounded.
pub const COMMITTED_OFFSETS_MAX: usize = 10_000;

/// One partition a shard owns, as its log stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
    /// Producers whose idempotence state the partition keeps (bounded by
    /// `producer.id.expiration.ms`).
    pub producers: u64,
}

/// One committed offset of a group coordinated by the shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub connections_open: u64,
    pub connections_accepted: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub produce_bytes: u64,
    pub produce_records: u64,
    pub fetch_bytes: u64,
    pub fetch_records: u64,
    /// (API name, latency) for every API that has seen a request here.
    pub requests: Vec<(String, HistogramSnapshot)>,
    pub fsync: HistogramSnapshot,
    pub fsyncs_in_flight: u64,
    /// Group-commit rounds, start to completion.
    pub commit_round: HistogramSnapshot,
    /// Produce appends waiting for their round (see `ShardProbe::durable_wait_done`).
    pub durable_wait: HistogramSnapshot,
    /// `queued.max.request.bytes`: request bytes held now and at most since start (0 when
    /// unbounded).
    pub queued_request_bytes: u64,
    pub queued_request_bytes_peak: u64,
    pub commit_rounds: u64,
    pub durable_writes: u64,
    pub journal: crate::metrics::probe::JournalTotals,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_used_bytes: u64,
    pub cache_budget_bytes: u64,
    pub io: IoTotals,
    /// Compaction's I/O pacer: bytes it paced, its configured maximum and current rate (bytes
    /// per second), and the pieces after which it slowed down for the produce path.
    pub compaction_paced_bytes: u64,
    pub compaction_rate_max: u64,
    pub compaction_rate: u64,
    pub compaction_slowdowns: u64,
    /// Jobs sent to each shard (index) through the mailbox.
    pub mailbox_sent: Vec<u64>,
    /// Jobs taken from each shard's (index) channel by this shard's receive loops.
    pub mailbox_received: Vec<u64>,
    pub partitions: Vec<PartitionState>,
    pub partition_counters: Vec<(String, i32, PartitionCounters)>,
    pub offline_partitions: u64,
    pub committed: Vec<CommittedOffset>,
    /// More committed offsets than [`COMMITTED_OFFSETS_MAX`] were coordinated here.
    pub committed_truncated: bool,
}

/// Takes `shard`'s snapshot. Runs on that shard's thread.
pub fn take(shard: &Shard) -> ShardSnapshot {
    let probe = &shard.probe;
    probe.absorb_io(&glommio::executor().io_stats());
    let (connections_open, connections_accepted) = probe.connections();
    let (bytes_received, bytes_sent) = probe.network_bytes();
    let [produce_bytes, produce_records, fetch_bytes, fetch_records] = probe.data_totals();
    let requests = probe
        .request_histograms()
        .into_iter()
        .map(|(key, h)| {
            let name = ApiKey::from_i16(key)
                .map(|k| format!("{k:?}"))
                .unwrap_or_else(|| key.to_string());
            (name, h)
        })
        .collect();
    let mut partitions: Vec<PartitionState> = shard
        .owned_partitions()
        .iter()
        .map(|p| PartitionState {
            topic: p.topic.clone(),
            partition: p.index,
            log_start_offset: p.log.log_start_offset(),
            log_end_offset: p.log.log_end_offset(),
            high_watermark: p.log.high_watermark(),
            size_bytes: p.log.size_bytes(),
            producers: p.log.producer_count() as u64,
        })
        .collect();
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let (committed, committed_truncated) = committed_offsets(shard);
    ShardSnapshot {
        shard: shard.id,
        connections_open,
        connections_accepted,
        bytes_received,
        bytes_sent,
        produce_bytes,
        produce_records,
        fetch_bytes,
        fetch_records,
        requests,
        fsync: probe.fsync_histogram(),
        fsyncs_in_flight: probe.fsyncs_in_flight(),
        commit_round: probe.commit_round_histogram(),
        durable_wait: probe.durable_wait_histogram(),
        queued_request_bytes: shard.request_budget.as_ref().map_or(0, |b| b.held()),
        queued_request_bytes_peak: shard.request_budget.as_ref().map_or(0, |b| b.peak()),
        commit_rounds: probe.commit_rounds(),
        durable_writes: probe.durable_writes(),
        journal: probe.journal_totals(),
        cache_hits: shard.cache.hits(),
        cache_misses: shard.cache.misses(),
        cache_used_bytes: shard.cache.used_bytes() as u64,
        cache_budget_bytes: shard.cache.budget_bytes() as u64,
        io: probe.io_totals(),
        compaction_paced_bytes: shard.pacer.bytes(),
        compaction_rate_max: shard.pacer.max_rate(),
        compaction_rate: shard.pacer.rate(),
        compaction_slowdowns: shard.pacer.slowdowns(),
        mailbox_sent: shard.mailbox.sent_counts(),
        mailbox_received: shard.mailbox.received_counts(),
        partitions,
        partition_counters: probe.partition_counters(),
        offline_partitions: shard.offline_count() as u64,
        committed,
        committed_truncated,
    }
}

/// The committed offsets of the groups this shard coordinates, in group order, at most
/// [`COMMITTED_OFFSETS_MAX`].
fn committed_offsets(shard: &Shard) -> (Vec<CommittedOffset>, bool) {
    let table = shard.offsets.borrow();
    let mut groups: Vec<&str> = table.group_ids().collect();
    groups.sort_unstable();
    let mut out = Vec::new();
    for group in groups {
        for (topic, partition, c) in table.group(group) {
            if out.len() == COMMITTED_OFFSETS_MAX {
                return (out, true);
            }
            out.push(CommittedOffset {
                group: group.to_string(),
                topic,
                partition,
                offset: c.offset,
            });
        }
    }
    (out, false)
}
