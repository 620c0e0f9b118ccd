"""Each camera's memory of its normal scene, per grid cell, and how far a window is from it (``scene_score``).

A window's cell maps (:mod:`serving.scene_cells`) are compared, cell by cell, with the same cell in the camera's
last ``capacity`` windows: the novelty of a cell is the mean standardised distance to its ``k`` nearest
remembered states (a PatchCore-style memory bank, one per cell). Three choices make it find events that a
frame-level or prediction-error score calls normal:

* the newest ``gap`` windows are not compared against (they join the memory later): an event that lasts a few
  dozen windows (a jam) would otherwise find itself as its own nearest neighbours after the first few;
* each cell's novelty is calibrated against that cell's own recent novelties (median and the 90th percentile), so
  a busy lane does not outshout a quiet verge; the score is the maximum over cells, and the result names the cell;
* the maps depend only on pixels, so the memory is kept across model versions, and saved and restored across
  restarts (:meth:`SceneMemory.state` / :meth:`SceneMemory.restore`).

The same background also tells which blocks are occupied for :class:`serving.scene_flow.TrafficSpeed`, which
gives each window its ``slowdown`` (traffic slower than the camera's normal).

Memory per camera is bounded: ``capacity`` × 64 cells × 5 features (float16 values, held as float32 so a window is
compared without converting the bank), a background of ``BACKGROUND`` frames, ``HISTORY`` calibration rows and the
traffic speed's 16×16 blocks and 540 values (about 2 MiB at the defaults).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from serving import scene_cells, scene_flow
from serving.calibration import median_and_spread
from serving.scene_cells import CONTEXT_S, FEATURES, GRID, Maps
from serving.scene_flow import TrafficSpeed

BACKGROUND = 50  # normalised mean frames in the background median
BACKGROUND_EVERY_S = 2.0  # one background frame per this many seconds of stream (so it spans ~100 s)
HISTORY = 500  # cell novelties kept for calibration
CALIBRATE_EVERY = 8  # windows between recomputing each cell's (median, 90th percentile): they move slowly
MIN_MEMORY = 20  # remembered windows (older than the gap) before a cell is scored
MIN_HISTORY = 20  # novelties before they are calibrated


@dataclass(frozen=True)
class SceneScore:
    """``score`` is None while the camera's memory warms up; ``cell`` is the (row, col) that scored highest;
    ``slowdown`` is the traffic's slowness against the camera's normal (:mod:`serving.scene_flow`)."""

    score: float | None
    cell: tuple[int, int] | None
    remembered: int
    slowdown: float | None = None


def median_frame(frames: Iterable[Maps]) -> Maps:
    """The per-pixel median of frames, as ``np.median`` over them gives it, by a sort along contiguous memory
    (``np.median``'s selection costs 5x more on 50 short rows)."""
    ordered = np.sort(np.stack(list(frames), axis=-1), axis=-1)
    middle = ordered.shape[-1] // 2
    if ordered.shape[-1] % 2:
        return ordered[..., middle].astype(np.float32)
    result: Maps = ((ordered[..., middle - 1] + ordered[..., middle]) / 2).astype(np.float32)
    return result


def cell_novelty(bank: Maps, features: Maps, k: int) -> Maps:
    """Per cell, the mean standardised distance of ``features`` ``[cells, F]`` to its ``k`` nearest states in
    ``bank`` ``[cells, F, N]`` (each feature divided by its spread over the bank)."""
    spread = bank.std(axis=-1) + 1e-3  # [cells, F]
    distances = np.sqrt((((bank - features[..., None]) / spread[..., None]) ** 2).sum(axis=1))  # [cells, N]
    k = min(k, bank.shape[-1])
    novelty: Maps = np.partition(distances, k - 1, axis=-1)[:, :k].mean(axis=-1).astype(np.float32)
    return novelty


class SceneMemory:
    """One camera's background, recent context, memory bank and calibration history; not thread-safe."""

    def __init__(self, capacity: int = 1000, k: int = 5, gap: int = 40) -> None:
        self.capacity, self.k, self.gap = capacity, k, gap
        # [cells, features, windows]: each cell's distances run along contiguous memory (4x faster than
        # [windows, cells, features]). Values are rounded to float16, as when the bank was stored in it.
        self._bank = np.zeros((GRID * GRID, FEATURES, capacity), dtype=np.float32)
        self._added = 0
        self._pending: deque[Maps] = deque()  # the newest windows, waiting out the gap
        self._background: deque[Maps] = deque(maxlen=BACKGROUND)
        self._background_median: Maps | None = None
        self._last_background_s = -np.inf
        self._context: deque[tuple[float, Maps]] = deque()  # (pts, stopped map) over the longest context span
        self._novelties: deque[Maps] = deque(maxlen=HISTORY + gap)
        self._calibration: tuple[Maps, Maps] | None = None  # (median, spread), refreshed every CALIBRATE_EVERY
        self._since_calibration = 0
        self._traffic = TrafficSpeed()

    def __len__(self) -> int:
        return min(self._added, self.capacity)

    def observe(self, frames: npt.NDArray[np.uint8], pts_s: float) -> SceneScore:
        """Score one window (``[T, H, W, C]`` uint8, its first frame's PTS) against the memory, then remember it."""
        features, occupancy = self._features(scene_cells.analysis_frames(frames), pts_s)
        score, cell = self._score(features)
        self._pending.append(features)
        while len(self._pending) > self.gap:
            self._remember(self._pending.popleft())
        slowdown = self._traffic.observe(*scene_flow.block_flow(frames), occupancy, pts_s)
        return SceneScore(score, cell, len(self), slowdown)

    def _features(self, frames: Maps, pts_s: float) -> tuple[Maps, Maps | None]:
        """The window's cell maps, and its block occupancy against the background as it was before this window."""
        flow, stopped, mean = scene_cells.window_maps(frames, self._background_median)
        background = self._background_median
        occupancy = None if background is None else scene_flow.block_occupancy(mean, background)
        if self._context and pts_s < self._context[-1][0]:
            self._context.clear()  # the stream restarted (a new segment, a looped file): old context is stale
        self._context.append((pts_s, stopped))
        while self._context[0][0] <= pts_s - max(CONTEXT_S):
            self._context.popleft()
        spans = [np.mean([m for t, m in self._context if t > pts_s - span], axis=0) for span in CONTEXT_S]
        if pts_s - self._last_background_s >= BACKGROUND_EVERY_S or pts_s < self._last_background_s:
            self._background.append(mean)
            self._background_median = median_frame(self._background)
            self._last_background_s = pts_s
        maps = np.concatenate([flow, stopped[..., None], np.stack(spans, axis=-1)], axis=-1)
        return maps.reshape(GRID * GRID, FEATURES).astype(np.float32), occupancy

    def _score(self, features: Maps) -> tuple[float | None, tuple[int, int] | None]:
        if len(self) < MIN_MEMORY:
            return None, None
        calibrated = self._calibrated(cell_novelty(self._bank[..., : len(self)], features, self.k))
        if calibrated is None:
            return None, None
        best = int(calibrated.argmax())
        return float(calibrated[best]), divmod(best, GRID)

    def _calibrated(self, novelty: Maps) -> Maps | None:
        """The cell novelties against each cell's own (median, 90th percentile), the newest ``gap`` left out."""
        settled = len(self._novelties) - self.gap
        if (self._calibration is None or self._since_calibration >= CALIBRATE_EVERY) and settled >= MIN_HISTORY:
            history = np.stack(list(self._novelties)[max(0, settled - HISTORY) : settled])
            low, width = median_and_spread(history, axis=0)
            self._calibration = (low.astype(np.float32), width.astype(np.float32))
            self._since_calibration = 0
        self._novelties.append(novelty)
        self._since_calibration += 1
        if self._calibration is None:
            return None
        median, spread = self._calibration
        result: Maps = (novelty - median) / spread
        return result

    def _remember(self, features: Maps) -> None:
        self._bank[..., self._added % self.capacity] = features.astype(np.float16)
        self._added += 1

    def state(self) -> dict[str, npt.NDArray[np.floating]]:
        """Everything the memory holds, as arrays (saved by :mod:`serving.scene_store`)."""
        order = [(self._added - len(self) + i) % self.capacity for i in range(len(self))]
        empty = np.zeros((0, GRID * GRID, FEATURES), dtype=np.float32)
        return {
            "bank": np.ascontiguousarray(np.moveaxis(self._bank[..., order], -1, 0)) if order else empty,
            "pending": np.stack(self._pending) if self._pending else empty,
            "background": np.stack(self._background) if self._background else np.zeros((0, 1, 1, 3), np.float32),
            "novelties": np.stack(self._novelties) if self._novelties else np.zeros((0, GRID * GRID), np.float32),
            "context_pts": np.array([t for t, _ in self._context], dtype=np.float64),
            "context": np.stack([m for _, m in self._context])
            if self._context
            else np.zeros((0, GRID, GRID), np.float32),
            "last_background_s": np.array(self._last_background_s, dtype=np.float64),
            "calibration": np.stack(self._calibration) if self._calibration else np.zeros((0, GRID * GRID), np.float32),
            "since_calibration": np.array(self._since_calibration),
            **self._traffic.state(),
        }

    def restore(self, state: dict[str, npt.NDArray[np.floating]]) -> None:
        """Take back what :meth:`state` gave: the memory then scores exactly as the one that was saved."""
        for features in state["bank"][-self.capacity :]:
            self._remember(features)
        self._pending.extend(state["pending"])
        self._background.extend(state["background"])
        if self._background:
            self._background_median = median_frame(self._background)
        self._novelties.extend(state["novelties"])
        self._context.extend(zip(state["context_pts"].tolist(), state["context"], strict=True))
        self._last_background_s = float(state["last_background_s"])
        if len(state["calibration"]):
            self._calibration = (state["calibration"][0], state["calibration"][1])
        self._since_calibration = int(state["since_calibration"])
        self._traffic.restore(state)
