"""Request and response schemas of the HTTP service (pydantic models and the OpenAPI image request body)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

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
    def _omit_absent_explanation(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        """Without ``explain=true`` the response keeps its earlier shape: no ``explanation`` key at all.

        No return annotation on purpose: pydantic would publish it as the model's schema in the OpenAPI document."""
        out = handler(self)
        if out.get("explanation") is None:
            out.pop("explanation", None)
        return out


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
