"""The real Apache Kafka broker for tests marked ``kafka``: one per test session, started by scripts/kafka.sh.

Not a test module: tests/conftest.py loads it as a plugin, for :func:`kafka_bootstrap` and :func:`kafka_sasl_ssl`.
Each broker runs in a fresh run directory under pytest's tmp_path, so it is independent of any broker a developer
runs, and is stopped when its fixture ends. A broker that cannot start fails the tests that need it, with the
script's own explanation; it never skips them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ingest.bus import KafkaSettings

REPO = Path(__file__).resolve().parents[1]
KAFKA_SH = REPO / "scripts" / "kafka.sh"
# Start-up: a cold jar cache fetches ~45 MB from Maven Central first (~10 s here), then the broker takes 3-7 s; the
# script gives the broker itself 60 s. Stop: a clean shutdown takes ~2 s, the script kills it after 30 s.
START_TIMEOUT_S = 300  # under pytest-timeout's 600 s per test, which counts fixture set-up
STOP_TIMEOUT_S = 90


def kafka_sh(command: str, run_dir: Path, timeout_s: float, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/kafka.sh COMMAND`` for the broker of ``run_dir``; stdout and stderr are captured as text."""
    return subprocess.run(
        ["bash", str(KAFKA_SH), command],
        env={**os.environ, "STREAMSSL_KAFKA_DIR": str(run_dir), **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@contextlib.contextmanager
def started_broker(run_dir: Path, **env: str) -> Iterator[list[str]]:
    """The broker of ``run_dir``, started by scripts/kafka.sh with ``env`` added and stopped on exit: start's stdout
    lines (the last is the bootstrap address). A broker that cannot start fails the test."""
    try:
        started = kafka_sh("start", run_dir, START_TIMEOUT_S, **env)
    except subprocess.TimeoutExpired as error:
        kafka_sh("stop", run_dir, STOP_TIMEOUT_S)
        stderr = error.stderr.decode() if isinstance(error.stderr, bytes) else error.stderr or ""
        pytest.fail(f"scripts/kafka.sh start took over {START_TIMEOUT_S} s:\n{tail(stderr)}", pytrace=False)
    if started.returncode != 0 or not started.stdout.strip():
        kafka_sh("stop", run_dir, STOP_TIMEOUT_S)
        pytest.fail(
            f"scripts/kafka.sh start failed (exit {started.returncode}), so the Kafka tests cannot run:\n"
            f"{tail(started.stderr)}",
            pytrace=False,
        )
    try:
        yield started.stdout.strip().splitlines()
    finally:
        kafka_sh("stop", run_dir, STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bootstrap address ``127.0.0.1:PORT`` of a broker started for this session."""
    with started_broker(tmp_path_factory.mktemp("kafka")) as lines:
        yield lines[-1]


SASL_SSL_PREFIX = "SASL_SSL://"


@dataclass(frozen=True)
class SaslSslListener:
    """The SASL_SSL listener of a broker started with ``STREAMSSL_KAFKA_SASL_SSL=1``: SCRAM-SHA-512 over TLS."""

    bootstrap: str  # 127.0.0.1:PORT of this listener (the broker's PLAINTEXT listener is elsewhere)
    ca_file: Path  # the CA that signed the broker's certificate
    username: str
    password: str = field(repr=False)  # kept out of pytest's reports

    @property
    def bus_url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def _settings(self, password: str | None) -> dict[str, str]:
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password if password is None else password,
            "ssl_cafile": str(self.ca_file),
        }

    def env(self, password: str | None = None) -> dict[str, str]:
        """The ``STREAMSSL_KAFKA__*`` variables with which a service logs in here (``password``: another one)."""
        return {f"STREAMSSL_KAFKA__{name.upper()}": value for name, value in self._settings(password).items()}

    def settings(self, password: str | None = None) -> KafkaSettings:
        """The same login as :meth:`env`, for :func:`ingest.bus.open_bus` in the test process."""
        return KafkaSettings(**self._settings(password))


@pytest.fixture(scope="module")
def kafka_sasl_ssl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslSslListener]:
    """A broker of the module's own with a SASL_SSL listener and a SCRAM user, made by scripts/kafka.sh."""
    run_dir = tmp_path_factory.mktemp("kafka-sasl-ssl")
    with started_broker(run_dir, STREAMSSL_KAFKA_SASL_SSL="1") as lines:
        addresses = [line.removeprefix(SASL_SSL_PREFIX) for line in lines if line.startswith(SASL_SSL_PREFIX)]
        if not addresses:
            pytest.fail(f"scripts/kafka.sh start printed no {SASL_SSL_PREFIX} address: {lines}", pytrace=False)
        files = run_dir / "sasl-ssl"
        yield SaslSslListener(
            bootstrap=addresses[-1],
            ca_file=files / "ca.pem",
            username=(files / "username").read_text().strip(),
            password=(files / "password").read_text().strip(),
        )
