"""Request and response shapes of the HTTP API, for the OpenAPI document only.

Handlers read bodies with orjson (:mod:`serving.tensors`), not through these models: pydantic validation of a
50,000-number array would cost more than the inference. The models describe the Open Inference Protocol (KServe v2)
messages and the convenience endpoints, so clients and fuzzers get an accurate schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Datatype = Literal["UINT8", "FP32"]


class ErrorResponse(BaseModel):
    error: str = Field(description="what was wrong, in words")


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int] = Field(description="-1 marks a dynamic axis")


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: dict[str, Any] | None = Field(
        None, description='{"binary_data_size": N}: the values are N bytes after the JSON (binary extension)'
    )
    data: list[Any] | None = Field(
        None, description="tensor values, flat in row-major order (nested arrays are accepted); absent when binary"
    )


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(None, description='{"binary_data": true}: send it as binary data')


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description='{"binary_data_output": true}: send every output as binary data'
    )
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: dict[str, Any] | None = Field(None, description='{"binary_data_size": N} for a binary output')
    data: list[float] | None = Field(None, description="absent for a binary output")


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class ImageEmbedding(BaseModel):
    model_name: str
    model_version: str
    embedding: list[float]
    resized_from: list[int] | None = Field(description="[height, width] of the image if it was resized to the model's")


class WindowEmbedding(BaseModel):
    model_name: str
    model_version: str
    camera_id: str
    window_id: str
    sequence: int
    frame_embeddings: list[list[float]]
    clip_embedding: list[float]


class SceneRegion(BaseModel):
    row: int
    col: int
    grid: int = Field(description="the frame is cut into grid × grid cells")
    box: list[int] = Field(description="[x0, y0, x1, y1] of the cell in the window's frame pixels")


class WindowScore(BaseModel):
    """One scored window; stream mode publishes the same object (plus the embedding) to the output topic."""

    schema_: str = Field(alias="schema")
    model_name: str
    model_version: str
    camera_id: str
    window_id: str
    sequence: int
    segment: int
    pts_start_s: float
    pts_end_s: float
    capture_time_s: float
    score: float | None = Field(description="z-score against the camera's running statistics; null while warming up")
    raw_score: float = Field(description="future-prediction error: mean over the predicted frames of 1 − cosine")
    pixel_error: float | None = Field(description="MSE of the pixel head's next frame, if the model has one")
    knn_score: float | None = Field(
        None, description="distance to the camera's memory of normal windows (kNN); null until it holds a few"
    )
    scene_score: float | None = Field(
        None,
        description="the most unusual grid cell's distance to that cell's memory of normal motion and stillness, "
        "calibrated per cell (0 ≈ the cell's median, 1 ≈ its 90th percentile); null while the camera warms up",
    )
    scene_region: SceneRegion | None = Field(None, description="the cell that gave scene_score")
    slowdown_score: float | None = Field(
        None,
        description="how much slower than the camera's normal its traffic moved over the last 8 s (optical flow per "
        "block against that block's typical speed; stopped vehicles count as speed 0), calibrated per camera "
        "(0 ≈ its median, 1 ≈ its 90th percentile), plus, where the traffic repeats with a signal's cycle, its "
        "shortfall against the same phase of the last cycles over 4 s, calibrated the same way; null while the "
        "camera warms up",
    )
    camera_windows: int = Field(description="windows behind the camera's statistics")
    camera_mean: float
    camera_std: float
    scored_at: float = Field(description="Unix time the score was computed")
    embedding: list[float] | None = None
