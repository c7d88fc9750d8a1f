//! Record-set codecs of RecordBatch v2: gzip (1), snappy (2), lz4 (3), zstd (4).
//!
//! Never on the produce or fetch path: batches are stored and served compressed as producers
//! sent them. Used where Kafka semantics need the records themselves (record-level timestamp
//! lookup today; compaction and broker-side recompression later).
//!
//! Invariant: decompression is bounded. Every decoder stops at `limit` output bytes and reports
//! `TooLarge` past it, so a small hostile batch cannot make the broker allocate gigabytes.
//!
//! Formats, as Kafka clients write them:
//! - gzip: a gzip stream (members may be concatenated).
//! - snappy: either a raw snappy block (librdkafka) or the xerial framing the Java client writes:
//!   `82 'SNAPPY' 00 | version u32 | compatible version u32 | (length u32 BE | raw block)*`.
//! - lz4: the LZ4 frame format.
//! - zstd: a zstd frame (content size may be absent).

use std::io::{Read, Write};

pub const CODEC_NONE: u8 = 0;
pub const CODEC_GZIP: u8 = 1;
pub const CODEC_SNAPPY: u8 = 2;
pub const CODEC_LZ4: u8 = 3;
pub const CODEC_ZSTD: u8 = 4;

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    #[error("decompressed records exceed {limit} bytes")]
    TooLarge { limit: usize },
    #[error("corrupt {codec} data: {reason}")]
    Corrupt { codec: &'static str, reason: String },
}

fn corrupt(codec: &'static str, e: impl std::fmt::Display) -> CompressionError {
    CompressionError::Corrupt {
        codec,
        reason: e.to_string(),
    }
}

/// Reads all of `reader` into a vector, failing once more than `limit` bytes come out.
fn read_bounded(
    mut reader: impl Read,
    codec: &'static str,
    limit: usize,
) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::new();
    // One byte past the limit tells "exactly limit" from "more than limit".
    let taken = (&mut reader)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(codec, e))?;
    if taken > limit {
        return Err(CompressionError::TooLarge { limit });
    }
    Ok(out)
}

/// Decompresses a batch's records section written with `codec`, producing at most `limit` bytes.
pub fn decompress(codec: u8, data: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
    match codec {
        CODEC_NONE => {
            if data.len() > limit {
                return Err(CompressionError::TooLarge { limit });
            }
            Ok(data.to_vec())
        }
        CODEC_GZIP => read_bounded(flate2::read::MultiGzDecoder::new(data), "gzip", limit),
        CODEC_SNAPPY => decompress_snappy(data, limit),
        CODEC_LZ4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), "lz4", limit),
        CODEC_ZSTD => {
            let decoder =
                zstd::stream::read::Decoder::with_buffer(data).map_err(|e| corrupt("zstd", e))?;
            read_bounded(decoder, "zstd", limit)
        }
        other => Err(CompressionError::UnknownCodec(other)),
    }
}

fn decompress_snappy(data: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
    let raw_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), CompressionError> {
        let len = snap::raw::decompress_len(block).map_err(|e| corrupt("snappy", e))?;
        if out.len() + len > limit {
            return Err(CompressionError::TooLarge { limit });
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|e| corrupt("snappy", e))?;
        Ok(())
    };
    let mut out = Vec::new();
    if !data.starts_with(&XERIAL_MAGIC) {
        raw_block(data, &mut out)?;
        return Ok(out);
    }
    let mut rest = data
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| corrupt("snappy", "truncated xerial header"))?;
    while !rest.is_empty() {
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("snappy", "truncated xerial block length"))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let block = rest
            .get(4..4 + len)
            .ok_or_else(|| corrupt("snappy", "truncated xerial block"))?;
        raw_block(block, &mut out)?;
        rest = &rest[4 + len..];
    }
    Ok(out)
}

/// Compresses a records section with `codec` (the formats above; snappy as a raw block, as
/// librdkafka writes it).
pub fn compress(codec: u8, data: &[u8]) -> Result<Vec<u8>, CompressionError> {
    match codec {
        CODEC_NONE => Ok(data.to_vec()),
        CODEC_GZIP => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(data).map_err(|e| corrupt("gzip", e))?;
            enc.finish().map_err(|e| corrupt("gzip", e))
        }
        CODEC_SNAPPY => snap::raw::Encoder::new()
            .compress_vec(data)
            .map_err(|e| corrupt("snappy", e)),
        CODEC_LZ4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(data).map_err(|e| corrupt("lz4", e))?;
            enc.finish().map_err(|e| corrupt("lz4", e))
        }
        CODEC_ZSTD => zstd::bulk::compress(data, 3).map_err(|e| corrupt("zstd", e)),
        other => Err(CompressionError::UnknownCodec(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..20_000u32)
            .flat_map(|i| format!("record-{i}-{}", i % 7).into_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample();
        for codec in [CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD] {
            let packed = compress(codec, &data).unwrap();
            if codec != CODEC_NONE {
                assert!(
                    packed.len() < data.len() / 2,
                    "codec {codec} did not compress"
                );
            }
            assert_eq!(
                decompress(codec, &packed, data.len()).unwrap(),
                data,
                "codec {codec}"
            );
        }
    }

    #[test]
    fn output_is_bounded() {
        let data = vec![0u8; 1 << 20];
        for codec in [CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD] {
            let packed = compress(codec, &data).unwrap();
            match decompress(codec, &packed, 1000) {
                Err(CompressionError::TooLarge { limit: 1000 }) => {}
                other => panic!("codec {codec}: expected TooLarge, got {other:?}"),
            }
        }
    }

    #[test]
    fn xerial_framed_snappy_is_read() {
        let data = sample();
        let (a, b) = data.split_at(data.len() / 3);
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1u32.to_be_bytes());
        framed.extend_from_slice(&1u32.to_be_bytes());
        for part in [a, b] {
            let block = snap::raw::Encoder::new().compress_vec(part).unwrap();
            framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        assert_eq!(decompress(CODEC_SNAPPY, &framed, data.len()).unwrap(), data);
        framed.truncate(framed.len() - 3);
        assert!(decompress(CODEC_SNAPPY, &framed, data.len()).is_err());
    }

    #[test]
    fn garbage_and_unknown_codecs_are_errors_not_panics() {
        let junk: Vec<u8> = (0..500u32).map(|i| (i * 31 % 251) as u8).collect();
        for codec in [CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD] {
            assert!(decompress(codec, &junk, 1 << 20).is_err(), "codec {codec}");
            for cut in [0, 1, 7, 100] {
                let _ = decompress(codec, &junk[..cut], 1 << 20);
            }
        }
        assert!(matches!(
            decompress(5, &junk, 10),
            Err(CompressionError::UnknownCodec(5))
        ));
    }
}
