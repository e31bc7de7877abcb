"""Training and scoring speed against limits measured in the same run (``discopatch bench-speed --train``).

Training: one process measures the fp32 peaks of this CPU at the run's thread count (the quickest repeats of
``torch.mm`` on 512-square matrices, and of the best forward convolution among the preset's own layer shapes at the
training batch), counts the FLOPs of one training step with :class:`torch.utils.flop_counter.FlopCounterMode`, times
full steps (patch sampling included, as ``fit`` runs them) and splits a step into its parts through the trainer's phase
markers: ``data`` (batch gather, patch corners and extraction), ``vae_forward``, ``d_forward`` (D's five calls: two in
the VAE update, three in D's), ``vae_backward`` (through D to its inputs, and the VAE), ``d_backward``, ``losses``,
``optimiser``, and ``rest`` (the step's time outside them: Python, gradient bookkeeping, the logged floats). Each part
gets its own FLOPs and achieved GFLOP/s, so the gap to the peak is visible where it is.

Scoring: images/s end to end from PNG files (the ``discopatch score`` path: read, decode, preprocess, D with the
per-image statistics, fusion), from already decoded arrays, and the two stages alone: decoding, and D plus the
statistics model. The pipeline limit is one image's decode time plus its D-and-statistics time (the stages run one
after the other in one process); the end-to-end rate is reported as a share of it.

Times are medians of repeats; on a shared CPU compare ratios measured in one run, not absolute numbers.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Preset
from ..inference.speed import _interleaved_times, flops_per_image, synthetic_png_inputs
from .memory import reuse_freed_memory
from .steps import no_phase
from .trainer import Trainer

#: The parts of a step in the order they are reported; ``rest`` is the step's time outside all of them.
PARTS = ("data", "vae_forward", "d_forward", "losses", "vae_backward", "d_backward", "optimiser", "rest")


@dataclass
class TrainSpeedReport:
    """What :func:`bench_training` measured at one thread count (times in seconds per step)."""

    preset: str
    threads: int
    patches_per_step: int
    peaks_gflops: dict[str, float]
    gflop_per_step: float
    seconds_per_step: float
    steps_per_s: float
    achieved_gflops: float
    #: process CPU seconds per step divided by the thread count: on a loaded machine the wall time also counts
    #: the time the neighbours held the core, the CPU time does not (exact at one thread)
    cpu_seconds_per_step: float = 0.0
    part_seconds: dict[str, float] = field(default_factory=dict)
    part_cpu_seconds: dict[str, float] = field(default_factory=dict)
    part_gflop: dict[str, float] = field(default_factory=dict)
    scoring: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _rows(self) -> list[tuple[str, float, float, float, float, float]]:
        """Per part: name, wall ms, CPU ms (per thread), share of the CPU time, GFLOP, GFLOP per CPU-second."""
        total = sum(self.part_cpu_seconds.values()) or 1.0
        rows = []
        for name in PARTS:
            t, c = self.part_seconds.get(name, 0.0), self.part_cpu_seconds.get(name, 0.0)
            gf = self.part_gflop.get(name, 0.0)
            rows.append((name, 1e3 * t, 1e3 * c, c / total, gf, gf / c if c > 0 else 0.0))
        return rows

    def _headline(self) -> str:
        peak = self.peaks_gflops["matmul_fp32"]
        cpu_rate = self.gflop_per_step / self.cpu_seconds_per_step if self.cpu_seconds_per_step else 0.0
        return (
            f"{self.preset}, {self.threads} thread(s), {self.patches_per_step} patches/step: "
            f"{self.gflop_per_step:.2f} GFLOP/step (FlopCounterMode); fp32 peaks: matmul "
            f"{peak:.1f} GFLOP/s, conv (preset shapes) {self.peaks_gflops['conv_fp32']:.1f} GFLOP/s; "
            f"achieved {self.steps_per_s:.3f} steps/s ({1e3 * self.seconds_per_step:.0f} ms/step wall, "
            f"{self.achieved_gflops:.1f} GFLOP/s), {1e3 * self.cpu_seconds_per_step:.0f} CPU-ms/step per thread "
            f"({cpu_rate:.1f} GFLOP per CPU-second = {100 * cpu_rate / peak:.1f} % of the matmul peak)"
        )

    def table(self) -> str:
        """A plain-text report: headline, one line per part, then the scoring figures."""
        peak = self.peaks_gflops["matmul_fp32"]
        lines = [self._headline(), "part          wall ms  CPU ms  share  GFLOP/step  GFLOP/CPU-s  % matmul peak"]
        for name, wall, cpu, share, gf, rate in self._rows():
            lines.append(
                f"{name:13s} {wall:7.1f} {cpu:7.1f}  {100 * share:4.0f} %  {gf:10.3f}  {rate:11.1f}"
                f"  {100 * rate / peak:12.1f}"
            )
        if self.scoring:
            s = self.scoring
            lines.append(
                f"scoring ({s['engine']} engine, {s['images']} images of {s['image_size']} px, {s['patches']} "
                f"patches): images/s end to end from files {s['files_images_per_s']:.1f}, from decoded arrays "
                f"{s['arrays_images_per_s']:.1f}; decode alone {s['decode_images_per_s']:.1f}, D + statistics alone "
                f"{s['model_images_per_s']:.1f}; pipeline limit {s['limit_images_per_s']:.1f}; end to end = "
                f"{100 * s['files_share_of_limit']:.0f} % of the limit"
            )
        return "\n".join(lines)

    def markdown(self) -> str:
        """The same as Markdown tables (docs/BENCHMARKS.md)."""
        peak = self.peaks_gflops["matmul_fp32"]
        lines = [
            self._headline(),
            "",
            "| part | wall ms/step | CPU ms/step | share of CPU time | GFLOP/step | GFLOP per CPU-second | % of matmul "
            "peak |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, wall, cpu, share, gf, rate in self._rows():
            lines.append(
                f"| {name} | {wall:.1f} | {cpu:.1f} | {100 * share:.0f} % | {gf:.3f} | {rate:.1f} | "
                f"{100 * rate / peak:.1f} % |"
            )
        if self.scoring:
            s = self.scoring
            lines += [
                "",
                f"Scoring ({s['engine']} engine, {s['images']} PNG files of {s['image_size']} px, {s['patches']} "
                "patches per image):",
                "",
                "| end to end from files | from decoded arrays | decode alone | D + statistics alone | pipeline "
                "limit | end to end / limit |",
                "|---|---|---|---|---|---|",
                f"| {s['files_images_per_s']:.1f} img/s | {s['arrays_images_per_s']:.1f} img/s | "
                f"{s['decode_images_per_s']:.1f} img/s | {s['model_images_per_s']:.1f} img/s | "
                f"{s['limit_images_per_s']:.1f} img/s | {100 * s['files_share_of_limit']:.0f} % |",
            ]
        return "\n".join(lines)


class _PhaseClock:
    """The trainer's phase marker for a bench: accumulates seconds (and, when counting, FLOPs) per part."""

    def __init__(self, flop_total: Callable[[], int] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.flops: dict[str, int] = {}
        self._flop_total = flop_total

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        f0 = self._flop_total() if self._flop_total else 0
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - c0
            if self._flop_total:
                self.flops[name] = self.flops.get(name, 0) + self._flop_total() - f0

    def __call__(self, name: str) -> AbstractContextManager[None]:
        return self._phase(name)


def _best_gflops(fn: Callable[[], Any], flops: float, min_time: float, fastest: int = 3) -> float:
    """GFLOP/s of the median of the ``fastest`` quickest of at least ``2 * fastest`` calls (after one warm-up).

    A peak is what the CPU can attain; on a shared machine the quickest repeats are the ones least slowed by the
    neighbours, and the median of a few of them is not one lucky outlier.
    """
    fn()
    times: list[float] = []
    t_start = time.perf_counter()
    while len(times) < 2 * fastest or time.perf_counter() - t_start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return flops / statistics.median(sorted(times)[:fastest]) / 1e9


def matmul_peak(size: int = 512, min_time: float = 0.5, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of ``torch.mm`` on ``size``-square matrices (fp32 unless ``dtype`` says otherwise) at the current
    thread count (quickest repeats).

    512 rather than a larger size: one product then takes a few milliseconds, short enough to run undisturbed
    between the neighbours' time slices on a shared machine (a 1024-square product measured 7 GFLOP/s there
    against 99 for 512 in the same minute)."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=g).to(dtype) for _ in range(2))
    return _best_gflops(lambda: torch.mm(a, b), 2.0 * size**3, min_time)


def conv_peak_gflops(preset: Preset, batch: int, min_time: float = 0.5) -> float:
    """Best forward GFLOP/s among D's (and the VAE encoder's) 3x3 stride-2 convolutions at ``batch`` patches
    (channels_last, as training runs them): the attainable rate of this CPU for the preset's own shapes."""
    cfg = preset.model
    size, cin, best = cfg.patch_size, cfg.channels, 0.0
    g = torch.Generator().manual_seed(0)
    for cout in cfg.widths:
        x = torch.randn(batch, cin, size, size, generator=g).contiguous(memory_format=torch.channels_last)
        w = torch.randn(cout, cin, 3, 3, generator=g).contiguous(memory_format=torch.channels_last)
        size = (size + 2 - 3) // 2 + 1
        flops = 2.0 * batch * cout * size * size * cin * 9

        def conv(x: torch.Tensor = x, w: torch.Tensor = w) -> torch.Tensor:
            return F.conv2d(x, w, stride=2, padding=1)

        best = max(best, _best_gflops(conv, flops, min_time))
        cin = cout
    return best


def _step(trainer: Trainer, images: np.ndarray, i: int) -> dict[str, float]:
    """One step as ``fit`` runs it: a seeded batch of images, patch sampling, the two updates."""
    b = min(trainer.cfg.batch_images, len(images))
    rng = np.random.default_rng(i)
    torch.manual_seed(i)
    idx = (np.arange(b) + i * b) % len(images)
    return trainer.train_step(trainer.sample_real(images, idx, rng))


def step_flops(trainer: Trainer, images: np.ndarray) -> tuple[int, dict[str, int]]:
    """FLOPs of one training step (FlopCounterMode: convolutions and matrix products, forward and backward),
    in total and per part."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    clock = _PhaseClock(counter.get_total_flops)
    trainer.set_phase_marker(clock)
    try:
        with counter:
            _step(trainer, images, 0)
    finally:
        trainer.set_phase_marker(no_phase)
    return counter.get_total_flops(), clock.flops


def _timed_steps(
    trainer: Trainer, images: np.ndarray, steps: int, threads: int, clock: _PhaseClock
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Wall and per-thread CPU seconds of plain, then ``clock``-marked steps, taken in turns so load hits both alike."""
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for i in range(steps):
        for mark in (False, True):
            trainer.set_phase_marker(clock if mark else no_phase)
            t0, c0 = time.perf_counter(), time.process_time()
            _step(trainer, images, 3 + 2 * i + mark)
            wall[mark].append(time.perf_counter() - t0)
            cpu[mark].append((time.process_time() - c0) / threads)
    trainer.set_phase_marker(no_phase)
    return wall[False], cpu[False], wall[True], cpu[True]


def bench_training(
    preset: Preset,
    threads: int,
    steps: int = 10,
    n_images: int = 512,
    min_time: float = 0.5,
    seed: int = 0,
) -> TrainSpeedReport:
    """Peaks, step FLOPs, steps/s and the per-part split of the preset's training step at ``threads`` threads.

    The images are random uint8 (a step's cost does not depend on their content); ``steps`` timed steps follow two
    warm-up steps, alternating plain steps (the headline rate) with marked ones (the split).
    """
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        size, ch = preset.preprocess.image_size, preset.model.channels
        images = np.random.default_rng(seed).integers(0, 256, size=(n_images, size, size, ch), dtype=np.uint8)
        trainer = Trainer(preset.model, preset.train)
        patches = min(preset.train.batch_images, n_images) * preset.train.train_patches
        peaks = {
            "matmul_fp32": matmul_peak(min_time=min_time),
            "conv_fp32": conv_peak_gflops(preset, patches, min_time),
        }
        with reuse_freed_memory():
            flops, part_flops = step_flops(trainer, images)
            for i in range(2):
                _step(trainer, images, i + 1)
            clock = _PhaseClock()
            plain, plain_cpu, marked, marked_cpu = _timed_steps(trainer, images, steps, threads, clock)
    finally:
        torch.set_num_threads(old)
    per_step = statistics.median(plain)
    parts = {k: v / steps for k, v in clock.seconds.items()}
    parts["rest"] = max(0.0, sum(marked) / steps - sum(parts.values()))
    cpu_parts = {k: v / steps / threads for k, v in clock.cpu_seconds.items()}
    cpu_parts["rest"] = max(0.0, sum(marked_cpu) / steps - sum(cpu_parts.values()))
    return TrainSpeedReport(
        preset=preset.name,
        threads=threads,
        patches_per_step=patches,
        peaks_gflops=peaks,
        gflop_per_step=flops / 1e9,
        seconds_per_step=per_step,
        steps_per_s=1.0 / per_step,
        achieved_gflops=flops / 1e9 / per_step,
        cpu_seconds_per_step=statistics.median(plain_cpu),
        part_seconds=parts,
        part_cpu_seconds=cpu_parts,
        part_gflop={k: v / 1e9 for k, v in part_flops.items()},
    )


def bench_scoring(detector: Any, n_images: int = 256, min_time: float = 1.0, max_reps: int = 10) -> dict[str, Any]:
    """Images/s of ``detector`` from PNG files, from decoded arrays, and of its two stages alone (module doc).

    ``detector`` is a :class:`~discopatch.detector.Detector` with a model (and, for a fused score, its statistics
    model); the PNGs are the demo garments at its input size (:func:`discopatch.inference.speed.synthetic_png_inputs`).
    """
    return bench_pipelines({"": detector}, n_images, min_time, max_reps)[""]


def bench_pipelines(
    detectors: dict[str, Any], n_images: int = 256, min_time: float = 1.0, max_reps: int = 10
) -> dict[str, dict[str, Any]]:
    """:func:`bench_scoring`'s figures for several detectors of one input size (say fp32 and bf16 engines), by key.

    All their calls are timed in one loop, in turns, so a comparison between them survives the neighbours' load.
    """
    from ..data.images import preprocess_many

    pre = next(iter(detectors.values())).preprocess_config
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, data in enumerate(synthetic_png_inputs(pre, n_images)):
            path = Path(tmp) / f"{i:05d}.png"
            path.write_bytes(data)
            paths.append(str(path))
        stack = np.stack([img for _, img, _ in preprocess_many(paths, pre) if img is not None])
        calls: dict[tuple[str, str], Callable[[], Any]] = {}
        for key, det in detectors.items():
            calls.update(_pipeline_calls(key, det, paths, stack))
        times = _interleaved_times(calls, min_time * len(calls), max_reps)
    return {
        key: _pipeline_figures(det, {s: times[(key, s)] for s in STAGES}, n_images) for key, det in detectors.items()
    }


#: The timed calls of a scoring pipeline: end to end from files, from decoded arrays, and its two stages alone.
STAGES = ("files", "arrays", "decode", "model")


def _pipeline_calls(
    key: str, det: Any, paths: list[str], stack: np.ndarray
) -> dict[tuple[str, str], Callable[[], Any]]:
    """The four timed calls of one detector (its engine is built lazily, in the untimed warm-up call)."""
    from ..data.images import preprocess_many

    pre = det.preprocess_config
    return {
        (key, "files"): lambda: list(det.iter_score_files(paths)),
        (key, "arrays"): lambda: det.score_preprocessed(stack),
        (key, "decode"): lambda: [img for _, img, _ in preprocess_many(paths, pre)],
        (key, "model"): lambda: det.scoring_engine().score_with_statistics(stack, det.batch_size),
    }


def _pipeline_figures(det: Any, times: dict[str, float], n_images: int) -> dict[str, Any]:
    """Images/s per stage, the pipeline limit (decode + model time per image) and the end-to-end share of it."""
    rate = {k: n_images / t for k, t in times.items()}
    limit = n_images / (times["decode"] + times["model"])
    return {
        "engine": det.engine,
        "precision": det.precision,
        "images": n_images,
        "image_size": det.preprocess_config.image_size,
        "patches": det.n_patches,
        **{f"{k}_images_per_s": rate[k] for k in STAGES},
        "limit_images_per_s": limit,
        "files_share_of_limit": rate["files"] / limit,
        "gflop_per_image": flops_per_image(det.model_config, det.n_patches) / 1e9,
    }


def pipeline_markdown(runs: list[dict[str, Any]]) -> str:
    """One Markdown table of :func:`bench_pipelines` runs: ``{"threads", "peaks", "rows"}`` each, ms per image
    per stage and the model stage's GFLOP/s against the same run's matmul peak of its own precision."""
    lines = [
        "| threads | engine | precision | end to end from files | from decoded arrays | decode alone | D + statistics "
        "alone | pipeline limit | end to end / limit | D + statistics GFLOP/s (% of own-precision matmul peak) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for s in run["rows"].values():
            ms = {k: 1e3 / s[f"{k}_images_per_s"] for k in (*STAGES, "limit")}
            gflops = s["gflop_per_image"] * s["model_images_per_s"]
            peak = run["peaks"].get(s["precision"])
            share = f" ({100 * gflops / peak:.0f} %)" if peak else ""
            lines.append(
                f"| {run['threads']} | {s['engine']} | {s['precision']} | "
                + " | ".join(f"{ms[k]:.{1 if ms[k] >= 10 else 2}f} ms" for k in (*STAGES, "limit"))
                + f" | {100 * s['files_share_of_limit']:.0f} % | {gflops:.1f}{share} |"
            )
    return "\n".join(lines)
