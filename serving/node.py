"""The serving node: wires the model slot, registry watcher, batcher, HTTP API and stream mode, and stops them in order.

Start: load the first model (a pinned or production version that fails is fatal: the operator must see it; no
production version yet is not, the node waits unready), then the batcher, the watcher, stream mode and the HTTP
server. Stop: the HTTP server stops accepting and lets in-flight requests finish, stream mode finishes its batch and
commits, the batcher drains, the watcher stops.
"""

from __future__ import annotations

import logging

import cv2
from prometheus_client import CollectorRegistry

from ingest.bus import Bus, open_bus
from ingest.runtime.telemetry_server import TelemetryServer
from serving.anomaly import ScoreNormaliser
from serving.batcher import Batcher
from serving.config import ServingSettings
from serving.http_api import ApiContext, create_app
from serving.http_server import HttpServer
from serving.metrics import ServingMetrics
from serving.model import LoadedModel
from serving.model_loader import ModelLoader, SessionConfig
from serving.model_slot import ModelSlot
from serving.registry_watcher import RegistryWatcher
from serving.scene_store import SceneMemories, SceneSaver
from serving.stream_mode import StreamConfig, StreamWorker

log = logging.getLogger(__name__)


class ServingNode:
    def __init__(
        self, settings: ServingSettings, *, bus: Bus | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.metrics = ServingMetrics(registry)
        self.slot = ModelSlot(settings.model, on_swap=self._announce)
        self.loader = ModelLoader(
            settings.registry,
            settings.model,
            SessionConfig(
                providers=settings.provider_list,
                intra_op_threads=settings.threads,
                inter_op_threads=settings.inter_op_threads,
                spin_threads=settings.spin_threads,
                precision=settings.precision,
                single_thread_sessions=settings.adaptive_workers is not None,
            ),
        )
        self.watcher = RegistryWatcher(
            self.loader, self.slot, self.metrics, pinned=settings.version, interval_s=settings.reload_interval_s
        )
        self.batcher = Batcher(
            max_batch_size=settings.max_batch_size,
            max_queue_delay_s=settings.max_queue_delay_ms / 1000,
            max_queue=settings.max_queue,
            metrics=self.metrics,
            workers=settings.adaptive_workers or settings.instances,
            adaptive=settings.adaptive_workers is not None,
        )
        scenes = SceneMemories(settings.scene_cameras)
        self.normaliser = ScoreNormaliser(
            settings.score_warmup, settings.score_memory, settings.max_cameras, scenes=scenes
        )
        self.scene_saver: SceneSaver | None = None
        if settings.scene_memory_dir is not None:
            self.scene_saver = SceneSaver(scenes, settings.scene_memory_dir, settings.scene_save_interval_s)
        self._own_bus = bus is None and settings.stream_topic is not None
        self.bus = bus
        self.stream: StreamWorker | None = None
        self.http: HttpServer | None = None
        self.telemetry: TelemetryServer | None = None
        self.app = create_app(
            ApiContext(
                slot=self.slot,
                batcher=self.batcher,
                normaliser=self.normaliser,
                metrics=self.metrics,
                ready=self.ready,
                token=settings.read_token(),
                max_body_bytes=settings.max_body_bytes,
            )
        )

    def _announce(self, model: LoadedModel) -> None:
        self.metrics.model.info(
            {"model": model.name, "version": model.version, "provider": model.provider, "precision": model.precision}
        )
        self.metrics.model_loaded.set(1)

    def start(self) -> ServingNode:
        """Load the first model and start every part; on failure, stop what started and raise."""
        # A window's OpenCV work (JPEG decode, resizes, optical flow at 128×128) is too small to split across
        # threads: split, it cost 35 % more CPU per window on 2 cores (10.4 vs 7.6 ms of scoring). Parallelism comes
        # from the cameras instead. Process-wide: every OpenCV call in the process stays on its caller's thread.
        cv2.setNumThreads(1)
        try:
            self.watcher.check()
            if self.slot.current is None and self.watcher.last_error is not None:
                raise self.watcher.last_error
            if self.scene_saver is not None:
                self.scene_saver.start()  # before any window is scored, so restored memories are used
            self.batcher.start()
            self.watcher.start()
            if self.settings.stream_topic is not None:
                if self.bus is None:
                    self.bus = open_bus(self.settings.bus, self.settings.kafka)
                self.stream = StreamWorker(
                    self.bus,
                    StreamConfig(
                        input_topic=self.settings.stream_topic,
                        output_topic=self.settings.output_topic,
                        group_id=self.settings.consumer_group,
                        partitions=self.settings.partitions,
                        poll_records=self.settings.stream_poll_records,
                    ),
                    slot=self.slot,
                    batcher=self.batcher,
                    normaliser=self.normaliser,
                    metrics=self.metrics,
                )
                self.stream.start()
            if self.settings.http:
                self.http = HttpServer(
                    self.app, self.settings.host, self.settings.port, self.settings.drain_timeout_s
                ).start()
            if self.settings.metrics_port:
                self.telemetry = TelemetryServer(self.settings.metrics_port, self.metrics.registry, self.ready).start()
                log.info("metrics also on :%d/metrics (probes /healthz, /readyz)", self.telemetry.port)
        except BaseException:
            self.stop()
            raise
        return self

    def ready(self) -> tuple[bool, str]:
        model = self.slot.current
        if model is None:
            reason = self.watcher.last_error
            return False, f"no model loaded{f': {reason}' if reason else ' yet'}"
        if self.stream is not None and not self.stream.alive:
            return False, "stream mode stopped"
        return True, f"serving {model.describe()}"

    def stop(self) -> None:
        """Stop in dependency order; safe to call more than once and after a failed start."""
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self.stream is not None:
            self.stream.stop(self.settings.drain_timeout_s)
            self.stream = None
        self.batcher.stop(self.settings.drain_timeout_s)
        self.watcher.stop()
        if self.scene_saver is not None:
            self.scene_saver.stop()  # after the last window is scored, so none of what it taught is lost
        if self.telemetry is not None:
            self.telemetry.stop()
            self.telemetry = None
        if self._own_bus and self.bus is not None:
            self.bus.close()
            self.bus = None
        log.info("serving node stopped")
