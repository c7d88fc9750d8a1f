//! Transaction coordinator of Kafka's exactly-once semantics as a pure state machine (Kafka's
//! `TransactionCoordinator` + `TransactionMetadata` + the timers of `TransactionStateManager`):
//! InitProducerId for transactional ids, AddPartitionsToTxn / AddOffsetsToTxn, EndTxn, the
//! transaction timeout, transactional-id expiration, and the bookkeeping of transaction markers.
//!
//! What it owns: one [`TxnMachine`] per shard holds every transactional id that shard
//! coordinates — for each, the [`TxnMetadata`] last made durable (exactly the content of one
//! `__transaction_state` record, see [`log_format`]), at most one pending transition (a persist
//! or a producer-id allocation, with the request waiting on it), the requests parked until the
//! id is quiet (see Parking below), the state of its marker write, and its one deadline. It does NO I/O, has no async and reads no clock: every input carries
//! `now_ms`. Which `__transaction_state` partition an id lives in is the driver's business.
//!
//! Who drives it: the shard owning the ids' `__transaction_state` partitions. The driver
//! - creates it with [`TxnMachine::new`] and, after loading those partitions, calls
//!   [`TxnMachine::restore`] with the last record per id (decoded with
//!   [`log_format::decode_record`]);
//! - hands it InitProducerId (transactional only: a null transactional id never reaches the
//!   machine), AddPartitionsToTxn (v0–3 from clients; v4+ `verify_only` from brokers),
//!   AddOffsetsToTxn (as [`AddPartitions`] of the group's `__consumer_offsets` partition) and
//!   EndTxn, each with a fresh [`RequestId`];
//! - executes the returned [`Effect`]s in order:
//!   * [`Effect::Respond`]: encode the answer for that request (mapping the error with
//!     [`TxnError::code_for_version`]); every request is answered exactly once, but not
//!     necessarily by the input that handed it in: the answer may come out of any later input
//!     ([`TxnMachine::persisted`], [`TxnMachine::markers_written`], [`TxnMachine::tick`],
//!     [`TxnMachine::restore`], another request), so the driver keeps each request's waiter
//!     until its Respond;
//!   * [`Effect::AllocateProducerId`]: get a producer id from the controller, report it with
//!     [`TxnMachine::producer_id_allocated`] (same request id);
//!   * [`Effect::Persist`]: append the record ([`log_format::encode_record`]; `None` = a
//!     tombstone) to the id's partition, wait until it is durable, report with
//!     [`TxnMachine::persisted`] (a failure too: the machine reverts and answers);
//!   * [`Effect::WriteMarkers`]: write COMMIT/ABORT control batches with that producer id and
//!     epoch to every listed partition (through their owning shards), wait until all are
//!     durable, report with [`TxnMachine::markers_written`]; on failure the machine asks again
//!     [`RETRY_BACKOFF_MS`] later;
//!   * [`Effect::ScheduleTimer`]: keep ONE timer (each replaces the previous) and call
//!     [`TxnMachine::tick`] at or after `at_ms`. Spurious or late ticks are harmless; every
//!     input also fires what is already due.
//!
//! The driver keeps no other transaction state.
//!
//! Parking: a request for an id that is busy — a transition pending (a persist, a producer-id
//! allocation, the CompleteCommit/CompleteAbort persist) or its transaction decided and
//! completing (PrepareCommit/PrepareAbort, markers unsent or in flight) — is not answered
//! CONCURRENT_TRANSACTIONS as Kafka does, which makes every client wait out its retry backoff
//! after each EndTxn. It is parked on the id and handled as if it had just arrived once the id is
//! quiet (after `markers_written` → the Complete* persist → `persisted`, or after whatever
//! other transition finished, successfully or not), parked requests in arrival order; once one
//! of them starts a transition the others stay parked behind it. Checks that need no waiting
//! (producer id, epoch, an EndTxn asking for the other outcome) still answer at once. Bounds:
//! at most [`TxnConfig::max_parked_per_id`] per id (beyond: CONCURRENT_TRANSACTIONS), and a
//! request parked for [`TxnConfig::parked_timeout_ms`] (markers that keep failing, say) is
//! answered CONCURRENT_TRANSACTIONS, so clients fall back to retrying. A restore answers the
//! id's parked requests NOT_COORDINATOR. An InitProducerId that fences an open transaction
//! still fences (the PrepareAbort under a bumped epoch); once that record is durable the
//! request itself parks, first in line, and is answered with a fresh epoch when the abort
//! completed — the answer a client retrying CONCURRENT_TRANSACTIONS would have reached (it holds
//! one of the id's parking places meanwhile). `max_parked_per_id = 0` gives Kafka's behaviour.
//!
//! Invariants (checked after every input in debug builds):
//! - every [`RequestId`] handed in is answered by exactly one [`Effect::Respond`];
//! - a request waits in one place only: on a pending transition or parked; requests are parked
//!   only on a busy id, at most [`TxnConfig::max_parked_per_id`] of them (counting a fencing
//!   InitProducerId in flight), each at most [`TxnConfig::parked_timeout_ms`];
//! - an id has at most one pending transition; its in-memory [`TxnMetadata`] is always the last
//!   one made durable (a transition is applied only when its persist succeeded, so a failed
//!   persist leaves nothing to revert);
//! - a client is answered only after the record carrying its change is durable; markers are
//!   written only after the PrepareCommit/PrepareAbort record is durable;
//! - Empty, CompleteCommit and CompleteAbort transactions hold no partitions;
//! - memory is bounded: ids ≤ [`TxnConfig::max_ids`] (ids restored from the log are always
//!   loaded, the bound then only refuses new ones), partitions per transaction ≤
//!   [`TxnConfig::max_partitions_per_txn`], one pending transition, one deadline and at most
//!   [`TxnConfig::max_parked_per_id`] parked requests per id.
//!
//! Versions are the driver's job. In particular:
//! - PRODUCER_FENCED (90) is new in InitProducerId v4, AddPartitionsToTxn v2, AddOffsetsToTxn v2
//!   and EndTxn v2 (see each request's JSON in Kafka); older requests get
//!   INVALID_PRODUCER_EPOCH (47) instead, as Kafka's `KafkaApis` answers them:
//!   [`TxnError::code_for_version`] does the mapping.
//! - InitProducerId v3+ carries the client's producer id and epoch (KIP-360): both -1 means
//!   none, one of them -1 is INVALID_REQUEST ([`InitPid::expected_from_wire`]).
//! - This machine implements the pre-KIP-890 protocol (no epoch bump per transaction, no
//!   TRANSACTION_ABORTABLE): advertise at most EndTxn v4 and AddPartitionsToTxn v4.

pub mod log_format;
mod machine;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

pub use machine::TxnMachine;

/// Delay before the machine retries background work that failed: a marker write, or the
/// persist of a completion, a timeout abort or an expiration tombstone.
pub const RETRY_BACKOFF_MS: u64 = 1_000;

/// Kafka error codes this module answers with. Mapped to the wire by [`TxnError::code`] (or
/// [`TxnError::code_for_version`], which knows which requests predate PRODUCER_FENCED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("unknown server error")]
    UnknownServerError,
    /// Retriable: the id's record could not be made durable, or the machine is full.
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    /// Retriable: no producer id could be allocated right now (Kafka answers this when its
    /// producer-id block is not ready).
    #[error("coordinator load in progress")]
    CoordinatorLoadInProgress,
    #[error("not coordinator")]
    NotCoordinator,
    #[error("invalid request")]
    InvalidRequest,
    /// Retriable: the id is busy (another transition in flight, or its transaction completing)
    /// and its parking places are full, or the request waited parked too long.
    #[error("concurrent transactions")]
    ConcurrentTransactions,
    #[error("invalid producer id mapping")]
    InvalidProducerIdMapping,
    /// What older requests get instead of [`TxnError::ProducerFenced`].
    #[error("invalid producer epoch")]
    InvalidProducerEpoch,
    #[error("producer fenced")]
    ProducerFenced,
    #[error("invalid transaction state")]
    InvalidTxnState,
    #[error("invalid transaction timeout")]
    InvalidTransactionTimeout,
    /// DescribeTransactions of an id this coordinator does not hold.
    #[error("transactional id not found")]
    TransactionalIdNotFound,
}

/// The transaction APIs whose oldest versions predate PRODUCER_FENCED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnApi {
    InitProducerId,
    AddPartitionsToTxn,
    AddOffsetsToTxn,
    EndTxn,
}

impl TxnApi {
    /// The first version whose clients understand PRODUCER_FENCED (from the "versions" notes of
    /// Kafka's request JSON files).
    pub const fn producer_fenced_since(self) -> i16 {
        match self {
            TxnApi::InitProducerId => 4,
            TxnApi::AddPartitionsToTxn | TxnApi::AddOffsetsToTxn | TxnApi::EndTxn => 2,
        }
    }
}

impl TxnError {
    /// Kafka's `Errors` code.
    pub const fn code(self) -> i16 {
        match self {
            TxnError::UnknownServerError => -1,
            TxnError::CoordinatorLoadInProgress => 14,
            TxnError::CoordinatorNotAvailable => 15,
            TxnError::NotCoordinator => 16,
            TxnError::InvalidRequest => 42,
            TxnError::InvalidProducerEpoch => 47,
            TxnError::InvalidTxnState => 48,
            TxnError::InvalidProducerIdMapping => 49,
            TxnError::InvalidTransactionTimeout => 50,
            TxnError::ConcurrentTransactions => 51,
            TxnError::ProducerFenced => 90,
            TxnError::TransactionalIdNotFound => 105,
        }
    }

    /// The code to send in a response to `api` at `version`: PRODUCER_FENCED becomes
    /// INVALID_PRODUCER_EPOCH for versions older than [`TxnApi::producer_fenced_since`], as
    /// Kafka's `KafkaApis` does for clients that do not know the newer code.
    pub const fn code_for_version(self, api: TxnApi, version: i16) -> i16 {
        match self {
            TxnError::ProducerFenced if version < api.producer_fenced_since() => {
                TxnError::InvalidProducerEpoch.code()
            }
            other => other.code(),
        }
    }
}

/// `0` when `None`, else the error's code: the shape every response field wants.
pub fn error_code(error: Option<TxnError>) -> i16 {
    error.map_or(0, TxnError::code)
}

/// Transaction states with Kafka's ids (the `transaction_status` byte of the log) and names
/// (DescribeTransactions/ListTransactions). The machine never holds `Dead` (an expired id is a
/// tombstone and then gone) nor `PrepareEpochFence` (a fence goes straight to PrepareAbort);
/// they exist so every record Kafka defines decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub const ALL: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    /// Kafka's `TransactionState.id`, the `transaction_status` of a log record.
    pub const fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub const fn from_id(id: i8) -> Option<TxnState> {
        match id {
            0 => Some(TxnState::Empty),
            1 => Some(TxnState::Ongoing),
            2 => Some(TxnState::PrepareCommit),
            3 => Some(TxnState::PrepareAbort),
            4 => Some(TxnState::CompleteCommit),
            5 => Some(TxnState::CompleteAbort),
            6 => Some(TxnState::Dead),
            7 => Some(TxnState::PrepareEpochFence),
            _ => None,
        }
    }

    /// The name DescribeTransactions/ListTransactions report (Kafka's `TransactionState.name`).
    pub const fn as_str(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// The state named `name` (a ListTransactions state filter); unknown names match nothing.
    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// No transaction is open: a new one may start, the id may expire.
    pub const fn is_idle(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }

    /// The outcome is decided and durable; markers are being written.
    pub const fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// A partition taking part in a transaction (ordered by topic, then partition, which is also
/// the order records list them in).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

/// Everything the coordinator knows durably about one transactional id: exactly one
/// `__transaction_state` record, so the last record per id rebuilds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The client's `transaction.timeout.ms`.
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions of the open transaction; empty unless Ongoing or Prepare*.
    pub partitions: BTreeSet<TopicPartition>,
    /// When the open transaction started (its first AddPartitions); 0 when none.
    pub txn_start_ms: u64,
    pub last_update_ms: u64,
}

/// Coordinator limits (Kafka key names in the field docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`: the largest timeout a producer may ask for.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: an id with no open transaction and no activity for this
    /// long is removed (a tombstone is written).
    pub id_expiration_ms: u64,
    /// Ours (Kafka is unbounded): partitions in one transaction; AddPartitions beyond it gets
    /// INVALID_REQUEST.
    pub max_partitions_per_txn: usize,
    /// Ours (Kafka is unbounded): transactional ids held by one machine; a new id beyond it gets
    /// COORDINATOR_NOT_AVAILABLE (retriable) until ids expire.
    pub max_ids: usize,
    /// Ours (Kafka answers CONCURRENT_TRANSACTIONS at once): requests parked on one busy id
    /// until its transition finishes; beyond it they get CONCURRENT_TRANSACTIONS. 0 disables
    /// parking.
    pub max_parked_per_id: usize,
    /// Ours: a request parked this long is answered CONCURRENT_TRANSACTIONS (the client then
    /// retries as it would have without parking), e.g. while markers keep failing.
    pub parked_timeout_ms: u64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            max_timeout_ms: 900_000,
            id_expiration_ms: 604_800_000,
            max_partitions_per_txn: 100_000,
            max_ids: 1_000_000,
            max_parked_per_id: 8,
            parked_timeout_ms: 5_000,
        }
    }
}

/// Driver-chosen id of one request, echoed in its [`Effect::Respond`] (and in
/// [`Effect::AllocateProducerId`] when the request needs a producer id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Id of one [`Effect::Persist`], echoed back through [`TxnMachine::persisted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersistId(pub u64);

/// InitProducerId with a transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitPid {
    pub transactional_id: String,
    pub timeout_ms: i32,
    /// v3+ (KIP-360): the producer id and epoch the client currently holds, if any.
    pub expected: Option<(i64, i16)>,
}

impl InitPid {
    /// The `expected` of an InitProducerId v3+ from its wire fields, as Kafka's `KafkaApis`
    /// reads them: both -1 is none, only one of them -1 is INVALID_REQUEST. (v0–2: `None`.)
    pub fn expected_from_wire(
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<Option<(i64, i16)>, TxnError> {
        match (producer_id, producer_epoch) {
            (-1, -1) => Ok(None),
            (-1, _) | (_, -1) => Err(TxnError::InvalidRequest),
            (id, epoch) => Ok(Some((id, epoch))),
        }
    }
}

/// AddPartitionsToTxn (one transaction of it), or AddOffsetsToTxn with the group's
/// `__consumer_offsets` partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddPartitions {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub partitions: Vec<TopicPartition>,
    /// AddPartitionsToTxn v4+ from a broker: only check that all partitions are in the
    /// transaction (INVALID_TXN_STATE if not); nothing changes.
    pub verify_only: bool,
}

/// EndTxn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndTxn {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
}

/// The answer to one request. `producer_id`/`producer_epoch` are only meaningful in a
/// successful InitProducerId; everywhere else they are -1, as Kafka's error answers carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnResponse {
    pub error: Option<TxnError>,
    pub producer_id: i64,
    pub producer_epoch: i16,
}

impl TxnResponse {
    pub const fn ok() -> Self {
        TxnResponse {
            error: None,
            producer_id: -1,
            producer_epoch: -1,
        }
    }

    pub const fn error(error: TxnError) -> Self {
        TxnResponse {
            error: Some(error),
            producer_id: -1,
            producer_epoch: -1,
        }
    }

    pub const fn producer(producer_id: i64, producer_epoch: i16) -> Self {
        TxnResponse {
            error: None,
            producer_id,
            producer_epoch,
        }
    }
}

/// One id as ListTransactions shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: TxnState,
}

/// What the driver must do after handing the machine an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Answer this request.
    Respond {
        request_id: RequestId,
        response: TxnResponse,
    },
    /// Append this record for `transactional_id` (`None`: a tombstone), then call
    /// [`TxnMachine::persisted`] with `persist_id` once it is durable or failed.
    Persist {
        persist_id: PersistId,
        transactional_id: String,
        metadata: Option<TxnMetadata>,
    },
    /// Write a COMMIT (`commit`) or ABORT control batch for this producer id and epoch to every
    /// partition, then call [`TxnMachine::markers_written`].
    WriteMarkers {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        partitions: Vec<TopicPartition>,
    },
    /// Get a fresh producer id, then call [`TxnMachine::producer_id_allocated`].
    AllocateProducerId { request_id: RequestId },
    /// Call [`TxnMachine::tick`] at or after `at_ms`; replaces any earlier ScheduleTimer.
    ScheduleTimer { at_ms: u64 },
}
