//! One enum per direction over every message the codec implements, plus frame-level helpers, so
//! the server can dispatch on a decoded request and the CLI/bench client can do the reverse.
//!
//! Frames here exclude the 4-byte size prefix: the connection layer reads/writes it (use
//! [`Writer::len`] after encoding for the prefix value).

use bytes::Bytes;

use super::api::ApiKey;
use super::codec::Message;
use super::header::{response_header_version, RequestHeader, ResponseHeader};
use super::messages::*;
use super::wire::{DecodeError, Reader, Writer};

macro_rules! bodies {
    ($($variant:ident($req:ty, $resp:ty)),* $(,)?) => {
        /// A decoded request body; the variant names are the [`ApiKey`] names.
        #[derive(Debug, Clone, PartialEq)]
        pub enum RequestBody { $($variant($req),)* }

        /// A response body; the variant names are the [`ApiKey`] names.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ResponseBody { $($variant($resp),)* }

        impl RequestBody {
            /// Decodes the body of `api_key` at `version` (the reader is left after the body).
            /// Errors: `UnsupportedVersion` outside the codec's range, `UnsupportedApiKey` for an
            /// api the codec does not implement, or a malformed-input error.
            pub fn decode(api_key: ApiKey, version: i16, r: &mut Reader) -> Result<Self, DecodeError> {
                match api_key {
                    $(ApiKey::$variant => Ok(Self::$variant(<$req as Message>::decode(r, version)?)),)*
                    #[allow(unreachable_patterns)]
                    other => Err(DecodeError::UnsupportedApiKey(other as i16)),
                }
            }

            pub fn api_key(&self) -> ApiKey {
                match self { $(Self::$variant(_) => ApiKey::$variant,)* }
            }

            pub fn encode(&self, w: &mut Writer, version: i16) {
                match self { $(Self::$variant(m) => m.encode(w, version),)* }
            }
        }

        impl ResponseBody {
            pub fn decode(api_key: ApiKey, version: i16, r: &mut Reader) -> Result<Self, DecodeError> {
                match api_key {
                    $(ApiKey::$variant => Ok(Self::$variant(<$resp as Message>::decode(r, version)?)),)*
                    #[allow(unreachable_patterns)]
                    other => Err(DecodeError::UnsupportedApiKey(other as i16)),
                }
            }

            pub fn api_key(&self) -> ApiKey {
                match self { $(Self::$variant(_) => ApiKey::$variant,)* }
            }

            pub fn encode(&self, w: &mut Writer, version: i16) {
                match self { $(Self::$variant(m) => m.encode(w, version),)* }
            }
        }

        /// (api, request versions, request flexible min, response versions, response flexible
        /// min) of every implemented message, checked against [`super::api`] in the tests.
        #[cfg(test)]
        const CODEC_TABLE: &[(ApiKey, (i16, i16), i16, (i16, i16), i16)] = &[$(
            (
                ApiKey::$variant,
                <$req as Message>::VERSIONS,
                <$req as Message>::FLEXIBLE_MIN,
                <$resp as Message>::VERSIONS,
                <$resp as Message>::FLEXIBLE_MIN,
            ),
        )*];

        $(
            impl From<$req> for RequestBody {
                fn from(m: $req) -> Self { Self::$variant(m) }
            }
            impl From<$resp> for ResponseBody {
                fn from(m: $resp) -> Self { Self::$variant(m) }
            }
        )*
    };
}

bodies! {
    Produce(ProduceRequest, ProduceResponse),
    Fetch(FetchRequest, FetchResponse),
    ListOffsets(ListOffsetsRequest, ListOffsetsResponse),
    Metadata(MetadataRequest, MetadataResponse),
    FindCoordinator(FindCoordinatorRequest, FindCoordinatorResponse),
    ApiVersions(ApiVersionsRequest, ApiVersionsResponse),
    CreateTopics(CreateTopicsRequest, CreateTopicsResponse),
    DeleteTopics(DeleteTopicsRequest, DeleteTopicsResponse),
    InitProducerId(InitProducerIdRequest, InitProducerIdResponse),
    AddPartitionsToTxn(AddPartitionsToTxnRequest, AddPartitionsToTxnResponse),
    AddOffsetsToTxn(AddOffsetsToTxnRequest, AddOffsetsToTxnResponse),
    EndTxn(EndTxnRequest, EndTxnResponse),
    WriteTxnMarkers(WriteTxnMarkersRequest, WriteTxnMarkersResponse),
    TxnOffsetCommit(TxnOffsetCommitRequest, TxnOffsetCommitResponse),
    DescribeTransactions(DescribeTransactionsRequest, DescribeTransactionsResponse),
    ListTransactions(ListTransactionsRequest, ListTransactionsResponse),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse),
    CreatePartitions(CreatePartitionsRequest, CreatePartitionsResponse),
    DescribeCluster(DescribeClusterRequest, DescribeClusterResponse),
    JoinGroup(JoinGroupRequest, JoinGroupResponse),
    SyncGroup(SyncGroupRequest, SyncGroupResponse),
    Heartbeat(HeartbeatRequest, HeartbeatResponse),
    LeaveGroup(LeaveGroupRequest, LeaveGroupResponse),
    OffsetCommit(OffsetCommitRequest, OffsetCommitResponse),
    OffsetFetch(OffsetFetchRequest, OffsetFetchResponse),
    OffsetDelete(OffsetDeleteRequest, OffsetDeleteResponse),
    ListGroups(ListGroupsRequest, ListGroupsResponse),
    DescribeGroups(DescribeGroupsRequest, DescribeGroupsResponse),
    DeleteGroups(DeleteGroupsRequest, DeleteGroupsResponse),
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse),
    ConsumerGroupDescribe(ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse),
    DescribeConfigs(DescribeConfigsRequest, DescribeConfigsResponse),
    AlterConfigs(AlterConfigsRequest, AlterConfigsResponse),
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse),
    DeleteRecords(DeleteRecordsRequest, DeleteRecordsResponse),
    DescribeLogDirs(DescribeLogDirsRequest, DescribeLogDirsResponse),
    DescribeTopicPartitions(DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse),
}

/// Decodes a request frame (size prefix already stripped).
///
/// The outer error means the header itself is unreadable: close the connection. Otherwise the
/// header is returned with the body result, so a body error (unsupported version, malformed
/// body) can still be answered with the right correlation id. An unknown api key yields
/// `Err(UnknownApiKey)` in the body result; the server closes the connection for it.
pub fn decode_request(
    frame: Bytes,
) -> Result<(RequestHeader, Result<RequestBody, DecodeError>), DecodeError> {
    let mut r = Reader::new(frame);
    let header = RequestHeader::decode(&mut r)?;
    let body = match header.api_key() {
        Some(key) => RequestBody::decode(key, header.request_api_version, &mut r),
        None => Err(DecodeError::UnknownApiKey(header.request_api_key)),
    };
    Ok((header, body))
}

/// Writes a request frame: header (v1 or v2 as the api/version requires) then body.
pub fn encode_request(w: &mut Writer, header: &RequestHeader, body: &RequestBody) {
    header.encode(w);
    body.encode(w, header.request_api_version);
}

/// Writes a response frame: the response header (v0 for ApiVersions, else v0/v1 by
/// flexibility), then the body at `version` (the request's version).
pub fn encode_response(w: &mut Writer, correlation_id: i32, version: i16, body: &ResponseBody) {
    let hv = response_header_version(body.api_key(), version);
    ResponseHeader { correlation_id }.encode(w, hv);
    body.encode(w, version);
}

/// Decodes a response frame for a request of `api_key` at `version` (client side).
pub fn decode_response(
    frame: Bytes,
    api_key: ApiKey,
    version: i16,
) -> Result<(ResponseHeader, ResponseBody), DecodeError> {
    let mut r = Reader::new(frame);
    let header = ResponseHeader::decode(&mut r, response_header_version(api_key, version))?;
    let body = ResponseBody::decode(api_key, version, &mut r)?;
    Ok((header, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_frame_round_trip_and_errors() {
        let header = RequestHeader {
            request_api_key: ApiKey::Metadata as i16,
            request_api_version: 12,
            correlation_id: 42,
            client_id: Some("cli".into()),
        };
        let body = RequestBody::from(MetadataRequest {
            topics: None,
            ..Default::default()
        });
        let mut w = Writer::new();
        encode_request(&mut w, &header, &body);
        let (h, b) = decode_request(Bytes::from(w.into_vec())).unwrap();
        assert_eq!(h, header);
        assert_eq!(b.unwrap(), body);

        // Known key, unsupported version: header decodes, body reports the version.
        let mut w = Writer::new();
        RequestHeader {
            request_api_key: 0,
            request_api_version: 2,
            ..header.clone()
        }
        .encode(&mut w);
        let (h, b) = decode_request(Bytes::from(w.into_vec())).unwrap();
        assert_eq!(h.correlation_id, 42);
        assert!(matches!(
            b,
            Err(DecodeError::UnsupportedVersion {
                api_key: 0,
                version: 2
            })
        ));

        // Unknown key.
        let mut w = Writer::new();
        RequestHeader {
            request_api_key: 999,
            ..header.clone()
        }
        .encode(&mut w);
        let (_, b) = decode_request(Bytes::from(w.into_vec())).unwrap();
        assert_eq!(b, Err(DecodeError::UnknownApiKey(999)));

        // Known key the codec does not implement (SaslHandshake).
        let mut w = Writer::new();
        RequestHeader {
            request_api_key: 17,
            request_api_version: 1,
            ..header
        }
        .encode(&mut w);
        let (_, b) = decode_request(Bytes::from(w.into_vec())).unwrap();
        assert_eq!(b, Err(DecodeError::UnsupportedApiKey(17)));

        // Truncated header.
        assert!(decode_request(Bytes::from_static(&[0, 3, 0])).is_err());
    }

    /// `SUPPORTED` and `ApiKey::flexible_min` say exactly what the message definitions say.
    #[test]
    fn api_table_matches_message_definitions() {
        use super::super::api::{supported_versions, SUPPORTED};
        assert_eq!(CODEC_TABLE.len(), SUPPORTED.len());
        for &(key, req_versions, req_flex, resp_versions, resp_flex) in CODEC_TABLE {
            assert_eq!(req_versions, resp_versions, "{key:?}");
            assert_eq!(supported_versions(key), Some(req_versions), "{key:?}");
            let flex = key.flexible_min();
            assert_eq!((req_flex, resp_flex), (flex, flex), "{key:?}");
        }
    }

    #[test]
    fn api_versions_response_uses_header_v0() {
        let body = ResponseBody::from(ApiVersionsResponse {
            error_code: 35,
            ..Default::default()
        });
        let mut w = Writer::new();
        encode_response(&mut w, 7, 3, &body);
        let bytes = w.into_vec();
        // correlation id, then straight into the v3 body (no header tagged-field byte).
        assert_eq!(&bytes[..6], &[0, 0, 0, 7, 0, 35]);
        let (h, b) = decode_response(Bytes::from(bytes), ApiKey::ApiVersions, 3).unwrap();
        assert_eq!(h.correlation_id, 7);
        assert_eq!(b, body);
    }
}
