"""The ``fmnist`` protocol's ID sets: Fashion-MNIST (Debian ``dataset-fashion-mnist``, shipped demo subset if
missing)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np

from ...data.builtin import load_demo_fashion_mnist, load_fashion_mnist
from .common import _HINTS, _balanced_first, _Sizes, _version
from .sources import SourceDirs


def _fashion_mnist(root: Path, split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_fashion_mnist`, decompressed once per process and file state; copies, so callers may write."""
    state = []
    for kind in ("images-idx3", "labels-idx1"):
        f = root / f"{'train' if split == 'train' else 't10k'}-{kind}-ubyte.gz"
        st = f.stat() if f.is_file() else None
        state.append((str(f), st.st_size, st.st_mtime_ns) if st else None)
    x, y = _fashion_cached(str(root), split, tuple(state))
    return x.copy(), y.copy()


@functools.lru_cache(maxsize=2)
def _fashion_cached(
    root: str, split: Literal["train", "test"], state: tuple[object, ...]
) -> tuple[np.ndarray, np.ndarray]:
    return load_fashion_mnist(root, split=split)


def _fmnist_id(sizes: _Sizes, dirs: SourceDirs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, str]:
    try:
        xtr, ytr = _fashion_mnist(dirs.fashion_mnist, "train")
        xte, yte = _fashion_mnist(dirs.fashion_mnist, "test")
        src = f"Fashion-MNIST, {_version('deb', 'dataset-fashion-mnist')} [MIT]"
    except FileNotFoundError:
        demo = load_demo_fashion_mnist()
        xtr, ytr, xte, yte = demo.train_images, demo.train_labels, demo.test_images, demo.test_labels
        src = (
            "Fashion-MNIST shipped demo subset (4,000 train / 2,000 test) [MIT]: FALLBACK because Debian "
            f"dataset-fashion-mnist is not installed ({_HINTS['fashion-mnist']})"
        )
    tr_note = "all images of the train split"
    if sizes.train is not None and sizes.train < len(xtr):
        keep = _balanced_first(ytr, sizes.train)
        xtr, ytr = xtr[keep], ytr[keep]
        tr_note = "class-balanced first images per class of the train split (file order)"
    n_test = min(sizes.test, len(xte))
    keep = _balanced_first(yte, n_test)
    te_note = "class-balanced first images per class of the test split (file order)"
    if n_test < sizes.test:
        te_note += f"; {sizes.test} requested, only {n_test} available"
    return xtr, ytr, xte[keep], yte[keep], f"{src}; {tr_note}", f"{src}; {te_note}"
