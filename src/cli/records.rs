//! Records as the command line produces and prints them: building a RecordBatch v2 (keys,
//! values, headers, optional compression, idempotent producer fields) and reading the records
//! of fetched batches back, compressed or not.

use crate::protocol::compression::{compress, decompress, CODEC_NONE};
use crate::protocol::record_batch::{compute_crc, read_zigzag, BatchHeader, BATCH_HEADER_LEN};
use crate::protocol::records::{self, assemble_batch, put_record, BatchFields};

use super::CliError;

/// One record to produce or one consumed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Milliseconds since the epoch (CreateTime when produced).
    pub timestamp: i64,
}

/// A consumed record with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub log_append_time: bool,
    pub record: Record,
}

/// The producer fields of a batch (idempotent producers; -1 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
}

impl ProducerFields {
    pub const NONE: ProducerFields = ProducerFields {
        producer_id: -1,
        epoch: -1,
        base_sequence: -1,
    };
}

/// Bytes a record adds to a batch, about (for batch.size accounting).
pub fn approx_size(r: &Record) -> usize {
    16 + r.key.as_ref().map_or(0, Vec::len)
        + r.value.as_ref().map_or(0, Vec::len)
        + r.headers
            .iter()
            .map(|(k, v)| 4 + k.len() + v.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
}

/// A batch of `records` (not empty), compressed with `codec`, base offset 0.
pub fn encode_batch(
    records: &[Record],
    codec: u8,
    producer: ProducerFields,
) -> Result<Vec<u8>, CliError> {
    let base_ts = records.first().map_or(0, |r| r.timestamp);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(base_ts);
    let mut body = Vec::new();
    let mut scratch = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        put_record(
            &mut body,
            &mut scratch,
            r.timestamp - base_ts,
            i as i64,
            r.key.as_deref(),
            r.value.as_deref(),
            &headers,
        );
    }
    let body = if codec == CODEC_NONE {
        body
    } else {
        compress(codec, &body).map_err(|e| CliError::Failed(format!("compressing a batch: {e}")))?
    };
    Ok(assemble_batch(
        &body,
        BatchFields {
            attributes: codec as i16,
            records: records.len(),
            base_timestamp: base_ts,
            max_timestamp: max_ts,
            producer_id: producer.producer_id,
            producer_epoch: producer.epoch,
            base_sequence: producer.base_sequence,
        },
    ))
}

/// Largest records section accepted after decompression.
const DECOMPRESSED_MAX: usize = 256 << 20;

/// The records of a fetched record set at or after `from` (a fetch may return a batch that
/// starts before the offset asked for), skipping control batches. A partial batch at the end
/// (the broker cuts at max_bytes) is ignored. Returns the records and the offset after the
/// last batch read whole (where the next fetch starts), if any batch was.
pub fn decode_record_set(
    partition: i32,
    mut set: &[u8],
    from: i64,
) -> Result<(Vec<Consumed>, Option<i64>), CliError> {
    let bad = |why: String| CliError::Protocol(format!("fetched batch: {why}"));
    let mut out = Vec::new();
    let mut next = None;
    while set.len() >= BATCH_HEADER_LEN {
        let h = BatchHeader::parse(set).map_err(|e| bad(e.to_string()))?;
        let len = h.total_len();
        if len < BATCH_HEADER_LEN {
            return Err(bad(format!("batch length {len}")));
        }
        if set.len() < len {
            break;
        }
        let batch = &set[..len];
        set = &set[len..];
        if compute_crc(batch) != h.crc {
            return Err(bad(format!("CRC mismatch at offset {}", h.base_offset)));
        }
        next = Some(h.last_offset() + 1);
        if h.is_control() {
            continue;
        }
        let section = &batch[BATCH_HEADER_LEN..];
        let records = if h.compression() == CODEC_NONE {
            section.to_vec()
        } else {
            decompress(h.compression(), section, DECOMPRESSED_MAX)
                .map_err(|e| bad(format!("decompressing: {e}")))?
        };
        let mut pos = 0usize;
        for _ in 0..h.records_count {
            let (rec, offset) = read_record(&records, &mut pos, &h).map_err(bad)?;
            if offset >= from {
                out.push(Consumed {
                    partition,
                    offset,
                    log_append_time: h.is_log_append_time(),
                    record: rec,
                });
            }
        }
    }
    Ok((out, next))
}

fn read_bytes(buf: &[u8], pos: &mut usize) -> Result<Option<Vec<u8>>, String> {
    Ok(records::read_bytes(buf, pos)?.map(<[u8]>::to_vec))
}

fn read_record(buf: &[u8], pos: &mut usize, h: &BatchHeader) -> Result<(Record, i64), String> {
    let len = read_zigzag(buf, pos)?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| pos.checked_add(l))
        .filter(|e| *e <= buf.len())
        .ok_or_else(|| format!("record length {len}"))?;
    let rec = &buf[..end];
    let mut p = *pos + 1; // attributes
    let ts_delta = read_zigzag(rec, &mut p)?;
    let offset_delta = read_zigzag(rec, &mut p)?;
    let key = read_bytes(rec, &mut p)?;
    let value = read_bytes(rec, &mut p)?;
    let n = read_zigzag(rec, &mut p)?;
    let mut headers = Vec::new();
    for _ in 0..n.max(0) {
        let k = read_bytes(rec, &mut p)?.unwrap_or_default();
        let v = read_bytes(rec, &mut p)?;
        headers.push((String::from_utf8_lossy(&k).into_owned(), v));
    }
    *pos = end;
    let timestamp = if h.is_log_append_time() {
        h.max_timestamp
    } else {
        h.base_timestamp.saturating_add(ts_delta)
    };
    Ok((
        Record {
            key,
            value,
            headers,
            timestamp,
        },
        h.base_offset + offset_delta,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::compression::{CODEC_GZIP, CODEC_LZ4, CODEC_SNAPPY, CODEC_ZSTD};
    use crate::protocol::record_batch::validate;

    fn sample() -> Vec<Record> {
        vec![
            Record {
                key: Some(b"k1".to_vec()),
                value: Some(b"v1".to_vec()),
                headers: vec![("h".into(), Some(b"x".to_vec())), ("n".into(), None)],
                timestamp: 1_700_000_000_000,
            },
            Record {
                key: None,
                value: None,
                headers: vec![],
                timestamp: 1_700_000_000_005,
            },
        ]
    }

    #[test]
    fn batches_round_trip_with_every_codec() {
        for codec in [CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD] {
            let mut b = encode_batch(&sample(), codec, ProducerFields::NONE).unwrap();
            validate(&b).unwrap_or_else(|e| panic!("codec {codec}: {e}"));
            // As a broker would store it: base offset 40.
            b[..8].copy_from_slice(&40i64.to_be_bytes());
            let mut set = b.clone();
            // Followed by half a batch (cut at max_bytes).
            set.extend_from_slice(&b[..30]);
            let (got, next) = decode_record_set(3, &set, 41).unwrap();
            assert_eq!(next, Some(42));
            assert_eq!(got.len(), 1, "offset 40 is before the one asked for");
            assert_eq!(got[0].offset, 41);
            assert_eq!(got[0].partition, 3);
            assert_eq!(got[0].record, sample()[1]);
            let (all, _) = decode_record_set(3, &b, 0).unwrap();
            assert_eq!(
                all.iter().map(|c| c.record.clone()).collect::<Vec<_>>(),
                sample()
            );
        }
    }

    #[test]
    fn corrupt_batches_are_errors_not_panics() {
        let mut b = encode_batch(&sample(), CODEC_NONE, ProducerFields::NONE).unwrap();
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(decode_record_set(0, &b, 0).is_err());
        // Every truncation: either nothing (partial batch) or an error, never a panic.
        let good = encode_batch(&sample(), CODEC_LZ4, ProducerFields::NONE).unwrap();
        for n in 0..good.len() {
            let (recs, _) = decode_record_set(0, &good[..n], 0).unwrap();
            assert!(recs.is_empty());
        }
    }
}
