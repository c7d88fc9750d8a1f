"""Black-box test with confluent-kafka (librdkafka from its wheel) against a real `odradek serve`.

The broker binary comes from $ODRADEK_BIN (default target/release/odradek). The module starts one
broker on a free loopback port with a temporary data directory, and stops it (SIGTERM, exit code 0
expected) when the module is done. Every wait is bounded.

Run: python3 -m pytest -v tests/python/test_confluent.py  (scripts/test does this for you)
"""

import glob
import os
import struct
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewPartitions, NewTopic

from odradek_broker import admin, create_topic, running_broker

RECORDS = 10_000
PARTITIONS = 3


@pytest.fixture(scope="module")
def broker():
    yield from running_broker()


def test_admin_create_and_list_topics(broker):
    name = f"py-admin-{uuid.uuid4().hex[:8]}"
    create_topic(broker, name, PARTITIONS)

    md = admin(broker).list_topics(timeout=15)
    assert len(md.brokers) >= 1, "metadata lists no brokers"
    assert name in md.topics, f"{name} not in list_topics: {sorted(md.topics)}"
    t = md.topics[name]
    assert t.error is None, f"topic error: {t.error}"
    assert sorted(t.partitions) == list(range(PARTITIONS))
    for p in t.partitions.values():
        assert p.error is None, f"partition {p.id} error: {p.error}"
        assert p.leader in md.brokers, f"partition {p.id} leader {p.leader} is not a listed broker"

    md_one = admin(broker).list_topics(topic=name, timeout=15)
    assert list(md_one.topics) == [name]

    # Creating it again fails with TOPIC_ALREADY_EXISTS.
    client = admin(broker)
    futures = client.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
    with pytest.raises(KafkaException) as exc:
        futures[name].result(timeout=30)
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, exc.value


def test_produce_consume_10k_lz4_acks_all(broker):
    topic = f"py-lz4-{uuid.uuid4().hex[:8]}"
    create_topic(broker, topic, PARTITIONS)

    delivered = {}  # index -> (partition, offset)
    errors = []

    def on_delivery(err, msg, i):
        if err is not None:
            errors.append((i, err))
        else:
            delivered[i] = (msg.partition(), msg.offset())

    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": 5,
            "message.timeout.ms": 30000,
        }
    )
    sent = []
    for i in range(RECORDS):
        key = f"key-{i % 97}".encode()
        value = f"value-{i:06d}-".encode() + bytes((i * 7 + j) % 256 for j in range(i % 50))
        sent.append((key, value))
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=lambda err, msg, i=i: on_delivery(err, msg, i))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0, f"{remaining} records not delivered within 60 s"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:3]}"
    assert len(delivered) == RECORDS

    # Expected per partition, in produce order; delivery offsets dense from 0.
    expected = {p: [] for p in range(PARTITIONS)}
    for i in range(RECORDS):
        p, off = delivered[i]
        assert off == len(expected[p]), f"record {i}: offset {off} in partition {p}, expected {len(expected[p])}"
        expected[p].append(sent[i])
    # A key always maps to one partition.
    key_parts = {}
    for i in range(RECORDS):
        key_parts.setdefault(sent[i][0], set()).add(delivered[i][0])
    assert all(len(ps) == 1 for ps in key_parts.values()), "a key was spread over partitions"

    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"py-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "error",
            "check.crcs": True,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        got = {p: [] for p in range(PARTITIONS)}
        count = 0
        client_errors = []
        deadline = time.monotonic() + 120
        while count < RECORDS:
            if time.monotonic() > deadline:
                broker.fail(
                    f"consumed {count} of {RECORDS} within 120 s: "
                    f"{ {p: len(v) for p, v in got.items()} }; client errors: {client_errors[:3]}"
                )
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error():
                    client_errors.append(msg.error())
                    continue
                p = msg.partition()
                assert msg.offset() == len(got[p]), f"partition {p}: offset {msg.offset()} after {len(got[p])} records"
                got[p].append((msg.key(), msg.value()))
                count += 1
        # Nothing more than what was produced.
        extra = [m for m in consumer.consume(num_messages=10, timeout=1.0) if not m.error()]
        assert not extra, f"extra records after {RECORDS}: {[(m.partition(), m.offset()) for m in extra]}"
    finally:
        consumer.close()

    for p in range(PARTITIONS):
        assert len(got[p]) == len(expected[p]), f"partition {p}: {len(got[p])} read, {len(expected[p])} sent"
        for pos, (a, b) in enumerate(zip(got[p], expected[p])):
            assert a == b, f"partition {p} offset {pos}: read {a!r}, sent {b!r}"

    # Passthrough: batches on disk are as the producer sent them: lz4 (codec id 3), or plain
    # where librdkafka found lz4 would not shrink a small batch. A broker that refused lz4 (so
    # librdkafka sends everything plain) or recompressed would fail this.
    stored = stored_batch_codecs(os.path.join(broker.tmp.name, "data"), topic, PARTITIONS)
    by_codec = {}
    for codec, records in stored:
        by_codec[codec] = by_codec.get(codec, 0) + records
    assert set(by_codec) <= {0, 3}, f"stored codecs {by_codec}"
    assert sum(by_codec.values()) == RECORDS, f"records on disk {by_codec}, produced {RECORDS}"
    assert by_codec.get(3, 0) >= 0.9 * RECORDS, f"records per stored codec {by_codec}: lz4 not passed through"


def stored_batch_codecs(data_dir, topic, partitions):
    """(codec id (attributes & 7), record count) of every RecordBatch in the topic's segments."""
    seen = []
    for p in range(partitions):
        for seg in sorted(glob.glob(os.path.join(data_dir, f"{topic}-{p}", "*.log"))):
            with open(seg, "rb") as f:
                b = f.read()
            pos = 0
            while pos + 61 <= len(b):
                (length,) = struct.unpack(">i", b[pos + 8 : pos + 12])
                if length <= 0:
                    break
                (attributes,) = struct.unpack(">h", b[pos + 21 : pos + 23])
                (records,) = struct.unpack(">i", b[pos + 57 : pos + 61])
                seen.append((attributes & 7, records))
                pos += 12 + length
    return seen


def test_admin_partitions_delete_and_describe_cluster(broker):
    client = admin(broker)
    name = f"py-grow-{uuid.uuid4().hex[:8]}"
    create_topic(broker, name, 2)

    # Grow 2 -> 4 partitions; shrinking (or staying) is refused with INVALID_PARTITIONS.
    client.create_partitions([NewPartitions(name, 4)])[name].result(timeout=30)
    assert sorted(client.list_topics(topic=name, timeout=15).topics[name].partitions) == [0, 1, 2, 3]
    with pytest.raises(KafkaException) as exc:
        client.create_partitions([NewPartitions(name, 3)])[name].result(timeout=30)
    assert exc.value.args[0].code() == KafkaError.INVALID_PARTITIONS, exc.value

    # The new partitions take writes.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    delivered = []
    producer.produce(name, value=b"on-3", partition=3, on_delivery=lambda err, msg: delivered.append((err, msg.offset())))
    producer.flush(30)
    assert delivered == [(None, 0)], delivered

    # Describe the cluster: one broker, which is the controller, and a cluster id.
    cluster = client.describe_cluster(request_timeout=15).result(timeout=30)
    assert len(cluster.nodes) == 1, cluster.nodes
    assert cluster.controller is not None and cluster.controller.id == cluster.nodes[0].id
    assert cluster.cluster_id, "no cluster id"

    # Delete it; it disappears from metadata, and deleting again is UNKNOWN_TOPIC_OR_PART.
    client.delete_topics([name], operation_timeout=15)[name].result(timeout=30)
    assert name not in client.list_topics(timeout=15).topics
    with pytest.raises(KafkaException) as exc:
        client.delete_topics([name], operation_timeout=15)[name].result(timeout=30)
    assert exc.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, exc.value
