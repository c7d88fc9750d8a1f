//! Metrics: per-shard probes on the request path, snapshots taken by each shard of itself at
//! scrape time, a Prometheus text renderer that merges them, and the HTTP endpoint (`/metrics`,
//! `/health`, `/ready`) on shard 0.
//!
//! Collection is lock-free because nothing is shared: every shard counts into its own
//! [`probe::ShardProbe`] (plain `Cell`s and `RefCell`s, HdrHistograms for latencies). A scrape
//! sends a snapshot job to every shard through the mailbox; each copies its counters into a
//! [`snapshot::ShardSnapshot`] on its own thread and sends it back; shard 0 merges and renders
//! ([`render`]). The cost on the request path is a few `Cell` adds, one hash lookup per
//! partition per request and two clock reads per request; `metrics.collect=false` turns those
//! off (perf/2026-12-03-metrics-overhead.md has the measured difference).
//!
//! Arrows: `probe` uses nothing above `protocol`; `shard` and `server` own probes; `snapshot`
//! and `http` read the shard.

pub mod http;
pub mod probe;
pub mod render;
pub mod snapshot;

pub use probe::ShardProbe;
