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
import stat
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..config import PreprocessConfig
from ..errors import BadInputError, InputNotFoundError
from .convert import convert_strip, nominal_range, resize_square
from .decoding import (
    ACCEPTED_FORMATS,
    DecodeCost,
    decode_cost,
    jpeg_draft_scale,
    webp_cost,
    webp_header_size,
)
from .decoding import (
    decoded_bytes as decoded_bytes,  # re-exported: the byte count per mode callers and tests use
)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})

#: Images with more pixels than this are refused (decompression-bomb guard; about 16k x 16k).
MAX_PIXELS = 256 * 1024 * 1024

#: Most bytes the decoder of one image may hold at once, told from the header before anything is decoded: the
#: decoded pixels (pixel count x Pillow's bytes per pixel for the mode: 1 for L/P/1, 2 for I;16, 4 for RGB, RGBA,
#: LA, I, F...) plus what that format's decoder keeps beside them (progressive JPEG's coefficients, WebP's canvases
#: and copies, libtiff's strip buffer; see :mod:`discopatch.data.decoding`). 1 GiB admits every 8-bit RGB(A) PNG
#: within :data:`MAX_PIXELS`; a budget in bytes, not pixels, is what makes the bound independent of bit depth and
#: format.
MAX_DECODE_BYTES = 1 << 30

#: Mode conversion works on horizontal strips of about this many pixels, so its temporaries (float64 for 16-bit and
#: float images, RGBA for transparency) stay around 10 MB instead of several copies of the whole image.
STRIP_PIXELS = 1 << 20

#: Files larger than this are refused from their size on disk, before a byte is read (the server's per-image limit,
#: ``max_image_bytes``, is far smaller). 1 GiB holds an uncompressed RGBA image at :data:`MAX_PIXELS`.
MAX_FILE_BYTES = 1 << 30

#: Leading bytes of the formats we expect; an undecodable file that starts with one is reported as damaged.
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"RIFF": "WebP"}

ImageInput = str | os.PathLike[str] | bytes | np.ndarray | Image.Image


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
    try:  # the folder scan below skips what it cannot read, so an unreadable folder would look empty
        with os.scandir(root):
            pass
    except PermissionError:
        raise ImageReadError(f"{root}: folder cannot be read (permission denied)") from None
    it = root.rglob("*") if recursive else root.glob("*")
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files stay as given (whatever their extension, so a bad one yields an error row); folders are expanded. A
    folder with no image in it stays as given too, so it gets an error row rather than vanishing (a folder named
    ``x.png`` used to give "scored 0 of 0")."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        out.extend((list_images(p) or [p]) if p.is_dir() else [p])
    return out


def _open_file(path: Path, name: str) -> tuple[BinaryIO, int]:
    """``path`` opened for reading, with its size, once it is known to be a regular file of an acceptable size.

    It is opened non-blocking and checked with ``fstat`` on the open descriptor, so a named pipe neither hangs the
    run (a FIFO's open waits for a writer) nor is taken for an empty file, and nothing can swap the file between
    the check and the read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImageReadError(f"{name}: file not found") from None
    except PermissionError:
        raise ImageReadError(f"{name}: permission denied") from None
    except OSError as e:  # a socket (ENXIO), a dangling special file, ...
        raise ImageReadError(f"{name}: cannot be opened ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            if not list_images(path):
                exts = " ".join(sorted(IMAGE_EXTENSIONS))
                raise ImageReadError(f"{name}: is a folder with no image files in it (looked for {exts})")
            raise ImageReadError(f"{name}: is a folder, not an image")
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _SPECIAL_FILES if test(st.st_mode)), "a special file")
            raise ImageReadError(f"{name}: is {kind}, not a regular file; images are read from regular files only")
        if st.st_size == 0:
            raise ImageReadError(f"{name}: empty file (0 bytes)")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageReadError(f"{name}: file of {st.st_size} bytes exceeds the {MAX_FILE_BYTES}-byte limit")
        if hasattr(os, "O_NONBLOCK"):  # POSIX: reads of a regular file then behave as usual
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)

#: Pillow's decompression-bomb limit and its truncated-image switch are module globals, checked on open and again
#: while loading (TIFF, GIF). They are set (:data:`MAX_PIXELS`; truncated images refused) while any decode runs and
#: put back when the last one ends (a count under a lock), so two decoding threads never restore each other's
#: setting mid-decode (a thread that saved and restored them on its own could let the other pad a truncated image).
_LIMIT_LOCK = threading.Lock()
_decoding = 0
_saved: tuple[int | None, bool] = (None, False)


@contextmanager
def _pillow_settings() -> Iterator[None]:
    global _decoding, _saved
    with _LIMIT_LOCK:
        if _decoding == 0:
            _saved = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        _decoding += 1
    try:
        yield
    finally:
        with _LIMIT_LOCK:
            _decoding -= 1
            if _decoding == 0:
                Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = _saved


def open_image(source: str | os.PathLike[str] | bytes, min_side: int | None = None) -> Image.Image:
    """Decode a file or bytes with Pillow, fully, with specific errors for the usual failures.

    The memory the decoder will need is told from the header first (:mod:`discopatch.data.decoding`) and an
    image over :data:`MAX_DECODE_BYTES` is refused before anything is decoded. A file is streamed, never read
    whole first. Given ``min_side`` (the model's image size), a JPEG that does not fit at full size is decoded at
    the least DCT reduction (1/2, 1/4, 1/8) that fits and keeps its short side at least ``min_side``; an image that
    fits is always decoded at full size, so reduced decoding never changes an image that decodes without it.
    """
    if isinstance(source, (bytes, bytearray)):
        name = "<bytes>"
        if not source:
            raise ImageReadError(f"{name}: empty input (0 bytes)")
        fh: BinaryIO = io.BytesIO(bytes(source))
        size = len(source)
    else:
        name = str(source)
        fh, size = _open_file(Path(source), name)
    with fh:
        img, _ = _decode(fh, size, name, min_side)
        if img.getexif().get(0x0112, 1) in range(2, 9):  # read while the file is open (TIFF reads it lazily)
            img = ImageOps.exif_transpose(img) or img
    return img


def decoding_cost(source: str | os.PathLike[str] | bytes, min_side: int | None = None) -> DecodeCost:
    """What decoding ``source`` through :func:`open_image` will hold at its peak, told from the header only (after
    the JPEG reduction ``min_side`` allows); raises :class:`ImageReadError` for what ``open_image`` refuses."""
    if isinstance(source, (bytes, bytearray)):
        fh: BinaryIO = io.BytesIO(bytes(source))
        size, name = len(source), "<bytes>"
    else:
        name = str(source)
        fh, size = _open_file(Path(source), name)
    with fh:
        return _decode(fh, size, name, min_side, load=False)[1]


def _decode(
    fh: BinaryIO, size: int, name: str, min_side: int | None, load: bool = True
) -> tuple[Image.Image, DecodeCost]:
    head = fh.read(32)
    fh.seek(0)
    webp = webp_header_size(head)
    if webp is not None:  # Pillow's WebP open reads the whole file and sets up the canvas: decide before it
        _check_pixels(name, *webp)
        cost = webp_cost(*webp, size)
        if cost.total > MAX_DECODE_BYTES:
            raise _too_costly(name, webp, "WebP", cost)
    try:
        with _pillow_settings():
            with _LIMIT_LOCK, warnings.catch_warnings():  # the warning filter is process-wide too
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(fh, formats=ACCEPTED_FORMATS)
            w, h = img.size
            _check_pixels(name, w, h)
            cost = decode_cost(img, fh, size)
            if cost.total > MAX_DECODE_BYTES:
                scale = None if min_side is None else jpeg_draft_scale(img, fh, MAX_DECODE_BYTES, min_side)
                if scale is None:
                    raise _too_costly(name, (w, h), f"{img.format} {img.mode}", cost)
                full, cost = cost, decode_cost(img, fh, size, scale)
                img.draft(img.mode, (w // scale, h // scale))
                if img.size != (-(-w // scale), -(-h // scale)):  # Pillow chose another scale: do not guess
                    raise _too_costly(name, (w, h), f"{img.format} {img.mode}", full)
            if load:
                img.load()
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"{name}: refused as a possible decompression bomb ({e})") from None
    except UnidentifiedImageError:
        fh.seek(0)
        data = fh.read(16)
        fmt = next((f for sig, f in _SIGNATURES.items() if data.startswith(sig)), None)
        if fmt is not None:
            raise ImageReadError(f"{name}: corrupt or truncated image (a {fmt} header, undecodable)") from None
        other = _other_format(fh)
        if other is not None:
            accepted = ", ".join(ACCEPTED_FORMATS)
            raise ImageReadError(f"{name}: {other} images are not accepted (accepted: {accepted})") from None
        raise ImageReadError(f"{name}: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(f"{name}: corrupt or truncated image ({e})") from None
    return img, cost


def _check_pixels(name: str, w: int, h: int) -> None:
    if w * h > MAX_PIXELS:
        raise ImageReadError(f"{name}: declared size {w}x{h} exceeds the {MAX_PIXELS}-pixel limit")


def _too_costly(name: str, size: tuple[int, int], kind: str, cost: DecodeCost) -> ImageReadError:
    return ImageReadError(
        f"{name}: {size[0]}x{size[1]} {kind} needs {cost.total} bytes to decode ({cost.describe()}), "
        f"over the {MAX_DECODE_BYTES}-byte limit"
    )


def _other_format(fh: BinaryIO) -> str | None:
    """The format Pillow would have opened the file as, for a clearer refusal; only the header is parsed."""
    fh.seek(0)
    try:
        with _LIMIT_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Image.open(fh).format
    except Exception:  # whatever stops Pillow (a bomb of an unaccepted format too) leaves the generic message
        return None


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
    if img.tell() != 0:  # a caller's Pillow image left on a later frame (a decoded file is always on frame 0)
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
            if img.mode == "F" and not np.isfinite(a).all():
                raise ImageReadError("non-finite pixel values (NaN or infinity) in a floating-point image")
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
        value_range = nominal_range(img.mode, lo, hi)
    if len(strips) == 1:
        return convert_strip(img, target, value_range)
    out = Image.new(target, img.size)
    for box in strips:
        out.paste(convert_strip(img.crop(box), target, value_range), box[:2])
    return out


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
        img = open_image(source, min_side=cfg.image_size)
    if img.width < 1 or img.height < 1:
        raise ImageReadError("image has no pixels")
    try:
        img = _to_mode(img, cfg.channels)  # rebinding frees a decoded source before the resize allocates
    except ImageReadError as e:
        if isinstance(source, (str, os.PathLike)):
            raise ImageReadError(f"{source}: {e}") from None
        raise
    out = np.asarray(resize_square(img, cfg), dtype=np.uint8)
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
