"""The bus interface: topics of keyed byte messages, partitioned by key, read by consumer groups.

Two implementations share it: :mod:`ingest.bus.kafka_bus` (Apache Kafka through kafka-python) and
:mod:`ingest.bus.embedded` (in-process, for the demo and unit tests). Semantics both honour:

* A message's partition is chosen from its key, so all messages of one key (one camera) stay in order.
* :meth:`BusProducer.send` returns a :class:`concurrent.futures.Future` that resolves to the message's
  :class:`Delivered` position once the bus acknowledged it (Kafka: ``acks=all``), or raises its error.
* Consumers of one group split a topic's partitions between them and take over a member's partitions when it leaves.
* Offsets are committed only by :meth:`BusConsumer.commit`, with the *next* offset to read, never automatically:
  a restarted group member resumes exactly after the last committed offset.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Literal, Self

from ingest.contract.records import Delivered, Headers, Record, TopicPartition

StartPosition = Literal["earliest", "latest"]


class BusError(Exception):
    """Root of the bus errors."""


class BusUnavailableError(BusError):
    """The bus could not be reached or did not answer in time."""


class MessageTooLargeError(BusError):
    """A message exceeds the producer's or the broker's maximum message size; it was not sent."""


class UnknownTopicError(BusError):
    """A topic that does not exist was used where it must exist."""


class _ClosedOnExit(abc.ABC):
    """``with`` closes it, whatever happened inside."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what it holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class BusProducer(_ClosedOnExit):
    """Sends messages; use as a context manager so pending messages are flushed on exit."""

    @abc.abstractmethod
    def send(self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()) -> Future[Delivered]:
        """Queue one message. Raises :class:`MessageTooLargeError` at once if it can never fit."""

    @abc.abstractmethod
    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every queued message is acknowledged or failed."""

    @abc.abstractmethod
    def close(self, timeout_s: float | None = None) -> None:
        """Flush, then release the connection."""


class BusConsumer(_ClosedOnExit):
    """Reads messages of its subscribed topics from the partitions its group assigned to it."""

    @abc.abstractmethod
    def poll(self, timeout_s: float, max_records: int | None = None) -> list[Record]:
        """Return the next records (possibly none after ``timeout_s``), in offset order per partition."""

    @abc.abstractmethod
    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit, for each partition, the offset of the next record to read (last processed + 1)."""

    @abc.abstractmethod
    def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset for ``partition``, or None if nothing was committed."""

    @abc.abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """The partitions currently assigned to this consumer."""

    @abc.abstractmethod
    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make ``offset`` the next record read from ``partition`` (e.g. to resume from a checkpoint's offsets).

        Raises :class:`BusError` if ``partition`` is not assigned to this consumer now. A rebalance resets positions
        to the group's committed offsets, as it always does.
        """

    @abc.abstractmethod
    def pause(self, partitions: Collection[TopicPartition]) -> None:
        """Stop :meth:`poll` returning records of ``partitions`` (positions are kept) until :meth:`resume`.

        The way to apply back-pressure and stay in the group: keep polling while paused. A member that stops polling
        holds up every rebalance of its group (until Kafka's max poll interval). Partitions not assigned are
        ignored; a rebalance resumes everything, as in Kafka.
        """

    @abc.abstractmethod
    def resume(self, partitions: Collection[TopicPartition]) -> None:
        """Undo :meth:`pause` for ``partitions`` (those not assigned are ignored)."""

    @abc.abstractmethod
    def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset the next produced record of each partition will get (for lag)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Leave the group (its partitions go to the other members) without committing anything."""


class Bus(_ClosedOnExit):
    """A connection to one bus; hands out producers and consumers."""

    @abc.abstractmethod
    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create ``name`` with ``partitions`` partitions; an existing topic is left as it is."""

    @abc.abstractmethod
    def partitions(self, topic: str) -> int:
        """The number of partitions of ``topic``; :class:`UnknownTopicError` if it does not exist."""

    @abc.abstractmethod
    def producer(self, *, max_message_bytes: int | None = None) -> BusProducer:
        """A producer; ``max_message_bytes`` (None: the bus default) bounds one message's value."""

    @abc.abstractmethod
    def consumer(
        self, topics: Sequence[str], *, group_id: str | None, start: StartPosition = "earliest"
    ) -> BusConsumer:
        """A consumer of ``topics``. With a ``group_id`` it joins that group and resumes from the group's
        committed offsets (``start`` applies where none exist); without one it reads every partition from ``start``
        and cannot commit."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the bus holds (admin connections); producers and consumers are closed by their owners."""
