"""Pick frames at a target rate by time, so variable-frame-rate sources give evenly spaced samples."""

from __future__ import annotations

import math
from typing import Generic, TypeVar

T = TypeVar("T")

# Float PTS of e.g. 0.1 may come out as 0.09999; a frame that close to a grid point counts as on it.
_EARLY_TOLERANCE = 1e-3


class PtsSampler(Generic[T]):
    """For each point of a ``1/fps`` grid (anchored at the first frame), keeps the frame nearest to it.

    Like FFmpeg's ``fps`` filter with ``round=near``: the sample error is at most half a source frame interval, so
    a 20–30 fps variable-rate camera sampled at 10 fps gives samples within ±25 ms of an even grid. It holds at most
    one frame back (the latest before the next grid point) and never touches the frames' pixels: frames it drops are
    never converted.
    """

    def __init__(self, fps: float) -> None:
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"sampling rate must be positive, got {fps}")
        self.interval_s = 1.0 / fps
        self.dropped = 0
        self._due: float | None = None
        self._before: tuple[float, T] | None = None  # the latest frame before the grid point

    def reset(self) -> None:
        """Forget the grid (after a reconnect or a discontinuity): the next frame is kept and anchors a new one."""
        if self._before is not None:
            self.dropped += 1
        self._due = None
        self._before = None

    def offer(self, time_s: float, item: T) -> list[tuple[float, T]]:
        """Offer the next frame; return the samples this decides (none, one, or two after a gap), oldest first."""
        if self._due is None:
            self._due = time_s + self.interval_s
            return [(time_s, item)]
        early = _EARLY_TOLERANCE * self.interval_s
        if time_s < self._due - early:
            if self._before is not None:
                self.dropped += 1
            self._before = (time_s, item)
            return []
        chosen: list[tuple[float, T]] = []
        before, self._before = self._before, None
        if before is not None and self._due - before[0] < time_s - self._due:
            chosen.append(before)
            self._due += self.interval_s
            if time_s < self._due - early:  # this frame may be the nearest to the next grid point
                self._before = (time_s, item)
                return chosen
        elif before is not None:
            self.dropped += 1
        chosen.append((time_s, item))
        self._due += self.interval_s
        if self._due <= time_s:  # a gap longer than an interval: re-anchor the grid on this frame
            self._due = time_s + self.interval_s
        return chosen
