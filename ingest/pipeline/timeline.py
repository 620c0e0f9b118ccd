"""A camera's clock: PTS when the source has usable timestamps, arrival time otherwise, and its discontinuities."""

from __future__ import annotations

import math
from enum import Enum


class Continuity(Enum):
    CONTINUOUS = "continuous"
    DUPLICATE = "duplicate"  # same time as the previous frame: drop it
    JUMP_BACKWARD = "jump_backward"  # the source clock restarted or went back
    JUMP_FORWARD = "jump_forward"  # a gap longer than the tolerance: frames were lost


class Timeline:
    """Turns (PTS, arrival time) into one clock value per frame and says whether it continues the last one.

    A source without usable PTS (missing or non-finite) is timed by arrival instead, until :meth:`reset`; mixing the
    two clocks within a segment would make the spacing meaningless.
    """

    def __init__(self, max_gap_s: float) -> None:
        if not max_gap_s > 0:
            raise ValueError(f"the discontinuity tolerance must be positive, got {max_gap_s}")
        self.max_gap_s = max_gap_s
        self.uses_arrival_time = False
        self._last: float | None = None

    def reset(self) -> None:
        self._last = None
        self.uses_arrival_time = False

    def observe(self, pts_s: float | None, arrival_s: float) -> tuple[float, Continuity]:
        if not self.uses_arrival_time and (pts_s is None or not math.isfinite(pts_s)):
            self.uses_arrival_time = True
            self._last = None
        time_s = arrival_s if self.uses_arrival_time or pts_s is None else pts_s
        last, self._last = self._last, time_s
        if last is None:
            return time_s, Continuity.CONTINUOUS
        if time_s == last:
            self._last = last
            return time_s, Continuity.DUPLICATE
        if time_s < last:
            return time_s, Continuity.JUMP_BACKWARD
        if time_s - last > self.max_gap_s:
            return time_s, Continuity.JUMP_FORWARD
        return time_s, Continuity.CONTINUOUS
