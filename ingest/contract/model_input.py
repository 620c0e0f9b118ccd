"""The one preprocessing contract from window frames to a model's input, shared by training, evaluation, the export's
parity check and every serving path (HTTP ``/embed/window``, ``/score/window``, ``/embed/image``, stream mode).

A window of another size or channel count than the model's input is brought to it exactly as the trainer evaluates:
the first ``window`` frames, the largest centred crop of the model's aspect ratio, an area resize (bilinear when
enlarging), gray replicated to RGB or RGB luma-weighted to gray. So ingest may cut 128×128 windows for a 64×64
model, and what serving scores is what the trainer measured. Only a window with fewer frames than the model needs
cannot fit (:class:`ModelInputError`).
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

Frames = npt.NDArray[np.uint8]
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ModelInputError(ValueError):
    """Frames that no crop or resize can turn into the model's input (too few frames, bad shape)."""


def model_input(frames: Frames, height: int, width: int, channels: int, window: int) -> Frames:
    """``[T0, H0, W0, C0]`` uint8 → the model's ``[window, height, width, channels]``; see the module docstring."""
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ModelInputError(f"frames must be [T, H, W, 1 or 3], got shape {list(frames.shape)}")
    if frames.shape[0] < window:
        raise ModelInputError(f"{frames.shape[0]} frames, the model takes {window}")
    clip = match_channels(frames[:window], channels)
    y0, x0, h, w = centre_crop_box(clip.shape[1], clip.shape[2], width / height)
    return resize_frames(clip[:, y0 : y0 + h, x0 : x0 + w], width, height)


def match_channels(frames: Frames, channels: int) -> Frames:
    """``[T, H, W, C]`` with C in (1, 3) → ``channels`` channels (gray is replicated; RGB is luma-weighted)."""
    have = frames.shape[-1]
    if have == channels:
        return frames
    if channels == 3:
        return np.repeat(frames, 3, axis=-1)
    gray = (frames.astype(np.float32) @ _GRAY_WEIGHTS)[..., None]
    return np.clip(gray + 0.5, 0, 255).astype(np.uint8)


def resize_frames(frames: Frames, width: int, height: int) -> Frames:
    """Resize every frame; area interpolation to shrink, bilinear to enlarge."""
    if frames.shape[1:3] == (height, width):
        return np.ascontiguousarray(frames)
    shrink = frames.shape[1] >= height and frames.shape[2] >= width
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out = np.empty((frames.shape[0], height, width, frames.shape[3]), dtype=np.uint8)
    for index, frame in enumerate(frames):
        resized = cv2.resize(frame, (width, height), interpolation=interpolation)
        out[index] = resized.reshape(height, width, -1)
    return out


def centre_crop_box(height: int, width: int, aspect: float) -> tuple[int, int, int, int]:
    """(y0, x0, h, w) of the largest centred box with ``w / h == aspect``."""
    if width / height > aspect:
        box_w, box_h = round(height * aspect), height
    else:
        box_w, box_h = width, round(width / aspect)
    return (height - box_h) // 2, (width - box_w) // 2, box_h, box_w
