"""Print the data-size table of docs/BENCHMARKS.md from learning-curve outputs (``curve.json`` files).

Each argument is a folder written by ``discopatch benchmark --curve`` (one seed, or several merged with
``--merge``); the rows are grouped by the number of training images the run used and show, at the last evaluated
step, the mean +/- sd over seeds of D's and the fused score's AUROC per axis and the range of the memorisation
diagnostic (``overfit``: D separating held-out ID images from images it trained on; 50 = none)::

    python scripts/data_size_table.py docs/benchmarks/curve/data-size-*
    python scripts/data_size_table.py --step 1380 docs/benchmarks/curve/small-image-groups   # 54,000 images
    python scripts/data_size_table.py --steps docs/benchmarks/curve/data-size-2k-steps   # one row per step
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

AXES = ("covariate_mean_auroc", "near_mean_auroc", "far_mean_auroc", "null_auroc")
COLUMNS = (
    [("d-only", a) for a in AXES]
    + [("fused", a) for a in AXES[:1]]
    + [("fused", "covariate_mean_auroc_sev345")]
    + [("fused", a) for a in AXES[1:]]
)
HEADER = (
    "| training images | step | seeds | D cov | D near | D far | D null | fused cov | fused sev 3-5 | fused near "
    "| fused far | fused null | overfit |"
)


def _runs(folder: Path) -> tuple[int, list[dict[str, Any]]]:
    """(training images, every evaluated point of every seed) of one curve folder."""
    curve = json.loads((folder / "curve.json").read_text())
    points = [point for seed_points in curve["runs"].values() for point in seed_points]
    return int(curve["data"]["n_train"]), points


def _cell(values: list[float | None]) -> str:
    """Mean +/- sd in percent (sd over seeds; a single seed shows its value only); ``-`` where a run had none of
    the axis's sets (a data source missing on its machine: the run's ``data.skipped`` says which)."""
    if any(v is None for v in values):
        return "-"
    pct = [100 * v for v in values if v is not None]
    if len(pct) == 1:
        return f"{pct[0]:.1f}"
    return f"{statistics.mean(pct):.1f} +/- {statistics.stdev(pct):.1f}"


def _row(n_train: int, step: int, points: list[dict[str, Any]]) -> str:
    """One table row from the points of one (training images, step) cell."""
    cells = [_cell([p[score][axis] for p in points]) for score, axis in COLUMNS]
    overfit = [100 * p["game"]["overfit_auroc"] for p in points if p.get("game", {}).get("overfit_auroc") is not None]
    span = f"{min(overfit):.1f}-{max(overfit):.1f}" if len(overfit) > 1 else (f"{overfit[0]:.1f}" if overfit else "")
    return f"| {n_train:,} | {step} | {len(points)} | " + " | ".join(cells) + f" | {span} |"


def table(folders: list[Path], *, every_step: bool, step: int | None = None) -> list[str]:
    """Markdown rows: one per training-set size at ``step`` (default: each folder's last), or one per step."""
    cells: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for folder in folders:
        n_train, points = _runs(folder)
        chosen = step if step is not None else max(p["step"] for p in points)
        for point in points:
            if every_step or point["step"] == chosen:
                cells[(n_train, point["step"])].append(point)
    separator = "|" + "---|" * (HEADER.count("|") - 1)
    return [HEADER, separator] + [_row(n, s, cells[(n, s)]) for n, s in sorted(cells)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="curve output folders (each with curve.json)")
    parser.add_argument("--steps", action="store_true", help="one row per evaluated step, not only the last")
    parser.add_argument("--step", type=int, help="the step to tabulate (default: each folder's last)")
    args = parser.parse_args()
    print("\n".join(table(args.folders, every_step=args.steps, step=args.step)))


if __name__ == "__main__":
    main()
