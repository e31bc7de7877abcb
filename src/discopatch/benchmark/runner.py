"""``discopatch benchmark``: DisCoPatch against its ablations and baselines on the same images, in one run.

Protocol (both ``fmnist`` and ``photos``):

* the ID test images are split in half: a *reference* half (the ID side of every AUROC) and a *target* half;
* covariate shift = the target half with each of the 15 corruptions at severities 1-5, through the same uint8
  pipeline; the *null* control is the clean target half through that same path (AUROC must be 0.50 +/- 0.02),
  the *hflip* control its horizontal mirror;
* near- and far-OOD sets come from :mod:`discopatch.benchmark.datasets`, preprocessed by the same function;
* every method is fitted on the same ID training images and scored on the same test images.

Methods: DisCoPatch (per-image statistics) and its norm ablations (each trained separately), the leaky pooled
mode, per-layer statistics; label-free baselines (VAE reconstruction / ELBO / input complexity, Deep SVDD, NMD);
label-based baselines in their own block; batch drift tests with the images needed for 80 % power; mixed batches
and the patch-count sweep. :mod:`discopatch.benchmark.report` turns the results into Markdown and HTML.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch

from .. import __version__
from ..config import Preset, get_preset
from ..data.corruptions import CORRUPTIONS, PARAM_SOURCES, SEVERITIES, resolve_params
from ..data.corruptions import corrupt_batch as _corrupt_batch
from ..data.images import stack_images
from ..detector import Detector
from ..engine import score_array
from ..log import progress_bar
from ..metrics import ood_metrics
from ..model import Discriminator
from .ablations import layerwise_discriminator, mixed_batch_aurocs, patch_count_sweep
from .baselines import (
    DeepSVDD,
    InputComplexityElbo,
    NMDStatistics,
    SmallCNNClassifier,
    VAEElbo,
    VAEReconstruction,
)
from .datasets import ProtocolData, load_protocol
from .drift import UntrainedAutoencoderFeatures, images_for_power, ks_test, mean_score_test, mmd_test
from .report import save_json, write_reports

NORM_ABLATIONS = ("batchnorm", "groupnorm", "instancenorm")


@dataclass(frozen=True)
class Budget:
    """Seconds of training per model and sizes of the expensive stages."""

    main_train: float
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
    main_steps: int | None = None  # if set, DisCoPatch trains this many steps instead of for main_train seconds
    # if set, variants and norm ablations train this many steps instead of ablation_train seconds, and the main
    # model is also scored at this step (a snapshot), so every variant has a row trained exactly as long
    ablation_steps: int | None = None


#: Sized so one protocol finishes in about 45 minutes on one core of the 2-core dev machine (docs/BENCHMARKS.md).
FULL = Budget(480, 180, 60, 150, 100, (1, 2, 5, 10, 20, 50, 100, 200), n_test=800, n_ood=500)
FULL_PHOTOS = Budget(420, 150, 60, 120, 100, (1, 2, 5, 10, 20, 50, 100, 200), n_test=400, n_ood=300, layer_images=600)
QUICK = Budget(6, 2, 2, 2, 10, (1, 5, 20))


def protocol_preset(protocol: str, data: ProtocolData, preset: str | Preset = "small") -> Preset:
    """The detector configuration for a protocol: the preset at its own image size, or the protocol's if larger.

    ``fmnist`` (28 px images) runs the ``small`` preset at its 64 px, upsampled with ``resize_crop``; ``photos``
    (128 px crops) keeps 128 px. The main row is the preset as trained by default (its own training groups: one
    image per group for ``small``, the pooled batch for ``paper``) scored with D alone, no EMA; the fused score and
    the other grouping are rows of their own (:func:`trained_variants`).
    """
    p = get_preset(preset, channels=data.channels) if isinstance(preset, str) else preset
    if data.image_size > p.preprocess.image_size:
        p = p.replace(preprocess=dataclasses.replace(p.preprocess, image_size=data.image_size, resize=data.resize))
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


def evaluate_scores(score_fn: Callable[[np.ndarray], np.ndarray], sets: Sets) -> tuple[dict[str, Any], dict]:
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


def _versions() -> dict[str, str]:
    return {
        "discopatch": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


def _hardware() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def _train(
    preset: Preset,
    data: ProtocolData,
    seconds: float | None,
    seed: int,
    progress: bool,
    on_detector: Callable[[Detector], None] | None = None,
    **train: Any,
) -> Detector:
    """Train on the protocol's ID images for ``seconds`` (or until ``max_steps`` in ``train``).

    ``on_detector`` sees the detector before training starts (so a step callback can read its trainer).
    """
    if seconds is None:  # a step budget: the preset's own time limit must not cut it short
        preset = preset.replace(train=dataclasses.replace(preset.train, max_time=None))
    det = Detector(preset, device="cpu", seed=seed, engine="torch")
    if on_detector is not None:
        on_detector(det)
    det.fit(data.id_train, max_time=seconds, epochs=10_000, progress=progress, **train)
    return det


def _ablation_budget(budget: Budget) -> tuple[float | None, dict[str, Any], str]:
    """How long a variant or norm ablation trains: (seconds, fit keywords, label suffix)."""
    if budget.ablation_steps:
        return None, {"max_steps": budget.ablation_steps}, "step budget"
    return budget.ablation_train, {}, f"{budget.ablation_train:.0f} s budget"


def run_benchmark(
    protocol: str,
    out: str | os.PathLike | None = None,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    budget: Budget | None = None,
    stages: tuple[str, ...] = ("variants", "ablations", "baselines", "drift", "mixed", "patches"),
    preset: str | Preset = "small",
) -> dict[str, Any]:
    """Run one protocol end to end; write results.json, summary.md and report.html into ``out`` if given.

    ``preset`` is the DisCoPatch configuration (see :func:`protocol_preset`); the smoke test passes a tiny one.
    """
    t_start = time.monotonic()
    budget = budget or (QUICK if quick else FULL_PHOTOS if protocol == "photos" else FULL)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    data = load_protocol(
        protocol, quick=quick, seed=seed, n_test=budget.n_test, n_ood=budget.n_ood, n_train=budget.n_train
    )
    preset = protocol_preset(protocol, data, preset)
    sets = build_sets(data, preset, seed, progress)
    # ID training images through the shared pipeline once; every fitted model and statistic below reads this stack.
    train_stack = stack_images(data.id_train, preset.preprocess)
    log(
        f"[benchmark] {protocol}: {len(data.id_train)} ID train, {len(sets.reference)} reference, "
        f"{len(sets.covariate)} covariate sets, near {list(sets.near)}, far {list(sets.far)}"
    )
    results: dict[str, Any] = {
        "protocol": protocol,
        "quick": quick,
        "seed": seed,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["discopatch", *sys.argv[1:]]) if sys.argv and "discopatch" in sys.argv[0] else None,
        "versions": _versions(),
        "hardware": _hardware(),
        "budget": dataclasses.asdict(budget),
        "data": {
            "provenance": data.provenance,
            "skipped": data.skipped,
            "n_train": len(data.id_train),
            "n_reference": len(sets.reference),
            "n_target": len(sets.controls["control/null"]),
        },
        "corruption_params": {"table": resolve_params("auto", *sets.reference.shape[1:3]), "source": PARAM_SOURCES},
        "preset": {
            "model": dataclasses.asdict(preset.model),
            "preprocess": dataclasses.asdict(preset.preprocess),
            "train": dataclasses.asdict(preset.train),
            "test_patches": preset.test_patches,
        },
        "methods": {},
    }
    raw_scores: dict[str, dict[str, np.ndarray]] = {}
    methods = results["methods"]

    def record(
        name: str, group: str, score_fn: Callable[[np.ndarray], np.ndarray], train_s: float, notes: str = ""
    ) -> None:
        res, raw = evaluate_scores(score_fn, sets)
        res.update({"group": group, "train_seconds": round(train_s, 1), "notes": notes})
        methods[name] = res
        raw_scores[name] = raw
        log(
            f"[benchmark] {name:34s} cov {res['covariate_mean_auroc']:.3f}  near {res['near_mean_auroc']}  "
            f"far {res['far_mean_auroc']}  null {res['null_auroc']:.3f}"
        )

    # ---- DisCoPatch (the preset's own training, D's score) ---------------------------------------------------------
    steps = budget.main_steps
    log(f"[benchmark] training DisCoPatch for {f'{steps} steps' if steps else f'{budget.main_train:.0f} s'}")
    t0 = time.monotonic()
    early: dict[str, Any] = {}

    def keep_early(st: Any, logs: dict[str, float]) -> None:
        if st.step == budget.ablation_steps and det_ref:
            early["D"] = copy.deepcopy(det_ref[0].trainer.detector_discriminator.state_dict())
            early["seconds"] = time.monotonic() - t0

    det_ref: list[Detector] = []
    snap = {"callback": keep_early, "on_detector": det_ref.append} if budget.ablation_steps else {}
    if steps:
        det = _train(preset, data, None, seed, progress, max_steps=steps, **snap)
    else:
        det = _train(preset, data, budget.main_train, seed, progress, **snap)
    main_train_s = time.monotonic() - t0
    D, n = det.discriminator, det.n_patches
    record(
        "DisCoPatch (per-image statistics)",
        "discopatch",
        det.score_preprocessed,
        main_train_s,
        f"{det.training_info['steps']} steps",
    )
    results["main_training"] = det.training_info
    if "D" in early:  # the main model at the variants' step budget
        ref = copy.copy(det)
        D_early = Discriminator(preset.model)
        D_early.load_state_dict(early["D"])
        ref.discriminator = D_early.eval()
        record(
            f"DisCoPatch at {budget.ablation_steps} steps (the variants' budget)",
            "variant",
            ref.score_preprocessed,
            early["seconds"],
            f"snapshot of the main training at step {budget.ablation_steps}",
        )

    if "variants" in stages:
        variant_stage(det, data, train_stack, preset, budget, seed, progress, record)

    if "ablations" in stages:
        record(
            "leaky: statistics pooled over 64 test images",
            "ablation-leaky",
            lambda x: _pooled(det, x, 64),
            0.0,
            "NOT a valid detector: statistics cross images of one test set",
        )
        for k in range(len(D.blocks)):
            Dk = layerwise_discriminator(D, train_stack[: budget.layer_images], k, n, seed)
            record(
                f"per-image statistics in layer {k + 1} only",
                "ablation-layer",
                lambda x, Dk=Dk: score_array(Dk, x, n, seed),
                0.0,
                "other layers: fixed ID population statistics",
            )
        for norm in NORM_ABLATIONS:
            p_norm = preset.replace(model=dataclasses.replace(preset.model, norm=norm))
            t0 = time.monotonic()
            seconds, kw, how = _ablation_budget(budget)
            d_norm = _train(p_norm, data, seconds, seed, progress, **kw)
            record(
                f"norm ablation: {norm}",
                "ablation-norm",
                d_norm.score_preprocessed,
                time.monotonic() - t0,
                f"{d_norm.training_info['steps']} steps ({how})",
            )

    if "baselines" in stages:
        vae = det.trainer.vae.eval() if det.trainer is not None else None
        if vae is not None:
            for cls, label in (
                (VAEReconstruction, "VAE reconstruction error"),
                (VAEElbo, "VAE negative ELBO"),
                (InputComplexityElbo, "ELBO with input-complexity correction"),
            ):
                b = cls(vae, n, seed=seed)
                record(label, "label-free", b.score, 0.0, "the DisCoPatch VAE on the same patches")
        svdd = DeepSVDD()
        t0 = time.monotonic()
        svdd.fit(train_stack, max_time=budget.svdd_train, seed=seed)
        record("Deep SVDD", "label-free", svdd.score, time.monotonic() - t0)
        nmd = NMDStatistics(D, n, seed=seed).fit(train_stack, seed=seed)
        record("NMD-style statistics (D channel means)", "label-free", nmd.score, 0.0)
        if data.id_train_labels is not None:
            clf = SmallCNNClassifier()
            t0 = time.monotonic()
            clf.fit(train_stack, data.id_train_labels, max_time=budget.classifier_train, seed=seed)
            clf_s = time.monotonic() - t0
            for scorer in clf.scorers():
                scorer.fit(train_stack, data.id_train_labels, seed=seed)
                record(f"classifier {scorer.name}", "label-based", scorer.score, clf_s)

    if "drift" in stages:
        results["drift_power"] = drift_power(det, data, sets, preset, budget, seed, progress)
    if "mixed" in stages:
        results["mixed_batches"] = mixed_stage(det, sets, budget, seed)
    if "patches" in stages:
        subset = {f"{c}/3": sets.covariate[(c, 3)] for c in CORRUPTIONS}
        results["patch_count_sweep"] = patch_count_sweep(D, sets.reference, subset, budget.n_values, seed)

    results["wall_seconds"] = round(time.monotonic() - t_start, 1)
    if out is not None:
        write_reports(results, raw_scores, Path(out))
    return results


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


def variant_stage(
    det: Detector,
    data: ProtocolData,
    train_stack: np.ndarray,
    preset: Preset,
    budget: Budget,
    seed: int,
    progress: bool,
    record: Callable[..., None],
) -> None:
    """Statistics-aware scores on the main model, then each training variant (D alone and fused)."""
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
        seconds, kw, how = _ablation_budget(budget)
        d_var = _train(p_var, data, seconds, seed, progress, **train_kw, **kw)
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


def mixed_stage(det: Detector, sets: Sets, budget: Budget, seed: int) -> dict[str, Any]:
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


def drift_power(
    det: Detector, data: ProtocolData, sets: Sets, preset: Preset, budget: Budget, seed: int, progress: bool
) -> dict[str, Any]:
    """Images needed for 80 % power at alpha 0.05: MMD and KS on UAE features vs the DisCoPatch mean-score test."""
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
    kw = dict(ns=budget.power_ns, n_trials=budget.power_trials, seed=seed)
    tests = {
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


__all__ = ["FULL", "FULL_PHOTOS", "QUICK", "Budget", "run_benchmark", "save_json"]
