"""The dead-letter topic: where the trainer parks messages it cannot read, with the reason in a header."""

from __future__ import annotations

import logging
from concurrent.futures import Future

from ingest.bus import Bus, BusError, BusProducer, Delivered, Record
from ingest.contract.messages import HEADER_ERROR
from ingest.contract.topics import dead_letter_topic

log = logging.getLogger(__name__)

_MAX_REASON_BYTES = 4096


class DeadLetters:
    """Sends unreadable records to ``<topic>.dlq`` unchanged (key, value, headers) plus ``HEADER_ERROR``.

    :meth:`flush` must succeed before the offsets of those records are committed: a parked message is as durable as
    a trained one before the trainer may forget it.
    """

    def __init__(self, bus: Bus, topic: str) -> None:
        self.topic = dead_letter_topic(topic)
        bus.create_topic(self.topic, 1)
        self._producer: BusProducer = bus.producer()
        self._pending: list[tuple[Record, str, Future[Delivered]]] = []
        self.sent = 0

    def send(self, record: Record, reason: str) -> None:
        log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason)
        self._pending.append((record, reason, self._send(record, reason)))
        self.sent += 1

    def _send(self, record: Record, reason: str) -> Future[Delivered]:
        headers = (*record.headers, (HEADER_ERROR, reason.encode("utf-8")[:_MAX_REASON_BYTES]))
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
        self._producer.close()
