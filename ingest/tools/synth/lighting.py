"""Illumination over the clip (day -> dusk -> night) and the colours that follow from it.

``level`` is 1.0 in full daylight and ``NIGHT_LEVEL`` at night. Every colour here is RGB on a 0..255 scale
(ambient factors are multipliers on albedo).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

NIGHT_LEVEL = 0.06
DUSK_START_FRACTION = 0.30  # of the clip: daylight until here
NIGHT_START_FRACTION = 0.85  # night from here to the end

_KEYS = np.array([0.0, NIGHT_LEVEL, 0.30, 0.60, 1.0])
_AMBIENT = np.array(
    [  # multiplier on albedo; dusk is warm, night is dim and blue
        [0.10, 0.11, 0.17],
        [0.12, 0.13, 0.20],
        [0.40, 0.34, 0.36],
        [0.86, 0.72, 0.60],
        [1.00, 1.00, 1.00],
    ]
)
_SKY_ZENITH = np.array([[6, 8, 20], [9, 11, 26], [52, 48, 92], [92, 110, 170], [96, 146, 208]], dtype=np.float64)
_SKY_HORIZON = np.array([[20, 18, 32], [28, 26, 42], [168, 92, 72], [238, 176, 122], [198, 214, 230]], dtype=np.float64)


def _smoothstep(edge0: float, edge1: float, x: float) -> float:
    u = min(1.0, max(0.0, (x - edge0) / (edge1 - edge0)))
    return u * u * (3.0 - 2.0 * u)


def illumination_at(t: float, seconds: float, day_to_night: bool) -> float:
    """Illumination level at time ``t`` of a clip of length ``seconds`` (a smooth, monotone curve)."""
    if not day_to_night:
        return 1.0
    s = _smoothstep(DUSK_START_FRACTION, NIGHT_START_FRACTION, t / seconds)
    return 1.0 + (NIGHT_LEVEL - 1.0) * s


def _interp_rows(table: npt.NDArray[np.float64], level: float) -> npt.NDArray[np.float64]:
    return np.array([np.interp(level, _KEYS, table[:, c]) for c in range(table.shape[1])])


def ambient_rgb(level: float) -> npt.NDArray[np.float64]:
    return _interp_rows(_AMBIENT, level)


def sky_rgb(level: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(zenith, horizon) sky colours."""
    return _interp_rows(_SKY_ZENITH, level), _interp_rows(_SKY_HORIZON, level)


def haze_rgb(level: float) -> npt.NDArray[np.float64]:
    """Colour distant things fade towards: the horizon sky, slightly greyed."""
    horizon = _interp_rows(_SKY_HORIZON, level)
    return 0.8 * horizon + 0.2 * horizon.mean()


def street_lamps(level: float) -> float:
    """0 (off) .. 1 (fully on): lamps come on during dusk."""
    return 1.0 - _smoothstep(0.30, 0.55, level)


def vehicle_lights(level: float) -> float:
    """0 (daylight: only daytime running lights) .. 1 (night: headlights, tail lights, glow)."""
    return 1.0 - _smoothstep(0.35, 0.75, level)


def daylight(level: float) -> float:
    """0 .. 1 strength of direct sunlight (drives vehicle shadows)."""
    return _smoothstep(0.45, 0.9, level)


def noise_sigma(level: float) -> float:
    """Sensor noise standard deviation in 8-bit levels: the gain rises as light fails."""
    return 1.6 + 3.4 * (1.0 - level)
