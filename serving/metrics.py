"""Prometheus metrics of the serving node (prefix ``streamssl_serving_``; base units, ``_total`` counters, bounded
labels: the route template, never a raw path; the partition, never a window id)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

PREFIX = "streamssl_serving_"
# A request is queueing plus one batch: sub-millisecond for health, tens of milliseconds for a batch of images.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServingMetrics:
    """All serving metrics, on one registry (a private one per node, so tests can run several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}requests", "HTTP requests by route template and status code", ["endpoint", "status"], registry=r
        )
        self.request_duration = Histogram(
            f"{PREFIX}request_duration_seconds",
            "HTTP request duration, from the first byte read to the last byte sent",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(f"{PREFIX}in_flight_requests", "HTTP requests being handled", registry=r)
        self.queue_wait = Histogram(
            f"{PREFIX}queue_wait_seconds",
            "Time a request waited in the batching queue before its batch started",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(f"{PREFIX}queue_depth", "Requests waiting in the batching queue", registry=r)
        self.inference_duration = Histogram(
            f"{PREFIX}inference_duration_seconds",
            "Time to run one batch through onnxruntime (and score it, for windows)",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}batch_size",
            "Images (or windows) per inference batch",
            ["kind"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.model = Info(
            f"{PREFIX}model", "The model version being served, its execution provider and precision", registry=r
        )
        self.model_loaded = Gauge(f"{PREFIX}model_loaded", "1 while a model version is loaded and serving", registry=r)
        self.reloads = Counter(
            f"{PREFIX}model_reloads",
            "Attempts to load a new model version, by result (success, failure) and failure reason",
            ["result", "reason"],
            registry=r,
        )
        # z-scores per camera: an alert compares the share above 3 with the camera's usual share.
        self.anomaly_score = Histogram(
            f"{PREFIX}anomaly_score",
            "Anomaly z-score of each scored window (per-camera statistics, after warm-up), by camera",
            ["camera"],
            buckets=(-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0),
            registry=r,
        )
        self.stream_windows = Counter(
            f"{PREFIX}stream_windows",
            "Stream-mode input messages processed, by result (scored, dead_lettered)",
            ["result"],
            registry=r,
        )
        self.stream_lag = Gauge(
            f"{PREFIX}stream_lag_messages",
            "Stream-mode input messages not yet processed and committed, by partition",
            ["partition"],
            registry=r,
        )
        self.stream_inference_errors = Counter(
            f"{PREFIX}stream_inference_errors",
            "Stream-mode batches whose inference failed on the node's side (read again, never dead-lettered)",
            registry=r,
        )
        self.stream_publish_errors = Counter(
            f"{PREFIX}stream_publish_errors",
            "Stream-mode result batches not acknowledged by the bus (their windows are read again)",
            registry=r,
        )
        for kind in ("frames", "windows"):
            self.queue_wait.labels(kind)
            self.inference_duration.labels(kind)
            self.batch_size.labels(kind)
        self.reloads.labels("success", "")
        for reason in ("registry", "verify", "session", "validation"):
            self.reloads.labels("failure", reason)
        for result in ("scored", "dead_lettered"):
            self.stream_windows.labels(result)
