"""A loaded model version: one onnxruntime session per role, and the two computations the node runs on them.

* :meth:`LoadedModel.embed_frames`: images → embeddings (the frame encoder; what OIP ``infer`` answers).
* :meth:`LoadedModel.forward`: windows → every graph's outputs, including the pixel head's next frame.
* :meth:`LoadedModel.run_windows`: windows → frame and clip embeddings (clip encoder), the predictor's guess of the
  future frames' embeddings, the raw anomaly score and, with a pixel head, the pixel error.

Instances are built and validated by :mod:`serving.model_loader` and shared through :mod:`serving.model_slot`;
onnxruntime sessions may be run from several threads at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.registry import ModelFile, ModelMetadata, Role, TensorSpec
from serving.anomaly import pixel_error, prediction_error

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class TensorContract:
    name: str
    dtype: str
    rank: int


# The ONNX interfaces of ingest.registry: names, dtypes and ranks every exported file must have.
CONTRACT: dict[Role, tuple[tuple[TensorContract, ...], tuple[TensorContract, ...]]] = {
    "frame_encoder": ((TensorContract("frames", "uint8", 4),), (TensorContract("embedding", "float32", 2),)),
    "clip_encoder": (
        (TensorContract("frames", "uint8", 5),),
        (TensorContract("frame_embeddings", "float32", 3), TensorContract("clip_embedding", "float32", 2)),
    ),
    "predictor": ((TensorContract("context", "float32", 3),), (TensorContract("predicted", "float32", 3),)),
    "pixel_predictor": (
        (TensorContract("frames", "uint8", 5), TensorContract("future_embedding", "float32", 2)),
        (TensorContract("next_frame", "float32", 4),),
    ),
}
# Inputs of versions published under an earlier contract that nodes still load: the pixel predictor once took the
# context frames alone and encoded them a second time inside its graph.
LEGACY_INPUTS: dict[Role, tuple[TensorContract, ...]] = {"pixel_predictor": (TensorContract("frames", "uint8", 5),)}
REQUIRED_ROLES: tuple[Role, ...] = ("frame_encoder", "clip_encoder", "predictor")


@dataclass(frozen=True)
class WindowForward:
    """What the graphs give for N windows: embeddings, the predictor's M future embeddings, the pixel head's guess."""

    frame_embeddings: npt.NDArray[np.float32]  # [N, T, D]
    clip_embeddings: npt.NDArray[np.float32]  # [N, D]
    predicted: npt.NDArray[np.float32]  # [N, M, D]
    next_frame: npt.NDArray[np.float32] | None  # [N, h, w, C] in [0, 1], with a pixel predictor


@dataclass(frozen=True)
class WindowOutputs:
    """Results for a batch of N windows of T frames (embedding size D)."""

    frame_embeddings: npt.NDArray[np.float32]  # [N, T, D]
    clip_embeddings: npt.NDArray[np.float32]  # [N, D]
    raw_scores: npt.NDArray[np.float64]  # [N]
    pixel_errors: npt.NDArray[np.float64] | None  # [N], with a pixel predictor

    def rows(self, start: int, stop: int) -> WindowOutputs:
        return WindowOutputs(
            self.frame_embeddings[start:stop],
            self.clip_embeddings[start:stop],
            self.raw_scores[start:stop],
            None if self.pixel_errors is None else self.pixel_errors[start:stop],
        )


@dataclass(eq=False)
class LoadedModel:
    """One version of one model, ready to run. ``sessions`` and ``files`` are keyed by role."""

    name: str
    version: str
    metadata: ModelMetadata
    precision: str
    provider: str
    sessions: dict[Role, Any]  # onnxruntime.InferenceSession (untyped package)
    files: dict[Role, ModelFile]
    # The same graphs on one intra-op thread each, for batches that run side by side under load (adaptive threads).
    single_thread_sessions: dict[Role, Any] | None = None
    leases: int = field(default=0, compare=False)  # guarded by the ModelSlot's lock

    @property
    def frame_input(self) -> TensorSpec:
        return self.files["frame_encoder"].inputs[0]

    @property
    def frame_output(self) -> TensorSpec:
        return self.files["frame_encoder"].outputs[0]

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of the frames every encoder takes."""
        spec = self.metadata.input
        return spec.height, spec.width, spec.channels

    @property
    def context_frames(self) -> int:
        return self.metadata.input.context_frames

    @property
    def future_frames(self) -> int:
        return self.metadata.input.future_frames

    @property
    def has_pixel_head(self) -> bool:
        return "pixel_predictor" in self.sessions

    def describe(self) -> str:
        return f"{self.name} version {self.version} ({self.precision}, {self.provider})"

    def run(self, role: Role, value: Array, single_thread: bool = False) -> list[npt.NDArray[np.float32]]:
        """Run a role that takes one input; its outputs in contract order. ``single_thread``: on the one-thread
        session where the model has them."""
        return self._run(role, {CONTRACT[role][0][0].name: value}, single_thread)

    def predict_next_frame(
        self, context_frames: npt.NDArray[np.uint8], future_embedding: Array, single_thread: bool = False
    ) -> npt.NDArray[np.float32]:
        """The pixel head's ``[N, h, w, C]`` guess of frame K+1 from the ``[N, K, H, W, C]`` context frames and the
        predictor's ``[N, D]`` first predicted embedding (which a legacy file, encoding the frames itself, ignores)."""
        feed = self.files["pixel_predictor"].pixel_predictor_feed(context_frames, future_embedding)
        return self._run("pixel_predictor", feed, single_thread)[0]

    def _run(self, role: Role, feed: dict[str, Array], single_thread: bool) -> list[npt.NDArray[np.float32]]:
        sessions = self.single_thread_sessions if single_thread and self.single_thread_sessions else self.sessions
        results = sessions[role].run([o.name for o in CONTRACT[role][1]], feed)
        return [np.asarray(result, dtype=np.float32) for result in results]

    def embed_frames(self, frames: npt.NDArray[np.uint8], single_thread: bool = False) -> npt.NDArray[np.float32]:
        """``[N, H, W, C]`` uint8 → ``[N, D]`` float32."""
        return self.run("frame_encoder", frames, single_thread)[0]

    def forward(self, frames: npt.NDArray[np.uint8], single_thread: bool = False) -> WindowForward:
        """Every graph once on ``[N, T, H, W, C]`` uint8 windows (T ≥ K + M): what scores and previews are made of."""
        k = self.context_frames
        frame_embeddings, clip_embeddings = self.run("clip_encoder", frames, single_thread)
        (predicted,) = self.run("predictor", np.ascontiguousarray(frame_embeddings[:, :k]), single_thread)
        next_frame = None
        if self.has_pixel_head:
            next_frame = self.predict_next_frame(np.ascontiguousarray(frames[:, :k]), predicted[:, 0], single_thread)
        return WindowForward(frame_embeddings, clip_embeddings, predicted, next_frame)

    def run_windows(self, frames: npt.NDArray[np.uint8], single_thread: bool = False) -> WindowOutputs:
        """``[N, T, H, W, C]`` uint8 windows (T ≥ K + M) → embeddings and raw anomaly scores."""
        k, m = self.context_frames, self.future_frames
        out = self.forward(frames, single_thread)
        raw = prediction_error(out.predicted, out.frame_embeddings[:, k : k + m])
        pixels = None if out.next_frame is None else pixel_error(out.next_frame, frames[:, k])
        return WindowOutputs(out.frame_embeddings, out.clip_embeddings, raw, pixels)
