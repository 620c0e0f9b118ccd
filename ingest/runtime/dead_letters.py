"""The one dead-letter writer: every consumer (trainer, serving stream mode) parks what it cannot read in
``<topic>.dlq`` through it, in the format of :mod:`ingest.contract.dead_letters`."""

from __future__ import annotations

import logging
from concurrent.futures import Future

from ingest.bus import Bus, BusError, BusProducer, Delivered, Record
from ingest.contract.dead_letters import dead_letter_headers
from ingest.contract.topics import dead_letter_topic

log = logging.getLogger(__name__)


class DeadLetters:
    """Sends unusable records of ``topic`` to ``<topic>.dlq`` with the reason and their position in headers.

    :meth:`flush` must succeed before the offsets of those records are committed: a parked message must be as durable
    as a processed one before its consumer may forget it. ``producer``: share the caller's (closed by the caller);
    by default the writer opens and closes its own.
    """

    def __init__(self, bus: Bus, topic: str, producer: BusProducer | None = None) -> None:
        self.topic = dead_letter_topic(topic)
        bus.create_topic(self.topic, 1)
        self._owns_producer = producer is None
        self._producer: BusProducer = producer if producer is not None else bus.producer()
        self._pending: list[tuple[Record, str, Future[Delivered]]] = []
        self.sent = 0

    def send(self, record: Record, reason: str) -> None:
        log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason)
        self._pending.append((record, reason, self._send(record, reason)))
        self.sent += 1

    def _send(self, record: Record, reason: str) -> Future[Delivered]:
        headers = dead_letter_headers(record, reason)
        return self._producer.send(self.topic, record.value, key=record.key, headers=headers)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Block until every parked message is acknowledged.

        A message the bus refused is sent again and stays pending, and :class:`BusError` is raised: the caller must
        not commit offsets past it until a later flush succeeds.
        """
        self._producer.flush(timeout_s)
        pending, self._pending = self._pending, []
        failures: list[str] = []
        for record, reason, future in pending:
            error = future.exception(timeout=timeout_s)
            if error is not None:
                failures.append(f"{record.position}: {error}")
                self._pending.append((record, reason, self._send(record, reason)))
        if failures:
            raise BusError(f"{len(failures)} message(s) could not be dead-lettered to {self.topic}: {failures[0]}")

    def close(self) -> None:
        if self._owns_producer:
            self._producer.close()
