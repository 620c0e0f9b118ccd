"""Reading a ``streamssl demo`` run directory into typed values.

Only ``summary.json`` is required; every other file may be missing (its reader returns ``None`` and the report's
section says so). A file that is present but malformed raises :class:`RunDirError` naming the file, because a
report quietly built from half-read data would mislead whoever looks at it.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

SUMMARY = "summary.json"
LABELS = "labels.json"
TRAIN_LOG = "trainer/train.jsonl"
EVAL_LOG = "trainer/eval.jsonl"
SCORES = "scores.jsonl"
SAMPLES = "samples.npz"

FloatArray = npt.NDArray[np.float64]
ImageArray = npt.NDArray[np.uint8]
T = TypeVar("T")


class RunDirError(ValueError):
    """A run-directory file is missing where required, or present but malformed; the message names the file."""


@dataclass(frozen=True)
class Summary:
    source: str
    bus: str
    minutes: float
    steps: int
    production_version: str | None
    eval: dict[str, float]
    auroc: dict[str, dict[str, float | None]]  # score kind -> event kind ("all", "wrong_way", ...) -> AUROC
    windows_scored: int
    windows_published: int | None
    serving_url: str | None
    model_input: str | None  # "WxHxC"; None when nothing was served


@dataclass(frozen=True)
class Event:
    kind: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Labels:
    """The synthetic clip's ground truth; per-frame fields as arrays aligned with ``t``."""

    fps: float
    seconds: float
    events: list[Event]
    t: FloatArray
    vehicle_count: FloatArray
    illumination: FloatArray
    light_state: list[str]


@dataclass(frozen=True)
class MetricLog:
    """Lines of one ``kind`` of a trainer JSON-lines log: ``values[name][i]`` at ``steps[i]``, NaN where absent."""

    steps: FloatArray
    values: dict[str, FloatArray]

    def __len__(self) -> int:
        return len(self.steps)

    def series(self, name: str) -> FloatArray:
        return self.values.get(name, np.full(len(self.steps), np.nan))


@dataclass(frozen=True)
class GateRecord:
    step: int
    candidate: str
    production: str | None
    decision: str
    reasons: list[str]


@dataclass(frozen=True)
class TrainerLogs:
    train: MetricLog | None  # None: trainer/train.jsonl missing
    evals: MetricLog | None  # None: trainer/eval.jsonl missing
    gates: list[GateRecord] | None


@dataclass(frozen=True)
class Scores:
    """Serving results, one row per window; NaN for a null score (per-camera warm-up) or pixel error."""

    camera_id: list[str]
    window_id: list[str]
    pts_start_s: FloatArray
    pts_end_s: FloatArray
    score: FloatArray
    raw_score: FloatArray
    pixel_error: FloatArray
    embeddings: FloatArray  # [N, D]; [N, 0] when no result carried one

    def __len__(self) -> int:
        return len(self.window_id)


@dataclass(frozen=True)
class Samples:
    """Image samples the demo kept; either group is ``None`` when the archive lacks it."""

    top_frames: ImageArray | None  # [K, H, W, C]
    top_window_ids: list[str]
    top_scores: FloatArray
    pixel_last: ImageArray | None  # [N, h, w, C], with pixel_real and pixel_predicted
    pixel_real: ImageArray | None
    pixel_predicted: ImageArray | None


@dataclass(frozen=True)
class RunData:
    root: Path
    summary: Summary
    labels: Labels | None
    logs: TrainerLogs
    scores: Scores | None
    samples: Samples | None


def read_run_dir(root: Path) -> RunData:
    """Everything the report shows, read and validated; raises :class:`RunDirError` naming the bad file."""
    if not root.is_dir():
        raise RunDirError(f"{root}: not a run directory (not a directory)")
    summary_path = root / SUMMARY
    if not summary_path.is_file():
        raise RunDirError(f"{summary_path}: missing; every run directory has a {SUMMARY}")
    summary = _guarded(summary_path, read_summary)
    eval_log = _optional(root / EVAL_LOG, read_eval_log)
    return RunData(
        root=root,
        summary=summary,
        labels=_optional(root / LABELS, read_labels),
        logs=TrainerLogs(
            train=_optional(root / TRAIN_LOG, lambda path: read_metric_log(path, "train")),
            evals=None if eval_log is None else eval_log[0],
            gates=None if eval_log is None else eval_log[1],
        ),
        scores=_optional(root / SCORES, read_scores),
        samples=_optional(root / SAMPLES, read_samples),
    )


def _optional(path: Path, reader: Callable[[Path], T]) -> T | None:
    return _guarded(path, reader) if path.exists() else None


def _guarded(path: Path, reader: Callable[[Path], T]) -> T:
    """Run ``reader`` and name ``path`` in whatever shape error it meets."""
    try:
        return reader(path)
    except RunDirError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OSError, zipfile.BadZipFile) as error:
        detail = f"missing key {error}" if isinstance(error, KeyError) else str(error)
        raise RunDirError(f"{path}: malformed: {detail}") from error


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunDirError(f"{path}: not valid JSON: {error}") from error


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is {type(value).__name__}, expected an object")
    return value


def _number(value: Any) -> float:
    """A JSON number (or null, NaN) as a float; null -> NaN."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _optional_number(value: Any) -> float | None:
    number = _number(value)
    return None if math.isnan(number) else number


def read_summary(path: Path) -> Summary:
    """The run's headline; ``eval`` and ``auroc`` may be empty (nothing promoted, a source without labels)."""
    doc = _object(_load_json(path), "the document")
    auroc = _object(doc["auroc"] or {}, "auroc")
    return Summary(
        source=str(doc["source"]),
        bus=str(doc["bus"]),
        minutes=_number(doc["minutes"]),
        steps=int(doc["steps"]),
        production_version=_optional_text(doc["production_version"]),
        eval={str(k): _number(v) for k, v in _object(doc["eval"] or {}, "eval").items() if _is_number(v)},
        auroc={
            str(kind): {str(event): _optional_number(v) for event, v in _object(table, f"auroc.{kind}").items()}
            for kind, table in auroc.items()
        },
        windows_scored=int(doc["windows_scored"]),
        windows_published=None if doc.get("windows_published") is None else int(doc["windows_published"]),
        serving_url=_optional_text(doc.get("serving_url")),
        model_input=_optional_text(doc.get("model_input")),
    )


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def read_labels(path: Path) -> Labels:
    doc = _object(_load_json(path), "the document")
    frames = [_object(f, "a frame") for f in doc["frames"]]
    events = [_object(e, "an event") for e in doc["events"]]
    return Labels(
        fps=_number(doc["fps"]),
        seconds=_number(doc["seconds"]),
        events=[Event(str(e["kind"]), _number(e["start_s"]), _number(e["end_s"])) for e in events],
        t=np.array([_number(f["t"]) for f in frames], dtype=np.float64),
        vehicle_count=np.array([_number(f["vehicle_count"]) for f in frames], dtype=np.float64),
        illumination=np.array([_number(f["illumination"]) for f in frames], dtype=np.float64),
        light_state=[str(f["light_state"]) for f in frames],
    )


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield _object(json.loads(line), "the line")
        except (json.JSONDecodeError, ValueError) as error:
            raise RunDirError(f"{path}: line {number}: not a JSON object: {error}") from error


def read_metric_log(path: Path, kind: str) -> MetricLog:
    """The numeric fields of the ``kind`` lines, in step order."""
    lines = sorted((line for line in _json_lines(path) if line.get("kind") == kind), key=lambda line: line["step"])
    names = sorted({k for line in lines for k, v in line.items() if _is_number(v) and k not in ("step", "time")})
    return MetricLog(
        steps=np.array([_number(line["step"]) for line in lines], dtype=np.float64),
        values={name: np.array([_number(line.get(name)) for line in lines], dtype=np.float64) for name in names},
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_eval_log(path: Path) -> tuple[MetricLog, list[GateRecord]]:
    """The held-out evaluations and the promotion gate's decisions, which share one log."""
    return read_metric_log(path, "eval"), read_gates(path)


def read_gates(path: Path) -> list[GateRecord]:
    return [
        GateRecord(
            step=int(line["step"]),
            candidate=str(line["candidate"]),
            production=None if line.get("production") is None else str(line["production"]),
            decision=str(line["decision"]),
            reasons=[str(r) for r in line.get("reasons", [])],
        )
        for line in _json_lines(path)
        if line.get("kind") == "gate"
    ]


def read_scores(path: Path) -> Scores:
    rows = list(_json_lines(path))
    embeddings = [row.get("embedding") or [] for row in rows]
    width = max((len(e) for e in embeddings), default=0)
    if any(len(e) != width for e in embeddings):
        width = 0  # ragged or partly missing embeddings: no map rather than a wrong one
    column = _column_reader(rows)
    return Scores(
        camera_id=[str(row["camera_id"]) for row in rows],
        window_id=[str(row["window_id"]) for row in rows],
        pts_start_s=column("pts_start_s"),
        pts_end_s=column("pts_end_s"),
        score=column("score"),
        raw_score=column("raw_score"),
        pixel_error=column("pixel_error"),
        embeddings=np.array(embeddings if width else [[] for _ in rows], dtype=np.float64).reshape(len(rows), width),
    )


def _column_reader(rows: list[dict[str, Any]]) -> Callable[[str], FloatArray]:
    def column(name: str) -> FloatArray:
        return np.array([_number(row.get(name)) for row in rows], dtype=np.float64)

    return column


def read_samples(path: Path) -> Samples:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    top = arrays.get("top_frames")
    if top is not None and not len(top):
        top = None  # no window was scored: the demo writes an empty placeholder
    pixel = [arrays.get(name) for name in ("pixel_last", "pixel_real", "pixel_predicted")]
    if top is not None:
        _check_images("top_frames", top)
        if not len(arrays["top_window_ids"]) == len(arrays["top_scores"]) == len(top):
            raise ValueError("top_frames, top_window_ids and top_scores differ in length")
    if any(p is not None for p in pixel):
        if any(p is None for p in pixel):
            raise ValueError("pixel_last, pixel_real and pixel_predicted come together; some are missing")
        for name, images in zip(("pixel_last", "pixel_real", "pixel_predicted"), pixel, strict=True):
            _check_images(name, images)  # type: ignore[arg-type]
    return Samples(
        top_frames=top,
        top_window_ids=[str(i) for i in arrays.get("top_window_ids", [])],
        top_scores=np.asarray(arrays.get("top_scores", []), dtype=np.float64),
        pixel_last=pixel[0],
        pixel_real=pixel[1],
        pixel_predicted=pixel[2],
    )


def _check_images(name: str, images: npt.NDArray[Any]) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{name} is {images.dtype} {list(images.shape)}, expected uint8 [N, H, W, 1 or 3]")
