//! The load description shared by the command line and workload files, and the workload file
//! format (TOML, `bench/workloads/*.toml`).
//!
//! A workload file names a mode and a `[load]` table whose keys are exactly the long command-line
//! options with `-` written `_` (every key optional, defaults as on the command line):
//!
//! ```toml
//! name = "w1"
//! description = "produce 1 KiB records, 16 partitions, acks=all, linger 1 ms, batch 128 KiB"
//! mode = "produce"            # produce | consume (catch-up, after a prefill) | e2e
//! prefill_bytes = 4294967296  # consume mode: bytes produced (closed loop) before consuming
//! rate_fraction_of = "w1"     # optional: rate = fraction x the best records/s of the latest
//! rate_fraction = 0.5         #   perf/results/w1-*.json
//! request_ceiling = true      # optional: also measure loopback request/reply, one record each
//! [load]
//! partitions = 16
//! record_size = 1024
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::client::batch::Compression;

/// Everything a produce/consume/e2e run needs. Cores are a CPU list ("1-1", "2,3") to pin one
/// executor to each CPU, or a bare count to run that many unpinned executors.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadSpec {
    /// Bootstrap broker, host:port.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Topic (default: a fresh `bench-<unix time>` for produce/e2e).
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions to create the topic with, if missing.
    #[arg(long, default_value_t = 16)]
    pub partitions: usize,
    /// Value size of each record, bytes (at least 24 for the payload header to fit).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Fraction of each value that is random (1.0 incompressible, 0.5 like OMB's payload).
    #[arg(long, default_value_t = 1.0)]
    pub random_fraction: f64,
    /// Key cardinality (0: no keys, sticky partitioning; else random keys, hashed).
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
    /// acks: all (-1), 1 or 0.
    #[arg(long, default_value = "all")]
    pub acks: String,
    #[arg(long, value_enum, default_value = "none")]
    pub compression: Compression,
    #[arg(long, default_value_t = 1.0)]
    pub linger_ms: f64,
    /// Batch size per partition (uncompressed records bytes).
    #[arg(long, default_value_t = 131072)]
    pub batch_bytes: usize,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Largest Produce request (batches of several partitions are sent together, Kafka's
    /// max.request.size).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_request_bytes: usize,
    /// Sealed batches waiting for a request, per producer and broker, in bytes (Kafka's
    /// buffer.memory).
    #[arg(long, default_value_t = 32 << 20)]
    pub buffer_bytes: usize,
    /// Idempotent producers (InitProducerId, sequence numbers).
    #[arg(long)]
    pub idempotent: bool,
    /// Transactional producers, committing a transaction every N records (0: off). Each
    /// producer gets its own transactional id; implies idempotence; needs acks=all.
    #[arg(long, default_value_t = 0)]
    pub transactional_records: u64,
    /// transaction.timeout.ms sent with InitProducerId.
    #[arg(long, default_value_t = 60_000)]
    pub transaction_timeout_ms: i32,
    /// Consumers fetch with isolation level read_committed: records of open transactions wait
    /// for their commit, aborted ones are skipped.
    #[arg(long)]
    pub read_committed: bool,
    /// Total target rate in records/s over all producers (open loop). Unset: closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Run length in seconds (producers stop generating then).
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Total records (produce: over all producers; consume: stop after this many).
    #[arg(long)]
    pub records: Option<u64>,
    /// Seconds excluded from latency and throughput figures.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_s: f64,
    #[arg(long, default_value_t = 1)]
    pub producers_per_core: usize,
    #[arg(long, default_value_t = 1)]
    pub consumers_per_core: usize,
    #[arg(long, default_value_t = 1 << 20)]
    pub fetch_partition_max_bytes: usize,
    #[arg(long, default_value_t = 50 << 20)]
    pub fetch_max_bytes: usize,
    /// Bench client cores: CPU list to pin to ("1-1", "2,3"), or a count (unpinned).
    #[arg(long, default_value = "1")]
    pub cores: String,
    /// e2e: seconds consumers keep draining after producers finish before declaring loss;
    /// catch-up consume: seconds without a record before giving up.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout_s: f64,
    /// MiB of heap each bench core faults in and frees before the run's clock starts, so that
    /// an overloaded run's queues fill with memory already resident instead of fresh pages
    /// (bench/README.md, "What it measures"). 0: none.
    #[arg(long, default_value_t = 0)]
    pub pretouch_mb: usize,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            bootstrap: "127.0.0.1:9092".into(),
            topic: None,
            partitions: 16,
            record_size: 1024,
            random_fraction: 1.0,
            keys: 0,
            acks: "all".into(),
            compression: Compression::None,
            linger_ms: 1.0,
            batch_bytes: 131072,
            max_in_flight: 5,
            max_request_bytes: 1 << 20,
            buffer_bytes: 32 << 20,
            idempotent: false,
            transactional_records: 0,
            transaction_timeout_ms: 60_000,
            read_committed: false,
            rate: None,
            duration_s: None,
            records: None,
            warmup_s: 0.0,
            producers_per_core: 1,
            consumers_per_core: 1,
            fetch_partition_max_bytes: 1 << 20,
            fetch_max_bytes: 50 << 20,
            cores: "1".into(),
            drain_timeout_s: 30.0,
            pretouch_mb: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("acks must be all, -1, 1 or 0, not {0:?}")]
    Acks(String),
    #[error("cores must be a count or a CPU list like 1-3 or 1,3, not {0:?}")]
    Cores(String),
    #[error("record size {0} is below the 24-byte payload header")]
    RecordSize(usize),
    #[error("transactional producers need acks=all, not {0:?}")]
    TransactionalAcks(String),
    #[error("reading workload {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing workload {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
}

/// How the bench cores are placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cores {
    Pinned(Vec<usize>),
    Unpinned(usize),
}

impl Cores {
    pub fn count(&self) -> usize {
        match self {
            Cores::Pinned(v) => v.len(),
            Cores::Unpinned(n) => *n,
        }
    }
}

pub fn parse_cores(s: &str) -> Result<Cores, SpecError> {
    let bad = || SpecError::Cores(s.to_string());
    let s = s.trim();
    if !s.contains(['-', ',']) {
        let n: usize = s.parse().map_err(|_| bad())?;
        return if n == 0 {
            Err(bad())
        } else {
            Ok(Cores::Unpinned(n))
        };
    }
    let mut v = Vec::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if b < a {
                    return Err(bad());
                }
                v.extend(a..=b);
            }
            None => v.push(part.trim().parse().map_err(|_| bad())?),
        }
    }
    if v.is_empty() {
        return Err(bad());
    }
    Ok(Cores::Pinned(v))
}

impl LoadSpec {
    pub fn acks_value(&self) -> Result<i16, SpecError> {
        match self.acks.as_str() {
            "all" | "-1" => Ok(-1),
            "1" => Ok(1),
            "0" => Ok(0),
            other => Err(SpecError::Acks(other.to_string())),
        }
    }
    pub fn cores_value(&self) -> Result<Cores, SpecError> {
        parse_cores(&self.cores)
    }
    pub fn check(&self) -> Result<(), SpecError> {
        self.acks_value()?;
        self.cores_value()?;
        if self.record_size < crate::client::batch::PAYLOAD_HEADER_LEN {
            return Err(SpecError::RecordSize(self.record_size));
        }
        if self.transactional_records > 0 && self.acks_value()? != -1 {
            return Err(SpecError::TransactionalAcks(self.acks.clone()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Produce,
    Consume,
    E2e,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub mode: Mode,
    #[serde(default)]
    pub prefill_bytes: Option<u64>,
    #[serde(default)]
    pub rate_fraction_of: Option<String>,
    #[serde(default)]
    pub rate_fraction: Option<f64>,
    /// The ceiling also measures loopback request/reply in the shape of this workload's
    /// producers sending one record per request (`ceiling::RequestShape`).
    #[serde(default)]
    pub request_ceiling: bool,
    #[serde(default)]
    pub load: LoadSpec,
}

impl Workload {
    pub fn load_file(path: &Path) -> Result<Workload, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| SpecError::Parse {
            path: path.display().to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_parse() {
        assert_eq!(parse_cores("1-1").unwrap(), Cores::Pinned(vec![1]));
        assert_eq!(
            parse_cores("0-2,5").unwrap(),
            Cores::Pinned(vec![0, 1, 2, 5])
        );
        assert_eq!(parse_cores("2").unwrap(), Cores::Unpinned(2));
        assert!(parse_cores("0").is_err());
        assert!(parse_cores("3-1").is_err());
    }

    #[test]
    fn shipped_workloads_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let w = Workload::load_file(&e.unwrap().path()).unwrap();
            w.load.check().unwrap();
            n += 1;
        }
        assert!(n >= 6);
    }
}
