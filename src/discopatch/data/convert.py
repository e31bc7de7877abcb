"""What a decoded image becomes, pixel by pixel: 8-bit ``L`` or ``RGB`` (high bit depth rescaled, transparency on
black) and the square of the configured size (:data:`~discopatch.config.ResizeMode`).

:func:`discopatch.data.images.preprocess` runs these in order; the conversion works strip by strip there
(``_to_mode``), so :func:`convert_strip` sees one strip at a time with the whole image's value range.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..config import PreprocessConfig

#: ``resize_crop`` resamples only the centre square once the resized image would exceed this many times
#: ``image_size ** 2`` pixels (aspect ratios beyond 16:1), so a 1 x 100000 strip cannot exhaust memory.
MAX_RESIZE_FACTOR = 16


def convert_strip(img: Image.Image, target: str, value_range: tuple[float, float] | None) -> Image.Image:
    """One strip (or a whole small image) to ``target``; ``value_range`` is the whole image's, for high bit depth."""
    if value_range is not None:
        lo, hi = value_range
        a = np.asarray(img, dtype=np.float64)
        a = np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1) * 255.0
        img = Image.fromarray(np.round(a).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("LA", "La", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
    if img.mode != target:
        img = img.convert(target)
    return img


def nominal_range(mode: str, lo: float, hi: float) -> tuple[float, float]:
    """The nominal range of a high-bit-depth image with extremes ``lo``, ``hi``: 16-bit and [0, 1] float are fixed,
    others min-max."""
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and 255 < hi <= 65535):
        return 0.0, 65535.0
    if mode == "I" and lo >= 0 and hi <= 255:
        return 0.0, 255.0
    if mode == "F" and lo >= 0 and hi <= 1:
        return 0.0, 1.0
    return lo, hi


def resize_square(img: Image.Image, cfg: PreprocessConfig) -> Image.Image:
    """``img`` as the ``image_size`` square of ``cfg.resize``: ``squash`` ignores the aspect, ``pad`` centres a smaller
    image on black, ``resize_crop`` (and ``pad`` for a larger image) scales the short side (Lanczos) and crops."""
    s = cfg.image_size
    w, h = img.size
    if (w, h) == (s, s):
        return img
    if cfg.resize == "squash":
        return img.resize((s, s), Image.Resampling.BILINEAR)
    if cfg.resize == "pad" and w <= s and h <= s:
        canvas = Image.new(img.mode, (s, s), 0)
        canvas.paste(img, ((s - w) // 2, (s - h) // 2))
        return canvas
    # resize_crop (and pad for larger images): short side to s, Lanczos, centre crop.
    scale = s / min(w, h)
    nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
    if nw * nh > MAX_RESIZE_FACTOR * s * s:
        # Extreme aspect ratio: resample the centre square of the source directly (same pixels, no huge buffer).
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        return img.resize((s, s), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))
    img = img.resize((nw, nh), Image.Resampling.LANCZOS)
    left, top = (nw - s) // 2, (nh - s) // 2
    return img.crop((left, top, left + s, top + s))
