"""``discopatch fit``: train a detector on a folder of in-distribution images (also under ``torchrun``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import score_modes
from .._version import __version__
from ..config import ABLATIONS, NORM_KINDS, RESIZE_MODES, TRAIN_GROUPINGS
from ..errors import EXIT_OK
from .config_files import add_config_options
from .options import (
    Subcommands,
    add_device,
    add_lever_options,
    add_preset,
    betas,
    examples,
    lever_values,
    positive_ints,
    seed_value,
)

if TYPE_CHECKING:
    from ..detector import Detector

#: ``fit --amp`` -> the trainer's ``amp`` (``None``: on for CUDA only).
AMP_MODES: dict[str, bool | None] = {"auto": None, "on": True, "off": False}


def add_commands(sub: Subcommands) -> None:
    p = sub.add_parser(
        "fit",
        help="train a detector on a folder of in-distribution images",
        epilog=examples(
            "discopatch fit id_images/ --out model/              # the preset's 1380 steps, any folder size",
            "discopatch fit id_images/ --out model/ --max-steps 3000 --max-time 3600",
            "discopatch fit id_images/ --out model/ --resume            # continue after an interruption",
            "discopatch fit photos/ --out model/ --channels 3 --score d-only",
            "discopatch fit --config fit.yaml --max-time 600    # options from a file, one of them overridden",
            "discopatch fit id_images/ --out model/ --print-config > fit.yaml",
        ),
    )
    _add_run_options(p)
    _add_overrides(p.add_argument_group("overrides (default: the preset's)"))
    _add_speed_options(
        p.add_argument_group("speed and scale (see docs/BENCHMARKS.md; torchrun runs DistributedDataParallel)")
    )
    add_device(p)
    add_config_options(p)
    p.set_defaults(func=cmd_fit)


def _add_run_options(p: Any) -> None:
    """What to train on, where the detector goes, how long it trains and how it is calibrated."""
    p.add_argument("images", help="folder of ID images (searched recursively)")
    p.add_argument("--out", required=True, help="directory to write the detector to")
    add_preset(
        p,
        "small: CPU scale model of the paper (64 px images, 32 px patches); small-photo: small at 128 px scored by "
        "D alone, for natural photos; small-long / small-photo-long: those trained 3x as long with LeCam; paper: "
        "DisCoPatch-64; small-1x1: the previous small preset, an ablation (default: small)",
    )
    p.add_argument(
        "--channels",
        default="auto",
        choices=["auto", "1", "3"],
        help="1 = gray, 3 = RGB, auto = from the images",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        help="training length in optimiser steps (default: the preset's: small 1380 whatever the folder size, "
        "where its learning curve peaks - docs/BENCHMARKS.md; paper: its 80 official epochs)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        help="train this many epochs over the training split instead (with --max-steps: whichever comes first)",
    )
    p.add_argument(
        "--max-time",
        type=float,
        help="also stop after this many seconds (default: no limit; stopping before the planned steps warns)",
    )
    p.add_argument(
        "--seed", type=seed_value, default=0, help="seed of training, the split and the test patch positions"
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    p.add_argument("--target-fpr", type=float, default=0.05, help="false-positive rate of the threshold (default 0.05)")
    p.add_argument("--val-fraction", type=float, help="share of images held out for calibration (default 0.1)")


def _add_overrides(g: Any) -> None:
    """The preset's fields a user may override: image and patch geometry, D and the VAE, the game's schedule."""
    g.add_argument("--image-size", type=int, help="side of the square every image is resized to, in pixels")
    g.add_argument("--resize", choices=RESIZE_MODES, help="how a non-square image becomes square")
    g.add_argument("--patch-size", type=int, help="side of D's square patches, in pixels")
    g.add_argument(
        "--widths", type=positive_ints, help="channels of D's (and the VAE's) conv blocks, e.g. 32,64,128,256"
    )
    g.add_argument(
        "--d-widths",
        type=positive_ints,
        help="D's own conv widths, one per layer of --widths (a wider D for photos; default: --widths)",
    )
    g.add_argument("--latent-dim", type=int, help="VAE latent size")
    g.add_argument(
        "--norm",
        choices=NORM_KINDS,
        help="D's normalisation; patch = per-image batch statistics (the method); others are ablations",
    )
    g.add_argument("--batch-images", type=int, help="images per training step")
    g.add_argument("--train-patches", type=int, help="random patches per image in training")
    g.add_argument("--test-patches", type=int, help="patches per image when scoring")
    g.add_argument("--lr", type=float, help="Adam learning rate of both networks")
    g.add_argument("--w-kl", type=float, help="weight of the VAE's KL term")
    g.add_argument("--w-adv", type=float, help="weight of the VAE's adversarial terms")
    g.add_argument(
        "--grouping",
        choices=TRAIN_GROUPINGS,
        help="training normalisation groups: the whole batch (domain, paper preset) or one image (image, small preset)",
    )
    g.add_argument("--ema", type=float, help="EMA decay of D's weights kept as the detector (0 = off)")
    g.add_argument("--no-first-norm", action="store_true", help="no normalisation in D's first layer")
    g.add_argument("--betas", type=betas, help="Adam betas of both optimisers, e.g. 0.5,0.999 (paper: 0.9,0.999)")
    add_lever_options(g)
    g.add_argument(
        "--ablation",
        choices=ABLATIONS,
        help="allow a configuration that is refused otherwise, recorded in the detector as a named ablation",
    )
    g.add_argument(
        "--score",
        choices=score_modes.NAMES,
        help=score_modes.help_text(),
    )
    g.add_argument(
        "--patch-aggregate",
        choices=list(score_modes.PATCH_AGGREGATES),
        help="which patches D's score averages: mean (all, the paper's) or the least real share (top50, top25, "
        "top12, max), meant for small local shifts; no better on the benchmarks (docs/BENCHMARKS.md)",
    )


def _add_speed_options(g: Any) -> None:
    """Options that change only how fast training runs, never what it computes."""
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="memory layout of D and the VAE while training (default: channels_last, 1.3x faster on CPU)",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the two update steps (slow first steps)")
    g.add_argument("--amp", choices=list(AMP_MODES), default="auto", help="bf16 autocast (auto: on for CUDA)")


def _detect_channels(folder: str, limit: int = 64) -> int:
    """3 if any of the first ``limit`` images has colour, else 1."""
    from PIL import Image

    from ..data.images import list_images

    for path in list_images(folder)[:limit]:
        try:
            with Image.open(path) as im:
                if im.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
                    if im.mode == "P" and not _palette_has_colour(im):
                        continue
                    return 3
        except Exception:
            continue
    return 1


def _palette_has_colour(im: Any) -> bool:
    rgb = im.convert("RGB")
    r, g, b = rgb.split()
    return bool(r.tobytes() != g.tobytes() or g.tobytes() != b.tobytes())


def cmd_fit(args: argparse.Namespace) -> int:
    from ..presets import get_preset

    channels = _detect_channels(args.images) if args.channels == "auto" else int(args.channels)
    preset = get_preset(args.preset, channels)
    model_kw = {
        k: v
        for k, v in {
            "patch_size": args.patch_size,
            "widths": args.widths,
            "d_widths": args.d_widths,
            "latent_dim": args.latent_dim,
            "norm": args.norm,
            "norm_first_layer": False if args.no_first_norm else None,
            "ablation": args.ablation,
        }.items()
        if v is not None
    }
    pre_kw = {k: v for k, v in {"image_size": args.image_size, "resize": args.resize}.items() if v is not None}
    train_kw = {
        k: v
        for k, v in {
            "batch_images": args.batch_images,
            "train_patches": args.train_patches,
            "lr": args.lr,
            "w_kl": args.w_kl,
            "w_adv": args.w_adv,
            "grouping": args.grouping,
            "ema": args.ema,
            "betas": args.betas,
            **lever_values(args),
        }.items()
        if v is not None
    }
    preset = preset.replace(
        model=dataclasses.replace(preset.model, **model_kw),
        preprocess=dataclasses.replace(preset.preprocess, **pre_kw),
    )
    if args.score is not None:
        preset = preset.replace(score_mode=args.score)
    if args.patch_aggregate is not None:
        preset = preset.replace(patch_aggregate=args.patch_aggregate)
    out = Path(args.out)
    from ..training.distributed import cleanup, init_from_env, launched_by_torchrun

    distributed = launched_by_torchrun()
    device = str(init_from_env(args.device)) if distributed else args.device
    try:
        return _fit_and_save(args, preset, train_kw, channels, out, device, distributed)
    finally:
        if distributed:
            cleanup()


def _fit_and_save(
    args: argparse.Namespace, preset: Any, train_kw: dict[str, Any], channels: int, out: Path, device: str, ddp: bool
) -> int:
    """The body of ``fit``; under torchrun every rank trains and rank 0 alone reports and saves."""
    from ..detector import Detector
    from ..training.distributed import is_main_process

    det = Detector(preset, device=device, seed=args.seed, test_patches=args.test_patches)
    det.run_config = getattr(args, "run_config", None)
    main = is_main_process()
    if main:
        _announce(args, det, channels, ddp)
    det.fit(
        args.images,
        epochs=args.epochs,
        max_time=args.max_time,
        max_steps=args.max_steps,
        val_fraction=args.val_fraction,
        target_fpr=args.target_fpr,
        checkpoint_dir=out / "checkpoints",
        resume=args.resume,
        progress=not args.quiet,
        channels_last=args.channels_last,
        compile=args.compile,
        amp=AMP_MODES[args.amp],
        **train_kw,
    )
    if not main:
        return EXIT_OK
    det.save(out)
    _report(det, out)
    return EXIT_OK


def _announce(args: argparse.Namespace, det: Detector, channels: int, ddp: bool) -> None:
    """Before training (rank 0): what is trained where, and under torchrun how the step splits over the ranks."""
    from ..training.distributed import rank_and_world

    preset = det.preset
    print(
        f"discopatch {__version__}: preset {preset.name}, {channels} channel(s), "
        f"{preset.preprocess.image_size} px images, {preset.model.patch_size} px patches, device {det.device}",
        file=sys.stderr,
    )
    if ddp:
        k, b = rank_and_world()[1], args.batch_images or preset.train.batch_images
        tp = args.train_patches or preset.train.train_patches
        print(
            f"DistributedDataParallel over {k} processes: each step trains on {k} x {b} images x {tp} patches "
            f"= {k * b * tp} real patches; normalisation statistics stay per rank and per domain ({b * tp} patches)",
            file=sys.stderr,
        )


def _report(det: Detector, out: Path) -> None:
    """After saving: the steps trained and why they stopped, the images used, the threshold, where it went."""
    info = det.training_info
    planned = "" if info.get("budget_complete", True) else f" of {info['planned_steps']} planned"
    print(
        f"trained {info['steps']}{planned} steps in {info['train_seconds']:.0f} s ({info['stop_reason']}); "
        f"{info['n_train_images']} train / {info['n_val_images']} calibration images"
        + (f"; {info['n_unreadable']} unreadable skipped" if info["n_unreadable"] else ""),
        file=sys.stderr,
    )
    if det.calibration is not None:
        print(
            f"threshold {det.calibration.threshold:.6g} at {det.calibration.target_fpr:.1%} FPR",
            file=sys.stderr,
        )
    else:
        print(
            "no validation images: the detector is not calibrated (run with --val-fraction > 0)",
            file=sys.stderr,
        )
    print(f"saved detector to {out}", file=sys.stderr)
