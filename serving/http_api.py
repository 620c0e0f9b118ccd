"""The HTTP API (FastAPI): Open Inference Protocol v2 endpoints, embedding and scoring conveniences, /metrics.

Handlers read raw bodies and parse them with orjson (:mod:`serving.tensors`), and all inference runs on the batcher's
worker thread: the event loop only moves bytes, so concurrency turns into batches rather than a queue behind the
loop. Every error is ``{"error": "..."}`` with the status :mod:`serving.errors` assigns.

Routes (``{name}`` is the registry model name; the frame encoder answers ``infer``):

* ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready`` — server metadata and probes (never need a token).
* ``GET /v2/models/{name}[/versions/{v}]``, ``.../ready`` — model metadata and readiness.
* ``POST /v2/models/{name}[/versions/{v}]/infer`` — OIP inference: UINT8 ``[N, H, W, C]`` → FP32 ``[N, D]``.
* ``POST /v2/models/{name}/embed/image`` — a JPEG/PNG body → its embedding.
* ``POST /v2/models/{name}/embed/window`` — a window (StreamSSL wire format) → frame and clip embeddings.
* ``POST /v2/models/{name}/score/window`` — a window → its anomaly score (updates the camera's statistics).
* ``GET /metrics`` — Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.contract import Window
from serving import protocol
from serving.anomaly import ScoreNormaliser
from serving.batcher import Batcher
from serving.errors import BodyTooLargeError, ServingError, UnauthorizedError, status_for
from serving.images import decode_image
from serving.metrics import ServingMetrics
from serving.model import LoadedModel, WindowOutputs
from serving.model_slot import ModelSlot
from serving.tensors import (
    HEADER_LENGTH,
    dumps,
    encode_tensor,
    header_length,
    infer_response_body,
    parse_infer_request,
    tensor_metadata,
)
from serving.windows import decode_window_body, score_window, window_embedding, window_frames

log = logging.getLogger(__name__)

SERVER_NAME = "streamssl-serve"
SERVER_VERSION = "0.1.0"
PLATFORM = "onnxruntime_onnx"
WINDOW_MEDIA_TYPE = "application/x-streamssl-window"
_OPEN_PATHS = ("/v2/health/", "/openapi.json", "/docs")


@dataclass(frozen=True)
class ApiContext:
    """What the HTTP layer needs from the node."""

    slot: ModelSlot
    batcher: Batcher
    normaliser: ScoreNormaliser
    metrics: ServingMetrics
    ready: Callable[[], tuple[bool, str]]
    token: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": message}, status, headers)


class BodyLimitMiddleware:
    """413 for bodies over the limit: at once from Content-Length, or as soon as a streamed body passes it."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = _error(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLargeError(f"request body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


class MetricsMiddleware:
    """Counts requests by route template and status, times them, and tracks how many are in flight."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self._routes = routes
        self._paths: dict[Any, str] | None = None

    def _endpoint(self, scope: Scope) -> str:
        """The matched route's template (``/v2/models/{name}/infer``), never the raw path: bounded label values."""
        if self._paths is None:  # routes are complete once the app serves
            self._paths = {getattr(r, "endpoint", None): r.path for r in self._routes if isinstance(r, Route)}
        return self._paths.get(scope.get("endpoint"), "unmatched")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.in_flight.dec()
            endpoint = self._endpoint(scope)
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_duration.labels(endpoint).observe(time.perf_counter() - started)


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="StreamSSL serving node",
        version=SERVER_VERSION,
        description="Embeddings and anomaly scores from the StreamSSL encoders (Open Inference Protocol v2).",
        redoc_url=None,
    )
    bearer = HTTPBearer(auto_error=False, description="the token of --token-file")

    async def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if ctx.token is None:
            return
        if credentials is None:
            raise UnauthorizedError("this endpoint needs 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(credentials.credentials.encode(), ctx.token.encode()):
            raise UnauthorizedError("the bearer token is wrong")

    guarded = [Depends(require_token)] if ctx.token is not None else []
    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": protocol.ErrorResponse, "description": text}
        for status, text in (
            (400, "bad input"),
            (401, "missing or wrong bearer token"),
            (404, "unknown model or version"),
            (413, "body too large"),
            (503, "no model loaded yet, or the queue is full (see Retry-After)"),
        )
    }

    async def handle_serving_error(_request: Request, error: Exception) -> Response:
        assert isinstance(error, ServingError)
        return _error(error.status, error.message, error.headers)

    async def handle_http_error(_request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        message = str(error.detail)
        if error.status_code == 404:
            message = "no such endpoint; see /docs for the API"
        return _error(error.status_code, message, dict(error.headers or {}))

    async def handle_validation_error(_request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        return _error(400, f"invalid request: {problems}")

    async def handle_unexpected(_request: Request, error: Exception) -> Response:
        log.error("unhandled error in a request", exc_info=error)
        return _error(status_for(error), f"internal error: {type(error).__name__}")

    app.add_exception_handler(ServingError, handle_serving_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(Exception, handle_unexpected)

    # --- probes and server metadata ---------------------------------------------------------------------------
    @app.get("/v2", response_model=protocol.ServerMetadata, tags=["server"])
    async def server_metadata() -> Response:
        return _json({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": ["binary_tensor_data"]})

    @app.get("/v2/health/live", response_model=protocol.ServerLive, tags=["health"])
    async def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready", response_model=protocol.ServerReady, tags=["health"], responses={503: {}})
    async def ready() -> Response:
        ok, detail = ctx.ready()
        return _json({"ready": ok, "detail": detail}, 200 if ok else 503)

    # --- model metadata and readiness -------------------------------------------------------------------------
    def model_metadata(name: str, version: str | None) -> Response:
        with ctx.slot.acquire(name, version) as model:
            frame_encoder = model.files["frame_encoder"]
            return _json(
                {
                    "name": model.name,
                    "versions": [model.version],
                    "platform": PLATFORM,
                    "inputs": [tensor_metadata(spec) for spec in frame_encoder.inputs],
                    "outputs": [tensor_metadata(spec) for spec in frame_encoder.outputs],
                }
            )

    def model_ready(name: str, version: str | None) -> Response:
        with ctx.slot.acquire(name, version):
            return _json({"name": name, "ready": True})

    @app.get(
        "/v2/models/{name}",
        response_model=protocol.ModelMetadataResponse,
        tags=["models"],
        dependencies=guarded,
        responses=errors,
    )
    async def get_model(name: str) -> Response:
        return model_metadata(name, None)

    @app.get(
        "/v2/models/{name}/versions/{version}",
        response_model=protocol.ModelMetadataResponse,
        tags=["models"],
        dependencies=guarded,
        responses=errors,
    )
    async def get_model_version(name: str, version: str) -> Response:
        return model_metadata(name, version)

    @app.get(
        "/v2/models/{name}/ready",
        response_model=protocol.ModelReady,
        tags=["models"],
        dependencies=guarded,
        responses=errors,
    )
    async def get_model_ready(name: str) -> Response:
        return model_ready(name, None)

    @app.get(
        "/v2/models/{name}/versions/{version}/ready",
        response_model=protocol.ModelReady,
        tags=["models"],
        dependencies=guarded,
        responses=errors,
    )
    async def get_model_version_ready(name: str, version: str) -> Response:
        return model_ready(name, version)

    # --- inference --------------------------------------------------------------------------------------------
    @contextmanager
    def arriving() -> Iterator[None]:
        """Tell the batcher a request is being read and parsed, so a batch may wait for it."""
        ctx.batcher.announce()
        try:
            yield
        finally:
            ctx.batcher.withdraw()

    async def infer(request: Request, name: str, version: str | None) -> Response:
        with ctx.slot.acquire(name, version) as model:
            output = model.frame_output
            with arriving():
                body = await request.body()
                json_length = header_length(request.headers.get(HEADER_LENGTH), len(body))
                parsed = parse_infer_request(body, model.frame_input, [output.name], json_length)
                future = ctx.batcher.submit_frames(model, parsed.tensor)
            embeddings = await asyncio.wrap_future(future)
            outputs = [encode_tensor(output.name, embeddings)]
            if parsed.outputs is not None:  # the client named the outputs it wants
                outputs = [tensor for tensor in outputs if tensor["name"] in parsed.outputs]
            payload: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
        if parsed.request_id is not None:
            payload["id"] = parsed.request_id
        content, binary_json_length = infer_response_body(payload, outputs, parsed.binary_outputs)
        if binary_json_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(binary_json_length)},
        )

    infer_body = _infer_body(protocol.InferRequest)

    @app.post(
        "/v2/models/{name}/infer",
        response_model=protocol.InferResponse,
        tags=["inference"],
        dependencies=guarded,
        responses=errors,
        openapi_extra=infer_body,
    )
    async def post_infer(name: str, request: Request) -> Response:
        return await infer(request, name, None)

    @app.post(
        "/v2/models/{name}/versions/{version}/infer",
        response_model=protocol.InferResponse,
        tags=["inference"],
        dependencies=guarded,
        responses=errors,
        openapi_extra=infer_body,
    )
    async def post_infer_version(name: str, version: str, request: Request) -> Response:
        return await infer(request, name, version)

    @app.post(
        "/v2/models/{name}/embed/image",
        response_model=protocol.ImageEmbedding,
        tags=["embeddings"],
        dependencies=guarded,
        responses=errors,
        openapi_extra=_binary_body("image/jpeg", "image/png"),
    )
    async def embed_image(name: str, request: Request) -> Response:
        with ctx.slot.acquire(name) as model:
            height, width, channels = model.frame_shape
            with arriving():
                body = await request.body()
                image, original = await run_in_threadpool(decode_image, body, height, width, channels)
                future = ctx.batcher.submit_frames(model, image[None])
            embeddings = await asyncio.wrap_future(future)
        return _json(
            {
                "model_name": model.name,
                "model_version": model.version,
                "embedding": embeddings[0],
                "resized_from": None if original == (height, width) else list(original),
            }
        )

    async def run_window(request: Request, name: str) -> tuple[LoadedModel, Window, WindowOutputs]:
        with ctx.slot.acquire(name) as model:
            with arriving():
                window = await run_in_threadpool(decode_window_body, await request.body())
                future = ctx.batcher.submit_windows(model, window_frames(model, window))
            outputs = await asyncio.wrap_future(future)
        return model, window, outputs

    @app.post(
        "/v2/models/{name}/embed/window",
        response_model=protocol.WindowEmbedding,
        tags=["embeddings"],
        dependencies=guarded,
        responses=errors,
        openapi_extra=_binary_body(WINDOW_MEDIA_TYPE, "application/octet-stream"),
    )
    async def embed_window(name: str, request: Request) -> Response:
        return _json(window_embedding(*await run_window(request, name)))

    @app.post(
        "/v2/models/{name}/score/window",
        response_model=protocol.WindowScore,
        tags=["anomaly"],
        dependencies=guarded,
        responses=errors,
        openapi_extra=_binary_body(WINDOW_MEDIA_TYPE, "application/octet-stream"),
    )
    async def score(name: str, request: Request) -> Response:
        model, window, outputs = await run_window(request, name)
        return _json(score_window(model, window, outputs, ctx.normaliser))

    @app.get("/metrics", tags=["server"], dependencies=guarded, response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        # The request models are not handler parameters (bodies are parsed by orjson), so add them to the
        # components that openapi_extra refers to.
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            request_schema = protocol.InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(request_schema.pop("$defs", {}))
            components["InferRequest"] = request_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=ctx.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=ctx.metrics, routes=app.routes)
    return app


def _infer_body(model: type[BaseModel]) -> dict[str, Any]:
    """JSON, or (binary tensor data extension) JSON followed by tensor bytes, its length in a header."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    binary = {"schema": {"type": "string", "format": "binary"}}
    header = {
        "name": HEADER_LENGTH,
        "in": "header",
        "required": False,
        "description": "binary tensor data extension: length of the JSON part of the body; tensor bytes follow",
        "schema": {"type": "integer", "minimum": 1},
    }
    return {
        "parameters": [header],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}, "application/octet-stream": binary},
        },
    }


def _binary_body(*media_types: str) -> dict[str, Any]:
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": dict.fromkeys(media_types, binary)}}
