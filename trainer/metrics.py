"""Prometheus metrics of the trainer (prefix ``streamssl_trainer_``), on one registry per trainer instance."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# A CPU step of a small model takes ~0.1-1 s, a GPU step milliseconds.
_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CHECKPOINT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

TASKS = ("total", "future", "order", "pixel")
SKIP_REASONS = ("unusable", "decode_error")
GATE_DECISIONS = ("promoted", "refused")
EXPORT_RESULTS = ("published", "parity_failed", "failed", "skipped_busy")


class TrainerMetrics:
    """All trainer metrics, registered on ``registry`` (a private one per trainer in tests)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "streamssl_trainer_"
        self.loss = Gauge(f"{p}loss", "Training loss of the last step, by task", ["task"], registry=registry)
        self.train_metric = Gauge(
            f"{p}train_metric",
            "Accuracy-like numbers of the last training batch (future_top1, order_accuracy, pixel_psnr_db, "
            "copy_last_psnr_db)",
            ["metric"],
            registry=registry,
        )
        self.steps = Counter(f"{p}steps", "Optimiser steps taken by this process", registry=registry)
        self.step = Gauge(f"{p}step", "Current training step (restored from checkpoints)", registry=registry)
        self.learning_rate = Gauge(f"{p}learning_rate", "Learning rate of the last step", registry=registry)
        self.windows = Counter(
            f"{p}windows", "Windows trained on, by origin (fresh, replay)", ["origin"], registry=registry
        )
        self.windows_per_second = Gauge(
            f"{p}windows_per_second", "Windows trained per second over the last progress interval", registry=registry
        )
        self.step_seconds = Histogram(
            f"{p}step_seconds",
            "Wall time of one training step, data wait included",
            buckets=_STEP_BUCKETS,
            registry=registry,
        )
        self.data_wait_seconds = Counter(
            f"{p}data_wait_seconds", "Time the training loop waited for batches", registry=registry
        )
        self.data_wait_fraction = Gauge(
            f"{p}data_wait_fraction",
            "Share of wall time spent waiting for data over the last progress interval",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            f"{p}consumer_lag_records",
            "Records on the partition not yet taken by the trainer",
            ["partition"],
            registry=registry,
        )
        self.consumer_restarts = Counter(
            f"{p}consumer_restarts",
            "Bus consumers closed and opened again because they had not joined their group in time",
            registry=registry,
        )
        self.records_redelivered = Counter(
            f"{p}records_redelivered",
            "Records delivered again by the bus and dropped because they were already taken",
            registry=registry,
        )
        self.skipped = Counter(
            f"{p}skipped_windows",
            "Windows not trained on, by reason (unusable: valid but not for this model; decode_error)",
            ["reason"],
            registry=registry,
        )
        self.dead_letters = Counter(f"{p}dead_letters", "Messages sent to the dead-letter topic", registry=registry)
        self.replay_windows = Gauge(f"{p}replay_windows", "Windows in the replay buffer", registry=registry)
        self.replay_bytes = Gauge(f"{p}replay_bytes", "Encoded bytes in the replay buffer", registry=registry)
        self.replay_fill = Gauge(
            f"{p}replay_fill_ratio", "Replay buffer fill: the larger of count/limit and bytes/limit", registry=registry
        )
        self.heldout_windows = Gauge(f"{p}heldout_windows", "Held-out evaluation windows", registry=registry)
        self.checkpoints = Counter(f"{p}checkpoints", "Checkpoints written", registry=registry)
        self.checkpoint_seconds = Histogram(
            f"{p}checkpoint_seconds", "Time to write one checkpoint", buckets=_CHECKPOINT_BUCKETS, registry=registry
        )
        self.checkpoint_load_failures = Counter(
            f"{p}checkpoint_load_failures", "Checkpoint files found invalid at start-up", registry=registry
        )
        self._last_checkpoint = time.monotonic()
        self.checkpoint_age = Gauge(
            f"{p}checkpoint_age_seconds", "Seconds since the last durable checkpoint (or the start)", registry=registry
        )
        self.checkpoint_age.set_function(lambda: time.monotonic() - self._last_checkpoint)
        self.exports = Counter(
            f"{p}exports",
            "ONNX exports, by result (published, parity_failed, failed, skipped_busy)",
            ["result"],
            registry=registry,
        )
        self.last_exported_version = Gauge(
            f"{p}last_exported_version", "Registry version last published by this trainer (0: none)", registry=registry
        )
        self.production_version = Gauge(
            f"{p}production_version", "Registry version production points at (0: none)", registry=registry
        )
        self.gate_decisions = Counter(
            f"{p}gate_decisions", "Promotion gate decisions (promoted, refused)", ["decision"], registry=registry
        )
        self.eval_metric = Gauge(
            f"{p}eval_metric", "Held-out evaluation of the EMA model, by metric", ["metric"], registry=registry
        )
        self.embedding_std = Gauge(
            f"{p}embedding_std",
            "Mean per-dimension std of the batch's L2-normalised embeddings (collapse: 0; ideal 1/sqrt(D))",
            registry=registry,
        )
        self.embedding_rank = Gauge(
            f"{p}embedding_effective_rank", "Effective rank of the batch's embeddings (collapse: 1)", registry=registry
        )
        for task in TASKS:
            self.loss.labels(task)
        for origin in ("fresh", "replay"):
            self.windows.labels(origin)
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)
        for decision in GATE_DECISIONS:
            self.gate_decisions.labels(decision)
        for result in EXPORT_RESULTS:
            self.exports.labels(result)

    def checkpoint_written(self) -> None:
        self._last_checkpoint = time.monotonic()
        self.checkpoints.inc()
