"""Evaluate a detector: ID scores once, then every OOD set against them, through the same pipeline."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .data.sources import ImageSet
from .detector import Detector, Images
from .metrics import format_table, ood_metrics


@dataclass
class EvaluationResult:
    id_name: str
    n_id: int
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    unreadable: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        return format_table(self.rows, title=f"ID: {self.id_name} ({self.n_id} images); higher AUROC = better")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": {"name": self.id_name, "n": self.n_id},
            "ood": self.rows,
            "unreadable": {k: [{"path": p, "error": e} for p, e in v] for k, v in self.unreadable.items() if v},
            "seconds": round(self.seconds, 3),
            "meta": self.meta,
        }


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
    """AUROC, both FPR@95 conventions, AUPR-In and AUPR-Out for each OOD set (OOD = positive class).

    Unreadable files are skipped and listed in ``unreadable``; they never change the other images' scores.
    """
    t0 = time.monotonic()
    id_set = _as_set(det, id_images, progress)
    if len(id_set) == 0:
        raise ValueError("the ID set has no readable images")
    id_scores = det.score_preprocessed(id_set.images)
    res = EvaluationResult(id_name=id_name, n_id=len(id_set), meta=det.meta())
    res.unreadable[id_name] = id_set.errors
    for name, images in ood_sets.items():
        s = _as_set(det, images, progress)
        res.unreadable[name] = s.errors
        if len(s) == 0:
            raise ValueError(f"OOD set {name!r} has no readable images")
        res.rows[name] = ood_metrics(id_scores, det.score_preprocessed(s.images))
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


def mean_auroc(rows: Mapping[str, Mapping[str, float]], names: list[str] | None = None) -> float:
    keys = names if names is not None else list(rows)
    return float(np.mean([rows[k]["auroc"] for k in keys])) if keys else float("nan")
