"""Fault: the disk fills up under a running trainer, where it checkpoints and where it publishes model versions.

The checkpoint directory and the registry are each a small tmpfs of their own (``mount -t tmpfs``: we run as root),
filled with a filler file to the last byte while the trainer trains. Expected, from the real ``python -m trainer``:

* a checkpoint that does not fit is reported in one clear log line (disk full, the directory), leaves no temporary
  file, leaves the previous checkpoint the newest valid one and commits no offset past it; training goes on;
* once the filler is deleted, the next checkpoint is written, and a restart resumes from the newest one;
* a model version that does not fit is not published, says so (disk full, the registry path) without a traceback,
  leaves no staging directory, and the published version and the production pointer stay valid and servable
  (serving's own model loader loads them); after space returns the next publish succeeds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.trainer_fixtures import publish, traffic_messages
from ingest.bus import TopicPartition, open_bus
from ingest.registry import DEFAULT_MODEL_NAME, production_version, verify_version, versions
from serving.model_loader import ModelLoader, SessionConfig
from tests.faults.ledger import produced_ids, read_topic
from trainer.checkpoint import QUARANTINE_SUFFIX, checkpoint_files, read_checkpoint

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
TMPFS_SIZE = "32m"  # each; a checkpoint of the tiny model below is ~1-2 MB, a published version less
CHECKPOINT_EVERY = 2
FIRST_STEPS, SECOND_STEPS, THIRD_STEPS = 4, 50, 52
CONFIG: dict[str, Any] = {
    "threads": 1,
    "progress_every": 1,
    "eval_every": 1_000_000,
    "model": {"encoder_width": 8, "embedding_dim": 32},
    "data": {"batch_size": 4, "holdout_every": 5, "fresh_wait_s": 1.0, "prefetch_batches": 2, "decode_workers": 1},
    "checkpoint": {"every_s": 3600, "keep_last": 3},
    "export": {"exporter": "torchscript", "opset": 17, "parity_windows": 4},
}
NOT_WRITTEN = re.compile(r"CHECKPOINT NOT WRITTEN at step (\d+) in (\S+): no space left on device")


@contextlib.contextmanager
def tmpfs(directory: Path) -> Iterator[Path]:
    """A ``TMPFS_SIZE`` tmpfs mounted on ``directory``; lazily unmounted afterwards, whatever happened."""
    directory.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(
            f"cannot mount a tmpfs on {directory} (exit {mounted.returncode}: {mounted.stderr.strip()}); this test "
            "needs root (or CAP_SYS_ADMIN) to make a small file system it can fill",
            pytrace=False,
        )
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path) -> Path:
    """Write a filler file into ``directory`` until its file system says ENOSPC: the disk is full."""
    filler = directory / "filler"
    block = b"\0" * (64 * 1024)
    with filler.open("wb", buffering=0) as stream:
        try:
            while True:
                stream.write(block)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
    return filler


def wait_until(condition: Callable[[], Any], what: str, process: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + 120
    while not (value := condition()):
        assert process.poll() is None, f"the trainer exited ({process.returncode}) before {what}:\n{tail(log)}"
        assert time.monotonic() < deadline, f"not within 120 s: {what}\n{tail(log)}"
        time.sleep(0.05)
    return value


def tail(log: Path) -> str:
    return log.read_text()[-4000:]


def temporaries(directory: Path) -> set[str]:
    return {path.name for path in directory.glob(".checkpoint-*.tmp-*")}


def newest_valid(directory: Path) -> int:
    """The newest checkpoint's step; every checkpoint file must load with the trainer's own reader."""
    files = checkpoint_files(directory)
    for found in files:
        assert read_checkpoint(found.path)["step"] == found.step
    assert not list(directory.glob(f"*{QUARANTINE_SUFFIX}"))
    return files[0].step if files else 0


def loads_in_serving(registry: Path, version: str) -> None:
    """The version verifies (SHA256SUMS, metadata) and serving's own loader loads it and runs a test inference."""
    verify_version(registry / DEFAULT_MODEL_NAME / version)
    config = SessionConfig(providers=["CPUExecutionProvider"], intra_op_threads=1)
    assert ModelLoader(registry, DEFAULT_MODEL_NAME, config).load(version).version == version


def last_step(directory: Path) -> int:
    """The newest checkpoint's step, or 0."""
    files = checkpoint_files(directory)
    return files[0].step if files else 0


class Trainer:
    """``python -m trainer`` on the topic with the checkpoint directory and registry given, logging to a file."""

    def __init__(self, bootstrap: str, topic: str, checkpoints: Path, registry: Path, work: Path) -> None:
        config = work / "trainer.yaml"
        config.write_text(yaml.safe_dump(CONFIG))
        self.group = f"disk-full-{uuid.uuid4().hex[:6]}"
        self.base = [
            sys.executable, "-m", "trainer", "--bus", f"kafka://{bootstrap}", "--topic", topic,
            "--registry", str(registry), "--checkpoint-dir", str(checkpoints), "--device", "cpu",
            "--checkpoint-every", str(CHECKPOINT_EVERY), "--group-id", self.group, "--config", str(config),
            "--eval-topic", topic,  # held-out windows for the gate however few steps a run takes
        ]  # fmt: skip
        self.work = work
        self.runs = 0

    def start(self, max_steps: int) -> tuple[subprocess.Popen[bytes], Path]:
        self.runs += 1
        log = self.work / f"run-{self.runs}.log"
        with log.open("w") as stream:  # a file, not a pipe: an unread pipe would stall the trainer's logging
            process = subprocess.Popen(
                [*self.base, "--max-steps", str(max_steps)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.DEVNULL, stderr=stream,
            )  # fmt: skip
        return process, log

    def run(self, max_steps: int) -> tuple[int, str]:
        process, log = self.start(max_steps)
        try:
            return process.wait(240), log.read_text()
        finally:
            process.kill()
            process.wait(30)


def committed(bootstrap: str, topic: str, group: str) -> int | None:
    with open_bus(f"kafka://{bootstrap}") as bus, bus.consumer([topic], group_id=group) as consumer:
        return consumer.committed(TopicPartition(topic, 0))


def test_disk_full_while_checkpointing_and_publishing_loses_nothing_and_recovers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"faults.disk.{uuid.uuid4().hex[:8]}"
    with open_bus(f"kafka://{kafka_bootstrap}") as bus:
        acknowledged = publish(bus, topic, traffic_messages(1), partitions=1)
    produced = produced_ids(read_topic(f"kafka://{kafka_bootstrap}", topic, expected=acknowledged))
    with tmpfs(tmp_path / "checkpoints") as checkpoints, tmpfs(tmp_path / "registry") as registry:
        trainer = Trainer(kafka_bootstrap, topic, checkpoints, registry, tmp_path)
        model_dir = registry / DEFAULT_MODEL_NAME

        # 1. With room: checkpoints and a first published, promoted version.
        code, text = trainer.run(FIRST_STEPS)
        assert code == 0, text[-4000:]
        assert newest_valid(checkpoints) == FIRST_STEPS
        checkpoint_bytes = checkpoint_files(checkpoints)[0].path.stat().st_size
        assert versions(registry, DEFAULT_MODEL_NAME) == ["1"]
        assert production_version(registry, DEFAULT_MODEL_NAME) == "1", text[-4000:]

        # 2. Both disks fill up while the trainer trains.
        process, log = trainer.start(SECOND_STEPS)
        try:
            wait_until(lambda: "resumed at step" in log.read_text(), "resuming", process, log)
            wait_until(lambda: re.search(r"step [5-9]/", log.read_text()), "training", process, log)
            checkpoint_filler, registry_filler = fill(checkpoints), fill(registry)
            failure = wait_until(lambda: NOT_WRITTEN.search(log.read_text()), "a failed checkpoint", process, log)
            failed_step = int(failure[1])
            assert Path(failure[2]) == checkpoints, failure[0]
            # The previous checkpoint is intact and stays the newest while the disk is full; no partial temporary
            # stays behind (a retry in flight may have one for a moment: a leftover is one seen twice, 1 s apart).
            before, leftovers = newest_valid(checkpoints), temporaries(checkpoints)
            time.sleep(1.0)
            assert not leftovers & temporaries(checkpoints), f"a temporary checkpoint file stayed: {leftovers}"
            assert newest_valid(checkpoints) == before < failed_step
            at_checkpoint = read_checkpoint(checkpoint_files(checkpoints)[0].path)["ranks"][0]["planner"]["consumed"]
            assert committed(kafka_bootstrap, topic, trainer.group) == at_checkpoint[0][2], "committed past it"
            assert process.poll() is None, f"the trainer stopped on a full disk:\n{tail(log)}"

            # Space returns for checkpoints: the next one is written and training goes on to the bound.
            checkpoint_filler.unlink()
            wait_until(lambda: last_step(checkpoints) > failed_step, "a checkpoint after the disk full", process, log)
            code = process.wait(240)
        finally:
            process.kill()
            process.wait(30)
        text = log.read_text()
        failures = len(NOT_WRITTEN.findall(text))
        assert newest_valid(checkpoints) == SECOND_STEPS, text[-4000:]
        # The registry was still full at the end: the final export is not published, and says why, in one line.
        assert code == 1, text[-4000:]
        assert "Traceback" not in text, text[-4000:]
        expected = (
            f"the export at the end of the run failed (could not publish a version of {DEFAULT_MODEL_NAME} in "
            f"{model_dir}: no space left on device (disk full)"
        )
        assert expected in text, text[-4000:]
        assert versions(registry, DEFAULT_MODEL_NAME) == ["1"]
        assert not list(model_dir.glob(".staging-*")), "a partial version was left in the registry"
        assert production_version(registry, DEFAULT_MODEL_NAME) == "1"
        loads_in_serving(registry, "1")

        # 3. Space returns for the registry: a restart resumes from the newest checkpoint and publishes.
        registry_filler.unlink()
        code, text = trainer.run(THIRD_STEPS)
        assert code == 0, text[-4000:]
        assert f"resumed at step {SECOND_STEPS}" in text
        assert newest_valid(checkpoints) == THIRD_STEPS
        assert versions(registry, DEFAULT_MODEL_NAME) == ["1", "2"]
        loads_in_serving(registry, "2")
        production = production_version(registry, DEFAULT_MODEL_NAME)
        assert production in ("1", "2")
        loads_in_serving(registry, production)
        assert not temporaries(checkpoints)
        print(
            f"LEDGER disk_full: produced={len(produced)} checkpoint_bytes={checkpoint_bytes} "
            f"checkpoints_not_written={failures} first_failed_step={failed_step} kept_valid_step={before} "
            f"resumed_from={SECOND_STEPS} versions={versions(registry, DEFAULT_MODEL_NAME)} publish_failures=1 "
            f"production={production} temporaries_left=0 staging_left=0 lost=0"
        )
