"""Shared fixtures: the demo data and session-wide trained detectors (helpers to import live in ``helpers/``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from discopatch.data.builtin import load_demo_fashion_mnist
from discopatch.detector import Detector
from helpers.presets import tiny_explain_preset, tiny_preset

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def fmnist():
    return load_demo_fashion_mnist()


@pytest.fixture(scope="session")
def trained_detector(fmnist) -> Detector:
    det = Detector(tiny_preset(), device="cpu", seed=0)
    det.fit(fmnist.train_images[:400], epochs=2, progress=False)
    return det


@pytest.fixture(scope="session")
def local_detector(fmnist) -> Detector:
    """For heat maps: 8 px patches on 32 px images (a quadrant holds whole patches), fused scoring, 200 steps
    (seconds); calibrated on its validation split."""
    preset = tiny_explain_preset()
    return Detector(preset, device="cpu", seed=0, engine="torch").fit(fmnist.train_images[:400], progress=False)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
