"""Windows in, results out: whether a window fits the model, and the result object of a scored window.

Shared by the HTTP endpoints and stream mode, so a result on the output topic and an HTTP answer are the same JSON.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.contract import Window, WindowDecodeError, decode_window
from ingest.contract.model_input import ModelInputError, model_input
from serving.anomaly import CameraScore, ScoreNormaliser
from serving.errors import InvalidInputError
from serving.metrics import ServingMetrics
from serving.model import LoadedModel, WindowOutputs
from serving.normal_memory import window_feature
from serving.scene_cells import GRID, cell_box

RESULT_SCHEMA = "streamssl.score/1"


def decode_window_body(body: bytes) -> Window:
    """An HTTP body in the window wire format → :class:`Window`, or a 400 saying what is wrong with it."""
    try:
        return decode_window(body)
    except WindowDecodeError as error:
        raise InvalidInputError(f"malformed window: {error}") from error


def window_frames(model: LoadedModel, window: Window) -> npt.NDArray[np.uint8]:
    """The window as the model's input, a batch of one ``[1, T, H, W, C]``, prepared by the shared contract
    (:func:`ingest.contract.model_input.model_input`: centre crop, resize, channels, as the trainer evaluates).

    Only a window with too few frames cannot fit: an :class:`InvalidInputError` (400, or a dead letter).
    """
    height, width, channels = model.frame_shape
    needed = model.context_frames + model.future_frames
    time_axis = model.files["clip_encoder"].inputs[0].shape[1]
    # The clip the trainer evaluated: its fixed time axis, else the window length in the metadata.
    frames = time_axis if isinstance(time_axis, int) else model.metadata.input.window
    if window.frame_count < max(needed, frames):
        raise InvalidInputError(
            f"window {window.camera_id}#{window.sequence} has {window.frame_count} frames, the model needs at least "
            f"{max(needed, frames)} ({model.context_frames} context + {model.future_frames} to predict"
            f"{f', {frames} per clip' if frames > needed else ''})"
        )
    try:
        return model_input(window.frames, height, width, channels, frames)[None]
    except ModelInputError as error:
        raise InvalidInputError(f"window {window.camera_id}#{window.sequence}: {error}") from error


def scene_region(cell: tuple[int, int], window: Window) -> dict[str, Any]:
    """Where in the window's frames the scene score is highest: the grid cell and its pixel box."""
    row, col = cell
    return {"row": row, "col": col, "grid": GRID, "box": cell_box(row, col, window.height, window.width)}


def window_embedding(model: LoadedModel, window: Window, outputs: WindowOutputs) -> dict[str, Any]:
    return {
        "model_name": model.name,
        "model_version": model.version,
        "camera_id": window.camera_id,
        "window_id": window.window_id,
        "sequence": window.sequence,
        "frame_embeddings": outputs.frame_embeddings[0],
        "clip_embedding": outputs.clip_embeddings[0],
    }


def score_window(
    model: LoadedModel,
    window: Window,
    outputs: WindowOutputs,
    normaliser: ScoreNormaliser,
    metrics: ServingMetrics,
    *,
    with_embedding: bool = False,
) -> dict[str, Any]:
    """The result of one window (``outputs`` of a batch of one); updates the camera's running statistics."""
    raw = float(outputs.raw_scores[0])
    camera: CameraScore = normaliser.observe(window.camera_id, model.version, raw)
    if camera.z is not None:
        metrics.anomaly_score.labels(window.camera_id).observe(camera.z)
    feature = window_feature(outputs.frame_embeddings[0], outputs.clip_embeddings[0])
    knn = normaliser.novelty(window.camera_id, model.version, feature)
    scene = normaliser.scenes.observe(window.camera_id, window.frames, float(window.pts_s[0]))
    result: dict[str, Any] = {
        "schema": RESULT_SCHEMA,
        "model_name": model.name,
        "model_version": model.version,
        "camera_id": window.camera_id,
        "window_id": window.window_id,
        "sequence": window.sequence,
        "segment": window.segment,
        "pts_start_s": float(window.pts_s[0]),
        "pts_end_s": float(window.pts_s[-1]),
        "capture_time_s": float(window.capture_time_s[0]),
        "score": camera.z,
        "raw_score": raw,
        "pixel_error": None if outputs.pixel_errors is None else float(outputs.pixel_errors[0]),
        "knn_score": knn,
        "scene_score": scene.score,
        "scene_region": None if scene.cell is None else scene_region(scene.cell, window),
        "slowdown_score": scene.slowdown,
        "camera_windows": camera.count,
        "camera_mean": camera.mean,
        "camera_std": camera.std,
        "scored_at": time.time(),
    }
    if with_embedding:
        result["embedding"] = outputs.clip_embeddings[0]
    return result
