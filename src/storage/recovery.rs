//! Crash recovery of segment files: find where the valid prefix of a `.log` file ends.
//!
//! The core is [`scan`], a pure function over a byte buffer: it walks batch by batch from the
//! start and stops at the first batch that is incomplete or invalid — bad framing, magic or
//! CRC-32C, a zeroed header (preallocated or padded space), offsets not contiguous with the
//! previous batch (baseOffset is outside the CRC), or a leader epoch going backwards. Everything
//! before that point is a sequence of whole, checked batches; everything after is discarded by
//! the caller (the file is truncated there, which also zeroes the rest of the last page).
//!
//! [`scan_file`] drives `scan` over a file in bounded chunks (memory stays O(chunk) for a 1 GiB
//! segment) and reports each valid batch to a callback, which rebuilds the indexes and the
//! producer state. Runs on the partition's shard when the log is opened.

use crate::io::disk::SegmentFile;
use crate::io::IoFailure;
use crate::protocol::record_batch::{
    self, BatchError, BatchHeader, LOG_OVERHEAD, MIN_BATCH_LENGTH,
};
use crate::protocol::records::EndTxnMarker;

/// Bytes read per step when scanning a file.
pub const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// One valid batch found by a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedBatch {
    /// Byte position of the batch (relative to the scanned buffer, or to the file in
    /// [`scan_file`]).
    pub position: u64,
    pub header: BatchHeader,
    /// The end-transaction marker, for a control batch that carries one.
    pub marker: Option<EndTxnMarker>,
}

impl ScannedBatch {
    pub fn len(&self) -> u64 {
        self.header.total_len() as u64
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidBatch {
    /// The header is all zeros (padding or preallocated space): the clean end of a log.
    Zeros,
    Batch(BatchError),
    NonContiguous {
        expected: i64,
        found: i64,
    },
    LeaderEpochRegressed {
        previous: i32,
        found: i32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStop {
    /// The buffer ended exactly at a batch boundary.
    End,
    /// A batch starts at `valid_len` but needs `needed` bytes from there (more than remain).
    Incomplete {
        needed: usize,
    },
    Invalid(InvalidBatch),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Length of the valid prefix: whole, checked batches.
    pub valid_len: usize,
    /// Offset the next batch must start at.
    pub next_offset: i64,
    /// Leader epoch of the last valid batch (or the input one).
    pub leader_epoch: i32,
    pub stop: ScanStop,
}

/// Scans `buf` for consecutive valid batches, the first of which must have base offset
/// `expected_offset` and a leader epoch `>= min_leader_epoch`. Calls `on_batch` for each.
pub fn scan_with(
    buf: &[u8],
    expected_offset: i64,
    min_leader_epoch: i32,
    mut on_batch: impl FnMut(&ScannedBatch),
) -> ScanOutcome {
    let mut pos = 0usize;
    let mut next = expected_offset;
    let mut epoch = min_leader_epoch;
    let stop = loop {
        let rest = &buf[pos..];
        if rest.is_empty() {
            break ScanStop::End;
        }
        if rest.len() < LOG_OVERHEAD {
            // Never call a short rest "zeros" here: a buffer that ends a few bytes into a batch
            // header sees only the high bytes of its base offset, which are zero for any offset
            // below 2^40. Only the caller knows whether the file ends here too.
            break ScanStop::Incomplete {
                needed: LOG_OVERHEAD,
            };
        }
        if rest[..LOG_OVERHEAD].iter().all(|b| *b == 0) {
            break ScanStop::Invalid(InvalidBatch::Zeros);
        }
        let length = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if length < MIN_BATCH_LENGTH {
            break ScanStop::Invalid(InvalidBatch::Batch(BatchError::CorruptMessage(
                record_batch::Corruption::LengthOutOfRange { length },
            )));
        }
        let total = LOG_OVERHEAD + length as usize;
        if rest.len() < total {
            // Check what we can already: a bad magic or base offset needs no more bytes.
            if rest.len() > record_batch::MAGIC_AT
                && rest[record_batch::MAGIC_AT] as i8 != record_batch::MAGIC_V2
            {
                break ScanStop::Invalid(InvalidBatch::Batch(BatchError::UnsupportedMagic(
                    rest[record_batch::MAGIC_AT] as i8,
                )));
            }
            break ScanStop::Incomplete { needed: total };
        }
        let header = match record_batch::validate_stored(&rest[..total]) {
            Ok(h) => h,
            Err(e) => break ScanStop::Invalid(InvalidBatch::Batch(e)),
        };
        if header.base_offset != next {
            break ScanStop::Invalid(InvalidBatch::NonContiguous {
                expected: next,
                found: header.base_offset,
            });
        }
        if header.partition_leader_epoch < epoch {
            break ScanStop::Invalid(InvalidBatch::LeaderEpochRegressed {
                previous: epoch,
                found: header.partition_leader_epoch,
            });
        }
        on_batch(&ScannedBatch {
            position: pos as u64,
            header,
            marker: header
                .is_control()
                .then(|| EndTxnMarker::of_batch(&rest[..total]))
                .flatten(),
        });
        epoch = header.partition_leader_epoch;
        next = header.last_offset() + 1;
        pos += total;
    };
    ScanOutcome {
        valid_len: pos,
        next_offset: next,
        leader_epoch: epoch,
        stop,
    }
}

/// [`scan_with`] collecting the batches (tests, small buffers).
pub fn scan(
    buf: &[u8],
    expected_offset: i64,
    min_leader_epoch: i32,
) -> (ScanOutcome, Vec<ScannedBatch>) {
    let mut v = Vec::new();
    let out = scan_with(buf, expected_offset, min_leader_epoch, |b| v.push(*b));
    (out, v)
}

/// Result of scanning a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileScan {
    /// End of the valid prefix (the new logical size).
    pub valid_end: u64,
    pub next_offset: i64,
    pub leader_epoch: i32,
    /// Why the scan stopped before the end of the file, if it did.
    pub stop: Option<ScanStop>,
}

/// Scans `file` (of `file_size` bytes) from position 0 in bounded chunks.
pub async fn scan_file<F: SegmentFile>(
    file: &F,
    file_size: u64,
    expected_offset: i64,
    on_batch: impl FnMut(&ScannedBatch),
) -> Result<FileScan, IoFailure> {
    scan_file_in_chunks(file, file_size, expected_offset, SCAN_CHUNK_BYTES, on_batch).await
}

/// [`scan_file`] reading `chunk_bytes` at a time (tests move the chunk boundaries around).
async fn scan_file_in_chunks<F: SegmentFile>(
    file: &F,
    file_size: u64,
    expected_offset: i64,
    chunk_bytes: usize,
    mut on_batch: impl FnMut(&ScannedBatch),
) -> Result<FileScan, IoFailure> {
    let mut pos = 0u64;
    let mut next = expected_offset;
    let mut epoch = i32::MIN;
    let mut need = 0usize;
    loop {
        if pos >= file_size {
            return Ok(FileScan {
                valid_end: pos,
                next_offset: next,
                leader_epoch: epoch,
                stop: None,
            });
        }
        let remaining = file_size - pos;
        let want = (chunk_bytes.max(need) as u64).min(remaining) as usize;
        let buf = file.read(pos, want).await?;
        let out = scan_with(&buf, next, epoch, |b| {
            on_batch(&ScannedBatch {
                position: pos + b.position,
                ..*b
            });
        });
        pos += out.valid_len as u64;
        next = out.next_offset;
        epoch = out.leader_epoch;
        let short_read = buf.len() < want;
        match out.stop {
            ScanStop::End if !short_read => need = 0,
            ScanStop::Incomplete { needed }
                if !short_read && (needed as u64) <= file_size - pos =>
            {
                need = needed
            }
            stop => {
                // Fewer bytes than a batch header left in the file, all zero: padding of the
                // last page, the normal end of a log (as a zeroed header is).
                let rest = &buf[out.valid_len..];
                let zero_tail =
                    pos + rest.len() as u64 == file_size && rest.iter().all(|b| *b == 0);
                let stop = match stop {
                    _ if pos >= file_size => None,
                    ScanStop::Incomplete { .. } if zero_tail => {
                        Some(ScanStop::Invalid(InvalidBatch::Zeros))
                    }
                    stop => Some(stop),
                };
                return Ok(FileScan {
                    valid_end: pos,
                    next_offset: next,
                    leader_epoch: epoch,
                    stop,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::dma::DirectFile;
    use crate::protocol::record_batch::testing::BatchBuilder;
    use proptest::prelude::*;

    /// A log image of consecutive batches starting at `base`, plus each batch's (pos, len).
    pub(crate) fn log_image(sizes: &[usize], base: i64) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut out = Vec::new();
        let mut spans = Vec::new();
        let mut off = base;
        for (i, n) in sizes.iter().enumerate() {
            let mut b = BatchBuilder::simple(*n, i as u64);
            b.base_offset = off;
            b.leader_epoch = 1;
            let bytes = b.build();
            spans.push((out.len(), bytes.len()));
            out.extend_from_slice(&bytes);
            off += *n as i64;
        }
        (out, spans)
    }

    #[test]
    fn clean_log_and_padding() {
        let (mut img, spans) = log_image(&[3, 1, 7], 100);
        let (o, b) = scan(&img, 100, i32::MIN);
        assert_eq!(
            (o.valid_len, o.next_offset, o.stop.clone()),
            (img.len(), 111, ScanStop::End)
        );
        assert_eq!(b.len(), 3);
        img.resize(img.len() + 4096, 0);
        let (o, _) = scan(&img, 100, i32::MIN);
        assert_eq!(o.valid_len, spans[2].0 + spans[2].1);
        assert_eq!(o.stop, ScanStop::Invalid(InvalidBatch::Zeros));
        // wrong starting offset: nothing valid
        let (o, _) = scan(&img, 99, i32::MIN);
        assert_eq!(o.valid_len, 0);
    }

    /// Regression (a kill -9 test lost 70k acknowledged records): when a read chunk ended one
    /// to five bytes into a batch header, those bytes — the high bytes of the base offset, zero
    /// below 2^40 — were taken for padding and the scan stopped there, so recovery silently cut
    /// the log. Every chunk boundary position must find every batch.
    #[test]
    fn chunk_boundaries_inside_a_header_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000070000.log");
        let (mut img, spans) = log_image(&[5, 1, 9, 2, 3, 4], 70_000);
        let data_len = img.len() as u64;
        img.resize(img.len().next_multiple_of(4096), 0);
        std::fs::write(&path, &img).unwrap();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let file = DirectFile::open(&path, false).await.unwrap();
                let size = file.size().await.unwrap();
                // Chunks ending at every byte of the first few batches, headers included.
                for chunk in 1..=spans[3].0 + 20 {
                    let mut found = 0;
                    let scan = scan_file_in_chunks(&file, size, 70_000, chunk, |_| found += 1)
                        .await
                        .unwrap();
                    assert_eq!(
                        (scan.valid_end, found, scan.next_offset),
                        (data_len, spans.len(), 70_024),
                        "chunk of {chunk} bytes"
                    );
                    assert_eq!(scan.stop, Some(ScanStop::Invalid(InvalidBatch::Zeros)));
                }
                // A tail shorter than a header: zeros are padding, anything else is torn.
                for (tail, zeros) in [(&[0u8; 5][..], true), (&[0, 0, 0, 0, 7][..], false)] {
                    let mut short = img[..data_len as usize].to_vec();
                    short.extend_from_slice(tail);
                    let p2 = path.with_extension("short");
                    std::fs::write(&p2, &short).unwrap();
                    let f2 = DirectFile::open(&p2, false).await.unwrap();
                    let scan = scan_file(&f2, short.len() as u64, 70_000, |_| {})
                        .await
                        .unwrap();
                    assert_eq!(scan.valid_end, data_len);
                    let is_zeros = scan.stop == Some(ScanStop::Invalid(InvalidBatch::Zeros));
                    assert_eq!(is_zeros, zeros, "tail {tail:?}: {:?}", scan.stop);
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]

        /// Damage anywhere (truncation, flipped bit, garbage tail) never loses a batch that lies
        /// wholly before the damage, and never accepts a damaged batch.
        #[test]
        fn scan_keeps_exactly_the_undamaged_prefix(
            sizes in prop::collection::vec(1usize..12, 1..12),
            at in any::<prop::sample::Index>(),
            kind in 0u8..3,
            bit in 0u8..8,
            garbage in prop::collection::vec(any::<u8>(), 1..200),
        ) {
            let (img, spans) = log_image(&sizes, 1000);
            let damage = at.index(img.len());
            let mut bad = img.clone();
            match kind {
                0 => bad.truncate(damage),
                1 => {
                    // partitionLeaderEpoch is outside Kafka's CRC and cannot be verified; an
                    // epoch flip that keeps it non-decreasing is undetectable by design.
                    let in_epoch = spans.iter().any(|(p, _)| damage >= p + 12 && damage < p + 16);
                    prop_assume!(!in_epoch);
                    bad[damage] ^= 1 << bit;
                }
                _ => { bad.truncate(damage); bad.extend_from_slice(&garbage); }
            }
            let (o, batches) = scan(&bad, 1000, i32::MIN);
            let intact = spans.iter().filter(|(p, l)| p + l <= damage).count();
            prop_assert!(batches.len() >= intact);
            prop_assert!(o.valid_len <= bad.len());
            for (b, (p, l)) in batches.iter().zip(&spans) {
                prop_assert_eq!(b.position as usize, *p);
                prop_assert_eq!(&bad[*p..p + l], &img[*p..p + l]);
            }
            // Only the garbage case can add batches (with astronomically low probability); never
            // more batches than were written otherwise.
            if kind != 2 { prop_assert!(batches.len() <= spans.len()); }
        }
    }
}
