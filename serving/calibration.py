"""How the scene memory's scores are calibrated per camera: 0 is the camera's median, 1 its 90th percentile."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def median_and_spread(
    history: npt.NDArray[np.floating], axis: int | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(median, 90th percentile − median) of ``history`` along ``axis``; a score is ``(value − median) / spread``.
    The spread is never 0 (a constant history would divide by it)."""
    low, high = np.percentile(history, [50, 90], axis=axis)
    return low, high - low + 1e-6
