"""What every part of the quality benchmark shares: cutting a file into windows with the ingest service's defaults,
putting windows on a bus as ingest does, and running the trainer with its defaults on them (held-out windows from
a file, none held out of the stream, a fresh consumer group)."""

from __future__ import annotations

import dataclasses
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.trainer_fixtures import Message, publish
from ingest.bus import Bus, KafkaSettings, open_bus
from ingest.contract import Window, encode_window
from ingest.contract.messages import window_message
from ingest.tools.demo import pipeline
from ingest.tools.demo.samples import read_windows

# Only bounds how long the ingest of a file may take (pipeline.ingest waits a quarter of it): a file ends sooner.
INGEST_BOUND_MINUTES = 60.0
REPORTED = ("order_accuracy", "future_top1", "pixel_psnr_db", "copy_last_psnr_db", "pixel_psnr_gain_db", "windows")


def say(text: str) -> None:
    print(f"quality | {text}", file=sys.stderr, flush=True)


def ingest_file(path: Path, scratch: Path, camera_id: str, tag: str = "") -> list[Window]:
    """``path`` cut into windows by the ingest service with its defaults, in time order, as camera ``camera_id``
    (window ids carry ``tag`` too, so windows of two files of one camera keep distinct ids)."""
    name = f"quality-{uuid.uuid4().hex[:8]}"
    options = demo_options(scratch, f"embedded://{name}", f"ingest.{camera_id}.{tag or 'file'}", INGEST_BOUND_MINUTES)
    with open_bus(options.bus) as bus:
        pipeline.ingest(options, bus, str(path), say)
        windows = sorted(read_windows(bus, options.topic).values(), key=lambda w: w.sequence)
    ident = f"{camera_id}.{tag}" if tag else camera_id
    return [
        dataclasses.replace(w, camera_id=camera_id, window_id=w.window_id.replace(pipeline.CAMERA_ID, ident))
        for w in windows
    ]


def messages(windows: Iterable[Window]) -> list[Message]:
    """The windows as the ingest service publishes them (key, bytes, headers)."""
    return [Message(m.key, m.value, m.headers) for m in map(window_message, windows)]


def demo_options(scratch: Path, bus: str, topic: str, minutes: float) -> pipeline.DemoOptions:
    run_dir = scratch / topic
    run_dir.mkdir(parents=True, exist_ok=True)
    return pipeline.DemoOptions(run_dir=run_dir, source=None, seconds=0, seed=0, minutes=minutes, port=0, bus=bus,
                                topic=topic, kafka=KafkaSettings())  # fmt: skip


def write_heldout(path: Path, heldout: Sequence[Window]) -> Path:
    from trainer.data.window_file import write_windows_file

    path.parent.mkdir(parents=True, exist_ok=True)
    write_windows_file(path, [encode_window(w) for w in heldout])
    return path


def trainer_settings(
    bus_url: str,
    topic: str,
    run_dir: Path,
    heldout_file: Path,
    heldout_count: int,
    minutes: float,
    device: str,
    data: Mapping[str, Any] | None = None,
    registry: Path | None = None,
) -> Any:
    """The trainer's defaults as the quality benchmark runs them (run.py's ``train``): held-out windows from a
    file, none held out of the stream, a fresh consumer group; ``data`` overrides more of the data section."""
    from trainer.config import TrainerSettings

    return TrainerSettings(
        bus=bus_url, topic=topic, registry=registry or run_dir / "registry", checkpoint_dir=run_dir / "trainer",
        max_minutes=minutes, eval_every=100, device=device,
        eval={"file": heldout_file, "max_windows": heldout_count},
        data={"holdout_every": 0, "group_id": f"quality-{uuid.uuid4().hex[:8]}", **(data or {})},
    )  # fmt: skip


def run_summary(result: Any) -> dict[str, Any]:
    """What a :class:`trainer.loop.RunResult` says about quality: steps, the PyTorch held-out evaluation of the
    last step and the gate's measurement of the exported ONNX files."""
    gate = result.gate
    return {
        "steps": result.step,
        "steps_this_run": result.steps_this_run,
        "version": result.exported_version,
        "promoted": bool(gate and gate.promoted),
        "export_error": result.export_error,
        "heldout_torch": _pick(result.last_eval),
        "heldout_onnx": _pick(dict(gate.candidate_metrics) if gate else {}),
    }


def chance(settings: Any) -> dict[str, float]:
    """Chance levels: 1 in 24 orders; 1 in the ``eval batch × M`` future candidates."""
    from trainer.losses.order import ORDER_CLASSES

    return {
        "order_accuracy": 1 / ORDER_CLASSES,
        "future_top1": 1 / (settings.eval.batch_size * settings.model.future_frames),
    }


def publish_windows(bus: Bus, topic: str, windows: Iterable[Window]) -> None:
    """Put ``windows`` on ``topic`` as the ingest service would (keyed by camera), acknowledged."""
    publish(bus, topic, messages(windows), partitions=pipeline.PARTITIONS)


def _pick(metrics: Mapping[str, float]) -> dict[str, float]:
    return {name: float(metrics[name]) for name in REPORTED if name in metrics}
