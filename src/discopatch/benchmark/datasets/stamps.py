"""The ``cutouts_synthetic`` set: photographic Tux Paint stamps (Debian ``tuxpaint-stamps-default``) pasted on crops
of the held-out test photos."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .common import _HINTS, Built, _Builder, _cycled_order, _file_digest, _hash_fraction, _rng, _Unavailable, _version
from .photos import PhotoSource, _id_crop_range, _photo, _random_crop
from .sources import SourceDirs

_STAMP_MAX_PALETTE_SHARE = 0.10  # photographic stamps: the 16 commonest colours cover < 10 % of opaque pixels


def _stamp_files(dirs: SourceDirs) -> list[Path]:
    """Tux Paint PNG stamps outside the symbol/alphabet and cartoon folders, without mirrored copies."""
    root = dirs.tuxpaint
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.rglob("*.png")
        if p.relative_to(root).parts[0] not in ("symbols", "cartoon") and not p.stem.endswith("_mirror")
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
            rgba: Image.Image = img.convert("RGBA")
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


def paste_stamp(bg: Image.Image, stamp: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """Alpha-composite ``stamp``, scaled to 45-90 % of the side of the square RGBA ``bg``, at a random place of
    ``bg`` (in place); returns the stamp's alpha there as a ``(side, side)`` mask in [0, 1] (``scripts/
    cutout_patches.py`` classes D's patches by it)."""
    size = bg.width
    scale = float(rng.uniform(0.45, 0.9)) * size / max(stamp.size)
    st = stamp.resize((max(1, round(stamp.width * scale)), max(1, round(stamp.height * scale))),
                      Image.Resampling.LANCZOS)  # fmt: skip
    x, y = int(rng.integers(0, size - st.width + 1)), int(rng.integers(0, size - st.height + 1))
    bg.alpha_composite(st, (x, y))
    mask = np.zeros((size, size), np.float64)
    mask[y : y + st.height, x : x + st.width] = np.asarray(st.getchannel("A"), np.float64) / 255.0
    return mask


def _add_cutouts(
    b: _Builder, n: int, size: int, quick: bool, test: Sequence[PhotoSource], files: Sequence[Path],
    split_key: dict[str, list[str]],
) -> None:  # fmt: skip
    """Stamps pasted on crops of the ``test`` photos; ``files`` (every photo) and ``split_key`` key the cache."""
    seed = b.seed

    def cutouts() -> tuple[np.ndarray, str]:
        stamp_files = _stamp_files(b.dirs)
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
                paste_stamp(bg, stamps[k], rng)
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
