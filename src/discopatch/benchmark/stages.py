"""The benchmark's stages beyond the main row: training variants, ablations, mixed batches, drift-test power.

Each stage takes the trained main detector and the run's :class:`StageInputs` (the images, the shared
:class:`~discopatch.benchmark.sets.Sets`, the preset, the budget, the seed) as one object; the variants and norm
ablations train through :func:`_train` with the budget chosen by :func:`_ablation_budget`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import NormKind, Preset
from ..data.corruptions import CORRUPTIONS
from ..detector import Detector
from ..inference.engine import score_array
from ..log import progress_bar
from .ablations import layerwise_discriminator, mixed_batch_aurocs
from .datasets import ProtocolData
from .drift import UntrainedAutoencoderFeatures, images_for_power, ks_test, mean_score_test, mmd_test
from .sets import Budget, Sets

#: The norms D is retrained with in the ablation stage, against its per-image statistics.
NORM_ABLATIONS: tuple[NormKind, ...] = ("batchnorm", "groupnorm", "instancenorm")


@dataclass(frozen=True)
class StageInputs:
    """What the stages of one benchmark run share: the protocol's images, the scored sets, the ID training images
    through the shared pipeline, the DisCoPatch preset, the budget, the seed and whether to show progress."""

    data: ProtocolData
    sets: Sets
    train_stack: np.ndarray
    preset: Preset
    budget: Budget
    seed: int
    progress: bool


def _train(
    preset: Preset,
    data: ProtocolData,
    seconds: float | None,
    seed: int,
    progress: bool,
    on_detector: Callable[[Detector], None] | None = None,
    **train: Any,
) -> Detector:
    """Train a variant on the protocol's ID images for ``seconds`` (or until ``max_steps`` in ``train``).

    ``on_detector`` sees the detector before training starts (so a step callback can read its trainer).
    """
    if seconds is not None:
        train = {"epochs": 10_000, **train}  # a time budget: no epoch count may cut it short
    return train_main(preset, data, seed, progress, on_detector, max_time=seconds, **train)


def train_main(
    preset: Preset,
    data: ProtocolData,
    seed: int,
    progress: bool,
    on_detector: Callable[[Detector], None] | None = None,
    **fit_options: Any,
) -> Detector:
    """DisCoPatch trained as ``discopatch fit`` trains it: the same :meth:`Detector.fit`, so the same budget rule
    (:func:`discopatch.budget.effective_train_config`) turns the preset and ``fit_options`` (``max_steps``,
    ``max_time``, ``epochs``; ``None``: not given) into the steps that run."""
    det = Detector(preset, device="cpu", seed=seed, engine="torch")
    if on_detector is not None:
        on_detector(det)
    det.fit(data.id_train, progress=progress, **fit_options)
    return det


def _ablation_budget(budget: Budget) -> tuple[float | None, dict[str, Any], str]:
    """How long a variant or norm ablation trains: (seconds, fit keywords, label suffix)."""
    if budget.ablation_steps:
        return None, {"max_steps": budget.ablation_steps}, "step budget"
    return budget.ablation_train, {}, f"{budget.ablation_train:.0f} s budget"


def trained_variants(preset: Preset) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Training variants measured against the main model: the other training grouping, D's first norm, EMA.

    Each maps a label to (model overrides, training overrides).
    """
    other = (
        (f"training groups = {preset.train.batch_images} images' patches (the paper's)", {"grouping": "domain"})
        if preset.train.grouping == "image"
        else ("training groups = one image's patches", {"grouping": "image"})
    )
    return {
        other[0]: ({}, other[1]),
        "no normalisation in D's first layer": ({"norm_first_layer": False}, {}),
        "EMA of D's weights (0.999)": ({}, {"ema": 0.999}),
    }


def _with_statistics(det: Detector, stack: np.ndarray, mode: str) -> Detector:
    """A detector sharing ``det``'s D that also scores the per-image statistics, fitted on the same ID split."""
    from ..data.sources import split_train_val

    tr, va = split_train_val([f"#{i}" for i in range(len(stack))], det.preset.train.val_fraction, det.seed)
    out = Detector(det.preset.replace(score_mode=mode), device="cpu", seed=det.seed, engine="torch")
    out.discriminator = det.discriminator
    return out.fit_statistics(stack[tr], stack[va])


def variant_stage(det: Detector, run: StageInputs, record: Callable[..., None]) -> None:
    """Statistics-aware scores on the main model, then each training variant (D alone and fused)."""
    train_stack, preset = run.train_stack, run.preset
    for mode, label in (
        ("fused", "DisCoPatch + per-image statistics (fused)"),
        ("stats-only", "per-image statistics only"),
    ):
        t0 = time.monotonic()
        d2 = _with_statistics(det, train_stack, mode)
        record(
            label,
            "variant",
            d2.score_preprocessed,
            time.monotonic() - t0,
            "same D; statistics model fitted on the ID training split, fusion scales on the validation split",
        )
    for label, (model_kw, train_kw) in trained_variants(preset).items():
        p_var = preset.replace(model=dataclasses.replace(preset.model, **model_kw))
        t0 = time.monotonic()
        seconds, kw, how = _ablation_budget(run.budget)
        d_var = _train(p_var, run.data, seconds, run.seed, run.progress, **train_kw, **kw)
        t_train = time.monotonic() - t0
        steps = f"{d_var.training_info['steps']} steps ({how})"
        record(f"variant: {label}", "variant", d_var.score_preprocessed, t_train, steps)
        record(
            f"variant: {label} + statistics (fused)",
            "variant",
            _with_statistics(d_var, train_stack, "fused").score_preprocessed,
            t_train,
            steps,
        )


def _pooled(det: Detector, images: np.ndarray, pool: int) -> np.ndarray:
    """Leaky scoring: consecutive groups of ``pool`` images share statistics (remainder scored per group too)."""
    out = np.empty(len(images))
    full = len(images) - len(images) % pool
    if full:
        out[:full] = det.score_preprocessed(images[:full], pool_images=pool)
    if full < len(images):
        rest = images[full:]
        out[full:] = det.score_preprocessed(rest, pool_images=len(rest))
    return out


def mixed_stage(det: Detector, sets: Sets, budget: Budget, seed: int) -> dict[str, list[dict[str, float]]]:
    """Mixed batches against three kinds of OOD: a mid-severity corruption, a near and a far set."""
    choices = {
        "gaussian_noise/3": sets.covariate[("gaussian_noise", 3)],
        "defocus_blur/3": sets.covariate[("defocus_blur", 3)],
    }
    if sets.near:
        k = next(iter(sets.near))
        choices[f"near/{k}"] = sets.near[k]
    if sets.far:
        k = next(iter(sets.far))
        choices[f"far/{k}"] = sets.far[k]
    batch = min(64, len(sets.reference), *(len(v) for v in choices.values()))
    return {
        name: mixed_batch_aurocs(
            lambda x, pool: _pooled(det, x, pool),
            sets.reference,
            ood,
            batch=batch,
            n_batches=budget.mixed_batches,
            seed=seed,
        )
        for name, ood in choices.items()
    }


def ablation_stage(det: Detector, run: StageInputs, record: Callable[..., None]) -> None:
    """What the per-image statistics are worth: the leaky pooled mode, per-image statistics in one layer at a
    time (the others fixed at ID population values), and D retrained with each other norm."""
    D, n, seed = det.require_model(), det.n_patches, run.seed
    record(
        "leaky: statistics pooled over 64 test images",
        "ablation-leaky",
        lambda x: _pooled(det, x, 64),
        0.0,
        "NOT a valid detector: statistics cross images of one test set",
    )
    for k in range(len(D.blocks)):
        Dk = layerwise_discriminator(D, run.train_stack[: run.budget.layer_images], k, n, seed)
        record(
            f"per-image statistics in layer {k + 1} only",
            "ablation-layer",
            functools.partial(score_array, Dk, n_patches=n, seed=seed),
            0.0,
            "other layers: fixed ID population statistics",
        )
    for norm in NORM_ABLATIONS:
        p_norm = run.preset.replace(model=dataclasses.replace(run.preset.model, norm=norm))
        t0 = time.monotonic()
        seconds, kw, how = _ablation_budget(run.budget)
        d_norm = _train(p_norm, run.data, seconds, seed, run.progress, **kw)
        record(
            f"norm ablation: {norm}",
            "ablation-norm",
            d_norm.score_preprocessed,
            time.monotonic() - t0,
            f"{d_norm.training_info['steps']} steps ({how})",
        )


#: A two-sample batch test: (reference, batch) -> p-value.
BatchTest = Callable[[np.ndarray, np.ndarray], float]


def drift_power(det: Detector, run: StageInputs) -> dict[str, Any]:
    """Images needed for 80 % power at alpha 0.05: MMD and KS on UAE features vs the DisCoPatch mean-score test."""
    sets, budget, seed, progress = run.sets, run.budget, run.seed, run.progress
    uae = UntrainedAutoencoderFeatures(seed=seed)
    ref_imgs = sets.reference
    half = len(ref_imgs) // 2
    null_imgs, ref_part = ref_imgs[:half], ref_imgs[half:]
    feats_ref = uae.transform(ref_part)
    feats_null = uae.transform(null_imgs)
    s_ref = det.score_preprocessed(ref_part)
    s_null = det.score_preprocessed(null_imgs)
    shifts = {f"{c}/3": sets.covariate[(c, 3)] for c in CORRUPTIONS}
    shifts.update({f"near/{k}": v for k, v in sets.near.items()})
    shifts.update({f"far/{k}": v for k, v in sets.far.items()})
    out: dict[str, Any] = {
        "alpha": 0.05,
        "target_power": 0.8,
        "ns": list(budget.power_ns),
        "trials": budget.power_trials,
        "shifts": {},
    }
    kw: dict[str, Any] = dict(ns=budget.power_ns, n_trials=budget.power_trials, seed=seed)
    #: name -> (batch test, ID reference, ID null pool, what turns images into the test's inputs, reference cap)
    tests: dict[str, tuple[BatchTest, np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray], int | None]] = {
        "MMD (UAE features)": (
            lambda r, b: mmd_test(r, b, n_permutations=100, seed=seed),
            feats_ref,
            feats_null,
            uae.transform,
            200,
        ),
        "KS (UAE features)": (ks_test, feats_ref, feats_null, uae.transform, None),
        "DisCoPatch mean score": (
            lambda r, b: mean_score_test(r, b, seed=seed),
            s_ref,
            s_null,
            det.score_preprocessed,
            None,
        ),
    }
    out["type1_error"] = {
        name: images_for_power(fn, ref, null, null, **kw, max_ref=cap)["type1_error"]
        for name, (fn, ref, null, _, cap) in tests.items()
    }
    for shift, imgs in progress_bar(shifts.items(), desc="drift power", disable=not progress, unit="shift"):
        out["shifts"][shift] = {}
        for name, (fn, ref, _, transform, cap) in tests.items():
            r = images_for_power(fn, ref, None, transform(imgs), **kw, max_ref=cap)
            out["shifts"][shift][name] = {"n_for_power": r["n_for_power"], "power": r["power"]}
    return out
