"""Fault: the Kafka broker is killed with ``kill -9`` and restarted while ingest, the trainer and serving run.

Everything is real: a broker of its own (scripts/kafka.sh, so the session's shared broker is never touched), and the
three services as processes. Ingest reads a synthetic clip paced like a live camera (``--realtime``); the trainer runs
continually (stopped with SIGTERM at the end); serving scores the window topic in stream mode with a stand-in ONNX
encoder from the registry. Mid-clip the broker dies for a few seconds and comes back on the same port.

What must hold afterwards, read from the topics and the processes' own logs:

* every window ingest reports acknowledged (its ``window acknowledged`` debug log line) is on the window topic: an
  acknowledged window is never lost; a window ingest could not deliver is logged by id (``not delivered``, or at
  shutdown ``sent but never acknowledged``) and counted in ``windows_dropped{reason="publish_error"}``, and ingest's
  acknowledged and undelivered windows together are every window of the clip: none goes missing without a trace;
* every window on the topic is scored at least once; extra copies are re-reads, counted and printed;
* the trainer's committed group offsets reach the end of the topic after its clean stop, and it took windows that
  were produced after the restart (its ``--journal``);
* no process crashed: all alive through the outage, each exits 0 (ingest at the end of its clip, the others on
  SIGTERM), and no stderr holds a traceback other than kafka-python logging the connection the dead broker reset.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bench.onnx_models import make_registry_version
from ingest.bus import TopicPartition, open_bus
from ingest.contract.messages import header_from_record
from ingest.contract.records import Record
from ingest.contract.topics import dead_letter_topic
from tests.faults.ledger import Ledger, produced_ids, read_topic, scored_ids
from tests.kafka_broker import START_TIMEOUT_S, STOP_TIMEOUT_S, kafka_sh, tail

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
CLIP_SECONDS = 30
CLIP_FPS = 10  # the ingest's sampling rate: every decoded frame is sampled
WINDOW = 8  # ingest's default frames per window (and stride)
OUTAGE_S = 5.0
# The broker dies once ingest has this many windows acknowledged (and serving and the trainer have taken some): about
# 5 s into the 30 s clip, so most of the stream is produced during and after the outage.
KILL_AFTER_WINDOWS = 6
TRAINER_CONFIG = {
    "threads": 1,
    "progress_every": 5,
    "model": {"encoder_width": 8, "embedding_dim": 32},
    # No replay-only steps while the stream is idle: the trainer steps when fresh windows come, which keeps the two
    # cores for the others and makes "trained after the restart" visible in its journal.
    "data": {"batch_size": 8, "fresh_wait_s": 1.0, "replay_when_idle": False, "prefetch_batches": 2},
    "checkpoint": {"every_steps": 5, "keep_last": 2},
}
# The publisher's log lines for a window that did not reach the topic (ingest/service/publisher.py).
NOT_PUBLISHED = re.compile(
    r"window (\S+) not delivered: |could not send (\S+): |(?:dropped|refused) window (\S+): "
    r"|dropped the oldest queued window (\S+)"
)
# At shutdown, the windows still in a producer that could not deliver them (ingest/service/service.py).
NEVER_ACKNOWLEDGED = re.compile(r"\d+ windows sent but never acknowledged: (.+)$")


class Service:
    """One service as a real process; stderr goes to a file (an unread pipe could stall its logging)."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.stderr"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", name, *argv], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM and wait: the service's exit status."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit {timeout_s:.0f} s after SIGTERM:\n{self.tail()}") from None

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(30)

    def tail(self) -> str:
        return tail(self.stderr())


class Broker:
    """A broker of this test's own run directory: started, killed with SIGKILL and restarted on the same port."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def start(self) -> str:
        started = kafka_sh("start", self.run_dir, START_TIMEOUT_S)
        if started.returncode != 0 or not started.stdout.strip():
            pytest.fail(f"scripts/kafka.sh start failed (exit {started.returncode}):\n{tail(started.stderr)}")
        return started.stdout.strip().splitlines()[-1]

    def kill_9(self) -> None:
        pid = int((self.run_dir / "pid").read_text())
        os.kill(pid, signal.SIGKILL)
        # Not our child, so we cannot wait(); it is gone once /proc says so (or it is a zombie nobody reaped).
        deadline = time.monotonic() + 10
        while _alive(pid):
            assert time.monotonic() < deadline, f"broker pid {pid} still alive 10 s after SIGKILL"
            time.sleep(0.05)

    def stop(self) -> None:
        kafka_sh("stop", self.run_dir, STOP_TIMEOUT_S)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ready(port: int) -> bool:
    """True once the service's ``/readyz`` answers 200 (the trainer: consuming from the bus)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float, services: list[Service]) -> None:
    """Poll ``condition``; fail with the logs of any service that died meanwhile, or at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        for service in services:
            if not service.alive():
                status = service.process.returncode
                raise AssertionError(f"{service.name} exited {status} while waiting until {what}:\n{service.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting until {what}")
        time.sleep(0.2)


def log_entries(service: Service) -> list[dict[str, object]]:
    """The service's JSON log lines (``--log-format json``); anything else on stderr is skipped."""
    entries = []
    for line in service.stderr().splitlines():
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return entries


def crash_traces(service: Service) -> list[str]:
    """Tracebacks on the service's stderr that are not kafka-python logging a lost connection.

    A crash (an uncaught exception, a dying thread) is printed raw by Python; our own code logs an exception it
    handled with ``log.exception`` as a JSON entry with an ``exception`` field. Both count. kafka-python logs the
    connection the dead broker reset with its traceback (logger ``kafka.*``): that is the fault itself, not a crash.
    """
    traces = [line for line in service.stderr().splitlines() if not line.startswith("{") and "Traceback" in line]
    for entry in log_entries(service):
        if "exception" in entry and not str(entry.get("logger", "")).startswith("kafka."):
            traces.append(f"{entry['logger']}: {entry['message']}\n{entry['exception']}")
    return traces


def ingest_outcomes(ingest: Service) -> tuple[Counter[str], Counter[str]]:
    """Window ids ingest logged as acknowledged by the broker, and those it logged as not delivered."""
    acknowledged: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for entry in log_entries(ingest):
        message = str(entry.get("message", ""))
        if message == "window acknowledged":
            acknowledged[str(entry["window_id"])] += 1
        elif match := NOT_PUBLISHED.search(message):
            failed[next(group for group in match.groups() if group)] += 1
        elif match := NEVER_ACKNOWLEDGED.search(message):
            failed.update(match[1].split(", "))
    return acknowledged, failed


def journal(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def committed_and_ends(bus_url: str, topic: str, group: str) -> tuple[dict[int, int], dict[int, int]]:
    """The group's committed offset and the end offset of every partition of ``topic``."""
    with open_bus(bus_url) as bus:
        partitions = [TopicPartition(topic, p) for p in range(bus.partitions(topic))]
        # A consumer that never polls never joins the group: it only reads offsets.
        with bus.consumer([topic], group_id=group) as consumer:
            committed = {p.partition: consumer.committed(p) or 0 for p in partitions}
            ends = {p.partition: offset for p, offset in consumer.end_offsets(partitions).items()}
    return committed, ends


@dataclass
class Outcome:
    """What one run with a broker outage left behind: the ledger and every service's own account."""

    ledger: Ledger
    acknowledged: Counter[str]  # by ingest's log
    failed: Counter[str]  # ingest could not deliver them (logged and counted in windows_dropped)
    acknowledged_at_kill: int
    captured_in_outage: int  # windows on the topic whose first frame was captured while the broker was dead
    committed: dict[int, int]  # the trainer's group, after its clean stop
    ends: dict[int, int]
    taken: int  # records in the trainer's journal
    taken_after_restart: int
    services: list[Service]


def test_broker_kill_9_and_restart_loses_no_acknowledged_window(tmp_path: Path) -> None:
    run = _run_with_broker_outage(tmp_path)
    ledger = run.ledger
    expected = CLIP_SECONDS * CLIP_FPS // WINDOW
    print(ledger.line("broker_restart"))
    print(
        f"  ingest: {len(run.acknowledged)} acknowledged ({run.acknowledged_at_kill} before the kill), "
        f"{len(run.failed)} not delivered {sorted(run.failed)}, clip of {expected} windows; topic: "
        f"{sum(ledger.produced.values())} records, {len(ledger.produced)} windows, {run.captured_in_outage} captured "
        f"during the outage; scored re-reads {ledger.duplicates}; trainer committed {run.committed} of {run.ends}, "
        f"took {run.taken} records ({run.taken_after_restart} after the restart)"
    )
    lost_acknowledged = set(run.acknowledged) - set(ledger.produced)
    assert not lost_acknowledged, f"acknowledged by the broker, yet not on the topic: {sorted(lost_acknowledged)}"
    assert set(ledger.produced) <= set(run.acknowledged) | set(run.failed), "a window on the topic ingest never sent"
    assert len(set(run.acknowledged) | set(run.failed)) == expected, "ingest accounts for every window of the clip"
    assert run.captured_in_outage > 0, "no window was captured during the outage: the fault missed the stream"
    assert not ledger.lost, f"on the topic but never scored: {sorted(ledger.lost)}"
    assert not ledger.unexpected, f"scored but never produced: {sorted(ledger.unexpected)}"
    assert ledger.dead_lettered == 0, "a well-formed window was dead-lettered"
    assert run.committed == run.ends, f"the trainer's committed offsets {run.committed} stop short of {run.ends}"
    assert run.taken_after_restart > 0, "the trainer took no window after the broker came back"
    for service in run.services:
        crashes = crash_traces(service)
        assert not crashes, f"{service.name} had an exception outside kafka-python's logging:\n{crashes[0]}"


def _run_with_broker_outage(tmp_path: Path) -> Outcome:
    """Broker, serving, trainer, ingest; ``kill -9`` the broker mid-clip, restart it; collect the outcome."""
    suffix = uuid.uuid4().hex[:8]
    topic, scores, group = f"faults.windows.{suffix}", f"faults.scores.{suffix}", f"faults-trainer-{suffix}"
    clip, registry, logs = _inputs(tmp_path)
    trainer_journal = tmp_path / "journal.jsonl"
    broker = Broker(tmp_path / "kafka")
    address = broker.start()
    bus_url = f"kafka://{address}"
    services: list[Service] = []
    try:
        with open_bus(bus_url) as bus:
            bus.create_topic(topic, 2)  # before the consumers start, so they need not wait for it
        common = ["--bus", bus_url, "--log-format", "json"]
        trainer_metrics = free_port()
        serving = Service(
            "serving",
            [
                *common,
                "--registry",
                str(registry),
                "--stream-topic",
                topic,
                "--output-topic",
                scores,
                "--port",
                "0",
                "--host",
                "127.0.0.1",
                "--threads",
                "1",
            ],
            logs,
        )
        trainer = Service("trainer", [*common, "--topic", topic, "--registry", str(registry), "--checkpoint-dir",
                                      str(tmp_path / "checkpoints"), "--device", "cpu", "--group-id", group,
                                      "--journal", str(trainer_journal), "--config", str(tmp_path / "trainer.yaml"),
                                      "--metrics-port", str(trainer_metrics)], logs)  # fmt: skip
        services = [serving, trainer]
        # The clip starts once both consumers run, so the outage lands early in it however slow their start-up is.
        wait_until(
            lambda: "stream mode: " in serving.stderr() and ready(trainer_metrics),
            "serving is in stream mode and the trainer is ready",
            120,
            services,
        )
        ingest = Service("ingest", [*common, "--log-level", "DEBUG", "--topic", topic, "--source", str(clip),
                                    "--camera-id", "cam-fault", "--realtime"], logs)  # fmt: skip
        services.append(ingest)
        wait_until(
            lambda: (
                len(ingest_outcomes(ingest)[0]) >= KILL_AFTER_WINDOWS
                and bool(journal(trainer_journal))
                and bool(read_topic(bus_url, scores, deadline_s=1.0))
            ),
            f"ingest acknowledged {KILL_AFTER_WINDOWS} windows, the trainer took one and serving scored one",
            90,
            services,
        )
        broker.kill_9()
        killed_at, acknowledged_at_kill = time.time(), len(ingest_outcomes(ingest)[0])
        time.sleep(OUTAGE_S)
        assert all(service.alive() for service in services), [(s.name, s.process.poll()) for s in services]
        restarted = broker.start()
        back_at, taken_before_restart = time.time(), len(journal(trainer_journal))
        assert restarted == address, f"the broker came back on {restarted}, not {address}"
        # The fault under test is an outage in the middle of the stream, not at its end.
        assert ingest.alive(), "the clip ended before the broker was back: the machine is too slow for this test"

        assert ingest.process.wait(120) == 0, f"ingest did not finish its clip cleanly:\n{ingest.tail()}"
        records = read_topic(bus_url, topic)
        ledger = _scored_ledger(bus_url, records, scores, dead_letter_topic(topic), [serving, trainer])
        acknowledged, failed = ingest_outcomes(ingest)
        assert serving.stop() == 0, serving.tail()
        assert trainer.stop() == 0, trainer.tail()
        committed, ends = committed_and_ends(bus_url, topic, group)
        ledger.trained = sum(committed.values())  # every record is a window: offsets count windows taken
    finally:
        for service in services:
            service.kill()
        broker.stop()
    first_captures = [header_from_record(record).capture_time_s[0] for record in records]
    taken = len(journal(trainer_journal))
    return Outcome(
        ledger=ledger,
        acknowledged=acknowledged,
        failed=failed,
        acknowledged_at_kill=acknowledged_at_kill,
        captured_in_outage=sum(killed_at <= t <= back_at for t in first_captures),
        committed=committed,
        ends=ends,
        taken=taken,
        taken_after_restart=taken - taken_before_restart,
        services=services,
    )


def _inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The synthetic clip, a registry holding serving's stand-in encoder, the trainer's config, a log directory."""
    clip, registry, logs = tmp_path / "clip.mp4", tmp_path / "registry", tmp_path / "logs"
    logs.mkdir()
    # Small and at the sampling rate: rendering takes seconds, and every decoded frame is sampled.
    subprocess.run(
        [sys.executable, "-m", "ingest.tools.umbrella", "synth", "--seconds", str(CLIP_SECONDS), "--seed", "17",
         "--width", "256", "--height", "144", "--fps", str(CLIP_FPS), "--no-events", "--out", str(clip)],
        cwd=ROOT, capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    make_registry_version(registry, seed=17)  # the trainer is stopped by SIGTERM and so publishes nothing
    (tmp_path / "trainer.yaml").write_text(yaml.safe_dump(TRAINER_CONFIG))
    return clip, registry, logs


def _scored_ledger(
    bus_url: str, records: list[Record], scores: str, dead_letters: str, services: list[Service]
) -> Ledger:
    """Wait until serving has scored every window of ``records`` (or 90 s), then read its output whole."""
    ledger = Ledger(produced_ids(records))

    def all_scored() -> bool:
        ledger.scored = scored_ids(read_topic(bus_url, scores, deadline_s=5.0))
        return set(ledger.produced) <= set(ledger.scored)

    wait_until(all_scored, f"serving scored all {len(ledger.produced)} windows", 90, services)
    time.sleep(2.0)  # a late duplicate would arrive now; it is counted, not hidden
    ledger.scored = scored_ids(read_topic(bus_url, scores))
    ledger.dead_lettered = len(read_topic(bus_url, dead_letters, deadline_s=3.0))
    return ledger
