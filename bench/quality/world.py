"""The quality benchmark's synthetic world: which cameras, which events where, and their windows.

Every camera is a synthetic clip (day turning to night over its length) cut into windows by the ingest service with
its defaults. Trained cameras hold no event before ``held_out_from_s``: the trainer sees only that part. Each kind of
event happens at least twice per camera after it, so every per-kind AUROC rests on a few dozen event windows and
several hundred normal ones, not on one event. Rendering is the slow part (about a third of real time on 2 cores),
so a camera's windows are cached by its full description under ``~/.cache/streamssl/quality`` (``--no-cache``
renders afresh).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.quality.harness import ingest_file
from ingest.contract import Window, decode_window, encode_window
from ingest.tools.synth.events import EventKind, EventSpec

# Bump when rendering or cutting changes, so stale windows are not reused (2: ingest skips the loop filter and
# scales before it converts to RGB; 3: wrong-way events are placed where the camera sees them).
CACHE_FORMAT = 3


@dataclass(frozen=True)
class Camera:
    camera_id: str
    seed: int
    seconds: float
    traffic_density: float
    events: tuple[EventSpec, ...]
    held_out_from_s: float  # windows from here on are scored and counted; trained cameras train before it
    trained: bool


def _schedule(first_s: float) -> tuple[EventSpec, ...]:
    """Each kind twice, 50 s apart per event, starting at ``first_s`` (each followed by normal traffic); rendering
    moves each wrong-way event up to 30 s later, to where the camera sees it (:mod:`bench.quality.placement`), and
    the labels give the times it has."""
    kinds: tuple[tuple[EventKind, float], ...] = (("wrong_way", 8.0), ("stalled", 14.0), ("jam", 16.0)) * 2
    return tuple(EventSpec(kind, first_s + 50.0 * i, duration) for i, (kind, duration) in enumerate(kinds))


def world(seed: int, short: bool = False) -> tuple[Camera, ...]:
    """Two trained cameras and one the trainer never sees (another seed, denser traffic); ``short``: one trained
    camera with each kind once, for the CI run."""
    if short:
        events = (EventSpec("wrong_way", 140.0, 8.0), EventSpec("stalled", 170.0, 14.0), EventSpec("jam", 205.0, 16.0))
        return (Camera("cam-a", seed, 240.0, 1.0, events, 120.0, True),)
    return (
        Camera("cam-a", seed, 560.0, 1.0, _schedule(250.0), 240.0, True),
        Camera("cam-c", seed + 7, 560.0, 0.7, _schedule(255.0), 240.0, True),
        Camera("cam-b", seed + 101, 440.0, 1.4, _schedule(130.0), 120.0, False),
    )


Say = Callable[[str], None]


def render(camera: Camera, scratch: Path, say: Say, cache: bool = True) -> tuple[list[Window], dict[str, Any]]:
    """The camera's windows (ingest's defaults, renamed to the camera) and its labels document."""
    cached = _cache_dir(camera)
    if cache and (cached / "labels.json").is_file():
        from trainer.data.window_file import read_windows_file

        say(f"{camera.camera_id}: cached windows from {cached}")
        windows = [decode_window(blob) for blob in read_windows_file(cached / "windows")]
        return windows, json.loads((cached / "labels.json").read_text())
    windows, labels = _render_afresh(camera, scratch, say)
    if cache:
        _store(cached, windows, labels)
    return windows, labels


def _render_afresh(camera: Camera, scratch: Path, say: Say) -> tuple[list[Window], dict[str, Any]]:
    from bench.quality.placement import place_wrong_way
    from ingest.tools.synth import SynthConfig, generate_clip

    config = SynthConfig(seconds=camera.seconds, seed=camera.seed, traffic_density=camera.traffic_density,
                         events=camera.events)  # fmt: skip
    say(f"{camera.camera_id}: placing its wrong-way events where the camera sees them")
    config = dataclasses.replace(config, events=place_wrong_way(config))
    say(f"{camera.camera_id}: rendering {camera.seconds:g} s of synthetic traffic")
    clip = scratch / f"{camera.camera_id}.mp4"
    labels = json.loads(generate_clip(config, clip).labels_path.read_text())
    return ingest_file(clip, scratch, camera.camera_id), labels


def _store(directory: Path, windows: list[Window], labels: dict[str, Any]) -> None:
    from trainer.data.window_file import write_windows_file

    directory.mkdir(parents=True, exist_ok=True)
    write_windows_file(directory / "windows", [encode_window(w) for w in windows])
    (directory / "labels.json").write_text(json.dumps(labels))  # written last: its presence marks a whole entry


def _cache_dir(camera: Camera) -> Path:
    root = Path(os.environ.get("STREAMSSL_CACHE", Path.home() / ".cache" / "streamssl")) / "quality"
    key = json.dumps([CACHE_FORMAT, dataclasses.asdict(camera)], sort_keys=True, default=str)
    return root / f"{camera.camera_id}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
