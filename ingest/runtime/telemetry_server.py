"""A small HTTP endpoint for a service's Prometheus metrics (``/metrics``), liveness (``/healthz``) and readiness
(``/readyz``), served from a background thread with the stdlib WSGI server and prometheus_client's exposition."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger(__name__)

# (ok, detail): detail says why a probe fails, for the operator reading `kubectl describe`.
Probe = Callable[[], tuple[bool, str]]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds would flood the log
        return


class TelemetryServer:
    def __init__(self, port: int, registry: CollectorRegistry, ready: Probe, host: str = "0.0.0.0") -> None:
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/healthz":
                return _json(start_response, 200, {"status": "alive"})
            if path == "/readyz":
                ok, detail = ready()
                return _json(
                    start_response, 200 if ok else 503, {"status": "ready" if ok else "not ready", "detail": detail}
                )
            if path == "/metrics":
                result: Iterable[bytes] = metrics_app(environ, start_response)
                return result
            return _json(start_response, 404, {"error": f"no such endpoint {path!r}; try /metrics, /healthz, /readyz"})

        self._server = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="telemetry", daemon=True)

    def start(self) -> TelemetryServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def serve_telemetry(port: int | None, registry: CollectorRegistry, ready: Probe) -> Iterator[TelemetryServer | None]:
    """A command's ``/metrics``, ``/healthz`` and ``/readyz`` on ``port`` while the block runs (none without a port)."""
    if not port:
        yield None
        return
    telemetry = TelemetryServer(port, registry, ready).start()
    log.info("metrics on :%d/metrics, probes on /healthz and /readyz", telemetry.port)
    try:
        yield telemetry
    finally:
        telemetry.stop()


def _json(start_response: Callable[..., Any], status: int, body: dict[str, Any]) -> list[bytes]:
    reasons = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}
    start_response(f"{status} {reasons[status]}", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]
