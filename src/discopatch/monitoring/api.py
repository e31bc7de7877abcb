"""The service's API routes as one :class:`~fastapi.APIRouter`: the router of each area, in the order the OpenAPI
document lists them (scoring, streams, recorded images, then the service's probes, model and metrics)."""

from __future__ import annotations

from fastapi import APIRouter

from .image_routes import image_router
from .metrics import Metrics
from .scoring_routes import scoring_router
from .service_routes import service_router
from .stream_routes import stream_router
from .streams import StreamRecorder


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
    bounds = (max_images, max_image_bytes, timeout_s)
    router.include_router(scoring_router(recorder, metrics, *bounds))
    router.include_router(stream_router(recorder, metrics, *bounds))
    router.include_router(image_router(recorder))
    router.include_router(service_router(recorder, metrics, token_all=token_all))
    return router
