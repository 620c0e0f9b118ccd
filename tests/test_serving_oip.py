"""Open Inference Protocol endpoints and the convenience endpoints, end to end on a real uvicorn server.

Shapes follow the OIP / KServe v2 REST spec: health ``{"live"}``/``{"ready"}``, model metadata ``{name, versions,
platform, inputs, outputs}`` with ``{name, datatype, shape}`` tensors, infer ``{"inputs": [...]}`` →
``{"model_name", "model_version", "outputs": [...]}``. Results are compared with onnxruntime run directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import orjson
import pytest

from bench.onnx_models import make_registry_version
from ingest.contract import FrameCodec, encode_window
from serving.anomaly import prediction_error
from serving.node import ServingNode
from tests.conftest import make_window
from tests.serving_fixtures import (
    CONTEXT,
    DIM,
    FUTURE,
    MODEL,
    SIZE,
    base_url,
    binary_infer_request,
    frames,
    infer_request,
    output_array,
    running_node,
    session,
)

TENSOR_KEYS = {"name", "datatype", "shape"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry")
    make_registry_version(path, seed=11, pixel=True, int8=True)
    return path


@pytest.fixture(scope="module")
def node(registry: Path) -> Iterator[ServingNode]:
    with running_node(registry, score_warmup=3) as started:
        yield started


@pytest.fixture
def client(node: ServingNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url(node), timeout=30) as http:
        yield http


def test_health_and_server_metadata(client: httpx.Client) -> None:
    live = client.get("/v2/health/live")
    assert (live.status_code, live.json()) == (200, {"live": True})
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    server = client.get("/v2").json()
    assert server["name"] == "streamssl-serve"
    assert isinstance(server["version"], str)
    assert server["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize("path", [f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1"])
def test_model_metadata_describes_the_frame_encoder(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"name", "versions", "platform", "inputs", "outputs"}
    assert (body["name"], body["versions"], body["platform"]) == (MODEL, ["1"], "onnxruntime_onnx")
    assert body["inputs"] == [{"name": "frames", "datatype": "UINT8", "shape": [-1, SIZE, SIZE, 3]}]
    assert body["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, DIM]}]
    assert all(set(tensor) == TENSOR_KEYS for tensor in body["inputs"] + body["outputs"])


@pytest.mark.parametrize("path", [f"/v2/models/{MODEL}/ready", f"/v2/models/{MODEL}/versions/1/ready"])
def test_model_ready(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert (response.status_code, response.json()) == (200, {"name": MODEL, "ready": True})


@pytest.mark.parametrize("path", [f"/v2/models/{MODEL}/infer", f"/v2/models/{MODEL}/versions/1/infer"])
def test_infer_equals_a_direct_session_run(client: httpx.Client, registry: Path, path: str) -> None:
    pixels = frames(3, seed=5)
    response = client.post(path, json=infer_request(pixels, id="req-7"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"model_name", "model_version", "id", "outputs"}
    assert (body["model_name"], body["model_version"], body["id"]) == (MODEL, "1", "req-7")
    (output,) = body["outputs"]
    assert set(output) == {"name", "shape", "datatype", "data"}
    assert (output["name"], output["shape"], output["datatype"]) == ("embedding", [3, DIM], "FP32")
    expected = session(registry, "1").run(None, {"frames": pixels})[0]
    assert expected.dtype == np.float32
    np.testing.assert_allclose(output_array(body), expected, rtol=1e-5, atol=1e-6)


def test_infer_accepts_nested_data_and_named_outputs(client: httpx.Client, registry: Path) -> None:
    pixels = frames(2, seed=6)
    request = infer_request(pixels, outputs=[{"name": "embedding"}])
    request["inputs"][0]["data"] = pixels.tolist()
    response = client.post(f"/v2/models/{MODEL}/infer", json=request)
    assert response.status_code == 200, response.text
    expected = session(registry, "1").run(None, {"frames": pixels})[0]
    np.testing.assert_allclose(output_array(response.json()), expected, rtol=1e-5, atol=1e-6)


def test_binary_tensor_data_in_and_out_equals_a_direct_session_run(client: httpx.Client, registry: Path) -> None:
    pixels = frames(3, seed=9)
    expected = session(registry, "1").run(None, {"frames": pixels})[0]
    # Binary input, JSON output.
    body, headers = binary_infer_request(pixels, id="bin-1")
    response = client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["id"] == "bin-1"
    np.testing.assert_allclose(output_array(response.json()), expected, rtol=1e-5, atol=1e-6)
    # Binary input and output: the JSON header says where the little-endian FP32 bytes start and how many.
    everything = {"parameters": {"binary_data_output": True}}
    named = {"outputs": [{"name": "embedding", "parameters": {"binary_data": True}}]}
    for extra in (everything, named):
        body, headers = binary_infer_request(pixels, **extra)
        response = client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/octet-stream"
        json_length = int(response.headers["inference-header-content-length"])
        head = orjson.loads(response.content[:json_length])
        (output,) = head["outputs"]
        assert "data" not in output
        assert (output["name"], output["shape"], output["datatype"]) == ("embedding", [3, DIM], "FP32")
        assert output["parameters"] == {"binary_data_size": expected.nbytes}
        values = np.frombuffer(response.content[json_length:], dtype="<f4").reshape(3, DIM)
        np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)


def test_int8_precision_serves_the_int8_files(registry: Path) -> None:
    with running_node(registry, precision="int8") as int8_node, httpx.Client(base_url=base_url(int8_node)) as http:
        pixels = frames(2, seed=8)
        response = http.post(f"/v2/models/{MODEL}/infer", json=infer_request(pixels))
        assert response.status_code == 200, response.text
        expected = session(registry, "1", precision="int8").run(None, {"frames": pixels})[0]
        np.testing.assert_allclose(output_array(response.json()), expected, rtol=1e-5, atol=1e-6)
        fp32 = session(registry, "1").run(None, {"frames": pixels})[0]
        assert not np.array_equal(expected, fp32), "the INT8 file must differ from FP32, or this test proves nothing"
        assert 'precision="int8"' in http.get("/metrics").text


def test_embed_image_equals_the_frame_encoder_on_the_decoded_pixels(client: httpx.Client, registry: Path) -> None:
    rgb = frames(1, seed=9)[0]
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    response = client.post(
        f"/v2/models/{MODEL}/embed/image", content=png.tobytes(), headers={"content-type": "image/png"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_version"], body["resized_from"]) == ("1", None)
    expected = session(registry, "1").run(None, {"frames": rgb[None]})[0][0]
    np.testing.assert_allclose(np.asarray(body["embedding"], np.float32), expected, rtol=1e-5, atol=1e-6)

    ok, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))
    resized = client.post(f"/v2/models/{MODEL}/embed/image", content=jpeg.tobytes())
    assert resized.status_code == 200, resized.text
    assert resized.json()["resized_from"] == [48, 64]
    assert len(resized.json()["embedding"]) == DIM


def test_embed_window_gives_frame_and_clip_embeddings(client: httpx.Client, registry: Path) -> None:
    window = make_window("cam-e", 3, frames=4, height=SIZE, width=SIZE, codec=FrameCodec.PNG)
    response = client.post(f"/v2/models/{MODEL}/embed/window", content=encode_window(window))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["camera_id"], body["window_id"], body["sequence"]) == ("cam-e", window.window_id, 3)
    frame_embeddings, clip = session(registry, "1", "clip_encoder").run(None, {"frames": window.frames[None]})
    np.testing.assert_allclose(
        np.asarray(body["frame_embeddings"], np.float32), frame_embeddings[0], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(np.asarray(body["clip_embedding"], np.float32), clip[0], rtol=1e-5, atol=1e-6)


def test_score_window_is_the_prediction_error_normalised_per_camera(client: httpx.Client, registry: Path) -> None:
    clip_encoder = session(registry, "1", "clip_encoder")
    predictor = session(registry, "1", "predictor")
    pixel_head = session(registry, "1", "pixel_predictor")
    raws: list[float] = []
    for sequence in range(6):  # warm-up is 3 windows on this node
        window = make_window("cam-score", sequence, frames=4, height=SIZE, width=SIZE, seed=100 + sequence)
        response = client.post(f"/v2/models/{MODEL}/score/window", content=encode_window(window))
        assert response.status_code == 200, response.text
        body = response.json()
        frame_embeddings = clip_encoder.run(None, {"frames": window.frames[None]})[0]
        predicted = predictor.run(None, {"context": frame_embeddings[:, :CONTEXT]})[0]
        raw = float(prediction_error(predicted, frame_embeddings[:, CONTEXT : CONTEXT + FUTURE])[0])
        assert body["raw_score"] == pytest.approx(raw, rel=1e-4, abs=1e-6)
        feed = {"frames": window.frames[None, :CONTEXT], "future_embedding": predicted[:, 0]}
        next_frame = pixel_head.run(None, feed)[0][0]
        target = cv2.resize(window.frames[CONTEXT], next_frame.shape[1::-1], interpolation=cv2.INTER_AREA) / 255.0
        assert body["pixel_error"] == pytest.approx(float(np.mean((next_frame - target) ** 2)), rel=1e-4)
        assert (body["camera_id"], body["sequence"], body["model_version"]) == ("cam-score", sequence, "1")
        assert (body["pts_start_s"], body["pts_end_s"]) == (window.pts_s[0], window.pts_s[-1])
        assert body["camera_windows"] == sequence
        if sequence < 3:
            assert body["score"] is None, "no z-score before the camera's warm-up"
        else:
            expected_z = (raw - np.mean(raws)) / np.std(raws)
            assert body["score"] == pytest.approx(expected_z, rel=1e-3, abs=1e-6)
        raws.append(raw)


def test_openapi_document_lists_every_endpoint(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    paths = set(document["paths"])
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/v2/models/{name}/embed/image",
        "/v2/models/{name}/embed/window",
        "/v2/models/{name}/score/window",
    ):
        assert path in paths, f"{path} missing from the OpenAPI document"
    infer_body = document["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"]
    assert infer_body["schema"] == {"$ref": "#/components/schemas/InferRequest"}
    assert "RequestInput" in document["components"]["schemas"]
