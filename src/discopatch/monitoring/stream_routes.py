"""The streams area of the API: recording images in a stream (``POST /v1/streams/{name}/images``) and reading a
stream back (the list of streams, a stream's status, alerts, recorded images and score histogram)."""

from __future__ import annotations

from functools import partial
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import SQLAlchemyError

from ..results import finite_or_none
from .limits import MAX_ID
from .metrics import Metrics
from .payloads import read_items
from .routes import NAME, SOURCE_ID, checked_name, known_stream, score_histogram
from .schemas import (
    Alert,
    RecordedImage,
    ScoreHistogram,
    StreamListEntry,
    StreamResponse,
    StreamStatus,
    error_responses,
    images_body,
)
from .scoring import Item
from .scoring_routes import scored
from .store import StreamConflict
from .streams import KeyReused, StreamRecorder, check_idempotency_key, payload_fingerprint

#: The error statuses of a stream's GET routes.
READ = error_responses(400, 401, 404, 422, 503)


def stream_router(
    recorder: StreamRecorder, metrics: Metrics, max_images: int, max_image_bytes: int, timeout_s: float | None
) -> APIRouter:
    """The stream routes on their own router, the recording route first (the order of the OpenAPI document)."""
    router = APIRouter()
    _add_recording_route(router, recorder, metrics, max_images, max_image_bytes, timeout_s)
    _add_listing_routes(router, recorder)
    _add_window_routes(router, recorder)
    return router


def _idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key`` header, checked (400 when malformed); 400 too for ``explain``, which only
    ``POST /v1/score`` takes."""
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
    return key


async def _record(
    recorder: StreamRecorder, request: Request, name: str, items: list[Item], key: str | None, timeout_s: float | None
) -> dict[str, Any]:
    """Score and record ``items`` in stream ``name``, or replay the response already recorded under ``key``; the
    failures that leave nothing recorded become 422 (a key reused for other images) or 503."""
    try:
        done = fingerprint = None
        if key is not None:  # a retry is answered before scoring; record() checks again in its transaction
            fingerprint = await run_in_threadpool(payload_fingerprint, items)
            done = await run_in_threadpool(recorder.replay, name, key, fingerprint)
        if done is not None:
            return done | {"replayed": True}
        results = await scored(recorder, request, items, timeout_s)
        record = partial(recorder.record, key=key, fingerprint=fingerprint)
        out: dict[str, Any] = await run_in_threadpool(record, name, items, results)
        return out
    except KeyReused as e:
        raise HTTPException(422, str(e)) from None
    except SQLAlchemyError as e:
        raise HTTPException(503, f"could not record the images: {type(e).__name__}") from None
    except StreamConflict as e:  # other writers kept getting in first, even after reloading
        raise HTTPException(503, f"could not record the images: {e}", headers={"retry-after": "1"}) from None


def _add_recording_route(
    router: APIRouter,
    recorder: StreamRecorder,
    metrics: Metrics,
    max_images: int,
    max_image_bytes: int,
    timeout_s: float | None,
) -> None:
    """``POST /v1/streams/{name}/images``."""
    posted = error_responses(400, 401, 413, 415, 422, 503)

    @router.post(
        "/v1/streams/{name}/images",
        response_model=StreamResponse,
        openapi_extra=images_body(max_images),
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
        checked_name(name)
        key = _idempotency_key(request)
        items = await read_items(request, max_images, max_image_bytes, source_id)
        out = await _record(recorder, request, name, items, key, timeout_s)
        if out["replayed"]:
            response.headers["idempotent-replayed"] = "true"
        else:
            metrics.count_images(out["results"])
        return out


def _add_listing_routes(router: APIRouter, recorder: StreamRecorder) -> None:
    """``GET /v1/streams`` (a page of streams), a stream's status and its alerts."""

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

    @router.get("/v1/streams/{name}/status", tags=["streams"], response_model=StreamStatus, responses=READ)
    def stream_status(name: str = NAME) -> dict[str, Any]:
        """Window statistics and the drift verdict (alibi-detect keys plus counts and per-test results)."""
        checked_name(name)
        with known_stream(name):
            return recorder.status(name)

    @router.get("/v1/streams/{name}/alerts", tags=["streams"], response_model=list[Alert], responses=READ)
    def stream_alerts(name: str = NAME, limit: int = Query(100, ge=1, le=10_000)) -> list[dict[str, Any]]:
        """Drift alerts of the stream, newest first."""
        checked_name(name)
        with known_stream(name):
            return recorder.store.alerts(name, limit)


def _add_window_routes(router: APIRouter, recorder: StreamRecorder) -> None:
    """A stream's recorded images and the histogram of its drift window's scores."""

    @router.get("/v1/streams/{name}/images", tags=["streams"], response_model=list[RecordedImage], responses=READ)
    def stream_images_list(
        name: str = NAME,
        limit: int = Query(200, ge=1, le=10_000),
        flagged: bool | None = None,
        after_seq: int | None = Query(None, ge=-MAX_ID, le=MAX_ID),
    ) -> list[dict[str, Any]]:
        """Recorded images, oldest first (the latest ``limit``); ``thumbnail`` is a URL when one was kept."""
        checked_name(name)
        with known_stream(name):
            rows = recorder.store.images(name, limit, flagged=flagged, after_seq=after_seq)
        for r in rows:
            r["thumbnail"] = f"/v1/images/{r['id']}/thumbnail.png" if r.pop("has_thumbnail") else None
            r["heatmap"] = f"/v1/images/{r['id']}/heatmap.png" if r.pop("has_explanation") else None
        return rows

    @router.get("/v1/streams/{name}/histogram", tags=["streams"], response_model=ScoreHistogram, responses=READ)
    def stream_histogram(name: str = NAME, bins: int = Query(30, ge=2, le=200)) -> dict[str, Any]:
        """The drift window's scores against the calibration scores, counted over the same ``bins`` bins."""
        checked_name(name)
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


#: The keys of a stream's summary that ``GET /v1/streams`` lists (with ``updated``).
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
