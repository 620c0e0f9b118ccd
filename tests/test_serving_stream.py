"""Stream mode: one result per window, keyed by camera; dead letters for what cannot be scored; offsets committed only
after the results are acknowledged (at least once: duplicates only after a crash, never losses).

The semantics run on the embedded bus (fast, and a producer that fails on demand); the crash test runs the real
command against the real Kafka broker and kills it with SIGKILL half-way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.onnx_models import make_registry_version
from ingest.bus import Bus, BusConsumer, BusProducer, BusUnavailableError, Delivered, Record, TopicPartition, open_bus
from ingest.bus.base import Headers, StartPosition
from ingest.bus.embedded import EmbeddedBus
from ingest.contract import Window
from ingest.contract.dead_letters import HEADER_ERROR
from ingest.contract.messages import window_message
from ingest.contract.topics import dead_letter_topic
from tests.conftest import make_window
from tests.serving_fixtures import DIM, MODEL, SIZE, metric, running_node
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry")
    make_registry_version(path, seed=41)
    return path


def windows(cameras: int, per_camera: int, start: int = 0) -> list[Window]:
    return [
        make_window(f"cam-{camera}", sequence, frames=4, height=SIZE, width=SIZE)
        for sequence in range(start, start + per_camera)
        for camera in range(cameras)
    ]


def publish(bus: Bus, topic: str, items: Sequence[Window | bytes]) -> None:
    with bus.producer() as producer:
        futures = []
        for item in items:
            if isinstance(item, bytes):
                futures.append(producer.send(topic, item, key=b"cam-0"))
            else:
                message = window_message(item)
                futures.append(producer.send(topic, message.value, key=message.key, headers=message.headers))
        for future in futures:
            future.result(timeout=30)


class TopicReader:
    """Everything on a topic so far (a consumer without a group, read from the start)."""

    def __init__(self, bus: Bus, topic: str) -> None:
        self.consumer = bus.consumer([topic], group_id=None, start="earliest")
        self.records: list[Record] = []

    def read(self) -> list[Record]:
        self.records.extend(self.consumer.poll(0.2))
        return self.records

    def close(self) -> None:
        self.consumer.close()


def results_by_window(records: list[Record]) -> Counter[str]:
    return Counter(json.loads(record.value)["window_id"] for record in records)


def test_every_window_gets_one_result_and_bad_messages_go_to_the_dead_letter_topic(
    registry: Path, embedded_bus: EmbeddedBus
) -> None:
    topic, out = "in.windows", "out.scores"
    embedded_bus.create_topic(topic, 2)
    good = windows(cameras=3, per_camera=5)
    too_short = make_window("cam-9", 0, frames=3)
    publish(embedded_bus, topic, [*good[:7], b"definitely not a window", too_short, *good[7:]])
    with running_node(registry, bus=embedded_bus, stream_topic=topic, output_topic=out, group_id="g1") as node:
        reader = TopicReader(embedded_bus, out)  # the node created its output and dead-letter topics
        wait_until(lambda: len(reader.read()) >= len(good), "every window has a result")
        time.sleep(0.3)
        results = reader.read()
        assert results_by_window(results) == Counter({w.window_id: 1 for w in good}), "exactly one result per window"
        by_id = {w.window_id: w for w in good}
        for record in results:
            result = json.loads(record.value)
            window = by_id[result["window_id"]]
            assert record.key == window.camera_id.encode(), "results are keyed by camera id"
            assert (result["camera_id"], result["sequence"]) == (window.camera_id, window.sequence)
            assert (result["pts_start_s"], result["pts_end_s"]) == (window.pts_s[0], window.pts_s[-1])
            assert (result["model_name"], result["model_version"]) == (MODEL, "1")
            assert len(result["embedding"]) == DIM
            assert np.isfinite(result["raw_score"])
        dead = TopicReader(embedded_bus, dead_letter_topic(topic))
        wait_until(lambda: len(dead.read()) >= 2, "both bad messages were dead-lettered")
        reasons = sorted((record.header(HEADER_ERROR) or b"").decode() for record in dead.read())
        assert any("not a StreamSSL window" in reason for reason in reasons), reasons
        assert any("has 3 frames, the model needs at least 4" in reason for reason in reasons), reasons
        broker = embedded_bus.broker
        wait_until(
            lambda: all(
                (broker.committed("g1", TopicPartition(topic, p)) or 0) == broker.end_offset(TopicPartition(topic, p))
                for p in range(2)
            ),
            "every input offset, dead letters included, was committed",
        )
        metrics = _metrics(node)
        assert metric(metrics, "streamssl_serving_stream_windows_total", result="scored") == len(good)
        assert metric(metrics, "streamssl_serving_stream_windows_total", result="dead_lettered") == 2
    reader.close()
    dead.close()


def _metrics(node: Any) -> str:
    from prometheus_client import generate_latest

    return generate_latest(node.metrics.registry).decode()


class FlakyBus(Bus):
    """The embedded bus, except that sends to ``failing_topic`` fail (as unacknowledged) while ``failing`` is set."""

    def __init__(self, inner: EmbeddedBus, failing_topic: str) -> None:
        self.inner = inner
        self.failing_topic = failing_topic
        self.failing = threading.Event()
        self.failed = 0

    def create_topic(self, name: str, partitions: int = 1) -> None:
        self.inner.create_topic(name, partitions)

    def partitions(self, topic: str) -> int:
        return self.inner.partitions(topic)

    def producer(self, *, max_message_bytes: int | None = None) -> BusProducer:
        bus, real = self, self.inner.producer(max_message_bytes=max_message_bytes)

        class Producer(BusProducer):
            def send(
                self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()
            ) -> Future[Delivered]:
                if topic == bus.failing_topic and bus.failing.is_set():
                    bus.failed += 1
                    failed: Future[Delivered] = Future()
                    failed.set_exception(BusUnavailableError("broker did not acknowledge (injected)"))
                    return failed
                return real.send(topic, value, key=key, headers=headers)

            def flush(self, timeout_s: float | None = None) -> None:
                real.flush(timeout_s)

            def close(self, timeout_s: float | None = None) -> None:
                real.close(timeout_s)

        return Producer()

    def consumer(
        self, topics: Sequence[str], *, group_id: str | None, start: StartPosition = "earliest"
    ) -> BusConsumer:
        return self.inner.consumer(topics, group_id=group_id, start=start)

    def close(self) -> None:
        self.inner.close()


def test_offsets_are_committed_only_after_the_results_are_acknowledged(
    registry: Path, embedded_bus: EmbeddedBus
) -> None:
    topic, out = "in.windows", "out.scores"
    flaky = FlakyBus(embedded_bus, out)
    flaky.failing.set()
    embedded_bus.create_topic(topic, 1)
    batch = windows(cameras=2, per_camera=3)
    publish(embedded_bus, topic, batch)
    partition = TopicPartition(topic, 0)
    with running_node(registry, bus=flaky, stream_topic=topic, output_topic=out, group_id="g2") as node:
        wait_until(lambda: flaky.failed >= 2 * len(batch), "the results failed to publish twice over")
        assert embedded_bus.broker.committed("g2", partition) is None, "nothing may be committed before an ack"
        assert metric(_metrics(node), "streamssl_serving_stream_publish_errors_total") >= 2
        flaky.failing.clear()
        reader = TopicReader(embedded_bus, out)
        wait_until(lambda: len(reader.read()) >= len(batch), "the windows were read again and published")
        wait_until(lambda: embedded_bus.broker.committed("g2", partition) == len(batch), "the offsets were committed")
        time.sleep(0.3)
        assert results_by_window(reader.read()) == Counter({w.window_id: 1 for w in batch}), "no loss, no duplicate"
        reader.close()


# --- the real thing: Kafka, the command, SIGKILL ---------------------------------------------------------------------
def serve_command(registry: Path, bootstrap: str, topic: str, out: str, group: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "serving",
        "--registry",
        str(registry),
        "--bus",
        f"kafka://{bootstrap}",
        "--stream-topic",
        topic,
        "--output-topic",
        out,
        "--group-id",
        group,
        "--no-http",
        "--threads",
        "1",
    ]


def start_serving(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "STREAMSSL_STREAM_POLL_RECORDS": "4", "STREAMSSL_PARTITIONS": "2"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


@pytest.mark.kafka
@pytest.mark.slow
def test_a_killed_node_loses_nothing_on_kafka(registry: Path, kafka_bootstrap: str, tmp_path: Path) -> None:
    bootstrap, suffix = kafka_bootstrap, uuid.uuid4().hex[:8]
    topic, out, group = f"serve.in.{suffix}", f"serve.out.{suffix}", f"serve-{suffix}"
    log = tmp_path / "serve.log"
    bus = open_bus(f"kafka://{bootstrap}")
    bus.create_topic(topic, 2)
    # Five cameras: with Kafka's murmur2 partitioner cam-4 lands in partition 0, cam-0..3 in partition 1.
    items: list[Window | bytes] = [*windows(cameras=5, per_camera=6)]
    items.insert(10, b"garbage on the topic")
    items += windows(cameras=5, per_camera=6, start=6)

    def pace() -> None:  # windows keep arriving while the first node runs, so the kill lands mid-stream
        with bus.producer() as producer:
            for item in items:
                if isinstance(item, bytes):
                    producer.send(topic, item, key=b"cam-0").result(timeout=30)
                else:
                    message = window_message(item)
                    producer.send(topic, message.value, key=message.key, headers=message.headers).result(timeout=30)
                time.sleep(0.03)

    pacer = threading.Thread(target=pace)
    first = start_serving(serve_command(registry, bootstrap, topic, out, group), log)
    second: subprocess.Popen[bytes] | None = None
    reader: TopicReader | None = None
    try:
        pacer.start()
        wait_until(lambda: _topic_exists(bus, out), "the node created its output topic", 60)
        reader = TopicReader(bus, out)
        wait_until(lambda: len(reader.read()) >= 20 or first.poll() is not None, "the first node scored 20 windows", 60)
        assert first.poll() is None, f"the node died on its own:\n{log.read_text()[-3000:]}"
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        committed_at_kill = _committed(bus, topic, group)
        pacer.join(60)
        second = start_serving(serve_command(registry, bootstrap, topic, out, group), log)
        good = [item for item in items if isinstance(item, Window)]
        expected = {w.window_id for w in good}
        wait_until(lambda: set(results_by_window(reader.read())) >= expected, "no window is lost", 90)
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, f"SIGTERM must end the node with 0:\n{log.read_text()[-3000:]}"
        second = None
        counts = results_by_window(reader.read())
        offsets = _input_offsets(bus, topic, len(items))
        for window in good:
            partition, offset = offsets[window.window_id]
            if offset < committed_at_kill.get(partition, 0):
                assert counts[window.window_id] == 1, f"{window.window_id} was committed, yet scored again"
            else:
                assert 1 <= counts[window.window_id] <= 2, f"{window.window_id} scored {counts[window.window_id]} times"
        assert all(record.key == json.loads(record.value)["camera_id"].encode() for record in reader.read())
        dead = TopicReader(bus, dead_letter_topic(topic))
        wait_until(lambda: len(dead.read()) >= 1, "the garbage was dead-lettered")
        assert b"not a StreamSSL window" in (dead.read()[0].header(HEADER_ERROR) or b"")
        dead.close()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(30)
        if reader is not None:
            reader.close()
        bus.close()


def _topic_exists(bus: Bus, topic: str) -> bool:
    try:
        bus.partitions(topic)
    except Exception:
        return False
    return True


def _committed(bus: Bus, topic: str, group: str) -> dict[int, int]:
    with bus.consumer([topic], group_id=group) as consumer:  # never polls, so never joins: only reads offsets
        return {
            p: offset
            for p in range(bus.partitions(topic))
            if (offset := consumer.committed(TopicPartition(topic, p))) is not None
        }


def _input_offsets(bus: Bus, topic: str, count: int) -> dict[str, tuple[int, int]]:
    """Where each window was stored: window id → (partition, offset)."""
    reader = TopicReader(bus, topic)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(reader.read()) < count:
            pass
        found: dict[str, tuple[int, int]] = {}
        for record in reader.read():
            if record.value.startswith(b"SSLW"):
                window_id = _window_id(record)
                found.setdefault(window_id, (record.partition, record.offset))
        return found
    finally:
        reader.close()


def _window_id(record: Record) -> str:
    from ingest.contract import decode_header

    return decode_header(record.value).window_id


def test_an_inference_fault_is_never_filed_as_bad_input(registry: Path, embedded_bus: EmbeddedBus) -> None:
    # A fault on the node's side must not park good windows in the dead-letter topic or commit past them: the
    # batch is read again and every window is scored once the fault is gone.
    topic, out = "in.faulty", "out.faulty"
    embedded_bus.create_topic(topic, 1)
    good = windows(cameras=2, per_camera=6)
    with running_node(registry, bus=embedded_bus, stream_topic=topic, output_topic=out, group_id="g-fault") as node:
        real_submit = node.batcher.submit_windows
        failures = {"left": 3}

        def flaky_submit(*args: Any, **kwargs: Any) -> Future[Any]:
            if failures["left"] > 0:
                failures["left"] -= 1
                broken: Future[Any] = Future()
                broken.set_exception(RuntimeError("onnxruntime: injected provider failure"))
                return broken
            return real_submit(*args, **kwargs)

        node.batcher.submit_windows = flaky_submit  # type: ignore[method-assign]
        publish(embedded_bus, topic, good)
        reader = TopicReader(embedded_bus, out)
        wait_until(lambda: set(results_by_window(reader.read())) == {w.window_id for w in good}, "every window scored")
        metrics = _metrics(node)
    assert failures["left"] == 0, "the fault was injected"
    assert TopicReader(embedded_bus, dead_letter_topic(topic)).read() == [], "no good window was dead-lettered"
    assert metric(metrics, "streamssl_serving_stream_inference_errors_total") >= 1
    assert metric(metrics, "streamssl_serving_stream_windows_total", result="dead_lettered") == 0
