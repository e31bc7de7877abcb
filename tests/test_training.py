"""Training: finite losses, the VAE learns, checkpoints resume exactly, budgets stop on time."""

from __future__ import annotations

import numpy as np
import torch

from discopatch.data.images import stack_images
from discopatch.training.trainer import Trainer
from helpers.presets import tiny_preset


def _images(fmnist, n: int = 256) -> np.ndarray:
    return stack_images(fmnist.train_images[:n], tiny_preset().preprocess)


def test_losses_finite_and_reconstruction_error_falls(fmnist) -> None:
    p = tiny_preset(epochs=6, lr=1e-3)
    tr = Trainer(p.model, p.train)
    state = tr.fit(_images(fmnist), progress=False, log_every=1)
    assert state.step == 6 * (256 // 16)
    for row in state.history:
        assert all(np.isfinite(v) for v in row.values())
    first = np.mean([r["mse"] for r in state.history[:5]])
    last = np.mean([r["mse"] for r in state.history[-5:]])
    assert last < 0.7 * first, (first, last)


def test_real_fake_calls_are_separate_groups(fmnist) -> None:
    """Each D call sees one domain: D's first-layer statistics of a real batch differ from a fake batch's."""
    p = tiny_preset()
    tr = Trainer(p.model, p.train)
    real = tr.sample_real(_images(fmnist, 32), np.arange(16), np.random.default_rng(0))
    assert real.shape == (16 * 4, 1, 16, 16)
    calls: list[int] = []
    handle = tr.D.blocks[0].norm.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    tr.train_step(real)
    handle.remove()
    assert calls == [64] * 5  # recon and gen in the VAE step, then real, gen, recon in the D step


def test_image_grouping_option_trains(fmnist) -> None:
    p = tiny_preset(grouping="image", epochs=1)
    state = Trainer(p.model, p.train).fit(_images(fmnist, 64), progress=False)
    assert state.step == 4 and state.finished


def test_resume_continues_exactly(fmnist, tmp_path) -> None:
    imgs = _images(fmnist, 64)
    p = tiny_preset(epochs=4)
    full = Trainer(p.model, p.train)
    full.fit(imgs, progress=False)

    p2 = tiny_preset(epochs=2)
    half = Trainer(p2.model, p2.train)
    half.fit(imgs, checkpoint_dir=tmp_path, progress=False)
    resumed = Trainer.from_checkpoint(tmp_path, train_overrides={"epochs": 4})
    assert resumed.state.step == 8
    resumed.fit(imgs, checkpoint_dir=tmp_path, progress=False)
    assert resumed.state.step == full.state.step == 16
    for a, b in zip(full.D.state_dict().values(), resumed.D.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_time_budget_stops_training(fmnist, tmp_path) -> None:
    p = tiny_preset(epochs=1000, max_time=1.0)
    tr = Trainer(p.model, p.train)
    state = tr.fit(_images(fmnist, 64), checkpoint_dir=tmp_path, progress=False)
    assert "time budget" in state.stop_reason
    assert 0 < state.step < 1000 * 4
    assert (tmp_path / "checkpoint.safetensors").exists()


def test_same_seed_same_weights(fmnist) -> None:
    imgs = _images(fmnist, 64)
    p = tiny_preset(epochs=1)
    a, b = Trainer(p.model, p.train), Trainer(p.model, p.train)
    a.fit(imgs, progress=False)
    b.fit(imgs, progress=False)
    for x, y in zip(a.D.parameters(), b.D.parameters()):
        torch.testing.assert_close(x, y)
