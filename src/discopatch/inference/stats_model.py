"""Statistics-aware scoring: model what the per-image normalisation throws away, then fuse it with D.

D standardises each layer with the image's own patch statistics, so a global change of contrast or brightness
(x -> a x + b) is invisible to D's output: it only survives in the removed per-channel means and variances. This
module keeps them. For each image, the channel mean and log-variance of every conv output over the image's own
patches form a feature vector (computed strictly per image, in the same forward pass as D's logits). On ID training
images the features are standardised and modelled by one Gaussian with a Ledoit-Wolf shrunk covariance; an image's
statistics score is its squared Mahalanobis distance.

Fusion (``score_mode="fused"``): both scores are put on a common scale with robust statistics (median and
inter-quartile range) of the held-out ID validation images, and the image's score is the larger of the two - the
score-space analogue of a min-p rule, so an image is OOD when *either* view finds it unusual. Calibration then runs
on the fused score exactly as on D's score. No statistic of any other test image enters an image's score.

Zero spread is floored, so a detector fitted on a handful of images (or on identical ones) scores finitely and
sanely instead of dividing by almost nothing (a 3-image fit once scored 1.6e11): a feature's scale is at least
:data:`REL_FLOOR` of the features' median spread, and each fusion scale at least :data:`REL_FLOOR` of its score's
median size (plus a tiny absolute floor). On a normally fitted detector neither floor binds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

from ..errors import ConfigError
from ..model import Discriminator
from ..score_modes import get as get_score_mode
from .engine import TorchEngine

#: :class:`StatsModel` field -> its key in statistics.safetensors and among the ONNX graph's buffers. The inverse
#: covariance is saved as ``precision`` (the statistician's word, as sklearn's ``precision_``); the key is part of
#: the artefact format, so only the Python name differs (``precision`` elsewhere means a number format).
SAVED_KEYS = {
    "feat_mean": "feat_mean",
    "feat_scale": "feat_scale",
    "location": "location",
    "inv_cov": "precision",
    "fusion": "fusion",
}
#: Relative floor of a spread (see the module docstring): 1e-3 of the typical size.
REL_FLOOR = 1e-3


def image_statistics(
    D: Discriminator,
    images: np.ndarray,
    n_patches: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """D's scores (float64) and per-image statistics features ``(B, 2 * sum(widths))``, PyTorch fp32, one pass."""
    return TorchEngine(D, n_patches, seed, device).score_with_statistics(images, batch_size)


@dataclass
class StatsModel:
    """Gaussian model of per-image statistics plus the robust scales used to fuse it with D's score."""

    feat_mean: np.ndarray
    feat_scale: np.ndarray
    location: np.ndarray
    inv_cov: np.ndarray  # inverse of the Ledoit-Wolf shrunk covariance (saved as "precision", see SAVED_KEYS)
    fusion: np.ndarray  # [d_median, d_iqr, s_median, s_iqr] on ID validation images

    @classmethod
    def fit(cls, features: np.ndarray) -> StatsModel:
        if len(features) < 2:
            raise ConfigError("the statistics model needs at least two ID images")
        mean, std = features.mean(0), features.std(0)
        scale = np.maximum(std, REL_FLOOR * float(np.median(std))) + 1e-6
        z = (features - mean) / scale
        lw = LedoitWolf(assume_centered=False).fit(z)
        return cls(mean, scale, lw.location_, lw.precision_, np.array([0.0, 1.0, 0.0, 1.0]))

    def mahalanobis(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.feat_mean) / self.feat_scale - self.location
        distances: np.ndarray = np.einsum("ij,jk,ik->i", z, self.inv_cov, z)
        return distances

    def set_fusion(self, d_scores: np.ndarray, s_scores: np.ndarray) -> None:
        """Robust location and scale of both scores on held-out ID images (not the images the model was fitted on)."""

        def robust(x: np.ndarray) -> tuple[float, float]:
            q1, med, q3 = np.percentile(x, [25, 50, 75])
            return float(med), float(max(q3 - q1, REL_FLOOR * abs(med), 1e-9))

        self.fusion = np.array([*robust(d_scores), *robust(s_scores)])

    def fuse(self, d_scores: np.ndarray, s_scores: np.ndarray) -> np.ndarray:
        """The ``fused`` score: the registry's combiner (:mod:`discopatch.score_modes`), written once there."""
        return get_score_mode("fused").combine_numpy(d_scores, s_scores, self.fusion)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors to save, under their saved keys (:data:`SAVED_KEYS`)."""
        return {
            key: torch.from_numpy(np.ascontiguousarray(getattr(self, field), dtype=np.float64))
            for field, key in SAVED_KEYS.items()
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], dim: int) -> StatsModel:
        shapes = {
            "feat_mean": (dim,),
            "feat_scale": (dim,),
            "location": (dim,),
            "inv_cov": (dim, dim),
            "fusion": (4,),
        }
        for field, shape in shapes.items():
            k = SAVED_KEYS[field]
            if k not in tensors or tuple(tensors[k].shape) != shape:
                raise ValueError(f"statistics model: tensor {k!r} missing or not of shape {shape}")
        return cls(**{field: tensors[SAVED_KEYS[field]].double().numpy() for field in shapes})
