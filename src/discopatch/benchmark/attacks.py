"""Adversarial evaluation: can an attacker make shifted or OOD images look in-distribution?

Threat model: white-box (weights, architecture, N and the scoring rule known), L-infinity budget ``eps`` in 8-bit
grey levels (1, 2, 4, 8 / 255), the perturbed image must stay a valid uint8 image. Two attacks:

* **PGD with expectation over transformation (EOT)** (Madry et al. 2018; Athalye et al. 2018): minimise the
  detector's score. Patch positions at inference are seeded by the image's own pixels, so every perturbation moves
  them; the attacker therefore averages the gradient over fresh random patch positions at every step.
* **Statistics matching**: push the image's own per-layer patch statistics (the quantities D's per-image
  normalisation uses) towards their mean over ID training images - the "attack on batch statistics" the seed
  document raises - measured on D's score and on the fused score.

Every attacked image is rounded to uint8 and then scored by the normal, non-differentiable scoring path, so the
reported AUROC is what a deployment would see. Mitigation measured: more patches per image at inference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ..detector import Detector
from ..inference.stats_model import StatsModel
from ..metrics import ood_metrics
from ..model import Discriminator
from ..patches import extract_patches, to_tensor

EPSILONS = (1, 2, 4, 8)

#: A detector's score on a uint8 image stack (higher = more OOD).
ScoreFn = Callable[[np.ndarray], np.ndarray]
#: A differentiable per-image score of ``x`` (in [-1, 1], ``(B, C, S, S)``), drawing its randomness from the generator.
LossFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _random_corners(b: int, n: int, size: int, patch: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, size - patch + 1, (b, n, 2), generator=gen)


def _d_score(D: Discriminator, x: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Differentiable 1 - mean sigmoid D over random patches of each image (x in [-1, 1], (B, C, S, S))."""
    p = D.cfg.patch_size
    patches = extract_patches(x, _random_corners(len(x), n, x.shape[-1], p, gen), p)
    return 1 - torch.sigmoid(D(patches, n).reshape(len(x), n)).mean(1)


def _stats(D: Discriminator, x: torch.Tensor, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    p = D.cfg.patch_size
    patches = extract_patches(x, _random_corners(len(x), n, x.shape[-1], p, gen), p)
    logits, feats = D.forward_with_statistics(patches, n)
    return 1 - torch.sigmoid(logits.reshape(len(x), n)).mean(1), feats


def _fused_score(det: Detector, sm: StatsModel, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    d, f = _stats(det.require_model(), x, det.n_patches, gen)
    t = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in vars(sm).items()}
    z = (f - t["feat_mean"]) / t["feat_scale"] - t["location"]
    s = torch.einsum("ij,jk,ik->i", z, t["inv_cov"], z)
    dm, ds, sm_, ss = t["fusion"]
    return torch.maximum((d - dm) / ds, (s - sm_) / ss)


def pgd(
    loss_fn: LossFn,
    images: np.ndarray,
    eps: int,
    steps: int = 10,
    eot: int = 4,
    seed: int = 0,
) -> np.ndarray:
    """L-inf PGD on uint8 images minimising ``loss_fn(x, index)``; returns rounded uint8 adversarial images."""
    gen = torch.Generator().manual_seed(seed)
    x0 = to_tensor(images)
    delta = torch.zeros_like(x0)
    e = 2.0 * eps / 255.0  # grey levels -> the [-1, 1] model range
    step = 2.5 * e / max(steps, 1)
    for _ in range(steps):
        delta.requires_grad_(True)
        x = (x0 + delta).clamp(-1, 1)
        loss = sum((loss_fn(x, gen).sum() for _ in range(eot)), x.new_zeros(())) / eot
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = (delta - step * grad.sign()).clamp(-e, e)
    x = ((x0 + delta).clamp(-1, 1) + 1) * 127.5
    out = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out[..., 0] if images.ndim == 3 else out


def attack_suite(
    det: Detector,
    reference: np.ndarray,
    targets: dict[str, np.ndarray],
    id_train: np.ndarray,
    eps_values: tuple[int, ...] = EPSILONS,
    steps: int = 10,
    seed: int = 0,
    extra: Mapping[str, tuple[ScoreFn, LossFn]] | None = None,
) -> dict[str, Any]:
    """AUROC of reference vs each target set, clean and under each attack and budget.

    ``extra`` adds other detectors as ``name -> (score_fn on uint8 stacks, differentiable loss(x, gen))``.
    """
    D = det.discriminator
    assert D is not None
    D.eval()
    for p in D.parameters():
        p.requires_grad_(False)
    n = det.n_patches
    with torch.no_grad():
        _, f_id = _stats(D, to_tensor(id_train), n, torch.Generator().manual_seed(seed))
        target_stats = f_id.mean(0)

    detectors: dict[str, tuple[ScoreFn, LossFn]] = {
        "DisCoPatch (D score)": (
            lambda x: _d_only(det, x),
            lambda x, g: _d_score(D, x, n, g),
        ),
    }
    sm = det.stats_model
    if sm is not None:
        detectors["DisCoPatch fused"] = (det.score_preprocessed, lambda x, g: _fused_score(det, sm, x, g))
    detectors.update(extra or {})

    def stats_loss(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return ((_stats(D, x, n, g)[1] - target_stats) ** 2).mean(1)

    out: dict[str, Any] = {"eps": list(eps_values), "steps": steps, "eot": 4, "results": {}}
    for name, (score_fn, loss) in detectors.items():
        ref = score_fn(reference)
        res: dict[str, Any] = {}
        for tname, imgs in targets.items():
            row = {"clean": ood_metrics(ref, score_fn(imgs))["auroc"]}
            for eps in eps_values:
                adv = pgd(loss, imgs, eps, steps=steps, seed=seed)
                row[f"pgd_eps{eps}"] = ood_metrics(ref, score_fn(adv))["auroc"]
            if name.startswith("DisCoPatch"):
                adv = pgd(stats_loss, imgs, max(eps_values), steps=steps, seed=seed)
                row[f"stats_match_eps{max(eps_values)}"] = ood_metrics(ref, score_fn(adv))["auroc"]
            res[tname] = row
        out["results"][name] = res
    out["mitigation_more_patches"] = _more_patches(det, reference, targets, eps_values, steps, seed)
    return out


def _more_patches(
    det: Detector,
    reference: np.ndarray,
    targets: dict[str, np.ndarray],
    eps_values: tuple[int, ...],
    steps: int,
    seed: int,
) -> dict[str, Any]:
    """A mitigation: PGD images made against D's score with N patches, scored with 4N patches (more positions the
    attacker did not optimise for)."""
    D, n = det.require_model(), det.n_patches
    more = Detector(
        det.preset.replace(test_patches=4 * n, score_mode="d-only"), device="cpu", seed=det.seed, engine="torch"
    )
    more.discriminator = D
    mit: dict[str, Any] = {}
    ref4 = more.score_preprocessed(reference)
    for tname, imgs in targets.items():
        row = {"clean": ood_metrics(ref4, more.score_preprocessed(imgs))["auroc"]}
        for eps in eps_values:
            adv = pgd(lambda x, g: _d_score(D, x, n, g), imgs, eps, steps=steps, seed=seed)
            row[f"pgd_eps{eps}"] = ood_metrics(ref4, more.score_preprocessed(adv))["auroc"]
        mit[tname] = row
    return {"n_attack": n, "n_score": 4 * n, "results": mit}


def _d_only(det: Detector, x: np.ndarray) -> np.ndarray:
    from ..inference.engine import score_array

    return score_array(det.require_model(), x, det.n_patches, det.seed, "cpu")


def run_attack_benchmark(
    protocol: str = "fmnist",
    model: str | None = None,
    train_time: float = 300.0,
    n_images: int = 200,
    steps: int = 10,
    eps_values: tuple[int, ...] = EPSILONS,
    seed: int = 0,
    quick: bool = False,
    allow_legacy: bool = False,
) -> dict[str, Any]:
    """Train (or load) a fused detector and a Deep SVDD baseline on the protocol's ID data, then attack both.

    A trained detector gets the preset's step budget as ``fit`` does, with ``train_time`` seconds as a cap (a cap that
    stops it early warns); ``allow_legacy`` loads a ``model`` saved without a configuration digest."""
    import time

    from ..data.corruptions import corrupt_batch
    from ..data.images import stack_images
    from .baselines import DeepSVDD
    from .datasets import load_protocol
    from .sets import protocol_preset

    t0 = time.monotonic()
    data = load_protocol(protocol, quick=quick, seed=seed, n_test=2 * n_images, n_ood=n_images)
    preset = protocol_preset(protocol, data).replace(score_mode="fused")
    if model:
        det = Detector.load(model, device="cpu", engine="torch", allow_legacy=allow_legacy)
    else:
        det = Detector(preset, device="cpu", seed=seed, engine="torch")
        det.fit(data.id_train, max_time=train_time, progress=False)
    cfg = det.preprocess_config
    test = stack_images(data.id_test, cfg)
    reference, target = test[:n_images], test[n_images : 2 * n_images]
    targets = {
        f"{c}/5": stack_images(corrupt_batch(target, c, 5, seed=seed), cfg)
        for c in ("gaussian_noise", "defocus_blur", "contrast")
    }
    for group in (data.near_ood, data.far_ood):
        if group:
            k = next(iter(group))
            targets[k] = stack_images(group[k][:n_images], cfg)
    train_stack = stack_images(data.id_train[:2000], cfg)
    svdd = DeepSVDD().fit(train_stack, max_time=min(train_time, 120.0), seed=seed)
    net, center = svdd.net, svdd.center
    assert net is not None and center is not None
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    extra = {"Deep SVDD": (svdd.score, lambda x, g: ((net(x) - center) ** 2).sum(1))}
    res = attack_suite(det, reference, targets, train_stack[:1000], eps_values, steps, seed, extra)
    res.update(
        {
            "protocol": protocol,
            "n_images": n_images,
            "seconds": round(time.monotonic() - t0, 1),
            "training": det.training_info.get("steps"),
        }
    )
    return res


def format_attack_table(res: dict[str, Any]) -> str:
    cols = ["clean"] + [f"pgd_eps{e}" for e in res["eps"]] + [f"stats_match_eps{max(res['eps'])}"]
    lines = ["| detector | set | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, sets in res["results"].items():
        for tname, row in sets.items():
            lines.append(
                f"| {name} | {tname} | " + " | ".join(f"{100 * row[c]:.1f}" if c in row else "-" for c in cols) + " |"
            )
    mit = res["mitigation_more_patches"]
    for tname, row in mit["results"].items():
        lines.append(
            f"| D score, attacked at N={mit['n_attack']}, scored at N={mit['n_score']} | {tname} | "
            + " | ".join(f"{100 * row[c]:.1f}" if c in row else "-" for c in cols)
            + " |"
        )
    return "\n".join(lines)
