//! The disk as storage sees it: the [`Disk`] trait (directories, whole small files, state files)
//! and its [`SegmentFile`] (the O_DIRECT operations on one open file), with [`GlommioDisk`], the
//! real implementation on glommio's io_uring `DmaFile` ([`super::dma`]) and blocking std calls.
//!
//! Why a trait: so that tests can run the whole storage layer over a fake disk that fails
//! operations (EIO, ENOSPC, short writes) and loses what a power cut loses (unsynced writes,
//! unsynced directory entries), and check what recovery makes of it (see `fake_disk` and
//! `storage::fault_injection`). Why not `dyn`: the broker's path must cost nothing for it, so
//! `PartitionLog<D: Disk = GlommioDisk>` is generic and monomorphized; `GlommioDisk` is a
//! zero-sized type and each of its methods forwards to the function it always called.
//!
//! Contract every implementation keeps (the fake checks the callers against it):
//! - A write covers whole 4 KiB pages from a page-aligned position (the last page padded with
//!   zeros) and may extend the file; it is durable only once `fdatasync` of that file returned,
//!   or once a `write_padded_parts_durable` of it returned.
//! - A directory entry (create, rename, remove, mkdir) is durable only once `sync_dir` of its
//!   directory returned.
//! - Errors are [`IoFailure`]s naming the operation, the path and the offset; a missing file is
//!   `ErrorKind::NotFound` ([`IoFailure::is_not_found`]).
//!
//! Nothing here is `Send`: every future runs on the shard that created it.

use std::path::Path;

use bytes::Bytes;

use super::dma::{self, DirectFile};
use super::state_file::{self, StateFileError};
use super::IoFailure;

/// One open file (a segment, an index) of a [`Disk`].
// Futures of these methods are never sent across threads (thread-per-core), so the `Send`
// bound the lint asks about would only get in the way.
#[allow(async_fn_in_trait)]
pub trait SegmentFile: 'static {
    /// Unique per opened file for the process's lifetime (caches of what was read key on it).
    fn id(&self) -> u64;
    fn path(&self) -> &Path;
    /// Writes the concatenation of `parts` at the page-aligned `pos`, padding the last page.
    async fn write_padded_parts(&self, pos: u64, parts: &[&[u8]]) -> Result<(), IoFailure>;
    /// [`SegmentFile::write_padded_parts`] that returns once what it wrote is durable, as that
    /// write followed by [`SegmentFile::fdatasync`] would (the real disk does it in one
    /// operation; the default is those two steps).
    async fn write_padded_parts_durable(&self, pos: u64, parts: &[&[u8]]) -> Result<(), IoFailure> {
        self.write_padded_parts(pos, parts).await?;
        self.fdatasync().await
    }
    /// [`SegmentFile::write_padded_parts`] of one slice.
    async fn write_padded(&self, pos: u64, data: &[u8]) -> Result<(), IoFailure> {
        self.write_padded_parts(pos, &[data]).await
    }
    /// Up to `len` bytes at any `pos`; shorter at the end of the file.
    async fn read(&self, pos: u64, len: usize) -> Result<Bytes, IoFailure>;
    async fn fdatasync(&self) -> Result<(), IoFailure>;
    /// Reserves blocks up to `size` without changing the file size.
    async fn preallocate(&self, size: u64) -> Result<(), IoFailure>;
    async fn truncate(&self, size: u64) -> Result<(), IoFailure>;
    async fn size(&self) -> Result<u64, IoFailure>;
    async fn close(self) -> Result<(), IoFailure>
    where
        Self: Sized;
}

/// Files and directories for the storage layer (see the module docs). Cheap to clone: a log
/// keeps its own handle.
#[allow(async_fn_in_trait)]
pub trait Disk: Clone + 'static {
    type File: SegmentFile;

    /// Opens `path` read-write, creating it when `create` is set (never truncating).
    async fn open(&self, path: &Path, create: bool) -> Result<Self::File, IoFailure>;
    /// Opens `path` read-write, truncated to zero length (created if needed).
    async fn create_truncate(&self, path: &Path) -> Result<Self::File, IoFailure>;
    /// The whole content of a small file; `None` if it does not exist.
    async fn read_whole_file(&self, path: &Path) -> Result<Option<Bytes>, IoFailure>;
    /// Replaces a small file's content atomically (`.tmp` sibling, fdatasync, rename); the
    /// caller syncs the directory.
    async fn write_whole_file(&self, path: &Path, data: &[u8]) -> Result<(), IoFailure>;

    fn exists(&self, path: &Path) -> bool;
    fn create_dir_all(&self, dir: &Path) -> Result<(), IoFailure>;
    /// Names of the entries of `dir` (names that are not UTF-8 are left out).
    fn list_dir(&self, dir: &Path) -> Result<Vec<String>, IoFailure>;
    fn remove_file(&self, path: &Path) -> Result<(), IoFailure>;
    fn rename(&self, from: &Path, to: &Path) -> Result<(), IoFailure>;
    fn remove_dir_all(&self, dir: &Path) -> Result<(), IoFailure>;
    /// Makes the entries created, renamed or removed in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> Result<(), IoFailure>;

    /// Small checksummed state files (see [`super::state_file`]).
    fn read_state(&self, path: &Path) -> Result<Option<Vec<u8>>, StateFileError>;
    fn write_state(&self, path: &Path, payload: &[u8]) -> Result<(), StateFileError>;
    fn remove_state(&self, path: &Path) -> Result<(), StateFileError>;

    /// Runs `f` (blocking calls on this disk) where blocking does not stall the shard: the real
    /// disk uses glommio's blocking thread pool, a fake one simply calls it.
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Self) -> T + Send + 'static) -> T;
}

/// The real disk: glommio `DmaFile`s (O_DIRECT, io_uring) and blocking std calls for
/// directories and state files. Zero-sized; every method forwards to what storage called before
/// the trait existed.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlommioDisk;

impl SegmentFile for DirectFile {
    #[inline]
    fn id(&self) -> u64 {
        DirectFile::id(self)
    }
    #[inline]
    fn path(&self) -> &Path {
        DirectFile::path(self)
    }
    #[inline]
    async fn write_padded_parts(&self, pos: u64, parts: &[&[u8]]) -> Result<(), IoFailure> {
        DirectFile::write_padded_parts(self, pos, parts).await
    }
    #[inline]
    async fn write_padded_parts_durable(&self, pos: u64, parts: &[&[u8]]) -> Result<(), IoFailure> {
        DirectFile::write_padded_parts_durable(self, pos, parts).await
    }
    #[inline]
    async fn read(&self, pos: u64, len: usize) -> Result<Bytes, IoFailure> {
        DirectFile::read(self, pos, len).await
    }
    #[inline]
    async fn fdatasync(&self) -> Result<(), IoFailure> {
        DirectFile::fdatasync(self).await
    }
    #[inline]
    async fn preallocate(&self, size: u64) -> Result<(), IoFailure> {
        DirectFile::preallocate(self, size).await
    }
    #[inline]
    async fn truncate(&self, size: u64) -> Result<(), IoFailure> {
        DirectFile::truncate(self, size).await
    }
    #[inline]
    async fn size(&self) -> Result<u64, IoFailure> {
        DirectFile::size(self).await
    }
    #[inline]
    async fn close(self) -> Result<(), IoFailure> {
        DirectFile::close(self).await
    }
}

impl Disk for GlommioDisk {
    type File = DirectFile;

    #[inline]
    async fn open(&self, path: &Path, create: bool) -> Result<DirectFile, IoFailure> {
        DirectFile::open(path, create).await
    }
    #[inline]
    async fn create_truncate(&self, path: &Path) -> Result<DirectFile, IoFailure> {
        DirectFile::create_truncate(path).await
    }
    #[inline]
    async fn read_whole_file(&self, path: &Path) -> Result<Option<Bytes>, IoFailure> {
        dma::read_whole_file(path).await
    }
    #[inline]
    async fn write_whole_file(&self, path: &Path, data: &[u8]) -> Result<(), IoFailure> {
        dma::write_whole_file(path, data).await
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn create_dir_all(&self, dir: &Path) -> Result<(), IoFailure> {
        std::fs::create_dir_all(dir).map_err(|e| IoFailure::new("create dir", dir, 0, e))
    }
    fn list_dir(&self, dir: &Path) -> Result<Vec<String>, IoFailure> {
        let listing = std::fs::read_dir(dir).map_err(|e| IoFailure::new("list dir", dir, 0, e))?;
        let mut names = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|e| IoFailure::new("list dir", dir, 0, e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }
    fn remove_file(&self, path: &Path) -> Result<(), IoFailure> {
        std::fs::remove_file(path).map_err(|e| IoFailure::new("remove", path, 0, e))
    }
    fn rename(&self, from: &Path, to: &Path) -> Result<(), IoFailure> {
        std::fs::rename(from, to).map_err(|e| IoFailure::new("rename", from, 0, e))
    }
    fn remove_dir_all(&self, dir: &Path) -> Result<(), IoFailure> {
        std::fs::remove_dir_all(dir).map_err(|e| IoFailure::new("remove dir", dir, 0, e))
    }
    fn sync_dir(&self, dir: &Path) -> Result<(), IoFailure> {
        super::sync_dir(dir)
    }

    fn read_state(&self, path: &Path) -> Result<Option<Vec<u8>>, StateFileError> {
        state_file::read_state(path)
    }
    fn write_state(&self, path: &Path, payload: &[u8]) -> Result<(), StateFileError> {
        state_file::write_state(path, payload)
    }
    fn remove_state(&self, path: &Path) -> Result<(), StateFileError> {
        state_file::remove_state(path)
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Self) -> T + Send + 'static) -> T {
        glommio::executor()
            .spawn_blocking(move || f(&GlommioDisk))
            .await
    }
}
