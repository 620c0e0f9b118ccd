"""uvicorn on a background thread, so the main thread stays free for signals and the node's shutdown order.

uvicorn installs signal handlers only on the main thread; here the node owns SIGTERM and stops the server itself.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time

import uvicorn
from fastapi import FastAPI

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class HttpServer:
    def __init__(self, app: FastAPI, host: str, port: int, graceful_timeout_s: float = 30.0) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            # httptools and uvloop when installed (uvicorn[standard]): C parsers and loop, less CPU per request.
            loop="uvloop" if _have("uvloop") else "asyncio",
            http="httptools" if _have("httptools") else "h11",
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=int(graceful_timeout_s),
            # Room for a burst of clients beyond the batching queue; those get 503 from the handler, not a reset.
            backlog=2048,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)
        self.host = host
        self.port = port

    def start(self) -> HttpServer:
        """Start listening; raise OSError if the server does not come up (port taken, bad address)."""
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive():
                raise OSError(f"the HTTP server could not listen on {self.host}:{self.port} (see the log above)")
            if time.monotonic() > deadline:
                raise OSError(f"the HTTP server did not start within {_START_TIMEOUT_S:.0f} s")
            time.sleep(0.01)
        sockets = [sock for server in self._server.servers for sock in server.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("HTTP API on %s:%d (OpenAPI at /docs, metrics at /metrics)", self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop accepting connections, let in-flight requests finish (up to the graceful timeout), return."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join()
