//! O_DIRECT file access for segment and index files, on glommio's io_uring `DmaFile`.
//!
//! Owns: alignment. Writers hand in unaligned byte slices that start at a page-aligned file
//! position; this module copies them into an aligned DMA buffer, pads the tail page with zeros
//! and writes whole pages. Readers may ask for any range; glommio aligns the read and we copy the
//! wanted bytes out into a `Bytes` (the copy lets the buffer be sliced and shared by Fetch
//! responses without holding glommio's `!Send` buffer).
//!
//! Runs on the owning shard only (`DmaFile` is `!Send`).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};

use super::IoFailure;

/// Alignment of every write position and length.
pub const PAGE_BYTES: u64 = 4096;
/// Largest single DMA write (a multiple of the page).
pub const WRITE_CHUNK_BYTES: usize = 1 << 20;

pub fn align_down(v: u64) -> u64 {
    v & !(PAGE_BYTES - 1)
}
pub fn align_up(v: u64) -> u64 {
    (v + PAGE_BYTES - 1) & !(PAGE_BYTES - 1)
}

thread_local! {
    /// Devices (st_dev) whose io_uring poll support glommio has probed on this thread, with a
    /// real read (see [`ensure_iopoll_probed`]).
    static PROBED_DEVICES: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Held across a probe so that no other open on this thread reaches glommio's probe first.
    static PROBE_GATE: std::rc::Rc<glommio::sync::Semaphore> = std::rc::Rc::new(glommio::sync::Semaphore::new(1));
}

/// Works around glommio 0.9's iopoll probe. The first `DmaFile` opened on a device (per executor
/// thread) is probed with a 4 KiB O_DIRECT read at offset 0 and the answer is cached for the
/// device. If that file is empty, the read "succeeds" without reaching the device, the device is
/// wrongly marked pollable, and every later read on it fails with EOPNOTSUPP (seen on virtio
/// disks, intermittently, on fresh data directories). So before the first open on a device we
/// open a non-empty, fsynced scratch file there, which makes glommio's probe exercise the real
/// path. The gate is held for the whole probe: an open of an empty segment on the same thread
/// cannot overtake it. A device counts as probed only once that has succeeded; if the scratch
/// file cannot be written (disk full, read-only), the open fails and the next one tries again.
async fn ensure_iopoll_probed(path: &Path) -> Result<(), IoFailure> {
    use std::os::unix::fs::MetadataExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dev = std::fs::metadata(dir)
        .map_err(|e| IoFailure::new("stat dir", dir, 0, e))?
        .dev();
    if PROBED_DEVICES.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let gate = PROBE_GATE.with(|g| g.clone());
    let _permit = gate
        .acquire_permit(1)
        .await
        .map_err(|e| IoFailure::new("probe gate", dir, 0, std::io::Error::other(e.to_string())))?;
    if PROBED_DEVICES.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let thread = std::thread::current()
        .name()
        .unwrap_or("t")
        .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let scratch = dir.join(format!(
        ".odradek-iopoll-probe-{}-{thread}",
        std::process::id()
    ));
    let probed = async {
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&scratch)
                .map_err(|e| IoFailure::new("create probe file", &scratch, 0, e))?;
            f.write_all(&[0x5a; PAGE_BYTES as usize])
                .map_err(|e| IoFailure::new("write probe file", &scratch, 0, e))?;
            f.sync_all()
                .map_err(|e| IoFailure::new("fsync probe file", &scratch, 0, e))?;
        }
        let f = OpenOptions::new()
            .read(true)
            .dma_open(&scratch)
            .await
            .map_err(|e| IoFailure::new("open probe file", &scratch, 0, std::io::Error::from(e)))?;
        let _ = f.close().await;
        Ok::<(), IoFailure>(())
    }
    .await;
    let _ = std::fs::remove_file(&scratch);
    probed?;
    PROBED_DEVICES.with(|p| p.borrow_mut().push(dev));
    Ok(())
}

/// Opens with glommio after making sure the device's iopoll probe is meaningful.
async fn dma_open(opts: &OpenOptions, path: &Path) -> Result<DmaFile, IoFailure> {
    ensure_iopoll_probed(path).await?;
    opts.dma_open(path)
        .await
        .map_err(|e| IoFailure::new("open", path, 0, std::io::Error::from(e)))
}

/// An O_DIRECT file opened for reading and writing.
pub struct DirectFile {
    file: DmaFile,
    path: PathBuf,
    /// Unique per opened file for the process's lifetime (see [`DirectFile::id`]).
    id: u64,
}

/// Source of [`DirectFile::id`].
static NEXT_FILE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_file_id() -> u64 {
    NEXT_FILE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl DirectFile {
    /// Identifies this open file, never reused: caches of what was read from a file key on it
    /// (a file descriptor or an address can be reused once the file is closed, e.g. after
    /// compaction replaced a segment's file).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Opens `path` read-write, creating it when `create` is set (never truncating).
    pub async fn open(path: &Path, create: bool) -> Result<DirectFile, IoFailure> {
        let file = dma_open(
            OpenOptions::new().read(true).write(true).create(create),
            path,
        )
        .await?;
        Ok(DirectFile {
            file,
            path: path.to_path_buf(),
            id: next_file_id(),
        })
    }

    /// Opens `path` read-write, truncating it to zero length (creating it if needed).
    pub async fn create_truncate(path: &Path) -> Result<DirectFile, IoFailure> {
        let file = dma_open(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true),
            path,
        )
        .await?;
        Ok(DirectFile {
            file,
            path: path.to_path_buf(),
            id: next_file_id(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `data` at the page-aligned `pos`, padding the last page with zeros.
    pub async fn write_padded(&self, pos: u64, data: &[u8]) -> Result<(), IoFailure> {
        self.write_padded_parts(pos, &[data]).await
    }

    /// Writes the concatenation of `parts` at the page-aligned `pos`, padding the last page with
    /// zeros. The bytes are copied once into DMA buffers of at most [`WRITE_CHUNK_BYTES`], all
    /// submitted together, so no buffer grows with the amount of data between two flushes.
    pub async fn write_padded_parts(&self, pos: u64, parts: &[&[u8]]) -> Result<(), IoFailure> {
        if pos % PAGE_BYTES != 0 {
            return Err(IoFailure::new(
                "write (unaligned position)",
                &self.path,
                pos,
                std::io::Error::from(std::io::ErrorKind::InvalidInput),
            ));
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut writes = Vec::with_capacity(total.div_ceil(WRITE_CHUNK_BYTES));
        let (mut part, mut part_off) = (0usize, 0usize);
        let mut chunk_start = 0usize;
        while chunk_start < total {
            let chunk_len = WRITE_CHUNK_BYTES.min(total - chunk_start);
            let aligned = align_up(chunk_len as u64) as usize;
            let mut buf = self.file.alloc_dma_buffer(aligned);
            let dst = buf.as_bytes_mut();
            let mut filled = 0usize;
            while filled < chunk_len {
                let src = &parts[part][part_off..];
                let n = src.len().min(chunk_len - filled);
                dst[filled..filled + n].copy_from_slice(&src[..n]);
                filled += n;
                part_off += n;
                if part_off == parts[part].len() {
                    part += 1;
                    part_off = 0;
                }
            }
            dst[chunk_len..].fill(0);
            writes.push(self.write_buffer(pos + chunk_start as u64, buf, aligned));
            chunk_start += chunk_len;
        }
        super::join::try_join_all(writes).await?;
        Ok(())
    }

    async fn write_buffer(
        &self,
        pos: u64,
        buf: glommio::io::DmaBuffer,
        len: usize,
    ) -> Result<(), IoFailure> {
        let written = self
            .file
            .write_at(buf, pos)
            .await
            .map_err(|e| IoFailure::new("write", &self.path, pos, e))?;
        if written != len {
            return Err(IoFailure::new(
                "write (short)",
                &self.path,
                pos + written as u64,
                std::io::Error::from(std::io::ErrorKind::WriteZero),
            ));
        }
        Ok(())
    }

    /// Reads up to `len` bytes at any `pos`; shorter at end of file.
    pub async fn read(&self, pos: u64, len: usize) -> Result<Bytes, IoFailure> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let r = self
            .file
            .read_at(pos, len)
            .await
            .map_err(|e| IoFailure::new("read", &self.path, pos, e))?;
        Ok(Bytes::copy_from_slice(&r))
    }

    pub async fn fdatasync(&self) -> Result<(), IoFailure> {
        self.file
            .fdatasync()
            .await
            .map_err(|e| IoFailure::new("fdatasync", &self.path, 0, e))
    }

    /// Reserves disk blocks up to `size` without changing the file size (FALLOC_FL_KEEP_SIZE),
    /// so later writes do not allocate extents on the hot path.
    pub async fn preallocate(&self, size: u64) -> Result<(), IoFailure> {
        self.file
            .pre_allocate(size, true)
            .await
            .map_err(|e| IoFailure::new("fallocate", &self.path, size, e))
    }

    pub async fn truncate(&self, size: u64) -> Result<(), IoFailure> {
        self.file
            .truncate(size)
            .await
            .map_err(|e| IoFailure::new("truncate", &self.path, size, e))
    }

    pub async fn size(&self) -> Result<u64, IoFailure> {
        self.file
            .file_size()
            .await
            .map_err(|e| IoFailure::new("stat", &self.path, 0, e))
    }

    pub async fn close(self) -> Result<(), IoFailure> {
        let path = self.path;
        self.file
            .close()
            .await
            .map_err(|e| IoFailure::new("close", &path, 0, e))
    }
}

/// Replaces the whole content of a small file (index files) with `data`: write via a `.tmp`
/// sibling (padded, then truncated to the exact length), fdatasync, rename over `path`. A crash
/// leaves either the old or the new file. The caller fsyncs the directory.
pub async fn write_whole_file(path: &Path, data: &[u8]) -> Result<(), IoFailure> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let f = DirectFile::create_truncate(&tmp).await?;
    f.write_padded(0, data).await?;
    f.truncate(data.len() as u64).await?;
    f.fdatasync().await?;
    f.close().await?;
    std::fs::rename(&tmp, path).map_err(|e| IoFailure::new("rename", &tmp, 0, e))
}

/// Reads a whole small file; `None` if it does not exist.
pub async fn read_whole_file(path: &Path) -> Result<Option<Bytes>, IoFailure> {
    let f = match dma_open(OpenOptions::new().read(true), path).await {
        Ok(f) => f,
        Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let f = DirectFile {
        file: f,
        path: path.to_path_buf(),
        id: next_file_id(),
    };
    let size = f.size().await?;
    let data = f.read(0, size as usize).await?;
    f.close().await?;
    Ok(Some(data))
}
