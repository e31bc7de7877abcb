"""Scoring engines: the same per-image patch scores computed by PyTorch or by ONNX Runtime.

This is the only place where D scores images: :class:`TorchEngine` and :class:`OnnxEngine` behind
``Detector.score``, and :func:`score_array` for a bare discriminator (training diagnostics, ablations, tests),
which is a :class:`TorchEngine` too. Many images share one forward pass; the grouped normalisation still gives each
image its own statistics because the group size is exactly one image's ``n_patches``. ``pool_images`` > 1 (torch
only) deliberately pools statistics over several images - the leak the paper warns about - and exists only so the
benchmark can show its effect.

Both engines share everything except D's forward pass: content-seeded corners (:func:`patches.content_corners`),
patch extraction and the float64 ``1 - mean sigmoid`` (:func:`scoring.scores_from_logits`). They therefore agree
to float32 rounding: within 1e-4, the contract (``discopatch export --check`` fails above it, and the tests hold
the engines to it where blank images - zero patch variance, divided by sqrt(eps) - show the largest difference);
on the tests' ordinary images within 1e-6. Either can back ``Detector.score``, ``discopatch score`` and the server.

The CPU default is a constant chosen from a measurement (docs/BENCHMARKS.md, "Scoring speed"), not a benchmark at
run time: a start-up race on a shared 2-core machine would pick a different engine from run to run.
"""

from __future__ import annotations

import copy
import os
from abc import ABC, abstractmethod
from typing import Any, Literal

import numpy as np
import torch

# ENGINES and the precisions live in config (no torch), so that the CLI offers them as choices without importing
# this module; they are re-exported here, where they have always been importable from.
from ..config import ENGINES, ONNX_PRECISIONS, PRECISIONS, TORCH_PRECISIONS, EngineName, ModelConfig, Precision  # noqa: F401
from ..errors import ConfigError, UnavailableError
from ..model import Discriminator
from ..patches import content_corners, extract_patches, to_tensor
from .onnx_graph import export_onnx_bytes, quantize_dynamic_bytes

#: What ``engine="auto"`` picks on CPU when onnxruntime is installed. Measured interleaved on the idle 2-core dev
#: machine (docs/BENCHMARKS.md, "Scoring speed"): ONNX Runtime answers single-image calls 1.7x (1 thread) to 4x
#: (2 threads) faster - the serving case - and degrades less when other processes occupy the cores; PyTorch is
#: 1.0-1.3x faster in fp32 on calls of 16+ images and is the only engine with bf16 (``--precision bf16``).
DEFAULT_CPU_ENGINE = "onnx"


def onnx_available() -> bool:
    """True when both ``onnx`` and ``onnxruntime`` import (the ``[onnx]`` extra)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


#: ONNX Runtime gets images in runs whose first-layer activations fit in about this many bytes: measured ~25 %
#: faster per image than one 256-image run for the small preset at 1 thread (cache reuse), no worse at 2.
CPU_RUN_BYTES = 2 * 1024 * 1024
#: PyTorch's runs: 4 MB of first-layer activations, i.e. 64 images of the small preset (1.1-1.5x faster per image
#: than 16 or 256 in an interleaved sweep) and one image of the paper preset (faster than 4 per run).
TORCH_RUN_BYTES = 4 * 1024 * 1024
#: The torch engine's layout when not given: channels_last was faster in every interleaved comparison on the dev
#: machine once the normalisation used the batch-norm kernel (scripts/bench_engine_layout.py: small 1.2-1.6x fp32,
#: 1.1-1.2x bf16; paper 1.1-1.3x).
CHANNELS_LAST_DEFAULT = True


def cpu_run_images(cfg: ModelConfig, n_patches: int, budget: int = CPU_RUN_BYTES) -> int:
    """Images per forward run on the CPU so that the first layer's float32 output stays within ``budget``."""
    first = n_patches * cfg.disc_widths[0] * (cfg.patch_size // 2) ** 2 * 4
    return max(1, budget // first)


def scores_from_logits(logits: torch.Tensor, kept: int | None = None) -> np.ndarray:
    """1 - mean sigmoid over each image's patches (only the ``kept`` least real ones: the patch aggregate; ``None``:
    all, the paper's mean), in float64 so that near-certain patches do not tie at 1.0."""
    probs = torch.sigmoid(logits.double())
    if kept is not None and kept < probs.shape[1]:
        probs = probs.topk(kept, dim=1, largest=False).values
    return (1.0 - probs.mean(dim=1)).numpy()


class ScoringEngine(ABC):
    """Preprocessed uint8 images -> per-patch logits -> float64 scores; subclasses supply D's forward.

    ``run_images`` caps the images per forward run (``None``: the whole call in one run). ``pool_images`` is the
    number of images per normalisation group: 1 (per image) except in the torch engine's leaky ablation.
    """

    name = "base"
    pool_images = 1
    #: Patches per image D's score averages, the least real ones (the preset's ``patch_aggregate``); None: all.
    kept: int | None = None

    def __init__(
        self,
        cfg: ModelConfig,
        n_patches: int,
        seed: int,
        device: torch.device | str = "cpu",
        run_images: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.n_patches = int(n_patches)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.run_images = run_images

    def patches(self, images: np.ndarray) -> torch.Tensor:
        """``(B, S, S[, C])`` uint8 -> ``(B * N, C, p, p)`` float32 on the engine's device, content-seeded."""
        p = self.cfg.patch_size
        corners = content_corners(images, p, self.n_patches, self.seed)
        return extract_patches(to_tensor(images).to(self.device), corners, p)

    @abstractmethod
    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B * N, C, p, p)`` -> float32 logits ``(B, N)`` on the CPU."""

    @abstractmethod
    def forward_with_statistics(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, N)`` and each image's layer statistics ``(B, 2 * sum(widths))``, float32 on the CPU.

        The statistics are what the per-image normalisation removes (:mod:`discopatch.inference.stats_model`); engines
        produce them in the same pass as the logits.
        """

    def _step(self, size: int) -> int:
        """``size`` rounded down to whole normalisation groups (at least one group)."""
        return max(self.pool_images, size - size % self.pool_images)

    def _runs(self, images: np.ndarray) -> list[np.ndarray]:
        if len(images) % self.pool_images:
            raise ValueError(f"{len(images)} images cannot be pooled in groups of {self.pool_images}")
        step = self._step(self.run_images or len(images))
        return [images[i : i + step] for i in range(0, len(images), step)]

    def patch_logits(self, images: np.ndarray) -> torch.Tensor:
        """Float32 logits ``(B, N)`` on the CPU, in runs of at most ``run_images`` images."""
        if len(images) == 0:
            return torch.zeros(0, self.n_patches, dtype=torch.float32)
        runs = [self.forward(self.patches(run)) for run in self._runs(images)]
        return runs[0] if len(runs) == 1 else torch.cat(runs)

    def score(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Float64 scores (higher = more OOD), ``batch_size`` images per forward pass."""
        out = np.empty(len(images), dtype=np.float64)
        step = self._step(max(1, batch_size))
        for i in range(0, len(images), step):
            chunk = images[i : i + step]
            out[i : i + len(chunk)] = scores_from_logits(self.patch_logits(chunk), self.kept)
        return out

    def score_with_statistics(self, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """D's float64 scores ``(B,)`` and the per-image statistics features ``(B, 2 * sum(widths))`` (float64)."""
        logits, feats = self.logits_with_statistics(images, batch_size)
        return scores_from_logits(logits, self.kept), feats

    def logits_with_statistics(self, images: np.ndarray, batch_size: int = 256) -> tuple[torch.Tensor, np.ndarray]:
        """Float32 logits ``(B, N)`` and float64 statistics features from the pass :meth:`score_with_statistics` uses.

        Exposed so that an explanation (:meth:`discopatch.detector.Detector.explain`) sees exactly the logits
        behind the fused score rather than a recomputation.
        """
        logits = torch.empty(len(images), self.n_patches, dtype=torch.float32)
        feats = np.empty((len(images), self.cfg.stats_dim), dtype=np.float64)
        done = 0
        for i in range(0, len(images), max(1, batch_size)):
            for run in self._runs(images[i : i + batch_size]):
                run_logits, stats = self.forward_with_statistics(self.patches(run))
                logits[done : done + len(run)] = run_logits
                feats[done : done + len(run)] = stats.double().numpy()
                done += len(run)
        return logits, feats

    def batched_logits(self, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
        """Float32 logits ``(B, N)`` computed in the same ``batch_size`` calls as :meth:`score`."""
        parts = [self.patch_logits(images[i : i + batch_size]) for i in range(0, len(images), max(1, batch_size))]
        return torch.cat(parts) if parts else torch.zeros(0, self.n_patches, dtype=torch.float32)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "device": str(self.device)}


class TorchEngine(ScoringEngine):
    """D in PyTorch, one normalisation group per image, in runs of at most ``run_images`` images.

    ``precision="bf16"`` keeps a bfloat16 copy of D's convolutions (no per-call autocast weight casts); the
    normalisation statistics are accumulated in float32 and D's head and the sigmoid stay float32/float64.
    ``channels_last`` (default on) changes the memory layout only. Both work on a private copy of D, so the
    detector's own module (which may be trained further) is never converted. ``pool_images`` > 1 normalises
    that many images together (the leaky ablation; never used by a detector's scores).
    """

    name = "torch"

    def __init__(
        self,
        D: Discriminator,
        n_patches: int,
        seed: int = 0,
        device: torch.device | str | None = None,
        precision: Precision = "fp32",
        channels_last: bool | None = None,
        run_images: int | None = None,
        pool_images: int = 1,
    ) -> None:
        dev = next(D.parameters()).device if device is None else torch.device(device)
        if channels_last is None:  # measured faster for both presets and precisions (BENCHMARKS "Scoring speed")
            channels_last = CHANNELS_LAST_DEFAULT
        if run_images is None and dev.type == "cpu":
            run_images = cpu_run_images(D.cfg, int(n_patches), TORCH_RUN_BYTES)
        super().__init__(D.cfg, n_patches, seed, dev, run_images)
        if precision not in TORCH_PRECISIONS:
            raise ConfigError(f"the torch engine supports {' and '.join(TORCH_PRECISIONS)}, not {precision!r}")
        if pool_images < 1:
            raise ConfigError(f"pool_images must be at least 1, got {pool_images}")
        self.pool_images = int(pool_images)
        self.precision = precision
        self.channels_last = channels_last
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        if channels_last or precision != "fp32" or next(D.parameters()).device != dev:
            D = copy.deepcopy(D).to(dev).eval()
            for block in D.blocks:
                block.conv.to(self.dtype)
            if channels_last:
                D = D.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from the stubs
        self.D = D

    def _prepare(self, patches: torch.Tensor) -> torch.Tensor:
        patches = patches.to(self.dtype)
        return patches.contiguous(memory_format=torch.channels_last) if self.channels_last else patches

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self._forward(patches, statistics=False)[0]

    def forward_with_statistics(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, stats = self._forward(patches, statistics=True)
        assert stats is not None
        return logits, stats

    def _forward(self, patches: torch.Tensor, statistics: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        was_training = self.D.training
        self.D.eval()
        try:
            with torch.inference_mode():
                x = self._prepare(patches)
                group = self.n_patches * self.pool_images
                if statistics:
                    logits, stats = self.D.forward_with_statistics(x, group)
                else:
                    logits, stats = self.D(x, group), None
        finally:
            self.D.train(was_training)
        return logits.float().reshape(-1, self.n_patches).cpu(), None if stats is None else stats.float().cpu()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "precision": self.precision, "channels_last": self.channels_last}


class OnnxEngine(ScoringEngine):
    """D as the ONNX graph of :mod:`discopatch.inference.onnx_graph`, run by ONNX Runtime on the CPU.

    Built in memory from a loaded D (:meth:`from_discriminator`) or from an exported file. The session is a
    snapshot: weights changed later in PyTorch are not seen (the detector rebuilds its engine after ``fit``).
    """

    name = "onnx"

    def __init__(
        self,
        model: bytes,
        cfg: ModelConfig,
        n_patches: int,
        seed: int = 0,
        threads: int | None = None,
        precision: Precision = "fp32",
        run_images: int | None = None,
    ) -> None:
        super().__init__(cfg, n_patches, seed, "cpu", run_images or cpu_run_images(cfg, int(n_patches)))
        import onnxruntime as ort

        if precision not in ONNX_PRECISIONS:
            raise ConfigError(f"the onnx engine supports {' and '.join(ONNX_PRECISIONS)}, not {precision!r}")
        self.precision = precision
        if precision == "int8":
            model = quantize_dynamic_bytes(model)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.threads = opts.intra_op_num_threads
        self.session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])

    @classmethod
    def from_discriminator(cls, D: Discriminator, n_patches: int, seed: int = 0, **kw: Any) -> OnnxEngine:
        return cls(export_onnx_bytes(D, n_patches), D.cfg, n_patches, seed, **kw)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], n_patches: int, seed: int, cfg: ModelConfig, **kw: Any
    ) -> OnnxEngine:
        with open(path, "rb") as f:
            return cls(f.read(), cfg, n_patches, seed, **kw)

    def _run(self, patches: torch.Tensor, *outputs: str) -> list[np.ndarray]:
        p, c = self.cfg.patch_size, self.cfg.channels
        x = patches.detach().cpu().float().numpy().reshape(-1, self.n_patches, c, p, p)
        out: list[np.ndarray] = self.session.run(list(outputs), {"patches": x})
        return out

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._run(patches, "logits")[0])

    def forward_with_statistics(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, stats = self._run(patches, "logits", "stats")
        return torch.from_numpy(logits), torch.from_numpy(stats)

    def score(self, images: np.ndarray, batch_size: int = 256, in_graph: bool = False) -> np.ndarray:
        """As :meth:`ScoringEngine.score`; ``in_graph=True`` returns the graph's own float32 ``score`` output."""
        if not in_graph:
            return super().score(images, batch_size)
        out = np.empty(len(images), dtype=np.float64)
        step = min(max(1, batch_size), self.run_images or batch_size)
        for i in range(0, len(images), step):
            chunk = images[i : i + step]
            out[i : i + len(chunk)] = self._run(self.patches(chunk), "score")[0]
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "precision": self.precision, "threads": self.threads}


#: An engine name after ``auto`` is resolved.
ResolvedEngine = Literal["torch", "onnx"]


def resolve_engine_name(engine: EngineName, device: torch.device) -> ResolvedEngine:
    """``auto`` -> the measured CPU default (ONNX only where installed) or torch on CUDA."""
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        if device.type != "cpu":
            return "torch"
        return "onnx" if DEFAULT_CPU_ENGINE == "onnx" and onnx_available() else "torch"
    if engine == "onnx":
        if device.type != "cpu":
            raise ConfigError("the onnx engine runs on the CPU only; use engine='torch' with CUDA")
        if not onnx_available():
            raise UnavailableError("engine 'onnx' needs the optional extra: pip install 'discopatch[onnx]'")
    return engine


def make_engine(
    engine: EngineName,
    D: Discriminator,
    n_patches: int,
    seed: int,
    device: torch.device | str = "cpu",
    precision: Precision = "fp32",
    channels_last: bool | None = None,
    kept: int | None = None,
) -> ScoringEngine:
    """Build the named engine (``auto`` resolved as :func:`resolve_engine_name`) around D; its score averages the
    ``kept`` least real patches of each image (``None``: all, the paper's mean)."""
    device = torch.device(device)
    eng: ScoringEngine
    if resolve_engine_name(engine, device) == "onnx":
        eng = OnnxEngine.from_discriminator(D, n_patches, seed, precision=precision)
    else:
        eng = TorchEngine(D, n_patches, seed, device, precision=precision, channels_last=channels_last)
    eng.kept = kept
    return eng


def score_array(
    D: Discriminator,
    images: np.ndarray,
    n_patches: int,
    seed: int = 0,
    device: torch.device | str | None = None,
    batch_size: int = 256,
    pool_images: int = 1,
    kept: int | None = None,
) -> np.ndarray:
    """D's scores (float64, higher = more OOD) for a preprocessed stack, without a :class:`Detector`.

    The same computation as a detector's torch engine (one :class:`TorchEngine` per call, on ``device`` or D's
    own), ``batch_size`` images per call; ``pool_images`` > 1 is the leaky ablation; ``kept`` as
    :func:`make_engine`'s.
    """
    engine = TorchEngine(D, n_patches, seed, device, pool_images=pool_images)
    engine.kept = kept
    return engine.score(images, batch_size)
