//! FindCoordinator (key 10), v0–4. Group keys (key type 0) and transactional ids (key type 1)
//! are coordinated by this broker (the shard owning the key's `__consumer_offsets` or
//! `__transaction_state` partition serves it; every shard forwards to it). Other key types:
//! INVALID_REQUEST.

use std::rc::Rc;

use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{Coordinator, FindCoordinatorRequest, FindCoordinatorResponse};
use crate::protocol::wire::Reader;
use crate::shard::Shard;

use super::{decode, Dispatch, RequestContext};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// The answer for one key: (error, message, node id, host, port).
fn answer(shard: &Shard, key_type: i8, key: &str) -> (ErrorCode, Option<String>, i32, String, i32) {
    let cfg = &shard.config;
    let refuse = |code: ErrorCode, why: &str| (code, Some(why.to_string()), -1, String::new(), -1);
    let here = || {
        (
            ErrorCode::NONE,
            None,
            cfg.node_id,
            cfg.advertised_host.clone(),
            cfg.advertised_port as i32,
        )
    };
    match key_type {
        KEY_TYPE_GROUP if key.is_empty() => refuse(ErrorCode::INVALID_GROUP_ID, "empty group id"),
        KEY_TYPE_GROUP => match crate::coordinator::group_shard(shard, key) {
            Some(_) => here(),
            None => refuse(
                ErrorCode::COORDINATOR_NOT_AVAILABLE,
                "the offsets topic is not available",
            ),
        },
        KEY_TYPE_TRANSACTION if key.is_empty() => {
            refuse(ErrorCode::INVALID_REQUEST, "empty transactional id")
        }
        KEY_TYPE_TRANSACTION => match crate::coordinator::transactions::txn_shard(shard, key) {
            Some(_) => here(),
            None => refuse(
                ErrorCode::COORDINATOR_NOT_AVAILABLE,
                "the transaction state topic is not available",
            ),
        },
        other => refuse(
            ErrorCode::INVALID_REQUEST,
            &format!("unknown coordinator key type {other}"),
        ),
    }
}

pub fn handle(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: FindCoordinatorRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    if ctx.version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let (code, error_message, node_id, host, port) = answer(shard, req.key_type, &key);
                Coordinator {
                    key,
                    node_id,
                    host,
                    port,
                    error_code: code.0,
                    error_message,
                }
            })
            .collect();
        return ctx.reply(FindCoordinatorResponse {
            throttle_time_ms: 0,
            error_code: 0,
            error_message: None,
            node_id: -1,
            host: String::new(),
            port: -1,
            coordinators,
        });
    }
    let (code, error_message, node_id, host, port) = answer(shard, req.key_type, &req.key);
    ctx.reply(FindCoordinatorResponse {
        throttle_time_ms: 0,
        error_code: code.0,
        error_message,
        node_id,
        host,
        port,
        coordinators: Vec::new(),
    })
}
