"""What decoding one image costs in memory, told from its header before a pixel is decoded.

:func:`~discopatch.data.images.open_image` refuses an image whose decoder would hold more than
:data:`~discopatch.data.images.MAX_DECODE_BYTES` at once. The cost is per decoder, because the decoded pixels are
only part of it (measured with Pillow 13, libjpeg-turbo 3, libwebp 1.6, libtiff 4.7; the table in
docs/RELIABILITY.md):

* PNG, GIF, BMP and uncompressed TIFF decode row by row into the image: pixels x bytes per pixel of the mode.
* JPEG adds, when the file has several scans (progressive, or a first scan that does not hold every component),
  libjpeg's whole-image buffer of DCT coefficients: 2 bytes per sample of every component at its sampling
  (3 bytes a pixel for 4:2:0 colour, 6 for 4:4:4, 8 for CMYK). DCT scaling (``Image.draft``) shrinks the output,
  never that buffer.
* WebP goes through libwebp's animation decoder whatever the file: its canvas and previous-frame canvas, the frame
  copied out to Python and the image Pillow builds from it are each 4 bytes a pixel (16 in all), plus the whole
  file, which libwebp needs in memory.
* RLE-compressed BMP goes through a decoder written in Python, which holds two more bytes a pixel.
* Compressed TIFF goes through libtiff, which adds one decoded strip or tile (as large as the image when the file
  is one strip) and the compressed strip it reads whole.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import IO

from PIL import Image, ImageFile

#: Formats that are decoded; anything else Pillow could open (EPS through Ghostscript, JPEG 2000, PSD, ...) is
#: refused from its header, so every accepted format has a known decoding cost. (A multi-picture JPEG opens through
#: the JPEG opener as format ``MPO`` and is decoded as the JPEG it starts with.)
ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")

#: Bytes per pixel of the WebP path (libwebp's two canvases, the frame as ``bytes``, Pillow's image).
WEBP_BYTES_PER_PIXEL = 16

#: JPEG scaling denominators ``Image.draft`` offers, least reduction first.
JPEG_SCALES = (2, 4, 8)


def decoded_bytes(mode: str, width: int, height: int) -> int:
    """Bytes Pillow allocates for a ``mode`` image of this size: 1 per pixel for 8-bit single-band modes, 2 for the
    16-bit ``I;16`` family and 4 for everything else (Pillow stores RGB and two-band modes in 4 bytes)."""
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return width * height * per_pixel


@dataclass(frozen=True)
class DecodeCost:
    """Peak bytes one decode holds (``total``) and what they are, for the refusal message."""

    total: int
    parts: tuple[tuple[str, int], ...]

    def describe(self) -> str:
        return " + ".join(f"{n} {what}" for what, n in self.parts if n)


def webp_header_size(head: bytes) -> tuple[int, int] | None:
    """Canvas size of a WebP file from its first 30 bytes (``None`` if it is not WebP or too short), read before
    Pillow opens it: opening already reads the whole file and allocates the canvas."""
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def webp_cost(width: int, height: int, file_bytes: int) -> DecodeCost:
    canvases = WEBP_BYTES_PER_PIXEL * width * height
    what = f"bytes for libwebp's canvases and Pillow's copies ({WEBP_BYTES_PER_PIXEL} a pixel)"
    return DecodeCost(canvases + file_bytes, ((what, canvases), ("bytes of file held by libwebp", file_bytes)))


def _jpeg_first_scan(fh: IO[bytes]) -> tuple[int, int] | None:
    """(SOF marker, number of components in the first scan) from the marker segments before the first scan, or
    ``None`` if they cannot be walked (the decoder will report the damage)."""
    fh.seek(2)
    sof = 0
    for _ in range(10000):  # a header has far fewer segments; a bound instead of trusting the file
        byte = fh.read(1)
        while byte == b"\xff":
            byte = fh.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # stand-alone markers
            continue
        raw = fh.read(2)
        if len(raw) < 2:
            return None
        length = int.from_bytes(raw, "big")
        if marker == 0xDA:
            ns = fh.read(1)
            return (sof, ns[0]) if ns else None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            sof = marker
        if length < 2:
            return None
        fh.seek(length - 2, 1)
    return None


def jpeg_cost(img: Image.Image, fh: IO[bytes], scale: int = 1) -> DecodeCost:
    """Output at ``1/scale`` plus, for a multi-scan file, libjpeg's coefficient (or, lossless, sample) buffer."""
    w, h = img.size
    out_w, out_h = -(-w // scale), -(-h // scale)
    output = decoded_bytes(img.mode, out_w, out_h)
    pos = fh.tell()
    try:
        layout = _jpeg_first_scan(fh)
    finally:
        fh.seek(pos)
    layers = getattr(img, "layer", [])
    n_comp = len(layers) or 1
    progressive = bool(img.info.get("progressive") or img.info.get("progression"))
    sof, first_scan = layout if layout is not None else (0, 1)
    if not (progressive or first_scan < n_comp or layout is None):
        return DecodeCost(output, (("bytes of decoded pixels", output),))
    hmax = max((c[1] for c in layers), default=1) or 1
    vmax = max((c[2] for c in layers), default=1) or 1
    lossless = sof in (0xC3, 0xC7, 0xCB, 0xCF)
    buffer = 0
    for _, hs, vs, _q in layers or [(0, 1, 1, 0)]:
        hs, vs = max(hs, 1), max(vs, 1)
        cw, ch = -(-w * hs // hmax), -(-h * vs // vmax)
        if lossless:
            buffer += 4 * cw * ch
        else:
            bw, bh = -(-cw // 8), -(-ch // 8)
            buffer += 128 * (-(-bw // hs) * hs) * (-(-bh // vs) * vs)  # 64 coefficients of 2 bytes per block
    what = "bytes of the multi-scan sample buffer" if lossless else "bytes of DCT coefficients (multi-scan JPEG)"
    return DecodeCost(output + buffer, (("bytes of decoded pixels", output), (what, buffer)))


def _tag(img: Image.Image, tag: int, default: int) -> int:
    value = getattr(img, "tag_v2", {}).get(tag, default)
    if isinstance(value, tuple):
        value = max(value) if value else default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def tiff_cost(img: ImageFile.ImageFile, file_bytes: int) -> DecodeCost:
    """Pixels, plus for libtiff one decoded strip or tile (at least 4 bytes a pixel: Pillow decodes some layouts
    through RGBA) and the largest compressed strip or tile, which it reads whole."""
    w, h = img.size
    pixels = decoded_bytes(img.mode, w, h)
    if not img.tile or img.tile[0][0] != "libtiff":
        return DecodeCost(pixels, (("bytes of decoded pixels", pixels),))
    samples = _tag(img, 277, 1)
    bits = _tag(img, 258, 1)
    if _tag(img, 284, 1) == 2:  # planar: one sample per strip
        samples = 1
    if 322 in getattr(img, "tag_v2", {}):
        bw, bh = min(_tag(img, 322, w), w), min(_tag(img, 323, h), h)
        counts = 325
    else:
        bw, bh = w, min(_tag(img, 278, h), h)
        counts = 279
    block = bw * bh * max(4, -(-samples * bits // 8))
    raw = min(_tag(img, counts, 0), file_bytes)
    return DecodeCost(
        pixels + block + raw,
        (
            ("bytes of decoded pixels", pixels),
            ("bytes of libtiff's strip or tile buffer", block),
            ("bytes of compressed strip", raw),
        ),
    )


def decode_cost(img: ImageFile.ImageFile, fh: IO[bytes], file_bytes: int, scale: int = 1) -> DecodeCost:
    """Peak bytes decoding ``img`` (opened, not loaded, from ``fh``) needs, by format; ``scale`` is a JPEG draft."""
    fmt = img.format or ""
    if fmt in ("JPEG", "MPO"):
        return jpeg_cost(img, fh, scale)
    if fmt == "WEBP":
        return webp_cost(img.width, img.height, file_bytes)
    if fmt == "TIFF":
        return tiff_cost(img, file_bytes)
    pixels = decoded_bytes(img.mode, img.width, img.height)
    if fmt == "BMP" and img.tile and img.tile[0][0] == "bmp_rle":
        # Pillow's RLE decoder is Python: it grows a bytearray of one byte a pixel, then copies it to bytes
        extra = 2 * img.width * img.height + img.width * img.height // 8
        return DecodeCost(pixels + extra, (("bytes of decoded pixels", pixels), ("bytes of RLE buffers", extra)))
    return DecodeCost(pixels, (("bytes of decoded pixels", pixels),))


def jpeg_draft_scale(img: Image.Image, fh: IO[bytes], budget: int, min_side: int) -> int | None:
    """The least JPEG reduction (1/2, 1/4, 1/8) that fits ``budget`` and keeps the short side at ``min_side`` or
    more (the model's image size: reduced decoding never makes the model upscale); ``None`` if none does."""
    if img.format not in ("JPEG", "MPO"):
        return None
    w, h = img.size
    for s in JPEG_SCALES:
        if -(-min(w, h) // s) < min_side:
            return None
        if jpeg_cost(img, fh, s).total <= budget:
            return s
    return None
