"""Feature-statistics baseline: Neural-Mean-Discrepancy-style channel statistics of D (after Dong et al.)."""

from __future__ import annotations

import time

import numpy as np
import torch

from ...inference.stats_model import StatsModel, image_statistics
from ...model import Discriminator
from .base import Baseline, _check_stack, _device_of


class NMDStatistics(Baseline):
    """Channel means of D's conv layers per image, modelled as a Gaussian on ID: Mahalanobis distance.

    After Dong et al., "Neural Mean Discrepancy for Efficient Out-of-Distribution Detection" (arXiv 2104.11408,
    CVPR 2022): an input's per-channel activation means, compared with the ID average, separate ID from OOD. Here the
    network is DisCoPatch's discriminator D (trained on ID, eval mode) run on the image's own content-seeded
    patches with its per-image grouping, exactly as in scoring; the feature vector is, for every conv layer, the
    channel means of the conv output *before* normalisation over the image's patches and positions - the very
    statistics that the per-image normalisation removes before D's head. We chose patches, not the whole image,
    because D's filters and statistics are those of patches. Instead of NMD's small trained classifier (which needs
    OOD examples) the vectors get a label-free Gaussian: standardised per feature with ID mean/std (subtracting the
    ID mean is NMD's "discrepancy"), Ledoit-Wolf shrunk covariance, squared Mahalanobis distance as score.
    Fitted on ID training images only.

    What is shared with the detector's statistics score (:mod:`discopatch.inference.stats_model`), and what is not:

    * the features come from the same pass: :func:`~discopatch.inference.stats_model.image_statistics` (the scoring
      engine's per-image layer statistics, the channel means from the normalisation itself, float32); this baseline
      keeps only the means, because NMD is a *mean* discrepancy - the detector's model also uses each channel's
      log-variance, so the benchmark's "per-image statistics only" row is this baseline plus variances (and fitted
      on the training split rather than on every ID training image);
    * the Gaussian is :class:`~discopatch.inference.stats_model.StatsModel` itself (standardise, Ledoit-Wolf, squared
      Mahalanobis distance); its fusion with D's score is not used here - the baseline scores the statistics alone.
    """

    name = "nmd"

    def __init__(self, D: Discriminator, n_patches: int, seed: int = 0, batch_size: int = 256) -> None:
        self.D = D
        self.n_patches = int(n_patches)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.model_: StatsModel | None = None
        widths = D.cfg.disc_widths
        starts = np.cumsum([0, *widths[:-1]]) * 2  # each layer's [means | log-variances] block in the statistics
        self._mean_columns = np.concatenate([np.arange(s, s + w) for s, w in zip(starts, widths, strict=True)])

    @torch.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        """Per-image channel means of every conv output, concatenated over layers: ``(N, sum(widths))`` float64."""
        images = _check_stack(images)
        _, stats = image_statistics(self.D, images, self.n_patches, self.seed, _device_of(self.D), self.batch_size)
        return stats[:, self._mean_columns]

    def fit(
        self, images: np.ndarray, labels: np.ndarray | None = None, *, max_time: float | None = None, seed: int = 0
    ) -> NMDStatistics:
        """Estimate the ID Gaussian of the statistics (no training; ``max_time``/``seed``/labels unused)."""
        t0 = time.monotonic()
        f = self.features(images)
        if len(f) < 2:
            raise ValueError("NMDStatistics needs at least 2 ID images")
        self.model_ = StatsModel.fit(f)
        self.fit_seconds = time.monotonic() - t0
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            raise RuntimeError("NMDStatistics is not fitted")
        return self.model_.mahalanobis(self.features(images))
