"""``discopatch demo``: the whole job on data that ships with the package, in about the time ``fit`` takes.

1. Train the ``small`` preset (gray, 64 px) on 4,000 Fashion-MNIST training images for ``fit``'s 1,380 steps
   (:data:`~discopatch.presets.DEMO_STEPS`; a one-hour safety cap warns if it stops them early); 10 % of them are
   held out and calibrate the threshold at 5 % FPR.
2. Split 2,000 Fashion-MNIST test images into an ID reference (1,000) and a held-out ID control (1,000).
3. Evaluate the reference against: the control itself (null shift: AUROC should be about 0.5), the control
   corrupted with ImageNet-C-style noise, blur, JPEG, contrast and pixelation (CIFAR-10-C-sized parameters,
   severity 3), and Animal-MNIST silhouettes (near-OOD).

Every set goes through the same path: preprocess (Lanczos 28 -> 64) -> optional corruption -> preprocess again, so
the only difference between the control and a shifted set is the shift itself (:mod:`discopatch.data.demo_sets`
builds them).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..config import Preset
from ..data.builtin import load_demo_fashion_mnist
from ..data.demo_sets import build_demo_sets
from ..detector import Detector
from ..errors import ConfigError
from ..presets import DEMO_MAX_TIME, DEMO_PRESETS, DEMO_STEPS, get_preset
from .evaluate import evaluate


def run_demo(
    out: str | Path = "demo-out",
    max_time: float | None = DEMO_MAX_TIME,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    max_steps: int | None = None,
    preset_name: str = "small",
) -> dict[str, Any]:
    """Train, calibrate and evaluate on the bundled data; print the table and write ``results.json``.

    Training stops after ``max_steps`` (default: the preset's, as ``fit`` trains it), so the printed numbers are
    the same on any machine and under any load; ``max_time`` is a safety cap: reaching it first prints a warning
    (planned vs trained steps), records it in the training summary, and the table then differs from the README's.
    :func:`demo_budget` gives a preset's steps and the cap ``discopatch demo`` scales with them.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    det = Detector(demo_preset(preset_name), device=device, seed=seed)
    data = load_demo_fashion_mnist()
    cap = f"safety cap {max_time:g} s" if max_time else "no time limit"
    print(
        f"discopatch {__version__} demo: training the {preset_name!r} preset on {len(data.train_images)} Fashion-MNIST "
        f"images for {max_steps or det.preset.train.max_steps} steps ({cap}) "
        f"on {det.device} ({torch.get_num_threads()} threads)",
        file=sys.stderr,
    )
    det.fit(
        data.train_images, max_time=max_time, max_steps=max_steps, checkpoint_dir=out / "checkpoints", progress=progress
    )
    det.save(out / "model")
    reference, sets = build_demo_sets(det.preprocess_config, seed=seed)
    res = evaluate(det, reference, sets, id_name="Fashion-MNIST test (reference)")  # rows carry "flagged"
    info = det.training_info
    cal = det.calibration
    assert cal is not None, "fit() calibrates the detector"
    wall = time.monotonic() - t0
    print()
    print(res.table())
    print(
        f"\nflagged at the calibrated threshold ({cal.target_fpr:.0%} target FPR, "
        f"{cal.n} calibration images): "
        + ", ".join(f"{k.split(' (')[0]} {100 * v['flagged']:.1f}%" for k, v in res.rows.items())
    )
    short = "" if info["budget_complete"] else f" of {info['planned_steps']} planned (stopped by the time cap)"
    print(
        f"trained {info['steps']}{short} steps in {info['train_seconds']:.0f} s; whole demo {wall:.0f} s; "
        f"detector saved to {out / 'model'}"
    )
    result = {
        **res.to_dict(),
        "preset": preset_name,
        "training": info,
        "wall_seconds": round(wall, 1),
        "seed": seed,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return result


def demo_preset(name: str) -> Preset:
    """The gray preset the demo trains; only :data:`~discopatch.presets.DEMO_PRESETS` (sized for its data)."""
    if name not in DEMO_PRESETS:
        raise ConfigError(f"the demo trains one of {', '.join(DEMO_PRESETS)}, not {name!r}")
    return get_preset(name, channels=1)


def demo_budget(preset_name: str) -> tuple[int, float]:
    """The demo's steps and time cap for a preset: ``fit``'s steps, and the one-hour cap scaled with them."""
    steps = demo_preset(preset_name).train.max_steps
    assert steps is not None, "the demo presets train a step budget"
    return steps, DEMO_MAX_TIME * max(1.0, steps / DEMO_STEPS)
