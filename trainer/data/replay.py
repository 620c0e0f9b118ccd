"""The replay buffer: a per-camera reservoir of encoded windows, bounded by count and by bytes.

Continual learning on one stream forgets what it saw an hour ago; replaying a uniform sample of the past is the
common remedy (Rolnick et al., NeurIPS 2019; used with SSL in e.g. Purushwalkam et al., 2022). Each camera keeps its
own reservoir (Vitter's Algorithm R: after ``n`` offers, each offered window is held with equal probability), and
sampling picks a camera uniformly first, so a busy camera cannot crowd out a quiet one.

Windows are kept as their wire bytes (JPEG frames): ~10× smaller than pixels, and decoded again by the decode
workers when replayed. The whole state (windows, counters, random state) goes into checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StoredWindow:
    key: str  # the window id
    camera: str
    data: bytes  # the encoded window
    frames: int  # T of the window


class ReplayBuffer:
    """Per-camera reservoirs; at most ``max_windows`` windows and ``max_bytes`` bytes in all.

    Each camera may hold ``max_windows // cameras``; when a new camera appears, the largest reservoirs give up
    random windows to make room.
    """

    def __init__(self, max_windows: int, max_bytes: int, seed: int = 0) -> None:
        if max_windows < 1 or max_bytes < 1:
            raise ValueError("the replay buffer needs room for at least one window and one byte")
        self.max_windows = max_windows
        self.max_bytes = max_bytes
        self._rng = np.random.default_rng(seed)
        self._windows: dict[str, list[StoredWindow]] = {}
        self._seen: dict[str, int] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return sum(len(windows) for windows in self._windows.values())

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def cameras(self) -> dict[str, int]:
        """Windows held per camera."""
        return {camera: len(windows) for camera, windows in self._windows.items() if windows}

    def offer(self, window: StoredWindow) -> None:
        """Offer one window seen on the stream; it is kept with the reservoir's probability."""
        if len(window.data) > self.max_bytes:
            return
        seen = self._seen.get(window.camera, 0) + 1
        self._seen[window.camera] = seen
        held = self._windows.setdefault(window.camera, [])
        capacity = max(1, self.max_windows // len(self._windows))
        if len(held) < capacity:
            held.append(window)
            self._bytes += len(window.data)
        else:
            slot = int(self._rng.integers(0, seen))
            if slot >= len(held):
                return
            self._bytes += len(window.data) - len(held[slot].data)
            held[slot] = window
        self._enforce_bounds()

    def _enforce_bounds(self) -> None:
        while len(self) > self.max_windows or self._bytes > self.max_bytes:
            # Ties go to the first camera by name, so a restored buffer evicts exactly as the original would.
            largest = self._windows[max(sorted(self._windows), key=lambda camera: len(self._windows[camera]))]
            victim = largest.pop(int(self._rng.integers(0, len(largest))))
            self._bytes -= len(victim.data)

    def discard(self, key: str) -> None:
        """Remove the window ``key`` (e.g. its frames turned out not to decode)."""
        for windows in self._windows.values():
            for index, window in enumerate(windows):
                if window.key == key:
                    self._bytes -= len(window.data)
                    del windows[index]
                    return

    def sample(self, count: int, rng: np.random.Generator) -> list[StoredWindow]:
        """``count`` windows, with replacement: a camera uniformly, then one of its windows uniformly."""
        cameras = sorted(camera for camera, windows in self._windows.items() if windows)
        if not cameras:
            return []
        picked: list[StoredWindow] = []
        for _ in range(count):
            windows = self._windows[cameras[int(rng.integers(0, len(cameras)))]]
            picked.append(windows[int(rng.integers(0, len(windows)))])
        return picked

    def state_dict(self) -> dict[str, Any]:
        """Plain containers of str/int/bytes, loadable with ``torch.load(weights_only=True)``."""
        return {
            "max_windows": self.max_windows,
            "max_bytes": self.max_bytes,
            "seen": dict(self._seen),
            "windows": [[w.key, w.camera, w.data, w.frames] for windows in self._windows.values() for w in windows],
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved buffer; the current bounds apply (a smaller buffer drops random windows)."""
        self._windows = {}
        self._bytes = 0
        self._seen = {str(camera): int(count) for camera, count in state["seen"].items()}
        for key, camera, data, frames in state["windows"]:
            self._windows.setdefault(camera, []).append(StoredWindow(key, camera, bytes(data), int(frames)))
            self._bytes += len(data)
        for camera in self._seen:
            self._windows.setdefault(camera, [])
        self._rng.bit_generator.state = state["rng"]
        self._enforce_bounds()
