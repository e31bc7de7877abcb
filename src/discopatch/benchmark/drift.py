"""Batch-level shift tests and the "images needed for 80 % power" measurement.

A per-image detector decides from one image; a two-sample test decides from a batch of n. To put both on one axis
(as in Rabanser et al., cited below) every method is turned into a batch test returning a p-value, and
:func:`images_for_power` measures, for each n, how often the test rejects at ``alpha`` on shifted batches (power)
and on held-out ID batches (type-I error), and the smallest n reaching the target power.

* Drift tests after Rabanser, Günnemann & Lipton, "Failing Loudly: An Empirical Study of Methods for Detecting
  Dataset Shift", NeurIPS 2019: features from an untrained (random, seeded) convolutional encoder
  (:class:`UntrainedAutoencoderFeatures`, their "UAE"; the same idea as alibi-detect's UAE preprocessing), then
  :func:`mmd_test` (multivariate kernel test) or :func:`ks_test` (univariate KS per feature, Bonferroni).
* :func:`mean_score_test` turns any per-image score (DisCoPatch's included) into a batch test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from ..patches import to_tensor
from ..runtime import derive_seed

__all__ = [
    "DEFAULT_NS",
    "UntrainedAutoencoderFeatures",
    "images_for_power",
    "ks_test",
    "mean_score_test",
    "mmd2_unbiased",
    "mmd_test",
]

#: Batch sizes at which :func:`images_for_power` measures power by default.
DEFAULT_NS: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200)


class UntrainedAutoencoderFeatures:
    """A randomly initialised (seeded, never trained) conv encoder mapping images to ``latent_dim`` features.

    Rabanser et al. (2019) found that even an *untrained* autoencoder's encoder is a useful dimensionality reduction
    before a two-sample test: random conv features preserve enough of the input statistics, cost no training and
    cannot overfit the reference set. Layout: per width a 4x4 stride-2 conv (padding 1) + ReLU, then a linear map to
    ``latent_dim`` (default 32, as in the paper's and alibi-detect's CIFAR-10 examples). PyTorch's default
    initialisation under ``seed``; built on the first call, when the image size and channels are known.
    """

    def __init__(
        self,
        latent_dim: int = 32,
        widths: tuple[int, ...] = (64, 128, 512),
        seed: int = 0,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
    ) -> None:
        self.latent_dim = int(latent_dim)
        self.widths = tuple(int(w) for w in widths)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.net: nn.Module | None = None
        self._shape: tuple[int, int] | None = None

    def _build(self, channels: int, size: int) -> nn.Module:
        side = size // 2 ** len(self.widths)
        if side < 1:
            raise ValueError(f"image size {size} is too small for {len(self.widths)} stride-2 layers")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "uae"))  # the layers initialise their weights on construction
            layers: list[nn.Module] = []
            for a, b in zip((channels, *self.widths[:-1]), self.widths):
                layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.ReLU()]
            layers += [nn.Flatten(), nn.Linear(self.widths[-1] * side * side, self.latent_dim)]
            net = nn.Sequential(*layers)
        return net.to(self.device).eval()

    @torch.no_grad()
    def transform(self, images: np.ndarray) -> np.ndarray:
        """Features ``(N, latent_dim)`` float64 of a preprocessed uint8 stack ``(N, S, S[, C])``."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"expected a uint8 stack (N, S, S) or (N, S, S, C); got {images.dtype} {images.shape}")
        shape = (1 if images.ndim == 3 else int(images.shape[3]), int(images.shape[1]))
        if self.net is None:
            self.net, self._shape = self._build(*shape), shape
        elif shape != self._shape:
            raise ValueError(f"encoder was built for (channels, size) {self._shape}, got {shape}")
        out = np.empty((len(images), self.latent_dim), np.float64)
        for i in range(0, len(images), self.batch_size):
            chunk = images[i : i + self.batch_size]
            out[i : i + len(chunk)] = self.net(to_tensor(chunk).to(self.device)).double().cpu().numpy()
        return out

    __call__ = transform


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(-1, 1) if x.ndim == 1 else x.reshape(len(x), -1)


def mmd2_unbiased(kernel: torch.Tensor, in_x: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 (Gretton et al., "A Kernel Two-Sample Test", JMLR 2012) for one or many splits of a pool.

    ``kernel`` is the pooled ``(N, N)`` Gram matrix; ``in_x`` is ``(P, N)`` (or ``(N,)``) with 1 where a point
    belongs to X and 0 where it belongs to Y. Diagonal terms are excluded from the within-sample sums. With a single
    Y point the within-Y term is undefined and left out (the permutation test stays valid: it only needs a
    statistic that is a function of the split).
    """
    a = in_x.to(kernel.dtype).reshape(-1, kernel.shape[0])
    b = 1.0 - a
    n, m = a[0].sum(), b[0].sum()
    k0 = kernel - torch.diag(torch.diagonal(kernel))
    ak, bk = a @ k0, b @ k0
    sxx, syy, sxy = (ak * a).sum(1), (bk * b).sum(1), (ak * b).sum(1)
    stat = sxx / (n * (n - 1)) - 2 * sxy / (n * m)
    if m > 1:
        stat = stat + syy / (m * (m - 1))
    return stat


def mmd_test(
    x_ref: np.ndarray, x_test: np.ndarray, n_permutations: int = 100, seed: int = 0, sigma: float | None = None
) -> float:
    """Permutation p-value of the unbiased MMD^2 with a Gaussian kernel (Gretton et al., JMLR 2012).

    ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))``; ``sigma`` defaults to the median heuristic, the median pairwise
    Euclidean distance in the pooled sample. The pooled Gram matrix is built once and all ``n_permutations``
    random re-splits are evaluated in one matrix product. ``p = (1 + #{perm >= observed}) / (1 + n_permutations)``,
    so the smallest possible p-value is ``1 / (1 + n_permutations)``. Cost O(P N^2): cap the reference set
    (``images_for_power(max_ref=...)``) for large ones.
    """
    x, y = _as_2d(x_ref), _as_2d(x_test)
    n, m = len(x), len(y)
    if n < 2 or m < 1:
        raise ValueError(f"mmd_test needs >= 2 reference and >= 1 test samples, got {n} and {m}")
    z = torch.from_numpy(np.concatenate([x, y]))
    d2 = torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    if sigma is None:
        iu = torch.triu_indices(n + m, n + m, 1)
        s2 = float(d2[iu[0], iu[1]].median())
        s2 = s2 if s2 > 0 else 1.0
    else:
        s2 = float(sigma) ** 2
    kernel = torch.exp(-d2 / (2 * s2))
    rng = np.random.default_rng(seed)
    splits = np.zeros((n_permutations + 1, n + m), np.float64)
    splits[0, :n] = 1.0
    for i in range(1, n_permutations + 1):
        splits[i, rng.permutation(n + m)[:n]] = 1.0
    stat = mmd2_unbiased(kernel, torch.from_numpy(splits)).numpy()
    return float((1 + np.sum(stat[1:] >= stat[0])) / (1 + n_permutations))


def ks_test(x_ref: np.ndarray, x_test: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov test per feature (scipy ``ks_2samp``), Bonferroni-combined: ``min(1, d min p)``.

    Rabanser et al. (2019) pair this with UAE features; the Bonferroni correction keeps the family-wise type-I error
    at most ``alpha`` whatever the dependence between features (conservative when they are correlated).
    """
    x, y = _as_2d(x_ref), _as_2d(x_test)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    p = np.atleast_1d(stats.ks_2samp(x, y, axis=0).pvalue)
    return float(min(1.0, p.size * float(p.min())))


def mean_score_test(
    ref_scores: np.ndarray,
    test_scores: np.ndarray,
    *,
    method: str = "resample",
    n_resamples: int = 2000,
    seed: int = 0,
) -> float:
    """One-sided batch test built from a per-image detector: are the test images' scores higher than ID ones?

    ``method="resample"`` (default): the statistic is the mean score of the n test images; its null distribution is
    the mean of n scores drawn i.i.d. (with replacement) from ``ref_scores``, an ID null pool that must be disjoint
    from the test images (e.g. calibration/validation scores), by ``n_resamples`` Monte Carlo draws;
    ``p = (1 + #{null >= observed}) / (1 + n_resamples)``. ``method="mannwhitney"``: one-sided Mann-Whitney U test
    (scipy, test > reference), rank-based, so insensitive to the score scale but blind to how far the scores moved.
    """
    ref = np.asarray(ref_scores, dtype=np.float64).ravel()
    test = np.asarray(test_scores, dtype=np.float64).ravel()
    if len(ref) < 1 or len(test) < 1:
        raise ValueError("mean_score_test needs reference and test scores")
    if method == "mannwhitney":
        return float(stats.mannwhitneyu(test, ref, alternative="greater").pvalue)
    if method != "resample":
        raise ValueError(f"method must be 'resample' or 'mannwhitney', got {method!r}")
    rng = np.random.default_rng(seed)
    null = ref[rng.integers(0, len(ref), size=(n_resamples, len(test)))].mean(1)
    return float((1 + np.sum(null >= test.mean())) / (1 + n_resamples))


def images_for_power(
    test_fn: Callable[[np.ndarray, np.ndarray], float],
    ref: np.ndarray,
    id_pool: np.ndarray | None,
    shifted_pool: np.ndarray,
    ns: Sequence[int] = DEFAULT_NS,
    n_trials: int = 100,
    alpha: float = 0.05,
    target_power: float = 0.8,
    seed: int = 0,
    max_ref: int | None = None,
) -> dict[str, Any]:
    """Power and type-I error of a batch test per batch size n, and the smallest n reaching ``target_power``.

    ``test_fn(ref, batch) -> p_value``. For each n and each of ``n_trials`` trials a batch of n items is drawn
    without replacement from ``shifted_pool`` (power: share of p <= alpha) and from ``id_pool`` (type-I error;
    skipped when ``id_pool`` is None, e.g. to compute it once per method rather than per shift). ``ref`` (features
    or ID null scores) must be disjoint from both pools; with ``max_ref`` each trial uses a fresh random subset of
    that many reference items (what keeps MMD affordable: 200 reference items and 100 permutations cost a few ms).
    n larger than a pool gives None. Returns JSON-ready lists aligned with ``ns``.
    """
    t0 = time.monotonic()
    rng = np.random.default_rng(seed)
    ref = np.asarray(ref)
    shifted_pool = np.asarray(shifted_pool)
    id_pool = None if id_pool is None else np.asarray(id_pool)

    def draw(pool: np.ndarray, n: int) -> np.ndarray:
        return pool[rng.choice(len(pool), size=n, replace=False)]

    def reference() -> np.ndarray:
        return draw(ref, max_ref) if max_ref is not None and len(ref) > max_ref else ref

    def rejection_rate(pool: np.ndarray | None, n: int) -> float | None:
        if pool is None or n > len(pool):
            return None
        hits = sum(test_fn(reference(), draw(pool, n)) <= alpha for _ in range(n_trials))
        return hits / n_trials

    ns = [int(n) for n in ns]
    power = [rejection_rate(shifted_pool, n) for n in ns]
    type1 = [rejection_rate(id_pool, n) for n in ns]
    reached = [n for n, p in zip(ns, power) if p is not None and p >= target_power]
    return {
        "ns": ns,
        "power": power,
        "type1_error": type1,
        "n_for_power": min(reached) if reached else None,
        "alpha": alpha,
        "target_power": target_power,
        "n_trials": n_trials,
        "n_ref": int(min(len(ref), max_ref) if max_ref is not None else len(ref)),
        "seed": seed,
        "seconds": time.monotonic() - t0,
    }
