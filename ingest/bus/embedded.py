"""An in-process bus with Kafka's semantics, for the one-command demo and for unit tests.

It is single-process and not durable: every producer and consumer must live in the same Python process, and all
messages and committed offsets are lost when it exits. Within that scope it behaves like the Kafka bus: topics with
partitions chosen by key, consumer groups that split partitions between members and rebalance when one joins or
leaves, and offsets committed only when the caller says so (after a rebalance a member resumes from the committed
offsets, so uncommitted records are delivered again: at-least-once, as with Kafka).
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import ClassVar

from ingest.bus.base import (
    Bus,
    BusConsumer,
    BusError,
    BusProducer,
    Delivered,
    Headers,
    MessageTooLargeError,
    Record,
    StartPosition,
    TopicPartition,
    UnknownTopicError,
)
from ingest.contract import (
    DEFAULT_MAX_MESSAGE_BYTES,  # the same limit as Kafka's producer: what one takes, so does the other
)


def partition_for_key(key: bytes | None, partitions: int, fallback: int) -> int:
    """Stable partition of a key; keyless messages go to ``fallback`` (round-robin by the caller)."""
    if key is None:
        return fallback % partitions
    return zlib.crc32(key) % partitions


@dataclass
class _Group:
    members: dict[int, EmbeddedConsumer] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)


class EmbeddedBroker:
    """The shared state of one embedded bus: topics, partitions, groups. Thread-safe."""

    _registry: ClassVar[dict[str, EmbeddedBroker]] = {}
    _registry_lock = threading.Lock()

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._topics: dict[str, list[list[Record]]] = {}
        self._groups: dict[str, _Group] = {}
        self._member_ids = itertools.count()
        self._round_robin = itertools.count()

    @classmethod
    def named(cls, name: str) -> EmbeddedBroker:
        """The process-wide broker called ``name`` (``embedded://name``), created on first use."""
        with cls._registry_lock:
            broker = cls._registry.get(name)
            if broker is None:
                broker = cls._registry[name] = cls()
            return broker

    @classmethod
    def forget(cls, name: str) -> None:
        """Drop the broker called ``name`` and everything on it (tests use this for isolation)."""
        with cls._registry_lock:
            cls._registry.pop(name, None)

    # --- topics -----------------------------------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int) -> None:
        if partitions < 1:
            raise ValueError(f"a topic needs at least one partition, got {partitions}")
        with self._changed:
            if name in self._topics:
                return
            self._topics[name] = [[] for _ in range(partitions)]
            for group in self._groups.values():
                self._rebalance(group)
            self._changed.notify_all()

    def partitions(self, topic: str) -> int:
        with self._changed:
            if topic not in self._topics:
                raise UnknownTopicError(f"topic {topic!r} does not exist on the embedded bus")
            return len(self._topics[topic])

    def append(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> Delivered:
        with self._changed:
            partitions = self._topics.get(topic)
            if partitions is None:
                raise UnknownTopicError(f"topic {topic!r} does not exist on the embedded bus; create it first")
            index = partition_for_key(key, len(partitions), next(self._round_robin))
            log = partitions[index]
            record = Record(topic, index, len(log), key, value, headers, time.time_ns() // 1_000_000)
            log.append(record)
            self._changed.notify_all()
            return Delivered(topic, index, record.offset)

    def seek(self, consumer: EmbeddedConsumer, partition: TopicPartition, offset: int) -> None:
        with self._changed:
            if partition not in consumer.assigned:
                raise BusError(f"cannot seek {partition}: not assigned to this consumer")
            if not 0 <= offset <= len(self._topics[partition.topic][partition.partition]):
                raise ValueError(f"offset {offset} is outside {partition}")
            consumer.assigned[partition] = offset

    def pause(self, consumer: EmbeddedConsumer, partitions: Collection[TopicPartition], paused: bool) -> None:
        with self._changed:
            chosen = {partition for partition in partitions if partition in consumer.assigned}
            consumer.paused = consumer.paused | chosen if paused else consumer.paused - chosen
            self._changed.notify_all()

    def end_offset(self, partition: TopicPartition) -> int:
        with self._changed:
            return len(self._topics[partition.topic][partition.partition])

    # --- groups -----------------------------------------------------------------------------------------------
    def join(self, group_id: str, consumer: EmbeddedConsumer) -> int:
        with self._changed:
            member_id = next(self._member_ids)
            group = self._groups.setdefault(group_id, _Group())
            group.members[member_id] = consumer
            self._rebalance(group)
            return member_id

    def leave(self, group_id: str, member_id: int) -> None:
        with self._changed:
            group = self._groups[group_id]
            group.members.pop(member_id, None)
            self._rebalance(group)
            self._changed.notify_all()

    def commit(self, group_id: str, member_id: int, offsets: Mapping[TopicPartition, int]) -> None:
        with self._changed:
            group = self._groups[group_id]
            member = group.members.get(member_id)
            if member is None:
                raise BusError(f"consumer left group {group_id!r}; it cannot commit")
            foreign = [tp for tp in offsets if tp not in member.assigned]
            if foreign:
                # Kafka refuses commits for partitions a member no longer owns (CommitFailedError).
                raise BusError(f"cannot commit {foreign}: not assigned to this member of group {group_id!r}")
            for partition, offset in offsets.items():
                if offset < 0 or offset > len(self._topics[partition.topic][partition.partition]):
                    raise ValueError(f"offset {offset} is outside {partition}")
                group.committed[partition] = offset

    def committed(self, group_id: str, partition: TopicPartition) -> int | None:
        with self._changed:
            group = self._groups.get(group_id)
            return None if group is None else group.committed.get(partition)

    def _rebalance(self, group: _Group) -> None:
        """Round-robin the group's subscribed partitions over its members; positions restart at committed offsets."""
        members = sorted(group.members.items())
        topics = sorted({topic for _, member in members for topic in member.topics if topic in self._topics})
        for _, member in members:
            member.assigned = {}
            member.paused = set()
        for topic in topics:
            subscribers = [member for _, member in members if topic in member.topics]
            for index in range(len(self._topics[topic])):
                partition = TopicPartition(topic, index)
                owner = subscribers[index % len(subscribers)]
                start = group.committed.get(partition)
                if start is None:
                    start = 0 if owner.start == "earliest" else len(self._topics[topic][index])
                owner.assigned[partition] = start

    # --- reading ----------------------------------------------------------------------------------------------
    def fetch(self, consumer: EmbeddedConsumer, timeout_s: float, max_records: int | None) -> list[Record]:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                records = self._take(consumer, max_records)
                remaining = deadline - time.monotonic()
                if records or remaining <= 0 or consumer.closed:
                    return records
                self._changed.wait(remaining)

    def _take(self, consumer: EmbeddedConsumer, max_records: int | None) -> list[Record]:
        records: list[Record] = []
        for partition in sorted(consumer.assigned):
            if partition in consumer.paused:
                continue
            position = consumer.assigned[partition]
            log = self._topics[partition.topic][partition.partition]
            budget = None if max_records is None else max_records - len(records)
            if budget is not None and budget <= 0:
                break
            batch = log[position:] if budget is None else log[position : position + budget]
            records.extend(batch)
            consumer.assigned[partition] = position + len(batch)
        return records


class EmbeddedProducer(BusProducer):
    def __init__(self, broker: EmbeddedBroker, max_message_bytes: int) -> None:
        self._broker = broker
        self._max_message_bytes = max_message_bytes

    def send(self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()) -> Future[Delivered]:
        if len(value) > self._max_message_bytes:
            raise MessageTooLargeError(
                f"message of {len(value)} bytes exceeds the maximum message size of {self._max_message_bytes} bytes"
            )
        future: Future[Delivered] = Future()
        future.set_result(self._broker.append(topic, key, bytes(value), tuple(headers)))
        return future

    def flush(self, timeout_s: float | None = None) -> None:
        """Nothing to do: the embedded bus acknowledges synchronously."""

    def close(self, timeout_s: float | None = None) -> None:
        """Nothing to release."""


class EmbeddedConsumer(BusConsumer):
    def __init__(
        self, broker: EmbeddedBroker, topics: Sequence[str], group_id: str | None, start: StartPosition
    ) -> None:
        self._broker = broker
        self.topics = tuple(topics)
        self.start: StartPosition = start
        self.group_id = group_id
        self.closed = False
        # partition -> position (offset of the next record to hand out); written by the broker under its lock.
        self.assigned: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        if group_id is None:
            self._member_id = -1
            for topic in self.topics:
                for index in range(broker.partitions(topic)):
                    partition = TopicPartition(topic, index)
                    self.assigned[partition] = 0 if start == "earliest" else broker.end_offset(partition)
        else:
            self._member_id = broker.join(group_id, self)

    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        if self.closed:
            raise BusError("poll on a closed consumer")
        return self._broker.fetch(self, timeout_s, max_records)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.group_id is None:
            raise BusError("a consumer without a group cannot commit offsets")
        self._broker.commit(self.group_id, self._member_id, offsets)

    def committed(self, partition: TopicPartition) -> int | None:
        return None if self.group_id is None else self._broker.committed(self.group_id, partition)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._broker.seek(self, partition, offset)

    def pause(self, partitions: Collection[TopicPartition]) -> None:
        self._broker.pause(self, partitions, paused=True)

    def resume(self, partitions: Collection[TopicPartition]) -> None:
        self._broker.pause(self, partitions, paused=False)

    def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {partition: self._broker.end_offset(partition) for partition in partitions}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.group_id is not None:
            self._broker.leave(self.group_id, self._member_id)


class EmbeddedBus(Bus):
    """A handle on an :class:`EmbeddedBroker`; ``EmbeddedBus("demo")`` and ``embedded://demo`` share one broker."""

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self.broker = EmbeddedBroker.named(name)

    def create_topic(self, name: str, partitions: int = 1) -> None:
        self.broker.create_topic(name, partitions)

    def partitions(self, topic: str) -> int:
        return self.broker.partitions(topic)

    def producer(self, *, max_message_bytes: int | None = None) -> EmbeddedProducer:
        return EmbeddedProducer(self.broker, max_message_bytes or DEFAULT_MAX_MESSAGE_BYTES)

    def consumer(
        self, topics: Sequence[str], *, group_id: str | None, start: StartPosition = "earliest"
    ) -> EmbeddedConsumer:
        return EmbeddedConsumer(self.broker, topics, group_id, start)

    def close(self) -> None:
        """Nothing to release: the broker lives as long as the process (see :meth:`EmbeddedBroker.forget`)."""
