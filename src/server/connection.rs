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
//! Metrics (the shard's probe): connections open, request and response bytes, and each
//! request's latency per API, from the moment its frame goes to dispatch until its completion
//! resolves in the writer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel;
use glommio::net::TcpStream;

use crate::io::socket::StreamHalf;
use crate::protocol::wire::Reader;
use crate::shard::Shard;

use super::framing::{FrameError, FrameReader};
use super::handlers::{self, Dispatch};

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

    let writer_shard = shard.clone();
    let writer_peer = peer.clone();
    let writer_task = glommio::spawn_local(async move {
        let probe = &writer_shard.probe;
        while let Some(queued) = rx.recv().await {
            let completion = queued.pending.await;
            probe.request_done(queued.api_key, queued.started);
            let frame = match completion {
                Completion::Respond(frame) => frame,
                Completion::Silent => continue,
                Completion::Close(why) => {
                    log::info!(
                        "shard {}: closing connection from {writer_peer}: {why}",
                        writer_shard.id
                    );
                    break;
                }
            };
            probe.sent(4 + frame.len);
            if write_frame(&mut writer, frame).await.is_err() {
                return;
            }
        }
        let _ = writer.flush().await;
        let _ = writer.close().await;
    });

    let mut frames = FrameReader::new(reader, shard.config.socket_request_max_bytes);
    let why: String = 'conn: loop {
        // Hand every complete frame already read to the dispatcher, then read more.
        let frame = match frames.next_buffered() {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                if shard.stopping.get() {
                    break String::new();
                }
                match frames.read_more().await {
                    Ok(true) => continue,
                    Ok(false) => break String::new(),
                    // A client that goes away without closing is normal, not worth a warning.
                    Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                        break String::new()
                    }
                    Err(e) => break e.to_string(),
                }
            }
            Err(e) => break e.to_string(),
        };
        shard.probe.received(4 + frame.len());
        let api_key = api_key_of(&frame);
        let started = shard.probe.request_started();
        match handlers::dispatch(&shard, peer_ip, Reader::new(frame)).await {
            Dispatch::Reply(pending) => {
                let queued = Queued {
                    pending,
                    api_key,
                    started,
                };
                if tx.send(queued).await.is_err() {
                    break 'conn String::new();
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
    // Finish the answers already owed (in order), then the socket closes.
    writer_task.await;
    shard.probe.connection_closed();
}

/// Writes the size prefix and the chunks of one response. A small first chunk travels in the
/// same write as the prefix (one syscall fewer per response); large record chunks go as they are.
async fn write_frame(writer: &mut StreamHalf, frame: ResponseFrame) -> io::Result<()> {
    const COALESCE_MAX: usize = 64 * 1024;
    let mut chunks = frame.chunks.into_iter();
    let mut head = Vec::with_capacity(4 + COALESCE_MAX.min(frame.len));
    head.extend_from_slice(&(frame.len as u32).to_be_bytes());
    let mut rest = None;
    if let Some(first) = chunks.next() {
        if first.len() <= COALESCE_MAX {
            head.extend_from_slice(&first);
        } else {
            rest = Some(first);
        }
    }
    writer.write_all(&head).await?;
    for chunk in rest.into_iter().chain(chunks) {
        writer.write_all(&chunk).await?;
    }
    Ok(())
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
