"""Shared pieces of the trainer tests: real windows of synthetic traffic, cut by the ingest service, and small
trainer settings that run on two CPU cores in seconds.

Windows are rendered once per test process (``functools.cache``) and reused by every test that needs them.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from ingest.bus import Bus
from ingest.bus.base import Headers
from ingest.bus.embedded import EmbeddedBroker, EmbeddedBus
from ingest.service.config import CameraConfig, IngestSettings
from ingest.service.service import IngestService
from ingest.tools.synth import SynthConfig, generate_clip
from trainer.config import TrainerSettings

# Small and fast: 64×64 frames, 8-frame windows sampled at 5 fps (cars move a few pixels per frame: the order and
# future tasks have something to see), encoder width 16.
FRAME_SIZE = 64
SAMPLE_FPS = 5.0
_CACHE = Path(tempfile.mkdtemp(prefix="streamssl-trainer-tests-"))
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


@dataclass(frozen=True)
class Message:
    key: bytes | None
    value: bytes
    headers: Headers


@functools.cache
def traffic_messages(seed: int, seconds: float = 40.0, stride: int = 4) -> tuple[Message, ...]:
    """Windows of one synthetic camera (``cam-<seed>``), as the ingest service publishes them."""
    clip = _CACHE / f"traffic-{seed}-{seconds:g}.mp4"
    if not clip.exists():
        generate_clip(SynthConfig(seconds=seconds, seed=seed, width=160, height=96, fps=10, events=()), clip)
    name = f"render-{uuid.uuid4().hex}"
    bus = EmbeddedBus(name)
    try:
        settings = IngestSettings(
            bus=f"embedded://{name}",
            topic="windows",
            partitions=1,
            cameras=[
                CameraConfig(
                    camera_id=f"cam-{seed}",
                    url=str(clip),
                    size=f"{FRAME_SIZE}x{FRAME_SIZE}",
                    fps=SAMPLE_FPS,
                    window=8,
                    stride=stride,
                )
            ],
        )
        service = IngestService(settings, bus, CollectorRegistry())
        service.start()
        service.wait()
        assert service.shutdown() == 0
        with bus.consumer(["windows"], group_id=None) as consumer:
            records = consumer.poll(2.0)
    finally:
        EmbeddedBroker.forget(name)
    assert records, "the ingest service published no window"
    return tuple(Message(r.key, r.value, r.headers) for r in records)


def publish(bus: Bus, topic: str, messages: Iterable[Message], partitions: int = 1) -> int:
    """Put ``messages`` on ``topic`` (created with ``partitions``), acknowledged; returns how many."""
    bus.create_topic(topic, partitions)
    count = 0
    with bus.producer() as producer:
        futures = [producer.send(topic, m.value, key=m.key, headers=m.headers) for m in messages]
        for future in futures:
            future.result(timeout=30)
            count += 1
    return count


def small_settings(tmp_path: Path, bus_url: str, topic: str, **overrides: Any) -> TrainerSettings:
    """Settings for a tiny, fast CPU run; ``overrides`` are merged (nested sections as dicts)."""
    base: dict[str, Any] = {
        "bus": bus_url,
        "topic": topic,
        "registry": tmp_path / "registry",
        "checkpoint_dir": tmp_path / "checkpoints",
        "device": "cpu",
        "threads": 2,
        "eval_every": 100,
        "export_every": 100_000,
        "progress_every": 50,
        "model": {"encoder_width": 16, "embedding_dim": 64},
        "optim": {"warmup_steps": 20},
        "data": {
            "batch_size": 16,
            "group_id": f"trainer-{uuid.uuid4().hex[:8]}",
            "fresh_wait_s": 0.5,
            "decode_workers": 2,
            "holdout_every": 0,
        },
        "checkpoint": {"every_steps": 1000, "keep_last": 3},
        "export": {"exporter": "torchscript", "opset": 17},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return TrainerSettings(**base)
