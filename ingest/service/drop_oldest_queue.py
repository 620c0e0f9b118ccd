"""A bounded queue that, when full, drops its oldest item to admit a new one: fresh windows beat stale ones."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, item: T) -> T | None:
        """Add ``item``; return the oldest item if it had to be dropped to make room, else None."""
        with self._ready:
            dropped = self._items.popleft() if len(self._items) >= self.capacity else None
            self._items.append(item)
            self._ready.notify()
            return dropped

    def get(self, timeout_s: float) -> T | None:
        """The oldest item, waiting up to ``timeout_s``; None on timeout or once closed and empty."""
        with self._ready:
            if not self._items and not self._closed:
                self._ready.wait(timeout_s)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        """No more puts are expected; getters drain what is left, then get None at once."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)
