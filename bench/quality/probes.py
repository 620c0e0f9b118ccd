"""Linear probes: what do the trained version's clip embeddings say about the scene, next to two baselines?

For every window, four labels come from the synthetic camera's ground truth (:func:`window_labels`): the traffic
light's state, day or night, how many vehicles are in view (bucketed) and which way the traffic flows. Each label is
read by a logistic-regression probe (:func:`bench.quality.metrics.linear_probe`) from three feature sets:

* ``trained``: the version's clip embedding, run by serving (its loader, its ``LoadedModel.run_windows``);
* ``random_init``: the same architecture (rebuilt from the version's metadata), randomly initialised with the
  trainer's default seed, i.e. the very weights the trainer started from, exported by the trainer's own export path
  and loaded the same way: what training added;
* ``raw_pixels``: the model-input frames (serving's ``window_frames``) area-downsampled to 8×8, all T frames
  flattened: what a probe gets without any encoder.

``majority`` is the share of the most common class in the probe-test set (what always answering it scores there).
"""

from __future__ import annotations

import bisect
import math
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from bench.quality.metrics import linear_probe
from ingest.contract import Window
from ingest.contract.model_input import resize_frames
from serving.model import LoadedModel
from serving.model_loader import ModelLoader, SessionConfig
from serving.windows import window_frames

LABELS = ("light_state", "day_night", "vehicle_count", "flow_direction")
FEATURE_SETS = ("trained", "random_init", "raw_pixels")
# Night below this mean illumination (1.0 day .. 0.06 night): the renderer's street lamps (0.30-0.55) and vehicle
# lights (0.35-0.75) are mostly on by then, and the day -> night curve crosses it about halfway through its descent.
NIGHT_BELOW = 0.5
# Vehicles in view (the window's median) -> bucket. The default synth (4 lanes, density 1.0) has 19-53 in view at
# any time (queues at the signal), so the 0-2 / 3-5 / 6+ of a sparse road would be one class: these edges give
# three populated classes on a 240 s clip (seed 0: 68 / 68 / 44 windows in its first 60 %).
COUNT_EDGES = (25, 35)
# Flow: mean over the window's frames of the vertical component of the mean motion resultant, coherence *
# sin(direction) (90 deg = image up = away from the camera; frames where nothing moves count 0). The mix of both
# directions keeps it within about ±0.6 on the default synth; ±0.2 splits it into away / towards / mixed.
FLOW_THRESHOLD = 0.2
PIXEL_SIZE = 8
BATCH = 16
_TIME_EPS = 1e-3  # label times are rounded to 4 decimals


def window_labels(windows: Sequence[Window], labels: dict[str, Any]) -> list[dict[str, str]]:
    """The four labels of each window, from the frame records with ``pts_s[0] <= t <= pts_s[-1]``.

    Light state: the majority over those frames (a tie goes to the state seen first). Day/night: their mean
    illumination against :data:`NIGHT_BELOW`. Vehicle count: their median against :data:`COUNT_EDGES`. Flow
    direction: see :data:`FLOW_THRESHOLD`. A window with no labelled frame in its range is a ``ValueError``.
    """
    frames = sorted(labels["frames"], key=lambda record: record["t"])
    times = [record["t"] for record in frames]
    out = []
    for window in windows:
        start, end = float(window.pts_s[0]), float(window.pts_s[-1])
        records = frames[bisect.bisect_left(times, start - _TIME_EPS) : bisect.bisect_right(times, end + _TIME_EPS)]
        if not records:
            raise ValueError(f"window {window.window_id} ({start:.3f}-{end:.3f} s) has no labelled frame")
        out.append(_labels_of(records))
    return out


def labels_of_windows(windows: Sequence[Window], labels: dict[str, Any]) -> list[dict[str, str]]:
    """:func:`window_labels` for one labels document (it has ``frames``), or for several cameras at once:
    ``labels`` maps a camera id to its document and each window reads its own camera's."""
    if "frames" in labels:
        return window_labels(windows, labels)
    return [window_labels([window], labels[window.camera_id])[0] for window in windows]


def _labels_of(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    light = Counter(r["light_state"] for r in records).most_common(1)[0][0]
    illumination = float(np.mean([r["illumination"] for r in records]))
    count = float(np.median([r["vehicle_count"] for r in records]))
    low, high = COUNT_EDGES
    vertical = float(np.mean([_vertical_flow(r) for r in records]))
    return {
        "light_state": light,
        "day_night": "night" if illumination < NIGHT_BELOW else "day",
        "vehicle_count": f"<{low}" if count < low else f"{low}-{high - 1}" if count < high else f"{high}+",
        "flow_direction": "away"
        if vertical >= FLOW_THRESHOLD
        else "towards"
        if vertical <= -FLOW_THRESHOLD
        else "mixed",
    }


def _vertical_flow(record: dict[str, Any]) -> float:
    direction = record["mean_flow_direction_deg"]
    return 0.0 if direction is None else float(record["flow_coherence"]) * math.sin(math.radians(direction))


def load_version(version_dir: Path) -> LoadedModel:
    """A registry version directory (``REGISTRY/MODEL/VERSION``) through serving's loader, on the CPU."""
    loader = ModelLoader(version_dir.parent.parent, version_dir.parent.name, SessionConfig(["CPUExecutionProvider"]))
    return loader.load(version_dir.name)


def clip_embeddings(model: LoadedModel, windows: Sequence[Window]) -> npt.NDArray[np.float32]:
    """``[N, D]``: each window's clip embedding, as serving computes it (shared preprocessing, ``run_windows``)."""
    rows = []
    for start in range(0, len(windows), BATCH):
        frames = np.concatenate([window_frames(model, w) for w in windows[start : start + BATCH]])
        rows.append(model.run_windows(frames).clip_embeddings)
    return np.concatenate(rows) if rows else np.zeros((0, model.metadata.input.embedding_dim), np.float32)


def pixel_features(model: LoadedModel, windows: Sequence[Window]) -> npt.NDArray[np.float32]:
    """``[N, T * 8 * 8 * C]``: each window's model-input frames, area-downsampled to 8×8 and flattened."""
    rows = [resize_frames(window_frames(model, w)[0], PIXEL_SIZE, PIXEL_SIZE).reshape(-1) for w in windows]
    return np.stack(rows).astype(np.float32)


def export_random_init(
    version_dir: Path,
    registry: Path,
    parity_frames: npt.NDArray[np.uint8],
    *,
    seed: int = 0,
    exporter: Literal["dynamo", "torchscript"] | None = None,
) -> Path:
    """Export the version's architecture, initialised as the trainer does with ``seed`` (its default is 0), to
    ``registry`` through the trainer's export path (ONNX graphs, parity on ``parity_frames [N, T, H, W, C]``,
    metadata, atomic publish); returns the new version's directory. The pixel head is left out (no clip embedding
    depends on it). ``exporter``: None = the trainer's default."""
    import torch

    from ingest.registry import verify_version
    from trainer.config import ExportConfig, ModelConfig
    from trainer.export_onnx import build_metadata, export_onnx, parity, publish
    from trainer.model.streamssl_model import StreamSSLModel

    metadata = verify_version(version_dir)
    trainer = metadata.extra.get("trainer")
    if not isinstance(trainer, dict) or "model" not in trainer:
        raise ValueError(f"{version_dir}: its metadata has no extra.trainer.model, the architecture to rebuild")
    config = ModelConfig.model_validate(trainer["model"])
    export = ExportConfig()
    torch.manual_seed(seed)  # as trainer.learner.Learner: seed, then build the model
    model = StreamSSLModel(config).eval()
    with tempfile.TemporaryDirectory(prefix="probes-random-init-") as scratch:
        files = export_onnx(model, Path(scratch), metadata.opset, exporter or export.exporter, pixel_predictor=False)
        parity(model, files, parity_frames, export.parity_atol)
        new = build_metadata(
            config, files, model_name=metadata.model, step=0, config_hash=metadata.config_hash, opset=metadata.opset,
            metrics={}, extra={"random_init_seed": seed, "trainer": trainer},
        )  # fmt: skip
        version = publish(registry, new, files)
    return registry / metadata.model / version


def probe_report(
    train: Sequence[Window],
    test: Sequence[Window],
    labels: dict[str, Any],
    version_dir: Path,
    *,
    seed: int = 0,
    exporter: Literal["dynamo", "torchscript"] | None = None,
) -> dict[str, Any]:
    """Probe accuracies on ``test`` of probes fitted on ``train``, per label and feature set (module docstring).

    A label with a single class in ``train`` or ``test`` is skipped: its accuracies are None, ``skipped`` says why.
    ``seed`` and ``exporter`` are those of :func:`export_random_init`.
    """
    trained = load_version(version_dir)
    windows = [*train, *test]
    with tempfile.TemporaryDirectory(prefix="probes-registry-") as registry:
        parity_frames = np.concatenate([window_frames(trained, w) for w in windows[:4]])
        random_dir = export_random_init(version_dir, Path(registry), parity_frames, seed=seed, exporter=exporter)
        features = {
            "trained": clip_embeddings(trained, windows),
            "random_init": clip_embeddings(load_version(random_dir), windows),
            "raw_pixels": pixel_features(trained, windows),
        }
    derived = labels_of_windows(windows, labels)
    n = len(train)
    report: dict[str, Any] = {
        "windows": {"train": n, "test": len(test)},
        "version": str(version_dir),
        "random_init_seed": seed,
        "feature_dims": {name: int(x.shape[1]) for name, x in features.items()},
        "labels": {},
    }
    for label in LABELS:
        ys = [row[label] for row in derived]
        report["labels"][label] = _probe_label(ys[:n], ys[n:], {k: (x[:n], x[n:]) for k, x in features.items()})
    return report


def _probe_label(
    train_y: list[str], test_y: list[str], features: dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]
) -> dict[str, Any]:
    train_counts, test_counts = Counter(train_y), Counter(test_y)
    entry: dict[str, Any] = {
        "classes": {"train": dict(sorted(train_counts.items())), "test": dict(sorted(test_counts.items()))},
        "majority": max(test_counts.values()) / len(test_y) if test_y else None,
    }
    lonely = [name for name, counts in (("train", train_counts), ("test", test_counts)) if len(counts) < 2]
    if lonely:
        entry.update({name: None for name in FEATURE_SETS})
        entry["skipped"] = f"only one class in {' and '.join(lonely)}"
        return entry
    for name, (train_x, test_x) in features.items():
        entry[name] = linear_probe(train_x, train_y, test_x, test_y)
    return entry


def probe_markdown(report: dict[str, Any]) -> str:
    """The README table: probe accuracy per label and feature set, and the majority-class share."""
    windows = report["windows"]
    lines = [
        f"Linear-probe accuracy on {windows['test']} test windows (probes fitted on {windows['train']}):",
        "",
        "| label | trained | random init | raw pixels | majority |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, entry in report["labels"].items():
        cells = [_cell(entry.get(name)) for name in (*FEATURE_SETS, "majority")]
        note = f" ({entry['skipped']})" if entry.get("skipped") else ""
        lines.append(f"| {label}{note} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
