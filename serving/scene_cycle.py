"""Traffic slower than at the same moment of the camera's earlier signal cycles.

A signalised road is slow every red light, so "slower than usual" alone (:class:`serving.scene_flow.TrafficSpeed`)
calls each red phase a little anomalous and a jam only somewhat more. Most signals run a fixed cycle: the window
speeds of a camera then repeat with the cycle's period, which their autocorrelation finds (a lag between
``MIN_PERIOD_S`` and ``MAX_PERIOD_S`` whose correlation reaches ``MIN_CORRELATION``; none on a road without a
signal). Against the median speed at the same phase of the last ``CYCLES`` cycles a red light is ordinary, and a
queue that should have moved on is not: that shortfall, averaged over ``SPAN_S`` and calibrated against the
camera's own earlier values like the rest of the scene memory, is this module's score.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

from serving.calibration import median_and_spread

MIN_PERIOD_S = 16.0
MAX_PERIOD_S = 120.0
MIN_CORRELATION = 0.3  # below this no lag counts as the signal's cycle, and there is no score
NEAR_BEST = 0.9
CYCLES = 3  # earlier cycles whose speed at the same phase make the baseline
SPAN_S = 4.0  # seconds the shortfall is averaged over
GRID_S = 0.8  # the speeds are resampled to this step (one 8-frame window at 10 fps) for the autocorrelation
KEPT = 600  # window speeds kept: three cycles of up to MAX_PERIOD_S at one window per 0.8 s
GAP = 40  # the newest speeds and shortfalls are left out of the period and the calibration (a jam's own)
MIN_SPEEDS = 100  # before the first period estimate
HISTORY = 500  # shortfalls kept for calibration
MIN_HISTORY = 40
REESTIMATE_EVERY = 8  # windows between recomputing the period and the calibration

STATE_KEYS = ("cycle_speeds", "cycle_recent", "cycle_history", "cycle_period", "cycle_calibration", "cycle_since")


def signal_period(pts_s: npt.NDArray[np.float64], speeds: npt.NDArray[np.float64]) -> float | None:
    """The signal's cycle (seconds) in ``speeds`` sampled at ``pts_s``: the first peak of their autocorrelation,
    between ``MIN_PERIOD_S`` and ``MAX_PERIOD_S``, that comes within ``NEAR_BEST`` of the best one (twice the
    cycle correlates as well as the cycle itself, or a hair better where the cycle is not a whole number of
    steps); None when no lag reaches ``MIN_CORRELATION``."""
    grid = np.arange(pts_s[0], pts_s[-1], GRID_S)
    series = np.interp(grid, pts_s, speeds)
    series = series - series.mean()
    lags = range(round(MIN_PERIOD_S / GRID_S), min(round(MAX_PERIOD_S / GRID_S), len(series) // 2 - 1) + 1)
    correlations = []
    for lag in lags:
        head, tail = series[:-lag], series[lag:]
        correlations.append(float(head @ tail) / (float(np.linalg.norm(head) * np.linalg.norm(tail)) + 1e-9))
    if not correlations or max(correlations) < MIN_CORRELATION:
        return None
    index = next(i for i, c in enumerate(correlations) if c >= NEAR_BEST * max(correlations))
    while index + 1 < len(correlations) and correlations[index + 1] > correlations[index]:
        index += 1
    return lags[index] * GRID_S


class CycleSlowdown:
    """One camera's window speeds, signal period, recent shortfalls and their calibration; not thread-safe."""

    def __init__(self) -> None:
        self._speeds: deque[tuple[float, float]] = deque(maxlen=KEPT)  # (pts, window speed)
        self._recent: deque[tuple[float, float]] = deque()  # (pts, shortfall) over the last SPAN_S
        self._history: deque[float] = deque(maxlen=HISTORY + GAP)
        self._period: float | None = None
        self._calibration: tuple[float, float] | None = None
        self._since = REESTIMATE_EVERY

    def observe(self, window_speed: float, pts_s: float) -> float | None:
        """The calibrated shortfall of this window's speed (None while the cycle or the calibration is unknown)."""
        if self._speeds and pts_s < self._speeds[-1][0]:
            # The stream restarted: its old timeline is stale, and so are the phases measured on it.
            self._speeds.clear()
            self._recent.clear()
            self._period = None
        self._speeds.append((pts_s, window_speed))
        if len(self._speeds) < MIN_SPEEDS:
            return None
        if self._since >= REESTIMATE_EVERY:
            self._reestimate()
        self._since += 1
        baseline = self._baseline(pts_s)
        if baseline is None:
            return None
        self._recent.append((pts_s, baseline - window_speed))
        while self._recent[0][0] <= pts_s - SPAN_S:
            self._recent.popleft()
        shortfall = float(np.mean([s for _, s in self._recent]))
        self._history.append(shortfall)
        if self._calibration is None:
            return None
        return (shortfall - self._calibration[0]) / self._calibration[1]

    def _reestimate(self) -> None:
        older = np.array(self._speeds, dtype=np.float64)[:-GAP]  # at least MIN_SPEEDS - GAP speeds
        self._period = signal_period(older[:, 0], older[:, 1])
        settled = np.array(self._history, dtype=np.float64)[: max(len(self._history) - GAP, 0)]
        if len(settled) >= MIN_HISTORY:
            median, spread = median_and_spread(settled)
            self._calibration = (float(median), float(spread))
        self._since = 0

    def _baseline(self, pts_s: float) -> float | None:
        """The median window speed at this phase of the last ``CYCLES`` cycles that the kept speeds reach."""
        if self._period is None:
            return None
        speeds = np.array(self._speeds, dtype=np.float64)
        earlier = [pts_s - k * self._period for k in range(1, CYCLES + 1)]
        earlier = [t for t in earlier if t >= speeds[0, 0]]
        if not earlier:
            return None
        return float(np.median(np.interp(earlier, speeds[:, 0], speeds[:, 1])))

    def state(self) -> dict[str, npt.NDArray[np.floating]]:
        """Everything it holds, as arrays (saved with the rest of the scene memory)."""
        return {
            "cycle_speeds": np.array(list(self._speeds), dtype=np.float64).reshape(-1, 2),
            "cycle_recent": np.array(list(self._recent), dtype=np.float64).reshape(-1, 2),
            "cycle_history": np.array(self._history, dtype=np.float64),
            "cycle_period": np.array([] if self._period is None else [self._period], dtype=np.float64),
            "cycle_calibration": np.array(self._calibration or (), dtype=np.float64),
            "cycle_since": np.array(self._since),
        }

    def restore(self, state: dict[str, npt.NDArray[np.floating]]) -> None:
        """Take back what :meth:`state` gave."""
        self._speeds.extend((float(t), float(s)) for t, s in state["cycle_speeds"])
        self._recent.extend((float(t), float(s)) for t, s in state["cycle_recent"])
        self._history.extend(float(s) for s in state["cycle_history"])
        period, calibration = state["cycle_period"], state["cycle_calibration"]
        self._period = float(period[0]) if len(period) else None
        self._calibration = (float(calibration[0]), float(calibration[1])) if len(calibration) else None
        self._since = int(state["cycle_since"])
