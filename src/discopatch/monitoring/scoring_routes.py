"""The scoring area of the API: ``POST /v1/score``, and :func:`scored`, the timed, cancellable scoring pass that it
shares with the stream route that records images."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from .metrics import Metrics
from .payloads import read_items
from .routes import SOURCE_ID
from .schemas import ScoreResponse, error_responses, images_body
from .scoring import Item
from .streams import StreamRecorder


async def scored(
    recorder: StreamRecorder, request: Request, items: list[Item], timeout_s: float | None
) -> tuple[list[dict[str, Any]], dict[int, Any]]:
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
                    f"scoring did not finish within the {timeout_s:g} s request timeout; send fewer images or retry",
                    headers={"retry-after": "5"},
                )
            if await request.is_disconnected():
                raise HTTPException(503, "the client went away before scoring finished")
    finally:
        if not work.done():
            cancel.set()
            work.add_done_callback(lambda w: w.cancelled() or w.exception())  # a Cancelled nobody waits for


def scoring_router(
    recorder: StreamRecorder, metrics: Metrics, max_images: int, max_image_bytes: int, timeout_s: float | None
) -> APIRouter:
    """``POST /v1/score`` on its own router, sharing the app's recorder (its detector and scorer) and metrics."""
    router = APIRouter()
    detector = recorder.detector
    posted = error_responses(400, 401, 413, 415, 422, 503)

    @router.post(
        "/v1/score", response_model=ScoreResponse, openapi_extra=images_body(max_images), tags=["scoring"],
        responses=posted,
    )  # fmt: skip
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
        results, explained = await scored(recorder, request, items, timeout_s)
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

    return router
