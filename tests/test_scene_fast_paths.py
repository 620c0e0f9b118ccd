"""The scene memory's fast paths compute what the plain formulas say: the background median, each cell's distance
to its memory, the per-cell flow sums and the per-block flow of a window are each checked against the direct
numpy expression on random and hand-made inputs, and a memory that wrapped its ring saves and restores in order."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from serving import scene_cells, scene_flow
from serving.scene_cells import FEATURES, GRID, SIZE, cells
from serving.scene_memory import SceneMemory, cell_novelty, median_frame
from tests.test_scene_memory import traffic, window


@pytest.mark.parametrize("count", [1, 2, 49, 50])
def test_the_background_median_is_numpys_median(count: int) -> None:
    rng = np.random.default_rng(count)
    frames = [rng.random((SIZE // 2, SIZE // 2, 3), dtype=np.float32) for _ in range(count)]
    expected = np.median(np.stack(frames), axis=0).astype(np.float32)
    assert np.array_equal(median_frame(frames), expected)


@pytest.mark.parametrize(("remembered", "k"), [(3, 5), (20, 5), (300, 5), (300, 1)])
def test_cell_novelty_is_the_mean_distance_to_the_k_nearest(remembered: int, k: int) -> None:
    rng = np.random.default_rng(remembered)
    bank = rng.normal(size=(remembered, GRID * GRID, FEATURES)).astype(np.float16).astype(np.float32)
    bank[:, 0] = 0.0  # a cell that never changed: its spread is the floor, not zero
    features = rng.normal(size=(GRID * GRID, FEATURES)).astype(np.float32)
    spread = bank.std(axis=0) + 1e-3
    distances = np.sqrt((((bank - features[None]) / spread[None]) ** 2).sum(axis=-1))  # [N, cells]
    expected = np.sort(distances, axis=0)[: min(k, remembered)].mean(axis=0)
    got = cell_novelty(np.ascontiguousarray(np.moveaxis(bank, 0, -1)), features, k)
    assert got.shape == (GRID * GRID,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_cell_flow_sums_are_the_sums_over_frame_pairs() -> None:
    frames = scene_cells.analysis_frames(window(traffic(7)))
    gray = frames @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    change = np.diff(gray, axis=0)
    middle = 0.5 * (gray[1:] + gray[:-1])
    dy, dx = np.gradient(middle, axis=1), np.gradient(middle, axis=2)
    sxx, syy, sxy = cells(dx * dx).sum(0), cells(dy * dy).sum(0), cells(dx * dy).sum(0)
    sxt, syt = cells(dx * change).sum(0), cells(dy * change).sum(0)
    det = sxx * syy - sxy * sxy + 1e-6
    u, v, motion = scene_cells.flow_and_motion(gray)
    assert np.abs(u).max() > 0.1, "the hand-made car moves: the check is not on an empty window"
    np.testing.assert_allclose(u, -(syy * sxt - sxy * syt) / det, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(v, -(sxx * syt - sxy * sxt) / det, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(motion, cells(np.abs(change)).mean(0), rtol=1e-5, atol=1e-7)


def test_block_flow_is_the_block_mean_of_every_pairs_flow() -> None:
    frames = np.repeat(np.repeat(window(traffic(7)), 2, axis=1), 2, axis=2)  # 128×128: the flow size, no resize
    gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)  # type: ignore[attr-defined]
    flow = np.stack([dis.calc(gray[i], gray[i + 1], None) for i in range(len(gray) - 1)])
    moving = (np.hypot(flow[..., 0], flow[..., 1]) > scene_flow.MOVING_PX).astype(np.float32)
    count = scene_flow.block_means(moving).sum(axis=0)
    u = scene_flow.block_means(flow[..., 0] * moving).sum(axis=0) / (count + 1e-3)
    v = scene_flow.block_means(flow[..., 1] * moving).sum(axis=0) / (count + 1e-3)
    speed, share = scene_flow.block_flow(frames)
    assert share.max() > 0.1, "the hand-made car moves: the check is not on an empty window"
    np.testing.assert_allclose(speed, np.hypot(u, v), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(share, count / flow.shape[0], rtol=1e-6, atol=1e-7)


def test_a_memory_that_wrapped_its_ring_restores_in_order_and_scores_the_same() -> None:
    memory = SceneMemory(capacity=30, k=3, gap=10)
    for index in range(100):  # 90 remembered into 30 slots: the ring wrapped three times
        memory.observe(window(traffic(index)), 0.8 * index)
    state = memory.state()
    assert state["bank"].shape == (30, GRID * GRID, FEATURES)
    restored = SceneMemory(capacity=30, k=3, gap=10)
    restored.restore(state)
    assert np.array_equal(restored.state()["bank"], state["bank"]), "the oldest first, as saved"
    for index in range(100, 110):
        a = memory.observe(window(traffic(index)), 0.8 * index)
        b = restored.observe(window(traffic(index)), 0.8 * index)
        assert a.score is not None
        assert b.score == a.score
        assert (a.cell, a.remembered) == (b.cell, b.remembered)
