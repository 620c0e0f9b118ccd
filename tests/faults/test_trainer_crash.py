"""Fault: the trainer is ``kill -9``-ed at random moments (seeded) and restarted with the same command, twice, then
runs to its bound. Every restart must resume from the newest checkpoint on disk (never from step 0), no checkpoint
may ever be corrupt, and the windows trained on must cover the whole stream.

What was trained comes from the trainer's own record: with ``progress_every: 1`` each step appends a line to
``train.jsonl`` naming the bus offsets of the fresh windows it trained on (``fresh_offsets``). The steps a killed run
trained after its last checkpoint are thrown away by the restart and trained again: they are counted, not hidden.
The *lineage* of the final model — each run's steps up to the step the next run resumed from — must hold every
window of the topic exactly once.

Three seeded sequences run side by side (each its own consumer group and checkpoint directory, one shared topic):
after a ``kill -9`` the new process waits for Kafka to drop the dead group member (the 10 s session timeout), and
those waits overlap.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.trainer_fixtures import Message, publish, traffic_messages
from ingest.bus import TopicPartition, open_bus
from ingest.contract import decode_window
from ingest.contract.messages import window_message
from tests.faults.ledger import produced_ids, read_topic
from trainer.checkpoint import QUARANTINE_SUFFIX, checkpoint_files, read_checkpoint

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
SEEDS = (11, 22, 33)
KILLS = 2  # per sequence; then a last run to the bound
PARTITIONS = 2
CHECKPOINT_EVERY = 3  # steps; small, so kills land before, after and during checkpoint writes
MAX_STEPS = 32  # 2 fresh windows a step: the 49 windows are all taken by step 25, replay-only after that
# A kill comes 4-9 steps (drawn) after the step a run resumed from, so after at least one checkpoint of its own, then a
# drawn fraction of a second more: anywhere in a step, a checkpoint write included.
KILL_AFTER_STEPS = (CHECKPOINT_EVERY + 1, 3 * CHECKPOINT_EVERY)
KILL_DELAY_S = (0.0, 0.5)
CONFIG: dict[str, Any] = {
    "threads": 1,
    "progress_every": 1,  # a train.jsonl line per step: the record of what each step trained on
    "eval_every": 1_000_000,
    "model": {"encoder_width": 8, "embedding_dim": 32},
    "data": {"batch_size": 4, "holdout_every": 0, "fresh_wait_s": 1.0, "prefetch_batches": 2, "decode_workers": 1},
    "checkpoint": {"every_s": 3600, "keep_last": 3},
    "export": {"at_end": False},
}
RESUMED = re.compile(r"resumed at step (\d+)")


@dataclasses.dataclass
class Run:
    """One process of a sequence: what it resumed from and the steps it logged."""

    newest_on_disk: int  # step of the newest valid checkpoint when it started (0: none)
    resumed_at: int  # from its log (0: a fresh start)
    steps: list[dict[str, Any]]  # its train.jsonl lines
    killed: bool
    temporaries_after: int = 0  # hidden checkpoint temporaries left by the kill (a kill mid-write)


def spread_over_cameras(messages: tuple[Message, ...], cameras: int) -> list[Message]:
    """The windows under ``cameras`` camera ids, round robin, so that Kafka's key partitioner fills both
    partitions."""
    out = []
    for index, message in enumerate(messages):
        window = decode_window(message.value)
        camera = f"cam-{index % cameras}"
        encoded = window_message(dataclasses.replace(window, camera_id=camera, window_id=f"{camera}:{index}"))
        out.append(Message(encoded.key, encoded.value, encoded.headers))
    return out


def train_log(path: Path) -> list[dict[str, Any]]:
    """train.jsonl's lines; a half-written last line (the kill hit its write) is not a step that was kept."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    entries = []
    for number, line in enumerate(lines):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            assert number == len(lines) - 1, f"{path}: line {number + 1} is not JSON: {line!r}"
    return [entry for entry in entries if entry["kind"] == "train"]


def verify_all(directory: Path) -> int:
    """Every checkpoint file loads with the trainer's own reader (magic, length, SHA-256); the newest step."""
    files = checkpoint_files(directory)
    for found in files:
        assert read_checkpoint(found.path)["step"] == found.step
    assert not list(directory.glob(f"*{QUARANTINE_SUFFIX}")), "a checkpoint was found corrupt and quarantined"
    return files[0].step if files else 0


def start(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("w") as log_file:  # a file, not a pipe: an unread pipe would stall the trainer's logging
        return subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=log_file
        )


def wait_for_step(process: subprocess.Popen[bytes], log: Path, train: Path, step: int) -> None:
    deadline = time.monotonic() + 120
    while not any(entry["step"] >= step for entry in train_log(train)):
        assert process.poll() is None, f"the trainer exited ({process.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"not at step {step} within 120 s:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def crash_sequence(seed: int, bootstrap: str, topic: str, directory: Path) -> list[Run]:
    """Start, ``kill -9`` at a seeded random point, restart … then run to ``MAX_STEPS``; every run's record."""
    rng = random.Random(seed)
    directory.mkdir()
    checkpoints, train = directory / "checkpoints", directory / "checkpoints" / "train.jsonl"
    config = directory / "trainer.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    command = [
        sys.executable, "-m", "trainer", "--bus", f"kafka://{bootstrap}", "--topic", topic,
        "--registry", str(directory / "registry"), "--checkpoint-dir", str(checkpoints),
        "--checkpoint-every", str(CHECKPOINT_EVERY), "--max-steps", str(MAX_STEPS), "--device", "cpu",
        "--group-id", f"crash-{seed}-{uuid.uuid4().hex[:6]}", "--config", str(config),
    ]  # fmt: skip
    runs: list[Run] = []
    for attempt in range(KILLS + 1):
        newest = verify_all(checkpoints) if checkpoints.exists() else 0
        lines_before = len(train_log(train))
        log = directory / f"run-{attempt}.log"
        process = start(command, log)
        killed = attempt < KILLS
        try:
            if killed:
                wait_for_step(process, log, train, newest + rng.randint(*KILL_AFTER_STEPS))
                time.sleep(rng.uniform(*KILL_DELAY_S))
                process.send_signal(signal.SIGKILL)
                process.wait(30)
                assert process.returncode == -signal.SIGKILL, f"run {attempt} ended before its kill:\n{log.read_text()}"
            else:
                assert process.wait(180) == 0, log.read_text()[-3000:]
        finally:
            process.kill()
            process.wait(30)
        text = log.read_text()
        assert "INVALID CHECKPOINT" not in text, text[-3000:]
        resumed = [int(match) for match in RESUMED.findall(text)]
        run = Run(newest, resumed[0] if resumed else 0, train_log(train)[lines_before:], killed)
        run.temporaries_after = len(list(checkpoints.glob(".checkpoint-*.tmp-*")))
        runs.append(run)
    assert verify_all(checkpoints) == MAX_STEPS
    return runs


def offsets_of(entry: dict[str, Any]) -> list[tuple[int, int]]:
    """(partition, offset) of the fresh windows of one train.jsonl line."""
    out = []
    for partition, (first, last, count) in entry["fresh_offsets"].items():
        # Per partition a step trains fresh windows in offset order; no window is held out or dead-lettered here.
        assert count == last - first + 1, entry
        out += [(int(partition), offset) for offset in range(first, last + 1)]
    assert len(out) == entry["fresh_windows"], entry
    return out


def audit(seed: int, runs: list[Run], on_topic: set[tuple[int, int]]) -> dict[str, int]:
    """Resume points, step continuity, the final model's lineage; the ledger's numbers."""
    lineage: Counter[tuple[int, int]] = Counter()
    every: Counter[tuple[int, int]] = Counter()
    steps: list[int] = []
    retrained = 0
    for index, run in enumerate(runs):
        # Resumed from the newest valid checkpoint on disk, not from step 0 (nor an older one).
        assert run.resumed_at == run.newest_on_disk, (seed, index, run.resumed_at, run.newest_on_disk)
        logged = [entry["step"] for entry in run.steps]
        assert logged == list(range(run.resumed_at + 1, run.resumed_at + 1 + len(logged))), (seed, index, logged)
        kept_until = runs[index + 1].resumed_at if index + 1 < len(runs) else MAX_STEPS
        for entry in run.steps:
            trained = offsets_of(entry)
            every.update(trained)
            if entry["step"] <= kept_until:
                lineage.update(trained)
                steps.append(entry["step"])
            else:  # trained after the checkpoint the restart resumed from: thrown away, trained again
                retrained += len(trained)
    assert steps == list(range(1, MAX_STEPS + 1)), f"seed {seed}: the final model's steps {steps}"
    assert set(every) <= on_topic, f"seed {seed}: trained on records that are not on the topic"
    missing = on_topic - set(lineage)
    assert not missing, f"seed {seed}: windows never in the final model's training: {sorted(missing)}"
    twice = {key: count for key, count in lineage.items() if count > 1}
    assert not twice, f"seed {seed}: windows trained twice in the final model's lineage: {twice}"
    assert any(run.resumed_at > 0 for run in runs[1:]), f"seed {seed}: no kill came after a checkpoint"
    return {
        "trained": len(every),
        "retrained": retrained,
        "lost": len(on_topic - set(every)),
        "mid_write": sum(run.temporaries_after > 0 for run in runs if run.killed),
    }


def committed(bootstrap: str, topic: str, group: str) -> dict[int, int | None]:
    with open_bus(f"kafka://{bootstrap}") as bus, bus.consumer([topic], group_id=group) as consumer:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}


def test_kill_9_at_random_points_resumes_from_the_last_checkpoint_and_trains_the_whole_stream(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"faults.crash.{uuid.uuid4().hex[:8]}"
    bus_url = f"kafka://{kafka_bootstrap}"
    with open_bus(bus_url) as bus:
        acknowledged = publish(bus, topic, spread_over_cameras(traffic_messages(1), cameras=8), PARTITIONS)
    records = read_topic(bus_url, topic, expected=acknowledged)
    produced = produced_ids(records)
    on_topic = {(record.partition, record.offset) for record in records}
    assert len(on_topic) == len(produced) == acknowledged
    ends = {p: 1 + max(o for q, o in on_topic if q == p) for p in range(PARTITIONS) if any(q == p for q, _ in on_topic)}
    assert len(ends) == PARTITIONS, f"every window went to one partition: {ends}"

    with ThreadPoolExecutor(len(SEEDS)) as pool:
        futures = {
            seed: pool.submit(crash_sequence, seed, kafka_bootstrap, topic, tmp_path / f"seed-{seed}") for seed in SEEDS
        }
        sequences = {seed: future.result() for seed, future in futures.items()}

    for seed, runs in sequences.items():
        numbers = audit(seed, runs, on_topic)
        final = read_checkpoint(checkpoint_files(tmp_path / f"seed-{seed}" / "checkpoints")[0].path)
        consumed = {p: o for _t, p, o in final["ranks"][0]["planner"]["consumed"]}
        assert consumed == ends, f"seed {seed}: the final checkpoint consumed {consumed}, the topic ends at {ends}"
        group = json.loads(final["settings"])["data"]["group_id"]
        assert committed(kafka_bootstrap, topic, group) == ends, f"seed {seed}: committed offsets short of the end"
        print(
            f"LEDGER trainer_crash seed={seed}: produced={acknowledged} on_topic={len(on_topic)} "
            f"trained={numbers['trained']} retrained_after_resume={numbers['retrained']} lost={numbers['lost']} "
            f"kills={KILLS} resumed_from={[run.resumed_at for run in runs[1:]]} "
            f"kills_mid_checkpoint_write={numbers['mid_write']} quarantined=0"
        )
        assert numbers["lost"] == 0
