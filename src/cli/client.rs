//! A blocking Kafka client for the command line, on the broker's own codec: one TCP connection
//! per broker, one request at a time, versions negotiated with ApiVersions. The CLI talks only
//! the wire protocol, so it works against any Kafka-compatible broker.
//!
//! [`Cluster`] starts from the bootstrap addresses, learns the brokers from Metadata, and hands
//! out connections to a partition's leader or a group's coordinator.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::api::ApiKey;
use crate::protocol::{
    decode_response, encode_request, ApiVersionsRequest, ErrorCode, FindCoordinatorRequest,
    MetadataRequest, MetadataRequestTopic, MetadataResponse, RequestBody, RequestHeader,
    ResponseBody, Writer,
};

use super::CliError;

/// Largest response frame accepted (a Fetch is bounded by its max_bytes, far below this).
const FRAME_MAX: usize = 256 << 20;

/// The versions this client writes each request in, lowest and highest: the shapes its code
/// fills in (e.g. OffsetFetch v8+ moves everything into a `groups` array, DeleteTopics v6 into
/// `topics`). The version used is the highest both sides speak.
const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 1, 3),
    (ApiKey::JoinGroup, 2, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 3, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 0),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
];

/// One connection to one broker.
pub struct Conn {
    stream: TcpStream,
    pub addr: String,
    /// The broker's (min, max) per api key.
    broker_versions: HashMap<i16, (i16, i16)>,
    next_correlation: i32,
    client_id: String,
}

impl Conn {
    /// Connects to `addr` ("host:port") and asks which versions the broker speaks.
    pub fn connect(addr: &str, client_id: &str, timeout: Duration) -> Result<Conn, CliError> {
        let connect_err = |source: std::io::Error| CliError::Connect {
            addr: addr.to_string(),
            source,
        };
        let addrs: Vec<_> = addr.to_socket_addrs().map_err(connect_err)?.collect();
        let mut last = None;
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| {
            connect_err(last.unwrap_or_else(|| std::io::Error::other("no address")))
        })?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            addr: addr.to_string(),
            broker_versions: HashMap::new(),
            next_correlation: 1,
            client_id: client_id.to_string(),
        };
        conn.set_timeout(timeout)?;
        // v0: every broker answers it, whatever it supports.
        let resp = conn.call_at(ApiVersionsRequest::default().into(), 0)?;
        let ResponseBody::ApiVersions(v) = resp else {
            return Err(CliError::Unexpected(ApiKey::ApiVersions));
        };
        if v.error_code != 0 {
            return Err(CliError::kafka("ApiVersions", v.error_code, None));
        }
        conn.broker_versions = v
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// The broker's (api key, min, max) versions, by api key.
    pub fn broker_versions(&self) -> Vec<(i16, i16, i16)> {
        let mut v: Vec<_> = self
            .broker_versions
            .iter()
            .map(|(k, (lo, hi))| (*k, *lo, *hi))
            .collect();
        v.sort_unstable();
        v
    }

    /// How long a request may wait for its response.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), CliError> {
        let io = |source| CliError::Io {
            op: "set socket timeout",
            addr: self.addr.clone(),
            source,
        };
        self.stream.set_read_timeout(Some(timeout)).map_err(io)?;
        self.stream.set_write_timeout(Some(timeout)).map_err(io)
    }

    /// The version of `api` to use with this broker: the highest both speak.
    pub fn version(&self, api: ApiKey) -> Result<i16, CliError> {
        let (_, lo, hi) = CLIENT_VERSIONS
            .iter()
            .find(|(k, _, _)| *k == api)
            .copied()
            .ok_or(CliError::NoVersion {
                api,
                addr: self.addr.clone(),
            })?;
        let (blo, bhi) =
            self.broker_versions
                .get(&(api as i16))
                .copied()
                .ok_or(CliError::NoVersion {
                    api,
                    addr: self.addr.clone(),
                })?;
        let v = hi.min(bhi);
        if v < lo.max(blo) {
            return Err(CliError::NoVersion {
                api,
                addr: self.addr.clone(),
            });
        }
        Ok(v)
    }

    /// Sends `body` at the negotiated version and waits for the response.
    pub fn call(&mut self, body: RequestBody) -> Result<ResponseBody, CliError> {
        let v = self.version(body.api_key())?;
        self.call_at(body, v)
    }

    /// Sends `body` (a Produce with acks=0) without waiting: no response comes.
    pub fn send_only(&mut self, body: RequestBody) -> Result<(), CliError> {
        let v = self.version(body.api_key())?;
        let frame = self.frame(&body, v);
        let addr = self.addr.clone();
        self.stream
            .write_all(&frame)
            .map_err(|source| CliError::Io {
                op: "write",
                addr,
                source,
            })
    }

    /// The request frame (size prefix included) of `body` at `version`, with the next
    /// correlation id.
    fn frame(&mut self, body: &RequestBody, version: i16) -> Vec<u8> {
        let correlation_id = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let header = RequestHeader {
            request_api_key: body.api_key() as i16,
            request_api_version: version,
            correlation_id,
            client_id: Some(self.client_id.clone()),
        };
        let mut w = Writer::new();
        encode_request(&mut w, &header, body);
        let len = w.len() as i32;
        let mut frame = Vec::with_capacity(4 + w.len());
        frame.extend_from_slice(&len.to_be_bytes());
        for chunk in w.finish() {
            frame.extend_from_slice(&chunk);
        }
        frame
    }

    /// Sends `body` at `version` and waits for the response.
    pub fn call_at(&mut self, body: RequestBody, version: i16) -> Result<ResponseBody, CliError> {
        let api = body.api_key();
        let correlation_id = self.next_correlation;
        let frame = self.frame(&body, version);
        let addr = self.addr.clone();
        let io = |op: &'static str| {
            let addr = addr.clone();
            move |source: std::io::Error| {
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    CliError::Timeout { api, addr }
                } else if source.kind() == std::io::ErrorKind::UnexpectedEof {
                    CliError::Closed(addr)
                } else {
                    CliError::Io { op, addr, source }
                }
            }
        };
        self.stream.write_all(&frame).map_err(io("write"))?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).map_err(io("read"))?;
        let size = i32::from_be_bytes(size);
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= FRAME_MAX)
            .ok_or(CliError::Protocol(format!(
                "{api:?} response frame of {size} bytes from {}",
                self.addr
            )))?;
        let mut buf = vec![0u8; size];
        self.stream.read_exact(&mut buf).map_err(io("read"))?;
        let (h, resp) = decode_response(Bytes::from(buf), api, version).map_err(|e| {
            CliError::Protocol(format!("decoding {api:?} v{version} response: {e}"))
        })?;
        if h.correlation_id != correlation_id {
            return Err(CliError::Protocol(format!(
                "correlation id {} in a response, expected {correlation_id}",
                h.correlation_id
            )));
        }
        Ok(resp)
    }
}

/// Settings shared by every command's connections.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub bootstrap: Vec<String>,
    pub client_id: String,
    pub request_timeout: Duration,
}

/// The brokers of a cluster, reached from its bootstrap addresses.
pub struct Cluster {
    pub config: ClientConfig,
    /// node id -> "host:port", from the last Metadata.
    brokers: HashMap<i32, String>,
    conns: HashMap<String, Conn>,
}

/// What Metadata said about one topic.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub internal: bool,
    /// Partition index -> leader node id (-1: none), in index order.
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub index: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error: ErrorCode,
}

impl Cluster {
    pub fn new(config: ClientConfig) -> Cluster {
        Cluster {
            config,
            brokers: HashMap::new(),
            conns: HashMap::new(),
        }
    }

    fn conn_to(&mut self, addr: &str) -> Result<&mut Conn, CliError> {
        if !self.conns.contains_key(addr) {
            let c = Conn::connect(addr, &self.config.client_id, self.config.request_timeout)?;
            self.conns.insert(addr.to_string(), c);
        }
        self.conns
            .get_mut(addr)
            .ok_or_else(|| CliError::Closed(addr.to_string()))
    }

    /// A connection to any broker: the first bootstrap address that answers.
    pub fn any(&mut self) -> Result<&mut Conn, CliError> {
        if let Some(addr) = self.conns.keys().next().cloned() {
            return self.conn_to(&addr);
        }
        let mut last = None;
        for addr in self.config.bootstrap.clone() {
            match Conn::connect(&addr, &self.config.client_id, self.config.request_timeout) {
                Ok(c) => {
                    self.conns.insert(addr.clone(), c);
                    return self.conn_to(&addr);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(CliError::Usage("no bootstrap server given".into())))
    }

    /// A connection to broker `node`.
    pub fn broker(&mut self, node: i32) -> Result<&mut Conn, CliError> {
        if !self.brokers.contains_key(&node) {
            self.metadata(Some(&[]))?;
        }
        let addr = self
            .brokers
            .get(&node)
            .cloned()
            .ok_or(CliError::Protocol(format!(
                "broker {node} is not in the cluster metadata"
            )))?;
        self.conn_to(&addr)
    }

    /// Metadata for `topics` (`None`: all topics); remembers the brokers.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse, CliError> {
        let req = MetadataRequest {
            topics: topics.map(|t| {
                t.iter()
                    .map(|n| MetadataRequestTopic {
                        name: Some(n.clone()),
                        ..Default::default()
                    })
                    .collect()
            }),
            allow_auto_topic_creation: false,
            ..Default::default()
        };
        let ResponseBody::Metadata(m) = self.any()?.call(req.into())? else {
            return Err(CliError::Unexpected(ApiKey::Metadata));
        };
        self.brokers = m
            .brokers
            .iter()
            .map(|b| (b.node_id, format!("{}:{}", b.host, b.port)))
            .collect();
        Ok(m)
    }

    /// One topic's partitions and leaders; an unknown topic is [`CliError::UnknownTopic`].
    /// Waits a little for leaders of a topic just created.
    pub fn topic(&mut self, name: &str) -> Result<TopicInfo, CliError> {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let m = self.metadata(Some(&[name.to_string()]))?;
            let t = m
                .topics
                .into_iter()
                .find(|t| t.name.as_deref() == Some(name))
                .ok_or_else(|| CliError::UnknownTopic(name.to_string()))?;
            let code = ErrorCode(t.error_code);
            if code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION {
                return Err(CliError::UnknownTopic(name.to_string()));
            }
            let retriable = code == ErrorCode::LEADER_NOT_AVAILABLE
                || t.partitions.iter().any(|p| p.leader_id < 0);
            if code != ErrorCode::NONE && !retriable {
                return Err(CliError::kafka(
                    &format!("Metadata for topic {name}"),
                    t.error_code,
                    None,
                ));
            }
            if !retriable || Instant::now() >= deadline {
                let mut partitions: Vec<PartitionInfo> = t
                    .partitions
                    .into_iter()
                    .map(|p| PartitionInfo {
                        index: p.partition_index,
                        leader: p.leader_id,
                        replicas: p.replica_nodes,
                        isr: p.isr_nodes,
                        error: ErrorCode(p.error_code),
                    })
                    .collect();
                partitions.sort_by_key(|p| p.index);
                return Ok(TopicInfo {
                    name: name.to_string(),
                    internal: t.is_internal,
                    partitions,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A connection to the coordinator of `key` (`key_type` 0: group, 1: transaction).
    pub fn coordinator(&mut self, key: &str, key_type: i8) -> Result<&mut Conn, CliError> {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let req = FindCoordinatorRequest {
                key: key.to_string(),
                key_type,
                ..Default::default()
            };
            let ResponseBody::FindCoordinator(r) = self.any()?.call(req.into())? else {
                return Err(CliError::Unexpected(ApiKey::FindCoordinator));
            };
            let code = ErrorCode(r.error_code);
            if code == ErrorCode::NONE {
                let addr = format!("{}:{}", r.host, r.port);
                self.brokers.insert(r.node_id, addr.clone());
                return self.conn_to(&addr);
            }
            let retriable = code == ErrorCode::COORDINATOR_NOT_AVAILABLE
                || code == ErrorCode::COORDINATOR_LOAD_IN_PROGRESS;
            if !retriable || Instant::now() >= deadline {
                return Err(CliError::kafka(
                    &format!("FindCoordinator for {key}"),
                    r.error_code,
                    r.error_message,
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// ListOffsets timestamps with a meaning (KIP-79, KIP-734).
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;

impl Cluster {
    /// The offset for `timestamp` (or [`LATEST`]/[`EARLIEST`]) of each partition of `topic`
    /// listed, asking each partition's leader. A timestamp after the last record gives -1, as
    /// Kafka answers.
    pub fn list_offsets(
        &mut self,
        topic: &TopicInfo,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<std::collections::BTreeMap<i32, i64>, CliError> {
        use crate::protocol::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic};
        let mut by_leader: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
        for p in partitions {
            let leader = topic
                .partitions
                .iter()
                .find(|i| i.index == *p)
                .map(|i| i.leader)
                .ok_or_else(|| {
                    CliError::Usage(format!("topic {} has no partition {p}", topic.name))
                })?;
            by_leader.entry(leader).or_default().push(*p);
        }
        let mut out = std::collections::BTreeMap::new();
        for (leader, parts) in by_leader {
            let req = ListOffsetsRequest {
                replica_id: -1,
                topics: vec![ListOffsetsTopic {
                    name: topic.name.clone(),
                    partitions: parts
                        .iter()
                        .map(|p| ListOffsetsPartition {
                            partition_index: *p,
                            timestamp,
                            ..Default::default()
                        })
                        .collect(),
                }],
                ..Default::default()
            };
            let ResponseBody::ListOffsets(r) = self.broker(leader)?.call(req.into())? else {
                return Err(CliError::Unexpected(ApiKey::ListOffsets));
            };
            for t in r.topics {
                for p in t.partitions {
                    if p.error_code != 0 {
                        return Err(CliError::kafka(
                            &format!("ListOffsets for {}-{}", t.name, p.partition_index),
                            p.error_code,
                            None,
                        ));
                    }
                    out.insert(p.partition_index, p.offset);
                }
            }
        }
        // Callers index the answer by the partitions they asked for.
        if let Some(p) = partitions.iter().find(|p| !out.contains_key(p)) {
            return Err(CliError::Protocol(format!(
                "ListOffsets answered no offset for {}-{p}",
                topic.name
            )));
        }
        Ok(out)
    }
}
