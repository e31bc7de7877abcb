"""Per-image baseline OOD detectors that the benchmark runs next to DisCoPatch.

Every baseline consumes the same preprocessed uint8 stacks as DisCoPatch (``(N, S, S)`` or ``(N, S, S, C)``, turned
into [-1, 1] tensors by :func:`discopatch.patches.to_tensor`) and returns float64 scores, higher = more OOD, so one
evaluation path serves all of them. The interface is deliberately small::

    b = DeepSVDD().fit(train_images, max_time=60, seed=0)
    scores = b.score(test_images)

Label-free (``uses_labels=False``):

* :class:`VAEReconstruction`, :class:`VAEElbo` - the adversarial VAE that DisCoPatch trains anyway, on the same
  content-seeded patches D sees;
* :class:`InputComplexityElbo` - the ELBO corrected by PNG complexity (Serrà et al., ICLR 2020);
* :class:`DeepSVDD` - one-class hypersphere (Ruff et al., ICML 2018);
* :class:`NMDStatistics` - per-image channel means of D's conv layers, Gaussian/Mahalanobis (after Dong et al.,
  Neural Mean Discrepancy, arXiv 2104.11408).

Label-based (``uses_labels=True``, report them in their own block): :class:`SmallCNNClassifier` trained once, read
out by four :class:`ClassifierScores` (MSP, Energy, Mahalanobis, KNN).
"""

from __future__ import annotations

from .base import Baseline
from .classifier import (
    CLASSIFIER_SCORES,
    ClassifierScores,
    SmallCNNClassifier,
    energy_score,
    fit_tied_gaussians,
    knn_score,
    l2_normalise,
    mahalanobis_score,
    msp_score,
)
from .feature_stats import NMDStatistics
from .likelihood import InputComplexityElbo, VAEElbo, VAEReconstruction, elbo_sigma, png_bits
from .one_class import DeepSVDD

__all__ = [
    "CLASSIFIER_SCORES",
    "Baseline",
    "ClassifierScores",
    "DeepSVDD",
    "InputComplexityElbo",
    "NMDStatistics",
    "SmallCNNClassifier",
    "VAEElbo",
    "VAEReconstruction",
    "elbo_sigma",
    "energy_score",
    "fit_tied_gaussians",
    "knn_score",
    "l2_normalise",
    "mahalanobis_score",
    "msp_score",
    "png_bits",
]
