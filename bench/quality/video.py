"""The label-free part of the quality benchmark on any footage (``--video FILE``): the file is cut into windows by
the ingest service with its defaults, the first 70 % of them (by time) train the trainer with its defaults for a
wall-clock budget, and the last 30 % are held out. Reported on the held-out windows: order accuracy (24-way),
future top-1 and next-frame PSNR of the pixel head against copy-last, from the trainer's PyTorch evaluation and
from the exported ONNX files (the promotion gate's candidate metrics) side by side.

The helpers that cut a file into windows and run the trainer on a list of windows are shared with
:mod:`bench.quality.forgetting`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.quality.harness import (
    REPORTED,
    chance,
    ingest_file,
    publish_windows,
    run_summary,
    say,
    trainer_settings,
    write_heldout,
)  # fmt: skip
from ingest.bus import open_bus
from ingest.contract import Window
from ingest.service.config import CameraConfig
from ingest.sources.errors import SourceError
from ingest.sources.open import open_source
from ingest.tools.demo import pipeline

MIN_WINDOWS = 50
TRAIN_SHARE = 0.7


def check_readable(path: Path) -> None:
    """SystemExit (one line) unless the ingest service's decoder gets a frame out of ``path``: it would otherwise
    retry an unreadable file forever, as it does a camera that is down."""
    if not path.is_file():
        raise SystemExit(f"video: cannot read {path}: no such file")
    camera = CameraConfig(camera_id=pipeline.CAMERA_ID, url=str(path))
    frames = open_source(camera.source_spec(), camera.stall_timeout_s, lambda _reason: None)
    try:
        first = next(frames, None)
    except SourceError as error:
        raise SystemExit(f"video: cannot read {path}: {_one_line(str(error))}") from None
    finally:
        close = getattr(frames, "close", None)  # a generator: closing it closes the container
        if close is not None:
            close()
    if first is None:
        raise SystemExit(f"video: cannot read {path}: it holds no video frame")


def split_by_time(windows: Sequence[Window], train_share: float = TRAIN_SHARE) -> tuple[list[Window], list[Window]]:
    """(the first ``train_share`` of the windows by time, the rest)."""
    ordered = sorted(windows, key=lambda w: float(w.pts_s[0]))
    cut = round(len(ordered) * train_share)
    return ordered[:cut], ordered[cut:]


# --- the report ---------------------------------------------------------------------------------------------------
def video_report(path: Path, minutes: float, scratch: Path, device: str = "auto") -> dict[str, Any]:
    """Train ``minutes`` on the first 70 % of ``path``'s windows; held-out numbers on the rest (see module doc).

    Raises SystemExit with one line for a file that cannot be read or holds fewer than 50 windows.
    """
    from trainer.loop import Trainer, resolve_device

    started = time.monotonic()
    path = Path(path)
    check_readable(path)
    say(f"ingesting {path}")
    windows = ingest_file(path, scratch, "video")
    if len(windows) < MIN_WINDOWS:
        raise SystemExit(
            f"video: {path} is too short: {len(windows)} windows at the ingest defaults, at least {MIN_WINDOWS} needed"
        )
    train, heldout = split_by_time(windows)
    bus_url = f"embedded://quality-video-{uuid.uuid4().hex[:8]}"
    run_dir = scratch / "video-train"
    heldout_file = write_heldout(run_dir / "heldout.windows", heldout)
    settings = trainer_settings(bus_url, "quality.video", run_dir, heldout_file, len(heldout), minutes, device)
    with open_bus(bus_url) as bus:
        publish_windows(bus, settings.topic, train)
        say(f"training {minutes:g} min on {len(train)} windows, {len(heldout)} held out")
        summary = run_summary(Trainer(settings, bus).run())
    return {
        "file": str(path),
        "minutes": minutes,
        "device": resolve_device(device, 0).type,
        "windows": {"total": len(windows), "train": len(train), "heldout": len(heldout)},
        "heldout_from_s": float(heldout[0].pts_s[0]),
        **summary,
        "chance": chance(settings),
        "wall_s": round(time.monotonic() - started),
    }


def video_markdown(report: Mapping[str, Any]) -> str:
    """The held-out numbers, PyTorch beside ONNX, with chance levels."""
    torch_side, onnx_side, odds = report["heldout_torch"], report["heldout_onnx"], report["chance"]
    windows = report["windows"]
    lines = [
        f"`{Path(report['file']).name}`: {windows['total']} windows, {windows['train']} trained on "
        f"({report['minutes']:g} min, {report['steps']} steps, {report['device']}), {windows['heldout']} held out",
        "",
        "| held-out metric | PyTorch | ONNX | chance |",
        "|---|---:|---:|---:|",
    ]
    for name in REPORTED[:-1]:
        level = odds.get(name)
        lines.append(
            f"| {name} | {_cell(torch_side.get(name))} | {_cell(onnx_side.get(name))} | "
            f"{'' if level is None else f'{level:.3f}'} |"
        )
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _one_line(text: str) -> str:
    return " ".join(text.split())
