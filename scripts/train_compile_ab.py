"""Training steps of ``torch.compile`` against eager PyTorch in one process, same seed, steps interleaved.

Two trainers of the preset start from the same weights (the trainer seeds its initialisation); step ``i`` of
both gets the same images, patch corners and noise (``discopatch.training.speed``'s seeded step), and the steps
run in turns (eager ``i``, compiled ``i``, eager ``i + 1``, ...), so the neighbours' load on a shared machine
hits both alike. Compilation happens inside the compiled trainer's first steps and is counted: the compile
seconds are the warm-up steps' time above the compiled steady rate, and the break-even step count is where the
compiled run's total time (compilation included) falls below the eager run's. The losses of every step are
compared: the largest absolute difference says whether compilation changes the arithmetic.

    python scripts/train_compile_ab.py --preset small --threads 1 --steps 12 --json compile.json

By default inductor draws the step's random numbers (the VAE's sampling noise) with its own generator, so the
compiled run trains on different noise from the first step; ``--fallback-random`` makes it use eager PyTorch's,
which leaves rounding as the only source of differences. ``--backend eager`` traces with TorchDynamo but runs
the captured graphs unchanged (no code generation): a quick check of the harness, and the losses must then be
bit-identical. A compile error is reported (with the exception's text) instead of raised.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from discopatch.config import Preset
from discopatch.presets import get_preset
from discopatch.training.memory import reuse_freed_memory
from discopatch.training.speed import _step
from discopatch.training.trainer import Trainer

#: Steps of each trainer that are not part of the steady rate: compilation (and recompilation for the second
#: call's guards) happens in them.
WARMUP_STEPS = 2


@dataclass
class CompileAB:
    """Seconds per step of the eager and the compiled trainer, the compile cost, and the loss difference."""

    preset: str
    threads: int
    backend: str
    steps: int
    eager_seconds: list[float] = field(default_factory=list)
    compiled_seconds: list[float] = field(default_factory=list)
    eager_steady_s: float = 0.0
    compiled_steady_s: float = 0.0
    compile_seconds: float = 0.0
    #: steps after which the compiled run (compilation included) has caught up; None when it never does
    break_even_steps: float | None = None
    max_abs_loss_diff: float = 0.0
    #: per step, the largest absolute difference of its losses: where the two runs start to part
    loss_diff_per_step: list[float] = field(default_factory=list)
    losses_identical: bool = False
    #: TorchDynamo's counters after the run: graphs captured, graph breaks (with their reasons), recompiles
    dynamo: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def summary(self) -> str:
        if self.error:
            return f"{self.preset}, {self.threads} thread(s), backend {self.backend}: compile failed: {self.error}"
        be = "never" if self.break_even_steps is None else f"{self.break_even_steps:.0f} steps"
        return (
            f"{self.preset}, {self.threads} thread(s), backend {self.backend}, {self.steps} steps each: "
            f"eager {self.eager_steady_s:.3f} s/step ({1 / self.eager_steady_s:.2f} steps/s), compiled "
            f"{self.compiled_steady_s:.3f} s/step ({1 / self.compiled_steady_s:.2f} steps/s), steady speed-up "
            f"{self.eager_steady_s / self.compiled_steady_s:.2f}x; compile {self.compile_seconds:.1f} s; "
            f"break-even after {be}; losses identical: {self.losses_identical} "
            f"(max abs difference {self.max_abs_loss_diff:.3g}; first step {self.loss_diff_per_step[0]:.3g}); "
            f"dynamo: {self.dynamo}"
        )


def _compiled_trainer(preset: Preset, backend: str) -> Trainer:
    """A trainer whose two step modules go through ``torch.compile`` with ``backend`` (``Trainer(compile=True)``
    compiles the same two modules with the default backend, inductor)."""
    tr = Trainer(preset.model, preset.train)
    tr._g_step = torch.compile(tr._g_step, backend=backend)
    tr._d_step = torch.compile(tr._d_step, backend=backend)
    return tr


def _loss_diffs(a: list[dict[str, float]], b: list[dict[str, float]]) -> list[float]:
    """Per step, the largest absolute difference between the same loss (NaN against a number counts as inf)."""
    out = []
    for ra, rb in zip(a, b):
        diffs = [abs(ra[k] - rb[k]) for k in ra]
        out.append(max((d if d == d else float("inf") for d in diffs), default=0.0))
    return out


def _dynamo_counters() -> dict[str, Any]:
    """What TorchDynamo captured: unique graphs, graph breaks by reason, recompilations."""
    from torch._dynamo.utils import counters

    return {
        "unique_graphs": int(counters["stats"].get("unique_graphs", 0)),
        "graph_breaks": {str(k): int(v) for k, v in counters["graph_break"].items()},
        "recompiles": {str(k): int(v) for k, v in counters["recompiles"].items()},
    }


def compile_ab(preset: Preset, threads: int, steps: int, backend: str = "inductor", n_images: int = 512) -> CompileAB:
    """Run ``steps`` steps of an eager and a compiled trainer in turns; see the module doc."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    rep = CompileAB(preset.name, threads, backend, steps)
    size, ch = preset.preprocess.image_size, preset.model.channels
    images = np.random.default_rng(0).integers(0, 256, size=(n_images, size, size, ch), dtype=np.uint8)
    try:
        eager, compiled = Trainer(preset.model, preset.train), _compiled_trainer(preset, backend)
        losses: dict[str, list[dict[str, float]]] = {"eager": [], "compiled": []}
        with reuse_freed_memory():
            for i in range(steps):
                for name, tr in (("eager", eager), ("compiled", compiled)):
                    t0 = time.perf_counter()
                    losses[name].append(_step(tr, images, i))
                    getattr(rep, f"{name}_seconds").append(time.perf_counter() - t0)
    except Exception as e:
        rep.error = f"{type(e).__name__}: {e}".strip()[:2000]
        traceback.print_exc()
        return rep
    finally:
        torch.set_num_threads(old)
    _finish(rep, losses["eager"], losses["compiled"])
    rep.dynamo = _dynamo_counters()
    return rep


def _finish(rep: CompileAB, eager: list[dict[str, float]], compiled: list[dict[str, float]]) -> None:
    """Steady rates (medians after the warm-up steps), compile cost, break-even, loss differences."""
    w = min(WARMUP_STEPS, rep.steps - 1)
    rep.eager_steady_s = statistics.median(rep.eager_seconds[w:])
    rep.compiled_steady_s = statistics.median(rep.compiled_seconds[w:])
    # the warm-up steps' time beyond what they cost once compiled: tracing, code generation, recompiles
    rep.compile_seconds = max(0.0, sum(rep.compiled_seconds[:w]) - w * rep.compiled_steady_s)
    gain = rep.eager_steady_s - rep.compiled_steady_s
    rep.break_even_steps = rep.compile_seconds / gain if gain > 0 else None
    rep.loss_diff_per_step = _loss_diffs(eager, compiled)
    rep.max_abs_loss_diff = max(rep.loss_diff_per_step, default=0.0)
    rep.losses_identical = eager == compiled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=12, help="steps of each trainer (the first two are warm-up)")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend (inductor, or eager to check)")
    ap.add_argument(
        "--fallback-random",
        action="store_true",
        help="inductor draws random numbers with eager PyTorch's generator (torch._inductor.config.fallback_random): "
        "then only the arithmetic can make the losses differ, not different noise",
    )
    ap.add_argument("--json", dest="json_out", help="write the report (step times and losses included) as JSON")
    args = ap.parse_args()
    if args.fallback_random:
        from torch._inductor import config as inductor_config

        inductor_config.fallback_random = True
    rep = compile_ab(get_preset(args.preset, args.channels), args.threads, args.steps, args.backend)
    print(rep.summary())
    if args.json_out:
        out: dict[str, Any] = {**asdict(rep), "fallback_random": args.fallback_random, "torch": torch.__version__}
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
