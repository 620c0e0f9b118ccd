"""Serving faults, through the real command (``python -m serving``), the real Kafka broker and a real registry:

1. a version the node cannot read (its model file is unreadable to the node's user) is promoted mid-stream: the node
   keeps scoring with the old version, no window is skipped or dead-lettered, the refusal is counted once; once an
   operator repairs the file the node picks the version up;
2. poison messages on the window topic (garbage with a camera's key, a window whose CRC is broken) go to the
   dead-letter topic unchanged with their reason, and the windows after them in the same partition are scored;
3. a tampered version, then a good one, promoted while a client sends HTTP requests without pause: no request fails,
   version 2 never answers one, version 3 ends up serving, and the checksum refusal shows in metrics and log.

Each test prints a ``LEDGER`` line (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bench.onnx_models import make_registry_version
from ingest.bus import Bus, Record, open_bus
from ingest.contract import Window
from ingest.contract.dead_letters import HEADER_ERROR, HEADER_SOURCE
from ingest.contract.messages import HEADER_SCHEMA_VERSION, window_message
from ingest.contract.topics import dead_letter_topic
from ingest.contract.wire import CONTENT_TYPE, encode_window
from ingest.registry import PRODUCTION_POINTER
from ingest.runtime.durable_files import write_atomically
from tests import waiting
from tests.conftest import make_window
from tests.faults.ledger import Ledger, read_topic, scored_ids
from tests.serving_fixtures import MODEL, SIZE, frames, infer_request, metric

REPO = Path(__file__).resolve().parents[2]
RELOADS = "streamssl_serving_model_reloads_total"
_HTTP_PORT = re.compile(r"HTTP API on 127\.0\.0\.1:(\d+)")


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    waiting.wait_until(condition, what, timeout_s)


# --- the serving node as a process ------------------------------------------------------------------------------------
@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    token: str
    url: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {self.token}"})

    def metrics(self) -> str:
        with self.client() as http:
            response = http.get("/metrics")
        assert response.status_code == 200, response.text
        return response.text


def _without_file_override(command: list[str]) -> list[str]:
    """Root reads any file whatever its mode; drop that power (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) for the node,
    so a ``chmod 000`` model file is unreadable to it, as it is to the unprivileged user a deployed node runs as."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "running as root, the test needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE"
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--", *command]


@contextmanager
def serving(tmp_path: Path, registry: Path, *stream_flags: str, file_override: bool = True) -> Iterator[ServeProcess]:
    """``python -m serving`` on a free port with a token, polling the registry every 0.2 s; SIGTERM must end it
    with 0. ``file_override=False``: the node cannot read files whose mode forbids it, even as root."""
    token, token_file, log_path = uuid.uuid4().hex, tmp_path / "token", tmp_path / f"serve-{uuid.uuid4().hex[:6]}.log"
    token_file.write_text(token)
    command = [
        sys.executable, "-m", "serving", "--registry", str(registry), "--host", "127.0.0.1", "--port", "0",
        "--token-file", str(token_file), "--reload-interval", "0.2", "--threads", "1", *stream_flags,
    ]  # fmt: skip
    if not file_override:
        command = _without_file_override(command)
    # Small polls: a fault lands between batches, not inside the one batch that holds every window.
    env = {**os.environ, "PYTHONPATH": str(REPO), "STREAMSSL_STREAM_POLL_RECORDS": "4", "STREAMSSL_PARTITIONS": "2"}
    with log_path.open("ab") as sink:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
    node = ServeProcess(process, log_path, token)
    try:
        wait_until(lambda: bool(_HTTP_PORT.search(node.log())) or process.poll() is not None, "the node listens", 90)
        match = _HTTP_PORT.search(node.log())
        assert match is not None, f"the node did not start:\n{node.log()[-3000:]}"
        assert process.poll() is None, f"the node exited:\n{node.log()[-3000:]}"
        node.url = f"http://127.0.0.1:{match[1]}"
        yield node
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, f"SIGTERM must end the node with 0:\n{node.log()[-3000:]}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def stream_flags(bootstrap: str, topic: str, out: str) -> tuple[str, ...]:
    return ("--bus", f"kafka://{bootstrap}", "--stream-topic", topic, "--output-topic", out, "--group-id", f"g-{out}")


# --- producing and reading the topics ---------------------------------------------------------------------------------
class Tail:
    """Everything on a topic so far, read incrementally (no consumer group, from the beginning)."""

    def __init__(self, bus: Bus, topic: str) -> None:
        bus.create_topic(topic, 2)  # idempotent: the node creates it too, maybe after we start reading
        self.consumer = bus.consumer([topic], group_id=None, start="earliest")
        self.records: list[Record] = []

    def read(self) -> list[Record]:
        self.records += self.consumer.poll(0.2)
        return self.records

    def results(self) -> list[dict[str, object]]:
        return [json.loads(record.value) for record in self.read()]

    def close(self) -> None:
        self.consumer.close()


@dataclass(frozen=True)
class Raw:
    """A record that is not (or not quite) a window, sent as it is."""

    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def produce(bus: Bus, topic: str, items: Sequence[Window | Raw]) -> list[str]:
    """Send windows and raw records one by one, in order; the ids of the windows the broker acknowledged."""
    acknowledged: list[str] = []
    with bus.producer() as producer:
        for item in items:
            if isinstance(item, Window):
                message = window_message(item)
                producer.send(topic, message.value, key=message.key, headers=message.headers).result(timeout=30)
                acknowledged.append(item.window_id)
            else:
                producer.send(topic, item.value, key=item.key, headers=item.headers).result(timeout=30)
    return acknowledged


class Pacer:
    """Windows keep arriving: a thread sends ``items`` one by one, ``pace_s`` apart, until they run out or
    :meth:`stop`; ``acknowledged`` grows as the broker acknowledges each."""

    def __init__(self, bus: Bus, topic: str, items: Sequence[Window], pace_s: float) -> None:
        self.acknowledged: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(bus, topic, items, pace_s), name="pacer")

    def _run(self, bus: Bus, topic: str, items: Sequence[Window], pace_s: float) -> None:
        with bus.producer() as producer:
            for window in items:
                if self._stop.is_set():
                    return
                message = window_message(window)
                producer.send(topic, message.value, key=message.key, headers=message.headers).result(timeout=30)
                self.acknowledged.append(window.window_id)
                time.sleep(pace_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)


def windows(cameras: int, per_camera: int, start: int = 0) -> list[Window]:
    return [
        make_window(f"cam-{camera}", sequence, frames=4, height=SIZE, width=SIZE)
        for sequence in range(start, start + per_camera)
        for camera in range(cameras)
    ]


def assert_exactly_once(ledger: Ledger) -> None:
    """Every acknowledged window scored exactly once: no loss, nothing unknown, no re-read (nothing crashed here)."""
    assert ledger.lost == set(), f"windows never scored: {sorted(ledger.lost)[:5]}"
    assert ledger.unexpected == set(), f"results for windows never produced: {sorted(ledger.unexpected)[:5]}"
    assert ledger.duplicates == 0, "a window was scored twice, yet nothing crashed or rebalanced"


def unique(stem: str) -> str:
    return f"faults.serve.{stem}.{uuid.uuid4().hex[:8]}"


# --- 1. a version the node cannot read, promoted mid-stream -----------------------------------------------------------
@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_unreadable_version_promoted_mid_stream_skips_no_window(kafka_bootstrap: str, tmp_path: Path) -> None:
    registry, topic, out = tmp_path / "registry", unique("in"), unique("out")
    make_registry_version(registry, seed=1)
    bus = open_bus(f"kafka://{kafka_bootstrap}")
    bus.create_topic(topic, 2)
    pacer, late = Pacer(bus, topic, windows(cameras=4, per_camera=40), pace_s=0.05), windows(4, 2, start=40)
    tail = Tail(bus, out)
    try:
        with serving(tmp_path, registry, *stream_flags(kafka_bootstrap, topic, out), file_override=False) as node:
            pacer.start()
            wait_until(lambda: len(tail.read()) >= 8, "the node scored its first windows")
            # Version 2 is complete and its checksums are right, but the node's user cannot read its encoder.
            version = make_registry_version(registry, seed=2, promote=False)
            encoder = registry / MODEL / version / "frame_encoder.onnx"
            encoder.chmod(0)
            # Promote by moving the pointer (set_production would verify the file, which a non-root test cannot read).
            write_atomically(registry / MODEL / PRODUCTION_POINTER, f"{version}\n".encode())
            wait_until(lambda: metric(node.metrics(), RELOADS, result="failure", reason="verify") >= 1, "v2 refused")
            at_refusal = len(pacer.acknowledged)
            wait_until(lambda: len(pacer.acknowledged) >= at_refusal + 12, "12 more windows arrived after the fault")
            pacer.stop()
            acknowledged = list(pacer.acknowledged)
            wait_until(lambda: set(scored_ids(tail.read())) >= set(acknowledged), "every window was scored", 90)
            before_repair = tail.results()
            time.sleep(1.0)  # several polls of the still-broken version: it must be counted once, not per poll
            broken_metrics = node.metrics()

            encoder.chmod(0o644)  # the operator repairs the file: the watcher must try the version again
            wait_until(lambda: metric(node.metrics(), RELOADS, result="success") >= 2, "the repaired v2 was loaded")
            acknowledged += produce(bus, topic, late)
            wait_until(lambda: set(scored_ids(tail.read())) >= set(acknowledged), "the late windows were scored", 60)
            time.sleep(1.0)  # a duplicate would arrive now
            results = tail.results()
            log = node.log()
        dead = read_topic(f"kafka://{kafka_bootstrap}", dead_letter_topic(topic), deadline_s=3)
    finally:
        pacer.stop()
        tail.close()
        bus.close()

    ledger = Ledger(Counter(acknowledged), scored_ids(tail.records), dead_lettered=len(dead))
    versions = Counter(str(result["model_version"]) for result in results)
    print(
        ledger.line("serving-unreadable-version"),
        f"produced_before_refusal={at_refusal} after={len(acknowledged) - at_refusal - len(late)} "
        f"late(after repair)={len(late)} versions={dict(versions)}",
    )
    assert_exactly_once(ledger)
    assert dead == [], "a fault on the node's side never dead-letters a good window"
    assert {result["model_version"] for result in before_repair} == {"1"}, "the unreadable version scored nothing"
    late_ids = {window.window_id for window in late}
    assert {r["model_version"] for r in results if r["window_id"] in late_ids} == {"2"}, "the repaired v2 serves"
    assert metric(broken_metrics, RELOADS, result="failure", reason="verify") == 1, "refused once, not once per poll"
    assert metric(broken_metrics, "streamssl_serving_stream_inference_errors_total") == 0, "the fault never ran"
    assert metric(broken_metrics, "streamssl_serving_stream_windows_total", result="dead_lettered") == 0
    assert "refused a model version (verify)" in log, log[-3000:]
    assert "Permission denied" in log, "the refusal says why"
    assert "still serving" in log, "the refusal says which version keeps serving"
    assert "registry poll failed" not in log, "an unreadable file is a refused version, not a crashed poll"


# --- 2. poison messages on the window topic ---------------------------------------------------------------------------
def broken_crc(window: Window) -> bytes:
    """A window whose 48-byte wire header is fine but one body byte is flipped, so only its CRC-32 can tell."""
    data = bytearray(encode_window(window))
    data[-5] ^= 0xFF  # the last byte of the last frame, just before the CRC trailer
    return bytes(data)


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_poison_messages_are_dead_lettered_and_consumption_goes_on(kafka_bootstrap: str, tmp_path: Path) -> None:
    registry, topic, out = tmp_path / "registry", unique("in"), unique("out")
    make_registry_version(registry, seed=1)
    bus_url = f"kafka://{kafka_bootstrap}"
    bus = open_bus(bus_url)
    bus.create_topic(topic, 2)
    garbage = b"\x00\xffnot a window at all" * 8
    crc_broken = broken_crc(make_window("cam-0", 99, frames=4, height=SIZE, width=SIZE))
    # Both carry cam-0's key, so they sit in cam-0's partition between its windows: the later ones must be scored.
    # The CRC-broken one keeps a window's headers, as a window damaged on the way would.
    window_headers = ((HEADER_SCHEMA_VERSION, b"1"), ("content-type", CONTENT_TYPE.encode()))
    items: list[Window | Raw] = [
        *windows(2, 4), Raw(b"cam-0", garbage), *windows(2, 4, 4), Raw(b"cam-0", crc_broken, window_headers),
        *windows(2, 4, 8),
    ]  # fmt: skip
    try:
        with serving(tmp_path, registry, *stream_flags(kafka_bootstrap, topic, out)) as node:
            acknowledged = produce(bus, topic, items)
            read_topic(bus_url, out, expected=len(acknowledged), deadline_s=60)
            read_topic(bus_url, dead_letter_topic(topic), expected=2, deadline_s=30)
            time.sleep(1.0)  # a duplicate or a third dead letter would arrive now
            results = read_topic(bus_url, out, deadline_s=10)
            dead = read_topic(bus_url, dead_letter_topic(topic), deadline_s=5)
            total = "streamssl_serving_stream_windows_total"
            wait_until(lambda: metric(node.metrics(), total) >= len(items), "every input counted in the metrics")
            metrics = node.metrics()
        inputs = read_topic(bus_url, topic, expected=len(items), deadline_s=30)
    finally:
        bus.close()

    ledger = Ledger(Counter(acknowledged), scored_ids(results), dead_lettered=len(dead))
    print(ledger.line("serving-poison-messages"))
    assert_exactly_once(ledger)
    where = {record.value: record.position for record in inputs if record.value in (garbage, crc_broken)}
    parked = {record.value: record for record in dead}
    assert sorted(parked) == sorted([garbage, crc_broken]), "exactly the two poison records were dead-lettered"
    for value, reason in ((garbage, b"not a StreamSSL window"), (crc_broken, b"CRC-32")):
        record = parked[value]
        assert record.key == b"cam-0", "a dead letter keeps its key"
        assert reason in (record.header(HEADER_ERROR) or b""), record.headers
        assert record.header(HEADER_SOURCE) == where[value].encode(), "it says where it came from"
    assert parked[crc_broken].header(HEADER_SCHEMA_VERSION) == b"1", "a dead letter keeps its own headers"
    assert metric(metrics, "streamssl_serving_stream_windows_total", result="dead_lettered") == 2
    assert metric(metrics, "streamssl_serving_stream_windows_total", result="scored") == len(acknowledged)
    assert metric(metrics, "streamssl_serving_stream_inference_errors_total") == 0


# --- 3. hot reload under HTTP load: a tampered version, then a good one -----------------------------------------------
@dataclass
class LoadClient:
    """One thread sending requests back to back (OIP infer and window score in turn), recording every answer."""

    node: ServeProcess
    versions: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        pixels = frames(1, seed=3)
        window = encode_window(make_window("cam-http", 0, frames=4, height=SIZE, width=SIZE))
        deadline = time.monotonic() + 180  # bounded, whatever happens to the test
        with self.node.client() as http:
            while not self.stop.is_set() and time.monotonic() < deadline:
                self.sent += 1
                try:
                    if self.sent % 2:
                        response = http.post(f"/v2/models/{MODEL}/infer", json=infer_request(pixels))
                    else:
                        headers = {"Content-Type": CONTENT_TYPE}
                        response = http.post(f"/v2/models/{MODEL}/score/window", content=window, headers=headers)
                except httpx.HTTPError as error:
                    self.failures.append(f"{type(error).__name__}: {error}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text[:300]}")
                    continue
                self.versions.append(str(response.json()["model_version"]))

    def answers_from(self, version: str) -> int:
        return self.versions.count(version)


def tamper(registry: Path, version: str) -> None:
    """Flip one byte of a published model file: its SHA256SUMS line no longer matches."""
    target = registry / MODEL / version / "frame_encoder.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_tampered_version_then_a_good_one_under_http_load(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    make_registry_version(registry, seed=1)
    with serving(tmp_path, registry) as node:
        load = LoadClient(node)
        thread = threading.Thread(target=load.run, name="load-client")
        thread.start()
        try:
            wait_until(lambda: load.answers_from("1") >= 20 or not thread.is_alive(), "20 answers from v1")
            tampered = make_registry_version(registry, seed=2, promote=False)
            tamper(registry, tampered)
            # Promote by moving the pointer: set_production verifies first and would refuse the tampered version.
            write_atomically(registry / MODEL / PRODUCTION_POINTER, f"{tampered}\n".encode())
            wait_until(lambda: metric(node.metrics(), RELOADS, result="failure", reason="verify") >= 1, "v2 refused")
            after_refusal = len(load.versions)
            wait_until(lambda: len(load.versions) >= after_refusal + 20, "20 more answers after the refusal")
            good = make_registry_version(registry, seed=3)
            wait_until(lambda: load.answers_from(good) >= 20 or not thread.is_alive(), "20 answers from v3")
        finally:
            load.stop.set()
            thread.join(60)
        metrics, log = node.metrics(), node.log()

    seen = Counter(load.versions)
    print(
        f"LEDGER serving-tampered-reload: requests sent={load.sent} ok={len(load.versions)} "
        f"failed={len(load.failures)} versions seen={dict(seen)}"
    )
    assert not load.failures, f"{len(load.failures)} requests failed, e.g. {load.failures[:3]}"
    assert tampered not in seen, "the tampered version never answered a request"
    switch = load.versions.index(good)
    assert set(load.versions[:switch]) == {"1"}, "version 1 answered until version 3 was swapped in"
    assert set(load.versions[switch:]) == {good}, "once version 3 answered, version 1 never did again"
    assert metric(metrics, RELOADS, result="failure", reason="verify") == 1, "the tampered version refused once"
    assert metric(metrics, RELOADS, result="success") == 2, "v1 at start, v3 after the refusal"
    assert f'version="{good}"' in metrics, "the model info names v3"
    refusal = log.find("refused a model version (verify)")
    assert refusal >= 0, log[-3000:]
    assert "does not match SHA256SUMS" in log[refusal:], "the refusal names the checksum mismatch"
    assert f"now serving {MODEL} version {good}" in log[refusal:], "the watcher kept watching after the refusal"
