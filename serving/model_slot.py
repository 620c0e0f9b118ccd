"""The model being served, swapped atomically, with leases so in-flight work finishes on the model it started on.

A request takes a :class:`Lease` on the current model when it arrives and keeps it until its answer is sent; a
reload swaps in the new model in one step under a lock. New requests get the new model at once, while requests that
hold the old one finish on it; the old model is retired (its sessions freed) when its last lease is returned.
Loading happens beside the slot (MLServer's way: load before unload), so serving never pauses.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from serving.errors import ModelNotFoundError, ModelNotReadyError, VersionNotFoundError
from serving.model import LoadedModel

log = logging.getLogger(__name__)


class Lease:
    """A hold on one model; release it exactly once (or use it as a context manager)."""

    def __init__(self, slot: ModelSlot, model: LoadedModel) -> None:
        self._slot = slot
        self.model = model
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._slot._release(self.model)

    def __enter__(self) -> LoadedModel:
        return self.model

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class ModelSlot:
    """Holds the current :class:`LoadedModel` of one model name. Thread-safe."""

    def __init__(self, name: str, on_swap: Callable[[LoadedModel], None] | None = None) -> None:
        self.name = name
        self._current: LoadedModel | None = None
        self._lock = threading.Lock()
        self._on_swap = on_swap
        self._retiring: list[LoadedModel] = []

    @property
    def current(self) -> LoadedModel | None:
        with self._lock:
            return self._current

    @property
    def version(self) -> str | None:
        current = self.current
        return None if current is None else current.version

    def acquire(self, name: str | None = None, version: str | None = None) -> Lease:
        """A lease on the current model; ``name``/``version``, when given, must be what is served (404 if not)."""
        if name is not None and name != self.name:
            raise ModelNotFoundError(f"unknown model {name!r}: this node serves {self.name!r}")
        with self._lock:
            model = self._current
            if model is None:
                raise ModelNotReadyError(f"model {self.name!r} is not loaded yet: no version has loaded successfully")
            if version is not None and version != model.version:
                raise VersionNotFoundError(
                    f"version {version!r} of {self.name!r} is not loaded: this node serves version {model.version}"
                )
            model.leases += 1
            return Lease(self, model)

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Make ``model`` current; return the previous one (retired once its leases are returned)."""
        with self._lock:
            previous, self._current = self._current, model
            if previous is not None:
                if previous.leases:
                    self._retiring.append(previous)
                else:
                    log.info("retired %s (no request in flight)", previous.describe())
        if self._on_swap is not None:
            self._on_swap(model)
        return previous

    def in_flight(self) -> dict[str, int]:
        """Leases held per loaded version (current and retiring)."""
        with self._lock:
            models = [m for m in [self._current, *self._retiring] if m is not None]
            return {m.version: m.leases for m in models}

    def _release(self, model: LoadedModel) -> None:
        with self._lock:
            model.leases -= 1
            if model.leases == 0 and model in self._retiring:
                self._retiring.remove(model)
                log.info("retired %s after its in-flight requests finished", model.describe())
