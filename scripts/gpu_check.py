"""GPU check for a session that has a CUDA card: training steps and scoring throughput, in at most ~5 minutes.

Records the card's name, a few DisCoPatch training steps (bf16 autocast + channels_last, optionally
torch.compile) and scoring throughput (fp32 and bf16, model-only and from uint8 images) next to a matmul peak
measured on the same card, then writes JSON and Markdown (default ``gpu_check.json`` / ``gpu_check.md`` in
``--out``). Paste the Markdown into docs/BENCHMARKS.md under "Training speed and GPU".

    python scripts/gpu_check.py --out "$OUT"                 # the paper preset on cuda
    python scripts/gpu_check.py --device cpu --tiny --out /tmp  # plumbing check without a GPU
    python scripts/gpu_check.py --device cpu --preset small --out /tmp --no-compile  # CPU training figures

Every stage checks the time budget first and is skipped (and reported as skipped) when it would overrun.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from discopatch.config import ModelConfig, TrainConfig
from discopatch.inference.engine import TorchEngine
from discopatch.inference.speed import flops_per_image
from discopatch.model import Discriminator
from discopatch.presets import get_preset
from discopatch.training.trainer import Trainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, reps: int) -> float:
    """Median seconds of ``reps`` calls after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int) -> float:
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    t = _timed(lambda: torch.mm(a, b), device, reps=10)
    return 2.0 * size**3 / t / 1e9


def synthetic_images(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 images (blurred noise): real-valued statistics, no data download."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size // 8, size // 8, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return x[..., 0] if channels == 1 else np.ascontiguousarray(x)


def train_steps(
    model_cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device, images: np.ndarray, steps: int, **kw: Any
) -> dict[str, Any]:
    t_build = time.perf_counter()
    tr = Trainer(model_cfg, train_cfg, device, **kw)
    b = train_cfg.batch_images
    rng = np.random.default_rng(0)

    def one() -> dict[str, float]:
        idx = rng.integers(0, len(images), size=b)
        return tr.train_step(tr.sample_real(images, idx, rng))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    first = one()  # includes compilation when compile=True
    _sync(device)
    t_first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        logs = one()
        _sync(device)
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {
        "options": {k: bool(v) if isinstance(v, bool) else v for k, v in kw.items()},
        "batch_images": b,
        "train_patches": train_cfg.train_patches,
        "build_seconds": round(t0 - t_build, 3),
        "first_step_seconds": round(t_first, 3),
        "median_step_seconds": round(med, 4),
        "images_per_s": round(b / med, 1),
        "patches_per_s": round(b * train_cfg.train_patches / med, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "losses_finite": all(np.isfinite(v) for v in [*first.values(), *logs.values()]),
        "last_losses": {k: round(v, 5) for k, v in logs.items()},
    }


def scoring(
    D: Discriminator, n_patches: int, device: torch.device, images: np.ndarray, batch: int, precision: str
) -> dict[str, Any]:
    eng = TorchEngine(D, n_patches, 0, device, precision=precision, channels_last=True)
    stack = images[:batch]
    patches = eng.patches(stack)
    t_model = _timed(lambda: eng.forward(patches), device, reps=5)
    t_e2e = _timed(lambda: eng.score(stack, batch_size=batch), device, reps=3)
    gflop = flops_per_image(D.cfg, n_patches) / 1e9
    return {
        "precision": precision,
        "images_per_call": batch,
        "model_images_per_s": round(batch / t_model, 1),
        "end_to_end_images_per_s": round(batch / t_e2e, 1),
        "model_gflops": round(gflop * batch / t_model, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=".", help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--budget", type=float, default=270.0, help="seconds; stages that would overrun are skipped")
    ap.add_argument("--tiny", action="store_true", help="a tiny model (plumbing check on CPU)")
    ap.add_argument("--preset", default="paper", choices=["paper", "small"])
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile stage")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device available", file=sys.stderr)
        return 2

    preset = get_preset(args.preset)
    model_cfg, n_patches, size = preset.model, preset.test_patches, preset.preprocess.image_size
    train_cfg = preset.train
    score_batches = [32, 128, 512] if args.preset == "paper" else [64, 256]
    if args.tiny:
        model_cfg = ModelConfig(channels=3, patch_size=16, widths=(8, 16, 32), latent_dim=16)
        train_cfg = TrainConfig(batch_images=8, train_patches=4)
        n_patches, size, score_batches = 8, 32, [4, 16]
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 figures are true fp32
    torch.backends.cudnn.allow_tf32 = False
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "preset": "tiny" if args.tiny else args.preset,
        "model": {"widths": list(model_cfg.widths), "patch_size": model_cfg.patch_size, "n_patches": n_patches},
        "stages": {},
        "skipped": [],
        "errors": {},
    }
    images = synthetic_images(max(512, max(score_batches)), size, 3)

    def stage(name: str, estimate: float, fn: Callable[[], Any]) -> None:
        left = args.budget - (time.perf_counter() - t_start)
        if left < estimate:
            report["skipped"].append(f"{name} (needs ~{estimate:.0f} s, {left:.0f} s left)")
            return
        print(f"[{time.perf_counter() - t_start:6.1f} s] {name}", file=sys.stderr)
        try:
            report["stages"][name] = fn()
        except Exception as e:  # record and go on: one failing stage must not lose the others' figures
            report["errors"][name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            if device.type == "cuda":
                torch.cuda.empty_cache()

    big = 8192 if device.type == "cuda" else 1024
    stage("matmul peak fp32", 5, lambda: round(matmul_peak(device, torch.float32, big), 1))
    stage("matmul peak bf16", 5, lambda: round(matmul_peak(device, torch.bfloat16, big), 1))
    amp = "bf16" if device.type == "cuda" else "fp32"  # autocast is on by default only on CUDA
    stage(
        f"train {amp} + channels_last",
        40,
        lambda: train_steps(model_cfg, train_cfg, device, images, 8, amp=device.type == "cuda", channels_last=True),
    )
    stage("train fp32", 40, lambda: train_steps(model_cfg, train_cfg, device, images, 4, amp=False))
    torch.manual_seed(0)
    D = Discriminator(model_cfg).to(device).eval()
    for b in score_batches:
        for prec in ("fp32", "bf16"):
            stage(
                f"score {prec} {b} images/call",
                15,
                lambda b=b, prec=prec: scoring(D, n_patches, device, images, b, prec),
            )
    stage(
        "bf16 vs fp32 score difference",
        10,
        lambda: float(
            np.max(
                np.abs(
                    TorchEngine(D, n_patches, 0, device, precision="bf16").score(images[:64])
                    - TorchEngine(D, n_patches, 0, device).score(images[:64])
                )
            )
        ),
    )
    if not args.no_compile:
        stage(
            f"train {amp} + channels_last + compile",
            120,
            lambda: train_steps(
                model_cfg, train_cfg, device, images, 8, amp=device.type == "cuda", channels_last=True, compile=True
            ),
        )
    report["seconds"] = round(time.perf_counter() - t_start, 1)

    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"GPU check on **{report['device']}** (torch {report['torch']}, CUDA {report['cuda']}), "
        f"{report['seconds']} s, `python scripts/gpu_check.py`",
        "",
    ]
    for name, value in report["stages"].items():
        lines.append(f"- {name}: `{json.dumps(value)}`")
    lines += [f"- skipped: {s}" for s in report["skipped"]]
    lines += [f"- error in {k}: {v}" for k, v in report["errors"].items()]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if not report["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
