//! Request and response headers.
//!
//! Request header v1 = api key, api version, correlation id, client id (i16-length nullable
//! string); v2 adds a tagged-field section. The client id keeps the old i16 length even in v2 so
//! that any broker can read the header of an ApiVersions request newer than it knows (KIP-511):
//! we always decode the header first, then decide whether the body version is served.
//!
//! Response header v0 = correlation id; v1 adds an (empty) tagged-field section. The ApiVersions
//! response always uses v0, whatever its version, so that a client can parse the answer to a
//! request whose version the broker did not support.

use super::api::{request_is_flexible, response_is_flexible, ApiKey};
use super::wire::{DecodeError, Reader, Writer};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHeader {
    pub request_api_key: i16,
    pub request_api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
}

/// Request header version (1 or 2) for an api key and version. Unknown keys are treated as v1:
/// the server closes the connection on them anyway.
pub fn request_header_version(api_key: i16, api_version: i16) -> i16 {
    match ApiKey::from_i16(api_key) {
        Some(k) if request_is_flexible(k, api_version) => 2,
        _ => 1,
    }
}

/// Response header version (0 or 1); always 0 for ApiVersions.
pub fn response_header_version(api_key: ApiKey, api_version: i16) -> i16 {
    if api_key != ApiKey::ApiVersions && response_is_flexible(api_key, api_version) {
        1
    } else {
        0
    }
}

impl RequestHeader {
    /// The api key, if Kafka defines it.
    pub fn api_key(&self) -> Option<ApiKey> {
        ApiKey::from_i16(self.request_api_key)
    }

    /// Decodes the header at the start of a request frame; the reader is left at the body.
    pub fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let request_api_key = r.read_i16()?;
        let request_api_version = r.read_i16()?;
        let correlation_id = r.read_i32()?;
        // The client id is never compact, even in header v2.
        let client_id = r.read_nullable_string(false)?;
        if request_header_version(request_api_key, request_api_version) >= 2 {
            // No tagged fields are defined for the request header yet; skip any a client sends.
            r.read_tagged_fields(|_, _| Ok(false))?;
        }
        Ok(RequestHeader {
            request_api_key,
            request_api_version,
            correlation_id,
            client_id,
        })
    }

    pub fn encode(&self, w: &mut Writer) {
        w.put_i16(self.request_api_key);
        w.put_i16(self.request_api_version);
        w.put_i32(self.correlation_id);
        w.put_nullable_string(self.client_id.as_deref(), false);
        if request_header_version(self.request_api_key, self.request_api_version) >= 2 {
            w.put_uvarint(0);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseHeader {
    pub correlation_id: i32,
}

impl ResponseHeader {
    /// `header_version` from [`response_header_version`].
    pub fn decode(r: &mut Reader, header_version: i16) -> Result<Self, DecodeError> {
        let correlation_id = r.read_i32()?;
        if header_version >= 1 {
            r.read_tagged_fields(|_, _| Ok(false))?;
        }
        Ok(ResponseHeader { correlation_id })
    }

    pub fn encode(&self, w: &mut Writer, header_version: i16) {
        w.put_i32(self.correlation_id);
        if header_version >= 1 {
            w.put_uvarint(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn versions() {
        assert_eq!(request_header_version(ApiKey::Produce as i16, 8), 1);
        assert_eq!(request_header_version(ApiKey::Produce as i16, 9), 2);
        assert_eq!(request_header_version(ApiKey::ApiVersions as i16, 3), 2);
        assert_eq!(request_header_version(999, 3), 1);
        assert_eq!(response_header_version(ApiKey::ApiVersions, 3), 0);
        assert_eq!(response_header_version(ApiKey::Metadata, 9), 1);
        assert_eq!(response_header_version(ApiKey::Metadata, 8), 0);
    }

    #[test]
    fn too_new_api_versions_request_header_decodes() {
        // ApiVersions v99 (unknown to us) with a client software name tagged section: the header
        // must decode so the server can answer UNSUPPORTED_VERSION in v0.
        let mut w = Writer::new();
        let h = RequestHeader {
            request_api_key: 18,
            request_api_version: 99,
            correlation_id: 7,
            client_id: Some("rdkafka".into()),
        };
        h.encode(&mut w);
        w.put_raw(&[1, 2, 3]); // body we do not understand
        let mut r = Reader::new(Bytes::from(w.into_vec()));
        assert_eq!(RequestHeader::decode(&mut r).unwrap(), h);
        assert_eq!(r.remaining(), 3);
    }

    #[test]
    fn null_client_id_and_truncation() {
        let h = RequestHeader {
            request_api_key: 3,
            request_api_version: 1,
            correlation_id: -5,
            client_id: None,
        };
        let mut w = Writer::new();
        h.encode(&mut w);
        let b = w.into_vec();
        assert_eq!(
            RequestHeader::decode(&mut Reader::new(Bytes::from(b.clone()))).unwrap(),
            h
        );
        for n in 0..b.len() {
            assert!(
                RequestHeader::decode(&mut Reader::new(Bytes::copy_from_slice(&b[..n]))).is_err()
            );
        }
    }
}
