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

import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..detector import Detector
from .alerts import AlertDispatcher
from .choices import DEFAULT_DB_URL
from .drift import DriftConfig
from .limits import MAX_BODY_BYTES, MAX_ID, MAX_IMAGE_BYTES, MAX_IMAGES, REQUEST_TIMEOUT_S, BodyLimit
from .metrics import Metrics
from .pages import SWAGGER_ASSETS, pages_router, swagger_ui_files
from .routes import api_router, heatmap_png, score_histogram
from .store import Store
from .streams import MAX_DECODES, StreamRecorder

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
        raise ValueError("the bearer token must not be empty")
    if isinstance(detector, (str, os.PathLike)):
        detector = Detector.load(detector)
    recorder = StreamRecorder(detector, Store(db_url), drift_config, alerts, thumbnails, max_decodes=max_decodes)
    metrics = Metrics(recorder)

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

    if token is not None:
        expected = f"Bearer {token}".encode()

        @app.middleware("http")
        async def _auth(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            path = request.url.path
            # thumbnails are the images themselves, under guessable sequential ids: guarded whenever a token is set
            probe = path in PROBES
            guarded = request.method == "POST" or path.startswith("/v1/images/") or (token_all and not probe)
            given = request.headers.get("authorization", "").encode()
            if guarded and not secrets.compare_digest(given, expected):
                return JSONResponse(
                    {"detail": "missing or wrong bearer token (send 'Authorization: Bearer <token>')"},
                    status_code=401,
                    headers={"www-authenticate": "Bearer"},
                )
            return await call_next(request)

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
    return app
