"""ONNX export of a detector: write its graph and metadata to a file, read the metadata back, check parity.

The graph itself (D with the per-image normalisation as explicit operations, outputs ``logits``, ``stats`` and
``score``, and the ``metadata_props``) is built by :mod:`discopatch.inference.onnx_graph`; its names are re-exported
here.

The parity check (:func:`check_export`, ``discopatch export --check``) judges the difference between ONNX Runtime
and PyTorch on the score's own scale: the spread (interquartile range) of the detector's calibration scores, so a
fused score (robust z-units, spread about 1) and D's own score (in [0, 1], spread about 0.01) get the same rule.
It passes when the largest difference is at most :data:`PARITY_RELATIVE_TOLERANCE` of that spread and every image
whose score lies outside that rounding band around the threshold gets the same decision from both. Rounding between
CPU instruction sets (AVX2, AVX512, the unvectorised kernels) and between float32 (the graph) and float64 moves
scores by at most about 3e-4 of the spread (docs/RELIABILITY.md, "ONNX export parity"); a broken graph (a wrong
normalisation, wrong weights) moves them by a sizeable fraction of it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..data.images import ImageInput
from ..detector import Detector
from .engine import OnnxEngine, TorchEngine
from .onnx_graph import (
    DEFAULT_OPSET,
    INPUT_NAME,
    ONNX_FORMAT,
    ONNX_FORMAT_VERSION,
    OUTPUT_NAMES,
    OnnxScorer,
    export_onnx_bytes,
    onnx_metadata,
)

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "ONNX_FORMAT",
    "ONNX_FORMAT_VERSION",
    "OUTPUT_NAMES",
    "PARITY_RELATIVE_TOLERANCE",
    "OnnxScorer",
    "ParityCheck",
    "check_export",
    "export_detector",
    "export_onnx_bytes",
    "onnx_metadata",
    "read_metadata",
]


def export_detector(det: Detector, out: str | os.PathLike[str], opset: int = DEFAULT_OPSET) -> Path:
    """Write a fitted/loaded :class:`~discopatch.detector.Detector` to ``out``: D, its statistics model when the
    detector uses one, and the metadata (preprocessing, sampling, threshold) a consumer needs."""
    D = det.require_model()
    mode = det.preset.score_mode
    cal = det.calibration
    meta = onnx_metadata(
        D,
        det.n_patches,
        det.seed,
        det.preprocess_config,
        threshold=None if cal is None else cal.threshold,
        target_fpr=None if cal is None else cal.target_fpr,
        score_mode=mode,
        patch_aggregate=det.preset.patch_aggregate,
    )
    data = export_onnx_bytes(D, det.n_patches, meta, opset, det.stats_model, mode, det.patches_kept)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return out


def read_metadata(model: str | os.PathLike[str] | bytes) -> dict[str, str]:
    """``metadata_props`` of an exported model as a dict."""
    import onnx

    m = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    return {p.key: p.value for p in m.metadata_props}


PARITY_RELATIVE_TOLERANCE = 5e-3
"""Largest allowed |ONNX Runtime - PyTorch| score difference, as a fraction of the calibration scores' spread."""


@dataclass(frozen=True)
class ParityCheck:
    """What :func:`check_export` found: the largest score difference on the score's own scale, and decisions."""

    n_images: int
    max_abs_diff: float
    scale: float  # the calibration scores' interquartile range (the check images' when not calibrated)
    scale_source: str  # "calibration" or "check images"
    threshold: float | None
    decisions_compared: int  # images whose PyTorch score lies outside the rounding band around the threshold
    decisions_differ: int
    relative_tolerance: float = PARITY_RELATIVE_TOLERANCE

    @property
    def tolerance(self) -> float:
        """The allowed difference in the score's own units (also the half-width of the band around the threshold)."""
        return self.relative_tolerance * self.scale

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / self.scale

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.decisions_differ == 0

    def summary(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        text = (
            f"largest |ONNX Runtime - PyTorch| score difference {self.max_abs_diff:.3g} over {self.n_images} images "
            f"= {self.relative_diff:.2g} of the {self.scale_source} scores' spread {self.scale:.3g} "
            f"(allowed {self.relative_tolerance:g})"
        )
        if self.threshold is not None:
            text += (
                f"; decisions at threshold {self.threshold:.4g}: {self.decisions_differ} of "
                f"{self.decisions_compared} differ outside the rounding band"
            )
        return f"{text} ({verdict})"


def _spread(scores: np.ndarray) -> float:
    q1, q3 = np.percentile(scores, [25, 75]) if len(scores) else (0.0, 0.0)
    return float(q3 - q1)


def check_export(
    det: Detector,
    onnx_path: str | os.PathLike[str],
    images: Sequence[ImageInput] | np.ndarray | None = None,
    limit: int = 256,
) -> ParityCheck:
    """Compare the exported graph's own ``score`` output (ONNX Runtime, float32) with the detector's configured
    score from the PyTorch engine (float32 network, float64 scores) on real images (default: demo test images).

    ``images`` is anything :func:`~discopatch.data.images.preprocess` reads (arrays, paths, bytes). Images go
    through the detector's own preprocessing and content-seeded patch sampling; both sides see the same patches, so
    the difference measures the graph, not the sampling. See the module docstring for the rule.
    """
    from ..data.builtin import load_demo_fashion_mnist
    from ..data.images import stack_images

    if images is None:
        images = load_demo_fashion_mnist().test_images[:limit]
    stack = stack_images(list(images), det.preprocess_config)
    D = det.require_model()
    ref = det.score_with_engine(TorchEngine(D, det.n_patches, det.seed, "cpu"), stack)
    engine = OnnxEngine.from_file(onnx_path, det.n_patches, det.seed, D.cfg)
    got = engine.score(stack, batch_size=det.batch_size, in_graph=True)
    cal = det.calibration
    scale, source = (_spread(cal.scores), "calibration") if cal is not None else (0.0, "")
    if not scale > 0:
        scale, source = _spread(ref), "check images"
    if not scale > 0:  # every score equal: judge the difference in absolute terms
        scale, source = 1.0, "unit"
    diff = np.abs(got - ref)
    result = ParityCheck(
        n_images=len(ref),
        max_abs_diff=float(np.max(diff)) if len(ref) else 0.0,
        scale=scale,
        scale_source=source,
        threshold=None if cal is None or not np.isfinite(cal.threshold) else float(cal.threshold),
        decisions_compared=0,
        decisions_differ=0,
    )
    if result.threshold is None:
        return result
    outside = np.abs(ref - result.threshold) > result.tolerance
    differ = (ref > result.threshold) != (got > result.threshold)
    return replace(result, decisions_compared=int(outside.sum()), decisions_differ=int((differ & outside).sum()))
