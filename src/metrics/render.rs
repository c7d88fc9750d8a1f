//! Prometheus text exposition format (version 0.0.4) of the shards' snapshots: one `# HELP` and
//! `# TYPE` per family, then its samples, each family's samples together. Label values are
//! escaped (`\\`, `\"`, `\n`); histograms have cumulative `_bucket{le=...}` lines ending with
//! `+Inf` (equal to `_count`), then `_sum` (seconds) and `_count`.
//!
//! Merging happens here, not on the shards: per-partition counters are summed over the shards
//! that counted them, consumer-group lag joins a group's committed offset (from its
//! coordinator's shard) with the partition's high watermark (from its owner's shard), and a
//! mailbox queue's length is what the sender sent minus what the receiver took.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};

use crate::memory::MemoryStats;

use super::probe::{HistogramSnapshot, PartitionCounters, LATENCY_BUCKETS};
use super::snapshot::ShardSnapshot;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the process says about itself besides its shards.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    pub version: &'static str,
    /// Every shard serves (see [`crate::server::lifecycle::Lifecycle::is_ready`]).
    pub ready: bool,
    /// `metrics.collect`.
    pub collect: bool,
    pub memory: MemoryStats,
}

struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(k);
                self.text.push_str("=\"");
                escape_label_value(&mut self.text, v);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A family with one sample per shard.
    fn per_shard<V: Display>(
        &mut self,
        shards: &[ShardSnapshot],
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&ShardSnapshot) -> V,
    ) {
        if shards.is_empty() {
            return;
        }
        self.family(name, kind, help);
        for s in shards {
            let shard = s.shard.to_string();
            self.sample(name, &[("shard", &shard)], value(s));
        }
    }

    /// A latency histogram per shard, as one family.
    fn per_shard_histogram(
        &mut self,
        shards: &[ShardSnapshot],
        name: &str,
        help: &str,
        histogram: impl Fn(&ShardSnapshot) -> &HistogramSnapshot,
    ) {
        if shards.is_empty() {
            return;
        }
        self.family(name, "histogram", help);
        for s in shards {
            let shard = s.shard.to_string();
            self.histogram(name, &[("shard", &shard)], histogram(s));
        }
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        with_le.push(("le", ""));
        let last = with_le.len() - 1;
        for ((le, _), n) in LATENCY_BUCKETS.iter().zip(&h.cumulative) {
            with_le[last].1 = le;
            self.sample(&bucket, &with_le, n);
        }
        with_le[last].1 = "+Inf";
        self.sample(&bucket, &with_le, h.count);
        self.sample(&format!("{name}_sum"), labels, h.sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

fn memory(o: &mut Out, m: &MemoryStats) {
    let families = [
        (
            "process_resident_memory_bytes",
            "Resident set size of the broker process.",
            m.resident_bytes,
        ),
        (
            "odradek_heap_allocated_bytes",
            "Bytes the allocator has handed out and not had back; a leak grows this.",
            m.heap_allocated_bytes,
        ),
        (
            "odradek_heap_free_bytes",
            "Free bytes in the allocator's arenas, kept for reuse: resident, or given back to the system by the heap trim (glibc counts both).",
            m.heap_free_bytes,
        ),
    ];
    for (name, help, value) in families {
        if let Some(v) = value {
            o.family(name, "gauge", help);
            o.sample(name, &[], v);
        }
    }
}

fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The whole `/metrics` answer for `shards` (in any order; each shard once).
pub fn render(info: &ProcessInfo, shards: &[ShardSnapshot]) -> String {
    let mut shards: Vec<&ShardSnapshot> = shards.iter().collect();
    shards.sort_by_key(|s| s.shard);
    let shards: Vec<ShardSnapshot> = shards.into_iter().cloned().collect();
    let mut o = Out {
        text: String::with_capacity(16 * 1024),
    };

    o.family(
        "odradek_up",
        "gauge",
        "1 while the broker process answers this endpoint.",
    );
    o.sample("odradek_up", &[], 1);
    o.family(
        "odradek_build_info",
        "gauge",
        "The broker's version, as a label; always 1.",
    );
    o.sample("odradek_build_info", &[("version", info.version)], 1);
    o.family(
        "odradek_ready",
        "gauge",
        "1 once every shard has recovered its partitions and listens (as /ready), 0 before and while stopping.",
    );
    o.sample("odradek_ready", &[], u8::from(info.ready));
    o.family(
        "odradek_metrics_collect",
        "gauge",
        "metrics.collect: 1 when request-path counters (bytes, records, latencies) are kept; with 0 they stay at zero.",
    );
    o.sample("odradek_metrics_collect", &[], u8::from(info.collect));
    memory(&mut o, &info.memory);

    // Connections and network.
    o.per_shard(
        &shards,
        "odradek_connections_open",
        "gauge",
        "Kafka client connections open on the shard.",
        |s| s.connections_open,
    );
    o.per_shard(
        &shards,
        "odradek_connections_accepted_total",
        "counter",
        "Kafka client connections the shard accepted.",
        |s| s.connections_accepted,
    );
    o.per_shard(
        &shards,
        "odradek_network_received_bytes_total",
        "counter",
        "Kafka request bytes the shard read (frames with their 4-byte size).",
        |s| s.bytes_received,
    );
    o.per_shard(
        &shards,
        "odradek_network_sent_bytes_total",
        "counter",
        "Kafka response bytes the shard wrote (frames with their 4-byte size).",
        |s| s.bytes_sent,
    );

    // Request latency per API.
    if shards.iter().any(|s| !s.requests.is_empty()) {
        let name = "odradek_request_duration_seconds";
        o.family(
            name,
            "histogram",
            "Time from reading a request to its response being ready (including waiting behind earlier requests of the same connection), per shard that read it and API.",
        );
        for s in &shards {
            let shard = s.shard.to_string();
            for (api, h) in &s.requests {
                o.histogram(name, &[("shard", &shard), ("api", api)], h);
            }
        }
    }

    // Produce and fetch, per shard.
    o.per_shard(
        &shards,
        "odradek_produce_bytes_total",
        "counter",
        "Record batch bytes appended on the shard owning the partition, the broker's own writes to internal topics included (duplicates not counted).",
        |s| s.produce_bytes,
    );
    o.per_shard(
        &shards,
        "odradek_produce_records_total",
        "counter",
        "Records appended on the shard owning the partition, internal topics included (from batch headers; duplicates not counted).",
        |s| s.produce_records,
    );
    o.per_shard(
        &shards,
        "odradek_fetch_bytes_total",
        "counter",
        "Record batch bytes the shard put in Fetch responses it answered (the partitions may live on other shards).",
        |s| s.fetch_bytes,
    );
    o.per_shard(
        &shards,
        "odradek_fetch_records_total",
        "counter",
        "Records in the batches the shard put in Fetch responses (from batch headers; a batch is sent whole, so records before the fetch offset count too).",
        |s| s.fetch_records,
    );

    // Per partition: counters summed over the shards that counted them.
    let mut counters: BTreeMap<(&str, i32), PartitionCounters> = BTreeMap::new();
    for s in &shards {
        for (topic, partition, c) in &s.partition_counters {
            let sum = counters.entry((topic.as_str(), *partition)).or_default();
            sum.produce_bytes += c.produce_bytes;
            sum.produce_records += c.produce_records;
            sum.fetch_bytes += c.fetch_bytes;
            sum.fetch_records += c.fetch_records;
        }
    }
    type Pick = fn(&PartitionCounters) -> u64;
    let per_partition: [(&str, &str, Pick); 4] = [
        (
            "odradek_partition_produce_bytes_total",
            "Record batch bytes appended to the partition (duplicates not counted).",
            |c| c.produce_bytes,
        ),
        (
            "odradek_partition_produce_records_total",
            "Records appended to the partition (from batch headers; duplicates not counted).",
            |c| c.produce_records,
        ),
        (
            "odradek_partition_fetch_bytes_total",
            "Record batch bytes of the partition put in Fetch responses.",
            |c| c.fetch_bytes,
        ),
        (
            "odradek_partition_fetch_records_total",
            "Records of the partition put in Fetch responses (from batch headers).",
            |c| c.fetch_records,
        ),
    ];
    if !counters.is_empty() {
        for (name, help, pick) in per_partition {
            o.family(name, "counter", help);
            for ((topic, partition), c) in &counters {
                let p = partition.to_string();
                o.sample(name, &[("topic", topic), ("partition", &p)], pick(c));
            }
        }
    }

    // Partition state, from the owning shard.
    type PickState = fn(&super::snapshot::PartitionState) -> i64;
    let states: [(&str, &str, PickState); 5] = [
        (
            "odradek_log_start_offset",
            "First offset readers can fetch (log start offset).",
            |p| p.log_start_offset,
        ),
        (
            "odradek_log_end_offset",
            "Next offset the partition assigns (log end offset).",
            |p| p.log_end_offset,
        ),
        (
            "odradek_high_watermark",
            "End of the durable prefix that consumers read below.",
            |p| p.high_watermark,
        ),
        (
            "odradek_log_size_bytes",
            "Bytes of the partition's segments on disk.",
            |p| p.size_bytes as i64,
        ),
        (
            "odradek_producer_ids",
            "Producers whose idempotence state the partition keeps (see producer.id.expiration.ms).",
            |p| p.producers as i64,
        ),
    ];
    if shards.iter().any(|s| !s.partitions.is_empty()) {
        for (name, help, pick) in states {
            o.family(name, "gauge", help);
            for s in &shards {
                let shard = s.shard.to_string();
                for p in &s.partitions {
                    let partition = p.partition.to_string();
                    o.sample(
                        name,
                        &[
                            ("shard", &shard),
                            ("topic", &p.topic),
                            ("partition", &partition),
                        ],
                        pick(p),
                    );
                }
            }
        }
    }
    o.per_shard(
        &shards,
        "odradek_partitions",
        "gauge",
        "Partitions the shard owns and serves.",
        |s| s.partitions.len(),
    );
    o.per_shard(
        &shards,
        "odradek_offline_partitions",
        "gauge",
        "Partitions the shard owns but could not open, or could not replay the journal into (answered KAFKA_STORAGE_ERROR).",
        |s| s.offline_partitions,
    );
    o.per_shard(
        &shards,
        "odradek_under_replicated_partitions",
        "gauge",
        "Partitions with fewer in-sync replicas than replicas: always 0 on a single node.",
        |_| 0,
    );

    // Consumer groups: committed offsets joined with the owners' high watermarks.
    let high_watermarks: BTreeMap<(&str, i32), i64> = shards
        .iter()
        .flat_map(|s| &s.partitions)
        .map(|p| ((p.topic.as_str(), p.partition), p.high_watermark))
        .collect();
    let mut committed: BTreeMap<(&str, &str, i32), i64> = BTreeMap::new();
    for s in &shards {
        for c in &s.committed {
            committed.insert((&c.group, &c.topic, c.partition), c.offset);
        }
    }
    if !committed.is_empty() {
        let name = "odradek_consumer_group_committed_offset";
        o.family(
            name,
            "gauge",
            "Offset a consumer group committed for a partition.",
        );
        for ((group, topic, partition), offset) in &committed {
            let p = partition.to_string();
            o.sample(
                name,
                &[("group", group), ("topic", topic), ("partition", &p)],
                offset,
            );
        }
        let name = "odradek_consumer_group_lag";
        o.family(
            name,
            "gauge",
            "High watermark minus the group's committed offset (0 when ahead); only partitions that exist and offsets that are not negative.",
        );
        for ((group, topic, partition), offset) in &committed {
            let Some(hw) = high_watermarks.get(&(*topic, *partition)) else {
                continue;
            };
            if *offset < 0 {
                continue;
            }
            let p = partition.to_string();
            o.sample(
                name,
                &[("group", group), ("topic", topic), ("partition", &p)],
                (hw - offset).max(0),
            );
        }
    }
    o.per_shard(
        &shards,
        "odradek_consumer_group_offsets_truncated",
        "gauge",
        "1 when the shard coordinates more committed offsets than one scrape reports (10,000); the rest are left out.",
        |s| u8::from(s.committed_truncated),
    );

    // Group commit and fdatasync.
    o.per_shard_histogram(
        &shards,
        "odradek_fsync_duration_seconds",
        "Group-commit fdatasync latency, one sample per dirty partition per round (_count is the number of fdatasyncs).",
        |s| &s.fsync,
    );
    o.per_shard_histogram(
        &shards,
        "odradek_group_commit_round_duration_seconds",
        "Group-commit rounds, from taking the dirty partitions to every append they cover being durable (writes, then fdatasyncs).",
        |s| &s.commit_round,
    );
    o.per_shard_histogram(
        &shards,
        "odradek_produce_durable_wait_seconds",
        "Produce requests waiting for durability (acks=all), from the append to the end of the group-commit round covering it; one sample per request and owning shard.",
        |s| &s.durable_wait,
    );
    o.per_shard(
        &shards,
        "odradek_fsyncs_in_flight",
        "gauge",
        "Group-commit fdatasyncs submitted to the shard's io_uring and not yet complete.",
        |s| s.fsyncs_in_flight,
    );
    o.per_shard(
        &shards,
        "odradek_queued_request_bytes",
        "gauge",
        "Bytes of requests read and not yet answered (produce with acks=all: not yet written), counted against queued.max.request.bytes (0 when unbounded).",
        |s| s.queued_request_bytes,
    );
    o.per_shard(
        &shards,
        "odradek_queued_request_bytes_max",
        "gauge",
        "Most bytes of requests held at once since start (0 when queued.max.request.bytes is unbounded).",
        |s| s.queued_request_bytes_peak,
    );
    o.per_shard(
        &shards,
        "odradek_group_commit_rounds_total",
        "counter",
        "Group-commit rounds completed (each makes every append before it durable).",
        |s| s.commit_rounds,
    );
    o.per_shard(
        &shards,
        "odradek_durable_writes_total",
        "counter",
        "Segment writes of group-commit rounds made durable by the write itself (O_DSYNC): no fdatasync of their own.",
        |s| s.durable_writes,
    );
    o.per_shard(
        &shards,
        "odradek_journal_entries_total",
        "counter",
        "Shard journal entries made durable: each one fdatasync for every partition in it.",
        |s| s.journal.entries,
    );
    o.per_shard(
        &shards,
        "odradek_journal_partition_flushes_total",
        "counter",
        "Partition flushes made durable through the shard journal instead of their own fdatasync.",
        |s| s.journal.partitions,
    );
    o.per_shard(
        &shards,
        "odradek_journal_checkpoints_total",
        "counter",
        "Shard journal checkpoints (segment files fdatasynced, earlier entries made dead).",
        |s| s.journal.checkpoints,
    );
    o.per_shard(
        &shards,
        "odradek_journal_checkpoint_files_total",
        "counter",
        "Segment files fdatasynced by shard journal checkpoints.",
        |s| s.journal.checkpoint_files,
    );
    o.per_shard(
        &shards,
        "odradek_journal_checkpoint_seconds_total",
        "counter",
        "Time shard journal checkpoints took.",
        |s| s.journal.checkpoint_us as f64 / 1e6,
    );

    // Batch cache.
    o.per_shard(
        &shards,
        "odradek_batch_cache_hits_total",
        "counter",
        "Partition reads answered from the shard's batch cache.",
        |s| s.cache_hits,
    );
    o.per_shard(
        &shards,
        "odradek_batch_cache_misses_total",
        "counter",
        "Partition reads the batch cache could not answer (read from disk).",
        |s| s.cache_misses,
    );
    o.per_shard(
        &shards,
        "odradek_batch_cache_hit_ratio",
        "gauge",
        "Hits over hits plus misses since start (0 before any read).",
        |s| {
            let all = s.cache_hits + s.cache_misses;
            if all == 0 {
                0.0
            } else {
                s.cache_hits as f64 / all as f64
            }
        },
    );
    o.per_shard(
        &shards,
        "odradek_batch_cache_used_bytes",
        "gauge",
        "Bytes the batch cache holds (batches plus per-entry overhead).",
        |s| s.cache_used_bytes,
    );
    o.per_shard(
        &shards,
        "odradek_batch_cache_budget_bytes",
        "gauge",
        "The batch cache's budget (cache.bytes).",
        |s| s.cache_budget_bytes,
    );

    // Compaction's I/O pacer (storage::pacing).
    o.per_shard(
        &shards,
        "odradek_compaction_read_bytes_total",
        "counter",
        "Bytes of stored batches compaction took from closed segments, as its pacer counts them.",
        |s| s.compaction_paced_bytes,
    );
    o.per_shard(
        &shards,
        "odradek_compaction_rate_max_bytes_per_second",
        "gauge",
        "Compaction's read rate cap in force (log.cleaner.io.max.bytes.per.second; 0: none).",
        |s| s.compaction_rate_max,
    );
    o.per_shard(
        &shards,
        "odradek_compaction_rate_bytes_per_second",
        "gauge",
        "The read rate compaction's pacer last allowed, adapted to the produce path's fdatasync latency.",
        |s| s.compaction_rate,
    );
    o.per_shard(
        &shards,
        "odradek_compaction_slowdowns_total",
        "counter",
        "Compaction reads after which the pacer halved its rate because produce fdatasyncs ran slow.",
        |s| s.compaction_slowdowns,
    );

    // File I/O through io_uring, as glommio counts it.
    o.per_shard(
        &shards,
        "odradek_io_file_reads_total",
        "counter",
        "File reads the shard's io_uring completed (DMA and buffered).",
        |s| s.io.reads,
    );
    o.per_shard(
        &shards,
        "odradek_io_file_read_bytes_total",
        "counter",
        "Bytes of those file reads.",
        |s| s.io.read_bytes,
    );
    o.per_shard(
        &shards,
        "odradek_io_file_writes_total",
        "counter",
        "File writes the shard's io_uring completed (DMA and buffered).",
        |s| s.io.writes,
    );
    o.per_shard(
        &shards,
        "odradek_io_file_written_bytes_total",
        "counter",
        "Bytes of those file writes.",
        |s| s.io.written_bytes,
    );

    // Mailbox: what a sender sent minus what the receiver took.
    let by_id: BTreeMap<usize, &ShardSnapshot> = shards.iter().map(|s| (s.shard, s)).collect();
    let mut queues = Vec::new();
    let mut sent = Vec::new();
    for to in &shards {
        for from in &shards {
            if from.shard == to.shard {
                continue;
            }
            let n_sent = from.mailbox_sent.get(to.shard).copied().unwrap_or(0);
            let n_taken = by_id
                .get(&to.shard)
                .and_then(|s| s.mailbox_received.get(from.shard).copied())
                .unwrap_or(0);
            queues.push((to.shard, from.shard, n_sent.saturating_sub(n_taken)));
            sent.push((from.shard, to.shard, n_sent));
        }
    }
    if !queues.is_empty() {
        let name = "odradek_mailbox_queue_length";
        o.family(
            name,
            "gauge",
            "Jobs shard `from` sent to `shard` through the mailbox that its receive loop has not taken yet (the two counts are read a moment apart).",
        );
        for (to, from, n) in queues {
            o.sample(
                name,
                &[("shard", &to.to_string()), ("from", &from.to_string())],
                n,
            );
        }
        let name = "odradek_mailbox_jobs_sent_total";
        o.family(
            name,
            "counter",
            "Jobs the shard sent to shard `target` through the mailbox.",
        );
        for (from, to, n) in sent {
            o.sample(
                name,
                &[("shard", &from.to_string()), ("target", &to.to_string())],
                n,
            );
        }
    }
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::probe::{IoTotals, LatencyHistogram};
    use crate::metrics::snapshot::{CommittedOffset, PartitionState};
    use std::time::Duration;

    fn hist(us: &[u64]) -> HistogramSnapshot {
        let mut h = LatencyHistogram::default();
        for u in us {
            h.record(Duration::from_micros(*u));
        }
        h.snapshot()
    }

    fn shards() -> Vec<ShardSnapshot> {
        let part = |topic: &str, partition, hw| PartitionState {
            topic: topic.into(),
            partition,
            log_start_offset: 0,
            log_end_offset: hw + 1,
            high_watermark: hw,
            size_bytes: 4096,
            producers: 3,
        };
        let counters = |b| PartitionCounters {
            produce_bytes: b,
            produce_records: b / 10,
            fetch_bytes: 0,
            fetch_records: 0,
        };
        vec![
            ShardSnapshot {
                shard: 1,
                connections_open: 2,
                requests: vec![("Fetch".into(), hist(&[300, 40_000]))],
                partitions: vec![part("t", 1, 50)],
                partition_counters: vec![("t".into(), 0, counters(20))],
                mailbox_sent: vec![10, 0],
                mailbox_received: vec![7, 0],
                committed: vec![CommittedOffset {
                    group: "g \"quoted\"\\back\nline".into(),
                    topic: "t".into(),
                    partition: 0,
                    offset: 95,
                }],
                ..Default::default()
            },
            ShardSnapshot {
                shard: 0,
                connections_open: 1,
                produce_records: 12,
                requests: vec![("Produce".into(), hist(&[100, 2_000, 3_000]))],
                fsync: hist(&[1_500]),
                commit_round: hist(&[2_000, 3_000]),
                durable_wait: hist(&[5_000]),
                partitions: vec![part("t", 0, 100)],
                partition_counters: vec![("t".into(), 0, counters(100))],
                mailbox_sent: vec![0, 4],
                mailbox_received: vec![0, 9],
                io: IoTotals {
                    reads: 1,
                    read_bytes: 4096,
                    writes: 2,
                    written_bytes: 8192,
                },
                cache_hits: 3,
                cache_misses: 1,
                committed: vec![CommittedOffset {
                    group: "g2".into(),
                    topic: "gone".into(),
                    partition: 0,
                    offset: 5,
                }],
                ..Default::default()
            },
        ]
    }

    fn info() -> ProcessInfo {
        ProcessInfo {
            version: "0.1.0",
            ready: true,
            collect: true,
            memory: MemoryStats {
                resident_bytes: Some(50 << 20),
                heap_allocated_bytes: Some(20 << 20),
                heap_free_bytes: None,
            },
        }
    }

    fn parse(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("parses as Prometheus text")
    }

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')
                .map(str::to_string)
        })
    }

    #[test]
    fn renders_every_family_once_with_help_and_type_first() {
        let text = render(&info(), &shards());
        let mut seen = std::collections::HashSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(seen.insert(name.clone()), "family {name} twice");
                current = name;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(rest.starts_with(&format!("{current} ")), "{line}");
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| *b == current))
                    .unwrap_or(name);
                assert_eq!(base, current, "sample outside its family: {line}");
            }
        }
        let scrape = parse(&text);
        assert!(scrape.samples.len() > 50);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn values_merge_across_shards() {
        let text = render(&info(), &shards());
        // Shards in id order.
        let first = text
            .find("odradek_connections_open{shard=\"0\"} 1")
            .unwrap();
        assert!(
            first
                < text
                    .find("odradek_connections_open{shard=\"1\"} 2")
                    .unwrap()
        );
        // Partition counters summed over shards.
        assert_eq!(
            value(
                &text,
                "odradek_partition_produce_bytes_total{topic=\"t\",partition=\"0\"}"
            ),
            Some("120".into())
        );
        // Lag: hw of t-0 (owned by shard 0) minus the commit held on shard 1; escaped group id.
        assert_eq!(
            value(
                &text,
                "odradek_consumer_group_lag{group=\"g \\\"quoted\\\"\\\\back\\nline\",topic=\"t\",partition=\"0\"}"
            ),
            Some("5".into())
        );
        // No lag for a partition nobody owns, but the commit is reported.
        assert!(!text.contains("odradek_consumer_group_lag{group=\"g2\""));
        assert!(text.contains("odradek_consumer_group_committed_offset{group=\"g2\",topic=\"gone\",partition=\"0\"} 5"));
        // Mailbox: shard 1 sent 10 to shard 0, which took 9; shard 0 sent 4 to 1, which took 0
        // (its received[0] is 7: read a moment apart, so clamped at 0).
        assert_eq!(
            value(
                &text,
                "odradek_mailbox_queue_length{shard=\"0\",from=\"1\"}"
            ),
            Some("1".into())
        );
        assert_eq!(
            value(
                &text,
                "odradek_mailbox_queue_length{shard=\"1\",from=\"0\"}"
            ),
            Some("0".into())
        );
        assert_eq!(
            value(&text, "odradek_batch_cache_hit_ratio{shard=\"0\"}"),
            Some("0.75".into())
        );
        assert_eq!(
            value(&text, "odradek_under_replicated_partitions{shard=\"1\"}"),
            Some("0".into())
        );
        assert_eq!(
            value(
                &text,
                "odradek_producer_ids{shard=\"1\",topic=\"t\",partition=\"1\"}"
            ),
            Some("3".into())
        );
    }

    #[test]
    fn histograms_are_cumulative_and_end_at_count() {
        let text = render(&info(), &shards());
        let scrape = parse(&text);
        let produce = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "odradek_request_duration_seconds"
                    && s.labels.get("api") == Some("Produce")
            })
            .expect("Produce latency");
        let prometheus_parse::Value::Histogram(buckets) = &produce.value else {
            panic!("not a histogram: {:?}", produce.value);
        };
        let le_1ms = buckets.iter().find(|b| b.less_than == 0.001).unwrap();
        assert_eq!(le_1ms.count, 1.0);
        let le_5ms = buckets.iter().find(|b| b.less_than == 0.005).unwrap();
        assert_eq!(le_5ms.count, 3.0);
        assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
        let base = "odradek_request_duration_seconds";
        let labels = "{shard=\"0\",api=\"Produce\"}";
        assert_eq!(
            value(&text, &format!("{base}_count{labels}")),
            Some("3".into())
        );
        assert_eq!(
            value(&text, &format!("{base}_sum{labels}")),
            Some("0.0051".into())
        );
        assert_eq!(
            value(
                &text,
                &format!("{base}_bucket{{shard=\"0\",api=\"Produce\",le=\"+Inf\"}}")
            ),
            Some("3".into())
        );
        // The group commit's rounds and the produce waits for them, per shard.
        let round = "odradek_group_commit_round_duration_seconds";
        let wait = "odradek_produce_durable_wait_seconds";
        for (series, want) in [
            (format!("{round}_count{{shard=\"0\"}}"), "2"),
            (format!("{round}_sum{{shard=\"0\"}}"), "0.005"),
            (format!("{wait}_count{{shard=\"0\"}}"), "1"),
            (format!("{wait}_count{{shard=\"1\"}}"), "0"),
        ] {
            assert_eq!(value(&text, &series).as_deref(), Some(want), "{series}");
        }
    }

    #[test]
    fn no_shards_still_renders_the_process_families() {
        let text = render(
            &ProcessInfo {
                ready: false,
                ..info()
            },
            &[],
        );
        parse(&text);
        assert!(text.contains("odradek_up 1\n"));
        assert!(text.contains("odradek_ready 0\n"));
        assert!(!text.contains("shard="));
    }

    #[test]
    fn memory_figures_render_when_known_and_are_left_out_when_not() {
        let text = render(&info(), &[]);
        parse(&text);
        assert_eq!(
            value(&text, "process_resident_memory_bytes"),
            Some((50u64 << 20).to_string())
        );
        assert_eq!(
            value(&text, "odradek_heap_allocated_bytes"),
            Some((20u64 << 20).to_string())
        );
        assert!(!text.contains("odradek_heap_free_bytes"));
    }
}
