"""Errors over HTTP: every failure of a request becomes ``{"error": "..."}`` with the status :mod:`serving.errors`
assigns, declared once here for the app (:data:`EXCEPTION_HANDLERS`) and for the OpenAPI document
(:data:`ERROR_RESPONSES`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving import protocol
from serving.errors import ServingError, status_for
from serving.tensors import dumps

log = logging.getLogger(__name__)

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(payload), status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


async def _serving_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, ServingError)
    return error_response(error.status, error.message, error.headers)


async def _http_error(_request: Request, error: Exception) -> Response:
    """Starlette's own errors (no route, wrong method), with a pointer to the docs instead of a bare 404."""
    assert isinstance(error, StarletteHTTPException)
    message = str(error.detail)
    if error.status_code == 404:
        message = "no such endpoint; see /docs for the API"
    return error_response(error.status_code, message, dict(error.headers or {}))


async def _validation_error(_request: Request, error: Exception) -> Response:
    """FastAPI's 422 for a parameter that does not validate, as the 400 every other bad input gets."""
    assert isinstance(error, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
    return error_response(400, f"invalid request: {problems}")


async def _unexpected(_request: Request, error: Exception) -> Response:
    log.error("unhandled error in a request", exc_info=error)
    return error_response(status_for(error), f"internal error: {type(error).__name__}")


# Error type → handler. ``Exception`` is served by Starlette's outermost error middleware, the rest by its
# exception middleware, so a handler here never sees an error another one handles.
EXCEPTION_HANDLERS: dict[type[Exception], ExceptionHandler] = {
    ServingError: _serving_error,
    StarletteHTTPException: _http_error,
    RequestValidationError: _validation_error,
    Exception: _unexpected,
}

# The error statuses a model endpoint can answer, for the OpenAPI document.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": protocol.ErrorResponse, "description": text}
    for status, text in (
        (400, "bad input"),
        (401, "missing or wrong bearer token"),
        (404, "unknown model or version"),
        (413, "body too large"),
        (503, "no model loaded yet, or the queue is full (see Retry-After)"),
    )
}
