//! A transactional producer's conversation with its transaction coordinator: Kafka's
//! `TransactionManager` reduced to what a benchmark needs. FindCoordinator (key type 1) for the
//! transactional id, InitProducerId with it (the producer id and epoch every batch carries),
//! AddPartitionsToTxn in its client form (v0–3: one transaction, `v3_and_below_*` fields) for the
//! partitions a transaction is about to write, EndTxn to commit or abort.
//!
//! One session per producer, on the producer's core and its own connection to the coordinator;
//! one request at a time (the producer awaits each, so a batch is never sent to a partition the
//! coordinator has not added). Retriable answers are retried after a short backoff (1 ms,
//! doubling to 20 ms, for at most `RETRY_FOR` in all): CONCURRENT_TRANSACTIONS (the previous
//! transaction's markers are still being written, the usual answer to the first
//! AddPartitionsToTxn after a commit), COORDINATOR_LOAD_IN_PROGRESS, and COORDINATOR_NOT_AVAILABLE
//! or NOT_COORDINATOR after finding the coordinator again. Any other error is the producer's end.

use std::time::{Duration, Instant};

use odradek::protocol::api::ApiKey;
use odradek::protocol::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnTopic, EndTxnRequest, ErrorCode,
    FindCoordinatorRequest, InitProducerIdRequest, RequestBody, ResponseBody,
};

use super::connection::{ConnError, Connection};

const BACKOFF_MIN: Duration = Duration::from_millis(1);
const BACKOFF_MAX: Duration = Duration::from_millis(20);
/// How long one call keeps retrying retriable answers.
const RETRY_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("{api:?}: {code}")]
    Refused { api: ApiKey, code: ErrorCode },
    #[error("{api:?}: still {code} after {waited_s} s of retries")]
    Retries {
        api: ApiKey,
        code: ErrorCode,
        waited_s: u64,
    },
    #[error("{0:?}: unexpected response")]
    Unexpected(ApiKey),
    #[error("AddPartitionsToTxn: partition {0} missing in the response")]
    Missing(i32),
}

/// A transactional id's session with its coordinator.
pub struct TxnSession {
    pub transactional_id: String,
    /// Where to find the coordinator again.
    bootstrap: String,
    conn: Connection,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Retriable answers retried so far (CONCURRENT_TRANSACTIONS mostly).
    pub retries: u64,
}

/// Asks `bootstrap` for the coordinator of `transactional_id` and connects to it; retries while
/// the transaction state topic is not ready yet.
async fn connect_coordinator(
    bootstrap: &str,
    transactional_id: &str,
) -> Result<Connection, TxnError> {
    let started = Instant::now();
    let mut backoff = BACKOFF_MIN;
    let mut conn = Connection::connect(bootstrap).await?;
    loop {
        let resp = conn
            .call(FindCoordinatorRequest {
                key: transactional_id.to_string(),
                key_type: 1,
                ..Default::default()
            })
            .await?;
        let ResponseBody::FindCoordinator(r) = resp else {
            return Err(TxnError::Unexpected(ApiKey::FindCoordinator));
        };
        let code = ErrorCode(r.error_code);
        if code == ErrorCode::NONE {
            return Ok(Connection::connect(&format!("{}:{}", r.host, r.port)).await?);
        }
        if code != ErrorCode::COORDINATOR_NOT_AVAILABLE
            && code != ErrorCode::COORDINATOR_LOAD_IN_PROGRESS
        {
            return Err(TxnError::Refused {
                api: ApiKey::FindCoordinator,
                code,
            });
        }
        backoff = wait_to_retry(ApiKey::FindCoordinator, code, started, backoff).await?;
    }
}

/// Sleeps `backoff` unless `RETRY_FOR` has passed since `started`; returns the next backoff.
async fn wait_to_retry(
    api: ApiKey,
    code: ErrorCode,
    started: Instant,
    backoff: Duration,
) -> Result<Duration, TxnError> {
    if started.elapsed() > RETRY_FOR {
        return Err(TxnError::Retries {
            api,
            code,
            waited_s: started.elapsed().as_secs(),
        });
    }
    glommio::timer::sleep(backoff).await;
    Ok((backoff * 2).min(BACKOFF_MAX))
}

/// The one error code that decides an AddPartitionsToTxn v0–3 answer: the first partition's
/// error other than OPERATION_NOT_ATTEMPTED (what the others get when one fails), else NONE.
fn add_partitions_code(resp: &ResponseBody, asked: &[i32]) -> Result<ErrorCode, TxnError> {
    let ResponseBody::AddPartitionsToTxn(r) = resp else {
        return Err(TxnError::Unexpected(ApiKey::AddPartitionsToTxn));
    };
    let results: Vec<(i32, i16)> = r
        .results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| t.results_by_partition.iter())
        .map(|p| (p.partition_index, p.partition_error_code))
        .collect();
    if let Some(&p) = asked.iter().find(|p| !results.iter().any(|r| r.0 == **p)) {
        return Err(TxnError::Missing(p));
    }
    let failed = results
        .iter()
        .map(|r| ErrorCode(r.1))
        .filter(|c| *c != ErrorCode::NONE);
    let mut code = ErrorCode::NONE;
    for c in failed {
        if c != ErrorCode::OPERATION_NOT_ATTEMPTED {
            return Ok(c);
        }
        code = c;
    }
    Ok(code)
}

impl TxnSession {
    /// Finds the coordinator and initialises the transactional id (InitProducerId), which
    /// fences any earlier producer of the same id and aborts its open transaction.
    pub async fn start(
        bootstrap: &str,
        transactional_id: String,
        transaction_timeout_ms: i32,
    ) -> Result<TxnSession, TxnError> {
        let conn = connect_coordinator(bootstrap, &transactional_id).await?;
        let mut s = TxnSession {
            transactional_id,
            bootstrap: bootstrap.to_string(),
            conn,
            producer_id: -1,
            producer_epoch: -1,
            retries: 0,
        };
        let body = RequestBody::from(InitProducerIdRequest {
            transactional_id: Some(s.transactional_id.clone()),
            transaction_timeout_ms,
            ..Default::default()
        });
        let resp = s
            .call(body, |r| match r {
                ResponseBody::InitProducerId(r) => Ok(ErrorCode(r.error_code)),
                _ => Err(TxnError::Unexpected(ApiKey::InitProducerId)),
            })
            .await?;
        if let ResponseBody::InitProducerId(r) = resp {
            s.producer_id = r.producer_id;
            s.producer_epoch = r.producer_epoch;
        }
        Ok(s)
    }

    /// Adds `partitions` of `topic` to the open transaction (starting it if none is open).
    pub async fn add_partitions(
        &mut self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<(), TxnError> {
        let body = RequestBody::from(AddPartitionsToTxnRequest {
            v3_and_below_transactional_id: self.transactional_id.clone(),
            v3_and_below_producer_id: self.producer_id,
            v3_and_below_producer_epoch: self.producer_epoch,
            v3_and_below_topics: vec![AddPartitionsToTxnTopic {
                name: topic.to_string(),
                partitions: partitions.to_vec(),
            }],
            ..Default::default()
        });
        self.call(body, |r| add_partitions_code(r, partitions))
            .await
            .map(|_| ())
    }

    /// Commits (or aborts) the open transaction. Answered once the coordinator has made the
    /// decision durable; the markers are written after that.
    pub async fn end(&mut self, commit: bool) -> Result<(), TxnError> {
        let body = RequestBody::from(EndTxnRequest {
            transactional_id: self.transactional_id.clone(),
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            committed: commit,
        });
        self.call(body, |r| match r {
            ResponseBody::EndTxn(r) => Ok(ErrorCode(r.error_code)),
            _ => Err(TxnError::Unexpected(ApiKey::EndTxn)),
        })
        .await
        .map(|_| ())
    }

    /// Sends `body` until it is answered without a retriable error; `code_of` reads the
    /// answer's deciding error code.
    async fn call(
        &mut self,
        body: RequestBody,
        code_of: impl Fn(&ResponseBody) -> Result<ErrorCode, TxnError>,
    ) -> Result<ResponseBody, TxnError> {
        let api = body.api_key();
        let started = Instant::now();
        let mut backoff = BACKOFF_MIN;
        loop {
            let sent = self.conn.writer.send(&body).await?;
            let resp = self.conn.reader.response(sent).await?;
            let code = code_of(&resp)?;
            if code == ErrorCode::NONE {
                return Ok(resp);
            }
            let refind =
                code == ErrorCode::COORDINATOR_NOT_AVAILABLE || code == ErrorCode::NOT_COORDINATOR;
            if !refind
                && code != ErrorCode::CONCURRENT_TRANSACTIONS
                && code != ErrorCode::COORDINATOR_LOAD_IN_PROGRESS
            {
                return Err(TxnError::Refused { api, code });
            }
            self.retries += 1;
            backoff = wait_to_retry(api, code, started, backoff).await?;
            if refind {
                self.conn = connect_coordinator(&self.bootstrap, &self.transactional_id).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use odradek::protocol::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResponse,
        AddPartitionsToTxnTopicResult,
    };

    fn answer(codes: &[(i32, ErrorCode)]) -> ResponseBody {
        ResponseBody::AddPartitionsToTxn(AddPartitionsToTxnResponse {
            results_by_topic_v3_and_below: vec![AddPartitionsToTxnTopicResult {
                name: "t".into(),
                results_by_partition: codes
                    .iter()
                    .map(|&(p, c)| AddPartitionsToTxnPartitionResult {
                        partition_index: p,
                        partition_error_code: c.0,
                    })
                    .collect(),
            }],
            ..Default::default()
        })
    }

    #[test]
    fn add_partitions_answer_is_decided_by_the_failing_partition() {
        let ok = answer(&[(0, ErrorCode::NONE), (1, ErrorCode::NONE)]);
        assert_eq!(add_partitions_code(&ok, &[0, 1]).unwrap(), ErrorCode::NONE);
        let busy = answer(&[
            (0, ErrorCode::OPERATION_NOT_ATTEMPTED),
            (1, ErrorCode::CONCURRENT_TRANSACTIONS),
        ]);
        assert_eq!(
            add_partitions_code(&busy, &[0, 1]).unwrap(),
            ErrorCode::CONCURRENT_TRANSACTIONS
        );
        assert!(matches!(
            add_partitions_code(&ok, &[0, 1, 2]),
            Err(TxnError::Missing(2))
        ));
    }
}
