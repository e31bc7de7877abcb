"""Threshold and p-values from in-distribution scores only.

DisCoPatch is trained on ID images alone, so the decision threshold must come from held-out ID images as well
(unlike F1-optimal thresholds, which need labelled anomalies). With calibration scores c_1..c_n:

* conformal p-value of a score s: ``(1 + #{c_i >= s}) / (n + 1)`` - valid (P[p <= a] <= a) for exchangeable ID
  images whatever the score distribution;
* threshold at target false-positive rate a: the ``ceil((n + 1)(1 - a))``-th smallest c_i, so that
  ``score > threshold`` exactly when ``p_value <= a``.

That rank exists only when ``ceil((n + 1)(1 - a)) <= n``, i.e. ``n >= 1/a - 1``: below
:func:`min_calibration_images` (19 scores at a = 0.05, 99 at 0.01) the threshold is infinite and nothing is ever
flagged. ``fit`` and ``calibrate`` refuse that (``TooFewCalibrationImagesError``); a :class:`Calibration` itself
still accepts it, so detectors saved before the refusal load and say what is wrong.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class Calibration:
    scores: np.ndarray  # sorted ascending, float64
    target_fpr: float
    threshold: float

    @classmethod
    def from_scores(cls, scores: np.ndarray, target_fpr: float = 0.05) -> Calibration:
        s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
        if s.size == 0:
            raise ConfigError("calibration needs at least one in-distribution score")
        if not np.all(np.isfinite(s)):
            raise ConfigError("calibration scores contain NaN or infinity")
        if not 0.0 < target_fpr < 1.0:
            raise ConfigError(f"target_fpr must be in (0, 1), got {target_fpr}")
        return cls(scores=s, target_fpr=float(target_fpr), threshold=conformal_threshold(s, target_fpr))

    @property
    def n(self) -> int:
        return int(self.scores.size)

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        n_ge = self.n - np.searchsorted(self.scores, s, side="left")
        return (1.0 + n_ge) / (self.n + 1.0)

    def is_ood(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, dtype=np.float64) > self.threshold


def _rank(n: int, target_fpr: float) -> int:
    """The rank (1-based) of the threshold among ``n`` sorted calibration scores; ``> n`` means none exists."""
    return math.ceil((n + 1) * (1.0 - target_fpr))


def min_calibration_images(target_fpr: float) -> int:
    """The fewest calibration scores that give a finite threshold at ``target_fpr``: ``ceil(1 / a) - 1``, found
    with the same floating-point rule :func:`conformal_threshold` uses."""
    if not 0.0 < target_fpr < 1.0:
        raise ConfigError(f"target_fpr must be in (0, 1), got {target_fpr}")
    n = max(1, math.ceil(1.0 / target_fpr) - 2)
    while _rank(n, target_fpr) > n:
        n += 1
    return n


def conformal_threshold(sorted_scores: np.ndarray, target_fpr: float) -> float:
    n = sorted_scores.size
    k = _rank(n, target_fpr)
    if k > n:
        warnings.warn(
            f"{n} calibration images are too few for a {target_fpr:.3g} false-positive rate "
            f"(need at least {min_calibration_images(target_fpr)}); nothing will be flagged",
            stacklevel=3,
        )
        return math.inf
    return float(sorted_scores[k - 1])
