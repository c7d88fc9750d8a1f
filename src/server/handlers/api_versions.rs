//! ApiVersions (key 18), v0–3: the versions in [`super::API_TABLE`], nothing else.
//! A request newer than we know is answered in v0 with UNSUPPORTED_VERSION and the full list,
//! so the client can pick a version we speak (KIP-511).

use std::rc::Rc;

use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{ApiVersion, ApiVersionsRequest, ApiVersionsResponse};
use crate::protocol::wire::Reader;
use crate::shard::Shard;

use super::{decode, Dispatch, RequestContext, API_TABLE};

fn versions() -> Vec<ApiVersion> {
    API_TABLE
        .iter()
        .map(|(k, lo, hi)| ApiVersion {
            api_key: *k as i16,
            min_version: *lo,
            max_version: *hi,
        })
        .collect()
}

pub fn handle(_shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    if let Err(d) = decode::<ApiVersionsRequest>(&ctx, &mut r) {
        return d;
    }
    ctx.reply(ApiVersionsResponse {
        error_code: ErrorCode::NONE.0,
        api_keys: versions(),
        ..Default::default()
    })
}

pub fn unsupported(ctx: &RequestContext) -> Dispatch {
    let v0 = RequestContext {
        version: 0,
        ..ctx.clone()
    };
    v0.reply(ApiVersionsResponse {
        error_code: ErrorCode::UNSUPPORTED_VERSION.0,
        api_keys: versions(),
        ..Default::default()
    })
}
