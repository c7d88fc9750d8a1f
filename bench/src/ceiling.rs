//! This machine's own limits, measured with the same pinning as a run, so results can be stated
//! as a fraction of them:
//! - loopback TCP: one stream, 1 MiB writes, sender on the first bench core, receiver on the
//!   broker's core (`--server-cpu`), bytes counted by the receiver;
//! - disk: sequential O_DIRECT writes (1 MiB, glommio `DmaFile`, queue depth 1) into the data
//!   directory, with an fdatasync every `sync_mib`, and one at the end; timed until the last
//!   sync returns. The file is removed afterwards.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use odradek::io::dma::DirectFile;
use serde::Serialize;

use crate::workload::Cores;

const BLOCK: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct CeilingSpec {
    pub cores: Cores,
    pub server_cpu: Option<usize>,
    pub data_dir: PathBuf,
    pub tcp_seconds: f64,
    pub disk_mib: u64,
    pub sync_mib: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub tcp_mb_per_s: f64,
    pub tcp_bytes: u64,
    pub tcp_client_cpu: Option<usize>,
    pub tcp_server_cpu: Option<usize>,
    pub disk_mb_per_s: f64,
    /// Sequential O_DIRECT reads (1 MiB) of the file just written: the bound for catch-up
    /// consumers, whose data comes from disk, not from a page cache.
    pub disk_read_mb_per_s: f64,
    pub disk_bytes: u64,
    pub disk_block_bytes: usize,
    pub disk_sync_every_bytes: u64,
    pub disk_path: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    #[error("{op}: {detail}")]
    Io { op: String, detail: String },
    #[error("executor: {0}")]
    Executor(String),
}

fn io(op: impl Into<String>, e: impl std::fmt::Display) -> CeilingError {
    CeilingError::Io {
        op: op.into(),
        detail: e.to_string(),
    }
}

fn placement(cpu: Option<usize>) -> Placement {
    cpu.map_or(Placement::Unbound, Placement::Fixed)
}

pub fn measure(spec: &CeilingSpec) -> Result<Ceiling, CeilingError> {
    let client_cpu = match &spec.cores {
        Cores::Pinned(v) => v.first().copied(),
        Cores::Unpinned(_) => None,
    };
    let (tcp_bytes, tcp_secs) = tcp(client_cpu, spec.server_cpu, spec.tcp_seconds)?;
    let path = spec
        .data_dir
        .join(format!("odradek-bench-ceiling-{}.tmp", std::process::id()));
    let (disk_bytes, disk_secs, read_bytes, read_secs) =
        disk(client_cpu, &path, spec.disk_mib << 20, spec.sync_mib << 20)?;
    Ok(Ceiling {
        tcp_mb_per_s: (tcp_bytes as f64 / 1e6 / tcp_secs * 10.0).round() / 10.0,
        tcp_bytes,
        tcp_client_cpu: client_cpu,
        tcp_server_cpu: spec.server_cpu,
        disk_mb_per_s: (disk_bytes as f64 / 1e6 / disk_secs * 10.0).round() / 10.0,
        disk_read_mb_per_s: (read_bytes as f64 / 1e6 / read_secs.max(1e-9) * 10.0).round() / 10.0,
        disk_bytes,
        disk_block_bytes: BLOCK,
        disk_sync_every_bytes: spec.sync_mib << 20,
        disk_path: path.display().to_string(),
    })
}

fn tcp(
    client: Option<usize>,
    server: Option<usize>,
    seconds: f64,
) -> Result<(u64, f64), CeilingError> {
    let (port_tx, port_rx) = mpsc::channel::<u16>();
    let srv = LocalExecutorBuilder::new(placement(server))
        .name("ceiling-rx")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let l = TcpListener::bind("127.0.0.1:0").map_err(|e| io("bind", e))?;
            let port = l.local_addr().map_err(|e| io("local_addr", e))?.port();
            let _ = port_tx.send(port);
            let mut s = l.accept().await.map_err(|e| io("accept", e))?;
            let mut buf = vec![0u8; BLOCK];
            let mut total = 0u64;
            let mut first: Option<Instant> = None;
            loop {
                let n = s.read(&mut buf).await.map_err(|e| io("read", e))?;
                if n == 0 {
                    break;
                }
                first.get_or_insert_with(Instant::now);
                total += n as u64;
            }
            let secs = first.map_or(1.0, |f| f.elapsed().as_secs_f64());
            Ok::<_, CeilingError>((total, secs))
        })
        .map_err(|e| CeilingError::Executor(e.to_string()))?;
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| io("receiver start", e))?;
    let cli = LocalExecutorBuilder::new(placement(client))
        .name("ceiling-tx")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut s = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| io("connect", e))?;
            let buf = vec![0x5au8; BLOCK];
            let end = Instant::now() + Duration::from_secs_f64(seconds);
            while Instant::now() < end {
                s.write_all(&buf).await.map_err(|e| io("write", e))?;
            }
            s.close().await.map_err(|e| io("close", e))?;
            Ok::<_, CeilingError>(())
        })
        .map_err(|e| CeilingError::Executor(e.to_string()))?;
    cli.join()
        .map_err(|e| CeilingError::Executor(e.to_string()))??;
    srv.join()
        .map_err(|e| CeilingError::Executor(e.to_string()))?
}

fn disk(
    cpu: Option<usize>,
    path: &std::path::Path,
    bytes: u64,
    sync_every: u64,
) -> Result<(u64, f64, u64, f64), CeilingError> {
    let path = path.to_path_buf();
    let h = LocalExecutorBuilder::new(placement(cpu))
        .name("ceiling-disk")
        .io_memory(1 << 20)
        .spawn(move || async move {
            // The broker's own O_DIRECT file type: the same write and read paths as the log
            // (and its guard against glommio's iopoll probe on an empty file).
            let name = path.display().to_string();
            let f = DirectFile::create_truncate(&path)
                .await
                .map_err(|e| io(format!("create {name}"), e))?;
            let block = vec![0xa5u8; BLOCK];
            let started = Instant::now();
            let mut pos = 0u64;
            let mut since_sync = 0u64;
            let mut result = Ok(());
            while pos < bytes {
                if let Err(e) = f.write_padded(pos, &block).await {
                    result = Err(io(format!("write {name} at {pos}"), e));
                    break;
                }
                pos += BLOCK as u64;
                since_sync += BLOCK as u64;
                if since_sync >= sync_every {
                    if let Err(e) = f.fdatasync().await {
                        result = Err(io(format!("fdatasync {name}"), e));
                        break;
                    }
                    since_sync = 0;
                }
            }
            if result.is_ok() {
                if let Err(e) = f.fdatasync().await {
                    result = Err(io(format!("fdatasync {name}"), e));
                }
            }
            let secs = started.elapsed().as_secs_f64();
            // Read it back the way a catch-up consumer's data comes: O_DIRECT, sequential.
            let read_started = Instant::now();
            let mut read = 0u64;
            while result.is_ok() && read < pos {
                match f.read(read, BLOCK).await {
                    Ok(r) if !r.is_empty() => read += r.len() as u64,
                    Ok(_) => break,
                    Err(e) => result = Err(io(format!("read {name} at {read}"), e)),
                }
            }
            let read_secs = read_started.elapsed().as_secs_f64();
            let _ = f.close().await;
            let _ = std::fs::remove_file(&path);
            result.map(|_| (pos, secs, read, read_secs))
        })
        .map_err(|e| CeilingError::Executor(e.to_string()))?;
    h.join()
        .map_err(|e| CeilingError::Executor(e.to_string()))?
}
