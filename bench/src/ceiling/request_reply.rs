//! The request/reply ceiling: loopback request/reply over as many connections as a workload
//! has producers. Each client connection sends one request of `request_bytes`, waits for its
//! `reply_bytes` answer and sends the next (one in flight, so each request arrives on its own,
//! as a producer's do while the broker keeps up); the server, on the broker's core, answers each
//! whole request it has read and does nothing else. Requests answered per second bound any
//! broker that reads and answers each such request, on this machine, with this pinning. Two
//! I/O paths ([`RequestPath`]): epoll and plain syscalls (the machine's bound) and glommio's
//! `TcpStream` (what the runtime the broker and the bench use adds per request).

use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::LocalExecutorBuilder;
use serde::Serialize;

use super::{io, loopback_server, placement, CeilingError};
use crate::run::thread_cpu_us;

/// The request/reply ceiling's traffic (see the module doc).
#[derive(Debug, Clone, Serialize)]
pub struct RequestShape {
    pub path: RequestPath,
    pub connections: usize,
    pub request_bytes: usize,
    pub reply_bytes: usize,
    pub seconds: f64,
}

impl RequestShape {
    /// Connections, request and answer bytes, each at least 1.
    fn sizes(&self) -> (usize, usize, usize) {
        (
            self.connections.max(1),
            self.request_bytes.max(1),
            self.reply_bytes.max(1),
        )
    }
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

/// CPU time since `cpu0` over wall time since `wall0`.
fn busy_since(cpu0: Option<u64>, wall0: Instant) -> Option<f64> {
    let used = thread_cpu_us()?.checked_sub(cpu0?)?;
    let wall = wall0.elapsed().as_micros().max(1) as f64;
    Some((used as f64 / wall * 1000.0).round() / 1000.0)
}

/// Replies per write at most (the server answers every whole request a read brought).
const REPLIES_PER_WRITE: usize = 64;

/// The server's answers to `n` more bytes read on a connection with `partial` bytes of an
/// unfinished request before them: the byte length of each write (at most
/// [`REPLIES_PER_WRITE`] replies each), one reply per request the bytes complete.
fn answer_writes(
    partial: &mut usize,
    n: usize,
    req_len: usize,
    reply_len: usize,
) -> impl Iterator<Item = usize> {
    *partial += n;
    let whole = *partial / req_len;
    *partial %= req_len;
    (0..whole)
        .step_by(REPLIES_PER_WRITE)
        .map(move |done| (whole - done).min(REPLIES_PER_WRITE) * reply_len)
}

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

pub fn measure(
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
        for len in answer_writes(partial, n, req_len, reply_len) {
            match s.write_all(&replies[..len]) {
                Ok(()) => {}
                Err(e) if gone(&e) => return Ok(false),
                Err(e) => return Err(io("server write", e)),
            }
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
    let (conns, req_len, reply_len) = shape.sizes();
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
    let (conns, req_len, reply_len) = shape.sizes();
    let (srv, port) = loopback_server(
        server,
        "ceiling-reply",
        "request server",
        move |l| async move {
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
                        for len in answer_writes(&mut partial, n, req_len, reply_len) {
                            s.write_all(&replies[..len])
                                .await
                                .map_err(|e| io("server write", e))?;
                        }
                    }
                }));
            }
            // Busy from the first request on: the clients start once all are connected.
            let (cpu0, wall0) = (thread_cpu_us(), Instant::now());
            for t in tasks {
                t.await?;
            }
            Ok(busy_since(cpu0, wall0))
        },
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_completed_request_gets_one_reply_in_bounded_writes() {
        let mut partial = 0;
        // Half a request: nothing to answer, the half is kept.
        assert_eq!(answer_writes(&mut partial, 50, 100, 7).count(), 0);
        assert_eq!(partial, 50);
        // Its second half and 1.5 more: two replies in one write, half a request kept.
        let w: Vec<usize> = answer_writes(&mut partial, 200, 100, 7).collect();
        assert_eq!(w, vec![14]);
        assert_eq!(partial, 50);
        // 150 whole requests at once: writes of 64, 64 and 22 replies.
        let mut partial = 0;
        let w: Vec<usize> = answer_writes(&mut partial, 150 * 100, 100, 7).collect();
        assert_eq!(w, vec![64 * 7, 64 * 7, 22 * 7]);
        assert_eq!(partial, 0);
    }
}
