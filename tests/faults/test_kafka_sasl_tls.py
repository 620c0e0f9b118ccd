"""Kafka with SASL/SCRAM over TLS: the three services log in through a SASL_SSL listener, and a bad login fails clearly.

A broker of this module's own (scripts/kafka.sh with ``STREAMSSL_KAFKA_SASL_SSL=1``: a test CA, a broker certificate
for 127.0.0.1, a SCRAM-SHA-512 user with a password made for the run directory) serves the whole pipeline: synthetic
clip → ingest → trainer → registry → serving in stream mode, every command given only the SASL_SSL listener's address
and its login in ``STREAMSSL_KAFKA__*`` variables, as a deployment would set them. Every window on the topic must be
scored, read back through the same listener.

Then the failures: a wrong password must end each command within seconds with one line that says authentication
failed (no traceback, no wait for a broker that "does not answer"); a PLAINTEXT client, or one that does not trust
the broker's CA, must be told which protocol it tried or that the certificate was not trusted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.bus import BusError, KafkaSettings, open_bus
from ingest.bus.kafka_bus import KafkaBus
from ingest.contract.records import Record
from ingest.contract.topics import dead_letter_topic
from ingest.registry import DEFAULT_MODEL_NAME, production_version
from tests.faults import ledger
from tests.faults.ledger import Ledger, produced_ids, scored_ids
from tests.kafka_broker import SaslSslListener, tail

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
TRAIN_STEPS = 6
# A failed login is answered at once; the bus's connect timeout (10 s) is what a refused one used to take.
LOGIN_FAILS_WITHIN_S = 8.0


def command(module: str, *argv: str | Path) -> list[str]:
    return [sys.executable, "-m", module, *map(str, argv)]


def child_env(env: dict[str, str]) -> dict[str, str]:
    """This process's environment with ``env`` added, for a command run from the repository."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}


def run(module: str, *argv: str | Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m module argv`` with ``env`` added to this process's environment; stdout and stderr captured."""
    return subprocess.run(
        command(module, *argv),
        cwd=ROOT,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_ok(module: str, *argv: str | Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    result = run(module, *argv, env=env, timeout=timeout)
    assert result.returncode == 0, f"{module} exited {result.returncode}:\n{tail(result.stderr)}"
    return result


def read_topic(listener: SaslSslListener, topic: str, expected: int = 0, deadline_s: float = 20.0) -> list[Record]:
    """The ledger's :func:`~tests.faults.ledger.read_topic`, logged in through the SASL_SSL listener."""
    return ledger.read_topic(listener.bus_url, topic, expected, deadline_s, kafka=listener.settings())


def test_ingest_trainer_and_serving_work_through_sasl_ssl(kafka_sasl_ssl: SaslSslListener, tmp_path: Path) -> None:
    listener, env = kafka_sasl_ssl, kafka_sasl_ssl.env()
    bus = listener.bus_url
    topic, scores = f"tls.{uuid.uuid4().hex[:8]}", f"tls.scores.{uuid.uuid4().hex[:8]}"
    clip = tmp_path / "clip.mp4"
    # 20 s at 10 fps (ingest's sampling rate), small frames: ~25 windows of ingest's default 8 frames.
    run_ok(
        "ingest.tools.umbrella", "synth", "--seconds", "20", "--seed", "3", "--width", "320", "--height", "180",
        "--fps", "10", "--out", clip, env={}, timeout=120,
    )  # fmt: skip

    run_ok("ingest", "--source", clip, "--camera-id", "cam-tls", "--bus", bus, "--topic", topic, env=env, timeout=120)
    produced = produced_ids(read_topic(listener, topic))
    assert sum(produced.values()) >= 20, f"ingest put {sum(produced.values())} windows of a 20 s clip on the topic"

    registry, checkpoints = tmp_path / "registry", tmp_path / "checkpoints"
    run_ok(
        "trainer", "--bus", bus, "--topic", topic, "--registry", registry, "--checkpoint-dir", checkpoints,
        "--max-steps", str(TRAIN_STEPS), "--eval-topic", topic, env=env, timeout=240,
    )  # fmt: skip
    assert production_version(registry, DEFAULT_MODEL_NAME) == "1", "the trained version was not promoted"

    serve = subprocess.Popen(
        command("serving", "--registry", registry, "--port", "0", "--bus", bus, "--stream-topic", topic,
                "--output-topic", scores),
        cwd=ROOT, env=child_env(env),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        results = read_topic(listener, scores, expected=sum(produced.values()), deadline_s=120)
    finally:
        serve.send_signal(signal.SIGTERM)
        _, stderr = serve.communicate(timeout=60)
    assert serve.returncode == 0, tail(stderr)

    dead_letters = read_topic(listener, dead_letter_topic(topic), deadline_s=3)
    book = Ledger(produced, scored_ids(results), dead_lettered=len(dead_letters))
    print(book.line("sasl-ssl"))
    assert not book.lost, f"windows never scored: {sorted(book.lost)[:5]}"
    assert not book.unexpected, f"scores for windows never produced: {sorted(book.unexpected)[:5]}"
    assert book.dead_lettered == 0


# Each command as a user would start it against the SASL_SSL listener; its first connection is the login.
def _ingest(bus: str, work: Path) -> list[str | Path]:
    clip = work / "missing.mp4"  # never opened: the bus is checked first
    return ["ingest", "--source", clip, "--camera-id", "cam-x", "--bus", bus, "--topic", "tls.refused"]


def _trainer(bus: str, work: Path) -> list[str | Path]:
    return ["trainer", "--bus", bus, "--topic", "tls.refused", "--registry", work / "r", "--checkpoint-dir", work / "c",
            "--max-steps", "1"]  # fmt: skip


def _serving(bus: str, work: Path) -> list[str | Path]:
    return ["serving", "--registry", work / "r", "--port", "0", "--bus", bus, "--stream-topic", "tls.refused",
            "--output-topic", "tls.refused.scores"]  # fmt: skip


@pytest.mark.parametrize("argv", [_ingest, _trainer, _serving], ids=["ingest", "trainer", "serving"])
def test_a_wrong_password_ends_the_command_saying_authentication_failed(
    kafka_sasl_ssl: SaslSslListener, tmp_path: Path, argv: Callable[[str, Path], list[str | Path]]
) -> None:
    module, *rest = argv(kafka_sasl_ssl.bus_url, tmp_path)
    started = time.monotonic()
    result = run(str(module), *rest, env=kafka_sasl_ssl.env(password="not-the-password"), timeout=120)
    took = time.monotonic() - started

    assert result.returncode == 1, f"{module} exited {result.returncode}:\n{tail(result.stderr)}"
    # The command's own last word, not kafka-python's log lines: one line that says what is wrong.
    last_line = result.stderr.strip().splitlines()[-1]
    assert ": error: " in last_line, tail(result.stderr)
    assert "authentication failed" in last_line, tail(result.stderr)
    assert "Traceback" not in result.stderr, tail(result.stderr)
    assert "not-the-password" not in result.stderr + result.stdout, "the password was printed"
    # Python and the command's own start-up come on top of the login, which fails at its first answer.
    assert took < LOGIN_FAILS_WITHIN_S + 20, f"{module} took {took:.1f} s to report a refused login"


def test_a_wrong_password_is_refused_within_seconds(kafka_sasl_ssl: SaslSslListener) -> None:
    started = time.monotonic()
    with (
        pytest.raises(BusError, match="authentication failed") as refused,
        open_bus(kafka_sasl_ssl.bus_url, kafka_sasl_ssl.settings(password="not-the-password")) as bus,
    ):
        bus.create_topic("tls.refused")
    assert time.monotonic() - started < LOGIN_FAILS_WITHIN_S
    assert "SCRAM-SHA-512" in str(refused.value), "the broker's reason is kept"


def test_a_plaintext_client_is_told_which_protocol_it_tried(kafka_sasl_ssl: SaslSslListener) -> None:
    with (
        pytest.raises(BusError, match="security_protocol PLAINTEXT"),
        KafkaBus([kafka_sasl_ssl.bootstrap], KafkaSettings(), connect_timeout_s=2.0) as bus,
    ):
        bus.create_topic("tls.refused")


def test_a_client_that_does_not_trust_the_ca_is_told_so(kafka_sasl_ssl: SaslSslListener) -> None:
    # The system's trust store (no ssl_cafile) has never heard of the test CA.
    untrusting = kafka_sasl_ssl.settings().model_copy(update={"ssl_cafile": None})
    started = time.monotonic()
    with (
        pytest.raises(BusError, match="certificate") as refused,
        open_bus(kafka_sasl_ssl.bus_url, untrusting) as bus,
    ):
        bus.create_topic("tls.refused")
    assert time.monotonic() - started < LOGIN_FAILS_WITHIN_S
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value), "the TLS library's reason is kept"
    assert "did not answer" not in str(refused.value)
