"""scripts/kafka.sh: start, status and stop of a development broker, each in its own run directory."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.kafka_broker import START_TIMEOUT_S, STOP_TIMEOUT_S, kafka_sh, tail

STATUS_NOT_RUNNING = 3


def test_unknown_command_prints_usage(tmp_path: Path) -> None:
    result = kafka_sh("restart", tmp_path, 30)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_status_and_stop_without_a_broker(tmp_path: Path) -> None:
    status = kafka_sh("status", tmp_path, 30)
    assert status.returncode == STATUS_NOT_RUNNING
    assert status.stdout == ""
    assert "no broker running" in status.stderr

    stopped = kafka_sh("stop", tmp_path, 30)
    assert stopped.returncode == 0, stopped.stderr


def test_a_broker_that_cannot_start_is_reported_and_left_stopped(tmp_path: Path) -> None:
    result = kafka_sh("start", tmp_path, START_TIMEOUT_S, JAVA_OPTS="-XX:+StreamSSLNoSuchOption")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "failed" in result.stderr
    assert "StreamSSLNoSuchOption" in result.stderr, "the log tail with the JVM's complaint is missing"
    assert not (tmp_path / "pid").exists()
    assert kafka_sh("status", tmp_path, 30).returncode == STATUS_NOT_RUNNING


@pytest.mark.kafka
def test_start_is_idempotent_and_stop_stops(tmp_path: Path) -> None:
    first = kafka_sh("start", tmp_path, START_TIMEOUT_S)
    try:
        assert first.returncode == 0, tail(first.stderr)
        address = first.stdout.strip().splitlines()[-1]
        host, _, port = address.rpartition(":")
        assert host == "127.0.0.1"
        assert port.isdigit()
        with socket.create_connection((host, int(port)), timeout=5):
            pass

        again = kafka_sh("start", tmp_path, START_TIMEOUT_S)
        assert again.returncode == 0, tail(again.stderr)
        assert again.stdout.strip().splitlines()[-1] == address
        assert "already running" in again.stderr

        status = kafka_sh("status", tmp_path, 30)
        assert status.returncode == 0, status.stderr
        assert status.stdout.strip() == address
        for name in ("server.properties", "broker.log", "pid", "port"):
            assert (tmp_path / name).is_file(), f"{name} missing from the run directory"
    finally:
        stopped = kafka_sh("stop", tmp_path, STOP_TIMEOUT_S)
    assert stopped.returncode == 0, stopped.stderr
    assert not (tmp_path / "pid").exists()
    assert kafka_sh("status", tmp_path, 30).returncode == STATUS_NOT_RUNNING
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", int(port)), timeout=5):
        pass
    assert kafka_sh("stop", tmp_path, 30).returncode == 0, "stop of a stopped broker must succeed"
