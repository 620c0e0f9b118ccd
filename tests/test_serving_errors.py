"""Every bad input gets a 4xx JSON error that says what was wrong; auth, body limits and a full queue behave.

Against the real uvicorn server (Starlette's TestClient is deprecated with httpx), one node for the module.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import orjson
import pytest

from bench.onnx_models import make_registry_version
from ingest.contract import FrameCodec, encode_window
from serving.node import ServingNode
from tests.conftest import make_window
from tests.serving_fixtures import (
    MODEL,
    SIZE,
    Gate,
    base_url,
    binary_infer_request,
    frames,
    infer_request,
    running_node,
)

INFER = f"/v2/models/{MODEL}/infer"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry")
    make_registry_version(path, seed=21)
    return path


@pytest.fixture(scope="module")
def node(registry: Path) -> Iterator[ServingNode]:
    with running_node(registry, max_body_bytes=64 * 1024) as started:
        yield started


@pytest.fixture
def client(node: ServingNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url(node), timeout=30) as http:
        yield http


def assert_error(response: httpx.Response, status: int, *phrases: str) -> dict[str, Any]:
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("error"), str), body
    assert body["error"], body
    for phrase in phrases:
        assert phrase in body["error"], f"{phrase!r} not in {body['error']!r}"
    return body


def with_input(**changes: Any) -> dict[str, Any]:
    request = infer_request(frames(1))
    request["inputs"][0].update(changes)
    return request


@pytest.mark.parametrize(
    ("body", "phrases"),
    [
        (b"{not json", ("not valid JSON",)),
        (b"[1, 2]", ("JSON object",)),
        (b'{"inputs": []}', ("'inputs'",)),
        (b'{"id": 5, "inputs": []}', ("'id'",)),
    ],
)
def test_malformed_json_is_400(client: httpx.Client, body: bytes, phrases: tuple[str, ...]) -> None:
    assert_error(client.post(INFER, content=body), 400, *phrases)


@pytest.mark.parametrize(
    ("request_body", "phrases"),
    [
        (with_input(name="pixels"), ("unknown input 'pixels'", "'frames'")),
        (with_input(datatype="FP32"), ("datatype FP32", "expects UINT8")),
        (with_input(datatype="COMPLEX"), ("unknown datatype",)),
        (with_input(shape=[1, SIZE, SIZE]), ("shape [1, 16, 16]", "[-1, 16, 16, 3]")),
        (with_input(shape=[1, 8, 8, 3]), ("[-1, 16, 16, 3]",)),
        (with_input(shape=[0, SIZE, SIZE, 3]), ("at least 1",)),
        (with_input(shape="1x16x16x3"), ("array of integers",)),
        (with_input(shape=[2, SIZE, SIZE, 3]), ("holds 768 values", "needs 1536")),
        (with_input(data=[1, 2, 3]), ("holds 3 values",)),
        (with_input(data=[300] * (SIZE * SIZE * 3)), ("[0, 255]",)),
        (with_input(data=[-1] * (SIZE * SIZE * 3)), ("[0, 255]",)),
        (with_input(data=[0.5] * (SIZE * SIZE * 3)), ("only integers",)),
        (with_input(data=["1"] * (SIZE * SIZE * 3)), ("only integers",)),
        (with_input(data=[[1, 2], [3]]), ("not a rectangular array",)),
        (with_input(data="abc"), ("'data' must be an array",)),
        (with_input(parameters={"binary_data_size": 10}), ("Inference-Header-Content-Length",)),
        (with_input(parameters="binary"), ("'parameters' must be an object",)),
        ({"inputs": [{"name": "frames", "shape": [1, 16, 16, 3], "datatype": "UINT8"}]}, ("missing 'data'",)),
        ({"inputs": [infer_request(frames(1))["inputs"][0]] * 2}, ("one input",)),
        ({**infer_request(frames(1)), "outputs": [{"name": "logits"}]}, ("unknown outputs",)),
    ],
)
def test_bad_tensors_are_400_with_a_reason(client: httpx.Client, request_body: Any, phrases: tuple[str, ...]) -> None:
    assert_error(client.post(INFER, json=request_body), 400, *phrases)


def _binary(pixels_shape: tuple[int, ...] = (1, SIZE, SIZE, 3), **changes: Any) -> tuple[bytes, dict[str, str]]:
    """A binary-extension request, then ``changes``: ``size`` (binary_data_size), ``tail`` (bytes after the JSON),
    ``header`` (the Inference-Header-Content-Length value), ``data`` (a JSON data array as well)."""
    pixels = frames(pixels_shape[0]).reshape(pixels_shape) if len(pixels_shape) == 4 else frames(1)
    body, headers = binary_infer_request(pixels)
    json_length = int(headers["Inference-Header-Content-Length"])
    head = orjson.loads(body[:json_length])
    tensor = head["inputs"][0]
    if "size" in changes:
        tensor["parameters"]["binary_data_size"] = changes["size"]
    if "data" in changes:
        tensor["data"] = changes["data"]
    if "no_size" in changes:
        del tensor["parameters"]
    head_bytes = orjson.dumps(head)
    tail = changes.get("tail", body[json_length:])
    headers["Inference-Header-Content-Length"] = str(changes.get("header", len(head_bytes)))
    return head_bytes + tail, headers


@pytest.mark.parametrize(
    ("changes", "phrases"),
    [
        ({"header": "abc"}, ("Inference-Header-Content-Length", "'abc'")),
        ({"header": "0"}, ("between 1 and",)),
        ({"header": "99999999"}, ("between 1 and",)),
        ({"header": "5"}, ("not valid JSON",)),
        ({"size": 100}, ("'binary_data_size' is 100 bytes", f"needs {SIZE * SIZE * 3}")),
        ({"size": -1}, ("byte count",)),
        ({"size": "768"}, ("byte count",)),
        ({"tail": b"\x00" * 10}, ("10 bytes follow", f"says {SIZE * SIZE * 3}")),
        ({"tail": bytes(SIZE * SIZE * 3 + 1)}, (f"{SIZE * SIZE * 3 + 1} bytes follow",)),
        ({"data": [1, 2, 3]}, ("both 'binary_data_size' and 'data'",)),
        ({"no_size": True}, ("missing 'data'",)),
        ({"no_size": True, "data": [0] * (SIZE * SIZE * 3)}, ("bytes follow the JSON header", "no 'binary_data_size'")),
    ],
)
def test_bad_binary_tensor_requests_are_400_with_a_reason(
    client: httpx.Client, changes: dict[str, Any], phrases: tuple[str, ...]
) -> None:
    body, headers = _binary(**changes)
    assert_error(client.post(INFER, content=body, headers=headers), 400, *phrases)


def test_bad_binary_output_parameters_are_400(client: httpx.Client) -> None:
    body, headers = binary_infer_request(frames(1), parameters={"binary_data_output": "yes"})
    assert_error(client.post(INFER, content=body, headers=headers), 400, "'binary_data_output'")
    body, headers = binary_infer_request(frames(1), outputs=[{"name": "embedding", "parameters": {"binary_data": 1}}])
    assert_error(client.post(INFER, content=body, headers=headers), 400, "'binary_data'")
    body, headers = binary_infer_request(frames(1), outputs=[{"name": "embedding", "parameters": 7}])
    assert_error(client.post(INFER, content=body, headers=headers), 400, "'outputs'")


def test_unknown_model_or_version_is_404(client: httpx.Client) -> None:
    assert_error(client.get("/v2/models/nope"), 404, "unknown model 'nope'")
    assert_error(client.post("/v2/models/nope/infer", json=infer_request(frames(1))), 404, "unknown model")
    assert_error(client.get(f"/v2/models/{MODEL}/versions/7"), 404, "version '7'", "serves version 1")
    assert_error(client.post(f"/v2/models/{MODEL}/versions/7/infer", json=infer_request(frames(1))), 404, "'7'")
    assert_error(client.get("/v3/whatever"), 404, "no such endpoint")
    assert_error(client.delete(f"/v2/models/{MODEL}"), 405)


def test_undecodable_images_are_400(client: httpx.Client) -> None:
    url = f"/v2/models/{MODEL}/embed/image"
    assert_error(client.post(url, content=b""), 400, "empty")
    assert_error(client.post(url, content=b"GIF89a...."), 400, "not a JPEG or PNG")
    ok, png = cv2.imencode(".png", frames(1)[0])
    assert ok
    assert_error(client.post(url, content=png.tobytes()[:60]), 400, "does not decode")
    bomb = bytearray(png.tobytes()[:33])
    bomb[16:24] = (100_000).to_bytes(4, "big") * 2  # a header promising 10 gigapixels
    assert_error(client.post(url, content=bytes(bomb)), 400, "at most")


def test_malformed_windows_are_400(client: httpx.Client) -> None:
    for path in ("embed/window", "score/window"):
        url = f"/v2/models/{MODEL}/{path}"
        good = encode_window(make_window("cam-1", 0, frames=4, height=SIZE, width=SIZE))
        assert_error(client.post(url, content=b"hello"), 400, "malformed window")
        assert_error(client.post(url, content=good[:-10]), 400, "malformed window", "truncated")
        corrupt = bytearray(good)
        corrupt[60] ^= 0xFF
        assert_error(client.post(url, content=bytes(corrupt)), 400, "malformed window", "CRC")
        small = encode_window(make_window("cam-1", 0, frames=4, height=8, width=8))
        assert client.post(url, content=small).status_code == 200, "another size is resized, as the trainer does"
        short = encode_window(make_window("cam-1", 0, frames=3, height=SIZE, width=SIZE, codec=FrameCodec.PNG))
        assert_error(client.post(url, content=short), 400, "3 frames", "at least 4")


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    assert_error(client.post(INFER, content=b"x" * (64 * 1024 + 1)), 413, "exceeds the limit of 65536 bytes")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        for _ in range(20):
            yield b"x" * 8192

    assert_error(client.post(INFER, content=chunks()), 413, "exceeds the limit")


def test_token_is_required_when_configured(registry: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with running_node(registry, token_file=token_file) as secured, httpx.Client(base_url=base_url(secured)) as client:
        for response in (client.get(f"/v2/models/{MODEL}"), client.post(INFER, json=infer_request(frames(1)))):
            assert_error(response, 401, "Authorization: Bearer")
            assert response.headers["www-authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer s3cret-tokeN"}
        assert_error(client.get(f"/v2/models/{MODEL}", headers=wrong), 401, "wrong")
        assert_error(client.get("/metrics", headers=wrong), 401)
        right = {"Authorization": "Bearer s3cret-token"}
        assert client.post(INFER, json=infer_request(frames(1)), headers=right).status_code == 200
        assert client.get("/metrics", headers=right).status_code == 200
        assert client.get("/v2/health/live").status_code == 200, "health stays open"
        assert client.get("/v2/health/ready").status_code == 200, "health stays open"
        document = client.get("/openapi.json").json()
        assert "HTTPBearer" in document["components"]["securitySchemes"]


def test_full_queue_is_503_with_retry_after(registry: Path) -> None:
    with running_node(registry, max_queue=1, max_batch_size=1) as small:
        model = small.slot.current
        assert model is not None
        gate = Gate(model)
        results: dict[str, httpx.Response] = {}

        def send(tag: str) -> None:
            with httpx.Client(base_url=base_url(small), timeout=60) as http:
                results[tag] = http.post(INFER, json=infer_request(frames(1)))

        first = threading.Thread(target=send, args=("running",))
        first.start()
        assert gate.entered.wait(30), "the first request never reached the model"
        second = threading.Thread(target=send, args=("queued",))
        second.start()
        try:
            deadline_ok = _wait(lambda: len(small.batcher) == 1)
            assert deadline_ok, "the second request was never queued"
            with httpx.Client(base_url=base_url(small), timeout=30) as http:
                rejected = http.post(INFER, json=infer_request(frames(1)))
            assert_error(rejected, 503, "queue is full")
            assert int(rejected.headers["retry-after"]) >= 1
        finally:
            gate.open()
            first.join(30)
            second.join(30)
        assert results["running"].status_code == 200
        assert results["queued"].status_code == 200


def _wait(condition: Any, timeout_s: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_no_model_yet_is_503_then_ready(tmp_path: Path) -> None:
    with running_node(tmp_path) as waiting, httpx.Client(base_url=base_url(waiting), timeout=30) as http:
        assert http.get("/v2/health/live").status_code == 200
        not_ready = http.get("/v2/health/ready")
        assert not_ready.status_code == 503
        assert not_ready.json()["ready"] is False
        assert_error(http.post(INFER, json=infer_request(frames(1))), 503, "not loaded yet")
        make_registry_version(tmp_path, seed=22)
        assert _wait(lambda: waiting.slot.current is not None), "the first production version was not picked up"
        assert http.get("/v2/health/ready").status_code == 200
        assert http.post(INFER, json=infer_request(frames(1))).status_code == 200


def test_a_broken_pinned_version_stops_the_start(registry: Path) -> None:
    from serving.config import ServingSettings
    from serving.errors import ModelLoadError

    node = ServingNode(ServingSettings(registry=registry, version="42", host="127.0.0.1", port=0))
    with pytest.raises(ModelLoadError, match="version 42 was never published"):
        node.start()
