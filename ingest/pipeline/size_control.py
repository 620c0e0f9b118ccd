"""Fit a window under the maximum message size by stepping JPEG quality down, within a floor."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ingest.contract import FrameCodec, Window, WindowTooLargeError, encode_window


@dataclass(frozen=True)
class FittedWindow:
    window: Window  # as encoded (its quality is the one that fitted)
    payload: bytes
    quality_steps: int


def fit_window(window: Window, max_bytes: int, *, min_quality: int = 50, step: int = 10) -> FittedWindow:
    """Encode ``window``, lowering JPEG quality by ``step`` down to ``min_quality`` until it fits.

    Raises :class:`WindowTooLargeError` (for the last attempt) if it still does not fit; PNG and raw-zlib windows
    are lossless and cannot step, so they either fit at once or raise.
    """
    steps = 0
    while True:
        try:
            return FittedWindow(window, encode_window(window, max_bytes=max_bytes), steps)
        except WindowTooLargeError:
            if window.codec is not FrameCodec.JPEG or window.quality <= min_quality:
                raise
            window = dataclasses.replace(window, quality=max(min_quality, window.quality - step))
            steps += 1
