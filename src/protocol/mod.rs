//! The Kafka wire codec: pure, no I/O, run on whichever shard owns the connection.
//!
//! Owns: wire primitives ([`wire`]), the message definition macro and [`Message`] trait
//! ([`codec`]), request/response headers ([`header`]), API keys and the served-version table
//! ([`api`]), Kafka error codes ([`error`]) and every request/response body we serve
//! ([`messages`], re-exported here). RecordBatch v2 lives in `record_batch` (separate owner).
//!
//! Invariants:
//! - Bounded decoding: every length and count from the wire is checked against the bytes left in
//!   the frame before anything is allocated; hostile input yields a [`DecodeError`], never a panic
//!   or a large allocation.
//! - Zero-copy records: `records` fields are `Bytes` slices of the request frame on decode, and
//!   large `Bytes` fields are emitted as separate shared chunks by the [`Writer`] on encode.
//! - Byte-for-byte agreement with Kafka's generated codecs for every served version, checked by
//!   `tests/protocol_oracle.rs` against the `kafka-protocol` crate (dev-dependency only).
//!
//! Typical server use:
//! ```ignore
//! let mut r = Reader::new(frame);
//! let header = RequestHeader::decode(&mut r)?;
//! let req = ProduceRequest::decode(&mut r, header.request_api_version)?;
//! let mut w = Writer::new();
//! ResponseHeader { correlation_id: header.correlation_id }
//!     .encode(&mut w, response_header_version(ApiKey::Produce, header.request_api_version));
//! resp.encode(&mut w, header.request_api_version);
//! let size = w.len(); // frame size prefix
//! let chunks = w.finish();
//! ```

pub mod api;
pub mod codec;
pub mod error;
pub mod header;
pub mod messages;
#[doc(hidden)]
pub mod sample;
pub mod wire;

pub use api::{
    is_supported, request_is_flexible, response_is_flexible, supported_versions, ApiKey, SUPPORTED,
};
pub use codec::{Field, Message};
pub use error::ErrorCode;
pub use header::{request_header_version, response_header_version, RequestHeader, ResponseHeader};
pub use messages::*;
pub use wire::{DecodeError, Reader, Writer};
