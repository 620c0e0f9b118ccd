"""Decode ahead on a thread of its own, so the decoder is fed while the caller converts the last frame.

With frame-threaded decoding FFmpeg's codec threads only work while someone feeds them packets. When one thread
both decodes and converts, the codec threads idle during every conversion (filter graph, JPEG), and at substream
sizes that conversion is a large share of a frame's time. :func:`read_ahead` runs the frame iterator on its own
thread and hands its items over a small bounded queue; PyAV decodes and OpenCV encodes without the GIL, so the two
overlap.

Errors the iterator raises reach the caller in order, after the items before them. Closing the returned iterator
(or leaving its ``for`` loop) stops the thread: it finishes the item it is on, then closes the source iterator on
its own thread (a generator runs its ``finally`` where it runs).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar, cast

T = TypeVar("T")

_DONE = object()
_JOIN_S = 5.0  # a read blocked in the source gives up within its own read timeout; do not hang the caller on it


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(items: Iterator[T], depth: int, name: str = "read-ahead") -> Iterator[T]:
    """``items``, produced on a background thread up to ``depth`` ahead of the caller."""
    # Two C-level SimpleQueues instead of one bounded queue.Queue: the items, and a token per free place in the
    # look-ahead. queue.Queue's Python-level condition variables cost tens of µs per frame, a few % of a substream
    # frame's whole budget.
    handoff: queue.SimpleQueue[object] = queue.SimpleQueue()
    free_places: queue.SimpleQueue[None] = queue.SimpleQueue()
    for _ in range(depth):
        free_places.put(None)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                free_places.get(timeout=0.1)
            except queue.Empty:
                continue
            handoff.put(item)
            return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:  # handed to the caller, who raises it where the item would have been
            put(_Failed(error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            free_places.put(None)
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield cast(T, item)
    finally:
        stop.set()
        thread.join(_JOIN_S)
