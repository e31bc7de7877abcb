#!/usr/bin/env python
"""Build the small demo data sets shipped in ``src/discopatch/data/assets``.

Run from the repository root, after installing the two sources with ordinary package managers::

    apt-get install dataset-fashion-mnist                  # Debian: /usr/share/datasets/fashion-mnist
    .venv/bin/pip install --no-deps animal-mnist==0.4      # PyPI; --no-deps skips tensorflow & co.
    .venv/bin/python scripts/make_demo_assets.py

It writes

* ``fashion_mnist_demo.npz``: 400 images per class from the official train split and 200 per class
  from the official t10k split (4,000 + 2,000);
* ``animal_mnist_demo.npz``: 100 images per class (1,000), with no two images identical.

The subsets are chosen without any random number generator: within each class, images are ranked by
the SHA-256 of ``"<salt>:<source>:<split>:<index>"`` and the lowest-ranked ones are kept, and the kept
images are stored in that same hash order (so classes come interleaved). The choice therefore does not
depend on the numpy version. The ``.npz`` files are written with ``np.savez_compressed`` and then
re-zipped with fixed timestamps, so that rerunning the script gives byte-identical files (given the same
zlib) whose SHA-256 can be recorded in the assets README.

The inputs are checked against the SHA-256 digests of the package versions the shipped assets were
made from; pass ``--skip-input-check`` to build from other versions anyway.

The data are read through discopatch's own loaders (the IDX parser and the restricted unpickler), so
even here the Animal-MNIST pickles are never fed to plain ``pickle.load``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from discopatch.data import builtin  # noqa: E402  (needs the sys.path entry above)

ASSET_DIR = REPO / "src" / "discopatch" / "data" / "assets"
SALT = "discopatch-demo-v1"
FASHION_TRAIN_PER_CLASS = 400
FASHION_TEST_PER_CLASS = 200
ANIMAL_PER_CLASS = 100
NUM_CLASSES = 10
# 1980-01-01 00:00:00 is the earliest timestamp a zip entry can hold.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

# SHA-256 of the input files in Debian dataset-fashion-mnist 0.0~git20200523.55506a9-1 and in
# PyPI animal-mnist 0.4, the versions the shipped assets were built from.
EXPECTED_INPUTS = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    "animal_data_version_3.gz": "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
    "animal_label_version_3.gz": "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
}


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_inputs(paths: list[Path]) -> None:
    """Stop if an input differs from the version the committed assets and their README describe."""
    bad = []
    for path in paths:
        digest = sha256_file(path)
        print(f"  input {path}: sha256 {digest}")
        if digest != EXPECTED_INPUTS[path.name]:
            bad.append(f"{path} (sha256 {digest}, expected {EXPECTED_INPUTS[path.name]})")
    if bad:
        sys.exit("input files differ from the recorded versions:\n  " + "\n  ".join(bad))


def rank_key(source: str, split: str, index: int) -> bytes:
    return hashlib.sha256(f"{SALT}:{source}:{split}:{index}".encode()).digest()


def select(labels: np.ndarray, per_class: int, source: str, split: str, eligible: np.ndarray) -> np.ndarray:
    """Source indices of ``per_class`` eligible images per class, in hash order (classes interleaved)."""
    chosen: list[int] = []
    for cls in range(NUM_CLASSES):
        candidates = np.flatnonzero((labels == cls) & eligible)
        if len(candidates) < per_class:
            sys.exit(f"{source} {split}: class {cls} has only {len(candidates)} eligible images")
        ranked = sorted(candidates.tolist(), key=lambda i: rank_key(source, split, i))
        chosen.extend(ranked[:per_class])
    return np.array(sorted(chosen, key=lambda i: rank_key(source, split, i)), dtype=np.int64)


def first_occurrences(images: np.ndarray) -> np.ndarray:
    """Boolean mask that is False for every image that exactly repeats an earlier one."""
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    mask = np.zeros(len(images), dtype=bool)
    mask[first] = True
    return mask


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed``, then re-zip with fixed entry metadata for byte-reproducible output."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    buffer.seek(0)
    out = io.BytesIO()
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(out, "w") as dst:
        for name in sorted(src.namelist()):
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, src.read(name), compresslevel=9)
    path.write_bytes(out.getvalue())


def describe(name: str, images: np.ndarray, labels: np.ndarray) -> None:
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    centre = images[:, 10:18, 10:18]
    print(
        f"  {name}: {images.shape} {images.dtype}, range {images.min()}..{images.max()}, "
        f"mean {images.mean():.2f}, border mean {border.mean():.2f}, centre mean {centre.mean():.2f}, "
        f"per class {np.bincount(labels, minlength=NUM_CLASSES).tolist()}"
    )


def check_subset(images: np.ndarray, labels: np.ndarray, per_class: int) -> None:
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
    assert labels.dtype == np.uint8 and len(labels) == len(images)
    assert (np.bincount(labels, minlength=NUM_CLASSES) == per_class).all()
    assert first_occurrences(images).all(), "subset contains duplicate images"
    # Polarity: a bright object on a dark background, like MNIST. The frame is mostly black.
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    assert border.mean() < 30 < images[:, 10:18, 10:18].mean(), "unexpected polarity"


def make_fashion(root: Path | None) -> Path:
    base = builtin._fashion_root(root)
    train_x, train_y = builtin.load_fashion_mnist(base, "train")
    test_x, test_y = builtin.load_fashion_mnist(base, "test")
    describe("Fashion-MNIST train (full)", train_x, train_y)
    describe("Fashion-MNIST test (full)", test_x, test_y)
    # Exact train/test overlap would leak test images into training; Fashion-MNIST has none, but check.
    train_set = {row.tobytes() for row in train_x.reshape(len(train_x), -1)}
    eligible_test = np.array([row.tobytes() not in train_set for row in test_x.reshape(len(test_x), -1)])
    print(f"  test images also in train: {int((~eligible_test).sum())}")
    train_idx = select(train_y, FASHION_TRAIN_PER_CLASS, "fashion-mnist", "train", first_occurrences(train_x))
    test_idx = select(
        test_y, FASHION_TEST_PER_CLASS, "fashion-mnist", "t10k", first_occurrences(test_x) & eligible_test
    )
    arrays = {
        "train_images": train_x[train_idx],
        "train_labels": train_y[train_idx],
        "test_images": test_x[test_idx],
        "test_labels": test_y[test_idx],
        "train_source_index": train_idx.astype(np.uint16),
        "test_source_index": test_idx.astype(np.uint16),
    }
    check_subset(arrays["train_images"], arrays["train_labels"], FASHION_TRAIN_PER_CLASS)
    check_subset(arrays["test_images"], arrays["test_labels"], FASHION_TEST_PER_CLASS)
    describe("demo train", arrays["train_images"], arrays["train_labels"])
    describe("demo test", arrays["test_images"], arrays["test_labels"])
    path = ASSET_DIR / "fashion_mnist_demo.npz"
    save_npz(path, arrays)
    return path


def make_animal() -> Path:
    images, labels = builtin.load_animal_mnist(allow_fallback=False)
    describe("Animal-MNIST (full)", images, labels)
    unique = first_occurrences(images)
    print(f"  exact duplicate images dropped from the pool: {int((~unique).sum())}")
    idx = select(labels, ANIMAL_PER_CLASS, "animal-mnist", "all", unique)
    arrays = {
        "images": images[idx],
        "labels": labels[idx],
        "source_index": idx.astype(np.uint16),
    }
    check_subset(arrays["images"], arrays["labels"], ANIMAL_PER_CLASS)
    describe("demo", arrays["images"], arrays["labels"])
    path = ASSET_DIR / "animal_mnist_demo.npz"
    save_npz(path, arrays)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fashion-root",
        type=Path,
        default=None,
        help="Fashion-MNIST IDX directory (default: $DISCOPATCH_FASHION_MNIST or the Debian path)",
    )
    parser.add_argument("--skip-input-check", action="store_true", help="accept other input versions")
    args = parser.parse_args(argv)

    fashion_root = builtin._fashion_root(args.fashion_root)
    animal_dir = builtin._animal_mnist_data_dir()
    if animal_dir is None:
        sys.exit("animal-mnist is not installed: pip install --no-deps animal-mnist==0.4")
    inputs = [fashion_root / n for pair in builtin._FASHION_FILES.values() for n in pair]
    inputs += [animal_dir / n for n in builtin._ANIMAL_FILES]
    if not args.skip_input_check:
        check_inputs(inputs)

    ASSET_DIR.mkdir(parents=True, exist_ok=True)
    print("Fashion-MNIST:")
    outputs = [make_fashion(fashion_root)]
    print("Animal-MNIST:")
    outputs.append(make_animal())
    for path in outputs:
        print(f"{path.relative_to(REPO)}: {path.stat().st_size} bytes, sha256 {sha256_file(path)}")


if __name__ == "__main__":
    main()
