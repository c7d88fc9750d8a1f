//! One measured run: set up the topic, start one pinned glommio executor per bench core with its
//! producers and consumers, print live progress once a second from the ticks the cores send, and
//! gather every core's results into a [`RunOutcome`] (throughput series, latency histograms,
//! accounting).
//!
//! Cores share nothing mutable except three atomics: producers still running (consumers that
//! follow producers drain after it reaches 0), records consumed (for a record bound), and
//! nothing else; results travel back as plain data when an executor ends.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::client::consumer::{run_consumer, ConsumerResult, ConsumerSpec, StopRule};
use crate::client::producer::{PayloadPool, Producer, ProducerSpec, TxnCounts, TxnSpec};
use crate::client::{ensure_topic, list_offsets, ClientError, TopicLayout};
use crate::stats::{reconcile, Clock, CoreProbe, Counters, Ranges, Reconciliation, Tick};
use crate::steal::{self, StealDelta, StealTicks};
use crate::workload::{Cores, LoadSpec, SpecError};

/// Set by the first SIGINT/SIGTERM: producers stop generating, consumers stop fetching, and the
/// run ends with its summary and files as if its time were up. A second signal kills.
pub static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    // SAFETY: signal() is async-signal-safe; restoring the default makes a second signal fatal.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// Installs the SIGINT/SIGTERM handler (see [`STOP`]).
pub fn install_stop_signals() {
    // SAFETY: the handler only stores an atomic and calls signal(), both async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_stop_signal as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_stop_signal as *const () as libc::sighandler_t,
        );
    }
}

/// Run-clock time at which load starts: executors and connections are up by then.
const LOAD_START_US: u64 = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("setup: {0}")]
    Setup(#[from] ClientError),
    #[error("executor for bench core {core}: {detail}")]
    Executor { core: usize, detail: String },
    #[error("consume needs --topic (or --verify with a topic in the file)")]
    NoTopic,
    #[error(
        "{cores} bench core(s) still busy {after_s:.0} s after the run's end, nothing \
         acknowledged or consumed for {quiet_s:.0} s (waiting on a broker that stopped \
         answering?); the run is abandoned without its summary"
    )]
    Stuck {
        cores: usize,
        after_s: f64,
        quiet_s: f64,
    },
}

/// How long the cores may go without progress after the run's end (the last responses,
/// consumers reading what was acknowledged) before the run is abandoned. A core whose executor
/// never finishes (seen after a broker was killed under 1,000 producers: every task parked, its
/// timers no longer firing) would otherwise keep the run, and whatever waits on it, forever.
const SETTLE_GRACE: Duration = Duration::from_secs(30);

/// When a run that is past its end gives up on cores still busy: [`SETTLE_GRACE`] after the
/// end or after the last progress a core reported, whichever is later. Counting from the end
/// alone abandoned healthy runs: an overloaded open-loop run works off its backlog after the
/// end, and W5 at W1's rate took over 30 s to in 2 of 6 runs of 56 s
/// (`perf/2026-12-06-w5-receive-and-writes.md`), acknowledging all along.
#[derive(Debug, Clone, Copy)]
struct SettleDeadline {
    end: Duration,
    last_progress: Duration,
}

impl SettleDeadline {
    fn new(end: Duration) -> SettleDeadline {
        SettleDeadline {
            end,
            last_progress: end,
        }
    }

    /// A core reported progress at `now` (run-clock time).
    fn progressed(&mut self, now: Duration) {
        self.last_progress = self.last_progress.max(now);
    }

    /// `Some((seconds since the end, seconds without progress))` once the run should be
    /// abandoned at `now`.
    fn expired(&self, now: Duration) -> Option<(f64, f64)> {
        let quiet = now.saturating_sub(self.last_progress);
        (quiet > SETTLE_GRACE).then(|| {
            (
                now.saturating_sub(self.end).as_secs_f64(),
                quiet.as_secs_f64(),
            )
        })
    }
}

/// Where consumers start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
}

#[derive(Debug, Clone)]
pub struct RunPlan {
    pub spec: LoadSpec,
    pub produce: bool,
    pub consume: bool,
    /// Consumers follow the producers and measure end-to-end latency.
    pub e2e: bool,
    pub start_at: StartAt,
    /// Catch-up consume: acknowledged ranges to reconcile against (from an earlier produce).
    pub verify: Option<Ranges>,
    /// Print the progress line each second.
    pub progress: bool,
}

impl RunPlan {
    /// A quiet produce-only run that writes `spec`'s records before the measured part (W3's
    /// prefill, the rebalance benchmark's backlog).
    pub fn prefill(spec: LoadSpec) -> RunPlan {
        RunPlan {
            spec,
            produce: true,
            consume: false,
            e2e: false,
            start_at: StartAt::Latest,
            verify: None,
            progress: false,
        }
    }
}

/// One second of the run, all cores together.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IntervalRow {
    pub t_s: u64,
    pub produced_records: u64,
    pub produced_bytes: u64,
    pub consumed_records: u64,
    pub consumed_bytes: u64,
    pub errors: u64,
    pub produce_latency_us_p99: u64,
    pub e2e_latency_us_p99: u64,
    /// The largest share of any one CPU the VM's host took (steal) during this second, as read
    /// when the second was reported (`crate::steal`).
    pub host_steal: f64,
}

#[derive(Debug)]
pub struct RunOutcome {
    pub plan: RunPlan,
    pub topic: String,
    pub partitions: usize,
    pub intervals: Vec<IntervalRow>,
    pub measured: Counters,
    /// Seconds over which `measured` throughput is computed (warm-up excluded).
    pub measured_s: f64,
    pub elapsed_s: f64,
    pub sent: u64,
    pub acked: u64,
    /// Acknowledged batch bytes as sent (compressed): what the broker stored.
    pub acked_wire_bytes: u64,
    /// Produce requests answered and batches acknowledged, over the whole run.
    pub produce_requests: u64,
    pub acked_batches: u64,
    pub produce_errored: u64,
    /// Transactional producers' transactions (all zero otherwise).
    pub txn: TxnCounts,
    pub consumer: ConsumerSummary,
    pub acked_ranges: Ranges,
    pub reconciliation: Option<Reconciliation>,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Per bench core (those that measured it), how busy its thread was while generating load
    /// (from the warm-up's end to `--duration-s`, or to the end of its work): CPU time / wall
    /// time. Near 1.0 the figures may measure the load generator.
    pub generator_busy: Vec<f64>,
    /// Per bench core (pinned ones), how busy its CPU was over the same window in all: the
    /// thread's own figure leaves out softirq work done on its CPU (loopback TCP's receive side
    /// of what it sends: ~9% of the core in W5) and anyone else running there.
    pub generator_core_busy: Vec<f64>,
    /// How much the bench process's resident memory grew over the same window, bytes (the
    /// largest figure a core saw). Fresh pages are costly (the kernel clears each one; on the
    /// development VM ~0.4 GB/s including the host's own faults), so a generator still growing
    /// its buffers in the window spends part of its core on that instead of on load.
    pub generator_resident_growth: Option<i64>,
    /// Per CPU of the machine, the time the VM's host took (steal) over the seconds of the
    /// measured window. Empty if `/proc/stat` could not be read.
    pub host_steal: Vec<StealDelta>,
}

/// Above this share of its core, a bench core may be what limits the run.
pub const GENERATOR_SATURATED: f64 = 0.9;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ConsumerSummary {
    pub records: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub sequence_gaps: u64,
    pub foreign: u64,
    pub errors: u64,
    /// Records read from transactional batches.
    pub transactional_records: u64,
    pub commit_markers: u64,
    pub abort_markers: u64,
    /// Records of aborted transactions skipped (read_committed).
    pub aborted_records: u64,
}

impl RunOutcome {
    /// The busiest bench core's share of its core while generating load: its thread's figure
    /// or its CPU's, whichever is higher.
    pub fn generator_busiest(&self) -> Option<f64> {
        self.generator_busy
            .iter()
            .chain(&self.generator_core_busy)
            .copied()
            .reduce(f64::max)
    }
    pub fn errors(&self) -> u64 {
        self.errors_by_kind.values().sum()
    }
    /// The run is clean: no errors, no record out of its producer's order, and (if
    /// reconciled) nothing lost or duplicated.
    pub fn ok(&self) -> bool {
        self.errors() == 0
            && self.consumer.reordered == 0
            && self.reconciliation.as_ref().is_none_or(|r| r.ok())
    }
}

/// What one core hands back.
struct CoreOutput {
    sent: u64,
    acked: u64,
    acked_wire_bytes: u64,
    requests: u64,
    acked_batches: u64,
    errored: u64,
    acked_ranges: Ranges,
    txn: TxnCounts,
    consumer: ConsumerResult,
    measured: Counters,
    first_measured_us: Option<u64>,
    last_measured_us: u64,
    drained: Counters,
    last_drained_us: u64,
    errors_by_kind: BTreeMap<String, u64>,
    busy: Option<f64>,
    core_busy: Option<f64>,
    resident_growth: Option<i64>,
}

struct Setup {
    layout: TopicLayout,
    start: Vec<i64>,
    end: Vec<i64>,
}

/// Runs an async admin call (metadata, list offsets) on a throwaway unpinned executor; `f`
/// builds the future on that executor's thread.
pub fn admin<T, F, Fut>(f: F) -> Result<T, RunError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let h = LocalExecutorBuilder::new(Placement::Unbound)
        .name("bench-admin")
        .io_memory(1 << 20)
        .spawn(f)
        .map_err(|e| RunError::Executor {
            core: 0,
            detail: e.to_string(),
        })?;
    h.join().map_err(|e| RunError::Executor {
        core: 0,
        detail: e.to_string(),
    })
}

pub fn run(plan: RunPlan) -> Result<RunOutcome, RunError> {
    let spec = plan.spec.clone();
    spec.check()?;
    let cores = spec.cores_value()?;
    let ncores = cores.count();
    let acks = spec.acks_value()?;
    let topic = match (&spec.topic, plan.produce) {
        (Some(t), _) => t.clone(),
        (None, true) => format!(
            "bench-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        ),
        (None, false) => return Err(RunError::NoTopic),
    };
    let (bootstrap, partitions, create, start_at) = (
        spec.bootstrap.clone(),
        spec.partitions,
        plan.produce,
        plan.start_at,
    );
    let t2 = topic.clone();
    let setup = admin(move || async move {
        let layout = ensure_topic(&bootstrap, &t2, partitions, create).await?;
        let start = list_offsets(
            &layout,
            if start_at == StartAt::Earliest {
                -2
            } else {
                -1
            },
        )
        .await?;
        let end = list_offsets(&layout, -1).await?;
        Ok::<_, ClientError>(Setup { layout, start, end })
    })??;

    let total_producers = if plan.produce {
        ncores * spec.producers_per_core
    } else {
        0
    };
    let total_consumers = if plan.consume {
        ncores * spec.consumers_per_core
    } else {
        0
    };
    let producers_remaining = Arc::new(AtomicUsize::new(total_producers));
    let consumed_total = Arc::new(AtomicU64::new(0));
    // The run's clock starts once every core has faulted in its `--pretouch-mb` of heap: a
    // pretouch on a VM can take many seconds, and the schedule must not start behind.
    let pretouched = Arc::new(std::sync::Barrier::new(ncores + 1));
    let started = Arc::new(std::sync::Barrier::new(ncores + 1));
    let run_clock = Arc::new(std::sync::OnceLock::<Clock>::new());
    let warmup_end_us = LOAD_START_US + (spec.warmup_s * 1e6) as u64;
    let end_us = spec.duration_s.map(|d| LOAD_START_US + (d * 1e6) as u64);

    let (tx, rx) = mpsc::channel::<Tick>();
    let mut handles = Vec::new();
    for core in 0..ncores {
        let placement = match &cores {
            Cores::Pinned(v) => Placement::Fixed(v[core]),
            Cores::Unpinned(_) => Placement::Unbound,
        };
        let spec = spec.clone();
        let layout = setup.layout.clone();
        let start = setup.start.clone();
        let end = setup.end.clone();
        let tx = tx.clone();
        let producers_remaining = producers_remaining.clone();
        let consumed_total = consumed_total.clone();
        let (pretouched, started, run_clock) =
            (pretouched.clone(), started.clone(), run_clock.clone());
        let plan_e2e = plan.e2e;
        let plan_produce = plan.produce;
        let plan_consume = plan.consume;
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("bench-{core}"))
            .io_memory(1 << 20)
            .spawn(move || async move {
                odradek::memory::pretouch_heap(spec.pretouch_mb << 20);
                pretouched.wait();
                started.wait();
                let clock = *run_clock.get().expect("set before the start barrier");
                core_main(CoreArgs {
                    core,
                    spec,
                    acks,
                    layout,
                    start,
                    end,
                    clock,
                    warmup_end_us,
                    end_us,
                    total_producers,
                    total_consumers,
                    produce: plan_produce,
                    consume: plan_consume,
                    e2e: plan_e2e,
                    producers_remaining,
                    consumed_total,
                    tx,
                })
                .await
            })
            .map_err(|e| RunError::Executor {
                core,
                detail: e.to_string(),
            })?;
        handles.push(h);
    }
    drop(tx);
    pretouched.wait();
    let clock = Clock::new();
    let _ = run_clock.set(clock);
    started.wait();

    // Live progress: aggregate ticks per second index once every core reported it.
    let mut pending: BTreeMap<u64, (usize, Counters)> = BTreeMap::new();
    let mut so_far = Counters::default();
    let mut intervals = Vec::new();
    let mut done = 0;
    // Steal per second, read as each second is reported; the window's seconds are summed.
    let mut steal_read = StealTicks::now();
    let mut window_steal: Vec<Vec<StealDelta>> = Vec::new();
    let in_window = |t_s: u64| {
        t_s as f64 > spec.warmup_s && spec.duration_s.is_none_or(|d| t_s as f64 <= d.ceil())
    };
    let mut emit =
        |index: u64, c: Counters, so_far: &mut Counters, intervals: &mut Vec<IntervalRow>| {
            // Interval histograms hold post-warm-up samples only, so their sum is the total.
            so_far.add(&c);
            let now = StealTicks::now();
            let stolen = match (&now, &steal_read) {
                (Some(now), Some(before)) => now.since(before),
                _ => Vec::new(),
            };
            steal_read = now;
            let host_steal = (steal::max_fraction(&stolen) * 1000.0).round() / 1000.0;
            if in_window(index + 1) {
                window_steal.push(stolen);
            }
            let row = IntervalRow {
                t_s: index + 1,
                produced_records: c.produced_records,
                produced_bytes: c.produced_bytes,
                consumed_records: c.consumed_records,
                consumed_bytes: c.consumed_bytes,
                errors: c.errors,
                produce_latency_us_p99: c.produce_latency_us.value_at_quantile(0.99),
                e2e_latency_us_p99: c.e2e_latency_us.value_at_quantile(0.99),
                host_steal,
            };
            if plan.progress {
                let mut line = format!("[{:>4}s]", row.t_s);
                if plan.produce {
                    line.push_str(&format!(
                        " produce {:>10} rec/s {:>8.1} MB/s p99 so far {:>8.2} ms |",
                        fmt_int(row.produced_records),
                        row.produced_bytes as f64 / 1e6,
                        so_far.produce_latency_us.value_at_quantile(0.99) as f64 / 1e3
                    ));
                }
                if plan.consume {
                    line.push_str(&format!(
                        " consume {:>10} rec/s {:>8.1} MB/s",
                        fmt_int(row.consumed_records),
                        row.consumed_bytes as f64 / 1e6
                    ));
                    if plan.e2e {
                        line.push_str(&format!(
                            " e2e p99 so far {:>8.2} ms",
                            so_far.e2e_latency_us.value_at_quantile(0.99) as f64 / 1e3
                        ));
                    }
                    line.push_str(" |");
                }
                line.push_str(&format!(" errors {}", row.errors));
                if row.host_steal >= 0.01 {
                    line.push_str(&format!(" | host steal {:.2}", row.host_steal));
                }
                println!("{line}");
                let _ = std::io::stdout().flush();
            }
            intervals.push(row);
        };
    let mut settle = end_us.map(|e| SettleDeadline::new(Duration::from_micros(e)));
    while done < ncores {
        let elapsed = clock.start.elapsed();
        if let Some((after_s, quiet_s)) = settle.and_then(|s| s.expired(elapsed)) {
            return Err(RunError::Stuck {
                cores: ncores - done,
                after_s,
                quiet_s,
            });
        }
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Tick::Interval { index, counters }) => {
                if let Some(s) = settle.as_mut().filter(|_| counters.made_progress()) {
                    s.progressed(clock.start.elapsed());
                }
                let e = pending
                    .entry(index)
                    .or_insert_with(|| (0, Counters::default()));
                e.0 += 1;
                e.1.add(&counters);
                while let Some((&i, (n, _))) = pending.iter().next() {
                    if *n < ncores {
                        break;
                    }
                    if let Some((_, c)) = pending.remove(&i) {
                        emit(i, c, &mut so_far, &mut intervals);
                    }
                }
            }
            Ok(Tick::Done) => done += 1,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for (i, (_, c)) in std::mem::take(&mut pending) {
        emit(i, c, &mut so_far, &mut intervals);
    }
    let host_steal = steal::sum(&window_steal);
    let elapsed_s = clock.start.elapsed().as_secs_f64();
    let totals = so_far;

    let mut outs = Vec::new();
    for (core, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(o) => outs.push(o),
            Err(e) => {
                return Err(RunError::Executor {
                    core,
                    detail: e.to_string(),
                })
            }
        }
    }
    let mut measured = Counters {
        produce_latency_us: totals.produce_latency_us,
        e2e_latency_us: totals.e2e_latency_us,
        commit_latency_us: totals.commit_latency_us,
        add_partitions_latency_us: totals.add_partitions_latency_us,
        ..Counters::default()
    };
    let mut acked_ranges = Ranges::default();
    let mut consumed_ranges = Ranges::default();
    let mut consumer = ConsumerSummary::default();
    let mut errors_by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let (mut sent, mut acked, mut errored, mut wire) = (0, 0, 0, 0);
    let (mut requests, mut batches) = (0, 0);
    let mut txn = TxnCounts::default();
    let mut first = u64::MAX;
    let mut last = 0;
    let mut drained = Counters::default();
    let mut last_drained = 0;
    let mut generator_busy = Vec::new();
    let mut generator_core_busy = Vec::new();
    let mut generator_resident_growth: Option<i64> = None;
    for o in outs {
        sent += o.sent;
        acked += o.acked;
        wire += o.acked_wire_bytes;
        requests += o.requests;
        batches += o.acked_batches;
        errored += o.errored;
        acked_ranges.merge(o.acked_ranges);
        txn.add(&o.txn);
        consumed_ranges.merge(o.consumer.consumed);
        consumer.records += o.consumer.records;
        consumer.duplicates += o.consumer.duplicates;
        consumer.reordered += o.consumer.reordered;
        consumer.sequence_gaps += o.consumer.sequence_gaps;
        consumer.foreign += o.consumer.foreign;
        consumer.errors += o.consumer.errors;
        consumer.transactional_records += o.consumer.walk.transactional_records;
        consumer.commit_markers += o.consumer.walk.commit_markers;
        consumer.abort_markers += o.consumer.walk.abort_markers;
        consumer.aborted_records += o.consumer.walk.aborted_records;
        measured.add(&o.measured);
        if let Some(f) = o.first_measured_us {
            first = first.min(f);
        }
        last = last.max(o.last_measured_us);
        drained.add(&o.drained);
        last_drained = last_drained.max(o.last_drained_us);
        generator_busy.extend(o.busy);
        generator_core_busy.extend(o.core_busy);
        generator_resident_growth = generator_resident_growth.max(o.resident_growth);
        for (k, v) in o.errors_by_kind {
            *errors_by_kind.entry(k).or_default() += v;
        }
    }
    acked_ranges.normalize();
    // A run too short for any answer to arrive before its load generation ended (a scaled-down
    // W5 is still connecting its 1,000 producers then) is measured to its last answer instead.
    let window_empty = measured.produced_records == 0
        && measured.consumed_records == 0
        && measured.txn_committed == 0;
    if window_empty && last_drained > 0 {
        measured.add(&drained);
        last = last_drained;
    }
    let window_start = if spec.warmup_s > 0.0 {
        warmup_end_us
    } else {
        LOAD_START_US.min(first)
    };
    let mut measured_s = (last.saturating_sub(window_start)) as f64 / 1e6;
    if measured_s <= 0.0 {
        // Everything happened within one instant (tiny runs): use the whole run.
        measured_s = elapsed_s;
    }
    let reconciliation = if plan.e2e && plan.produce {
        Some(reconcile(
            &acked_ranges,
            &consumed_ranges,
            consumer.duplicates,
        ))
    } else {
        plan.verify
            .as_ref()
            .map(|v| reconcile(v, &consumed_ranges, consumer.duplicates))
    };
    Ok(RunOutcome {
        plan,
        topic,
        partitions: setup.layout.partitions(),
        intervals,
        measured,
        measured_s,
        elapsed_s,
        sent,
        acked,
        acked_wire_bytes: wire,
        produce_requests: requests,
        acked_batches: batches,
        produce_errored: errored,
        txn,
        consumer,
        acked_ranges,
        reconciliation,
        errors_by_kind,
        generator_busy,
        generator_core_busy,
        generator_resident_growth,
        host_steal,
    })
}

pub fn fmt_int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A bench core's thread CPU time (user + system) at a run-clock instant, with the process's
/// resident memory and its CPU's counters at the same moment.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuSample {
    wall_us: u64,
    cpu_us: u64,
    /// The process's resident memory, bytes (`None` if /proc cannot tell).
    resident_bytes: Option<u64>,
    /// The CPU the thread ran on and that CPU's time counters.
    core: Option<CoreTicks>,
}

/// One CPU's time counters from `/proc/stat`, in clock ticks: busy (user, nice, system, irq,
/// softirq, steal) and all of it (busy, idle, iowait).
#[derive(Debug, Clone, Copy, PartialEq)]
struct CoreTicks {
    cpu: usize,
    busy: u64,
    total: u64,
}

impl CoreTicks {
    /// The counters of the CPU the calling thread is on now.
    fn now() -> Option<CoreTicks> {
        // SAFETY: sched_getcpu takes no arguments and only reads the calling thread's CPU.
        let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        Self::parse(&stat, cpu)
    }

    /// The `cpuN` line of a `/proc/stat` text.
    fn parse(stat: &str, cpu: usize) -> Option<CoreTicks> {
        let name = format!("cpu{cpu}");
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
        Some(CoreTicks {
            cpu,
            busy,
            total: busy + at(3) + at(4),
        })
    }
}

/// The calling thread's CPU time (user + system), microseconds (`None` if the clock cannot be
/// read).
pub fn thread_cpu_us() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: fills `ts`, a valid timespec on this stack frame.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000)
}

impl CpuSample {
    /// The calling thread's CPU time now (`None` if the clock cannot be read), and what goes
    /// with it (each `None` if /proc cannot tell).
    fn now(wall_us: u64) -> Option<CpuSample> {
        thread_cpu_us().map(|cpu_us| CpuSample {
            wall_us,
            cpu_us,
            resident_bytes: resident_bytes(),
            core: CoreTicks::now(),
        })
    }
}

/// This process's resident set, bytes, from `/proc/self/statm` (its second field, in pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the running system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (page > 0).then(|| pages * page as u64)
}

/// This thread's CPU time as of run-clock time `at_us`, filled in by a task that waits for it
/// (stays `None` without a time, or if the run ends first).
fn cpu_sample_at(clock: Clock, at_us: Option<u64>) -> Rc<Cell<Option<CpuSample>>> {
    let sample = Rc::new(Cell::new(None));
    if let Some(at_us) = at_us {
        let sample = sample.clone();
        glommio::spawn_local(async move {
            let now = clock.now_us();
            if at_us > now {
                glommio::timer::sleep(Duration::from_micros(at_us - now)).await;
            }
            sample.set(CpuSample::now(clock.now_us()));
        })
        .detach();
    }
    sample
}

/// Shortest window worth a busy figure: below it, timer granularity and start-up dominate.
const BUSY_MIN_WINDOW_US: u64 = 100_000;

/// The two samples of a window worth a figure, and its wall time: `None` without both, or when
/// the window is shorter than [`BUSY_MIN_WINDOW_US`] (tiny runs end inside their warm-up).
fn window(start: Option<CpuSample>, end: Option<CpuSample>) -> Option<(CpuSample, CpuSample, u64)> {
    let (start, end) = (start?, end?);
    let wall = end.wall_us.checked_sub(start.wall_us)?;
    (wall >= BUSY_MIN_WINDOW_US).then_some((start, end, wall))
}

/// CPU time over wall time between two samples of one thread; `None` without a [`window`].
fn busy_between(start: Option<CpuSample>, end: Option<CpuSample>) -> Option<f64> {
    let (start, end, wall) = window(start, end)?;
    Some(end.cpu_us.saturating_sub(start.cpu_us) as f64 / wall as f64)
}

/// How busy the thread's CPU was between two samples, whoever used it: the thread, the kernel's
/// softirq work done there (loopback TCP's receive side runs on the sending core), other
/// processes. `None` without a [`window`], or if the thread was on different CPUs at the two
/// samples (not pinned).
fn core_busy_between(start: Option<CpuSample>, end: Option<CpuSample>) -> Option<f64> {
    let (start, end, _) = window(start, end)?;
    let (a, b) = (start.core?, end.core?);
    if a.cpu != b.cpu {
        return None;
    }
    let total = b.total.checked_sub(a.total).filter(|&t| t > 0)?;
    Some(b.busy.saturating_sub(a.busy) as f64 / total as f64)
}

/// Resident memory gained between two samples, bytes (negative if it shrank); `None` without a
/// [`window`], or without a resident figure.
fn resident_growth_between(start: Option<CpuSample>, end: Option<CpuSample>) -> Option<i64> {
    let (start, end, _) = window(start, end)?;
    let (start, end) = (start.resident_bytes?, end.resident_bytes?);
    Some(end as i64 - start as i64)
}

struct CoreArgs {
    core: usize,
    spec: LoadSpec,
    acks: i16,
    layout: TopicLayout,
    start: Vec<i64>,
    end: Vec<i64>,
    clock: Clock,
    warmup_end_us: u64,
    end_us: Option<u64>,
    total_producers: usize,
    total_consumers: usize,
    produce: bool,
    consume: bool,
    e2e: bool,
    producers_remaining: Arc<AtomicUsize>,
    consumed_total: Arc<AtomicU64>,
    tx: mpsc::Sender<Tick>,
}

async fn core_main(a: CoreArgs) -> CoreOutput {
    let probe = Rc::new(RefCell::new(CoreProbe {
        warmup_end_us: a.warmup_end_us,
        measured_end_us: a.end_us,
        ..Default::default()
    }));
    let clock = a.clock;
    let layout = Rc::new(a.layout);
    // This core's CPU time when the measured window opens (see `busy_between`), and when load
    // generation stops (`--duration-s`): the drain after it (waiting for the last
    // acknowledgements) would dilute the figure.
    let window_start = cpu_sample_at(clock, Some(a.warmup_end_us));
    let window_stop = cpu_sample_at(clock, a.end_us);
    // Ticker: ship this core's interval counters at every whole second of the run clock.
    let next_index = Rc::new(Cell::new(0u64));
    {
        let probe = probe.clone();
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
                let counters = std::mem::take(&mut probe.borrow_mut().interval);
                next_index.set(i + 1);
                if tx
                    .send(Tick::Interval {
                        index: i,
                        counters: Box::new(counters),
                    })
                    .is_err()
                {
                    return;
                }
            }
        })
        .detach();
    }

    let spec = &a.spec;
    let mut producer_tasks = Vec::new();
    if a.produce {
        let pool = Rc::new(PayloadPool::new(
            spec.random_fraction,
            spec.record_size,
            a.core as u64 * 7919 + 17,
        ));
        let ppc = spec.producers_per_core;
        for i in 0..ppc {
            let id = a.core * ppc + i;
            let records = spec.records.map(|n| {
                let share = n / a.total_producers as u64;
                share + u64::from((id as u64) < n % a.total_producers as u64)
            });
            let pspec = Rc::new(ProducerSpec {
                record_size: spec.record_size,
                keys: spec.keys,
                acks: a.acks,
                compression: spec.compression,
                linger_us: (spec.linger_ms * 1000.0) as u64,
                batch_bytes: spec.batch_bytes,
                max_in_flight: spec.max_in_flight,
                max_request_bytes: spec.max_request_bytes,
                ready_batches_max: (spec.buffer_bytes / spec.batch_bytes.max(1)).max(4),
                idempotent: spec.idempotent,
                transaction: (spec.transactional_records > 0).then_some(TxnSpec {
                    records: spec.transactional_records,
                    timeout_ms: spec.transaction_timeout_ms,
                }),
                rate: spec.rate.map(|r| r / a.total_producers as f64),
                records,
                end_us: a.end_us,
                start_us: LOAD_START_US,
            });
            let p = Producer::new(
                id as u32,
                pspec,
                layout.clone(),
                probe.clone(),
                pool.clone(),
                clock,
            );
            let remaining = a.producers_remaining.clone();
            producer_tasks.push(glommio::spawn_local(async move {
                let now = clock.now_us();
                if now < LOAD_START_US {
                    glommio::timer::sleep(Duration::from_micros(LOAD_START_US - now)).await;
                }
                let r = p.run().await;
                remaining.fetch_sub(1, Ordering::AcqRel);
                r
            }));
        }
    }
    let mut consumer_tasks = Vec::new();
    if a.consume {
        let cpc = spec.consumers_per_core;
        let stop = if a.e2e {
            StopRule::FollowProducers {
                producers_remaining: a.producers_remaining.clone(),
                drain_timeout_us: (spec.drain_timeout_s * 1e6) as u64,
            }
        } else {
            StopRule::EndOffsets(a.end.clone())
        };
        let cspec = Rc::new(ConsumerSpec {
            fetch_max_bytes: spec.fetch_max_bytes.min(i32::MAX as usize) as i32,
            fetch_partition_max_bytes: spec.fetch_partition_max_bytes.min(i32::MAX as usize) as i32,
            max_wait_ms: if a.e2e { 100 } else { 500 },
            e2e: a.e2e,
            stop,
            records: if a.produce { None } else { spec.records },
            consumed_total: a.consumed_total.clone(),
            end_us: if a.produce { None } else { a.end_us },
            stall_timeout_us: (spec.drain_timeout_s * 1e6) as u64,
            read_committed: spec.read_committed,
        });
        for i in 0..cpc {
            let cid = a.core * cpc + i;
            // Partitions p with p % consumers == cid, one task per leader.
            let mut by_leader: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
            for p in (0..layout.partitions()).filter(|p| p % a.total_consumers == cid) {
                by_leader
                    .entry(layout.leaders[p].clone())
                    .or_default()
                    .push((p as i32, a.start.get(p).copied().unwrap_or(0)));
            }
            for (leader, parts) in by_leader {
                consumer_tasks.push(glommio::spawn_local(run_consumer(
                    leader,
                    layout.topic.clone(),
                    parts,
                    cspec.clone(),
                    probe.clone(),
                    clock,
                )));
            }
        }
    }
    let mut out = CoreOutput {
        sent: 0,
        acked: 0,
        acked_wire_bytes: 0,
        requests: 0,
        acked_batches: 0,
        errored: 0,
        acked_ranges: Ranges::default(),
        txn: TxnCounts::default(),
        consumer: ConsumerResult::default(),
        measured: Counters::default(),
        first_measured_us: None,
        last_measured_us: 0,
        drained: Counters::default(),
        last_drained_us: 0,
        errors_by_kind: BTreeMap::new(),
        busy: None,
        core_busy: None,
        resident_growth: None,
    };
    let had_producers = !producer_tasks.is_empty();
    for t in producer_tasks {
        let r = t.await;
        out.sent += r.sent;
        out.acked += r.acked;
        out.acked_wire_bytes += r.acked_wire_bytes;
        out.requests += r.requests;
        out.acked_batches += r.acked_batches;
        out.errored += r.errored;
        out.txn.add(&r.txn);
    }
    out.acked_ranges = probe.borrow_mut().acked_offsets.take_ranges();
    let producers_done = if had_producers {
        CpuSample::now(clock.now_us())
    } else {
        None
    };
    for t in consumer_tasks {
        let r = t.await;
        out.consumer.consumed.merge(r.consumed);
        out.consumer.records += r.records;
        out.consumer.duplicates += r.duplicates;
        out.consumer.reordered += r.reordered;
        out.consumer.sequence_gaps += r.sequence_gaps;
        out.consumer.foreign += r.foreign;
        out.consumer.errors += r.errors;
        out.consumer.walk.add(&r.walk);
    }
    // The window closes at `--duration-s` or when this core's producers are done, whichever
    // came first (consumers only drain after that); without either, when its consumers are.
    let window_end = [window_stop.get(), producers_done]
        .into_iter()
        .flatten()
        .min_by_key(|s| s.wall_us)
        .or_else(|| CpuSample::now(clock.now_us()));
    out.busy = busy_between(window_start.get(), window_end);
    out.core_busy = core_busy_between(window_start.get(), window_end);
    out.resident_growth = resident_growth_between(window_start.get(), window_end);
    // The last, partial interval.
    let mut p = probe.borrow_mut();
    let counters = std::mem::take(&mut p.interval);
    let _ = a.tx.send(Tick::Interval {
        index: next_index.get(),
        counters: Box::new(counters),
    });
    let _ = a.tx.send(Tick::Done);
    out.measured = std::mem::take(&mut p.measured);
    out.first_measured_us = p.first_measured_us;
    out.last_measured_us = p.last_measured_us;
    out.drained = std::mem::take(&mut p.drained);
    out.last_drained_us = p.last_drained_us;
    out.errors_by_kind = std::mem::take(&mut p.errors_by_kind);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_past_its_end_is_abandoned_only_after_the_grace_without_progress() {
        let s = |x: u64| Duration::from_secs(x);
        let mut d = SettleDeadline::new(s(56));
        assert_eq!(d.expired(s(80)), None);
        assert_eq!(
            d.expired(s(87)),
            Some((31.0, 31.0)),
            "no progress since the end"
        );
        // Acknowledgements until second 80 (a backlog worked off): 30 s from there.
        d.progressed(s(70));
        d.progressed(s(80));
        d.progressed(s(75)); // a late interval does not move it back
        assert_eq!(d.expired(s(87)), None);
        assert_eq!(d.expired(s(110)), None);
        assert_eq!(d.expired(s(111)), Some((55.0, 31.0)));
    }

    fn at(wall_us: u64, cpu_us: u64) -> Option<CpuSample> {
        Some(CpuSample {
            wall_us,
            cpu_us,
            resident_bytes: None,
            core: None,
        })
    }

    fn on_core(sample: Option<CpuSample>, cpu: usize, busy: u64, total: u64) -> Option<CpuSample> {
        sample.map(|s| CpuSample {
            core: Some(CoreTicks { cpu, busy, total }),
            ..s
        })
    }

    #[test]
    fn core_busy_counts_every_busy_tick_of_the_same_cpu() {
        let stat = "cpu  10 0 10 100 0 0 0 0 0 0\n\
                    cpu0 1 2 3 4 5 6 7 8 9 10\n\
                    cpu1 700 0 200 0 50 0 90 10 0 0\n\
                    intr 1 2 3\n";
        // cpu1: user 700 + system 200 + softirq 90 + steal 10 busy; idle 0 + iowait 50 not.
        assert_eq!(
            CoreTicks::parse(stat, 1),
            Some(CoreTicks {
                cpu: 1,
                busy: 1000,
                total: 1050
            })
        );
        assert_eq!(
            CoreTicks::parse(stat, 0).map(|t| (t.busy, t.total)),
            Some((1 + 2 + 3 + 6 + 7 + 8, 36))
        );
        assert_eq!(CoreTicks::parse(stat, 2), None);

        let start = on_core(at(1_000_000, 0), 1, 1_000, 2_000);
        let end = on_core(at(3_000_000, 0), 1, 1_180, 2_200);
        assert_eq!(core_busy_between(start, end), Some(0.9));
        // Another CPU at the end (not pinned), no counters, or no window: no figure.
        assert_eq!(
            core_busy_between(start, on_core(at(3_000_000, 0), 0, 1_180, 2_200)),
            None
        );
        assert_eq!(core_busy_between(start, at(3_000_000, 0)), None);
        assert_eq!(
            core_busy_between(start, on_core(at(1_000_001, 0), 1, 1_001, 2_001)),
            None
        );
    }

    fn with_resident(sample: Option<CpuSample>, bytes: u64) -> Option<CpuSample> {
        sample.map(|s| CpuSample {
            resident_bytes: Some(bytes),
            ..s
        })
    }

    #[test]
    fn resident_growth_is_taken_over_the_same_window_as_busy() {
        let start = with_resident(at(1_000_000, 0), 100 << 20);
        let end = with_resident(at(3_000_000, 1_000), 612 << 20);
        assert_eq!(resident_growth_between(start, end), Some(512 << 20));
        assert_eq!(
            resident_growth_between(end, with_resident(at(4_000_000, 2_000), 0)),
            Some(-(612 << 20))
        );
        // No resident figure, or no window worth a figure.
        assert_eq!(resident_growth_between(at(1_000_000, 0), end), None);
        let short = with_resident(at(1_000_001, 1), 1 << 30);
        assert_eq!(resident_growth_between(start, short), None);
    }

    #[test]
    fn the_resident_set_grows_by_what_this_process_touches() {
        // Fresh pages from the kernel: the allocator might hand back memory it already holds.
        const LEN: usize = 64 << 20;
        // SAFETY: an anonymous private mapping of LEN bytes, unmapped below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        let before = resident_bytes().expect("/proc/self/statm");
        // SAFETY: the mapping is LEN writable bytes.
        unsafe { std::ptr::write_bytes(map as *mut u8, 1, LEN) };
        let after = resident_bytes().expect("/proc/self/statm");
        // SAFETY: unmaps the mapping made above.
        unsafe { libc::munmap(map, LEN) };
        // Other tests run in this process meanwhile and may free memory, but not 32 MiB of it.
        assert!(
            after >= before + (32 << 20),
            "before {before}, after {after}"
        );
    }

    #[test]
    fn busy_is_cpu_time_over_wall_time_of_a_long_enough_window() {
        assert_eq!(
            busy_between(at(1_000_000, 0), at(3_000_000, 1_980_000)),
            Some(0.99)
        );
        assert_eq!(busy_between(at(0, 500), at(1_000_000, 250_500)), Some(0.25));
        // No window: a run that ended inside its warm-up, or a sample that failed.
        assert_eq!(busy_between(None, at(3_000_000, 1)), None);
        assert_eq!(busy_between(at(1_000_000, 0), None), None);
        assert_eq!(busy_between(at(3_000_000, 0), at(1_000_000, 5)), None);
        assert_eq!(busy_between(at(0, 0), at(BUSY_MIN_WINDOW_US - 1, 1)), None);
    }

    #[test]
    fn a_spinning_thread_reads_about_one_core() {
        let start = CpuSample::now(0).expect("thread clock");
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_millis(150) {
            std::hint::black_box(0u64);
        }
        let wall = t0.elapsed().as_micros() as u64;
        let end = CpuSample::now(wall).expect("thread clock");
        let busy = busy_between(Some(start), Some(end)).expect("window");
        // Spinning uses its core the whole time, unless the machine takes it away now and then.
        assert!(busy > 0.5 && busy <= 1.05, "busy {busy}");
    }
}
