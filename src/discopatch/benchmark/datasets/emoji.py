"""The ``emoji`` set: Noto Color Emoji (Debian ``fonts-noto-color-emoji``) rendered with Pillow."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .common import _HINTS, Built, _Builder, _rng, _Unavailable, _version
from .sources import SourceDirs

_EMOJI_RANGE = (0x1F300, 0x1FAFF)
_EMOJI_SKIP = frozenset(range(0x1F3FB, 0x1F400))  # skin-tone modifiers render as colour swatches
_EMOJI_SIZE = 109  # the only size Noto Color Emoji's bitmap strike renders at


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


def _emoji_font(dirs: SourceDirs) -> Path | None:
    return next((p for p in dirs.emoji_fonts if p.is_file()), None)


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
    out: list[np.ndarray] = []
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


def _add_emoji(b: _Builder, n: int, size: int, channels: int) -> None:
    def make() -> tuple[np.ndarray, str]:
        font = _emoji_font(b.dirs)
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
