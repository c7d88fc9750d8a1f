//! Topic configs: Kafka's names, defaults and validation, and how a topic's effective value is
//! found.
//!
//! A topic config's value comes from the first of these that sets it (Kafka's precedence, and
//! the `source` DescribeConfigs reports):
//! 1. the topic's own override (`TOPIC_CONFIG`), stored in the metadata image;
//! 2. a dynamic broker config for this broker (`DYNAMIC_BROKER_CONFIG`), then the cluster-wide
//!    dynamic default (`DYNAMIC_DEFAULT_BROKER_CONFIG`), both under the broker synonym
//!    (`log.retention.ms`, ...) and stored in the metadata image;
//! 3. `server.properties` / `--override` (`STATIC_BROKER_CONFIG`), also under the synonym;
//! 4. Kafka's default (`DEFAULT_CONFIG`).
//!
//! Some synonyms count in another unit (`log.retention.hours`): [`BrokerSynonym::scale`]
//! converts. Everything stored was validated first, so resolution never fails; a value that
//! still does not parse (hand-edited state) falls back to the default.

use std::collections::BTreeMap;

/// DescribeConfigs `config_source` values.
pub mod source {
    pub const TOPIC: i8 = 1;
    pub const DYNAMIC_BROKER: i8 = 2;
    pub const DYNAMIC_DEFAULT_BROKER: i8 = 3;
    pub const STATIC_BROKER: i8 = 4;
    pub const DEFAULT: i8 = 5;
}

/// DescribeConfigs `config_type` values (v3+).
pub mod config_type {
    pub const BOOLEAN: i8 = 1;
    pub const STRING: i8 = 2;
    pub const INT: i8 = 3;
    pub const LONG: i8 = 5;
    pub const DOUBLE: i8 = 6;
    pub const LIST: i8 = 7;
}

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Int {
        min: i64,
    },
    Long {
        min: i64,
    },
    Double {
        min: f64,
        max: f64,
    },
    /// One of these words.
    Enum(&'static [&'static str]),
    /// A non-empty comma-separated list of these words.
    List(&'static [&'static str]),
}

/// A broker key that sets a topic config's default; its value times `scale` is in the topic
/// config's unit.
#[derive(Debug, Clone, Copy)]
pub struct BrokerSynonym {
    pub key: &'static str,
    pub scale: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct ConfigDef {
    pub name: &'static str,
    /// Broker synonyms, highest precedence first.
    pub broker: &'static [BrokerSynonym],
    pub default: &'static str,
    pub kind: Kind,
    pub doc: &'static str,
}

impl Kind {
    pub fn config_type(&self) -> i8 {
        match self {
            Kind::Int { .. } => config_type::INT,
            Kind::Long { .. } => config_type::LONG,
            Kind::Double { .. } => config_type::DOUBLE,
            Kind::Enum(_) => config_type::STRING,
            Kind::List(_) => config_type::LIST,
        }
    }

    /// Checks `value`; the error says what is wrong.
    pub fn validate(&self, value: &str) -> Result<(), String> {
        let value = value.trim();
        match *self {
            Kind::Int { min } | Kind::Long { min } => {
                let max = match self {
                    Kind::Int { .. } => i32::MAX as i64,
                    _ => i64::MAX,
                };
                let v: i64 = value
                    .parse()
                    .map_err(|_| format!("{value:?} is not a whole number"))?;
                if v < min || v > max {
                    return Err(format!("{v} is not between {min} and {max}"));
                }
            }
            Kind::Double { min, max } => {
                let v: f64 = value
                    .parse()
                    .map_err(|_| format!("{value:?} is not a number"))?;
                if !(min..=max).contains(&v) {
                    return Err(format!("{v} is not between {min} and {max}"));
                }
            }
            Kind::Enum(words) => {
                if !words.contains(&value) {
                    return Err(format!("{value:?} is not one of {}", words.join(", ")));
                }
            }
            Kind::List(words) => {
                let items: Vec<&str> = value.split(',').map(str::trim).collect();
                if items.iter().any(|i| !words.contains(i)) {
                    return Err(format!("{value:?} is not a list of {}", words.join(", ")));
                }
            }
        }
        Ok(())
    }
}

impl ConfigDef {
    pub fn config_type(&self) -> i8 {
        self.kind.config_type()
    }

    /// Checks `value` (in the topic config's unit); the error says what is wrong.
    pub fn validate(&self, value: &str) -> Result<(), String> {
        self.kind.validate(value)
    }
}

const fn syn(key: &'static str) -> BrokerSynonym {
    BrokerSynonym { key, scale: 1 }
}

const LONG_MAX: &str = "9223372036854775807";
pub const COMPRESSION_TYPES: &[&str] =
    &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

/// Every topic config we serve.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        broker: &[syn("log.cleanup.policy")],
        default: "delete",
        kind: Kind::List(&["delete", "compact"]),
        doc: "delete: old segments go by retention.ms/retention.bytes; compact: keep the latest value per key",
    },
    ConfigDef {
        name: "compression.type",
        broker: &[syn("compression.type")],
        default: "producer",
        kind: Kind::Enum(COMPRESSION_TYPES),
        doc: "producer keeps batches as sent; any other codec makes the broker recompress",
    },
    ConfigDef {
        name: "delete.retention.ms",
        broker: &[syn("log.cleaner.delete.retention.ms")],
        default: "86400000",
        kind: Kind::Long { min: 0 },
        doc: "how long tombstones stay readable in a compacted topic",
    },
    ConfigDef {
        name: "file.delete.delay.ms",
        broker: &[syn("log.segment.delete.delay.ms")],
        default: "60000",
        kind: Kind::Long { min: 0 },
        // Kafka renames a deleted segment and removes it later so reads in flight can finish.
        // Here a read holds its segment's open file, which outlives the unlink: segments go at
        // once and this value is kept and described, not waited for.
        doc: "accepted for compatibility: segments are removed at once (reads in flight keep their open file)",
    },
    ConfigDef {
        name: "flush.messages",
        broker: &[syn("log.flush.interval.messages")],
        default: LONG_MAX,
        kind: Kind::Long { min: 1 },
        doc: "accepted for compatibility: acknowledged writes are always fdatasync'd",
    },
    ConfigDef {
        name: "flush.ms",
        broker: &[syn("log.flush.interval.ms")],
        default: LONG_MAX,
        kind: Kind::Long { min: 0 },
        doc: "accepted for compatibility: acknowledged writes are always fdatasync'd",
    },
    ConfigDef {
        name: "index.interval.bytes",
        broker: &[syn("log.index.interval.bytes")],
        default: "4096",
        kind: Kind::Int { min: 0 },
        doc: "bytes appended between two offset-index entries",
    },
    ConfigDef {
        name: "max.compaction.lag.ms",
        broker: &[syn("log.cleaner.max.compaction.lag.ms")],
        default: LONG_MAX,
        kind: Kind::Long { min: 1 },
        doc: "longest a record may stay uncompacted",
    },
    ConfigDef {
        name: "max.message.bytes",
        broker: &[syn("message.max.bytes")],
        default: "1048588",
        kind: Kind::Int { min: 0 },
        doc: "largest record batch accepted",
    },
    ConfigDef {
        name: "message.timestamp.after.max.ms",
        broker: &[syn("log.message.timestamp.after.max.ms")],
        default: LONG_MAX,
        kind: Kind::Long { min: 0 },
        doc: "CreateTime: how far ahead of the broker's clock a timestamp may be",
    },
    ConfigDef {
        name: "message.timestamp.before.max.ms",
        broker: &[syn("log.message.timestamp.before.max.ms")],
        default: LONG_MAX,
        kind: Kind::Long { min: 0 },
        doc: "CreateTime: how far behind the broker's clock a timestamp may be",
    },
    ConfigDef {
        name: "message.timestamp.type",
        broker: &[syn("log.message.timestamp.type")],
        default: "CreateTime",
        kind: Kind::Enum(&["CreateTime", "LogAppendTime"]),
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's",
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        broker: &[syn("log.cleaner.min.cleanable.ratio")],
        default: "0.5",
        kind: Kind::Double { min: 0.0, max: 1.0 },
        doc: "compaction starts when this share of the log is uncompacted",
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        broker: &[syn("log.cleaner.min.compaction.lag.ms")],
        default: "0",
        kind: Kind::Long { min: 0 },
        doc: "records younger than this are never compacted",
    },
    ConfigDef {
        name: "min.insync.replicas",
        broker: &[syn("min.insync.replicas")],
        default: "1",
        kind: Kind::Int { min: 1 },
        doc: "acks=all needs this many in-sync replicas (a single node has one)",
    },
    ConfigDef {
        name: "retention.bytes",
        broker: &[syn("log.retention.bytes")],
        default: "-1",
        kind: Kind::Long { min: -1 },
        doc: "per partition: oldest segments are deleted beyond this size (-1: no limit)",
    },
    ConfigDef {
        name: "retention.ms",
        broker: &[
            syn("log.retention.ms"),
            BrokerSynonym {
                key: "log.retention.minutes",
                scale: 60_000,
            },
            BrokerSynonym {
                key: "log.retention.hours",
                scale: 3_600_000,
            },
        ],
        default: "604800000",
        kind: Kind::Long { min: -1 },
        doc: "segments whose newest record is older than this are deleted (-1: forever)",
    },
    ConfigDef {
        name: "segment.bytes",
        broker: &[syn("log.segment.bytes")],
        default: "1073741824",
        kind: Kind::Int { min: 14 },
        doc: "size at which a new segment starts",
    },
    ConfigDef {
        name: "segment.index.bytes",
        broker: &[syn("log.index.size.max.bytes")],
        default: "10485760",
        kind: Kind::Int { min: 4 },
        doc: "largest offset index of a segment",
    },
    ConfigDef {
        name: "segment.ms",
        broker: &[
            syn("log.roll.ms"),
            BrokerSynonym {
                key: "log.roll.hours",
                scale: 3_600_000,
            },
        ],
        default: "604800000",
        kind: Kind::Long { min: 1 },
        doc: "age at which a new segment starts",
    },
];

pub fn def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The topic config a broker key sets, with the key's scale.
pub fn def_for_broker_key(key: &str) -> Option<(&'static ConfigDef, i64)> {
    TOPIC_CONFIGS
        .iter()
        .find_map(|d| d.broker.iter().find(|s| s.key == key).map(|s| (d, s.scale)))
}

/// A broker config that sets no topic config's default but still changes without a restart
/// (Kafka's cluster-wide dynamic update mode): set with AlterConfigs on BROKER "" (every
/// broker) or on this broker's id, stored in the metadata image like the topic-config
/// defaults, applied by each shard when it installs a new image. Its static value and default
/// are the ones `crate::config` parses.
#[derive(Debug, Clone, Copy)]
pub struct DynamicBrokerDef {
    pub key: &'static str,
    pub kind: Kind,
    pub doc: &'static str,
}

/// Every broker-only config that changes without a restart.
pub const DYNAMIC_BROKER_CONFIGS: &[DynamicBrokerDef] = &[DynamicBrokerDef {
    key: "log.cleaner.io.max.bytes.per.second",
    kind: Kind::Long { min: 0 },
    doc: "most bytes compaction reads per second per core (0: no limit); below it the rate adapts to the produce path's fdatasync latency",
}];

pub fn dynamic_broker_def(key: &str) -> Option<&'static DynamicBrokerDef> {
    DYNAMIC_BROKER_CONFIGS.iter().find(|d| d.key == key)
}

/// Whether AlterConfigs may change broker key `key`: a topic config's default, or one of
/// [`DYNAMIC_BROKER_CONFIGS`].
pub fn is_dynamic_broker_key(key: &str) -> bool {
    def_for_broker_key(key).is_some() || dynamic_broker_def(key).is_some()
}

/// DescribeConfigs' type and documentation of a dynamic broker key; `None` for read-only keys.
pub fn dynamic_broker_type_doc(key: &str) -> Option<(i8, &'static str)> {
    match (def_for_broker_key(key), dynamic_broker_def(key)) {
        (Some((d, _)), _) => Some((d.config_type(), d.doc)),
        (None, Some(d)) => Some((d.kind.config_type(), d.doc)),
        (None, None) => None,
    }
}

/// The dynamic value of a broker-only key (this broker's, else the cluster default), if one is
/// set and valid; the caller falls back to its static value.
pub fn dynamic_broker_value<'a>(key: &str, broker: BrokerLayers<'a>) -> Option<&'a str> {
    let def = dynamic_broker_def(key)?;
    [broker.dynamic_broker, broker.dynamic_default]
        .into_iter()
        .filter_map(|layer| layer.get(key))
        .map(String::as_str)
        .find(|v| !v.trim().is_empty() && def.kind.validate(v).is_ok())
        .map(str::trim)
}

/// Validates a broker-level value of a topic config's synonym (`log.retention.hours=...`),
/// converted to the topic config's unit, or of a [`DYNAMIC_BROKER_CONFIGS`] key. Other keys
/// pass.
pub fn validate_broker_value(key: &str, value: &str) -> Result<(), String> {
    if let Some(d) = dynamic_broker_def(key) {
        return d.kind.validate(value);
    }
    match def_for_broker_key(key) {
        Some((d, scale)) => d.validate(
            &scaled(value, scale).ok_or_else(|| format!("{value:?} is not a whole number"))?,
        ),
        None => Ok(()),
    }
}

/// `value * scale` as text (`scale` 1 leaves it untouched; -1 stays -1: "forever").
fn scaled(value: &str, scale: i64) -> Option<String> {
    if scale == 1 {
        return Some(value.trim().to_string());
    }
    let v: i64 = value.trim().parse().ok()?;
    if v < 0 {
        return Some(v.to_string());
    }
    Some(v.saturating_mul(scale).to_string())
}

/// Where broker-level values come from: dynamic (metadata image) and static (properties).
#[derive(Debug, Clone, Copy)]
pub struct BrokerLayers<'a> {
    /// Dynamic config of this broker (AlterConfigs on BROKER "<node id>").
    pub dynamic_broker: &'a BTreeMap<String, String>,
    /// Cluster-wide dynamic default (AlterConfigs on BROKER "").
    pub dynamic_default: &'a BTreeMap<String, String>,
    /// Keys set in server.properties or by --override.
    pub static_props: &'a BTreeMap<String, String>,
}

/// One value a config could take, with where it comes from (DescribeConfigs synonyms).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    /// In the unit of `name`.
    pub value: String,
    pub source: i8,
}

/// Every value `def` has at some level, highest precedence first; the first is the effective
/// one. Empty static values (a key present but blank, like `log.roll.ms=`) do not count.
pub fn candidates(
    def: &ConfigDef,
    topic: &BTreeMap<String, String>,
    broker: BrokerLayers<'_>,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(v) = topic.get(def.name) {
        out.push(Candidate {
            name: def.name.to_string(),
            value: v.clone(),
            source: source::TOPIC,
        });
    }
    for (layer, src) in [
        (broker.dynamic_broker, source::DYNAMIC_BROKER),
        (broker.dynamic_default, source::DYNAMIC_DEFAULT_BROKER),
        (broker.static_props, source::STATIC_BROKER),
    ] {
        for s in def.broker {
            if let Some(v) = layer.get(s.key).filter(|v| !v.trim().is_empty()) {
                out.push(Candidate {
                    name: s.key.to_string(),
                    value: v.clone(),
                    source: src,
                });
            }
        }
    }
    let primary = def.broker.first().map_or(def.name, |s| s.key);
    out.push(Candidate {
        name: primary.to_string(),
        value: def.default.to_string(),
        source: source::DEFAULT,
    });
    out
}

/// The effective value of `def` in its own unit, and its source.
pub fn effective(
    def: &ConfigDef,
    topic: &BTreeMap<String, String>,
    broker: BrokerLayers<'_>,
) -> (String, i8) {
    for c in candidates(def, topic, broker) {
        let scale = if c.source == source::TOPIC || c.source == source::DEFAULT {
            1
        } else {
            def.broker
                .iter()
                .find(|s| s.key == c.name)
                .map_or(1, |s| s.scale)
        };
        if let Some(v) = scaled(&c.value, scale) {
            if def.validate(&v).is_ok() {
                return (v, c.source);
            }
        }
    }
    (def.default.to_string(), source::DEFAULT)
}

/// Codec a topic stores batches with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicCompression {
    /// As the producer sent them (passthrough).
    Producer,
    Uncompressed,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// A topic's effective configs, typed (what partitions and handlers use).
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub cleanup_delete: bool,
    pub cleanup_compact: bool,
    pub compression: TopicCompression,
    pub delete_retention_ms: i64,
    pub file_delete_delay_ms: i64,
    pub index_interval_bytes: u32,
    pub max_compaction_lag_ms: i64,
    pub max_message_bytes: usize,
    pub timestamp_after_max_ms: i64,
    pub timestamp_before_max_ms: i64,
    pub timestamp_log_append: bool,
    pub min_cleanable_dirty_ratio: f64,
    pub min_compaction_lag_ms: i64,
    pub min_insync_replicas: i32,
    pub retention_bytes: i64,
    pub retention_ms: i64,
    pub segment_bytes: u64,
    pub segment_index_bytes: u64,
    pub segment_ms: i64,
}

impl Default for TopicConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        let empty = BTreeMap::new();
        TopicConfig::resolve(
            &empty,
            BrokerLayers {
                dynamic_broker: &empty,
                dynamic_default: &empty,
                static_props: &empty,
            },
        )
    }
}

impl TopicCompression {
    /// The record-batch codec id to store batches with, `None` for `producer` (as sent).
    pub fn codec(self) -> Option<u8> {
        match self {
            TopicCompression::Producer => None,
            TopicCompression::Uncompressed => Some(0),
            TopicCompression::Gzip => Some(1),
            TopicCompression::Snappy => Some(2),
            TopicCompression::Lz4 => Some(3),
            TopicCompression::Zstd => Some(4),
        }
    }
}

impl TopicConfig {
    /// Resolves every config of a topic with overrides `topic` on top of `broker`.
    pub fn resolve(topic: &BTreeMap<String, String>, broker: BrokerLayers<'_>) -> TopicConfig {
        let get = |name: &str| -> String {
            match def(name) {
                Some(d) => effective(d, topic, broker).0,
                None => String::new(),
            }
        };
        let long = |name: &str| -> i64 {
            get(name)
                .parse()
                .or_else(|_| def(name).map_or(Ok(0), |d| d.default.parse()))
                .unwrap_or(0)
        };
        let policy = get("cleanup.policy");
        let words: Vec<&str> = policy.split(',').map(str::trim).collect();
        TopicConfig {
            cleanup_delete: words.contains(&"delete"),
            cleanup_compact: words.contains(&"compact"),
            compression: match get("compression.type").as_str() {
                "uncompressed" => TopicCompression::Uncompressed,
                "gzip" => TopicCompression::Gzip,
                "snappy" => TopicCompression::Snappy,
                "lz4" => TopicCompression::Lz4,
                "zstd" => TopicCompression::Zstd,
                _ => TopicCompression::Producer,
            },
            delete_retention_ms: long("delete.retention.ms"),
            file_delete_delay_ms: long("file.delete.delay.ms"),
            index_interval_bytes: long("index.interval.bytes").clamp(0, u32::MAX as i64) as u32,
            max_compaction_lag_ms: long("max.compaction.lag.ms"),
            max_message_bytes: long("max.message.bytes").max(0) as usize,
            timestamp_after_max_ms: long("message.timestamp.after.max.ms"),
            timestamp_before_max_ms: long("message.timestamp.before.max.ms"),
            timestamp_log_append: get("message.timestamp.type") == "LogAppendTime",
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio").parse().unwrap_or(0.5),
            min_compaction_lag_ms: long("min.compaction.lag.ms"),
            min_insync_replicas: long("min.insync.replicas").clamp(1, i32::MAX as i64) as i32,
            retention_bytes: long("retention.bytes"),
            retention_ms: long("retention.ms"),
            segment_bytes: long("segment.bytes").max(14) as u64,
            segment_index_bytes: long("segment.index.bytes").max(4) as u64,
            segment_ms: long("segment.ms").max(1),
        }
    }
}

/// Why a set of topic overrides was refused (INVALID_CONFIG; the message names the key).
pub fn validate_overrides(overrides: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in overrides {
        let d = def(k).ok_or_else(|| format!("unknown topic config `{k}`"))?;
        d.validate(v)
            .map_err(|why| format!("invalid value {v:?} for topic config `{k}`: {why}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_kafkas_and_valid() {
        for d in TOPIC_CONFIGS {
            d.validate(d.default)
                .unwrap_or_else(|e| panic!("{}: default {}: {e}", d.name, d.default));
        }
        let empty = BTreeMap::new();
        let layers = BrokerLayers {
            dynamic_broker: &empty,
            dynamic_default: &empty,
            static_props: &empty,
        };
        let c = TopicConfig::resolve(&empty, layers);
        assert_eq!(c.retention_ms, 7 * 24 * 3600 * 1000);
        assert_eq!(c.retention_bytes, -1);
        assert_eq!(c.segment_bytes, 1 << 30);
        assert_eq!(c.max_message_bytes, 1048588);
        assert!(c.cleanup_delete && !c.cleanup_compact);
        assert_eq!(c.compression, TopicCompression::Producer);
        assert_eq!(c.min_cleanable_dirty_ratio, 0.5);
    }

    #[test]
    fn precedence_topic_then_dynamic_then_static_then_default() {
        let stat = map(&[("log.retention.hours", "1"), ("log.segment.bytes", "2048")]);
        let dyn_default = map(&[("log.retention.minutes", "2")]);
        let dyn_broker = map(&[]);
        let layers = BrokerLayers {
            dynamic_broker: &dyn_broker,
            dynamic_default: &dyn_default,
            static_props: &stat,
        };
        let retention = def("retention.ms").unwrap();
        // Dynamic default (minutes) beats static (hours).
        assert_eq!(
            effective(retention, &map(&[]), layers),
            ("120000".to_string(), source::DYNAMIC_DEFAULT_BROKER)
        );
        // The topic override beats both.
        assert_eq!(
            effective(retention, &map(&[("retention.ms", "5")]), layers),
            ("5".to_string(), source::TOPIC)
        );
        // Static when nothing dynamic; synonyms listed in precedence order, default last.
        let seg = def("segment.bytes").unwrap();
        assert_eq!(
            effective(seg, &map(&[]), layers),
            ("2048".to_string(), source::STATIC_BROKER)
        );
        let names: Vec<(String, i8)> =
            candidates(retention, &map(&[("retention.ms", "5")]), layers)
                .into_iter()
                .map(|c| (c.name, c.source))
                .collect();
        assert_eq!(
            names,
            vec![
                ("retention.ms".to_string(), source::TOPIC),
                (
                    "log.retention.minutes".to_string(),
                    source::DYNAMIC_DEFAULT_BROKER
                ),
                ("log.retention.hours".to_string(), source::STATIC_BROKER),
                ("log.retention.ms".to_string(), source::DEFAULT),
            ]
        );
        // -1 (forever) is not scaled.
        let forever = map(&[("log.retention.hours", "-1")]);
        let layers = BrokerLayers {
            dynamic_broker: &dyn_broker,
            dynamic_default: &dyn_broker,
            static_props: &forever,
        };
        assert_eq!(effective(retention, &map(&[]), layers).0, "-1");
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let bad = [
            ("cleanup.policy", "delete,shred"),
            ("cleanup.policy", ""),
            ("retention.ms", "-2"),
            ("retention.ms", "soon"),
            ("segment.bytes", "13"),
            ("segment.bytes", "4294967296"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("compression.type", "brotli"),
            ("message.timestamp.type", "createtime"),
            ("min.insync.replicas", "0"),
        ];
        for (k, v) in bad {
            let err = validate_overrides(&map(&[(k, v)])).unwrap_err();
            assert!(err.contains(k), "{k}={v}: {err}");
        }
        let err = validate_overrides(&map(&[("retention.msec", "1")])).unwrap_err();
        assert!(err.contains("retention.msec"));
        validate_overrides(&map(&[
            ("cleanup.policy", "compact,delete"),
            ("retention.ms", "-1"),
            ("compression.type", "zstd"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ]))
        .unwrap();
        assert!(validate_broker_value("log.retention.hours", "x").is_err());
        assert!(validate_broker_value("log.retention.hours", "-1").is_ok());
        assert!(validate_broker_value("log.segment.bytes", "10").is_err());
        assert!(validate_broker_value("cores", "anything").is_ok());
    }

    #[test]
    fn cleaner_rate_is_a_dynamic_broker_key() {
        let key = "log.cleaner.io.max.bytes.per.second";
        assert!(is_dynamic_broker_key(key));
        assert!(is_dynamic_broker_key("log.retention.ms"));
        assert!(!is_dynamic_broker_key("cores"));
        assert_eq!(
            dynamic_broker_type_doc(key).map(|t| t.0),
            Some(config_type::LONG)
        );
        for bad in ["-1", "fast", "1.5", ""] {
            assert!(validate_broker_value(key, bad).is_err(), "{bad:?}");
        }
        assert!(validate_broker_value(key, "0").is_ok());
        assert!(validate_broker_value(key, "1048576").is_ok());
        // This broker's value beats the cluster default; an invalid stored one is skipped.
        let mine = map(&[(key, "1")]);
        let all = map(&[(key, "2")]);
        let none = map(&[]);
        let layers = |b, d| BrokerLayers {
            dynamic_broker: b,
            dynamic_default: d,
            static_props: &none,
        };
        assert_eq!(dynamic_broker_value(key, layers(&mine, &all)), Some("1"));
        assert_eq!(dynamic_broker_value(key, layers(&none, &all)), Some("2"));
        assert_eq!(dynamic_broker_value(key, layers(&none, &none)), None);
        let broken = map(&[(key, "-3")]);
        assert_eq!(dynamic_broker_value(key, layers(&broken, &all)), Some("2"));
    }
}
