//! Black-box tests of the classic consumer-group protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, DescribeGroups, OffsetCommit/OffsetFetch) with librdkafka, through the `rdkafka`
//! crate, against a real `odradek serve`.
//!
//! Each test starts its own broker with `group.initial.rebalance.delay.ms=0` (so the first
//! rebalance does not wait 3 s), creates its own 6-partition topic, and drives every member of
//! its groups from the test thread: `pump` polls each member in turn, so rebalance callbacks run
//! on that thread and every record a member is handed lands in one `Ledger`, tagged with the
//! member. Assertions are made on the ledger, on each member's rebalance callbacks and local
//! assignment, and on what the broker reports (DescribeGroups, OffsetFetch).
//!
//! Records are produced only while the group is settled, or (cooperative test) with commits
//! placed so that the expected consumption is exact: a test that says "exactly once" means no
//! redelivery is legitimate at that point under Kafka's at-least-once rules.
//!
//! Every wait is bounded; a timeout fails with each member's assignment, rebalance callbacks and
//! client errors, and the broker's log tail.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::Producer as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 6;
/// The broker's `group.min.session.timeout.ms`.
const SESSION_TIMEOUT_MS: u32 = 6000;
/// Short, so members learn of a rebalance within half a second.
const HEARTBEAT_INTERVAL_MS: u32 = 500;
/// Bound for a group to settle after a membership change.
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(30);
const CONSUME_TIMEOUT: Duration = Duration::from_secs(30);
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long dropping a member waits for its consumer to close (see `Drop for Member`).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a member is polled per turn of `pump`.
const POLL_SLICE: Duration = Duration::from_millis(20);
/// After the expected records arrived, members are polled this long more so a duplicate or an
/// unexpected record has the chance to show up.
const GRACE: Duration = Duration::from_millis(1500);

/// A broker whose groups rebalance without the initial delay, with a 6-partition `topic`.
fn group_broker(topic: &str) -> Broker {
    let broker = BrokerOptions::new()
        .cores(test_cores())
        .set("group.initial.rebalance.delay.ms", 0)
        .start();
    create_topic(broker.addr(), topic, PARTITIONS);
    broker
}

fn all_partitions() -> BTreeSet<i32> {
    (0..PARTITIONS).collect()
}

// ---------------------------------------------------------------------------------------------
// Members: one subscribed BaseConsumer each, with a context that records rebalance callbacks
// ---------------------------------------------------------------------------------------------

/// One rebalance callback as the member saw it (partitions of the test's topic only).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Assign(BTreeSet<i32>),
    Revoke {
        partitions: BTreeSet<i32>,
        lost: bool,
    },
    Error(String),
    /// The commit `OnRevoke::CommitPositions` made inside a revoke callback.
    RevokeCommit {
        offsets: BTreeMap<i32, i64>,
        result: Result<(), String>,
    },
}

/// What a member does in its revoke callback besides recording it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnRevoke {
    Nothing,
    /// Commit synchronously, for each revoked partition, the offset after the last record the
    /// test was handed: the next owner then resumes exactly there.
    CommitPositions,
}

#[derive(Default)]
struct MemberState {
    events: Vec<Event>,
    /// Next offset to read per partition: the last offset `poll` returned, plus one.
    next: BTreeMap<i32, i64>,
}

struct RebalanceLog {
    topic: String,
    state: Arc<Mutex<MemberState>>,
    on_revoke: OnRevoke,
}

impl ClientContext for RebalanceLog {}

impl ConsumerContext for RebalanceLog {
    /// Runs inside `poll` on the test thread, before rdkafka's default (incremental) assign or
    /// unassign.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.push(Event::Assign(partitions_of(tpl, &self.topic))),
            Rebalance::Error(e) => self.push(Event::Error(e.to_string())),
            Rebalance::Revoke(tpl) => {
                let partitions = partitions_of(tpl, &self.topic);
                let lost = consumer.assignment_lost();
                self.push(Event::Revoke {
                    partitions: partitions.clone(),
                    lost,
                });
                if self.on_revoke == OnRevoke::CommitPositions && !lost {
                    let offsets: BTreeMap<i32, i64> = {
                        let state = self.state.lock().unwrap();
                        partitions
                            .iter()
                            .filter_map(|p| state.next.get(p).map(|o| (*p, *o)))
                            .collect()
                    };
                    if !offsets.is_empty() {
                        let result = consumer
                            .commit(&offsets_tpl(&self.topic, &offsets), CommitMode::Sync)
                            .map_err(|e| e.to_string());
                        self.push(Event::RevokeCommit { offsets, result });
                    }
                }
            }
        }
    }
}

impl RebalanceLog {
    fn push(&self, event: Event) {
        self.state.lock().unwrap().events.push(event);
    }
}

fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> BTreeSet<i32> {
    tpl.elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition())
        .collect()
}

fn offsets_tpl(topic: &str, offsets: &BTreeMap<i32, i64>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .expect("add partition offset");
    }
    tpl
}

/// One group member: a consumer subscribed to the test's topic.
struct Member {
    /// Also its `client.id`, so DescribeGroups answers can be matched to it.
    name: String,
    group: String,
    topic: String,
    /// `None` only once dropped (see `Drop for Member`).
    consumer: Option<BaseConsumer<RebalanceLog>>,
    state: Arc<Mutex<MemberState>>,
    /// Errors `poll` returned (transport errors during a restart are expected; kept for failure
    /// messages).
    errors: Vec<String>,
}

/// Closing a consumer runs its last rebalance callback, and librdkafka can then wait forever:
/// rdkafka's default callback asks for the rebalance protocol of a group handle that is being
/// torn down. Seen once in a CI run: a test that had passed its checks hung in
/// `BaseConsumer::drop`, in `rd_kafka_rebalance_protocol`, and the whole suite with it. So a
/// member closes its consumer on a thread of its own and waits for that at most
/// `CLOSE_TIMEOUT`; a close still stuck then is left to end with the test process.
impl Drop for Member {
    fn drop(&mut self) {
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        let (closed, wait) = std::sync::mpsc::channel();
        thread::spawn(move || {
            drop(consumer);
            let _ = closed.send(());
        });
        if wait.recv_timeout(CLOSE_TIMEOUT).is_err() {
            eprintln!(
                "member {}: its consumer did not close within {CLOSE_TIMEOUT:?}; left behind",
                self.name
            );
        }
    }
}

impl Member {
    /// Creates a consumer in `group` and subscribes it to `topic`. `extra` overrides or adds
    /// librdkafka properties (assignment strategy, group.instance.id, session timeout).
    fn join(
        broker: &Broker,
        topic: &str,
        group: &str,
        name: &str,
        extra: &[(&str, &str)],
        on_revoke: OnRevoke,
    ) -> Member {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", broker.bootstrap())
            .set("group.id", group)
            .set("client.id", name);
        // KIP-848 members take these from the broker (librdkafka refuses them then).
        if !extra.contains(&("group.protocol", "consumer")) {
            cfg.set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
                .set("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS.to_string())
                .set("partition.assignment.strategy", "range");
        }
        cfg.set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .set("socket.timeout.ms", "10000")
            .set("check.crcs", "true");
        for (k, v) in extra {
            cfg.set(*k, *v);
        }
        let state = Arc::new(Mutex::new(MemberState::default()));
        let context = RebalanceLog {
            topic: topic.to_string(),
            state: state.clone(),
            on_revoke,
        };
        let consumer: BaseConsumer<RebalanceLog> = cfg
            .create_with_context(context)
            .unwrap_or_else(|e| panic!("create consumer {name}: {e}"));
        consumer
            .subscribe(&[topic])
            .unwrap_or_else(|e| panic!("{name} subscribe to {topic}: {e}"));
        Member {
            name: name.to_string(),
            group: group.to_string(),
            topic: topic.to_string(),
            consumer: Some(consumer),
            state,
            errors: Vec::new(),
        }
    }

    fn consumer(&self) -> &BaseConsumer<RebalanceLog> {
        self.consumer
            .as_ref()
            .expect("a member's consumer lives until the member is dropped")
    }

    /// Polls once for up to `POLL_SLICE`, then drains what is already there (bounded), filing
    /// every record in `ledger`.
    fn poll_some(&mut self, ledger: &mut Ledger) {
        let mut timeout = POLL_SLICE;
        for _ in 0..1000 {
            match self.consumer().poll(timeout) {
                None => return,
                Some(Ok(m)) => {
                    if m.topic() == self.topic {
                        ledger.file(&self.name, m.partition(), m.offset());
                        self.state
                            .lock()
                            .unwrap()
                            .next
                            .insert(m.partition(), m.offset() + 1);
                    }
                }
                Some(Err(e)) => self.errors.push(e.to_string()),
            }
            timeout = Duration::ZERO;
        }
    }

    /// The member's current local assignment.
    fn assignment(&self) -> BTreeSet<i32> {
        let tpl = self
            .consumer()
            .assignment()
            .unwrap_or_else(|e| panic!("{} assignment: {e}", self.name));
        partitions_of(&tpl, &self.topic)
    }

    fn events(&self) -> Vec<Event> {
        self.state.lock().unwrap().events.clone()
    }

    /// Commits (sync) the next offset to read of every assigned partition the member has read
    /// from; returns what it committed.
    fn commit_positions(&self) -> BTreeMap<i32, i64> {
        let assigned = self.assignment();
        let offsets: BTreeMap<i32, i64> = {
            let state = self.state.lock().unwrap();
            assigned
                .iter()
                .filter_map(|p| state.next.get(p).map(|o| (*p, *o)))
                .collect()
        };
        assert!(
            !offsets.is_empty(),
            "{}: nothing to commit (assignment {assigned:?})",
            self.name
        );
        self.commit(&offsets);
        offsets
    }

    /// Commits (sync) exactly `offsets`.
    fn commit(&self, offsets: &BTreeMap<i32, i64>) {
        self.consumer()
            .commit(&offsets_tpl(&self.topic, offsets), CommitMode::Sync)
            .unwrap_or_else(|e| panic!("{} commit {offsets:?}: {e}", self.name));
    }

    /// The group's committed offset of every partition of the topic (OffsetFetch).
    fn committed(&self) -> BTreeMap<i32, Offset> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(&self.topic, p);
        }
        let got = self
            .consumer()
            .committed_offsets(tpl, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{}: committed offsets of {}: {e}", self.name, self.group));
        got.elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect()
    }

    fn summary(&self) -> String {
        let errors = &self.errors[self.errors.len().saturating_sub(5)..];
        format!(
            "  {} (group {}): assignment {:?}; rebalance callbacks {:?}; last client errors {:?}",
            self.name,
            self.group,
            self.assignment(),
            self.events(),
            errors
        )
    }
}

fn summaries(members: &[Member]) -> String {
    members
        .iter()
        .map(Member::summary)
        .collect::<Vec<_>>()
        .join("\n")
}

/// True if the members' assignments split all partitions evenly: each has PARTITIONS / n and
/// together they have all (hence no overlap).
fn even_split<'a>(members: impl IntoIterator<Item = &'a Member>) -> bool {
    let sets: Vec<BTreeSet<i32>> = members.into_iter().map(Member::assignment).collect();
    let n = sets.len() as i32;
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    n > 0
        && PARTITIONS % n == 0
        && sets.iter().all(|s| s.len() as i32 == PARTITIONS / n)
        && union == all_partitions()
}

// ---------------------------------------------------------------------------------------------
// Ledger: every record handed to any member, in order
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Taken {
    member: String,
    partition: i32,
    offset: i64,
}

#[derive(Default)]
struct Ledger {
    taken: Vec<Taken>,
}

impl Ledger {
    fn file(&mut self, member: &str, partition: i32, offset: i64) {
        self.taken.push(Taken {
            member: member.to_string(),
            partition,
            offset,
        });
    }

    /// A position in the ledger; `since(mark)` is what was handed out after it.
    fn mark(&self) -> usize {
        self.taken.len()
    }

    fn since(&self, mark: usize) -> &[Taken] {
        &self.taken[mark..]
    }

    /// True if every expected record was handed to a member whose name passes `who`.
    fn covers(
        &self,
        mark: usize,
        who: impl Fn(&str) -> bool,
        expected: &BTreeSet<(i32, i64)>,
    ) -> bool {
        let seen: BTreeSet<(i32, i64)> = self
            .since(mark)
            .iter()
            .filter(|t| who(&t.member))
            .map(|t| (t.partition, t.offset))
            .collect();
        expected.is_subset(&seen)
    }

    /// Offsets `member` was handed per partition, in the order it got them.
    fn of_member(&self, mark: usize, member: &str) -> BTreeMap<i32, Vec<i64>> {
        let mut out: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for t in self.since(mark).iter().filter(|t| t.member == member) {
            out.entry(t.partition).or_default().push(t.offset);
        }
        out
    }

    /// Asserts that, after `mark` and among members passing `who`, every expected record was
    /// handed out exactly once and nothing else was.
    fn assert_exactly_once(
        &self,
        mark: usize,
        who: impl Fn(&str) -> bool,
        expected: &BTreeSet<(i32, i64)>,
        what: &str,
    ) {
        let mut seen: BTreeMap<(i32, i64), Vec<&str>> = BTreeMap::new();
        for t in self.since(mark).iter().filter(|t| who(&t.member)) {
            seen.entry((t.partition, t.offset))
                .or_default()
                .push(&t.member);
        }
        let missing: Vec<&(i32, i64)> = expected.iter().filter(|k| !seen.contains_key(k)).collect();
        let repeated: Vec<(&(i32, i64), &Vec<&str>)> =
            seen.iter().filter(|(_, by)| by.len() > 1).collect();
        let unexpected: Vec<(&(i32, i64), &Vec<&str>)> =
            seen.iter().filter(|(k, _)| !expected.contains(k)).collect();
        assert!(
            missing.is_empty() && repeated.is_empty() && unexpected.is_empty(),
            "{what}: {} records expected; {} never consumed (first {:?}); {} consumed more than once \
             (first (partition, offset) -> members: {:?}); {} not expected (first {:?})",
            expected.len(),
            missing.len(),
            &missing[..missing.len().min(8)],
            repeated.len(),
            &repeated[..repeated.len().min(8)],
            unexpected.len(),
            &unexpected[..unexpected.len().min(8)],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Driving the members
// ---------------------------------------------------------------------------------------------

/// One turn: every member polls once.
fn pump(members: &mut [Member], ledger: &mut Ledger) {
    for m in members.iter_mut() {
        m.poll_some(ledger);
    }
}

/// Pumps until `done` holds; returns how long that took. Fails after `timeout`.
fn wait_until(
    broker: &Broker,
    members: &mut [Member],
    ledger: &mut Ledger,
    timeout: Duration,
    what: &str,
    done: impl Fn(&[Member], &Ledger) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        pump(members, ledger);
        if done(members, ledger) {
            return start.elapsed();
        }
        if start.elapsed() >= timeout {
            broker.fail(&format!(
                "{what}: not reached within {timeout:?}\n{}",
                summaries(members)
            ));
        }
    }
}

/// Pumps for `how_long` regardless.
fn pump_for(members: &mut [Member], ledger: &mut Ledger, how_long: Duration) {
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        pump(members, ledger);
    }
}

/// Pumps until every expected record was handed (after `mark`) to some member, then for
/// `GRACE` more so duplicates can show.
fn consume_until_covered(
    broker: &Broker,
    members: &mut [Member],
    ledger: &mut Ledger,
    mark: usize,
    expected: &BTreeSet<(i32, i64)>,
    what: &str,
) {
    wait_until(broker, members, ledger, CONSUME_TIMEOUT, what, |_, l| {
        l.covers(mark, |_| true, expected)
    });
    pump_for(members, ledger, GRACE);
}

/// Produces `per_partition` records to every partition (acks=all); returns the acknowledged
/// (partition, offset) of each.
fn produce_spread(
    broker: &Broker,
    topic: &str,
    tag: &str,
    per_partition: usize,
) -> BTreeSet<(i32, i64)> {
    let p = producer(&broker.bootstrap(), &[("acks", "all")]);
    let recs: Vec<Rec> = (0..per_partition * PARTITIONS as usize)
        .map(|i| Rec::value(format!("{tag}-{i}")).in_partition(i as i32 % PARTITIONS))
        .collect();
    let acked: BTreeSet<(i32, i64)> = produce_all(&p, topic, &recs, PRODUCE_TIMEOUT)
        .into_iter()
        .collect();
    assert_eq!(
        acked.len(),
        recs.len(),
        "{tag}: two records acknowledged at one offset"
    );
    acked
}

/// Next offset after the last acknowledged record, per partition.
fn end_offsets(acked: &BTreeSet<(i32, i64)>) -> BTreeMap<i32, Offset> {
    let mut ends: BTreeMap<i32, Offset> = BTreeMap::new();
    for (p, o) in acked {
        let e = ends.entry(*p).or_insert(Offset::Offset(0));
        if let Offset::Offset(cur) = *e {
            *e = Offset::Offset(cur.max(o + 1));
        }
    }
    ends
}

// ---------------------------------------------------------------------------------------------
// The broker's view: DescribeGroups through librdkafka's group list
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct GroupView {
    state: String,
    protocol_type: String,
    protocol: String,
    /// client.id -> (member id, assigned partitions of the topic as the broker stores them)
    members: BTreeMap<String, (String, BTreeSet<i32>)>,
}

/// ListGroups + DescribeGroups for `group` (rd_kafka_list_groups).
fn describe_group(broker: &Broker, group: &str, topic: &str) -> GroupView {
    let client = producer(&broker.bootstrap(), &[]);
    let list = client
        .client()
        .fetch_group_list(Some(group), Duration::from_secs(15))
        .unwrap_or_else(|e| broker.fail(&format!("describe group {group}: {e}")));
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        broker.fail(&format!(
            "group {group} not in the group list {:?}",
            list.groups()
        ));
    };
    let members = info
        .members()
        .iter()
        .map(|m| {
            (
                m.client_id().to_string(),
                (
                    m.id().to_string(),
                    decode_assignment(m.assignment().unwrap_or(&[]), topic),
                ),
            )
        })
        .collect();
    GroupView {
        state: info.state().to_string(),
        protocol_type: info.protocol_type().to_string(),
        protocol: info.protocol().to_string(),
        members,
    }
}

/// Partitions of `topic` in a consumer-protocol assignment (version, [topic, [partition]],
/// user data). Empty bytes: no assignment.
fn decode_assignment(bytes: &[u8], topic: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    if bytes.is_empty() {
        return out;
    }
    let mut r = Reader::new(bytes);
    let _version = r.i16();
    for _ in 0..r.array_len() {
        let name = r.string();
        for _ in 0..r.array_len() {
            let p = r.i32();
            if name == topic {
                out.insert(p);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// a. Two members split a 6-partition topic
// ---------------------------------------------------------------------------------------------

/// Two range-assignor members of one group each get 3 of the 6 partitions (disjoint, together
/// all 6); 600 records produced once the group settled are each consumed exactly once, by the
/// member that owns the partition; DescribeGroups shows the group Stable, with both members and
/// the same assignments the members hold.
#[test]
fn two_members_split_partitions_and_consume_each_record_once() {
    let topic = "split-two";
    let group = "split-two-group";
    let broker = group_broker(topic);
    let mut ledger = Ledger::default();
    let mut members = vec![
        Member::join(&broker, topic, group, "m1", &[], OnRevoke::Nothing),
        Member::join(&broker, topic, group, "m2", &[], OnRevoke::Nothing),
    ];
    wait_until(
        &broker,
        &mut members,
        &mut ledger,
        REBALANCE_TIMEOUT,
        "two members split 6 partitions",
        |ms, _| even_split(ms),
    );
    let settled: Vec<BTreeSet<i32>> = members.iter().map(Member::assignment).collect();

    let acked = produce_spread(&broker, topic, "a", 100);
    let mark = ledger.mark();
    consume_until_covered(
        &broker,
        &mut members,
        &mut ledger,
        mark,
        &acked,
        "600 records",
    );
    ledger.assert_exactly_once(mark, |_| true, &acked, "two members");
    for (m, owned) in members.iter().zip(&settled) {
        let read: BTreeSet<i32> = ledger.of_member(mark, &m.name).keys().copied().collect();
        assert_eq!(
            &read, owned,
            "{} read partitions other than its own",
            m.name
        );
        assert_eq!(
            &m.assignment(),
            owned,
            "{}: assignment changed while consuming",
            m.name
        );
    }

    let view = describe_group(&broker, group, topic);
    assert_eq!(view.state, "Stable", "{view:?}");
    assert_eq!(view.protocol_type, "consumer", "{view:?}");
    assert_eq!(view.protocol, "range", "{view:?}");
    assert_eq!(
        view.members.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["m1", "m2"],
        "{view:?}"
    );
    for (m, owned) in members.iter().zip(&settled) {
        let (member_id, assigned) = &view.members[&m.name];
        assert!(
            !member_id.is_empty(),
            "{}: empty member id in {view:?}",
            m.name
        );
        assert_eq!(
            assigned, owned,
            "{}: broker's stored assignment vs the member's",
            m.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// b. A third member joins
// ---------------------------------------------------------------------------------------------

/// Two members consume 600 records and commit them; a third joins; after the rebalance the
/// three hold 2 partitions each (disjoint, all 6). Because everything read before the rebalance
/// was committed, no record is redelivered to anyone: 600 more records are consumed once each,
/// each by the member that owns its partition after the rebalance, and the old ones never again.
/// The committed offsets then equal the log end of every partition.
#[test]
fn third_member_joins_and_committed_records_are_not_redelivered() {
    let topic = "third-joins";
    let group = "third-joins-group";
    let broker = group_broker(topic);
    let mut ledger = Ledger::default();
    let mut members = vec![
        Member::join(&broker, topic, group, "m1", &[], OnRevoke::Nothing),
        Member::join(&broker, topic, group, "m2", &[], OnRevoke::Nothing),
    ];
    wait_until(
        &broker,
        &mut members,
        &mut ledger,
        REBALANCE_TIMEOUT,
        "two members split 6 partitions",
        |ms, _| even_split(ms),
    );

    let first = produce_spread(&broker, topic, "b1", 100);
    consume_until_covered(
        &broker,
        &mut members,
        &mut ledger,
        0,
        &first,
        "first 600 records",
    );
    for m in &members {
        m.commit_positions();
    }
    assert_eq!(
        members[0].committed(),
        end_offsets(&first),
        "committed after the first round"
    );
    let events_before: Vec<usize> = members.iter().map(|m| m.events().len()).collect();

    members.push(Member::join(
        &broker,
        topic,
        group,
        "m3",
        &[],
        OnRevoke::Nothing,
    ));
    wait_until(
        &broker,
        &mut members,
        &mut ledger,
        REBALANCE_TIMEOUT,
        "three members split 6 partitions",
        |ms, _| even_split(ms),
    );
    // Eager protocol: the two old members were revoked and reassigned.
    for (m, before) in members.iter().zip(&events_before) {
        let events = m.events();
        assert!(
            events[*before..]
                .iter()
                .any(|e| matches!(e, Event::Assign(s) if s.len() == 2)),
            "{}: no assignment of 2 partitions after the third member joined: {events:?}",
            m.name
        );
    }
    let after: BTreeMap<String, BTreeSet<i32>> = members
        .iter()
        .map(|m| (m.name.clone(), m.assignment()))
        .collect();

    let mark = ledger.mark();
    let second = produce_spread(&broker, topic, "b2", 100);
    let everything: BTreeSet<(i32, i64)> = first.union(&second).copied().collect();
    consume_until_covered(
        &broker,
        &mut members,
        &mut ledger,
        mark,
        &second,
        "second 600 records",
    );
    // Over the whole test: each record once (the first round was committed before the rebalance,
    // so re-reading any of it would be a redelivery of committed records).
    ledger.assert_exactly_once(0, |_| true, &everything, "first and second round");
    for (name, owned) in &after {
        let read: BTreeSet<i32> = ledger.of_member(mark, name).keys().copied().collect();
        assert!(
            read.is_subset(owned),
            "{name} read partitions {read:?} after the rebalance, owns {owned:?}"
        );
    }
    for m in &members {
        m.commit_positions();
    }
    assert_eq!(
        members[2].committed(),
        end_offsets(&everything),
        "committed after the second round"
    );
}

// ---------------------------------------------------------------------------------------------
// c. A member leaves
// ---------------------------------------------------------------------------------------------

/// Three members (session timeout 30 s) consume 600 records; two commit everything, the third
/// commits offset 60 of its partitions although it read to 100, then closes (LeaveGroup). The
/// survivors take over within 15 s, well before its session could expire, hold 3 partitions
/// each, and continue from the committed offsets: on the leaver's partitions from exactly 60
/// (60..100 are legitimately read again), elsewhere from 100 — nothing before a committed offset
/// is read, nothing after it is skipped, nothing is read twice.
#[test]
fn leaving_member_hands_partitions_to_survivors_at_committed_offsets() {
    const SESSION_MS: &str = "30000";
    const LEAVER_COMMIT: i64 = 60;
    let topic = "leaver";
    let group = "leaver-group";
    let broker = group_broker(topic);
    let mut ledger = Ledger::default();
    let extra = [("session.timeout.ms", SESSION_MS)];
    let mut members: Vec<Member> = ["m1", "m2", "m3"]
        .iter()
        .map(|n| Member::join(&broker, topic, group, n, &extra, OnRevoke::Nothing))
        .collect();
    wait_until(
        &broker,
        &mut members,
        &mut ledger,
        REBALANCE_TIMEOUT,
        "three members split 6 partitions",
        |ms, _| even_split(ms),
    );

    let first = produce_spread(&broker, topic, "c1", 100);
    consume_until_covered(
        &broker,
        &mut members,
        &mut ledger,
        0,
        &first,
        "first 600 records",
    );
    ledger.assert_exactly_once(0, |_| true, &first, "first round");
    let leaver_parts = members[0].assignment();
    let partial: BTreeMap<i32, i64> = leaver_parts.iter().map(|p| (*p, LEAVER_COMMIT)).collect();
    members[0].commit(&partial);
    for m in &members[1..] {
        m.commit_positions();
    }

    let mark = ledger.mark();
    let leaver = members.remove(0);
    let left_at = Instant::now();
    drop(leaver); // close: LeaveGroup (dynamic member)
    let took = wait_until(
        &broker,
        &mut members,
        &mut ledger,
        Duration::from_secs(15),
        "survivors take over the leaver's partitions (LeaveGroup, not session expiry)",
        |ms, _| even_split(ms),
    );
    eprintln!(
        "survivors settled {:?} after close ({took:?} of waiting)",
        left_at.elapsed()
    );

    let second = produce_spread(&broker, topic, "c2", 100);
    let mut expected: BTreeSet<(i32, i64)> = second.clone();
    for (p, o) in &first {
        if leaver_parts.contains(p) && *o >= LEAVER_COMMIT {
            expected.insert((*p, *o));
        }
    }
    consume_until_covered(
        &broker,
        &mut members,
        &mut ledger,
        mark,
        &expected,
        "after the leave",
    );
    ledger.assert_exactly_once(mark, |_| true, &expected, "survivors after the leave");
    // Each survivor read each partition it got as one contiguous run from its committed offset.
    for m in &members {
        for (p, offsets) in ledger.of_member(mark, &m.name) {
            let from = if leaver_parts.contains(&p) {
                LEAVER_COMMIT
            } else {
                100
            };
            let want: Vec<i64> = (from..from + offsets.len() as i64).collect();
            assert_eq!(
                offsets, want,
                "{} partition {p}: offsets read after the leave",
                m.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// d. Cooperative-sticky
// ---------------------------------------------------------------------------------------------

/// cooperative-sticky: m1 owns all 6 partitions and has read 60 records from each, committing
/// nothing; m2 joins while records keep arriving. m1's callbacks show an incremental revoke of
/// exactly the 3 partitions m2 ends up with, never of one it keeps, and never a lost assignment;
/// m2 is only assigned. m1 reads each partition it keeps as one contiguous run from offset 0 —
/// with nothing committed there, a revoke-and-reassign would have restarted it from 0 — and m2
/// continues the moved partitions exactly where m1 committed them in its revoke callback: every
/// record is consumed once.
#[test]
fn cooperative_sticky_moves_only_the_partitions_it_must() {
    let topic = "coop";
    let group = "coop-group";
    let broker = group_broker(topic);
    let mut ledger = Ledger::default();
    let extra = [("partition.assignment.strategy", "cooperative-sticky")];
    let mut members = vec![Member::join(
        &broker,
        topic,
        group,
        "m1",
        &extra,
        OnRevoke::CommitPositions,
    )];
    wait_until(
        &broker,
        &mut members,
        &mut ledger,
        REBALANCE_TIMEOUT,
        "m1 owns all partitions",
        |ms, _| ms[0].assignment() == all_partitions(),
    );
    let first = produce_spread(&broker, topic, "d1", 60);
    consume_until_covered(
        &broker,
        &mut members,
        &mut ledger,
        0,
        &first,
        "first 360 records",
    );

    // Records keep arriving on every partition while m2 joins.
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let (bootstrap, topic, stop) = (broker.bootstrap(), topic.to_string(), stop.clone());
        thread::spawn(move || {
            let p = producer(&bootstrap, &[("acks", "all")]);
            let mut acked: BTreeSet<(i32, i64)> = BTreeSet::new();
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                let recs: Vec<Rec> = (0..PARTITIONS)
                    .map(|part| Rec::value(format!("d2-{round}-{part}")).in_partition(part))
                    .collect();
                acked.extend(produce_all(&p, &topic, &recs, PRODUCE_TIMEOUT));
                round += 1;
                thread::sleep(Duration::from_millis(50));
            }
            acked
        })
    };
    members.push(Member::join(
        &broker,
        topic,
        group,
        "m2",
        &extra,
        OnRevoke::CommitPositions,
    ));
    wait_until(
        &broker,
        &mut members,
        &mut ledger,
        REBALANCE_TIMEOUT,
        "two cooperative members split 6 partitions",
        |ms, _| even_split(ms),
    );
    pump_for(&mut members, &mut ledger, Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let during = trickle.join().expect("producer thread");
    let last = produce_spread(&broker, topic, "d3", 60);
    let everything: BTreeSet<(i32, i64)> =
        first.iter().chain(&during).chain(&last).copied().collect();
    consume_until_covered(
        &broker,
        &mut members,
        &mut ledger,
        0,
        &everything,
        "all records",
    );

    let kept = members[0].assignment();
    let moved = members[1].assignment();
    let summary = summaries(&members);
    let m1_events = members[0].events();
    assert_eq!(
        m1_events.first(),
        Some(&Event::Assign(all_partitions())),
        "m1's first callback\n{summary}"
    );
    let mut revoked = BTreeSet::new();
    for e in &m1_events[1..] {
        match e {
            Event::Revoke {
                partitions,
                lost: false,
            } => revoked.extend(partitions.iter().copied()),
            Event::Assign(s) if s.is_empty() => {}
            Event::RevokeCommit { result: Ok(()), .. } => {}
            other => {
                panic!("m1: unexpected callback {other:?} after its first assignment\n{summary}")
            }
        }
    }
    assert_eq!(
        revoked, moved,
        "m1 must be revoked exactly the partitions m2 got\n{summary}"
    );
    assert!(
        revoked.is_disjoint(&kept),
        "m1 revoked partitions it kept\n{summary}"
    );
    for e in members[1].events() {
        assert!(
            matches!(e, Event::Assign(_)),
            "m2: unexpected callback {e:?}\n{summary}"
        );
    }
    let ends = end_offsets(&everything);
    let m1_read = ledger.of_member(0, "m1");
    for p in &kept {
        let Offset::Offset(end) = ends[p] else {
            unreachable!()
        };
        assert_eq!(
            m1_read.get(p).cloned().unwrap_or_default(),
            (0..end).collect::<Vec<i64>>(),
            "m1 partition {p} (kept): not one contiguous run from 0\n{summary}"
        );
    }
    ledger.assert_exactly_once(0, |_| true, &everything, "cooperative rebalance");
}

// ---------------------------------------------------------------------------------------------
// e. Static membership
// ---------------------------------------------------------------------------------------------

/// Two static members (group.instance.id, session 10 s, range assignor: members ordered by
/// instance id, so the split does not depend on member ids). Static member A is closed without
/// LeaveGroup (librdkafka never sends one for a static member) and a new consumer with A's
/// instance id starts at once: it gets A's partitions back within the session timeout, and B's
/// rebalance callback is not called again — not then, and not when A's old session would have
/// expired. Records produced afterwards are consumed once each, the new A resuming at A's
/// commits.
#[test]
fn static_member_restarts_within_session_timeout_without_rebalance() {
    const SESSION_MS: u64 = 10_000;
    let topic = "static";
    let group = "static-group";
    let broker = group_broker(topic);
    let mut ledger = Ledger::default();
    let session = SESSION_MS.to_string();
    let static_a = [
        ("group.instance.id", "static-a"),
        ("session.timeout.ms", session.as_str()),
    ];
    let static_b = [
        ("group.instance.id", "static-b"),
        ("session.timeout.ms", session.as_str()),
    ];
    let mut members = vec![
        Member::join(&broker, topic, group, "a", &static_a, OnRevoke::Nothing),
        Member::join(&broker, topic, group, "b", &static_b, OnRevoke::Nothing),
    ];
    wait_until(
        &broker,
        &mut members,
        &mut ledger,
        REBALANCE_TIMEOUT,
        "two static members split 6 partitions",
        |ms, _| even_split(ms),
    );
    let a_parts = members[0].assignment();
    let b_parts = members[1].assignment();
    let first = produce_spread(&broker, topic, "e1", 100);
    consume_until_covered(
        &broker,
        &mut members,
        &mut ledger,
        0,
        &first,
        "first 600 records",
    );
    for m in &members {
        m.commit_positions();
    }
    let b_events = members[1].events();
    let before = describe_group(&broker, group, topic);
    let (old_a_id, _) = before.members["a"].clone();
    let (b_id, _) = before.members["b"].clone();

    let old_a = members.remove(0);
    drop(old_a); // close without LeaveGroup: the broker still counts A as a member
    let closed_at = Instant::now();
    members.insert(
        0,
        Member::join(
            &broker,
            topic,
            group,
            "a-again",
            &static_a,
            OnRevoke::Nothing,
        ),
    );
    wait_until(
        &broker,
        &mut members,
        &mut ledger,
        Duration::from_millis(SESSION_MS - 1000),
        "the restarted static member gets its partitions back within the session timeout",
        |ms, _| !ms[0].assignment().is_empty(),
    );
    // Past the point where the old A's session would have expired.
    let expiry_passed = closed_at + Duration::from_millis(SESSION_MS + 3000);
    pump_for(
        &mut members,
        &mut ledger,
        expiry_passed.saturating_duration_since(Instant::now()),
    );
    let summary = summaries(&members);
    assert_eq!(
        members[0].assignment(),
        a_parts,
        "restarted A's partitions\n{summary}"
    );
    assert_eq!(
        members[0].events(),
        vec![Event::Assign(a_parts.clone())],
        "restarted A's callbacks\n{summary}"
    );
    assert_eq!(
        members[1].events(),
        b_events,
        "B's rebalance callback was called again\n{summary}"
    );
    assert_eq!(
        members[1].assignment(),
        b_parts,
        "B's partitions\n{summary}"
    );

    let mark = ledger.mark();
    let second = produce_spread(&broker, topic, "e2", 100);
    consume_until_covered(
        &broker,
        &mut members,
        &mut ledger,
        mark,
        &second,
        "second 600 records",
    );
    let everything: BTreeSet<(i32, i64)> = first.union(&second).copied().collect();
    ledger.assert_exactly_once(0, |_| true, &everything, "across the static restart");
    let a_read: BTreeSet<i32> = ledger.of_member(mark, "a-again").keys().copied().collect();
    assert_eq!(a_read, a_parts, "partitions the restarted A read");
    // The broker's view: still two members; B's member id unchanged; A's slot now holds a new
    // member id (the old one is fenced) with A's partitions. Which client.id the broker reports
    // for the replaced static member is not asserted: Kafka keeps the old member's.
    let after = describe_group(&broker, group, topic);
    assert_eq!(after.state, "Stable", "{after:?}");
    let by_id: BTreeMap<&str, &BTreeSet<i32>> = after
        .members
        .values()
        .map(|(id, parts)| (id.as_str(), parts))
        .collect();
    assert_eq!(
        by_id.len(),
        2,
        "members after the static restart: {after:?}"
    );
    assert_eq!(
        by_id.get(b_id.as_str()),
        Some(&&b_parts),
        "B's member id and assignment: {after:?}"
    );
    let (new_a_id, new_a_parts) = by_id
        .iter()
        .find(|(id, _)| **id != b_id)
        .expect("a second member");
    assert_ne!(
        *new_a_id, old_a_id,
        "the restarted A kept the old member id: {after:?}"
    );
    assert_eq!(
        *new_a_parts, &a_parts,
        "broker's stored assignment of the restarted A: {after:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// f. Two groups: publish/subscribe
// ---------------------------------------------------------------------------------------------

/// Group one (two members) and group two (one member) each consume all 600 records exactly
/// once; offsets one group commits are not the other's.
#[test]
fn two_groups_each_read_every_record() {
    let topic = "pubsub";
    let (one, two) = ("pubsub-one", "pubsub-two");
    let broker = group_broker(topic);
    let mut ledger = Ledger::default();
    let mut members = vec![
        Member::join(&broker, topic, one, "one-1", &[], OnRevoke::Nothing),
        Member::join(&broker, topic, one, "one-2", &[], OnRevoke::Nothing),
        Member::join(&broker, topic, two, "two-1", &[], OnRevoke::Nothing),
    ];
    wait_until(
        &broker,
        &mut members,
        &mut ledger,
        REBALANCE_TIMEOUT,
        "both groups settled",
        |ms, _| even_split(&ms[0..2]) && even_split(&ms[2..3]),
    );
    let acked = produce_spread(&broker, topic, "f", 100);
    let in_one = |name: &str| name.starts_with("one-");
    let in_two = |name: &str| name.starts_with("two-");
    wait_until(
        &broker,
        &mut members,
        &mut ledger,
        CONSUME_TIMEOUT,
        "both groups read every record",
        |_, l| l.covers(0, in_one, &acked) && l.covers(0, in_two, &acked),
    );
    pump_for(&mut members, &mut ledger, GRACE);
    ledger.assert_exactly_once(0, in_one, &acked, "group one");
    ledger.assert_exactly_once(0, in_two, &acked, "group two");

    for m in &members[0..2] {
        m.commit_positions();
    }
    assert_eq!(
        members[0].committed(),
        end_offsets(&acked),
        "group one's commits"
    );
    let two_committed = members[2].committed();
    assert!(
        two_committed.values().all(|o| *o == Offset::Invalid),
        "group two committed nothing, yet OffsetFetch answers {two_committed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// KIP-848: group.protocol=consumer
// ---------------------------------------------------------------------------------------------

/// librdkafka's next-generation consumer (`group.protocol=consumer`, KIP-848): the broker
/// assigns (uniform assignor) through ConsumerGroupHeartbeat. Two members split the 6 partitions
/// and consume 600 records once each and commit; a third joins: the old members each give up
/// one partition incrementally (revoked, never lost, nothing else moves), the three converge on
/// 2 partitions each, and 600 more records are consumed once each, nothing committed read again.
#[test]
fn consumer_protocol_members_split_and_a_third_joins() {
    const KIP848: &[(&str, &str)] = &[("group.protocol", "consumer")];
    let topic = "kip848";
    let group = "kip848-group";
    let broker = BrokerOptions::new()
        .cores(test_cores())
        .set("group.consumer.heartbeat.interval.ms", 300)
        .start();
    create_topic(broker.addr(), topic, PARTITIONS);
    let mut ledger = Ledger::default();
    let mut members = vec![
        Member::join(&broker, topic, group, "n1", KIP848, OnRevoke::Nothing),
        Member::join(&broker, topic, group, "n2", KIP848, OnRevoke::Nothing),
    ];
    wait_until(
        &broker,
        &mut members,
        &mut ledger,
        REBALANCE_TIMEOUT,
        "two consumer-protocol members split 6 partitions",
        |ms, _| even_split(ms),
    );
    let first = produce_spread(&broker, topic, "k1", 100);
    consume_until_covered(&broker, &mut members, &mut ledger, 0, &first, "first 600");
    ledger.assert_exactly_once(0, |_| true, &first, "two members");
    for m in &members {
        m.commit_positions();
    }
    assert_eq!(members[0].committed(), end_offsets(&first), "committed");
    let before: Vec<BTreeSet<i32>> = members.iter().map(Member::assignment).collect();
    let events_before: Vec<usize> = members.iter().map(|m| m.events().len()).collect();

    members.push(Member::join(
        &broker,
        topic,
        group,
        "n3",
        KIP848,
        OnRevoke::Nothing,
    ));
    wait_until(
        &broker,
        &mut members,
        &mut ledger,
        REBALANCE_TIMEOUT,
        "three consumer-protocol members split 6 partitions",
        |ms, _| even_split(ms),
    );
    for (i, m) in members[..2].iter().enumerate() {
        let kept = m.assignment();
        assert!(
            kept.is_subset(&before[i]),
            "{}: gained partitions {kept:?}",
            m.name
        );
        let events = m.events();
        let revoked: BTreeSet<i32> = events[events_before[i]..]
            .iter()
            .flat_map(|e| match e {
                Event::Revoke { partitions, lost } => {
                    assert!(
                        !lost,
                        "{}: partitions lost, not revoked: {events:?}",
                        m.name
                    );
                    partitions.clone()
                }
                _ => BTreeSet::new(),
            })
            .collect();
        let given_up: BTreeSet<i32> = before[i].difference(&kept).copied().collect();
        assert_eq!(
            revoked, given_up,
            "{}: revoked exactly what it gave up",
            m.name
        );
    }

    let mark = ledger.mark();
    let second = produce_spread(&broker, topic, "k2", 100);
    let everything: BTreeSet<(i32, i64)> = first.union(&second).copied().collect();
    consume_until_covered(
        &broker,
        &mut members,
        &mut ledger,
        mark,
        &second,
        "second 600",
    );
    ledger.assert_exactly_once(0, |_| true, &everything, "both rounds");
    for m in &members {
        m.commit_positions();
    }
    assert_eq!(
        members[2].committed(),
        end_offsets(&everything),
        "committed after both"
    );
}

// ---------------------------------------------------------------------------------------------
// g. Broker restart
// ---------------------------------------------------------------------------------------------

/// How the broker goes down between the two rounds.
#[derive(Clone, Copy, Debug)]
enum Restart {
    /// SIGTERM, wait for exit 0, start.
    Graceful,
    /// SIGKILL, start on the same data directory.
    Kill9,
}

/// Two members consume 600 records and commit them; the broker restarts (SIGTERM, start). The
/// committed offsets read back intact, the members keep consuming (600 more records, every
/// record of both rounds consumed exactly once: nothing lost, nothing committed read again), and
/// DescribeGroups lists the same two member ids as before the restart, Stable.
#[test]
fn group_membership_and_offsets_survive_restart() {
    membership_and_offsets_survive(Restart::Graceful);
}

/// As `group_membership_and_offsets_survive_restart`, with kill -9 instead of SIGTERM: the
/// commits and the completed rebalance were acknowledged, so they are durable.
#[test]
fn group_membership_and_offsets_survive_kill9() {
    membership_and_offsets_survive(Restart::Kill9);
}

fn membership_and_offsets_survive(how: Restart) {
    let topic = "restart";
    let group = "restart-group";
    let mut broker = group_broker(topic);
    let mut ledger = Ledger::default();
    let extra = [("session.timeout.ms", "10000")];
    let mut members = vec![
        Member::join(&broker, topic, group, "m1", &extra, OnRevoke::Nothing),
        Member::join(&broker, topic, group, "m2", &extra, OnRevoke::Nothing),
    ];
    wait_until(
        &broker,
        &mut members,
        &mut ledger,
        REBALANCE_TIMEOUT,
        "two members split 6 partitions",
        |ms, _| even_split(ms),
    );
    let first = produce_spread(&broker, topic, "g1", 100);
    consume_until_covered(
        &broker,
        &mut members,
        &mut ledger,
        0,
        &first,
        "first 600 records",
    );
    for m in &members {
        m.commit_positions();
    }
    let before = describe_group(&broker, group, topic);
    assert_eq!(before.state, "Stable", "{before:?}");

    match how {
        Restart::Graceful => broker.restart(),
        Restart::Kill9 => {
            broker.kill9();
            broker.start_again();
        }
    }

    assert_eq!(
        members[0].committed(),
        end_offsets(&first),
        "committed offsets after the restart ({how:?})"
    );
    let mark = ledger.mark();
    let second = produce_spread(&broker, topic, "g2", 100);
    consume_until_covered(
        &broker,
        &mut members,
        &mut ledger,
        mark,
        &second,
        "600 records after the restart",
    );
    let everything: BTreeSet<(i32, i64)> = first.union(&second).copied().collect();
    ledger.assert_exactly_once(0, |_| true, &everything, "across the restart");

    wait_until(
        &broker,
        &mut members,
        &mut ledger,
        REBALANCE_TIMEOUT,
        "two members split 6 partitions after the restart",
        |ms, _| even_split(ms),
    );
    let after = describe_group(&broker, group, topic);
    assert_eq!(after.state, "Stable", "{after:?}");
    let ids = |v: &GroupView| -> BTreeMap<String, String> {
        v.members
            .iter()
            .map(|(c, (id, _))| (c.clone(), id.clone()))
            .collect()
    };
    assert_eq!(
        ids(&after),
        ids(&before),
        "member ids before vs after the restart"
    );
    for m in &members {
        m.commit_positions();
    }
    assert_eq!(
        members[1].committed(),
        end_offsets(&everything),
        "committed after the second round"
    );
}
