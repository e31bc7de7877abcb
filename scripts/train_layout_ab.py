"""Training step time with the contiguous and the channels_last layout, interleaved (A, B, A, B, ...).

Why interleaved: on a shared machine the neighbours' load then hits both layouts alike, so the ratio between
the medians means something even when the absolute times do not. Real patches are random; the step's cost does
not depend on their content.

    python scripts/train_layout_ab.py --channels 1 --steps 12
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from discopatch.presets import get_preset
from discopatch.training.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per layout (after 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    preset = get_preset(args.preset, args.channels)
    tc, p = preset.train, preset.model.patch_size
    real = torch.rand(tc.batch_images * tc.train_patches, args.channels, p, p) * 2 - 1
    trainers = {}
    for layout in ("contiguous", "channels_last"):
        torch.manual_seed(0)
        trainers[layout] = Trainer(preset.model, tc, "cpu", channels_last=layout == "channels_last")
        for _ in range(2):
            trainers[layout].train_step(real)
    times: dict[str, list[float]] = {k: [] for k in trainers}
    for _ in range(args.steps):
        for layout, trainer in trainers.items():
            t0 = time.perf_counter()
            trainer.train_step(real)
            times[layout].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{args.preset} channels={args.channels} {k:14s} median step {v:.3f} s")
    print(f"channels_last speed-up: {med['contiguous'] / med['channels_last']:.2f}x")


if __name__ == "__main__":
    main()
