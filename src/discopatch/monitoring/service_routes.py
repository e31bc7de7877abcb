"""The service area of the API: the probes (``/healthz``, ``/livez``, ``/readyz``), the served model
(``/v1/model``) and the Prometheus metrics (``/metrics``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.exc import SQLAlchemyError

from .._version import __version__
from ..results import finite_or_none
from .metrics import CONTENT_TYPE, Metrics
from .schemas import Health, Live, ModelInfo, Ready, error_responses
from .streams import StreamRecorder


def service_router(recorder: StreamRecorder, metrics: Metrics, *, token_all: bool) -> APIRouter:
    """The service routes on their own router: the probes first, then the model and the metrics."""
    router = APIRouter()
    _add_probes(router, recorder, token_all)
    _add_model_and_metrics(router, recorder, metrics)
    return router


def database_problem(recorder: StreamRecorder) -> str | None:
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


def _add_probes(router: APIRouter, recorder: StreamRecorder, token_all: bool) -> None:
    """``/healthz``, ``/livez`` and ``/readyz``."""
    detector = recorder.detector

    @router.get("/healthz", tags=["service"], response_model=Health, responses=error_responses(503))
    def healthz() -> dict[str, Any]:
        """Health of the process and its database: 503 when the database is unreachable or the last write to it
        failed."""
        problem = database_problem(recorder)
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
            "database": database_problem(recorder) or "ok",
        }
        ready = all(v == "ok" for v in checks.values())
        body = {"status": "ready" if ready else "not ready", "checks": checks, "model_id": detector.detector_id}
        return body if ready else JSONResponse(body, status_code=503)


def _add_model_and_metrics(router: APIRouter, recorder: StreamRecorder, metrics: Metrics) -> None:
    """``/v1/model`` and ``/metrics``."""
    detector = recorder.detector

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
            "patch_aggregate": detector.preset.patch_aggregate,
            "n_patches_kept": detector.patches_kept,
        }

    @router.get(
        "/metrics", tags=["service"], response_class=PlainTextResponse, responses=error_responses(401, text_route=True)
    )
    def prometheus() -> Response:
        """Prometheus text exposition format (version 0.0.4)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)
