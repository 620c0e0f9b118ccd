"""Shared fixtures. The real Kafka broker fixture lives in tests/kafka_broker.py (started once per session)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from ingest.bus.embedded import EmbeddedBroker, EmbeddedBus
from ingest.contract import FrameCodec, Window

pytest_plugins = ["tests.kafka_broker", "tests.cameras"]


@pytest.fixture
def embedded_bus() -> Iterator[EmbeddedBus]:
    """A fresh, private embedded bus."""
    name = f"test-{uuid.uuid4().hex}"
    yield EmbeddedBus(name)
    EmbeddedBroker.forget(name)


def make_window(
    camera_id: str = "cam-1",
    sequence: int = 0,
    *,
    frames: int = 4,
    height: int = 16,
    width: int = 16,
    channels: int = 3,
    codec: FrameCodec = FrameCodec.RAW_ZLIB,
    seed: int | None = None,
) -> Window:
    """A small window with smooth (compressible, JPEG-friendly) random content."""
    rng = np.random.default_rng(seed if seed is not None else sequence)
    base = rng.integers(0, 256, size=(frames, 1, 1, channels))
    ramp = np.linspace(0, 64, width, dtype=np.float64)[None, None, :, None]
    pixels = np.clip(base + ramp, 0, 255).astype(np.uint8)
    pixels = np.broadcast_to(pixels, (frames, height, width, channels)).copy()
    pts = sequence * frames / 10.0 + np.arange(frames) / 10.0
    return Window(
        camera_id=camera_id,
        sequence=sequence,
        window_id=f"{camera_id}:{sequence:08d}",
        frames=pixels,
        pts_s=pts,
        capture_time_s=1.7e9 + pts,
        fps=10.0,
        codec=codec,
        quality=90 if codec is FrameCodec.JPEG else 1,
    )
