"""Command-line conventions shared by every StreamSSL command, and `streamssl windows tail`."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ingest.bus import open_bus
from ingest.bus.embedded import EmbeddedBus
from ingest.contract import FrameCodec
from ingest.contract.messages import window_message
from ingest.runtime.logs import JsonFormatter
from ingest.tools.windows_tail import tail
from tests.conftest import make_window

ROOT = Path(__file__).resolve().parents[1]
UMBRELLA = [sys.executable, "-m", "ingest.tools.umbrella"]
COMMON_FLAGS = ("--bus", "--topic", "--config", "--metrics-port", "--log-format")


def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("module", ["ingest", "trainer", "serving"])
def test_every_service_runs_as_a_module_with_help_and_the_common_flags(module: str) -> None:
    result = run(sys.executable, "-m", module, "--help")
    assert result.returncode == 0, result.stderr
    for flag in COMMON_FLAGS:
        if module == "serving" and flag == "--topic":
            continue  # serving reads windows only in stream mode, from --stream-topic (next test)
        assert flag in result.stdout, f"python -m {module} --help lacks {flag}"


def test_no_flag_is_silently_ignored_serving_refuses_topic(tmp_path: Path) -> None:
    # It used to accept --topic and ignore it; a user who meant --stream-topic now learns so.
    result = run(sys.executable, "-m", "serving", "--registry", str(tmp_path), "--topic", "cams")
    assert result.returncode == 2
    assert "unrecognized arguments: --topic" in result.stderr
    config = tmp_path / "serve.yaml"
    config.write_text("topic: cams\n")
    result = run(sys.executable, "-m", "serving", "--registry", str(tmp_path), "--config", str(config))
    assert result.returncode == 2
    assert "reads no 'topic'" in result.stderr, result.stderr


def test_help_takes_defaults_from_the_settings() -> None:
    from trainer.config import TrainerSettings

    result = run(sys.executable, "-m", "trainer", "--help")
    batch = TrainerSettings.model_fields["data"].default_factory().batch_size  # type: ignore[misc,call-arg]
    assert f"(default: {batch})" in " ".join(result.stdout.split()), result.stdout


@pytest.mark.parametrize(
    "subcommand", [["--help"], ["synth", "--help"], ["demo", "--help"], ["windows", "tail", "--help"]]
)
def test_umbrella_subcommands_have_help(subcommand: list[str]) -> None:
    result = run(*UMBRELLA, *subcommand)
    assert result.returncode == 0, result.stderr
    assert "usage: streamssl" in result.stdout


def test_tail_help_lists_its_documented_flags() -> None:
    result = run(*UMBRELLA, "windows", "tail", "--help")
    for flag in (*COMMON_FLAGS, "--max", "--from-beginning"):
        assert flag in result.stdout


def test_ingest_without_a_camera_is_a_usage_error() -> None:
    result = run(sys.executable, "-m", "ingest", "--bus", "embedded://")
    assert result.returncode == 2
    assert "no camera configured" in result.stderr


def test_ingest_single_camera_needs_both_source_and_id() -> None:
    result = run(sys.executable, "-m", "ingest", "--source", "clip.mp4")
    assert result.returncode == 2
    assert "--source and --camera-id" in result.stderr


@pytest.mark.parametrize(("module", "missing"), [("trainer", "checkpoint_dir"), ("serving", "registry")])
def test_services_name_missing_required_settings_and_exit_2(module: str, missing: str) -> None:
    result = run(sys.executable, "-m", module, "--bus", "embedded://")
    assert result.returncode == 2
    assert f"{missing}: Field required" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_config_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("bus: carrier-pigeon://loft\n")
    result = run(*UMBRELLA, "windows", "tail", "--config", str(config), "--max", "1")
    assert result.returncode == 2
    assert "configuration error" in result.stderr
    assert "unknown bus URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_overrides_flags_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [*UMBRELLA, "windows", "tail", "--bus", "embedded://", "--max", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "STREAMSSL_TOPIC": "not a topic!"},
    )
    assert result.returncode == 2
    assert "invalid topic name 'not a topic!'" in result.stderr


def test_tail_prints_one_json_line_per_window_and_reports_malformed_messages(embedded_bus: EmbeddedBus) -> None:
    topic = "tail.test"
    embedded_bus.create_topic(topic, 2)
    with embedded_bus.producer() as producer:
        for sequence in range(3):
            message = window_message(make_window("cam-7", sequence, frames=5, codec=FrameCodec.JPEG))
            producer.send(topic, message.value, key=message.key, headers=message.headers)
        producer.send(topic, b"definitely not a window", key=b"cam-7")
    out = io.StringIO()
    printed = tail(embedded_bus, topic, out, limit=4, from_beginning=True, idle_timeout_s=5)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert printed == len(lines) == 4
    windows = sorted((line for line in lines if "error" not in line), key=lambda line: line["sequence"])
    assert [line["sequence"] for line in windows] == [0, 1, 2]
    first = windows[0]
    assert (first["camera_id"], first["frames"], first["height"], first["width"], first["codec"]) == (
        "cam-7",
        5,
        16,
        16,
        "jpeg",
    )
    assert first["window_id"] == "cam-7:00000000"
    assert first["first_pts"] == pytest.approx(0.0)
    assert first["last_pts"] == pytest.approx(0.4)
    assert first["bytes"] > 0
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1
    assert "not a StreamSSL window" in errors[0]["error"]


@pytest.mark.kafka
def test_tail_reads_a_real_kafka_topic_from_the_command_line(kafka_bootstrap: str) -> None:
    topic = f"tail.{uuid.uuid4().hex[:8]}"
    with open_bus(f"kafka://{kafka_bootstrap}") as bus:
        bus.create_topic(topic, 3)
        with bus.producer() as producer:
            for sequence in range(6):
                message = window_message(make_window(f"cam-{sequence % 2}", sequence))
                producer.send(topic, message.value, key=message.key, headers=message.headers)
    result = run(
        *UMBRELLA,
        "windows",
        "tail",
        "--bus",
        f"kafka://{kafka_bootstrap}",
        "--topic",
        topic,
        "--max",
        "6",
        "--from-beginning",
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(line["sequence"] for line in lines) == list(range(6))
    assert {line["camera_id"] for line in lines} == {"cam-0", "cam-1"}


def test_json_logs_carry_extra_fields() -> None:
    record = logging.makeLogRecord(
        {"name": "ingest.camera", "levelname": "WARNING", "msg": "camera %s stalled", "args": ("cam-2",)}
    )
    record.camera_id = "cam-2"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "camera cam-2 stalled"
    assert entry["camera_id"] == "cam-2"
    assert entry["level"] == "warning"


def test_synth_command_writes_the_clip_and_requested_events(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    result = run(
        *UMBRELLA,
        "synth",
        "--seconds",
        "3",
        "--seed",
        "5",
        "--width",
        "320",
        "--height",
        "180",
        "--out",
        str(out),
        "--event",
        "jam@1:1.5",
        "--event",
        "stalled@0.5:1",
    )
    assert result.returncode == 0, result.stderr
    labels = json.loads((tmp_path / "clip.labels.json").read_text())
    assert [(e["kind"], e["start_s"]) for e in labels["events"]] == [("stalled", 0.5), ("jam", 1.0)]
    assert labels["frame_count"] == 90
    assert out.stat().st_size > 0


def test_synth_command_rejects_a_bad_event(tmp_path: Path) -> None:
    result = run(*UMBRELLA, "synth", "--seconds", "3", "--out", str(tmp_path / "x.mp4"), "--event", "meteor@1")
    assert result.returncode != 0
    assert "meteor" in result.stderr
    assert "Traceback" not in result.stderr
