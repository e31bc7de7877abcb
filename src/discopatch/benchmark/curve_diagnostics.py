"""What the learning curve measures at one snapshot: the benchmark summary of D's and the fused score, the game.

:func:`game_diagnostics` looks at D and the VAE on held-out ID images (D's outputs, reconstruction error, radial
power spectra, the ID-only selection criterion, the memorisation check); :func:`_score_sets` scores every
benchmark set once and reduces it to :data:`SUMMARY_KEYS`. :mod:`discopatch.benchmark.curve` trains, snapshots
and calls these.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..detector import Detector
from ..errors import ConfigError
from ..inference.engine import scores_from_logits
from ..metrics import ood_metrics
from ..model import VAE, Discriminator
from ..patches import content_corners, extract_patches, to_tensor
from ..score_modes import PATCH_AGGREGATES, patches_kept
from ..score_modes import get as get_score_mode
from .sets import Sets, summarise

#: What each curve point reports per score kind (keys of :func:`discopatch.benchmark.sets.summarise`).
SUMMARY_KEYS = (
    "covariate_mean_auroc",
    "covariate_mean_auroc_sev345",
    "near_mean_auroc",
    "far_mean_auroc",
    "null_auroc",
)


def _top_eighth_minus_median(c: np.ndarray) -> np.ndarray:
    """How far an image's least real eighth of patches stands above its own typical patch."""
    top = np.sort(c, axis=1)[:, -patches_kept("top12", c.shape[1]) :].mean(axis=1)
    gap: np.ndarray = top - np.median(c, axis=1)
    return gap


def _spread(c: np.ndarray) -> np.ndarray:
    """The standard deviation of an image's patch contributions."""
    out: np.ndarray = c.std(axis=1)
    return out


def _mean_plus_gap(c: np.ndarray) -> np.ndarray:
    """The paper's mean plus :func:`_top_eighth_minus_median`: global unreality and a local one together."""
    out: np.ndarray = c.mean(axis=1) + _top_eighth_minus_median(c)
    return out


#: Aggregates that compare an image's patches with each other, from the patch contributions ``1 - sigmoid(logit)``
#: (``(B, N)`` -> ``(B,)``). Measured by ``benchmark --curve --also-aggregate`` only, not a preset option: an object
#: pasted into a photo makes its own patches less real but, through the normalisation statistics the image's patches
#: share, the rest more real, which a contrast might see where a mean or a top share cannot. Measured, it does not
#: (a photo's own patches vary as much) and it costs far-OOD and covariate shift: docs/BENCHMARKS.md, "Levers,
#: seventh round".
RELATIVE_AGGREGATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gap12": _top_eighth_minus_median,
    "spread": _spread,
    "mean+gap12": _mean_plus_gap,
}


def check_aggregations(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` (``--also-aggregate``) if every one is a patch aggregate
    (:data:`discopatch.score_modes.PATCH_AGGREGATES`) or a :data:`RELATIVE_AGGREGATES` entry; a
    :class:`ConfigError` naming the choices otherwise."""
    for name in names:
        if name not in RELATIVE_AGGREGATES and name not in PATCH_AGGREGATES:
            choices = ", ".join([*PATCH_AGGREGATES, *RELATIVE_AGGREGATES])
            raise ConfigError(f"unknown patch aggregate {name!r}; choose one of {choices}")
    return tuple(names)


def aggregate_patch_scores(logits: torch.Tensor, aggregate: str) -> np.ndarray:
    """D's score of each image with its ``(B, N)`` patch logits aggregated as ``aggregate`` (``mean``: the paper's)."""
    if aggregate in RELATIVE_AGGREGATES:
        contributions = 1.0 - torch.sigmoid(logits.double()).numpy()
        return RELATIVE_AGGREGATES[aggregate](contributions)
    return scores_from_logits(logits, patches_kept(aggregate, logits.shape[1]))


def radial_power_spectrum(patches: torch.Tensor, bins: int = 8) -> np.ndarray:
    """Mean power per radial frequency band (DC excluded) of ``(N, C, p, p)`` patches in [-1, 1]."""
    x = patches.float() - patches.float().mean(dim=(2, 3), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2).mean(dim=(0, 1)).cpu().numpy()
    p = power.shape[-1]
    f = np.fft.fftfreq(p)
    radius = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2) / 0.5  # 1.0 = Nyquist along an axis
    edges = np.linspace(0.0, np.sqrt(2.0), bins + 1)
    out = np.zeros(bins)
    for b in range(bins):
        mask = (radius > edges[b]) & (radius <= edges[b + 1])
        out[b] = power[mask].mean() if mask.any() else 0.0
    return out


def _high_share(spectrum: np.ndarray) -> float:
    """Share of the (AC) power above half the band range: how much high frequency a set of patches carries."""
    total = float(spectrum.sum())
    return float(spectrum[len(spectrum) // 2 :].sum() / total) if total > 0 else 0.0


@torch.no_grad()
def game_diagnostics(
    D: Discriminator, vae: VAE, images: np.ndarray, n: int, seed: int, train_images: np.ndarray | None = None
) -> dict[str, Any]:
    """What D and the VAE do on held-out ID images, one normalisation group per image as at scoring time.

    With ``train_images`` (images D trained on) also ``overfit_auroc``: D's score separating the held-out images
    from training images (held-out = positive). 0.5 = D treats both alike; above 0.5 = D finds its own training
    images more "real" than new ID images, i.e. it memorised them.
    """
    D.eval()
    vae.eval()
    p = D.cfg.patch_size
    corners = content_corners(images, p, n, seed)
    real = extract_patches(to_tensor(images), corners, p)
    recon = vae(real)[0].float()
    gen_generator = torch.Generator().manual_seed(seed)
    gen = vae.sample(len(real), generator=gen_generator).float()

    def per_image(x: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(D(x, group_size=n).double()).reshape(-1, n).mean(1).numpy()

    d_real, d_recon, d_gen = per_image(real), per_image(recon), per_image(gen)
    spectra = {k: radial_power_spectrum(v) for k, v in (("real", real), ("recon", recon), ("gen", gen))}
    sep_recon = ood_metrics(1 - d_real, 1 - d_recon)["auroc"]
    sep_gen = ood_metrics(1 - d_real, 1 - d_gen)["auroc"]
    extra: dict[str, float] = {}
    if train_images is not None:
        seen = extract_patches(to_tensor(train_images), content_corners(train_images, p, n, seed), p)
        extra["d_train_per_image"] = float(per_image(seen).mean())
        extra["overfit_auroc"] = ood_metrics(1 - per_image(seen), 1 - d_real)["auroc"]
    return extra | {
        "d_real_per_image": float(d_real.mean()),
        "d_recon_per_image": float(d_recon.mean()),
        "d_gen_per_image": float(d_gen.mean()),
        "recon_mse": float(torch.mean((recon - real.float()) ** 2)),
        "id_separation_recon": sep_recon,
        "id_separation_gen": sep_gen,
        "id_separation": (sep_recon + sep_gen) / 2,
        "spectra": {k: v.tolist() for k, v in spectra.items()},
        "high_freq_share": {k: _high_share(v) for k, v in spectra.items()},
    }


#: Per score kind (``d``, ``fused``) its summary, plus ``stats_spread``: what one snapshot's scores show.
SnapshotScores = dict[str, Any]


def _aggregated_fusion(det: Detector, val: np.ndarray, aggregations: Sequence[str]) -> dict[str, np.ndarray]:
    """Per aggregation, the fused score's scales with D's part re-measured on held-out ID ``val`` images."""
    sm = det.stats_model
    assert sm is not None
    logits, feats = det.scoring_engine().logits_with_statistics(val, det.batch_size)
    s_val = sm.mahalanobis(feats)
    out = {}
    for name in aggregations:
        probe = copy.copy(sm)
        probe.set_fusion(aggregate_patch_scores(logits, name), s_val)
        out[name] = probe.fusion
    return out


def _summary(scores: dict[str, np.ndarray], sets: Sets) -> dict[str, Any]:
    """One score kind's AUROCs against the reference set, reduced to :data:`SUMMARY_KEYS` and the per-set rows."""
    ref = scores.pop("reference")
    rows = {name: ood_metrics(ref, s) for name, s in scores.items()}
    summary = summarise(rows, sets)
    return {k: summary[k] for k in SUMMARY_KEYS} | {
        "per_set_auroc": {k: round(v["auroc"], 4) for k, v in rows.items()},
        "covariate_mean_by_severity": summary["covariate_mean_by_severity"],
    }


def _score_sets(
    det: Detector, sets: Sets, aggregations: Sequence[str] = (), val: np.ndarray | None = None
) -> SnapshotScores:
    """D's own score and the fused score of every set, from one pass per set; with ``aggregations`` (and the
    held-out ``val`` images their fusion scales need) also both scores with D's patches aggregated that way
    (``by_aggregation``, the same pass)."""
    engine = det.scoring_engine()
    sm = det.stats_model
    assert sm is not None
    if aggregations and val is None:
        raise ConfigError("scoring patch aggregates needs held-out ID images for their fusion scales")
    fusions = _aggregated_fusion(det, val, aggregations) if aggregations and val is not None else {}
    named = {"reference": sets.reference, **sets.named()}
    kinds = ["d-only", "fused", *(f"{a}/{k}" for a in aggregations for k in ("d-only", "fused"))]
    out: dict[str, dict[str, np.ndarray]] = {k: {} for k in kinds}
    feats_ref = None
    for name, stack in named.items():
        logits, f = engine.logits_with_statistics(stack, det.batch_size)
        d, s = scores_from_logits(logits, det.patches_kept), sm.mahalanobis(f)
        out["d-only"][name] = d
        out["fused"][name] = sm.fuse(d, s)
        for a in aggregations:
            d_agg = aggregate_patch_scores(logits, a)
            out[f"{a}/d-only"][name] = d_agg
            out[f"{a}/fused"][name] = get_score_mode("fused").combine_numpy(d_agg, s, fusions[a])
        if name == "reference":
            feats_ref = f
    res: SnapshotScores = {kind: _summary(out[kind], sets) for kind in ("d-only", "fused")}
    if aggregations:
        res["by_aggregation"] = {
            a: {k: _summary(out[f"{a}/{k}"], sets) for k in ("d-only", "fused")} for a in aggregations
        }
    assert feats_ref is not None
    res["stats_spread"] = float(np.median(np.std(feats_ref, axis=0)))
    return res


def score_other_test_patches(
    det: Detector, sets: Sets, stats: np.ndarray, val: np.ndarray, counts: Sequence[int]
) -> dict[str, Any]:
    """The same snapshot scored again with each of ``counts`` test patches per image, keyed by the count.

    The number of test patches is an inference-time lever: measuring it on the D that was just scored (paired)
    removes the seed-to-seed training spread from the comparison. The statistics model is refitted per count on
    ``stats`` (fusion scales on ``val``): the per-image statistics change with the patches they average over.
    ``det``'s preset and statistics model are restored afterwards.
    """
    base, base_stats = det.preset, det.stats_model
    out: dict[str, Any] = {}
    try:
        for count in counts:
            det.preset = base.replace(test_patches=int(count))
            det.fit_statistics(stats, val)
            out[str(count)] = _score_sets(det, sets)
    finally:
        det.preset, det.stats_model = base, base_stats
    return out
