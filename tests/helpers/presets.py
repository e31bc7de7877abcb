"""Tiny presets that train in seconds on 2 CPU cores, shared by the fixtures and the tests."""

from __future__ import annotations

import dataclasses

from discopatch.config import ModelConfig, PreprocessConfig, Preset, TrainConfig


def tiny_preset(channels: int = 1, norm: str = "patch", **train: object) -> Preset:
    """32 px images, 16 px patches, widths 8-16-32 (2x2 last map): real structure, seconds to train on 2 cores."""
    tcfg = TrainConfig(epochs=1, batch_images=16, train_patches=4, lr=2e-4, val_fraction=0.25, seed=0)
    return Preset(
        name="tiny",
        model=ModelConfig(channels=channels, patch_size=16, widths=(8, 16, 32), latent_dim=16, norm=norm),
        preprocess=PreprocessConfig(image_size=32, channels=channels, resize="pad"),
        train=dataclasses.replace(tcfg, **train),
        test_patches=8,
    )


def tiny_explain_preset() -> Preset:
    """For heat maps: 8 px patches on 32 px images (a quadrant holds whole patches), fused scoring, 200 steps."""
    return Preset(
        name="tiny-explain",
        model=ModelConfig(channels=1, patch_size=8, widths=(8, 16), latent_dim=16),
        preprocess=PreprocessConfig(image_size=32, channels=1, resize="pad"),
        train=TrainConfig(epochs=1000, max_steps=200, batch_images=16, train_patches=8, lr=5e-4, val_fraction=0.1),
        test_patches=64,
        score_mode="fused",
    )
