"""Open Inference Protocol JSON ↔ numpy, fast and strict, with the binary tensor data extension.

Requests are parsed with orjson and converted with one ``np.array`` call, or, for the usual flat UINT8 array, by
vectorised numpy (:mod:`serving.fast_tensors`): KServe's python server spends more than half its time in stdlib JSON.
Responses are written by orjson straight from numpy arrays. Every way a request can be
wrong becomes an :class:`~serving.errors.InvalidInputError` that names the tensor and the problem.

Binary tensor data (KServe v2 / Triton extension): the ``Inference-Header-Content-Length`` HTTP header gives the
length of the JSON part of the body; an input with ``"parameters": {"binary_data_size": N}`` has no ``data`` and its
N bytes (little-endian, row-major) follow the JSON, in input order. A client asks for binary outputs with the
request parameter ``binary_data_output`` or an output's ``binary_data``; the response then carries the same header.
An image travels as its 49,152 bytes instead of ~170 kB of decimal text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from ingest.registry import TensorSpec
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
HEADER_LENGTH = "Inference-Header-Content-Length"  # the binary extension's HTTP header
_DECIMAL = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True)
class InferInput:
    """A validated OIP infer request for a single-input model."""

    tensor: npt.NDArray[Any]
    request_id: str | None
    outputs: list[str] | None  # requested output names, None = all
    binary_outputs: frozenset[str] = frozenset()  # outputs to send as binary data


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


def header_length(value: str | None, body_length: int) -> int | None:
    """The ``Inference-Header-Content-Length`` value as the JSON part's length, or None without the header."""
    if value is None:
        return None
    if not _DECIMAL.fullmatch(value.strip()) or not 0 < int(value) <= body_length:
        raise InvalidInputError(
            f"Inference-Header-Content-Length must be the JSON header's length in bytes, between 1 and the body's "
            f"{body_length}; got {value!r}"
        )
    return int(value)


def parse_infer_request(
    body: bytes, spec: TensorSpec, output_names: list[str], json_length: int | None = None
) -> InferInput:
    """Validate an OIP infer request against the model's one input ``spec``; return the input as numpy.

    ``json_length`` (from :func:`header_length`) splits a binary-extension body into its JSON and its tensor bytes.
    """
    binary = None
    if json_length is not None:
        body, binary = body[:json_length], memoryview(body)[json_length:]
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
    tensor = decode_tensor(inputs[0], spec, binary)
    outputs = request.get("outputs")
    return InferInput(
        tensor,
        request_id,
        _requested_outputs(outputs, output_names),
        _binary_outputs(request.get("parameters"), outputs, output_names),
    )


def _binary_outputs(parameters: Any, outputs: Any, known: list[str]) -> frozenset[str]:
    """Outputs the client wants as binary data: all with ``binary_data_output``, else those marked ``binary_data``."""
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidInputError("'parameters' must be an object")
    everything = (parameters or {}).get("binary_data_output", False)
    if not isinstance(everything, bool):
        raise InvalidInputError("parameter 'binary_data_output' must be true or false")
    if everything:
        return frozenset(known)
    chosen = set()
    for output in outputs or []:  # already checked by _requested_outputs
        flag = (output.get("parameters") or {}).get("binary_data", False) if isinstance(output, dict) else False
        if not isinstance(flag, bool):
            raise InvalidInputError(f"output {output.get('name')!r}: parameter 'binary_data' must be true or false")
        if flag:
            chosen.add(output["name"])
    return frozenset(chosen)


def _requested_outputs(outputs: Any, known: list[str]) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) and isinstance(o.get("parameters", {}), dict | None)
        for o in outputs
    ):
        raise InvalidInputError("'outputs' must be an array of objects with a 'name' (and optional 'parameters')")
    names = [o["name"] for o in outputs]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidInputError(f"unknown outputs {unknown}: the model's outputs are {known}")
    return names


def decode_tensor(entry: Any, spec: TensorSpec, binary: memoryview | None = None) -> npt.NDArray[Any]:
    """One OIP request tensor → a numpy array of ``spec``'s dtype and a shape ``spec`` accepts.

    ``binary`` is the body after the JSON header (binary extension), which this single input must fill exactly.
    """
    if not isinstance(entry, dict):
        raise InvalidInputError("each input must be an object with 'name', 'shape', 'datatype' and 'data'")
    name = entry.get("name")
    if not isinstance(name, str):
        raise InvalidInputError("input is missing its 'name' (a string)")
    if name != spec.name:
        raise InvalidInputError(f"unknown input {name!r}: the model's input is {spec.name!r}")
    parameters = entry.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidInputError(f"input {name!r}: 'parameters' must be an object")
    binary_size = (parameters or {}).get("binary_data_size")
    for key in ("shape", "datatype", *(() if binary_size is not None else ("data",))):
        if key not in entry:
            raise InvalidInputError(f"input {name!r} is missing {key!r}")
    datatype = entry["datatype"]
    expected_type = OIP_DATATYPE[spec.dtype]
    if datatype not in OIP_DATATYPES:
        raise InvalidInputError(f"input {name!r}: unknown datatype {datatype!r}; the model expects {expected_type}")
    if datatype != expected_type:
        raise InvalidInputError(f"input {name!r} has datatype {datatype}, the model expects {expected_type}")
    shape = _check_shape(name, entry["shape"], spec)
    if binary_size is None:
        if binary is not None and len(binary):
            raise InvalidInputError(
                f"{len(binary)} bytes follow the JSON header, but input {name!r} has no 'binary_data_size'"
            )
        return _to_array(name, entry["data"], shape, spec.dtype)
    return _from_binary(name, entry, binary_size, binary, shape, spec.dtype)


def _from_binary(
    name: str, entry: dict[str, Any], size: Any, binary: memoryview | None, shape: list[int], dtype: str
) -> npt.NDArray[Any]:
    if binary is None:
        raise InvalidInputError(
            f"input {name!r} has 'binary_data_size' but the request has no Inference-Header-Content-Length header "
            "giving the JSON part's length"
        )
    if "data" in entry:
        raise InvalidInputError(f"input {name!r} has both 'binary_data_size' and 'data'; send one")
    if type(size) is not int or size < 0:
        raise InvalidInputError(f"input {name!r}: 'binary_data_size' must be a byte count, got {size!r}")
    itemsize = np.dtype(_NUMPY[dtype]).itemsize
    needed = math.prod(shape) * itemsize
    if size != needed:
        raise InvalidInputError(
            f"input {name!r}: 'binary_data_size' is {size} bytes, shape {shape} of {OIP_DATATYPE[dtype]} needs {needed}"
        )
    if len(binary) != size:
        raise InvalidInputError(
            f"input {name!r}: {len(binary)} bytes follow the JSON header, 'binary_data_size' says {size}"
        )
    array = np.frombuffer(binary, dtype=np.dtype(_NUMPY[dtype]).newbyteorder("<")).reshape(shape)
    if dtype == "float32" and not np.all(np.isfinite(array)):
        raise InvalidInputError(f"input {name!r}: FP32 values must be finite")
    return array.astype(_NUMPY[dtype], copy=False)


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


def infer_response_body(
    payload: dict[str, Any], outputs: list[dict[str, Any]], binary: frozenset[str]
) -> tuple[bytes, int | None]:
    """The response body and, when some outputs go as binary data, the JSON part's length for the header.

    ``outputs`` come from :func:`encode_tensor`; those named in ``binary`` lose their ``data`` to the bytes after
    the JSON.
    """
    tail: list[bytes] = []
    entries = []
    for output in outputs:
        if output["name"] in binary:
            data = np.ascontiguousarray(output["data"], dtype=output["data"].dtype.newbyteorder("<")).tobytes()
            tail.append(data)
            output = {k: v for k, v in output.items() if k != "data"} | {"parameters": {"binary_data_size": len(data)}}
        entries.append(output)
    head = dumps({**payload, "outputs": entries})
    if not tail:
        return head, None
    return head + b"".join(tail), len(head)


def dumps(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
