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
import json
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
from ..data.corruptions import CORRUPTIONS, SEVERITIES
from ..data.images import stack_images
from ..detector import Detector
from ..log import stderr_lines
from ..model import VAE, Discriminator
from ..training.trainer import Trainer, TrainState
from .curve_diagnostics import SUMMARY_KEYS, _score_sets, game_diagnostics, radial_power_spectrum
from .datasets import load_protocol
from .runner import _hardware, _versions
from .sets import build_sets, protocol_preset


def curve_steps(total: int, points: int, first: int = 25) -> list[int]:
    """``points`` log-spaced step counts from about ``first`` to ``total`` (unique, increasing, ending at total)."""
    if total < 1 or points < 1:
        raise ValueError("total and points must be positive")
    first = max(1, min(first, total // 2 ** (points - 1)))
    steps = np.unique(np.round(np.geomspace(first, total, points)).astype(int))
    return [int(s) for s in steps]


def fit_steps(preset: Preset, n_train: int) -> int:
    """The steps ``discopatch fit`` runs with ``preset`` on ``n_train`` training images (the curve's default end)."""
    steps = planned_steps(effective_train_config(preset.train), n_train)
    if steps is None:
        raise ValueError(f"preset {preset.name!r} has no step or epoch budget; give the curve's steps")
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


def run_curve(
    protocol: str,
    out: str | os.PathLike[str] | None = None,
    *,
    preset: str | Preset = "small",
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
    **train: Any,
) -> dict[str, Any]:
    """Train ``preset`` for ``steps`` steps per seed, snapshot at :func:`curve_steps`, evaluate every snapshot.

    ``steps=None`` runs the steps ``discopatch fit`` would run with this configuration on these training images
    (:func:`discopatch.budget.planned_steps`: 1,380 for ``small``), so the curve's end point is the detector users get.

    With ``all_points=False`` only the first seed is evaluated at every point, the others at the last step (the
    spread at the end point for a third of the evaluation time). ``at_steps`` replaces the log-spaced points with
    these steps (training runs to the largest), e.g. the steps that one core makes in 5, 20 and 60 minutes.

    ``train``, ``model`` and ``preprocess`` override fields of the preset's configurations (a candidate geometry,
    ``betas``, ...); the resolved configuration is recorded with the results. Writes ``curve.json``, ``curve.md``
    and (with matplotlib) ``curve.png`` into ``out``.
    """
    log = stderr_lines(progress)
    data = load_protocol(protocol, quick=quick, seed=0, n_test=n_test, n_ood=n_ood, n_train=n_train)
    base = protocol_preset(protocol, data, preset).replace(score_mode="fused")
    # Steps are the budget: a time limit would cut a slow (shared) machine's curve short.
    base = base.replace(
        train=dataclasses.replace(base.train, max_time=None, **train),
        model=dataclasses.replace(base.model, **(model or {})),
        preprocess=dataclasses.replace(base.preprocess, **(preprocess or {})),
    )
    sets = build_sets(data, base, 0, progress)
    train_idx, val_idx = _split(len(data.id_train), 0)
    train_stack = stack_images(data.id_train[train_idx], base.preprocess)
    val_stack = stack_images(data.id_train[val_idx], base.preprocess)
    stats_stack = train_stack[np.random.default_rng(1).permutation(len(train_stack))[:stats_images]]
    diag = sets.reference[:diag_images]
    diag_train = train_stack[np.random.default_rng(2).permutation(len(train_stack))[:diag_images]]
    steps = fit_steps(base, len(train_stack)) if steps is None else steps
    at = sorted({int(s) for s in at_steps}) if at_steps else curve_steps(steps, points)
    if at[0] < 1:
        raise ValueError(f"evaluation steps must be positive: {at}")
    steps = at[-1]
    log(f"[curve] {protocol}: preset {base.name}, {len(train_stack)} train images, steps {at}, seeds {list(seeds)}")
    results: dict[str, Any] = {
        "protocol": protocol,
        "preset_name": base.name,
        "preset": {
            "model": dataclasses.asdict(base.model),
            "preprocess": dataclasses.asdict(base.preprocess),
            "train": dataclasses.asdict(base.train),
            "test_patches": base.test_patches,
        },
        "steps": at,
        "seeds": list(seeds),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["discopatch", *sys.argv[1:]]) if sys.argv and "discopatch" in sys.argv[0] else None,
        "versions": _versions(),
        "hardware": _hardware(),
        "data": {"n_train": len(train_stack), "n_reference": len(sets.reference), "skipped": data.skipped},
        "stats_images": len(stats_stack),
        "runs": {},
    }
    for i, seed in enumerate(seeds):
        seed_at = at if i == 0 or all_points else at[-1:]
        det, snaps = _train_with_snapshots(base, data.id_train[train_idx], steps, seed_at, seed, progress)
        rows = []
        for snap in snaps:
            D = Discriminator(base.model)
            D.load_state_dict(snap.pop("D"))
            vae = VAE(base.model)
            vae.load_state_dict(snap.pop("vae"))
            det.discriminator = D.eval()
            det.fit_statistics(stats_stack, val_stack)
            row = {
                **snap,
                **_score_sets(det, sets),
                "game": game_diagnostics(D, vae, diag, base.test_patches, seed, diag_train),
            }
            rows.append(row)
            log(
                f"[curve] seed {seed} step {row['step']:6d} ({row['cpu_minutes']:.1f} CPU-min): D cov "
                f"{row['d-only']['covariate_mean_auroc']:.3f} near {row['d-only']['near_mean_auroc']:.3f} far "
                f"{row['d-only']['far_mean_auroc']:.3f} null {row['d-only']['null_auroc']:.3f} | fused cov "
                f"{row['fused']['covariate_mean_auroc']:.3f} near {row['fused']['near_mean_auroc']:.3f} | ID-sep "
                f"{row['game']['id_separation']:.3f}"
            )
        results["runs"][str(seed)] = rows
        _summaries(results)
        if out is not None:  # after every seed, so a long run that is stopped keeps what it measured
            write_curve(results, Path(out))
    return results


def _summaries(results: dict[str, Any]) -> None:
    results["end_point"] = end_point_summary(results)
    results["per_step"] = step_summary(results)
    results["selection"] = selection_summary(results)


def _comparable(value: Any, key: str) -> Any:
    """A part's field as far as merging cares: the preset's stopping budget is the curve's steps, not configuration."""
    if key != "preset" or not isinstance(value, dict):
        return value
    out = copy.deepcopy(value)
    out.get("train", {}).pop("max_steps", None)
    out.get("train", {}).pop("max_time", None)
    return out


def merge_curves(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One curve from runs of the same configuration made in separate processes (e.g. one seed per core).

    Refuses parts that differ in protocol, configuration or data, or that repeat a seed.
    """
    if not parts:
        raise ValueError("nothing to merge")
    first = parts[0]
    merged = copy.deepcopy(first)
    merged["runs"] = {}
    for part in parts:
        for key in ("protocol", "preset_name", "preset", "data"):
            if _comparable(part[key], key) != _comparable(first[key], key):
                raise ValueError(f"cannot merge curves that differ in {key!r}")
        for seed, rows in part["runs"].items():
            if seed in merged["runs"]:
                raise ValueError(f"seed {seed} appears in more than one part")
            merged["runs"][seed] = rows
    merged["seeds"] = [int(s) for s in merged["runs"]]
    merged["steps"] = sorted({r["step"] for rows in merged["runs"].values() for r in rows})
    merged["command"] = " + ".join(str(p.get("command")) for p in parts)
    merged["started"] = min(p["started"] for p in parts)
    _summaries(merged)
    return merged


def step_summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Mean and sample sd over seeds at every step that more than one seed evaluated (the curve with its spread)."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for rows in results["runs"].values():
        for r in rows:
            by_step.setdefault(r["step"], []).append(r)
    out = []
    for step in sorted(by_step):
        rows = by_step[step]
        if len(rows) < 2:
            continue
        entry: dict[str, Any] = {"step": step, "n_seeds": len(rows),
                                 "cpu_minutes": float(np.mean([r["cpu_minutes"] for r in rows]))}  # fmt: skip
        for kind in ("d-only", "fused"):
            entry[kind] = {}
            for k in SUMMARY_KEYS:
                vals = [r[kind][k] for r in rows if r[kind][k] is not None]
                if vals:
                    entry[kind][k] = [float(np.mean(vals)), float(np.std(vals, ddof=1))]
        out.append(entry)
    return out


def end_point_summary(results: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Mean and sample standard deviation over seeds of every summary number at the last step."""
    ends = [rows[-1] for rows in results["runs"].values() if rows]
    out: dict[str, dict[str, list[float]]] = {}
    for kind in ("d-only", "fused"):
        out[kind] = {}
        for k in SUMMARY_KEYS:
            vals = [e[kind][k] for e in ends if e[kind][k] is not None]
            if vals:
                out[kind][k] = [float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0]
    return out


def selection_summary(results: dict[str, Any]) -> dict[str, Any]:
    """Does the ID-only criterion track the benchmark? Spearman over every evaluated point, and what it picks.

    A seed evaluated at its end point only (``all_points=False``) contributes that one point.
    """
    from scipy.stats import spearmanr

    pts = [r for rows in results["runs"].values() for r in rows]
    out: dict[str, Any] = {}
    if len(pts) < 3:
        return out
    crit = [r["game"]["id_separation"] for r in pts]
    for kind in ("d-only", "fused"):
        for k in ("covariate_mean_auroc", "near_mean_auroc"):
            vals = [r[kind][k] for r in pts]
            if None not in vals:
                out[f"spearman_{kind}_{k}"] = float(spearmanr(crit, vals).statistic)
    picks = {}
    for seed, rows in results["runs"].items():
        best = max(rows, key=lambda r: r["game"]["id_separation"])
        picks[seed] = {"step": best["step"], "d_cov": best["d-only"]["covariate_mean_auroc"],
                       "last_d_cov": rows[-1]["d-only"]["covariate_mean_auroc"]}  # fmt: skip
    out["picked"] = picks
    return out


def curve_markdown(results: dict[str, Any]) -> str:
    """The curve as Markdown tables: one row per (seed, step), then the end point over seeds."""
    m = results["preset"]["model"]
    pre = results["preset"]["preprocess"]
    lines = [
        f"# Learning curve: {results['protocol']}, preset {results['preset_name']}",
        "",
        f"{pre['image_size']} px images, {m['patch_size']} px patches, widths {m['widths']}, "
        f"{results['preset']['test_patches']} test patches; seeds {results['seeds']}; {results['data']['n_train']} "
        f"training images; command: `{results.get('command')}`; started {results['started']}.",
        "",
        f"AUROC in %. cov = mean over {len(CORRUPTIONS)} corruptions x {len(SEVERITIES)} severities; near/far = "
        "mean over the sets; null = clean "
        "held-out ID control. ID-sep = the ID-only criterion (D separating held-out ID images from their "
        "VAE reconstructions and prior samples). overfit = D's score separating held-out ID images from images it "
        "trained on (50 = no memorisation). d(r/rec/gen) = D's mean output per image on real / "
        "reconstructed / generated patches of held-out ID images; HF = share of power in the upper frequency "
        "half (real / recon / gen).",
        "",
        "| seed | step | CPU-min | D cov | D sev3-5 | D near | D far | D null | fused cov | fused sev3-5 | fused near "
        "| fused far | fused null | ID-sep | overfit | d(r/rec/gen) | mse | HF (r/rec/gen) |",
        "|---" * 18 + "|",
    ]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    for seed, rows in results["runs"].items():
        for r in rows:
            g, hf = r["game"], r["game"]["high_freq_share"]
            aurocs = [pct(r[kind][k]) for kind in ("d-only", "fused") for k in SUMMARY_KEYS]
            cells = [
                seed, r["step"], f"{r['cpu_minutes']:.1f}", *aurocs, pct(g["id_separation"]),
                pct(g.get("overfit_auroc")),
                f"{g['d_real_per_image']:.2f}/{g['d_recon_per_image']:.2f}/{g['d_gen_per_image']:.2f}",
                f"{g['recon_mse']:.4f}", f"{hf['real']:.3f}/{hf['recon']:.3f}/{hf['gen']:.3f}",
            ]  # fmt: skip
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "End point (last step), mean +/- sd over seeds:", "", "| score | " + " | ".join(SUMMARY_KEYS) + " |",
              "|---" * (len(SUMMARY_KEYS) + 1) + "|"]  # fmt: skip
    for kind, vals in results["end_point"].items():
        cells = [f"{100 * vals[k][0]:.1f} +/- {100 * vals[k][1]:.1f}" if k in vals else "-" for k in SUMMARY_KEYS]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    per_step = results.get("per_step") or []
    if per_step:
        lines += ["", "Every step that several seeds reached, mean +/- sd over those seeds:", "",
                  "| step | seeds | CPU-min | score | " + " | ".join(SUMMARY_KEYS) + " |",
                  "|---" * (len(SUMMARY_KEYS) + 4) + "|"]  # fmt: skip
        for e in per_step:
            for kind in ("d-only", "fused"):
                vals = e[kind]
                cells = [
                    f"{100 * vals[k][0]:.1f} +/- {100 * vals[k][1]:.1f}" if k in vals else "-" for k in SUMMARY_KEYS
                ]
                lines.append(
                    f"| {e['step']} | {e['n_seeds']} | {e['cpu_minutes']:.1f} | {kind} | " + " | ".join(cells) + " |"
                )
    sel = results.get("selection", {})
    if sel:
        lines += ["", "ID-only criterion vs benchmark (Spearman over all points): " + ", ".join(
            f"{k.removeprefix('spearman_')} {v:+.2f}" for k, v in sel.items() if k.startswith("spearman"))]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_curve(results: dict[str, Any], path: Path) -> bool:
    """AUROC against steps and CPU minutes; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    series = [("d-only", "covariate_mean_auroc", "D cov", "C0"), ("d-only", "near_mean_auroc", "D near", "C1"),
              ("d-only", "far_mean_auroc", "D far", "C2"), ("fused", "covariate_mean_auroc", "fused cov", "C3"),
              ("fused", "near_mean_auroc", "fused near", "C4"), ("d-only", "null_auroc", "D null", "C7")]  # fmt: skip
    for ax, xkey, xlabel in ((axes[0], "step", "training steps"), (axes[1], "cpu_minutes", "CPU minutes")):
        for kind, key, label, colour in series:
            for i, rows in enumerate(results["runs"].values()):
                xs = [r[xkey] for r in rows]
                ys = [r[kind][key] for r in rows]
                if None in ys:
                    continue
                ax.plot(xs, ys, color=colour, alpha=1.0 if i == 0 else 0.35, marker="o", ms=3,
                        label=label if i == 0 else None)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("AUROC")
        ax.set_ylim(0.3, 1.0)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"{results['protocol']}: preset {results['preset_name']} (seeds {results['seeds']}; faint = other seeds)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_curve(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps(results, indent=1))
    (out / "curve.md").write_text(curve_markdown(results))
    plot_curve(results, out / "curve.png")


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
