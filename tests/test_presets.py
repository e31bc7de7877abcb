"""The presets and the geometry guard: D's image score must be able to depend on the image."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from discopatch.budget import official_epoch_steps
from discopatch.config import ModelConfig
from discopatch.data.images import stack_images
from discopatch.detector import Detector
from discopatch.inference.engine import score_array
from discopatch.model import Discriminator
from discopatch.presets import (
    SMALL_LONG_LECAM,
    SMALL_LONG_STEPS,
    SMALL_STEPS,
    get_preset,
    paper_preset,
    small_1x1_preset,
    small_preset,
)
from discopatch.training.trainer import Trainer
from helpers.presets import tiny_preset


def test_1x1_last_map_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"1x1 last map.*ablation='1x1-last-map'"):
        ModelConfig(channels=1, patch_size=16, widths=(16, 32, 64, 128))
    with pytest.raises(ValueError, match="1x1 last map"):
        ModelConfig(channels=1, patch_size=16, widths=(16, 32, 64, 128), norm="batchnorm")
    ok = ModelConfig(channels=1, patch_size=16, widths=(16, 32, 64, 128), ablation="1x1-last-map")
    assert ok.erases_image
    # Norms that do not pool an image's patches, and larger last maps, are not affected.
    for norm in ("groupnorm", "instancenorm", "none"):
        assert not ModelConfig(channels=1, patch_size=16, widths=(16, 32, 64, 128), norm=norm).erases_image
    assert ModelConfig(channels=1, patch_size=16, widths=(16, 32, 64)).final_spatial == 2
    with pytest.raises(ValueError, match="ablation must be one of"):
        ModelConfig(ablation="typo")


def test_a_preset_refuses_parts_that_cannot_work_together() -> None:
    tiny = tiny_preset()  # 32 px images, 16 px patches, gray
    with pytest.raises(ValueError, match="image size 8 is smaller than patch size 16"):
        tiny.replace(preprocess=dataclasses.replace(tiny.preprocess, image_size=8))
    with pytest.raises(ValueError, match=r"preprocessing gives 3 channel\(s\) but the model takes 1"):
        tiny.replace(preprocess=dataclasses.replace(tiny.preprocess, channels=3))
    with pytest.raises(ValueError, match="test_patches must be positive, got 0"):
        tiny.replace(test_patches=0)
    assert tiny.replace(preprocess=dataclasses.replace(tiny.preprocess, image_size=16)).preprocess.image_size == 16
    assert get_preset("small", channels=3).preprocess.channels == 3  # both parts change together


def test_fit_reports_an_impossible_preset_as_a_usage_error_before_reading_images(tmp_path, capsys) -> None:
    from discopatch.cli import main

    args = ["fit", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m"), "--channels", "1", "--image-size", "16"]
    assert main(args) == 2
    assert "image size 16 is smaller than patch size 32" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_presets_end_in_a_map_larger_than_1x1() -> None:
    for p in (small_preset(1), small_preset(3), get_preset("small-photo"), paper_preset()):
        assert p.model.final_spatial >= 2, p.name
        assert p.model.patch_size * 2 <= p.preprocess.image_size, p.name  # patches at most half the image side
        assert p.model.ablation is None
    assert small_preset().model.final_spatial == paper_preset().model.final_spatial == 4
    assert small_1x1_preset().model.ablation == "1x1-last-map"
    assert get_preset("small-1x1", channels=1).model.channels == 1


def test_small_photo_is_small_at_128_px_scored_by_d_alone() -> None:
    """The photo preset changes only what the photos protocol measured (image size, score mode)."""
    small, photo = small_preset(3), get_preset("small-photo")
    assert (photo.preprocess.image_size, photo.score_mode) == (128, "d-only")
    assert photo.model == small.model and photo.train == small.train and photo.test_patches == small.test_patches
    assert photo.model.final_spatial == 4 and photo.preprocess.resize == small.preprocess.resize


@pytest.mark.parametrize("long_name, base_name", [("small-long", "small"), ("small-photo-long", "small-photo")])
@pytest.mark.parametrize("channels", [1, 3])
def test_a_long_preset_is_its_base_trained_three_times_as_long_with_lecam(
    long_name: str, base_name: str, channels: int
) -> None:
    """A long preset changes only what the lever rounds measured: the step budget and LeCam's weight, the same for
    ``small`` (fifth round, fmnist) and ``small-photo`` (photos)."""
    base, long = get_preset(base_name, channels), get_preset(long_name, channels)
    assert (long.train.max_steps, long.train.lecam) == (SMALL_LONG_STEPS, SMALL_LONG_LECAM) == (4150, 0.01)
    assert 3 * SMALL_STEPS <= SMALL_LONG_STEPS < 4 * SMALL_STEPS and base.train.lecam == 0.0
    assert dataclasses.replace(long.train, max_steps=SMALL_STEPS, lecam=0.0) == base.train
    assert long.train == get_preset("small-long", channels).train
    assert (long.model, long.preprocess, long.test_patches, long.score_mode) == (
        base.model,
        base.preprocess,
        base.test_patches,
        base.score_mode,
    )


def test_each_protocol_runs_its_default_preset_as_fit_would() -> None:
    """No silent enlargement: ``small`` on photos is measured at small's 64 px, the photo preset at 128 px."""
    from types import SimpleNamespace

    from discopatch.benchmark.sets import protocol_preset

    photos, fmnist = SimpleNamespace(channels=3, image_size=128), SimpleNamespace(channels=1, image_size=32)
    assert protocol_preset("photos", photos).name == "small-photo"  # type: ignore[arg-type]
    assert protocol_preset("photos", photos).preprocess.image_size == 128  # type: ignore[arg-type]
    assert protocol_preset("photos", photos, "small").preprocess.image_size == 64  # type: ignore[arg-type]
    assert protocol_preset("fmnist", fmnist).name == "small"  # type: ignore[arg-type]
    assert protocol_preset("fmnist", fmnist).preprocess == small_preset(1).preprocess  # type: ignore[arg-type]


def test_small_trains_with_one_image_per_group_and_the_benchmark_keeps_the_other_as_a_variant() -> None:
    from discopatch.benchmark.runner import trained_variants

    assert small_preset().train.grouping == "image"  # as at scoring (docs/BENCHMARKS.md, "Longer training")
    assert paper_preset().train.grouping == "domain"  # the paper's pooled batch
    small_rows = trained_variants(small_preset())
    paper_rows = trained_variants(paper_preset())
    assert [kw for _, kw in small_rows.values() if "grouping" in kw] == [{"grouping": "domain"}]
    assert [kw for _, kw in paper_rows.values() if "grouping" in kw] == [{"grouping": "image"}]


def _distinct_images(preset, n: int = 12) -> np.ndarray:
    rng = np.random.default_rng(0)
    size = preset.preprocess.image_size
    base = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    # Different images in content and global statistics: scaled, shifted, smoothed differently.
    out = []
    for i, im in enumerate(base):
        x = im.astype(np.float64) * (0.3 + 0.05 * i) + 8 * i
        if i % 2:
            x = (x + np.roll(x, 1, 0) + np.roll(x, 1, 1) + np.roll(x, 1, (0, 1))) / 4
        out.append(np.clip(x, 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.mark.parametrize("n_patches", [1, 16])
def test_d_score_depends_on_the_image_at_1_and_16_patches(n_patches: int) -> None:
    torch.manual_seed(0)
    p = small_preset(1)
    D = Discriminator(p.model).eval()
    s = score_array(D, _distinct_images(p), n_patches, seed=0)
    assert np.unique(np.round(s, 12)).size == len(s)  # every image its own score
    # The refused geometry shows why: at one patch per image every image scores the same.
    p1 = small_1x1_preset(1)
    D1 = Discriminator(p1.model).eval()
    s1 = score_array(D1, _distinct_images(p1), 1, seed=0)
    assert np.ptp(s1) < 1e-12


def test_paper_preset_uses_the_official_truncated_epoch() -> None:
    assert official_epoch_steps(1_281_167, 67) == 58  # ImageNet-1K train at 67 images per step
    assert official_epoch_steps(1000, 67) == 1
    p = paper_preset()
    assert p.train.epoch_rule == "official-truncated" and p.train.epochs == 80
    # Steps per epoch only, so a tiny stand-in model keeps the test fast; the rule is the paper preset's.
    tiny = dataclasses.replace(p.train, batch_images=67)
    tr = Trainer(tiny_preset().model, tiny)
    assert tr.steps_per_epoch(1_281_167) == 58
    assert 80 * tr.steps_per_epoch(1_281_167) == 4640
    full = Trainer(tiny_preset().model, dataclasses.replace(tiny, epoch_rule="full"))
    assert full.steps_per_epoch(1_281_167) == 1_281_167 // 67


def test_max_steps_stops_training(fmnist) -> None:
    p = tiny_preset()
    tr = Trainer(p.model, dataclasses.replace(p.train, epochs=100, max_steps=7))
    st = tr.fit(stack_images(fmnist.train_images[:64], p.preprocess), progress=False)
    assert st.step == 7 and st.stop_reason == "7 steps completed"


def test_artefact_from_before_the_guard_loads_as_the_named_ablation(fmnist, tmp_path) -> None:
    model = ModelConfig(channels=1, patch_size=16, widths=(8, 16, 16, 32), latent_dim=16, ablation="1x1-last-map")
    det = Detector(tiny_preset().replace(model=model), device="cpu", seed=0)
    det.fit(fmnist.train_images[:100], epochs=1, progress=False)
    det.save(tmp_path / "m")
    meta_path = tmp_path / "m" / "detector.json"
    meta = json.loads(meta_path.read_text())
    del meta["model"]["ablation"], meta["digest"]  # as written by discopatch 0.1.0
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="loaded as the named ablation"):
        old = Detector.load(tmp_path / "m", device="cpu", allow_legacy=True)
    assert old.preset.model.ablation == "1x1-last-map"
    x = fmnist.test_images[:8]
    np.testing.assert_array_equal(old.score(x), det.score(x))
