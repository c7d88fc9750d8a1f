//! FindCoordinator (key 10), v0–4. Consumer groups and transactions are not implemented yet
//! (their issues), so every key is answered COORDINATOR_NOT_AVAILABLE — a retriable error that
//! makes group clients wait rather than fail. The API is advertised anyway because librdkafka
//! only enables LZ4 compression for brokers that advertise FindCoordinator.

use std::rc::Rc;

use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{Coordinator, FindCoordinatorRequest, FindCoordinatorResponse};
use crate::protocol::wire::Reader;
use crate::shard::Shard;

use super::{decode, Dispatch, RequestContext};

const WHY: &str = "consumer groups and transactions are not implemented by this broker yet";

pub fn handle(_shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: FindCoordinatorRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let code = ErrorCode::COORDINATOR_NOT_AVAILABLE.0;
    ctx.reply(FindCoordinatorResponse {
        throttle_time_ms: 0,
        error_code: code,
        error_message: Some(WHY.into()),
        node_id: -1,
        host: String::new(),
        port: -1,
        coordinators: req
            .coordinator_keys
            .into_iter()
            .map(|key| Coordinator {
                key,
                node_id: -1,
                host: String::new(),
                port: -1,
                error_code: code,
                error_message: Some(WHY.into()),
            })
            .collect(),
    })
}
