//! `odradek-bench`: a load generator and benchmark harness for any Kafka-compatible broker.
//!
//! The command line (clap) and the glue between a run ([`run`]), its report ([`report`]), the
//! machine's ceiling ([`ceiling`]) and workload files ([`workload`]). The client itself is in
//! [`client`]; per-core measurement and record accounting in [`stats`]; the consumer-group
//! rebalance benchmark in [`rebalance`]; the drift/leak soak in [`soak`].
//!
//! Exit status: 0 clean run; 1 the run had errors, lost or duplicated records; 2 it could not run
//! (or could not finish: a core still busy after the run's end, nothing acknowledged for 30 s).

mod ceiling;
mod client;
mod rebalance;
mod report;
mod run;
mod soak;
mod stats;
mod steal;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::ceiling::CeilingSpec;
use crate::run::{RunOutcome, RunPlan, StartAt};
use crate::stats::Ranges;
use crate::workload::{LoadSpec, Mode, Workload};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "odradek-bench",
    version,
    about = "Load generator and benchmark harness for Kafka-compatible brokers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Produce records (closed loop, or open loop with --rate).
    Produce {
        #[command(flatten)]
        load: LoadSpec,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Consume a topic from the earliest (or latest) offsets to its end at start.
    Consume {
        #[command(flatten)]
        load: LoadSpec,
        #[command(flatten)]
        out: OutArgs,
        /// Start at the latest offsets instead of the earliest.
        #[arg(long)]
        from_latest: bool,
        /// Acknowledged ranges written by `produce --acked-out`: check every one was consumed.
        #[arg(long)]
        verify: Option<PathBuf>,
    },
    /// Producers and consumers at once; end-to-end latency from the payload timestamp; checks
    /// that every acknowledged record was consumed.
    E2e {
        #[command(flatten)]
        load: LoadSpec,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Run a named workload file and write perf/results/<name>-<date>.{json,svg}.
    Suite(SuiteArgs),
    /// Time for a consumer group to stabilise after one member joins, and the consume dip.
    Rebalance(rebalance::RebalanceSpec),
    /// A bounded fixed-rate produce/consume/group run with retention and compaction active:
    /// throughput, p99, broker RSS and FDs per interval, and a drift/leak verdict.
    Soak(Box<soak::SoakSpec>),
    /// Measure loopback TCP and O_DIRECT disk bandwidth with the bench's pinning.
    Ceiling {
        #[command(flatten)]
        c: CeilingArgs,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Args, Clone)]
struct OutArgs {
    /// Write the JSON record here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the SVG picture here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Write the acknowledged offset ranges here (for `consume --verify`).
    #[arg(long)]
    acked_out: Option<PathBuf>,
    /// No per-second progress lines.
    #[arg(long)]
    quiet: bool,
    /// Name recorded in the JSON (default: the subcommand).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args, Clone)]
struct CeilingArgs {
    /// Bench client cores (the TCP sender and the disk writer use the first).
    #[arg(long, default_value = "1")]
    cores: String,
    /// CPU for the TCP receiver (the broker's core).
    #[arg(long)]
    server_cpu: Option<usize>,
    /// Directory on the broker's data disk.
    #[arg(long, default_value = ".")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 3.0)]
    tcp_seconds: f64,
    #[arg(long, default_value_t = 2048)]
    disk_mib: u64,
    #[arg(long, default_value_t = 16)]
    sync_mib: u64,
    /// Also measure the disk's acks=all latency floor at this rate, MB/s: group-commit rounds
    /// of write + fdatasync on one file, open loop.
    #[arg(long)]
    floor_rate_mb: Option<f64>,
    #[arg(long, default_value_t = 10.0)]
    floor_seconds: f64,
    /// Files each floor round writes and syncs (a workload's partitions).
    #[arg(long, default_value_t = 1)]
    floor_files: usize,
    /// Also measure the write + fdatasync bandwidth over this many growing files, closed loop:
    /// rounds of 1 MiB written to each, then each fdatasynced (a workload's partitions).
    #[arg(long)]
    rounds_files: Option<usize>,
    #[arg(long, default_value_t = 3.0)]
    rounds_seconds: f64,
    /// Also measure loopback request/reply over this many connections, one request in flight
    /// on each, the server on `--server-cpu` answering every request and doing nothing else.
    #[arg(long)]
    request_connections: Option<usize>,
    /// Request size for the request/reply ceiling (default: a Produce request carrying one
    /// keyed 1 KiB record, as W5's producers send while the broker keeps up).
    #[arg(long)]
    request_bytes: Option<usize>,
    /// Answer size for the request/reply ceiling (default: that request's Produce answer).
    #[arg(long)]
    reply_bytes: Option<usize>,
    #[arg(long, default_value_t = 5.0)]
    request_seconds: f64,
    #[arg(long, value_enum, default_value = "syscalls")]
    request_path: ceiling::RequestPath,
}

#[derive(Args, Clone)]
struct SuiteArgs {
    /// Workload name (file bench/workloads/<name>.toml) or a path to a workload file.
    name: String,
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "1")]
    cores: String,
    #[arg(long, default_value = "bench/workloads")]
    workloads_dir: PathBuf,
    #[arg(long, default_value = "perf/results")]
    results_dir: PathBuf,
    /// Multiply durations, record counts and prefill sizes (e.g. 0.1 for a quick check).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Skip the ceiling measurement.
    #[arg(long)]
    no_ceiling: bool,
    #[command(flatten)]
    ceiling: SuiteCeiling,
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Clone)]
struct SuiteCeiling {
    /// CPU for the ceiling's TCP receiver (the broker's core).
    #[arg(long)]
    server_cpu: Option<usize>,
    /// The broker's data directory (for the disk ceiling).
    #[arg(long, default_value = ".")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 1024)]
    disk_mib: u64,
}

/// The `--acked-out` file.
#[derive(Serialize, Deserialize)]
struct AckedFile {
    topic: String,
    acked: Ranges,
}

fn main() -> ExitCode {
    odradek::allocator::keep_freed_memory();
    let cli = Cli::parse();
    run::install_stop_signals();
    match dispatch(cli.cmd) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("odradek-bench: {e}");
            ExitCode::from(2)
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn dispatch(cmd: Cmd) -> Res<bool> {
    match cmd {
        Cmd::Produce { load, out } => finish(
            "produce",
            run::run(plan(load, true, false, false, &out))?,
            &out,
            None,
        ),
        Cmd::E2e { load, out } => finish(
            "e2e",
            run::run(plan(load, true, true, true, &out))?,
            &out,
            None,
        ),
        Cmd::Consume {
            mut load,
            out,
            from_latest,
            verify,
        } => {
            let mut p = plan(load.clone(), false, true, false, &out);
            if let Some(path) = verify {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                let f: AckedFile = serde_json::from_str(&text)
                    .map_err(|e| format!("parsing {}: {e}", path.display()))?;
                load.topic.get_or_insert(f.topic);
                p.spec = load;
                p.verify = Some(f.acked);
            }
            if from_latest {
                p.start_at = StartAt::Latest;
            }
            finish("consume", run::run(p)?, &out, None)
        }
        Cmd::Ceiling { c, json } => {
            let mut spec = CeilingSpec {
                cores: workload::parse_cores(&c.cores)?,
                server_cpu: c.server_cpu,
                data_dir: c.data_dir.clone(),
                tcp_seconds: c.tcp_seconds,
                disk_mib: c.disk_mib,
                sync_mib: c.sync_mib,
                floor_rate_bytes: c.floor_rate_mb.map(|mb| mb * 1e6),
                floor_seconds: c.floor_seconds,
                floor_files: c.floor_files,
                rounds_files: c.rounds_files,
                rounds_seconds: c.rounds_seconds,
                requests: None,
            };
            spec.requests = c.request_connections.map(|connections| {
                let (req, reply) = one_record_exchange(1024, true);
                ceiling::RequestShape {
                    path: c.request_path,
                    connections,
                    request_bytes: c.request_bytes.unwrap_or(req),
                    reply_bytes: c.reply_bytes.unwrap_or(reply),
                    seconds: c.request_seconds,
                }
            });
            let mut r = ceiling::measure(&spec)?;
            r.durable_floor = ceiling::measure_floor(&spec)?;
            r.disk_rounds = ceiling::measure_rounds(&spec)?;
            println!(
                "loopback TCP {:.1} MB/s (client cpu {:?}, server cpu {:?}); O_DIRECT write+fdatasync {:.1} MB/s ({} MiB, 1 MiB writes, sync every {} MiB); O_DIRECT sequential read {:.1} MB/s{}",
                r.tcp_mb_per_s, r.tcp_client_cpu, r.tcp_server_cpu, r.disk_mb_per_s, c.disk_mib, c.sync_mib, r.disk_read_mb_per_s, steal::ceiling_suffix(&r.host_steal)
            );
            if let Some(f) = &r.durable_floor {
                println!("{}", floor_line(f));
            }
            if let Some(d) = &r.disk_rounds {
                println!("{}", rounds_line(d));
            }
            if let Some(q) = &r.request_reply {
                println!("{}", request_line(q));
            }
            if let Some(p) = json {
                report::write_json(&p, &serde_json::to_value(&r)?)?;
            }
            Ok(true)
        }
        Cmd::Suite(s) => suite(s),
        Cmd::Rebalance(r) => Ok(rebalance::run_rebalance(r)?),
        Cmd::Soak(s) => Ok(soak::run_soak(*s)?),
    }
}

fn plan(spec: LoadSpec, produce: bool, consume: bool, e2e: bool, out: &OutArgs) -> RunPlan {
    RunPlan {
        spec,
        produce,
        consume,
        e2e,
        start_at: if e2e {
            StartAt::Latest
        } else {
            StartAt::Earliest
        },
        verify: None,
        progress: !out.quiet,
    }
}

/// Request and answer frame sizes of one record sent on its own (see
/// [`client::producer::one_record_exchange_bytes`]), for a topic named like the bench's.
fn one_record_exchange(record_size: usize, keyed: bool) -> (usize, usize) {
    client::producer::one_record_exchange_bytes(record_size, keyed, "bench-1764870000")
}

fn request_line(q: &ceiling::RequestCeiling) -> String {
    let busy = |b: Option<f64>| b.map_or("?".to_string(), |b| format!("{b:.2}"));
    format!(
        "loopback request/reply ceiling: {:.0} requests/s ({:?}, {} connections, {} B requests, {} B answers, one in flight each; client core {} busy, server core {} busy)",
        q.requests_per_s,
        q.shape.path,
        q.shape.connections,
        q.shape.request_bytes,
        q.shape.reply_bytes,
        busy(q.client_busy),
        busy(q.server_busy),
    )
}

fn rounds_line(d: &ceiling::DiskRounds) -> String {
    format!(
        "disk in rounds over {} file(s) ({} KiB written to each, then each fdatasynced; {} rounds in {:.1} s): {:.1} MB/s",
        d.files,
        d.chunk_bytes >> 10,
        d.rounds,
        d.seconds,
        d.mb_per_s
    )
}

fn floor_line(f: &ceiling::DurableFloor) -> String {
    let ms = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0) / 1e3;
    format!(
        "disk floor for acks=all at {:.1} MB/s (write + fdatasync rounds over {} file(s), {} rounds in {:.1} s): arrival to durable p50 {:.2} ms, p99 {:.2}, p99.9 {:.2}, max {:.2}; round p50 {:.2} ms, p99 {:.2}",
        f.rate_mb_per_s,
        f.files,
        f.rounds,
        f.seconds,
        ms(&f.latency_us, "p50"),
        ms(&f.latency_us, "p99"),
        ms(&f.latency_us, "p99_9"),
        ms(&f.latency_us, "max"),
        ms(&f.round_us, "p50"),
        ms(&f.round_us, "p99"),
    ) + &steal::ceiling_suffix(&f.host_steal)
}

/// Prints the summary, writes the requested files, says whether the run was clean.
fn finish(
    name: &str,
    o: RunOutcome,
    out: &OutArgs,
    ceiling: Option<&serde_json::Value>,
) -> Res<bool> {
    let name = out.name.as_deref().unwrap_or(name);
    print!("{}", report::summary_text(&o));
    let v = report::to_json(name, &o, ceiling);
    if let Some(f) = &v.get("fraction_of_ceiling") {
        println!("fraction of ceiling: {f}");
    }
    if let Some(p) = &out.json {
        report::write_json(p, &v)?;
    }
    if let Some(p) = &out.svg {
        report::write_svg(p, &format!("odradek-bench {name}"), &o)?;
    }
    if let Some(p) = &out.acked_out {
        let f = AckedFile {
            topic: o.topic.clone(),
            acked: o.acked_ranges.clone(),
        };
        std::fs::write(p, serde_json::to_string(&f)?)
            .map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    Ok(o.ok())
}

fn suite(s: SuiteArgs) -> Res<bool> {
    let path = if s.name.ends_with(".toml") || s.name.contains('/') {
        PathBuf::from(&s.name)
    } else {
        s.workloads_dir.join(format!("{}.toml", s.name))
    };
    let w = Workload::load_file(&path)?;
    let mut load = w.load.clone();
    load.bootstrap = s.bootstrap.clone();
    load.cores = s.cores.clone();
    load.duration_s = load.duration_s.map(|d| d * s.scale);
    load.warmup_s *= s.scale.min(1.0);
    load.records = load.records.map(|r| ((r as f64 * s.scale) as u64).max(1));
    load.pretouch_mb = (load.pretouch_mb as f64 * s.scale.min(1.0)) as usize;
    if let (Some(of), Some(frac)) = (&w.rate_fraction_of, w.rate_fraction) {
        let best = latest_rate(&s.results_dir, of)?;
        load.rate = Some(best * frac);
        println!(
            "rate: {frac} x {best:.0} rec/s (latest {of} result) = {:.0} rec/s",
            best * frac
        );
    }
    std::fs::create_dir_all(&s.results_dir)?;
    let mut floor_spec = None;
    let ceiling = if s.no_ceiling {
        None
    } else {
        let mut spec = CeilingSpec {
            cores: workload::parse_cores(&s.cores)?,
            server_cpu: s.ceiling.server_cpu,
            data_dir: s.ceiling.data_dir.clone(),
            tcp_seconds: 3.0,
            disk_mib: s.ceiling.disk_mib,
            sync_mib: 16,
            // A latency workload at an offered rate: what the disk alone charges an
            // acknowledgement at that rate.
            floor_rate_bytes: match w.mode {
                Mode::E2e => load.rate.map(|r| r * load.record_size as f64),
                Mode::Produce | Mode::Consume => None,
            },
            floor_seconds: load.duration_s.unwrap_or(10.0).min(10.0),
            floor_files: load.partitions as usize,
            // A throughput workload over several partitions: what the disk gives its shape
            // (a round of writes, then an fdatasync per partition).
            rounds_files: match (w.mode, load.rate) {
                (Mode::Produce, None) if load.partitions > 1 => Some(load.partitions as usize),
                _ => None,
            },
            rounds_seconds: (3.0 * s.scale).clamp(0.5, 3.0),
            requests: None,
        };
        if w.request_ceiling {
            // As many connections as the run has producers, each sending one record at a time.
            let (req, reply) = one_record_exchange(load.record_size, load.keys > 0);
            spec.requests = Some(ceiling::RequestShape {
                path: ceiling::RequestPath::Syscalls,
                connections: load.producers_per_core * workload::parse_cores(&s.cores)?.count(),
                request_bytes: req,
                reply_bytes: reply,
                seconds: (5.0 * s.scale).clamp(0.2, 5.0),
            });
        }
        let c = ceiling::measure(&spec)?;
        println!(
            "ceiling: loopback TCP {:.1} MB/s, O_DIRECT write+fdatasync {:.1} MB/s, O_DIRECT read {:.1} MB/s{}",
            c.tcp_mb_per_s, c.disk_mb_per_s, c.disk_read_mb_per_s, steal::ceiling_suffix(&c.host_steal)
        );
        if let Some(q) = &c.request_reply {
            println!("{}", request_line(q));
        }
        floor_spec = Some(spec);
        Some(c)
    };
    println!("workload {}: {}", w.name, w.description);
    let progress = !s.quiet;
    let outcome = match w.mode {
        Mode::Produce | Mode::E2e => {
            let e2e = w.mode == Mode::E2e;
            run::run(RunPlan {
                spec: load,
                produce: true,
                consume: e2e,
                e2e,
                start_at: StartAt::Latest,
                verify: None,
                progress,
            })?
        }
        Mode::Consume => {
            let bytes = (w.prefill_bytes.unwrap_or(1 << 30) as f64 * s.scale) as u64;
            let mut pre = load.clone();
            pre.records = Some((bytes / load.record_size as u64).max(1));
            pre.duration_s = None;
            pre.rate = None;
            pre.warmup_s = 0.0;
            println!(
                "prefill: {} records of {} bytes",
                pre.records.unwrap_or(0),
                load.record_size
            );
            let p = run::run(RunPlan::prefill(pre))?;
            print!("{}", report::summary_text(&p));
            if !p.ok() {
                return Ok(false);
            }
            let mut c = load;
            c.topic = Some(p.topic.clone());
            c.records = None;
            c.duration_s = None;
            run::run(RunPlan {
                spec: c,
                produce: false,
                consume: true,
                e2e: false,
                start_at: StartAt::Earliest,
                verify: Some(p.acked_ranges.clone()),
                progress,
            })?
        }
    };
    let stamp = report::utc_now().replace(':', "");
    let base = s.results_dir.join(format!("{}-{}", w.name, stamp));
    let out = OutArgs {
        json: Some(base.with_extension("json")),
        svg: Some(base.with_extension("svg")),
        acked_out: None,
        quiet: s.quiet,
        name: None,
    };
    // The floor after the workload (see `ceiling::measure_floor`), in the same run.
    let ceiling = match (ceiling, floor_spec) {
        (Some(mut c), Some(spec)) => {
            c.durable_floor = ceiling::measure_floor(&spec)?;
            if let Some(f) = &c.durable_floor {
                println!("{}", floor_line(f));
            }
            c.disk_rounds = ceiling::measure_rounds(&spec)?;
            if let Some(d) = &c.disk_rounds {
                println!("{}", rounds_line(d));
            }
            Some(serde_json::to_value(&c)?)
        }
        (c, _) => c.map(|c| serde_json::to_value(&c)).transpose()?,
    };
    let ok = finish(&w.name, outcome, &out, ceiling.as_ref())?;
    println!("wrote {}.{{json,svg}}", base.display());
    Ok(ok)
}

/// Best records/s of the newest `<name>-*.json` in the results directory.
fn latest_rate(dir: &Path, name: &str) -> Res<f64> {
    let mut newest: Option<PathBuf> = None;
    for e in std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
        let p = e?.path();
        let f = p.file_name().and_then(|f| f.to_str()).unwrap_or("");
        if f.starts_with(&format!("{name}-"))
            && f.ends_with(".json")
            && newest.as_ref().is_none_or(|n| p > *n)
        {
            newest = Some(p);
        }
    }
    let p = newest.ok_or_else(|| {
        format!(
            "no {name}-*.json in {}: run `suite {name}` first",
            dir.display()
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p)?)?;
    v["produce"]["records_per_s"]
        .as_f64()
        .ok_or_else(|| format!("{}: no produce.records_per_s", p.display()).into())
}
