"""The ingest service as operators run it: back-pressure, camera isolation, metrics and probes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import Future
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ingest.bus import Delivered
from ingest.bus.base import Headers
from ingest.bus.embedded import EmbeddedBus, EmbeddedProducer
from ingest.contract import decode_header
from ingest.runtime.telemetry_server import TelemetryServer
from ingest.service.backoff import Backoff
from ingest.service.config import CameraConfig, IngestSettings
from ingest.service.service import IngestService
from tests import video_files

ALL_METRICS = [
    "streamssl_ingest_frames_decoded_total",
    "streamssl_ingest_frames_dropped_total",
    "streamssl_ingest_windows_published_total",
    "streamssl_ingest_windows_dropped_total",
    "streamssl_ingest_decode_errors_total",
    "streamssl_ingest_reconnects_total",
    "streamssl_ingest_stalls_total",
    "streamssl_ingest_discontinuities_total",
    "streamssl_ingest_camera_up",
    "streamssl_ingest_queue_depth",
    "streamssl_ingest_jpeg_quality_steps_total",
    "streamssl_ingest_publish_latency_seconds_bucket",
    "streamssl_ingest_capture_to_publish_seconds_bucket",
    "streamssl_ingest_published_bytes_total",
]


class SlowProducer(EmbeddedProducer):
    """A producer whose broker takes ``delay_s`` per message, like a congested Kafka."""

    delay_s = 0.25

    def send(self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()) -> Future[Delivered]:
        time.sleep(self.delay_s)
        return super().send(topic, value, key=key, headers=headers)


class SlowBus(EmbeddedBus):
    def producer(self, *, max_message_bytes: int | None = None) -> SlowProducer:
        return SlowProducer(self.broker, max_message_bytes or 1_048_576)


def sample(service: IngestService, name: str, camera: str = "cam", **labels: str) -> float:
    value = service.metrics.registry.get_sample_value(name, {"camera": camera, **labels})
    return 0.0 if value is None else value


def test_a_slow_bus_drops_the_oldest_windows_of_a_live_camera_and_memory_stays_bounded(tmp_path: Path) -> None:
    # A file paced in real time behaves like a live camera: 10 one-frame windows a second against a bus that
    # takes 0.25 s per message.
    clip = video_files.constant_rate(tmp_path / "c.mp4", seconds=2.0)
    bus = SlowBus(f"slow-{uuid.uuid4().hex}")
    capacity = 3
    camera = CameraConfig(
        camera_id="cam", url=str(clip), loop=True, realtime=True, window=1, stride=1, queue_windows=capacity
    )
    settings = IngestSettings(topic="slow", partitions=1, drain_timeout_s=5, cameras=[camera])
    service = IngestService(settings, bus, CollectorRegistry())
    service.start()
    depths, drops = [], []
    for _ in range(40):
        time.sleep(0.1)
        depths.append(sample(service, "streamssl_ingest_queue_depth"))
        drops.append(sample(service, "streamssl_ingest_windows_dropped_total", reason="backpressure"))
    service.request_stop()
    service.shutdown()
    assert max(depths) <= capacity, f"queue grew past its bound: {max(depths)}"
    assert drops[-1] > 10, "the slow bus caused no back-pressure drops"
    assert drops[-1] > drops[len(drops) // 2] > 0, "the drop counter is not rising"
    published = sample(service, "streamssl_ingest_windows_published_total")
    assert published > 0, "nothing got through"
    # The freshest windows win: what is published at the end comes from late in the stream, not the start.
    with bus.consumer(["slow"], group_id=None) as consumer:
        sequences = [decode_header(record.value).sequence for record in consumer.poll(1.0)]
    assert max(sequences) - min(sequences) > published, "oldest windows were not the ones dropped"


@pytest.mark.parametrize("read_ahead", [0, 4], ids=["decode-on-camera-thread", "read-ahead"])
def test_a_file_read_at_full_speed_waits_for_a_slow_bus_and_loses_nothing(tmp_path: Path, read_ahead: int) -> None:
    clip = video_files.constant_rate(tmp_path / "c.mp4", seconds=2.0)
    bus = SlowBus(f"slow-{uuid.uuid4().hex}")
    camera = CameraConfig(
        camera_id="cam", url=str(clip), window=2, stride=2, queue_windows=2, read_ahead_frames=read_ahead
    )
    service = IngestService(IngestSettings(topic="slow", partitions=1, cameras=[camera]), bus, CollectorRegistry())
    service.start()
    depths = []
    while not service.workers[0].finished.is_set():
        depths.append(sample(service, "streamssl_ingest_queue_depth"))
        time.sleep(0.05)
    assert service.shutdown() == 0
    assert max(depths) <= 2
    assert sample(service, "streamssl_ingest_windows_dropped_total", reason="backpressure") == 0
    assert sample(service, "streamssl_ingest_windows_published_total") == 10


def test_one_broken_camera_does_not_hold_up_another(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    clip = video_files.constant_rate(tmp_path / "good.mp4", seconds=4.0)
    settings = IngestSettings(
        topic="isolation",
        partitions=2,
        cameras=[
            CameraConfig(
                camera_id="dead",
                url="rtsp://127.0.0.1:9/none",
                open_timeout_s=1,
                reconnect_initial_s=0.1,
                reconnect_max_s=0.2,
                allow_down=True,
            ),
            CameraConfig(camera_id="good", url=str(clip)),
        ],
    )
    service = IngestService(settings, embedded_bus, CollectorRegistry())
    service.start()
    deadline = time.monotonic() + 30

    def settled() -> bool:
        # The good file can finish before the dead camera's first back-off ends; wait for both, not either.
        retried = sample(service, "streamssl_ingest_reconnects_total", camera="dead") >= 1
        return service.workers[1].finished.is_set() and retried

    while not settled() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sample(service, "streamssl_ingest_windows_published_total", camera="good") == 5  # 40 samples
    assert sample(service, "streamssl_ingest_reconnects_total", camera="dead") >= 1
    service.request_stop()
    service.shutdown()


def test_metrics_endpoint_and_probes(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    clip = video_files.constant_rate(tmp_path / "c.mp4", seconds=2.0)
    settings = IngestSettings(
        topic="probes",
        partitions=1,
        cameras=[CameraConfig(camera_id="cam", url=str(clip), loop=True, realtime=True)],
    )
    service = IngestService(settings, embedded_bus, CollectorRegistry())
    server = TelemetryServer(0, service.metrics.registry, service.ready, host="127.0.0.1").start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"{base}/readyz", timeout=5)
        assert not_ready.value.code == 503
        service.start()
        deadline = time.monotonic() + 20
        while not service.ready()[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
            assert json.load(response)["status"] == "ready"
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            assert response.status == 200
        time.sleep(1.5)
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            exposition = response.read().decode()
    finally:
        service.request_stop()
        service.shutdown()
        server.stop()
    for name in ALL_METRICS:
        assert f'{name}{{camera="cam"' in exposition, f"{name} is not exposed"
    assert 'streamssl_ingest_camera_up{camera="cam"} 1.0' in exposition
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/healthz", timeout=2)


def test_windows_over_the_size_limit_step_quality_down_or_are_dropped(
    embedded_bus: EmbeddedBus, tmp_path: Path
) -> None:
    clip = video_files.constant_rate(tmp_path / "c.mp4", seconds=2.0)

    def run(max_message_bytes: int) -> IngestService:
        settings = IngestSettings(
            topic=f"size.{uuid.uuid4().hex[:6]}",
            partitions=1,
            max_message_bytes=max_message_bytes,
            cameras=[CameraConfig(camera_id="cam", url=str(clip), quality=95, min_quality=20, quality_step=15)],
        )
        service = IngestService(settings, embedded_bus, CollectorRegistry())
        service.start()
        service.wait()
        service.shutdown()
        return service

    roomy = run(1_000_000)
    sizes = roomy.metrics.registry.get_sample_value("streamssl_ingest_published_bytes_total", {"camera": "cam"})
    assert sizes is not None
    per_window = sizes / sample(roomy, "streamssl_ingest_windows_published_total")
    tight = run(int(per_window * 0.7))
    assert sample(tight, "streamssl_ingest_jpeg_quality_steps_total") > 0
    assert sample(tight, "streamssl_ingest_windows_published_total") == 2
    hopeless = run(2_000)
    assert sample(hopeless, "streamssl_ingest_windows_published_total") == 0
    assert sample(hopeless, "streamssl_ingest_windows_dropped_total", reason="oversize") == 2


def test_motion_gate_skips_a_static_scene(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    still = tmp_path / "still.mp4"
    video_files.ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:size=320x240:rate=30:duration=2",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(still),
    )
    moving = video_files.constant_rate(tmp_path / "moving.mp4", seconds=2.0)
    settings = IngestSettings(
        topic="gate",
        partitions=1,
        cameras=[
            CameraConfig(camera_id="still", url=str(still), motion_threshold=1.0),
            CameraConfig(camera_id="moving", url=str(moving), motion_threshold=1.0),
        ],
    )
    service = IngestService(settings, embedded_bus, CollectorRegistry())
    service.start()
    service.wait()
    service.shutdown()
    assert sample(service, "streamssl_ingest_windows_dropped_total", camera="still", reason="static") == 2
    assert sample(service, "streamssl_ingest_windows_published_total", camera="still") == 0
    assert sample(service, "streamssl_ingest_windows_published_total", camera="moving") == 2


def test_opencv_backend_reads_a_file(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    clip = video_files.constant_rate(tmp_path / "c.mp4", seconds=2.0)
    settings = IngestSettings(
        topic="opencv", partitions=1, cameras=[CameraConfig(camera_id="cam", url=str(clip), backend="opencv")]
    )
    service = IngestService(settings, embedded_bus, CollectorRegistry())
    service.start()
    service.wait()
    service.shutdown()
    assert sample(service, "streamssl_ingest_frames_decoded_total") == 60
    assert sample(service, "streamssl_ingest_windows_published_total") == 2
    with embedded_bus.consumer(["opencv"], group_id=None) as consumer:
        windows = [decode_header(record.value) for record in consumer.poll(1.0)]
    assert [round(w.pts_s[1] - w.pts_s[0], 3) for w in windows] == [0.1, 0.1]


def test_many_cameras_from_a_yaml_file_on_the_command_line(tmp_path: Path) -> None:
    first = video_files.constant_rate(tmp_path / "a.mp4", seconds=2.0)
    second = video_files.constant_rate(tmp_path / "b.mp4", seconds=3.0)
    config = tmp_path / "cameras.yaml"
    config.write_text(
        "topic: yaml.cameras\n"
        "cameras:\n"
        f"  - {{camera_id: cam-a, url: '{first}', window: 4, stride: 4}}\n"
        f"  - {{camera_id: cam-b, url: '{second}', size: 64x48, color: gray}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "ingest", "--config", str(config), "--log-format", "json"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    logs = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    ended = {line.get("camera_id") for line in logs if "end of file" in line["message"]}
    assert ended == {"cam-a", "cam-b"}


def test_backoff_grows_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(ceiling / 2 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))
    assert len({round(delay, 6) for delay in delays[3:]}) > 1, "no jitter"
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_wait_returns_at_its_timeout_for_a_camera_that_never_ends(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    clip = video_files.constant_rate(tmp_path / "loop.mp4", seconds=1.0)
    settings = IngestSettings(
        topic="looping", partitions=1, cameras=[CameraConfig(camera_id="cam", url=str(clip), loop=True, realtime=True)]
    )
    service = IngestService(settings, embedded_bus, CollectorRegistry())
    service.start()
    try:
        assert service.wait(poll_s=0.05, timeout_s=0.5) is False, "a looping file never finishes"
    finally:
        service.shutdown()
    finite = IngestSettings(topic="finite", partitions=1, cameras=[CameraConfig(camera_id="cam", url=str(clip))])
    service = IngestService(finite, embedded_bus, CollectorRegistry())
    service.start()
    assert service.wait(poll_s=0.05, timeout_s=60) is True
    service.shutdown()
