"""The decode memory bound holds for the worst case of every accepted format.

Each case writes the largest file of its kind that is still accepted (or, where that is refused now, the file that
once blew the bound), then preprocesses it in a fresh subprocess, the way ``discopatch score`` (a path) and the
server (bytes) do, and reads the growth of the peak resident memory (``VmHWM``) over the resident memory after a
warm-up on a small file of the same format. The growth must stay under the cost the decoder was told from the
header (at most ``MAX_DECODE_BYTES``, 1 GiB) plus the 8-bit RGB copy the conversion makes (at most 4 bytes a pixel)
plus 64 MiB; before the bound such a WebP took 4.47 GB and its progressive CMYK JPEG 3.45 GB.

The files are written directly (``bombs.py``): a 16383^2 lossless WebP is 30 bytes, a 16384^2 progressive JPEG
about 1.5 MB, the uncompressed TIFF and BMP are sparse. ``pytest -s`` prints the table in docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from discopatch.data.images import MAX_DECODE_BYTES

from .bombs import flat_jpeg, flat_png, flat_tiff, flat_webp_lossless

MIB = 1 << 20
SLACK = 64 * MIB

pytestmark = pytest.mark.slow

#: Runs in the subprocess: warm up on the small file, then preprocess the big one (a path, or its bytes as the
#: server gets them) and report the peak growth and the decoder cost told from the header.
SCRIPT = r"""
import io, json, sys
from pathlib import Path
from PIL import Image
from discopatch.config import PreprocessConfig
from discopatch.data import images
from discopatch.data.images import ImageReadError, preprocess

def kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

small, big, as_bytes, size, channels = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5])
cfg = PreprocessConfig(image_size=size, channels=channels, resize="resize_crop")
preprocess(small, cfg)
src = Path(big).read_bytes() if as_bytes else big
try:  # the cost the decoder is told from the header (the code before the fix had no cost model)
    cost = images.decoding_cost(big, min_side=size).total
except (AttributeError, ImageReadError):
    cost = None
base = kb("VmRSS")
try:
    out, error = preprocess(src, cfg), None
except ImageReadError as e:
    out, error = None, str(e)
print(json.dumps({"grew": (kb("VmHWM") - base) * 1024, "error": error, "cost": cost}))
"""


def _measure(small: Path, big: Path, as_bytes: bool = False, size: int = 256, channels: int = 3) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [sys.executable, "-c", SCRIPT, str(small), str(big), "1" if as_bytes else "0", str(size), str(channels)]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _bmp32(path: Path, side: int) -> None:
    """An uncompressed 32-bit BMP (BI_BITFIELDS, with alpha), sparse: 4 bytes a pixel on paper, no disk used."""
    header_size, dib = 14, 108
    data_at = header_size + dib
    size = data_at + side * side * 4
    with open(path, "wb") as f:
        f.write(b"BM" + struct.pack("<IHHI", size, 0, 0, data_at))
        f.write(struct.pack("<IiiHHIIiiII", dib, side, -side, 1, 32, 3, side * side * 4, 2835, 2835, 0, 0))
        f.write(struct.pack("<IIII", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000) + b"BGRs" + bytes(36 + 12))
        f.truncate(size)


def _bmp_rle8(path: Path, side: int) -> None:
    """An 8-bit RLE BMP of one colour: runs of 255 pixels, so 16384^2 is about 2 MB."""
    row = bytearray()
    left = side
    while left:
        n = min(255, left)
        row += bytes([n, 0])
        left -= n
    data = bytes(row + b"\x00\x00") * side + b"\x00\x01"
    at = 14 + 40 + 1024
    with open(path, "wb") as f:
        f.write(b"BM" + struct.pack("<IHHI", at + len(data), 0, 0, at))
        f.write(struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(data), 2835, 2835, 256, 0))
        f.write(bytes(1024) + data)


def _gif(path: Path, side: int) -> None:
    Image.new("P", (side, side), 0).save(path, format="GIF")


def _jpeg(side: int, **kw: object) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(flat_jpeg(side, side, **kw))  # type: ignore[arg-type]


#: name, file suffix, writer of the big file (the small one is the same writer at 64 px), whether it is accepted.
#: Sizes: the largest accepted under the 1 GiB budget (or the file that once blew the bound, where that is refused now).
CASES: list[tuple[str, str, Callable[[Path, int], None], int, bool]] = [
    ("PNG 8-bit RGBA", "png", lambda p, s: flat_png(p, s, s, 6, 8), 16384, True),
    ("PNG 8-bit RGBA, interlaced", "png", lambda p, s: flat_png(p, s, s, 6, 8, interlace=True), 16384, True),
    ("JPEG baseline RGB 4:4:4", "jpg", lambda p, s: p.write_bytes(flat_jpeg(s, s, 3, False)), 16384, True),
    ("JPEG baseline CMYK", "jpg", lambda p, s: p.write_bytes(flat_jpeg(s, s, 4, False)), 16384, True),
    ("JPEG progressive RGB 4:2:0", "jpg", lambda p, s: p.write_bytes(flat_jpeg(s, s, 3, True, (2, 2))), 16384, True),
    ("JPEG progressive RGB 4:4:4", "jpg", lambda p, s: p.write_bytes(flat_jpeg(s, s, 3, True)), 13000, True),
    ("JPEG progressive RGB 4:4:4", "jpg", lambda p, s: p.write_bytes(flat_jpeg(s, s, 3, True)), 16383, False),
    ("JPEG progressive CMYK", "jpg", lambda p, s: p.write_bytes(flat_jpeg(s, s, 4, True)), 11500, True),
    ("JPEG progressive CMYK", "jpg", lambda p, s: p.write_bytes(flat_jpeg(s, s, 4, True)), 16383, False),
    ("WebP lossless", "webp", lambda p, s: p.write_bytes(flat_webp_lossless(s, s)), 8191, True),
    ("WebP lossless", "webp", lambda p, s: p.write_bytes(flat_webp_lossless(s, s)), 16383, False),
    ("TIFF float, one Deflate strip", "tif", lambda p, s: flat_tiff(p, s, s), 11580, True),
    ("TIFF 16-bit RGBA, one Deflate strip", "tif", lambda p, s: flat_tiff(p, s, s, 4, 16, 1), 9400, True),
    ("TIFF float, uncompressed (1 GiB file)", "tif", lambda p, s: flat_tiff(p, s, s, compress=False), 16380, True),
    ("GIF", "gif", _gif, 16384, True),
    ("BMP 32-bit (1 GiB file)", "bmp", _bmp32, 16380, True),
    ("BMP 8-bit RLE", "bmp", _bmp_rle8, 16384, True),
]


@pytest.mark.parametrize(("name", "suffix", "write", "side", "accepted"), CASES, ids=[f"{c[0]} {c[3]}" for c in CASES])
def test_worst_case_of_each_format_stays_within_the_bound(tmp_path, name, suffix, write, side, accepted) -> None:
    small, big = tmp_path / f"small.{suffix}", tmp_path / f"big.{suffix}"
    write(small, 64)
    write(big, side)
    out = _measure(small, big)
    grew = out["grew"]
    print(
        f"\n| {name} | {side} x {side} | {big.stat().st_size} | {'scored' if out['error'] is None else 'refused'} "
        f"| {(out['cost'] or 0) / MIB:.0f} | {grew / MIB:.0f} |"
    )
    assert grew < 2 * MAX_DECODE_BYTES + SLACK, f"{name}: peak grew by {grew / MIB:.0f} MiB"  # the overall bound
    if accepted:
        assert out["error"] is None, out["error"]
        assert out["cost"] <= MAX_DECODE_BYTES
        bound = out["cost"] + 4 * side * side + SLACK  # the decoder's told cost + the 8-bit RGB copy
    else:
        assert out["error"] is not None and "over the 1073741824-byte limit" in out["error"], out["error"]
        bound = SLACK  # refused from the header: nothing decoded
    assert grew < bound, f"{name}: peak grew by {grew / MIB:.0f} MiB, bound {bound / MIB:.0f} MiB"


@pytest.mark.parametrize("kind", ["webp", "jpeg"])
def test_the_issues_uploads_are_refused_from_the_header_over_http(tmp_path, kind: str) -> None:
    """The server's path (bytes): a 16383^2 lossless WebP (4.68 GB per upload) and progressive CMYK JPEG
    are refused before anything is decoded; the peak grows by a few MiB."""
    data = flat_webp_lossless(16383, 16383) if kind == "webp" else flat_jpeg(16383, 16383, 4, True)
    small, big = tmp_path / f"small.{kind}", tmp_path / f"big.{kind}"
    small.write_bytes(flat_webp_lossless(64, 64) if kind == "webp" else flat_jpeg(64, 64, 4, True))
    big.write_bytes(data)
    out = _measure(small, big, as_bytes=True)
    assert out["error"] is not None and "<bytes>: 16383x16383" in out["error"], out["error"]
    assert out["grew"] < SLACK, f"peak grew by {out['grew'] / MIB:.0f} MiB"
