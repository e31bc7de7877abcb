"""Texture sets from GIMP ``.pat`` patterns (Debian ``gimp-data``, ``gimp-data-extras``): the pattern parser, the
``tune``/``test`` split by file name hash, and random tiled crops."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .common import _HINTS, Built, _Builder, _cycled_order, _hash_fraction, _rng, _Unavailable, _version
from .sources import SourceDirs

__all__ = ["GimpPattern", "parse_gpat", "read_gpat", "texture_files", "texture_split"]

# A third of GIMP patterns are reserved for tuning.
_TEXTURE_TUNE_FRACTION = 1 / 3


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


def texture_split(path: Path) -> str:
    """``"tune"`` or ``"test"`` for a pattern file, by a hash of its file name (stable across machines)."""
    return "tune" if _hash_fraction("gimp-pattern:" + path.name.lower()) < _TEXTURE_TUNE_FRACTION else "test"


def texture_files(split: str | None = "test", dirs: SourceDirs | None = None) -> list[Path]:
    """Installed GIMP pattern files, sorted; ``split`` ``"test"`` (used by the protocols), ``"tune"`` or ``None``;
    ``dirs`` says where to look (default :meth:`SourceDirs.from_env`)."""
    folders = (SourceDirs.from_env() if dirs is None else dirs).textures
    files = sorted({p for d in folders if d.is_dir() for p in d.rglob("*.pat") if p.is_file()})
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


def _add_textures(b: _Builder, n: int, size: int, channels: int, side_range: tuple[int, int]) -> None:
    def make() -> tuple[np.ndarray, str]:
        files = texture_files("test", b.dirs)
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
            f"[GPL-2+]: {info['patterns']} 'test'-split pattern files of {len(texture_files(None, b.dirs))}; random "
            f"{side_range[0]}-{side_range[1]} px windows of the tiled pattern, resized to {size} px, "
            f"{'RGB' if channels == 3 else 'gray'}{bad}"
        )

    b.add("textures", make)
