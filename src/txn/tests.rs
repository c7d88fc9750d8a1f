//! Scenario tests for [`TxnMachine`] with a fake clock, transition by transition, driven the
//! way the network handlers and the shard will drive it; property tests for the
//! `__transaction_state` record format and for the machine under random drivers.

use std::collections::{BTreeSet, HashSet};

use proptest::prelude::*;

use super::log_format::{
    decode_key, decode_record, decode_value, encode_key, encode_record, encode_value,
    LogFormatError,
};
use super::*;

const T0: u64 = 1_000_000;
const TIMEOUT_MS: i32 = 60_000;
const EXP_MS: u64 = 86_400_000;
/// The default `parked_timeout_ms`.
const PARKED_MS: u64 = 5_000;

fn config() -> TxnConfig {
    TxnConfig {
        id_expiration_ms: EXP_MS,
        max_partitions_per_txn: 100,
        max_ids: 100,
        ..TxnConfig::default()
    }
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn tps(list: &[(&str, i32)]) -> Vec<TopicPartition> {
    list.iter().map(|(t, p)| tp(t, *p)).collect()
}

fn set(list: &[(&str, i32)]) -> BTreeSet<TopicPartition> {
    tps(list).into_iter().collect()
}

#[allow(clippy::too_many_arguments)]
fn meta(
    id: &str,
    producer_id: i64,
    producer_epoch: i16,
    state: TxnState,
    partitions: &[(&str, i32)],
    txn_start_ms: u64,
    last_update_ms: u64,
) -> TxnMetadata {
    TxnMetadata {
        transactional_id: id.to_owned(),
        producer_id,
        producer_epoch,
        timeout_ms: TIMEOUT_MS,
        state,
        partitions: set(partitions),
        txn_start_ms,
        last_update_ms,
    }
}

fn ok(request_id: RequestId) -> Effect {
    Effect::Respond {
        request_id,
        response: TxnResponse::ok(),
    }
}

fn err(request_id: RequestId, error: TxnError) -> Effect {
    Effect::Respond {
        request_id,
        response: TxnResponse::error(error),
    }
}

fn producer(request_id: RequestId, producer_id: i64, producer_epoch: i16) -> Effect {
    Effect::Respond {
        request_id,
        response: TxnResponse::producer(producer_id, producer_epoch),
    }
}

fn persist(persist_id: PersistId, id: &str, metadata: Option<TxnMetadata>) -> Effect {
    Effect::Persist {
        persist_id,
        transactional_id: id.to_owned(),
        metadata,
    }
}

fn markers(id: &str, pid: i64, epoch: i16, commit: bool, parts: &[(&str, i32)]) -> Effect {
    Effect::WriteMarkers {
        transactional_id: id.to_owned(),
        producer_id: pid,
        producer_epoch: epoch,
        commit,
        partitions: tps(parts),
    }
}

fn timer(at_ms: u64) -> Effect {
    Effect::ScheduleTimer { at_ms }
}

/// Drives one machine with a fake clock; checks that no request is answered twice and that
/// persist ids are handed out in order (so tests can name the next one).
struct Harness {
    m: TxnMachine,
    now_ms: u64,
    next_request: u64,
    persists: u64,
    answered: HashSet<RequestId>,
}

impl Harness {
    fn new() -> Self {
        Harness::with(config())
    }

    fn with(config: TxnConfig) -> Self {
        Harness {
            m: TxnMachine::new(config),
            now_ms: T0,
            next_request: 0,
            persists: 0,
            answered: HashSet::new(),
        }
    }

    fn record(&mut self, effects: Vec<Effect>) -> Vec<Effect> {
        for e in &effects {
            match e {
                Effect::Respond { request_id, .. } => assert!(
                    self.answered.insert(*request_id),
                    "request {request_id:?} answered twice"
                ),
                Effect::Persist { persist_id, .. } => {
                    self.persists += 1;
                    assert_eq!(*persist_id, PersistId(self.persists));
                }
                _ => {}
            }
        }
        effects
    }

    fn next_persist(&self) -> PersistId {
        PersistId(self.persists + 1)
    }

    fn request_id(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
    }

    fn init_with(
        &mut self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> (RequestId, Vec<Effect>) {
        let r = self.request_id();
        let req = InitPid {
            transactional_id: id.to_owned(),
            timeout_ms,
            expected,
        };
        let fx = self.m.init_producer_id(self.now_ms, r, req);
        (r, self.record(fx))
    }

    fn init(&mut self, id: &str, expected: Option<(i64, i16)>) -> (RequestId, Vec<Effect>) {
        self.init_with(id, TIMEOUT_MS, expected)
    }

    fn add_req(
        &mut self,
        id: &str,
        pid: i64,
        epoch: i16,
        parts: &[(&str, i32)],
        verify_only: bool,
    ) -> (RequestId, Vec<Effect>) {
        let r = self.request_id();
        let req = AddPartitions {
            transactional_id: id.to_owned(),
            producer_id: pid,
            producer_epoch: epoch,
            partitions: tps(parts),
            verify_only,
        };
        let fx = self.m.add_partitions(self.now_ms, r, req);
        (r, self.record(fx))
    }

    fn add(
        &mut self,
        id: &str,
        pid: i64,
        epoch: i16,
        parts: &[(&str, i32)],
    ) -> (RequestId, Vec<Effect>) {
        self.add_req(id, pid, epoch, parts, false)
    }

    fn verify(
        &mut self,
        id: &str,
        pid: i64,
        epoch: i16,
        parts: &[(&str, i32)],
    ) -> (RequestId, Vec<Effect>) {
        self.add_req(id, pid, epoch, parts, true)
    }

    fn end(&mut self, id: &str, pid: i64, epoch: i16, commit: bool) -> (RequestId, Vec<Effect>) {
        let r = self.request_id();
        let req = EndTxn {
            transactional_id: id.to_owned(),
            producer_id: pid,
            producer_epoch: epoch,
            commit,
        };
        let fx = self.m.end_txn(self.now_ms, r, req);
        (r, self.record(fx))
    }

    fn allocated(&mut self, r: RequestId, result: Result<i64, ()>) -> Vec<Effect> {
        let fx = self.m.producer_id_allocated(self.now_ms, r, result);
        self.record(fx)
    }

    fn persisted(&mut self, p: PersistId, success: bool) -> Vec<Effect> {
        let result = if success { Ok(()) } else { Err(()) };
        let fx = self.m.persisted(self.now_ms, p, result);
        self.record(fx)
    }

    fn markers_done(&mut self, id: &str, pid: i64, epoch: i16, success: bool) -> Vec<Effect> {
        let result = if success { Ok(()) } else { Err(()) };
        let fx = self.m.markers_written(self.now_ms, id, pid, epoch, result);
        self.record(fx)
    }

    fn tick(&mut self) -> Vec<Effect> {
        let fx = self.m.tick(self.now_ms);
        self.record(fx)
    }

    fn restore(&mut self, records: Vec<(&str, Option<TxnMetadata>)>) -> Vec<Effect> {
        let records = records.into_iter().map(|(id, m)| (id.to_owned(), m));
        let fx = self.m.restore(self.now_ms, records);
        self.record(fx)
    }

    fn state(&self, id: &str) -> Option<TxnState> {
        self.m.describe(id).map(|m| m.state)
    }

    // Composite steps (each step's exact effects are covered by its own scenario test).

    /// A new id with producer id `pid`, epoch 0.
    fn create(&mut self, id: &str, pid: i64) {
        let (r, fx) = self.init(id, None);
        assert_eq!(fx, vec![Effect::AllocateProducerId { request_id: r }]);
        let p = self.next_persist();
        let fx = self.allocated(r, Ok(pid));
        assert!(matches!(fx.as_slice(), [Effect::Persist { .. }]), "{fx:?}");
        let fx = self.persisted(p, true);
        assert_eq!(fx.first(), Some(&producer(r, pid, 0)));
    }

    /// AddPartitions, persisted and answered OK.
    fn begin(&mut self, id: &str, pid: i64, epoch: i16, parts: &[(&str, i32)]) {
        let p = self.next_persist();
        let (r, fx) = self.add(id, pid, epoch, parts);
        assert!(matches!(fx.as_slice(), [Effect::Persist { .. }]), "{fx:?}");
        let fx = self.persisted(p, true);
        assert_eq!(fx.first(), Some(&ok(r)));
    }

    /// EndTxn, persisted: answered OK and the markers requested.
    fn prepare(&mut self, id: &str, pid: i64, epoch: i16, commit: bool) {
        let parts: Vec<TopicPartition> = self
            .m
            .describe(id)
            .unwrap()
            .partitions
            .clone()
            .into_iter()
            .collect();
        let p = self.next_persist();
        let (r, fx) = self.end(id, pid, epoch, commit);
        assert!(matches!(fx.as_slice(), [Effect::Persist { .. }]), "{fx:?}");
        let fx = self.persisted(p, true);
        let expected = Effect::WriteMarkers {
            transactional_id: id.to_owned(),
            producer_id: pid,
            producer_epoch: epoch,
            commit,
            partitions: parts,
        };
        assert_eq!(fx, vec![ok(r), expected]);
    }

    /// Markers written, the completion persisted, then every persist the requests parked on
    /// the id start.
    fn complete_with_parked(&mut self, id: &str, pid: i64, epoch: i16) {
        let mut p = self.next_persist();
        self.markers_done(id, pid, epoch, true);
        while p.0 < self.next_persist().0 {
            self.persisted(p, true);
            p = PersistId(p.0 + 1);
        }
    }

    /// Markers written and the completion persisted.
    fn complete(&mut self, id: &str, pid: i64, epoch: i16) {
        let p = self.next_persist();
        let fx = self.markers_done(id, pid, epoch, true);
        assert!(matches!(fx.as_slice(), [Effect::Persist { .. }]), "{fx:?}");
        let fx = self.persisted(p, true);
        assert!(
            fx.iter().all(|e| matches!(e, Effect::ScheduleTimer { .. })),
            "{fx:?}"
        );
    }
}

// -------------------------------------------------------------------------------------------
// InitProducerId

#[test]
fn init_new_id_allocates_persists_then_answers() {
    let mut h = Harness::new();
    let (r, fx) = h.init("t", None);
    assert_eq!(fx, vec![Effect::AllocateProducerId { request_id: r }]);
    assert_eq!(h.m.describe("t"), None);
    assert_eq!(h.m.len(), 1);

    let m0 = meta("t", 100, 0, TxnState::Empty, &[], 0, T0);
    let fx = h.allocated(r, Ok(100));
    assert_eq!(fx, vec![persist(PersistId(1), "t", Some(m0.clone()))]);
    // Not durable yet: neither answered nor visible.
    assert_eq!(h.m.describe("t"), None);

    h.advance(5);
    let fx = h.persisted(PersistId(1), true);
    assert_eq!(fx, vec![producer(r, 100, 0), timer(T0 + EXP_MS)]);
    assert_eq!(h.m.describe("t"), Some(&m0));
    assert_eq!(h.m.next_deadline_ms(), Some(T0 + EXP_MS));
}

#[test]
fn init_validates_id_and_timeout() {
    let mut h = Harness::new();
    let (r, fx) = h.init("", None);
    assert_eq!(fx, vec![err(r, TxnError::InvalidRequest)]);
    for bad in [0, -1, 900_001, i32::MAX] {
        let (r, fx) = h.init_with("t", bad, None);
        assert_eq!(
            fx,
            vec![err(r, TxnError::InvalidTransactionTimeout)],
            "{bad}"
        );
    }
    assert!(h.m.is_empty());
    let (r, fx) = h.init_with("t", 900_000, None);
    assert_eq!(fx, vec![Effect::AllocateProducerId { request_id: r }]);
    assert_eq!(h.m.len(), 1);
}

#[test]
fn init_bumps_epoch_of_known_id() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.advance(10);
    let p = h.next_persist();
    let (r, fx) = h.init_with("t", 30_000, None);
    let bumped = TxnMetadata {
        timeout_ms: 30_000,
        ..meta("t", 100, 1, TxnState::Empty, &[], 0, T0 + 10)
    };
    assert_eq!(fx, vec![persist(p, "t", Some(bumped.clone()))]);
    let fx = h.persisted(p, true);
    assert_eq!(fx, vec![producer(r, 100, 1), timer(T0 + 10 + EXP_MS)]);
    assert_eq!(h.m.describe("t"), Some(&bumped));
}

#[test]
fn init_from_complete_states_bumps_and_empties() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    h.prepare("t", 100, 0, true);
    h.complete("t", 100, 0);
    assert_eq!(h.state("t"), Some(TxnState::CompleteCommit));
    h.advance(1);
    let p = h.next_persist();
    let (r, fx) = h.init("t", Some((100, 0)));
    assert_eq!(
        fx,
        vec![persist(
            p,
            "t",
            Some(meta("t", 100, 1, TxnState::Empty, &[], 0, h.now_ms))
        )]
    );
    let fx = h.persisted(p, true);
    assert_eq!(fx, vec![producer(r, 100, 1), timer(h.now_ms + EXP_MS)]);
}

#[test]
fn init_with_expected_producer_kip_360() {
    let mut h = Harness::new();
    h.create("t", 100);

    // The current id and epoch: bumped.
    let p = h.next_persist();
    let (r, _) = h.init("t", Some((100, 0)));
    let fx = h.persisted(p, true);
    assert_eq!(fx[0], producer(r, 100, 1));

    // The answer was lost and the client retries with what it had: same epoch again, no
    // second bump.
    h.advance(1);
    let p = h.next_persist();
    let (r, fx) = h.init("t", Some((100, 0)));
    assert_eq!(
        fx,
        vec![persist(
            p,
            "t",
            Some(meta("t", 100, 1, TxnState::Empty, &[], 0, h.now_ms))
        )]
    );
    let fx = h.persisted(p, true);
    assert_eq!(fx[0], producer(r, 100, 1));

    // Any other epoch or producer id is a zombie.
    let (r, fx) = h.init("t", Some((100, 7)));
    assert_eq!(fx, vec![err(r, TxnError::ProducerFenced)]);
    let (r, fx) = h.init("t", Some((999, 1)));
    assert_eq!(fx, vec![err(r, TxnError::ProducerFenced)]);
    assert_eq!(h.m.describe("t").unwrap().producer_epoch, 1);

    // Unknown ids ignore `expected` (the client's id expired).
    let (r, fx) = h.init("u", Some((5, 5)));
    assert_eq!(fx, vec![Effect::AllocateProducerId { request_id: r }]);
}

#[test]
fn expected_from_wire() {
    assert_eq!(InitPid::expected_from_wire(-1, -1), Ok(None));
    assert_eq!(InitPid::expected_from_wire(5, 2), Ok(Some((5, 2))));
    assert_eq!(
        InitPid::expected_from_wire(5, -1),
        Err(TxnError::InvalidRequest)
    );
    assert_eq!(
        InitPid::expected_from_wire(-1, 0),
        Err(TxnError::InvalidRequest)
    );
}

#[test]
fn init_with_pending_transition_parks() {
    let mut h = Harness::new();
    let (r1, _) = h.init("t", None);
    // Waiting for the producer id: parked.
    let (r2, fx) = h.init("t", None);
    assert_eq!(fx, vec![timer(T0 + PARKED_MS)]);
    let (r, fx) = h.add("t", 100, 0, &[("a", 0)]);
    assert_eq!(fx, vec![err(r, TxnError::InvalidProducerIdMapping)]);
    // Waiting for the persist: parked behind it.
    let p = h.next_persist();
    h.allocated(r1, Ok(100));
    let (r3, fx) = h.init("t", None);
    assert_eq!(fx, vec![]);
    // Then handled in arrival order, each as if it had just arrived.
    let p2 = h.next_persist();
    let fx = h.persisted(p, true);
    assert_eq!(
        fx,
        vec![
            producer(r1, 100, 0),
            persist(
                p2,
                "t",
                Some(meta("t", 100, 1, TxnState::Empty, &[], 0, T0))
            ),
        ]
    );
    let p3 = h.next_persist();
    let fx = h.persisted(p2, true);
    assert_eq!(fx[0], producer(r2, 100, 1));
    assert!(matches!(fx[1], Effect::Persist { persist_id, .. } if persist_id == p3));
    let fx = h.persisted(p3, true);
    assert_eq!(fx, vec![producer(r3, 100, 2), timer(T0 + EXP_MS)]);
}

#[test]
fn init_fences_an_ongoing_transaction() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0), ("b", 1)]);
    let start = h.now_ms;
    h.advance(100);

    let p = h.next_persist();
    let (r, fx) = h.init("t", None);
    let fenced = meta(
        "t",
        100,
        1,
        TxnState::PrepareAbort,
        &[("a", 0), ("b", 1)],
        start,
        h.now_ms,
    );
    assert_eq!(fx, vec![persist(p, "t", Some(fenced.clone()))]);
    // Nothing visible or answered until durable.
    assert_eq!(h.state("t"), Some(TxnState::Ongoing));
    // Durable: the InitProducerId parks until the abort completed (it is not answered
    // CONCURRENT_TRANSACTIONS to retry).
    let fx = h.persisted(p, true);
    assert_eq!(
        fx,
        vec![
            markers("t", 100, 1, false, &[("a", 0), ("b", 1)]),
            timer(h.now_ms + PARKED_MS),
        ]
    );
    assert_eq!(h.m.describe("t"), Some(&fenced));

    // The old producer is fenced.
    let (r2, fx) = h.add("t", 100, 0, &[("c", 0)]);
    assert_eq!(fx, vec![err(r2, TxnError::ProducerFenced)]);
    let (r2, fx) = h.end("t", 100, 0, true);
    assert_eq!(fx, vec![err(r2, TxnError::ProducerFenced)]);
    // Another InitProducerId parks behind the fencing one.
    let (r2, fx) = h.init("t", None);
    assert_eq!(fx, vec![]);

    let p = h.next_persist();
    let fx = h.markers_done("t", 100, 1, true);
    let aborted = meta("t", 100, 1, TxnState::CompleteAbort, &[], 0, h.now_ms);
    assert_eq!(fx, vec![persist(p, "t", Some(aborted))]);
    // The abort is durable: the fencing request gets a fresh epoch, then the other one.
    let p2 = h.next_persist();
    let fx = h.persisted(p, true);
    let bumped = meta("t", 100, 2, TxnState::Empty, &[], 0, h.now_ms);
    assert_eq!(fx, vec![persist(p2, "t", Some(bumped))]);
    let p3 = h.next_persist();
    let fx = h.persisted(p2, true);
    assert_eq!(fx[0], producer(r, 100, 2));
    let fx = h.persisted(p3, true);
    assert_eq!(fx[0], producer(r2, 100, 3));
}

#[test]
fn init_during_prepare_parks() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    h.prepare("t", 100, 0, true);
    let (r1, fx) = h.init("t", None);
    assert_eq!(fx, vec![timer(h.now_ms + PARKED_MS)]);
    let (r2, fx) = h.init("t", Some((100, 0)));
    assert_eq!(fx, vec![]);
    assert_eq!(h.state("t"), Some(TxnState::PrepareCommit));
    let p = h.next_persist();
    h.markers_done("t", 100, 0, true);
    let fx = h.persisted(p, true);
    assert!(matches!(fx.as_slice(), [Effect::Persist { .. }]), "{fx:?}");
    let fx = h.persisted(PersistId(p.0 + 1), true);
    assert_eq!(fx[0], producer(r1, 100, 1));
    // A retry of the bump (KIP-360 `expected` is the epoch it replaced) gets the same epoch.
    let fx = h.persisted(PersistId(p.0 + 2), true);
    assert_eq!(fx[0], producer(r2, 100, 1));
}

#[test]
fn init_during_prepare_abort_parks_and_gets_a_fresh_epoch() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    h.prepare("t", 100, 0, false);
    let (r, fx) = h.init("t", Some((100, 0)));
    assert_eq!(fx, vec![timer(h.now_ms + PARKED_MS)]);
    let p = h.next_persist();
    h.markers_done("t", 100, 0, true);
    let p2 = h.next_persist();
    let fx = h.persisted(p, true);
    assert_eq!(
        fx,
        vec![persist(
            p2,
            "t",
            Some(meta("t", 100, 1, TxnState::Empty, &[], 0, h.now_ms))
        )]
    );
    let fx = h.persisted(p2, true);
    assert_eq!(fx, vec![producer(r, 100, 1), timer(h.now_ms + EXP_MS)]);
}

#[test]
fn epoch_exhaustion_rotates_the_producer_id() {
    let mut h = Harness::new();
    let old = meta("t", 7, i16::MAX - 2, TxnState::Empty, &[], 0, T0);
    h.restore(vec![("t", Some(old))]);

    // The last ordinary bump.
    let p = h.next_persist();
    let (r, _) = h.init("t", None);
    let fx = h.persisted(p, true);
    assert_eq!(fx[0], producer(r, 7, i16::MAX - 1));

    // i16::MAX stays free for a fence: a new producer id instead.
    h.advance(1);
    let (r, fx) = h.init("t", Some((7, i16::MAX - 1)));
    assert_eq!(fx, vec![Effect::AllocateProducerId { request_id: r }]);
    assert_eq!(h.m.describe("t").unwrap().producer_id, 7);
    // The old producer's request parks during the rotation, then no longer maps.
    let (r2, fx) = h.add("t", 7, i16::MAX - 1, &[("a", 0)]);
    assert_eq!(fx, vec![timer(h.now_ms + PARKED_MS)]);
    let p = h.next_persist();
    let fx = h.allocated(r, Ok(8));
    assert_eq!(
        fx,
        vec![persist(
            p,
            "t",
            Some(meta("t", 8, 0, TxnState::Empty, &[], 0, h.now_ms))
        )]
    );
    let fx = h.persisted(p, true);
    assert_eq!(fx[0], producer(r, 8, 0));
    assert_eq!(fx[1], err(r2, TxnError::InvalidProducerIdMapping));

    // A retry from before the rotation (its answer was lost) gets the new id again.
    let p = h.next_persist();
    let (r, _) = h.init("t", Some((7, i16::MAX - 1)));
    let fx = h.persisted(p, true);
    assert_eq!(fx[0], producer(r, 8, 0));
}

#[test]
fn fence_at_the_last_epoch_then_rotates() {
    let mut h = Harness::new();
    let ongoing = meta("t", 7, i16::MAX - 1, TxnState::Ongoing, &[("a", 0)], T0, T0);
    h.restore(vec![("t", Some(ongoing))]);
    let p = h.next_persist();
    let (r, _) = h.init("t", None);
    let fx = h.persisted(p, true);
    assert_eq!(
        fx,
        vec![
            markers("t", 7, i16::MAX, false, &[("a", 0)]),
            timer(h.now_ms + PARKED_MS),
        ]
    );
    // The fencing request, parked, is handled again once the abort completed: a new id.
    let p = h.next_persist();
    h.markers_done("t", 7, i16::MAX, true);
    let fx = h.persisted(p, true);
    assert_eq!(fx[0], Effect::AllocateProducerId { request_id: r });
    let p = h.next_persist();
    h.allocated(r, Ok(8));
    let fx = h.persisted(p, true);
    assert_eq!(fx[0], producer(r, 8, 0));
}

#[test]
fn allocation_failure_is_retriable() {
    let mut h = Harness::new();
    let (r, _) = h.init("t", None);
    let fx = h.allocated(r, Err(()));
    assert_eq!(fx, vec![err(r, TxnError::CoordinatorLoadInProgress)]);
    assert!(h.m.is_empty());
    // A negative id counts as a failure.
    let (r, _) = h.init("t", None);
    let fx = h.allocated(r, Ok(-1));
    assert_eq!(fx, vec![err(r, TxnError::CoordinatorLoadInProgress)]);
    assert!(h.m.is_empty());

    // A rotation that fails leaves the id as it was.
    let old = meta("u", 7, i16::MAX - 1, TxnState::Empty, &[], 0, T0);
    h.restore(vec![("u", Some(old.clone()))]);
    let (r, _) = h.init("u", None);
    let fx = h.allocated(r, Err(()));
    assert_eq!(
        fx,
        vec![
            err(r, TxnError::CoordinatorLoadInProgress),
            timer(T0 + EXP_MS)
        ]
    );
    assert_eq!(h.m.describe("u"), Some(&old));
}

// -------------------------------------------------------------------------------------------
// AddPartitions

#[test]
fn add_partitions_first_again_and_more() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.advance(10);
    let start = h.now_ms;

    let p = h.next_persist();
    let (r, fx) = h.add("t", 100, 0, &[("b", 1), ("a", 0)]);
    let m1 = meta(
        "t",
        100,
        0,
        TxnState::Ongoing,
        &[("a", 0), ("b", 1)],
        start,
        start,
    );
    assert_eq!(fx, vec![persist(p, "t", Some(m1.clone()))]);
    let fx = h.persisted(p, true);
    assert_eq!(fx, vec![ok(r), timer(start + TIMEOUT_MS as u64)]);
    assert_eq!(h.m.describe("t"), Some(&m1));

    // Already in the transaction: OK, nothing persisted.
    h.advance(10);
    let (r, fx) = h.add("t", 100, 0, &[("a", 0)]);
    assert_eq!(fx, vec![ok(r)]);
    assert_eq!(h.m.describe("t"), Some(&m1));

    // More partitions: the start time stays.
    let p = h.next_persist();
    let (r, fx) = h.add("t", 100, 0, &[("a", 0), ("c", 2)]);
    let m2 = meta(
        "t",
        100,
        0,
        TxnState::Ongoing,
        &[("a", 0), ("b", 1), ("c", 2)],
        start,
        h.now_ms,
    );
    assert_eq!(fx, vec![persist(p, "t", Some(m2.clone()))]);
    // Parked while that persist is in flight, then handled.
    let (r2, fx) = h.add("t", 100, 0, &[("d", 0)]);
    assert_eq!(fx, vec![timer(h.now_ms + PARKED_MS)]);
    let p2 = h.next_persist();
    let fx = h.persisted(p, true);
    assert_eq!(h.m.describe("t"), Some(&m2));
    let m3 = meta(
        "t",
        100,
        0,
        TxnState::Ongoing,
        &[("a", 0), ("b", 1), ("c", 2), ("d", 0)],
        start,
        h.now_ms,
    );
    assert_eq!(fx, vec![ok(r), persist(p2, "t", Some(m3))]);
    let fx = h.persisted(p2, true);
    assert_eq!(fx, vec![ok(r2), timer(start + TIMEOUT_MS as u64)]);
}

#[test]
fn add_partitions_verify_only() {
    let mut h = Harness::new();
    h.create("t", 100);
    // Nothing open: nothing is included.
    let (r, fx) = h.verify("t", 100, 0, &[("a", 0)]);
    assert_eq!(fx, vec![err(r, TxnError::InvalidTxnState)]);

    h.begin("t", 100, 0, &[("a", 0), ("b", 1)]);
    let before = h.m.describe("t").cloned();
    let (r, fx) = h.verify("t", 100, 0, &[("b", 1), ("a", 0)]);
    assert_eq!(fx, vec![ok(r)]);
    let (r, fx) = h.verify("t", 100, 0, &[("a", 0), ("c", 0)]);
    assert_eq!(fx, vec![err(r, TxnError::InvalidTxnState)]);
    assert_eq!(h.m.describe("t").cloned(), before);
    // The producer checks come first.
    let (r, fx) = h.verify("t", 100, 1, &[("a", 0)]);
    assert_eq!(fx, vec![err(r, TxnError::ProducerFenced)]);
}

#[test]
fn add_partitions_and_end_txn_check_the_producer() {
    let mut h = Harness::new();
    let (r, fx) = h.add("nope", 1, 0, &[("a", 0)]);
    assert_eq!(fx, vec![err(r, TxnError::InvalidProducerIdMapping)]);
    let (r, fx) = h.end("nope", 1, 0, true);
    assert_eq!(fx, vec![err(r, TxnError::InvalidProducerIdMapping)]);
    let (r, fx) = h.add("", 1, 0, &[("a", 0)]);
    assert_eq!(fx, vec![err(r, TxnError::InvalidRequest)]);
    let (r, fx) = h.end("", 1, 0, true);
    assert_eq!(fx, vec![err(r, TxnError::InvalidRequest)]);

    h.create("t", 100);
    let (r, fx) = h.add("t", 101, 0, &[("a", 0)]);
    assert_eq!(fx, vec![err(r, TxnError::InvalidProducerIdMapping)]);
    let (r, fx) = h.add("t", 100, 1, &[("a", 0)]);
    assert_eq!(fx, vec![err(r, TxnError::ProducerFenced)]);
    let (r, fx) = h.add("t", 100, -1, &[("a", 0)]);
    assert_eq!(fx, vec![err(r, TxnError::ProducerFenced)]);
    let (r, fx) = h.end("t", 101, 0, true);
    assert_eq!(fx, vec![err(r, TxnError::InvalidProducerIdMapping)]);
    let (r, fx) = h.end("t", 100, 3, false);
    assert_eq!(fx, vec![err(r, TxnError::ProducerFenced)]);
}

#[test]
fn add_partitions_during_prepare_is_answered_after_completion() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    let p = h.next_persist();
    let (r, _) = h.end("t", 100, 0, true);
    // The EndTxn persist is pending: parked.
    let (r1, fx) = h.add("t", 100, 0, &[("a", 0)]);
    assert_eq!(fx, vec![timer(h.now_ms + PARKED_MS)]);
    let fx = h.persisted(p, true);
    assert_eq!(fx, vec![ok(r), markers("t", 100, 0, true, &[("a", 0)])]);
    // Markers being written: parked too.
    let (r2, fx) = h.add("t", 100, 0, &[("b", 0)]);
    assert_eq!(fx, vec![]);
    let p = h.next_persist();
    let fx = h.markers_done("t", 100, 0, true);
    assert!(matches!(fx.as_slice(), [Effect::Persist { .. }]), "{fx:?}");
    // CompleteCommit durable: the next transaction starts with the first parked request.
    h.advance(3);
    let start = h.now_ms;
    let p2 = h.next_persist();
    let fx = h.persisted(p, true);
    let first = meta("t", 100, 0, TxnState::Ongoing, &[("a", 0)], start, start);
    assert_eq!(fx, vec![persist(p2, "t", Some(first))]);
    let p3 = h.next_persist();
    let fx = h.persisted(p2, true);
    let both = meta(
        "t",
        100,
        0,
        TxnState::Ongoing,
        &[("a", 0), ("b", 0)],
        start,
        start,
    );
    assert_eq!(fx, vec![ok(r1), persist(p3, "t", Some(both))]);
    let fx = h.persisted(p3, true);
    assert_eq!(fx, vec![ok(r2), timer(start + TIMEOUT_MS as u64)]);
    assert!(!h.answered.is_empty());
}

#[test]
fn end_txn_retry_during_prepare_commit_parks_and_is_answered_ok() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    h.prepare("t", 100, 0, true);
    // The client's EndTxn timed out and it retries while the markers are written.
    let (r, fx) = h.end("t", 100, 0, true);
    assert_eq!(fx, vec![timer(h.now_ms + PARKED_MS)]);
    // The opposite outcome is still refused at once.
    let (r2, fx) = h.end("t", 100, 0, false);
    assert_eq!(fx, vec![err(r2, TxnError::InvalidTxnState)]);
    let p = h.next_persist();
    h.markers_done("t", 100, 0, true);
    let fx = h.persisted(p, true);
    assert_eq!(fx, vec![ok(r), timer(h.now_ms + EXP_MS)]);
}

#[test]
fn parked_requests_beyond_the_bound_are_concurrent() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    h.prepare("t", 100, 0, true);
    let max = h.m.config().max_parked_per_id;
    assert_eq!(max, 8);
    let parked: Vec<RequestId> = (0..max)
        .map(|i| h.add("t", 100, 0, &[("b", i as i32)]).0)
        .collect();
    let (r, fx) = h.add("t", 100, 0, &[("c", 0)]);
    assert_eq!(fx, vec![err(r, TxnError::ConcurrentTransactions)]);
    let (r, fx) = h.end("t", 100, 0, true);
    assert_eq!(fx, vec![err(r, TxnError::ConcurrentTransactions)]);
    let (r, fx) = h.init("t", None);
    assert_eq!(fx, vec![err(r, TxnError::ConcurrentTransactions)]);
    // The parked ones are all answered OK once the transaction completed, in order.
    h.complete_with_parked("t", 100, 0);
    for r in &parked {
        assert!(h.answered.contains(r), "{r:?}");
    }
    assert_eq!(h.m.describe("t").unwrap().partitions.len(), max);

    // Parking disabled: Kafka's immediate answer.
    let mut h = Harness::with(TxnConfig {
        max_parked_per_id: 0,
        ..config()
    });
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    h.prepare("t", 100, 0, true);
    let (r, fx) = h.add("t", 100, 0, &[("b", 0)]);
    assert_eq!(fx, vec![err(r, TxnError::ConcurrentTransactions)]);
}

#[test]
fn parked_requests_time_out_while_markers_keep_failing() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    h.prepare("t", 100, 0, true);
    let parked_at = h.now_ms;
    let (r1, fx) = h.add("t", 100, 0, &[("b", 0)]);
    assert_eq!(fx, vec![timer(parked_at + PARKED_MS)]);
    let fx = h.markers_done("t", 100, 0, false);
    assert_eq!(fx, vec![timer(parked_at + RETRY_BACKOFF_MS)]);
    let mut r2 = None;
    for i in 1..5 {
        h.advance(RETRY_BACKOFF_MS);
        let fx = h.tick();
        assert_eq!(fx[0], markers("t", 100, 0, true, &[("a", 0)]));
        if i == 2 {
            r2 = Some(h.end("t", 100, 0, true).0);
        }
        h.markers_done("t", 100, 0, false);
    }
    let r2 = r2.unwrap();
    // 5 s after it arrived, the first is answered CONCURRENT_TRANSACTIONS (the client falls
    // back to retrying); the second still waits.
    h.advance(RETRY_BACKOFF_MS);
    assert_eq!(h.now_ms, parked_at + PARKED_MS);
    let fx = h.tick();
    assert_eq!(fx[0], err(r1, TxnError::ConcurrentTransactions));
    assert!(
        fx.contains(&markers("t", 100, 0, true, &[("a", 0)])),
        "{fx:?}"
    );
    assert!(!h.answered.contains(&r2));
    h.markers_done("t", 100, 0, false);
    h.advance(2 * RETRY_BACKOFF_MS);
    let fx = h.tick();
    assert_eq!(fx[0], err(r2, TxnError::ConcurrentTransactions));
    // Only the marker retry is left.
    assert_eq!(h.m.next_deadline_ms(), None);
    h.complete("t", 100, 0);
}

#[test]
fn restore_answers_parked_requests_not_coordinator() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    let (re, _) = h.end("t", 100, 0, true);
    let (r1, _) = h.add("t", 100, 0, &[("b", 0)]);
    let (r2, _) = h.init("t", None);
    let fx = h.restore(vec![(
        "t",
        Some(meta(
            "t",
            100,
            0,
            TxnState::CompleteCommit,
            &[],
            0,
            h.now_ms,
        )),
    )]);
    assert_eq!(
        fx,
        vec![
            err(re, TxnError::NotCoordinator),
            err(r1, TxnError::NotCoordinator),
            err(r2, TxnError::NotCoordinator),
            timer(h.now_ms + EXP_MS),
        ]
    );
    // The same while the markers are written (nothing pending, only parked).
    h.begin("t", 100, 0, &[("a", 0)]);
    h.prepare("t", 100, 0, true);
    let (r, _) = h.add("t", 100, 0, &[("b", 0)]);
    let fx = h.restore(vec![("t", None)]);
    assert_eq!(fx, vec![err(r, TxnError::NotCoordinator)]);
    assert!(h.m.is_empty());
    assert_eq!(h.m.next_deadline_ms(), None);
}

// -------------------------------------------------------------------------------------------
// EndTxn

#[test]
fn commit_end_to_end() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0), ("b", 1)]);
    let start = h.now_ms;
    h.advance(50);

    let p = h.next_persist();
    let (r, fx) = h.end("t", 100, 0, true);
    let prepared = meta(
        "t",
        100,
        0,
        TxnState::PrepareCommit,
        &[("a", 0), ("b", 1)],
        start,
        h.now_ms,
    );
    assert_eq!(fx, vec![persist(p, "t", Some(prepared.clone()))]);
    // A retry while the decision is not durable yet: parked.
    let (r2, fx) = h.end("t", 100, 0, true);
    let parked_until = h.now_ms + PARKED_MS;
    assert_eq!(fx, vec![timer(parked_until)]);

    h.advance(5);
    let fx = h.persisted(p, true);
    assert_eq!(
        fx,
        vec![ok(r), markers("t", 100, 0, true, &[("a", 0), ("b", 1)])]
    );
    assert_eq!(h.m.describe("t"), Some(&prepared));
    // Only the parked request's time out.
    assert_eq!(h.m.next_deadline_ms(), Some(parked_until));

    // Retries while the markers are written: parked too.
    let (r3, fx) = h.end("t", 100, 0, true);
    assert_eq!(fx, vec![]);
    let (r, fx) = h.end("t", 100, 0, false);
    assert_eq!(fx, vec![err(r, TxnError::InvalidTxnState)]);

    h.advance(5);
    let p = h.next_persist();
    let fx = h.markers_done("t", 100, 0, true);
    let done = meta("t", 100, 0, TxnState::CompleteCommit, &[], 0, h.now_ms);
    assert_eq!(fx, vec![persist(p, "t", Some(done.clone()))]);
    let fx = h.persisted(p, true);
    assert_eq!(fx, vec![ok(r2), ok(r3), timer(h.now_ms + EXP_MS)]);
    assert_eq!(h.m.describe("t"), Some(&done));

    // Retries after completion.
    let (r, fx) = h.end("t", 100, 0, true);
    assert_eq!(fx, vec![ok(r)]);
    let (r, fx) = h.end("t", 100, 0, false);
    assert_eq!(fx, vec![err(r, TxnError::InvalidTxnState)]);

    // The next transaction starts afresh.
    h.advance(5);
    let p = h.next_persist();
    let (_, fx) = h.add("t", 100, 0, &[("c", 3)]);
    assert_eq!(
        fx,
        vec![persist(
            p,
            "t",
            Some(meta(
                "t",
                100,
                0,
                TxnState::Ongoing,
                &[("c", 3)],
                h.now_ms,
                h.now_ms
            ))
        )]
    );
}

#[test]
fn abort_end_to_end() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    let start = h.now_ms;
    let p = h.next_persist();
    let (r, fx) = h.end("t", 100, 0, false);
    assert_eq!(
        fx,
        vec![persist(
            p,
            "t",
            Some(meta(
                "t",
                100,
                0,
                TxnState::PrepareAbort,
                &[("a", 0)],
                start,
                h.now_ms
            ))
        )]
    );
    let fx = h.persisted(p, true);
    assert_eq!(fx, vec![ok(r), markers("t", 100, 0, false, &[("a", 0)])]);
    let (retry, fx) = h.end("t", 100, 0, false);
    assert_eq!(fx, vec![timer(h.now_ms + PARKED_MS)]);
    let (r, fx) = h.end("t", 100, 0, true);
    assert_eq!(fx, vec![err(r, TxnError::InvalidTxnState)]);

    let p = h.next_persist();
    let fx = h.markers_done("t", 100, 0, true);
    assert_eq!(
        fx,
        vec![persist(
            p,
            "t",
            Some(meta("t", 100, 0, TxnState::CompleteAbort, &[], 0, h.now_ms))
        )]
    );
    let fx = h.persisted(p, true);
    assert_eq!(fx[0], ok(retry));
    let (r, fx) = h.end("t", 100, 0, false);
    assert_eq!(fx, vec![ok(r)]);
    let (r, fx) = h.end("t", 100, 0, true);
    assert_eq!(fx, vec![err(r, TxnError::InvalidTxnState)]);
}

#[test]
fn end_txn_without_transaction_is_invalid_state() {
    let mut h = Harness::new();
    h.create("t", 100);
    let (r, fx) = h.end("t", 100, 0, true);
    assert_eq!(fx, vec![err(r, TxnError::InvalidTxnState)]);
    let (r, fx) = h.end("t", 100, 0, false);
    assert_eq!(fx, vec![err(r, TxnError::InvalidTxnState)]);
}

#[test]
fn marker_failure_is_retried_after_backoff() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    h.prepare("t", 100, 0, true);

    let failed_at = h.now_ms;
    let fx = h.markers_done("t", 100, 0, false);
    assert_eq!(fx, vec![timer(failed_at + RETRY_BACKOFF_MS)]);
    h.advance(RETRY_BACKOFF_MS - 1);
    assert_eq!(h.tick(), vec![]);
    h.advance(1);
    assert_eq!(h.tick(), vec![markers("t", 100, 0, true, &[("a", 0)])]);
    // A late or spurious tick changes nothing.
    assert_eq!(h.tick(), vec![]);
    // A stale answer (other epoch) is ignored.
    assert_eq!(h.markers_done("t", 100, 1, true), vec![]);
    assert_eq!(h.markers_done("x", 100, 0, true), vec![]);
    h.complete("t", 100, 0);
    assert_eq!(h.state("t"), Some(TxnState::CompleteCommit));
}

#[test]
fn completion_persist_failure_is_retried() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    h.prepare("t", 100, 0, false);
    let p = h.next_persist();
    h.markers_done("t", 100, 0, true);
    let fx = h.persisted(p, false);
    assert_eq!(fx, vec![timer(h.now_ms + RETRY_BACKOFF_MS)]);
    assert_eq!(h.state("t"), Some(TxnState::PrepareAbort));
    h.advance(RETRY_BACKOFF_MS);
    let p = h.next_persist();
    // Markers are not written again; only the completion is retried.
    assert_eq!(
        h.tick(),
        vec![persist(
            p,
            "t",
            Some(meta("t", 100, 0, TxnState::CompleteAbort, &[], 0, h.now_ms))
        )]
    );
    h.persisted(p, true);
    assert_eq!(h.state("t"), Some(TxnState::CompleteAbort));
}

// -------------------------------------------------------------------------------------------
// Persist failures

#[test]
fn persist_failure_reverts_and_answers() {
    let mut h = Harness::new();

    // A new id: forgotten again.
    let (r, _) = h.init("t", None);
    let p = h.next_persist();
    h.allocated(r, Ok(100));
    let fx = h.persisted(p, false);
    assert_eq!(fx, vec![err(r, TxnError::CoordinatorNotAvailable)]);
    assert!(h.m.is_empty());
    assert_eq!(h.m.next_deadline_ms(), None);

    h.create("t", 100);
    let created = h.m.describe("t").cloned();

    // An epoch bump.
    let p = h.next_persist();
    let (r, _) = h.init("t", None);
    let fx = h.persisted(p, false);
    assert_eq!(
        fx,
        vec![
            err(r, TxnError::CoordinatorNotAvailable),
            timer(T0 + EXP_MS)
        ]
    );
    assert_eq!(h.m.describe("t").cloned(), created);

    // AddPartitions.
    let p = h.next_persist();
    let (r, _) = h.add("t", 100, 0, &[("a", 0)]);
    let fx = h.persisted(p, false);
    assert_eq!(
        fx,
        vec![
            err(r, TxnError::CoordinatorNotAvailable),
            timer(T0 + EXP_MS)
        ]
    );
    assert_eq!(h.m.describe("t").cloned(), created);

    // EndTxn: the transaction stays open and the client may retry.
    h.begin("t", 100, 0, &[("a", 0)]);
    let open = h.m.describe("t").cloned();
    let p = h.next_persist();
    let (r, _) = h.end("t", 100, 0, true);
    let fx = h.persisted(p, false);
    assert_eq!(
        fx,
        vec![
            err(r, TxnError::CoordinatorNotAvailable),
            timer(h.now_ms + TIMEOUT_MS as u64)
        ]
    );
    assert_eq!(h.m.describe("t").cloned(), open);

    // A fence: the old producer was not fenced after all.
    let p = h.next_persist();
    let (r, _) = h.init("t", None);
    let fx = h.persisted(p, false);
    assert_eq!(fx[0], err(r, TxnError::CoordinatorNotAvailable));
    assert_eq!(h.m.describe("t").cloned(), open);
    let (r, fx) = h.add("t", 100, 0, &[("a", 0)]);
    assert_eq!(fx, vec![ok(r)]);

    // Unknown or repeated persist ids are ignored.
    assert_eq!(h.persisted(p, true), vec![]);
    assert_eq!(h.persisted(PersistId(999), false), vec![]);
    h.prepare("t", 100, 0, true);
}

// -------------------------------------------------------------------------------------------
// Timers

#[test]
fn timeout_aborts_and_fences() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    let start = h.now_ms;
    assert_eq!(h.m.next_deadline_ms(), Some(start + TIMEOUT_MS as u64));

    h.now_ms = start + TIMEOUT_MS as u64 - 1;
    assert_eq!(h.tick(), vec![]);
    h.advance(1);
    let p = h.next_persist();
    let aborting = meta(
        "t",
        100,
        1,
        TxnState::PrepareAbort,
        &[("a", 0)],
        start,
        h.now_ms,
    );
    assert_eq!(h.tick(), vec![persist(p, "t", Some(aborting.clone()))]);
    // Not durable yet: the producer's request parks, and is fenced once the abort completed.
    let (parked, fx) = h.end("t", 100, 0, true);
    assert_eq!(fx, vec![timer(h.now_ms + PARKED_MS)]);

    let fx = h.persisted(p, true);
    assert_eq!(fx, vec![markers("t", 100, 1, false, &[("a", 0)])]);
    assert_eq!(h.m.describe("t"), Some(&aborting));
    let (r, fx) = h.end("t", 100, 0, true);
    assert_eq!(fx, vec![err(r, TxnError::ProducerFenced)]);
    let (r, fx) = h.add("t", 100, 0, &[("b", 0)]);
    assert_eq!(fx, vec![err(r, TxnError::ProducerFenced)]);

    let p = h.next_persist();
    h.markers_done("t", 100, 1, true);
    let fx = h.persisted(p, true);
    assert_eq!(fx[0], err(parked, TxnError::ProducerFenced));
    assert_eq!(h.state("t"), Some(TxnState::CompleteAbort));
    // The zombie's epoch is neither current nor the one the last InitProducerId replaced.
    let (r, fx) = h.init("t", Some((100, 0)));
    assert_eq!(fx, vec![err(r, TxnError::ProducerFenced)]);
    let p = h.next_persist();
    let (r, _) = h.init("t", None);
    let fx = h.persisted(p, true);
    assert_eq!(fx[0], producer(r, 100, 2));
}

#[test]
fn timeout_fires_on_any_late_input() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    h.advance(TIMEOUT_MS as u64 + 500);
    let p = h.next_persist();
    // No tick came; the EndTxn itself finds the transaction timed out.
    let (r, fx) = h.end("t", 100, 0, true);
    assert!(
        matches!(&fx[0], Effect::Persist { persist_id, metadata: Some(m), .. }
        if *persist_id == p && m.state == TxnState::PrepareAbort && m.producer_epoch == 1)
    );
    // It waits, parked, for the abort.
    assert_eq!(fx[1], timer(h.now_ms + PARKED_MS));
    assert!(!h.answered.contains(&r));
}

#[test]
fn timeout_abort_persist_failure_is_retried() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    h.advance(TIMEOUT_MS as u64);
    let p = h.next_persist();
    h.tick();
    let fx = h.persisted(p, false);
    assert_eq!(fx, vec![timer(h.now_ms + RETRY_BACKOFF_MS)]);
    assert_eq!(h.state("t"), Some(TxnState::Ongoing));
    h.advance(RETRY_BACKOFF_MS);
    let fx = h.tick();
    assert!(
        matches!(fx.as_slice(), [Effect::Persist { metadata: Some(m), .. }]
        if m.state == TxnState::PrepareAbort && m.producer_epoch == 1)
    );
}

#[test]
fn expiration_writes_a_tombstone_then_forgets() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.now_ms = T0 + EXP_MS - 1;
    assert_eq!(h.tick(), vec![]);
    h.advance(1);
    let p = h.next_persist();
    assert_eq!(h.tick(), vec![persist(p, "t", None)]);
    // Held until the tombstone is durable (requests wait), but already gone for queries.
    assert_eq!(h.m.len(), 1);
    assert_eq!(h.m.describe("t"), None);
    assert!(h.m.list(&[], &[]).is_empty());
    let (r, fx) = h.init("t", None);
    assert_eq!(fx, vec![timer(h.now_ms + PARKED_MS)]);
    // Gone once durable; the parked request brings the id back, with a new producer id.
    assert_eq!(
        h.persisted(p, true),
        vec![Effect::AllocateProducerId { request_id: r }]
    );
    assert_eq!(h.m.describe("t"), None);
    assert_eq!(h.m.len(), 1);
    assert_eq!(h.m.next_deadline_ms(), None);
}

#[test]
fn expiration_counts_from_the_last_update() {
    let mut h = Harness::new();
    h.create("t", 100);
    h.begin("t", 100, 0, &[("a", 0)]);
    h.prepare("t", 100, 0, true);
    h.advance(10);
    let done_at = h.now_ms;
    h.complete("t", 100, 0);
    assert_eq!(h.m.next_deadline_ms(), Some(done_at + EXP_MS));
    // A failed tombstone is retried later.
    h.now_ms = done_at + EXP_MS;
    let p = h.next_persist();
    assert_eq!(h.tick(), vec![persist(p, "t", None)]);
    assert_eq!(
        h.persisted(p, false),
        vec![timer(h.now_ms + RETRY_BACKOFF_MS)]
    );
    assert_eq!(h.state("t"), Some(TxnState::CompleteCommit));
    h.advance(RETRY_BACKOFF_MS);
    let p = h.next_persist();
    assert_eq!(h.tick(), vec![persist(p, "t", None)]);
    h.persisted(p, true);
    assert!(h.m.is_empty());
}

#[test]
fn spurious_inputs_are_harmless() {
    let mut h = Harness::new();
    assert_eq!(h.tick(), vec![]);
    assert_eq!(h.allocated(RequestId(42), Ok(1)), vec![]);
    assert_eq!(h.persisted(PersistId(42), true), vec![]);
    assert_eq!(h.markers_done("t", 1, 0, true), vec![]);
    h.create("t", 100);
    h.advance(1);
    assert_eq!(h.tick(), vec![]);
}

// -------------------------------------------------------------------------------------------
// Restore

#[test]
fn restore_resumes_in_flight_work() {
    let mut h = Harness::new();
    let commit = meta(
        "a",
        1,
        3,
        TxnState::PrepareCommit,
        &[("x", 0), ("y", 1)],
        T0 - 500,
        T0 - 100,
    );
    let ongoing = meta(
        "b",
        2,
        0,
        TxnState::Ongoing,
        &[("x", 1)],
        T0 - 10_000,
        T0 - 10_000,
    );
    let done = meta("c", 3, 4, TxnState::CompleteAbort, &[], 0, T0 - 1);
    let abort = meta("f", 6, 1, TxnState::PrepareAbort, &[("z", 2)], T0, T0);
    let fx = h.restore(vec![
        ("a", Some(commit.clone())),
        ("b", Some(ongoing.clone())),
        ("c", Some(done.clone())),
        ("d", None),
        ("e", Some(meta("e", 5, 0, TxnState::Empty, &[], 0, T0))),
        ("e", None),
        ("f", Some(abort.clone())),
    ]);
    assert_eq!(
        fx,
        vec![
            markers("a", 1, 3, true, &[("x", 0), ("y", 1)]),
            markers("f", 6, 1, false, &[("z", 2)]),
            timer(T0 - 10_000 + TIMEOUT_MS as u64),
        ]
    );
    assert_eq!(h.m.describe("a"), Some(&commit));
    assert_eq!(h.m.describe("b"), Some(&ongoing));
    assert_eq!(h.m.describe("c"), Some(&done));
    assert_eq!(h.m.describe("d"), None);
    assert_eq!(h.m.describe("e"), None);
    assert_eq!(h.m.len(), 4);

    // The decided commit completes.
    let p = h.next_persist();
    let fx = h.markers_done("a", 1, 3, true);
    assert_eq!(
        fx,
        vec![persist(
            p,
            "a",
            Some(meta("a", 1, 3, TxnState::CompleteCommit, &[], 0, T0))
        )]
    );
    // The open one keeps its original deadline.
    h.now_ms = T0 - 10_000 + TIMEOUT_MS as u64;
    let p2 = h.next_persist();
    let fx = h.tick();
    // ... and the next deadline is the expiration of "c".
    assert_eq!(
        fx,
        vec![
            persist(
                p2,
                "b",
                Some(meta(
                    "b",
                    2,
                    1,
                    TxnState::PrepareAbort,
                    &[("x", 1)],
                    T0 - 10_000,
                    h.now_ms
                ))
            ),
            timer(T0 - 1 + EXP_MS),
        ]
    );
    // Restored producers carry on.
    let (r, fx) = h.end("c", 3, 4, false);
    assert_eq!(fx, vec![ok(r)]);
}

#[test]
fn restore_normalizes_records_kafka_never_leaves() {
    let mut h = Harness::new();
    let fence = meta("a", 1, 2, TxnState::PrepareEpochFence, &[("x", 0)], T0, T0);
    let dead = meta("b", 1, 2, TxnState::Dead, &[], 0, T0);
    let empty_with_parts = meta("c", 1, 2, TxnState::Empty, &[("x", 0)], 0, T0);
    let wrong_id = meta("zzz", 1, 2, TxnState::CompleteCommit, &[], 0, T0);
    let fx = h.restore(vec![
        ("a", Some(fence)),
        ("b", Some(dead)),
        ("c", Some(empty_with_parts)),
        ("d", Some(wrong_id)),
    ]);
    assert_eq!(
        fx,
        vec![markers("a", 1, 2, false, &[("x", 0)]), timer(T0 + EXP_MS)]
    );
    assert_eq!(h.state("a"), Some(TxnState::PrepareAbort));
    assert_eq!(h.state("b"), None);
    assert!(h.m.describe("c").unwrap().partitions.is_empty());
    assert_eq!(h.m.describe("d").unwrap().transactional_id, "d");
}

#[test]
fn restore_replaces_a_held_id_and_answers_its_request() {
    let mut h = Harness::new();
    h.create("t", 100);
    let p = h.next_persist();
    let (r, _) = h.add("t", 100, 0, &[("a", 0)]);
    let (r2, _) = h.init("u", None);
    let fx = h.restore(vec![
        ("t", Some(meta("t", 100, 5, TxnState::Empty, &[], 0, T0))),
        ("u", None),
    ]);
    assert_eq!(
        fx,
        vec![
            err(r, TxnError::NotCoordinator),
            err(r2, TxnError::NotCoordinator),
            timer(T0 + EXP_MS),
        ]
    );
    // The superseded persist and allocation are ignored.
    assert_eq!(h.persisted(p, true), vec![]);
    assert_eq!(h.allocated(r2, Ok(7)), vec![]);
    assert_eq!(h.m.describe("t").unwrap().producer_epoch, 5);
    assert_eq!(h.m.describe("u"), None);
}

#[test]
fn due_work_is_capped_per_input() {
    let mut h = Harness::with(TxnConfig {
        max_ids: 10,
        ..config()
    });
    let n = 1100;
    let records: Vec<(String, Option<TxnMetadata>)> = (0..n)
        .map(|i| {
            let id = format!("t{i:04}");
            let m = meta(&id, i, 0, TxnState::PrepareCommit, &[("a", 0)], T0, T0);
            (id, Some(m))
        })
        .collect();
    let fx = h.m.restore(h.now_ms, records);
    let fx = h.record(fx);
    let written = fx
        .iter()
        .filter(|e| matches!(e, Effect::WriteMarkers { .. }))
        .count();
    assert!(written < n as usize, "{written}");
    // The rest is due already: the timer says so.
    assert_eq!(fx.last(), Some(&timer(0)));
    assert_eq!(h.m.len(), n as usize, "restore ignores max_ids");
    let fx = h.tick();
    let more = fx
        .iter()
        .filter(|e| matches!(e, Effect::WriteMarkers { .. }))
        .count();
    assert_eq!(written + more, n as usize);
    assert_eq!(h.m.next_deadline_ms(), None);
    // Full: a new id is refused (retriable).
    let (r, fx) = h.init("new", None);
    assert_eq!(fx, vec![err(r, TxnError::CoordinatorNotAvailable)]);
}

// -------------------------------------------------------------------------------------------
// Bounds

#[test]
fn max_ids_refuses_new_ids_until_one_expires() {
    let mut h = Harness::with(TxnConfig {
        max_ids: 2,
        ..config()
    });
    h.create("a", 1);
    h.advance(1);
    let (r, _) = h.init("b", None);
    // An id waiting for its producer id counts.
    let (r2, fx) = h.init("c", None);
    assert_eq!(fx, vec![err(r2, TxnError::CoordinatorNotAvailable)]);
    let p = h.next_persist();
    h.allocated(r, Ok(2));
    h.persisted(p, true);
    // Known ids are still served.
    h.advance(1);
    let p = h.next_persist();
    let (r3, _) = h.init("a", None);
    h.persisted(p, true);
    assert!(h.answered.contains(&r3));

    // "b" expires first ("a" was bumped later).
    h.now_ms = T0 + 1 + EXP_MS;
    let p = h.next_persist();
    assert_eq!(
        h.tick(),
        vec![persist(p, "b", None), timer(T0 + 2 + EXP_MS)]
    );
    h.persisted(p, true);
    let (r, fx) = h.init("c", None);
    assert_eq!(fx, vec![Effect::AllocateProducerId { request_id: r }]);
}

#[test]
fn max_partitions_per_txn() {
    let mut h = Harness::with(TxnConfig {
        max_partitions_per_txn: 3,
        ..config()
    });
    h.create("t", 100);
    let (r, fx) = h.add("t", 100, 0, &[("a", 0), ("a", 1), ("a", 2), ("a", 3)]);
    assert_eq!(fx, vec![err(r, TxnError::InvalidRequest)]);
    assert_eq!(h.state("t"), Some(TxnState::Empty));
    // Duplicates count once.
    h.begin("t", 100, 0, &[("a", 0), ("a", 1), ("a", 1), ("a", 2)]);
    let (r, fx) = h.add("t", 100, 0, &[("b", 0)]);
    assert_eq!(fx, vec![err(r, TxnError::InvalidRequest)]);
    let (r, fx) = h.add("t", 100, 0, &[("a", 2)]);
    assert_eq!(fx, vec![ok(r)]);
    assert_eq!(h.m.describe("t").unwrap().partitions.len(), 3);
}

// -------------------------------------------------------------------------------------------
// Queries and errors

#[test]
fn list_and_describe() {
    let mut h = Harness::new();
    h.create("a", 1);
    h.create("b", 2);
    h.begin("b", 2, 0, &[("x", 0)]);
    h.create("c", 3);
    h.begin("c", 3, 0, &[("x", 0)]);
    h.prepare("c", 3, 0, false);
    // Being created: not listed.
    h.init("d", None);

    let ids =
        |l: Vec<TxnListing>| -> Vec<String> { l.into_iter().map(|t| t.transactional_id).collect() };
    assert_eq!(ids(h.m.list(&[], &[])), ["a", "b", "c"]);
    assert_eq!(
        h.m.list(&[TxnState::Ongoing], &[]),
        vec![TxnListing {
            transactional_id: "b".to_owned(),
            producer_id: 2,
            state: TxnState::Ongoing,
        }]
    );
    assert_eq!(
        ids(h.m.list(&[TxnState::Empty, TxnState::PrepareAbort], &[])),
        ["a", "c"]
    );
    assert_eq!(ids(h.m.list(&[], &[3, 9])), ["c"]);
    assert_eq!(
        ids(h.m.list(&[TxnState::Empty], &[3])),
        Vec::<String>::new()
    );
    assert_eq!(h.m.describe("d"), None);
    assert_eq!(h.m.describe("zzz"), None);
}

#[test]
fn state_ids_and_names() {
    for (i, s) in TxnState::ALL.into_iter().enumerate() {
        assert_eq!(s.id(), i as i8);
        assert_eq!(TxnState::from_id(s.id()), Some(s));
        assert_eq!(TxnState::from_name(s.as_str()), Some(s));
    }
    assert_eq!(TxnState::from_id(8), None);
    assert_eq!(TxnState::from_id(-1), None);
    assert_eq!(TxnState::from_name("Bogus"), None);
    assert_eq!(TxnState::PrepareEpochFence.as_str(), "PrepareEpochFence");
}

#[test]
fn error_codes_and_version_mapping() {
    let codes = [
        (TxnError::UnknownServerError, -1),
        (TxnError::CoordinatorLoadInProgress, 14),
        (TxnError::CoordinatorNotAvailable, 15),
        (TxnError::NotCoordinator, 16),
        (TxnError::InvalidRequest, 42),
        (TxnError::InvalidProducerEpoch, 47),
        (TxnError::InvalidTxnState, 48),
        (TxnError::InvalidProducerIdMapping, 49),
        (TxnError::InvalidTransactionTimeout, 50),
        (TxnError::ConcurrentTransactions, 51),
        (TxnError::ProducerFenced, 90),
        (TxnError::TransactionalIdNotFound, 105),
    ];
    for (e, code) in codes {
        assert_eq!(e.code(), code, "{e:?}");
    }
    assert_eq!(error_code(None), 0);
    assert_eq!(error_code(Some(TxnError::ProducerFenced)), 90);

    let fenced = TxnError::ProducerFenced;
    assert_eq!(fenced.code_for_version(TxnApi::InitProducerId, 3), 47);
    assert_eq!(fenced.code_for_version(TxnApi::InitProducerId, 4), 90);
    for api in [
        TxnApi::AddPartitionsToTxn,
        TxnApi::AddOffsetsToTxn,
        TxnApi::EndTxn,
    ] {
        assert_eq!(fenced.code_for_version(api, 0), 47);
        assert_eq!(fenced.code_for_version(api, 1), 47);
        assert_eq!(fenced.code_for_version(api, 2), 90);
        assert_eq!(
            TxnError::ConcurrentTransactions.code_for_version(api, 0),
            51
        );
    }
}

// -------------------------------------------------------------------------------------------
// Log format

#[test]
fn key_bytes() {
    assert_eq!(encode_key("tx").unwrap(), [0, 0, 0, 2, b't', b'x']);
    assert_eq!(decode_key(&[0, 0, 0, 2, b't', b'x']).unwrap(), "tx");
    assert_eq!(
        decode_key(&[0, 1, 0, 0]),
        Err(LogFormatError::UnsupportedVersion {
            kind: "key",
            version: 1
        })
    );
    assert!(matches!(
        decode_key(&[0, 0, 0xff, 0xff]),
        Err(LogFormatError::InvalidLength { .. })
    ));
    assert!(matches!(
        decode_key(&[0, 0, 0, 2, 0xc3, 0x28]),
        Err(LogFormatError::InvalidUtf8 { .. })
    ));
    assert!(matches!(
        decode_key(&[0, 0, 0, 1, b'x', 0]),
        Err(LogFormatError::TrailingBytes { .. })
    ));
    assert!(encode_key(&"x".repeat(40_000)).is_err());
}

#[test]
fn value_v0_bytes() {
    let m = TxnMetadata {
        transactional_id: "tx".to_owned(),
        producer_id: 1,
        producer_epoch: 2,
        timeout_ms: 3,
        state: TxnState::Ongoing,
        partitions: set(&[("a", 0), ("b", 5), ("a", 1)]),
        txn_start_ms: 10,
        last_update_ms: 20,
    };
    let mut expected = vec![0, 0];
    expected.extend_from_slice(&1i64.to_be_bytes());
    expected.extend_from_slice(&[0, 2, 0, 0, 0, 3, 1]);
    expected.extend_from_slice(&[0, 0, 0, 2]);
    expected.extend_from_slice(&[0, 1, b'a', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1]);
    expected.extend_from_slice(&[0, 1, b'b', 0, 0, 0, 1, 0, 0, 0, 5]);
    expected.extend_from_slice(&20i64.to_be_bytes());
    expected.extend_from_slice(&10i64.to_be_bytes());
    assert_eq!(encode_value(&m).unwrap(), expected);
    assert_eq!(decode_value("tx", &expected).unwrap(), m);

    // Empty: null partitions, no start (-1).
    let e = meta("tx", 1, 2, TxnState::Empty, &[], 0, 20);
    let bytes = encode_value(&e).unwrap();
    assert_eq!(&bytes[17..21], &[0xff; 4]);
    assert_eq!(&bytes[29..37], &[0xff; 8]);
    assert_eq!(bytes.len(), 37);
    assert_eq!(decode_value("tx", &bytes).unwrap(), e);

    // Kafka ignores partitions listed for Empty.
    let mut with_parts = encode_value(&TxnMetadata {
        state: TxnState::Ongoing,
        ..m.clone()
    })
    .unwrap();
    with_parts[16] = 0;
    assert!(decode_value("tx", &with_parts)
        .unwrap()
        .partitions
        .is_empty());

    assert_eq!(
        decode_value("tx", &[0, 2]),
        Err(LogFormatError::UnsupportedVersion {
            kind: "value",
            version: 2
        })
    );
    let mut bad_status = expected.clone();
    bad_status[16] = 9;
    assert_eq!(
        decode_value("tx", &bad_status),
        Err(LogFormatError::UnknownStatus(9))
    );
    let mut huge = expected.clone();
    huge[17..21].copy_from_slice(&i32::MAX.to_be_bytes());
    assert!(matches!(
        decode_value("tx", &huge),
        Err(LogFormatError::InvalidLength { .. })
    ));
}

#[test]
fn record_round_trip_and_tombstone() {
    let m = meta("t", 9, 1, TxnState::PrepareCommit, &[("a", 0)], T0, T0);
    let (key, value) = encode_record("t", Some(&m)).unwrap();
    assert_eq!(
        decode_record(&key, value.as_deref()).unwrap(),
        ("t".to_owned(), Some(m))
    );
    let (key, value) = encode_record("t", None).unwrap();
    assert_eq!(value, None);
    assert_eq!(decode_record(&key, None).unwrap(), ("t".to_owned(), None));
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tags(out: &mut Vec<u8>, tags: &[(u32, Vec<u8>)]) {
    put_uvarint(out, tags.len() as u32);
    for (tag, data) in tags {
        put_uvarint(out, *tag);
        put_uvarint(out, data.len() as u32);
        out.extend_from_slice(data);
    }
}

/// TransactionLogValue v1 (flexible) as Kafka writes it with `transaction.version` 1+, with
/// arbitrary tagged fields.
fn encode_value_v1(m: &TxnMetadata, tags: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0, 1];
    out.extend_from_slice(&m.producer_id.to_be_bytes());
    out.extend_from_slice(&m.producer_epoch.to_be_bytes());
    out.extend_from_slice(&m.timeout_ms.to_be_bytes());
    out.push(m.state.id() as u8);
    if m.state == TxnState::Empty {
        put_uvarint(&mut out, 0);
    } else {
        let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
        for tp in &m.partitions {
            match topics.last_mut() {
                Some((t, ids)) if *t == tp.topic => ids.push(tp.partition),
                _ => topics.push((&tp.topic, vec![tp.partition])),
            }
        }
        put_uvarint(&mut out, topics.len() as u32 + 1);
        for (topic, ids) in topics {
            put_uvarint(&mut out, topic.len() as u32 + 1);
            out.extend_from_slice(topic.as_bytes());
            put_uvarint(&mut out, ids.len() as u32 + 1);
            for id in ids {
                out.extend_from_slice(&id.to_be_bytes());
            }
            put_tags(&mut out, tags);
        }
    }
    out.extend_from_slice(&(m.last_update_ms as i64).to_be_bytes());
    let start = if m.txn_start_ms == 0 {
        -1
    } else {
        m.txn_start_ms as i64
    };
    out.extend_from_slice(&start.to_be_bytes());
    put_tags(&mut out, tags);
    out
}

#[test]
fn value_v1_flexible_is_read() {
    let m = meta(
        "t",
        77,
        3,
        TxnState::Ongoing,
        &[("a", 0), ("a", 7), ("bb", 1)],
        T0,
        T0 + 1,
    );
    // PreviousProducerId (tag 0), ClientTransactionVersion (tag 2).
    let tags = vec![(0, 76i64.to_be_bytes().to_vec()), (2, vec![0, 2])];
    let bytes = encode_value_v1(&m, &tags);
    assert_eq!(decode_value("t", &bytes).unwrap(), m);
    let e = meta("t", 77, 3, TxnState::Empty, &[], 0, T0);
    assert_eq!(decode_value("t", &encode_value_v1(&e, &[])).unwrap(), e);
    // Null (compact 0) where an array must be present.
    let mut bad = encode_value_v1(&m, &[]);
    // topic count 2 (+1) at 17, "a" (len 1 + 1) at 18..20, partition count at 20.
    assert_eq!(bad[20], 3);
    bad[20] = 0;
    assert!(matches!(
        decode_value("t", &bad),
        Err(LogFormatError::InvalidLength { .. })
    ));
}

fn arb_state() -> impl Strategy<Value = TxnState> {
    (0i8..8).prop_map(|i| TxnState::from_id(i).unwrap())
}

fn arb_metadata() -> impl Strategy<Value = TxnMetadata> {
    (
        "\\PC{0,20}",
        any::<i64>(),
        any::<i16>(),
        any::<i32>(),
        arb_state(),
        proptest::collection::btree_set(("[a-z._-]{0,12}", any::<i32>()), 0..12),
        prop_oneof![Just(0u64), 1..=i64::MAX as u64],
        0..=i64::MAX as u64,
    )
        .prop_map(|(id, pid, epoch, timeout, state, parts, start, update)| {
            let partitions = if state == TxnState::Empty {
                BTreeSet::new()
            } else {
                parts
                    .into_iter()
                    .map(|(t, p)| TopicPartition::new(t, p))
                    .collect()
            };
            TxnMetadata {
                transactional_id: id,
                producer_id: pid,
                producer_epoch: epoch,
                timeout_ms: timeout,
                state,
                partitions,
                txn_start_ms: start,
                last_update_ms: update,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn prop_record_round_trip(m in arb_metadata()) {
        let id = m.transactional_id.clone();
        let (key, value) = encode_record(&id, Some(&m)).unwrap();
        prop_assert_eq!(decode_record(&key, value.as_deref()).unwrap(), (id, Some(m)));
    }

    #[test]
    fn prop_v1_round_trip(
        m in arb_metadata(),
        tags in proptest::collection::vec((0u32..1000, proptest::collection::vec(any::<u8>(), 0..20)), 0..4),
    ) {
        let bytes = encode_value_v1(&m, &tags);
        prop_assert_eq!(decode_value(&m.transactional_id, &bytes).unwrap(), m);
    }

    #[test]
    fn prop_truncated_records_are_errors(m in arb_metadata(), flexible in any::<bool>()) {
        let key = encode_key(&m.transactional_id).unwrap();
        for cut in 0..key.len() {
            prop_assert!(decode_key(&key[..cut]).is_err());
        }
        let value = if flexible { encode_value_v1(&m, &[(1, vec![1, 2, 3])]) } else { encode_value(&m).unwrap() };
        for cut in 0..value.len() {
            prop_assert!(decode_value("t", &value[..cut]).is_err());
        }
    }

    #[test]
    fn prop_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_key(&bytes);
        let _ = decode_value("t", &bytes);
        let _ = decode_record(&bytes, Some(&bytes));
        // Valid headers make the decoder go deeper.
        for version in [[0u8, 0], [0, 1]] {
            let mut v = version.to_vec();
            v.extend_from_slice(&bytes);
            let _ = decode_value("t", &v);
            let _ = decode_key(&v);
        }
    }

    #[test]
    fn prop_mutated_records_never_panic(m in arb_metadata(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut value = encode_value_v1(&m, &[(0, vec![9; 8])]);
        for (at, byte) in flips {
            let i = at.index(value.len());
            value[i] = byte;
        }
        let _ = decode_value("t", &value);
        let mut value = encode_value(&m).unwrap();
        value[0] = 0;
        let _ = decode_value("t", &value);
    }
}

// -------------------------------------------------------------------------------------------
// The machine under a random driver

#[derive(Debug, Clone)]
enum Op {
    Init {
        id: usize,
        expected: bool,
    },
    Add {
        id: usize,
        stale: bool,
        topic: u8,
    },
    Verify {
        id: usize,
    },
    End {
        id: usize,
        commit: bool,
    },
    Allocate {
        ok: bool,
    },
    Persist {
        ok: bool,
    },
    Markers {
        ok: bool,
    },
    Advance {
        ms: u64,
    },
    /// The id's partition is loaded again with its durable record.
    Restore {
        id: usize,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..3, any::<bool>()).prop_map(|(id, expected)| Op::Init { id, expected }),
        (0usize..3, any::<bool>(), 0u8..4).prop_map(|(id, stale, topic)| Op::Add {
            id,
            stale,
            topic
        }),
        (0usize..3).prop_map(|id| Op::Verify { id }),
        (0usize..3, any::<bool>()).prop_map(|(id, commit)| Op::End { id, commit }),
        any::<bool>().prop_map(|ok| Op::Allocate { ok }),
        prop_oneof![3 => Just(true), 1 => Just(false)].prop_map(|ok| Op::Persist { ok }),
        prop_oneof![3 => Just(true), 1 => Just(false)].prop_map(|ok| Op::Markers { ok }),
        prop_oneof![
            Just(1u64),
            Just(999),
            Just(5_000),
            Just(30_000),
            Just(70_000)
        ]
        .prop_map(|ms| Op::Advance { ms }),
        (0usize..3).prop_map(|id| Op::Restore { id }),
    ]
}

/// A driver that executes effects late and sometimes fails them.
struct RandomDriver {
    h: Harness,
    allocations: Vec<RequestId>,
    persists: Vec<PersistId>,
    markers: Vec<(String, i64, i16)>,
    timer_at_ms: Option<u64>,
    issued: Vec<RequestId>,
    next_pid: i64,
}

impl RandomDriver {
    fn absorb(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::AllocateProducerId { request_id } => self.allocations.push(request_id),
                Effect::Persist { persist_id, .. } => self.persists.push(persist_id),
                Effect::WriteMarkers {
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    ..
                } => self
                    .markers
                    .push((transactional_id, producer_id, producer_epoch)),
                Effect::ScheduleTimer { at_ms } => self.timer_at_ms = Some(at_ms),
                Effect::Respond { .. } => {}
            }
        }
    }

    fn current(&self, id: &str) -> (i64, i16) {
        self.h
            .m
            .describe(id)
            .map_or((1, 0), |m| (m.producer_id, m.producer_epoch))
    }

    fn apply(&mut self, op: Op) {
        const IDS: [&str; 3] = ["a", "b", "c"];
        let fx = match op {
            Op::Init { id, expected } => {
                let cur = self.current(IDS[id]);
                let (r, fx) = self.h.init(IDS[id], expected.then_some(cur));
                self.issued.push(r);
                fx
            }
            Op::Add { id, stale, topic } => {
                let (pid, epoch) = self.current(IDS[id]);
                let epoch = if stale { epoch.wrapping_sub(1) } else { epoch };
                let t = format!("t{topic}");
                let (r, fx) = self.h.add(IDS[id], pid, epoch, &[(&t, 0)]);
                self.issued.push(r);
                fx
            }
            Op::Verify { id } => {
                let (pid, epoch) = self.current(IDS[id]);
                let (r, fx) = self.h.verify(IDS[id], pid, epoch, &[("t0", 0)]);
                self.issued.push(r);
                fx
            }
            Op::End { id, commit } => {
                let (pid, epoch) = self.current(IDS[id]);
                let (r, fx) = self.h.end(IDS[id], pid, epoch, commit);
                self.issued.push(r);
                fx
            }
            Op::Allocate { ok } => match self.allocations.pop() {
                Some(r) => {
                    self.next_pid += 1;
                    let result = if ok { Ok(self.next_pid) } else { Err(()) };
                    self.h.allocated(r, result)
                }
                None => Vec::new(),
            },
            Op::Persist { ok } => match self.persists.first().copied() {
                Some(p) => {
                    self.persists.remove(0);
                    self.h.persisted(p, ok)
                }
                None => Vec::new(),
            },
            Op::Markers { ok } => match self.markers.pop() {
                Some((id, pid, epoch)) => self.h.markers_done(&id, pid, epoch, ok),
                None => Vec::new(),
            },
            Op::Restore { id } => {
                let record = self.h.m.describe(IDS[id]).cloned();
                self.h.restore(vec![(IDS[id], record)])
            }
            Op::Advance { ms } => {
                self.h.advance(ms);
                if self.timer_at_ms.is_some_and(|at| at <= self.h.now_ms) {
                    self.timer_at_ms = None;
                    self.h.tick()
                } else {
                    Vec::new()
                }
            }
        };
        self.absorb(fx);
    }

    /// Executes everything outstanding successfully (waiting out retry backoffs) until the
    /// machine is quiet.
    fn drain(&mut self) {
        for _ in 0..1000 {
            if let Some(r) = self.allocations.pop() {
                self.next_pid += 1;
                let fx = self.h.allocated(r, Ok(self.next_pid));
                self.absorb(fx);
            } else if !self.persists.is_empty() {
                let p = self.persists.remove(0);
                let fx = self.h.persisted(p, true);
                self.absorb(fx);
            } else if let Some((id, pid, epoch)) = self.markers.pop() {
                let fx = self.h.markers_done(&id, pid, epoch, true);
                self.absorb(fx);
            } else if let Some(at) = self
                .h
                .m
                .next_deadline_ms()
                .filter(|at| *at <= self.h.now_ms + RETRY_BACKOFF_MS)
            {
                // Due, or a retry after a failure: let the backoff pass.
                self.h.now_ms = self.h.now_ms.max(at);
                let fx = self.h.tick();
                self.absorb(fx);
            } else {
                return;
            }
        }
        panic!("the machine never went quiet");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the order of requests and answers, and whichever persists or marker writes
    /// fail, every request is answered exactly once (the harness checks "at most"; parked
    /// requests included, with parking off, tight or default), the invariants hold after every
    /// input (debug assertions), and nothing stays in flight or parked.
    #[test]
    fn prop_every_request_is_answered_once(
        ops in proptest::collection::vec(arb_op(), 1..80),
        max_parked_per_id in prop_oneof![Just(0usize), Just(1), Just(8)],
    ) {
        let mut d = RandomDriver {
            h: Harness::with(TxnConfig { max_parked_per_id, ..config() }),
            allocations: Vec::new(),
            persists: Vec::new(),
            markers: Vec::new(),
            timer_at_ms: None,
            issued: Vec::new(),
            next_pid: 100,
        };
        for op in ops {
            d.apply(op);
        }
        d.drain();
        for r in &d.issued {
            prop_assert!(d.h.answered.contains(r), "{:?} never answered", r);
        }
        prop_assert_eq!(d.h.m.parked_len(), 0);
        for m in d.h.m.list(&[], &[]) {
            prop_assert!(
                !m.state.is_prepare(),
                "{} left in {:?}", m.transactional_id, m.state
            );
        }
    }
}
