"""Benchmark outputs: ``results.json``, a Markdown summary and a self-contained HTML report with figures; and the
same kind of report for ``discopatch evaluate --report`` (:func:`write_evaluation_report`).

Figures are rendered with matplotlib (Agg) and embedded as base64 PNG, so the HTML file has no external fetches.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.corruptions import CORRUPTIONS, SEVERITIES

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


def markdown_summary(results: dict[str, Any]) -> str:
    main = results["methods"].get(MAIN)
    parts = [
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
        "## Methods",
        method_table(results),
    ]
    if main:
        parts += [
            "",
            "## DisCoPatch: covariate shift per corruption and severity (AUROC %)",
            "",
            grid_table(main),
            "",
            "## DisCoPatch: controls, near- and far-OOD",
            "",
            sets_table(main, ("control/", "near/", "far/")),
        ]
    if "drift_power" in results:
        dp = results["drift_power"]
        tests = list(next(iter(dp["shifts"].values())).keys()) if dp["shifts"] else []
        parts += [
            "",
            f"## Images needed for {int(100 * dp['target_power'])} % power at alpha {dp['alpha']} "
            f"(batch tests; n tried: {dp['ns']}, {dp['trials']} trials; '>' = not reached)",
            "",
            "| shift | " + " | ".join(tests) + " |",
            "|---|" + "---|" * len(tests),
        ]
        for shift, r in dp["shifts"].items():
            parts.append(
                f"| {shift} | "
                + " | ".join(
                    str(r[t]["n_for_power"]) if r[t]["n_for_power"] is not None else f">{max(dp['ns'])}" for t in tests
                )
                + " |"
            )
        parts.append(
            "\nType-I error on held-out ID per n: " + "; ".join(f"{t}: {v}" for t, v in dp["type1_error"].items())
        )
    if "mixed_batches" in results:
        parts += ["", "## Mixed batches of 64 images (AUROC %, per-image vs pooled statistics)", ""]
        for name, rows in results["mixed_batches"].items():
            parts.append(
                f"**{name}**: "
                + ", ".join(
                    f"{int(100 * r['ood_fraction'])} % OOD: {_pct(r['per_image_auroc'])} / {_pct(r['pooled_auroc'])}"
                    for r in rows
                )
            )
            parts.append("")
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


def _figure_png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_figure(
    reference: np.ndarray, sets: dict[str, np.ndarray], labels: dict[str, str], title: str = "DisCoPatch ROC curves"
) -> str:
    """Base64 PNG of one ROC curve per set against the ID ``reference`` scores (OOD = positive, higher = OOD)."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for k, s in sets.items():
        y = np.r_[np.zeros(len(reference)), np.ones(len(s))]
        fpr, tpr, _ = roc_curve(y, np.r_[reference, s])
        ax.plot(fpr, tpr, label=labels.get(k, k))
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(
        xlabel="false-positive rate (ID flagged)",
        ylabel="true-positive rate (OOD caught)",
        title=f"{title} (AUROC %)",
    )
    ax.legend(fontsize=7)
    png = _figure_png(fig)
    plt.close(fig)
    return png


def score_histogram(
    ax: Any, reference: np.ndarray, sets: dict[str, np.ndarray], threshold: float | None = None
) -> None:
    """The ID ``reference`` scores filled, each set's as an outline, on shared bins; the threshold as a dashed line."""
    lo = min(float(np.min(v)) for v in [reference, *sets.values()])
    hi = max(float(np.max(v)) for v in [reference, *sets.values()])
    bins = np.linspace(lo, hi + 1e-12, 40)
    ax.hist(reference, bins=bins, alpha=0.5, density=True, label="ID reference")
    for k, v in sets.items():
        ax.hist(v, bins=bins, histtype="step", density=True, label=k)
    if threshold is not None and math.isfinite(threshold):
        ax.axvline(threshold, color="k", ls="--", lw=1, label="threshold")
    ax.set(xlabel="score (higher = more OOD)")
    ax.legend(fontsize=7)


def figures(results: dict[str, Any], raw: dict[str, dict[str, np.ndarray]]) -> dict[str, str]:
    """Base64 PNGs: ROC curves, score histograms, the corruption x severity heat map, the N sweep."""
    plt = _pyplot()
    out: dict[str, str] = {}
    main = results["methods"].get(MAIN)
    scores = raw.get(MAIN)
    if main and scores:
        picks = [
            "control/null",
            "control/hflip",
            "gaussian_noise/3",
            "defocus_blur/3",
            "contrast/3",
            "jpeg_compression/3",
        ] + [k for k in scores if k.startswith(("near/", "far/"))]
        labels = {k: f"{k} ({100 * main['sets'][k]['auroc']:.1f})" for k in picks if k in scores}
        out["roc"] = roc_figure(scores["reference"], {k: scores[k] for k in labels}, labels)

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.5), sharey=False)
        for ax, group in zip(
            axes,
            (
                ["control/null", "gaussian_noise/5", "defocus_blur/5"],
                [k for k in scores if k.startswith("near/")],
                [k for k in scores if k.startswith("far/")],
            ),
        ):
            score_histogram(ax, scores["reference"], {k: scores[k] for k in group if k in scores})
        fig.suptitle("DisCoPatch score histograms")
        out["histograms"] = _figure_png(fig)
        plt.close(fig)

        grid = np.array([[main["covariate_auroc"][c][str(s)] for s in SEVERITIES] for c in CORRUPTIONS])
        fig, ax = plt.subplots(figsize=(5.5, 6))
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(SEVERITIES)), [str(s) for s in SEVERITIES])
        ax.set_yticks(range(len(CORRUPTIONS)), CORRUPTIONS)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{100 * grid[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if grid[i, j] < 0.6 else "black",
                )
        ax.set(xlabel="severity", title="DisCoPatch covariate-shift AUROC (%)")
        fig.colorbar(im, ax=ax, fraction=0.04)
        out["heatmap"] = _figure_png(fig)
        plt.close(fig)
    if results.get("patch_count_sweep"):
        rows = results["patch_count_sweep"]
        fig, ax1 = plt.subplots(figsize=(6, 4))
        ns = [r["n_patches"] for r in rows]
        ax1.plot(ns, [r["mean_auroc"] for r in rows], "o-", color="C0")
        ax1.set(xscale="log", xlabel="patches per image N", ylabel="mean AUROC (severity 3)")
        ax2 = ax1.twinx()
        ax2.plot(ns, [r["latency_ms"] for r in rows], "s--", color="C1")
        ax2.set(ylabel="ms per image")
        ax1.set_title("Patch-count ablation")
        out["patches"] = _figure_png(fig)
        plt.close(fig)
    return out


def _md_to_html(md: str) -> str:
    """A tiny Markdown subset (headings, tables, bullets, bold) is all the summary uses."""
    out, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-"} for c in cells):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            out.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    if in_table:
        out.append("</table>")
    return "\n".join(out)


def _inline(text: str) -> str:
    t = html.escape(text)
    parts = t.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts)).replace("`", "")


def html_page(title: str, md: str, figs: dict[str, str]) -> str:
    """A self-contained HTML page: the Markdown body, then each figure under its name."""
    body = _md_to_html(md)
    imgs = "".join(f'<h2>{html.escape(k)}</h2><img alt="{k}" src="data:image/png;base64,{v}">' for k, v in figs.items())
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:first-child{text-align:left}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{body}{imgs}</body></html>"
    )


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
    plt = _pyplot()
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
    out["Score histograms"] = _figure_png(fig)
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
