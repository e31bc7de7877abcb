"""What a benchmark run measures on: its budget, the protocol's detector preset, the scored image sets, the summary.

:func:`build_sets` preprocesses every image stack once (the reference half, the controls, the corruption grid,
near- and far-OOD); :func:`evaluate_scores` scores them all with one method and :func:`summarise` reduces the
per-set metrics to the numbers the report and the learning curve compare.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import Preset
from ..data.corruptions import CORRUPTIONS, SEVERITIES
from ..data.corruptions import corrupt_batch as _corrupt_batch
from ..data.images import stack_images
from ..log import progress_bar
from ..metrics import ood_metrics
from ..presets import get_preset
from .datasets import ProtocolData


@dataclass(frozen=True, kw_only=True)
class Budget:
    """How long each model trains and the sizes of the expensive stages.

    DisCoPatch's main row trains as ``fit`` would (:func:`~discopatch.benchmark.stages.train_main`): the preset's
    own budget (``small``: 1,380 steps), or ``main_steps`` / ``main_train`` seconds where set, like ``fit``'s
    ``--max-steps`` / ``--max-time``. The other models train for the seconds given here.
    """

    main_train: float | None  # a time limit on the main row, as fit's --max-time (None: none)
    ablation_train: float
    svdd_train: float
    classifier_train: float
    power_trials: int
    power_ns: tuple[int, ...]
    n_values: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    mixed_batches: int = 8
    layer_images: int = 2000
    n_test: int | None = None  # ID test images (half reference, half target); None = the protocol's default
    n_ood: int | None = None  # images per near/far-OOD set
    n_train: int | None = None
    main_steps: int | None = None  # if set, DisCoPatch trains this many steps, as fit's --max-steps
    # if set, variants and norm ablations train this many steps instead of ablation_train seconds, and the main
    # model is also scored at this step (a snapshot), so every variant has a row trained exactly as long
    ablation_steps: int | None = None


#: Sized so one protocol finishes in about 45 minutes on one core of the 2-core dev machine (docs/BENCHMARKS.md).
FULL = Budget(
    main_train=None,
    ablation_train=180,
    svdd_train=60,
    classifier_train=150,
    power_trials=100,
    power_ns=(1, 2, 5, 10, 20, 50, 100, 200),
    n_test=800,
    n_ood=500,
)
FULL_PHOTOS = dataclasses.replace(
    FULL, ablation_train=150, classifier_train=120, n_test=400, n_ood=300, layer_images=600
)
#: The CI-sized smoke run: an explicit step count for the main row (as ``fit --max-steps 20``).
QUICK = Budget(
    main_train=None,
    ablation_train=2,
    svdd_train=2,
    classifier_train=2,
    power_trials=10,
    power_ns=(1, 5, 20),
    main_steps=20,
)


#: Each protocol's default preset: the one a user fits on such images (``small-photo`` for natural photos).
PROTOCOL_PRESETS = {"fmnist": "small", "photos": "small-photo"}


def protocol_preset(protocol: str, data: ProtocolData, preset: str | Preset | None = None) -> Preset:
    """The detector configuration for a protocol: ``preset`` (default: :data:`PROTOCOL_PRESETS`) as ``fit`` runs it.

    The images go through the preset's own preprocessing, as in ``fit``: ``fmnist`` (28 px) runs ``small`` at its
    64 px, ``photos`` (128 px crops) runs ``small-photo`` at 128 px, and ``--preset small`` on photos at 64 px.
    (Until 0.3 a preset smaller than the protocol's images was silently enlarged to them, so ``small`` on photos
    was measured at 128 px, a detector ``fit --preset small`` does not give.) The main row is the preset as trained
    by default (its own training groups: one image per group for ``small``, the pooled batch for ``paper``) scored
    with D alone, no EMA; the fused score and the other grouping are rows of their own (:func:`trained_variants`).
    """
    preset = PROTOCOL_PRESETS[protocol] if preset is None else preset
    p = get_preset(preset, channels=data.channels) if isinstance(preset, str) else preset
    return p.replace(
        score_mode="d-only",
        train=dataclasses.replace(p.train, ema=0.0),
        model=dataclasses.replace(p.model, norm_first_layer=True),
    )


@dataclass
class Sets:
    """Every preprocessed image stack the benchmark scores, by role."""

    reference: np.ndarray
    controls: dict[str, np.ndarray]
    covariate: dict[tuple[str, int], np.ndarray]
    near: dict[str, np.ndarray]
    far: dict[str, np.ndarray]

    def named(self) -> dict[str, np.ndarray]:
        out = dict(self.controls)
        out.update({f"{c}/{s}": v for (c, s), v in self.covariate.items()})
        out.update({f"near/{k}": v for k, v in self.near.items()})
        out.update({f"far/{k}": v for k, v in self.far.items()})
        return out


def build_sets(data: ProtocolData, preset: Preset, seed: int, progress: bool) -> Sets:
    cfg = preset.preprocess
    test = stack_images(data.id_test, cfg)
    half = len(test) // 2
    reference, target = test[:half], test[half : 2 * half]
    controls = {"control/null": stack_images(target, cfg), "control/hflip": stack_images(target[:, :, ::-1], cfg)}
    covariate = {}
    grid = [(c, s) for c in CORRUPTIONS for s in SEVERITIES]
    for c, s in progress_bar(grid, desc="corrupting", disable=not progress, unit="set"):
        covariate[(c, s)] = stack_images(_corrupt_batch(target, c, s, seed=seed), cfg)
    near = {k: stack_images(v, cfg) for k, v in data.near_ood.items()}
    far = {k: stack_images(v, cfg) for k, v in data.far_ood.items()}
    return Sets(reference, controls, covariate, near, far)


def summarise(rows: dict[str, dict[str, float]], sets: Sets) -> dict[str, Any]:
    """Covariate grid, means per severity and overall, near/far means, controls."""
    cov = {c: {str(s): rows[f"{c}/{s}"]["auroc"] for s in SEVERITIES} for c in CORRUPTIONS}
    allcov = [rows[f"{c}/{s}"] for c in CORRUPTIONS for s in SEVERITIES]
    high = [rows[f"{c}/{s}"] for c in CORRUPTIONS for s in (3, 4, 5)]
    out = {
        "covariate_auroc": cov,
        "covariate_mean_auroc": float(np.mean([r["auroc"] for r in allcov])),
        "covariate_mean_auroc_sev345": float(np.mean([r["auroc"] for r in high])),
        "covariate_mean_fpr95_ood_positive": float(np.mean([r["fpr95_ood_positive"] for r in allcov])),
        "covariate_mean_by_severity": {
            str(s): float(np.mean([rows[f"{c}/{s}"]["auroc"] for c in CORRUPTIONS])) for s in SEVERITIES
        },
        "near_mean_auroc": float(np.mean([rows[f"near/{k}"]["auroc"] for k in sets.near])) if sets.near else None,
        "far_mean_auroc": float(np.mean([rows[f"far/{k}"]["auroc"] for k in sets.far])) if sets.far else None,
        "null_auroc": rows["control/null"]["auroc"],
        "hflip_auroc": rows["control/hflip"]["auroc"],
    }
    return out


def evaluate_scores(
    score_fn: Callable[[np.ndarray], np.ndarray], sets: Sets
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Score every set with ``score_fn``; returns (per-set metrics + summary, raw scores for plots)."""
    ref = score_fn(sets.reference)
    t0 = time.perf_counter()
    named = sets.named()
    raw = {"reference": ref}
    rows = {}
    n_scored = 0
    for name, imgs in named.items():
        s = score_fn(imgs)
        raw[name] = s
        n_scored += len(imgs)
        rows[name] = ood_metrics(ref, s)
    latency = (time.perf_counter() - t0) / max(n_scored, 1) * 1000
    return {"sets": rows, **summarise(rows, sets), "latency_ms_per_image": latency}, raw
