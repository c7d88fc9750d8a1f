"""Topic and broker configs through confluent-kafka's AdminClient (librdkafka) against a real
`odradek serve`: IncrementalAlterConfigs (SET, DELETE, APPEND, SUBTRACT, validate-only),
DescribeConfigs with synonyms and sources, and the Kafka error codes of refused changes
(INVALID_CONFIG naming the key, INVALID_REQUEST for read-only broker keys, UNKNOWN_TOPIC_OR_PARTITION).

Run: python3 -m pytest -v tests/python/test_configs.py  (scripts/test does this for you)
"""

import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewTopic

from odradek_broker import admin, running_broker

TIMEOUT = 15


@pytest.fixture(scope="module")
def broker():
    yield from running_broker()


def describe(a, resource):
    fs = a.describe_configs([resource], request_timeout=TIMEOUT)
    return list(fs.values())[0].result(timeout=TIMEOUT)


def incremental(a, rtype, name, *ops, validate_only=False):
    entries = [ConfigEntry(k, v, incremental_operation=op) for (k, op, v) in ops]
    r = ConfigResource(rtype, name, incremental_configs=entries)
    fs = a.incremental_alter_configs([r], validate_only=validate_only, request_timeout=TIMEOUT)
    return list(fs.values())[0].result(timeout=TIMEOUT)


def refused(fn):
    """Runs fn, expects a KafkaException; returns (error code, message)."""
    with pytest.raises(KafkaException) as e:
        fn()
    err = e.value.args[0]
    return err.code(), err.str()


def test_incremental_alter_set_delete_append_subtract_and_describe(broker):
    a = admin(broker)
    name = f"py-cfg-{uuid.uuid4().hex[:8]}"
    fs = a.create_topics([NewTopic(name, 1, 1, config={"retention.ms": "3600000"})], request_timeout=TIMEOUT)
    list(fs.values())[0].result(timeout=TIMEOUT)
    topic = ConfigResource(ConfigResource.Type.TOPIC, name)

    c = describe(a, topic)
    assert c["retention.ms"].value == "3600000"
    assert c["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert c["cleanup.policy"].value == "delete"
    assert c["cleanup.policy"].source == ConfigSource.DEFAULT_CONFIG.value

    # SET and APPEND (to the effective list, as Kafka does) in one request; DELETE drops the
    # override so the default shows through again.
    incremental(
        a, ConfigResource.Type.TOPIC, name,
        ("segment.bytes", AlterConfigOpType.SET, "1048576"),
        ("cleanup.policy", AlterConfigOpType.APPEND, "compact"),
        ("retention.ms", AlterConfigOpType.DELETE, None),
    )
    c = describe(a, topic)
    assert c["segment.bytes"].value == "1048576"
    assert c["cleanup.policy"].value == "delete,compact"
    assert c["retention.ms"].value == "604800000"
    assert c["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value

    incremental(a, ConfigResource.Type.TOPIC, name, ("cleanup.policy", AlterConfigOpType.SUBTRACT, "delete"))
    assert describe(a, topic)["cleanup.policy"].value == "compact"

    # validate_only changes nothing.
    incremental(a, ConfigResource.Type.TOPIC, name, ("segment.bytes", AlterConfigOpType.SET, "2097152"),
                validate_only=True)
    assert describe(a, topic)["segment.bytes"].value == "1048576"

    # Synonyms (librdkafka always asks for them): the topic override first, then the broker
    # keys down to the default.
    c = describe(a, topic)
    syn = [(s.name, s.source) for s in c["segment.bytes"].synonyms.values()]
    assert syn[0] == ("segment.bytes", ConfigSource.DYNAMIC_TOPIC_CONFIG.value), syn
    assert ("log.segment.bytes", ConfigSource.DEFAULT_CONFIG.value) in syn, syn


def test_refused_changes_get_kafka_error_codes_and_change_nothing(broker):
    a = admin(broker)
    name = f"py-cfg-bad-{uuid.uuid4().hex[:8]}"
    fs = a.create_topics([NewTopic(name, 1, 1)], request_timeout=TIMEOUT)
    list(fs.values())[0].result(timeout=TIMEOUT)

    code, msg = refused(lambda: incremental(
        a, ConfigResource.Type.TOPIC, name, ("retention.ms", AlterConfigOpType.SET, "soon")))
    assert code == KafkaError.INVALID_CONFIG and "retention.ms" in msg, msg
    code, msg = refused(lambda: incremental(
        a, ConfigResource.Type.TOPIC, name, ("retention.msec", AlterConfigOpType.SET, "1")))
    assert code == KafkaError.INVALID_CONFIG and "retention.msec" in msg, msg
    # APPEND only applies to lists.
    code, msg = refused(lambda: incremental(
        a, ConfigResource.Type.TOPIC, name, ("retention.ms", AlterConfigOpType.APPEND, "1")))
    assert code == KafkaError.INVALID_CONFIG, msg
    # Subtracting every policy leaves an invalid empty list.
    code, msg = refused(lambda: incremental(
        a, ConfigResource.Type.TOPIC, name, ("cleanup.policy", AlterConfigOpType.SUBTRACT, "delete")))
    assert code == KafkaError.INVALID_CONFIG and "cleanup.policy" in msg, msg
    code, _ = refused(lambda: incremental(
        a, ConfigResource.Type.TOPIC, "no-such-topic", ("retention.ms", AlterConfigOpType.SET, "1")))
    assert code == KafkaError.UNKNOWN_TOPIC_OR_PART
    c = describe(a, ConfigResource(ConfigResource.Type.TOPIC, name))
    assert c["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert c["cleanup.policy"].value == "delete"

    # Broker: read-only keys refused with INVALID_REQUEST, bad values with INVALID_CONFIG.
    code, msg = refused(lambda: incremental(
        a, ConfigResource.Type.BROKER, "1", ("cores", AlterConfigOpType.SET, "1")))
    assert code == KafkaError.INVALID_REQUEST and "cores" in msg, msg
    code, msg = refused(lambda: incremental(
        a, ConfigResource.Type.BROKER, "1", ("log.retention.bytes", AlterConfigOpType.SET, "-2")))
    assert code == KafkaError.INVALID_CONFIG and "log.retention.bytes" in msg, msg

    # A dynamic broker default applies to topics without their own value, and goes away again.
    incremental(a, ConfigResource.Type.BROKER, "1", ("log.retention.bytes", AlterConfigOpType.SET, "1000000"))
    c = describe(a, ConfigResource(ConfigResource.Type.TOPIC, name))
    assert c["retention.bytes"].value == "1000000"
    assert c["retention.bytes"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
    incremental(a, ConfigResource.Type.BROKER, "1", ("log.retention.bytes", AlterConfigOpType.DELETE, None))
    c = describe(a, ConfigResource(ConfigResource.Type.TOPIC, name))
    assert c["retention.bytes"].value == "-1"
    assert c["retention.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
