"""Tests for the built-in data sources: shipped demo assets, the IDX parser, the Debian Fashion-MNIST
loader and the restricted unpickler used for Animal-MNIST."""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from discopatch.data import builtin
from discopatch.data.builtin import (
    DemoSplit,
    RestrictedNumpyUnpickler,
    load_animal_mnist,
    load_demo_animal_mnist,
    load_demo_fashion_mnist,
    load_fashion_mnist,
    read_idx,
    restricted_numpy_loads,
    write_idx,
)
from discopatch.data.host import host_path

DEBIAN_ROOT = host_path(builtin.DEFAULT_FASHION_MNIST_ROOT)
HAVE_DEBIAN = all((DEBIAN_ROOT / n).is_file() for pair in builtin._FASHION_FILES.values() for n in pair)


def _assert_mnist_like(images: np.ndarray, labels: np.ndarray, n: int, per_class: int) -> None:
    assert images.shape == (n, 28, 28)
    assert images.dtype == np.uint8
    assert labels.shape == (n,)
    assert labels.dtype == np.uint8
    assert images.min() == 0 and images.max() == 255
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, per_class))
    # Bright object on a dark background: the one-pixel frame is nearly black, the centre is bright.
    frame = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    assert frame.mean() < 20
    assert images[:, 10:18, 10:18].mean() > 100


# ----------------------------------------------------------------------------------------------------
# Demo assets
# ----------------------------------------------------------------------------------------------------


def test_demo_fashion_mnist_shapes_and_balance() -> None:
    split = load_demo_fashion_mnist()
    assert isinstance(split, DemoSplit)
    _assert_mnist_like(split.train_images, split.train_labels, 4000, 400)
    _assert_mnist_like(split.test_images, split.test_labels, 2000, 200)
    # Classes come interleaved rather than in blocks, so a prefix is roughly balanced too.
    assert len(np.unique(split.train_labels[:50])) == 10
    # No exact duplicates inside or across the splits.
    flat = np.concatenate([split.train_images, split.test_images]).reshape(6000, -1)
    assert len(np.unique(flat, axis=0)) == 6000


def test_demo_split_is_frozen() -> None:
    split = load_demo_fashion_mnist()
    with pytest.raises(dataclasses.FrozenInstanceError):
        split.train_images = split.test_images  # type: ignore[misc]


def test_demo_loads_return_fresh_writable_arrays() -> None:
    first = load_demo_animal_mnist()
    pristine = first.copy()
    first += 1  # writable, and changing it must not leak into later calls
    np.testing.assert_array_equal(load_demo_animal_mnist(), pristine)


def test_demo_animal_mnist_shapes_and_balance() -> None:
    images = load_demo_animal_mnist()
    assert images.shape == (1000, 28, 28) and images.dtype == np.uint8
    images, labels = builtin._load_demo_animal_mnist_with_labels()
    _assert_mnist_like(images, labels, 1000, 100)
    assert len(np.unique(images.reshape(1000, -1), axis=0)) == 1000


# ----------------------------------------------------------------------------------------------------
# IDX parser
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", "<i4", "f4", "f8"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, dtype: str, suffix: str) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = tmp_path / f"x.idx{suffix}"
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype).newbyteorder("=")
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    back[0, 0, 0] = 1  # the result is writable


def test_idx_reads_hand_written_file(tmp_path: Path) -> None:
    # Written byte by byte, independently of write_idx: magic 0x00000803, dims 2x2x3, big-endian.
    pixels = bytes(range(12))
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">4B3I", 0, 0, 0x08, 3, 2, 2, 3) + pixels))
    np.testing.assert_array_equal(read_idx(path), np.arange(12, dtype=np.uint8).reshape(2, 2, 3))
    ints = tmp_path / "ints-idx1"
    ints.write_bytes(struct.pack(">4BI", 0, 0, 0x0C, 1, 2) + struct.pack(">2i", -7, 70000))
    np.testing.assert_array_equal(read_idx(ints), [-7, 70000])


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (struct.pack(">4BI", 0x1F, 0x00, 0x08, 1, 1) + b"\x00", "bad IDX magic"),
        (struct.pack(">4BI", 0x00, 0x01, 0x08, 1, 1) + b"\x00", "bad IDX magic"),
        (struct.pack(">4BI", 0, 0, 0x0A, 1, 1) + b"\x00", "unknown IDX type code"),
        (struct.pack(">4B", 0, 0, 0x08, 0), "zero dimensions"),
        (struct.pack(">4BI", 0, 0, 0x08, 2, 3), "truncated IDX header"),
        (struct.pack(">4BI", 0, 0, 0x08, 1, 4) + b"\x00" * 3, "payload is 3 bytes"),
        (struct.pack(">4BI", 0, 0, 0x08, 1, 4) + b"\x00" * 5, "payload is 5 bytes"),
        (struct.pack(">4BI", 0, 0, 0x0B, 1, 2) + b"\x00" * 2, "needs 4"),
        (b"\x00\x00", "not an IDX file"),
    ],
)
def test_idx_rejects_bad_files(tmp_path: Path, blob: bytes, message: str) -> None:
    for name, data in (("plain", blob), ("zipped.gz", gzip.compress(blob))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=message):
            read_idx(path)


def test_write_idx_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be stored in IDX"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.uint16))
    with pytest.raises(ValueError, match="dimensions"):
        write_idx(tmp_path / "x", np.uint8(3))


# ----------------------------------------------------------------------------------------------------
# Fashion-MNIST loader
# ----------------------------------------------------------------------------------------------------


def _fake_fashion_root(root: Path, n_train: int = 20, n_test: int = 10) -> None:
    rng = np.random.default_rng(1)
    for split, n in (("train", n_train), ("test", n_test)):
        image_name, label_name = builtin._FASHION_FILES[split]
        write_idx(root / image_name, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / label_name, (np.arange(n) % 10).astype(np.uint8))


def test_load_fashion_mnist_from_tiny_fixture(tmp_path: Path) -> None:
    _fake_fashion_root(tmp_path)
    images, labels = load_fashion_mnist(tmp_path, split="train")
    assert images.shape == (20, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.arange(20) % 10)
    images, labels = load_fashion_mnist(str(tmp_path), split="test")
    assert images.shape == (10, 28, 28) and labels.shape == (10,)


def test_load_fashion_mnist_env_var_and_explicit_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_root, explicit_root = tmp_path / "env", tmp_path / "explicit"
    env_root.mkdir()
    explicit_root.mkdir()
    _fake_fashion_root(env_root, n_train=30)
    _fake_fashion_root(explicit_root, n_train=40)
    monkeypatch.setenv(builtin.FASHION_MNIST_ENV_VAR, str(env_root))
    assert len(load_fashion_mnist()[0]) == 30
    assert len(load_fashion_mnist(explicit_root)[0]) == 40


def test_load_fashion_mnist_missing_files_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(builtin.FASHION_MNIST_ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist()


def test_load_fashion_mnist_validates_content(tmp_path: Path) -> None:
    _fake_fashion_root(tmp_path)
    image_name, label_name = builtin._FASHION_FILES["train"]
    write_idx(tmp_path / label_name, np.arange(19, dtype=np.uint8) % 10)
    with pytest.raises(ValueError, match=r"20 images .* 19 labels"):
        load_fashion_mnist(tmp_path)
    write_idx(tmp_path / label_name, np.full(20, 10, dtype=np.uint8))
    with pytest.raises(ValueError, match="out of range"):
        load_fashion_mnist(tmp_path)
    write_idx(tmp_path / image_name, np.zeros((20, 32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist(tmp_path, split="val")  # type: ignore[arg-type]


def test_load_fashion_mnist_debian() -> None:
    if not HAVE_DEBIAN:
        pytest.skip(f"Debian dataset-fashion-mnist not installed at {DEBIAN_ROOT}")
    demo = load_demo_fashion_mnist()
    index = builtin._load_asset(builtin._FASHION_DEMO_ASSET)
    for split, images, labels, source_index in (
        ("train", demo.train_images, demo.train_labels, index["train_source_index"]),
        ("test", demo.test_images, demo.test_labels, index["test_source_index"]),
    ):
        full_images, full_labels = load_fashion_mnist(DEBIAN_ROOT, split=split)  # type: ignore[arg-type]
        n = 60000 if split == "train" else 10000
        _assert_mnist_like(full_images, full_labels, n, n // 10)
        # The shipped demo subset is exactly these images of the official split.
        np.testing.assert_array_equal(full_images[source_index], images)
        np.testing.assert_array_equal(full_labels[source_index], labels)


# ----------------------------------------------------------------------------------------------------
# Restricted unpickler and Animal-MNIST
# ----------------------------------------------------------------------------------------------------


class _RunsShellCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_restricted_unpickler_refuses_os_system(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "executed"
    for payload in (_RunsShellCommand("echo"), _RunsShellCommand(f"touch {marker}")):
        blob = pickle.dumps(payload, protocol=protocol)
        with pytest.raises(pickle.UnpicklingError, match="system"):
            restricted_numpy_loads(blob)
    # Hidden inside an otherwise valid structure, too (with protocols 0-2 and 5 the array itself already
    # needs a global outside the allow-list, which is refused first).
    blob = pickle.dumps([np.zeros(2), _RunsShellCommand(f"touch {marker}")], protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        restricted_numpy_loads(blob)
    assert not marker.exists()


def test_restricted_unpickler_refuses_other_globals_and_objects() -> None:
    with pytest.raises(pickle.UnpicklingError, match="builtins"):
        restricted_numpy_loads(pickle.dumps(print, protocol=4))
    with pytest.raises(pickle.UnpicklingError, match="object-dtype"):
        restricted_numpy_loads(pickle.dumps(np.array([1, "a"], dtype=object), protocol=4))
    with pytest.raises(pickle.UnpicklingError, match=r"expected a numpy\.ndarray"):
        restricted_numpy_loads(pickle.dumps([1, 2, 3], protocol=4))
    with pytest.raises(pickle.UnpicklingError):
        restricted_numpy_loads(pickle.dumps(np.int64(3), protocol=4))


@pytest.mark.parametrize("protocol", [3, 4])
@pytest.mark.parametrize("dtype", ["u1", "<i8", ">f4"])
def test_restricted_unpickler_loads_plain_arrays(protocol: int, dtype: str) -> None:
    array = np.arange(24).reshape(2, 3, 4).astype(dtype)
    back = restricted_numpy_loads(pickle.dumps(array, protocol=protocol))
    # numpy itself unpickles a non-native array in native byte order; only the kind and size must match.
    assert back.dtype.str[1:] == array.dtype.str[1:]
    np.testing.assert_array_equal(back, array)
    assert isinstance(RestrictedNumpyUnpickler, type) and issubclass(RestrictedNumpyUnpickler, pickle.Unpickler)


def test_restricted_unpickler_reads_numpy1_pickles() -> None:
    # Pickles written under numpy 1.x (like animal-mnist's) name numpy.core, not numpy._core.
    # Protocol 3 names globals as plain text lines, so the module can be swapped without re-framing.
    blob = pickle.dumps(np.arange(5, dtype=np.uint8), protocol=3)
    assert b"cnumpy._core.multiarray\n_reconstruct\n" in blob
    old = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    np.testing.assert_array_equal(restricted_numpy_loads(old), np.arange(5))


def test_load_animal_mnist() -> None:
    if builtin._animal_mnist_data_dir() is None:
        with pytest.warns(RuntimeWarning, match="pip install --no-deps animal-mnist==0.4"):
            images, labels = load_animal_mnist()
        _assert_mnist_like(images, labels, 1000, 100)
        pytest.skip("animal-mnist not installed; checked the fallback only")
    was_imported = "animal_mnist" in sys.modules
    images, labels = load_animal_mnist(allow_fallback=False)
    _assert_mnist_like(images, labels, 10000, 1000)
    # The package's own code (which can pull in tensorflow) is never imported.
    assert was_imported or "animal_mnist" not in sys.modules
    asset = builtin._load_asset(builtin._ANIMAL_DEMO_ASSET)
    np.testing.assert_array_equal(images[asset["source_index"]], asset["images"])
    np.testing.assert_array_equal(labels[asset["source_index"]], asset["labels"])


def test_load_animal_mnist_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtin, "_animal_mnist_data_dir", lambda: None)
    with pytest.warns(RuntimeWarning, match="demo subset"):
        images, labels = load_animal_mnist()
    np.testing.assert_array_equal(images, load_demo_animal_mnist())
    assert labels.shape == (1000,)
    with pytest.raises(ModuleNotFoundError, match="animal-mnist"):
        load_animal_mnist(allow_fallback=False)
