"""How fast a camera's traffic moves against its own normal: the ``slowdown_score``.

A jam, or a stalled vehicle that the lanes behind it queue up for, shows as traffic that is slower than usual for
longer than a red light holds it. Measuring that needs a speed that means the same in every part of the frame, so
per window:

* dense optical flow (OpenCV's DIS, ultrafast preset) between consecutive frames at ``SIZE``×``SIZE``; per block of
  ``SIZE // GRID`` pixels, the mean flow of the pixels that move, and the share of them;
* each block keeps the typical speed of what moves through it (a running geometric mean): far blocks move a pixel
  per frame, near ones ten, and dividing by the block's own normal removes the perspective;
* the window's speed is the mean, over the blocks that are occupied (moving, or unlike the background: a stopped
  vehicle counts as speed 0), of the block's speed over its typical speed; averaged over the last ``SPAN_S``
  seconds of the camera, negated, and calibrated against the camera's own earlier values (median and 90th
  percentile, the newest ``GAP`` left out so that a jam does not calibrate itself away), so 0 is an ordinary
  moment and 1 as slow as one moment in ten;
* where the camera's traffic repeats with a signal's cycle, the same window speed against the same phase of the
  earlier cycles (:mod:`serving.scene_cycle`), calibrated the same way, is added: a red light is then ordinary, and
  a queue that should have moved on is not.

It depends on pixels only, like the rest of the scene memory, so it is kept across model versions.
"""

from __future__ import annotations

import itertools
from collections import deque

import cv2
import numpy as np
import numpy.typing as npt

from ingest.contract.model_input import model_input
from serving import scene_cycle
from serving.calibration import median_and_spread

SIZE = 128  # flow frames are SIZE×SIZE gray
GRID = 16  # blocks per side
MOVING_PX = 0.4  # a pixel moves when its flow is longer than this (pixels per frame)
MOVING_SHARE = 0.05  # a block moves when this share of its pixels does, over the window's frame pairs
OCCUPIED = 0.1  # a block is occupied when it differs this much from the background (brightness-normalised)
SPAN_S = 8.0  # seconds of the camera's windows the speed is averaged over (a red light holds traffic ~15 s)
TYPICAL_COUNT = 2000  # a block's typical speed averages at most this many moving windows, so it follows change
MIN_TYPICAL = 5  # moving windows a block needs before its speed counts
HISTORY = 500  # window speeds kept for calibration
GAP = 40  # the newest window speeds are left out of it (30 s: longer than a jam takes to show)
MIN_HISTORY = 40  # before the first calibrated score
CALIBRATE_EVERY = 8  # windows between recomputing the (median, 90th percentile)

STATE_KEYS = (
    "speed_log_sum", "speed_count", "speed_recent", "speed_history", "speed_calibration", "speed_since_calibration",
    *scene_cycle.STATE_KEYS,
)  # fmt: skip

Blocks = npt.NDArray[np.float32]


def block_means(values: npt.NDArray[np.float32]) -> Blocks:
    """``[..., SIZE, SIZE]`` → ``[..., GRID, GRID]`` block means."""
    side = SIZE // GRID
    result: Blocks = values.reshape(*values.shape[:-2], GRID, side, GRID, side).mean(axis=(-1, -3))
    return result


def block_flow(frames: npt.NDArray[np.uint8]) -> tuple[Blocks, Blocks]:
    """``[T, H, W, C]`` uint8 → per block (speed in pixels per frame of what moves, share of moving pixels)."""
    clip = model_input(frames, SIZE, SIZE, frames.shape[-1], frames.shape[0])
    gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.shape[-1] == 3 else frame[..., 0] for frame in clip]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)  # type: ignore[attr-defined]  # not in the stubs
    # Per frame pair, summed as it comes (a 128×128 pair stays in cache; a stack of all pairs does not), then the
    # block means of the sums.
    moving_sum = np.zeros((SIZE, SIZE), dtype=np.float32)
    u_sum, v_sum = np.zeros_like(moving_sum), np.zeros_like(moving_sum)
    for first, second in itertools.pairwise(gray):
        flow = dis.calc(first, second, None)  # [SIZE, SIZE, 2]
        du, dv = flow[..., 0], flow[..., 1]
        moving = (np.hypot(du, dv) > MOVING_PX).astype(np.float32)
        moving_sum += moving
        u_sum += du * moving
        v_sum += dv * moving
    count = block_means(moving_sum)
    u = block_means(u_sum) / (count + 1e-3)
    v = block_means(v_sum) / (count + 1e-3)
    return np.hypot(u, v).astype(np.float32), (count / (len(gray) - 1)).astype(np.float32)


def block_occupancy(normalised: npt.NDArray[np.float32], background: npt.NDArray[np.float32]) -> Blocks:
    """Per block, how far a brightness-normalised mean frame is from the background (any square size that
    ``GRID`` divides, e.g. :func:`serving.scene_cells.brightness_normalised`'s)."""
    difference = np.abs(normalised - background).mean(axis=-1)
    side = difference.shape[0] // GRID
    result: Blocks = difference.reshape(GRID, side, GRID, side).mean(axis=(1, 3))
    return result


class TrafficSpeed:
    """One camera's typical speed per block, its recent window speeds and their calibration; not thread-safe."""

    def __init__(self) -> None:
        self._log_sum = np.zeros((GRID, GRID), dtype=np.float64)
        self._count = np.zeros((GRID, GRID), dtype=np.float64)
        self._recent: deque[tuple[float, float]] = deque()  # (pts, window speed) over the last SPAN_S
        self._history: deque[float] = deque(maxlen=HISTORY + GAP)
        self._calibration: tuple[float, float] | None = None
        self._since_calibration = 0
        self._cycle = scene_cycle.CycleSlowdown()

    def observe(self, speed: Blocks, moving: Blocks, occupancy: Blocks | None, pts_s: float) -> float | None:
        """The slowdown score of one window (None while warming up), then learn from it."""
        moves = moving > MOVING_SHARE
        score = None
        if occupancy is not None:
            window_speed = self._window_speed(speed, moves, occupancy)
            score = self._score(window_speed, pts_s)
            cycle = self._cycle.observe(window_speed, pts_s)
            if score is not None and cycle is not None:
                score += cycle
        # Learn after scoring; capping the count turns the mean into a slow moving average that follows the camera.
        scale = np.where(self._count >= TYPICAL_COUNT, (TYPICAL_COUNT - 1) / TYPICAL_COUNT, 1.0)
        self._log_sum = self._log_sum * scale + np.where(moves, np.log(speed + 1e-3), 0.0)
        self._count = self._count * scale + moves
        return score

    def _window_speed(self, speed: Blocks, moves: npt.NDArray[np.bool_], occupancy: Blocks) -> float:
        known = self._count >= MIN_TYPICAL
        typical = np.exp(self._log_sum / np.maximum(self._count, 1.0))
        relative = np.where(moves & known, speed / (typical + 1e-3), 0.0)
        occupied = (occupancy > OCCUPIED) | moves
        return float((relative * occupied).sum() / (occupied.sum() + 1e-3))

    def _score(self, window_speed: float, pts_s: float) -> float | None:
        if self._recent and pts_s < self._recent[-1][0]:
            self._recent.clear()  # the stream restarted: the old span is stale
        self._recent.append((pts_s, window_speed))
        while self._recent[0][0] <= pts_s - SPAN_S:
            self._recent.popleft()
        slowness = -float(np.mean([s for _, s in self._recent]))
        settled = len(self._history) - GAP
        if (self._calibration is None or self._since_calibration >= CALIBRATE_EVERY) and settled >= MIN_HISTORY:
            median, spread = median_and_spread(np.array(self._history)[:settled])
            self._calibration = (float(median), float(spread))
            self._since_calibration = 0
        self._history.append(slowness)
        self._since_calibration += 1
        if self._calibration is None:
            return None
        return (slowness - self._calibration[0]) / self._calibration[1]

    def state(self) -> dict[str, npt.NDArray[np.floating]]:
        """Everything it holds, as arrays (saved with the rest of the scene memory)."""
        return {
            "speed_log_sum": self._log_sum.copy(),
            "speed_count": self._count.copy(),
            "speed_recent": np.array(list(self._recent), dtype=np.float64).reshape(-1, 2),
            "speed_history": np.array(self._history, dtype=np.float64),
            "speed_calibration": np.array(self._calibration or (), dtype=np.float64),
            "speed_since_calibration": np.array(self._since_calibration),
            **self._cycle.state(),
        }

    def restore(self, state: dict[str, npt.NDArray[np.floating]]) -> None:
        """Take back what :meth:`state` gave."""
        self._log_sum = np.array(state["speed_log_sum"], dtype=np.float64)
        self._count = np.array(state["speed_count"], dtype=np.float64)
        self._recent.extend((float(t), float(s)) for t, s in state["speed_recent"])
        self._history.extend(float(s) for s in state["speed_history"])
        calibration = state["speed_calibration"]
        self._calibration = (float(calibration[0]), float(calibration[1])) if len(calibration) else None
        self._since_calibration = int(state["speed_since_calibration"])
        self._cycle.restore(state)
