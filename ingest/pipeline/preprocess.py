"""Resize kept frames to the window size: centre crop or letterbox, RGB or grayscale.

Decoded PyAV frames are scaled by FFmpeg's swscale straight from their native pixel format (one pass: scale and
convert), and only frames the sampler kept ever reach this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

ResizeMode = Literal["crop", "letterbox"]
ColorMode = Literal["rgb", "gray"]


@dataclass(frozen=True)
class ResizePlan:
    """Scale the source to ``scaled_w×scaled_h``, then take (crop) or place (letterbox) it at ``x, y``."""

    scaled_w: int
    scaled_h: int
    x: int
    y: int
    mode: ResizeMode


def plan_resize(src_w: int, src_h: int, dst_w: int, dst_h: int, mode: ResizeMode) -> ResizePlan:
    if min(src_w, src_h, dst_w, dst_h) < 1:
        raise ValueError(f"cannot resize {src_w}×{src_h} to {dst_w}×{dst_h}")
    scale_to_cover = max(dst_w / src_w, dst_h / src_h)
    scale_to_fit = min(dst_w / src_w, dst_h / src_h)
    scale = scale_to_cover if mode == "crop" else scale_to_fit
    scaled_w = min(dst_w, round(src_w * scale)) if mode == "letterbox" else max(dst_w, round(src_w * scale))
    scaled_h = min(dst_h, round(src_h * scale)) if mode == "letterbox" else max(dst_h, round(src_h * scale))
    scaled_w, scaled_h = max(1, scaled_w), max(1, scaled_h)
    x, y = abs(scaled_w - dst_w) // 2, abs(scaled_h - dst_h) // 2
    return ResizePlan(scaled_w, scaled_h, x, y, mode)


class FramePreprocessor:
    """Turns a decoded frame (PyAV ``VideoFrame`` or an OpenCV BGR array) into ``H×W×C`` uint8."""

    def __init__(self, width: int, height: int, mode: ResizeMode = "crop", color: ColorMode = "rgb") -> None:
        self.width, self.height, self.mode, self.color = width, height, mode, color
        self.channels = 3 if color == "rgb" else 1
        self._plans: dict[tuple[int, int], ResizePlan] = {}

    def _plan(self, src_w: int, src_h: int) -> ResizePlan:
        plan = self._plans.get((src_w, src_h))
        if plan is None:
            plan = self._plans[(src_w, src_h)] = plan_resize(src_w, src_h, self.width, self.height, self.mode)
        return plan

    def from_av(self, frame: object) -> npt.NDArray[np.uint8]:
        """Scale and convert a PyAV ``VideoFrame`` in one swscale pass."""
        plan = self._plan(frame.width, frame.height)  # type: ignore[attr-defined]
        pixel_format = "rgb24" if self.color == "rgb" else "gray"
        scaled = frame.to_ndarray(  # type: ignore[attr-defined]
            width=plan.scaled_w, height=plan.scaled_h, format=pixel_format, interpolation="AREA"
        )
        return self._place(np.asarray(scaled, dtype=np.uint8).reshape(plan.scaled_h, plan.scaled_w, -1), plan)

    def from_bgr(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """Scale and convert an OpenCV BGR image (the fallback decoder's output)."""
        plan = self._plan(image.shape[1], image.shape[0])
        scaled = cv2.resize(image, (plan.scaled_w, plan.scaled_h), interpolation=cv2.INTER_AREA)
        code = cv2.COLOR_BGR2RGB if self.color == "rgb" else cv2.COLOR_BGR2GRAY
        converted = np.asarray(cv2.cvtColor(scaled, code), dtype=np.uint8)
        return self._place(converted.reshape(plan.scaled_h, plan.scaled_w, -1), plan)

    def _place(self, scaled: npt.NDArray[np.uint8], plan: ResizePlan) -> npt.NDArray[np.uint8]:
        if plan.mode == "crop":
            return np.ascontiguousarray(scaled[plan.y : plan.y + self.height, plan.x : plan.x + self.width])
        canvas = np.zeros((self.height, self.width, self.channels), dtype=np.uint8)
        canvas[plan.y : plan.y + plan.scaled_h, plan.x : plan.x + plan.scaled_w] = scaled
        return canvas
