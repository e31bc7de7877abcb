"""The statistics-aware (fused) score: per-image isolation, determinism and a safetensors round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from discopatch.artifact.files import STATS_FILE, ArtifactError
from discopatch.data.images import stack_images
from discopatch.detector import Detector
from discopatch.inference.engine import onnx_available
from discopatch.inference.stats_model import StatsModel, image_statistics
from discopatch.model import Discriminator
from helpers.presets import tiny_preset


@pytest.fixture(scope="module")
def fused(fmnist) -> Detector:
    det = Detector(tiny_preset().replace(score_mode="fused"), device="cpu", seed=0, engine="torch")
    return det.fit(fmnist.train_images[:400], epochs=1, progress=False)


def test_statistics_are_per_image_and_match_a_direct_computation(fmnist) -> None:
    torch.manual_seed(0)
    D = Discriminator(tiny_preset().model).eval()
    imgs = stack_images(fmnist.test_images[:6], tiny_preset().preprocess)
    d_all, f_all = image_statistics(D, imgs, 8, seed=0)
    d_one, f_one = image_statistics(D, imgs[2:3], 8, seed=0)
    np.testing.assert_allclose(f_all[2], f_one[0], atol=1e-5)
    np.testing.assert_allclose(d_all[2], d_one[0], atol=1e-9)
    assert f_all.shape == (6, 2 * sum(tiny_preset().model.widths))


def test_fused_score_is_isolated_and_deterministic(fused: Detector, fmnist) -> None:
    cfg = fused.preprocess_config
    idd = stack_images(fmnist.test_images[:10], cfg)
    noise = np.random.default_rng(0).integers(0, 256, (4, 32, 32), dtype=np.uint8)
    mixed = np.concatenate([idd, noise, 255 - idd[:3]])
    alone = np.array([fused.score_preprocessed(mixed[i : i + 1])[0] for i in range(len(mixed))])
    np.testing.assert_allclose(fused.score_preprocessed(mixed), alone, atol=1e-9)
    perm = np.random.default_rng(1).permutation(len(mixed))
    np.testing.assert_allclose(fused.score_preprocessed(mixed[perm]), alone[perm], atol=1e-9)
    np.testing.assert_array_equal(fused.score_preprocessed(mixed), fused.score_preprocessed(mixed))


def test_statistics_see_a_global_contrast_change(fused: Detector, fmnist) -> None:
    """What per-image normalisation hides: a contrast change moves the statistics score for every image."""
    cfg = fused.preprocess_config
    idd = stack_images(fmnist.test_images[:64], cfg)
    low = (idd.astype(float) * 0.3).astype(np.uint8)
    _, f_id = image_statistics(fused.discriminator, idd, fused.n_patches, fused.seed)
    _, f_low = image_statistics(fused.discriminator, low, fused.n_patches, fused.seed)
    s_id, s_low = fused.stats_model.mahalanobis(f_id), fused.stats_model.mahalanobis(f_low)
    assert np.median(s_low) > np.percentile(s_id, 95)


def test_fused_detector_round_trips(fused: Detector, fmnist, tmp_path) -> None:
    path = fused.save(tmp_path / "m")
    meta = json.loads((path / "detector.json").read_text())
    assert meta["scoring"]["score_mode"] == "fused" and STATS_FILE in meta["files"]
    loaded = Detector.load(path, device="cpu", engine="torch")
    x = fmnist.test_images[:12]
    np.testing.assert_array_equal(loaded.score(x), fused.score(x))
    np.testing.assert_array_equal(loaded.predict(x)["p_values"], fused.predict(x)["p_values"])
    if onnx_available():  # fused scores run on either engine; robust z-scores amplify float32 rounding a little
        np.testing.assert_allclose(Detector.load(path, engine="onnx").score(x), fused.score(x), atol=1e-4)
    (path / STATS_FILE).write_bytes((path / STATS_FILE).read_bytes()[:-3])
    with pytest.raises(ArtifactError, match="checksum"):
        Detector.load(path)


def test_stats_model_tensor_validation() -> None:
    sm = StatsModel.fit(np.random.default_rng(0).normal(size=(50, 6)))
    back = StatsModel.from_tensors(sm.to_tensors(), 6)
    np.testing.assert_array_equal(back.inv_cov, sm.inv_cov)
    with pytest.raises(ValueError, match="precision"):
        StatsModel.from_tensors({**sm.to_tensors(), "precision": torch.zeros(5, 5, dtype=torch.float64)}, 6)


def test_score_mode_flip_is_refused(fused: Detector, tmp_path) -> None:
    """Flipping fused -> d-only used to load silently and unflag images the fused score flags."""
    path = fused.save(tmp_path / "m")
    meta = json.loads((path / "detector.json").read_text())
    meta["scoring"]["score_mode"] = "d-only"
    (path / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"digest mismatch: scoring\.score_mode changed"):
        Detector.load(path)


@pytest.mark.parametrize("key", ["fusion", "precision", "feat_scale"])
def test_non_finite_statistics_are_refused_at_load(fused: Detector, tmp_path, key: str) -> None:
    """A NaN/inf in the statistics model used to load and make every fused score NaN (never flagged)."""
    from safetensors.torch import save_file

    from discopatch.artifact.files import _sha256, config_digest

    path = fused.save(tmp_path / "m")
    tensors = {k: v.clone() for k, v in fused.stats_model.to_tensors().items()}  # to_tensors shares memory
    tensors[key].view(-1)[0] = float("inf") if key == "precision" else float("nan")
    save_file(tensors, str(path / STATS_FILE))
    meta = json.loads((path / "detector.json").read_text())
    meta["files"][STATS_FILE] = _sha256(path / STATS_FILE)
    meta["digest"] = config_digest(meta)  # a consistent artefact apart from the bad value
    (path / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=rf"non-finite value \(NaN or infinity\) in {key}"):
        Detector.load(path)
