"""Every kafka-python error a Kafka bus consumer meets reaches its caller as a BusError (the bus's promise), for
the calls that did not translate them: assignment, seek, pause, resume, close. A stand-in for kafka-python's
consumer raises; this checks our translation, not Kafka's behaviour (tests/test_bus_kafka.py does that)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kafka.errors as kafka_errors
import pytest
from kafka import TopicPartition as KafkaTopicPartition

from ingest.bus import BusError, TopicPartition
from ingest.bus.kafka_bus import KafkaBus, KafkaBusConsumer

PARTITION = TopicPartition("t", 0)


class BrokenConsumer:
    """kafka-python's consumer where every call fails the way it can (its own errors, or an assert)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.assigned = {KafkaTopicPartition("t", 0)}

    def assignment(self) -> set[KafkaTopicPartition]:
        if isinstance(self.error, AssertionError):
            raise self.error
        return self.assigned

    def _fail(self, *args: Any, **kwargs: Any) -> None:
        raise self.error

    seek = pause = resume = close = _fail


CALLS: dict[str, Callable[[KafkaBusConsumer], object]] = {
    "seek": lambda consumer: consumer.seek(PARTITION, 3),
    "pause": lambda consumer: consumer.pause([PARTITION]),
    "resume": lambda consumer: consumer.resume([PARTITION]),
    "close": lambda consumer: consumer.close(),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_kafka_errors_become_bus_errors(call: str) -> None:
    bus = KafkaBus(["127.0.0.1:9"])
    consumer = KafkaBusConsumer(bus, BrokenConsumer(kafka_errors.IllegalStateError("not subscribed")), "g")  # type: ignore[arg-type]
    with pytest.raises(BusError, match="not subscribed"):
        CALLS[call](consumer)


def test_an_assertion_inside_kafka_python_becomes_a_bus_error() -> None:
    consumer = KafkaBusConsumer(KafkaBus(["127.0.0.1:9"]), BrokenConsumer(AssertionError("bad state")), "g")  # type: ignore[arg-type]
    with pytest.raises(BusError, match="bad state"):
        consumer.assignment()
