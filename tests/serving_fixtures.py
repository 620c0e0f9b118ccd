"""Helpers for the serving tests: a node on a free port, direct onnxruntime sessions to compare with, metrics parsing.

Plain functions and context managers (not fixtures), so each test module declares the few fixtures it needs.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

from ingest.bus import Bus
from ingest.registry import DEFAULT_MODEL_NAME
from serving.config import ServingSettings
from serving.node import ServingNode

MODEL = DEFAULT_MODEL_NAME
SIZE, DIM, WINDOW, CONTEXT, FUTURE = 16, 8, 4, 2, 2


def settings(registry: Path, **overrides: Any) -> ServingSettings:
    """Settings for a test node: loopback, any free port, fast registry polling, one inference thread."""
    values: dict[str, Any] = {
        "registry": registry,
        "host": "127.0.0.1",
        "port": 0,
        "reload_interval_s": 0.05,
        "threads": 1,
        "max_queue_delay_ms": 1.0,
        **overrides,
    }
    return ServingSettings(**values)


@contextmanager
def running_node(registry: Path, *, bus: Bus | None = None, **overrides: Any) -> Iterator[ServingNode]:
    """A started node; stopped (server, stream, batcher, watcher) when the block ends, whatever happened."""
    node = ServingNode(settings(registry, **overrides), bus=bus)
    try:
        node.start()
    except Exception as error:
        raise AssertionError(f"the serving node did not start: {error}") from error
    try:
        yield node
    finally:
        node.stop()


def base_url(node: ServingNode) -> str:
    assert node.http is not None, "the node has no HTTP server"
    return f"http://127.0.0.1:{node.http.port}"


def session(registry: Path, version: str, role: str = "frame_encoder", precision: str = "fp32") -> Any:
    suffix = ".int8.onnx" if precision == "int8" else ".onnx"
    return ort.InferenceSession(str(registry / MODEL / version / f"{role}{suffix}"), providers=["CPUExecutionProvider"])


def frames(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, SIZE, SIZE, 3), dtype=np.uint8)


def infer_request(pixels: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "frames", "shape": list(pixels.shape), "datatype": "UINT8", "data": pixels.ravel().tolist()}
        ],
        **extra,
    }


def binary_infer_request(pixels: np.ndarray, **extra: Any) -> tuple[bytes, dict[str, str]]:
    """An OIP request in the binary tensor data extension: JSON header, then the pixels' bytes; body and headers."""
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "frames",
                    "shape": list(pixels.shape),
                    "datatype": "UINT8",
                    "parameters": {"binary_data_size": pixels.nbytes},
                }
            ],
            **extra,
        }
    )
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    return header + pixels.tobytes(), headers


def output_array(response: dict[str, Any], index: int = 0) -> np.ndarray:
    output = response["outputs"][index]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0.0 if absent); ``labels`` must all match."""
    total = None
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:{{(.*)}})? (\S+)", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[1] or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total = (total or 0.0) + float(match[2])
    return total or 0.0


class Gate:
    """Wraps one role's onnxruntime session of a loaded model so its runs wait until :meth:`open` (blocks the
    batcher's worker deterministically: a full queue, in-flight requests during a swap)."""

    def __init__(self, model: Any, role: str = "frame_encoder") -> None:
        self.model, self.role = model, role
        self.inner = model.sessions[role]
        self.entered = threading.Event()
        self._open = threading.Event()
        model.sessions[role] = self

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        assert self._open.wait(60), "the gate was never opened"
        return self.inner.run(*args, **kwargs)

    def open(self) -> None:
        self._open.set()
        self.model.sessions[self.role] = self.inner
