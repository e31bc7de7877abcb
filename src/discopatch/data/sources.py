"""Image collections for training and calibration: folders or in-memory arrays, with a deterministic split."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import PreprocessConfig
from ..log import progress_bar
from .images import IMAGE_EXTENSIONS, ImageInput, list_images, preprocess_many


@dataclass
class ImageSet:
    """Preprocessed images ``(N, S, S[, 3])`` uint8 with a name per image and the inputs that failed."""

    images: np.ndarray
    names: list[str]
    errors: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: Sequence[int] | np.ndarray) -> ImageSet:
        idx = np.asarray(idx, dtype=np.int64)
        return ImageSet(self.images[idx], [self.names[i] for i in idx], [])


def load_images(
    sources: Sequence[ImageInput],
    cfg: PreprocessConfig,
    names: Sequence[str] | None = None,
    progress: bool = False,
    desc: str = "loading images",
) -> ImageSet:
    """Preprocess many inputs; unreadable ones are collected in ``errors`` instead of stopping the load."""
    if names is None:
        names = [str(s) if isinstance(s, (str, os.PathLike)) else f"#{i}" for i, s in enumerate(sources)]
    good: list[np.ndarray] = []
    good_names: list[str] = []
    errors: list[tuple[str, str]] = []
    it = preprocess_many(sources, cfg)
    for i, img, err in progress_bar(it, total=len(sources), desc=desc, disable=not progress, unit="img"):
        if img is None:
            errors.append((names[i], err or "unknown error"))
        else:
            good.append(img)
            good_names.append(names[i])
    shape = (0, cfg.image_size, cfg.image_size) + ((3,) if cfg.channels == 3 else ())
    images = np.stack(good) if good else np.zeros(shape, np.uint8)
    return ImageSet(images, good_names, errors)


def load_folder(root: str | os.PathLike, cfg: PreprocessConfig, progress: bool = False) -> ImageSet:
    """All images under ``root`` (recursive), named by their path relative to ``root``."""
    root = Path(root)
    files = list_images(root)
    if not files:
        raise FileNotFoundError(f"no images with extensions {sorted(IMAGE_EXTENSIONS)} found under {root}")
    names = [str(f.relative_to(root)) if root.is_dir() else f.name for f in files]
    return load_images(files, cfg, names=names, progress=progress, desc=f"loading {root}")


def split_train_val(names: Sequence[str], val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split by a keyed hash of each name.

    Ranking by hash (instead of a shuffled permutation) keeps an image on the same side of the split when other
    images are added to or removed from the folder.
    """
    n = len(names)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    keys = [hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest() for name in names]
    order = sorted(range(n), key=lambda i: keys[i])
    val = np.sort(np.asarray(order[:n_val], dtype=np.int64))
    train = np.sort(np.asarray(order[n_val:], dtype=np.int64))
    return train, val
