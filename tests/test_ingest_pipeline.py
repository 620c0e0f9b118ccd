"""The per-camera pipeline pieces: PTS sampling, timeline discontinuities, windowing, size control, motion gate,
resizing. Pure logic, no decoder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.contract import FrameCodec, WindowTooLargeError
from ingest.pipeline.motion_gate import MotionGate, motion_energy
from ingest.pipeline.preprocess import FramePreprocessor, plan_resize
from ingest.pipeline.sampler import PtsSampler
from ingest.pipeline.size_control import fit_window
from ingest.pipeline.timeline import Continuity, Timeline
from ingest.pipeline.windower import Windower
from tests.conftest import make_window


def kept_times(times: list[float], fps: float) -> list[float]:
    sampler: PtsSampler[int] = PtsSampler(fps)
    kept = [t for index, t in enumerate(times) for t, _ in sampler.offer(t, index)]
    assert len(kept) + sampler.dropped + (1 if sampler._before else 0) == len(times), (
        "a frame was neither kept nor dropped"
    )
    return kept


def test_constant_30fps_sampled_to_10fps_is_every_third_frame() -> None:
    times = [index / 30 for index in range(300)]
    kept = kept_times(times, 10.0)
    assert len(kept) == 100
    np.testing.assert_allclose(np.diff(kept), 0.1, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), target=st.sampled_from([5.0, 10.0]))
def test_variable_frame_rate_gives_evenly_spaced_samples(seed: int, target: float) -> None:
    # A VFR source between 20 and 30 fps: each sample is within half a source interval (25 ms) of the grid.
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.uniform(1 / 30, 1 / 20, size=600)).tolist()
    kept = np.array(kept_times(times, target))
    grid = kept[0] + np.arange(len(kept)) / target
    assert np.all(np.abs(kept - grid) <= 0.5 / 20 + 1e-9)
    gaps = np.diff(kept)
    assert abs(np.mean(gaps) - 1 / target) < 0.01
    expected = (times[-1] - times[0]) * target
    assert abs(len(kept) - expected) <= 2


def test_source_slower_than_target_keeps_every_frame() -> None:
    times = [index / 5 for index in range(20)]
    assert kept_times(times, 10.0) == times


def test_timeline_flags_jumps_and_duplicates() -> None:
    timeline = Timeline(max_gap_s=0.5)
    events = [timeline.observe(t, 0.0)[1] for t in (0.0, 0.1, 0.1, 0.2, 3.0, 3.1, 1.0, 1.1)]
    assert events == [
        Continuity.CONTINUOUS,
        Continuity.CONTINUOUS,
        Continuity.DUPLICATE,
        Continuity.CONTINUOUS,
        Continuity.JUMP_FORWARD,
        Continuity.CONTINUOUS,
        Continuity.JUMP_BACKWARD,
        Continuity.CONTINUOUS,
    ]


def test_timeline_falls_back_to_arrival_time_without_pts() -> None:
    timeline = Timeline(max_gap_s=1.0)
    assert timeline.observe(None, 100.0) == (100.0, Continuity.CONTINUOUS)
    assert timeline.uses_arrival_time
    assert timeline.observe(5.0, 100.1) == (100.1, Continuity.CONTINUOUS), "must not mix PTS back in"


def feed(windower: Windower, count: int, start: float = 0.0) -> list:
    out = []
    for index in range(count):
        window = windower.add(start + index / 10, 1.7e9 + index, np.full((4, 4, 3), index % 256, np.uint8))
        if window is not None:
            out.append(window)
    return out


@pytest.mark.parametrize(("length", "stride", "frames", "expected"), [(8, 8, 40, 5), (8, 4, 40, 9), (4, 6, 22, 4)])
def test_windows_have_length_and_stride(length: int, stride: int, frames: int, expected: int) -> None:
    windower = Windower("cam", length=length, stride=stride, fps=10.0, run_id="r")
    windows = feed(windower, frames)
    assert len(windows) == expected
    assert all(w.frame_count == length for w in windows)
    starts = [w.pts_s[0] for w in windows]
    np.testing.assert_allclose(np.diff(starts), stride / 10)
    assert [w.sequence for w in windows] == list(range(expected))
    assert len({w.window_id for w in windows}) == expected


def test_a_break_never_lets_a_window_span_it_and_sequences_keep_rising() -> None:
    windower = Windower("cam", length=8, stride=8, fps=10.0, run_id="r")
    before = feed(windower, 12)  # one window, 4 frames pending
    assert windower.break_segment() == 4
    after = feed(windower, 16, start=100.0)
    assert [w.segment for w in before + after] == [0, 1, 1]
    assert [w.sequence for w in before + after] == [0, 1, 2]
    assert all(w.pts_s[0] >= 100.0 for w in after)


def test_size_control_steps_jpeg_quality_down_until_it_fits() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    noisy = dataclasses.replace(
        make_window(frames=8, height=64, width=64, codec=FrameCodec.JPEG), frames=noise, quality=95
    )
    full = fit_window(noisy, 10**9)
    assert full.quality_steps == 0
    smaller = fit_window(noisy, len(full.payload) - 1, min_quality=30, step=10)
    assert smaller.quality_steps >= 1
    assert smaller.window.quality < 95
    assert len(smaller.payload) <= len(full.payload) - 1
    with pytest.raises(WindowTooLargeError):
        fit_window(noisy, 1000, min_quality=50, step=10)


def test_lossless_codecs_do_not_step() -> None:
    window = make_window(frames=2, codec=FrameCodec.PNG)
    with pytest.raises(WindowTooLargeError):
        fit_window(window, 50)


def test_motion_gate_separates_static_from_moving() -> None:
    static = make_window(frames=8, height=64, width=64)
    still = dataclasses.replace(static, frames=np.repeat(static.frames[:1], 8, axis=0))
    assert motion_energy(still) == 0.0
    moving = make_window(frames=8, height=64, width=64)
    assert motion_energy(moving) > 5
    gate = MotionGate(threshold=2.0)
    assert not gate.passes(still)
    assert gate.passes(moving)
    assert MotionGate(0).passes(still)


@pytest.mark.parametrize("channels", [1, 3])
def test_motion_energy_is_the_mean_grey_level_change_on_the_probe_grid(channels: int) -> None:
    frames = np.random.default_rng(channels).integers(0, 256, (4, 64, 64, channels), dtype=np.uint8)
    window = dataclasses.replace(make_window(frames=4, height=64, width=64), frames=frames)
    grey = frames[:, ::2, ::2, :].astype(np.float64).mean(axis=3)  # 64 px sampled onto the 32-point probe grid
    assert motion_energy(window) == pytest.approx(np.abs(np.diff(grey, axis=0)).mean(), rel=1e-12)


@pytest.mark.parametrize(
    ("src", "dst", "mode", "scaled"),
    [
        ((1280, 720), (128, 128), "crop", (228, 128)),
        ((1280, 720), (128, 128), "letterbox", (128, 72)),
        ((640, 480), (160, 90), "crop", (160, 120)),
    ],
)
def test_resize_plans(src: tuple[int, int], dst: tuple[int, int], mode: str, scaled: tuple[int, int]) -> None:
    plan = plan_resize(*src, *dst, mode)  # type: ignore[arg-type]
    assert (plan.scaled_w, plan.scaled_h) == scaled


def test_preprocessor_crops_and_letterboxes_to_the_requested_shape() -> None:
    bgr = np.zeros((72, 128, 3), np.uint8)
    bgr[:, :, 2] = 255  # red in BGR
    cropped = FramePreprocessor(32, 32, "crop", "rgb").from_bgr(bgr)
    assert cropped.shape == (32, 32, 3)
    assert cropped[16, 16, 0] == 255
    boxed = FramePreprocessor(32, 32, "letterbox", "gray").from_bgr(bgr)
    assert boxed.shape == (32, 32, 1)
    assert boxed[0, 16, 0] == 0, "letterbox bars are black"
    assert boxed[16, 16, 0] > 50
