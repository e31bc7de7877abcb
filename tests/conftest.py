"""Shared fixtures: the demo data and session-wide trained detectors (helpers to import live in ``helpers/``)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from discopatch.data.builtin import load_demo_fashion_mnist
from discopatch.data.images import stack_images
from discopatch.detector import Detector
from discopatch.log import LOGGER
from discopatch.model import Discriminator
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


@pytest.fixture(scope="session")
def tiny_id_stack(fmnist) -> np.ndarray:
    """Preprocessed ID images for the tiny preset: 80 to fit the statistics, 40 for the fusion scales and
    calibration, 16 to score."""
    return stack_images(fmnist.train_images[:136], tiny_preset().preprocess)


@pytest.fixture(scope="session")
def untrained_tiny_d() -> Discriminator:
    """An untrained D of the tiny preset, for code that combines or selects D's numbers whatever they are."""
    torch.manual_seed(0)
    return Discriminator(tiny_preset().model).eval()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def log(caplog):
    """Records of the ``discopatch`` logger (the CLI sets it not to propagate, so attach caplog's handler)."""
    old = LOGGER.level, LOGGER.propagate
    LOGGER.addHandler(caplog.handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False  # caplog's handler is attached here; through the root it would count twice
    yield caplog
    LOGGER.setLevel(old[0])
    LOGGER.propagate = old[1]
    LOGGER.removeHandler(caplog.handler)
