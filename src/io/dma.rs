//! O_DIRECT file access for segment and index files, on glommio's io_uring `DmaFile`.
//!
//! Owns: alignment. Writers hand in unaligned byte slices that start at a page-aligned file
//! position; this module copies them into an aligned DMA buffer, pads the tail page with zeros
//! and writes whole pages. Readers may ask for any range; glommio aligns the read and we copy the
//! wanted bytes out into a `Bytes` (the copy lets the buffer be sliced and shared by Fetch
//! responses without holding glommio's `!Send` buffer).
//!
//! Writes that must be durable when they return ([`DirectFile::write_padded_parts_durable`]) go
//! through a second descriptor of the same file opened with O_DSYNC: Linux then makes each write's
//! data, and the metadata needed to read it back, durable before completing it, which is what a
//! write followed by fdatasync gives, in one io_uring operation (one hand-off to a kernel worker
//! on ext4 instead of two; `perf/2026-12-06-w4-shared-core.md`). glommio cannot set RWF_DSYNC on
//! a single write, hence the descriptor.
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

thread_local! {
    /// This thread's bound on write-buffer bytes in flight; `None` (tests, tools) is unbounded.
    static WRITE_BUFFER_BUDGET: std::cell::RefCell<Option<std::rc::Rc<WriteBufferBudget>>> =
        const { std::cell::RefCell::new(None) };
}

/// Bounds the bytes of DMA buffers that this thread's writes hold at once to `bytes` (at least
/// one [`WRITE_CHUNK_BYTES`] chunk). A shard calls it at start with a share of its executor's
/// preallocated I/O memory (`io.buffer.bytes`): a flush round over many partitions then takes
/// its buffers from that memory, chunk by chunk as earlier writes complete, instead of spilling
/// to the heap. Heap buffers of that size are fresh pages that the kernel faults in and clears
/// on every round: two thirds of the shard's CPU in W5 (perf/2026-12-04-io-buffers.md).
pub fn limit_write_buffers(bytes: usize) {
    let bytes = bytes.max(WRITE_CHUNK_BYTES) as u64;
    let budget = WriteBufferBudget {
        bytes,
        semaphore: glommio::sync::Semaphore::new(bytes),
    };
    WRITE_BUFFER_BUDGET.with(|b| *b.borrow_mut() = Some(std::rc::Rc::new(budget)));
}

struct WriteBufferBudget {
    bytes: u64,
    semaphore: glommio::sync::Semaphore,
}

impl WriteBufferBudget {
    /// Waits until `len` bytes are free and holds them until the permit drops. A request is
    /// capped at the whole budget, so every chunk can get its room once the writes ahead of it
    /// complete.
    async fn reserve(&self, len: usize) -> Result<glommio::sync::Permit<'_>, std::io::Error> {
        let units = (len as u64).min(self.bytes);
        // A chunk cancelled while it waits must not take the wake-up of the next one with it.
        super::semaphore::acquire_passing_wake(
            &self.semaphore,
            self.semaphore.acquire_permit(units),
        )
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// Copies bytes `start..start + dst.len()` of the concatenation of `parts` into `dst`.
fn copy_range(parts: &[&[u8]], start: usize, dst: &mut [u8]) {
    let mut skip = start;
    let mut filled = 0;
    for part in parts {
        if filled == dst.len() {
            break;
        }
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        let src = &part[skip..];
        skip = 0;
        let n = src.len().min(dst.len() - filled);
        dst[filled..filled + n].copy_from_slice(&src[..n]);
        filled += n;
    }
    debug_assert_eq!(filled, dst.len(), "parts shorter than the range asked for");
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
    /// The same file opened again with O_DSYNC, on the first durable write (see the module docs).
    dsync: std::cell::OnceCell<DmaFile>,
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
            dsync: std::cell::OnceCell::new(),
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
            dsync: std::cell::OnceCell::new(),
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
    /// submitted together, so no buffer grows with the amount of data between two flushes. Each
    /// chunk waits for room in this thread's write-buffer budget (see [`limit_write_buffers`])
    /// before it takes its buffer.
    pub async fn write_padded_parts(&self, pos: u64, parts: &[&[u8]]) -> Result<(), IoFailure> {
        self.write_parts_through(&self.file, pos, parts).await
    }

    /// [`DirectFile::write_padded_parts`] that returns once the bytes are durable, as if an
    /// fdatasync of the file had followed it: written through the file's O_DSYNC descriptor
    /// (opened on the first call; see the module docs).
    pub async fn write_padded_parts_durable(
        &self,
        pos: u64,
        parts: &[&[u8]],
    ) -> Result<(), IoFailure> {
        if self.dsync.get().is_none() {
            // The same open file, not the path: the path may name another file by now (a
            // segment replaced by compaction).
            let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
            let again = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DSYNC)
                .dma_open(format!("/proc/self/fd/{fd}"))
                .await
                .map_err(|e| {
                    IoFailure::new("open O_DSYNC", &self.path, 0, std::io::Error::from(e))
                })?;
            if let Err(again) = self.dsync.set(again) {
                // Opened meanwhile by another write of this file: keep that one.
                let _ = again.close().await;
            }
        }
        match self.dsync.get() {
            Some(dsync) => self.write_parts_through(dsync, pos, parts).await,
            None => Err(IoFailure::new(
                "open O_DSYNC",
                &self.path,
                0,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )),
        }
    }

    /// Writes the concatenation of `parts` at `pos` through `file` (this file's descriptor or
    /// its O_DSYNC one).
    async fn write_parts_through(
        &self,
        file: &DmaFile,
        pos: u64,
        parts: &[&[u8]],
    ) -> Result<(), IoFailure> {
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
        // Where the next chunk starts: `skip` bytes into `parts[part]`. Walked once over all
        // chunks, so a flush of many small batches costs one pass, not one per chunk.
        let (mut part, mut skip) = (0usize, 0usize);
        for start in (0..total).step_by(WRITE_CHUNK_BYTES) {
            let len = WRITE_CHUNK_BYTES.min(total - start);
            while part < parts.len() && skip >= parts[part].len() {
                skip -= parts[part].len();
                part += 1;
            }
            writes.push(self.write_chunk(file, pos + start as u64, &parts[part..], skip, len));
            skip += len;
        }
        super::join::try_join_all(writes).await?;
        Ok(())
    }

    /// Writes bytes `skip..skip + len` of the concatenated `parts` at `pos`, padded to whole
    /// pages.
    async fn write_chunk(
        &self,
        file: &DmaFile,
        pos: u64,
        parts: &[&[u8]],
        skip: usize,
        len: usize,
    ) -> Result<(), IoFailure> {
        let aligned = align_up(len as u64) as usize;
        let budget = WRITE_BUFFER_BUDGET.with(|b| b.borrow().clone());
        let _permit = match &budget {
            Some(budget) => Some(
                budget
                    .reserve(aligned)
                    .await
                    .map_err(|e| IoFailure::new("write (buffer budget)", &self.path, pos, e))?,
            ),
            None => None,
        };
        let mut buf = file.alloc_dma_buffer(aligned);
        let dst = buf.as_bytes_mut();
        copy_range(parts, skip, &mut dst[..len]);
        dst[len..].fill(0);
        self.write_buffer(file, pos, buf, aligned).await
    }

    async fn write_buffer(
        &self,
        file: &DmaFile,
        pos: u64,
        buf: glommio::io::DmaBuffer,
        len: usize,
    ) -> Result<(), IoFailure> {
        let written = file
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
        if let Some(dsync) = self.dsync.into_inner() {
            dsync
                .close()
                .await
                .map_err(|e| IoFailure::new("close O_DSYNC", &path, 0, e))?;
        }
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
        dsync: std::cell::OnceCell::new(),
    };
    let size = f.size().await?;
    let data = f.read(0, size as usize).await?;
    f.close().await?;
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_executor::on_executor;

    #[test]
    fn copy_range_reads_across_part_boundaries() {
        let parts: Vec<Vec<u8>> = [0usize, 3, 1, 0, 7, 5]
            .iter()
            .scan(0u8, |next, &len| {
                let part: Vec<u8> = (0..len).map(|i| *next + i as u8).collect();
                *next += len as u8;
                Some(part)
            })
            .collect();
        let slices: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let whole: Vec<u8> = parts.concat();
        for start in 0..whole.len() {
            for len in 1..=whole.len() - start {
                let mut dst = vec![0xee; len];
                copy_range(&slices, start, &mut dst);
                assert_eq!(dst, &whole[start..start + len], "start {start} len {len}");
            }
        }
    }

    /// A durable write goes through a second descriptor of the same open file, opened with
    /// O_DSYNC (and O_DIRECT): it lands in that file even once its path names another one, and
    /// reads back through the first descriptor.
    #[test]
    fn a_durable_write_goes_through_an_o_dsync_descriptor_of_the_same_file() {
        on_executor(|| async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a");
            let f = DirectFile::open(&path, true).await.unwrap();
            let first: Vec<u8> = (0..5000).map(|i| (i % 251) as u8).collect();
            f.write_padded_parts_durable(0, &[&first[..3000], &first[3000..]])
                .await
                .unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(f.dsync.get().expect("opened"));
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .map(|v| i64::from_str_radix(v.trim(), 8).unwrap())
                .unwrap();
            assert_ne!(flags & libc::O_DSYNC as i64, 0, "{info}");
            assert_ne!(flags & libc::O_DIRECT as i64, 0, "{info}");

            // The path now names another file; the next durable write still lands in this one.
            std::fs::rename(&path, dir.path().join("moved")).unwrap();
            std::fs::write(&path, b"").unwrap();
            let second = vec![0x5au8; 4096];
            f.write_padded_parts_durable(8192, &[&second])
                .await
                .unwrap();
            let back = f.read(0, 3 * 4096).await.unwrap();
            assert!(back[..5000] == first[..]);
            assert!(back[5000..8192].iter().all(|&z| z == 0));
            assert!(back[8192..] == second[..]);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
            f.close().await.unwrap();
        });
    }

    /// Writes bigger than the whole budget still land byte for byte, chunk by chunk; while the
    /// budget is held elsewhere no write takes a buffer; once it is free, it is all free again.
    #[test]
    fn writes_wait_for_the_buffer_budget_and_land_whole() {
        on_executor(|| async {
            let dir = tempfile::tempdir().unwrap();
            limit_write_buffers(WRITE_CHUNK_BYTES);
            let budget = WRITE_BUFFER_BUDGET.with(|b| b.borrow().clone()).unwrap();
            // Odd-sized parts that straddle chunk boundaries, 3.5 MiB in all.
            let data: Vec<u8> = (0..(7 * WRITE_CHUNK_BYTES / 2))
                .map(|i| (i * 7 % 251) as u8)
                .collect();
            let parts: Vec<&[u8]> = data.chunks(333_333).collect();
            let a = DirectFile::open(&dir.path().join("a"), true).await.unwrap();
            let b = DirectFile::open(&dir.path().join("b"), true).await.unwrap();

            // While the whole budget is held elsewhere, no chunk of a write gets a buffer.
            let held = budget.reserve(WRITE_CHUNK_BYTES).await.unwrap();
            let mut cancelled = Box::pin(a.write_padded_parts(0, &parts));
            let mut waiting = Box::pin(b.write_padded(0, &data));
            for _ in 0..2 {
                assert!(futures::poll!(cancelled.as_mut()).is_pending());
                assert!(futures::poll!(waiting.as_mut()).is_pending());
                glommio::timer::sleep(std::time::Duration::from_millis(150)).await;
            }
            // Releasing the budget wakes the first waiting chunk (of `cancelled`), which is then
            // dropped before it runs: the write queued behind it must still get the budget.
            drop(held);
            drop(cancelled);
            let timeout = glommio::timer::sleep(std::time::Duration::from_secs(20));
            match futures::future::select(waiting, Box::pin(timeout)).await {
                futures::future::Either::Left((done, _)) => done.unwrap(),
                futures::future::Either::Right(_) => panic!("a write stuck waiting for the budget"),
            };
            a.write_padded_parts(0, &parts).await.unwrap();
            for f in [&a, &b] {
                let back = f.read(0, data.len() + 4096).await.unwrap();
                assert_eq!(back.len(), align_up(data.len() as u64) as usize);
                assert!(back[..data.len()] == data[..], "{}", f.path().display());
                assert!(back[data.len()..].iter().all(|&z| z == 0));
            }
            assert_eq!(budget.semaphore.available(), WRITE_CHUNK_BYTES as u64);
        });
    }
}
