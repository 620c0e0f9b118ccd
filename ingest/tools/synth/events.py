"""Labelled anomaly events: kinds, specs, the ``KIND@START[:DURATION]`` syntax and the default schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

EventKind = Literal["wrong_way", "stalled", "jam"]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)

# Used by ``parse_event`` when the text gives no duration.
DEFAULT_DURATION_S: dict[EventKind, float] = {"wrong_way": 6.0, "stalled": 10.0, "jam": 8.0}

# Clips shorter than this get no default events: there is no room to show one and recover.
MIN_SECONDS_FOR_DEFAULT_EVENTS = 6.0


@dataclass(frozen=True)
class EventSpec:
    """One injected event: ``kind`` is active for ``start_s <= t < start_s + duration_s``."""

    kind: EventKind
    start_s: float
    duration_s: float

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}; expected one of {', '.join(EVENT_KINDS)}")
        if not math.isfinite(self.start_s) or self.start_s < 0:
            raise ValueError(f"{self.kind} event: start_s must be a finite number >= 0, got {self.start_s!r}")
        if not math.isfinite(self.duration_s) or self.duration_s <= 0:
            raise ValueError(f"{self.kind} event: duration_s must be a finite number > 0, got {self.duration_s!r}")

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


def _number(text: str, what: str, source: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"bad event {source!r}: {what} {text!r} is not a number of seconds") from None
    if not math.isfinite(value):
        raise ValueError(f"bad event {source!r}: {what} must be finite, got {text!r}")
    return value


def parse_event(text: str) -> EventSpec:
    """Parse ``KIND@START[:DURATION]`` (seconds), e.g. ``"wrong_way@12.5:6"``.

    ``-`` is accepted for ``_`` in the kind (``wrong-way``). Without a duration the kind's default from
    ``DEFAULT_DURATION_S`` is used. Raises ``ValueError`` with a message naming the problem.
    """
    source = text.strip()
    kind_text, at, when = source.partition("@")
    if not at or not kind_text.strip() or not when.strip():
        raise ValueError(
            f"bad event {text!r}: expected KIND@START[:DURATION], e.g. 'wrong_way@12.5:6' "
            f"(kinds: {', '.join(EVENT_KINDS)})"
        )
    kind_name = kind_text.strip().lower().replace("-", "_")
    if kind_name not in EVENT_KINDS:
        raise ValueError(
            f"bad event {text!r}: unknown kind {kind_text.strip()!r}; expected one of {', '.join(EVENT_KINDS)}"
        )
    kind: EventKind = kind_name
    start_text, colon, duration_text = when.partition(":")
    start = _number(start_text.strip(), "start", source)
    if start < 0:
        raise ValueError(f"bad event {text!r}: start must be >= 0 seconds, got {start}")
    if colon:
        duration = _number(duration_text.strip(), "duration", source)
        if duration <= 0:
            raise ValueError(f"bad event {text!r}: duration must be > 0 seconds, got {duration}")
    else:
        duration = DEFAULT_DURATION_S[kind]
    return EventSpec(kind=kind, start_s=start, duration_s=duration)


def default_events(seconds: float) -> tuple[EventSpec, ...]:
    """Each kind once, spread over the clip and scaled to its length; ``()`` for clips under 6 s.

    For 60 s: wrong_way@12:6, stalled@25.2:9, jam@39:8 — all well before the night part of the clip.
    """
    if not math.isfinite(seconds) or seconds < MIN_SECONDS_FOR_DEFAULT_EVENTS:
        return ()
    plan: tuple[tuple[EventKind, float, float], ...] = (
        ("wrong_way", 0.20, 0.10),
        ("stalled", 0.42, 0.15),
        ("jam", 0.65, 0.15),
    )
    events = []
    for kind, start_frac, duration_frac in plan:
        start = round(start_frac * seconds, 1)
        duration = round(min(DEFAULT_DURATION_S[kind], duration_frac * seconds), 1)
        events.append(EventSpec(kind=kind, start_s=start, duration_s=duration))
    return tuple(events)
