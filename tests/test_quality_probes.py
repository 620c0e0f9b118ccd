"""The quality benchmark's linear probes: labels derived from hand-made label documents (known answers), and the
three feature sets on tiny models: a stand-in version (bench/onnx_models.py) and a tiny untrained StreamSSL model
exported by the trainer's export path (no training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench.onnx_models import make_registry_version
from bench.quality.probes import (
    PIXEL_SIZE,
    clip_embeddings,
    export_random_init,
    load_version,
    pixel_features,
    probe_markdown,
    probe_report,
    window_labels,
)
from ingest.contract import Window
from ingest.contract.model_input import resize_frames
from ingest.registry import DEFAULT_MODEL_NAME, verify_version
from serving.windows import window_frames
from trainer.config import ModelConfig
from trainer.export_onnx import build_metadata, export_onnx, publish
from trainer.model.streamssl_model import StreamSSLModel

FPS = 10
BATCH_PLUS = 19  # windows: more than one batch of 16, not a multiple of it


def record(t: float, light: str = "green", illumination: float = 1.0, count: int = 30,
           direction: float | None = None, coherence: float = 0.0) -> dict[str, Any]:  # fmt: skip
    return {"frame": round(t * FPS), "t": round(t, 4), "vehicle_count": count, "mean_speed_mps": None,
            "mean_flow_direction_deg": direction, "flow_coherence": coherence, "light_state": light,
            "illumination": illumination, "active_events": []}  # fmt: skip


def window(sequence: int, start_s: float, frames: np.ndarray | None = None, count: int = 4) -> Window:
    """A window of ``count`` frames at 10 fps from ``start_s`` (pts as ingest computes them: start + i / fps)."""
    pixels = frames if frames is not None else np.zeros((count, 24, 24, 3), np.uint8)
    pts = start_s + np.arange(len(pixels)) / FPS
    return Window(camera_id="cam", sequence=sequence, window_id=f"cam:{sequence}", frames=pixels, pts_s=pts,
                  capture_time_s=pts + 1e9, fps=float(FPS))  # fmt: skip


def test_labels_come_from_the_frames_inside_each_window() -> None:
    frames = [
        # window 0 covers 0.0-0.3 s: a green/red tie (green first), mean illumination 0.55, median count 25.5,
        # everything moving straight up the image (away)
        record(0.0, "green", 0.7, 24, 90.0, 1.0), record(0.1, "green", 0.7, 25, 90.0, 1.0),
        record(0.2, "red", 0.4, 26, 90.0, 1.0), record(0.3, "red", 0.4, 30, 90.0, 1.0),
        record(0.4, "yellow", 0.01, 99, 270.0, 1.0),  # just after window 0: must not count
        # window 1 covers 1.0-1.3 s: red 3 of 4, night, 40 vehicles, moving down at coherence 0.5 (towards)
        record(1.0, "green", 0.1, 40, 270.0, 0.5), record(1.1, "red", 0.1, 40, 270.0, 0.5),
        record(1.2, "red", 0.1, 40, 270.0, 0.5), record(1.3, "red", 0.1, 40, 270.0, 0.5),
        # window 2 covers 2.0-2.3 s: nothing moves, or sideways / weakly: mixed; few vehicles
        record(2.0, count=3), record(2.1, count=3, direction=0.0, coherence=1.0),
        record(2.2, count=3, direction=90.0, coherence=0.3), record(2.3, count=4),
    ]  # fmt: skip
    labels = {"fps": FPS, "frames": list(reversed(frames))}  # order in the document does not matter
    derived = window_labels([window(0, 0.0), window(1, 1.0), window(2, 2.0)], labels)
    assert derived == [
        {"light_state": "green", "day_night": "day", "vehicle_count": "25-34", "flow_direction": "away"},
        {"light_state": "red", "day_night": "night", "vehicle_count": "35+", "flow_direction": "towards"},
        {"light_state": "green", "day_night": "day", "vehicle_count": "<25", "flow_direction": "mixed"},
    ]
    with pytest.raises(ValueError, match="no labelled frame"):
        window_labels([window(3, 5.0)], labels)


def test_clip_embeddings_and_pixel_features_are_servings_on_the_model_input(tmp_path: Path) -> None:
    make_registry_version(tmp_path, seed=3, size=16, window=4)
    model = load_version(tmp_path / DEFAULT_MODEL_NAME / "1")
    rng = np.random.default_rng(0)
    windows = [window(i, i, rng.integers(0, 256, (4, 24, 32, 3), dtype=np.uint8)) for i in range(BATCH_PLUS)]
    embeddings = clip_embeddings(model, windows)
    one_by_one = np.concatenate([model.run_windows(window_frames(model, w)).clip_embeddings for w in windows])
    assert embeddings.shape == (BATCH_PLUS, 8)
    np.testing.assert_allclose(embeddings, one_by_one, rtol=1e-5, atol=1e-6)
    pixels = pixel_features(model, windows)
    assert pixels.shape == (BATCH_PLUS, 4 * PIXEL_SIZE * PIXEL_SIZE * 3)
    model_input = window_frames(model, windows[5])[0]  # 16x16 centre crop-and-resize of a 32x24 frame
    np.testing.assert_array_equal(pixels[5], resize_frames(model_input, 8, 8).reshape(-1).astype(np.float32))
    assert not np.array_equal(pixels[5], pixels[6])
    with pytest.raises(ValueError, match=r"extra\.trainer\.model"):
        export_random_init(tmp_path / DEFAULT_MODEL_NAME / "1", tmp_path / "random", window_frames(model, windows[0]))


TINY = ModelConfig(
    frame_height=16, frame_width=16, window=4, context_frames=2, future_frames=2, encoder_width=4, stages=1,
    spatial_grid=1, embedding_dim=8, context_layers=1, context_heads=2, pixel_height=8, pixel_width=8, order_stride=1,
)  # fmt: skip


def tiny_version(registry: Path, seed: int) -> Path:
    """A "trained" version: a seeded tiny model through the trainer's export path, with the metadata it writes."""
    torch.manual_seed(seed)
    model = StreamSSLModel(TINY).eval()
    scratch = registry.parent / f"export-{seed}"
    scratch.mkdir()
    files = export_onnx(model, scratch, 17, "torchscript")
    metadata = build_metadata(
        TINY, files, model_name=DEFAULT_MODEL_NAME, step=seed, config_hash="tiny", opset=17, metrics={},
        extra={"trainer": {"model": TINY.model_dump(mode="json"), "loss": {}}},
    )  # fmt: skip
    return registry / DEFAULT_MODEL_NAME / publish(registry, metadata, files)


def brightness_world(count: int, seed: int) -> tuple[list[Window], dict[str, Any]]:
    """Windows one second apart whose light state is in their brightness (bright green, dark red); one class of
    day/night, flow and vehicle count."""
    rng = np.random.default_rng(seed)
    windows, records = [], []
    for index in range(count):
        red = index % 3 == 0
        level = rng.integers(10, 60) if red else rng.integers(170, 240)
        noise = rng.integers(0, 30, (4, 20, 20, 3))
        windows.append(window(index, float(index), (level + noise).astype(np.uint8)))
        records += [record(index + k / FPS, "red" if red else "green") for k in range(4)]
    return windows, {"fps": FPS, "frames": records}


def test_probe_report_reads_labels_from_all_three_feature_sets(tmp_path: Path) -> None:
    version_dir = tiny_version(tmp_path / "registry", seed=5)
    windows, labels = brightness_world(30, seed=1)
    report = probe_report(windows[:18], windows[18:], labels, version_dir, seed=0, exporter="torchscript")
    assert report["windows"] == {"train": 18, "test": 12}
    assert report["feature_dims"] == {"trained": 8, "random_init": 8, "raw_pixels": 4 * 8 * 8 * 3}
    light = report["labels"]["light_state"]
    assert light["classes"] == {"train": {"green": 12, "red": 6}, "test": {"green": 8, "red": 4}}
    assert light["majority"] == pytest.approx(8 / 12)
    assert light["raw_pixels"] == 1.0, "brightness separates the classes linearly"
    for name in ("trained", "random_init"):
        assert 0.0 <= light[name] <= 1.0
    for label in ("day_night", "vehicle_count", "flow_direction"):
        entry = report["labels"][label]
        assert entry["trained"] is entry["random_init"] is entry["raw_pixels"] is None
        assert entry["skipped"] == "only one class in train and test"
        assert entry["majority"] == 1.0
    assert "| light_state | " in probe_markdown(report)


def test_the_random_init_is_the_seeded_architecture_not_the_trained_weights(tmp_path: Path) -> None:
    version_dir = tiny_version(tmp_path / "registry", seed=5)
    windows, _ = brightness_world(6, seed=2)
    trained = load_version(version_dir)
    frames = np.concatenate([window_frames(trained, w) for w in windows[:2]])
    first = export_random_init(version_dir, tmp_path / "random", frames, seed=0, exporter="torchscript")
    again = export_random_init(version_dir, tmp_path / "random", frames, seed=0, exporter="torchscript")
    other = export_random_init(version_dir, tmp_path / "random", frames, seed=5, exporter="torchscript")
    assert verify_version(first).input == trained.metadata.input
    assert verify_version(first).file("pixel_predictor") is None
    embed = {name: clip_embeddings(load_version(path), windows) for name, path in
             (("first", first), ("again", again), ("other", other))}  # fmt: skip
    np.testing.assert_allclose(embed["first"], embed["again"], atol=1e-6)
    assert not np.allclose(embed["first"], clip_embeddings(trained, windows), atol=1e-3)
    # seed 5 is the seed the "trained" version was built with: the same weights
    np.testing.assert_allclose(embed["other"], clip_embeddings(trained, windows), atol=1e-5)


def test_the_markdown_table_has_a_row_per_label_and_marks_skips() -> None:
    report = {
        "windows": {"train": 6, "test": 4},
        "labels": {
            "light_state": {"trained": 0.75, "random_init": 0.5, "raw_pixels": 0.25, "majority": 0.5},
            "day_night": {"trained": None, "random_init": None, "raw_pixels": None, "majority": 1.0,
                          "skipped": "only one class in test"},
        },
    }  # fmt: skip
    assert probe_markdown(report).splitlines()[2:] == [
        "| label | trained | random init | raw pixels | majority |",
        "|---|---:|---:|---:|---:|",
        "| light_state | 0.75 | 0.50 | 0.25 | 0.50 |",
        "| day_night (only one class in test) | n/a | n/a | n/a | 1.00 |",
    ]
