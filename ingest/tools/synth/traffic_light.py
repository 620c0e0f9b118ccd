"""The fixed-time signal at the pedestrian crossing: green -> yellow -> red, repeating."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

LightState = Literal["green", "yellow", "red"]


@dataclass(frozen=True)
class LightCycle:
    green_s: float = 20.0
    yellow_s: float = 3.0
    red_s: float = 15.0
    offset_s: float = 0.0  # the clip's t = 0 is this far into a cycle that starts with green

    @property
    def period_s(self) -> float:
        return self.green_s + self.yellow_s + self.red_s

    def _phase(self, t: float) -> float:
        return math.fmod(t + self.offset_s, self.period_s) % self.period_s

    def cycle_index(self, t: float) -> int:
        return math.floor((t + self.offset_s) / self.period_s)

    def state_at(self, t: float) -> LightState:
        phase = self._phase(t)
        if phase < self.green_s:
            return "green"
        if phase < self.green_s + self.yellow_s:
            return "yellow"
        return "red"

    def as_label(self) -> dict[str, float]:
        return {"green": self.green_s, "yellow": self.yellow_s, "red": self.red_s, "offset_s": self.offset_s}
