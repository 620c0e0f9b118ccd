"""The real Apache Kafka broker for tests marked ``kafka``: one per test session, started by scripts/kafka.sh.

Not a test module: tests/conftest.py imports :func:`kafka_bootstrap` from here. The broker runs in a fresh run
directory under pytest's tmp_path, so it is independent of any broker a developer runs, and is stopped when the
session ends. A broker that cannot start fails the tests that need it, with the script's own explanation; it never
skips them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bootstrap address ``127.0.0.1:PORT`` of a broker started for this session."""
    run_dir = tmp_path_factory.mktemp("kafka")
    try:
        started = kafka_sh("start", run_dir, START_TIMEOUT_S)
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
        yield started.stdout.strip().splitlines()[-1]
    finally:
        kafka_sh("stop", run_dir, STOP_TIMEOUT_S)
