"""Feature-statistics baseline: Neural-Mean-Discrepancy-style channel statistics of D (after Dong et al.)."""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

from ...model import Discriminator
from .base import Baseline, _check_stack, _chunks, _device_of, _eval_mode, _image_patches


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
    ID mean is NMD's "discrepancy"), Ledoit-Wolf shrunk covariance (sklearn), squared Mahalanobis distance as score.
    Fitted on ID training images only.
    """

    name = "nmd"

    def __init__(self, D: Discriminator, n_patches: int, seed: int = 0, batch_size: int = 256) -> None:
        self.D = D
        self.n_patches = int(n_patches)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        self.inv_cov_: np.ndarray | None = None
        self.shrinkage_: float | None = None

    @torch.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        """Per-image channel means of every conv output, concatenated over layers: ``(N, sum(widths))`` float64."""
        images = _check_stack(images)
        n = self.n_patches
        device = _device_of(self.D)
        out = np.empty((len(images), sum(self.D.cfg.widths)), np.float64)
        captured: list[torch.Tensor] = []
        hooks = [blk.conv.register_forward_hook(lambda _m, _i, o: captured.append(o)) for blk in self.D.blocks]
        try:
            with _eval_mode(self.D):
                for sl in _chunks(len(images), self.batch_size):
                    captured.clear()
                    x, _ = _image_patches(images[sl], self.D.cfg.patch_size, n, self.seed, device)
                    self.D.features(x, n)
                    b = sl.stop - sl.start
                    means = [o.double().reshape(b, n, o.shape[1], -1).mean(dim=(1, 3)) for o in captured]
                    out[sl] = torch.cat(means, 1).cpu().numpy()
        finally:
            for h in hooks:
                h.remove()
        return out

    def fit(
        self, images: np.ndarray, labels: np.ndarray | None = None, *, max_time: float | None = None, seed: int = 0
    ) -> NMDStatistics:
        """Estimate the ID Gaussian of the statistics (no training; ``max_time``/``seed``/labels unused)."""
        t0 = time.monotonic()
        f = self.features(images)
        if len(f) < 2:
            raise ValueError("NMDStatistics needs at least 2 ID images")
        self.mean_ = f.mean(0)
        self.std_ = f.std(0) + 1e-12
        lw = LedoitWolf().fit((f - self.mean_) / self.std_)
        self.inv_cov_ = lw.precision_
        self.shrinkage_ = float(lw.shrinkage_)
        self.fit_seconds = time.monotonic() - t0
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        if self.inv_cov_ is None:
            raise RuntimeError("NMDStatistics is not fitted")
        z = (self.features(images) - self.mean_) / self.std_
        return np.einsum("ij,jk,ik->i", z, self.inv_cov_, z)
