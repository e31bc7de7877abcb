"""``discopatch demo``: train, calibrate and evaluate on the bundled Fashion-MNIST data."""

from __future__ import annotations

import argparse

from ..errors import EXIT_OK
from ..presets import DEMO_MAX_TIME, DEMO_STEPS
from .options import Subcommands, add_device, examples, seed_value


def add_commands(sub: Subcommands) -> None:
    p = sub.add_parser(
        "demo",
        help="train, calibrate and evaluate on the bundled Fashion-MNIST data",
        epilog=examples("discopatch demo --out demo-out", "discopatch demo --max-steps 100 --seed 1"),
    )
    p.add_argument("--out", default="demo-out", help="output directory (model under OUT/model)")
    p.add_argument(
        "--max-steps",
        type=int,
        default=DEMO_STEPS,
        help="training steps (default: fit's 1380, as in the README's table)",
    )
    p.add_argument(
        "--max-time",
        type=float,
        default=DEMO_MAX_TIME,
        help="safety cap on training time in seconds; stopping before the planned steps warns (quality is lower)",
    )
    p.add_argument("--seed", type=seed_value, default=0, help="seed of training and the test patch positions")
    add_device(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..evaluation.demo import run_demo

    run_demo(
        args.out,
        max_time=args.max_time,
        max_steps=args.max_steps,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    return EXIT_OK
