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
//! - with a request shape (a workload of small requests, W5): loopback request/reply over as
//!   many connections as the workload has producers. Each client connection sends one request
//!   of `request_bytes`, waits for its `reply_bytes` answer, sends the next (one in flight, so
//!   each request arrives on its own, as a producer's do while the broker keeps up); the
//!   server, on the broker's core, answers each whole request it has read and does nothing
//!   else. Requests answered per second bound any broker that reads and answers each such
//!   request, on this machine, with this pinning.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use odradek::io::dma::DirectFile;
use serde::Serialize;

use crate::workload::Cores;

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
    /// Measure the request/reply ceiling in this shape (see the module doc).
    pub requests: Option<RequestShape>,
}

/// The request/reply ceiling's traffic (see the module doc).
#[derive(Debug, Clone, Serialize)]
pub struct RequestShape {
    pub path: RequestPath,
    pub connections: usize,
    pub request_bytes: usize,
    pub reply_bytes: usize,
    pub seconds: f64,
}

/// What the request/reply ceiling measured.
#[derive(Debug, Clone, Serialize)]
pub struct RequestCeiling {
    #[serde(flatten)]
    pub shape: RequestShape,
    pub requests: u64,
    pub requests_per_s: f64,
    /// CPU time / wall time of the client's and the server's thread while they ran.
    pub client_busy: Option<f64>,
    pub server_busy: Option<f64>,
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
    pub request_reply: Option<RequestCeiling>,
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

pub fn measure(spec: &CeilingSpec) -> Result<Ceiling, CeilingError> {
    let client_cpu = spec.client_cpu();
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
        request_reply: match &spec.requests {
            Some(shape) => Some(request_reply(client_cpu, spec.server_cpu, shape)?),
            None => None,
        },
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

fn tcp(
    client: Option<usize>,
    server: Option<usize>,
    seconds: f64,
) -> Result<(u64, f64), CeilingError> {
    let (port_tx, port_rx) = mpsc::channel::<u16>();
    let srv = LocalExecutorBuilder::new(placement(server))
        .name("ceiling-rx")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let l = TcpListener::bind("127.0.0.1:0").map_err(|e| io("bind", e))?;
            let port = l.local_addr().map_err(|e| io("local_addr", e))?.port();
            let _ = port_tx.send(port);
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
            Ok::<_, CeilingError>((total, secs))
        })
        .map_err(|e| CeilingError::Executor(e.to_string()))?;
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| io("receiver start", e))?;
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

/// The calling thread's CPU time, microseconds (`None` if the clock cannot be read).
fn thread_cpu_us() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: fills `ts`, a valid timespec on this stack frame.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000)
}

/// CPU time since `cpu0` over wall time since `wall0`.
fn busy_since(cpu0: Option<u64>, wall0: Instant) -> Option<f64> {
    let used = thread_cpu_us()?.checked_sub(cpu0?)?;
    let wall = wall0.elapsed().as_micros().max(1) as f64;
    Some((used as f64 / wall * 1000.0).round() / 1000.0)
}

/// Replies per write at most (the server answers every whole request a read brought).
const REPLIES_PER_WRITE: usize = 64;

/// How the request/reply ceiling's two sides do their I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RequestPath {
    /// epoll and plain recv/send on blocking sockets: the cheapest path known here, so the
    /// machine's own bound.
    Syscalls,
    /// glommio's `TcpStream` reads and writes (io_uring), as the broker's connections do: what
    /// the runtime adds per request.
    Glommio,
}

fn request_reply(
    client: Option<usize>,
    server: Option<usize>,
    shape: &RequestShape,
) -> Result<RequestCeiling, CeilingError> {
    let (requests, secs, client_busy, server_busy) = match shape.path {
        RequestPath::Syscalls => request_reply_syscalls(client, server, shape)?,
        RequestPath::Glommio => request_reply_glommio(client, server, shape)?,
    };
    Ok(RequestCeiling {
        shape: shape.clone(),
        requests,
        requests_per_s: (requests as f64 / secs.max(1e-9)).round(),
        client_busy,
        server_busy,
    })
}

/// Answered requests, seconds, client and server busy.
type RequestCounts = (u64, f64, Option<f64>, Option<f64>);

/// Runs `f` on its own thread, pinned to `cpu` (a single-task executor, so the placement is
/// the same as everywhere else in the ceiling), and returns what it returns.
fn on_cpu<T: Send + 'static>(
    cpu: Option<usize>,
    name: &str,
    f: impl FnOnce() -> Result<T, CeilingError> + Send + 'static,
) -> Result<glommio::ExecutorJoinHandle<Result<T, CeilingError>>, CeilingError> {
    LocalExecutorBuilder::new(placement(cpu))
        .name(name)
        .spawn(move || async move { f() })
        .map_err(|e| CeilingError::Executor(e.to_string()))
}

/// Non-blocking read from a blocking socket: `Ok(None)` when nothing is there.
fn recv_now(fd: std::os::fd::RawFd, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for `buf.len()` writable bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

/// An epoll instance watching sockets for input, each tagged with its index.
struct Readable {
    fd: std::os::fd::OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Readable {
    fn new(fds: impl Iterator<Item = std::os::fd::RawFd>) -> Result<Readable, CeilingError> {
        use std::os::fd::FromRawFd;
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io("epoll_create1", std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor this value now owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        for (i, s) in fds.enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: both descriptors are open; `ev` lives across the call.
            if unsafe { libc::epoll_ctl(raw, libc::EPOLL_CTL_ADD, s, &mut ev) } < 0 {
                return Err(io("epoll_ctl", std::io::Error::last_os_error()));
            }
        }
        Ok(Readable {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
        })
    }

    /// Indexes of the sockets with input (or closed), waiting up to `timeout_ms`.
    fn wait(&mut self, timeout_ms: i32) -> Result<impl Iterator<Item = usize> + '_, CeilingError> {
        use std::os::fd::AsRawFd;
        // SAFETY: `events` has room for its length in entries.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                timeout_ms,
            )
        };
        let n = if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io("epoll_wait", e));
            }
            0
        } else {
            n as usize
        };
        Ok(self.events[..n].iter().map(|e| e.u64 as usize))
    }
}

/// Reads what a ceiling connection has and answers each whole request in it; `Ok(false)` once
/// the client has gone (end of stream, or reset: the client closes with answers unread).
fn serve_input(
    s: &mut std::net::TcpStream,
    partial: &mut usize,
    buf: &mut [u8],
    req_len: usize,
    replies: &[u8],
    reply_len: usize,
) -> Result<bool, CeilingError> {
    use std::io::{ErrorKind, Write};
    use std::os::fd::AsRawFd;
    let gone =
        |e: &std::io::Error| matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe);
    loop {
        let n = match recv_now(s.as_raw_fd(), buf) {
            Ok(None) => return Ok(true),
            Ok(Some(0)) => return Ok(false),
            Ok(Some(n)) => n,
            Err(e) if gone(&e) => return Ok(false),
            Err(e) => return Err(io("server read", e)),
        };
        *partial += n;
        let mut whole = *partial / req_len;
        *partial %= req_len;
        while whole > 0 {
            let k = whole.min(REPLIES_PER_WRITE);
            match s.write_all(&replies[..k * reply_len]) {
                Ok(()) => {}
                Err(e) if gone(&e) => return Ok(false),
                Err(e) => return Err(io("server write", e)),
            }
            whole -= k;
        }
        if n < buf.len() {
            return Ok(true);
        }
    }
}

fn request_reply_syscalls(
    client: Option<usize>,
    server: Option<usize>,
    shape: &RequestShape,
) -> Result<RequestCounts, CeilingError> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let conns = shape.connections.max(1);
    let (req_len, reply_len) = (shape.request_bytes.max(1), shape.reply_bytes.max(1));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| io("bind", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| io("local_addr", e))?
        .port();
    listener
        .set_nonblocking(true)
        .map_err(|e| io("set_nonblocking", e))?;
    let srv = on_cpu(server, "ceiling-reply", move || {
        // Accept them all, giving up if the client never connects them.
        let give_up = Instant::now() + Duration::from_secs(30);
        let mut socks = Vec::with_capacity(conns);
        while socks.len() < conns {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false)
                        .map_err(|e| io("set_blocking", e))?;
                    let _ = s.set_nodelay(true);
                    socks.push((s, 0usize));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > give_up {
                        return Err(io("accept", "the client did not connect"));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(io("accept", e)),
            }
        }
        let mut ready = Readable::new(socks.iter().map(|(s, _)| s.as_raw_fd()))?;
        let mut buf = vec![0u8; 64 << 10];
        let replies = vec![0u8; reply_len * REPLIES_PER_WRITE];
        let mut open = vec![true; conns];
        let mut open_count = conns;
        let (cpu0, wall0) = (thread_cpu_us(), Instant::now());
        // The client's run is bounded; a server that hears nothing for this long has lost it.
        let mut last_input = Instant::now();
        while open_count > 0 {
            let ids: Vec<usize> = ready.wait(1000)?.collect();
            if !ids.is_empty() {
                last_input = Instant::now();
            } else if last_input.elapsed() > Duration::from_secs(30) {
                return Err(io("server", "no request for 30 s"));
            }
            for i in ids {
                let (s, partial) = &mut socks[i];
                if serve_input(s, partial, &mut buf, req_len, &replies, reply_len)? {
                    continue;
                }
                if std::mem::replace(&mut open[i], false) {
                    open_count -= 1;
                }
                // Off the epoll set, or it keeps reporting the closed socket.
                // SAFETY: both descriptors are open.
                unsafe {
                    libc::epoll_ctl(
                        ready.fd.as_raw_fd(),
                        libc::EPOLL_CTL_DEL,
                        s.as_raw_fd(),
                        std::ptr::null_mut(),
                    )
                };
            }
        }
        Ok(busy_since(cpu0, wall0))
    })?;
    let seconds = shape.seconds;
    let cli = on_cpu(client, "ceiling-request", move || {
        let mut socks = Vec::with_capacity(conns);
        for _ in 0..conns {
            let s =
                std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| io("connect", e))?;
            let _ = s.set_nodelay(true);
            socks.push(s);
        }
        let mut ready = Readable::new(socks.iter().map(|s| s.as_raw_fd()))?;
        let request = vec![0x5au8; req_len];
        let mut buf = vec![0u8; 64 << 10];
        let mut have = vec![0usize; conns];
        let (cpu0, wall0) = (thread_cpu_us(), Instant::now());
        let end = wall0 + Duration::from_secs_f64(seconds);
        for s in &mut socks {
            s.write_all(&request).map_err(|e| io("client write", e))?;
        }
        let mut answered = 0u64;
        while Instant::now() < end {
            let ids: Vec<usize> = ready.wait(100)?.collect();
            for i in ids {
                let s = &mut socks[i];
                let Some(n) =
                    recv_now(s.as_raw_fd(), &mut buf).map_err(|e| io("client read", e))?
                else {
                    continue;
                };
                if n == 0 {
                    return Err(io("client read", "the server closed the connection"));
                }
                have[i] += n;
                while have[i] >= reply_len {
                    have[i] -= reply_len;
                    answered += 1;
                    s.write_all(&request).map_err(|e| io("client write", e))?;
                }
            }
        }
        let secs = wall0.elapsed().as_secs_f64();
        let busy = busy_since(cpu0, wall0);
        drop(socks); // the server stops at their end of stream
        Ok((answered, secs, busy))
    })?;
    let client_result = cli
        .join()
        .map_err(|e| CeilingError::Executor(e.to_string()))?;
    let server_result = srv
        .join()
        .map_err(|e| CeilingError::Executor(e.to_string()))?;
    let (requests, secs, client_busy) = client_result?;
    Ok((requests, secs, client_busy, server_result?))
}

fn request_reply_glommio(
    client: Option<usize>,
    server: Option<usize>,
    shape: &RequestShape,
) -> Result<RequestCounts, CeilingError> {
    let conns = shape.connections.max(1);
    let (req_len, reply_len) = (shape.request_bytes.max(1), shape.reply_bytes.max(1));
    let (port_tx, port_rx) = mpsc::channel::<u16>();
    let srv = LocalExecutorBuilder::new(placement(server))
        .name("ceiling-reply")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let l = TcpListener::bind("127.0.0.1:0").map_err(|e| io("bind", e))?;
            let port = l.local_addr().map_err(|e| io("local_addr", e))?.port();
            let _ = port_tx.send(port);
            let mut tasks = Vec::with_capacity(conns);
            for _ in 0..conns {
                let mut s = l.accept().await.map_err(|e| io("accept", e))?;
                let _ = s.set_nodelay(true);
                tasks.push(glommio::spawn_local(async move {
                    let mut buf = vec![0u8; 64 << 10];
                    let replies = vec![0u8; reply_len * REPLIES_PER_WRITE];
                    let mut partial = 0usize;
                    loop {
                        let n = s.read(&mut buf).await.map_err(|e| io("server read", e))?;
                        if n == 0 {
                            return Ok::<_, CeilingError>(());
                        }
                        partial += n;
                        let mut whole = partial / req_len;
                        partial %= req_len;
                        while whole > 0 {
                            let k = whole.min(REPLIES_PER_WRITE);
                            s.write_all(&replies[..k * reply_len])
                                .await
                                .map_err(|e| io("server write", e))?;
                            whole -= k;
                        }
                    }
                }));
            }
            // Busy from the first request on: the clients start once all are connected.
            let (cpu0, wall0) = (thread_cpu_us(), Instant::now());
            for t in tasks {
                t.await?;
            }
            Ok::<_, CeilingError>(busy_since(cpu0, wall0))
        })
        .map_err(|e| CeilingError::Executor(e.to_string()))?;
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| io("request server start", e))?;
    let seconds = shape.seconds;
    let cli = LocalExecutorBuilder::new(placement(client))
        .name("ceiling-request")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut streams = Vec::with_capacity(conns);
            for _ in 0..conns {
                let s = TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| io("connect", e))?;
                let _ = s.set_nodelay(true);
                streams.push(s);
            }
            let (cpu0, wall0) = (thread_cpu_us(), Instant::now());
            let end = wall0 + Duration::from_secs_f64(seconds);
            let mut tasks = Vec::with_capacity(conns);
            for mut s in streams {
                tasks.push(glommio::spawn_local(async move {
                    let request = vec![0x5au8; req_len];
                    let mut reply = vec![0u8; reply_len];
                    let mut answered = 0u64;
                    while Instant::now() < end {
                        s.write_all(&request)
                            .await
                            .map_err(|e| io("client write", e))?;
                        s.read_exact(&mut reply)
                            .await
                            .map_err(|e| io("client read", e))?;
                        answered += 1;
                    }
                    s.close().await.map_err(|e| io("close", e))?;
                    Ok::<_, CeilingError>(answered)
                }));
            }
            let mut answered = 0u64;
            for t in tasks {
                answered += t.await?;
            }
            let secs = wall0.elapsed().as_secs_f64();
            Ok::<_, CeilingError>((answered, secs, busy_since(cpu0, wall0)))
        })
        .map_err(|e| CeilingError::Executor(e.to_string()))?;
    let (requests, secs, client_busy) = cli
        .join()
        .map_err(|e| CeilingError::Executor(e.to_string()))??;
    let server_busy = srv
        .join()
        .map_err(|e| CeilingError::Executor(e.to_string()))??;
    Ok((requests, secs, client_busy, server_busy))
}

fn disk(
    cpu: Option<usize>,
    path: &std::path::Path,
    bytes: u64,
    sync_every: u64,
) -> Result<(u64, f64, u64, f64), CeilingError> {
    let path = path.to_path_buf();
    let h = LocalExecutorBuilder::new(placement(cpu))
        .name("ceiling-disk")
        .io_memory(1 << 20)
        .spawn(move || async move {
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
        .map_err(|e| CeilingError::Executor(e.to_string()))?;
    h.join()
        .map_err(|e| CeilingError::Executor(e.to_string()))?
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
    /// Appends `len` bytes, rolling to a new file first if this one would pass the size.
    async fn append(
        &mut self,
        path: &std::path::Path,
        stream: usize,
        len: u64,
    ) -> Result<(), CeilingError> {
        if self.pos + len > FLOOR_FILE_BYTES {
            let next = floor_file(path, stream, self.next);
            let new = DirectFile::create_truncate(&next)
                .await
                .map_err(|e| io(format!("create {}", next.display()), e))?;
            self.next += 1;
            let _ = std::mem::replace(&mut self.file, new).close().await;
            self.pos = 0;
        }
        let block = vec![0xa5u8; len as usize];
        self.file
            .write_padded(self.pos, &block)
            .await
            .map_err(|e| io(format!("write {}", self.file.path().display()), e))?;
        self.pos += len;
        Ok(())
    }
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
    let h = LocalExecutorBuilder::new(placement(cpu))
        .name("ceiling-floor")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut streams = Vec::with_capacity(files);
            for i in 0..files {
                let p = floor_file(&path, i, 0);
                match DirectFile::create_truncate(&p).await {
                    Ok(file) => streams.push(FloorStream {
                        file,
                        next: 1,
                        pos: 0,
                    }),
                    Err(e) => return Err(io(format!("create {}", p.display()), e)),
                }
            }
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
                let writes = streams
                    .iter_mut()
                    .enumerate()
                    .map(|(i, st)| st.append(&path, i, len));
                result = odradek::io::join::join_all(writes)
                    .await
                    .into_iter()
                    .collect();
                if result.is_err() {
                    break;
                }
                let syncs = streams.iter().map(|st| async move {
                    st.file
                        .fdatasync()
                        .await
                        .map_err(|e| io(format!("fdatasync {}", st.file.path().display()), e))
                });
                result = odradek::io::join::join_all(syncs)
                    .await
                    .into_iter()
                    .collect();
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
            for (i, st) in streams.into_iter().enumerate() {
                let _ = st.file.close().await;
                for n in 0..st.next {
                    let _ = std::fs::remove_file(floor_file(&path, i, n));
                }
            }
            result.map(|_| DurableFloor {
                rate_mb_per_s: (rate / 1e6 * 10.0).round() / 10.0,
                files,
                seconds: (secs * 100.0).round() / 100.0,
                rounds,
                bytes,
                latency_us: crate::report::percentiles(&latency),
                round_us: crate::report::percentiles(&round),
            })
        })
        .map_err(|e| CeilingError::Executor(e.to_string()))?;
    h.join()
        .map_err(|e| CeilingError::Executor(e.to_string()))?
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
