"""``SynthConfig``: everything that determines a clip, with validation."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ingest.tools.synth.events import EventSpec, default_events

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SynthConfig:
    """A synthetic clip. Same config (seed included) -> same labels bytes and same decoded frames.

    ``events``: ``None`` means ``default_events(seconds)``; ``()`` means no events.
    """

    seconds: float = 60.0
    seed: int = 0
    width: int = 640
    height: int = 360
    fps: int = 30
    events: tuple[EventSpec, ...] | None = None
    lanes: int = 4  # even: half towards the camera (left), half away from it (right)
    day_to_night: bool = True  # False: daylight for the whole clip
    traffic_density: float = 1.0  # multiplier on the arrival rate (~650 vehicles/h/lane at 1.0)
    light_green_s: float = 20.0
    light_yellow_s: float = 3.0
    light_red_s: float = 15.0
    noise: bool = True  # sensor noise
    crf: int = 23
    preset: str = "veryfast"
    encoder_threads: int = 2  # fixed so the bitstream does not depend on the machine
    keyframe_interval_s: float = 2.0

    @property
    def total_frames(self) -> int:
        return round(self.seconds * self.fps)

    def resolved_events(self) -> tuple[EventSpec, ...]:
        return default_events(self.seconds) if self.events is None else tuple(self.events)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if not isinstance(self.seconds, int | float) or not math.isfinite(self.seconds) or self.seconds <= 0:
            raise ValueError(f"seconds must be a finite number > 0, got {self.seconds!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if not _is_int(value) or value < 32 or value > 4096 or value % 2:
                raise ValueError(f"{name} must be an even integer in [32, 4096], got {value!r}")
        if not _is_int(self.fps) or not 1 <= self.fps <= 240:
            raise ValueError(f"fps must be an integer in [1, 240], got {self.fps!r}")
        if self.total_frames < 1:
            raise ValueError(f"seconds={self.seconds} at fps={self.fps} gives no frames")
        if not _is_int(self.lanes) or self.lanes % 2 or not 2 <= self.lanes <= 8:
            raise ValueError(f"lanes must be an even integer in [2, 8], got {self.lanes!r}")
        if not math.isfinite(self.traffic_density) or not 0 < self.traffic_density <= 5:
            raise ValueError(f"traffic_density must be in (0, 5], got {self.traffic_density!r}")
        for name in ("light_green_s", "light_yellow_s", "light_red_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
        if not _is_int(self.crf) or not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be an integer in [0, 51], got {self.crf!r}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}, got {self.preset!r}")
        if not _is_int(self.encoder_threads) or not 1 <= self.encoder_threads <= 16:
            raise ValueError(f"encoder_threads must be an integer in [1, 16], got {self.encoder_threads!r}")
        if not math.isfinite(self.keyframe_interval_s) or self.keyframe_interval_s <= 0:
            raise ValueError(f"keyframe_interval_s must be > 0, got {self.keyframe_interval_s!r}")
        if self.events is not None and not isinstance(self.events, tuple):
            raise ValueError(f"events must be a tuple of EventSpec or None, got {type(self.events).__name__}")
        for event in self.resolved_events():
            if not isinstance(event, EventSpec):
                raise ValueError(f"events must hold EventSpec values, got {event!r}")
            if event.end_s > self.seconds + 1e-9:
                raise ValueError(
                    f"{event.kind} event {event.start_s:g}s..{event.end_s:g}s does not fit inside the "
                    f"{self.seconds:g}s clip"
                )
