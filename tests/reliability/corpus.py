"""A generated corpus of broken, hostile and unusual image files (nothing is checked in; everything is built here).

Each :class:`Case` says what the pipeline must do with it: ``ok`` (decoded by a documented rule, see
docs/RELIABILITY.md) or an error whose message contains ``error``. The corpus is written into a caller's folder,
so the CLI and the HTTP API see exactly the bytes the library sees.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    name: str  # file name, extension included (some lie on purpose)
    data: bytes
    error: str | None  # a substring of the expected error message; None = must be scored


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _pattern(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A smooth structured image (gradients plus noise), so JPEG truncation really cuts image data."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = (x * 255 // max(w - 1, 1) + y * 255 // max(h - 1, 1)) // 2
    a = np.stack([base, base[::-1], base[:, ::-1]][:channels], axis=-1).astype(np.int64)
    a += rng.integers(-20, 21, a.shape)
    a = np.clip(a, 0, 255).astype(np.uint8)
    return a[..., 0] if channels == 1 else a


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 100-byte PNG that declares ``width x height`` 8-bit gray pixels (valid CRCs, a tiny IDAT)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def exif_rotated_jpeg() -> tuple[bytes, np.ndarray]:
    """A 40x24 JPEG with EXIF orientation 6 (rotate 90 degrees clockwise to display); also the upright pixels."""
    img = Image.fromarray(_pattern(24, 40, seed=5))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(img, "JPEG", quality=95, exif=exif.tobytes())
    upright = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").transpose(Image.Transpose.ROTATE_270))
    return data, upright


def animated_gif() -> bytes:
    frames = [Image.fromarray(_pattern(32, 32, seed=s)).convert("P") for s in range(3)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def palette_with_transparency() -> bytes:
    img = Image.fromarray(_pattern(30, 30, seed=7)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _encode(img, "PNG", transparency=0)


def good_images(n: int = 4) -> list[Case]:
    """Ordinary gray PNGs (Fashion-MNIST-like size) that must score exactly as they do alone."""
    return [Case(f"good_{i}.png", _encode(Image.fromarray(_pattern(28, 28, seed=100 + i, channels=1)), "PNG"), None)
            for i in range(n)]  # fmt: skip


def bad_cases() -> list[Case]:
    """Every hostile or unusual kind this corpus covers, with the outcome the pipeline must produce."""
    rgb = Image.fromarray(_pattern(48, 64, seed=1))
    png, jpg = _encode(rgb, "PNG"), _encode(rgb, "JPEG", quality=90)
    gray16 = Image.fromarray(_pattern(40, 40, seed=2, channels=1).astype(np.uint16) * 257)
    cmyk = _encode(rgb.convert("CMYK"), "JPEG", quality=90)
    return [
        Case("empty.png", b"", "empty"),
        Case("empty.jpg", b"", "empty"),
        Case("truncated.jpg", jpg[: len(jpg) // 2], "truncated"),
        Case("truncated.png", png[: len(png) // 2], "truncated"),
        Case("header_only.png", png[:40], "truncated"),
        Case("png_named.jpg", png, None),
        Case("jpeg_named.png", jpg, None),
        Case("text_named.png", b"this is not an image, just some text\n" * 4, "not a recognised image format"),
        Case("zip_named.jpg", b"PK\x03\x04" + bytes(200), "not a recognised image format"),
        Case("bomb.png", bomb_png(), "decompression bomb"),
        Case("tiny_3x3.png", _encode(Image.fromarray(_pattern(3, 3, seed=3)), "PNG"), None),
        Case("one_pixel.png", _encode(Image.new("L", (1, 1), 200), "PNG"), None),
        Case("gray16.png", _encode(gray16, "PNG"), None),
        Case("cmyk.jpg", cmyk, None),
        Case("palette_alpha.png", palette_with_transparency(), None),
        Case("animated.gif", animated_gif(), None),
        Case("exif_rotated.jpg", exif_rotated_jpeg()[0], None),
        Case("tall_1x5000.png", _encode(Image.fromarray(_pattern(5000, 1, seed=4, channels=1)), "PNG"), None),
        Case("wide_5000x2.png", _encode(Image.fromarray(_pattern(2, 5000, seed=6)), "PNG"), None),
    ]


def non_image_files() -> list[Case]:
    """Files a folder scan skips by extension; given explicitly they are errors."""
    return [
        Case("notes.txt", b"hello\n", "not a recognised image format"),
        Case("data.bin", bytes(range(256)) * 4, "not a recognised image format"),
    ]


def write(cases: list[Case], folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for c in cases:
        (folder / c.name).write_bytes(c.data)
        out[c.name] = folder / c.name
    return out
