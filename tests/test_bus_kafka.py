"""What only the Kafka bus does, against the real broker of tests/kafka_broker.py.

The semantics every bus shares (groups, takeover, resume after commit) are in tests/test_bus_semantics.py.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from ingest.bus import (
    BusError,
    BusUnavailableError,
    MessageTooLargeError,
    Record,
    TopicPartition,
    UnknownTopicError,
)
from ingest.bus.kafka_bus import RECORD_OVERHEAD_BYTES, KafkaBus
from ingest.contract import DEFAULT_MAX_MESSAGE_BYTES

pytestmark = pytest.mark.kafka

# The broker's message.max.bytes, left at Kafka's default by scripts/kafka.sh.
BROKER_MAX_MESSAGE_BYTES = 1_048_588


@pytest.fixture
def bus(kafka_bootstrap: str) -> Iterator[KafkaBus]:
    with KafkaBus([kafka_bootstrap]) as kafka:
        yield kafka


def fresh_topic(bus: KafkaBus, partitions: int = 1) -> str:
    topic = f"test.kafka.{uuid.uuid4().hex[:12]}"
    bus.create_topic(topic, partitions)
    return topic


def test_value_over_the_producer_limit_is_refused_at_once_naming_both_sizes(bus: KafkaBus) -> None:
    topic = fresh_topic(bus)
    with bus.producer() as producer:
        with pytest.raises(MessageTooLargeError) as refused:
            producer.send(topic, b"x" * (DEFAULT_MAX_MESSAGE_BYTES + 1), key=b"cam-1")
        assert f"{DEFAULT_MAX_MESSAGE_BYTES + 1} bytes" in str(refused.value)
        assert f"{DEFAULT_MAX_MESSAGE_BYTES} bytes" in str(refused.value)
        # The largest value the contract allows fits a broker left at its defaults, with a key and headers.
        producer.send(topic, b"x" * DEFAULT_MAX_MESSAGE_BYTES, key=b"cam-1", headers=(("h", b"v" * 100),)).result(30)

    with bus.producer(max_message_bytes=1000) as producer, pytest.raises(MessageTooLargeError, match="1001 bytes"):
        producer.send(topic, b"x" * 1001)
    with bus.consumer([topic], group_id=None) as consumer:
        assert consumer.end_offsets([TopicPartition(topic, 0)]) == {TopicPartition(topic, 0): 1}


def test_key_and_headers_over_the_request_limit_are_refused_at_once(bus: KafkaBus) -> None:
    topic = fresh_topic(bus)
    with bus.producer() as producer, pytest.raises(MessageTooLargeError, match="request limit"):
        producer.send(topic, b"x" * DEFAULT_MAX_MESSAGE_BYTES, key=b"k" * (RECORD_OVERHEAD_BYTES + 1))


def test_message_over_the_broker_limit_fails_on_its_future_and_the_producer_goes_on(bus: KafkaBus) -> None:
    topic = fresh_topic(bus)
    size = 2 * BROKER_MAX_MESSAGE_BYTES
    with bus.producer(max_message_bytes=4 * BROKER_MAX_MESSAGE_BYTES) as producer:
        future = producer.send(topic, b"x" * size, key=b"cam-1")
        with pytest.raises(MessageTooLargeError, match=f"{size} bytes"):
            future.result(timeout=30)
        # One refused message must not break the producer (kafka-python's idempotent producer would be dead now).
        delivered = producer.send(topic, b"small", key=b"cam-1").result(timeout=30)
    assert delivered.offset == 0, "the refused message was stored after all"


def test_keys_headers_and_positions_round_trip(bus: KafkaBus) -> None:
    topic = fresh_topic(bus, 4)
    sent = [
        (b"cam-1", b"first", (("content-type", b"application/x-streamssl-window"), ("schema", b"1"))),
        (b"cam-2", b"second", (("dup", b"a"), ("dup", b"b"), ("empty", b""))),
        (None, b"keyless", ()),
        (b"cam-1", b"", (("only", b"\x00\xff"),)),
    ]
    with bus.producer() as producer:
        futures = [producer.send(topic, value, key=key, headers=headers) for key, value, headers in sent]
        delivered = [future.result(timeout=30) for future in futures]

    with bus.consumer([topic], group_id=None, start="earliest") as consumer:
        records: list[Record] = []
        deadline = time.monotonic() + 30
        while len(records) < len(sent) and time.monotonic() < deadline:
            records.extend(consumer.poll(0.5))
    by_position = {(record.partition, record.offset): record for record in records}
    assert len(by_position) == len(sent)
    for (key, value, headers), position in zip(sent, delivered, strict=True):
        record = by_position[(position.partition, position.offset)]
        assert (record.topic, record.key, record.value, record.headers) == (topic, key, value, headers)
        assert abs(record.timestamp_ms / 1000 - time.time()) < 120
    assert by_position[(delivered[1].partition, delivered[1].offset)].header("dup") == b"a"
    assert delivered[0].partition == delivered[3].partition, "one key went to two partitions"
    assert delivered[3].offset > delivered[0].offset


def test_consumer_without_group_reads_every_partition_from_start_and_cannot_commit(bus: KafkaBus) -> None:
    topic = fresh_topic(bus, 3)
    with bus.producer() as producer:
        for index in range(30):
            producer.send(topic, b"old-%d" % index, key=b"cam-%d" % (index % 5))
        producer.flush(30)

    with (
        bus.consumer([topic], group_id=None, start="earliest") as earliest,
        bus.consumer([topic], group_id=None, start="latest") as latest,
    ):
        partitions = {TopicPartition(topic, index) for index in range(3)}
        assert earliest.assignment() == latest.assignment() == partitions
        with bus.producer() as producer:
            producer.send(topic, b"new", key=b"cam-0").result(timeout=30)

        old: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(old) < 31 and time.monotonic() < deadline:
            old.extend(record.value for record in earliest.poll(0.5))
        assert sorted(old) == sorted([b"old-%d" % index for index in range(30)] + [b"new"])
        new: list[bytes] = []
        while not new and time.monotonic() < deadline:
            new.extend(record.value for record in latest.poll(0.5))
        new.extend(record.value for record in latest.poll(0.5))
        assert new == [b"new"], "a consumer starting at 'latest' must read what was sent after it was created"

        assert earliest.committed(TopicPartition(topic, 0)) is None
        with pytest.raises(BusError, match="without a group"):
            earliest.commit({TopicPartition(topic, 0): 1})
        assert sum(earliest.end_offsets(sorted(partitions)).values()) == 31


def test_commit_refuses_partitions_this_member_does_not_own(bus: KafkaBus) -> None:
    topic = fresh_topic(bus, 1)
    with bus.consumer([topic], group_id=f"group-{uuid.uuid4().hex[:8]}") as consumer:
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.2)
        assert consumer.assignment() == {TopicPartition(topic, 0)}
        with pytest.raises(BusError, match="not assigned"):
            consumer.commit({TopicPartition(topic, 1): 0})
        with pytest.raises(ValueError, match="negative"):
            consumer.commit({TopicPartition(topic, 0): -1})
        consumer.commit({TopicPartition(topic, 0): 0})
        assert consumer.committed(TopicPartition(topic, 0)) == 0


def test_unknown_topics_are_reported_not_waited_for(bus: KafkaBus) -> None:
    missing = f"test.missing.{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    with pytest.raises(UnknownTopicError, match=missing):
        bus.partitions(missing)
    with bus.producer() as producer, pytest.raises(UnknownTopicError, match=missing):
        producer.send(missing, b"x")
    with pytest.raises(UnknownTopicError, match=missing):
        bus.consumer([missing], group_id=None)
    assert time.monotonic() - started < 10


def test_an_existing_topic_is_left_as_it_is(bus: KafkaBus) -> None:
    topic = fresh_topic(bus, 2)
    bus.create_topic(topic, 5)
    assert bus.partitions(topic) == 2


def test_dead_address_is_unavailable_within_the_connect_timeout() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the socket is closed
    address = f"127.0.0.1:{port}"
    with KafkaBus([address], connect_timeout_s=2.0) as dead:
        for attempt in (
            lambda: dead.create_topic("anything"),
            lambda: dead.producer(),
            lambda: dead.consumer(["anything"], group_id="group"),
        ):
            started = time.monotonic()
            with pytest.raises(BusUnavailableError, match=address):
                attempt()
            assert time.monotonic() - started < 10
