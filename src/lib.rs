//! Odradek: a Kafka-compatible streaming broker, thread-per-core on io_uring.
//!
//! Layout (arrows point down; a module only uses those listed after it):
//! - [`server`]: listener, connections (pipelining, in-order replies), one handler per Kafka API;
//!   [`coordinator`] drives the group machines on the shard owning each group's offsets partition.
//! - [`shard`]: pinned executors, the shard table, the inter-shard mailbox, per-shard state.
//! - [`metadata`]: topics and partitions, the controller (single writer on shard 0) and the
//!   immutable versioned snapshot every shard reads.
//! - [`group`]: classic consumer-group coordinator as a pure state machine (no I/O).
//! - [`consumer_group`]: KIP-848 consumer-group coordinator as a pure state machine (no I/O;
//!   not served yet).
//! - [`storage`]: per-partition segmented log on O_DIRECT files, group commit, recovery, cache.
//! - [`io`]: the only place that names glommio files; persisted-state files.
//! - [`protocol`]: the Kafka wire codec and RecordBatch v2; pure, no I/O.
//! - [`cli`]: the command line's client commands (topics, produce, consume, groups, configs,
//!   cluster); a Kafka client on [`protocol`] only, never the broker's internals.
//! - [`config`]: broker configuration (Kafka key names); [`topic_config`]: topic configs, their
//!   defaults, validation and precedence.

pub mod allocator;
pub mod cli;
pub mod config;
pub mod consumer_group;
pub mod coordinator;
pub mod crash_points;
pub mod group;
pub mod io;
pub mod logging;
pub mod memory;
pub mod metadata;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod storage;
pub mod topic_config;
pub mod txn;
