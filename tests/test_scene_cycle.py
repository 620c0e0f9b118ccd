"""The signal-cycle part of the slowdown score: a red light is ordinary, a queue that should have moved on is not."""

from __future__ import annotations

import numpy as np
import pytest

from serving.scene_cycle import CycleSlowdown, signal_period

PERIOD_S = 38.0  # the synthetic world's signal: 20 s green, 3 s yellow, 15 s red
STEP_S = 0.8  # one window


def signal_speed(t: float, rng: np.random.Generator) -> float:
    """A window speed on a signalised road: fast while green, crawling while red, some noise."""
    phase = t % PERIOD_S
    return (1.0 if phase < 23.0 else 0.3) + float(rng.normal(0.0, 0.05))


def test_the_period_of_a_signal_is_found_and_noise_has_none() -> None:
    rng = np.random.default_rng(0)
    pts = np.arange(0.0, 400.0, STEP_S)
    speeds = np.array([signal_speed(t, rng) for t in pts])
    period = signal_period(pts, speeds)
    assert period == pytest.approx(PERIOD_S, abs=STEP_S)
    assert signal_period(pts, rng.normal(size=len(pts))) is None


def feed(cycle: CycleSlowdown, times: np.ndarray, rng: np.random.Generator, stop: tuple[float, float]) -> dict:
    """Scores by window time; during ``stop`` (start, end) the traffic stands although the light is green."""
    scores = {}
    for t in times:
        speed = 0.05 if stop[0] <= t < stop[1] else signal_speed(float(t), rng)
        scores[float(t)] = cycle.observe(speed, float(t))
    return scores


def test_red_lights_score_low_and_a_queue_on_green_scores_high() -> None:
    rng = np.random.default_rng(1)
    cycle = CycleSlowdown()
    # Traffic stands from 382 s to 392 s, 2–12 s into a cycle (380 s = 10 cycles): the light is green.
    times = np.arange(0.0, 440.0, STEP_S)
    scores = feed(cycle, times, rng, stop=(380.0 + 2.0, 380.0 + 12.0))
    jam = [s for t, s in scores.items() if 384.0 <= t < 392.0]
    red = [s for t, s in scores.items() if 300.0 <= t < 380.0 and t % PERIOD_S >= 23.0]
    assert all(s is not None for s in jam + red), "the cycle and the calibration are known by 300 s"
    assert min(jam) > max(red), f"jam {min(jam):.2f} vs red lights up to {max(red):.2f}"
    assert max(red) < 3.0


def test_there_is_no_score_without_a_cycle() -> None:
    rng = np.random.default_rng(2)
    cycle = CycleSlowdown()
    assert all(cycle.observe(float(rng.uniform(0.2, 1.0)), t) is None for t in np.arange(0.0, 300.0, STEP_S))


def test_a_restored_cycle_scores_as_the_saved_one_and_a_restart_forgets_the_timeline() -> None:
    rng = np.random.default_rng(3)
    saved = CycleSlowdown()
    feed(saved, np.arange(0.0, 300.0, STEP_S), rng, stop=(0.0, 0.0))
    restored = CycleSlowdown()
    restored.restore(saved.state())
    for t in np.arange(300.0, 340.0, STEP_S):
        speed = signal_speed(float(t), rng)
        a, b = saved.observe(speed, float(t)), restored.observe(speed, float(t))
        assert a is not None
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12)
    # The stream starts again at 0: earlier phases are stale, so there is no score until a cycle is known again.
    assert restored.observe(1.0, 0.0) is None
