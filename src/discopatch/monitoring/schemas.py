"""Request and response schemas of the HTTP service (pydantic models and the OpenAPI image request body)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from .. import score_modes
from ..row_layout import description

#: A stream name (``streams.STREAM_NAME``, written for JSON Schema): what the ``{name}`` path parameters accept.
STREAM_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def _multipart_images(max_images: int) -> dict[str, Any]:
    """Image files as the parts of a form, optionally named by ``source_id`` fields."""
    return {
        "schema": {
            "type": "object",
            "required": ["images"],
            "properties": {
                "images": {
                    "type": "array",
                    "items": {"type": "string", "contentMediaType": "application/octet-stream"},
                    "minItems": 1,
                    "description": f"image files, each part with a filename (at most {max_images}: 413 "
                    "over it); optional source_id fields name them, the i-th the i-th image",
                },
            },
        },
        # image bytes of any type: the server looks at the data, not at the part's declared type
        "encoding": {"images": {"contentType": "application/octet-stream"}},
    }


def _json_images(max_images: int) -> dict[str, Any]:
    """Images as base64 strings or ``{data, source_id}`` objects, with optional ``source_ids`` beside them."""
    image = {
        "anyOf": [
            {"type": "string", "contentEncoding": "base64"},
            {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": {"type": "string", "contentEncoding": "base64"},
                    "source_id": {"type": ["string", "null"]},
                },
            },
        ]
    }
    return {
        "schema": {
            "type": "object",
            "required": ["images"],
            "properties": {
                "images": {
                    "type": "array",
                    "items": image,
                    "minItems": 1,
                    "description": "base64 (a data: URL prefix is accepted), or {data, source_id}; at most "
                    f"{max_images} (413 over it)",
                },
                "source_ids": {
                    "type": ["array", "null"],
                    "description": "optional: the i-th names the i-th image (default: images[i])",
                    "items": {"type": ["string", "null"]},
                },
            },
        }
    }


def images_body(max_images: int) -> dict[str, Any]:
    """The ``requestBody`` of the scoring routes. At least one image, so that an empty request (answered 422) is
    outside the documented schema rather than a valid request refused; over ``max_images`` is 413, a limit of the
    server rather than a rule of the schema. What is inside an image string (bad base64, not an image) is that
    image's error in a 200, so the strings carry their encoding as an annotation (``contentEncoding``), not a
    ``format`` the request would be refused for."""
    raw = {
        "schema": {"type": "string", "format": "binary"},
        "description": "one raw image (png, jpeg, gif, webp, bmp or tiff); ?source_id= names it",
    }
    content = {
        "multipart/form-data": _multipart_images(max_images),
        "application/json": _json_images(max_images),
        "image/*": raw,
    }
    return {"requestBody": {"required": True, "content": content}}


def _score_mode_schema(schema: dict[str, Any]) -> None:
    """The registered score modes (:mod:`discopatch.score_modes`), read when the schema is generated, so a mode
    registered after import is listed too."""
    schema["description"] = score_modes.names_text()
    schema["enum"] = list(score_modes.NAMES)


#: A detector's score mode in a response: one of the registered names.
SCORE_MODE_FIELD: Any = Field(description=score_modes.names_text(), json_schema_extra=_score_mode_schema)


#: What a heat map can and cannot say; every explanation in a response carries it.
HEATMAP_NOTE = (
    "The map explains the discriminator's share of the score only (its mean is d_score). The per-image statistics "
    "of a fused score are global and have no position; source names the view that set the score."
)


class HeatMap(BaseModel):
    """D's per-patch contributions behind one score, from the scoring pass (:mod:`discopatch.inference.explain`)."""

    score: float = Field(description="the detector's score (the same as the result's score)")
    score_mode: str = SCORE_MODE_FIELD
    source: str = Field(description="the view that set the score: discriminator or statistics")
    d_score: float = Field(description="D's score: the mean of the contributions")
    d_z: float | None = Field(description="fused detectors: D's score on the fused robust z-scale")
    stats_z: float | None = Field(description="fused detectors: the statistics score on the fused z-scale")
    stats_score: float | None = Field(description="the statistics (Mahalanobis) score, when the detector has one")
    image_size: int = Field(description="side of the preprocessed square image the corners refer to")
    patch_size: int = Field(description="side of each patch in pixels")
    corners: list[Annotated[list[int], Field(min_length=2, max_length=2)]] = Field(
        description="each patch's top-left [y, x] in the preprocessed image"
    )
    contributions: list[float] = Field(
        description="per patch 1 - sigmoid(logit): near 1 D calls it fake-like, near 0 real-like"
    )
    note: str = Field(default=HEATMAP_NOTE, description="what the map explains")


class ScoredImage(BaseModel):
    """One image's outcome: the per-image values of the library's row layout (:data:`discopatch.row_layout.ROW_LAYOUT`;
    the threshold and model id come once per response), its position in the request and, on streams, its ids."""

    index: int = Field(description="position of the image in the request")
    source_id: str | None = Field(description="file name, the given source id, or images[i]")
    score: float | None = Field(description=description("score"))
    d_score: float | None = Field(default=None, description=description("d_score") + "; null for d-only detectors")
    p_value: float | None = Field(description=description("p_value"))
    is_ood: bool | None = Field(description=description("is_ood"))
    error: str | None = Field(description=description("error"))
    id: int | None = Field(default=None, description="database id (stream endpoints)")
    seq: int | None = Field(default=None, description="position in the stream (stream endpoints)")
    explanation: HeatMap | None = Field(
        default=None, description="POST /v1/score?explain=true only (absent otherwise): the heat-map data"
    )

    @model_serializer(mode="wrap")
    def _omit_absent_explanation(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        """Without ``explain=true`` the response keeps its earlier shape: no ``explanation`` key at all.

        No return annotation on purpose: pydantic would publish it as the model's schema in the OpenAPI document."""
        out = handler(self)
        if out.get("explanation") is None:
            out.pop("explanation", None)
        return out


MODEL_ID = "the detector's model id (hash of its saved files; null for a detector that was never saved)"


class ScoreResponse(BaseModel):
    results: list[ScoredImage]
    n_images: int
    n_errors: int
    threshold: float
    target_fpr: float
    model_id: str | None = Field(description=MODEL_ID)
    meta: dict[str, Any]


class StreamResponse(BaseModel):
    stream: str
    results: list[ScoredImage]
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
    """A stored image: the per-image values the database keeps (the row layout's, without ``d_score``)."""

    id: int
    seq: int
    time: float
    source_id: str | None
    score: float | None = Field(description=description("score"))
    p_value: float | None = Field(description=description("p_value"))
    is_ood: bool | None = Field(description=description("is_ood"))
    error: str | None = Field(description=description("error"))
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
    score_mode: str = SCORE_MODE_FIELD
    threshold: float | None = Field(description="score threshold (null: too few calibration images to flag any)")
    target_fpr: float
    n_calibration: int = Field(description="calibration (ID) scores behind the threshold and p-values")
    image_size: int = Field(description="side of the preprocessed square image")
    patch_size: int
    n_patches: int = Field(description="patches scored per image")
    patch_aggregate: str = Field(
        description="which of an image's patches D's score averages: mean (all, the paper's) or the least real "
        "share (top50, top25, top12; max: the single least real patch)",
        json_schema_extra={"enum": list(score_modes.PATCH_AGGREGATES)},
    )
    n_patches_kept: int = Field(description="patches D's score averages per image (n_patches for mean)")


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


class ValidationIssue(BaseModel):
    """One problem with a request's parameters (a 422's ``errors``)."""

    loc: list[str | int] = Field(description="where: path, query, header or body, then the parameter's name")
    msg: str
    type: str = Field(description="pydantic's error type, e.g. less_than_equal")


class ErrorBody(BaseModel):
    """The body of every error response of the service (4xx and 5xx alike)."""

    detail: str = Field(description="what went wrong and, where there is one, what to do")
    errors: list[ValidationIssue] | None = Field(
        default=None, description="422 for invalid parameters only: each problem found (absent otherwise)"
    )


#: When each error status is answered; :func:`error_responses` documents them with :class:`ErrorBody`.
ERROR_STATUSES = {
    400: "malformed request: a stream name outside the allowed pattern, a cut or unparsable body, a bad header",
    401: "missing or wrong bearer token (only when the server runs with --token)",
    404: "no such stream, image, thumbnail or heat map",
    413: "body, image count or an image over the server's limits",
    415: "a content type the route does not take",
    422: "invalid parameters, no images, or an Idempotency-Key reused with other images",
    503: "the database is unavailable, or scoring did not finish within the request timeout (see Retry-After)",
}


def error_responses(*statuses: int, text_route: bool = False) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route for the error ``statuses`` it can answer, all with the one :class:`ErrorBody`.

    ``text_route``: the route's own answer is not JSON (``/metrics``, ``/dashboard``); FastAPI would file the model
    under that media type, so the error body is referred to directly (the other routes register it)."""
    if text_route:
        ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        return {s: {"description": ERROR_STATUSES[s], "content": ref} for s in statuses}
    return {s: {"model": ErrorBody, "description": ERROR_STATUSES[s]} for s in statuses}
