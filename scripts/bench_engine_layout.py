"""Torch engine layouts and run sizes against ONNX Runtime, interleaved; engine only (no decoding).

    python scripts/bench_engine_layout.py --preset small --threads 2 --images 256        # layouts, precisions
    python scripts/bench_engine_layout.py --preset paper --threads 2 --images 2
    python scripts/bench_engine_layout.py --preset small --threads 2 --images 256 --runs 16,32,64,128,256

Engines are called in turns (A, B, C, A, ...) so that load changes hit all alike; medians of 7 calls.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from discopatch.inference.engine import OnnxEngine, ScoringEngine, TorchEngine
from discopatch.model import Discriminator
from discopatch.presets import get_preset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=256, help="images per score() call")
    ap.add_argument("--runs", help="comma-separated run_images values to sweep instead of the layouts")
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    preset = get_preset(args.preset, 1 if args.preset == "small" else None)
    D = Discriminator(preset.model).eval()
    n, size = preset.test_patches, preset.preprocess.image_size
    shape = (args.images, size, size) + ((3,) if preset.preprocess.channels == 3 else ())
    images = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    engines: dict[str, ScoringEngine] = {}
    for prec in ("fp32", "bf16"):
        if args.runs:
            for r in (int(v) for v in args.runs.split(",")):
                engines[f"torch {prec} run={r}"] = TorchEngine(D, n, 0, "cpu", precision=prec, run_images=r)
        else:
            for cl in (False, True):
                engines[f"torch {prec} channels_last={cl}"] = TorchEngine(
                    D, n, 0, "cpu", precision=prec, channels_last=cl
                )
    engines["onnx fp32"] = OnnxEngine.from_discriminator(D, n, 0, threads=args.threads)
    times: dict[str, list[float]] = {k: [] for k in engines}
    for e in engines.values():
        e.score(images)
    for _ in range(args.reps):
        for k, e in engines.items():
            t0 = time.perf_counter()
            e.score(images)
            times[k].append((time.perf_counter() - t0) / args.images * 1e3)
    for k, v in times.items():
        print(f"{args.preset} threads={args.threads} {args.images} img/call {k:28s} {statistics.median(v):.3f} ms/img")


if __name__ == "__main__":
    main()
