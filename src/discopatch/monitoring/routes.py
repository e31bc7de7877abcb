"""What the service's API routes share: their common parameters, the 404 and 400 they answer, and the pictures and
histograms they draw. The routes themselves are grouped per area, each area on its own :class:`~fastapi.APIRouter`
(:mod:`.scoring_routes`, :mod:`.stream_routes`, :mod:`.image_routes`, :mod:`.service_routes`), which
:func:`discopatch.monitoring.api.api_router` puts together for :func:`discopatch.monitoring.service.create_app`.

Every 404 the routes answer goes through :func:`not_found` (``{"detail": ...}``), unknown streams through
:func:`known_stream`; unmatched paths get Starlette's own 404 through the same HTTPException handler."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from fastapi import HTTPException, Query
from fastapi import Path as PathParam
from PIL import Image

from ..inference.explain import Explanation, overlay_png
from .schemas import STREAM_NAME_PATTERN
from .store import StreamNotFound
from .streams import check_stream_name

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
    which view set it) and the caption as the PNG's ``Description``: :func:`discopatch.inference.explain.overlay_png`,
    the ``score --heatmaps`` picture. The thumbnail is first scaled up (nearest neighbour) to the preprocessed
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


def checked_name(name: str) -> None:
    """Answer 400 for a stream name the store would refuse (rather than FastAPI's 422 for a path pattern)."""
    try:
        check_stream_name(name)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None
