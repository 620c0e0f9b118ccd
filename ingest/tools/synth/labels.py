"""Ground-truth label records and their JSON file (schema documented in ``ingest.tools.synth``)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ingest.tools.synth.events import EventSpec

SCHEMA = "streamssl.synth.labels/1"
DECIMALS = 4


def labels_path_for(video: Path) -> Path:
    """``clip.mp4`` -> ``clip.labels.json`` beside it."""
    return Path(video.with_suffix("").as_posix() + ".labels.json")


def _r(x: float) -> float:
    return round(x, DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0


def frame_span(event: EventSpec, fps: int) -> tuple[int, int]:
    """Frames ``start_frame <= i < end_frame`` are those with ``start_s <= i / fps < end_s``."""
    return math.ceil(event.start_s * fps - 1e-9), math.ceil(event.end_s * fps - 1e-9)


def circular_mean_deg(angles_deg: Sequence[float]) -> tuple[float | None, float]:
    """(mean direction in [0, 360) or None, resultant length 0..1) of a set of directions."""
    if not angles_deg:
        return None, 0.0
    s = sum(math.sin(math.radians(a)) for a in angles_deg)
    c = sum(math.cos(math.radians(a)) for a in angles_deg)
    length = math.hypot(s, c) / len(angles_deg)
    if length < 1e-6:
        return None, 0.0
    return math.degrees(math.atan2(s, c)) % 360.0, length


def frame_record(
    frame: int,
    t: float,
    speeds: Sequence[float],
    directions: Sequence[float],
    light_state: str,
    illumination: float,
    active_events: Sequence[str],
) -> dict[str, Any]:
    """One entry of ``frames``: ``speeds`` of the visible vehicles, ``directions`` of the moving ones."""
    direction, coherence = circular_mean_deg(directions)
    return {
        "frame": frame,
        "t": _r(t),
        "vehicle_count": len(speeds),
        "mean_speed_mps": _r(sum(speeds) / len(speeds)) if speeds else None,
        "mean_flow_direction_deg": None if direction is None else _r(direction),
        "flow_coherence": _r(coherence),
        "light_state": light_state,
        "illumination": _r(illumination),
        "active_events": sorted(active_events),
    }


def event_records(events: Sequence[EventSpec], lanes: Sequence[int | None], fps: int) -> list[dict[str, Any]]:
    records = []
    for event, lane in zip(events, lanes, strict=True):
        start_frame, end_frame = frame_span(event, fps)
        records.append(
            {
                "kind": event.kind,
                "start_s": _r(event.start_s),
                "end_s": _r(event.end_s),
                "start_frame": start_frame,
                "end_frame": end_frame,
                "lane": lane,
            }
        )
    records.sort(key=lambda r: (r["start_s"], r["kind"], r["end_s"]))
    return records


def build_document(
    *,
    seed: int,
    fps: int,
    width: int,
    height: int,
    seconds: float,
    light_cycle: dict[str, float],
    lane_directions: Sequence[int],
    day_to_night: bool,
    events: list[dict[str, Any]],
    frames: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "seed": seed,
        "fps": fps,
        "width": width,
        "height": height,
        "seconds": _r(seconds),
        "frame_count": len(frames),
        "day_to_night": day_to_night,
        "light_cycle_s": {k: _r(v) for k, v in light_cycle.items()},
        "lanes": [{"index": i, "direction": "away" if d > 0 else "towards"} for i, d in enumerate(lane_directions)],
        "events": events,
        "frames": frames,
    }


def dumps(document: dict[str, Any]) -> str:
    """Stable serialisation: sorted keys, compact separators, trailing newline."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"


def write_labels(path: Path, document: dict[str, Any]) -> None:
    path.write_text(dumps(document), encoding="utf-8")
