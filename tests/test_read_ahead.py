"""ingest/sources/read_ahead.py: items in order, errors where they happened, bounded look-ahead, a clean stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from ingest.sources.read_ahead import read_ahead


class Source:
    """A generator-like source that records how far it was read, where it ran and whether it was closed."""

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.count, self.fail_at = count, fail_at
        self.produced = 0
        self.closed_on: str | None = None
        self.threads: set[str] = set()

    def items(self) -> Iterator[int]:
        try:
            for index in range(self.count):
                self.threads.add(threading.current_thread().name)
                if index == self.fail_at:
                    raise ConnectionError(f"broke at {index}")
                self.produced += 1
                yield index
        finally:
            self.closed_on = threading.current_thread().name


def test_items_arrive_in_order_from_another_thread() -> None:
    source = Source(200)
    assert list(read_ahead(source.items(), depth=3, name="decoder")) == list(range(200))
    assert source.threads == {"decoder"}
    assert source.closed_on == "decoder"


def test_an_error_reaches_the_caller_after_the_items_before_it() -> None:
    source = Source(10, fail_at=4)
    seen: list[int] = []
    with pytest.raises(ConnectionError, match="broke at 4"):
        seen.extend(read_ahead(source.items(), depth=4))  # keeps what came before the error
    assert seen == [0, 1, 2, 3]


def test_an_error_before_the_first_item_is_raised_by_the_first_next() -> None:
    frames = read_ahead(Source(3, fail_at=0).items(), depth=4)
    with pytest.raises(ConnectionError):
        next(frames)


def test_the_source_runs_at_most_depth_ahead_of_a_slow_caller() -> None:
    source = Source(1000)
    frames = read_ahead(source.items(), depth=4)
    assert next(frames) == 0
    time.sleep(0.3)  # time enough for an unbounded producer to read everything
    # One taken, four queued, one more produced and waiting for room.
    assert source.produced <= 1 + 4 + 1, source.produced
    frames.close()


def test_closing_the_caller_stops_and_closes_the_source() -> None:
    source = Source(10_000)
    frames = read_ahead(source.items(), depth=2, name="decoder")
    for item in frames:
        if item == 5:
            break
    frames.close()
    assert source.closed_on == "decoder"
    assert source.produced < 20, "the source kept reading after its caller stopped"
