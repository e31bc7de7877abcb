"""The HTTP scoring and monitoring service (FastAPI); ``discopatch serve`` runs it on uvicorn.

``create_app(detector, db_url)`` builds the app. Image payloads are accepted as multipart file fields named
``images`` (repeatable) or as JSON ``{"images": ["<base64>", ...]}``; every image gets its own result or its own
error, so one bad image never fails the request. Decoding and scoring run in the thread pool, stream endpoints
answer only after their rows are committed. A stream's drift state lives in the process; a second server (or
``monitor``) on the same database is detected on write by a version check and the state reloaded, so they never
diverge (docs/RELIABILITY.md).

Hardening (docs/RELIABILITY.md): the body size, images per request and scoring time are bounded (413 / 503), an
optional bearer token guards the POST endpoints and thumbnails (or every endpoint but the probes ``/healthz``,
``/livez`` and ``/readyz``), stream names are
allow-listed (400), and no page loads anything from another host. An optional ``Idempotency-Key`` header makes a
stream request safe to retry: a key the stream already holds gets its stored response and records nothing.

The app is put together here from its parts: the routes (:mod:`.routes`, schemas in :mod:`.schemas`, request
parsing in :mod:`.payloads`), the Prometheus metrics (:mod:`.metrics`), the body-size limit (:mod:`.limits`) and
the HTML pages (:mod:`.pages`).
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.staticfiles import StaticFiles

from .._version import __version__
from ..detector import Detector
from ..errors import ConfigError
from .alerts import AlertDispatcher
from .api import api_router
from .choices import DEFAULT_DB_URL
from .drift import DriftConfig
from .limits import MAX_BODY_BYTES, MAX_ID, MAX_IMAGE_BYTES, MAX_IMAGES, REQUEST_TIMEOUT_S, BodyLimit
from .metrics import Metrics
from .pages import SWAGGER_ASSETS, pages_router, swagger_ui_files
from .routes import heatmap_png, score_histogram
from .scoring import MAX_DECODES
from .store import Store
from .streams import StreamRecorder

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_ID",
    "MAX_IMAGES",
    "MAX_IMAGE_BYTES",
    "PROBES",
    "REQUEST_TIMEOUT_S",
    "create_app",
    "heatmap_png",
    "score_histogram",
]

#: Probe endpoints, open even under ``token_all``.
PROBES = frozenset({"/healthz", "/livez", "/readyz"})


def create_app(
    detector: Detector | str | os.PathLike[str],
    db_url: str = DEFAULT_DB_URL,
    *,
    drift_config: DriftConfig | None = None,
    alerts: AlertDispatcher | None = None,
    thumbnails: str = "flagged",
    max_images: int = MAX_IMAGES,
    max_image_bytes: int = MAX_IMAGE_BYTES,
    max_body_bytes: int = MAX_BODY_BYTES,
    timeout_s: float | None = REQUEST_TIMEOUT_S,
    token: str | None = None,
    token_all: bool = False,
    max_decodes: int = MAX_DECODES,
) -> FastAPI:
    """The service for a calibrated detector (a :class:`~discopatch.detector.Detector` or a model directory).

    ``token`` (a bearer token) guards the POST endpoints and the thumbnails, or with ``token_all`` every endpoint but
    the probes (``/healthz``, ``/livez``, ``/readyz``);
    ``timeout_s`` bounds decoding and scoring per request (``None``: no bound); ``max_decodes`` bounds the images
    decoded at once over all requests, and with it the memory decoding takes.
    """
    if token is not None and not token:
        raise ConfigError("the bearer token must not be empty")
    if isinstance(detector, (str, os.PathLike)):
        detector = Detector.load(detector)
    recorder = StreamRecorder(detector, Store(db_url), drift_config, alerts, thumbnails, max_decodes=max_decodes)
    metrics = Metrics(recorder)

    app = _bare_app(recorder, metrics, max_body_bytes)
    _add_observe(app, metrics)
    _add_error_handlers(app, recorder)
    if token is not None:
        _add_auth(app, token, token_all)

    app.include_router(
        api_router(
            recorder,
            metrics,
            max_images=max_images,
            max_image_bytes=max_image_bytes,
            timeout_s=timeout_s,
            token_all=token_all,
        )
    )
    swagger_files = swagger_ui_files()
    if swagger_files is not None:
        app.mount(SWAGGER_ASSETS, StaticFiles(directory=swagger_files), name="swagger-ui")

    app.include_router(pages_router(app.openapi_url or "/openapi.json", swagger_files))
    if token is not None:
        _document_bearer(app, token_all)
    return app


def _bare_app(recorder: StreamRecorder, metrics: Metrics, max_body_bytes: int) -> FastAPI:
    """The app before its middleware and routes: its OpenAPI title and version, the body limit, the recorder and
    metrics on ``app.state``, and a lifespan that closes the recorder (scorer, alerts, store) on shutdown."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        recorder.close()

    app = FastAPI(
        title="discopatch",
        version=__version__,
        summary="DisCoPatch OOD / covariate-shift scoring with stream drift monitoring",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.state.recorder = recorder
    app.state.metrics = metrics
    return app


def _add_observe(app: FastAPI, metrics: Metrics) -> None:
    """Count every request in ``metrics``: in flight while it runs, then its route template, method, status and
    duration (a 500 when the app raised)."""

    @app.middleware("http")
    async def _observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        t0 = time.perf_counter()
        status = 500
        metrics.in_flight.inc()
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            metrics.in_flight.dec()
            route = getattr(request.scope.get("route"), "path", None) or "unmatched"
            metrics.observe(route, request.method, status, time.perf_counter() - t0)


def _add_error_handlers(app: FastAPI, recorder: StreamRecorder) -> None:
    """Every error in the service's one shape (``{"detail": ...}``): HTTP errors with a complete ``Allow`` on a
    405, validation errors as 422 with their list, a database that could not answer a read as 503."""

    @functools.cache
    def _path_methods() -> list[tuple[re.Pattern[str], set[str]]]:
        """Each documented path's regex and methods (GET implies HEAD), from the OpenAPI document."""
        out = []
        for template, ops in app.openapi()["paths"].items():
            methods = {m.upper() for m in ops}
            out.append((compile_path(template)[0], methods | ({"HEAD"} if "GET" in methods else set())))
        return out

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Every HTTP error as ``{"detail": ...}``; a 405's ``Allow`` lists the methods of every route on the path
        (Starlette's names only the first route's, and ``/v1/streams/{name}/images`` has a GET and a POST)."""
        if exc.status_code == 405:
            path = request.url.path
            methods = sorted({m for regex, ms in _path_methods() if regex.match(path) for m in ms})
            if methods:
                headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"}
                exc.headers = headers | {"allow": ", ".join(methods)}
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 in the service's one error shape: ``detail`` says it in a line, ``errors`` lists each problem."""
        errors = [
            {"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]  # fmt: skip
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(SQLAlchemyError)
    async def _database_down(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        """A read that the database could not answer: 503 (counted and logged), never a 500 with a traceback."""
        route = getattr(request.scope.get("route"), "path", None) or "unmatched"  # a template: bounded log keys
        reason = recorder.failures.failed("read", route, exc)
        return JSONResponse(
            {"detail": f"the database is unavailable ({reason}); retry later"},
            status_code=503,
            headers={"retry-after": "5"},
        )


def _add_auth(app: FastAPI, token: str, token_all: bool) -> None:
    """Guard the POST routes and ``/v1/images/...`` (with ``token_all`` every route but the probes) with the
    bearer ``token``: 401 without it."""
    expected = token.encode()

    @app.middleware("http")
    async def _auth(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        # thumbnails are the images themselves, under guessable sequential ids: guarded whenever a token is set
        probe = path in PROBES
        guarded = request.method == "POST" or path.startswith("/v1/images/") or (token_all and not probe)
        # RFC 7235: the scheme is case-insensitive ("bearer" and "BEARER" are "Bearer")
        scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
        ok = scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), expected)
        if guarded and not ok:
            return JSONResponse(
                {"detail": "missing or wrong bearer token (send 'Authorization: Bearer <token>')"},
                status_code=401,
                headers={"www-authenticate": "Bearer"},
            )
        return await call_next(request)


def _document_bearer(app: FastAPI, token_all: bool) -> None:
    """With a token, ``/openapi.json`` says which operations need it (a ``bearer`` security scheme on each), so a
    generated client sends it; the guard itself is the ``_auth`` middleware."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            spec.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, ops in spec["paths"].items():
                for method, op in ops.items():
                    if method == "post" or path.startswith("/v1/images/") or (token_all and path not in PROBES):
                        op["security"] = [{"bearer": []}]
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
