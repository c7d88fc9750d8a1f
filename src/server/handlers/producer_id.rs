//! InitProducerId (key 22), v0–5. For idempotent producers (no transactional id): a fresh
//! producer id from the controller, epoch 0; a producer that names its current id and epoch
//! (v3+, KIP-360) gets the same id with the epoch bumped. With a transactional id the request
//! goes to the id's transaction coordinator (see `transactions`), which bumps the epoch and
//! fences older producers of the same id.

use std::rc::Rc;

use crate::protocol::error::ErrorCode;
use crate::protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
use crate::protocol::wire::Reader;
use crate::shard::Shard;

use super::transactions::on_txn_coordinator;
use super::{decode, Dispatch, RequestContext};
use crate::coordinator::transactions::TxnRequest;
use crate::txn::{InitPid, TxnApi, TxnResponse};

pub async fn handle(shard: &Rc<Shard>, ctx: RequestContext, mut r: Reader) -> Dispatch {
    let req: InitProducerIdRequest = match decode(&ctx, &mut r) {
        Ok(req) => req,
        Err(d) => return d,
    };
    let mut resp = InitProducerIdResponse {
        throttle_time_ms: 0,
        producer_id: -1,
        producer_epoch: -1,
        ..Default::default()
    };
    if let Some(id) = req.transactional_id {
        let expected = if ctx.version >= 3 {
            InitPid::expected_from_wire(req.producer_id, req.producer_epoch)
        } else {
            Ok(None)
        };
        let answer = match expected {
            Ok(expected) => {
                let init = InitPid {
                    transactional_id: id.clone(),
                    timeout_ms: req.transaction_timeout_ms,
                    expected,
                };
                on_txn_coordinator(shard, &id, TxnRequest::InitProducerId(init)).await
            }
            Err(e) => TxnResponse::error(e),
        };
        resp.error_code = answer.error.map_or(0, |e| {
            e.code_for_version(TxnApi::InitProducerId, ctx.version)
        });
        resp.producer_id = answer.producer_id;
        resp.producer_epoch = answer.producer_epoch;
        return ctx.reply(resp);
    }
    if req.producer_id >= 0 && req.producer_epoch >= 0 {
        if req.producer_epoch == i16::MAX {
            // Epoch exhausted: a new id, as Kafka does.
        } else {
            resp.error_code = 0;
            resp.producer_id = req.producer_id;
            resp.producer_epoch = req.producer_epoch + 1;
            return ctx.reply(resp);
        }
    }
    match crate::coordinator::transactions::allocate_producer_id(shard).await {
        Ok(id) => {
            resp.error_code = 0;
            resp.producer_id = id;
            resp.producer_epoch = 0;
        }
        Err(e) => {
            log::error!("InitProducerId: {e}");
            resp.error_code = ErrorCode::COORDINATOR_NOT_AVAILABLE.0;
        }
    }
    ctx.reply(resp)
}
