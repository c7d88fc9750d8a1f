//! Raw Kafka wire client for black-box tests: requests encoded and responses decoded with the
//! broker's own codec (`odradek::protocol`, checked byte for byte against the `kafka-protocol`
//! crate by `tests/protocol_oracle.rs`). A test crate using it declares `mod common;` too.
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};

use bytes::Bytes;
use odradek::protocol::messages::*;
use odradek::protocol::{self, ApiKey, Message, Reader, RequestHeader, ResponseHeader, Writer};

use crate::common::{raw_connect, read_frame};

/// A request body and the response body it is answered with.
pub trait Rpc: Message {
    type Response: Message;
}

impl Rpc for ProduceRequest {
    type Response = ProduceResponse;
}
impl Rpc for FetchRequest {
    type Response = FetchResponse;
}
impl Rpc for ListOffsetsRequest {
    type Response = ListOffsetsResponse;
}
impl Rpc for MetadataRequest {
    type Response = MetadataResponse;
}
impl Rpc for ApiVersionsRequest {
    type Response = ApiVersionsResponse;
}
impl Rpc for CreateTopicsRequest {
    type Response = CreateTopicsResponse;
}
impl Rpc for DeleteTopicsRequest {
    type Response = DeleteTopicsResponse;
}
impl Rpc for CreatePartitionsRequest {
    type Response = CreatePartitionsResponse;
}
impl Rpc for InitProducerIdRequest {
    type Response = InitProducerIdResponse;
}
impl Rpc for OffsetForLeaderEpochRequest {
    type Response = OffsetForLeaderEpochResponse;
}
impl Rpc for FindCoordinatorRequest {
    type Response = FindCoordinatorResponse;
}
impl Rpc for OffsetCommitRequest {
    type Response = OffsetCommitResponse;
}
impl Rpc for OffsetFetchRequest {
    type Response = OffsetFetchResponse;
}
impl Rpc for JoinGroupRequest {
    type Response = JoinGroupResponse;
}
impl Rpc for SyncGroupRequest {
    type Response = SyncGroupResponse;
}
impl Rpc for HeartbeatRequest {
    type Response = HeartbeatResponse;
}
impl Rpc for LeaveGroupRequest {
    type Response = LeaveGroupResponse;
}
impl Rpc for ConsumerGroupHeartbeatRequest {
    type Response = ConsumerGroupHeartbeatResponse;
}
impl Rpc for ConsumerGroupDescribeRequest {
    type Response = ConsumerGroupDescribeResponse;
}
impl Rpc for DescribeGroupsRequest {
    type Response = DescribeGroupsResponse;
}
impl Rpc for ListGroupsRequest {
    type Response = ListGroupsResponse;
}
impl Rpc for DeleteGroupsRequest {
    type Response = DeleteGroupsResponse;
}
impl Rpc for OffsetDeleteRequest {
    type Response = OffsetDeleteResponse;
}
impl Rpc for DescribeConfigsRequest {
    type Response = DescribeConfigsResponse;
}
impl Rpc for AlterConfigsRequest {
    type Response = AlterConfigsResponse;
}
impl Rpc for IncrementalAlterConfigsRequest {
    type Response = IncrementalAlterConfigsResponse;
}
impl Rpc for DeleteRecordsRequest {
    type Response = DeleteRecordsResponse;
}
impl Rpc for DescribeLogDirsRequest {
    type Response = DescribeLogDirsResponse;
}
impl Rpc for DescribeTopicPartitionsRequest {
    type Response = DescribeTopicPartitionsResponse;
}

/// One client connection; correlation ids count up from 1.
pub struct Conn {
    pub stream: TcpStream,
    next_correlation_id: i32,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        Conn {
            stream: raw_connect(addr),
            next_correlation_id: 1,
        }
    }

    /// The size-prefixed frame of `req` at `version`, and its correlation id.
    pub fn frame<R: Message>(&mut self, req: &R, version: i16) -> (i32, Vec<u8>) {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut w = Writer::new();
        RequestHeader {
            request_api_key: R::API_KEY as i16,
            request_api_version: version,
            correlation_id,
            client_id: Some("broker-semantics".into()),
        }
        .encode(&mut w);
        req.encode(&mut w, version);
        let mut out = Vec::with_capacity(w.len() + 4);
        out.extend_from_slice(&(w.len() as u32).to_be_bytes());
        for chunk in w.finish() {
            out.extend_from_slice(&chunk);
        }
        (correlation_id, out)
    }

    pub fn send<R: Message>(&mut self, req: &R, version: i16) -> i32 {
        let (correlation_id, bytes) = self.frame(req, version);
        self.stream
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("write {:?} v{version}: {e}", R::API_KEY));
        correlation_id
    }

    /// Reads the next response frame; checks its correlation id; returns the body reader.
    pub fn recv_body(&mut self, api_key: ApiKey, version: i16, correlation_id: i32) -> Reader {
        let frame = read_frame(&mut self.stream).unwrap_or_else(|e| {
            panic!("no response to {api_key:?} v{version} (correlation id {correlation_id}): {e}")
        });
        let mut r = Reader::new(Bytes::from(frame));
        let header =
            ResponseHeader::decode(&mut r, protocol::response_header_version(api_key, version))
                .unwrap_or_else(|e| panic!("{api_key:?} v{version} response header: {e}"));
        assert_eq!(
            header.correlation_id, correlation_id,
            "correlation id of the next response (expected the {api_key:?} v{version} request's)"
        );
        r
    }

    pub fn recv<R: Message>(&mut self, version: i16, correlation_id: i32) -> R {
        let mut r = self.recv_body(R::API_KEY, version, correlation_id);
        decode_body(&mut r, version)
    }

    pub fn call<R: Rpc>(&mut self, req: &R, version: i16) -> R::Response {
        let correlation_id = self.send(req, version);
        self.recv(version, correlation_id)
    }
}

pub fn decode_body<R: Message>(r: &mut Reader, version: i16) -> R {
    let body = R::decode(r, version)
        .unwrap_or_else(|e| panic!("decode {:?} v{version} response: {e}", R::API_KEY));
    assert_eq!(
        r.remaining(),
        0,
        "trailing bytes after {:?} v{version} response",
        R::API_KEY
    );
    body
}

/// CreateTopics v7 of one topic (replication factor 1): its result.
pub fn create_topic(conn: &mut Conn, name: &str, partitions: i32) -> CreatableTopicResult {
    let resp = conn.call(
        &CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: name.into(),
                num_partitions: partitions,
                replication_factor: 1,
                ..Default::default()
            }],
            timeout_ms: 10_000,
            validate_only: false,
        },
        7,
    );
    assert_eq!(resp.topics.len(), 1, "CreateTopics {name}: {resp:?}");
    resp.topics.into_iter().next().unwrap()
}

/// As [`create_topic`], asserting success: the new topic's id.
pub fn create_topic_ok(conn: &mut Conn, name: &str, partitions: i32) -> [u8; 16] {
    let t = create_topic(conn, name, partitions);
    assert_eq!(
        (t.name.as_str(), t.error_code),
        (name, 0),
        "CreateTopics {name}: {t:?}"
    );
    t.topic_id
}
