"""The in-memory window: T consecutive sampled frames of one camera, with their timing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from ingest.contract.errors import WindowEncodeError

MAX_ID_BYTES = 255
MAX_DIMENSION = 65535


class FrameCodec(StrEnum):
    """How each frame is compressed on the wire. The value is the name used in configs and headers."""

    JPEG = "jpeg"
    PNG = "png"
    RAW_ZLIB = "raw-zlib"


DEFAULT_JPEG_QUALITY = 90


@dataclass(frozen=True, eq=False)
class Window:
    """One window of ``T`` frames from one camera.

    Attributes:
        camera_id: Stable camera name; also the Kafka key, so one camera's windows stay in one partition.
        sequence: Per-camera number, strictly increasing over the camera's life (across reconnects too).
        window_id: Stable, globally unique id of this window (e.g. ``cam-3:1732300000:000042``).
        frames: ``uint8`` array ``T×H×W×C``, RGB (C=3) or grayscale (C=1).
        pts_s: Presentation time of each frame in seconds on the source's clock, shape ``(T,)``.
        capture_time_s: Wall-clock (Unix) time each frame was captured or received, shape ``(T,)``.
        fps: Nominal sampling rate of the window in frames per second.
        segment: Number of the continuous stretch of stream the window belongs to. It changes at every
            discontinuity (reconnect, timestamp jump, source restart); windows of one segment are contiguous.
        codec: Frame compression on the wire.
        quality: JPEG quality (1–100) or PNG/zlib compression level (0–9) used on the wire.
    """

    camera_id: str
    sequence: int
    window_id: str
    frames: npt.NDArray[np.uint8]
    pts_s: npt.NDArray[np.float64]
    capture_time_s: npt.NDArray[np.float64]
    fps: float
    segment: int = 0
    codec: FrameCodec = FrameCodec.JPEG
    quality: int = DEFAULT_JPEG_QUALITY

    def __post_init__(self) -> None:
        object.__setattr__(self, "codec", FrameCodec(self.codec))
        object.__setattr__(self, "pts_s", np.asarray(self.pts_s, dtype=np.float64))
        object.__setattr__(self, "capture_time_s", np.asarray(self.capture_time_s, dtype=np.float64))
        _validate(self)

    @property
    def frame_count(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def channels(self) -> int:
        return int(self.frames.shape[3])


def _validate(window: Window) -> None:
    def fail(reason: str) -> None:
        raise WindowEncodeError(f"invalid window {window.camera_id!r}#{window.sequence}: {reason}")

    frames = window.frames
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4:
        fail(
            f"frames must be a uint8 array T×H×W×C, got {getattr(frames, 'dtype', type(frames))} "
            f"with shape {getattr(frames, 'shape', None)}"
        )
    t, h, w, c = frames.shape
    if t < 1 or h < 1 or w < 1:
        fail(f"frames must be non-empty, got shape {frames.shape}")
    if max(t, h, w) > MAX_DIMENSION:
        fail(f"frame count and sides must be at most {MAX_DIMENSION}, got shape {frames.shape}")
    if c not in (1, 3):
        fail(f"frames must have 1 (grayscale) or 3 (RGB) channels, got {c}")
    for name in ("pts_s", "capture_time_s"):
        times = getattr(window, name)
        if times.shape != (t,):
            fail(f"{name} must have one entry per frame ({t}), got shape {times.shape}")
        if not np.all(np.isfinite(times)):
            fail(f"{name} must be finite")
    for name, text in (("camera_id", window.camera_id), ("window_id", window.window_id)):
        size = len(text.encode("utf-8"))
        if not 1 <= size <= MAX_ID_BYTES:
            fail(f"{name} must be 1–{MAX_ID_BYTES} bytes of UTF-8, got {size}")
    if not 0 <= window.sequence < 2**63:
        fail(f"sequence must be in [0, 2**63), got {window.sequence}")
    if not 0 <= window.segment < 2**32:
        fail(f"segment must be in [0, 2**32), got {window.segment}")
    if not (math.isfinite(window.fps) and window.fps > 0):
        fail(f"fps must be positive and finite, got {window.fps}")
    low, high = (1, 100) if window.codec is FrameCodec.JPEG else (0, 9)
    if not low <= window.quality <= high:
        fail(f"quality for {window.codec.value} must be in [{low}, {high}], got {window.quality}")
