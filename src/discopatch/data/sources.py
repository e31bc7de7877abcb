"""Image collections for training and calibration: folders or in-memory arrays, with a deterministic split."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import PreprocessConfig
from ..errors import ConfigError, InputNotFoundError
from ..log import progress_bar
from .images import IMAGE_EXTENSIONS, ImageInput, ImageReadError, expand_paths, list_images, preprocess, preprocess_many


@dataclass
class ImageSet:
    """Preprocessed images ``(N, S, S[, 3])`` uint8 with a name per image and the inputs that failed."""

    images: np.ndarray
    names: list[str]
    errors: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: Sequence[int] | np.ndarray) -> ImageSet:
        idx = np.asarray(idx, dtype=np.int64)
        return ImageSet(self.images[idx], [self.names[i] for i in idx], [])


def load_images(
    sources: Sequence[ImageInput],
    cfg: PreprocessConfig,
    names: Sequence[str] | None = None,
    progress: bool = False,
    desc: str = "loading images",
) -> ImageSet:
    """Preprocess many inputs; unreadable ones are collected in ``errors`` instead of stopping the load."""
    if names is None:
        names = [str(s) if isinstance(s, (str, os.PathLike)) else f"#{i}" for i, s in enumerate(sources)]
    good: list[np.ndarray] = []
    good_names: list[str] = []
    errors: list[tuple[str, str]] = []
    it = preprocess_many(sources, cfg)
    for i, img, err in progress_bar(it, total=len(sources), desc=desc, disable=not progress, unit="img"):
        if img is None:
            errors.append((names[i], err or "unknown error"))
        else:
            good.append(img)
            good_names.append(names[i])
    shape = (0, cfg.image_size, cfg.image_size) + ((3,) if cfg.channels == 3 else ())
    images = np.stack(good) if good else np.zeros(shape, np.uint8)
    return ImageSet(images, good_names, errors)


def load_folder(root: str | os.PathLike[str], cfg: PreprocessConfig, progress: bool = False) -> ImageSet:
    """All images under ``root`` (recursive), named by their path relative to ``root``."""
    root = Path(root)
    files = list_images(root)
    if not files:
        raise InputNotFoundError(f"no images with extensions {sorted(IMAGE_EXTENSIONS)} found under {root}")
    names = [str(f.relative_to(root)) if root.is_dir() else f.name for f in files]
    return load_images(files, cfg, names=names, progress=progress, desc=f"loading {root}")


def split_train_val(names: Sequence[str], val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split by a keyed hash of each name.

    Ranking by hash (instead of a shuffled permutation) keeps an image on the same side of the split when other
    images are added to or removed from the folder.
    """
    n = len(names)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    keys = [hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest() for name in names]
    order = sorted(range(n), key=lambda i: keys[i])
    val = np.sort(np.asarray(order[:n_val], dtype=np.int64))
    train = np.sort(np.asarray(order[n_val:], dtype=np.int64))
    return train, val


def fingerprint_inputs(images: str | os.PathLike[str] | np.ndarray | Sequence[ImageInput]) -> dict[str, object]:
    """A SHA-256 that identifies a list of training inputs without storing it (``detector.json``'s
    ``training_data``), so that a detector can be traced back to the images it learnt from.

    Each input becomes one line and the hash is taken over the sorted lines, so the order of a list does not matter:

    * a file: ``file<TAB>NAME<TAB>SIZE``, NAME its path relative to the folder given (its file name when a single
      file is given, the path as given inside a list), SIZE in bytes. The files are not read, so fingerprinting a
      folder is cheap; an edit that keeps a file's size is not seen.
    * an array, a Pillow image or raw bytes: ``array<TAB>DTYPE<TAB>SHAPE<TAB>SHA256`` over the pixel bytes
      (``image<TAB>MODE<TAB>WxH<TAB>SHA256`` for Pillow, ``bytes<TAB>SHA256``), so the same pixels given as a
      stack or as a list give the same fingerprint.

    ``scheme`` says which kind was hashed: ``names+sizes`` (files only), ``array-bytes`` (in-memory only) or
    ``mixed``.
    """
    if isinstance(images, (str, os.PathLike)):
        root = Path(images)
        files = list_images(root)
        lines = [
            f"file\t{f.relative_to(root).as_posix() if root.is_dir() else f.name}\t{f.stat().st_size}" for f in files
        ]
        kinds = {"file"}
    else:
        items = list(images)
        lines = [_input_line(x) for x in items]
        kinds = {line.split("\t", 1)[0] for line in lines}
    h = hashlib.sha256()
    for line in sorted(lines):
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    scheme = "names+sizes" if kinds <= {"file"} else "array-bytes" if "file" not in kinds else "mixed"
    return {"sha256": h.hexdigest(), "n": len(lines), "scheme": scheme}


def _input_line(x: ImageInput) -> str:
    if isinstance(x, (str, os.PathLike)):
        p = Path(x)
        return f"file\t{p.as_posix()}\t{p.stat().st_size if p.is_file() else -1}"
    if isinstance(x, np.ndarray):
        data = np.ascontiguousarray(x)
        # an ndarray has the buffer protocol; numpy's stubs declare it (__buffer__) only for Python >= 3.12
        digest = hashlib.sha256(data).hexdigest()  # type: ignore[arg-type]
        return f"array\t{data.dtype.str}\t{'x'.join(map(str, data.shape))}\t{digest}"
    if isinstance(x, Image.Image):
        return f"image\t{x.mode}\t{x.width}x{x.height}\t{hashlib.sha256(x.tobytes()).hexdigest()}"
    return f"bytes\t{hashlib.sha256(bytes(x)).hexdigest()}"


#: What the detector accepts as images: a folder or file path, a uint8 stack, or a list of inputs in any mix.
Images = str | os.PathLike[str] | np.ndarray | Sequence[ImageInput]


def _stack_items(images: np.ndarray) -> list[ImageInput]:
    if images.ndim not in (3, 4):
        raise ConfigError(f"an image stack must be (N, H, W) or (N, H, W, C); got shape {images.shape}")
    return list(images)


def read_images(images: Images, cfg: PreprocessConfig, progress: bool = False) -> ImageSet:
    """Inputs -> preprocessed :class:`ImageSet` (a folder, a list of paths/arrays, or a uint8 stack)."""
    if isinstance(images, (str, os.PathLike)):
        return load_folder(images, cfg, progress=progress)
    items = _stack_items(images) if isinstance(images, np.ndarray) else list(images)
    return load_images(items, cfg, progress=progress)


def image_stack(images: Images | ImageSet, cfg: PreprocessConfig, progress: bool = False) -> np.ndarray:
    """Inputs -> one preprocessed uint8 stack; any unreadable input raises (a folder: ``ValueError`` naming it)."""
    if isinstance(images, (str, os.PathLike)):
        data = load_folder(images, cfg, progress=progress)
        if data.errors:
            raise ImageReadError(f"{len(data.errors)} unreadable image(s), first: {data.errors[0][1]}")
        return data.images
    if isinstance(images, ImageSet):
        return images.images
    out = [preprocess(x, cfg) for x in (list(images) if isinstance(images, np.ndarray) else images)]
    if not out:
        return np.zeros((0, cfg.image_size, cfg.image_size) + ((3,) if cfg.channels == 3 else ()), np.uint8)
    return np.stack(out)


def input_list(images: Images) -> list[ImageInput]:
    """One entry per input: a path alone is expanded like ``discopatch score`` does (a folder to its images, a
    file kept as given, so a missing one stays an input and becomes an error entry); a stack is split into images;
    inside a list each element is one input."""
    if isinstance(images, (str, os.PathLike)):
        return list(expand_paths([images]))
    return _stack_items(images) if isinstance(images, np.ndarray) else list(images)
