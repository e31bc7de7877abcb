"""The recorded-image area of the API (``/v1/images/{image_id}/...``): a kept heat map as data or as a picture over
the kept thumbnail, and the thumbnail itself."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi import Path as PathParam

from .limits import MAX_ID
from .routes import heatmap_png, not_found
from .schemas import HeatMap, error_responses
from .streams import StreamRecorder


def image_router(recorder: StreamRecorder) -> APIRouter:
    """The image routes on their own router, reading the app's store through its recorder."""
    router = APIRouter()
    image = error_responses(401, 404, 422, 503)
    png_responses = {200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}} | image

    @router.get("/v1/images/{image_id}/explanation", tags=["streams"], response_model=HeatMap, responses=image)
    def image_explanation(image_id: int = PathParam(ge=1, le=MAX_ID)) -> dict[str, Any]:
        """The heat-map data of a recorded image, kept from the pass that scored it (on the full preprocessed
        image, whatever the thumbnail's size)."""
        return _explanation(recorder, image_id)

    @router.get("/v1/images/{image_id}/heatmap.png", tags=["streams"], response_class=Response, responses=png_responses)
    def image_heatmap(image_id: int = PathParam(ge=1, le=MAX_ID)) -> Response:
        """The kept heat map over the kept thumbnail (blue: real-like patches, red: fake-like). The map is exact;
        the picture under it is the thumbnail, scaled up to the preprocessed size when it is smaller."""
        data = _explanation(recorder, image_id)
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

    return router


def _explanation(recorder: StreamRecorder, image_id: int) -> dict[str, Any]:
    """The kept heat-map data of an image, or the 404 that says when one is kept."""
    data = recorder.store.explanation(image_id)
    if data is None:
        raise not_found(
            "no heat map kept for this image: it is kept with the thumbnail (see --thumbnails), for images "
            "recorded since heat maps were stored",
        )  # fmt: skip
    return data
