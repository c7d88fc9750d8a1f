//! This machine's own limits, measured with the same pinning as a run, so results can be stated
//! as a fraction of them:
//! - loopback TCP: one stream, 1 MiB writes, sender on the first bench core, receiver on the
//!   broker's core (`--server-cpu`), bytes counted by the receiver;
//! - disk: sequential O_DIRECT writes (1 MiB, glommio `DmaFile`, queue depth 1) into the data
//!   directory, with an fdatasync every `sync_mib`, and one at the end; timed until the last
//!   sync returns. The file is removed afterwards;
//! - with a byte rate (a suite run's offered rate): the disk's floor for acks=all latency at
//!   that rate. Bytes arrive evenly at the rate (open loop) and are made durable in back-to-back
//!   group-commit rounds: a round writes what arrived while the previous one ran, spread over
//!   as many files as the workload has partitions (one segment each), then fdatasyncs them
//!   (writes together, syncs together). Each record's latency is from its arrival to the end of the round that
//!   covered it; no broker that syncs before it acknowledges can do better on this disk at this
//!   rate with as many files, short of spreading the same bytes over fewer syncs.
//! - with a number of files (a throughput workload's partitions): the disk's write + fdatasync
//!   bandwidth in that workload's shape, closed loop: rounds that write 1 MiB to each of as
//!   many files as the workload has partitions (together), then fdatasync them (together), the
//!   files growing as segments do ([`DiskRounds`]): the bound for a broker that makes each
//!   partition's segment durable on its own. Where an fdatasync of a grown file also writes its
//!   metadata, each round pays N of them; whether that brings it below the one-file figure
//!   depends on how much a round writes (on dev-2c, 1 MiB per file read about the same, while
//!   384 KiB rounds read ~0.8 of it: `perf/2026-12-05-w1-disk-shape.md`).
//! - with a request shape (a workload of small requests, W5): loopback request/reply, one
//!   request in flight per connection ([`request_reply`]).

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use odradek::io::dma::DirectFile;
use serde::Serialize;

use crate::steal::{self, StealDelta, StealWindow};
use crate::workload::Cores;

mod request_reply;
pub use request_reply::{RequestCeiling, RequestPath, RequestShape};

const BLOCK: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct CeilingSpec {
    pub cores: Cores,
    pub server_cpu: Option<usize>,
    pub data_dir: PathBuf,
    pub tcp_seconds: f64,
    pub disk_mib: u64,
    pub sync_mib: u64,
    /// Measure the durable-latency floor at this many bytes/s (see the module doc).
    pub floor_rate_bytes: Option<f64>,
    pub floor_seconds: f64,
    /// Files per round in the floor (at least 1).
    pub floor_files: usize,
    /// Measure the write + fdatasync bandwidth over this many files (see [`DiskRounds`]).
    pub rounds_files: Option<usize>,
    pub rounds_seconds: f64,
    /// Measure the request/reply ceiling in this shape (see [`request_reply`]).
    pub requests: Option<RequestShape>,
}

/// The disk's write + fdatasync bandwidth over several files, closed loop: each round writes
/// `chunk_bytes` to every file (all writes in flight together), then fdatasyncs every file
/// (together). The files start empty and grow, rolling at the broker's default segment size,
/// as a partition's segments do.
#[derive(Debug, Clone, Serialize)]
pub struct DiskRounds {
    pub files: usize,
    pub chunk_bytes: u64,
    pub seconds: f64,
    pub rounds: u64,
    pub bytes: u64,
    pub mb_per_s: f64,
}

/// The disk's durable-latency floor at a byte rate (see the module doc).
#[derive(Debug, Clone, Serialize)]
pub struct DurableFloor {
    pub rate_mb_per_s: f64,
    /// Files written and synced in each round (the workload's partitions: one segment each).
    pub files: usize,
    pub seconds: f64,
    pub rounds: u64,
    pub bytes: u64,
    /// Arrival to durable, per 1 KiB of data (microseconds).
    pub latency_us: serde_json::Value,
    /// One round (write + fdatasync), per round (microseconds).
    pub round_us: serde_json::Value,
    /// Per CPU, the share of its time the VM's host took while the floor ran (`crate::steal`).
    #[serde(serialize_with = "steal::serialize_by_cpu")]
    pub host_steal: Vec<StealDelta>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub tcp_mb_per_s: f64,
    pub tcp_bytes: u64,
    pub tcp_client_cpu: Option<usize>,
    pub tcp_server_cpu: Option<usize>,
    pub disk_mb_per_s: f64,
    /// Sequential O_DIRECT reads (1 MiB) of the file just written: the bound for catch-up
    /// consumers, whose data comes from disk, not from a page cache.
    pub disk_read_mb_per_s: f64,
    pub disk_bytes: u64,
    pub disk_block_bytes: usize,
    pub disk_sync_every_bytes: u64,
    pub disk_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable_floor: Option<DurableFloor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_rounds: Option<DiskRounds>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_reply: Option<RequestCeiling>,
    /// Per CPU, the share of its time the VM's host took while the loopback, disk and
    /// request/reply ceilings ran: a starved moment reads low, and so inflates every fraction
    /// of it (`crate::steal`).
    #[serde(serialize_with = "steal::serialize_by_cpu")]
    pub host_steal: Vec<StealDelta>,
}

#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    #[error("{op}: {detail}")]
    Io { op: String, detail: String },
    #[error("executor: {0}")]
    Executor(String),
}

fn io(op: impl Into<String>, e: impl std::fmt::Display) -> CeilingError {
    CeilingError::Io {
        op: op.into(),
        detail: e.to_string(),
    }
}

impl CeilingSpec {
    /// The CPU the bench side of every measurement runs on: the first bench core, if pinned.
    fn client_cpu(&self) -> Option<usize> {
        match &self.cores {
            Cores::Pinned(v) => v.first().copied(),
            Cores::Unpinned(_) => None,
        }
    }

    /// The disk measurements' file in the data directory (the floor's files take its name with
    /// other extensions).
    fn scratch_path(&self) -> PathBuf {
        self.data_dir
            .join(format!("odradek-bench-ceiling-{}.tmp", std::process::id()))
    }
}

fn placement(cpu: Option<usize>) -> Placement {
    cpu.map_or(Placement::Unbound, Placement::Fixed)
}

/// Runs `work` on a fresh glommio executor named `name`, pinned to `cpu`, and returns its result.
fn on_executor<T, F, Fut>(cpu: Option<usize>, name: &str, work: F) -> Result<T, CeilingError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, CeilingError>> + 'static,
{
    LocalExecutorBuilder::new(placement(cpu))
        .name(name)
        .io_memory(1 << 20)
        .spawn(work)
        .map_err(|e| CeilingError::Executor(e.to_string()))?
        .join()
        .map_err(|e| CeilingError::Executor(e.to_string()))?
}

pub fn measure(spec: &CeilingSpec) -> Result<Ceiling, CeilingError> {
    let client_cpu = spec.client_cpu();
    let steal = StealWindow::start();
    let (tcp_bytes, tcp_secs) = tcp(client_cpu, spec.server_cpu, spec.tcp_seconds)?;
    let path = spec.scratch_path();
    let (disk_bytes, disk_secs, read_bytes, read_secs) =
        disk(client_cpu, &path, spec.disk_mib << 20, spec.sync_mib << 20)?;
    Ok(Ceiling {
        tcp_mb_per_s: (tcp_bytes as f64 / 1e6 / tcp_secs * 10.0).round() / 10.0,
        tcp_bytes,
        tcp_client_cpu: client_cpu,
        tcp_server_cpu: spec.server_cpu,
        disk_mb_per_s: (disk_bytes as f64 / 1e6 / disk_secs * 10.0).round() / 10.0,
        disk_read_mb_per_s: (read_bytes as f64 / 1e6 / read_secs.max(1e-9) * 10.0).round() / 10.0,
        disk_bytes,
        disk_block_bytes: BLOCK,
        disk_sync_every_bytes: spec.sync_mib << 20,
        disk_path: path.display().to_string(),
        durable_floor: None,
        disk_rounds: None,
        request_reply: match &spec.requests {
            Some(shape) => Some(request_reply::measure(client_cpu, spec.server_cpu, shape)?),
            None => None,
        },
        host_steal: steal.finish(),
    })
}

/// The durable-latency floor at `spec.floor_rate_bytes`, if set (see the module doc). A suite
/// measures it after its workload: it writes and then deletes gigabytes, and on a filesystem
/// mounted with `discard` the deletion's cost would land on whatever runs next.
pub fn measure_floor(spec: &CeilingSpec) -> Result<Option<DurableFloor>, CeilingError> {
    let Some(rate) = spec.floor_rate_bytes.filter(|r| *r > 0.0) else {
        return Ok(None);
    };
    // It keeps everything it writes until the end: use at most half the free space.
    let seconds = match free_bytes(&spec.data_dir) {
        Some(free) if rate * spec.floor_seconds > free as f64 / 2.0 => {
            let s = free as f64 / 2.0 / rate;
            eprintln!(
                "disk floor: {s:.1} s instead of {:.1} s, to stay within half of the {} MiB free",
                spec.floor_seconds,
                free >> 20
            );
            s
        }
        _ => spec.floor_seconds,
    };
    let path = spec.scratch_path();
    durable_floor(spec.client_cpu(), &path, rate, seconds, spec.floor_files).map(Some)
}

/// The write + fdatasync bandwidth over `spec.rounds_files` files, if set (see [`DiskRounds`]).
/// Like the floor, a suite measures it after its workload.
pub fn measure_rounds(spec: &CeilingSpec) -> Result<Option<DiskRounds>, CeilingError> {
    let Some(files) = spec.rounds_files.filter(|f| *f > 0) else {
        return Ok(None);
    };
    // Everything written stays until the end: stop at a quarter of the free space.
    let budget = free_bytes(&spec.data_dir).map_or(u64::MAX, |free| free / 4);
    disk_rounds(
        spec.client_cpu(),
        &spec.scratch_path(),
        files,
        spec.rounds_seconds,
        budget,
    )
    .map(Some)
}

/// A glommio executor named `name`, pinned to `cpu`, listening on a fresh loopback port and
/// running `serve` with the listener; returns the executor (to join) and the port once it
/// listens (`what` names the server in the error if it does not start).
fn loopback_server<T, F, Fut>(
    cpu: Option<usize>,
    name: &str,
    what: &str,
    serve: F,
) -> Result<(glommio::ExecutorJoinHandle<Result<T, CeilingError>>, u16), CeilingError>
where
    T: Send + 'static,
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, CeilingError>> + 'static,
{
    let (port_tx, port_rx) = mpsc::channel::<u16>();
    let srv = LocalExecutorBuilder::new(placement(cpu))
        .name(name)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let l = TcpListener::bind("127.0.0.1:0").map_err(|e| io("bind", e))?;
            let port = l.local_addr().map_err(|e| io("local_addr", e))?.port();
            let _ = port_tx.send(port);
            serve(l).await
        })
        .map_err(|e| CeilingError::Executor(e.to_string()))?;
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| io(format!("{what} start"), e))?;
    Ok((srv, port))
}

fn tcp(
    client: Option<usize>,
    server: Option<usize>,
    seconds: f64,
) -> Result<(u64, f64), CeilingError> {
    let (srv, port) = loopback_server(server, "ceiling-rx", "receiver", |l| async move {
        let mut s = l.accept().await.map_err(|e| io("accept", e))?;
        let mut buf = vec![0u8; BLOCK];
        let mut total = 0u64;
        let mut first: Option<Instant> = None;
        loop {
            let n = s.read(&mut buf).await.map_err(|e| io("read", e))?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            total += n as u64;
        }
        let secs = first.map_or(1.0, |f| f.elapsed().as_secs_f64());
        Ok((total, secs))
    })?;
    let cli = LocalExecutorBuilder::new(placement(client))
        .name("ceiling-tx")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut s = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| io("connect", e))?;
            let buf = vec![0x5au8; BLOCK];
            let end = Instant::now() + Duration::from_secs_f64(seconds);
            while Instant::now() < end {
                s.write_all(&buf).await.map_err(|e| io("write", e))?;
            }
            s.close().await.map_err(|e| io("close", e))?;
            Ok::<_, CeilingError>(())
        })
        .map_err(|e| CeilingError::Executor(e.to_string()))?;
    cli.join()
        .map_err(|e| CeilingError::Executor(e.to_string()))??;
    srv.join()
        .map_err(|e| CeilingError::Executor(e.to_string()))?
}

fn disk(
    cpu: Option<usize>,
    path: &std::path::Path,
    bytes: u64,
    sync_every: u64,
) -> Result<(u64, f64, u64, f64), CeilingError> {
    let path = path.to_path_buf();
    on_executor(cpu, "ceiling-disk", move || async move {
        // The broker's own O_DIRECT file type: the same write and read paths as the log
        // (and its guard against glommio's iopoll probe on an empty file).
        let name = path.display().to_string();
        let f = DirectFile::create_truncate(&path)
            .await
            .map_err(|e| io(format!("create {name}"), e))?;
        let block = vec![0xa5u8; BLOCK];
        let started = Instant::now();
        let mut pos = 0u64;
        let mut since_sync = 0u64;
        let mut result = Ok(());
        while pos < bytes {
            if let Err(e) = f.write_padded(pos, &block).await {
                result = Err(io(format!("write {name} at {pos}"), e));
                break;
            }
            pos += BLOCK as u64;
            since_sync += BLOCK as u64;
            if since_sync >= sync_every {
                if let Err(e) = f.fdatasync().await {
                    result = Err(io(format!("fdatasync {name}"), e));
                    break;
                }
                since_sync = 0;
            }
        }
        if result.is_ok() {
            if let Err(e) = f.fdatasync().await {
                result = Err(io(format!("fdatasync {name}"), e));
            }
        }
        let secs = started.elapsed().as_secs_f64();
        // Read it back the way a catch-up consumer's data comes: O_DIRECT, sequential.
        let read_started = Instant::now();
        let mut read = 0u64;
        while result.is_ok() && read < pos {
            match f.read(read, BLOCK).await {
                Ok(r) if !r.is_empty() => read += r.len() as u64,
                Ok(_) => break,
                Err(e) => result = Err(io(format!("read {name} at {read}"), e)),
            }
        }
        let read_secs = read_started.elapsed().as_secs_f64();
        let _ = f.close().await;
        let _ = std::fs::remove_file(&path);
        result.map(|_| (pos, secs, read, read_secs))
    })
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) fills the zeroed struct from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// The floor's files roll at this size (the broker's default `segment.bytes`).
const FLOOR_FILE_BYTES: u64 = 1 << 30;

/// Records per round sample point (see [`round_samples`]).
const FLOOR_POINTS: u64 = 8;
/// The unit a latency sample stands for: one 1 KiB record.
const FLOOR_RECORD: u64 = 1024;

/// The latencies of the records one round carried: they arrived evenly over the `span_us`
/// before the round started and became durable `round_us` after it started. As
/// `FLOOR_POINTS` evenly spaced (latency, records) samples; every record counts.
fn round_samples(span_us: u64, round_us: u64, bytes: u64) -> Vec<(u64, u64)> {
    let records = bytes.div_ceil(FLOOR_RECORD).max(1);
    let per = records / FLOOR_POINTS;
    let extra = records % FLOOR_POINTS;
    (0..FLOOR_POINTS)
        .filter_map(|i| {
            let n = per + u64::from(i < extra);
            // Arrived at (i + 0.5) / POINTS of the span: waited the rest of it, then the round.
            let waited = (span_us as f64 * (1.0 - (i as f64 + 0.5) / FLOOR_POINTS as f64)) as u64;
            (n > 0).then_some(((round_us + waited).max(1), n))
        })
        .collect()
}

/// One file stream of the floor: rolled every `FLOOR_FILE_BYTES`, like segments.
struct FloorStream {
    file: DirectFile,
    /// Index of its next file (files are `<path>.floor<stream>-<n>`).
    next: u64,
    pos: u64,
}

fn floor_file(path: &std::path::Path, stream: usize, n: u64) -> PathBuf {
    path.with_extension(format!("floor{stream}-{n}"))
}

impl FloorStream {
    /// Appends `block`, rolling to a new file first if this one would pass the size.
    async fn append(
        &mut self,
        path: &std::path::Path,
        stream: usize,
        block: &[u8],
    ) -> Result<(), CeilingError> {
        let len = block.len() as u64;
        if self.pos + len > FLOOR_FILE_BYTES {
            let next = floor_file(path, stream, self.next);
            let new = DirectFile::create_truncate(&next)
                .await
                .map_err(|e| io(format!("create {}", next.display()), e))?;
            self.next += 1;
            let _ = std::mem::replace(&mut self.file, new).close().await;
            self.pos = 0;
        }
        self.file
            .write_padded(self.pos, block)
            .await
            .map_err(|e| io(format!("write {}", self.file.path().display()), e))?;
        self.pos += len;
        Ok(())
    }
}

/// Opens `files` floor streams at `path` (their first files, empty).
async fn open_streams(
    path: &std::path::Path,
    files: usize,
) -> Result<Vec<FloorStream>, CeilingError> {
    let mut streams = Vec::with_capacity(files);
    for i in 0..files {
        let p = floor_file(path, i, 0);
        match DirectFile::create_truncate(&p).await {
            Ok(file) => streams.push(FloorStream {
                file,
                next: 1,
                pos: 0,
            }),
            Err(e) => {
                remove_streams(path, streams).await;
                return Err(io(format!("create {}", p.display()), e));
            }
        }
    }
    Ok(streams)
}

/// Closes the streams and removes every file they wrote.
async fn remove_streams(path: &std::path::Path, streams: Vec<FloorStream>) {
    for (i, st) in streams.into_iter().enumerate() {
        let _ = st.file.close().await;
        for n in 0..st.next {
            let _ = std::fs::remove_file(floor_file(path, i, n));
        }
    }
}

/// Writes `block` to every stream (together), then fdatasyncs each (together).
async fn write_then_sync(
    path: &std::path::Path,
    streams: &mut [FloorStream],
    block: &[u8],
) -> Result<(), CeilingError> {
    let writes = streams
        .iter_mut()
        .enumerate()
        .map(|(i, st)| st.append(path, i, block));
    odradek::io::join::join_all(writes)
        .await
        .into_iter()
        .collect::<Result<(), _>>()?;
    let syncs = streams.iter().map(|st| async move {
        st.file
            .fdatasync()
            .await
            .map_err(|e| io(format!("fdatasync {}", st.file.path().display()), e))
    });
    odradek::io::join::join_all(syncs)
        .await
        .into_iter()
        .collect()
}

fn disk_rounds(
    cpu: Option<usize>,
    path: &std::path::Path,
    files: usize,
    seconds: f64,
    max_bytes: u64,
) -> Result<DiskRounds, CeilingError> {
    let path = path.to_path_buf();
    let chunk = BLOCK as u64;
    on_executor(cpu, "ceiling-rounds", move || async move {
        let mut streams = open_streams(&path, files).await?;
        // One block for every write: filling a fresh one per file would charge the bench's
        // core, not the disk.
        let block = vec![0xa5u8; chunk as usize];
        let started = Instant::now();
        let end = started + Duration::from_secs_f64(seconds);
        let (mut rounds, mut bytes) = (0u64, 0u64);
        let mut result = Ok(());
        while Instant::now() < end && bytes + chunk * files as u64 <= max_bytes {
            result = write_then_sync(&path, &mut streams, &block).await;
            if result.is_err() {
                break;
            }
            rounds += 1;
            bytes += chunk * files as u64;
        }
        let secs = started.elapsed().as_secs_f64();
        if result.is_ok() && secs < seconds {
            eprintln!(
                    "disk in rounds: {secs:.1} s instead of {seconds:.1} s, to stay within a quarter of the free space"
                );
        }
        remove_streams(&path, streams).await;
        result.map(|()| DiskRounds {
            files,
            chunk_bytes: chunk,
            seconds: (secs * 100.0).round() / 100.0,
            rounds,
            bytes,
            mb_per_s: (bytes as f64 / 1e6 / secs.max(1e-9) * 10.0).round() / 10.0,
        })
    })
}

fn durable_floor(
    cpu: Option<usize>,
    path: &std::path::Path,
    rate: f64,
    seconds: f64,
    files: usize,
) -> Result<DurableFloor, CeilingError> {
    let path = path.to_path_buf();
    let files = files.max(1);
    on_executor(cpu, "ceiling-floor", move || async move {
        let mut streams = open_streams(&path, files).await?;
        let steal = StealWindow::start();
        let mut latency = crate::stats::new_histogram();
        let mut round = crate::stats::new_histogram();
        let started = Instant::now();
        let end = started + Duration::from_secs_f64(seconds);
        let mut covered_to = started;
        let mut bytes = 0u64;
        let mut rounds = 0u64;
        let mut result = Ok(());
        // A round needs a page per file.
        let least = 4096 * files as u64;
        while result.is_ok() && Instant::now() < end {
            let now = Instant::now();
            let due = (now.duration_since(covered_to).as_secs_f64() * rate) as u64;
            if due < least {
                let wait = (least - due) as f64 / rate;
                glommio::timer::sleep(Duration::from_secs_f64(wait)).await;
                continue;
            }
            // What arrived, spread evenly over the files, written together, then synced
            // together: one round.
            let len = (due / files as u64).div_ceil(4096) * 4096;
            let block = vec![0xa5u8; len as usize];
            result = write_then_sync(&path, &mut streams, &block).await;
            if result.is_err() {
                break;
            }
            let done = Instant::now();
            let span_us = now.duration_since(covered_to).as_micros() as u64;
            let round_us = done.duration_since(now).as_micros() as u64;
            for (us, n) in round_samples(span_us, round_us, due) {
                latency.saturating_record_n(us, n);
            }
            round.saturating_record(round_us.max(1));
            covered_to = now;
            bytes += len * files as u64;
            rounds += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        remove_streams(&path, streams).await;
        result.map(|_| DurableFloor {
            rate_mb_per_s: (rate / 1e6 * 10.0).round() / 10.0,
            files,
            seconds: (secs * 100.0).round() / 100.0,
            rounds,
            bytes,
            latency_us: crate::report::percentiles(&latency),
            round_us: crate::report::percentiles(&round),
            host_steal: steal.finish(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_charges_each_record_its_wait_and_the_round() {
        // 80 KiB arrived over 1,000 us, then a 300 us round: 80 records in 8 points of 10,
        // latencies from 300 + 937 down to 300 + 62.
        let s = round_samples(1000, 300, 80 * 1024);
        assert_eq!(s.len(), 8);
        assert_eq!(s.iter().map(|x| x.1).sum::<u64>(), 80);
        assert!(s.iter().all(|&(us, _)| (300..=1300).contains(&us)), "{s:?}");
        assert_eq!(s[0].0, 1237);
        assert_eq!(s[7].0, 362);
        // Fewer records than points: each counts once, none is lost or invented.
        let s = round_samples(1000, 300, 3 * 1024);
        assert_eq!(s.iter().map(|x| x.1).sum::<u64>(), 3);
        // A partial record counts as one.
        assert_eq!(
            round_samples(10, 5, 100).iter().map(|x| x.1).sum::<u64>(),
            1
        );
    }
}
