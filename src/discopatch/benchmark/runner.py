"""``discopatch benchmark``: DisCoPatch against its ablations and baselines on the same images, in one run.

Protocol (both ``fmnist`` and ``photos``):

* the ID test images are split in half: a *reference* half (the ID side of every AUROC) and a *target* half;
* covariate shift = the target half with each corruption of :data:`~discopatch.data.corruptions.CORRUPTIONS` at
  severities 1-5, through the same uint8 pipeline; the *null* control is the clean target half through that same
  path (AUROC must be 0.50 +/- 0.02), the *hflip* control its horizontal mirror;
* near- and far-OOD sets come from :mod:`discopatch.benchmark.datasets`, preprocessed by the same function;
* every method is fitted on the same ID training images and scored on the same test images.

Methods: DisCoPatch (per-image statistics) and its norm ablations (each trained separately), the leaky pooled
mode, per-layer statistics; label-free baselines (VAE reconstruction / ELBO / input complexity, Deep SVDD, NMD);
label-based baselines in their own block; batch drift tests with the images needed for 80 % power; mixed batches
and the patch-count sweep. :mod:`discopatch.benchmark.report` turns the results into Markdown and HTML.

The stages live in :mod:`discopatch.benchmark.stages`, the image sets and budgets in
:mod:`discopatch.benchmark.sets`; this module runs them in order and records the results.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch

from .._version import __version__
from ..config import NormKind, Preset
from ..data.corruptions import CORRUPTIONS, PARAM_SOURCES, resolve_params
from ..data.images import stack_images
from ..detector import Detector
from ..inference.engine import score_array
from ..log import stderr_lines
from ..model import Discriminator
from ..training.trainer import TrainState
from .ablations import layerwise_discriminator, patch_count_sweep
from .baselines import specs as baseline_specs
from .baselines.specs import BaselineInputs
from .datasets import load_protocol
from .report import save_json, write_reports
from .sets import FULL, FULL_PHOTOS, QUICK, Budget, Sets, build_sets, evaluate_scores, protocol_preset, summarise
from .stages import (
    _ablation_budget,
    _pooled,
    _train,
    drift_power,
    mixed_stage,
    train_main,
    trained_variants,
    variant_stage,
)

NORM_ABLATIONS: tuple[NormKind, ...] = ("batchnorm", "groupnorm", "instancenorm")


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


#: ``record(name, group, score_fn, train_seconds, notes)``: scores one method on every set and keeps its row.
Record = Callable[[str, str, Callable[[np.ndarray], np.ndarray], float, str], None]


def baseline_stage(inputs: BaselineInputs, budget: Budget, record: Record) -> None:
    """Fit and record every baseline of :data:`~discopatch.benchmark.baselines.specs.BASELINES`, in order.

    A spec's training seconds come from its ``budget_key`` field of ``budget``; the recorded training time is the
    factory's wall time for those, 0 for the baselines that train nothing for a time."""
    for spec in baseline_specs.BASELINES:
        seconds = None if spec.budget_key is None else float(getattr(budget, spec.budget_key))
        t0 = time.monotonic()
        rows = spec.factory(inputs, seconds)
        train_s = 0.0 if spec.budget_key is None else time.monotonic() - t0
        for key, score_fn in rows.items():
            record(spec.row_name(key), spec.group, score_fn, train_s, spec.notes)


def run_benchmark(
    protocol: str,
    out: str | os.PathLike[str] | None = None,
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
    log = stderr_lines(progress)
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
    steps, limit = budget.main_steps, budget.main_train
    how = f"{steps} steps" if steps else "the preset's budget, as fit"
    log(f"[benchmark] training DisCoPatch for {how}" + (f" (at most {limit:g} s)" if limit else ""))
    t0 = time.monotonic()
    early: dict[str, Any] = {}

    def keep_early(st: TrainState, logs: dict[str, float]) -> None:
        trainer = det_ref[0].trainer if det_ref else None
        if st.step == budget.ablation_steps and trainer is not None:
            early["D"] = copy.deepcopy(trainer.detector_discriminator.state_dict())
            early["seconds"] = time.monotonic() - t0

    det_ref: list[Detector] = []
    snap: dict[str, Any] = {"callback": keep_early, "on_detector": det_ref.append} if budget.ablation_steps else {}
    det = train_main(preset, data, seed, progress, max_steps=steps, max_time=limit, **snap)
    main_train_s = time.monotonic() - t0
    D, n = det.require_model(), det.n_patches
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
                functools.partial(score_array, Dk, n_patches=n, seed=seed),
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
        vae = det.trainer.vae if det.trainer is not None else None
        baseline_stage(BaselineInputs(train_stack, data.id_train_labels, D, vae, n, seed), budget, record)

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


__all__ = [
    "FULL",
    "FULL_PHOTOS",
    "QUICK",
    "Budget",
    "Sets",
    "baseline_stage",
    "build_sets",
    "evaluate_scores",
    "protocol_preset",
    "run_benchmark",
    "save_json",
    "summarise",
    "trained_variants",
]
