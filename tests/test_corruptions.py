"""Tests for discopatch.data.corruptions: contracts (shape, dtype, determinism, errors) and behaviour."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from discopatch.benchmark import report, sets
from discopatch.benchmark.datasets import ProtocolData
from discopatch.data.corruptions import (
    CORRUPTION_FAMILIES,
    CORRUPTIONS,
    PARAM_FIELDS,
    PARAMS,
    corrupt,
    corrupt_batch,
    resolve_params,
)
from discopatch.data.corruptions import kernels as cmod
from discopatch.data.corruptions import tables as cmod_tables
from discopatch.data.corruptions.functions import _FUNCS
from helpers.presets import tiny_preset

STOCHASTIC = {
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "snow",
    "frost",
    "fog",
    "elastic_transform",
}
DETERMINISTIC = set(CORRUPTIONS) - STOCHASTIC


def synthetic(n: int, h: int, w: int, rgb: bool, seed: int = 0) -> np.ndarray:
    """Smooth shading + a disc + a dark rectangle (sharp edges); channels differ for RGB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        r = rng.uniform(0.15, 0.35) * min(h, w)
        f = rng.uniform(1, 4)
        base = 0.35 + 0.25 * np.sin(f * xx / w * np.pi + rng.uniform(0, 6)) * np.cos(f * yy / h * np.pi)
        base = base + rng.uniform(0.2, 0.4) * ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)
        x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
        base[y0 : y0 + h // 4, x0 : x0 + w // 3] -= 0.3
        img = np.clip(base, 0, 1)
        if rgb:
            img = np.stack([img, np.clip(img * rng.uniform(0.6, 1.2), 0, 1), 1 - img], axis=-1)
        out.append(np.rint(img * 255).astype(np.uint8))
    return np.stack(out)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# ---------------------------------------------------------------------------------------------------
# Tables and constants
# ---------------------------------------------------------------------------------------------------


def test_names_families_and_tables_are_complete() -> None:
    # the fifteen of Hendrycks & Dietterich (2019) come first, in their order
    assert CORRUPTIONS[0] == "gaussian_noise" and CORRUPTIONS[14] == "jpeg_compression"
    assert_tables_complete(cmod_tables.CORRUPTIONS)


def assert_tables_complete(names: tuple[str, ...]) -> None:
    """What the CONTRIBUTING.md recipe "Add a corruption" asks for: one name, in every table and the registry."""
    assert len(set(names)) == len(names)
    assert set(_FUNCS) == set(names)
    assert set(CORRUPTION_FAMILIES) == set(names)
    assert set(CORRUPTION_FAMILIES.values()) == {"noise", "blur", "weather", "digital"}
    assert set(PARAM_FIELDS) == set(names)
    for table in ("cifar", "imagenet"):
        assert set(PARAMS[table]) == set(names)
        for name, per_severity in PARAMS[table].items():
            assert len(per_severity) == 5, (table, name)
            for p in per_severity:
                n_fields = len(p) if isinstance(p, tuple) else 1
                assert n_fields == len(PARAM_FIELDS[name]), (table, name)


def test_tables_hold_reference_values() -> None:
    # Spot checks against make_cifar_c.py / make_imagenet_c.py.
    assert PARAMS["cifar"]["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert PARAMS["imagenet"]["gaussian_noise"] == (0.08, 0.12, 0.18, 0.26, 0.38)
    assert PARAMS["cifar"]["jpeg_compression"] == (80, 65, 58, 50, 40)
    assert PARAMS["imagenet"]["jpeg_compression"] == (25, 18, 15, 10, 7)
    assert PARAMS["cifar"]["contrast"][-1] == 0.15 and PARAMS["imagenet"]["contrast"][-1] == 0.05


def test_auto_params_by_short_side() -> None:
    assert resolve_params("auto", 32, 32) == "cifar"
    assert resolve_params("auto", 64, 300) == "cifar"
    assert resolve_params("auto", 65, 65) == "imagenet"
    assert resolve_params("auto", 128, 128) == "imagenet"
    assert resolve_params("imagenet", 32, 32) == "imagenet"


# ---------------------------------------------------------------------------------------------------
# Shape, dtype, determinism
# ---------------------------------------------------------------------------------------------------

SHAPES = [(32, 32), (32, 32, 3), (28, 28), (64, 48), (48, 64, 3), (8, 8), (8, 13, 3)]


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shape_and_dtype_preserved(name: str) -> None:
    for shape in SHAPES:
        img = synthetic(1, shape[0], shape[1], len(shape) == 3)[0]
        assert img.shape == shape
        for severity in (1, 5):
            out = corrupt(img, name, severity, rng=np.random.default_rng(1))
            assert out.shape == img.shape and out.dtype == np.uint8, (shape, severity)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_imagenet_table_on_128px(name: str) -> None:
    img = synthetic(1, 128, 128, True)[0]
    out = corrupt(img, name, 5)
    assert out.shape == img.shape and out.dtype == np.uint8
    gray = synthetic(1, 96, 130, False)[0]
    out = corrupt(gray, name, 3, params="imagenet")
    assert out.shape == gray.shape and out.dtype == np.uint8


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_deterministic_given_rng(name: str) -> None:
    img = synthetic(1, 32, 32, True, seed=3)[0]
    a = corrupt(img, name, 4, rng=np.random.default_rng(7))
    b = corrupt(img, name, 4, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(corrupt(img, name, 4), corrupt(img, name, 4))  # default rng is seed 0
    c = corrupt(img, name, 4, rng=np.random.default_rng(8))
    if name in STOCHASTIC:
        assert not np.array_equal(a, c)
    else:
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("name", ["gaussian_noise", "glass_blur", "frost", "jpeg_compression"])
def test_batch_is_chunking_invariant(name: str) -> None:
    imgs = synthetic(6, 32, 32, False, seed=5)
    whole = corrupt_batch(imgs, name, 3, seed=11)
    assert whole.shape == imgs.shape and whole.dtype == np.uint8
    chunks = np.concatenate(
        [corrupt_batch(imgs[:2], name, 3, seed=11), corrupt_batch(imgs[2:], name, 3, seed=11, start=2)]
    )
    np.testing.assert_array_equal(whole, chunks)
    single = corrupt(imgs[4], name, 3, rng=np.random.default_rng([11, 4]))
    np.testing.assert_array_equal(whole[4], single)
    if name in STOCHASTIC:
        assert not np.array_equal(whole, corrupt_batch(imgs, name, 3, seed=12))


def test_batch_rgb() -> None:
    imgs = synthetic(3, 40, 36, True)
    out = corrupt_batch(imgs, "snow", 2)
    assert out.shape == imgs.shape and out.dtype == np.uint8


# ---------------------------------------------------------------------------------------------------
# Behaviour
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_5_changes_the_image(name: str) -> None:
    for rgb in (False, True):
        imgs = synthetic(4, 32, 32, rgb, seed=2)
        assert mad(corrupt_batch(imgs, name, 5), imgs) > 1.0, rgb
    imgs = synthetic(2, 128, 128, True, seed=2)
    assert mad(corrupt_batch(imgs, name, 5), imgs) > 1.0


# Families whose mean absolute change strictly rises with severity under both reference tables.
MONOTONE = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "zoom_blur",
    "contrast",
    "brightness",
    "jpeg_compression",
]


@pytest.mark.parametrize(("size", "n"), [(32, 20), (128, 6)])
@pytest.mark.parametrize("name", MONOTONE)
def test_severity_monotone_on_average(name: str, size: int, n: int) -> None:
    imgs = synthetic(n, size, size, False, seed=4)
    d = [mad(corrupt_batch(imgs, name, s), imgs) for s in range(1, 6)]
    assert all(b > a for a, b in itertools.pairwise(d)), d


@pytest.mark.parametrize(("size", "n"), [(32, 20), (128, 6)])
def test_pixelate_rises_every_other_severity(size: int, n: int) -> None:
    # Adjacent factors (e.g. CIFAR 0.9 vs 0.85 = 28 vs 27 px) alias differently, so neighbouring
    # severities can swap on some images; severities 1 < 3 < 5 are clearly ordered.
    imgs = synthetic(n, size, size, False, seed=4)
    d = [mad(corrupt_batch(imgs, "pixelate", s), imgs) for s in range(1, 6)]
    assert d[0] < d[2] < d[4] and d[4] == max(d), d


def test_motion_blur_non_decreasing() -> None:
    # CIFAR severities 3 and 4 differ only in a radius that the sigma-2 kernel never reaches.
    imgs = synthetic(20, 32, 32, False, seed=4)
    d = [mad(corrupt_batch(imgs, "motion_blur", s), imgs) for s in range(1, 6)]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(d)) and d[4] > d[0], d


def test_gaussian_noise_strength_gray_and_rgb() -> None:
    flat = np.full((64, 64, 3), 128, np.uint8)
    std = float(corrupt(flat, "gaussian_noise", 3).astype(np.float64).std())
    assert std == pytest.approx(0.08 * 255, rel=0.06)
    std_gray = float(corrupt(flat[..., 0], "gaussian_noise", 3).astype(np.float64).std())
    assert std_gray == pytest.approx(0.08 * 255 / np.sqrt(3), rel=0.08)  # channel mean of 3 draws


def test_gray_input_stays_consistent_with_rgb_path() -> None:
    gray = synthetic(1, 32, 32, False)[0]
    for name in DETERMINISTIC:
        g = corrupt(gray, name, 3).astype(np.int16)
        rgb = corrupt(np.repeat(gray[..., None], 3, axis=2), name, 3).astype(np.int16)
        assert np.abs(g - rgb.mean(axis=2)).max() <= 1.0, name


def test_contrast_and_brightness_semantics() -> None:
    const = np.full((16, 16, 3), 90, np.uint8)
    np.testing.assert_array_equal(corrupt(const, "contrast", 5), const)
    black = np.zeros((16, 16), np.uint8)
    assert np.all(corrupt(black, "brightness", 5) == round(0.3 * 255))
    img = synthetic(1, 32, 32, True)[0]
    assert corrupt(img, "contrast", 5).std() < img.std()


def test_glass_permutation_is_a_permutation() -> None:
    perm = cmod._glass_permutation(20, 17, 2, 3, np.random.default_rng(0))
    assert sorted(perm.tolist()) == list(range(20 * 17))
    assert not np.array_equal(perm, np.arange(20 * 17))


def test_procedural_frost_texture() -> None:
    tex = cmod._frost_texture(48, 40, np.random.default_rng(0))
    assert tex.shape == (48, 40, 3) and tex.min() >= 0.0 and tex.max() <= 1.0
    assert 0.3 < tex.mean() < 0.75 and tex.std() > 0.05
    assert tex[..., 2].mean() > tex[..., 0].mean()  # bluish tint
    np.testing.assert_array_equal(tex, cmod._frost_texture(48, 40, np.random.default_rng(0)))


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------


def test_errors_name_and_severity() -> None:
    img = synthetic(1, 32, 32, False)[0]
    with pytest.raises(ValueError, match="gaussian_noise"):
        corrupt(img, "speckle_noise", 1)
    for bad in (0, 6, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="severity"):
            corrupt(img, "fog", bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="params"):
        corrupt(img, "fog", 1, params="mnist")
    with pytest.raises(ValueError, match="severity"):
        corrupt_batch(img[None], "fog", 9)


def test_errors_dtype_shape_size() -> None:
    img = synthetic(1, 32, 32, True)[0]
    with pytest.raises(ValueError, match="uint8"):
        corrupt(img.astype(np.float32), "fog", 1)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(img.tolist(), "fog", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        corrupt(np.zeros((32, 32, 4), np.uint8), "fog", 1)
    with pytest.raises(ValueError, match="shape"):
        corrupt(np.zeros((2, 32, 32, 3), np.uint8), "fog", 1)
    with pytest.raises(ValueError, match="at least 8"):
        corrupt(np.zeros((7, 32), np.uint8), "fog", 1)
    with pytest.raises(ValueError, match="uint8"):
        corrupt_batch(np.zeros((2, 32, 32), np.int64), "fog", 1)
    with pytest.raises(ValueError, match="shape"):
        corrupt_batch(np.zeros((32, 32), np.uint8), "fog", 1)
    with pytest.raises(ValueError, match="at least 8"):
        corrupt_batch(np.zeros((2, 6, 6, 3), np.uint8), "fog", 1)
    with pytest.raises(ValueError, match="seed"):
        corrupt_batch(np.zeros((2, 8, 8), np.uint8), "fog", 1, seed=-1)


# ---------------------------------------------------------------------------------------------------
# The CONTRIBUTING.md recipe "Add a corruption"
# ---------------------------------------------------------------------------------------------------


def _solarize(x: np.ndarray, threshold: float, rng: np.random.Generator, s: float) -> np.ndarray:
    """The recipe's example: invert every value above ``threshold`` (a classic digital corruption)."""
    out: np.ndarray = np.where(x > threshold, 1.0 - x, x)
    return out


@pytest.fixture
def solarize(monkeypatch) -> str:
    """The recipe's edits, made for one test: the name appended to ``CORRUPTIONS`` (in every module that imported
    the tuple, as editing tables.py would; the modules under test are imported above, before it), a family, one
    parameter per severity in both tables, the function."""
    import sys

    name, extended = "solarize", (*CORRUPTIONS, "solarize")
    for module in list(sys.modules.values()):
        ours = module is not None and module.__name__.startswith("discopatch")
        if ours and getattr(module, "CORRUPTIONS", None) is CORRUPTIONS:
            monkeypatch.setattr(module, "CORRUPTIONS", extended)
    monkeypatch.setitem(CORRUPTION_FAMILIES, name, "digital")
    monkeypatch.setitem(PARAM_FIELDS, name, ("threshold",))
    for table in PARAMS.values():
        monkeypatch.setitem(table, name, (0.9, 0.8, 0.7, 0.6, 0.5))
    monkeypatch.setitem(_FUNCS, name, _solarize)
    return name


def test_an_added_corruption_joins_the_grid_and_every_count(solarize: str) -> None:
    assert_tables_complete(cmod_tables.CORRUPTIONS)
    images = synthetic(2, 32, 32, rgb=False)
    out = corrupt_batch(images, solarize, 5)
    assert out.shape == images.shape and not np.array_equal(out, images)
    data = ProtocolData("t", 1, 32, "pad", images, None, np.concatenate([images, images]), None)
    built = sets.build_sets(data, tiny_preset(), seed=0, progress=False)
    assert {c for c, _ in built.covariate} == set(cmod_tables.CORRUPTIONS) and (solarize, 5) in built.covariate
    rows = {k: {"auroc": 0.5, "fpr95_ood_positive": 0.9} for k in built.named()}
    summary = sets.summarise(rows, built)
    assert len(summary["covariate_auroc"]) == len(CORRUPTIONS) + 1
    assert f"| {solarize} |" in report.grid_table(summary)
    assert f"over the {len(CORRUPTIONS) + 1} corruptions" in report.patch_sweep_lines([])[0]
