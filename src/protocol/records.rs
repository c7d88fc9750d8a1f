//! Records inside a RecordBatch v2, for the broker's own internal topics (`__consumer_offsets`):
//! building an uncompressed batch of key/value records, and reading the records of a stored
//! batch back. Client batches are never taken apart on the produce/fetch path; this is only for
//! data the broker writes and replays itself.

use super::record_batch::{
    compute_crc, read_zigzag, BatchError, BatchHeader, Corruption, BATCH_HEADER_LEN,
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
    let mut body = Vec::new();
    let mut rec = Vec::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(0); // attributes
        put_varint(&mut rec, 0); // timestamp delta
        put_varint(&mut rec, i as i64); // offset delta
        put_bytes(&mut rec, r.key.as_deref());
        put_bytes(&mut rec, r.value.as_deref());
        put_varint(&mut rec, 0); // headers
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    out.extend_from_slice(&0i64.to_be_bytes()); // base offset
    out.extend_from_slice(&((BATCH_HEADER_LEN - 12 + body.len()) as i32).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    out.push(2); // magic
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    out.extend_from_slice(&0i16.to_be_bytes()); // attributes
    out.extend_from_slice(&(records.len().saturating_sub(1) as i32).to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    out.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    out.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    out.extend_from_slice(&(records.len() as i32).to_be_bytes());
    out.extend_from_slice(&body);
    let crc = compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
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
        let len = read_zigzag(records, &mut pos).map_err(corrupt)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| pos.checked_add(len))
            .filter(|end| *end <= records.len())
            .ok_or_else(|| corrupt(format!("record length {len} at {pos}")))?;
        let rec = &records[..end];
        let mut p = pos + 1; // attributes
        let _timestamp_delta = read_zigzag(rec, &mut p).map_err(corrupt)?;
        let offset_delta = read_zigzag(rec, &mut p).map_err(corrupt)?;
        let key = read_bytes(rec, &mut p).map_err(corrupt)?;
        let value = read_bytes(rec, &mut p).map_err(corrupt)?;
        f(RecordRef {
            offset: h.base_offset + offset_delta,
            key,
            value,
        });
        pos = end;
    }
    Ok(h)
}

fn read_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, String> {
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
