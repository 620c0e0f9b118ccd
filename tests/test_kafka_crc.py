"""kafka-python checksums every record batch with CRC-32C; the ``crc32c`` package does it in C. Without it the pure
Python fallback costs ~18 ms of CPU per 60 KB window on each send and fetch, so the dependency is checked here and a
bus built without it says so once."""

from __future__ import annotations

import logging

import pytest
from kafka.record import util as kafka_record_util
from kafka.record._crc32c import crc as pure_python_crc32c

import ingest.bus.kafka_bus as kafka_bus
from ingest.bus.kafka_bus import KafkaBus, native_crc32c


def test_kafka_python_checksums_in_c_with_the_same_result() -> None:
    assert native_crc32c(), "the crc32c package is missing: it is in the ingest and serving extras of pyproject.toml"
    data = memoryview(bytes(range(256)) * 300)
    assert kafka_record_util.calc_crc32c(data) == pure_python_crc32c(data)


def test_a_bus_without_it_warns_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(kafka_record_util, "crc32c_c", None)
    monkeypatch.setattr(kafka_bus, "_crc_warned", False)
    with caplog.at_level(logging.WARNING, logger="ingest.bus.kafka_bus"):
        KafkaBus(["127.0.0.1:9"])  # connects lazily: nothing is opened here
        KafkaBus(["127.0.0.1:9"])
    warnings = [record.getMessage() for record in caplog.records if "pip install crc32c" in record.getMessage()]
    assert len(warnings) == 1, caplog.text
