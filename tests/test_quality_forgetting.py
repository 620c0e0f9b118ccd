"""The forgetting benchmark's arithmetic, its day and night windows, its feeder, and ``video_report``'s refusals."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from bench.quality.forgetting import Feeder, day_night_windows, forgetting_markdown, forgetting_summary
from bench.quality.video import split_by_time, video_report
from bench.trainer_fixtures import Message
from ingest.bus import open_bus
from ingest.tools.synth import SynthConfig, generate_clip

SMALL = {"width": 160, "height": 96, "fps": 10}


def test_forgetting_is_phase_one_minus_phase_two_in_points_and_recovery_phase_three_minus_two() -> None:
    phases: list[dict[str, float | None]] = [
        {"order_accuracy": 0.50, "future_top1": 0.40, "onnx_future_top1": 0.41},
        {"order_accuracy": 0.30, "future_top1": 0.45, "onnx_future_top1": None},
        {"order_accuracy": 0.45, "future_top1": 0.44, "onnx_future_top1": 0.42},
    ]
    summary = forgetting_summary(phases, ("order_accuracy", "future_top1", "onnx_future_top1"))
    assert summary["forgetting_points"]["order_accuracy"] == pytest.approx(20.0)
    assert summary["forgetting_points"]["future_top1"] == pytest.approx(-5.0)  # it got better: negative forgetting
    assert summary["recovery_points"]["order_accuracy"] == pytest.approx(15.0)
    assert summary["recovery_points"]["future_top1"] == pytest.approx(-1.0)
    assert summary["forgetting_points"]["onnx_future_top1"] is None  # not measured after phase 2
    assert forgetting_summary(phases[:2])["recovery_points"]["order_accuracy"] is None
    with pytest.raises(ValueError, match="two phases"):
        forgetting_summary(phases[:1])


def test_the_markdown_shows_every_phase_and_the_forgetting() -> None:
    phases = [
        {"order_accuracy": 0.5, "future_top1": 0.4, "steps_this_phase": 12},
        {"order_accuracy": 0.3, "future_top1": 0.35, "steps_this_phase": 9},
    ]
    run = {"phases": phases, **forgetting_summary(phases, ("order_accuracy", "future_top1", "onnx_future_top1"))}
    report = {
        "windows": {"day_train": 10, "night_train": 5, "day_heldout": 4},
        "minutes_per_phase": 0.5,
        "device": "cpu",
        "metric_source": "PyTorch",
        "runs": {"replay": run},
    }
    table = forgetting_markdown(report)
    assert "| replay | order_accuracy | 0.500 | 0.300 | 20.0 | n/a |" in table
    assert "| replay | future_top1 | 0.400 | 0.350 | 5.0 | n/a |" in table
    assert "| replay | steps in the phase | 12 | 9 | | |" in table


def test_day_windows_are_bright_night_windows_dark_and_held_out_day_comes_first(tmp_path: Path) -> None:
    day, night, heldout = day_night_windows(3, tmp_path, day_seconds=4.0, night_seconds=12.0, heldout_windows=2,
                                            **SMALL)  # fmt: skip
    assert len(heldout) == 2
    assert day
    assert night
    assert {w.camera_id for w in (*day, *night, *heldout)} == {"cam-a"}
    assert len({w.window_id for w in (*day, *night, *heldout)}) == len(day) + len(night) + len(heldout)
    assert max(float(w.pts_s[-1]) for w in heldout) < min(float(w.pts_s[0]) for w in day)
    day_means = [float(w.frames.mean()) for w in (*day, *heldout)]
    night_means = [float(w.frames.mean()) for w in night]
    assert min(day_means) > 80, day_means
    assert max(night_means) < 55, night_means


def test_the_feeder_keeps_the_backlog_ahead_of_what_was_taken() -> None:
    epoch = [Message(b"cam", f"window-{i}".encode(), ()) for i in range(3)]
    taken = [0.0]
    with open_bus(f"embedded://feeder-{uuid.uuid4().hex[:8]}") as bus:
        feeder = Feeder(bus, "phase", epoch, lambda: taken[0], backlog=10)
        feeder.top_up()
        assert feeder.published == 12  # whole epochs, until 10 are unread
        taken[0] = 10.0
        feeder.top_up()
        assert feeder.published == 21
        with bus.consumer(["phase"], group_id=None) as consumer:
            values = [r.value for r in consumer.poll(2.0)]
    assert values[:4] == [b"window-0", b"window-1", b"window-2", b"window-0"]


def test_split_by_time_keeps_the_first_seventy_percent_for_training() -> None:
    class Fake:
        def __init__(self, start: float) -> None:
            self.pts_s = np.array([start, start + 0.7])

    windows = [Fake(float(s)) for s in (5, 1, 3, 0, 2, 4, 6, 9, 8, 7)]
    train, heldout = split_by_time(windows)  # type: ignore[arg-type]
    assert [w.pts_s[0] for w in train] == [0, 1, 2, 3, 4, 5, 6]
    assert [w.pts_s[0] for w in heldout] == [7, 8, 9]


def test_video_report_refuses_a_missing_and_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"cannot read .*missing\.mp4: no such file") as missing:
        video_report(tmp_path / "missing.mp4", 0.1, tmp_path)
    assert "\n" not in str(missing.value)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(SystemExit, match=r"cannot read .*garbage\.mp4") as unreadable:
        video_report(garbage, 0.1, tmp_path)
    assert "\n" not in str(unreadable.value)


def test_video_report_refuses_a_file_too_short_for_fifty_windows(tmp_path: Path) -> None:
    clip = tmp_path / "short.mp4"
    generate_clip(SynthConfig(seconds=3.0, seed=1, events=(), width=160, height=96, fps=10), clip)
    with pytest.raises(SystemExit, match=r"short\.mp4 is too short: 3 windows .* at least 50") as short:
        video_report(clip, 0.1, tmp_path)
    assert "\n" not in str(short.value)
