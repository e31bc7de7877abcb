"""Image payloads for tests that talk to the HTTP service."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_bytes(a: np.ndarray) -> bytes:
    """``a`` (H x W or H x W x C, uint8) encoded as a PNG file's bytes."""
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()
