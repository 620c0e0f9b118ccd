"""The model registry contract: atomic versions, SHA-256 verification, the production pointer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from ingest.registry import (
    CHECKSUM_FILE,
    InputFormat,
    ModelFile,
    ModelMetadata,
    RegistryError,
    TensorSpec,
    production_version,
    publish_version,
    set_production,
    verify_version,
    versions,
)


def metadata(step: int = 10) -> ModelMetadata:
    return ModelMetadata(
        model="enc",
        created_at=datetime.now(UTC).isoformat(),
        step=step,
        config_hash="abc",
        opset=17,
        input=InputFormat(
            height=8,
            width=8,
            channels=3,
            window=4,
            context_frames=2,
            future_frames=2,
            embedding_dim=4,
            normalisation={"mean": [0.5] * 3, "std": [0.25] * 3},
        ),
        files=[
            ModelFile(
                role="frame_encoder",
                path="frame_encoder.onnx",
                inputs=[TensorSpec(name="frames", shape=["batch", 8, 8, 3], dtype="uint8")],
                outputs=[TensorSpec(name="embedding", shape=["batch", 4], dtype="float32")],
            )
        ],
        metrics={"order_accuracy": 0.5},
    )


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not really onnx, but bytes to checksum")
    return path


def test_publish_verify_and_promote(tmp_path: Path, onnx_file: Path) -> None:
    registry = tmp_path / "registry"
    first = publish_version(registry, metadata(), {"frame_encoder.onnx": onnx_file})
    second = publish_version(registry, metadata(20), {"frame_encoder.onnx": onnx_file})
    assert (first, second) == ("1", "2")
    assert versions(registry, "enc") == ["1", "2"]
    assert verify_version(registry / "enc" / "2").step == 20
    assert production_version(registry, "enc") is None
    set_production(registry, "enc", "2")
    assert production_version(registry, "enc") == "2"
    assert [p.name for p in (registry / "enc").iterdir() if p.name.startswith(".")] == []
    sums = (registry / "enc" / "1" / CHECKSUM_FILE).read_text()
    assert "frame_encoder.onnx" in sums
    assert "metadata.json" in sums


def test_tampered_or_incomplete_versions_are_refused(tmp_path: Path, onnx_file: Path) -> None:
    registry = tmp_path / "registry"
    version_dir = registry / "enc" / publish_version(registry, metadata(), {"frame_encoder.onnx": onnx_file})
    (version_dir / "frame_encoder.onnx").write_bytes(b"tampered")
    with pytest.raises(RegistryError, match="does not match"):
        verify_version(version_dir)
    with pytest.raises(RegistryError):
        set_production(registry, "enc", "1")
    (version_dir / CHECKSUM_FILE).unlink()
    with pytest.raises(RegistryError, match="no SHA256SUMS"):
        verify_version(version_dir)


def test_metadata_must_name_exactly_the_files(tmp_path: Path, onnx_file: Path) -> None:
    with pytest.raises(RegistryError, match="metadata lists"):
        publish_version(tmp_path, metadata(), {"other.onnx": onnx_file})
    assert versions(tmp_path, "enc") == []


def test_a_bad_production_pointer_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "production").write_text("../../etc\n")
    with pytest.raises(RegistryError, match="not a version number"):
        production_version(tmp_path, "enc")


def test_unreadable_registry_files_are_registry_errors(tmp_path: Path, onnx_file: Path) -> None:
    # A directory where a file or the pointer should be: reads fail with an OSError that is not FileNotFoundError
    # (as a file the process may not read does); callers must see a RegistryError, never "nothing promoted".
    registry = tmp_path / "registry"
    version_dir = registry / "enc" / publish_version(registry, metadata(), {"frame_encoder.onnx": onnx_file})
    (version_dir / CHECKSUM_FILE).unlink()
    (version_dir / CHECKSUM_FILE).mkdir()
    with pytest.raises(RegistryError, match="cannot read"):
        verify_version(version_dir)
    (registry / "enc" / "production").mkdir()
    with pytest.raises(RegistryError, match="cannot read"):
        production_version(registry, "enc")


@pytest.mark.parametrize("takes_future", [True, False])
def test_the_pixel_predictor_feed_follows_the_files_inputs(takes_future: bool) -> None:
    inputs = [TensorSpec(name="frames", shape=["batch", 2, 8, 8, 3], dtype="uint8")]
    if takes_future:
        inputs.append(TensorSpec(name="future_embedding", shape=["batch", 4], dtype="float32"))
    file = ModelFile(role="pixel_predictor", path="pixel_predictor.onnx", inputs=inputs,
                     outputs=[TensorSpec(name="next_frame", shape=["batch", 4, 4, 3], dtype="float32")])  # fmt: skip
    frames = np.zeros((3, 2, 8, 8, 3), dtype=np.uint8)
    future = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]  # not contiguous, not float32

    feed = file.pixel_predictor_feed(frames, future)

    assert feed["frames"] is frames
    if takes_future:
        assert set(feed) == {"frames", "future_embedding"}
        assert feed["future_embedding"].dtype == np.float32
        assert feed["future_embedding"].flags.c_contiguous
        np.testing.assert_array_equal(feed["future_embedding"], future)
    else:
        assert set(feed) == {"frames"}  # a version published before that input encodes the frames itself
