"""Benchmark outputs: ``results.json``, a Markdown summary and a self-contained HTML report with figures; and the
same kind of report for ``discopatch evaluate --report`` (:func:`write_evaluation_report`).

Figures are rendered with matplotlib (Agg) and embedded as base64 PNG, so the HTML file has no external fetches
(:mod:`discopatch.benchmark.report_render`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.corruptions import CORRUPTIONS, SEVERITIES
from .report_render import figure_png, html_page, pyplot, roc_figure, score_histogram

if TYPE_CHECKING:
    from ..evaluation.evaluate import EvaluationResult

MAIN = "DisCoPatch (per-image statistics)"
GROUP_TITLES = {
    "discopatch": "DisCoPatch",
    "ablation-leaky": "Ablation: leaky pooled statistics (invalid, shown to quantify the leak)",
    "ablation-layer": "Ablation: per-image statistics in one layer only",
    "ablation-norm": "Ablation: normalisation kind (each trained separately)",
    "variant": "DisCoPatch variants",
    "label-free": "Label-free baselines",
    "label-based": "Baselines that use the ID class labels",
}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def method_table(results: dict[str, Any]) -> str:
    head = (
        "| method | cov. AUROC | cov. AUROC sev 3-5 | cov. FPR95(OOD+) | near AUROC | far AUROC | null | hflip "
        "| train s | ms/img |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = []
    groups: dict[str, list[str]] = {}
    for name, m in results["methods"].items():
        groups.setdefault(m["group"], []).append(name)
    for group, names in groups.items():
        lines.append(f"\n**{GROUP_TITLES.get(group, group)}**\n\n{head}")
        for name in names:
            m = results["methods"][name]
            lines.append(
                f"| {name} | {_pct(m['covariate_mean_auroc'])} | {_pct(m['covariate_mean_auroc_sev345'])} | "
                f"{_pct(m['covariate_mean_fpr95_ood_positive'])} | {_pct(m['near_mean_auroc'])} | "
                f"{_pct(m['far_mean_auroc'])} | {_pct(m['null_auroc'])} | {_pct(m['hflip_auroc'])} | "
                f"{m['train_seconds']:.0f} | {m['latency_ms_per_image']:.3f} |"
            )
    return "\n".join(lines)


def grid_table(m: dict[str, Any]) -> str:
    lines = [
        "| corruption | " + " | ".join(f"sev {s}" for s in SEVERITIES) + " | mean |",
        "|---|" + "---|" * (len(SEVERITIES) + 1),
    ]
    for c in CORRUPTIONS:
        vals = [m["covariate_auroc"][c][str(s)] for s in SEVERITIES]
        lines.append(f"| {c} | " + " | ".join(_pct(v) for v in vals) + f" | {_pct(float(np.mean(vals)))} |")
    by = m["covariate_mean_by_severity"]
    lines.append(
        "| **mean** | " + " | ".join(_pct(by[str(s)]) for s in SEVERITIES) + f" | {_pct(m['covariate_mean_auroc'])} |"
    )
    return "\n".join(lines)


def sets_table(m: dict[str, Any], prefixes: tuple[str, ...]) -> str:
    lines = ["| set | AUROC | FPR95(OOD+) | FPR95(ID+) | AUPR-In | AUPR-Out | n |", "|---|---|---|---|---|---|---|"]
    for name, r in m["sets"].items():
        if name.startswith(prefixes):
            lines.append(
                f"| {name} | {_pct(r['auroc'])} | {_pct(r['fpr95_ood_positive'])} | "
                f"{_pct(r['fpr95_id_positive'])} | {_pct(r['aupr_in'])} | {_pct(r['aupr_out'])} | "
                f"{r['n_ood']} |"
            )
    return "\n".join(lines)


def _run_lines(results: dict[str, Any]) -> list[str]:
    """The title and how the run was made: when, on what, with which versions and data, and how to read the %."""
    return [
        f"# DisCoPatch benchmark: protocol `{results['protocol']}`"
        + (" (quick smoke run)" if results["quick"] else ""),
        "",
        f"- started {results['started']}, wall time {results['wall_seconds'] / 60:.1f} min, seed {results['seed']}",
        f"- hardware: {results['hardware']}",
        f"- versions: {results['versions']}",
        f"- data: {results['data']['n_train']} ID training images, {results['data']['n_reference']} ID reference "
        f"and {results['data']['n_target']} target test images; skipped sets: {results['data']['skipped'] or 'none'}",
        "- AUROC in % with OOD as the positive class; FPR95(OOD+) = share of ID flagged when 95 % of OOD is caught; "
        "FPR95(ID+) = share of OOD accepted when 95 % of ID is accepted.",
        "",
    ]


def _main_method_lines(main: dict[str, Any]) -> list[str]:
    """DisCoPatch's own row in detail: the corruption x severity grid, then the controls, near- and far-OOD."""
    return [
        "",
        "## DisCoPatch: covariate shift per corruption and severity (AUROC %)",
        "",
        grid_table(main),
        "",
        "## DisCoPatch: controls, near- and far-OOD",
        "",
        sets_table(main, ("control/", "near/", "far/")),
    ]


def _drift_power_lines(dp: dict[str, Any]) -> list[str]:
    """The images each batch test needs for the target power per shift (``>`` = not reached), and its type-I error."""
    tests = list(next(iter(dp["shifts"].values())).keys()) if dp["shifts"] else []
    lines = [
        "",
        f"## Images needed for {int(100 * dp['target_power'])} % power at alpha {dp['alpha']} "
        f"(batch tests; n tried: {dp['ns']}, {dp['trials']} trials; '>' = not reached)",
        "",
        "| shift | " + " | ".join(tests) + " |",
        "|---|" + "---|" * len(tests),
    ]
    for shift, r in dp["shifts"].items():
        cells = [str(r[t]["n_for_power"]) if r[t]["n_for_power"] is not None else f">{max(dp['ns'])}" for t in tests]
        lines.append(f"| {shift} | " + " | ".join(cells) + " |")
    lines.append("\nType-I error on held-out ID per n: " + "; ".join(f"{t}: {v}" for t, v in dp["type1_error"].items()))
    return lines


def _mixed_batch_lines(mixed: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Per kind of OOD, AUROC with per-image against pooled statistics as the OOD share of a batch grows."""
    lines = ["", "## Mixed batches of 64 images (AUROC %, per-image vs pooled statistics)", ""]
    for name, rows in mixed.items():
        shares = (
            f"{int(100 * r['ood_fraction'])} % OOD: {_pct(r['per_image_auroc'])} / {_pct(r['pooled_auroc'])}"
            for r in rows
        )
        lines += [f"**{name}**: " + ", ".join(shares), ""]
    return lines


def markdown_summary(results: dict[str, Any]) -> str:
    """``summary.md``: the run, every method's row, then a section per stage that ran."""
    main = results["methods"].get(MAIN)
    parts = [*_run_lines(results), "## Methods", method_table(results)]
    if main:
        parts += _main_method_lines(main)
    if "drift_power" in results:
        parts += _drift_power_lines(results["drift_power"])
    if "mixed_batches" in results:
        parts += _mixed_batch_lines(results["mixed_batches"])
    if "patch_count_sweep" in results:
        parts += patch_sweep_lines(results["patch_count_sweep"])
    return "\n".join(parts) + "\n"


def patch_sweep_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The patch-count sweep's section; its heading counts the corruption table as it is."""
    return [
        f"## Patches per image N (mean AUROC over the {len(CORRUPTIONS)} corruptions at severity 3; latency per image)",
        "",
        "| N | AUROC | ms/img |",
        "|---|---|---|",
        *(f"| {r['n_patches']} | {_pct(r['mean_auroc'])} | {r['latency_ms']:.3f} |" for r in rows),
    ]


def _histograms_png(scores: dict[str, np.ndarray]) -> str:
    """Score histograms of the main row: clean and strongly corrupted, near-OOD, far-OOD, each against ID."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5), sharey=False)
    groups = (
        ["control/null", "gaussian_noise/5", "defocus_blur/5"],
        [k for k in scores if k.startswith("near/")],
        [k for k in scores if k.startswith("far/")],
    )
    for ax, group in zip(axes, groups):
        score_histogram(ax, scores["reference"], {k: scores[k] for k in group if k in scores})
    fig.suptitle("DisCoPatch score histograms")
    png = figure_png(fig)
    plt.close(fig)
    return png


def _heatmap_png(main: dict[str, Any]) -> str:
    """The main row's AUROC per corruption and severity, each cell labelled in %."""
    plt = pyplot()
    grid = np.array([[main["covariate_auroc"][c][str(s)] for s in SEVERITIES] for c in CORRUPTIONS])
    fig, ax = plt.subplots(figsize=(5.5, 6))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(SEVERITIES)), [str(s) for s in SEVERITIES])
    ax.set_yticks(range(len(CORRUPTIONS)), CORRUPTIONS)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            colour = "white" if grid[i, j] < 0.6 else "black"
            ax.text(j, i, f"{100 * grid[i, j]:.0f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set(xlabel="severity", title="DisCoPatch covariate-shift AUROC (%)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    png = figure_png(fig)
    plt.close(fig)
    return png


def _patch_sweep_png(rows: list[dict[str, Any]]) -> str:
    """AUROC and latency against the number of patches per image, on two axes."""
    plt = pyplot()
    fig, ax1 = plt.subplots(figsize=(6, 4))
    ns = [r["n_patches"] for r in rows]
    ax1.plot(ns, [r["mean_auroc"] for r in rows], "o-", color="C0")
    ax1.set(xscale="log", xlabel="patches per image N", ylabel="mean AUROC (severity 3)")
    ax2 = ax1.twinx()
    ax2.plot(ns, [r["latency_ms"] for r in rows], "s--", color="C1")
    ax2.set(ylabel="ms per image")
    ax1.set_title("Patch-count ablation")
    png = figure_png(fig)
    plt.close(fig)
    return png


#: The sets of the main row's ROC figure (with every near- and far-OOD set).
ROC_SETS = ("control/null", "control/hflip", "gaussian_noise/3", "defocus_blur/3", "contrast/3", "jpeg_compression/3")


def figures(results: dict[str, Any], raw: dict[str, dict[str, np.ndarray]]) -> dict[str, str]:
    """Base64 PNGs: ROC curves, score histograms, the corruption x severity heat map, the N sweep."""
    out: dict[str, str] = {}
    main = results["methods"].get(MAIN)
    scores = raw.get(MAIN)
    if main and scores:
        picks = [*ROC_SETS, *(k for k in scores if k.startswith(("near/", "far/")))]
        labels = {k: f"{k} ({100 * main['sets'][k]['auroc']:.1f})" for k in picks if k in scores}
        out["roc"] = roc_figure(scores["reference"], {k: scores[k] for k in labels}, labels)
        out["histograms"] = _histograms_png(scores)
        out["heatmap"] = _heatmap_png(main)
    if results.get("patch_count_sweep"):
        out["patches"] = _patch_sweep_png(results["patch_count_sweep"])
    return out


def save_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=1, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    raise TypeError(type(o))


def write_reports(results: dict[str, Any], raw: dict[str, dict[str, np.ndarray]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_json(results, out / "results.json")
    md = markdown_summary(results)
    (out / "summary.md").write_text(md)
    (out / "report.html").write_text(html_page("discopatch benchmark", md, figures(results, raw)))


#: At most this many sets get a ROC curve and a histogram panel (the table lists all of them).
MAX_PLOTTED_SETS = 12


def evaluation_markdown(res: EvaluationResult, model: str) -> str:
    """The report's text: which detector and threshold, then one table row per set with its AUROC interval."""
    meta = res.meta
    thr = meta.get("threshold")
    lines = [
        f"# discopatch evaluate: {model}",
        "",
        f"- model_id {meta.get('model_id')}, preset {meta.get('preset')}, score {meta.get('score_mode')}, "
        f"{meta.get('n_patches')} patches per image, discopatch {meta.get('version')}",
    ]
    if meta.get("n_calibration") is None:
        lines.append("- not calibrated: no threshold, nothing is flagged")
    else:
        lines.append(
            f"- threshold {'infinite (too few calibration images)' if thr is None else f'{thr:.6g}'} at "
            f"{meta['target_fpr']:.1%} target false-positive rate ({meta['n_calibration']} calibration images); "
            f"flagged = share of a set above it"
        )
    flagged = "" if res.id_flagged is None else f", {_pct(res.id_flagged)} % flagged"
    lines += [
        f"- ID set {res.id_name}: {res.n_id} images{flagged}",
        "- AUROC and the other metrics in %, OOD as the positive class; 95 % CI: percentile bootstrap of the AUROC "
        "(ID and OOD scores resampled separately, 1000 times, seed 0)",
        f"- evaluated {datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')} in {res.seconds:.1f} s"
        + (f"; {meta['pipeline']}" if meta.get("pipeline") else ""),
        "",
        "## Results",
        "",
        "| set | AUROC | 95 % CI | FPR95(OOD+) | FPR95(ID+) | AUPR-In | AUPR-Out | flagged | n |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res.rows.items():
        ci = r.get("auroc_ci95")
        lines.append(
            f"| {name} | {_pct(r['auroc'])} | {'-' if ci is None else f'{_pct(ci[0])} - {_pct(ci[1])}'} | "
            f"{_pct(r['fpr95_ood_positive'])} | {_pct(r['fpr95_id_positive'])} | {_pct(r['aupr_in'])} | "
            f"{_pct(r['aupr_out'])} | {_pct(r.get('flagged'))} | {r.get('n_ood', '')} |"
        )
    skipped = {k: v for k, v in res.unreadable.items() if v}
    if skipped:
        lines += ["", "## Unreadable files (skipped)", ""]
        lines += [f"- {k}: {len(v)}, first: {v[0][1]}" for k, v in skipped.items()]
    return "\n".join(lines) + "\n"


def evaluation_figures(res: EvaluationResult) -> dict[str, str]:
    """ROC curves and one histogram panel per set (ID against it, with the threshold), for up to
    :data:`MAX_PLOTTED_SETS` sets."""
    if res.id_scores is None or not res.ood_scores:
        return {}
    names = list(res.ood_scores)[:MAX_PLOTTED_SETS]
    more = f", first {len(names)} of {len(res.ood_scores)} sets" if len(res.ood_scores) > len(names) else ""
    labels = {}
    for k in names:
        ci = res.rows[k].get("auroc_ci95")
        labels[k] = (
            f"{k} ({_pct(res.rows[k]['auroc'])}" + ("" if ci is None else f", CI {_pct(ci[0])}-{_pct(ci[1])}") + ")"
        )
    out = {"ROC curves": roc_figure(res.id_scores, {k: res.ood_scores[k] for k in names}, labels, "ROC" + more)}
    plt = pyplot()
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.2 * rows), squeeze=False)
    thr = res.meta.get("threshold")
    for ax, k in zip(axes.ravel(), names):
        score_histogram(ax, res.id_scores, {k: res.ood_scores[k]}, thr)
        flagged = res.rows[k].get("flagged")
        ax.set_title(k + ("" if flagged is None else f": {_pct(flagged)} % flagged"), fontsize=9)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    fig.suptitle(f"Score histograms, ID: {res.id_name}{more}")
    fig.tight_layout()
    out["Score histograms"] = figure_png(fig)
    plt.close(fig)
    return out


def write_evaluation_report(res: EvaluationResult, path: Path, model: str) -> Path:
    """``discopatch evaluate --report``: one self-contained HTML file (add ``auroc_ci95`` to the rows first with
    :meth:`~discopatch.evaluation.evaluate.EvaluationResult.add_auroc_ci`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        html_page(f"discopatch evaluate: {model}", evaluation_markdown(res, model), evaluation_figures(res))
    )
    return path
