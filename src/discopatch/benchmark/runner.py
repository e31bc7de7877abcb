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
from ..config import Preset
from ..data.corruptions import CORRUPTIONS, PARAM_SOURCES, resolve_params
from ..data.images import stack_images
from ..detector import Detector
from ..log import stderr_lines
from ..model import Discriminator
from ..training.checkpoint import TrainState
from .ablations import patch_count_sweep
from .baselines import specs as baseline_specs
from .baselines.specs import BaselineInputs
from .datasets import ProtocolData, load_protocol
from .report import save_json, write_reports
from .sets import FULL, FULL_PHOTOS, QUICK, Budget, Sets, build_sets, evaluate_scores, protocol_preset, summarise
from .stages import (
    StageInputs,
    ablation_stage,
    drift_power,
    mixed_stage,
    train_main,
    trained_variants,
    variant_stage,
)


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


class Recorder:
    """The rows of one run: each method's metrics (``results.json``) and raw scores (the report's figures).

    Calling it scores one method on every set of ``sets`` and logs its headline numbers, so every stage records
    its rows the same way."""

    def __init__(self, sets: Sets, log: Callable[[str], None]) -> None:
        self.sets = sets
        self.log = log
        self.methods: dict[str, dict[str, Any]] = {}
        self.raw_scores: dict[str, dict[str, np.ndarray]] = {}

    def __call__(
        self, name: str, group: str, score_fn: Callable[[np.ndarray], np.ndarray], train_s: float, notes: str = ""
    ) -> None:
        res, raw = evaluate_scores(score_fn, self.sets)
        res.update({"group": group, "train_seconds": round(train_s, 1), "notes": notes})
        self.methods[name] = res
        self.raw_scores[name] = raw
        self.log(
            f"[benchmark] {name:34s} cov {res['covariate_mean_auroc']:.3f}  near {res['near_mean_auroc']}  "
            f"far {res['far_mean_auroc']}  null {res['null_auroc']:.3f}"
        )


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


def _run_header(
    protocol: str, quick: bool, seed: int, budget: Budget, data: ProtocolData, sets: Sets, preset: Preset
) -> dict[str, Any]:
    """How the run was made - command, versions, hardware, budget, data, corruption table, preset - so a
    ``results.json`` can be judged and repeated on its own."""
    return {
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
    }


class _Snapshot:
    """Keeps D's weights when the main training reaches ``step``, so the main model can also be scored at the
    variants' step budget without training it twice."""

    def __init__(self, step: int, t0: float) -> None:
        self.step, self.t0 = step, t0
        self.detector: Detector | None = None
        self.state: dict[str, Any] | None = None
        self.seconds = 0.0

    def on_detector(self, det: Detector) -> None:
        """Remember the detector before training starts: its trainer holds D during the run."""
        self.detector = det

    def callback(self, st: TrainState, logs: dict[str, float]) -> None:
        """The training step callback: copy D's weights at ``step``."""
        trainer = self.detector.trainer if self.detector is not None else None
        if st.step == self.step and trainer is not None:
            self.state = copy.deepcopy(trainer.detector_discriminator.state_dict())
            self.seconds = time.monotonic() - self.t0


def main_stage(run: StageInputs, record: Record, log: Callable[[str], None]) -> Detector:
    """Train DisCoPatch's main row as ``fit`` trains it and record it (D's score); with a step budget for the
    variants, also record its snapshot at that step, so each variant has a main row trained exactly as long."""
    budget = run.budget
    steps, limit = budget.main_steps, budget.main_train
    how = f"{steps} steps" if steps else "the preset's budget, as fit"
    log(f"[benchmark] training DisCoPatch for {how}" + (f" (at most {limit:g} s)" if limit else ""))
    t0 = time.monotonic()
    snapshot = _Snapshot(budget.ablation_steps, t0) if budget.ablation_steps else None
    hooks: dict[str, Any] = (
        {"callback": snapshot.callback, "on_detector": snapshot.on_detector} if snapshot is not None else {}
    )
    det = train_main(run.preset, run.data, run.seed, run.progress, max_steps=steps, max_time=limit, **hooks)
    steps_run = det.training_info["steps"]
    record(
        "DisCoPatch (per-image statistics)",
        "discopatch",
        det.score_preprocessed,
        time.monotonic() - t0,
        f"{steps_run} steps",
    )
    if snapshot is not None and snapshot.state is not None:
        early = copy.copy(det)
        D_early = Discriminator(run.preset.model)
        D_early.load_state_dict(snapshot.state)
        early.discriminator = D_early.eval()
        record(
            f"DisCoPatch at {snapshot.step} steps (the variants' budget)",
            "variant",
            early.score_preprocessed,
            snapshot.seconds,
            f"snapshot of the main training at step {snapshot.step}",
        )
    return det


def _section_stages(det: Detector, run: StageInputs, stages: tuple[str, ...]) -> dict[str, Any]:
    """The stages that add a section of their own to the results rather than rows: drift-test power, mixed
    batches, the patch-count sweep."""
    out: dict[str, Any] = {}
    sets = run.sets
    if "drift" in stages:
        out["drift_power"] = drift_power(det, run)
    if "mixed" in stages:
        out["mixed_batches"] = mixed_stage(det, sets, run.budget, run.seed)
    if "patches" in stages:
        subset = {f"{c}/3": sets.covariate[(c, 3)] for c in CORRUPTIONS}
        out["patch_count_sweep"] = patch_count_sweep(
            det.require_model(), sets.reference, subset, run.budget.n_values, run.seed
        )
    return out


def run_benchmark(
    protocol: str,
    out: str | os.PathLike[str] | None = None,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    budget: Budget | None = None,
    stages: tuple[str, ...] = ("variants", "ablations", "baselines", "drift", "mixed", "patches"),
    preset: str | Preset | None = None,
    require_all_sets: bool = False,
) -> dict[str, Any]:
    """Run one protocol end to end; write results.json, summary.md and report.html into ``out`` if given.

    ``preset`` is the DisCoPatch configuration (default: the protocol's, see :func:`protocol_preset`); the smoke
    test passes a tiny one. ``require_all_sets`` refuses to start when a set's source is missing
    (:func:`~discopatch.benchmark.datasets.load_protocol`).
    """
    t_start = time.monotonic()
    budget = budget or (QUICK if quick else FULL_PHOTOS if protocol == "photos" else FULL)
    log = stderr_lines(progress)
    data = load_protocol(
        protocol, quick=quick, seed=seed, n_test=budget.n_test, n_ood=budget.n_ood, n_train=budget.n_train,
        require_all_sets=require_all_sets,
    )  # fmt: skip
    preset = protocol_preset(protocol, data, preset)
    sets = build_sets(data, preset, seed, progress)
    # ID training images through the shared pipeline once; every fitted model and statistic below reads this stack.
    train_stack = stack_images(data.id_train, preset.preprocess)
    log(
        f"[benchmark] {protocol}: {len(data.id_train)} ID train, {len(sets.reference)} reference, "
        f"{len(sets.covariate)} covariate sets, near {list(sets.near)}, far {list(sets.far)}"
    )
    run = StageInputs(data, sets, train_stack, preset, budget, seed, progress)
    record = Recorder(sets, log)
    results = {**_run_header(protocol, quick, seed, budget, data, sets, preset), "methods": record.methods}
    det = main_stage(run, record, log)
    results["main_training"] = det.training_info
    if "variants" in stages:
        variant_stage(det, run, record)
    if "ablations" in stages:
        ablation_stage(det, run, record)
    if "baselines" in stages:
        vae = det.trainer.vae if det.trainer is not None else None
        inputs = BaselineInputs(train_stack, data.id_train_labels, det.require_model(), vae, det.n_patches, seed)
        baseline_stage(inputs, budget, record)
    results.update(_section_stages(det, run, stages))
    results["wall_seconds"] = round(time.monotonic() - t_start, 1)
    if out is not None:
        write_reports(results, record.raw_scores, Path(out))
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
