"""Settings of the serving node: the shared ones plus the registry, the HTTP API, batching, onnxruntime and stream mode.

Layered like every StreamSSL service (YAML < flags < ``STREAMSSL_*`` variables, see :mod:`ingest.runtime.settings`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ingest.contract.topics import DEFAULT_RESULTS_TOPIC, validate_topic
from ingest.registry import DEFAULT_MODEL_NAME
from ingest.runtime.settings import CommonSettings

# Short names an operator types, and the onnxruntime execution providers they stand for, in preference order.
PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_VERSION = re.compile(r"[1-9][0-9]{0,8}")


class ServingSettings(CommonSettings):
    registry: Path = Field(description="model registry directory (shared with the trainer)")
    model: str = Field(DEFAULT_MODEL_NAME, min_length=1, description="registry model name, also the OIP model name")
    version: str | None = Field(None, description="pin this version instead of following the production pointer")
    precision: Literal["fp32", "int8"] = "fp32"
    providers: str = Field("cpu", description="comma-separated execution providers, tried in order; cpu is implied")
    threads: int = Field(0, ge=0, le=1024, description="onnxruntime intra-op threads per session (0 = all cores)")
    inter_op_threads: int = Field(0, ge=0, le=1024, description="onnxruntime inter-op threads (0 = default)")
    # onnxruntime's worker threads busy-wait between ops by default; on a small box that steals the cores which
    # parse requests, so serving turns spinning off unless asked.
    spin_threads: bool = False
    reload_interval_s: float = Field(10.0, gt=0, description="how often the registry is polled for a new version")

    http: bool = Field(True, description="serve the HTTP API (off: stream mode only)")
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535, description="HTTP port (0: any free port, logged)")
    token_file: Path | None = Field(None, description="file holding the bearer token every non-health call needs")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="larger request bodies get 413")

    max_batch_size: int = Field(32, ge=1, le=4096, description="images (or windows) per inference batch")
    max_queue_delay_ms: float = Field(2.0, ge=0, le=10_000, description="longest wait for a batch to fill")
    max_queue: int = Field(256, ge=1, le=1_000_000, description="queued requests before 503 + Retry-After")
    instances: int = Field(1, ge=1, le=256, description="batches run at once, each on its own worker thread")
    adaptive_threads: bool = Field(
        True,
        description="with --threads 0 on CPU: a lone batch runs on every core, batches with work queued behind them "
        "run side by side on one core each",
    )

    stream_topic: str | None = Field(None, description="consume windows from this topic (stream mode)")
    output_topic: str = Field(DEFAULT_RESULTS_TOPIC, description="publish stream-mode results here")
    group_id: str | None = Field(None, description="consumer group (default streamssl-serve.<model>)")
    partitions: int = Field(8, ge=1, le=10_000, description="partitions of topics stream mode creates")
    stream_poll_records: int = Field(64, ge=1, le=10_000, description="windows read per poll")

    score_warmup: int = Field(10, ge=1, description="windows per camera before a z-score is reported")
    score_memory: int = Field(1000, ge=2, description="windows after which camera statistics forget (EWMA)")
    max_cameras: int = Field(10_000, ge=1, description="camera statistics kept (least recently used dropped)")
    scene_cameras: int = Field(256, ge=1, description="cameras whose scene memory is kept (about 2 MiB each, LRU)")
    scene_memory_dir: Path | None = Field(
        None, description="save every camera's scene memory here and restore it at start (kept across restarts)"
    )
    scene_save_interval_s: float = Field(60.0, gt=0, description="how often the scene memories are saved")
    drain_timeout_s: float = Field(30.0, gt=0, description="on shutdown, how long in-flight work may take")

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str | None) -> str | None:
        if value is not None and not _VERSION.fullmatch(value):
            raise ValueError(f"version must be a registry version number (1, 2, …), got {value!r}")
        return value

    @field_validator("providers")
    @classmethod
    def _check_providers(cls, value: str) -> str:
        for name in _split(value):
            if name.lower() not in PROVIDER_NAMES and name not in PROVIDER_NAMES.values():
                raise ValueError(f"unknown execution provider {name!r}: use {', '.join(PROVIDER_NAMES)}")
        return value

    @field_validator("stream_topic", "output_topic")
    @classmethod
    def _check_stream_topics(cls, value: str | None) -> str | None:
        return None if value is None else validate_topic(value)

    @model_validator(mode="after")
    def _something_to_do(self) -> ServingSettings:
        if "topic" in self.model_fields_set:
            raise ValueError("the serving node reads no 'topic': stream mode reads windows from stream_topic")
        if not self.http and self.stream_topic is None:
            raise ValueError("with the HTTP API off, give --stream-topic: the node would have nothing to do")
        if self.stream_topic is not None and self.stream_topic == self.output_topic:
            raise ValueError("--stream-topic and --output-topic must differ")
        return self

    @property
    def provider_list(self) -> list[str]:
        """Full onnxruntime provider names, in the order given, CPU last as the fallback."""
        names = [PROVIDER_NAMES.get(name.lower(), name) for name in _split(self.providers)]
        names = list(dict.fromkeys([*names, PROVIDER_NAMES["cpu"]]))
        cpu = PROVIDER_NAMES["cpu"]
        return [name for name in names if name != cpu] + [cpu]

    @property
    def adaptive_workers(self) -> int | None:
        """Worker threads of the adaptive batcher (one per core), or None where it does not apply: threads set by
        hand, a GPU provider asked for, or a single core."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        cpu_only = self.provider_list == [PROVIDER_NAMES["cpu"]]
        if not self.adaptive_threads or self.threads != 0 or not cpu_only or cores < 2:
            return None
        return max(self.instances, cores)

    @property
    def consumer_group(self) -> str:
        return self.group_id or f"streamssl-serve.{self.model}"

    def read_token(self) -> str | None:
        """The bearer token from ``token_file`` (surrounding whitespace ignored); ValueError if it is empty."""
        if self.token_file is None:
            return None
        token = self.token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"token file {self.token_file} is empty")
        return token


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
