//! `odradek-bench soak`: a bounded, fixed-rate mixed run that looks for drift and leaks, not for
//! peak figures.
//!
//! The run creates two topics with its own configs and drives them for `--duration-s`:
//! - *plain* (`cleanup.policy=delete`, small `segment.bytes`, small `retention.bytes` and
//!   `retention.ms`): segments roll and retention deletes them all through the run;
//! - *compacted* (`cleanup.policy=compact`, keys over `--keys`, eager cleaner settings): the
//!   cleaner rewrites closed segments all through the run.
//!
//! One open-loop producer per topic and bench core writes at the fixed rates
//! ([`crate::client::producer`], the same producer every other subcommand uses). `--members`
//! classic group members ([`crate::client::group`], eager "range" assignor) subscribe to both
//! topics, fetch at the tail, measure end-to-end latency from the payload's intended send time,
//! commit their positions every `--commit-interval-ms`, and, if `--churn-every-s` is set, the
//! last member leaves the group and rejoins now and then.
//!
//! Every second each bench core ships its counters and per-second HdrHistograms (the
//! [`crate::stats::CoreProbe`] machinery of `run`); the main thread folds them into one
//! [`SoakRow`] per `--interval-s` with the broker's RSS, open FDs, threads and CPU (from
//! `/proc/<pid>`, the pid from `--broker-pid` or found from the listening socket), the data
//! directory's size (`--broker-data-dir`), the plain topic's log start/end offsets and the load
//! average. At the end:
//! - the drift verdict ([`drift_verdict`], a pure function of the rows): the first and last
//!   thirds of the post-warm-up rows compared (throughput, p99, RSS, FDs) against limits;
//! - the plain topic's accounting: every acknowledged record consumed by some member, or, if a
//!   member fell behind retention, counted as expired unread (a failure too: retention is sized
//!   so a keeping-up consumer never loses);
//! - the compacted topic's check: a final read from the earliest offset must hold, for every key
//!   the members read, exactly the latest offset they read for it, and fewer records than were
//!   acknowledged (the cleaner did run).
//!
//! Cores share only atomics ([`Shared`]) and send their ticks through a bounded channel; results
//! travel back as plain data when an executor ends.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use odradek::protocol::api::ApiKey;
use odradek::protocol::record_batch::split_batches;
use odradek::protocol::{
    CreatableTopic, CreatableTopicConfig, CreateTopicsRequest, ErrorCode, FetchPartition,
    FetchRequest, FetchTopic, ResponseBody,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::batch::{for_each_record, read_payload_header, Compression};
use crate::client::group::{GroupError, GroupMember, MemberTimeouts};
use crate::client::producer::{PayloadPool, Producer, ProducerSpec};
use crate::client::{ensure_topic, list_offsets, ClientError, Connection, TopicLayout};
use crate::report::{self, Line, Panel, ReportError};
use crate::run::{self, fmt_int, RunError};
use crate::stats::{reconcile, Clock, CoreProbe, Counters, Ranges, Reconciliation};
use crate::workload::{Cores, SpecError};

/// Run-clock time at which the producers start (executors and connections are up by then).
const LOAD_START_US: u64 = 200_000;

/// Ticks waiting for the main thread; the cores block (briefly) rather than drop one.
const TICK_QUEUE_MAX: usize = 256;

/// Largest key space: the members keep the latest offset of every key they read.
const KEYS_MAX: u64 = 1_000_000;

const PLAIN: usize = 0;
const COMPACT: usize = 1;

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct SoakSpec {
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Bench cores: CPU list to pin to ("1-1"), or a count (unpinned).
    #[arg(long, default_value = "1")]
    pub cores: String,
    /// Seconds of load (producers stop then; the members drain and the run ends).
    #[arg(long, default_value_t = 1800.0)]
    pub duration_s: f64,
    /// Seconds per row (per-interval throughput, latency histogram and broker sample).
    #[arg(long, default_value_t = 10)]
    pub interval_s: u64,
    /// Seconds per window of the summary table (the rows folded together).
    #[arg(long, default_value_t = 300)]
    pub window_s: u64,
    /// Seconds at the start left out of the drift verdict (caches and pools filling up).
    #[arg(long, default_value_t = 60.0)]
    pub warmup_s: f64,
    /// Records/s written to the plain (retention) topic, all producers together (open loop).
    #[arg(long, default_value_t = 20_000.0)]
    pub plain_rate: f64,
    /// Records/s written to the compacted topic.
    #[arg(long, default_value_t = 2_000.0)]
    pub compact_rate: f64,
    /// Value size of each record in bytes (at least the 24-byte payload header).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    #[arg(long, default_value_t = 8)]
    pub plain_partitions: usize,
    #[arg(long, default_value_t = 4)]
    pub compact_partitions: usize,
    /// Key space of the compacted topic.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Plain topic `segment.bytes`.
    #[arg(long, default_value_t = 1 << 20)]
    pub segment_bytes: u64,
    /// Plain topic `retention.bytes` (per partition). Size it so that a member that keeps up
    /// never loses a record: several seconds of a partition's data (a rebalance pauses reads
    /// and restarts them from the last commit).
    #[arg(long, default_value_t = 32 << 20)]
    pub retention_bytes: u64,
    /// Plain topic `retention.ms`.
    #[arg(long, default_value_t = 60_000)]
    pub retention_ms: u64,
    /// Compacted topic `segment.bytes`.
    #[arg(long, default_value_t = 1 << 20)]
    pub compact_segment_bytes: u64,
    /// Compacted topic `segment.ms` (rolls a segment at low rates too, so it can be cleaned).
    #[arg(long, default_value_t = 10_000)]
    pub compact_segment_ms: u64,
    /// Compacted topic `min.cleanable.dirty.ratio`.
    #[arg(long, default_value_t = 0.01)]
    pub min_cleanable_dirty_ratio: f64,
    /// Group members (each subscribes to both topics).
    #[arg(long, default_value_t = 2)]
    pub members: usize,
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_interval_ms: u64,
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: i32,
    #[arg(long, default_value_t = 30_000)]
    pub rebalance_timeout_ms: i32,
    /// auto.commit.interval.ms (positions are also committed before every rejoin and leave).
    #[arg(long, default_value_t = 2000)]
    pub commit_interval_ms: u64,
    #[arg(long, default_value_t = 100)]
    pub fetch_max_wait_ms: i32,
    /// The last member leaves the group this often and rejoins (0: never).
    #[arg(long, default_value_t = 120.0)]
    pub churn_every_s: f64,
    /// Seconds the churning member stays out of the group.
    #[arg(long, default_value_t = 3.0)]
    pub churn_pause_s: f64,
    /// Seconds the members may take to drain after the producers stop.
    #[arg(long, default_value_t = 60.0)]
    pub drain_timeout_s: f64,
    /// The broker's pid for RSS/FD/CPU samples (default: the process listening on the
    /// bootstrap port, when it is on this machine).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// The broker's data directory: its size and file count are sampled with each row.
    #[arg(long)]
    pub broker_data_dir: Option<PathBuf>,
    /// The broker's metrics address (`metrics.listen`, host:port): its heap figures and batch
    /// cache bytes are scraped with each row, to tell a leak (allocated bytes grow) from memory
    /// the allocator keeps (resident set grows, allocated bytes do not).
    #[arg(long)]
    pub broker_metrics: Option<String>,
    /// Stops the broker (SIGSTOP, then SIGCONT) for `--broker-pause-ms` this often (0: never):
    /// a stall on demand, so the run shows what the broker keeps after the burst of requests
    /// that piles up behind one. Needs the broker's pid.
    #[arg(long, default_value_t = 0.0)]
    pub broker_pause_every_s: f64,
    #[arg(long, default_value_t = 2000)]
    pub broker_pause_ms: u64,
    /// Topic names are `<prefix>-plain` and `<prefix>-compact` (default `soak-<ms>`).
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// Group id (default `odradek-bench-soak-<ms>`).
    #[arg(long)]
    pub group: Option<String>,
    #[command(flatten)]
    pub limits: DriftLimits,
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// No per-interval progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// What counts as drift between the first and the last third of the measured rows.
#[derive(Debug, Clone, Copy, clap::Args, Serialize, Deserialize)]
pub struct DriftLimits {
    /// Largest change of mean produced and consumed records/s (fraction of the first third).
    #[arg(long, default_value_t = 0.10)]
    pub max_throughput_change: f64,
    /// Largest ratio of the last third's median per-interval p99 to the first third's...
    #[arg(long, default_value_t = 2.0)]
    pub max_p99_ratio: f64,
    /// ...unless it rose by less than this many ms (sub-millisecond p99s double on noise).
    #[arg(long, default_value_t = 5.0)]
    pub p99_floor_ms: f64,
    /// Largest growth of the broker's median RSS, MiB.
    #[arg(long, default_value_t = 32.0)]
    pub max_rss_growth_mib: f64,
    /// Largest growth of the broker's median allocated heap, MiB (a leak grows it; memory the
    /// allocator keeps after a burst grows only RSS). Judged with `--broker-metrics`.
    #[arg(long, default_value_t = 16.0)]
    #[serde(default = "default_max_heap_growth_mib")]
    pub max_heap_growth_mib: f64,
    /// Largest growth of the broker's median open FD count.
    #[arg(long, default_value_t = 16.0)]
    pub max_fd_growth: f64,
}

impl Default for DriftLimits {
    fn default() -> Self {
        DriftLimits {
            max_throughput_change: 0.10,
            max_p99_ratio: 2.0,
            p99_floor_ms: 5.0,
            max_rss_growth_mib: 32.0,
            max_heap_growth_mib: default_max_heap_growth_mib(),
            max_fd_growth: 16.0,
        }
    }
}

fn default_max_heap_growth_mib() -> f64 {
    16.0
}

#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error("{0}")]
    Spec(String),
    #[error(transparent)]
    Cores(#[from] SpecError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("setup: {0}")]
    Setup(#[from] ClientError),
    #[error("creating topic {topic}: {code}")]
    Create { topic: String, code: ErrorCode },
    #[error(transparent)]
    Report(#[from] ReportError),
}

impl SoakSpec {
    fn check(&self) -> Result<(), SoakError> {
        let bad = |s: String| Err(SoakError::Spec(s));
        if self.record_size < crate::client::batch::PAYLOAD_HEADER_LEN {
            return bad(format!(
                "--record-size {} is below the 24-byte payload header",
                self.record_size
            ));
        }
        if self.members == 0 || self.plain_partitions == 0 || self.compact_partitions == 0 {
            return bad("--members and the partition counts must be at least 1".into());
        }
        if !(self.plain_rate > 0.0 && self.compact_rate > 0.0) {
            return bad("--plain-rate and --compact-rate must be above 0".into());
        }
        if self.keys == 0 || self.keys > KEYS_MAX {
            return bad(format!("--keys must be between 1 and {KEYS_MAX}"));
        }
        let every = self.broker_pause_every_s;
        if every.is_nan()
            || every < 0.0
            || (every > 0.0 && self.broker_pause_ms as f64 >= every * 1e3)
        {
            return bad("--broker-pause-ms must be shorter than --broker-pause-every-s".into());
        }
        if self.interval_s == 0 || self.window_s == 0 {
            return bad("--interval-s and --window-s must be at least 1".into());
        }
        // The verdict compares thirds of the post-warm-up rows: it needs three at least.
        if self.duration_s - self.warmup_s.max(0.0) < 3.0 * self.interval_s as f64 {
            return bad(format!(
                "--duration-s {} leaves fewer than three {} s intervals after the {} s warm-up",
                self.duration_s, self.interval_s, self.warmup_s
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Rows and the drift verdict (pure).

/// One `--interval-s` of the run: all bench cores together, plus the broker's sample taken at
/// its end. Rates are per second over the interval; latency in µs from the interval's own
/// histograms (both topics together).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SoakRow {
    /// End of the interval, run-clock seconds.
    pub t_s: f64,
    pub plain_produced_per_s: f64,
    pub compact_produced_per_s: f64,
    pub produced_per_s: f64,
    pub produced_mb_per_s: f64,
    /// First reads only (a record read again after a rebalance is not counted twice).
    pub plain_consumed_per_s: f64,
    pub compact_consumed_per_s: f64,
    pub consumed_per_s: f64,
    pub produce_us_p50: u64,
    pub produce_us_p99: u64,
    pub produce_us_max: u64,
    pub e2e_us_p50: u64,
    pub e2e_us_p99: u64,
    pub e2e_us_max: u64,
    pub errors: u64,
    pub broker_rss_mib: Option<f64>,
    /// From the broker's /metrics: bytes its allocator has handed out, free bytes it keeps,
    /// bytes in the batch cache (all shards).
    pub broker_heap_allocated_mib: Option<f64>,
    pub broker_heap_free_mib: Option<f64>,
    pub broker_cache_mib: Option<f64>,
    pub broker_fds: Option<u64>,
    pub broker_threads: Option<u64>,
    /// Broker CPU time over the interval, percent of one core.
    pub broker_cpu_percent: Option<f64>,
    pub data_dir_mib: Option<f64>,
    pub data_dir_files: Option<u64>,
    /// Sums over the plain topic's partitions (retention moves the start up).
    pub plain_log_start: Option<i64>,
    pub plain_log_end: Option<i64>,
    pub load_1m: f64,
    /// Assignments the members received so far (each rebalance adds one per member).
    pub assignments: u64,
}

/// Figures of one third of the measured rows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ThirdStats {
    pub from_s: f64,
    pub to_s: f64,
    pub rows: usize,
    pub produced_per_s: f64,
    pub consumed_per_s: f64,
    /// Medians of the per-interval p99s (one noisy interval does not decide).
    pub produce_p99_ms: f64,
    pub e2e_p99_ms: f64,
    pub rss_mib: Option<f64>,
    pub heap_mib: Option<f64>,
    pub fds: Option<f64>,
}

/// The drift verdict: first third against last third of the rows after the warm-up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    pub rows_considered: usize,
    pub first: ThirdStats,
    pub last: ThirdStats,
    /// last / first - 1.
    pub produced_change: f64,
    pub consumed_change: f64,
    pub produce_p99_ratio: f64,
    pub e2e_p99_ratio: f64,
    pub rss_growth_mib: Option<f64>,
    pub heap_growth_mib: Option<f64>,
    /// Least-squares slope of RSS over the measured rows (reported, not judged).
    pub rss_slope_mib_per_hour: Option<f64>,
    pub fd_growth: Option<f64>,
    pub throughput_ok: bool,
    pub p99_ok: bool,
    /// None when the broker could not be sampled.
    pub rss_ok: Option<bool>,
    pub heap_ok: Option<bool>,
    pub fds_ok: Option<bool>,
    pub ok: bool,
    pub problems: Vec<String>,
}

/// Growth from the first third's `a` to the last third's `b` against `limit`: the growth and
/// whether it is within the limit (both `None` when either figure is missing); a problem line
/// (`say(growth, a, b, limit)`) when it is not.
fn judge_growth(
    a: Option<f64>,
    b: Option<f64>,
    limit: f64,
    say: impl Fn(f64, f64, f64, f64) -> String,
    problems: &mut Vec<String>,
) -> (Option<f64>, Option<bool>) {
    let (Some(a), Some(b)) = (a, b) else {
        return (None, None);
    };
    let g = b - a;
    let ok = g <= limit;
    if !ok {
        problems.push(say(g, a, b, limit));
    }
    (Some(g), Some(ok))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

fn third(rows: &[SoakRow], interval_s: f64) -> ThirdStats {
    ThirdStats {
        from_s: rows.first().map_or(0.0, |r| r.t_s - interval_s),
        to_s: rows.last().map_or(0.0, |r| r.t_s),
        rows: rows.len(),
        produced_per_s: mean(rows.iter().map(|r| r.produced_per_s)),
        consumed_per_s: mean(rows.iter().map(|r| r.consumed_per_s)),
        produce_p99_ms: median(rows.iter().map(|r| r.produce_us_p99 as f64 / 1e3).collect())
            .unwrap_or(0.0),
        e2e_p99_ms: median(rows.iter().map(|r| r.e2e_us_p99 as f64 / 1e3).collect()).unwrap_or(0.0),
        rss_mib: median(rows.iter().filter_map(|r| r.broker_rss_mib).collect()),
        heap_mib: median(
            rows.iter()
                .filter_map(|r| r.broker_heap_allocated_mib)
                .collect(),
        ),
        fds: median(
            rows.iter()
                .filter_map(|r| r.broker_fds)
                .map(|f| f as f64)
                .collect(),
        ),
    }
}

fn change(first: f64, last: f64) -> f64 {
    if first > 0.0 {
        last / first - 1.0
    } else if last > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

fn slope_per_hour(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    Some(sxy / sxx * 3600.0)
}

/// Compares the first and the last third of the rows that end after `warmup_s`. `interval_s`
/// is the rows' length (for the thirds' bounds).
pub fn drift_verdict(
    rows: &[SoakRow],
    warmup_s: f64,
    interval_s: f64,
    limits: &DriftLimits,
) -> Verdict {
    let measured: Vec<SoakRow> = rows
        .iter()
        .filter(|r| r.t_s - interval_s >= warmup_s - 1e-9)
        .cloned()
        .collect();
    let mut v = Verdict {
        rows_considered: measured.len(),
        ..Verdict::default()
    };
    if measured.len() < 3 {
        v.problems.push(format!(
            "only {} interval(s) after the warm-up: too few to judge drift",
            measured.len()
        ));
        return v;
    }
    let k = measured.len() / 3;
    let first = third(&measured[..k], interval_s);
    let last = third(&measured[measured.len() - k..], interval_s);
    v.produced_change = change(first.produced_per_s, last.produced_per_s);
    v.consumed_change = change(first.consumed_per_s, last.consumed_per_s);
    let lim = limits;
    v.throughput_ok = first.produced_per_s > 0.0
        && v.produced_change.abs() <= lim.max_throughput_change
        && v.consumed_change.abs() <= lim.max_throughput_change;
    if first.produced_per_s <= 0.0 {
        v.problems
            .push("nothing was produced in the first third".into());
    }
    for (what, c) in [
        ("produced", v.produced_change),
        ("consumed", v.consumed_change),
    ] {
        if c.abs() > lim.max_throughput_change {
            v.problems.push(format!(
                "{what} records/s changed by {:+.1}% (limit ±{:.0}%)",
                c * 100.0,
                lim.max_throughput_change * 100.0
            ));
        }
    }
    let ratio = |a: f64, b: f64| if a > 0.0 { b / a } else { 1.0 };
    v.produce_p99_ratio = ratio(first.produce_p99_ms, last.produce_p99_ms);
    v.e2e_p99_ratio = ratio(first.e2e_p99_ms, last.e2e_p99_ms);
    v.p99_ok = true;
    for (what, a, b) in [
        ("produce", first.produce_p99_ms, last.produce_p99_ms),
        ("end-to-end", first.e2e_p99_ms, last.e2e_p99_ms),
    ] {
        let allowed = (a * lim.max_p99_ratio).max(a + lim.p99_floor_ms);
        if b > allowed {
            v.p99_ok = false;
            v.problems.push(format!(
                "{what} p99 rose from {a:.2} ms to {b:.2} ms (allowed up to {allowed:.2} ms)"
            ));
        }
    }
    (v.rss_growth_mib, v.rss_ok) = judge_growth(
        first.rss_mib,
        last.rss_mib,
        lim.max_rss_growth_mib,
        |g, a, b, l| format!("broker RSS grew by {g:.1} MiB ({a:.1} -> {b:.1}; limit {l:.0} MiB)"),
        &mut v.problems,
    );
    (v.heap_growth_mib, v.heap_ok) = judge_growth(
        first.heap_mib,
        last.heap_mib,
        lim.max_heap_growth_mib,
        |g, a, b, l| {
            format!("broker allocated heap grew by {g:.1} MiB ({a:.1} -> {b:.1}; limit {l:.0} MiB)")
        },
        &mut v.problems,
    );
    let rss: Vec<(f64, f64)> = measured
        .iter()
        .filter_map(|r| r.broker_rss_mib.map(|m| (r.t_s, m)))
        .collect();
    v.rss_slope_mib_per_hour = slope_per_hour(&rss);
    (v.fd_growth, v.fds_ok) = judge_growth(
        first.fds,
        last.fds,
        lim.max_fd_growth,
        |g, a, b, l| format!("broker open FDs grew by {g:.0} ({a:.0} -> {b:.0}; limit {l:.0})"),
        &mut v.problems,
    );
    v.first = first;
    v.last = last;
    v.ok = v.throughput_ok
        && v.p99_ok
        && v.rss_ok.unwrap_or(true)
        && v.heap_ok.unwrap_or(true)
        && v.fds_ok.unwrap_or(true)
        && v.problems.is_empty();
    v
}

// ---------------------------------------------------------------------------------------------
// Broker and machine samples.

/// What `/proc/<pid>` says about the broker.
#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    rss_kib: u64,
    threads: u64,
    fds: u64,
    /// utime + stime, clock ticks.
    cpu_ticks: u64,
}

fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces and parentheses): state is field 3,
    // utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcSample {
        rss_kib: field("VmRSS:")?,
        threads: field("Threads:").unwrap_or(0),
        fds,
        cpu_ticks: utime + stime,
    })
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Inodes of the sockets listening on `port` (IPv4 and IPv6), from /proc/net/tcp{,6}.
fn listening_inodes(port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let c: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(st), Some(inode)) = (c.get(1), c.get(3), c.get(9)) else {
                continue;
            };
            let p = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if *st == "0A" && p == Some(port) {
                if let Ok(i) = inode.parse() {
                    out.push(i);
                }
            }
        }
    }
    out
}

/// The process holding a socket that listens on `port` on this machine (not this process).
pub fn find_listener_pid(port: u16) -> Option<u32> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if wanted.iter().any(|w| target.as_os_str() == w.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// Bytes and files under `dir` (a broker data directory: topic-partition folders of segments).
fn dir_usage(dir: &Path) -> Option<(u64, u64)> {
    fn walk(d: &Path, depth: u32, acc: &mut (u64, u64)) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                if depth < 4 {
                    walk(&e.path(), depth + 1, acc);
                }
            } else {
                acc.0 += m.len();
                acc.1 += 1;
            }
        }
    }
    if !dir.is_dir() {
        return None;
    }
    let mut acc = (0, 0);
    walk(dir, 0, &mut acc);
    Some(acc)
}

/// Stops and continues the broker on a schedule (`--broker-pause-every-s`). Continues it when
/// dropped, so a run that ends or fails mid-pause never leaves the broker stopped.
struct BrokerPauser {
    pid: i32,
    every: Duration,
    length: Duration,
    next: Instant,
    paused_at: Option<Instant>,
    pauses: u64,
}

impl BrokerPauser {
    fn new(pid: Option<u32>, every_s: f64, length_ms: u64) -> Option<BrokerPauser> {
        if every_s <= 0.0 {
            return None;
        }
        let every = Duration::from_secs_f64(every_s);
        Some(BrokerPauser {
            pid: i32::try_from(pid?).ok()?,
            every,
            length: Duration::from_millis(length_ms),
            next: Instant::now() + every,
            paused_at: None,
            pauses: 0,
        })
    }

    /// Called often (every ≤ 50 ms): starts or ends a pause when it is time.
    fn step(&mut self, load_running: bool) {
        let now = Instant::now();
        match self.paused_at {
            Some(at) if now >= at + self.length => self.resume(),
            None if load_running && now >= self.next => {
                if self.signal(libc::SIGSTOP) {
                    self.paused_at = Some(now);
                    self.pauses += 1;
                    println!("broker paused (SIGSTOP) for {} ms", self.length.as_millis());
                }
                self.next = now + self.every;
            }
            _ => {}
        }
    }

    fn resume(&mut self) {
        if self.paused_at.take().is_some() {
            self.signal(libc::SIGCONT);
        }
    }

    fn signal(&self, sig: i32) -> bool {
        // SAFETY: kill has no memory preconditions; the pid is the broker the user named.
        unsafe { libc::kill(self.pid, sig) == 0 }
    }
}

impl Drop for BrokerPauser {
    fn drop(&mut self) {
        self.resume();
    }
}

/// `GET /metrics` from `addr` (host:port) over a blocking socket with short timeouts: the
/// sampler runs once per row on the main thread, not on a load core.
fn scrape_metrics(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let timeout = Duration::from_secs(2);
    let to = addr.to_socket_addrs().ok()?.next()?;
    let mut stream = std::net::TcpStream::connect_timeout(&to, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The sum of every sample of `name` (any labels) in Prometheus text; `None` if there is none.
fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.as_bytes().first() {
            Some(b' ') => rest,
            Some(b'{') => rest.rsplit_once('}').map_or("", |(_, v)| v),
            _ => continue, // a longer name with this prefix
        };
        if let Ok(v) = value.trim().parse::<f64>() {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

fn load_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// Topics.

/// Creates `topic` with `configs`; an existing topic is an error (its configs are unknown).
async fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: usize,
    configs: &[(&str, String)],
) -> Result<(), SoakError> {
    let mut conn = Connection::connect(bootstrap)
        .await
        .map_err(ClientError::from)?;
    let resp = conn
        .call(CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: topic.to_string(),
                num_partitions: partitions as i32,
                replication_factor: -1,
                configs: configs
                    .iter()
                    .map(|(k, v)| CreatableTopicConfig {
                        name: k.to_string(),
                        value: Some(v.clone()),
                    })
                    .collect(),
                ..Default::default()
            }],
            timeout_ms: 30_000,
            ..Default::default()
        })
        .await
        .map_err(ClientError::from)?;
    let ResponseBody::CreateTopics(ct) = resp else {
        return Err(ClientError::Unexpected(ApiKey::CreateTopics).into());
    };
    for r in ct.topics {
        if r.error_code != 0 {
            return Err(SoakError::Create {
                topic: topic.to_string(),
                code: ErrorCode(r.error_code),
            });
        }
    }
    Ok(())
}

fn plain_configs(s: &SoakSpec) -> Vec<(&'static str, String)> {
    vec![
        ("cleanup.policy", "delete".into()),
        ("segment.bytes", s.segment_bytes.to_string()),
        ("retention.bytes", s.retention_bytes.to_string()),
        ("retention.ms", s.retention_ms.to_string()),
    ]
}

fn compact_configs(s: &SoakSpec) -> Vec<(&'static str, String)> {
    vec![
        ("cleanup.policy", "compact".into()),
        ("segment.bytes", s.compact_segment_bytes.to_string()),
        ("segment.ms", s.compact_segment_ms.to_string()),
        (
            "min.cleanable.dirty.ratio",
            s.min_cleanable_dirty_ratio.to_string(),
        ),
        ("min.compaction.lag.ms", "0".into()),
        ("delete.retention.ms", "1000".into()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Group members.

/// Flags and counters the cores share (atomics only).
struct Shared {
    stop: AtomicBool,
    producers_remaining: AtomicUsize,
    /// Generation member i holds an assignment of, -1 while it has none.
    generation: Vec<AtomicI64>,
    /// Member i has read its assignment to the high watermark after the producers finished.
    drained: Vec<AtomicBool>,
    assignments: AtomicU64,
    /// Per topic and partition: the offset after the highest record any member has read.
    /// Records below it are re-reads (after a rebalance, from the last commit): they are
    /// counted apart and their latency is not end-to-end latency.
    read_mark: [Vec<AtomicI64>; 2],
}

/// What one member's core gives it.
struct MemberCtx {
    spec: SoakSpec,
    group: String,
    layouts: [Rc<TopicLayout>; 2],
    earliest: [Vec<i64>; 2],
    shared: Arc<Shared>,
    clock: Clock,
    probes: [Rc<RefCell<CoreProbe>>; 2],
    load_end_us: u64,
}

#[derive(Debug, Default)]
struct MemberResult {
    /// Plain topic offsets read.
    consumed: Ranges,
    /// Plain topic offsets skipped because retention deleted them before they were read.
    expired: Ranges,
    /// Records read per topic (re-reads included) and re-reads.
    records: [u64; 2],
    re_read: [u64; 2],
    /// Compacted topic: the highest offset read per (partition, key).
    latest: HashMap<(i32, u64), i64>,
    assignments: u64,
    leaves: u64,
    fetch_errors: BTreeMap<String, u64>,
    group_errors: BTreeMap<String, u64>,
}

fn bump(m: &mut BTreeMap<String, u64>, what: String) {
    *m.entry(what).or_default() += 1;
}

/// Why a member leaves its fetch loop.
enum Exit {
    Rejoin,
    /// The churning member's turn to leave the group for a while.
    Leave,
    Stop,
}

fn timeouts(s: &SoakSpec) -> MemberTimeouts {
    MemberTimeouts {
        session_ms: s.session_timeout_ms,
        rebalance_ms: s.rebalance_timeout_ms,
    }
}

async fn connect_member(ctx: &MemberCtx, res: &mut MemberResult) -> Option<GroupMember> {
    loop {
        if ctx.shared.stop.load(Ordering::Relaxed) {
            return None;
        }
        match GroupMember::connect(&ctx.spec.bootstrap, &ctx.group, timeouts(&ctx.spec)).await {
            Ok(g) => return Some(g),
            Err(e) => bump(&mut res.group_errors, format!("find coordinator: {e}")),
        }
        glommio::timer::sleep(Duration::from_millis(200)).await;
    }
}

/// One group member: join, consume the assignment of both topics, rejoin on a rebalance; the
/// churning member also leaves now and then and joins again as a new member.
async fn run_member(i: usize, ctx: Rc<MemberCtx>) -> MemberResult {
    let mut res = MemberResult::default();
    let shared = ctx.shared.clone();
    let churner = ctx.spec.churn_every_s > 0.0 && i + 1 == ctx.spec.members;
    let churn_every_us = (ctx.spec.churn_every_s.max(0.0) * 1e6) as u64;
    let mut next_churn_us = LOAD_START_US + churn_every_us;
    let topics: Vec<String> = ctx.layouts.iter().map(|l| l.topic.clone()).collect();
    let counts: BTreeMap<String, i32> = ctx
        .layouts
        .iter()
        .map(|l| (l.topic.clone(), l.partitions() as i32))
        .collect();
    let mut fetchers: BTreeMap<String, Connection> = BTreeMap::new();
    let Some(mut gm) = connect_member(&ctx, &mut res).await else {
        return res;
    };
    while !shared.stop.load(Ordering::Relaxed) {
        shared.drained[i].store(false, Ordering::Release);
        shared.generation[i].store(-1, Ordering::Release);
        let joined = match gm.join_and_sync(&topics, &counts, || {}).await {
            Ok(j) => j,
            Err(e) => {
                // REBALANCE_IN_PROGRESS: the generation moved on before our SyncGroup, the
                // ordinary way to learn of a further rebalance.
                if e.code() != Some(ErrorCode::REBALANCE_IN_PROGRESS) {
                    bump(&mut res.group_errors, format!("join: {e}"));
                }
                if matches!(e, GroupError::Conn(_)) {
                    let (id, generation) = (gm.member_id.clone(), gm.generation);
                    match connect_member(&ctx, &mut res).await {
                        Some(g) => {
                            gm = g;
                            gm.member_id = id;
                            gm.generation = generation;
                        }
                        None => break,
                    }
                }
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        res.assignments += 1;
        shared.assignments.fetch_add(1, Ordering::Relaxed);
        shared.generation[i].store(joined.generation as i64, Ordering::Release);
        let exit = consume_assignment(
            &ctx,
            i,
            &mut gm,
            &joined.assignment,
            &mut fetchers,
            &mut res,
            churner.then_some(&mut next_churn_us),
        )
        .await;
        match exit {
            Exit::Rejoin => continue,
            Exit::Stop => break,
            Exit::Leave => {
                shared.generation[i].store(-1, Ordering::Release);
                shared.drained[i].store(false, Ordering::Release);
                if let Err(e) = gm.leave().await {
                    bump(&mut res.group_errors, format!("leave: {e}"));
                }
                res.leaves += 1;
                next_churn_us = ctx.clock.now_us() + churn_every_us;
                glommio::timer::sleep(Duration::from_secs_f64(ctx.spec.churn_pause_s.max(0.0)))
                    .await;
                // Back as a new member (a new member id), as a restarted consumer would be.
                match connect_member(&ctx, &mut res).await {
                    Some(g) => gm = g,
                    None => return res,
                }
            }
        }
    }
    // Best effort: the run is over, the group's fate no longer matters.
    if gm.generation >= 0 && !gm.member_id.is_empty() {
        let _ = gm.leave().await;
    }
    res
}

/// Commits `pos` topic by topic; the first error is returned.
async fn commit_all(
    ctx: &MemberCtx,
    gm: &mut GroupMember,
    pos: &BTreeMap<(usize, i32), i64>,
) -> Result<(), GroupError> {
    for (t, layout) in ctx.layouts.iter().enumerate() {
        let positions: Vec<(i32, i64)> = pos
            .iter()
            .filter(|((tt, _), _)| *tt == t)
            .map(|((_, p), o)| (*p, *o))
            .collect();
        gm.commit(&layout.topic, &positions).await?;
    }
    Ok(())
}

/// Fetches the assignment from the committed offsets (or the earliest), heartbeating and
/// committing on the intervals, until a rebalance (commit, then rejoin), the churner's turn to
/// leave, or the end of the run.
async fn consume_assignment(
    ctx: &MemberCtx,
    i: usize,
    gm: &mut GroupMember,
    assignment: &BTreeMap<String, Vec<i32>>,
    fetchers: &mut BTreeMap<String, Connection>,
    res: &mut MemberResult,
    mut churn_at: Option<&mut u64>,
) -> Exit {
    let shared = &ctx.shared;
    let mut pos: BTreeMap<(usize, i32), i64> = BTreeMap::new();
    for (t, layout) in ctx.layouts.iter().enumerate() {
        let parts = assignment.get(&layout.topic).cloned().unwrap_or_default();
        let committed = match gm.committed(&layout.topic, &parts).await {
            Ok(c) => c,
            Err(e) => {
                bump(&mut res.group_errors, format!("offset fetch: {e}"));
                glommio::timer::sleep(Duration::from_millis(100)).await;
                return Exit::Rejoin;
            }
        };
        for p in parts {
            let start = ctx.earliest[t].get(p as usize).copied().unwrap_or(0);
            let at = committed.get(&p).copied().flatten().unwrap_or(start);
            pos.insert((t, p), at);
        }
    }
    let mut hw: BTreeMap<(usize, i32), i64> = BTreeMap::new();
    let mut by_leader: BTreeMap<String, Vec<(usize, i32)>> = BTreeMap::new();
    for &(t, p) in pos.keys() {
        if let Some(l) = ctx.layouts[t].leaders.get(p as usize) {
            by_leader.entry(l.clone()).or_default().push((t, p));
        }
    }
    let hb_us = ctx.spec.heartbeat_interval_ms * 1000;
    let commit_us = ctx.spec.commit_interval_ms * 1000;
    let mut next_hb = ctx.clock.now_us() + hb_us;
    let mut next_commit = ctx.clock.now_us() + commit_us;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            if let Err(e) = commit_all(ctx, gm, &pos).await {
                bump(&mut res.group_errors, format!("final commit: {e}"));
            }
            return Exit::Stop;
        }
        let now = ctx.clock.now_us();
        let done_before = shared.producers_remaining.load(Ordering::Acquire) == 0;
        if let Some(at) = churn_at.as_deref_mut() {
            if !done_before && now >= *at && now < ctx.load_end_us {
                if let Err(e) = commit_all(ctx, gm, &pos).await {
                    bump(&mut res.group_errors, format!("commit before leaving: {e}"));
                }
                return Exit::Leave;
            }
        }
        let mut group_err = None;
        if now >= next_hb {
            next_hb = now + hb_us;
            if let Err(e) = gm.heartbeat().await {
                group_err = Some(("heartbeat", e));
            }
        }
        if group_err.is_none() && now >= next_commit {
            next_commit = now + commit_us;
            if let Err(e) = commit_all(ctx, gm, &pos).await {
                group_err = Some(("commit", e));
            }
        }
        if let Some((what, e)) = group_err {
            shared.drained[i].store(false, Ordering::Release);
            shared.generation[i].store(-1, Ordering::Release);
            match e.code() {
                Some(ErrorCode::REBALANCE_IN_PROGRESS) => {
                    // Eager revocation: commit what was read, then rejoin.
                    if let Err(e) = commit_all(ctx, gm, &pos).await {
                        bump(&mut res.group_errors, format!("commit before rejoin: {e}"));
                    }
                }
                Some(ErrorCode::ILLEGAL_GENERATION | ErrorCode::UNKNOWN_MEMBER_ID) => {
                    bump(&mut res.group_errors, format!("{what}: {e}"));
                    if e.code() == Some(ErrorCode::UNKNOWN_MEMBER_ID) {
                        gm.member_id.clear();
                    }
                }
                _ => {
                    bump(&mut res.group_errors, format!("{what}: {e}"));
                    if matches!(e, GroupError::Conn(_)) {
                        let (id, generation) = (gm.member_id.clone(), gm.generation);
                        match GroupMember::connect(
                            &ctx.spec.bootstrap,
                            &ctx.group,
                            timeouts(&ctx.spec),
                        )
                        .await
                        {
                            Ok(g) => {
                                *gm = g;
                                gm.member_id = id;
                                gm.generation = generation;
                            }
                            Err(e) => {
                                bump(&mut res.group_errors, format!("reconnect: {e}"));
                                glommio::timer::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                }
            }
            return Exit::Rejoin;
        }
        if pos.is_empty() {
            shared.drained[i].store(done_before, Ordering::Release);
            let wait = ctx.spec.fetch_max_wait_ms.max(1) as u64;
            glommio::timer::sleep(Duration::from_millis(wait)).await;
            continue;
        }
        let mut fetch_failed = false;
        for (leader, tps) in &by_leader {
            if !fetchers.contains_key(leader) {
                match Connection::connect(leader).await {
                    Ok(c) => {
                        fetchers.insert(leader.clone(), c);
                    }
                    Err(e) => {
                        bump(&mut res.fetch_errors, format!("fetch connect: {e}"));
                        fetch_failed = true;
                        continue;
                    }
                }
            }
            let Some(conn) = fetchers.get_mut(leader) else {
                continue;
            };
            let topics: Vec<FetchTopic> = (0..2)
                .filter_map(|t| {
                    let partitions: Vec<FetchPartition> = tps
                        .iter()
                        .filter(|(tt, _)| *tt == t)
                        .map(|&(_, p)| FetchPartition {
                            partition: p,
                            fetch_offset: pos.get(&(t, p)).copied().unwrap_or(0),
                            partition_max_bytes: 1 << 20,
                            ..Default::default()
                        })
                        .collect();
                    (!partitions.is_empty()).then(|| FetchTopic {
                        topic: ctx.layouts[t].topic.clone(),
                        partitions,
                    })
                })
                .collect();
            let req = FetchRequest {
                replica_id: -1,
                max_wait_ms: ctx.spec.fetch_max_wait_ms,
                min_bytes: 1,
                max_bytes: 8 << 20,
                isolation_level: 0,
                session_id: 0,
                session_epoch: -1,
                topics,
                ..Default::default()
            };
            let resp = match conn.call(req).await {
                Ok(ResponseBody::Fetch(r)) => r,
                Ok(_) => {
                    bump(&mut res.fetch_errors, "fetch: unexpected response".into());
                    fetchers.remove(leader);
                    fetch_failed = true;
                    continue;
                }
                Err(e) => {
                    bump(&mut res.fetch_errors, format!("fetch: {e}"));
                    fetchers.remove(leader);
                    fetch_failed = true;
                    continue;
                }
            };
            if resp.error_code != 0 {
                bump(
                    &mut res.fetch_errors,
                    format!("fetch: {}", ErrorCode(resp.error_code)),
                );
                fetch_failed = true;
                continue;
            }
            let now = ctx.clock.now_us();
            let unix_now = ctx.clock.unix_now_us();
            for tr in &resp.responses {
                let Some(t) = ctx.layouts.iter().position(|l| l.topic == tr.topic) else {
                    continue;
                };
                for pd in &tr.partitions {
                    let p = pd.partition_index;
                    let code = ErrorCode(pd.error_code);
                    if code == ErrorCode::OFFSET_OUT_OF_RANGE {
                        // Retention deleted what this member was about to read: skip to the
                        // log start and count what was skipped.
                        if !skip_to_log_start(ctx, t, p, &mut pos, res).await {
                            fetch_failed = true;
                        }
                        continue;
                    }
                    if code != ErrorCode::NONE {
                        bump(&mut res.fetch_errors, format!("fetch: {code}"));
                        fetch_failed = true;
                        continue;
                    }
                    hw.insert((t, p), pd.high_watermark);
                    let (Some(records), Some(from)) =
                        (pd.record_bytes(), pos.get(&(t, p)).copied())
                    else {
                        continue;
                    };
                    let Some(mark) = shared.read_mark[t].get(p as usize) else {
                        continue;
                    };
                    let seen = mark.load(Ordering::Acquire);
                    let (mut first, mut again, mut bytes) = (0u64, 0u64, 0u64);
                    let mut probe = ctx.probes[t].borrow_mut();
                    let consumed = &mut res.consumed;
                    let walked = for_each_record(&records, |r| {
                        if r.offset < from {
                            return; // a batch may start before the fetch offset
                        }
                        if t == PLAIN {
                            consumed.push(p, r.offset, r.offset + 1);
                        }
                        if r.offset < seen {
                            again += 1;
                            return;
                        }
                        first += 1;
                        let Some(v) = r.value else { return };
                        bytes += v.len() as u64;
                        if let Some(h) = read_payload_header(v) {
                            let send_run_us =
                                h.send_time_us.saturating_sub(ctx.clock.unix_start_us);
                            probe.e2e(send_run_us, unix_now.saturating_sub(h.send_time_us));
                        }
                    });
                    probe.consumed(now, first, bytes);
                    drop(probe);
                    res.records[t] += first + again;
                    res.re_read[t] += again;
                    match walked {
                        Ok(Some(next)) => {
                            mark.fetch_max(next, Ordering::AcqRel);
                            if let Some(o) = pos.get_mut(&(t, p)) {
                                *o = (*o).max(next);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            bump(&mut res.fetch_errors, format!("fetch: {e}"));
                            fetch_failed = true;
                        }
                    }
                    if t == COMPACT {
                        note_latest_keys(&records, p, from, &mut res.latest);
                    }
                }
            }
        }
        let drained = done_before
            && !fetch_failed
            && pos.iter().all(|(k, o)| hw.get(k).is_some_and(|h| *o >= *h));
        shared.drained[i].store(drained, Ordering::Release);
        if fetch_failed {
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Records, for each key of the compacted topic's records at or after `from`, the highest
/// offset read. The soak's compacted producer writes 8-byte big-endian keys, uncompressed.
fn note_latest_keys(
    records: &bytes::Bytes,
    p: i32,
    from: i64,
    latest: &mut HashMap<(i32, u64), i64>,
) {
    for batch in split_batches(records) {
        // A Fetch response may end in a partial batch: the split stops there.
        let Ok(batch) = batch else { break };
        let _ = odradek::protocol::records::for_each_record(&batch, |r| {
            if r.offset < from {
                return;
            }
            let Some(k) = r.key.and_then(|k| <[u8; 8]>::try_from(k).ok()) else {
                return;
            };
            let e = latest.entry((p, u64::from_be_bytes(k))).or_insert(r.offset);
            *e = (*e).max(r.offset);
        });
    }
}

/// After OFFSET_OUT_OF_RANGE: moves the position to the partition's log start, counting the
/// skipped plain-topic offsets as expired unread. False if the log start could not be read or
/// is not ahead of the position (then the fetch is retried).
async fn skip_to_log_start(
    ctx: &MemberCtx,
    t: usize,
    p: i32,
    pos: &mut BTreeMap<(usize, i32), i64>,
    res: &mut MemberResult,
) -> bool {
    let earliest = match list_offsets(&ctx.layouts[t], -2).await {
        Ok(v) => v,
        Err(e) => {
            bump(&mut res.fetch_errors, format!("list offsets: {e}"));
            return false;
        }
    };
    let (Some(&start), Some(at)) = (earliest.get(p as usize), pos.get_mut(&(t, p))) else {
        return false;
    };
    if start <= *at {
        bump(
            &mut res.fetch_errors,
            format!("fetch: OFFSET_OUT_OF_RANGE at {} (log start {start})", *at),
        );
        return false;
    }
    if t == PLAIN {
        res.expired.push(p, *at, start);
    }
    *at = start;
    true
}

// ---------------------------------------------------------------------------------------------
// Cores.

/// A bench core's counters for one second of the run clock.
enum CoreMsg {
    Tick {
        index: u64,
        counters: Box<[Counters; 2]>,
    },
    Done,
}

#[derive(Default)]
struct CoreOut {
    members: Vec<(usize, MemberResult)>,
    acked: [Ranges; 2],
    acked_records: [u64; 2],
    produce_errors: BTreeMap<String, u64>,
}

struct CoreArgs {
    core: usize,
    ncores: usize,
    spec: SoakSpec,
    group: String,
    layouts: [TopicLayout; 2],
    earliest: [Vec<i64>; 2],
    shared: Arc<Shared>,
    clock: Clock,
    tx: mpsc::SyncSender<CoreMsg>,
}

async fn core_main(a: CoreArgs) -> CoreOut {
    let mut out = CoreOut::default();
    let probes = [
        Rc::new(RefCell::new(CoreProbe::default())),
        Rc::new(RefCell::new(CoreProbe::default())),
    ];
    let clock = a.clock;
    let next_index = Rc::new(std::cell::Cell::new(0u64));
    {
        // Ticker: ship both probes' interval counters at every whole second of the run clock.
        let probes = probes.clone();
        let tx = a.tx.clone();
        let next_index = next_index.clone();
        glommio::spawn_local(async move {
            loop {
                let i = next_index.get();
                let due = (i + 1) * 1_000_000;
                let now = clock.now_us();
                if due > now {
                    glommio::timer::sleep(Duration::from_micros(due - now)).await;
                }
                let counters = Box::new([
                    std::mem::take(&mut probes[PLAIN].borrow_mut().interval),
                    std::mem::take(&mut probes[COMPACT].borrow_mut().interval),
                ]);
                next_index.set(i + 1);
                if tx.send(CoreMsg::Tick { index: i, counters }).is_err() {
                    return;
                }
            }
        })
        .detach();
    }
    let layouts = [Rc::new(a.layouts[0].clone()), Rc::new(a.layouts[1].clone())];
    let load_end_us = LOAD_START_US + (a.spec.duration_s * 1e6) as u64;
    let mut producers = Vec::new();
    for t in [PLAIN, COMPACT] {
        let rate = if t == PLAIN {
            a.spec.plain_rate
        } else {
            a.spec.compact_rate
        };
        let pspec = Rc::new(ProducerSpec {
            record_size: a.spec.record_size,
            keys: if t == COMPACT { a.spec.keys } else { 0 },
            acks: -1,
            // Uncompressed: the members read the compacted topic's keys without decompressing.
            compression: Compression::None,
            linger_us: 1000,
            batch_bytes: 64 << 10,
            max_in_flight: 5,
            max_request_bytes: 1 << 20,
            ready_batches_max: 64,
            idempotent: false,
            transaction: None,
            rate: Some(rate / a.ncores as f64),
            records: None,
            end_us: Some(load_end_us),
            start_us: LOAD_START_US,
        });
        let pool = Rc::new(PayloadPool::new(
            1.0,
            a.spec.record_size,
            (a.core * 2 + t) as u64 * 7919 + 17,
        ));
        let p = Producer::new(
            (a.core * 2 + t) as u32,
            pspec,
            layouts[t].clone(),
            probes[t].clone(),
            pool,
            clock,
        );
        let shared = a.shared.clone();
        producers.push(glommio::spawn_local(async move {
            let now = clock.now_us();
            if now < LOAD_START_US {
                glommio::timer::sleep(Duration::from_micros(LOAD_START_US - now)).await;
            }
            let r = p.run().await;
            shared.producers_remaining.fetch_sub(1, Ordering::AcqRel);
            r
        }));
    }
    let ctx = Rc::new(MemberCtx {
        spec: a.spec.clone(),
        group: a.group.clone(),
        layouts,
        earliest: a.earliest,
        shared: a.shared.clone(),
        clock,
        probes: probes.clone(),
        load_end_us,
    });
    let mut members = Vec::new();
    for i in (0..a.spec.members).filter(|i| i % a.ncores == a.core) {
        members.push((i, glommio::spawn_local(run_member(i, ctx.clone()))));
    }
    for (t, h) in producers.into_iter().enumerate() {
        let r = h.await;
        // Each topic's producers answer to their own probe.
        out.acked[t].merge(probes[t].borrow_mut().acked_offsets.take_ranges());
        out.acked_records[t] += r.acked;
    }
    for (i, h) in members {
        out.members.push((i, h.await));
    }
    for (t, probe) in probes.iter().enumerate() {
        let name = if t == PLAIN { "plain" } else { "compacted" };
        for (k, v) in std::mem::take(&mut probe.borrow_mut().errors_by_kind) {
            *out.produce_errors
                .entry(format!("{name}: {k}"))
                .or_default() += v;
        }
    }
    // The last, partial second.
    let counters = Box::new([
        std::mem::take(&mut probes[PLAIN].borrow_mut().interval),
        std::mem::take(&mut probes[COMPACT].borrow_mut().interval),
    ]);
    let _ = a.tx.send(CoreMsg::Tick {
        index: next_index.get(),
        counters,
    });
    let _ = a.tx.send(CoreMsg::Done);
    out
}

// ---------------------------------------------------------------------------------------------
// The final read of the compacted topic.

/// What the compacted topic holds at the end.
#[derive(Debug, Default)]
struct FinalRead {
    records: u64,
    latest: HashMap<(i32, u64), i64>,
}

/// Reads the whole compacted topic from its log start to its end (at most `deadline`).
async fn read_compacted(layout: &TopicLayout, deadline: Duration) -> Result<FinalRead, String> {
    let start = list_offsets(layout, -2).await.map_err(|e| e.to_string())?;
    let end = list_offsets(layout, -1).await.map_err(|e| e.to_string())?;
    let mut out = FinalRead::default();
    let began = Instant::now();
    let mut conns: BTreeMap<String, Connection> = BTreeMap::new();
    for p in 0..layout.partitions() {
        let (mut at, stop) = (start[p], end[p]);
        let leader = layout.leaders[p].clone();
        while at < stop {
            if began.elapsed() > deadline {
                return Err(format!(
                    "partition {p} not read to {stop} within {} s (at {at})",
                    deadline.as_secs()
                ));
            }
            if !conns.contains_key(&leader) {
                let c = Connection::connect(&leader)
                    .await
                    .map_err(|e| e.to_string())?;
                conns.insert(leader.clone(), c);
            }
            let Some(conn) = conns.get_mut(&leader) else {
                continue;
            };
            let resp = conn
                .call(FetchRequest {
                    replica_id: -1,
                    max_wait_ms: 100,
                    min_bytes: 1,
                    max_bytes: 8 << 20,
                    session_epoch: -1,
                    topics: vec![FetchTopic {
                        topic: layout.topic.clone(),
                        partitions: vec![FetchPartition {
                            partition: p as i32,
                            fetch_offset: at,
                            partition_max_bytes: 4 << 20,
                            ..Default::default()
                        }],
                    }],
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            let ResponseBody::Fetch(r) = resp else {
                return Err("fetch: unexpected response".into());
            };
            for pd in r.responses.iter().flat_map(|t| t.partitions.iter()) {
                if pd.error_code != 0 {
                    return Err(format!("fetch p{p}: {}", ErrorCode(pd.error_code)));
                }
                let Some(records) = pd.record_bytes() else {
                    continue;
                };
                let from = at;
                let mut n = 0u64;
                let next = for_each_record(&records, |r| {
                    if r.offset >= from {
                        n += 1;
                    }
                })
                .map_err(|e| e.to_string())?;
                out.records += n;
                note_latest_keys(&records, p as i32, from, &mut out.latest);
                if let Some(next) = next {
                    at = at.max(next);
                }
            }
        }
    }
    Ok(out)
}

/// The compacted topic's outcome.
#[derive(Debug, Default, Serialize)]
pub struct CompactionCheck {
    pub acknowledged: u64,
    /// Records in the topic at the end (read from the log start).
    pub records_at_end: u64,
    pub keys_read_live: usize,
    pub keys_at_end: usize,
    /// Keys whose newest offset at the end differs from the newest one the members read
    /// (compaction dropped the latest value, or kept an older one only).
    pub keys_latest_mismatch: usize,
    /// Up to 10 of them: (partition, key, read live, at end or -1).
    pub mismatch_examples: Vec<(i32, u64, i64, i64)>,
    /// Fewer records at the end than acknowledged: the cleaner ran.
    pub compaction_observed: bool,
    pub read_error: Option<String>,
    pub ok: bool,
}

fn compaction_check(
    acknowledged: u64,
    live: &HashMap<(i32, u64), i64>,
    fin: Result<FinalRead, String>,
) -> CompactionCheck {
    let mut c = CompactionCheck {
        acknowledged,
        keys_read_live: live.len(),
        ..Default::default()
    };
    let fin = match fin {
        Ok(f) => f,
        Err(e) => {
            c.read_error = Some(e);
            return c;
        }
    };
    c.records_at_end = fin.records;
    c.keys_at_end = fin.latest.len();
    let mut keys: Vec<&(i32, u64)> = live.keys().chain(fin.latest.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    for k in keys {
        let a = live.get(k).copied().unwrap_or(-1);
        let b = fin.latest.get(k).copied().unwrap_or(-1);
        if a != b {
            c.keys_latest_mismatch += 1;
            if c.mismatch_examples.len() < 10 {
                c.mismatch_examples.push((k.0, k.1, a, b));
            }
        }
    }
    c.compaction_observed = c.records_at_end < acknowledged;
    c.ok = c.keys_latest_mismatch == 0 && c.compaction_observed && c.keys_at_end > 0;
    c
}

/// The plain topic's outcome.
#[derive(Debug, Default, Serialize)]
pub struct PlainAccounting {
    /// Acknowledged against consumed-or-expired offsets.
    pub reconciliation: Reconciliation,
    /// Records retention deleted before a member read them (the members fell behind).
    pub expired_unread: u64,
    /// Records read again after a rebalance (from the last commit): at-least-once, expected.
    pub re_read: u64,
    /// Sum over partitions of the log start offset at the end (> 0: retention deleted data).
    pub log_start_at_end: i64,
    pub retention_observed: bool,
    pub ok: bool,
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Folds per-second counters into rows and windows.
struct Fold {
    plain: Counters,
    compact: Counters,
    seconds: u64,
}

impl Fold {
    fn new() -> Fold {
        Fold {
            plain: Counters::default(),
            compact: Counters::default(),
            seconds: 0,
        }
    }
    fn add(&mut self, c: &[Counters; 2]) {
        self.plain.add(&c[PLAIN]);
        self.compact.add(&c[COMPACT]);
        self.seconds += 1;
    }
    fn produce_hist(&self) -> Histogram<u64> {
        let mut h = self.plain.produce_latency_us.clone();
        let _ = h.add(&self.compact.produce_latency_us);
        h
    }
    fn e2e_hist(&self) -> Histogram<u64> {
        let mut h = self.plain.e2e_latency_us.clone();
        let _ = h.add(&self.compact.e2e_latency_us);
        h
    }
}

/// Figures of one `--window-s` window (the summary table).
#[derive(Debug, Clone, Serialize)]
pub struct WindowRow {
    pub from_s: f64,
    pub to_s: f64,
    pub produced_per_s: f64,
    pub consumed_per_s: f64,
    /// From the window's merged histograms.
    pub produce_us_p50: u64,
    pub produce_us_p99: u64,
    pub produce_us_max: u64,
    pub e2e_us_p50: u64,
    pub e2e_us_p99: u64,
    pub e2e_us_max: u64,
    pub broker_rss_mib_max: Option<f64>,
    pub broker_rss_mib_last: Option<f64>,
    pub broker_fds_max: Option<u64>,
    pub broker_fds_last: Option<u64>,
    pub broker_cpu_percent_mean: Option<f64>,
    pub data_dir_mib_last: Option<f64>,
    pub load_1m_mean: f64,
}

fn window_row(f: &Fold, rows: &[SoakRow], from_s: f64, to_s: f64) -> WindowRow {
    let secs = (f.seconds as f64).max(1.0);
    let (p, e) = (f.produce_hist(), f.e2e_hist());
    let rss: Vec<f64> = rows.iter().filter_map(|r| r.broker_rss_mib).collect();
    let fds: Vec<u64> = rows.iter().filter_map(|r| r.broker_fds).collect();
    let cpu: Vec<f64> = rows.iter().filter_map(|r| r.broker_cpu_percent).collect();
    WindowRow {
        from_s,
        to_s,
        produced_per_s: (f.plain.produced_records + f.compact.produced_records) as f64 / secs,
        consumed_per_s: (f.plain.consumed_records + f.compact.consumed_records) as f64 / secs,
        produce_us_p50: p.value_at_quantile(0.5),
        produce_us_p99: p.value_at_quantile(0.99),
        produce_us_max: p.max(),
        e2e_us_p50: e.value_at_quantile(0.5),
        e2e_us_p99: e.value_at_quantile(0.99),
        e2e_us_max: e.max(),
        broker_rss_mib_max: rss.iter().copied().reduce(f64::max),
        broker_rss_mib_last: rss.last().copied(),
        broker_fds_max: fds.iter().copied().max(),
        broker_fds_last: fds.last().copied(),
        broker_cpu_percent_mean: (!cpu.is_empty()).then(|| mean(cpu.iter().copied())),
        data_dir_mib_last: rows.iter().rev().find_map(|r| r.data_dir_mib),
        load_1m_mean: mean(rows.iter().map(|r| r.load_1m)),
    }
}

/// Samples the broker and the machine for a row ending now.
struct Sampler {
    pid: Option<u32>,
    metrics: Option<String>,
    data_dir: Option<PathBuf>,
    last_cpu: Option<(Instant, u64)>,
    ticks_per_s: f64,
    plain: TopicLayout,
}

impl Sampler {
    fn sample(&mut self, row: &mut SoakRow) {
        if let Some(s) = self.pid.and_then(proc_sample) {
            row.broker_rss_mib = Some(s.rss_kib as f64 / 1024.0);
            row.broker_fds = Some(s.fds);
            row.broker_threads = Some(s.threads);
            let now = Instant::now();
            if let Some((t0, c0)) = self.last_cpu {
                let dt = now.duration_since(t0).as_secs_f64();
                if dt > 0.0 {
                    row.broker_cpu_percent =
                        Some(s.cpu_ticks.saturating_sub(c0) as f64 / self.ticks_per_s / dt * 100.0);
                }
            }
            self.last_cpu = Some((now, s.cpu_ticks));
        }
        if let Some(text) = self.metrics.as_deref().and_then(scrape_metrics) {
            let mib = |name: &str| metric_sum(&text, name).map(|v| v / (1 << 20) as f64);
            row.broker_heap_allocated_mib = mib("odradek_heap_allocated_bytes");
            row.broker_heap_free_mib = mib("odradek_heap_free_bytes");
            row.broker_cache_mib = mib("odradek_batch_cache_used_bytes");
        }
        if let Some((bytes, files)) = self.data_dir.as_deref().and_then(dir_usage) {
            row.data_dir_mib = Some(bytes as f64 / (1 << 20) as f64);
            row.data_dir_files = Some(files);
        }
        let layout = self.plain.clone();
        let offsets = run::admin(move || async move {
            let s = list_offsets(&layout, -2).await?;
            let e = list_offsets(&layout, -1).await?;
            Ok::<_, ClientError>((s.iter().sum::<i64>(), e.iter().sum::<i64>()))
        });
        if let Ok(Ok((s, e))) = offsets {
            row.plain_log_start = Some(s);
            row.plain_log_end = Some(e);
        }
        row.load_1m = load_1m();
    }
}

fn row_of(f: &Fold, t_s: f64, record_size: usize) -> SoakRow {
    let secs = (f.seconds as f64).max(1.0);
    let (p, e) = (f.produce_hist(), f.e2e_hist());
    let pp = f.plain.produced_records as f64 / secs;
    let cp = f.compact.produced_records as f64 / secs;
    let pc = f.plain.consumed_records as f64 / secs;
    let cc = f.compact.consumed_records as f64 / secs;
    SoakRow {
        t_s,
        plain_produced_per_s: pp,
        compact_produced_per_s: cp,
        produced_per_s: pp + cp,
        produced_mb_per_s: (pp + cp) * record_size as f64 / 1e6,
        plain_consumed_per_s: pc,
        compact_consumed_per_s: cc,
        consumed_per_s: pc + cc,
        produce_us_p50: p.value_at_quantile(0.5),
        produce_us_p99: p.value_at_quantile(0.99),
        produce_us_max: p.max(),
        e2e_us_p50: e.value_at_quantile(0.5),
        e2e_us_p99: e.value_at_quantile(0.99),
        e2e_us_max: e.max(),
        errors: f.plain.errors + f.compact.errors,
        ..SoakRow::default()
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

fn progress_line(r: &SoakRow) -> String {
    format!(
        "[{:>6.0}s] produce {:>8} rec/s p99 {:>7.2} ms | consume {:>8} rec/s e2e p99 {:>7.2} ms | broker rss {} MiB (heap {} + free {}, cache {}) fds {} cpu {}% | data {} MiB | log start {} | load {:.2}",
        r.t_s,
        fmt_int(r.produced_per_s as u64),
        r.produce_us_p99 as f64 / 1e3,
        fmt_int(r.consumed_per_s as u64),
        r.e2e_us_p99 as f64 / 1e3,
        opt(r.broker_rss_mib, |v| format!("{v:.1}")),
        opt(r.broker_heap_allocated_mib, |v| format!("{v:.1}")),
        opt(r.broker_heap_free_mib, |v| format!("{v:.1}")),
        opt(r.broker_cache_mib, |v| format!("{v:.1}")),
        opt(r.broker_fds, |v| v.to_string()),
        opt(r.broker_cpu_percent, |v| format!("{v:.0}")),
        opt(r.data_dir_mib, |v| format!("{v:.1}")),
        opt(r.plain_log_start, |v| v.to_string()),
        r.load_1m
    )
}

fn bootstrap_port(bootstrap: &str) -> Option<u16> {
    bootstrap.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

pub fn run_soak(spec: SoakSpec) -> Result<bool, SoakError> {
    spec.check()?;
    let cores = crate::workload::parse_cores(&spec.cores)?;
    let ncores = cores.count();
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let prefix = spec
        .topic_prefix
        .clone()
        .unwrap_or_else(|| format!("soak-{ms}"));
    let names = [format!("{prefix}-plain"), format!("{prefix}-compact")];
    let group = spec
        .group
        .clone()
        .unwrap_or_else(|| format!("odradek-bench-soak-{ms}"));
    let broker_pid = spec
        .broker_pid
        .or_else(|| bootstrap_port(&spec.bootstrap).and_then(find_listener_pid));
    match broker_pid {
        Some(pid) if proc_sample(pid).is_some() => println!("broker pid {pid}"),
        Some(pid) => println!("broker pid {pid} cannot be read: no RSS/FD samples"),
        None => println!("broker process not found on this machine: no RSS/FD samples"),
    }

    let (bs, n0, n1) = (spec.bootstrap.clone(), names[0].clone(), names[1].clone());
    let (pp, cp) = (spec.plain_partitions, spec.compact_partitions);
    let (pc, cc) = (plain_configs(&spec), compact_configs(&spec));
    let (layouts, earliest) = run::admin(move || async move {
        create_topic(&bs, &n0, pp, &pc).await?;
        create_topic(&bs, &n1, cp, &cc).await?;
        let lp = ensure_topic(&bs, &n0, pp, false).await?;
        let lc = ensure_topic(&bs, &n1, cp, false).await?;
        let ep = list_offsets(&lp, -2).await?;
        let ec = list_offsets(&lc, -2).await?;
        Ok::<_, SoakError>(([lp, lc], [ep, ec]))
    })??;
    println!(
        "soak {} s: {} ({} partitions, {} rec/s, {:?}) and {} ({} partitions, {} keys, {} rec/s, {:?}); {} byte records; group {group} of {} members{}",
        spec.duration_s,
        names[0],
        pp,
        spec.plain_rate,
        plain_configs(&spec),
        names[1],
        cp,
        spec.keys,
        spec.compact_rate,
        compact_configs(&spec),
        spec.record_size,
        spec.members,
        if spec.churn_every_s > 0.0 {
            format!(", the last leaving every {} s for {} s", spec.churn_every_s, spec.churn_pause_s)
        } else {
            String::new()
        }
    );

    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        producers_remaining: AtomicUsize::new(2 * ncores),
        generation: (0..spec.members).map(|_| AtomicI64::new(-1)).collect(),
        drained: (0..spec.members).map(|_| AtomicBool::new(false)).collect(),
        assignments: AtomicU64::new(0),
        read_mark: [
            (0..pp).map(|_| AtomicI64::new(0)).collect(),
            (0..cp).map(|_| AtomicI64::new(0)).collect(),
        ],
    });
    let clock = Clock::new();
    let (tx, rx) = mpsc::sync_channel::<CoreMsg>(TICK_QUEUE_MAX);
    let mut handles = Vec::new();
    for core in 0..ncores {
        let placement = match &cores {
            Cores::Pinned(v) => Placement::Fixed(v[core]),
            Cores::Unpinned(_) => Placement::Unbound,
        };
        let args = CoreArgs {
            core,
            ncores,
            spec: spec.clone(),
            group: group.clone(),
            layouts: layouts.clone(),
            earliest: earliest.clone(),
            shared: shared.clone(),
            clock,
            tx: tx.clone(),
        };
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("soak-{core}"))
            .io_memory(1 << 20)
            .spawn(move || async move { core_main(args).await })
            .map_err(|e| RunError::Executor {
                core,
                detail: e.to_string(),
            })?;
        handles.push(h);
    }
    drop(tx);

    let mut sampler = Sampler {
        pid: broker_pid,
        metrics: spec.broker_metrics.clone(),
        data_dir: spec.broker_data_dir.clone(),
        last_cpu: None,
        ticks_per_s: clock_ticks_per_s(),
        plain: layouts[PLAIN].clone(),
    };
    // A first sample so the first row's CPU figure covers its own interval.
    sampler.sample(&mut SoakRow::default());
    let mut pauser = BrokerPauser::new(broker_pid, spec.broker_pause_every_s, spec.broker_pause_ms);
    if spec.broker_pause_every_s > 0.0 && pauser.is_none() {
        println!("broker pid unknown: --broker-pause-every-s has nothing to pause");
    }
    let load_end_s = LOAD_START_US as f64 / 1e6 + spec.duration_s;
    let deadline =
        Instant::now() + Duration::from_secs_f64(load_end_s + spec.drain_timeout_s + 5.0);
    let mut pending: BTreeMap<u64, (usize, [Counters; 2])> = BTreeMap::new();
    let mut total = Fold::new();
    let mut row_fold = Fold::new();
    let mut win_fold = Fold::new();
    let mut win_rows: Vec<SoakRow> = Vec::new();
    let mut win_from = 0.0;
    let mut rows: Vec<SoakRow> = Vec::new();
    let mut windows: Vec<WindowRow> = Vec::new();
    let mut done = 0;
    let mut timed_out = false;
    let mut stopped_by_signal = false;
    while done < ncores {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(CoreMsg::Tick { index, counters }) => {
                let e = pending
                    .entry(index)
                    .or_insert_with(|| (0, [Counters::default(), Counters::default()]));
                e.0 += 1;
                e.1[PLAIN].add(&counters[PLAIN]);
                e.1[COMPACT].add(&counters[COMPACT]);
                while let Some((&i, (n, _))) = pending.iter().next() {
                    if *n < ncores {
                        break;
                    }
                    let Some((_, c)) = pending.remove(&i) else {
                        break;
                    };
                    total.add(&c);
                    let t_end = (i + 1) as f64;
                    // Rows cover the load only: the drain after it is in the totals.
                    if t_end > load_end_s {
                        continue;
                    }
                    row_fold.add(&c);
                    win_fold.add(&c);
                    if (i + 1) % spec.interval_s == 0 {
                        let mut row = row_of(&row_fold, t_end, spec.record_size);
                        row.assignments = shared.assignments.load(Ordering::Relaxed);
                        sampler.sample(&mut row);
                        if !spec.quiet {
                            println!("{}", progress_line(&row));
                        }
                        rows.push(row.clone());
                        win_rows.push(row);
                        row_fold = Fold::new();
                    }
                    if (i + 1) % spec.window_s == 0 {
                        windows.push(window_row(&win_fold, &win_rows, win_from, t_end));
                        win_fold = Fold::new();
                        win_rows.clear();
                        win_from = t_end;
                    }
                }
            }
            Ok(CoreMsg::Done) => done += 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(p) = pauser.as_mut() {
            p.step(shared.producers_remaining.load(Ordering::Acquire) > 0);
        }
        if !shared.stop.load(Ordering::Relaxed) {
            let gens: Vec<i64> = shared
                .generation
                .iter()
                .map(|g| g.load(Ordering::Acquire))
                .collect();
            let settled = gens.iter().all(|g| *g >= 0 && *g == gens[0]);
            let drained = shared.drained.iter().all(|d| d.load(Ordering::Acquire));
            let producers_done = shared.producers_remaining.load(Ordering::Acquire) == 0;
            let signal = run::STOP.load(Ordering::Relaxed);
            if (producers_done && settled && drained) || Instant::now() > deadline || signal {
                timed_out = Instant::now() > deadline;
                stopped_by_signal = signal;
                shared.stop.store(true, Ordering::Release);
            }
        }
    }
    if win_fold.seconds > 0 && !win_rows.is_empty() {
        let to = win_rows.last().map_or(win_from, |r| r.t_s);
        windows.push(window_row(&win_fold, &win_rows, win_from, to));
    }
    let elapsed_s = clock.start.elapsed().as_secs_f64();
    let broker_pauses = pauser.as_ref().map_or(0, |p| p.pauses);
    drop(pauser); // continues a broker still paused

    let mut outs = Vec::new();
    for (core, h) in handles.into_iter().enumerate() {
        outs.push(h.join().map_err(|e| RunError::Executor {
            core,
            detail: e.to_string(),
        })?);
    }
    let mut acked: [Ranges; 2] = Default::default();
    let mut acked_records = [0u64; 2];
    let mut produce_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut consumed = Ranges::default();
    let mut expired = Ranges::default();
    let mut latest: HashMap<(i32, u64), i64> = HashMap::new();
    let mut re_read = [0u64; 2];
    let mut records_read = [0u64; 2];
    let mut fetch_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut group_errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut assignments, mut leaves) = (0u64, 0u64);
    for mut o in outs {
        for t in [PLAIN, COMPACT] {
            acked[t].merge(std::mem::take(&mut o.acked[t]));
            acked_records[t] += o.acked_records[t];
        }
        for (k, v) in o.produce_errors {
            *produce_errors.entry(k).or_default() += v;
        }
        for (i, m) in o.members {
            consumed.merge(m.consumed);
            expired.merge(m.expired);
            for (k, off) in m.latest {
                let e = latest.entry(k).or_insert(off);
                *e = (*e).max(off);
            }
            for t in [PLAIN, COMPACT] {
                re_read[t] += m.re_read[t];
                records_read[t] += m.records[t];
            }
            for (k, v) in m.fetch_errors {
                *fetch_errors.entry(format!("member {i}: {k}")).or_default() += v;
            }
            for (k, v) in m.group_errors {
                *group_errors.entry(format!("member {i}: {k}")).or_default() += v;
            }
            assignments += m.assignments;
            leaves += m.leaves;
        }
    }

    // Plain topic: acknowledged vs read or expired.
    expired.normalize();
    let expired_unread = expired.count();
    let mut read_or_expired = consumed.clone();
    read_or_expired.merge(expired);
    let mut rec = reconcile(&acked[PLAIN], &read_or_expired, 0);
    // Offsets read twice are re-reads after rebalances (at-least-once), not broker duplicates.
    rec.duplicated = 0;
    let compact_layout = layouts[COMPACT].clone();
    let plain_layout = layouts[PLAIN].clone();
    let end_state = run::admin(move || async move {
        let starts = list_offsets(&plain_layout, -2)
            .await
            .map_err(|e| e.to_string());
        let fin = read_compacted(&compact_layout, Duration::from_secs(120)).await;
        (starts, fin)
    })?;
    let log_start_at_end = end_state.0.as_ref().map_or(0, |v| v.iter().sum::<i64>());
    let plain_acc = PlainAccounting {
        expired_unread,
        re_read: re_read[PLAIN],
        log_start_at_end,
        retention_observed: log_start_at_end > 0,
        ok: rec.lost == 0 && expired_unread == 0 && log_start_at_end > 0,
        reconciliation: rec,
    };
    let comp = compaction_check(acked_records[COMPACT], &latest, end_state.1);
    let verdict = drift_verdict(&rows, spec.warmup_s, spec.interval_s as f64, &spec.limits);
    let errors_ok = produce_errors.is_empty() && fetch_errors.is_empty();
    let ok = verdict.ok && plain_acc.ok && comp.ok && errors_ok && !timed_out && !stopped_by_signal;

    // Summary.
    let (ph, eh) = (total.produce_hist(), total.e2e_hist());
    let ms_ = |us: u64| us as f64 / 1e3;
    let mut s = String::new();
    s.push_str(&format!(
        "\nsoak of {:.0} s ({:.0} s with the drain); windows of {} s:\n",
        spec.duration_s, elapsed_s, spec.window_s
    ));
    s.push_str("| window (s) | produced rec/s | consumed rec/s | produce p50 / p99 / max (ms) | e2e p50 / p99 / max (ms) | broker RSS max (MiB) | FDs max | broker CPU % | data dir (MiB) | load 1m |\n");
    s.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for w in &windows {
        s.push_str(&format!(
            "| {:.0}–{:.0} | {} | {} | {:.2} / {:.2} / {:.1} | {:.2} / {:.2} / {:.1} | {} | {} | {} | {} | {:.2} |\n",
            w.from_s,
            w.to_s,
            fmt_int(w.produced_per_s.round() as u64),
            fmt_int(w.consumed_per_s.round() as u64),
            ms_(w.produce_us_p50),
            ms_(w.produce_us_p99),
            ms_(w.produce_us_max),
            ms_(w.e2e_us_p50),
            ms_(w.e2e_us_p99),
            ms_(w.e2e_us_max),
            opt(w.broker_rss_mib_max, |v| format!("{v:.1}")),
            opt(w.broker_fds_max, |v| v.to_string()),
            opt(w.broker_cpu_percent_mean, |v| format!("{v:.0}")),
            opt(w.data_dir_mib_last, |v| format!("{v:.1}")),
            w.load_1m_mean
        ));
    }
    s.push_str(&format!(
        "whole run: produce p50 {:.2} ms, p99 {:.2}, p99.9 {:.2}, max {:.1}; end-to-end p50 {:.2} ms, p99 {:.2}, p99.9 {:.2}, max {:.1}\n",
        ms_(ph.value_at_quantile(0.5)),
        ms_(ph.value_at_quantile(0.99)),
        ms_(ph.value_at_quantile(0.999)),
        ms_(ph.max()),
        ms_(eh.value_at_quantile(0.5)),
        ms_(eh.value_at_quantile(0.99)),
        ms_(eh.value_at_quantile(0.999)),
        ms_(eh.max()),
    ));
    let v = &verdict;
    s.push_str(&format!(
        "drift (first vs last third after {} s warm-up, {} rows): produced {:+.1}%, consumed {:+.1}%, produce p99 {:.2} -> {:.2} ms (x{:.2}), e2e p99 {:.2} -> {:.2} ms (x{:.2}), RSS {} -> {} MiB ({}; slope {} MiB/h), allocated heap {} -> {} MiB ({}), FDs {} -> {} ({})\n",
        spec.warmup_s,
        v.rows_considered,
        v.produced_change * 100.0,
        v.consumed_change * 100.0,
        v.first.produce_p99_ms,
        v.last.produce_p99_ms,
        v.produce_p99_ratio,
        v.first.e2e_p99_ms,
        v.last.e2e_p99_ms,
        v.e2e_p99_ratio,
        opt(v.first.rss_mib, |x| format!("{x:.1}")),
        opt(v.last.rss_mib, |x| format!("{x:.1}")),
        opt(v.rss_growth_mib, |x| format!("{x:+.1}")),
        opt(v.rss_slope_mib_per_hour, |x| format!("{x:+.1}")),
        opt(v.first.heap_mib, |x| format!("{x:.1}")),
        opt(v.last.heap_mib, |x| format!("{x:.1}")),
        opt(v.heap_growth_mib, |x| format!("{x:+.1}")),
        opt(v.first.fds, |x| format!("{x:.0}")),
        opt(v.last.fds, |x| format!("{x:.0}")),
        opt(v.fd_growth, |x| format!("{x:+.0}")),
    ));
    s.push_str(&format!(
        "drift verdict: {}\n",
        if v.ok {
            "no drift".to_string()
        } else {
            format!("DRIFT: {}", v.problems.join("; "))
        }
    ));
    s.push_str(&format!(
        "plain topic: {}; expired unread {}, re-read after rebalances {}; log start at end {} (retention {})\n",
        plain_acc.reconciliation.line(),
        plain_acc.expired_unread,
        plain_acc.re_read,
        plain_acc.log_start_at_end,
        if plain_acc.retention_observed { "ran" } else { "NOT observed" }
    ));
    s.push_str(&format!(
        "compacted topic: acknowledged {}, {} records at the end over {} keys (read live: {} keys), latest-offset mismatches {}{}; compaction {}\n",
        comp.acknowledged,
        comp.records_at_end,
        comp.keys_at_end,
        comp.keys_read_live,
        comp.keys_latest_mismatch,
        comp.read_error.as_ref().map_or(String::new(), |e| format!(" (final read failed: {e})")),
        if comp.compaction_observed { "ran" } else { "NOT observed" }
    ));
    s.push_str(&format!(
        "group: {assignments} assignments, {leaves} leaves by the churning member\n"
    ));
    if timed_out {
        s.push_str("the members did not drain within --drain-timeout-s\n");
    }
    if stopped_by_signal {
        s.push_str("stopped early by a signal\n");
    }
    for (k, v) in produce_errors.iter().chain(fetch_errors.iter()) {
        s.push_str(&format!("error: {k}: {v}\n"));
    }
    for (k, v) in &group_errors {
        s.push_str(&format!("group event: {k}: {v}\n"));
    }
    s.push_str(&format!("soak: {}\n", if ok { "ok" } else { "FAILED" }));
    print!("{s}");

    let out = json!({
        "name": "soak",
        "date": report::utc_now(),
        "machine": report::machine(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "config": spec,
        "topics": { "plain": names[0], "compacted": names[1] },
        "topic_configs": {
            "plain": plain_configs(&spec).into_iter().collect::<BTreeMap<_, _>>(),
            "compacted": compact_configs(&spec).into_iter().collect::<BTreeMap<_, _>>(),
        },
        "group": group,
        "broker": {
            "pid": broker_pid,
            "data_dir": spec.broker_data_dir,
            "pauses": broker_pauses,
            "pause_ms": spec.broker_pause_ms,
        },
        "elapsed_s": elapsed_s,
        "ok": ok,
        "verdict": verdict,
        "accounting": { "plain": plain_acc, "compacted": comp },
        "produce": {
            "acknowledged_plain": acked_records[PLAIN],
            "acknowledged_compacted": acked_records[COMPACT],
            "latency_us": report::percentiles(&ph),
        },
        "consume": {
            "records_plain": records_read[PLAIN],
            "records_compacted": records_read[COMPACT],
            "re_read_plain": re_read[PLAIN],
            "re_read_compacted": re_read[COMPACT],
            "e2e_latency_us": report::percentiles(&eh),
        },
        "group_activity": { "assignments": assignments, "leaves": leaves },
        "timed_out": timed_out,
        "stopped_by_signal": stopped_by_signal,
        "errors": { "produce": produce_errors, "fetch": fetch_errors, "group": group_errors },
        "windows": windows,
        "rows": rows,
    });
    if let Some(p) = &spec.json {
        report::write_json(p, &out)?;
    }
    if let Some(p) = &spec.svg {
        write_plot(p, &spec, &rows)?;
    }
    Ok(ok)
}

/// Throughput, latency, broker memory, FDs, data size and load over time, one SVG.
fn write_plot(path: &Path, spec: &SoakSpec, rows: &[SoakRow]) -> Result<(), ReportError> {
    let line = |label: &str, color: (u8, u8, u8), f: &dyn Fn(&SoakRow) -> Option<f64>| Line {
        label: label.to_string(),
        color,
        points: rows
            .iter()
            .filter_map(|r| f(r).map(|y| (r.t_s, y)))
            .collect(),
    };
    let (blue, red, green, grey) = (
        (31, 119, 180),
        (214, 39, 40),
        (44, 160, 44),
        (127, 127, 127),
    );
    let x = "time (s)";
    let panels = vec![
        Panel {
            caption: format!("throughput per {} s", spec.interval_s),
            x_desc: x.into(),
            y_desc: "records/s".into(),
            lines: vec![
                line("produced", blue, &|r| Some(r.produced_per_s)),
                line("consumed", red, &|r| Some(r.consumed_per_s)),
            ],
        },
        Panel {
            caption: "latency p99 (and p50)".into(),
            x_desc: x.into(),
            y_desc: "ms".into(),
            lines: vec![
                line("produce p99", blue, &|r| {
                    Some(r.produce_us_p99 as f64 / 1e3)
                }),
                line("end-to-end p99", red, &|r| Some(r.e2e_us_p99 as f64 / 1e3)),
                line("end-to-end p50", green, &|r| {
                    Some(r.e2e_us_p50 as f64 / 1e3)
                }),
            ],
        },
        Panel {
            caption: "broker memory".into(),
            x_desc: x.into(),
            y_desc: "MiB".into(),
            lines: vec![
                line("VmRSS", blue, &|r| r.broker_rss_mib),
                line("heap allocated", red, &|r| r.broker_heap_allocated_mib),
                line("batch cache", green, &|r| r.broker_cache_mib),
            ],
        },
        Panel {
            caption: "broker open file descriptors".into(),
            x_desc: x.into(),
            y_desc: "FDs".into(),
            lines: vec![line("/proc/<pid>/fd", blue, &|r| {
                r.broker_fds.map(|v| v as f64)
            })],
        },
        Panel {
            caption: "data directory".into(),
            x_desc: x.into(),
            y_desc: "MiB".into(),
            lines: vec![line("size", blue, &|r| r.data_dir_mib)],
        },
        Panel {
            caption: "machine load and broker CPU".into(),
            x_desc: x.into(),
            y_desc: "load / cores".into(),
            lines: vec![
                line("load average (1 min)", grey, &|r| Some(r.load_1m)),
                line("broker CPU (cores)", red, &|r| {
                    r.broker_cpu_percent.map(|c| c / 100.0)
                }),
            ],
        },
    ];
    report::write_panels_svg(
        path,
        &format!(
            "odradek-bench soak: {} + {} rec/s of {} B, {} s",
            spec.plain_rate, spec.compact_rate, spec.record_size, spec.duration_s
        ),
        2,
        &panels,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows every 10 s for 30 minutes: steady unless `grow` says how a figure drifts per row.
    fn rows(grow: impl Fn(usize, &mut SoakRow)) -> Vec<SoakRow> {
        (0..180)
            .map(|i| {
                let mut r = SoakRow {
                    t_s: (i + 1) as f64 * 10.0,
                    produced_per_s: 22_000.0 + if i % 2 == 0 { 150.0 } else { -150.0 },
                    consumed_per_s: 22_000.0,
                    produce_us_p99: 3_000 + (i as u64 % 7) * 100,
                    e2e_us_p99: 4_000 + (i as u64 % 5) * 100,
                    broker_rss_mib: Some(180.0 + (i % 3) as f64),
                    broker_fds: Some(120 + (i as u64 % 4)),
                    ..SoakRow::default()
                };
                grow(i, &mut r);
                r
            })
            .collect()
    }

    const L: DriftLimits = DriftLimits {
        max_throughput_change: 0.10,
        max_p99_ratio: 2.0,
        p99_floor_ms: 5.0,
        max_rss_growth_mib: 32.0,
        max_heap_growth_mib: 16.0,
        max_fd_growth: 16.0,
    };

    #[test]
    fn steady_rows_pass() {
        let v = drift_verdict(&rows(|_, _| {}), 60.0, 10.0, &L);
        assert!(v.ok, "{:?}", v.problems);
        assert_eq!(v.rows_considered, 174, "the 60 s warm-up leaves 174 rows");
        assert_eq!(v.first.rows, 58);
        assert!(v.produced_change.abs() < 0.01);
        assert!(v.rss_growth_mib.is_some_and(|g| g.abs() < 2.0));
        assert!(v.rss_slope_mib_per_hour.is_some_and(|s| s.abs() < 2.0));
        assert_eq!(v.rss_ok, Some(true));
        assert_eq!(v.fds_ok, Some(true));
    }

    #[test]
    fn a_memory_leak_is_flagged() {
        // 0.5 MiB per 10 s: 180 MiB/h, ~60 MiB between the thirds' medians.
        let v = drift_verdict(
            &rows(|i, r| r.broker_rss_mib = Some(180.0 + i as f64 * 0.5)),
            60.0,
            10.0,
            &L,
        );
        assert!(!v.ok);
        assert_eq!(v.rss_ok, Some(false));
        assert!(
            v.rss_growth_mib.is_some_and(|g| g > 50.0 && g < 70.0),
            "{v:?}"
        );
        assert!(v
            .rss_slope_mib_per_hour
            .is_some_and(|s| (s - 180.0).abs() < 1.0));
        assert!(
            v.problems.iter().any(|p| p.contains("RSS")),
            "{:?}",
            v.problems
        );
        assert!(v.throughput_ok && v.p99_ok && v.fds_ok == Some(true));
    }

    #[test]
    fn a_heap_leak_is_flagged_and_memory_kept_after_a_burst_is_told_apart() {
        // Allocated heap grows 0.2 MiB per row: a leak, even below the RSS limit.
        let leak = drift_verdict(
            &rows(|i, r| {
                r.broker_rss_mib = Some(180.0 + i as f64 * 0.1);
                r.broker_heap_allocated_mib = Some(150.0 + i as f64 * 0.2);
            }),
            60.0,
            10.0,
            &L,
        );
        assert_eq!((leak.rss_ok, leak.heap_ok), (Some(true), Some(false)));
        assert!(!leak.ok);
        assert!(leak.problems.iter().any(|p| p.contains("allocated heap")));
        // RSS steps up by 40 MiB at a stall and stays; allocated heap does not move: only the
        // RSS check fails, and the heap figure says it is not a leak.
        let kept = drift_verdict(
            &rows(|i, r| {
                r.broker_rss_mib = Some(if i < 100 { 175.0 } else { 215.0 });
                r.broker_heap_allocated_mib = Some(147.0 + (i % 3) as f64);
            }),
            60.0,
            10.0,
            &L,
        );
        assert_eq!((kept.rss_ok, kept.heap_ok), (Some(false), Some(true)));
        assert!(kept.heap_growth_mib.is_some_and(|g| g.abs() < 2.0));
    }

    #[test]
    fn an_fd_leak_is_flagged() {
        // One FD every 5 rows (a connection or segment file never closed now and then).
        let v = drift_verdict(
            &rows(|i, r| r.broker_fds = Some(120 + i as u64 / 5)),
            60.0,
            10.0,
            &L,
        );
        assert_eq!(v.fds_ok, Some(false), "{v:?}");
        assert!(!v.ok);
        assert!(v.problems.iter().any(|p| p.contains("FDs")));
    }

    #[test]
    fn falling_throughput_and_rising_p99_are_flagged() {
        let v = drift_verdict(
            &rows(|i, r| {
                r.consumed_per_s = 22_000.0 - i as f64 * 40.0;
                r.e2e_us_p99 = 4_000 + i as u64 * 200;
            }),
            60.0,
            10.0,
            &L,
        );
        assert!(!v.throughput_ok && !v.p99_ok && !v.ok, "{v:?}");
        assert!(v.consumed_change < -0.2);
        assert!(v.e2e_p99_ratio > 3.0);
        assert_eq!(v.problems.len(), 2, "{:?}", v.problems);
    }

    #[test]
    fn small_p99_moves_within_the_floor_pass() {
        // 0.4 ms -> 1.5 ms is x3.75 but only 1.1 ms more: noise at this scale.
        let v = drift_verdict(
            &rows(|i, r| r.produce_us_p99 = if i < 90 { 400 } else { 1_500 }),
            60.0,
            10.0,
            &L,
        );
        assert!(v.p99_ok, "{:?}", v.problems);
        assert!(v.produce_p99_ratio > 3.0);
    }

    #[test]
    fn too_few_rows_or_no_broker_samples() {
        let short: Vec<SoakRow> = rows(|_, _| {}).into_iter().take(8).collect();
        let v = drift_verdict(&short, 60.0, 10.0, &L);
        assert!(!v.ok);
        assert_eq!(v.rows_considered, 2);
        let blind = rows(|_, r| {
            r.broker_rss_mib = None;
            r.broker_fds = None;
        });
        let v = drift_verdict(&blind, 60.0, 10.0, &L);
        assert!(v.ok);
        assert_eq!((v.rss_ok, v.heap_ok, v.fds_ok), (None, None, None));
    }

    #[test]
    fn compaction_check_wants_every_latest_offset_and_fewer_records() {
        let live: HashMap<(i32, u64), i64> = [((0, 1), 10), ((0, 2), 12), ((1, 3), 7)].into();
        let fin = FinalRead {
            records: 3,
            latest: live.clone(),
        };
        let c = compaction_check(100, &live, Ok(fin));
        assert!(c.ok && c.compaction_observed, "{c:?}");
        // The latest value of key 2 gone (only an older one kept), and nothing compacted.
        let fin = FinalRead {
            records: 100,
            latest: [((0, 1), 10), ((0, 2), 5), ((1, 3), 7)].into(),
        };
        let c = compaction_check(100, &live, Ok(fin));
        assert!(!c.ok && !c.compaction_observed);
        assert_eq!(c.keys_latest_mismatch, 1);
        assert_eq!(c.mismatch_examples, vec![(0, 2, 12, 5)]);
        let c = compaction_check(100, &live, Err("boom".into()));
        assert!(!c.ok);
        assert_eq!(c.read_error.as_deref(), Some("boom"));
    }

    #[test]
    fn proc_samples_of_this_process_and_a_missing_one() {
        let s = proc_sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_kib > 0 && s.fds > 0 && s.threads >= 1);
        assert!(proc_sample(u32::MAX - 1).is_none());
    }

    #[test]
    fn metric_sums_add_labelled_series_and_skip_longer_names() {
        let text = "# HELP odradek_batch_cache_used_bytes x\n\
            odradek_batch_cache_used_bytes{shard=\"0\"} 1048576\n\
            odradek_batch_cache_used_bytes{shard=\"1\"} 2097152\n\
            odradek_batch_cache_used_bytes_total 99\n\
            odradek_heap_allocated_bytes 5\n";
        assert_eq!(
            metric_sum(text, "odradek_batch_cache_used_bytes"),
            Some(3145728.0)
        );
        assert_eq!(metric_sum(text, "odradek_heap_allocated_bytes"), Some(5.0));
        assert_eq!(metric_sum(text, "odradek_heap_free_bytes"), None);
    }

    #[test]
    fn the_pauser_stops_and_continues_a_process_and_never_leaves_it_stopped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let state = |pid: u32| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
                .expect("state field")
        };
        // Signals arrive asynchronously: wait (up to 2 s) for the state to say so.
        let stopped = |pid: u32, want: bool| {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                let now = state(pid) == "T";
                if now == want || Instant::now() > deadline {
                    return now;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        let mut p = BrokerPauser::new(Some(child.id()), 0.05, 200).expect("pauser");
        p.step(true);
        assert_ne!(
            state(child.id()),
            "T",
            "not yet: the first pause is one period in"
        );
        std::thread::sleep(Duration::from_millis(60));
        p.step(false);
        assert_ne!(state(child.id()), "T", "no pause once the load has ended");
        p.step(true);
        assert!(stopped(child.id(), true));
        assert_eq!(p.pauses, 1);
        p.step(true);
        assert!(stopped(child.id(), true), "still within the 200 ms");
        std::thread::sleep(Duration::from_millis(220));
        p.step(false);
        assert!(!stopped(child.id(), false), "continued after 200 ms");
        // Dropped mid-pause: continued.
        std::thread::sleep(Duration::from_millis(60));
        p.step(true);
        assert!(stopped(child.id(), true));
        drop(p);
        assert!(!stopped(child.id(), false), "continued when dropped");
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn the_listener_of_a_port_is_found_and_a_free_port_has_none() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        // This process is skipped on purpose (the bench never measures itself), so the
        // listener's socket must be found but no pid returned.
        assert!(!listening_inodes(port).is_empty());
        assert_eq!(find_listener_pid(port), None);
        drop(l);
        assert!(listening_inodes(port).is_empty());
    }

    #[test]
    fn spec_checks() {
        let mut s = SoakSpec {
            bootstrap: "127.0.0.1:9092".into(),
            cores: "1".into(),
            duration_s: 30.0,
            interval_s: 1,
            window_s: 10,
            warmup_s: 5.0,
            plain_rate: 100.0,
            compact_rate: 10.0,
            record_size: 100,
            plain_partitions: 2,
            compact_partitions: 1,
            keys: 10,
            segment_bytes: 1 << 16,
            retention_bytes: 1 << 18,
            retention_ms: 10_000,
            compact_segment_bytes: 1 << 16,
            compact_segment_ms: 1000,
            min_cleanable_dirty_ratio: 0.01,
            members: 2,
            heartbeat_interval_ms: 300,
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            commit_interval_ms: 1000,
            fetch_max_wait_ms: 100,
            churn_every_s: 0.0,
            churn_pause_s: 1.0,
            drain_timeout_s: 10.0,
            broker_pid: None,
            broker_data_dir: None,
            broker_metrics: None,
            broker_pause_every_s: 0.0,
            broker_pause_ms: 2000,
            topic_prefix: None,
            group: None,
            limits: DriftLimits::default(),
            json: None,
            svg: None,
            quiet: true,
        };
        assert!(s.check().is_ok());
        s.record_size = 10;
        assert!(s.check().is_err());
        s.record_size = 100;
        s.duration_s = 7.0;
        assert!(
            s.check().is_err(),
            "5 s warm-up leaves 2 one-second intervals"
        );
        s.duration_s = 30.0;
        s.keys = KEYS_MAX + 1;
        assert!(s.check().is_err());
        s.keys = 100;
        s.broker_pause_every_s = 2.0;
        assert!(s.check().is_err(), "a 2000 ms pause every 2 s never ends");
        s.broker_pause_every_s = 10.0;
        assert!(s.check().is_ok());
        s.broker_pause_every_s = f64::NAN;
        assert!(s.check().is_err());
    }
}
