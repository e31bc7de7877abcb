"""The optional levers of the adversarial game: off by default, and each doing what its option says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from discopatch.config import ModelConfig, TrainConfig
from discopatch.training.levers import LR_FLOOR, N_VIEWS, LeCamAverages, draw_views, lr_factor, view
from discopatch.training.trainer import Trainer

MODEL = ModelConfig(channels=1, patch_size=16, widths=(8, 16), latent_dim=8)


def _train(steps: int = 3, **levers: object) -> Trainer:
    cfg = TrainConfig(
        epochs=None, max_steps=steps, batch_images=4, train_patches=2, grouping="image", val_fraction=0.0, **levers
    )
    trainer = Trainer(MODEL, cfg, device="cpu")
    images = np.random.default_rng(0).integers(0, 256, size=(16, 32, 32, 1), dtype=np.uint8)
    trainer.fit(images, progress=False)
    return trainer


def _losses(trainer: Trainer) -> list[dict[str, float]]:
    """The logged losses of every step (without the wall time)."""
    return [{k: v for k, v in row.items() if k != "time"} for row in trainer.state.history]


def test_every_view_of_a_group_is_one_flip_or_rotation_shared_by_its_patches() -> None:
    patches = torch.arange(12 * 2 * 4 * 4, dtype=torch.float32).reshape(12, 2, 4, 4)
    codes = torch.tensor([0, 1, 2, 3, 4, 7])
    out = view(patches, codes)
    for g, code in enumerate(codes.tolist()):
        for k in range(2):
            src, got = patches[2 * g + k], out[2 * g + k]
            expected = torch.rot90(src.flip(-1) if code >= 4 else src, code % 4, dims=(-2, -1))
            assert torch.equal(got, expected)
            # positions move, values do not: no photometric change
            assert torch.equal(got.flatten().sort().values, src.flatten().sort().values)
    assert torch.equal(out[:2], patches[:2])  # code 0 leaves a group as it is


def test_views_are_drawn_uniformly_and_reproducibly() -> None:
    a = draw_views(4000, torch.Generator().manual_seed(1))
    b = draw_views(4000, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    counts = torch.bincount(a, minlength=N_VIEWS)
    assert counts.min() > 400 and counts.max() < 600


def test_lecam_penalty_pulls_real_and_fake_logits_towards_each_others_average() -> None:
    avg = LeCamAverages()
    real, fake = torch.full((8,), 3.0), torch.full((8,), -2.0)
    assert float(avg.penalty(real, fake)) == 0.0  # nothing to pull towards before the first step
    avg.update(real, fake)
    assert (avg.real, avg.fake) == (3.0, -2.0)
    assert float(avg.penalty(real, fake)) == pytest.approx(25.0 + 25.0)
    avg.update(torch.full((8,), 4.0), fake)
    assert avg.real == pytest.approx(3.01)


def test_the_levers_are_off_by_default_and_defaults_train_exactly_as_before() -> None:
    cfg = TrainConfig()
    assert (cfg.lr_d, cfg.d_steps, cfg.lecam, cfg.augment, cfg.lr_decay) == (None, 1, 0.0, "none", None)
    assert (cfg.d_prior_weight, cfg.d_recon_weight) == (0.5, 0.5)  # the paper's D loss
    plain = _train()
    paper_weights = {"d_prior_weight": 0.5, "d_recon_weight": 0.5}
    explicit = _train(lr_d=TrainConfig().lr, d_steps=1, lecam=0.0, augment="none", lr_decay=None, **paper_weights)
    assert _losses(plain) == _losses(explicit)
    assert all(torch.equal(a, b) for a, b in zip(plain.D.parameters(), explicit.D.parameters()))


LEVERS = [{"augment": "geometric"}, {"lecam": 0.3}, {"d_steps": 2}, {"lr_d": 3e-4}, {"lr_decay": 2}]
LEVERS += [{"d_prior_weight": 0.0}, {"d_recon_weight": 0.0}]


@pytest.mark.parametrize("levers", LEVERS, ids=str)
def test_each_lever_changes_training_and_keeps_it_finite(levers: dict[str, object]) -> None:
    plain, changed = _train(), _train(**levers)
    weights = [(a, b) for a, b in zip(plain.D.parameters(), changed.D.parameters())]
    assert any(not torch.equal(a, b) for a, b in weights)
    assert all(torch.isfinite(b).all() for _, b in weights)
    assert all(np.isfinite(v) for row in changed.state.history for v in row.values())


def test_d_steps_and_lr_d_reach_the_optimiser() -> None:
    trainer = _train(steps=3, d_steps=2, lr_d=2e-4)
    d_step = max(float(s["step"]) for s in trainer.opt_d.state.values())
    g_step = max(float(s["step"]) for s in trainer.opt_g.state.values())
    assert (d_step, g_step) == (6.0, 3.0)
    assert trainer.opt_d.param_groups[0]["lr"] == 2e-4 and trainer.opt_g.param_groups[0]["lr"] == TrainConfig().lr


def test_lr_decay_is_a_half_cosine_to_the_floor_held_afterwards() -> None:
    assert lr_factor(0, None) == lr_factor(10**6, None) == 1.0
    assert lr_factor(0, 100) == 1.0
    assert lr_factor(50, 100) == pytest.approx((1 + LR_FLOOR) / 2)
    assert lr_factor(100, 100) == lr_factor(400, 100) == pytest.approx(LR_FLOOR)
    falling = [lr_factor(s, 100) for s in range(0, 101, 10)]
    assert falling == sorted(falling, reverse=True)


def test_lr_decay_sets_both_optimisers_from_the_step() -> None:
    trainer = _train(steps=3, lr_decay=2, lr_d=2e-4)
    # the last of 3 steps ran with 2 steps done: at the floor for both, each from its own starting rate
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(TrainConfig().lr * LR_FLOOR)
    assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(2e-4 * LR_FLOOR)


def test_lecam_penalty_is_logged_beside_the_d_loss_it_is_part_of() -> None:
    """With LeCam, ``loss_d`` is the paper's loss plus ``lecam * lecam_penalty``; the penalty is logged on its own."""
    rows = _losses(_train(steps=3, lecam=0.5))
    assert rows[0]["lecam_penalty"] == 0.0  # no averages before the first update
    assert all(r["lecam_penalty"] > 0.0 for r in rows[1:])
    assert "lecam_penalty" not in _losses(_train(steps=1))[0]


def test_lecam_averages_and_d_learning_rate_survive_a_checkpoint(tmp_path) -> None:
    trainer = _train(steps=2, lecam=0.5, lr_d=2e-4)
    assert trainer.lecam.real is not None
    trainer.save_checkpoint(tmp_path)
    restored = Trainer.from_checkpoint(tmp_path, device="cpu")
    assert (restored.lecam.real, restored.lecam.fake) == (trainer.lecam.real, trainer.lecam.fake)
    assert restored.opt_d.param_groups[0]["lr"] == 2e-4


BAD_LEVERS = [{"lr_d": 0.0}, {"d_steps": 0}, {"lecam": -1.0}, {"augment": "blur"}, {"lr_decay": 0}]
BAD_LEVERS += [{"d_prior_weight": -0.1}, {"d_recon_weight": 1.5}, {"d_prior_weight": 0.0, "d_recon_weight": 0.0}]


@pytest.mark.parametrize("bad", BAD_LEVERS, ids=str)
def test_invalid_lever_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**bad)  # type: ignore[arg-type]


#: ``fit`` options of a two-layer model on 32 px images that trains in seconds.
TINY_FIT = ["--widths", "8,16", "--latent-dim", "8", "--batch-images", "8", "--train-patches", "2", "--image-size"]
TINY_FIT += ["32", "--patch-size", "16", "--resize", "pad", "--max-steps", "2", "--quiet", "--device", "cpu"]


def _fit(tmp_path, images: np.ndarray, *options: str) -> Path:
    """``discopatch fit`` on a folder of ``images`` as PNG files, with :data:`TINY_FIT` and ``options``."""
    from PIL import Image

    from discopatch.cli import main

    folder, model = tmp_path / "train", tmp_path / "model"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    assert main(["fit", str(folder), "--out", str(model), *TINY_FIT, *options]) == 0
    return model


def test_fit_takes_the_levers_and_records_them_in_the_detector(tmp_path, fmnist) -> None:
    import json

    levers = ["--augment", "geometric", "--lecam", "0.2", "--d-steps", "2", "--lr-d", "1e-4", "--lr-decay", "5"]
    _fit(tmp_path, fmnist.train_images[:240], *levers, "--d-prior-weight", "0.1", "--d-recon-weight", "0.3")
    train = json.loads((tmp_path / "model" / "detector.json").read_text())["training"]["train_config"]
    keys = ("augment", "lecam", "d_steps", "lr_d", "lr_decay", "d_prior_weight", "d_recon_weight")
    got = tuple(train[k] for k in keys)
    assert got == ("geometric", 0.2, 2, 1e-4, 5, 0.1, 0.3)


def test_d_widths_must_match_the_vae_layer_count() -> None:
    with pytest.raises(ValueError, match="one per layer"):
        ModelConfig(channels=1, patch_size=16, widths=(8, 16), latent_dim=8, d_widths=(16,))
    assert MODEL.disc_widths == MODEL.widths  # default: D as wide as the VAE, as in the paper


def test_the_statistics_feature_length_follows_ds_own_widths() -> None:
    """``stats_dim`` (the artefact's statistics, the ONNX output) is what D returns: a mean and a log-variance per
    channel of D's layers, not the VAE's."""
    from discopatch.model import Discriminator

    cfg = ModelConfig(channels=1, patch_size=16, widths=(8, 16), latent_dim=8, d_widths=(12, 20))
    _, stats = Discriminator(cfg).forward_with_statistics(torch.rand(8, 1, 16, 16), group_size=4)
    assert stats.shape == (2, cfg.stats_dim) and cfg.stats_dim == 2 * (12 + 20)


def test_a_wider_d_trains_saves_loads_and_exports_with_its_own_widths(tmp_path, fmnist) -> None:
    """``--d-widths`` widens D alone: the VAE keeps ``--widths``, and the artefact, its statistics and the ONNX
    graph all follow D's widths."""
    import json

    from discopatch.cli import main
    from discopatch.detector import Detector

    model = _fit(tmp_path, fmnist.train_images[:240], "--d-widths", "16,32", "--score", "fused")
    assert json.loads((model / "detector.json").read_text())["model"]["d_widths"] == [16, 32]
    det = Detector.load(model)
    convs = [m for m in det.require_model().modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32]
    scores = det.score(fmnist.test_images[:6])
    assert np.isfinite(scores).all()
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", str(model), "--format", "onnx", "--out", str(out), "--check", "--check-limit", "16"]) == 0


@pytest.mark.parametrize("weight", ["d_prior_weight", "d_recon_weight"])
def test_a_zero_negative_weight_takes_that_term_out_of_ds_loss_only(weight: str) -> None:
    """With weight 0, D's loss loses one negative term (its logged value says so), while the VAE is still pushed to
    make those patches look real (``loss_g`` as with the paper's weights on the first step)."""
    zero, paper = _losses(_train(steps=1, **{weight: 0.0})), _losses(_train(steps=1))
    assert zero[0]["loss_g"] == paper[0]["loss_g"]  # the VAE step runs before D's and does not depend on the weight
    assert (zero[0]["d_gen"], zero[0]["d_recon"]) == (paper[0]["d_gen"], paper[0]["d_recon"])  # same logits
    assert zero[0]["loss_d"] < paper[0]["loss_d"]
