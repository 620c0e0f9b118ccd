"""The ingest service: cameras in, windows out, until every camera is done or a stop is requested."""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import CollectorRegistry

from ingest.bus import Bus, BusError, BusProducer
from ingest.contract import Window
from ingest.service.camera_worker import CameraWorker
from ingest.service.config import IngestSettings
from ingest.service.drop_oldest_queue import DropOldestQueue
from ingest.service.metrics import IngestMetrics
from ingest.service.publisher import CameraPublisher

log = logging.getLogger(__name__)


class IngestService:
    """Runs one :class:`CameraWorker` and one :class:`CameraPublisher` per camera over one shared producer.

    Cameras are isolated: each has its own thread, queue and publisher, so a camera that stalls, floods or fails
    never holds up another.
    """

    def __init__(
        self, settings: IngestSettings, bus: Bus, registry: CollectorRegistry | None = None, run_id: str | None = None
    ) -> None:
        if not settings.cameras:
            raise ValueError("no camera configured: give --source and --camera-id, or cameras in --config")
        self.settings = settings
        self.bus = bus
        self.metrics = IngestMetrics(registry if registry is not None else CollectorRegistry())
        # Window ids must stay unique across restarts of the service: the run id is the start time in ms, in hex.
        self.run_id = run_id or f"{int(time.time() * 1000):x}"
        self.stop_requested = threading.Event()
        self.producer: BusProducer | None = None
        self.workers: list[CameraWorker] = []
        self.publishers: list[CameraPublisher] = []
        self._queues: list[DropOldestQueue[Window]] = []

    def start(self) -> None:
        for topic in sorted({camera.topic or self.settings.topic for camera in self.settings.cameras}):
            self.bus.create_topic(topic, self.settings.partitions)
        self.producer = self.bus.producer(max_message_bytes=self.settings.max_message_bytes)
        for camera in self.settings.cameras:
            self.metrics.for_camera(camera.camera_id)
            queue: DropOldestQueue[Window] = DropOldestQueue(camera.queue_windows)
            self._queues.append(queue)
            self.workers.append(
                CameraWorker(camera, run_id=self.run_id, queue=queue, metrics=self.metrics, stop=self.stop_requested)
            )
            self.publishers.append(
                CameraPublisher(
                    camera,
                    topic=camera.topic or self.settings.topic,
                    queue=queue,
                    producer=self.producer,
                    metrics=self.metrics,
                    max_message_bytes=self.settings.max_message_bytes,
                )
            )
        for thread in [*self.publishers, *self.workers]:
            thread.start()
        log.info("ingesting %d camera(s) to %s (run %s)", len(self.workers), self.settings.bus, self.run_id)

    def ready(self) -> tuple[bool, str]:
        """Ready when the producer is connected and a camera is up, or every camera that is down may be down."""
        if self.producer is None:
            return False, "producer not connected"
        down = [w.config.camera_id for w in self.workers if not w.up]
        if len(down) < len(self.workers):
            return True, f"{len(self.workers) - len(down)} of {len(self.workers)} cameras up"
        if all(w.config.allow_down for w in self.workers):
            return True, "no camera up; all are allowed to be down"
        return False, f"no camera up ({', '.join(down)})"

    def request_stop(self) -> None:
        self.stop_requested.set()

    def wait(self, poll_s: float = 0.5, timeout_s: float | None = None) -> bool:
        """Block until every camera finished (files without loop), a stop is requested, or ``timeout_s`` passed;
        True if every camera finished."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.stop_requested.is_set() and not all(w.finished.is_set() for w in self.workers):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.stop_requested.wait(poll_s)
        return all(w.finished.is_set() for w in self.workers)

    def shutdown(self) -> int:
        """Stop the cameras, publish what is queued (up to the drain timeout), flush; return windows abandoned."""
        self.stop_requested.set()
        for worker in self.workers:
            worker.join(timeout=self.settings.drain_timeout_s)
        for queue in self._queues:
            queue.close()
        deadline = time.monotonic() + self.settings.drain_timeout_s
        for publisher in self.publishers:
            publisher.join(timeout=max(0.0, deadline - time.monotonic()))
        abandoned = 0
        for publisher, queue in zip(self.publishers, self._queues, strict=True):
            if publisher.is_alive():
                publisher.abandon()
                abandoned += len(queue)
                publisher.join(timeout=5)
        if abandoned:
            log.error(
                "shutdown: %d queued windows not published within %.0f s", abandoned, self.settings.drain_timeout_s
            )
        if self.producer is not None:
            try:
                self.producer.close(timeout_s=self.settings.drain_timeout_s)
            except BusError as error:  # e.g. the broker is down: what is still in the producer is lost, count it
                lost = self._count_unacknowledged(error)
                if not lost:
                    raise
                abandoned += lost
        log.info("ingest stopped; every acknowledged window is on the bus")
        return abandoned

    def _count_unacknowledged(self, error: BusError) -> int:
        """Count and log, per camera, the windows the producer still held when closing it failed."""
        log.error("shutdown: the producer did not deliver everything it was sent: %s", error)
        lost = 0
        for publisher in self.publishers:
            window_ids = publisher.unacknowledged()
            if window_ids:
                camera = publisher.config.camera_id
                self.metrics.windows_dropped.labels(camera, "publish_error").inc(len(window_ids))
                log.error(
                    "camera %s: %d windows sent but never acknowledged: %s",
                    camera,
                    len(window_ids),
                    ", ".join(window_ids),
                    extra={"camera_id": camera},
                )
                lost += len(window_ids)
        return lost
