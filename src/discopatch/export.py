"""ONNX export of a detector: write its graph and metadata to a file, read the metadata back, check parity.

The graph itself (D with the per-image normalisation as explicit operations, outputs ``logits``, ``stats`` and
``score``, and the ``metadata_props``) is built by :mod:`discopatch.onnx_graph`; its names are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data.images import ImageInput
from .detector import Detector
from .engine import OnnxEngine, TorchEngine
from .onnx_graph import (
    DEFAULT_OPSET,
    INPUT_NAME,
    ONNX_FORMAT,
    ONNX_FORMAT_VERSION,
    OUTPUT_NAMES,
    SCORE_TEXT,
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
    "SCORE_TEXT",
    "OnnxScorer",
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
    )
    data = export_onnx_bytes(D, det.n_patches, meta, opset, det.stats_model, mode)
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


def check_export(
    det: Detector,
    onnx_path: str | os.PathLike[str],
    images: Sequence[ImageInput] | np.ndarray | None = None,
    limit: int = 256,
) -> float:
    """Largest |ONNX Runtime graph score - PyTorch float32/64 score| over real images (default: demo test images).

    ``images`` is anything :func:`~discopatch.data.images.preprocess` reads (arrays, paths, bytes). Compares the
    graph's own ``score`` output with the detector's configured score computed by the PyTorch engine in fp32.

    Images go through the detector's own preprocessing and content-seeded patch sampling; both sides see the
    same patches, so the difference measures the graph, not the sampling.
    """
    from .data.builtin import load_demo_fashion_mnist
    from .data.images import stack_images

    if images is None:
        images = load_demo_fashion_mnist().test_images[:limit]
    stack = stack_images(list(images), det.preprocess_config)
    D = det.require_model()
    ref = det.score_with_engine(TorchEngine(D, det.n_patches, det.seed, "cpu"), stack)
    engine = OnnxEngine.from_file(onnx_path, det.n_patches, det.seed, D.cfg)
    got = engine.score(stack, batch_size=det.batch_size, in_graph=True)
    return float(np.max(np.abs(got - ref))) if len(ref) else 0.0
