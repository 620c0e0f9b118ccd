"""Cheap, deterministic sensor noise.

A small bank of noise images is drawn once from the seed, at three gain levels, and split into a positive
and a negative uint8 part; a frame gets ``saturating_add(pos) then saturating_subtract(neg)`` with the two
parts taken from different bank entries, so the pattern repeats only every ``bank**2`` frames. Per frame
this is two uint8 passes, no float work.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from ingest.tools.synth.lighting import noise_sigma

U8 = npt.NDArray[np.uint8]
TIER_SIGMAS = (2.0, 3.4, 4.8)
_BANK_BYTES = 48_000_000


class NoiseBank:
    def __init__(self, width: int, height: int, rng: np.random.Generator) -> None:
        per_entry = width * height * 3 * 2 * len(TIER_SIGMAS)
        self.size = max(2, min(8, _BANK_BYTES // per_entry))
        shape = (self.size, height, width)
        luma = rng.standard_normal(shape, dtype=np.float32)
        chroma = rng.standard_normal((*shape, 3), dtype=np.float32)
        unit = 0.8 * luma[..., None] + 0.6 * chroma  # unit variance, mostly luminance noise
        self._pos: list[U8] = []
        self._neg: list[U8] = []
        for sigma in TIER_SIGMAS:
            scaled = unit * sigma
            self._pos.append(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
            self._neg.append(np.clip(np.rint(-scaled), 0, 255).astype(np.uint8))

    def apply(self, img: U8, frame_index: int, level: float) -> None:
        """Add noise for illumination ``level`` to ``img`` in place."""
        sigma = noise_sigma(level)
        tier = min(range(len(TIER_SIGMAS)), key=lambda k: abs(TIER_SIGMAS[k] - sigma))
        a = frame_index % self.size
        b = (frame_index // self.size + 3 * frame_index + 1) % self.size
        cv2.add(img, self._pos[tier][a], dst=img)
        cv2.subtract(img, self._neg[tier][b], dst=img)
