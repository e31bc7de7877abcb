"""``discopatch benchmark --protocol fmnist|photos [--quick] [--out DIR]``."""

from __future__ import annotations

import argparse
import sys


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="DisCoPatch vs ablations and baselines on registry-installable data")
    p.add_argument("--protocol", required=True, choices=["fmnist", "photos"])
    p.add_argument("--quick", action="store_true", help="CI-sized smoke run of the whole pipeline")
    p.add_argument("--out", help="write results.json, summary.md and report.html here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-time", type=float, help="seconds of DisCoPatch training (default: 480 fmnist, 420 photos, quick: 6)"
    )
    p.add_argument(
        "--stages",
        default="variants,ablations,baselines,drift,mixed,patches",
        help="comma-separated optional stages (default: all)",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_benchmark)


def cmd_benchmark(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from .report import markdown_summary
    from .runner import FULL, FULL_PHOTOS, QUICK, run_benchmark

    torch.set_num_threads(max(1, torch.get_num_threads()))
    budget = QUICK if args.quick else FULL_PHOTOS if args.protocol == "photos" else FULL
    if args.train_time is not None:
        budget = dataclasses.replace(budget, main_train=args.train_time)
    stages = tuple(s for s in args.stages.split(",") if s)
    results = run_benchmark(
        args.protocol, args.out, quick=args.quick, seed=args.seed, progress=not args.quiet, budget=budget, stages=stages
    )
    print(markdown_summary(results))
    if args.out:
        print(f"wrote {args.out}/results.json, summary.md and report.html", file=sys.stderr)
    return 0
