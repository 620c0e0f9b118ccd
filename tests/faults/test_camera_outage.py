"""Fault: one of two RTSP cameras loses power for longer than twice the reconnect backoff cap, then comes back.

Everything is real: two GStreamer RTSP cameras (tests/cameras.py), ``python -m ingest`` as a process with both in
its YAML config, the session's Kafka broker. What must hold, read from the window topic, ingest's metrics endpoint
and its own log:

* the killed camera reconnects (``reconnects_total`` >= 1) and publishes windows captured after its restart;
* the other camera never stalls: it publishes windows captured during the outage, in one segment, with consecutive
  sequence numbers and nothing dropped, and never reconnects;
* no window of the killed camera holds frames from both sides of the outage: each lies before the kill or after the
  restart, and the windows after the restart are a later segment than those before;
* every window ingest logged as acknowledged is on the topic (the ledger line has the counts).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ingest.contract.messages import header_from_record
from ingest.contract.wire import WindowHeader
from tests.cameras import RtspCamera, RtspCameraFactory, h264_annexb, synthetic_clip
from tests.faults.ledger import read_topic
from tests.kafka_broker import tail

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
KILLED, LIVE = "cam-killed", "cam-live"
RECONNECT_INITIAL_S, RECONNECT_MAX_S = 0.5, 2.0
OUTAGE_S = 2 * RECONNECT_MAX_S + 1.0  # longer than twice the cap: the backoff reaches it and stays there
WINDOW = 4  # frames per window (and stride) at 10 fps: a window every 0.4 s per camera


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def camera_config(camera_id: str, url: str) -> dict[str, object]:
    return {
        "camera_id": camera_id,
        "url": url,
        "window": WINDOW,
        "stride": WINDOW,
        "reconnect_initial_s": RECONNECT_INITIAL_S,
        "reconnect_max_s": RECONNECT_MAX_S,
        "stall_timeout_s": 5.0,
        "open_timeout_s": 5.0,
    }


class Ingest:
    """``python -m ingest --config`` as a process, with its Prometheus endpoint and JSON log on a file."""

    def __init__(self, config: dict[str, object], workdir: Path) -> None:
        self.port = free_port()
        path = workdir / "ingest.yaml"
        path.write_text(yaml.safe_dump({**config, "metrics_port": self.port}))
        self.log = workdir / "ingest.stderr"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ingest", "--config", str(path)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str, camera: str, **labels: str) -> float:
        """One sample of the endpoint (0 while it is not up yet), summed over the labels not given."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return 0.0
        wanted = {"camera": camera, **labels}
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(key) == value for key, value in wanted.items())
        )

    def published(self, camera: str) -> float:
        return self.metric("streamssl_ingest_windows_published_total", camera)

    def acknowledged(self) -> Counter[str]:
        """Window ids ingest logged as acknowledged by the broker (its DEBUG ``window acknowledged`` lines)."""
        return Counter(
            str(entry["window_id"])
            for line in self.stderr().splitlines()
            if line.startswith("{") and (entry := json.loads(line)).get("message") == "window acknowledged"
        )

    def wait_until(self, condition: Callable[[], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(f"ingest exited {self.process.returncode} before {what}:\n{tail(self.stderr())}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f} s waiting until {what}:\n{tail(self.stderr())}")
            time.sleep(0.2)


def test_a_dead_camera_recovers_and_the_live_one_never_stalls(
    kafka_bootstrap: str, rtsp_camera_factory: RtspCameraFactory, tmp_path: Path
) -> None:
    # One looping test pattern, converted once, served by two independent RTSP servers.
    h264 = h264_annexb(synthetic_clip(tmp_path / "clip.mp4", seconds=4.0), tmp_path / "clip.h264")
    killed, live = rtsp_camera_factory(h264), rtsp_camera_factory(h264)
    topic, bus = f"faults.cameras.{uuid.uuid4().hex[:8]}", f"kafka://{kafka_bootstrap}"
    config = {
        "bus": bus,
        "topic": topic,
        "partitions": 2,
        "log_format": "json",
        "log_level": "DEBUG",  # one "window acknowledged" line per window: the ledger's produced side
        "cameras": [camera_config(KILLED, killed.url), camera_config(LIVE, live.url)],
    }
    ingest = Ingest(config, tmp_path)
    try:
        times, reconnects, dropped = _outage(ingest, killed)
        ingest.process.send_signal(signal.SIGTERM)
        assert ingest.process.wait(60) == 0, f"SIGTERM must end ingest with 0:\n{tail(ingest.stderr())}"
    finally:
        if ingest.process.poll() is None:
            ingest.process.kill()
            ingest.process.wait(30)
    killed_at, restarted_at = times
    headers = [header_from_record(record) for record in read_topic(bus, topic)]
    acknowledged = ingest.acknowledged()
    _print_ledger(headers, acknowledged, killed_at, restarted_at, reconnects, dropped)

    on_topic = Counter(header.window_id for header in headers)
    assert not set(acknowledged) - set(on_topic), f"acknowledged, not on the topic: {set(acknowledged) - set(on_topic)}"
    assert reconnects[KILLED] >= 1, "the killed camera never reconnected"
    assert reconnects[LIVE] == 0, "the live camera reconnected: the outage of the other camera reached it"
    _assert_killed_camera(_of(headers, KILLED), killed_at, restarted_at)
    _assert_live_camera(_of(headers, LIVE), killed_at, restarted_at, dropped[LIVE])
    assert "Traceback" not in ingest.stderr(), tail(ingest.stderr())


def _outage(ingest: Ingest, killed: RtspCamera) -> tuple[tuple[float, float], dict[str, float], dict[str, float]]:
    """Both cameras publishing; kill one for OUTAGE_S; restart it; wait for its windows. Returns (kill time, restart
    time) on the wall clock the windows' capture times use, reconnects and dropped windows per camera."""
    ingest.wait_until(
        lambda: ingest.published(KILLED) >= 3 and ingest.published(LIVE) >= 3, "both cameras published 3 windows", 60
    )
    killed.kill()  # returns once the server process is gone: no frame of it is sent later
    killed_at = time.time()
    ingest.wait_until(lambda: ingest.metric("streamssl_ingest_camera_up", KILLED) == 0, "the camera is seen down", 20)
    time.sleep(max(0.0, killed_at + OUTAGE_S - time.time()))
    restarted_at = time.time()  # before the restart: frames of the new stream all come after this
    killed.restart()
    published = ingest.published(KILLED)
    ingest.wait_until(lambda: ingest.published(KILLED) >= published + 3, "3 windows after the restart", 60)
    live_published = ingest.published(LIVE)
    ingest.wait_until(lambda: ingest.published(LIVE) > live_published, "the live camera still publishes", 20)
    reconnects = {camera: ingest.metric("streamssl_ingest_reconnects_total", camera) for camera in (KILLED, LIVE)}
    dropped = {camera: ingest.metric("streamssl_ingest_windows_dropped_total", camera) for camera in (KILLED, LIVE)}
    return (killed_at, restarted_at), reconnects, dropped


def _of(headers: list[WindowHeader], camera: str) -> list[WindowHeader]:
    return sorted((header for header in headers if header.camera_id == camera), key=lambda header: header.sequence)


def _assert_killed_camera(windows: list[WindowHeader], killed_at: float, restarted_at: float) -> None:
    before = [w for w in windows if w.capture_time_s[-1] <= killed_at]
    after = [w for w in windows if w.capture_time_s[0] >= restarted_at]
    spanning = [w.window_id for w in windows if w.capture_time_s[0] < restarted_at <= w.capture_time_s[-1]]
    assert not spanning, f"windows with frames from before and after the restart: {spanning}"
    inside = [w.window_id for w in windows if w not in before and w not in after]
    assert not inside, f"windows captured while the camera was dead: {inside}"
    assert before, "no window of the killed camera before the kill"
    assert after, "the killed camera published no window captured after its restart"
    assert max(w.segment for w in before) < min(w.segment for w in after), "the restart did not start a new segment"
    assert all(w.capture_time_s[-1] - w.capture_time_s[0] < OUTAGE_S for w in windows), "a window spans the gap"
    assert [w.sequence for w in windows] == sorted({w.sequence for w in windows}), "sequence numbers not increasing"


def _assert_live_camera(windows: list[WindowHeader], killed_at: float, restarted_at: float, dropped: float) -> None:
    during = [w for w in windows if killed_at <= w.capture_time_s[0] and w.capture_time_s[-1] <= restarted_at]
    assert during, "the live camera published no window captured during the other camera's outage"
    assert len({w.segment for w in windows}) == 1, "the live camera's stream broke into segments"
    sequences = [w.sequence for w in windows]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences))), "live camera windows are missing"
    assert dropped == 0, f"the live camera dropped {dropped:.0f} windows"


def _print_ledger(
    headers: list[WindowHeader],
    acknowledged: Counter[str],
    killed_at: float,
    restarted_at: float,
    reconnects: dict[str, float],
    dropped: dict[str, float],
) -> None:
    on_topic = {header.window_id for header in headers}
    parts = []
    for camera in (KILLED, LIVE):
        windows = _of(headers, camera)
        before = sum(w.capture_time_s[-1] <= killed_at for w in windows)
        during = sum(killed_at <= w.capture_time_s[0] and w.capture_time_s[-1] <= restarted_at for w in windows)
        after = sum(w.capture_time_s[0] >= restarted_at for w in windows)
        parts.append(
            f"{camera}: {len(windows)} (before={before} during={during} after={after} "
            f"segments={len({w.segment for w in windows})} reconnects={reconnects[camera]:.0f} "
            f"dropped={dropped[camera]:.0f})"
        )
    lost = len(set(acknowledged) - on_topic)
    print(
        f"LEDGER camera_outage: produced={len(on_topic)} acknowledged={len(acknowledged)} lost={lost} "
        f"outage={restarted_at - killed_at:.1f}s; " + "; ".join(parts)
    )
