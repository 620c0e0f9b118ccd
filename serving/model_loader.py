"""Registry version → verified, validated :class:`~serving.model.LoadedModel`, or a :class:`ModelLoadError` saying why.

Nothing reaches the slot unchecked: every SHA-256 sum and the metadata (``verify_version``), the metadata against
the ONNX contract, each graph's inputs and outputs against the metadata, and a test inference of every role with
the shapes the metadata promises. Only then may the node swap the model in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from ingest.registry import ModelFile, ModelMetadata, RegistryError, Role, TensorSpec, verify_version
from serving.errors import ModelLoadError
from serving.model import CONTRACT, LEGACY_INPUTS, REQUIRED_ROLES, LoadedModel

log = logging.getLogger(__name__)

_ORT_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}
_TEST_BATCH = 2  # more than one row, so a graph that cannot batch is caught before it serves


@dataclass(frozen=True)
class SessionConfig:
    """How onnxruntime sessions are built: providers in preference order, threads, INT8 or FP32 files."""

    providers: list[str]
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    spin_threads: bool = False
    precision: Literal["fp32", "int8"] = "fp32"
    single_thread_sessions: bool = False  # also build one-thread sessions (adaptive threads; CPU provider only)


def usable_providers(requested: list[str]) -> list[str]:
    """The requested providers this onnxruntime build has, in order; the rest are logged and skipped."""
    available = set(ort.get_available_providers())
    usable = [name for name in requested if name in available]
    missing = [name for name in requested if name not in available]
    if missing:
        log.warning(
            "execution providers %s are not in this onnxruntime build (it has %s); using %s",
            ", ".join(missing),
            ", ".join(sorted(available)),
            ", ".join(usable),
        )
    return usable or ["CPUExecutionProvider"]


class ModelLoader:
    """Loads versions of one model from a registry directory."""

    def __init__(self, registry: Path, model: str, config: SessionConfig) -> None:
        self.registry = registry
        self.model = model
        self.config = config
        self.providers = usable_providers(config.providers)

    def load(self, version: str) -> LoadedModel:
        directory = self.registry / self.model / version
        if not directory.is_dir():
            raise ModelLoadError("registry", f"{directory} does not exist: version {version} was never published")
        try:
            metadata = verify_version(directory)
        except (RegistryError, OSError) as error:  # OSError: a file the node may not read (its mode, a bad disk)
            raise ModelLoadError("verify", f"version {version} failed verification: {error}") from error
        files = self._choose_files(metadata)
        sessions = {role: self._session(directory / file.path) for role, file in files.items()}
        for role, session in sessions.items():
            _check_graph(files[role], session)
        single = None
        if (
            self.config.single_thread_sessions
            and sessions["frame_encoder"].get_providers()[0] == "CPUExecutionProvider"
        ):
            single = {role: self._session(directory / file.path, threads=1) for role, file in files.items()}
        model = LoadedModel(
            name=self.model,
            version=version,
            metadata=metadata,
            precision=self.config.precision,
            provider=sessions["frame_encoder"].get_providers()[0],
            sessions=sessions,
            files=files,
            single_thread_sessions=single,
        )
        _test_inference(model)
        return model

    def _choose_files(self, metadata: ModelMetadata) -> dict[Role, ModelFile]:
        """The file of each role at the configured precision (INT8 falls back to FP32 except for the frame encoder)."""
        files: dict[Role, ModelFile] = {}
        for role in CONTRACT:
            chosen = metadata.file(role, self.config.precision) or metadata.file(role, "fp32")
            if chosen is None:
                if role in REQUIRED_ROLES:
                    raise ModelLoadError("validation", f"version {metadata.version} has no {role} file")
                continue
            if self.config.precision == "int8" and chosen.precision != "int8":
                if role == "frame_encoder":
                    raise ModelLoadError(
                        "validation", f"--precision int8, but version {metadata.version} has no INT8 frame encoder"
                    )
                log.info("version %s has no INT8 %s; using FP32 for it", metadata.version, role)
            _check_metadata_file(metadata, chosen)
            files[role] = chosen
        if metadata.input.window < metadata.input.context_frames + metadata.input.future_frames:
            raise ModelLoadError(
                "validation",
                f"metadata window of {metadata.input.window} frames is shorter than context + future frames "
                f"({metadata.input.context_frames} + {metadata.input.future_frames})",
            )
        return files

    def _session(self, path: Path, threads: int | None = None) -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.config.intra_op_threads if threads is None else threads
        options.inter_op_num_threads = self.config.inter_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        spin = "1" if self.config.spin_threads else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        try:
            return ort.InferenceSession(str(path), sess_options=options, providers=self.providers)
        except Exception as error:  # onnxruntime raises several unrelated pybind types for a bad file
            raise ModelLoadError("session", f"onnxruntime cannot load {path}: {error}") from error


def _fail(file: ModelFile, problem: str) -> ModelLoadError:
    return ModelLoadError("validation", f"{file.path} ({file.role}): {problem}")


def _check_metadata_file(metadata: ModelMetadata, file: ModelFile) -> None:
    """The metadata's description of ``file`` must match the contract and the metadata's input format."""
    contract_inputs, contract_outputs = CONTRACT[file.role]
    legacy = LEGACY_INPUTS.get(file.role)
    for kind, specs, contracts in (
        ("inputs", file.inputs, [contract_inputs] if legacy is None else [contract_inputs, legacy]),
        ("outputs", file.outputs, [contract_outputs]),
    ):
        declared = [(s.name, s.dtype, len(s.shape)) for s in specs]
        allowed = [[(c.name, c.dtype, c.rank) for c in contract] for contract in contracts]
        if declared not in allowed:
            raise _fail(file, f"metadata {kind} are (name, dtype, rank) {declared}, the contract says {allowed[0]}")
    fmt = metadata.input
    expected: dict[str, list[int | None]] = {
        "frames": [None, fmt.height, fmt.width, fmt.channels]
        if file.role == "frame_encoder"
        else [
            None,
            fmt.context_frames if file.role == "pixel_predictor" else None,
            fmt.height,
            fmt.width,
            fmt.channels,
        ],
        "embedding": [None, fmt.embedding_dim],
        "future_embedding": [None, fmt.embedding_dim],
        "frame_embeddings": [None, None, fmt.embedding_dim],
        "clip_embedding": [None, fmt.embedding_dim],
        "context": [None, fmt.context_frames, fmt.embedding_dim],
        "predicted": [None, fmt.future_frames, fmt.embedding_dim],
        "next_frame": [None, None, None, fmt.channels],
    }
    for spec in [*file.inputs, *file.outputs]:
        for axis, (dim, want) in enumerate(zip(spec.shape, expected[spec.name], strict=True)):
            if want is not None and isinstance(dim, int) and dim != want:
                raise _fail(file, f"{spec.name} axis {axis} is {dim} in the metadata, its input format says {want}")
        if not isinstance(spec.shape[0], str):
            raise _fail(file, f"{spec.name} must have a dynamic batch axis, the metadata fixes it to {spec.shape[0]}")


def _check_graph(file: ModelFile, session: Any) -> None:
    """The graph's inputs and outputs must be the metadata's: names, element types, ranks, fixed sizes."""
    actual = {node.name: node for node in [*session.get_inputs(), *session.get_outputs()]}
    for spec in [*file.inputs, *file.outputs]:
        node = actual.get(spec.name)
        if node is None:
            raise _fail(file, f"the graph has no tensor {spec.name!r} (it has {sorted(actual)})")
        if node.type != _ORT_TYPES[spec.dtype]:
            raise _fail(file, f"{spec.name} is {node.type} in the graph, the metadata says {spec.dtype}")
        if len(node.shape) != len(spec.shape):
            raise _fail(file, f"{spec.name} has rank {len(node.shape)} in the graph, the metadata says {spec.shape}")
        for axis, (declared, built) in enumerate(zip(spec.shape, node.shape, strict=True)):
            if isinstance(declared, int) and isinstance(built, int) and declared != built:
                raise _fail(file, f"{spec.name} axis {axis} is {built} in the graph, the metadata says {declared}")
            if isinstance(declared, str) and isinstance(built, int):
                raise _fail(
                    file, f"{spec.name} axis {axis} is fixed to {built} in the graph, the metadata says dynamic"
                )


def _expect(file: ModelFile, spec: TensorSpec, value: np.ndarray, shape: tuple[int, ...]) -> None:
    if value.shape != shape:
        raise _fail(file, f"test inference gave {spec.name} of shape {list(value.shape)}, expected {list(shape)}")
    if not np.all(np.isfinite(value)):
        raise _fail(file, f"test inference gave non-finite values in {spec.name}")


def _test_inference(model: LoadedModel) -> None:
    """Run every role once on seeded random inputs of the promised shapes and check what comes out."""
    fmt = model.metadata.input
    n, t, k, m, d = _TEST_BATCH, fmt.window, fmt.context_frames, fmt.future_frames, fmt.embedding_dim
    pixels = np.random.default_rng(0).integers(0, 256, size=(n, t, *model.frame_shape), dtype=np.uint8)
    try:
        checks: list[tuple[Role, list[np.ndarray], list[tuple[int, ...]]]] = []
        checks.append(("frame_encoder", model.run("frame_encoder", pixels[:, 0]), [(n, d)]))
        frame_embeddings, clip = model.run("clip_encoder", pixels)
        checks.append(("clip_encoder", [frame_embeddings, clip], [(n, t, d), (n, d)]))
        if frame_embeddings.shape == (n, t, d):
            context = np.ascontiguousarray(frame_embeddings[:, :k])
            checks.append(("predictor", model.run("predictor", context), [(n, m, d)]))
        if model.has_pixel_head:
            head = model.files["pixel_predictor"].outputs[0]
            future = np.random.default_rng(1).standard_normal((n, d)).astype(np.float32)
            future /= np.linalg.norm(future, axis=1, keepdims=True)
            prediction = model.predict_next_frame(np.ascontiguousarray(pixels[:, :k]), future)
            fixed = tuple(
                dim if isinstance(dim, int) else prediction.shape[axis] for axis, dim in enumerate(head.shape)
            )
            checks.append(("pixel_predictor", [prediction], [(n, *fixed[1:])]))
        if model.single_thread_sessions:
            one = model.run("clip_encoder", pixels, single_thread=True)[1]
            if not np.allclose(one, clip, atol=1e-4):
                raise ModelLoadError("validation", f"version {model.version}: one-thread sessions disagree")
    except ModelLoadError:
        raise
    except Exception as error:  # onnxruntime's runtime errors (shape mismatches inside the graph) have no common type
        raise ModelLoadError("validation", f"version {model.version}: test inference failed: {error}") from error
    for role, values, shapes in checks:
        file = model.files[role]
        for spec, value, shape in zip(file.outputs, values, shapes, strict=True):
            _expect(file, spec, value, shape)
