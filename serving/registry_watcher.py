"""Hot reload: poll the registry, load a new version beside the current one, validate it, swap it in.

The watcher follows the ``production`` pointer, or a version pinned by configuration. A version that fails (tampered
checksums, a file onnxruntime cannot load, a failed test inference) is refused, counted and logged once; the current
model keeps serving and the watcher keeps polling (Triton once stopped picking up changes after one failed load).
A refused version is retried only if its files change on disk (an operator repaired it). Rolling the pointer back to
an older version reloads that version: the watcher serves whatever the pointer names.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

from ingest.registry import RegistryError, production_version
from serving.errors import ModelLoadError
from serving.metrics import ServingMetrics
from serving.model_loader import ModelLoader
from serving.model_slot import ModelSlot

log = logging.getLogger(__name__)

_REMEMBERED_FAILURES = 64
Fingerprint = tuple[tuple[str, int, int, int], ...]


def _fingerprint(directory: Path) -> Fingerprint:
    """Names, sizes, modification and status-change times of a version's files: changes if anyone rewrites one or
    changes its mode or owner (an operator making an unreadable file readable repairs the version too)."""
    try:
        stats = [(p.name, p.stat()) for p in directory.iterdir() if p.is_file()]
    except OSError:
        return ()
    return tuple(sorted((name, st.st_size, st.st_mtime_ns, st.st_ctime_ns) for name, st in stats))


class RegistryWatcher:
    """Keeps ``slot`` on the target version of the registry; :meth:`check` is one poll, :meth:`start` polls forever."""

    def __init__(
        self,
        loader: ModelLoader,
        slot: ModelSlot,
        metrics: ServingMetrics,
        *,
        pinned: str | None = None,
        interval_s: float = 10.0,
    ) -> None:
        self.loader = loader
        self.slot = slot
        self.metrics = metrics
        self.pinned = pinned
        self.interval_s = interval_s
        self.last_error: ModelLoadError | None = None
        self._refused: OrderedDict[tuple[str, Fingerprint], str] = OrderedDict()
        self._last_logged: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-watcher", daemon=True)
        self._lock = threading.Lock()  # one check at a time (the thread, or a test calling check())

    def target(self) -> str | None:
        """The version the node should serve: the pinned one, else the production pointer's (None: not set yet)."""
        if self.pinned is not None:
            return self.pinned
        try:
            return production_version(self.loader.registry, self.loader.model)
        except (RegistryError, OSError) as error:  # OSError: a pointer the node may not read
            raise ModelLoadError("registry", f"cannot read the production pointer: {error}") from error

    def check(self) -> bool:
        """Poll once; load, validate and swap in the target version if it is new. True if the model changed."""
        with self._lock:
            try:
                version = self.target()
                if version is None:
                    self._log_once(
                        logging.WARNING,
                        f"no production version of {self.loader.model} in {self.loader.registry} yet; waiting",
                    )
                    return False
                if version == self.slot.version:
                    return False
                key = (version, _fingerprint(self.loader.registry / self.loader.model / version))
                if key in self._refused:
                    return False
                try:
                    model = self.loader.load(version)
                except ModelLoadError as error:
                    self._refused[key] = str(error)
                    while len(self._refused) > _REMEMBERED_FAILURES:
                        self._refused.popitem(last=False)
                    raise
            except ModelLoadError as error:
                self.last_error = error
                current = self.slot.current
                keeps = f"; still serving {current.describe()}" if current else ""
                # Counted and logged once per distinct failure, not once per poll of the same broken version.
                if self._log_once(logging.ERROR, f"refused a model version ({error.reason}): {error}{keeps}"):
                    self.metrics.reloads.labels("failure", error.reason).inc()
                return False
            previous = self.slot.swap(model)
            self.last_error = None
            self._last_logged = None
            self.metrics.reloads.labels("success", "").inc()
            log.info(
                "now serving %s%s",
                model.describe(),
                f" (was version {previous.version}; its in-flight requests finish on it)" if previous else "",
            )
            return True

    def _log_once(self, level: int, message: str) -> bool:
        if message == self._last_logged:
            return False
        log.log(level, message)
        self._last_logged = message
        return True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # keep watching whatever happened: a dead watcher would never reload again
                log.exception("registry poll failed; polling again in %.1f s", self.interval_s)
