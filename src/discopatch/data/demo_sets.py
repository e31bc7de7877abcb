"""The demo's evaluation sets, built from the shipped data: an ID reference and the named sets compared with it.

Fashion-MNIST's 2,000 shipped test images split into an ID reference (the first half) and a held-out ID control
(the second); the control corrupted with ImageNet-C-style noise, blur, JPEG, contrast and pixelation (CIFAR-10-C-sized
parameters, severity 3); and Animal-MNIST silhouettes (near-OOD). Every set goes through one path: preprocess ->
optional corruption -> preprocess again, so the only difference between the control and a shifted set is the shift.

It lives with the data rather than with the demo because ``discopatch demo`` and ``bench-speed``'s precision check
both score these sets, and the speed measurement should not depend on the evaluation layer.
"""

from __future__ import annotations

import numpy as np

from ..config import PreprocessConfig
from .builtin import load_demo_animal_mnist, load_demo_fashion_mnist
from .corruptions import corrupt_batch
from .images import stack_images
from .sources import ImageSet

DEMO_CORRUPTIONS = ("gaussian_noise", "defocus_blur", "jpeg_compression", "contrast", "pixelate")
DEMO_SEVERITY = 3


def _named(images: np.ndarray, prefix: str) -> ImageSet:
    return ImageSet(images, [f"{prefix}#{i}" for i in range(len(images))])


def build_demo_sets(cfg: PreprocessConfig, seed: int = 0) -> tuple[ImageSet, dict[str, ImageSet]]:
    """The ID reference and the named evaluation sets, all preprocessed by ``cfg`` (the detector's own pipeline)."""
    data = load_demo_fashion_mnist()
    test = stack_images(data.test_images, cfg)
    reference, control = test[: len(test) // 2], test[len(test) // 2 :]
    sets: dict[str, ImageSet] = {"ID control (clean, held out)": _named(stack_images(control, cfg), "control")}
    for name in DEMO_CORRUPTIONS:
        shifted = corrupt_batch(control, name, DEMO_SEVERITY, seed=seed)
        sets[f"{name} (severity {DEMO_SEVERITY})"] = _named(stack_images(shifted, cfg), name)
    sets["Animal-MNIST (near-OOD)"] = _named(stack_images(load_demo_animal_mnist(), cfg), "animal")
    return _named(reference, "reference"), sets
