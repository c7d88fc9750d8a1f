//! One client connection, served start to finish by the shard that accepted it.
//!
//! Framing: a 4-byte big-endian size, then the request. A size over `socket.request.max.bytes`,
//! a frame too short for a header, an unknown api key or an undecodable request closes the
//! connection (logged); nothing a client sends can take the shard down. Each frame gets an
//! allocation of its own (see [`super::framing`]) that grows with the bytes actually received,
//! never by the size a client claims.
//!
//! Pipelining: the reader dispatches requests strictly in arrival order (so appends keep the
//! order the client sent them) and queues each request's completion; the writer sends
//! completions in that same order. The queue is bounded by `connection.inflight.max`: a client
//! that keeps sending without reading its answers stops being read.
//!
//! Idle connections (`connections.max.idle.ms`, Kafka's name and meaning): a connection is
//! closed by the broker once, for that long, no byte has arrived while no request was being
//! worked on — silent clients, clients that stopped in the middle of a frame — or the client
//! has taken no byte of a response it is owed (a consumer that never reads its socket would
//! otherwise pin that response's buffers for good). A request still being worked on (a long
//! poll, a rebalance) is not idleness. No task or timer per connection: whatever the reader is
//! waiting on (the socket, room in the in-flight queue) is raced against a timer only while that
//! wait is pending, so a busy connection never arms one.
//!
//! Requests read and not yet answered count against the shard's `queued.max.request.bytes`
//! (see [`super::request_budget`]; Produce gives its bytes back once written); a request that
//! does not fit waits before dispatch, and its connection is not read meanwhile.
//!
//! Memory a connection can hold: its read buffer ([`super::framing::READ_BUFFER`]) or one
//! partial frame (at most `socket.request.max.bytes`, grown only as bytes arrive), up to
//! `connection.inflight.max` requests waiting for the writer (decoded, their answers not yet
//! computed: a completion does its work when the writer polls it, in order), and the one
//! response being written. A client that pipelines requests and never reads stalls only itself:
//! the writer waits on its socket, the reader stops at the in-flight bound, and after
//! `connections.max.idle.ms` the connection is closed and all of that freed.
//!
//! Metrics (the shard's probe): connections open, request and response bytes, and each
//! request's latency per API, from the moment its frame goes to dispatch until its completion
//! resolves in the writer.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel;
use glommio::net::TcpStream;

use crate::io::socket::{write_gathered, StreamHalf};
use crate::protocol::wire::Reader;
use crate::shard::Shard;

use super::framing::{FrameError, FrameReader};
use super::handlers::{self, Dispatch};
use super::request_budget::RequestHold;

/// An encoded response: the chunks that follow the 4-byte size prefix.
pub struct ResponseFrame {
    pub chunks: Vec<Bytes>,
    pub len: usize,
}

/// How a request ends, once its completion has run.
pub enum Completion {
    /// Send this response.
    Respond(ResponseFrame),
    /// Send nothing (acks=0 produce that succeeded).
    Silent,
    /// Close the connection after the responses already sent (acks=0 produce that failed: the
    /// only way to tell such a client, as Kafka does, so it refreshes its metadata).
    Close(String),
}

/// A request's completion, queued in request order.
pub type Pending = Pin<Box<dyn Future<Output = Completion>>>;

/// A completion on its way to the writer, with what its latency is measured by: the request's
/// API key and when it went to dispatch (`None` when metrics are not collected).
struct Queued {
    pending: Pending,
    api_key: i16,
    started: Option<Instant>,
    /// The request's bytes in `queued.max.request.bytes`, given back once it is answered (if
    /// its handler has not given them back already).
    budget: RequestHold,
}

/// What the idle check knows about the writer side of a connection; shared by its reader and
/// writer tasks (same shard, so plain cells).
struct Activity {
    /// Requests handed to the writer (or waiting for room to be) and not finished yet.
    in_flight: Cell<usize>,
    /// The writer is sending a response: the connection waits on the client, not on us.
    sending: Cell<bool>,
    /// When the writer last finished a request or got response bytes into the socket (only
    /// kept when idle connections are closed, so a connection without the limit reads no clock).
    last_answer: Cell<Instant>,
    tracked: bool,
}

impl Activity {
    fn new(tracked: bool) -> Activity {
        Activity {
            in_flight: Cell::new(0),
            sending: Cell::new(false),
            last_answer: Cell::new(Instant::now()),
            tracked,
        }
    }

    /// Response bytes reached the socket, or a request finished.
    fn progressed(&self) {
        if self.tracked {
            self.last_answer.set(Instant::now());
        }
    }

    fn finished(&self) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
        self.progressed();
    }
}

/// Why an idle connection is closed, and for how long it had been quiet.
enum Idle {
    /// Nothing received (a partial frame included) and nothing being worked on.
    Silent(Duration),
    /// A response is owed and the client has not taken any of it.
    NotReading(Duration),
}

/// Awaits `fut`, unless the connection turns idle first (see the module comment): `Err` then.
/// `fut` stays in place between timer rounds (only a reference to it is raced), so nothing it
/// holds is lost when the timer fires and the connection turns out not to be idle.
async fn until_idle<F: Future>(
    fut: F,
    limit: Option<Duration>,
    activity: &Activity,
) -> Result<F::Output, Idle> {
    let Some(limit) = limit else {
        return Ok(fut.await);
    };
    let mut fut = std::pin::pin!(fut);
    let mut wait = limit;
    // When this wait began: known once the timer first fires (it was armed the moment `fut`
    // first had to wait, `wait` before).
    let mut began: Option<Instant> = None;
    loop {
        let done = futures_lite::future::or(async { Some(fut.as_mut().await) }, async {
            glommio::timer::sleep(wait).await;
            None
        })
        .await;
        if let Some(out) = done {
            return Ok(out);
        }
        let now = Instant::now();
        let began = *began.get_or_insert_with(|| now.checked_sub(wait).unwrap_or(now));
        let sending = activity.sending.get();
        if activity.in_flight.get() > 0 && !sending {
            // A request is being worked on: not idle, look again a whole period later.
            wait = limit;
            continue;
        }
        let quiet = now.saturating_duration_since(began.max(activity.last_answer.get()));
        if quiet >= limit {
            return Err(if sending {
                Idle::NotReading(quiet)
            } else {
                Idle::Silent(quiet)
            });
        }
        wait = limit - quiet;
    }
}

/// The API key of a request frame (its first two bytes), -1 if it is too short to have one.
fn api_key_of(frame: &[u8]) -> i16 {
    match frame {
        [a, b, ..] => i16::from_be_bytes([*a, *b]),
        _ => -1,
    }
}

pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let peer_ip = stream.peer_addr().ok().map(|a| a.ip());
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = crate::io::socket::split(stream);
    let (tx, rx) = local_channel::new_bounded::<Queued>(shard.config.connection_inflight_max);
    shard.probe.connection_opened();
    let idle_limit = shard.config.connections_max_idle;
    let activity = Rc::new(Activity::new(idle_limit.is_some()));

    let writer_shard = shard.clone();
    let writer_peer = peer.clone();
    let writer_activity = activity.clone();
    let writer_task = glommio::spawn_local(async move {
        let probe = &writer_shard.probe;
        let activity = &*writer_activity;
        while let Some(queued) = rx.recv().await {
            let completion = queued.pending.await;
            queued.budget.release();
            probe.request_done(queued.api_key, queued.started);
            match completion {
                Completion::Respond(frame) => {
                    probe.sent(4 + frame.len);
                    activity.sending.set(true);
                    let written = write_frame(&mut writer, frame, activity).await;
                    activity.sending.set(false);
                    if written.is_err() {
                        return;
                    }
                }
                Completion::Silent => {}
                Completion::Close(why) => {
                    log::info!(
                        "shard {}: closing connection from {writer_peer}: {why}",
                        writer_shard.id
                    );
                    break;
                }
            }
            activity.finished();
        }
        let _ = writer.flush().await;
        let _ = writer.close().await;
    });

    let mut frames = FrameReader::new(reader, shard.config.socket_request_max_bytes);
    let mut idle = None;
    let why: String = 'conn: loop {
        // Hand every complete frame already read to the dispatcher, then read more.
        let frame = match frames.next_buffered() {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                if shard.stopping.get() {
                    break String::new();
                }
                match until_idle(frames.read_more(), idle_limit, &activity).await {
                    Ok(Ok(true)) => continue,
                    Ok(Ok(false)) => break String::new(),
                    // A client that goes away without closing is normal, not worth a warning.
                    Ok(Err(FrameError::Io(e))) if e.kind() == io::ErrorKind::ConnectionReset => {
                        break String::new()
                    }
                    Ok(Err(e)) => break e.to_string(),
                    Err(quiet) => {
                        idle = Some(quiet);
                        break String::new();
                    }
                }
            }
            Err(e) => break e.to_string(),
        };
        shard.probe.received(4 + frame.len());
        let api_key = api_key_of(&frame);
        // Room in `queued.max.request.bytes` first: while there is none, this connection is
        // not read further.
        let permit = match &shard.request_budget {
            Some(budget) => budget.reserve(4 + frame.len()).await,
            None => None,
        };
        let started = shard.probe.clock();
        let budget = RequestHold::new(permit);
        match handlers::dispatch(&shard, peer_ip, budget.clone(), Reader::new(frame)).await {
            Dispatch::Reply(pending) => {
                let queued = Queued {
                    pending,
                    api_key,
                    started,
                    budget,
                };
                activity.in_flight.set(activity.in_flight.get() + 1);
                // Waits here while `connection.inflight.max` answers are owed.
                match until_idle(tx.send(queued), idle_limit, &activity).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break 'conn String::new(),
                    Err(quiet) => {
                        idle = Some(quiet);
                        break 'conn String::new();
                    }
                }
            }
            Dispatch::Close(why) => break 'conn why,
        }
    };
    if !why.is_empty() {
        // A client can repeat this as fast as it can connect: rate-limited.
        crate::log_limited!(
            log::Level::Warn,
            "shard {}: closing connection from {peer}: {why}",
            shard.id
        );
    }
    drop(tx);
    match idle {
        None => {
            // Finish the answers already owed (in order), then the socket closes.
            writer_task.await;
        }
        Some(idle) => {
            let partial = frames.partial_bytes();
            let (ms, what) = match idle {
                Idle::Silent(quiet) if partial > 0 => (
                    quiet.as_millis(),
                    format!("stalled inside a request ({partial} bytes of it received)"),
                ),
                Idle::Silent(quiet) => (quiet.as_millis(), "idle".to_string()),
                Idle::NotReading(quiet) => {
                    (quiet.as_millis(), "not reading its responses".to_string())
                }
            };
            // Info, not a warning: closing idle connections is routine (Kafka logs it at debug),
            // and rate-limited, as a flood of silent connections would repeat it.
            crate::log_limited!(
                log::Level::Info,
                "shard {}: closing connection from {peer}: {what} for {ms} ms (connections.max.idle.ms)",
                shard.id
            );
            // Nothing is owed to an idle connection, and a client that stopped reading would
            // never let the writer finish: stop it (that closes its half of the socket).
            drop(writer_task);
        }
    }
    drop(frames);
    shard.probe.connection_closed();
}

/// Writes the size prefix and the chunks of one response, gathered (a Fetch response's record
/// chunks stay in the cache's buffers; see `io::socket::write_gathered`).
async fn write_frame(
    writer: &mut StreamHalf,
    frame: ResponseFrame,
    activity: &Activity,
) -> io::Result<()> {
    let prefix = (frame.len as u32).to_be_bytes();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(frame.chunks.len() + 1);
    parts.push(&prefix);
    parts.extend(frame.chunks.iter().map(|c| &c[..]));
    write_gathered(writer, &parts, || activity.progressed()).await
}

/// Encodes a response header + body.
pub fn encode_response<M: crate::protocol::codec::Message>(
    correlation_id: i32,
    version: i16,
    header_flexible: bool,
    body: &M,
) -> ResponseFrame {
    let mut w = crate::protocol::wire::Writer::with_capacity(256);
    w.put_i32(correlation_id);
    if header_flexible {
        w.put_uvarint(0); // no tagged fields in the header
    }
    body.encode(&mut w, version);
    let len = w.len();
    ResponseFrame {
        chunks: w.finish(),
        len,
    }
}
