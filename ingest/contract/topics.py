"""Topic conventions: default names and the dead-letter topic that goes with every input topic."""

from __future__ import annotations

import re

DEFAULT_WINDOW_TOPIC = "streamssl.windows"
DEFAULT_RESULTS_TOPIC = "streamssl.scores"
DEAD_LETTER_SUFFIX = ".dlq"

# Kafka's own rule for topic names.
_LEGAL_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def validate_topic(name: str) -> str:
    """Return ``name`` if Kafka accepts it as a topic name, else raise ValueError saying why."""
    if not _LEGAL_TOPIC.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"invalid topic name {name!r}: use 1–249 characters from letters, digits, '.', '_' and '-'")
    return name


def dead_letter_topic(topic: str) -> str:
    """Where consumers of ``topic`` park messages they cannot read, with the reason in a header."""
    return validate_topic(topic + DEAD_LETTER_SUFFIX)
