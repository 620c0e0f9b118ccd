"""Anomaly scores: how badly the predictor foresaw a window's future, normalised per camera.

The raw score is the future-prediction error in embedding space (as in CPC / Dense Predictive Coding): the predictor
sees the embeddings of the first K frames and predicts the next M; the score is 1 − cosine similarity between
predicted and actual embeddings, averaged over the M frames (0 = perfect, 2 = opposite). Scenes differ per camera (a
highway is busier than a car park), so raw scores are only comparable within a camera: each camera keeps running
statistics and the reported score is the z-score against them — computed before the window is added, so an anomaly
does not hide itself. The optional pixel head gives a second, interpretable error (MSE of the low-resolution next
frame, as in Liu et al., CVPR 2018). A third score, ``knn_score``, is the window's distance to the camera's own
memory of normal windows (:mod:`serving.normal_memory`), which does not reward the predictable. A fourth,
``scene_score``, compares each grid cell's motion, direction and stillness with that cell's memory
(:mod:`serving.scene_memory`) and names the cell that scored highest. A fifth, ``slowdown_score``, says how
much slower than usual the camera's traffic has moved over the last seconds (:mod:`serving.scene_flow`), and than
at the same moment of its earlier signal cycles (:mod:`serving.scene_cycle`): a jam, or the queue behind a stalled
vehicle.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from serving.normal_memory import FeatureMemory
from serving.scene_store import SceneMemories

_EPS = 1e-8


def prediction_error(predicted: npt.NDArray[np.float32], actual: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """``[N, M, D]`` predicted and actual embeddings → ``[N]`` mean of 1 − cosine over the M future frames."""
    p = predicted.astype(np.float64)
    a = actual.astype(np.float64)
    cosine = (p * a).sum(-1) / np.maximum(np.linalg.norm(p, axis=-1) * np.linalg.norm(a, axis=-1), _EPS)
    result: npt.NDArray[np.float64] = (1.0 - cosine).mean(axis=1)
    return result


def pixel_error(predicted: npt.NDArray[np.float32], actual: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """``[N, h, w, C]`` predicted next frames in [0, 1] and ``[N, H, W, C]`` actual ones → ``[N]`` mean squared error,
    after area-downscaling the actual frames to the prediction's size."""
    n, h, w, c = predicted.shape
    errors = np.empty(n, dtype=np.float64)
    for index in range(n):
        target = cv2.resize(actual[index], (w, h), interpolation=cv2.INTER_AREA).reshape(h, w, c)
        errors[index] = float(np.mean((predicted[index].astype(np.float64) - target / 255.0) ** 2))
    return errors


@dataclass(frozen=True)
class CameraScore:
    """A normalised score: ``z`` is None while the camera has fewer than the warm-up windows behind it."""

    z: float | None
    count: int
    mean: float
    std: float


class RunningStats:
    """Mean and variance of a stream of scores: exact (Welford) for the first ``memory`` values, then an exponentially
    weighted average over about ``memory`` values, so a camera's baseline follows day, night and seasons."""

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self.count = 0
        self.mean = 0.0
        self.variance = 0.0

    def add(self, value: float) -> None:
        # With n = count + 1 this is Welford's update of the population variance; capping n turns it into an EWMA.
        self.count += 1
        n = min(self.count, self.memory)
        delta = value - self.mean
        self.mean += delta / n
        self.variance = (1.0 - 1.0 / n) * (self.variance + delta * delta / n)

    @property
    def std(self) -> float:
        return math.sqrt(max(self.variance, 0.0))


class ScoreNormaliser:
    """Per-camera running statistics of raw scores; thread-safe; at most ``max_cameras`` cameras (LRU).

    Statistics belong to one model version: embeddings of another version live in another space, so a camera's
    statistics restart when the version scoring it changes.
    """

    def __init__(
        self,
        warmup: int,
        memory: int,
        max_cameras: int,
        normal_windows: int = 1000,
        neighbours: int = 5,
        scenes: SceneMemories | None = None,
    ) -> None:
        self.warmup = warmup
        # Per-camera cell memories (``scene_score``): model-independent, so kept across versions.
        self.scenes = scenes if scenes is not None else SceneMemories(max_cameras=min(max_cameras, 256))
        self.memory = memory
        self.max_cameras = max_cameras
        self.normal_windows = normal_windows
        self.neighbours = neighbours
        self._cameras: OrderedDict[str, tuple[str, RunningStats, FeatureMemory]] = OrderedDict()
        self._lock = threading.Lock()

    def _camera(self, camera_id: str, model_version: str) -> tuple[str, RunningStats, FeatureMemory]:
        """The camera's state for this model version (a new version starts it afresh); caller holds the lock."""
        entry = self._cameras.get(camera_id)
        if entry is None or entry[0] != model_version:
            entry = (model_version, RunningStats(self.memory), FeatureMemory(self.normal_windows, self.neighbours))
        self._cameras[camera_id] = entry
        self._cameras.move_to_end(camera_id)
        while len(self._cameras) > self.max_cameras:
            self._cameras.popitem(last=False)
        return entry

    def novelty(self, camera_id: str, model_version: str, feature: npt.NDArray[np.float32]) -> float | None:
        """The window's kNN distance to the camera's memory of normal windows, then remember it."""
        with self._lock:
            memory = self._camera(camera_id, model_version)[2]
            distance = memory.novelty(feature)
            memory.add(feature)
            return distance

    def observe(self, camera_id: str, model_version: str, raw: float) -> CameraScore:
        """Score ``raw`` against the camera's statistics so far, then add it to them."""
        with self._lock:
            stats = self._camera(camera_id, model_version)[1]
            z = None
            if stats.count >= self.warmup and math.isfinite(raw):
                z = (raw - stats.mean) / max(stats.std, 1e-6)
            result = CameraScore(z=z, count=stats.count, mean=stats.mean, std=stats.std)
            if math.isfinite(raw):
                stats.add(raw)
            return result

    def __len__(self) -> int:
        with self._lock:
            return len(self._cameras)
