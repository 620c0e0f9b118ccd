"""Clip-consistent augmentation: one random crop, one colour jitter, one flip for every frame of a window.

Frames of a window must stay comparable (the tasks compare them), so the transform is drawn once per window, as in
DPC (Han et al., 2019) and CVRL's temporally consistent augmentation (Qian et al., CVPR 2021). All work is OpenCV
and NumPy on whole arrays, which release the GIL, so decode workers run in parallel with the training step.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from ingest.contract.model_input import centre_crop_box, match_channels, model_input, resize_frames
from trainer.config import DataConfig, ModelConfig

Frames = npt.NDArray[np.uint8]
__all__ = ["ClipAugment", "Frames", "match_channels"]
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ClipAugment:
    """Turns a decoded window into the model's input: ``[T0, H0, W0, C0]`` uint8 → ``[T, H, W, C]`` uint8."""

    def __init__(self, model: ModelConfig, data: DataConfig) -> None:
        self.model = model
        self.data = data

    @property
    def aspect(self) -> float:
        return self.model.frame_width / self.model.frame_height

    def evaluate(self, frames: Frames) -> Frames:
        """The deterministic model input of :func:`ingest.contract.model_input.model_input`."""
        model = self.model
        return model_input(frames, model.frame_height, model.frame_width, model.channels, model.window)

    def train(self, frames: Frames, start: int, rng: np.random.Generator) -> Frames:
        """T frames from ``start``, one random resized crop and one colour jitter for all of them."""
        model, data = self.model, self.data
        clip = match_channels(frames[start : start + model.window], model.channels)
        height, width = clip.shape[1:3]
        y0, x0, h, w = self._random_box(height, width, rng)
        out = resize_frames(clip[:, y0 : y0 + h, x0 : x0 + w], model.frame_width, model.frame_height)
        if data.hflip and rng.random() < 0.5:
            out = np.ascontiguousarray(out[:, :, ::-1])
        return self._jitter(out, rng)

    def _random_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        low, high = self.data.crop_scale
        for _ in range(10):  # as torchvision's RandomResizedCrop: try, then fall back to the centre crop
            area = height * width * rng.uniform(low, high)
            ratio = self.aspect * math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            w = round(math.sqrt(area * ratio))
            h = round(math.sqrt(area / ratio))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        return centre_crop_box(height, width, self.aspect)

    def _jitter(self, frames: Frames, rng: np.random.Generator) -> Frames:
        data = self.data
        if data.brightness == 0 and data.contrast == 0 and data.saturation == 0:
            return frames
        pixels = frames.astype(np.float32)
        pixels *= rng.uniform(1 - data.brightness, 1 + data.brightness)
        contrast = rng.uniform(1 - data.contrast, 1 + data.contrast)
        mean = float(pixels.mean())
        pixels = (pixels - mean) * contrast + mean
        if pixels.shape[-1] == 3 and data.saturation > 0:
            gray = (pixels @ _GRAY_WEIGHTS)[..., None]
            pixels = (pixels - gray) * rng.uniform(1 - data.saturation, 1 + data.saturation) + gray
        return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
