"""Print the levers table of docs/BENCHMARKS.md from learning-curve outputs (``curve.json`` files).

Each argument is ``LABEL=FOLDER[,FOLDER...]``: the curve folders of one configuration (one seed each, or merged).
``LABEL@K=...`` reads the scores the curve measured with ``K`` test patches per image (``--also-test-patches``:
the same D as the row without ``@K``, scored again); ``LABEL#AGG=...`` the scores with D's patches aggregated as
``AGG`` (``--also-aggregate``: top50, top25, top12, max, gap12, spread or mean+gap12 instead of the mean; the
same D and pass).
One row per (configuration, evaluated step) with the mean +/- sd over the seeds that reached that step of D's and
the fused score's AUROC per axis, and what the game is doing there: D's training loss (from the run's log) and D's
mean output per image on held-out real / reconstructed / generated patches::

    python scripts/lever_table.py default=docs/benchmarks/curve/small-image-groups \\
        ttur=docs/benchmarks/curve/lever-ttur4/s0,docs/benchmarks/curve/lever-ttur4/s1
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from data_size_table import COLUMNS, _cell

HEADER = (
    "| configuration | step | seeds | D cov | D near | D far | D null | fused cov | fused sev 3-5 | fused near "
    "| fused far | fused null | D loss (train) | d(r/rec/gen) held-out |"
)


def _points(folder: Path, test_patches: str | None = None, aggregation: str | None = None) -> list[dict[str, Any]]:
    """Every evaluated point of every seed in one curve folder; with ``test_patches``, its scores re-measured with
    that many test patches, with ``aggregation`` its scores with D's patches aggregated that way (the game's
    diagnostics stay the point's own)."""
    curve = json.loads((folder / "curve.json").read_text())
    points = [point for seed_points in curve["runs"].values() for point in seed_points]
    if test_patches is not None:
        points = [point | point["by_test_patches"][test_patches] for point in points]
    if aggregation is not None:
        points = [point | point["by_aggregation"][aggregation] for point in points]
    return points


def _game(points: list[dict[str, Any]]) -> tuple[str, str]:
    """D's training loss and its per-image outputs on real / reconstructed / generated patches, seed means."""
    loss = statistics.mean(p["train_logs"]["loss_d"] for p in points)
    outs = [statistics.mean(p["game"][f"d_{k}_per_image"] for p in points) for k in ("real", "recon", "gen")]
    return f"{loss:.3f}", "/".join(f"{v:.2f}" for v in outs)


def table(groups: list[tuple[str, list[Path]]]) -> list[str]:
    """Markdown rows: one per (configuration, step), configurations in the order given."""
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for label, folders in groups:
        by_step: dict[int, list[dict[str, Any]]] = defaultdict(list)
        head, _, aggregation = label.partition("#")
        test_patches = head.partition("@")[2] or None
        for folder in folders:
            for point in _points(folder, test_patches, aggregation or None):
                by_step[point["step"]].append(point)
        for step in sorted(by_step):
            points = by_step[step]
            cells = [_cell([p[score][axis] for p in points]) for score, axis in COLUMNS]
            loss, outs = _game(points)
            lines.append(f"| {label} | {step} | {len(points)} | " + " | ".join(cells) + f" | {loss} | {outs} |")
    return lines


def _group(text: str) -> tuple[str, list[Path]]:
    label, _, folders = text.partition("=")
    if not folders:
        raise argparse.ArgumentTypeError(f"expected LABEL=FOLDER[,FOLDER...], got {text!r}")
    return label, [Path(f) for f in folders.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="+", type=_group, help="LABEL=FOLDER[,FOLDER...] per configuration")
    print("\n".join(table(parser.parse_args().groups)))


if __name__ == "__main__":
    main()
