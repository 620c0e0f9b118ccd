"""The metadata a published version carries (``metadata.json``, schema ``streamssl.model/1``): which ONNX files it
holds, their tensor interfaces, and the input format the model expects."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

SCHEMA = "streamssl.model/1"
DEFAULT_MODEL_NAME = "streamssl-encoder"

Role = Literal["frame_encoder", "clip_encoder", "predictor", "pixel_predictor"]


class TensorSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    shape: list[int | str]  # a string is a dynamic axis, e.g. "batch"
    dtype: Literal["uint8", "float32"]


class ModelFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    path: str = Field(pattern=r"^[A-Za-z0-9._-]+\.onnx$")
    precision: Literal["fp32", "int8"] = "fp32"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def has_input(self, name: str) -> bool:
        """Whether the graph takes ``name``: a ``pixel_predictor`` published before ``future_embedding`` does not."""
        return any(spec.name == name for spec in self.inputs)

    def pixel_predictor_feed(
        self, context_frames: npt.NDArray[np.uint8], future_embedding: npt.ArrayLike
    ) -> dict[str, npt.NDArray[Any]]:
        """The inputs this ``pixel_predictor`` takes: the ``[N, K, H, W, C]`` context frames, and the predictor's
        ``[N, D]`` first predicted embedding unless the file predates that input (it encodes the frames itself)."""
        feed: dict[str, npt.NDArray[Any]] = {"frames": context_frames}
        if self.has_input("future_embedding"):
            feed["future_embedding"] = np.ascontiguousarray(future_embedding, dtype=np.float32)
        return feed


class InputFormat(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[1, 3]
    window: int = Field(gt=1, description="frames per window the clip encoder was trained on")
    context_frames: int = Field(gt=0, description="K: frames the predictor sees")
    future_frames: int = Field(gt=0, description="M: frames the predictor predicts")
    embedding_dim: int = Field(gt=0)
    normalisation: dict[str, list[float]] = Field(description="mean and std per channel, on pixels scaled to [0, 1]")


class ModelMetadata(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: Literal["streamssl.model/1"] = Field("streamssl.model/1", alias="schema")
    model: str
    version: str = ""  # filled in by publish_version
    created_at: str
    step: int = Field(ge=0)
    config_hash: str
    opset: int = Field(ge=17)
    input: InputFormat
    files: list[ModelFile]
    metrics: dict[str, float] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)

    def file(self, role: Role, precision: Literal["fp32", "int8"] = "fp32") -> ModelFile | None:
        return next((f for f in self.files if f.role == role and f.precision == precision), None)
