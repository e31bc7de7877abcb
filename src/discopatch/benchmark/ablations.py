"""Ablations that explain where DisCoPatch's signal comes from.

* :func:`layerwise_discriminator` - per-image statistics in one layer only; every other layer normalises with fixed
  population statistics measured on ID training images (so it behaves like eval-mode BatchNorm there). Shows which
  layer's per-image statistics carry the signal.
* :func:`mixed_batch_aurocs` - batches of 64 images with a growing OOD fraction, scored with per-image statistics and
  with statistics pooled over the batch (the leak the paper warns about).
* :func:`patch_count_sweep` - AUROC and latency against the number of patches per image.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypedDict, cast

import numpy as np
import torch
from torch import nn

from ..inference.engine import score_array
from ..metrics import ood_metrics
from ..model import Discriminator
from ..patches import content_corners, extract_patches, to_tensor


class FixedStatsNorm(nn.Module):
    """Normalise with constant per-channel statistics and the trained affine: a layer without per-image statistics."""

    mean: torch.Tensor  # buffers
    var: torch.Tensor

    def __init__(self, trained: nn.Module, mean: torch.Tensor, var: torch.Tensor) -> None:
        super().__init__()
        # the trained norm layer's affine parameters and epsilon (nn.Module types its attributes as Tensor | Module)
        self.weight = cast(torch.Tensor, trained.weight)
        self.bias = cast(torch.Tensor, trained.bias)
        self.eps = cast(float, trained.eps)
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("var", var.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
        scale = self.weight.view(1, -1, 1, 1) * torch.rsqrt(self.var + self.eps)
        return (x - self.mean) * scale + self.bias.view(1, -1, 1, 1)


@torch.no_grad()
def layerwise_discriminator(
    D: Discriminator, id_images: np.ndarray, keep_layer: int, n_patches: int, seed: int = 0
) -> Discriminator:
    """A copy of D with per-image statistics in layer ``keep_layer`` only (0-based).

    The fixed statistics of each other layer are the pooled mean and variance of its conv output over all patches of
    ``id_images``, measured layer by layer through the modified network so later layers see what they will see.
    """
    Dk = copy.deepcopy(D).eval()
    x0 = extract_patches(
        to_tensor(id_images), content_corners(id_images, D.cfg.patch_size, n_patches, seed), D.cfg.patch_size
    )
    x = x0
    for j, block in enumerate(Dk.blocks):
        h = block.conv(x)
        if j != keep_layer:
            var, mean = torch.var_mean(h.double(), dim=(0, 2, 3), unbiased=False)
            block.norm = FixedStatsNorm(block.norm, mean.float(), var.float())
        x = block.act(block.norm(h, n_patches))
    return Dk


class PatchCountRow(TypedDict):
    """One row of :func:`patch_count_sweep`."""

    n_patches: int
    mean_auroc: float
    latency_ms: float
    aurocs: dict[str, float]  # per set


def patch_count_sweep(
    D: Discriminator,
    reference: np.ndarray,
    sets: Mapping[str, np.ndarray],
    counts: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
    seed: int = 0,
    latency_images: int = 256,
) -> list[PatchCountRow]:
    """For each N: mean AUROC over ``sets`` against ``reference`` and the median latency per image (ms)."""
    rows: list[PatchCountRow] = []
    for n in counts:
        ref = score_array(D, reference, n, seed)
        aurocs = {k: ood_metrics(ref, score_array(D, v, n, seed))["auroc"] for k, v in sets.items()}
        sample = reference[:latency_images]
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            score_array(D, sample, n, seed)
            times.append((time.perf_counter() - t0) / len(sample) * 1000)
        rows.append(
            {
                "n_patches": n,
                "mean_auroc": float(np.mean(list(aurocs.values()))),
                "latency_ms": float(np.median(times)),
                "aurocs": aurocs,
            }
        )
    return rows


def mixed_batch_aurocs(
    score_fn: Callable[[np.ndarray, int], np.ndarray],
    id_images: np.ndarray,
    ood_images: np.ndarray,
    fractions: Sequence[float] = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
    batch: int = 64,
    n_batches: int = 8,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Per-image AUROC of ID vs OOD images scored inside batches of ``batch`` images with an OOD share ``fraction``.

    ``score_fn(images, pool_images)`` scores a stack; ``pool_images=1`` is per-image statistics, ``batch`` pools over
    the whole batch. At fractions 0 and 1 a batch holds one class only, so those two rows compare ID images from
    all-ID batches with OOD images from all-OOD batches: exactly the homogeneous test sets of a leaky evaluation.
    """
    rng = np.random.default_rng(seed)
    out = []
    scored: dict[tuple[float, int], tuple[np.ndarray, np.ndarray]] = {}
    for f in fractions:
        for pool in (1, batch):
            ids, oods = [], []
            for _ in range(n_batches):
                k = round(batch * f)
                oi = rng.choice(len(ood_images), size=k, replace=False) if k else np.zeros(0, int)
                ii = rng.choice(len(id_images), size=batch - k, replace=False) if batch - k else np.zeros(0, int)
                imgs = (
                    np.concatenate([ood_images[oi], id_images[ii]])
                    if k and batch - k
                    else (ood_images[oi] if k else id_images[ii])
                )
                s = score_fn(imgs, pool)
                oods.append(s[:k])
                ids.append(s[k:])
            scored[(f, pool)] = (np.concatenate(ids), np.concatenate(oods))
    for f in fractions:
        row: dict[str, float] = {"ood_fraction": float(f)}
        for pool, name in ((1, "per_image_auroc"), (batch, "pooled_auroc")):
            id_s, ood_s = scored[(f, pool)]
            if len(id_s) == 0:
                id_s = scored[(fractions[0], pool)][0]
            if len(ood_s) == 0:
                ood_s = scored[(fractions[-1], pool)][1]
            row[name] = ood_metrics(id_s, ood_s)["auroc"]
        out.append(row)
    return out
