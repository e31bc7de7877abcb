"""The ONNX graph of the discriminator, with per-image normalisation written out as plain operations.

Why a separate module: :class:`~discopatch.model.norm.PatchGroupNorm` is easy to export wrongly. A consumer that
maps it to ONNX ``BatchNormalization`` gets either running statistics (training mode is not exportable) or
statistics pooled over every patch of every image in the request, which is the dataset-level leak the method
warns about (docs/METHOD.md, section 5). :class:`OnnxScorer` therefore re-expresses D on a 5-D input
``(images, N, C, p, p)``: after each convolution the activations are reshaped to ``(images, N, C, h, w)`` and
standardised with their own mean and biased variance over ``(N, h, w)``, so an image's score can never depend on
another image in the same request. The graph has three outputs:

* ``logits`` ``(images, N)`` float32 - what :mod:`discopatch.inference.engine` consumes, so the final mean stays
  float64;
* ``stats`` ``(images, 2 * sum(widths))`` float32 - each layer's per-image channel means and log-variances, the
  statistics the normalisation removes (the input of :mod:`discopatch.inference.stats_model`);
* ``score`` ``(images,)`` float32 - the detector's configured score (``score_mode`` in the metadata: D's
  ``1 - mean sigmoid(logit)``, or its fusion with the statistics model, whose parameters are in the graph),
  computed in float64 inside the graph and rounded once, for consumers that want one number per image.

Everything needed to rebuild preprocessing and patch sampling is stored in the model's ``metadata_props``
(:func:`onnx_metadata`). This module only builds the graph, so that both :mod:`discopatch.inference.engine` (the ONNX
Runtime engine) and :mod:`discopatch.inference.export` (writing a detector to a file, the parity check) can import it.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._version import __version__
from ..config import PreprocessConfig, ScoreMode, to_dict
from ..errors import ConfigError
from ..model import Discriminator
from ..model.norm import PatchGroupNorm
from ..score_modes import get as get_score_mode
from ..score_modes import patches_kept

ONNX_FORMAT = "discopatch-onnx"
ONNX_FORMAT_VERSION = 1
DEFAULT_OPSET = 17
INPUT_NAME = "patches"
OUTPUT_NAMES = ("logits", "stats", "score")


class SavedStatistics(Protocol):
    """What the graph takes from a statistics model: its tensors under their saved keys.

    :class:`discopatch.inference.stats_model.StatsModel` is one; naming only this keeps the graph below the statistics
    model, which computes its features through the engine that this graph serves.
    """

    def to_tensors(self) -> dict[str, torch.Tensor]: ...


class OnnxScorer(nn.Module):
    """D as explicit ops on ``(images, N, C, p, p)`` patches -> ``(logits, stats, score)``.

    Shares D's parameters (no copy), so it computes D's function exactly; only the normalisation is spelled out
    with reshape / mean / sub / mul so that exporters cannot turn it into a BatchNormalization node. ``stats`` are
    the per-image layer statistics the normalisation removes; ``score`` is the detector's configured score,
    computed in float64 inside the graph by the mode's torch combiner (:mod:`discopatch.score_modes`) from D's
    ``1 - mean sigmoid`` and, for a mode that needs a ``stats_model``, its Mahalanobis distance and fusion scales.
    """

    # buffers registered from ``StatsModel.to_tensors()`` (its saved keys), for modes that need the statistics
    feat_mean: torch.Tensor
    feat_scale: torch.Tensor
    location: torch.Tensor
    precision: torch.Tensor
    fusion: torch.Tensor

    def __init__(
        self,
        D: Discriminator,
        n_patches: int,
        stats_model: SavedStatistics | None = None,
        score_mode: ScoreMode = "d-only",
        kept: int | None = None,
    ) -> None:
        super().__init__()
        self.kept = None if kept is None or kept >= n_patches else int(kept)
        if D.cfg.norm != "patch":
            raise ConfigError(f"ONNX export supports norm='patch' (the method) only, not the ablation {D.cfg.norm!r}")
        self.spec = get_score_mode(score_mode)
        if self.spec.needs_statistics and stats_model is None:
            raise ConfigError(f"score_mode {score_mode!r} needs the detector's statistics model")
        self.cfg = D.cfg
        self.n_patches = int(n_patches)
        self.score_mode = score_mode
        self.convs = nn.ModuleList(block.conv for block in D.blocks)
        # A layer may be built unnormalised (an identity adapter); anything else but PatchGroupNorm is refused.
        norms = [block.norm if isinstance(block.norm, PatchGroupNorm) else None for block in D.blocks]
        for block, norm in zip(D.blocks, norms):
            inner = getattr(block.norm, "inner", None)
            if norm is None and not isinstance(inner, nn.Identity):
                raise ConfigError(f"cannot export normalisation layer {block.norm!r}")
        self.norms = nn.ModuleList(n if n is not None else nn.Identity() for n in norms)
        self.head = D.head
        self.slope = float(D.cfg.negative_slope)
        if self.spec.needs_statistics and stats_model is not None:  # a stats model is required above
            for k, v in stats_model.to_tensors().items():
                self.register_buffer(k, v.double())

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, c, p = self.n_patches, self.cfg.channels, self.cfg.patch_size
        x = patches.reshape(-1, c, p, p)
        feats = []
        for conv, norm in zip(self.convs, self.norms):
            x = conv(x)
            ch, h, w = x.shape[1], x.shape[2], x.shape[3]
            g = x.reshape(-1, n, ch, h, w)  # one group per image: statistics never cross images
            mean = g.mean(dim=(1, 3, 4), keepdim=True)
            d = g - mean
            var = (d * d).mean(dim=(1, 3, 4), keepdim=True)  # biased, two-pass (as torch.var_mean)
            feats += [mean.reshape(-1, ch), torch.log(var + self.cfg.eps).reshape(-1, ch)]
            if isinstance(norm, PatchGroupNorm):
                scale = norm.weight.view(1, 1, ch, 1, 1) * torch.rsqrt(var + norm.eps)
                x = (d * scale + norm.bias.view(1, 1, ch, 1, 1)).reshape(-1, ch, h, w)
            x = F.leaky_relu(x, self.slope)
        logits = self.head(x.flatten(1)).reshape(-1, n)
        stats = torch.cat(feats, dim=1)
        probs = torch.sigmoid(logits.double())
        if self.kept is not None:  # the patch aggregate: the least real patches only
            probs = probs.topk(self.kept, dim=1, largest=False).values
        d_score = 1.0 - probs.mean(dim=1)
        if not self.spec.needs_statistics:
            return logits, stats, self.spec.combine_torch(d_score, None, None).float()
        z = (stats.double() - self.feat_mean) / self.feat_scale - self.location
        s_score = ((z @ self.precision) * z).sum(dim=1)  # buffer "precision": the inverse covariance (saved key)
        return logits, stats, self.spec.combine_torch(d_score, s_score, self.fusion).float()


def onnx_metadata(
    D: Discriminator,
    n_patches: int,
    seed: int,
    preprocess: PreprocessConfig | None = None,
    threshold: float | None = None,
    target_fpr: float | None = None,
    score_mode: ScoreMode = "d-only",
    patch_aggregate: str = "mean",
) -> dict[str, str]:
    """The ``metadata_props`` a consumer needs to reproduce inputs and decisions without discopatch."""
    kept = patches_kept(patch_aggregate, n_patches)
    meta = {
        "format": ONNX_FORMAT,
        "format_version": str(ONNX_FORMAT_VERSION),
        "discopatch_version": __version__,
        "n_patches": str(int(n_patches)),
        "seed": str(int(seed)),
        "patch_size": str(D.cfg.patch_size),
        "channels": str(D.cfg.channels),
        "model": json.dumps(to_dict(D.cfg)),
        "input": (
            f"patches float32 (images, {n_patches}, {D.cfg.channels}, {D.cfg.patch_size}, {D.cfg.patch_size}); "
            "pixel values uint8 / 127.5 - 1 (range [-1, 1]); an image's N patches are consecutive"
        ),
        "patch_sampling": (
            "per image: BLAKE2b-64 (little-endian) over str(shape), str(dtype), the uint8 HxW[xC] bytes and the "
            "seed as 8-byte little-endian signed; numpy.random.default_rng(that) draws N rows with integers(0, "
            "H-p+1) then N cols with integers(0, W-p+1) (discopatch.patches.content_corners)"
        ),
        "score_mode": score_mode,
        "score": get_score_mode(score_mode).formula,
        "patch_aggregate": (
            f"{patch_aggregate}: D's score averages 1 - sigmoid(logit) over the {kept} of the image's {n_patches} "
            "patches with the lowest sigmoid(logit)"
        ),
        "stats": "per image, for each layer: channel means then log(variance + eps) of the conv output over the "
        "image's patches (before normalisation)",
        "threshold": "none" if threshold is None or not np.isfinite(threshold) else repr(float(threshold)),
    }
    if preprocess is not None:
        meta["preprocess"] = json.dumps(to_dict(preprocess))
    if target_fpr is not None:
        meta["target_fpr"] = repr(float(target_fpr))
    return meta


def export_onnx_bytes(
    D: Discriminator,
    n_patches: int,
    metadata: dict[str, str] | None = None,
    opset: int = DEFAULT_OPSET,
    stats_model: SavedStatistics | None = None,
    score_mode: ScoreMode = "d-only",
    kept: int | None = None,
) -> bytes:
    """Serialise D as an ONNX model with a dynamic ``images`` axis; ``N`` is fixed by ``n_patches``.

    Uses the TorchScript-based exporter (``dynamo=False``): the ``torch.export`` one needs ``onnxscript``, which
    discopatch does not depend on, and the graph here is static apart from the image axis.
    """
    import onnx

    scorer = OnnxScorer(D, n_patches, stats_model, score_mode, kept).cpu().eval()
    p, c = D.cfg.patch_size, D.cfg.channels
    example = torch.zeros(2, n_patches, c, p, p)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice is not actionable here
        torch.onnx.export(
            scorer,
            (example,),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter (dynamo=False) also writes to a file object
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: {0: "images"}, **{name: {0: "images"} for name in OUTPUT_NAMES}},
            opset_version=opset,
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buf.getvalue())
    fixed = {"logits": int(n_patches), "stats": D.cfg.stats_dim}
    for out in model.graph.output:  # the exporter leaves these widths symbolic; they are fixed by the model
        if out.name in fixed:
            out.type.tensor_type.shape.dim[1].dim_value = fixed[out.name]
    bad = sorted({n.op_type for n in model.graph.node} & {"BatchNormalization", "InstanceNormalization"})
    if bad:  # would mean an exporter rewrote the explicit statistics: refuse rather than ship a leaky graph
        raise RuntimeError(f"exported graph contains {bad}; per-image normalisation was not preserved")
    for k, v in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name = "discopatch"
    model.producer_version = __version__
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def quantize_dynamic_bytes(model: bytes) -> bytes:
    """ONNX Runtime dynamic int8 quantisation (weights int8, activations quantised per call) of a model."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as f:
            f.write(model)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "Gemm", "MatMul"])
        with open(dst, "rb") as f:
            return f.read()
