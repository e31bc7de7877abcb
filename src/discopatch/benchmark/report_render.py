"""Rendering shared by the benchmark's and ``evaluate --report``'s reports: figures as base64 PNG, a Markdown subset
as HTML, one self-contained page.

Figures are rendered with matplotlib (Agg) and embedded as base64 PNG, so an HTML report has no external fetches.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import numpy as np


def figure_png(fig: Any) -> str:
    """A matplotlib figure as base64 PNG, for an ``<img>`` inside the page."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display), imported only when a report draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_figure(
    reference: np.ndarray, sets: dict[str, np.ndarray], labels: dict[str, str], title: str = "DisCoPatch ROC curves"
) -> str:
    """Base64 PNG of one ROC curve per set against the ID ``reference`` scores (OOD = positive, higher = OOD)."""
    from sklearn.metrics import roc_curve

    plt = pyplot()
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
    png = figure_png(fig)
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
