"""What a bus message is, whichever bus carries it: its position (topic, partition, offset), key, value and headers.

These types belong to the contract, not to one bus: the window messages, the dead letters and every service speak
them, and :mod:`ingest.bus` moves them.
"""

from __future__ import annotations

from dataclasses import dataclass

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, order=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True)
class Delivered:
    """Where an acknowledged message was stored."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Record:
    """A message as a consumer receives it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp_ms: int

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    @property
    def position(self) -> str:
        """``topic[partition]@offset``: where the record is, for error messages and headers."""
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def header(self, name: str) -> bytes | None:
        """The value of the first header called ``name``, or None."""
        return next((value for key, value in self.headers if key == name), None)
