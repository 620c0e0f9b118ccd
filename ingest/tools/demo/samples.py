"""What the report shows of the model itself: frames of the top-scored windows, and the pixel head's predicted next
frame beside the real one (run from the production version's ONNX file, as serving would)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from ingest.bus import Bus
from ingest.contract import Window
from ingest.contract.messages import window_from_record
from ingest.contract.model_input import model_input

TOP_WINDOWS = 6
PIXEL_SAMPLES = 6


def read_windows(bus: Bus, topic: str) -> dict[str, Window]:
    """Every window on ``topic``, by window id (the demo's clip is short enough to hold)."""
    windows: dict[str, Window] = {}
    with bus.consumer([topic], group_id=None) as consumer:
        idle = 0
        while idle < 3:
            records = consumer.poll(0.5)
            idle = 0 if records else idle + 1
            for record in records:
                window = window_from_record(record)
                windows[window.window_id] = window
    return windows


def write_samples(
    run_dir: Path, version_dir: Path, windows: dict[str, Window], results: list[dict[str, Any]]
) -> None:
    """``samples.npz``: middle frames of the top-scored windows, and the pixel head's strip where it has one."""
    scored = [r for r in results if r["window_id"] in windows]
    top = sorted(scored, key=lambda r: -_score(r))[:TOP_WINDOWS]
    arrays: dict[str, Any] = {
        "top_frames": np.stack([_middle(windows[r["window_id"]]) for r in top]) if top else np.zeros((0, 1, 1, 3)),
        "top_window_ids": np.array([r["window_id"] for r in top]),
        "top_scores": np.array([_score(r) for r in top], dtype=np.float64),
    }
    spread = [windows[r["window_id"]] for r in scored[:: max(1, len(scored) // PIXEL_SAMPLES)][:PIXEL_SAMPLES]]
    arrays.update(pixel_strip(version_dir, spread))
    np.savez_compressed(run_dir / "samples.npz", **arrays)


def pixel_strip(version_dir: Path, windows: list[Window]) -> dict[str, npt.NDArray[np.uint8]]:
    """Last context frame, real next frame and the pixel head's prediction, at the head's resolution."""
    from serving.model_loader import ModelLoader, SessionConfig

    if not windows:
        return {}
    # Loaded (and verified) as serving loads it: registry / model / version.
    loader = ModelLoader(version_dir.parent.parent, version_dir.parent.name, SessionConfig(["CPUExecutionProvider"]))
    model = loader.load(version_dir.name)
    if not model.has_pixel_head:
        return {}
    spec = model.metadata.input
    k = spec.context_frames
    frames = np.stack([model_input(w.frames, spec.height, spec.width, spec.channels, spec.window) for w in windows])
    predicted = model.forward(frames).next_frame
    assert predicted is not None  # the model has a pixel head
    h, w = predicted.shape[1:3]
    return {
        "pixel_last": _shrink(frames[:, k - 1], w, h),
        "pixel_real": _shrink(frames[:, k], w, h),
        "pixel_predicted": np.clip(predicted * 255 + 0.5, 0, 255).astype(np.uint8),
    }


def _shrink(frames: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    out = [cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA).reshape(height, width, -1) for f in frames]
    return np.stack(out)


def _middle(window: Window) -> npt.NDArray[np.uint8]:
    return window.frames[window.frame_count // 2]


def _score(result: dict[str, Any]) -> float:
    """The per-camera z-score; windows of the camera's warm-up (no z yet) rank last."""
    value = result.get("score")
    return float(value) if value is not None else float("-inf")
