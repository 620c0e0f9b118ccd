"""streamssl-ingest as a process against the real Kafka broker: a file to the end, and a clean SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ingest.bus import open_bus
from ingest.contract.messages import window_from_record
from tests import video_files

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[1]


def read_topic(bootstrap: str, topic: str, expected: int | None = None, idle_polls: int = 5) -> list:
    windows = []
    with open_bus(f"kafka://{bootstrap}") as bus, bus.consumer([topic], group_id=None) as consumer:
        idle = 0
        while idle < idle_polls and (expected is None or len(windows) < expected):
            records = consumer.poll(1.0)
            idle = 0 if records else idle + 1
            windows += [window_from_record(record) for record in records]
    return windows


def test_a_file_is_ingested_to_its_end_and_the_service_exits_0(kafka_bootstrap: str, tmp_path: Path) -> None:
    clip = video_files.constant_rate(tmp_path / "clip.mp4", seconds=4.0)
    topic = f"ingest.{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ingest",
            "--source",
            str(clip),
            "--camera-id",
            "cam-file",
            "--bus",
            f"kafka://{kafka_bootstrap}",
            "--topic",
            topic,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    windows = read_topic(kafka_bootstrap, topic, expected=5)
    assert [w.sequence for w in windows] == [0, 1, 2, 3, 4]
    assert all(w.camera_id == "cam-file" and w.frames.shape == (8, 128, 128, 3) for w in windows)


def test_sigterm_delivers_every_acknowledged_window(kafka_bootstrap: str, tmp_path: Path) -> None:
    clip = video_files.constant_rate(tmp_path / "clip.mp4", seconds=3.0)
    topic = f"ingest.{uuid.uuid4().hex[:8]}"
    log_file = tmp_path / "ingest.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ingest",
                "--source",
                str(clip),
                "--camera-id",
                "cam-term",
                "--loop",
                "--realtime",
                "--window",
                "4",
                "--stride",
                "4",
                "--bus",
                f"kafka://{kafka_bootstrap}",
                "--topic",
                topic,
                "--log-format",
                "json",
                "--log-level",
                "DEBUG",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + 60
            while log_file.read_text().count('"window acknowledged"') < 6:
                assert process.poll() is None, log_file.read_text()[-3000:]
                assert time.monotonic() < deadline, "no windows acknowledged in 60 s:\n" + log_file.read_text()[-3000:]
                time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0, log_file.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
    lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]
    acknowledged = {line["window_id"] for line in lines if line["message"] == "window acknowledged"}
    assert len(acknowledged) >= 6
    assert any("SIGTERM" in line["message"] for line in lines)
    on_topic = {w.window_id for w in read_topic(kafka_bootstrap, topic, expected=len(acknowledged))}
    missing = acknowledged - on_topic
    assert not missing, f"{len(missing)} acknowledged windows are not on the topic: {sorted(missing)[:5]}"
