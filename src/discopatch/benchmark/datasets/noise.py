"""The ``uniform_noise`` sanity set."""

from __future__ import annotations

import numpy as np

from .common import _Builder, _rng


def _add_noise(b: _Builder, n: int, size: int, channels: int) -> None:
    def make() -> tuple[np.ndarray, str]:
        shape = (n, size, size, 3) if channels == 3 else (n, size, size)
        images = _rng(b.seed, b.protocol, "uniform_noise").integers(0, 256, size=shape, dtype=np.uint8)
        return images, "uniform i.i.d. uint8 noise (sanity set)"

    b.add("uniform_noise", make)
