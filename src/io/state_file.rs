//! Small persisted state (metadata, shard table, checkpoints, producer snapshots): written whole,
//! atomically, with a checksum.
//!
//! `write_state` writes `<path>.tmp`, fsyncs it, renames it over `<path>` and fsyncs the
//! directory, so after a crash `<path>` holds the old or the new version, never a torn one.
//! `read_state` verifies magic, version, length and checksum; damage is an error naming the path.
//!
//! ```text
//! offset size field
//!      0    4 magic  "ODST"
//!      4    2 version u16 LE (= 1)
//!      6    2 reserved (0)
//!      8    8 payload length u64 LE
//!     16    8 xxh3-64 of the payload, u64 LE
//!     24    . payload (callers serialize it, e.g. with rkyv)
//! ```
//!
//! Plain blocking `std::fs` is used on purpose: these files are small and written rarely (topic
//! creation, segment roll, shutdown), and a buffered write + fsync is simpler and just as safe as
//! an O_DIRECT path that would have to pad and then truncate. Callers on a shard should keep them
//! off the hot path. Runs on whichever shard owns the state.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{sync_dir, IoFailure};

pub const STATE_MAGIC: [u8; 4] = *b"ODST";
pub const STATE_VERSION: u16 = 1;
pub const STATE_HEADER_BYTES: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error(transparent)]
    Io(#[from] IoFailure),
    #[error("state file {} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: &'static str },
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".tmp");
    PathBuf::from(p)
}

/// Encodes header + payload (exposed for tests and for callers that embed state elsewhere).
pub fn encode_state(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(STATE_HEADER_BYTES + payload.len());
    out.extend_from_slice(&STATE_MAGIC);
    out.extend_from_slice(&STATE_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Verifies and strips the header. `path` only names the file in errors.
pub fn decode_state(path: &Path, data: &[u8]) -> Result<Vec<u8>, StateFileError> {
    let corrupt = |reason| StateFileError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if data.len() < STATE_HEADER_BYTES {
        return Err(corrupt("shorter than its header"));
    }
    if data[0..4] != STATE_MAGIC {
        return Err(corrupt("bad magic"));
    }
    if u16::from_le_bytes([data[4], data[5]]) != STATE_VERSION {
        return Err(corrupt("unknown version"));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&data[8..16]);
    let len = u64::from_le_bytes(n);
    if len != (data.len() - STATE_HEADER_BYTES) as u64 {
        return Err(corrupt("length does not match file size"));
    }
    n.copy_from_slice(&data[16..24]);
    let payload = &data[STATE_HEADER_BYTES..];
    if u64::from_le_bytes(n) != xxhash_rust::xxh3::xxh3_64(payload) {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(payload.to_vec())
}

/// Atomically replaces `path` with `payload` (see module docs for the crash argument).
pub fn write_state(path: &Path, payload: &[u8]) -> Result<(), StateFileError> {
    let tmp = tmp_path(path);
    let data = encode_state(payload);
    let mut f = std::fs::File::create(&tmp).map_err(|e| IoFailure::new("create", &tmp, 0, e))?;
    f.write_all(&data)
        .map_err(|e| IoFailure::new("write", &tmp, 0, e))?;
    f.sync_all()
        .map_err(|e| IoFailure::new("fsync", &tmp, 0, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| IoFailure::new("rename", &tmp, 0, e))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    sync_dir(dir)?;
    Ok(())
}

/// Reads and verifies `path`; `Ok(None)` if it does not exist.
pub fn read_state(path: &Path) -> Result<Option<Vec<u8>>, StateFileError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(IoFailure::new("read", path, 0, e).into()),
    };
    decode_state(path, &data).map(Some)
}

/// Removes `path` (and a leftover `.tmp`), fsyncing the directory. Missing files are fine.
pub fn remove_state(path: &Path) -> Result<(), StateFileError> {
    for p in [path.to_path_buf(), tmp_path(path)] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(IoFailure::new("remove", &p, 0, e).into()),
        }
    }
    if let Some(d) = path.parent() {
        if !d.as_os_str().is_empty() {
            sync_dir(d)?;
        }
    }
    Ok(())
}

/// Copies a state payload into a buffer aligned for rkyv (payloads come off disk at arbitrary
/// alignment); rkyv then validates the archive before anything is read from it.
pub fn rkyv_aligned(payload: &[u8]) -> rkyv::util::AlignedVec<16> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    aligned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    struct ShardTable {
        version: u64,
        shards: Vec<(String, u32, u16)>,
    }

    #[test]
    fn rkyv_payload_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard_table");
        assert!(read_state(&path).unwrap().is_none());
        let t = ShardTable {
            version: 3,
            shards: vec![("orders".into(), 0, 1), ("orders".into(), 1, 0)],
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&t).unwrap();
        write_state(&path, &bytes).unwrap();
        let back = read_state(&path).unwrap().unwrap();
        let t2: ShardTable = rkyv::from_bytes::<ShardTable, rkyv::rancor::Error>(&back).unwrap();
        assert_eq!(t, t2);
        // Overwrite keeps exactly one version and no tmp file.
        let t3 = ShardTable {
            version: 4,
            shards: vec![],
        };
        write_state(&path, &rkyv::to_bytes::<rkyv::rancor::Error>(&t3).unwrap()).unwrap();
        let back = read_state(&path).unwrap().unwrap();
        assert_eq!(
            rkyv::from_bytes::<ShardTable, rkyv::rancor::Error>(&back).unwrap(),
            t3
        );
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn corruption_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        write_state(&path, b"hello state").unwrap();
        let mut raw = std::fs::read(&path).unwrap();
        let n = raw.len();
        raw[n - 1] ^= 0x40;
        std::fs::write(&path, &raw).unwrap();
        let err = read_state(&path).unwrap_err();
        assert!(err.to_string().contains("meta"), "{err}");
        assert!(matches!(
            err,
            StateFileError::Corrupt {
                reason: "checksum mismatch",
                ..
            }
        ));
        std::fs::write(&path, &raw[..n - 3]).unwrap();
        assert!(read_state(&path).is_err());
        std::fs::write(&path, b"xx").unwrap();
        assert!(read_state(&path).is_err());
    }

    #[test]
    fn stale_tmp_does_not_matter() {
        // A crash after writing the tmp file but before the rename leaves the old version.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt");
        write_state(&path, b"old").unwrap();
        std::fs::write(tmp_path(&path), b"partial garbage").unwrap();
        assert_eq!(read_state(&path).unwrap().unwrap(), b"old");
        write_state(&path, b"new").unwrap();
        assert_eq!(read_state(&path).unwrap().unwrap(), b"new");
    }
}
