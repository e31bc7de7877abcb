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
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import importlib.util
import io
import json
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from PIL import Image
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import UploadFile
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..explain import Explanation, overlay
from .alerts import AlertDispatcher
from .drift import DriftConfig
from .store import DEFAULT_DB_URL, Store, StreamConflict, StreamNotFound
from .streams import (
    MAX_DECODES,
    Item,
    KeyReused,
    StreamRecorder,
    check_idempotency_key,
    check_stream_name,
    payload_fingerprint,
)

MAX_IMAGES = 256
MAX_IMAGE_BYTES = 16 * 1024 * 1024
#: Whole request body; base64 JSON is 4/3 of the image bytes, so this fits about 48 MiB of images.
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Seconds a request may spend decoding and scoring before it is answered 503.
REQUEST_TIMEOUT_S = 120.0
#: Database ids and sequence numbers are 64-bit; a larger number in a URL is refused (422) before any query.
MAX_ID = 2**63 - 1

IMAGES_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {"type": "string", "format": "byte"},
                            "description": "base64 (a data: URL prefix is accepted)",
                        },
                        "source_ids": {"type": "array", "items": {"type": "string"}},
                    },
                }
            },
            "image/*": {
                "schema": {"type": "string", "format": "binary"},
                "description": "one raw image (png, jpeg, gif, webp, bmp or tiff); ?source_id= names it",
            },
        },
    }
}


#: What a heat map can and cannot say; every explanation in a response carries it.
HEATMAP_NOTE = (
    "The map explains the discriminator's share of the score only (its mean is d_score). The per-image statistics "
    "of a fused score are global and have no position; source names the view that set the score."
)


class HeatMap(BaseModel):
    """D's per-patch contributions behind one score, from the scoring pass itself (:mod:`discopatch.explain`)."""

    score: float = Field(description="the detector's score (the same as the result's score)")
    score_mode: str = Field(description="d-only, fused or stats-only")
    source: str = Field(description="the view that set the score: discriminator or statistics")
    d_score: float = Field(description="D's score: the mean of the contributions")
    d_z: float | None = Field(description="fused detectors: D's score on the fused robust z-scale")
    stats_z: float | None = Field(description="fused detectors: the statistics score on the fused z-scale")
    stats_score: float | None = Field(description="the statistics (Mahalanobis) score, when the detector has one")
    image_size: int = Field(description="side of the preprocessed square image the corners refer to")
    patch_size: int = Field(description="side of each patch in pixels")
    corners: list[tuple[int, int]] = Field(description="each patch's top-left (y, x) in the preprocessed image")
    contributions: list[float] = Field(
        description="per patch 1 - sigmoid(logit): near 1 D calls it fake-like, near 0 real-like"
    )
    note: str = Field(default=HEATMAP_NOTE, description="what the map explains")


class ImageResult(BaseModel):
    index: int = Field(description="position of the image in the request")
    source_id: str | None = Field(description="file name, the given source id, or images[i]")
    score: float | None = Field(description="OOD score, higher = more OOD; null on error")
    p_value: float | None = Field(description="conformal p-value against the calibration scores")
    is_ood: bool | None = Field(description="score > threshold (p_value <= target FPR)")
    error: str | None = Field(description="why this image could not be scored")
    id: int | None = Field(default=None, description="database id (stream endpoints)")
    seq: int | None = Field(default=None, description="position in the stream (stream endpoints)")
    explanation: HeatMap | None = Field(
        default=None, description="POST /v1/score?explain=true only (absent otherwise): the heat-map data"
    )

    @model_serializer(mode="wrap")
    def _omit_absent_explanation(self, handler: SerializerFunctionWrapHandler):
        """Without ``explain=true`` the response keeps its earlier shape: no ``explanation`` key at all.

        No return annotation on purpose: pydantic would publish it as the model's schema in the OpenAPI document."""
        out = handler(self)
        if out.get("explanation") is None:
            out.pop("explanation", None)
        return out


#: Probe endpoints, open even under ``token_all``.
PROBES = frozenset({"/healthz", "/livez", "/readyz"})
SOURCE_ID = Query(None, max_length=1024, description="source id of a raw image/* body (default: image)")
MODEL_ID = "the detector's model id (hash of its saved files; null for a detector that was never saved)"


class ScoreResponse(BaseModel):
    results: list[ImageResult]
    n_images: int
    n_errors: int
    threshold: float
    target_fpr: float
    model_id: str | None = Field(description=MODEL_ID)
    meta: dict[str, Any]


class StreamResponse(BaseModel):
    stream: str
    results: list[ImageResult]
    drift: dict[str, Any] = Field(description="the stream's verdict after these images (see GET .../status)")
    model_id: str | None = Field(default=None, description=MODEL_ID)
    replayed: bool = Field(
        default=False, description="true: the Idempotency-Key was already recorded; this is that request's response"
    )


class Window(BaseModel):
    size: int | None = Field(description="window length in images (null: by age only)")
    seconds: float | None = Field(description="window length in seconds (null: by count only)")
    start: float | None = Field(description="epoch seconds of the oldest image in the window")
    end: float | None = Field(description="epoch seconds of the newest image in the window")
    first: int | None = Field(description="stream position (time) of the oldest image in the window")


class StreamSummary(BaseModel):
    stream: str
    n_recorded: int = Field(description="images recorded in the stream, errors included")
    n_alerts: int
    is_drift: bool
    p_val: float | None = Field(description="Bonferroni-combined p-value of the window tests")
    distance: float | None = Field(description="KS distance between window and calibration scores")
    time: int = Field(description="scored images seen by the stream")
    n_window: int
    n_flagged: int
    alarm_rate: float | None
    expected_alarm_rate: float
    target_fpr: float
    score_threshold: float
    drifting_tests: list[str]
    per_test: dict[str, dict[str, Any]] = Field(description="each test's is_drift, p_val, threshold, distance, ...")
    window: Window


class StreamListEntry(StreamSummary):
    updated: float = Field(description="epoch seconds of the stream's last write")


class StreamStatus(StreamSummary):
    threshold: float = Field(description="the significance level p_val is compared with")
    timestamp: float | None = Field(description="epoch seconds of the latest image")
    tests: list[str]
    meta: dict[str, Any] = Field(description="drift detector name and its full configuration")


class Alert(BaseModel):
    id: int
    time: float
    seq: int | None = Field(description="seq of the last image of the request that raised the alert")
    kind: str = Field(description="drift or recovered")
    tests: list[str]
    p_val: float | None
    alarm_rate: float | None
    detail: dict[str, Any] = Field(description="the whole verdict and the message")


class RecordedImage(BaseModel):
    id: int
    seq: int
    time: float
    source_id: str | None
    score: float | None
    p_value: float | None
    is_ood: bool | None
    error: str | None
    thumbnail: str | None = Field(description="URL of the thumbnail, when one was kept")
    heatmap: str | None = Field(
        description="URL of the heat-map overlay PNG, when the explanation was kept (with the thumbnail); its data "
        "is at /v1/images/{id}/explanation"
    )


class Health(BaseModel):
    status: str
    version: str
    db: str = Field(description="database URL, or only its kind under --token-all")
    model_id: str | None = Field(description=MODEL_ID)
    model: dict[str, Any]


class ModelInfo(BaseModel):
    model_id: str | None = Field(description=MODEL_ID)
    preset: str
    score_mode: str = Field(description="d-only, fused or stats-only")
    threshold: float | None = Field(description="score threshold (null: too few calibration images to flag any)")
    target_fpr: float
    n_calibration: int = Field(description="calibration (ID) scores behind the threshold and p-values")
    image_size: int = Field(description="side of the preprocessed square image")
    patch_size: int
    n_patches: int = Field(description="patches scored per image")


class ScoreHistogram(BaseModel):
    """Counts of the stream's window scores and of the calibration scores over the same bins."""

    stream: str
    edges: list[float] = Field(description="bin edges, ascending (len = bins + 1); the last bin includes its edge")
    window: list[int] = Field(description="window scores per bin")
    calibration: list[int] = Field(description="calibration (ID) scores per bin")
    n_window: int
    n_calibration: int
    threshold: float | None = Field(description="the score threshold (null: infinite)")


class Live(BaseModel):
    status: str


class Ready(BaseModel):
    status: str = Field(description="ready or not ready")
    checks: dict[str, str] = Field(description="per check (model, database): ok or what is wrong")
    model_id: str | None = Field(description=MODEL_ID)


# ---------------------------------------------------------------------------------------------------------------
# Prometheus metrics (prometheus-client, one registry per app)
# ---------------------------------------------------------------------------------------------------------------

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Calibration-score quantiles used as the score histogram's bucket bounds (the threshold is added to them).
SCORE_QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


def score_buckets(calibration: Any) -> tuple[float, ...]:
    """Bucket bounds at quantiles of the ID calibration scores plus the threshold, so they fit any score scale: on
    ID traffic each bucket holds about its quantile's share, and the ``le=threshold`` bucket counts unflagged images."""
    bounds = {float(q) for q in np.quantile(calibration.scores, SCORE_QUANTILES)} | {float(calibration.threshold)}
    return tuple(sorted(b for b in bounds if np.isfinite(b)))


def score_histogram(
    window: np.ndarray, calibration: np.ndarray, bins: int, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width bin edges spanning both score sets (and a finite threshold, so it falls on the chart), and the
    counts of each set per bin."""
    both = np.concatenate([window, calibration, [threshold] if threshold is not None else []])
    edges = np.histogram_bin_edges(both, bins=bins)
    return edges, np.histogram(window, edges)[0], np.histogram(calibration, edges)[0]


def heatmap_png(explanation: dict[str, Any], thumbnail: bytes) -> bytes:
    """A kept explanation's overlay (:func:`discopatch.explain.overlay`) over its thumbnail, which is first scaled
    up (nearest neighbour) to the preprocessed size when it was stored smaller."""
    size = int(explanation["image_size"])
    with Image.open(io.BytesIO(thumbnail)) as im:
        backdrop = im if im.size == (size, size) else im.resize((size, size), Image.Resampling.NEAREST)
        picture = overlay(Explanation.from_dict(explanation, np.asarray(backdrop)))
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    return buf.getvalue()


def finite(x: float) -> float | None:
    """``x``, or None for an infinite threshold (JSON has no infinity)."""
    return float(x) if math.isfinite(x) else None


class _StreamCollector:
    """Per-stream drift gauges and the inference-time counter, read from the recorder at each scrape."""

    def __init__(self, recorder: StreamRecorder) -> None:
        self.recorder = recorder

    def describe(self) -> list[Any]:
        return []  # families are known only at scrape time; nothing to check for duplicates at registration

    def collect(self) -> Iterator[Any]:
        yield CounterMetricFamily(
            "discopatch_inference_seconds",
            "Time spent in model inference.",
            value=self.recorder.scorer.inference_seconds,
        )
        monitors = self.recorder.monitors()
        now = time.time()
        results = {name: mon.result(now=now) for name, mon in monitors.items()}
        per_stream = {
            "discopatch_stream_images": ("Scored images seen by the stream's drift monitor.", "time"),
            "discopatch_stream_window_images": ("Images in the drift window.", "n_window"),
            "discopatch_stream_window_flagged": ("Flagged images in the drift window.", "n_flagged"),
            "discopatch_stream_alarm_rate": ("Share of flagged images in the window.", "alarm_rate"),
            "discopatch_stream_drift": ("1 while the stream is in drift.", "is_drift"),
            "discopatch_stream_p_value": ("Combined p-value of the window tests.", "p_val"),
        }
        for metric, (help_, key) in per_stream.items():
            g = GaugeMetricFamily(metric, help_, labels=["stream"])
            for n, r in results.items():
                g.add_metric([n], math.nan if r[key] is None else float(r[key]))
            yield g
        cusum = GaugeMetricFamily(
            "discopatch_stream_cusum", "CUSUM statistic of -log p (alarm above the threshold).", labels=["stream"]
        )
        h = GaugeMetricFamily(
            "discopatch_stream_cusum_threshold", "CUSUM alarm threshold for the configured ERT.", labels=["stream"]
        )
        alarms = CounterMetricFamily(
            "discopatch_stream_cusum_alarms", "CUSUM alarms since the stream began.", labels=["stream"]
        )
        for n, m in monitors.items():
            cusum.add_metric([n], m.cusum)
            h.add_metric([n], m.cusum_h)
            alarms.add_metric([n], m.n_alarms)
        yield from (cusum, h, alarms)


class Metrics:
    """The app's Prometheus metrics in its own :class:`~prometheus_client.CollectorRegistry` (never the global one,
    so several apps in one process keep separate counts)."""

    def __init__(self, recorder: StreamRecorder) -> None:
        det = recorder.detector
        self.registry = r = CollectorRegistry()
        Info("discopatch", "Version and model of this server.", registry=r).info(
            {
                "version": __version__,
                "preset": det.preset.name,
                "n_patches": str(det.n_patches),
                "model_id": det.detector_id or "",
            }
        )
        self.requests = Counter(
            "discopatch_http_requests", "HTTP requests by route, method and status.", ["route", "method", "status"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "discopatch_http_request_duration_seconds", "HTTP request latency.", ["route"], buckets=BUCKETS, registry=r
        )
        self.in_flight = Gauge(
            "discopatch_http_requests_in_flight", "HTTP requests being served (a scrape counts itself).", registry=r
        )
        self.images = Counter(
            "discopatch_images", "Images scored, by outcome (id, ood, error).", ["outcome"], registry=r
        )
        for outcome in ("id", "ood", "error"):
            self.images.labels(outcome)
        self.scores = Histogram(
            "discopatch_score",
            "Scores of the scored images; bucket bounds are quantiles of the calibration scores and the threshold.",
            buckets=score_buckets(det.calibration),
            registry=r,
        )
        r.register(_StreamCollector(recorder))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def count_images(self, results: list[dict[str, Any]]) -> None:
        for res in results:
            self.images.labels("error" if res["error"] else "ood" if res["is_ood"] else "id").inc()
            if res["score"] is not None:
                self.scores.observe(res["score"])

    def render(self) -> bytes:
        return generate_latest(self.registry)


# ---------------------------------------------------------------------------------------------------------------
# Hardening: body size limit, local API page
# ---------------------------------------------------------------------------------------------------------------


class BodyTooLarge(HTTPException):
    """Raised from inside ``receive`` so that form and JSON parsing stop reading at the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the {limit}-byte limit (see --max-body-bytes)")


class BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` by Content-Length, and stop chunked ones at the limit.

    Counting in ``receive`` (not only trusting the header) is what bounds memory for chunked uploads.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await _send_json(send, 413, BodyTooLarge(self.max_bytes).detail)
            return
        seen = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as e:
            if not started:
                await _send_json(send, 413, e.detail)


async def _send_json(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


#: Where /docs finds Swagger UI's script and style: the copy of Swagger UI 5 (which renders OpenAPI 3.1, the version
#: FastAPI writes) that the fastapi-offline package ships, served by this app; FastAPI's own /docs loads it from a CDN.
SWAGGER_ASSETS = "/docs-assets"


def swagger_ui_files() -> Path | None:
    """The folder of fastapi-offline's Swagger UI files (``swagger-ui-bundle.js``, ``swagger-ui.css``,
    ``favicon.png``), or None when the package is not installed (``/docs`` then falls back to :data:`API_PAGE`)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() and (folder / "swagger-ui.css").is_file() else None


def swagger_ui_page(openapi_url: str) -> HTMLResponse:
    """Swagger UI on the local files; the online validator badge is off, so the page fetches nothing elsewhere."""
    return get_swagger_ui_html(
        openapi_url=openapi_url,
        title="discopatch API",
        swagger_js_url=f"{SWAGGER_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER_ASSETS}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},
    )


#: /docs without fastapi-offline: a list of the operations read from /openapi.json, needing nothing else.
API_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>discopatch API</title>
<style>body{font:14px sans-serif;margin:2em;max-width:60em}code{background:#eee;padding:0 .3em}
li{margin:.4em 0}</style></head><body><h1>discopatch API</h1>
<p>The machine-readable description is <a href="/openapi.json">/openapi.json</a>.</p><ul id="ops"></ul>
<script>
fetch("/openapi.json").then(r => r.json()).then(spec => {
  const ul = document.getElementById("ops");
  for (const [path, ops] of Object.entries(spec.paths)) for (const [method, op] of Object.entries(ops)) {
    const li = document.createElement("li"), c = document.createElement("code");
    c.textContent = method.toUpperCase() + " " + path;
    li.append(c, " " + (op.summary || "") + (op.description ? " - " + op.description.split("\\n")[0] : ""));
    ul.append(li);
  }
});
</script></body></html>
"""


# ---------------------------------------------------------------------------------------------------------------
# Request parsing
# ---------------------------------------------------------------------------------------------------------------


def _b64(entry: str, sid: str, max_bytes: int) -> Item:
    s = entry.strip()
    if s.startswith("data:") and "," in s:
        s = s.split(",", 1)[1]
    if len(s) * 3 // 4 > max_bytes:
        return Item(sid, error=f"{sid}: larger than the {max_bytes}-byte limit")
    try:
        return Item(sid, data=base64.b64decode(s, validate=True))
    except (binascii.Error, ValueError) as e:
        return Item(sid, error=f"{sid}: not valid base64 ({e})")


#: Raw ``image/*`` request bodies the server accepts, with the format Pillow reports for each.
IMAGE_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}


async def read_raw_image(request: Request, ctype: str, source_id: str | None, max_image_bytes: int) -> Item:
    """A raw ``image/*`` body as one :class:`Item`: 415 for a type not in :data:`IMAGE_TYPES`, 413 over the per-image
    limit; data that is another format than the declared type becomes the image's error."""
    if ctype not in IMAGE_TYPES:
        raise HTTPException(415, f"{ctype} is not accepted; raw image bodies may be {', '.join(IMAGE_TYPES)}")
    sid = source_id or "image"
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > max_image_bytes:
            raise HTTPException(413, f"image larger than the {max_image_bytes}-byte limit")
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            found = img.format
    except (OSError, ValueError, Image.DecompressionBombError):
        found = None  # undecodable: the scorer reports why
    if found is not None and found != IMAGE_TYPES[ctype]:
        return Item(sid, error=f"{sid}: sent as {ctype} but the data is {found}")
    return Item(sid, data=bytes(data))


async def read_items(
    request: Request, max_images: int, max_image_bytes: int, source_id: str | None = None
) -> list[Item]:
    """The request's images as :class:`Item` s; whole-request problems raise HTTP 4xx, per-image ones become errors.

    ``source_id`` names a raw ``image/*`` body (one image per request)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith("image/"):
        return [await read_raw_image(request, ctype, source_id, max_image_bytes)]
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_images * max_image_bytes:
        raise HTTPException(413, f"request body larger than {max_images * max_image_bytes} bytes")
    items: list[Item] = []
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=max_images + 1, max_fields=max_images + 16)
        except HTTPException:
            raise
        except Exception as e:
            raise HTTPException(400, f"malformed multipart body: {e}") from None
        try:
            entries = form.getlist("images")
            ids = form.getlist("source_id")
            if len(entries) > max_images:
                raise HTTPException(413, f"{len(entries)} images in one request; the limit is {max_images}")
            for i, f in enumerate(entries):
                given = ids[i] if i < len(ids) and isinstance(ids[i], str) else None
                if not isinstance(f, UploadFile):  # no filename parameter: Starlette reads the part as text
                    sid = given or f"images[{i}]"
                    items.append(
                        Item(
                            sid,
                            error=f"{sid}: this 'images' part has no filename, so it arrived as a text field; give "
                            "every image part a filename (some clients drop an empty one) or send base64 JSON",
                        )
                    )
                    continue
                sid = given or f.filename or f"images[{i}]"
                data = await f.read(max_image_bytes + 1)
                if len(data) > max_image_bytes:
                    items.append(Item(sid, error=f"{sid}: larger than the {max_image_bytes}-byte limit"))
                else:
                    items.append(Item(sid, data=data))
        finally:
            await form.close()
    elif ctype == "application/json" or ctype.endswith("+json"):
        try:
            body = await request.json()
        except ValueError as e:
            raise HTTPException(400, f"body is not valid JSON: {e}") from None
        except RecursionError:
            raise HTTPException(400, "body is not valid JSON: nested too deeply") from None
        if not isinstance(body, dict) or not isinstance(body.get("images"), list):
            raise HTTPException(422, 'expected a JSON object {"images": ["<base64>", ...]}')
        entries = body["images"]
        ids = body.get("source_ids") or []
        if not isinstance(ids, list):
            raise HTTPException(422, "source_ids must be a list of strings")
        if len(entries) > max_images:
            raise HTTPException(413, f"{len(entries)} images in one request; the limit is {max_images}")
        for i, e in enumerate(entries):
            sid = str(ids[i]) if i < len(ids) and ids[i] is not None else f"images[{i}]"
            if isinstance(e, dict) and isinstance(e.get("data"), str):
                items.append(_b64(e["data"], str(e.get("source_id") or sid), max_image_bytes))
            elif isinstance(e, str):
                items.append(_b64(e, sid, max_image_bytes))
            else:
                items.append(Item(sid, error=f"{sid}: expected a base64 string, got {type(e).__name__}"))
    else:
        raise HTTPException(
            415, "send multipart/form-data with 'images' file fields, application/json, or one raw image/* body"
        )
    if not items:
        raise HTTPException(422, "no images in the request (multipart field or JSON key 'images')")
    return items


# ---------------------------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------------------------


def create_app(
    detector: Any,
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
        from ..detector import Detector

        detector = Detector.load(detector)
    recorder = StreamRecorder(detector, Store(db_url), drift_config, alerts, thumbnails, max_decodes=max_decodes)
    metrics = Metrics(recorder)
    dashboard_html = files("discopatch.monitoring").joinpath("dashboard.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
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

    async def _bounded(func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func`` in the thread pool; 503 after ``timeout_s`` (the thread finishes, its result is dropped)."""
        try:
            return await asyncio.wait_for(run_in_threadpool(func, *args), timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(
                503,
                f"scoring did not finish within the {timeout_s:g} s request timeout; send fewer images or retry",
                headers={"retry-after": "5"},
            ) from None

    def _check_name(name: str) -> None:
        try:
            check_stream_name(name)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

    @app.post("/v1/score", response_model=ScoreResponse, openapi_extra=IMAGES_BODY, tags=["scoring"])
    async def score(
        request: Request,
        source_id: str | None = SOURCE_ID,
        explain: bool = Query(False, description="add each scored image's heat-map data (`explanation`)"),
    ) -> dict[str, Any]:
        """Score images without recording them: per image its score, p-value and decision, or its error.

        With ``explain=true`` each scored image also gets ``explanation``: its patch corners and D's per-patch
        contributions, from the same forward pass as its score (which is therefore unchanged). The map explains
        D's share of the score only; for a fused detector ``source`` says whether D or the per-image statistics
        set the score."""
        items = await read_items(request, max_images, max_image_bytes, source_id)
        results, explained = await _bounded(recorder.scorer.score, items)
        metrics.count_images(results)
        if explain:
            for r in results:
                if r["index"] in explained:
                    r["explanation"] = explained[r["index"]].to_dict()
        cal = detector.calibration
        return {
            "results": results,
            "n_images": len(results),
            "n_errors": sum(r["error"] is not None for r in results),
            "threshold": cal.threshold,
            "target_fpr": cal.target_fpr,
            "model_id": detector.detector_id,
            "meta": detector.meta(),
        }

    @app.post("/v1/streams/{name}/images", response_model=StreamResponse, openapi_extra=IMAGES_BODY, tags=["streams"])
    async def stream_images(
        name: str, request: Request, response: Response, source_id: str | None = SOURCE_ID
    ) -> dict[str, Any]:
        """Score images, record them in stream ``name`` (created on first use) and return the drift verdict.

        Answers only after the rows are committed; 503 if scoring timed out or the database refused the rows (in
        both cases nothing was recorded). With an ``Idempotency-Key`` header already recorded in the stream, the
        original response is returned and nothing is recorded (422 if the images differ)."""
        _check_name(name)
        if "explain" in request.query_params:
            raise HTTPException(
                400, "explain is a parameter of POST /v1/score; a recorded image's heat map is at "
                "GET /v1/images/{id}/explanation (kept with its thumbnail)",
            )  # fmt: skip
        key = request.headers.get("idempotency-key")
        if key is not None:
            try:
                check_idempotency_key(key)
            except ValueError as e:
                raise HTTPException(400, str(e)) from None
        items = await read_items(request, max_images, max_image_bytes, source_id)
        try:
            done = fingerprint = None
            if key is not None:  # a retry is answered before scoring; record() checks again in its transaction
                fingerprint = await run_in_threadpool(payload_fingerprint, items)
                done = await run_in_threadpool(recorder.replay, name, key, fingerprint)
            if done is not None:
                out = done | {"replayed": True}
            else:
                scored = await _bounded(recorder.scorer.score, items)
                record = partial(recorder.record, key=key, fingerprint=fingerprint)
                out = await run_in_threadpool(record, name, items, scored)
        except KeyReused as e:
            raise HTTPException(422, str(e)) from None
        except SQLAlchemyError as e:
            raise HTTPException(503, f"could not record the images: {type(e).__name__}") from None
        except StreamConflict as e:  # other writers kept getting in first, even after reloading
            raise HTTPException(503, f"could not record the images: {e}", headers={"retry-after": "1"}) from None
        if out["replayed"]:
            response.headers["idempotent-replayed"] = "true"
        else:
            metrics.count_images(out["results"])
        return out

    @app.get("/v1/streams", tags=["streams"], response_model=list[StreamListEntry])
    def streams() -> list[dict[str, Any]]:
        """Every recorded stream with its current verdict summary."""
        out = []
        for s in recorder.store.streams():
            st = recorder.status(s["name"])
            out.append({k: st[k] for k in _SUMMARY} | {"updated": s["updated"]})
        return out

    @app.get("/v1/streams/{name}/status", tags=["streams"], response_model=StreamStatus)
    def stream_status(name: str) -> dict[str, Any]:
        """Window statistics and the drift verdict (alibi-detect keys plus counts and per-test results)."""
        _check_name(name)
        try:
            return recorder.status(name)
        except StreamNotFound:
            raise HTTPException(404, f"no stream named {name!r}") from None

    @app.get("/v1/streams/{name}/alerts", tags=["streams"], response_model=list[Alert])
    def stream_alerts(name: str, limit: int = Query(100, ge=1, le=10_000)) -> list[dict[str, Any]]:
        """Drift alerts of the stream, newest first."""
        _check_name(name)
        try:
            return recorder.store.alerts(name, limit)
        except StreamNotFound:
            raise HTTPException(404, f"no stream named {name!r}") from None

    @app.get("/v1/streams/{name}/images", tags=["streams"], response_model=list[RecordedImage])
    def stream_images_list(
        name: str,
        limit: int = Query(200, ge=1, le=10_000),
        flagged: bool | None = None,
        after_seq: int | None = Query(None, ge=-MAX_ID, le=MAX_ID),
    ) -> list[dict[str, Any]]:
        """Recorded images, oldest first (the latest ``limit``); ``thumbnail`` is a URL when one was kept."""
        _check_name(name)
        try:
            rows = recorder.store.images(name, limit, flagged=flagged, after_seq=after_seq)
        except StreamNotFound:
            raise HTTPException(404, f"no stream named {name!r}") from None
        for r in rows:
            r["thumbnail"] = f"/v1/images/{r['id']}/thumbnail.png" if r.pop("has_thumbnail") else None
            r["heatmap"] = f"/v1/images/{r['id']}/heatmap.png" if r.pop("has_explanation") else None
        return rows

    @app.get("/v1/streams/{name}/histogram", tags=["streams"], response_model=ScoreHistogram)
    def stream_histogram(name: str, bins: int = Query(30, ge=2, le=200)) -> dict[str, Any]:
        """The drift window's scores against the calibration scores, counted over the same ``bins`` bins."""
        _check_name(name)
        try:
            window = recorder.window_scores(name)
        except StreamNotFound:
            raise HTTPException(404, f"no stream named {name!r}") from None
        cal = detector.calibration
        edges, w, c = score_histogram(window, cal.scores, bins, finite(cal.threshold))
        return {
            "stream": name,
            "edges": edges.tolist(),
            "window": w.tolist(),
            "calibration": c.tolist(),
            "n_window": len(window),
            "n_calibration": cal.n,
            "threshold": finite(cal.threshold),
        }

    def _explanation(image_id: int) -> dict[str, Any]:
        data = recorder.store.explanation(image_id)
        if data is None:
            raise HTTPException(
                404, "no heat map kept for this image: it is kept with the thumbnail (see --thumbnails), for images "
                "recorded since heat maps were stored",
            )  # fmt: skip
        return data

    @app.get("/v1/images/{image_id}/explanation", tags=["streams"], response_model=HeatMap)
    def image_explanation(image_id: int = PathParam(ge=1, le=MAX_ID)) -> dict[str, Any]:
        """The heat-map data of a recorded image, kept from the pass that scored it (on the full preprocessed
        image, whatever the thumbnail's size)."""
        return _explanation(image_id)

    @app.get("/v1/images/{image_id}/heatmap.png", tags=["streams"], response_class=Response)
    def image_heatmap(image_id: int = PathParam(ge=1, le=MAX_ID)) -> Response:
        """The kept heat map over the kept thumbnail (blue: real-like patches, red: fake-like). The map is exact;
        the picture under it is the thumbnail, scaled up to the preprocessed size when it is smaller."""
        data = _explanation(image_id)
        png = recorder.store.thumbnail(image_id)
        if png is None:
            raise HTTPException(404, "no thumbnail for this image")
        return Response(heatmap_png(data, png), media_type="image/png", headers={"cache-control": "max-age=86400"})

    @app.get("/v1/images/{image_id}/thumbnail.png", tags=["streams"], response_class=Response)
    def thumbnail(image_id: int = PathParam(ge=1, le=MAX_ID)) -> Response:
        """The preprocessed image as the detector saw it (kept for flagged images by default)."""
        png = recorder.store.thumbnail(image_id)
        if png is None:
            raise HTTPException(404, "no thumbnail for this image")
        return Response(png, media_type="image/png", headers={"cache-control": "max-age=86400"})

    def _database_problem() -> str | None:
        """Why the database cannot serve this app now (unreachable, or the last write failed), or None."""
        try:
            with recorder.store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as e:
            return f"database unreachable: {type(e).__name__}"
        if recorder.last_write_error is not None:  # reads can succeed on a read-only or full database
            return f"database unhealthy: {recorder.last_write_error}"
        return None

    @app.get("/healthz", tags=["service"], response_model=Health)
    def healthz() -> dict[str, Any]:
        """Health of the process and its database: 503 when the database is unreachable or the last write to it
        failed."""
        problem = _database_problem()
        if problem is not None:
            raise HTTPException(503, problem)
        # /healthz stays open under --token-all, so it then names only the kind of database, not where it is
        db = recorder.store.engine.dialect.name if token_all else recorder.store.url
        return {
            "status": "ok",
            "version": __version__,
            "db": db,
            "model_id": detector.detector_id,
            "model": detector.meta(),
        }

    @app.get("/livez", tags=["service"], response_model=Live)
    def livez() -> dict[str, str]:
        """Liveness: the process answers (always 200; a failing database does not make it 503)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"], response_model=Ready, responses={503: {"model": Ready}})
    def readyz() -> Any:
        """Readiness: the model is loaded and calibrated and the database is reachable and its last write succeeded
        (otherwise 503, with the failing check)."""
        checks = {
            "model": "ok" if detector.calibration is not None else "model is not calibrated",
            "database": _database_problem() or "ok",
        }
        ready = all(v == "ok" for v in checks.values())
        body = {"status": "ready" if ready else "not ready", "checks": checks, "model_id": detector.detector_id}
        return body if ready else JSONResponse(body, status_code=503)

    @app.get("/v1/model", tags=["service"], response_model=ModelInfo)
    def model_info() -> dict[str, Any]:
        """The served detector: model id, calibrated threshold and what a heat map's coordinates refer to."""
        cal = detector.calibration
        return {
            "model_id": detector.detector_id,
            "preset": detector.preset.name,
            "score_mode": detector.preset.score_mode,
            "threshold": finite(cal.threshold),
            "target_fpr": cal.target_fpr,
            "n_calibration": cal.n,
            "image_size": detector.preprocess_config.image_size,
            "patch_size": detector.model_config.patch_size,
            "n_patches": detector.n_patches,
        }

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    def prometheus() -> Response:
        """Prometheus text exposition format (version 0.0.4)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    swagger_files = swagger_ui_files()
    if swagger_files is not None:
        app.mount(SWAGGER_ASSETS, StaticFiles(directory=swagger_files), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def api_page() -> HTMLResponse:
        return HTMLResponse(API_PAGE) if swagger_files is None else swagger_ui_page(app.openapi_url or "/openapi.json")

    @app.get("/dashboard", response_class=HTMLResponse, tags=["dashboard"])
    def dashboard() -> HTMLResponse:
        """A self-contained page: per stream the score timeline, alarm rate, alerts and flagged thumbnails."""
        return HTMLResponse(dashboard_html)

    return app


_SUMMARY = (
    "stream",
    "n_recorded",
    "n_alerts",
    "is_drift",
    "p_val",
    "distance",
    "time",
    "n_window",
    "n_flagged",
    "alarm_rate",
    "expected_alarm_rate",
    "target_fpr",
    "score_threshold",
    "drifting_tests",
    "per_test",
    "window",
)
