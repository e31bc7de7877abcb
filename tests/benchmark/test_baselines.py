"""Baselines and batch drift tests: shapes, float64, determinism, and real behaviour where it is cheap.

Everything runs on tiny, untrained or few-step models so the module stays well under a minute on 2 shared cores.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from discopatch.benchmark.baselines import (
    Baseline,
    ClassifierScores,
    DeepSVDD,
    InputComplexityElbo,
    NMDStatistics,
    SmallCNNClassifier,
    VAEElbo,
    VAEReconstruction,
    elbo_sigma,
    energy_score,
    fit_tied_gaussians,
    knn_score,
    l2_normalise,
    mahalanobis_score,
    msp_score,
    png_bits,
)
from discopatch.benchmark.drift import (
    UntrainedAutoencoderFeatures,
    images_for_power,
    ks_test,
    mean_score_test,
    mmd2_unbiased,
    mmd_test,
)
from discopatch.config import ModelConfig, PreprocessConfig
from discopatch.data.images import stack_images
from discopatch.inference.stats_model import StatsModel, image_statistics
from discopatch.metrics import ood_metrics
from discopatch.model import VAE, Discriminator
from discopatch.patches import content_corners

N_PATCHES = 4
TINY = ModelConfig(channels=1, patch_size=16, widths=(8, 16, 32), latent_dim=16)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from 2 threads, and OpenMP spinning on a busy shared core costs a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(fmnist):
    cfg = PreprocessConfig(image_size=32, channels=1, resize="pad")
    rng = np.random.default_rng(0)
    test = stack_images(fmnist.test_images[:64], cfg)
    return {
        "train": stack_images(fmnist.train_images[:192], cfg),
        "train_labels": fmnist.train_labels[:192],
        "test": test,
        "noise": rng.integers(0, 256, test.shape, dtype=np.uint8),  # heavy noise: uniform random pixels
    }


@pytest.fixture(scope="module")
def nets() -> tuple[VAE, Discriminator]:
    torch.manual_seed(0)
    return VAE(TINY).eval(), Discriminator(TINY).eval()


def auroc(b: Baseline, id_images: np.ndarray, ood_images: np.ndarray) -> float:
    return ood_metrics(b.score(id_images), b.score(ood_images))["auroc"]


def check_scores(s: np.ndarray, n: int) -> None:
    assert s.dtype == np.float64 and s.shape == (n,) and np.isfinite(s).all()


# ------------------------------------------------------------------------------------------------ VAE baselines


@pytest.mark.parametrize("cls", [VAEReconstruction, VAEElbo, InputComplexityElbo])
def test_vae_baselines_shapes_determinism_and_isolation(cls, nets, data) -> None:
    vae, _ = nets
    b = cls(vae, N_PATCHES, seed=3)
    assert b.fit(data["train"]) is b and b.fit_seconds == 0.0 and not b.uses_labels
    s = b.score(data["test"])
    check_scores(s, len(data["test"]))
    np.testing.assert_array_equal(s, b.score(data["test"]))
    # An image's score does not depend on its co-batch (the VAE runs with running BN statistics).
    np.testing.assert_allclose(b.score(data["test"][5:6]), s[5:6], rtol=1e-6)
    assert not np.array_equal(s, cls(vae, N_PATCHES, seed=4).score(data["test"]))  # seed picks the patches


def test_elbo_is_the_training_objective_rescaled(nets, data) -> None:
    """With the default sigma, D * nll - const = (MSE + w_KL KL) / w_KL: the loss the VAE was trained on."""
    vae, _ = nets
    w_kl = 1e-4
    b = VAEElbo(vae, N_PATCHES, w_kl=w_kl)
    dims = 16 * 16
    assert b.sigma == pytest.approx(elbo_sigma(dims, w_kl)) == pytest.approx(math.sqrt(dims * w_kl / 2))
    mse, kl, _ = b.patch_terms(data["test"][:8])
    nll, _ = b.patch_nll(data["test"][:8])
    const = 0.5 * dims * math.log(2 * math.pi * b.sigma**2)
    np.testing.assert_allclose(nll * dims - const, (mse + w_kl * kl) / w_kl, rtol=1e-9)
    assert (kl >= 0).all() and (mse >= 0).all()


def test_input_complexity_subtracts_png_bits(nets, data) -> None:
    vae, _ = nets
    images = data["test"][:6]
    ic = InputComplexityElbo(vae, N_PATCHES, seed=1)
    nll, _ = ic.patch_nll(images)
    corners = content_corners(images, 16, N_PATCHES, 1)
    bits = np.array([[png_bits(im[y : y + 16, x : x + 16]) for y, x in c] for im, c in zip(images, corners)])
    expected = (nll / math.log(2) + math.log2(127.5) - bits / 256).mean(1)
    np.testing.assert_allclose(ic.score(images), expected, rtol=1e-12)
    flat, noisy = np.full((16, 16), 7, np.uint8), data["noise"][0, :16, :16]
    assert png_bits(flat) < png_bits(noisy)  # the complexity estimate orders inputs the right way


# ------------------------------------------------------------------------------------------------ NMD


def test_nmd_statistics(nets, data) -> None:
    _, D = nets
    D.train()  # the baseline must score in eval mode and give the caller's mode back
    b = NMDStatistics(D, N_PATCHES).fit(data["train"])
    assert D.training
    f = b.features(data["test"][:3])
    assert f.shape == (3, sum(TINY.widths)) and f.dtype == np.float64
    s = b.score(data["test"])
    check_scores(s, len(data["test"]))
    np.testing.assert_array_equal(s, b.score(data["test"]))
    np.testing.assert_allclose(b.score(data["test"][7:8]), s[7:8], rtol=1e-9)
    # the Gaussian is the detector's own statistics model, fitted on the means columns of the engine's statistics
    assert isinstance(b.model_, StatsModel) and b.model_.inv_cov.shape == (sum(TINY.widths),) * 2
    _, stats = image_statistics(D, data["test"][:3], N_PATCHES)
    np.testing.assert_array_equal(f, stats[:, [0, 1, 2, 3, 4, 5, 6, 7, *range(16, 32), *range(48, 80)]])
    assert auroc(b, data["test"], data["noise"]) > 0.8


# ------------------------------------------------------------------------------------------------ Deep SVDD


def test_deep_svdd_fits_deterministically_and_flags_noise(data) -> None:
    def make() -> DeepSVDD:
        return DeepSVDD(widths=(8, 16, 32), rep_dim=16, epochs=2, batch_size=64, lr=1e-3)

    a = make().fit(data["train"], seed=0)
    b = make().fit(data["train"], seed=0)
    assert a.steps_ == 6 and len(a.losses_) == 2 and a.fit_seconds > 0
    assert (a.center.abs() >= a.eps).all()
    s = a.score(data["test"])
    check_scores(s, len(data["test"]))
    np.testing.assert_array_equal(s, b.score(data["test"]))
    np.testing.assert_allclose(a.score(data["test"][:1]), s[:1], rtol=1e-6)
    assert auroc(a, data["test"], data["noise"]) > 0.8
    c = DeepSVDD(widths=(8, 16, 32), rep_dim=16, max_steps=1).fit(data["train"], seed=1)
    assert c.steps_ == 1 and not np.allclose(c.score(data["test"]), s)
    timed = DeepSVDD(widths=(8, 16, 32), rep_dim=16, epochs=1000, batch_size=32).fit(data["train"], max_time=0.0)
    assert timed.steps_ == 1  # the time budget is checked after every step


# ------------------------------------------------------------------------------------------------ classifier


def test_classifier_scores_share_one_network(data) -> None:
    def make() -> SmallCNNClassifier:
        return SmallCNNClassifier(width=4, epochs=1, batch_size=64, max_steps=2)

    clf = make()
    scorers = clf.scorers(k=5)
    assert [s.name for s in scorers] == ["cnn_msp", "cnn_energy", "cnn_mahalanobis", "cnn_knn"]
    assert all(s.uses_labels for s in scorers)
    with pytest.raises(ValueError, match="labels"):
        scorers[0].fit(data["train"])
    for s in scorers:
        s.fit(data["train"], data["train_labels"], seed=0)
    assert clf.steps_ == 2 and clf.n_classes == 10  # trained once, by the first fit
    net = clf.net
    scorers[1].fit(data["train"], data["train_labels"])
    assert clf.net is net and clf.steps_ == 2
    logits, feats = clf.logits_and_features(data["test"])
    assert logits.shape == (64, 10) and feats.shape == (64, 16)
    for s in scorers:
        check_scores(s.score(data["test"]), len(data["test"]))
    other = make().fit(data["train"], data["train_labels"], seed=0)
    np.testing.assert_array_equal(other.logits_and_features(data["test"])[0], logits)
    np.testing.assert_allclose(scorers[0].score(data["test"]), msp_score(logits))
    with pytest.raises(ValueError, match="kind"):
        ClassifierScores(clf, "odin")


def test_msp_and_energy_sign_conventions() -> None:
    confident = np.array([[12.0, 0.0, 0.0]])
    flat = np.array([[1.0, 1.0, 1.0]])
    assert msp_score(confident)[0] < msp_score(flat)[0]
    assert msp_score(flat)[0] == pytest.approx(2 / 3)
    assert energy_score(confident)[0] < energy_score(flat)[0]
    assert energy_score(flat)[0] == pytest.approx(-(1 + math.log(3)))
    assert energy_score(flat, temperature=2.0)[0] == pytest.approx(-2 * (0.5 + math.log(3)))


def test_mahalanobis_and_knn_on_gaussian_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    y = np.repeat([0, 1], 1000)
    f = centres[y] + rng.normal(size=(2000, 3))
    means, inv_cov = fit_tied_gaussians(f, y)
    np.testing.assert_allclose(means, centres, atol=0.2)
    np.testing.assert_allclose(inv_cov, np.eye(3), atol=0.15)
    probe = np.array([[5.0, 0.0, 0.0], [2.5, 2.5, 4.0]])
    d = mahalanobis_score(probe, means, inv_cov)
    assert d[0] < 1.0 < 10.0 < d[1]
    bank = l2_normalise(f)
    k = knn_score(probe, bank, k=10)
    assert k[0] < 0.1 < k[1]
    np.testing.assert_allclose(knn_score(f[:1], bank, k=1), [0.0], atol=1e-7)  # its own nearest neighbour


# ------------------------------------------------------------------------------------------------ drift tests


def test_untrained_autoencoder_features(data) -> None:
    uae = UntrainedAutoencoderFeatures(seed=0)
    z = uae(data["test"])
    assert z.shape == (64, 32) and z.dtype == np.float64
    np.testing.assert_array_equal(z, UntrainedAutoencoderFeatures(seed=0).transform(data["test"]))
    assert not np.allclose(z, UntrainedAutoencoderFeatures(seed=1).transform(data["test"]))
    np.testing.assert_allclose(uae(data["test"][3:4]), z[3:4], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="built for"):
        uae(np.zeros((2, 32, 32, 3), np.uint8))
    ref = uae(data["train"][:128])
    assert mmd_test(ref, uae(data["noise"][:10])) < 0.05
    assert mmd_test(ref, z[:32]) > 0.05


def test_mmd_statistic_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(4, 2)) + 1
    z = np.concatenate([x, y])
    k = np.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / 2)
    kxx, kyy, kxy = k[:5, :5], k[5:, 5:], k[:5, 5:]
    direct = (kxx.sum() - np.trace(kxx)) / 20 + (kyy.sum() - np.trace(kyy)) / 12 - 2 * kxy.mean()
    split = torch.tensor([1.0] * 5 + [0.0] * 4)
    assert float(mmd2_unbiased(torch.from_numpy(k), split)[0]) == pytest.approx(direct, rel=1e-12)


def test_mmd_type_one_error_and_power() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(60, 8))
    null_p = [mmd_test(ref, rng.normal(size=(20, 8)), seed=t) for t in range(50)]
    assert np.mean(np.array(null_p) <= 0.05) <= 0.1
    assert stats.kstest(null_p, "uniform").pvalue > 0.001  # roughly uniform under the null
    assert mmd_test(ref, rng.normal(size=(20, 8)) + 1.0) <= 1 / 101 + 1e-12
    assert mmd_test(ref, rng.normal(size=(1, 8)) + 6.0, n_permutations=50) < 0.1  # a single test point works


def test_ks_test_bonferroni() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(100, 5)), rng.normal(size=(40, 5))
    y[:, 2] += 1.0
    per_feature = [stats.ks_2samp(x[:, j], y[:, j]).pvalue for j in range(5)]
    assert ks_test(x, y) == pytest.approx(min(1.0, 5 * min(per_feature)))
    assert ks_test(x, y) < 0.05
    assert ks_test(x[:, 0], x[:30, 0]) == pytest.approx(stats.ks_2samp(x[:, 0], x[:30, 0]).pvalue)
    assert ks_test(x, rng.normal(size=(40, 5))) <= 1.0


def test_mean_score_test() -> None:
    rng = np.random.default_rng(4)
    pool = rng.normal(size=500)
    null_p = np.array([mean_score_test(pool, rng.normal(size=10), seed=t) for t in range(100)])
    assert 0.0 < np.mean(null_p <= 0.05) <= 0.12
    assert mean_score_test(pool, rng.normal(size=10) + 1.5) < 0.01
    assert mean_score_test(pool, rng.normal(size=10) - 1.5) > 0.9  # one-sided: lower scores are not OOD
    assert mean_score_test(pool, rng.normal(size=10) + 1.5, method="mannwhitney") < 0.01
    with pytest.raises(ValueError, match="method"):
        mean_score_test(pool, pool, method="t")


def test_images_for_power_orders_shifts() -> None:
    rng = np.random.default_rng(5)
    ref, id_pool = rng.normal(size=400), rng.normal(size=300)
    strong, weak = rng.normal(size=300) + 2.0, rng.normal(size=300) + 0.4
    kw = {"ns": (1, 2, 5, 10, 20, 50), "n_trials": 60, "seed": 0}
    r_strong = images_for_power(mean_score_test, ref, id_pool, strong, **kw)
    r_weak = images_for_power(mean_score_test, ref, None, weak, **kw)
    assert r_strong["n_for_power"] is not None and r_weak["n_for_power"] is not None
    assert r_strong["n_for_power"] < r_weak["n_for_power"]
    assert r_strong["power"][-1] == 1.0 and r_weak["power"][0] < 0.5
    assert max(r_strong["type1_error"]) <= 0.15 and r_weak["type1_error"] == [None] * 6
    assert images_for_power(mean_score_test, ref, id_pool, strong[:3], ns=(2, 5), n_trials=5)["power"][1] is None
    capped = images_for_power(mmd_test, ref[:, None], None, strong[:, None], ns=(5,), n_trials=5, max_ref=50)
    assert capped["n_ref"] == 50 and capped["power"][0] is not None
