"""Evaluate a detector: ID scores once, then every OOD set against them, through the same pipeline.

Both ways in - images in memory or folders (:func:`evaluate`) and streamed file lists, ImageNet-C and the
official pipelines (:func:`discopatch.evaluation.reproduce.evaluate_sources`) - score through
:meth:`~discopatch.detector.Detector.score_items` and meet in :func:`evaluate_results`.

Every output names the detector it judged with: the result's ``meta`` carries its ``model_id`` and ``threshold``,
and each set's ``flagged`` is the share of its images above that threshold (for the ID set, the false-positive rate
actually met, to compare with the target).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.sources import Images, ImageSet
from ..detector import Detector
from ..errors import ConfigError, NoReadableImagesError
from ..metrics import auroc_ci, format_table, ood_metrics
from ..results import ImageResult


@dataclass
class EvaluationResult:
    id_name: str
    n_id: int
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    unreadable: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    #: Share of the ID images above the threshold (``None`` for an uncalibrated detector).
    id_flagged: float | None = None
    #: The scores behind the rows, kept for the report's figures and confidence intervals (not in :meth:`to_dict`).
    id_scores: np.ndarray | None = field(default=None, repr=False)
    ood_scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def table(self) -> str:
        return format_table(self.rows, title=f"ID: {self.id_name} ({self.n_id} images); higher AUROC = better")

    def add_auroc_ci(self, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> None:
        """Add ``auroc_ci95`` (``[low, high]``, :func:`~discopatch.metrics.auroc_ci`) to every row with scores."""
        if self.id_scores is None:
            return
        for name, scores in self.ood_scores.items():
            self.rows[name]["auroc_ci95"] = list(auroc_ci(self.id_scores, scores, n_boot, level, seed))

    def add_set(self, det: Detector, name: str, scores: np.ndarray) -> None:
        """The metrics of one OOD set against the ID scores, with its ``flagged`` share when calibrated."""
        assert self.id_scores is not None
        self.rows[name] = ood_metrics(self.id_scores, scores)
        flagged = flagged_share(det, scores)
        if flagged is not None:
            self.rows[name]["flagged"] = flagged
        self.ood_scores[name] = scores

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": {"name": self.id_name, "n": self.n_id, "flagged": self.id_flagged},
            "ood": self.rows,
            "unreadable": {k: [{"path": p, "error": e} for p, e in v] for k, v in self.unreadable.items() if v},
            "seconds": round(self.seconds, 3),
            "meta": self.meta,
        }


def flagged_share(det: Detector, scores: np.ndarray) -> float | None:
    """Share of ``scores`` the detector flags at its calibrated threshold (``None`` when uncalibrated)."""
    return None if det.calibration is None else float(np.mean(det.calibration.is_ood(scores)))


def with_id_scores(det: Detector, id_name: str, id_scores: np.ndarray) -> EvaluationResult:
    """An empty result for ID scores already computed: their count, flagged share and the detector's ``meta``."""
    return EvaluationResult(
        id_name=id_name,
        n_id=len(id_scores),
        meta=det.meta(),
        id_flagged=flagged_share(det, id_scores),
        id_scores=id_scores,
    )


def collect(results: Iterable[ImageResult]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """The scores of the readable inputs (float64, in order) and ``(source, error)`` for the others."""
    scores: list[float] = []
    errors: list[tuple[str, str]] = []
    for r in results:
        if r.score is None:
            errors.append((r.source, r.error or "unreadable input"))
        else:
            scores.append(r.score)
    return np.array(scores, dtype=np.float64), errors


def evaluate_results(
    det: Detector,
    id_name: str,
    id_results: Iterable[ImageResult],
    ood_results: Iterable[tuple[str, Iterable[ImageResult]]],
) -> EvaluationResult:
    """The metrics of each OOD set's per-image results against the ID set's, unreadable inputs listed apart.

    ``ood_results`` is consumed lazily, so each set is scored only when its turn comes (progress stays in order).
    """
    t0 = time.monotonic()
    id_scores, id_errors = collect(id_results)
    if len(id_scores) == 0:
        raise NoReadableImagesError(f"the ID set {id_name!r} has no readable images{_first_error(id_errors)}")
    res = with_id_scores(det, id_name, id_scores)
    res.unreadable[id_name] = id_errors
    for name, results in ood_results:
        scores, errors = collect(results)
        res.unreadable[name] = errors
        if len(scores) == 0:
            raise NoReadableImagesError(f"OOD set {name!r} has no readable images{_first_error(errors)}")
        res.add_set(det, name, scores)
    res.seconds = time.monotonic() - t0
    return res


def _first_error(errors: list[tuple[str, str]]) -> str:
    """`` (N unreadable, first: MESSAGE)``: the message names the file, so the folder it came from is named too."""
    return f" ({len(errors)} unreadable, first: {errors[0][1]})" if errors else ""


def evaluate(
    det: Detector,
    id_images: Images | ImageSet,
    ood_sets: Mapping[str, Images | ImageSet],
    id_name: str = "id",
    progress: bool = False,
) -> EvaluationResult:
    """AUROC, both FPR@95 conventions, AUPR-In and AUPR-Out for each OOD set (OOD = positive class), and the share
    flagged at the threshold when the detector is calibrated.

    Unreadable files are skipped and listed in ``unreadable``; they never change the other images' scores.
    """

    def scored(images: Images | ImageSet) -> Iterable[ImageResult]:
        return det.score_items(images if isinstance(images, ImageSet) else det.read(images, progress=progress))

    return evaluate_results(det, id_name, scored(id_images), ((name, scored(x)) for name, x in ood_sets.items()))


def parse_named_dir(spec: str) -> tuple[str, str]:
    """``NAME=DIR`` -> (NAME, DIR); a bare DIR is named after its last path component."""
    if "=" in spec:
        name, _, path = spec.partition("=")
        if not name or not path:
            raise ConfigError(f"expected NAME=DIR, got {spec!r}")
        return name, path
    return os.path.basename(os.path.normpath(spec)) or spec, spec
