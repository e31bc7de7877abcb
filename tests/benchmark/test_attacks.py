"""The attack stage: PGD really lowers the attacked score and respects the L-inf budget on uint8 images."""

from __future__ import annotations

import numpy as np
import torch

from discopatch.benchmark.attacks import _d_score, attack_suite, pgd
from discopatch.data.images import stack_images
from discopatch.inference.engine import score_array
from discopatch.model import Discriminator
from helpers.presets import tiny_preset


def test_pgd_lowers_the_score_within_budget(fmnist) -> None:
    torch.manual_seed(0)
    D = Discriminator(tiny_preset().model).eval().requires_grad_(False)
    imgs = stack_images(fmnist.test_images[:16], tiny_preset().preprocess)
    adv = pgd(lambda x, g: _d_score(D, x, 8, g), imgs, eps=8, steps=5, seed=0)
    assert adv.dtype == np.uint8 and adv.shape == imgs.shape
    assert np.abs(adv.astype(int) - imgs.astype(int)).max() <= 8
    before, after = score_array(D, imgs, 8), score_array(D, adv, 8)
    assert after.mean() < before.mean()


def test_attack_suite_reports_every_budget(trained_detector, fmnist) -> None:
    cfg = trained_detector.preprocess_config
    ref = stack_images(fmnist.test_images[:24], cfg)
    tgt = {"noise": np.clip(ref.astype(int) + 60, 0, 255).astype(np.uint8)}
    res = attack_suite(trained_detector, ref, tgt, ref, eps_values=(2, 4), steps=1)
    row = res["results"]["DisCoPatch (D score)"]["noise"]
    assert set(row) == {"clean", "pgd_eps2", "pgd_eps4", "stats_match_eps4"}
    assert all(0 <= v <= 1 for v in row.values())
    assert res["mitigation_more_patches"]["n_score"] == 4 * trained_detector.n_patches
