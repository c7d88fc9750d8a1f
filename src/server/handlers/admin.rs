//! Topic administration and cluster description: CreateTopics (key 19, v2–7), DeleteTopics
//! (20, v1–6), CreatePartitions (37, v0–3), DescribeCluster (60, v0–1). Changes go to the
//! controller on shard 0 through the mailbox; it answers once every shard applied them.

use std::rc::Rc;

use crate::metadata::controller::{NewTopic, TopicChangeError};
use crate::metadata::TopicMeta;
use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{
    CreatableTopicResult, CreatePartitionsRequest, CreatePartitionsResponse,
    CreatePartitionsTopicResult, CreateTopicsRequest, CreateTopicsResponse, DeletableTopicResult,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterBroker, DescribeClusterRequest,
    DescribeClusterResponse,
};
use crate::protocol::wire::Reader;
use crate::shard::Shard;

use super::{decode, Dispatch, RequestContext};

const CONTROLLER_SHARD: usize = 0;

fn change_error(e: &TopicChangeError) -> (ErrorCode, String) {
    match e {
        TopicChangeError::AlreadyExists => (
            ErrorCode::TOPIC_ALREADY_EXISTS,
            "topic already exists".into(),
        ),
        TopicChangeError::UnknownTopic => (
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            "unknown topic".into(),
        ),
        TopicChangeError::InvalidName(why) => (ErrorCode::INVALID_TOPIC_EXCEPTION, why.to_string()),
        TopicChangeError::InvalidPartitions(why) => (ErrorCode::INVALID_PARTITIONS, why.clone()),
        TopicChangeError::InvalidReplicationFactor(why) => {
            (ErrorCode::INVALID_REPLICATION_FACTOR, why.clone())
        }
        TopicChangeError::Storage(why) => (ErrorCode::KAFKA_STORAGE_ERROR, why.clone()),
    }
}

/// Asks the controller to create `names` with `partitions` each (auto-creation path).
pub async fn create_via_controller(
    shard: &Rc<Shard>,
    names: Vec<String>,
    partitions: i32,
) -> Vec<Result<TopicMeta, TopicChangeError>> {
    let topics: Vec<NewTopic> = names
        .into_iter()
        .map(|name| NewTopic {
            name,
            partitions,
            configs: Default::default(),
        })
        .collect();
    controller_create(shard, topics, false).await
}

async fn controller_create(
    shard: &Rc<Shard>,
    topics: Vec<NewTopic>,
    validate_only: bool,
) -> Vec<Result<TopicMeta, TopicChangeError>> {
    let n = topics.len();
    ask_controller(shard, n, move |s| async move {
        match &s.controller {
            Some(c) => c.create_topics(&s, topics, validate_only).await,
            None => vec![],
        }
    })
    .await
}

/// Runs `op` on the controller (shard 0) and returns its `n` per-item results; if the
/// controller does not answer (shutting down), every item fails with a storage error.
async fn ask_controller<T, F, Fut>(
    shard: &Rc<Shard>,
    n: usize,
    op: F,
) -> Vec<Result<T, TopicChangeError>>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Vec<Result<T, TopicChangeError>>> + 'static,
{
    shard
        .mailbox
        .call(shard, CONTROLLER_SHARD, move |s| op(s.clone()))
        .await
        .ok()
        .filter(|v| v.len() == n)
        .unwrap_or_else(|| {
            (0..n)
                .map(|_| Err(TopicChangeError::Storage("controller unavailable".into())))
                .collect()
        })
}

pub async fn create_topics(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: CreateTopicsRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let cfg = &shard.config;
    // Validate what the controller does not see (replication, assignments), keep the order.
    let mut early: Vec<Option<(ErrorCode, String)>> = Vec::new();
    let mut to_create = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for t in &req.topics {
        let rf = if t.replication_factor == -1 {
            cfg.default_replication_factor
        } else {
            t.replication_factor
        };
        let partitions = if t.num_partitions == -1 {
            cfg.num_partitions
        } else {
            t.num_partitions
        };
        let err = if !seen.insert(t.name.clone()) {
            Some((
                ErrorCode::INVALID_REQUEST,
                "topic named twice in one request".to_string(),
            ))
        } else if !t.assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                Some((
                    ErrorCode::INVALID_REQUEST,
                    "give either assignments or partitions and replication factor".into(),
                ))
            } else if t.assignments.iter().any(|a| a.broker_ids != [cfg.node_id]) {
                Some((
                    ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                    format!("this cluster has one broker, id {}", cfg.node_id),
                ))
            } else {
                None
            }
        } else if rf != 1 {
            Some((
                ErrorCode::INVALID_REPLICATION_FACTOR,
                format!("replication factor {rf} is larger than the 1 available broker"),
            ))
        } else {
            None
        };
        let partitions = if t.assignments.is_empty() {
            partitions
        } else {
            t.assignments.len() as i32
        };
        let mut configs = std::collections::BTreeMap::new();
        let mut err = err;
        for c in &t.configs {
            match &c.value {
                Some(v) => {
                    configs.insert(c.name.clone(), v.clone());
                }
                None if err.is_none() => {
                    err = Some((
                        ErrorCode::INVALID_CONFIG,
                        format!("topic config `{}` has a null value", c.name),
                    ))
                }
                None => {}
            }
        }
        if err.is_none() {
            if let Err(why) = crate::topic_config::validate_overrides(&configs) {
                err = Some((ErrorCode::INVALID_CONFIG, why));
            }
        }
        if err.is_none() {
            to_create.push(NewTopic {
                name: t.name.clone(),
                partitions,
                configs,
            });
        }
        early.push(err);
    }
    let mut created = controller_create(shard, to_create, req.validate_only)
        .await
        .into_iter();
    let image = shard.image();
    let topics = req
        .topics
        .iter()
        .zip(early)
        .map(|(t, err)| {
            let outcome = match err {
                Some(e) => Err(e),
                None => match created.next() {
                    Some(Ok(meta)) => Ok(meta),
                    Some(Err(e)) => Err(change_error(&e)),
                    None => Err((
                        ErrorCode::UNKNOWN_SERVER_ERROR,
                        "controller gave no answer".into(),
                    )),
                },
            };
            match outcome {
                Ok(meta) => CreatableTopicResult {
                    name: t.name.clone(),
                    topic_id: meta.id,
                    error_code: 0,
                    error_message: None,
                    num_partitions: meta.partitions.len() as i32,
                    replication_factor: 1,
                    configs: Some(super::configs::created_topic_configs(
                        &image,
                        &shard.config,
                        &meta,
                    )),
                    ..Default::default()
                },
                Err((code, msg)) => CreatableTopicResult {
                    name: t.name.clone(),
                    error_code: code.0,
                    error_message: Some(msg),
                    num_partitions: -1,
                    replication_factor: -1,
                    configs: None,
                    ..Default::default()
                },
            }
        })
        .collect();
    ctx.reply(CreateTopicsResponse {
        throttle_time_ms: 0,
        topics,
    })
}

pub async fn delete_topics(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: DeleteTopicsRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let image = shard.image();
    // v6 names topics by name or id; older versions by name.
    let mut wanted: Vec<(Option<String>, [u8; 16])> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.clone()), [0; 16]))
        .collect();
    wanted.extend(req.topics.iter().map(|t| (t.name.clone(), t.topic_id)));
    let resolved: Vec<Option<String>> = wanted
        .iter()
        .map(|(name, id)| match name {
            Some(n) => Some(n.clone()),
            None => image.topic_by_id(id).map(|t| t.name.clone()),
        })
        .collect();
    if !shard.config.delete_topic_enable {
        let responses = wanted
            .iter()
            .map(|(name, id)| DeletableTopicResult {
                name: name.clone(),
                topic_id: *id,
                error_code: ErrorCode::TOPIC_DELETION_DISABLED.0,
                error_message: Some("delete.topic.enable is false".into()),
            })
            .collect();
        return ctx.reply(DeleteTopicsResponse {
            throttle_time_ms: 0,
            responses,
        });
    }
    let names: Vec<String> = resolved.iter().flatten().cloned().collect();
    let n = names.len();
    let outcome = ask_controller(shard, n, move |s| async move {
        match &s.controller {
            Some(c) => c.delete_topics(&s, names).await,
            None => vec![],
        }
    })
    .await;
    let mut outcome = outcome.into_iter();
    let responses = wanted
        .iter()
        .zip(resolved)
        .map(|((name, id), resolved)| {
            let result = match resolved {
                None => Err((ErrorCode::UNKNOWN_TOPIC_ID, "unknown topic id".to_string())),
                Some(_) => match outcome.next() {
                    Some(Ok(meta)) => Ok(meta),
                    Some(Err(e)) => Err(change_error(&e)),
                    None => Err((
                        ErrorCode::UNKNOWN_SERVER_ERROR,
                        "controller gave no answer".into(),
                    )),
                },
            };
            match result {
                Ok(meta) => DeletableTopicResult {
                    name: Some(meta.name),
                    topic_id: meta.id,
                    error_code: 0,
                    error_message: None,
                },
                Err((code, msg)) => DeletableTopicResult {
                    name: name.clone(),
                    topic_id: *id,
                    error_code: code.0,
                    error_message: Some(msg),
                },
            }
        })
        .collect();
    ctx.reply(DeleteTopicsResponse {
        throttle_time_ms: 0,
        responses,
    })
}

pub async fn create_partitions(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: CreatePartitionsRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let node = shard.config.node_id;
    let mut early = Vec::new();
    let mut asks = Vec::new();
    for t in &req.topics {
        let bad_assignment = t
            .assignments
            .as_ref()
            .is_some_and(|a| a.iter().any(|x| x.broker_ids != [node]));
        if bad_assignment {
            early.push(Some((
                ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                format!("this cluster has one broker, id {node}"),
            )));
        } else {
            early.push(None);
            asks.push((t.name.clone(), t.count));
        }
    }
    let n = asks.len();
    let validate_only = req.validate_only;
    let outcome = ask_controller(shard, n, move |s| async move {
        match &s.controller {
            Some(c) => c.create_partitions(&s, asks, validate_only).await,
            None => vec![],
        }
    })
    .await;
    let mut outcome = outcome.into_iter();
    let results = req
        .topics
        .iter()
        .zip(early)
        .map(|(t, err)| {
            let err = match err {
                Some(e) => Some(e),
                None => match outcome.next() {
                    Some(Ok(())) => None,
                    Some(Err(e)) => Some(change_error(&e)),
                    None => Some((
                        ErrorCode::UNKNOWN_SERVER_ERROR,
                        "controller gave no answer".into(),
                    )),
                },
            };
            CreatePartitionsTopicResult {
                name: t.name.clone(),
                error_code: err.as_ref().map(|e| e.0 .0).unwrap_or(0),
                error_message: err.map(|e| e.1),
            }
        })
        .collect();
    ctx.reply(CreatePartitionsResponse {
        throttle_time_ms: 0,
        results,
    })
}

pub fn describe_cluster(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: DescribeClusterRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let cfg = &shard.config;
    // endpoint_type 1 = brokers; 2 (controllers) is answered with the same single node.
    ctx.reply(DescribeClusterResponse {
        throttle_time_ms: 0,
        error_code: 0,
        error_message: None,
        endpoint_type: if ctx.version >= 1 {
            req.endpoint_type
        } else {
            1
        },
        cluster_id: shard.image().cluster_id.clone(),
        controller_id: cfg.node_id,
        brokers: vec![DescribeClusterBroker {
            broker_id: cfg.node_id,
            host: cfg.advertised_host.clone(),
            port: cfg.advertised_port as i32,
            rack: None,
        }],
        cluster_authorized_operations: i32::MIN,
    })
}
