"""Every metric the serving issue names is exposed (prefix ``streamssl_serving_``) on /metrics and on --metrics-port,
with the values a few requests, a reload and a little stream traffic should leave."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from bench.onnx_models import make_registry_version
from ingest.bus.embedded import EmbeddedBus
from ingest.contract import encode_window
from ingest.contract.messages import window_message
from tests.conftest import make_window
from tests.serving_fixtures import MODEL, SIZE, base_url, frames, infer_request, metric, running_node

EVERY_METRIC = [
    "streamssl_serving_requests_total",
    "streamssl_serving_request_duration_seconds_bucket",
    "streamssl_serving_in_flight_requests",
    "streamssl_serving_queue_wait_seconds_bucket",
    "streamssl_serving_queue_depth",
    "streamssl_serving_inference_duration_seconds_bucket",
    "streamssl_serving_batch_size_bucket",
    "streamssl_serving_model_info",
    "streamssl_serving_model_loaded",
    "streamssl_serving_model_reloads_total",
    "streamssl_serving_stream_windows_total",
    "streamssl_serving_stream_lag_messages",
    "streamssl_serving_stream_publish_errors_total",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_metrics_name_everything_the_issue_asks_for(tmp_path: Path, embedded_bus: EmbeddedBus) -> None:
    make_registry_version(tmp_path, seed=61)
    embedded_bus.create_topic("in.windows", 1)
    metrics_port = free_port()
    with (
        running_node(tmp_path, bus=embedded_bus, stream_topic="in.windows", metrics_port=metrics_port) as node,
        httpx.Client(base_url=base_url(node), timeout=30) as http,
    ):
        assert http.post(f"/v2/models/{MODEL}/infer", json=infer_request(frames(2))).status_code == 200
        assert http.post(f"/v2/models/{MODEL}/infer", content=b"nonsense").status_code == 400
        window = make_window("cam-m", 0, frames=4, height=SIZE, width=SIZE)
        assert http.post(f"/v2/models/{MODEL}/score/window", content=encode_window(window)).status_code == 200
        with embedded_bus.producer() as producer:
            message = window_message(window)
            producer.send("in.windows", message.value, key=message.key).result(5)
        wait_for(lambda: node.metrics.stream_windows.labels("scored")._value.get() == 1)
        make_registry_version(tmp_path, seed=62)
        wait_for(lambda: node.slot.version == "2")

        for text in (http.get("/metrics").text, httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text):
            samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
            missing = [name for name in EVERY_METRIC if name not in samples]
            assert not missing, f"metrics missing from /metrics: {missing}"
            infer = "/v2/models/{name}/infer"
            assert metric(text, "streamssl_serving_requests_total", endpoint=infer, status="200") == 1
            assert metric(text, "streamssl_serving_requests_total", endpoint=infer, status="400") == 1
            assert metric(text, "streamssl_serving_batch_size_count", kind="frames") == 1
            assert metric(text, "streamssl_serving_batch_size_sum", kind="frames") == 2
            assert metric(text, "streamssl_serving_batch_size_count", kind="windows") == 2
            assert metric(text, "streamssl_serving_model_reloads_total", result="success") == 2
            assert metric(text, "streamssl_serving_model_info", version="2", precision="fp32") == 1
            assert 'provider="CPUExecutionProvider"' in text
            assert metric(text, "streamssl_serving_stream_windows_total", result="scored") == 1
            assert metric(text, "streamssl_serving_stream_lag_messages", partition="0") == 0
            names = {line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE streamssl_serving")}
            assert all(name.startswith("streamssl_serving_") for name in names)
            counters = [
                line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE") and "counter" in line
            ]
            assert counters, "no counter declared"
            for counter in counters:
                assert any(sample.startswith(counter.removesuffix("_total") + "_total") for sample in samples), counter


@pytest.mark.parametrize("name", EVERY_METRIC)
def test_metric_names_follow_prometheus_conventions(name: str) -> None:
    assert name.startswith("streamssl_serving_")
    assert name == name.lower()
    base = name.removesuffix("_bucket")
    if "duration" in base or "wait" in base:
        assert base.endswith("_seconds"), f"{name}: times are in seconds, named so"
