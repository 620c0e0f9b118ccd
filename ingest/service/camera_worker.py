"""One camera's worker thread: open the source, keep it open, and turn its frames into windows on a queue."""

from __future__ import annotations

import logging
import threading

from ingest.contract import Window
from ingest.pipeline.motion_gate import MotionGate
from ingest.pipeline.preprocess import FramePreprocessor
from ingest.pipeline.sampler import PtsSampler
from ingest.pipeline.timeline import Continuity, Timeline
from ingest.pipeline.windower import Windower
from ingest.service.backoff import Backoff
from ingest.service.config import CameraConfig
from ingest.service.drop_oldest_queue import DropOldestQueue
from ingest.service.metrics import IngestMetrics
from ingest.sources import DecodedFrame, SourceError, SourceStalledError, open_source

log = logging.getLogger(__name__)


class CameraWorker(threading.Thread):
    """Decodes one camera until stopped (or, for a file without loop, until its end).

    Failures of the camera never leave this thread: they are logged, counted, and answered with a reconnect after
    an exponential backoff. Every reconnect or timestamp jump starts a new window segment.
    """

    def __init__(
        self,
        config: CameraConfig,
        *,
        run_id: str,
        queue: DropOldestQueue[Window],
        metrics: IngestMetrics,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"camera-{config.camera_id}", daemon=True)
        self.config = config
        self.queue = queue
        self.metrics = metrics
        self.stop_event = stop
        self.up = False
        self.finished = threading.Event()
        self._camera = config.camera_id
        self._extra = {"camera_id": config.camera_id}
        self._timeline = Timeline(config.gap_tolerance_s)
        self._sampler: PtsSampler[DecodedFrame] = PtsSampler(config.fps)
        self._preprocess = FramePreprocessor(config.width, config.height, config.resize, config.color)
        self._windower = Windower(
            config.camera_id,
            length=config.window,
            stride=config.stride,
            fps=config.fps,
            run_id=run_id,
            codec=config.codec,
            quality=config.quality,
        )
        self._gate = MotionGate(config.motion_threshold)
        self._backoff = Backoff(config.reconnect_initial_s, config.reconnect_max_s)
        # A file read as fast as possible waits for its publisher; a live camera (or a file paced like one) cannot.
        self._wait_for_publisher = not config.source_spec().is_live and not config.realtime
        # Series touched for every decoded frame, resolved once: labels() takes a lock and a dict lookup.
        self._frames_decoded = metrics.frames_decoded.labels(config.camera_id)
        self._sampling_drops = metrics.frames_dropped.labels(config.camera_id, "sampling")

    def run(self) -> None:
        try:
            self._run()
        finally:
            self._set_up(False)
            self._drop_partial_window()
            self.finished.set()

    def _run(self) -> None:
        spec = self.config.source_spec()
        while not self.stop_event.is_set():
            try:
                for frame in open_source(spec, self.config.stall_timeout_s, self._decode_error):
                    if self.stop_event.is_set():
                        return
                    self._set_up(True)
                    self._handle(frame)
                if not spec.is_live and not self.config.loop:
                    log.info("camera %s: end of file", self._camera, extra=self._extra)
                    return
                if not spec.is_live:
                    self._break_segment("loop")
                    self._timeline.reset()
                    continue
                raise SourceError(f"{spec.url}: the stream ended")
            except SourceError as error:
                self._on_failure(error)
            except Exception as error:  # a bug or an unexpected library error must not kill the camera for good
                log.exception("camera %s: unexpected error", self._camera, extra=self._extra)
                self._on_failure(SourceError(f"unexpected {type(error).__name__}: {error}"))

    def _on_failure(self, error: SourceError) -> None:
        self._set_up(False)
        if isinstance(error, SourceStalledError):
            self.metrics.stalls.labels(self._camera).inc()
        self._break_segment("reconnect")
        self._timeline.reset()
        delay = self._backoff.next_delay()
        log.warning("camera %s: %s; reconnecting in %.1f s", self._camera, error, delay, extra=self._extra)
        if self.stop_event.wait(delay):
            return
        self.metrics.reconnects.labels(self._camera).inc()

    def _set_up(self, up: bool) -> None:
        if up == self.up:
            return
        self.up = up
        self.metrics.camera_up.labels(self._camera).set(1 if up else 0)
        if up:
            self._backoff.reset()
            log.info("camera %s: receiving frames", self._camera, extra=self._extra)

    def _decode_error(self, reason: str) -> None:
        self.metrics.decode_errors.labels(self._camera).inc()
        log.warning("camera %s: skipped undecodable data (%s)", self._camera, reason, extra=self._extra)

    def _break_segment(self, cause: str) -> None:
        segment = self._windower.segment
        self._drop_partial_window()
        if self._windower.segment != segment:
            self.metrics.discontinuities.labels(self._camera, cause).inc()

    def _drop_partial_window(self) -> None:
        """Forget the frames of the window in progress (and the sampler's held frame): no window will hold them."""
        lost = self._windower.break_segment()
        dropped_before = self._sampler.dropped
        self._sampler.reset()
        lost += self._sampler.dropped - dropped_before
        if lost:
            self.metrics.frames_dropped.labels(self._camera, "partial_window").inc(lost)

    def _handle(self, frame: DecodedFrame) -> None:
        self._frames_decoded.inc()
        time_s, continuity = self._timeline.observe(frame.pts_s, frame.arrival_s)
        if continuity is Continuity.DUPLICATE:
            self.metrics.frames_dropped.labels(self._camera, "duplicate").inc()
            return
        if continuity is not Continuity.CONTINUOUS:
            log.warning("camera %s: timestamp %s at %.3f s", self._camera, continuity.value, time_s, extra=self._extra)
            self._break_segment(continuity.value)
        dropped_before = self._sampler.dropped
        samples = self._sampler.offer(time_s, frame)
        if self._sampler.dropped > dropped_before:
            self._sampling_drops.inc(self._sampler.dropped - dropped_before)
        for sample_time, sample in samples:
            self._add_sample(sample_time, sample)

    def _add_sample(self, time_s: float, frame: DecodedFrame) -> None:
        image = self._preprocess.from_bgr(frame.as_array()) if frame.is_array else self._preprocess.from_av(frame.image)
        window = self._windower.add(time_s, frame.arrival_s, image)
        if window is None:
            return
        if not self._gate.passes(window):
            self.metrics.windows_dropped.labels(self._camera, "static").inc()
            return
        if self._wait_for_publisher:
            if not self.queue.put_waiting(window, self.stop_event):
                self.metrics.windows_dropped.labels(self._camera, "backpressure").inc()  # stopped while waiting
            self.metrics.queue_depth.labels(self._camera).set(len(self.queue))
            return
        dropped = self.queue.put(window)
        self.metrics.queue_depth.labels(self._camera).set(len(self.queue))
        if dropped is not None:
            self.metrics.windows_dropped.labels(self._camera, "backpressure").inc()
            log.warning(
                "camera %s: publisher behind, dropped the oldest queued window %s",
                self._camera,
                dropped.window_id,
                extra=self._extra,
            )
