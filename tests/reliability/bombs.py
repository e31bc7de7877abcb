"""Small files that decode to huge images, written directly (no encoder holds the image in memory).

Each is a valid file of a flat image: the decoder does all the allocation and work a photograph of the same size
and layout would need, but the file stays tiny and writing it takes no memory, so the memory tests can afford the
worst case of every format.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def flat_jpeg(
    width: int, height: int, components: int = 3, progressive: bool = True, subsampling: tuple[int, int] = (1, 1)
) -> bytes:
    """A mid-grey JPEG whose every block is DC-only: baseline (one interleaved scan) or progressive (only the DC
    scan, which libjpeg accepts: the missing AC scans leave zero coefficients). ``components`` 1 (L), 3 (YCbCr) or
    4 (Adobe CMYK); ``subsampling`` is the first component's (h, v) factors, the others are 1x1.

    Both Huffman tables hold one symbol with the one-bit code ``0``, so every block is one (DC scan) or two (DC and
    end-of-block) zero bits: a 16384 x 16384 RGB JPEG is about 1.5 MB of zero bytes.
    """
    ids = range(1, components + 1)
    h0, v0 = subsampling
    factors = [(h0, v0)] + [(1, 1)] * (components - 1)
    out = bytearray(b"\xff\xd8")
    if components == 4:  # Adobe marker, transform 0: the components are CMYK, not YCCK
        out += _segment(0xFFEE, b"Adobe" + struct.pack(">HHHB", 100, 0, 0, 0))
    out += _segment(0xFFDB, b"\x00" + b"\x01" * 64)
    sof = struct.pack(">BHHB", 8, height, width, components)
    sof += b"".join(bytes([i, (h << 4) | v, 0]) for i, (h, v) in zip(ids, factors, strict=True))
    out += _segment(0xFFC2 if progressive else 0xFFC0, sof)
    one_code = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1, for symbol 0 (DC: size 0; AC: EOB)
    out += _segment(0xFFC4, b"\x00" + one_code + b"\x10" + one_code)
    sos = bytes([components]) + b"".join(bytes([i, 0x00]) for i in ids)
    sos += bytes([0, 0 if progressive else 63, 0])
    out += _segment(0xFFDA, sos)
    if components == 1:
        blocks = -(-width // 8) * -(-height // 8)
    else:
        hmax, vmax = max(f[0] for f in factors), max(f[1] for f in factors)
        mcus = -(-width // (8 * hmax)) * -(-height // (8 * vmax))
        blocks = mcus * sum(h * v for h, v in factors)
    bits = blocks * (1 if progressive else 2)
    out += bytes(bits // 8)
    if bits % 8:
        out.append((1 << (8 - bits % 8)) - 1)  # pad the last byte with one bits
    out += b"\xff\xd9"
    return bytes(out)


class _Bits:
    """VP8L's bit order: least significant bit first."""

    def __init__(self) -> None:
        self.value = 0
        self.n = 0

    def put(self, value: int, n: int) -> None:
        self.value |= value << self.n
        self.n += n

    def bytes(self) -> bytes:
        return self.value.to_bytes((self.n + 7) // 8, "little")


def flat_webp_lossless(width: int, height: int, alpha: bool = False) -> bytes:
    """A black lossless WebP (VP8L, no transforms) whose five prefix codes each hold one symbol, so every pixel
    takes zero bits: about 40 bytes at any size up to 16383 x 16383."""
    b = _Bits()
    b.put(0x2F, 8)
    b.put(width - 1, 14)
    b.put(height - 1, 14)
    b.put(int(alpha), 1)
    b.put(0, 3)  # version
    b.put(0, 1)  # no transform
    b.put(0, 1)  # no colour cache
    b.put(0, 1)  # no meta prefix codes
    for symbol in (0, 0, 0, 255, 0):  # green, red, blue, alpha, distance
        b.put(1, 1)  # simple code
        b.put(0, 1)  # one symbol
        if symbol < 2:
            b.put(0, 1)
            b.put(symbol, 1)
        else:
            b.put(1, 1)
            b.put(symbol, 8)
    data = b.bytes()
    chunk = b"VP8L" + struct.pack("<I", len(data)) + data + b"\x00" * (len(data) % 2)
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


#: Adam7 passes: first column, first row, column step, row step.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def flat_png(
    path: Path, width: int, height: int, color_type: int = 6, bit_depth: int = 8, interlace: bool = False
) -> None:
    """A black PNG written row by row through one zlib stream (no image in memory); colour type 6 is RGBA;
    ``interlace`` writes the seven Adam7 passes."""
    samples = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    if interlace:
        passes = [(-(-(width - x0) // dx), -(-(height - y0) // dy)) for x0, y0, dx, dy in _ADAM7]
    else:
        passes = [(width, height)]
    z = zlib.compressobj(9)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, int(interlace))
        f.write(_png_chunk(b"IHDR", ihdr))
        idat = bytearray()
        for pw, ph in passes:
            if pw <= 0 or ph <= 0:
                continue
            row = b"\x00" * (1 + -(-pw * samples * bit_depth // 8))
            for _ in range(ph):
                idat += z.compress(row)
        idat += z.flush()
        f.write(_png_chunk(b"IDAT", bytes(idat)))
        f.write(_png_chunk(b"IEND", b""))


def _ifd_entry(tag: int, kind: int, count: int, value: int) -> bytes:
    """One little-endian TIFF directory entry holding a SHORT (3) or LONG (4) value inline."""
    packed = struct.pack("<H2x", value) if kind == 3 else struct.pack("<I", value)
    return struct.pack("<HHI", tag, kind, count) + packed


def flat_tiff(
    path: Path,
    width: int,
    height: int,
    samples: int = 1,
    bits: int = 32,
    sample_format: int = 3,
    rows_per_strip: int | None = None,
    compress: bool = True,
) -> None:
    """A zero-valued TIFF of one strip per ``rows_per_strip`` rows (default: the whole image in one strip, the
    layout that makes libtiff's strip buffer as large as the image). ``sample_format`` 3 is IEEE float, 1 unsigned
    integer; ``compress`` uses Deflate (each strip a small zlib stream), else the data is stored raw, as a sparse
    file (no disk used for the zeros)."""
    rows = rows_per_strip or height
    n_strips = -(-height // rows)
    if compress:
        line = b"\x00" * (width * samples * bits // 8)
        parts = []
        for s in range(n_strips):
            z = zlib.compressobj(9)
            n = min(rows, height - s * rows)
            parts.append(b"".join(z.compress(line) for _ in range(n)) + z.flush())
        sizes = [len(p) for p in parts]
    else:
        sizes = [min(rows, height - s * rows) * width * samples * bits // 8 for s in range(n_strips)]
    entries = 12
    arrays_at = 8 + 2 + entries * 12 + 4
    formats_at = arrays_at + 2 * samples
    offsets_at = formats_at + 2 * samples
    counts_at = offsets_at + 4 * n_strips
    data_at = counts_at + 4 * n_strips
    offsets, pos = [], data_at
    for size in sizes:
        offsets.append(pos)
        pos += size

    def shorts(tag: int, value: int, at: int) -> bytes:  # one value per sample; inline only for one sample
        return _ifd_entry(tag, 3, 1, value) if samples == 1 else struct.pack("<HHII", tag, 3, samples, at)

    def longs(tag: int, values: list[int], at: int) -> bytes:
        return _ifd_entry(tag, 4, 1, values[0]) if len(values) == 1 else struct.pack("<HHII", tag, 4, len(values), at)

    assert samples in (1, 3, 4), "two samples would have to be stored inline"
    ifd = (
        struct.pack("<H", entries)
        + b"".join(
            [
                _ifd_entry(256, 4, 1, width),
                _ifd_entry(257, 4, 1, height),
                shorts(258, bits, arrays_at),
                _ifd_entry(259, 3, 1, 8 if compress else 1),
                _ifd_entry(262, 3, 1, 2 if samples >= 3 else 1),
                longs(273, offsets, offsets_at),
                _ifd_entry(277, 3, 1, samples),
                _ifd_entry(278, 4, 1, rows),
                longs(279, sizes, counts_at),
                _ifd_entry(284, 3, 1, 1),
                _ifd_entry(338, 3, 1, 2) if samples == 4 else _ifd_entry(305, 2, 1, 0),
                shorts(339, sample_format, formats_at),
            ]
        )
        + struct.pack("<I", 0)
    )
    with open(path, "wb") as f:
        f.write(b"II*\x00" + struct.pack("<I", 8) + ifd)
        f.write(struct.pack(f"<{samples}H", *([bits] * samples)))
        f.write(struct.pack(f"<{samples}H", *([sample_format] * samples)))
        f.write(struct.pack(f"<{n_strips}I", *offsets))
        f.write(struct.pack(f"<{n_strips}I", *sizes))
        assert f.tell() == data_at
        if compress:
            for p in parts:
                f.write(p)
        else:
            f.truncate(pos)
