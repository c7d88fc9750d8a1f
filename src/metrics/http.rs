//! The metrics listener: a tiny HTTP/1.1 server on shard 0 (`metrics.listen`), serving
//! `GET /metrics` (Prometheus text, gathered from every shard through the mailbox at each
//! scrape), `GET /health` (200 while the process runs) and `GET /ready` (200 once every shard
//! serves, 503 before and while stopping). Anything else: 404, or 405 for another method.
//!
//! Bounded on every side, since anyone who can reach the port can talk to it: requests are read
//! up to [`REQUEST_MAX_BYTES`] (then 431) within [`REQUEST_TIMEOUT`] (then 408), responses are
//! written with the same timeout, at most [`CONNECTIONS_MAX`] connections are served at once
//! (more are closed on accept), a scrape waits at most [`GATHER_TIMEOUT`] for the shards (then
//! 503), and every connection is closed after its one answer
//! (`Connection: close`, no keep-alive). It runs in shard 0's background task queue, so scrapes
//! never take CPU from requests when both have work.
//!
//! A failed bind (port taken) is logged as an error and the broker runs without the endpoint:
//! metrics are not worth refusing to serve clients. The socket has SO_REUSEADDR but not
//! SO_REUSEPORT, so a second broker cannot silently share the port.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use futures::future::{select, Either};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{Task, TaskQueueHandle};

use crate::memory::MemoryStats;
use crate::shard::Shard;

use super::render::{self, ProcessInfo};
use super::snapshot::{self, ShardSnapshot};

/// Largest request head (request line and headers) read.
pub const REQUEST_MAX_BYTES: usize = 8 * 1024;
/// Time a client has to send its request, and then to read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed as soon as they are accepted.
pub const CONNECTIONS_MAX: usize = 16;
/// Longest a scrape waits for the shards' snapshots (a hung shard answers 503, not never).
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(10);

thread_local! {
    /// The accept loop, dropped (socket closed) at shutdown.
    static ACCEPT: RefCell<Option<Task<()>>> = const { RefCell::new(None) };
}

/// Binds `metrics.listen` and starts serving it in `queue`. Call on one shard only (shard 0).
pub fn start(shard: &Rc<Shard>, queue: TaskQueueHandle) {
    let Some(addr) = shard.config.metrics_listen else {
        return;
    };
    let listener = match bind(addr) {
        Ok(l) => l,
        Err(e) => {
            log::error!(
                "metrics: cannot listen on {addr}: {e}; the broker runs without its /metrics, /health and /ready endpoint (set metrics.listen to another address, or empty to turn it off)"
            );
            return;
        }
    };
    log::info!("metrics: http://{addr}/metrics, /health and /ready");
    let shard = shard.clone();
    let accept = async move {
        let active = Rc::new(Cell::new(0usize));
        loop {
            match listener.accept().await {
                Ok(stream) if active.get() >= CONNECTIONS_MAX => drop(stream),
                Ok(stream) => {
                    active.set(active.get() + 1);
                    let active = active.clone();
                    let shard = shard.clone();
                    let served = glommio::spawn_local_into(
                        async move {
                            serve(&shard, stream).await;
                            active.set(active.get() - 1);
                        },
                        queue,
                    );
                    match served {
                        Ok(task) => {
                            task.detach();
                        }
                        Err(e) => crate::log_limited!(
                            log::Level::Warn,
                            "metrics: cannot serve a connection: {e}"
                        ),
                    }
                }
                Err(e) => {
                    crate::log_limited!(log::Level::Warn, "metrics: accept failed: {e}");
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    match glommio::spawn_local_into(accept, queue) {
        Ok(task) => ACCEPT.with(|a| *a.borrow_mut() = Some(task)),
        Err(e) => log::error!("metrics: cannot start the listener task: {e}"),
    }
}

/// Closes the metrics listener of this thread, if it has one.
pub fn stop() {
    ACCEPT.with(|a| drop(a.borrow_mut().take()));
}

fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    // SAFETY: a bound, listening TCP socket we own, handed over whole (into_raw_fd gives up our
    // ownership), as glommio's from_raw_fd requires.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// What a request head asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `GET` of this path (query string removed).
    Get(String),
    /// Another method.
    OtherMethod,
    /// Not an HTTP/1.x request line.
    Malformed,
}

/// Parses a request head (the bytes up to the empty line).
pub fn parse_head(head: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(head) else {
        return Request::Malformed;
    };
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), version, None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Malformed;
    };
    if method.is_empty()
        || !target.starts_with('/')
        || version.is_some_and(|v| !v.starts_with("HTTP/1."))
    {
        return Request::Malformed;
    }
    if method != "GET" {
        return Request::OtherMethod;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Request::Get(path.to_string())
}

/// Where the head ends (after the empty line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

enum HeadError {
    TooLarge,
    Closed,
    Io,
}

async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut buf = vec![0u8; REQUEST_MAX_BYTES];
    let mut len = 0;
    loop {
        if let Some(end) = head_end(&buf[..len]) {
            buf.truncate(end);
            return Ok(buf);
        }
        if len == buf.len() {
            return Err(HeadError::TooLarge);
        }
        match stream.read(&mut buf[len..]).await {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => len += n,
            Err(_) => return Err(HeadError::Io),
        }
    }
}

/// An HTTP/1.1 response that closes the connection.
pub fn response(status: u16, reason: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn plain(status: u16, reason: &str, body: &str) -> Vec<u8> {
    response(status, reason, "text/plain; charset=utf-8", body.as_bytes())
}

async fn serve(shard: &Rc<Shard>, mut stream: TcpStream) {
    let head = {
        let read = Box::pin(read_head(&mut stream));
        let timeout = Box::pin(glommio::timer::sleep(REQUEST_TIMEOUT));
        match select(read, timeout).await {
            Either::Left((head, _)) => Some(head),
            Either::Right(_) => None,
        }
    };
    let answer = match head {
        None => plain(408, "Request Timeout", "request not received in time\n"),
        Some(Err(HeadError::TooLarge)) => plain(
            431,
            "Request Header Fields Too Large",
            "request head too large\n",
        ),
        Some(Err(HeadError::Closed | HeadError::Io)) => return,
        Some(Ok(head)) => answer(shard, parse_head(&head)).await,
    };
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    if stream.write_all(&answer).await.is_ok() {
        let _ = stream.flush().await;
    }
    let _ = stream.close().await;
}

async fn answer(shard: &Rc<Shard>, request: Request) -> Vec<u8> {
    match request {
        Request::Malformed => plain(400, "Bad Request", "not an HTTP/1.x request\n"),
        Request::OtherMethod => plain(405, "Method Not Allowed", "only GET is served\n"),
        Request::Get(path) => match path.as_str() {
            "/metrics" => match gather_within(shard, GATHER_TIMEOUT).await {
                Ok(shards) => {
                    let info = ProcessInfo {
                        version: env!("CARGO_PKG_VERSION"),
                        ready: shard.lifecycle.is_ready(),
                        collect: shard.config.metrics_collect,
                        memory: MemoryStats::read(),
                    };
                    let text = render::render(&info, &shards);
                    response(200, "OK", render::CONTENT_TYPE, text.as_bytes())
                }
                Err(target) => plain(
                    503,
                    "Service Unavailable",
                    &format!("shard {target} did not answer in time (stopping?)\n"),
                ),
            },
            "/health" => plain(200, "OK", "ok\n"),
            "/ready" if shard.lifecycle.is_ready() => plain(200, "OK", "ready\n"),
            "/ready" => plain(503, "Service Unavailable", "not ready\n"),
            _ => plain(
                404,
                "Not Found",
                "not found: try /metrics, /health or /ready\n",
            ),
        },
    }
}

/// [`gather`], or `Err` naming the first shard that has not answered within `timeout`.
async fn gather_within(shard: &Rc<Shard>, timeout: Duration) -> Result<Vec<ShardSnapshot>, usize> {
    let answered = Rc::new(Cell::new(0usize));
    let gathering = Box::pin(gather(shard, answered.clone()));
    match select(gathering, Box::pin(glommio::timer::sleep(timeout))).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(answered.get()),
    }
}

/// Every shard's snapshot, taken on the shard itself through the mailbox (all asked first,
/// then gathered in shard order; `answered` counts those in). `Err(shard)` when one does not
/// answer.
async fn gather(shard: &Rc<Shard>, answered: Rc<Cell<usize>>) -> Result<Vec<ShardSnapshot>, usize> {
    let mut waits = Vec::with_capacity(shard.nr_shards);
    for target in 0..shard.nr_shards {
        let job = |s: &Rc<Shard>| {
            let snap = snapshot::take(s);
            async move { snap }
        };
        let rx = shard
            .mailbox
            .send(shard, target, job)
            .await
            .map_err(|_| target)?;
        waits.push((target, rx));
    }
    let mut out = Vec::with_capacity(waits.len());
    for (target, rx) in waits {
        out.push(rx.await.map_err(|_| target)?);
        answered.set(out.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Get("/metrics".into())
        );
        assert_eq!(
            parse_head(b"GET /ready?verbose=1 HTTP/1.0\r\n\r\n"),
            Request::Get("/ready".into())
        );
        assert_eq!(
            parse_head(b"GET /health\n\n"),
            Request::Get("/health".into())
        );
        assert_eq!(
            parse_head(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::OtherMethod
        );
        for bad in [
            &b"GET metrics HTTP/1.1\r\n\r\n"[..],
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
            b"\xff\xfe /x HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad), Request::Malformed, "{bad:?}");
        }
    }

    #[test]
    fn head_ends_at_the_first_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn responses_close_and_say_their_length() {
        let r =
            String::from_utf8(response(405, "Method Not Allowed", "text/plain", b"no\n")).unwrap();
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(r.contains("Content-Length: 3\r\n"));
        assert!(r.contains("Allow: GET\r\n"));
        assert!(r.contains("Connection: close\r\n\r\nno\n"));
    }
}
