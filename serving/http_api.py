"""The HTTP API (FastAPI): Open Inference Protocol v2 endpoints, embedding and scoring conveniences, /metrics.

Handlers read raw bodies and parse them with orjson (:mod:`serving.tensors`), and all inference runs on the batcher's
worker thread: the event loop only moves bytes, so concurrency turns into batches rather than a queue behind the
loop. Every error is ``{"error": "..."}`` with the status :mod:`serving.errors` assigns, by :mod:`serving.http_errors`.

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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.contract import Window
from serving import protocol
from serving.anomaly import ScoreNormaliser
from serving.batcher import Batcher
from serving.errors import BodyTooLargeError, UnauthorizedError
from serving.http_errors import ERROR_RESPONSES, EXCEPTION_HANDLERS, error_response, json_response
from serving.images import decode_image
from serving.metrics import ServingMetrics
from serving.model import LoadedModel, WindowOutputs
from serving.model_slot import ModelSlot
from serving.tensors import (
    HEADER_LENGTH,
    encode_tensor,
    header_length,
    infer_response_body,
    parse_infer_request,
    tensor_metadata,
)
from serving.windows import decode_window_body, score_window, window_embedding, window_frames

SERVER_NAME = "streamssl-serve"
SERVER_VERSION = "0.1.0"
PLATFORM = "onnxruntime_onnx"
WINDOW_MEDIA_TYPE = "application/x-streamssl-window"
MODEL_PATH = "/v2/models/{name}"
_BEARER = HTTPBearer(auto_error=False, description="the token of --token-file")


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
            response = error_response(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
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
        route = scope.get("route")  # FastAPI's routes leave themselves: a path and its versioned twin share a handler
        if isinstance(route, Route):
            return route.path
        if self._paths is None:  # Starlette's (/docs, /openapi.json) leave only their handler; complete once serving
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


async def _declare_version(version: str) -> None:
    """Declares (and validates) ``{version}`` on the versioned paths, for the OpenAPI document; the handlers read
    it through :data:`PathVersion`."""


async def _path_version(request: Request) -> str | None:
    return request.path_params.get("version")


# The ``{version}`` of a versioned path, None on its unversioned twin. Read from the path only: a plain
# ``version: str | None = None`` parameter would also accept ``?version=`` on the unversioned path (and declare it).
PathVersion = Annotated[str | None, Depends(_path_version)]


class ServingApi:
    """The KServe v2 handlers over the node's :class:`ApiContext`, one method per operation, and their routes.

    Handlers raise :class:`~serving.errors.ServingError`; :mod:`serving.http_errors` turns errors into responses.
    """

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        # Without a token the routes carry no security requirement at all (nor does the OpenAPI document).
        self.guard = [Depends(self.require_token)] if ctx.token is not None else []

    async def require_token(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
    ) -> None:
        if self.ctx.token is None:
            return
        if credentials is None:
            raise UnauthorizedError("this endpoint needs 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(credentials.credentials.encode(), self.ctx.token.encode()):
            raise UnauthorizedError("the bearer token is wrong")

    def routers(self) -> list[APIRouter]:
        """The routes, in the order of the OpenAPI document: probes (open), model endpoints, /metrics."""
        probes = APIRouter()
        probes.add_api_route("/v2", self.server_metadata, response_model=protocol.ServerMetadata, tags=["server"])
        probes.add_api_route("/v2/health/live", self.live, response_model=protocol.ServerLive, tags=["health"])
        probes.add_api_route(
            "/v2/health/ready", self.ready, response_model=protocol.ServerReady, tags=["health"], responses={503: {}}
        )
        models = APIRouter(dependencies=self.guard, responses=ERROR_RESPONSES)
        _add_versioned(
            models, "", self.model_metadata, ("get_model", "get_model_version"),
            response_model=protocol.ModelMetadataResponse, tags=["models"],
        )  # fmt: skip
        _add_versioned(
            models, "/ready", self.model_ready, ("get_model_ready", "get_model_version_ready"),
            response_model=protocol.ModelReady, tags=["models"],
        )  # fmt: skip
        _add_versioned(
            models, "/infer", self.infer, ("post_infer", "post_infer_version"), methods=["POST"],
            response_model=protocol.InferResponse, tags=["inference"], openapi_extra=_infer_body(protocol.InferRequest),
        )  # fmt: skip
        image_body = _binary_body("image/jpeg", "image/png")
        window_body = _binary_body(WINDOW_MEDIA_TYPE, "application/octet-stream")
        for suffix, endpoint, response, tag, body in (
            ("/embed/image", self.embed_image, protocol.ImageEmbedding, "embeddings", image_body),
            ("/embed/window", self.embed_window, protocol.WindowEmbedding, "embeddings", window_body),
            ("/score/window", self.score, protocol.WindowScore, "anomaly", window_body),
        ):
            models.add_api_route(
                MODEL_PATH + suffix, endpoint, methods=["POST"], response_model=response, tags=[tag], openapi_extra=body
            )
        server = APIRouter(dependencies=self.guard)
        server.add_api_route("/metrics", self.metrics, tags=["server"], response_class=Response)
        return [probes, models, server]

    # --- probes and server metadata ---------------------------------------------------------------------------
    async def server_metadata(self) -> Response:
        return json_response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": ["binary_tensor_data"]})

    async def live(self) -> Response:
        return json_response({"live": True})

    async def ready(self) -> Response:
        ok, detail = self.ctx.ready()
        return json_response({"ready": ok, "detail": detail}, 200 if ok else 503)

    async def metrics(self) -> Response:
        return Response(generate_latest(self.ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # --- model metadata and readiness -------------------------------------------------------------------------
    async def model_metadata(self, name: str, version: PathVersion = None) -> Response:
        with self.ctx.slot.acquire(name, version) as model:
            frame_encoder = model.files["frame_encoder"]
            return json_response(
                {
                    "name": model.name,
                    "versions": [model.version],
                    "platform": PLATFORM,
                    "inputs": [tensor_metadata(spec) for spec in frame_encoder.inputs],
                    "outputs": [tensor_metadata(spec) for spec in frame_encoder.outputs],
                }
            )

    async def model_ready(self, name: str, version: PathVersion = None) -> Response:
        with self.ctx.slot.acquire(name, version):
            return json_response({"name": name, "ready": True})

    # --- inference --------------------------------------------------------------------------------------------
    async def infer(self, name: str, request: Request, version: PathVersion = None) -> Response:
        with self.ctx.slot.acquire(name, version) as model:
            output = model.frame_output
            with self._arriving():
                body = await request.body()
                json_length = header_length(request.headers.get(HEADER_LENGTH), len(body))
                parsed = parse_infer_request(body, model.frame_input, [output.name], json_length)
                future = self.ctx.batcher.submit_frames(model, parsed.tensor)
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

    async def embed_image(self, name: str, request: Request) -> Response:
        with self.ctx.slot.acquire(name) as model:
            height, width, channels = model.frame_shape
            with self._arriving():
                body = await request.body()
                image, original = await run_in_threadpool(decode_image, body, height, width, channels)
                future = self.ctx.batcher.submit_frames(model, image[None])
            embeddings = await asyncio.wrap_future(future)
        return json_response(
            {
                "model_name": model.name,
                "model_version": model.version,
                "embedding": embeddings[0],
                "resized_from": None if original == (height, width) else list(original),
            }
        )

    async def embed_window(self, name: str, request: Request) -> Response:
        return json_response(window_embedding(*await self._run_window(request, name)))

    async def score(self, name: str, request: Request) -> Response:
        model, window, outputs = await self._run_window(request, name)
        # The scene memory costs milliseconds of CPU per window: off the event loop, which serves every request.
        result = await run_in_threadpool(score_window, model, window, outputs, self.ctx.normaliser, self.ctx.metrics)
        return json_response(result)

    async def _run_window(self, request: Request, name: str) -> tuple[LoadedModel, Window, WindowOutputs]:
        with self.ctx.slot.acquire(name) as model:
            with self._arriving():
                window = await run_in_threadpool(decode_window_body, await request.body())
                future = self.ctx.batcher.submit_windows(model, window_frames(model, window))
            outputs = await asyncio.wrap_future(future)
        return model, window, outputs

    @contextmanager
    def _arriving(self) -> Iterator[None]:
        """Tell the batcher a request is being read and parsed, so a batch may wait for it."""
        self.ctx.batcher.announce()
        try:
            yield
        finally:
            self.ctx.batcher.withdraw()


def create_app(ctx: ApiContext) -> FastAPI:
    """The node's app: :class:`ServingApi`'s routes, the error handlers, the body limit and the request metrics."""
    app = FastAPI(
        title="StreamSSL serving node",
        version=SERVER_VERSION,
        description="Embeddings and anomaly scores from the StreamSSL encoders (Open Inference Protocol v2).",
        redoc_url=None,
    )
    for error_type, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(error_type, handler)
    for router in ServingApi(ctx).routers():
        app.include_router(router)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=ctx.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=ctx.metrics, routes=app.routes)
    return app


def _add_versioned(
    router: APIRouter, suffix: str, endpoint: Callable[..., Any], names: tuple[str, str], **route: Any
) -> None:
    """``/v2/models/{name}<suffix>`` and its ``/versions/{version}`` twin, both on ``endpoint``.

    ``names`` (unversioned, versioned) are the routes' names, from which FastAPI derives the operation ids and
    summaries of the OpenAPI document.
    """
    unversioned, versioned = names
    router.add_api_route(MODEL_PATH + suffix, endpoint, name=unversioned, **route)
    router.add_api_route(
        f"{MODEL_PATH}/versions/{{version}}{suffix}",
        endpoint,
        name=versioned,
        dependencies=[Depends(_declare_version)],
        **route,
    )


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The app's OpenAPI document, built once, with the request models added to the components that
    ``openapi_extra`` refers to: they are not handler parameters (bodies are parsed by orjson)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            request_schema = protocol.InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(request_schema.pop("$defs", {}))
            components["InferRequest"] = request_schema
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


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
