//! Records inside a RecordBatch v2, for the broker's own internal topics (`__consumer_offsets`):
//! building an uncompressed batch of key/value records, and reading the records of a stored
//! batch back. Client batches are never taken apart on the produce/fetch path; this is only for
//! data the broker writes and replays itself.

use super::record_batch::{
    compute_crc, read_zigzag, BatchError, BatchHeader, Corruption, ATTR_CONTROL,
    ATTR_TRANSACTIONAL, BATCH_HEADER_LEN,
};

/// One record as the broker writes it: no headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Option<Vec<u8>>,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}

/// Appends `v` as a zigzag varint (the record format's integers).
pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends a varint-length-prefixed byte string (-1 = null).
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// An uncompressed batch (base offset 0, no producer) of `records`, all stamped `timestamp_ms`.
pub fn encode_batch(records: &[KeyValue], timestamp_ms: i64) -> Vec<u8> {
    encode_batch_of(records, timestamp_ms, None)
}

/// As [`encode_batch`], written inside the transaction of `(producer id, epoch)` when given
/// (transactional attribute, no sequence: what a TxnOffsetCommit writes).
pub fn encode_batch_of(
    records: &[KeyValue],
    timestamp_ms: i64,
    transaction: Option<(i64, i16)>,
) -> Vec<u8> {
    let mut body = Vec::new();
    let mut scratch = Vec::new();
    for (i, r) in records.iter().enumerate() {
        put_record(
            &mut body,
            &mut scratch,
            0,
            i as i64,
            r.key.as_deref(),
            r.value.as_deref(),
            &[],
        );
    }
    assemble_batch(
        &body,
        BatchFields {
            attributes: if transaction.is_some() {
                ATTR_TRANSACTIONAL
            } else {
                0
            },
            records: records.len(),
            base_timestamp: timestamp_ms,
            max_timestamp: timestamp_ms,
            producer_id: transaction.map_or(-1, |t| t.0),
            producer_epoch: transaction.map_or(-1, |t| t.1),
            base_sequence: -1,
        },
    )
}

/// Appends one record (length-prefixed) to a batch's records section; `scratch` is reused
/// between calls.
pub fn put_record(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    timestamp_delta: i64,
    offset_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) {
    scratch.clear();
    scratch.push(0); // attributes
    put_varint(scratch, timestamp_delta);
    put_varint(scratch, offset_delta);
    put_bytes(scratch, key);
    put_bytes(scratch, value);
    put_varint(scratch, headers.len() as i64);
    for (k, v) in headers {
        put_bytes(scratch, Some(k.as_bytes()));
        put_bytes(scratch, *v);
    }
    put_varint(out, scratch.len() as i64);
    out.extend_from_slice(scratch);
}

/// The header fields of a batch built here (base offset 0, leader epoch -1).
#[derive(Debug, Clone, Copy)]
pub struct BatchFields {
    /// The codec in the low bits; the records section passed in is already compressed with it.
    pub attributes: i16,
    pub records: usize,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// A whole batch: the 61-byte header for `f`, then `records_section`, CRC filled in.
pub fn assemble_batch(records_section: &[u8], f: BatchFields) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + records_section.len());
    out.extend_from_slice(&0i64.to_be_bytes()); // base offset
    out.extend_from_slice(&((BATCH_HEADER_LEN - 12 + records_section.len()) as i32).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    out.push(2); // magic
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    out.extend_from_slice(&f.attributes.to_be_bytes());
    out.extend_from_slice(&(f.records.saturating_sub(1) as i32).to_be_bytes());
    out.extend_from_slice(&f.base_timestamp.to_be_bytes());
    out.extend_from_slice(&f.max_timestamp.to_be_bytes());
    out.extend_from_slice(&f.producer_id.to_be_bytes());
    out.extend_from_slice(&f.producer_epoch.to_be_bytes());
    out.extend_from_slice(&f.base_sequence.to_be_bytes());
    out.extend_from_slice(&(f.records as i32).to_be_bytes());
    out.extend_from_slice(records_section);
    let crc = compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The end-transaction marker a control batch carries (Kafka's `EndTransactionMarker`), the
/// one record of a batch with the control and transactional attributes set:
/// ```text
/// key:   version i16 (0) | type i16 (0 = ABORT, 1 = COMMIT)
/// value: version i16 (0) | coordinator epoch i32
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTxnMarker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

const CONTROL_ABORT: i16 = 0;
const CONTROL_COMMIT: i16 = 1;

impl EndTxnMarker {
    /// The marker of a control batch; `None` for other control types (Kafka also has leader
    /// change and snapshot records) or a record that cannot be read.
    pub fn of_batch(batch: &[u8]) -> Option<EndTxnMarker> {
        let mut marker = None;
        let mut first = true;
        for_each_record(batch, |r| {
            if !std::mem::take(&mut first) {
                return;
            }
            let (Some(key), Some(value)) = (r.key, r.value) else {
                return;
            };
            if key.len() < 4 || value.len() < 6 {
                return;
            }
            let kind = i16::from_be_bytes([key[2], key[3]]);
            let coordinator_epoch = i32::from_be_bytes([value[2], value[3], value[4], value[5]]);
            marker = match kind {
                CONTROL_ABORT | CONTROL_COMMIT => Some(EndTxnMarker {
                    commit: kind == CONTROL_COMMIT,
                    coordinator_epoch,
                }),
                _ => None,
            };
        })
        .ok()?;
        marker
    }

    /// The control batch (base offset 0, uncompressed, no sequence) that writes this marker for
    /// a producer.
    pub fn encode_batch(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        timestamp_ms: i64,
    ) -> Vec<u8> {
        let kind = if self.commit {
            CONTROL_COMMIT
        } else {
            CONTROL_ABORT
        };
        let key = [0i16.to_be_bytes(), kind.to_be_bytes()].concat();
        let value = [
            &0i16.to_be_bytes()[..],
            &self.coordinator_epoch.to_be_bytes()[..],
        ]
        .concat();
        let mut body = Vec::new();
        put_record(
            &mut body,
            &mut Vec::new(),
            0,
            0,
            Some(&key),
            Some(&value),
            &[],
        );
        assemble_batch(
            &body,
            BatchFields {
                attributes: ATTR_CONTROL | ATTR_TRANSACTIONAL,
                records: 1,
                base_timestamp: timestamp_ms,
                max_timestamp: timestamp_ms,
                producer_id,
                producer_epoch,
                base_sequence: -1,
            },
        )
    }
}

/// A record read back: its offset and (borrowed) key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Calls `f` for every record of one whole uncompressed batch, in order. Compressed batches are
/// refused (the broker never writes them to its internal topics).
pub fn for_each_record<'a>(
    batch: &'a [u8],
    mut f: impl FnMut(RecordRef<'a>),
) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(batch)?;
    let corrupt = |why: String| BatchError::CorruptMessage(Corruption::Records(why));
    if h.compression() != 0 {
        return Err(corrupt("compressed batch in an internal topic".into()));
    }
    let records = batch
        .get(BATCH_HEADER_LEN..h.total_len())
        .ok_or_else(|| corrupt(format!("batch of {} bytes is truncated", h.total_len())))?;
    let mut pos = 0usize;
    for _ in 0..h.records_count {
        let end = record_end(records, &mut pos).map_err(corrupt)?;
        let rec = &records[..end];
        let mut p = pos + 1; // attributes
        let _timestamp_delta = read_zigzag(rec, &mut p).map_err(corrupt)?;
        let offset_delta = read_zigzag(rec, &mut p).map_err(corrupt)?;
        let key = read_bytes(rec, &mut p).map_err(corrupt)?;
        let value = read_bytes(rec, &mut p).map_err(corrupt)?;
        // The delta is any varint on the wire: an offset past i64 is damage, not a record.
        let offset = h
            .base_offset
            .checked_add(offset_delta)
            .ok_or_else(|| corrupt(format!("offset delta {offset_delta} overflows")))?;
        f(RecordRef { offset, key, value });
        pos = end;
    }
    Ok(h)
}

/// Reads a record's length prefix at `*pos` (leaving `*pos` just after it) and returns where
/// the record ends; an end outside `records` is an error.
pub(crate) fn record_end(records: &[u8], pos: &mut usize) -> Result<usize, String> {
    let len = read_zigzag(records, pos)?;
    usize::try_from(len)
        .ok()
        .and_then(|len| pos.checked_add(len))
        .filter(|end| *end <= records.len())
        .ok_or_else(|| format!("record length {len} at {pos}"))
}

pub(crate) fn read_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, String> {
    let len = read_zigzag(buf, pos)?;
    if len < 0 {
        return Ok(None);
    }
    let end = pos
        .checked_add(len as usize)
        .filter(|e| *e <= buf.len())
        .ok_or_else(|| format!("field of {len} bytes at {} overruns the record", *pos))?;
    let out = &buf[*pos..end];
    *pos = end;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::validate;

    #[test]
    fn end_txn_markers_round_trip_as_valid_control_batches() {
        for commit in [false, true] {
            let m = EndTxnMarker {
                commit,
                coordinator_epoch: 7,
            };
            let batch = m.encode_batch(42, 3, 1_000);
            let h = validate(&batch).expect("a valid batch");
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!(EndTxnMarker::of_batch(&batch), Some(m));
        }
        // A truncated batch is no marker.
        let marker = EndTxnMarker {
            commit: true,
            coordinator_epoch: 0,
        }
        .encode_batch(1, 0, 0);
        assert_eq!(EndTxnMarker::of_batch(&marker[..marker.len() - 1]), None);
    }

    #[test]
    fn encoded_batches_validate_and_read_back() {
        let recs = vec![
            KeyValue {
                key: Some(b"k1".to_vec()),
                value: Some(vec![7; 300]),
            },
            KeyValue {
                key: Some(b"k2".to_vec()),
                value: None,
            },
            KeyValue {
                key: None,
                value: Some(b"v".to_vec()),
            },
        ];
        let mut batch = encode_batch(&recs, 1_700_000_000_123);
        let h = validate(&batch).expect("valid batch");
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset(), 2);
        crate::protocol::record_batch::set_base_offset(&mut batch, 40).expect("header");
        let mut got = Vec::new();
        for_each_record(&batch, |r| {
            got.push((
                r.offset,
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
            ))
        })
        .expect("readable");
        let want: Vec<_> = recs
            .iter()
            .enumerate()
            .map(|(i, r)| (40 + i as i64, r.key.clone(), r.value.clone()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn agrees_with_the_oracle_decoder() {
        use kafka_protocol::records::RecordBatchDecoder;
        let recs: Vec<KeyValue> = (0..5)
            .map(|i| KeyValue {
                key: Some(format!("key-{i}").into_bytes()),
                value: (i % 2 == 0).then(|| format!("value-{i}").into_bytes()),
            })
            .collect();
        let batch = encode_batch(&recs, 1_700_000_000_000);
        let mut buf = bytes::Bytes::from(batch);
        let decoded = RecordBatchDecoder::decode(&mut buf).expect("oracle decodes it");
        assert_eq!(decoded.records.len(), 5);
        for (i, (r, want)) in decoded.records.iter().zip(&recs).enumerate() {
            assert_eq!(r.offset, i as i64);
            assert_eq!(r.timestamp, 1_700_000_000_000);
            assert_eq!(r.key.as_deref(), want.key.as_deref());
            assert_eq!(r.value.as_deref(), want.value.as_deref());
        }
    }

    /// A record whose offset delta takes it past i64::MAX is damage (found by fuzzing the
    /// end-transaction marker read in recovery; it wrapped, or panicked with overflow checks).
    #[test]
    fn offset_overflow_is_an_error() {
        let recs = [
            KeyValue {
                key: Some(b"a".to_vec()),
                value: None,
            },
            KeyValue {
                key: Some(b"b".to_vec()),
                value: None,
            },
        ];
        let mut batch = encode_batch(&recs, 0);
        crate::protocol::record_batch::set_base_offset(&mut batch, i64::MAX).expect("header");
        let mut seen = Vec::new();
        let r = for_each_record(&batch, |r| seen.push(r.offset));
        assert!(matches!(
            r,
            Err(BatchError::CorruptMessage(Corruption::Records(_)))
        ));
        assert_eq!(
            seen,
            vec![i64::MAX],
            "the record before the overflow is still read"
        );
    }

    #[test]
    fn truncated_or_lying_records_are_errors_not_panics() {
        let batch = encode_batch(
            &[KeyValue {
                key: Some(b"k".to_vec()),
                value: Some(b"value".to_vec()),
            }],
            0,
        );
        for cut in BATCH_HEADER_LEN..batch.len() {
            let mut b = batch[..cut].to_vec();
            // Keep the length field consistent with the cut so parsing reaches the records.
            b[8..12].copy_from_slice(&((cut - 12) as i32).to_be_bytes());
            assert!(for_each_record(&b, |_| {}).is_err(), "cut at {cut}");
        }
    }
}
