"""Photographs from installed packages (scikit-image, scikit-learn, matplotlib, MATE and Plasma wallpapers, OpenCV
samples): which files, the train/test split by source group, decoding and random crops."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .common import _HINTS, Built, _Builder, _cycled_order, _file_digest, _hash_fraction, _rng, _Unavailable, _version
from .sources import SourceDirs

__all__ = ["PhotoSource", "photo_sources", "photo_split"]


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


# 30 % of photo groups are test photos.
_PHOTO_TEST_FRACTION = 0.3
_PHOTO_MAX_SHORT = 320  # photos are decoded once at this short side (never upsampled)
_PHOTO_MIN_SCALE = 160  # ID crops: the photo is seen at a short side between 160 and 320 px


@dataclass(frozen=True)
class PhotoSource:
    """One photograph on disk: ``group`` ties files of one scene together so they share a split."""

    path: Path
    group: str
    origin: str


def _plasma_image(folder: Path) -> Path | None:
    """The highest-resolution JPEG of a Plasma wallpaper package (names are ``WIDTHxHEIGHT.jpg``)."""
    best: tuple[int, Path] | None = None
    for p in (folder / "contents" / "images").glob("*.jpg"):
        m = re.fullmatch(r"(\d+)x(\d+)", p.stem)
        if m and (best is None or int(m[1]) * int(m[2]) > best[0]):
            best = (int(m[1]) * int(m[2]), p)
    return best[1] if best else None


def photo_sources(dirs: SourceDirs | None = None) -> list[PhotoSource]:
    """Every installed photograph the protocols use, sorted by group then path (a stable order); ``dirs`` says where
    to look (default :meth:`SourceDirs.from_env`)."""
    dirs = SourceDirs.from_env() if dirs is None else dirs
    out: list[PhotoSource] = []

    def add(folder: Path | None, names: dict[str, str], origin: str) -> None:
        if folder is None:
            return
        for name, group in names.items():
            if (folder / name).is_file():
                out.append(PhotoSource(folder / name, f"{origin}:{group}", origin))

    add(dirs.skimage_data, _SKIMAGE_PHOTOS, "skimage")
    add(dirs.sklearn_images, _SKLEARN_PHOTOS, "sklearn")
    add(dirs.matplotlib_data, _MPL_PHOTOS, "matplotlib")
    if dirs.mate.is_dir():
        out.extend(PhotoSource(p, f"mate:{p.stem}", "mate") for p in sorted(dirs.mate.glob("*.jpg")))
    for name in _PLASMA_PHOTOS:
        p = _plasma_image(dirs.plasma / name)
        if p is not None:
            out.append(PhotoSource(p, f"plasma:{name}", "plasma"))
    for d in dirs.opencv:
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


def _add_photos(b: _Builder, n: int) -> None:
    """The ``fmnist`` protocol's far-OOD ``photos``: gray 28 px windows of every installed photo."""
    seed = b.seed

    def photos() -> tuple[np.ndarray, str]:
        sources = photo_sources(b.dirs)
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
