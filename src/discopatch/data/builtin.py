"""Built-in image data sources that work with no network access.

discopatch is developed and tested on machines that can reach package registries (apt, PyPI) but not
the wider internet, so every data source here is either shipped inside this package or installed by an
ordinary package manager:

* **Fashion-MNIST** (the in-distribution set of the grayscale protocol) comes from the Debian package
  ``dataset-fashion-mnist``, which installs the official IDX ``.gz`` files under
  ``/usr/share/datasets/fashion-mnist``. :func:`load_fashion_mnist` reads them with a small IDX parser
  of our own, so neither torchvision (which does not work with the project's CPU torch build) nor a
  downloader is needed.
* **Animal-MNIST** (a near-OOD set in the same 28x28 format) comes from the PyPI package
  ``animal-mnist==0.4``, which stores its arrays as gzipped pickles. :func:`load_animal_mnist` reads
  them with a restricted unpickler that can only rebuild plain numpy arrays, because a normal
  ``pickle.load`` on a file from a third-party package would run any code that file asks for.
* Small, class-balanced **demo subsets** of both ship in ``discopatch/data/assets`` (see the README
  there for provenance, licences and checksums), so the demo and the test suite run even where neither
  package is installed. ``scripts/make_demo_assets.py`` produces them.

All images are ``uint8`` arrays of shape ``(N, 28, 28)`` with a bright object on a dark background
(0 = black, 255 = white); all labels are ``uint8`` class indices ``0..9``.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
import warnings
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, MissingFileError
from .host import host_path
from .idx import read_idx, write_idx

__all__ = [
    "ANIMAL_MNIST_CLASSES",
    "DEFAULT_FASHION_MNIST_ROOT",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ENV_VAR",
    "DemoSplit",
    "RestrictedNumpyUnpickler",
    "load_animal_mnist",
    "load_demo_animal_mnist",
    "load_demo_fashion_mnist",
    "load_fashion_mnist",
    "read_idx",
    "restricted_numpy_loads",
    "write_idx",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the IDX files.
DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
#: Environment variable that overrides :data:`DEFAULT_FASHION_MNIST_ROOT` (non-Debian systems, copies).
FASHION_MNIST_ENV_VAR = "DISCOPATCH_FASHION_MNIST"

#: Fashion-MNIST class names, indexed by label.
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
#: Animal-MNIST class names, indexed by label (order checked by eye on a contact sheet of version 0.4).
ANIMAL_MNIST_CLASSES: tuple[str, ...] = (
    "Bear",
    "Bird",
    "Cat",
    "Cow",
    "Dog",
    "Elephant",
    "Giraffe",
    "Horse",
    "Sheep",
    "Zebra",
)

_FASHION_DEMO_ASSET = "fashion_mnist_demo.npz"
_ANIMAL_DEMO_ASSET = "animal_mnist_demo.npz"
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_ANIMAL_PACKAGE = "animal_mnist"
_ANIMAL_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")
_IMAGE_SHAPE = (28, 28)
_NUM_CLASSES = 10


# ---------------------------------------------------------------------------------------------------
# Shipped demo subsets
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DemoSplit:
    """A train/test pair of image arrays with their labels.

    Frozen so that a split passed around a pipeline cannot silently have one of its arrays swapped
    out; ``eq=False`` because element-wise numpy comparison has no single truth value.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _load_asset(name: str) -> dict[str, np.ndarray]:
    """Read every array of a shipped ``.npz`` asset into memory.

    ``importlib.resources`` is used rather than a path relative to ``__file__`` so that the assets are
    found however the package is installed (wheel, editable install, zip). ``allow_pickle=False`` keeps
    ``np.load`` from ever unpickling anything, even if an asset were replaced.
    """
    resource = files(__package__ or "discopatch.data").joinpath("assets").joinpath(name)
    if not resource.is_file():
        raise MissingFileError(
            f"discopatch demo asset {name!r} is missing from the installed package; reinstall "
            "discopatch or regenerate it with `python scripts/make_demo_assets.py`"
        )
    with as_file(resource) as path, np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def load_demo_fashion_mnist() -> DemoSplit:
    """Return the Fashion-MNIST demo subset shipped with discopatch.

    4,000 training images (400 per class, from the official train split) and 2,000 test images (200
    per class, from the official t10k split), so that the demo and the tests have real in-distribution
    data even where the Debian package is not installed. Images are ``uint8`` ``(N, 28, 28)``, labels
    ``uint8`` ``(N,)``.
    """
    arrays = _load_asset(_FASHION_DEMO_ASSET)
    return DemoSplit(
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"],
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"],
    )


def _load_demo_animal_mnist_with_labels() -> tuple[np.ndarray, np.ndarray]:
    arrays = _load_asset(_ANIMAL_DEMO_ASSET)
    return arrays["images"], arrays["labels"]


def load_demo_animal_mnist() -> np.ndarray:
    """Return the Animal-MNIST demo subset shipped with discopatch as ``uint8`` ``(1000, 28, 28)``.

    100 images per class, with no exact duplicates. Only the images are returned because the demo uses
    the set as unlabelled near-OOD data; :func:`load_animal_mnist` returns labels as well.
    """
    return _load_demo_animal_mnist_with_labels()[0]


# ---------------------------------------------------------------------------------------------------
# Fashion-MNIST from Debian
# ---------------------------------------------------------------------------------------------------


def _fashion_root(root: str | Path | None) -> Path:
    if root is not None:
        return Path(root)
    return Path(os.environ.get(FASHION_MNIST_ENV_VAR) or host_path(DEFAULT_FASHION_MNIST_ROOT))


def load_fashion_mnist(
    root: str | Path | None = None, split: Literal["train", "test"] = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Load the full Fashion-MNIST ``train`` (60,000) or ``test`` (10,000, the t10k files) split.

    Args:
        root: directory with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``. ``None`` (the
            default) means ``$DISCOPATCH_FASHION_MNIST`` if set, else
            ``/usr/share/datasets/fashion-mnist``, where Debian's ``dataset-fashion-mnist`` package
            puts them. An explicit argument always wins over the environment variable.
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(images, labels)``: ``uint8`` ``(N, 28, 28)`` and ``uint8`` ``(N,)`` with values ``0..9``.

    Raises:
        FileNotFoundError: if the files are missing; the message says how to install them.
        ValueError: if ``split`` is unknown or the files are not valid Fashion-MNIST IDX files.
    """
    if split not in _FASHION_FILES:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    base = _fashion_root(root)
    image_path, label_path = (base / name for name in _FASHION_FILES[split])
    missing = [str(p) for p in (image_path, label_path) if not p.is_file()]
    if missing:
        raise MissingFileError(
            f"Fashion-MNIST {split} files not found: {', '.join(missing)}. On Debian/Ubuntu install "
            f"them with `apt-get install dataset-fashion-mnist` (they go to {DEFAULT_FASHION_MNIST_ROOT}),"
            f" or set {FASHION_MNIST_ENV_VAR} to a directory holding the official IDX .gz files. "
            "discopatch.data.builtin.load_demo_fashion_mnist() gives a small shipped subset without them."
        )
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != _IMAGE_SHAPE:
        raise ValueError(f"{image_path}: expected uint8 (N, 28, 28) images, got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{label_path}: expected a uint8 label vector, got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images in {image_path} but {len(labels)} labels in {label_path}")
    if labels.size and labels.max() >= _NUM_CLASSES:
        raise ValueError(f"{label_path}: label {int(labels.max())} out of range 0..{_NUM_CLASSES - 1}")
    return images, labels


# ---------------------------------------------------------------------------------------------------
# Animal-MNIST from PyPI, through a restricted unpickler
# ---------------------------------------------------------------------------------------------------


def _numpy_reconstruct() -> Any:
    """Return numpy's ndarray pickle reconstructor (in ``numpy._core`` since numpy 2, else ``numpy.core``)."""
    core = getattr(np, "_core", None)
    if core is None:  # numpy 1.x
        core = np.core
    return core.multiarray._reconstruct


# (module, name) -> object: the only globals a pickle may reference. Read-only so that it cannot be
# widened at runtime by accident; RestrictedNumpyUnpickler's docstring says why each entry is needed.
_PICKLE_ALLOWED_GLOBALS: MappingProxyType[tuple[str, str], Any] = MappingProxyType(
    {
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
)


class RestrictedNumpyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild plain numpy arrays and nothing else.

    A pickle is a small program: each ``GLOBAL``/``STACK_GLOBAL`` opcode imports an arbitrary callable
    that ``REDUCE`` then calls, which is how a pickle can run ``os.system``. Every such import goes
    through :meth:`find_class`, so allowing only the names below leaves loading unable to call
    anything else:

    * ``numpy._core.multiarray._reconstruct`` and its numpy<2 spelling
      ``numpy.core.multiarray._reconstruct``: creates an empty ndarray of a given class, shape and dtype
      (this is what every ndarray's ``__reduce__`` names);
    * ``numpy.ndarray``: the class argument of ``_reconstruct``; ``BUILD`` then fills in the data via
      ``ndarray.__setstate__``;
    * ``numpy.dtype``: rebuilds the element type (``BUILD`` restores it via ``dtype.__setstate__``).

    That is exactly what an ndarray pickled with protocol 3 or 4 references, which is how
    animal-mnist 0.4 stores its data. Deliberately not allowed, because each widens what a crafted
    file can reach and none is needed here: numpy's scalar helper ``numpy._core.multiarray.scalar``
    (no numpy scalars are stored), ``_codecs.encode`` (only protocol-2 pickles use it),
    ``numpy._core.numeric._frombuffer`` (protocol-5 buffers) and anything from ``copyreg``.
    Persistent references are refused, and :func:`restricted_numpy_loads` also rejects object-dtype
    arrays, whose elements could be any picklable value.

    This guards against code execution, not against resource exhaustion: a crafted file can still
    declare a huge array. Use it on files of known size, such as those inside an installed package.
    """

    def find_class(self, module: str, name: str) -> Any:
        # Return pre-resolved objects instead of importing: this also avoids importing the deprecated
        # ``numpy.core`` alias under numpy 2 just because an old pickle names it.
        try:
            return _PICKLE_ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': only plain numpy arrays may be unpickled"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing to load a pickle with persistent references")


def restricted_numpy_loads(data: bytes) -> np.ndarray:
    """Unpickle ``data`` with :class:`RestrictedNumpyUnpickler` and check that it holds a plain ndarray.

    Raises:
        pickle.UnpicklingError: if the pickle references anything outside the allow-list, or does not
            hold a numeric numpy array.
    """
    obj = RestrictedNumpyUnpickler(io.BytesIO(data)).load()
    if type(obj) is not np.ndarray:
        raise pickle.UnpicklingError(f"expected a numpy.ndarray, the pickle holds {type(obj).__name__}")
    if obj.dtype.hasobject:
        raise pickle.UnpicklingError("refusing an object-dtype array from a pickle")
    return obj


def _animal_mnist_data_dir() -> Path | None:
    """Find the installed ``animal_mnist`` package's data directory without importing the package.

    ``importlib.util.find_spec`` on a top-level name only searches ``sys.path``; it does not execute
    the package's ``__init__`` (and its sibling modules import tensorflow), so none of its code runs.
    """
    spec = importlib.util.find_spec(_ANIMAL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "Animal_MNIST"
        if all((candidate / name).is_file() for name in _ANIMAL_FILES):
            return candidate
    return None


def _read_animal_mnist_package(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    image_file, label_file = (data_dir / name for name in _ANIMAL_FILES)
    images = restricted_numpy_loads(gzip.decompress(image_file.read_bytes()))
    labels = restricted_numpy_loads(gzip.decompress(label_file.read_bytes()))
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != _IMAGE_SHAPE:
        raise ValueError(f"{image_file}: expected uint8 (N, 28, 28) images, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{label_file}: expected {len(images)} integer labels, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= _NUM_CLASSES):
        raise ValueError(f"{label_file}: labels outside 0..{_NUM_CLASSES - 1}")
    return np.ascontiguousarray(images), labels.astype(np.uint8)


def load_animal_mnist(*, allow_fallback: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Load all 10,000 Animal-MNIST silhouettes from the installed ``animal-mnist`` PyPI package.

    Install it with ``pip install --no-deps animal-mnist==0.4`` (``--no-deps`` because its metadata
    pulls in tensorflow, pandas and scikit-learn, none of which are needed to read the data). Its
    pickled arrays are read with :class:`RestrictedNumpyUnpickler`, never with plain ``pickle.load``,
    and the package's own Python code is never imported.

    Note that the package holds 284 pairs of exact duplicate images (each pair within one class);
    they are returned as stored. The shipped demo subset has none.

    Args:
        allow_fallback: if the package is not installed, warn and return the shipped 1,000-image demo
            subset (100 per class) instead of raising. Set to ``False`` where the full set is required.

    Returns:
        ``(images, labels)``: ``uint8`` ``(N, 28, 28)`` white-on-black silhouettes and ``uint8``
        ``(N,)`` labels indexing :data:`ANIMAL_MNIST_CLASSES`.

    Raises:
        ModuleNotFoundError: if the package is missing and ``allow_fallback`` is false.
    """
    data_dir = _animal_mnist_data_dir()
    if data_dir is not None:
        return _read_animal_mnist_package(data_dir)
    message = (
        "the 'animal-mnist' package (with data/Animal_MNIST/animal_{data,label}_version_3.gz) is not "
        "installed; install it with `pip install --no-deps animal-mnist==0.4`"
    )
    if not allow_fallback:
        raise ModuleNotFoundError(message, name=_ANIMAL_PACKAGE)
    warnings.warn(
        f"{message}. Falling back to the 1,000-image demo subset shipped with discopatch.",
        RuntimeWarning,
        stacklevel=2,
    )
    return _load_demo_animal_mnist_with_labels()
