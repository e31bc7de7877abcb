"""The IDX container format of MNIST and Fashion-MNIST: a reader that checks every header field and the payload
size (so a truncated or foreign file fails here, not as garbage images later) and a writer for small fixtures.

Files are read gzipped or not, told by their content rather than their suffix (Debian ships ``.gz`` files; a user may
have decompressed them).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_idx", "write_idx"]

# IDX type byte -> element dtype. Multi-byte elements are stored big-endian.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# "u1", "i2", ... (byte-order free) -> IDX type byte, for write_idx.
_IDX_CODES: dict[str, int] = {dt.str[1:]: code for code, dt in _IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """Read a file, gunzipping it when it starts with the gzip magic bytes.

    Sniffing the content instead of trusting the ``.gz`` suffix lets one parser read both the files
    Debian ships and plain IDX files that someone has already decompressed.
    """
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == _GZIP_MAGIC else raw


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (the MNIST container format), gzipped or not, into a native-endian array.

    The header is two zero bytes, a type byte, the number of dimensions, then one big-endian ``uint32``
    per dimension. Every field is checked and the payload must have exactly the announced size, so a
    truncated download or a file of another format fails loudly here instead of producing garbage
    images later.

    Raises:
        ValueError: if the magic number, type code, dimensions or payload size are invalid.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(data)} bytes)")
    magic = data[:4].hex()
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: bad IDX magic number 0x{magic} (must start with two zero bytes)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x} in magic number 0x{magic}")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares zero dimensions (magic number 0x{magic})")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, {ndim} dimensions declared)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        raise ValueError(
            f"{path}: IDX payload is {actual} bytes but the header shape {dims} of {dtype} needs {expected}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    # Native byte order, and a writable copy that does not keep the whole file's bytes alive.
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file, gzipped if ``compress`` (default: if the name ends in ``.gz``).

    The inverse of :func:`read_idx`. It exists to build small IDX fixtures, e.g. for tests or for a
    cut-down Fashion-MNIST directory pointed to by ``DISCOPATCH_FASHION_MNIST``.
    """
    path = Path(path)
    array = np.asarray(array)
    key = array.dtype.str[1:]
    if key not in _IDX_CODES:
        raise ValueError(f"dtype {array.dtype} cannot be stored in IDX (allowed: u1, i1, i2, i4, f4, f8)")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    if any(d >= 2**32 for d in array.shape):
        raise ValueError(f"IDX dimensions must fit in uint32, got shape {array.shape}")
    code = _IDX_CODES[key]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    # mtime=0 keeps the gzip output byte-identical across runs.
    path.write_bytes(gzip.compress(header + payload, mtime=0) if compress else header + payload)
