"""The per-camera memory of normal windows: a window unlike the camera's past is far, one like it is near, and the
memory stays bounded, per camera and per model version."""

from __future__ import annotations

import numpy as np

from serving.anomaly import ScoreNormaliser
from serving.normal_memory import FeatureMemory, window_feature


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def test_novelty_is_near_zero_for_the_familiar_and_large_for_the_new() -> None:
    rng = np.random.default_rng(0)
    normal = unit(np.ones(16))
    memory = FeatureMemory(capacity=50, k=3)
    assert memory.novelty(normal) is None, "no neighbours yet"
    for _ in range(20):
        memory.add(unit(normal + 0.01 * rng.normal(size=16)))
    familiar = memory.novelty(unit(normal + 0.01 * rng.normal(size=16)))
    strange = memory.novelty(unit(-normal + rng.normal(size=16)))
    assert familiar is not None
    assert strange is not None
    assert familiar < 0.01 < 1.0 < strange


def test_the_memory_is_a_bounded_ring() -> None:
    memory = FeatureMemory(capacity=4, k=1)
    for index in range(10):
        memory.add(unit(np.eye(8)[index % 8]))
    assert len(memory) == 4
    # the last four added were axes 6, 7, 0, 1: axis 5 is no longer remembered, axis 1 is
    assert memory.novelty(unit(np.eye(8)[1])) == 0.0
    assert memory.novelty(unit(np.eye(8)[5])) == 1.0


def test_the_feature_sees_motion_as_well_as_appearance() -> None:
    still = np.tile(unit(np.arange(1, 9, dtype=np.float32)), (8, 1))
    moving = still + np.linspace(0, 1, 8, dtype=np.float32)[:, None] * unit(np.ones(8))
    clip = unit(still.mean(0))
    a, b = window_feature(still, clip), window_feature(moving, clip)
    assert np.isclose(np.linalg.norm(a), 1.0)
    assert float(a @ b) < 0.99, "same appearance, different motion: different features"


def test_each_camera_and_model_version_has_its_own_memory() -> None:
    normaliser = ScoreNormaliser(warmup=3, memory=100, max_cameras=10, normal_windows=10, neighbours=1)
    feature = unit(np.ones(4))
    assert normaliser.novelty("cam-1", "1", feature) is None
    assert normaliser.novelty("cam-1", "1", feature) == 0.0
    assert normaliser.novelty("cam-2", "1", feature) is None, "another camera starts empty"
    assert normaliser.novelty("cam-1", "2", feature) is None, "another model version: another embedding space"
