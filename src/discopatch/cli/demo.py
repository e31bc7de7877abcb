"""``discopatch demo``: train, calibrate and evaluate on the bundled Fashion-MNIST data."""

from __future__ import annotations

import argparse

from ..errors import EXIT_OK
from ..presets import DEMO_PRESETS
from .options import Subcommands, add_device, add_preset, examples, seed_value


def add_commands(sub: Subcommands) -> None:
    p = sub.add_parser(
        "demo",
        help="train, calibrate and evaluate on the bundled Fashion-MNIST data",
        epilog=examples(
            "discopatch demo --out demo-out",
            "discopatch demo --max-steps 100 --seed 1",
            "discopatch demo --preset small-long --out demo-long",
        ),
    )
    p.add_argument("--out", default="demo-out", help="output directory (model under OUT/model)")
    add_preset(p, f"what to train, one of {', '.join(DEMO_PRESETS)} (small-long: 3x the steps, LeCam)")
    p.add_argument(
        "--max-steps",
        type=int,
        help="training steps (default: the preset's, as fit trains it: small 1380, as in the README's table)",
    )
    p.add_argument(
        "--max-time",
        type=float,
        help="safety cap on training time in seconds (default: one hour per 1380 steps); stopping before the "
        "planned steps warns (quality is lower)",
    )
    p.add_argument("--seed", type=seed_value, default=0, help="seed of training and the test patch positions")
    add_device(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..evaluation.demo import demo_budget, run_demo

    _, cap = demo_budget(args.preset)
    run_demo(
        args.out,
        max_time=cap if args.max_time is None else args.max_time,
        max_steps=args.max_steps,  # None: the preset's own steps
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
        preset_name=args.preset,
    )
    return EXIT_OK
