"""Open Inference Protocol JSON ↔ numpy, fast and strict.

Requests are parsed with orjson and converted with one ``np.array`` call, or, for the usual flat UINT8 array, by
vectorised numpy (:mod:`serving.fast_tensors`): KServe's python server spends more than half its time in stdlib JSON.
Responses are written by orjson straight from numpy arrays. Every way a request can be
wrong becomes an :class:`~serving.errors.InvalidInputError` that names the tensor and the problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from ingest.contract.model_registry import TensorSpec
from serving.errors import InvalidInputError
from serving.fast_tensors import parse_uint8, split_data

# Every OIP datatype, so an unsupported one gets a different message from an unknown one.
OIP_DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"}
)
OIP_DATATYPE = {"uint8": "UINT8", "float32": "FP32"}
_LIMITS = {"uint8": (0, 255)}
_NUMPY = {"uint8": np.uint8, "float32": np.float32}
_MAX_ELEMENTS = 1 << 31


@dataclass(frozen=True)
class InferInput:
    """A validated OIP infer request for a single-input model."""

    tensor: npt.NDArray[Any]
    request_id: str | None
    outputs: list[str] | None  # requested output names, None = all


def load_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"request body is not valid JSON: {error}") from error


def oip_shape(spec: TensorSpec) -> list[int]:
    """The OIP form of a metadata shape: dynamic axes are -1."""
    return [dim if isinstance(dim, int) else -1 for dim in spec.shape]


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": OIP_DATATYPE[spec.dtype], "shape": oip_shape(spec)}


def _load_request(body: bytes, dtype: str) -> Any:
    """The parsed request; a flat UINT8 ``data`` array comes back as numpy already (:mod:`serving.fast_tensors`)."""
    split = split_data(body) if dtype == "uint8" else None
    if split is not None:
        values = parse_uint8(split[1])
        if values is not None:
            request = load_json(split[0])
            inputs = request.get("inputs") if isinstance(request, dict) else None
            if (
                isinstance(inputs, list)
                and len(inputs) == 1
                and isinstance(inputs[0], dict)
                and inputs[0].get("data") == []
            ):
                inputs[0]["data"] = values
                return request
    return load_json(body)


def parse_infer_request(body: bytes, spec: TensorSpec, output_names: list[str]) -> InferInput:
    """Validate an OIP infer request against the model's one input ``spec``; return the input as numpy."""
    request = _load_request(body, spec.dtype)
    if not isinstance(request, dict):
        raise InvalidInputError('request body must be a JSON object like {"inputs": [{"name", "shape", ...}]}')
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInputError("'id' must be a string")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError("'inputs' must be a non-empty array of tensors")
    if len(inputs) != 1:
        raise InvalidInputError(f"the model has one input ({spec.name!r}), the request has {len(inputs)}")
    tensor = decode_tensor(inputs[0], spec)
    return InferInput(tensor, request_id, _requested_outputs(request.get("outputs"), output_names))


def _requested_outputs(outputs: Any, known: list[str]) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InvalidInputError("'outputs' must be an array of objects with a 'name'")
    names = [o["name"] for o in outputs]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidInputError(f"unknown outputs {unknown}: the model's outputs are {known}")
    return names


def decode_tensor(entry: Any, spec: TensorSpec) -> npt.NDArray[Any]:
    """One OIP request tensor → a numpy array of ``spec``'s dtype and a shape ``spec`` accepts."""
    if not isinstance(entry, dict):
        raise InvalidInputError("each input must be an object with 'name', 'shape', 'datatype' and 'data'")
    name = entry.get("name")
    if not isinstance(name, str):
        raise InvalidInputError("input is missing its 'name' (a string)")
    if name != spec.name:
        raise InvalidInputError(f"unknown input {name!r}: the model's input is {spec.name!r}")
    for key in ("shape", "datatype", "data"):
        if key not in entry:
            raise InvalidInputError(f"input {name!r} is missing {key!r}")
    if isinstance(entry.get("parameters"), dict) and "binary_data_size" in entry["parameters"]:
        raise InvalidInputError(f"input {name!r}: binary tensor data is not supported; send the values in 'data'")
    datatype = entry["datatype"]
    expected_type = OIP_DATATYPE[spec.dtype]
    if datatype not in OIP_DATATYPES:
        raise InvalidInputError(f"input {name!r}: unknown datatype {datatype!r}; the model expects {expected_type}")
    if datatype != expected_type:
        raise InvalidInputError(f"input {name!r} has datatype {datatype}, the model expects {expected_type}")
    shape = _check_shape(name, entry["shape"], spec)
    return _to_array(name, entry["data"], shape, spec.dtype)


def _check_shape(name: str, shape: Any, spec: TensorSpec) -> list[int]:
    expected = oip_shape(spec)
    if not isinstance(shape, list) or not all(type(dim) is int for dim in shape):
        raise InvalidInputError(f"input {name!r}: 'shape' must be an array of integers, like {expected}")
    if len(shape) != len(expected) or any(want not in (-1, got) for want, got in zip(expected, shape, strict=True)):
        raise InvalidInputError(f"input {name!r} has shape {shape}, the model expects {expected} (-1: any size ≥ 1)")
    if any(dim < 1 for dim in shape):
        raise InvalidInputError(f"input {name!r} has shape {shape}: every dimension must be at least 1")
    if math.prod(shape) > _MAX_ELEMENTS:
        raise InvalidInputError(f"input {name!r} has shape {shape}: more than {_MAX_ELEMENTS} elements")
    return shape


def _to_array(name: str, data: Any, shape: list[int], dtype: str) -> npt.NDArray[Any]:
    if isinstance(data, np.ndarray):  # the fast path's flat UINT8 values, already checked
        if data.size != math.prod(shape):
            raise InvalidInputError(
                f"input {name!r}: 'data' holds {data.size} values, shape {shape} needs {math.prod(shape)}"
            )
        return data.reshape(shape)
    if not isinstance(data, list):
        raise InvalidInputError(f"input {name!r}: 'data' must be an array of numbers (flat, row-major, or nested)")
    count = math.prod(shape)
    try:
        values = np.array(data)
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise InvalidInputError(f"input {name!r}: 'data' is not a rectangular array of numbers ({error})") from error
    kinds = "iub" if dtype == "uint8" else "iubf"
    if values.dtype.kind not in kinds:
        what = "integers" if dtype == "uint8" else "numbers"
        raise InvalidInputError(f"input {name!r}: {OIP_DATATYPE[dtype]} 'data' must hold only {what}")
    if values.size != count:
        raise InvalidInputError(f"input {name!r}: 'data' holds {values.size} values, shape {shape} needs {count}")
    limits = _LIMITS.get(dtype)
    if limits is not None and values.size and (values.min() < limits[0] or values.max() > limits[1]):
        raise InvalidInputError(
            f"input {name!r}: {OIP_DATATYPE[dtype]} values must be in [{limits[0]}, {limits[1]}], got "
            f"[{values.min()}, {values.max()}]"
        )
    converted = values.reshape(shape).astype(_NUMPY[dtype], copy=False)
    if dtype == "float32" and not np.all(np.isfinite(converted)):
        raise InvalidInputError(f"input {name!r}: FP32 values must be finite and within the FP32 range")
    return np.ascontiguousarray(converted)


def encode_tensor(name: str, array: npt.NDArray[Any]) -> dict[str, Any]:
    """A numpy array → OIP response tensor (flat row-major data, serialised by orjson without a Python list)."""
    datatype = OIP_DATATYPE[str(array.dtype)]
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": np.ascontiguousarray(array).ravel()}


def dumps(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
