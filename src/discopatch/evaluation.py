"""Evaluate a detector: ID scores once, then every OOD set against them, through the same pipeline.

Every output names the detector it judged with: the result's ``meta`` carries its ``model_id`` and ``threshold``,
and each set's ``flagged`` is the share of its images above that threshold (for the ID set, the false-positive rate
actually met, to compare with the target).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .data.sources import ImageSet
from .detector import Detector, Images
from .metrics import auroc_ci, format_table, ood_metrics


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


def _as_set(det: Detector, images: Images | ImageSet, progress: bool) -> ImageSet:
    if isinstance(images, ImageSet):
        return images
    return det.read(images, progress=progress)


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
    t0 = time.monotonic()
    id_set = _as_set(det, id_images, progress)
    if len(id_set) == 0:
        raise ValueError("the ID set has no readable images")
    res = with_id_scores(det, id_name, det.score_preprocessed(id_set.images))
    res.unreadable[id_name] = id_set.errors
    for name, images in ood_sets.items():
        s = _as_set(det, images, progress)
        res.unreadable[name] = s.errors
        if len(s) == 0:
            raise ValueError(f"OOD set {name!r} has no readable images")
        res.add_set(det, name, det.score_preprocessed(s.images))
    res.seconds = time.monotonic() - t0
    return res


def parse_named_dir(spec: str) -> tuple[str, str]:
    """``NAME=DIR`` -> (NAME, DIR); a bare DIR is named after its last path component."""
    if "=" in spec:
        name, _, path = spec.partition("=")
        if not name or not path:
            raise ValueError(f"expected NAME=DIR, got {spec!r}")
        return name, path
    return os.path.basename(os.path.normpath(spec)) or spec, spec
