//! The controller: the single writer of cluster metadata, on shard 0.
//!
//! Every change (create/delete topics, add partitions, allocate producer ids) runs under one
//! async lock: build the next image from the current one, persist it (checksummed rkyv,
//! write-new-then-rename, on glommio's blocking pool so the shard keeps serving), then apply it on
//! every shard and wait for all of them, so a client that got an answer sees the change on any
//! connection. Requests reach it from other shards through the mailbox.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Semaphore;

use crate::config::BrokerConfig;
use crate::io::state_file;
use crate::protocol::error::ErrorCode;
use crate::shard::Shard;
use crate::topic_config;

use super::{cluster_id_from, random_id, MetadataError, MetadataImage, PartitionMeta, TopicMeta};

/// Producer ids are handed out from here on; any fixed start works, 1000 leaves room for tools.
const FIRST_PRODUCER_ID: i64 = 1000;

pub struct Controller {
    path: PathBuf,
    image: std::cell::RefCell<Arc<MetadataImage>>,
    lock: Semaphore,
}

/// Why a topic change was refused; the handler maps it to a Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicChangeError {
    AlreadyExists,
    UnknownTopic,
    InvalidName(&'static str),
    InvalidPartitions(String),
    InvalidReplicationFactor(String),
    Storage(String),
}

pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    /// Config overrides, already validated by the caller.
    pub configs: BTreeMap<String, String>,
}

/// A new topic's metadata: a fresh id, partitions placed on the least-loaded shards of `image`.
fn new_topic(
    image: &MetadataImage,
    name: &str,
    partitions: i32,
    nr_shards: usize,
    configs: BTreeMap<String, String>,
) -> TopicMeta {
    TopicMeta {
        name: name.to_string(),
        id: random_id(),
        partitions: image
            .place(partitions as usize, nr_shards)
            .into_iter()
            .map(|s| PartitionMeta {
                shard: s,
                leader_epoch: 0,
            })
            .collect(),
        configs,
    }
}

/// What AlterConfigs / IncrementalAlterConfigs change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigResource {
    Topic(String),
    /// A broker by name: "" is the cluster-wide default, else this broker's node id.
    Broker(String),
}

/// IncrementalAlterConfigs operations (Kafka's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOp {
    Set = 0,
    Delete = 1,
    Append = 2,
    Subtract = 3,
}

impl ConfigOp {
    pub fn from_i8(v: i8) -> Option<ConfigOp> {
        Some(match v {
            0 => ConfigOp::Set,
            1 => ConfigOp::Delete,
            2 => ConfigOp::Append,
            3 => ConfigOp::Subtract,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigEdit {
    /// AlterConfigs: these become the resource's whole set of overrides.
    Replace(BTreeMap<String, String>),
    /// IncrementalAlterConfigs: each (key, op, value) in order.
    Incremental(Vec<(String, ConfigOp, Option<String>)>),
}

/// A refused config change: the Kafka error and a message naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChangeError {
    pub code: ErrorCode,
    pub message: String,
}

fn config_error(code: ErrorCode, message: impl Into<String>) -> ConfigChangeError {
    ConfigChangeError {
        code,
        message: message.into(),
    }
}

/// Applies `edit` to `current` overrides. `effective` gives a key's current effective value
/// (APPEND/SUBTRACT work on it, as Kafka does). `check` validates one key and value.
fn edit_overrides(
    current: &BTreeMap<String, String>,
    edit: &ConfigEdit,
    effective: impl Fn(&str) -> Option<String>,
    is_list: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, String>, ConfigChangeError> {
    match edit {
        ConfigEdit::Replace(all) => Ok(all.clone()),
        ConfigEdit::Incremental(ops) => {
            let mut next = current.clone();
            let mut seen = std::collections::HashSet::new();
            for (key, op, value) in ops {
                if !seen.insert(key.as_str()) {
                    return Err(config_error(
                        ErrorCode::INVALID_REQUEST,
                        format!("config `{key}` appears more than once in one request"),
                    ));
                }
                match op {
                    ConfigOp::Set => {
                        let v = value.clone().ok_or_else(|| {
                            config_error(
                                ErrorCode::INVALID_CONFIG,
                                format!("SET of `{key}` without a value"),
                            )
                        })?;
                        next.insert(key.clone(), v);
                    }
                    ConfigOp::Delete => {
                        next.remove(key);
                    }
                    ConfigOp::Append | ConfigOp::Subtract => {
                        if !is_list(key) {
                            return Err(config_error(
                                ErrorCode::INVALID_CONFIG,
                                format!(
                                    "config `{key}` is not a list: APPEND/SUBTRACT do not apply"
                                ),
                            ));
                        }
                        let base = next.get(key).cloned().or_else(|| effective(key));
                        let mut items: Vec<String> = base
                            .unwrap_or_default()
                            .split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect();
                        let given: Vec<String> = value
                            .as_deref()
                            .unwrap_or_default()
                            .split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect();
                        if *op == ConfigOp::Append {
                            for g in given {
                                if !items.contains(&g) {
                                    items.push(g);
                                }
                            }
                        } else {
                            items.retain(|i| !given.contains(i));
                        }
                        next.insert(key.clone(), items.join(","));
                    }
                }
            }
            Ok(next)
        }
    }
}

/// Creates `__consumer_offsets` (with `offsets.topic.num.partitions`) in an image that lacks it:
/// at first start, or on a data directory from before groups existed; gives an existing one
/// without it `cleanup.policy=compact`. True if the image changed.
fn ensure_offsets_topic(
    image: &mut MetadataImage,
    config: &BrokerConfig,
    nr_shards: usize,
) -> bool {
    ensure_internal_topic(
        image,
        crate::coordinator::offsets::OFFSETS_TOPIC,
        config.offsets_topic_num_partitions,
        nr_shards,
    )
}

/// Creates `__transaction_state` (with `transaction.state.log.num.partitions`) at first start,
/// or on a data directory from before transactions existed. True if the image changed.
fn ensure_transaction_topic(
    image: &mut MetadataImage,
    config: &BrokerConfig,
    nr_shards: usize,
) -> bool {
    ensure_internal_topic(
        image,
        crate::coordinator::transactions::TRANSACTION_TOPIC,
        config.transaction_state_num_partitions,
        nr_shards,
    )
}

/// An internal topic with Kafka's settings for it: compacted, and so never subject to time or
/// size retention (which would drop committed offsets, group or transaction metadata). One
/// created before topic configs existed gets them now.
fn ensure_internal_topic(
    image: &mut MetadataImage,
    name: &str,
    partitions: i32,
    nr_shards: usize,
) -> bool {
    let configs: BTreeMap<String, String> = [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "104857600"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(t) = image.topics.get_mut(name) {
        if t.configs.get("cleanup.policy").map(String::as_str) == Some("compact") {
            return false;
        }
        for (k, v) in configs {
            t.configs.entry(k).or_insert(v);
        }
        t.configs.insert("cleanup.policy".into(), "compact".into());
        log::info!("metadata: {name} set to cleanup.policy=compact");
        return true;
    }
    let meta = new_topic(image, name, partitions, nr_shards, configs);
    image.topics.insert(name.to_string(), meta);
    log::info!("metadata: created {name} with {partitions} partition(s)");
    true
}

impl Controller {
    /// Loads the stored image, or starts a new cluster. Runs once at boot, before any I/O loop.
    pub fn load(config: &BrokerConfig) -> Result<Controller, MetadataError> {
        let path = config.data_dir.join("metadata.state");
        let stored = state_file::read_state(&path).map_err(|e| MetadataError::Io(e.to_string()))?;
        let mut image = match stored {
            Some(bytes) => MetadataImage::decode(&bytes)?,
            None => MetadataImage {
                version: 1,
                cluster_id: cluster_id_from(random_id()),
                next_producer_id: FIRST_PRODUCER_ID,
                topics: Default::default(),
                broker_configs: Default::default(),
                cluster_configs: Default::default(),
            },
        };
        sweep_data_dir(&config.data_dir, &image);
        let nr_shards = config.cores.cpus.len();
        let mut changed = image.fit_to_shards(nr_shards);
        changed |= ensure_offsets_topic(&mut image, config, nr_shards);
        changed |= ensure_transaction_topic(&mut image, config, nr_shards);
        if changed || !path.exists() {
            image.version += 1;
            let bytes = image.encode()?;
            state_file::write_state(&path, &bytes).map_err(|e| MetadataError::Io(e.to_string()))?;
        }
        log::info!(
            "metadata: cluster {} version {}, {} topic(s)",
            image.cluster_id,
            image.version,
            image.topics.len()
        );
        Ok(Controller {
            path,
            image: std::cell::RefCell::new(Arc::new(image)),
            lock: Semaphore::new(1),
        })
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Persists `next` and, if `broadcast`, applies it on every shard (changes no shard reads,
    /// like the producer-id counter, skip that).
    async fn commit(
        &self,
        shard: &Rc<Shard>,
        mut next: MetadataImage,
        broadcast: bool,
    ) -> Result<(), MetadataError> {
        next.version = self.image.borrow().version + 1;
        let bytes = next.encode()?;
        let path = self.path.clone();
        glommio::executor()
            .spawn_blocking(move || {
                state_file::write_state(&path, &bytes).map_err(|e| e.to_string())
            })
            .await
            .map_err(MetadataError::Io)?;
        let next = Arc::new(next);
        *self.image.borrow_mut() = next.clone();
        if !broadcast {
            return Ok(());
        }
        for target in 0..shard.nr_shards {
            let img = next.clone();
            let applied = shard
                .mailbox
                .call(shard, target, move |s| {
                    let s = s.clone();
                    async move { s.apply_image(img).await }
                })
                .await;
            if applied.is_err() {
                log::warn!(
                    "metadata version {}: shard {target} did not apply it (stopping?)",
                    next.version
                );
            }
        }
        Ok(())
    }

    pub async fn create_topics(
        &self,
        shard: &Rc<Shard>,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Result<TopicMeta, TopicChangeError>> {
        let _guard = self.lock.acquire_permit(1).await;
        let mut next = (*self.image()).clone();
        let mut results = Vec::with_capacity(topics.len());
        for t in topics {
            if let Err(why) = super::validate_topic_name(&t.name) {
                results.push(Err(TopicChangeError::InvalidName(why)));
                continue;
            }
            if next.topics.contains_key(&t.name) {
                results.push(Err(TopicChangeError::AlreadyExists));
                continue;
            }
            if t.partitions < 1 || t.partitions > 100_000 {
                results.push(Err(TopicChangeError::InvalidPartitions(format!(
                    "number of partitions must be between 1 and 100000, got {}",
                    t.partitions
                ))));
                continue;
            }
            let meta = new_topic(&next, &t.name, t.partitions, shard.nr_shards, t.configs);
            next.topics.insert(t.name, meta.clone());
            results.push(Ok(meta));
        }
        if validate_only || results.iter().all(|r| r.is_err()) {
            return results;
        }
        if let Err(e) = self.commit(shard, next, true).await {
            log::error!("metadata: cannot persist topic creation: {e}");
            return results
                .into_iter()
                .map(|r| r.and(Err(TopicChangeError::Storage(e.to_string()))))
                .collect();
        }
        results
    }

    pub async fn delete_topics(
        &self,
        shard: &Rc<Shard>,
        names: Vec<String>,
    ) -> Vec<Result<TopicMeta, TopicChangeError>> {
        let _guard = self.lock.acquire_permit(1).await;
        let mut next = (*self.image()).clone();
        let results: Vec<_> = names
            .into_iter()
            .map(|n| {
                if crate::coordinator::offsets::is_internal_topic(&n) {
                    return Err(TopicChangeError::InvalidName(
                        "internal topics cannot be deleted",
                    ));
                }
                next.topics.remove(&n).ok_or(TopicChangeError::UnknownTopic)
            })
            .collect();
        if results.iter().any(|r| r.is_ok()) {
            if let Err(e) = self.commit(shard, next, true).await {
                log::error!("metadata: cannot persist topic deletion: {e}");
                return results
                    .into_iter()
                    .map(|r| r.and(Err(TopicChangeError::Storage(e.to_string()))))
                    .collect();
            }
        }
        results
    }

    /// Grows `name` to `count` partitions in total.
    pub async fn create_partitions(
        &self,
        shard: &Rc<Shard>,
        requests: Vec<(String, i32)>,
        validate_only: bool,
    ) -> Vec<Result<(), TopicChangeError>> {
        let _guard = self.lock.acquire_permit(1).await;
        let mut next = (*self.image()).clone();
        let mut results = Vec::new();
        for (name, count) in requests {
            if crate::coordinator::offsets::is_internal_topic(&name) {
                // Groups are placed by hashing over the partition count: it must never change.
                results.push(Err(TopicChangeError::InvalidPartitions(
                    "the partition count of an internal topic cannot change".into(),
                )));
                continue;
            }
            let current = match next.topics.get(&name) {
                Some(t) => t.partitions.len() as i32,
                None => {
                    results.push(Err(TopicChangeError::UnknownTopic));
                    continue;
                }
            };
            if count <= current || count > 100_000 {
                results.push(Err(TopicChangeError::InvalidPartitions(format!(
                    "topic currently has {current} partitions, {count} would not increase it"
                ))));
                continue;
            }
            let shards = next.place((count - current) as usize, shard.nr_shards);
            if let Some(t) = next.topics.get_mut(&name) {
                t.partitions
                    .extend(shards.into_iter().map(|s| PartitionMeta {
                        shard: s,
                        leader_epoch: 0,
                    }));
            }
            results.push(Ok(()));
        }
        if validate_only || !results.iter().any(|r| r.is_ok()) {
            return results;
        }
        if let Err(e) = self.commit(shard, next, true).await {
            return results
                .into_iter()
                .map(|r| r.and(Err(TopicChangeError::Storage(e.to_string()))))
                .collect();
        }
        results
    }

    /// AlterConfigs / IncrementalAlterConfigs: applies each change that is valid (each
    /// resource on its own, like Kafka), persists once, and answers per resource.
    pub async fn alter_configs(
        &self,
        shard: &Rc<Shard>,
        changes: Vec<(ConfigResource, ConfigEdit)>,
        validate_only: bool,
    ) -> Vec<Result<(), ConfigChangeError>> {
        let _guard = self.lock.acquire_permit(1).await;
        let mut next = (*self.image()).clone();
        let node = shard.config.node_id.to_string();
        let mut results = Vec::with_capacity(changes.len());
        for (resource, edit) in changes {
            let r = match &resource {
                ConfigResource::Topic(name) => alter_topic(&mut next, &shard.config, name, &edit),
                ConfigResource::Broker(name) if name.is_empty() || *name == node => {
                    alter_broker(&mut next, &shard.config, name.is_empty(), &edit)
                }
                ConfigResource::Broker(name) => Err(config_error(
                    ErrorCode::INVALID_REQUEST,
                    format!("this is broker {node}, not broker {name:?}"),
                )),
            };
            results.push(r);
        }
        if validate_only || !results.iter().any(|r| r.is_ok()) {
            return results;
        }
        if let Err(e) = self.commit(shard, next, true).await {
            log::error!("metadata: cannot persist config change: {e}");
            return results
                .into_iter()
                .map(|r| {
                    r.and(Err(config_error(
                        ErrorCode::KAFKA_STORAGE_ERROR,
                        e.to_string(),
                    )))
                })
                .collect();
        }
        results
    }

    /// A new producer id for an idempotent producer (persisted before it is handed out, so an
    /// id is never given twice, even across a crash).
    pub async fn allocate_producer_id(&self, shard: &Rc<Shard>) -> Result<i64, MetadataError> {
        let _guard = self.lock.acquire_permit(1).await;
        let mut next = (*self.image()).clone();
        let id = next.next_producer_id;
        next.next_producer_id += 1;
        self.commit(shard, next, false).await?;
        Ok(id)
    }
}

fn alter_topic(
    next: &mut MetadataImage,
    config: &BrokerConfig,
    name: &str,
    edit: &ConfigEdit,
) -> Result<(), ConfigChangeError> {
    let Some(topic) = next.topics.get(name) else {
        return Err(config_error(
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            format!("unknown topic {name:?}"),
        ));
    };
    let layers = next.broker_layers(config);
    let edited = edit_overrides(
        &topic.configs,
        edit,
        |key| topic_config::def(key).map(|d| topic_config::effective(d, &topic.configs, layers).0),
        |key| topic_config::def(key).is_some_and(|d| matches!(d.kind, topic_config::Kind::List(_))),
    )?;
    topic_config::validate_overrides(&edited)
        .map_err(|why| config_error(ErrorCode::INVALID_CONFIG, why))?;
    if crate::coordinator::offsets::is_internal_topic(name)
        && edited.get("cleanup.policy").map(String::as_str) != Some("compact")
    {
        return Err(config_error(
            ErrorCode::INVALID_CONFIG,
            "cleanup.policy of an internal topic must stay compact",
        ));
    }
    if let Some(t) = next.topics.get_mut(name) {
        t.configs = edited;
    }
    Ok(())
}

/// Broker keys that change without a restart: the defaults of topic configs, and the
/// broker-only keys of [`topic_config::DYNAMIC_BROKER_CONFIGS`].
fn alter_broker(
    next: &mut MetadataImage,
    config: &BrokerConfig,
    cluster_default: bool,
    edit: &ConfigEdit,
) -> Result<(), ConfigChangeError> {
    let current = if cluster_default {
        &next.cluster_configs
    } else {
        &next.broker_configs
    };
    let layers = next.broker_layers(config);
    let edited = edit_overrides(
        current,
        edit,
        |key| {
            let (d, _) = topic_config::def_for_broker_key(key)?;
            Some(topic_config::effective(d, &BTreeMap::new(), layers).0)
        },
        |key| {
            topic_config::def_for_broker_key(key)
                .is_some_and(|(d, _)| matches!(d.kind, topic_config::Kind::List(_)))
        },
    )?;
    for (key, value) in &edited {
        if !topic_config::is_dynamic_broker_key(key) {
            let code = if crate::config::is_known_key(key) {
                ErrorCode::INVALID_REQUEST
            } else {
                ErrorCode::INVALID_CONFIG
            };
            return Err(config_error(
                code,
                format!("broker config `{key}` cannot be updated dynamically"),
            ));
        }
        topic_config::validate_broker_value(key, value).map_err(|why| {
            config_error(
                ErrorCode::INVALID_CONFIG,
                format!("invalid value {value:?} for broker config `{key}`: {why}"),
            )
        })?;
    }
    if cluster_default {
        next.cluster_configs = edited;
    } else {
        next.broker_configs = edited;
    }
    Ok(())
}

/// At start, before any partition is opened: removes leftover `-delete` directories and renames
/// partition directories the image does not know to `<name>.<unix ms>-stray` (see
/// [`DataDirEntry`](super::DataDirEntry)). Problems are logged; none stops the broker.
fn sweep_data_dir(data_dir: &std::path::Path, image: &MetadataImage) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    let now = crate::shard::now_ms();
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        match super::classify_data_dir_entry(image, &name) {
            super::DataDirEntry::Keep => {}
            super::DataDirEntry::RemoveDeleted => match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => log::info!("removed deleted partition directory {name}"),
                Err(e) => log::warn!("cannot remove deleted partition directory {name}: {e}"),
            },
            super::DataDirEntry::Stray => {
                let aside = data_dir.join(format!("{name}.{now}-stray"));
                match std::fs::rename(entry.path(), &aside) {
                    Ok(()) => log::warn!(
                        "partition directory {name} belongs to no known topic; moved aside to {}",
                        aside.display()
                    ),
                    Err(e) => log::warn!("cannot move stray partition directory {name} aside: {e}"),
                }
            }
        }
    }
    if let Err(e) = crate::io::sync_dir(data_dir) {
        log::warn!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory from before topic configs has an offsets topic without settings: it
    /// becomes compacted (never subject to retention) at the next start, once.
    #[test]
    fn offsets_topic_is_compacted_new_or_old() {
        let config = BrokerConfig::from_properties(&BTreeMap::new()).unwrap();
        let mut image = MetadataImage::default();
        assert!(ensure_offsets_topic(&mut image, &config, 2));
        let t = &image.topics[crate::coordinator::offsets::OFFSETS_TOPIC];
        assert_eq!(
            t.configs.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );
        assert!(!ensure_offsets_topic(&mut image, &config, 2));

        image
            .topics
            .get_mut(crate::coordinator::offsets::OFFSETS_TOPIC)
            .unwrap()
            .configs
            .clear();
        assert!(ensure_offsets_topic(&mut image, &config, 2));
        let t = &image.topics[crate::coordinator::offsets::OFFSETS_TOPIC];
        let resolved = image.topic_config(t, &config);
        assert!(resolved.cleanup_compact && !resolved.cleanup_delete);
        assert!(!ensure_offsets_topic(&mut image, &config, 2));
    }
}
