"""``discopatch benchmark --curve``: one configuration trained once per seed, evaluated at log-spaced steps.

Why: a detector that users train longer must get better, not worse. The curve shows AUROC (D's own score and the
fused score) on the protocol's covariate, near-OOD, far-OOD and null sets against training steps and CPU minutes,
together with what the adversarial game is doing at each point:

* D's mean output on real, reconstructed and generated patches, as trained (pooled groups, from the step logs) and
  as scored (one group per image, on held-out ID images);
* the VAE's reconstruction error and the radially averaged power spectra of real, reconstructed and generated
  patches (is the reconstruction missing high frequency, does the prior sample carry excess?);
* the spread of the per-image layer statistics over ID images;
* an **ID-only** model-selection criterion: how well D's per-image score separates held-out ID images from the
  VAE's reconstructions and prior samples of them (AUROC). It uses no OOD or corrupted image, so it may pick a
  checkpoint; the curve shows whether it tracks the benchmark.

D and the VAE are snapshotted (weights copied) during training and evaluated afterwards, so evaluation never
counts as training time. Every seed trains the same number of steps; all seeds are evaluated at every point.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..budget import effective_train_config, planned_steps
from ..config import Preset
from ..data.images import stack_images
from ..detector import Detector
from ..errors import ConfigError
from ..log import stderr_lines
from ..model import VAE, Discriminator
from ..training.checkpoint import TrainState
from ..training.trainer import Trainer
from .curve_diagnostics import (
    _score_sets,
    check_aggregations,
    game_diagnostics,
    radial_power_spectrum,
    score_other_test_patches,
)
from .curve_report import curve_markdown, merge_curves, step_summary, summarise_curve, write_curve
from .datasets import ProtocolData, load_protocol
from .runner import _hardware, _versions
from .sets import Sets, build_sets, protocol_preset


def curve_steps(total: int, points: int, first: int = 25) -> list[int]:
    """``points`` log-spaced step counts from about ``first`` to ``total`` (unique, increasing, ending at total)."""
    if total < 1 or points < 1:
        raise ConfigError("total and points must be positive")
    first = max(1, min(first, total // 2 ** (points - 1)))
    steps = np.unique(np.round(np.geomspace(first, total, points)).astype(int))
    return [int(s) for s in steps]


def fit_steps(preset: Preset, n_train: int) -> int:
    """The steps ``discopatch fit`` runs with ``preset`` on ``n_train`` training images (the curve's default end)."""
    steps = planned_steps(effective_train_config(preset.train), n_train)
    if steps is None:
        raise ConfigError(f"preset {preset.name!r} has no step or epoch budget; give the curve's steps")
    return steps


def _split(n: int, seed: int, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _train_with_snapshots(
    preset: Preset, images: np.ndarray, steps: int, at: Sequence[int], seed: int, progress: bool
) -> tuple[Detector, list[dict[str, Any]]]:
    """Train for ``steps`` steps, copying D, the VAE and timings at every step in ``at`` (no evaluation here)."""
    det = Detector(preset, device="cpu", seed=seed, engine="torch")
    snaps: list[dict[str, Any]] = []
    recent: deque[dict[str, float]] = deque(maxlen=25)
    cpu0 = time.process_time()

    def snapshot(st: TrainState, logs: dict[str, float]) -> None:
        recent.append(logs)
        if st.step in at:
            tr = det.trainer
            assert isinstance(tr, Trainer)
            snaps.append({
                "step": st.step,
                "train_minutes": st.elapsed / 60,
                "cpu_minutes": (time.process_time() - cpu0) / 60,
                "train_logs": {k: float(np.mean([r[k] for r in recent])) for k in logs},
                "D": copy.deepcopy(tr.detector_discriminator.state_dict()),
                "vae": copy.deepcopy(tr.vae.state_dict()),
            })  # fmt: skip

    det.fit(images, max_steps=steps, val_fraction=0.0, progress=progress, callback=snapshot)
    return det, snaps


@dataclasses.dataclass(frozen=True)
class CurveImages:
    """The preprocessed image stacks every seed of a curve trains on and is evaluated with."""

    train_raw: np.ndarray  # the training split as loaded (``fit`` preprocesses it itself)
    train: np.ndarray  # the training split, preprocessed
    val: np.ndarray  # the held-out ID split: the fusion scales
    stats: np.ndarray  # at most ``stats_images`` training images: the statistics model
    diag: np.ndarray  # held-out ID reference images for the game's diagnostics
    diag_train: np.ndarray  # training images for the memorisation check


def curve_images(data: ProtocolData, preset: Preset, sets: Sets, stats_images: int, diag_images: int) -> CurveImages:
    """Split the protocol's ID training images once (a fixed seed), so every seed and snapshot sees the same ones."""
    train_idx, val_idx = _split(len(data.id_train), 0)
    train_stack = stack_images(data.id_train[train_idx], preset.preprocess)
    return CurveImages(
        train_raw=data.id_train[train_idx],
        train=train_stack,
        val=stack_images(data.id_train[val_idx], preset.preprocess),
        stats=train_stack[np.random.default_rng(1).permutation(len(train_stack))[:stats_images]],
        diag=sets.reference[:diag_images],
        diag_train=train_stack[np.random.default_rng(2).permutation(len(train_stack))[:diag_images]],
    )


def curve_preset(
    protocol: str,
    data: ProtocolData,
    preset: str | Preset | None,
    model: dict[str, Any] | None,
    preprocess: dict[str, Any] | None,
    train: dict[str, Any],
) -> Preset:
    """The configuration the curve trains: the protocol's preset, fused, with the caller's overrides and no time
    limit (steps are the budget: a time limit would cut a slow, shared machine's curve short)."""
    base = protocol_preset(protocol, data, preset).replace(score_mode="fused")
    return base.replace(
        train=dataclasses.replace(base.train, max_time=None, **train),
        model=dataclasses.replace(base.model, **(model or {})),
        preprocess=dataclasses.replace(base.preprocess, **(preprocess or {})),
    )


def _curve_header(
    protocol: str,
    preset: Preset,
    at: list[int],
    seeds: Sequence[int],
    data: ProtocolData,
    sets: Sets,
    images: CurveImages,
) -> dict[str, Any]:
    """How the curve was made (configuration, steps, seeds, versions, hardware, data), so ``curve.json`` stands on
    its own and parts run apart can be checked before they are merged."""
    return {
        "protocol": protocol,
        "preset_name": preset.name,
        "preset": {
            "model": dataclasses.asdict(preset.model),
            "preprocess": dataclasses.asdict(preset.preprocess),
            "train": dataclasses.asdict(preset.train),
            "test_patches": preset.test_patches,
        },
        "steps": at,
        "seeds": list(seeds),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["discopatch", *sys.argv[1:]]) if sys.argv and "discopatch" in sys.argv[0] else None,
        "versions": _versions(),
        "hardware": _hardware(),
        "data": {"n_train": len(images.train), "n_reference": len(sets.reference), "skipped": data.skipped},
        "stats_images": len(images.stats),
        "runs": {},
    }


def evaluate_snapshot(
    det: Detector,
    snap: dict[str, Any],
    sets: Sets,
    images: CurveImages,
    seed: int,
    other_test_patches: Sequence[int] = (),
    aggregations: Sequence[str] = (),
) -> dict[str, Any]:
    """One point of the curve: load a snapshot's D into ``det``, refit the statistics model for it, and score every
    set with both scores, plus the game's diagnostics from the snapshot's D and VAE. ``other_test_patches`` scores
    the same D again with those numbers of test patches (``by_test_patches``: the inference-time lever, paired);
    ``aggregations`` adds both scores with D's patch outputs aggregated otherwise (``by_aggregation``, the same
    pass: :data:`~discopatch.score_modes.PATCH_AGGREGATES`)."""
    preset = det.preset
    D = Discriminator(preset.model)
    D.load_state_dict(snap.pop("D"))
    vae = VAE(preset.model)
    vae.load_state_dict(snap.pop("vae"))
    det.discriminator = D.eval()
    det.fit_statistics(images.stats, images.val)
    row = {
        **snap,
        **_score_sets(det, sets, aggregations, images.val),
        "game": game_diagnostics(D, vae, images.diag, preset.test_patches, seed, images.diag_train),
    }
    if other_test_patches:
        row["by_test_patches"] = score_other_test_patches(det, sets, images.stats, images.val, other_test_patches)
    return row


def _auroc(value: float | None) -> str:
    """An AUROC for the progress line; ``-`` where the protocol has no such set (a source missing on this host)."""
    return "-" if value is None else f"{value:.3f}"


def _row_line(seed: int, row: dict[str, Any]) -> str:
    """A curve point's progress line: both scores' headline AUROCs and the ID-only criterion."""
    d, f = row["d-only"], row["fused"]
    return (
        f"[curve] seed {seed} step {row['step']:6d} ({row['cpu_minutes']:.1f} CPU-min): D cov "
        f"{_auroc(d['covariate_mean_auroc'])} near {_auroc(d['near_mean_auroc'])} far "
        f"{_auroc(d['far_mean_auroc'])} null {_auroc(d['null_auroc'])} | fused cov "
        f"{_auroc(f['covariate_mean_auroc'])} near {_auroc(f['near_mean_auroc'])} | ID-sep "
        f"{_auroc(row['game']['id_separation'])}"
    )


def _evaluation_steps(steps: int, points: int, at_steps: Sequence[int] | None) -> list[int]:
    """The snapshot steps: ``at_steps`` as given (sorted, unique), else ``points`` log-spaced ones up to ``steps``."""
    at = sorted({int(s) for s in at_steps}) if at_steps else curve_steps(steps, points)
    if at[0] < 1:
        raise ConfigError(f"evaluation steps must be positive: {at}")
    return at


def run_curve(
    protocol: str,
    out: str | os.PathLike[str] | None = None,
    *,
    preset: str | Preset | None = None,
    steps: int | None = None,
    points: int = 7,
    seeds: Sequence[int] = (0, 1, 2),
    quick: bool = False,
    n_train: int | None = None,
    n_test: int = 800,
    n_ood: int = 500,
    stats_images: int = 10_000,
    diag_images: int = 200,
    all_points: bool = True,
    at_steps: Sequence[int] | None = None,
    progress: bool = True,
    model: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    other_test_patches: Sequence[int] = (),
    aggregations: Sequence[str] = (),
    require_all_sets: bool = False,
    **train: Any,
) -> dict[str, Any]:
    """Train ``preset`` for ``steps`` steps per seed, snapshot at :func:`curve_steps`, evaluate every snapshot.

    ``steps=None`` runs the steps ``discopatch fit`` would run with this configuration on these training images
    (:func:`discopatch.budget.planned_steps`: 1,380 for ``small``), so the curve's end point is the detector users get.

    With ``all_points=False`` only the first seed is evaluated at every point, the others at the last step (the
    spread at the end point for a third of the evaluation time). ``at_steps`` replaces the log-spaced points with
    these steps (training runs to the largest), e.g. the steps that one core makes in 5, 20 and 60 minutes.

    ``train``, ``model`` and ``preprocess`` override fields of the preset's configurations (a candidate geometry,
    ``betas``, ...); the resolved configuration is recorded with the results. ``other_test_patches`` and
    ``aggregations`` also score every snapshot with those test patches or patch aggregates (:func:`evaluate_snapshot`).
    ``require_all_sets``: as :func:`load_protocol`. Writes curve.json, curve.md and (matplotlib) curve.png to ``out``.
    """
    log, aggregations = stderr_lines(progress), check_aggregations(aggregations)
    data = load_protocol(
        protocol, quick=quick, seed=0, n_test=n_test, n_ood=n_ood, n_train=n_train, require_all_sets=require_all_sets
    )
    base = curve_preset(protocol, data, preset, model, preprocess, train)
    sets = build_sets(data, base, 0, progress)
    images = curve_images(data, base, sets, stats_images, diag_images)
    at = _evaluation_steps(fit_steps(base, len(images.train)) if steps is None else steps, points, at_steps)
    log(f"[curve] {protocol}: preset {base.name}, {len(images.train)} train images, steps {at}, seeds {list(seeds)}")
    results = _curve_header(protocol, base, at, seeds, data, sets, images)
    for i, seed in enumerate(seeds):
        seed_at = at if i == 0 or all_points else at[-1:]
        det, snaps = _train_with_snapshots(base, images.train_raw, at[-1], seed_at, seed, progress)
        rows = []
        for snap in snaps:
            rows.append(evaluate_snapshot(det, snap, sets, images, seed, other_test_patches, aggregations))
            log(_row_line(seed, rows[-1]))
        results["runs"][str(seed)] = rows
        summarise_curve(results)
        if out is not None:  # after every seed, so a long run that is stopped keeps what it measured
            write_curve(results, Path(out))
    return results


__all__ = [
    "curve_markdown",
    "curve_steps",
    "game_diagnostics",
    "merge_curves",
    "radial_power_spectrum",
    "run_curve",
    "step_summary",
    "write_curve",
]
