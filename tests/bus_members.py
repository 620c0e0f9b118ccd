"""A consumer-group member that runs on its own thread, as a real service would (Kafka clients are not
thread-safe, so the consumer is created, polled, committed and closed on that thread only)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ingest.bus import Bus, Record, TopicPartition
from ingest.contract import Window
from ingest.contract.messages import window_from_record


class GroupMember(threading.Thread):
    def __init__(self, bus: Bus, topic: str, group_id: str, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.bus, self.topic, self.group_id = bus, topic, group_id
        self.received: list[tuple[Record, Window]] = []
        self.assigned: set[TopicPartition] = set()
        self.error: BaseException | None = None
        self._stop_requested = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            with self.bus.consumer([self.topic], group_id=self.group_id, start="earliest") as consumer:
                while not self._stop_requested.is_set():
                    records = consumer.poll(0.2)
                    batch = [(record, window_from_record(record)) for record in records]
                    if records:
                        # Commit after the work is done, as every StreamSSL consumer does.
                        consumer.commit({r.topic_partition: r.offset + 1 for r in records})
                    with self._lock:
                        self.received.extend(batch)
                        self.assigned = consumer.assignment()
        except BaseException as error:
            self.error = error

    def snapshot(self) -> tuple[list[tuple[Record, Window]], set[TopicPartition]]:
        with self._lock:
            return list(self.received), set(self.assigned)

    def stop(self) -> None:
        self._stop_requested.set()
        self.join(timeout=60)
        assert not self.is_alive(), f"{self.name} did not stop"
        if self.error is not None:
            raise AssertionError(f"{self.name} failed: {self.error!r}") from self.error


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting until {what}")
        time.sleep(0.1)
