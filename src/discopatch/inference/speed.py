"""Scoring speed against the machine's own limit, and whether reduced precision keeps the detector's accuracy.

:func:`bench_speed` times the whole scoring path - PNG bytes -> decode -> preprocess -> content-seeded patches ->
D -> float64 score - for several images-per-call and thread counts, and reports the achieved GFLOP/s next to a
matrix-multiply peak (``torch.mm`` on large square fp32 matrices) measured in the same run at the same thread
count. The ratio, not the absolute time, is the figure to compare across machines and runs: on a shared CPU the
absolute numbers move with the neighbours' load, while a ratio measured seconds apart mostly does not.

FLOPs are counted analytically from the configuration (2 x multiply-accumulates of the convolutions, every 3x3 tap
including zero padding, plus the linear head); normalisation, activation and patch extraction are not counted
(they are memory-bound work the ratio deliberately charges to the implementation).

:func:`precision_check` scores the bundled demo sets with fp32 and a reduced precision and reports the AUROC
differences; a precision is recommended only when every difference stays within ``tolerance`` (0.001).
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import EngineName, ModelConfig, Precision, PreprocessConfig
from ..detector import Detector
from ..model import Discriminator
from .engine import ScoringEngine, make_engine

AUROC_TOLERANCE = 1e-3


def discriminator_macs(cfg: ModelConfig) -> int:
    """Multiply-accumulates of D for one patch: 3x3 stride-2 convolutions (all taps) plus the linear head."""
    macs, size, cin = 0, cfg.patch_size, cfg.channels
    for cout in cfg.disc_widths:
        size = (size + 2 - 3) // 2 + 1
        macs += 9 * cin * cout * size * size
        cin = cout
    return macs + cin * size * size


def flops_per_image(cfg: ModelConfig, n_patches: int) -> float:
    return 2.0 * discriminator_macs(cfg) * n_patches


def _median_time(fn: Callable[[], Any], min_time: float, max_reps: int, min_reps: int = 3) -> float:
    fn()  # warm-up: allocator, oneDNN primitive cache, ORT arena
    times: list[float] = []
    t_start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - t_start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _interleaved_times(fns: dict[Any, Callable[[], Any]], min_time: float, max_reps: int) -> dict[Any, float]:
    """Median seconds per call of each function, calling them in turns after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[Any, list[float]] = {k: [] for k in fns}
    t_start = time.perf_counter()
    reps = 0
    while reps < 3 or (time.perf_counter() - t_start < min_time and reps < max_reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
        reps += 1
    return {k: statistics.median(v) for k, v in times.items()}


def matmul_peak_gflops(
    threads: int, size: int = 2048, dtype: torch.dtype = torch.float32, min_time: float = 1.0
) -> float:
    """Achieved GFLOP/s of ``torch.mm`` on ``size``-square matrices at ``threads`` threads (median of repeats)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=g).to(dtype)
        b = torch.randn(size, size, generator=g).to(dtype)
        t = _median_time(lambda: torch.mm(a, b), min_time, max_reps=50)
    finally:
        torch.set_num_threads(old)
    return 2.0 * size**3 / t / 1e9


def synthetic_png_inputs(pre: PreprocessConfig, count: int) -> list[bytes]:
    """``count`` PNG-encoded Fashion-MNIST demo images at the preset's input size (RGB when it is 3-channel).

    Real garments rather than noise, so PNG decoding costs what it costs on natural-ish images.
    """
    from PIL import Image

    from ..data.builtin import load_demo_fashion_mnist

    src = load_demo_fashion_mnist().test_images
    out = []
    for i in range(count):
        img = Image.fromarray(src[i % len(src)])
        if pre.image_size > 28:
            img = img.resize((pre.image_size, pre.image_size), Image.Resampling.BILINEAR)
        if pre.channels == 3:
            arr = np.asarray(img)
            img = Image.fromarray(np.stack([arr, arr[::-1], 255 - arr], axis=-1))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


@dataclass
class SpeedRow:
    engine: str
    precision: str
    threads: int
    images_per_call: int
    seconds_per_call: float
    decode_seconds: float
    images_per_s: float
    ms_per_image: float
    gflops_end_to_end: float
    gflops_model: float
    peak_gflops: float
    ratio_end_to_end: float
    ratio_model: float
    #: end-to-end ratio against the peak of the row's own arithmetic (bf16 rows: the bf16 matmul peak), where
    #: measured; the fp32 ratio above is the yardstick, this one says how close the row is to its limit
    ratio_own_precision: float | None = None


@dataclass
class SpeedReport:
    preset: str
    model: dict[str, Any]
    n_patches: int
    image_size: int
    gflop_per_image: float
    peaks: dict[str, float] = field(default_factory=dict)
    rows: list[SpeedRow] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"] = [asdict(r) for r in self.rows]
        return d

    def table(self) -> str:
        head = (
            f"{self.preset}: {self.image_size} px, {self.n_patches} patches of {self.model['patch_size']} px, "
            f"{self.gflop_per_image:.3f} GFLOP/image; peaks (torch.mm 2048^3): "
            + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in self.peaks.items())
        )
        cols = (
            "engine   prec  thr  img/call  img/s      ms/img   decode%  GFLOP/s  %fp32peak(e2e)  %fp32peak(model)"
            "  %own-peak(e2e)"
        )
        lines = [head, cols, "-" * len(cols)]
        for r in self.rows:
            lines.append(
                f"{r.engine:8s} {r.precision:5s} {r.threads:3d}  {r.images_per_call:8d}  {r.images_per_s:9.1f}"
                f"  {r.ms_per_image:8.3f}  {100 * r.decode_seconds / r.seconds_per_call:6.1f}  "
                f"{r.gflops_end_to_end:7.1f}  {100 * r.ratio_end_to_end:13.1f}  {100 * r.ratio_model:15.1f}"
                f"  {_pct(r.ratio_own_precision):>14s}"
            )
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [
            f"{self.preset}: {self.gflop_per_image:.3f} GFLOP/image; matmul peaks "
            + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in self.peaks.items()),
            "",
            "| engine | precision | threads | images/call | images/s | ms/image | decode share | GFLOP/s | % of fp32 "
            "peak (end to end) | % of fp32 peak (model only) | % of own-precision peak (end to end) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.engine} | {r.precision} | {r.threads} | {r.images_per_call} | {r.images_per_s:.1f} | "
                f"{r.ms_per_image:.3f} | {100 * r.decode_seconds / r.seconds_per_call:.0f} % | "
                f"{r.gflops_end_to_end:.1f} | {100 * r.ratio_end_to_end:.1f} % | {100 * r.ratio_model:.1f} % | "
                f"{_pct(r.ratio_own_precision)} |"
            )
        return "\n".join(lines)


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.1f} %"


def bench_speed(
    D: Discriminator,
    preprocess: PreprocessConfig,
    n_patches: int,
    *,
    preset_name: str = "custom",
    seed: int = 0,
    batch_sizes: Sequence[int] = (1, 4, 16, 64, 256),
    threads: Sequence[int] = (1, 2),
    engines: Sequence[EngineName] = ("torch", "onnx"),
    precisions: Sequence[Precision] = ("fp32",),
    channels_last: bool | None = None,
    min_time: float = 1.0,
    max_reps: int = 20,
    log: Callable[[str], None] | None = None,
) -> SpeedReport:
    """Time the whole scoring path for each (threads, engine, precision, images per call); see the module doc."""
    from ..data.images import preprocess as preprocess_one

    D = D.cpu().eval()
    gflop = flops_per_image(D.cfg, n_patches) / 1e9
    rep = SpeedReport(preset_name, {**asdict(D.cfg)}, n_patches, preprocess.image_size, gflop)
    inputs = synthetic_png_inputs(preprocess, max(batch_sizes))
    old_threads = torch.get_num_threads()
    rep.meta = {"torch": torch.__version__, "cpu_threads_available": old_threads, "channels_last": channels_last}
    try:
        for th in threads:
            torch.set_num_threads(th)
            _measure_peaks(rep.peaks, th, precisions, min_time)
            combos = [
                (e, p) for e in engines for p in precisions if (e, p) not in (("torch", "int8"), ("onnx", "bf16"))
            ]
            built = {c: _build_engine(c[0], D, n_patches, seed, c[1], th, channels_last) for c in combos}
            for b in batch_sizes:
                batch = inputs[:b]

                def decode(batch: list[bytes] = batch) -> np.ndarray:
                    return np.stack([preprocess_one(x, preprocess) for x in batch])

                t_dec = _median_time(decode, min_time / 4, max_reps)
                # Engines are timed in turns (A, B, C, A, B, C, ...): on a shared machine the neighbours' load
                # then hits every engine alike and the ratios between rows stay meaningful.
                times = _interleaved_times(
                    {c: _scoring_call(eng, decode, batch) for c, eng in built.items()},
                    min_time * len(built),
                    max_reps,
                )
                for (eng_name, prec), t in times.items():
                    row = _speed_row(eng_name, prec, th, b, t, t_dec, gflop, rep.peaks)
                    rep.rows.append(row)
                    if log:
                        log(
                            f"{eng_name}/{prec} threads={th} images/call={b}: {row.ms_per_image:.3f} ms/image, "
                            f"{100 * row.ratio_end_to_end:.1f} % of peak"
                        )
    finally:
        torch.set_num_threads(old_threads)
    return rep


def _measure_peaks(peaks: dict[str, float], threads: int, precisions: Sequence[Precision], min_time: float) -> None:
    """Add the matmul peaks at ``threads`` threads that the rows are compared with: fp32 always (every row's
    reference), bf16 only when a bf16 row is timed (its own-precision reference)."""
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if dtype_name == "fp32" or "bf16" in precisions:
            peaks[f"{dtype_name}@{threads}"] = matmul_peak_gflops(threads, dtype=dtype, min_time=min_time)


def _speed_row(
    engine: str, precision: str, threads: int, b: int, t: float, t_dec: float, gflop: float, peaks: dict[str, float]
) -> SpeedRow:
    """One row from a call's median time ``t`` for ``b`` images: throughput, and its share of the fp32 peak end to
    end and for the model alone (the decode time ``t_dec`` taken off), so rows of any engine compare on one scale."""
    flops = gflop * b
    model_t = max(t - t_dec, 1e-9)
    peak = peaks[f"fp32@{threads}"]
    own = f"{precision}@{threads}"
    return SpeedRow(
        engine=engine,
        precision=precision,
        threads=threads,
        images_per_call=b,
        seconds_per_call=t,
        decode_seconds=min(t_dec, t),
        images_per_s=b / t,
        ms_per_image=1e3 * t / b,
        gflops_end_to_end=flops / t,
        gflops_model=flops / model_t,
        peak_gflops=peak,
        ratio_end_to_end=flops / t / peak,
        ratio_model=flops / model_t / peak,
        ratio_own_precision=flops / t / peaks[own] if own in peaks else None,
    )


def _scoring_call(
    eng: ScoringEngine, decode: Callable[[list[bytes]], np.ndarray], batch: list[bytes]
) -> Callable[[], np.ndarray]:
    """One timed call: decode ``batch`` and score it with ``eng`` in one forward pass."""
    return lambda: eng.score(decode(batch), batch_size=len(batch))


def _build_engine(
    name: EngineName,
    D: Discriminator,
    n_patches: int,
    seed: int,
    precision: Precision,
    threads: int,
    channels_last: bool | None,
) -> ScoringEngine:
    if name == "onnx":
        from .engine import OnnxEngine

        return OnnxEngine.from_discriminator(D, n_patches, seed, threads=threads, precision=precision)
    return make_engine(name, D, n_patches, seed, "cpu", precision=precision, channels_last=channels_last)


@dataclass
class PrecisionCheck:
    precision: str
    engine: str
    auroc_fp32: dict[str, float]
    auroc: dict[str, float]
    max_abs_delta: float
    max_score_delta: float
    passed: bool


def precision_check(
    det: Detector,
    precisions: Sequence[Precision] = ("bf16", "int8"),
    tolerance: float = AUROC_TOLERANCE,
    seed: int = 0,
    limit: int | None = None,
) -> list[PrecisionCheck]:
    """AUROC on the demo sets (ID reference vs control, corruptions, Animal-MNIST) with fp32 and each precision.

    ``det`` is a trained :class:`~discopatch.detector.Detector`; its own preprocessing and configured score
    (D's, or fused with the statistics model) are used. bf16 runs on the torch engine (bf16 convolutions,
    float32 statistics), int8 on ONNX Runtime (dynamic quantisation of Conv/Gemm weights). ``limit`` keeps the
    first images of each set (for smoke tests; the real check uses all 1,000 per set).
    """
    from ..data.demo_sets import build_demo_sets
    from ..metrics import ood_metrics

    D = det.require_model().cpu()
    reference, sets = build_demo_sets(det.preprocess_config, seed=seed)
    if limit is not None:
        reference = reference.subset(np.arange(min(limit, len(reference))))
        sets = {k: v.subset(np.arange(min(limit, len(v)))) for k, v in sets.items()}

    def aurocs(eng: ScoringEngine) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        ref = det.score_with_engine(eng, reference.images)
        scores = {"__id__": ref}
        out = {}
        for name, s in sets.items():
            scores[name] = det.score_with_engine(eng, s.images)
            out[name] = float(ood_metrics(ref, scores[name])["auroc"])
        return out, scores

    base, base_scores = aurocs(make_engine("torch", D, det.n_patches, det.seed, "cpu"))
    results = []
    for prec in precisions:
        eng_name: EngineName = "onnx" if prec == "int8" else "torch"
        got, scores = aurocs(make_engine(eng_name, D, det.n_patches, det.seed, "cpu", precision=prec))
        delta = max(abs(got[k] - base[k]) for k in base)
        sdelta = max(float(np.max(np.abs(scores[k] - base_scores[k]))) for k in base_scores)
        results.append(PrecisionCheck(prec, eng_name, base, got, delta, sdelta, delta <= tolerance))
    return results
