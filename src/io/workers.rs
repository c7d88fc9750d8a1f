//! The io_uring worker pool behind a shard's file I/O.
//!
//! What io_uring cannot finish without blocking goes to kernel worker threads (io-wq) owned by
//! the submitting thread. Every fdatasync goes there, and so does an O_DIRECT append that
//! converts a preallocated (unwritten) extent: with 1,000 partitions a round sent ~1,000
//! fdatasyncs and a third of its ~1,000 writes there. A shard round waits for all of them, so
//! how many run at once sets the round's length. The kernel's default limit for this "bounded"
//! work is small; [`raise_bounded_workers`] sets it per shard thread.
//!
//! glommio does not expose its rings, so this finds an io_uring file descriptor of the process
//! in `/proc/self/fd`: the limit is set on the calling thread's worker pool whichever ring the
//! call names (and on the pools of the threads that use that ring, which are shards as well).

use std::io;

/// `io_uring_register(2)` opcode IORING_REGISTER_IOWQ_MAX_WORKERS (Linux 5.15).
const IORING_REGISTER_IOWQ_MAX_WORKERS: libc::c_uint = 19;

/// Sets how many io-wq workers the calling thread may run for bounded work (file I/O); the
/// unbounded limit stays. Returns the previous (bounded, unbounded) limits.
pub fn raise_bounded_workers(bounded: u32) -> io::Result<(u32, u32)> {
    let fd = any_io_uring_fd()?;
    let mut counts: [libc::c_uint; 2] = [bounded, 0];
    // SAFETY: io_uring_register with this opcode reads and writes exactly two u32s at `arg`
    // (nr_args = 2); `counts` lives across the call. `fd` is an io_uring instance of this
    // process (found below), which glommio keeps open for the executor's lifetime.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            fd,
            IORING_REGISTER_IOWQ_MAX_WORKERS,
            counts.as_mut_ptr(),
            2 as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((counts[0], counts[1]))
}

/// An io_uring instance open in this process (anon inode `[io_uring]`).
fn any_io_uring_fd() -> io::Result<i32> {
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue; // closed meanwhile
        };
        if target.as_os_str() == "anon_inode:[io_uring]" {
            if let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                return Ok(fd);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "no io_uring instance in /proc/self/fd",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit takes: a second call reports the first one's value as the previous limit.
    #[test]
    fn sets_the_calling_threads_bounded_limit() {
        let (first, second) = crate::io::test_executor::on_executor(|| async {
            // A file write gives this thread its io_uring worker pool.
            let dir = tempfile::tempdir().expect("tmp");
            let f = glommio::io::DmaFile::create(dir.path().join("f"))
                .await
                .expect("create");
            let mut buf = f.alloc_dma_buffer(4096);
            buf.as_bytes_mut().fill(7);
            f.write_at(buf, 0).await.expect("write");
            f.fdatasync().await.expect("fdatasync");
            f.close().await.expect("close");
            let first = raise_bounded_workers(7).expect("set 7");
            let second = raise_bounded_workers(9).expect("set 9");
            (first, second)
        });
        assert_ne!(first.0, 0, "the thread had a worker pool");
        assert_eq!(second.0, 7, "previous limit after setting 7: {second:?}");
    }
}
