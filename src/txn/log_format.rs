//! `__transaction_state` records: Kafka's TransactionLogKey v0 and TransactionLogValue v0 (what
//! we write) and v1 (read too), so a record means the same to us as to Kafka's tools.
//!
//! ```text
//! key, version 0:
//!   +-------------+---------------+---------------------------+
//!   | i16 version | i16 length n  | n bytes: transactional id |
//!   |     = 0     |               | (UTF-8)                   |
//!   +-------------+---------------+---------------------------+
//!
//! value, version 0 (a missing value, a tombstone, removes the id):
//!   i16 version = 0
//!   i64 producer_id | i16 producer_epoch | i32 transaction_timeout_ms
//!   i8  transaction_status   (Empty 0, Ongoing 1, PrepareCommit 2, PrepareAbort 3,
//!                             CompleteCommit 4, CompleteAbort 5, Dead 6, PrepareEpochFence 7)
//!   i32 topic count, -1 = null (Kafka writes null for Empty)
//!       per topic: i16 length + topic bytes | i32 count | count x i32 partition
//!   i64 transaction_last_update_timestamp_ms
//!   i64 transaction_start_timestamp_ms (-1 = no transaction)
//!
//! value, version 1 (flexible): the same fields, but the partition array, the topic strings and
//!   the partition id arrays are compact (unsigned varint of length + 1, 0 = null), and every
//!   topic entry and the value itself end with tagged fields (unsigned varint count, then
//!   {varint tag, varint size, size bytes}); the tags (previous/next producer id, client
//!   transaction version) are not ours and are skipped.
//! ```
//!
//! Decoding reads untrusted bytes: every length and count is checked against the bytes present
//! before anything is allocated, and anything malformed is an error, never a panic.

use std::collections::BTreeSet;

use super::{TopicPartition, TxnMetadata, TxnState};

/// The TransactionLogKey version we read and write.
pub const KEY_VERSION: i16 = 0;
/// The TransactionLogValue version we write (Kafka writes v0 until `transaction.version` 1).
pub const VALUE_VERSION: i16 = 0;
/// The flexible TransactionLogValue version we also read.
pub const VALUE_VERSION_FLEXIBLE: i16 = 1;

/// A record that cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogFormatError {
    #[error("transaction log record truncated while reading {field}")]
    Truncated { field: &'static str },
    #[error("unsupported transaction log {kind} version {version}")]
    UnsupportedVersion { kind: &'static str, version: i16 },
    #[error("invalid length {len} of {field}")]
    InvalidLength { field: &'static str, len: i64 },
    #[error("malformed varint in {field}")]
    MalformedVarint { field: &'static str },
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    #[error("unknown transaction status {0}")]
    UnknownStatus(i8),
    #[error("{len} trailing bytes after the transaction log {kind}")]
    TrailingBytes { kind: &'static str, len: usize },
    #[error("{field} does not fit the transaction log format")]
    TooLarge { field: &'static str },
}

// -------------------------------------------------------------------------------------------
// Encoding

/// The record key for `transactional_id`.
pub fn encode_key(transactional_id: &str) -> Result<Vec<u8>, LogFormatError> {
    let mut out = Vec::with_capacity(4 + transactional_id.len());
    out.extend_from_slice(&KEY_VERSION.to_be_bytes());
    put_string(&mut out, transactional_id, "transactional_id")?;
    Ok(out)
}

/// The record value (version 0) for `metadata`. Partitions are written only for states other
/// than Empty (Kafka writes null there), grouped by topic.
pub fn encode_value(metadata: &TxnMetadata) -> Result<Vec<u8>, LogFormatError> {
    let mut out = Vec::with_capacity(48 + metadata.partitions.len() * 8);
    out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&metadata.producer_id.to_be_bytes());
    out.extend_from_slice(&metadata.producer_epoch.to_be_bytes());
    out.extend_from_slice(&metadata.timeout_ms.to_be_bytes());
    out.extend_from_slice(&metadata.state.id().to_be_bytes());
    if metadata.state == TxnState::Empty {
        out.extend_from_slice(&(-1i32).to_be_bytes());
    } else {
        let topics = group_by_topic(&metadata.partitions);
        put_count(&mut out, topics.len(), "transaction_partitions")?;
        for (topic, partitions) in topics {
            put_string(&mut out, topic, "topic")?;
            put_count(&mut out, partitions.len(), "partition_ids")?;
            for p in partitions {
                out.extend_from_slice(&p.to_be_bytes());
            }
        }
    }
    let last_update =
        i64::try_from(metadata.last_update_ms).map_err(|_| LogFormatError::TooLarge {
            field: "transaction_last_update_timestamp_ms",
        })?;
    out.extend_from_slice(&last_update.to_be_bytes());
    // Kafka's "no transaction" is -1; ours is 0.
    let start = match metadata.txn_start_ms {
        0 => -1,
        ms => i64::try_from(ms).map_err(|_| LogFormatError::TooLarge {
            field: "transaction_start_timestamp_ms",
        })?,
    };
    out.extend_from_slice(&start.to_be_bytes());
    Ok(out)
}

/// Key and value (`None`: a tombstone) of the record that stores `metadata` for
/// `transactional_id` (an [`super::Effect::Persist`]).
pub fn encode_record(
    transactional_id: &str,
    metadata: Option<&TxnMetadata>,
) -> Result<(Vec<u8>, Option<Vec<u8>>), LogFormatError> {
    let key = encode_key(transactional_id)?;
    let value = metadata.map(encode_value).transpose()?;
    Ok((key, value))
}

fn group_by_topic(partitions: &BTreeSet<TopicPartition>) -> Vec<(&str, Vec<i32>)> {
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for tp in partitions {
        match topics.last_mut() {
            Some((topic, ids)) if *topic == tp.topic => ids.push(tp.partition),
            _ => topics.push((tp.topic.as_str(), vec![tp.partition])),
        }
    }
    topics
}

fn put_string(out: &mut Vec<u8>, s: &str, field: &'static str) -> Result<(), LogFormatError> {
    let len = i16::try_from(s.len()).map_err(|_| LogFormatError::TooLarge { field })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_count(out: &mut Vec<u8>, n: usize, field: &'static str) -> Result<(), LogFormatError> {
    let n = i32::try_from(n).map_err(|_| LogFormatError::TooLarge { field })?;
    out.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Decoding

/// The transactional id of a record key.
pub fn decode_key(key: &[u8]) -> Result<String, LogFormatError> {
    let mut r = Reader { buf: key };
    let version = r.i16("key version")?;
    if version != KEY_VERSION {
        return Err(LogFormatError::UnsupportedVersion {
            kind: "key",
            version,
        });
    }
    let id = r.string("transactional_id")?;
    r.finish("key")?;
    Ok(id)
}

/// The metadata a record value holds for `transactional_id` (value version 0 or 1).
pub fn decode_value(transactional_id: &str, value: &[u8]) -> Result<TxnMetadata, LogFormatError> {
    let mut r = Reader { buf: value };
    let version = r.i16("value version")?;
    let flexible = match version {
        VALUE_VERSION => false,
        VALUE_VERSION_FLEXIBLE => true,
        _ => {
            return Err(LogFormatError::UnsupportedVersion {
                kind: "value",
                version,
            })
        }
    };
    let producer_id = r.i64("producer_id")?;
    let producer_epoch = r.i16("producer_epoch")?;
    let timeout_ms = r.i32("transaction_timeout_ms")?;
    let status = r.i8("transaction_status")?;
    let state = TxnState::from_id(status).ok_or(LogFormatError::UnknownStatus(status))?;
    let partitions = if flexible {
        r.partitions_flexible()?
    } else {
        r.partitions_v0()?
    };
    let last_update = r.i64("transaction_last_update_timestamp_ms")?;
    let start = r.i64("transaction_start_timestamp_ms")?;
    if flexible {
        r.skip_tagged_fields("value tagged fields")?;
    }
    r.finish("value")?;
    Ok(TxnMetadata {
        transactional_id: transactional_id.to_owned(),
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        // Kafka ignores whatever an Empty record lists.
        partitions: if state == TxnState::Empty {
            BTreeSet::new()
        } else {
            partitions
        },
        // Negative: Kafka's "none" (-1).
        txn_start_ms: u64::try_from(start).unwrap_or(0),
        last_update_ms: u64::try_from(last_update).unwrap_or(0),
    })
}

/// One record as [`super::TxnMachine::restore`] takes it: the id and its metadata (`None` for
/// a tombstone, `value == None`).
pub fn decode_record(
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(String, Option<TxnMetadata>), LogFormatError> {
    let id = decode_key(key)?;
    let metadata = value.map(|v| decode_value(&id, v)).transpose()?;
    Ok((id, metadata))
}

/// Smallest encoding of one topic entry: v0 = i16 length + i32 count; v1 = three one-byte
/// varints (topic length, partition count, tagged-field count).
const MIN_TOPIC_BYTES_V0: usize = 6;
const MIN_TOPIC_BYTES_V1: usize = 3;

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], LogFormatError> {
        if n > self.buf.len() {
            return Err(LogFormatError::Truncated { field });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], LogFormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    fn i8(&mut self, field: &'static str) -> Result<i8, LogFormatError> {
        Ok(i8::from_be_bytes(self.array(field)?))
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, LogFormatError> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, LogFormatError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, LogFormatError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// Kafka's unsigned varint (at most 5 bytes, fits a u32).
    fn uvarint(&mut self, field: &'static str) -> Result<u32, LogFormatError> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let b = self.array::<1>(field)?[0];
            let bits = u32::from(b & 0x7f);
            if i == 4 && bits > 0x0f {
                return Err(LogFormatError::MalformedVarint { field });
            }
            value |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(LogFormatError::MalformedVarint { field })
    }

    fn utf8(&mut self, len: usize, field: &'static str) -> Result<String, LogFormatError> {
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| LogFormatError::InvalidUtf8 { field })
    }

    /// A non-nullable i16-length string.
    fn string(&mut self, field: &'static str) -> Result<String, LogFormatError> {
        let len = self.i16(field)?;
        let len = usize::try_from(len).map_err(|_| LogFormatError::InvalidLength {
            field,
            len: i64::from(len),
        })?;
        self.utf8(len, field)
    }

    /// A non-nullable compact string.
    fn compact_string(&mut self, field: &'static str) -> Result<String, LogFormatError> {
        let len = self
            .compact_len(field)?
            .ok_or(LogFormatError::InvalidLength { field, len: -1 })?;
        self.utf8(len, field)
    }

    /// A compact length (`None` for null), as a usize.
    fn compact_len(&mut self, field: &'static str) -> Result<Option<usize>, LogFormatError> {
        let raw = self.uvarint(field)?;
        Ok(raw
            .checked_sub(1)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
    }

    /// Checks that `count` elements of at least `min_bytes` each can be present.
    fn check_count(
        &self,
        count: usize,
        min_bytes: usize,
        field: &'static str,
    ) -> Result<(), LogFormatError> {
        match count.checked_mul(min_bytes) {
            Some(need) if need <= self.buf.len() => Ok(()),
            _ => Err(LogFormatError::InvalidLength {
                field,
                len: i64::try_from(count).unwrap_or(i64::MAX),
            }),
        }
    }

    /// An i32 count: `None` for -1 (null), an error for other negatives.
    fn count_v0(&mut self, field: &'static str) -> Result<Option<usize>, LogFormatError> {
        let n = self.i32(field)?;
        if n == -1 {
            return Ok(None);
        }
        usize::try_from(n)
            .map(Some)
            .map_err(|_| LogFormatError::InvalidLength {
                field,
                len: i64::from(n),
            })
    }

    fn partitions_v0(&mut self) -> Result<BTreeSet<TopicPartition>, LogFormatError> {
        let mut set = BTreeSet::new();
        let Some(topics) = self.count_v0("transaction_partitions")? else {
            return Ok(set);
        };
        self.check_count(topics, MIN_TOPIC_BYTES_V0, "transaction_partitions")?;
        for _ in 0..topics {
            let topic = self.string("topic")?;
            let ids = self
                .count_v0("partition_ids")?
                .ok_or(LogFormatError::InvalidLength {
                    field: "partition_ids",
                    len: -1,
                })?;
            self.check_count(ids, 4, "partition_ids")?;
            for _ in 0..ids {
                let partition = self.i32("partition_id")?;
                set.insert(TopicPartition {
                    topic: topic.clone(),
                    partition,
                });
            }
        }
        Ok(set)
    }

    fn partitions_flexible(&mut self) -> Result<BTreeSet<TopicPartition>, LogFormatError> {
        let mut set = BTreeSet::new();
        let Some(topics) = self.compact_len("transaction_partitions")? else {
            return Ok(set);
        };
        self.check_count(topics, MIN_TOPIC_BYTES_V1, "transaction_partitions")?;
        for _ in 0..topics {
            let topic = self.compact_string("topic")?;
            let ids = self
                .compact_len("partition_ids")?
                .ok_or(LogFormatError::InvalidLength {
                    field: "partition_ids",
                    len: -1,
                })?;
            self.check_count(ids, 4, "partition_ids")?;
            for _ in 0..ids {
                let partition = self.i32("partition_id")?;
                set.insert(TopicPartition {
                    topic: topic.clone(),
                    partition,
                });
            }
            self.skip_tagged_fields("topic tagged fields")?;
        }
        Ok(set)
    }

    fn skip_tagged_fields(&mut self, field: &'static str) -> Result<(), LogFormatError> {
        let count = usize::try_from(self.uvarint(field)?).unwrap_or(usize::MAX);
        // Each tagged field is at least a tag byte and a size byte.
        self.check_count(count, 2, field)?;
        for _ in 0..count {
            self.uvarint(field)?;
            let size = usize::try_from(self.uvarint(field)?).unwrap_or(usize::MAX);
            self.take(size, field)?;
        }
        Ok(())
    }

    fn finish(&self, kind: &'static str) -> Result<(), LogFormatError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(LogFormatError::TrailingBytes {
                kind,
                len: self.buf.len(),
            })
        }
    }
}
