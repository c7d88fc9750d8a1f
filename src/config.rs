//! Broker configuration: a Java-style properties file with Kafka's key names, plus our own keys
//! (`cores`, `cache.bytes`, ...), then `--override KEY=VALUE` and the CLI shortcuts on top.
//!
//! Invariant: a [`BrokerConfig`] that exists is valid. Unknown keys and invalid values are refused
//! when the configuration is built, with a message naming the key, so a typo never starts a broker
//! with a silently different setting. Read once at start; every shard gets an `Arc` of it.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected `key=value`, found {text:?}")]
    Syntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("unknown configuration key `{0}`")]
    UnknownKey(String),
    #[error("invalid value {value:?} for `{key}`: {why}")]
    InvalidValue {
        key: String,
        value: String,
        why: String,
    },
    #[error("override {0:?} is not of the form KEY=VALUE")]
    BadOverride(String),
}

/// Which cores the shards run on: shard `i` is pinned to `cpus[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreSet {
    pub cpus: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Address every shard binds (SO_REUSEPORT) and the address advertised in Metadata.
    pub listen: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub data_dir: PathBuf,
    pub node_id: i32,
    pub cores: CoreSet,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub delete_topic_enable: bool,
    pub log_segment_bytes: u64,
    pub log_roll_ms: i64,
    pub log_index_interval_bytes: u32,
    pub log_preallocate_bytes: u64,
    /// `log.journal.bytes`: size of each shard's journal file (0: no journal; every flush
    /// round fdatasyncs each partition's segment file). See `storage::journal`.
    pub log_journal_bytes: u64,
    /// `log.journal.partition.max.bytes`: a partition whose flush adds at most this many bytes
    /// is made durable through the journal; a larger one by an fdatasync of its own file.
    pub log_journal_partition_max_bytes: u64,
    /// `io.file.workers.per.core`: kernel io_uring workers each shard may run at once for file
    /// I/O that cannot finish without blocking (every fdatasync, some appends); 0 keeps the
    /// kernel's limit. See `io::workers`.
    pub io_file_workers_per_core: u32,
    /// `io.buffer.bytes`: memory each shard's executor sets aside at start for the buffers of
    /// its direct file I/O (registered with io_uring when the memlock limit allows). Half of it
    /// bounds the segment, index and journal writes in flight at once (`io::dma::limit_write_buffers`).
    pub io_buffer_bytes: usize,
    pub log_message_timestamp_log_append: bool,
    pub message_max_bytes: usize,
    pub socket_request_max_bytes: usize,
    /// `socket.receive.buffer.bytes` / `socket.send.buffer.bytes` (Kafka's names): SO_RCVBUF and
    /// SO_SNDBUF of the listener, which accepted connections inherit; `None` (-1) leaves the
    /// kernel's autotuning in charge. See `server::listener`.
    pub socket_receive_buffer_bytes: Option<usize>,
    pub socket_send_buffer_bytes: Option<usize>,
    /// Bytes of recent batches each shard keeps in memory for tailing consumers.
    pub cache_bytes_per_shard: usize,
    /// `cache.pretouch`: each shard faults in its cache's worth of heap at start, before it
    /// serves, instead of while the cache first fills under load. See `memory::pretouch_heap`.
    pub cache_pretouch: bool,
    /// Requests one connection may have in flight (read but not yet answered).
    pub connection_inflight_max: usize,
    /// `queued.max.request.bytes` (Kafka's name; per shard here): bytes of requests read and
    /// not yet answered (produce: not yet written) before connections stop being read; `None`
    /// (-1) is unbounded. See
    /// `server::request_budget`.
    pub queued_max_request_bytes: Option<u64>,
    /// Capacity of each inter-shard mailbox channel (messages).
    pub mailbox_capacity: usize,
    /// acks=1 waits for fdatasync too (a single node has no replica to cover a crash).
    pub acks1_durable: bool,
    /// Partitions of `__consumer_offsets`, fixed when the topic is created at first start.
    pub offsets_topic_num_partitions: i32,
    /// Longest metadata string an OffsetCommit may carry (OFFSET_METADATA_TOO_LARGE above).
    pub offset_metadata_max_bytes: usize,
    /// Partitions of `__transaction_state`, fixed when the topic is created at first start.
    pub transaction_state_num_partitions: i32,
    /// `transaction.max.timeout.ms`: the longest transaction timeout a producer may ask for.
    pub transaction_max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: an idle transactional id is forgotten after this.
    pub transactional_id_expiration_ms: u64,
    /// `producer.id.expiration.ms`: a partition forgets the idempotence state (epoch, last
    /// sequences) of a producer with no open transaction whose last batch's timestamp is this
    /// old, so state does not grow with every producer instance ever seen. A producer that
    /// comes back later is accepted whatever its sequence (KIP-360), without the duplicate
    /// check for retries of batches from before it was forgotten.
    pub producer_id_expiration_ms: i64,
    /// `producer.id.expiration.check.interval.ms`: how often each shard looks for expired
    /// producers in its partitions.
    pub producer_id_expiration_check_interval_ms: u64,
    /// Classic consumer-group limits (`group.*` keys).
    pub group: crate::group::GroupConfig,
    /// KIP-848 consumer-group settings (`group.consumer.*` keys).
    pub consumer_group: crate::consumer_group::ConsumerGroupConfig,
    /// `offsets.retention.minutes`, in ms: how long committed offsets of an empty (or
    /// unmanaged) group are kept.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`: how often each shard looks for expired offsets.
    pub offsets_retention_check_interval_ms: u64,
    /// `log.retention.check.interval.ms`: how often each shard applies retention.
    pub log_retention_check_interval_ms: u64,
    /// `log.cleaner.enable`: compaction runs at all.
    pub log_cleaner_enable: bool,
    /// `log.cleaner.backoff.ms`: pause between compaction passes of a shard.
    pub log_cleaner_backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size`: memory for one pass's key map, per shard.
    pub log_cleaner_dedupe_buffer_size: u64,
    /// `log.cleaner.io.max.bytes.per.second`: compaction read+write rate per shard (0 = none).
    pub log_cleaner_io_max_bytes_per_second: u64,
    /// `log.dir.min.free.bytes`: below this much free space in the data directory's
    /// filesystem, produce is refused with KAFKA_STORAGE_ERROR until space returns (0: off).
    pub log_dir_min_free_bytes: u64,
    /// CPU shares of each shard's background work (retention, compaction) against 1000 for
    /// serving requests (`background.shares`).
    pub background_shares: usize,
    /// `metrics.listen`: address of the HTTP endpoint serving `/metrics` (Prometheus text),
    /// `/health` and `/ready`, on shard 0; `None` (empty value) turns it off.
    pub metrics_listen: Option<SocketAddr>,
    /// `metrics.collect`: shards count bytes, records and latencies on the request path (see
    /// [`crate::metrics`]); false leaves those metrics at zero.
    pub metrics_collect: bool,
    /// `connections.max.idle.ms`: a connection with no request in flight and no byte received
    /// for this long (or whose client has not read a response for this long) is closed by the
    /// broker; `None` (-1) keeps idle connections forever.
    pub connections_max_idle: Option<std::time::Duration>,
    /// `max.connections`: client connections the broker serves at once, split evenly over the
    /// shards; a shard at its share stops accepting until one of its connections closes.
    pub max_connections: usize,
    /// `fetch.max.bytes`: the most record bytes one Fetch response carries, whatever the
    /// client asks for (at least one batch still goes, so consumers progress). Bounds the
    /// memory a response pins while a slow client reads it.
    pub fetch_max_bytes: usize,
    /// The keys set explicitly (file and overrides): topic-config defaults resolve through them
    /// (see [`crate::topic_config`]) and DescribeConfigs reports them as static broker configs.
    pub props: BTreeMap<String, String>,
}

/// Every key we accept, with its default. Kafka names first, then Odradek's own.
const KEYS: &[(&str, &str)] = &[
    ("listeners", "PLAINTEXT://127.0.0.1:9092"),
    ("advertised.listeners", ""),
    ("log.dirs", "./odradek-data"),
    ("log.dir", ""),
    ("node.id", "1"),
    ("broker.id", ""),
    ("num.partitions", "1"),
    ("default.replication.factor", "1"),
    ("auto.create.topics.enable", "true"),
    ("delete.topic.enable", "true"),
    ("log.segment.bytes", "1073741824"),
    ("log.roll.ms", ""),
    ("log.roll.hours", "168"),
    ("log.index.interval.bytes", "4096"),
    ("log.message.timestamp.type", "CreateTime"),
    ("offsets.topic.num.partitions", "50"),
    ("offset.metadata.max.bytes", "4096"),
    ("transaction.state.log.num.partitions", "50"),
    ("transaction.max.timeout.ms", "900000"),
    ("transactional.id.expiration.ms", "604800000"),
    ("producer.id.expiration.ms", "86400000"),
    ("producer.id.expiration.check.interval.ms", "600000"),
    ("offsets.retention.minutes", "10080"),
    ("offsets.retention.check.interval.ms", "600000"),
    ("group.initial.rebalance.delay.ms", "3000"),
    ("group.min.session.timeout.ms", "6000"),
    ("group.max.session.timeout.ms", "1800000"),
    ("group.max.size", "1000"),
    ("group.consumer.session.timeout.ms", "45000"),
    ("group.consumer.heartbeat.interval.ms", "5000"),
    ("group.consumer.max.size", "1000"),
    ("group.consumer.assignors", "uniform,range"),
    ("message.max.bytes", "1048588"),
    // Defaults of topic configs (see topic_config): validated like the topic configs.
    ("log.cleanup.policy", "delete"),
    ("log.retention.ms", ""),
    ("log.retention.minutes", ""),
    ("log.retention.hours", "168"),
    ("log.retention.bytes", "-1"),
    ("log.retention.check.interval.ms", "300000"),
    ("log.index.size.max.bytes", "10485760"),
    ("log.message.timestamp.before.max.ms", "9223372036854775807"),
    ("log.message.timestamp.after.max.ms", "9223372036854775807"),
    ("log.cleaner.delete.retention.ms", "86400000"),
    ("log.cleaner.min.compaction.lag.ms", "0"),
    ("log.cleaner.max.compaction.lag.ms", "9223372036854775807"),
    ("log.cleaner.min.cleanable.ratio", "0.5"),
    ("log.flush.interval.messages", "9223372036854775807"),
    ("log.flush.interval.ms", ""),
    ("log.segment.delete.delay.ms", "60000"),
    ("min.insync.replicas", "1"),
    ("compression.type", "producer"),
    ("socket.request.max.bytes", "104857600"),
    ("socket.receive.buffer.bytes", "-1"),
    ("socket.send.buffer.bytes", "-1"),
    ("cores", ""),
    ("cache.bytes", "134217728"),
    ("cache.pretouch", "true"),
    ("log.preallocate.bytes", "16777216"),
    ("log.journal.bytes", "67108864"),
    ("log.journal.partition.max.bytes", "65536"),
    ("io.file.workers.per.core", "64"),
    ("io.buffer.bytes", "67108864"),
    ("connection.inflight.max", "16"),
    ("queued.max.request.bytes", "536870912"),
    ("mailbox.capacity", "1024"),
    ("acks1.durable", "true"),
    ("background.shares", "100"),
    ("log.dir.min.free.bytes", "67108864"),
    ("log.cleaner.enable", "true"),
    ("log.cleaner.backoff.ms", "15000"),
    ("log.cleaner.dedupe.buffer.size", "134217728"),
    // Unlimited in Kafka (its cleaner has its own threads); here compaction shares the core
    // and the disk with produce, so it is capped (perf/2026-12-03-compaction-impact.md).
    ("log.cleaner.io.max.bytes.per.second", "52428800"),
    // The metrics/health HTTP endpoint (empty: off) and the request-path counters behind it.
    ("metrics.listen", "127.0.0.1:9644"),
    ("metrics.collect", "true"),
    // Connection limits, with Kafka's names and defaults (max.connections: unlimited).
    ("connections.max.idle.ms", "600000"),
    ("max.connections", "2147483647"),
    ("fetch.max.bytes", "57671680"),
];

/// Longest `connections.max.idle.ms` taken literally (about 24.8 days); a longer one acts as
/// this, which keeps every deadline computed from it representable.
pub const CONNECTIONS_MAX_IDLE_MS_CAP: u64 = i32::MAX as u64;

/// True if `key` is a broker configuration key we accept.
pub fn is_known_key(key: &str) -> bool {
    KEYS.iter().any(|(k, _)| *k == key)
}

/// Every key we accept with its default (DescribeConfigs on the broker lists them).
pub fn known_keys() -> impl Iterator<Item = (&'static str, &'static str)> {
    KEYS.iter().copied()
}

impl BrokerConfig {
    /// Builds the configuration: defaults, then the file (if any), then overrides in order.
    pub fn load(file: Option<&Path>, overrides: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut props = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            for (k, v) in parse_properties(path, &text)? {
                props.insert(k, v);
            }
        }
        for (k, v) in overrides {
            props.insert(k.clone(), v.clone());
        }
        Self::from_properties(&props)
    }

    pub fn from_properties(props: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        for key in props.keys() {
            if !KEYS.iter().any(|(k, _)| k == key) {
                return Err(ConfigError::UnknownKey(key.clone()));
            }
        }
        for (key, value) in props {
            if !value.trim().is_empty() {
                crate::topic_config::validate_broker_value(key, value)
                    .map_err(|why| invalid(key, value, &why))?;
            }
        }
        let get = |key: &str| -> String {
            props.get(key).cloned().unwrap_or_else(|| {
                KEYS.iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, d)| d.to_string())
                    .unwrap_or_default()
            })
        };

        let listen_text = get("listeners");
        let listen = parse_listener("listeners", &listen_text)?;
        let advertised = get("advertised.listeners");
        let (advertised_host, advertised_port) = if advertised.is_empty() {
            let host = listener_host(&listen_text);
            let host = if host.is_empty() || host == "0.0.0.0" || host == "::" {
                "127.0.0.1".to_string()
            } else {
                host
            };
            (host, listen.port())
        } else {
            let addr = strip_scheme(&advertised);
            let (host, port) = addr.rsplit_once(':').ok_or_else(|| {
                invalid(
                    "advertised.listeners",
                    &advertised,
                    "expected [PLAINTEXT://]host:port",
                )
            })?;
            let port = port
                .parse()
                .map_err(|_| invalid("advertised.listeners", &advertised, "bad port"))?;
            (
                host.trim_matches(|c| c == '[' || c == ']').to_string(),
                port,
            )
        };

        let dir_key = if props.contains_key("log.dir") && !props.contains_key("log.dirs") {
            "log.dir"
        } else {
            "log.dirs"
        };
        let dirs = get(dir_key);
        if dirs.trim().is_empty() {
            return Err(invalid(dir_key, &dirs, "must name a directory"));
        }
        if dirs.contains(',') {
            return Err(invalid(dir_key, &dirs, "one data directory is supported"));
        }
        let data_dir = PathBuf::from(dirs.trim());

        let node_key = if props.contains_key("broker.id") && !props.contains_key("node.id") {
            "broker.id"
        } else {
            "node.id"
        };
        let node_id: i32 = parse_num(node_key, &get(node_key), 0, i32::MAX as i64)? as i32;

        let cores = parse_cores(&get("cores"))?;
        let roll_ms = match props.get("log.roll.ms") {
            Some(v) if !v.is_empty() => parse_num("log.roll.ms", v, 1, i64::MAX)?,
            _ => {
                parse_num(
                    "log.roll.hours",
                    &get("log.roll.hours"),
                    1,
                    i64::MAX / 3_600_000,
                )? * 3_600_000
            }
        };
        let ts_type = get("log.message.timestamp.type");
        let log_append = match ts_type.as_str() {
            "CreateTime" => false,
            "LogAppendTime" => true,
            _ => {
                return Err(invalid(
                    "log.message.timestamp.type",
                    &ts_type,
                    "expected CreateTime or LogAppendTime",
                ))
            }
        };
        let rf = parse_num(
            "default.replication.factor",
            &get("default.replication.factor"),
            1,
            1,
        )?;

        Ok(BrokerConfig {
            listen,
            advertised_host,
            advertised_port,
            data_dir,
            node_id,
            cores,
            num_partitions: parse_num("num.partitions", &get("num.partitions"), 1, 1_000_000)?
                as i32,
            default_replication_factor: rf as i16,
            auto_create_topics_enable: parse_bool(
                "auto.create.topics.enable",
                &get("auto.create.topics.enable"),
            )?,
            delete_topic_enable: parse_bool("delete.topic.enable", &get("delete.topic.enable"))?,
            log_segment_bytes: parse_num(
                "log.segment.bytes",
                &get("log.segment.bytes"),
                14,
                i32::MAX as i64,
            )? as u64,
            log_roll_ms: roll_ms,
            log_index_interval_bytes: parse_num(
                "log.index.interval.bytes",
                &get("log.index.interval.bytes"),
                0,
                i32::MAX as i64,
            )? as u32,
            log_journal_bytes: match parse_num(
                "log.journal.bytes",
                &get("log.journal.bytes"),
                0,
                1 << 40,
            )? as u64
            {
                0 => 0,
                n => n.max(crate::storage::journal::JOURNAL_MIN_BYTES),
            },
            log_journal_partition_max_bytes: parse_num(
                "log.journal.partition.max.bytes",
                &get("log.journal.partition.max.bytes"),
                0,
                1 << 30,
            )? as u64,
            io_file_workers_per_core: parse_num(
                "io.file.workers.per.core",
                &get("io.file.workers.per.core"),
                0,
                4096,
            )? as u32,
            io_buffer_bytes: parse_num(
                "io.buffer.bytes",
                &get("io.buffer.bytes"),
                2 << 20,
                1 << 36,
            )? as usize,
            log_preallocate_bytes: parse_num(
                "log.preallocate.bytes",
                &get("log.preallocate.bytes"),
                0,
                1 << 40,
            )? as u64,
            log_message_timestamp_log_append: log_append,
            message_max_bytes: parse_num(
                "message.max.bytes",
                &get("message.max.bytes"),
                0,
                i32::MAX as i64,
            )? as usize,
            socket_receive_buffer_bytes: parse_socket_buffer(
                "socket.receive.buffer.bytes",
                &get("socket.receive.buffer.bytes"),
            )?,
            socket_send_buffer_bytes: parse_socket_buffer(
                "socket.send.buffer.bytes",
                &get("socket.send.buffer.bytes"),
            )?,
            socket_request_max_bytes: parse_num(
                "socket.request.max.bytes",
                &get("socket.request.max.bytes"),
                1024,
                i32::MAX as i64,
            )? as usize,
            cache_bytes_per_shard: parse_num("cache.bytes", &get("cache.bytes"), 0, 1 << 40)?
                as usize,
            cache_pretouch: parse_bool("cache.pretouch", &get("cache.pretouch"))?,
            connection_inflight_max: parse_num(
                "connection.inflight.max",
                &get("connection.inflight.max"),
                1,
                1024,
            )? as usize,
            queued_max_request_bytes: match parse_num(
                "queued.max.request.bytes",
                &get("queued.max.request.bytes"),
                -1,
                1 << 40,
            )? {
                -1 => None,
                n if n < 1 << 20 => {
                    return Err(invalid(
                        "queued.max.request.bytes",
                        &get("queued.max.request.bytes"),
                        "must be -1 (unbounded) or at least 1048576",
                    ))
                }
                n => Some(n as u64),
            },
            mailbox_capacity: parse_num("mailbox.capacity", &get("mailbox.capacity"), 1, 1 << 20)?
                as usize,
            acks1_durable: parse_bool("acks1.durable", &get("acks1.durable"))?,
            offsets_topic_num_partitions: parse_num(
                "offsets.topic.num.partitions",
                &get("offsets.topic.num.partitions"),
                1,
                1000,
            )? as i32,
            offset_metadata_max_bytes: parse_num(
                "offset.metadata.max.bytes",
                &get("offset.metadata.max.bytes"),
                0,
                i32::MAX as i64,
            )? as usize,
            transaction_state_num_partitions: parse_num(
                "transaction.state.log.num.partitions",
                &get("transaction.state.log.num.partitions"),
                1,
                1000,
            )? as i32,
            transaction_max_timeout_ms: parse_num(
                "transaction.max.timeout.ms",
                &get("transaction.max.timeout.ms"),
                1,
                i32::MAX as i64,
            )? as i32,
            transactional_id_expiration_ms: parse_num(
                "transactional.id.expiration.ms",
                &get("transactional.id.expiration.ms"),
                1,
                i32::MAX as i64,
            )? as u64,
            // Both ints in Kafka, at least 1.
            producer_id_expiration_ms: parse_num(
                "producer.id.expiration.ms",
                &get("producer.id.expiration.ms"),
                1,
                i32::MAX as i64,
            )?,
            producer_id_expiration_check_interval_ms: parse_num(
                "producer.id.expiration.check.interval.ms",
                &get("producer.id.expiration.check.interval.ms"),
                1,
                i32::MAX as i64,
            )? as u64,
            group: crate::group::GroupConfig {
                initial_rebalance_delay_ms: parse_num(
                    "group.initial.rebalance.delay.ms",
                    &get("group.initial.rebalance.delay.ms"),
                    0,
                    i32::MAX as i64,
                )? as u64,
                session_timeout_min_ms: parse_num(
                    "group.min.session.timeout.ms",
                    &get("group.min.session.timeout.ms"),
                    0,
                    i32::MAX as i64,
                )? as u64,
                session_timeout_max_ms: parse_num(
                    "group.max.session.timeout.ms",
                    &get("group.max.session.timeout.ms"),
                    0,
                    i32::MAX as i64,
                )? as u64,
                max_size: parse_num("group.max.size", &get("group.max.size"), 1, 100_000)? as usize,
                ..crate::group::GroupConfig::default()
            },
            consumer_group: crate::consumer_group::ConsumerGroupConfig {
                session_timeout_ms: parse_num(
                    "group.consumer.session.timeout.ms",
                    &get("group.consumer.session.timeout.ms"),
                    1,
                    i32::MAX as i64,
                )? as u64,
                heartbeat_interval_ms: parse_num(
                    "group.consumer.heartbeat.interval.ms",
                    &get("group.consumer.heartbeat.interval.ms"),
                    1,
                    i32::MAX as i64,
                )? as u64,
                max_size: parse_num(
                    "group.consumer.max.size",
                    &get("group.consumer.max.size"),
                    1,
                    100_000,
                )? as usize,
                default_assignor: parse_assignors(
                    "group.consumer.assignors",
                    &get("group.consumer.assignors"),
                )?,
                ..crate::consumer_group::ConsumerGroupConfig::default()
            },
            offsets_retention_ms: parse_num(
                "offsets.retention.minutes",
                &get("offsets.retention.minutes"),
                1,
                i32::MAX as i64,
            )? * 60_000,
            offsets_retention_check_interval_ms: parse_num(
                "offsets.retention.check.interval.ms",
                &get("offsets.retention.check.interval.ms"),
                1,
                i32::MAX as i64,
            )? as u64,
            log_retention_check_interval_ms: parse_num(
                "log.retention.check.interval.ms",
                &get("log.retention.check.interval.ms"),
                1,
                i64::MAX,
            )? as u64,
            log_dir_min_free_bytes: parse_num(
                "log.dir.min.free.bytes",
                &get("log.dir.min.free.bytes"),
                0,
                i64::MAX,
            )? as u64,
            log_cleaner_enable: parse_bool("log.cleaner.enable", &get("log.cleaner.enable"))?,
            log_cleaner_backoff_ms: parse_num(
                "log.cleaner.backoff.ms",
                &get("log.cleaner.backoff.ms"),
                1,
                i64::MAX,
            )? as u64,
            log_cleaner_dedupe_buffer_size: parse_num(
                "log.cleaner.dedupe.buffer.size",
                &get("log.cleaner.dedupe.buffer.size"),
                1 << 10,
                1 << 40,
            )? as u64,
            log_cleaner_io_max_bytes_per_second: parse_num(
                "log.cleaner.io.max.bytes.per.second",
                &get("log.cleaner.io.max.bytes.per.second"),
                0,
                i64::MAX,
            )? as u64,
            background_shares: parse_num("background.shares", &get("background.shares"), 1, 1000)?
                as usize,
            metrics_listen: parse_metrics_listen(&get("metrics.listen"))?,
            metrics_collect: parse_bool("metrics.collect", &get("metrics.collect"))?,
            connections_max_idle: parse_idle_ms(&get("connections.max.idle.ms"))?,
            max_connections: parse_num(
                "max.connections",
                &get("max.connections"),
                1,
                i32::MAX as i64,
            )? as usize,
            fetch_max_bytes: parse_num(
                "fetch.max.bytes",
                &get("fetch.max.bytes"),
                1024,
                i32::MAX as i64,
            )? as usize,
            props: props.clone(),
        })
    }
}

/// `connections.max.idle.ms`: -1 (any negative, as Kafka) turns idle closing off, 0 is refused
/// (every connection would be closed at once), longer than the cap acts as the cap.
fn parse_idle_ms(text: &str) -> Result<Option<std::time::Duration>, ConfigError> {
    let key = "connections.max.idle.ms";
    let ms = parse_num(key, text, i64::MIN, i64::MAX)?;
    if ms == 0 {
        return Err(invalid(
            key,
            text,
            "must be positive, or -1 to keep idle connections",
        ));
    }
    Ok((ms > 0)
        .then(|| std::time::Duration::from_millis((ms as u64).min(CONNECTIONS_MAX_IDLE_MS_CAP))))
}

/// Parses a Java properties file: `key=value`, `key: value` or `key value`; `#`/`!` comments;
/// a trailing backslash continues the line.
pub fn parse_properties(path: &Path, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut start_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if pending.is_empty() {
            start_line = i + 1;
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            pending.push_str(stripped);
            continue;
        }
        pending.push_str(line);
        let logical = std::mem::take(&mut pending);
        // The key ends at the first '=', ':' or whitespace; after whitespace, one '=' or ':'
        // may still follow before the value (Java's rules, without escapes).
        let Some(pos) = logical.find(|c: char| c == '=' || c == ':' || c.is_whitespace()) else {
            return Err(ConfigError::Syntax {
                path: path.to_path_buf(),
                line: start_line,
                text: logical,
            });
        };
        let key = logical[..pos].to_string();
        let mut rest = logical[pos..].trim_start();
        if !logical[pos..].starts_with(['=', ':']) {
            rest = rest.strip_prefix(['=', ':']).unwrap_or(rest);
        } else {
            rest = &rest[1..];
        }
        let value = rest.trim().to_string();
        if key.is_empty() {
            return Err(ConfigError::Syntax {
                path: path.to_path_buf(),
                line: start_line,
                text: logical,
            });
        }
        out.push((key, value));
    }
    Ok(out)
}

/// Splits `KEY=VALUE` from the command line.
pub fn parse_override(text: &str) -> Result<(String, String), ConfigError> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(ConfigError::BadOverride(text.to_string())),
    }
}

fn invalid(key: &str, value: &str, why: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.into(),
        value: value.into(),
        why: why.into(),
    }
}

/// A socket buffer size: -1 (the kernel's default and autotuning) or a size in bytes.
fn parse_socket_buffer(key: &str, value: &str) -> Result<Option<usize>, ConfigError> {
    match parse_num(key, value, -1, i32::MAX as i64)? {
        -1 => Ok(None),
        n if n < 1 => Err(invalid(
            key,
            value,
            "must be -1 (the OS default) or a size in bytes",
        )),
        n => Ok(Some(n as usize)),
    }
}

fn parse_num(key: &str, value: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
    let n: i64 = value
        .trim()
        .parse()
        .map_err(|_| invalid(key, value, "expected an integer"))?;
    if n < min || n > max {
        return Err(invalid(
            key,
            value,
            &format!("must be between {min} and {max}"),
        ));
    }
    Ok(n)
}

/// `group.consumer.assignors`: a list of server assignors, by short name (`uniform`, `range`) or
/// Kafka's class name; the first is the default of groups whose members name none.
fn parse_assignors(
    key: &str,
    value: &str,
) -> Result<crate::consumer_group::ServerAssignor, ConfigError> {
    let mut first = None;
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let short = name.rsplit('.').next().unwrap_or(name);
        let short = short.strip_suffix("Assignor").unwrap_or(short);
        let assignor =
            crate::consumer_group::ServerAssignor::from_name(&short.to_ascii_lowercase())
                .ok_or_else(|| {
                    invalid(
                        key,
                        value,
                        &format!("unknown assignor {name:?} (uniform, range)"),
                    )
                })?;
        first.get_or_insert(assignor);
    }
    first.ok_or_else(|| invalid(key, value, "needs at least one assignor (uniform, range)"))
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "expected true or false")),
    }
}

fn strip_scheme(text: &str) -> &str {
    let first = text.split(',').next().unwrap_or("").trim();
    first
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(first)
}

fn listener_host(text: &str) -> String {
    let addr = strip_scheme(text);
    addr.rsplit_once(':')
        .map(|(h, _)| h.trim_matches(|c| c == '[' || c == ']').to_string())
        .unwrap_or_default()
}

fn parse_listener(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    if text.split(',').count() > 1 {
        return Err(invalid(key, text, "one listener is supported"));
    }
    let addr = strip_scheme(text);
    let addr = match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    };
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| invalid(key, text, "expected [PLAINTEXT://]host:port"))
}

/// `metrics.listen`: `host:port` of the metrics endpoint, or empty for none.
fn parse_metrics_listen(text: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .map(Some)
        .ok_or_else(|| {
            invalid(
                "metrics.listen",
                text,
                "expected host:port, or nothing to turn the endpoint off",
            )
        })
}

/// `cores`: empty = every CPU this process may run on; `N` = the first N of those;
/// `0,2,4-6` = exactly those CPUs.
pub fn parse_cores(text: &str) -> Result<CoreSet, ConfigError> {
    let allowed = allowed_cpus();
    let text = text.trim();
    if text.is_empty() {
        return Ok(CoreSet { cpus: allowed });
    }
    if !text.contains([',', '-']) {
        let n = parse_num("cores", text, 1, 4096)? as usize;
        if n > allowed.len() {
            return Err(invalid(
                "cores",
                text,
                &format!("only {} CPUs are available to this process", allowed.len()),
            ));
        }
        return Ok(CoreSet {
            cpus: allowed[..n].to_vec(),
        });
    }
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let lo = parse_num("cores", lo, 0, 4095)? as usize;
        let hi = parse_num("cores", hi, 0, 4095)? as usize;
        if lo > hi {
            return Err(invalid("cores", text, "range start is after its end"));
        }
        for cpu in lo..=hi {
            if !allowed.contains(&cpu) {
                return Err(invalid(
                    "cores",
                    text,
                    &format!("CPU {cpu} is not available"),
                ));
            }
            if cpus.contains(&cpu) {
                return Err(invalid(
                    "cores",
                    text,
                    &format!("CPU {cpu} is listed twice"),
                ));
            }
            cpus.push(cpu);
        }
    }
    Ok(CoreSet { cpus })
}

/// The CPUs in this process's affinity mask (respects taskset/cgroups).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most size_of::<cpu_set_t>().
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    (0..std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_kafkas() {
        let c = BrokerConfig::from_properties(&BTreeMap::new()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9092".parse::<SocketAddr>().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("./odradek-data"));
        assert_eq!(c.num_partitions, 1);
        assert!(c.auto_create_topics_enable);
        assert_eq!(c.message_max_bytes, 1048588);
        assert_eq!(c.socket_request_max_bytes, 104857600);
        assert_eq!(c.log_segment_bytes, 1 << 30);
        assert_eq!(c.log_roll_ms, 168 * 3_600_000);
        assert_eq!(c.producer_id_expiration_ms, 86_400_000);
        assert_eq!(c.producer_id_expiration_check_interval_ms, 600_000);
        assert!(!c.cores.cpus.is_empty());
        assert_eq!(c.io_file_workers_per_core, 64);
        assert_eq!(c.io_buffer_bytes, 64 << 20);
        assert_eq!(c.queued_max_request_bytes, Some(512 << 20));
        let unbounded =
            BrokerConfig::from_properties(&props(&[("queued.max.request.bytes", "-1")])).unwrap();
        assert_eq!(unbounded.queued_max_request_bytes, None);
        let c = BrokerConfig::from_properties(&props(&[
            ("producer.id.expiration.ms", "2000"),
            ("producer.id.expiration.check.interval.ms", "200"),
        ]))
        .unwrap();
        assert_eq!(
            (
                c.producer_id_expiration_ms,
                c.producer_id_expiration_check_interval_ms
            ),
            (2000, 200)
        );
    }

    #[test]
    fn socket_buffers_default_to_the_kernel_and_take_kafka_values() {
        let c = BrokerConfig::from_properties(&props(&[])).unwrap();
        assert_eq!(
            (c.socket_receive_buffer_bytes, c.socket_send_buffer_bytes),
            (None, None)
        );
        // The lines of Kafka's own server.properties.
        let c = BrokerConfig::from_properties(&props(&[
            ("socket.receive.buffer.bytes", "102400"),
            ("socket.send.buffer.bytes", "102400"),
        ]))
        .unwrap();
        assert_eq!(
            (c.socket_receive_buffer_bytes, c.socket_send_buffer_bytes),
            (Some(102400), Some(102400))
        );
        for (k, v) in [
            ("socket.receive.buffer.bytes", "0"),
            ("socket.send.buffer.bytes", "-2"),
            ("socket.send.buffer.bytes", "4294967296"),
        ] {
            let err = BrokerConfig::from_properties(&props(&[(k, v)])).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = BrokerConfig::from_properties(&props(&[("num.partition", "3")])).unwrap_err();
        assert!(err.to_string().contains("num.partition"), "{err}");
    }

    #[test]
    fn invalid_value_is_named() {
        for (k, v) in [
            ("num.partitions", "zero"),
            ("num.partitions", "0"),
            ("auto.create.topics.enable", "yes"),
            ("listeners", "PLAINTEXT://nohost"),
            ("log.message.timestamp.type", "Whenever"),
            ("cores", "0-99999"),
            ("producer.id.expiration.ms", "0"),
            ("producer.id.expiration.ms", "-1"),
            ("producer.id.expiration.ms", "2147483648"),
            ("producer.id.expiration.check.interval.ms", "0"),
            ("io.file.workers.per.core", "-1"),
            ("io.file.workers.per.core", "4097"),
            ("io.buffer.bytes", "1048576"),
            ("io.buffer.bytes", "68719476737"),
            ("queued.max.request.bytes", "0"),
            ("queued.max.request.bytes", "-2"),
            ("queued.max.request.bytes", "1048575"),
        ] {
            let err = BrokerConfig::from_properties(&props(&[(k, v)])).unwrap_err();
            assert!(err.to_string().contains(k), "{k}={v}: {err}");
        }
    }

    #[test]
    fn properties_file_syntax() {
        let text = "# comment\n! also\nnum.partitions = 6\nnode.id 7\nlog.dirs: /tmp/x\nlisteners PLAINTEXT://0.0.0.0:19092\nlog.segment.bytes=10\\\n24\n";
        let kv = parse_properties(Path::new("f"), text).unwrap();
        assert_eq!(
            kv,
            vec![
                ("num.partitions".into(), "6".into()),
                ("node.id".into(), "7".into()),
                ("log.dirs".into(), "/tmp/x".into()),
                ("listeners".into(), "PLAINTEXT://0.0.0.0:19092".into()),
                ("log.segment.bytes".into(), "1024".into()),
            ]
        );
        let c = BrokerConfig::from_properties(&kv.into_iter().collect()).unwrap();
        assert_eq!(c.listen.port(), 19092);
        assert_eq!(c.advertised_host, "127.0.0.1");
        assert_eq!(c.num_partitions, 6);
    }

    #[test]
    fn overrides_win_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.properties");
        std::fs::write(&path, "num.partitions=3\n").unwrap();
        let c = BrokerConfig::load(Some(&path), &[parse_override("num.partitions=7").unwrap()])
            .unwrap();
        assert_eq!(c.num_partitions, 7);
        assert!(parse_override("novalue").is_err());
    }

    #[test]
    fn metrics_keys() {
        let c = BrokerConfig::from_properties(&BTreeMap::new()).unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9644".parse().unwrap()));
        assert!(c.metrics_collect);
        let c = BrokerConfig::from_properties(&props(&[
            ("metrics.listen", ""),
            ("metrics.collect", "false"),
        ]))
        .unwrap();
        assert_eq!(c.metrics_listen, None);
        assert!(!c.metrics_collect);
        for (k, v) in [
            ("metrics.listen", "nohost"),
            ("metrics.collect", "sometimes"),
        ] {
            let err = BrokerConfig::from_properties(&props(&[(k, v)])).unwrap_err();
            assert!(err.to_string().contains(k), "{k}={v}: {err}");
        }
    }

    #[test]
    fn cores_forms() {
        let all = allowed_cpus();
        assert_eq!(parse_cores("1").unwrap().cpus, vec![all[0]]);
        assert_eq!(
            parse_cores(&format!("{}-{}", all[0], all[0])).unwrap().cpus,
            vec![all[0]]
        );
        assert!(
            parse_cores("0").is_err(),
            "a single number is a count and must be >= 1"
        );
        assert!(parse_cores("0,0").is_err());
        assert!(parse_cores("3-1").is_err());
    }

    #[test]
    fn connection_limits() {
        use std::time::Duration;
        let c = BrokerConfig::from_properties(&BTreeMap::new()).unwrap();
        assert_eq!(c.connections_max_idle, Some(Duration::from_secs(600)));
        assert_eq!(c.max_connections, i32::MAX as usize);
        assert_eq!(c.fetch_max_bytes, 57671680);
        let c = BrokerConfig::from_properties(&props(&[
            ("connections.max.idle.ms", "2000"),
            ("max.connections", "100"),
        ]))
        .unwrap();
        assert_eq!(c.connections_max_idle, Some(Duration::from_secs(2)));
        assert_eq!(c.max_connections, 100);
        let off = BrokerConfig::from_properties(&props(&[("connections.max.idle.ms", "-1")]));
        assert_eq!(off.unwrap().connections_max_idle, None);
        let huge = props(&[("connections.max.idle.ms", &i64::MAX.to_string())]);
        assert_eq!(
            BrokerConfig::from_properties(&huge)
                .unwrap()
                .connections_max_idle,
            Some(Duration::from_millis(CONNECTIONS_MAX_IDLE_MS_CAP))
        );
        for (k, v) in [
            ("connections.max.idle.ms", "0"),
            ("connections.max.idle.ms", "soon"),
            ("max.connections", "0"),
            ("max.connections", "-1"),
            ("fetch.max.bytes", "1023"),
        ] {
            let err = BrokerConfig::from_properties(&props(&[(k, v)])).unwrap_err();
            assert!(err.to_string().contains(k), "{k}={v}: {err}");
        }
    }
}
