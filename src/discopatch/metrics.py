"""OOD metrics with unambiguous names (scikit-learn underneath).

Scores follow "higher = more OOD". Two FPR@95 conventions exist and both are reported under explicit names:

* ``fpr95_ood_positive`` (OpenOOD v1.5, DisCoPatch's code): the share of ID images flagged when the threshold
  catches 95 % of OOD images;
* ``fpr95_id_positive`` (the classic Hendrycks & Gimpel style): the share of OOD images accepted as ID when 95 %
  of ID images are accepted.

AUPR-In treats ID as positive (score negated), AUPR-Out treats OOD as positive.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from .errors import ConfigError


def _fpr_at_tpr(labels: np.ndarray, scores: np.ndarray, tpr_level: float) -> float:
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr, tpr_level, side="left")])


def ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """All metrics for one ID/OOD pair; NaN scores are an error, not silently dropped."""
    id_scores = np.asarray(id_scores, dtype=np.float64).ravel()
    ood_scores = np.asarray(ood_scores, dtype=np.float64).ravel()
    if id_scores.size == 0 or ood_scores.size == 0:
        raise ConfigError("both the ID and the OOD set need at least one score")
    if not (np.all(np.isfinite(id_scores)) and np.all(np.isfinite(ood_scores))):
        raise ConfigError("scores contain NaN or infinity")
    scores = np.concatenate([id_scores, ood_scores])
    is_ood = np.concatenate([np.zeros(id_scores.size, int), np.ones(ood_scores.size, int)])
    return {
        "auroc": float(roc_auc_score(is_ood, scores)),
        "fpr95_ood_positive": _fpr_at_tpr(is_ood, scores, 0.95),
        "fpr95_id_positive": _fpr_at_tpr(1 - is_ood, -scores, 0.95),
        "aupr_in": float(average_precision_score(1 - is_ood, -scores)),
        "aupr_out": float(average_precision_score(is_ood, scores)),
        "n_id": int(id_scores.size),
        "n_ood": int(ood_scores.size),
    }


def auroc_ci(
    id_scores: np.ndarray, ood_scores: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUROC (scikit-learn's ``roc_auc_score`` on each resample).

    The ID and the OOD scores are resampled separately, each keeping its size, since the two sets were drawn
    separately and an AUROC needs both; the fixed ``seed`` makes a report give the same interval on every run.
    """
    id_scores = np.asarray(id_scores, dtype=np.float64).ravel()
    ood_scores = np.asarray(ood_scores, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(id_scores.size), np.ones(ood_scores.size)]
    stats = [
        roc_auc_score(
            labels,
            np.r_[
                id_scores[rng.integers(0, id_scores.size, id_scores.size)],
                ood_scores[rng.integers(0, ood_scores.size, ood_scores.size)],
            ],
        )
        for _ in range(n_boot)
    ]
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def format_table(rows: dict[str, dict[str, float]], title: str = "") -> str:
    """A plain-text table (percentages), one row per OOD set, in the order given.

    ``FPR95(OOD+)`` is ``fpr95_ood_positive`` and ``FPR95(ID+)`` is ``fpr95_id_positive`` (module docstring);
    an optional ``flagged`` entry is the share of the set above the calibrated threshold.
    """
    flagged = any("flagged" in m for m in rows.values())
    head = ["set", "AUROC", "FPR95(OOD+)", "FPR95(ID+)", "AUPR-In", "AUPR-Out"] + (["flagged"] if flagged else [])
    head.append("n")
    body = []
    for name, m in rows.items():
        row = [
            name,
            f"{100 * m['auroc']:.1f}",
            f"{100 * m['fpr95_ood_positive']:.1f}",
            f"{100 * m['fpr95_id_positive']:.1f}",
            f"{100 * m['aupr_in']:.1f}",
            f"{100 * m['aupr_out']:.1f}",
        ]
        if flagged:
            row.append(f"{100 * m['flagged']:.1f}" if "flagged" in m else "")
        body.append([*row, str(m.get("n_ood", ""))])
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def fmt(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    lines = [title] if title else []
    lines += [fmt(head), "  ".join("-" * w for w in widths), *(fmt(r) for r in body)]
    return "\n".join(lines)
