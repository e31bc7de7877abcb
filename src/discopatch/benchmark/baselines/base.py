"""The baseline interface (:class:`Baseline`) and the helpers every baseline family shares."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ...patches import content_corners, extract_patches, to_tensor


class Baseline(abc.ABC):
    """A per-image detector: ``fit`` on ID images (returns ``self``), ``score`` any images (float64, high = OOD).

    ``fit_seconds`` is the wall time of the last ``fit`` (training cost for the report). ``max_time`` caps training
    where there is training; ``seed`` fixes every random choice of ``fit``. A time-capped run stops after a number
    of steps that depends on the machine, so exact reproducibility needs a step/epoch limit instead.
    """

    name: str = "baseline"
    uses_labels: bool = False
    fit_seconds: float = 0.0

    @abc.abstractmethod
    def fit(
        self, images: np.ndarray, labels: np.ndarray | None = None, *, max_time: float | None = None, seed: int = 0
    ) -> Baseline:
        """Fit on ID training images (labels only for ``uses_labels`` baselines); returns ``self``."""

    @abc.abstractmethod
    def score(self, images: np.ndarray) -> np.ndarray:
        """OOD scores ``(N,)`` float64, higher = more OOD."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _check_stack(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"expected a uint8 stack (N, S, S) or (N, S, S, C); got {images.dtype} {images.shape}")
    return images


def _channels(images: np.ndarray) -> int:
    return 1 if images.ndim == 3 else int(images.shape[3])


def _chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (running statistics, no dropout) for the block, restoring the caller's mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG for weight initialisation without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _image_patches(
    images: np.ndarray, patch: int, n_patches: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, np.ndarray]:
    """The content-seeded patches DisCoPatch scores (same seed -> same patches): ``(B * n, C, p, p)`` and corners."""
    corners = content_corners(images, patch, n_patches, seed)
    return extract_patches(to_tensor(images).to(device), corners, patch), corners
