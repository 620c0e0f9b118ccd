"""Reconnect delays: exponential backoff with jitter, capped, reset once the camera delivers again."""

from __future__ import annotations

import random


class Backoff:
    """Delay before attempt ``n`` (from 0): ``initial × 2ⁿ`` capped at ``maximum``, times a jitter in [0.5, 1].

    Jitter keeps a fleet of cameras behind one switch from reconnecting in lockstep after it reboots.
    """

    def __init__(self, initial_s: float, maximum_s: float, rng: random.Random | None = None) -> None:
        if not 0 < initial_s <= maximum_s:
            raise ValueError(f"need 0 < initial ({initial_s}) <= maximum ({maximum_s})")
        self.initial_s, self.maximum_s = initial_s, maximum_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.maximum_s, self.initial_s * 2 ** min(self.attempt, 62))
        self.attempt += 1
        return ceiling * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0
