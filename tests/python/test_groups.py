"""Black-box tests of consumer groups with confluent-kafka (librdkafka from its wheel) against a
real `odradek serve`.

The broker binary comes from $ODRADEK_BIN (default target/release/odradek). The module starts one
broker on a free loopback port with a temporary data directory and
`group.initial.rebalance.delay.ms=0` (so a group's first rebalance does not wait 3 s), and stops it
(SIGTERM, exit code 0 expected) when the module is done. Every test uses its own topic and group;
every wait is bounded. Consumers are polled in turn from the test thread, so rebalance callbacks run
there and every record handed to a consumer is filed under its name.

Run: python3 -m pytest -v tests/python/test_groups.py
"""

import time
import uuid

import pytest
from confluent_kafka import (
    OFFSET_INVALID,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    ConsumerGroupType,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from odradek_broker import admin, create_topic, running_broker

REBALANCE_TIMEOUT_S = 30
CONSUME_TIMEOUT_S = 30
PARTITIONS = 6
PER_PARTITION = 100
BROKER_OVERRIDES = {"group.initial.rebalance.delay.ms": "0", "group.consumer.heartbeat.interval.ms": "500"}


@pytest.fixture(scope="module")
def broker():
    yield from running_broker(BROKER_OVERRIDES)


def produce_spread(broker, topic, tag):
    """PER_PARTITION records to every partition (acks=all); returns the set of acknowledged (partition, offset)."""
    acked, errors = set(), []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked.add((msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(PER_PARTITION * PARTITIONS):
        producer.produce(topic, value=f"{tag}-{i}".encode(), partition=i % PARTITIONS, on_delivery=on_delivery)
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} records not delivered within 30 s"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:3]}"
    assert len(acked) == PER_PARTITION * PARTITIONS, "two records acknowledged at one offset"
    return acked


class Member:
    """One subscribed consumer; `taken` lists every (partition, offset) it was handed, in order."""

    def __init__(self, broker, topic, group, name, protocol="classic"):
        self.name, self.topic, self.group = name, topic, group
        self.events, self.taken, self.errors = [], [], []
        self.closed = False
        config = {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "client.id": name,
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
        }
        if protocol == "consumer":
            # KIP-848: the broker assigns and sets the session and heartbeat timing.
            config["group.protocol"] = "consumer"
        else:
            config.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "partition.assignment.strategy": "range"})
        self.consumer = Consumer(config)
        self.consumer.subscribe(
            [topic],
            on_assign=lambda c, parts: self.events.append(("assign", sorted(p.partition for p in parts))),
            on_revoke=lambda c, parts: self.events.append(("revoke", sorted(p.partition for p in parts))),
        )

    def poll_some(self):
        for msg in self.consumer.consume(num_messages=500, timeout=0.02):
            if msg.error():
                self.errors.append(msg.error())
            elif msg.topic() == self.topic:
                self.taken.append((msg.partition(), msg.offset()))

    def assignment(self):
        return {tp.partition for tp in self.consumer.assignment() if tp.topic == self.topic}

    def commit_positions(self):
        """Commits (sync) the next offset after the last record handed out, per assigned partition."""
        nxt = {}
        for p, o in self.taken:
            nxt[p] = max(nxt.get(p, 0), o + 1)
        offsets = [TopicPartition(self.topic, p, nxt[p]) for p in sorted(self.assignment()) if p in nxt]
        assert offsets, f"{self.name}: nothing to commit"
        self.consumer.commit(offsets=offsets, asynchronous=False)

    def close(self):
        if not self.closed:
            self.closed = True
            self.consumer.close()

    def summary(self):
        return f"{self.name}: assignment {sorted(self.assignment())}, callbacks {self.events}, errors {self.errors[-3:]}"


def wait_until(broker, members, done, what, timeout=REBALANCE_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while True:
        for m in members:
            m.poll_some()
        if done():
            return
        if time.monotonic() > deadline:
            broker.fail(f"{what}: not reached within {timeout} s\n" + "\n".join(m.summary() for m in members))


def even_split(members):
    sets = [m.assignment() for m in members]
    union = set().union(*sets)
    return all(len(s) == PARTITIONS // len(members) for s in sets) and union == set(range(PARTITIONS))


def settled_pair(broker, tag, protocol="classic"):
    """A new topic and group with two members that split its 6 partitions 3/3."""
    topic = f"py-{tag}-{uuid.uuid4().hex[:8]}"
    group = f"py-{tag}-group-{uuid.uuid4().hex[:8]}"
    create_topic(broker, topic, PARTITIONS)
    members = [Member(broker, topic, group, "c1", protocol), Member(broker, topic, group, "c2", protocol)]
    wait_until(broker, members, lambda: even_split(members), "two consumers split 6 partitions")
    return topic, group, members


def consume_all(broker, members, expected):
    """Polls until every expected record was handed to some member, then 1.5 s more for duplicates."""
    wait_until(
        broker,
        members,
        lambda: expected <= {t for m in members for t in m.taken},
        f"consume {len(expected)} records",
        timeout=CONSUME_TIMEOUT_S,
    )
    grace = time.monotonic() + 1.5
    while time.monotonic() < grace:
        for m in members:
            m.poll_some()


def test_two_consumers_split_partitions_and_read_each_record_once(broker):
    topic, group, members = settled_pair(broker, "split")
    try:
        owned = {m.name: m.assignment() for m in members}
        assert owned["c1"].isdisjoint(owned["c2"]), owned
        assert owned["c1"] | owned["c2"] == set(range(PARTITIONS)), owned
        acked = produce_spread(broker, topic, "split")
        consume_all(broker, members, acked)
        taken = [t for m in members for t in m.taken]
        assert len(taken) == len(set(taken)), f"records handed out twice: {sorted(t for t in set(taken) if taken.count(t) > 1)[:8]}"
        assert set(taken) == acked, f"missing {sorted(acked - set(taken))[:8]}, unexpected {sorted(set(taken) - acked)[:8]}"
        for m in members:
            read = {p for p, _ in m.taken}
            assert read == owned[m.name], f"{m.name} read partitions {read}, owns {owned[m.name]}"
    finally:
        for m in members:
            m.close()


def test_admin_lists_and_describes_group(broker):
    topic, group, members = settled_pair(broker, "describe")
    try:
        client = admin(broker)
        listed = client.list_consumer_groups(request_timeout=15).result(timeout=30)
        assert not listed.errors, listed.errors
        mine = [g for g in listed.valid if g.group_id == group]
        assert len(mine) == 1, f"{group} not listed once: {[g.group_id for g in listed.valid]}"
        assert mine[0].state == ConsumerGroupState.STABLE, mine[0].state
        assert not mine[0].is_simple_consumer_group
        # The states filter (ListGroups v4+) is applied by the broker.
        stable = client.list_consumer_groups(request_timeout=15, states={ConsumerGroupState.STABLE}).result(timeout=30)
        assert group in [g.group_id for g in stable.valid]
        empty = client.list_consumer_groups(request_timeout=15, states={ConsumerGroupState.EMPTY}).result(timeout=30)
        assert group not in [g.group_id for g in empty.valid]

        desc = client.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=30)
        assert desc.group_id == group
        assert desc.state == ConsumerGroupState.STABLE, desc.state
        assert not desc.is_simple_consumer_group
        assert desc.partition_assignor == "range", desc.partition_assignor
        assert desc.coordinator is not None
        by_client = {d.client_id: d for d in desc.members}
        assert sorted(by_client) == ["c1", "c2"], [(d.client_id, d.member_id) for d in desc.members]
        member_ids = [d.member_id for d in desc.members]
        assert all(member_ids) and len(set(member_ids)) == 2, member_ids
        for m in members:
            assigned = {tp.partition for tp in by_client[m.name].assignment.topic_partitions if tp.topic == topic}
            assert assigned == m.assignment(), f"{m.name}: broker says {assigned}, consumer holds {m.assignment()}"
    finally:
        for m in members:
            m.close()


def test_delete_group_refused_while_members_then_deleted_after_close(broker):
    topic, group, members = settled_pair(broker, "delete")
    client = admin(broker)
    try:
        acked = produce_spread(broker, topic, "delete")
        consume_all(broker, members, acked)
        for m in members:
            m.commit_positions()

        with pytest.raises(KafkaException) as exc:
            client.delete_consumer_groups([group], request_timeout=15)[group].result(timeout=30)
        assert exc.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, exc.value
        # Refused means untouched: still Stable with both members, offsets kept.
        desc = client.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=30)
        assert desc.state == ConsumerGroupState.STABLE and len(desc.members) == 2, (desc.state, desc.members)
    finally:
        for m in members:
            m.close()  # LeaveGroup

    # Both left: the group is Empty (its committed offsets keep it alive) and can be deleted.
    desc = client.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=30)
    assert desc.state == ConsumerGroupState.EMPTY and not desc.members, (desc.state, desc.members)
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(PARTITIONS)])]
    committed = client.list_consumer_group_offsets(request, request_timeout=15)[group].result(timeout=30)
    assert {tp.partition: tp.offset for tp in committed.topic_partitions} == {p: PER_PARTITION for p in range(PARTITIONS)}

    assert client.delete_consumer_groups([group], request_timeout=15)[group].result(timeout=30) is None
    listed = client.list_consumer_groups(request_timeout=15).result(timeout=30)
    assert group not in [g.group_id for g in listed.valid]
    # Deleting a group deletes its committed offsets.
    committed = client.list_consumer_group_offsets(request, request_timeout=15)[group].result(timeout=30)
    assert all(tp.offset == OFFSET_INVALID for tp in committed.topic_partitions), committed.topic_partitions
    # Deleting it again: it no longer exists.
    with pytest.raises(KafkaException) as exc:
        client.delete_consumer_groups([group], request_timeout=15)[group].result(timeout=30)
    assert exc.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, exc.value


def test_consumer_protocol_group_reads_each_record_once_and_admin_describes_it(broker):
    """KIP-848 (`group.protocol=consumer`): the broker's assignor splits the topic, each record is
    read once, commits stick, and the admin API lists and describes the group as a consumer group
    (ConsumerGroupDescribe) with the members' assignments."""
    topic, group, members = settled_pair(broker, "kip848", protocol="consumer")
    client = admin(broker)
    try:
        owned = {m.name: m.assignment() for m in members}
        acked = produce_spread(broker, topic, "kip848")
        consume_all(broker, members, acked)
        taken = [t for m in members for t in m.taken]
        assert len(taken) == len(set(taken)), "records handed out twice"
        assert set(taken) == acked
        for m in members:
            assert {p for p, _ in m.taken} == owned[m.name], m.summary()
            m.commit_positions()

        listed = client.list_consumer_groups(request_timeout=15, types={ConsumerGroupType.CONSUMER}).result(timeout=30)
        mine = [g for g in listed.valid if g.group_id == group]
        assert len(mine) == 1, [g.group_id for g in listed.valid]
        assert mine[0].type == ConsumerGroupType.CONSUMER, mine[0].type
        assert mine[0].state == ConsumerGroupState.STABLE, mine[0].state
        classic = client.list_consumer_groups(request_timeout=15, types={ConsumerGroupType.CLASSIC}).result(timeout=30)
        assert group not in [g.group_id for g in classic.valid]

        desc = client.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=30)
        assert desc.type == ConsumerGroupType.CONSUMER, desc.type
        assert desc.state == ConsumerGroupState.STABLE, desc.state
        assert desc.partition_assignor == "uniform", desc.partition_assignor
        by_client = {d.client_id: d for d in desc.members}
        assert sorted(by_client) == ["c1", "c2"], [(d.client_id, d.member_id) for d in desc.members]
        for m in members:
            assigned = {tp.partition for tp in by_client[m.name].assignment.topic_partitions if tp.topic == topic}
            assert assigned == m.assignment(), f"{m.name}: broker says {assigned}, consumer holds {m.assignment()}"
        request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(PARTITIONS)])]
        committed = client.list_consumer_group_offsets(request, request_timeout=15)[group].result(timeout=30)
        assert {tp.partition: tp.offset for tp in committed.topic_partitions} == {p: PER_PARTITION for p in range(PARTITIONS)}
        # Resetting offsets under live members is refused (the admin is not a member).
        reset = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, 5) for p in range(PARTITIONS)])]
        refused = client.alter_consumer_group_offsets(reset, request_timeout=15)[group].result(timeout=30)
        codes = {tp.error.code() if tp.error else None for tp in refused.topic_partitions}
        assert codes == {KafkaError.UNKNOWN_MEMBER_ID}, refused.topic_partitions
    finally:
        for m in members:
            m.close()
    # Both left: Empty; offsets can be reset now (what `kafka-consumer-groups --reset-offsets`
    # does), and the group can be deleted.
    desc = client.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=30)
    assert desc.state == ConsumerGroupState.EMPTY and not desc.members, (desc.state, desc.members)
    altered = client.alter_consumer_group_offsets(reset, request_timeout=15)[group].result(timeout=30)
    assert all(tp.error is None for tp in altered.topic_partitions), altered.topic_partitions
    committed = client.list_consumer_group_offsets(request, request_timeout=15)[group].result(timeout=30)
    assert {tp.partition: tp.offset for tp in committed.topic_partitions} == {p: 5 for p in range(PARTITIONS)}
    assert client.delete_consumer_groups([group], request_timeout=15)[group].result(timeout=30) is None


def test_consumer_protocol_regex_subscription(broker):
    """KIP-848 regex subscription (`subscribe(["^..."])` with group.protocol=consumer): the member
    reads every topic whose name matches, including one created after it subscribed, and nothing
    from a topic that does not match."""
    tag = uuid.uuid4().hex[:8]
    matching = [f"py-rx-{tag}-a", f"py-rx-{tag}-b"]
    other = f"py-norx-{tag}"
    for t in matching[:1] + [other]:
        create_topic(broker, t, 2)
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"py-rx-group-{tag}",
            "group.protocol": "consumer",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "topic.metadata.refresh.interval.ms": 500,
        }
    )
    try:
        consumer.subscribe([f"^py-rx-{tag}-.*"])
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        for t in matching[:1] + [other]:
            for i in range(10):
                producer.produce(t, value=f"{t}-{i}".encode(), partition=i % 2)
        assert producer.flush(30) == 0
        create_topic(broker, matching[1], 2)  # created after the subscription
        for i in range(10):
            producer.produce(matching[1], value=f"{matching[1]}-{i}".encode(), partition=i % 2)
        assert producer.flush(30) == 0

        seen, errors = {}, []
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while time.monotonic() < deadline and sum(seen.get(t, 0) for t in matching) < 20:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                errors.append(msg.error())
                continue
            seen[msg.topic()] = seen.get(msg.topic(), 0) + 1
        assert seen.get(matching[0]) == 10 and seen.get(matching[1]) == 10, (seen, errors[-3:])
        assert other not in seen, seen
    finally:
        consumer.close()
