"""Turning images into patches.

At inference every image becomes N random square patches. Their positions come from a generator seeded by the
image's own content (plus the detector's seed), so an image always gets the same patches, and hence the same
score, whatever else it is scored with and in whatever order (docs/METHOD.md, section 4). In training, positions come
from the trainer's seeded generator instead.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def image_seed(image: np.ndarray, seed: int = 0) -> int:
    """A 64-bit seed from the image's pixels, shape and the global seed (BLAKE2b; stable across platforms)."""
    arr = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=8)
    h.update(str(arr.shape).encode())
    h.update(str(arr.dtype).encode())
    h.update(arr.tobytes())
    h.update(int(seed).to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little")


def patch_corners(height: int, width: int, patch: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` top-left corners drawn uniformly so that patches lie inside the image (they may overlap)."""
    if patch > height or patch > width:
        raise ValueError(f"patch size {patch} is larger than the image ({height}x{width})")
    ys = rng.integers(0, height - patch + 1, size=n)
    xs = rng.integers(0, width - patch + 1, size=n)
    return np.stack([ys, xs], axis=1)


def content_corners(images: np.ndarray, patch: int, n: int, seed: int = 0) -> np.ndarray:
    """Corners for each image of a ``(B, H, W[, C])`` uint8 stack, seeded per image: shape ``(B, n, 2)``."""
    b, h, w = images.shape[:3]
    out = np.empty((b, n, 2), dtype=np.int64)
    for i in range(b):
        out[i] = patch_corners(h, w, patch, n, np.random.default_rng(image_seed(images[i], seed)))
    return out


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(B, H, W)`` or ``(B, H, W, C)`` -> float32 ``(B, C, H, W)`` in [-1, 1], the model's range."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    if t.ndim == 3:
        t = t.unsqueeze(-1)
    return t.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def extract_patches(images: torch.Tensor, corners: np.ndarray | torch.Tensor, patch: int) -> torch.Tensor:
    """Gather patches: ``images`` (B, C, H, W), ``corners`` (B, n, 2) -> (B * n, C, patch, patch).

    Patches of one image are consecutive, which is the layout the grouped normalisation expects.
    """
    b, c, h, w = images.shape
    corners_t = torch.as_tensor(corners, dtype=torch.long, device=images.device)
    n = corners_t.shape[1]
    offs = torch.arange(patch, device=images.device)
    rows = (corners_t[..., 0:1] + offs).reshape(b, n, patch, 1)  # (B, n, p, 1)
    cols = (corners_t[..., 1:2] + offs).reshape(b, n, 1, patch)  # (B, n, 1, p)
    flat_idx = (rows * w + cols).reshape(b, 1, n * patch * patch).expand(b, c, -1)
    gathered = images.reshape(b, c, h * w).gather(2, flat_idx)  # (B, C, n*p*p)
    return gathered.reshape(b, c, n, patch, patch).permute(0, 2, 1, 3, 4).reshape(b * n, c, patch, patch)
