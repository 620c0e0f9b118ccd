"""The whole pipeline with every service's defaults, as processes, through the real Kafka broker:
synthetic clip → ``streamssl-ingest`` → ``streamssl-train --max-steps N`` → registry → ``streamssl-serve
--stream-topic`` → exactly one result per window on the output topic, none dead-lettered.

No size, window or fps flag is given anywhere: ingest's default 128×128 windows must reach the trainer's default
64×64 model, and serving must score them, through the shared preprocessing contract.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from ingest.bus import open_bus
from ingest.contract.messages import window_from_record
from ingest.contract.topics import dead_letter_topic
from ingest.registry import DEFAULT_MODEL_NAME, production_version

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
TRAIN_STEPS = 12


def run(*argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{' '.join(argv[:2])} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result


def read_all(bootstrap: str, topic: str, expected: int = 0, deadline_s: float = 20.0) -> list:
    """Every record of ``topic`` (no group), polling until ``expected`` arrived or the deadline."""
    records: list = []
    end = time.monotonic() + deadline_s
    with open_bus(f"kafka://{bootstrap}") as bus:
        bus.create_topic(topic, 8)  # idempotent; the service creates it too, maybe after we start reading
        consumer = bus.consumer([topic], group_id=None)
        with consumer:
            while time.monotonic() < end and (expected == 0 or len(records) < expected):
                records += consumer.poll(1.0)
            if expected == 0:
                records += consumer.poll(2.0)
    return records


def test_default_services_compose_end_to_end(kafka_bootstrap: str, tmp_path: Path) -> None:
    bus = f"kafka://{kafka_bootstrap}"
    topic, scores = f"e2e.{uuid.uuid4().hex[:8]}", f"e2e.scores.{uuid.uuid4().hex[:8]}"
    clip = tmp_path / "clip.mp4"
    run("-m", "ingest.tools.umbrella", "synth", "--seconds", "40", "--seed", "5", "--out", str(clip), timeout=300)

    run("-m", "ingest", "--source", str(clip), "--camera-id", "cam-e2e", "--bus", bus, "--topic", topic, timeout=300)
    produced = [window_from_record(record) for record in read_all(kafka_bootstrap, topic)]
    assert len(produced) >= 40, f"ingest produced {len(produced)} windows from a 40 s clip"

    registry, checkpoints = tmp_path / "registry", tmp_path / "checkpoints"
    run(
        "-m", "trainer", "--bus", bus, "--topic", topic, "--registry", str(registry),
        "--checkpoint-dir", str(checkpoints), "--max-steps", str(TRAIN_STEPS), "--eval-topic", topic,
        timeout=540,
    )  # fmt: skip
    assert production_version(registry, DEFAULT_MODEL_NAME) == "1", "the first trained version was promoted"
    gate = [json.loads(line) for line in (checkpoints / "eval.jsonl").read_text().splitlines()][-1]
    assert gate["kind"] == "gate", gate
    assert gate["candidate_metrics"]["future_top1"] >= 0, gate

    serve = subprocess.Popen(
        [sys.executable, "-m", "serving", "--registry", str(registry), "--port", "0", "--bus", bus,
         "--stream-topic", topic, "--output-topic", scores],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        results = read_all(kafka_bootstrap, scores, expected=len(produced), deadline_s=240)
        time.sleep(2.0)  # any duplicate would arrive now
        results = read_all(kafka_bootstrap, scores)
    finally:
        serve.send_signal(signal.SIGTERM)
        _, stderr = serve.communicate(timeout=60)
    assert serve.returncode == 0, stderr[-3000:]

    scored = Counter(json.loads(record.value)["window_id"] for record in results)
    assert scored == Counter(window.window_id for window in produced), "exactly one result per produced window"
    assert all(json.loads(record.value)["model_version"] == "1" for record in results)
    assert read_all(kafka_bootstrap, dead_letter_topic(topic), deadline_s=5) == [], "nothing was dead-lettered"
