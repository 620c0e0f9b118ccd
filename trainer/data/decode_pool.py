"""Decode workers: wire bytes → pixels → augmented model input, on threads, off the training loop.

OpenCV's JPEG decoder, its resize and NumPy's array maths release the GIL, so ``workers`` threads decode in
parallel with each other and with the training step (whose PyTorch kernels release it too).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ingest.contract import decode_window
from trainer.data.augment import ClipAugment, Frames


class DecodePool:
    """``submit_*`` return futures of uint8 ``[T, H, W, C]`` arrays, or of the :class:`WindowDecodeError`."""

    def __init__(self, workers: int, augment: ClipAugment) -> None:
        self.augment = augment
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")

    def submit_train(self, data: bytes, frame_start: int, seed: int) -> Future[Frames]:
        return self._executor.submit(self._train, data, frame_start, seed)

    def submit_eval(self, data: bytes) -> Future[Frames]:
        return self._executor.submit(self._eval, data)

    def _train(self, data: bytes, frame_start: int, seed: int) -> Frames:
        return self.augment.train(decode_window(data).frames, frame_start, np.random.default_rng(seed))

    def _eval(self, data: bytes) -> Frames:
        return self.augment.evaluate(decode_window(data).frames)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
