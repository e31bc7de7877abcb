"""Measure training and scoring throughput of candidate `small` preset widths on this machine.

Usage: python scripts/size_small_preset.py [--repeats 3] [--steps 15]

Candidates are interleaved and repeated so a noisy neighbour affects all of them alike; medians are printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch

from discopatch.data.builtin import load_demo_fashion_mnist
from discopatch.data.images import stack_images
from discopatch.inference.engine import score_array
from discopatch.model import Discriminator
from discopatch.presets import get_preset
from discopatch.training.trainer import Trainer

CANDIDATES = [(16, 32, 64, 128), (32, 64, 128, 256), (64, 128, 256, 512)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(2)
    base = get_preset("small", channels=1)
    imgs = stack_images(load_demo_fashion_mnist().train_images[:2048], base.preprocess)
    train: dict[tuple, list[float]] = {c: [] for c in CANDIDATES}
    score: dict[tuple, list[float]] = {c: [] for c in CANDIDATES}
    for _ in range(args.repeats):
        for widths in CANDIDATES:
            model = dataclasses.replace(base.model, widths=widths)
            tr = Trainer(model, dataclasses.replace(base.train, epochs=1, steps_per_epoch=args.steps + 2))
            tr.fit(imgs, progress=False, callback=None)
            # time the last `steps` steps (first two warm up)
            tr2 = Trainer(model, dataclasses.replace(base.train, epochs=1, steps_per_epoch=args.steps))
            t0 = time.perf_counter()
            tr2.fit(imgs, progress=False)
            train[widths].append(args.steps / (time.perf_counter() - t0))
            D = Discriminator(model).eval()
            score_array(D, imgs[:256], base.test_patches)
            t0 = time.perf_counter()
            score_array(D, imgs, base.test_patches)
            score[widths].append(len(imgs) / (time.perf_counter() - t0))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {base.train.batch_images} images x "
        f"{base.train.train_patches} patches, {base.test_patches} test patches, medians of {args.repeats}"
    )
    print("widths               D params  train steps/s  real patches/s  score images/s")
    for widths in CANDIDATES:
        d_params = Discriminator(dataclasses.replace(base.model, widths=widths)).num_parameters()
        sps = statistics.median(train[widths])
        patches_per_s = sps * base.train.batch_images * base.train.train_patches
        img_per_s = statistics.median(score[widths])
        print(f"{widths!s:20s} {d_params:8d}  {sps:13.2f}  {patches_per_s:14.0f}  {img_per_s:14.0f}")
    with open("/proc/loadavg") as f:
        print("load average:", f.read().split()[:3], "numpy", np.__version__)


if __name__ == "__main__":
    main()
