"""The serving error family, and the one place that maps each error to its HTTP status (as KServe's errors do).

Handlers raise these; :mod:`serving.http_api` turns any of them into ``{"error": message}`` with the status below.
Every problem with a client's input is a 4xx whose message says what was wrong; a 5xx means the node itself is not
able to answer (not ready, overloaded) or a bug.
"""

from __future__ import annotations


class ServingError(Exception):
    """Root of the serving errors. ``status`` is the HTTP status; ``headers`` go with the response."""

    status = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidInputError(ServingError):
    """The request is malformed: bad JSON, wrong tensor name, shape, datatype or length, undecodable image or
    window, a window that does not fit the model."""

    status = 400


class UnauthorizedError(ServingError):
    """No bearer token, or the wrong one, on an endpoint that needs it."""

    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, {"WWW-Authenticate": 'Bearer realm="streamssl-serve"'})


class ModelNotFoundError(ServingError):
    """The request names a model this node does not serve."""

    status = 404


class VersionNotFoundError(ServingError):
    """The request names a version of the model that is not the one loaded."""

    status = 404


class BodyTooLargeError(ServingError):
    """The request body exceeds ``--max-body-bytes``."""

    status = 413


class ModelNotReadyError(ServingError):
    """No model is loaded yet (no production version published, or the first load is still running)."""

    status = 503

    def __init__(self, message: str) -> None:
        super().__init__(message, {"Retry-After": "5"})


class QueueFullError(ServingError):
    """The batching queue is full: the client should back off and retry."""

    status = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, {"Retry-After": str(retry_after_s)})


class ModelLoadError(Exception):
    """A registry version could not be turned into a serving model; ``reason`` is a metric label.

    Reasons: ``registry`` (pointer unreadable, version missing), ``verify`` (checksums or metadata), ``session``
    (onnxruntime cannot load a file), ``validation`` (inputs, outputs or the test inference disagree with the
    metadata).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def status_for(error: BaseException) -> int:
    """The HTTP status for ``error``: its own for serving errors, 500 (a bug) for anything else."""
    return error.status if isinstance(error, ServingError) else 500
