"""Reading and preprocessing images: one pipeline for training, calibration, ID and OOD alike.

Any input - a file path, raw bytes, a Pillow image or a uint8 array - goes through :func:`preprocess`, which
returns a ``(S, S)`` (gray) or ``(S, S, 3)`` (RGB) uint8 array. Sharing this single path is what keeps an
evaluation honest: ID and OOD images are never resized, converted or compressed differently.

Failures raise :class:`ImageReadError` with a message that says what is wrong with *this* file, so callers can
record an error row and carry on with the rest.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..config import PreprocessConfig
from ..errors import BadInputError, InputNotFoundError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})

#: Images with more pixels than this are refused (decompression-bomb guard; about 16k x 16k).
MAX_PIXELS = 256 * 1024 * 1024

#: Most bytes one image's decoded pixels may take: its pixel count times Pillow's bytes per pixel for the decoded mode
#: (1 for L/P/1, 2 for I;16, 4 for RGB, RGBA, LA, I, F...), checked from the header before anything is decoded.
#: 1 GiB admits every 8-bit RGB(A) image within :data:`MAX_PIXELS`; a budget in bytes, not pixels, is what makes
#: the memory bound independent of bit depth.
MAX_DECODE_BYTES = 1 << 30

#: Mode conversion works on horizontal strips of about this many pixels, so its temporaries (float64 for 16-bit and
#: float images, RGBA for transparency) stay around 10 MB instead of several copies of the whole image.
STRIP_PIXELS = 1 << 20

#: Files larger than this are refused from their size on disk, before a byte is read (the server's per-image limit,
#: ``max_image_bytes``, is far smaller). 1 GiB holds an uncompressed RGBA image at :data:`MAX_PIXELS`.
MAX_FILE_BYTES = 1 << 30

#: ``resize_crop`` resamples only the centre square once the resized image would exceed this many times
#: ``image_size ** 2`` pixels (aspect ratios beyond 16:1), so a 1 x 100000 strip cannot exhaust memory.
MAX_RESIZE_FACTOR = 16

#: Leading bytes of the formats we expect; an undecodable file that starts with one is reported as damaged.
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"RIFF": "WebP"}

ImageInput = str | os.PathLike[str] | bytes | np.ndarray | Image.Image


def decoded_bytes(mode: str, width: int, height: int) -> int:
    """Bytes Pillow allocates for a ``mode`` image of this size: 1 per pixel for 8-bit single-band modes, 2 for the
    16-bit ``I;16`` family and 4 for everything else (Pillow stores RGB and two-band modes in 4 bytes)."""
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return width * height * per_pixel


class ImageReadError(BadInputError, ValueError):
    """An input could not be turned into an image; the message names the reason."""


def utf8_text(text: str) -> str:
    """``text`` as valid UTF-8 for an output file or a database: a file name that is not valid UTF-8 reaches Python
    with its bad bytes as lone surrogates (PEP 383), which no UTF-8 writer accepts; each such byte becomes ``\\xNN``
    (``backslashreplace``), so the name is kept, stays readable and maps to the same text every time."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that did not come from a file name's bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def list_images(root: str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """Image files under ``root`` (by extension, case-insensitive), sorted so every run sees the same order."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise InputNotFoundError(f"no such file or folder: {root}")
    it = root.rglob("*") if recursive else root.glob("*")
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files stay as given (whatever their extension, so a bad one yields an error row); folders are expanded."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        out.extend(list_images(p) if p.is_dir() else [p])
    return out


def open_image(source: str | os.PathLike[str] | bytes) -> Image.Image:
    """Decode a file or bytes with Pillow, fully, with specific errors for the usual failures."""
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)):
        path = Path(source)
        if not path.exists():
            raise ImageReadError(f"{name}: file not found")
        if path.is_dir():
            raise ImageReadError(f"{name}: is a folder, not an image")
        size = path.stat().st_size
        if size == 0:
            raise ImageReadError(f"{name}: empty file (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise ImageReadError(f"{name}: file of {size} bytes exceeds the {MAX_FILE_BYTES}-byte limit")
        data = path.read_bytes()
    else:
        data = bytes(source)
        if not data:
            raise ImageReadError(f"{name}: empty input (0 bytes)")
    old_max = Image.MAX_IMAGE_PIXELS
    old_trunc = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageReadError(f"{name}: declared size {w}x{h} exceeds the {MAX_PIXELS}-pixel limit")
            need = decoded_bytes(img.mode, w, h)
            if need > MAX_DECODE_BYTES:
                raise ImageReadError(
                    f"{name}: {w}x{h} {img.mode} needs {need} bytes decoded, over the {MAX_DECODE_BYTES}-byte limit"
                )
            img.load()
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"{name}: refused as a possible decompression bomb ({e})") from None
    except UnidentifiedImageError:
        fmt = next((f for sig, f in _SIGNATURES.items() if data.startswith(sig)), None)
        if fmt is not None:
            raise ImageReadError(f"{name}: corrupt or truncated image (a {fmt} header, undecodable)") from None
        raise ImageReadError(f"{name}: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(f"{name}: corrupt or truncated image ({e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_max
        ImageFile.LOAD_TRUNCATED_IMAGES = old_trunc
    return img


_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to ``L`` or ``RGB`` the same way every time, in strips of :data:`STRIP_PIXELS`.

    EXIF orientation is applied first; transparency is composited on black (the Fashion-MNIST background);
    16-bit and float images are rescaled from their own value range to 8 bits. Every step but the value range is
    per pixel, so converting strip by strip gives the whole-image result while only the source and the 8-bit
    output are ever whole: a 16384 x 16384 16-bit PNG used to build several float64 copies (about 7.7 GB).
    """
    if img.getexif().get(0x0112, 1) in range(2, 9):  # only a real rotation pays for a transposed copy
        img = ImageOps.exif_transpose(img) or img
    if getattr(img, "n_frames", 1) > 1 and img.tell() != 0:
        img.seek(0)
    target = "L" if channels == 1 else "RGB"
    if img.mode == target:
        return img
    w, h = img.size
    rows = max(1, STRIP_PIXELS // w)
    strips = [(0, y, w, min(h, y + rows)) for y in range(0, h, rows)]
    value_range = None
    if img.mode in _HIGH_DEPTH:
        lo, hi = np.inf, -np.inf
        for box in strips:
            a = np.asarray(img.crop(box), dtype=np.float64)
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
        value_range = _value_range(img.mode, lo, hi)
    if len(strips) == 1:
        return _convert(img, target, value_range)
    out = Image.new(target, img.size)
    for box in strips:
        out.paste(_convert(img.crop(box), target, value_range), box[:2])
    return out


def _convert(img: Image.Image, target: str, value_range: tuple[float, float] | None) -> Image.Image:
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


def _value_range(mode: str, lo: float, hi: float) -> tuple[float, float]:
    """The nominal range of a high-bit-depth image with extremes ``lo``, ``hi``: 16-bit and [0, 1] float are fixed,
    others min-max."""
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and 255 < hi <= 65535):
        return 0.0, 65535.0
    if mode == "I" and lo >= 0 and hi <= 255:
        return 0.0, 255.0
    if mode == "F" and lo >= 0 and hi <= 1:
        return 0.0, 1.0
    return lo, hi


def _resize(img: Image.Image, cfg: PreprocessConfig) -> Image.Image:
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


def array_to_pil(arr: np.ndarray) -> Image.Image:
    """A uint8 ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array as a Pillow image."""
    if not isinstance(arr, np.ndarray):
        raise ImageReadError(f"expected a numpy array, got {type(arr).__name__}")
    if arr.dtype == np.uint16:
        return Image.fromarray(np.ascontiguousarray(arr if arr.ndim == 2 else arr[..., 0]))
    if arr.dtype != np.uint8:
        raise ImageReadError(
            f"array images must be uint8 (0..255), got {arr.dtype}; "
            "convert with np.clip(x * 255, 0, 255).round().astype(np.uint8) for floats in [0, 1]"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(arr))
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(arr))
    raise ImageReadError(f"array image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {arr.shape}")


def preprocess(source: ImageInput, cfg: PreprocessConfig) -> np.ndarray:
    """Any supported input -> uint8 ``(S, S)`` or ``(S, S, 3)`` through the single shared pipeline."""
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, np.ndarray):
        img = array_to_pil(source)
    else:
        img = open_image(source)
    if img.width < 1 or img.height < 1:
        raise ImageReadError("image has no pixels")
    img = _to_mode(img, cfg.channels)  # rebinding frees a decoded source before the resize allocates
    out = np.asarray(_resize(img, cfg), dtype=np.uint8)
    return np.ascontiguousarray(out)


def preprocess_many(
    sources: Iterable[ImageInput], cfg: PreprocessConfig
) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """Yield ``(index, image or None, error or None)`` for each input; one bad input never stops the rest."""
    for i, src in enumerate(sources):
        try:
            yield i, preprocess(src, cfg), None
        except ImageReadError as e:
            yield i, None, str(e)
        except Exception as e:
            yield (
                i,
                None,
                f"{src if isinstance(src, (str, Path)) else '<input>'}: unexpected {type(e).__name__}: {e}",
            )


def stack_images(images: Iterable[ImageInput], cfg: PreprocessConfig) -> np.ndarray:
    """Preprocess inputs (typically already-decoded arrays) into one ``(N, S, S[, 3])`` uint8 stack (errors raise)."""
    out = [preprocess(a, cfg) for a in images]
    if not out:
        shape = (0, cfg.image_size, cfg.image_size) + ((3,) if cfg.channels == 3 else ())
        return np.zeros(shape, np.uint8)
    return np.stack(out)
