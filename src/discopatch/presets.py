"""The named presets: complete recipes built from :mod:`discopatch.config`'s dataclasses.

``paper`` is the paper's configuration and stays faithful; the ``small`` family are CPU-sized scale models whose
every departure from the paper is a measured lever (docs/BENCHMARKS.md). A new preset is one function plus its
entry in :data:`PRESETS` (and the CLI's ordered list, ``cli.options.PRESET_NAMES``).
"""

from __future__ import annotations

import dataclasses

from .config import ModelConfig, PreprocessConfig, Preset, TrainConfig
from .errors import ConfigError


def paper_preset() -> Preset:
    """DisCoPatch-64 as in the official code (docs/METHOD.md): 80 truncated epochs of about 58 steps on ImageNet-1K
    (4,640 steps; fewer on a smaller folder: the official epoch rule); ``--max-steps`` sets a step count instead."""
    return Preset(
        name="paper",
        model=ModelConfig(channels=3, patch_size=64, widths=(128, 256, 512, 1024), latent_dim=1024),
        preprocess=PreprocessConfig(image_size=256, channels=3, resize="resize_crop"),
        train=TrainConfig(epochs=80, batch_images=67, train_patches=48, epoch_rule="official-truncated"),
        test_patches=64,
        notes="Faithful DisCoPatch-64: 256 px images, 64 px patches, 48 train / 64 test patches per image; the "
        "official BatchNorm commits' truncated epochs.",
    )


#: The ``small`` preset's training budget: the learning curve's best point (docs/BENCHMARKS.md, "Longer training").
SMALL_STEPS = 1380

#: The demo's budget is ``fit``'s, so it shows the detector a user gets (README). A step count keeps its table the
#: same on any machine and load; the time limit is a safety cap for very slow machines (it warns, the table differs).
DEMO_STEPS = SMALL_STEPS
DEMO_MAX_TIME = 3600.0
#: The presets ``discopatch demo`` can train: the Fashion-MNIST ones (``paper`` and ``small-photo`` are sized for
#: RGB photos).
DEMO_PRESETS = ("small", "small-long")


def small_preset(channels: int = 3) -> Preset:
    """A CPU-sized scale model of the paper's geometry: 64 px images, 32 px patches, three layers to a 4x4 map.

    Like the paper (256 px images, 64 px patches, 4x4 last map), patches are half the image side or less and D's
    head has a weight per position of a 4x4 map, so the per-image normalisation leaves the image something to say.
    Widths 16/32/64 (D: 24.5 k parameters gray). Scores are fused with the per-image layer statistics
    (``score_mode="fused"``; ``--score d-only`` is the paper's scoring; the previous preset: :func:`small_1x1_preset`).
    D trains with one image's patches per normalisation group (``grouping="image"``), as it scores (the paper pools
    a 64-image batch: ``--grouping domain``); over three seeds that lifted D's own score from 77 / 82 / 89 to 86 /
    92 / 95 % (covariate / near / far; docs/BENCHMARKS.md, "Longer training").

    Training runs 1,380 optimiser steps (:data:`SMALL_STEPS`, about 11 CPU minutes on one core), the pooled-group
    learning curve's best point (later the VAE overtook D and near-OOD fell), whatever the folder's size or the
    machine's speed or load: no epoch count or time limit cuts it unless asked (``--epochs``, ``--max-time``).
    32 test patches (16 until 0.3) lifted every axis on three seeds, at twice the scoring cost (docs/BENCHMARKS.md,
    "Levers, third round"). For natural photos see :func:`small_photo_preset`.
    """
    return Preset(
        name="small",
        model=ModelConfig(channels=channels, patch_size=32, widths=(16, 32, 64), latent_dim=128),
        preprocess=PreprocessConfig(image_size=64, channels=channels, resize="resize_crop"),
        train=TrainConfig(epochs=None, max_steps=SMALL_STEPS, batch_images=64, train_patches=8, grouping="image"),
        test_patches=32,
        score_mode="fused",
        notes="CPU preset: 64 px images, 32 px patches (4x4 last map), 8 train / 32 test patches per image, one "
        "image per training normalisation group; D fused with the per-image statistics (docs/BENCHMARKS.md, "
        "'Detection quality').",
    )


#: ``small-long``'s budget: three times ``small``'s (rounded as measured), where LeCam keeps D ahead to four times.
SMALL_LONG_STEPS = 4150
#: ``small-long``'s LeCam weight (docs/BENCHMARKS.md, "Levers, fourth round": a tenth of the first look's 0.1).
SMALL_LONG_LECAM = 0.01


def small_long_preset(channels: int = 3) -> Preset:
    """``small`` trained three times as long (:data:`SMALL_LONG_STEPS`, about 33 CPU minutes on one core), with the
    LeCam regulariser of D's outputs, which is what lets it train that long.

    Without LeCam the VAE overtakes D after about 2,760 steps and near-OOD falls; with it D's held-out outputs on
    real / reconstructed / prior patches stay apart to four times the budget. At 4,150 steps it is ahead of
    ``small`` on every axis over three seeds on fmnist (per seed ahead or within 0.1) and on the demo, but behind it
    at equal steps, so ``small`` stays the fast default (docs/BENCHMARKS.md, "Levers, fifth round").
    """
    return _trained_long(
        small_preset(channels),
        "small-long",
        "CPU preset: small trained three times as long (4,150 steps) with LeCam 0.01 on D's outputs "
        "(docs/BENCHMARKS.md, 'Levers, fifth round').",
    )


def _trained_long(base: Preset, name: str, notes: str) -> Preset:
    """``base`` with the long presets' one departure: :data:`SMALL_LONG_STEPS` steps with LeCam at
    :data:`SMALL_LONG_LECAM`, which is what lets D train that long without falling."""
    train = dataclasses.replace(base.train, max_steps=SMALL_LONG_STEPS, lecam=SMALL_LONG_LECAM)
    return base.replace(name=name, train=train, notes=notes)


def small_photo_preset(channels: int = 3) -> Preset:
    """``small`` for natural photos: 128 px images, scored by D alone, where the photos protocol disagrees with
    fmnist (64 px and the per-image statistics both cost D's photo scores: docs/BENCHMARKS.md, "Levers, third
    round"). Everything else is ``small``'s."""
    base = small_preset(channels)
    return base.replace(
        name="small-photo",
        preprocess=dataclasses.replace(base.preprocess, image_size=128),
        score_mode="d-only",
        notes="CPU preset for natural photos: small's model at 128 px images (32 px patches, 4x4 last map), "
        "8 train / 32 test patches per image, D's own score (docs/BENCHMARKS.md, 'Levers, third round').",
    )


def small_photo_long_preset(channels: int = 3) -> Preset:
    """``small-photo`` trained three times as long with LeCam, as ``small-long`` is ``small`` (the same
    :data:`SMALL_LONG_STEPS` and :data:`SMALL_LONG_LECAM`; about 34 CPU minutes on one core instead of 11).

    On the photos protocol it is ahead of ``small-photo`` on covariate shift and near-OOD on every one of three seeds
    and within the seed spread on far-OOD, where LeCam at equal steps loses: the longer training is what pays
    (docs/BENCHMARKS.md, "small-photo with LeCam at three times the budget").
    """
    return _trained_long(
        small_photo_preset(channels),
        "small-photo-long",
        "CPU preset for natural photos: small-photo trained three times as long (4,150 steps) with LeCam 0.01 on "
        "D's outputs (docs/BENCHMARKS.md, 'small-photo with LeCam at three times the budget').",
    )


def small_1x1_preset(channels: int = 3) -> Preset:
    """The ``small`` preset before the 4x4 scale model, kept as a labelled ablation row (1x1 last map).

    32 px images, 16 px patches, widths 16/32/64/128: D's last map is 1x1, so its per-image normalisation erases
    the image mean of every channel; its D score fell with training (docs/BENCHMARKS.md, "Learning curve").
    """
    return Preset(
        name="small-1x1",
        model=ModelConfig(
            channels=channels, patch_size=16, widths=(16, 32, 64, 128), latent_dim=128, ablation="1x1-last-map"
        ),
        preprocess=PreprocessConfig(image_size=32, channels=channels, resize="pad"),
        train=TrainConfig(epochs=10, batch_images=64, train_patches=8),
        test_patches=16,
        score_mode="fused",
        notes="ABLATION (1x1 last map): the small preset up to 0.1; kept for comparison only.",
    )


PRESETS = {
    "paper": paper_preset,
    "small": small_preset,
    "small-long": small_long_preset,
    "small-photo": small_photo_preset,
    "small-photo-long": small_photo_long_preset,
    "small-1x1": small_1x1_preset,
}


def get_preset(name: str, channels: int | None = None) -> Preset:
    """Return the named preset, optionally with another channel count (1 = gray, 3 = RGB)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]()
    if channels is not None and channels != preset.model.channels:
        preset = preset.replace(
            model=dataclasses.replace(preset.model, channels=channels),
            preprocess=dataclasses.replace(preset.preprocess, channels=channels),
        )
    return preset
