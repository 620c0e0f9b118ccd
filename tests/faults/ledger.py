"""The ledger a fault test keeps: which window ids were produced, scored and dead-lettered, read back from the topics.

Not a test module. Reads go through the project's own bus (no consumer group, from the beginning), so what a test
counts is exactly what a downstream consumer would see.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field

from ingest.bus import KafkaSettings, open_bus
from ingest.contract.messages import header_from_record
from ingest.contract.records import Record


def read_topic(
    bus_url: str, topic: str, expected: int = 0, deadline_s: float = 20.0, kafka: KafkaSettings | None = None
) -> list[Record]:
    """Every record of ``topic``, polling until ``expected`` records arrived (or, with 0, until it goes quiet);
    ``kafka``: the client settings (a SASL/TLS login), default plaintext."""
    records: list[Record] = []
    end = time.monotonic() + deadline_s
    with open_bus(bus_url, kafka) as bus:
        bus.create_topic(topic, 8)  # idempotent; the service may create it after we start reading
        with bus.consumer([topic], group_id=None) as consumer:
            while time.monotonic() < end and (expected == 0 or len(records) < expected):
                batch = consumer.poll(1.0)
                records += batch
                if expected == 0 and not batch and records:
                    break
    return records


def produced_ids(records: list[Record]) -> Counter[str]:
    """Window ids of the windows on a window topic (header check only, frames are not decoded)."""
    return Counter(header_from_record(record).window_id for record in records)


def scored_ids(records: list[Record]) -> Counter[str]:
    """Window ids of serving's results on an output topic."""
    return Counter(json.loads(record.value)["window_id"] for record in records)


@dataclass
class Ledger:
    """Window ids produced vs scored vs dead-lettered; ``lost`` is what was produced and never came out."""

    produced: Counter[str]
    scored: Counter[str] = field(default_factory=Counter)
    dead_lettered: int = 0
    trained: int | None = None

    @property
    def lost(self) -> set[str]:
        return set(self.produced) - set(self.scored)

    @property
    def duplicates(self) -> int:
        """Extra copies of a window on the output (re-reads after a fault), counted, never hidden."""
        return sum(count - 1 for count in self.scored.values() if count > 1)

    @property
    def unexpected(self) -> set[str]:
        return set(self.scored) - set(self.produced)

    def line(self, name: str) -> str:
        trained = "" if self.trained is None else f" trained={self.trained}"
        return (
            f"LEDGER {name}: produced={len(self.produced)}{trained} scored={len(self.scored)} "
            f"duplicates={self.duplicates} dead_lettered={self.dead_lettered} lost={len(self.lost)}"
        )
