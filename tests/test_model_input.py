"""One preprocessing contract: trainer and serving turn the same window into the same model input, and the
services' defaults compose (what ingest cuts by default, the trainer's default model can take)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.onnx_models import make_registry_version
from ingest.contract import encode_window
from ingest.contract.model_input import ModelInputError, model_input
from ingest.registry import DEFAULT_MODEL_NAME
from ingest.service.config import CameraConfig
from serving.errors import InvalidInputError
from serving.model_loader import ModelLoader, SessionConfig
from serving.windows import window_frames
from tests.conftest import make_window
from trainer.config import DataConfig, ModelConfig, TrainerSettings
from trainer.data.augment import ClipAugment
from trainer.evaluate import prepare_windows


@pytest.mark.parametrize(("height", "width", "channels"), [(40, 32, 3), (16, 16, 3), (24, 48, 1), (12, 12, 3)])
def test_trainer_and_serving_prepare_a_window_identically(
    tmp_path: Path, height: int, width: int, channels: int
) -> None:
    registry = tmp_path / "registry"
    version = make_registry_version(registry, seed=3, size=16, channels=3, window=4)
    model = ModelLoader(registry, DEFAULT_MODEL_NAME, SessionConfig(providers=["CPUExecutionProvider"])).load(version)
    window = make_window("cam-1", 0, frames=6, height=height, width=width, channels=channels, seed=5)

    served = window_frames(model, window)[0]
    evaluated = prepare_windows([encode_window(window)], 16, 16, 3, 4)[0]

    assert served.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(served, evaluated)


def test_the_trainer_augmenter_evaluates_through_the_same_contract() -> None:
    config = ModelConfig(frame_height=32, frame_width=32, window=8, spatial_grid=1, stages=2, pixel_height=16,
                         pixel_width=16)  # fmt: skip
    frames = make_window("cam-1", 0, frames=10, height=48, width=64, seed=2).frames
    np.testing.assert_array_equal(ClipAugment(config, DataConfig()).evaluate(frames), model_input(frames, 32, 32, 3, 8))


def test_only_too_few_frames_cannot_fit(tmp_path: Path) -> None:
    with pytest.raises(ModelInputError, match="3 frames, the model takes 4"):
        model_input(np.zeros((3, 8, 8, 3), np.uint8), 16, 16, 3, 4)
    registry = tmp_path / "registry"
    version = make_registry_version(registry, seed=3, size=16, window=4)
    model = ModelLoader(registry, DEFAULT_MODEL_NAME, SessionConfig(providers=["CPUExecutionProvider"])).load(version)
    with pytest.raises(InvalidInputError, match="has 3 frames, the model needs at least 4"):
        window_frames(model, make_window("cam-1", 0, frames=3))


def test_the_default_ingest_windows_fit_the_default_trainer_model() -> None:
    camera = CameraConfig(camera_id="cam", url="clip.mp4")
    model = TrainerSettings(registry=Path("r"), checkpoint_dir=Path("c")).model
    assert camera.window >= model.window, "default windows must hold the default model's clip"
    assert camera.window >= model.context_frames + model.future_frames
    assert camera.width / camera.height == pytest.approx(model.frame_width / model.frame_height), (
        "default aspect ratios differ: the centre crop would cut the scene"
    )
    assert (camera.width, camera.height) >= (model.frame_width, model.frame_height), "no upscaling by default"
    assert {"rgb": 3, "gray": 1}[camera.color] == model.channels
