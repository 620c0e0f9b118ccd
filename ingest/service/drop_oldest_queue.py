"""A bounded queue between a camera's decoder and its publisher.

For a live camera, a full queue drops its oldest item to admit the new one: fresh windows beat stale ones, and the
camera will not wait for us. For a file read as fast as possible nothing is stale, so the decoder waits instead
(:meth:`DropOldestQueue.put_waiting`): back-pressure, no loss.
"""

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

    def put_waiting(self, item: T, cancelled: threading.Event, poll_s: float = 0.1) -> bool:
        """Add ``item`` once there is room; give up (False) if ``cancelled`` is set or the queue closes first."""
        with self._ready:
            while len(self._items) >= self.capacity:
                if cancelled.is_set() or self._closed:
                    return False
                self._ready.wait(poll_s)
            self._items.append(item)
            self._ready.notify_all()
            return True

    def get(self, timeout_s: float) -> T | None:
        """The oldest item, waiting up to ``timeout_s``; None on timeout or once closed and empty."""
        with self._ready:
            if not self._items and not self._closed:
                self._ready.wait(timeout_s)
            item = self._items.popleft() if self._items else None
            self._ready.notify_all()  # a producer may be waiting for room
            return item

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
