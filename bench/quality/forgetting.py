"""Forgetting across a day → night → day stream, with and without the trainer's replay buffer.

One camera (a synthetic scene, one seed): its day windows come from a clip rendered in daylight throughout
(``SynthConfig.day_to_night=False``); the synthesiser has no "always night" setting, so its night windows are the
dark tail of a day-to-night clip, chosen by the labels' illumination (every frame ≤ ``NIGHT_MAX_ILLUMINATION``).
Both clips have the same seed, hence the same scenery and the same traffic at equal times: the held-out day windows
are the day clip's first ones, from a stretch of time no night window covers, and the day windows after them train.

Each run is one trainer continued across three phases (day, night, day), every phase for the same wall-clock
budget: the checkpoint directory is kept, so every phase resumes from the newest checkpoint with the same model,
EMA, optimiser, step count and replay buffer. A phase gets its own topic (the consumer starts on it at the earliest
offset; the old topic's offsets in the checkpoint no longer matter), and a feeder keeps that topic ahead of the
trainer by publishing the phase's windows again, in time order, whenever fewer than ``BACKLOG_WINDOWS`` are left:
the stream never runs dry, so every step of a phase takes fresh windows of that phase (and, with replay, its share
from the buffer). Only the up to ``prefetch_batches`` batches planned but not trained when a phase ended carry over
into the next one. Two runs: the replay buffer as configured by default (``data.replay_ratio`` 0.5), and none
(``replay_ratio=0``, ``replay_when_idle=False``). After each phase the held-out day windows are evaluated by the
trainer itself: its PyTorch evaluation of the EMA model at the phase's last step (order accuracy, future top-1:
the order head is not exported) and, beside it, the promotion gate's measurement of the exported ONNX files.
Forgetting = after phase 1 minus after phase 2, in points (:func:`bench.quality.metrics.forgetting`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality.harness import (
    chance,
    ingest_file,
    messages,
    run_summary,
    say,
    trainer_settings,
    write_heldout,
)
from bench.quality.metrics import forgetting
from bench.trainer_fixtures import Message, publish
from ingest.bus import Bus, open_bus
from ingest.contract import Window
from ingest.tools.demo import pipeline

NIGHT_MAX_ILLUMINATION = 0.2  # lamps and headlights fully on, ambient light a third of daylight or less
BACKLOG_WINDOWS = 2048  # unread windows the feeder keeps on a phase's topic (the consumer buffers up to 512)
PHASES = ("day", "night", "day")
METRICS = ("order_accuracy", "future_top1")
REPORTED = (*METRICS, "onnx_future_top1")  # in the report and its table
RUNS = {"replay": {}, "no_replay": {"replay_ratio": 0.0, "replay_when_idle": False}}
WINDOWS_TRAINED = "streamssl_trainer_windows_total"  # by origin: fresh, replay


# --- the windows --------------------------------------------------------------------------------------------------
def day_night_windows(
    seed: int,
    scratch: Path,
    *,
    day_seconds: float = 340.0,
    night_seconds: float = 340.0,
    heldout_windows: int = 200,
    width: int = 640,
    height: int = 360,
    fps: int = 30,
) -> tuple[list[Window], list[Window], list[Window]]:
    """(day_train, night_train, day_heldout) of one synthetic camera, cut by the ingest service with its defaults.

    The defaults give 225 day training windows, ~120 night ones and 200 held-out day windows; the size and length
    parameters are there to make small clips (tests).
    """
    from ingest.tools.synth import SynthConfig, generate_clip

    def render(tag: str, seconds: float, day_to_night: bool) -> tuple[list[Window], dict[str, Any]]:
        clip = scratch / f"{tag}.mp4"
        config = SynthConfig(seconds=seconds, seed=seed, width=width, height=height, fps=fps, events=(),
                             day_to_night=day_to_night)  # fmt: skip
        say(f"rendering {seconds:g} s of {tag}")
        labels = json.loads(generate_clip(config, clip).labels_path.read_text())
        return ingest_file(clip, scratch, "cam-a", tag), labels

    day, _ = render("day", day_seconds, False)
    dusk, labels = render("night", night_seconds, True)
    night = [w for w in dusk if window_illumination(w, labels) <= NIGHT_MAX_ILLUMINATION]
    heldout, train = day[:heldout_windows], day[heldout_windows:]
    if len(heldout) < heldout_windows or not train or not night:
        raise ValueError(
            f"{len(day)} day windows ({heldout_windows} to hold out) and {len(night)} night windows: make the clips "
            "longer"
        )
    if float(heldout[-1].pts_s[-1]) >= float(night[0].pts_s[0]):
        raise ValueError("the held-out day windows overlap the night windows in time (same traffic): clips too short")
    return train, night, heldout


def window_illumination(window: Window, labels: Mapping[str, Any]) -> float:
    """The brightest illumination level (synth labels, per frame) over the window's frames."""
    times = np.array([frame["t"] for frame in labels["frames"]], dtype=np.float64)
    levels = np.array([frame["illumination"] for frame in labels["frames"]], dtype=np.float64)
    return float(np.interp(window.pts_s, times, levels).max())


# --- the arithmetic -----------------------------------------------------------------------------------------------
def forgetting_summary(phases: Sequence[Mapping[str, Any]], metrics: Sequence[str] = METRICS) -> dict[str, Any]:
    """Per metric, in points (×100): forgetting (after phase 1 − after phase 2) and what phase 3 won back
    (after phase 3 − after phase 2); None where a phase lacks the metric."""
    if len(phases) < 2:
        raise ValueError(f"forgetting needs at least two phases, got {len(phases)}")
    out: dict[str, Any] = {"forgetting_points": {}, "recovery_points": {}}
    for name in metrics:
        values: list[float | None] = [phase.get(name) for phase in phases]
        first, second = values[0], values[1]
        third = values[2] if len(values) > 2 else None
        lost = back = None
        if first is not None and second is not None:
            lost = 100 * forgetting(first, second)
            back = None if third is None else 100 * (third - second)
        out["forgetting_points"][name], out["recovery_points"][name] = lost, back
    return out


# --- the runs -----------------------------------------------------------------------------------------------------
class Feeder:
    """Keeps ``topic`` at least ``backlog`` windows ahead of what the trainer has taken fresh, publishing
    ``epoch`` again and again (a thread; use as a context manager around the trainer's run)."""

    def __init__(self, bus: Bus, topic: str, epoch: Sequence[Message], taken: Callable[[], float],
                 backlog: int = BACKLOG_WINDOWS) -> None:  # fmt: skip
        self.bus, self.topic, self.epoch, self.taken, self.backlog = bus, topic, list(epoch), taken, backlog
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forgetting-feeder", daemon=True)

    def __enter__(self) -> Feeder:
        self.top_up()  # before the trainer starts
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def top_up(self) -> None:
        while self.published - self.taken() < self.backlog:
            self.published += publish(self.bus, self.topic, self.epoch, partitions=pipeline.PARTITIONS)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.top_up()


def train_phase(
    bus: Bus, bus_url: str, run_dir: Path, index: int, windows: Sequence[Window], heldout_file: Path,
    heldout_count: int, minutes: float, device: str, data: Mapping[str, Any], steps: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One phase: the trainer resumes from ``run_dir``'s newest checkpoint and trains ``minutes`` on ``windows``
    (or ``steps`` more steps, with ``minutes`` as a cap: so both runs get the same training on a busy machine)."""
    from prometheus_client import CollectorRegistry

    from trainer.loop import Trainer

    topic = f"forgetting.phase{index}"
    # One consumer group for the run; a registry per phase, so every gate measures its candidate alone.
    data = {**data, "group_id": "forgetting"}
    registry = run_dir / f"registry-{index}"
    settings = trainer_settings(bus_url, topic, run_dir, heldout_file, heldout_count, minutes, device, data, registry)
    if steps is not None:
        settings = settings.model_copy(update={"max_steps": (index + 1) * steps})  # the step count carries over
    metrics = CollectorRegistry()

    def trained(origin: str) -> float:
        return metrics.get_sample_value(WINDOWS_TRAINED, {"origin": origin}) or 0.0

    with Feeder(bus, topic, messages(windows), lambda: trained("fresh")) as feeder:
        result = Trainer(settings, bus, metrics).run()
    summary = run_summary(result)
    torch_side, onnx_side = summary["heldout_torch"], summary["heldout_onnx"]
    return {
        "phase": PHASES[index] if index < len(PHASES) else str(index),
        "windows": len(windows),
        "steps": summary["steps"],
        "steps_this_phase": summary["steps_this_run"],
        "fresh_windows_trained": int(trained("fresh")),
        "replay_windows_trained": int(trained("replay")),
        "published": feeder.published,
        **{name: torch_side.get(name) for name in METRICS},
        "onnx_future_top1": onnx_side.get("future_top1"),
        "pixel_psnr_gain_db": torch_side.get("pixel_psnr_gain_db"),
        "onnx_pixel_psnr_gain_db": onnx_side.get("pixel_psnr_gain_db"),
        "export_error": summary["export_error"],
    }


def forgetting_report(
    day: Sequence[Window],
    night: Sequence[Window],
    heldout_day: Sequence[Window],
    minutes_per_phase: float,
    scratch: Path,
    device: str = "auto",
    steps_per_phase: int | None = None,
) -> dict[str, Any]:
    """Train day → night → day twice (default replay, none); the held-out day metrics after each phase and the
    forgetting they show (see the module docstring)."""
    from trainer.loop import resolve_device

    started = time.monotonic()
    heldout_file = write_heldout(scratch / "forgetting" / "heldout.windows", heldout_day)
    runs: dict[str, Any] = {}
    settings = None
    for name, data in RUNS.items():
        run_dir = scratch / "forgetting" / name
        bus_url = f"embedded://forgetting-{name}-{uuid.uuid4().hex[:8]}"
        results = []
        with open_bus(bus_url) as bus:
            for index, windows in enumerate((day, night, day)):
                say(f"{name}: phase {index + 1} ({PHASES[index]}), {minutes_per_phase:g} min, {len(windows)} windows")
                phase = train_phase(
                    bus, bus_url, run_dir, index, windows, heldout_file, len(heldout_day), minutes_per_phase, device,
                    data, steps_per_phase,
                )  # fmt: skip
                results.append(phase)
        settings = trainer_settings(bus_url, "forgetting.phase0", run_dir, heldout_file, 2, 1.0, device, data)
        runs[name] = {
            "replay_ratio": settings.data.replay_ratio,
            "replay_when_idle": settings.data.replay_when_idle,
            "phases": results,
            **forgetting_summary(results, REPORTED),
        }
    return {
        "minutes_per_phase": minutes_per_phase,
        "steps_per_phase": steps_per_phase,
        "device": resolve_device(device, 0).type,
        "windows": {"day_train": len(day), "night_train": len(night), "day_heldout": len(heldout_day)},
        "metric_source": "trainer's PyTorch held-out evaluation (EMA model, last step of each phase); "
        "onnx_* = promotion gate on the exported ONNX files",
        "chance": chance(settings) if settings is not None else {},
        "runs": runs,
        "replay_saves_points": {
            name: _difference(runs["no_replay"]["forgetting_points"][name], runs["replay"]["forgetting_points"][name])
            for name in METRICS
        },
        "wall_s": round(time.monotonic() - started),
    }


def forgetting_markdown(report: Mapping[str, Any]) -> str:
    """Held-out day metrics after each phase and the forgetting, per run."""
    windows = report["windows"]
    lines = [
        f"Held-out day windows: {windows['day_heldout']}; trained on {windows['day_train']} day and "
        f"{windows['night_train']} night windows, {report['minutes_per_phase']:g} min per phase on "
        f"{report['device']}. Metrics: {report['metric_source']}.",
        "",
        "| run | metric | after day | after night | after day again | forgetting (points) | recovered (points) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for run, part in report["runs"].items():
        steps = " | ".join(str(phase["steps_this_phase"]) for phase in part["phases"])
        lines.append(f"| {run} | steps in the phase | {steps} | | |")
        for name in REPORTED:
            cells = " | ".join(_cell(phase.get(name)) for phase in part["phases"])
            lost, back = part["forgetting_points"].get(name), part["recovery_points"].get(name)
            lines.append(f"| {run} | {name} | {cells} | {_cell(lost, 1)} | {_cell(back, 1)} |")
    return "\n".join(lines)


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _cell(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
