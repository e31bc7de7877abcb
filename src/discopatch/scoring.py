"""Per-image scoring with the discriminator: score = 1 - mean over the image's patches of D(patch).

Many images can share one forward pass; the grouped normalisation still gives each image its own statistics
because the group size is exactly one image's ``n_patches``. ``pool_images`` > 1 deliberately pools statistics
over several images - the leak the paper warns about - and exists only so benchmarks can show its effect.
"""

from __future__ import annotations

import numpy as np
import torch

from .model import Discriminator
from .patches import content_corners, extract_patches, to_tensor


@torch.no_grad()
def patch_logits(
    D: Discriminator,
    images: np.ndarray,
    n_patches: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    pool_images: int = 1,
) -> torch.Tensor:
    """Logits ``(B, n_patches)`` for a preprocessed uint8 stack ``(B, S, S[, C])`` scored in one forward pass."""
    if len(images) == 0:
        return torch.zeros(0, n_patches, dtype=torch.float32)
    p = D.cfg.patch_size
    corners = content_corners(images, p, n_patches, seed)
    x = extract_patches(to_tensor(images).to(device), corners, p)
    was_training = D.training
    D.eval()
    try:
        group = n_patches * pool_images
        if len(images) % pool_images:
            raise ValueError(f"{len(images)} images cannot be pooled in groups of {pool_images}")
        logits = D(x, group)
    finally:
        D.train(was_training)
    return logits.float().reshape(len(images), n_patches).cpu()


def scores_from_logits(logits: torch.Tensor) -> np.ndarray:
    """1 - mean sigmoid, in float64 so that near-certain patches do not tie at exactly 1.0 (pitfall 8)."""
    probs = torch.sigmoid(logits.double())
    return (1.0 - probs.mean(dim=1)).numpy()


def score_array(
    D: Discriminator,
    images: np.ndarray,
    n_patches: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    pool_images: int = 1,
) -> np.ndarray:
    """Scores (float64, higher = more OOD) for a preprocessed stack, ``batch_size`` images per forward pass."""
    out = np.empty(len(images), dtype=np.float64)
    step = max(pool_images, batch_size - batch_size % pool_images)
    for i in range(0, len(images), step):
        chunk = images[i : i + step]
        out[i : i + len(chunk)] = scores_from_logits(
            patch_logits(D, chunk, n_patches, seed, device, pool_images=pool_images)
        )
    return out
