"""Every camera's :class:`~serving.scene_memory.SceneMemory`: bounded (least recently seen dropped), thread-safe,
and saved to a directory so a restarted node keeps what each camera taught it.

The directory holds one ``<camera>.npz`` per camera (written atomically); loading skips, with a warning, a file that
is unreadable or from another layout: a lost memory costs a warm-up, never a crash.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.runtime.durable_files import write_atomically
from serving import scene_flow
from serving.scene_cells import FEATURES, GRID
from serving.scene_memory import SceneMemory, SceneScore

log = logging.getLogger(__name__)

STATE_KEYS = (
    "bank", "pending", "background", "novelties", "context_pts", "context", "last_background_s", "calibration",
    "since_calibration", *scene_flow.STATE_KEYS,
)  # fmt: skip
# A saved memory of another layout is not loaded.
LAYOUT = f"scene/3 grid={GRID} features={FEATURES} speed_grid={scene_flow.GRID}"


class SceneMemories:
    """At most ``max_cameras`` cameras' scene memories (LRU)."""

    def __init__(self, max_cameras: int, capacity: int = 1000, neighbours: int = 5, gap: int = 40) -> None:
        self.max_cameras = max_cameras
        self.capacity, self.neighbours, self.gap = capacity, neighbours, gap
        # Each camera has its own lock, so windows of different cameras are scored at the same time (a window costs
        # milliseconds of numpy and OpenCV, which release the GIL); the outer lock only guards the LRU order.
        self._cameras: OrderedDict[str, tuple[SceneMemory, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    def _memory(self, camera_id: str) -> tuple[SceneMemory, threading.Lock]:
        entry = self._cameras.get(camera_id)
        if entry is None:
            entry = (SceneMemory(self.capacity, self.neighbours, self.gap), threading.Lock())
        self._cameras[camera_id] = entry
        self._cameras.move_to_end(camera_id)
        while len(self._cameras) > self.max_cameras:
            self._cameras.popitem(last=False)
        return entry

    def observe(self, camera_id: str, frames: npt.NDArray[np.uint8], pts_s: float) -> SceneScore:
        with self._lock:
            memory, lock = self._memory(camera_id)
        with lock:
            return memory.observe(frames, pts_s)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cameras)

    def save(self, directory: Path) -> int:
        """Write every camera's memory under ``directory``; returns how many were written."""
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            entries = list(self._cameras.items())
        states = {}
        for camera, (memory, lock) in entries:
            with lock:
                states[camera] = memory.state()
        for camera, state in states.items():
            buffer = io.BytesIO()
            arrays: dict[str, npt.NDArray[Any]] = {"camera": np.array(camera), "layout": np.array(LAYOUT), **state}
            np.savez_compressed(buffer, allow_pickle=False, **arrays)
            write_atomically(directory / _file_name(camera), buffer.getvalue())
        return len(states)

    def load(self, directory: Path) -> int:
        """Restore the memories saved under ``directory`` (none if it does not exist); returns how many."""
        if not directory.is_dir():
            return 0
        loaded = 0
        for path in sorted(directory.glob("*.npz")):
            try:
                with np.load(path, allow_pickle=False) as saved:
                    if str(saved["layout"]) != LAYOUT:
                        log.warning("scene memory %s has layout %s, this node %s: not loaded", path,
                                    saved["layout"], LAYOUT)  # fmt: skip
                        continue
                    camera = str(saved["camera"])
                    state = {key: saved[key] for key in STATE_KEYS}
            except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
                log.warning("scene memory %s is unreadable (%s): that camera warms up again", path, error)
                continue
            memory = SceneMemory(self.capacity, self.neighbours, self.gap)
            memory.restore(state)
            with self._lock:
                self._cameras[camera] = (memory, threading.Lock())
            loaded += 1
        return loaded


def _file_name(camera_id: str) -> str:
    """A safe file name per camera id (ids may hold '/', ':' or be long)."""
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in camera_id)[:64]
    return f"{readable}-{hashlib.sha256(camera_id.encode()).hexdigest()[:12]}.npz"


class SceneSaver:
    """Saves the memories every ``interval_s`` on a daemon thread, and once more at :meth:`stop`. A failed save
    (a full disk, a read-only mount) is logged and retried next interval: scoring goes on regardless."""

    def __init__(self, memories: SceneMemories, directory: Path, interval_s: float) -> None:
        self.memories, self.directory, self.interval_s = memories, directory, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scene-saver", daemon=True)

    def start(self) -> SceneSaver:
        restored = self.memories.load(self.directory)
        log.info("scene memory: %d camera(s) restored from %s", restored, self.directory)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.save()

    def save(self) -> None:
        try:
            self.memories.save(self.directory)
        except OSError as error:
            log.warning("scene memory not saved to %s (%s); retrying in %g s", self.directory, error, self.interval_s)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self.save()
