"""Export to ONNX exactly per the registry's interfaces (:mod:`ingest.registry`), check parity with
PyTorch on real windows, optionally quantise to INT8, and publish atomically.

Graphs (normalisation inside, batch axis dynamic, embeddings L2-normalised):

* ``frame_encoder.onnx``: ``frames`` uint8 ``[N, H, W, C]`` → ``embedding`` float32 ``[N, D]``
* ``clip_encoder.onnx``: ``frames`` uint8 ``[N, T, H, W, C]`` → ``frame_embeddings [N, T, D]``,
  ``clip_embedding [N, D]`` (the normalised mean of the frame embeddings)
* ``predictor.onnx``: ``context`` float32 ``[N, K, D]`` → ``predicted [N, M, D]``
* ``pixel_predictor.onnx``: ``frames`` uint8 ``[N, K, H, W, C]`` and ``future_embedding`` float32 ``[N, D]`` (the
  predictor's ``predicted[:, 0]``) → ``next_frame`` float32 ``[N, h, w, C]`` in [0, 1]
* ``frame_encoder.int8.onnx`` (optional): onnxruntime static quantisation (QDQ, per-channel weights), calibrated on
  replay windows; its cosine similarity to FP32 (raw and centred) goes into the metadata.

As timm's ``onnx_export``: export, ``onnx.checker``, then compare onnxruntime with PyTorch in the same call; a
version whose parity fails is never published.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
import torch
from torch import Tensor, nn

from ingest.registry import (
    InputFormat,
    ModelFile,
    ModelMetadata,
    Role,
    TensorSpec,
    publish_version,
)
from trainer.config import ModelConfig
from trainer.model.frame_encoder import embed
from trainer.model.streamssl_model import StreamSSLModel

log = logging.getLogger(__name__)

BATCH = "batch"
# The torch.export-based exporter logs every optimisation pass at INFO (and that torchvision is missing at WARNING).
_CHATTY_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export")


class ParityError(Exception):
    """onnxruntime and PyTorch disagree beyond the tolerance: the export is not published."""


class FrameEncoderGraph(nn.Module):
    def __init__(self, model: StreamSSLModel) -> None:
        super().__init__()
        self.normaliser = model.normaliser
        self.encoder = model.encoder

    def forward(self, frames: Tensor) -> Tensor:
        _, normalised = self.normaliser(frames)
        return embed(self.encoder(normalised))


class ClipEncoderGraph(nn.Module):
    def __init__(self, model: StreamSSLModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        _, embeddings, _ = self.model.encode(frames)
        return embeddings, embed(embeddings.mean(dim=1))


class PredictorGraph(nn.Module):
    def __init__(self, model: StreamSSLModel) -> None:
        super().__init__()
        self.predictor = model.predictor

    def forward(self, context: Tensor) -> Tensor:
        out: Tensor = self.predictor(context)
        return out


class PixelPredictorGraph(nn.Module):
    """The pixel head alone: the caller has already run the clip encoder and the predictor on these frames, so the
    graph takes the predicted embedding instead of encoding the context frames again (half a window's ONNX time)."""

    def __init__(self, model: StreamSSLModel) -> None:
        super().__init__()
        self.normaliser = model.normaliser
        self.pixel_head = model.pixel_head

    def forward(self, frames: Tensor, future_embedding: Tensor) -> Tensor:
        unit, _ = self.normaliser(frames)
        return self.pixel_head(unit, future_embedding).permute(0, 2, 3, 1)


@dataclass(frozen=True)
class ExportedFile:
    role: Role
    path: Path
    precision: Literal["fp32", "int8"]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def model_file(self) -> ModelFile:
        return ModelFile(
            role=self.role, path=self.path.name, precision=self.precision, inputs=self.inputs, outputs=self.outputs
        )


def _specs(config: ModelConfig) -> dict[Role, tuple[list[TensorSpec], list[TensorSpec]]]:
    h, w, c, t = config.frame_height, config.frame_width, config.channels, config.window
    k, m, d = config.context_frames, config.future_frames, config.embedding_dim
    return {
        "frame_encoder": (
            [TensorSpec(name="frames", shape=[BATCH, h, w, c], dtype="uint8")],
            [TensorSpec(name="embedding", shape=[BATCH, d], dtype="float32")],
        ),
        "clip_encoder": (
            [TensorSpec(name="frames", shape=[BATCH, t, h, w, c], dtype="uint8")],
            [
                TensorSpec(name="frame_embeddings", shape=[BATCH, t, d], dtype="float32"),
                TensorSpec(name="clip_embedding", shape=[BATCH, d], dtype="float32"),
            ],
        ),
        "predictor": (
            [TensorSpec(name="context", shape=[BATCH, k, d], dtype="float32")],
            [TensorSpec(name="predicted", shape=[BATCH, m, d], dtype="float32")],
        ),
        "pixel_predictor": (
            [
                TensorSpec(name="frames", shape=[BATCH, k, h, w, c], dtype="uint8"),
                TensorSpec(name="future_embedding", shape=[BATCH, d], dtype="float32"),
            ],
            [TensorSpec(name="next_frame", shape=[BATCH, config.pixel_height, config.pixel_width, c], dtype="float32")],
        ),
    }


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _graphs(model: StreamSSLModel) -> dict[Role, nn.Module]:
    return {
        "frame_encoder": FrameEncoderGraph(model),
        "clip_encoder": ClipEncoderGraph(model),
        "predictor": PredictorGraph(model),
        "pixel_predictor": PixelPredictorGraph(model),
    }


def _example(spec: TensorSpec, batch: int = 2) -> Tensor:
    shape = [batch if isinstance(size, str) else size for size in spec.shape]
    if spec.dtype == "uint8":
        return torch.randint(0, 256, shape, dtype=torch.uint8)
    return torch.nn.functional.normalize(torch.randn(shape), dim=-1)


def export_onnx(
    model: StreamSSLModel,
    directory: Path,
    opset: int,
    exporter: Literal["dynamo", "torchscript"] = "dynamo",
    pixel_predictor: bool = True,
) -> list[ExportedFile]:
    """Write the fp32 graphs of ``model`` (in eval mode) to ``directory`` and check each with ``onnx.checker``."""
    model = model.eval()
    specs = _specs(model.config)
    exported: list[ExportedFile] = []
    for role, graph in _graphs(model).items():
        if role == "pixel_predictor" and not pixel_predictor:
            continue
        inputs, outputs = specs[role]
        path = directory / f"{role}.onnx"
        example = tuple(_example(spec) for spec in inputs)
        input_names = [spec.name for spec in inputs]
        output_names = [spec.name for spec in outputs]
        with _quiet_exporter():
            if exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=65536)
                torch.onnx.export(
                    graph,
                    example,
                    str(path),
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_shapes=tuple({0: batch} for _ in inputs),
                    opset_version=opset,
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                )
            else:
                torch.onnx.export(
                    graph,
                    example,
                    str(path),
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_axes={name: {0: BATCH} for name in [*input_names, *output_names]},
                    opset_version=opset,
                    dynamo=False,
                )
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
        _name_batch_axes(proto, path)
        exported.append(ExportedFile(role, path, "fp32", inputs, outputs))
    return exported


def _name_batch_axes(proto: onnx.ModelProto, path: Path) -> None:
    """Give every dynamic first axis the name ``batch`` (exporters name them differently) and save."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH
    onnx.save(proto, str(path))


def parity(
    model: StreamSSLModel, files: list[ExportedFile], frames: npt.NDArray[np.uint8], atol: float
) -> dict[str, float]:
    """Max |onnxruntime − PyTorch| per output on real windows ``frames [N, T, H, W, C]``; raises
    :class:`ParityError` above ``atol``."""
    import onnxruntime as ort

    model = model.eval()
    config = model.config
    k = config.context_frames
    with torch.no_grad():
        clip = torch.from_numpy(frames)
        _, embeddings, _ = model.encode(clip)
        context = embeddings[:, :k].contiguous()
        future_embedding = model.predictor(context)[:, 0].contiguous()
    feeds: dict[Role, dict[str, Tensor]] = {
        "frame_encoder": {"frames": clip[:, 0].contiguous()},
        "clip_encoder": {"frames": clip},
        "predictor": {"context": context},
        "pixel_predictor": {"frames": clip[:, :k].contiguous(), "future_embedding": future_embedding},
    }
    graphs = _graphs(model)
    differences: dict[str, float] = {}
    for exported in files:
        session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
        feed = feeds[exported.role]
        with torch.no_grad():
            expected = graphs[exported.role](*feed.values())
        expected_list = [expected] if isinstance(expected, Tensor) else list(expected)
        actual = session.run(None, {name: tensor.numpy() for name, tensor in feed.items()})
        for spec, want, got in zip(exported.outputs, expected_list, actual, strict=True):
            if list(got.shape) != list(want.shape):
                raise ParityError(
                    f"{exported.role}.{spec.name}: onnxruntime shape {got.shape}, torch {tuple(want.shape)}"
                )
            difference = float(np.abs(got - want.numpy()).max())
            differences[f"{exported.role}.{spec.name}"] = difference
            if difference > atol:
                raise ParityError(
                    f"{exported.role}.{spec.name}: max |onnxruntime - torch| = {difference:.2e} > {atol:.0e}"
                )
    return differences


def quantise_frame_encoder(
    fp32: ExportedFile, calibration: npt.NDArray[np.uint8], check: npt.NDArray[np.uint8]
) -> tuple[ExportedFile, dict[str, float]]:
    """Static INT8 quantisation of the frame encoder; returns the file and its agreement with FP32 on ``check``.

    ``calibration`` and ``check`` are uint8 frames ``[N, H, W, C]`` (replay and held-out windows respectively).
    """
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[npt.NDArray[np.uint8]] = iter(
                np.array_split(calibration, max(1, len(calibration) // 8))
            )

        def get_next(self) -> dict[str, npt.NDArray[np.uint8]] | None:
            batch = next(self._batches, None)
            return None if batch is None else {"frames": batch}

    int8_path = fp32.path.with_name("frame_encoder.int8.onnx")
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32.path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    reference = ort.InferenceSession(str(fp32.path), providers=["CPUExecutionProvider"]).run(None, {"frames": check})[0]
    quantised = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"]).run(None, {"frames": check})[0]
    # Raw cosine flatters: unrelated inputs already score ~0.99 on a small encoder. Centred cosine (subtract the
    # FP32 mean embedding from both) measures how well INT8 keeps the differences between frames.
    mean = reference.mean(axis=0, keepdims=True)
    agreement = {
        "int8_cosine": _mean_cosine(reference, quantised),
        "int8_centred_cosine": _mean_cosine(reference - mean, quantised - mean),
    }
    inputs, outputs = fp32.inputs, fp32.outputs
    return ExportedFile("frame_encoder", int8_path, "int8", inputs, outputs), agreement


def _mean_cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    numerator = (a * b).sum(axis=1)
    denominator = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return float((numerator / denominator).mean())


def build_metadata(
    config: ModelConfig,
    files: list[ExportedFile],
    *,
    model_name: str,
    step: int,
    config_hash: str,
    opset: int,
    metrics: dict[str, float],
    extra: dict[str, Any],
) -> ModelMetadata:
    return ModelMetadata(
        model=model_name,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        step=step,
        config_hash=config_hash,
        opset=opset,
        input=InputFormat(
            height=config.frame_height,
            width=config.frame_width,
            channels=config.channels,
            window=config.window,
            context_frames=config.context_frames,
            future_frames=config.future_frames,
            embedding_dim=config.embedding_dim,
            normalisation={"mean": list(config.mean), "std": list(config.std)},
        ),
        files=[exported.model_file() for exported in files],
        metrics=metrics,
        extra=extra,
    )


def publish(registry: Path, metadata: ModelMetadata, files: list[ExportedFile]) -> str:
    """Publish atomically (:func:`publish_version`); returns the new version."""
    return publish_version(registry, metadata, {exported.path.name: exported.path for exported in files})
