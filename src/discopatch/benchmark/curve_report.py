"""What a learning curve says: summaries over seeds, merging seeds run apart, Markdown, the figure, the files.

:mod:`discopatch.benchmark.curve` trains and evaluates; this module only reads its results, so a curve merged
from parts (:func:`merge_curves`) gets the same summaries and reports as one run in one process.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ModelConfig, PreprocessConfig, TrainConfig, json_ready
from ..data.corruptions import CORRUPTIONS, SEVERITIES
from ..errors import ConfigError
from .curve_diagnostics import SUMMARY_KEYS


def summarise_curve(results: dict[str, Any]) -> None:
    """Add (or refresh) the summaries over seeds: end point, every step, the ID-only criterion's picks."""
    results["end_point"] = end_point_summary(results)
    results["per_step"] = step_summary(results)
    results["selection"] = selection_summary(results)


#: The preset's sections and their dataclasses: a field a part lacks (written before it existed) is its default.
_SECTIONS = {"model": ModelConfig, "preprocess": PreprocessConfig, "train": TrainConfig}


def _comparable(value: Any, key: str) -> Any:
    """A part's field as far as merging cares: the preset's stopping budget is the curve's steps, not configuration,
    and a setting added since a part was written counts at its default (the configuration that part ran)."""
    if key != "preset" or not isinstance(value, dict):
        return value
    out = copy.deepcopy(value)
    for section, cls in _SECTIONS.items():
        if isinstance(out.get(section), dict):
            defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
            out[section] = {**json_ready(defaults), **out[section]}
    out.get("train", {}).pop("max_steps", None)
    out.get("train", {}).pop("max_time", None)
    return out


def merge_curves(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One curve from runs of the same configuration made in separate processes (e.g. one seed per core).

    Refuses parts that differ in protocol, configuration or data, or that repeat a seed.
    """
    if not parts:
        raise ConfigError("nothing to merge")
    first = parts[0]
    merged = copy.deepcopy(first)
    merged["runs"] = {}
    for part in parts:
        for key in ("protocol", "preset_name", "preset", "data"):
            if _comparable(part[key], key) != _comparable(first[key], key):
                raise ConfigError(f"cannot merge curves that differ in {key!r}")
        for seed, rows in part["runs"].items():
            if seed in merged["runs"]:
                raise ConfigError(f"seed {seed} appears in more than one part")
            merged["runs"][seed] = rows
    merged["seeds"] = [int(s) for s in merged["runs"]]
    merged["steps"] = sorted({r["step"] for rows in merged["runs"].values() for r in rows})
    merged["command"] = " + ".join(str(p.get("command")) for p in parts)
    merged["started"] = min(p["started"] for p in parts)
    summarise_curve(merged)
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


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _mean_sd_cells(vals: dict[str, list[float]]) -> list[str]:
    """``mean +/- sd`` in % for every summary number (``-`` where no seed had one)."""
    return [f"{100 * vals[k][0]:.1f} +/- {100 * vals[k][1]:.1f}" if k in vals else "-" for k in SUMMARY_KEYS]


def _heading(results: dict[str, Any]) -> list[str]:
    """The title, what was trained and how, and the legend of the tables' abbreviations."""
    m = results["preset"]["model"]
    pre = results["preset"]["preprocess"]
    return [
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
    ]


def _point_table(results: dict[str, Any]) -> list[str]:
    """One row per (seed, step): both scores' summaries and the game's diagnostics."""
    lines = [
        "| seed | step | CPU-min | D cov | D sev3-5 | D near | D far | D null | fused cov | fused sev3-5 | fused near "
        "| fused far | fused null | ID-sep | overfit | d(r/rec/gen) | mse | HF (r/rec/gen) |",
        "|---" * 18 + "|",
    ]
    for seed, rows in results["runs"].items():
        for r in rows:
            g, hf = r["game"], r["game"]["high_freq_share"]
            aurocs = [_pct(r[kind][k]) for kind in ("d-only", "fused") for k in SUMMARY_KEYS]
            cells = [
                seed, r["step"], f"{r['cpu_minutes']:.1f}", *aurocs, _pct(g["id_separation"]),
                _pct(g.get("overfit_auroc")),
                f"{g['d_real_per_image']:.2f}/{g['d_recon_per_image']:.2f}/{g['d_gen_per_image']:.2f}",
                f"{g['recon_mse']:.4f}", f"{hf['real']:.3f}/{hf['recon']:.3f}/{hf['gen']:.3f}",
            ]  # fmt: skip
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def _spread_tables(results: dict[str, Any]) -> list[str]:
    """The end point over seeds, then every step several seeds reached, each as mean +/- sd."""
    lines = ["", "End point (last step), mean +/- sd over seeds:", "", "| score | " + " | ".join(SUMMARY_KEYS) + " |",
             "|---" * (len(SUMMARY_KEYS) + 1) + "|"]  # fmt: skip
    for kind, vals in results["end_point"].items():
        lines.append(f"| {kind} | " + " | ".join(_mean_sd_cells(vals)) + " |")
    per_step = results.get("per_step") or []
    if per_step:
        lines += ["", "Every step that several seeds reached, mean +/- sd over those seeds:", "",
                  "| step | seeds | CPU-min | score | " + " | ".join(SUMMARY_KEYS) + " |",
                  "|---" * (len(SUMMARY_KEYS) + 4) + "|"]  # fmt: skip
        for e in per_step:
            for kind in ("d-only", "fused"):
                cells = _mean_sd_cells(e[kind])
                lines.append(
                    f"| {e['step']} | {e['n_seeds']} | {e['cpu_minutes']:.1f} | {kind} | " + " | ".join(cells) + " |"
                )
    return lines


def curve_markdown(results: dict[str, Any]) -> str:
    """The curve as Markdown tables: one row per (seed, step), then the end point over seeds."""
    lines = [*_heading(results), *_point_table(results), *_spread_tables(results)]
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
    "end_point_summary",
    "merge_curves",
    "plot_curve",
    "selection_summary",
    "step_summary",
    "summarise_curve",
    "write_curve",
]
