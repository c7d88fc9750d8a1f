//! Configs: DescribeConfigs (key 32, v1–4), AlterConfigs (33, v0–2), IncrementalAlterConfigs
//! (44, v0–1), for topics (resource type 2) and this broker (type 4; name "" is the
//! cluster-wide default). Reads come from the shard's current image; changes go to the
//! controller, which validates, persists and applies them on every shard before answering (so
//! they take effect without a restart). What can change on a broker: the defaults of topic
//! configs (`log.retention.ms`, ...) and the broker-only keys of
//! `topic_config::DYNAMIC_BROKER_CONFIGS` (`log.cleaner.io.max.bytes.per.second`); everything
//! else is read-only (INVALID_REQUEST).

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::config::BrokerConfig;
use crate::metadata::controller::{ConfigChangeError, ConfigEdit, ConfigOp, ConfigResource};
use crate::metadata::{MetadataImage, TopicMeta};
use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{
    AlterConfigsRequest, AlterConfigsResourceResponse, AlterConfigsResponse, CreatableTopicConfigs,
    DescribeConfigsRequest, DescribeConfigsResourceResult, DescribeConfigsResponse,
    DescribeConfigsResult, DescribeConfigsSynonym, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResourceResponse, IncrementalAlterConfigsResponse,
};
use crate::protocol::wire::Reader;
use crate::shard::Shard;
use crate::topic_config::{self, source, TOPIC_CONFIGS};

use super::{decode, Dispatch, RequestContext};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

const CONTROLLER_SHARD: usize = 0;

/// One described config, before it is put in a response.
struct Entry {
    name: String,
    value: Option<String>,
    source: i8,
    read_only: bool,
    config_type: i8,
    doc: &'static str,
    synonyms: Vec<(String, Option<String>, i8)>,
}

/// Every config of `topic` with its effective value and source (and synonyms).
fn topic_entries(image: &MetadataImage, config: &BrokerConfig, topic: &TopicMeta) -> Vec<Entry> {
    let layers = image.broker_layers(config);
    TOPIC_CONFIGS
        .iter()
        .map(|d| {
            let (value, src) = topic_config::effective(d, &topic.configs, layers);
            Entry {
                name: d.name.to_string(),
                value: Some(value),
                source: src,
                read_only: false,
                config_type: d.config_type(),
                doc: d.doc,
                synonyms: topic_config::candidates(d, &topic.configs, layers)
                    .into_iter()
                    .map(|c| (c.name, Some(c.value), c.source))
                    .collect(),
            }
        })
        .collect()
}

/// This broker's configs: every key we accept; the defaults of topic configs and the
/// dynamic broker-only keys can change.
fn broker_entries(image: &MetadataImage, config: &BrokerConfig) -> Vec<Entry> {
    crate::config::known_keys()
        .map(|(key, default)| {
            let dynamic = topic_config::dynamic_broker_type_doc(key);
            let mut synonyms = Vec::new();
            for (layer, src) in [
                (&image.broker_configs, source::DYNAMIC_BROKER),
                (&image.cluster_configs, source::DYNAMIC_DEFAULT_BROKER),
                (&config.props, source::STATIC_BROKER),
            ] {
                if let Some(v) = layer.get(key).filter(|v| !v.trim().is_empty()) {
                    synonyms.push((key.to_string(), Some(v.clone()), src));
                }
            }
            let default = (!default.is_empty()).then(|| default.to_string());
            synonyms.push((key.to_string(), default, source::DEFAULT));
            let (value, src) = (synonyms[0].1.clone(), synonyms[0].2);
            Entry {
                name: key.to_string(),
                value,
                source: src,
                read_only: dynamic.is_none(),
                config_type: dynamic.map_or(topic_config::config_type::STRING, |(t, _)| t),
                doc: dynamic.map_or("", |(_, doc)| doc),
                synonyms,
            }
        })
        .collect()
}

/// The cluster-wide dynamic defaults (BROKER ""): only what is set, as Kafka lists it.
fn cluster_default_entries(image: &MetadataImage) -> Vec<Entry> {
    image
        .cluster_configs
        .iter()
        .map(|(k, v)| Entry {
            name: k.clone(),
            value: Some(v.clone()),
            source: source::DYNAMIC_DEFAULT_BROKER,
            read_only: false,
            config_type: topic_config::dynamic_broker_type_doc(k)
                .map_or(topic_config::config_type::STRING, |(t, _)| t),
            doc: topic_config::dynamic_broker_type_doc(k).map_or("", |(_, doc)| doc),
            synonyms: vec![(k.clone(), Some(v.clone()), source::DYNAMIC_DEFAULT_BROKER)],
        })
        .collect()
}

/// A created topic's configs for the CreateTopics v5+ response.
pub fn created_topic_configs(
    image: &MetadataImage,
    config: &BrokerConfig,
    topic: &TopicMeta,
) -> Vec<CreatableTopicConfigs> {
    topic_entries(image, config, topic)
        .into_iter()
        .map(|e| CreatableTopicConfigs {
            name: e.name,
            value: e.value,
            read_only: e.read_only,
            config_source: e.source,
            is_sensitive: false,
        })
        .collect()
}

pub fn describe_configs(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: DescribeConfigsRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let image = shard.image();
    let node = shard.config.node_id.to_string();
    let results = req
        .resources
        .iter()
        .map(|res| {
            let found = match res.resource_type {
                RESOURCE_TOPIC => match image.topic(&res.resource_name) {
                    Some(t) => Ok(topic_entries(&image, &shard.config, t)),
                    None => Err((
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("unknown topic {:?}", res.resource_name),
                    )),
                },
                RESOURCE_BROKER if res.resource_name == node => {
                    Ok(broker_entries(&image, &shard.config))
                }
                RESOURCE_BROKER if res.resource_name.is_empty() => {
                    Ok(cluster_default_entries(&image))
                }
                RESOURCE_BROKER => Err((
                    ErrorCode::INVALID_REQUEST,
                    format!("this is broker {node}, not broker {:?}", res.resource_name),
                )),
                other => Err((
                    ErrorCode::INVALID_REQUEST,
                    format!("resource type {other} is not supported"),
                )),
            };
            match found {
                Ok(entries) => DescribeConfigsResult {
                    error_code: 0,
                    error_message: None,
                    resource_type: res.resource_type,
                    resource_name: res.resource_name.clone(),
                    configs: entries
                        .into_iter()
                        .filter(|e| {
                            res.configuration_keys
                                .as_ref()
                                .is_none_or(|keys| keys.contains(&e.name))
                        })
                        .map(|e| DescribeConfigsResourceResult {
                            name: e.name,
                            value: e.value,
                            read_only: e.read_only,
                            config_source: e.source,
                            is_sensitive: false,
                            synonyms: if req.include_synonyms {
                                e.synonyms
                                    .into_iter()
                                    .map(|(name, value, source)| DescribeConfigsSynonym {
                                        name,
                                        value,
                                        source,
                                    })
                                    .collect()
                            } else {
                                vec![]
                            },
                            config_type: e.config_type,
                            documentation: (req.include_documentation && !e.doc.is_empty())
                                .then(|| e.doc.to_string()),
                        })
                        .collect(),
                },
                Err((code, msg)) => DescribeConfigsResult {
                    error_code: code.0,
                    error_message: Some(msg),
                    resource_type: res.resource_type,
                    resource_name: res.resource_name.clone(),
                    configs: vec![],
                },
            }
        })
        .collect();
    ctx.reply(DescribeConfigsResponse {
        throttle_time_ms: 0,
        results,
    })
}

/// A resource a change may name; other types are refused before reaching the controller.
fn resource(resource_type: i8, name: &str) -> Result<ConfigResource, ConfigChangeError> {
    match resource_type {
        RESOURCE_TOPIC => Ok(ConfigResource::Topic(name.to_string())),
        RESOURCE_BROKER => Ok(ConfigResource::Broker(name.to_string())),
        other => Err(ConfigChangeError {
            code: ErrorCode::INVALID_REQUEST,
            message: format!("resource type {other} cannot be altered"),
        }),
    }
}

/// Sends the valid changes to the controller; returns one result per input, in order.
async fn apply_changes(
    shard: &Rc<Shard>,
    changes: Vec<Result<(ConfigResource, ConfigEdit), ConfigChangeError>>,
    validate_only: bool,
) -> Vec<Result<(), ConfigChangeError>> {
    let valid: Vec<(ConfigResource, ConfigEdit)> = changes
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    let n = valid.len();
    let mut answers = if n == 0 {
        Vec::new()
    } else {
        shard
            .mailbox
            .call(shard, CONTROLLER_SHARD, move |s| {
                let s = s.clone();
                async move {
                    match &s.controller {
                        Some(c) => c.alter_configs(&s, valid, validate_only).await,
                        None => vec![],
                    }
                }
            })
            .await
            .ok()
            .filter(|v| v.len() == n)
            .unwrap_or_else(|| {
                (0..n)
                    .map(|_| {
                        Err(ConfigChangeError {
                            code: ErrorCode::KAFKA_STORAGE_ERROR,
                            message: "controller unavailable".into(),
                        })
                    })
                    .collect()
            })
    }
    .into_iter();
    changes
        .into_iter()
        .map(|c| match c {
            Err(e) => Err(e),
            Ok(_) => answers.next().unwrap_or_else(|| {
                Err(ConfigChangeError {
                    code: ErrorCode::UNKNOWN_SERVER_ERROR,
                    message: "controller gave no answer".into(),
                })
            }),
        })
        .collect()
}

fn outcome(r: &Result<(), ConfigChangeError>) -> (i16, Option<String>) {
    match r {
        Ok(()) => (0, None),
        Err(e) => {
            log::debug!("config change refused: {}", e.message);
            (e.code.0, Some(e.message.clone()))
        }
    }
}

pub async fn alter_configs(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: AlterConfigsRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let changes = req
        .resources
        .iter()
        .map(|res| {
            let target = resource(res.resource_type, &res.resource_name)?;
            // A null value removes the override, like leaving the key out.
            let all: BTreeMap<String, String> = res
                .configs
                .iter()
                .filter_map(|c| Some((c.name.clone(), c.value.clone()?)))
                .collect();
            Ok((target, ConfigEdit::Replace(all)))
        })
        .collect();
    let results = apply_changes(shard, changes, req.validate_only).await;
    let responses = req
        .resources
        .iter()
        .zip(&results)
        .map(|(res, r)| {
            let (error_code, error_message) = outcome(r);
            AlterConfigsResourceResponse {
                error_code,
                error_message,
                resource_type: res.resource_type,
                resource_name: res.resource_name.clone(),
            }
        })
        .collect();
    ctx.reply(AlterConfigsResponse {
        throttle_time_ms: 0,
        responses,
    })
}

pub async fn incremental_alter_configs(
    shard: &Rc<Shard>,
    ctx: RequestContext,
    mut r: Reader,
) -> Dispatch {
    let req: IncrementalAlterConfigsRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let changes = req
        .resources
        .iter()
        .map(|res| {
            let target = resource(res.resource_type, &res.resource_name)?;
            let ops = res
                .configs
                .iter()
                .map(|c| {
                    let op =
                        ConfigOp::from_i8(c.config_operation).ok_or_else(|| ConfigChangeError {
                            code: ErrorCode::INVALID_REQUEST,
                            message: format!(
                                "unknown operation {} for config `{}`",
                                c.config_operation, c.name
                            ),
                        })?;
                    Ok((c.name.clone(), op, c.value.clone()))
                })
                .collect::<Result<Vec<_>, ConfigChangeError>>()?;
            Ok((target, ConfigEdit::Incremental(ops)))
        })
        .collect();
    let results = apply_changes(shard, changes, req.validate_only).await;
    let responses = req
        .resources
        .iter()
        .zip(&results)
        .map(|(res, r)| {
            let (error_code, error_message) = outcome(r);
            IncrementalAlterConfigsResourceResponse {
                error_code,
                error_message,
                resource_type: res.resource_type,
                resource_name: res.resource_name.clone(),
            }
        })
        .collect();
    ctx.reply(IncrementalAlterConfigsResponse {
        throttle_time_ms: 0,
        responses,
    })
}
