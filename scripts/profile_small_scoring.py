"""Where the small preset's scoring time goes per image: decoding, patch positions, extraction, D.

    python scripts/profile_small_scoring.py

256 PNG-encoded demo images per call, torch engine in bf16, 2 threads; medians of 15 calls, ms per image.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from discopatch.data.images import preprocess
from discopatch.inference.engine import TorchEngine
from discopatch.inference.speed import synthetic_png_inputs
from discopatch.model import Discriminator
from discopatch.patches import content_corners, extract_patches, to_tensor
from discopatch.presets import get_preset


def per_image_ms(fn: Callable[[], object], count: int, reps: int = 15) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times) / count


def main() -> None:
    torch.set_num_threads(2)
    preset = get_preset("small", channels=1)
    D = Discriminator(preset.model).eval()
    n, p = preset.test_patches, preset.model.patch_size
    engine = TorchEngine(D, n, 0, "cpu", precision="bf16")
    inputs = synthetic_png_inputs(preset.preprocess, 256)
    stack = np.stack([preprocess(x, preset.preprocess) for x in inputs])
    corners = content_corners(stack, p, n, 0)
    patches = extract_patches(to_tensor(stack), corners, p)
    rows = {
        "decode + preprocess": lambda: np.stack([preprocess(x, preset.preprocess) for x in inputs]),
        "content-seeded patch positions": lambda: content_corners(stack, p, n, 0),
        "patch extraction": lambda: extract_patches(to_tensor(stack), corners, p),
        "D forward (one 256-image call)": lambda: engine.forward(patches),
        "engine.score (positions + extraction + D in runs)": lambda: engine.score(stack),
    }
    for name, fn in rows.items():
        print(f"{name:50s} {per_image_ms(fn, len(stack)):.3f} ms/image")


if __name__ == "__main__":
    main()
