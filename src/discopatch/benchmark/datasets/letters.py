"""The ``letters`` set: A-J rendered from installed Debian fonts and placed like MNIST digits."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .common import _HINTS, Built, _Builder, _cycled_order, _dpkg_versions, _file_digest, _rng, _Unavailable, _version
from .sources import SourceDirs

_LETTERS = "ABCDEFGHIJ"
_LETTER_FONT_PACKAGES = (
    "fonts-dejavu-core",
    "fonts-urw-base35",
    "fonts-texgyre",
    "fonts-freefont-ttf",
    "fonts-liberation2",
)


def _font_files(dirs: SourceDirs) -> list[Path]:
    """Candidate Latin text fonts: TrueType/OpenType files minus emoji, symbol, dingbat and maths fonts."""
    skip = re.compile(r"emoji|symbol|dingbat|d050000l|math|fallback", re.I)
    files = {
        p
        for d in dirs.fonts
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


def _add_letters(b: _Builder, n: int) -> None:
    def make() -> tuple[np.ndarray, str]:
        files = _font_files(b.dirs)
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
