//! One Kafka connection from a bench core: framing (4-byte size prefix), request encoding with the
//! broker's own codec, version negotiation through ApiVersions, and a split into a writer half
//! and a reader half so a producer can pipeline requests while another task reads responses.
//!
//! Invariants: responses arrive in request order (Kafka guarantees it per connection), so the
//! reader matches each frame with the oldest request in flight and checks its correlation id.
//! The two halves share the socket through an `Rc<RefCell>` borrowed only inside a poll; glommio
//! keeps separate readiness for reads and writes, so both may be pending at once.

use std::io;

use bytes::Bytes;
use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use odradek::io::socket::{write_gathered, StreamHalf};
use odradek::protocol::api::ApiKey;
use odradek::protocol::wire::SHARED_CHUNK_MIN;
use odradek::protocol::{
    decode_response, encode_request, ApiVersionsRequest, ApiVersionsResponse, DecodeError,
    RequestBody, RequestHeader, ResponseBody, Writer,
};

/// Largest response frame we accept (a Fetch is bounded by its max_bytes, far below this).
const FRAME_MAX: usize = 256 << 20;
/// The staging buffer of a connection whose reads bring many frames at once (a consumer's
/// pipelined fetches): what one read fills at most.
const READ_CHUNK: usize = 256 << 10;
/// The staging buffer a connection starts with, until a read fills it and it grows to
/// [`READ_CHUNK`]. A producer's connection only ever reads small produce responses. When every
/// connection zeroed 256 KiB up front, W5's 1,000 producers faulted in 256 MB while they
/// connected, most of the bench's core went to `clear_page_erms` (on the development VM, memory
/// its host has taken back costs ~25 µs per 4 KiB page), and no record was acknowledged for the
/// first 11-13 s of a run (perf/2026-12-06-w5-warm-up-memory.md).
const FIRST_READ_CHUNK: usize = 16 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("{op} on connection to {addr}: {source}")]
    Io {
        op: &'static str,
        addr: String,
        source: io::Error,
    },
    #[error("connection to {0} closed by the broker")]
    Closed(String),
    #[error("response frame of {0} bytes is too large")]
    FrameTooLarge(usize),
    #[error("decoding {api:?} response: {source}")]
    Decode { api: ApiKey, source: DecodeError },
    #[error("correlation id {got}, expected {expected}")]
    Correlation { expected: i32, got: i32 },
    #[error("broker does not serve {0:?} in a version this client speaks")]
    NoVersion(ApiKey),
    #[error("unexpected response body for {0:?}")]
    Unexpected(ApiKey),
}

/// Our codec's versions for each api we use; intersected with the broker's at connect time.
const WANTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::InitProducerId, 0, 5),
    // A transactional producer: AddPartitionsToTxn in its client form (v4+ is broker-to-broker);
    // EndTxn up to v4 (v5 bumps the epoch at every transaction end, KIP-890).
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::DeleteTopics, 1, 6),
    // Classic group member (`group`): the versions of a Kafka 2.3-era Java consumer, JoinGroup
    // v5 being the first with the member-id round trip and group.instance.id.
    (ApiKey::FindCoordinator, 1, 3),
    (ApiKey::JoinGroup, 5, 5),
    (ApiKey::SyncGroup, 3, 3),
    (ApiKey::Heartbeat, 3, 3),
    (ApiKey::LeaveGroup, 3, 3),
    (ApiKey::OffsetCommit, 7, 7),
    (ApiKey::OffsetFetch, 5, 7),
];

#[derive(Debug, Clone, Default)]
pub struct Versions(Vec<(ApiKey, i16)>);

impl Versions {
    pub fn get(&self, key: ApiKey) -> Result<i16, ConnError> {
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .ok_or(ConnError::NoVersion(key))
    }
}

/// Sending side: encodes and writes request frames.
pub struct ConnWriter {
    half: StreamHalf,
    addr: String,
    next_correlation: i32,
    pub versions: Versions,
}

/// Receiving side: reads whole response frames.
pub struct ConnReader {
    half: StreamHalf,
    addr: String,
    /// Staging buffer, `buf[start..end]` holds received bytes not yet returned.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// A connection used in request/response style (admin calls, consumers).
pub struct Connection {
    pub writer: ConnWriter,
    pub reader: ConnReader,
}

/// A request written and awaiting its response.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub correlation_id: i32,
    pub api: ApiKey,
    pub version: i16,
}

/// An encoded request: its size prefix and its bytes.
struct Frame {
    sent: Sent,
    prefix: [u8; 4],
    chunks: Vec<Bytes>,
}

impl ConnWriter {
    /// Encodes `body` at `version` and writes the frame.
    pub async fn send_at(&mut self, body: &RequestBody, version: i16) -> Result<Sent, ConnError> {
        let frame = self.encode(body, version);
        self.write_frame(frame).await
    }

    /// Like [`ConnWriter::send_at`], but lets go of `body` once it is encoded: the record sets
    /// it copied into the frame are freed before the write, which may wait long on a busy
    /// broker (W5 keeps a request waiting on each of 1,000 connections).
    pub async fn send_owned_at(
        &mut self,
        body: RequestBody,
        version: i16,
    ) -> Result<Sent, ConnError> {
        let frame = self.encode(&body, version);
        drop(body);
        self.write_frame(frame).await
    }

    /// The frame of `body` at `version`, with the next correlation id.
    fn encode(&mut self, body: &RequestBody, version: i16) -> Frame {
        let api = body.api_key();
        let correlation_id = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let header = RequestHeader {
            request_api_key: api as i16,
            request_api_version: version,
            correlation_id,
            client_id: Some("odradek-bench".into()),
        };
        let mut w = Writer::with_capacity(encoded_size_hint(body));
        encode_request(&mut w, &header, body);
        let len = w.len();
        Frame {
            sent: Sent {
                correlation_id,
                api,
                version,
            },
            prefix: (len as i32).to_be_bytes(),
            chunks: w.finish(),
        }
    }

    async fn write_frame(&mut self, frame: Frame) -> Result<Sent, ConnError> {
        let io_err = |source| ConnError::Io {
            op: "write",
            addr: self.addr.clone(),
            source,
        };
        // Gathered writes for the whole frame (record sets stay in their own buffers).
        let mut parts: Vec<&[u8]> = Vec::with_capacity(frame.chunks.len() + 1);
        parts.push(&frame.prefix);
        parts.extend(frame.chunks.iter().map(|c| &c[..]));
        write_gathered(&mut self.half, &parts, || {})
            .await
            .map_err(io_err)?;
        Ok(frame.sent)
    }

    /// Sends at the negotiated version for the body's api.
    pub async fn send(&mut self, body: &RequestBody) -> Result<Sent, ConnError> {
        let v = self.versions.get(body.api_key())?;
        self.send_at(body, v).await
    }

    /// The correlation id the next request will carry.
    pub fn next_correlation_id(&self) -> i32 {
        self.next_correlation
    }
}

impl ConnReader {
    fn new(half: StreamHalf, addr: &str) -> ConnReader {
        ConnReader {
            half,
            addr: addr.to_string(),
            buf: vec![0; FIRST_READ_CHUNK],
            start: 0,
            end: 0,
        }
    }

    /// Reads one response frame (without its size prefix). Small frames are assembled in a
    /// staging buffer (zeroed once, small until a read fills it) and copied out; a frame larger
    /// than it gets its own buffer and is read straight into it.
    pub async fn frame(&mut self) -> Result<Bytes, ConnError> {
        loop {
            let avail = self.end - self.start;
            if avail >= 4 {
                let s = self.start;
                let n = u32::from_be_bytes([
                    self.buf[s],
                    self.buf[s + 1],
                    self.buf[s + 2],
                    self.buf[s + 3],
                ]) as usize;
                if n > FRAME_MAX {
                    return Err(ConnError::FrameTooLarge(n));
                }
                if avail >= 4 + n {
                    let f = Bytes::copy_from_slice(&self.buf[s + 4..s + 4 + n]);
                    self.start += 4 + n;
                    if self.start == self.end {
                        self.start = 0;
                        self.end = 0;
                    }
                    return Ok(f);
                }
                if 4 + n > self.buf.len() {
                    let mut big = vec![0u8; n];
                    let have = avail - 4;
                    big[..have].copy_from_slice(&self.buf[s + 4..self.end]);
                    self.start = 0;
                    self.end = 0;
                    let mut at = have;
                    while at < n {
                        at += self.read_into_big(&mut big[at..]).await?;
                    }
                    return Ok(Bytes::from(big));
                }
            }
            if self.end == self.buf.len() {
                // Out of room at the tail: move the partial frame to the front.
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let end = self.end;
            let r = self.half.read(&mut self.buf[end..]).await;
            self.end += self.check_read(r)?;
            if self.end == self.buf.len() && self.buf.len() < READ_CHUNK {
                // A read filled it: this connection has the traffic for the full buffer.
                self.buf.resize(READ_CHUNK, 0);
            }
        }
    }

    async fn read_into_big(&mut self, dst: &mut [u8]) -> Result<usize, ConnError> {
        let r = self.half.read(dst).await;
        self.check_read(r)
    }

    fn check_read(&self, r: io::Result<usize>) -> Result<usize, ConnError> {
        match r {
            Ok(0) => Err(ConnError::Closed(self.addr.clone())),
            Ok(k) => Ok(k),
            Err(source) => Err(ConnError::Io {
                op: "read",
                addr: self.addr.clone(),
                source,
            }),
        }
    }

    /// Reads and decodes the response to `sent`.
    pub async fn response(&mut self, sent: Sent) -> Result<ResponseBody, ConnError> {
        let frame = self.frame().await?;
        Self::decode(frame, sent)
    }

    /// Decodes a response frame for `sent`, checking the correlation id.
    pub fn decode(frame: Bytes, sent: Sent) -> Result<ResponseBody, ConnError> {
        let (h, body) =
            decode_response(frame, sent.api, sent.version).map_err(|source| ConnError::Decode {
                api: sent.api,
                source,
            })?;
        if h.correlation_id != sent.correlation_id {
            return Err(ConnError::Correlation {
                expected: sent.correlation_id,
                got: h.correlation_id,
            });
        }
        Ok(body)
    }
}

impl Connection {
    /// Connects and negotiates versions (ApiVersions v3, falling back to v0 like Kafka clients).
    pub async fn connect(addr: &str) -> Result<Connection, ConnError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| ConnError::Connect {
                addr: addr.to_string(),
                source: io::Error::other(e.to_string()),
            })?;
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = odradek::io::socket::split(stream);
        let mut c = Connection {
            writer: ConnWriter {
                half: write_half,
                addr: addr.to_string(),
                next_correlation: 1,
                versions: Versions::default(),
            },
            reader: ConnReader::new(read_half, addr),
        };
        let mut resp = c.api_versions(3).await?;
        if resp.error_code != 0 {
            resp = c.api_versions(0).await?;
        }
        let mut v = Vec::new();
        for &(key, lo, hi) in WANTED {
            if let Some(b) = resp.api_keys.iter().find(|a| a.api_key == key as i16) {
                let top = hi.min(b.max_version);
                if top >= lo.max(b.min_version) {
                    v.push((key, top));
                }
            }
        }
        c.writer.versions = Versions(v);
        Ok(c)
    }

    async fn api_versions(&mut self, version: i16) -> Result<ApiVersionsResponse, ConnError> {
        let body = RequestBody::from(ApiVersionsRequest {
            client_software_name: "odradek-bench".into(),
            client_software_version: env!("CARGO_PKG_VERSION").into(),
        });
        let sent = self.writer.send_at(&body, version).await?;
        match self.reader.response(sent).await? {
            ResponseBody::ApiVersions(r) => Ok(r),
            _ => Err(ConnError::Unexpected(ApiKey::ApiVersions)),
        }
    }

    /// One request, one response.
    pub async fn call(&mut self, body: impl Into<RequestBody>) -> Result<ResponseBody, ConnError> {
        let body = body.into();
        let sent = self.writer.send(&body).await?;
        self.reader.response(sent).await
    }
}

/// Bytes to reserve for encoding `body`: a Produce request copies its small record batches into
/// the frame buffer (`Writer::put_bytes_shared`), and a W5 request carries hundreds of one-record
/// batches. Grown by doubling, that buffer's reallocations and copies showed up as ~15% of the
/// bench's core; sized up front, the bench's core went from 0.80 to 0.76–0.78 busy at the same
/// load (`perf/2026-12-04-w4-stall.md`). Batches the writer shares rather than copies
/// (`SHARED_CHUNK_MIN` and up) are not counted: reserving for them doubled what a request held
/// while it waited to be written. Other requests are small.
fn encoded_size_hint(body: &RequestBody) -> usize {
    const HEADER_AND_FIELDS: usize = 256;
    const PER_PARTITION: usize = 16;
    match body {
        RequestBody::Produce(p) => {
            let id = p.transactional_id.as_ref().map_or(0, |t| t.len());
            let topics: usize = p
                .topic_data
                .iter()
                .map(|t| {
                    PER_PARTITION
                        + t.name.len()
                        + t.partition_data
                            .iter()
                            .map(|d| {
                                let len = d.records.as_ref().map_or(0, |r| r.len());
                                PER_PARTITION + if len < SHARED_CHUNK_MIN { len } else { 0 }
                            })
                            .sum::<usize>()
                })
                .sum();
            HEADER_AND_FIELDS + id + topics
        }
        _ => HEADER_AND_FIELDS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use odradek::protocol::messages::produce::{
        PartitionProduceData, ProduceRequest, TopicProduceData,
    };

    fn produce(topic: &str, batch_lens: &[usize]) -> RequestBody {
        RequestBody::from(ProduceRequest {
            transactional_id: Some("txn-".repeat(40)),
            acks: -1,
            timeout_ms: 30_000,
            topic_data: vec![TopicProduceData {
                name: topic.into(),
                partition_data: batch_lens
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| PartitionProduceData {
                        index: i as i32,
                        records: Some(Bytes::from(vec![7u8; n])),
                    })
                    .collect(),
            }],
        })
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn the_read_buffer_starts_small_and_grows_once_a_read_fills_it() {
        use futures_lite::AsyncWriteExt;
        let run = glommio::LocalExecutorBuilder::default().spawn(|| async {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("local addr");
            let accept = glommio::spawn_local(async move { listener.accept().await });
            let client = TcpStream::connect(addr).await.expect("connect");
            let mut server = accept.await.expect("accept");
            let (half, _write_half) = odradek::io::socket::split(client);
            let mut reader = ConnReader::new(half, &addr.to_string());
            // Small frames (a producer's responses): one read brings them all, far from
            // filling the first buffer.
            let small: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100]).collect();
            let joined: Vec<u8> = small.iter().flat_map(|f| framed(f)).collect();
            server.write_all(&joined).await.expect("write");
            for f in &small {
                assert_eq!(&reader.frame().await.expect("frame")[..], &f[..]);
            }
            assert_eq!(
                reader.buf.len(),
                FIRST_READ_CHUNK,
                "grown before a read filled it"
            );
            // A burst, all waiting in the socket before the reader goes on (well within the
            // receive buffer): its first read fills the small buffer. Then a frame larger than
            // the first buffer, assembled in the grown one.
            let burst: Vec<Vec<u8>> = (0..400u32).map(|i| vec![(i % 251) as u8; 100]).collect();
            let mid = vec![9u8; FIRST_READ_CHUNK * 2 + 5];
            let joined: Vec<u8> = burst.iter().chain([&mid]).flat_map(|f| framed(f)).collect();
            server.write_all(&joined).await.expect("write");
            for f in burst.iter().chain([&mid]) {
                assert_eq!(&reader.frame().await.expect("frame")[..], &f[..]);
            }
            assert_eq!(
                reader.buf.len(),
                READ_CHUNK,
                "not grown after a read filled it"
            );
            // Larger than the full buffer: read into an allocation of its own.
            let big = vec![7u8; READ_CHUNK + 3];
            let big_framed = framed(&big);
            let writer = glommio::spawn_local(async move {
                server.write_all(&big_framed).await.expect("write big");
                server
            });
            assert_eq!(&reader.frame().await.expect("big frame")[..], &big[..]);
            let mut server = writer.await;
            server.close().await.expect("close");
            assert!(matches!(reader.frame().await, Err(ConnError::Closed(_))));
        });
        run.expect("spawn executor")
            .join()
            .expect("executor thread");
    }

    #[test]
    fn the_size_hint_covers_the_encoded_produce_request() {
        for (topic, lens) in [
            ("t", vec![1100usize; 500]),
            (
                &*"long-topic-name-".repeat(15),
                vec![70, 1100, 5000, 131_072],
            ),
            ("t", vec![]),
        ] {
            let body = produce(topic, &lens);
            let header = RequestHeader {
                request_api_key: ApiKey::Produce as i16,
                request_api_version: 9,
                correlation_id: 1,
                client_id: Some("odradek-bench".into()),
            };
            let mut w = Writer::new();
            encode_request(&mut w, &header, &body);
            let hint = encoded_size_hint(&body);
            // What the frame buffer holds: everything but the shared record sets.
            let shared: usize = lens.iter().filter(|&&n| n >= SHARED_CHUNK_MIN).sum();
            let copied = w.len() - shared;
            assert!(copied <= hint, "copied {copied} > hint {hint}");
            // And not wildly above: the hint is what gets allocated per request.
            assert!(
                hint <= copied + 512 + 16 * lens.len(),
                "hint {hint} for {copied}"
            );
        }
    }
}
