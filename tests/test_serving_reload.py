"""Hot reload: new production versions are swapped in under load without a failed request; broken ones are refused
while the old model keeps answering, and the watcher keeps watching."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.onnx_models import make_registry_version
from ingest.registry import PRODUCTION_POINTER, publish_version, set_production, verify_version
from tests.serving_fixtures import (
    MODEL,
    Gate,
    base_url,
    frames,
    infer_request,
    metric,
    output_array,
    running_node,
    session,
)
from tests.waiting import wait_until

INFER = f"/v2/models/{MODEL}/infer"


def served_version(http: httpx.Client) -> str:
    response = http.post(INFER, json=infer_request(frames(1)))
    assert response.status_code == 200, response.text
    version: str = response.json()["model_version"]
    return version


def failures(http: httpx.Client, reason: str) -> float:
    return metric(http.get("/metrics").text, "streamssl_serving_model_reloads_total", result="failure", reason=reason)


def test_hot_reload_under_load_fails_no_request(tmp_path: Path) -> None:
    make_registry_version(tmp_path, seed=1)
    with running_node(tmp_path, max_batch_size=8) as node:
        url = base_url(node)
        errors: list[str] = []
        seen: list[list[str]] = [[] for _ in range(4)]
        promoted = threading.Event()
        stop = threading.Event()

        def client(index: int) -> None:
            pixels = frames(1, seed=index)
            with httpx.Client(base_url=url, timeout=30) as http:
                deadline = time.monotonic() + 60
                while not stop.is_set() and time.monotonic() < deadline:  # bounded, whatever happens
                    response = http.post(INFER, json=infer_request(pixels))
                    if response.status_code != 200:
                        errors.append(f"{response.status_code}: {response.text}")
                        continue
                    seen[index].append(response.json()["model_version"])

        threads = [threading.Thread(target=client, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: all(len(s) >= 5 for s in seen), "every client got answers from version 1")
            version = make_registry_version(tmp_path, seed=2)
            promoted.set()
            wait_until(lambda: all(s.count(version) >= 10 for s in seen), "every client got 10 answers from version 2")
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        assert not errors, f"{len(errors)} requests failed during the reload, e.g. {errors[:3]}"
        for answers in seen:
            switch = answers.index("2")
            assert set(answers[:switch]) == {"1"}
            assert set(answers[switch:]) == {"2"}, "once a client saw version 2 it must never see version 1 again"
        with httpx.Client(base_url=url) as http:
            pixels = frames(2, seed=9)
            response = http.post(INFER, json=infer_request(pixels)).json()
            np.testing.assert_allclose(
                output_array(response), session(tmp_path, "2").run(None, {"frames": pixels})[0], rtol=1e-5, atol=1e-6
            )
            assert not np.allclose(output_array(response), session(tmp_path, "1").run(None, {"frames": pixels})[0])
        wait_until(lambda: node.slot.in_flight() == {"2": 0}, "version 1 was retired")


def test_in_flight_requests_finish_on_the_old_model(tmp_path: Path) -> None:
    make_registry_version(tmp_path, seed=1)
    with running_node(tmp_path) as node, httpx.Client(base_url=base_url(node), timeout=30) as http:
        old = node.slot.current
        assert old is not None
        gate = Gate(old)
        pixels = frames(1, seed=4)
        answers: list[httpx.Response] = []
        in_flight = threading.Thread(target=lambda: answers.append(http.post(INFER, json=infer_request(pixels))))
        in_flight.start()
        try:
            assert gate.entered.wait(30), "the request never reached version 1"
            make_registry_version(tmp_path, seed=2)
            wait_until(lambda: node.slot.version == "2", "version 2 was swapped in")
            assert node.slot.in_flight() == {"2": 0, "1": 1}, "version 1 is held by its in-flight request"
        finally:
            gate.open()
            in_flight.join(30)
        (answer,) = answers
        assert answer.status_code == 200
        assert answer.json()["model_version"] == "1"
        expected = session(tmp_path, "1").run(None, {"frames": pixels})[0]
        np.testing.assert_allclose(output_array(answer.json()), expected, rtol=1e-5, atol=1e-6)
        assert served_version(http) == "2"
        assert node.slot.in_flight() == {"2": 0}


def tamper(registry: Path, version: str) -> None:
    """Flip bytes of a published file and point production at it directly (set_production would refuse)."""
    target = registry / MODEL / version / "frame_encoder.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    (registry / MODEL / PRODUCTION_POINTER).write_text(f"{version}\n")


def test_broken_versions_are_refused_and_a_later_good_one_is_picked_up(tmp_path: Path) -> None:
    make_registry_version(tmp_path, seed=1)
    with running_node(tmp_path) as node, httpx.Client(base_url=base_url(node), timeout=30) as http:
        assert served_version(http) == "1"

        tampered = make_registry_version(tmp_path, seed=2, promote=False)
        tamper(tmp_path, tampered)
        wait_until(lambda: failures(http, "verify") == 1, "the tampered version was refused")
        assert served_version(http) == "1"

        corrupt = make_registry_version(tmp_path, seed=3, corrupt="frame_encoder")
        verify_version(tmp_path / MODEL / corrupt)  # its checksums match: only loading it can fail
        wait_until(lambda: failures(http, "session") == 1, "the corrupt ONNX file was refused")
        assert served_version(http) == "1"

        make_registry_version(tmp_path, seed=4, graph_dim=9)  # metadata says 8: the test inference catches it
        wait_until(lambda: failures(http, "validation") == 1, "the version failing its test inference was refused")
        assert served_version(http) == "1"
        assert http.get("/v2/health/ready").status_code == 200, "a refused reload does not make the node unready"

        good = make_registry_version(tmp_path, seed=5)
        wait_until(lambda: node.slot.version == good, "the next good version was picked up")
        assert served_version(http) == good
        text = http.get("/metrics").text
        assert metric(text, "streamssl_serving_model_reloads_total", result="success") == 2
        assert f'version="{good}"' in text
        time.sleep(0.3)  # several polls: each refused version is counted once, not once per poll
        assert failures(http, "verify") == failures(http, "session") == failures(http, "validation") == 1


def test_a_pinned_version_ignores_promotions_and_a_rollback_is_followed(tmp_path: Path) -> None:
    make_registry_version(tmp_path, seed=1)
    make_registry_version(tmp_path, seed=2)
    with running_node(tmp_path, version="1") as pinned, httpx.Client(base_url=base_url(pinned)) as http:
        make_registry_version(tmp_path, seed=3)
        time.sleep(0.3)
        assert served_version(http) == "1"
    with running_node(tmp_path) as following, httpx.Client(base_url=base_url(following)) as http:
        assert served_version(http) == "3"
        set_production(tmp_path, MODEL, "2")
        wait_until(lambda: following.slot.version == "2", "the rollback to version 2 was followed")
        assert served_version(http) == "2"


def test_metadata_that_breaks_the_contract_is_refused(tmp_path: Path) -> None:
    make_registry_version(tmp_path, seed=1)
    source = tmp_path / MODEL / "1"
    metadata = verify_version(source)
    files = {f.path: source / f.path for f in metadata.files}
    renamed = [f.model_copy(update={"inputs": [f.inputs[0].model_copy(update={"name": "x"})]}) for f in metadata.files]
    with running_node(tmp_path) as node:
        version = publish_version(tmp_path, metadata.model_copy(update={"files": renamed}), files)
        set_production(tmp_path, MODEL, version)
        wait_until(lambda: node.watcher.last_error is not None, "the version was refused")
        assert node.watcher.last_error is not None
        assert "contract" in str(node.watcher.last_error)
        assert node.slot.version == "1"


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Nodes must not leave server threads behind (the machine is shared)."""
    yield
    names = ("http", "batcher", "registry-watcher")
    leaked = [thread.name for thread in threading.enumerate() if thread.name in names and thread.is_alive()]
    assert not leaked, f"threads left running: {leaked}"
