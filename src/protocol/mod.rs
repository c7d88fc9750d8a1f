//! The Kafka wire codec: pure, no I/O, run on whichever shard owns the connection.
//!
//! Owns: wire primitives ([`wire`]), the message definition macro and [`Message`] trait
//! ([`codec`]), request/response headers ([`header`]), API keys and the served-version table
//! ([`api`]), Kafka error codes ([`error`]) and every request/response body we serve
//! ([`messages`], re-exported here). RecordBatch v2 framing and validation live in [`record_batch`]; clients' pieces in
//! [`consumer_protocol`] (the bytes inside JoinGroup/SyncGroup, the range assignor) and
//! [`murmur2`] (Kafka's key partitioner hash).
//!
//! Invariants:
//! - Bounded decoding: every length and count from the wire is checked against the bytes left in
//!   the frame before anything is allocated; hostile input yields a [`DecodeError`], never a panic
//!   or a large allocation.
//! - Zero-copy records: `records` fields are `Bytes` slices of the request frame on decode, and
//!   large `Bytes` fields are emitted as separate shared chunks by the [`Writer`] on encode. A
//!   Fetch response's `records` is a [`RecordSet`]: several buffers (one per cached batch) that
//!   go out as one field without being joined.
//! - Byte-for-byte agreement with Kafka's generated codecs for every served version, checked by
//!   `tests/protocol_oracle.rs` against the `kafka-protocol` crate (dev-dependency only).
//!
//! Typical server use (frame = one request without its 4-byte size prefix):
//! ```ignore
//! let (header, body) = decode_request(frame)?; // Err: unreadable header, close the connection
//! match body {
//!     Ok(RequestBody::Produce(req)) => { /* ... */ }
//!     Err(DecodeError::UnsupportedVersion { .. }) => { /* answer UNSUPPORTED_VERSION */ }
//!     ...
//! }
//! let mut w = Writer::new();
//! encode_response(&mut w, header.correlation_id, header.request_api_version, &resp.into());
//! let size = w.len() as i32; // the frame size prefix
//! let chunks: Vec<Bytes> = w.finish(); // records stay shared, write with writev
//! ```

pub mod api;
pub mod body;
pub mod codec;
pub mod compression;
pub mod consumer_protocol;
pub mod error;
pub mod header;
pub mod messages;
pub mod murmur2;
pub mod record_batch;
pub mod record_set;
pub mod records;
#[doc(hidden)]
pub mod sample;
pub mod wire;

pub use api::{
    is_supported, request_is_flexible, response_is_flexible, supported_versions, ApiKey, SUPPORTED,
};
pub use body::{
    decode_request, decode_response, encode_request, encode_response, RequestBody, ResponseBody,
};
pub use codec::{Field, Message};
pub use error::ErrorCode;
pub use header::{request_header_version, response_header_version, RequestHeader, ResponseHeader};
pub use messages::*;
pub use record_set::RecordSet;
pub use wire::{DecodeError, Reader, Writer};
