//! Results of a run as people and programs read them: the end-of-run summary text, the JSON
//! record (`perf/results/<name>-<date>.json`), and the picture (SVG: throughput per second and
//! the latency percentile distribution). Latency figures come from HdrHistograms in µs.

use std::path::Path;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::run::{fmt_int, RunOutcome, GENERATOR_SATURATED};
use crate::steal::{self, StealDelta};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("drawing {path}: {detail}")]
    Draw { path: String, detail: String },
}

pub fn percentiles(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p99_9": h.value_at_quantile(0.999),
        "p99_99": h.value_at_quantile(0.9999),
        "max": h.max(),
        "mean": (h.mean() * 10.0).round() / 10.0,
    })
}

fn lat_line(h: &Histogram<u64>) -> String {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    format!(
        "p50 {:.2} ms, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, p99.99 {:.2}, max {:.2} ({} samples)",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        ms(0.9999),
        h.max() as f64 / 1e3,
        h.len()
    )
}

/// Records/s and MB/s over the measured window.
pub fn rates(records: u64, bytes: u64, secs: f64) -> (f64, f64) {
    if secs <= 0.0 {
        return (0.0, 0.0);
    }
    (records as f64 / secs, bytes as f64 / 1e6 / secs)
}

/// Acknowledged records per batch and batches per answered request, over the whole run (warm-up
/// included): how much each request and each batch carried.
fn shape_of_requests(o: &RunOutcome) -> Option<(f64, f64)> {
    if o.produce_requests == 0 || o.acked_batches == 0 {
        return None;
    }
    Some((
        o.acked as f64 / o.acked_batches as f64,
        o.acked_batches as f64 / o.produce_requests as f64,
    ))
}

/// The human summary printed at the end of a run.
pub fn summary_text(o: &RunOutcome) -> String {
    let mut s = String::new();
    let m = &o.measured;
    s.push_str(&format!(
        "topic {} ({} partitions), {:.1} s, measured window {:.1} s\n",
        o.topic, o.partitions, o.elapsed_s, o.measured_s
    ));
    if o.plan.produce {
        let (r, mb) = rates(m.produced_records, m.produced_bytes, o.measured_s);
        s.push_str(&format!(
            "produce: sent {}, acknowledged {}, errored {}; {} rec/s, {:.1} MB/s\n",
            fmt_int(o.sent),
            fmt_int(o.acked),
            fmt_int(o.produce_errored),
            fmt_int(r as u64),
            mb
        ));
        s.push_str(&format!(
            "  produce latency: {}\n",
            lat_line(&m.produce_latency_us)
        ));
        if let Some((per_batch, per_request)) = shape_of_requests(o) {
            s.push_str(&format!(
                "  {} requests, {} batches: {per_batch:.2} records per batch, {per_request:.2} batches per request\n",
                fmt_int(o.produce_requests),
                fmt_int(o.acked_batches),
            ));
        }
        if o.plan.spec.transactional_records > 0 {
            s.push_str(&format!(
                "  transactions of {} records: committed {} ({:.1}/s), aborted {}, retried coordinator answers {}\n",
                o.plan.spec.transactional_records,
                fmt_int(o.txn.committed),
                rates(m.txn_committed, 0, o.measured_s).0,
                o.txn.aborted,
                fmt_int(o.txn.retried_answers)
            ));
            s.push_str(&format!(
                "  commit (EndTxn) latency: {}\n",
                lat_line(&m.commit_latency_us)
            ));
            s.push_str(&format!(
                "  AddPartitionsToTxn latency (retries included): {}\n",
                lat_line(&m.add_partitions_latency_us)
            ));
        }
    }
    if o.plan.consume {
        let (r, mb) = rates(m.consumed_records, m.consumed_bytes, o.measured_s);
        s.push_str(&format!(
            "consume: {} records; {} rec/s, {:.1} MB/s; sequence gaps {}, reordered {}, foreign records {}\n",
            fmt_int(o.consumer.records),
            fmt_int(r as u64),
            mb,
            o.consumer.sequence_gaps,
            o.consumer.reordered,
            o.consumer.foreign
        ));
        let c = &o.consumer;
        if c.transactional_records + c.commit_markers + c.abort_markers > 0 {
            s.push_str(&format!(
                "  transactional records {}, commit markers {}, abort markers {}, aborted records skipped {}{}\n",
                fmt_int(c.transactional_records),
                fmt_int(c.commit_markers),
                fmt_int(c.abort_markers),
                fmt_int(c.aborted_records),
                if o.plan.spec.read_committed { " (read_committed)" } else { "" }
            ));
        }
        if o.plan.e2e {
            s.push_str(&format!(
                "  end-to-end latency: {}\n",
                lat_line(&m.e2e_latency_us)
            ));
        }
    }
    if let Some(r) = &o.reconciliation {
        s.push_str(&r.line());
        s.push('\n');
    }
    if let Some(line) = generator_line(o) {
        s.push_str(&line);
        s.push('\n');
    }
    if let Some(line) = steal_line(&o.host_steal) {
        s.push_str(&line);
        s.push('\n');
    }
    if o.errors_by_kind.is_empty() {
        s.push_str("errors: none\n");
    } else {
        for (k, v) in &o.errors_by_kind {
            s.push_str(&format!("error: {k}: {v}\n"));
        }
    }
    s
}

pub fn machine() -> Value {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    // Other work on a shared machine skews figures: keep the load average with them.
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    json!({
        "load_average": load_average,
        "hostname": host,
        "kernel": kernel,
        "cpu": cpu,
        // Online CPUs of the machine (available_parallelism would report the taskset mask).
        "cpus": unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) },
    })
}

/// UTC date-time "YYYY-MM-DDTHH:MM:SSZ" from the system clock (no date crate needed).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// How busy the load generator's cores were, with a warning when one was near its limit.
fn generator_line(o: &RunOutcome) -> Option<String> {
    let busiest = o.generator_busiest()?;
    let cores = o.generator_busy.len().max(o.generator_core_busy.len());
    let mut line = format!(
        "load generator: busiest core {busiest:.2} busy while generating load ({} core{})",
        cores,
        if cores == 1 { "" } else { "s" }
    );
    if let (Some(thread), Some(cpu)) = (
        o.generator_busy.iter().copied().reduce(f64::max),
        o.generator_core_busy.iter().copied().reduce(f64::max),
    ) {
        line.push_str(&format!(
            " (its thread {thread:.2}, its CPU {cpu:.2} with the kernel's work there)"
        ));
    }
    if let Some(g) = o.generator_resident_growth {
        line.push_str(&format!(
            "; its resident memory grew {:.0} MB in the measured window",
            g as f64 / 1e6
        ));
    }
    if busiest >= GENERATOR_SATURATED {
        line.push_str(
            "; WARNING: at or near its limit, these figures may measure odradek-bench, not the broker",
        );
    }
    Some(line)
}

/// What the VM's host took from each CPU over the measured window, with a warning when it
/// was enough to make the figures incomparable (`None` without a reading).
fn steal_line(host_steal: &[StealDelta]) -> Option<String> {
    if host_steal.is_empty() {
        return None;
    }
    let mut line = format!(
        "host steal (CPU time the VM's host gave elsewhere) in the measured window: {}",
        steal::per_cpu_text(host_steal)
    );
    if steal::max_fraction(host_steal) >= steal::STEAL_WARNING {
        line.push_str(&format!(
            "; WARNING: {:.0}% or more of a CPU was taken, compare these figures only with runs \
             that lost as much",
            steal::STEAL_WARNING * 100.0
        ));
    }
    Some(line)
}

/// The JSON record of a run.
pub fn to_json(name: &str, o: &RunOutcome, ceiling: Option<&Value>) -> Value {
    let m = &o.measured;
    let mode = if o.plan.e2e {
        "e2e"
    } else if o.plan.produce {
        "produce"
    } else {
        "consume"
    };
    let mut v = json!({
        "name": name,
        "mode": mode,
        "date": utc_now(),
        "machine": machine(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "config": o.plan.spec,
        "topic": o.topic,
        "partitions": o.partitions,
        "elapsed_s": o.elapsed_s,
        "measured_s": o.measured_s,
        "ok": o.ok(),
        "errors": o.errors_by_kind,
        "intervals": o.intervals,
        "host_steal": steal::by_cpu(&o.host_steal),
    });
    if o.plan.produce {
        let (r, mb) = rates(m.produced_records, m.produced_bytes, o.measured_s);
        v["produce"] = json!({
            "sent": o.sent,
            "acknowledged": o.acked,
            "errored": o.produce_errored,
            // Batches as sent (compressed): the wire and disk bytes, vs value bytes (mb_per_s).
            "wire_bytes": o.acked_wire_bytes,
            "requests": o.produce_requests,
            "batches": o.acked_batches,
            "records_per_s": r.round(),
            "mb_per_s": (mb * 10.0).round() / 10.0,
            "latency_us": percentiles(&m.produce_latency_us),
        });
        if o.plan.spec.transactional_records > 0 {
            v["produce"]["transactions"] = json!({
                "records_per_transaction": o.plan.spec.transactional_records,
                "committed": o.txn.committed,
                "aborted": o.txn.aborted,
                "retried_answers": o.txn.retried_answers,
                "committed_per_s": (rates(m.txn_committed, 0, o.measured_s).0 * 10.0).round() / 10.0,
                "commit_latency_us": percentiles(&m.commit_latency_us),
                "add_partitions_latency_us": percentiles(&m.add_partitions_latency_us),
            });
        }
    }
    if o.plan.consume {
        let (r, mb) = rates(m.consumed_records, m.consumed_bytes, o.measured_s);
        v["consume"] = json!({
            "records": o.consumer.records,
            "records_per_s": r.round(),
            "mb_per_s": (mb * 10.0).round() / 10.0,
            "sequence_gaps": o.consumer.sequence_gaps,
            "duplicates": o.consumer.duplicates,
            "reordered": o.consumer.reordered,
            "foreign": o.consumer.foreign,
            "errors": o.consumer.errors,
            "read_committed": o.plan.spec.read_committed,
            "transactional_records": o.consumer.transactional_records,
            "commit_markers": o.consumer.commit_markers,
            "abort_markers": o.consumer.abort_markers,
            "aborted_records": o.consumer.aborted_records,
        });
        if o.plan.e2e {
            v["e2e_latency_us"] = percentiles(&m.e2e_latency_us);
        }
    }
    if let Some(r) = &o.reconciliation {
        v["accounting"] = json!(r);
    }
    if let Some(busiest) = o.generator_busiest() {
        v["generator"] = json!({
            "core_busy": o.generator_busy.iter().map(|b| (b * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
            "cpu_busy": o.generator_core_busy.iter().map(|b| (b * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
            "saturated": busiest >= GENERATOR_SATURATED,
            "resident_growth_mb": o.generator_resident_growth.map(|g| (g as f64 / 1e5).round() / 10.0),
        });
    }
    if let Some(c) = ceiling {
        v["ceiling"] = c.clone();
        // Against the ceilings, count the bytes that cross the wire and reach the disk:
        // value MB/s scaled by the compression ratio of what was acknowledged.
        let ratio = if o.acked_wire_bytes > 0 && m.produced_bytes > 0 && o.acked > 0 {
            o.acked_wire_bytes as f64 / (o.acked as f64 * o.plan.spec.record_size as f64)
        } else {
            1.0
        };
        let mbps = v["produce"]["mb_per_s"]
            .as_f64()
            .map(|x| x * ratio)
            .or_else(|| v["consume"]["mb_per_s"].as_f64())
            .unwrap_or(0.0);
        if let (Some(tcp), Some(disk)) = (c["tcp_mb_per_s"].as_f64(), c["disk_mb_per_s"].as_f64()) {
            v["fraction_of_ceiling"] = json!({
                "tcp": (mbps / tcp * 1000.0).round() / 1000.0,
                "disk": (mbps / disk * 1000.0).round() / 1000.0,
            });
            // The disk in the workload's own shape (one fdatasync per partition per round).
            if let Some(r) = c["disk_rounds"]["mb_per_s"].as_f64().filter(|r| *r > 0.0) {
                v["fraction_of_ceiling"]["disk_rounds"] =
                    json!((mbps / r * 1000.0).round() / 1000.0);
            }
            if let Some(read) = c["disk_read_mb_per_s"].as_f64().filter(|r| *r > 0.0) {
                v["fraction_of_ceiling"]["disk_read"] =
                    json!((mbps / read * 1000.0).round() / 1000.0);
            }
            // Records/s over one-record requests/s: above 1, the run carried more records than
            // this machine can carry one request per record.
            let records = v["produce"]["records_per_s"].as_f64();
            let requests = c["request_reply"]["requests_per_s"].as_f64();
            if let (Some(r), Some(q)) = (records, requests.filter(|q| *q > 0.0)) {
                v["fraction_of_ceiling"]["request_reply"] =
                    json!((r / q * 1000.0).round() / 1000.0);
            }
        }
        // Latency against what the disk alone charges an acknowledgement at this rate.
        let floor = &c["durable_floor"]["latency_us"];
        let measured = if o.plan.e2e {
            &v["e2e_latency_us"]
        } else {
            &v["produce"]["latency_us"]
        };
        let mut ratios = serde_json::Map::new();
        for q in ["p50", "p99", "p99_9"] {
            if let (Some(m), Some(f)) = (measured[q].as_f64(), floor[q].as_f64()) {
                if f > 0.0 {
                    ratios.insert(q.into(), json!((m / f * 100.0).round() / 100.0));
                }
            }
        }
        if !ratios.is_empty() {
            v["latency_over_disk_floor"] = Value::Object(ratios);
        }
    }
    v
}

pub fn write_json(path: &Path, v: &Value) -> Result<(), ReportError> {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    std::fs::write(path, text + "\n").map_err(|source| ReportError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Throughput per second (left) and latency by percentile (right), as one SVG.
pub fn write_svg(path: &Path, title: &str, o: &RunOutcome) -> Result<(), ReportError> {
    use plotters::prelude::*;
    let err = |e: String| ReportError::Draw {
        path: path.display().to_string(),
        detail: e,
    };
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 18))?;
        let (left, right) = root.split_horizontally(600);

        // Throughput, MB/s per interval; the last interval is partial (the run ended inside
        // it), so the picture leaves it out (the JSON keeps it).
        let whole = &o.intervals[..o.intervals.len().saturating_sub(1)];
        let prod: Vec<(f64, f64)> = whole
            .iter()
            .map(|r| (r.t_s as f64, r.produced_bytes as f64 / 1e6))
            .collect();
        let cons: Vec<(f64, f64)> = whole
            .iter()
            .map(|r| (r.t_s as f64, r.consumed_bytes as f64 / 1e6))
            .collect();
        let xmax = whole.iter().map(|r| r.t_s).max().unwrap_or(1).max(1) as f64;
        let ymax = prod
            .iter()
            .chain(cons.iter())
            .map(|p| p.1)
            .fold(1.0, f64::max)
            * 1.1;
        let mut c = ChartBuilder::on(&left)
            .caption("throughput per second", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
        c.configure_mesh()
            .x_desc("time (s)")
            .y_desc("MB/s")
            .draw()?;
        if o.plan.produce {
            c.draw_series(LineSeries::new(prod, BLUE.stroke_width(2)))?
                .label("produced (acknowledged)")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        }
        if o.plan.consume {
            c.draw_series(LineSeries::new(cons, RED.stroke_width(2)))?
                .label("consumed")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;

        // Latency by percentile; x = number of nines: 1 = p90, 2 = p99, 3 = p99.9 ...
        let curve = |h: &Histogram<u64>| -> Vec<(f64, f64)> {
            if h.is_empty() {
                return Vec::new();
            }
            (0..=100)
                .map(|i| {
                    let x = i as f64 * 0.05; // up to 5 nines
                    let q = (1.0 - 10f64.powf(-x)).min(0.999_999);
                    (x, h.value_at_quantile(q) as f64 / 1e3)
                })
                .collect()
        };
        let p = curve(&o.measured.produce_latency_us);
        let e = curve(&o.measured.e2e_latency_us);
        let lmax = p.iter().chain(e.iter()).map(|v| v.1).fold(0.1, f64::max) * 1.1;
        let mut c = ChartBuilder::on(&right)
            .caption("latency by percentile", ("sans-serif", 16))
            .margin(12)
            .margin_right(36)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..5f64, 0f64..lmax)?;
        c.configure_mesh()
            .x_desc("percentile")
            .y_desc("ms")
            .x_labels(6)
            .x_label_formatter(&|x| {
                // Only whole numbers of nines get a label.
                if (x - x.round()).abs() > 0.01 {
                    return String::new();
                }
                match x.round() as i32 {
                    0 => "p0".into(),
                    1 => "p90".into(),
                    2 => "p99".into(),
                    3 => "p99.9".into(),
                    4 => "p99.99".into(),
                    _ => "p99.999".into(),
                }
            })
            .draw()?;
        if !p.is_empty() {
            c.draw_series(LineSeries::new(p, BLUE.stroke_width(2)))?
                .label("produce (send to ack)")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        }
        if !e.is_empty() {
            c.draw_series(LineSeries::new(e, RED.stroke_width(2)))?
                .label("end to end")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| err(e.to_string()))
}

/// One named line of a [`Panel`]: (x, y) points in the panel's units.
pub struct Line {
    pub label: String,
    pub color: (u8, u8, u8),
    pub points: Vec<(f64, f64)>,
}

/// One chart of a multi-panel picture: lines over a shared x range starting at 0.
pub struct Panel {
    pub caption: String,
    pub x_desc: String,
    pub y_desc: String,
    pub lines: Vec<Line>,
}

/// Several panels in a grid of `columns`, one SVG (series over time: the soak's picture).
/// The y axes start at 0, so a slow drift is shown at its true proportion.
pub fn write_panels_svg(
    path: &Path,
    title: &str,
    columns: usize,
    panels: &[Panel],
) -> Result<(), ReportError> {
    use plotters::prelude::*;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let cols = columns.max(1);
        let rows = panels.len().div_ceil(cols).max(1);
        let size = (600 * cols as u32, 340 * rows as u32 + 40);
        let root = SVGBackend::new(path, size).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 18))?;
        for (area, p) in root.split_evenly((rows, cols)).iter().zip(panels) {
            let all = || p.lines.iter().flat_map(|l| l.points.iter());
            let xmax = all().map(|q| q.0).fold(1.0, f64::max);
            let ymax = all()
                .map(|q| q.1)
                .filter(|y| y.is_finite())
                .fold(0.0, f64::max);
            let ymax = if ymax > 0.0 { ymax * 1.1 } else { 1.0 };
            let mut c = ChartBuilder::on(area)
                .caption(&p.caption, ("sans-serif", 16))
                .margin(12)
                .margin_right(24)
                .x_label_area_size(36)
                .y_label_area_size(64)
                .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
            c.configure_mesh()
                .x_desc(p.x_desc.as_str())
                .y_desc(p.y_desc.as_str())
                .draw()?;
            for l in &p.lines {
                let color = RGBColor(l.color.0, l.color.1, l.color.2);
                c.draw_series(LineSeries::new(l.points.clone(), color.stroke_width(2)))?
                    .label(l.label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
            c.configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| ReportError::Draw {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(cpu: usize, steal: u64, total: u64) -> StealDelta {
        StealDelta { cpu, steal, total }
    }

    #[test]
    fn steal_is_told_per_cpu_with_a_warning_from_five_percent() {
        assert_eq!(steal_line(&[]), None);
        let calm = steal_line(&[delta(0, 1, 1000), delta(1, 49, 1000)]).expect("a line");
        assert!(calm.ends_with("cpu0 0.001, cpu1 0.049"), "{calm}");
        let noisy = steal_line(&[delta(0, 1, 1000), delta(1, 50, 1000)]).expect("a line");
        assert!(noisy.contains("cpu1 0.050; WARNING: 5% or more"), "{noisy}");
    }
}
