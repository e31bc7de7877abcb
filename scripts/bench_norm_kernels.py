"""The per-image normalisation pass alone: torch.var_mean (the first implementation) vs the batch-norm kernel.

    python scripts/bench_norm_kernels.py

One paper-preset image (64 patches) per layer shape, fp32 and bf16, channels_last and contiguous, 2 threads;
median ms of 9 calls, normalise + LeakyReLU, and the largest difference between the two outputs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F


def median_ms(fn: Callable[[], object], reps: int = 9) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    torch.set_num_threads(2)
    for c, h in ((128, 32), (256, 16), (512, 8), (1024, 4)):
        for dtype in (torch.float32, torch.bfloat16):
            for cl in (True, False):
                x = (torch.randn(64, c, h, h) * 3 + 1).to(dtype)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                w, b = torch.rand(c) + 0.5, torch.randn(c)

                def var_mean(x: torch.Tensor = x, w: torch.Tensor = w, b: torch.Tensor = b) -> torch.Tensor:
                    var, mean = torch.var_mean(x.float(), dim=(0, 2, 3), unbiased=False, keepdim=True)
                    scale = w.view(1, -1, 1, 1) * torch.rsqrt(var + 1e-5)
                    shift = b.view(1, -1, 1, 1) - mean * scale
                    return F.leaky_relu(torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype)), 0.01)

                def kernel(x: torch.Tensor = x, w: torch.Tensor = w, b: torch.Tensor = b) -> torch.Tensor:
                    return F.leaky_relu_(F.batch_norm(x, None, None, w, b, training=True, eps=1e-5), 0.01)

                err = (var_mean().float() - kernel().float()).abs().max().item()
                print(
                    f"{c:4d}x{h:2d} {dtype!s:15s} {'channels_last' if cl else 'contiguous':13s} "
                    f"var_mean {median_ms(var_mean):7.2f} ms  batch_norm {median_ms(kernel):6.2f} ms  "
                    f"max diff {err:.1e}"
                )


if __name__ == "__main__":
    main()
