//! The only module that names glommio files (and, later, sockets). Storage talks to disk through
//! the [`disk::Disk`] trait: its real implementation, [`disk::GlommioDisk`], opens
//! [`dma::DirectFile`]s (O_DIRECT, io_uring) and keeps small persisted state in [`state_file`]s.
//! Every I/O error leaving this module is an [`IoFailure`] carrying the operation, the path and
//! the file offset, so the server can log it and fail only the partition concerned.
//!
//! How the trait is used: `storage::PartitionLog<D: Disk = GlommioDisk>` does all its file and
//! directory work through its `D`. The broker names `PartitionLog` and gets the real disk,
//! monomorphized (no `dyn`, no boxing per I/O; `GlommioDisk` is zero-sized). Tests build logs
//! with `PartitionLog::open_on(fake_disk::FakeDisk, ...)`: an in-memory disk that injects EIO,
//! ENOSPC, short and torn writes and power cuts from a seeded RNG (`#[cfg(test)]` only).
//!
//! Runs on the shard that owns the file; nothing here is `Send`.

pub mod disk;
pub mod dma;
#[cfg(test)]
pub mod fake_disk;
pub mod join;
pub mod semaphore;
pub mod socket;
pub mod state_file;
#[cfg(test)]
pub mod test_executor;
pub mod workers;

use std::path::{Path, PathBuf};

/// An I/O error with its context: what we were doing, to which file, at which offset.
#[derive(Debug, thiserror::Error)]
#[error("{op} {} at offset {offset}: {source}", path.display())]
pub struct IoFailure {
    pub op: &'static str,
    pub path: PathBuf,
    pub offset: u64,
    #[source]
    pub source: std::io::Error,
}

impl IoFailure {
    pub fn new(
        op: &'static str,
        path: &Path,
        offset: u64,
        source: impl Into<std::io::Error>,
    ) -> IoFailure {
        IoFailure {
            op,
            path: path.to_path_buf(),
            offset,
            source: source.into(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.source.kind() == std::io::ErrorKind::NotFound
    }
}

/// fsync a directory so entries created, renamed or removed in it are durable.
///
/// Plain blocking std call: it runs only on segment roll, file creation and state writes (rare,
/// and a directory fsync is cheap compared to a data fsync).
pub fn sync_dir(dir: &Path) -> Result<(), IoFailure> {
    let f = std::fs::File::open(dir).map_err(|e| IoFailure::new("open dir", dir, 0, e))?;
    f.sync_all()
        .map_err(|e| IoFailure::new("fsync dir", dir, 0, e))
}

/// Total and available bytes (for unprivileged writers) of the filesystem holding `dir`
/// (statvfs), or `None` if it cannot be asked.
pub fn filesystem_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `st` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frag = st.f_frsize as u64;
    Some((
        (st.f_blocks as u64).saturating_mul(frag),
        (st.f_bavail as u64).saturating_mul(frag),
    ))
}
