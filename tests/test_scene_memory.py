"""The per-cell scene memory on hand-made roads: flow direction is read right, a vehicle against the flow or one that
stands still is far from the cell's memory and named by its cell, the ordinary is near, dimming is not occupancy,
the newest windows wait out the gap, traffic slower than the camera's normal raises the slowdown score (dusk does
not), and a saved memory comes back the same (or is skipped, never a crash)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from serving import scene_cells, scene_flow
from serving.scene_cells import GRID, SIZE, cell_box
from serving.scene_memory import SceneMemory
from serving.scene_store import SceneMemories

FRAMES = 8
LANE_X = 20  # the lane's left edge (pixels); cells are SIZE // GRID = 8 wide, so the lane is in column 2
CAR = 6


def background() -> np.ndarray:
    rng = np.random.default_rng(0)
    road = np.full((SIZE, SIZE, 3), 70.0) + rng.normal(0, 4, (SIZE, SIZE, 1))
    return road


def window(cars: list[tuple[float, float]], brightness: float = 1.0) -> np.ndarray:
    """``FRAMES`` frames; each car is (first frame's y, pixels per frame); negative speed drives against the flow."""
    frames = np.repeat(background()[None], FRAMES, axis=0)
    for t in range(FRAMES):
        for y0, speed in cars:
            y = round(y0 + speed * t)
            if -CAR < y < SIZE:
                frames[t, max(0, y) : y + CAR, LANE_X : LANE_X + CAR] = 230.0
    return np.clip(frames * brightness, 0, 255).astype(np.uint8)


def traffic(index: int) -> list[tuple[float, float]]:
    """Normal traffic: cars down the lane at 2 px/frame, one entering every 3 windows."""
    return [(((index - start) * FRAMES * 2.0) % (SIZE + 20) - 10, 2.0) for start in range(0, index + 1, 3)][-4:]


def warmed(memory: SceneMemory, windows: int = 120) -> float:
    pts = 0.0
    for index in range(windows):
        memory.observe(window(traffic(index)), pts)
        pts += 0.8
    return pts


def test_flow_reads_the_direction_a_car_moves() -> None:
    down = scene_cells.window_maps(scene_cells.analysis_frames(window([(10.0, 2.0)])), None)[0]
    up = scene_cells.window_maps(scene_cells.analysis_frames(window([(40.0, -2.0)])), None)[0]
    still = scene_cells.window_maps(scene_cells.analysis_frames(window([])), None)[0]
    column = LANE_X // (SIZE // GRID)
    assert down[:, column, 1].sum() > 1.0, "down the frame: v > 0"
    assert up[:, column, 1].sum() < -1.0, "up the frame: v < 0"
    assert np.abs(still).max() < 1e-3, "nothing moves: no flow"


def test_dimming_the_whole_scene_is_not_occupancy() -> None:
    day = scene_cells.analysis_frames(window([])).mean(axis=0)
    dusk = scene_cells.analysis_frames(window([], brightness=0.5)).mean(axis=0)
    car = scene_cells.analysis_frames(window([(30.0, 0.0)], brightness=0.5)).mean(axis=0)
    base = scene_cells.brightness_normalised(day)
    assert scene_cells.occupancy(scene_cells.brightness_normalised(dusk), base).max() < 0.05
    assert scene_cells.occupancy(scene_cells.brightness_normalised(car), base).max() > 0.5


def test_a_car_against_the_flow_scores_high_and_in_its_cell() -> None:
    memory = SceneMemory(capacity=200, k=3, gap=10)
    pts = warmed(memory)
    ordinary = [memory.observe(window(traffic(120 + i)), pts + 0.8 * i).score for i in range(6)]
    wrong = memory.observe(window([(44.0, -2.0)]), pts + 6 * 0.8)
    assert all(s is not None for s in ordinary)
    assert wrong.score is not None
    assert wrong.score > 3 * max(1.0, *[s for s in ordinary if s is not None])
    assert wrong.cell is not None
    assert wrong.cell[1] in (LANE_X // (SIZE // GRID), (LANE_X + CAR) // (SIZE // GRID))


def test_a_car_that_stands_still_scores_high_where_it_stands() -> None:
    memory = SceneMemory(capacity=200, k=3, gap=10)
    pts = warmed(memory)
    scores = [memory.observe(window([(30.0, 0.0)]), pts + 0.8 * i) for i in range(15)]
    last = scores[-1]
    assert last.score is not None
    assert last.score > 3.0
    assert last.cell is not None
    row, col = last.cell
    side = SIZE // GRID
    assert col in (LANE_X // side, (LANE_X + CAR) // side), "the car covers columns 2 and 3"
    # rows 3 and 4, or the row just before it, where traffic would now pass and does not
    assert row in (30 // side - 1, 30 // side, (30 + CAR) // side), f"row {row}: not where the car stands"


def test_block_flow_reads_how_fast_a_car_moves() -> None:
    column = (LANE_X + CAR // 2) * scene_flow.SIZE // SIZE // (scene_flow.SIZE // scene_flow.GRID)
    slow, slow_moving = scene_flow.block_flow(window([(20.0, 1.0)]))
    fast, _ = scene_flow.block_flow(window([(20.0, 2.0)]))
    _, still_moving = scene_flow.block_flow(window([]))
    assert fast[:, column].max() > 1.5 * slow[:, column].max() > 0.0, "twice the speed reads faster"
    assert slow_moving[:, column].max() > scene_flow.MOVING_SHARE
    assert still_moving.max() == 0.0, "an empty road does not move"


def slowdowns(memory: SceneMemory, pts: float, cars: list[list[tuple[float, float]]], brightness: float = 1.0) -> list:
    return [memory.observe(window(c, brightness), pts + 0.8 * i).slowdown for i, c in enumerate(cars)]


def test_traffic_slower_than_the_cameras_normal_raises_the_slowdown_score() -> None:
    memory = SceneMemory(capacity=200, k=3, gap=10)
    pts = warmed(memory, 150)
    ordinary = slowdowns(memory, pts, [traffic(150 + i) for i in range(12)])
    # A queue: the same cars, crawling at a fifth of the speed (and then standing), for 10 s.
    crawling = [[(y, 0.4) for y, _ in traffic(162 + i)] for i in range(6)]
    standing = [[(y, 0.0) for y, _ in traffic(168)] for _ in range(6)]
    queue = slowdowns(memory, pts + 12 * 0.8, crawling + standing)
    assert all(s is not None for s in ordinary + queue)
    assert max(queue[-4:]) > 1.0 > 0.5 * max(ordinary), f"queue {queue}, ordinary {ordinary}"
    assert queue[-1] > max(ordinary) + 1.0


def test_dusk_is_not_a_slowdown() -> None:
    memory = SceneMemory(capacity=200, k=3, gap=10)
    pts = warmed(memory, 150)
    ordinary = slowdowns(memory, pts, [traffic(150 + i) for i in range(12)])
    dusk = slowdowns(memory, pts + 12 * 0.8, [traffic(162 + i) for i in range(12)], brightness=0.6)
    assert all(s is not None for s in ordinary + dusk)
    assert max(dusk) < max(ordinary) + 1.0, f"dusk {dusk}, ordinary {ordinary}"


def test_scoring_waits_for_memory_and_the_newest_windows_wait_out_the_gap() -> None:
    memory = SceneMemory(capacity=30, k=3, gap=10)
    first = [memory.observe(window(traffic(i)), 0.8 * i) for i in range(25)]
    assert all(s.score is None for s in first[:20]), "fewer than MIN_MEMORY windows behind the gap"
    assert len(memory) == 15, "25 seen, the newest 10 still wait"
    for i in range(25, 100):
        memory.observe(window(traffic(i)), 0.8 * i)
    assert len(memory) == 30, "bounded by capacity"


def test_saved_memories_come_back_and_score_the_same(tmp_path: Path) -> None:
    memories = SceneMemories(max_cameras=4, capacity=200, neighbours=3, gap=10)
    for index in range(100):
        memories.observe("cam/1", window(traffic(index)), 0.8 * index)
    assert memories.save(tmp_path) == 1
    restored = SceneMemories(max_cameras=4, capacity=200, neighbours=3, gap=10)
    assert restored.load(tmp_path) == 1
    for index in range(100, 110):
        a = memories.observe("cam/1", window(traffic(index)), 0.8 * index)
        b = restored.observe("cam/1", window(traffic(index)), 0.8 * index)
        assert a.score is not None
        assert b.score == pytest.approx(a.score, rel=1e-4, abs=1e-6)
        assert (a.cell, a.remembered) == (b.cell, b.remembered)
        assert a.slowdown is not None
        assert b.slowdown == pytest.approx(a.slowdown, rel=1e-6, abs=1e-9)


def test_a_broken_or_foreign_memory_file_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    memories = SceneMemories(max_cameras=4, capacity=50, neighbours=3, gap=5)
    for index in range(30):
        memories.observe("good", window(traffic(index)), 0.8 * index)
    memories.save(tmp_path)
    (tmp_path / "broken.npz").write_bytes(b"not a zip file")
    np.savez(tmp_path / "foreign.npz", camera=np.array("x"), layout=np.array("scene/0"))
    restored = SceneMemories(max_cameras=4)
    with caplog.at_level(logging.WARNING):
        assert restored.load(tmp_path) == 1
    assert "unreadable" in caplog.text
    assert "layout scene/0" in caplog.text
    assert SceneMemories(max_cameras=4).load(tmp_path / "missing") == 0


def test_the_least_recently_seen_camera_is_dropped() -> None:
    memories = SceneMemories(max_cameras=2, capacity=10, neighbours=1, gap=1)
    for camera in ("a", "b", "c"):
        memories.observe(camera, window([]), 0.0)
    assert len(memories) == 2


def test_a_cell_box_is_in_the_windows_own_pixels() -> None:
    assert cell_box(0, 0, 64, 64) == [0, 0, 8, 8]
    # a 16:9 frame: the analysis crop is its centred square, 180 × 180 from x = 70
    assert cell_box(GRID - 1, GRID - 1, 180, 320) == [70 + 7 * 180 // 8, 7 * 180 // 8, 250, 180]


def test_one_camera_being_scored_does_not_hold_up_another() -> None:
    memories = SceneMemories(max_cameras=4, capacity=20, neighbours=1, gap=1)
    memories.observe("slow", window([]), 0.0)
    memories.observe("other", window([]), 0.0)
    entered, release = threading.Event(), threading.Event()
    slow_memory = memories._memory("slow")[0]
    original = slow_memory.observe

    def blocking(frames: np.ndarray, pts_s: float) -> object:
        entered.set()
        release.wait(10)
        return original(frames, pts_s)

    slow_memory.observe = blocking  # type: ignore[method-assign]
    worker = threading.Thread(target=memories.observe, args=("slow", window([]), 0.8))
    worker.start()
    try:
        assert entered.wait(10), "the slow camera started scoring"
        other = threading.Thread(target=memories.observe, args=("other", window([]), 0.8))
        other.start()
        other.join(5)
        assert not other.is_alive(), "another camera waited for the slow one's lock"
    finally:
        release.set()
        worker.join(10)
