"""Does an early discriminator snapshot add what the final one lost? Two snapshots of one training, fused.

On photos D's near- and far-OOD scores are highest early in training and fall while its covariate score rises
(docs/BENCHMARKS.md, "Levers, seventh round"). This probe trains the protocol's preset as the learning curve
does (same images, seed and steps, so its final snapshot is the curve's end point), keeps D at each ``--early``
step and at the end, and scores every benchmark set with each snapshot from one forward pass per set. Each score
is put on the robust z-scale of held-out ID images (median and IQR, as the ``fused`` score does) and the scores are
combined by their maximum: ``early+final`` (D's two snapshots), ``early+final+stats`` (and the per-image statistics
of the final D, the ``fused`` default's second view); ``mean z`` averages the two snapshots' z-scores instead.
Prints and writes the summary AUROCs of every score (JSON) and every image's score per view (``.npz`` beside it);
``--table`` prints the mean +/- sd over seeds::

    OMP_NUM_THREADS=1 python scripts/snapshot_pair.py --protocol photos --seed 0 --early 25,100,345 --out pair_s0.json
    python scripts/snapshot_pair.py --table pair_s0.json pair_s1.json pair_s2.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from discopatch.benchmark.curve import _train_with_snapshots, curve_images, curve_preset, fit_steps
from discopatch.benchmark.curve_diagnostics import SUMMARY_KEYS
from discopatch.benchmark.curve_diagnostics import _summary as curve_summary
from discopatch.benchmark.datasets import load_protocol
from discopatch.benchmark.sets import Sets, build_sets
from discopatch.detector import Detector
from discopatch.inference.engine import scores_from_logits
from discopatch.model import Discriminator

#: Per named set (``reference`` and the benchmark's sets, and ``val``: held-out ID), per view, the image scores.
Scores = dict[str, dict[str, np.ndarray]]


def _robust_z(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    q1, med, q3 = np.percentile(ref, [25, 50, 75])
    return (x - med) / max(q3 - q1, 1e-9)


def _score_snapshot(det: Detector, snap: dict[str, Any], named: dict[str, np.ndarray], stats: np.ndarray) -> Scores:
    """D's score of every named stack with this snapshot; with its statistics model, the statistics score too."""
    D = Discriminator(det.preset.model)
    D.load_state_dict(snap["D"])
    det.discriminator = D.eval()
    det.fit_statistics(stats, named["val"])
    sm = det.stats_model
    assert sm is not None
    engine = det.scoring_engine()
    out: Scores = {}
    for name, stack in named.items():
        logits, feats = engine.logits_with_statistics(stack, det.batch_size)
        out[name] = {"d": scores_from_logits(logits), "stats": sm.mahalanobis(feats)}
    return out


def _summary(scores: dict[str, np.ndarray], sets: Sets) -> dict[str, float]:
    """The curve's summary of one score (every set against the reference; the held-out ``val`` images left out)."""
    row = curve_summary({n: s for n, s in scores.items() if n != "val"}, sets)
    return {k: round(100 * row[k], 1) for k in SUMMARY_KEYS}


def _combined(views: list[dict[str, np.ndarray]], how: str = "max") -> dict[str, np.ndarray]:
    """The maximum (or the mean) of the views' robust z-scores, each scaled on the held-out ID images."""
    reduce = np.max if how == "max" else np.mean
    return {n: reduce([_robust_z(v[n], v["val"]) for v in views], axis=0) for n in views[0]}


def print_seed_table(paths: list[Path]) -> None:
    """The docs' table: every score's AUROCs as mean +/- sd over the seeds' JSON outputs."""
    runs = [json.loads(p.read_text())["scores"] for p in paths]
    print(f"| score ({len(runs)} seeds) | cov | sev 3-5 | near | far | null |\n|---|---|---|---|---|---|")
    for name in runs[0]:
        cells = [np.array([r[name][k] for r in runs]) for k in SUMMARY_KEYS]
        print(f"| {name} | " + " | ".join(f"{c.mean():.1f} +/- {c.std(ddof=1):.1f}" for c in cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, nargs="+", help="print the mean +/- sd table of these outputs and stop")
    ap.add_argument("--protocol", default="photos", choices=["fmnist", "photos"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--early", default="25,100,345", help="comma-separated early snapshot steps")
    ap.add_argument("--steps", type=int, default=None, help="final step (default: the preset's, as fit trains it)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.table:
        return print_seed_table(args.table)
    if args.out is None:
        ap.error("--out is required")
    data = load_protocol(args.protocol, seed=0, n_test=800, n_ood=500, require_all_sets=True)  # as run_curve
    base = curve_preset(args.protocol, data, None, None, None, {})
    sets = build_sets(data, base, 0, False)
    images = curve_images(data, base, sets, 10_000, 200)
    final = args.steps or fit_steps(base, len(images.train))
    early = [int(s) for s in args.early.split(",")]
    det, snaps = _train_with_snapshots(base, images.train_raw, final, [*early, final], args.seed, False)
    named = {"reference": sets.reference, "val": images.val, **sets.named()}
    per_step = {snap["step"]: _score_snapshot(det, snap, named, images.stats) for snap in snaps}
    view = {step: {n: s[n]["d"] for n in named} for step, s in per_step.items()}
    stats = {n: per_step[final][n]["stats"] for n in named}
    result: dict[str, Any] = {"protocol": args.protocol, "seed": args.seed, "final": final, "scores": {}}
    for step in [*early, final]:
        result["scores"][f"D@{step}"] = _summary(view[step], sets)
    result["scores"]["fused (final)"] = _summary(_combined([view[final], stats]), sets)
    for step in early:
        result["scores"][f"D@{step}+D@{final}"] = _summary(_combined([view[step], view[final]]), sets)
        result["scores"][f"mean z(D@{step}, D@{final})"] = _summary(_combined([view[step], view[final]], "mean"), sets)
        result["scores"][f"D@{step}+D@{final}+stats"] = _summary(_combined([view[step], view[final], stats]), sets)
    args.out.write_text(json.dumps(result, indent=1))
    per_image = {f"D@{k}/{n}": v[n] for k, v in view.items() for n in named} | {f"stats/{n}": stats[n] for n in named}
    np.savez_compressed(args.out.with_suffix(".npz"), **per_image)  # every image's score, for other combinations
    print(f"{'score':28s} " + " ".join(f"{k.replace('_mean_auroc', ''):>14s}" for k in SUMMARY_KEYS))
    for name, row in result["scores"].items():
        print(f"{name:28s} " + " ".join(f"{v:14.1f}" for v in row.values()))


if __name__ == "__main__":
    main()
