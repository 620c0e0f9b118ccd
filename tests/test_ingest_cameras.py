"""The ingest service against real cameras: an RTSP server (GStreamer) that dies and comes back, into the real
Kafka broker; and an HTTP camera whose connection stays open while frames stop (the stall watchdog)."""

from __future__ import annotations

import functools
import http.server
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from ingest.bus import open_bus
from ingest.bus.embedded import EmbeddedBus
from ingest.contract import Window
from ingest.contract.messages import window_from_record
from ingest.service.config import CameraConfig, IngestSettings
from ingest.service.service import IngestService
from tests import video_files
from tests.bus_members import wait_until
from tests.cameras import RtspCameraFactory, StalledHttpCameraFactory, synthetic_clip

RECONNECT_MAX_S = 2.0
# Opening an RTSP stream costs about a second of FFmpeg probing on top of the backoff.
OPEN_ALLOWANCE_S = 3.0


def sample(service: IngestService, name: str, **labels: str) -> float:
    value = service.metrics.registry.get_sample_value(name, {"camera": "cam", **labels})
    return 0.0 if value is None else value


@pytest.mark.kafka
def test_rtsp_camera_dies_and_returns_ingest_reconnects_without_spanning_the_gap(
    kafka_bootstrap: str, rtsp_camera_factory: RtspCameraFactory, tmp_path: Path
) -> None:
    camera = rtsp_camera_factory(synthetic_clip(tmp_path / "clip.mp4", seconds=4.0))
    topic = f"rtsp.{uuid.uuid4().hex[:8]}"
    settings = IngestSettings(
        bus=f"kafka://{kafka_bootstrap}",
        topic=topic,
        partitions=1,
        cameras=[
            CameraConfig(
                camera_id="cam",
                url=camera.url,
                window=4,
                stride=4,
                reconnect_initial_s=0.5,
                reconnect_max_s=RECONNECT_MAX_S,
                stall_timeout_s=5.0,
                open_timeout_s=5.0,
            ),
        ],
    )
    with open_bus(settings.bus) as bus:
        service = IngestService(settings, bus, CollectorRegistry())
        service.start()
        try:
            wait_until(lambda: sample(service, "streamssl_ingest_windows_published_total") >= 3, 30, "3 windows")
            assert sample(service, "streamssl_ingest_camera_up") == 1
            camera.kill()
            killed_at = time.time()
            wait_until(lambda: sample(service, "streamssl_ingest_camera_up") == 0, 10, "camera_up drops to 0")
            time.sleep(3.0)  # the outage
            camera.restart()
            restarted_at = time.monotonic()
            wait_until(lambda: sample(service, "streamssl_ingest_camera_up") == 1, 30, "camera_up returns to 1")
            reconnect_s = time.monotonic() - restarted_at
            print(f"RTSP camera back {reconnect_s:.2f} s after its restart (backoff cap {RECONNECT_MAX_S} s)")
            back_at = time.time()
            published = sample(service, "streamssl_ingest_windows_published_total")
            wait_until(
                lambda: sample(service, "streamssl_ingest_windows_published_total") >= published + 3,
                30,
                "3 windows after the restart",
            )
        finally:
            service.request_stop()
            service.shutdown()
        assert reconnect_s <= RECONNECT_MAX_S + OPEN_ALLOWANCE_S, f"reconnected {reconnect_s:.1f} s after restart"
        assert sample(service, "streamssl_ingest_reconnects_total") >= 1
        assert sample(service, "streamssl_ingest_discontinuities_total", cause="reconnect") >= 1

        windows: list[Window] = []
        with bus.consumer([topic], group_id=None) as consumer:
            for _ in range(10):
                windows += [window_from_record(r) for r in consumer.poll(1.0)]
    assert [w.sequence for w in windows] == sorted({w.sequence for w in windows})
    before = [w for w in windows if w.capture_time_s[-1] < killed_at]
    after = [w for w in windows if w.capture_time_s[0] > back_at - reconnect_s]
    assert before
    assert after
    assert len(before) + len(after) == len(windows), "a window spans the outage"
    assert {w.segment for w in before}.isdisjoint({w.segment for w in after})
    for window in windows:
        assert np.all(np.diff(window.pts_s) > 0)
        assert window.capture_time_s[-1] - window.capture_time_s[0] < 2.0


def test_stall_watchdog_reconnects_an_open_but_silent_camera(
    embedded_bus: EmbeddedBus, stalled_http_camera_factory: StalledHttpCameraFactory, tmp_path: Path
) -> None:
    camera = stalled_http_camera_factory(synthetic_clip(tmp_path / "clip.mp4", seconds=6.0), stall_after_s=2.0)
    settings = IngestSettings(
        topic="stalled",
        partitions=1,
        cameras=[
            CameraConfig(
                camera_id="cam",
                url=camera.url,
                window=4,
                stride=4,
                stall_timeout_s=2.0,
                reconnect_initial_s=0.2,
                reconnect_max_s=0.5,
            ),
        ],
    )
    service = IngestService(settings, embedded_bus, CollectorRegistry())
    service.start()
    try:
        wait_until(lambda: sample(service, "streamssl_ingest_stalls_total") >= 1, 30, "the watchdog fires")
        wait_until(lambda: camera.connections >= 2, 20, "the camera is reconnected")
    finally:
        service.request_stop()
        service.shutdown()
    assert sample(service, "streamssl_ingest_reconnects_total") >= 1
    assert sample(service, "streamssl_ingest_windows_published_total") >= 2, "frames before the stall were lost"


def test_hls_playlist_over_http(embedded_bus: EmbeddedBus, tmp_path: Path) -> None:
    clip = synthetic_clip(tmp_path / "clip.mp4", seconds=4.0)
    hls = tmp_path / "hls"
    hls.mkdir()
    video_files.ffmpeg(
        "-i",
        str(clip),
        "-c",
        "copy",
        "-f",
        "hls",
        "-hls_time",
        "1",
        "-hls_playlist_type",
        "vod",
        str(hls / "index.m3u8"),
    )
    handler = functools.partial(QuietFileHandler, directory=str(hls))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/index.m3u8"
        settings = IngestSettings(
            topic="hls", partitions=1, cameras=[CameraConfig(camera_id="cam", url=url, window=4, stride=4)]
        )
        service = IngestService(settings, embedded_bus, CollectorRegistry())
        service.start()
        try:
            wait_until(lambda: sample(service, "streamssl_ingest_windows_published_total") >= 8, 30, "8 HLS windows")
        finally:
            service.request_stop()
            service.shutdown()
            server.shutdown()
    with embedded_bus.consumer(["hls"], group_id=None) as consumer:
        windows = [window_from_record(r) for r in consumer.poll(1.0)]
    first_segment = [w for w in windows if w.segment == 0]
    assert len(first_segment) >= 8
    for window in first_segment:
        np.testing.assert_allclose(np.diff(window.pts_s), 0.1, atol=1 / 30 + 1e-6)


class QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


def test_rtsp_over_udp(embedded_bus: EmbeddedBus, rtsp_camera_factory: RtspCameraFactory, tmp_path: Path) -> None:
    camera = rtsp_camera_factory(synthetic_clip(tmp_path / "clip.mp4", seconds=2.0))
    settings = IngestSettings(
        topic="udp",
        partitions=1,
        cameras=[CameraConfig(camera_id="cam", url=camera.url, rtsp_transport="udp", window=4, stride=4)],
    )
    service = IngestService(settings, embedded_bus, CollectorRegistry())
    service.start()
    try:
        wait_until(lambda: sample(service, "streamssl_ingest_windows_published_total") >= 3, 30, "3 windows over UDP")
    finally:
        service.request_stop()
        service.shutdown()
    assert sample(service, "streamssl_ingest_reconnects_total") == 0
