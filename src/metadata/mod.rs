//! Cluster metadata: topics, their partitions and the shard table (partition -> shard).
//!
//! One writer: the controller on shard 0 ([`controller`]) builds each new [`MetadataImage`],
//! persists it (rkyv, checksummed, write-new-then-rename) and hands an `Arc` of the new immutable
//! image to every shard. Shards only ever read their current image; a newer `version` replaces it.
//! Invariant: every partition of every topic names a shard `< nr_shards` of the broker that wrote
//! it; a restart with fewer shards re-places the orphans (see [`MetadataImage::fit_to_shards`]).

pub mod controller;

use std::collections::BTreeMap;

pub type TopicId = [u8; 16];

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionMeta {
    /// The shard that owns this partition's log, end to end.
    pub shard: u32,
    pub leader_epoch: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: TopicId,
    pub partitions: Vec<PartitionMeta>,
    /// Topic config overrides (validated; see [`crate::topic_config`]).
    pub configs: BTreeMap<String, String>,
}

impl TopicMeta {
    /// The shard owning this topic's `partition`, if it exists.
    pub fn shard_of(&self, partition: i32) -> Option<usize> {
        let p = self.partitions.get(usize::try_from(partition).ok()?)?;
        Some(p.shard as usize)
    }
}

#[derive(
    Debug, Clone, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct MetadataImage {
    pub version: u64,
    pub cluster_id: String,
    /// The next producer id InitProducerId hands out; persisted so ids are never reused.
    pub next_producer_id: i64,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Dynamic broker configs of this broker (AlterConfigs on BROKER "<node id>").
    pub broker_configs: BTreeMap<String, String>,
    /// Cluster-wide dynamic broker defaults (AlterConfigs on BROKER "").
    pub cluster_configs: BTreeMap<String, String>,
}

/// Leads an encoded image of the current format. Images of the first format (before topic
/// configs) are bare rkyv archives, which start with the cluster id's characters: never a zero
/// byte, so the tag cannot be mistaken for one.
const IMAGE_FORMAT_TAG: [u8; 8] = *b"\0ODMD\x02\0\0";

/// The first on-disk format, kept to read data directories written before topic configs.
mod v1 {
    use std::collections::BTreeMap;

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct TopicMeta {
        pub name: String,
        pub id: super::TopicId,
        pub partitions: Vec<super::PartitionMeta>,
    }

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct MetadataImage {
        pub version: u64,
        pub cluster_id: String,
        pub next_producer_id: i64,
        pub topics: BTreeMap<String, TopicMeta>,
    }

    impl From<MetadataImage> for super::MetadataImage {
        fn from(v: MetadataImage) -> Self {
            super::MetadataImage {
                version: v.version,
                cluster_id: v.cluster_id,
                next_producer_id: v.next_producer_id,
                topics: v
                    .topics
                    .into_iter()
                    .map(|(k, t)| {
                        (
                            k,
                            super::TopicMeta {
                                name: t.name,
                                id: t.id,
                                partitions: t.partitions,
                                configs: BTreeMap::new(),
                            },
                        )
                    })
                    .collect(),
                broker_configs: BTreeMap::new(),
                cluster_configs: BTreeMap::new(),
            }
        }
    }
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &TopicId) -> Option<&TopicMeta> {
        self.topics.values().find(|t| &t.id == id)
    }

    /// The shard owning `topic`/`partition`, if both exist.
    pub fn shard_of(&self, topic: &str, partition: i32) -> Option<usize> {
        self.topics.get(topic)?.shard_of(partition)
    }

    /// Partitions per shard, for least-loaded placement.
    pub fn load_per_shard(&self, nr_shards: usize) -> Vec<usize> {
        let mut load = vec![0usize; nr_shards];
        for t in self.topics.values() {
            for p in &t.partitions {
                if let Some(l) = load.get_mut(p.shard as usize) {
                    *l += 1;
                }
            }
        }
        load
    }

    /// Picks the least-loaded shard for each of `count` new partitions (ties: lowest shard id).
    pub fn place(&self, count: usize, nr_shards: usize) -> Vec<u32> {
        let mut load = self.load_per_shard(nr_shards);
        (0..count)
            .map(|_| {
                let (shard, _) = load
                    .iter()
                    .enumerate()
                    .min_by_key(|(i, l)| (**l, *i))
                    .unwrap_or((0, &0));
                load[shard] += 1;
                shard as u32
            })
            .collect()
    }

    /// After a restart with fewer shards, partitions whose shard no longer exists move to the
    /// least-loaded remaining shard (their directories are shared, so the data follows).
    /// Returns true if anything moved.
    pub fn fit_to_shards(&mut self, nr_shards: usize) -> bool {
        let mut moved = false;
        let names: Vec<String> = self.topics.keys().cloned().collect();
        for name in names {
            let count = self.topics[&name].partitions.len();
            for i in 0..count {
                if self.topics[&name].partitions[i].shard as usize >= nr_shards {
                    let shard = self.place(1, nr_shards)[0];
                    if let Some(t) = self.topics.get_mut(&name) {
                        t.partitions[i].shard = shard;
                    }
                    moved = true;
                }
            }
        }
        moved
    }

    pub fn encode(&self) -> Result<Vec<u8>, MetadataError> {
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .map_err(|e| MetadataError::Codec(e.to_string()))?;
        let mut out = Vec::with_capacity(IMAGE_FORMAT_TAG.len() + archive.len());
        out.extend_from_slice(&IMAGE_FORMAT_TAG);
        out.extend_from_slice(&archive);
        Ok(out)
    }

    /// Decodes either format (see [`IMAGE_FORMAT_TAG`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, MetadataError> {
        let codec = |e: rkyv::rancor::Error| MetadataError::Codec(e.to_string());
        match bytes.strip_prefix(&IMAGE_FORMAT_TAG[..]) {
            Some(archive) => {
                let aligned = crate::io::state_file::rkyv_aligned(archive);
                rkyv::from_bytes::<Self, rkyv::rancor::Error>(&aligned).map_err(codec)
            }
            None => {
                let aligned = crate::io::state_file::rkyv_aligned(bytes);
                rkyv::from_bytes::<v1::MetadataImage, rkyv::rancor::Error>(&aligned)
                    .map(Self::from)
                    .map_err(codec)
            }
        }
    }

    /// Config layers of this broker: dynamic from the image, static from `config`.
    pub fn broker_layers<'a>(
        &'a self,
        config: &'a crate::config::BrokerConfig,
    ) -> crate::topic_config::BrokerLayers<'a> {
        crate::topic_config::BrokerLayers {
            dynamic_broker: &self.broker_configs,
            dynamic_default: &self.cluster_configs,
            static_props: &config.props,
        }
    }

    /// The effective `log.cleaner.io.max.bytes.per.second`: dynamic (this broker's, then the
    /// cluster default) over the static value.
    pub fn cleaner_io_max_bytes_per_second(&self, config: &crate::config::BrokerConfig) -> u64 {
        crate::topic_config::dynamic_broker_value(
            "log.cleaner.io.max.bytes.per.second",
            self.broker_layers(config),
        )
        .and_then(|v| v.parse().ok())
        .unwrap_or(config.log_cleaner_io_max_bytes_per_second)
    }

    /// The effective configs of `topic` (its overrides on top of the broker's).
    pub fn topic_config(
        &self,
        topic: &TopicMeta,
        config: &crate::config::BrokerConfig,
    ) -> crate::topic_config::TopicConfig {
        crate::topic_config::TopicConfig::resolve(&topic.configs, self.broker_layers(config))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata encoding: {0}")]
    Codec(String),
    #[error("metadata file: {0}")]
    Io(String),
}

/// The name a deleted partition's directory is renamed to before it is removed.
pub fn deleted_dir_name(topic: &str, partition: i32, id: &TopicId) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("{topic}-{partition}.{hex}-delete")
}

/// What to do with an entry of the data directory at start, given the metadata image.
#[derive(Debug, PartialEq, Eq)]
pub enum DataDirEntry {
    /// A partition directory of a topic in the image, or not ours at all: leave it.
    Keep,
    /// A deleted partition's directory (see [`deleted_dir_name`]): remove it.
    RemoveDeleted,
    /// Looks like a partition directory but the image knows no such partition (e.g. the broker
    /// stopped between persisting a deletion and renaming the directory): rename it aside,
    /// never delete data the metadata does not explain (Kafka calls these "stray").
    Stray,
}

pub fn classify_data_dir_entry(image: &MetadataImage, name: &str) -> DataDirEntry {
    if let Some(rest) = name.strip_suffix("-delete") {
        let is_ours = rest.rsplit_once('.').is_some_and(|(part, hex)| {
            hex.len() == 32
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
                && parse_partition_dir(part).is_some()
        });
        return if is_ours {
            DataDirEntry::RemoveDeleted
        } else {
            DataDirEntry::Keep
        };
    }
    match parse_partition_dir(name) {
        Some((topic, p))
            if image
                .topic(topic)
                .is_some_and(|t| (p as usize) < t.partitions.len()) =>
        {
            DataDirEntry::Keep
        }
        Some(_) => DataDirEntry::Stray,
        None => DataDirEntry::Keep,
    }
}

/// `<topic>-<partition>` with a valid topic name and a partition number.
fn parse_partition_dir(name: &str) -> Option<(&str, u32)> {
    let (topic, p) = name.rsplit_once('-')?;
    let p: u32 = p.parse().ok()?;
    validate_topic_name(topic).ok()?;
    Some((topic, p))
}

/// Kafka's topic name rules: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("topic name is empty");
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'");
    }
    if name.len() > 249 {
        return Err("topic name is longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(
            "topic name contains a character other than ASCII alphanumerics, '.', '_' and '-'",
        );
    }
    Ok(())
}

/// 16 random bytes from the kernel (topic ids, cluster id).
pub fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    let mut filled = 0;
    while filled < id.len() {
        // SAFETY: writes at most the remaining bytes of `id`.
        let n = unsafe { libc::getrandom(id[filled..].as_mut_ptr().cast(), id.len() - filled, 0) };
        if n <= 0 {
            // getrandom cannot fail for 16 bytes once the pool is initialised; fall back to time.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            id = xxhash_rust::xxh3::xxh3_128(&t.to_le_bytes()).to_le_bytes();
            break;
        }
        filled += n as usize;
    }
    if id == [0u8; 16] {
        id[15] = 1; // the all-zero uuid means "no id" in Kafka
    }
    id
}

/// Kafka's cluster id form: URL-safe base64 of 16 bytes, no padding (22 characters).
pub fn cluster_id_from(bytes: [u8; 16]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(A[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory written before topic configs existed (bare rkyv archive of the first
    /// format) still loads, with no overrides; images round-trip in the current format.
    #[test]
    fn first_format_images_still_load_and_current_ones_round_trip() {
        let id = random_id();
        let cluster_id = cluster_id_from(random_id());
        let old = v1::MetadataImage {
            version: 7,
            cluster_id: cluster_id.clone(),
            next_producer_id: 1234,
            topics: [(
                "orders".to_string(),
                v1::TopicMeta {
                    name: "orders".into(),
                    id,
                    partitions: vec![PartitionMeta {
                        shard: 1,
                        leader_epoch: 3,
                    }],
                },
            )]
            .into_iter()
            .collect(),
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&old)
            .unwrap()
            .to_vec();
        let img = MetadataImage::decode(&bytes).unwrap();
        assert_eq!(
            (img.version, img.cluster_id.as_str(), img.next_producer_id),
            (7, cluster_id.as_str(), 1234)
        );
        let t = &img.topics["orders"];
        assert_eq!(
            (t.id, t.partitions[0].shard, t.partitions[0].leader_epoch),
            (id, 1, 3)
        );
        assert!(t.configs.is_empty() && img.broker_configs.is_empty());

        let mut next = img.clone();
        next.topics.get_mut("orders").unwrap().configs =
            [("retention.ms".to_string(), "1000".to_string())]
                .into_iter()
                .collect();
        next.cluster_configs = [("log.retention.bytes".to_string(), "5".to_string())]
            .into_iter()
            .collect();
        let encoded = next.encode().unwrap();
        assert!(encoded.starts_with(&IMAGE_FORMAT_TAG));
        assert_eq!(MetadataImage::decode(&encoded).unwrap(), next);
    }

    #[test]
    fn data_dir_entries_are_classified_safely() {
        let mut img = MetadataImage::default();
        let id = random_id();
        img.topics.insert(
            "a-b".into(),
            TopicMeta {
                name: "a-b".into(),
                id,
                partitions: vec![
                    PartitionMeta {
                        shard: 0,
                        leader_epoch: 0
                    };
                    2
                ],
                configs: BTreeMap::new(),
            },
        );
        use DataDirEntry::*;
        assert_eq!(classify_data_dir_entry(&img, "a-b-0"), Keep);
        assert_eq!(classify_data_dir_entry(&img, "a-b-1"), Keep);
        assert_eq!(classify_data_dir_entry(&img, "a-b-2"), Stray);
        assert_eq!(classify_data_dir_entry(&img, "gone-0"), Stray);
        assert_eq!(
            classify_data_dir_entry(&img, &deleted_dir_name("a-b", 0, &id)),
            RemoveDeleted
        );
        assert_eq!(
            classify_data_dir_entry(&img, &deleted_dir_name("gone", 3, &random_id())),
            RemoveDeleted
        );
        for other in [
            "metadata.state",
            "lost+found",
            "notes-delete",
            "x.zz-delete",
            "a-b-0.1700000000000-stray",
            "a-b",
            "-1",
        ] {
            assert_eq!(classify_data_dir_entry(&img, other), Keep, "{other}");
        }
    }

    #[test]
    fn topic_names() {
        for ok in ["a", "orders.v1", "A_b-c", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", &"x".repeat(250), "bad/name", "sp ace", "ü"] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placement_is_least_loaded_and_survives_fewer_shards() {
        let mut img = MetadataImage::default();
        let shards = img.place(5, 2);
        assert_eq!(shards, vec![0, 1, 0, 1, 0]);
        img.topics.insert(
            "t".into(),
            TopicMeta {
                name: "t".into(),
                id: random_id(),
                partitions: shards
                    .iter()
                    .map(|&s| PartitionMeta {
                        shard: s,
                        leader_epoch: 0,
                    })
                    .collect(),
                configs: BTreeMap::new(),
            },
        );
        assert_eq!(img.place(1, 2), vec![1]);
        assert_eq!(img.shard_of("t", 4), Some(0));
        assert_eq!(img.shard_of("t", 5), None);
        assert_eq!(img.shard_of("t", -1), None);
        assert!(img.fit_to_shards(1));
        assert!(img.topics["t"].partitions.iter().all(|p| p.shard == 0));
    }

    #[test]
    fn image_round_trips_and_rejects_garbage() {
        let mut img = MetadataImage {
            version: 7,
            cluster_id: cluster_id_from(random_id()),
            next_producer_id: 42,
            ..Default::default()
        };
        img.topics.insert(
            "t".into(),
            TopicMeta {
                name: "t".into(),
                id: random_id(),
                partitions: vec![PartitionMeta {
                    shard: 1,
                    leader_epoch: 3,
                }],
                configs: BTreeMap::new(),
            },
        );
        let bytes = img.encode().unwrap();
        assert_eq!(MetadataImage::decode(&bytes).unwrap(), img);
        // rkyv validates what it reads; damaged bytes never panic (the state file's checksum
        // is what rejects them, tested with the controller's store below).
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            let _ = MetadataImage::decode(&bytes[..cut]);
        }
        let mut flipped = bytes.clone();
        for i in (0..flipped.len()).step_by(7) {
            flipped[i] ^= 0x5a;
            let _ = MetadataImage::decode(&flipped);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.state");
        crate::io::state_file::write_state(&path, &bytes).unwrap();
        let mut file = std::fs::read(&path).unwrap();
        let last = file.len() - 1;
        file[last] ^= 1;
        std::fs::write(&path, &file).unwrap();
        assert!(
            crate::io::state_file::read_state(&path).is_err(),
            "a flipped byte must fail the checksum"
        );
        assert_eq!(img.cluster_id.len(), 22);
    }
}
