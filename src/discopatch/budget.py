"""How long a run trains, the smallest image sets it can work with, and what ``fit`` says about both.

One rule, :func:`effective_train_config`, turns a preset's schedule and the user's explicit options into the
training that runs; ``fit``, ``demo``, the benchmark's main row and the learning curve all go through it, so a
benchmark measures the detector ``fit`` gives. A preset defines its length either in optimiser steps (``small``:
:data:`~discopatch.presets.SMALL_STEPS`, the same for any folder size and any machine) or in epochs (``paper``: the
official code's truncated epochs, its own budget definition). An explicit ``max_steps`` replaces the preset's epoch
count, explicit ``epochs`` replace its step count, both given stop at whichever comes first; a time limit applies
only when given, and stopping on it before the planned steps is a warning (:func:`time_limit_warning`).

No torch: the command line can use it before the heavy imports.
"""

from __future__ import annotations

import dataclasses
import math

from .calibration import Calibration, min_calibration_images
from .config import TrainConfig
from .errors import TooFewCalibrationImagesError
from .presets import SMALL_STEPS

#: Below this many images in a training folder ``fit`` warns: the smallest folder measured. At the default budget
#: 250 Fashion-MNIST images (225 trained on) stay within one seed spread of 54,000 on every axis (three seeds;
#: docs/BENCHMARKS.md, "Data size"); smaller folders were not measured.
MIN_FOLDER_IMAGES = 250


def official_epoch_steps(n_images: int, batch_images: int) -> int:
    """Steps in one "epoch" of the official code's BatchNorm commits (b2fcf79d, 5f48d551, 5793992b).

    Their loop counts patches and breaks once the count exceeds ``0.2 * len(loader) * patches_per_image``; every
    step adds ``batch_images * patches_per_image``, so the patch count cancels and an epoch is
    ``floor(0.2 * ceil(n / b) / b) + 1`` steps: 58 for ImageNet-1K's 1,281,167 images at 67 images per step.
    """
    loader_len = -(-n_images // batch_images)
    return loader_len // (5 * batch_images) + 1


def epoch_steps(cfg: TrainConfig, n_images: int, world_size: int = 1) -> int:
    """Steps that show every image about once (``epoch_rule="full"``) or the official truncated epoch.

    With K ranks each step consumes K batches. ``cfg.steps_per_epoch`` caps either.
    """
    per_step = cfg.batch_images * world_size
    full = max(1, n_images // per_step)
    if cfg.epoch_rule == "official-truncated":
        full = min(full, official_epoch_steps(n_images, per_step))
    return min(full, cfg.steps_per_epoch) if cfg.steps_per_epoch else full


def effective_train_config(
    train: TrainConfig, *, epochs: int | None = None, max_steps: int | None = None, max_time: float | None = None
) -> TrainConfig:
    """The schedule that runs: ``train`` (a preset's) with the user's explicit length options (``None``: not given).

    ``max_steps`` alone drops the preset's epoch count, ``epochs`` alone its step count (so ``--epochs 3`` trains
    three epochs and ``--max-steps 5000`` 5,000 steps whatever the preset), both given stop at whichever comes
    first; ``max_time`` is added as a limit and changes nothing else.
    """
    if max_steps is not None:
        train = dataclasses.replace(train, max_steps=max_steps, epochs=epochs)
    elif epochs is not None:
        train = dataclasses.replace(train, epochs=epochs, max_steps=None)
    return train if max_time is None else dataclasses.replace(train, max_time=max_time)


def planned_steps(cfg: TrainConfig, n_images: int, world_size: int = 1) -> int | None:
    """The steps ``cfg`` trains on ``n_images`` (``None``: only a time limit ends it)."""
    per_epoch = None if cfg.epochs is None else cfg.epochs * epoch_steps(cfg, n_images, world_size)
    limits = [s for s in (cfg.max_steps, per_epoch) if s is not None]
    return min(limits) if limits else None


def plan_line(cfg: TrainConfig, n_train: int, n_val: int, world_size: int = 1) -> str:
    """What ``fit`` prints before training: the images, the planned steps and the epochs they imply."""
    spe = epoch_steps(cfg, n_train, world_size)
    steps = planned_steps(cfg, n_train, world_size)
    images = f"{n_train:,} training / {n_val:,} validation images"
    per_step = f"{cfg.batch_images * world_size} images per step"
    if steps is None:
        return f"{images}; no step budget: trains until the {cfg.max_time:g} s time limit ({spe} steps per epoch)"
    if cfg.max_steps is not None and steps == cfg.max_steps:
        how = f"= {steps / spe:.3g} epochs of {spe} steps at {per_step}"
    else:
        how = f"{cfg.epochs} epochs of {spe} steps at {per_step}"
    limit = f"; at most {cfg.max_time:g} s" if cfg.max_time is not None else ""
    return f"{images}; {steps:,} training steps planned ({how}){limit}"


#: Past this many steps ``small`` without LeCam lost near-OOD on Fashion-MNIST (seed 0: 94.3 % at 2,760 steps,
#: 86.9 % at 4,150), where LeCam at 0.01 held to 5,520 steps on three seeds (docs/BENCHMARKS.md, "Levers").
LONG_TRAINING_STEPS = 2 * SMALL_STEPS
#: The presets of ``small``'s model and schedule, whose late fall without LeCam the learning curve measured.
LATE_FALL_PRESETS = ("small", "small-long")


def fit_warnings(preset_name: str, cfg: TrainConfig, n_images: int, n_train: int, world_size: int = 1) -> list[str]:
    """What ``fit`` warns about before training, one line each: a small folder, a long run without LeCam."""
    lines = [small_folder_warning(n_images), long_training_warning(preset_name, cfg, n_train, world_size)]
    return [line for line in lines if line is not None]


def long_training_warning(preset_name: str, cfg: TrainConfig, n_train: int, world_size: int = 1) -> str | None:
    """One line when ``small`` (or ``small-long`` with LeCam turned off) is asked to train past
    :data:`LONG_TRAINING_STEPS` without LeCam, else ``None``.

    Only ``small``'s late fall was measured; other presets (``paper``'s own epochs included) are left alone.
    """
    steps = planned_steps(cfg, n_train, world_size)
    if preset_name not in LATE_FALL_PRESETS or cfg.lecam > 0 or steps is None or steps <= LONG_TRAINING_STEPS:
        return None
    return (
        f"{steps:,} training steps without LeCam: past {LONG_TRAINING_STEPS:,} the small preset's near-OOD detection "
        "fell in the benchmark (docs/BENCHMARKS.md 'Levers'); add --lecam 0.01 to train this long, or use "
        "--preset small-long"
    )


def small_folder_warning(n_images: int) -> str | None:
    """One line when a training folder is below :data:`MIN_FOLDER_IMAGES`, else ``None``."""
    if n_images >= MIN_FOLDER_IMAGES:
        return None
    return (
        f"only {n_images} training images: below {MIN_FOLDER_IMAGES}, the smallest folder measured (README 'How "
        "many images'), quality is unknown and likely lower; add in-distribution images if you can"
    )


def check_calibration_size(n_val: int, n_images: int, target_fpr: float, val_fraction: float | None) -> None:
    """Refuse calibration sets too small for a finite threshold: ``fit``'s held-out split (``val_fraction``;
    0 means no calibration was asked for) or, with ``val_fraction=None``, the images given to ``calibrate``.

    Raises :class:`~discopatch.errors.TooFewCalibrationImagesError` naming the minimum and how to reach it.
    """
    need = min_calibration_images(target_fpr)
    if n_val >= need or (val_fraction is not None and val_fraction <= 0):
        return
    held = "" if val_fraction is None else "held-out "
    why = (
        f"{n_val} {held}calibration images are too few for a {target_fpr:g} false-positive rate: a finite threshold "
        f"needs at least {need} (ceil(1/{target_fpr:g}) - 1; below that no image is ever flagged)"
    )
    if val_fraction is None:
        raise TooFewCalibrationImagesError(f"{why}; calibrate on more ID images or with a larger target FPR")
    share = math.ceil(100 * need / n_images) / 100 if n_images else 1.0
    raise TooFewCalibrationImagesError(
        f"{why}. Give at least {math.ceil(need / val_fraction)} images at --val-fraction {val_fraction:g}"
        + (f", or --val-fraction {share:g} for these {n_images}" if share <= 0.5 else "")
        + ", or a larger --target-fpr; --val-fraction 0 trains without calibrating"
    )


def cusum_min_calibration(k: float) -> int:
    """The fewest calibration scores whose smallest conformal p-value, ``1 / (n + 1)``, makes ``-log p > k``: with
    fewer, a CUSUM of ``-log p - k`` never rises and no threshold reaches any run length (4 at the default k)."""
    n = max(1, math.floor(math.exp(k)) - 1)
    while math.log(n + 1.0) <= k + 1e-9:
        n += 1
    return n


def check_monitor_calibration(calibration: Calibration, cusum_k: float | None) -> None:
    """Refuse a calibration a drift monitor cannot use (a detector fitted on a handful of images), saying what to
    do, instead of failing later with a numeric error: it needs a finite threshold and, with the CUSUM
    (``cusum_k`` given), :func:`cusum_min_calibration` scores. Raises ``TooFewCalibrationImagesError``."""
    need = min_calibration_images(calibration.target_fpr)
    need = need if cusum_k is None else max(need, cusum_min_calibration(cusum_k))
    if calibration.n < need:
        raise TooFewCalibrationImagesError(
            f"the detector was calibrated on {calibration.n} held-out images, too few to monitor at a "
            f"{calibration.target_fpr:g} false-positive rate (at least {need}: below that its threshold is infinite "
            "and no image is ever flagged); refit it on more images or with a larger --val-fraction"
        )


def time_limit_warning(done: int, planned: int, seconds: float) -> str:
    """The one line printed when a time limit stops training before its planned steps."""
    return (
        f"training stopped by the {seconds:g} s time limit after {done:,} of {planned:,} planned steps: the detector "
        "is trained less than planned and its quality will be lower (remove or raise the time limit for the full "
        "budget)"
    )


def estimate_line(seconds_per_step: float, done: int, planned: int | None, max_time: float | None) -> str:
    """The time estimate logged after the first steps (the first step, with its warm-up, is not counted)."""
    if planned is None:
        return f"{seconds_per_step:.3g} s per step: about {(max_time or 0.0) / seconds_per_step:,.0f} steps in all"
    left = max(planned - done, 0) * seconds_per_step
    line = f"{seconds_per_step:.3g} s per step: about {_duration(left)} for the remaining {planned - done:,} steps"
    if max_time is not None and left > max_time:
        line += f"; the {max_time:g} s time limit will stop it before the planned steps"
    return line


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
