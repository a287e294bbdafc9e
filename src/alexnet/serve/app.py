"""The web app: the page, the JSON API and its OpenAPI description, on Starlette.

Routes (``GET /openapi.json`` describes the API ones)::

    GET  /                     the page (index.html, app.js, style.css from alexnet/serve/static)
    POST /v1/predict           image (multipart field "image", or the raw bytes) -> what `alexnet predict --json` prints
    POST /v1/neighbors         image -> nearest training images in fc7 space and in pixel space
    GET  /v1/model             model name, classes, eval transform, checkpoint sha256, limits
    GET  /v1/train/{i}.png     training image i (a position in the train split; never a path)
    GET  /v1/filters.png       conv1's kernels (the paper's Figure 3)
    GET  /healthz              liveness, and the batcher's counts

Every refusal is a 4xx (or 503 when full) with ``{"error": "one sentence"}``;
an unexpected failure is a 500 with the same shape and no traceback (the
traceback goes to the server's log). The body is read by the app itself:
a ``Content-Length`` over the limit is refused before a byte is read, a body
that grows past it while streaming is refused at that point, and a client
that has not sent its whole body within ``read_timeout_s`` is answered 408.
At most ``max_inflight`` requests hold an image at once; the next is told
503 at once rather than queued without bound. Decoding runs on one thread
(libjpeg's warnings are caught by pointing file descriptor 2 at a file for
one decode, which is process-wide), the network on another (the
:class:`~alexnet.serve.batcher.Batcher`'s), the event loop on neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

from .. import __version__
from ..engine.inference import TTA
from ..strict_json import dumps
from .batcher import Batcher
from .service import Job, Refused, Service

__all__ = ["create_app"]

log = logging.getLogger("alexnet.serve")

FORM_OVERHEAD = 64 << 10  # a multipart body may exceed the image by this much (boundaries, headers, small fields)
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
RAW_TYPES = ("application/octet-stream",)  # besides image/*: a body that is the image file itself
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json", headers=headers)


def error(status: int, message: str) -> Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return json_response({"error": message}, status, headers)


# ---------------------------------------------------------------- reading a request
async def _read_body(request: Request, cap: int, timeout: float) -> bytes:
    """The whole body, refusing one over ``cap`` bytes (by its Content-Length, then while it streams)
    and a client that has not sent it within ``timeout`` seconds."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise Refused(400, "The Content-Length header is not a number.")
        if int(length) > cap:
            raise Refused(413, f"The upload is {int(length)} bytes, over the limit of {cap} bytes.")
    buf = bytearray()

    async def read() -> None:
        async for chunk in request.stream():
            buf.extend(chunk)
            if len(buf) > cap:
                raise Refused(413, f"The upload is over the limit of {cap} bytes.")

    try:
        await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise Refused(408, f"The request body did not arrive within {timeout:g} seconds.") from None
    return bytes(buf)


async def _one_chunk(body: bytes):
    yield body


async def read_upload(request: Request, service: Service) -> tuple[str, bytes]:
    """``(name, bytes)`` of the image a request sends: a multipart form's file (field ``image``, or its only
    file) or the raw body (``image/*``, ``application/octet-stream`` or no content type)."""
    limits = service.limits
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        body = await _read_body(request, limits.max_upload_bytes + FORM_OVERHEAD, limits.read_timeout_s)
        if not body:
            raise Refused(400, "The request has no image: its body is empty.")
        parser = MultiPartParser(Headers(raw=request.headers.raw), _one_chunk(body), max_files=1, max_fields=8,
                                 max_part_size=FORM_OVERHEAD)
        try:
            form = await parser.parse()
        except MultiPartException as e:
            raise Refused(400, f"The multipart form cannot be read: {e.message.rstrip('.')}.") from None
        except (ValueError, KeyError, AssertionError):
            raise Refused(400, "The multipart form cannot be read.") from None
        try:
            files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            upload = form.get("image") if isinstance(form.get("image"), UploadFile) else (files[0] if files else None)
            if upload is None:
                raise Refused(400, "The multipart form has no file; send the image in a field named \"image\".")
            data = await upload.read()
            name = upload.filename or "upload"
        finally:
            await form.close()
        if len(data) > limits.max_upload_bytes:
            raise Refused(413, f"The upload is over the limit of {limits.max_upload_bytes} bytes.")
        return name, data
    if ctype and not (ctype.startswith("image/") or ctype in RAW_TYPES):
        raise Refused(415, f"Send the image as multipart/form-data, image/* or application/octet-stream, not {ctype[:80]}.")
    data = await _read_body(request, limits.max_upload_bytes, limits.read_timeout_s)
    if not data:
        raise Refused(400, "The request has no image: its body is empty.")
    return "upload", data


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit() or not lo <= int(raw) <= hi:
        raise Refused(400, f"The parameter {name} must be a whole number from {lo} to {hi}.")
    return int(raw)


# ---------------------------------------------------------------- the app
class _State:
    """What the handlers share: the service, the batcher, the decode thread and the count of held images."""

    def __init__(self, service: Service):
        self.service = service
        limits = service.limits
        self.batcher = Batcher(service.run_batch, max_batch=limits.max_batch, max_wait_ms=limits.max_wait_ms,
                               size=lambda job: job.views)
        self.decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alexnet-decode")
        self.inflight = 0

    @contextlib.asynccontextmanager
    async def slot(self):
        """One of ``max_inflight`` places for a request that holds an image; 503 when none is free."""
        if self.inflight >= self.service.limits.max_inflight:
            raise Refused(503, "The server is busy; try again in a moment.")
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1

    async def off_loop(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.decoder, fn, *args)


def create_app(service: Service) -> Starlette:
    """The Starlette app serving ``service`` (its batcher starts and stops with the app's lifespan)."""
    state = _State(service)
    limits = service.limits

    async def predict(request: Request) -> Response:
        """Class probabilities of one image, as `alexnet predict --json` prints them for the same file.
        ---
        summary: Classify an image
        parameters:
          - {name: tta, in: query, schema: {type: string, enum: [center, 10crop], default: center}}
          - {name: topk, in: query, schema: {type: integer, minimum: 1, default: 5}}
        requestBody:
          content:
            multipart/form-data: {schema: {type: object, properties: {image: {type: string, format: binary}}}}
            image/*: {schema: {type: string, format: binary}}
            application/octet-stream: {schema: {type: string, format: binary}}
        responses:
          200: {description: '[{"image": name, "top": [{"class", "id", "index", "prob"}, ...]}], most probable first'}
          400: {description: 'empty body, malformed form or bad parameter: {"error": "..."}'}
          408: {description: the body did not arrive in time}
          413: {description: over the size or pixel limit}
          415: {description: not an image content type}
          422: {description: not an image, or a damaged one}
          503: {description: the server holds as many images as it may; retry}
        """
        tta = request.query_params.get("tta", "center")
        if tta not in TTA:
            raise Refused(400, f"The parameter tta must be {' or '.join(TTA)}.")
        topk = _int_param(request, "topk", 5, 1, max(1, service.ck.num_classes or 1000))
        async with state.slot():
            name, data = await read_upload(request, service)
            x = await state.off_loop(service.preprocess, data, tta)
            del data
            probs = await state.batcher.submit(Job(tta, x))
        service.stats["requests"] += 1
        return json_response([{"image": name, "top": service.top(probs, topk)}])

    async def neighbors(request: Request) -> Response:
        """The training images nearest an image in fc7 space and in pixel space (the paper's Figure 4).
        ---
        summary: Nearest training images
        parameters:
          - {name: k, in: query, schema: {type: integer, minimum: 1, default: 6}}
        requestBody:
          content:
            multipart/form-data: {schema: {type: object, properties: {image: {type: string, format: binary}}}}
            image/*: {schema: {type: string, format: binary}}
        responses:
          200: {description: '{"image", "k", "fc7": [{"id", "class", "label", "distance"}, ...], "pixels": [...]}; id is the position in the train split (GET /v1/train/{id}.png)'}
          404: {description: the server was started without --neighbors}
        """
        if not service.searchers:
            raise Refused(404, "This server was started without --neighbors, so it has no training images to search.")
        k = _int_param(request, "k", 6, 1, limits.max_k)
        async with state.slot():
            name, data = await read_upload(request, service)
            x = await state.off_loop(service.preprocess, data, "center")
            del data
            fc7 = await state.batcher.submit(Job("fc7", x))
            found = await state.off_loop(service.neighbors, x, fc7, k)
        service.stats["requests"] += 1
        return json_response({"image": name, "k": k, **found})

    async def model(request: Request) -> Response:
        """The model this server runs.
        ---
        summary: Model, classes, eval transform, checkpoint hash and limits
        responses:
          200: {description: '{"model", "num_classes", "classes": [{"index", "id", "class"}], "eval_transform", "checkpoint": {"file", "sha256", "bytes"}, "neighbors", "limits"}'}
        """
        return json_response(service.describe())

    async def health(request: Request) -> Response:
        """Liveness.
        ---
        summary: Liveness and the batcher's counts
        responses:
          200: {description: '{"status": "ok", "requests", "batches", "inputs", "largest_batch", "inflight"}'}
        """
        return json_response({"status": "ok", **service.stats, "inflight": state.inflight})

    async def thumbnail(request: Request) -> Response:
        """A training image by its position in the train split.
        ---
        summary: Training image (PNG)
        responses:
          200: {description: the image as stored by prepare, PNG}
          404: {description: no such position, or no --neighbors}
        """
        png = await state.off_loop(service.thumbnail, request.path_params["position"])
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    async def filters(request: Request) -> Response:
        """conv1's kernels.
        ---
        summary: conv1's kernels, one grid per tower (the paper's Figure 3), PNG
        responses:
          200: {description: PNG}
        """
        png = await state.off_loop(lambda: service.filters_png)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    schemas = SchemaGenerator({"openapi": "3.0.0", "info": {"title": "alexnet serve", "version": __version__}})

    async def openapi(request: Request) -> Response:
        return json_response(schemas.get_schema(routes=request.app.routes))

    def static(name: str):
        body = importlib.resources.files(__package__).joinpath("static", name).read_bytes()

        async def page(request: Request) -> Response:
            return Response(body, media_type=STATIC[name])

        return page

    async def refused(request: Request, exc: Exception) -> Response:
        return error(exc.status, exc.message)  # type: ignore[attr-defined]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 400)
        detail = str(getattr(exc, "detail", "") or "").rstrip(".")
        messages = {404: "There is nothing at this address.", 405: f"This address does not take {request.method}."}
        return error(status, messages.get(status) or f"{detail or 'The request was refused'}.")

    async def failed(request: Request, exc: Exception) -> Response:
        log.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, "The server failed on this request; the error is in its log.")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await state.batcher.start()
        try:
            yield
        finally:
            await state.batcher.stop()
            state.decoder.shutdown(wait=False)

    routes = [
        Route("/", static("index.html")),
        Route("/app.js", static("app.js")),
        Route("/style.css", static("style.css")),
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/v1/neighbors", neighbors, methods=["POST"]),
        Route("/v1/model", model),
        Route("/v1/train/{position:int}.png", thumbnail),
        Route("/v1/filters.png", filters),
        Route("/healthz", health),
        Route("/openapi.json", openapi, include_in_schema=False),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(SecurityHeaders)],
                    exception_handlers={Refused: refused, HTTPException: http_error, Exception: failed})
    app.state.serve = state
    return app


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response (a plain ASGI middleware: nothing is buffered)."""

    def __init__(self, app):
        self.app = app
        self.extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in self.extra if h[0] not in have]
            await send(message)

        await self.app(scope, receive, send_with_headers)
