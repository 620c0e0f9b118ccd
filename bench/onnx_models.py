"""Contract-conforming ONNX models built with ``onnx.helper`` and numpy (no torch), and registry versions of them.

The trainer exports the real encoders; serving is tested against these stand-ins, which follow the interfaces in
:mod:`ingest.registry` exactly:

* frame encoder: uint8 ``[N, H, W, C]`` → Cast → /255 → (x − mean) / std → NHWC→NCHW → ``len(widths)`` stride-2
  3×3 convolutions with ReLU (``blocks`` more stride-1 ones per stage) → global average pool → MatMul to ``[N, D]``;
* clip encoder: the same weights on every frame of ``[N, T, H, W, C]`` → ``[N, T, D]`` and their mean over T;
* predictor: mean of the K context embeddings → a linear map plus a residual → repeated M times;
* pixel predictor (optional): the last context frame, average-pooled to ``h×w``, plus a seed-dependent offset and
  a hundredth of the mean of ``future_embedding`` (or, with ``legacy_pixel``, as versions published before that
  input: the frames alone).

Weights are seeded: the same seed gives the same model, different seeds give different outputs, so tests can tell
versions apart. :func:`make_registry_version` publishes a full version (with metadata and, optionally, INT8 variants
from ``onnxruntime.quantization.quantize_static``) through :func:`~ingest.registry.publish_version`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ingest.registry import (
    DEFAULT_MODEL_NAME,
    InputFormat,
    ModelFile,
    ModelMetadata,
    Role,
    TensorSpec,
    publish_version,
    set_production,
)

OPSET = 17
MEAN = [0.45, 0.45, 0.45]
STD = [0.25, 0.25, 0.25]


class _Graph:
    """Nodes and initializers of one graph, with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], stem: str | None = None, **attributes: Any) -> str:
        output = self.name(stem or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attributes))
        return output

    def model(self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]) -> bytes:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tests")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model.SerializeToString()


def _rename(graph: _Graph, tensor: str, name: str) -> None:
    """Call the intermediate ``tensor`` ``name`` (a graph output) wherever it is produced or consumed."""
    for node in graph.nodes:
        for values in (node.input, node.output):
            for index, value in enumerate(values):
                if value == tensor:
                    values[index] = name


def encoder_weights(
    seed: int, channels: int, dim: int, widths: Sequence[int], blocks: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of every convolution, then the projection as (matrix, empty): He-initialised, seeded."""
    rng = np.random.default_rng(seed)
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    previous = channels
    for width in widths:
        for block in range(blocks + 1):
            cin = previous if block == 0 else width
            weight = rng.normal(0.0, np.sqrt(2.0 / (cin * 9)), size=(width, cin, 3, 3)).astype(np.float32)
            layers.append((weight, rng.normal(0.0, 0.05, size=width).astype(np.float32)))
        previous = width
    projection = rng.normal(0.0, 1.0 / np.sqrt(previous), size=(previous, dim)).astype(np.float32)
    layers.append((projection, np.zeros(0, np.float32)))
    return layers


def _encoder_body(
    graph: _Graph, pixels: str, *, seed: int, channels: int, dim: int, widths: Sequence[int], blocks: int
) -> str:
    """uint8 NHWC pixels → float32 ``[N, D]`` embeddings."""
    x = graph.op("Cast", [pixels], to=TensorProto.FLOAT)
    x = graph.op("Mul", [x, graph.const("scale", np.array(1 / 255, np.float32))])
    x = graph.op("Sub", [x, graph.const("mean", np.array(MEAN[:channels], np.float32))])
    x = graph.op("Div", [x, graph.const("std", np.array(STD[:channels], np.float32))])
    x = graph.op("Transpose", [x], perm=[0, 3, 1, 2])
    *convolutions, (projection, _) = encoder_weights(seed, channels, dim, widths, blocks)
    index = 0
    for _width in widths:
        for block in range(blocks + 1):
            weight, bias = convolutions[index]
            index += 1
            stride = 2 if block == 0 else 1
            x = graph.op(
                "Conv",
                [x, graph.const("w", weight), graph.const("b", bias)],
                kernel_shape=[3, 3],
                strides=[stride, stride],
                pads=[1, 1, 1, 1],
            )
            x = graph.op("Relu", [x])
    x = graph.op("GlobalAveragePool", [x])
    x = graph.op("Flatten", [x], axis=1)
    return graph.op("MatMul", [x, graph.const("projection", projection)])


def frame_encoder(
    *, seed: int, height: int, width: int, channels: int, dim: int, widths: Sequence[int] = (8,), blocks: int = 0
) -> bytes:
    graph = _Graph()
    out = _encoder_body(graph, "frames", seed=seed, channels=channels, dim=dim, widths=widths, blocks=blocks)
    _rename(graph, out, "embedding")
    return graph.model(
        "frame_encoder",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["batch", height, width, channels])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
    )


def clip_encoder(
    *, seed: int, height: int, width: int, channels: int, dim: int, widths: Sequence[int] = (8,), blocks: int = 0
) -> bytes:
    graph = _Graph()
    flat = graph.op("Reshape", ["frames", graph.const("flat", np.array([-1, height, width, channels], np.int64))])
    embeddings = _encoder_body(graph, flat, seed=seed, channels=channels, dim=dim, widths=widths, blocks=blocks)
    shape = graph.op("Shape", ["frames"])
    batch_time = graph.op(
        "Slice", [shape, graph.const("start", np.array([0], np.int64)), graph.const("end", np.array([2], np.int64))]
    )
    target = graph.op("Concat", [batch_time, graph.const("dim", np.array([dim], np.int64))], axis=0)
    frame_embeddings = graph.op("Reshape", [embeddings, target])
    clip = graph.op("ReduceMean", [frame_embeddings], axes=[1], keepdims=0)
    _rename(graph, clip, "clip_embedding")
    _rename(graph, frame_embeddings, "frame_embeddings")
    return graph.model(
        "clip_encoder",
        [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["batch", "time", height, width, channels])],
        [
            helper.make_tensor_value_info("frame_embeddings", TensorProto.FLOAT, ["batch", "time", dim]),
            helper.make_tensor_value_info("clip_embedding", TensorProto.FLOAT, ["batch", dim]),
        ],
    )


def predictor(*, seed: int, dim: int, context: int, future: int) -> bytes:
    rng = np.random.default_rng(seed + 1_000_003)
    graph = _Graph()
    mean = graph.op("ReduceMean", ["context"], axes=[1], keepdims=1)
    mapped = graph.op("MatMul", [mean, graph.const("w", rng.normal(0, 0.3 / np.sqrt(dim), (dim, dim)).astype("f4"))])
    step = graph.op("Add", [mean, mapped])
    out = graph.op("Tile", [step, graph.const("repeats", np.array([1, future, 1], np.int64))])
    _rename(graph, out, "predicted")
    return graph.model(
        "predictor",
        [helper.make_tensor_value_info("context", TensorProto.FLOAT, ["batch", context, dim])],
        [helper.make_tensor_value_info("predicted", TensorProto.FLOAT, ["batch", future, dim])],
    )


def pixel_predictor(
    *, seed: int, height: int, width: int, channels: int, context: int, factor: int, dim: int, legacy: bool = False
) -> bytes:
    offset = float(np.random.default_rng(seed + 7).uniform(0.0, 0.1))
    graph = _Graph()
    last = graph.op("Gather", ["frames", graph.const("last", np.array(context - 1, np.int64))], axis=1)
    x = graph.op("Cast", [last], to=TensorProto.FLOAT)
    x = graph.op("Mul", [x, graph.const("scale", np.array(1 / 255, np.float32))])
    x = graph.op("Transpose", [x], perm=[0, 3, 1, 2])
    x = graph.op("AveragePool", [x], kernel_shape=[factor, factor], strides=[factor, factor])
    x = graph.op("Transpose", [x], perm=[0, 2, 3, 1])
    x = graph.op("Add", [x, graph.const("offset", np.array(offset, np.float32))])
    inputs = [helper.make_tensor_value_info("frames", TensorProto.UINT8, ["batch", context, height, width, channels])]
    if not legacy:
        inputs.append(helper.make_tensor_value_info("future_embedding", TensorProto.FLOAT, ["batch", dim]))
        shift = graph.op("ReduceMean", ["future_embedding"], axes=[1], keepdims=1)
        shift = graph.op("Mul", [shift, graph.const("weight", np.array(0.01, np.float32))])
        shift = graph.op("Reshape", [shift, graph.const("shape", np.array([-1, 1, 1, 1], np.int64))])
        x = graph.op("Add", [x, shift])
    x = graph.op("Clip", [x, graph.const("lo", np.array(0, np.float32)), graph.const("hi", np.array(1, np.float32))])
    _rename(graph, x, "next_frame")
    return graph.model(
        "pixel_predictor",
        inputs,
        [
            helper.make_tensor_value_info(
                "next_frame", TensorProto.FLOAT, ["batch", height // factor, width // factor, channels]
            )
        ],
    )


class _Samples:
    """A calibration data reader over seeded random uint8 inputs (onnxruntime's CalibrationDataReader protocol)."""

    def __init__(self, name: str, shape: Sequence[int], count: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self._items: Iterator[dict[str, np.ndarray]] = iter(
            [{name: rng.integers(0, 256, size=tuple(shape), dtype=np.uint8)} for _ in range(count)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize_int8(source: Path, target: Path, input_name: str, sample_shape: Sequence[int], samples: int = 4) -> None:
    """Static INT8 quantisation (QOperator: QLinearConv/QLinearMatMul, fast on CPUs with VNNI), random calibration."""
    # The quantiser warns on the root logger about pre-processing and uint8 graph inputs: noise here.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        _quantize_static(source, target, input_name, sample_shape, samples)
    finally:
        root.setLevel(level)


def _quantize_static(source: Path, target: Path, input_name: str, sample_shape: Sequence[int], samples: int) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(source),
        str(target),
        _Samples(input_name, sample_shape, samples, seed=0),
        quant_format=QuantFormat.QOperator,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )


def _spec(name: str, shape: list[int | str], dtype: str) -> TensorSpec:
    return TensorSpec.model_validate({"name": name, "shape": shape, "dtype": dtype})


def role_specs(
    role: Role,
    *,
    height: int,
    width: int,
    channels: int,
    dim: int,
    context: int,
    future: int,
    factor: int,
    legacy_pixel: bool = False,
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The metadata's inputs and outputs of each role, as the contract defines them."""
    pixels = [height, width, channels]
    if role == "frame_encoder":
        return [_spec("frames", ["batch", *pixels], "uint8")], [_spec("embedding", ["batch", dim], "float32")]
    if role == "clip_encoder":
        return [_spec("frames", ["batch", "time", *pixels], "uint8")], [
            _spec("frame_embeddings", ["batch", "time", dim], "float32"),
            _spec("clip_embedding", ["batch", dim], "float32"),
        ]
    if role == "predictor":
        return [_spec("context", ["batch", context, dim], "float32")], [
            _spec("predicted", ["batch", future, dim], "float32")
        ]
    frames = _spec("frames", ["batch", context, *pixels], "uint8")
    inputs = [frames] if legacy_pixel else [frames, _spec("future_embedding", ["batch", dim], "float32")]
    return inputs, [_spec("next_frame", ["batch", height // factor, width // factor, channels], "float32")]


def make_registry_version(
    registry: Path,
    seed: int,
    *,
    model: str = DEFAULT_MODEL_NAME,
    size: int = 16,
    channels: int = 3,
    window: int = 4,
    context: int = 2,
    future: int = 2,
    dim: int = 8,
    widths: Sequence[int] = (8,),
    blocks: int = 0,
    pixel: bool = False,
    legacy_pixel: bool = False,
    int8: bool = False,
    promote: bool = True,
    corrupt: Role | None = None,
    graph_dim: int | None = None,
) -> str:
    """Publish a full version of seeded stand-in models to ``registry``; return its version.

    ``corrupt``: replace that role's ONNX file by garbage before publishing, so its checksum matches but no session
    can load it. ``legacy_pixel``: the pixel predictor (implies ``pixel``) under the contract of versions published
    before it took ``future_embedding``. ``graph_dim``: build the graphs with this embedding size while the metadata
    says ``dim``, so the files load but the test inference finds the wrong output shape.
    """
    built_dim = graph_dim if graph_dim is not None else dim
    factor = 2
    common = {"seed": seed, "height": size, "width": size, "channels": channels, "dim": built_dim}
    graphs: dict[Role, bytes] = {
        "frame_encoder": frame_encoder(**common, widths=widths, blocks=blocks),
        "clip_encoder": clip_encoder(**common, widths=widths, blocks=blocks),
        "predictor": predictor(seed=seed, dim=built_dim, context=context, future=future),
    }
    if pixel or legacy_pixel:
        graphs["pixel_predictor"] = pixel_predictor(
            seed=seed, height=size, width=size, channels=channels, context=context, factor=factor, dim=built_dim,
            legacy=legacy_pixel,
        )  # fmt: skip
    shapes = {"height": size, "width": size, "channels": channels, "dim": dim}
    with tempfile.TemporaryDirectory(prefix="onnx-models-") as scratch:
        files: dict[str, Path] = {}
        entries: list[ModelFile] = []
        for role, data in graphs.items():
            path = Path(scratch) / f"{role}.onnx"
            path.write_bytes(b"this is not an ONNX model" if corrupt == role else data)
            files[path.name] = path
            inputs, outputs = role_specs(
                role, **shapes, context=context, future=future, factor=factor, legacy_pixel=legacy_pixel
            )
            entries.append(ModelFile(role=role, path=path.name, inputs=inputs, outputs=outputs))
            if int8 and role in ("frame_encoder", "clip_encoder"):
                quantized = Path(scratch) / f"{role}.int8.onnx"
                sample = [2, size, size, channels] if role == "frame_encoder" else [1, window, size, size, channels]
                quantize_int8(path, quantized, "frames", sample)
                files[quantized.name] = quantized
                entries.append(
                    ModelFile(role=role, path=quantized.name, precision="int8", inputs=inputs, outputs=outputs)
                )
        metadata = ModelMetadata(
            model=model,
            created_at=datetime.now(UTC).isoformat(),
            step=seed,
            config_hash=f"seed-{seed}",
            opset=OPSET,
            input=InputFormat(
                height=size,
                width=size,
                channels=channels,
                window=window,
                context_frames=context,
                future_frames=future,
                embedding_dim=dim,
                normalisation={"mean": MEAN[:channels], "std": STD[:channels]},
            ),
            files=entries,
            extra={"stand_in": "bench/onnx_models.py"},
        )
        version = publish_version(registry, metadata, files)
    if promote:
        set_production(registry, model, version)
    return version
