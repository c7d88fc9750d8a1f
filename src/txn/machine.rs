//! [`TxnMachine`]: every transactional id one shard coordinates. See the module docs in
//! `txn/mod.rs` for the driver contract; behaviour follows Kafka's `TransactionCoordinator`
//! (3.x, before KIP-890's per-transaction epoch bump).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use super::{
    AddPartitions, Effect, EndTxn, InitPid, PersistId, RequestId, TxnConfig, TxnError, TxnListing,
    TxnMetadata, TxnResponse, TxnState, RETRY_BACKOFF_MS,
};

/// Deadlines fired per input. More due work (a restore of many PrepareCommit ids, a mass
/// expiration) is left for the next tick, which the driver gets at once: the machine then asks
/// for a timer at a time already past, so one input never produces unbounded work.
const MAX_DUE_PER_INPUT: usize = 1024;

/// Above this many ids the debug-build invariant check only compares counts, so debug builds
/// stay usable with many ids.
const FULL_CHECK_MAX_IDS: usize = 10_000;

/// Where the markers of a PrepareCommit/PrepareAbort transaction are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Markers {
    /// To be written (at the entry's deadline).
    Unsent,
    /// [`Effect::WriteMarkers`] emitted, waiting for [`TxnMachine::markers_written`].
    InFlight,
    /// Written; the CompleteCommit/CompleteAbort record is to be persisted.
    Written,
}

/// How the request a persist carries is answered once the persist is durable.
#[derive(Debug, Clone)]
enum Reply {
    /// InitProducerId: the new producer id and epoch.
    Producer,
    /// AddPartitions, EndTxn.
    Ok,
    /// An InitProducerId that fenced an open transaction: once the PrepareAbort is durable it
    /// is parked first in line, so it is handled again when the abort completed and answered
    /// with a fresh epoch (what a client retrying CONCURRENT_TRANSACTIONS would have got).
    /// It holds one of the id's parking places meanwhile.
    Fence { req: InitPid, since_ms: u64 },
}

/// A request that arrived while its id was busy ([`busy`]): handled as if it had just arrived
/// once the id's transition finished, or answered CONCURRENT_TRANSACTIONS at
/// `since_ms + parked_timeout_ms`.
#[derive(Debug, Clone)]
struct Parked {
    request_id: RequestId,
    request: Request,
    /// When it arrived.
    since_ms: u64,
}

#[derive(Debug, Clone)]
enum Request {
    Init(InitPid),
    Add(AddPartitions),
    End(EndTxn),
}

/// The one transition an id may have in flight.
#[derive(Debug, Clone)]
enum Pending {
    /// InitProducerId waiting for [`Effect::AllocateProducerId`] (a new id, or an exhausted
    /// epoch).
    Allocate {
        request_id: RequestId,
        timeout_ms: i32,
    },
    /// A record on its way to durability; `target` becomes the id's metadata when it is
    /// (`None`: a tombstone, the id is forgotten).
    Persist {
        persist_id: PersistId,
        target: Option<TxnMetadata>,
        request: Option<(RequestId, Reply)>,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    /// The last durable metadata; `None` only while a new id waits for its producer id and
    /// then its first record.
    meta: Option<TxnMetadata>,
    pending: Option<Pending>,
    /// Meaningful in PrepareCommit/PrepareAbort only.
    markers: Markers,
    /// After failed background work (markers, timeout abort, completion, expiration): not
    /// retried before this time.
    retry_at_ms: u64,
    /// The (producer id, epoch) the last InitProducerId replaced, in memory only: a client
    /// whose InitProducerId response was lost retries with it and gets the current ones
    /// (Kafka's `lastProducerEpoch` / `lastProducerId`).
    previous: Option<(i64, i16)>,
    /// The deadline this entry is indexed under in `TxnMachine::deadlines`.
    deadline_ms: Option<u64>,
    /// Requests waiting for the id to be quiet, in arrival order; empty unless [`busy`].
    parked: VecDeque<Parked>,
}

impl Entry {
    fn new(meta: Option<TxnMetadata>) -> Self {
        Entry {
            meta,
            pending: None,
            markers: Markers::Unsent,
            retry_at_ms: 0,
            previous: None,
            deadline_ms: None,
            parked: VecDeque::new(),
        }
    }
}

/// The transaction coordinator of one shard. Pure: every method takes `now_ms` and returns
/// effects.
#[derive(Debug, Clone)]
pub struct TxnMachine {
    config: TxnConfig,
    entries: BTreeMap<String, Entry>,
    /// (deadline, id) for every entry with a deadline: timeouts, expirations, marker work.
    deadlines: BTreeSet<(u64, String)>,
    /// Pending persists → their id.
    persists: HashMap<PersistId, String>,
    /// Pending producer-id allocations → their id.
    allocations: HashMap<RequestId, String>,
    next_persist_id: u64,
    /// Last ScheduleTimer emitted, so the driver only hears about changes.
    timer_at_ms: Option<u64>,
}

impl TxnMachine {
    pub fn new(config: TxnConfig) -> Self {
        TxnMachine {
            config,
            entries: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            persists: HashMap::new(),
            allocations: HashMap::new(),
            next_persist_id: 0,
            timer_at_ms: None,
        }
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    /// Transactional ids held (including ones waiting for their first producer id).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The durable metadata of `transactional_id` (DescribeTransactions; `None` answers
    /// TRANSACTIONAL_ID_NOT_FOUND, an empty id INVALID_REQUEST). An id still being created, or
    /// whose tombstone is being written (Kafka's Dead), is not shown.
    pub fn describe(&self, transactional_id: &str) -> Option<&TxnMetadata> {
        visible(self.entries.get(transactional_id)?)
    }

    /// ListTransactions: ids in one of `states` with one of `producer_ids` (an empty filter
    /// matches all), ordered by id; the same ids as [`TxnMachine::describe`] shows.
    pub fn list(&self, states: &[TxnState], producer_ids: &[i64]) -> Vec<TxnListing> {
        self.entries
            .values()
            .filter_map(visible)
            .filter(|m| states.is_empty() || states.contains(&m.state))
            .filter(|m| producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
            .map(|m| TxnListing {
                transactional_id: m.transactional_id.clone(),
                producer_id: m.producer_id,
                state: m.state,
            })
            .collect()
    }

    /// Requests parked on busy ids (tests: nothing may stay parked on a quiet machine).
    #[cfg(test)]
    pub(super) fn parked_len(&self) -> usize {
        self.entries.values().map(|e| e.parked.len()).sum()
    }

    /// The earliest deadline, if any (the driver's timer).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The timer fired: times out transactions, expires ids, retries failed background work,
    /// answers requests parked too long.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Effect> {
        self.finish(now_ms, Vec::new())
    }

    /// Rebuilds ids from the last `__transaction_state` record of each (`None`: a tombstone).
    /// A record replaces whatever the machine holds for its id (a request parked there is
    /// answered NOT_COORDINATOR). PrepareCommit/PrepareAbort ids get their markers written
    /// again; Ongoing ones time out from their `txn_start_ms`. Records are loaded even beyond
    /// `max_ids`: they are durable state. A `Dead` record counts as a tombstone; a
    /// `PrepareEpochFence` one (Kafka never writes it) as the PrepareAbort it leads to.
    pub fn restore(
        &mut self,
        now_ms: u64,
        records: impl IntoIterator<Item = (String, Option<TxnMetadata>)>,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.fire_due(now_ms, &mut out);
        for (id, record) in records {
            if let Some(old) = self.remove_entry(&id) {
                self.drop_pending(old, &mut out);
            }
            let Some(mut meta) = record else {
                continue;
            };
            match meta.state {
                TxnState::Dead => continue,
                TxnState::PrepareEpochFence => meta.state = TxnState::PrepareAbort,
                _ => {}
            }
            if id.is_empty() {
                continue;
            }
            meta.transactional_id.clone_from(&id);
            if meta.state.is_idle() {
                meta.partitions.clear();
            }
            self.entries.insert(id.clone(), Entry::new(Some(meta)));
            self.reindex(&id);
        }
        self.finish(now_ms, out)
    }

    /// InitProducerId with a transactional id. Answered by an [`Effect::Respond`] for
    /// `request_id`, now or once the new producer id and epoch are durable. While the id is
    /// busy the request is parked (see [`TxnConfig::max_parked_per_id`]).
    pub fn init_producer_id(
        &mut self,
        now_ms: u64,
        request_id: RequestId,
        req: InitPid,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.fire_due(now_ms, &mut out);
        if let Err(error) = self.init_inner(now_ms, request_id, req, &mut out) {
            out.push(respond(request_id, TxnResponse::error(error)));
        }
        self.finish(now_ms, out)
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn. Answered now or once the partitions are durable;
    /// parked while the id is busy.
    pub fn add_partitions(
        &mut self,
        now_ms: u64,
        request_id: RequestId,
        req: AddPartitions,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.fire_due(now_ms, &mut out);
        if let Err(error) = self.add_inner(now_ms, request_id, req, &mut out) {
            out.push(respond(request_id, TxnResponse::error(error)));
        }
        self.finish(now_ms, out)
    }

    /// EndTxn. Answered now or once the PrepareCommit/PrepareAbort record is durable (the
    /// markers are written after that); parked while the id is busy (a retry during
    /// PrepareCommit is answered once CompleteCommit is durable).
    pub fn end_txn(&mut self, now_ms: u64, request_id: RequestId, req: EndTxn) -> Vec<Effect> {
        let mut out = Vec::new();
        self.fire_due(now_ms, &mut out);
        if let Err(error) = self.end_inner(now_ms, request_id, req, &mut out) {
            out.push(respond(request_id, TxnResponse::error(error)));
        }
        self.finish(now_ms, out)
    }

    /// The answer to [`Effect::AllocateProducerId`] for `request_id`. A failure (or a negative
    /// id) answers the InitProducerId COORDINATOR_LOAD_IN_PROGRESS, which clients retry.
    pub fn producer_id_allocated(
        &mut self,
        now_ms: u64,
        request_id: RequestId,
        result: Result<i64, ()>,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.fire_due(now_ms, &mut out);
        if let Some(id) = self.allocations.remove(&request_id) {
            self.on_allocated(now_ms, &id, request_id, result, &mut out);
        }
        self.finish(now_ms, out)
    }

    /// The outcome of [`Effect::Persist`] `persist_id`. On success the transition takes effect
    /// (and its request is answered); on failure nothing changes, the request is answered
    /// COORDINATOR_NOT_AVAILABLE, and background work is retried [`RETRY_BACKOFF_MS`] later.
    /// Unknown ids (already superseded by a restore) are ignored.
    pub fn persisted(
        &mut self,
        now_ms: u64,
        persist_id: PersistId,
        result: Result<(), ()>,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.fire_due(now_ms, &mut out);
        if let Some(id) = self.persists.remove(&persist_id) {
            self.on_persisted(now_ms, &id, persist_id, result, &mut out);
        }
        self.finish(now_ms, out)
    }

    /// The outcome of [`Effect::WriteMarkers`] for this id, producer id and epoch. Success
    /// completes the transaction (a CompleteCommit/CompleteAbort persist nobody waits for);
    /// failure writes the markers again [`RETRY_BACKOFF_MS`] later. Stale answers are ignored.
    pub fn markers_written(
        &mut self,
        now_ms: u64,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        result: Result<(), ()>,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.fire_due(now_ms, &mut out);
        if let Some(entry) = self.entries.get_mut(transactional_id) {
            let matches = entry.pending.is_none()
                && entry.markers == Markers::InFlight
                && entry.meta.as_ref().is_some_and(|m| {
                    m.state.is_prepare()
                        && m.producer_id == producer_id
                        && m.producer_epoch == producer_epoch
                });
            if matches {
                match result {
                    Ok(()) => {
                        entry.markers = Markers::Written;
                        entry.retry_at_ms = 0;
                    }
                    Err(()) => {
                        entry.markers = Markers::Unsent;
                        entry.retry_at_ms = now_ms.saturating_add(RETRY_BACKOFF_MS);
                    }
                }
                self.reindex(transactional_id);
            }
        }
        self.finish(now_ms, out)
    }

    // ---------------------------------------------------------------------------------------
    // Requests

    fn init_inner(
        &mut self,
        now_ms: u64,
        request_id: RequestId,
        req: InitPid,
        out: &mut Vec<Effect>,
    ) -> Result<(), TxnError> {
        if req.transactional_id.is_empty() {
            return Err(TxnError::InvalidRequest);
        }
        if req.timeout_ms <= 0 || req.timeout_ms > self.config.max_timeout_ms {
            return Err(TxnError::InvalidTransactionTimeout);
        }
        let id = req.transactional_id.clone();
        let Some(entry) = self.entries.get(&id) else {
            if self.entries.len() >= self.config.max_ids {
                return Err(TxnError::CoordinatorNotAvailable);
            }
            // Kafka ignores `expected` for an id it does not know (the producer recovers from
            // an expired id with a fresh producer id).
            self.entries.insert(id.clone(), Entry::new(None));
            self.start_allocation(&id, request_id, req.timeout_ms, out);
            return Ok(());
        };
        if entry.pending.is_some() || entry.meta.is_none() {
            return self.park(now_ms, &id, request_id, Request::Init(req));
        }
        let Some(meta) = &entry.meta else {
            return Err(TxnError::ConcurrentTransactions);
        };
        let current = (meta.producer_id, meta.producer_epoch);
        // KIP-360: the client's producer id must be the current one, or the one the last
        // InitProducerId replaced (a retry whose answer was lost).
        if let Some(expected) = req.expected {
            if expected.0 != current.0 && Some(expected) != entry.previous {
                return Err(TxnError::ProducerFenced);
            }
        }
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                self.park(now_ms, &id, request_id, Request::Init(req))
            }
            TxnState::Dead | TxnState::PrepareEpochFence => Err(TxnError::ConcurrentTransactions),
            TxnState::Ongoing => {
                // Fence the open transaction: abort it under a bumped epoch the client never
                // sees (Kafka's PrepareEpochFence, persisted directly as PrepareAbort). The
                // request then waits, parked, for the abort to complete and is handled again:
                // it gets a fresh epoch (see `Reply::Fence`).
                let target = TxnMetadata {
                    producer_epoch: meta.producer_epoch.saturating_add(1),
                    state: TxnState::PrepareAbort,
                    last_update_ms: now_ms,
                    ..meta.clone()
                };
                let reply = Reply::Fence {
                    req,
                    since_ms: now_ms,
                };
                self.start_persist(&id, Some(target), Some((request_id, reply)), out);
                Ok(())
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                match req.expected {
                    None => {}
                    Some(expected) if expected == current => {}
                    Some(expected)
                        if Some(expected) == entry.previous && meta.state == TxnState::Empty =>
                    {
                        // A retry of the InitProducerId that produced the current epoch:
                        // answer it again (with the new timeout) instead of bumping twice.
                        let target = TxnMetadata {
                            timeout_ms: req.timeout_ms,
                            last_update_ms: now_ms,
                            ..meta.clone()
                        };
                        self.start_persist(
                            &id,
                            Some(target),
                            Some((request_id, Reply::Producer)),
                            out,
                        );
                        return Ok(());
                    }
                    Some(_) => return Err(TxnError::ProducerFenced),
                }
                // Kafka keeps the last epoch free for a fence: an epoch at i16::MAX - 1 is
                // exhausted and the id gets a new producer id at epoch 0.
                if meta.producer_epoch >= i16::MAX - 1 {
                    self.start_allocation(&id, request_id, req.timeout_ms, out);
                    return Ok(());
                }
                let target = TxnMetadata {
                    producer_epoch: meta.producer_epoch + 1,
                    timeout_ms: req.timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    txn_start_ms: 0,
                    last_update_ms: now_ms,
                    ..meta.clone()
                };
                self.start_persist(&id, Some(target), Some((request_id, Reply::Producer)), out);
                Ok(())
            }
        }
    }

    fn add_inner(
        &mut self,
        now_ms: u64,
        request_id: RequestId,
        req: AddPartitions,
        out: &mut Vec<Effect>,
    ) -> Result<(), TxnError> {
        if req.transactional_id.is_empty() {
            return Err(TxnError::InvalidRequest);
        }
        let (entry, meta) =
            self.check_producer(&req.transactional_id, req.producer_id, req.producer_epoch)?;
        if busy(entry) {
            let id = req.transactional_id.clone();
            return self.park(now_ms, &id, request_id, Request::Add(req));
        }
        let ongoing = meta.state == TxnState::Ongoing;
        let included = ongoing && req.partitions.iter().all(|tp| meta.partitions.contains(tp));
        if req.verify_only {
            let response = if included {
                TxnResponse::ok()
            } else {
                TxnResponse::error(TxnError::InvalidTxnState)
            };
            out.push(respond(request_id, response));
            return Ok(());
        }
        if included {
            // Nothing new: no persist needed (Kafka's shortcut).
            out.push(respond(request_id, TxnResponse::ok()));
            return Ok(());
        }
        let mut partitions = if ongoing {
            meta.partitions.clone()
        } else {
            BTreeSet::new()
        };
        for tp in req.partitions {
            partitions.insert(tp);
            if partitions.len() > self.config.max_partitions_per_txn {
                return Err(TxnError::InvalidRequest);
            }
        }
        let target = TxnMetadata {
            state: TxnState::Ongoing,
            partitions,
            txn_start_ms: if ongoing { meta.txn_start_ms } else { now_ms },
            last_update_ms: now_ms,
            ..meta.clone()
        };
        self.start_persist(
            &req.transactional_id,
            Some(target),
            Some((request_id, Reply::Ok)),
            out,
        );
        Ok(())
    }

    fn end_inner(
        &mut self,
        now_ms: u64,
        request_id: RequestId,
        req: EndTxn,
        out: &mut Vec<Effect>,
    ) -> Result<(), TxnError> {
        if req.transactional_id.is_empty() {
            return Err(TxnError::InvalidRequest);
        }
        let (entry, meta) =
            self.check_producer(&req.transactional_id, req.producer_id, req.producer_epoch)?;
        // Pending, or a retry while the markers are being written: answered once the id is
        // quiet (then by the Complete* arm below).
        let retry = matches!(
            (meta.state, req.commit),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false)
        );
        if entry.pending.is_some() || retry {
            let id = req.transactional_id.clone();
            return self.park(now_ms, &id, request_id, Request::End(req));
        }
        match (meta.state, req.commit) {
            (TxnState::Ongoing, commit) => {
                let target = TxnMetadata {
                    state: if commit {
                        TxnState::PrepareCommit
                    } else {
                        TxnState::PrepareAbort
                    },
                    last_update_ms: now_ms,
                    ..meta.clone()
                };
                self.start_persist(
                    &req.transactional_id,
                    Some(target),
                    Some((request_id, Reply::Ok)),
                    out,
                );
                Ok(())
            }
            // A retry of an EndTxn that already completed.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                out.push(respond(request_id, TxnResponse::ok()));
                Ok(())
            }
            _ => Err(TxnError::InvalidTxnState),
        }
    }

    /// AddPartitions/EndTxn checks, in Kafka's order: the id maps to this producer id, at this
    /// epoch.
    fn check_producer(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(&Entry, &TxnMetadata), TxnError> {
        let entry = self
            .entries
            .get(transactional_id)
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        let meta = entry
            .meta
            .as_ref()
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        if meta.producer_id != producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if meta.producer_epoch != producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        Ok((entry, meta))
    }

    // ---------------------------------------------------------------------------------------
    // Parking

    /// Parks a request on the busy id `id`: it is handled as if it had just arrived once the
    /// id's transition finished ([`TxnMachine::resume`]). Beyond
    /// [`TxnConfig::max_parked_per_id`] it is CONCURRENT_TRANSACTIONS, as without parking.
    fn park(
        &mut self,
        now_ms: u64,
        id: &str,
        request_id: RequestId,
        request: Request,
    ) -> Result<(), TxnError> {
        let max = self.config.max_parked_per_id;
        let Some(entry) = self.entries.get_mut(id) else {
            return Err(TxnError::ConcurrentTransactions);
        };
        debug_assert!(busy(entry), "{id}: parking on a quiet id");
        if entry.parked.len() + usize::from(fencing(entry)) >= max {
            return Err(TxnError::ConcurrentTransactions);
        }
        entry.parked.push_back(Parked {
            request_id,
            request,
            since_ms: now_ms,
        });
        self.reindex(id);
        Ok(())
    }

    /// Handles the requests parked on `id` if it is quiet now.
    fn resume_id(&mut self, now_ms: u64, id: &str, out: &mut Vec<Effect>) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if busy(entry) || entry.parked.is_empty() {
            return;
        }
        let queue = std::mem::take(&mut entry.parked);
        self.reindex(id);
        self.resume(now_ms, id, queue, out);
    }

    /// Handles `queue` (requests parked on `id`, which is quiet or gone) in arrival order, as
    /// if each had just arrived; once one starts a transition the rest park behind it again.
    fn resume(
        &mut self,
        now_ms: u64,
        id: &str,
        mut queue: VecDeque<Parked>,
        out: &mut Vec<Effect>,
    ) {
        while let Some(parked) = queue.pop_front() {
            if let Some(entry) = self.entries.get_mut(id) {
                if busy(entry) {
                    queue.push_front(parked);
                    queue.append(&mut entry.parked);
                    entry.parked = queue;
                    self.reindex(id);
                    return;
                }
            }
            let Parked {
                request_id,
                request,
                ..
            } = parked;
            let result = match request {
                Request::Init(req) => self.init_inner(now_ms, request_id, req, out),
                Request::Add(req) => self.add_inner(now_ms, request_id, req, out),
                Request::End(req) => self.end_inner(now_ms, request_id, req, out),
            };
            if let Err(error) = result {
                out.push(respond(request_id, TxnResponse::error(error)));
            }
        }
    }

    /// Answers CONCURRENT_TRANSACTIONS to the requests parked on `entry` for
    /// `parked_timeout_ms` (the client falls back to retrying).
    fn expire_parked(config: &TxnConfig, now_ms: u64, entry: &mut Entry, out: &mut Vec<Effect>) {
        let timeout_ms = config.parked_timeout_ms;
        entry.parked.retain(|p| {
            let expired = p.since_ms.saturating_add(timeout_ms) <= now_ms;
            if expired {
                out.push(respond(
                    p.request_id,
                    TxnResponse::error(TxnError::ConcurrentTransactions),
                ));
            }
            !expired
        });
    }

    // ---------------------------------------------------------------------------------------
    // Transitions

    fn start_allocation(
        &mut self,
        id: &str,
        request_id: RequestId,
        timeout_ms: i32,
        out: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        entry.pending = Some(Pending::Allocate {
            request_id,
            timeout_ms,
        });
        self.allocations.insert(request_id, id.to_owned());
        out.push(Effect::AllocateProducerId { request_id });
        self.reindex(id);
    }

    fn start_persist(
        &mut self,
        id: &str,
        target: Option<TxnMetadata>,
        request: Option<(RequestId, Reply)>,
        out: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        self.next_persist_id += 1;
        let persist_id = PersistId(self.next_persist_id);
        out.push(Effect::Persist {
            persist_id,
            transactional_id: id.to_owned(),
            metadata: target.clone(),
        });
        entry.pending = Some(Pending::Persist {
            persist_id,
            target,
            request,
        });
        self.persists.insert(persist_id, id.to_owned());
        self.reindex(id);
    }

    fn on_allocated(
        &mut self,
        now_ms: u64,
        id: &str,
        request_id: RequestId,
        result: Result<i64, ()>,
        out: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let timeout_ms = match entry.pending {
            Some(Pending::Allocate {
                request_id: r,
                timeout_ms,
            }) if r == request_id => timeout_ms,
            _ => return,
        };
        entry.pending = None;
        match result {
            Ok(producer_id) if producer_id >= 0 => {
                let target = TxnMetadata {
                    transactional_id: id.to_owned(),
                    producer_id,
                    producer_epoch: 0,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    txn_start_ms: 0,
                    last_update_ms: now_ms,
                };
                self.start_persist(id, Some(target), Some((request_id, Reply::Producer)), out);
            }
            _ => {
                out.push(respond(
                    request_id,
                    TxnResponse::error(TxnError::CoordinatorLoadInProgress),
                ));
                if entry.meta.is_none() {
                    let queue = self.remove_entry(id).map(|e| e.parked).unwrap_or_default();
                    self.resume(now_ms, id, queue, out);
                } else {
                    self.reindex(id);
                    self.resume_id(now_ms, id, out);
                }
            }
        }
    }

    fn on_persisted(
        &mut self,
        now_ms: u64,
        id: &str,
        persist_id: PersistId,
        result: Result<(), ()>,
        out: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let (target, request) = match entry.pending.take() {
            Some(Pending::Persist {
                persist_id: p,
                target,
                request,
            }) if p == persist_id => (target, request),
            other => {
                entry.pending = other;
                return;
            }
        };
        match (result, target) {
            (Ok(()), None) => {
                // The tombstone is durable: the id is gone (what was parked meets a new one).
                let queue = self.remove_entry(id).map(|e| e.parked).unwrap_or_default();
                self.resume(now_ms, id, queue, out);
                return;
            }
            (Ok(()), Some(meta)) => {
                entry.previous = match (&request, &entry.meta) {
                    (Some((_, Reply::Producer)), Some(old))
                        if (old.producer_id, old.producer_epoch)
                            != (meta.producer_id, meta.producer_epoch) =>
                    {
                        Some((old.producer_id, old.producer_epoch))
                    }
                    (Some((_, Reply::Producer)), Some(_)) => entry.previous,
                    _ => None,
                };
                entry.markers = Markers::Unsent;
                entry.retry_at_ms = 0;
                match request {
                    Some((request_id, Reply::Producer)) => out.push(respond(
                        request_id,
                        TxnResponse::producer(meta.producer_id, meta.producer_epoch),
                    )),
                    Some((request_id, Reply::Ok)) => {
                        out.push(respond(request_id, TxnResponse::ok()))
                    }
                    // Parking disabled: the client retries (Kafka's answer).
                    Some((request_id, Reply::Fence { .. }))
                        if self.config.max_parked_per_id == 0 =>
                    {
                        out.push(respond(
                            request_id,
                            TxnResponse::error(TxnError::ConcurrentTransactions),
                        ))
                    }
                    // First in line: it arrived before anything parked during the fence.
                    Some((request_id, Reply::Fence { req, since_ms })) => {
                        entry.parked.push_front(Parked {
                            request_id,
                            request: Request::Init(req),
                            since_ms,
                        })
                    }
                    None => {}
                }
                // PrepareCommit/PrepareAbort: the markers go out at the deadline this sets
                // (now), after the answer.
                entry.meta = Some(meta);
            }
            (Err(()), _) => {
                // Nothing was applied, so nothing to revert.
                match request {
                    Some((request_id, _)) => out.push(respond(
                        request_id,
                        TxnResponse::error(TxnError::CoordinatorNotAvailable),
                    )),
                    None => entry.retry_at_ms = now_ms.saturating_add(RETRY_BACKOFF_MS),
                }
                if entry.meta.is_none() {
                    let queue = self.remove_entry(id).map(|e| e.parked).unwrap_or_default();
                    self.resume(now_ms, id, queue, out);
                    return;
                }
            }
        }
        self.reindex(id);
        self.resume_id(now_ms, id, out);
    }

    /// Background work of an entry whose deadline passed.
    fn fire_entry(&mut self, now_ms: u64, id: &str, out: &mut Vec<Effect>) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        Self::expire_parked(&self.config, now_ms, entry, out);
        // The deadline may have been the parked requests' only.
        let due = state_deadline_of(&self.config, entry).is_some_and(|at_ms| at_ms <= now_ms);
        let Some(meta) = entry.meta.as_ref().filter(|_| due) else {
            self.reindex(id);
            return;
        };
        match meta.state {
            TxnState::Ongoing => {
                // Timed out: abort under a bumped epoch, so the producer is fenced.
                let target = TxnMetadata {
                    producer_epoch: meta.producer_epoch.saturating_add(1),
                    state: TxnState::PrepareAbort,
                    last_update_ms: now_ms,
                    ..meta.clone()
                };
                self.start_persist(id, Some(target), None, out);
            }
            TxnState::PrepareCommit | TxnState::PrepareAbort => match entry.markers {
                Markers::Unsent => {
                    entry.markers = Markers::InFlight;
                    out.push(Effect::WriteMarkers {
                        transactional_id: id.to_owned(),
                        producer_id: meta.producer_id,
                        producer_epoch: meta.producer_epoch,
                        commit: meta.state == TxnState::PrepareCommit,
                        partitions: meta.partitions.iter().cloned().collect(),
                    });
                    self.reindex(id);
                }
                Markers::Written => {
                    let target = TxnMetadata {
                        state: if meta.state == TxnState::PrepareCommit {
                            TxnState::CompleteCommit
                        } else {
                            TxnState::CompleteAbort
                        },
                        partitions: BTreeSet::new(),
                        txn_start_ms: 0,
                        last_update_ms: now_ms,
                        ..meta.clone()
                    };
                    self.start_persist(id, Some(target), None, out);
                }
                Markers::InFlight => self.reindex(id),
            },
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                // Idle for `id_expiration_ms`: write a tombstone, forget the id once durable.
                self.start_persist(id, None, None, out);
            }
            TxnState::Dead | TxnState::PrepareEpochFence => self.reindex(id),
        }
    }

    /// Answers NOT_COORDINATOR to what a replaced entry had waiting: the request of its pending
    /// transition, then its parked requests in arrival order.
    fn drop_pending(&mut self, entry: Entry, out: &mut Vec<Effect>) {
        let request = match entry.pending {
            Some(Pending::Allocate { request_id, .. }) => {
                self.allocations.remove(&request_id);
                Some(request_id)
            }
            Some(Pending::Persist {
                persist_id,
                request,
                ..
            }) => {
                self.persists.remove(&persist_id);
                request.map(|(r, _)| r)
            }
            None => None,
        };
        let parked = entry.parked.into_iter().map(|p| p.request_id);
        for request_id in request.into_iter().chain(parked) {
            out.push(respond(
                request_id,
                TxnResponse::error(TxnError::NotCoordinator),
            ));
        }
    }

    // ---------------------------------------------------------------------------------------
    // Deadlines

    fn fire_due(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        for _ in 0..MAX_DUE_PER_INPUT {
            let Some((at_ms, id)) = self.deadlines.first() else {
                return;
            };
            if *at_ms > now_ms {
                return;
            }
            let id = id.clone();
            self.fire_entry(now_ms, &id, out);
        }
    }

    /// Fires what the input made due and tells the driver about a changed timer (or about work
    /// left over by the per-input cap, with a time already past).
    fn finish(&mut self, now_ms: u64, mut out: Vec<Effect>) -> Vec<Effect> {
        self.fire_due(now_ms, &mut out);
        let next = self.next_deadline_ms();
        if let Some(at_ms) = next {
            if next != self.timer_at_ms || at_ms <= now_ms {
                out.push(Effect::ScheduleTimer { at_ms });
            }
        }
        self.timer_at_ms = next;
        self.debug_check_invariants();
        out
    }

    /// Moves the entry to the deadline its state calls for.
    fn reindex(&mut self, id: &str) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let deadline = deadline_of(&self.config, entry);
        if deadline == entry.deadline_ms {
            return;
        }
        if let Some(old) = entry.deadline_ms {
            self.deadlines.remove(&(old, id.to_owned()));
        }
        if let Some(at_ms) = deadline {
            self.deadlines.insert((at_ms, id.to_owned()));
        }
        entry.deadline_ms = deadline;
    }

    fn remove_entry(&mut self, id: &str) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        if let Some(at_ms) = entry.deadline_ms {
            self.deadlines.remove(&(at_ms, id.to_owned()));
        }
        Some(entry)
    }

    /// The module's invariants, checked after every input in debug builds (tests). A violation
    /// is a bug here, but in production it must not take the shard down with it.
    fn debug_check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        if self.entries.len() <= FULL_CHECK_MAX_IDS {
            let (mut indexed, mut persists, mut allocations) = (0, 0, 0);
            // Every request waits in one place only, so it is answered once.
            let mut waiting = HashSet::new();
            for (id, e) in &self.entries {
                match &e.pending {
                    Some(Pending::Allocate { request_id, .. })
                    | Some(Pending::Persist {
                        request: Some((request_id, _)),
                        ..
                    }) => debug_assert!(waiting.insert(*request_id), "{id}: {request_id:?} twice"),
                    _ => {}
                }
                for p in &e.parked {
                    debug_assert!(
                        waiting.insert(p.request_id),
                        "{id}: {:?} twice",
                        p.request_id
                    );
                }
                debug_assert!(
                    e.parked.is_empty() || busy(e),
                    "{id}: requests parked on a quiet id"
                );
                debug_assert!(
                    e.parked.is_empty()
                        || e.parked.len() + usize::from(fencing(e))
                            <= self.config.max_parked_per_id,
                    "{id}: {} parked",
                    e.parked.len()
                );
                match &e.meta {
                    // A new id: waiting for its producer id, then for its first record.
                    None => debug_assert!(
                        matches!(
                            e.pending,
                            Some(Pending::Allocate { .. })
                                | Some(Pending::Persist {
                                    target: Some(_),
                                    ..
                                })
                        ),
                        "{id}: no metadata and nothing pending"
                    ),
                    Some(m) => check_meta(id, m),
                }
                match &e.pending {
                    Some(Pending::Allocate { request_id, .. }) => {
                        allocations += 1;
                        debug_assert_eq!(self.allocations.get(request_id), Some(id));
                    }
                    Some(Pending::Persist {
                        persist_id, target, ..
                    }) => {
                        persists += 1;
                        debug_assert_eq!(self.persists.get(persist_id), Some(id));
                        if let Some(t) = target {
                            check_meta(id, t);
                        }
                    }
                    None => {}
                }
                if e.markers == Markers::InFlight {
                    debug_assert!(
                        e.pending.is_none()
                            && e.meta.as_ref().is_some_and(|m| m.state.is_prepare()),
                        "{id}: markers in flight outside PrepareCommit/PrepareAbort"
                    );
                }
                debug_assert_eq!(e.deadline_ms, deadline_of(&self.config, e), "{id}");
                if let Some(at_ms) = e.deadline_ms {
                    indexed += 1;
                    debug_assert!(self.deadlines.contains(&(at_ms, id.clone())), "{id}");
                }
            }
            debug_assert_eq!(indexed, self.deadlines.len(), "stale deadlines");
            debug_assert_eq!(persists, self.persists.len(), "stale persists");
            debug_assert_eq!(allocations, self.allocations.len(), "stale allocations");
        } else {
            debug_assert!(self.deadlines.len() <= self.entries.len());
            debug_assert!(self.persists.len() + self.allocations.len() <= self.entries.len());
        }
    }
}

fn check_meta(id: &str, m: &TxnMetadata) {
    debug_assert_eq!(m.transactional_id, id);
    debug_assert!(
        !matches!(m.state, TxnState::Dead | TxnState::PrepareEpochFence),
        "{id}: held in {:?}",
        m.state
    );
    if m.state.is_idle() {
        debug_assert!(
            m.partitions.is_empty(),
            "{id}: {:?} with partitions",
            m.state
        );
    }
}

/// When an entry next needs the machine's attention, if ever: its state's deadline, or the
/// oldest parked request's time out, whichever comes first.
fn deadline_of(config: &TxnConfig, entry: &Entry) -> Option<u64> {
    let parked = entry
        .parked
        .iter()
        .map(|p| p.since_ms.saturating_add(config.parked_timeout_ms))
        .min();
    match (state_deadline_of(config, entry), parked) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When an entry's state needs attention, if ever: nothing happens to an id with a pending
/// transition; an open transaction times out; an idle id expires; a decided one has its markers
/// written, then its completion persisted.
fn state_deadline_of(config: &TxnConfig, entry: &Entry) -> Option<u64> {
    if entry.pending.is_some() {
        return None;
    }
    let meta = entry.meta.as_ref()?;
    let at_ms = match meta.state {
        TxnState::Ongoing => meta
            .txn_start_ms
            .saturating_add(u64::try_from(meta.timeout_ms).unwrap_or(0)),
        TxnState::PrepareCommit | TxnState::PrepareAbort => match entry.markers {
            Markers::InFlight => return None,
            Markers::Unsent | Markers::Written => 0,
        },
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            meta.last_update_ms.saturating_add(config.id_expiration_ms)
        }
        TxnState::Dead | TxnState::PrepareEpochFence => return None,
    };
    Some(at_ms.max(entry.retry_at_ms))
}

/// Requests for the id must wait: a transition is pending (a persist, a producer-id
/// allocation, the Complete* persist), or its transaction is decided and completing.
fn busy(entry: &Entry) -> bool {
    entry.pending.is_some() || entry.meta.as_ref().is_none_or(|m| m.state.is_prepare())
}

/// The pending persist carries a fencing InitProducerId, which parks when it is durable.
fn fencing(entry: &Entry) -> bool {
    matches!(
        &entry.pending,
        Some(Pending::Persist {
            request: Some((_, Reply::Fence { .. })),
            ..
        })
    )
}

/// The metadata queries show: none while the id is created or expired.
fn visible(entry: &Entry) -> Option<&TxnMetadata> {
    match entry.pending {
        Some(Pending::Persist { target: None, .. }) => None,
        _ => entry.meta.as_ref(),
    }
}

fn respond(request_id: RequestId, response: TxnResponse) -> Effect {
    Effect::Respond {
        request_id,
        response,
    }
}
