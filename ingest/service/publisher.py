"""One camera's publisher thread: fit each queued window under the size limit and send it, counting every outcome."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future

from ingest.bus import BusError, BusProducer, Delivered, MessageTooLargeError
from ingest.contract import Window, WindowTooLargeError
from ingest.contract.messages import window_headers, window_key
from ingest.pipeline.size_control import fit_window
from ingest.service.config import CameraConfig
from ingest.service.drop_oldest_queue import DropOldestQueue
from ingest.service.metrics import IngestMetrics

log = logging.getLogger(__name__)

_POLL_S = 0.2


class CameraPublisher(threading.Thread):
    """Drains one camera's queue into the producer until the queue is closed and empty."""

    def __init__(
        self,
        config: CameraConfig,
        *,
        topic: str,
        queue: DropOldestQueue[Window],
        producer: BusProducer,
        metrics: IngestMetrics,
        max_message_bytes: int,
    ) -> None:
        super().__init__(name=f"publisher-{config.camera_id}", daemon=True)
        self.config = config
        self.topic = topic
        self.queue = queue
        self.producer = producer
        self.metrics = metrics
        self.max_message_bytes = max_message_bytes
        self._camera = config.camera_id
        self._extra = {"camera_id": config.camera_id}
        self._abandon = threading.Event()
        # Window ids sent but not yet acknowledged or failed, in send order: lost if the producer cannot deliver them.
        self._unacknowledged: dict[str, None] = {}
        self._lock = threading.Lock()

    def abandon(self) -> None:
        """Stop after the current window even if windows are still queued (shutdown deadline passed)."""
        self._abandon.set()

    def unacknowledged(self) -> list[str]:
        """Ids of the windows sent whose delivery is still undecided (neither acknowledged nor failed)."""
        with self._lock:
            return list(self._unacknowledged)

    def run(self) -> None:
        while not self._abandon.is_set():
            window = self.queue.get(_POLL_S)
            self.metrics.queue_depth.labels(self._camera).set(len(self.queue))
            if window is None:
                if self.queue.closed:
                    return
                continue
            self._publish(window)

    def _publish(self, window: Window) -> None:
        try:
            fitted = fit_window(
                window, self.max_message_bytes, min_quality=self.config.min_quality, step=self.config.quality_step
            )
        except WindowTooLargeError as error:
            self.metrics.windows_dropped.labels(self._camera, "oversize").inc()
            log.error("camera %s: dropped window %s: %s", self._camera, window.window_id, error, extra=self._extra)
            return
        if fitted.quality_steps:
            self.metrics.jpeg_quality_steps.labels(self._camera).inc(fitted.quality_steps)
            log.info(
                "camera %s: window %s sent at JPEG quality %d to fit %d bytes",
                self._camera,
                window.window_id,
                fitted.window.quality,
                self.max_message_bytes,
                extra=self._extra,
            )
        sent_at = time.monotonic()
        try:
            future = self.producer.send(
                self.topic, fitted.payload, key=window_key(window), headers=window_headers(fitted.window)
            )
        except MessageTooLargeError as error:
            self.metrics.windows_dropped.labels(self._camera, "oversize").inc()
            log.error("camera %s: bus refused window %s: %s", self._camera, window.window_id, error, extra=self._extra)
            return
        except BusError as error:
            self.metrics.windows_dropped.labels(self._camera, "publish_error").inc()
            log.error("camera %s: could not send %s: %s", self._camera, window.window_id, error, extra=self._extra)
            return
        with self._lock:
            self._unacknowledged[window.window_id] = None
        future.add_done_callback(lambda done: self._acknowledged(done, window, len(fitted.payload), sent_at))

    def _acknowledged(self, future: Future[Delivered], window: Window, size: int, sent_at: float) -> None:
        with self._lock:
            self._unacknowledged.pop(window.window_id, None)
        error = future.exception()
        if error is not None:
            reason = "oversize" if isinstance(error, MessageTooLargeError) else "publish_error"
            self.metrics.windows_dropped.labels(self._camera, reason).inc()
            log.error(
                "camera %s: window %s not delivered: %s", self._camera, window.window_id, error, extra=self._extra
            )
            return
        delivered = future.result()
        self.metrics.windows_published.labels(self._camera).inc()
        self.metrics.bytes_published.labels(self._camera).inc(size)
        self.metrics.publish_latency.labels(self._camera).observe(time.monotonic() - sent_at)
        self.metrics.capture_to_publish.labels(self._camera).observe(max(0.0, time.time() - window.capture_time_s[0]))
        log.debug(
            "window acknowledged",
            extra={
                **self._extra,
                "window_id": window.window_id,
                "sequence": window.sequence,
                "partition": delivered.partition,
                "offset": delivered.offset,
            },
        )
