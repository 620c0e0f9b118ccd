"""The bus that carries windows: ``embedded://NAME`` (in-process) or ``kafka://HOST:PORT[,HOST:PORT]``."""

from __future__ import annotations

from urllib.parse import urlsplit

from ingest.bus.base import (
    Bus,
    BusConsumer,
    BusError,
    BusProducer,
    BusUnavailableError,
    Delivered,
    MessageTooLargeError,
    Record,
    TopicPartition,
    UnknownTopicError,
)
from ingest.bus.kafka_settings import KafkaSettings

__all__ = [
    "Bus",
    "BusConsumer",
    "BusError",
    "BusProducer",
    "BusUnavailableError",
    "Delivered",
    "KafkaSettings",
    "MessageTooLargeError",
    "Record",
    "TopicPartition",
    "UnknownTopicError",
    "open_bus",
    "parse_bus_url",
]


def parse_bus_url(url: str) -> tuple[str, list[str]]:
    """Split a bus URL into its scheme and its addresses (``embedded``: the bus name, default ``default``)."""
    parts = urlsplit(url)
    if parts.scheme == "embedded":
        name = (parts.netloc + parts.path).strip("/") or "default"
        return "embedded", [name]
    if parts.scheme == "kafka":
        servers = [server.strip() for server in parts.netloc.split(",") if server.strip()]
        for server in servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"bad Kafka address {server!r} in bus URL {url!r}: expected HOST:PORT")
        if not servers:
            raise ValueError(f"bus URL {url!r} names no Kafka broker: expected kafka://HOST:PORT[,HOST:PORT]")
        return "kafka", servers
    raise ValueError(f"unknown bus URL {url!r}: expected embedded://[NAME] or kafka://HOST:PORT[,HOST:PORT]")


def open_bus(url: str, kafka: KafkaSettings | None = None) -> Bus:
    """Connect to the bus at ``url``. Kafka settings (security, client id) apply to ``kafka://`` only."""
    scheme, addresses = parse_bus_url(url)
    if scheme == "embedded":
        from ingest.bus.embedded import EmbeddedBus

        return EmbeddedBus(addresses[0])
    from ingest.bus.kafka_bus import KafkaBus

    return KafkaBus(addresses, kafka or KafkaSettings())
