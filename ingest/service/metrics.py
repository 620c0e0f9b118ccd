"""Prometheus metrics of the ingest service (prefix ``streamssl_ingest_``, label ``camera`` where it makes sense)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Publish latency is broker round-trip time: milliseconds on a LAN, seconds when the broker struggles.
_PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Capture-to-publish includes waiting for a whole window (T / fps seconds) plus queueing.
_CAPTURE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class IngestMetrics:
    """All ingest metrics, registered on one registry (a private one per service instance in tests)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        prefix = "streamssl_ingest_"
        camera = ["camera"]
        self.frames_decoded = Counter(f"{prefix}frames_decoded", "Frames decoded", camera, registry=registry)
        self.frames_dropped = Counter(
            f"{prefix}frames_dropped",
            "Decoded frames not in any window, by reason (sampling, duplicate, partial_window)",
            ["camera", "reason"],
            registry=registry,
        )
        self.windows_published = Counter(
            f"{prefix}windows_published", "Windows acknowledged by the bus", camera, registry=registry
        )
        self.windows_dropped = Counter(
            f"{prefix}windows_dropped",
            "Windows not published, by reason (backpressure, oversize, static, publish_error)",
            ["camera", "reason"],
            registry=registry,
        )
        self.decode_errors = Counter(
            f"{prefix}decode_errors",
            "Packets or frames that did not decode and were skipped",
            camera,
            registry=registry,
        )
        self.reconnects = Counter(
            f"{prefix}reconnects", "Reconnects after an error, a stall or a dead camera", camera, registry=registry
        )
        self.stalls = Counter(
            f"{prefix}stalls", "Stall watchdog firings (connection open, no frames)", camera, registry=registry
        )
        self.discontinuities = Counter(
            f"{prefix}discontinuities",
            "New window segments, by cause (reconnect, jump_backward, jump_forward, loop)",
            ["camera", "cause"],
            registry=registry,
        )
        self.camera_up = Gauge(f"{prefix}camera_up", "1 while the camera delivers frames", camera, registry=registry)
        self.queue_depth = Gauge(
            f"{prefix}queue_depth", "Windows waiting between decoding and publishing", camera, registry=registry
        )
        self.jpeg_quality_steps = Counter(
            f"{prefix}jpeg_quality_steps",
            "JPEG quality steps taken to fit windows under the maximum message size",
            camera,
            registry=registry,
        )
        self.publish_latency = Histogram(
            f"{prefix}publish_latency_seconds",
            "Time from send to the bus's acknowledgement",
            camera,
            buckets=_PUBLISH_BUCKETS,
            registry=registry,
        )
        self.capture_to_publish = Histogram(
            f"{prefix}capture_to_publish_seconds",
            "Time from the capture of a window's first frame to its acknowledgement",
            camera,
            buckets=_CAPTURE_BUCKETS,
            registry=registry,
        )
        self.bytes_published = Counter(
            f"{prefix}published_bytes", "Bytes of windows acknowledged by the bus", camera, registry=registry
        )

    def for_camera(self, camera_id: str) -> None:
        """Create every per-camera series at zero, so dashboards show a camera before its first event."""
        for metric in (
            self.frames_decoded,
            self.windows_published,
            self.decode_errors,
            self.reconnects,
            self.stalls,
            self.camera_up,
            self.queue_depth,
            self.jpeg_quality_steps,
            self.publish_latency,
            self.capture_to_publish,
            self.bytes_published,
        ):
            metric.labels(camera_id)
        for reason in ("sampling", "duplicate", "partial_window"):
            self.frames_dropped.labels(camera_id, reason)
        for reason in ("backpressure", "oversize", "static", "publish_error"):
            self.windows_dropped.labels(camera_id, reason)
        for cause in ("reconnect", "jump_backward", "jump_forward", "loop"):
            self.discontinuities.labels(camera_id, cause)
