"""``discopatch benchmark`` (the comparison, or the learning curve with ``--curve``) and ``discopatch attack``;
torch and the benchmark code are imported only when these commands run."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..benchmark import PROTOCOLS
from ..config import RESIZE_MODES, TRAIN_GROUPINGS
from ..errors import EXIT_OK, MissingFileError, UsageError
from .options import (
    Subcommands,
    add_allow_legacy,
    add_lever_options,
    add_preset,
    betas,
    examples,
    ints,
    lever_values,
    names,
    positive_ints,
    require_extra,
    seed_value,
)


def add_commands(sub: Subcommands) -> None:
    _add_benchmark(sub)
    _add_attack(sub)


def _add_benchmark(sub: Subcommands) -> None:
    """``benchmark``: the comparison's options, then the learning curve's in a group of their own."""
    p = sub.add_parser(
        "benchmark",
        help="DisCoPatch vs ablations and baselines on registry-installable data",
        epilog=examples(
            "discopatch benchmark --protocol fmnist --quick             # minutes: the whole pipeline, tiny",
            "discopatch benchmark --protocol fmnist --out bench/         # needs [bench] for the report",
            "discopatch benchmark --protocol fmnist --curve --seeds 0,1,2 --out curve/   # to fit's 1380 steps",
        ),
    )
    p.add_argument("--protocol", required=True, choices=PROTOCOLS, help="data sets (docs/BENCHMARKS.md)")
    p.add_argument("--quick", action="store_true", help="CI-sized smoke run of the whole pipeline")
    p.add_argument("--out", help="write results.json, summary.md and report.html here")
    p.add_argument("--seed", type=seed_value, default=0, help="seed of data selection and training")
    p.add_argument(
        "--train-time",
        type=float,
        help="also stop DisCoPatch's training after this many seconds, as fit's --max-time (default: no limit)",
    )
    p.add_argument(
        "--train-steps",
        type=int,
        help="DisCoPatch's training steps, as fit's --max-steps (default: the preset's budget, exactly as fit "
        "trains it; small: 1380; --quick: 20)",
    )
    p.add_argument(
        "--ablation-steps",
        type=int,
        help="train variants and norm ablations this many steps instead of 180 s each, and score the main model "
        "at the same step for comparison",
    )
    p.add_argument(
        "--stages",
        type=names,
        default="variants,ablations,baselines,drift,mixed,patches",
        help="comma-separated optional stages (default: all)",
    )
    p.add_argument(
        "--require-all-sets",
        action="store_true",
        help="refuse to start (exit 2, with the install commands) when a data set's source is missing, instead of "
        "warning and running with that set left out (for long unattended runs and --curve)",
    )
    _add_curve_options(
        p.add_argument_group("learning curve (--curve): one configuration, evaluated at log-spaced steps")
    )
    p.set_defaults(func=cmd_benchmark)


def _add_curve_options(g: Any) -> None:
    """``benchmark --curve``: steps and seeds, merging runs made apart, and the candidate configuration."""
    g.add_argument("--curve", action="store_true", help="run the learning curve instead of the comparison")
    add_preset(g, "D's preset (default: the protocol's: small for fmnist, small-photo for photos)", default=None)
    g.add_argument(
        "--max-steps",
        type=int,
        help="training steps per seed (default: the steps fit would run with the preset, small: 1380)",
    )
    g.add_argument("--points", type=int, default=7, help="log-spaced evaluation points (default: 7)")
    g.add_argument(
        "--at-steps",
        type=positive_ints,
        help="evaluate at these steps instead of log-spaced points, e.g. 345,1380,4150 (trains to the last)",
    )
    g.add_argument("--seeds", type=ints, default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    g.add_argument(
        "--merge",
        metavar="DIR,DIR,...",
        help="combine curve.json files of one configuration run in separate processes (one seed each) into --out",
    )
    g.add_argument(
        "--end-only", action="store_true", help="evaluate seeds after the first at the last step only (faster)"
    )
    g.add_argument("--betas", type=betas, help="Adam betas for both networks, e.g. 0.5,0.999 (default: the preset's)")
    g.add_argument("--grouping", choices=TRAIN_GROUPINGS, help="training normalisation groups")
    add_lever_options(g)
    g.add_argument("--n-train", type=int, help="ID training images (default: the protocol's)")
    g.add_argument("--image-size", type=int, help="candidate geometry: image side (default: the preset's)")
    g.add_argument("--resize", choices=RESIZE_MODES, help="candidate geometry: resize mode")
    g.add_argument("--patch-size", type=int, help="candidate geometry: patch side")
    g.add_argument("--widths", type=positive_ints, help="candidate geometry: D/VAE widths, e.g. 32,64")
    g.add_argument("--d-widths", type=positive_ints, help="D's own widths, one per layer (default: --widths)")
    g.add_argument(
        "--also-test-patches",
        type=positive_ints,
        default=(),
        metavar="K,K,...",
        help="also score every snapshot with these numbers of test patches (same D: an inference-time lever)",
    )
    g.add_argument(
        "--also-aggregate",
        type=names,
        default=(),
        metavar="NAME,...",
        help="also score every snapshot with D's patches aggregated these ways instead of the mean: top50, top25, "
        "top12 (mean of that share of the least real patches), max, or one comparing an image's patches with each "
        "other: gap12 (least real eighth minus the median), spread (their sd), mean+gap12 (same pass: an "
        "inference-time lever)",
    )


def _add_attack(sub: Subcommands) -> None:
    """``attack``: which detector (a saved one or one trained now), the data and the attacks' budgets."""
    p = sub.add_parser(
        "attack",
        help="white-box PGD and statistics-matching attacks on DisCoPatch and a baseline",
        epilog=examples(
            "discopatch attack --quick",
            "discopatch attack --model model/ --eps 1,2,4,8 --json attack.json",
        ),
    )
    p.add_argument("--protocol", default="fmnist", choices=PROTOCOLS, help="data sets (as benchmark)")
    p.add_argument("--model", help="attack this detector instead of training one (fused mode needs its statistics)")
    add_allow_legacy(p)
    p.add_argument(
        "--train-time",
        type=float,
        default=300.0,
        help="when no --model is given: cap in seconds on training the preset's steps (stopping early warns)",
    )
    p.add_argument("--n", type=int, default=200, help="images per set")
    p.add_argument("--steps", type=int, default=10, help="PGD steps")
    p.add_argument("--eps", type=ints, default="1,2,4,8", help="L-inf budgets in grey levels (/255)")
    p.add_argument("--quick", action="store_true", help="CI-sized smoke run")
    p.add_argument("--json", dest="json_out", help="also write the results as JSON")
    p.set_defaults(func=cmd_attack)


def cmd_benchmark(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from ..benchmark.report import markdown_summary
    from ..benchmark.runner import FULL, FULL_PHOTOS, QUICK, run_benchmark

    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.curve:
        return _cmd_curve(args)
    if args.out:  # the report's figures; checked now rather than after the whole run
        require_extra("bench", "matplotlib")
    budget = QUICK if args.quick else FULL_PHOTOS if args.protocol == "photos" else FULL
    if args.train_time is not None:
        budget = dataclasses.replace(budget, main_train=args.train_time)
    if args.train_steps is not None:
        budget = dataclasses.replace(budget, main_steps=args.train_steps)
    if args.ablation_steps is not None:
        budget = dataclasses.replace(budget, ablation_steps=args.ablation_steps)
    stages = tuple(args.stages)
    results = run_benchmark(
        args.protocol, args.out, quick=args.quick, seed=args.seed, progress=not args.quiet, budget=budget,
        stages=stages, require_all_sets=args.require_all_sets,
    )  # fmt: skip
    print(markdown_summary(results))
    if args.out:
        print(f"wrote {args.out}/results.json, summary.md and report.html", file=sys.stderr)
    return EXIT_OK


def _cmd_curve(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..benchmark.curve import curve_markdown, merge_curves, run_curve, write_curve

    if args.merge:
        if not args.out:
            raise UsageError("--merge needs --out")
        files = [Path(d) / "curve.json" for d in args.merge.split(",") if d]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:  # the user's list of run folders: a refusal of the command line, not a failure while running
            raise MissingFileError(f"--merge: no curve.json in {', '.join(missing)}")
        parts = [json.loads(f.read_text()) for f in files]
        res = merge_curves(parts)
        write_curve(res, Path(args.out))
        print(curve_markdown(res))
        return EXIT_OK

    train: dict[str, Any] = {}
    if args.betas:
        train["betas"] = args.betas
    if args.grouping:
        train["grouping"] = args.grouping
    train.update({k: v for k, v in lever_values(args).items() if v is not None})
    model = {"patch_size": args.patch_size} if args.patch_size else {}
    if args.widths:
        model["widths"] = args.widths
    if args.d_widths:
        model["d_widths"] = args.d_widths
    pre = {k: v for k, v in (("image_size", args.image_size), ("resize", args.resize)) if v}
    seeds = args.seeds
    quick = {"n_test": 40, "n_ood": 20} if args.quick else {}
    at = args.at_steps
    res = run_curve(
        args.protocol, args.out, preset=args.preset, steps=args.max_steps, points=args.points, seeds=seeds,
        quick=args.quick, n_train=args.n_train, all_points=not args.end_only, at_steps=at, progress=not args.quiet,
        model=model, preprocess=pre, other_test_patches=args.also_test_patches,
        aggregations=args.also_aggregate, require_all_sets=args.require_all_sets, **quick, **train,
    )  # fmt: skip
    print(curve_markdown(res))
    return EXIT_OK


def cmd_attack(args: argparse.Namespace) -> int:
    import json

    from ..benchmark.attacks import format_attack_table, run_attack_benchmark

    eps = args.eps
    res = run_attack_benchmark(
        args.protocol,
        args.model,
        args.train_time,
        args.n,
        args.steps,
        eps,
        quick=args.quick,
        allow_legacy=args.allow_legacy_artifact,
    )
    print(format_attack_table(res))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(res, f, indent=1)
    return EXIT_OK
