"""Save a contact sheet of a benchmark protocol's sets: one row per set, so a person can check polarity, centring and
that nothing is blank before trusting the numbers.

    python scripts/bench_contact_sheet.py fmnist /tmp/fmnist_sheet.png [--quick] [--per-set 12] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

from discopatch.benchmark.datasets import load_protocol


def contact_sheet(rows: dict[str, np.ndarray], per_set: int, cell: int) -> Image.Image:
    """One labelled row of ``per_set`` images (evenly spaced through each set) per entry of ``rows``."""
    label_w = 130
    sheet = Image.new("RGB", (label_w + per_set * (cell + 2), len(rows) * (cell + 2)), (60, 60, 60))
    draw = ImageDraw.Draw(sheet)
    for r, (name, images) in enumerate(rows.items()):
        y = r * (cell + 2)
        draw.text((4, y + cell // 2 - 6), f"{name} ({len(images)})", fill=(255, 255, 0))
        for c, i in enumerate(np.linspace(0, len(images) - 1, min(per_set, len(images))).astype(int)):
            img = Image.fromarray(images[i]).convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(img, (label_w + c * (cell + 2), y))
    return sheet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("protocol", choices=["fmnist", "photos"])
    ap.add_argument("out")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--per-set", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = load_protocol(args.protocol, quick=args.quick, seed=args.seed)
    rows = {"id_train": data.id_train, "id_test": data.id_test, **data.near_ood, **data.far_ood}
    cell = 84 if data.image_size <= 32 else 128
    contact_sheet(rows, args.per_set, cell).save(args.out)
    for name, why in data.skipped.items():
        print(f"skipped {name}: {why}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
