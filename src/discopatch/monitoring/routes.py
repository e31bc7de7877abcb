"""The service's API routes (scoring, streams, images, probes, metrics) on an :class:`~fastapi.APIRouter` that
:func:`discopatch.monitoring.service.create_app` includes.

Every 404 the routes answer goes through :func:`not_found` (``{"detail": ...}``), unknown streams through
:func:`known_stream`; unmatched paths get Starlette's own 404 through the same HTTPException handler."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any
from urllib.parse import urlencode

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from PIL import Image
from sqlalchemy.exc import SQLAlchemyError

from .._version import __version__
from ..explain import Explanation, overlay_png
from ..results import finite_or_none
from .limits import MAX_ID
from .metrics import CONTENT_TYPE, Metrics
from .payloads import read_items
from .schemas import (
    STREAM_NAME_PATTERN,
    Alert,
    Health,
    HeatMap,
    Live,
    ModelInfo,
    Ready,
    RecordedImage,
    ScoreHistogram,
    ScoreResponse,
    StreamListEntry,
    StreamResponse,
    StreamStatus,
    error_responses,
    images_body,
)
from .scoring import Item
from .store import StreamConflict, StreamNotFound
from .streams import KeyReused, StreamRecorder, check_idempotency_key, check_stream_name, payload_fingerprint

SOURCE_ID = Query(None, max_length=1024, description="source id of a raw image/* body (default: image)")
#: The ``{name}`` of the stream routes: documented with its pattern (other names are answered 400, not 422).
NAME = PathParam(description="stream name", json_schema_extra={"pattern": STREAM_NAME_PATTERN, "maxLength": 128})


def score_histogram(
    window: np.ndarray, calibration: np.ndarray, bins: int, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width bin edges spanning both score sets (and a finite threshold, so it falls on the chart), and the
    counts of each set per bin."""
    both = np.concatenate([window, calibration, [threshold] if threshold is not None else []])
    edges = np.histogram_bin_edges(both, bins=bins)
    return edges, np.histogram(window, edges)[0], np.histogram(calibration, edges)[0]


def heatmap_png(explanation: dict[str, Any], thumbnail: bytes) -> bytes:
    """A kept explanation's overlay over its thumbnail with the legend strip below it (colour ramp, the score and
    which view set it) and the caption as the PNG's ``Description``: :func:`discopatch.explain.overlay_png`, the
    ``score --heatmaps`` picture. The thumbnail is first scaled up (nearest neighbour) to the preprocessed
    size when it was stored smaller."""
    size = int(explanation["image_size"])
    with Image.open(io.BytesIO(thumbnail)) as im:
        backdrop = im if im.size == (size, size) else im.resize((size, size), Image.Resampling.NEAREST)
        return overlay_png(Explanation.from_dict(explanation, np.asarray(backdrop)))


def not_found(detail: str) -> HTTPException:
    """The 404 of every route here: raise it, the client gets ``{"detail": detail}``."""
    return HTTPException(404, detail)


@contextmanager
def known_stream(name: str) -> Iterator[None]:
    """Turn :class:`~discopatch.monitoring.store.StreamNotFound` inside the block into the 404 of an unknown stream."""
    try:
        yield
    except StreamNotFound:
        raise not_found(f"no stream named {name!r}") from None


def api_router(
    recorder: StreamRecorder,
    metrics: Metrics,
    *,
    max_images: int,
    max_image_bytes: int,
    timeout_s: float | None,
    token_all: bool,
) -> APIRouter:
    """The API routes of one app, sharing its recorder (and through it the detector and store) and metrics."""
    router = APIRouter()
    detector = recorder.detector

    async def _scored(request: Request, items: list[Item]) -> tuple[list[dict[str, Any]], dict[int, Any]]:
        """Score ``items`` in the thread pool; 503 after ``timeout_s``. On a timeout, or when the client goes away,
        the scorer is cancelled: its queued decodes are dropped rather than holding the pool for later requests."""
        cancel = threading.Event()
        work = asyncio.ensure_future(run_in_threadpool(recorder.scorer.score, items, cancel))
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                done, _ = await asyncio.wait({work}, timeout=0.5 if left is None else max(0.0, min(0.5, left)))
                if done:
                    return work.result()
                if deadline is not None and time.monotonic() >= deadline:
                    raise HTTPException(
                        503,
                        f"scoring did not finish within the {timeout_s:g} s request timeout; send fewer images or "
                        "retry",
                        headers={"retry-after": "5"},
                    )
                if await request.is_disconnected():
                    raise HTTPException(503, "the client went away before scoring finished")
        finally:
            if not work.done():
                cancel.set()
                work.add_done_callback(lambda w: w.cancelled() or w.exception())  # a Cancelled nobody waits for

    def _check_name(name: str) -> None:
        try:
            check_stream_name(name)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

    body = images_body(max_images)
    posted = error_responses(400, 401, 413, 415, 422, 503)
    read = error_responses(400, 401, 404, 422, 503)  # a stream's GET routes
    image = error_responses(401, 404, 422, 503)

    @router.post("/v1/score", response_model=ScoreResponse, openapi_extra=body, tags=["scoring"], responses=posted)
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
        results, explained = await _scored(request, items)
        metrics.count_images(results)
        if explain:
            for r in results:
                if r["index"] in explained:
                    r["explanation"] = explained[r["index"]].to_dict()
        cal = recorder.calibration
        return {
            "results": results,
            "n_images": len(results),
            "n_errors": sum(r["error"] is not None for r in results),
            "threshold": cal.threshold,
            "target_fpr": cal.target_fpr,
            "model_id": detector.detector_id,
            "meta": detector.meta(),
        }

    @router.post(
        "/v1/streams/{name}/images",
        response_model=StreamResponse,
        openapi_extra=body,
        tags=["streams"],
        responses=posted,
    )
    async def stream_images(
        request: Request,
        response: Response,
        name: str = NAME,
        source_id: str | None = SOURCE_ID,
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
                scored = await _scored(request, items)
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

    @router.get(
        "/v1/streams", tags=["streams"], response_model=list[StreamListEntry], responses=error_responses(401, 422, 503)
    )
    def streams(
        response: Response,
        limit: int = Query(1000, ge=1, le=10_000, description="streams per page"),
        after: str | None = Query(None, max_length=128, description="the last name of the previous page"),
    ) -> list[dict[str, Any]]:
        """Recorded streams by name with their current verdict summary, a page at a time; when there are more, a
        ``Link: <...>; rel="next"`` header gives the next page."""
        page = recorder.summaries(limit + 1, after)
        if len(page) > limit:
            page = page[:limit]
            query = urlencode({"limit": limit, "after": page[-1]["stream"]})
            response.headers["link"] = f'</v1/streams?{query}>; rel="next"'
        return [{k: s[k] for k in (*_SUMMARY, "updated")} for s in page]

    @router.get("/v1/streams/{name}/status", tags=["streams"], response_model=StreamStatus, responses=read)
    def stream_status(name: str = NAME) -> dict[str, Any]:
        """Window statistics and the drift verdict (alibi-detect keys plus counts and per-test results)."""
        _check_name(name)
        with known_stream(name):
            return recorder.status(name)

    @router.get("/v1/streams/{name}/alerts", tags=["streams"], response_model=list[Alert], responses=read)
    def stream_alerts(name: str = NAME, limit: int = Query(100, ge=1, le=10_000)) -> list[dict[str, Any]]:
        """Drift alerts of the stream, newest first."""
        _check_name(name)
        with known_stream(name):
            return recorder.store.alerts(name, limit)

    @router.get("/v1/streams/{name}/images", tags=["streams"], response_model=list[RecordedImage], responses=read)
    def stream_images_list(
        name: str = NAME,
        limit: int = Query(200, ge=1, le=10_000),
        flagged: bool | None = None,
        after_seq: int | None = Query(None, ge=-MAX_ID, le=MAX_ID),
    ) -> list[dict[str, Any]]:
        """Recorded images, oldest first (the latest ``limit``); ``thumbnail`` is a URL when one was kept."""
        _check_name(name)
        with known_stream(name):
            rows = recorder.store.images(name, limit, flagged=flagged, after_seq=after_seq)
        for r in rows:
            r["thumbnail"] = f"/v1/images/{r['id']}/thumbnail.png" if r.pop("has_thumbnail") else None
            r["heatmap"] = f"/v1/images/{r['id']}/heatmap.png" if r.pop("has_explanation") else None
        return rows

    @router.get("/v1/streams/{name}/histogram", tags=["streams"], response_model=ScoreHistogram, responses=read)
    def stream_histogram(name: str = NAME, bins: int = Query(30, ge=2, le=200)) -> dict[str, Any]:
        """The drift window's scores against the calibration scores, counted over the same ``bins`` bins."""
        _check_name(name)
        with known_stream(name):
            window = recorder.window_scores(name)
        cal = recorder.calibration
        edges, w, c = score_histogram(window, cal.scores, bins, finite_or_none(cal.threshold))
        return {
            "stream": name,
            "edges": edges.tolist(),
            "window": w.tolist(),
            "calibration": c.tolist(),
            "n_window": len(window),
            "n_calibration": cal.n,
            "threshold": finite_or_none(cal.threshold),
        }

    png_responses = {200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}} | image

    def _explanation(image_id: int) -> dict[str, Any]:
        data = recorder.store.explanation(image_id)
        if data is None:
            raise not_found(
                "no heat map kept for this image: it is kept with the thumbnail (see --thumbnails), for images "
                "recorded since heat maps were stored",
            )  # fmt: skip
        return data

    @router.get("/v1/images/{image_id}/explanation", tags=["streams"], response_model=HeatMap, responses=image)
    def image_explanation(image_id: int = PathParam(ge=1, le=MAX_ID)) -> dict[str, Any]:
        """The heat-map data of a recorded image, kept from the pass that scored it (on the full preprocessed
        image, whatever the thumbnail's size)."""
        return _explanation(image_id)

    @router.get("/v1/images/{image_id}/heatmap.png", tags=["streams"], response_class=Response, responses=png_responses)
    def image_heatmap(image_id: int = PathParam(ge=1, le=MAX_ID)) -> Response:
        """The kept heat map over the kept thumbnail (blue: real-like patches, red: fake-like). The map is exact;
        the picture under it is the thumbnail, scaled up to the preprocessed size when it is smaller."""
        data = _explanation(image_id)
        png = recorder.store.thumbnail(image_id)
        if png is None:
            raise not_found("no thumbnail for this image")
        return Response(heatmap_png(data, png), media_type="image/png", headers={"cache-control": "max-age=86400"})

    @router.get(
        "/v1/images/{image_id}/thumbnail.png", tags=["streams"], response_class=Response, responses=png_responses
    )
    def thumbnail(image_id: int = PathParam(ge=1, le=MAX_ID)) -> Response:
        """The preprocessed image as the detector saw it (kept for flagged images by default)."""
        png = recorder.store.thumbnail(image_id)
        if png is None:
            raise not_found("no thumbnail for this image")
        return Response(png, media_type="image/png", headers={"cache-control": "max-age=86400"})

    def _database_problem() -> str | None:
        """Why the database cannot serve this app now, or None. Probed on each call, so health recovers by itself:
        ``SELECT 1``, and while the last write has failed, a rolled-back write that clears the failure if it works
        (a database can answer reads and still refuse writes: read-only, full, a missing table)."""
        failed = recorder.last_write_error
        try:
            recorder.store.probe(write=failed is not None)
        except SQLAlchemyError as e:
            cause = recorder.failures.failed("probe", "readiness", e)
            return f"database unhealthy: {failed}" if failed else f"database unreachable: {cause}"
        if failed is not None and recorder.last_write_error == failed:
            recorder.last_write_error = None
        return None

    @router.get("/healthz", tags=["service"], response_model=Health, responses=error_responses(503))
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

    @router.get("/livez", tags=["service"], response_model=Live)
    def livez() -> dict[str, str]:
        """Liveness: the process answers (always 200; a failing database does not make it 503)."""
        return {"status": "ok"}

    @router.get("/readyz", tags=["service"], response_model=Ready, responses={503: {"model": Ready}})
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

    @router.get("/v1/model", tags=["service"], response_model=ModelInfo, responses=error_responses(401))
    def model_info() -> dict[str, Any]:
        """The served detector: model id, calibrated threshold and what a heat map's coordinates refer to."""
        cal = recorder.calibration
        return {
            "model_id": detector.detector_id,
            "preset": detector.preset.name,
            "score_mode": detector.preset.score_mode,
            "threshold": finite_or_none(cal.threshold),
            "target_fpr": cal.target_fpr,
            "n_calibration": cal.n,
            "image_size": detector.preprocess_config.image_size,
            "patch_size": detector.model_config.patch_size,
            "n_patches": detector.n_patches,
        }

    @router.get(
        "/metrics", tags=["service"], response_class=PlainTextResponse, responses=error_responses(401, text_route=True)
    )
    def prometheus() -> Response:
        """Prometheus text exposition format (version 0.0.4)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return router


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
