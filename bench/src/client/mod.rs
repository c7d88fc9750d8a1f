//! The bench's own Kafka client: connections ([`connection`]), RecordBatch building and reading
//! ([`batch`]), producer tasks ([`producer`]) and a transactional producer's coordinator session
//! ([`txn`]), consumer tasks ([`consumer`]), a classic consumer group member ([`group`]), and the
//! few admin calls a run needs (metadata with partition leaders, topic creation, list offsets).
//!
//! Every task runs on one pinned bench core and owns its connections; nothing here is shared
//! between cores. Results leave a core only as plain data (see `crate::run`).

pub mod batch;
pub mod connection;
pub mod consumer;
pub mod group;
pub mod producer;
pub mod txn;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use odradek::protocol::api::ApiKey;
use odradek::protocol::{
    CreatableTopic, CreateTopicsRequest, ErrorCode, ListOffsetsPartition, ListOffsetsRequest,
    ListOffsetsTopic, MetadataRequest, MetadataRequestTopic, ResponseBody,
};

pub use connection::{ConnError, Connection};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("topic {topic}: {code}")]
    Topic { topic: String, code: ErrorCode },
    #[error("topic {topic}: no leader for partition {partition} after {waited_s} s")]
    NoLeader {
        topic: String,
        partition: i32,
        waited_s: u64,
    },
    #[error("topic {topic} has {have} partitions, the run needs {want}")]
    PartitionCount {
        topic: String,
        have: usize,
        want: usize,
    },
    #[error("list offsets, partition {partition}: {code}")]
    ListOffsets { partition: i32, code: ErrorCode },
    #[error("unexpected response to {0:?}")]
    Unexpected(ApiKey),
}

/// Where each partition of the run's topic lives.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub topic: String,
    /// Leader address ("host:port") of partition i, i = 0..n.
    pub leaders: Vec<String>,
    /// The distinct leader addresses, and for partition i the index of its leader in them.
    pub leader_addrs: Vec<String>,
    pub leader_index: Vec<usize>,
}

impl TopicLayout {
    pub fn new(topic: String, leaders: Vec<String>) -> TopicLayout {
        let mut leader_addrs: Vec<String> = Vec::new();
        let leader_index = leaders
            .iter()
            .map(|l| match leader_addrs.iter().position(|a| a == l) {
                Some(i) => i,
                None => {
                    leader_addrs.push(l.clone());
                    leader_addrs.len() - 1
                }
            })
            .collect();
        TopicLayout {
            topic,
            leaders,
            leader_addrs,
            leader_index,
        }
    }

    pub fn partitions(&self) -> usize {
        self.leaders.len()
    }
}

/// Reads the topic's leaders; creates the topic with `partitions` partitions if it is missing
/// (when `create`), then waits until every partition has a leader.
pub async fn ensure_topic(
    bootstrap: &str,
    topic: &str,
    partitions: usize,
    create: bool,
) -> Result<TopicLayout, ClientError> {
    let mut conn = Connection::connect(bootstrap).await?;
    let started = Instant::now();
    let mut created = false;
    loop {
        let resp = conn
            .call(MetadataRequest {
                topics: Some(vec![MetadataRequestTopic {
                    name: Some(topic.to_string()),
                    ..Default::default()
                }]),
                allow_auto_topic_creation: false,
                ..Default::default()
            })
            .await?;
        let ResponseBody::Metadata(md) = resp else {
            return Err(ClientError::Unexpected(ApiKey::Metadata));
        };
        let brokers: BTreeMap<i32, String> = md
            .brokers
            .iter()
            .map(|b| (b.node_id, format!("{}:{}", b.host, b.port)))
            .collect();
        let t = md.topics.iter().find(|t| t.name.as_deref() == Some(topic));
        let code = t.map_or(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, |t| {
            ErrorCode(t.error_code)
        });
        if code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION && create && !created {
            let resp = conn
                .call(CreateTopicsRequest {
                    topics: vec![CreatableTopic {
                        name: topic.to_string(),
                        num_partitions: partitions as i32,
                        replication_factor: -1,
                        ..Default::default()
                    }],
                    timeout_ms: 30_000,
                    ..Default::default()
                })
                .await?;
            let ResponseBody::CreateTopics(ct) = resp else {
                return Err(ClientError::Unexpected(ApiKey::CreateTopics));
            };
            for r in ct.topics {
                let c = ErrorCode(r.error_code);
                if c != ErrorCode::NONE && c != ErrorCode::TOPIC_ALREADY_EXISTS {
                    return Err(ClientError::Topic {
                        topic: topic.to_string(),
                        code: c,
                    });
                }
            }
            created = true;
            continue;
        }
        let waited = started.elapsed();
        if code != ErrorCode::NONE {
            if waited > Duration::from_secs(30)
                || (!create && code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
            {
                return Err(ClientError::Topic {
                    topic: topic.to_string(),
                    code,
                });
            }
        } else if let Some(t) = t {
            let mut leaders = vec![None; t.partitions.len()];
            for p in &t.partitions {
                if let Some(slot) = leaders.get_mut(p.partition_index as usize) {
                    if p.error_code == 0 {
                        *slot = brokers.get(&p.leader_id).cloned();
                    }
                }
            }
            if let Some(missing) = leaders.iter().position(|l| l.is_none()) {
                if waited > Duration::from_secs(30) {
                    return Err(ClientError::NoLeader {
                        topic: topic.to_string(),
                        partition: missing as i32,
                        waited_s: waited.as_secs(),
                    });
                }
            } else {
                let leaders: Vec<String> = leaders.into_iter().flatten().collect();
                if create && leaders.len() < partitions {
                    return Err(ClientError::PartitionCount {
                        topic: topic.to_string(),
                        have: leaders.len(),
                        want: partitions,
                    });
                }
                return Ok(TopicLayout::new(topic.to_string(), leaders));
            }
        }
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
}

/// ListOffsets for every partition of the layout: `timestamp` -1 = latest, -2 = earliest.
/// Asks each partition's leader.
pub async fn list_offsets(layout: &TopicLayout, timestamp: i64) -> Result<Vec<i64>, ClientError> {
    let mut by_leader: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (p, l) in layout.leaders.iter().enumerate() {
        by_leader.entry(l.as_str()).or_default().push(p as i32);
    }
    let mut out = vec![0i64; layout.partitions()];
    for (leader, parts) in by_leader {
        let mut conn = Connection::connect(leader).await?;
        let resp = conn
            .call(ListOffsetsRequest {
                replica_id: -1,
                topics: vec![ListOffsetsTopic {
                    name: layout.topic.clone(),
                    partitions: parts
                        .iter()
                        .map(|&p| ListOffsetsPartition {
                            partition_index: p,
                            timestamp,
                            ..Default::default()
                        })
                        .collect(),
                }],
                ..Default::default()
            })
            .await?;
        let ResponseBody::ListOffsets(lo) = resp else {
            return Err(ClientError::Unexpected(ApiKey::ListOffsets));
        };
        for t in lo.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(ClientError::ListOffsets {
                        partition: p.partition_index,
                        code: ErrorCode(p.error_code),
                    });
                }
                if let Some(slot) = out.get_mut(p.partition_index as usize) {
                    *slot = p.offset;
                }
            }
        }
    }
    Ok(out)
}
