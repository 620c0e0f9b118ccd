"""A camera's memory of its normal windows, and how far a new window is from it (kNN novelty).

Prediction error rewards the predictable: a jam or a stalled vehicle makes a scene *easier* to predict. Strong video
anomaly methods (PatchCore-style memory banks, anomalib's video models) instead score the distance of a window to
the camera's own normal windows. Each camera keeps its last ``capacity`` window features (bounded; the stream is
mostly normal, so every window joins after it is scored) and a window's novelty is 1 − the mean cosine similarity
to its ``k`` nearest neighbours, computed before the window joins, so an anomaly does not hide itself.

The feature of a window: its clip embedding beside the mean absolute change of its frame embeddings from frame to
frame (how much moves, in the encoder's terms), each L2-normalised, so appearance and motion weigh alike.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_EPS = 1e-8


def window_feature(
    frame_embeddings: npt.NDArray[np.float32], clip_embedding: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """``[T, D]`` frame embeddings and ``[D]`` clip embedding → the ``[2D]`` unit feature kNN compares."""
    motion = np.abs(np.diff(frame_embeddings.astype(np.float32), axis=0)).mean(axis=0)
    parts = [clip_embedding.astype(np.float32), motion]
    joined = np.concatenate([p / max(float(np.linalg.norm(p)), _EPS) for p in parts])
    result: npt.NDArray[np.float32] = (joined / max(float(np.linalg.norm(joined)), _EPS)).astype(np.float32)
    return result


class FeatureMemory:
    """The last ``capacity`` features of one camera (a ring buffer); not thread-safe (its owner locks)."""

    def __init__(self, capacity: int, k: int) -> None:
        self.capacity = capacity
        self.k = k
        self._features: npt.NDArray[np.float32] | None = None
        self._count = 0

    def __len__(self) -> int:
        return min(self._count, self.capacity)

    def novelty(self, feature: npt.NDArray[np.float32]) -> float | None:
        """1 − mean cosine to the ``k`` nearest remembered features; None until ``k`` are remembered."""
        if self._features is None or len(self) < self.k:
            return None
        similarities = self._features[: len(self)] @ feature
        nearest = np.partition(similarities, len(similarities) - self.k)[-self.k :]
        return float(1.0 - nearest.mean())

    def add(self, feature: npt.NDArray[np.float32]) -> None:
        if self._features is None:
            self._features = np.zeros((self.capacity, feature.shape[0]), dtype=np.float32)
        self._features[self._count % self.capacity] = feature
        self._count += 1
